//! # Replication
//!
//! Streams the pipeline's logical replication slot with `pgoutput` (protocol version 1, text values) over
//! a replication session (`pgwire-replication`), decodes each message ([`super::pgoutput`]) and turns it
//! into [`ChangeEvent`]s:
//!
//! - `Begin` opens a transaction: its xid becomes the events' `txid` and its commit time their
//!   `commit_ts_ms` (PostgreSQL logs microseconds, so the milliseconds are exact).
//! - `Insert` / `Update` / `Delete` become row events, decoded by [`super::types`] with the table's schema.
//!   An update or delete carries the old key (or, under `REPLICA IDENTITY FULL`, the old row); columns of an
//!   old key image that are not part of the key are NULL. An update that left a TOASTed value untouched does
//!   not send it: that column is [`Value::Unchanged`], never NULL.
//! - `Relation` messages describe each table before its first change in a session and after every change
//!   of its definition. They are historic (they describe the table as it was when the change was logged),
//!   so the stream follows any number of schema changes exactly. When the columns or their types differ
//!   from the known schema, an [`Op::Ddl`] event with the new schema (version + 1) comes before the next
//!   row of that table.
//! - `Truncate` becomes an [`Op::Ddl`] event whose statement is `TRUNCATE "schema"."table"`, so the
//!   pipeline's DDL policy decides (apply: empty the target; ignore; stop).
//! - `Commit` becomes an [`Op::Commit`] whose position is the commit's end LSN: the place to resume after
//!   the transaction.
//! - A server keepalive between transactions becomes an [`Op::Heartbeat`] at the server's WAL position, so
//!   an idle database still moves the checkpoint and, once it is acknowledged, the slot.
//!
//! Positions are `{"lsn": "0/16B3748"}`. The slot is confirmed (its `confirmed_flush_lsn` advanced, which
//! lets the server recycle WAL) only up to what [`idaas_core::Source::acknowledge`] was told is durably
//! checkpointed; the running stream reads that value from an atomic shared with the source.
//!
//! Memory stays flat whatever the transaction size: protocol version 1 sends a transaction's changes
//! after its commit, as a sequence of small messages, which are forwarded one by one through a bounded
//! channel. A slow target therefore pushes back on the replication socket, and the server spills the
//! decoded transaction to disk beyond `logical_decoding_work_mem`. (Streaming of in-progress
//! transactions, protocol version 2, is not requested: the transport speaks version 1 only, and version 1
//! needs no buffering on our side.)
//!
//! # Errors
//! A lost connection or a server restart ends the stream with [`ErrorKind::Unreachable`]; the engine
//! reconnects from its last checkpoint. A slot that is gone or invalidated is [`ErrorKind::PositionLost`].
//! A value that cannot be carried (see [`super::types`]) stops the stream with [`ErrorKind::Unsupported`]
//! naming the table and column.

use super::pgoutput::{self, Datum, Message, OldKind, Relation};
use super::schema::{self, Described};
use super::types::{self, PgType, TypeCache};
use super::{Pg, classify, quote_table};
use crate::config::ConnectionConfig;
use idaas_core::{
    ChangeEvent, ChangeStream, Error, ErrorKind, Op, Position, Result, Row, SourceInfo, TableRef,
    TableSchema, Value,
};
use pgwire_replication::{Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent};
use secrecy::ExposeSecret;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

/// Bound of the channel between the replication reader and the engine: back-pressure for large
/// transactions.
pub const CHANNEL_CAPACITY: usize = 16_384;
/// Least time between two heartbeat events.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Session settings of the replication session: the text formats [`super::types`] reads.
const REPLICATION_OPTIONS: &str = "-c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c TimeZone=UTC \
                                   -c extra_float_digits=3 -c bytea_output=hex";

/// Formats an LSN as PostgreSQL prints it (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    Lsn(lsn).to_string()
}

/// Parses `16/B374D848`.
pub fn parse_lsn(s: &str) -> Option<u64> {
    Lsn::parse(s.trim()).ok().map(|l| l.0)
}

