//! Source schema changes under each policy.

use crate::common::*;
use idaas_engine::DdlPolicy;
use std::sync::Arc;
use std::time::Duration;

async fn setup(policy: DdlPolicy) -> (Arc<Pair>, tempfile::TempDir, Arc<idaas_engine::Engine>) {
    let pair = Arc::new(pair());
    pair.source.sql_db("crm", "CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(20), b INT); INSERT INTO t VALUES (1,'x',1),(2,'y',2)").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine.create_connection(conn_spec("src", &pair.source, "crm")).await.unwrap();
    engine.create_connection(conn_spec("tgt", &pair.target, "analytics")).await.unwrap();
    let mut spec = pipeline_spec("p", "t", "t");
    spec.ddl_policy = policy;
    engine.create_pipeline(spec).await.unwrap();
    wait_equal_async(&pair, ("crm", "t"), ("analytics", "t"), Duration::from_secs(30)).await;
    (pair, dir, engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_drop_column_are_applied() {
    let (pair, _dir, engine) = setup(DdlPolicy::Apply).await;
    pair.source.sql_db("crm", "ALTER TABLE t ADD COLUMN c DATETIME(3) NULL; INSERT INTO t VALUES (3,'z',3,'2024-01-02 03:04:05.678'); UPDATE t SET c = '2020-01-01' WHERE id = 1").unwrap();
    wait_equal_async(&pair, ("crm", "t"), ("analytics", "t"), Duration::from_secs(30)).await;
    pair.source
        .sql_db("crm", "ALTER TABLE t DROP COLUMN b; INSERT INTO t VALUES (4,'w','2024-05-05')")
        .unwrap();
    wait_equal_async(&pair, ("crm", "t"), ("analytics", "t"), Duration::from_secs(30)).await;
    let cols = pair.target.sql_db("analytics", "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA='analytics' AND TABLE_NAME='t'").unwrap();
    assert_eq!(cols.trim(), "id,a,c");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_policy_keeps_the_target_shape() {
    let (pair, _dir, engine) = setup(DdlPolicy::Ignore).await;
    pair.source.sql_db("crm", "ALTER TABLE t ADD COLUMN c INT; INSERT INTO t VALUES (3,'z',3,33); UPDATE t SET a = 'changed' WHERE id = 1").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = pair.target.sql_db("analytics", "SELECT * FROM t ORDER BY id").unwrap();
        if rows == "1\tchanged\t1\n2\ty\t2\n3\tz\t3\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "target rows: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(engine.pipeline_stats("p").unwrap().status, "running");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_policy_fails_the_pipeline_with_the_statement() {
    let (pair, _dir, engine) = setup(DdlPolicy::Stop).await;
    pair.source.sql_db("crm", "ALTER TABLE t ADD COLUMN c INT").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = engine.pipeline_stats("p").unwrap();
        if s.status == "failed" {
            let e = s.last_error.unwrap();
            assert!(e.contains("ADD COLUMN c INT") && e.contains("ddl_policy"), "{e}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "status {}", s.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_is_applied_and_rows_after_it_arrive() {
    let (pair, _dir, engine) = setup(DdlPolicy::Apply).await;
    pair.source.sql_db("crm", "TRUNCATE TABLE t; INSERT INTO t VALUES (9,'after',9)").unwrap();
    wait_equal_async(&pair, ("crm", "t"), ("analytics", "t"), Duration::from_secs(30)).await;
    assert_eq!(pair.target.sql_db("analytics", "SELECT COUNT(*) FROM t").unwrap(), "1\n");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_change_while_stopped_is_replayed_on_resume() {
    for policy in [DdlPolicy::Apply, DdlPolicy::Ignore] {
        let (pair, _dir, engine) = setup(policy).await;
        engine.stop_pipeline("p").await.unwrap();
        pair.source
            .sql_db("crm", "INSERT INTO t VALUES (3,'before',3); ALTER TABLE t ADD COLUMN c INT; INSERT INTO t VALUES (4,'after',4,44); UPDATE t SET a = 'upd' WHERE id = 1")
            .unwrap();
        engine.start_pipeline("p").await.unwrap();
        match policy {
            DdlPolicy::Apply => {
                wait_synced(&engine, "p", &pair, ("crm", "t"), ("analytics", "t"), Duration::from_secs(30))
                    .await
            }
            _ => {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let rows = pair.target.sql_db("analytics", "SELECT * FROM t ORDER BY id").unwrap();
                    if rows == "1\tupd\t1\n2\ty\t2\n3\tbefore\t3\n4\tafter\t4\n" {
                        break;
                    }
                    let s = engine.pipeline_stats("p").unwrap();
                    assert!(
                        std::time::Instant::now() < deadline,
                        "target rows: {rows:?}, {:?}",
                        s.last_error
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        // A restart after the change resumes with the new schema.
        engine.stop_pipeline("p").await.unwrap();
        pair.source.sql_db("crm", "INSERT INTO t VALUES (5,'later',5,55)").unwrap();
        engine.start_pipeline("p").await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pair.target.sql_db("analytics", "SELECT COUNT(*) FROM t WHERE id = 5").unwrap() != "1\n" {
            let s = engine.pipeline_stats("p").unwrap();
            assert!(std::time::Instant::now() < deadline, "{policy:?}: row 5 missing; {:?}", s.last_error);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        engine.shutdown().await;
    }
}
