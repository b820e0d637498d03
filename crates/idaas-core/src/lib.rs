//! Core types of iDaaS: values with full type fidelity, rows, table schemas, change events, positions, the
//! [`Source`] / [`Sink`] contracts and errors with their retry policy. No I/O happens here.
#![deny(rustdoc::broken_intra_doc_links)]
#![warn(missing_docs)]

pub mod batch;
pub mod connector;
pub mod error;
pub mod event;
pub mod schema;
pub mod value;

pub use connector::{
    ChangeStream, CheckItem, CheckReport, RawChunk, RawLayout, Sink, SnapshotChunk, SnapshotReader, Source,
};
pub use error::{Error, ErrorKind, Result, RetryPolicy};
pub use event::{ChangeEvent, Op, Position, Row, SourceInfo};
pub use schema::{Charset, ColumnSchema, DataType, TableRef, TableSchema};
pub use value::{Date, DateTime, Time, Value};
