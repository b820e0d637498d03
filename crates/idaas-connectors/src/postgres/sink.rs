//! # Sink
//!
//! Writes change events into PostgreSQL tables. A batch is reduced to the final state of each primary key
//! ([`idaas_core::batch::reduce`]: the last event of a key wins, an update that moves a key deletes the old
//! one, an update without its unchanged TOASTed columns becomes a patch), then applied in one transaction,
//! committed before [`Sink::write`] returns: patches (`UPDATE` of the sent columns), deletes, upserts.
//!
//! - Deletes, and upserts of fewer than [`COPY_MIN_ROWS`] rows of one table, go as multi-row statements
//!   with binary parameters, `DELETE ... WHERE key IN (...)` and
//!   `INSERT ... VALUES (...), (...) ON CONFLICT (key) DO UPDATE SET c = EXCLUDED.c`, in a few fixed sizes
//!   (at most 256 rows and 65,535 parameters) so each connection prepares few statements. The statements of
//!   one phase touch distinct keys, so they are pipelined: sent without waiting for each answer.
//! - Upserts of [`COPY_MIN_ROWS`] rows or more go through binary `COPY` into a temporary staging table, then
//!   one statement that applies them in key order: sorted here when the key is integers, UUIDs, dates or
//!   times, by the server's `ORDER BY key` otherwise (text sorts by its collation). On PostgreSQL 15 and
//!   later, when every key column's type has no collation, that statement is `MERGE INTO target USING
//!   (staged rows) ON key WHEN MATCHED THEN UPDATE ... WHEN NOT MATCHED THEN INSERT ...`, joined by one index
//!   probe per row (the planner is told to use a nested loop: it knows nothing of the staging table's size
//!   and would otherwise be free to read the whole target). Otherwise it is `INSERT ... SELECT ... ON
//!   CONFLICT (key) DO UPDATE`, which finds each existing row by a speculative insertion, locks it, then
//!   updates it: 8 % more time per statement for 2,300 and 8,192 random keys of a 1,000,000-row table. A
//!   `MERGE` that fails because another session inserted one of its keys meanwhile is applied again with
//!   `ON CONFLICT`.
//! - The initial load (batches of snapshot reads only) is copied straight into the target table; when a
//!   resumed load resends rows the target already holds, the `COPY` fails on the primary key, is rolled back
//!   to a savepoint and the same rows are upserted through the staging table instead. Rows of a PostgreSQL
//!   source whose columns have the same built-in types as the target's come as binary `COPY` tuples
//!   ([`Sink::write_raw`]) and take the same two paths without being decoded or encoded.
//!
//! Measured on a 2-core machine (10 columns of mixed types, `synchronous_commit = off` to leave out the
//! commit's flush): 5,000-row batches of new rows ran at 320,000 rows/s copied straight into the table,
//! 197,000 through the staging table and 150,000 as statements; updates at 143,000 staged and 117,000 as
//! statements; deletes at 340,000 as statements and 185,000 as `COPY` + `DELETE ... USING`. Batches of 1 to
//! 256 rows took 0.2–1.9 ms as statements and 1.0–2.4 ms staged (the staging table's `TRUNCATE` alone
//! costs about 0.7 ms); the two paths meet at about 1,000 rows.
//!
//! Every path is an upsert or a delete by primary key, so replaying any suffix of what was written ends in
//! the same state: at-least-once delivery gives exactly the source's state.
//!
//! A batch of [`PARALLEL_MIN_ROWS`] rows or more (after reduction, without patches) is split in two by a
//! hash of the key and the parts are applied at the same time on two connections, each in its own
//! transaction: the parts touch distinct keys. Batches grow while the target falls behind (the engine takes
//! whatever the source decoded during the previous write), so a large batch means one backend of the
//! target has become the bottleneck; smaller batches stay on one connection, where the second only adds
//! work (in a 2-core drain of a 1,000,000-row table, batches of about 2,300 rows cost the target 6.0-6.5 µs
//! of CPU per row on one connection against 7.3-8.1 µs split over two). [`Sink::write`] returns once both
//! committed, so the engine's checkpoint still follows whole batches; a reader of the target may see one
//! part before the other, as it may already see part of a source transaction. When the parts fail (a
//! unique index on other columns or a foreign key can make them wait on each other until the server breaks
//! the deadlock), the batch is applied again as one transaction; both ways are idempotent.
//!
//! AutoCreate declares the target from the source schema ([`super::ddl`], `docs/type-mapping.md`); an
//! existing target is checked column by column and refused with every mismatch named.
//!
//! # Errors
//! Values are encoded before anything is sent; a value the target cannot hold stops the batch with an
//! [`ErrorKind::Unsupported`] error naming the table, the column and the value ([`super::encode`]). A failed
//! batch is rolled back and the connection dropped; the engine retries transient errors from the last
//! checkpoint.

use super::ddl::{self, PgKind, PgTable};
use super::encode::{Codec, CopyRows, Encoded, Params};
use super::{Pg, classify, quote_ident, quote_table, snapshot};
use crate::config::ConnectionConfig;
use async_trait::async_trait;
use bytes::Bytes;
use futures::SinkExt;
use idaas_core::batch::{self, Group, Patch, Reduced};
use idaas_core::connector;
use idaas_core::{
    ChangeEvent, CheckItem, CheckReport, ColumnSchema, DataType, Error, ErrorKind, Op, RawChunk, RawLayout,
    Result, Row, Sink, TableRef, TableSchema, Value,
};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement, Transaction};

/// Upserts of at least this many rows of one table are written through binary `COPY`; smaller groups as
/// multi-row statements (the measurements are in the module documentation).
pub const COPY_MIN_ROWS: usize = 1_000;

/// Batches of at least this many rows (after reduction) are split by key over two connections and applied
/// in parallel, one transaction on each (see the module documentation). A source hands the engine at most
/// 16,384 row events at a time: batches near that size come while the target falls behind.
pub const PARALLEL_MIN_ROWS: usize = 4_096;
// A full channel (the batch of a target that falls behind) is split.
const _: () = assert!(PARALLEL_MIN_ROWS <= crate::events::CHANNEL_CAPACITY / 2);

/// Statement sizes (rows per statement), so each connection prepares few statements per table.
const STATEMENT_ROWS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// OIDs below this belong to PostgreSQL's built-in objects (`FirstNormalObjectId`).
const FIRST_NORMAL_OID: u32 = 16_384;

/// PostgreSQL's limit on parameters in one statement.
const MAX_PARAMS: usize = 65_535;

/// `COPY` data is sent in pieces of this size.
const COPY_PIECE_BYTES: usize = 1 << 20;

/// The first server version (`server_version_num`) with `MERGE`.
const MERGE_MIN_VERSION: u32 = 150_000;

/// Set in the transaction of a `MERGE` from a staging table: the planner knows nothing of the staging
/// table's size and may otherwise join it by hashing or by a merge join, reading the whole target table.
/// One index probe per staged row is what `ON CONFLICT` does too.
const NESTED_LOOP: &str = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; ";

/// Rows written so far by one sink, by path (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Rows sent as statement parameters (upserts, deletes and patches).
    pub statement_rows: u64,
    /// Rows sent through binary `COPY` into a staging table.
    pub staged_rows: u64,
    /// Of those, rows applied with `MERGE` rather than `INSERT ... ON CONFLICT`.
    pub merged_rows: u64,
    /// Rows of the initial load copied straight into the target table.
    pub direct_rows: u64,
}