/// The position `{"lsn": "..."}`.
pub fn lsn_position(lsn: u64) -> Position {
    Position(serde_json::json!({ "lsn": format_lsn(lsn) }))
}

/// The LSN of a position this source wrote.
pub fn position_lsn(p: &Position) -> Result<u64> {
    p.0.get("lsn").and_then(|v| v.as_str()).and_then(parse_lsn).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("not a PostgreSQL position (expected {{\"lsn\": \"X/Y\"}}): {}", p.0),
        )
    })
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    /// The slot's name.
    pub name: String,
    /// Its output plugin.
    pub plugin: Option<String>,
    /// Its database.
    pub database: Option<String>,
    /// True when this is the connection's database.
    pub here: bool,
    /// Everything before this LSN was confirmed by the consumer.
    pub confirmed_flush: u64,
    /// The process streaming from it, if any.
    pub active_pid: Option<i32>,
    /// `wal_status`: `lost` when the server removed WAL the slot needed.
    pub wal_status: Option<String>,
}

/// Reads slot `name`.
pub async fn slot_info(client: &Client, cfg: &ConnectionConfig, name: &str) -> Result<Option<SlotInfo>> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, database = current_database(), confirmed_flush_lsn::text, \
             active_pid, wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| classify(cfg, e, "read replication slots"))?;
    Ok(row.map(|r| SlotInfo {
        name: name.to_string(),
        plugin: r.get(0),
        database: r.get(1),
        here: r.get::<_, Option<bool>>(2).unwrap_or(false),
        confirmed_flush: r.get::<_, Option<String>>(3).as_deref().and_then(parse_lsn).unwrap_or(0),
        active_pid: r.get(4),
        wal_status: r.get(5),
    }))
}

/// Checks that a slot can serve this pipeline.
pub fn usable(cfg: &ConnectionConfig, info: &SlotInfo) -> Result<()> {
    if info.plugin.as_deref() != Some("pgoutput") || !info.here {
        return Err(Error::new(
            ErrorKind::SourceConfig,
            format!(
                "connection '{}': replication slot {} exists but is not a pgoutput slot of this database \
                 (plugin {:?}, database {:?}); drop it (SELECT pg_drop_replication_slot('{}')) or rename the \
                 pipeline",
                cfg.alias, info.name, info.plugin, info.database, info.name
            ),
        ));
    }
    if info.wal_status.as_deref() == Some("lost") {
        return Err(Error::new(
            ErrorKind::PositionLost,
            format!(
                "connection '{}': replication slot {} was invalidated (the server removed WAL it still needed, \
                 see max_slot_wal_keep_size); recreate the pipeline to reload the table",
                cfg.alias, info.name
            ),
        ));
    }
    Ok(())
}

/// The replication session's settings for `slot`, starting at `start`.
pub fn replication_config(pg: &Pg, slot: &str, publication: &str, start: u64) -> ReplicationConfig {
    let cfg = pg.config();
    ReplicationConfig::new(
        cfg.host.clone(),
        cfg.user.clone(),
        cfg.password.expose_secret().to_string(),
        pg.database().to_string(),
        slot.to_string(),
        publication.to_string(),
    )
    .with_port(cfg.port)
    .with_start_lsn(Lsn(start))
    .with_ack_lsn(Lsn(start))
    .with_status_interval(Duration::from_secs(1))
    .with_wakeup_interval(Duration::from_secs(10))
    .with_buffer_size(256)
    .with_options(REPLICATION_OPTIONS)
    .with_application_name("idaas")
}

fn sqlstate(message: &str) -> Option<&str> {
    let at = message.rfind("(SQLSTATE ")?;
    message.get(at + 10..at + 15)
}

