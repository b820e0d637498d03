//! # Types
//!
//! PostgreSQL types to portable [`DataType`]s, and values in PostgreSQL's text format to [`Value`]s. Both
//! the initial load (simple-protocol queries) and the stream (`pgoutput` without the `binary` option) get
//! every value as its type's text output, under fixed session settings (`DateStyle = ISO, YMD`,
//! `IntervalStyle = iso_8601`, `TimeZone = UTC`, `extra_float_digits = 3`, `bytea_output = hex`), so one
//! parser serves both and the two paths agree value for value. Text output is exact for every type read
//! here: numerics keep all their digits, floats print the shortest text that reads back to the same bits,
//! timestamps keep their microseconds.
//!
//! The rules are listed in `docs/type-mapping.md`, section "From PostgreSQL". In short: domains are their
//! base type (the domain name stays in `source_type`), enums carry their labels, arrays carry their
//! elements, and a type without a mapping is carried as its text with [`DataType::Other`].
//!
//! # Errors
//! A value the portable types cannot hold exactly is refused with an [`ErrorKind::Unsupported`] error that
//! names the table, the column and the value: numeric `NaN` and `±Infinity`, infinite or BC dates and
//! timestamps, years after 9999, arrays with non-default bounds. Nothing is rounded, clamped or nulled.

use super::classify;
use crate::config::ConnectionConfig;
use idaas_core::value::{timestamp_to_utc, utc_to_timestamp};
use idaas_core::{Charset, ColumnSchema, DataType, Date, DateTime, Error, ErrorKind, Result, Time, Value};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use tokio_postgres::Client;

/// Largest value PostgreSQL stores in one field (1 GB − 1), the size limit of `text` and `bytea`.
pub const MAX_FIELD_BYTES: u64 = 1_073_741_823;

/// How a column's values are read: the built-in type behind the column (after resolving domains).
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
    /// `oid` (unsigned 32-bit).
    Oid,
    /// `numeric`.
    Numeric,
    /// `real`.
    Float4,
    /// `double precision`.
    Float8,
    /// `text`, `character varying`, `character`, `name`.
    Text,
    /// `bytea`.
    Bytea,
    /// `date`.
    Date,
    /// `time without time zone`.
    Time,
    /// `time with time zone`, carried as text.
    TimeTz,
    /// `timestamp without time zone`.
    Timestamp,
    /// `timestamp with time zone`.
    TimestampTz,
    /// `interval`, carried as ISO 8601 text.
    Interval,
    /// `uuid`.
    Uuid,
    /// `json` and `jsonb`.
    Json,
    /// An enum type.
    Enum,
    /// `bit(n)` with n ≤ 64.
    Bit(u8),
    /// An array of `element`; `delimiter` separates elements in the text form.
    Array {
        /// The element type.
        element: Box<PgType>,
        /// The element type's delimiter (`,` for every type but `box`).
        delimiter: char,
    },
    /// Anything else: carried as its text output.
    Other,
}

/// A resolved column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgType {
    /// How values are read.
    pub kind: PgKind,
    /// The portable type.
    pub data_type: DataType,
    /// `format_type(oid, typmod)`: the declaration as PostgreSQL prints it (the domain name for a domain).
    pub name: String,
    /// The type's array delimiter.
    pub delimiter: char,
}

/// The portable character set of a PostgreSQL server encoding. Text always reaches us as UTF-8
/// (`client_encoding = UTF8`); the character set tells a target what the source could hold.
pub fn charset_of_encoding(encoding: &str) -> Charset {
    match encoding.to_ascii_uppercase().as_str() {
        "UTF8" => Charset::Utf8,
        "LATIN1" => Charset::Latin1,
        "SQL_ASCII" => Charset::Ascii,
        _ => Charset::Other,
    }
}

