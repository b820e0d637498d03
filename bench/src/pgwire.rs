//! A minimal PostgreSQL client: the simple query protocol over a private server's unix socket, where the
//! testkit trusts every local connection (the bench keeps to the dependencies already in Cargo.lock, and
//! polling through `psql` would cost a process per poll on a 2-core machine).

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub struct PgConn {
    stream: BufReader<UnixStream>,
    what: String,
}

/// One result row: text values, `None` for NULL.
pub type PgRow = Vec<Option<String>>;

impl PgConn {
    /// Connects as `postgres` to database `postgres` through `DIR/.s.PGSQL.PORT`.
    pub async fn connect(socket_dir: &str, port: u16) -> Result<PgConn, String> {
        let path = format!("{socket_dir}/.s.PGSQL.{port}");
        let stream =
            UnixStream::connect(&path).await.map_err(|e| format!("cannot connect to {path}: {e}"))?;
        let mut conn = PgConn { stream: BufReader::new(stream), what: format!("PostgreSQL on port {port}") };
        let mut body = Vec::new();
        body.extend_from_slice(&196_608i32.to_be_bytes()); // protocol 3.0
        for (k, v) in [("user", "postgres"), ("database", "postgres"), ("application_name", "idaas-bench")] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        conn.send(&msg).await?;
        loop {
            let (tag, body) = conn.read_message().await?;
            match tag {
                b'R' => {
                    let code =
                        i32::from_be_bytes(body.get(..4).ok_or("short auth message")?.try_into().unwrap());
                    if code != 0 {
                        return Err(format!(
                            "{}: asks for authentication {code}; only trust is supported",
                            conn.what
                        ));
                    }
                }
                b'E' => return Err(format!("{}: {}", conn.what, error_text(&body))),
                b'Z' => return Ok(conn),
                _ => {}
            }
        }
    }

    async fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        let what = &self.what;
        self.stream.get_mut().write_all(msg).await.map_err(|e| format!("cannot send to {what}: {e}"))
    }

    async fn read_message(&mut self) -> Result<(u8, Vec<u8>), String> {
        let what = self.what.clone();
        let io = |e: std::io::Error| format!("cannot read from {what}: {e}");
        let tag = self.stream.read_u8().await.map_err(io)?;
        let len = self.stream.read_i32().await.map_err(io)?;
        let mut body = vec![0u8; (len as usize).saturating_sub(4)];
        self.stream.read_exact(&mut body).await.map_err(io)?;
        Ok((tag, body))
    }

    /// Runs SQL (one or more statements) and returns the rows of the last result.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<PgRow>, String> {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.send(&msg).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'T' => rows.clear(),
                b'D' => rows.push(parse_row(&body)?),
                b'E' => error = Some(error_text(&body)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(format!("{}: {e} (in: {})", self.what, sql.chars().take(200).collect::<String>())),
            None => Ok(rows),
        }
    }

    /// The first column of the first row of `sql`, or `None` for no row or NULL.
    pub async fn value(&mut self, sql: &str) -> Result<Option<String>, String> {
        Ok(self.query(sql).await?.into_iter().next().and_then(|r| r.into_iter().next().flatten()))
    }
}

fn parse_row(body: &[u8]) -> Result<PgRow, String> {
    let bad = || "malformed DataRow".to_string();
    let n = u16::from_be_bytes(body.get(..2).ok_or_else(bad)?.try_into().unwrap()) as usize;
    let mut at = 2;
    let mut row = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(body.get(at..at + 4).ok_or_else(bad)?.try_into().unwrap());
        at += 4;
        if len < 0 {
            row.push(None);
        } else {
            let v = body.get(at..at + len as usize).ok_or_else(bad)?;
            row.push(Some(String::from_utf8_lossy(v).into_owned()));
            at += len as usize;
        }
    }
    Ok(row)
}

/// The severity and message fields of an ErrorResponse.
fn error_text(body: &[u8]) -> String {
    let mut severity = String::new();
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'S', v)) => severity = String::from_utf8_lossy(v).into_owned(),
            Some((b'M', v)) => message = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    format!("{severity}: {message}")
}

/// Parses an LSN as PostgreSQL prints it (`16/B374D848`).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(hi << 32 | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert!(parse_lsn("16/B374D848").unwrap() > parse_lsn("15/FFFFFFFF").unwrap());
        assert_eq!(parse_lsn("x"), None);
        assert_eq!(parse_lsn(""), None);
    }

    #[test]
    fn rows_parse() {
        // 2 columns: "ab", NULL
        let body = [0, 2, 0, 0, 0, 2, b'a', b'b', 255, 255, 255, 255];
        assert_eq!(parse_row(&body).unwrap(), vec![Some("ab".to_string()), None]);
        assert!(parse_row(&[0, 1, 0, 0, 0, 5, b'a']).is_err());
    }
}
