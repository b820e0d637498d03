//! # Replication
//!
//! Streams the binlog as a replica does (`COM_REGISTER_SLAVE` + `COM_BINLOG_DUMP` from a file and position),
//! follows rotations, and announces MariaDB's GTID capability so the server sends its own GTID events
//! (type 162), which are decoded here: every commit carries `{file, pos, gtid}`, where `gtid` is the full GTID
//! state (the last GTID of every replication domain) at that point.
//!
//! Resuming uses the GTID state when there is one (`@slave_connect_state`, as a MariaDB replica does): it
//! survives purged binlog files and a switch to another server of the same replication topology. A position
//! without GTIDs (a server that never wrote one) resumes by file and offset.
//!
//! Row events are decoded with the schemas the caller had at the start position (its checkpoint); a schema
//! change in the binlog
//! (`ALTER TABLE` / `CREATE TABLE` / `DROP TABLE` / `RENAME TABLE` / `TRUNCATE` on a streamed table) is
//! emitted as an [`Op::Ddl`] event carrying the table's schema re-read at that moment. A table-map event whose
//! column count does not match the known schema triggers a re-read; if it still does not match (several
//! schema changes happened while the pipeline was behind), the stream stops with a definite error.
//!
//! Resume points are the positions after commits (`XID` events, `COMMIT` queries and standalone DDL) and
//! heartbeats between transactions.
//!
//! # Errors
//! A lost connection ends the stream with [`ErrorKind::Unreachable`]; the engine reconnects from its last
//! checkpoint.

use super::{MySql, classify, schema, types};
use crate::events::{self, Grouped as Tx};
use futures::{FutureExt, StreamExt};
use idaas_core::{
    ChangeEvent, ChangeStream, Error, ErrorKind, Op, Position, Result, Row, SourceInfo, TableRef, TableSchema,
};
use mysql_async::BinlogStreamRequest;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// MariaDB's GTID event type.
const MARIADB_GTID_EVENT: u8 = 162;

/// A binlog coordinate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// Binlog file name.
    pub file: String,
    /// Offset in the file.
    pub pos: u64,
    /// The GTID state at this point: the last GTID of each domain (`domain-server-sequence`, comma
    /// separated), when the server has written any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
}

impl BinlogPosition {
    /// As an opaque position.
    pub fn to_position(&self) -> Position {
        Position::new(serde_json::to_value(self).unwrap_or_default())
    }

    /// From an opaque position this source wrote.
    pub fn from_position(p: &Position) -> Result<BinlogPosition> {
        serde_json::from_value(p.to_json().into_owned())
            .map_err(|e| Error::with_cause(ErrorKind::InvalidInput, "not a MySQL binlog position", e))
    }
}

