//! # Sink (placeholder until the PostgreSQL sink lands)

/// The PostgreSQL sink.
pub struct PgSink;
