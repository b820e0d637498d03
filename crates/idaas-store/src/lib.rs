//! # Metadata store
//!
//! The server's catalogue lives in `metadata.db`, a SQLite database (WAL mode) in the data directory:
//! connections, pipelines and their checkpoints. Passwords are encrypted at rest with XChaCha20-Poly1305
//! under a key kept in `secret.key` (mode 0600) beside it; they leave this crate only as
//! [`secrecy::SecretString`].
//!
//! # Errors
//! Every failure is a [`StoreError`]; a duplicate name is [`StoreError::AlreadyExists`].
#![deny(rustdoc::broken_intra_doc_links)]
#![warn(missing_docs)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rusqlite::{Connection, OptionalExtension, params};
use secrecy::{ExposeSecret, SecretString};
use std::path::Path;
use std::sync::Mutex;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("metadata store failure")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory or key file could not be used.
    #[error("cannot use the data directory {path}")]
    Io {
        /// The path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An object with this name exists.
    #[error("{kind} '{name}' already exists")]
    AlreadyExists {
        /// Object kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A stored secret could not be decrypted (wrong `secret.key`).
    #[error(
        "cannot decrypt the stored password of connection '{0}': secret.key does not match the data directory"
    )]
    Decrypt(String),
    /// A stored JSON document is malformed.
    #[error("malformed stored document")]
    Json(#[from] serde_json::Error),
}

/// Result with [`StoreError`].
pub type Result<T> = std::result::Result<T, StoreError>;

