//! # Target tables
//!
//! What the PostgreSQL sink knows about its target tables: the column types AutoCreate declares for a source
//! schema ([`column_type`], [`create_table`]), the shape of an existing table read from the catalogs
//! ([`describe`]), and whether that shape can hold every value of the source ([`fits`], [`shape_problems`]).
//! The rules are listed in `docs/type-mapping.md`, section "Into PostgreSQL".
//!
//! # Errors
//! A source type PostgreSQL cannot declare is an [`ErrorKind::Unsupported`] error naming the table and
//! column; a target that does not fit is reported by [`shape_problems`] with every mismatch, one sentence
//! each, and the caller creates nothing.

use super::{classify, quote_ident, quote_literal, quote_table};
use crate::config::ConnectionConfig;
use idaas_core::{ColumnSchema, DataType, Error, ErrorKind, Result, TableRef, TableSchema};
use std::collections::{HashMap, HashSet};
use tokio_postgres::Client;

/// PostgreSQL's limit on identifier length, in bytes (longer names are cut silently by the server).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Largest precision PostgreSQL accepts in `numeric(p,s)`.
pub const MAX_NUMERIC_PRECISION: u32 = 1000;

/// Largest length PostgreSQL accepts in `character(n)` and `character varying(n)`.
pub const MAX_CHAR_LENGTH: u32 = 10_485_760;

/// What a target column's type is, as far as writing values into it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgKind {
    /// `boolean`.
    Bool,
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `numeric(p,s)`, or `numeric` without a precision (`precision: None`).
    Numeric {
        /// Total digits, when declared.
        precision: Option<u32>,
        /// Digits after the point (0 when no precision is declared: any scale is then kept).
        scale: i32,
    },
    /// `real`.
    Float4,
    /// `double precision`.
    Float8,
    /// `text`.
    Text,
    /// `character varying(n)`, or without a limit.
    Varchar {
        /// The limit in characters.
        max: Option<u32>,
    },
    /// `character(n)` (blank-padded).
    Bpchar {
        /// The length in characters (`None` for the unlimited internal `bpchar`).
        len: Option<u32>,
    },
    /// `bytea`.
    Bytea,
    /// `date`.
    Date,
    /// `time(fsp) without time zone`.
    Time {
        /// Fractional-second digits.
        fsp: u8,
    },
    /// `timestamp(fsp) without time zone`.
    Timestamp {
        /// Fractional-second digits.
        fsp: u8,
    },
    /// `timestamp(fsp) with time zone`.
    TimestampTz {
        /// Fractional-second digits.
        fsp: u8,
    },
    /// `interval`.
    Interval,
    /// `uuid`.
    Uuid,
    /// `json`.
    Json,
    /// `jsonb`.
    Jsonb,
    /// `bit(n)`.
    Bit {
        /// The exact length in bits.
        len: Option<u32>,
    },
    /// `bit varying(n)`, or without a limit.
    Varbit {
        /// The limit in bits.
        max: Option<u32>,
    },
    /// A user-defined enum type.
    Enum {
        /// Its labels in sort order.
        labels: Vec<String>,
    },
    /// An array of `elem`.
    Array {
        /// The element type.
        elem: Box<PgType>,
    },
    /// Any other type: values are written through its text input function.
    Other,
}

/// A target column's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgType {
    /// The OID of the declared type (a domain's own OID for a domain column).
    pub oid: u32,
    /// The declaration as `format_type` prints it, e.g. `character varying(20)`.
    pub display: String,
    /// The type's schema-qualified, quoted internal name without a modifier (`"pg_catalog"."varchar"`), for
    /// casts that must not cut values (`::varchar(5)` would).
    pub qualified: String,
    /// What values it takes, with domains resolved to their base type.
    pub kind: PgKind,
}

/// A column of an existing target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    /// The name as the target spells it.
    pub name: String,
    /// Its type.
    pub ty: PgType,
    /// True when NULL is allowed.
    pub nullable: bool,
    /// True when the column has a default or is an identity column.
    pub has_default: bool,
    /// True for a generated column (cannot be written).
    pub generated: bool,
}

