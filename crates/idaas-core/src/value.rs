//! # Values
//!
//! [`Value`] carries one column value with full fidelity: integers keep their sign and width, decimals stay
//! exact text, temporal values keep their fractional seconds and MySQL's zero dates, and text keeps its
//! characters whatever the source's character set was. Nothing here goes through `f64` unless the source
//! type was a floating-point type.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A calendar date. Month and day may be zero: MySQL's zero dates (`0000-00-00`, `2024-00-10`) are carried
/// as they are, and a sink that cannot store them refuses them (see `docs/type-mapping.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date {
    /// Year, 0 to 9999.
    pub year: u16,
    /// Month, 1 to 12 (0 in a zero date).
    pub month: u8,
    /// Day, 1 to 31 (0 in a zero date).
    pub day: u8,
}

impl Date {
    /// True for a date with a zero year, month or day (MySQL's zero dates).
    pub fn is_zero(&self) -> bool {
        self.month == 0 || self.day == 0 || self.year == 0
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A time of day or a duration (MySQL `TIME` ranges from `-838:59:59` to `838:59:59`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time {
    /// True for a negative duration.
    pub negative: bool,
    /// Hours, 0 to 838.
    pub hours: u32,
    /// Minutes, 0 to 59.
    pub minutes: u8,
    /// Seconds, 0 to 59.
    pub seconds: u8,
    /// Microseconds, 0 to 999,999.
    pub micros: u32,
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        write!(f, "{sign}{:02}:{:02}:{:02}", self.hours, self.minutes, self.seconds)?;
        if self.micros != 0 {
            write!(f, ".{:06}", self.micros)?;
        }
        Ok(())
    }
}

/// A date and time of day without a time zone (MySQL `DATETIME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DateTime {
    /// The date part.
    pub date: Date,
    /// Hours, 0 to 23.
    pub hour: u8,
    /// Minutes, 0 to 59.
    pub minute: u8,
    /// Seconds, 0 to 59.
    pub second: u8,
    /// Microseconds, 0 to 999,999.
    pub micros: u32,
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:02}:{:02}:{:02}", self.date, self.hour, self.minute, self.second)?;
        if self.micros != 0 {
            write!(f, ".{:06}", self.micros)?;
        }
        Ok(())
    }
}

/// One column value.
///
/// The JSON form is `{"type": "...", "value": ...}`; see `docs/open-cdc.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer of any width up to 64 bits.
    Int(i64),
    /// An unsigned integer of any width up to 64 bits.
    #[serde(rename = "uint")]
    UInt(u64),
    /// A single-precision float (MySQL `FLOAT`).
    Float(f32),
    /// A double-precision float.
    Double(f64),
    /// An exact decimal number in plain text (`-12.3400`), as the source printed it; never through `f64`.
    Decimal(String),
    /// Text in Unicode, whatever the source's character set.
    Text(String),
    /// Bytes.
    #[serde(with = "b64")]
    Bytes(Vec<u8>),
    /// A date (possibly a MySQL zero date).
    Date(Date),
    /// A time of day or duration.
    Time(Time),
    /// A date and time without a time zone.
    #[serde(rename = "datetime")]
    DateTime(DateTime),
    /// An instant: microseconds since 1970-01-01 00:00:00 UTC (MySQL `TIMESTAMP`, PostgreSQL `timestamptz`).
    /// MySQL's zero timestamp is carried as [`Value::ZeroTimestamp`].
    Timestamp(i64),
    /// MySQL's zero `TIMESTAMP` (`0000-00-00 00:00:00`).
    ZeroTimestamp,
    /// A year (MySQL `YEAR`; 0 is the zero year).
    Year(u16),
    /// A JSON document as text, exactly as the source holds it.
    Json(String),
    /// An enum label.
    Enum(String),
    /// The members of a set, in the declared order.
    Set(Vec<String>),
    /// A bit string (MySQL `BIT(n)`, n up to 64) as the unsigned number its bits spell.
    Bit(u64),
    /// A UUID, in JSON as its hyphenated lowercase text.
    #[serde(with = "uuid_text")]
    Uuid([u8; 16]),
    /// An array.
    Array(Vec<Value>),
    /// The source did not send this column because it did not change (PostgreSQL's unchanged TOASTed
    /// values in an update). Sinks keep the target's current value; it is never written as NULL.
    Unchanged,
}

