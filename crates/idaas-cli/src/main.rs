//! `idaas`: the iDaaS server and the command-line client of its Open API.

mod client;
mod commands;
mod output;
mod server_cmd;
mod shell;

use clap::{Parser, Subcommand};
use client::{Client, ClientError, DEFAULT_SERVER};
use commands::connection::ConnectionCommand;
use commands::pipeline::PipelineCommand;
use std::process::ExitCode;

/// iDaaS: replicate database tables in real time and serve them as data APIs.
#[derive(Debug, Parser)]
#[command(name = "idaas", version)]
struct Cli {
    /// URL of the iDaaS server the client commands talk to.
    #[arg(long, global = true, env = "IDAAS_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    server: String,
    /// Print the API's JSON answers (and errors) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the iDaaS server: pipelines, the Open API, metrics.
    Server(server_cmd::ServerArgs),
    /// Manage connections to databases.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Manage pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// The interactive shell: the brief's JavaScript syntax and catalogue commands (`help` inside).
    Shell(shell::ShellArgs),
}

/// mimalloc instead of the system allocator: the pipelines allocate and free many small values per row, often
/// on different threads, which glibc's allocator serves slowly. Built without transparent huge pages, whose
/// zeroing of 2 MB at a time cost more than it saved (see `docs/ARCHITECTURE.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            match err.downcast_ref::<ClientError>() {
                Some(client_error) if json => eprintln!("{}", client_error.to_json()),
                Some(client_error) => eprintln!("error: {client_error}"),
                None => eprintln!("error: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client_context = || -> anyhow::Result<commands::Context> {
        Ok(commands::Context { client: Client::new(&cli.server)?, json: cli.json })
    };
    match cli.command {
        Command::Server(args) => server_cmd::run(args),
        Command::Connection(command) => commands::connection::run(&client_context()?, command),
        Command::Pipeline(command) => commands::pipeline::run(&client_context()?, command),
        Command::Shell(args) => shell::run(args, &cli.server, cli.json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere_and_passwords_are_exclusive() {
        let cli =
            Cli::try_parse_from(["idaas", "connection", "list", "--json", "--server", "http://h:1"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.server, "http://h:1");
        let both = ["idaas", "connection", "create", "--alias", "a", "--host", "h", "--user", "u"];
        let args = both.iter().chain(&["--password", "x", "--password-env", "PW"]);
        assert!(Cli::try_parse_from(args).is_err());
        assert!(
            Cli::try_parse_from([
                "idaas", "pipeline", "create", "--alias", "p", "--source", "nodot", "--target", "b.t"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "idaas",
                "pipeline",
                "create",
                "--alias",
                "p",
                "--source",
                "a.t",
                "--target",
                "b.t",
                "--mode",
                "initial",
                "--ddl-policy",
                "ignore",
                "--auto-create",
                "--start"
            ])
            .is_ok()
        );
        assert!(
            Cli::try_parse_from([
                "idaas", "pipeline", "create", "--alias", "p", "--source", "a.t", "--target", "b.t",
                "--mode", "full"
            ])
            .is_err()
        );
    }
}
