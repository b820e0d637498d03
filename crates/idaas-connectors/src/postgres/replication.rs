//! Placeholder, filled in by the source work.