/// Maps a built-in type (by its name in `pg_catalog`) and type modifier to its kind and portable type.
pub fn builtin(typname: &str, typmod: i32, charset: Charset) -> Option<(PgKind, DataType)> {
    let fsp = if typmod < 0 { 6 } else { typmod.min(6) as u8 };
    let len = if typmod >= 4 { Some((typmod - 4) as u32) } else { None };
    Some(match typname {
        "bool" => (PgKind::Bool, DataType::Bool),
        "int2" => (PgKind::Int2, DataType::Int { bytes: 2, unsigned: false }),
        "int4" => (PgKind::Int4, DataType::Int { bytes: 4, unsigned: false }),
        "int8" => (PgKind::Int8, DataType::Int { bytes: 8, unsigned: false }),
        "oid" => (PgKind::Oid, DataType::Int { bytes: 4, unsigned: true }),
        "numeric" => (PgKind::Numeric, numeric_type(typmod)),
        "float4" => (PgKind::Float4, DataType::Float),
        "float8" => (PgKind::Float8, DataType::Double),
        "varchar" => (
            PgKind::Text,
            match len {
                Some(length) => DataType::Varchar { length, charset },
                None => DataType::Text { max_bytes: MAX_FIELD_BYTES, charset },
            },
        ),
        "bpchar" => (
            PgKind::Text,
            match len {
                Some(length) => DataType::Char { length, charset },
                None => DataType::Text { max_bytes: MAX_FIELD_BYTES, charset },
            },
        ),
        "text" => (PgKind::Text, DataType::Text { max_bytes: MAX_FIELD_BYTES, charset }),
        "name" => (PgKind::Text, DataType::Varchar { length: 63, charset }),
        "bytea" => (PgKind::Bytea, DataType::Blob { max_bytes: MAX_FIELD_BYTES }),
        "date" => (PgKind::Date, DataType::Date),
        "time" => (PgKind::Time, DataType::Time { fsp }),
        "timestamp" => (PgKind::Timestamp, DataType::DateTime { fsp }),
        "timestamptz" => (PgKind::TimestampTz, DataType::Timestamp { fsp }),
        "uuid" => (PgKind::Uuid, DataType::Uuid),
        "json" | "jsonb" => (PgKind::Json, DataType::Json),
        "bit" if (1..=64).contains(&typmod) => {
            (PgKind::Bit(typmod as u8), DataType::Bit { bits: typmod as u8 })
        }
        _ => return None,
    })
}

