//! # Types
//!
//! Conversions between MySQL's wire values (binlog rows and binary-protocol result sets) and [`Value`], and
//! the column declarations AutoCreate writes. The rules are listed in `docs/type-mapping.md`.
//!
//! # Errors
//! A value that does not fit its column's declared type (a corrupt event, an unknown character set) is an
//! [`ErrorKind::Unsupported`] error naming the table and column; nothing is guessed.

use super::quote_ident;
use idaas_core::value::{timestamp_to_utc, utc_to_timestamp};
use idaas_core::{Charset, ColumnSchema, DataType, Date, DateTime, Error, ErrorKind, Result, Time, Value};
use mysql_async::Value as MyValue;
use mysql_async::binlog::value::BinlogValue;

fn bad(table: &str, col: &ColumnSchema, what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("table {table}, column '{}' ({}): {what}", col.name, col.source_type),
    )
}

/// Decodes text bytes in the column's character set.
pub fn decode_text(table: &str, col: &ColumnSchema, charset: Charset, bytes: Vec<u8>) -> Result<String> {
    match charset {
        Charset::Utf8 | Charset::Ascii => String::from_utf8(bytes)
            .map_err(|_| bad(table, col, "the binlog holds bytes that are not valid UTF-8 for this column")),
        Charset::Latin1 => Ok(bytes.into_iter().map(cp1252).collect()),
        Charset::Other => Err(bad(
            table,
            col,
            "character sets other than utf8mb4, utf8mb3, latin1 and ascii cannot be decoded from the binlog; \
             convert the column to utf8mb4",
        )),
    }
}

/// MySQL's `latin1` is Windows-1252; its five unassigned bytes map to the C1 controls, as MySQL does.
fn cp1252(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
        0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
        0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
    ];
    if (0x80..0xA0).contains(&b) {
        char::from_u32(HIGH[(b - 0x80) as usize] as u32).unwrap_or('\u{FFFD}')
    } else {
        b as char
    }
}

fn charset_of(dt: &DataType) -> Charset {
    match dt {
        DataType::Char { charset, .. }
        | DataType::Varchar { charset, .. }
        | DataType::Text { charset, .. } => *charset,
        _ => Charset::Utf8,
    }
}

fn int_value(col: &ColumnSchema, table: &str, v: &MyValue) -> Result<Value> {
    let (bytes, unsigned) = match &col.data_type {
        DataType::Int { bytes, unsigned } => (*bytes, *unsigned),
        _ => (8, false),
    };
    let raw: i128 = match v {
        MyValue::Int(i) => *i as i128,
        MyValue::UInt(u) => *u as i128,
        MyValue::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<i128>().ok())
            .ok_or_else(|| bad(table, col, "not an integer"))?,
        _ => return Err(bad(table, col, "not an integer")),
    };
    if unsigned {
        let mask: u128 = if bytes >= 8 { u64::MAX as u128 } else { (1u128 << (bytes as u32 * 8)) - 1 };
        Ok(Value::UInt(((raw as u128) & mask) as u64))
    } else if bytes >= 8 {
        Ok(Value::Int(raw as i64))
    } else {
        // The binlog does not say whether a column is signed: sign-extend from the column's width.
        let bits = bytes as u32 * 8;
        let v = ((raw as i64) << (64 - bits)) >> (64 - bits);
        Ok(Value::Int(v))
    }
}

fn bytes_to_u64(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64)
}

fn time_value(neg: bool, days: u32, h: u8, m: u8, s: u8, us: u32) -> Value {
    Value::Time(Time { negative: neg, hours: days * 24 + h as u32, minutes: m, seconds: s, micros: us })
}

