//! Private PostgreSQL servers.

use std::fs::{self, OpenOptions};
use std::hash::{DefaultHasher, Hash};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Error, IoContext};
use crate::util::{self, OsUser, PortLease};

/// The password of `postgres` in every instance.
const PASSWORD: &str = "testkit-pg";
/// The OS account that runs the server when the caller is root.
const OS_USER: &str = "postgres";
/// How many times `start` tries another port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// Per-instance settings, included at the end of `postgresql.conf`.
const INSTANCE_CONF: &str = "idaas-testkit.conf";

const PG_HBA: &str = "\
# Written by idaas-testkit.
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     trust
local   replication     all                                     trust
host    all             all             127.0.0.1/32            scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
";

/// How to start a [`Postgres`].
///
/// ```no_run
/// use idaas_testkit::{Postgres, PostgresOptions};
///
/// let pg = Postgres::start_with(PostgresOptions {
///     extra_conf: vec![("track_commit_timestamp".into(), "on".into())],
///     ..Default::default()
/// })?;
/// assert_eq!(pg.sql("SHOW track_commit_timestamp")?, "on\n");
/// # Ok::<(), idaas_testkit::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `wal_level`. Default `"logical"`.
    pub wal_level: String,
    /// More `postgresql.conf` settings as (name, value), written after the testkit's own (so
    /// they override them). Values are written quoted, which suits every setting type.
    pub extra_conf: Vec<(String, String)>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions { wal_level: "logical".into(), extra_conf: Vec::new() }
    }
}

/// Paths of the PostgreSQL programs.
#[derive(Debug, Clone)]
struct Binaries {
    postgres: PathBuf,
    initdb: PathBuf,
    psql: PathBuf,
}

impl Binaries {
    fn find() -> Result<Binaries, Error> {
        let bindir = find_bindir().ok_or_else(|| Error::MissingBinary {
            binary: "postgres".into(),
            package: "postgresql".into(),
        })?;
        let in_bindir = |name: &str, package: &str| {
            let path = bindir.join(name);
            if util::is_executable(&path) {
                Ok(path)
            } else {
                util::find_binary(&[name], &[])
                    .ok_or_else(|| Error::MissingBinary { binary: name.into(), package: package.into() })
            }
        };
        Ok(Binaries {
            postgres: bindir.join("postgres"),
            initdb: in_bindir("initdb", "postgresql")?,
            psql: in_bindir("psql", "postgresql-client")?,
        })
    }
}

/// The directory with `postgres` and `initdb`: `$IDAAS_TESTKIT_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/N/bin` (Debian), else `pg_config --bindir`, else `PATH`.
fn find_bindir() -> Option<PathBuf> {
    let has_server =
        |dir: &Path| util::is_executable(&dir.join("postgres")) && util::is_executable(&dir.join("initdb"));
    if let Some(dir) = std::env::var_os("IDAAS_TESTKIT_PG_BINDIR").map(PathBuf::from) {
        return has_server(&dir).then_some(dir);
    }
    let debian = fs::read_dir("/usr/lib/postgresql").ok().and_then(|entries| {
        entries
            .flatten()
            .filter_map(|e| {
                let version: f64 = e.file_name().to_str()?.parse().ok()?;
                let dir = e.path().join("bin");
                has_server(&dir).then_some((version, dir))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, dir)| dir)
    });
    if debian.is_some() {
        return debian;
    }
    if let Some(pg_config) = util::find_binary(&["pg_config"], &[])
        && let Ok(out) = Command::new(pg_config).arg("--bindir").output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Some(dir);
        }
    }
    util::find_binary(&["postgres"], &[])
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|d| has_server(d))
}

/// The account to run PostgreSQL as: `postgres` when the caller is root (PostgreSQL refuses to
/// run as root), else the caller itself (`None`).
fn run_as() -> Result<Option<OsUser>, Error> {
    if util::euid() != 0 {
        return Ok(None);
    }
    util::lookup_user(OS_USER).map(Some).ok_or_else(|| Error::MissingUser { user: OS_USER.into() })
}

