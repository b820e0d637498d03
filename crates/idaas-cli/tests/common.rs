//! A real `idaas server` process, the CLI, the API, and source/target comparison.

use idaas_testkit::MariaDb;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_idaas");

/// An `idaas server` process on a data directory that outlives it.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    data_dir: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        let mut s = Server { child: None, url: String::new(), data_dir: data_dir.to_path_buf() };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .env("IDAAS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn idaas server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("server banner");
        let url = line.trim().rsplit(' ').next().expect("listening url").to_string();
        assert!(url.starts_with("http://"), "unexpected banner {line:?}");
        self.url = url;
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9 server");
            c.wait().expect("reap server");
        }
    }

    /// Starts the server again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN).arg("--server").arg(&self.url).args(args).output().expect("run idaas cli")
    }

    /// Runs the CLI and fails the test with its stderr when it fails.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "idaas {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let url = format!("{}{path}", self.url);
        let resp = match (method, body) {
            ("GET", _) => agent.get(&url).call(),
            ("DELETE", _) => agent.delete(&url).call(),
            ("POST", Some(b)) => agent.post(&url).send_json(b),
            ("POST", None) => agent.post(&url).send_empty(),
            _ => panic!("unsupported method {method}"),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn stats(&self, pipeline: &str) -> Value {
        let (status, v) = self.api("GET", &format!("/api/v1/pipelines/{pipeline}/stats"), None);
        assert_eq!(status, 200, "{v}");
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Registers a connection through the CLI.
pub fn create_connection(server: &Server, alias: &str, db: &MariaDb, database: &str) {
    server.cli_ok(&[
        "connection",
        "create",
        "--alias",
        alias,
        "--type",
        "mysql",
        "--host",
        db.host(),
        "--port",
        &db.port().to_string(),
        "--user",
        db.user(),
        "--password",
        db.password(),
        "--database",
        database,
    ]);
}

/// Runs transactions on `db` (zero dates allowed).
pub fn exec_txns(server: &MariaDb, db: &str, txns: &[Vec<String>]) {
    let sql =
        format!("{}{}", idaas_testkit::crm::MARIADB_FIXTURE_MODE, idaas_testkit::crm::transactions_sql(txns));
    server.sql_db(db, &sql).expect("source statements");
}

fn dump(server: &MariaDb, db: &str, table: &str) -> String {
    server.sql_db(db, &format!("SELECT * FROM `{table}` ORDER BY 1")).unwrap_or_default()
}

/// Waits until the target table equals the source table row by row and value by value. Fails at once
/// when the pipeline fails.
pub fn wait_equal(
    server: &Server,
    pipeline: &str,
    source: (&MariaDb, &str, &str),
    target: (&MariaDb, &str, &str),
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        let a = dump(source.0, source.1, source.2);
        let b = dump(target.0, target.1, target.2);
        if a == b && !a.is_empty() {
            return;
        }
        let stats = server.stats(pipeline);
        assert_ne!(stats["status"], "failed", "pipeline failed: {}", stats["last_error"]);
        if start.elapsed() > timeout {
            let al: Vec<&str> = a.lines().collect();
            let bl: Vec<&str> = b.lines().collect();
            let first = al.iter().zip(&bl).position(|(x, y)| x != y);
            let cut = |l: Option<&&str>| l.map(|s| s.chars().take(300).collect::<String>());
            panic!(
                "target differs from source after {timeout:?}: {} vs {} rows; first difference at {first:?}:\n  source {:?}\n  target {:?}\n stats {stats}",
                al.len(),
                bl.len(),
                cut(first.and_then(|i| al.get(i))),
                cut(first.and_then(|i| bl.get(i))),
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Polls `f` until it returns true.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two private servers with the brief's databases.
pub fn crm_pair() -> (MariaDb, MariaDb) {
    let source = MariaDb::start().expect("start source");
    let target = MariaDb::start().expect("start target");
    source.sql("CREATE DATABASE crm").unwrap();
    target.sql("CREATE DATABASE analyticaldb").unwrap();
    (source, target)
}

/// Seeds `crm.Customer` with `rows` rows.
pub fn seed_customers(source: &MariaDb, rows: i64) {
    source.sql_db("crm", &idaas_testkit::crm::customer_ddl("Customer")).unwrap();
    let txns: Vec<Vec<String>> = idaas_testkit::crm::customer_inserts("Customer", 1, rows, 500, 1)
        .into_iter()
        .map(|s| vec![s])
        .collect();
    exec_txns(source, "crm", &txns);
}
