//! PostgreSQL sink tests: AutoCreate, the initial load through `COPY`, changes, replays, patches of
//! unchanged columns, refusals and schema changes, against a private PostgreSQL server.

use idaas_connectors::postgres::sink::{PARALLEL_MIN_ROWS, WriteCounts};
use idaas_connectors::postgres::{Pg, PgSink};
use idaas_connectors::{ConnectionConfig, ConnectorKind};
use idaas_core::{
    ChangeEvent, Charset, ColumnSchema, DataType, Date, DateTime, ErrorKind, Op, Position, Row, Sink,
    SourceInfo, TableRef, TableSchema, Time, Value,
};
use idaas_testkit::Postgres;
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;

fn config(pg: &Postgres) -> ConnectionConfig {
    ConnectionConfig {
        alias: "dwh".into(),
        kind: ConnectorKind::Postgres,
        host: "127.0.0.1".into(),
        port: pg.port(),
        user: pg.user().into(),
        password: SecretString::from(pg.password().to_string()),
        database: None,
    }
}

fn sink(pg: &Postgres) -> PgSink {
    PgSink::new(Pg::new(config(pg)).unwrap())
}

fn col(name: &str, data_type: DataType, nullable: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        source_type: format!("{data_type:?}"),
        data_type,
        nullable,
        default: None,
        collation: None,
    }
}

fn ev(schema: &Arc<TableSchema>, op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
    ChangeEvent {
        op,
        source: SourceInfo {
            connection: "src".into(),
            table: Some(std::sync::Arc::new(schema.table.clone())),
            position: Position::default(),
            commit_ts_ms: None,
            read_ts_ms: None,
            txid: None,
        },
        before,
        after,
        schema: Some(schema.clone()),
        ddl: None,
    }
}

fn insert(schema: &Arc<TableSchema>, row: Row) -> ChangeEvent {
    ev(schema, Op::Insert, None, Some(row))
}

fn snapshot(schema: &Arc<TableSchema>, row: Row) -> ChangeEvent {
    ev(schema, Op::SnapshotRead, None, Some(row))
}

fn update(schema: &Arc<TableSchema>, before: Row, after: Row) -> ChangeEvent {
    ev(schema, Op::Update, Some(before), Some(after))
}

fn delete(schema: &Arc<TableSchema>, before: Row) -> ChangeEvent {
    ev(schema, Op::Delete, Some(before), None)
}

