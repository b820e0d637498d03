//! The pipeline runtime of iDaaS: the catalogue of connections and pipelines, initial load with a lossless
//! hand-over to change data capture, batching, checkpoints, retries and stats.
#![deny(rustdoc::broken_intra_doc_links)]
#![warn(missing_docs)]

pub mod api;
pub mod browse;
pub mod checkpoint;
mod connectors;
pub mod pipeline;
pub mod stats;

pub use api::*;
pub use idaas_core::{CheckReport, Error, ErrorKind, Result, TableRef, TableSchema};

use idaas_connectors::{ConnectionConfig, ConnectorKind, config::valid_name};
use idaas_store::{Store, StoreError, StoredConnection, StoredPipeline};
use pipeline::Context;
use secrecy::SecretString;
use stats::{Stats, now_rfc3339, rfc3339_ms};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::info;

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The engine: owns the metadata store and every running pipeline.
pub struct Engine {
    store: Arc<Store>,
    running: Mutex<HashMap<String, Running>>,
    stats: Mutex<HashMap<String, Arc<Stats>>>,
    me: std::sync::Weak<Engine>,
}

fn store_err(e: StoreError) -> Error {
    match e {
        StoreError::AlreadyExists { .. } => Error::new(ErrorKind::AlreadyExists, e.to_string()),
        other => Error::with_cause(ErrorKind::Internal, "metadata store failure", other),
    }
}

fn not_found(kind: &str, alias: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("{kind} '{alias}' does not exist"))
}

fn info_of(c: &StoredConnection) -> ConnectionInfo {
    ConnectionInfo {
        alias: c.alias.clone(),
        kind: c.kind.clone(),
        host: c.host.clone(),
        port: c.port,
        user: c.user.clone(),
        database: c.database.clone(),
        daas_db: c.daas_db,
        created_at: c.created_at.clone(),
    }
}

/// Splits `db.table` (or `table`, using the connection's database).
fn resolve_table(c: &StoredConnection, name: &str) -> Result<TableRef> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::invalid("table name is empty"));
    }
    match name.split_once('.') {
        Some((db, t)) if !db.is_empty() && !t.is_empty() => Ok(TableRef::new(db, t)),
        Some(_) => Err(Error::invalid(format!("table name '{name}' is not of the form database.table"))),
        None if c.kind == ConnectorKind::Postgres.as_str() => Ok(TableRef::new("public", name)),
        None => match &c.database {
            Some(db) => Ok(TableRef::new(db.clone(), name)),
            None => Err(Error::invalid(format!(
                "table '{name}' needs a database: write it as database.{name}, or give connection '{}' a database",
                c.alias
            ))),
        },
    }
}

impl Engine {
    /// Opens the data directory (creating it when missing) and resumes the pipelines that were running.
    pub async fn open(data_dir: &Path) -> Result<Arc<Engine>> {
        let store = Store::open(data_dir).map_err(|e| {
            Error::with_cause(
                ErrorKind::InvalidInput,
                format!("cannot open the data directory {}", data_dir.display()),
                e,
            )
        })?;
        let engine = Arc::new_cyclic(|me| Engine {
            store: Arc::new(store),
            running: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            me: me.clone(),
        });
        for p in engine.store.list_pipelines().map_err(store_err)? {
            if p.desired_state == "running" {
                info!(pipeline = %p.alias, "resuming pipeline");
                if let Err(e) = engine.launch(&p.alias) {
                    tracing::warn!(pipeline = %p.alias, error = %e.report(), "cannot resume pipeline");
                }
            }
        }
        Ok(engine)
    }

    fn stored_connection(&self, alias: &str) -> Result<StoredConnection> {
        self.store.get_connection(alias).map_err(store_err)?.ok_or_else(|| not_found("connection", alias))
    }

    fn stored_pipeline(&self, alias: &str) -> Result<StoredPipeline> {
        self.store.get_pipeline(alias).map_err(store_err)?.ok_or_else(|| not_found("pipeline", alias))
    }

