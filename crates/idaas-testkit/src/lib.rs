//! Hermetic private database servers for iDaaS tests and benchmarks.
//!
//! [`MariaDb`] and [`Postgres`] start a real server from the installed Debian packages
//! (`mariadb-server`, `postgresql`) in a temporary directory, on a free port on 127.0.0.1, and
//! never touch a system instance or `/etc` configuration. They can be stopped, killed (SIGKILL,
//! a realistic crash) and restarted on the same port and data for fault tests. Dropping one kills
//! the server and deletes its files; a server also dies with the test process.
//!
//! The first start on a machine prepares a template (`mariadb-install-db`, `initdb`) under
//! `$TMPDIR/idaas-testkit-cache-UID/`; later starts copy it, so a start takes well under a second.
//!
//! ```no_run
//! use idaas_testkit::{MariaDb, Postgres};
//!
//! let mariadb = MariaDb::start()?;
//! assert_eq!(mariadb.sql("SELECT @@binlog_format")?, "ROW\n");
//! let url = mariadb.url_db("shop"); // mysql://root:testkit-root@127.0.0.1:PORT/shop
//!
//! let pg = Postgres::start()?;
//! assert_eq!(pg.sql("SHOW wal_level")?, "logical\n");
//! let url = pg.url(); // postgres://postgres:testkit-pg@127.0.0.1:PORT/postgres
//! # Ok::<(), idaas_testkit::Error>(())
//! ```
//!
//! Missing packages are reported as [`Error::MissingBinary`]; `scripts/setup.sh` installs them.
//!
//! Environment knobs: `IDAAS_TESTKIT_START_TIMEOUT_SECS` (default 30),
//! `IDAAS_TESTKIT_STOP_TIMEOUT_SECS` (default 60) and `IDAAS_TESTKIT_PG_BINDIR` (default: the
//! newest `/usr/lib/postgresql/N/bin`).
#![deny(rustdoc::broken_intra_doc_links)]
#![warn(missing_docs)]

pub mod crm;
mod error;
mod mariadb;
mod postgres;
mod util;

pub use error::Error;
pub use mariadb::{MariaDb, MariaDbOptions};
pub use postgres::{Postgres, PostgresOptions};
pub use util::free_port;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<MariaDb>();
        check::<Postgres>();
        check::<Error>();
        check::<MariaDbOptions>();
        check::<PostgresOptions>();
    }
}
