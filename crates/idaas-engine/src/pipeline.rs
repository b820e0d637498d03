//! # Pipeline runtime
//!
//! One task per running pipeline: prepare the target, copy the table in key-ordered chunks from a consistent
//! snapshot, then stream changes from the snapshot's position.
//!
//! ## Checkpoints
//! A [`Checkpoint`] is saved only after the sink committed everything before it:
//! - before the first snapshot row is written, the position of the first snapshot is saved as the stream
//!   start. A later snapshot (after a crash) resumes after the last copied key; the stream still starts at
//!   the first snapshot's position, so every change made while copying is replayed (idempotently);
//! - after each snapshot chunk: the last key copied;
//! - after each CDC batch: the position after the last source commit in the batch.
//!
//! ## Batching
//! The CDC loop waits for one event, then takes whatever else is already available (up to
//! [`MAX_BATCH_ROWS`] rows and [`MAX_BATCH_EVENTS`] events) and writes it in one target transaction: an
//! idle stream never waits, a backlog is drained in large transactions.
//!
//! ## Errors
//! Transient errors ([`RetryPolicy::Retry`]) restart the run from the last checkpoint with a growing back-off;
//! definite ones stop the pipeline with the error in its stats.

use crate::api::{DdlPolicy, PipelineSpec, SyncMode, TableProgress};
use crate::checkpoint::CheckpointWriter;
use crate::stats::Stats;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use idaas_core::{
    ChangeEvent, Error, ErrorKind, Op, Position, RawLayout, Result, RetryPolicy, Row, Sink, SnapshotChunk,
    SourceInfo, TableRef, TableSchema,
};
use idaas_store::Store;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, info, warn};

/// Most row events in one CDC batch.
pub const MAX_BATCH_ROWS: usize = 20_000;
/// Most events of any kind in one CDC batch: room for [`MAX_BATCH_ROWS`] one-row transactions, a commit
/// after each row.
pub const MAX_BATCH_EVENTS: usize = 2 * MAX_BATCH_ROWS;
/// Rows in the first snapshot chunk; later chunks are sized to about [`SNAPSHOT_CHUNK_BYTES`].
pub const SNAPSHOT_CHUNK_ROWS: usize = 5_000;
/// Approximate payload bytes per snapshot chunk (a row in flight costs several times its payload): large
/// enough that per-chunk round trips do not dominate, small enough that the chunks in flight stay far below
/// the memory budget whatever the row size.
pub const SNAPSHOT_CHUNK_BYTES: usize = 2 << 20;
/// Bounds of the chunk size in rows.
const SNAPSHOT_CHUNK_ROWS_RANGE: (usize, usize) = (500, 50_000);

/// Rough in-memory size of a row, for sizing chunks.
fn row_bytes(row: &Row) -> usize {
    row.iter()
        .map(|v| {
            16 + match v {
                idaas_core::Value::Text(s)
                | idaas_core::Value::Decimal(s)
                | idaas_core::Value::Json(s)
                | idaas_core::Value::Enum(s) => s.len(),
                idaas_core::Value::Bytes(b) => b.len(),
                idaas_core::Value::Array(a) => a.len() * 24,
                idaas_core::Value::Set(m) => m.iter().map(String::len).sum(),
                _ => 8,
            }
        })
        .sum()
}

/// What a pipeline saved last.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// Where the stream starts (or resumes).
    pub stream_position: Option<Position>,
    /// True when the initial load is finished.
    pub snapshot_done: bool,
    /// The last primary key copied by the initial load.
    pub snapshot_last_key: Option<Row>,
    /// Rows copied by the initial load.
    pub snapshot_rows: u64,
    /// The source table's schema at `stream_position`: the stream decodes rows with it until it shows a
    /// schema change. Absent before the first run prepared the target.
    pub source_schema: Option<TableSchema>,
    /// True when the pipeline created the target table (AutoCreate).
    #[serde(default)]
    pub target_created: bool,
}

