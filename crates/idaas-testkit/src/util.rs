//! Process, port, file and cache helpers shared by the MariaDB and PostgreSQL launchers.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::error::{Error, IoContext};

/// Bumped whenever the way templates are built changes, so stale caches are not reused.
pub(crate) const TEMPLATE_REV: u32 = 1;

/// How long a server may take to accept connections.
pub(crate) fn start_timeout() -> Duration {
    env_secs("IDAAS_TESTKIT_START_TIMEOUT_SECS", 30)
}

/// How long a clean shutdown may take before the process is killed.
pub(crate) fn stop_timeout() -> Duration {
    env_secs("IDAAS_TESTKIT_STOP_TIMEOUT_SECS", 60)
}

fn env_secs(name: &str, default: u64) -> Duration {
    let secs = std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|&s| s > 0);
    Duration::from_secs(secs.unwrap_or(default))
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// An OS account another process can be run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OsUser {
    pub uid: u32,
    pub gid: u32,
}

/// Looks an OS user up by name (through NSS, like `id NAME`).
pub(crate) fn lookup_user(name: &str) -> Option<OsUser> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 1 << 16];
    // SAFETY: passwd is a plain C struct; all-zero is a valid (if meaningless) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and buf.len() is its real size.
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(OsUser { uid: pwd.pw_uid, gid: pwd.pw_gid })
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns a server process.
///
/// The child gets its own process group (so a Ctrl-C on the terminal does not reach it) and
/// `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with the test process even when that process is killed
/// and never runs destructors. The parent-death signal fires when the *thread* that forked exits,
/// so all servers are forked from one long-lived thread: instances can then be created on a short
/// lived test thread and used from another one.
pub(crate) fn spawn_server(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let parent = std::process::id();
    cmd.process_group(0);
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid) and builds an
    // io::Error from a raw errno, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        thread::Builder::new()
            .name("idaas-testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the idaas-testkit spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .map_err(|_| io::Error::other("idaas-testkit spawner thread is gone"))?;
    rx.recv().map_err(|_| io::Error::other("idaas-testkit spawner thread did not answer"))?
}

/// Waits for a child to exit, for at most `timeout`.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub(crate) fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) { Ok(()) } else { Err(err) }
}

/// SIGKILLs a child and reaps it.
pub(crate) fn kill_and_reap(child: &mut Child) -> io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    signal(child.id(), libc::SIGKILL)?;
    child.wait()
}

/// The pids of the direct children of `pid` (from `/proc`).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| proc_stat(p).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// State letter and parent pid of a process, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether a process no longer runs (it is gone, or a zombie nobody reaped yet).
pub(crate) fn is_dead(pid: u32) -> bool {
    match proc_stat(pid) {
        None => true,
        Some((state, _)) => matches!(state, 'Z' | 'X' | 'x'),
    }
}

