//! Test helpers that read like the spec: start the real `ringway` binary on a
//! generated configuration, start echo backends, talk to them over
//! 127.0.0.1. Every wait is bounded. `RINGWAY_TEST_LOG=debug` shows
//! ringway's per-connection lines in a failing test's output.
#![allow(dead_code)] // each test binary uses its own subset of the helpers

pub mod client_hello;
pub mod dns;
pub mod etcd;
pub mod http_gw;
pub mod origin;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// How long a test waits for anything before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Ports on 127.0.0.1 held for as long as this value lives: declare it first
/// in a test, so it outlives the ringway that binds them.
///
/// A port read off a socket that was then closed ("free a moment ago") can be
/// taken by anyone before ringway binds it: another test's bind to port 0,
/// or the source port of a connect (ringway's own upstream connects, a
/// client's). Each port here stays bound to a socket that never listens, so
/// no connection can land on it, and the kernel hands it to no bind to port
/// 0 and to no connect (both skip a port with a bound socket). Only the
/// binder it is reserved for can bind it while it is held (Linux
/// `inet_bind_conflict`): see [`Ports::listener`] and [`Ports::admin`].
#[derive(Default)]
pub struct Ports {
    held: std::cell::RefCell<Vec<socket2::Socket>>,
}

/// Who may bind a reserved port while it is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binder {
    /// ringway's listeners: SO_REUSEPORT, as `src/dataplane/listener.rs`
    /// sets it (with SO_REUSEADDR). The reservation sets SO_REUSEPORT alone,
    /// so any other binder without SO_REUSEPORT, SO_REUSEADDR or not (std's
    /// `TcpListener::bind`), is refused.
    Listener,
    /// ringway's admin endpoint: SO_REUSEADDR without SO_REUSEPORT, as
    /// `src/control/server.rs` binds it (and as openssl s_server and std's
    /// `TcpListener::bind` do). A binder without SO_REUSEADDR is refused.
    Admin,
    /// Nobody: no option set, so every bind is refused and a connect is
    /// refused too (an upstream that is down).
    Nobody,
}

impl Ports {
    pub fn new() -> Ports {
        Ports::default()
    }

    /// A port for a ringway listener (a Gateway server's port).
    pub fn listener(&self) -> u16 {
        self.reserve(Binder::Listener)
    }

    /// A port for ringway's admin endpoint (`--admin 127.0.0.1:<port>`), or
    /// for another server that binds with SO_REUSEADDR (openssl s_server).
    pub fn admin(&self) -> u16 {
        self.reserve(Binder::Admin)
    }

    /// A port nothing listens on and nothing can bind: connections to it
    /// are refused for as long as it is held.
    pub fn closed(&self) -> u16 {
        self.reserve(Binder::Nobody)
    }

    /// A port on 127.0.0.1 that only `binder` may bind while it is held.
    pub fn reserve(&self, binder: Binder) -> u16 {
        let socket = reservation(binder, 0).expect("reserve a port on 127.0.0.1");
        let port = socket
            .local_addr()
            .expect("local addr")
            .as_socket()
            .expect("an IP address")
            .port();
        self.held.borrow_mut().push(socket);
        port
    }
}

/// A socket bound to 127.0.0.1:`port` (0: the kernel's choice) with the
/// options `binder` needs to share it, never listening.
pub fn reservation(binder: Binder, port: u16) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    match binder {
        Binder::Listener => socket.set_reuse_port(true)?,
        Binder::Admin => socket.set_reuse_address(true)?,
        Binder::Nobody => {}
    }
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    socket.bind(&addr.into())?;
    Ok(socket)
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples")
}