/// Runs a query in UTC and returns its rows, each a JSON array of the columns' text (NULL as `null`).
fn rows_of(pg: &Postgres, select_list: &str, from: &str) -> Vec<Vec<Option<String>>> {
    let out = pg
        .sql(&format!("SET TIME ZONE 'UTC'; SELECT json_build_array({select_list})::text FROM {from}"))
        .unwrap();
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn one(pg: &Postgres, sql: &str) -> String {
    pg.sql(sql).unwrap().trim_end().to_string()
}

/// A source table with a column of every portable type, and what AutoCreate declares for each.
fn every_type() -> (Arc<TableSchema>, Vec<&'static str>) {
    let u = Charset::Utf8;
    let cols: Vec<(ColumnSchema, &str)> = vec![
        (col("id", DataType::Int { bytes: 8, unsigned: false }, false), "bigint"),
        (col("c_bool", DataType::Bool, true), "boolean"),
        (col("c_i1", DataType::Int { bytes: 1, unsigned: false }, true), "smallint"),
        (col("c_u1", DataType::Int { bytes: 1, unsigned: true }, true), "smallint"),
        (col("c_i2", DataType::Int { bytes: 2, unsigned: false }, true), "smallint"),
        (col("c_u2", DataType::Int { bytes: 2, unsigned: true }, true), "integer"),
        (col("c_i3", DataType::Int { bytes: 3, unsigned: false }, true), "integer"),
        (col("c_u3", DataType::Int { bytes: 3, unsigned: true }, true), "integer"),
        (col("c_i4", DataType::Int { bytes: 4, unsigned: false }, true), "integer"),
        (col("c_u4", DataType::Int { bytes: 4, unsigned: true }, true), "bigint"),
        (col("c_i8", DataType::Int { bytes: 8, unsigned: false }, true), "bigint"),
        (col("c_u8", DataType::Int { bytes: 8, unsigned: true }, true), "numeric(20,0)"),
        (col("c_dec", DataType::Decimal { precision: 12, scale: 4, unsigned: false }, true), "numeric(12,4)"),
        (col("c_num", DataType::Decimal { precision: 0, scale: 0, unsigned: false }, true), "numeric"),
        (col("c_float", DataType::Float, true), "real"),
        (col("c_double", DataType::Double, true), "double precision"),
        (col("c_char", DataType::Char { length: 10, charset: u }, true), "character(10)"),
        (
            col("c_varchar", DataType::Varchar { length: 40, charset: Charset::Latin1 }, true),
            "character varying(40)",
        ),
        (col("c_text", DataType::Text { max_bytes: 65_535, charset: u }, true), "text"),
        (col("c_binary", DataType::Binary { length: 4 }, true), "bytea"),
        (col("c_varbinary", DataType::Varbinary { length: 16 }, true), "bytea"),
        (col("c_blob", DataType::Blob { max_bytes: 16_777_215 }, true), "bytea"),
        (col("c_date", DataType::Date, true), "date"),
        (col("c_time", DataType::Time { fsp: 3 }, true), "time(3) without time zone"),
        (col("c_datetime", DataType::DateTime { fsp: 6 }, true), "timestamp(6) without time zone"),
        (col("c_ts", DataType::Timestamp { fsp: 0 }, true), "timestamp(0) with time zone"),
        (col("c_year", DataType::Year, true), "smallint"),
        (col("c_enum", DataType::Enum { labels: vec!["gold".into(), "silver".into()] }, true), "text"),
        (col("c_set", DataType::Set { members: vec!["a".into(), "b".into(), "c".into()] }, true), "text[]"),
        (col("c_bit", DataType::Bit { bits: 10 }, true), "bit(10)"),
        (col("c_json", DataType::Json, true), "jsonb"),
        (col("c_uuid", DataType::Uuid, true), "uuid"),
        (col("c_interval", DataType::Other { name: "interval".into() }, true), "interval"),
        (col("c_intarr", DataType::Other { name: "integer[]".into() }, true), "integer[]"),
        (col("c_textarr", DataType::Other { name: "text[]".into() }, true), "text[]"),
        (col("c_byteaarr", DataType::Other { name: "bytea[]".into() }, true), "bytea[]"),
        (col("c_inet", DataType::Other { name: "inet".into() }, true), "inet"),
    ];
    let mut cols = cols;
    // A PostgreSQL collation the target has is copied; a MySQL collation name is not one.
    cols[17].0.collation = Some("C".into());
    cols[18].0.collation = Some("utf8mb4_general_ci".into());
    let schema = TableSchema {
        table: TableRef::new("crm", "Every"),
        columns: cols.iter().map(|(c, _)| c.clone()).collect(),
        primary_key: vec!["id".into()],
        version: 1,
    };
    (Arc::new(schema), cols.iter().map(|(_, t)| *t).collect())
}

fn date(year: u16, month: u8, day: u8) -> Date {
    Date { year, month, day }
}

/// A row of extreme and awkward values, and the text PostgreSQL prints for each.
fn full_row(id: i64) -> (Row, Vec<Option<&'static str>>) {
    let cells: Vec<(Value, &str)> = vec![
        (Value::Int(id), ""),
        (Value::Bool(true), "true"),
        (Value::Int(-128), "-128"),
        (Value::UInt(255), "255"),
        (Value::Int(-32_768), "-32768"),
        (Value::UInt(65_535), "65535"),
        (Value::Int(-8_388_608), "-8388608"),
        (Value::UInt(16_777_215), "16777215"),
        (Value::Int(i32::MIN as i64), "-2147483648"),
        (Value::UInt(u32::MAX as u64), "4294967295"),
        (Value::Int(i64::MIN), "-9223372036854775808"),
        (Value::UInt(u64::MAX), "18446744073709551615"),
        (Value::Decimal("-12345678.9012".into()), "-12345678.9012"),
        (
            Value::Decimal("123456789012345678901234567890.000000000000000000001".into()),
            "123456789012345678901234567890.000000000000000000001",
        ),
        (Value::Float(1.1), "1.1"),
        (Value::Double(0.1 + 0.2), "0.30000000000000004"),
        (Value::Text("ab".into()), "ab"),
        (Value::Text("Grüße, 'q' \"dq\" \\ \t€".into()), "Grüße, 'q' \"dq\" \\ \t€"),
        (Value::Text("line1\nline2 ✓ 🎉".into()), "line1\nline2 ✓ 🎉"),
        (Value::Bytes(vec![0, 1, 2, 255]), "\\x000102ff"),
        (Value::Bytes(vec![]), "\\x"),
        (Value::Bytes(vec![0x5c, 0x27, 0x00, 0x80]), "\\x5c270080"),
        (Value::Date(date(2024, 2, 29)), "2024-02-29"),
        (
            Value::Time(Time { negative: false, hours: 23, minutes: 59, seconds: 59, micros: 123_000 }),
            "23:59:59.123",
        ),
        (
            Value::DateTime(DateTime {
                date: date(1999, 12, 31),
                hour: 23,
                minute: 59,
                second: 59,
                micros: 999_999,
            }),
            "1999-12-31 23:59:59.999999",
        ),
        (Value::Timestamp(1_700_000_000_000_000), "2023-11-14 22:13:20+00"),
        (Value::Year(2024), "2024"),
        (Value::Enum("silver".into()), "silver"),
        (Value::Set(vec!["a".into(), "c".into()]), "{a,c}"),
        (Value::Bit(0b10_1000_0001), "1010000001"),
        (
            Value::Json(r#"{"b": 1,  "a": [true, null, "x\"y"]}"#.into()),
            r#"{"a": [true, null, "x\"y"], "b": 1}"#,
        ),
        (
            Value::Uuid([
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
                0xff,
            ]),
            "00112233-4455-6677-8899-aabbccddeeff",
        ),
        (Value::Text("P1DT2H3M4.5S".into()), "1 day 02:03:04.5"),
        (
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![Value::Int(3), Value::Null]),
            ]),
            "{{1,2},{3,NULL}}",
        ),
        (
            Value::Array(vec![
                Value::Text("a b".into()),
                Value::Text("q\"x\\".into()),
                Value::Null,
                Value::Text("NULL".into()),
            ]),
            r#"{"a b","q\"x\\",NULL,"NULL"}"#,
        ),
        (Value::Array(vec![Value::Bytes(vec![1, 2])]), r#"{"\\x0102"}"#),
        (Value::Text("192.168.0.1/24".into()), "192.168.0.1/24"),
    ];
    let id_text: &'static str = Box::leak(id.to_string().into_boxed_str());
    let texts = cells.iter().enumerate().map(|(i, (_, t))| Some(if i == 0 { id_text } else { *t })).collect();
    (cells.into_iter().map(|(v, _)| v).collect(), texts)
}

/// A second row of edge values in the same columns.
fn edge_row(id: i64) -> (Row, Vec<Option<&'static str>>) {
    let (mut row, mut texts) = full_row(id);
    let mut set = |name: &str, v: Value, t: &'static str| {
        let i = every_type().0.column_index(name).unwrap();
        row[i] = v;
        texts[i] = Some(t);
    };
    set("c_bool", Value::Bool(false), "false");
    set("c_dec", Value::Decimal("0.0001".into()), "0.0001");
    set("c_num", Value::Decimal("-0.000".into()), "0.000");
    set("c_float", Value::Float(f32::NAN), "NaN");
    set("c_double", Value::Double(f64::NEG_INFINITY), "-Infinity");
    set(
        "c_time",
        Value::Time(Time { negative: false, hours: 24, minutes: 0, seconds: 0, micros: 0 }),
        "24:00:00",
    );
    set("c_date", Value::Date(date(1, 1, 1)), "0001-01-01");
    set("c_ts", Value::Timestamp(-1_000_000), "1969-12-31 23:59:59+00");
    set("c_year", Value::Year(0), "0");
    set("c_set", Value::Set(vec![]), "{}");
    set("c_bit", Value::Bit(0), "0000000000");
    set("c_json", Value::Json("[]".into()), "[]");
    set("c_intarr", Value::Array(vec![]), "{}");
    set("c_text", Value::Text(String::new()), "");
    (row, texts)
}

