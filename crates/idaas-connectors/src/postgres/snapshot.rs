//! # Snapshot
//!
//! The initial load reads the snapshot that the pipeline's replication slot exported when it was created:
//! `CREATE_REPLICATION_SLOT idaas_<pipeline> LOGICAL pgoutput (SNAPSHOT 'export')` on a replication session,
//! then `BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '...'` on an ordinary session. The
//! snapshot sees exactly the transactions that committed before the slot's consistent point, and the slot
//! streams exactly those that commit after it, so the hand-over loses nothing, duplicates nothing and
//! takes no lock.
//!
//! When the slot exists already (a load that resumes after a crash, or a slot made by
//! [`super::replication::current_position`]) there is no exported snapshot to import. The reader then
//! opens a plain repeatable-read snapshot *after* reading the slot's `confirmed_flush_lsn` and returns that
//! LSN as its position: everything the snapshot lacks commits after it, and what the stream replays that
//! the snapshot already holds is applied again idempotently.
//!
//! Tables are read in primary-key order in chunks, `WHERE (k1, k2) > (...) ORDER BY k1, k2 LIMIT n`, so a
//! reader that restarts resumes after the last chunk it finished. Values come in text format and are
//! converted by [`super::types`].
//!
//! For a target that holds the same built-in types (a PostgreSQL sink, [`idaas_core::Sink::accepts_raw`]),
//! [`SnapshotReader::read_raw`] reads a chunk with `COPY ... (FORMAT binary)` and hands its tuples over
//! undecoded. Every field is still walked: to count the rows, decode the last key, and find the values the
//! text path refuses; a chunk holding one is read again as text, so that the error is the text path's own.
//! Binary chunks are read on a second session (`application_name` [`COPY_SESSION_NAME`]) that imports the
//! same snapshot (`pg_export_snapshot()`) and takes the rows out of its read buffer
//! ([`super::wire::Session::copy_out`]), where tokio-postgres would allocate every row as a message and pass
//! it between tasks: the `idaas` process needs about a quarter less CPU for a load. When the snapshot cannot
//! be exported (the function is not granted, say) or the session not opened, the query session reads them.
//!
//! # Errors
//! Creating the slot needs the REPLICATION attribute and a free slot; the errors say so. A lost
//! connection is [`ErrorKind::Unreachable`]: the engine retries, and the retried load finds the slot and
//! resumes after the last chunk.

