//! PostgreSQL catch-up timers.
//!
//! - `wait-lsn`: until an iDaaS pipeline's checkpoint (`{"lsn": ...}` in its stats) or a native
//!   subscription's `pg_stat_subscription.latest_end_lsn` is at `--lsn` or later, then until a check query
//!   on the target (`--check-sql`, e.g. an `md5` over the whole table) returns `--expected`. The drain time is
//!   the later of the two: the arrival of the first poll answer that showed the LSN, and the start of the
//!   first check query that matched (its snapshot was taken then, so the target equalled the source by that
//!   time). CPU is counted until the LSN was reached, so the check query's own work is left out.
//! - `wait-subscription-copy`: until every table of a subscription is `ready` (`pg_subscription_rel`), with
//!   the times its initial copy finished (`f`) and it was synchronised (`s`).
//!
//! `--lsn-file FILE` instead of `--lsn` waits for the shell to write the goal (a line) into FILE, sampling
//! memory and CPU from the start.
//!
//! `--rss-pid PID` samples the resident memory of a process (the `idaas server`) every `--rss-interval-ms`
//! (100) in its own task, and reads its `VmHWM` at the end.

use crate::args::Args;
use crate::pgwire::{PgConn, parse_lsn};
use crate::procfs::{self, CpuSampler, now_us};
use crate::wait::{Timeline, secs, stats, u64_of};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Samples `VmRSS` of one process on a timer until [`RssSampler::finish`].
pub struct RssSampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(i64, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32, interval: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), samples.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Some(kb) = procfs::status_kb(pid, "VmRSS") {
                    v.lock().unwrap().push((now_us(), kb));
                }
            }
        });
        RssSampler { pid, stop, samples, task }
    }

    /// Stops sampling; writes `t_s,rss_kb` rows (from `t0`) to `path` when given.
    pub async fn finish(self, t0: i64, path: Option<&str>) -> Result<Value, String> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let samples = self.samples.lock().unwrap().clone();
        if let Some(path) = path {
            let mut text = String::from("t_s,rss_kb\n");
            for (t, kb) in &samples {
                text.push_str(&format!("{},{kb}\n", secs(t - t0)));
            }
            std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))?;
        }
        Ok(json!({
            "pid": self.pid,
            "samples": samples.len(),
            "start_kb": samples.first().map(|s| s.1),
            "peak_sampled_kb": samples.iter().map(|s| s.1).max(),
            "end_kb": samples.last().map(|s| s.1),
            "vm_hwm_kb": procfs::status_kb(self.pid, "VmHWM"),
        }))
    }
}

enum Follow {
    Pipeline { api: String, alias: String },
    Subscription { conn: PgConn, name: String },
}

struct Poll {
    lsn: Option<u64>,
    row: String,
    extra: Value,
}