/// An existing target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTable {
    /// The table.
    pub table: TableRef,
    /// Columns in ordinal order.
    pub columns: Vec<PgColumn>,
    /// Primary-key column names in key order; empty when the table has none.
    pub primary_key: Vec<String>,
}

impl PgTable {
    /// The target column a source column named `name` writes into: the column of exactly that name, or
    /// else the only column whose name differs from it in letter case alone.
    pub fn column(&self, name: &str) -> Option<&PgColumn> {
        if let Some(c) = self.columns.iter().find(|c| c.name == name) {
            return Some(c);
        }
        let mut folded = self.columns.iter().filter(|c| c.name.eq_ignore_ascii_case(name));
        match (folded.next(), folded.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    }
}

struct TypeRow {
    name: String,
    nsp: String,
    typtype: u8,
    base: u32,
    base_typmod: i32,
    elem: u32,
    category: u8,
}

const COLUMNS_SQL: &str = "\
SELECT c.relkind::text, a.attname::text, a.atttypid, a.atttypmod, format_type(a.atttypid, a.atttypmod), \
       NOT a.attnotnull, a.atthasdef OR a.attidentity <> '', a.attgenerated <> '', a.attnum IS NULL \
FROM pg_class c \
JOIN pg_namespace n ON n.oid = c.relnamespace \
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
WHERE n.nspname = $1 AND c.relname = $2 \
ORDER BY a.attnum";

const KEY_SQL: &str = "\
SELECT a.attname::text \
FROM pg_index i \
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND i.indisprimary \
ORDER BY array_position(i.indkey::int2[], a.attnum)";

const TYPES_SQL: &str = "\
SELECT t.oid, t.typname::text, n.nspname::text, t.typtype, t.typbasetype, t.typtypmod, t.typelem, t.typcategory \
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
WHERE t.oid = ANY($1)";

const ENUM_SQL: &str = "\
SELECT enumtypid, enumlabel::text FROM pg_enum WHERE enumtypid = ANY($1) ORDER BY enumtypid, enumsortorder";

/// Reads the shape of `table` from the catalogs; `None` when it does not exist. A relation that is not a
/// table (a view, a sequence) is an [`ErrorKind::Incompatible`] error.
pub async fn describe(cfg: &ConnectionConfig, client: &Client, table: &TableRef) -> Result<Option<PgTable>> {
    let what = format!("describe target table {table}");
    let rows = client
        .query(COLUMNS_SQL, &[&table.namespace, &table.name])
        .await
        .map_err(|e| classify(cfg, e, &what))?;
    let Some(first) = rows.first() else { return Ok(None) };
    let relkind: String = first.get(0);
    if relkind != "r" && relkind != "p" {
        return Err(Error::new(
            ErrorKind::Incompatible,
            format!(
                "target {table} exists but is not a table (relkind '{relkind}'); choose another target name"
            ),
        ));
    }
    struct Raw {
        name: String,
        oid: u32,
        typmod: i32,
        display: String,
        nullable: bool,
        has_default: bool,
        generated: bool,
    }
    let mut raw = Vec::new();
    for r in &rows {
        if r.get::<_, bool>(8) {
            continue; // a table without columns
        }
        raw.push(Raw {
            name: r.get(1),
            oid: r.get(2),
            typmod: r.get(3),
            display: r.get(4),
            nullable: r.get(5),
            has_default: r.get(6),
            generated: r.get(7),
        });
    }
    let types = load_types(cfg, client, raw.iter().map(|r| r.oid).collect()).await?;
    let enums: Vec<u32> = types.iter().filter(|(_, t)| t.typtype == b'e').map(|(o, _)| *o).collect();
    let mut labels: HashMap<u32, Vec<String>> = HashMap::new();
    if !enums.is_empty() {
        for r in client.query(ENUM_SQL, &[&enums]).await.map_err(|e| classify(cfg, e, &what))? {
            labels.entry(r.get(0)).or_default().push(r.get(1));
        }
    }
    let columns = raw
        .into_iter()
        .map(|r| PgColumn {
            ty: pg_type(&types, &labels, r.oid, r.typmod, r.display, 0),
            name: r.name,
            nullable: r.nullable,
            has_default: r.has_default,
            generated: r.generated,
        })
        .collect();
    let primary_key = client
        .query(KEY_SQL, &[&table.namespace, &table.name])
        .await
        .map_err(|e| classify(cfg, e, &what))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(PgTable { table: table.clone(), columns, primary_key }))
}