fn datetime_value(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> DateTime {
    DateTime { date: Date { year: y, month: mo, day: d }, hour: h, minute: mi, second: s, micros: us }
}

/// Converts a binary-protocol result value (snapshot reads) of column `col`.
pub fn from_query(table: &str, col: &ColumnSchema, v: MyValue) -> Result<Value> {
    if v == MyValue::NULL {
        return Ok(Value::Null);
    }
    let text = |b: Vec<u8>| -> Result<String> {
        String::from_utf8(b).map_err(|_| bad(table, col, "the server returned text that is not UTF-8"))
    };
    Ok(match (&col.data_type, v) {
        (DataType::Int { .. } | DataType::Bool, v) => int_value(col, table, &v)?,
        (DataType::Float, MyValue::Float(f)) => Value::Float(f),
        (DataType::Float, MyValue::Double(f)) => Value::Float(f as f32),
        (DataType::Double, MyValue::Double(f)) => Value::Double(f),
        (DataType::Double, MyValue::Float(f)) => Value::Double(f as f64),
        (DataType::Decimal { .. }, MyValue::Bytes(b)) => Value::Decimal(text(b)?),
        (DataType::Char { .. } | DataType::Varchar { .. } | DataType::Text { .. }, MyValue::Bytes(b)) => {
            Value::Text(text(b)?)
        }
        (DataType::Binary { .. } | DataType::Varbinary { .. } | DataType::Blob { .. }, MyValue::Bytes(b)) => {
            Value::Bytes(b)
        }
        (DataType::Date, MyValue::Date(y, m, d, ..)) => Value::Date(Date { year: y, month: m, day: d }),
        (DataType::DateTime { .. }, MyValue::Date(y, mo, d, h, mi, s, us)) => {
            Value::DateTime(datetime_value(y, mo, d, h, mi, s, us))
        }
        (DataType::Timestamp { .. }, MyValue::Date(y, mo, d, h, mi, s, us)) => {
            let dt = datetime_value(y, mo, d, h, mi, s, us);
            if dt.date.is_zero() { Value::ZeroTimestamp } else { Value::Timestamp(utc_to_timestamp(&dt)) }
        }
        (DataType::Time { .. }, MyValue::Time(neg, days, h, m, s, us)) => time_value(neg, days, h, m, s, us),
        (DataType::Year, MyValue::Int(y)) => Value::Year(y as u16),
        (DataType::Year, MyValue::UInt(y)) => Value::Year(y as u16),
        (DataType::Year, MyValue::Bytes(b)) => {
            Value::Year(text(b)?.parse().map_err(|_| bad(table, col, "not a year"))?)
        }
        (DataType::Enum { .. }, MyValue::Bytes(b)) => Value::Enum(text(b)?),
        (DataType::Set { .. }, MyValue::Bytes(b)) => {
            let s = text(b)?;
            Value::Set(if s.is_empty() { Vec::new() } else { s.split(',').map(str::to_string).collect() })
        }
        (DataType::Bit { .. }, MyValue::Bytes(b)) => Value::Bit(bytes_to_u64(&b)),
        (DataType::Bit { .. }, MyValue::Int(i)) => Value::Bit(i as u64),
        (DataType::Bit { .. }, MyValue::UInt(u)) => Value::Bit(u),
        (DataType::Json, MyValue::Bytes(b)) => Value::Json(text(b)?),
        (DataType::Uuid, MyValue::Bytes(b)) => Value::Text(text(b)?),
        (DataType::Other { .. }, MyValue::Bytes(b)) => Value::Bytes(b),
        (_, other) => {
            return Err(bad(table, col, &format!("unexpected wire value {other:?} for this column type")));
        }
    })
}

/// Converts a binlog row value of column `col`. `None` (column not in the image) is an error: the source
/// requires `binlog_row_image=FULL`.
pub fn from_binlog(table: &str, col: &ColumnSchema, v: Option<&BinlogValue<'_>>) -> Result<Value> {
    let v = match v {
        None => {
            return Err(bad(
                table,
                col,
                "missing from the row image; set binlog_row_image=FULL on the source",
            ));
        }
        Some(BinlogValue::Value(v)) => v.clone(),
        Some(BinlogValue::Jsonb(j)) => {
            let json = serde_json::Value::try_from(j.clone())
                .map_err(|_| bad(table, col, "cannot decode MySQL binary JSON"))?;
            return Ok(Value::Json(json.to_string()));
        }
        Some(BinlogValue::JsonDiff(_)) => {
            return Err(bad(
                table,
                col,
                "partial JSON updates need binlog_row_value_options='' on the source",
            ));
        }
    };
    if v == MyValue::NULL {
        return Ok(Value::Null);
    }
    Ok(match (&col.data_type, v) {
        (DataType::Int { .. } | DataType::Bool, v) => int_value(col, table, &v)?,
        (DataType::Float, MyValue::Float(f)) => Value::Float(f),
        (DataType::Double, MyValue::Double(f)) => Value::Double(f),
        (DataType::Decimal { .. }, MyValue::Bytes(b)) => {
            Value::Decimal(String::from_utf8(b).map_err(|_| bad(table, col, "bad decimal"))?)
        }
        (
            dt @ (DataType::Char { .. } | DataType::Varchar { .. } | DataType::Text { .. }),
            MyValue::Bytes(b),
        ) => Value::Text(decode_text(table, col, charset_of(dt), b)?),
        (DataType::Binary { length }, MyValue::Bytes(mut b)) => {
            // The binlog strips BINARY(n)'s trailing zero padding; the column holds it.
            if b.len() < *length as usize {
                b.resize(*length as usize, 0);
            }
            Value::Bytes(b)
        }
        (DataType::Varbinary { .. } | DataType::Blob { .. } | DataType::Other { .. }, MyValue::Bytes(b)) => {
            Value::Bytes(b)
        }
        (DataType::Date, MyValue::Date(y, m, d, ..)) => Value::Date(Date { year: y, month: m, day: d }),
        (DataType::DateTime { .. }, MyValue::Date(y, mo, d, h, mi, s, us)) => {
            Value::DateTime(datetime_value(y, mo, d, h, mi, s, us))
        }
        (DataType::Timestamp { .. }, MyValue::Bytes(b)) => {
            let s = String::from_utf8(b).map_err(|_| bad(table, col, "bad timestamp"))?;
            let (secs, frac) = s.split_once('.').unwrap_or((&s, "0"));
            let secs: i64 = secs.parse().map_err(|_| bad(table, col, "bad timestamp"))?;
            let us: i64 = frac.parse().map_err(|_| bad(table, col, "bad timestamp"))?;
            if secs == 0 && us == 0 { Value::ZeroTimestamp } else { Value::Timestamp(secs * 1_000_000 + us) }
        }
        (DataType::Timestamp { .. }, MyValue::Int(secs)) => {
            if secs == 0 {
                Value::ZeroTimestamp
            } else {
                Value::Timestamp(secs * 1_000_000)
            }
        }
        (DataType::Time { .. }, MyValue::Time(neg, days, h, m, s, us)) => time_value(neg, days, h, m, s, us),
        (DataType::Year, MyValue::Bytes(b)) => {
            let y: u16 = String::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(table, col, "bad year"))?;
            // The binlog stores YEAR as year - 1900 with 0 for the zero year.
            Value::Year(if y == 1900 { 0 } else { y })
        }
        (DataType::Enum { labels }, MyValue::Int(i)) => {
            if i == 0 {
                Value::Enum(String::new())
            } else {
                Value::Enum(
                    labels
                        .get(i as usize - 1)
                        .cloned()
                        .ok_or_else(|| bad(table, col, "enum index out of range"))?,
                )
            }
        }
        (DataType::Set { members }, MyValue::Bytes(b)) => {
            let mut bits: u64 = 0;
            for (i, byte) in b.iter().enumerate() {
                bits |= (*byte as u64) << (8 * i);
            }
            Value::Set(
                members
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1u64 << i) != 0)
                    .map(|(_, m)| m.clone())
                    .collect(),
            )
        }
        (DataType::Bit { .. }, MyValue::Bytes(b)) => Value::Bit(bytes_to_u64(&b)),
        (DataType::Json, MyValue::Bytes(b)) => {
            Value::Json(String::from_utf8(b).map_err(|_| bad(table, col, "JSON text is not UTF-8"))?)
        }
        (DataType::Uuid, MyValue::Bytes(b)) => {
            Value::Text(String::from_utf8(b).map_err(|_| bad(table, col, "bad uuid"))?)
        }
        (_, other) => {
            return Err(bad(table, col, &format!("unexpected binlog value {other:?} for this column type")));
        }
    })
}

