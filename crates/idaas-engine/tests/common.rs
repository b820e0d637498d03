//! Shared helpers: servers, seeding, waiting for the target to equal the source.

use idaas_engine::{ConnectionSpec, DdlPolicy, Engine, PipelineSpec, SyncMode, TableSpec};
use idaas_testkit::MariaDb;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source and a target server with databases `crm` and `analytics`.
pub struct Pair {
    pub source: MariaDb,
    pub target: MariaDb,
}

pub fn pair() -> Pair {
    let source = MariaDb::start().expect("start source MariaDB");
    let target = MariaDb::start().expect("start target MariaDB");
    source.sql("CREATE DATABASE crm").unwrap();
    target.sql("CREATE DATABASE analytics").unwrap();
    Pair { source, target }
}

/// Runs statements on `db`, each transaction in BEGIN/COMMIT, with zero dates allowed.
pub fn exec_txns(server: &MariaDb, db: &str, txns: &[Vec<String>]) {
    let sql =
        format!("{}{}", idaas_testkit::crm::MARIADB_FIXTURE_MODE, idaas_testkit::crm::transactions_sql(txns));
    server.sql_db(db, &sql).expect("source statements");
}

pub fn dump(server: &MariaDb, db: &str, table: &str) -> String {
    server.sql_db(db, &format!("SELECT * FROM `{table}` ORDER BY 1")).expect("dump table")
}

/// Waits until the target table holds exactly the source table's rows; panics with a diff hint otherwise.
pub fn wait_equal(pair: &Pair, src: (&str, &str), tgt: (&str, &str), timeout: Duration) {
    let start = Instant::now();
    loop {
        let a = dump(&pair.source, src.0, src.1);
        let b =
            pair.target.sql_db(tgt.0, &format!("SELECT * FROM `{}` ORDER BY 1", tgt.1)).unwrap_or_default();
        if a == b {
            return;
        }
        if start.elapsed() > timeout {
            let al: Vec<&str> = a.lines().collect();
            let bl: Vec<&str> = b.lines().collect();
            let first = al.iter().zip(&bl).position(|(x, y)| x != y);
            panic!(
                "target differs from source after {:?}: {} source rows, {} target rows; first difference at row {:?}:\n  source: {:?}\n  target: {:?}",
                timeout,
                al.len(),
                bl.len(),
                first,
                first.and_then(|i| al.get(i)).map(|l| l.chars().take(400).collect::<String>()),
                first.and_then(|i| bl.get(i)).map(|l| l.chars().take(400).collect::<String>()),
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub async fn engine(dir: &std::path::Path) -> Arc<Engine> {
    Engine::open(dir).await.expect("open engine")
}

pub fn conn_spec(alias: &str, server: &MariaDb, db: &str) -> ConnectionSpec {
    ConnectionSpec {
        alias: alias.into(),
        kind: Some("mysql".into()),
        host: server.host().into(),
        port: Some(server.port()),
        user: server.user().into(),
        password: server.password().into(),
        database: Some(db.into()),
        daas_db: false,
    }
}

pub fn pipeline_spec(alias: &str, src_table: &str, tgt_table: &str) -> PipelineSpec {
    PipelineSpec {
        alias: alias.into(),
        source: TableSpec { connection: "src".into(), table: src_table.into() },
        target: TableSpec { connection: "tgt".into(), table: tgt_table.into() },
        auto_create: true,
        mode: SyncMode::InitialAndCdc,
        ddl_policy: DdlPolicy::Apply,
        start: true,
    }
}

/// Async-friendly wait: runs the blocking comparison on a blocking thread.
pub async fn wait_equal_async(
    pair: &Arc<Pair>,
    src: (&'static str, &'static str),
    tgt: (&'static str, &'static str),
    timeout: Duration,
) {
    let p = pair.clone();
    tokio::task::spawn_blocking(move || wait_equal(&p, src, tgt, timeout)).await.expect("comparison thread");
}

/// Like [`wait_equal_async`], and fails at once with the pipeline's error when it stops.
pub async fn wait_synced(
    engine: &Engine,
    pipeline: &str,
    pair: &Arc<Pair>,
    src: (&'static str, &'static str),
    tgt: (&'static str, &'static str),
    timeout: Duration,
) {
    let p = pair.clone();
    let mut cmp = tokio::task::spawn_blocking(move || wait_equal(&p, src, tgt, timeout));
    loop {
        tokio::select! {
            r = &mut cmp => {
                if let Err(e) = r {
                    let s = engine.pipeline_stats(pipeline).unwrap();
                    panic!("{e:?}\npipeline status {} error {:?}", s.status, s.last_error);
                }
                return;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                let s = engine.pipeline_stats(pipeline).unwrap();
                if s.status == "failed" {
                    panic!("pipeline {pipeline} failed: {:?}", s.last_error);
                }
            }
        }
    }
}