/// Loads `pg_type` rows for `oids` and every base and element type they lead to.
async fn load_types(
    cfg: &ConnectionConfig,
    client: &Client,
    oids: Vec<u32>,
) -> Result<HashMap<u32, TypeRow>> {
    let mut types: HashMap<u32, TypeRow> = HashMap::new();
    let mut missing: Vec<u32> = oids.into_iter().collect::<HashSet<_>>().into_iter().collect();
    while !missing.is_empty() {
        let rows =
            client.query(TYPES_SQL, &[&missing]).await.map_err(|e| classify(cfg, e, "read target types"))?;
        for r in rows {
            let oid: u32 = r.get(0);
            types.insert(
                oid,
                TypeRow {
                    name: r.get(1),
                    nsp: r.get(2),
                    typtype: r.get::<_, i8>(3) as u8,
                    base: r.get(4),
                    base_typmod: r.get(5),
                    elem: r.get(6),
                    category: r.get::<_, i8>(7) as u8,
                },
            );
        }
        let next: HashSet<u32> = types
            .values()
            .flat_map(|t| [t.base, if t.category == b'A' { t.elem } else { 0 }])
            .filter(|o| *o != 0 && !types.contains_key(o))
            .collect();
        if next.iter().all(|o| missing.contains(o)) {
            break; // unknown OIDs (concurrently dropped types): they stay `Other`
        }
        missing = next.into_iter().collect();
    }
    Ok(types)
}

fn pg_type(
    types: &HashMap<u32, TypeRow>,
    labels: &HashMap<u32, Vec<String>>,
    oid: u32,
    typmod: i32,
    display: String,
    depth: u32,
) -> PgType {
    let qualified = types
        .get(&oid)
        .map(|t| format!("{}.{}", quote_ident(&t.nsp), quote_ident(&t.name)))
        .unwrap_or_else(|| display.clone());
    let kind = kind_of(types, labels, oid, typmod, depth);
    PgType { oid, display, qualified, kind }
}