fn lsn_text(v: Option<u64>) -> String {
    v.map(|l| format!("{:X}/{:X}", l >> 32, l & 0xFFFF_FFFF)).unwrap_or_default()
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Follow {
    async fn poll(&mut self) -> Result<Poll, String> {
        match self {
            Follow::Pipeline { api, alias } => {
                let s = stats(api, alias).await?;
                let lsn = s["checkpoint"]["lsn"].as_str().and_then(parse_lsn);
                Ok(Poll {
                    lsn,
                    row: format!(
                        "{},{},{},{}",
                        lsn_text(lsn),
                        u64_of(&s["cdc_events"]),
                        u64_of(&s["output_total"]),
                        s["status"].as_str().unwrap_or("")
                    ),
                    extra: json!({"cdc_events": s["cdc_events"], "output_total": s["output_total"]}),
                })
            }
            Follow::Subscription { conn, name } => {
                let rows = conn
                    .query(&format!(
                        "SELECT received_lsn::text, latest_end_lsn::text, pid::text FROM pg_stat_subscription \
                         WHERE subname = {} AND relid IS NULL",
                        quote_literal(name)
                    ))
                    .await?;
                let row = rows.into_iter().next().unwrap_or_default();
                let col = |i: usize| row.get(i).cloned().flatten();
                let received = col(0).as_deref().and_then(parse_lsn);
                let latest = col(1).as_deref().and_then(parse_lsn);
                Ok(Poll {
                    lsn: latest,
                    row: format!(
                        "{},{},{}",
                        lsn_text(latest),
                        lsn_text(received),
                        col(2).unwrap_or_default()
                    ),
                    extra: json!({"received_lsn": lsn_text(received)}),
                })
            }
        }
    }
}

/// `wait-lsn`.
pub async fn lsn(args: &Args) -> Result<(), String> {
    let t0 = args.t0_us()?;
    let timeout_us = (args.num("timeout", 900.0f64)? * 1e6) as i64;
    let interval = Duration::from_millis(args.num("interval-ms", 20u64)?);
    let (mut follow, header) = if let Some(api) = args.get("api") {
        let alias = args.req("pipeline")?.to_string();
        (
            Follow::Pipeline { api: api.to_string(), alias },
            "t_s,checkpoint_lsn,cdc_events,output_total,status",
        )
    } else {
        let conn = PgConn::connect(args.req("socket")?, args.req_num("port")?).await?;
        let name = args.req("subscription")?.to_string();
        (Follow::Subscription { conn, name }, "t_s,latest_end_lsn,received_lsn,worker_pid")
    };
    // The check connection is opened before the clock matters.
    let mut check = match args.get("check-sql") {
        Some(sql) => Some((
            PgConn::connect(args.req("check-socket")?, args.req_num("check-port")?).await?,
            sql.to_string(),
            args.req("expected")?.to_string(),
        )),
        None => None,
    };
    let rss = match args.get("rss-pid") {
        Some(p) => Some(RssSampler::start(
            p.parse().map_err(|_| format!("--rss-pid: '{p}' is not a PID"))?,
            Duration::from_millis(args.num("rss-interval-ms", 100u64)?),
        )),
        None => None,
    };
    let cpu = CpuSampler::start(&args.pids()?);
    let load_before = procfs::loadavg();
    // `--lsn-file F`: the goal is written to F by the shell later (memory and CPU are sampled meanwhile).
    let goal_text = match args.get("lsn-file") {
        Some(path) => loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && text.ends_with('\n')
            {
                break text.trim().to_string();
            }
            if now_us() - t0 > timeout_us {
                return Err(format!("{path} did not appear within {} s", timeout_us / 1_000_000));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        },
        None => args.req("lsn")?.to_string(),
    };
    let goal_text = goal_text.as_str();
    let goal = parse_lsn(goal_text).ok_or_else(|| format!("--lsn: '{goal_text}' is not an LSN"))?;
    let mut timeline = Timeline::new(args, header);
    let first = follow.poll().await?;
    let mut polls = 0u64;
    let (reached_at, last, cpu_used) = loop {
        let p = follow.poll().await?;
        let now = now_us();
        polls += 1;
        let done = p.lsn.is_some_and(|l| l >= goal);
        timeline.push(now, done, || format!("{},{}", secs(now - t0), p.row));
        if done {
            break (now, p, cpu.finish());
        }
        if now - t0 > timeout_us {
            timeline.write()?;
            return Err(format!(
                "{} did not reach LSN {goal_text} within {} s; last poll: {}",
                header.split(',').nth(1).unwrap_or("position"),
                timeout_us / 1_000_000,
                p.row
            ));
        }
        tokio::time::sleep(interval).await;
    };
    timeline.write()?;
    let mut out = json!({
        "goal_lsn": goal_text,
        "lsn_reached_s": secs(reached_at - t0),
        "lsn_reached_at_us": reached_at,
        "last_poll": last.row,
        "poll_interval_ms": interval.as_millis() as u64,
        "polls": polls,
        "first_poll": first.extra,
        "last_poll_detail": last.extra,
        "cpu": cpu_used,
        "load_before": load_before,
    });
    let mut elapsed = reached_at;
    if let Some((mut conn, sql, expected)) = check.take() {
        let mut queries = 0u64;
        let mut last_value;
        loop {
            let started = now_us();
            last_value = conn.value(&sql).await?.unwrap_or_default();
            queries += 1;
            let took = now_us() - started;
            if last_value == expected {
                elapsed = elapsed.max(started);
                out["check"] = json!({
                    "equal": true, "queries": queries, "matched_query_started_s": secs(started - t0),
                    "matched_query_took_s": secs(took), "value": last_value,
                });
                break;
            }
            if started - t0 > timeout_us {
                out["check"] =
                    json!({"equal": false, "queries": queries, "value": last_value, "expected": expected});
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    out["elapsed_s"] = json!(secs(elapsed - t0));
    out["load_after"] = procfs::loadavg();
    if let Some(r) = rss {
        out["rss"] = r.finish(t0, args.get("rss-timeline")).await?;
    }
    let equal = out["check"]["equal"] != false;
    println!("{out}");
    if equal {
        Ok(())
    } else {
        Err(format!("the check query never returned the expected value: {}", out["check"]))
    }
}

/// `wait-subscription-copy`.
pub async fn subscription_copy(args: &Args) -> Result<(), String> {
    let name = args.req("subscription")?;
    let t0 = args.t0_us()?;
    let timeout_us = (args.num("timeout", 1800.0f64)? * 1e6) as i64;
    let interval = Duration::from_millis(args.num("interval-ms", 20u64)?);
    let mut conn = PgConn::connect(args.req("socket")?, args.req_num("port")?).await?;
    let cpu = CpuSampler::start(&args.pids()?);
    let load_before = procfs::loadavg();
    let mut timeline = Timeline::new(args, "t_s,states");
    let sql = format!(
        "SELECT coalesce(string_agg(r.srsubstate::text, '' ORDER BY r.srrelid), '') FROM pg_subscription_rel r \
         JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = {}",
        quote_literal(name)
    );
    let (mut copied, mut synced) = (None, None);
    let mut polls = 0u64;
    loop {
        let states = conn.value(&sql).await?.unwrap_or_default();
        let now = now_us();
        polls += 1;
        let all = |ok: &str| !states.is_empty() && states.chars().all(|c| ok.contains(c));
        if copied.is_none() && all("fsr") {
            copied = Some(now);
        }
        if synced.is_none() && all("sr") {
            synced = Some(now);
        }
        let done = all("r");
        timeline.push(now, done, || format!("{},{states}", secs(now - t0)));
        if done {
            timeline.write()?;
            let out = json!({
                "elapsed_s": secs(now - t0),
                "copy_finished_s": copied.map(|c| secs(c - t0)),
                "synchronised_s": synced.map(|c| secs(c - t0)),
                "poll_interval_ms": interval.as_millis() as u64,
                "polls": polls,
                "cpu": cpu.finish(),
                "load_before": load_before,
                "load_after": procfs::loadavg(),
            });
            println!("{out}");
            return Ok(());
        }
        if now - t0 > timeout_us {
            timeline.write()?;
            return Err(format!(
                "subscription {name}: tables not ready within {} s (states '{states}')",
                timeout_us / 1_000_000
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips() {
        assert_eq!(lsn_text(parse_lsn("16/B374D848")), "16/B374D848");
        assert_eq!(lsn_text(Some(0x16B3748)), "0/16B3748");
        assert_eq!(lsn_text(None), "");
    }
}