/// Waits until all `pids` are dead (gone, or zombies waiting for their new parent to reap them),
/// for at most `timeout`. Returns whether they all are.
pub(crate) fn wait_dead(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|&p| is_dead(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs a helper program to completion, failing with its output when it does not succeed.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<String, Error> {
    let line = command_line(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .ctx(|| format!("cannot run `{line}`"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(Error::Command { command: line, status: out.status.to_string(), output: text })
    }
}

/// Runs a command line client with `input` on stdin; returns (success, stdout, stderr).
pub(crate) fn run_with_input(cmd: &mut Command, input: &str) -> Result<(bool, String, String), Error> {
    let line = command_line(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx(|| format!("cannot run `{line}`"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.as_bytes().to_vec();
    // Write from another thread: a big script and a big result could otherwise deadlock.
    let writer = thread::spawn(move || {
        // A client that stops early closes its stdin; that is reported through its exit status.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().ctx(|| format!("cannot run `{line}`"))?;
    let _ = writer.join();
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// Finds an executable: first in `dirs`, then on `PATH`.
pub(crate) fn find_binary(names: &[&str], dirs: &[&Path]) -> Option<PathBuf> {
    let path_dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for name in names {
        for dir in dirs.iter().copied().chain(path_dirs.iter().map(PathBuf::as_path)) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A fingerprint of installed binaries: path, size and modification time of each.
pub(crate) fn fingerprint(hasher: &mut DefaultHasher, binaries: &[&Path]) {
    for bin in binaries {
        bin.hash(hasher);
        if let Ok(m) = fs::metadata(bin) {
            (m.len(), m.mtime(), m.mtime_nsec(), m.ino()).hash(hasher);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// Ports handed out by this process and not yet released.
fn ports_in_use() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// A TCP port reserved for one server for as long as the lease lives.
///
/// Inside this process the port is not handed out twice; across processes an `flock` on
/// `$TMPDIR/idaas-testkit-ports/PORT` keeps other testkit users away from it even while the
/// server is down between a kill and a restart.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
    _lock: Option<File>,
}

impl PortLease {
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        ports_in_use().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.port);
    }
}

/// Reserves a port that is free on 127.0.0.1.
///
/// Ports are picked at random below the kernel's ephemeral range, so that outgoing connections
/// (which take their local port from that range) cannot occupy the port of a server that is
/// being restarted. When that range is unusable the kernel picks (bind to port 0).
pub(crate) fn lease_port() -> PortLease {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.min(65_536));
    if high > low + 1000 {
        for _ in 0..2000 {
            let port = (low + (random_u64() % u64::from(high - low)) as u32) as u16;
            if let Some(lease) = try_lease(port) {
                return lease;
            }
        }
    }
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).map(|a| a.port());
        if let Ok(port) = port
            && let Some(lease) = try_lease(port)
        {
            return lease;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn try_lease(port: u16) -> Option<PortLease> {
    let mut in_use = ports_in_use().lock().unwrap_or_else(|e| e.into_inner());
    if in_use.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
        return None;
    }
    let lock = match lock_port_file(port) {
        Ok(Some(file)) => Some(file),
        Ok(None) => return None, // held by another process
        Err(_) => None,          // cannot coordinate through files; the bind check must do
    };
    in_use.insert(port);
    Some(PortLease { port, _lock: lock })
}

/// Takes the cross-process lock of a port: `Ok(None)` when another process holds it.
fn lock_port_file(port: u16) -> io::Result<Option<File>> {
    let dir = std::env::temp_dir().join("idaas-testkit-ports");
    if !dir.is_dir() {
        match fs::DirBuilder::new().mode(0o1777).create(&dir) {
            Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let path = dir.join(port.to_string());
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(&path)
    {
        Ok(f) => f,
        // A file left by another user: a shared lock on a read-only descriptor still works.
        Err(_) => File::open(&path)?,
    };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(Some(file))
    } else {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(None) } else { Err(err) }
    }
}

/// Returns a TCP port that is free on 127.0.0.1 right now.
///
/// The port is reserved for the rest of the process: this process will not hand it out again,
/// and other processes using this crate will not pick it while this one lives. Nothing keeps
/// programs that do not use this crate from taking it, so bind it soon.
pub fn free_port() -> u16 {
    static KEPT: Mutex<Vec<PortLease>> = Mutex::new(Vec::new());
    let lease = lease_port();
    let port = lease.port;
    KEPT.lock().unwrap_or_else(|e| e.into_inner()).push(lease);
    port
}

/// A pseudo-random number (splitmix64 seeded from time and pid); good for picking ports and
/// server ids, not for anything secret.
pub(crate) fn random_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = || {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15
    };
    let _ = STATE.compare_exchange(0, seed(), Ordering::Relaxed, Ordering::Relaxed);
    let mut z = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// Copies a directory tree, keeping permission bits, optionally giving everything to `owner`.
pub(crate) fn copy_tree(src: &Path, dst: &Path, owner: Option<OsUser>) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    fs::DirBuilder::new().mode(0o700).create(dst)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.permissions().mode() & 0o7777))?;
    chown_opt(dst, owner)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to, owner)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            if let Some(u) = owner {
                std::os::unix::fs::lchown(&to, Some(u.uid), Some(u.gid))?;
            }
        } else if kind.is_file() {
            fs::copy(&from, &to)?;
            chown_opt(&to, owner)?;
        }
        // Sockets, fifos and devices are runtime leftovers; they are not copied.
    }
    Ok(())
}

pub(crate) fn chown_opt(path: &Path, owner: Option<OsUser>) -> io::Result<()> {
    match owner {
        Some(u) => std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)),
        None => Ok(()),
    }
}

/// Writes a file with the given mode, owned by `owner`.
pub(crate) fn write_file(path: &Path, contents: &str, mode: u32, owner: Option<OsUser>) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path)?;
    f.write_all(contents.as_bytes())?;
    chown_opt(path, owner)
}

/// Removes the SysV shared memory segment a dead postmaster left behind, as recorded on line 7
/// (`KEY ID`) of its `postmaster.pid`; only when it still has that key and nobody is attached.
pub(crate) fn remove_postgres_shm(pid_file: &Path) {
    let Ok(text) = fs::read_to_string(pid_file) else { return };
    let Some(line) = text.lines().nth(6) else { return };
    let mut fields = line.split_whitespace();
    let (Some(Ok(key)), Some(Ok(id))) =
        (fields.next().map(str::parse::<libc::key_t>), fields.next().map(str::parse::<libc::c_int>))
    else {
        return;
    };
    // SAFETY: shmid_ds is a plain C struct; IPC_STAT fills it, IPC_RMID takes no buffer.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0 && ds.shm_perm.__key == key && ds.shm_nattch == 0 {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

/// Removes a file; a missing file is fine.
pub(crate) fn remove_file_quiet(path: &Path) {
    let _ = fs::remove_file(path);
}

/// The last `lines` lines of a log file (reads at most the last 64 KiB).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else { return format!("(cannot read {})", path.display()) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a path fits in a unix socket address (`sun_path` is 108 bytes with the NUL).
pub(crate) fn fits_socket(path: &Path) -> bool {
    path.as_os_str().len() < 100
}

/// Where instance and template directories are created: `$TMPDIR`, or `/tmp` when unix socket
/// paths under `$TMPDIR` would be too long, or when the caller is root and `$TMPDIR` is not
/// reachable for the `postgres` user.
fn tmp_root() -> PathBuf {
    let tmp = std::env::temp_dir();
    let fits =
        fits_socket(&tmp.join("idaas-testkit-cache-4294967295/mariadb-0123456789abcdef.tmp-4294967/x.sock"));
    let reachable = euid() != 0
        || tmp.ancestors().all(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if fits && reachable { tmp } else { PathBuf::from("/tmp") }
}

/// The name of the file recording which process owns an instance directory.
const OWNER_FILE: &str = "owner";

/// Creates the temporary directory of a new instance, `idaas-testkit-KIND-XXXXXX`.
///
/// It records its owner (pid and process start time), so directories left behind by test
/// processes that were killed (and could not run destructors) are removed by the next process
/// that creates one.
pub(crate) fn instance_dir(kind: &str) -> Result<TempDir, Error> {
    let base = tmp_root();
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| sweep_orphaned_dirs(&base));
    let dir = tempfile::Builder::new()
        .prefix(&format!("idaas-testkit-{kind}-"))
        .tempdir_in(&base)
        .ctx(|| format!("cannot create a temporary directory in {}", base.display()))?;
    let me = std::process::id();
    let owner = format!("{me} {}\n", process_start_time(me).unwrap_or(0));
    let path = dir.path().join(OWNER_FILE);
    write_file(&path, &owner, 0o644, None).ctx(|| format!("cannot write {}", path.display()))?;
    Ok(dir)
}

/// The start time of a process (clock ticks after boot), which tells a recycled pid apart.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the fields after the command name start with field 3.
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(19)?.parse().ok()
}

/// Removes instance directories whose owning process is gone.
fn sweep_orphaned_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("idaas-testkit-mariadb-") || name.starts_with("idaas-testkit-postgres-")) {
            continue;
        }
        let path = entry.path();
        // No owner file: being created right now, or not ours to judge.
        let Ok(owner) = fs::read_to_string(path.join(OWNER_FILE)) else { continue };
        let mut fields = owner.split_whitespace().map(|f| f.parse::<u64>().ok());
        let (Some(Some(pid)), Some(Some(start))) = (fields.next(), fields.next()) else { continue };
        let alive = u32::try_from(pid).ok().and_then(process_start_time).is_some_and(|s| s == start);
        // Only directories this user created (the owner file is never chowned).
        if !alive && fs::metadata(path.join(OWNER_FILE)).is_ok_and(|m| m.uid() == euid()) {
            remove_postgres_shm(&path.join("data/postmaster.pid"));
            let _ = fs::remove_dir_all(&path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Template cache
// ---------------------------------------------------------------------------------------------

/// Returns the directory of a prepared template, building it first when needed.
///
/// Templates live in `$TMPDIR/idaas-testkit-cache-UID/NAME` and are shared by every process of
/// that user. `build` gets an empty scratch directory; when it succeeds, the scratch directory is
/// renamed to the final name, so a half-built template is never used. An `flock` on
/// `NAME.lock` makes concurrent processes (e.g. `cargo nextest`) wait for the first builder
/// instead of all building at once.
pub(crate) fn template(name: &str, build: impl FnOnce(&Path) -> Result<(), Error>) -> Result<PathBuf, Error> {
    let root = tmp_root().join(format!("idaas-testkit-cache-{}", euid()));
    let done = root.join(name);
    let marker = done.join("template-complete");
    if marker.exists() {
        return Ok(done);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&root)
        .ctx(|| format!("cannot create {}", root.display()))?;
    // Other users (postgres) must be able to traverse into their templates.
    let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o755));
    let lock_path = root.join(format!("{name}.lock"));
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .ctx(|| format!("cannot open {}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; blocks until the current builder is done.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::io(format!("cannot lock {}", lock_path.display()), err));
        }
    }
    if marker.exists() {
        return Ok(done);
    }
    // Whatever scratch directories exist now were left by builders that died: we hold the lock.
    let scratch_prefix = format!("{name}.tmp-");
    if let Ok(entries) = fs::read_dir(&root) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&scratch_prefix) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    if done.exists() {
        let _ = fs::remove_dir_all(&done);
    }
    let scratch = root.join(format!("{scratch_prefix}{}", std::process::id()));
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&scratch)
        .ctx(|| format!("cannot create {}", scratch.display()))?;
    let result = build(&scratch).and_then(|()| {
        write_file(&scratch.join("template-complete"), "ok\n", 0o644, None)
            .and_then(|()| fs::rename(&scratch, &done))
            .ctx(|| format!("cannot finish template {}", done.display()))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&scratch);
    }
    result.map(|()| done)
}