/// How the columns of one source schema version are written into the target.
struct Plan {
    /// Source columns the target holds, in source order.
    cols: Vec<PlanCol>,
    /// Positions in `cols` of the primary-key columns, in key order.
    key: Vec<usize>,
    /// The temporary staging table of this plan.
    stage: String,
    /// Staged upserts are applied with `MERGE` (PostgreSQL 15 and later, keys of types without a
    /// collation) rather than `INSERT ... ON CONFLICT`.
    merge: bool,
}

struct PlanCol {
    /// Index in the source row.
    src: usize,
    /// Quoted target column name.
    name: String,
    codec: Codec,
    /// The target column's type has no collation (numbers, dates and times, UUIDs, booleans).
    no_collation: bool,
}

struct Target {
    table: TableRef,
    shape: PgTable,
    plans: HashMap<u64, Arc<Plan>>,
}

/// A staging table and the statement that creates it.
struct Stage {
    name: String,
    create: String,
}

/// Binary `COPY` into a staging table, then one statement that applies it.
struct Staged {
    stage: Stage,
    /// The apply statement is a `MERGE`, planned as a nested loop ([`NESTED_LOOP`]).
    merge: bool,
    copy: String,
    data: Bytes,
    apply: String,
    rows: usize,
    what: String,
}

/// One statement with parameters.
struct Stmt {
    sql: String,
    params: Params,
    rows: usize,
    what: String,
}

/// One unit of work of a batch, encoded before the transaction starts.
enum Step {
    /// Statements that must run one after the other (patches: one may free the key the next one takes).
    Sequential(Vec<Stmt>),
    /// Statements on distinct keys, whose order does not matter: sent without waiting for each answer.
    Pipelined(Vec<Stmt>),
    /// Rows through a staging table.
    Staged(Staged),
    /// Binary `COPY` straight into the target; the staged step instead when a row is there already.
    Direct { copy: String, staged: Staged },
}

/// A connection of the sink and what was set up on it.
struct Conn {
    client: Client,
    /// Prepared statements, by SQL text.
    statements: HashMap<String, Statement>,
    /// Staging tables created on it.
    staged: HashSet<String>,
}

impl Conn {
    async fn open(pg: &Pg) -> Result<(Conn, u32)> {
        let client = pg.connect().await?;
        let version = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(|e| classify(pg.config(), e, "read the server version"))?
            .get::<_, i32>(0);
        Ok((Conn { client, statements: HashMap::new(), staged: HashSet::new() }, version as u32))
    }
}

/// The PostgreSQL sink.
pub struct PgSink {
    pg: Pg,
    /// The sink's connection, and a second one for batches applied in parallel.
    conns: [Option<Conn>; 2],
    targets: HashMap<TableRef, Target>,
    next_plan: u64,
    counts: WriteCounts,
    copy_min_rows: usize,
    parallel_min_rows: usize,
    /// The target's `server_version_num`, once a connection has read it.
    server_version: Option<u32>,
    /// False to apply staged upserts with `INSERT ... ON CONFLICT` on every server (tests of that path).
    merge: bool,
}

impl PgSink {
    /// A sink writing through `pg`.
    pub fn new(pg: Pg) -> PgSink {
        PgSink {
            pg,
            conns: [None, None],
            targets: HashMap::new(),
            next_plan: 0,
            counts: WriteCounts::default(),
            copy_min_rows: COPY_MIN_ROWS,
            parallel_min_rows: PARALLEL_MIN_ROWS,
            server_version: None,
            merge: true,
        }
    }

    /// With `false`, staged upserts are applied with `INSERT ... ON CONFLICT` as on servers before
    /// PostgreSQL 15, instead of `MERGE`; for tests of both paths. Applies to tables planned afterwards.
    pub fn set_merge(&mut self, merge: bool) {
        self.merge = merge;
    }

    /// Sets the group size from which upserts go through `COPY` (default [`COPY_MIN_ROWS`]); for benchmarks and
    /// tests of both paths.
    pub fn set_copy_min_rows(&mut self, rows: usize) {
        self.copy_min_rows = rows;
    }

    /// Sets the batch size (rows after reduction) from which a batch is applied over two connections
    /// (default [`PARALLEL_MIN_ROWS`]; `usize::MAX` never does); for benchmarks and tests of both paths.
    pub fn set_parallel_min_rows(&mut self, rows: usize) {
        self.parallel_min_rows = rows;
    }

    /// Rows written so far, by path.
    pub fn counts(&self) -> WriteCounts {
        self.counts
    }

    async fn client(&mut self) -> Result<&mut Client> {
        Ok(&mut self.conn(0).await?.client)
    }

    async fn conn(&mut self, i: usize) -> Result<&mut Conn> {
        if self.conns[i].is_none() {
            let (conn, version) = Conn::open(&self.pg).await?;
            self.server_version = Some(version);
            self.conns[i] = Some(conn);
        }
        Ok(self.conns[i].as_mut().expect("connection just set"))
    }

    fn drop_connection(&mut self) {
        self.conns = [None, None];
    }

    async fn describe(&mut self, table: &TableRef) -> Result<Option<PgTable>> {
        let cfg = self.pg.config().clone();
        let client = self.client().await?;
        ddl::describe(&cfg, client, table).await
    }

