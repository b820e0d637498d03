//! `idaas-bench latency`: end-to-end latency of single-row changes at a steady rate.
//!
//! `--conns` connections to the source run a paced mix of autocommit single-row statements on
//! `lat.events (id BIGINT PRIMARY KEY, payload VARCHAR(100), n INT)` totalling `--rate` row changes per
//! second for `--secs` seconds: inserts of fresh ids (from one shared counter starting at `--first-id`, so
//! ids rise in commit order), and every `--update-every`-th statement of a connection an
//! `UPDATE ... SET n = n + 1` of the id that connection inserted ten inserts before. Right after each
//! statement returns (the commit), the wall-clock time is recorded.
//!
//! Two ways to see when a change arrived, both on the same machine and clock:
//! - `--applied-at`: the target table has an extra column
//!   `applied_at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)`, which the target
//!   server fills when the pipeline writes the row. Latency of an id = `UNIX_TIMESTAMP(applied_at)` minus the
//!   source commit time of the id's last change. MariaDB's `CURRENT_TIMESTAMP` is the start time of the
//!   writing statement, so this leaves out the rest of the target transaction (its commit).
//! - `--poll-port`: one connection polls the target (or a native replica, whose rows carry no such column)
//!   every millisecond for ids not seen yet; latency of an id = the time the poll that first returned it was
//!   sent, minus the source commit time of its insert. This counts the target commit, and overstates by up
//!   to one poll period.
//!
//! After the load, the final state of every id (`n`) is awaited on `--check-port` and verified.

use crate::args::Args;
use crate::procfs::{self, CpuSampler, now_us, round1, round3};
use crate::wait::connect;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How many inserts back an update reaches (the row is a few milliseconds old).
const UPDATE_DISTANCE: usize = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Update,
}

struct OpRecord {
    id: i64,
    kind: Kind,
    /// When the statement was due by the schedule, sent, and returned (epoch µs).
    due_us: i64,
    sent_us: i64,
    commit_us: i64,
}

struct Plan {
    rate: f64,
    secs: f64,
    conns: usize,
    update_every: u64,
}

fn payload(id: i64, n: i32) -> String {
    format!("payload {id:012} version {n:06} abcdefghijklmnopqrstuvwxyz0123456789")
}

/// One source connection's share of the schedule: statement `i` is due at
/// `start + (k + i * conns) / rate`.
async fn generate(
    mut conn: mysql_async::Conn,
    k: usize,
    plan: Arc<Plan>,
    start: Instant,
    start_wall_us: i64,
    next_id: Arc<AtomicI64>,
) -> Result<Vec<OpRecord>, String> {
    let end = Duration::from_secs_f64(plan.secs);
    let mut recent: VecDeque<i64> = VecDeque::with_capacity(UPDATE_DISTANCE + 1);
    let mut out = Vec::with_capacity((plan.rate * plan.secs / plan.conns as f64) as usize + 16);
    let mut n_of: HashMap<i64, i32> = HashMap::new();
    let mut i: u64 = 0;
    loop {
        let offset = Duration::from_secs_f64((k as f64 + (i as f64) * plan.conns as f64) / plan.rate);
        if offset >= end {
            break;
        }
        let due = start + offset;
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let due_us = start_wall_us + offset.as_micros() as i64;
        let update = plan.update_every > 0 && i % plan.update_every == plan.update_every - 1;
        let target = if update && recent.len() >= UPDATE_DISTANCE { recent.front().copied() } else { None };
        let sent_us = now_us();
        let (id, kind) = match target {
            Some(id) => {
                let n = n_of.entry(id).or_insert(0);
                *n += 1;
                conn.exec_drop(
                    "UPDATE lat.events SET n = n + 1, payload = ? WHERE id = ?",
                    (payload(id, *n), id),
                )
                .await
                .map_err(|e| format!("update of id {id}: {e}"))?;
                (id, Kind::Update)
            }
            None => {
                let id = next_id.fetch_add(1, Ordering::SeqCst);
                conn.exec_drop(
                    "INSERT INTO lat.events (id, payload, n) VALUES (?, ?, 0)",
                    (id, payload(id, 0)),
                )
                .await
                .map_err(|e| format!("insert of id {id}: {e}"))?;
                if recent.len() == UPDATE_DISTANCE {
                    recent.pop_front();
                }
                recent.push_back(id);
                (id, Kind::Insert)
            }
        };
        let commit_us = now_us();
        out.push(OpRecord { id, kind, due_us, sent_us, commit_us });
        i += 1;
    }
    let _ = conn.disconnect().await;
    Ok(out)
}