/// `numeric(p, s)` from its type modifier. An unconstrained `numeric` is `precision: 0, scale: 0` (any
/// precision and scale). A negative scale (`numeric(5,-2)`, PostgreSQL 15) holds integers of `p − s`
/// digits; a scale above the precision (`numeric(3,5)`) holds fractions of `s` digits.
pub fn numeric_type(typmod: i32) -> DataType {
    if typmod < 4 {
        return DataType::Decimal { precision: 0, scale: 0, unsigned: false };
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    let (precision, scale) = if scale < 0 {
        (precision - scale, 0)
    } else if scale > precision {
        (scale, scale)
    } else {
        (precision, scale)
    };
    DataType::Decimal { precision: precision as u32, scale: scale as u32, unsigned: false }
}

/// Resolves type OIDs to [`PgType`]s through the catalog, with a cache.
#[derive(Debug, Default)]
pub struct TypeCache {
    types: HashMap<(u32, i32), PgType>,
    charset: Option<Charset>,
}

impl TypeCache {
    /// An empty cache.
    pub fn new() -> TypeCache {
        TypeCache::default()
    }

    /// The database's character set (read once).
    pub async fn charset(&mut self, client: &Client, cfg: &ConnectionConfig) -> Result<Charset> {
        if let Some(c) = self.charset {
            return Ok(c);
        }
        let row = client
            .query_one(
                "SELECT pg_encoding_to_char(encoding)::text FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .map_err(|e| classify(cfg, e, "read the database encoding"))?;
        let c = charset_of_encoding(&row.get::<_, String>(0));
        self.charset = Some(c);
        Ok(c)
    }

    /// The type of a column declared with type `oid` and modifier `typmod`.
    pub fn resolve<'a>(
        &'a mut self,
        client: &'a Client,
        cfg: &'a ConnectionConfig,
        oid: u32,
        typmod: i32,
    ) -> Pin<Box<dyn Future<Output = Result<PgType>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(t) = self.types.get(&(oid, typmod)) {
                return Ok(t.clone());
            }
            let charset = self.charset(client, cfg).await?;
            let rows = client
                .query(
                    "SELECT t.typtype::text, t.typbasetype, t.typtypmod, t.typelem, t.typcategory::text, \
                     t.typdelim::text, n.nspname::text, t.typname::text, format_type(t.oid, $2::int4) \
                     FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1::oid",
                    &[&oid, &typmod],
                )
                .await
                .map_err(|e| classify(cfg, e, "read a column type"))?;
            let Some(row) = rows.into_iter().next() else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("connection '{}': type {oid} no longer exists", cfg.alias),
                ));
            };
            let typtype: String = row.get(0);
            let basetype: u32 = row.get(1);
            let basetypmod: i32 = row.get(2);
            let elem: u32 = row.get(3);
            let category: String = row.get(4);
            let delimiter = row.get::<_, String>(5).chars().next().unwrap_or(',');
            let nsp: String = row.get(6);
            let typname: String = row.get(7);
            let name: String = row.get(8);
            let other = |name: &str| PgType {
                kind: PgKind::Other,
                data_type: DataType::Other { name: name.to_string() },
                name: name.to_string(),
                delimiter,
            };
            let t = match typtype.as_str() {
                "d" => {
                    let base = self.resolve(client, cfg, basetype, basetypmod).await?;
                    PgType { name, ..base }
                }
                "e" => {
                    let labels = client
                        .query(
                            "SELECT enumlabel::text FROM pg_enum WHERE enumtypid = $1::oid ORDER BY enumsortorder",
                            &[&oid],
                        )
                        .await
                        .map_err(|e| classify(cfg, e, "read enum labels"))?
                        .into_iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect();
                    PgType { kind: PgKind::Enum, data_type: DataType::Enum { labels }, name, delimiter }
                }
                "b" if category == "A" && elem != 0 && typname.starts_with('_') => {
                    let element = self.resolve(client, cfg, elem, typmod).await?;
                    PgType {
                        data_type: DataType::Other { name: name.clone() },
                        name,
                        delimiter,
                        kind: PgKind::Array { delimiter: element.delimiter, element: Box::new(element) },
                    }
                }
                "b" if nsp == "pg_catalog" => match builtin(&typname, typmod, charset) {
                    Some((kind, data_type)) => PgType { kind, data_type, name, delimiter },
                    None => other(&name),
                },
                _ => other(&name),
            };
            self.types.insert((oid, typmod), t.clone());
            Ok(t)
        })
    }
}

fn bad(table: &dyn std::fmt::Display, col: &ColumnSchema, what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("table {table}, column '{}' ({}): {what}", col.name, col.source_type),
    )
}

