//! PostgreSQL source tests: checks, discovery of every type, the exported-snapshot hand-over to the stream,
//! TOAST, a large transaction, acknowledgement, heartbeats, schema changes, release, a server crash, and the
//! initial load's binary rows passed to a PostgreSQL sink without decoding, read on a second session of the
//! same snapshot.

use futures::StreamExt;
use idaas_connectors::postgres::source::PgSource;
use idaas_connectors::postgres::{Pg, PgSink, types::MAX_FIELD_BYTES};
use idaas_connectors::{ConnectionConfig, ConnectorKind};
use idaas_core::value::utc_to_timestamp;
use idaas_core::{
    ChangeEvent, ChangeStream, Charset, DataType, Date, DateTime, ErrorKind, Op, Position, Row, Sink,
    SnapshotChunk, Source, TableRef, TableSchema, Time, Value,
};
use idaas_testkit::{Postgres, PostgresOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pg_as(server: &Postgres, user: &str, password: &str) -> Pg {
    Pg::new(ConnectionConfig {
        alias: "pgsrc".into(),
        kind: ConnectorKind::Postgres,
        host: server.host().into(),
        port: server.port(),
        user: user.into(),
        password: secrecy::SecretString::from(password.to_string()),
        database: Some("postgres".into()),
    })
    .unwrap()
}

pub(crate) fn pg(server: &Postgres) -> Pg {
    pg_as(server, server.user(), server.password())
}

pub(crate) fn t(name: &str) -> TableRef {
    TableRef::new("public", name)
}

/// Reads events until `commits` commit events came (heartbeats are skipped); panics after 60 s.
pub(crate) async fn until_commits(stream: &mut ChangeStream, commits: usize) -> Vec<ChangeEvent> {
    let mut out = Vec::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < commits {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {seen} of {commits} commits after 60 s: {out:#?}"))
            .expect("the stream ended")
            .expect("stream error");
        match ev.op {
            Op::Heartbeat => continue,
            Op::Commit => seen += 1,
            _ => {}
        }
        out.push(ev);
    }
    out
}

pub(crate) fn ops(events: &[ChangeEvent]) -> Vec<Op> {
    events.iter().map(|e| e.op).collect()
}

pub(crate) fn lsn_of(p: &Position) -> String {
    p.to_json()["lsn"].as_str().unwrap().to_string()
}

/// The slot's confirmed position compared with `lsn`: true when it has reached it.
pub(crate) fn confirmed_reached(server: &Postgres, slot: &str, lsn: &str) -> bool {
    server
        .sql(&format!(
            "SELECT confirmed_flush_lsn >= '{lsn}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
        .unwrap()
        .trim()
        == "t"
}

const EVERY_TYPE: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN short_text AS varchar(10);
CREATE TABLE every_type (
  id bigint PRIMARY KEY,
  i2 smallint, i4 integer NOT NULL DEFAULT 7, i8 bigint,
  num numeric(20,6), num_any numeric,
  f4 real, f8 double precision,
  t text COLLATE \"C\", vc varchar(20), ch char(3),
  b bytea, flag boolean,
  d date, tm time(3), tmtz timetz, ts timestamp, tstz timestamptz(6),
  iv interval, u uuid, j json, jb jsonb,
  m mood, dom posint, sdom short_text,
  ai integer[], at text[], am mood[],
  bits bit(4), ip inet
);";

/// Row values of `every_type` after the key (the same for the snapshot and the stream).
const ROW_ONE: &str = "-32768, 2147483647, -9223372036854775808, '-12345678901234.123456', \
  '3.141592653589793238462643383279502884197', 3.4028235e38, 0.1, 'Zoë \"quoted\" \\ back', 'varchar', 'ab', \
  '\\x00ff10', true, '2024-02-29', '23:59:59.999', '10:30:00+02', '1999-12-31 23:59:59.999999', \
  '2024-03-15 09:30:00.123456+01', '1 year 2 months 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
  '{\"a\": [1, 2]}', '{\"b\": 1, \"a\": 2}', 'happy', 42, 'short', '{{1,2},{3,NULL}}', '{\"x y\",\"NULL\",NULL}', \
  '{sad,happy}', B'0101', '192.168.0.1/24'";

fn expected_row_one(id: i64) -> Row {
    let dt = |y, mo, d, h, mi, s, us| DateTime {
        date: Date { year: y, month: mo, day: d },
        hour: h,
        minute: mi,
        second: s,
        micros: us,
    };
    vec![
        Value::Int(id),
        Value::Int(-32768),
        Value::Int(2_147_483_647),
        Value::Int(i64::MIN),
        Value::Decimal("-12345678901234.123456".into()),
        Value::Decimal("3.141592653589793238462643383279502884197".into()),
        Value::Float(f32::MAX),
        Value::Double(0.1),
        Value::Text("Zoë \"quoted\" \\ back".into()),
        Value::Text("varchar".into()),
        Value::Text("ab ".into()),
        Value::Bytes(vec![0, 255, 16]),
        Value::Bool(true),
        Value::Date(Date { year: 2024, month: 2, day: 29 }),
        Value::Time(Time { negative: false, hours: 23, minutes: 59, seconds: 59, micros: 999_000 }),
        Value::Text("10:30:00+02".into()),
        Value::DateTime(dt(1999, 12, 31, 23, 59, 59, 999_999)),
        Value::Timestamp(utc_to_timestamp(&dt(2024, 3, 15, 8, 30, 0, 123_456))),
        Value::Text("P1Y2M3DT4H5M6.5S".into()),
        Value::Uuid([
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
        ]),
        Value::Json("{\"a\": [1, 2]}".into()),
        Value::Json("{\"a\": 2, \"b\": 1}".into()),
        Value::Enum("happy".into()),
        Value::Int(42),
        Value::Text("short".into()),
        Value::Array(vec![
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            Value::Array(vec![Value::Int(3), Value::Null]),
        ]),
        Value::Array(vec![Value::Text("x y".into()), Value::Text("NULL".into()), Value::Null]),
        Value::Array(vec![Value::Enum("sad".into()), Value::Enum("happy".into())]),
        Value::Bit(5),
        Value::Text("192.168.0.1/24".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_what_is_wrong() {
    let replica =
        Postgres::start_with(PostgresOptions { wal_level: "replica".into(), ..Default::default() }).unwrap();
    let report = PgSource::catalogue(pg(&replica)).check().await.unwrap();
    let wal = report.items.iter().find(|i| i.name == "wal_level").unwrap();
    assert!(!wal.ok && wal.detail.contains("wal_level is replica"), "{wal:?}");
    assert!(report.server_version.as_deref().unwrap().starts_with("PostgreSQL"));
    drop(replica);

    let server = Postgres::start().unwrap();
    server
        .sql(
            "CREATE ROLE app LOGIN PASSWORD 'app-pw';
             CREATE TABLE good (id int PRIMARY KEY);
             CREATE TABLE nopk (a int);
             CREATE TABLE noident (id int PRIMARY KEY);
             ALTER TABLE noident REPLICA IDENTITY NOTHING;
             CREATE TABLE secret (id int PRIMARY KEY);
             GRANT SELECT ON good, nopk, noident TO app;",
        )
        .unwrap();
    let tables = [t("good"), t("nopk"), t("noident"), t("secret")];
    let app = PgSource::new(pg_as(&server, "app", "app-pw"), "chk").with_tables(tables.clone());
    let report = app.check().await.unwrap();
    let find = |name: &str| {
        report.items.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("{name}: {report:#?}"))
    };
    assert!(find("wal_level").ok);
    let repl = find("privilege REPLICATION");
    assert!(!repl.ok && repl.detail.contains("ALTER ROLE \"app\" WITH REPLICATION"), "{repl:?}");
    assert!(find("replication slots").ok);
    assert!(find("privilege SELECT public.good").ok);
    let select = find("privilege SELECT public.secret");
    assert!(
        !select.ok && select.detail.contains("GRANT SELECT ON \"public\".\"secret\" TO \"app\""),
        "{select:?}"
    );
    assert!(find("replica identity public.good").ok);
    let nopk = find("replica identity public.nopk");
    assert!(!nopk.ok && nopk.detail.contains("no primary key"), "{nopk:?}");
    let nothing = find("replica identity public.noident");
    assert!(!nothing.ok && nothing.detail.contains("REPLICA IDENTITY NOTHING"), "{nothing:?}");
    let publication = find("publication");
    assert!(
        !publication.ok && publication.detail.contains("CREATE PUBLICATION \"idaas_chk\""),
        "{publication:?}"
    );
    let err = app.describe(&t("secret")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err:?}");
    assert_eq!(app.describe(&t("missing")).await.unwrap_err().kind, ErrorKind::NotFound);
    let good_only = PgSource::new(pg_as(&server, "app", "app-pw"), "chk").with_tables([t("good")]);
    let err = good_only.current_position().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err:?}");
    assert!(err.message.contains("Have the owner run: CREATE PUBLICATION"), "{}", err.message);

    // The superuser on a logical server with a table that has a key: nothing to fix.
    let admin = PgSource::new(pg(&server), "chk").with_tables([t("good")]);
    let report = admin.check().await.unwrap();
    assert!(report.ok(), "{:#?}", report.problems());
    assert!(report.items.iter().any(|i| i.name == "replication connection" && i.ok));

    // Publishing a table without a usable replica identity would break the application's UPDATEs.
    let err =
        PgSource::new(pg(&server), "nopk").with_tables([t("nopk")]).current_position().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::SourceConfig, "{err:?}");
    assert!(err.message.contains("would make the server refuse every UPDATE and DELETE"), "{}", err.message);
    assert_eq!(server.sql("SELECT count(*) FROM pg_publication").unwrap(), "0\n");
    assert_eq!(server.sql("SELECT count(*) FROM pg_replication_slots").unwrap(), "0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_maps_every_type() {
    let server = Postgres::start().unwrap();
    server.sql(EVERY_TYPE).unwrap();
    let source = PgSource::catalogue(pg(&server));
    assert!(source.list_tables().await.unwrap().contains(&t("every_type")));
    let s = source.describe(&t("every_type")).await.unwrap();
    assert_eq!(s.primary_key, vec!["id"]);
    let utf8 = Charset::Utf8;
    let expected: Vec<(&str, DataType, &str)> = vec![
        ("id", DataType::Int { bytes: 8, unsigned: false }, "bigint"),
        ("i2", DataType::Int { bytes: 2, unsigned: false }, "smallint"),
        ("i4", DataType::Int { bytes: 4, unsigned: false }, "integer"),
        ("i8", DataType::Int { bytes: 8, unsigned: false }, "bigint"),
        ("num", DataType::Decimal { precision: 20, scale: 6, unsigned: false }, "numeric(20,6)"),
        ("num_any", DataType::Decimal { precision: 0, scale: 0, unsigned: false }, "numeric"),
        ("f4", DataType::Float, "real"),
        ("f8", DataType::Double, "double precision"),
        ("t", DataType::Text { max_bytes: MAX_FIELD_BYTES, charset: utf8 }, "text"),
        ("vc", DataType::Varchar { length: 20, charset: utf8 }, "character varying(20)"),
        ("ch", DataType::Char { length: 3, charset: utf8 }, "character(3)"),
        ("b", DataType::Blob { max_bytes: MAX_FIELD_BYTES }, "bytea"),
        ("flag", DataType::Bool, "boolean"),
        ("d", DataType::Date, "date"),
        ("tm", DataType::Time { fsp: 3 }, "time(3) without time zone"),
        ("tmtz", DataType::Other { name: "time with time zone".into() }, "time with time zone"),
        ("ts", DataType::DateTime { fsp: 6 }, "timestamp without time zone"),
        ("tstz", DataType::Timestamp { fsp: 6 }, "timestamp(6) with time zone"),
        ("iv", DataType::Other { name: "interval".into() }, "interval"),
        ("u", DataType::Uuid, "uuid"),
        ("j", DataType::Json, "json"),
        ("jb", DataType::Json, "jsonb"),
        ("m", DataType::Enum { labels: vec!["sad".into(), "ok".into(), "happy".into()] }, "mood"),
        ("dom", DataType::Int { bytes: 4, unsigned: false }, "posint"),
        ("sdom", DataType::Varchar { length: 10, charset: utf8 }, "short_text"),
        ("ai", DataType::Other { name: "integer[]".into() }, "integer[]"),
        ("at", DataType::Other { name: "text[]".into() }, "text[]"),
        ("am", DataType::Other { name: "mood[]".into() }, "mood[]"),
        ("bits", DataType::Bit { bits: 4 }, "bit(4)"),
        ("ip", DataType::Other { name: "inet".into() }, "inet"),
    ];
    assert_eq!(s.columns.len(), expected.len());
    for (c, (name, dt, source_type)) in s.columns.iter().zip(expected) {
        assert_eq!((c.name.as_str(), &c.data_type, c.source_type.as_str()), (name, &dt, source_type));
    }
    let col = |n: &str| s.column(n).unwrap();
    assert!(!col("id").nullable && !col("i4").nullable && col("i2").nullable);
    assert_eq!(col("i4").default.as_deref(), Some("7"));
    assert_eq!(col("t").collation.as_deref(), Some("C"));
    assert_eq!(col("vc").collation.as_deref(), Some("default"));
    assert_eq!(col("num").collation, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_hands_over_to_the_stream() {
    let server = Postgres::start().unwrap();
    server.sql(EVERY_TYPE).unwrap();
    server
        .sql(&format!(
            "INSERT INTO every_type VALUES (1, {ROW_ONE});
             INSERT INTO every_type (id, i4) VALUES (2, 2);
             INSERT INTO every_type (id, i4, f4, f8, num) VALUES (3, 3, 'NaN', '-Infinity', 0);
             INSERT INTO every_type (id, i4) SELECT g, g FROM generate_series(4, 9) g;"
        ))
        .unwrap();
    let source = PgSource::new(pg(&server), "handover").with_tables([t("every_type")]);
    let schema = source.describe(&t("every_type")).await.unwrap();
    let mut snap = source.snapshot().await.unwrap();
    let position = snap.position().clone();
    assert!(position.to_json()["lsn"].is_string(), "{position:?}");
    // Committed after the slot's consistent point: in the stream, not in the snapshot.
    server.sql("INSERT INTO every_type (id, i4) VALUES (100, 100)").unwrap();

    let mut rows: Vec<Row> = Vec::new();
    let mut after: Option<Row> = None;
    loop {
        let chunk = snap.read_chunk(&schema, after.as_ref(), 4).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 4);
        after = Some(vec![chunk.last().unwrap()[0].clone()]);
        rows.extend(chunk);
    }
    snap.finish().await.unwrap();
    let ids: Vec<Value> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, (1..=9).map(Value::Int).collect::<Vec<_>>());
    assert_eq!(rows[0], expected_row_one(1));
    assert!(matches!(rows[2][6], Value::Float(f) if f.is_nan()));
    assert_eq!(rows[2][7], Value::Double(f64::NEG_INFINITY));
    assert!(rows[1][1..].iter().enumerate().all(|(i, v)| if i == 1 {
        *v == Value::Int(2)
    } else {
        v.is_null()
    }));

    server
        .sql(&format!(
            "BEGIN;
             INSERT INTO every_type VALUES (101, {ROW_ONE});
             UPDATE every_type SET i4 = 5 WHERE id = 2;
             DELETE FROM every_type WHERE id = 3;
             COMMIT;
             UPDATE every_type SET id = 1001 WHERE id = 1;
             TRUNCATE every_type;"
        ))
        .unwrap();
    let mut stream = source.stream(&position, std::slice::from_ref(&schema)).await.unwrap();
    let events = until_commits(&mut stream, 4).await;
    assert_eq!(
        ops(&events),
        vec![
            Op::Insert,
            Op::Commit,
            Op::Insert,
            Op::Update,
            Op::Delete,
            Op::Commit,
            Op::Update,
            Op::Commit,
            Op::Ddl,
            Op::Commit
        ],
        "{events:#?}"
    );
    assert_eq!(events[0].after.as_ref().unwrap()[0], Value::Int(100));
    // The stream decodes every type exactly as the snapshot read it.
    assert_eq!(events[2].after.as_ref().unwrap(), &expected_row_one(101));
    let update = &events[3];
    assert_eq!(update.after.as_ref().unwrap()[2], Value::Int(5));
    assert_eq!(update.before, None, "the key did not change and the identity is the primary key");
    let delete = events[4].before.as_ref().unwrap();
    assert_eq!(delete[0], Value::Int(3));
    assert!(delete[1..].iter().all(Value::is_null), "an old key image holds only the key: {delete:?}");
    let txid = events[2].source.txid.clone().unwrap();
    assert!(events[2..6].iter().all(|e| e.source.txid.as_deref() == Some(&*txid)));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let ts = events[5].source.commit_ts_ms.unwrap();
    assert!((now - ts).abs() < 120_000, "commit time {ts} vs now {now}");
    let moved = &events[6];
    assert_eq!(moved.before.as_ref().unwrap()[0], Value::Int(1));
    assert_eq!(moved.after.as_ref().unwrap()[0], Value::Int(1001));
    assert_eq!(moved.key(), Some(vec![Value::Int(1001)]));
    let truncate = &events[8];
    assert_eq!(truncate.ddl.as_deref(), Some("TRUNCATE \"public\".\"every_type\""));
    assert_eq!(truncate.schema.as_deref(), Some(&schema));
    assert_eq!(truncate.source.table.as_deref(), Some(&t("every_type")));
    // Commit positions increase; events carry the table's schema.
    let commits: Vec<String> =
        events.iter().filter(|e| e.op == Op::Commit).map(|e| lsn_of(&e.source.position)).collect();
    assert_eq!(commits.len(), 4);
    assert!(events[0].schema.as_deref() == Some(&schema));
    assert_eq!(
        server.sql("SELECT count(*) FROM pg_publication WHERE pubname = 'idaas_handover'").unwrap(),
        "1\n"
    );

    // A load that resumes finds the slot: a plain snapshot, positioned at what the slot confirmed, which
    // is still the first snapshot's point (nothing was acknowledged).
    let again = source.snapshot().await.unwrap();
    assert_eq!(again.position(), &position);
    again.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_values_are_marked_unchanged() {
    let server = Postgres::start().unwrap();
    server
        .sql(
            "CREATE TABLE docs (id int PRIMARY KEY, n int, body text);
             ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
             INSERT INTO docs VALUES (1, 1, repeat('x', 20000));",
        )
        .unwrap();
    let source = PgSource::new(pg(&server), "toast");
    let schema = source.describe(&t("docs")).await.unwrap();
    let from = source.current_position().await.unwrap();
    let mut stream = source.stream(&from, std::slice::from_ref(&schema)).await.unwrap();
    server.sql("UPDATE docs SET n = 2 WHERE id = 1; UPDATE docs SET body = 'short' WHERE id = 1;").unwrap();
    let events = until_commits(&mut stream, 2).await;
    assert_eq!(ops(&events), vec![Op::Update, Op::Commit, Op::Update, Op::Commit]);
    assert_eq!(events[0].after, Some(vec![Value::Int(1), Value::Int(2), Value::Unchanged]));
    assert_eq!(events[2].after, Some(vec![Value::Int(1), Value::Int(2), Value::Text("short".into())]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200000_row_transaction_streams_through() {
    let server = Postgres::start().unwrap();
    server.sql("CREATE TABLE big (id int PRIMARY KEY, v text)").unwrap();
    let source = PgSource::new(pg(&server), "big");
    let schema = source.describe(&t("big")).await.unwrap();
    let from = source.current_position().await.unwrap();
    let mut stream = source.stream(&from, std::slice::from_ref(&schema)).await.unwrap();
    server.sql("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 200000) g").unwrap();
    let mut inserts = 0u64;
    let mut last_id = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ev =
            tokio::time::timeout(deadline - Instant::now(), stream.next()).await.unwrap().unwrap().unwrap();
        match ev.op {
            Op::Insert => {
                inserts += 1;
                let Value::Int(id) = ev.after.as_ref().unwrap()[0] else { panic!("{ev:?}") };
                assert_eq!(id, last_id + 1, "rows come in insert order");
                last_id = id;
            }
            Op::Commit => break,
            Op::Heartbeat => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(inserts, 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_confirms_the_slot_and_heartbeats_move_it_when_idle() {
    let server = Postgres::start_with(PostgresOptions {
        extra_conf: vec![("wal_sender_timeout".into(), "4s".into())],
        ..Default::default()
    })
    .unwrap();
    server.sql("CREATE TABLE a (id int PRIMARY KEY, v int); CREATE TABLE other (id int)").unwrap();
    let source = PgSource::new(pg(&server), "ack");
    let schema = source.describe(&t("a")).await.unwrap();
    let from = source.current_position().await.unwrap();
    let mut stream = source.stream(&from, std::slice::from_ref(&schema)).await.unwrap();
    server.sql("INSERT INTO a VALUES (1, 1)").unwrap();
    let events = until_commits(&mut stream, 1).await;
    let commit = events.last().unwrap().source.position.clone();
    let lsn = lsn_of(&commit);
    // Not confirmed before the engine says the checkpoint is durable.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!confirmed_reached(&server, "idaas_ack", &lsn), "the slot moved without an acknowledgement");
    source.acknowledge(&commit);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !confirmed_reached(&server, "idaas_ack", &lsn) {
        assert!(Instant::now() < deadline, "confirmed_flush_lsn did not reach {lsn}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Writes to a table outside the publication: no transaction is sent, a heartbeat moves past them.
    server.sql("INSERT INTO other SELECT generate_series(1, 1000)").unwrap();
    let wal = server.sql("SELECT pg_current_wal_lsn()").unwrap().trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let heartbeat = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, stream.next()).await.expect("no heartbeat").unwrap().unwrap();
        assert_eq!(ev.op, Op::Heartbeat, "{ev:?}");
        assert_eq!(ev.source.commit_ts_ms, None);
        let hb = lsn_of(&ev.source.position);
        let past = server.sql(&format!("SELECT '{hb}'::pg_lsn >= '{wal}'::pg_lsn")).unwrap();
        if past.trim() == "t" {
            break ev.source.position;
        }
    };
    source.acknowledge(&heartbeat);
    let lsn = lsn_of(&heartbeat);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !confirmed_reached(&server, "idaas_ack", &lsn) {
        assert!(Instant::now() < deadline, "confirmed_flush_lsn did not follow the heartbeat to {lsn}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_come_as_ddl_events_before_the_rows() {
    let server = Postgres::start().unwrap();
    server.sql("CREATE TABLE s (id int PRIMARY KEY, a text)").unwrap();
    let source = PgSource::new(pg(&server), "ddl");
    let schema = source.describe(&t("s")).await.unwrap();
    let from = source.current_position().await.unwrap();
    server
        .sql(
            "INSERT INTO s VALUES (1, 'one');
             ALTER TABLE s ADD COLUMN n numeric(8,2) NOT NULL DEFAULT 0;
             INSERT INTO s VALUES (2, 'two', 2.5);
             ALTER TABLE s DROP COLUMN a;
             INSERT INTO s VALUES (3, 3);",
        )
        .unwrap();
    // The stream starts after all of it: each row still comes with the shape it was written with.
    let mut stream = source.stream(&from, std::slice::from_ref(&schema)).await.unwrap();
    let events = until_commits(&mut stream, 3).await;
    assert_eq!(
        ops(&events),
        vec![Op::Insert, Op::Commit, Op::Ddl, Op::Insert, Op::Commit, Op::Ddl, Op::Insert, Op::Commit],
        "{events:#?}"
    );
    assert_eq!(events[0].after, Some(vec![Value::Int(1), Value::Text("one".into())]));
    let v2: &TableSchema = events[2].schema.as_deref().unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["id", "a", "n"]);
    assert_eq!(v2.columns[2].data_type, DataType::Decimal { precision: 8, scale: 2, unsigned: false });
    assert_eq!(v2.primary_key, vec!["id"]);
    assert_eq!(
        events[3].after,
        Some(vec![Value::Int(2), Value::Text("two".into()), Value::Decimal("2.50".into())])
    );
    let v3 = events[5].schema.as_deref().unwrap();
    assert_eq!((v3.version, v3.columns.len()), (3, 2));
    assert_eq!(events[6].after, Some(vec![Value::Int(3), Value::Decimal("3.00".into())]));

    // A value no target can hold exactly stops the stream with an error naming table, column and value.
    server.sql("INSERT INTO s VALUES (4, 'NaN')").unwrap();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.next()).await.unwrap().unwrap() {
            Ok(ev) if ev.op == Op::Heartbeat => continue,
            Ok(ev) => panic!("unexpected {ev:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err:?}");
    assert!(
        err.message
            .starts_with("table public.s, column 'n' (numeric(8,2)): numeric value 'NaN' cannot be carried"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_drops_the_slot_and_the_publication() {
    let server = Postgres::start().unwrap();
    server.sql("CREATE TABLE r (id int PRIMARY KEY)").unwrap();
    let source = PgSource::new(pg(&server), "rel");
    let schema = source.describe(&t("r")).await.unwrap();
    let from = source.current_position().await.unwrap();
    let mut stream = source.stream(&from, std::slice::from_ref(&schema)).await.unwrap();
    server.sql("INSERT INTO r VALUES (1)").unwrap();
    until_commits(&mut stream, 1).await;
    assert_eq!(
        server.sql("SELECT active FROM pg_replication_slots WHERE slot_name = 'idaas_rel'").unwrap(),
        "t\n"
    );
    // Another process's view of the pipeline (the engine builds a fresh source to delete it).
    PgSource::new(pg(&server), "rel").release().await.unwrap();
    assert_eq!(server.sql("SELECT count(*) FROM pg_replication_slots").unwrap(), "0\n");
    assert_eq!(server.sql("SELECT count(*) FROM pg_publication").unwrap(), "0\n");
    let end = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.unwrap();
    assert!(matches!(end, Some(Err(_)) | None), "the stream ends once its slot is gone: {end:?}");
    // Releasing again is harmless.
    source.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_ends_the_stream_and_a_new_one_resumes_after_the_last_commit() {
    let mut server = Postgres::start().unwrap();
    server.sql("CREATE TABLE k (id int PRIMARY KEY)").unwrap();
    let source = PgSource::new(pg(&server), "crash");
    let schema = source.describe(&t("k")).await.unwrap();
    let from = source.current_position().await.unwrap();
    let mut stream = source.stream(&from, std::slice::from_ref(&schema)).await.unwrap();
    server.sql("INSERT INTO k VALUES (1)").unwrap();
    let events = until_commits(&mut stream, 1).await;
    let last_commit = events.last().unwrap().source.position.clone();
    server.kill().unwrap();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the stream did not end")
        {
            Some(Ok(ev)) if ev.op == Op::Heartbeat => continue,
            other => break other,
        }
    };
    let err = end.expect("an error ends the stream").expect_err("an error");
    assert_eq!(err.kind, ErrorKind::Unreachable, "{err:?}");
    server.restart().unwrap();
    server.sql("INSERT INTO k VALUES (2)").unwrap();
    let mut stream = source.stream(&last_commit, std::slice::from_ref(&schema)).await.unwrap();
    let events = until_commits(&mut stream, 1).await;
    assert_eq!(ops(&events), vec![Op::Insert, Op::Commit], "{events:#?}");
    assert_eq!(events[0].after, Some(vec![Value::Int(2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_tables_are_read_and_streamed_through_their_root() {
    let server = Postgres::start().unwrap();
    server
        .sql(
            "CREATE TABLE p (region text, id int, v int, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
             CREATE TABLE p_eu PARTITION OF p FOR VALUES IN ('eu');
             CREATE TABLE p_us (v int, id int NOT NULL, region text NOT NULL);
             ALTER TABLE p ATTACH PARTITION p_us FOR VALUES IN ('us');
             INSERT INTO p VALUES ('eu', 1, 1), ('us', 1, 2), ('eu', 2, 3);",
        )
        .unwrap();
    let source = PgSource::new(pg(&server), "parts");
    let tables = source.list_tables().await.unwrap();
    assert!(tables.contains(&t("p")) && !tables.contains(&t("p_eu")), "{tables:?}");
    let schema = source.describe(&t("p")).await.unwrap();
    assert_eq!(schema.primary_key, vec!["region", "id"]);
    let mut snap = source.snapshot().await.unwrap();
    let position = snap.position().clone();
    let mut keys = Vec::new();
    let mut after: Option<Row> = None;
    loop {
        let chunk = snap.read_chunk(&schema, after.as_ref(), 1).await.unwrap();
        let Some(row) = chunk.first() else { break };
        after = Some(vec![row[0].clone(), row[1].clone()]);
        keys.push(after.clone().unwrap());
    }
    snap.finish().await.unwrap();
    let key = |r: &str, i: i64| vec![Value::Text(r.into()), Value::Int(i)];
    assert_eq!(keys, vec![key("eu", 1), key("eu", 2), key("us", 1)]);

    server
        .sql(
            "INSERT INTO p VALUES ('us', 2, 4);
             UPDATE p SET v = 5 WHERE region = 'us' AND id = 1;
             TRUNCATE p;
             INSERT INTO p VALUES ('eu', 9, 9);
             TRUNCATE p_eu;",
        )
        .unwrap();
    let mut stream = source.stream(&position, std::slice::from_ref(&schema)).await.unwrap();
    let events = until_commits(&mut stream, 4).await;
    assert_eq!(
        ops(&events),
        vec![Op::Insert, Op::Commit, Op::Update, Op::Commit, Op::Ddl, Op::Commit, Op::Insert, Op::Commit],
        "{events:#?}"
    );
    // A partition with another column order lands in the partitioned table's columns.
    assert_eq!(events[0].source.table.as_deref(), Some(&t("p")));
    assert_eq!(events[0].after, Some(vec![Value::Text("us".into()), Value::Int(2), Value::Int(4)]));
    assert_eq!(events[2].after, Some(vec![Value::Text("us".into()), Value::Int(1), Value::Int(5)]));
    assert_eq!(events[4].ddl.as_deref(), Some("TRUNCATE \"public\".\"p\""));
    // Truncating one partition cannot be applied to a target that holds the whole table.
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.next()).await.unwrap().unwrap() {
            Ok(ev) if ev.op == Op::Heartbeat => continue,
            Ok(ev) => panic!("unexpected {ev:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err:?}");
    assert!(err.message.contains("some partitions of table public.p were truncated"), "{}", err.message);
}

/// Built-in types whose binary form passes from a source to a target of the same types without decoding.
const RAW_TYPES: &str = "
CREATE TABLE raw_types (
  id bigint PRIMARY KEY,
  i2 smallint, i4 integer, num numeric(20,6), num_any numeric, f4 real, f8 double precision,
  t text, vc varchar(20), ch char(3), b bytea, flag boolean,
  d date, tm time(3), tmtz timetz, ts timestamp, tstz timestamptz,
  iv interval, u uuid, jb jsonb, bits bit(4), ai integer[], at text[], ip inet
);
INSERT INTO raw_types VALUES
  (1, -32768, 2147483647, '-12345678901234.123456', '3.141592653589793238462643383279502884197', 'NaN',
   '-Infinity', E'Zoë \\t \"quoted\" \\\\ back\\n', 'varchar', 'ab', '\\x00ff10', true, '0001-01-01',
   '24:00:00', '10:30:00+02', '9999-12-31 23:59:59.999999', '0001-01-01 00:00:00+00',
   '-1 year 2 mons 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '{\"b\": 1, \"a\": 2}', B'0101', '{{1,2},{3,NULL}}', '{\"x y\",NULL,\"\"}', '192.168.0.1/24');
INSERT INTO raw_types (id, ai) VALUES (2, '{}');
INSERT INTO raw_types (id, i4, num, t, d, ts)
  SELECT g, g, g * 1.5, repeat('x', g * 100), '2024-01-01'::date + g, '2024-01-01'::timestamp + g * interval '1 s'
  FROM generate_series(3, 10) g;";

/// The rows of `table` as one digest of their text forms, in key order.
fn digest(server: &Postgres, table: &str) -> String {
    server
        .sql(&format!("SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY id)) FROM {table} t"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_load_passes_binary_rows_through_to_a_target_of_the_same_types() {
    let server = Postgres::start().unwrap();
    server.sql(RAW_TYPES).unwrap();
    let source = PgSource::new(pg(&server), "raw").with_tables([t("raw_types")]);
    let schema = Arc::new(source.describe(&t("raw_types")).await.unwrap());
    let target = t("raw_copy");
    let mut sink = PgSink::new(pg(&server));
    assert!(sink.prepare(&schema, &target, true).await.unwrap());
    sink.begin_load(&schema, &target, None, true).await.unwrap();

    let mut snap = source.snapshot().await.unwrap();
    let layout = snap.raw_layout(&schema).await.unwrap().expect("every column passes through");
    assert_eq!(layout.columns[9], ("ch".to_string(), "character(3)".to_string()));
    assert!(sink.accepts_raw(&schema.table, &layout).await.unwrap());
    let mut chunks = Vec::new();
    let mut after: Option<Row> = None;
    loop {
        let chunk = match snap.read_raw(&schema, after.as_ref(), 4).await.unwrap() {
            SnapshotChunk::Raw(c) => c,
            SnapshotChunk::Rows(rows) => panic!("decoded rows instead of binary ones: {rows:?}"),
        };
        if chunk.rows == 0 {
            break;
        }
        after = Some(chunk.last_key.clone());
        sink.write_raw(&schema, &layout, &chunk).await.unwrap();
        chunks.push(chunk);
    }
    snap.finish().await.unwrap();
    assert_eq!(chunks.iter().map(|c| c.rows).collect::<Vec<_>>(), [4, 4, 2]);
    assert_eq!(after, Some(vec![Value::Int(10)]));

    // A resumed load sends the last chunk again while the key is deferred: the copy is removed with it.
    sink.write_raw(&schema, &layout, &chunks[2]).await.unwrap();
    assert_eq!(server.sql("SELECT count(*) FROM raw_copy").unwrap().trim(), "12");
    sink.end_load(&schema, &target).await.unwrap();
    assert_eq!(digest(&server, "raw_copy"), digest(&server, "raw_types"));
    assert!(digest(&server, "raw_copy").starts_with("10 "));

    // With the key in place a chunk sent again is upserted: rows changed since are set back.
    server.sql("UPDATE raw_copy SET i4 = 0, t = 'changed' WHERE id <= 4").unwrap();
    sink.write_raw(&schema, &layout, &chunks[0]).await.unwrap();
    assert_eq!(digest(&server, "raw_copy"), digest(&server, "raw_types"));

    // A target column of another type (even a wider one) takes decoded rows; so does json, which
    // AutoCreate declares as jsonb.
    server.sql("CREATE TABLE raw_wider (LIKE raw_types INCLUDING ALL); ALTER TABLE raw_wider ALTER i4 TYPE bigint").unwrap();
    let mut other = PgSink::new(pg(&server));
    assert!(!other.prepare(&schema, &t("raw_wider"), false).await.unwrap());
    assert!(!other.accepts_raw(&schema.table, &layout).await.unwrap());
    // So does a source table with a column whose binary form names source OIDs (enums, arrays).
    server.sql(EVERY_TYPE).unwrap();
    let every = source.describe(&t("every_type")).await.unwrap();
    let mut snap = source.snapshot().await.unwrap();
    assert_eq!(snap.raw_layout(&every).await.unwrap(), None);
    snap.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_rows_with_values_the_decoded_path_refuses_are_refused_the_same_way() {
    let server = Postgres::start().unwrap();
    server
        .sql(
            "CREATE TABLE raw_bad (id int PRIMARY KEY, num numeric, d date, ts timestamptz, a int[]);
             INSERT INTO raw_bad (id, num, d, ts, a) VALUES
               (1, 1.5, '2024-01-01', '2024-01-01 00:00+00', '{1,2}'), (2, 'NaN', NULL, NULL, NULL),
               (3, '-Infinity', NULL, NULL, NULL), (4, NULL, 'infinity', NULL, NULL),
               (5, NULL, '0044-03-15 BC', NULL, NULL), (6, NULL, NULL, '-infinity', NULL),
               (7, NULL, NULL, '10000-01-01 00:00+00', NULL), (8, NULL, NULL, NULL, '[2:3]={1,2}');",
        )
        .unwrap();
    let source = PgSource::new(pg(&server), "rawbad").with_tables([t("raw_bad")]);
    let schema = source.describe(&t("raw_bad")).await.unwrap();
    let mut snap = source.snapshot().await.unwrap();
    assert!(snap.raw_layout(&schema).await.unwrap().is_some());
    match snap.read_raw(&schema, None, 1).await.unwrap() {
        SnapshotChunk::Raw(c) => assert_eq!((c.rows, c.last_key), (1, vec![Value::Int(1)])),
        SnapshotChunk::Rows(rows) => panic!("decoded rows for a row that passes: {rows:?}"),
    }
    for id in 2..=8 {
        let after = vec![Value::Int(id - 1)];
        let raw = snap.read_raw(&schema, Some(&after), 1).await.expect_err("refused");
        let decoded = snap.read_chunk(&schema, Some(&after), 1).await.expect_err("refused");
        assert_eq!(raw.kind, ErrorKind::Unsupported, "row {id}: {raw}");
        assert_eq!(raw.to_string(), decoded.to_string(), "row {id}");
        assert!(raw.to_string().contains("raw_bad"), "{raw}");
    }
    snap.finish().await.unwrap();
}

/// Waits (at most 10 s) until `server` has `expected` sessions that read binary snapshot chunks; returns
/// how many it has.
fn idaas_sessions(server: &Postgres, expected: &str) -> String {
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'idaas snapshot'";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = server.sql(sql).unwrap().trim().to_string();
        if n == expected || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads every binary chunk of `schema` (3 rows a chunk) and returns their row counts.
async fn raw_chunk_rows(snap: &mut Box<dyn idaas_core::SnapshotReader>, schema: &TableSchema) -> Vec<usize> {
    let mut rows = Vec::new();
    let mut after: Option<Row> = None;
    loop {
        match snap.read_raw(schema, after.as_ref(), 3).await.unwrap() {
            SnapshotChunk::Raw(c) if c.rows == 0 => return rows,
            SnapshotChunk::Raw(c) => {
                rows.push(c.rows);
                after = Some(c.last_key);
            }
            SnapshotChunk::Rows(r) => panic!("decoded rows instead of binary ones: {r:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_chunks_are_read_on_a_second_session_of_the_same_snapshot() {
    let server = Postgres::start().unwrap();
    server
        .sql(
            "CREATE ROLE app LOGIN REPLICATION PASSWORD 'app-pw';
             GRANT CREATE ON DATABASE postgres TO app;
             CREATE TABLE shared (id int PRIMARY KEY, v text);
             ALTER TABLE shared OWNER TO app;
             INSERT INTO shared SELECT g, repeat('v', g) FROM generate_series(1, 8) g;",
        )
        .unwrap();
    let source = PgSource::new(pg(&server), "second").with_tables([t("shared")]);
    let schema = source.describe(&t("shared")).await.unwrap();
    let mut snap = source.snapshot().await.unwrap();
    // Committed after the snapshot: no chunk may hold these.
    server.sql("INSERT INTO shared VALUES (9, 'late'); DELETE FROM shared WHERE id = 2").unwrap();
    assert_eq!(idaas_sessions(&server, "0"), "0");
    let first = match snap.read_raw(&schema, None, 3).await.unwrap() {
        SnapshotChunk::Raw(c) => c,
        SnapshotChunk::Rows(r) => panic!("decoded rows instead of binary ones: {r:?}"),
    };
    assert_eq!((first.rows, first.last_key), (3, vec![Value::Int(3)]), "row 2 is in the snapshot");
    assert_eq!(idaas_sessions(&server, "1"), "1", "the chunk was read on its own session");
    let rest = match snap.read_raw(&schema, Some(&vec![Value::Int(3)]), 100).await.unwrap() {
        SnapshotChunk::Raw(c) => c,
        SnapshotChunk::Rows(r) => panic!("decoded rows instead of binary ones: {r:?}"),
    };
    assert_eq!((rest.rows, rest.last_key), (5, vec![Value::Int(8)]), "row 9 is not");
    snap.finish().await.unwrap();
    assert_eq!(idaas_sessions(&server, "0"), "0", "finish ends the session");

    // When the snapshot cannot be exported to a second session, the query session reads the chunks.
    server.sql("REVOKE EXECUTE ON FUNCTION pg_export_snapshot() FROM PUBLIC").unwrap();
    let source = PgSource::new(pg_as(&server, "app", "app-pw"), "fallback").with_tables([t("shared")]);
    let schema = source.describe(&t("shared")).await.unwrap();
    let mut snap = source.snapshot().await.unwrap();
    assert_eq!(raw_chunk_rows(&mut snap, &schema).await, [3, 3, 2]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(idaas_sessions(&server, "0"), "0", "no second session");
    snap.finish().await.unwrap();
}
