//! # Sink
//!
//! Writes change events into MySQL/MariaDB tables. A batch is reduced to the final state of each primary key
//! (the last event of a key wins; an update that moves a key deletes the old one), then applied in one
//! transaction as multi-row `DELETE`s and multi-row `INSERT ... ON DUPLICATE KEY UPDATE`s through prepared
//! statements. Replaying any suffix of what was written ends in the same state, so at-least-once delivery
//! gives exactly the source's state.
//!
//! AutoCreate declares the target table from the source schema (`docs/type-mapping.md`); an existing target
//! is checked column by column and refused with every mismatch named.
//!
//! # Errors
//! A failed batch is rolled back and the connection dropped; the engine retries transient errors from the
//! last checkpoint.

use super::{MySql, check_sink, classify, quote_ident, quote_table, schema, types};
use async_trait::async_trait;
use idaas_core::batch::{self, Group};
use idaas_core::connector;
use idaas_core::{
    ChangeEvent, CheckReport, ColumnSchema, DataType, Error, ErrorKind, Result, Sink, TableRef, TableSchema,
    Value,
};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::collections::HashMap;

/// Largest number of rows in one statement.
const MAX_ROWS_PER_STATEMENT: usize = 256;
/// Statement sizes used, so the statement cache stays small.
const CHUNK_SIZES: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

struct Target {
    table: TableRef,
    /// Target column names (as the target spells them), keyed by lower-case name.
    columns: HashMap<String, String>,
    /// Target `DECIMAL(p, s)` columns by lower-case name: values are checked so none is rounded.
    decimals: HashMap<String, (u32, u32)>,
}

/// The MySQL/MariaDB sink.
pub struct MySqlSink {
    db: MySql,
    conn: Option<Conn>,
    targets: HashMap<TableRef, Target>,
}

impl MySqlSink {
    /// A sink writing through `db`.
    pub fn new(db: MySql) -> MySqlSink {
        MySqlSink { db, conn: None, targets: HashMap::new() }
    }