fn shown(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// Converts a value in PostgreSQL's text format of column `col` (type `ty`) of `table`.
pub fn from_text(
    table: &dyn std::fmt::Display,
    col: &ColumnSchema,
    ty: &PgType,
    text: &str,
) -> Result<Value> {
    parse(&ty.kind, text).map_err(|why| bad(table, col, why))
}

fn parse(kind: &PgKind, s: &str) -> std::result::Result<Value, String> {
    let invalid = |what: &str| format!("'{}' is not a valid {what}", shown(s));
    Ok(match kind {
        PgKind::Bool => match s {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => return Err(invalid("boolean")),
        },
        PgKind::Int2 | PgKind::Int4 | PgKind::Int8 => Value::Int(s.parse().map_err(|_| invalid("integer"))?),
        PgKind::Oid => Value::UInt(s.parse().map_err(|_| invalid("oid"))?),
        PgKind::Numeric => match s {
            "NaN" | "Infinity" | "-Infinity" => {
                return Err(format!(
                    "numeric value '{s}' cannot be carried: decimals are finite numbers; change the value in the \
                     source, or the column to double precision, which holds NaN and Infinity"
                ));
            }
            _ if valid_decimal(s) => Value::Decimal(s.to_string()),
            _ => return Err(invalid("numeric")),
        },
        PgKind::Float4 => Value::Float(match s {
            "NaN" => f32::NAN,
            "Infinity" => f32::INFINITY,
            "-Infinity" => f32::NEG_INFINITY,
            _ => s.parse().map_err(|_| invalid("real"))?,
        }),
        PgKind::Float8 => Value::Double(match s {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => s.parse().map_err(|_| invalid("double precision"))?,
        }),
        PgKind::Text | PgKind::TimeTz | PgKind::Interval | PgKind::Other => Value::Text(s.to_string()),
        PgKind::Json => Value::Json(s.to_string()),
        PgKind::Enum => Value::Enum(s.to_string()),
        PgKind::Bytea => Value::Bytes(parse_bytea(s).ok_or_else(|| invalid("bytea in hex format"))?),
        PgKind::Date => Value::Date(parse_date(s)?),
        PgKind::Time => Value::Time(parse_time(s).ok_or_else(|| invalid("time"))?),
        PgKind::Timestamp => Value::DateTime(parse_datetime(s)?),
        PgKind::TimestampTz => Value::Timestamp(parse_timestamptz(s)?),
        PgKind::Uuid => Value::Uuid(parse_uuid(s).ok_or_else(|| invalid("uuid"))?),
        PgKind::Bit(n) => {
            if s.len() != *n as usize || !s.bytes().all(|b| b == b'0' || b == b'1') {
                return Err(invalid("bit string"));
            }
            Value::Bit(u64::from_str_radix(s, 2).map_err(|_| invalid("bit string"))?)
        }
        PgKind::Array { element, delimiter } => parse_array(s, &element.kind, *delimiter)?,
    })
}

fn valid_decimal(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let mut parts = body.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_bytea(s: &str) -> Option<Vec<u8>> {
    let hex = s.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|p| {
            let h = (p[0] as char).to_digit(16)?;
            let l = (p[1] as char).to_digit(16)?;
            Some((h * 16 + l) as u8)
        })
        .collect()
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        let h = (hex[2 * i] as char).to_digit(16)?;
        let l = (hex[2 * i + 1] as char).to_digit(16)?;
        *b = (h * 16 + l) as u8;
    }
    Some(out)
}

/// Splits a trailing ` BC` off; BC values cannot be carried.
fn no_bc(s: &str) -> std::result::Result<&str, String> {
    match s.strip_suffix(" BC") {
        Some(_) => {
            Err(format!("'{s}' is before the year 1: dates and timestamps before Christ cannot be carried"))
        }
        None => Ok(s),
    }
}

fn no_infinity(s: &str) -> std::result::Result<(), String> {
    if s == "infinity" || s == "-infinity" {
        return Err(format!(
            "'{s}' cannot be carried: targets have no infinite dates or timestamps; replace it in the source \
             with a real value or NULL"
        ));
    }
    Ok(())
}

fn two(s: &str) -> Option<u32> {
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None }
}

/// `YYYY-MM-DD` (ISO DateStyle).
fn parse_date(s: &str) -> std::result::Result<Date, String> {
    no_infinity(s)?;
    let s = no_bc(s)?;
    let invalid = || format!("'{}' is not a valid date", shown(s));
    let mut it = s.rsplitn(3, '-');
    let d = two(it.next().ok_or_else(invalid)?).ok_or_else(invalid)?;
    let m = two(it.next().ok_or_else(invalid)?).ok_or_else(invalid)?;
    let y = it.next().ok_or_else(invalid)?;
    if y.len() < 4 || !y.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let y: u32 = y.parse().map_err(|_| invalid())?;
    if y > 9999 {
        return Err(format!("'{s}' is after the year 9999, which targets cannot hold"));
    }
    Ok(Date { year: y as u16, month: m as u8, day: d as u8 })
}