/// Everything a run needs.
pub struct Context {
    /// Pipeline spec.
    pub spec: PipelineSpec,
    /// Resolved source table.
    pub source_table: TableRef,
    /// Resolved target table.
    pub target_table: TableRef,
    /// Builds the source.
    pub source: Arc<dyn idaas_core::Source>,
    /// Builds a fresh sink for every run.
    pub make_sink: Arc<dyn Fn() -> Box<dyn Sink> + Send + Sync>,
    /// Metadata store.
    pub store: Arc<Store>,
    /// Live figures.
    pub stats: Arc<Stats>,
    /// Saves checkpoints off the write path.
    pub checkpoints: CheckpointWriter,
    /// Resolution of the source's commit timestamps in milliseconds (for lag).
    pub commit_resolution_ms: i64,
}

/// How a run ended without error.
enum Outcome {
    Stopped,
    Completed,
}

fn store_err(e: idaas_store::StoreError) -> Error {
    Error::with_cause(ErrorKind::Internal, "metadata store failure", e)
}

impl Context {
    /// Hands a checkpoint to the writer thread (it is covered by a target commit already).
    fn save(&self, cp: &Checkpoint) -> Result<()> {
        let json =
            serde_json::to_value(cp).map_err(|e| Error::with_cause(ErrorKind::Internal, "checkpoint", e))?;
        self.checkpoints.save(json)
    }

    /// Saves a checkpoint and waits until it is durable.
    fn save_now(&self, cp: &Checkpoint) -> Result<()> {
        let json =
            serde_json::to_value(cp).map_err(|e| Error::with_cause(ErrorKind::Internal, "checkpoint", e))?;
        self.checkpoints.save_now(json)
    }

    fn load(&self) -> Result<Checkpoint> {
        match self.store.load_checkpoint(&self.spec.alias).map_err(store_err)? {
            None => Ok(Checkpoint::default()),
            Some(v) => serde_json::from_value(v)
                .map_err(|e| Error::with_cause(ErrorKind::Internal, "stored checkpoint is malformed", e)),
        }
    }
}

/// Runs a pipeline until it is stopped, completes, or fails definitely. Returns the final status.
pub async fn run(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) -> (String, Option<String>) {
    let span = tracing::info_span!("pipeline", pipeline = %ctx.spec.alias);
    async move {
        let mut backoff: Option<Duration> = None;
        loop {
            if *stop.borrow() {
                return ("stopped".to_string(), None);
            }
            ctx.stats.set_status("running");
            match run_once(&ctx, &mut stop).await {
                Ok(Outcome::Stopped) => return ("stopped".to_string(), None),
                Ok(Outcome::Completed) => {
                    info!("initial load complete");
                    return ("completed".to_string(), None);
                }
                Err(e) => match e.kind.retry_policy() {
                    RetryPolicy::Retry { initial, max } => {
                        let wait = backoff.map(|b| (b * 2).min(max)).unwrap_or(initial);
                        backoff = Some(wait);
                        warn!(error = %e.report(), wait_ms = wait.as_millis() as u64, "transient failure, retrying");
                        ctx.stats.set_status("retrying");
                        ctx.stats.set_error(Some(e.message.clone()));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.changed() => {}
                        }
                    }
                    RetryPolicy::Stop => {
                        warn!(error = %e.report(), "pipeline failed");
                        return ("failed".to_string(), Some(e.message));
                    }
                },
            }
        }
    }
    .instrument(span)
    .await
}