/// The server's current binlog end.
pub async fn current_position(db: &MySql) -> Result<Position> {
    let mut conn = db.connect().await?;
    let rows: Vec<mysql_async::Row> = db.query(&mut conn, "SHOW MASTER STATUS").await?;
    let row = rows.into_iter().next().ok_or_else(|| {
        Error::new(
            ErrorKind::SourceConfig,
            format!(
                "connection '{}': the binary log is off; start the server with --log-bin to capture changes",
                db.config().alias
            ),
        )
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or(4);
    let gtid = gtid_state_at(db, &mut conn, &file, pos).await?;
    let _ = conn.disconnect().await;
    Ok(BinlogPosition { file, pos, gtid }.to_position())
}

/// The GTID state at a binlog coordinate (`BINLOG_GTID_POS`), `None` when the server has no GTIDs there.
pub async fn gtid_state_at(
    db: &MySql,
    conn: &mut mysql_async::Conn,
    file: &str,
    pos: u64,
) -> Result<Option<String>> {
    let sql = format!("SELECT BINLOG_GTID_POS({}, {pos})", schema::quote_str(file));
    let rows: Vec<Option<String>> = db.query(conn, &sql).await?;
    Ok(rows.into_iter().next().flatten().filter(|g| !g.trim().is_empty()))
}

/// Parses a GTID state `d-s-n,d-s-n` into a map by domain.
pub fn parse_gtid_state(s: &str) -> std::collections::BTreeMap<u32, String> {
    s.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .filter_map(|g| g.split('-').next().and_then(|d| d.parse().ok()).map(|d| (d, g.to_string())))
        .collect()
}

fn format_gtid_state(state: &std::collections::BTreeMap<u32, String>) -> Option<String> {
    if state.is_empty() { None } else { Some(state.values().cloned().collect::<Vec<_>>().join(",")) }
}

/// Starts streaming changes of `tables` after `from`.
pub async fn stream(db: MySql, from: Position, tables: Vec<TableSchema>) -> Result<ChangeStream> {
    let start = BinlogPosition::from_position(&from)?;
    let mut query_conn = db.connect().await?;
    let schemas: HashMap<TableRef, Arc<TableSchema>> =
        tables.into_iter().map(|s| (s.table.clone(), Arc::new(s))).collect();
    let gtid = match &start.gtid {
        Some(g) if !g.trim().is_empty() => Some(g.clone()),
        _ => gtid_state_at(&db, &mut query_conn, &start.file, start.pos).await.unwrap_or(None),
    };
    let mut conn = db.connect().await?;
    let cfg = db.config().clone();
    let mut setup = vec![
        // Ask MariaDB for its GTID events (capability 4 = MARIA_SLAVE_CAPABILITY_GTID).
        "SET @mariadb_slave_capability = 4".to_string(),
        // A heartbeat every second while idle keeps the position moving.
        "SET @master_heartbeat_period = 1000000000".to_string(),
    ];
    if let Some(g) = &gtid {
        // Resume after this GTID state; the server finds the file and offset itself.
        setup.push(format!("SET @slave_connect_state = {}", schema::quote_str(g)));
        setup.push("SET @slave_gtid_strict_mode = 0".to_string());
        setup.push("SET @slave_gtid_ignore_duplicates = 0".to_string());
    }
    for sql in &setup {
        conn.query_drop(sql.as_str()).await.map_err(|e| classify(&cfg, e, sql))?;
    }
    let server_id = random_server_id(db.replication_server_id());
    let file = start.file.clone().into_bytes();
    let request = BinlogStreamRequest::new(server_id).with_filename(&file).with_pos(start.pos);
    let binlog = conn.get_binlog_stream(request).await.map_err(|e| classify(&cfg, e, "binlog dump"))?;
    let (tx, stream) = events::channel();
    let reader = Reader {
        alias: db.config().alias.as_str().into(),
        db,
        query_conn,
        schemas,
        file: start.file.clone(),
        gtid_state: gtid.as_deref().map(parse_gtid_state).unwrap_or_default(),
        gtid: None,
        in_txn: false,
    };
    tokio::spawn(async move {
        if let Err(e) = reader.run(binlog, &tx).await {
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

fn random_server_id(base: u32) -> u32 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    base.wrapping_add(nanos % 100_000).max(2)
}

struct Reader {
    /// The connection alias as the events' `connection`.
    alias: Arc<str>,
    db: MySql,
    query_conn: mysql_async::Conn,
    schemas: HashMap<TableRef, Arc<TableSchema>>,
    file: String,
    /// The last GTID of each domain seen so far.
    gtid_state: std::collections::BTreeMap<u32, String>,
    /// The current transaction's GTID.
    gtid: Option<Arc<str>>,
    in_txn: bool,
}

impl Reader {
    /// Source details of a row event: no position (rows are not resume points; building one per row
    /// costs more than decoding the row).
    fn row_info(&self, table: &Arc<TableRef>, ts: u32, read_ts_ms: i64) -> SourceInfo {
        SourceInfo {
            connection: self.alias.clone(),
            table: Some(table.clone()),
            position: Position::default(),
            commit_ts_ms: if ts > 0 { Some(ts as i64 * 1000) } else { None },
            read_ts_ms: Some(read_ts_ms),
            txid: self.gtid.clone(),
        }
    }

    fn info(&self, table: Option<TableRef>, pos: u64, ts: u32) -> SourceInfo {
        SourceInfo {
            connection: self.alias.clone(),
            table: table.map(Arc::new),
            position: BinlogPosition {
                file: self.file.clone(),
                pos,
                gtid: format_gtid_state(&self.gtid_state),
            }
            .to_position(),
            commit_ts_ms: if ts > 0 { Some(ts as i64 * 1000) } else { None },
            read_ts_ms: Some(now_ms()),
            txid: self.gtid.clone(),
        }
    }

    async fn send(tx: &Tx, ev: ChangeEvent) -> Result<()> {
        tx.send(ev).await
    }

    async fn run(mut self, mut binlog: mysql_async::BinlogStream, tx: &Tx) -> Result<()> {
        let cfg = self.db.config().clone();
        loop {
            // Events already received are decoded without waiting; what was decoded goes to the engine
            // before the reader waits for the server.
            let event = match binlog.next().now_or_never() {
                Some(event) => event,
                None => {
                    tx.flush().await?;
                    binlog.next().await
                }
            };
            let Some(event) = event else { break };
            if tx.is_closed() {
                return Ok(());
            }
            let event = event.map_err(|e| classify(&cfg, e, "binlog read"))?;
            let header = event.header();
            let end_pos = header.log_pos() as u64;
            let ts = header.timestamp();
            if header.event_type_raw() == MARIADB_GTID_EVENT {
                let (domain, gtid) = parse_mariadb_gtid(event.data(), header.server_id())?;
                self.gtid_state.insert(domain, gtid.clone());
                self.gtid = Some(gtid.into());
                self.in_txn = true;
                continue;
            }
            let data = match event.read_data() {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e) => {
                    return Err(Error::with_cause(ErrorKind::Internal, "cannot decode a binlog event", e));
                }
            };
            match data {
                EventData::RotateEvent(r) => {
                    self.file = rotate_file_name(r.name_raw());
                }
                EventData::HeartbeatEvent if !self.in_txn && end_pos > 0 => {
                    let ev = ChangeEvent {
                        op: Op::Heartbeat,
                        source: self.info(None, end_pos, 0),
                        before: None,
                        after: None,
                        schema: None,
                        ddl: None,
                    };
                    Self::send(tx, ev).await?;
                }
                EventData::XidEvent(_) => {
                    self.in_txn = false;
                    self.commit(tx, end_pos, ts).await?;
                }
                EventData::QueryEvent(q) => {
                    let sql = q.query().trim().to_string();
                    let upper = sql.to_ascii_uppercase();
                    if upper == "BEGIN" || upper.starts_with("XA START") {
                        self.in_txn = true;
                    } else if upper == "COMMIT" || upper.starts_with("XA COMMIT") {
                        self.in_txn = false;
                        self.commit(tx, end_pos, ts).await?;
                    } else if upper == "ROLLBACK" {
                        self.in_txn = false;
                    } else if upper.starts_with("XA END") || upper.starts_with("XA PREPARE") {
                        // Part of an XA transaction: its commit comes later.
                    } else if upper.starts_with("SAVEPOINT")
                        || upper.starts_with("ROLLBACK TO")
                        || upper.starts_with("RELEASE SAVEPOINT")
                    {
                        // Inside a transaction: not a resume point.
                    } else {
                        let default_db = q.schema().to_string();
                        self.ddl(tx, &sql, &default_db, end_pos, ts).await?;
                        self.in_txn = false;
                        self.commit(tx, end_pos, ts).await?;
                    }
                }
                EventData::RowsEvent(rows) => {
                    self.rows(&binlog, tx, &rows, end_pos, ts).await?;
                }
                _ => {}
            }
        }
        Err(Error::new(
            ErrorKind::Unreachable,
            format!("connection '{}': the server closed the binlog stream", cfg.alias),
        ))
    }

    async fn commit(&self, tx: &Tx, end_pos: u64, ts: u32) -> Result<()> {
        let ev = ChangeEvent {
            op: Op::Commit,
            source: self.info(None, end_pos, ts),
            before: None,
            after: None,
            schema: None,
            ddl: None,
        };
        Self::send(tx, ev).await
    }

    async fn ddl(&mut self, tx: &Tx, sql: &str, default_db: &str, end_pos: u64, ts: u32) -> Result<()> {
        let Some(touched) = ddl_tables(sql, default_db) else { return Ok(()) };
        let watched: Vec<TableRef> =
            self.schemas.keys().filter(|t| touched.iter().any(|x| same_table(x, t))).cloned().collect();
        for t in watched {
            let old = self.schemas[&t].clone();
            let new = match schema::describe(&self.db, &mut self.query_conn, &t).await {
                Ok(mut s) => {
                    s.version = old.version + 1;
                    Arc::new(s)
                }
                Err(e) if e.kind == ErrorKind::NotFound => {
                    // Dropped or renamed away: report the statement with the old schema.
                    old.clone()
                }
                Err(e) => return Err(e),
            };
            self.schemas.insert(t.clone(), new.clone());
            let ev = ChangeEvent {
                op: Op::Ddl,
                source: self.info(Some(t.clone()), end_pos, ts),
                before: None,
                after: None,
                schema: Some(new),
                ddl: Some(sql.to_string()),
            };
            Self::send(tx, ev).await?;
        }
        Ok(())
    }

    async fn rows(
        &mut self,
        binlog: &mysql_async::BinlogStream,
        tx: &Tx,
        rows: &RowsEventData<'_>,
        end_pos: u64,
        ts: u32,
    ) -> Result<()> {
        let Some(tme) = binlog.get_tme(rows.table_id()) else {
            return Err(Error::internal("row event without its table-map event"));
        };
        let table = TableRef::new(tme.database_name().to_string(), tme.table_name().to_string());
        let Some(mut schema) = self.schemas.get(&table).cloned() else { return Ok(()) };
        if tme.columns_count() as usize != schema.columns.len() {
            let mut fresh = schema::describe(&self.db, &mut self.query_conn, &table).await?;
            if fresh.columns.len() != tme.columns_count() as usize {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "table {table}: the binlog has rows with {} columns but the table now has {}; its schema \
                         changed more than once while the pipeline was behind. Recreate the pipeline to reload \
                         the table",
                        tme.columns_count(),
                        fresh.columns.len()
                    ),
                ));
            }
            fresh.version = schema.version + 1;
            schema = Arc::new(fresh);
            self.schemas.insert(table.clone(), schema.clone());
            // No DDL statement was seen for this change (it predates the start position): announce the new
            // shape so the target follows it before these rows.
            let ev = ChangeEvent {
                op: Op::Ddl,
                source: self.info(Some(table.clone()), end_pos, ts),
                before: None,
                after: None,
                schema: Some(schema.clone()),
                ddl: Some(format!("/* columns of {table} changed before this position */")),
            };
            Self::send(tx, ev).await?;
        }
        let name = table.to_string();
        let read_ts_ms = now_ms();
        let decode = |row: &mysql_async::binlog::row::BinlogRow| -> Result<Row> {
            schema
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| types::from_binlog(&name, c, row.as_ref(i)))
                .collect()
        };
        let op = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Insert,
            RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
        };
        let shared = Arc::new(table);
        for r in rows.rows(tme) {
            let (before, after) = r.map_err(|e| {
                Error::with_cause(ErrorKind::Internal, format!("cannot decode a row of {name}"), e)
            })?;
            let before = before.as_ref().map(decode).transpose()?;
            let after = after.as_ref().map(decode).transpose()?;
            let ev = ChangeEvent {
                op,
                source: self.row_info(&shared, ts, read_ts_ms),
                before,
                after,
                schema: Some(schema.clone()),
                ddl: None,
            };
            Self::send(tx, ev).await?;
        }
        Ok(())
    }
}