/// `HH:MM:SS[.ffffff]`.
fn parse_time(s: &str) -> Option<Time> {
    let (hms, frac) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let mut it = hms.split(':');
    let h = two(it.next()?)?;
    let m = two(it.next()?)?;
    let sec = two(it.next()?)?;
    if it.next().is_some() || m > 59 || sec > 60 || h > 24 {
        return None;
    }
    let micros = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<u32>().ok()? * 10u32.pow(6 - f.len() as u32)
        }
        Some(_) => return None,
    };
    Some(Time { negative: false, hours: h, minutes: m as u8, seconds: sec as u8, micros })
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`.
fn parse_datetime(s: &str) -> std::result::Result<DateTime, String> {
    no_infinity(s)?;
    let s = no_bc(s)?;
    let invalid = || format!("'{}' is not a valid timestamp", shown(s));
    let (d, t) = s.split_once(' ').ok_or_else(invalid)?;
    let date = parse_date(d)?;
    let t = parse_time(t).ok_or_else(invalid)?;
    Ok(DateTime { date, hour: t.hours as u8, minute: t.minutes, second: t.seconds, micros: t.micros })
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM[:SS]]` to microseconds since the epoch.
fn parse_timestamptz(s: &str) -> std::result::Result<i64, String> {
    no_infinity(s)?;
    let s = no_bc(s)?;
    let invalid = || format!("'{}' is not a valid timestamp with time zone", shown(s));
    let (d, rest) = s.split_once(' ').ok_or_else(invalid)?;
    let at = rest.rfind(['+', '-']).ok_or_else(invalid)?;
    let (t, off) = rest.split_at(at);
    let sign: i64 = if off.starts_with('-') { -1 } else { 1 };
    let mut parts = off[1..].split(':');
    let mut offset_secs = 0i64;
    for (i, unit) in [3600i64, 60, 1].iter().enumerate() {
        match parts.next() {
            Some(p) => offset_secs += two(p).ok_or_else(invalid)? as i64 * unit,
            None if i > 0 => break,
            None => return Err(invalid()),
        }
    }
    let date = parse_date(d)?;
    let t = parse_time(t).ok_or_else(invalid)?;
    let local = DateTime { date, hour: 0, minute: 0, second: 0, micros: 0 };
    let micros = utc_to_timestamp(&local)
        + (t.hours as i64 * 3600 + t.minutes as i64 * 60 + t.seconds as i64) * 1_000_000
        + t.micros as i64;
    Ok(micros - sign * offset_secs * 1_000_000)
}

/// Parses an array literal `{a,"b c",NULL,{1,2}}` into nested [`Value::Array`]s.
fn parse_array(s: &str, element: &PgKind, delimiter: char) -> std::result::Result<Value, String> {
    if s.starts_with('[') {
        return Err(format!(
            "the array '{}' has lower bounds other than 1, which targets cannot keep",
            shown(s)
        ));
    }
    let chars: Vec<char> = s.chars().collect();
    let mut pos = 0;
    let v = array_level(&chars, &mut pos, element, delimiter)
        .ok_or_else(|| format!("'{}' is not a valid array", shown(s)))??;
    if pos != chars.len() {
        return Err(format!("'{}' is not a valid array", shown(s)));
    }
    Ok(v)
}

type Nested = Option<std::result::Result<Value, String>>;