    /// Describes `target` again and remembers that shape for `source`.
    async fn refresh(&mut self, source: &TableRef, target: &TableRef) -> Result<PgTable> {
        let shape = self.describe(target).await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("target table {target} no longer exists"))
        })?;
        self.remember(source, shape.clone());
        Ok(shape)
    }

    fn remember(&mut self, source: &TableRef, shape: PgTable) {
        self.targets
            .insert(source.clone(), Target { table: shape.table.clone(), shape, plans: HashMap::new() });
    }

    fn plan(&mut self, table: &TableRef, schema: &TableSchema) -> Result<Arc<Plan>> {
        let target = self.targets.get_mut(table).ok_or_else(|| {
            Error::internal(format!("no target prepared for source table {table}; prepare() must run first"))
        })?;
        if let Some(p) = target.plans.get(&schema.version) {
            return Ok(p.clone());
        }
        let mut cols = Vec::new();
        for (i, c) in schema.columns.iter().enumerate() {
            // A source column the target lacks (the Ignore schema-change policy) is not written.
            if let Some(t) = target.shape.column(&c.name) {
                cols.push(PlanCol {
                    src: i,
                    name: quote_ident(&t.name),
                    codec: Codec::new(&target.table, &t.name, &c.data_type, &t.ty),
                    no_collation: matches!(
                        t.ty.kind,
                        PgKind::Bool
                            | PgKind::Int2
                            | PgKind::Int4
                            | PgKind::Int8
                            | PgKind::Numeric { .. }
                            | PgKind::Date
                            | PgKind::Time { .. }
                            | PgKind::Timestamp { .. }
                            | PgKind::TimestampTz { .. }
                            | PgKind::Uuid
                    ),
                });
            }
        }
        let mut key = Vec::new();
        for k in schema.key_indexes() {
            let pos = cols.iter().position(|c| c.src == k).ok_or_else(|| {
                Error::new(
                    ErrorKind::Incompatible,
                    format!(
                        "target table {} has no column '{}' of the primary key",
                        target.table, schema.columns[k].name
                    ),
                )
            })?;
            key.push(pos);
        }
        // MERGE joins the staging table on `t.key = s.key`: with a collatable key that comparison could
        // follow another collation than the key's index, so those keys keep ON CONFLICT.
        let merge = self.merge
            && self.server_version.is_some_and(|v| v >= MERGE_MIN_VERSION)
            && !key.is_empty()
            && key.iter().all(|k| cols[*k].no_collation);
        self.next_plan += 1;
        let plan = Arc::new(Plan { cols, key, stage: format!("idaas_stage_{}", self.next_plan), merge });
        target.plans.insert(schema.version, plan.clone());
        Ok(plan)
    }

    fn target_table(&self, source: &TableRef) -> Result<TableRef> {
        self.targets.get(source).map(|t| t.table.clone()).ok_or_else(|| {
            Error::internal(format!("no target prepared for source table {source}; prepare() must run first"))
        })
    }

    /// Encodes a reduced batch into steps, in the order they must run; with `merge` false, staged upserts
    /// use `ON CONFLICT` even where the plan would merge them.
    fn steps(&mut self, reduced: &Reduced, load: bool, merge: bool) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        for Group { table, schema, rows } in &reduced.patches {
            let plan = self.plan(table, schema)?;
            let target = self.target_table(table)?;
            let mut list = Vec::new();
            for p in rows {
                list.extend(patch_stmt(&plan, &target, p)?);
            }
            steps.push(Step::Sequential(list));
        }
        for Group { table, schema, rows } in &reduced.deletes {
            let plan = self.plan(table, schema)?;
            let target = self.target_table(table)?;
            steps.extend(delete_steps(&plan, &target, rows)?);
        }
        for Group { table, schema, rows } in &reduced.upserts {
            if rows.iter().any(|r| r.iter().any(|v| matches!(v, Value::Unchanged))) {
                return Err(Error::internal(format!("an upsert of {table} lacks unchanged column values")));
            }
            let plan = self.plan(table, schema)?;
            let target = self.target_table(table)?;
            // While the key of a table is deferred (initial load only), rows are plain inserts.
            let keyless = load && self.targets.get(table).is_some_and(|t| t.shape.primary_key.is_empty());
            let copy = rows.len() >= self.copy_min_rows;
            let merge = merge && plan.merge;
            steps.extend(upsert_steps(&plan, &target, rows, copy, load, keyless, merge)?);
        }
        Ok(steps)
    }

    async fn exec_batch(&mut self, events: &[ChangeEvent]) -> Result<()> {
        let reduced = batch::reduce(events)?;
        if reduced.is_empty() {
            return Ok(());
        }
        // Plans depend on the server's version, which the first connection reads.
        self.conn(0).await?;
        let load = events.iter().filter(|e| e.op.is_row()).all(|e| e.op == Op::SnapshotRead);
        let rows = reduced.deletes.iter().map(|g| g.rows.len()).sum::<usize>()
            + reduced.upserts.iter().map(|g| g.rows.len()).sum::<usize>();
        // Patches are rare and may move a row to a key another part writes: those batches stay whole.
        let reduced = if !load && reduced.patches.is_empty() && rows >= self.parallel_min_rows {
            let parts = split(reduced);
            let steps = [self.steps(&parts[0], false, true)?, self.steps(&parts[1], false, true)?];
            match self.apply_parallel(steps).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // A constraint on other columns than the key (a unique index, a foreign key) can make
                    // the parts wait on each other or conflict; applied again as one transaction, the batch
                    // either works or fails with the error that matters. Both ways are idempotent.
                    tracing::debug!(error = %e.report(), "batch applied in parallel failed; applying it whole");
                    self.drop_connection();
                    // The parts own the rows: reduce again (rare, and cheaper than keeping a copy).
                    batch::reduce(events)?
                }
            }
        } else {
            reduced
        };
        let cfg = self.pg.config().clone();
        let steps = self.steps(&reduced, load, true)?;
        let merging = steps.iter().any(|s| match s {
            Step::Staged(s) | Step::Direct { staged: s, .. } => s.merge,
            _ => false,
        });
        let conn = self.conn(0).await?;
        let mut counts = WriteCounts::default();
        let mut result = apply(&cfg, conn, steps, &mut counts).await;
        if merging && result.as_ref().is_err_and(unique_violation) {
            // Another session inserted a key between MERGE's probe and its insert. ON CONFLICT settles
            // that case, and fails the same way when the violated key is another one.
            tracing::debug!(
                "a key was inserted by another session during MERGE; applying the batch with ON CONFLICT"
            );
            self.drop_connection();
            let steps = self.steps(&reduced, load, false)?;
            let conn = self.conn(0).await?;
            counts = WriteCounts::default();
            result = apply(&cfg, conn, steps, &mut counts).await;
        }
        result?;
        self.counts.add(counts);
        Ok(())
    }

    /// Applies the two parts of a batch at the same time, each in its own transaction on its own connection.
    async fn apply_parallel(&mut self, steps: [Vec<Step>; 2]) -> Result<()> {
        let cfg = self.pg.config().clone();
        self.conn(0).await?;
        self.conn(1).await?;
        let [Some(a), Some(b)] = &mut self.conns else { unreachable!("both connections were just opened") };
        let [sa, sb] = steps;
        let (mut ca, mut cb) = (WriteCounts::default(), WriteCounts::default());
        let (ra, rb) = tokio::join!(apply(&cfg, a, sa, &mut ca), apply(&cfg, b, sb, &mut cb));
        ra?;
        rb?;
        self.counts.add(ca);
        self.counts.add(cb);
        Ok(())
    }
}

/// Splits a batch in two by a hash of each row's key: the parts touch distinct keys.
fn split(reduced: Reduced<'_>) -> [Reduced<'_>; 2] {
    fn part(groups: Vec<Group<Cow<'_, Row>>>) -> [Vec<Group<Cow<'_, Row>>>; 2] {
        let mut out: [Vec<Group<Cow<'_, Row>>>; 2] = [Vec::new(), Vec::new()];
        for g in groups {
            let keyidx = g.schema.key_indexes();
            let half = g.rows.len() / 2 + 1;
            let mut rows: [Vec<Cow<'_, Row>>; 2] = [Vec::with_capacity(half), Vec::with_capacity(half)];
            for r in g.rows {
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&batch::key_bytes(&keyidx, &r), &mut h);
                rows[(std::hash::Hasher::finish(&h) & 1) as usize].push(r);
            }
            for (o, rows) in out.iter_mut().zip(rows) {
                if !rows.is_empty() {
                    o.push(Group { table: g.table.clone(), schema: g.schema.clone(), rows });
                }
            }
        }
        out
    }
    let [d0, d1] = part(reduced.deletes);
    let [u0, u1] = part(reduced.upserts);
    [
        Reduced { patches: Vec::new(), deletes: d0, upserts: u0 },
        Reduced { patches: Vec::new(), deletes: d1, upserts: u1 },
    ]
}

impl WriteCounts {
    fn add(&mut self, o: WriteCounts) {
        self.statement_rows += o.statement_rows;
        self.staged_rows += o.staged_rows;
        self.merged_rows += o.merged_rows;
        self.direct_rows += o.direct_rows;
    }
}

/// Runs `steps` in one transaction on `conn` and commits.
async fn apply(
    cfg: &ConnectionConfig,
    conn: &mut Conn,
    steps: Vec<Step>,
    counts: &mut WriteCounts,
) -> Result<()> {
    let Conn { client, statements, staged } = conn;
    let mut tx = client.transaction().await.map_err(|e| classify(cfg, e, "begin"))?;
    for step in steps {
        run(cfg, &mut tx, statements, staged, step, counts).await?;
    }
    tx.commit().await.map_err(|e| classify(cfg, e, "commit"))
}

async fn prepared(
    cfg: &ConnectionConfig,
    tx: &Transaction<'_>,
    statements: &mut HashMap<String, Statement>,
    sql: &str,
    what: &str,
) -> Result<Statement> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let s = tx.prepare(sql).await.map_err(|e| write_error(cfg, e, what))?;
    statements.insert(sql.to_string(), s.clone());
    Ok(s)
}

