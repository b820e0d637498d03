//! Engine scenarios against private MariaDB servers.

mod common;
mod ddl;
mod scenario;