/// A configuration directory: example files with their ports replaced.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        ConfigDir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Copy `example` (relative to config/examples) as `name`, replacing each
    /// `(from, to)` text.
    pub fn example(self, example: &str, name: &str, replace: &[(&str, String)]) -> ConfigDir {
        let mut text = std::fs::read_to_string(examples().join(example)).expect("read example");
        for (from, to) in replace {
            assert!(text.contains(from), "{example} has no {from:?}");
            text = text.replace(from, to);
        }
        self.file(name, &text)
    }

    pub fn file(self, name: &str, text: &str) -> ConfigDir {
        std::fs::write(self.dir.path().join(name), text).expect("write config");
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The tcp-echo example directory (Istio's tutorial), with the listener on
/// `listen` and subsets v1 and v2 on the two backends; `shift` adds the
/// 80/20 traffic shift (`tcp-echo-20-v2.yaml`), else all goes to v1.
pub fn tcp_echo(listen: u16, v1: &EchoBackend, v2: &EchoBackend, shift: bool) -> ConfigDir {
    let ports = [("31400", listen.to_string())];
    let mut dir = ConfigDir::new()
        .example(
            "tcp-echo/00-service-entry.yaml",
            "00-service-entry.yaml",
            &[
                ("19000", v1.port.to_string()),
                ("29000", v2.port.to_string()),
            ],
        )
        .example("tcp-echo/10-tcp-echo-all-v1.yaml", "10-all-v1.yaml", &ports);
    if shift {
        dir = dir.example("tcp-echo/20-tcp-echo-20-v2.yaml", "20-20-v2.yaml", &ports);
    }
    dir
}

/// The access log's JSON lines (`--log-format json`), once there are at
/// least `n` of them.
pub fn access_log(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} access log lines, have:\n{text}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The sum of the samples of `name` whose labels contain every `label`.
pub fn sample(metrics: &str, name: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Poll `/metrics` until `ok` holds on it.
pub fn wait_metrics(admin: u16, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = http(admin, "GET", "/metrics");
        if status == 200 && ok(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "metrics never matched:\n{body}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `ok` every 20 ms until it holds; fails the test after
/// [`PATIENCE`], saying what it waited for.
pub fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A line-oriented connection to `port` on 127.0.0.1 (see [`chat`]).
pub fn open(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    BufReader::new(s)
}

/// One line over an open connection, and the line that comes back.
pub fn chat(s: &mut BufReader<TcpStream>, line: &str) -> String {
    s.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    s.read_line(&mut reply).unwrap();
    reply.trim_end().to_owned()
}

/// The real `ringway` binary, killed by PID on drop.
pub struct Ringway {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Its standard output, when started with [`Ringway::spawn_with_stdout`]
    /// and `Stdio::piped()`.
    pub stdout: Option<std::process::ChildStdout>,
}

/// The binary under test: this build's, or `RINGWAY_BIN` (to check that a
/// new test fails against an older build).
pub fn ringway_bin() -> PathBuf {
    std::env::var_os("RINGWAY_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_ringway").into(), PathBuf::from)
}

/// Give the process `cmd` starts a descriptor limit of `n`, soft and hard
/// (ringway raises its soft limit to the hard one).
pub fn limit_descriptors(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe, and the closure touches
    // nothing but its own stack.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn require_uring() -> bool {
    std::env::var("RINGWAY_REQUIRE_URING").is_ok_and(|v| v == "1")
}

impl Ringway {
    /// `ringway run -c <dir> <args>`; waits until it serves (see
    /// [`Ringway::spawn`]). `None` (after a loud message) when this kernel
    /// or sandbox has no io_uring, unless RINGWAY_REQUIRE_URING=1, where
    /// that fails the test.
    pub fn start(config: &ConfigDir, args: &[&str]) -> Option<Ringway> {
        Self::spawn(Self::command(config, args))
    }

    /// The command [`Ringway::start`] runs, for a test to add to (an
    /// environment variable) before [`Ringway::spawn`].
    pub fn command(config: &ConfigDir, args: &[&str]) -> Command {
        let mut cmd = Command::new(ringway_bin());
        cmd.arg("run").arg("-c").arg(config.path()).args(args);
        // Tests run side by side: no admin endpoint on the fixed default port
        // unless the test asks for one.
        if !args.contains(&"--admin") {
            cmd.args(["--admin", "off"]);
        }
        cmd
    }

    /// Start `cmd` (a `ringway run`) and wait until it serves: with an
    /// admin endpoint (`--admin ADDR`), until `/ready` answers (see
    /// [`Readiness`]); without one, until it logs "serving".
    pub fn spawn(cmd: Command) -> Option<Ringway> {
        Self::spawn_with_stdout(cmd, Stdio::null())
    }

    /// [`Ringway::spawn`] with its standard output going to `stdout`.
    pub fn spawn_with_stdout(mut cmd: Command, stdout: Stdio) -> Option<Ringway> {
        let readiness = Readiness::of(&cmd);
        // A test that sets RUST_LOG itself (to count debug lines) keeps it.
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env(
                "RUST_LOG",
                // The helpers wait for info lines ("serving"): never less than info.
                std::env::var("RINGWAY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        }
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ringway");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[ringway] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take();
        let mut gw = Ringway { child, log, stdout };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if readiness.reached(&gw) {
                return Some(gw);
            }
            if let Ok(Some(status)) = gw.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                let text = gw.log.lock().unwrap().join("\n");
                if text.contains("io_uring") && !require_uring() {
                    eprintln!(
                        "SKIPPED: io_uring is unavailable here ({status}); set RINGWAY_REQUIRE_URING=1 to fail instead:\n{text}"
                    );
                    return None;
                }
                panic!("ringway exited before serving ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "ringway did not start serving in time ({readiness:?}):\n{}",
                gw.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// How many log lines so far contain `needle`.
    pub fn count_logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open descriptors of the process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, Iterator::count)
    }

    /// Names of the process's threads (`/proc/<pid>/task/*/comm`).
    pub fn threads(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) {
            for t in tasks.flatten() {
                if let Ok(comm) = std::fs::read_to_string(t.path().join("comm")) {
                    names.push(comm.trim().to_owned());
                }
            }
        }
        names
    }

    /// Open pipe descriptors of the process.
    pub fn pipes(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|fds| {
                fds.flatten()
                    .filter(|fd| {
                        std::fs::read_link(fd.path())
                            .is_ok_and(|l| l.to_string_lossy().starts_with("pipe:"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Send a signal (`TERM`, `HUP`...) with kill(1).
    pub fn signal(&self, name: &str) {
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
    }

    /// Whether the process has exited (without reaping it).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Wait (boundedly) for the exit status.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "ringway did not exit in time");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How [`Ringway::spawn`] knows that start-up is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// `GET /ready` on the admin endpoint answers 200, or 503 because some
    /// listener could not be bound (start-up is over; the test asserts on
    /// /ready itself). The admin endpoint starts after every worker.
    Admin(SocketAddr),
    /// No admin endpoint: the log line "serving" (after every worker).
    Log,
}

impl Readiness {
    /// From `cmd`'s `--admin ADDR`, if it has one other than `off`.
    pub fn of(cmd: &Command) -> Readiness {
        let args: Vec<_> = cmd.get_args().collect();
        let admin = args
            .iter()
            .position(|a| *a == "--admin")
            .and_then(|i| args.get(i + 1))
            .and_then(|a| a.to_str()?.parse::<SocketAddr>().ok());
        match admin {
            Some(mut address) => {
                if address.ip().is_unspecified() {
                    address.set_ip([127, 0, 0, 1].into());
                }
                Readiness::Admin(address)
            }
            None => Readiness::Log,
        }
    }

    fn reached(self, gw: &Ringway) -> bool {
        match self {
            Readiness::Admin(address) => {
                match http_within(address.port(), "GET", "/ready", Duration::from_secs(1)) {
                    Some((200, _)) => true,
                    Some((503, body)) => body.contains("could not be bound"),
                    _ => false,
                }
            }
            Readiness::Log => gw.logged("serving"),
        }
    }
}

impl Drop for Ringway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an echo backend does with a connection.
#[derive(Clone)]
pub enum Behavior {
    /// Istio's tcp-echo: each line `x` is answered with `<prefix> x`.
    Lines(String),
    /// Every byte is sent back; EOF is answered with EOF.
    Raw,
    /// Read `n` bytes, then close the connection (an upstream dying mid-stream).
    CloseAfter(usize),
    /// Read a line `x`, hold the connection until the gate opens, answer
    /// `<prefix> x` and close: an upstream slow enough that connections
    /// pile up.
    Gated(String, Gate),
}

/// Opened once by the test; a [`Behavior::Gated`] backend (or an HTTP
/// origin's handler that calls [`Gate::wait`]) answers after.
#[derive(Clone, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    pub fn open(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Block until the test opens the gate (at most 60 s).
    pub fn wait(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.0.load(Ordering::Acquire) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A backend on 127.0.0.1, one thread per connection; stops on drop.
pub struct EchoBackend {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub accepted: Arc<AtomicUsize>,
}

impl EchoBackend {
    pub fn lines(prefix: &str) -> EchoBackend {
        Self::start(Behavior::Lines(prefix.to_owned()))
    }

    pub fn raw() -> EchoBackend {
        Self::start(Behavior::Raw)
    }

    pub fn start(behavior: Behavior) -> EchoBackend {
        let listener = listen_any(4096);
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop2, accepted2) = (Arc::clone(&stop), Arc::clone(&accepted));
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                accepted2.fetch_add(1, Ordering::Relaxed);
                let behavior = behavior.clone();
                let _ = thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || serve(conn, behavior));
            }
        });
        EchoBackend {
            port,
            stop,
            accepted,
        }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut conn: TcpStream, behavior: Behavior) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    match behavior {
        Behavior::Lines(prefix) => {
            let Ok(read) = conn.try_clone() else { return };
            for line in BufReader::new(read).lines() {
                let Ok(line) = line else { break };
                if conn
                    .write_all(format!("{prefix} {line}\n").as_bytes())
                    .is_err()
                {
                    break;
                }
            }
            let _ = conn.shutdown(Shutdown::Write);
        }
        Behavior::Raw => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = conn.shutdown(Shutdown::Write);
        }
        Behavior::CloseAfter(n) => {
            let mut buf = vec![0u8; n];
            let _ = conn.read_exact(&mut buf);
            drop(conn);
        }
        Behavior::Gated(prefix, gate) => {
            let Ok(read) = conn.try_clone() else { return };
            let mut line = String::new();
            if BufReader::new(read)
                .read_line(&mut line)
                .is_ok_and(|n| n > 0)
            {
                gate.wait();
                let _ = conn.write_all(format!("{prefix} {line}").as_bytes());
            }
        }
    }
}

/// A listener on 127.0.0.1 with a port of the kernel's choosing and a long
/// accept queue (std's 128 overflows when a test opens thousands of
/// connections at once, and an overflowing queue silently drops handshakes).
pub fn listen_any(backlog: i32) -> TcpListener {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    s.bind(&addr.into()).expect("bind backend");
    s.listen(backlog).expect("listen");
    s.into()
}

/// How many sockets listen on `port` (any address, IPv4 or IPv6), from
/// /proc/net/tcp{,6}: a way to see listeners open and close without
/// connecting to them (a probe connection would be one more connection).
pub fn listening(port: u16) -> usize {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|l| {
                    // sl local_address rem_address st ...
                    let mut fields = l.split_whitespace();
                    let local = fields.nth(1).unwrap_or("");
                    let state = fields.nth(1).unwrap_or("");
                    local.ends_with(&port) && state == "0A"
                })
                .count()
        })
        .sum()
}

/// Connect to the gateway's port on 127.0.0.1, with timeouts set.
pub fn connect(port: u16) -> TcpStream {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect to ringway");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.set_write_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// One line sent, one line back: what Istio's tutorial does with `nc`.
pub fn say(port: u16, line: &str) -> String {
    let mut s = connect(port);
    s.write_all(format!("{line}\n").as_bytes())
        .expect("send line");
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).expect("read reply");
    reply.trim_end().to_owned()
}

/// One TCP service `svc.default.svc.cluster.local:9000` whose endpoints are
/// 127.0.0.1 on `endpoints` (all labelled version v1, the subset the route
/// uses), behind a gateway on `listen`; `policy` is extra YAML under the
/// DestinationRule's `trafficPolicy` (indented 4 spaces), or empty.
pub fn tcp_service(listen: u16, endpoints: &[u16], policy: &str) -> ConfigDir {
    let endpoints: Vec<(u16, &str)> = endpoints.iter().map(|p| (*p, "v1")).collect();
    let text = yaml::join(&[
        yaml::gateway(&[listen], &[]),
        yaml::virtual_service("tcp", &yaml::tcp_route(&[("v1", 100)])),
        yaml::destination_rule(policy, &["v1"]),
        yaml::service_entry(&endpoints),
    ]);
    ConfigDir::new().file("svc.yaml", &text)
}

/// Read until EOF (or error); returns what was read and how it ended.
pub fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (data, Ok(())),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => return (data, Err(e)),
        }
    }
}