/// Converts a value to a statement parameter for a column of the target.
pub fn to_param(v: &Value) -> MyValue {
    match v {
        Value::Null => MyValue::NULL,
        Value::Bool(b) => MyValue::Int(*b as i64),
        Value::Int(i) => MyValue::Int(*i),
        Value::UInt(u) => MyValue::UInt(*u),
        Value::Float(f) => MyValue::Float(*f),
        Value::Double(f) => MyValue::Double(*f),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) | Value::Enum(s) => {
            MyValue::Bytes(s.as_bytes().to_vec())
        }
        Value::Bytes(b) => MyValue::Bytes(b.clone()),
        Value::Date(d) => MyValue::Date(d.year, d.month, d.day, 0, 0, 0, 0),
        Value::Time(t) => {
            MyValue::Time(t.negative, t.hours / 24, (t.hours % 24) as u8, t.minutes, t.seconds, t.micros)
        }
        Value::DateTime(dt) => {
            MyValue::Date(dt.date.year, dt.date.month, dt.date.day, dt.hour, dt.minute, dt.second, dt.micros)
        }
        Value::Timestamp(us) => {
            let dt = timestamp_to_utc(*us);
            MyValue::Date(dt.date.year, dt.date.month, dt.date.day, dt.hour, dt.minute, dt.second, dt.micros)
        }
        Value::ZeroTimestamp => MyValue::Date(0, 0, 0, 0, 0, 0, 0),
        Value::Year(y) => MyValue::UInt(*y as u64),
        Value::Set(members) => MyValue::Bytes(members.join(",").into_bytes()),
        Value::Bit(b) => MyValue::UInt(*b),
        Value::Uuid(u) => MyValue::Bytes(format_uuid(u).into_bytes()),
        // Never encoded: sinks write unchanged columns by leaving them out (a patch) and refuse upserts
        // that hold one.
        Value::Unchanged => MyValue::NULL,
        Value::Array(_) => MyValue::Bytes(v.to_plain_json().to_string().into_bytes()),
    }
}

