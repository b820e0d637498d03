//! # Source
//!
//! [`PgSource`] is the PostgreSQL change-data-capture source of one pipeline. The pipeline owns two
//! objects on the server, both named [`schema::object_name`] (`idaas_<pipeline>`):
//!
//! - a publication `FOR TABLE` the pipeline's tables (created when missing, with
//!   `publish_via_partition_root = false`; missing tables are added), and
//! - a logical replication slot using `pgoutput`, created by the initial load with an exported snapshot
//!   ([`super::snapshot`]) or, for a pipeline without initial load, by [`Source::current_position`].
//!
//! The slot is confirmed only up to the positions passed to [`Source::acknowledge`] (checkpoints the
//! engine saved), so the server keeps every WAL record a restarted pipeline may need, and no more.
//! [`Source::release`] drops both objects.
//!
//! The pipeline's tables are those given to [`PgSource::with_tables`], plus every table the source was
//! asked to [`Source::describe`] or to stream.
//!
//! # Errors
//! [`Source::check`] reports every problem at once with its fix: `wal_level` not `logical`, a user without
//! the REPLICATION attribute, no free replication slot or WAL sender, a replication session the server
//! refuses, a table the user cannot read, a table whose replica identity cannot identify rows, and a
//! publication the user cannot create.

use super::replication::{self, StreamHandle, position_lsn};
use super::schema::{self, Described};
use super::snapshot::PgSnapshot;
use super::types::TypeCache;
use super::wire;
use super::{Pg, classify, quote_ident, quote_table};
use async_trait::async_trait;
use idaas_core::{
    ChangeStream, CheckItem, CheckReport, Error, ErrorKind, Position, Result, SnapshotReader, Source,
    TableRef, TableSchema,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The PostgreSQL CDC source of one pipeline (or, without a pipeline, of the connection's catalogue).
#[derive(Clone)]
pub struct PgSource {
    pg: Pg,
    /// The publication and slot name; `None` for a catalogue source.
    name: Option<String>,
    shared: Arc<Shared>,
}

struct Shared {
    tables: Mutex<BTreeSet<TableRef>>,
    acked: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

impl PgSource {
    /// The source of pipeline `pipeline`, which owns publication and slot `idaas_<pipeline>`.
    pub fn new(pg: Pg, pipeline: &str) -> PgSource {
        PgSource::build(pg, Some(schema::object_name(pipeline)))
    }

    /// A source for browsing and checking a connection: it has no slot, so it cannot snapshot or stream.
    pub fn catalogue(pg: Pg) -> PgSource {
        PgSource::build(pg, None)
    }

    fn build(pg: Pg, name: Option<String>) -> PgSource {
        let shared = Shared {
            tables: Mutex::new(BTreeSet::new()),
            acked: Arc::new(AtomicU64::new(0)),
            stop: watch::channel(false).0,
        };
        PgSource { pg, name, shared: Arc::new(shared) }
    }

    /// Adds tables to the pipeline's publication set (checked by [`Source::check`], published before the
    /// slot is created).
    pub fn with_tables(self, tables: impl IntoIterator<Item = TableRef>) -> PgSource {
        self.remember(tables);
        self
    }

    /// The server.
    pub fn server(&self) -> &Pg {
        &self.pg
    }

    /// The name of the pipeline's publication and replication slot.
    pub fn slot_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn remember(&self, tables: impl IntoIterator<Item = TableRef>) {
        self.shared.tables.lock().unwrap_or_else(|e| e.into_inner()).extend(tables);
    }

    fn tables(&self) -> Vec<TableRef> {
        self.shared.tables.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    fn pipeline_name(&self, what: &str) -> Result<&str> {
        self.name.as_deref().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "connection '{}': {what} needs a pipeline (its replication slot); this source only browses",
                    self.pg.config().alias
                ),
            )
        })
    }
}

#[async_trait]
impl Source for PgSource {
    async fn check(&self) -> Result<CheckReport> {
        check_source(&self.pg, self.name.as_deref(), &self.tables()).await
    }

    async fn list_tables(&self) -> Result<Vec<TableRef>> {
        schema::list_tables(&self.pg).await
    }

