//! The closed registry of connector kinds: which source and sink serve a stored connection, and which kind
//! a server speaks when the user did not say.

use idaas_connectors::mysql::{MySql, MySqlSink, MySqlSource};
use idaas_connectors::postgres::Pg;
use idaas_connectors::{ConnectionConfig, ConnectorKind};
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
pub(crate) fn source_for(c: &StoredConnection, pipeline: Option<&str>) -> Result<Arc<dyn Source>> {
    let cfg = config_of(c)?;
    match cfg.kind {
        ConnectorKind::Mysql => Ok(Arc::new(MySqlSource::new(MySql::new(cfg)?))),
        ConnectorKind::Postgres => pg_source(Pg::new(cfg)?, pipeline),
    }
}

fn pg_source(pg: Pg, pipeline: Option<&str>) -> Result<Arc<dyn Source>> {
    let _ = (pg, pipeline);
    Err(Error::new(ErrorKind::Unsupported, "PostgreSQL sources are not available in this build yet"))
}

/// A sink factory for a connection.
pub(crate) fn sink_for(c: &StoredConnection) -> Result<SinkFactory> {
    let cfg = config_of(c)?;
    match cfg.kind {
        ConnectorKind::Mysql => {
            let db = MySql::new(cfg)?;
            Ok(Arc::new(move || Box::new(MySqlSink::new(db.clone())) as Box<dyn Sink>))
        }
        ConnectorKind::Postgres => pg_sink(Pg::new(cfg)?),
    }
}

fn pg_sink(pg: Pg) -> Result<SinkFactory> {
    let _ = pg;
    Err(Error::new(ErrorKind::Unsupported, "PostgreSQL targets are not available in this build yet"))
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