/// A stored connection.
#[derive(Debug, Clone)]
pub struct StoredConnection {
    /// Unique name.
    pub alias: String,
    /// `mysql` or `postgres`.
    pub kind: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password (decrypted in memory only).
    pub password: SecretString,
    /// Default database.
    pub database: Option<String>,
    /// DaaS store flag.
    pub daas_db: bool,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// A stored pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPipeline {
    /// Unique name.
    pub alias: String,
    /// The creation request as JSON.
    pub spec: serde_json::Value,
    /// What the user asked for last: `running`, `stopped` or `completed`.
    pub desired_state: String,
    /// The error that stopped it.
    pub last_error: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// The metadata store.
pub struct Store {
    conn: Mutex<Connection>,
    cipher: XChaCha20Poly1305,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS connections (
    alias TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    user TEXT NOT NULL,
    password_enc TEXT NOT NULL,
    database TEXT,
    daas_db INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pipelines (
    alias TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    desired_state TEXT NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    pipeline TEXT PRIMARY KEY REFERENCES pipelines(alias) ON DELETE CASCADE,
    checkpoint TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
";

impl Store {
    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let io = |source| StoreError::Io { path: data_dir.display().to_string(), source };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let key = load_or_create_key(&data_dir.join("secret.key")).map_err(io)?;
        let conn = Connection::open(data_dir.join("metadata.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn: Mutex::new(conn), cipher: XChaCha20Poly1305::new(&key.into()) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn encrypt(&self, plain: &str) -> String {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).expect("operating system random source");
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .expect("encryption of a short string cannot fail");
        let mut out = nonce.to_vec();
        out.extend(ct);
        B64.encode(out)
    }

    fn decrypt(&self, alias: &str, enc: &str) -> Result<SecretString> {
        let raw = B64.decode(enc).map_err(|_| StoreError::Decrypt(alias.into()))?;
        if raw.len() < 24 {
            return Err(StoreError::Decrypt(alias.into()));
        }
        let (nonce, ct) = raw.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| StoreError::Decrypt(alias.into()))?;
        let s = String::from_utf8(plain).map_err(|_| StoreError::Decrypt(alias.into()))?;
        Ok(SecretString::from(s))
    }

    /// Saves a new connection; [`StoreError::AlreadyExists`] when the alias is taken.
    pub fn insert_connection(&self, c: &StoredConnection) -> Result<()> {
        let enc = self.encrypt(c.password.expose_secret());
        let r = self.db().execute(
            "INSERT INTO connections (alias, kind, host, port, user, password_enc, database, daas_db, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![c.alias, c.kind, c.host, c.port, c.user, enc, c.database, c.daas_db, c.created_at],
        );
        unique_violation(r, "connection", &c.alias)
    }

    /// All connections, by alias.
    pub fn list_connections(&self) -> Result<Vec<StoredConnection>> {
        let rows: Vec<(StoredConnection, String)> = {
            let db = self.db();
            let mut st = db.prepare(
                "SELECT alias, kind, host, port, user, password_enc, database, daas_db, created_at
                 FROM connections ORDER BY alias",
            )?;
            st.query_map([], row_to_connection)?.collect::<rusqlite::Result<_>>()?
        };
        rows.into_iter()
            .map(|(mut c, enc)| {
                c.password = self.decrypt(&c.alias, &enc)?;
                Ok(c)
            })
            .collect()
    }

    /// One connection.
    pub fn get_connection(&self, alias: &str) -> Result<Option<StoredConnection>> {
        let row = self
            .db()
            .query_row(
                "SELECT alias, kind, host, port, user, password_enc, database, daas_db, created_at
                 FROM connections WHERE alias = ?1",
                [alias],
                row_to_connection,
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((mut c, enc)) => {
                c.password = self.decrypt(&c.alias, &enc)?;
                Ok(Some(c))
            }
        }
    }

    /// Deletes a connection; false when it did not exist.
    pub fn delete_connection(&self, alias: &str) -> Result<bool> {
        Ok(self.db().execute("DELETE FROM connections WHERE alias = ?1", [alias])? > 0)
    }

    /// Saves a new pipeline; [`StoreError::AlreadyExists`] when the alias is taken.
    pub fn insert_pipeline(&self, p: &StoredPipeline) -> Result<()> {
        let r = self.db().execute(
            "INSERT INTO pipelines (alias, spec, desired_state, last_error, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![p.alias, p.spec.to_string(), p.desired_state, p.last_error, p.created_at],
        );
        unique_violation(r, "pipeline", &p.alias)
    }

    /// Records what a pipeline should be doing and the error that stopped it.
    pub fn set_pipeline_state(
        &self,
        alias: &str,
        desired_state: &str,
        last_error: Option<&str>,
    ) -> Result<()> {
        self.db().execute(
            "UPDATE pipelines SET desired_state = ?2, last_error = ?3 WHERE alias = ?1",
            params![alias, desired_state, last_error],
        )?;
        Ok(())
    }

    /// All pipelines, by alias.
    pub fn list_pipelines(&self) -> Result<Vec<StoredPipeline>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT alias, spec, desired_state, last_error, created_at FROM pipelines ORDER BY alias",
        )?;
        let rows = st.query_map([], row_to_pipeline)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(p, spec)| Ok(StoredPipeline { spec: serde_json::from_str(&spec)?, ..p }))
            .collect()
    }

    /// One pipeline.
    pub fn get_pipeline(&self, alias: &str) -> Result<Option<StoredPipeline>> {
        let row = self
            .db()
            .query_row(
                "SELECT alias, spec, desired_state, last_error, created_at FROM pipelines WHERE alias = ?1",
                [alias],
                row_to_pipeline,
            )
            .optional()?;
        row.map(|(p, spec)| Ok(StoredPipeline { spec: serde_json::from_str(&spec)?, ..p })).transpose()
    }

    /// Deletes a pipeline and its checkpoint; false when it did not exist.
    pub fn delete_pipeline(&self, alias: &str) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM checkpoints WHERE pipeline = ?1", [alias])?;
        let n = tx.execute("DELETE FROM pipelines WHERE alias = ?1", [alias])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Saves a pipeline's checkpoint durably (replacing the previous one).
    pub fn save_checkpoint(&self, pipeline: &str, checkpoint: &serde_json::Value, now: &str) -> Result<()> {
        self.db().execute(
            "INSERT INTO checkpoints (pipeline, checkpoint, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(pipeline) DO UPDATE SET checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
            params![pipeline, checkpoint.to_string(), now],
        )?;
        Ok(())
    }

