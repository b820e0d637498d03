//! `idaas pipeline ...`: create, start, stop, watch and delete pipelines.

use super::{Context, serde_name};
use crate::output::{Table, fields, or_dash, rate, timestamp};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use idaas_engine::{DdlPolicy, PipelineInfo, PipelineSpec, PipelineStats, SyncMode, TableSpec};
use serde::de::DeserializeOwned;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// How often `pipeline stats --follow` refreshes.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Pipeline subcommands.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Create a pipeline from a source table to a target table.
    Create(CreateArgs),
    /// Start or resume a pipeline from its checkpoint.
    Start {
        /// Pipeline alias.
        alias: String,
    },
    /// Stop a pipeline after its current batch, keeping its checkpoint.
    Stop {
        /// Pipeline alias.
        alias: String,
    },
    /// Show a pipeline's live figures.
    Stats {
        /// Pipeline alias.
        alias: String,
        /// Refresh every second until Ctrl-C.
        #[arg(long)]
        follow: bool,
    },
    /// List the pipelines.
    List,
    /// Show one pipeline.
    Get {
        /// Pipeline alias.
        alias: String,
    },
    /// Stop and delete a pipeline and its checkpoint; the target table stays.
    Delete {
        /// Pipeline alias.
        alias: String,
    },
}

/// Arguments of `pipeline create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Unique name of the pipeline.
    #[arg(long)]
    alias: String,
    /// Source table: CONNECTION.TABLE, or CONNECTION.DATABASE.TABLE for a table outside the connection's
    /// default database.
    #[arg(long, value_name = "CONN.TABLE", value_parser = parse_table_arg)]
    source: TableSpec,
    /// Target table, as for --source.
    #[arg(long, value_name = "CONN.TABLE", value_parser = parse_table_arg)]
    target: TableSpec,
    /// Create the target table when it is missing.
    #[arg(long)]
    auto_create: bool,
    /// Initial load then change data capture, initial load only, or changes only.
    #[arg(
        long,
        default_value = "initial_and_cdc",
        value_parser = PossibleValuesParser::new(["initial_and_cdc", "initial", "cdc"])
            .try_map(from_name::<SyncMode>)
    )]
    mode: SyncMode,
    /// What a source schema change does: apply it to the target, ignore it, or stop the pipeline.
    #[arg(
        long,
        default_value = "apply",
        value_parser = PossibleValuesParser::new(["apply", "ignore", "stop"]).try_map(from_name::<DdlPolicy>)
    )]
    ddl_policy: DdlPolicy,
    /// Start the pipeline right after creating it.
    #[arg(long)]
    start: bool,
}

/// A unit enum variant from its serde name.
fn from_name<T: DeserializeOwned>(name: String) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(name))
}

/// Splits `CONN.TABLE` at its first dot: `crm.db.Customer` is table `db.Customer` of connection `crm`.
fn parse_table_arg(value: &str) -> Result<TableSpec, String> {
    match value.split_once('.') {
        Some((connection, table)) if !connection.is_empty() && !table.is_empty() => {
            Ok(TableSpec { connection: connection.to_owned(), table: table.to_owned() })
        }
        _ => Err(format!("expected CONNECTION.TABLE (e.g. mysql_crm_db.Customer), got '{value}'")),
    }
}

