//! # PostgreSQL
//!
//! Source: schema discovery from the catalogs ([`schema`]), an initial load from the snapshot the
//! replication slot exports ([`snapshot`]), and logical replication with `pgoutput` ([`replication`],
//! decoded by [`pgoutput`]); values are converted with full fidelity ([`types`]).
//! Sink: AutoCreate, the initial load through binary `COPY`, CDC as batched upserts (`MERGE` or `INSERT ...
//! ON CONFLICT`) and deletes inside transactions ([`sink`], [`ddl`], [`encode`]).
//!
//! # Errors
//! Server errors are classified once in [`classify`]: lost connections are transient
//! ([`ErrorKind::Unreachable`]); wrong credentials, missing privileges and server settings are definite and
//! say what to change.

pub mod ddl;
pub mod encode;
pub mod pgoutput;
pub mod replication;
pub mod schema;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod types;
pub mod wire;

use crate::config::ConnectionConfig;
use idaas_core::{Error, ErrorKind, Result, TableRef};
use secrecy::ExposeSecret;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

pub use sink::PgSink;

/// A PostgreSQL server reached through one connection's settings.
#[derive(Clone)]
pub struct Pg {
    cfg: ConnectionConfig,
}

impl Pg {
    /// Validates the settings (no I/O).
    pub fn new(cfg: ConnectionConfig) -> Result<Pg> {
        cfg.validate()?;
        Ok(Pg { cfg })
    }

    /// The settings.
    pub fn config(&self) -> &ConnectionConfig {
        &self.cfg
    }

    /// The database to connect to: the connection's, or `postgres`.
    pub fn database(&self) -> &str {
        self.cfg.database.as_deref().unwrap_or("postgres")
    }

    /// The driver configuration (no TLS yet; the server is local or on a trusted network).
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.cfg.host)
            .port(self.cfg.port)
            .user(&self.cfg.user)
            .password(self.cfg.password.expose_secret())
            .dbname(self.database())
            .application_name("idaas")
            .connect_timeout(Duration::from_secs(10));
        c
    }

    /// Opens a connection (its driver task runs on the current runtime) with UTC sessions.
    pub async fn connect(&self) -> Result<Client> {
        let (client, connection) =
            self.pg_config().connect(NoTls).await.map_err(|e| classify(&self.cfg, e, "connect"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        client
            .batch_execute("SET TIME ZONE 'UTC'; SET client_encoding = 'UTF8'; SET extra_float_digits = 3")
            .await
            .map_err(|e| classify(&self.cfg, e, "session setup"))?;
        Ok(client)
    }
}

/// Maps a driver error to an [`Error`] a user can act on. `what` names the operation (never values).
pub fn classify(cfg: &ConnectionConfig, e: tokio_postgres::Error, what: &str) -> Error {
    let who = format!("connection '{}' ({}:{})", cfg.alias, cfg.host, cfg.port);
    let what = what.chars().take(120).collect::<String>();
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let (kind, msg) = match code {
            "28P01" | "28000" => (
                ErrorKind::AuthFailed,
                format!(
                    "{who}: password authentication failed for user '{}'; check the user name and password",
                    cfg.user
                ),
            ),
            "3D000" => (ErrorKind::NotFound, format!("{who}: {}", db.message())),
            "42P01" | "42704" => (ErrorKind::NotFound, format!("{who}: {} during {what}", db.message())),
            "42501" => (
                ErrorKind::PermissionDenied,
                format!("{who}: user '{}' lacks a privilege for {what}: {}", cfg.user, db.message()),
            ),
            "55000" | "0A000" => (ErrorKind::SourceConfig, format!("{who}: {} during {what}", db.message())),
            "53300" | "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "08000" | "08003" | "08006" => {
                (ErrorKind::Unreachable, format!("{who}: {} during {what}", db.message()))
            }
            _ => (ErrorKind::Internal, format!("{who}: server error {code} during {what}: {}", db.message())),
        };
        return Error::with_cause(kind, msg, e);
    }
    if e.is_closed() || e.to_string().contains("connect") || e.to_string().contains("timed out") {
        return Error::with_cause(
            ErrorKind::Unreachable,
            format!(
                "{who}: cannot reach the server or the connection was lost; check that it runs and listens"
            ),
            e,
        );
    }
    Error::with_cause(ErrorKind::Internal, format!("{who}: failure during {what}"), e)
}

/// Quotes an identifier with double quotes.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn quote_table(t: &TableRef) -> String {
    format!("{}.{}", quote_ident(&t.namespace), quote_ident(&t.name))
}

/// Quotes a string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