    async fn describe(&self, table: &TableRef) -> Result<TableSchema> {
        let schema = schema::describe(&self.pg, table).await?;
        if self.name.is_some() {
            self.remember([table.clone()]);
        }
        Ok(schema)
    }

    async fn estimate_rows(&self, table: &TableRef) -> Result<u64> {
        schema::estimate_rows(&self.pg, table).await
    }

    async fn current_position(&self) -> Result<Position> {
        let name = self.pipeline_name("reading the stream position")?;
        replication::current_position(&self.pg, name, name, &self.tables()).await
    }

    async fn snapshot(&self) -> Result<Box<dyn SnapshotReader>> {
        let name = self.pipeline_name("an initial load")?;
        Ok(Box::new(PgSnapshot::open(&self.pg, name, name, &self.tables()).await?))
    }

    async fn stream(&self, from: &Position, tables: &[TableSchema]) -> Result<ChangeStream> {
        let name = self.pipeline_name("streaming changes")?.to_string();
        self.remember(tables.iter().map(|t| t.table.clone()));
        let handle = StreamHandle { acked: self.shared.acked.clone(), stop: self.shared.stop.subscribe() };
        replication::stream(self.pg.clone(), name.clone(), name, from.clone(), tables.to_vec(), handle).await
    }

    fn acknowledge(&self, position: &Position) {
        if let Ok(lsn) = position_lsn(position) {
            self.shared.acked.fetch_max(lsn, Ordering::AcqRel);
        }
    }

    async fn release(&self) -> Result<()> {
        let name = self.pipeline_name("releasing a replication slot")?;
        self.shared.stop.send_replace(true);
        replication::release(&self.pg, name, name).await
    }
}

