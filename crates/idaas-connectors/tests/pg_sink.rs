//! PostgreSQL sink tests.