use super::replication::{self, SlotInfo, lsn_position, wire_error};
use super::schema::{self, Described};
use super::types::{self, PgKind, PgType, TypeCache};
use super::wire::Session;
use super::{Pg, classify, quote_ident, quote_literal, quote_table};
use async_trait::async_trait;
use idaas_core::{
    Error, ErrorKind, Position, RawChunk, RawLayout, Result, Row, SnapshotChunk, SnapshotReader, TableRef,
    TableSchema, Value,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::Client;

/// Session settings for reading values as text (see [`super::types`]).
pub const TEXT_SESSION: &str = "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; \
                                SET bytea_output = 'hex'; SET extra_float_digits = 3; \
                                SET standard_conforming_strings = on; SET TimeZone = 'UTC'";

/// The `application_name` of the session that reads binary chunks.
pub const COPY_SESSION_NAME: &str = "idaas snapshot";

/// An open consistent snapshot.
pub struct PgSnapshot {
    pg: Pg,
    client: Client,
    position: Position,
    types: TypeCache,
    tables: HashMap<TableRef, Described>,
    /// The session that reads binary chunks ([`PgSnapshot::copy_session`]).
    copy: CopySession,
}

/// A second session on the same snapshot that reads binary chunks. tokio-postgres hands every row of a
/// `COPY ... TO STDOUT` over as its own message, allocated and passed from its connection task to the
/// reader; [`Session::copy_out`] takes the rows out of its read buffer instead.
enum CopySession {
    /// Opened on the first binary chunk.
    Untried,
    Open(Session),
    /// It could not be opened (the server refused to export the snapshot, say): the client reads.
    Unavailable,
}

impl PgSnapshot {
    /// Opens the snapshot of slot `slot` (creating the slot with an exported snapshot when it is missing),
    /// after making sure publication `publication` holds `tables`.
    pub async fn open(pg: &Pg, slot: &str, publication: &str, tables: &[TableRef]) -> Result<PgSnapshot> {
        let cfg = pg.config();
        let control = pg.connect().await?;
        schema::ensure_publication(&control, cfg, publication, tables).await?;
        let client = pg.connect().await?;
        client.batch_execute(TEXT_SESSION).await.map_err(|e| classify(cfg, e, "session setup"))?;
        let position = match replication::slot_info(&control, cfg, slot).await? {
            Some(info) => Self::plain(pg, &client, &info).await?,
            None => match Self::exported(pg, &client, slot).await? {
                Some(p) => p,
                // Someone created the slot in between: use it.
                None => {
                    let info = replication::slot_info(&control, cfg, slot).await?.ok_or_else(|| {
                        Error::internal(format!(
                            "replication slot {slot} vanished while it was being created"
                        ))
                    })?;
                    Self::plain(pg, &client, &info).await?
                }
            },
        };
        Ok(PgSnapshot {
            pg: pg.clone(),
            client,
            position,
            types: TypeCache::new(),
            tables: HashMap::new(),
            copy: CopySession::Untried,
        })
    }

    /// The slot exists: its confirmed position, then a snapshot taken after it.
    async fn plain(pg: &Pg, client: &Client, info: &SlotInfo) -> Result<Position> {
        replication::usable(pg.config(), info)?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1")
            .await
            .map_err(|e| classify(pg.config(), e, "open the snapshot"))?;
        Ok(lsn_position(info.confirmed_flush))
    }

    /// Creates the slot with an exported snapshot and imports it into `client`. `None` when the slot
    /// appeared meanwhile.
    async fn exported(pg: &Pg, client: &Client, slot: &str) -> Result<Option<Position>> {
        let cfg = pg.config();
        let mut repl =
            Session::connect(pg).await.map_err(|e| wire_error(cfg, e, "open a replication session"))?;
        let sql = format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'export')");
        // Creating a logical slot waits for the transactions running at that moment to end.
        let rows = match tokio::time::timeout(Duration::from_secs(600), repl.simple_query(&sql)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) if e.code() == Some("42710") => return Ok(None),
            Ok(Err(e)) => return Err(wire_error(cfg, e, "create the replication slot")),
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Unreachable,
                    format!(
                        "connection '{}': creating replication slot {slot} waited 10 minutes for running \
                         transactions to end",
                        cfg.alias
                    ),
                ));
            }
        };
        let field = |i: usize| -> Option<String> {
            rows.first()?.get(i)?.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let (Some(point), Some(snapshot)) = (field(1), field(2)) else {
            return Err(Error::internal("CREATE_REPLICATION_SLOT returned no consistent point or snapshot"));
        };
        let lsn = replication::parse_lsn(&point)
            .ok_or_else(|| Error::internal(format!("CREATE_REPLICATION_SLOT returned LSN '{point}'")))?;
        let import = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&snapshot)
        );
        let imported =
            client.batch_execute(&import).await.map_err(|e| classify(cfg, e, "import the snapshot"));
        // The importing transaction holds the snapshot now; the exporting session may end.
        repl.close().await;
        imported?;
        tracing::info!(slot, lsn = %replication::format_lsn(lsn), "replication slot created with an exported snapshot");
        Ok(Some(lsn_position(lsn)))
    }

    /// The session for binary chunks, opened on first use: the snapshot exported from the client's
    /// transaction and imported into a new session. `None` when that fails; the client reads then.
    async fn copy_session(&mut self) -> Option<&mut Session> {
        if matches!(self.copy, CopySession::Untried) {
            self.copy = match Self::open_copy_session(&self.pg, &self.client).await {
                Ok(s) => CopySession::Open(s),
                Err(e) => {
                    tracing::debug!(error = %e.report(), "binary snapshot chunks are read on the query session");
                    CopySession::Unavailable
                }
            };
        }
        match &mut self.copy {
            CopySession::Open(s) => Some(s),
            _ => None,
        }
    }

    async fn open_copy_session(pg: &Pg, client: &Client) -> Result<Session> {
        let cfg = pg.config();
        // An error here would abort the snapshot's transaction (and a savepoint cannot export), so the
        // privilege is looked at first (in a query of its own: a function call is checked when the query
        // starts, even where it would not run).
        let allowed: bool = client
            .query_one("SELECT has_function_privilege('pg_catalog.pg_export_snapshot()', 'EXECUTE')", &[])
            .await
            .map_err(|e| classify(cfg, e, "look up a privilege"))?
            .get(0);
        if !allowed {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("user '{}' may not run pg_export_snapshot()", cfg.user),
            ));
        }
        let id: String = client
            .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
            .await
            .map_err(|e| classify(cfg, e, "export the snapshot"))?
            .get(0);
        let mut session = Session::connect_plain(pg, COPY_SESSION_NAME)
            .await
            .map_err(|e| wire_error(cfg, e, "open a session for the snapshot"))?;
        let import = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&id)
        );
        if let Err(e) = session.simple_query(&import).await {
            session.close().await;
            return Err(wire_error(cfg, e, "import the snapshot"));
        }
        Ok(session)
    }

    async fn described(&mut self, table: &TableRef) -> Result<&Described> {
        if !self.tables.contains_key(table) {
            let d = schema::describe_with(&self.client, self.pg.config(), &mut self.types, table).await?;
            if !d.can_select {
                return Err(schema::missing_select(self.pg.config(), table));
            }
            self.tables.insert(table.clone(), d);
        }
        Ok(&self.tables[table])
    }
}

