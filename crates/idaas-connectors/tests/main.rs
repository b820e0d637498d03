//! Connector tests against private PostgreSQL and MariaDB servers.

mod pg_sink;
mod pg_source;
mod pg_stream;