/// A short stable name for a template: `PREFIX-HASH`.
pub(crate) fn template_name(prefix: &str, hasher: DefaultHasher) -> String {
    format!("{prefix}-{:016x}", hasher.finish())
}

/// Quotes a string for a `postgresql.conf` value or an SQL literal: `'it''s'`.
pub(crate) fn single_quote(s: impl AsRef<OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_within_the_process() {
        let leases: Vec<PortLease> = (0..50).map(|_| lease_port()).collect();
        let ports: HashSet<u16> = leases.iter().map(|l| l.port()).collect();
        assert_eq!(ports.len(), leases.len());
        for p in &ports {
            assert!(*p >= 1024);
        }
        let p = leases[0].port();
        drop(leases);
        assert!(!ports_in_use().lock().unwrap().contains(&p));
    }

    #[test]
    fn free_port_is_bindable() {
        let p = free_port();
        TcpListener::bind(("127.0.0.1", p)).expect("free port should be bindable");
        assert_ne!(free_port(), p);
    }

    #[test]
    fn tail_returns_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).unwrap();
        assert_eq!(tail(&path, 2), "line 98\nline 99");
        assert!(tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }

    #[test]
    fn copy_tree_keeps_modes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        write_file(&src.join("sub/f"), "hello", 0o600, None).unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("link")).unwrap();
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst, None).unwrap();
        assert_eq!(fs::read_to_string(dst.join("sub/f")).unwrap(), "hello");
        assert_eq!(fs::read_to_string(dst.join("link")).unwrap(), "hello");
        assert_eq!(fs::metadata(dst.join("sub/f")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dst.join("sub")).unwrap().permissions().mode() & 0o777, 0o750);
    }

    #[test]
    fn proc_helpers_see_this_process() {
        let me = std::process::id();
        assert!(!is_dead(me));
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(children_of(me).contains(&child.id()));
        kill_and_reap(&mut child).unwrap();
        assert!(is_dead(child.id()));
    }

    #[test]
    fn spawned_servers_get_their_own_process_group() {
        let mut child = spawn_server({
            let mut c = Command::new("sleep");
            c.arg("30");
            c
        })
        .unwrap();
        // SAFETY: getpgid has no memory-safety preconditions.
        let pgid = unsafe { libc::getpgid(child.id() as libc::pid_t) };
        assert_eq!(pgid as u32, child.id());
        assert!(wait_timeout(&mut child, Duration::from_millis(20)).unwrap().is_none());
        kill_and_reap(&mut child).unwrap();
    }

    #[test]
    fn quoting() {
        assert_eq!(single_quote("it's"), "'it''s'");
    }

    #[test]
    fn root_user_exists() {
        assert_eq!(lookup_user("root"), Some(OsUser { uid: 0, gid: 0 }));
        assert_eq!(lookup_user("no-such-user-idaas"), None);
    }
}
