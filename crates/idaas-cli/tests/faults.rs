//! Crashes and restarts: the server killed with SIGKILL during the initial load and during CDC, and the source
//! database restarted during CDC. Afterwards the target equals the source.

use crate::common::*;
use idaas_testkit::crm;
use std::time::Duration;

fn create_pipeline(server: &Server) {
    server.cli_ok(&[
        "pipeline",
        "create",
        "--alias",
        "p",
        "--source",
        "src.Customer",
        "--target",
        "tgt.CRM_Customer",
        "--auto-create",
        "--start",
    ]);
}

#[test]
fn server_killed_during_the_initial_load_resumes_and_loses_nothing() {
    let (source, target) = crm_pair();
    seed_customers(&source, 60_000);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    create_connection(&server, "src", &source, "crm");
    create_connection(&server, "tgt", &target, "analyticaldb");
    create_pipeline(&server);

    // Kill once some chunks are copied, while changes also arrive.
    let copied = |s: &serde_json::Value| s["snapshot"][0]["rows_copied"].as_u64().unwrap_or(0);
    let mut before_kill = serde_json::Value::Null;
    wait_for("the first snapshot chunks", Duration::from_secs(60), || {
        before_kill = server.stats("p");
        copied(&before_kill) >= 5_000
    });
    server.kill9();
    assert_eq!(before_kill["snapshot"][0]["done"], false, "the load finished before the kill: {before_kill}");
    let (txns, next) = crm::customer_changes("Customer", 60_000, 60_001, 300, 7);
    exec_txns(&source, "crm", &txns);

    let (txns, _) = crm::customer_changes("Customer", 60_000, next, 300, 8);
    exec_txns(&source, "crm", &txns);
    server.restart();
    let src = (&source, "crm", "Customer");
    let tgt = (&target, "analyticaldb", "CRM_Customer");
    wait_equal(&server, "p", src, tgt, Duration::from_secs(240));
    assert_eq!(server.stats("p")["status"], "running");
}

#[test]
fn server_killed_during_cdc_resumes_and_loses_nothing() {
    let (source, target) = crm_pair();
    seed_customers(&source, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    create_connection(&server, "src", &source, "crm");
    create_connection(&server, "tgt", &target, "analyticaldb");
    create_pipeline(&server);
    let src = (&source, "crm", "Customer");
    let tgt = (&target, "analyticaldb", "CRM_Customer");
    wait_equal(&server, "p", src, tgt, Duration::from_secs(120));

    // Changes stream in from another thread while the server is killed and restarted.
    let (txns, _) = crm::customer_changes("Customer", 2_000, 2_001, 4_000, 9);
    let writer = std::thread::scope(|scope| {
        let w = scope.spawn(|| {
            for chunk in txns.chunks(40) {
                exec_txns(&source, "crm", chunk);
            }
        });
        wait_for("some changes to arrive", Duration::from_secs(60), || {
            server.stats("p")["cdc_events"].as_u64().unwrap_or(0) > 200
        });
        server.kill9();
        std::thread::sleep(Duration::from_millis(500));
        server.restart();
        w.join()
    });
    writer.expect("writer thread");
    wait_equal(&server, "p", src, tgt, Duration::from_secs(180));
}

#[test]
fn stop_and_start_resume_from_the_checkpoint() {
    let (source, target) = crm_pair();
    seed_customers(&source, 1_000);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    create_connection(&server, "src", &source, "crm");
    create_connection(&server, "tgt", &target, "analyticaldb");
    create_pipeline(&server);
    let src = (&source, "crm", "Customer");
    let tgt = (&target, "analyticaldb", "CRM_Customer");
    wait_equal(&server, "p", src, tgt, Duration::from_secs(120));
    server.cli_ok(&["pipeline", "stop", "p"]);
    assert_eq!(server.stats("p")["status"], "stopped");
    let (txns, _) = crm::customer_changes("Customer", 1_000, 1_001, 500, 3);
    exec_txns(&source, "crm", &txns);
    std::thread::sleep(Duration::from_millis(500));
    assert_ne!(
        source.sql_db("crm", "CHECKSUM TABLE Customer").unwrap().split('\t').nth(1),
        target.sql_db("analyticaldb", "CHECKSUM TABLE CRM_Customer").unwrap().split('\t').nth(1),
        "a stopped pipeline must not write"
    );
    server.cli_ok(&["pipeline", "start", "p"]);
    wait_equal(&server, "p", src, tgt, Duration::from_secs(120));
}

#[test]
fn source_restart_during_cdc_reconnects_and_catches_up() {
    let (mut source, target) = crm_pair();
    seed_customers(&source, 1_000);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    create_connection(&server, "src", &source, "crm");
    create_connection(&server, "tgt", &target, "analyticaldb");
    create_pipeline(&server);
    let src = (&source, "crm", "Customer");
    let tgt = (&target, "analyticaldb", "CRM_Customer");
    wait_equal(&server, "p", src, tgt, Duration::from_secs(120));

    let (txns, next) = crm::customer_changes("Customer", 1_000, 1_001, 500, 4);
    exec_txns(&source, "crm", &txns);
    source.kill().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    source.restart().unwrap();
    let (txns, _) = crm::customer_changes("Customer", 1_000, next, 500, 5);
    exec_txns(&source, "crm", &txns);
    let src = (&source, "crm", "Customer");
    wait_equal(&server, "p", src, tgt, Duration::from_secs(120));
    let stats = server.stats("p");
    assert_eq!(stats["status"], "running", "{stats}");
}