/// A private PostgreSQL server for tests: its own cluster in a temporary directory, a free port
/// on 127.0.0.1 and a unix socket in the temporary directory.
///
/// The superuser is `postgres` with password [`password`](Self::password); TCP connections from
/// 127.0.0.1 use `scram-sha-256` for every user, normal and replication connections alike; local
/// (unix socket) connections are trusted. The cluster is created with locale `C` and encoding
/// `UTF8` and runs with `wal_level=logical` (see [`PostgresOptions`]), 20 WAL senders and
/// replication slots, `timezone=UTC`, 32 MB shared buffers and real durability (`fsync=on`), so
/// [`kill`](Self::kill) is a realistic crash. When the caller is root the server runs as the OS
/// user `postgres`.
///
/// Dropping the value kills the server and deletes its files. The server also dies with the test
/// process, even when that process is killed.
///
/// ```no_run
/// use idaas_testkit::Postgres;
///
/// let mut pg = Postgres::start()?;
/// pg.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")?;
/// pg.kill()?;
/// pg.restart()?;
/// assert_eq!(pg.sql("SELECT id FROM t")?, "1\n");
/// # Ok::<(), idaas_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Postgres {
    child: Mutex<Option<Child>>,
    bins: Binaries,
    opts: PostgresOptions,
    owner: Option<OsUser>,
    lease: PortLease,
    data_dir: PathBuf,
    log: PathBuf,
    /// Deleted last (fields drop in order), after [`Drop::drop`] killed the server.
    dir: TempDir,
}

impl Postgres {
    /// Starts a server with [`PostgresOptions::default`] and waits until it accepts connections.
    pub fn start() -> Result<Postgres, Error> {
        Postgres::start_with(PostgresOptions::default())
    }

