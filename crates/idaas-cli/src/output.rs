//! Plain-text rendering for the terminal: aligned tables and label blocks, timestamps, and JSON
//! re-indented without reordering its keys.

use std::fmt::Write as _;

/// A table with a header row, printed with columns aligned by two spaces.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row; it must have one cell per header.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each line ending in a newline; no trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let _ = write!(line, "{cell:<width$}");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `Label: value` lines with the values aligned in one column.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(label, _)| label.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in pairs {
        let label = format!("{label}:");
        let _ = writeln!(out, "{}", format!("{label:<width$} {value}").trim_end());
    }
    out
}

/// `-` for a missing value.
pub fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

/// An RFC 3339 UTC timestamp (`2022-02-01T15:00:03.203Z`) as `2022.02.01 15:00:03.203`; `-` when absent.
/// A value in another form or offset is shown as it is.
pub fn timestamp(value: Option<&str>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) => format_timestamp(v).unwrap_or_else(|| v.to_owned()),
    }
}

fn format_timestamp(value: &str) -> Option<String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (date, rest) = (value.get(..10)?, value.get(10..)?);
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (time, rest) = (rest.get(..8)?, rest.get(8..)?);
    let [year, month, day] = split3(date, '-')?;
    let [hour, minute, second] = split3(time, ':')?;
    if ![year, month, day, hour, minute, second].into_iter().all(digits) {
        return None;
    }
    let (fraction, offset) = match rest.strip_prefix('.') {
        Some(r) => r.split_at(r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())),
        None => ("", rest),
    };
    if !matches!(offset, "Z" | "z" | "+00:00" | "-00:00") {
        return None;
    }
    let millis: String = fraction.chars().chain(std::iter::repeat('0')).take(3).collect();
    Some(format!("{year}.{month}.{day} {hour}:{minute}:{second}.{millis}"))
}

fn split3(s: &str, sep: char) -> Option<[&str; 3]> {
    let mut parts = s.split(sep);
    let out = [parts.next()?, parts.next()?, parts.next()?];
    parts.next().is_none().then_some(out)
}

/// An events-per-second figure: whole numbers without decimals, others with one.
pub fn rate(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_owned();
    }
    if (value - value.round()).abs() < 0.05 { format!("{:.0}", value.round()) } else { format!("{value:.1}") }
}

/// Re-indents a JSON text the way `serde_json::to_string_pretty` does, keeping the order of its keys and
/// its numbers exactly as the server wrote them. Text that is not JSON comes back trimmed.
pub fn pretty_json(text: &str) -> String {
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        return text.trim().to_owned();
    }
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.next_if_eq(&close).is_some() {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_take_the_brief_form() {
        assert_eq!(timestamp(Some("2022-02-01T15:00:03.203Z")), "2022.02.01 15:00:03.203");
        assert_eq!(timestamp(Some("2022-02-01T15:00:03.829123+00:00")), "2022.02.01 15:00:03.829");
        assert_eq!(timestamp(Some("2022-02-01T15:00:03.2Z")), "2022.02.01 15:00:03.200");
        assert_eq!(timestamp(Some("2022-02-01T15:00:03Z")), "2022.02.01 15:00:03.000");
        assert_eq!(timestamp(Some("2022-02-01 15:00:03.203z")), "2022.02.01 15:00:03.203");
        assert_eq!(timestamp(None), "-");
        // Not UTC or not RFC 3339: shown as it is rather than wrongly.
        assert_eq!(timestamp(Some("2022-02-01T15:00:03.203+02:00")), "2022-02-01T15:00:03.203+02:00");
        assert_eq!(timestamp(Some("yesterday")), "yesterday");
        assert_eq!(timestamp(Some("2022-02-01T15:00:0x.203Z")), "2022-02-01T15:00:0x.203Z");
        assert_eq!(timestamp(Some("2022-02-01T15:00:03.203")), "2022-02-01T15:00:03.203");
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut table = Table::new(&["ALIAS", "TYPE", "DATABASE"]);
        table.row(vec!["mysql_crm_db".into(), "mysql".into(), "crm".into()]);
        table.row(vec!["pg".into(), "postgres".into(), "-".into()]);
        table.row(vec!["ünï".into(), "x".into(), "".into()]);
        assert_eq!(
            table.render(),
            "\
ALIAS         TYPE      DATABASE
mysql_crm_db  mysql     crm
pg            postgres  -
ünï           x
"
        );
        assert_eq!(Table::new(&["A", "B"]).render(), "A  B\n");
    }

    #[test]
    fn fields_align_values() {
        let text =
            fields(&[("Status", "running".into()), ("Output Total", "2300".into()), ("Empty", "".into())]);
        assert_eq!(text, "Status:       running\nOutput Total: 2300\nEmpty:\n");
    }

    #[test]
    fn rates_drop_needless_decimals() {
        assert_eq!(rate(500.0), "500");
        assert_eq!(rate(499.98), "500");
        assert_eq!(rate(12.34), "12.3");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(f64::NAN), "0");
    }

    #[test]
    fn pretty_json_matches_serde_and_keeps_key_order() {
        let compact = r#"{"a":1,"b":[],"c":{},"d":[1,{"e":"x:,{}[] \" \\"}],"f":null,"g":1.50}"#;
        let value: serde_json::Value = serde_json::from_str(compact).unwrap();
        let expected = serde_json::to_string_pretty(&value).unwrap().replace("1.5", "1.50");
        assert_eq!(pretty_json(compact), expected);
        assert_eq!(pretty_json(&expected), expected);
        assert_eq!(pretty_json(r#"{"z":1,"a":2}"#), "{\n  \"z\": 1,\n  \"a\": 2\n}");
        assert_eq!(pretty_json("  [ ]  "), "[]");
        assert_eq!(pretty_json("not json\n"), "not json");
    }
}