impl Value {
    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::DateTime(_) => "datetime",
            Value::Timestamp(_) => "timestamp",
            Value::ZeroTimestamp => "zero_timestamp",
            Value::Year(_) => "year",
            Value::Json(_) => "json",
            Value::Enum(_) => "enum",
            Value::Set(_) => "set",
            Value::Bit(_) => "bit",
            Value::Uuid(_) => "uuid",
            Value::Array(_) => "array",
            Value::Unchanged => "unchanged",
        }
    }
}

impl Value {
    /// The value as plain JSON (numbers, strings, arrays), for targets that store a structured value as a
    /// JSON document (arrays into MySQL). Exact decimals become strings so no digit is lost; bytes become
    /// `\\x`-prefixed hex; temporal values ISO 8601 text.
    pub fn to_plain_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null | Value::Unchanged => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f as f64).map(J::Number).unwrap_or(J::String(f.to_string()))
            }
            Value::Double(f) => {
                serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::String(f.to_string()))
            }
            Value::Decimal(s) | Value::Text(s) | Value::Enum(s) => J::String(s.clone()),
            Value::Bytes(b) => {
                J::String(format!("\\x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
            }
            Value::Date(d) => J::String(d.to_string()),
            Value::Time(t) => J::String(t.to_string()),
            Value::DateTime(dt) => J::String(dt.to_string()),
            Value::Timestamp(us) => J::String(format!("{}Z", timestamp_to_utc(*us))),
            Value::ZeroTimestamp => J::String("0000-00-00 00:00:00".into()),
            Value::Year(y) => J::from(*y),
            Value::Json(s) => serde_json::from_str(s).unwrap_or(J::String(s.clone())),
            Value::Set(m) => J::Array(m.iter().map(|x| J::String(x.clone())).collect()),
            Value::Bit(b) => J::from(*b),
            Value::Uuid(u) => {
                let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
                J::String(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
            }
            Value::Array(items) => J::Array(items.iter().map(Value::to_plain_json).collect()),
        }
    }
}

/// Microseconds since the Unix epoch to a UTC date and time.
pub fn timestamp_to_utc(micros: i64) -> DateTime {
    let secs = micros.div_euclid(1_000_000);
    let us = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    DateTime {
        date: Date { year: y as u16, month: m as u8, day: d as u8 },
        hour: (sod / 3600) as u8,
        minute: ((sod % 3600) / 60) as u8,
        second: (sod % 60) as u8,
        micros: us,
    }
}

/// A UTC date and time to microseconds since the Unix epoch.
pub fn utc_to_timestamp(dt: &DateTime) -> i64 {
    let days = days_from_civil(dt.date.year as i64, dt.date.month as i64, dt.date.day as i64);
    let secs = days * 86_400 + dt.hour as i64 * 3600 + dt.minute as i64 * 60 + dt.second as i64;
    secs * 1_000_000 + dt.micros as i64
}

// Howard Hinnant's civil-calendar algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

mod uuid_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        let h: String = v.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom("a UUID has 32 hex digits"));
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(serde::de::Error::custom)?;
        }
        Ok(out)
    }
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_through_civil_time() {
        for micros in [0i64, 1, -1, 1_700_000_000_123_456, -86_400_000_000, 253_402_300_799_999_999] {
            let dt = timestamp_to_utc(micros);
            assert_eq!(utc_to_timestamp(&dt), micros, "{dt}");
        }
        assert_eq!(timestamp_to_utc(0).to_string(), "1970-01-01 00:00:00");
        assert_eq!(timestamp_to_utc(951_782_400_000_000).to_string(), "2000-02-29 00:00:00");
    }

    #[test]
    fn values_serialise_with_their_type() {
        let v = Value::Decimal("-12.3400".into());
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"type":"decimal","value":"-12.3400"}"#);
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        let u = Value::Uuid([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
        ]);
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, r#"{"type":"uuid","value":"00112233-4455-6677-8899-aabbccddeeff"}"#);
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), u);
        assert_eq!(serde_json::to_string(&Value::UInt(1)).unwrap(), r#"{"type":"uint","value":1}"#);
        let b = Value::Bytes(vec![0, 255, 10]);
        let back: Value = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }
}