async fn run_once(ctx: &Arc<Context>, stop: &mut watch::Receiver<bool>) -> Result<Outcome> {
    // A retry resumes from the newest checkpoint: let the writer finish what it holds first.
    ctx.checkpoints.flush()?;
    let mut cp = ctx.load()?;
    let current = ctx.source.describe(&ctx.source_table).await?;
    let mut sink = (ctx.make_sink)();
    let schema = match &cp.source_schema {
        // First run: create or verify the target.
        None => {
            if sink.prepare(&current, &ctx.target_table, ctx.spec.auto_create).await? {
                cp.target_created = true;
            }
            cp.source_schema = Some(current.clone());
            Arc::new(current.clone())
        }
        // Resumed: the target was prepared before; it follows the checkpoint's schema (or the policy).
        Some(s) => {
            sink.attach(&ctx.source_table, &ctx.target_table).await?;
            Arc::new(s.clone())
        }
    };
    if ctx.spec.mode != SyncMode::Cdc && !cp.snapshot_done {
        // The snapshot reads the table as it is now. A schema change since the stream position is replayed
        // by the stream later; under `apply` the target gets the new shape first so the rows fit.
        let current = Arc::new(current);
        if current.columns != schema.columns && ctx.spec.ddl_policy == DdlPolicy::Apply {
            sink.alter(&schema, &current, &ctx.target_table).await?;
        }
        if let Some(o) = snapshot(ctx, &mut cp, sink.as_mut(), current, stop).await? {
            return Ok(o);
        }
        if ctx.spec.mode == SyncMode::Initial {
            return Ok(Outcome::Completed);
        }
    }
    if cp.stream_position.is_none() {
        cp.stream_position = Some(ctx.source.current_position().await?);
        cp.snapshot_done = true;
        ctx.save_now(&cp)?;
    }
    ctx.stats.set_error(None);
    stream(ctx, &mut cp, sink.as_mut(), schema, stop).await
}

