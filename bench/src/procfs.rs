//! Wall clock, and CPU time and memory of processes from `/proc`.

use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (`CLOCK_REALTIME`, the clock MariaDB's `NOW(6)` reads).
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`, 100 on Linux/x86-64).
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `(ppid, utime + stime, cutime + cstime)` of a process, in clock ticks.
fn stat_ticks(pid: u32) -> Option<(u32, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // ppid is field 4 of the whole line; utime, stime, cutime and cstime are fields 14 to 17 (1 and 12 to 15
    // after "pid (comm) ").
    let n = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((fields.get(1)?.parse().ok()?, n(11)? + n(12)?, n(13)? + n(14)?))
}

/// User + system CPU seconds a process used so far: all its threads, the children it has reaped and its
/// live children (a PostgreSQL postmaster's backends and workers are its children; MariaDB, `idaas` and this
/// process have none).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let (_, own, reaped) = stat_ticks(pid)?;
    let mut total = own + reaped;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((_, own, reaped)) = stat_ticks(child).filter(|s| s.0 == pid) {
                total += own + reaped;
            }
        }
    }
    Some(total / clk_tck())
}

/// A `kB` field of `/proc/PID/status`, e.g. `VmRSS` or `VmHWM`.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Busy CPU seconds of the whole machine, all cores (`/proc/stat`: user, nice, system, irq, softirq, steal).
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| v.get(*i)).sum::<f64>();
    Some(busy / clk_tck())
}

/// CPU seconds of named processes, of this process and of the whole machine between
/// [`CpuSampler::start`] and [`CpuSampler::finish`].
pub struct CpuSampler {
    start_us: i64,
    start: Vec<(String, u32, Option<f64>)>,
    machine: Option<f64>,
}

impl CpuSampler {
    pub fn start(pids: &[(String, u32)]) -> CpuSampler {
        let mut all: Vec<(String, u32)> = pids.to_vec();
        all.push(("bench".into(), std::process::id()));
        CpuSampler {
            start_us: now_us(),
            start: all.iter().map(|(n, p)| (n.clone(), *p, cpu_seconds(*p))).collect(),
            machine: machine_busy_seconds(),
        }
    }

    /// `{name: {"cpu_s": x, "cpu_pct": y}}`, where 100 % is one core busy for the whole interval, for every
    /// named process, `bench` (this process), `machine` (every process) and `other` (the machine minus the
    /// named processes and this one: other work on the machine, and idle servers of the benchmark).
    pub fn finish(&self) -> Value {
        let wall = (now_us() - self.start_us) as f64 / 1e6;
        let pct = |u: f64| round1(100.0 * u / wall.max(1e-9));
        let mut out = serde_json::Map::new();
        let mut tracked = 0.0;
        for (name, pid, before) in &self.start {
            let used = match (before, cpu_seconds(*pid)) {
                (Some(b), Some(a)) => Some(a - b),
                _ => None,
            };
            tracked += used.unwrap_or(0.0);
            out.insert(name.clone(), json!({"cpu_s": used.map(round3), "cpu_pct": used.map(pct)}));
        }
        if let (Some(b), Some(a)) = (self.machine, machine_busy_seconds()) {
            let used = a - b;
            out.insert("machine".into(), json!({"cpu_s": round3(used), "cpu_pct": pct(used)}));
            let other = (used - tracked).max(0.0);
            out.insert("other".into(), json!({"cpu_s": round3(other), "cpu_pct": pct(other)}));
        }
        Value::Object(out)
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text.split_whitespace().take(3).filter_map(|s| s.parse().ok()).collect();
    json!(v)
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(status_kb(me, "VmRSS").unwrap() > 0);
        assert!(status_kb(me, "VmHWM").unwrap() >= status_kb(me, "VmRSS").unwrap() / 2);
        assert_eq!(status_kb(me, "NoSuchField"), None);
        assert!(machine_busy_seconds().unwrap() > 0.0);
    }
}
