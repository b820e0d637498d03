//! # Schema discovery
//!
//! Tables, columns, primary keys, types, nullability, defaults and collations from the system catalogs
//! (`pg_class`, `pg_attribute`, `pg_type`, `pg_index`), with every column type resolved by
//! [`TypeCache`]: domains become their base type (the domain name stays in `source_type`), enums carry their
//! labels from `pg_enum`, arrays their element type. Ordinary and partitioned tables are listed; partitions
//! are read and streamed through their partitioned table.
//!
//! Stored generated columns are left out: `pgoutput` does not send them, so a target could never follow
//! them. Dropped columns are invisible.
//!
//! This module also names and maintains what a pipeline owns on the server: its publication and its
//! replication slot, both called [`object_name`].
//!
//! # Errors
//! A table that does not exist is [`ErrorKind::NotFound`]; one the user cannot read is
//! [`ErrorKind::PermissionDenied`] with the `GRANT` that fixes it. Creating the publication needs the
//! tables' owner; when the user is not, the error says who must run which statement.

use super::types::{PgType, TypeCache};
use super::{Pg, classify, quote_ident, quote_table};
use crate::config::ConnectionConfig;
use idaas_core::{ColumnSchema, Error, ErrorKind, Result, TableRef, TableSchema};
use tokio_postgres::Client;

/// Schemas that belong to the server itself.
pub const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "pg_toast"];

/// The name of a pipeline's publication and replication slot: `idaas_<pipeline>` in lower case. Slot names
/// allow only lower-case letters, digits and `_`, at most 63 bytes; a pipeline name that is not already
/// so (upper-case letters, or too long) gets a short hash of the exact name appended, so two pipelines
/// never share a slot.
pub fn object_name(pipeline: &str) -> String {
    let clean: String = pipeline
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if clean == pipeline && clean.len() <= 57 {
        return format!("idaas_{clean}");
    }
    let mut h: u32 = 2_166_136_261;
    for b in pipeline.bytes() {
        h = (h ^ b as u32).wrapping_mul(16_777_619);
    }
    let head: String = clean.chars().take(48).collect();
    format!("idaas_{head}_{h:08x}")
}

/// Lists the ordinary and partitioned tables of the connection's database outside the system schemas
/// (partitions are left out: they are read through their partitioned table).
pub async fn list_tables(pg: &Pg) -> Result<Vec<TableRef>> {
    let client = pg.connect().await?;
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
             AND n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
             AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%' ORDER BY 1, 2",
            &[&SYSTEM_SCHEMAS],
        )
        .await
        .map_err(|e| classify(pg.config(), e, "list tables"))?;
    Ok(rows.into_iter().map(|r| TableRef::new(r.get::<_, String>(0), r.get::<_, String>(1))).collect())
}

/// A table as the catalog describes it.
#[derive(Debug, Clone)]
pub struct Described {
    /// The portable schema (version 1).
    pub schema: TableSchema,
    /// The resolved type of each column of `schema`.
    pub types: Vec<PgType>,
    /// The table's OID.
    pub oid: u32,
    /// `relreplident`: `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: char,
    /// True for a partitioned table.
    pub partitioned: bool,
    /// True when the user may `SELECT` from the table.
    pub can_select: bool,
    /// True when the user owns the table (or is superuser), as creating a publication for it requires.
    pub owned: bool,
}

/// The OID, kind, replica identity, SELECT privilege and ownership of a table, `None` when it does not exist.
async fn table_row(
    client: &Client,
    cfg: &ConnectionConfig,
    table: &TableRef,
) -> Result<Option<tokio_postgres::Row>> {
    client
        .query_opt(
            "SELECT c.oid, c.relkind::text, c.relreplident::text, has_table_privilege(c.oid, 'SELECT'), \
             pg_has_role(c.relowner, 'USAGE') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.namespace, &table.name],
        )
        .await
        .map_err(|e| classify(cfg, e, "read a table's catalog entry"))
}

