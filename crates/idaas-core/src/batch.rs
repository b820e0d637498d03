//! # Batch reduction
//!
//! A sink applies a batch of row events as the final state of each primary key: the last event of a key
//! wins, an update that moves a key deletes the old one. Sinks share this reduction so every target applies
//! the same rules.
//!
//! Updates may carry [`Value::Unchanged`] columns (PostgreSQL's unchanged TOASTed values). When an earlier
//! event of the batch holds the full row, the missing values are taken from it; otherwise the update becomes
//! a [`Patch`]: the target updates only the columns that were sent, in the row found by the old key.
//!
//! Apply the result in this order: patches, then deletes, then upserts.

use crate::error::{Error, ErrorKind, Result};
use crate::event::{ChangeEvent, Op, Row};
use crate::schema::{TableRef, TableSchema};
use crate::value::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

/// A partial update: set the sent columns of `row` in the target row whose key is the key of `key_row`.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// A row holding the key to match (the old key when the update moved it).
    pub key_row: Row,
    /// The new values; [`Value::Unchanged`] columns are left as they are.
    pub row: Row,
}

/// Rows of one table and schema version.
#[derive(Debug, Clone)]
pub struct Group<T> {
    /// Source table.
    pub table: TableRef,
    /// Schema of the rows.
    pub schema: Arc<TableSchema>,
    /// The rows.
    pub rows: Vec<T>,
}

/// A reduced batch. Rows are borrowed from the events, except those completed from earlier events.
#[derive(Debug, Default)]
pub struct Reduced<'a> {
    /// Partial updates (apply first).
    pub patches: Vec<Group<Patch>>,
    /// Rows to delete (by key).
    pub deletes: Vec<Group<Cow<'a, Row>>>,
    /// Full rows to insert or replace.
    pub upserts: Vec<Group<Cow<'a, Row>>>,
}

impl Reduced<'_> {
    /// True when nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.patches.is_empty() && self.deletes.is_empty() && self.upserts.is_empty()
    }
}

#[derive(Clone)]
enum Final<'a> {
    Upsert(Cow<'a, Row>),
    Delete(Cow<'a, Row>),
    Patch(Patch),
}

fn has_unchanged(row: &Row) -> bool {
    row.iter().any(|v| matches!(v, Value::Unchanged))
}

/// Fills `Unchanged` values of `row` from `base`.
fn fill(row: &Row, base: &Row) -> Row {
    row.iter()
        .zip(base)
        .map(|(v, b)| if matches!(v, Value::Unchanged) { b.clone() } else { v.clone() })
        .collect()
}

/// Appends a compact encoding of `v` to `out`: equal values give equal bytes, values of different kinds
/// never do.
fn encode_key_value(out: &mut Vec<u8>, v: &Value) {
    let mut text = |tag: u8, b: &[u8]| {
        out.push(tag);
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    };
    match v {
        Value::Null => out.push(0),
        Value::Int(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::UInt(u) => {
            out.push(2);
            out.extend_from_slice(&u.to_le_bytes());
        }
        Value::Text(s) => text(3, s.as_bytes()),
        Value::Decimal(s) => text(4, s.as_bytes()),
        Value::Enum(s) => text(5, s.as_bytes()),
        Value::Bytes(b) => text(6, b),
        Value::Uuid(u) => {
            out.push(7);
            out.extend_from_slice(u);
        }
        other => {
            let json = serde_json::to_vec(other).unwrap_or_default();
            out.push(255);
            out.extend_from_slice(&(json.len() as u64).to_le_bytes());
            out.extend_from_slice(&json);
        }
    }
}

/// The primary key of `row` (columns `keyidx`) as bytes: equal keys give equal bytes. Sinks use it to
/// spread rows over connections.
pub fn key_bytes(keyidx: &[usize], row: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * keyidx.len());
    encode_key(&mut out, keyidx, row);
    out
}

fn encode_key(out: &mut Vec<u8>, keyidx: &[usize], row: &Row) {
    for i in keyidx {
        encode_key_value(out, &row[*i]);
    }
}

/// A key's bytes ([`key_bytes`]), inline when short: most keys are one or two integers, and a key is
/// built for every row of a batch.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Inline(u8, [u8; INLINE_KEY]),
    Heap(Box<[u8]>),
}

const INLINE_KEY: usize = 30;

impl Key {
    fn new(bytes: &[u8]) -> Key {
        if bytes.len() <= INLINE_KEY {
            let mut inline = [0u8; INLINE_KEY];
            inline[..bytes.len()].copy_from_slice(bytes);
            Key::Inline(bytes.len() as u8, inline)
        } else {
            Key::Heap(bytes.into())
        }
    }

