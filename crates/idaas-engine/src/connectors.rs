//! The closed registry of connector kinds: which source and sink serve a stored connection, and which kind
//! a server speaks when the user did not say.

use idaas_connectors::mysql::{MySql, MySqlSink, MySqlSource};
use idaas_connectors::postgres::source::PgSource;
use idaas_connectors::postgres::{Pg, PgSink};
use idaas_connectors::{ConnectionConfig, ConnectorKind};
use idaas_core::TableRef;
use idaas_core::{Error, ErrorKind, Result, Sink, Source};
use idaas_store::StoredConnection;
use std::sync::Arc;
use std::time::Duration;

/// Builds a sink on demand (one per pipeline run).
pub type SinkFactory = Arc<dyn Fn() -> Box<dyn Sink> + Send + Sync>;

pub(crate) fn config_of(c: &StoredConnection) -> Result<ConnectionConfig> {
    Ok(ConnectionConfig {
        alias: c.alias.clone(),
        kind: ConnectorKind::parse(&c.kind)?,
        host: c.host.clone(),
        port: c.port,
        user: c.user.clone(),
        password: c.password.clone(),
        database: c.database.clone(),
    })
}

/// The source for a connection; `pipeline` names the pipeline that owns server-side objects (PostgreSQL's
/// slot and publication), `None` for catalogue requests.
/// `table` is the pipeline's source table, so checks report on it.
pub(crate) fn source_for(
    c: &StoredConnection,
    pipeline: Option<&str>,
    table: Option<&TableRef>,
) -> Result<Arc<dyn Source>> {
    let cfg = config_of(c)?;
    match cfg.kind {
        ConnectorKind::Mysql => Ok(Arc::new(MySqlSource::new(MySql::new(cfg)?))),
        ConnectorKind::Postgres => {
            let pg = Pg::new(cfg)?;
            let source = match pipeline {
                Some(p) => PgSource::new(pg, p),
                None => PgSource::catalogue(pg),
            };
            Ok(Arc::new(source.with_tables(table.cloned())))
        }
    }
}

/// The resolution of a source's commit timestamps, in milliseconds (MySQL binlogs stamp whole seconds).
pub(crate) fn commit_resolution_ms(c: &StoredConnection) -> i64 {
    match ConnectorKind::parse(&c.kind) {
        Ok(ConnectorKind::Postgres) => 1,
        _ => 1000,
    }
}

/// A sink factory for a connection.
pub(crate) fn sink_for(c: &StoredConnection) -> Result<SinkFactory> {
    let cfg = config_of(c)?;
    match cfg.kind {
        ConnectorKind::Mysql => {
            let db = MySql::new(cfg)?;
            Ok(Arc::new(move || Box::new(MySqlSink::new(db.clone())) as Box<dyn Sink>))
        }
        ConnectorKind::Postgres => {
            let pg = Pg::new(cfg)?;
            Ok(Arc::new(move || Box::new(PgSink::new(pg.clone())) as Box<dyn Sink>))
        }
    }
}

/// Finds which protocol a server speaks: a MySQL/MariaDB server greets first, a PostgreSQL server waits for
/// the client. Errors with [`ErrorKind::Unreachable`] when nothing accepts the connection.
pub(crate) async fn detect_kind(alias: &str, host: &str, port: u16) -> Result<ConnectorKind> {
    let unreachable = |why: String| {
        Error::new(
            ErrorKind::Unreachable,
            format!("connection '{alias}' ({host}:{port}): {why}; check the host, port and firewall"),
        )
    };
    let connect = tokio::net::TcpStream::connect((host, port));
    let mut stream = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(unreachable(format!("cannot reach the server ({e})"))),
        Err(_) => return Err(unreachable("the server did not answer within 10 s".into())),
    };
    let mut byte = [0u8; 1];
    let read = tokio::io::AsyncReadExt::read(&mut stream, &mut byte);
    match tokio::time::timeout(Duration::from_millis(700), read).await {
        Ok(Ok(n)) if n > 0 => Ok(ConnectorKind::Mysql),
        Ok(_) => Err(unreachable("the server closed the connection without a greeting".into())),
        Err(_) => Ok(ConnectorKind::Postgres),
    }
}

/// Logs in once to prove the settings work (nothing is saved yet).
pub(crate) async fn login(cfg: &ConnectionConfig) -> Result<()> {
    match cfg.kind {
        ConnectorKind::Mysql => {
            let conn = MySql::new(cfg.clone())?.connect().await?;
            drop(conn);
        }
        ConnectorKind::Postgres => {
            let client = Pg::new(cfg.clone())?.connect().await?;
            drop(client);
        }
    }
    Ok(())
}
