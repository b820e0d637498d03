//! `idaas-bench servers STATE SPEC...`: private MariaDB and PostgreSQL servers for a shell script.
//!
//! Each SPEC is `NAME[:nobinlog][:parallel=N]` for MariaDB, or `NAME:pg` for PostgreSQL.
//!
//! MariaDB: a server from `idaas-testkit` with the binary log on (ROW, FULL) unless `nobinlog`, and
//! `slave_parallel_threads=N` (optimistic mode) when `parallel=N`. Every MariaDB server gets the same
//! benchmark settings on top of the testkit's (which keep full durability, `innodb_flush_log_at_trx_commit=1`):
//! a larger buffer pool and redo log than the testkit's test-sized ones, from `IDAAS_BENCH_BUFFER_POOL`
//! (default `512M`) and `IDAAS_BENCH_REDO_LOG` (default `256M`).
//!
//! PostgreSQL: a server from `idaas-testkit` (`wal_level=logical`, `fsync=on`, `synchronous_commit=on`, 20
//! WAL senders and slots), with `shared_buffers` from `IDAAS_BENCH_PG_SHARED_BUFFERS` (default `512MB`)
//! instead of the testkit's 32 MB; every other setting is PostgreSQL's default.
//!
//! The state file gets shell variables `NAME_PORT`, `NAME_SOCKET`, `NAME_PID`, `NAME_DATADIR`, `NAME_LOG`
//! per server (NAME in upper case; for PostgreSQL `NAME_SOCKET` is the directory of the unix socket and
//! `NAME_PID` the postmaster's), `NAME_SERVER_ID` per MariaDB server, `PASSWORD` (MariaDB's `root`) when
//! there is a MariaDB server and `PG_PASSWORD` (PostgreSQL's `postgres`) when there is a PostgreSQL one.
//! The servers run until `STATE.stop` appears or the parent process exits; then they are killed and
//! removed with their files.

use crate::args::Args;
use idaas_testkit::{MariaDb, MariaDbOptions, Postgres, PostgresOptions};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    MariaDb { log_bin: bool, parallel: Option<u32> },
    Postgres,
}

struct Spec {
    name: String,
    kind: Kind,
}

enum Server {
    MariaDb(MariaDb),
    Postgres(Postgres),
}

fn parse_spec(s: &str) -> Result<Spec, String> {
    let mut parts = s.split(':');
    let name = parts.next().unwrap_or_default().to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("server name '{name}' must be letters, digits and '_'"));
    }
    let opts: Vec<&str> = parts.collect();
    if opts.contains(&"pg") {
        if opts.len() > 1 {
            return Err(format!("'{s}': a PostgreSQL server ('pg') takes no other option"));
        }
        return Ok(Spec { name, kind: Kind::Postgres });
    }
    let (mut log_bin, mut parallel) = (true, None);
    for p in opts {
        match p.split_once('=') {
            None if p == "nobinlog" => log_bin = false,
            Some(("parallel", n)) => {
                parallel = Some(n.parse().map_err(|_| format!("parallel={n}: not a number"))?)
            }
            _ => return Err(format!("unknown server option '{p}' in '{s}'")),
        }
    }
    Ok(Spec { name, kind: Kind::MariaDb { log_bin, parallel } })
}

