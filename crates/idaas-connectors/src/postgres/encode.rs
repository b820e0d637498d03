//! # Encoding
//!
//! Turns [`Value`]s into what a PostgreSQL target column takes, in PostgreSQL's binary format: statement
//! parameters ([`Params`]) and rows of a binary `COPY` ([`CopyRows`]) use the same encoder ([`Codec`]).
//!
//! Each column is written by one of two routes, chosen once per column:
//! - **binary**: the value is encoded in the binary format of the target column's type (domains resolved
//!   to their base type);
//! - **text**: for a source type without a portable mapping ([`DataType::Other`], e.g. PostgreSQL's
//!   `interval` or `inet` from a PostgreSQL source) or a target type this module does not encode, the value
//!   is sent as `text` and the statement casts it to the column's type, through the type's own input
//!   function.
//!
//! # Errors
//! A value the target column cannot hold exactly is refused before anything is sent, with an
//! [`ErrorKind::Unsupported`] error that names the target table, the column, its type and the value: MySQL's
//! zero dates, text holding NUL, a MySQL `TIME` outside 00:00–24:00 in a `time` column, a decimal that would
//! be rounded, an integer out of range. Nothing is rounded, cut or replaced.

use super::ddl::{PgKind, PgType};
use bytes::{BufMut, Bytes, BytesMut};
use idaas_core::value::{timestamp_to_utc, utc_to_timestamp};
use idaas_core::{DataType, Date, DateTime, Error, ErrorKind, Result, TableRef, Time, Value};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
/// Largest `timestamp` PostgreSQL holds, in microseconds after its epoch (294277-01-01 00:00:00, exclusive).
const PG_TIMESTAMP_END: i64 = 9_223_371_331_200_000_000;
/// Smallest `timestamp` PostgreSQL holds, in microseconds after its epoch (4714-11-24 00:00:00 BC).
const PG_TIMESTAMP_MIN: i64 = -211_813_488_000_000_000;

/// How values of one source column are written into one target column.
#[derive(Debug, Clone)]
pub struct Codec {
    table: String,
    column: String,
    ty: PgType,
    source: DataType,
    text: bool,
}

impl Codec {
    /// The codec for source values of type `source` written into `column` (of type `ty`) of `table`.
    pub fn new(table: &TableRef, column: &str, source: &DataType, ty: &PgType) -> Codec {
        let text = matches!(source, DataType::Other { .. }) || matches!(ty.kind, PgKind::Other);
        Codec {
            table: table.to_string(),
            column: column.to_string(),
            ty: ty.clone(),
            source: source.clone(),
            text,
        }
    }

    /// True when values travel as text and are cast to the column's type by the statement.
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The target column's type.
    pub fn target_type(&self) -> &PgType {
        &self.ty
    }

    /// The type of this column in a staging table that receives it by binary `COPY`.
    pub fn stage_type(&self) -> String {
        if self.text { "text".into() } else { self.ty.display.clone() }
    }

    /// `expr` as a value of the column's type: `expr` itself on the binary route, a cast from text on the
    /// text route. The cast names the type without a modifier, so it never cuts a value (assigning to the
    /// column then checks the modifier).
    pub fn cast(&self, expr: &str) -> String {
        if self.text { format!("CAST({expr}::text AS {})", self.ty.qualified) } else { expr.to_string() }
    }

    /// Appends the encoding of a non-NULL `v` to `out`; returns false (appending nothing) for NULL.
    pub fn encode(&self, v: &Value, out: &mut BytesMut) -> Result<bool> {
        match v {
            Value::Null => return Ok(false),
            Value::Unchanged => {
                return Err(Error::internal(format!(
                    "table {}, column '{}': an unchanged value reached the encoder",
                    self.table, self.column
                )));
            }
            _ => {}
        }
        if self.text {
            let s = self.text_of(v)?;
            self.no_nul(v, &s)?;
            out.put_slice(s.as_bytes());
        } else {
            self.binary(&self.ty, v, out, 0)?;
        }
        Ok(true)
    }

