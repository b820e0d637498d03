//! # MySQL / MariaDB
//!
//! Source: schema discovery from `information_schema` ([`schema`]), a consistent snapshot matched to its
//! binlog position and read in primary-key chunks ([`snapshot`]), and binlog streaming with file/position and
//! GTIDs across rotations ([`replication`]); values are decoded with full fidelity ([`types`]).
//! Sink: AutoCreate, batched idempotent upserts and deletes inside transactions ([`sink`]).
//!
//! # Errors
//! Server errors are classified once in [`classify`]: lost connections are transient
//! ([`ErrorKind::Unreachable`]); wrong credentials, missing privileges and server settings are definite and
//! say what to change.

pub mod browse;
pub mod replication;
pub mod schema;
pub mod sink;
pub mod snapshot;
pub mod types;

use crate::config::ConnectionConfig;
use async_trait::async_trait;
use idaas_core::{
    ChangeStream, CheckItem, CheckReport, Error, ErrorKind, Position, Result, SnapshotReader, Source,
    TableRef, TableSchema,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use secrecy::ExposeSecret;
use std::time::Duration;

pub use sink::MySqlSink;

/// Session settings of every connection we open: UTC for `TIMESTAMP`, Unicode text, strict mode so the
/// server refuses instead of truncating, zero dates allowed, and explicit `0` kept in auto-increment columns.
const SESSION_INIT: &[&str] = &[
    "SET time_zone = '+00:00'",
    "SET NAMES utf8mb4",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
];

/// A MySQL or MariaDB server reached through one connection's settings.
#[derive(Clone)]
pub struct MySql {
    cfg: ConnectionConfig,
    server_id: u32,
}

impl MySql {
    /// Validates the settings (no I/O).
    pub fn new(cfg: ConnectionConfig) -> Result<MySql> {
        cfg.validate()?;
        // A replica id derived from the alias: stable across restarts, unlikely to clash with real replicas.
        let mut h: u32 = 2_166_136_261;
        for b in cfg.alias.bytes() {
            h = (h ^ b as u32).wrapping_mul(16_777_619);
        }
        Ok(MySql { cfg, server_id: 1_000_000 + (h % 1_000_000_000) })
    }

    /// The settings.
    pub fn config(&self) -> &ConnectionConfig {
        &self.cfg
    }

    fn opts(&self, database: Option<&str>) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.cfg.host.clone())
            .tcp_port(self.cfg.port)
            .user(Some(self.cfg.user.clone()))
            .pass(Some(self.cfg.password.expose_secret().to_string()))
            .db_name(database.map(str::to_string))
            .prefer_socket(false)
            .tcp_nodelay(true)
            .stmt_cache_size(64)
            .init(SESSION_INIT.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .into()
    }

    /// Opens a connection with the session settings applied.
    pub async fn connect(&self) -> Result<Conn> {
        let fut = Conn::new(self.opts(None));
        match tokio::time::timeout(Duration::from_secs(10), fut).await {
            Ok(r) => r.map_err(|e| classify(&self.cfg, e, "connect")),
            Err(_) => Err(Error::new(
                ErrorKind::Unreachable,
                format!(
                    "connection '{}': {}:{} did not answer within 10 s; check the host, port and firewall",
                    self.cfg.alias, self.cfg.host, self.cfg.port
                ),
            )),
        }
    }

    /// Runs a query and maps its error.
    pub(crate) async fn query<T: mysql_async::prelude::FromRow + Send + 'static>(
        &self,
        conn: &mut Conn,
        sql: &str,
    ) -> Result<Vec<T>> {
        conn.query(sql).await.map_err(|e| classify(&self.cfg, e, sql))
    }

    fn replication_server_id(&self) -> u32 {
        self.server_id
    }
}

