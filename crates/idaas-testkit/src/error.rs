//! The error type of the testkit.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting, stopping or querying a private database server.
///
/// The messages are meant to be read by a human looking at a failed test: they name the missing
/// package, or quote the last lines of the server's log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A server or client binary is not installed.
    #[error("`{binary}` not found: install Debian package {package}, or run scripts/setup.sh")]
    MissingBinary {
        /// The program that was looked for, e.g. `mariadbd`.
        binary: String,
        /// The Debian package that provides it.
        package: String,
    },

    /// The OS user that must own a PostgreSQL cluster when the caller is root does not exist.
    #[error(
        "OS user `{user}` not found; PostgreSQL refuses to run as root, so the testkit runs it as `{user}`: \
         install Debian package postgresql, or run scripts/setup.sh"
    )]
    MissingUser {
        /// The user name that was looked up.
        user: String,
    },

    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A helper program (`mariadb-install-db`, `initdb`, ...) failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line, for the reader.
        command: String,
        /// How it ended.
        status: String,
        /// What it printed (stdout and stderr).
        output: String,
    },

    /// The server process exited while the testkit waited for it to accept connections.
    #[error("{server} exited during startup ({status}); last lines of {}:\n{log_tail}", log.display())]
    StartupFailed {
        /// Which server, e.g. `MariaDB on port 23456`.
        server: String,
        /// How the process ended.
        status: String,
        /// The server's log file.
        log: PathBuf,
        /// The last lines of the log file.
        log_tail: String,
    },

    /// The server did not accept connections in time.
    #[error(
        "{server} did not become ready within {} s; last lines of {}:\n{log_tail}",
        timeout.as_secs(),
        log.display()
    )]
    StartupTimeout {
        /// Which server, e.g. `PostgreSQL on port 23456`.
        server: String,
        /// How long the testkit waited.
        timeout: Duration,
        /// The server's log file.
        log: PathBuf,
        /// The last lines of the log file.
        log_tail: String,
    },

    /// A clean shutdown did not finish in time; the process was killed instead.
    #[error("{server} did not shut down within {} s and was killed", timeout.as_secs())]
    ShutdownTimeout {
        /// Which server.
        server: String,
        /// How long the testkit waited.
        timeout: Duration,
    },

    /// The operation needs a running server.
    #[error("{server} is not running")]
    NotRunning {
        /// Which server.
        server: String,
    },

    /// SQL run through the command line client failed.
    #[error("SQL failed on {server}: {}", stderr.trim_end())]
    Sql {
        /// Which server.
        server: String,
        /// What the client printed on stderr (the server's error message).
        stderr: String,
        /// What the client printed on stdout before the failure.
        stdout: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// Adds context to [`io::Result`]s.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::io(context(), e))
    }
}