    async fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            let mut c = self.db.connect().await?;
            // Keep TIMESTAMP columns free of automatic values (ignored where the server lacks the variable).
            let _ = c.query_drop("SET SESSION explicit_defaults_for_timestamp = 1").await;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("connection just set"))
    }

    async fn target_schema(&mut self, target: &TableRef) -> Result<Option<TableSchema>> {
        let db = self.db.clone();
        let conn = self.conn().await?;
        match schema::describe(&db, conn, target).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn remember(&mut self, source: &TableRef, target: &TableRef, schema: &TableSchema) {
        let columns = schema.columns.iter().map(|c| (c.name.to_lowercase(), c.name.clone())).collect();
        let decimals = schema
            .columns
            .iter()
            .filter_map(|c| match c.data_type {
                DataType::Decimal { precision, scale, .. } => {
                    Some((c.name.to_lowercase(), (precision, scale)))
                }
                _ => None,
            })
            .collect();
        self.targets.insert(source.clone(), Target { table: target.clone(), columns, decimals });
    }

    async fn exec_batch(&mut self, events: &[ChangeEvent]) -> Result<()> {
        let reduced = batch::reduce(events)?;
        if reduced.is_empty() {
            return Ok(());
        }
        let cfg = self.db.config().clone();
        let mut plan: Vec<(String, Vec<mysql_async::Value>, String)> = Vec::new();
        for Group { table, schema, rows } in &reduced.patches {
            let target = self.target_for(table)?;
            let keyidx = schema.key_indexes();
            let key_names: Vec<String> =
                keyidx.iter().map(|i| target.column_name(&schema.columns[*i].name)).collect::<Result<_>>()?;
            for p in rows {
                let sets: Vec<(usize, String)> = schema
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !matches!(p.row[*i], Value::Unchanged))
                    .filter_map(|(i, c)| target.columns.get(&c.name.to_lowercase()).map(|n| (i, n.clone())))
                    .collect();
                if sets.is_empty() {
                    continue;
                }
                for (i, _) in &sets {
                    target.check_value(&schema.columns[*i], &p.row[*i])?;
                }
                let sql = format!(
                    "UPDATE {} SET {} WHERE {}",
                    quote_table(&target.table),
                    sets.iter()
                        .map(|(_, n)| format!("{} = ?", quote_ident(n)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    key_names
                        .iter()
                        .map(|k| format!("{} = ?", quote_ident(k)))
                        .collect::<Vec<_>>()
                        .join(" AND ")
                );
                let params = sets
                    .iter()
                    .map(|(i, _)| types::to_param(&p.row[*i]))
                    .chain(keyidx.iter().map(|i| types::to_param(&p.key_row[*i])))
                    .collect();
                plan.push((sql, params, format!("update {}", target.table)));
            }
        }
        for Group { table, schema, rows } in &reduced.deletes {
            let target = self.target_for(table)?;
            let key_cols: Vec<&ColumnSchema> =
                schema.key_indexes().iter().map(|i| &schema.columns[*i]).collect();
            let key_names: Vec<String> =
                key_cols.iter().map(|c| target.column_name(&c.name)).collect::<Result<_>>()?;
            let keyidx = schema.key_indexes();
            for chunk in chunks(rows, MAX_ROWS_PER_STATEMENT) {
                let cond = if key_names.len() == 1 {
                    format!("{} IN ({})", quote_ident(&key_names[0]), vec!["?"; chunk.len()].join(","))
                } else {
                    let one = key_names.iter().map(|k| format!("{} = ?", quote_ident(k))).collect::<Vec<_>>();
                    vec![format!("({})", one.join(" AND ")); chunk.len()].join(" OR ")
                };
                let sql = format!("DELETE FROM {} WHERE {cond}", quote_table(&target.table));
                let params =
                    chunk.iter().flat_map(|r| keyidx.iter().map(|i| types::to_param(&r[*i]))).collect();
                plan.push((sql, params, format!("delete from {}", target.table)));
            }
        }
        for Group { table, schema, rows } in &reduced.upserts {
            if rows.iter().any(|r| r.iter().any(|v| matches!(v, Value::Unchanged))) {
                return Err(Error::internal(format!("an upsert of {table} lacks unchanged column values")));
            }
            let target = self.target_for(table)?;
            // Source columns the target holds (a column the target lacks under the Ignore policy is skipped).
            let cols: Vec<(usize, String)> = schema
                .columns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| target.columns.get(&c.name.to_lowercase()).map(|n| (i, n.clone())))
                .collect();
            let keys: Vec<String> = schema.primary_key.iter().map(|k| k.to_lowercase()).collect();
            let names = cols.iter().map(|(_, n)| quote_ident(n)).collect::<Vec<_>>().join(", ");
            let updates: Vec<String> = cols
                .iter()
                .filter(|(_, n)| !keys.contains(&n.to_lowercase()))
                .map(|(_, n)| format!("{0} = VALUES({0})", quote_ident(n)))
                .collect();
            let updates = if updates.is_empty() {
                format!("{0} = {0}", quote_ident(&cols[0].1))
            } else {
                updates.join(", ")
            };
            for r in rows {
                for (i, _) in &cols {
                    target.check_value(&schema.columns[*i], &r[*i])?;
                }
            }
            let one = format!("({})", vec!["?"; cols.len()].join(","));
            let max_rows = (60_000 / cols.len().max(1)).clamp(1, MAX_ROWS_PER_STATEMENT);
            for chunk in chunks(rows, max_rows) {
                let sql = format!(
                    "INSERT INTO {} ({names}) VALUES {} ON DUPLICATE KEY UPDATE {updates}",
                    quote_table(&target.table),
                    vec![one.as_str(); chunk.len()].join(",")
                );
                let params =
                    chunk.iter().flat_map(|r| cols.iter().map(|(i, _)| types::to_param(&r[*i]))).collect();
                plan.push((sql, params, format!("write to {}", target.table)));
            }
        }
        let conn = self.conn().await?;
        conn.query_drop("BEGIN").await.map_err(|e| classify(&cfg, e, "begin"))?;
        for (sql, params, what) in plan {
            conn.exec_drop(sql.as_str(), mysql_async::Params::Positional(params))
                .await
                .map_err(|e| classify(&cfg, e, &what))?;
        }
        conn.query_drop("COMMIT").await.map_err(|e| classify(&cfg, e, "commit"))?;
        Ok(())
    }

    fn target_for(&self, source: &TableRef) -> Result<&Target> {
        self.targets.get(source).ok_or_else(|| {
            Error::internal(format!("no target prepared for source table {source}; prepare() must run first"))
        })
    }
}

