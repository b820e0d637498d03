//! The brief's Scenario A: register two MariaDB databases, copy `Customer` with AutoCreate, follow every
//! change, read the stats.

use crate::common::*;
use idaas_testkit::crm;
use std::time::Duration;

#[test]
fn scenario_a_initial_load_then_cdc_with_every_type() {
    let (source, target) = crm_pair();
    seed_customers(&source, 10_000);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());

    create_connection(&server, "mysql_crm_db", &source, "crm");
    create_connection(&server, "mysql_analytical_db", &target, "analyticaldb");
    let listed = server.cli_ok(&["connection", "list"]);
    assert!(listed.contains("mysql_crm_db") && listed.contains("mysql_analytical_db"), "{listed}");
    assert!(!listed.contains(source.password()), "password leaked into the listing");

    let tables = server.cli_ok(&["connection", "tables", "mysql_crm_db"]);
    assert!(tables.contains("Customer"), "{tables}");
    let desc = server.cli_ok(&["--json", "connection", "describe", "mysql_crm_db", "Customer"]);
    let desc: serde_json::Value = serde_json::from_str(&desc).unwrap();
    assert_eq!(desc["primary_key"], serde_json::json!(["id"]));
    assert_eq!(desc["columns"].as_array().unwrap().len(), 42);
    let col = |n: &str| desc["columns"].as_array().unwrap().iter().find(|c| c["name"] == n).unwrap().clone();
    assert_eq!(col("t_big_u")["data_type"], serde_json::json!({"kind": "int", "bytes": 8, "unsigned": true}));
    assert_eq!(col("t_json")["data_type"]["kind"], "json");
    assert_eq!(col("name")["nullable"], false);
    assert_eq!(col("t_datetime6")["source_type"], "datetime(6)");

    server.cli_ok(&[
        "pipeline",
        "create",
        "--alias",
        "my_pipeline",
        "--source",
        "mysql_crm_db.Customer",
        "--target",
        "mysql_analytical_db.CRM_Customer",
        "--auto-create",
        "--start",
    ]);
    let src = (&source, "crm", "Customer");
    let tgt = (&target, "analyticaldb", "CRM_Customer");
    wait_equal(&server, "my_pipeline", src, tgt, Duration::from_secs(180));
    let stats = server.stats("my_pipeline");
    assert_eq!(stats["snapshot"][0]["rows_copied"], 10_000, "{stats}");
    assert_eq!(stats["snapshot"][0]["done"], true, "{stats}");

    // 5,000 mixed changes, most in multi-statement transactions.
    let (txns, _) = crm::customer_changes("Customer", 10_000, 10_001, 5_000, 42);
    assert!(txns.iter().filter(|t| t.len() > 1).count() > txns.len() / 2);
    exec_txns(&source, "crm", &txns);
    wait_equal(&server, "my_pipeline", src, tgt, Duration::from_secs(180));

    let stats = server.stats("my_pipeline");
    assert_eq!(stats["status"], "running");
    let input = stats["input_total"].as_u64().unwrap();
    let output = stats["output_total"].as_u64().unwrap();
    assert!(input >= 15_000, "{stats}");
    assert_eq!(input, output, "everything read is written: {stats}");
    assert!(stats["cdc_events"].as_u64().unwrap() >= 5_000, "{stats}");
    assert!(stats["last_input"].is_string() && stats["last_output"].is_string(), "{stats}");
    assert!(stats["lag_ms"].is_i64(), "{stats}");

    let text = server.cli_ok(&["pipeline", "stats", "my_pipeline"]);
    for label in
        ["Status:", "Input Total:", "Output Total:", "Throughput:", "Last Input:", "Last Output:", "Lag:"]
    {
        assert!(text.contains(label), "missing {label} in\n{text}");
    }
    assert!(text.contains("running") && text.contains(&input.to_string()), "{text}");
    assert!(text.contains("events/second"), "{text}");
}