/// The file name of a rotate event. The server's first (artificial) rotate event comes before the format
/// description that announces checksums, so its name may still carry the 4-byte CRC32 footer: binlog file
/// names end in a digit sequence, so trailing bytes after it are the footer.
pub fn rotate_file_name(raw: &[u8]) -> String {
    let ends_in_digit = |b: &[u8]| b.last().is_some_and(|c| c.is_ascii_digit());
    let name = if !ends_in_digit(raw) && raw.len() > 4 && ends_in_digit(&raw[..raw.len() - 4]) {
        &raw[..raw.len() - 4]
    } else {
        raw
    };
    String::from_utf8_lossy(name).into_owned()
}

fn same_table(a: &TableRef, b: &TableRef) -> bool {
    a.namespace.eq_ignore_ascii_case(&b.namespace) && a.name.eq_ignore_ascii_case(&b.name)
}

/// Decodes MariaDB's GTID event body: sequence number (8 bytes LE), domain id (4 bytes LE), flags.
pub fn parse_mariadb_gtid(data: &[u8], server_id: u32) -> Result<(u32, String)> {
    if data.len() < 13 {
        return Err(Error::internal("truncated MariaDB GTID event"));
    }
    let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
    let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
    Ok((domain, format!("{domain}-{server_id}-{seq}")))
}

