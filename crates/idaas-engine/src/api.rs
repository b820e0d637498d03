//! The request and answer types of the engine's public API. The server serialises them as they are.

use idaas_core::TableRef;
use serde::{Deserialize, Serialize};

/// A request to register a connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// Unique name of the connection.
    pub alias: String,
    /// `mysql` (MySQL or MariaDB) or `postgres`; found by talking to the server when absent.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Host name or IP address.
    #[serde(alias = "ip")]
    pub host: String,
    /// TCP port; the kind's default when absent.
    #[serde(default)]
    pub port: Option<u16>,
    /// User name.
    pub user: String,
    /// Password; stored encrypted, never returned.
    #[serde(default)]
    pub password: String,
    /// Default database.
    #[serde(default, alias = "db")]
    pub database: Option<String>,
    /// True for the connection that holds the DaaS store.
    #[serde(default, rename = "DaaSDB", alias = "daas_db")]
    pub daas_db: bool,
}

/// A registered connection as the API shows it: never the password.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectionInfo {
    /// Unique name.
    pub alias: String,
    /// `mysql` or `postgres`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Default database.
    pub database: Option<String>,
    /// True for the DaaS store connection.
    pub daas_db: bool,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
}

/// One end of a pipeline: a table of a connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Connection alias.
    pub connection: String,
    /// Table name, optionally qualified with its database (`crm.Customer`); the connection's default
    /// database otherwise.
    pub table: String,
}

/// How a pipeline syncs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Initial load, then change data capture.
    #[default]
    InitialAndCdc,
    /// Initial load only; the pipeline completes after it.
    Initial,
    /// Change data capture only, from the current end of the source's log.
    Cdc,
}

/// What a pipeline does with a source schema change (ADD/DROP COLUMN, ...).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DdlPolicy {
    /// Apply it to the target (add or drop the column).
    #[default]
    Apply,
    /// Keep the target's shape; new columns are not written, dropped columns stay.
    Ignore,
    /// Stop the pipeline with an error that names the change.
    Stop,
}

/// A request to create a pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Unique name of the pipeline.
    pub alias: String,
    /// The source table.
    pub source: TableSpec,
    /// The target table.
    pub target: TableSpec,
    /// Create the target table when it is missing.
    #[serde(default, alias = "AutoCreate")]
    pub auto_create: bool,
    /// Initial load and/or CDC.
    #[serde(default)]
    pub mode: SyncMode,
    /// Schema change policy.
    #[serde(default)]
    pub ddl_policy: DdlPolicy,
    /// Start right after creating it.
    #[serde(default)]
    pub start: bool,
}

/// A pipeline as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PipelineInfo {
    /// Unique name.
    pub alias: String,
    /// What it was created with.
    pub spec: PipelineSpec,
    /// `created`, `starting`, `snapshot`, `running`, `stopped`, `completed` or `failed`.
    pub status: String,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// The error that stopped it, if any.
    pub last_error: Option<String>,
}

/// Initial-load progress of one table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableProgress {
    /// The source table.
    pub table: TableRef,
    /// Rows copied so far.
    pub rows_copied: u64,
    /// The source's row estimate when the load began.
    pub rows_estimated: u64,
    /// True when the table is fully copied.
    pub done: bool,
}

/// A pipeline's live figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PipelineStats {
    /// Pipeline alias.
    pub alias: String,
    /// Same as [`PipelineInfo::status`].
    pub status: String,
    /// Events read from the source (snapshot rows and changes).
    pub input_total: u64,
    /// Events written to the target.
    pub output_total: u64,
    /// Events written per second over the last few seconds.
    pub throughput_eps: f64,
    /// When the last event was read, RFC 3339 UTC with milliseconds.
    pub last_input: Option<String>,
    /// When the last event was written, RFC 3339 UTC with milliseconds.
    pub last_output: Option<String>,
    /// Target commit time minus source commit time of the last written change, in milliseconds.
    pub lag_ms: Option<i64>,
    /// Snapshot rows read.
    pub snapshot_rows: u64,
    /// Changes (insert/update/delete) read from the stream.
    pub cdc_events: u64,
    /// Per-table initial-load progress.
    pub snapshot: Vec<TableProgress>,
    /// The source position of the last checkpoint.
    pub checkpoint: Option<serde_json::Value>,
    /// The error that stopped the pipeline or that it is retrying, if any.
    pub last_error: Option<String>,
}
