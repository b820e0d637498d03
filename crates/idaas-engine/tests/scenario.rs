//! Initial load then CDC of the CRM Customer table with every type, through the engine.

use crate::common::*;
use idaas_testkit::crm;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_table_is_copied_then_followed() {
    let pair = Arc::new(pair());
    pair.source.sql_db("crm", &crm::customer_ddl("Customer")).unwrap();
    let inserts: Vec<Vec<String>> =
        crm::customer_inserts("Customer", 1, 2000, 200, 11).into_iter().map(|s| vec![s]).collect();
    exec_txns(&pair.source, "crm", &inserts);

    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine.create_connection(conn_spec("src", &pair.source, "crm")).await.unwrap();
    engine.create_connection(conn_spec("tgt", &pair.target, "analytics")).await.unwrap();
    let info = engine.create_pipeline(pipeline_spec("p", "Customer", "CRM_Customer")).await.unwrap();
    assert_eq!(info.status, "running");

    wait_synced(
        &engine,
        "p",
        &pair,
        ("crm", "Customer"),
        ("analytics", "CRM_Customer"),
        Duration::from_secs(60),
    )
    .await;
    let stats = engine.pipeline_stats("p").unwrap();
    assert_eq!(stats.snapshot_rows, 2000);
    assert!(stats.snapshot.iter().all(|t| t.done), "{:?}", stats.snapshot);

    let (txns, _) = crm::customer_changes("Customer", 2000, 2001, 1500, 5);
    exec_txns(&pair.source, "crm", &txns);
    wait_synced(
        &engine,
        "p",
        &pair,
        ("crm", "Customer"),
        ("analytics", "CRM_Customer"),
        Duration::from_secs(60),
    )
    .await;
    let stats = engine.pipeline_stats("p").unwrap();
    assert!(stats.cdc_events >= 1000, "cdc events {}", stats.cdc_events);
    assert_eq!(stats.status, "running");
    assert!(stats.lag_ms.is_some());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collations_and_character_sets_are_copied() {
    let pair = Arc::new(pair());
    pair.source
        .sql_db(
            "crm",
            "CREATE TABLE k (code VARCHAR(10) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PRIMARY KEY, \
             v VARCHAR(20) CHARACTER SET utf8mb3, l TEXT CHARACTER SET latin1 COLLATE latin1_bin); \
             INSERT INTO k VALUES ('a', 'lower', 'é'), ('A', 'upper', 'É')",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine.create_connection(conn_spec("src", &pair.source, "crm")).await.unwrap();
    engine.create_connection(conn_spec("tgt", &pair.target, "analytics")).await.unwrap();
    engine.create_pipeline(pipeline_spec("p", "k", "k")).await.unwrap();
    pair.source
        .sql_db(
            "crm",
            "INSERT INTO k VALUES ('b', 'x', 'ü'), ('B', 'y', 'Ü'); UPDATE k SET v = 'A!' WHERE code = 'A'",
        )
        .unwrap();
    wait_synced(&engine, "p", &pair, ("crm", "k"), ("analytics", "k"), Duration::from_secs(60)).await;
    let cols = pair
        .target
        .sql_db(
            "analytics",
            "SELECT GROUP_CONCAT(CONCAT(COLUMN_NAME, ':', COLLATION_NAME) ORDER BY ORDINAL_POSITION) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'analytics' AND TABLE_NAME = 'k'",
        )
        .unwrap();
    assert_eq!(cols.trim(), "code:utf8mb4_bin,v:utf8mb3_general_ci,l:latin1_bin");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_kind_is_found_by_talking_to_the_server() {
    let mariadb = idaas_testkit::MariaDb::start().unwrap();
    let pg = idaas_testkit::Postgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let mut spec = conn_spec("m", &mariadb, "mysql");
    spec.kind = None;
    assert_eq!(engine.create_connection(spec).await.unwrap().kind, "mysql");
    let spec = idaas_engine::ConnectionSpec {
        alias: "p".into(),
        kind: None,
        host: pg.host().into(),
        port: Some(pg.port()),
        user: pg.user().into(),
        password: pg.password().into(),
        database: Some("postgres".into()),
        daas_db: false,
    };
    assert_eq!(engine.create_connection(spec.clone()).await.unwrap().kind, "postgres");
    let wrong = idaas_engine::ConnectionSpec { alias: "p2".into(), password: "nope".into(), ..spec };
    let err = engine.create_connection(wrong).await.unwrap_err();
    assert_eq!(err.kind, idaas_engine::ErrorKind::AuthFailed, "{}", err.message);
    assert!(!err.message.contains("nope"));
}
