//! # Replication
//!
//! Streams the pipeline's logical replication slot with `pgoutput` (text values) over our own replication
//! transport ([`super::wire`]), decodes each message ([`super::pgoutput`]) and turns it into
//! [`ChangeEvent`]s:
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
//! checkpointed; the transport's status updates read that value from an atomic shared with the source.
//!
//! # Large transactions
//!
//! On PostgreSQL 14 and later the stream uses protocol version 2 with `streaming 'on'`: once a running
//! transaction holds more than `logical_decoding_work_mem` of decoded changes, the server sends them
//! before the commit, in blocks (`Stream Start` .. `Stream Stop`) that may be interleaved with other
//! transactions, and ends it with `Stream Commit` or `Stream Abort`. The server then neither keeps the
//! transaction in memory nor spills it to its own disk, and the changes travel while the transaction
//! runs. Older servers get protocol version 1, which sends each transaction after its commit.
//!
//! The engine must still see whole transactions in commit order, so the changes of a streamed
//! transaction are spooled, per top-level xid, to an anonymous temporary file (the raw pgoutput messages
//! behind a length, through a buffered writer: memory stays flat whatever the transaction's size). The
//! file offset of each subtransaction's first change is recorded; a `Stream Abort` of a subtransaction
//! (`ROLLBACK TO SAVEPOINT`) truncates the file there and forgets the subtransactions that came after it
//! (nested in it or later, as changes arrive in WAL order), and an abort of the whole transaction drops
//! the file. (The server sends the table's Relation message again after any stream abort, so truncating
//! one away loses nothing.) At `Stream Commit` the file is replayed through exactly the path of a
//! transaction sent at commit: its xid and commit time, Relation messages as schema changes, the rows at
//! the commit LSN, then the commit at the end LSN. Transactions that commit while a large one is still
//! being streamed are sent whole, between its blocks, and reach the engine first, as they committed
//! first. Since nothing is forwarded before the commit, memory between the socket and the engine stays
//! bounded by the events channel (`crate::events`), and a slow target pushes back on the socket as before.
//!
//! Heartbeats go on between the blocks of a streamed transaction, but never inside a block or inside a
//! transaction sent at commit. That is safe for three reasons:
//! - a keepalive's WAL position is where the server's decoding has read to, and it is sent before the
//!   record being decoded produces its output: a transaction whose commit record is at or after a
//!   heartbeat's position has not been sent in full before it, and one that committed before it has;
//! - when the stream resumes at a position `P`, the server decodes from the slot's `restart_lsn` and sends
//!   every transaction whose commit comes at or after `P`, in full; it keeps `restart_lsn` at or before
//!   the start of the oldest transaction still open at the slot's confirmed position, so a checkpoint
//!   taken while a streamed transaction is open never lets WAL it needs be recycled;
//! - the spool lives only in this process: after a restart nothing half-streamed is left over, and the
//!   server streams the open transaction again from its first change.
//!
//! So a streamed transaction that commits after the checkpoint a pipeline restarts from is delivered in
//! full, once, and one that committed before it is not delivered again.
//!
//! # Errors
//! A lost connection or a server restart ends the stream with [`ErrorKind::Unreachable`]; the engine
//! reconnects from its last checkpoint. A slot that is gone or invalidated is [`ErrorKind::PositionLost`].
//! A value that cannot be carried (see [`super::types`]) stops the stream with [`ErrorKind::Unsupported`]
//! naming the table and column. A spool file that cannot be written (the temporary directory is full) is
//! [`ErrorKind::Internal`] and says where.

