//! A tiny `--key value` / `--flag` parser (the bench keeps to the dependencies already in Cargo.lock).

use std::collections::HashMap;
use std::str::FromStr;

/// Positional arguments and `--key value` options; a `--key` followed by another `--key` (or by
/// nothing) is a flag.
#[derive(Debug, Default)]
pub struct Args {
    pub positional: Vec<String>,
    options: HashMap<String, Option<String>>,
}

impl Args {
    pub fn parse(argv: &[String]) -> Result<Args, String> {
        let mut out = Args::default();
        let mut i = 0;
        while i < argv.len() {
            let a = &argv[i];
            if let Some(key) = a.strip_prefix("--") {
                if key.is_empty() {
                    return Err("empty option name".into());
                }
                let value = argv.get(i + 1).filter(|v| !v.starts_with("--")).cloned();
                if value.is_some() {
                    i += 1;
                }
                out.options.insert(key.to_string(), value);
            } else {
                out.positional.push(a.clone());
            }
            i += 1;
        }
        Ok(out)
    }

    pub fn flag(&self, key: &str) -> bool {
        self.options.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.options.get(key).and_then(|v| v.as_deref())
    }

    pub fn req(&self, key: &str) -> Result<&str, String> {
        self.get(key).ok_or_else(|| format!("--{key} is required"))
    }

    pub fn num<T: FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: '{v}' is not a number")),
        }
    }

    pub fn req_num<T: FromStr>(&self, key: &str) -> Result<T, String> {
        let v = self.req(key)?;
        v.parse().map_err(|_| format!("--{key}: '{v}' is not a number"))
    }

    /// `--pids name=PID,name=PID`.
    pub fn pids(&self) -> Result<Vec<(String, u32)>, String> {
        let Some(list) = self.get("pids") else { return Ok(Vec::new()) };
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(|item| {
                let (name, pid) =
                    item.split_once('=').ok_or_else(|| format!("--pids: '{item}' is not name=PID"))?;
                let pid = pid.parse().map_err(|_| format!("--pids: '{pid}' is not a PID"))?;
                Ok((name.to_string(), pid))
            })
            .collect()
    }

    /// `--t0 EPOCH_SECONDS` (as `date +%s.%N` prints it), or now.
    pub fn t0_us(&self) -> Result<i64, String> {
        match self.get("t0") {
            None => Ok(crate::procfs::now_us()),
            Some(v) => parse_epoch_us(v).ok_or_else(|| format!("--t0: '{v}' is not SECONDS[.FRACTION]")),
        }
    }
}

/// `1732480000.123456789` -> microseconds, without going through a float.
pub fn parse_epoch_us(v: &str) -> Option<i64> {
    let (secs, frac) = v.trim().split_once('.').unwrap_or((v.trim(), ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut micros = frac.chars().take(6).collect::<String>();
    while micros.len() < 6 {
        micros.push('0');
    }
    Some(secs * 1_000_000 + micros.parse::<i64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_flags_and_positionals() {
        let argv: Vec<String> = ["state", "--rate", "5000", "--applied-at", "--secs", "3", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = Args::parse(&argv).unwrap();
        assert_eq!(a.positional, vec!["state", "x"]);
        assert_eq!(a.num("rate", 0u32).unwrap(), 5000);
        assert!(a.flag("applied-at"));
        assert_eq!(a.get("applied-at"), None);
        assert_eq!(a.num("conns", 4u32).unwrap(), 4);
    }

    #[test]
    fn epoch_parses_exactly() {
        assert_eq!(parse_epoch_us("1732480000.123456789"), Some(1_732_480_000_123_456));
        assert_eq!(parse_epoch_us("1732480000.5"), Some(1_732_480_000_500_000));
        assert_eq!(parse_epoch_us("1732480000"), Some(1_732_480_000_000_000));
        assert_eq!(parse_epoch_us("x.1"), None);
    }
}