fn kind_of(
    types: &HashMap<u32, TypeRow>,
    labels: &HashMap<u32, Vec<String>>,
    oid: u32,
    typmod: i32,
    depth: u32,
) -> PgKind {
    let Some(t) = types.get(&oid) else { return PgKind::Other };
    if depth > 8 {
        return PgKind::Other;
    }
    if t.typtype == b'd' {
        return kind_of(types, labels, t.base, t.base_typmod, depth + 1);
    }
    if t.typtype == b'e' {
        return PgKind::Enum { labels: labels.get(&oid).cloned().unwrap_or_default() };
    }
    if t.category == b'A' && t.elem != 0 {
        let display = types.get(&t.elem).map(|e| e.name.clone()).unwrap_or_default();
        return PgKind::Array { elem: Box::new(pg_type(types, labels, t.elem, typmod, display, depth + 1)) };
    }
    if t.nsp != "pg_catalog" {
        return PgKind::Other;
    }
    let chars = || (typmod >= 4).then(|| (typmod - 4) as u32);
    let fsp = || if (0..=6).contains(&typmod) { typmod as u8 } else { 6 };
    let bits = || (typmod >= 0).then_some(typmod as u32);
    match t.name.as_str() {
        "bool" => PgKind::Bool,
        "int2" => PgKind::Int2,
        "int4" => PgKind::Int4,
        "int8" => PgKind::Int8,
        "numeric" => {
            if typmod < 4 {
                PgKind::Numeric { precision: None, scale: 0 }
            } else {
                let m = typmod - 4;
                PgKind::Numeric {
                    precision: Some(((m >> 16) & 0xffff) as u32),
                    scale: ((m & 0x7ff) ^ 1024) - 1024,
                }
            }
        }
        "float4" => PgKind::Float4,
        "float8" => PgKind::Float8,
        "text" => PgKind::Text,
        "varchar" => PgKind::Varchar { max: chars() },
        "bpchar" => PgKind::Bpchar { len: chars() },
        "bytea" => PgKind::Bytea,
        "date" => PgKind::Date,
        "time" => PgKind::Time { fsp: fsp() },
        "timestamp" => PgKind::Timestamp { fsp: fsp() },
        "timestamptz" => PgKind::TimestampTz { fsp: fsp() },
        "interval" => PgKind::Interval,
        "uuid" => PgKind::Uuid,
        "json" => PgKind::Json,
        "jsonb" => PgKind::Jsonb,
        "bit" => PgKind::Bit { len: bits() },
        "varbit" => PgKind::Varbit { max: bits() },
        _ => PgKind::Other,
    }
}

fn refuse(table: &TableRef, col: &ColumnSchema, what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("table {table}, column '{}' ({}): {what}", col.name, col.source_type),
    )
}

fn quote_labels(labels: &[String]) -> String {
    labels.iter().map(|l| quote_literal(l)).collect::<Vec<_>>().join(", ")
}

/// The PostgreSQL type AutoCreate declares for a source column (`docs/type-mapping.md`, "Into
/// PostgreSQL"). `table` names the source table in errors. A [`DataType::Other`] is declared with the
/// source's own type name; the caller checks that the target knows it.
pub fn column_type(table: &TableRef, col: &ColumnSchema) -> Result<String> {
    let text_len = |kind: &str, n: u32| -> String {
        if n == 0 || n > MAX_CHAR_LENGTH { "text".into() } else { format!("{kind}({n})") }
    };
    Ok(match &col.data_type {
        DataType::Bool => "boolean".into(),
        DataType::Int { bytes, unsigned: false } => match bytes {
            1 | 2 => "smallint",
            3 | 4 => "integer",
            _ => "bigint",
        }
        .into(),
        DataType::Int { bytes, unsigned: true } => match bytes {
            1 => "smallint",
            2 | 3 => "integer",
            4 => "bigint",
            _ => "numeric(20,0)",
        }
        .into(),
        DataType::Decimal { precision, scale, .. } => {
            if *precision == 0 {
                "numeric".into()
            } else if *precision > MAX_NUMERIC_PRECISION || *scale > MAX_NUMERIC_PRECISION {
                return Err(refuse(
                    table,
                    col,
                    "numeric precision or scale above 1000 cannot be declared in PostgreSQL; create the target \
                     table yourself with an unconstrained numeric column",
                ));
            } else {
                format!("numeric({precision},{scale})")
            }
        }
        DataType::Float => "real".into(),
        DataType::Double => "double precision".into(),
        DataType::Char { length, .. } => text_len("character", *length),
        DataType::Varchar { length, .. } => text_len("character varying", *length),
        DataType::Text { .. } => "text".into(),
        DataType::Binary { .. } | DataType::Varbinary { .. } | DataType::Blob { .. } => "bytea".into(),
        DataType::Date => "date".into(),
        DataType::Time { fsp } => format!("time({}) without time zone", fsp.min(&6)),
        DataType::DateTime { fsp } => format!("timestamp({}) without time zone", fsp.min(&6)),
        DataType::Timestamp { fsp } => format!("timestamp({}) with time zone", fsp.min(&6)),
        DataType::Year => "smallint".into(),
        DataType::Enum { .. } => "text".into(),
        DataType::Set { .. } => "text[]".into(),
        DataType::Bit { bits } => format!("bit({})", (*bits).max(1)),
        DataType::Json => "jsonb".into(),
        DataType::Uuid => "uuid".into(),
        DataType::Other { name } => {
            let safe = !name.trim().is_empty()
                && name.chars().all(|c| c.is_alphanumeric() || " _,.()[]\"".contains(c))
                && name.matches('"').count() % 2 == 0;
            if !safe {
                return Err(refuse(table, col, &format!("type '{name}' cannot be declared in PostgreSQL")));
            }
            name.clone()
        }
    })
}