use super::pgoutput::{self, Datum, Message, OldKind, Relation};
use super::schema::{self, Described};
use super::types::{self, PgType, TypeCache};
use super::wire::{self, ReplicationStream, WireError};
use super::{Pg, classify, quote_table};
use crate::config::ConnectionConfig;
use crate::events::{self, Grouped as Tx};
use idaas_core::{
    ChangeEvent, ChangeStream, Error, ErrorKind, Op, Position, Result, Row, SourceInfo, TableRef,
    TableSchema, Value,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::watch;
use tokio_postgres::Client;

/// Least time between two heartbeat events.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Buffer of a spool file's writer and reader (one per streamed transaction in flight).
const SPOOL_BUFFER: usize = 64 * 1024;

/// Formats an LSN as PostgreSQL prints it (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    // Written digit by digit: every source transaction's commit position is formatted, and `format!`
    // costs several times more.
    fn hex(out: &mut String, v: u32) {
        let digits = (8 - v.leading_zeros() as usize / 4).max(1);
        for i in (0..digits).rev() {
            out.push(char::from(b"0123456789ABCDEF"[(v >> (i * 4)) as usize & 0xF]));
        }
    }
    let mut out = String::with_capacity(17);
    hex(&mut out, (lsn >> 32) as u32);
    out.push('/');
    hex(&mut out, lsn as u32);
    out
}

/// Parses `16/B374D848` (two groups of one to eight hexadecimal digits).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let part = |p: &str| {
        (!p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(p, 16).ok())
            .flatten()
    };
    Some((u64::from(part(hi)?) << 32) | u64::from(part(lo)?))
}

/// The position `{"lsn": "..."}`, kept as the number until its JSON form is needed.
pub fn lsn_position(lsn: u64) -> Position {
    Position::deferred(lsn, |lsn| serde_json::json!({ "lsn": format_lsn(lsn) }))
}

/// The LSN of a position this source wrote.
pub fn position_lsn(p: &Position) -> Result<u64> {
    let json = p.to_json();
    json.get("lsn").and_then(|v| v.as_str()).and_then(parse_lsn).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("not a PostgreSQL position (expected {{\"lsn\": \"X/Y\"}}): {json}"),
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

/// Maps a replication-session error to an [`Error`] that names the connection (never the password).
/// `what` names the operation.
pub fn wire_error(cfg: &ConnectionConfig, e: WireError, what: &str) -> Error {
    let who = format!("connection '{}' ({}:{})", cfg.alias, cfg.host, cfg.port);
    let (kind, msg) = match &e {
        WireError::Io(_) => (
            ErrorKind::Unreachable,
            format!(
                "{who}: cannot reach the server or the connection was lost during {what}; check that it runs and listens"
            ),
        ),
        WireError::Auth(m) => {
            (ErrorKind::AuthFailed, format!("{who}: authentication failed for user '{}': {m}", cfg.user))
        }
        WireError::Server(server) => {
            let m = server.to_string();
            match server.code.as_str() {
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
        // The server ended the session while the reader waited for something else.
        WireError::Ended => {
            (ErrorKind::Unreachable, format!("{who}: the replication session ended during {what}"))
        }
        WireError::Protocol(_) => (ErrorKind::Internal, format!("{who}: replication failure during {what}")),
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
    let started = async {
        let session = wire::Session::connect(&pg).await?;
        session.start_replication(&slot, &publication, start, handle.acked.clone()).await
    };
    let replication = match tokio::time::timeout(Duration::from_secs(30), started).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(wire_error(&cfg, e, "start replication")),
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!("connection '{}': the server did not start replication within 30 s", cfg.alias),
            ));
        }
    };
    tracing::info!(
        slot = %slot,
        from = %format_lsn(start),
        protocol_version = replication.protocol_version(),
        "logical replication started"
    );
    let (tx, stream) = events::channel();
    let reader = Reader {
        alias: pg.config().alias.as_str().into(),
        pg,
        catalog,
        types: TypeCache::new(),
        schemas: tables.into_iter().map(|s| (s.table.clone(), Arc::new(s))).collect(),
        relations: HashMap::default(),
        txn: None,
        block: None,
        spools: HashMap::new(),
        last: start,
        heartbeat_at: None,
        read_ts_ms: now_ms(),
    };
    tokio::spawn(async move {
        if let Err(e) = reader.run(replication, &tx, handle.stop).await {
            // What was decoded before the failure goes first; the engine resumes from its checkpoint.
            tx.fail(e).await;
        }
    });
    Ok(stream)
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
    table: Option<Arc<TableRef>>,
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
    /// The transaction id as the events' `txid`, formatted once for all of them.
    txid: Arc<str>,
    final_lsn: u64,
    commit_ts_ms: i64,
}