/// Maps a replication-session error to an [`Error`]. `what` names the operation.
pub fn wire_error(cfg: &ConnectionConfig, e: PgWireError, what: &str) -> Error {
    let who = format!("connection '{}' ({}:{})", cfg.alias, cfg.host, cfg.port);
    let (kind, msg) = match &e {
        PgWireError::Io(_) | PgWireError::Tls(_) => (
            ErrorKind::Unreachable,
            format!(
                "{who}: cannot reach the server or the connection was lost during {what}; check that it runs and listens"
            ),
        ),
        PgWireError::Auth(m) => {
            (ErrorKind::AuthFailed, format!("{who}: authentication failed for user '{}': {m}", cfg.user))
        }
        PgWireError::Server(m) => {
            let code = sqlstate(m).unwrap_or("");
            match code {
                "28P01" | "28000" => (
                    ErrorKind::AuthFailed,
                    format!("{who}: the server refused a replication session for user '{}': {m}", cfg.user),
                ),
                "42501" => (
                    ErrorKind::PermissionDenied,
                    format!(
                        "{who}: user '{}' may not use replication ({m}): ALTER ROLE {} WITH REPLICATION",
                        cfg.user,
                        super::quote_ident(&cfg.user)
                    ),
                ),
                "42704" | "58P01" => (
                    ErrorKind::PositionLost,
                    format!(
                        "{who}: {m} during {what}; the pipeline's replication slot, publication or WAL is gone: \
                         recreate the pipeline to reload the table"
                    ),
                ),
                "55000" if m.contains("invalidated") => (
                    ErrorKind::PositionLost,
                    format!("{who}: {m}; recreate the pipeline to reload the table"),
                ),
                "55000" | "53400" | "0A000" => (ErrorKind::SourceConfig, format!("{who}: {m} during {what}")),
                // The slot is still held by a session that is ending (after a reconnect), the server is
                // shutting down or starting, or too many connections: try again.
                "55006" | "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01" => {
                    (ErrorKind::Unreachable, format!("{who}: {m} during {what}"))
                }
                c if c.starts_with("08") => (ErrorKind::Unreachable, format!("{who}: {m} during {what}")),
                _ => (ErrorKind::Internal, format!("{who}: server error during {what}: {m}")),
            }
        }
        // The session's worker ended while the reader waited for something else.
        PgWireError::Internal(m) if m.contains("already joined") => {
            (ErrorKind::Unreachable, format!("{who}: the replication session ended during {what}"))
        }
        _ => (ErrorKind::Internal, format!("{who}: replication failure during {what}")),
    };
    Error::with_cause(kind, msg, e)
}

/// Creates slot `slot` without a snapshot when it is missing; returns the position to stream from (the new
/// slot's consistent point, or an existing slot's confirmed position).
pub async fn current_position(
    pg: &Pg,
    slot: &str,
    publication: &str,
    tables: &[TableRef],
) -> Result<Position> {
    let cfg = pg.config();
    let client = pg.connect().await?;
    schema::ensure_publication(&client, cfg, publication, tables).await?;
    if let Some(info) = slot_info(&client, cfg, slot).await? {
        usable(cfg, &info)?;
        return Ok(lsn_position(info.confirmed_flush));
    }
    match client
        .query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
    {
        Ok(row) => {
            let lsn =
                parse_lsn(&row.get::<_, String>(0)).ok_or_else(|| Error::internal("slot LSN unreadable"))?;
            tracing::info!(slot, lsn = %format_lsn(lsn), "replication slot created");
            Ok(lsn_position(lsn))
        }
        Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "42710") => {
            let info =
                slot_info(&client, cfg, slot).await?.ok_or_else(|| Error::internal("slot vanished"))?;
            usable(cfg, &info)?;
            Ok(lsn_position(info.confirmed_flush))
        }
        Err(e) => Err(slot_error(cfg, e, slot)),
    }
}

/// Maps an error of slot creation.
pub fn slot_error(cfg: &ConnectionConfig, e: tokio_postgres::Error, slot: &str) -> Error {
    match e.as_db_error().map(|d| d.code().code()) {
        Some("53400") => Error::with_cause(
            ErrorKind::SourceConfig,
            format!(
                "connection '{}': every replication slot is in use (max_replication_slots); drop unused slots \
                 or raise max_replication_slots (restart needed) to create {slot}",
                cfg.alias
            ),
            e,
        ),
        Some("42501") => Error::with_cause(
            ErrorKind::PermissionDenied,
            format!(
                "connection '{}': user '{}' may not create replication slots: ALTER ROLE {} WITH REPLICATION",
                cfg.alias,
                cfg.user,
                super::quote_ident(&cfg.user)
            ),
            e,
        ),
        _ => classify(cfg, e, "create the replication slot"),
    }
}

