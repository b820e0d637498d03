//! # Schema discovery
//!
//! Tables, columns, primary keys, types, nullability and defaults from `information_schema`. MariaDB's JSON
//! columns are `LONGTEXT` with a `json_valid()` check constraint; they are recognised as
//! [`DataType::Json`].

use super::{MySql, quote_ident};
use idaas_core::{Charset, ColumnSchema, DataType, Error, ErrorKind, Result, TableRef, TableSchema};
use mysql_async::Conn;

/// Databases that belong to the server itself.
pub const SYSTEM_DATABASES: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// Lists the base tables the user can see (in the connection's database when it has one).
pub async fn list_tables(db: &MySql) -> Result<Vec<TableRef>> {
    let mut conn = db.connect().await?;
    let sql = match &db.config().database {
        Some(d) => format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA = {} ORDER BY 1, 2",
            quote_str(d)
        ),
        None => format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ({}) ORDER BY 1, 2",
            SYSTEM_DATABASES.iter().map(|s| quote_str(s)).collect::<Vec<_>>().join(", ")
        ),
    };
    let rows: Vec<(String, String)> = db.query(&mut conn, &sql).await?;
    let _ = conn.disconnect().await;
    Ok(rows.into_iter().map(|(s, t)| TableRef::new(s, t)).collect())
}

/// Describes one table; [`ErrorKind::NotFound`] when it does not exist.
pub async fn describe(db: &MySql, conn: &mut Conn, table: &TableRef) -> Result<TableSchema> {
    type ColRow = (String, String, String, String, Option<String>, Option<u64>, Option<u64>, Option<u64>);
    let sql = format!(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, NUMERIC_PRECISION, \
         NUMERIC_SCALE, DATETIME_PRECISION FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
        quote_str(&table.namespace),
        quote_str(&table.name)
    );
    let cols: Vec<ColRow> = db.query(conn, &sql).await?;
    if cols.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "table {table} does not exist on connection '{}' (or the user cannot see it); check the name \
                 (names are case-sensitive on most servers)",
                db.config().alias
            ),
        ));
    }
    type CharsetRow = (String, Option<String>, Option<u64>, Option<String>);
    let charsets: Vec<CharsetRow> = db
        .query(
            conn,
            &format!(
                "SELECT COLUMN_NAME, CHARACTER_SET_NAME, CHARACTER_MAXIMUM_LENGTH, COLLATION_NAME \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
                quote_str(&table.namespace),
                quote_str(&table.name)
            ),
        )
        .await?;
    let pk: Vec<String> = db
        .query(
            conn,
            &format!(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = {} \
                 AND TABLE_NAME = {} AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                quote_str(&table.namespace),
                quote_str(&table.name)
            ),
        )
        .await?;
    // MariaDB keeps JSON as LONGTEXT with CHECK (json_valid(`col`)).
    let checks: Vec<String> = db
        .query(
            conn,
            &format!(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = {} \
                 AND TABLE_NAME = {}",
                quote_str(&table.namespace),
                quote_str(&table.name)
            ),
        )
        .await
        .unwrap_or_default();
    let mut columns = Vec::with_capacity(cols.len());
    for (i, (name, data_type, column_type, nullable, default, precision, scale, dt_precision)) in
        cols.into_iter().enumerate()
    {
        let (charset_name, char_len, collation) =
            charsets.get(i).map(|(_, c, l, k)| (c.clone(), *l, k.clone())).unwrap_or((None, None, None));
        let is_json = data_type.eq_ignore_ascii_case("json")
            || checks.iter().any(|c| c.replace(' ', "") == format!("json_valid({})", quote_ident(&name)));
        let dt = if is_json {
            DataType::Json
        } else {
            map_type(
                &data_type,
                &column_type,
                precision,
                scale,
                dt_precision,
                char_len,
                charset_name.as_deref(),
            )
        };
        let is_text = dt.is_text();
        columns.push(ColumnSchema {
            name,
            data_type: dt,
            source_type: column_type,
            nullable: nullable.eq_ignore_ascii_case("YES"),
            default: default.filter(|d| !d.eq_ignore_ascii_case("NULL")),
            collation: if is_text { collation } else { None },
        });
    }
    Ok(TableSchema { table: table.clone(), columns, primary_key: pk, version: 1 })
}

