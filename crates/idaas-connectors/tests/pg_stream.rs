//! Large transactions that the server streams while they run (pgoutput protocol version 2): servers with
//! `logical_decoding_work_mem = 64kB`, so every transaction here of more than a few hundred rows is sent in
//! blocks before its commit. Each test also proves from `pg_stat_replication_slots` that it was.

use crate::pg_source::{confirmed_reached, lsn_of, ops, pg, t, until_commits};
use futures::StreamExt;
use idaas_connectors::postgres::source::PgSource;
use idaas_core::{ChangeEvent, ChangeStream, ErrorKind, Op, Position, Source, TableSchema, Value};
use idaas_testkit::{Postgres, PostgresOptions};
use std::time::{Duration, Instant};

/// A server that streams transactions larger than 64 kB of decoded changes.
fn streaming_server() -> Postgres {
    let server = Postgres::start_with(PostgresOptions {
        extra_conf: vec![("logical_decoding_work_mem".into(), "64kB".into())],
        ..Default::default()
    })
    .unwrap();
    server
        .sql(
            "CREATE TABLE big (id int PRIMARY KEY, v text);
             CREATE TABLE small (id int PRIMARY KEY);
             CREATE TABLE other (id int);",
        )
        .unwrap();
    server
}

/// `INSERT INTO big` of ids `from..=to`, about 120 bytes a row.
fn insert_big(from: i32, to: i32) -> String {
    format!("INSERT INTO big SELECT g, repeat('x', 100) || g FROM generate_series({from}, {to}) g")
}

