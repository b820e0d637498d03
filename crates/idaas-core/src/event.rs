//! # Change events
//!
//! The one event format every source emits and every sink consumes ("Open CDC", `docs/open-cdc.md`).
//! Rows are carried as value vectors in the column order of the event's [`TableSchema`] version; the JSON
//! form names the columns.

use crate::schema::{TableRef, TableSchema};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One row: values in the column order of its table schema.
pub type Row = Vec<Value>;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A row was inserted.
    Insert,
    /// A row was updated.
    Update,
    /// A row was deleted.
    Delete,
    /// A row read by the initial load.
    SnapshotRead,
    /// A schema change.
    Ddl,
    /// Nothing changed; the source's position and clock moved.
    Heartbeat,
    /// A source transaction began.
    Begin,
    /// A source transaction committed.
    Commit,
}

impl Op {
    /// True for the operations that carry a row (changes and snapshot reads), false for the markers
    /// (schema changes, heartbeats, transaction boundaries).
    pub fn is_row(self) -> bool {
        matches!(self, Op::Insert | Op::Update | Op::Delete | Op::SnapshotRead)
    }
}

/// A source's position, opaque to everyone but the source that wrote it.
///
/// Its JSON form is what checkpoints store: MySQL writes `{"file": "...", "pos": N, "gtid": "0-1-42"}`; the
/// engine stores it without looking inside. A source that hands over a position with every transaction may
/// give it as a number and the function that makes its JSON form ([`Position::deferred`]): the form is then
/// built only for the few positions that are stored or shown, not for every commit.
#[derive(Clone, Default)]
pub struct Position(Repr);

#[derive(Clone)]
enum Repr {
    Json(serde_json::Value),
    Deferred(u64, fn(u64) -> serde_json::Value),
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::Json(serde_json::Value::Null)
    }
}

impl Position {
    /// A position in its JSON form.
    pub fn new(json: serde_json::Value) -> Position {
        Position(Repr::Json(json))
    }

    /// A position held as `value`; `to_json(value)` is its JSON form.
    pub fn deferred(value: u64, to_json: fn(u64) -> serde_json::Value) -> Position {
        Position(Repr::Deferred(value, to_json))
    }

    /// True when no position is set.
    pub fn is_none(&self) -> bool {
        matches!(self.0, Repr::Json(serde_json::Value::Null))
    }

    /// The JSON form.
    pub fn to_json(&self) -> std::borrow::Cow<'_, serde_json::Value> {
        match &self.0 {
            Repr::Json(v) => std::borrow::Cow::Borrowed(v),
            Repr::Deferred(n, f) => std::borrow::Cow::Owned(f(*n)),
        }
    }
}

impl PartialEq for Position {
    fn eq(&self, other: &Position) -> bool {
        self.to_json() == other.to_json()
    }
}

impl Eq for Position {}

impl std::fmt::Debug for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Position({})", self.to_json())
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_json().fmt(f)
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Position, D::Error> {
        serde_json::Value::deserialize(d).map(Position::new)
    }
}

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Connection alias (shared by the events of a stream).
    pub connection: Arc<str>,
    /// The table (database/schema and name), shared by the events of a table.
    pub table: Option<Arc<TableRef>>,
    /// Position of the event; for a [`Op::Commit`] the position to resume after it.
    pub position: Position,
    /// Source commit time, milliseconds since the Unix epoch, at the resolution the source logs it (whole
    /// seconds for MySQL/MariaDB binlogs).
    pub commit_ts_ms: Option<i64>,
    /// When the source read the event from its log, milliseconds since the Unix epoch. The commit happened
    /// no later than this, which bounds coarse commit timestamps for lag.
    #[serde(default)]
    pub read_ts_ms: Option<i64>,
    /// Source transaction id (a GTID for MariaDB), shared by the events of a transaction.
    pub txid: Option<Arc<str>>,
}