fn null_row(id: i64, schema: &TableSchema) -> (Row, Vec<Option<&'static str>>) {
    let mut row = vec![Value::Null; schema.columns.len()];
    row[0] = Value::Int(id);
    let mut texts = vec![None; schema.columns.len()];
    texts[0] = Some(Box::leak(id.to_string().into_boxed_str()) as &str);
    (row, texts)
}

fn select_list(schema: &TableSchema) -> String {
    schema.columns.iter().map(|c| format!("\"{}\"::text", c.name)).collect::<Vec<_>>().join(", ")
}

fn owned(texts: &[Option<&str>]) -> Vec<Option<String>> {
    texts.iter().map(|t| t.map(str::to_string)).collect()
}

#[tokio::test]
async fn autocreate_declares_the_documented_types() {
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    let (schema, declared) = every_type();
    let target = TableRef::new("analytics", "Every");
    sink.prepare(&schema, &target, true).await.unwrap();
    let got = one(
        &pg,
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' NOT NULL' \
         ELSE '' END, '|' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '\"analytics\".\"Every\"'::regclass \
         AND attnum > 0",
    );
    let want: Vec<String> = schema
        .columns
        .iter()
        .zip(&declared)
        .map(|(c, t)| format!("{} {t}{}", c.name, if c.nullable { "" } else { " NOT NULL" }))
        .collect();
    assert_eq!(got.split('|').collect::<Vec<_>>(), want);
    assert_eq!(
        one(
            &pg,
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'analytics.\"Every\"'::regclass AND contype = 'p'"
        ),
        "PRIMARY KEY (id)"
    );
    assert_eq!(
        one(
            &pg,
            "SELECT string_agg(conname || ': ' || pg_get_constraintdef(oid), ' | ' ORDER BY conname) FROM pg_constraint \
                  WHERE conrelid = 'analytics.\"Every\"'::regclass AND contype = 'c'"
        ),
        "c_enum_labels: CHECK ((c_enum = ANY (ARRAY['gold'::text, 'silver'::text]))) | \
         c_set_labels: CHECK ((c_set <@ ARRAY['a'::text, 'b'::text, 'c'::text]))"
    );
    assert_eq!(
        one(
            &pg,
            "SELECT string_agg(attname || ' ' || collname, ', ') FROM pg_attribute a JOIN pg_collation c \
                  ON c.oid = a.attcollation WHERE attrelid = 'analytics.\"Every\"'::regclass AND collname <> 'default'"
        ),
        "c_varchar C"
    );
    // Preparing again (a pipeline's first run after creation) accepts the table it created.
    let mut again = sink_for_same(&pg);
    again.prepare(&schema, &target, false).await.unwrap();
}

fn sink_for_same(pg: &Postgres) -> PgSink {
    sink(pg)
}

#[tokio::test]
async fn values_round_trip_exactly_through_statements_and_copy() {
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    let (schema, _) = every_type();
    let target = TableRef::new("crm", "Every");
    sink.prepare(&schema, &target, true).await.unwrap();
    sink.set_copy_min_rows(64);

    // A small batch goes as statements.
    let rows = [full_row(1), edge_row(2), null_row(3, &schema)];
    sink.write(&rows.iter().map(|(r, _)| insert(&schema, r.clone())).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(sink.counts().statement_rows, 3);

    // A large CDC batch goes through a staging table, a large initial-load batch straight into the table.
    let staged: Vec<_> = (100..200).map(|i| if i % 2 == 0 { full_row(i) } else { edge_row(i) }).collect();
    sink.write(&staged.iter().map(|(r, _)| insert(&schema, r.clone())).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(sink.counts().staged_rows, 100);
    let loaded: Vec<_> =
        (200..300).map(|i| if i % 2 == 0 { edge_row(i) } else { null_row(i, &schema) }).collect();
    sink.write(&loaded.iter().map(|(r, _)| snapshot(&schema, r.clone())).collect::<Vec<_>>()).await.unwrap();
    // Columns written as text (interval, arrays, inet) go through the staging table even for the load.
    assert_eq!(sink.counts().staged_rows, 200);
    // The key is a number: staged rows are merged.
    assert_eq!(sink.counts().merged_rows, 200);

    let got = rows_of(&pg, &select_list(&schema), "crm.\"Every\" ORDER BY id");
    let want: Vec<Vec<Option<String>>> =
        rows.iter().chain(&staged).chain(&loaded).map(|(_, t)| owned(t)).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        for (i, c) in schema.columns.iter().enumerate() {
            assert_eq!(g[i], w[i], "column {} of row {:?}", c.name, w[0]);
        }
    }
}

fn simple_schema(table: &str) -> Arc<TableSchema> {
    simple_schema_with(table, DataType::Varchar { length: 8, charset: Charset::Utf8 })
}

/// The simple schema with a region (the key's second column) of type `region`.
fn simple_schema_with(table: &str, region: DataType) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableRef::new("app", table),
        columns: vec![
            col("id", DataType::Int { bytes: 4, unsigned: false }, false),
            col("region", region, false),
            col("name", DataType::Text { max_bytes: 65_535, charset: Charset::Utf8 }, true),
            col("n", DataType::Int { bytes: 8, unsigned: false }, true),
        ],
        primary_key: vec!["id".into(), "region".into()],
        version: 1,
    })
}