/// Transactions the slot streamed (`pg_stat_replication_slots.stream_txns`).
fn streamed_txns(server: &Postgres, slot: &str) -> i64 {
    server
        .sql(&format!(
            "SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = '{slot}'"
        ))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// True when position `a` is past position `b`.
fn lsn_after(server: &Postgres, a: &Position, b: &Position) -> bool {
    let sql = format!("SELECT '{}'::pg_lsn > '{}'::pg_lsn", lsn_of(a), lsn_of(b));
    server.sql(&sql).unwrap().trim() == "t"
}

/// Waits until the slot streamed at least `n` transactions.
async fn wait_streamed(server: &Postgres, slot: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while streamed_txns(server, slot) < n {
        assert!(Instant::now() < deadline, "slot {slot} streamed fewer than {n} transactions in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(name: &str, server: &Postgres) -> (PgSource, Vec<TableSchema>, Position, ChangeStream) {
    let source = PgSource::new(pg(server), name);
    let schemas =
        vec![source.describe(&t("big")).await.unwrap(), source.describe(&t("small")).await.unwrap()];
    let from = source.current_position().await.unwrap();
    let stream = source.stream(&from, &schemas).await.unwrap();
    (source, schemas, from, stream)
}

fn id(ev: &ChangeEvent) -> i64 {
    let row = ev.after.as_ref().or(ev.before.as_ref()).expect("a row event");
    match row[0] {
        Value::Int(id) => id,
        ref other => panic!("id {other:?}"),
    }
}

/// Checks that `events` is one transaction on `big` of inserts of exactly `ids`, in order, then a
/// commit; returns the commit.
fn one_big_transaction<'a>(events: &'a [ChangeEvent], ids: &[i64]) -> &'a ChangeEvent {
    let (commit, rows) = events.split_last().expect("events");
    assert_eq!(commit.op, Op::Commit);
    assert!(
        rows.iter().all(|e| e.op == Op::Insert && e.source.table.as_deref() == Some(&t("big"))),
        "{:?}",
        ops(rows)
    );
    let got: Vec<i64> = rows.iter().map(id).collect();
    assert_eq!(got.len(), ids.len(), "rows of the large transaction");
    assert!(got == ids, "the large transaction's rows differ from those committed, or are out of order");
    let txid = &commit.source.txid;
    assert!(txid.is_some());
    assert!(
        rows.iter().all(|e| &e.source.txid == txid && e.source.commit_ts_ms == commit.source.commit_ts_ms)
    );
    commit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_arrives_whole_after_a_smaller_one_that_committed_while_it_ran() {
    let server = streaming_server();
    let (_source, _, _, mut stream) = start("streamed", &server).await;
    let client = pg(&server).connect().await.unwrap();
    client.batch_execute(&format!("BEGIN; {}", insert_big(1, 20_000))).await.unwrap();
    // The first half is on its way to the reader before the small transaction commits.
    wait_streamed(&server, "idaas_streamed", 1).await;
    server.sql("INSERT INTO small VALUES (1)").unwrap();
    client.batch_execute(&format!("{}; COMMIT", insert_big(20_001, 40_000))).await.unwrap();

    let events = until_commits(&mut stream, 2).await;
    assert_eq!(ops(&events[..2]), [Op::Insert, Op::Commit], "the small transaction committed first");
    assert_eq!(events[0].source.table.as_deref(), Some(&t("small")));
    let big = one_big_transaction(&events[2..], &(1..=40_000).collect::<Vec<_>>());
    assert!(lsn_after(&server, &big.source.position, &events[1].source.position));
    assert_eq!(streamed_txns(&server, "idaas_streamed"), 1);

    // Nothing more: the large transaction came once.
    server.sql("INSERT INTO small VALUES (2)").unwrap();
    let events = until_commits(&mut stream, 1).await;
    assert_eq!(ops(&events), [Op::Insert, Op::Commit], "{:?}", ops(&events));
    assert_eq!(id(&events[0]), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_savepoint_inside_a_streamed_transaction_drops_exactly_those_changes() {
    let server = streaming_server();
    let (_source, _, _, mut stream) = start("savepoints", &server).await;
    server
        .sql(&format!(
            "BEGIN;
             {};
             SAVEPOINT a;
             {};
             SAVEPOINT b;
             UPDATE big SET v = 'in b' WHERE id <= 100;
             ROLLBACK TO SAVEPOINT a;
             {};
             SAVEPOINT c;
             {};
             RELEASE SAVEPOINT c;
             SAVEPOINT d;
             DELETE FROM big WHERE id > 15000;
             ROLLBACK TO SAVEPOINT d;
             DELETE FROM big WHERE id <= 10;
             COMMIT;",
            insert_big(1, 5_000),
            insert_big(5_001, 10_000),
            insert_big(10_001, 15_000),
            insert_big(15_001, 20_000)
        ))
        .unwrap();
    let events = until_commits(&mut stream, 1).await;
    let (deletes, inserts): (Vec<&ChangeEvent>, Vec<&ChangeEvent>) =
        events.iter().filter(|e| e.op != Op::Commit).partition(|e| e.op == Op::Delete);
    assert!(inserts.iter().all(|e| e.op == Op::Insert), "no update survives its rollback");
    let inserted: Vec<i64> = inserts.iter().map(|e| id(e)).collect();
    let expected: Vec<i64> = (1..=5_000).chain(10_001..=20_000).collect();
    assert!(inserted == expected, "{} inserts, expected {}", inserted.len(), expected.len());
    assert_eq!(deletes.iter().map(|e| id(e)).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().op, Op::Commit);
    assert_eq!(events.len(), 15_000 + 10 + 1);
    assert!(streamed_txns(&server, "idaas_savepoints") >= 1);
    assert_eq!(server.sql("SELECT count(*) FROM big").unwrap().trim(), "14990");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_streamed_transaction_delivers_nothing() {
    let server = streaming_server();
    let (_source, _, _, mut stream) = start("aborted", &server).await;
    let client = pg(&server).connect().await.unwrap();
    client.batch_execute(&format!("BEGIN; {}", insert_big(1, 20_000))).await.unwrap();
    wait_streamed(&server, "idaas_aborted", 1).await;
    client.batch_execute("ROLLBACK").await.unwrap();
    server
        .sql(&format!("BEGIN; {}; SAVEPOINT s; {}; ROLLBACK", insert_big(1, 10), insert_big(11, 20_000)))
        .unwrap();
    server.sql("INSERT INTO small VALUES (1)").unwrap();
    let events = until_commits(&mut stream, 1).await;
    assert_eq!(ops(&events), [Op::Insert, Op::Commit], "{:?}", ops(&events));
    assert_eq!(events[0].source.table.as_deref(), Some(&t("small")));
    assert_eq!(streamed_txns(&server, "idaas_aborted"), 2);
}

/// Reads events until the first heartbeat whose position is past `after`, writing to a table outside the
/// publication so that the server's position moves; fails on anything but heartbeats.
async fn heartbeat_past(server: &Postgres, stream: &mut ChangeStream, after: &Position) -> Position {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        server.sql("INSERT INTO other VALUES (1)").unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, stream.next()).await.expect("no heartbeat").unwrap().unwrap();
        assert_eq!(ev.op, Op::Heartbeat, "only heartbeats while the large transaction is open: {ev:?}");
        if lsn_after(server, &ev.source.position, after) {
            return ev.source.position;
        }
    }
}

/// Starts streaming from `from`, retrying while the slot is still held by the session that just ended.
async fn restart(source: &PgSource, from: &Position, schemas: &[TableSchema]) -> ChangeStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match source.stream(from, schemas).await {
            Ok(stream) => return stream,
            Err(e) if e.kind == ErrorKind::Unreachable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_a_transaction_is_streamed_delivers_it_in_full_once() {
    let server = streaming_server();
    let (source, schemas, _, mut stream) = start("restart", &server).await;
    let slot = "idaas_restart";
    let client = pg(&server).connect().await.unwrap();
    // Round 1 resumes from the last commit's position, round 2 from a heartbeat the stream sent after it
    // while the large transaction was open; both positions are acknowledged, so the slot is confirmed past
    // the start of the open transaction before the stream is dropped.
    for round in 1..=2 {
        let base = (round - 1) * 100_000;
        // A session that resumes streams an open transaction again: count from here.
        let streamed = streamed_txns(&server, slot);
        client.batch_execute(&format!("BEGIN; {}", insert_big(base + 1, base + 20_000))).await.unwrap();
        wait_streamed(&server, slot, streamed + 1).await;
        server.sql(&format!("INSERT INTO small VALUES ({round})")).unwrap();
        let events = until_commits(&mut stream, 1).await;
        assert_eq!(ops(&events), [Op::Insert, Op::Commit], "round {round}: {:?}", ops(&events));
        let commit = events[1].source.position.clone();
        let checkpoint =
            if round == 1 { commit } else { heartbeat_past(&server, &mut stream, &commit).await };
        source.acknowledge(&checkpoint);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !confirmed_reached(&server, slot, &lsn_of(&checkpoint)) {
            assert!(Instant::now() < deadline, "round {round}: the slot was not confirmed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The pipeline stops mid-way through the large transaction; it commits while nobody streams.
        drop(stream);
        client.batch_execute(&format!("{}; COMMIT", insert_big(base + 20_001, base + 40_000))).await.unwrap();
        stream = restart(&source, &checkpoint, &schemas).await;
        let events = until_commits(&mut stream, 1).await;
        let ids: Vec<i64> = (i64::from(base) + 1..=i64::from(base) + 40_000).collect();
        one_big_transaction(&events, &ids);
    }
    // And nothing twice afterwards.
    server.sql("INSERT INTO small VALUES (3)").unwrap();
    let events = until_commits(&mut stream, 1).await;
    assert_eq!(ops(&events), [Op::Insert, Op::Commit], "{:?}", ops(&events));
    assert_eq!(id(&events[0]), 3);
}