async fn snapshot(
    ctx: &Arc<Context>,
    cp: &mut Checkpoint,
    sink: &mut dyn Sink,
    schema: Arc<TableSchema>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Outcome>> {
    let reader = ctx.source.snapshot().await?;
    if cp.stream_position.is_none() {
        // Durable before the first row is written: every later change is replayed from here.
        cp.stream_position = Some(reader.position().clone());
        ctx.save_now(cp)?;
    }
    info!(table = %ctx.source_table, resume_rows = cp.snapshot_rows, "initial load starting");
    let estimate = ctx.source.estimate_rows(&ctx.source_table).await.unwrap_or(0);
    let progress = |rows: u64, done: bool| TableProgress {
        table: ctx.source_table.clone(),
        rows_copied: rows,
        rows_estimated: estimate.max(rows),
        done,
    };
    ctx.stats.set_progress(progress(cp.snapshot_rows, false));
    let fresh = cp.target_created && cp.snapshot_rows == 0;
    sink.begin_load(&schema, &ctx.target_table, cp.snapshot_last_key.as_ref(), fresh).await?;
    // A second target connection, so one chunk is written while the next one is encoded and sent. When the
    // target refuses it, the load runs on the pipeline's own connection alone.
    let mut extra = (ctx.make_sink)();
    let mut extra = match extra.attach(&ctx.source_table, &ctx.target_table).await {
        Ok(()) => Some(extra),
        Err(e) => {
            warn!(error = %e.report(), "initial load continues on one target connection");
            None
        }
    };
    let mut idle: Vec<&mut dyn Sink> = vec![&mut *sink];
    if let Some(e) = extra.as_mut() {
        idle.push(e.as_mut());
    }
    // Rows go from source to target without decoding when both sides speak the same form.
    let mut reader = reader;
    let mut raw = reader.raw_layout(&schema).await?;
    if let Some(layout) = &raw {
        for w in idle.iter_mut() {
            if !w.accepts_raw(&ctx.source_table, layout).await? {
                raw = None;
                break;
            }
        }
    }
    info!(table = %ctx.source_table, raw = raw.as_ref().map(|l| l.format), "initial load path");
    // Read ahead while the chunks before are written.
    let (tx, mut rx) = mpsc::channel::<Result<SnapshotChunk>>(idle.len());
    let read_schema = schema.clone();
    let read_raw = raw.is_some();
    let mut after = cp.snapshot_last_key.clone();
    let mut reader_task = tokio::spawn(async move {
        let mut limit = SNAPSHOT_CHUNK_ROWS;
        loop {
            let chunk = if read_raw {
                reader.read_raw(&read_schema, after.as_ref(), limit).await
            } else {
                reader.read_chunk(&read_schema, after.as_ref(), limit).await.map(SnapshotChunk::Rows)
            };
            let done = match &chunk {
                Ok(c) => {
                    if let Some((last, avg)) = chunk_tail(&read_schema, c) {
                        after = Some(last);
                        let (lo, hi) = SNAPSHOT_CHUNK_ROWS_RANGE;
                        limit = (SNAPSHOT_CHUNK_BYTES / avg.max(1)).clamp(lo, hi);
                    }
                    chunk_len(c) == 0
                }
                Err(_) => true,
            };
            if tx.send(chunk).await.is_err() || done {
                break;
            }
        }
        let _ = reader.finish().await;
    });
    let keyidx = schema.key_indexes();
    // Chunks being written, finished in the order they were read: the checkpoint only moves past a chunk
    // once every chunk before it is committed.
    let mut writing = FuturesOrdered::new();
    let mut reading = true;
    loop {
        let done = if reading && !idle.is_empty() {
            tokio::select! {
                chunk = rx.recv() => {
                    let chunk = match chunk {
                        None => return Err(Error::internal("snapshot reader ended early")),
                        Some(r) => r?,
                    };
                    if chunk_len(&chunk) == 0 {
                        reading = false;
                        continue;
                    }
                    let writer = idle.pop().expect("an idle writer");
                    writing.push_back(write_chunk(ctx, writer, &schema, raw.as_ref(), &keyidx, chunk));
                    continue;
                }
                Some(done) = writing.next(), if !writing.is_empty() => done,
                _ = stop.changed() => {
                    reader_task.abort();
                    return Ok(Some(Outcome::Stopped));
                }
            }
        } else if !writing.is_empty() {
            tokio::select! {
                Some(done) = writing.next() => done,
                _ = stop.changed() => {
                    reader_task.abort();
                    return Ok(Some(Outcome::Stopped));
                }
            }
        } else {
            break;
        };
        let (writer, result, n, last_key) = done;
        result?;
        idle.push(writer);
        cp.snapshot_rows += n;
        cp.snapshot_last_key = Some(last_key);
        ctx.save(cp)?;
        ctx.stats.output(n, None);
        ctx.stats.set_progress(progress(cp.snapshot_rows, false));
    }
    let _ = (&mut reader_task).await;
    drop(writing);
    drop(idle);
    drop(extra);
    sink.end_load(&schema, &ctx.target_table).await?;
    cp.snapshot_done = true;
    cp.snapshot_last_key = None;
    ctx.save(cp)?;
    ctx.stats.set_progress(progress(cp.snapshot_rows, true));
    info!(table = %ctx.source_table, rows = cp.snapshot_rows, "initial load done");
    Ok(None)
}

/// Rows in a snapshot chunk.
fn chunk_len(chunk: &SnapshotChunk) -> usize {
    match chunk {
        SnapshotChunk::Rows(rows) => rows.len(),
        SnapshotChunk::Raw(raw) => raw.rows,
    }
}

/// The last key of a chunk that is not empty, and the average bytes of its rows (for sizing the next).
fn chunk_tail(schema: &TableSchema, chunk: &SnapshotChunk) -> Option<(Row, usize)> {
    match chunk {
        SnapshotChunk::Rows(rows) => {
            let last = rows.last()?;
            let sample = &rows[..rows.len().min(200)];
            let avg = sample.iter().map(row_bytes).sum::<usize>() / sample.len();
            Some((schema.key_indexes().iter().map(|i| last[*i].clone()).collect(), avg))
        }
        SnapshotChunk::Raw(raw) if raw.rows > 0 => Some((raw.last_key.clone(), raw.data.len() / raw.rows)),
        SnapshotChunk::Raw(_) => None,
    }
}

/// Writes one snapshot chunk with `writer` (rows in the source's own form when `raw` says so); gives the
/// writer back with the result, the row count and the chunk's last key.
async fn write_chunk<'a>(
    ctx: &Arc<Context>,
    writer: &'a mut dyn Sink,
    schema: &Arc<TableSchema>,
    raw: Option<&RawLayout>,
    keyidx: &[usize],
    chunk: SnapshotChunk,
) -> (&'a mut dyn Sink, Result<()>, u64, Row) {
    let rows = match (chunk, raw) {
        (SnapshotChunk::Raw(c), Some(layout)) => {
            let n = c.rows as u64;
            ctx.stats.input(n, true);
            let result = writer.write_raw(schema, layout, &c).await;
            return (writer, result, n, c.last_key);
        }
        (SnapshotChunk::Raw(c), None) => {
            let e = Error::internal("the snapshot reader sent rows in a form no sink accepted");
            return (writer, Err(e), 0, c.last_key);
        }
        (SnapshotChunk::Rows(rows), _) => rows,
    };
    let n = rows.len() as u64;
    ctx.stats.input(n, true);
    let last_key: Row = keyidx.iter().map(|i| rows[rows.len() - 1][*i].clone()).collect();
    let source = SourceInfo {
        connection: ctx.spec.source.connection.as_str().into(),
        table: Some(Arc::new(ctx.source_table.clone())),
        position: Position::default(),
        commit_ts_ms: None,
        read_ts_ms: None,
        txid: None,
    };
    let events: Vec<ChangeEvent> = rows
        .into_iter()
        .map(|r| ChangeEvent {
            op: Op::SnapshotRead,
            source: source.clone(),
            before: None,
            after: Some(r),
            schema: Some(schema.clone()),
            ddl: None,
        })
        .collect();
    let result = writer.write(&events).await;
    (writer, result, n, last_key)
}