/// The changes of a streamed transaction that has not committed yet, in a temporary file: each pgoutput
/// message (as received, with its xid) behind its length as a little-endian `u32`.
struct Spool {
    /// The top-level transaction.
    xid: u32,
    file: BufWriter<File>,
    /// Bytes written.
    len: u64,
    /// Subtransactions in the order of their first change, with the offset of that change.
    subxacts: Vec<(u32, u64)>,
    /// Index of each subtransaction in `subxacts`.
    index: HashMap<u32, usize>,
}

impl Spool {
    fn new(xid: u32) -> std::io::Result<Spool> {
        let file = tempfile::tempfile()?;
        Ok(Spool {
            xid,
            file: BufWriter::with_capacity(SPOOL_BUFFER, file),
            len: 0,
            subxacts: Vec::new(),
            index: HashMap::new(),
        })
    }

    /// Appends a change of (sub)transaction `xid`.
    fn write(&mut self, xid: u32, msg: &[u8]) -> std::io::Result<()> {
        if xid != self.xid && !self.index.contains_key(&xid) {
            self.index.insert(xid, self.subxacts.len());
            self.subxacts.push((xid, self.len));
        }
        let len = u32::try_from(msg.len()).map_err(|_| std::io::Error::other("message larger than 4 GiB"))?;
        self.file.write_all(&len.to_le_bytes())?;
        self.file.write_all(msg)?;
        self.len += 4 + u64::from(len);
        Ok(())
    }

    /// Drops the changes of subtransaction `subxid` and of every subtransaction that came after it.
    fn abort(&mut self, subxid: u32) -> std::io::Result<()> {
        let Some(&at) = self.index.get(&subxid) else { return Ok(()) };
        let offset = self.subxacts[at].1;
        for (x, _) in self.subxacts.drain(at..) {
            self.index.remove(&x);
        }
        self.file.flush()?;
        self.file.get_mut().set_len(offset)?;
        self.file.seek(SeekFrom::Start(offset))?;
        self.len = offset;
        Ok(())
    }

    /// The spooled messages, from the first.
    fn replay(self) -> std::io::Result<SpoolReader> {
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(SpoolReader { file: BufReader::with_capacity(SPOOL_BUFFER, file), buf: Vec::new() })
    }
}

struct SpoolReader {
    file: BufReader<File>,
    buf: Vec<u8>,
}

impl SpoolReader {
    /// The next message, `None` at the end.
    fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        let mut len = [0u8; 4];
        match self.file.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        self.buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.file.read_exact(&mut self.buf)?;
        Ok(Some(&self.buf))
    }
}

fn spool_error(cfg: &ConnectionConfig, xid: u32, e: std::io::Error) -> Error {
    Error::with_cause(
        ErrorKind::Internal,
        format!(
            "connection '{}': cannot use the temporary file that holds the changes of streamed transaction {xid} \
             in {}; make room there or point TMPDIR to a larger file system",
            cfg.alias,
            std::env::temp_dir().display()
        ),
        e,
    )
}

struct Reader {
    /// The connection alias as the events' `connection`.
    alias: Arc<str>,
    pg: Pg,
    catalog: Client,
    types: TypeCache,
    // Looked up for every row: foldhash rather than SipHash.
    schemas: HashMap<TableRef, Arc<TableSchema>, foldhash::fast::RandomState>,
    relations: HashMap<u32, RelInfo, foldhash::fast::RandomState>,
    txn: Option<Txn>,
    /// The transaction whose stream block is open (between Stream Start and Stream Stop).
    block: Option<u32>,
    /// The changes of streamed transactions, by top-level xid.
    spools: HashMap<u32, Spool>,
    /// The last position emitted (commit or heartbeat).
    last: u64,
    /// When the last heartbeat was emitted.
    heartbeat_at: Option<std::time::Instant>,
    /// When the bytes being decoded were read from the server (milliseconds since the Unix epoch): the read
    /// time of every event decoded from them, taken once per read instead of once per event.
    read_ts_ms: i64,
}

