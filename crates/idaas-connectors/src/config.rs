//! Connection settings and their validation.

use idaas_core::{Error, ErrorKind, Result};
use secrecy::SecretString;

/// The database family of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// MySQL or MariaDB.
    Mysql,
    /// PostgreSQL.
    Postgres,
}

impl ConnectorKind {
    /// Parses `mysql`, `mariadb`, `postgres` or `postgresql`.
    pub fn parse(s: &str) -> Result<ConnectorKind> {
        match s.to_ascii_lowercase().as_str() {
            "mysql" | "mariadb" => Ok(ConnectorKind::Mysql),
            "postgres" | "postgresql" | "pg" => Ok(ConnectorKind::Postgres),
            other => Err(Error::invalid(format!(
                "unknown connection type '{other}'; use \"mysql\" (MySQL or MariaDB) or \"postgres\""
            ))),
        }
    }

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Mysql => "mysql",
            ConnectorKind::Postgres => "postgres",
        }
    }

    /// The family's default port.
    pub fn default_port(self) -> u16 {
        match self {
            ConnectorKind::Mysql => 3306,
            ConnectorKind::Postgres => 5432,
        }
    }
}

/// A connection's settings.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// The connection's alias (for messages and event sources).
    pub alias: String,
    /// Family.
    pub kind: ConnectorKind,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: SecretString,
    /// Default database.
    pub database: Option<String>,
}

impl ConnectionConfig {
    /// Checks the settings without I/O; reports every bad field in one error.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if !valid_name(&self.alias) {
            problems.push(format!(
                "alias '{}' must start with a letter or '_' and hold only letters, digits and '_' (at most 64)",
                self.alias
            ));
        }
        if self.host.trim().is_empty() {
            problems.push("host is empty; give the database server's host name or IP address".to_string());
        }
        if self.port == 0 {
            problems.push("port 0 is not a valid TCP port".to_string());
        }
        if self.user.trim().is_empty() {
            problems.push("user is empty".to_string());
        }
        if let Some(db) = &self.database
            && (db.is_empty() || db.len() > 64)
        {
            problems.push(format!("database name '{db}' must be 1 to 64 characters"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                format!("connection '{}': {}", self.alias, problems.join("; ")),
            ))
        }
    }
}

/// True for a name usable as an alias: a letter or `_` first, then letters, digits and `_`.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_reports_every_bad_field() {
        let c = ConnectionConfig {
            alias: "1bad name".into(),
            kind: ConnectorKind::Mysql,
            host: " ".into(),
            port: 0,
            user: "".into(),
            password: SecretString::from("pw".to_string()),
            database: None,
        };
        let e = c.validate().unwrap_err();
        for word in ["alias", "host", "port", "user"] {
            assert!(e.message.contains(word), "{}", e.message);
        }
        assert!(!e.message.contains("pw"));
    }

    #[test]
    fn kinds_parse() {
        assert_eq!(ConnectorKind::parse("MariaDB").unwrap(), ConnectorKind::Mysql);
        assert!(ConnectorKind::parse("oracle").unwrap_err().message.contains("mysql"));
    }
}