fn array_level(c: &[char], pos: &mut usize, element: &PgKind, delim: char) -> Nested {
    if c.get(*pos) != Some(&'{') {
        return None;
    }
    *pos += 1;
    let mut items = Vec::new();
    if c.get(*pos) == Some(&'}') {
        *pos += 1;
        return Some(Ok(Value::Array(items)));
    }
    loop {
        match c.get(*pos)? {
            '{' => match array_level(c, pos, element, delim)? {
                Ok(v) => items.push(v),
                Err(e) => return Some(Err(e)),
            },
            '"' => {
                *pos += 1;
                let mut s = String::new();
                loop {
                    match *c.get(*pos)? {
                        '\\' => {
                            s.push(*c.get(*pos + 1)?);
                            *pos += 2;
                        }
                        '"' => {
                            *pos += 1;
                            break;
                        }
                        ch => {
                            s.push(ch);
                            *pos += 1;
                        }
                    }
                }
                match parse(element, &s) {
                    Ok(v) => items.push(v),
                    Err(e) => return Some(Err(e)),
                }
            }
            _ => {
                let start = *pos;
                while let Some(ch) = c.get(*pos) {
                    if *ch == delim || *ch == '}' {
                        break;
                    }
                    *pos += 1;
                }
                let s: String = c[start..*pos].iter().collect();
                let s = s.trim();
                if s.is_empty() {
                    return None;
                }
                if s == "NULL" {
                    items.push(Value::Null);
                } else {
                    match parse(element, s) {
                        Ok(v) => items.push(v),
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
        match c.get(*pos)? {
            '}' => {
                *pos += 1;
                return Some(Ok(Value::Array(items)));
            }
            ch if *ch == delim => *pos += 1,
            _ => return None,
        }
    }
}

/// The text form of a value for a column of type `ty`, to be cast back with `'...'::type`; `None` for
/// NULL. Used for keyset conditions, so it must read back to the same value.
pub fn to_text(value: &Value, ty: &PgType) -> std::result::Result<Option<String>, String> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => if *b { "t" } else { "f" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => float_text(*f as f64, f.is_nan(), || f.to_string()),
        Value::Double(f) => float_text(*f, f.is_nan(), || f.to_string()),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) | Value::Enum(s) => s.clone(),
        Value::Bytes(b) => {
            let mut s = String::with_capacity(2 + 2 * b.len());
            s.push_str("\\x");
            for x in b {
                s.push_str(&format!("{x:02x}"));
            }
            s
        }
        Value::Date(d) => d.to_string(),
        Value::Time(t) => t.to_string(),
        Value::DateTime(dt) => dt.to_string(),
        Value::Timestamp(us) => format!("{}+00", timestamp_to_utc(*us)),
        Value::Uuid(u) => {
            let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
        }
        Value::Bit(v) => match ty.kind {
            PgKind::Bit(n) => format!("{v:0width$b}", width = n as usize),
            _ => format!("{v:b}"),
        },
        Value::Array(items) => {
            let element = match &ty.kind {
                PgKind::Array { element, .. } => element.as_ref().clone(),
                _ => ty.clone(),
            };
            array_text(items, &element)?
        }
        Value::Set(_) | Value::Year(_) | Value::ZeroTimestamp | Value::Unchanged => {
            return Err(format!("a {} value has no PostgreSQL text form", value.kind()));
        }
    }))
}

fn float_text(f: f64, nan: bool, text: impl Fn() -> String) -> String {
    if nan {
        "NaN".into()
    } else if f == f64::INFINITY {
        "Infinity".into()
    } else if f == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        text()
    }
}

