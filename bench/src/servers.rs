//! `idaas-bench servers STATE SPEC...`: private MariaDB servers for a shell script.
//!
//! Each SPEC is `NAME[:nobinlog][:parallel=N]`: a server from `idaas-testkit` with the binary log on
//! (ROW, FULL) unless `nobinlog`, and `slave_parallel_threads=N` (optimistic mode) when `parallel=N`.
//! Every server gets the same benchmark settings on top of the testkit's (which keep full durability,
//! `innodb_flush_log_at_trx_commit=1`): a larger buffer pool and redo log than the testkit's test-sized ones,
//! from `IDAAS_BENCH_BUFFER_POOL` (default `512M`) and `IDAAS_BENCH_REDO_LOG` (default `256M`).
//!
//! The state file gets shell variables `NAME_PORT`, `NAME_SOCKET`, `NAME_PID`, `NAME_DATADIR`,
//! `NAME_SERVER_ID`, `NAME_LOG` per server and `PASSWORD` (NAME in upper case). The servers run until
//! `STATE.stop` appears or the parent process exits; then they are killed and removed with their files.

use crate::args::Args;
use idaas_testkit::{MariaDb, MariaDbOptions};
use std::path::Path;
use std::time::Duration;

struct Spec {
    name: String,
    log_bin: bool,
    parallel: Option<u32>,
}

fn parse_spec(s: &str) -> Result<Spec, String> {
    let mut parts = s.split(':');
    let name = parts.next().unwrap_or_default().to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("server name '{name}' must be letters, digits and '_'"));
    }
    let mut spec = Spec { name, log_bin: true, parallel: None };
    for p in parts {
        match p.split_once('=') {
            None if p == "nobinlog" => spec.log_bin = false,
            Some(("parallel", n)) => {
                spec.parallel = Some(n.parse().map_err(|_| format!("parallel={n}: not a number"))?)
            }
            _ => return Err(format!("unknown server option '{p}' in '{s}'")),
        }
    }
    Ok(spec)
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
    let mut servers = Vec::new();
    let mut vars = String::new();
    for spec in &specs {
        let mut extra =
            vec![format!("--innodb-buffer-pool-size={pool}"), format!("--innodb-log-file-size={redo}")];
        if let Some(n) = spec.parallel {
            extra.push(format!("--slave-parallel-threads={n}"));
            extra.push("--slave-parallel-mode=optimistic".into());
        }
        let opts = MariaDbOptions { log_bin: spec.log_bin, extra_args: extra, ..Default::default() };
        let db =
            MariaDb::start_with(opts).map_err(|e| format!("cannot start MariaDB '{}': {e}", spec.name))?;
        let up = spec.name.to_ascii_uppercase();
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
        servers.push(db);
    }
    vars.push_str(&format!("PASSWORD={}\n", servers[0].password()));
    let tmp = format!("{state}.tmp");
    std::fs::write(&tmp, vars).map_err(|e| format!("cannot write {tmp}: {e}"))?;
    std::fs::rename(&tmp, state).map_err(|e| format!("cannot write {state}: {e}"))?;
    let parent = std::os::unix::process::parent_id();
    let stop = format!("{state}.stop");
    while !Path::new(&stop).exists() && std::os::unix::process::parent_id() == parent {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Killed, not shut down: the data is thrown away, and a clean shutdown would first flush the buffer pool.
    drop(servers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s = parse_spec("rep:nobinlog:parallel=4").unwrap();
        assert_eq!((s.name.as_str(), s.log_bin, s.parallel), ("rep", false, Some(4)));
        let s = parse_spec("src").unwrap();
        assert!(s.log_bin && s.parallel.is_none());
        assert!(parse_spec("a-b").is_err());
        assert!(parse_spec("a:fast").is_err());
    }
}
