//! Scenario A in every direction between MariaDB and PostgreSQL: initial load, then mixed changes in
//! multi-statement transactions; afterwards the target equals the source value by value (compared through
//! canonical text projections on both sides, JSON compared as documents and floats as numbers).

use crate::common::*;
use idaas_engine::{ConnectionSpec, DdlPolicy, Engine, PipelineSpec, SyncMode, TableSpec};
use idaas_testkit::{MariaDb, Postgres, PostgresOptions, crm};
use std::time::{Duration, Instant};

fn pg_spec(alias: &str, pg: &Postgres) -> ConnectionSpec {
    ConnectionSpec {
        alias: alias.into(),
        kind: Some("postgres".into()),
        host: pg.host().into(),
        port: Some(pg.port()),
        user: pg.user().into(),
        password: pg.password().into(),
        database: Some("postgres".into()),
        daas_db: false,
    }
}

fn spec(source: &str, target: &str) -> PipelineSpec {
    PipelineSpec {
        alias: "p".into(),
        source: TableSpec { connection: "src".into(), table: source.into() },
        target: TableSpec { connection: "tgt".into(), table: target.into() },
        auto_create: true,
        mode: SyncMode::InitialAndCdc,
        ddl_policy: DdlPolicy::Apply,
        start: true,
    }
}

#[derive(Clone, Copy)]
enum Cmp {
    Text,
    Json,
    Float,
}

/// One column: its projection on the source side, on the target side, and how to compare.
struct Col {
    source: &'static str,
    target: &'static str,
    cmp: Cmp,
}

const fn col(source: &'static str, target: &'static str, cmp: Cmp) -> Col {
    Col { source, target, cmp }
}

fn mysql_select(cols: &[Col], side: fn(&Col) -> &'static str, table: &str) -> String {
    let exprs: Vec<String> =
        cols.iter().map(|c| format!("COALESCE(CAST(({}) AS CHAR), 'NULL')", side(c))).collect();
    format!("SELECT {} FROM {table} ORDER BY id", exprs.join(", "))
}

fn pg_select(cols: &[Col], side: fn(&Col) -> &'static str, table: &str) -> String {
    let exprs: Vec<String> = cols.iter().map(|c| format!("coalesce(({})::text, 'NULL')", side(c))).collect();
    format!(
        "SET TIME ZONE 'UTC'; SET IntervalStyle = 'iso_8601'; SELECT {} FROM {table} ORDER BY id",
        exprs.join(", ")
    )
}

fn same(a: &str, b: &str, cmp: Cmp) -> bool {
    match cmp {
        Cmp::Text => a == b,
        Cmp::Json => {
            match (serde_json::from_str::<serde_json::Value>(a), serde_json::from_str::<serde_json::Value>(b))
            {
                (Ok(x), Ok(y)) => x == y,
                _ => a == b,
            }
        }
        Cmp::Float => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y || (x.is_nan() && y.is_nan()),
            _ => a == b,
        },
    }
}

/// The first difference between two projections, or `None` when they are equal.
fn diff(cols: &[Col], a: &str, b: &str) -> Option<String> {
    let al: Vec<&str> = a.lines().collect();
    let bl: Vec<&str> = b.lines().collect();
    if al.len() != bl.len() {
        return Some(format!("{} source rows, {} target rows", al.len(), bl.len()));
    }
    for (r, (x, y)) in al.iter().zip(&bl).enumerate() {
        let xs: Vec<&str> = x.split('\t').collect();
        let ys: Vec<&str> = y.split('\t').collect();
        for (i, c) in cols.iter().enumerate() {
            let (u, v) = (xs.get(i).copied().unwrap_or("?"), ys.get(i).copied().unwrap_or("?"));
            if !same(u, v, c.cmp) {
                return Some(format!("row {r} ({}), column {}: source {u:?}, target {v:?}", xs[0], c.source));
            }
        }
    }
    None
}

