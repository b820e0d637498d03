//! Catch-up timers: poll until a pipeline's checkpoint, a replica's executed position or a pipeline's
//! initial load reaches a goal, and report when, with CPU use of the processes involved.
//!
//! Times are measured from `--t0` (epoch seconds, as `date +%s.%N` prints them just before the shell starts
//! the pipeline or the replica) to the arrival of the first poll answer that shows the goal reached, so a
//! figure is late by at most one poll interval plus one round trip, never early.

use crate::args::Args;
use crate::http;
use crate::procfs::{self, CpuSampler, now_us, round3};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use std::time::Duration;

/// Whether binlog coordinate `(file, pos)` is at or after `(goal_file, goal_pos)`. Binlog file names of one
/// server share a prefix and differ in a fixed-width sequence number, so they compare as strings.
pub fn reached(file: &str, pos: u64, goal_file: &str, goal_pos: u64) -> bool {
    (file, pos) >= (goal_file, goal_pos)
}

pub(crate) struct Timeline {
    path: Option<String>,
    header: &'static str,
    rows: Vec<String>,
    last_us: i64,
}

impl Timeline {
    pub(crate) fn new(args: &Args, header: &'static str) -> Timeline {
        Timeline { path: args.get("timeline").map(str::to_string), header, rows: Vec::new(), last_us: 0 }
    }

    /// Keeps at most one row per 100 ms (and always the last one, with `force`).
    pub(crate) fn push(&mut self, now: i64, force: bool, row: impl FnOnce() -> String) {
        if force || now - self.last_us >= 100_000 {
            self.rows.push(row());
            self.last_us = now;
        }
    }

    pub(crate) fn write(&self) -> Result<(), String> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut text = format!("{}\n", self.header);
        for r in &self.rows {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))
    }
}

pub(crate) fn secs(us: i64) -> f64 {
    round3(us as f64 / 1e6)
}