/// Describes `table` through `client`, resolving types with `types`.
pub async fn describe_with(
    client: &Client,
    cfg: &ConnectionConfig,
    types: &mut TypeCache,
    table: &TableRef,
) -> Result<Described> {
    let Some(t) = table_row(client, cfg, table).await? else {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("connection '{}': table {table} does not exist (or is not a table)", cfg.alias),
        ));
    };
    let oid: u32 = t.get(0);
    let relkind: String = t.get(1);
    let replident: String = t.get(2);
    let can_select: bool = t.get(3);
    let owned: bool = t.get(4);
    let cols = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull, pg_get_expr(d.adbin, d.adrelid), \
             co.collname::text, a.attgenerated::text FROM pg_attribute a \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             LEFT JOIN pg_collation co ON co.oid = a.attcollation \
             WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| classify(cfg, e, "read a table's columns"))?;
    let mut columns = Vec::with_capacity(cols.len());
    let mut resolved = Vec::with_capacity(cols.len());
    for c in cols {
        let generated: String = c.get(6);
        if !generated.is_empty() {
            continue;
        }
        let ty = types.resolve(client, cfg, c.get(1), c.get(2)).await?;
        let collation: Option<String> = c.get(5);
        columns.push(ColumnSchema {
            name: c.get(0),
            data_type: ty.data_type.clone(),
            source_type: ty.name.clone(),
            nullable: !c.get::<_, bool>(3),
            default: c.get(4),
            collation: if ty.data_type.is_text() { collation } else { None },
        });
        resolved.push(ty);
    }
    let pk = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| classify(cfg, e, "read a table's primary key"))?
        .into_iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok(Described {
        schema: TableSchema { table: table.clone(), columns, primary_key: pk, version: 1 },
        types: resolved,
        oid,
        replica_identity: replident.chars().next().unwrap_or('d'),
        partitioned: relkind == "p",
        can_select,
        owned,
    })
}

/// Describes `table`; errors with [`ErrorKind::PermissionDenied`] when the user cannot read it.
pub async fn describe(pg: &Pg, table: &TableRef) -> Result<TableSchema> {
    let client = pg.connect().await?;
    let d = describe_with(&client, pg.config(), &mut TypeCache::new(), table).await?;
    if !d.can_select {
        return Err(missing_select(pg.config(), table));
    }
    Ok(d.schema)
}

/// The error for a table the user cannot read.
pub fn missing_select(cfg: &ConnectionConfig, table: &TableRef) -> Error {
    Error::new(
        ErrorKind::PermissionDenied,
        format!(
            "connection '{}': user '{}' lacks SELECT on table {table}: GRANT SELECT ON {} TO {}",
            cfg.alias,
            cfg.user,
            quote_table(table),
            quote_ident(&cfg.user)
        ),
    )
}

/// What is wrong with a table's replica identity for change data capture, if anything.
pub fn replica_identity_problem(d: &Described) -> Option<String> {
    identity_problem(&d.schema.table, d.replica_identity, !d.schema.primary_key.is_empty())
}

/// What is wrong with replica identity `replident` (`relreplident`) of `table`, if anything.
fn identity_problem(table: &TableRef, replident: char, has_pk: bool) -> Option<String> {
    let t = quote_table(table);
    match replident {
        'n' => Some(format!(
            "table {table} has REPLICA IDENTITY NOTHING: updates and deletes cannot be captured; run ALTER TABLE \
             {t} REPLICA IDENTITY DEFAULT (with a primary key) or REPLICA IDENTITY FULL"
        )),
        'd' if !has_pk => Some(format!(
            "table {table} has no primary key, so its default replica identity cannot identify rows: add one \
             (ALTER TABLE {t} ADD PRIMARY KEY (...))"
        )),
        _ => None,
    }
}

/// Refuses to publish a table whose updates and deletes the server could not log: PostgreSQL would then
/// make every `UPDATE` and `DELETE` on it fail.
async fn publishable(client: &Client, cfg: &ConnectionConfig, name: &str, table: &TableRef) -> Result<()> {
    let row = client
        .query_opt(
            "SELECT c.relreplident::text, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.namespace, &table.name],
        )
        .await
        .map_err(|e| classify(cfg, e, "read a table's replica identity"))?;
    let Some(row) = row else {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("connection '{}': table {table} does not exist (or is not a table)", cfg.alias),
        ));
    };
    let replident = row.get::<_, String>(0).chars().next().unwrap_or('d');
    match identity_problem(table, replident, row.get(1)) {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            ErrorKind::SourceConfig,
            format!(
                "connection '{}': {problem}. Publishing it in {name} would make the server refuse every UPDATE \
                 and DELETE on it",
                cfg.alias
            ),
        )),
    }
}