async fn wait_same(
    engine: &Engine,
    mut read: impl FnMut() -> (String, String),
    cols: &[Col],
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        let (a, b) = read();
        let d = diff(cols, &a, &b);
        if d.is_none() && !a.is_empty() {
            return;
        }
        let s = engine.pipeline_stats("p").unwrap();
        assert_ne!(s.status, "failed", "pipeline failed: {:?}", s.last_error);
        assert!(
            start.elapsed() < timeout,
            "target differs from source: {d:?}; last error {:?}",
            s.last_error
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// MariaDB `crm.Customer` (every MySQL type) as projected on MariaDB and on PostgreSQL.
const MYSQL_CUSTOMER: &[Col] = &[
    col("id", "id", Cmp::Text),
    col("MD5(name)", "md5(name)", Cmp::Text),
    col("gender", "gender", Cmp::Text),
    col("zipcode", "zipcode", Cmp::Text),
    col("t_tiny", "t_tiny", Cmp::Text),
    col("t_tiny_u", "t_tiny_u", Cmp::Text),
    col("t_small", "t_small", Cmp::Text),
    col("t_small_u", "t_small_u", Cmp::Text),
    col("t_medium", "t_medium", Cmp::Text),
    col("t_medium_u", "t_medium_u", Cmp::Text),
    col("t_int", "t_int", Cmp::Text),
    col("t_int_u", "t_int_u", Cmp::Text),
    col("t_big", "t_big", Cmp::Text),
    col("t_big_u", "t_big_u", Cmp::Text),
    col("t_dec", "t_dec", Cmp::Text),
    col("t_dec_wide", "t_dec_wide", Cmp::Text),
    col("t_dec_u", "t_dec_u", Cmp::Text),
    col("CAST(t_float AS DOUBLE)", "t_float::float8", Cmp::Float),
    col("t_double", "t_double", Cmp::Float),
    col("MD5(t_char)", "md5(rtrim(t_char))", Cmp::Text),
    col("MD5(t_text)", "md5(t_text)", Cmp::Text),
    col("MD5(t_medtext)", "md5(t_medtext)", Cmp::Text),
    col("MD5(CONVERT(t_latin USING utf8mb4))", "md5(t_latin)", Cmp::Text),
    col("MD5(CONVERT(t_latin_text USING utf8mb4))", "md5(t_latin_text)", Cmp::Text),
    col("MD5(t_binary)", "md5(t_binary)", Cmp::Text),
    col("MD5(t_varbinary)", "md5(t_varbinary)", Cmp::Text),
    col("MD5(t_blob)", "md5(t_blob)", Cmp::Text),
    col("t_date", "t_date", Cmp::Text),
    col("TIME_FORMAT(t_time, '%H:%i:%s.%f')", "to_char(t_time, 'HH24:MI:SS.US')", Cmp::Text),
    col("TIME_FORMAT(t_time3, '%H:%i:%s.%f')", "to_char(t_time3, 'HH24:MI:SS.US')", Cmp::Text),
    col(
        "DATE_FORMAT(t_datetime, '%Y-%m-%d %H:%i:%s.%f')",
        "to_char(t_datetime, 'YYYY-MM-DD HH24:MI:SS.US')",
        Cmp::Text,
    ),
    col(
        "DATE_FORMAT(t_datetime6, '%Y-%m-%d %H:%i:%s.%f')",
        "to_char(t_datetime6, 'YYYY-MM-DD HH24:MI:SS.US')",
        Cmp::Text,
    ),
    col(
        "DATE_FORMAT(t_timestamp, '%Y-%m-%d %H:%i:%s.%f')",
        "to_char(t_timestamp, 'YYYY-MM-DD HH24:MI:SS.US')",
        Cmp::Text,
    ),
    col(
        "DATE_FORMAT(t_timestamp3, '%Y-%m-%d %H:%i:%s.%f')",
        "to_char(t_timestamp3, 'YYYY-MM-DD HH24:MI:SS.US')",
        Cmp::Text,
    ),
    col("t_year + 0", "t_year", Cmp::Text),
    col("t_enum", "t_enum", Cmp::Text),
    col("t_set", "array_to_string(t_set, ',')", Cmp::Text),
    col("LOWER(HEX(t_bit))", "to_hex(t_bit::bigint)", Cmp::Text),
    col("LOWER(HEX(t_bit64))", "to_hex(t_bit64::bigint)", Cmp::Text),
    col("t_json", "t_json", Cmp::Json),
    col("t_zero_date", "t_zero_date", Cmp::Text),
    col(
        "DATE_FORMAT(t_zero_datetime, '%Y-%m-%d %H:%i:%s')",
        "to_char(t_zero_datetime, 'YYYY-MM-DD HH24:MI:SS')",
        Cmp::Text,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_postgres() {
    let source = MariaDb::start().unwrap();
    let target = Postgres::start().unwrap();
    source.sql("CREATE DATABASE crm").unwrap();
    source.sql_db("crm", &crm::customer_ddl("Customer")).unwrap();
    let seed: Vec<Vec<String>> =
        crm::customer_inserts_with("Customer", 1, 1500, 250, 21, true).into_iter().map(|s| vec![s]).collect();
    exec_txns(&source, "crm", &seed);
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine.create_connection(conn_spec("src", &source, "crm")).await.unwrap();
    engine.create_connection(pg_spec("tgt", &target)).await.unwrap();
    engine.create_pipeline(spec("Customer", "public.customer")).await.unwrap();
    let (txns, _) = crm::customer_changes_with("Customer", 1500, 1501, 1500, 22, true);
    exec_txns(&source, "crm", &txns);
    let read = || {
        (
            source.sql_db("crm", &mysql_select(MYSQL_CUSTOMER, |c| c.source, "Customer")).unwrap(),
            target.sql(&pg_select(MYSQL_CUSTOMER, |c| c.target, "public.customer")).unwrap_or_default(),
        )
    };
    wait_same(&engine, read, MYSQL_CUSTOMER, Duration::from_secs(120)).await;
    engine.shutdown().await;
}

/// PostgreSQL `Customer` (every common PostgreSQL type) as projected on PostgreSQL and on MariaDB.
const PG_CUSTOMER: &[Col] = &[
    col("id", "id", Cmp::Text),
    col("md5(name)", "MD5(name)", Cmp::Text),
    col("t_small", "t_small", Cmp::Text),
    col("t_int", "t_int", Cmp::Text),
    col("t_big", "t_big", Cmp::Text),
    col("t_num", "t_num", Cmp::Text),
    col(
        "rtrim(rtrim(t_num_free::text, '0'), '.')",
        "TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM t_num_free))",
        Cmp::Text,
    ),
    col("t_real::float8", "CAST(t_real AS DOUBLE)", Cmp::Float),
    col("t_double", "t_double", Cmp::Float),
    col("md5(t_text)", "MD5(t_text)", Cmp::Text),
    col("rtrim(t_char)", "t_char", Cmp::Text),
    col("t_zip", "t_zip", Cmp::Text),
    col("md5(t_bytea)", "MD5(t_bytea)", Cmp::Text),
    col("t_bool::int", "t_bool", Cmp::Text),
    col("t_date", "t_date", Cmp::Text),
    col("to_char(t_time, 'HH24:MI:SS.US')", "TIME_FORMAT(t_time, '%H:%i:%s.%f')", Cmp::Text),
    col("t_timetz", "t_timetz", Cmp::Text),
    col("to_char(t_ts, 'YYYY-MM-DD HH24:MI:SS.US')", "DATE_FORMAT(t_ts, '%Y-%m-%d %H:%i:%s.%f')", Cmp::Text),
    col(
        "to_char(t_tstz, 'YYYY-MM-DD HH24:MI:SS.US')",
        "DATE_FORMAT(t_tstz, '%Y-%m-%d %H:%i:%s.%f')",
        Cmp::Text,
    ),
    col("t_interval", "t_interval", Cmp::Text),
    col("t_uuid", "t_uuid", Cmp::Text),
    col("t_json", "t_json", Cmp::Json),
    col("t_jsonb", "t_jsonb", Cmp::Json),
    col("t_tier", "t_tier", Cmp::Text),
    col("array_to_json(t_ints)", "t_ints", Cmp::Json),
    col("array_to_json(t_texts)", "t_texts", Cmp::Json),
    col("md5(t_big_text)", "MD5(t_big_text)", Cmp::Text),
];

async fn pg_source(rows: i64) -> Postgres {
    let source = Postgres::start().unwrap();
    let mut sql = crm::pg_customer_ddl("Customer");
    for s in crm::pg_customer_inserts("Customer", 1, rows, 250, 31) {
        sql.push_str(";\n");
        sql.push_str(&s);
    }
    source.sql(&sql).unwrap();
    source
}

fn pg_changes(source: &Postgres, next: i64, ops: usize, seed: u64) {
    let (txns, _) = crm::pg_customer_changes("Customer", next, ops, seed);
    source.sql(&crm::transactions_sql(&txns)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_mariadb() {
    let source = pg_source(1500).await;
    let target = MariaDb::start().unwrap();
    target.sql("CREATE DATABASE analytics").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine.create_connection(pg_spec("src", &source)).await.unwrap();
    engine.create_connection(conn_spec("tgt", &target, "analytics")).await.unwrap();
    engine.create_pipeline(spec("Customer", "Customer")).await.unwrap();
    pg_changes(&source, 1501, 1500, 32);
    let read = || {
        (
            source.sql(&pg_select(PG_CUSTOMER, |c| c.source, "\"Customer\"")).unwrap(),
            target
                .sql_db("analytics", &mysql_select(PG_CUSTOMER, |c| c.target, "Customer"))
                .unwrap_or_default(),
        )
    };
    wait_same(&engine, read, PG_CUSTOMER, Duration::from_secs(120)).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_postgres() {
    let source = pg_source(1500).await;
    let target = Postgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine.create_connection(pg_spec("src", &source)).await.unwrap();
    engine.create_connection(pg_spec("tgt", &target)).await.unwrap();
    engine.create_pipeline(spec("Customer", "public.customer_copy")).await.unwrap();
    pg_changes(&source, 1501, 1500, 42);
    let same_cols: Vec<Col> = PG_CUSTOMER.iter().map(|c| col(c.source, c.source, c.cmp)).collect();
    let read = || {
        (
            source.sql(&pg_select(&same_cols, |c| c.source, "\"Customer\"")).unwrap(),
            target.sql(&pg_select(&same_cols, |c| c.target, "public.customer_copy")).unwrap_or_default(),
        )
    };
    wait_same(&engine, read, &same_cols, Duration::from_secs(120)).await;
    // Deleting the pipeline leaves no slot or publication behind.
    engine.delete_pipeline("p").await.unwrap();
    assert_eq!(source.sql("SELECT count(*) FROM pg_replication_slots").unwrap().trim(), "0");
    assert_eq!(source.sql("SELECT count(*) FROM pg_publication").unwrap().trim(), "0");
    engine.shutdown().await;
}

/// Waits until pipeline `p` finished its initial load.
async fn wait_loaded(engine: &Engine) {
    let start = Instant::now();
    while !engine.pipeline_stats("p").unwrap().snapshot.iter().any(|t| t.done) {
        assert!(start.elapsed() < Duration::from_secs(60), "initial load did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200000_row_postgres_transaction_streams_through() {
    let source = Postgres::start().unwrap();
    let target = Postgres::start().unwrap();
    source.sql("CREATE TABLE big (id bigint PRIMARY KEY, v text)").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine.create_connection(pg_spec("src", &source)).await.unwrap();
    engine.create_connection(pg_spec("tgt", &target)).await.unwrap();
    engine.create_pipeline(spec("big", "big_copy")).await.unwrap();
    // The transaction must come through the stream, not the initial load.
    wait_loaded(&engine).await;
    source.sql("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 200000) g").unwrap();
    let start = Instant::now();
    loop {
        let n = target.sql("SELECT count(*) FROM big_copy").unwrap_or_default();
        if n.trim() == "200000" {
            break;
        }
        let s = engine.pipeline_stats("p").unwrap();
        assert_ne!(s.status, "failed", "{:?}", s.last_error);
        assert!(start.elapsed() < Duration::from_secs(180), "target has {n} rows");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let a = source.sql("SELECT md5(string_agg(v, ',' ORDER BY id)) FROM big").unwrap();
    let b = target.sql("SELECT md5(string_agg(v, ',' ORDER BY id)) FROM big_copy").unwrap();
    assert_eq!(a, b);
    assert!(engine.pipeline_stats("p").unwrap().cdc_events >= 200_000);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_transaction_streamed_before_its_commit_reaches_the_target_whole() {
    // With 64 kB of logical decoding memory the server streams the transaction while it runs
    // (pgoutput protocol version 2); the target must still get it whole, without its rolled-back part.
    let source = Postgres::start_with(PostgresOptions {
        extra_conf: vec![("logical_decoding_work_mem".into(), "64kB".into())],
        ..Default::default()
    })
    .unwrap();
    let target = Postgres::start().unwrap();
    source
        .sql("CREATE TABLE big (id bigint PRIMARY KEY, v text); INSERT INTO big VALUES (0, 'loaded')")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine.create_connection(pg_spec("src", &source)).await.unwrap();
    engine.create_connection(pg_spec("tgt", &target)).await.unwrap();
    engine.create_pipeline(spec("big", "big_copy")).await.unwrap();
    wait_loaded(&engine).await;
    source
        .sql(
            "BEGIN;
             INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 30000) g;
             SAVEPOINT s;
             UPDATE big SET v = 'rolled back' WHERE id <= 1000;
             DELETE FROM big WHERE id > 20000;
             ROLLBACK TO SAVEPOINT s;
             UPDATE big SET v = 'kept' WHERE id % 1000 = 0;
             DELETE FROM big WHERE id = 0;
             COMMIT;",
        )
        .unwrap();
    let digest = "SELECT count(*), md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM ";
    let expected = source.sql(&format!("{digest} big")).unwrap();
    let start = Instant::now();
    loop {
        if target.sql(&format!("{digest} big_copy")).unwrap_or_default() == expected {
            break;
        }
        let s = engine.pipeline_stats("p").unwrap();
        assert_ne!(s.status, "failed", "{:?}", s.last_error);
        assert!(start.elapsed() < Duration::from_secs(180), "the target did not reach the source's state");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // 30,000 inserts, 31 updates (ids 0, 1000, ..., 30000) and one delete: once each, and nothing of the
    // savepoint.
    assert_eq!(engine.pipeline_stats("p").unwrap().cdc_events, 30_032);
    let streamed =
        source.sql("SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = 'idaas_p'").unwrap();
    assert_eq!(streamed.trim(), "1", "the server streamed the transaction before its commit");
    engine.shutdown().await;
}
