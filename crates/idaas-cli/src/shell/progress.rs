//! `pipeline.wait()`: follows a pipeline until its initial load is done, with a progress bar on a terminal.

use super::api::Api;
use super::js::Io;
use idaas_engine::{PipelineInfo, PipelineStats, SyncMode};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the stats are read.
const POLL: Duration = Duration::from_millis(200);
/// How long a running pipeline may show no snapshot progress before it counts as past its initial load (a
/// pipeline resumed by a restarted server has no snapshot figures).
const NO_SNAPSHOT_GRACE: Duration = Duration::from_millis(1500);

/// Where a pipeline is, for [`wait`].
#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Loading,
    Done,
    Failed(String),
}

fn phase(mode: SyncMode, s: &PipelineStats, quiet_for: Duration) -> Phase {
    match s.status.as_str() {
        "failed" => {
            return Phase::Failed(format!(
                "pipeline {} failed: {}",
                s.alias,
                s.last_error.as_deref().unwrap_or("see its stats")
            ));
        }
        "stopped" | "created" => {
            return Phase::Failed(format!(
                "pipeline {} is {}; start it first (start {})",
                s.alias, s.status, s.alias
            ));
        }
        "completed" => return Phase::Done,
        _ => {}
    }
    let running = s.status == "running";
    if mode == SyncMode::Cdc {
        return if running { Phase::Done } else { Phase::Loading };
    }
    if !s.snapshot.is_empty() {
        return if s.snapshot.iter().all(|t| t.done) && s.status != "snapshot" {
            Phase::Done
        } else {
            Phase::Loading
        };
    }
    if running && s.checkpoint.is_some() && quiet_for >= NO_SNAPSHOT_GRACE {
        Phase::Done
    } else {
        Phase::Loading
    }
}

fn error(kind: &str, message: &str) -> String {
    json!({"error": {"kind": kind, "message": message}}).to_string()
}

/// Waits until pipeline `alias` has finished its initial load (or, for a CDC-only pipeline, runs), then
/// answers `{"ok": stats}`; `{"error": ...}` when it fails, stops, times out or Ctrl-C is pressed.
pub fn wait(
    api: &dyn Api,
    io: &Io,
    alias: &str,
    timeout: Option<Duration>,
    interrupt: &AtomicBool,
) -> String {
    let segments = |tail: Option<&str>| {
        let mut s = vec!["pipelines".to_owned(), alias.to_owned()];
        s.extend(tail.map(str::to_owned));
        s
    };
    let info: PipelineInfo = match api.call("GET", &segments(None), None, &[]) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(info) => info,
            Err(e) => return error("internal", &format!("cannot read the server's answer: {e}")),
        },
        Err(e) => return error(&kind_name(&e), &e.to_string()),
    };
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
    if io.style.progress {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} rows, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut quiet_since = Instant::now();
    let outcome = loop {
        if interrupt.load(Ordering::Relaxed) {
            break error("invalid_input", "interrupted");
        }
        let text = match api.call("GET", &segments(Some("stats")), None, &[]) {
            Ok(text) => text,
            Err(e) => break error(&kind_name(&e), &e.to_string()),
        };
        let stats: PipelineStats = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => break error("internal", &format!("cannot read the server's answer: {e}")),
        };
        if let Some(t) = stats.snapshot.first() {
            quiet_since = Instant::now();
            bar.set_length(t.rows_estimated.max(t.rows_copied));
            bar.set_position(t.rows_copied);
            bar.set_message(format!("{alias}: {}", t.table));
        } else {
            bar.set_message(format!("{alias}: {}", stats.status));
        }
        match phase(info.spec.mode, &stats, quiet_since.elapsed()) {
            Phase::Done => break format!(r#"{{"ok":{text}}}"#),
            Phase::Failed(message) => break error("invalid_input", &message),
            Phase::Loading => {}
        }
        if let Some(limit) = timeout
            && start.elapsed() >= limit
        {
            let progress = stats
                .snapshot
                .first()
                .map(|t| format!(" ({} of about {} rows copied)", t.rows_copied, t.rows_estimated))
                .unwrap_or_default();
            break error(
                "invalid_input",
                &format!(
                    "pipeline {alias} is still in its initial load after {} s{progress}; wait again or watch \
                     {alias}.stats()",
                    limit.as_secs()
                ),
            );
        }
        std::thread::sleep(POLL);
    };
    bar.finish_and_clear();
    outcome
}

fn kind_name(e: &crate::client::ClientError) -> String {
    serde_json::to_value(e.kind()).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use idaas_core::TableRef;
    use idaas_engine::TableProgress;

    fn stats(status: &str, snapshot: Vec<bool>, checkpoint: bool) -> PipelineStats {
        PipelineStats {
            alias: "p".into(),
            status: status.into(),
            input_total: 0,
            output_total: 0,
            throughput_eps: 0.0,
            last_input: None,
            last_output: None,
            lag_ms: None,
            snapshot_rows: 0,
            cdc_events: 0,
            snapshot: snapshot
                .into_iter()
                .map(|done| TableProgress {
                    table: TableRef::new("crm", "t"),
                    rows_copied: 1,
                    rows_estimated: 2,
                    done,
                })
                .collect(),
            checkpoint: checkpoint.then(|| json!({"file": "b.1", "pos": 4})),
            last_error: Some("boom".into()),
        }
    }

    #[test]
    fn the_initial_load_is_done_when_every_table_is() {
        let m = SyncMode::InitialAndCdc;
        let z = Duration::ZERO;
        assert_eq!(phase(m, &stats("running", vec![], false), z), Phase::Loading);
        assert_eq!(phase(m, &stats("running", vec![], true), z), Phase::Loading);
        assert_eq!(phase(m, &stats("running", vec![], true), NO_SNAPSHOT_GRACE), Phase::Done);
        assert_eq!(phase(m, &stats("running", vec![false], true), NO_SNAPSHOT_GRACE), Phase::Loading);
        assert_eq!(phase(m, &stats("running", vec![true], true), z), Phase::Done);
        assert_eq!(phase(SyncMode::Initial, &stats("completed", vec![true], true), z), Phase::Done);
        assert_eq!(phase(SyncMode::Cdc, &stats("running", vec![], false), z), Phase::Done);
        assert_eq!(phase(SyncMode::Cdc, &stats("starting", vec![], false), z), Phase::Loading);
        assert_eq!(
            phase(m, &stats("failed", vec![], false), z),
            Phase::Failed("pipeline p failed: boom".into())
        );
        assert!(matches!(phase(m, &stats("stopped", vec![true], true), z), Phase::Failed(_)));
    }
}