    /// Starts a server with `opts` and waits until it accepts connections.
    ///
    /// The first start on a machine runs `initdb` once into a template directory
    /// (`$TMPDIR/idaas-testkit-cache-UID/`); every instance starts from a copy of it.
    pub fn start_with(opts: PostgresOptions) -> Result<Postgres, Error> {
        let bins = Binaries::find()?;
        let owner = run_as()?;
        let template = template(&bins, owner)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let pg = Postgres::create(bins.clone(), opts.clone(), owner, &template)?;
            match pg.launch() {
                Ok(()) => return Ok(pg),
                // Someone took the port between the check and the server's bind: try another.
                Err(e) if attempt < PORT_ATTEMPTS && pg.port_conflict() => drop(e),
                Err(e) => return Err(e),
            }
        }
    }

    fn create(
        bins: Binaries,
        opts: PostgresOptions,
        owner: Option<OsUser>,
        template: &Path,
    ) -> Result<Postgres, Error> {
        let dir = util::instance_dir("postgres")?;
        let root = dir.path();
        util::chown_opt(root, owner).ctx(|| format!("cannot chown {}", root.display()))?;
        let data_dir = root.join("data");
        util::copy_tree(&template.join("data"), &data_dir, owner)
            .ctx(|| format!("cannot copy the PostgreSQL template to {}", data_dir.display()))?;
        let log = root.join("postgres.log");
        let lease = util::lease_port();
        let pg = Postgres { child: Mutex::new(None), bins, opts, owner, lease, data_dir, log, dir };
        let conf_path = pg.data_dir.join(INSTANCE_CONF);
        util::write_file(&conf_path, &pg.instance_conf(), 0o600, owner)
            .ctx(|| format!("cannot write {}", conf_path.display()))?;
        Ok(pg)
    }

    fn instance_conf(&self) -> String {
        let mut settings: Vec<(String, String)> = vec![
            ("port".into(), self.port().to_string()),
            ("listen_addresses".into(), "127.0.0.1".into()),
            ("unix_socket_directories".into(), self.dir.path().display().to_string()),
            ("wal_level".into(), self.opts.wal_level.clone()),
            ("max_wal_senders".into(), "20".into()),
            ("max_replication_slots".into(), "20".into()),
            ("shared_buffers".into(), "32MB".into()),
            ("fsync".into(), "on".into()),
            ("synchronous_commit".into(), "on".into()),
            ("full_page_writes".into(), "on".into()),
            ("timezone".into(), "UTC".into()),
            ("log_timezone".into(), "UTC".into()),
            ("lc_messages".into(), "C".into()),
            ("logging_collector".into(), "off".into()),
        ];
        settings.extend(self.opts.extra_conf.iter().cloned());
        let mut conf = String::from("# Written by idaas-testkit for this instance.\n");
        for (name, value) in settings {
            conf.push_str(&format!("{name} = {}\n", util::single_quote(&value)));
        }
        conf
    }

    fn name(&self) -> String {
        format!("PostgreSQL on port {}", self.port())
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir.join("postmaster.pid")
    }

    fn socket_file(&self) -> PathBuf {
        self.dir.path().join(format!(".s.PGSQL.{}", self.port()))
    }

    /// Spawns the postmaster and waits until it is ready.
    fn launch(&self) -> Result<(), Error> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .ctx(|| format!("cannot open {}", self.log.display()))?;
        util::chown_opt(&self.log, self.owner).ctx(|| format!("cannot chown {}", self.log.display()))?;
        let log2 = log.try_clone().ctx(|| format!("cannot open {}", self.log.display()))?;
        let mut cmd = Command::new(&self.bins.postgres);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGOPTIONS");
        if let Some(u) = self.owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(u.uid).gid(u.gid);
        }
        let child =
            util::spawn_server(cmd).ctx(|| format!("cannot start {}", self.bins.postgres.display()))?;
        let pid = child.id();
        *self.lock_child() = Some(child);
        self.wait_ready(pid)
    }

    fn wait_ready(&self, pid: u32) -> Result<(), Error> {
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
                        log: self.log.clone(),
                        log_tail: util::tail(&self.log, 30),
                    });
                }
            }
            // Like `pg_ctl -w`: line 1 of postmaster.pid is the pid, line 8 the status, which
            // becomes "ready" once every socket listens and connections are accepted.
            if let Ok(text) = fs::read_to_string(self.pid_file()) {
                let lines: Vec<&str> = text.lines().collect();
                if lines.len() >= 8
                    && lines[0].trim() == pid.to_string()
                    && matches!(lines[7].trim(), "ready" | "standby")
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let _ = self.kill_server();
                return Err(Error::StartupTimeout {
                    server: self.name(),
                    timeout,
                    log: self.log.clone(),
                    log_tail: util::tail(&self.log, 30),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn port_conflict(&self) -> bool {
        let log = util::tail(&self.log, 30);
        log.contains("Address already in use") || log.contains("could not create any TCP/IP sockets")
    }

    /// The host to connect to: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port the server listens on (the same across [`restart`](Self::restart)s).
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// The superuser: `"postgres"`.
    pub fn user(&self) -> &str {
        "postgres"
    }

    /// The password of [`user`](Self::user): `"testkit-pg"`.
    pub fn password(&self) -> &str {
        PASSWORD
    }

    /// `postgres://postgres:testkit-pg@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_db("postgres")
    }

    /// [`url`](Self::url) for another database: `postgres://postgres:testkit-pg@127.0.0.1:PORT/DB`.
    pub fn url_db(&self, db: &str) -> String {
        format!("postgres://{}:{}@{}:{}/{db}", self.user(), self.password(), self.host(), self.port())
    }

    /// The options the instance was started with.
    pub fn options(&self) -> &PostgresOptions {
        &self.opts
    }

    /// The directory holding the server's unix socket (`.s.PGSQL.PORT`), usable as a `host`
    /// by libpq clients.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log (its stderr), for diagnosing failures.
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// The data directory (the cluster).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The pid of the postmaster, when it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut guard = self.lock_child();
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// Whether the postmaster runs.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Runs SQL through `psql` as `postgres` over the unix socket, in database `postgres`, and
    /// returns what it printed: one line per row, columns separated by tabs, no headers and no
    /// command tags (`-X -q -A -t -F '\t'`; `NULL` prints as an empty string). The statements
    /// run one by one in autocommit mode; the first failure stops them (`ON_ERROR_STOP`) and
    /// becomes [`Error::Sql`] with psql's stderr.
    pub fn sql(&self, sql: &str) -> Result<String, Error> {
        self.sql_db("postgres", sql)
    }

    /// Like [`sql`](Self::sql), connected to database `db`.
    pub fn sql_db(&self, db: &str, sql: &str) -> Result<String, Error> {
        if !self.is_running() {
            return Err(Error::NotRunning { server: self.name() });
        }
        let mut cmd = Command::new(&self.bins.psql);
        cmd.args(["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port().to_string(), "-U", "postgres", "-d", db, "-f", "-"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGCLIENTENCODING", "UTF8");
        for var in ["PGOPTIONS", "PGSERVICE", "PGSERVICEFILE", "PGSSLMODE", "PGTARGETSESSIONATTRS"] {
            cmd.env_remove(var);
        }
        let (ok, stdout, stderr) = util::run_with_input(&mut cmd, sql)?;
        if ok { Ok(stdout) } else { Err(Error::Sql { server: self.name(), stderr, stdout }) }
    }

    /// Shuts the server down cleanly ("fast" shutdown: SIGINT, which disconnects clients and
    /// writes a checkpoint) and waits for the postmaster to exit. Stopping a server that does
    /// not run is a no-op. When the shutdown takes longer than 60 s the server is killed and
    /// [`Error::ShutdownTimeout`] returned.
    pub fn stop(&mut self) -> Result<(), Error> {
        let name = self.name();
        let pid = {
            let mut guard = self.lock_child();
            let Some(child) = guard.as_mut() else { return Ok(()) };
            if child.try_wait().ctx(|| format!("cannot wait for {name}"))?.is_some() {
                drop(guard);
                self.kill_server().ctx(|| format!("cannot clean up after {name}"))?;
                return Ok(());
            }
            child.id()
        };
        util::signal(pid, libc::SIGINT).ctx(|| format!("cannot signal {name}"))?;
        let timeout = util::stop_timeout();
        let exited = {
            let mut guard = self.lock_child();
            let child = guard.as_mut().expect("checked above");
            util::wait_timeout(child, timeout).ctx(|| format!("cannot wait for {name}"))?.is_some()
        };
        // Reaps the postmaster, and cleans up after it when it did not exit by itself.
        self.kill_server().ctx(|| format!("cannot kill {name}"))?;
        if exited { Ok(()) } else { Err(Error::ShutdownTimeout { server: name, timeout }) }
    }

    /// Kills the server like a crash: SIGKILL to the postmaster and all its processes (backends
    /// run in their own process groups, so each is killed too), then waits until they are gone.
    /// The next [`restart`](Self::restart) runs crash recovery. Killing a server that does not
    /// run is a no-op.
    pub fn kill(&mut self) -> Result<(), Error> {
        let name = self.name();
        self.kill_server().ctx(|| format!("cannot kill {name}"))
    }

    /// Starts the server again on the same port, data directory and settings, after
    /// [`stop`](Self::stop) or [`kill`](Self::kill), and waits until it accepts connections. A
    /// running server is stopped cleanly first.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop()?;
        self.launch()
    }

    /// SIGKILLs the postmaster and its children, reaps it, and removes what a dead postmaster
    /// leaves behind (its SysV shared memory segment, pid file and socket lock) so that the next
    /// start cannot mistake a recycled pid for a live server.
    fn kill_server(&self) -> std::io::Result<()> {
        let Some(mut child) = self.lock_child().take() else { return Ok(()) };
        let pid = child.id();
        if child.try_wait()?.is_none() {
            // Freeze the postmaster so it cannot fork more children while they are collected; its
            // children cannot be reaped while it is stopped, so their pids stay valid. Errors of
            // these steps are ignored: the postmaster must be killed and reaped in any case.
            let _ = util::signal(pid, libc::SIGSTOP);
            let children = util::children_of(pid);
            for &c in &children {
                // Each backend leads its own process group: also kill what it may have started.
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(-(c as libc::pid_t), libc::SIGKILL) };
                let _ = util::signal(c, libc::SIGKILL);
            }
            util::kill_and_reap(&mut child)?;
            // The children are orphans now, reaped by init. None may still run (and hold shared
            // memory) when the server is started again.
            util::wait_dead(&children, Duration::from_secs(10));
        }
        self.remove_leftovers();
        Ok(())
    }

    fn remove_leftovers(&self) {
        let pid_file = self.pid_file();
        if pid_file.exists() {
            util::remove_postgres_shm(&pid_file);
            util::remove_file_quiet(&pid_file);
        }
        let socket = self.socket_file();
        util::remove_file_quiet(&socket.with_file_name(format!(".s.PGSQL.{}.lock", self.port())));
        util::remove_file_quiet(&socket);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.kill_server();
    }
}