/// Maps a driver error to an [`Error`] a user can act on. `what` names the operation (never values).
pub fn classify(cfg: &ConnectionConfig, e: mysql_async::Error, what: &str) -> Error {
    let who = format!("connection '{}' ({}:{})", cfg.alias, cfg.host, cfg.port);
    let what = what.chars().take(120).collect::<String>();
    match &e {
        mysql_async::Error::Server(se) => {
            let (kind, msg) = match se.code {
                1045 => (
                    ErrorKind::AuthFailed,
                    format!("{who}: access denied for user '{}'; check the user name and password", cfg.user),
                ),
                1044 | 1142 | 1143 | 1227 | 1370 => (
                    ErrorKind::PermissionDenied,
                    format!("{who}: user '{}' lacks a privilege for this: {}", cfg.user, se.message),
                ),
                1049 => (ErrorKind::NotFound, format!("{who}: {}", se.message)),
                1146 => (ErrorKind::NotFound, format!("{who}: {}", se.message)),
                1236 => (
                    ErrorKind::PositionLost,
                    format!(
                        "{who}: the binlog no longer holds the position to resume from ({}); the pipeline must \
                         be recreated to reload the table",
                        se.message
                    ),
                ),
                // Server shutting down, killed connection, lock wait / deadlock: try again.
                1053 | 1077 | 1078 | 1079 | 1080 | 1152 | 1158 | 1159 | 1160 | 1161 | 1205 | 1213 | 2006
                | 2013 | 1927 | 4031 => {
                    (ErrorKind::Unreachable, format!("{who}: {} during {what}", se.message))
                }
                _ => (
                    ErrorKind::Internal,
                    format!("{who}: server error {} during {what}: {}", se.code, se.message),
                ),
            };
            Error::with_cause(kind, msg, e)
        }
        mysql_async::Error::Io(_) => Error::with_cause(
            ErrorKind::Unreachable,
            format!(
                "{who}: cannot reach the server or the connection was lost; check that it runs and listens"
            ),
            e,
        ),
        mysql_async::Error::Driver(_) => {
            Error::with_cause(ErrorKind::Unreachable, format!("{who}: protocol failure during {what}"), e)
        }
        _ => Error::with_cause(ErrorKind::Internal, format!("{who}: failure during {what}"), e),
    }
}

/// The MySQL/MariaDB CDC source.
#[derive(Clone)]
pub struct MySqlSource {
    db: MySql,
}

impl MySqlSource {
    /// A source over `db`.
    pub fn new(db: MySql) -> MySqlSource {
        MySqlSource { db }
    }

    /// The server.
    pub fn server(&self) -> &MySql {
        &self.db
    }
}

#[async_trait]
impl Source for MySqlSource {
    async fn check(&self) -> Result<CheckReport> {
        check_source(&self.db).await
    }

    async fn list_tables(&self) -> Result<Vec<TableRef>> {
        schema::list_tables(&self.db).await
    }

    async fn describe(&self, table: &TableRef) -> Result<TableSchema> {
        let mut conn = self.db.connect().await?;
        let r = schema::describe(&self.db, &mut conn, table).await;
        let _ = conn.disconnect().await;
        r
    }

    async fn estimate_rows(&self, table: &TableRef) -> Result<u64> {
        let mut conn = self.db.connect().await?;
        let sql = format!(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            schema::quote_str(&table.namespace),
            schema::quote_str(&table.name)
        );
        let rows: Vec<Option<u64>> = self.db.query(&mut conn, &sql).await?;
        let _ = conn.disconnect().await;
        Ok(rows.into_iter().next().flatten().unwrap_or(0))
    }

    async fn current_position(&self) -> Result<Position> {
        replication::current_position(&self.db).await
    }

    async fn snapshot(&self) -> Result<Box<dyn SnapshotReader>> {
        Ok(Box::new(snapshot::MySqlSnapshot::open(&self.db).await?))
    }

    async fn stream(&self, from: &Position, tables: &[TableSchema]) -> Result<ChangeStream> {
        replication::stream(self.db.clone(), from.clone(), tables.to_vec()).await
    }
}