    /// A pipeline's last checkpoint.
    pub fn load_checkpoint(&self, pipeline: &str) -> Result<Option<serde_json::Value>> {
        let s: Option<String> = self
            .db()
            .query_row("SELECT checkpoint FROM checkpoints WHERE pipeline = ?1", [pipeline], |r| r.get(0))
            .optional()?;
        Ok(s.map(|s| serde_json::from_str(&s)).transpose()?)
    }
}

fn unique_violation(r: rusqlite::Result<usize>, kind: &'static str, name: &str) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(StoreError::AlreadyExists { kind, name: name.into() })
        }
        Err(e) => Err(e.into()),
    }
}

fn row_to_connection(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredConnection, String)> {
    Ok((
        StoredConnection {
            alias: r.get(0)?,
            kind: r.get(1)?,
            host: r.get(2)?,
            port: r.get(3)?,
            user: r.get(4)?,
            password: SecretString::from(String::new()),
            database: r.get(6)?,
            daas_db: r.get(7)?,
            created_at: r.get(8)?,
        },
        r.get(5)?,
    ))
}

fn row_to_pipeline(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredPipeline, String)> {
    Ok((
        StoredPipeline {
            alias: r.get(0)?,
            spec: serde_json::Value::Null,
            desired_state: r.get(2)?,
            last_error: r.get(3)?,
            created_at: r.get(4)?,
        },
        r.get(1)?,
    ))
}

fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
        return Err(std::io::Error::other(format!("{} is not a 32-byte key", path.display())));
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(alias: &str, pw: &str) -> StoredConnection {
        StoredConnection {
            alias: alias.into(),
            kind: "mysql".into(),
            host: "127.0.0.1".into(),
            port: 3306,
            user: "demo".into(),
            password: SecretString::from(pw.to_string()),
            database: Some("crm".into()),
            daas_db: false,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn passwords_are_encrypted_at_rest_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.insert_connection(&conn("a", "s3cret-pw")).unwrap();
        }
        let raw = std::fs::read(dir.path().join("metadata.db")).unwrap();
        let wal = std::fs::read(dir.path().join("metadata.db-wal")).unwrap_or_default();
        let needle = b"s3cret-pw";
        assert!(!raw.windows(needle.len()).any(|w| w == needle));
        assert!(!wal.windows(needle.len()).any(|w| w == needle));
        let s = Store::open(dir.path()).unwrap();
        let c = s.get_connection("a").unwrap().unwrap();
        assert_eq!(c.password.expose_secret(), "s3cret-pw");
        assert_eq!(c.database.as_deref(), Some("crm"));
    }

    #[test]
    fn duplicate_alias_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.insert_connection(&conn("a", "x")).unwrap();
        let err = s.insert_connection(&conn("a", "y")).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
        assert_eq!(s.list_connections().unwrap().len(), 1);
    }

    #[test]
    fn pipeline_and_checkpoint_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let p = StoredPipeline {
            alias: "p".into(),
            spec: serde_json::json!({"alias": "p"}),
            desired_state: "running".into(),
            last_error: None,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        s.insert_pipeline(&p).unwrap();
        assert!(s.insert_pipeline(&p).is_err());
        s.save_checkpoint("p", &serde_json::json!({"pos": 1}), "t1").unwrap();
        s.save_checkpoint("p", &serde_json::json!({"pos": 2}), "t2").unwrap();
        assert_eq!(s.load_checkpoint("p").unwrap(), Some(serde_json::json!({"pos": 2})));
        s.set_pipeline_state("p", "stopped", Some("boom")).unwrap();
        let got = s.get_pipeline("p").unwrap().unwrap();
        assert_eq!(got.desired_state, "stopped");
        assert_eq!(got.last_error.as_deref(), Some("boom"));
        assert!(s.delete_pipeline("p").unwrap());
        assert_eq!(s.load_checkpoint("p").unwrap(), None);
        assert!(s.list_pipelines().unwrap().is_empty());
    }
}