impl Target {
    /// Refuses a decimal value the target column would round (MySQL rounds extra fraction digits even in
    /// strict mode).
    fn check_value(&self, col: &ColumnSchema, v: &Value) -> Result<()> {
        if let (Value::Decimal(s), Some((p, sc))) = (v, self.decimals.get(&col.name.to_lowercase()))
            && !types::decimal_fits(s, *p, *sc)
        {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "table {}, column '{}': value {s} has more digits than the target's DECIMAL({p},{sc}) holds; \
                     widen the target column",
                    self.table, col.name
                ),
            ));
        }
        Ok(())
    }

    fn column_name(&self, source_col: &str) -> Result<String> {
        self.columns.get(&source_col.to_lowercase()).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::Incompatible,
                format!("target table {} has no column '{source_col}'", self.table),
            )
        })
    }
}

/// Splits rows into statement-sized chunks of the sizes in [`CHUNK_SIZES`] (capped at `max`).
fn chunks<T>(rows: &[T], max: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let size = CHUNK_SIZES.iter().copied().find(|s| *s <= rest.len() && *s <= max).unwrap_or(1);
        let (a, b) = rest.split_at(size);
        out.push(a);
        rest = b;
    }
    out
}

/// Every way the existing target does not fit the source, one sentence each.
pub fn shape_problems(source: &TableSchema, target: &TableSchema) -> Vec<String> {
    let mut problems = Vec::new();
    let tpk: Vec<String> = target.primary_key.iter().map(|k| k.to_lowercase()).collect();
    let spk: Vec<String> = source.primary_key.iter().map(|k| k.to_lowercase()).collect();
    if tpk != spk {
        problems.push(format!(
            "primary key is ({}) in the target but ({}) in the source",
            target.primary_key.join(", "),
            source.primary_key.join(", ")
        ));
    }
    for c in &source.columns {
        match target.columns.iter().find(|t| t.name.eq_ignore_ascii_case(&c.name)) {
            None => {
                problems.push(format!("column '{}' ({}) is missing in the target", c.name, c.source_type))
            }
            Some(t) => {
                if !types::fits(&c.data_type, &t.data_type) {
                    problems.push(format!(
                        "column '{}' is {} in the target but {} in the source",
                        c.name, t.source_type, c.source_type
                    ));
                }
                let key = source.primary_key.iter().any(|k| k.eq_ignore_ascii_case(&c.name));
                if key && c.collation.is_some() && t.collation.is_some() && c.collation != t.collation {
                    problems.push(format!(
                        "key column '{}' compares text with collation {} in the target but {} in the source, so \
                         distinct source keys could merge",
                        c.name,
                        t.collation.as_deref().unwrap_or_default(),
                        c.collation.as_deref().unwrap_or_default()
                    ));
                }
                if c.nullable && !t.nullable {
                    problems.push(format!(
                        "column '{}' is NOT NULL in the target but nullable in the source",
                        c.name
                    ));
                }
            }
        }
    }
    for t in &target.columns {
        let in_source = source.columns.iter().any(|c| c.name.eq_ignore_ascii_case(&t.name));
        if !in_source && !t.nullable && t.default.is_none() {
            problems.push(format!(
                "target column '{}' is NOT NULL without a default and has no source column to fill it",
                t.name
            ));
        }
    }
    problems
}

#[async_trait]
impl Sink for MySqlSink {
    async fn check(&self) -> Result<CheckReport> {
        check_sink(&self.db).await
    }

    async fn prepare(&mut self, source: &TableSchema, target: &TableRef, auto_create: bool) -> Result<bool> {
        connector::require_primary_key(source)?;
        if let Some(existing) = self.target_schema(target).await? {
            connector::require_fit(source, target, &shape_problems(source, &existing))?;
            self.remember(&source.table, target, &existing);
            return Ok(false);
        }
        if !auto_create {
            return Err(connector::missing_target(target));
        }
        let name = source.table.to_string();
        let mut defs = Vec::new();
        for c in &source.columns {
            defs.push(types::column_def(&name, c)?);
        }
        defs.push(format!(
            "PRIMARY KEY ({})",
            source.primary_key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ")
        ));
        let sql = format!(
            "CREATE TABLE {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            quote_table(target),
            defs.join(",\n  ")
        );
        let cfg = self.db.config().clone();
        let conn = self.conn().await?;
        conn.query_drop(sql.as_str()).await.map_err(|e| {
            let mut err = classify(&cfg, e, "create target table");
            if err.kind == ErrorKind::NotFound {
                err.message = format!(
                    "{}; the target database '{}' must exist before AutoCreate",
                    err.message, target.namespace
                );
            }
            err
        })?;
        let created = self
            .target_schema(target)
            .await?
            .ok_or_else(|| Error::internal(format!("target table {target} vanished right after creation")))?;
        self.remember(&source.table, target, &created);
        Ok(true)
    }

