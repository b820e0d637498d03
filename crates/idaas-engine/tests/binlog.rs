//! Binlog rotation while streaming, and resuming by GTID after the checkpoint's binlog file was purged.

use crate::common::*;
use idaas_testkit::crm;
use std::sync::Arc;
use std::time::Duration;

async fn running_pipeline() -> (Arc<Pair>, tempfile::TempDir, Arc<idaas_engine::Engine>) {
    let pair = Arc::new(pair());
    pair.source.sql_db("crm", &crm::customer_ddl("Customer")).unwrap();
    let inserts: Vec<Vec<String>> =
        crm::customer_inserts("Customer", 1, 500, 100, 3).into_iter().map(|s| vec![s]).collect();
    exec_txns(&pair.source, "crm", &inserts);
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine.create_connection(conn_spec("src", &pair.source, "crm")).await.unwrap();
    engine.create_connection(conn_spec("tgt", &pair.target, "analytics")).await.unwrap();
    engine.create_pipeline(pipeline_spec("p", "Customer", "Customer")).await.unwrap();
    wait_synced(&engine, "p", &pair, ("crm", "Customer"), ("analytics", "Customer"), Duration::from_secs(60))
        .await;
    (pair, dir, engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_while_streaming_lose_nothing() {
    let (pair, _dir, engine) = running_pipeline().await;
    let mut next = 501;
    for seed in 0..3 {
        let (txns, n) = crm::customer_changes("Customer", 500, next, 200, seed);
        next = n;
        exec_txns(&pair.source, "crm", &txns);
        pair.source.sql("FLUSH BINARY LOGS").unwrap();
    }
    wait_synced(&engine, "p", &pair, ("crm", "Customer"), ("analytics", "Customer"), Duration::from_secs(60))
        .await;
    let cp = engine.pipeline_stats("p").unwrap().checkpoint.unwrap();
    // The last commit is in the third file; an idle heartbeat may already have moved it into the fourth.
    let file = cp["file"].as_str().unwrap();
    assert!(file.ends_with("000003") || file.ends_with("000004"), "checkpoint follows the rotations: {cp}");
    assert!(cp["gtid"].as_str().unwrap().starts_with("0-"), "checkpoint carries the GTID state: {cp}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_by_gtid_when_the_checkpoint_file_is_purged() {
    let (pair, _dir, engine) = running_pipeline().await;
    engine.stop_pipeline("p").await.unwrap();
    let file_before =
        engine.pipeline_stats("p").unwrap().checkpoint.unwrap()["file"].as_str().unwrap().to_string();
    pair.source.sql("FLUSH BINARY LOGS").unwrap();
    let (txns, _) = crm::customer_changes("Customer", 500, 501, 300, 9);
    exec_txns(&pair.source, "crm", &txns);
    let newest = pair.source.sql("SHOW MASTER STATUS").unwrap();
    let newest = newest.split('\t').next().unwrap().to_string();
    pair.source.sql(&format!("PURGE BINARY LOGS TO '{newest}'")).unwrap();
    let files = pair.source.sql("SHOW BINARY LOGS").unwrap();
    assert!(!files.contains(&file_before), "the checkpoint's file must be gone: {files}");
    engine.start_pipeline("p").await.unwrap();
    wait_synced(&engine, "p", &pair, ("crm", "Customer"), ("analytics", "Customer"), Duration::from_secs(60))
        .await;
    engine.shutdown().await;
}