/// Decodes one field of `COPY ... TO STDOUT` text format: `\\N` is NULL, backslash escapes are undone. A
/// field without escapes (most of them) is borrowed, not copied.
pub fn copy_text_field(field: &[u8]) -> Option<Cow<'_, [u8]>> {
    if field == b"\\N" {
        return None;
    }
    if !field.contains(&b'\\') {
        return Some(Cow::Borrowed(field));
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let e = field[i + 1];
        i += 2;
        match e {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0C),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0B),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                let mut n = 1;
                while n < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    v = v * 8 + (field[i] - b'0') as u32;
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    v = v * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Some(Cow::Owned(out))
}

/// Decodes one line of `COPY ... TO STDOUT` text output into a row of `table`'s columns.
fn decode_row(name: &str, table: &TableSchema, types: &[PgType], line: &[u8]) -> Result<Row> {
    let mut row = Vec::with_capacity(table.columns.len());
    let mut fields = line.split(|b| *b == b'\t');
    for (col, ty) in table.columns.iter().zip(types) {
        let field = fields.next().ok_or_else(|| {
            Error::internal(format!(
                "table {name}: a snapshot row has fewer fields than the table has columns"
            ))
        })?;
        row.push(match copy_text_field(field) {
            None => Value::Null,
            Some(bytes) => {
                let text = std::str::from_utf8(&bytes).map_err(|_| {
                    Error::internal(format!("table {name}, column '{}': text that is not UTF-8", col.name))
                })?;
                types::from_text(&name, col, ty, text)?
            }
        });
    }
    if fields.next().is_some() {
        return Err(Error::internal(format!(
            "table {name}: a snapshot row has more fields than the table has columns"
        )));
    }
    Ok(row)
}

/// The form of [`RawLayout`]s of this source: tuples of binary `COPY`, without header and trailer.
pub const RAW_FORMAT: &str = "postgres-binary-copy";

/// What a value of one column must be for its binary form to pass without decoding: values the decoded
/// path refuses (see [`super::types`]) send the chunk down that path instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawCheck {
    /// Every value passes.
    Any,
    /// `numeric`: finite (not NaN or ±Infinity).
    Numeric,
    /// `date`: a day of the years 1 to 9999.
    Date,
    /// `timestamp` and `timestamptz`: an instant of the years 1 to 9999.
    Timestamp,
    /// An array of elements that need no check: every lower bound is 1.
    Array,
}

/// Days from 0001-01-01 to 2000-01-01 (PostgreSQL's epoch for dates and timestamps).
const DAYS_BEFORE_2000: i64 = 730_119;
/// Days from 2000-01-01 to 9999-12-31.
const DAYS_TO_9999_12_31: i64 = 2_921_939;
const MICROS_PER_DAY: i64 = 86_400_000_000;