/// The prepared cluster every instance is copied from, built once per machine and PostgreSQL
/// installation.
fn template(bins: &Binaries, owner: Option<OsUser>) -> Result<PathBuf, Error> {
    let version = util::run_checked(Command::new(&bins.postgres).arg("--version"))?;
    let mut hasher = DefaultHasher::new();
    (util::TEMPLATE_REV, version.trim(), PASSWORD, PG_HBA, INSTANCE_CONF, owner.map(|u| (u.uid, u.gid)))
        .hash(&mut hasher);
    util::fingerprint(&mut hasher, &[&bins.postgres, &bins.initdb]);
    let name = util::template_name("postgres", hasher);
    util::template(&name, |dir| build_template(bins, owner, dir))
}

fn build_template(bins: &Binaries, owner: Option<OsUser>, dir: &Path) -> Result<(), Error> {
    util::chown_opt(dir, owner).ctx(|| format!("cannot chown {}", dir.display()))?;
    let pwfile = dir.join("pwfile");
    util::write_file(&pwfile, &format!("{PASSWORD}\n"), 0o600, owner)
        .ctx(|| format!("cannot write {}", pwfile.display()))?;
    let data = dir.join("data");
    let mut initdb = Command::new(&bins.initdb);
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"])
        .args(["--locale=C", "--encoding=UTF8"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .current_dir(dir)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env_remove("PGDATA");
    if let Some(u) = owner {
        use std::os::unix::process::CommandExt;
        initdb.uid(u.uid).gid(u.gid);
    }
    util::run_checked(&mut initdb)?;
    util::remove_file_quiet(&pwfile);
    let hba = data.join("pg_hba.conf");
    util::write_file(&hba, PG_HBA, 0o600, owner).ctx(|| format!("cannot write {}", hba.display()))?;
    let conf = data.join("postgresql.conf");
    let mut text = fs::read_to_string(&conf).ctx(|| format!("cannot read {}", conf.display()))?;
    text.push_str(&format!(
        "\n# Per-instance settings of idaas-testkit.\ninclude_if_exists = '{INSTANCE_CONF}'\n"
    ));
    util::write_file(&conf, &text, 0o600, owner).ctx(|| format!("cannot write {}", conf.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options() {
        let o = PostgresOptions::default();
        assert_eq!(o.wal_level, "logical");
        assert!(o.extra_conf.is_empty());
    }

    #[test]
    fn start_query_and_drop_cleans_up() {
        let pg = Postgres::start().unwrap();
        assert!(pg.is_running());
        assert_eq!(pg.sql("SELECT 1 + 1, 'a'").unwrap(), "2\ta\n");
        assert_eq!(pg.url(), format!("postgres://postgres:testkit-pg@127.0.0.1:{}/postgres", pg.port()));
        assert_eq!(pg.sql("SHOW port").unwrap().trim(), pg.port().to_string());
        assert_eq!(pg.sql("SHOW TimeZone").unwrap(), "UTC\n");
        assert_eq!(pg.sql("SHOW server_encoding").unwrap(), "UTF8\n");
        let err = pg.sql("SELECT 1; SELECT * FROM no_such_table; SELECT 2").unwrap_err();
        assert!(matches!(&err, Error::Sql { stdout, .. } if stdout == "1\n"), "{err:?}");
        assert!(err.to_string().contains("no_such_table"), "{err}");
        let pid = pg.pid().unwrap();
        let dir = pg.data_dir().to_path_buf();
        drop(pg);
        assert!(util::is_dead(pid));
        assert!(!dir.exists());
    }

    #[test]
    fn password_auth_over_tcp() {
        let pg = Postgres::start().unwrap();
        let psql = |password: &str, replication: bool| {
            let mut conninfo = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", pg.port());
            if replication {
                conninfo.push_str(" replication=database");
            }
            Command::new(&pg.bins.psql)
                .args(["-X", "-A", "-t", "-c", "IDENTIFY_SYSTEM", &conninfo])
                .env("PGPASSWORD", password)
                .output()
                .unwrap()
        };
        let ok = psql(pg.password(), true);
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        let bad = psql("wrong", false);
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"));
    }

    #[test]
    fn extra_conf_and_wal_level() {
        let pg = Postgres::start_with(PostgresOptions {
            wal_level: "replica".into(),
            extra_conf: vec![("work_mem".into(), "7MB".into()), ("cluster_name".into(), "it's me".into())],
        })
        .unwrap();
        assert_eq!(pg.sql("SHOW wal_level").unwrap(), "replica\n");
        assert_eq!(pg.sql("SHOW work_mem").unwrap(), "7MB\n");
        assert_eq!(pg.sql("SHOW cluster_name").unwrap(), "it's me\n");
    }

    #[test]
    fn kill_takes_busy_backends_down_too() {
        let mut pg = Postgres::start().unwrap();
        pg.sql("CREATE TABLE t (id int)").unwrap();
        let mut client = Command::new(&pg.bins.psql)
            .args(["-X", "-h"])
            .arg(pg.socket_dir())
            .args(["-p", &pg.port().to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-c", "BEGIN; INSERT INTO t VALUES (1); SELECT pg_sleep(60)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pg.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)'").unwrap()
            != "1\n"
        {
            assert!(Instant::now() < deadline, "the sleeping session did not show up");
            thread::sleep(Duration::from_millis(10));
        }
        let pid = pg.pid().unwrap();
        let backends = util::children_of(pid);
        assert!(backends.len() >= 5, "{backends:?}");
        pg.kill().unwrap();
        assert!(backends.iter().all(|&b| util::is_dead(b)));
        let status =
            util::wait_timeout(&mut client, Duration::from_secs(10)).unwrap().expect("client still runs");
        assert!(!status.success());
        pg.restart().unwrap();
        // The open transaction was lost with the crash.
        assert_eq!(pg.sql("SELECT count(*) FROM t").unwrap(), "0\n");
    }

    #[test]
    fn bad_setting_fails_with_the_log() {
        let err = Postgres::start_with(PostgresOptions {
            extra_conf: vec![("no_such_setting_idaas".into(), "1".into())],
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, Error::StartupFailed { .. }), "{err}");
        assert!(err.to_string().contains("no_such_setting_idaas"), "{err}");
    }
}