fn map_columns(rel: &Relation, schema: &TableSchema) -> Vec<Option<usize>> {
    rel.columns.iter().map(|c| schema.column_index(&c.name)).collect()
}

async fn send(tx: &Tx, ev: ChangeEvent) -> Result<()> {
    tx.send(ev).await
}

impl Reader {
    fn cfg(&self) -> &ConnectionConfig {
        self.pg.config()
    }

    async fn run(
        mut self,
        mut replication: ReplicationStream,
        tx: &Tx,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()> {
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
        loop {
            // What is buffered is handled without waiting; the stop conditions are looked at whenever
            // the reader would wait for the socket.
            let buffered = replication.buffered().map_err(|e| wire_error(self.cfg(), e, "replication"))?;
            if let Some(ev) = buffered {
                self.event(ev, tx).await?;
                continue;
            }
            // Nothing more without waiting: hand over what was decoded.
            tx.flush().await?;
            tokio::select! {
                biased;
                _ = &mut released => {
                    return Err(Error::new(ErrorKind::Unreachable, "the pipeline's replication was released"));
                }
                _ = tx.closed() => return Ok(()),
                read = replication.fill() => read.map_err(|e| wire_error(self.cfg(), e, "replication"))?,
            }
            self.read_ts_ms = now_ms();
        }
    }

    fn info(&self, table: Option<Arc<TableRef>>, position: Option<u64>, txn: bool) -> SourceInfo {
        let t = self.txn.as_ref().filter(|_| txn);
        SourceInfo {
            connection: self.alias.clone(),
            table,
            position: position.map(lsn_position).unwrap_or_default(),
            commit_ts_ms: t.map(|t| t.commit_ts_ms),
            read_ts_ms: Some(self.read_ts_ms),
            txid: t.map(|t| t.txid.clone()),
        }
    }

    async fn event(&mut self, ev: wire::Event, tx: &Tx) -> Result<()> {
        match ev {
            wire::Event::XLogData { data, .. } => match self.block {
                Some(xid) => self.in_block(xid, &data),
                None => self.message(pgoutput::decode(&data)?, tx).await,
            },
            wire::Event::KeepAlive { wal_end, .. } => {
                // The server sends a keepalive whenever it waits for WAL and our confirmed position lags: at
                // most one heartbeat a second is enough to move the checkpoint. Never inside a transaction
                // or a stream block (see "Large transactions" above).
                let due = self.heartbeat_at.is_none_or(|at| at.elapsed() >= HEARTBEAT_INTERVAL);
                if self.txn.is_none() && self.block.is_none() && wal_end > self.last && due {
                    self.last = wal_end;
                    self.heartbeat_at = Some(std::time::Instant::now());
                    let ev = ChangeEvent {
                        op: Op::Heartbeat,
                        source: self.info(None, Some(wal_end), false),
                        before: None,
                        after: None,
                        schema: None,
                        ddl: None,
                    };
                    send(tx, ev).await?;
                }
                Ok(())
            }
        }
    }

    /// A message outside stream blocks.
    async fn message(&mut self, msg: Message<'_>, tx: &Tx) -> Result<()> {
        match msg {
            Message::Begin { final_lsn, commit_time, xid } => self.begin(final_lsn, xid, commit_time),
            Message::Commit { end_lsn, commit_time, .. } => self.commit(end_lsn, commit_time, tx).await?,
            Message::StreamStart { xid, first_segment } => {
                if first_segment {
                    let spool = Spool::new(xid).map_err(|e| spool_error(self.cfg(), xid, e))?;
                    self.spools.insert(xid, spool);
                } else if !self.spools.contains_key(&xid) {
                    return Err(Error::internal(format!(
                        "the server continued streamed transaction {xid}, whose start this session did not see"
                    )));
                }
                self.block = Some(xid);
            }
            Message::StreamStop => {
                return Err(Error::internal("pgoutput Stream Stop outside a stream block"));
            }
            Message::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    self.spools.remove(&xid);
                } else if let Some(spool) = self.spools.get_mut(&xid) {
                    spool.abort(subxid).map_err(|e| spool_error(self.pg.config(), xid, e))?;
                }
            }
            Message::StreamCommit { xid, commit_lsn, end_lsn, commit_time, .. } => {
                self.replay(xid, commit_lsn, end_lsn, commit_time, tx).await?;
            }
            change => self.change(change, tx).await?,
        }
        Ok(())
    }

    /// A change of the open transaction, sent at its commit or replayed from its spool.
    async fn change(&mut self, msg: Message<'_>, tx: &Tx) -> Result<()> {
        match msg {
            Message::Relation(rel) => self.relation(rel, tx).await,
            Message::Insert { relation, new } => self.row(tx, Op::Insert, relation, None, Some(new)).await,
            Message::Update { relation, old, new } => {
                self.row(tx, Op::Update, relation, old, Some(new)).await
            }
            Message::Delete { relation, old } => self.row(tx, Op::Delete, relation, Some(old), None).await,
            Message::Truncate { relations, .. } => self.truncate(relations, tx).await,
            _ => Ok(()),
        }
    }

    /// A message inside the stream block of transaction `xid`: changes are spooled.
    fn in_block(&mut self, xid: u32, data: &[u8]) -> Result<()> {
        let Some(&tag) = data.first() else { return Err(Error::internal("empty pgoutput message")) };
        match tag {
            b'R' | b'I' | b'U' | b'D' | b'T' => {
                let sub = pgoutput::stream_xid(data)?.unwrap_or(xid);
                let spool = self
                    .spools
                    .get_mut(&xid)
                    .ok_or_else(|| Error::internal(format!("no spool for streamed transaction {xid}")))?;
                spool.write(sub, data).map_err(|e| spool_error(self.pg.config(), xid, e))
            }
            b'E' => {
                self.block = None;
                Ok(())
            }
            // Types, logical messages and origins are not carried.
            b'Y' | b'M' | b'O' => Ok(()),
            _ => Err(Error::internal(format!(
                "pgoutput message type 0x{tag:02x} inside a stream block, where the protocol does not send it"
            ))),
        }
    }

    /// Delivers streamed transaction `xid`, which committed, as one transaction.
    async fn replay(
        &mut self,
        xid: u32,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
        tx: &Tx,
    ) -> Result<()> {
        // The server starts every streamed transaction in the session that commits it.
        let spool = self.spools.remove(&xid).ok_or_else(|| {
            Error::internal(format!(
                "the server committed streamed transaction {xid}, whose start this session did not see"
            ))
        })?;
        tracing::debug!(xid, bytes = spool.len, "streamed transaction committed");
        self.begin(commit_lsn, xid, commit_time);
        let mut reader = spool.replay().map_err(|e| spool_error(self.cfg(), xid, e))?;
        loop {
            let msg = match reader.next() {
                Ok(Some(data)) => pgoutput::decode_in_stream(data)?.1,
                Ok(None) => break,
                Err(e) => return Err(spool_error(self.cfg(), xid, e)),
            };
            self.change(msg, tx).await?;
        }
        self.commit(end_lsn, commit_time, tx).await
    }

    fn begin(&mut self, final_lsn: u64, xid: u32, commit_time: i64) {
        let micros = commit_time + PG_EPOCH_MICROS;
        self.txn =
            Some(Txn { txid: xid.to_string().into(), final_lsn, commit_ts_ms: micros.div_euclid(1000) });
    }

    async fn commit(&mut self, end_lsn: u64, commit_time: i64, tx: &Tx) -> Result<()> {
        let mut info = self.info(None, Some(end_lsn), true);
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
                source: self.info(Some(Arc::new(table.clone())), Some(self.position()), true),
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
            RelInfo {
                table: Some(Arc::new(table)),
                partition,
                relation: rel,
                types,
                version: schema.version,
                map,
            },
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

    fn decode(&self, info: &RelInfo, schema: &TableSchema, tuple: Vec<Datum<'_>>) -> Result<Row> {
        let name = &schema.table;
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
                    types::from_text(name, col, &info.types[i], text)?
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
        old: Option<(OldKind, Vec<Datum<'_>>)>,
        new: Option<Vec<Datum<'_>>>,
    ) -> Result<()> {
        let Some(info) = self.relations.get_mut(&relation) else {
            return Err(Error::internal(format!(
                "a row of relation {relation} came before its Relation message"
            )));
        };
        let Some(table) = info.table.clone() else { return Ok(()) };
        let schema = self.schemas[&*table].clone();
        if info.version != schema.version {
            // Another partition's relation message changed the table's schema.
            info.map = map_columns(&info.relation, &schema);
            info.version = schema.version;
        }
        let info = &self.relations[&relation];
        let before = old.map(|(_, t)| self.decode(info, &schema, t)).transpose()?;
        let after = new.map(|t| self.decode(info, &schema, t)).transpose()?;
        // Rows are not resume points (the commit that follows is): no position, which would cost more to
        // build than the row to decode.
        let ev = ChangeEvent {
            op,
            source: self.info(Some(table), None, true),
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
            let parts = hit.entry((**table).clone()).or_default();
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
                source: self.info(Some(Arc::new(table.clone())), Some(self.position()), true),
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
    use crate::postgres::wire::ServerError;

    #[test]
    fn positions_round_trip() {
        let p = lsn_position(0x16_B374_D848);
        assert_eq!(*p.to_json(), serde_json::json!({"lsn": "16/B374D848"}));
        assert_eq!(position_lsn(&p).unwrap(), 0x16_B374_D848);
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn(" 0/16b3748\n"), Some(0x16B_3748));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(format_lsn(u64::MAX), "FFFFFFFF/FFFFFFFF");
        assert_eq!(format_lsn(0x16B_3748), "0/16B3748");
        assert_eq!(format_lsn(0), "0/0");
        assert_eq!(format_lsn(0x1_0000_0000), "1/0");
        assert_eq!(format_lsn(0x0A0B_0C0D_0000_00F0), "A0B0C0D/F0");
        for lsn in [1, 0xF, 0x10, 0xFFFF_FFFF, 0x1234_5678_9ABC_DEF0, u64::MAX - 1] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn), "{lsn:#x}");
        }
        for bad in ["", "/", "0/", "/0", "1/2/3", "x/0", "100000000/0", "0/-1", "+1/0", "0 /1"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
        assert!(position_lsn(&Position::new(serde_json::json!({"file": "x", "pos": 4}))).is_err());
    }

    fn cfg() -> ConnectionConfig {
        ConnectionConfig {
            alias: "pg".into(),
            kind: crate::ConnectorKind::Postgres,
            host: "h".into(),
            port: 5432,
            user: "u".into(),
            password: secrecy::SecretString::from("pw".to_string()),
            database: None,
        }
    }

    #[test]
    fn server_errors_are_classified() {
        let cfg = cfg();
        let server = |code: &str, m: &str| {
            let e =
                ServerError { severity: "ERROR".into(), code: code.into(), message: m.into(), detail: None };
            wire_error(&cfg, WireError::Server(e), "replication").kind
        };
        assert_eq!(
            server("55006", "replication slot \"idaas_p\" is active for PID 42"),
            ErrorKind::Unreachable
        );
        assert_eq!(server("42704", "replication slot \"idaas_p\" does not exist"), ErrorKind::PositionLost);
        assert_eq!(server("42501", "must be superuser or replication role"), ErrorKind::PermissionDenied);
        assert_eq!(
            server("57P01", "terminating connection due to administrator command"),
            ErrorKind::Unreachable
        );
        assert_eq!(
            server("55000", "logical decoding requires wal_level >= logical"),
            ErrorKind::SourceConfig
        );
        assert_eq!(
            server(
                "55000",
                "cannot read from logical replication slot \"s\": this slot has been invalidated"
            ),
            ErrorKind::PositionLost
        );
        assert_eq!(server("28P01", "password authentication failed for user \"u\""), ErrorKind::AuthFailed);
        assert_eq!(server("08P01", "invalid message"), ErrorKind::Unreachable);
        assert_eq!(server("XX000", "oops"), ErrorKind::Internal);
        let io = WireError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(wire_error(&cfg, io, "replication").kind, ErrorKind::Unreachable);
        assert_eq!(wire_error(&cfg, WireError::Ended, "replication").kind, ErrorKind::Unreachable);
        assert_eq!(wire_error(&cfg, WireError::Auth("no".into()), "replication").kind, ErrorKind::AuthFailed);
        assert_eq!(
            wire_error(&cfg, WireError::Protocol("?".into()), "replication").kind,
            ErrorKind::Internal
        );
        let busy =
            ServerError { severity: "ERROR".into(), code: "55006".into(), message: "x".into(), detail: None };
        let e = wire_error(&cfg, WireError::Server(busy), "replication");
        assert!(e.message.starts_with("connection 'pg' (h:5432): x (SQLSTATE 55006)"), "{}", e.message);
        assert!(!e.message.contains("pw"));
    }

    fn spooled(spool: Spool) -> Vec<Vec<u8>> {
        let mut reader = spool.replay().unwrap();
        let mut out = Vec::new();
        while let Some(m) = reader.next().unwrap() {
            out.push(m.to_vec());
        }
        out
    }

    #[test]
    fn a_spool_drops_rolled_back_subtransactions() {
        // BEGIN (xid 10); INSERT; SAVEPOINT a; INSERT (11); SAVEPOINT b; INSERT (12); ROLLBACK TO b;
        // INSERT (11); RELEASE a; INSERT; SAVEPOINT c; INSERT (13); ROLLBACK TO c; INSERT.
        let mut spool = Spool::new(10).unwrap();
        spool.write(10, b"top 1").unwrap();
        spool.write(11, b"a 1").unwrap();
        spool.write(12, b"b 1").unwrap();
        spool.abort(12).unwrap();
        spool.write(11, b"a 2").unwrap();
        spool.write(10, b"top 2").unwrap();
        spool.write(13, b"c 1").unwrap();
        spool.abort(13).unwrap();
        spool.write(10, b"top 3").unwrap();
        // A subtransaction without changes here: nothing to drop.
        spool.abort(99).unwrap();
        assert_eq!((spool.len, spool.subxacts.clone()), (41, vec![(11, 9)]));
        let kept: Vec<Vec<u8>> =
            [&b"top 1"[..], b"a 1", b"a 2", b"top 2", b"top 3"].iter().map(|b| b.to_vec()).collect();
        assert_eq!(spooled(spool), kept);

        // ROLLBACK TO a, with b nested in it: the changes of both go, the top level's stay.
        let mut spool = Spool::new(10).unwrap();
        spool.write(10, b"top").unwrap();
        spool.write(11, b"a 1").unwrap();
        spool.write(12, b"b 1").unwrap();
        spool.abort(11).unwrap();
        assert!(spool.subxacts.is_empty() && spool.index.is_empty());
        // Larger than the writer's buffer.
        spool.write(14, &[7; 300_000]).unwrap();
        assert_eq!(spooled(spool), vec![b"top".to_vec(), vec![7; 300_000]]);
    }
}