async fn run(
    cfg: &ConnectionConfig,
    tx: &mut Transaction<'_>,
    statements: &mut HashMap<String, Statement>,
    staged: &mut HashSet<String>,
    step: Step,
    counts: &mut WriteCounts,
) -> Result<()> {
    match step {
        Step::Sequential(list) => {
            for s in list {
                let stmt = prepared(cfg, tx, statements, &s.sql, &s.what).await?;
                let values = s.params.values();
                let refs: Vec<&(dyn ToSql + Sync)> =
                    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                tx.execute(&stmt, &refs).await.map_err(|e| write_error(cfg, e, &s.what))?;
                counts.statement_rows += s.rows as u64;
            }
        }
        Step::Pipelined(list) => {
            let mut stmts = Vec::with_capacity(list.len());
            for s in &list {
                stmts.push(prepared(cfg, tx, statements, &s.sql, &s.what).await?);
            }
            let values: Vec<Vec<Encoded<'_>>> = list.iter().map(|s| s.params.values()).collect();
            let refs: Vec<Vec<&(dyn ToSql + Sync)>> =
                values.iter().map(|v| v.iter().map(|x| x as &(dyn ToSql + Sync)).collect()).collect();
            let tx: &Transaction<'_> = tx;
            let runs = stmts.iter().zip(&refs).zip(&list).map(|((stmt, refs), s)| async move {
                tx.execute(stmt, refs).await.map_err(|e| write_error(cfg, e, &s.what))
            });
            futures::future::try_join_all(runs).await?;
            counts.statement_rows += list.iter().map(|s| s.rows as u64).sum::<u64>();
        }
        Step::Staged(s) => run_staged(cfg, tx, statements, staged, s, counts).await?,
        Step::Direct { copy, staged: s } => {
            let sp = tx.savepoint("idaas_load").await.map_err(|e| classify(cfg, e, "savepoint"))?;
            match send_copy(&sp, &copy, s.data.clone()).await {
                Ok(()) => {
                    sp.commit().await.map_err(|e| classify(cfg, e, "release savepoint"))?;
                    counts.direct_rows += s.rows as u64;
                }
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    // A resumed load resent rows the target holds: upsert them instead.
                    sp.rollback().await.map_err(|e| classify(cfg, e, "roll back to savepoint"))?;
                    run_staged(cfg, tx, statements, staged, s, counts).await?;
                }
                Err(e) => return Err(write_error(cfg, e, &s.what)),
            }
        }
    }
    Ok(())
}

async fn run_staged(
    cfg: &ConnectionConfig,
    tx: &Transaction<'_>,
    statements: &mut HashMap<String, Statement>,
    staged: &mut HashSet<String>,
    s: Staged,
    counts: &mut WriteCounts,
) -> Result<()> {
    let setup = if s.merge { NESTED_LOOP } else { "" };
    if staged.contains(&s.stage.name) {
        // Emptied before use rather than at commit: an explicit TRUNCATE costs a fraction of
        // ON COMMIT DELETE ROWS.
        tx.batch_execute(&format!("{setup}TRUNCATE pg_temp.{}", quote_ident(&s.stage.name)))
            .await
            .map_err(|e| classify(cfg, e, "empty staging table"))?;
    } else {
        tx.batch_execute(&format!("{setup}{}", s.stage.create))
            .await
            .map_err(|e| classify(cfg, e, "create staging table"))?;
        staged.insert(s.stage.name.clone());
    }
    send_copy(tx, &s.copy, s.data).await.map_err(|e| write_error(cfg, e, &s.what))?;
    let stmt = prepared(cfg, tx, statements, &s.apply, &s.what).await?;
    tx.execute(&stmt, &[]).await.map_err(|e| write_error(cfg, e, &s.what))?;
    counts.staged_rows += s.rows as u64;
    if s.merge {
        counts.merged_rows += s.rows as u64;
    }
    Ok(())
}

/// Sends a complete binary `COPY` stream.
async fn send_copy(
    tx: &Transaction<'_>,
    sql: &str,
    data: Bytes,
) -> std::result::Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in::<_, Bytes>(sql).await?;
    futures::pin_mut!(sink);
    let mut rest = data;
    while !rest.is_empty() {
        let piece = rest.split_to(rest.len().min(COPY_PIECE_BYTES));
        sink.feed(piece).await?;
    }
    sink.finish().await?;
    Ok(())
}

/// True when the server refused a write because a row with the same unique key exists.
fn unique_violation(e: &Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(pg) = c.downcast_ref::<tokio_postgres::Error>() {
            return pg.code() == Some(&SqlState::UNIQUE_VIOLATION);
        }
        cause = c.source();
    }
    false
}

/// Classifies a write error; values the target refuses (class 22) are [`ErrorKind::Unsupported`] and
/// constraint violations (class 23) [`ErrorKind::Incompatible`]: both stop the pipeline.
fn write_error(cfg: &ConnectionConfig, e: tokio_postgres::Error, what: &str) -> Error {
    let class = e.code().map(|c| c.code()[..2].to_string());
    let mut err = classify(cfg, e, what);
    match class.as_deref() {
        Some("22") => err.kind = ErrorKind::Unsupported,
        Some("23") => err.kind = ErrorKind::Incompatible,
        _ => {}
    }
    err
}

/// A declared type with the precision 6 of times, timestamps and intervals left out (it is their default:
/// `timestamp(6)` and `timestamp` are the same type). Any other modifier must match exactly: a narrower
/// one on the target would round or cut values on the way in.
fn raw_type(display: &str) -> std::borrow::Cow<'_, str> {
    for t in ["timestamp", "time", "interval"] {
        if let Some(rest) = display.strip_prefix(t).and_then(|r| r.strip_prefix("(6)")) {
            return format!("{t}{rest}").into();
        }
    }
    display.into()
}

fn names(plan: &Plan, idx: &[usize]) -> String {
    idx.iter().map(|i| plan.cols[*i].name.as_str()).collect::<Vec<_>>().join(", ")
}

fn all(plan: &Plan) -> Vec<usize> {
    (0..plan.cols.len()).collect()
}