fn item(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> CheckItem {
    CheckItem { name: name.into(), ok, detail: detail.into() }
}

/// Checks everything a CDC source needs; every problem is one finding with its fix. `slot` is the
/// pipeline's slot and publication name, `tables` its tables (both may be empty for a connection test).
pub async fn check_source(pg: &Pg, slot: Option<&str>, tables: &[TableRef]) -> Result<CheckReport> {
    let cfg = pg.config();
    let client = pg.connect().await?;
    let q = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.map_err(|e| classify(cfg, e, sql)) }
    };
    let mut report = CheckReport {
        server_version: Some(q("SELECT version()").await?.get::<_, String>(0)),
        items: Vec::new(),
    };
    let user = quote_ident(&cfg.user);

    let wal_level: String = q("SELECT current_setting('wal_level')").await?.get(0);
    report.items.push(item(
        "wal_level",
        wal_level == "logical",
        if wal_level == "logical" {
            "wal_level is logical".to_string()
        } else {
            format!(
                "wal_level is {wal_level}, must be logical: ALTER SYSTEM SET wal_level = logical, then restart the \
                 server"
            )
        },
    ));

    let role = q("SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user").await?;
    let replication = role.get::<_, bool>(0) || role.get::<_, bool>(1);
    report.items.push(item(
        "privilege REPLICATION",
        replication,
        if replication {
            "user has the REPLICATION attribute".to_string()
        } else {
            format!(
                "user '{}' lacks the REPLICATION attribute, needed to create and read a replication slot: \
                 ALTER ROLE {user} WITH REPLICATION",
                cfg.user
            )
        },
    ));

    let slots = q("SELECT current_setting('max_replication_slots')::int4, (SELECT count(*)::int4 FROM pg_replication_slots)")
        .await?;
    let (max_slots, used): (i32, i32) = (slots.get(0), slots.get(1));
    let ours = match slot {
        Some(s) => replication::slot_info(&client, cfg, s).await?.is_some(),
        None => false,
    };
    report.items.push(item(
        "replication slots",
        ours || used < max_slots,
        if ours {
            format!("the pipeline's replication slot {} exists", slot.unwrap_or_default())
        } else if used < max_slots {
            format!("{} of {max_slots} replication slots are free", max_slots - used)
        } else {
            format!(
                "all {max_slots} replication slots are in use (max_replication_slots): drop unused slots \
                 (SELECT pg_drop_replication_slot(name)) or raise max_replication_slots and restart the server"
            )
        },
    ));

    let senders = q("SELECT current_setting('max_wal_senders')::int4, \
                     (SELECT count(*)::int4 FROM pg_stat_activity WHERE backend_type = 'walsender')")
    .await?;
    let (max_senders, busy): (i32, i32) = (senders.get(0), senders.get(1));
    report.items.push(item(
        "wal senders",
        busy < max_senders,
        if busy < max_senders {
            format!("{} of {max_senders} WAL senders are free", max_senders - busy)
        } else {
            format!(
                "all {max_senders} WAL senders are busy (max_wal_senders): raise it and restart the server"
            )
        },
    ));

    if replication {
        report.items.push(replication_session(pg).await);
    }

    let mut types = TypeCache::new();
    let mut owned_all = true;
    for t in tables {
        let d: Described = match schema::describe_with(&client, cfg, &mut types, t).await {
            Ok(d) => d,
            Err(e) if e.kind == ErrorKind::NotFound => {
                report.items.push(item(format!("table {t}"), false, format!("table {t} does not exist")));
                continue;
            }
            Err(e) => return Err(e),
        };
        owned_all &= d.owned;
        report.items.push(item(
            format!("privilege SELECT {t}"),
            d.can_select,
            if d.can_select {
                format!("user can read {t}")
            } else {
                format!(
                    "user '{}' lacks SELECT on {t}: GRANT SELECT ON {} TO {user}",
                    cfg.user,
                    quote_table(t)
                )
            },
        ));
        let problem = schema::replica_identity_problem(&d);
        report.items.push(item(
            format!("replica identity {t}"),
            problem.is_none(),
            problem.unwrap_or_else(|| format!("updates and deletes of {t} identify their rows")),
        ));
    }

    if let (Some(name), false) = (slot, tables.is_empty()) {
        let has = schema::publication_tables(&client, cfg, name).await?;
        let missing: Vec<&TableRef> = match &has {
            Some(has) => tables.iter().filter(|t| !has.contains(t)).collect(),
            None => tables.iter().collect(),
        };
        let can_create =
            q("SELECT has_database_privilege(current_database(), 'CREATE')").await?.get::<_, bool>(0);
        let ok = missing.is_empty() || (owned_all && (has.is_some() || can_create));
        let list = missing.iter().map(|t| quote_table(t)).collect::<Vec<_>>().join(", ");
        report.items.push(item(
            "publication",
            ok,
            if missing.is_empty() {
                format!("publication {name} publishes the pipeline's tables")
            } else if ok {
                format!("publication {name} will be created or extended for {list}")
            } else if has.is_none() {
                format!(
                    "user '{}' cannot create publication {name}: that needs the tables' owner and CREATE on the \
                     database. Have the owner run: CREATE PUBLICATION {} FOR TABLE {list} WITH \
                     (publish_via_partition_root = false)",
                    cfg.user,
                    quote_ident(name)
                )
            } else {
                format!(
                    "user '{}' cannot add {list} to publication {name}: that needs the tables' owner. Have the \
                     owner run: ALTER PUBLICATION {} ADD TABLE {list}",
                    cfg.user,
                    quote_ident(name)
                )
            },
        ));
    }
    Ok(report)
}

/// Opens a replication session and runs `IDENTIFY_SYSTEM`: proves `pg_hba.conf` and the password allow it.
async fn replication_session(pg: &Pg) -> CheckItem {
    let name = "replication connection";
    let attempt = async {
        let mut session = wire::Session::connect(pg).await?;
        let identified = session.simple_query("IDENTIFY_SYSTEM").await;
        session.close().await;
        identified
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(_)) => item(name, true, "the server accepts a replication session"),
        Ok(Err(e)) => {
            let e = replication::wire_error(pg.config(), e, "a replication session");
            item(name, false, format!("{}; allow it in pg_hba.conf for this user and database", e.report()))
        }
        Err(_) => item(name, false, "the server did not answer a replication session within 10 s"),
    }
}