impl RawCheck {
    /// The check for a column of `kind`, or `None` when the kind never passes without decoding: enums
    /// (their type is the user's own) and arrays whose elements need a check or are arrays of types
    /// without a mapping. A type without a mapping passes when the target has the same built-in type
    /// ([`Sink::accepts_raw`](idaas_core::Sink::accepts_raw) of the PostgreSQL sink checks that).
    fn of(kind: &PgKind) -> Option<RawCheck> {
        Some(match kind {
            PgKind::Bool
            | PgKind::Int2
            | PgKind::Int4
            | PgKind::Int8
            | PgKind::Oid
            | PgKind::Float4
            | PgKind::Float8
            | PgKind::Text
            | PgKind::Bytea
            | PgKind::Time
            | PgKind::TimeTz
            | PgKind::Interval
            | PgKind::Uuid
            | PgKind::Json
            | PgKind::Bit(_)
            | PgKind::Other => RawCheck::Any,
            PgKind::Numeric => RawCheck::Numeric,
            PgKind::Date => RawCheck::Date,
            PgKind::Timestamp | PgKind::TimestampTz => RawCheck::Timestamp,
            PgKind::Array { element, .. }
                if !matches!(element.kind, PgKind::Other | PgKind::Array { .. })
                    && RawCheck::of(&element.kind) == Some(RawCheck::Any) =>
            {
                RawCheck::Array
            }
            PgKind::Enum | PgKind::Array { .. } => return None,
        })
    }

    /// True when the binary value `v` passes.
    fn passes(self, v: &[u8]) -> bool {
        match self {
            RawCheck::Any => true,
            // ndigits, weight, sign, dscale: a sign of 0x0000 or 0x4000 is a finite number.
            RawCheck::Numeric => v.len() >= 8 && matches!(u16::from_be_bytes([v[4], v[5]]), 0 | 0x4000),
            RawCheck::Date => <[u8; 4]>::try_from(v).is_ok_and(|b| {
                (-DAYS_BEFORE_2000..=DAYS_TO_9999_12_31).contains(&(i32::from_be_bytes(b) as i64))
            }),
            // ndim, has-nulls flag, element type, then (length, lower bound) per dimension: the decoded
            // path refuses bounds other than 1.
            RawCheck::Array => {
                let word =
                    |i: usize| v.get(i * 4..i * 4 + 4).map(|b| i32::from_be_bytes(b.try_into().expect("4")));
                match word(0) {
                    Some(ndim) if (0..=6).contains(&ndim) => {
                        (0..ndim as usize).all(|d| word(3 + 2 * d + 1) == Some(1))
                    }
                    _ => false,
                }
            }
            RawCheck::Timestamp => <[u8; 8]>::try_from(v).is_ok_and(|b| {
                let lo = -DAYS_BEFORE_2000 * MICROS_PER_DAY;
                let hi = (DAYS_TO_9999_12_31 + 1) * MICROS_PER_DAY - 1;
                (lo..=hi).contains(&i64::from_be_bytes(b))
            }),
        }
    }
}

/// The key column kinds a raw load supports: the last key of a chunk is decoded from its binary form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawKey {
    Int2,
    Int4,
    Int8,
    Oid,
    Text,
    Uuid,
    Bytea,
}

impl RawKey {
    /// The key kind of a column of `kind`; `None` when a raw load does not support it.
    fn of(kind: &PgKind) -> Option<RawKey> {
        Some(match kind {
            PgKind::Int2 => RawKey::Int2,
            PgKind::Int4 => RawKey::Int4,
            PgKind::Int8 => RawKey::Int8,
            PgKind::Oid => RawKey::Oid,
            PgKind::Text => RawKey::Text,
            PgKind::Uuid => RawKey::Uuid,
            PgKind::Bytea => RawKey::Bytea,
            _ => return None,
        })
    }

    /// The value of binary form `v`, as the text path would give it; `None` when `v` is malformed.
    fn decode(self, v: &[u8]) -> Option<Value> {
        Some(match self {
            RawKey::Int2 => Value::Int(i16::from_be_bytes(v.try_into().ok()?) as i64),
            RawKey::Int4 => Value::Int(i32::from_be_bytes(v.try_into().ok()?) as i64),
            RawKey::Int8 => Value::Int(i64::from_be_bytes(v.try_into().ok()?)),
            RawKey::Oid => Value::UInt(u32::from_be_bytes(v.try_into().ok()?) as u64),
            RawKey::Text => Value::Text(std::str::from_utf8(v).ok()?.to_string()),
            RawKey::Uuid => Value::Uuid(v.try_into().ok()?),
            RawKey::Bytea => Value::Bytes(v.to_vec()),
        })
    }
}