/// Drops slot `slot` (ending the session that streams from it first) and publication `publication`.
pub async fn release(pg: &Pg, slot: &str, publication: &str) -> Result<()> {
    let cfg = pg.config();
    let client = pg.connect().await?;
    let mut attempts = 0;
    while let Some(info) = slot_info(&client, cfg, slot).await? {
        attempts += 1;
        if let Some(pid) = info.active_pid {
            client
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .map_err(|e| classify(cfg, e, "end the session holding the replication slot"))?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if attempts < 100 {
                continue;
            }
        }
        match client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await {
            Ok(_) => {
                tracing::info!(slot, "replication slot dropped");
                break;
            }
            // Still active (the session is ending) or already gone: look again.
            Err(e)
                if attempts < 100
                    && e.as_db_error().is_some_and(|d| matches!(d.code().code(), "55006" | "42704")) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(classify(cfg, e, "drop the replication slot")),
        }
    }
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", super::quote_ident(publication)))
        .await
        .map_err(|e| classify(cfg, e, "drop the publication"))?;
    Ok(())
}

/// What a stream shares with its source.
pub struct StreamHandle {
    /// The highest LSN acknowledged as checkpointed.
    pub acked: Arc<AtomicU64>,
    /// Set to `true` to end every running stream (the pipeline is being released).
    pub stop: watch::Receiver<bool>,
}

/// Starts streaming slot `slot` from `from`, for `tables` (their schemas at `from`).
pub async fn stream(
    pg: Pg,
    slot: String,
    publication: String,
    from: Position,
    tables: Vec<TableSchema>,
    handle: StreamHandle,
) -> Result<ChangeStream> {
    let start = position_lsn(&from)?;
    let cfg = pg.config().clone();
    let catalog = pg.connect().await?;
    let refs: Vec<TableRef> = tables.iter().map(|t| t.table.clone()).collect();
    schema::ensure_publication(&catalog, &cfg, &publication, &refs).await?;
    match slot_info(&catalog, &cfg, &slot).await? {
        Some(info) => usable(&cfg, &info)?,
        None => {
            return Err(Error::new(
                ErrorKind::PositionLost,
                format!(
                    "connection '{}': replication slot {slot} does not exist (it was dropped); recreate the \
                     pipeline to reload the table",
                    cfg.alias
                ),
            ));
        }
    }
    let mut client = ReplicationClient::connect(replication_config(&pg, &slot, &publication, start))
        .await
        .map_err(|e| wire_error(&cfg, e, "start replication"))?;
    match tokio::time::timeout(Duration::from_secs(30), client.wait_started()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(wire_error(&cfg, e, "start replication")),
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!("connection '{}': the server did not start replication within 30 s", cfg.alias),
            ));
        }
    }
    client.update_applied_lsn(Lsn(handle.acked.load(Ordering::Acquire)));
    tracing::info!(slot = %slot, from = %format_lsn(start), "logical replication started");
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let reader = Reader {
        pg,
        catalog,
        types: TypeCache::new(),
        schemas: tables.into_iter().map(|s| (s.table.clone(), Arc::new(s))).collect(),
        relations: HashMap::new(),
        txn: None,
        last: start,
        heartbeat_at: None,
    };
    tokio::spawn(async move {
        let tx2 = tx.clone();
        if let Err(e) = reader.run(client, &tx, handle).await {
            let _ = tx2.send(Err(e)).await;
        }
    });
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A relation of the stream and how its columns land in a streamed table.
struct RelInfo {
    /// The streamed table it belongs to (itself, or the partitioned table of a partition); `None` when the
    /// stream does not follow it.
    table: Option<TableRef>,
    /// True for a partition of a streamed partitioned table.
    partition: bool,
    /// The relation's columns.
    relation: Relation,
    /// The type of each relation column.
    types: Vec<PgType>,
    /// The schema version `map` was built for.
    version: u64,
    /// Relation column index to schema column index.
    map: Vec<Option<usize>>,
}