/// The tables a DDL statement touches, or `None` when it is not a table DDL.
pub fn ddl_tables(sql: &str, default_db: &str) -> Option<Vec<TableRef>> {
    let cleaned = strip_comments(sql);
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let mut i = 0;
    let verb = upper.first()?.as_str();
    match verb {
        "ALTER" | "CREATE" | "DROP" | "RENAME" | "TRUNCATE" => {}
        _ => return None,
    }
    // Skip to the word TABLE (ALTER ONLINE IGNORE TABLE, CREATE OR REPLACE TEMPORARY TABLE, TRUNCATE [TABLE]).
    while i < upper.len() && upper[i] != "TABLE" && upper[i] != "TABLES" {
        i += 1;
    }
    if i >= upper.len() {
        if verb == "TRUNCATE" && words.len() >= 2 {
            return Some(vec![parse_table_name(words[1], default_db)]);
        }
        return None;
    }
    i += 1;
    while i < upper.len() && matches!(upper[i].as_str(), "IF" | "NOT" | "EXISTS") {
        i += 1;
    }
    let mut out = Vec::new();
    // DROP TABLE a, b / RENAME TABLE a TO b, c TO d.
    let rest = words[i..].join(" ");
    match verb {
        "DROP" => {
            for part in rest.split(',') {
                if let Some(name) = part.split_whitespace().next() {
                    out.push(parse_table_name(name, default_db));
                }
            }
        }
        "RENAME" => {
            for part in rest.split(',') {
                let p: Vec<&str> = part.split_whitespace().collect();
                if let Some(name) = p.first() {
                    out.push(parse_table_name(name, default_db));
                }
                if p.len() >= 3 {
                    out.push(parse_table_name(p[2], default_db));
                }
            }
        }
        _ => {
            let name = words.get(i)?;
            let name = name.split('(').next().unwrap_or(name);
            out.push(parse_table_name(name, default_db));
        }
    }
    Some(out)
}

fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        match rest[start..].find("*/") {
            Some(end) => rest = &rest[start + end + 2..],
            None => {
                rest = "";
                break;
            }
        }
        out.push(' ');
    }
    out.push_str(rest);
    out
}

fn parse_table_name(name: &str, default_db: &str) -> TableRef {
    let name = name.trim_end_matches(';');
    let parts = split_qualified(name);
    match parts.as_slice() {
        [db, t] => TableRef::new(db.clone(), t.clone()),
        [t] => TableRef::new(default_db, t.clone()),
        _ => TableRef::new(default_db, name.replace('`', "")),
    }
}

fn split_qualified(name: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' if quoted && chars.peek() == Some(&'`') => {
                cur.push('`');
                chars.next();
            }
            '`' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_statements_name_their_tables() {
        assert_eq!(
            ddl_tables("ALTER TABLE `crm`.`Customer` ADD COLUMN x INT", "other"),
            Some(vec![TableRef::new("crm", "Customer")])
        );
        assert_eq!(
            ddl_tables("alter table Customer drop column x", "crm"),
            Some(vec![TableRef::new("crm", "Customer")])
        );
        assert_eq!(
            ddl_tables("CREATE TABLE IF NOT EXISTS t2(id int primary key)", "crm"),
            Some(vec![TableRef::new("crm", "t2")])
        );
        assert_eq!(
            ddl_tables("DROP TABLE IF EXISTS `a`, b /* generated by server */", "d"),
            Some(vec![TableRef::new("d", "a"), TableRef::new("d", "b")])
        );
        assert_eq!(
            ddl_tables("RENAME TABLE a TO b", "d"),
            Some(vec![TableRef::new("d", "a"), TableRef::new("d", "b")])
        );
        assert_eq!(ddl_tables("TRUNCATE t", "d"), Some(vec![TableRef::new("d", "t")]));
        assert_eq!(ddl_tables("INSERT INTO t VALUES (1)", "d"), None);
        assert_eq!(ddl_tables("CREATE USER x", "d"), None);
    }

    #[test]
    fn rotate_names_lose_a_checksum_footer() {
        assert_eq!(rotate_file_name(b"mariadb-bin.000001"), "mariadb-bin.000001");
        assert_eq!(rotate_file_name(b"mariadb-bin.000001N\xfeP\xfd"), "mariadb-bin.000001");
    }

    #[test]
    fn mariadb_gtid_event_decodes() {
        let mut data = 42u64.to_le_bytes().to_vec();
        data.extend(0u32.to_le_bytes());
        data.push(0);
        assert_eq!(parse_mariadb_gtid(&data, 7).unwrap(), (0, "0-7-42".to_string()));
        let state = parse_gtid_state("0-1-5, 2-7-9");
        assert_eq!(state.get(&2).map(String::as_str), Some("2-7-9"));
        assert_eq!(format_gtid_state(&state).as_deref(), Some("0-1-5,2-7-9"));
    }

    #[test]
    fn positions_round_trip() {
        let p = BinlogPosition { file: "mysql-bin.000002".into(), pos: 1234, gtid: Some("0-1-9".into()) };
        assert_eq!(BinlogPosition::from_position(&p.to_position()).unwrap(), p);
    }
}
