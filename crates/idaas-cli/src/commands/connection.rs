//! `idaas connection ...`: register, inspect, test and delete connections; list and describe their tables.

use super::Context;
use crate::output::{Table, fields, or_dash, timestamp};
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use idaas_core::DataType;
use idaas_engine::{ConnectionInfo, ConnectionSpec, TableRef, TableSchema};
use idaas_server::CheckResult;
use std::io::Read;
use std::process::ExitCode;

/// Connection subcommands.
#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Register a connection; the server checks that it can log in first.
    Create(CreateArgs),
    /// List the connections.
    List,
    /// Show one connection.
    Get {
        /// Connection alias.
        alias: String,
    },
    /// Delete a connection that no pipeline uses.
    Delete {
        /// Connection alias.
        alias: String,
    },
    /// Check a connection live: login, privileges, change-data-capture settings. Exits with 1 when a check
    /// fails.
    Test {
        /// Connection alias.
        alias: String,
    },
    /// List the tables a connection sees.
    Tables {
        /// Connection alias.
        alias: String,
    },
    /// Describe a table: columns, types, nullability, defaults and primary key.
    Describe {
        /// Connection alias.
        alias: String,
        /// Table name, `name` or `database.name`.
        table: String,
    },
}

/// Arguments of `connection create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Unique name of the connection.
    #[arg(long)]
    alias: String,
    /// Database kind; found by talking to the server when omitted.
    #[arg(long = "type", value_name = "TYPE", value_parser = ["mysql", "postgres"])]
    kind: Option<String>,
    /// Host name or IP address.
    #[arg(long)]
    host: String,
    /// TCP port; the kind's default when omitted.
    #[arg(long)]
    port: Option<u16>,
    /// User name.
    #[arg(long)]
    user: String,
    #[command(flatten)]
    password: PasswordArgs,
    /// Default database.
    #[arg(long)]
    database: Option<String>,
    /// Mark this connection as the one that holds the DaaS store.
    #[arg(long)]
    daas_db: bool,
}

/// Where the password comes from; at most one of these.
#[derive(Debug, Args)]
#[group(multiple = false)]
struct PasswordArgs {
    /// The password (visible to other users of this machine; prefer --password-env or --password-stdin).
    #[arg(long)]
    password: Option<String>,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Read the password from standard input (a trailing newline is dropped).
    #[arg(long)]
    password_stdin: bool,
}

impl PasswordArgs {
    fn resolve(self) -> anyhow::Result<String> {
        if let Some(password) = self.password {
            return Ok(password);
        }
        if let Some(var) = self.password_env {
            return std::env::var(&var)
                .map_err(|_| anyhow::anyhow!("environment variable {var} is not set (or not valid UTF-8)"));
        }
        if self.password_stdin {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read the password from standard input")?;
            return Ok(input.trim_end_matches(['\n', '\r']).to_owned());
        }
        Ok(String::new())
    }
}

