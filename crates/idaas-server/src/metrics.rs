//! # Metrics
//!
//! The names, types and meaning of every metric `GET /metrics` serves, and their rendering in the
//! Prometheus text format (version 0.0.4). `METRICS.md` beside `Cargo.toml` lists the same metrics; a test
//! keeps the two in step.

use idaas_engine::PipelineStats;
use std::fmt::Write as _;

/// Events read from the source (snapshot rows and changes), per pipeline. Counter.
pub const PIPELINE_INPUT_EVENTS_TOTAL: &str = "idaas_pipeline_input_events_total";
/// Events written to the target, per pipeline. Counter.
pub const PIPELINE_OUTPUT_EVENTS_TOTAL: &str = "idaas_pipeline_output_events_total";
/// Target commit time minus source commit time of the last written change, per pipeline. Gauge.
pub const PIPELINE_LAG_MILLISECONDS: &str = "idaas_pipeline_lag_milliseconds";
/// 1 while a pipeline is active (starting, loading its snapshot or streaming changes), 0 otherwise. Gauge.
pub const PIPELINE_RUNNING: &str = "idaas_pipeline_running";

/// The label that names the pipeline of a sample.
pub const LABEL_PIPELINE: &str = "pipeline";

/// The `Content-Type` of the metrics answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Pipeline statuses counted as running by [`PIPELINE_RUNNING`].
pub const RUNNING_STATUSES: &[&str] = &["starting", "snapshot", "running"];

/// One metric family.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// The sample of one pipeline; `None` leaves the pipeline out of this family.
    value: fn(&PipelineStats) -> Option<i128>,
}

const FAMILIES: &[Family] = &[
    Family {
        name: PIPELINE_INPUT_EVENTS_TOTAL,
        kind: "counter",
        help: "Events read from the source (snapshot rows and changes).",
        value: |s| Some(s.input_total.into()),
    },
    Family {
        name: PIPELINE_OUTPUT_EVENTS_TOTAL,
        kind: "counter",
        help: "Events written to the target.",
        value: |s| Some(s.output_total.into()),
    },
    Family {
        name: PIPELINE_LAG_MILLISECONDS,
        kind: "gauge",
        help: "Target commit time minus source commit time of the last written change, in milliseconds.",
        value: |s| s.lag_ms.map(i128::from),
    },
    Family {
        name: PIPELINE_RUNNING,
        kind: "gauge",
        help: "1 while the pipeline is starting, loading its snapshot or streaming changes; 0 otherwise.",
        value: |s| Some(RUNNING_STATUSES.contains(&s.status.as_str()).into()),
    },
];

/// Renders the metrics of `pipelines` in the Prometheus text format, one family after the other.
pub fn render(pipelines: &[PipelineStats]) -> String {
    let mut out = String::new();
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for stats in pipelines {
            if let Some(value) = (family.value)(stats) {
                let label = escape_label(&stats.alias);
                let _ = writeln!(out, "{}{{{LABEL_PIPELINE}=\"{label}\"}} {value}", family.name);
            }
        }
    }
    out
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(alias: &str, status: &str, lag_ms: Option<i64>) -> PipelineStats {
        PipelineStats {
            alias: alias.to_owned(),
            status: status.to_owned(),
            input_total: 2400,
            output_total: 2300,
            throughput_eps: 500.0,
            last_input: None,
            last_output: None,
            lag_ms,
            snapshot_rows: 0,
            cdc_events: 0,
            snapshot: Vec::new(),
            checkpoint: None,
            last_error: None,
        }
    }

    #[test]
    fn renders_each_family_once_with_a_sample_per_pipeline() {
        let text = render(&[stats("p1", "running", Some(12)), stats("p\"2", "stopped", None)]);
        let expected = "\
# HELP idaas_pipeline_input_events_total Events read from the source (snapshot rows and changes).
# TYPE idaas_pipeline_input_events_total counter
idaas_pipeline_input_events_total{pipeline=\"p1\"} 2400
idaas_pipeline_input_events_total{pipeline=\"p\\\"2\"} 2400
# HELP idaas_pipeline_output_events_total Events written to the target.
# TYPE idaas_pipeline_output_events_total counter
idaas_pipeline_output_events_total{pipeline=\"p1\"} 2300
idaas_pipeline_output_events_total{pipeline=\"p\\\"2\"} 2300
# HELP idaas_pipeline_lag_milliseconds Target commit time minus source commit time of the last written change, in milliseconds.
# TYPE idaas_pipeline_lag_milliseconds gauge
idaas_pipeline_lag_milliseconds{pipeline=\"p1\"} 12
# HELP idaas_pipeline_running 1 while the pipeline is starting, loading its snapshot or streaming changes; 0 otherwise.
# TYPE idaas_pipeline_running gauge
idaas_pipeline_running{pipeline=\"p1\"} 1
idaas_pipeline_running{pipeline=\"p\\\"2\"} 0
";
        assert_eq!(text, expected);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn metrics_md_lists_every_family() {
        let doc = include_str!("../METRICS.md");
        for family in FAMILIES {
            let row = doc
                .lines()
                .find(|line| line.starts_with(&format!("| `{}`", family.name)))
                .unwrap_or_else(|| panic!("METRICS.md has no row for {}", family.name));
            assert!(row.contains(family.kind), "METRICS.md gives {} another type", family.name);
            assert!(
                row.contains(&format!("`{LABEL_PIPELINE}`")),
                "METRICS.md misses the label of {}",
                family.name
            );
        }
        let documented = doc.lines().filter(|line| line.starts_with("| `idaas_")).count();
        assert_eq!(documented, FAMILIES.len(), "METRICS.md lists a metric the server does not serve");
    }
}
