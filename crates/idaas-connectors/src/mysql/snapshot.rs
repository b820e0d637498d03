//! # Snapshot
//!
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` on a repeatable-read session, and MariaDB's
//! `binlog_snapshot_file` / `binlog_snapshot_position` status read inside it: the binlog position that
//! matches the snapshot exactly, without a global lock. Tables are read in primary-key order in chunks
//! (`WHERE key > last ORDER BY key LIMIT n`), so a reader that restarts resumes after the last chunk it
//! finished. Streaming from the position after the snapshot loses nothing; changes that the snapshot already
//! holds are replayed idempotently.

use super::replication::BinlogPosition;
use super::{MySql, classify, quote_ident, quote_table, types};
use async_trait::async_trait;
use idaas_core::{Error, ErrorKind, Position, Result, Row, SnapshotReader, TableSchema};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

/// An open consistent snapshot.
pub struct MySqlSnapshot {
    db: MySql,
    conn: Conn,
    position: Position,
}

impl MySqlSnapshot {
    /// Opens a snapshot and reads its binlog position.
    pub async fn open(db: &MySql) -> Result<MySqlSnapshot> {
        let mut conn = db.connect().await?;
        let cfg = db.config();
        for sql in [
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        ] {
            conn.query_drop(sql).await.map_err(|e| classify(cfg, e, sql))?;
        }
        let status: Vec<(String, String)> =
            db.query(&mut conn, "SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
        let get = |n: &str| status.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
        let file = get("binlog_snapshot_file").unwrap_or_default();
        let pos: u64 = get("binlog_snapshot_position").and_then(|p| p.parse().ok()).unwrap_or(0);
        if file.is_empty() || pos == 0 {
            let _ = conn.disconnect().await;
            return Err(Error::new(
                ErrorKind::SourceConfig,
                format!(
                    "connection '{}': the server reports no binlog snapshot position (binlog_snapshot_file); \
                     the binary log must be on (--log-bin) and the server must be MariaDB 10.x or later",
                    cfg.alias
                ),
            ));
        }
        let gtid = super::replication::gtid_state_at(db, &mut conn, &file, pos).await?;
        let position = BinlogPosition { file, pos, gtid }.to_position();
        Ok(MySqlSnapshot { db: db.clone(), conn, position })
    }
}

/// Builds the keyset condition `(k1 > ?) OR (k1 = ? AND k2 > ?) ...` and its parameter order.
pub fn keyset_condition(key_cols: &[String]) -> (String, Vec<usize>) {
    let mut ors = Vec::new();
    let mut params = Vec::new();
    for i in 0..key_cols.len() {
        let mut ands = Vec::new();
        for (j, k) in key_cols.iter().enumerate().take(i) {
            ands.push(format!("{} = ?", quote_ident(k)));
            params.push(j);
        }
        ands.push(format!("{} > ?", quote_ident(&key_cols[i])));
        params.push(i);
        ors.push(format!("({})", ands.join(" AND ")));
    }
    (ors.join(" OR "), params)
}

#[async_trait]
impl SnapshotReader for MySqlSnapshot {
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
        let cols = table.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let order = table.primary_key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
        let (sql, params) = match after_key {
            None => (
                format!("SELECT {cols} FROM {} ORDER BY {order} LIMIT {limit}", quote_table(&table.table)),
                Vec::new(),
            ),
            Some(key) => {
                let (cond, order_of) = keyset_condition(&table.primary_key);
                let params: Vec<mysql_async::Value> =
                    order_of.iter().map(|i| types::to_param(&key[*i])).collect();
                (
                    format!(
                        "SELECT {cols} FROM {} WHERE {cond} ORDER BY {order} LIMIT {limit}",
                        quote_table(&table.table)
                    ),
                    params,
                )
            }
        };
        let name = table.table.to_string();
        let rows: Vec<mysql_async::Row> = self
            .conn
            .exec(sql.as_str(), mysql_async::Params::Positional(params))
            .await
            .map_err(|e| classify(self.db.config(), e, "snapshot read"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let values = row.unwrap();
            let mut r = Vec::with_capacity(values.len());
            for (col, v) in table.columns.iter().zip(values) {
                r.push(types::from_query(&name, col, v)?);
            }
            out.push(r);
        }
        Ok(out)
    }

    async fn finish(self: Box<Self>) -> Result<()> {
        let mut conn = self.conn;
        let _ = conn.query_drop("COMMIT").await;
        let _ = conn.disconnect().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keyset_condition() {
        let (sql, params) = keyset_condition(&["a".into(), "b".into()]);
        assert_eq!(sql, "(`a` > ?) OR (`a` = ? AND `b` > ?)");
        assert_eq!(params, vec![0, 0, 1]);
    }
}
