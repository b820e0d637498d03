//! `idaas-bench`: the Rust half of `bench/run.sh`.
//!
//! ```text
//! idaas-bench servers STATE NAME[:nobinlog][:parallel=N]|NAME:pg ...   start private MariaDB/PostgreSQL servers
//! idaas-bench wait-pipeline --api HOST:PORT --pipeline P --file F --pos N [...]
//! idaas-bench wait-replica --port P --file F --pos N [...]
//! idaas-bench wait-snapshot --api HOST:PORT --pipeline P --pid PID [...]
//! idaas-bench wait-lsn --lsn LSN (--api HOST:PORT --pipeline P | --socket DIR --port P --subscription S) [...]
//! idaas-bench wait-subscription-copy --socket DIR --port P --subscription S [...]
//! idaas-bench latency --source-port P --check-port P [--poll-port P] [--applied-at] [...]
//! idaas-bench report DIR                                       Markdown summary of a run.sh run
//! ```
//!
//! Every timer prints one JSON object on stdout; progress and errors go to stderr. Times are wall-clock
//! (`CLOCK_REALTIME`), shared by every process on the machine, so a time taken here can be compared with
//! one taken by a MariaDB server or by the shell (`date +%s.%N`).
//!
//! PostgreSQL servers are polled through their unix sockets ([`pgwire`]), where the testkit trusts local
//! connections.

mod args;
mod http;
mod latency;
mod pgwait;
mod pgwire;
mod procfs;
mod report;
mod servers;
mod wait;

use std::process::ExitCode;

const USAGE: &str = "\
usage: idaas-bench servers STATE NAME[:nobinlog][:parallel=N]|NAME:pg ...
       idaas-bench wait-pipeline --api HOST:PORT --pipeline P --file F --pos N [--t0 EPOCH] [--timeout S]
                                 [--cdc-only] [--pids name=PID,...] [--interval-ms N] [--timeline FILE]
       idaas-bench wait-replica --port P --password PW --file F --pos N [--t0 EPOCH] [--timeout S]
                                [--pids name=PID,...] [--interval-ms N] [--timeline FILE]
       idaas-bench wait-snapshot --api HOST:PORT --pipeline P --pid PID [--t0 EPOCH] [--timeout S]
                                 [--pids name=PID,...] [--interval-ms N] [--timeline FILE]
       idaas-bench wait-lsn (--lsn LSN | --lsn-file FILE)
                            (--api HOST:PORT --pipeline P | --socket DIR --port P --subscription S)
                            [--check-socket DIR --check-port P --check-sql SQL --expected TEXT]
                            [--t0 EPOCH] [--timeout S] [--pids name=PID,...] [--interval-ms N]
                            [--timeline FILE] [--rss-pid PID] [--rss-interval-ms N] [--rss-timeline FILE]
       idaas-bench wait-subscription-copy --socket DIR --port P --subscription S [--t0 EPOCH] [--timeout S]
                                          [--pids name=PID,...] [--interval-ms N] [--timeline FILE]
       idaas-bench latency --source-port P --check-port P --password PW [--poll-port P] [--applied-at]
                           [--rate N] [--secs N] [--conns N] [--update-every N] [--first-id N]
                           [--pids name=PID,...] [--raw FILE]
       idaas-bench report DIR";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let parsed = match args::Args::parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("idaas-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command.as_str() {
        "servers" => servers::up(&parsed),
        "wait-pipeline" => runtime().and_then(|rt| rt.block_on(wait::pipeline(&parsed))),
        "wait-replica" => runtime().and_then(|rt| rt.block_on(wait::replica(&parsed))),
        "wait-snapshot" => runtime().and_then(|rt| rt.block_on(wait::snapshot(&parsed))),
        "wait-lsn" => runtime().and_then(|rt| rt.block_on(pgwait::lsn(&parsed))),
        "wait-subscription-copy" => runtime().and_then(|rt| rt.block_on(pgwait::subscription_copy(&parsed))),
        "latency" => runtime().and_then(|rt| rt.block_on(latency::run(&parsed))),
        "report" => report::run(&parsed),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idaas-bench {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Two worker threads: the machine has two cores, and a waiter or load generator must not steal more.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start Tokio: {e}"))
}