    /// The key of `row` (columns `keyidx`), encoded in `scratch`.
    fn of(scratch: &mut Vec<u8>, keyidx: &[usize], row: &Row) -> Key {
        scratch.clear();
        encode_key(scratch, keyidx, row);
        Key::new(scratch)
    }
}

/// Final states by table and key, in the order each key first appeared.
struct State<'a> {
    /// Tables of the batch; keys refer to them by index.
    tables: Vec<&'a TableRef>,
    /// Index in `entries` by table index and key.
    index: HashMap<(usize, Key), usize, foldhash::fast::RandomState>,
    /// Final states; `None` once removed.
    entries: Vec<Option<(usize, Final<'a>, Arc<TableSchema>)>>,
}

impl<'a> State<'a> {
    fn table(&mut self, table: &'a TableRef) -> usize {
        match self.tables.iter().position(|t| *t == table) {
            Some(i) => i,
            None => {
                self.tables.push(table);
                self.tables.len() - 1
            }
        }
    }

    fn put(&mut self, table: usize, schema: &Arc<TableSchema>, k: Key, f: Final<'a>) {
        match self.index.entry((table, k)) {
            Entry::Occupied(e) => self.entries[*e.get()] = Some((table, f, schema.clone())),
            Entry::Vacant(e) => {
                e.insert(self.entries.len());
                self.entries.push(Some((table, f, schema.clone())));
            }
        }
    }

    fn get(&self, table: usize, k: &Key) -> Option<&Final<'a>> {
        // Keys are looked up by value; the tuple key needs an owned copy.
        let at = *self.index.get(&(table, k.clone()))?;
        self.entries[at].as_ref().map(|(_, f, _)| f)
    }

    fn remove(&mut self, table: usize, k: &Key) {
        if let Some(at) = self.index.remove(&(table, k.clone())) {
            self.entries[at] = None;
        }
    }
}

