//! Engine scenarios against private MariaDB servers.

mod binlog;
mod common;
mod ddl;
mod directions;
mod scenario;
