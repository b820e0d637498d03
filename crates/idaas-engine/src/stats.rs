//! Live figures of a running pipeline.

use crate::api::TableProgress;
use idaas_core::value::timestamp_to_utc;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The window over which throughput is averaged.
const THROUGHPUT_WINDOW_SECS: f64 = 5.0;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    let dt = timestamp_to_utc(ms * 1000);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.date.year,
        dt.date.month,
        dt.date.day,
        dt.hour,
        dt.minute,
        dt.second,
        dt.micros / 1000
    )
}

/// Now, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    rfc3339_ms(now_ms())
}

/// Counters a pipeline task updates and the API reads.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    status: String,
    input_total: u64,
    output_total: u64,
    snapshot_rows: u64,
    cdc_events: u64,
    last_input_ms: Option<i64>,
    last_output_ms: Option<i64>,
    lag_ms: Option<i64>,
    samples: VecDeque<(Instant, u64)>,
    snapshot: Vec<TableProgress>,
    checkpoint: Option<serde_json::Value>,
    last_error: Option<String>,
}

/// A copy of the figures.
pub struct Snapshot {
    pub(crate) status: String,
    pub(crate) input_total: u64,
    pub(crate) output_total: u64,
    pub(crate) throughput_eps: f64,
    pub(crate) last_input_ms: Option<i64>,
    pub(crate) last_output_ms: Option<i64>,
    pub(crate) lag_ms: Option<i64>,
    pub(crate) snapshot_rows: u64,
    pub(crate) cdc_events: u64,
    pub(crate) snapshot: Vec<TableProgress>,
    pub(crate) checkpoint: Option<serde_json::Value>,
    pub(crate) last_error: Option<String>,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the status.
    pub fn set_status(&self, s: &str) {
        self.lock().status = s.to_string();
    }

    /// The status.
    pub fn status(&self) -> String {
        self.lock().status.clone()
    }

    /// Records or clears the current error.
    pub fn set_error(&self, e: Option<String>) {
        self.lock().last_error = e;
    }

    /// Events read from the source.
    pub fn input(&self, n: u64, snapshot: bool) {
        let mut i = self.lock();
        i.input_total += n;
        if snapshot {
            i.snapshot_rows += n;
        } else {
            i.cdc_events += n;
        }
        i.last_input_ms = Some(now_ms());
    }

    /// Events written; `source_commit_ms` is the commit time of the last one, when known.
    pub fn output(&self, n: u64, source_commit_ms: Option<i64>) {
        let now = now_ms();
        let mut i = self.lock();
        i.output_total += n;
        i.last_output_ms = Some(now);
        if let Some(c) = source_commit_ms {
            i.lag_ms = Some((now - c).max(0));
        }
        let total = i.output_total;
        let t = Instant::now();
        i.samples.push_back((t, total));
        while i.samples.len() > 2
            && i.samples
                .front()
                .is_some_and(|(s, _)| t.duration_since(*s).as_secs_f64() > THROUGHPUT_WINDOW_SECS)
        {
            i.samples.pop_front();
        }
    }

    /// The stream is idle and everything read is written.
    pub fn caught_up(&self) {
        self.lock().lag_ms = Some(0);
    }

    /// Sets a table's snapshot progress.
    pub fn set_progress(&self, p: TableProgress) {
        let mut i = self.lock();
        match i.snapshot.iter_mut().find(|x| x.table == p.table) {
            Some(x) => *x = p,
            None => i.snapshot.push(p),
        }
    }

    /// Records the last checkpoint's position.
    pub fn set_checkpoint(&self, c: serde_json::Value) {
        self.lock().checkpoint = Some(c);
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> Snapshot {
        let i = self.lock();
        let throughput_eps = match (i.samples.front(), i.samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) => {
                let since_last = t1.elapsed().as_secs_f64();
                let span = t1.duration_since(*t0).as_secs_f64();
                if since_last > THROUGHPUT_WINDOW_SECS || span <= 0.0 {
                    0.0
                } else {
                    (n1 - n0) as f64 / (span + since_last).max(1.0)
                }
            }
            _ => 0.0,
        };
        Snapshot {
            status: i.status.clone(),
            input_total: i.input_total,
            output_total: i.output_total,
            throughput_eps,
            last_input_ms: i.last_input_ms,
            last_output_ms: i.last_output_ms,
            lag_ms: i.lag_ms,
            snapshot_rows: i.snapshot_rows,
            cdc_events: i.cdc_events,
            snapshot: i.snapshot.clone(),
            checkpoint: i.checkpoint.clone(),
            last_error: i.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_milliseconds() {
        assert_eq!(rfc3339_ms(1_643_727_603_203), "2022-02-01T15:00:03.203Z");
    }

    #[test]
    fn counters_add_up() {
        let s = Stats::default();
        s.input(10, true);
        s.input(5, false);
        s.output(15, Some(now_ms() - 100));
        let snap = s.snapshot();
        assert_eq!(
            (snap.input_total, snap.output_total, snap.snapshot_rows, snap.cdc_events),
            (15, 15, 10, 5)
        );
        assert!(snap.lag_ms.unwrap() >= 100);
    }
}