/// Runs a connection subcommand.
pub fn run(ctx: &Context, command: ConnectionCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConnectionCommand::Create(args) => {
            let spec = ConnectionSpec {
                alias: args.alias,
                kind: args.kind,
                host: args.host,
                port: args.port,
                user: args.user,
                password: args.password.resolve()?,
                database: args.database,
                daas_db: args.daas_db,
            };
            let reply = ctx.client.post_json(&["connections"], &spec)?;
            ctx.show(&reply, |c: ConnectionInfo| {
                format!("created connection {} ({} {}:{})\n", c.alias, c.kind, c.host, c.port)
            })?;
        }
        ConnectionCommand::List => {
            let reply = ctx.client.get(&["connections"])?;
            ctx.show(&reply, |list: Vec<ConnectionInfo>| render_list(&list))?;
        }
        ConnectionCommand::Get { alias } => {
            let reply = ctx.client.get(&["connections", &alias])?;
            ctx.show(&reply, |c: ConnectionInfo| render_one(&c))?;
        }
        ConnectionCommand::Delete { alias } => {
            ctx.client.delete(&["connections", &alias])?;
            ctx.done(&format!("deleted connection {alias}"));
        }
        ConnectionCommand::Test { alias } => {
            let reply = ctx.client.post(&["connections", &alias, "test"])?;
            let result: CheckResult = reply.parse()?;
            ctx.print(&reply, || render_check(&alias, &result));
            if !result.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        ConnectionCommand::Tables { alias } => {
            let reply = ctx.client.get(&["connections", &alias, "tables"])?;
            ctx.show(&reply, |tables: Vec<TableRef>| render_tables(&tables))?;
        }
        ConnectionCommand::Describe { alias, table } => {
            if table.is_empty() {
                bail!("the table name is empty");
            }
            let reply = ctx.client.get(&["connections", &alias, "tables", &table])?;
            ctx.show(&reply, |schema: TableSchema| render_schema(&schema))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn render_list(list: &[ConnectionInfo]) -> String {
    let mut table = Table::new(&["ALIAS", "TYPE", "HOST", "PORT", "USER", "DATABASE", "DAAS", "CREATED"]);
    for c in list {
        table.row(vec![
            c.alias.clone(),
            c.kind.clone(),
            c.host.clone(),
            c.port.to_string(),
            c.user.clone(),
            or_dash(c.database.as_deref()),
            if c.daas_db { "yes" } else { "no" }.to_owned(),
            timestamp(Some(&c.created_at)),
        ]);
    }
    table.render()
}

pub(crate) fn render_one(c: &ConnectionInfo) -> String {
    fields(&[
        ("Alias", c.alias.clone()),
        ("Type", c.kind.clone()),
        ("Host", c.host.clone()),
        ("Port", c.port.to_string()),
        ("User", c.user.clone()),
        ("Database", or_dash(c.database.as_deref())),
        ("DaaS DB", if c.daas_db { "yes" } else { "no" }.to_owned()),
        ("Created", timestamp(Some(&c.created_at))),
    ])
}

pub(crate) fn render_check(alias: &str, result: &CheckResult) -> String {
    let mut out = format!("Server version: {}\n", or_dash(result.server_version.as_deref()));
    for item in &result.items {
        let verdict = if item.ok { "ok" } else { "FAIL" };
        out.push_str(&format!("{verdict:<4}  {}: {}\n", item.name, item.detail));
    }
    let failed = result.items.iter().filter(|i| !i.ok).count();
    if result.ok {
        out.push_str(&format!("connection {alias}: all checks passed\n"));
    } else {
        out.push_str(&format!("connection {alias}: {failed} check(s) failed\n"));
    }
    out
}

pub(crate) fn render_tables(tables: &[TableRef]) -> String {
    let mut table = Table::new(&["TABLE"]);
    for t in tables {
        table.row(vec![t.to_string()]);
    }
    table.render()
}

pub(crate) fn render_schema(schema: &TableSchema) -> String {
    let mut table = Table::new(&["NAME", "TYPE", "SOURCE TYPE", "NULLABLE", "DEFAULT", "KEY"]);
    for column in &schema.columns {
        let key = match schema.primary_key.iter().position(|k| *k == column.name) {
            None => String::new(),
            Some(_) if schema.primary_key.len() == 1 => "PK".to_owned(),
            Some(i) => format!("PK {}", i + 1),
        };
        table.row(vec![
            column.name.clone(),
            type_label(&column.data_type),
            column.source_type.clone(),
            if column.nullable { "yes" } else { "no" }.to_owned(),
            or_dash(column.default.as_deref()),
            key,
        ]);
    }
    format!("Table: {}\n{}", schema.table, table.render())
}

/// A short name of a portable type: `uint64`, `decimal(12,2)`, `varchar(255)`, `timestamp(3)`.
fn type_label(data_type: &DataType) -> String {
    let with_fsp = |name: &str, fsp: u8| if fsp > 0 { format!("{name}({fsp})") } else { name.to_owned() };
    match data_type {
        DataType::Bool => "bool".into(),
        DataType::Int { bytes, unsigned } => {
            format!("{}int{}", if *unsigned { "u" } else { "" }, u32::from(*bytes) * 8)
        }
        DataType::Decimal { precision, scale, unsigned } => {
            format!("decimal({precision},{scale}){}", if *unsigned { " unsigned" } else { "" })
        }
        DataType::Float => "float".into(),
        DataType::Double => "double".into(),
        DataType::Char { length, .. } => format!("char({length})"),
        DataType::Varchar { length, .. } => format!("varchar({length})"),
        DataType::Text { .. } => "text".into(),
        DataType::Binary { length } => format!("binary({length})"),
        DataType::Varbinary { length } => format!("varbinary({length})"),
        DataType::Blob { .. } => "blob".into(),
        DataType::Date => "date".into(),
        DataType::Time { fsp } => with_fsp("time", *fsp),
        DataType::DateTime { fsp } => with_fsp("datetime", *fsp),
        DataType::Timestamp { fsp } => with_fsp("timestamp", *fsp),
        DataType::Year => "year".into(),
        DataType::Enum { .. } => "enum".into(),
        DataType::Set { .. } => "set".into(),
        DataType::Bit { bits } => format!("bit({bits})"),
        DataType::Json => "json".into(),
        DataType::Uuid => "uuid".into(),
        DataType::Other { name } => format!("other({name})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idaas_core::{Charset, CheckItem, ColumnSchema};

    #[test]
    fn describe_prints_columns_with_their_key_positions() {
        let column =
            |name: &str, data_type: DataType, source_type: &str, nullable: bool, default: Option<&str>| {
                ColumnSchema {
                    name: name.into(),
                    data_type,
                    source_type: source_type.into(),
                    nullable,
                    default: default.map(Into::into),
                    collation: None,
                }
            };
        let schema = TableSchema {
            table: TableRef::new("crm", "Customer"),
            columns: vec![
                column("id", DataType::Int { bytes: 8, unsigned: true }, "bigint unsigned", false, None),
                column(
                    "region",
                    DataType::Char { length: 2, charset: Charset::Utf8 },
                    "char(2)",
                    false,
                    None,
                ),
                column(
                    "balance",
                    DataType::Decimal { precision: 12, scale: 2, unsigned: false },
                    "decimal(12,2)",
                    true,
                    Some("0.00"),
                ),
                column(
                    "seen",
                    DataType::Timestamp { fsp: 3 },
                    "timestamp(3)",
                    true,
                    Some("CURRENT_TIMESTAMP(3)"),
                ),
            ],
            primary_key: vec!["region".into(), "id".into()],
            version: 1,
        };
        assert_eq!(
            render_schema(&schema),
            "\
Table: crm.Customer
NAME     TYPE           SOURCE TYPE      NULLABLE  DEFAULT               KEY
id       uint64         bigint unsigned  no        -                     PK 2
region   char(2)        char(2)          no        -                     PK 1
balance  decimal(12,2)  decimal(12,2)    yes       0.00
seen     timestamp(3)   timestamp(3)     yes       CURRENT_TIMESTAMP(3)
"
        );
    }

    #[test]
    fn test_output_marks_failures() {
        let result = CheckResult {
            ok: false,
            server_version: Some("10.11.6-MariaDB".into()),
            items: vec![
                CheckItem { name: "login".into(), ok: true, detail: "logged in as demo".into() },
                CheckItem {
                    name: "binlog_format".into(),
                    ok: false,
                    detail: "is STATEMENT; set it to ROW".into(),
                },
            ],
        };
        assert_eq!(
            render_check("crm", &result),
            "\
Server version: 10.11.6-MariaDB
ok    login: logged in as demo
FAIL  binlog_format: is STATEMENT; set it to ROW
connection crm: 1 check(s) failed
"
        );
    }

    #[test]
    fn lists_are_aligned() {
        let info = ConnectionInfo {
            alias: "mysql_crm_db".into(),
            kind: "mysql".into(),
            host: "demodb.tapdata.net".into(),
            port: 3306,
            user: "demo".into(),
            database: Some("crm".into()),
            daas_db: false,
            created_at: "2022-02-01T15:00:03.203Z".into(),
        };
        let pg = ConnectionInfo {
            alias: "pg".into(),
            kind: "postgres".into(),
            database: None,
            daas_db: true,
            ..info.clone()
        };
        assert_eq!(
            render_list(&[info, pg]),
            "\
ALIAS         TYPE      HOST                PORT  USER  DATABASE  DAAS  CREATED
mysql_crm_db  mysql     demodb.tapdata.net  3306  demo  crm       no    2022.02.01 15:00:03.203
pg            postgres  demodb.tapdata.net  3306  demo  -         yes   2022.02.01 15:00:03.203
"
        );
    }
}