/// Checks everything a CDC source needs; every problem is one finding with its fix.
pub async fn check_source(db: &MySql) -> Result<CheckReport> {
    let mut conn = db.connect().await?;
    let mut report = CheckReport::default();
    let version: Vec<String> = db.query(&mut conn, "SELECT VERSION()").await?;
    report.server_version = version.into_iter().next();
    let mariadb =
        report.server_version.as_deref().is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"));
    report.items.push(CheckItem {
        name: "server".into(),
        ok: mariadb,
        detail: if mariadb {
            "MariaDB server".into()
        } else {
            format!(
                "server {} is not MariaDB: change data capture needs MariaDB 10.x (its consistent-snapshot \
                 binlog position and GTID functions); MySQL sources are not supported yet",
                report.server_version.as_deref().unwrap_or("?")
            )
        },
    });
    let vars: Vec<(String, String)> = db
        .query(
            &mut conn,
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES \
             WHERE VARIABLE_NAME IN ('LOG_BIN', 'BINLOG_FORMAT', 'BINLOG_ROW_IMAGE')",
        )
        .await
        .or_else(|_| Ok::<_, Error>(Vec::new()))?;
    let vars: Vec<(String, String)> = if vars.is_empty() {
        let mut out = Vec::new();
        for v in ["log_bin", "binlog_format", "binlog_row_image"] {
            let r: Vec<(String, String)> =
                db.query(&mut conn, &format!("SHOW GLOBAL VARIABLES LIKE '{v}'")).await?;
            out.extend(r);
        }
        out
    } else {
        vars
    };
    let get = |name: &str| {
        vars.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_ascii_uppercase())
    };
    let log_bin = get("log_bin").unwrap_or_default();
    report.items.push(CheckItem {
        name: "log_bin".into(),
        ok: log_bin == "ON" || log_bin == "1",
        detail: if log_bin == "ON" || log_bin == "1" {
            "binary log is on".into()
        } else {
            "binary log is off (log_bin=OFF): start the server with --log-bin (and --server-id) to capture changes"
                .into()
        },
    });
    let format = get("binlog_format").unwrap_or_default();
    report.items.push(CheckItem {
        name: "binlog_format".into(),
        ok: format == "ROW",
        detail: if format == "ROW" {
            "binlog_format is ROW".into()
        } else {
            format!("binlog_format is {format}, must be ROW: SET GLOBAL binlog_format = 'ROW' (and in the server config)")
        },
    });
    let image = get("binlog_row_image").unwrap_or_default();
    report.items.push(CheckItem {
        name: "binlog_row_image".into(),
        ok: image == "FULL",
        detail: if image == "FULL" {
            "binlog_row_image is FULL".into()
        } else {
            format!(
                "binlog_row_image is {image}, must be FULL: SET GLOBAL binlog_row_image = 'FULL' (and in the server config)"
            )
        },
    });
    let grants: Vec<String> = db.query(&mut conn, "SHOW GRANTS FOR CURRENT_USER()").await?;
    let privs = schema::parse_grants(&grants, db.config().database.as_deref());
    for (name, ok) in [
        ("REPLICATION SLAVE", privs.replication_slave),
        ("REPLICATION CLIENT", privs.replication_client),
        ("SELECT", privs.select),
    ] {
        report.items.push(CheckItem {
            name: format!("privilege {name}"),
            ok,
            detail: if ok {
                format!("user has {name}")
            } else {
                format!(
                    "user '{}' lacks the {name} privilege: GRANT {name} ON {} TO '{}'@'%'",
                    db.config().user,
                    if name == "SELECT" {
                        format!("{}.*", db.config().database.as_deref().unwrap_or("*"))
                    } else {
                        "*.*".to_string()
                    },
                    db.config().user
                )
            },
        });
    }
    let _ = conn.disconnect().await;
    Ok(report)
}

/// Checks what a sink needs: the server answers and the user can create and write tables in the database.
pub async fn check_sink(db: &MySql) -> Result<CheckReport> {
    let mut conn = db.connect().await?;
    let mut report = CheckReport::default();
    let version: Vec<String> = db.query(&mut conn, "SELECT VERSION()").await?;
    report.server_version = version.into_iter().next();
    let grants: Vec<String> = db.query(&mut conn, "SHOW GRANTS FOR CURRENT_USER()").await?;
    let privs = schema::parse_grants(&grants, db.config().database.as_deref());
    report.items.push(CheckItem {
        name: "privilege write".into(),
        ok: privs.write,
        detail: if privs.write {
            "user can create, insert, update and delete".into()
        } else {
            format!(
                "user '{}' needs CREATE, ALTER, INSERT, UPDATE, DELETE on the target database",
                db.config().user
            )
        },
    });
    let _ = conn.disconnect().await;
    Ok(report)
}

/// Quotes an identifier with backticks.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `db`.`table`.
pub fn quote_table(t: &TableRef) -> String {
    format!("{}.{}", quote_ident(&t.namespace), quote_ident(&t.name))
}