/// The rows of a binary `COPY` stream: checked column by column, counted, and the last one's key decoded.
#[derive(Debug, PartialEq)]
struct RawRows {
    /// Where the tuples start and end in the stream (header and trailer left out).
    body: std::ops::Range<usize>,
    rows: usize,
    /// The last row's key, `None` when there is no row.
    last_key: Option<Row>,
}

/// Walks a complete binary `COPY` stream of rows with `checks.len()` columns. `Ok(None)` when a value
/// fails its check; an error when the stream is malformed.
fn walk_raw(
    data: &[u8],
    checks: &[RawCheck],
    key: &[(usize, RawKey)],
) -> std::result::Result<Option<RawRows>, String> {
    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
    let take = |at: &mut usize, n: usize| -> std::result::Result<std::ops::Range<usize>, String> {
        let r = *at..at.checked_add(n).filter(|e| *e <= data.len()).ok_or("the stream ends inside a row")?;
        *at = r.end;
        Ok(r)
    };
    if !data.starts_with(SIGNATURE) {
        return Err("the stream does not start with the binary COPY signature".into());
    }
    let mut at = SIGNATURE.len() + 4;
    let ext = take(&mut at, 4)?;
    let ext = u32::from_be_bytes(data[ext].try_into().expect("4 bytes")) as usize;
    take(&mut at, ext)?;
    let start = at;
    let mut rows = 0;
    let mut fields: Vec<Option<std::ops::Range<usize>>> = vec![None; checks.len()];
    loop {
        let n = take(&mut at, 2)?;
        let n = i16::from_be_bytes(data[n].try_into().expect("2 bytes"));
        if n == -1 {
            break;
        }
        if n as usize != checks.len() {
            return Err(format!("a row has {n} fields for {} columns", checks.len()));
        }
        for (i, check) in checks.iter().enumerate() {
            let len = take(&mut at, 4)?;
            let len = i32::from_be_bytes(data[len].try_into().expect("4 bytes"));
            fields[i] = if len < 0 {
                None
            } else {
                let v = take(&mut at, len as usize)?;
                if !check.passes(&data[v.clone()]) {
                    return Ok(None);
                }
                Some(v)
            };
        }
        rows += 1;
    }
    let body = start..at - 2;
    if at != data.len() {
        return Err("bytes follow the binary COPY trailer".into());
    }
    let last_key = if rows == 0 {
        None
    } else {
        let mut k = Vec::with_capacity(key.len());
        for (i, kind) in key {
            let v = fields[*i].clone().ok_or("a key value is NULL")?;
            k.push(kind.decode(&data[v]).ok_or("a key value does not decode")?);
        }
        Some(k)
    };
    Ok(Some(RawRows { body, rows, last_key }))
}

/// Builds `SELECT ... FROM t [WHERE (k...) > (literals)] ORDER BY k... LIMIT n`.
pub fn chunk_query(
    table: &TableSchema,
    d: &Described,
    after_key: Option<&Row>,
    limit: usize,
) -> std::result::Result<String, String> {
    let cols = table.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
    let keys = table.primary_key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
    let mut sql = format!("SELECT {cols} FROM {}", quote_table(&table.table));
    if let Some(key) = after_key {
        if key.len() != table.primary_key.len() {
            return Err(format!(
                "the resume key has {} values for {} key columns",
                key.len(),
                table.primary_key.len()
            ));
        }
        let mut lits = Vec::with_capacity(key.len());
        for (name, v) in table.primary_key.iter().zip(key) {
            let i =
                d.schema.column_index(name).ok_or_else(|| format!("key column '{name}' no longer exists"))?;
            let ty = &d.types[i];
            let text = types::to_text(v, ty)?.ok_or_else(|| format!("key column '{name}' is NULL"))?;
            lits.push(format!("{}::{}", quote_literal(&text), ty.name));
        }
        sql.push_str(&format!(" WHERE ({keys}) > ({})", lits.join(", ")));
    }
    sql.push_str(&format!(" ORDER BY {keys} LIMIT {limit}"));
    Ok(sql)
}

