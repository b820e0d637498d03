//! End-to-end tests of the `idaas` binary: a real server process, the CLI and the Open API, against private
//! MariaDB servers.

mod bad_input;
mod common;
mod faults;
mod pg_faults;
mod scenario_a;
mod shell;
