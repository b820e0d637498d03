//! Private MariaDB servers.

use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Error, IoContext};
use crate::util::{self, PortLease};

/// The password of `root` in every instance.
const ROOT_PASSWORD: &str = "testkit-root";
/// Redo log size of the template and of every instance (small: fast to copy).
const INNODB_LOG_FILE_SIZE: &str = "16M";
/// InnoDB buffer pool of every instance.
const INNODB_BUFFER_POOL_SIZE: &str = "64M";
/// How many times `start` tries another port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// How to start a [`MariaDb`].
///
/// ```no_run
/// use idaas_testkit::{MariaDb, MariaDbOptions};
///
/// let db = MariaDb::start_with(MariaDbOptions { log_bin: false, ..Default::default() })?;
/// assert_eq!(db.sql("SELECT @@log_bin")?, "0\n");
/// # Ok::<(), idaas_testkit::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MariaDbOptions {
    /// Write a binary log (`--log-bin=mariadb-bin`, in the data directory). Default `true`.
    pub log_bin: bool,
    /// `--binlog-format`. Default `"ROW"`.
    pub binlog_format: String,
    /// `--binlog-row-image`. Default `"FULL"`.
    pub binlog_row_image: String,
    /// `--server-id`, at least 1. The default is a fresh pseudo-random value for every
    /// [`MariaDbOptions::default`] call, so two instances do not share one.
    pub server_id: u32,
    /// More `mariadbd` arguments, appended last (so they override the testkit's own), e.g.
    /// `"--gtid-strict-mode=ON"`.
    pub extra_args: Vec<String>,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        MariaDbOptions {
            log_bin: true,
            binlog_format: "ROW".into(),
            binlog_row_image: "FULL".into(),
            server_id: (util::random_u64() % 4_000_000_000) as u32 + 1,
            extra_args: Vec::new(),
        }
    }
}

/// Paths of the MariaDB programs.
#[derive(Debug, Clone)]
struct Binaries {
    server: PathBuf,
    install_db: PathBuf,
    client: PathBuf,
}

impl Binaries {
    fn find() -> Result<Binaries, Error> {
        let sbin = [Path::new("/usr/sbin"), Path::new("/usr/bin"), Path::new("/usr/local/mysql/bin")];
        let missing = |binary: &str, package: &str| Error::MissingBinary {
            binary: binary.into(),
            package: package.into(),
        };
        Ok(Binaries {
            server: util::find_binary(&["mariadbd", "mysqld"], &sbin)
                .ok_or_else(|| missing("mariadbd", "mariadb-server"))?,
            install_db: util::find_binary(&["mariadb-install-db", "mysql_install_db"], &sbin)
                .ok_or_else(|| missing("mariadb-install-db", "mariadb-server"))?,
            client: util::find_binary(&["mariadb", "mysql"], &sbin)
                .ok_or_else(|| missing("mariadb", "mariadb-client"))?,
        })
    }
}

/// A private MariaDB server for tests: its own data directory in a temporary directory, a free
/// port on 127.0.0.1, a unix socket next to the data, and `root` / [`password`](Self::password)
/// allowed from anywhere with all privileges.
///
/// The server runs with `--no-defaults` (no `/etc/mysql` configuration), a binary log in `ROW`
/// format with full row images (see [`MariaDbOptions`]), `utf8mb4`, time zone `+00:00`, a 64 MB
/// buffer pool and real durability (`innodb_flush_log_at_trx_commit=1`), so [`kill`](Self::kill)
/// is a realistic crash.
///
/// Dropping the value kills the server and deletes its files. The server also dies with the test
/// process, even when that process is killed.
///
/// ```no_run
/// use idaas_testkit::MariaDb;
///
/// let mut db = MariaDb::start()?;
/// db.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY) ENGINE=InnoDB;
///         INSERT INTO shop.t VALUES (1)")?;
/// db.kill()?;
/// db.restart()?;
/// assert_eq!(db.sql("SELECT id FROM shop.t")?, "1\n");
/// # Ok::<(), idaas_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct MariaDb {
    child: Mutex<Option<Child>>,
    bins: Binaries,
    opts: MariaDbOptions,
    lease: PortLease,
    data_dir: PathBuf,
    socket: PathBuf,
    error_log: PathBuf,
    stdout_log: PathBuf,
    pid_file: PathBuf,
    client_cnf: PathBuf,
    /// Deleted last (fields drop in order), after [`Drop::drop`] killed the server.
    dir: TempDir,
}