/// The estimated row count of a table (`reltuples`; 0 when never analysed).
pub async fn estimate_rows(pg: &Pg, table: &TableRef) -> Result<u64> {
    let client = pg.connect().await?;
    let row = client
        .query_opt(
            "SELECT GREATEST(c.reltuples, 0)::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&table.namespace, &table.name],
        )
        .await
        .map_err(|e| classify(pg.config(), e, "estimate rows"))?;
    Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64).unwrap_or(0))
}

/// The tables in publication `name`, `None` when it does not exist.
pub async fn publication_tables(
    client: &Client,
    cfg: &ConnectionConfig,
    name: &str,
) -> Result<Option<Vec<TableRef>>> {
    let exists = client
        .query_opt("SELECT oid FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(|e| classify(cfg, e, "read publications"))?;
    if exists.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_publication p \
             JOIN pg_publication_rel pr ON pr.prpubid = p.oid JOIN pg_class c ON c.oid = pr.prrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = $1",
            &[&name],
        )
        .await
        .map_err(|e| classify(cfg, e, "read publication tables"))?;
    Ok(Some(rows.into_iter().map(|r| TableRef::new(r.get::<_, String>(0), r.get::<_, String>(1))).collect()))
}

/// Creates publication `name` for `tables` when it is missing, or adds the tables it lacks. Changes are
/// published per partition (`publish_via_partition_root = false`). A table whose replica identity cannot
/// identify rows is refused ([`ErrorKind::SourceConfig`]) before anything is created.
pub async fn ensure_publication(
    client: &Client,
    cfg: &ConnectionConfig,
    name: &str,
    tables: &[TableRef],
) -> Result<()> {
    if tables.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("publication {name}: the pipeline names no tables to publish"),
        ));
    }
    let has = publication_tables(client, cfg, name).await?;
    for t in tables.iter().filter(|t| has.as_ref().is_none_or(|has| !has.contains(t))) {
        publishable(client, cfg, name, t).await?;
    }
    let missing: Vec<&TableRef> = match has {
        Some(has) => tables.iter().filter(|t| !has.contains(t)).collect(),
        None => {
            let list = tables.iter().map(quote_table).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "CREATE PUBLICATION {} FOR TABLE {list} WITH (publish = 'insert, update, delete, truncate', \
                 publish_via_partition_root = false)",
                quote_ident(name)
            );
            return client.batch_execute(&sql).await.map_err(|e| publication_error(cfg, e, name, &sql));
        }
    };
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.iter().map(|t| quote_table(t)).collect::<Vec<_>>().join(", ");
    let sql = format!("ALTER PUBLICATION {} ADD TABLE {list}", quote_ident(name));
    client.batch_execute(&sql).await.map_err(|e| publication_error(cfg, e, name, &sql))
}

fn publication_error(cfg: &ConnectionConfig, e: tokio_postgres::Error, name: &str, sql: &str) -> Error {
    if e.as_db_error().is_some_and(|d| d.code().code() == "42501") {
        let detail = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
        return Error::with_cause(
            ErrorKind::PermissionDenied,
            format!(
                "connection '{}': user '{}' cannot create or change publication {name} ({detail}): publishing a \
                 table needs its owner and the CREATE privilege on the database. Have the owner run: {sql}",
                cfg.alias, cfg.user
            ),
            e,
        );
    }
    classify(cfg, e, "create the publication")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_valid_slot_names() {
        assert_eq!(object_name("orders_sync"), "idaas_orders_sync");
        let upper = object_name("Orders");
        assert!(upper.starts_with("idaas_orders_") && upper.len() == "idaas_orders_".len() + 8, "{upper}");
        assert_ne!(object_name("Orders"), object_name("orders"));
        assert_ne!(object_name("ORDERS"), object_name("Orders"));
        let long = object_name(&"p".repeat(64));
        assert!(long.len() <= 63, "{long}");
        for n in [upper, long] {
            assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{n}");
        }
    }
}
