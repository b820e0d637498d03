//! # Connector contracts
//!
//! A pipeline reads from a [`Source`] and writes to a [`Sink`]. The engine is the only caller; connectors
//! never call each other. Both traits are object-safe so the engine can hold the built-in kinds behind one
//! enum or a `Box<dyn ...>`.
//!
//! ## Delivery
//! Sources deliver at least once: after a restart from a checkpoint, events after that checkpoint may be
//! delivered again. Sinks make that harmless by writing idempotently (upsert and delete by primary key), so a
//! replay ends in exactly the source's final state.

use crate::error::Result;
use crate::event::{ChangeEvent, Position, Row};
use crate::schema::{TableRef, TableSchema};
use async_trait::async_trait;
use futures_core::Stream;
use std::pin::Pin;

/// A stream of change events from a source.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<ChangeEvent>> + Send>>;

/// One finding of a live check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckItem {
    /// What was checked, e.g. `binlog_format`.
    pub name: String,
    /// True when it is fine.
    pub ok: bool,
    /// What was found, and the fix when it is not fine.
    pub detail: String,
}

/// The result of [`Source::check`] / [`Sink::check`]: every finding, so a user fixes all at once.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CheckReport {
    /// Server version as it reports itself.
    pub server_version: Option<String>,
    /// The findings.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// True when every finding is fine.
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.ok)
    }

    /// The findings that are not fine, as one sentence each.
    pub fn problems(&self) -> Vec<String> {
        self.items.iter().filter(|i| !i.ok).map(|i| i.detail.clone()).collect()
    }
}

/// How a source sends a table's rows in its own binary form, for a sink of the same kind that writes them
/// without decoding ([`SnapshotReader::raw_layout`], [`Sink::accepts_raw`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLayout {
    /// The form, e.g. `postgres-binary-copy`; a sink accepts only forms it knows.
    pub format: &'static str,
    /// Column names and their exact declared types, in the order of the data.
    pub columns: Vec<(String, String)>,
}

/// Rows of one snapshot chunk in a [`RawLayout`], with what the engine needs to checkpoint them.
#[derive(Debug, Clone, PartialEq)]
pub struct RawChunk {
    /// The rows, back to back, without the form's header or trailer.
    pub data: Vec<u8>,
    /// How many rows `data` holds (at least one).
    pub rows: usize,
    /// The primary key of the last row.
    pub last_key: Row,
}

/// One chunk of the initial load: decoded rows, or rows in the source's own form.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotChunk {
    /// Decoded rows (empty when the table is done).
    Rows(Vec<Row>),
    /// Rows in the layout the sink accepted.
    Raw(RawChunk),
}

/// A consistent snapshot of the source, matched to a stream position.
#[async_trait]
pub trait SnapshotReader: Send {
    /// The stream position at which the snapshot was taken: streaming from here after the snapshot loses
    /// nothing.
    fn position(&self) -> &Position;

    /// Reads up to `limit` rows of `table` whose primary key is greater than `after_key` (all rows from
    /// the start when `None`), in primary-key order. An empty result means the table is done.
    async fn read_chunk(
        &mut self,
        table: &TableSchema,
        after_key: Option<&Row>,
        limit: usize,
    ) -> Result<Vec<Row>>;

    /// The layout in which [`Self::read_raw`] would send `table`'s rows without decoding them, when this
    /// source can; `None` (the default) when it cannot.
    async fn raw_layout(&mut self, _table: &TableSchema) -> Result<Option<RawLayout>> {
        Ok(None)
    }

    /// Like [`Self::read_chunk`], in the layout [`Self::raw_layout`] gave. A chunk holding a value that the
    /// decoded path would refuse or must check comes as decoded rows instead, so both paths carry and refuse
    /// the same values.
    async fn read_raw(
        &mut self,
        table: &TableSchema,
        after_key: Option<&Row>,
        limit: usize,
    ) -> Result<SnapshotChunk> {
        Ok(SnapshotChunk::Rows(self.read_chunk(table, after_key, limit).await?))
    }

    /// Ends the snapshot and releases its transaction.
    async fn finish(self: Box<Self>) -> Result<()>;
}

/// A change-data-capture source.
#[async_trait]
pub trait Source: Send + Sync {
    /// Tests a live connection and reports everything that is wrong in words a DBA understands. An `Err`
    /// means the check itself could not run (the server is unreachable or the credentials are wrong).
    async fn check(&self) -> Result<CheckReport>;

    /// Lists the tables the connection can see.
    async fn list_tables(&self) -> Result<Vec<TableRef>>;

    /// Describes one table. Errors with [`crate::ErrorKind::NotFound`] when it does not exist.
    async fn describe(&self, table: &TableRef) -> Result<TableSchema>;

    /// The source's estimate of a table's row count (for progress figures; may be off by a lot).
    async fn estimate_rows(&self, table: &TableRef) -> Result<u64>;

    /// The current end of the source's change log: streaming from here gives every change committed later.
    async fn current_position(&self) -> Result<Position>;

    /// Opens a consistent snapshot. Each call opens a new one with its own position.
    async fn snapshot(&self) -> Result<Box<dyn SnapshotReader>>;

    /// Streams the changes of `tables` committed after `from`, in commit order. `tables` are the schemas the
    /// tables had at `from` (the caller's checkpoint); rows are decoded with them until the stream shows a
    /// schema change. Each source transaction ends
    /// with an [`crate::Op::Commit`] event whose position is a safe place to resume from; positions of other
    /// events are informational. Row events carry the table's current [`TableSchema`]; a schema change shows
    /// as an [`crate::Op::Ddl`] event with the new schema before the first row that follows it. The stream
    /// ends only with an error (connection lost: [`crate::ErrorKind::Unreachable`]).
    async fn stream(&self, from: &Position, tables: &[TableSchema]) -> Result<ChangeStream>;