impl MariaDb {
    /// Starts a server with [`MariaDbOptions::default`] and waits until it accepts connections.
    pub fn start() -> Result<MariaDb, Error> {
        MariaDb::start_with(MariaDbOptions::default())
    }

    /// Starts a server with `opts` and waits until it accepts connections.
    ///
    /// The first start on a machine runs `mariadb-install-db` once into a template directory
    /// (`$TMPDIR/idaas-testkit-cache-UID/`); every instance starts from a copy of it.
    pub fn start_with(opts: MariaDbOptions) -> Result<MariaDb, Error> {
        let bins = Binaries::find()?;
        let template = template(&bins)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let db = MariaDb::create(bins.clone(), opts.clone(), &template)?;
            match db.launch() {
                Ok(()) => return Ok(db),
                // Someone took the port between the check and the server's bind: try another.
                Err(e) if attempt < PORT_ATTEMPTS && db.port_conflict() => drop(e),
                Err(e) => return Err(e),
            }
        }
    }

    fn create(bins: Binaries, opts: MariaDbOptions, template: &Path) -> Result<MariaDb, Error> {
        let dir = util::instance_dir("mariadb")?;
        let root = dir.path();
        let data_dir = root.join("data");
        util::copy_tree(&template.join("data"), &data_dir, None)
            .ctx(|| format!("cannot copy the MariaDB template to {}", data_dir.display()))?;
        let tmp = root.join("tmp");
        fs::create_dir(&tmp).ctx(|| format!("cannot create {}", tmp.display()))?;
        let lease = util::lease_port();
        let socket = root.join("mariadb.sock");
        let client_cnf = root.join("client.cnf");
        let cnf = format!(
            "[client]\nuser=root\npassword={ROOT_PASSWORD}\nsocket=\"{}\"\nport={}\n\
             default-character-set=utf8mb4\n",
            socket.display(),
            lease.port()
        );
        util::write_file(&client_cnf, &cnf, 0o600, None)
            .ctx(|| format!("cannot write {}", client_cnf.display()))?;
        Ok(MariaDb {
            child: Mutex::new(None),
            bins,
            opts,
            lease,
            error_log: root.join("mariadbd.err"),
            stdout_log: root.join("mariadbd.out"),
            pid_file: root.join("mariadbd.pid"),
            data_dir,
            socket,
            client_cnf,
            dir,
        })
    }

    fn server_args(&self) -> Vec<String> {
        let p = |path: &Path| path.display().to_string();
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", p(&self.data_dir)),
            format!("--port={}", self.port()),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", p(&self.socket)),
            format!("--pid-file={}", p(&self.pid_file)),
            format!("--log-error={}", p(&self.error_log)),
            format!("--tmpdir={}", p(&self.dir.path().join("tmp"))),
            "--skip-name-resolve".into(),
            format!("--innodb-buffer-pool-size={INNODB_BUFFER_POOL_SIZE}"),
            format!("--innodb-log-file-size={INNODB_LOG_FILE_SIZE}"),
            "--innodb-flush-log-at-trx-commit=1".into(),
            "--max-connections=200".into(),
            "--character-set-server=utf8mb4".into(),
            "--collation-server=utf8mb4_general_ci".into(),
            "--default-time-zone=+00:00".into(),
            format!("--server-id={}", self.opts.server_id.max(1)),
            format!("--binlog-format={}", self.opts.binlog_format),
            format!("--binlog-row-image={}", self.opts.binlog_row_image),
        ];
        if util::euid() == 0 {
            args.push("--user=root".into());
        }
        if self.opts.log_bin {
            args.push("--log-bin=mariadb-bin".into());
            args.push("--log-bin-index=mariadb-bin.index".into());
        } else {
            args.push("--skip-log-bin".into());
        }
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    fn name(&self) -> String {
        format!("MariaDB on port {}", self.port())
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns `mariadbd` and waits until it is ready.
    fn launch(&self) -> Result<(), Error> {
        // Leftovers of a killed server.
        util::remove_file_quiet(&self.socket);
        util::remove_file_quiet(&self.socket.with_extension("sock.lock"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stdout_log)
            .ctx(|| format!("cannot open {}", self.stdout_log.display()))?;
        let err = out.try_clone().ctx(|| format!("cannot open {}", self.stdout_log.display()))?;
        let mut cmd = Command::new(&self.bins.server);
        cmd.args(self.server_args())
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env_remove("MYSQL_HOME")
            .env_remove("MYSQL_UNIX_PORT")
            .env_remove("MYSQL_TCP_PORT")
            .env("TZ", "UTC");
        let child = util::spawn_server(cmd).ctx(|| format!("cannot start {}", self.bins.server.display()))?;
        *self.lock_child() = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<(), Error> {
        let timeout = util::start_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut guard = self.lock_child();
                let child = guard.as_mut().expect("launched");
                if let Some(status) = child.try_wait().ctx(|| format!("cannot wait for {}", self.name()))? {
                    *guard = None;
                    return Err(Error::StartupFailed {
                        server: self.name(),
                        status: status.to_string(),
                        log: self.error_log.clone(),
                        log_tail: self.log_tail(),
                    });
                }
            }
            // The unix socket is private to this instance and is created after the TCP port is
            // bound, so a greeting on it means *this* server listens on the port.
            if socket_greets(&self.socket) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(mut child) = self.lock_child().take() {
                    let _ = util::kill_and_reap(&mut child);
                }
                return Err(Error::StartupTimeout {
                    server: self.name(),
                    timeout,
                    log: self.error_log.clone(),
                    log_tail: self.log_tail(),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_tail(&self) -> String {
        let mut tail = util::tail(&self.error_log, 30);
        let extra = util::tail(&self.stdout_log, 10);
        if !extra.trim().is_empty() && !extra.starts_with("(cannot read") {
            tail.push_str("\n--- stdout/stderr ---\n");
            tail.push_str(&extra);
        }
        tail
    }

    fn port_conflict(&self) -> bool {
        let log = self.log_tail();
        log.contains("Address already in use") || log.contains("Bind on TCP/IP port")
    }

    /// The host to connect to: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port the server listens on (the same across [`restart`](Self::restart)s).
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// The administrative user: `"root"`.
    pub fn user(&self) -> &str {
        "root"
    }

    /// The password of [`user`](Self::user): `"testkit-root"`.
    pub fn password(&self) -> &str {
        ROOT_PASSWORD
    }

    /// `mysql://root:testkit-root@127.0.0.1:PORT`, without a database.
    pub fn url(&self) -> String {
        format!("mysql://{}:{}@{}:{}", self.user(), self.password(), self.host(), self.port())
    }

    /// [`url`](Self::url) with a default database: `mysql://root:testkit-root@127.0.0.1:PORT/DB`.
    pub fn url_db(&self, db: &str) -> String {
        format!("{}/{db}", self.url())
    }

    /// The server id the instance runs with.
    pub fn server_id(&self) -> u32 {
        self.opts.server_id.max(1)
    }

    /// The options the instance was started with.
    pub fn options(&self) -> &MariaDbOptions {
        &self.opts
    }

    /// The unix socket of the server.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The server's error log, for diagnosing failures.
    pub fn log_file(&self) -> &Path {
        &self.error_log
    }

    /// The data directory (binary logs are in it too, named `mariadb-bin.NNNNNN`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The pid of the server process, when it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut guard = self.lock_child();
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// Whether the server process runs.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Runs SQL through the `mariadb` command line client as `root` over the unix socket and
    /// returns what it printed: one line per row, columns separated by tabs, no column names
    /// (`--batch --skip-column-names`; special characters in values come out escaped, `NULL` as
    /// `NULL`). Several statements separated by `;` run in order; the first failure stops
    /// them and becomes [`Error::Sql`] with the client's stderr.
    pub fn sql(&self, sql: &str) -> Result<String, Error> {
        self.run_sql(None, sql)
    }

    /// Like [`sql`](Self::sql), with `db` as the default database.
    pub fn sql_db(&self, db: &str, sql: &str) -> Result<String, Error> {
        self.run_sql(Some(db), sql)
    }

    fn run_sql(&self, db: Option<&str>, sql: &str) -> Result<String, Error> {
        if !self.is_running() {
            return Err(Error::NotRunning { server: self.name() });
        }
        let mut cmd = Command::new(&self.bins.client);
        cmd.arg(format!("--defaults-file={}", self.client_cnf.display())).args([
            "--batch",
            "--skip-column-names",
            "--connect-timeout=10",
        ]);
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        let (ok, stdout, stderr) = util::run_with_input(&mut cmd, sql)?;
        if ok { Ok(stdout) } else { Err(Error::Sql { server: self.name(), stderr, stdout }) }
    }

    /// Shuts the server down cleanly (SIGTERM, like `mariadb-admin shutdown`) and waits for the
    /// process to exit. Stopping a server that does not run is a no-op. When the shutdown takes
    /// longer than 60 s the server is killed and [`Error::ShutdownTimeout`] returned.
    pub fn stop(&mut self) -> Result<(), Error> {
        let name = self.name();
        let Some(mut child) = self.lock_child().take() else { return Ok(()) };
        if child.try_wait().ctx(|| format!("cannot wait for {name}"))?.is_some() {
            return Ok(());
        }
        util::signal(child.id(), libc::SIGTERM).ctx(|| format!("cannot signal {name}"))?;
        let timeout = util::stop_timeout();
        match util::wait_timeout(&mut child, timeout).ctx(|| format!("cannot wait for {name}"))? {
            Some(_) => Ok(()),
            None => {
                util::kill_and_reap(&mut child).ctx(|| format!("cannot kill {name}"))?;
                Err(Error::ShutdownTimeout { server: name, timeout })
            }
        }
    }

    /// Kills the server with SIGKILL, a crash without any chance to flush, and waits until the
    /// process is gone. Killing a server that does not run is a no-op.
    pub fn kill(&mut self) -> Result<(), Error> {
        let name = self.name();
        if let Some(mut child) = self.lock_child().take() {
            util::kill_and_reap(&mut child).ctx(|| format!("cannot kill {name}"))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port, data directory and options, after
    /// [`stop`](Self::stop) or [`kill`](Self::kill) (after a kill, InnoDB and the binary log
    /// run crash recovery), and waits until it accepts connections. A running server is stopped
    /// cleanly first.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop()?;
        self.launch()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.lock_child().take() {
            let _ = util::kill_and_reap(&mut child);
        }
    }
}

/// Whether a MySQL-protocol server greets on a unix socket (protocol version 10).
fn socket_greets(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).is_ok() && header[4] == 10
}

/// The prepared data directory every instance is copied from, built once per machine and
/// MariaDB installation.
fn template(bins: &Binaries) -> Result<PathBuf, Error> {
    let version = util::run_checked(Command::new(&bins.server).arg("--version"))?;
    let mut hasher = DefaultHasher::new();
    (util::TEMPLATE_REV, version.trim(), ROOT_PASSWORD, INNODB_LOG_FILE_SIZE, util::euid()).hash(&mut hasher);
    util::fingerprint(&mut hasher, &[&bins.server, &bins.install_db]);
    let name = util::template_name("mariadb", hasher);
    util::template(&name, |dir| build_template(bins, dir))
}

fn build_template(bins: &Binaries, dir: &Path) -> Result<(), Error> {
    let data = dir.join("data");
    let mut install = Command::new(&bins.install_db);
    install
        .arg("--no-defaults")
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--innodb-log-file-size={INNODB_LOG_FILE_SIZE}"))
        .current_dir(dir);
    if util::euid() == 0 {
        install.arg("--user=root");
    }
    util::run_checked(&mut install)?;

    // Start the fresh server privately (no TCP) to set up the accounts, then shut it down cleanly.
    let socket = dir.join("setup.sock");
    let log = dir.join("setup.err");
    let mut cmd = Command::new(&bins.server);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", dir.join("setup.pid").display()))
        .arg(format!("--log-error={}", log.display()))
        .arg(format!("--innodb-log-file-size={INNODB_LOG_FILE_SIZE}"))
        .arg(format!("--innodb-buffer-pool-size={INNODB_BUFFER_POOL_SIZE}"))
        .args(["--skip-networking", "--skip-log-bin", "--skip-name-resolve"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("setup.out")).ctx(|| "cannot create setup.out".into())?);
    if util::euid() == 0 {
        cmd.arg("--user=root");
    }
    let mut child = util::spawn_server(cmd).ctx(|| format!("cannot start {}", bins.server.display()))?;
    let result = setup_accounts(bins, &mut child, &socket, &log);
    let stopped = util::signal(child.id(), libc::SIGTERM)
        .and_then(|()| util::wait_timeout(&mut child, util::stop_timeout()));
    match (result, stopped) {
        (Err(e), _) => {
            let _ = util::kill_and_reap(&mut child);
            Err(e)
        }
        (Ok(()), Ok(Some(status))) if status.success() => Ok(()),
        (Ok(()), Ok(Some(status))) => Err(Error::StartupFailed {
            server: "MariaDB template server".into(),
            status: format!("shutdown ended with {status}"),
            log: log.clone(),
            log_tail: util::tail(&log, 30),
        }),
        (Ok(()), Ok(None)) => {
            let _ = util::kill_and_reap(&mut child);
            Err(Error::ShutdownTimeout {
                server: "MariaDB template server".into(),
                timeout: util::stop_timeout(),
            })
        }
        (Ok(()), Err(e)) => Err(Error::io("cannot stop the MariaDB template server", e)),
    }
}

fn setup_accounts(bins: &Binaries, child: &mut Child, socket: &Path, log: &Path) -> Result<(), Error> {
    let timeout = util::start_timeout();
    let deadline = Instant::now() + timeout;
    while !socket_greets(socket) {
        if let Some(status) = child.try_wait().ctx(|| "cannot wait for the template server".into())? {
            return Err(Error::StartupFailed {
                server: "MariaDB template server".into(),
                status: status.to_string(),
                log: log.to_path_buf(),
                log_tail: util::tail(log, 30),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::StartupTimeout {
                server: "MariaDB template server".into(),
                timeout,
                log: log.to_path_buf(),
                log_tail: util::tail(log, 30),
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
    let pw = ROOT_PASSWORD;
    let mut sql = String::from(
        "DELETE FROM mysql.global_priv WHERE User = '' \
           OR (User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1'));\n\
         DELETE FROM mysql.proxies_priv WHERE User = '' \
           OR (User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1'));\n\
         FLUSH PRIVILEGES;\n",
    );
    for host in ["localhost", "127.0.0.1", "::1", "%"] {
        sql.push_str(&format!(
            "CREATE USER IF NOT EXISTS 'root'@'{host}';\n\
             ALTER USER 'root'@'{host}' IDENTIFIED BY '{pw}';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' WITH GRANT OPTION;\n\
             GRANT PROXY ON ''@'%' TO 'root'@'{host}' WITH GRANT OPTION;\n"
        ));
    }
    sql.push_str("FLUSH PRIVILEGES;\n");
    let mut cmd = Command::new(&bins.client);
    cmd.arg("--no-defaults").arg(format!("--socket={}", socket.display())).args(["--user=root", "--batch"]);
    let (ok, stdout, stderr) = util::run_with_input(&mut cmd, &sql)?;
    if ok { Ok(()) } else { Err(Error::Sql { server: "MariaDB template server".into(), stderr, stdout }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options() {
        let a = MariaDbOptions::default();
        let b = MariaDbOptions::default();
        assert!(a.log_bin);
        assert_eq!(a.binlog_format, "ROW");
        assert_eq!(a.binlog_row_image, "FULL");
        assert!(a.server_id >= 1);
        assert_ne!(a.server_id, b.server_id);
    }

    #[test]
    fn start_query_and_drop_cleans_up() {
        let db = MariaDb::start().unwrap();
        assert!(db.is_running());
        assert_eq!(db.sql("SELECT 1 + 1").unwrap(), "2\n");
        assert_eq!(db.url(), format!("mysql://root:testkit-root@127.0.0.1:{}", db.port()));
        assert_eq!(db.url_db("x"), format!("{}/x", db.url()));
        let err = db.sql("SELECT * FROM no_such_db.t").unwrap_err();
        assert!(matches!(err, Error::Sql { .. }), "{err}");
        assert!(err.to_string().contains("no_such_db"), "{err}");
        let pid = db.pid().unwrap();
        let dir = db.data_dir().to_path_buf();
        drop(db);
        assert!(util::is_dead(pid));
        assert!(!dir.exists());
    }

    #[test]
    fn root_over_tcp_with_password() {
        let db = MariaDb::start().unwrap();
        let out = Command::new(&db.bins.client)
            .arg("--no-defaults")
            .args(["-h", db.host(), "-P", &db.port().to_string(), "-u", db.user()])
            .arg(format!("--password={}", db.password()))
            .args(["--batch", "--skip-column-names", "-e", "SELECT CURRENT_USER(), @@port"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("root@"), "{text}");
        assert!(text.trim_end().ends_with(&db.port().to_string()), "{text}");
        // Wrong password is refused.
        let out = Command::new(&db.bins.client)
            .arg("--no-defaults")
            .args(["-h", db.host(), "-P", &db.port().to_string(), "-u", "root", "--password=wrong"])
            .args(["-e", "SELECT 1"])
            .output()
            .unwrap();
        assert!(!out.status.success());
    }

    #[test]
    fn sql_on_a_stopped_server_is_not_running() {
        let mut db = MariaDb::start().unwrap();
        db.stop().unwrap();
        assert!(!db.is_running());
        assert!(matches!(db.sql("SELECT 1"), Err(Error::NotRunning { .. })));
        // Stopping or killing again is a no-op.
        db.stop().unwrap();
        db.kill().unwrap();
    }

    #[test]
    fn kill_loses_only_uncommitted_work() {
        let mut db = MariaDb::start().unwrap();
        db.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO d.t VALUES (1)")
            .unwrap();
        let mut client = Command::new(&db.bins.client)
            .arg(format!("--defaults-file={}", db.client_cnf.display()))
            .args(["--batch", "-e", "BEGIN; INSERT INTO d.t VALUES (2); SELECT SLEEP(60)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Once the session sleeps, its INSERT ran. (Not polled through information_schema.innodb_trx:
        // MariaDB refreshes that table only when it was not read for 100 ms.)
        let deadline = Instant::now() + Duration::from_secs(10);
        let sleeping = "SELECT count(*) FROM information_schema.processlist WHERE info = 'SELECT SLEEP(60)'";
        while db.sql(sleeping).unwrap() != "1\n" {
            assert!(Instant::now() < deadline, "the open transaction did not show up");
            thread::sleep(Duration::from_millis(10));
        }
        db.kill().unwrap();
        let _ = util::wait_timeout(&mut client, Duration::from_secs(10)).unwrap().expect("client still runs");
        db.restart().unwrap();
        assert_eq!(db.sql("SELECT id FROM d.t").unwrap(), "1\n");
    }

    #[test]
    fn bad_extra_args_fail_with_the_log() {
        let opts =
            MariaDbOptions { extra_args: vec!["--no-such-option-idaas=1".into()], ..Default::default() };
        let err = MariaDb::start_with(opts).unwrap_err();
        assert!(matches!(err, Error::StartupFailed { .. }), "{err}");
        assert!(err.to_string().contains("no-such-option-idaas"), "{err}");
    }
}