/// One change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// What happened.
    pub op: Op,
    /// Where it came from.
    pub source: SourceInfo,
    /// The row before the change (updates and deletes).
    pub before: Option<Row>,
    /// The row after the change (inserts, updates, snapshot reads).
    pub after: Option<Row>,
    /// The table's schema version the rows follow (absent for transaction markers and heartbeats).
    pub schema: Option<Arc<TableSchema>>,
    /// For [`Op::Ddl`]: the statement as the source logged it.
    pub ddl: Option<String>,
}

impl SourceInfo {
    /// The latest moment the source commit can have happened, in milliseconds since the Unix epoch: the
    /// commit timestamp rounded up to its resolution (`resolution_ms`), or the read time if that is earlier.
    pub fn commit_upper_bound_ms(&self, resolution_ms: i64) -> Option<i64> {
        match (self.commit_ts_ms, self.read_ts_ms) {
            (Some(c), Some(r)) => Some(r.min(c + resolution_ms - 1)),
            (Some(c), None) => Some(c),
            (None, r) => r,
        }
    }
}

impl ChangeEvent {
    /// The primary-key values of the row this event touches (after image for inserts and updates,
    /// before image for deletes).
    pub fn key(&self) -> Option<Row> {
        let schema = self.schema.as_ref()?;
        let row = match self.op {
            Op::Delete => self.before.as_ref()?,
            _ => self.after.as_ref()?,
        };
        Some(schema.key_indexes().into_iter().map(|i| row[i].clone()).collect())
    }

    /// The JSON form documented in `docs/open-cdc.md`.
    pub fn to_json(&self) -> serde_json::Value {
        let row_json = |row: &Option<Row>| -> serde_json::Value {
            match (row, &self.schema) {
                (Some(r), Some(s)) => serde_json::Value::Object(
                    s.columns
                        .iter()
                        .zip(r)
                        .map(|(c, v)| (c.name.clone(), serde_json::to_value(v).unwrap_or_default()))
                        .collect(),
                ),
                _ => serde_json::Value::Null,
            }
        };
        let key = match (self.key(), &self.schema) {
            (Some(k), Some(s)) => serde_json::Value::Object(
                s.primary_key
                    .iter()
                    .zip(k)
                    .map(|(n, v)| (n.clone(), serde_json::to_value(v).unwrap_or_default()))
                    .collect(),
            ),
            _ => serde_json::Value::Null,
        };
        serde_json::json!({
            "op": self.op,
            "source": {
                "connection": self.source.connection,
                "database": self.source.table.as_ref().map(|t| t.namespace.clone()),
                "table": self.source.table.as_ref().map(|t| t.name.clone()),
                "position": self.source.position,
                "commit_ts_ms": self.source.commit_ts_ms,
                "read_ts_ms": self.source.read_ts_ms,
                "txid": self.source.txid,
            },
            "key": key,
            "before": row_json(&self.before),
            "after": row_json(&self.after),
            "schema_version": self.schema.as_ref().map(|s| s.version),
            "ddl": self.ddl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(commit: Option<i64>, read: Option<i64>) -> SourceInfo {
        SourceInfo {
            connection: "c".into(),
            table: None,
            position: Position::default(),
            commit_ts_ms: commit,
            read_ts_ms: read,
            txid: None,
        }
    }

    #[test]
    fn coarse_commit_times_are_bounded_by_the_read_time() {
        // Read 20 ms into the commit's second: the commit happened at most then.
        assert_eq!(info(Some(5_000), Some(5_020)).commit_upper_bound_ms(1000), Some(5_020));
        // Read long after (a backlog): the commit happened within its second.
        assert_eq!(info(Some(5_000), Some(9_000)).commit_upper_bound_ms(1000), Some(5_999));
        assert_eq!(info(None, Some(7)).commit_upper_bound_ms(1000), Some(7));
        assert_eq!(info(Some(3), None).commit_upper_bound_ms(1000), Some(3));
    }
}