    fn refuse(&self, v: &Value, why: &str) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!(
                "target table {}, column '{}' ({}): {why} (value {})",
                self.table,
                self.column,
                self.ty.display,
                show(v)
            ),
        )
    }

    fn mismatch(&self, v: &Value) -> Error {
        self.refuse(v, &format!("a {} value cannot be written into a {} column", v.kind(), self.ty.display))
    }

    fn no_nul(&self, v: &Value, s: &str) -> Result<()> {
        if s.contains('\0') {
            return Err(self.refuse(
                v,
                "the text holds a NUL character (U+0000), which PostgreSQL cannot store in text; remove it at \
                 the source or store the column as bytes",
            ));
        }
        Ok(())
    }

    fn binary(&self, ty: &PgType, v: &Value, out: &mut BytesMut, depth: u32) -> Result<()> {
        use PgKind as K;
        match (&ty.kind, v) {
            (K::Bool, Value::Bool(b)) => out.put_u8(*b as u8),
            (K::Int2 | K::Int4 | K::Int8, Value::Int(_) | Value::UInt(_) | Value::Year(_)) => {
                let n: i128 = match v {
                    Value::Int(i) => *i as i128,
                    Value::UInt(u) => *u as i128,
                    Value::Year(y) => *y as i128,
                    _ => unreachable!("matched above"),
                };
                match ty.kind {
                    K::Int2 if i16::try_from(n).is_ok() => out.put_i16(n as i16),
                    K::Int4 if i32::try_from(n).is_ok() => out.put_i32(n as i32),
                    K::Int8 if i64::try_from(n).is_ok() => out.put_i64(n as i64),
                    _ => return Err(self.refuse(v, "the number is out of the column's range")),
                }
            }
            (K::Numeric { precision, scale }, _) => {
                let text = match v {
                    Value::Decimal(s) | Value::Text(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    Value::UInt(u) => u.to_string(),
                    Value::Year(y) => y.to_string(),
                    _ => return Err(self.mismatch(v)),
                };
                numeric(&text, *precision, *scale, out).map_err(|why| self.refuse(v, &why))?;
            }
            (K::Float4, Value::Float(f)) => out.put_f32(*f),
            (K::Float8, Value::Double(f)) => out.put_f64(*f),
            (K::Float8, Value::Float(f)) => out.put_f64(*f as f64),
            (K::Text | K::Varchar { .. } | K::Bpchar { .. }, _) => {
                let owned;
                let s: &str = match v {
                    Value::Text(s) | Value::Enum(s) | Value::Json(s) => s,
                    Value::Uuid(u) => {
                        owned = format_uuid(u);
                        &owned
                    }
                    _ => return Err(self.mismatch(v)),
                };
                self.no_nul(v, s)?;
                // A text of at most n bytes has at most n characters: only longer ones are counted.
                if let K::Varchar { max: Some(n) } | K::Bpchar { len: Some(n) } = ty.kind
                    && s.len() > n as usize
                    && s.chars().count() > n as usize
                {
                    return Err(self.refuse(v, &format!("the text is longer than {n} characters")));
                }
                out.put_slice(s.as_bytes());
            }
            (K::Bytea, Value::Bytes(b)) => out.put_slice(b),
            (K::Date, Value::Date(d)) => {
                self.check_date(v, d)?;
                out.put_i32((days(d) - PG_EPOCH_DAYS) as i32);
            }
            (K::Time { fsp }, Value::Time(t)) => {
                let us = time_micros(t);
                if t.negative && us != 0 || us > 86_400_000_000 {
                    return Err(self.refuse(
                        v,
                        "PostgreSQL's time holds 00:00:00 to 24:00:00 only; declare the target column as \
                         interval to keep durations",
                    ));
                }
                self.check_fsp(v, t.micros as i64, *fsp)?;
                out.put_i64(us);
            }
            (K::Interval, Value::Time(t)) => {
                let us = time_micros(t);
                out.put_i64(if t.negative { -us } else { us });
                out.put_i32(0);
                out.put_i32(0);
            }
            (K::Timestamp { fsp }, Value::DateTime(dt)) => {
                self.check_date(v, &dt.date)?;
                if dt.hour > 23 || dt.minute > 59 || dt.second > 59 || dt.micros > 999_999 {
                    return Err(self.refuse(v, "not a valid time of day"));
                }
                self.check_fsp(v, dt.micros as i64, *fsp)?;
                out.put_i64(utc_to_timestamp(dt) - PG_EPOCH_US);
            }
            (K::Timestamp { .. }, Value::Date(d)) => {
                self.check_date(v, d)?;
                out.put_i64((days(d) - PG_EPOCH_DAYS) * 86_400_000_000);
            }
            (K::TimestampTz { fsp }, Value::Timestamp(us)) => {
                let pg = us
                    .checked_sub(PG_EPOCH_US)
                    .filter(|pg| (PG_TIMESTAMP_MIN..PG_TIMESTAMP_END).contains(pg));
                let Some(pg) = pg else {
                    return Err(self.refuse(v, "the instant is outside PostgreSQL's timestamp range"));
                };
                self.check_fsp(v, us.rem_euclid(1_000_000), *fsp)?;
                out.put_i64(pg);
            }
            (_, Value::ZeroTimestamp) => {
                return Err(self.refuse(
                    v,
                    "MySQL's zero timestamp 0000-00-00 00:00:00 cannot be stored in PostgreSQL, which has no zero \
                     dates; fix the source row",
                ));
            }
            (K::Uuid, Value::Uuid(u)) => out.put_slice(u),
            (K::Uuid, Value::Text(s)) => match parse_uuid(s) {
                Some(u) => out.put_slice(&u),
                None => return Err(self.refuse(v, "not a UUID")),
            },
            (K::Json | K::Jsonb, Value::Json(s) | Value::Text(s)) => {
                self.no_nul(v, s)?;
                if ty.kind == K::Jsonb {
                    if has_nul_escape(s) {
                        return Err(self.refuse(
                            v,
                            "the JSON holds the escape \\u0000, which jsonb cannot store; declare the target \
                             column as json or text",
                        ));
                    }
                    out.put_u8(1);
                }
                out.put_slice(s.as_bytes());
            }
            (K::Bit { len } | K::Varbit { max: len }, Value::Bit(u)) => {
                let bits = match &self.source {
                    DataType::Bit { bits } => *bits as u32,
                    _ => 64,
                };
                if bits < 64 && *u >> bits != 0 {
                    return Err(self.refuse(v, &format!("the number has more than {bits} bits")));
                }
                let width = match ty.kind {
                    K::Bit { .. } => len.unwrap_or(bits).max(bits),
                    _ => bits,
                };
                out.put_i32(width as i32);
                let mut byte = 0u8;
                for i in 0..width {
                    let pos = width - 1 - i;
                    let bit = if pos < 64 { (u >> pos) & 1 } else { 0 };
                    byte |= (bit as u8) << (7 - i % 8);
                    if i % 8 == 7 {
                        out.put_u8(byte);
                        byte = 0;
                    }
                }
                if width % 8 != 0 {
                    out.put_u8(byte);
                }
            }
            (K::Enum { labels }, Value::Enum(s) | Value::Text(s)) => {
                if !labels.iter().any(|l| l == s) {
                    return Err(self.refuse(v, "not a label of the target's enum type"));
                }
                out.put_slice(s.as_bytes());
            }
            (K::Array { elem }, Value::Set(members)) => {
                let items: Vec<Value> = members.iter().map(|m| Value::Text(m.clone())).collect();
                self.array(elem, v, &items, out, depth)?;
            }
            (K::Array { elem }, Value::Array(items)) => self.array(elem, v, items, out, depth)?,
            _ => return Err(self.mismatch(v)),
        }
        Ok(())
    }

    fn array(
        &self,
        elem: &PgType,
        whole: &Value,
        items: &[Value],
        out: &mut BytesMut,
        depth: u32,
    ) -> Result<()> {
        if depth > 0 {
            return Err(
                self.refuse(whole, "array elements that are themselves of an array type are not supported")
            );
        }
        let mut dims = Vec::new();
        let mut leaves: Vec<&Value> = Vec::new();
        if !flatten(items, 0, &mut dims, &mut leaves) {
            return Err(self.refuse(whole, "a multi-dimensional array must be rectangular"));
        }
        if dims.len() > 6 {
            return Err(self.refuse(whole, "PostgreSQL arrays have at most 6 dimensions"));
        }
        if dims.contains(&0) {
            dims.clear();
        }
        let has_null = leaves.iter().any(|l| l.is_null());
        out.put_i32(dims.len() as i32);
        out.put_i32(has_null as i32);
        out.put_u32(elem.oid);
        for d in &dims {
            out.put_i32(*d as i32);
            out.put_i32(1);
        }
        if dims.is_empty() {
            return Ok(());
        }
        for leaf in leaves {
            if leaf.is_null() {
                out.put_i32(-1);
                continue;
            }
            let at = out.len();
            out.put_i32(0);
            self.binary(elem, leaf, out, depth + 1)?;
            let len = (out.len() - at - 4) as i32;
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }

    fn check_date(&self, v: &Value, d: &Date) -> Result<()> {
        if d.is_zero() {
            return Err(self.refuse(
                v,
                "MySQL's zero dates (a zero year, month or day) cannot be stored in PostgreSQL, which has no \
                 zero dates; fix the source row",
            ));
        }
        if d.day > days_in_month(d.year, d.month) || d.month > 12 {
            return Err(self.refuse(v, "not a calendar date"));
        }
        Ok(())
    }

    fn check_fsp(&self, v: &Value, micros: i64, fsp: u8) -> Result<()> {
        let unit = 10i64.pow(6 - fsp.min(6) as u32);
        if micros % unit != 0 {
            return Err(self.refuse(
                v,
                &format!(
                    "the value has more fractional digits than the column keeps ({fsp}); it would be rounded"
                ),
            ));
        }
        Ok(())
    }

    /// The value in PostgreSQL's text input syntax (text route).
    fn text_of(&self, v: &Value) -> Result<String> {
        Ok(match v {
            Value::Null | Value::Unchanged => String::new(),
            Value::Bool(b) => if *b { "true" } else { "false" }.into(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Year(y) => y.to_string(),
            Value::Float(f) => float_text(*f as f64, f.to_string()),
            Value::Double(f) => float_text(*f, f.to_string()),
            Value::Decimal(s) | Value::Text(s) | Value::Enum(s) | Value::Json(s) => s.clone(),
            Value::Bytes(b) => {
                if matches!(self.ty.kind, PgKind::Bytea) {
                    format!("\\x{}", hex(b))
                } else {
                    String::from_utf8(b.clone()).map_err(|_| {
                        self.refuse(
                            v,
                            "the source sent bytes that are not UTF-8 text for a column written as text",
                        )
                    })?
                }
            }
            Value::Date(d) => {
                self.check_date(v, d)?;
                d.to_string()
            }
            Value::Time(t) => t.to_string(),
            Value::DateTime(dt) => {
                self.check_date(v, &dt.date)?;
                dt.to_string()
            }
            Value::Timestamp(us) => format!("{}+00", timestamp_to_utc(*us)),
            Value::ZeroTimestamp => {
                return Err(self.refuse(
                    v,
                    "MySQL's zero timestamp 0000-00-00 00:00:00 cannot be stored in PostgreSQL, which has no zero \
                     dates; fix the source row",
                ));
            }
            Value::Set(members) => {
                format!("{{{}}}", members.iter().map(|m| quote_element(m)).collect::<Vec<_>>().join(","))
            }
            Value::Bit(u) => {
                let bits = match &self.source {
                    DataType::Bit { bits } => *bits as usize,
                    _ => (64 - u.leading_zeros() as usize).max(1),
                };
                (0..bits).rev().map(|i| if i < 64 && (u >> i) & 1 == 1 { '1' } else { '0' }).collect()
            }
            Value::Uuid(u) => format_uuid(u),
            Value::Array(items) => self.array_text(items)?,
        })
    }

    fn array_text(&self, items: &[Value]) -> Result<String> {
        let mut parts = Vec::with_capacity(items.len());
        for item in items {
            parts.push(match item {
                Value::Null => "NULL".to_string(),
                Value::Array(inner) => self.array_text(inner)?,
                // Bytes in an array are elements of a bytea array: its hex input form.
                Value::Bytes(b) => quote_element(&format!("\\x{}", hex(b))),
                other => quote_element(&self.text_of(other)?),
            });
        }
        Ok(format!("{{{}}}", parts.join(",")))
    }
}

/// Collects the dimensions and the leaves of a (possibly nested) array; false when it is not rectangular.
fn flatten<'a>(items: &'a [Value], level: usize, dims: &mut Vec<usize>, leaves: &mut Vec<&'a Value>) -> bool {
    match dims.get(level) {
        None => dims.push(items.len()),
        Some(d) if *d != items.len() => return false,
        Some(_) => {}
    }
    let nested = matches!(items.first(), Some(Value::Array(_)));
    for item in items {
        match (item, nested) {
            (Value::Array(inner), true) => {
                if !flatten(inner, level + 1, dims, leaves) {
                    return false;
                }
            }
            (Value::Array(_), false) => return false,
            (_, true) => return false,
            (leaf, false) => leaves.push(leaf),
        }
    }
    if !nested && dims.len() > level + 1 {
        return false;
    }
    true
}

fn quote_element(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn float_text(f: f64, shortest: String) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else {
        shortest
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hyphenated lowercase UUID text.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h = hex(u);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Parses a UUID written as 32 hex digits, hyphens allowed between them.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if digits.len() != 32 || s.starts_with('-') || s.ends_with('-') {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(std::str::from_utf8(&digits[2 * i..2 * i + 2]).ok()?, 16).ok()?;
    }
    Some(out)
}

/// True when JSON text holds the escape `\u0000` (outside an escaped backslash).
fn has_nul_escape(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01.
fn days(d: &Date) -> i64 {
    utc_to_timestamp(&DateTime { date: *d, hour: 0, minute: 0, second: 0, micros: 0 })
        .div_euclid(86_400_000_000)
}

/// The absolute length of a time or duration in microseconds.
fn time_micros(t: &Time) -> i64 {
    ((t.hours as i64 * 60 + t.minutes as i64) * 60 + t.seconds as i64) * 1_000_000 + t.micros as i64
}

/// Encodes decimal text as PostgreSQL's binary `numeric`; the error says why the value cannot be held.
fn numeric(
    s: &str,
    precision: Option<u32>,
    scale: i32,
    out: &mut BytesMut,
) -> std::result::Result<(), String> {
    let special = match s {
        "NaN" => Some(0xC000u16),
        "Infinity" | "+Infinity" => Some(0xD000),
        "-Infinity" => Some(0xF000),
        _ => None,
    };
    if let Some(sign) = special {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(sign);
        out.put_i16(0);
        return Ok(());
    }
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("not a decimal number".into());
    }
    let int = int.trim_start_matches('0');
    if let Some(p) = precision {
        let kept = frac.trim_end_matches('0').len() as i64;
        if kept > scale as i64 {
            return Err(format!(
                "the number has more decimal places than numeric({p},{scale}) keeps; it would be rounded"
            ));
        }
        if int.len() as i64 > p as i64 - scale as i64 {
            return Err(format!("the number is too large for numeric({p},{scale})"));
        }
    }
    if frac.len() > 16_383 || int.len() > 131_072 {
        return Err("the number has more digits than PostgreSQL's numeric holds".into());
    }
    let mut groups: Vec<i16> = Vec::with_capacity(int.len() / 4 + frac.len() / 4 + 2);
    let lead = (4 - int.len() % 4) % 4;
    let digit = |b: u8| (b - b'0') as i16;
    let mut acc = 0i16;
    for (i, b) in int.bytes().enumerate() {
        acc = acc * 10 + digit(b);
        if (i + lead) % 4 == 3 {
            groups.push(acc);
            acc = 0;
        }
    }
    let mut weight = groups.len() as i32 - 1;
    for (i, b) in frac.bytes().enumerate() {
        acc = acc * 10 + digit(b);
        if i % 4 == 3 {
            groups.push(acc);
            acc = 0;
        }
    }
    if frac.len() % 4 != 0 {
        groups.push(acc * 10i16.pow(4 - (frac.len() % 4) as u32));
    }
    let first = groups.iter().position(|g| *g != 0);
    let Some(first) = first else {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(0);
        out.put_i16(frac.len() as i16);
        return Ok(());
    };
    weight -= first as i32;
    let last = groups.iter().rposition(|g| *g != 0).unwrap_or(first);
    let digits = &groups[first..=last];
    out.put_i16(digits.len() as i16);
    out.put_i16(weight as i16);
    out.put_u16(if neg { 0x4000 } else { 0 });
    out.put_i16(frac.len() as i16);
    for d in digits {
        out.put_i16(*d);
    }
    Ok(())
}

/// A value for error messages: short, with control characters escaped.
fn show(v: &Value) -> String {
    fn cut(s: &str) -> String {
        let head: String = s.chars().take(60).collect();
        let more = if s.chars().count() > 60 { "…" } else { "" };
        format!("{:?}{more}", head)
    }
    match v {
        Value::Text(s) | Value::Enum(s) | Value::Json(s) | Value::Decimal(s) => cut(s),
        Value::Bytes(b) => format!("0x{}{}", hex(&b[..b.len().min(32)]), if b.len() > 32 { "…" } else { "" }),
        Value::Date(d) => d.to_string(),
        Value::Time(t) => t.to_string(),
        Value::DateTime(dt) => dt.to_string(),
        Value::Timestamp(us) => format!("{} UTC", timestamp_to_utc(*us)),
        Value::ZeroTimestamp => "0000-00-00 00:00:00".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Year(y) => format!("{y:04}"),
        Value::Float(f) => f.to_string(),
        Value::Double(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Bit(b) => format!("b'{b:b}'"),
        Value::Uuid(u) => format_uuid(u),
        Value::Set(m) => cut(&m.join(",")),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Null => "NULL".into(),
        Value::Unchanged => "unchanged".into(),
    }
}

/// Encoded statement parameters: values appended with [`Params::push`], bound with [`Params::values`].
#[derive(Debug, Default)]
pub struct Params {
    buf: BytesMut,
    spans: Vec<Option<(usize, usize)>>,
}

impl Params {
    /// No parameters yet.
    pub fn new() -> Params {
        Params::default()
    }

    /// Appends `v` written through `codec`.
    pub fn push(&mut self, codec: &Codec, v: &Value) -> Result<()> {
        let start = self.buf.len();
        let span = codec.encode(v, &mut self.buf)?.then(|| (start, self.buf.len()));
        self.spans.push(span);
        Ok(())
    }

    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The parameters, ready to bind.
    pub fn values(&self) -> Vec<Encoded<'_>> {
        self.spans.iter().map(|s| Encoded(s.map(|(a, b)| &self.buf[a..b]))).collect()
    }
}

/// One parameter already in PostgreSQL's binary format (`None` is NULL). It binds to whatever type the
/// server inferred for its placeholder: the encoder chose the format from the target column's type.
#[derive(Debug, Clone, Copy)]
pub struct Encoded<'a>(pub Option<&'a [u8]>);

impl ToSql for Encoded<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Some(b) => {
                out.put_slice(b);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Signature, flags and header extension length of a binary `COPY` stream.
const HEADER_BYTES: usize = 11 + 4 + 4;

/// Rows in PostgreSQL's binary `COPY` format.
#[derive(Debug)]
pub struct CopyRows {
    buf: BytesMut,
    rows: usize,
}

impl Default for CopyRows {
    fn default() -> Self {
        CopyRows::new()
    }
}

impl CopyRows {
    /// An empty stream (the header only).
    pub fn new() -> CopyRows {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        debug_assert_eq!(buf.len(), HEADER_BYTES);
        CopyRows { buf, rows: 0 }
    }

    /// Appends one row: `values` written through their codecs, in the `COPY` statement's column order.
    pub fn push<'a>(&mut self, cells: impl ExactSizeIterator<Item = (&'a Codec, &'a Value)>) -> Result<()> {
        self.buf.put_i16(cells.len() as i16);
        for (codec, v) in cells {
            let at = self.buf.len();
            self.buf.put_i32(0);
            if codec.encode(v, &mut self.buf)? {
                let len = (self.buf.len() - at - 4) as i32;
                self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            } else {
                self.buf.truncate(at);
                self.buf.put_i32(-1);
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends `rows` rows already in this format, back to back (from a binary `COPY ... TO STDOUT`
    /// without its header and trailer).
    pub fn push_encoded(&mut self, tuples: &[u8], rows: usize) {
        self.buf.put_slice(tuples);
        self.rows += rows;
    }

    /// Makes room for `more` rows the size of the average row so far, plus an eighth: one allocation for
    /// a batch of similar rows instead of a buffer doubling (and copied) a dozen times.
    pub fn reserve_rows(&mut self, more: usize) {
        if self.rows == 0 {
            return;
        }
        let per_row = (self.buf.len() - HEADER_BYTES) / self.rows;
        self.buf.reserve(per_row.saturating_mul(more).saturating_add(per_row.saturating_mul(more) / 8));
    }

    /// How many rows were appended.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The complete stream, trailer included.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str, p: Option<u32>, sc: i32) -> std::result::Result<Vec<u8>, String> {
        let mut out = BytesMut::new();
        numeric(s, p, sc, &mut out).map(|_| out.to_vec())
    }

    fn words(b: &[u8]) -> Vec<i16> {
        b.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn reserving_for_more_rows_allocates_once_and_changes_nothing() {
        let ty =
            PgType { oid: 23, display: "integer".into(), qualified: "integer".into(), kind: PgKind::Int4 };
        let int = DataType::Int { bytes: 4, unsigned: false };
        let codec = Codec::new(&TableRef::new("public", "t"), "n", &int, &ty);
        let row = |i: i64| vec![(&codec, Value::Int(i)), (&codec, Value::Null)];
        let mut reserved = CopyRows::new();
        let mut plain = CopyRows::new();
        reserved.reserve_rows(100); // nothing to go by yet: no effect
        for i in 0..16 {
            let r = row(i);
            reserved.push(r.iter().map(|(c, v)| (*c, v))).unwrap();
            plain.push(r.iter().map(|(c, v)| (*c, v))).unwrap();
        }
        reserved.reserve_rows(10_000);
        let cap = reserved.buf.capacity();
        let per_row = (reserved.buf.len() - HEADER_BYTES) / 16;
        assert!(
            cap >= reserved.buf.len() + per_row * 10_000,
            "capacity {cap} for 10,000 rows of {per_row} bytes"
        );
        for i in 16..10_016 {
            let r = row(i);
            reserved.push(r.iter().map(|(c, v)| (*c, v))).unwrap();
            plain.push(r.iter().map(|(c, v)| (*c, v))).unwrap();
        }
        assert_eq!(reserved.buf.capacity(), cap, "the rows fitted in what was reserved");
        assert_eq!(reserved.rows(), 10_016);
        assert_eq!(reserved.finish(), plain.finish());
    }

    #[test]
    fn numerics_encode_in_base_10000() {
        // ndigits, weight, sign, dscale, digits...
        assert_eq!(words(&num("-123456.789", None, 0).unwrap()), vec![3, 1, 0x4000, 3, 12, 3456, 7890]);
        assert_eq!(words(&num("0.0001", None, 0).unwrap()), vec![1, -1, 0, 4, 1]);
        assert_eq!(words(&num("100000000", None, 0).unwrap()), vec![1, 2, 0, 0, 1]);
        assert_eq!(words(&num("-0.00", None, 0).unwrap()), vec![0, 0, 0, 2]);
        assert_eq!(
            words(&num("18446744073709551615", None, 0).unwrap()),
            vec![5, 4, 0, 0, 1844, 6744, 737, 955, 1615]
        );
        assert!(num("1.005", Some(10), 2).unwrap_err().contains("rounded"));
        assert!(num("1.500", Some(10), 1).is_ok(), "trailing zeros are not lost digits");
        assert!(num("123", Some(4), 2).unwrap_err().contains("too large"));
        assert!(num("1e5", None, 0).is_err());
        assert!(num("", None, 0).is_err());
        assert_eq!(words(&num("NaN", None, 0).unwrap())[2] as u16, 0xC000);
    }

    #[test]
    fn json_nul_escapes_are_found() {
        assert!(has_nul_escape(r#"{"a":"x\u0000"}"#));
        assert!(!has_nul_escape(r#"{"a":"x\\u0000"}"#));
        assert!(!has_nul_escape(r#"{"a":"\u0001"}"#));
    }

    #[test]
    fn arrays_flatten_only_when_rectangular() {
        let a = |v: Vec<Value>| Value::Array(v);
        let (mut dims, mut leaves) = (Vec::new(), Vec::new());
        let square = vec![a(vec![Value::Int(1), Value::Int(2)]), a(vec![Value::Int(3), Value::Null])];
        assert!(flatten(&square, 0, &mut dims, &mut leaves));
        assert_eq!(dims, vec![2, 2]);
        assert_eq!(leaves.len(), 4);
        let ragged = vec![a(vec![Value::Int(1)]), a(vec![Value::Int(3), Value::Null])];
        assert!(!flatten(&ragged, 0, &mut Vec::new(), &mut Vec::new()));
        let mixed = vec![a(vec![Value::Int(1)]), Value::Int(3)];
        assert!(!flatten(&mixed, 0, &mut Vec::new(), &mut Vec::new()));
    }

    #[test]
    fn uuids_parse_with_or_without_hyphens() {
        let u = parse_uuid("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(format_uuid(&u), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(parse_uuid("00112233445566778899AABBCCDDEEFF"), Some(u));
        assert_eq!(parse_uuid("0011-"), None);
    }
}