/// Splits `n` rows into statement sizes from [`STATEMENT_ROWS`], each at most `max`.
fn chunk_sizes(mut n: usize, max: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while n > 0 {
        let size = STATEMENT_ROWS.iter().copied().find(|s| *s <= n && *s <= max).unwrap_or(1);
        out.push(size);
        n -= size;
    }
    out
}

fn patch_stmt(plan: &Plan, target: &TableRef, p: &Patch) -> Result<Option<Stmt>> {
    let sets: Vec<usize> =
        (0..plan.cols.len()).filter(|i| !matches!(p.row[plan.cols[*i].src], Value::Unchanged)).collect();
    if sets.is_empty() {
        return Ok(None);
    }
    let mut params = Params::new();
    let mut assign = Vec::new();
    for i in &sets {
        let c = &plan.cols[*i];
        params.push(&c.codec, &p.row[c.src])?;
        assign.push(format!("{} = {}", c.name, c.codec.cast(&format!("${}", params.len()))));
    }
    let mut cond = Vec::new();
    for k in &plan.key {
        let c = &plan.cols[*k];
        params.push(&c.codec, &p.key_row[c.src])?;
        cond.push(format!("{} = {}", c.name, c.codec.cast(&format!("${}", params.len()))));
    }
    let sql =
        format!("UPDATE {} SET {} WHERE {}", quote_table(target), assign.join(", "), cond.join(" AND "));
    Ok(Some(Stmt { sql, params, rows: 1, what: format!("update {target}") }))
}

fn stage(plan: &Plan, name: &str, idx: &[usize]) -> Stage {
    let cols: Vec<String> =
        idx.iter().map(|i| format!("{} {}", plan.cols[*i].name, plan.cols[*i].codec.stage_type())).collect();
    Stage {
        name: name.to_string(),
        create: format!("CREATE TEMPORARY TABLE {} ({})", quote_ident(name), cols.join(", ")),
    }
}

/// A key value of a kind the target orders the way Rust does (integers, UUIDs, dates and times).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Natural {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Timestamp(i64),
    Date(idaas_core::Date),
    DateTime(idaas_core::DateTime),
    Uuid([u8; 16]),
}

fn natural(v: &Value) -> Option<Natural> {
    Some(match v {
        Value::Bool(b) => Natural::Bool(*b),
        Value::Int(i) => Natural::Int(*i),
        Value::UInt(u) => Natural::UInt(*u),
        Value::Timestamp(t) => Natural::Timestamp(*t),
        Value::Date(d) => Natural::Date(*d),
        Value::DateTime(d) => Natural::DateTime(*d),
        Value::Uuid(u) => Natural::Uuid(*u),
        _ => return None,
    })
}

