//! Placeholder, filled in by the sink work.