impl PgSnapshot {
    /// The source types of `table`'s columns (the caller's schema), found in the table by name.
    async fn column_types(&mut self, table: &TableSchema) -> Result<Vec<PgType>> {
        let name = table.table.to_string();
        if table.primary_key.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("table {name} has no primary key; add one to copy it"),
            ));
        }
        let d = self.described(&table.table).await?;
        let mut types = Vec::with_capacity(table.columns.len());
        for c in &table.columns {
            let i = d.schema.column_index(&c.name).ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "table {name}: column '{}' no longer exists; the snapshot cannot read it",
                        c.name
                    ),
                )
            })?;
            types.push(d.types[i].clone());
        }
        Ok(types)
    }

    /// Runs `copy` ([`PgSnapshot::copy_sql`]) on the query session; hands each message to `each` as it
    /// arrives, while the server reads the next rows.
    async fn copy_chunk(&mut self, copy: &str, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let stream =
            self.client.copy_out(copy).await.map_err(|e| classify(self.pg.config(), e, "snapshot read"))?;
        futures::pin_mut!(stream);
        while let Some(bytes) = futures::StreamExt::next(&mut stream).await {
            each(&bytes.map_err(|e| classify(self.pg.config(), e, "snapshot read"))?)?;
        }
        Ok(())
    }

    /// `COPY (chunk query) TO STDOUT` with `options`.
    async fn copy_sql(
        &mut self,
        table: &TableSchema,
        after_key: Option<&Row>,
        limit: usize,
        options: &str,
    ) -> Result<String> {
        let d = self.described(&table.table).await?;
        let sql = chunk_query(table, d, after_key, limit)
            .map_err(|why| Error::new(ErrorKind::InvalidInput, format!("table {}: {why}", table.table)))?;
        Ok(format!("COPY ({sql}) TO STDOUT{options}"))
    }

    /// The per-column checks and the key (position and kind) of a raw load of `table`; `None` when a
    /// column or key type cannot pass without decoding.
    async fn raw_plan(&mut self, table: &TableSchema) -> Result<Option<(Vec<PgType>, RawPlan)>> {
        let types = self.column_types(table).await?;
        let Some(checks) = types.iter().map(|t| RawCheck::of(&t.kind)).collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let Some(key) =
            table.key_indexes().into_iter().map(|i| Some((i, RawKey::of(&types[i].kind)?))).collect()
        else {
            return Ok(None);
        };
        Ok(Some((types, RawPlan { checks, key })))
    }
}

/// How the rows of one table are checked on the way through ([`PgSnapshot::raw_plan`]).
struct RawPlan {
    checks: Vec<RawCheck>,
    key: Vec<(usize, RawKey)>,
}

#[async_trait]
impl SnapshotReader for PgSnapshot {
    fn position(&self) -> &Position {
        &self.position
    }