pub(crate) async fn stats(api: &str, alias: &str) -> Result<Value, String> {
    let (status, body) = http::get(api, &format!("/api/v1/pipelines/{alias}/stats")).await?;
    if status != 200 {
        return Err(format!("GET stats of pipeline {alias}: HTTP {status}: {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("stats are not JSON ({e}): {body}"))?;
    if v["status"] == "failed" {
        return Err(format!("pipeline {alias} failed: {}", v["last_error"]));
    }
    Ok(v)
}

pub(crate) fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `wait-pipeline`: until the pipeline's initial load is done and its checkpoint is at `--file`/`--pos` or
/// later.
pub async fn pipeline(args: &Args) -> Result<(), String> {
    let api = args.req("api")?;
    let alias = args.req("pipeline")?;
    let goal_file = args.req("file")?;
    let goal_pos: u64 = args.req_num("pos")?;
    let t0 = args.t0_us()?;
    let timeout_us = (args.num("timeout", 900.0f64)? * 1e6) as i64;
    let interval = Duration::from_millis(args.num("interval-ms", 20u64)?);
    let cdc_only = args.flag("cdc-only");
    let cpu = CpuSampler::start(&args.pids()?);
    let load_before = procfs::loadavg();
    let mut timeline =
        Timeline::new(args, "t_s,cdc_events,output_total,checkpoint_file,checkpoint_pos,status");
    let first = stats(api, alias).await?;
    let mut polls = 0u64;
    loop {
        let s = stats(api, alias).await?;
        let now = now_us();
        polls += 1;
        let file = s["checkpoint"]["file"].as_str().unwrap_or("").to_string();
        let pos = u64_of(&s["checkpoint"]["pos"]);
        // The checkpoint holds the stream's start position from the beginning of an initial load on, so the
        // load must be done as well (its progress list is empty for a moment after the start, and always for
        // a changes-only pipeline: `--cdc-only`).
        let loaded = cdc_only
            || s["snapshot"].as_array().is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["done"] == true));
        let done = loaded && reached(&file, pos, goal_file, goal_pos);
        timeline.push(now, done, || {
            format!(
                "{},{},{},{file},{pos},{}",
                secs(now - t0),
                u64_of(&s["cdc_events"]),
                u64_of(&s["output_total"]),
                s["status"].as_str().unwrap_or("")
            )
        });
        if done {
            timeline.write()?;
            let out = json!({
                "elapsed_s": secs(now - t0),
                "reached_at_us": now,
                "poll_interval_ms": interval.as_millis() as u64,
                "polls": polls,
                "checkpoint": s["checkpoint"],
                "cdc_events": u64_of(&s["cdc_events"]) - u64_of(&first["cdc_events"]),
                "output_total": u64_of(&s["output_total"]) - u64_of(&first["output_total"]),
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
                "pipeline {alias} did not reach {goal_file}:{goal_pos} within {} s; last checkpoint {file}:{pos}, \
                 stats {s}",
                timeout_us / 1_000_000
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

/// A connection to a private server as root.
pub async fn connect(port: u16, password: &str) -> Result<mysql_async::Conn, String> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .pass(Some(password))
        .prefer_socket(false)
        .tcp_nodelay(true);
    mysql_async::Conn::new(opts).await.map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))
}

struct SlaveStatus {
    file: String,
    pos: u64,
    sql_running: String,
    io_running: String,
    error: String,
}

async fn slave_status(conn: &mut mysql_async::Conn) -> Result<SlaveStatus, String> {
    let rows: Vec<mysql_async::Row> =
        conn.query("SHOW SLAVE STATUS").await.map_err(|e| format!("SHOW SLAVE STATUS: {e}"))?;
    let row = rows.into_iter().next().ok_or("SHOW SLAVE STATUS is empty: the server is not a replica")?;
    let text = |name: &str| -> String {
        row.get_opt::<Option<String>, _>(name).and_then(|r| r.ok()).flatten().unwrap_or_default()
    };
    let error = [text("Last_SQL_Error"), text("Last_IO_Error")]
        .into_iter()
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>();
    Ok(SlaveStatus {
        file: text("Relay_Master_Log_File"),
        pos: text("Exec_Master_Log_Pos").parse().unwrap_or(0),
        sql_running: text("Slave_SQL_Running"),
        io_running: text("Slave_IO_Running"),
        error: error.join("; "),
    })
}

/// `wait-replica`: until a native replica has executed up to `--file`/`--pos`.
pub async fn replica(args: &Args) -> Result<(), String> {
    let port: u16 = args.req_num("port")?;
    let password = args.req("password")?;
    let goal_file = args.req("file")?;
    let goal_pos: u64 = args.req_num("pos")?;
    let t0 = args.t0_us()?;
    let timeout_us = (args.num("timeout", 900.0f64)? * 1e6) as i64;
    let interval = Duration::from_millis(args.num("interval-ms", 20u64)?);
    let cpu = CpuSampler::start(&args.pids()?);
    let load_before = procfs::loadavg();
    let mut timeline = Timeline::new(args, "t_s,exec_file,exec_pos,io_running,sql_running");
    let mut conn = connect(port, password).await?;
    let mut polls = 0u64;
    loop {
        let s = slave_status(&mut conn).await?;
        let now = now_us();
        polls += 1;
        let done = reached(&s.file, s.pos, goal_file, goal_pos);
        timeline.push(now, done, || {
            format!("{},{},{},{},{}", secs(now - t0), s.file, s.pos, s.io_running, s.sql_running)
        });
        if done {
            timeline.write()?;
            let out = json!({
                "elapsed_s": secs(now - t0),
                "reached_at_us": now,
                "poll_interval_ms": interval.as_millis() as u64,
                "polls": polls,
                "exec": {"file": s.file, "pos": s.pos},
                "cpu": cpu.finish(),
                "load_before": load_before,
                "load_after": procfs::loadavg(),
            });
            println!("{out}");
            return Ok(());
        }
        if !s.error.is_empty() || (s.sql_running == "No" && now - t0 > 2_000_000) {
            timeline.write()?;
            return Err(format!(
                "replica on port {port} stopped at {}:{} (IO {}, SQL {}): {}",
                s.file, s.pos, s.io_running, s.sql_running, s.error
            ));
        }
        if now - t0 > timeout_us {
            timeline.write()?;
            return Err(format!(
                "replica on port {port} did not reach {goal_file}:{goal_pos} within {} s; it is at {}:{}",
                timeout_us / 1_000_000,
                s.file,
                s.pos
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

/// `wait-snapshot`: until the pipeline's initial load is done, sampling the resident memory of `--pid`
/// (the `idaas server`) at every poll.
pub async fn snapshot(args: &Args) -> Result<(), String> {
    let api = args.req("api")?;
    let alias = args.req("pipeline")?;
    let pid: u32 = args.req_num("pid")?;
    let t0 = args.t0_us()?;
    let timeout_us = (args.num("timeout", 1800.0f64)? * 1e6) as i64;
    let interval = Duration::from_millis(args.num("interval-ms", 100u64)?);
    let cpu = CpuSampler::start(&args.pids()?);
    let load_before = procfs::loadavg();
    let mut timeline = Timeline::new(args, "t_s,rss_kb,rows_copied,status");
    let rss_start = procfs::status_kb(pid, "VmRSS");
    let mut peak_rss = rss_start.unwrap_or(0);
    let mut samples = 0u64;
    loop {
        let rss = procfs::status_kb(pid, "VmRSS").ok_or_else(|| format!("process {pid} is gone"))?;
        peak_rss = peak_rss.max(rss);
        samples += 1;
        // The pipeline may not be registered yet when polling starts right after `pipeline create`.
        let (code, body) = http::get(api, &format!("/api/v1/pipelines/{alias}/stats")).await?;
        let now = now_us();
        let s: Value =
            if code == 200 { serde_json::from_str(&body).unwrap_or(Value::Null) } else { Value::Null };
        if s["status"] == "failed" {
            return Err(format!("pipeline {alias} failed: {}", s["last_error"]));
        }
        let table = &s["snapshot"][0];
        let done = table["done"] == true;
        timeline.push(now, done, || {
            format!(
                "{},{rss},{},{}",
                secs(now - t0),
                u64_of(&table["rows_copied"]),
                s["status"].as_str().unwrap_or("")
            )
        });
        if done {
            let hwm = procfs::status_kb(pid, "VmHWM");
            timeline.write()?;
            let out = json!({
                "elapsed_s": secs(now - t0),
                "reached_at_us": now,
                "poll_interval_ms": interval.as_millis() as u64,
                "rows_copied": u64_of(&table["rows_copied"]),
                "rss_start_kb": rss_start,
                "rss_peak_sampled_kb": peak_rss,
                "rss_samples": samples,
                "vm_hwm_kb": hwm,
                "rss_end_kb": procfs::status_kb(pid, "VmRSS"),
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
                "pipeline {alias}: initial load not done within {} s: {s}",
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
    fn positions_compare_across_files() {
        assert!(reached("mariadb-bin.000001", 500, "mariadb-bin.000001", 500));
        assert!(!reached("mariadb-bin.000001", 499, "mariadb-bin.000001", 500));
        assert!(reached("mariadb-bin.000002", 4, "mariadb-bin.000001", 500));
        assert!(!reached("", 0, "mariadb-bin.000001", 4));
    }
}