/// An HTTP/1.0 request to the admin endpoint: (status, body).
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// Like [`http`], but `None` when no answer comes within `timeout` (or the
/// connection fails).
pub fn http_within(
    port: u16,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(s, "{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Some((status, body))
}

/// Istio resources for tests, one document each; [`yaml::join`] makes a
/// file of them. Every service is `svc.default.svc.cluster.local:9000`
/// (short name `svc`), its endpoints 127.0.0.1 ports labelled
/// `version: <subset>`, behind Gateway `gw`.
pub mod yaml {
    /// Documents joined into one file.
    pub fn join(documents: &[String]) -> String {
        documents.join("---\n")
    }

    /// Gateway `gw`: a TCP server on each of `tcp`, a TLS passthrough
    /// server on each of `tls`.
    pub fn gateway(tcp: &[u16], tls: &[u16]) -> String {
        let tcp = tcp.iter().map(|p| {
            format!("  - port:\n      number: {p}\n      name: tcp-{p}\n      protocol: TCP\n    hosts:\n    - \"*\"\n")
        });
        let tls = tls.iter().map(|p| {
            format!("  - port:\n      number: {p}\n      name: tls-{p}\n      protocol: TLS\n    tls:\n      mode: PASSTHROUGH\n    hosts:\n    - \"*\"\n")
        });
        let servers: String = tcp.chain(tls).collect();
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n{servers}"
        )
    }

    /// VirtualService `svc` bound to `gw`; `section` is `tcp` or `tls`,
    /// `routes` its list items (from [`tcp_route`] or [`tls_route`]).
    pub fn virtual_service(section: &str, routes: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc\nspec:\n  hosts:\n  - \"*\"\n  gateways:\n  - gw\n  {section}:\n{routes}"
        )
    }

    fn destinations(weighted: &[(&str, u32)]) -> String {
        weighted
            .iter()
            .map(|(subset, weight)| {
                format!("    - destination:\n        host: svc\n        port:\n          number: 9000\n        subset: {subset}\n      weight: {weight}\n")
            })
            .collect()
    }

    /// A `tcp` route to subsets with weights.
    pub fn tcp_route(weighted: &[(&str, u32)]) -> String {
        format!("  - route:\n{}", destinations(weighted))
    }

    /// A `tls` route for `sni_hosts` (YAML flow list items) to one subset.
    pub fn tls_route(sni_hosts: &str, subset: &str) -> String {
        format!(
            "  - match:\n    - sniHosts: [{sni_hosts}]\n    route:\n{}",
            destinations(&[(subset, 100)])
        )
    }

    /// DestinationRule for `svc` declaring `subsets` (each selecting
    /// `version: <name>`); `policy` is YAML under `trafficPolicy`
    /// (indented 4 spaces), or empty.
    pub fn destination_rule(policy: &str, subsets: &[&str]) -> String {
        let policy = match policy {
            "" => String::new(),
            p => format!("  trafficPolicy:\n{p}"),
        };
        let subsets: String = subsets
            .iter()
            .map(|s| format!("  - name: {s}\n    labels:\n      version: {s}\n"))
            .collect();
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: svc\nspec:\n  host: svc\n{policy}  subsets:\n{subsets}"
        )
    }

    /// ServiceEntry for `svc`: one endpoint per (127.0.0.1 port, version).
    pub fn service_entry(endpoints: &[(u16, &str)]) -> String {
        let endpoints: String = endpoints
            .iter()
            .map(|(port, version)| {
                format!("  - address: 127.0.0.1\n    ports:\n      tcp: {port}\n    labels:\n      version: {version}\n")
            })
            .collect();
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: svc\nspec:\n  hosts:\n  - svc.default.svc.cluster.local\n  resolution: STATIC\n  ports:\n  - number: 9000\n    name: tcp\n    protocol: TCP\n  endpoints:\n{endpoints}"
        )
    }
}