    async fn read_chunk(
        &mut self,
        table: &TableSchema,
        after_key: Option<&Row>,
        limit: usize,
    ) -> Result<Vec<Row>> {
        let name = table.table.to_string();
        let types = self.column_types(table).await?;
        // The server sends each row in a message of its own: rows are decoded as they arrive.
        let mut out = Vec::with_capacity(limit.min(65_536));
        let mut rest = Vec::new();
        let copy = self.copy_sql(table, after_key, limit, "").await?;
        self.copy_chunk(&copy, |bytes| {
            // A message normally ends with its row's newline; a row split over messages is put together.
            let data: &[u8] = if rest.is_empty() {
                bytes
            } else {
                rest.extend_from_slice(bytes);
                &rest
            };
            let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            for line in data[..complete].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push(decode_row(&name, table, &types, line)?);
            }
            rest = data[complete..].to_vec();
            Ok(())
        })
        .await?;
        if !rest.is_empty() {
            out.push(decode_row(&name, table, &types, &rest)?);
        }
        Ok(out)
    }

    async fn raw_layout(&mut self, table: &TableSchema) -> Result<Option<RawLayout>> {
        let Some((types, _)) = self.raw_plan(table).await? else { return Ok(None) };
        let columns =
            table.columns.iter().zip(&types).map(|(c, t)| (c.name.clone(), t.name.clone())).collect();
        Ok(Some(RawLayout { format: RAW_FORMAT, columns }))
    }

    async fn read_raw(
        &mut self,
        table: &TableSchema,
        after_key: Option<&Row>,
        limit: usize,
    ) -> Result<SnapshotChunk> {
        let Some((_, plan)) = self.raw_plan(table).await? else {
            return Ok(SnapshotChunk::Rows(self.read_chunk(table, after_key, limit).await?));
        };
        let mut data = Vec::new();
        let sql = self.copy_sql(table, after_key, limit, " (FORMAT binary)").await?;
        let cfg = self.pg.config().clone();
        match self.copy_session().await {
            Some(session) => session
                .copy_out(&sql, |bytes| data.extend_from_slice(bytes))
                .await
                .map_err(|e| wire_error(&cfg, e, "snapshot read"))?,
            None => {
                self.copy_chunk(&sql, |bytes| {
                    data.extend_from_slice(bytes);
                    Ok(())
                })
                .await?
            }
        }
        let walked = walk_raw(&data, &plan.checks, &plan.key)
            .map_err(|why| Error::internal(format!("table {}: binary snapshot read: {why}", table.table)))?;
        let Some(walked) = walked else {
            // A value the decoded path refuses or checks: read this chunk again that way.
            return Ok(SnapshotChunk::Rows(self.read_chunk(table, after_key, limit).await?));
        };
        data.truncate(walked.body.end);
        data.drain(..walked.body.start);
        Ok(SnapshotChunk::Raw(RawChunk {
            data,
            rows: walked.rows,
            last_key: walked.last_key.unwrap_or_default(),
        }))
    }

    async fn finish(mut self: Box<Self>) -> Result<()> {
        if let CopySession::Open(mut session) = std::mem::replace(&mut self.copy, CopySession::Unavailable) {
            let _ = session.simple_query("COMMIT").await;
            session.close().await;
        }
        let _ = self.client.batch_execute("COMMIT").await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idaas_core::DataType;

    /// A binary COPY stream of `rows`, each a list of fields (`None` is NULL).
    fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
        out.extend(0i32.to_be_bytes());
        out.extend(2i32.to_be_bytes());
        out.extend([7, 7]); // a header extension, skipped
        for r in rows {
            out.extend((r.len() as i16).to_be_bytes());
            for f in r {
                match f {
                    None => out.extend((-1i32).to_be_bytes()),
                    Some(v) => {
                        out.extend((v.len() as i32).to_be_bytes());
                        out.extend(v);
                    }
                }
            }
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    fn numeric(sign: u16) -> Vec<u8> {
        [1i16.to_be_bytes(), 0i16.to_be_bytes(), sign.to_be_bytes(), 0i16.to_be_bytes(), 7i16.to_be_bytes()]
            .concat()
    }

    #[test]
    fn raw_rows_are_counted_checked_and_keyed() {
        let checks = [RawCheck::Any, RawCheck::Numeric, RawCheck::Any];
        let key = [(2, RawKey::Text), (0, RawKey::Int4)];
        let rows = vec![
            vec![Some(1i32.to_be_bytes().to_vec()), Some(numeric(0)), Some(b"a".to_vec())],
            vec![Some(2i32.to_be_bytes().to_vec()), None, Some("zoë".as_bytes().to_vec())],
        ];
        let data = stream(&rows);
        let walked = walk_raw(&data, &checks, &key).unwrap().unwrap();
        assert_eq!(walked.rows, 2);
        assert_eq!(walked.last_key, Some(vec![Value::Text("zoë".into()), Value::Int(2)]));
        // The body is the rows without header (19 bytes, 2 of extension) and trailer.
        assert_eq!(walked.body, 21..data.len() - 2);
        assert_eq!(&data[walked.body.start..walked.body.start + 2], &3i16.to_be_bytes());

        let empty = walk_raw(&stream(&[]), &checks, &key).unwrap().unwrap();
        assert_eq!((empty.rows, empty.last_key), (0, None));

        // NaN (0xC000) and ±Infinity (0xD000, 0xF000) go the decoded way; a negative number passes.
        for (sign, passes) in [(0x4000, true), (0xC000, false), (0xD000, false), (0xF000, false)] {
            let data = stream(&[vec![Some(1i32.to_be_bytes().to_vec()), Some(numeric(sign)), None]]);
            let key = [(0, RawKey::Int4)];
            assert_eq!(walk_raw(&data, &checks, &key).unwrap().is_some(), passes, "sign {sign:#x}");
        }

        // Malformed streams are errors, not rows.
        assert!(walk_raw(&data[..data.len() - 5], &checks, &key).is_err());
        assert!(walk_raw(&data[1..], &checks, &key).is_err());
        let mut extra = data.clone();
        extra.push(0);
        assert!(walk_raw(&extra, &checks, &key).is_err());
        assert!(walk_raw(&data, &checks[..2], &key).is_err(), "a row with more fields than columns");
        let null_key = stream(&[vec![None, None, Some(b"a".to_vec())]]);
        assert!(walk_raw(&null_key, &checks, &key).is_err());
    }

    #[test]
    fn raw_dates_and_timestamps_pass_within_the_years_1_to_9999() {
        let date = |days: i64| (days as i32).to_be_bytes().to_vec();
        let ts = |micros: i64| micros.to_be_bytes().to_vec();
        let day = MICROS_PER_DAY;
        // 0001-01-01 and 9999-12-31 are the first and last days; infinity is i32/i64 MAX and MIN.
        for (v, ok) in [
            (date(-730_119), true),
            (date(-730_120), false),
            (date(2_921_939), true),
            (date(2_921_940), false),
            (date(i32::MAX as i64), false),
            (date(i32::MIN as i64), false),
            (date(0), true),
        ] {
            assert_eq!(RawCheck::Date.passes(&v), ok, "{v:?}");
        }
        for (v, ok) in [
            (ts(-730_119 * day), true),
            (ts(-730_119 * day - 1), false),
            (ts(2_921_940 * day - 1), true),
            (ts(2_921_940 * day), false),
            (ts(i64::MAX), false),
            (ts(i64::MIN), false),
        ] {
            assert_eq!(RawCheck::Timestamp.passes(&v), ok, "{v:?}");
        }
        assert!(!RawCheck::Date.passes(&[0; 3]));
        assert!(RawCheck::of(&PgKind::Enum).is_none());
        let array = |kind: PgKind| PgKind::Array {
            element: Box::new(PgType {
                kind,
                data_type: DataType::Bool,
                name: String::new(),
                delimiter: ',',
            }),
            delimiter: ',',
        };
        assert_eq!(RawCheck::of(&array(PgKind::Int4)), Some(RawCheck::Array));
        assert_eq!(RawCheck::of(&array(PgKind::Numeric)), None, "elements that need a check");
        assert_eq!(RawCheck::of(&array(PgKind::Other)), None);
        assert_eq!(RawCheck::of(&array(PgKind::Enum)), None);
    }

    #[test]
    fn raw_arrays_pass_with_lower_bounds_of_one() {
        let array = |dims: &[(i32, i32)]| {
            let mut v = Vec::new();
            for w in [dims.len() as i32, 0, 23] {
                v.extend(w.to_be_bytes());
            }
            for (len, lower) in dims {
                v.extend(len.to_be_bytes());
                v.extend(lower.to_be_bytes());
            }
            v
        };
        assert!(RawCheck::Array.passes(&array(&[])), "an empty array");
        assert!(RawCheck::Array.passes(&array(&[(2, 1), (3, 1)])));
        assert!(!RawCheck::Array.passes(&array(&[(2, 1), (3, 0)])));
        assert!(!RawCheck::Array.passes(&array(&[(2, 2)])));
        assert!(!RawCheck::Array.passes(&array(&[(2, 1)])[..14]));
    }

    #[test]
    fn copy_text_fields_unescape() {
        assert_eq!(copy_text_field(b"\\N"), None);
        assert_eq!(copy_text_field(b"a\\tb\\\\c\\nd").unwrap(), b"a\tb\\c\nd".to_vec());
        assert_eq!(copy_text_field(b"\\\\x00ff").unwrap(), b"\\x00ff".to_vec());
        assert_eq!(copy_text_field(b"\\101\\x42").unwrap(), b"AB".to_vec());
        assert_eq!(copy_text_field(b"").unwrap(), b"".to_vec());
    }
}
