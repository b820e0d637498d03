//! `idaas shell` against a real server and real databases: the brief's Scenario A lines through `-f` and
//! `--eval`, the catalogue commands on a seeded database, and the interactive prompt in a pseudo-terminal.

use crate::common::*;
use idaas_testkit::MariaDb;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The brief's Scenario A lines exactly as the brief prints them, prompts, stray backticks and the second
/// connection's typos included. Only the address of the databases differs: `HOST`, `PORT1`, `PORT2`.
const BRIEF_SCENARIO_A: &str = "\t> createConnection( {
\t\t\t\talias: \"mysql_crm_db\",
\t\t\t\tip: 'HOST',
\t\t\t\tport: PORT1,
\t\t\t\tuser: \"demo\",
\t\t\t\tpassword: \"xxxxxx\",
\t\t\t\tdb: \"crm\" \t\t\t
\t\t\t});  \t
\t\t\t`
\t`> createConnection( {
\t\t\t\talias: \"mysql_analytical_db\",
\t\t\t\tip: 'HOST,
\t\t\t\tport: PORT2,
\t\t\t\tuser: \"demo\"
\t\t\t\tpassword: \"xxxxxx\"\t\t\t
\t\t\t\tdb: \"analyticaldb\"\t\t\t\t
\t\t\t}); 
\t    `\t

\t> create_pipeline({alias: \"my_pipeline\"})
\t\t.readFrom( mysql_crm_db.Customer)
\t\t.writeTo(mysql_analytical_db.CRM_Customer,  {AutoCreate:true} )
\t\t.start();

\t> my_pipeline.stats()
";

/// The well-formed Scenario A lines, as a user types them at the prompt.
const WELL_FORMED_SCENARIO_A: &str = r#"createConnection( {
            alias: "mysql_crm_db",
            ip: 'HOST',
            port: PORT1,
            user: "demo",
            password: "xxxxxx",
            db: "crm"
        });
createConnection( {
            alias: "mysql_analytical_db",
            ip: 'HOST',
            port: PORT2,
            user: "demo",
            password: "xxxxxx",
            db: "analyticaldb"
        });
create_pipeline({alias: "my_pipeline"})
    .readFrom( mysql_crm_db.Customer)
    .writeTo(mysql_analytical_db.CRM_Customer,  {AutoCreate:true} )
    .start();
my_pipeline.stats()
"#;

const STATS_LABELS: &[&str] =
    &["Status:", "Input Total:", "Output Total:", "Throughput:", "Last Input:", "Last Output:", "Lag:"];

/// The brief's user `demo` with password `xxxxxx` on both servers, with what a source and a target need.
fn brief_user(source: &MariaDb, target: &MariaDb) {
    let user = "CREATE USER demo@'%' IDENTIFIED BY 'xxxxxx';";
    source
        .sql(&format!(
            "{user} GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO demo@'%';"
        ))
        .unwrap();
    target.sql(&format!("{user} GRANT ALL ON analyticaldb.* TO demo@'%';")).unwrap();
}

fn addressed(text: &str, source: &MariaDb, target: &MariaDb) -> String {
    text.replace("HOST", source.host())
        .replace("PORT1", &source.port().to_string())
        .replace("PORT2", &target.port().to_string())
}

/// Runs `idaas shell` with `args` and no terminal anywhere.
fn shell(server: &Server, args: &[&str], state: &std::path::Path) -> Output {
    Command::new(BIN)
        .args(["--server", &server.url, "shell"])
        .args(args)
        .env("XDG_STATE_HOME", state)
        .stdin(Stdio::null())
        .output()
        .expect("run idaas shell")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_stats_block(stdout: &str) {
    for label in STATS_LABELS {
        assert!(stdout.lines().any(|l| l.starts_with(label)), "missing {label} in\n{stdout}");
    }
    assert!(stdout.contains("events/second"), "{stdout}");
}

/// Scenario A through the shell, then the stats in a new session (aliases come back from the server).
fn scenario_a(run: impl FnOnce(&Server, &MariaDb, &MariaDb, &std::path::Path) -> Output) {
    let (source, target) = crm_pair();
    brief_user(&source, &target);
    seed_customers(&source, 500);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));

    let out = run(&server, &source, &target, dir.path());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "shell failed:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(stdout.contains("created connection mysql_crm_db (mysql "), "{stdout}");
    assert!(stdout.contains("created connection mysql_analytical_db (mysql "), "{stdout}");
    assert!(
        stdout.contains(
            "started pipeline my_pipeline: mysql_crm_db.Customer -> mysql_analytical_db.CRM_Customer (initial \
             load, then CDC, AutoCreate)"
        ),
        "{stdout}"
    );
    assert_stats_block(&stdout);
    assert!(!stdout.contains("xxxxxx") && !stderr.contains("xxxxxx"), "the password was printed");

    let src = (&source, "crm", "Customer");
    let tgt = (&target, "analyticaldb", "CRM_Customer");
    wait_equal(&server, "my_pipeline", src, tgt, Duration::from_secs(120));

    // A change flows while the pipeline runs; a new session knows my_pipeline without being told.
    exec_txns(
        &source,
        "crm",
        &[vec!["UPDATE Customer SET name = 'changed by the test' WHERE id = 7".into()]],
    );
    wait_equal(&server, "my_pipeline", src, tgt, Duration::from_secs(60));
    // The counters move right after the target's commit that the comparison already sees.
    wait_for("the change to be counted", Duration::from_secs(30), || {
        server.stats("my_pipeline")["output_total"] == 501
    });
    let out = shell(&server, &["--eval", "my_pipeline.stats()"], dir.path());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_stats_block(&stdout);
    assert!(stdout.starts_with("Status:       running\nInput Total:  501\nOutput Total: 501\n"), "{stdout}");
    assert!(stdout.contains("Snapshot crm.Customer: 500/"), "{stdout}");
    let lag = stdout.lines().find(|l| l.starts_with("Lag:")).unwrap();
    assert!(lag.ends_with(" ms"), "a change went through, so the lag is measured: {lag}");
}

#[test]
fn shell_file_runs_the_brief_scenario_a_text() {
    scenario_a(|server, source, target, dir| {
        let script = dir.join("scenario-a.js");
        std::fs::write(&script, addressed(BRIEF_SCENARIO_A, source, target)).unwrap();
        let out = shell(server, &["-f", script.to_str().unwrap()], dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The brief's own typos are mended, and the shell says what it changed.
        assert!(stderr.contains("note: read the input leniently: "), "{stderr}");
        assert!(stderr.contains("closed the quote left open on line 12"), "{stderr}");
        out
    });
}

#[test]
fn shell_eval_runs_the_brief_scenario_a_lines() {
    scenario_a(|server, source, target, dir| {
        let out = shell(server, &["--eval", &addressed(WELL_FORMED_SCENARIO_A, source, target)], dir);
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("note:"),
            "nothing to mend in well-formed lines"
        );
        out
    });
}

/// A private MariaDB with `crm.Customer` (20 rows), registered as `mysql_crm_db` on a fresh server.
fn catalogue_fixture() -> (MariaDb, Server, tempfile::TempDir) {
    let source = MariaDb::start().expect("start MariaDB");
    source.sql("CREATE DATABASE crm").unwrap();
    seed_customers(&source, 20);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    create_connection(&server, "mysql_crm_db", &source, "crm");
    (source, server, dir)
}

#[test]
fn shell_catalogue_commands_on_a_seeded_database() {
    let (_source, server, dir) = catalogue_fixture();
    let commands = "show dbs
use mysql_crm_db
show tables
desc Customer
peek Customer 3 id name
count Customer
count mysql_crm_db.Customer
create_pipeline({alias: 'copy'}).readFrom(mysql_crm_db.Customer).writeTo(mysql_crm_db.Copy, {AutoCreate: true}).initialOnly().start()
copy.wait({timeout: 60})
show pipelines
status copy
count Copy
";
    let out = shell(&server, &["--eval", commands], dir.path());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let expect = [
        "ALIAS         TYPE   HOST       PORT",
        "mysql_crm_db  mysql  127.0.0.1",
        "using connection mysql_crm_db (mysql 127.0.0.1:",
        "TABLE\ncrm.Customer\n",
        "Table: crm.Customer\nNAME ",
        "(3 rows of crm.Customer)",
        "crm.Customer: 20 rows\ncrm.Customer: 20 rows\n",
        "started pipeline copy: mysql_crm_db.Customer -> mysql_crm_db.Copy (initial load only, AutoCreate)",
        "Status:       completed\nInput Total:  20\nOutput Total: 20\n",
        "copy   completed  mysql_crm_db.Customer  mysql_crm_db.Copy  initial",
        "crm.Copy: 20 rows\n",
    ];
    for e in expect {
        assert!(stdout.contains(e), "missing {e:?} in\n{stdout}");
    }
    let peek: Vec<&str> = stdout
        .lines()
        .skip_while(|l| l.split_whitespace().collect::<Vec<_>>() != ["id", "name"])
        .take(4)
        .collect();
    assert_eq!(peek.len(), 4, "{stdout}");
    assert!(peek[1].starts_with("1 ") && peek[2].starts_with("2 ") && peek[3].starts_with("3 "), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("id ") && l.ends_with("PK")),
        "desc marks the key: {stdout}"
    );

    // delete asks first; without a terminal it refuses at once instead of waiting for an answer.
    let started = Instant::now();
    let out = shell(&server, &["--eval", "delete copy"], dir.path());
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("write 'delete copy --yes'"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let out = shell(&server, &["--eval", "delete copy --yes\nshow pipelines"], dir.path());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        "deleted pipeline copy and its checkpoint; the target table stays\nALIAS  STATUS  SOURCE  TARGET  MODE  CREATED\n"
    );

    // --json prints the API's answers; errors are the API's error body, one per failure.
    let out = shell(&server, &["--json", "--eval", "count mysql_crm_db.Customer"], dir.path());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer, serde_json::json!({"table": {"namespace": "crm", "name": "Customer"}, "count": 20}));
    let out = shell(&server, &["--json", "--eval", "peek mysql_crm_db.Nope"], dir.path());
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["error"]["kind"], "not_found", "{error}");

    // The browse endpoints themselves: bounded, read-only, typed values.
    let (status, rows) =
        server.api("GET", "/api/v1/connections/mysql_crm_db/tables/Customer/rows?limit=2", None);
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows["rows"].as_array().unwrap().len(), 2);
    assert_eq!(rows["rows"][0][0], serde_json::json!({"type": "int", "value": 1}), "{rows}");
    assert_eq!(rows["columns"][1], "name");
    let (status, _) =
        server.api("GET", "/api/v1/connections/mysql_crm_db/tables/Customer/rows?limit=1001", None);
    assert_eq!(status, 400);
    let (status, body) = server.api("GET", "/api/v1/connections/mysql_crm_db/tables/Nope/count", None);
    assert_eq!(status, 404, "{body}");
}

/// `idaas shell` on a pseudo-terminal, with the screen as a terminal would show it.
struct Pty {
    child: std::process::Child,
    input: std::fs::File,
    output: mpsc::Receiver<Vec<u8>>,
    screen: vt100::Parser,
}

impl Pty {
    fn spawn(server: &Server, state: &std::path::Path) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize { ws_row: 40, ws_col: 160, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two descriptors we own from here on.
        let rc =
            unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
        assert_eq!(rc, 0, "openpty failed");
        // SAFETY: both descriptors were just opened and are owned by nothing else.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut command = Command::new(BIN);
        command
            .args(["--server", &server.url, "shell"])
            .env("XDG_STATE_HOME", state)
            .env("TERM", "xterm")
            .env("NO_COLOR", "1")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn idaas shell on a pty");
        let input = std::fs::File::from(master);
        let mut reader = input.try_clone().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Pty { child, input, output, screen: vt100::Parser::new(40, 160, 0) }
    }

    fn contents(&self) -> String {
        self.screen.screen().contents()
    }

    /// Waits until the screen shows `what`.
    fn expect(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.contents().contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the screen never showed {what:?}:\n{}", self.contents());
            if let Ok(bytes) = self.output.recv_timeout(left.min(Duration::from_millis(100))) {
                self.screen.process(&bytes);
            }
        }
    }

    /// Waits until the shell prompts again (typing ahead of the prompt may be discarded by the terminal).
    fn prompt(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let contents = self.contents();
            if contents.trim_end_matches('\n').lines().last().is_some_and(|l| l.ends_with("> ")) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no prompt:\n{contents}");
            if let Ok(bytes) = self.output.recv_timeout(left.min(Duration::from_millis(100))) {
                self.screen.process(&bytes);
            }
        }
    }

    fn send(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    /// Leaves with `exit` and waits for the process to end.
    fn exit(mut self) {
        self.send("exit\r");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return;
            }
            assert!(Instant::now() < deadline, "the shell did not exit:\n{}", self.contents());
            while let Ok(bytes) = self.output.try_recv() {
                self.screen.process(&bytes);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn shell_prompt_completes_remembers_and_reads_multiple_lines() {
    let (_source, server, dir) = catalogue_fixture();
    let state = dir.path().join("state");

    let mut pty = Pty::spawn(&server, &state);
    pty.expect("idaas> ");
    // Tab completes an alias, then a table of it.
    pty.send("mysql_c\t");
    pty.expect("idaas> mysql_crm_db");
    pty.send(".Cus\t");
    pty.expect("idaas> mysql_crm_db.Customer");
    pty.send(".count()\r");
    pty.expect("crm.Customer: 20 rows");
    pty.prompt();
    // A catalogue command with completion of its words and of columns.
    pty.send("use mysql_crm_db\r");
    pty.expect("idaas:mysql_crm_db> ");
    pty.prompt();
    pty.send("peek Customer 2 i\t na\t\r");
    pty.expect("(2 rows of crm.Customer)");
    pty.prompt();
    assert!(pty.contents().contains("peek Customer 2 id name"), "{}", pty.contents());
    // Multi-line input runs once the brackets balance.
    pty.send("print({answer:\r");
    pty.expect("print({answer:");
    pty.send("  6 * 7})\r");
    pty.expect("\"answer\": 42");
    pty.prompt();
    // A mistyped function: one sentence with the nearest name.
    pty.send("create_pipline({alias: 'x'})\r");
    pty.expect("error: create_pipline is not defined; did you mean create_pipeline?");
    pty.prompt();
    // A password typed on the prompt never reaches the history file.
    pty.send(
        "createConnection({alias: 'nowhere', ip: '127.0.0.1', port: 1, user: 'u', password: 's3cret-pw'})\r",
    );
    pty.expect("error: connection 'nowhere'");
    pty.prompt();
    pty.exit();

    let history = std::fs::read_to_string(state.join("idaas/shell_history")).unwrap();
    assert!(history.contains("password: '***'"), "{history}");
    assert!(!history.contains("s3cret-pw"), "{history}");
    assert!(history.contains("use mysql_crm_db"), "{history}");

    // A new session: the aliases are globals again and Up recalls the lines before `exit`, redacted.
    let mut pty = Pty::spawn(&server, &state);
    pty.expect("idaas> ");
    pty.send("\x1b[A");
    pty.expect("idaas> exit");
    pty.send("\x1b[A");
    pty.expect("password: '***'");
    pty.expect(
        "idaas> createConnection({alias: 'nowhere', ip: '127.0.0.1', port: 1, user: 'u', password: '***'})",
    );
    pty.send("\x15mysql_crm_db.Customer.count()\r");
    pty.expect("crm.Customer: 20 rows\nidaas> ");
    pty.prompt();
    pty.exit();
}
