//! # Browse
//!
//! Read-only looks at a table for people exploring a connection (the shell's `peek` and `count`): its first
//! rows in primary-key order, decoded with full fidelity like a snapshot read, and its exact row count.
//! Each call opens its own session, makes it read-only (`SET SESSION TRANSACTION READ ONLY`), runs plain
//! `SELECT`s inside a read-only transaction, and is bounded: at most [`MAX_ROWS`] rows, at most
//! [`TIMEOUT`] per call.
//!
//! # Errors
//! A name that cannot be a MySQL identifier is `InvalidInput`; a missing table is `NotFound` (from the
//! schema lookup); a call that runs past [`TIMEOUT`] is `Unreachable` and says so; server errors are
//! classified like every other query of this connector.

use super::{MySql, classify, quote_ident, quote_table, schema, types};
use idaas_core::{Error, ErrorKind, Result, Row, TableRef, TableSchema};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::future::Future;
use std::time::Duration;

/// The most rows one [`peek`] returns.
pub const MAX_ROWS: u32 = 1000;

/// The longest one call may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Statements that make the session read-only before anything is read.
const READ_ONLY: &[&str] = &["SET SESSION TRANSACTION READ ONLY", "START TRANSACTION READ ONLY"];

/// Checks that `name` can be a MySQL identifier: 1 to 64 characters, no control characters, no trailing
/// space (MySQL refuses those). Quoting ([`quote_ident`]) makes every such name safe in SQL.
pub fn check_identifier(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && !name.chars().any(char::is_control)
        && !name.ends_with(' ');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "'{}' is not a valid {what} name: use 1 to 64 characters, no control characters and no trailing space",
            name.escape_debug()
        )))
    }
}

/// The first `limit` rows of `table` (at most [`MAX_ROWS`]) in primary-key order (in storage order when the
/// table has no primary key), with the table's schema; every value is decoded as a snapshot read decodes it.
pub async fn peek(db: &MySql, table: &TableRef, limit: u32) -> Result<(TableSchema, Vec<Row>)> {
    check_table(table)?;
    let limit = limit.min(MAX_ROWS);
    bounded(db, "reading rows", async {
        let mut conn = read_only_session(db).await?;
        let schema = schema::describe(db, &mut conn, table).await?;
        let cols = schema.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let order = if schema.primary_key.is_empty() {
            String::new()
        } else {
            let keys = schema.primary_key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
            format!(" ORDER BY {keys}")
        };
        let sql = format!("SELECT {cols} FROM {}{order} LIMIT {limit}", quote_table(table));
        let rows: Vec<mysql_async::Row> =
            conn.exec(sql.as_str(), ()).await.map_err(|e| classify(db.config(), e, "browse rows"))?;
        let name = table.to_string();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(schema.columns.len());
            for (col, v) in schema.columns.iter().zip(row.unwrap()) {
                values.push(types::from_query(&name, col, v)?);
            }
            out.push(values);
        }
        finish(conn).await;
        Ok((schema, out))
    })
    .await
}

/// The exact number of rows in `table` (`SELECT COUNT(*)`).
pub async fn count(db: &MySql, table: &TableRef) -> Result<u64> {
    check_table(table)?;
    bounded(db, "counting rows", async {
        let mut conn = read_only_session(db).await?;
        // The schema lookup turns a missing table into a clear NotFound.
        schema::describe(db, &mut conn, table).await?;
        let sql = format!("SELECT COUNT(*) FROM {}", quote_table(table));
        let n: Vec<u64> = db.query(&mut conn, &sql).await?;
        finish(conn).await;
        Ok(n.into_iter().next().unwrap_or(0))
    })
    .await
}

fn check_table(table: &TableRef) -> Result<()> {
    check_identifier("database", &table.namespace)?;
    check_identifier("table", &table.name)
}

async fn read_only_session(db: &MySql) -> Result<Conn> {
    let mut conn = db.connect().await?;
    for sql in READ_ONLY {
        conn.query_drop(*sql).await.map_err(|e| classify(db.config(), e, sql))?;
    }
    Ok(conn)
}

async fn finish(mut conn: Conn) {
    let _ = conn.query_drop("COMMIT").await;
    let _ = conn.disconnect().await;
}

/// Runs `work` within [`TIMEOUT`]; the session is dropped when it runs over.
async fn bounded<T>(db: &MySql, what: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            ErrorKind::Unreachable,
            format!(
                "connection '{}': {what} took longer than {} s and was abandoned; try again when the server is \
                 less busy",
                db.config().alias,
                TIMEOUT.as_secs()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        for good in ["Customer", "CRM_Customer", "a b", "ünï", "x`y", &"t".repeat(64)] {
            assert!(check_identifier("table", good).is_ok(), "{good}");
        }
        for bad in ["", "trailing ", "nul\0", "new\nline", &"t".repeat(65)] {
            let err = check_identifier("table", bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidInput, "{bad}");
            assert!(err.message.contains("not a valid table name"), "{}", err.message);
        }
    }
}