fn srow(id: i32, region: &str, name: &str, n: i64) -> Row {
    vec![Value::Int(id as i64), Value::Text(region.into()), Value::Text(name.into()), Value::Int(n)]
}

/// A row of the simple schema with a numeric region.
fn num_row(id: i32, region: i64, name: &str, n: i64) -> Row {
    vec![Value::Int(id as i64), Value::Int(region), Value::Text(name.into()), Value::Int(n)]
}

fn state(pg: &Postgres, table: &str) -> Vec<Vec<Option<String>>> {
    rows_of(pg, "id::text, region::text, name, n::text", &format!("app.\"{table}\" ORDER BY id, region"))
}

fn model_rows(model: &BTreeMap<(i32, String), Row>) -> Vec<Vec<Option<String>>> {
    model
        .values()
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    Value::Int(i) => Some(i.to_string()),
                    Value::Text(s) => Some(s.clone()),
                    Value::Null => None,
                    other => panic!("{other:?}"),
                })
                .collect()
        })
        .collect()
}

/// The second key column of [`changes_and_replays`]: text (which has a collation) or a number.
#[derive(Clone, Copy, PartialEq)]
enum Region {
    Text,
    Number,
}

#[tokio::test]
async fn changes_apply_in_order_and_replays_change_nothing() {
    // A key with a text column: staged rows are upserted with INSERT ... ON CONFLICT.
    let counts = changes_and_replays(usize::MAX, Region::Text, true).await;
    assert_eq!(counts.merged_rows, 0, "{counts:?}");
}

#[tokio::test]
async fn changes_merged_by_a_key_of_numbers_apply_in_order_and_replays_change_nothing() {
    let counts = changes_and_replays(usize::MAX, Region::Number, true).await;
    assert!(counts.merged_rows > 0 && counts.merged_rows == counts.staged_rows, "{counts:?}");
}

#[tokio::test]
async fn without_merge_a_key_of_numbers_is_upserted_with_on_conflict_to_the_same_state() {
    // The path of servers before PostgreSQL 15.
    let counts = changes_and_replays(usize::MAX, Region::Number, false).await;
    assert!(counts.staged_rows > 0 && counts.merged_rows == 0, "{counts:?}");
}

#[tokio::test]
async fn changes_applied_over_two_connections_end_in_the_same_state() {
    changes_and_replays(40, Region::Text, true).await;
    let counts = changes_and_replays(40, Region::Number, true).await;
    assert!(counts.merged_rows > 0, "{counts:?}");
}

/// Random batches of every kind of change, written with batches of `parallel` rows or more split over two
/// connections, then replayed; `merge` false makes the sink upsert staged rows with ON CONFLICT even where
/// it could use MERGE. Returns the sink's counts.
async fn changes_and_replays(parallel: usize, region: Region, merge: bool) -> WriteCounts {
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    sink.set_merge(merge);
    let schema = match region {
        Region::Text => simple_schema("orders"),
        Region::Number => simple_schema_with("orders", DataType::Int { bytes: 2, unsigned: false }),
    };
    sink.prepare(&schema, &TableRef::new("app", "orders"), true).await.unwrap();
    sink.set_copy_min_rows(64);
    sink.set_parallel_min_rows(parallel);
    // Rows are built with a text region; a numeric region holds its number ("1" or "2").
    let srow = |id: i32, region_name: &str, name: &str, n: i64| {
        let mut r = srow(id, region_name, name, n);
        if region == Region::Number {
            r[1] = Value::Int(region_name.parse().expect("a numeric region"));
        }
        r
    };

    // Batches of every size class: single events, small statement batches, and staged batches, with
    // inserts, updates, key moves and deletes of the same keys inside one batch.
    let mut model: BTreeMap<(i32, String), Row> = BTreeMap::new();
    let mut batches: Vec<Vec<ChangeEvent>> = Vec::new();
    let mut seed = 7u64;
    let mut rnd = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for (b, size) in [1usize, 3, 10, 63, 64, 500, 2, 1500, 7].into_iter().enumerate() {
        let mut batch = Vec::new();
        for _ in 0..size {
            let id = rnd(400) as i32;
            let region = match region {
                Region::Text => ["eu", "us"][rnd(2) as usize],
                Region::Number => ["1", "2"][rnd(2) as usize],
            }
            .to_string();
            let key = (id, region.clone());
            match (model.get(&key).cloned(), rnd(4)) {
                (None, _) => {
                    let r = srow(id, &region, &format!("n{b}-{id}"), rnd(1000) as i64);
                    batch.push(insert(&schema, r.clone()));
                    model.insert(key, r);
                }
                (Some(old), 0) => {
                    batch.push(delete(&schema, old));
                    model.remove(&key);
                }
                (Some(old), 1) => {
                    // Move the key to a free one.
                    let new_id = 1000 + rnd(100_000) as i32;
                    let nk = (new_id, region.clone());
                    if model.contains_key(&nk) {
                        continue;
                    }
                    let r = srow(new_id, &region, "moved", rnd(1000) as i64);
                    batch.push(update(&schema, old, r.clone()));
                    model.remove(&key);
                    model.insert(nk, r);
                }
                (Some(old), _) => {
                    let mut r = old.clone();
                    r[2] = if rnd(5) == 0 { Value::Null } else { Value::Text(format!("u{b}")) };
                    r[3] = Value::Int(rnd(1000) as i64);
                    batch.push(update(&schema, old, r.clone()));
                    model.insert(key, r);
                }
            }
        }
        sink.write(&batch).await.unwrap();
        assert_eq!(state(&pg, "orders"), model_rows(&model), "after batch {b} of {size} events");
        batches.push(batch);
    }
    assert!(sink.counts().staged_rows > 0 && sink.counts().statement_rows > 0, "{:?}", sink.counts());
    // Replaying any suffix of what was written ends in the same state.
    for from in [batches.len() - 1, batches.len() - 4, 0] {
        for batch in &batches[from..] {
            sink.write(batch).await.unwrap();
        }
        assert_eq!(state(&pg, "orders"), model_rows(&model), "after replaying from batch {from}");
    }
    let all: Vec<ChangeEvent> = batches.concat();
    sink.write(&all).await.unwrap();
    assert_eq!(state(&pg, "orders"), model_rows(&model), "after replaying everything as one batch");
    assert_eq!(sink.count(&TableRef::new("app", "orders")).await.unwrap(), model.len() as u64);
    sink.counts()
}