async fn stream(
    ctx: &Arc<Context>,
    cp: &mut Checkpoint,
    sink: &mut dyn Sink,
    mut schema: Arc<TableSchema>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Outcome> {
    let from = cp.stream_position.clone().unwrap_or_default();
    let mut changes = ctx.source.stream(&from, std::slice::from_ref(&*schema)).await?;
    info!(position = %from, "streaming changes");
    // Both buffers keep their size from batch to batch while events keep coming (growing them again for
    // every batch cost more than filling them) and are released whenever the stream waits.
    // `pending` starts with the events after the last resume point of the batch before.
    let mut pending: Vec<ChangeEvent> = Vec::new();
    let mut rows: Vec<ChangeEvent> = Vec::new();
    loop {
        // A closed sender counts as a stop, as in the wait below.
        if stop.has_changed().unwrap_or(true) {
            return Ok(Outcome::Stopped);
        }
        let first = match changes.next().now_or_never() {
            Some(e) => e,
            None => {
                pending.shrink_to_fit();
                rows.shrink_to_fit();
                tokio::select! {
                    e = changes.next() => e,
                    _ = stop.changed() => return Ok(Outcome::Stopped),
                }
            }
        };
        let Some(first) = first else {
            return Err(Error::new(ErrorKind::Unreachable, "the change stream ended"));
        };
        let first = first?;
        // A schema change ends a batch: rows before it are written with the old shape, rows after it with
        // the new one.
        let mut open = first.op != Op::Ddl;
        pending.push(first);
        let mut rows_pending = pending.iter().filter(|e| e.op.is_row()).count();
        let full = |rows: usize, events: usize| rows >= MAX_BATCH_ROWS || events >= MAX_BATCH_EVENTS;
        // Take everything already buffered. Tokio's cooperative budget would make the channel look empty
        // after 128 receives in one poll and cap every batch there; the drain does not wait, so it runs
        // outside the budget.
        tokio::task::unconstrained(async {
            while open && !full(rows_pending, pending.len()) {
                match changes.next().now_or_never() {
                    Some(Some(ev)) => {
                        let ev = ev?;
                        open = ev.op != Op::Ddl;
                        rows_pending += usize::from(ev.op.is_row());
                        pending.push(ev);
                    }
                    Some(None) | None => break,
                }
            }
            Ok::<(), Error>(())
        })
        .await?;
        // Keep source transactions whole in the target: events after the last resume point wait for their
        // commit, unless the batch is full (a transaction larger than a batch is written in parts).
        let cut = if !full(rows_pending, pending.len()) {
            pending
                .iter()
                .rposition(|e| matches!(e.op, Op::Commit | Op::Heartbeat | Op::Ddl))
                .map(|i| i + 1)
                .unwrap_or(0)
        } else {
            pending.len()
        };
        if cut == 0 {
            continue;
        }
        let mut commit_pos: Option<Position> = None;
        let mut last_commit_ts: Option<i64> = None;
        let mut heartbeat = false;
        let mut ddl: Option<ChangeEvent> = None;
        rows.clear();
        for mut ev in pending.drain(..cut) {
            match ev.op {
                Op::Insert | Op::Update | Op::Delete => rows.push(ev),
                Op::Commit => {
                    // Coarse commit timestamps (whole seconds in binlogs) are bounded by the read time.
                    if let Some(t) = ev.source.commit_upper_bound_ms(ctx.commit_resolution_ms) {
                        last_commit_ts = Some(t);
                    }
                    commit_pos = Some(std::mem::take(&mut ev.source.position));
                }
                Op::Heartbeat => {
                    commit_pos = Some(std::mem::take(&mut ev.source.position));
                    heartbeat = true;
                }
                Op::Ddl => ddl = Some(ev),
                _ => {}
            }
        }
        if !rows.is_empty() {
            ctx.stats.input(rows.len() as u64, false);
            let started = std::time::Instant::now();
            sink.write(&rows).await?;
            tracing::debug!(
                events = rows.len(),
                write_ms = started.elapsed().as_secs_f64() * 1e3,
                "batch written"
            );
            let ts = last_commit_ts.or_else(|| {
                rows.last().and_then(|r| r.source.commit_upper_bound_ms(ctx.commit_resolution_ms))
            });
            ctx.stats.output(rows.len() as u64, ts);
            rows.clear();
        } else if heartbeat {
            ctx.stats.caught_up();
        }
        if let Some(ev) = ddl {
            schema = apply_ddl(ctx, cp, sink, schema, ev).await?;
        }
        if let Some(p) = commit_pos {
            cp.stream_position = Some(p);
            ctx.save(cp)?;
        }
    }
}

async fn apply_ddl(
    ctx: &Arc<Context>,
    cp: &mut Checkpoint,
    sink: &mut dyn Sink,
    old: Arc<TableSchema>,
    ev: ChangeEvent,
) -> Result<Arc<TableSchema>> {
    let Some(new) = ev.schema.clone() else { return Ok(old) };
    let statement = ev.ddl.clone().unwrap_or_default();
    let truncate = statement.trim_start().to_ascii_uppercase().starts_with("TRUNCATE");
    if truncate {
        match ctx.spec.ddl_policy {
            DdlPolicy::Apply => {
                info!(table = %ctx.source_table, "source table truncated; removing the target's rows");
                sink.truncate(&ctx.target_table).await?;
                cp.source_schema = Some((*new).clone());
                return Ok(new);
            }
            DdlPolicy::Ignore => {
                cp.source_schema = Some((*new).clone());
                return Ok(new);
            }
            DdlPolicy::Stop => {}
        }
    } else if new.columns == old.columns && new.primary_key == old.primary_key {
        cp.source_schema = Some((*new).clone());
        return Ok(new);
    }
    match ctx.spec.ddl_policy {
        DdlPolicy::Apply => {
            info!(table = %ctx.source_table, "applying source schema change to the target");
            sink.alter(&old, &new, &ctx.target_table).await?;
        }
        DdlPolicy::Ignore => {
            info!(table = %ctx.source_table, "source schema change ignored by policy");
        }
        DdlPolicy::Stop => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "source table {} changed its schema ({}); the pipeline's ddl_policy is 'stop'. Apply the \
                     change to target {} yourself and recreate the pipeline, or recreate it with ddl_policy \
                     'apply' or 'ignore'",
                    ctx.source_table,
                    statement.chars().take(200).collect::<String>(),
                    ctx.target_table
                ),
            ));
        }
    }
    // The checkpoint saved after this batch is past the change: decode with the new schema from there.
    cp.source_schema = Some((*new).clone());
    Ok(new)
}
