//! `idaas server`: open the engine on the data directory and serve the Open API until SIGINT or SIGTERM.

use anyhow::Context as _;
use clap::Args;
use idaas_engine::Engine;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Arguments of `idaas server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "IDAAS_LISTEN", default_value = "127.0.0.1:3030", value_name = "ADDR")]
    listen: String,
    /// Directory of the metadata store; created when missing.
    #[arg(long, env = "IDAAS_DATA_DIR", default_value = "./idaas-data", value_name = "DIR")]
    data_dir: PathBuf,
}

/// Runs the server in a new Tokio runtime until a shutdown signal.
pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    init_logging()?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start Tokio")?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr, filtered by `IDAAS_LOG` (default `info`).
fn init_logging() -> anyhow::Result<()> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .with_env_var("IDAAS_LOG")
        .from_env()
        .context("invalid IDAAS_LOG filter")?;
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    Ok(())
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    // Bind before opening the data directory: a second server on the same address stops here, before it
    // resumes any pipeline.
    let listener = TcpListener::bind(&args.listen).await.map_err(|e| bind_error(&args.listen, e))?;
    let addr = listener.local_addr().context("cannot read the listening address")?;
    let engine = Engine::open(&args.data_dir)
        .await
        .with_context(|| format!("cannot open the data directory {}", args.data_dir.display()))?;

    println!("idaas server listening on http://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "server started");

    let served = idaas_server::serve(listener, engine.clone(), shutdown_signal()).await;
    tracing::info!("stopping pipelines");
    engine.shutdown().await;
    served.context("the HTTP server failed")?;
    tracing::info!("server stopped");
    Ok(())
}

fn bind_error(listen: &str, err: std::io::Error) -> anyhow::Error {
    match err.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "cannot listen on {listen}: the address is already in use (is another idaas server running?); \
             stop it or pass --listen with a free address"
        ),
        _ => anyhow::Error::new(err).context(format!("cannot listen on {listen}")),
    }
}

/// Completes on the first SIGINT or SIGTERM. A second one ends the process at once, for a shutdown that
/// hangs; checkpoints are durable, so the pipelines resume from them on the next start.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutting down; send the signal again to exit at once");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without a clean shutdown");
        std::process::exit(130);
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for signals; falling back to Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_gives_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = TcpListener::bind(&addr).await.map_err(|e| bind_error(&addr, e)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot listen on {addr}: the address is already in use (is another idaas server running?); \
                 stop it or pass --listen with a free address"
            )
        );
    }
}
