//! End-to-end tests of the testkit against the installed MariaDB and PostgreSQL.

use std::time::Instant;

use idaas_testkit::{MariaDb, MariaDbOptions, Postgres, PostgresOptions, free_port};

fn variable(db: &MariaDb, name: &str) -> String {
    let out = db.sql(&format!("SHOW VARIABLES LIKE '{name}'")).unwrap();
    let (key, value) =
        out.trim_end().split_once('\t').unwrap_or_else(|| panic!("no variable {name}: {out:?}"));
    assert_eq!(key, name);
    value.to_string()
}

#[test]
fn mariadb_defaults() {
    let t = Instant::now();
    let db = MariaDb::start().unwrap();
    eprintln!("MariaDB started in {:?}", t.elapsed());
    assert_eq!(db.host(), "127.0.0.1");
    assert_eq!(db.user(), "root");
    assert!(!db.password().is_empty());
    assert_ne!(db.port(), 3306);
    assert_eq!(variable(&db, "log_bin"), "ON");
    assert_eq!(variable(&db, "binlog_format"), "ROW");
    assert_eq!(variable(&db, "binlog_row_image"), "FULL");
    assert_eq!(variable(&db, "port"), db.port().to_string());
    assert_eq!(variable(&db, "character_set_server"), "utf8mb4");
    assert_eq!(variable(&db, "time_zone"), "+00:00");
    assert_eq!(variable(&db, "server_id"), db.server_id().to_string());
    let datadir = variable(&db, "datadir");
    assert_eq!(datadir.trim_end_matches('/'), db.data_dir().to_str().unwrap());
    // Binary log files exist and the server writes to them.
    db.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO d.t VALUES (1, 'a')")
        .unwrap();
    let logs = db.sql("SHOW BINARY LOGS").unwrap();
    assert!(logs.starts_with("mariadb-bin.000001\t"), "{logs}");
    let events = db.sql("SHOW BINLOG EVENTS IN 'mariadb-bin.000001'").unwrap();
    assert!(events.contains("Write_rows"), "{events}");
    // Multiple statements, tabs between columns, one line per row.
    assert_eq!(
        db.sql_db("d", "INSERT INTO t VALUES (2, 'b'); SELECT * FROM t ORDER BY id").unwrap(),
        "1\ta\n2\tb\n"
    );
}

#[test]
fn mariadb_without_binlog() {
    let db =
        MariaDb::start_with(MariaDbOptions { log_bin: false, server_id: 42, ..Default::default() }).unwrap();
    assert_eq!(variable(&db, "log_bin"), "OFF");
    assert_eq!(variable(&db, "server_id"), "42");
}

#[test]
fn mariadb_extra_args() {
    let opts = MariaDbOptions {
        binlog_row_image: "MINIMAL".into(),
        extra_args: vec!["--gtid-strict-mode=ON".into()],
        ..Default::default()
    };
    let db = MariaDb::start_with(opts).unwrap();
    assert_eq!(variable(&db, "binlog_row_image"), "MINIMAL");
    assert_eq!(variable(&db, "gtid_strict_mode"), "ON");
}

#[test]
fn mariadb_kill_and_restart_keeps_committed_rows() {
    let mut db = MariaDb::start().unwrap();
    let port = db.port();
    let data_dir = db.data_dir().to_path_buf();
    db.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, note TEXT) ENGINE=InnoDB;
         INSERT INTO shop.orders VALUES (1, 'committed');",
    )
    .unwrap();
    let pid = db.pid().unwrap();
    db.kill().unwrap();
    assert!(!db.is_running());
    assert!(db.pid().is_none());
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_err(),
        "the killed server was not reaped"
    );
    let t = Instant::now();
    db.restart().unwrap();
    eprintln!("MariaDB restarted after kill in {:?}", t.elapsed());
    assert!(db.is_running());
    assert_eq!(db.port(), port);
    assert_eq!(db.data_dir(), data_dir);
    assert_eq!(db.sql("SELECT id, note FROM shop.orders").unwrap(), "1\tcommitted\n");
    // The binary log continues after the crash.
    assert_eq!(variable(&db, "log_bin"), "ON");
    db.sql("INSERT INTO shop.orders VALUES (2, 'after crash')").unwrap();
    let logs = db.sql("SHOW BINARY LOGS").unwrap();
    assert!(logs.lines().count() >= 2, "{logs}");
}

#[test]
fn mariadb_stop_and_restart() {
    let mut db = MariaDb::start().unwrap();
    db.sql("CREATE DATABASE s; CREATE TABLE s.t (id INT PRIMARY KEY); INSERT INTO s.t VALUES (7)").unwrap();
    let port = db.port();
    db.stop().unwrap();
    assert!(!db.is_running());
    assert!(db.sql("SELECT 1").is_err());
    db.restart().unwrap();
    assert_eq!(db.port(), port);
    assert_eq!(db.sql("SELECT id FROM s.t").unwrap(), "7\n");
    // Restarting a running server stops it cleanly first.
    db.restart().unwrap();
    assert_eq!(db.sql("SELECT id FROM s.t").unwrap(), "7\n");
}