/// Reduces row events (insert, update, delete, snapshot-read; others are ignored) to final states.
pub fn reduce(events: &[ChangeEvent]) -> Result<Reduced<'_>> {
    // An initial-load chunk holds each key once: no need to track final states.
    if !events.is_empty() && events.iter().all(|e| e.op == Op::SnapshotRead) {
        let mut out = Reduced::default();
        for ev in events {
            let (Some(schema), Some(table), Some(after)) =
                (ev.schema.as_ref(), ev.source.table.as_ref(), &ev.after)
            else {
                continue;
            };
            if schema.primary_key.is_empty() {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("table {table} has no primary key; rows cannot be applied idempotently"),
                ));
            }
            push(&mut out.upserts, table, schema, Cow::Borrowed(after), events.len());
        }
        return Ok(out);
    }
    let mut st = State {
        tables: Vec::new(),
        index: HashMap::with_capacity_and_hasher(events.len(), Default::default()),
        entries: Vec::new(),
    };
    let mut keyidx: Vec<usize> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    let mut keyidx_of: Option<(usize, u64)> = None;
    for ev in events {
        let (Some(schema), Some(table)) = (ev.schema.as_ref(), ev.source.table.as_ref()) else { continue };
        if !matches!(ev.op, Op::Insert | Op::SnapshotRead | Op::Update | Op::Delete) {
            continue;
        }
        let t = st.table(table);
        if keyidx_of != Some((t, schema.version)) {
            keyidx = schema.key_indexes();
            keyidx_of = Some((t, schema.version));
        }
        if keyidx.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("table {table} has no primary key; rows cannot be applied idempotently"),
            ));
        }
        let mut key_of = |row: &Row| Key::of(&mut scratch, &keyidx, row);
        match ev.op {
            Op::Insert | Op::SnapshotRead => {
                let Some(after) = &ev.after else { continue };
                st.put(t, schema, key_of(after), Final::Upsert(Cow::Borrowed(after)));
            }
            Op::Update => {
                let Some(after) = &ev.after else { continue };
                let old_row = ev.before.as_ref().unwrap_or(after);
                let ka = key_of(after);
                let kb = if ev.before.is_some() { key_of(old_row) } else { ka.clone() };
                if !has_unchanged(after) {
                    if kb != ka {
                        // The old key goes; a pending patch of it must still move the target row away.
                        if let Some(Final::Patch(p)) = st.get(t, &kb) {
                            let old = p.key_row.clone();
                            st.put(t, schema, key_of(&old), Final::Delete(Cow::Owned(old)));
                        }
                        st.put(t, schema, kb, Final::Delete(Cow::Borrowed(old_row)));
                    }
                    st.put(t, schema, ka, Final::Upsert(Cow::Borrowed(after)));
                    continue;
                }
                match st.get(t, &kb) {
                    Some(Final::Upsert(prev)) => {
                        let full = fill(after, prev);
                        if kb != ka {
                            st.put(t, schema, kb, Final::Delete(Cow::Borrowed(old_row)));
                        }
                        st.put(t, schema, ka, Final::Upsert(Cow::Owned(full)));
                    }
                    Some(Final::Patch(prev)) => {
                        let merged = Patch { key_row: prev.key_row.clone(), row: fill(after, &prev.row) };
                        if kb != ka {
                            st.remove(t, &kb);
                        }
                        st.put(t, schema, ka, Final::Patch(merged));
                    }
                    _ => st.put(
                        t,
                        schema,
                        ka,
                        Final::Patch(Patch { key_row: old_row.clone(), row: after.clone() }),
                    ),
                }
            }
            Op::Delete => {
                let Some(before) = &ev.before else { continue };
                let k = key_of(before);
                if let Some(Final::Patch(p)) = st.get(t, &k) {
                    // The patched row still sits under its old key in the target.
                    let ko = key_of(&p.key_row);
                    if ko != k {
                        let old = p.key_row.clone();
                        st.put(t, schema, ko, Final::Delete(Cow::Owned(old)));
                    }
                }
                st.put(t, schema, k, Final::Delete(Cow::Borrowed(before)));
            }
            _ => {}
        }
    }
    // A new group gets room for every row of its kind not placed yet: one allocation instead of a doubling
    // vector when rows are of one table (a pipeline's case), an upper bound when of several.
    let (mut deletes, mut upserts, mut patches) = (0, 0, 0);
    for (_, f, _) in st.entries.iter().flatten() {
        match f {
            Final::Delete(_) => deletes += 1,
            Final::Upsert(_) => upserts += 1,
            Final::Patch(_) => patches += 1,
        }
    }
    let mut out = Reduced::default();
    for (t, f, schema) in st.entries.into_iter().flatten() {
        let table = st.tables[t];
        match f {
            Final::Delete(r) => {
                push(&mut out.deletes, table, &schema, r, deletes);
                deletes -= 1;
            }
            Final::Upsert(r) => {
                push(&mut out.upserts, table, &schema, r, upserts);
                upserts -= 1;
            }
            Final::Patch(p) => {
                push(&mut out.patches, table, &schema, p, patches);
                patches -= 1;
            }
        }
    }
    Ok(out)
}