/// Runs a pipeline subcommand.
pub fn run(ctx: &Context, command: PipelineCommand) -> anyhow::Result<ExitCode> {
    match command {
        PipelineCommand::Create(args) => {
            let spec = PipelineSpec {
                alias: args.alias,
                source: args.source,
                target: args.target,
                auto_create: args.auto_create,
                mode: args.mode,
                ddl_policy: args.ddl_policy,
                start: args.start,
            };
            let reply = ctx.client.post_json(&["pipelines"], &spec)?;
            ctx.show(&reply, |p: PipelineInfo| format!("created pipeline {} ({})\n", p.alias, p.status))?;
        }
        PipelineCommand::Start { alias } => {
            let reply = ctx.client.post(&["pipelines", &alias, "start"])?;
            ctx.show(&reply, |p: PipelineInfo| format!("pipeline {}: {}\n", p.alias, p.status))?;
        }
        PipelineCommand::Stop { alias } => {
            let reply = ctx.client.post(&["pipelines", &alias, "stop"])?;
            ctx.show(&reply, |p: PipelineInfo| format!("pipeline {}: {}\n", p.alias, p.status))?;
        }
        PipelineCommand::Stats { alias, follow } => stats(ctx, &alias, follow)?,
        PipelineCommand::List => {
            let reply = ctx.client.get(&["pipelines"])?;
            ctx.show(&reply, |list: Vec<PipelineInfo>| render_list(&list))?;
        }
        PipelineCommand::Get { alias } => {
            let reply = ctx.client.get(&["pipelines", &alias])?;
            ctx.show(&reply, |p: PipelineInfo| render_one(&p))?;
        }
        PipelineCommand::Delete { alias } => {
            ctx.client.delete(&["pipelines", &alias])?;
            ctx.done(&format!("deleted pipeline {alias}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the stats once, or every second until interrupted. On a terminal each refresh replaces the last.
fn stats(ctx: &Context, alias: &str, follow: bool) -> anyhow::Result<()> {
    let redraw = follow && !ctx.json && std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        let reply = ctx.client.get(&["pipelines", alias, "stats"])?;
        if redraw {
            // Clear the screen and move the cursor home.
            print!("\x1b[2J\x1b[H");
        } else if !first {
            println!();
        }
        ctx.show(&reply, |s: PipelineStats| render_stats(&s))?;
        if !follow {
            return Ok(());
        }
        std::io::stdout().flush()?;
        first = false;
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}

/// The brief's stats block, then snapshot progress per table and the last error.
pub(crate) fn render_stats(s: &PipelineStats) -> String {
    let mut out = fields(&[
        ("Status", s.status.clone()),
        ("Input Total", s.input_total.to_string()),
        ("Output Total", s.output_total.to_string()),
        ("Throughput", format!("{} events/second", rate(s.throughput_eps))),
        ("Last Input", timestamp(s.last_input.as_deref())),
        ("Last Output", timestamp(s.last_output.as_deref())),
        ("Lag", s.lag_ms.map_or_else(|| "-".to_owned(), |lag| format!("{lag} ms"))),
    ]);
    for t in &s.snapshot {
        let state = if t.done { "done" } else { "copying" };
        out.push_str(&format!(
            "Snapshot {}: {}/{} rows ({state})\n",
            t.table, t.rows_copied, t.rows_estimated
        ));
    }
    if let Some(error) = &s.last_error {
        out.push_str(&format!("Error: {error}\n"));
    }
    out
}

fn table_spec(t: &TableSpec) -> String {
    format!("{}.{}", t.connection, t.table)
}

pub(crate) fn render_list(list: &[PipelineInfo]) -> String {
    let mut table = Table::new(&["ALIAS", "STATUS", "SOURCE", "TARGET", "MODE", "CREATED"]);
    for p in list {
        table.row(vec![
            p.alias.clone(),
            p.status.clone(),
            table_spec(&p.spec.source),
            table_spec(&p.spec.target),
            serde_name(&p.spec.mode),
            timestamp(Some(&p.created_at)),
        ]);
    }
    table.render()
}

pub(crate) fn render_one(p: &PipelineInfo) -> String {
    fields(&[
        ("Alias", p.alias.clone()),
        ("Status", p.status.clone()),
        ("Source", table_spec(&p.spec.source)),
        ("Target", table_spec(&p.spec.target)),
        ("Mode", serde_name(&p.spec.mode)),
        ("DDL Policy", serde_name(&p.spec.ddl_policy)),
        ("Auto Create", if p.spec.auto_create { "yes" } else { "no" }.to_owned()),
        ("Created", timestamp(Some(&p.created_at))),
        ("Error", or_dash(p.last_error.as_deref())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use idaas_core::TableRef;
    use idaas_engine::TableProgress;

    fn spec(connection: &str, table: &str) -> TableSpec {
        TableSpec { connection: connection.into(), table: table.into() }
    }

    #[test]
    fn table_args_split_at_the_first_dot() {
        assert_eq!(parse_table_arg("mysql_crm_db.Customer"), Ok(spec("mysql_crm_db", "Customer")));
        assert_eq!(parse_table_arg("conn.db.table"), Ok(spec("conn", "db.table")));
        for bad in ["Customer", ".Customer", "conn.", ""] {
            assert!(parse_table_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listed_mode_and_policy_names_parse() {
        assert_eq!(from_name::<SyncMode>("initial_and_cdc".into()).unwrap(), SyncMode::InitialAndCdc);
        assert_eq!(from_name::<SyncMode>("initial".into()).unwrap(), SyncMode::Initial);
        assert_eq!(from_name::<SyncMode>("cdc".into()).unwrap(), SyncMode::Cdc);
        assert_eq!(from_name::<DdlPolicy>("apply".into()).unwrap(), DdlPolicy::Apply);
        assert_eq!(from_name::<DdlPolicy>("ignore".into()).unwrap(), DdlPolicy::Ignore);
        assert_eq!(from_name::<DdlPolicy>("stop".into()).unwrap(), DdlPolicy::Stop);
        assert_eq!(serde_name(&SyncMode::InitialAndCdc), "initial_and_cdc");
    }

    fn stats() -> PipelineStats {
        PipelineStats {
            alias: "my_pipeline".into(),
            status: "running".into(),
            input_total: 2400,
            output_total: 2300,
            throughput_eps: 500.0,
            last_input: Some("2022-02-01T15:00:03.203Z".into()),
            last_output: Some("2022-02-01T15:00:03.829Z".into()),
            lag_ms: Some(12),
            snapshot_rows: 10000,
            cdc_events: 0,
            snapshot: vec![
                TableProgress {
                    table: TableRef::new("crm", "Customer"),
                    rows_copied: 10000,
                    rows_estimated: 10000,
                    done: true,
                },
                TableProgress {
                    table: TableRef::new("crm", "Order"),
                    rows_copied: 5,
                    rows_estimated: 90,
                    done: false,
                },
            ],
            checkpoint: None,
            last_error: None,
        }
    }

    #[test]
    fn stats_print_the_brief_block() {
        assert_eq!(
            render_stats(&stats()),
            "\
Status:       running
Input Total:  2400
Output Total: 2300
Throughput:   500 events/second
Last Input:   2022.02.01 15:00:03.203
Last Output:  2022.02.01 15:00:03.829
Lag:          12 ms
Snapshot crm.Customer: 10000/10000 rows (done)
Snapshot crm.Order: 5/90 rows (copying)
"
        );
    }

    #[test]
    fn stats_show_dashes_and_the_error() {
        let s = PipelineStats {
            status: "failed".into(),
            throughput_eps: 0.0,
            last_input: None,
            last_output: None,
            lag_ms: None,
            snapshot: vec![],
            last_error: Some("binlog is off on mysql_crm_db".into()),
            ..stats()
        };
        assert_eq!(
            render_stats(&s),
            "\
Status:       failed
Input Total:  2400
Output Total: 2300
Throughput:   0 events/second
Last Input:   -
Last Output:  -
Lag:          -
Error: binlog is off on mysql_crm_db
"
        );
    }
}