/// Hyphenated lowercase UUID text.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn charset_clause(c: Charset, collation: Option<&str>) -> String {
    // The source's collation decides which key values are equal; copy it (its prefix names the charset).
    if let Some(coll) = collation
        && let Some((cs, _)) = coll.split_once('_')
        && coll.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    {
        return format!(" CHARACTER SET {cs} COLLATE {coll}");
    }
    match c {
        Charset::Latin1 => " CHARACTER SET latin1".into(),
        Charset::Ascii => " CHARACTER SET ascii".into(),
        _ => " CHARACTER SET utf8mb4".into(),
    }
}

fn quote_label(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The MySQL column type AutoCreate declares for a source column (`docs/type-mapping.md`).
pub fn ddl_type(table: &str, col: &ColumnSchema) -> Result<String> {
    Ok(match &col.data_type {
        DataType::Bool => "TINYINT(1)".into(),
        DataType::Int { bytes, unsigned } => {
            let base = match bytes {
                1 => "TINYINT",
                2 => "SMALLINT",
                3 => "MEDIUMINT",
                4 => "INT",
                _ => "BIGINT",
            };
            if *unsigned { format!("{base} UNSIGNED") } else { base.to_string() }
        }
        // An unconstrained PostgreSQL numeric: the widest MySQL decimal; values that do not fit are refused
        // when written.
        DataType::Decimal { precision: 0, scale: 0, .. } => "DECIMAL(65,30)".into(),
        DataType::Decimal { precision, scale, unsigned } => {
            if *precision > 65 || *scale > 38 {
                return Err(bad(
                    table,
                    col,
                    "DECIMAL precision above 65 or scale above 38 cannot be held by MySQL; create the target \
                     table yourself with a type that fits",
                ));
            }
            format!("DECIMAL({precision},{scale}){}", if *unsigned { " UNSIGNED" } else { "" })
        }
        DataType::Float => "FLOAT".into(),
        DataType::Double => "DOUBLE".into(),
        DataType::Char { length, charset } => {
            format!("CHAR({length}){}", charset_clause(*charset, col.collation.as_deref()))
        }
        DataType::Varchar { length, charset } => {
            format!("VARCHAR({length}){}", charset_clause(*charset, col.collation.as_deref()))
        }
        DataType::Text { max_bytes, charset } => format!(
            "{}{}",
            match max_bytes {
                0..=255 => "TINYTEXT",
                256..=65_535 => "TEXT",
                65_536..=16_777_215 => "MEDIUMTEXT",
                _ => "LONGTEXT",
            },
            charset_clause(*charset, col.collation.as_deref())
        ),
        DataType::Binary { length } => format!("BINARY({length})"),
        DataType::Varbinary { length } => format!("VARBINARY({length})"),
        DataType::Blob { max_bytes } => match max_bytes {
            0..=255 => "TINYBLOB",
            256..=65_535 => "BLOB",
            65_536..=16_777_215 => "MEDIUMBLOB",
            _ => "LONGBLOB",
        }
        .into(),
        DataType::Date => "DATE".into(),
        DataType::Time { fsp } => format!("TIME({fsp})"),
        DataType::DateTime { fsp } => format!("DATETIME({fsp})"),
        DataType::Timestamp { fsp } => format!("TIMESTAMP({fsp})"),
        DataType::Year => "YEAR".into(),
        DataType::Enum { labels } => {
            format!("ENUM({})", labels.iter().map(|l| quote_label(l)).collect::<Vec<_>>().join(","))
        }
        DataType::Set { members } => {
            format!("SET({})", members.iter().map(|l| quote_label(l)).collect::<Vec<_>>().join(","))
        }
        DataType::Bit { bits } => format!("BIT({bits})"),
        DataType::Json => "JSON".into(),
        DataType::Uuid => "CHAR(36) CHARACTER SET ascii".into(),
        // PostgreSQL arrays become JSON arrays; other types without a MySQL counterpart keep their exact
        // text form (interval, timetz, geometric types, ...).
        DataType::Other { name } if name.ends_with("[]") => "JSON".into(),
        DataType::Other { .. } => "LONGTEXT CHARACTER SET utf8mb4".into(),
    })
}

/// The full column definition AutoCreate writes: name, type, nullability. `TIMESTAMP` columns get an
/// explicit `NULL`/`NOT NULL DEFAULT` so the server adds no automatic initialisation or update.
pub fn column_def(table: &str, col: &ColumnSchema) -> Result<String> {
    let ty = ddl_type(table, col)?;
    let null = match (&col.data_type, col.nullable) {
        (DataType::Timestamp { .. }, true) => " NULL DEFAULT NULL",
        (DataType::Timestamp { .. }, false) => " NOT NULL DEFAULT '1970-01-01 00:00:01'",
        (_, true) => " NULL",
        (_, false) => " NOT NULL",
    };
    Ok(format!("{} {ty}{null}", quote_ident(&col.name)))
}

/// True when the exact decimal text `value` fits `DECIMAL(precision, scale)` without rounding.
pub fn decimal_fits(value: &str, precision: u32, scale: u32) -> bool {
    let digits = value.trim().trim_start_matches(['-', '+']);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    int.chars().all(|c| c.is_ascii_digit())
        && frac.chars().all(|c| c.is_ascii_digit())
        && int.len() as u32 <= precision.saturating_sub(scale)
        && frac.len() as u32 <= scale
}

/// True when text in charset `source` can be stored in charset `target` without loss.
fn charset_holds(source: Charset, target: Charset) -> bool {
    match (source, target) {
        (a, b) if a == b => true,
        (Charset::Ascii, _) => true,
        (Charset::Latin1, Charset::Utf8) => true,
        _ => false,
    }
}

/// True when a target column declared `target` can hold every value of a source column declared `source`.
pub fn fits(source: &DataType, target: &DataType) -> bool {
    use DataType::*;
    let int_range = |bytes: u8, unsigned: bool| -> (i128, i128) {
        let bits = bytes as u32 * 8;
        if unsigned { (0, (1i128 << bits) - 1) } else { (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1) }
    };
    match (source, target) {
        (Int { bytes: sb, unsigned: su }, Int { bytes: tb, unsigned: tu }) => {
            let (smin, smax) = int_range(*sb, *su);
            let (tmin, tmax) = int_range(*tb, *tu);
            tmin <= smin && smax <= tmax
        }
        (Int { bytes, unsigned }, Decimal { precision, scale, .. }) => {
            let digits = match (bytes, unsigned) {
                (1, _) => 3,
                (2, _) => 5,
                (3, false) => 7,
                (3, true) => 8,
                (4, _) => 10,
                (_, false) => 19,
                (_, true) => 20,
            };
            precision.saturating_sub(*scale) >= digits
        }
        (Bool, Decimal { .. }) => true,
        (Bool, Int { .. }) | (Bool, Bool) => true,
        (Decimal { precision: sp, scale: ss, .. }, Decimal { precision: tp, scale: ts, .. }) => {
            ts >= ss && (tp - ts) >= (sp.saturating_sub(*ss))
        }
        (Float, Float | Double) | (Double, Double) => true,
        (
            Char { length: sl, charset: sc } | Varchar { length: sl, charset: sc },
            Char { length: tl, charset: tc } | Varchar { length: tl, charset: tc },
        ) => tl >= sl && charset_holds(*sc, *tc),
        (Char { length, charset: sc } | Varchar { length, charset: sc }, Text { max_bytes, charset: tc }) => {
            *max_bytes >= *length as u64 * 4 && charset_holds(*sc, *tc)
        }
        (Text { max_bytes: s, charset: sc }, Text { max_bytes: t, charset: tc }) => {
            t >= s && charset_holds(*sc, *tc)
        }
        (
            Binary { length: sl } | Varbinary { length: sl },
            Binary { length: tl } | Varbinary { length: tl },
        ) => tl >= sl,
        (Binary { length } | Varbinary { length }, Blob { max_bytes }) => *max_bytes >= *length as u64,
        (Blob { max_bytes: s }, Blob { max_bytes: t }) => t >= s,
        (Date, Date | DateTime { .. }) => true,
        (Time { fsp: s }, Time { fsp: t }) | (DateTime { fsp: s }, DateTime { fsp: t }) => t >= s,
        (Timestamp { fsp: s }, Timestamp { fsp: t }) => t >= s,
        (Year, Year) => true,
        (Enum { labels: s }, Enum { labels: t }) => s.iter().all(|l| t.contains(l)),
        (Set { members: s }, Set { members: t }) => s.iter().all(|l| t.contains(l)),
        (Bit { bits: s }, Bit { bits: t }) => t >= s,
        (Json, Json) => true,
        (Json, Text { max_bytes, charset }) => *max_bytes >= 4_294_967_295 && *charset == Charset::Utf8,
        (Uuid, Uuid) => true,
        (Other { name }, Json) if name.ends_with("[]") => true,
        (Other { .. }, Text { max_bytes, charset }) => {
            *max_bytes >= 4_294_967_295 && *charset == Charset::Utf8
        }
        (Uuid, Char { length, .. } | Varchar { length, .. }) => *length >= 36,
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(dt: DataType) -> ColumnSchema {
        ColumnSchema {
            name: "c".into(),
            data_type: dt,
            source_type: "t".into(),
            nullable: true,
            default: None,
            collation: None,
        }
    }

    #[test]
    fn decimals_that_would_be_rounded_do_not_fit() {
        assert!(decimal_fits("-12.3400", 6, 2));
        assert!(decimal_fits("0.5", 1, 1));
        assert!(!decimal_fits("12.345", 6, 2));
        assert!(!decimal_fits("123456", 6, 2));
        assert!(!decimal_fits("NaN", 10, 2));
    }

    #[test]
    fn latin1_is_windows_1252() {
        let c = col(DataType::Varchar { length: 10, charset: Charset::Latin1 });
        let s = decode_text("t", &c, Charset::Latin1, vec![0x80, b'a', 0xE9, 0x81]).unwrap();
        assert_eq!(s, "€aé\u{81}");
    }

    #[test]
    fn unsigned_binlog_integers_are_reinterpreted() {
        let c = col(DataType::Int { bytes: 1, unsigned: true });
        assert_eq!(int_value(&c, "t", &MyValue::Int(-1)).unwrap(), Value::UInt(255));
        let c = col(DataType::Int { bytes: 8, unsigned: true });
        assert_eq!(int_value(&c, "t", &MyValue::Int(-1)).unwrap(), Value::UInt(u64::MAX));
        let c = col(DataType::Int { bytes: 3, unsigned: false });
        assert_eq!(int_value(&c, "t", &MyValue::Int(-5)).unwrap(), Value::Int(-5));
        assert_eq!(int_value(&c, "t", &MyValue::Int(0xFF_FFFB)).unwrap(), Value::Int(-5));
        let c = col(DataType::Int { bytes: 2, unsigned: false });
        assert_eq!(int_value(&c, "t", &MyValue::Int(32767)).unwrap(), Value::Int(32767));
    }

    #[test]
    fn shapes_fit_by_range() {
        assert!(!fits(
            &DataType::Varchar { length: 5, charset: Charset::Utf8 },
            &DataType::Varchar { length: 5, charset: Charset::Latin1 }
        ));
        assert!(fits(
            &DataType::Varchar { length: 5, charset: Charset::Latin1 },
            &DataType::Varchar { length: 5, charset: Charset::Utf8 }
        ));
        assert!(!fits(
            &DataType::Text { max_bytes: 65_535, charset: Charset::Utf8 },
            &DataType::Text { max_bytes: 255, charset: Charset::Utf8 }
        ));
        assert!(!fits(
            &DataType::Int { bytes: 8, unsigned: false },
            &DataType::Decimal { precision: 10, scale: 0, unsigned: false }
        ));
        assert!(fits(
            &DataType::Int { bytes: 4, unsigned: true },
            &DataType::Int { bytes: 8, unsigned: false }
        ));
        assert!(!fits(
            &DataType::Int { bytes: 8, unsigned: true },
            &DataType::Int { bytes: 8, unsigned: false }
        ));
        assert!(!fits(
            &DataType::Varchar { length: 50, charset: Charset::Utf8 },
            &DataType::Varchar { length: 10, charset: Charset::Utf8 }
        ));
        assert!(!fits(
            &DataType::Varchar { length: 5, charset: Charset::Utf8 },
            &DataType::Int { bytes: 4, unsigned: false }
        ));
    }

    #[test]
    fn zero_temporal_values_are_kept() {
        let c = col(DataType::Timestamp { fsp: 0 });
        assert_eq!(from_query("t", &c, MyValue::Date(0, 0, 0, 0, 0, 0, 0)).unwrap(), Value::ZeroTimestamp);
        let c = col(DataType::Date);
        assert_eq!(
            from_query("t", &c, MyValue::Date(0, 0, 0, 0, 0, 0, 0)).unwrap(),
            Value::Date(Date { year: 0, month: 0, day: 0 })
        );
    }
}