/// A listener on 127.0.0.1 that never accepts and whose accept queue is
/// full, so the kernel drops further SYNs.
pub struct Blackhole {
    pub port: u16,
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

pub fn blackhole() -> Blackhole {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    l.bind(&addr.into()).unwrap();
    l.listen(0).unwrap();
    let port = l.local_addr().unwrap().as_socket().unwrap().port();
    let target: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut queued = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&target, Duration::from_millis(300)) {
            Ok(s) => queued.push(s),
            Err(_) => break,
        }
    }
    // The queue is full once a connect no longer completes.
    assert!(
        TcpStream::connect_timeout(&target, Duration::from_millis(300)).is_err(),
        "the blackhole still completes handshakes"
    );
    Blackhole {
        port,
        _listener: l,
        _queued: queued,
    }
}

/// Streams deterministic bytes through `port` to a raw echo until `done`,
/// then half-closes; returns (bytes sent, sha256 sent, sha256 echoed).
pub fn stream_until(port: u16, seed: u8, done: Arc<AtomicBool>) -> (u64, Vec<u8>, Vec<u8>) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = s.try_clone().unwrap();
    let echoed = std::thread::spawn(move || {
        let mut hash = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf).unwrap() {
                0 => return hash.finalize().to_vec(),
                n => hash.update(&buf[..n]),
            }
        }
    });
    let mut writer = s;
    let mut hash = sha2::Sha256::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut sent = 0u64;
    let mut round = 0u32;
    // At least a few chunks, and on until the storm is over.
    while round < 8 || !done.load(Ordering::Acquire) {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = (i as u32)
                .wrapping_mul(31)
                .wrapping_add(round)
                .wrapping_add(u32::from(seed)) as u8;
        }
        writer.write_all(&chunk).unwrap();
        hash.update(&chunk);
        sent += chunk.len() as u64;
        round += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    writer.shutdown(std::net::Shutdown::Write).unwrap();
    (sent, hash.finalize().to_vec(), echoed.join().unwrap())
}
