//! Private MariaDB servers for the Scenario A demo (`scripts/scenario-a.sh`).
//!
//! `idaas-demo-db up STATE_FILE [ROWS]` starts a source and a target MariaDB, creates the brief's `demo`
//! user on both, seeds `crm.Customer` with ROWS rows (default 10000) of every column type, writes the
//! servers' ports and sockets to STATE_FILE as shell variables, and keeps the servers running until
//! `STATE_FILE.stop` appears or the parent process exits; then it removes them.
//!
//! `idaas-demo-db changes FIRST_FREE_ID OPS SEED` prints SQL transactions of mixed changes to stdout.

use idaas_testkit::{MariaDb, crm};
use std::time::Duration;

const DEMO_PASSWORD: &str = "demo-password";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("up") if args.len() >= 3 => {
            up(&args[2], args.get(3).and_then(|r| r.parse().ok()).unwrap_or(10_000))
        }
        Some("changes") if args.len() >= 5 => {
            let next: i64 = args[2].parse().expect("FIRST_FREE_ID");
            let ops: usize = args[3].parse().expect("OPS");
            let seed: u64 = args[4].parse().expect("SEED");
            let (txns, _) = crm::customer_changes("Customer", next - 1, next, ops, seed);
            println!("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION';");
            for t in txns {
                println!("BEGIN;");
                for s in t {
                    println!("{s};");
                }
                println!("COMMIT;");
            }
        }
        _ => {
            eprintln!(
                "usage: idaas-demo-db up STATE_FILE [ROWS] | idaas-demo-db changes FIRST_FREE_ID OPS SEED"
            );
            std::process::exit(2);
        }
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("idaas-demo-db: {what}: {e}");
    std::process::exit(1);
}

fn up(state: &str, rows: i64) {
    let source = MariaDb::start().unwrap_or_else(|e| fail("cannot start the source MariaDB", e));
    let target = MariaDb::start().unwrap_or_else(|e| fail("cannot start the target MariaDB", e));
    let user = format!(
        "CREATE USER demo@'%' IDENTIFIED BY '{DEMO_PASSWORD}'; \
         GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO demo@'%';"
    );
    source
        .sql(&format!("CREATE DATABASE crm; {user}"))
        .unwrap_or_else(|e| fail("cannot prepare the source", e));
    target
        .sql(&format!("CREATE DATABASE analyticaldb; {user} GRANT ALL ON analyticaldb.* TO demo@'%';"))
        .unwrap_or_else(|e| fail("cannot prepare the target", e));
    let mut sql =
        format!("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION';\n{};\n", crm::customer_ddl("Customer"));
    for s in crm::customer_inserts("Customer", 1, rows, 500, 1) {
        sql.push_str(&s);
        sql.push_str(";\n");
    }
    source.sql_db("crm", &sql).unwrap_or_else(|e| fail("cannot seed crm.Customer", e));
    let vars = format!(
        "SRC_PORT={}\nSRC_SOCKET={}\nTGT_PORT={}\nTGT_SOCKET={}\nROOT_PASSWORD={}\nDEMO_PASSWORD={DEMO_PASSWORD}\nROWS={rows}\n",
        source.port(),
        source.socket().display(),
        target.port(),
        target.socket().display(),
        source.password(),
    );
    let tmp = format!("{state}.tmp");
    std::fs::write(&tmp, vars).unwrap_or_else(|e| fail("cannot write the state file", e));
    std::fs::rename(&tmp, state).unwrap_or_else(|e| fail("cannot write the state file", e));
    let parent = std::os::unix::process::parent_id();
    let stop = format!("{state}.stop");
    while !std::path::Path::new(&stop).exists() && std::os::unix::process::parent_id() == parent {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(source);
    drop(target);
}