    fn alias_free(&self, alias: &str) -> Result<()> {
        if !valid_name(alias) {
            return Err(Error::invalid(format!(
                "alias '{alias}' must start with a letter or '_' and hold only letters, digits and '_' (at most 64)"
            )));
        }
        if self.store.get_connection(alias).map_err(store_err)?.is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("alias '{alias}' is already used by a connection"),
            ));
        }
        if self.store.get_pipeline(alias).map_err(store_err)?.is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("alias '{alias}' is already used by a pipeline"),
            ));
        }
        Ok(())
    }

    /// Registers a connection after checking that it can log in. Errors: `InvalidInput` (bad fields),
    /// `AlreadyExists` (alias taken), `Unreachable`, `AuthFailed`. Nothing is saved on error.
    pub async fn create_connection(&self, spec: ConnectionSpec) -> Result<ConnectionInfo> {
        let kind = match &spec.kind {
            Some(k) => ConnectorKind::parse(k)?,
            None => {
                let port = spec.port.unwrap_or(ConnectorKind::Mysql.default_port());
                if spec.host.trim().is_empty() || !valid_name(&spec.alias) {
                    // Validation below reports it; the kind does not matter.
                    ConnectorKind::Mysql
                } else {
                    connectors::detect_kind(&spec.alias, &spec.host, port).await?
                }
            }
        };
        let cfg = ConnectionConfig {
            alias: spec.alias.clone(),
            kind,
            host: spec.host.clone(),
            port: spec.port.unwrap_or(kind.default_port()),
            user: spec.user.clone(),
            password: SecretString::from(spec.password.clone()),
            database: spec.database.clone(),
        };
        cfg.validate()?;
        self.alias_free(&spec.alias)?;
        connectors::login(&cfg).await?;
        let stored = StoredConnection {
            alias: cfg.alias,
            kind: kind.as_str().to_string(),
            host: cfg.host,
            port: cfg.port,
            user: cfg.user,
            password: cfg.password,
            database: cfg.database,
            daas_db: spec.daas_db,
            created_at: now_rfc3339(),
        };
        self.store.insert_connection(&stored).map_err(store_err)?;
        info!(connection = %stored.alias, "connection created");
        Ok(info_of(&stored))
    }

    /// All connections.
    pub fn list_connections(&self) -> Result<Vec<ConnectionInfo>> {
        Ok(self.store.list_connections().map_err(store_err)?.iter().map(info_of).collect())
    }

    /// One connection; `NotFound` when missing.
    pub fn get_connection(&self, alias: &str) -> Result<ConnectionInfo> {
        Ok(info_of(&self.stored_connection(alias)?))
    }

    /// Deletes a connection; `InvalidInput` when a pipeline uses it.
    pub async fn delete_connection(&self, alias: &str) -> Result<()> {
        self.stored_connection(alias)?;
        for p in self.list_pipelines()? {
            if p.spec.source.connection == alias || p.spec.target.connection == alias {
                return Err(Error::invalid(format!(
                    "connection '{alias}' is used by pipeline '{}'; delete the pipeline first",
                    p.alias
                )));
            }
        }
        self.store.delete_connection(alias).map_err(store_err)?;
        Ok(())
    }

    /// Runs the live check of a connection.
    pub async fn test_connection(&self, alias: &str) -> Result<CheckReport> {
        let c = self.stored_connection(alias)?;
        connectors::source_for(&c, None, None)?.check().await
    }

    /// Tables a connection sees.
    pub async fn list_tables(&self, alias: &str) -> Result<Vec<TableRef>> {
        let c = self.stored_connection(alias)?;
        connectors::source_for(&c, None, None)?.list_tables().await
    }

    /// Describes a table (`name` or `database.name`).
    pub async fn describe_table(&self, alias: &str, table: &str) -> Result<TableSchema> {
        let c = self.stored_connection(alias)?;
        let t = resolve_table(&c, table)?;
        connectors::source_for(&c, None, None)?.describe(&t).await
    }

    /// Creates a pipeline (and starts it when `spec.start`). Validates everything first: connections exist,
    /// the source table exists and has a primary key, the source is set up for CDC, the target fits or can be
    /// created. Nothing is created on error.
    pub async fn create_pipeline(&self, spec: PipelineSpec) -> Result<PipelineInfo> {
        self.alias_free(&spec.alias)?;
        let sc = self.stored_connection(&spec.source.connection)?;
        let tc = self.stored_connection(&spec.target.connection)?;
        let source_table = resolve_table(&sc, &spec.source.table)?;
        let target_table = resolve_table(&tc, &spec.target.table)?;
        let source = connectors::source_for(&sc, Some(&spec.alias), Some(&source_table))?;
        let report = source.check().await?;
        let postgres = sc.kind == ConnectorKind::Postgres.as_str();
        const MYSQL_CDC: [&str; 7] = [
            "server",
            "log_bin",
            "binlog_format",
            "binlog_row_image",
            "privilege REPLICATION SLAVE",
            "privilege REPLICATION CLIENT",
            "privilege SELECT",
        ];
        let needed = |name: &str| {
            if spec.mode == SyncMode::Initial {
                name.starts_with("privilege SELECT") || name.starts_with("table ")
            } else {
                postgres || MYSQL_CDC.contains(&name)
            }
        };
        let problems: Vec<String> =
            report.items.iter().filter(|i| !i.ok && needed(&i.name)).map(|i| i.detail.clone()).collect();
        if !problems.is_empty() {
            let kind = if problems.iter().any(|p| p.contains("privilege")) {
                ErrorKind::PermissionDenied
            } else {
                ErrorKind::SourceConfig
            };
            return Err(Error::new(
                kind,
                format!(
                    "source connection '{}' is not ready for this pipeline: {}",
                    sc.alias,
                    problems.join("; ")
                ),
            ));
        }
        let prepared =
            self.prepare_pipeline(&spec, &sc, &tc, &source_table, &target_table, source.as_ref()).await;
        let created = match prepared {
            Ok(created) => created,
            Err(e) => {
                // Leave nothing behind: a PostgreSQL source may have created its publication while
                // describing.
                let _ = source.release().await;
                return Err(e);
            }
        };
        let stored = StoredPipeline {
            alias: spec.alias.clone(),
            spec: serde_json::to_value(&spec)
                .map_err(|e| Error::with_cause(ErrorKind::Internal, "spec", e))?,
            desired_state: "created".into(),
            last_error: None,
            created_at: now_rfc3339(),
        };
        self.store.insert_pipeline(&stored).map_err(store_err)?;
        if created {
            // The first run may then build the new table's key after its initial load.
            let cp = pipeline::Checkpoint { target_created: true, ..Default::default() };
            let json = serde_json::to_value(&cp)
                .map_err(|e| Error::with_cause(ErrorKind::Internal, "checkpoint", e))?;
            self.store.save_checkpoint(&spec.alias, &json, &now_rfc3339()).map_err(store_err)?;
        }
        info!(pipeline = %spec.alias, source = %source_table, target = %target_table, "pipeline created");
        if spec.start {
            return self.start_pipeline(&spec.alias).await;
        }
        self.get_pipeline(&spec.alias)
    }

    /// The checks and target preparation of [`Engine::create_pipeline`] after the source is ready.
    async fn prepare_pipeline(
        &self,
        spec: &PipelineSpec,
        sc: &StoredConnection,
        tc: &StoredConnection,
        source_table: &TableRef,
        target_table: &TableRef,
        source: &dyn idaas_core::Source,
    ) -> Result<bool> {
        let schema = source.describe(source_table).await?;
        if schema.primary_key.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "source table {source_table} has no primary key; add one (ALTER TABLE ... ADD PRIMARY KEY) so \
                     changes can be applied exactly once"
                ),
            ));
        }
        if spec.mode != SyncMode::Initial && sc.kind == ConnectorKind::Mysql.as_str() {
            let mut refused = Vec::new();
            for c in &schema.columns {
                let charset = match &c.data_type {
                    idaas_core::DataType::Char { charset, .. }
                    | idaas_core::DataType::Varchar { charset, .. }
                    | idaas_core::DataType::Text { charset, .. } => Some(*charset),
                    _ => None,
                };
                if charset == Some(idaas_core::Charset::Other) {
                    refused.push(format!(
                        "column '{}' ({}) uses a character set the binlog decoder does not read (utf8mb4, \
                         utf8mb3, latin1 and ascii are supported); convert it to utf8mb4",
                        c.name, c.source_type
                    ));
                }
                if c.data_type == idaas_core::DataType::Uuid {
                    refused.push(format!(
                        "column '{}' has MariaDB's UUID type, whose binlog form is not decoded yet; use \
                         mode 'initial', or store it as CHAR(36)",
                        c.name
                    ));
                }
            }
            if !refused.is_empty() {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("source table {source_table} cannot be streamed: {}", refused.join("; ")),
                ));
            }
        }
        if sc.alias == tc.alias && source_table == target_table {
            return Err(Error::invalid("the source and target are the same table"));
        }
        let mut sink = (connectors::sink_for(tc)?)();
        sink.prepare(&schema, target_table, spec.auto_create).await
    }

    fn context(&self, p: &StoredPipeline) -> Result<Context> {
        let spec: PipelineSpec = serde_json::from_value(p.spec.clone())
            .map_err(|e| Error::with_cause(ErrorKind::Internal, "stored pipeline spec is malformed", e))?;
        let sc = self.stored_connection(&spec.source.connection)?;
        let tc = self.stored_connection(&spec.target.connection)?;
        let source_table = resolve_table(&sc, &spec.source.table)?;
        let target_table = resolve_table(&tc, &spec.target.table)?;
        let source = connectors::source_for(&sc, Some(&p.alias), Some(&source_table))?;
        let make_sink = connectors::sink_for(&tc)?;
        let stats = self.stats_of(&p.alias);
        let on_saved = {
            let stats = stats.clone();
            let source = source.clone();
            // Durable now: the source may release its log up to here (PostgreSQL confirms its slot).
            Box::new(move |cp: &serde_json::Value| {
                if let Some(p) = cp.get("stream_position").filter(|p| !p.is_null()) {
                    stats.set_checkpoint(p.clone());
                    if cp.get("snapshot_done").and_then(|d| d.as_bool()).unwrap_or(false) {
                        source.acknowledge(&idaas_core::Position::new(p.clone()));
                    }
                }
            })
        };
        Ok(Context {
            spec,
            source_table,
            target_table,
            source,
            make_sink,
            store: self.store.clone(),
            checkpoints: checkpoint::CheckpointWriter::new(self.store.clone(), p.alias.clone(), on_saved),
            commit_resolution_ms: connectors::commit_resolution_ms(&sc),
            stats,
        })
    }

    fn stats_of(&self, alias: &str) -> Arc<Stats> {
        let mut m = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(alias.to_string()).or_default().clone()
    }

    fn is_running(&self, alias: &str) -> bool {
        let m = self.running.lock().unwrap_or_else(|e| e.into_inner());
        m.get(alias).is_some_and(|r| !r.task.is_finished())
    }

    fn launch(&self, alias: &str) -> Result<()> {
        let p = self.stored_pipeline(alias)?;
        let ctx = Arc::new(self.context(&p)?);
        let stats = ctx.stats.clone();
        stats.set_status("running");
        stats.set_error(None);
        let (stop_tx, stop_rx) = watch::channel(false);
        let store = self.store.clone();
        let name = alias.to_string();
        let task = tokio::spawn(async move {
            let (status, error) = pipeline::run(ctx, stop_rx).await;
            stats.set_status(&status);
            stats.set_error(error.clone());
            if status != "stopped" {
                let _ = store.set_pipeline_state(&name, &status, error.as_deref());
            }
        });
        let mut m = self.running.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(alias.to_string(), Running { stop: stop_tx, task });
        Ok(())
    }

    /// Starts (or resumes) a pipeline.
    pub async fn start_pipeline(&self, alias: &str) -> Result<PipelineInfo> {
        let p = self.stored_pipeline(alias)?;
        if !self.is_running(alias) {
            if p.desired_state == "completed" {
                return Err(Error::invalid(format!(
                    "pipeline '{alias}' completed its initial load (mode 'initial'); create a new pipeline to copy again"
                )));
            }
            self.store.set_pipeline_state(alias, "running", None).map_err(store_err)?;
            self.launch(alias)?;
        }
        self.get_pipeline(alias)
    }

    /// Stops a pipeline after its current batch; it resumes from its checkpoint on start.
    pub async fn stop_pipeline(&self, alias: &str) -> Result<PipelineInfo> {
        let p = self.stored_pipeline(alias)?;
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(alias);
        if let Some(r) = running {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
        if p.desired_state != "completed" {
            self.store.set_pipeline_state(alias, "stopped", None).map_err(store_err)?;
            self.stats_of(alias).set_status("stopped");
        }
        self.get_pipeline(alias)
    }

    /// A pipeline's live figures.
    pub fn pipeline_stats(&self, alias: &str) -> Result<PipelineStats> {
        let p = self.stored_pipeline(alias)?;
        let s = self.stats_of(alias).snapshot();
        let status = self.status_of(&p, &s.status);
        let checkpoint = match s.checkpoint {
            Some(c) => Some(c),
            None => self
                .store
                .load_checkpoint(alias)
                .map_err(store_err)?
                .and_then(|c| c.get("stream_position").cloned())
                .filter(|v| !v.is_null()),
        };
        Ok(PipelineStats {
            alias: p.alias.clone(),
            status,
            input_total: s.input_total,
            output_total: s.output_total,
            throughput_eps: (s.throughput_eps * 10.0).round() / 10.0,
            last_input: s.last_input_ms.map(rfc3339_ms),
            last_output: s.last_output_ms.map(rfc3339_ms),
            lag_ms: s.lag_ms,
            snapshot_rows: s.snapshot_rows,
            cdc_events: s.cdc_events,
            snapshot: s.snapshot,
            checkpoint,
            last_error: s.last_error.or(p.last_error),
        })
    }

    fn status_of(&self, p: &StoredPipeline, live: &str) -> String {
        if self.is_running(&p.alias) {
            if live.is_empty() { "running".into() } else { live.to_string() }
        } else {
            match p.desired_state.as_str() {
                "running" => "starting".into(),
                other => other.to_string(),
            }
        }
    }

    fn pipeline_info(&self, p: &StoredPipeline) -> Result<PipelineInfo> {
        let spec: PipelineSpec = serde_json::from_value(p.spec.clone())
            .map_err(|e| Error::with_cause(ErrorKind::Internal, "stored pipeline spec is malformed", e))?;
        let live = self.stats_of(&p.alias).status();
        Ok(PipelineInfo {
            alias: p.alias.clone(),
            spec,
            status: self.status_of(p, &live),
            created_at: p.created_at.clone(),
            last_error: self.stats_of(&p.alias).snapshot().last_error.or(p.last_error.clone()),
        })
    }

    /// All pipelines.
    pub fn list_pipelines(&self) -> Result<Vec<PipelineInfo>> {
        self.store.list_pipelines().map_err(store_err)?.iter().map(|p| self.pipeline_info(p)).collect()
    }

    /// One pipeline.
    pub fn get_pipeline(&self, alias: &str) -> Result<PipelineInfo> {
        self.pipeline_info(&self.stored_pipeline(alias)?)
    }

    /// Stops and deletes a pipeline and its checkpoint (the target table stays).
    pub async fn delete_pipeline(&self, alias: &str) -> Result<()> {
        let p = self.stored_pipeline(alias)?;
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(alias);
        if let Some(r) = running {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
        // Drop what the source created for this pipeline (PostgreSQL's slot and publication); a source that
        // cannot be reached keeps them, which the error says.
        if let Ok(spec) = serde_json::from_value::<PipelineSpec>(p.spec.clone())
            && let Ok(sc) = self.stored_connection(&spec.source.connection)
        {
            connectors::source_for(&sc, Some(alias), None)?.release().await?;
        }
        self.store.delete_pipeline(alias).map_err(store_err)?;
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).remove(alias);
        Ok(())
    }

    /// Stops every pipeline, keeping their checkpoints and their desired state, for a clean server shutdown.
    pub async fn shutdown(&self) {
        let all: Vec<Running> =
            self.running.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, r)| r).collect();
        for r in &all {
            let _ = r.stop.send(true);
        }
        for r in all {
            let _ = r.task.await;
        }
        let _ = self.me.upgrade();
    }
}