    /// Tells the source that everything up to `position` (a position it emitted) is durably written and
    /// checkpointed, so it may release the log before it (PostgreSQL confirms its replication slot up to
    /// here). Never called with a position the pipeline may still need. Called from any thread; must not
    /// block.
    fn acknowledge(&self, position: &Position) {
        let _ = position;
    }

    /// Drops what the source created on the server for its pipeline (PostgreSQL's replication slot and
    /// publication). Called when the pipeline is deleted.
    async fn release(&self) -> Result<()> {
        Ok(())
    }
}

/// A target that applies change events.
#[async_trait]
pub trait Sink: Send {
    /// Tests a live connection for what a sink needs.
    async fn check(&self) -> Result<CheckReport>;

    /// Makes `target` ready to receive rows of `source`: creates it when it is missing and `auto_create` is
    /// set, or verifies that the existing table fits (same primary key, every source column present with a
    /// type that holds its values). Errors with [`crate::ErrorKind::Incompatible`] naming the mismatch, and
    /// creates nothing in that case. Returns true when it created the table.
    async fn prepare(&mut self, source: &TableSchema, target: &TableRef, auto_create: bool) -> Result<bool>;

    /// Binds to a target table that [`Sink::prepare`] created or verified in an earlier run (a resumed
    /// pipeline), without checking its shape again. Errors with [`crate::ErrorKind::NotFound`] when it is gone.
    async fn attach(&mut self, source: &TableRef, target: &TableRef) -> Result<()>;

    /// Applies a batch of row events (insert, update, delete, snapshot-read) in one target transaction and
    /// returns only after it is committed. Events are in source order; the sink may merge events of the same
    /// key but must end in the state the last one describes. Replaying any suffix of what was written gives
    /// the same final state.
    async fn write(&mut self, events: &[ChangeEvent]) -> Result<()>;

    /// Applies a source schema change (`old` to `new`) to the target table: adds and drops columns.
    async fn alter(&mut self, old: &TableSchema, new: &TableSchema, target: &TableRef) -> Result<()>;

    /// Removes every row of the target table (the source table was truncated and the policy applies it).
    async fn truncate(&mut self, target: &TableRef) -> Result<()>;

    /// Counts the rows of a target table (for stats and verification).
    async fn count(&self, target: &TableRef) -> Result<u64>;

    /// Called before the initial load writes into `target` (again when it resumes, with the last key
    /// already copied). `created` is true when the pipeline's [`Sink::prepare`] created `target` and the
    /// load has not copied a row yet: the sink may then defer the table's primary key to
    /// [`Sink::end_load`] (a key is cheaper to build once than to maintain row by row). Without the key, a
    /// resumed load may send rows twice; the sink must remove the extra copies before it builds the key.
    /// The default does nothing.
    async fn begin_load(
        &mut self,
        _source: &TableSchema,
        _target: &TableRef,
        _resume_after: Option<&Row>,
        _created: bool,
    ) -> Result<()> {
        Ok(())
    }

    /// Called once the initial load wrote every row into `target`, before the pipeline records the load
    /// as done: a sink that deferred the primary key builds it now. The default does nothing.
    async fn end_load(&mut self, _source: &TableSchema, _target: &TableRef) -> Result<()> {
        Ok(())
    }

    /// True when this sink can write rows of `source` in `layout` as they are: it knows the form, and the
    /// target it prepared or attached for `source` holds every column of the layout with the same declared
    /// type. The default is false: the engine then decodes the rows and calls [`Sink::write`].
    async fn accepts_raw(&mut self, _source: &TableRef, _layout: &RawLayout) -> Result<bool> {
        Ok(false)
    }

    /// Writes one chunk of the initial load in a layout [`Sink::accepts_raw`] accepted, committed before it
    /// returns, as idempotently as [`Sink::write`] writes the same rows read from the snapshot.
    async fn write_raw(&mut self, source: &TableSchema, layout: &RawLayout, chunk: &RawChunk) -> Result<()> {
        let _ = (layout, chunk);
        Err(crate::Error::internal(format!(
            "the sink for {} cannot write rows in their source's own form",
            source.table
        )))
    }
}

/// The first rule of [`Sink::prepare`] for every sink: rows are applied by primary key.
pub fn require_primary_key(source: &TableSchema) -> Result<()> {
    if source.primary_key.is_empty() {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!(
                "source table {} has no primary key; add one (ALTER TABLE ... ADD PRIMARY KEY) so rows can be \
                 applied idempotently",
                source.table
            ),
        ));
    }
    Ok(())
}

/// Refuses an existing target with every way it does not fit the source (`problems`, one sentence each).
pub fn require_fit(source: &TableSchema, target: &TableRef, problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(crate::Error::new(
        crate::ErrorKind::Incompatible,
        format!(
            "target table {target} exists with a shape that does not fit source {}: {}. Drop or fix the target \
             table, or choose another target name",
            source.table,
            problems.join("; ")
        ),
    ))
}

/// The error of [`Sink::prepare`] for a missing target without AutoCreate.
pub fn missing_target(target: &TableRef) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::NotFound,
        format!("target table {target} does not exist; create it or set AutoCreate: true"),
    )
}