struct Txn {
    xid: u32,
    final_lsn: u64,
    commit_ts_ms: i64,
}

type Tx = mpsc::Sender<Result<ChangeEvent>>;

struct Reader {
    pg: Pg,
    catalog: Client,
    types: TypeCache,
    schemas: HashMap<TableRef, Arc<TableSchema>>,
    relations: HashMap<u32, RelInfo>,
    txn: Option<Txn>,
    /// The last position emitted (commit or heartbeat).
    last: u64,
    /// When the last heartbeat was emitted.
    heartbeat_at: Option<std::time::Instant>,
}

fn map_columns(rel: &Relation, schema: &TableSchema) -> Vec<Option<usize>> {
    rel.columns.iter().map(|c| schema.column_index(&c.name)).collect()
}

async fn send(tx: &Tx, ev: ChangeEvent) -> Result<()> {
    tx.send(Ok(ev)).await.map_err(|_| Error::internal("change stream closed"))
}

impl Reader {
    fn cfg(&self) -> &ConnectionConfig {
        self.pg.config()
    }

    async fn run(mut self, mut client: ReplicationClient, tx: &Tx, handle: StreamHandle) -> Result<()> {
        let StreamHandle { acked, mut stop } = handle;
        // Resolves once the source is released; never when the source is dropped without that.
        let released = async move {
            loop {
                if *stop.borrow_and_update() {
                    return;
                }
                if stop.changed().await.is_err() {
                    futures::future::pending::<()>().await;
                }
            }
        };
        tokio::pin!(released);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            client.update_applied_lsn(Lsn(acked.load(Ordering::Acquire)));
            let ev = tokio::select! {
                biased;
                ev = client.recv() => ev,
                _ = tick.tick() => continue,
                _ = &mut released => {
                    client.stop();
                    return Err(Error::new(ErrorKind::Unreachable, "the pipeline's replication was released"));
                }
                _ = tx.closed() => {
                    client.stop();
                    return Ok(());
                }
            };
            match ev {
                Ok(Some(ev)) => self.event(ev, tx).await?,
                Ok(None) => {
                    return Err(Error::new(
                        ErrorKind::Unreachable,
                        format!("connection '{}': the server ended the replication stream", self.cfg().alias),
                    ));
                }
                Err(e) => return Err(wire_error(self.cfg(), e, "replication")),
            }
        }
    }

    fn info(&self, table: Option<TableRef>, position: u64, txn: bool) -> SourceInfo {
        let t = self.txn.as_ref().filter(|_| txn);
        SourceInfo {
            connection: self.cfg().alias.clone(),
            table,
            position: lsn_position(position),
            commit_ts_ms: t.map(|t| t.commit_ts_ms),
            read_ts_ms: Some(now_ms()),
            txid: t.map(|t| t.xid.to_string()),
        }
    }

    async fn event(&mut self, ev: ReplicationEvent, tx: &Tx) -> Result<()> {
        match ev {
            ReplicationEvent::Begin { final_lsn, xid, commit_time_micros } => {
                self.begin(final_lsn.0, xid, commit_time_micros);
            }
            ReplicationEvent::Commit { end_lsn, commit_time_micros, .. } => {
                self.commit(end_lsn.0, commit_time_micros, tx).await?;
            }
            ReplicationEvent::XLogData { data, .. } => match pgoutput::decode(&data)? {
                Message::Begin { final_lsn, commit_time, xid } => self.begin(final_lsn, xid, commit_time),
                Message::Commit { end_lsn, commit_time, .. } => self.commit(end_lsn, commit_time, tx).await?,
                Message::Relation(rel) => self.relation(rel, tx).await?,
                Message::Insert { relation, new } => {
                    self.row(tx, Op::Insert, relation, None, Some(new)).await?
                }
                Message::Update { relation, old, new } => {
                    self.row(tx, Op::Update, relation, old, Some(new)).await?;
                }
                Message::Delete { relation, old } => {
                    self.row(tx, Op::Delete, relation, Some(old), None).await?
                }
                Message::Truncate { relations, .. } => self.truncate(relations, tx).await?,
                Message::Type { .. } | Message::Origin { .. } | Message::LogicalMessage { .. } => {}
            },
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                // The server sends a keepalive whenever it waits for WAL and our confirmed position lags: at
                // most one heartbeat a second is enough to move the checkpoint.
                let due = self.heartbeat_at.is_none_or(|at| at.elapsed() >= HEARTBEAT_INTERVAL);
                if self.txn.is_none() && wal_end.0 > self.last && due {
                    self.last = wal_end.0;
                    self.heartbeat_at = Some(std::time::Instant::now());
                    let ev = ChangeEvent {
                        op: Op::Heartbeat,
                        source: self.info(None, wal_end.0, false),
                        before: None,
                        after: None,
                        schema: None,
                        ddl: None,
                    };
                    send(tx, ev).await?;
                }
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    fn begin(&mut self, final_lsn: u64, xid: u32, commit_time: i64) {
        let micros = commit_time + PG_EPOCH_MICROS;
        self.txn = Some(Txn { xid, final_lsn, commit_ts_ms: micros.div_euclid(1000) });
    }

    async fn commit(&mut self, end_lsn: u64, commit_time: i64, tx: &Tx) -> Result<()> {
        let mut info = self.info(None, end_lsn, true);
        info.commit_ts_ms = Some((commit_time + PG_EPOCH_MICROS).div_euclid(1000));
        self.txn = None;
        self.last = self.last.max(end_lsn);
        let ev =
            ChangeEvent { op: Op::Commit, source: info, before: None, after: None, schema: None, ddl: None };
        send(tx, ev).await
    }

    fn position(&self) -> u64 {
        self.txn.as_ref().map(|t| t.final_lsn).unwrap_or(self.last)
    }

    /// The streamed table a relation belongs to: itself, or the partitioned table of a partition.
    async fn streamed_table(&self, rel: &Relation) -> Result<Option<(TableRef, bool)>> {
        let own = TableRef::new(rel.namespace.clone(), rel.name.clone());
        if self.schemas.contains_key(&own) {
            return Ok(Some((own, false)));
        }
        let row = self
            .catalog
            .query_opt(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = pg_partition_root($1::oid::regclass)",
                &[&rel.id],
            )
            .await
            .map_err(|e| classify(self.cfg(), e, "find a partition's table"))?;
        Ok(row
            .map(|r| TableRef::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .filter(|root| *root != own && self.schemas.contains_key(root))
            .map(|root| (root, true)))
    }

    async fn relation(&mut self, rel: Relation, tx: &Tx) -> Result<()> {
        let Some((table, partition)) = self.streamed_table(&rel).await? else {
            self.relations.insert(
                rel.id,
                RelInfo {
                    table: None,
                    partition: false,
                    relation: rel,
                    types: Vec::new(),
                    version: 0,
                    map: Vec::new(),
                },
            );
            return Ok(());
        };
        let mut types = Vec::with_capacity(rel.columns.len());
        for c in &rel.columns {
            types.push(
                self.types.resolve(&self.catalog, self.pg.config(), c.type_oid, c.type_modifier).await?,
            );
        }
        let old = self.schemas[&table].clone();
        let map = map_columns(&rel, &old);
        let same = rel.columns.len() == old.columns.len()
            && map.iter().zip(&types).all(|(j, ty)| {
                j.is_some_and(|j| {
                    old.columns[j].source_type == ty.name && old.columns[j].data_type == ty.data_type
                })
            });
        let schema = if same {
            old
        } else {
            let new = Arc::new(self.new_schema(&table, &rel, &types, &old).await?);
            self.schemas.insert(table.clone(), new.clone());
            tracing::info!(table = %table, version = new.version, "table definition changed");
            let ev = ChangeEvent {
                op: Op::Ddl,
                source: self.info(Some(table.clone()), self.position(), true),
                before: None,
                after: None,
                schema: Some(new.clone()),
                ddl: Some(format!(
                    "/* {}: columns changed (pgoutput relation message) */",
                    quote_table(&table)
                )),
            };
            send(tx, ev).await?;
            new
        };
        let map = map_columns(&rel, &schema);
        self.relations.insert(
            rel.id,
            RelInfo { table: Some(table), partition, relation: rel, types, version: schema.version, map },
        );
        Ok(())
    }

    /// The schema a relation message describes. Column attributes the message lacks (nullability,
    /// default, collation) come from the known schema, or from the catalog for new columns.
    async fn new_schema(
        &mut self,
        table: &TableRef,
        rel: &Relation,
        types: &[PgType],
        old: &TableSchema,
    ) -> Result<TableSchema> {
        let current: Option<Described> =
            match schema::describe_with(&self.catalog, self.pg.config(), &mut self.types, table).await {
                Ok(d) => Some(d),
                Err(e) if e.kind == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
        let mut columns = Vec::with_capacity(rel.columns.len());
        for (c, ty) in rel.columns.iter().zip(types) {
            let known = old.column(&c.name).filter(|k| k.source_type == ty.name).or_else(|| {
                current.as_ref().and_then(|d| d.schema.column(&c.name)).filter(|k| k.source_type == ty.name)
            });
            let mut col = known.cloned().unwrap_or(idaas_core::ColumnSchema {
                name: c.name.clone(),
                data_type: ty.data_type.clone(),
                source_type: ty.name.clone(),
                nullable: true,
                default: None,
                collation: None,
            });
            col.data_type = ty.data_type.clone();
            columns.push(col);
        }
        let has = |n: &String| columns.iter().any(|c| &c.name == n);
        let flagged: HashSet<&str> = rel.columns.iter().filter(|c| c.key).map(|c| c.name.as_str()).collect();
        let candidates =
            [current.as_ref().map(|d| d.schema.primary_key.clone()), Some(old.primary_key.clone())];
        let mut primary_key = Vec::new();
        for pk in candidates.into_iter().flatten() {
            let set: HashSet<&str> = pk.iter().map(String::as_str).collect();
            if !pk.is_empty() && pk.iter().all(has) && (rel.replica_identity != b'd' || set == flagged) {
                primary_key = pk;
                break;
            }
        }
        if primary_key.is_empty() && rel.replica_identity == b'd' {
            primary_key = rel.columns.iter().filter(|c| c.key).map(|c| c.name.clone()).collect();
        }
        Ok(TableSchema { table: table.clone(), columns, primary_key, version: old.version + 1 })
    }

    fn decode(&self, info: &RelInfo, schema: &TableSchema, tuple: Vec<Datum>) -> Result<Row> {
        let name = schema.table.to_string();
        let mut row = vec![Value::Null; schema.columns.len()];
        for (i, d) in tuple.into_iter().enumerate() {
            let Some(Some(j)) = info.map.get(i) else { continue };
            let col = &schema.columns[*j];
            row[*j] = match d {
                Datum::Null => Value::Null,
                Datum::Unchanged => Value::Unchanged,
                Datum::Text(b) => {
                    let text = std::str::from_utf8(&b).map_err(|_| {
                        Error::new(
                            ErrorKind::Unsupported,
                            format!(
                                "table {name}, column '{}': the server sent text that is not UTF-8",
                                col.name
                            ),
                        )
                    })?;
                    types::from_text(&name, col, &info.types[i], text)?
                }
                Datum::Binary(_) => {
                    return Err(Error::internal(format!(
                        "table {name}, column '{}': the server sent a binary value, which was not requested",
                        col.name
                    )));
                }
            };
        }
        Ok(row)
    }

    async fn row(
        &mut self,
        tx: &Tx,
        op: Op,
        relation: u32,
        old: Option<(OldKind, Vec<Datum>)>,
        new: Option<Vec<Datum>>,
    ) -> Result<()> {
        let Some(info) = self.relations.get_mut(&relation) else {
            return Err(Error::internal(format!(
                "a row of relation {relation} came before its Relation message"
            )));
        };
        let Some(table) = info.table.clone() else { return Ok(()) };
        let schema = self.schemas[&table].clone();
        if info.version != schema.version {
            // Another partition's relation message changed the table's schema.
            info.map = map_columns(&info.relation, &schema);
            info.version = schema.version;
        }
        let info = &self.relations[&relation];
        let before = old.map(|(_, t)| self.decode(info, &schema, t)).transpose()?;
        let after = new.map(|t| self.decode(info, &schema, t)).transpose()?;
        let ev = ChangeEvent {
            op,
            source: self.info(Some(table), self.position(), true),
            before,
            after,
            schema: Some(schema),
            ddl: None,
        };
        send(tx, ev).await
    }

    async fn truncate(&mut self, relations: Vec<u32>, tx: &Tx) -> Result<()> {
        // Streamed table -> the partitions truncated (empty for the table itself).
        let mut hit: BTreeMap<TableRef, Vec<u32>> = BTreeMap::new();
        for id in relations {
            let Some(info) = self.relations.get(&id) else { continue };
            let Some(table) = &info.table else { continue };
            let parts = hit.entry(table.clone()).or_default();
            if info.partition {
                parts.push(id);
            }
        }
        for (table, parts) in hit {
            if !parts.is_empty() {
                let leaves: HashSet<u32> = self
                    .catalog
                    .query(
                        "SELECT relid::oid FROM pg_partition_tree($1::text::regclass) WHERE isleaf",
                        &[&quote_table(&table)],
                    )
                    .await
                    .map_err(|e| classify(self.cfg(), e, "read a table's partitions"))?
                    .into_iter()
                    .map(|r| r.get::<_, u32>(0))
                    .collect();
                if !leaves.iter().all(|l| parts.contains(l)) {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "some partitions of table {table} were truncated; a partial truncate cannot be applied \
                             to the target table. Recreate the pipeline to reload the table"
                        ),
                    ));
                }
            }
            let schema = self.schemas[&table].clone();
            let ev = ChangeEvent {
                op: Op::Ddl,
                source: self.info(Some(table.clone()), self.position(), true),
                before: None,
                after: None,
                schema: Some(schema),
                ddl: Some(format!("TRUNCATE {}", quote_table(&table))),
            };
            send(tx, ev).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let p = lsn_position(0x16_B374_D848);
        assert_eq!(p.0, serde_json::json!({"lsn": "16/B374D848"}));
        assert_eq!(position_lsn(&p).unwrap(), 0x16_B374_D848);
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert!(position_lsn(&Position(serde_json::json!({"file": "x", "pos": 4}))).is_err());
    }

    #[test]
    fn server_errors_are_classified() {
        let cfg = ConnectionConfig {
            alias: "pg".into(),
            kind: crate::ConnectorKind::Postgres,
            host: "h".into(),
            port: 5432,
            user: "u".into(),
            password: secrecy::SecretString::from("pw".to_string()),
            database: None,
        };
        let server = |m: &str| wire_error(&cfg, PgWireError::Server(m.into()), "replication").kind;
        assert_eq!(
            server("replication slot \"idaas_p\" is active for PID 42 (SQLSTATE 55006)"),
            ErrorKind::Unreachable
        );
        assert_eq!(
            server("replication slot \"idaas_p\" does not exist (SQLSTATE 42704)"),
            ErrorKind::PositionLost
        );
        assert_eq!(
            server("must be superuser or replication role (SQLSTATE 42501)"),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            server("terminating connection due to administrator command (SQLSTATE 57P01)"),
            ErrorKind::Unreachable
        );
        assert_eq!(
            server("logical decoding requires wal_level >= logical (SQLSTATE 55000)"),
            ErrorKind::SourceConfig
        );
        let io = PgWireError::Io(Arc::new(std::io::Error::other("reset")));
        assert_eq!(wire_error(&cfg, io, "replication").kind, ErrorKind::Unreachable);
        let e = wire_error(&cfg, PgWireError::Server("x (SQLSTATE 55006)".into()), "replication");
        assert!(!e.message.contains("pw"));
    }
}