/// Polls for ids `>= first_id` until every id below the final counter value is seen (or a timeout);
/// returns the time each id was first seen, and the mean poll period in ms.
async fn poll(
    port: u16,
    password: String,
    first_id: i64,
    load_done: Arc<AtomicBool>,
    next_id: Arc<AtomicI64>,
    timeout: Duration,
) -> Result<(HashMap<i64, i64>, f64), String> {
    let mut conn = connect(port, &password).await?;
    let mut seen: HashMap<i64, i64> = HashMap::new();
    let mut above: BTreeSet<i64> = BTreeSet::new();
    let mut low = first_id - 1;
    let started = Instant::now();
    let mut done_since: Option<Instant> = None;
    let mut polls = 0u64;
    loop {
        let t = now_us();
        let ids: Vec<i64> = conn
            .exec("SELECT id FROM lat.events WHERE id > ?", (low,))
            .await
            .map_err(|e| format!("poll on port {port}: {e}"))?;
        polls += 1;
        for id in ids {
            if let std::collections::hash_map::Entry::Vacant(v) = seen.entry(id) {
                v.insert(t);
                above.insert(id);
            }
        }
        while above.first() == Some(&(low + 1)) {
            above.pop_first();
            low += 1;
        }
        if load_done.load(Ordering::SeqCst) {
            let last = next_id.load(Ordering::SeqCst) - 1;
            if low >= last {
                break;
            }
            let since = *done_since.get_or_insert_with(Instant::now);
            if since.elapsed() > timeout {
                eprintln!("idaas-bench latency: poller gave up with ids up to {low} of {last} seen");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = conn.disconnect().await;
    let period_ms = started.elapsed().as_secs_f64() * 1e3 / polls.max(1) as f64;
    Ok((seen, period_ms))
}

/// Nearest-rank percentiles of microsecond values, in milliseconds.
fn distribution(values: &mut [i64]) -> Value {
    if values.is_empty() {
        return json!({"count": 0});
    }
    values.sort_unstable();
    let pick = |p: f64| {
        let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
        values[rank.clamp(1, values.len()) - 1] as f64 / 1000.0
    };
    let mean = values.iter().map(|v| *v as f64).sum::<f64>() / values.len() as f64 / 1000.0;
    json!({
        "count": values.len(),
        "min_ms": round3(values[0] as f64 / 1000.0),
        "p50_ms": round3(pick(50.0)),
        "p90_ms": round3(pick(90.0)),
        "p99_ms": round3(pick(99.0)),
        "p999_ms": round3(pick(99.9)),
        "max_ms": round3(values[values.len() - 1] as f64 / 1000.0),
        "mean_ms": round3(mean),
        "negative": values.iter().filter(|v| **v < 0).count(),
    })
}

pub async fn run(args: &Args) -> Result<(), String> {
    let source_port: u16 = args.req_num("source-port")?;
    let check_port: u16 = args.req_num("check-port")?;
    let poll_port: Option<u16> =
        args.get("poll-port").map(|p| p.parse()).transpose().map_err(|_| "--poll-port")?;
    let password = args.req("password")?.to_string();
    let plan = Arc::new(Plan {
        rate: args.num("rate", 5000.0)?,
        secs: args.num("secs", 30.0)?,
        conns: args.num("conns", 4usize)?.max(1),
        update_every: args.num("update-every", 5u64)?,
    });
    let first_id: i64 = args.num("first-id", 1)?;
    let applied_at = args.flag("applied-at");
    let settle_timeout = Duration::from_secs_f64(args.num("settle-timeout", 300.0)?);

    let mut conns = Vec::new();
    for _ in 0..plan.conns {
        conns.push(connect(source_port, &password).await?);
    }
    let next_id = Arc::new(AtomicI64::new(first_id));
    let load_done = Arc::new(AtomicBool::new(false));
    let poller = poll_port.map(|port| {
        tokio::spawn(poll(
            port,
            password.clone(),
            first_id,
            load_done.clone(),
            next_id.clone(),
            settle_timeout,
        ))
    });
    let cpu = CpuSampler::start(&args.pids()?);
    let load_before = procfs::loadavg();
    // Start a little later so every connection and the poller are ready.
    let lead = Duration::from_millis(200);
    let start = Instant::now() + lead;
    let start_wall_us = now_us() + lead.as_micros() as i64;
    let mut tasks = Vec::new();
    for (k, conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(generate(conn, k, plan.clone(), start, start_wall_us, next_id.clone())));
    }
    let mut ops: Vec<OpRecord> = Vec::new();
    for t in tasks {
        ops.extend(t.await.map_err(|e| format!("generator task: {e}"))??);
    }
    load_done.store(true, Ordering::SeqCst);
    let cpu_load = cpu.finish();
    let load_after = procfs::loadavg();
    let last_id = next_id.load(Ordering::SeqCst) - 1;
    ops.sort_by_key(|o| o.commit_us);
    let first_sent = ops.iter().map(|o| o.sent_us).min().unwrap_or(start_wall_us);
    let last_commit = ops.iter().map(|o| o.commit_us).max().unwrap_or(start_wall_us);
    let inserts = ops.iter().filter(|o| o.kind == Kind::Insert).count() as i64;
    let updates = ops.len() as i64 - inserts;

    // Per id: the commit time of its insert and of its last change, and its final n.
    let mut insert_commit: HashMap<i64, i64> = HashMap::new();
    let mut last_change: HashMap<i64, (i64, Kind)> = HashMap::new();
    let mut final_n: HashMap<i64, i32> = HashMap::new();
    for o in &ops {
        if o.kind == Kind::Insert {
            insert_commit.insert(o.id, o.commit_us);
            final_n.entry(o.id).or_insert(0);
        } else {
            *final_n.entry(o.id).or_insert(0) += 1;
        }
        last_change.insert(o.id, (o.commit_us, o.kind));
    }

    // Wait for the final state on the checked server.
    let mut check = connect(check_port, &password).await?;
    let settle_start = Instant::now();
    loop {
        let row: Option<(i64, i64)> = check
            .exec_first(
                "SELECT COUNT(*), CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM lat.events WHERE id BETWEEN ? AND ?",
                (first_id, last_id),
            )
            .await
            .map_err(|e| format!("check on port {check_port}: {e}"))?;
        if row == Some((inserts, updates)) {
            break;
        }
        if settle_start.elapsed() > settle_timeout {
            return Err(format!(
                "the checked server on port {check_port} has (rows, sum n) = {row:?}, expected ({inserts}, {updates}) \
                 {} s after the load ended",
                settle_timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled_us = now_us();

    let mut applied: HashMap<i64, i64> = HashMap::new();
    let mut wrong_n = 0usize;
    if applied_at {
        let rows: Vec<(i64, i32, Option<i64>)> = check
            .exec(
                "SELECT id, n, CAST(UNIX_TIMESTAMP(applied_at) * 1000000 AS SIGNED) FROM lat.events \
                 WHERE id BETWEEN ? AND ?",
                (first_id, last_id),
            )
            .await
            .map_err(|e| format!("reading applied_at on port {check_port}: {e}"))?;
        for (id, n, at) in rows {
            if final_n.get(&id) != Some(&n) {
                wrong_n += 1;
            }
            if let Some(at) = at {
                applied.insert(id, at);
            }
        }
    }
    let _ = check.disconnect().await;
    let (visible, poll_period_ms) = match poller {
        Some(p) => p.await.map_err(|e| format!("poller task: {e}"))??,
        None => (HashMap::new(), 0.0),
    };

    let mut applied_all = Vec::new();
    let mut applied_inserts_only = Vec::new();
    let mut applied_updated = Vec::new();
    let mut visible_insert = Vec::new();
    let mut raw = String::from("id,insert_commit_us,last_commit_us,last_kind,applied_us,visible_us\n");
    let mut ids: Vec<i64> = last_change.keys().copied().collect();
    ids.sort_unstable();
    for id in &ids {
        let (last_us, kind) = last_change[id];
        let ins = insert_commit.get(id).copied();
        let app = applied.get(id).copied();
        let vis = visible.get(id).copied();
        if let Some(a) = app {
            applied_all.push(a - last_us);
            if kind == Kind::Insert {
                applied_inserts_only.push(a - last_us);
            } else {
                applied_updated.push(a - last_us);
            }
        }
        if let (Some(v), Some(i)) = (vis, ins) {
            visible_insert.push(v - i);
        }
        let _ = writeln!(
            raw,
            "{id},{},{last_us},{},{},{}",
            ins.map(|v| v.to_string()).unwrap_or_default(),
            if kind == Kind::Insert { "insert" } else { "update" },
            app.map(|v| v.to_string()).unwrap_or_default(),
            vis.map(|v| v.to_string()).unwrap_or_default()
        );
    }
    if let Some(path) = args.get("raw") {
        std::fs::write(path, raw).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    let mut commit_time: Vec<i64> = ops.iter().map(|o| o.commit_us - o.sent_us).collect();
    let mut slip: Vec<i64> = ops.iter().map(|o| o.sent_us - o.due_us).collect();
    let span_s = (last_commit - first_sent) as f64 / 1e6;
    let out = json!({
        "plan": {"rate": plan.rate, "secs": plan.secs, "conns": plan.conns, "update_every": plan.update_every,
                 "first_id": first_id, "last_id": last_id},
        "changes": ops.len(),
        "inserts": inserts,
        "updates": updates,
        "ids": ids.len(),
        "span_s": round3(span_s),
        "achieved_rate": round1(ops.len() as f64 / span_s.max(1e-9)),
        "source_statement": distribution(&mut commit_time),
        "schedule_slip": distribution(&mut slip),
        "settle_after_last_commit_s": round3((settled_us - last_commit) as f64 / 1e6),
        "wrong_final_n": wrong_n,
        "applied_at": if applied_at { json!({
            "all_ids_last_change": distribution(&mut applied_all),
            "ids_only_inserted": distribution(&mut applied_inserts_only),
            "ids_updated_last_change": distribution(&mut applied_updated),
            "ids_missing": ids.len() - applied.len(),
        }) } else { Value::Null },
        "visible": if poll_port.is_some() { json!({
            "insert_first_seen": distribution(&mut visible_insert),
            "poll_period_ms": round3(poll_period_ms),
            "ids_missing": insert_commit.len() - visible.len(),
        }) } else { Value::Null },
        "cpu": cpu_load,
        "load_before": load_before,
        "load_after": load_after,
    });
    println!("{out}");
    if wrong_n > 0 {
        return Err(format!("{wrong_n} ids have a wrong final n on the checked server"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<i64> = (1..=100).map(|x| x * 1000).collect();
        let d = distribution(&mut v);
        assert_eq!(d["p50_ms"], 50.0);
        assert_eq!(d["p99_ms"], 99.0);
        assert_eq!(d["max_ms"], 100.0);
        assert_eq!(d["negative"], 0);
        assert_eq!(distribution(&mut [])["count"], 0);
    }
}