/// Adds `row` to its table's group in `list`; a new group gets room for `room` rows.
fn push<T>(list: &mut Vec<Group<T>>, table: &TableRef, schema: &Arc<TableSchema>, row: T, room: usize) {
    // Rows usually arrive in runs of one table: look at the last group first.
    if let Some(g) = list.last_mut()
        && g.schema.version == schema.version
        && g.table == *table
    {
        g.rows.push(row);
        return;
    }
    match list.iter_mut().find(|g| g.table == *table && g.schema.version == schema.version) {
        Some(g) => g.rows.push(row),
        None => {
            let mut rows = Vec::with_capacity(room.max(1));
            rows.push(row);
            list.push(Group { table: table.clone(), schema: schema.clone(), rows });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Position, SourceInfo};
    use crate::schema::{ColumnSchema, DataType};

    fn schema() -> Arc<TableSchema> {
        let col = |n: &str| ColumnSchema {
            name: n.into(),
            data_type: DataType::Int { bytes: 8, unsigned: false },
            source_type: "bigint".into(),
            nullable: true,
            default: None,
            collation: None,
        };
        Arc::new(TableSchema {
            table: TableRef::new("d", "t"),
            columns: vec![col("id"), col("a"), col("big")],
            primary_key: vec!["id".into()],
            version: 1,
        })
    }

    fn ev(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            op,
            source: SourceInfo {
                connection: "c".into(),
                table: Some(Arc::new(TableRef::new("d", "t"))),
                position: Position::default(),
                commit_ts_ms: None,
                read_ts_ms: None,
                txid: None,
            },
            before,
            after,
            schema: Some(schema()),
            ddl: None,
        }
    }

    fn row(id: i64, a: i64, big: Value) -> Row {
        vec![Value::Int(id), Value::Int(a), big]
    }

    #[test]
    fn last_event_of_a_key_wins_and_moves_delete_the_old_key() {
        let events = [
            ev(Op::Insert, None, Some(row(1, 1, Value::Int(9)))),
            ev(Op::Update, Some(row(1, 1, Value::Int(9))), Some(row(1, 2, Value::Int(9)))),
            ev(Op::Update, Some(row(1, 2, Value::Int(9))), Some(row(2, 2, Value::Int(9)))),
            ev(Op::Insert, None, Some(row(3, 3, Value::Null))),
            ev(Op::Delete, Some(row(3, 3, Value::Null)), None),
        ];
        let r = reduce(&events).unwrap();
        assert!(r.patches.is_empty());
        assert_eq!(r.deletes[0].rows.len(), 2);
        assert_eq!(r.upserts[0].rows, vec![Cow::Owned::<Row>(row(2, 2, Value::Int(9)))]);
    }

    #[test]
    fn rows_of_several_tables_keep_their_own_groups_in_order() {
        let other = |mut e: ChangeEvent| {
            e.source.table = Some(Arc::new(TableRef::new("d", "u")));
            e
        };
        let mut events = Vec::new();
        for id in 0..6 {
            let e = ev(Op::Insert, None, Some(row(id, id, Value::Null)));
            events.push(if id % 2 == 0 { e } else { other(e) });
        }
        events.push(other(ev(Op::Delete, Some(row(1, 1, Value::Null)), None)));
        let r = reduce(&events).unwrap();
        let ids = |g: &Group<Cow<'_, Row>>| g.rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>();
        assert_eq!(r.upserts.len(), 2);
        assert_eq!(r.upserts[0].table, TableRef::new("d", "t"));
        assert_eq!(ids(&r.upserts[0]), vec![Value::Int(0), Value::Int(2), Value::Int(4)]);
        assert_eq!(r.upserts[1].table, TableRef::new("d", "u"));
        assert_eq!(ids(&r.upserts[1]), vec![Value::Int(3), Value::Int(5)]);
        assert_eq!(r.deletes.len(), 1);
        assert_eq!(r.deletes[0].table, TableRef::new("d", "u"));
        assert_eq!(ids(&r.deletes[0]), vec![Value::Int(1)]);
    }

    #[test]
    fn unchanged_values_are_filled_from_the_batch_or_patched() {
        let events = [
            ev(Op::Insert, None, Some(row(1, 1, Value::Text("huge".into())))),
            ev(Op::Update, Some(row(1, 1, Value::Unchanged)), Some(row(1, 5, Value::Unchanged))),
            ev(Op::Update, Some(row(2, 0, Value::Unchanged)), Some(row(2, 7, Value::Unchanged))),
            ev(Op::Update, Some(row(2, 7, Value::Unchanged)), Some(row(4, 8, Value::Unchanged))),
        ];
        let r = reduce(&events).unwrap();
        assert_eq!(r.upserts[0].rows, vec![Cow::Owned::<Row>(row(1, 5, Value::Text("huge".into())))]);
        assert_eq!(r.patches[0].rows.len(), 1);
        let p = &r.patches[0].rows[0];
        assert_eq!(p.key_row[0], Value::Int(2), "the target row is found by its old key");
        assert_eq!(p.row, row(4, 8, Value::Unchanged));
        assert!(r.deletes.is_empty(), "a patch moves the row; nothing to delete");
    }

    #[test]
    fn snapshot_chunks_pass_straight_through() {
        let events = [
            ev(Op::SnapshotRead, None, Some(row(1, 1, Value::Null))),
            ev(Op::SnapshotRead, None, Some(row(2, 2, Value::Null))),
        ];
        let r = reduce(&events).unwrap();
        assert_eq!(r.upserts.len(), 1);
        assert_eq!(
            r.upserts[0].rows,
            vec![Cow::Owned::<Row>(row(1, 1, Value::Null)), Cow::Owned(row(2, 2, Value::Null))]
        );
        assert!(r.deletes.is_empty() && r.patches.is_empty());
    }

    #[test]
    fn deleting_a_patched_row_deletes_it_under_its_old_key() {
        let events = [
            ev(Op::Update, Some(row(2, 0, Value::Unchanged)), Some(row(4, 8, Value::Unchanged))),
            ev(Op::Delete, Some(row(4, 8, Value::Null)), None),
        ];
        let r = reduce(&events).unwrap();
        let deleted: Vec<&Value> = r.deletes.iter().flat_map(|g| g.rows.iter().map(|r| &r[0])).collect();
        assert!(deleted.contains(&&Value::Int(2)) && deleted.contains(&&Value::Int(4)), "{deleted:?}");
        assert!(r.patches.is_empty());
    }
}