#[tokio::test]
async fn a_key_another_session_inserts_during_a_merge_is_upserted_all_the_same() {
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    let schema = simple_schema_with("races", DataType::Int { bytes: 2, unsigned: false });
    sink.prepare(&schema, &TableRef::new("app", "races"), true).await.unwrap();
    sink.set_copy_min_rows(64);
    let rows: Vec<Row> = (1..=100).map(|id| num_row(id, 1, "sink", id as i64)).collect();
    // Another session inserts key (50, 1) and commits only once the sink's MERGE waits on it: MERGE did not
    // see the row when it probed the key, and its insert then fails on the primary key.
    let other = Pg::new(config(&pg)).unwrap().connect().await.unwrap();
    other.batch_execute("BEGIN; INSERT INTO app.races VALUES (50, 1, 'other', -1)").await.unwrap();
    let commit_when_waited_on = async {
        let waiting =
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'MERGE%'";
        for _ in 0..200 {
            if other.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0) > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        other.batch_execute("COMMIT").await.unwrap();
    };
    let batch: Vec<ChangeEvent> = rows.iter().map(|r| insert(&schema, r.clone())).collect();
    let (written, ()) = tokio::join!(sink.write(&batch), commit_when_waited_on);
    written.unwrap();
    // The batch was applied again with ON CONFLICT, over the other session's row.
    let counts = sink.counts();
    assert_eq!((counts.staged_rows, counts.merged_rows), (100, 0), "{counts:?}");
    let want: Vec<Vec<Option<String>>> = (1..=100)
        .map(|id| vec![Some(id.to_string()), Some("1".into()), Some("sink".into()), Some(id.to_string())])
        .collect();
    assert_eq!(state(&pg, "races"), want);

    // Later batches merge again.
    let rows: Vec<Row> = (101..=200).map(|id| num_row(id, 2, "sink", id as i64)).collect();
    sink.write(&rows.iter().map(|r| insert(&schema, r.clone())).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(sink.counts().merged_rows, 100);
}

#[tokio::test]
async fn parts_that_wait_on_each_other_are_applied_whole() {
    // Rows swap their unique e-mail addresses under new keys: each part deletes rows whose addresses the
    // other part inserts, so the two transactions wait on each other until the server breaks the
    // deadlock; the batch is then applied as one transaction.
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    let schema = simple_schema("people");
    let target = TableRef::new("app", "people");
    sink.prepare(&schema, &target, true).await.unwrap();
    pg.sql("CREATE UNIQUE INDEX people_name ON app.people (name)").unwrap();
    sink.set_parallel_min_rows(2);
    let before: Vec<Row> = (0..200).map(|i| srow(i, "eu", &format!("e{i}"), 0)).collect();
    sink.write(&before.iter().map(|r| insert(&schema, r.clone())).collect::<Vec<_>>()).await.unwrap();
    let mut batch: Vec<ChangeEvent> = before.iter().map(|r| delete(&schema, r.clone())).collect();
    let mut model = BTreeMap::new();
    for i in 0..200 {
        let r = srow(1000 + i, "eu", &format!("e{}", i ^ 1), 1);
        batch.push(insert(&schema, r.clone()));
        model.insert((1000 + i, "eu".to_string()), r);
    }
    sink.write(&batch).await.unwrap();
    assert_eq!(state(&pg, "people"), model_rows(&model));
    // And once more: a replay of the batch changes nothing.
    sink.write(&batch).await.unwrap();
    assert_eq!(state(&pg, "people"), model_rows(&model));
}

/// Backends of the server other than the one asking.
fn other_backends(pg: &Postgres) -> usize {
    one(pg, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn only_batches_of_the_parallel_size_take_a_second_connection() {
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    let schema = simple_schema("orders");
    let target = TableRef::new("app", "orders");
    sink.prepare(&schema, &target, true).await.unwrap();
    let batch = |from: usize, n: usize| -> Vec<ChangeEvent> {
        (from..from + n).map(|i| insert(&schema, srow(i as i32, "eu", &format!("o{i}"), 1))).collect()
    };
    let small = PARALLEL_MIN_ROWS - 1;
    sink.write(&batch(0, small)).await.unwrap();
    assert_eq!(other_backends(&pg), 1, "a batch of {small} rows is applied on one connection");
    sink.write(&batch(small, PARALLEL_MIN_ROWS)).await.unwrap();
    assert_eq!(other_backends(&pg), 2, "a batch of {PARALLEL_MIN_ROWS} rows is split over two connections");
    assert_eq!(one(&pg, "SELECT count(*) FROM app.orders"), (small + PARALLEL_MIN_ROWS).to_string());
    assert_eq!(sink.counts().staged_rows as usize, small + PARALLEL_MIN_ROWS);
}

#[tokio::test]
async fn the_initial_load_is_copied_and_a_resumed_load_is_idempotent() {
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    let schema = simple_schema("customers");
    let target = TableRef::new("app", "customers");
    sink.prepare(&schema, &target, true).await.unwrap();
    let rows: Vec<Row> = (0..12_000).map(|i| srow(i, "eu", &format!("c{i}"), i as i64 * 3)).collect();
    for chunk in rows.chunks(5_000) {
        sink.write(&chunk.iter().map(|r| snapshot(&schema, r.clone())).collect::<Vec<_>>()).await.unwrap();
    }
    assert_eq!(sink.counts().direct_rows, 12_000);
    assert_eq!(sink.counts().statement_rows, 0);
    let digest = || {
        one(
            &pg,
            "SELECT count(*) || ' ' || md5(string_agg(id || region || name || n, ',' ORDER BY id)) FROM app.customers",
        )
    };
    let before = digest();
    // A resumed load resends the second chunk: the COPY meets existing keys and upserts instead.
    sink.write(&rows[5_000..10_000].iter().map(|r| snapshot(&schema, r.clone())).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(sink.counts().staged_rows, 5_000);
    assert_eq!(digest(), before);
    assert!(before.starts_with("12000 "));
    // A replayed chunk whose rows changed in the meantime ends with the resent values.
    let changed: Vec<Row> = rows[..100]
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r[3] = Value::Int(-1);
            r
        })
        .collect();
    sink.write(&changed.iter().map(|r| snapshot(&schema, r.clone())).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(one(&pg, "SELECT count(*) FROM app.customers WHERE n = -1"), "100");
}

#[tokio::test]
async fn an_autocreated_table_gets_its_key_after_the_load_even_when_the_load_resumed() {
    let pg = Postgres::start().unwrap();
    let schema = simple_schema("accounts");
    let target = TableRef::new("app", "accounts");
    let key_of = || {
        one(
            &pg,
            "SELECT coalesce(string_agg(conname, ','), 'none') FROM pg_constraint \
             WHERE conrelid = 'app.accounts'::regclass AND contype = 'p'",
        )
    };
    let rows: Vec<Row> = (0..9_000).map(|i| srow(i, "eu", &format!("a{i}"), i as i64)).collect();
    let load = |r: &[Row]| r.iter().map(|r| snapshot(&schema, r.clone())).collect::<Vec<_>>();

    // The first attempt creates the table, copies two chunks and a third that is never checkpointed.
    let mut first = sink(&pg);
    assert!(first.prepare(&schema, &target, true).await.unwrap(), "the table is created");
    assert_eq!(key_of(), "accounts_pkey");
    first.begin_load(&schema, &target, None, true).await.unwrap();
    assert_eq!(key_of(), "none", "the key waits for the end of the load");
    for chunk in rows[..6_000].chunks(2_000) {
        first.write(&load(chunk)).await.unwrap();
    }
    drop(first);

    // The load resumes after the second chunk: the third is sent again.
    let mut resumed = sink(&pg);
    resumed.attach(&schema.table, &target).await.unwrap();
    resumed.begin_load(&schema, &target, Some(&rows[3_999][..2].to_vec()), false).await.unwrap();
    for chunk in rows[4_000..8_990].chunks(2_000) {
        resumed.write(&load(chunk)).await.unwrap();
    }
    // A small last chunk goes as statements, plain inserts while the table has no key.
    resumed.write(&load(&rows[8_990..])).await.unwrap();
    assert_eq!(one(&pg, "SELECT count(*) FROM app.accounts"), "11000", "2,000 rows were sent twice");
    resumed.end_load(&schema, &target).await.unwrap();
    assert_eq!(key_of(), "accounts_pkey");
    assert_eq!(
        one(&pg, "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || sum(n) FROM app.accounts"),
        format!("9000 9000 {}", (0..9_000i64).sum::<i64>())
    );
    // Changes after the load are upserts on the key.
    resumed.write(&[update(&schema, rows[5].clone(), srow(5, "eu", "changed", -5))]).await.unwrap();
    assert_eq!(one(&pg, "SELECT name || n FROM app.accounts WHERE id = 5"), "changed-5");

    // A table the pipeline did not create keeps its key, and so does one that holds rows already.
    let mut other = sink(&pg);
    assert!(!other.prepare(&schema, &target, true).await.unwrap(), "the table exists");
    other.begin_load(&schema, &target, None, false).await.unwrap();
    assert_eq!(key_of(), "accounts_pkey");
    other.begin_load(&schema, &target, None, true).await.unwrap();
    assert_eq!(key_of(), "accounts_pkey");
}

#[tokio::test]
async fn unchanged_columns_keep_the_target_value() {
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    let schema = simple_schema("docs");
    sink.prepare(&schema, &TableRef::new("app", "docs"), true).await.unwrap();
    let big = "x".repeat(100_000);
    sink.write(&[insert(&schema, srow(1, "eu", &big, 1)), insert(&schema, srow(2, "eu", &big, 2))])
        .await
        .unwrap();
    let unchanged = |id: i32, n: i64| {
        vec![Value::Int(id as i64), Value::Text("eu".into()), Value::Unchanged, Value::Int(n)]
    };
    // A patch in its own batch; a patch that moves its key; a patch merged with an earlier full row.
    sink.write(&[update(&schema, unchanged(1, 1), unchanged(1, 10))]).await.unwrap();
    sink.write(&[update(&schema, unchanged(2, 2), unchanged(5, 20))]).await.unwrap();
    sink.write(&[
        insert(&schema, srow(3, "eu", "small", 3)),
        update(&schema, unchanged(3, 3), unchanged(3, 30)),
    ])
    .await
    .unwrap();
    assert_eq!(
        rows_of(&pg, "id::text, length(name)::text, n::text", "app.docs ORDER BY id"),
        vec![
            owned(&[Some("1"), Some("100000"), Some("10")]),
            owned(&[Some("3"), Some("5"), Some("30")]),
            owned(&[Some("5"), Some("100000"), Some("20")]),
        ]
    );
}

#[tokio::test]
async fn values_postgresql_cannot_hold_are_refused_and_nothing_is_written() {
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    let (schema, _) = every_type();
    let target = TableRef::new("crm", "Every");
    sink.prepare(&schema, &target, true).await.unwrap();
    sink.set_copy_min_rows(64);
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("c_date", Value::Date(date(0, 0, 0)), "0000-00-00", "zero dates"),
        ("c_date", Value::Date(date(2024, 5, 0)), "2024-05-00", "zero dates"),
        ("c_date", Value::Date(date(2023, 2, 30)), "2023-02-30", "not a calendar date"),
        (
            "c_datetime",
            Value::DateTime(DateTime { date: date(0, 0, 0), hour: 0, minute: 0, second: 0, micros: 0 }),
            "0000-00-00 00:00:00",
            "zero dates",
        ),
        ("c_ts", Value::ZeroTimestamp, "0000-00-00 00:00:00", "zero timestamp"),
        ("c_text", Value::Text("a\0b".into()), "\"a\\0b\"", "NUL"),
        ("c_varchar", Value::Text("x".repeat(41)), "xxxx", "longer than 40 characters"),
        (
            "c_time",
            Value::Time(Time { negative: false, hours: 25, minutes: 0, seconds: 0, micros: 0 }),
            "25:00:00",
            "interval",
        ),
        (
            "c_time",
            Value::Time(Time { negative: true, hours: 1, minutes: 0, seconds: 0, micros: 0 }),
            "-01:00:00",
            "interval",
        ),
        (
            "c_time",
            Value::Time(Time { negative: false, hours: 1, minutes: 0, seconds: 0, micros: 123_400 }),
            "01:00:00.123400",
            "rounded",
        ),
        ("c_dec", Value::Decimal("1.00005".into()), "1.00005", "rounded"),
        ("c_dec", Value::Decimal("123456789.5".into()), "123456789.5", "too large"),
        ("c_json", Value::Json(r#"{"a":"\u0000"}"#.into()), "u0000", "jsonb"),
        ("c_textarr", Value::Array(vec![Value::Text("a\0".into())]), "array", "NUL"),
    ];
    for (column, value, shown, why) in cases {
        let (mut bad, _) = full_row(2);
        bad[schema.column_index(column).unwrap()] = value;
        let events = vec![insert(&schema, full_row(1).0), insert(&schema, bad)];
        let e = sink.write(&events).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported, "{}", e.report());
        for part in ["crm.Every", &format!("'{column}'"), shown, why] {
            assert!(e.message.contains(part), "'{part}' missing in: {}", e.message);
        }
        assert_eq!(one(&pg, "SELECT count(*) FROM crm.\"Every\""), "0", "nothing of the batch is written");
    }
    // The same value arriving through COPY is refused in the same way.
    let mut events: Vec<ChangeEvent> = (1..100).map(|i| snapshot(&schema, full_row(i).0)).collect();
    let (mut bad, _) = full_row(100);
    bad[schema.column_index("c_date").unwrap()] = Value::Date(date(0, 0, 0));
    events.push(snapshot(&schema, bad));
    let e = sink.write(&events).await.unwrap_err();
    assert!(e.message.contains("0000-00-00") && e.message.contains("'c_date'"), "{}", e.message);
    // The sink goes on working after a refusal.
    sink.write(&[insert(&schema, full_row(1).0)]).await.unwrap();
    assert_eq!(one(&pg, "SELECT count(*) FROM crm.\"Every\""), "1");
}

#[tokio::test]
async fn an_existing_target_is_checked_and_refused_with_every_mismatch() {
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    let (schema, _) = every_type();
    pg.sql(
        "CREATE SCHEMA crm; CREATE TYPE crm.tier AS ENUM ('silver', 'bronze', 'gold');
         CREATE TABLE crm.fits (id numeric(19,0) PRIMARY KEY, c_bool boolean, c_i1 integer, c_u1 integer, c_i2 bigint,
           c_u2 numeric(5,0), c_i3 integer, c_u3 bigint, c_i4 bigint, c_u4 numeric(10,0), c_i8 numeric(30,0),
           c_u8 numeric(20,0), c_dec numeric(20,8), c_num numeric, c_float double precision, c_double float8,
           c_char varchar(10), c_varchar text, c_text varchar, c_binary bytea, c_varbinary bytea, c_blob bytea,
           c_date timestamp(0), c_time interval, c_datetime timestamp, c_ts timestamptz(3), c_year integer,
           c_enum crm.tier, c_set varchar(5)[], c_bit varbit, c_json json, c_uuid varchar(36), c_interval interval,
           c_intarr int4[], c_textarr text[], c_byteaarr bytea[], c_inet inet, extra text,
           filled timestamptz NOT NULL DEFAULT now());
         CREATE TABLE crm.wrong (id integer, region text NOT NULL, c_bool smallint, c_u8 bigint, c_dec numeric(12,6),
           c_double real, c_varchar varchar(20), c_char character(5), c_time time(0), c_ts timestamp,
           c_enum crm.tier, c_set text, c_json text, c_bit bit(8), c_interval text, c_inet cidr,
           must text NOT NULL, PRIMARY KEY (id, region));",
    )
    .unwrap();
    // A target with other but wider types is accepted, and values land in it.
    let fits = TableRef::new("crm", "fits");
    sink.prepare(&schema, &fits, false).await.unwrap();
    let mut row = full_row(1).0;
    row[schema.column_index("c_time").unwrap()] =
        Value::Time(Time { negative: true, hours: 838, minutes: 59, seconds: 59, micros: 0 });
    sink.write(&[insert(&schema, row)]).await.unwrap();
    assert_eq!(
        rows_of(
            &pg,
            "c_time::text, c_u8::text, c_enum::text, c_set::text, c_bit::text, c_date::text, c_uuid",
            "crm.fits"
        ),
        vec![owned(&[
            Some("-838:59:59"),
            Some("18446744073709551615"),
            Some("silver"),
            Some("{a,c}"),
            Some("1010000001"),
            Some("2024-02-29 00:00:00"),
            Some("00112233-4455-6677-8899-aabbccddeeff"),
        ])]
    );

    let e = sink.prepare(&schema, &TableRef::new("crm", "wrong"), true).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Incompatible, "{}", e.report());
    for part in [
        "primary key is (id, region) in the target but (id) in the source",
        "column 'id' is integer in the target",
        "column 'c_bool' is smallint in the target",
        "column 'c_u8' is bigint in the target",
        "column 'c_dec' is numeric(12,6) in the target",
        "column 'c_double' is real in the target",
        "column 'c_varchar' is character varying(20) in the target",
        "column 'c_char' is character(5) in the target",
        "column 'c_time' is time(0) without time zone in the target",
        "column 'c_ts' is timestamp without time zone in the target",
        "column 'c_set' is text in the target",
        "column 'c_bit' is bit(8) in the target",
        "column 'c_interval' is text in the target",
        "column 'c_inet' is cidr in the target",
        "column 'c_i1' (",
        "target column 'must' is NOT NULL without a default",
    ] {
        assert!(e.message.contains(part), "'{part}' missing in: {}", e.message);
    }
    assert!(!e.message.contains("'c_enum'") && !e.message.contains("'c_json'"), "{}", e.message);

    // AutoCreate of a table with a type the target does not know creates nothing, not even the schema.
    let mut odd = (*schema).clone();
    odd.columns.push(col("geo", DataType::Other { name: "geometry".into() }, true));
    odd.columns.push(col("v", DataType::Other { name: "vector(3)".into() }, true));
    let e = sink.prepare(&odd, &TableRef::new("fresh", "odd"), true).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{}", e.report());
    assert!(
        e.message.contains("'geo' has type 'geometry'") && e.message.contains("'v' has type 'vector(3)'"),
        "{}",
        e.message
    );
    assert_eq!(one(&pg, "SELECT count(*) FROM pg_namespace WHERE nspname = 'fresh'"), "0");
    // A missing target without AutoCreate.
    let e = sink.prepare(&schema, &TableRef::new("crm", "absent"), false).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = sink.attach(&schema.table, &TableRef::new("crm", "absent")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn schema_changes_add_and_drop_columns_once() {
    let pg = Postgres::start().unwrap();
    let mut sink = sink(&pg);
    let v1 = simple_schema("evolving");
    let target = TableRef::new("app", "evolving");
    sink.prepare(&v1, &target, true).await.unwrap();
    sink.write(&[insert(&v1, srow(1, "eu", "a", 1))]).await.unwrap();

    let mut v2 = (*v1).clone();
    v2.version = 2;
    v2.columns.retain(|c| c.name != "n");
    v2.columns.push(col("tier", DataType::Enum { labels: vec!["gold".into()] }, false));
    v2.columns.push(col("born", DataType::Date, false));
    v2.columns[2] = col("name", DataType::Varchar { length: 5, charset: Charset::Utf8 }, true);
    let v2 = Arc::new(v2);
    sink.alter(&v1, &v2, &target).await.unwrap();
    // Applying the same change again (a replay after a crash) changes nothing.
    sink.alter(&v1, &v2, &target).await.unwrap();
    let shape = || {
        one(
            &pg,
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN '!' ELSE '' END, \
             ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'app.evolving'::regclass AND attnum > 0 AND NOT attisdropped",
        )
    };
    // `name` stays text: text holds every varchar(5) value, so it is not redeclared.
    assert_eq!(shape(), "id integer!, region character varying(8)!, name text, tier text, born date");
    let row = vec![
        Value::Int(2),
        Value::Text("us".into()),
        Value::Text("b".into()),
        Value::Enum("gold".into()),
        Value::Date(date(2000, 1, 1)),
    ];
    sink.write(&[insert(&v2, row)]).await.unwrap();

    // New labels replace the CHECK constraint.
    let mut v3 = (*v2).clone();
    v3.version = 3;
    let i = v3.column_index("tier").unwrap();
    v3.columns[i].data_type = DataType::Enum { labels: vec!["gold".into(), "platinum".into()] };
    let v3 = Arc::new(v3);
    sink.alter(&v2, &v3, &target).await.unwrap();
    sink.alter(&v2, &v3, &target).await.unwrap();
    let mut row = vec![
        Value::Int(3),
        Value::Text("us".into()),
        Value::Null,
        Value::Enum("platinum".into()),
        Value::Null,
    ];
    sink.write(&[insert(&v3, row.clone())]).await.unwrap();
    row[3] = Value::Enum("tin".into());
    row[0] = Value::Int(4);
    let e = sink.write(&[insert(&v3, row)]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Incompatible, "{}", e.report());
    assert_eq!(
        rows_of(&pg, "id::text, name, tier, born::text", "app.evolving ORDER BY id"),
        vec![
            owned(&[Some("1"), Some("a"), None, None]),
            owned(&[Some("2"), Some("b"), Some("gold"), Some("2000-01-01")]),
            owned(&[Some("3"), None, Some("platinum"), None]),
        ]
    );

    // A resumed pipeline attaches without checking; truncate empties the table.
    let mut resumed = sink_for_same(&pg);
    resumed.attach(&v3.table, &target).await.unwrap();
    resumed
        .write(&[delete(
            &v3,
            vec![Value::Int(1), Value::Text("eu".into()), Value::Null, Value::Null, Value::Null],
        )])
        .await
        .unwrap();
    assert_eq!(resumed.count(&target).await.unwrap(), 2);
    resumed.truncate(&target).await.unwrap();
    assert_eq!(resumed.count(&target).await.unwrap(), 0);
}

#[tokio::test]
async fn check_reports_what_a_target_needs() {
    let pg = Postgres::start().unwrap();
    let sink = sink(&pg);
    let report = sink.check().await.unwrap();
    assert!(report.ok(), "{:?}", report.problems());
    assert!(report.server_version.unwrap().starts_with("PostgreSQL"));
    pg.sql(
        "CREATE ROLE weak LOGIN PASSWORD 'weak-pw'; REVOKE TEMPORARY ON DATABASE postgres FROM PUBLIC; \
            REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
    )
    .unwrap();
    let mut cfg = config(&pg);
    cfg.user = "weak".into();
    cfg.password = SecretString::from("weak-pw".to_string());
    let report = PgSink::new(Pg::new(cfg).unwrap()).check().await.unwrap();
    let problems = report.problems().join(" | ");
    assert!(problems.contains("GRANT TEMPORARY ON DATABASE \"postgres\""), "{problems}");
    assert!(problems.contains("can create no tables"), "{problems}");
}