/// The name of the CHECK constraint AutoCreate adds to an ENUM or SET column.
pub fn labels_constraint(column: &str) -> String {
    let mut name = format!("{column}_labels");
    while name.len() > MAX_IDENTIFIER_BYTES {
        name.remove(name.char_indices().nth_back(7).map(|(i, _)| i).unwrap_or(0));
    }
    name
}

/// The CHECK constraint body that keeps an ENUM or SET column to its labels, if the type has one.
pub fn labels_check(col: &ColumnSchema) -> Option<String> {
    let q = quote_ident(&col.name);
    match &col.data_type {
        DataType::Enum { labels } if !labels.is_empty() => Some(format!("{q} IN ({})", quote_labels(labels))),
        DataType::Set { members } if !members.is_empty() => {
            Some(format!("{q} <@ ARRAY[{}]::text[]", quote_labels(members)))
        }
        _ => None,
    }
}

/// The collation AutoCreate declares for a text column: the source's, when the target server has a collation
/// of that name (`known`), except `default`. MySQL collation names never match a PostgreSQL one.
pub fn collation<'a>(col: &'a ColumnSchema, known: &HashSet<String>) -> Option<&'a str> {
    let c = col.collation.as_deref()?;
    (col.data_type.is_text() && c != "default" && known.contains(c)).then_some(c)
}

/// The column definition AutoCreate writes: name, type, collation (see [`collation`]), nullability and, for
/// ENUM and SET, the CHECK constraint that lists the labels.
pub fn column_def(
    table: &TableRef,
    col: &ColumnSchema,
    known_collations: &HashSet<String>,
) -> Result<String> {
    if col.name.len() > MAX_IDENTIFIER_BYTES {
        return Err(refuse(
            table,
            col,
            "the column name is longer than PostgreSQL's 63-byte limit; create the target table yourself",
        ));
    }
    let mut def = format!("{} {}", quote_ident(&col.name), column_type(table, col)?);
    if let Some(c) = collation(col, known_collations) {
        def.push_str(&format!(" COLLATE {}", quote_ident(c)));
    }
    if !col.nullable {
        def.push_str(" NOT NULL");
    }
    if let Some(check) = labels_check(col) {
        def.push_str(&format!(" CONSTRAINT {} CHECK ({check})", quote_ident(&labels_constraint(&col.name))));
    }
    Ok(def)
}

/// The `CREATE TABLE` statement AutoCreate runs for `source` as `target`. Every column that cannot be declared
/// is named in one error.
pub fn create_table(
    source: &TableSchema,
    target: &TableRef,
    known_collations: &HashSet<String>,
) -> Result<String> {
    if target.name.len() > MAX_IDENTIFIER_BYTES || target.namespace.len() > MAX_IDENTIFIER_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "target name {target} is longer than PostgreSQL's 63-byte limit for names; choose a shorter one"
            ),
        ));
    }
    let mut defs = Vec::new();
    let mut problems = Vec::new();
    for c in &source.columns {
        match column_def(&source.table, c, known_collations) {
            Ok(d) => defs.push(d),
            Err(e) => problems.push(e.message),
        }
    }
    if !problems.is_empty() {
        return Err(Error::new(ErrorKind::Unsupported, problems.join("; ")));
    }
    defs.push(format!(
        "PRIMARY KEY ({})",
        source.primary_key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ")
    ));
    Ok(format!("CREATE TABLE {} (\n  {}\n)", quote_table(target), defs.join(",\n  ")))
}