/// `rows` in the order of their keys (source columns `key`), when every key value is of a kind the target
/// orders the same way ([`Natural`]); `None` otherwise (text sorts by collation), and the server sorts.
/// Applied in key order, rows visit the key's index and the table's pages in order instead of jumping
/// between them (17-20 % less time for 20,000 random keys of 1,000,000); sorted here, the rows reach the
/// staging table in that order and the server reads them back without sorting them again.
fn in_key_order<'a>(key: &[usize], rows: &'a [Cow<'_, Row>]) -> Option<Vec<&'a Row>> {
    if !rows.iter().all(|r| key.iter().all(|i| natural(&r[*i]).is_some())) {
        return None;
    }
    let mut order: Vec<&Row> = rows.iter().map(|r| &**r).collect();
    order.sort_unstable_by(|a, b| {
        key.iter()
            .map(|i| natural(&a[*i]).cmp(&natural(&b[*i])))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Some(order)
}

fn copy_rows<'a>(plan: &Plan, idx: &[usize], rows: impl ExactSizeIterator<Item = &'a Row>) -> Result<Bytes> {
    // The first rows' average size sets the room made for the rest.
    const SAMPLE_ROWS: usize = 16;
    let total = rows.len();
    let mut data = CopyRows::new();
    for (n, r) in rows.enumerate() {
        data.push(idx.iter().map(|i| (&plan.cols[*i].codec, &r[plan.cols[*i].src])))?;
        if n + 1 == SAMPLE_ROWS {
            data.reserve_rows(total - SAMPLE_ROWS);
        }
    }
    Ok(data.finish())
}

fn delete_steps(plan: &Plan, target: &TableRef, rows: &[Cow<'_, Row>]) -> Result<Vec<Step>> {
    let what = format!("delete from {target}");
    let mut list = Vec::new();
    let keys = plan.key.len();
    let mut rest = rows;
    for size in chunk_sizes(rows.len(), MAX_PARAMS / keys) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut params = Params::new();
        let mut tuples = Vec::new();
        for r in chunk {
            let mut one = Vec::new();
            for k in &plan.key {
                let c = &plan.cols[*k];
                params.push(&c.codec, &r[c.src])?;
                one.push(c.codec.cast(&format!("${}", params.len())));
            }
            tuples.push(if keys == 1 { one.remove(0) } else { format!("({})", one.join(", ")) });
        }
        let lhs = if keys == 1 { names(plan, &plan.key) } else { format!("({})", names(plan, &plan.key)) };
        let sql = format!("DELETE FROM {} WHERE {lhs} IN ({})", quote_table(target), tuples.join(", "));
        list.push(Stmt { sql, params, rows: size, what: what.clone() });
    }
    Ok(vec![Step::Pipelined(list)])
}

/// `ON CONFLICT (key) DO UPDATE SET c = EXCLUDED.c, ...` (or `DO NOTHING` when every column is key).
fn on_conflict(plan: &Plan) -> String {
    let updates: Vec<String> = (0..plan.cols.len())
        .filter(|i| !plan.key.contains(i))
        .map(|i| format!("{0} = EXCLUDED.{0}", plan.cols[i].name))
        .collect();
    let action =
        if updates.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", updates.join(", ")) };
    format!("ON CONFLICT ({}) DO {action}", names(plan, &plan.key))
}

/// `MERGE INTO target t USING (SELECT ... FROM pg_temp.stage) s ON t.key = s.key WHEN MATCHED THEN UPDATE
/// ... WHEN NOT MATCHED THEN INSERT ...`: the same upsert as [`on_conflict`] (see the module documentation).
/// Unlike `ON CONFLICT`, `MERGE` fails on a key that another session inserts between its probe and its
/// insert (the two parts of a parallel batch hold distinct keys, so only a writer outside the pipeline can);
/// the batch is then applied again with `ON CONFLICT`.
fn merge_stmt(plan: &Plan, target: &TableRef, stage: &str, order: &str) -> String {
    let select: Vec<String> =
        plan.cols.iter().map(|c| format!("{} AS {}", c.codec.cast(&c.name), c.name)).collect();
    let on: Vec<String> = plan.key.iter().map(|k| format!("t.{0} = s.{0}", plan.cols[*k].name)).collect();
    let updates: Vec<String> = (0..plan.cols.len())
        .filter(|i| !plan.key.contains(i))
        .map(|i| format!("{0} = s.{0}", plan.cols[i].name))
        .collect();
    let matched = if updates.is_empty() {
        String::new()
    } else {
        format!(" WHEN MATCHED THEN UPDATE SET {}", updates.join(", "))
    };
    let values: Vec<String> = plan.cols.iter().map(|c| format!("s.{}", c.name)).collect();
    format!(
        "MERGE INTO {} t USING (SELECT {} FROM pg_temp.{}{order}) s ON {}{matched} \
         WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
        quote_table(target),
        select.join(", "),
        quote_ident(stage),
        on.join(" AND "),
        names(plan, &all(plan)),
        values.join(", ")
    )
}

fn upsert_steps(
    plan: &Plan,
    target: &TableRef,
    rows: &[Cow<'_, Row>],
    copy: bool,
    load: bool,
    keyless: bool,
    merge: bool,
) -> Result<Vec<Step>> {
    let on_conflict = |plan: &Plan| if keyless { String::new() } else { on_conflict(plan) };
    let what = format!("write to {target}");
    let every = all(plan);
    let cols = names(plan, &every);
    if copy {
        let key: Vec<usize> = plan.key.iter().map(|k| plan.cols[*k].src).collect();
        let sorted = if keyless { None } else { in_key_order(&key, rows) };
        let order = if sorted.is_some() || keyless {
            String::new()
        } else {
            format!(" ORDER BY {}", names(plan, &plan.key))
        };
        let data = match sorted {
            Some(sorted) => copy_rows(plan, &every, sorted.into_iter())?,
            None => copy_rows(plan, &every, rows.iter().map(|r| &**r))?,
        };
        let stage = stage(plan, &plan.stage, &every);
        let merge = merge && !keyless;
        let apply = if merge {
            merge_stmt(plan, target, &stage.name, &order)
        } else {
            let select: Vec<String> = plan.cols.iter().map(|c| c.codec.cast(&c.name)).collect();
            format!(
                "INSERT INTO {} ({cols}) SELECT {} FROM pg_temp.{}{order} {}",
                quote_table(target),
                select.join(", "),
                quote_ident(&stage.name),
                on_conflict(plan)
            )
        };
        let copy = format!("COPY pg_temp.{} ({cols}) FROM STDIN (FORMAT binary)", quote_ident(&stage.name));
        let staged = Staged { stage, merge, copy, data, apply, rows: rows.len(), what };
        if load && !plan.cols.iter().any(|c| c.codec.is_text()) {
            let copy = format!("COPY {} ({cols}) FROM STDIN (FORMAT binary)", quote_table(target));
            return Ok(vec![Step::Direct { copy, staged }]);
        }
        return Ok(vec![Step::Staged(staged)]);
    }
    let mut list = Vec::new();
    let mut rest = rows;
    for size in chunk_sizes(rows.len(), MAX_PARAMS / plan.cols.len().max(1)) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut params = Params::new();
        let mut tuples = Vec::with_capacity(size);
        for r in chunk {
            let mut one = Vec::with_capacity(plan.cols.len());
            for c in &plan.cols {
                params.push(&c.codec, &r[c.src])?;
                one.push(c.codec.cast(&format!("${}", params.len())));
            }
            tuples.push(format!("({})", one.join(", ")));
        }
        let sql = format!(
            "INSERT INTO {} ({cols}) VALUES {} {}",
            quote_table(target),
            tuples.join(", "),
            on_conflict(plan)
        );
        list.push(Stmt { sql, params, rows: size, what: what.clone() });
    }
    Ok(vec![Step::Pipelined(list)])
}

/// The ADD COLUMN definition of a column added by a schema change: always nullable, since rows already in
/// the target have no value for it until the source updates them.
fn added_column(table: &TableRef, c: &ColumnSchema, known_collations: &HashSet<String>) -> Result<String> {
    let nullable = ColumnSchema { nullable: true, ..c.clone() };
    ddl::column_def(table, &nullable, known_collations)
}

/// The collations of `columns` that the target server has (by exact name).
async fn known_collations(pg: &Pg, client: &Client, columns: &[&ColumnSchema]) -> Result<HashSet<String>> {
    let names: Vec<String> = columns.iter().filter_map(|c| c.collation.clone()).collect();
    if names.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = client
        .query(
            "SELECT c FROM unnest($1::text[]) AS c WHERE to_regcollation(quote_ident(c)) IS NOT NULL",
            &[&names],
        )
        .await
        .map_err(|e| classify(pg.config(), e, "look up collations"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Checks that the target knows every source type declared by name ([`DataType::Other`]); every unknown
/// one is listed.
async fn check_type_names(
    pg: &Pg,
    client: &Client,
    table: &TableRef,
    columns: &[&ColumnSchema],
) -> Result<()> {
    let mut unknown = Vec::new();
    for c in columns {
        let DataType::Other { name } = &c.data_type else { continue };
        let found = match client.query_one("SELECT to_regtype($1) IS NOT NULL", &[name]).await {
            Ok(row) => row.get::<_, bool>(0),
            Err(e) if e.as_db_error().is_some() => false,
            Err(e) => return Err(classify(pg.config(), e, "look up a type")),
        };
        if !found {
            unknown.push(format!(
                "column '{}' has type '{name}', which the target server does not know",
                c.name
            ));
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "source table {table} cannot be created in PostgreSQL: {}; create the target table yourself",
            unknown.join("; ")
        ),
    ))
}

#[async_trait]
impl Sink for PgSink {
    async fn check(&self) -> Result<CheckReport> {
        let client = self.pg.connect().await?;
        let cfg = self.pg.config();
        let row = client
            .query_one(
                "SELECT version(), current_setting('server_encoding'), pg_is_in_recovery(), \
                 current_setting('default_transaction_read_only') = 'on', \
                 has_database_privilege(current_database(), 'TEMPORARY'), \
                 has_database_privilege(current_database(), 'CREATE'), \
                 EXISTS (SELECT 1 FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
                         AND nspname <> 'information_schema' AND has_schema_privilege(oid, 'CREATE'))",
                &[],
            )
            .await
            .map_err(|e| classify(cfg, e, "check the target"))?;
        let mut report = CheckReport { server_version: Some(row.get(0)), items: Vec::new() };
        let encoding: String = row.get(1);
        let (standby, read_only, temp, create_db, create_schema): (bool, bool, bool, bool, bool) =
            (row.get(2), row.get(3), row.get(4), row.get(5), row.get(6));
        let db = self.pg.database().to_string();
        let user = &cfg.user;
        report.items.push(CheckItem {
            name: "server_encoding".into(),
            ok: encoding == "UTF8",
            detail: if encoding == "UTF8" {
                "database encoding is UTF8".into()
            } else {
                format!(
                    "database '{db}' has encoding {encoding}, which cannot hold every character of other sources; \
                     use a database created with ENCODING 'UTF8'"
                )
            },
        });
        report.items.push(CheckItem {
            name: "read-write".into(),
            ok: !standby && !read_only,
            detail: if standby {
                "the server is a standby (in recovery) and cannot be written; connect to the primary".into()
            } else if read_only {
                "default_transaction_read_only is on; turn it off for the user or database".into()
            } else {
                "the server accepts writes".into()
            },
        });
        report.items.push(CheckItem {
            name: "privilege temporary".into(),
            ok: temp,
            detail: if temp {
                "user can create temporary tables (used to stage COPY batches)".into()
            } else {
                format!("user '{user}' needs GRANT TEMPORARY ON DATABASE \"{db}\" to stage COPY batches")
            },
        });
        report.items.push(CheckItem {
            name: "privilege create".into(),
            ok: create_db || create_schema,
            detail: if create_db {
                "user can create schemas and tables".into()
            } else if create_schema {
                "user can create tables in existing schemas (not new schemas)".into()
            } else {
                format!(
                    "user '{user}' can create no tables; GRANT CREATE ON DATABASE \"{db}\" or ON SCHEMA <schema>, \
                     or create the target tables yourself"
                )
            },
        });
        Ok(report)
    }

    async fn prepare(&mut self, source: &TableSchema, target: &TableRef, auto_create: bool) -> Result<bool> {
        connector::require_primary_key(source)?;
        if let Some(existing) = self.describe(target).await? {
            connector::require_fit(source, target, &ddl::shape_problems(source, &existing))?;
            self.remember(&source.table, existing);
            return Ok(false);
        }
        if !auto_create {
            return Err(connector::missing_target(target));
        }
        let pg = self.pg.clone();
        let cfg = pg.config().clone();
        let client = self.client().await?;
        let columns: Vec<&ColumnSchema> = source.columns.iter().collect();
        let collations = known_collations(&pg, client, &columns).await?;
        let create = ddl::create_table(source, target, &collations)?;
        check_type_names(&pg, client, &source.table, &columns).await?;
        // One transaction: a failure leaves neither the schema nor the table behind.
        let tx = client.transaction().await.map_err(|e| classify(&cfg, e, "begin"))?;
        let exists: bool = tx
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &[&target.namespace])
            .await
            .map_err(|e| classify(&cfg, e, "look up the target schema"))?
            .get(0);
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&target.namespace)))
                .await
                .map_err(|e| {
                    let mut err = classify(&cfg, e, "create the target schema");
                    err.message = format!(
                        "{}; create schema \"{}\" or grant CREATE on the database",
                        err.message, target.namespace
                    );
                    err
                })?;
        }
        tx.batch_execute(&create).await.map_err(|e| classify(&cfg, e, "create target table"))?;
        tx.commit().await.map_err(|e| classify(&cfg, e, "commit"))?;
        let created = self
            .describe(target)
            .await?
            .ok_or_else(|| Error::internal(format!("target table {target} vanished right after creation")))?;
        self.remember(&source.table, created);
        Ok(true)
    }

    async fn attach(&mut self, source: &TableRef, target: &TableRef) -> Result<()> {
        let existing = self.describe(target).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("target table {target} no longer exists; recreate it or recreate the pipeline"),
            )
        })?;
        self.remember(source, existing);
        Ok(())
    }

    async fn write(&mut self, events: &[ChangeEvent]) -> Result<()> {
        let r = self.exec_batch(events).await;
        if r.is_err() {
            // The transaction is rolled back when the connection closes; never reuse a connection mid-batch.
            self.drop_connection();
        }
        r
    }

    async fn alter(&mut self, old: &TableSchema, new: &TableSchema, target: &TableRef) -> Result<()> {
        // Compare with the target as it is, so a change applied before a crash is not applied twice.
        let current = self.describe(target).await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("target table {target} no longer exists"))
        })?;
        let pg = self.pg.clone();
        let collations = {
            let client = self.client().await?;
            known_collations(&pg, client, &new.columns.iter().collect::<Vec<_>>()).await?
        };
        let mut clauses = Vec::new();
        let mut declared = Vec::new();
        for c in &new.columns {
            let before = old.columns.iter().find(|o| o.name.eq_ignore_ascii_case(&c.name));
            let Some(t) = current.column(&c.name) else {
                clauses.push(format!("ADD COLUMN {}", added_column(&new.table, c, &collations)?));
                declared.push(c);
                continue;
            };
            let q = quote_ident(&t.name);
            if !ddl::fits(&c.data_type, &t.ty) {
                let ty = ddl::column_type(&new.table, c)?;
                clauses.push(format!("ALTER COLUMN {q} TYPE {ty} USING {q}::{ty}"));
                declared.push(c);
            }
            // ENUM and SET labels live in a CHECK constraint: replace it when the labels may have changed.
            let renamed = ColumnSchema { name: t.name.clone(), ..c.clone() };
            let check = ddl::labels_check(&renamed);
            if before.is_some_and(|o| o.data_type != c.data_type)
                && (check.is_some() || before.is_some_and(|o| ddl::labels_check(o).is_some()))
            {
                let labels = quote_ident(&ddl::labels_constraint(&t.name));
                clauses.push(format!("DROP CONSTRAINT IF EXISTS {labels}"));
                if let Some(check) = check {
                    clauses.push(format!("ADD CONSTRAINT {labels} CHECK ({check})"));
                }
            }
        }
        for o in &old.columns {
            let gone = !new.columns.iter().any(|c| c.name.eq_ignore_ascii_case(&o.name));
            if let (true, Some(t)) = (gone, current.column(&o.name)) {
                clauses.push(format!("DROP COLUMN {}", quote_ident(&t.name)));
            }
        }
        if !clauses.is_empty() {
            let cfg = pg.config().clone();
            let client = self.client().await?;
            check_type_names(&pg, client, &new.table, &declared).await?;
            let sql = format!("ALTER TABLE {} {}", quote_table(target), clauses.join(", "));
            client.batch_execute(&sql).await.map_err(|e| classify(&cfg, e, "alter target table"))?;
        }
        // Prepared statements and staging tables follow the old shape: start afresh.
        self.drop_connection();
        self.refresh(&new.table, target).await?;
        Ok(())
    }

    async fn truncate(&mut self, target: &TableRef) -> Result<()> {
        let cfg = self.pg.config().clone();
        let client = self.client().await?;
        match client.batch_execute(&format!("TRUNCATE TABLE {}", quote_table(target))).await {
            Ok(()) => Ok(()),
            // TRUNCATE needs its own privilege; DELETE does the same more slowly.
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => client
                .batch_execute(&format!("DELETE FROM {}", quote_table(target)))
                .await
                .map_err(|e| classify(&cfg, e, "truncate target table")),
            Err(e) => Err(classify(&cfg, e, "truncate target table")),
        }
    }

    async fn begin_load(
        &mut self,
        source: &TableSchema,
        target: &TableRef,
        resume_after: Option<&Row>,
        created: bool,
    ) -> Result<()> {
        let cfg = self.pg.config().clone();
        if self.refresh(&source.table, target).await?.primary_key.is_empty() {
            // A load that deferred the key resumes. Rows the first attempt wrote after its last checkpoint
            // are sent again; the copies are removed when the key is built.
            return Ok(());
        }
        if !created || resume_after.is_some() {
            return Ok(());
        }
        // A table the pipeline created, still empty: its key is built once, after the load.
        let client = self.client().await?;
        let empty: bool = client
            .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {})", quote_table(target)), &[])
            .await
            .map_err(|e| classify(&cfg, e, "look into the target table"))?
            .get(0);
        if !empty {
            return Ok(());
        }
        let name: String = client
            .query_one(
                "SELECT conname::text FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'p'",
                &[&quote_table(target)],
            )
            .await
            .map_err(|e| classify(&cfg, e, "look up the target's primary key"))?
            .get(0);
        client
            .batch_execute(&format!(
                "ALTER TABLE {} DROP CONSTRAINT {}",
                quote_table(target),
                quote_ident(&name)
            ))
            .await
            .map_err(|e| classify(&cfg, e, "defer the target's primary key"))?;
        tracing::debug!(table = %target, "primary key deferred to the end of the initial load");
        self.refresh(&source.table, target).await?;
        Ok(())
    }

    async fn accepts_raw(&mut self, source: &TableRef, layout: &RawLayout) -> Result<bool> {
        let Some(t) = self.targets.get(source) else { return Ok(false) };
        Ok(layout.format == snapshot::RAW_FORMAT
            && layout.columns.iter().all(|(name, ty)| {
                // A built-in type of the same declaration: its binary form is the same on both servers.
                t.shape.column(name).is_some_and(|c| {
                    !c.generated && c.ty.oid < FIRST_NORMAL_OID && raw_type(&c.ty.display) == raw_type(ty)
                })
            }))
    }

    async fn write_raw(&mut self, source: &TableSchema, layout: &RawLayout, chunk: &RawChunk) -> Result<()> {
        let plan = self.plan(&source.table, source)?;
        let t = self.targets.get(&source.table).ok_or_else(|| {
            Error::internal(format!("no target prepared for source table {}", source.table))
        })?;
        let target = t.table.clone();
        let mut cols = Vec::with_capacity(layout.columns.len());
        let mut decl = Vec::with_capacity(layout.columns.len());
        for (name, _) in &layout.columns {
            let c = t.shape.column(name).ok_or_else(|| {
                Error::internal(format!("target table {target} lost column '{name}' during the load"))
            })?;
            cols.push(quote_ident(&c.name));
            decl.push(format!("{} {}", quote_ident(&c.name), c.ty.display));
        }
        // Without a key (deferred until the load ends) rows are plain inserts; the staged path then only
        // runs when the direct COPY fails for another reason, and fails the same way.
        let conflict = if t.shape.primary_key.is_empty() { String::new() } else { on_conflict(&plan) };
        let cols = cols.join(", ");
        let name = format!("{}_raw", plan.stage);
        let mut data = CopyRows::new();
        data.push_encoded(&chunk.data, chunk.rows);
        let staged = Staged {
            merge: false,
            stage: Stage {
                name: name.clone(),
                create: format!("CREATE TEMPORARY TABLE {} ({})", quote_ident(&name), decl.join(", ")),
            },
            copy: format!("COPY pg_temp.{} ({cols}) FROM STDIN (FORMAT binary)", quote_ident(&name)),
            data: data.finish(),
            apply: format!(
                "INSERT INTO {} ({cols}) SELECT {cols} FROM pg_temp.{} {conflict}",
                quote_table(&target),
                quote_ident(&name)
            ),
            rows: chunk.rows,
            what: format!("write to {target}"),
        };
        let copy = format!("COPY {} ({cols}) FROM STDIN (FORMAT binary)", quote_table(&target));
        let cfg = self.pg.config().clone();
        let mut counts = WriteCounts::default();
        let result = match self.conn(0).await {
            Ok(conn) => apply(&cfg, conn, vec![Step::Direct { copy, staged }], &mut counts).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.drop_connection();
        }
        self.counts.add(counts);
        result
    }

    async fn end_load(&mut self, source: &TableSchema, target: &TableRef) -> Result<()> {
        // A target without a key here is one whose key `begin_load` deferred: `prepare` refuses others.
        let shape = self.refresh(&source.table, target).await?;
        if !shape.primary_key.is_empty() {
            return Ok(());
        }
        let cfg = self.pg.config().clone();
        let table = quote_table(target);
        let mut keys = Vec::new();
        for k in &source.primary_key {
            let col = shape.column(k).ok_or_else(|| {
                Error::new(
                    ErrorKind::Incompatible,
                    format!("target table {target} has no column '{k}' of the primary key"),
                )
            })?;
            keys.push(quote_ident(&col.name));
        }
        let add = format!("ALTER TABLE {table} ADD PRIMARY KEY ({})", keys.join(", "));
        let client = self.client().await?;
        match client.batch_execute(&add).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                // A resumed load sent some rows twice. Either copy is right: a row that changed in between
                // changed after the load's start position, and the stream applies that change next.
                let same: Vec<String> = keys.iter().map(|k| format!("a.{k} = b.{k}")).collect();
                let dedupe = format!(
                    "DELETE FROM {table} a USING {table} b WHERE a.ctid < b.ctid AND {}",
                    same.join(" AND ")
                );
                client.batch_execute(&dedupe).await.map_err(|e| classify(&cfg, e, "remove resent rows"))?;
                client
                    .batch_execute(&add)
                    .await
                    .map_err(|e| write_error(&cfg, e, "build the primary key"))?;
            }
            Err(e) => return Err(write_error(&cfg, e, "build the primary key")),
        }
        tracing::debug!(table = %target, "primary key built after the initial load");
        // Prepared statements were planned without the key.
        self.drop_connection();
        self.refresh(&source.table, target).await?;
        Ok(())
    }

    async fn count(&self, target: &TableRef) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {}", quote_table(target));
        let cfg = self.pg.config();
        let row = match &self.conns[0] {
            Some(c) => c.client.query_one(&sql, &[]).await,
            None => self.pg.connect().await?.query_one(&sql, &[]).await,
        }
        .map_err(|e| classify(cfg, e, &format!("count rows of {target}")))?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_types_ignore_only_the_default_precision_of_times() {
        assert_eq!(raw_type("timestamp(6) without time zone"), "timestamp without time zone");
        assert_eq!(raw_type("time(6) with time zone"), "time with time zone");
        assert_eq!(raw_type("interval(6)"), "interval");
        assert_eq!(raw_type("timestamp(3) without time zone"), "timestamp(3) without time zone");
        assert_eq!(raw_type("character varying(6)"), "character varying(6)");
        assert_eq!(raw_type("numeric(6,0)"), "numeric(6,0)");
    }

    #[test]
    fn rows_with_integer_or_uuid_keys_are_sorted_here_and_others_by_the_server() {
        let rows: Vec<Cow<'_, Row>> = [(3, 1), (1, 9), (2, 5), (1, 2)]
            .into_iter()
            .map(|(a, b)| Cow::Owned(vec![Value::Text("x".into()), Value::Int(a), Value::UInt(b)]))
            .collect();
        let sorted = in_key_order(&[1, 2], &rows).expect("integer keys sort here");
        let keys: Vec<(Value, Value)> = sorted.iter().map(|r| (r[1].clone(), r[2].clone())).collect();
        let expected: Vec<(Value, Value)> = [(1, 2), (1, 9), (2, 5), (3, 1)]
            .into_iter()
            .map(|(a, b)| (Value::Int(a), Value::UInt(b)))
            .collect();
        assert_eq!(keys, expected);
        assert!(in_key_order(&[0, 1], &rows).is_none(), "text keys are left to the server's collation");
    }

    #[test]
    fn statements_use_few_sizes() {
        assert_eq!(chunk_sizes(63, 1000), vec![32, 16, 8, 4, 2, 1]);
        assert_eq!(chunk_sizes(700, 1000), vec![256, 256, 128, 32, 16, 8, 4]);
        assert_eq!(chunk_sizes(130, 100), vec![64, 64, 2]);
        assert!(chunk_sizes(100, 10).iter().all(|s| *s <= 10));
        assert_eq!(chunk_sizes(100, 10).iter().sum::<usize>(), 100);
    }
}
