//! Bad input gets a clear error through the API and the CLI, and leaves nothing half-created.

use crate::common::*;
use idaas_testkit::{MariaDb, MariaDbOptions};
use serde_json::json;

fn conn_body(alias: &str, db: &MariaDb, password: &str, database: &str) -> serde_json::Value {
    json!({"alias": alias, "type": "mysql", "host": db.host(), "port": db.port(), "user": db.user(),
           "password": password, "database": database})
}

fn assert_error(status: u16, body: &serde_json::Value, want_status: u16, kind: &str, words: &[&str]) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["kind"], kind, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} lacks {w:?}");
    }
}

fn pipeline_body(alias: &str, source_table: &str, target_table: &str) -> serde_json::Value {
    json!({"alias": alias, "source": {"connection": "src", "table": source_table},
           "target": {"connection": "tgt", "table": target_table}, "auto_create": true})
}

#[test]
fn wrong_password_and_unreachable_host_are_refused_and_not_saved() {
    let (source, _target) = crm_pair();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());

    let (status, body) =
        server.api("POST", "/api/v1/connections", Some(conn_body("c1", &source, "not-the-password", "crm")));
    assert_error(status, &body, 422, "auth_failed", &["c1", "access denied", "password"]);
    assert!(!body.to_string().contains("not-the-password"), "password echoed: {body}");

    let out = server.cli(&[
        "connection",
        "create",
        "--alias",
        "c1",
        "--type",
        "mysql",
        "--host",
        "127.0.0.1",
        "--port",
        &source.port().to_string(),
        "--user",
        "root",
        "--password",
        "wrong-pw-123",
        "--database",
        "crm",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: ") && stderr.contains("access denied"), "{stderr}");
    assert!(!stderr.contains("wrong-pw-123"));

    let free = idaas_testkit::free_port();
    let (status, body) = server.api(
        "POST",
        "/api/v1/connections",
        Some(json!({"alias": "c2", "type": "mysql", "host": "127.0.0.1", "port": free, "user": "u", "password": "p"})),
    );
    assert_error(status, &body, 422, "unreachable", &["c2", "cannot reach"]);

    let (status, list) = server.api("GET", "/api/v1/connections", None);
    assert_eq!((status, list), (200, json!([])), "nothing may be saved");
}

#[test]
fn duplicate_aliases_are_refused() {
    let (source, target) = crm_pair();
    source.sql_db("crm", "CREATE TABLE t (id INT PRIMARY KEY)").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    create_connection(&server, "src", &source, "crm");
    create_connection(&server, "tgt", &target, "analyticaldb");
    let (status, body) =
        server.api("POST", "/api/v1/connections", Some(conn_body("src", &source, source.password(), "crm")));
    assert_error(status, &body, 409, "already_exists", &["src"]);
    let (status, body) = server.api("POST", "/api/v1/pipelines", Some(pipeline_body("src", "t", "t")));
    assert_error(status, &body, 409, "already_exists", &["src"]);
    let (status, body) = server.api("POST", "/api/v1/pipelines", Some(pipeline_body("p", "t", "t")));
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.api("POST", "/api/v1/pipelines", Some(pipeline_body("p", "t", "t2")));
    assert_error(status, &body, 409, "already_exists", &["p"]);
    let out = server.cli(&["pipeline", "create", "--alias", "p", "--source", "src.t", "--target", "tgt.t3"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = target
        .sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='analyticaldb'")
        .unwrap();
    assert_eq!(tables, "t\n", "refused pipelines create no target tables");
}

#[test]
fn binlog_off_unknown_table_and_incompatible_target_create_nothing() {
    let source = MariaDb::start_with(MariaDbOptions { log_bin: false, ..Default::default() }).unwrap();
    let (good_source, target) = crm_pair();
    source.sql("CREATE DATABASE crm; CREATE TABLE crm.t (id INT PRIMARY KEY, name VARCHAR(20))").unwrap();
    good_source
        .sql_db("crm", "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20)); CREATE TABLE nokey (a INT)")
        .unwrap();
    target.sql_db("analyticaldb", "CREATE TABLE bad (id INT PRIMARY KEY, name INT)").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    create_connection(&server, "nobinlog", &source, "crm");
    create_connection(&server, "src", &good_source, "crm");
    create_connection(&server, "tgt", &target, "analyticaldb");

    // Binary log off.
    let body = json!({"alias": "p1", "source": {"connection": "nobinlog", "table": "t"},
                      "target": {"connection": "tgt", "table": "t"}, "auto_create": true});
    let (status, body) = server.api("POST", "/api/v1/pipelines", Some(body));
    assert_error(status, &body, 422, "source_config", &["nobinlog", "log_bin", "--log-bin"]);
    let out = server.cli(&[
        "pipeline",
        "create",
        "--alias",
        "p1",
        "--source",
        "nobinlog.t",
        "--target",
        "tgt.t",
        "--auto-create",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("binary log is off"), "{out:?}");
    let out = server.cli(&["connection", "test", "nobinlog"]);
    assert!(!out.status.success(), "a failing check exits non-zero");
    assert!(String::from_utf8_lossy(&out.stdout).contains("log_bin"), "{out:?}");

    // Unknown table.
    let (status, body) = server.api("POST", "/api/v1/pipelines", Some(pipeline_body("p2", "Nope", "t")));
    assert_error(status, &body, 404, "not_found", &["crm.Nope", "does not exist"]);

    // No primary key.
    let (status, body) = server.api("POST", "/api/v1/pipelines", Some(pipeline_body("p3", "nokey", "nokey")));
    assert_error(status, &body, 400, "unsupported", &["crm.nokey", "no primary key"]);

    // A target that exists with a shape that does not fit.
    let (status, body) = server.api("POST", "/api/v1/pipelines", Some(pipeline_body("p4", "t", "bad")));
    assert_error(status, &body, 400, "incompatible", &["analyticaldb.bad", "'name'", "varchar(20)"]);
    let out = server.cli(&[
        "pipeline",
        "create",
        "--alias",
        "p4",
        "--source",
        "src.t",
        "--target",
        "tgt.bad",
        "--auto-create",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not fit"), "{out:?}");

    let (_, pipelines) = server.api("GET", "/api/v1/pipelines", None);
    assert_eq!(pipelines, json!([]), "no pipeline may be saved");
    let tables = target
        .sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='analyticaldb' ORDER BY 1")
        .unwrap();
    assert_eq!(tables, "bad\n", "no target table may be created");
    let cols = target.sql("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA='analyticaldb' AND TABLE_NAME='bad'").unwrap();
    assert_eq!(cols, "2\n", "the existing target is left untouched");
}

#[test]
fn check_names_every_missing_setting_and_privilege() {
    let source = MariaDb::start_with(MariaDbOptions {
        binlog_format: "STATEMENT".into(),
        binlog_row_image: "MINIMAL".into(),
        ..Default::default()
    })
    .unwrap();
    let (_, target) = crm_pair();
    source
        .sql(
            "CREATE DATABASE crm; CREATE TABLE crm.t (id INT PRIMARY KEY); \
             CREATE USER weak@'%' IDENTIFIED BY 'weak-pw'; GRANT SELECT ON crm.* TO weak@'%';",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (status, body) = server.api(
        "POST",
        "/api/v1/connections",
        Some(json!({"alias": "weak", "type": "mysql", "host": "127.0.0.1", "port": source.port(),
                    "user": "weak", "password": "weak-pw", "database": "crm"})),
    );
    assert_eq!(status, 201, "{body}");
    create_connection(&server, "tgt", &target, "analyticaldb");

    let (status, report) = server.api("POST", "/api/v1/connections/weak/test", None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], false);
    let item = |name: &str| {
        report["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {report}"))
    };
    assert_eq!(item("log_bin")["ok"], true);
    assert_eq!(item("binlog_format")["ok"], false);
    assert!(item("binlog_format")["detail"].as_str().unwrap().contains("STATEMENT"));
    assert_eq!(item("binlog_row_image")["ok"], false);
    assert!(item("binlog_row_image")["detail"].as_str().unwrap().contains("MINIMAL"));
    assert_eq!(item("privilege REPLICATION SLAVE")["ok"], false);
    assert!(
        item("privilege REPLICATION SLAVE")["detail"].as_str().unwrap().contains("GRANT REPLICATION SLAVE")
    );
    assert_eq!(item("privilege REPLICATION CLIENT")["ok"], false);
    assert_eq!(item("privilege SELECT")["ok"], true);

    let out = server.cli(&["connection", "test", "weak"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("binlog_format is STATEMENT") && text.contains("REPLICATION CLIENT"), "{text}");

    let body = json!({"alias": "p", "source": {"connection": "weak", "table": "t"},
                      "target": {"connection": "tgt", "table": "t"}, "auto_create": true});
    let (status, body) = server.api("POST", "/api/v1/pipelines", Some(body));
    assert_eq!(status, 422, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    for w in ["binlog_format", "binlog_row_image", "REPLICATION SLAVE", "REPLICATION CLIENT"] {
        assert!(msg.contains(w), "{msg} lacks {w}");
    }
    // A one-off copy needs only SELECT.
    let body = json!({"alias": "copy", "source": {"connection": "weak", "table": "t"},
                      "target": {"connection": "tgt", "table": "t"}, "auto_create": true, "mode": "initial"});
    let (status, body) = server.api("POST", "/api/v1/pipelines", Some(body));
    assert_eq!(status, 201, "{body}");
}
