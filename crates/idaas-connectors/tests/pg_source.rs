//! PostgreSQL source tests.
