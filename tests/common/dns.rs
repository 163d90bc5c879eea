//! A DNS server that never answers, for tests of what ringway does while a
//! host name does not resolve: [`SilentResolver::start`] holds a UDP socket
//! on port 53 of a unique 127.x.y.z address and reads every query without
//! answering; [`SilentResolver::command`] runs a program in a private mount
//! namespace (`unshare -m`, which needs root) where /etc/resolv.conf names
//! only that address. Nothing outside the child's namespace changes.
//!
//! Where `unshare -m` is impossible (an unprivileged sandbox), `start`
//! returns `None` after a loud message, unless RINGWAY_REQUIRE_URING=1 (CI),
//! where it panics: a CI run never skips these tests silently.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use super::require_uring;

/// A nameserver that reads queries and never answers; stops on drop.
pub struct SilentResolver {
    pub address: Ipv4Addr,
    resolv_conf: tempfile::NamedTempFile,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    reader: Option<thread::JoinHandle<()>>,
}

/// Distinguishes the resolvers of one test process.
static NEXT: AtomicU8 = AtomicU8::new(0);

impl SilentResolver {
    /// A resolver whose clients give up after `timeout_secs` (one attempt:
    /// `options timeout:N attempts:1`). `None` (after a message) where a
    /// private mount namespace cannot be made, outside CI.
    pub fn start(timeout_secs: u32) -> Option<SilentResolver> {
        if !private_mounts_work() {
            let why = "`unshare -m` fails here (it needs root, or CAP_SYS_ADMIN); the silent-resolver tests need a private mount namespace";
            assert!(!require_uring(), "{why}");
            eprintln!("SKIPPED: {why}; set RINGWAY_REQUIRE_URING=1 to fail instead");
            return None;
        }
        let (address, socket) = bind_unique();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let resolv_conf = tempfile::NamedTempFile::new().expect("resolv.conf");
        std::fs::write(
            resolv_conf.path(),
            format!("nameserver {address}\noptions timeout:{timeout_secs} attempts:1\n"),
        )
        .expect("write resolv.conf");
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counted, stopped) = (Arc::clone(&queries), Arc::clone(&stop));
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Acquire) {
                if socket.recv_from(&mut buf).is_ok() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Some(SilentResolver {
            address,
            resolv_conf,
            queries,
            stop,
            reader: Some(reader),
        })
    }

    /// DNS queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }

    pub fn resolv_conf(&self) -> &Path {
        self.resolv_conf.path()
    }

    /// `program args...` in a private mount namespace whose
    /// /etc/resolv.conf names only this resolver. `exec` keeps the PID: the
    /// child's PID is the program's.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
        ])
        .arg(self.resolv_conf())
        .arg(program);
        cmd
    }
}

impl Drop for SilentResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Port 53 of an address in 127.0.0.0/8 that no other test process uses:
/// made of this process's PID and a counter, never 127.0.0.1.
fn bind_unique() -> (Ipv4Addr, UdpSocket) {
    let pid = std::process::id();
    for _ in 0..=u8::MAX {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let address = Ipv4Addr::new(127, (pid >> 8) as u8, pid as u8, n.max(2));
        if let Ok(socket) = UdpSocket::bind(SocketAddr::from((address, 53))) {
            return (address, socket);
        }
    }
    panic!("no free 127.x.y.z:53 for a silent resolver (port 53 needs root)");
}

fn private_mounts_work() -> bool {
    Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount --bind /etc/resolv.conf /etc/resolv.conf",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