#[test]
fn mariadb_instances_are_isolated() {
    let a = MariaDb::start().unwrap();
    let b = MariaDb::start().unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    assert_ne!(a.server_id(), b.server_id());
    a.sql("CREATE DATABASE only_in_a").unwrap();
    assert_eq!(a.sql("SHOW DATABASES LIKE 'only_in_a'").unwrap(), "only_in_a\n");
    assert_eq!(b.sql("SHOW DATABASES LIKE 'only_in_a'").unwrap(), "");
}

#[test]
fn mariadb_can_move_between_threads() {
    // Created on a thread that ends before the server is used: the server must survive it.
    let db = std::thread::spawn(|| MariaDb::start().unwrap()).join().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(db.is_running());
    assert_eq!(db.sql("SELECT 1").unwrap(), "1\n");
}

#[test]
fn postgres_defaults() {
    let t = Instant::now();
    let pg = Postgres::start().unwrap();
    eprintln!("PostgreSQL started in {:?}", t.elapsed());
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(pg.user(), "postgres");
    assert!(!pg.password().is_empty());
    assert_ne!(pg.port(), 5432);
    assert_eq!(pg.url(), format!("postgres://postgres:{}@127.0.0.1:{}/postgres", pg.password(), pg.port()));
    assert_eq!(pg.url_db("x"), format!("postgres://postgres:{}@127.0.0.1:{}/x", pg.password(), pg.port()));
    assert_eq!(pg.sql("SHOW wal_level").unwrap(), "logical\n");
    assert_eq!(pg.sql("SHOW max_replication_slots").unwrap(), "20\n");
    assert_eq!(pg.sql("SHOW max_wal_senders").unwrap(), "20\n");
    assert_eq!(pg.sql("SHOW fsync").unwrap(), "on\n");
    assert_eq!(pg.sql("SHOW data_directory").unwrap().trim(), pg.data_dir().to_str().unwrap());
    // A logical replication slot with pgoutput can be created and sees changes.
    pg.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION p FOR TABLE t;
         SELECT 1 FROM pg_create_logical_replication_slot('s', 'test_decoding');
         INSERT INTO t VALUES (1, 'x');",
    )
    .unwrap();
    let changes = pg.sql("SELECT data FROM pg_logical_slot_get_changes('s', NULL, NULL)").unwrap();
    assert!(changes.contains("table public.t: INSERT: id[integer]:1 v[text]:'x'"), "{changes}");
    pg.sql("CREATE DATABASE other").unwrap();
    assert_eq!(pg.sql_db("other", "SELECT current_database()").unwrap(), "other\n");
}

#[test]
fn postgres_kill_and_restart_keeps_committed_rows() {
    let mut pg = Postgres::start().unwrap();
    let port = pg.port();
    pg.sql("CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders VALUES (1, 'committed')")
        .unwrap();
    pg.sql("SELECT 1 FROM pg_create_logical_replication_slot('keep', 'pgoutput')").unwrap();
    let pid = pg.pid().unwrap();
    pg.kill().unwrap();
    assert!(!pg.is_running());
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_err(),
        "the killed postmaster was not reaped"
    );
    let t = Instant::now();
    pg.restart().unwrap();
    eprintln!("PostgreSQL restarted after kill in {:?}", t.elapsed());
    assert_eq!(pg.port(), port);
    assert_eq!(pg.sql("SELECT id, note FROM orders").unwrap(), "1\tcommitted\n");
    assert_eq!(pg.sql("SELECT slot_name FROM pg_replication_slots").unwrap(), "keep\n");
    let log = std::fs::read_to_string(pg.log_file()).unwrap();
    assert!(log.contains("not properly shut down"), "no crash recovery in the log:\n{log}");
    // And once more, to be sure a restarted server can be killed again.
    pg.kill().unwrap();
    pg.restart().unwrap();
    assert_eq!(pg.sql("SELECT count(*) FROM orders").unwrap(), "1\n");
}

#[test]
fn postgres_stop_and_restart() {
    let mut pg = Postgres::start().unwrap();
    pg.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (7)").unwrap();
    pg.stop().unwrap();
    assert!(!pg.is_running());
    assert!(pg.sql("SELECT 1").is_err());
    pg.restart().unwrap();
    assert_eq!(pg.sql("SELECT id FROM t").unwrap(), "7\n");
    pg.restart().unwrap();
    assert_eq!(pg.sql("SELECT id FROM t").unwrap(), "7\n");
}

#[test]
fn postgres_options() {
    let pg = Postgres::start_with(PostgresOptions {
        wal_level: "replica".into(),
        extra_conf: vec![("max_connections".into(), "33".into())],
    })
    .unwrap();
    assert_eq!(pg.sql("SHOW wal_level").unwrap(), "replica\n");
    assert_eq!(pg.sql("SHOW max_connections").unwrap(), "33\n");
}

#[test]
fn free_ports_differ() {
    // A leased port is never handed out twice in a process, and lies below the kernel's ephemeral range
    // (outgoing connections cannot take it). Whether it is still free a moment later depends on every other
    // process on the machine, so that is not asserted here: the servers of the other tests bind theirs.
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    if ephemeral_low > 11_000 {
        assert!(ports.iter().all(|p| (10_000..ephemeral_low).contains(p)), "{ports:?}");
    }
}