/// Decimal digits of the largest integer of a width, as in `docs/type-mapping.md`.
fn int_digits(bytes: u8, unsigned: bool) -> u32 {
    match (bytes, unsigned) {
        (1, _) => 3,
        (2, _) => 5,
        (3, false) => 7,
        (3, true) => 8,
        (4, _) => 10,
        (_, false) => 19,
        (_, true) => 20,
    }
}

fn int_bytes(kind: &PgKind) -> Option<u8> {
    match kind {
        PgKind::Int2 => Some(2),
        PgKind::Int4 => Some(4),
        PgKind::Int8 => Some(8),
        _ => None,
    }
}

fn numeric_holds(precision: Option<u32>, scale: i32, int_digits: u32, frac_digits: u32) -> bool {
    match precision {
        None => true,
        Some(p) => scale >= frac_digits as i32 && p as i64 - scale as i64 >= int_digits as i64,
    }
}

fn text_holds(kind: &PgKind, chars: u64) -> bool {
    match kind {
        PgKind::Text | PgKind::Varchar { max: None } => true,
        PgKind::Varchar { max: Some(m) } => *m as u64 >= chars,
        _ => false,
    }
}

/// True when a target column of type `target` holds every value of a source column of type `source`
/// (`docs/type-mapping.md`, "Into PostgreSQL").
pub fn fits(source: &DataType, target: &PgType) -> bool {
    use PgKind as K;
    let kind = &target.kind;
    match source {
        DataType::Bool => matches!(kind, K::Bool),
        DataType::Int { bytes, unsigned } => {
            if let Some(tb) = int_bytes(kind) {
                let need = if *unsigned { *bytes + 1 } else { *bytes };
                let need = if *bytes == 3 { 4 } else { need };
                tb >= need
            } else if let K::Numeric { precision, scale } = kind {
                numeric_holds(*precision, *scale, int_digits(*bytes, *unsigned), 0)
            } else {
                false
            }
        }
        DataType::Decimal { precision, scale, .. } => match kind {
            K::Numeric { precision: None, .. } => true,
            K::Numeric { precision: Some(_), .. } if *precision == 0 => false,
            K::Numeric { precision: tp, scale: ts } => {
                numeric_holds(*tp, *ts, precision.saturating_sub(*scale), *scale)
            }
            _ => false,
        },
        DataType::Float => matches!(kind, K::Float4 | K::Float8),
        DataType::Double => matches!(kind, K::Float8),
        DataType::Char { length, .. } => {
            *length > 0 && matches!(kind, K::Bpchar { len: Some(m) } if m >= length)
                || matches!(kind, K::Bpchar { len: None })
                || text_holds(kind, *length as u64)
        }
        DataType::Varchar { length, .. } => text_holds(kind, *length as u64),
        DataType::Text { max_bytes, .. } => text_holds(kind, *max_bytes),
        DataType::Binary { .. } | DataType::Varbinary { .. } | DataType::Blob { .. } => {
            matches!(kind, K::Bytea)
        }
        DataType::Date => matches!(kind, K::Date | K::Timestamp { .. }),
        DataType::Time { fsp } => {
            matches!(kind, K::Time { fsp: t } if t >= fsp) || matches!(kind, K::Interval)
        }
        DataType::DateTime { fsp } => matches!(kind, K::Timestamp { fsp: t } if t >= fsp),
        DataType::Timestamp { fsp } => matches!(kind, K::TimestampTz { fsp: t } if t >= fsp),
        DataType::Year => int_bytes(kind).is_some() || numeric_holds_year(kind),
        DataType::Enum { labels } => match kind {
            K::Enum { labels: t } => labels.iter().all(|l| t.contains(l)),
            other => text_holds(other, labels.iter().map(|l| l.chars().count() as u64).max().unwrap_or(0)),
        },
        DataType::Set { members } => match kind {
            K::Array { elem } => {
                text_holds(&elem.kind, members.iter().map(|l| l.chars().count() as u64).max().unwrap_or(0))
            }
            _ => false,
        },
        DataType::Bit { bits } => match kind {
            K::Bit { len: Some(n) } => *n >= *bits as u32,
            K::Varbit { max } => max.is_none_or(|m| m >= *bits as u32),
            _ => false,
        },
        DataType::Json => matches!(kind, K::Jsonb | K::Json | K::Text),
        DataType::Uuid => matches!(kind, K::Uuid) || text_holds(kind, 36),
        DataType::Other { name } => same_type_name(name, &target.display),
    }
}

