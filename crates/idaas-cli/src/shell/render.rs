//! Text for the API answers the shell shows, by kind: the same renderings as the CLI subcommands (aligned
//! tables, the brief's stats block), plus rows and counts.

use crate::commands::{connection, pipeline};
use crate::output::Table;
use idaas_core::value::timestamp_to_utc;
use idaas_core::{TableRef, Value};
use idaas_engine::browse::{RowCount, TableRows};
use serde::de::DeserializeOwned;

/// The longest cell `peek` prints; longer values are cut with `…`.
const MAX_CELL: usize = 40;

/// Renders the JSON of an answer of `kind`; `extra` is the object's name where the rendering needs it.
pub fn render(kind: &str, json: &str, extra: &str) -> Result<String, String> {
    fn parse<T: DeserializeOwned>(json: &str) -> Result<T, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }
    Ok(match kind {
        "connections" => connection::render_list(&parse::<Vec<_>>(json)?),
        "connection" => connection::render_one(&parse(json)?),
        "check" => connection::render_check(extra, &parse(json)?),
        "tables" => connection::render_tables(&parse::<Vec<TableRef>>(json)?),
        "schema" => connection::render_schema(&parse(json)?),
        "pipelines" => pipeline::render_list(&parse::<Vec<_>>(json)?),
        "pipeline" => pipeline::render_one(&parse(json)?),
        "state" => {
            let p: idaas_engine::PipelineInfo = parse(json)?;
            format!("pipeline {}: {}\n", p.alias, p.status)
        }
        "stats" => pipeline::render_stats(&parse(json)?),
        "rows" => rows(&parse(json)?),
        "count" => {
            let c: RowCount = parse(json)?;
            format!("{}: {} row{}\n", c.table, c.count, if c.count == 1 { "" } else { "s" })
        }
        "json" => format!("{}\n", crate::output::pretty_json(json)),
        "message" => {
            let m: serde_json::Value = parse(json)?;
            format!("{}\n", m["message"].as_str().unwrap_or_default())
        }
        other => return Err(format!("unknown kind {other}")),
    })
}

fn rows(r: &TableRows) -> String {
    let headers: Vec<&str> = r.columns.iter().map(String::as_str).collect();
    let mut table = Table::new(&headers);
    for row in &r.rows {
        table.row(row.iter().map(cell).collect());
    }
    let n = r.rows.len();
    let more =
        if n as u32 == r.limit { " (limit reached; peek <table> N shows more, up to 1000)" } else { "" };
    format!("{}({n} row{} of {}){more}\n", table.render(), if n == 1 { "" } else { "s" }, r.table)
}

/// One value as a person reads it: SQL-like text, `NULL`, bytes in hex; long or multi-line text shortened.
pub fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => "NULL".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) | Value::Enum(s) => s.clone(),
        Value::Bytes(b) => {
            let hex: String = b.iter().take(MAX_CELL).map(|x| format!("{x:02x}")).collect();
            format!("0x{hex}")
        }
        Value::Date(d) => d.to_string(),
        Value::Time(t) => t.to_string(),
        Value::DateTime(dt) => dt.to_string(),
        Value::Timestamp(micros) => format!("{} UTC", timestamp_to_utc(*micros)),
        Value::ZeroTimestamp => "0000-00-00 00:00:00".to_owned(),
        Value::Year(y) => format!("{y:04}"),
        Value::Set(members) => members.join(","),
        Value::Bit(b) => format!("b'{b:b}'"),
        Value::Uuid(_) | Value::Array(_) => match serde_json::to_value(v) {
            Ok(serde_json::Value::Object(o)) => match o.get("value") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            },
            _ => String::new(),
        },
        Value::Unchanged => "(unchanged)".to_owned(),
    };
    shorten(&text)
}

fn shorten(text: &str) -> String {
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.chars().count() > MAX_CELL {
        out = out.chars().take(MAX_CELL - 1).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use idaas_core::{Date, DateTime, Time};

    #[test]
    fn cells_read_like_sql() {
        assert_eq!(cell(&Value::Null), "NULL");
        assert_eq!(cell(&Value::UInt(18_446_744_073_709_551_615)), "18446744073709551615");
        assert_eq!(cell(&Value::Decimal("-12.3400".into())), "-12.3400");
        assert_eq!(cell(&Value::Bytes(vec![0, 255, 16])), "0x00ff10");
        assert_eq!(cell(&Value::Date(Date { year: 0, month: 0, day: 0 })), "0000-00-00");
        assert_eq!(
            cell(&Value::Time(Time { negative: true, hours: 838, minutes: 59, seconds: 59, micros: 0 })),
            "-838:59:59"
        );
        let dt = DateTime {
            date: Date { year: 2022, month: 2, day: 1 },
            hour: 15,
            minute: 0,
            second: 3,
            micros: 203_000,
        };
        assert_eq!(cell(&Value::DateTime(dt)), "2022-02-01 15:00:03.203000");
        assert_eq!(cell(&Value::Timestamp(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(cell(&Value::Set(vec!["a".into(), "b".into()])), "a,b");
        assert_eq!(cell(&Value::Bit(5)), "b'101'");
        assert_eq!(cell(&Value::Uuid([0x11; 16])), "11111111-1111-1111-1111-111111111111");
        assert_eq!(cell(&Value::Text("two\nlines".into())), "two lines");
        let long = cell(&Value::Text("x".repeat(100)));
        assert_eq!(long.chars().count(), MAX_CELL);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn rows_are_an_aligned_table() {
        let r = TableRows {
            table: TableRef::new("crm", "Customer"),
            columns: vec!["id".into(), "name".into()],
            rows: vec![vec![Value::UInt(1), Value::Text("Ada".into())], vec![Value::UInt(2), Value::Null]],
            limit: 2,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            render("rows", &json, "").unwrap(),
            "id  name\n1   Ada\n2   NULL\n(2 rows of crm.Customer) (limit reached; peek <table> N shows more, up to 1000)\n"
        );
        let count = r#"{"table":{"namespace":"crm","name":"Customer"},"count":1}"#;
        assert_eq!(render("count", count, "").unwrap(), "crm.Customer: 1 row\n");
        assert!(render("nonsense", "{}", "").is_err());
    }
}
