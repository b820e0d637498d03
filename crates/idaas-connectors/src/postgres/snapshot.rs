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
//! # Errors
//! Creating the slot needs the REPLICATION attribute and a free slot; the errors say so. A lost
//! connection is [`ErrorKind::Unreachable`]: the engine retries, and the retried load finds the slot and
//! resumes after the last chunk.

use super::replication::{self, SlotInfo, lsn_position, replication_config, wire_error};
use super::schema::{self, Described};
use super::types::{self, TypeCache};
use super::{Pg, classify, quote_ident, quote_literal, quote_table};
use async_trait::async_trait;
use idaas_core::{Error, ErrorKind, Position, Result, Row, SnapshotReader, TableRef, TableSchema, Value};
use pgwire_replication::ReplicationClient;
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Session settings for reading values as text (see [`super::types`]).
pub const TEXT_SESSION: &str = "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; \
                                SET bytea_output = 'hex'; SET extra_float_digits = 3; \
                                SET standard_conforming_strings = on; SET TimeZone = 'UTC'";

/// An open consistent snapshot.
pub struct PgSnapshot {
    pg: Pg,
    client: Client,
    position: Position,
    types: TypeCache,
    tables: HashMap<TableRef, Described>,
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
        Ok(PgSnapshot { pg: pg.clone(), client, position, types: TypeCache::new(), tables: HashMap::new() })
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
        let mut repl = ReplicationClient::connect_gated(replication_config(pg, slot, "unused", 0))
            .await
            .map_err(|e| wire_error(cfg, e, "open a replication session"))?;
        let sql = format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'export')");
        // Creating a logical slot waits for the transactions running at that moment to end.
        let rows = match tokio::time::timeout(Duration::from_secs(600), repl.simple_query(&sql)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) if e.to_string().contains("SQLSTATE 42710") => return Ok(None),
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
        drop(repl);
        imported?;
        tracing::info!(slot, lsn = %replication::format_lsn(lsn), "replication slot created with an exported snapshot");
        Ok(Some(lsn_position(lsn)))
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
        if table.primary_key.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("table {} has no primary key; add one to copy it", table.table),
            ));
        }
        let name = table.table.to_string();
        let d = self.described(&table.table).await?.clone();
        // Each column of the caller's schema, found in the table by name.
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
        let sql = chunk_query(table, &d, after_key, limit)
            .map_err(|why| Error::new(ErrorKind::InvalidInput, format!("table {name}: {why}")))?;
        let messages = self
            .client
            .simple_query(&sql)
            .await
            .map_err(|e| classify(self.pg.config(), e, "snapshot read"))?;
        let mut out = Vec::new();
        for m in messages {
            let SimpleQueryMessage::Row(r) = m else { continue };
            let mut row = Vec::with_capacity(table.columns.len());
            for (i, (col, ty)) in table.columns.iter().zip(&types).enumerate() {
                row.push(match r.get(i) {
                    None => Value::Null,
                    Some(text) => types::from_text(&name, col, ty, text)?,
                });
            }
            out.push(row);
        }
        Ok(out)
    }

    async fn finish(self: Box<Self>) -> Result<()> {
        let _ = self.client.batch_execute("COMMIT").await;
        Ok(())
    }
}