/// Maps `information_schema` type information to a [`DataType`].
pub fn map_type(
    data_type: &str,
    column_type: &str,
    precision: Option<u64>,
    scale: Option<u64>,
    dt_precision: Option<u64>,
    char_len: Option<u64>,
    charset: Option<&str>,
) -> DataType {
    let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
    let charset = match charset.map(|c| c.to_ascii_lowercase()) {
        Some(c) if c.starts_with("utf8") => Charset::Utf8,
        Some(c) if c == "latin1" => Charset::Latin1,
        Some(c) if c == "ascii" => Charset::Ascii,
        Some(_) => Charset::Other,
        None => Charset::Utf8,
    };
    let fsp = dt_precision.unwrap_or(0).min(6) as u8;
    let len = char_len.unwrap_or(0).min(u32::MAX as u64) as u32;
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" => DataType::Int { bytes: 1, unsigned },
        "smallint" => DataType::Int { bytes: 2, unsigned },
        "mediumint" => DataType::Int { bytes: 3, unsigned },
        "int" | "integer" => DataType::Int { bytes: 4, unsigned },
        "bigint" => DataType::Int { bytes: 8, unsigned },
        "decimal" | "numeric" => DataType::Decimal {
            precision: precision.unwrap_or(10) as u32,
            scale: scale.unwrap_or(0) as u32,
            unsigned,
        },
        "float" => DataType::Float,
        "double" | "real" => DataType::Double,
        "char" => DataType::Char { length: len, charset },
        "varchar" => DataType::Varchar { length: len, charset },
        "tinytext" => DataType::Text { max_bytes: 255, charset },
        "text" => DataType::Text { max_bytes: 65_535, charset },
        "mediumtext" => DataType::Text { max_bytes: 16_777_215, charset },
        "longtext" => DataType::Text { max_bytes: 4_294_967_295, charset },
        "binary" => DataType::Binary { length: len },
        "varbinary" => DataType::Varbinary { length: len },
        "tinyblob" => DataType::Blob { max_bytes: 255 },
        "blob" => DataType::Blob { max_bytes: 65_535 },
        "mediumblob" => DataType::Blob { max_bytes: 16_777_215 },
        "longblob" => DataType::Blob { max_bytes: 4_294_967_295 },
        "date" => DataType::Date,
        "time" => DataType::Time { fsp },
        "datetime" => DataType::DateTime { fsp },
        "timestamp" => DataType::Timestamp { fsp },
        "year" => DataType::Year,
        "enum" => DataType::Enum { labels: parse_labels(column_type) },
        "set" => DataType::Set { members: parse_labels(column_type) },
        "bit" => DataType::Bit { bits: precision.unwrap_or(1).clamp(1, 64) as u8 },
        "json" => DataType::Json,
        "uuid" => DataType::Uuid,
        _ => DataType::Other { name: column_type.to_string() },
    }
}

/// Parses `enum('a','b''c')` / `set(...)` labels.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(start) = column_type.find('(') else { return Vec::new() };
    let body = &column_type[start + 1..column_type.rfind(')').unwrap_or(column_type.len())];
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_str = false;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    cur.push('\'');
                    chars.next();
                } else {
                    in_str = false;
                    out.push(std::mem::take(&mut cur));
                }
            } else if c == '\\' {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else {
                cur.push(c);
            }
        } else if c == '\'' {
            in_str = true;
        }
    }
    out
}

/// Quotes a string literal for SQL text.
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The privileges found in `SHOW GRANTS`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// REPLICATION SLAVE on *.*.
    pub replication_slave: bool,
    /// REPLICATION CLIENT (or BINLOG MONITOR on MariaDB) on *.*.
    pub replication_client: bool,
    /// SELECT on the database (or *.*).
    pub select: bool,
    /// CREATE/INSERT/UPDATE/DELETE on the database (or *.*).
    pub write: bool,
}

/// Reads privileges from `SHOW GRANTS` lines for `database`.
pub fn parse_grants(grants: &[String], database: Option<&str>) -> Privileges {
    let mut p = Privileges::default();
    for g in grants {
        let up = g.to_ascii_uppercase();
        let Some(on) = up.find(" ON ") else { continue };
        let privs = &up[..on];
        let rest = &up[on + 4..];
        let target = rest.split_whitespace().next().unwrap_or("").replace('`', "");
        let global = target == "*.*";
        let this_db = database
            .map(|d| {
                target == format!("{}.*", d.to_ascii_uppercase())
                    || target.starts_with(&format!("{}.", d.to_ascii_uppercase()))
            })
            .unwrap_or(false);
        let all = privs.contains("ALL PRIVILEGES");
        if global {
            p.replication_slave |= all || privs.contains("REPLICATION SLAVE");
            p.replication_client |= all
                || privs.contains("REPLICATION CLIENT")
                || privs.contains("BINLOG MONITOR")
                || privs.contains("SUPER");
        }
        if global || this_db {
            p.select |= all || privs.contains("SELECT");
            p.write |=
                all || (privs.contains("INSERT") && privs.contains("UPDATE") && privs.contains("DELETE"));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_parse_with_quotes() {
        assert_eq!(parse_labels("enum('a','b''c','d,e')"), vec!["a", "b'c", "d,e"]);
        assert_eq!(parse_labels("set('x')"), vec!["x"]);
    }

    #[test]
    fn grants_are_read() {
        let g = vec![
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `u`@`%`".to_string(),
            "GRANT SELECT ON `crm`.* TO `u`@`%`".to_string(),
        ];
        let p = parse_grants(&g, Some("crm"));
        assert!(p.replication_slave && p.replication_client && p.select && !p.write);
        let p = parse_grants(&g, Some("other"));
        assert!(!p.select);
        let all = vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`%` WITH GRANT OPTION".to_string()];
        let p = parse_grants(&all, None);
        assert!(p.replication_slave && p.replication_client && p.select && p.write);
    }

    #[test]
    fn types_map() {
        assert_eq!(
            map_type("int", "int(10) unsigned", Some(10), Some(0), None, None, None),
            DataType::Int { bytes: 4, unsigned: true }
        );
        assert_eq!(
            map_type("varchar", "varchar(20)", None, None, None, Some(20), Some("latin1")),
            DataType::Varchar { length: 20, charset: Charset::Latin1 }
        );
        assert_eq!(
            map_type("datetime", "datetime(3)", None, None, Some(3), None, None),
            DataType::DateTime { fsp: 3 }
        );
    }
}
