//! Browsing a connection's tables: the first rows of a table and its row count, read-only and bounded, for
//! people exploring their data (the shell's `peek` and `count`). Values keep the [`Value`] JSON form
//! (`{"type": ..., "value": ...}`), so nothing is lost between the database and the screen.

use crate::connectors::config_of;
use crate::{Engine, resolve_table};
use idaas_connectors::ConnectorKind;
use idaas_connectors::mysql::{MySql, browse};
use idaas_core::{Error, ErrorKind, Result, TableRef, Value};
use idaas_store::StoredConnection;
use serde::{Deserialize, Serialize};

/// The most rows [`Engine::peek_rows`] returns.
pub const MAX_PEEK_ROWS: u32 = browse::MAX_ROWS;

/// The first rows of a table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableRows {
    /// The table.
    pub table: TableRef,
    /// Column names in ordinal order.
    pub columns: Vec<String>,
    /// The rows in primary-key order; each holds one value per column, in column order.
    pub rows: Vec<Vec<Value>>,
    /// The limit the rows were read with.
    pub limit: u32,
}

/// The number of rows in a table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RowCount {
    /// The table.
    pub table: TableRef,
    /// Exact row count (`SELECT COUNT(*)`).
    pub count: u64,
}

impl Engine {
    /// The first `limit` rows (1 to [`MAX_PEEK_ROWS`]) of a table (`name` or `database.name`) in primary-key
    /// order. Read-only. Errors: `InvalidInput` (limit or name), `NotFound`, `Unreachable`, ...
    pub async fn peek_rows(&self, alias: &str, table: &str, limit: u32) -> Result<TableRows> {
        if limit == 0 || limit > MAX_PEEK_ROWS {
            return Err(Error::invalid(format!(
                "limit {limit} is out of range: ask for 1 to {MAX_PEEK_ROWS} rows"
            )));
        }
        let c = self.stored_connection(alias)?;
        let t = resolve_table(&c, table)?;
        let (schema, rows) = browse::peek(&mysql(&c)?, &t, limit).await?;
        Ok(TableRows {
            table: schema.table,
            columns: schema.columns.into_iter().map(|c| c.name).collect(),
            rows,
            limit,
        })
    }

    /// The exact number of rows in a table (`name` or `database.name`). Read-only.
    pub async fn count_rows(&self, alias: &str, table: &str) -> Result<RowCount> {
        let c = self.stored_connection(alias)?;
        let t = resolve_table(&c, table)?;
        let count = browse::count(&mysql(&c)?, &t).await?;
        Ok(RowCount { table: t, count })
    }
}

/// The MySQL/MariaDB server of a connection; browsing other kinds is not available yet.
fn mysql(c: &StoredConnection) -> Result<MySql> {
    let cfg = config_of(c)?;
    match cfg.kind {
        ConnectorKind::Mysql => MySql::new(cfg),
        other => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "connection '{}' is {}; browsing rows is available for MySQL/MariaDB connections only so far",
                c.alias,
                other.as_str()
            ),
        )),
    }
}