fn numeric_holds_year(kind: &PgKind) -> bool {
    matches!(kind, PgKind::Numeric { precision, scale } if numeric_holds(*precision, *scale, 4, 0))
}

/// True when two type declarations name the same type (letter case and spaces aside).
pub fn same_type_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase().replace(" (", "(");
    norm(a) == norm(b)
}

/// Every way the existing target does not fit the source, one sentence each.
pub fn shape_problems(source: &TableSchema, target: &PgTable) -> Vec<String> {
    let mut problems = Vec::new();
    let mapped: Vec<Option<&str>> =
        source.primary_key.iter().map(|k| target.column(k).map(|c| c.name.as_str())).collect();
    let same_key = mapped.len() == target.primary_key.len()
        && mapped.iter().zip(&target.primary_key).all(|(m, t)| *m == Some(t.as_str()));
    if !same_key {
        let tpk = if target.primary_key.is_empty() { "none".into() } else { target.primary_key.join(", ") };
        problems.push(format!(
            "primary key is ({tpk}) in the target but ({}) in the source",
            source.primary_key.join(", ")
        ));
    }
    for c in &source.columns {
        let Some(t) = target.column(&c.name) else {
            problems.push(format!("column '{}' ({}) is missing in the target", c.name, c.source_type));
            continue;
        };
        if t.generated {
            problems.push(format!(
                "column '{}' is a generated column in the target and cannot be written",
                t.name
            ));
        }
        if !fits(&c.data_type, &t.ty) {
            problems.push(format!(
                "column '{}' is {} in the target but {} in the source",
                c.name, t.ty.display, c.source_type
            ));
        }
        if c.nullable && !t.nullable {
            problems
                .push(format!("column '{}' is NOT NULL in the target but nullable in the source", c.name));
        }
    }
    for t in &target.columns {
        let in_source =
            source.columns.iter().any(|c| target.column(&c.name).is_some_and(|m| m.name == t.name));
        if !in_source && !t.nullable && !t.has_default {
            problems.push(format!(
                "target column '{}' is NOT NULL without a default and has no source column to fill it",
                t.name
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use idaas_core::Charset;

    fn ty(kind: PgKind) -> PgType {
        PgType { oid: 0, display: format!("{kind:?}"), qualified: String::new(), kind }
    }

    fn col(dt: DataType) -> ColumnSchema {
        ColumnSchema {
            name: "c".into(),
            data_type: dt,
            source_type: "x".into(),
            nullable: true,
            default: None,
            collation: None,
        }
    }

    #[test]
    fn declared_types_follow_the_mapping() {
        let t = TableRef::new("crm", "t");
        let decl = |dt: DataType| column_type(&t, &col(dt)).unwrap();
        assert_eq!(decl(DataType::Int { bytes: 1, unsigned: false }), "smallint");
        assert_eq!(decl(DataType::Int { bytes: 2, unsigned: true }), "integer");
        assert_eq!(decl(DataType::Int { bytes: 4, unsigned: true }), "bigint");
        assert_eq!(decl(DataType::Int { bytes: 8, unsigned: true }), "numeric(20,0)");
        assert_eq!(decl(DataType::Varchar { length: 0, charset: Charset::Utf8 }), "text");
        assert_eq!(decl(DataType::Time { fsp: 3 }), "time(3) without time zone");
        assert!(column_type(&t, &col(DataType::Other { name: "int; DROP TABLE x".into() })).is_err());
        assert_eq!(decl(DataType::Other { name: "integer[]".into() }), "integer[]");
        let e = col(DataType::Enum { labels: vec!["a".into(), "it's".into()] });
        let none = HashSet::new();
        assert_eq!(
            column_def(&t, &e, &none).unwrap(),
            "\"c\" text CONSTRAINT \"c_labels\" CHECK (\"c\" IN ('a', 'it''s'))"
        );
        let mut v = col(DataType::Varchar { length: 5, charset: Charset::Utf8 });
        v.collation = Some("C".into());
        v.nullable = false;
        assert_eq!(column_def(&t, &v, &none).unwrap(), "\"c\" character varying(5) NOT NULL");
        let known: HashSet<String> = ["C".to_string()].into();
        assert_eq!(column_def(&t, &v, &known).unwrap(), "\"c\" character varying(5) COLLATE \"C\" NOT NULL");
        assert_eq!(labels_constraint(&"x".repeat(70)).len(), 63);
    }

    #[test]
    fn shapes_fit_by_range() {
        let int = |bytes, unsigned| DataType::Int { bytes, unsigned };
        let num = |p, s| ty(PgKind::Numeric { precision: Some(p), scale: s });
        assert!(fits(&int(4, true), &ty(PgKind::Int8)));
        assert!(!fits(&int(4, true), &ty(PgKind::Int4)));
        assert!(fits(&int(3, true), &ty(PgKind::Int4)));
        assert!(fits(&int(1, false), &ty(PgKind::Int2)));
        assert!(!fits(&int(8, true), &ty(PgKind::Int8)));
        assert!(fits(&int(8, true), &num(20, 0)));
        assert!(!fits(&int(8, true), &num(20, 1)));
        let dec = DataType::Decimal { precision: 12, scale: 2, unsigned: false };
        assert!(fits(&dec, &num(14, 4)));
        assert!(!fits(&dec, &num(12, 4)));
        assert!(fits(&dec, &ty(PgKind::Numeric { precision: None, scale: 0 })));
        let vc = DataType::Varchar { length: 20, charset: Charset::Latin1 };
        assert!(fits(&vc, &ty(PgKind::Varchar { max: Some(20) })));
        assert!(!fits(&vc, &ty(PgKind::Varchar { max: Some(19) })));
        assert!(!fits(&vc, &ty(PgKind::Bpchar { len: Some(20) })), "char(n) would drop trailing spaces");
        assert!(fits(&DataType::Time { fsp: 0 }, &ty(PgKind::Interval)));
        assert!(!fits(&DataType::Time { fsp: 6 }, &ty(PgKind::Time { fsp: 3 })));
        assert!(!fits(&DataType::Timestamp { fsp: 0 }, &ty(PgKind::Timestamp { fsp: 6 })));
        assert!(fits(&DataType::Bit { bits: 5 }, &ty(PgKind::Bit { len: Some(8) })));
        assert!(!fits(&DataType::Bit { bits: 9 }, &ty(PgKind::Bit { len: Some(8) })));
        let e = DataType::Enum { labels: vec!["gold".into(), "silver".into()] };
        assert!(fits(&e, &ty(PgKind::Enum { labels: vec!["silver".into(), "gold".into(), "x".into()] })));
        assert!(!fits(&e, &ty(PgKind::Enum { labels: vec!["gold".into()] })));
        assert!(fits(&e, &ty(PgKind::Varchar { max: Some(6) })));
        assert!(!fits(&e, &ty(PgKind::Varchar { max: Some(5) })));
        let other = DataType::Other { name: "time(3) with time zone".into() };
        let mut t = ty(PgKind::Other);
        t.display = "time(3) with  time zone".into();
        assert!(fits(&other, &t));
    }
}
