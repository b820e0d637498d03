//! PostgreSQL source under faults: the server killed with SIGKILL during the initial load and during the
//! stream, and PostgreSQL itself restarted during the stream. Afterwards the target equals the source.

use crate::common::*;
use idaas_testkit::Postgres;
use std::time::{Duration, Instant};

fn create_pg_connection(server: &Server, alias: &str, pg: &Postgres) {
    server.cli_ok(&[
        "connection",
        "create",
        "--alias",
        alias,
        "--type",
        "postgres",
        "--host",
        pg.host(),
        "--port",
        &pg.port().to_string(),
        "--user",
        pg.user(),
        "--password",
        pg.password(),
        "--database",
        "postgres",
    ]);
}

fn dump(pg: &Postgres, table: &str) -> String {
    pg.sql(&format!("SELECT * FROM {table} ORDER BY id")).unwrap_or_default()
}

fn wait_pg_equal(server: &Server, source: &Postgres, target: &Postgres, timeout: Duration) {
    let start = Instant::now();
    loop {
        let (a, b) = (dump(source, "public.items"), dump(target, "public.items_copy"));
        if a == b && !a.is_empty() {
            return;
        }
        let stats = server.stats("p");
        assert_ne!(stats["status"], "failed", "pipeline failed: {}", stats["last_error"]);
        assert!(
            start.elapsed() < timeout,
            "target differs: {} source rows, {} target rows; stats {stats}",
            a.lines().count(),
            b.lines().count()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn changes(pg: &Postgres, from: i64, n: i64) {
    pg.sql(&format!(
        "BEGIN; INSERT INTO items SELECT g, 'new ' || g, g * 1.5 FROM generate_series({from}, {}) g; \
         UPDATE items SET v = v || ' upd', n = n + 1 WHERE id % 97 = {}; DELETE FROM items WHERE id % 89 = {}; COMMIT;",
        from + n - 1,
        from % 97,
        from % 89
    ))
    .unwrap();
}

fn setup(rows: i64) -> (Postgres, Postgres, tempfile::TempDir, Server) {
    let source = Postgres::start().unwrap();
    let target = Postgres::start().unwrap();
    source
        .sql(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, v text, n numeric(12,2)); \
             INSERT INTO items SELECT g, repeat('x', 50) || g, g / 3.0 FROM generate_series(1, {rows}) g"
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    create_pg_connection(&server, "src", &source);
    create_pg_connection(&server, "tgt", &target);
    server.cli_ok(&[
        "pipeline",
        "create",
        "--alias",
        "p",
        "--source",
        "src.public.items",
        "--target",
        "tgt.public.items_copy",
        "--auto-create",
        "--start",
    ]);
    (source, target, dir, server)
}

#[test]
fn postgres_source_survives_server_kills_during_load_and_stream() {
    let (source, target, _dir, mut server) = setup(300_000);
    let copied = |s: &serde_json::Value| s["snapshot"][0]["rows_copied"].as_u64().unwrap_or(0);
    let mut before = serde_json::Value::Null;
    wait_for("the first snapshot chunks", Duration::from_secs(120), || {
        before = server.stats("p");
        copied(&before) >= 10_000
    });
    server.kill9();
    assert_eq!(before["snapshot"][0]["done"], false, "the load finished before the kill: {before}");
    changes(&source, 400_000, 500);
    server.restart();
    wait_pg_equal(&server, &source, &target, Duration::from_secs(300));

    // Killed again while changes stream in.
    changes(&source, 500_000, 2_000);
    wait_for("changes to arrive", Duration::from_secs(60), || {
        server.stats("p")["cdc_events"].as_u64().unwrap_or(0) > 0
    });
    server.kill9();
    changes(&source, 600_000, 2_000);
    server.restart();
    wait_pg_equal(&server, &source, &target, Duration::from_secs(180));
    let slot =
        source.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'idaas_%'").unwrap();
    assert_eq!(slot.trim(), "1", "the pipeline keeps exactly its one slot");
}

#[test]
fn postgres_restart_mid_stream_reconnects_and_catches_up() {
    let (mut source, target, _dir, server) = setup(1_000);
    wait_pg_equal(&server, &source, &target, Duration::from_secs(120));
    changes(&source, 10_000, 500);
    source.kill().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    source.restart().unwrap();
    changes(&source, 20_000, 500);
    wait_pg_equal(&server, &source, &target, Duration::from_secs(180));
    assert_eq!(server.stats("p")["status"], "running");
}