pub fn up(args: &Args) -> Result<(), String> {
    let (state, specs) =
        args.positional.split_first().ok_or("servers: STATE and at least one SPEC needed")?;
    let specs: Vec<Spec> = specs.iter().map(|s| parse_spec(s)).collect::<Result<_, _>>()?;
    if specs.is_empty() {
        return Err("servers: at least one SPEC needed".into());
    }
    let pool = std::env::var("IDAAS_BENCH_BUFFER_POOL").unwrap_or_else(|_| "512M".into());
    let redo = std::env::var("IDAAS_BENCH_REDO_LOG").unwrap_or_else(|_| "256M".into());
    let pg_buffers = std::env::var("IDAAS_BENCH_PG_SHARED_BUFFERS").unwrap_or_else(|_| "512MB".into());
    let mut servers = Vec::new();
    let mut vars = String::new();
    let (mut maria_password, mut pg_password) = (None, None);
    for spec in &specs {
        let up = spec.name.to_ascii_uppercase();
        match spec.kind {
            Kind::MariaDb { log_bin, parallel } => {
                let mut extra = vec![
                    format!("--innodb-buffer-pool-size={pool}"),
                    format!("--innodb-log-file-size={redo}"),
                ];
                if let Some(n) = parallel {
                    extra.push(format!("--slave-parallel-threads={n}"));
                    extra.push("--slave-parallel-mode=optimistic".into());
                }
                let opts = MariaDbOptions { log_bin, extra_args: extra, ..Default::default() };
                let db = MariaDb::start_with(opts)
                    .map_err(|e| format!("cannot start MariaDB '{}': {e}", spec.name))?;
                vars.push_str(&format!(
                    "{up}_PORT={}\n{up}_SOCKET={}\n{up}_PID={}\n{up}_DATADIR={}\n{up}_SERVER_ID={}\n{up}_LOG={}\n",
                    db.port(),
                    db.socket().display(),
                    db.pid().unwrap_or(0),
                    db.data_dir().display(),
                    db.server_id(),
                    db.log_file().display(),
                ));
                eprintln!("idaas-bench: MariaDB '{}' on port {}", spec.name, db.port());
                maria_password.get_or_insert_with(|| db.password().to_string());
                servers.push(Server::MariaDb(db));
            }
            Kind::Postgres => {
                let opts = PostgresOptions {
                    extra_conf: vec![("shared_buffers".into(), pg_buffers.clone())],
                    ..Default::default()
                };
                let pg = Postgres::start_with(opts)
                    .map_err(|e| format!("cannot start PostgreSQL '{}': {e}", spec.name))?;
                vars.push_str(&format!(
                    "{up}_PORT={}\n{up}_SOCKET={}\n{up}_PID={}\n{up}_DATADIR={}\n{up}_LOG={}\n",
                    pg.port(),
                    pg.socket_dir().display(),
                    pg.pid().unwrap_or(0),
                    pg.data_dir().display(),
                    pg.log_file().display(),
                ));
                eprintln!("idaas-bench: PostgreSQL '{}' on port {}", spec.name, pg.port());
                pg_password.get_or_insert_with(|| pg.password().to_string());
                servers.push(Server::Postgres(pg));
            }
        }
    }
    if let Some(p) = maria_password {
        vars.push_str(&format!("PASSWORD={p}\n"));
    }
    if let Some(p) = pg_password {
        vars.push_str(&format!("PG_PASSWORD={p}\n"));
    }
    let tmp = format!("{state}.tmp");
    std::fs::write(&tmp, vars).map_err(|e| format!("cannot write {tmp}: {e}"))?;
    std::fs::rename(&tmp, state).map_err(|e| format!("cannot write {state}: {e}"))?;
    let parent = std::os::unix::process::parent_id();
    let stop = format!("{state}.stop");
    while !Path::new(&stop).exists() && std::os::unix::process::parent_id() == parent {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Killed, not shut down: the data is thrown away, and a clean shutdown would first flush the buffers.
    for server in servers {
        match server {
            Server::MariaDb(db) => drop(db),
            Server::Postgres(pg) => drop(pg),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s = parse_spec("rep:nobinlog:parallel=4").unwrap();
        assert_eq!((s.name.as_str(), s.kind), ("rep", Kind::MariaDb { log_bin: false, parallel: Some(4) }));
        let s = parse_spec("src").unwrap();
        assert_eq!(s.kind, Kind::MariaDb { log_bin: true, parallel: None });
        let s = parse_spec("sub:pg").unwrap();
        assert_eq!((s.name.as_str(), s.kind), ("sub", Kind::Postgres));
        assert!(parse_spec("a-b").is_err());
        assert!(parse_spec("a:fast").is_err());
        assert!(parse_spec("a:pg:nobinlog").is_err());
    }
}