    async fn attach(&mut self, source: &TableRef, target: &TableRef) -> Result<()> {
        let existing = self.target_schema(target).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("target table {target} no longer exists; recreate it or recreate the pipeline"),
            )
        })?;
        self.remember(source, target, &existing);
        Ok(())
    }

    async fn write(&mut self, events: &[ChangeEvent]) -> Result<()> {
        let r = self.exec_batch(events).await;
        if r.is_err() {
            // The transaction is rolled back when the connection closes; never reuse a connection mid-batch.
            if let Some(c) = self.conn.take() {
                let _ = c.disconnect().await;
            }
        }
        r
    }

    async fn alter(&mut self, old: &TableSchema, new: &TableSchema, target: &TableRef) -> Result<()> {
        let name = new.table.to_string();
        // Compare with the target as it is, so a change applied before a crash is not applied twice.
        let current = self.target_schema(target).await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("target table {target} no longer exists"))
        })?;
        let mut clauses = Vec::new();
        for c in &new.columns {
            let in_target = current.columns.iter().find(|t| t.name.eq_ignore_ascii_case(&c.name));
            match in_target.and(old.columns.iter().find(|o| o.name.eq_ignore_ascii_case(&c.name))) {
                None if in_target.is_some() => {}
                None => {
                    let mut def = types::column_def(&name, c)?;
                    if !c.nullable {
                        // Rows already in the target get NULL until the source updates them.
                        def = def.replace(" NOT NULL", " NULL");
                    }
                    clauses.push(format!("ADD COLUMN {def}"));
                }
                Some(o) if o.data_type != c.data_type || o.collation != c.collation => {
                    clauses.push(format!("MODIFY COLUMN {}", types::column_def(&name, c)?));
                }
                Some(_) => {}
            }
        }
        for o in &old.columns {
            let in_target = current.columns.iter().any(|t| t.name.eq_ignore_ascii_case(&o.name));
            if in_target && !new.columns.iter().any(|c| c.name.eq_ignore_ascii_case(&o.name)) {
                clauses.push(format!("DROP COLUMN {}", quote_ident(&o.name)));
            }
        }
        if !clauses.is_empty() {
            let sql = format!("ALTER TABLE {} {}", quote_table(target), clauses.join(", "));
            let cfg = self.db.config().clone();
            let conn = self.conn().await?;
            conn.query_drop(sql.as_str()).await.map_err(|e| classify(&cfg, e, "alter target table"))?;
        }
        let fresh = self.target_schema(target).await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("target table {target} no longer exists"))
        })?;
        self.remember(&new.table, target, &fresh);
        Ok(())
    }

    async fn truncate(&mut self, target: &TableRef) -> Result<()> {
        let cfg = self.db.config().clone();
        let conn = self.conn().await?;
        // DELETE, not TRUNCATE: it runs in a transaction and needs no DROP privilege.
        conn.query_drop(format!("DELETE FROM {}", quote_table(target)))
            .await
            .map_err(|e| classify(&cfg, e, "truncate target table"))
    }

    async fn count(&self, target: &TableRef) -> Result<u64> {
        let mut conn = self.db.connect().await?;
        let n: Vec<u64> =
            self.db.query(&mut conn, &format!("SELECT COUNT(*) FROM {}", quote_table(target))).await?;
        let _ = conn.disconnect().await;
        Ok(n.into_iter().next().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_use_few_statement_sizes() {
        let rows: Vec<u32> = (0..300).collect();
        let sizes: Vec<usize> = chunks(&rows, 256).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![256, 32, 8, 4]);
        assert_eq!(sizes.iter().sum::<usize>(), 300);
        let sizes: Vec<usize> = chunks(&rows[..70], 10).iter().map(|c| c.len()).collect();
        assert!(sizes.iter().all(|s| *s <= 10));
        assert_eq!(sizes.iter().sum::<usize>(), 70);
    }
}