fn array_text(items: &[Value], element: &PgType) -> std::result::Result<String, String> {
    let mut out = String::from("{");
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(element.delimiter);
        }
        match v {
            Value::Array(inner) => out.push_str(&array_text(inner, element)?),
            v => match to_text(v, element)? {
                None => out.push_str("NULL"),
                Some(s) => {
                    out.push('"');
                    for ch in s.chars() {
                        if ch == '"' || ch == '\\' {
                            out.push('\\');
                        }
                        out.push(ch);
                    }
                    out.push('"');
                }
            },
        }
    }
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(kind: PgKind) -> PgType {
        PgType { kind, data_type: DataType::Other { name: "t".into() }, name: "t".into(), delimiter: ',' }
    }

    fn col() -> ColumnSchema {
        ColumnSchema {
            name: "c".into(),
            data_type: DataType::Other { name: "t".into() },
            source_type: "t".into(),
            nullable: true,
            default: None,
            collation: None,
        }
    }

    fn p(kind: PgKind, s: &str) -> std::result::Result<Value, String> {
        parse(&kind, s)
    }

    #[test]
    fn numerics_stay_exact_and_refuse_nan() {
        assert_eq!(
            p(PgKind::Numeric, "-123456789012345678901234567890.000000000000000000000001").unwrap(),
            Value::Decimal("-123456789012345678901234567890.000000000000000000000001".into())
        );
        for s in ["NaN", "Infinity", "-Infinity"] {
            let e = from_text(&"s.t", &col(), &ty(PgKind::Numeric), s).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unsupported);
            assert!(e.message.contains("table s.t, column 'c'") && e.message.contains(s), "{}", e.message);
        }
        assert!(p(PgKind::Numeric, "1e5").is_err());
        assert_eq!(numeric_type(-1), DataType::Decimal { precision: 0, scale: 0, unsigned: false });
        assert_eq!(
            numeric_type((12 << 16 | 2) + 4),
            DataType::Decimal { precision: 12, scale: 2, unsigned: false }
        );
        // numeric(5,-2): scale -2 is stored in 11 bits.
        assert_eq!(
            numeric_type((5 << 16 | (0x7ff & -2i32)) + 4),
            DataType::Decimal { precision: 7, scale: 0, unsigned: false }
        );
        assert_eq!(
            numeric_type((3 << 16 | 5) + 4),
            DataType::Decimal { precision: 5, scale: 5, unsigned: false }
        );
    }

    #[test]
    fn floats_keep_their_bits() {
        assert_eq!(p(PgKind::Float8, "0.1").unwrap(), Value::Double(0.1));
        assert_eq!(p(PgKind::Float8, "1.7976931348623157e+308").unwrap(), Value::Double(f64::MAX));
        assert_eq!(p(PgKind::Float8, "5e-324").unwrap(), Value::Double(5e-324));
        assert_eq!(p(PgKind::Float4, "3.4028235e+38").unwrap(), Value::Float(f32::MAX));
        assert!(matches!(p(PgKind::Float8, "NaN").unwrap(), Value::Double(f) if f.is_nan()));
        assert_eq!(p(PgKind::Float8, "-Infinity").unwrap(), Value::Double(f64::NEG_INFINITY));
        assert_eq!(p(PgKind::Float4, "Infinity").unwrap(), Value::Float(f32::INFINITY));
        for f in [0.1f64, 1e300, -2.5e-300, 123456.789] {
            let t = to_text(&Value::Double(f), &ty(PgKind::Float8)).unwrap().unwrap();
            assert_eq!(p(PgKind::Float8, &t).unwrap(), Value::Double(f));
        }
    }

    #[test]
    fn dates_and_times_parse() {
        assert_eq!(
            p(PgKind::Date, "2024-02-29").unwrap(),
            Value::Date(Date { year: 2024, month: 2, day: 29 })
        );
        assert_eq!(p(PgKind::Date, "0001-01-01").unwrap(), Value::Date(Date { year: 1, month: 1, day: 1 }));
        assert!(p(PgKind::Date, "0044-03-15 BC").unwrap_err().contains("before Christ"));
        assert!(p(PgKind::Date, "infinity").unwrap_err().contains("infinite"));
        assert!(p(PgKind::Date, "12345-01-01").unwrap_err().contains("9999"));
        assert_eq!(
            p(PgKind::Time, "24:00:00").unwrap(),
            Value::Time(Time { negative: false, hours: 24, minutes: 0, seconds: 0, micros: 0 })
        );
        assert_eq!(
            p(PgKind::Time, "13:45:01.5").unwrap(),
            Value::Time(Time { negative: false, hours: 13, minutes: 45, seconds: 1, micros: 500_000 })
        );
        assert_eq!(
            p(PgKind::Timestamp, "1999-12-31 23:59:59.000001").unwrap(),
            Value::DateTime(DateTime {
                date: Date { year: 1999, month: 12, day: 31 },
                hour: 23,
                minute: 59,
                second: 59,
                micros: 1
            })
        );
        assert!(p(PgKind::Timestamp, "-infinity").is_err());
        assert_eq!(p(PgKind::TimestampTz, "1970-01-01 00:00:00+00").unwrap(), Value::Timestamp(0));
        assert_eq!(p(PgKind::TimestampTz, "1970-01-01 01:00:00.25+01").unwrap(), Value::Timestamp(250_000));
        assert_eq!(
            p(PgKind::TimestampTz, "1970-01-01 00:00:00-05:30").unwrap(),
            Value::Timestamp(19_800_000_000)
        );
        assert_eq!(p(PgKind::TimestampTz, "1969-12-31 23:59:59.999999+00").unwrap(), Value::Timestamp(-1));
        assert_eq!(
            p(PgKind::TimestampTz, "1900-01-01 00:00:00+00:09:21").unwrap(),
            Value::Timestamp(-2_208_988_800_000_000 - 561_000_000)
        );
        let ts = Value::Timestamp(1_700_000_000_123_456);
        let t = to_text(&ts, &ty(PgKind::TimestampTz)).unwrap().unwrap();
        assert_eq!(t, "2023-11-14 22:13:20.123456+00");
        assert_eq!(p(PgKind::TimestampTz, &t).unwrap(), ts);
    }

    #[test]
    fn bytes_uuids_bits_and_booleans() {
        assert_eq!(p(PgKind::Bytea, "\\x00ff10").unwrap(), Value::Bytes(vec![0, 255, 16]));
        assert_eq!(p(PgKind::Bytea, "\\x").unwrap(), Value::Bytes(vec![]));
        assert!(p(PgKind::Bytea, "abc").is_err());
        let u = p(PgKind::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(to_text(&u, &ty(PgKind::Uuid)).unwrap().unwrap(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert_eq!(p(PgKind::Bit(4), "0101").unwrap(), Value::Bit(5));
        assert_eq!(to_text(&Value::Bit(5), &ty(PgKind::Bit(4))).unwrap().unwrap(), "0101");
        assert!(p(PgKind::Bit(4), "101").is_err());
        assert_eq!(p(PgKind::Bool, "t").unwrap(), Value::Bool(true));
    }

    #[test]
    fn arrays_parse_nested_quoted_and_null() {
        let int = PgKind::Array { element: Box::new(ty(PgKind::Int4)), delimiter: ',' };
        assert_eq!(
            p(int.clone(), "{{1,2},{3,NULL}}").unwrap(),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![Value::Int(3), Value::Null]),
            ])
        );
        assert_eq!(p(int.clone(), "{}").unwrap(), Value::Array(vec![]));
        assert!(p(int.clone(), "[0:1]={1,2}").unwrap_err().contains("lower bounds"));
        assert!(p(int, "{1,2").is_err());
        let text = PgKind::Array { element: Box::new(ty(PgKind::Text)), delimiter: ',' };
        let v = p(text.clone(), r#"{plain,"with space","quote \" and \\ slash","NULL",NULL,"{x}"}"#).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Text("plain".into()),
                Value::Text("with space".into()),
                Value::Text(r#"quote " and \ slash"#.into()),
                Value::Text("NULL".into()),
                Value::Null,
                Value::Text("{x}".into()),
            ])
        );
        let array_ty = ty(text.clone());
        let back = to_text(&v, &array_ty).unwrap().unwrap();
        assert_eq!(p(text, &back).unwrap(), v);
        let boxes = PgKind::Array { element: Box::new(ty(PgKind::Other)), delimiter: ';' };
        assert_eq!(
            p(boxes, "{(1,1),(0,0);(2,2),(1,1)}").unwrap(),
            Value::Array(vec![Value::Text("(1,1),(0,0)".into()), Value::Text("(2,2),(1,1)".into())])
        );
    }

    #[test]
    fn builtin_types_map() {
        let u = Charset::Utf8;
        assert_eq!(builtin("varchar", 24, u).unwrap().1, DataType::Varchar { length: 20, charset: u });
        assert_eq!(
            builtin("varchar", -1, u).unwrap().1,
            DataType::Text { max_bytes: MAX_FIELD_BYTES, charset: u }
        );
        assert_eq!(builtin("bpchar", 5, u).unwrap().1, DataType::Char { length: 1, charset: u });
        assert_eq!(builtin("timestamptz", 3, u).unwrap().1, DataType::Timestamp { fsp: 3 });
        assert_eq!(builtin("timestamp", -1, u).unwrap().1, DataType::DateTime { fsp: 6 });
        assert_eq!(builtin("bit", 8, u).unwrap().1, DataType::Bit { bits: 8 });
        assert!(builtin("bit", 100, u).is_none());
        assert!(builtin("inet", -1, u).is_none());
        assert_eq!(charset_of_encoding("UTF8"), Charset::Utf8);
        assert_eq!(charset_of_encoding("WIN1251"), Charset::Other);
    }
}
