//! Backends the proxies forward to.
//!
//! * echo: one thread, non-blocking sockets and level-triggered epoll (so
//!   5,000 idle connections cost no threads); every byte read is written
//!   back; EOF closes the connection. Used by `connrate`, `rr`, `idle`.
//! * sink: one thread per connection, blocking sockets, 512 KiB buffers.
//!   The first byte chooses what happens (see [`SinkMode`]). Used by
//!   `throughput`.
//!
//! Both set TCP_NODELAY on accepted sockets and stop when `stop` is set.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub const SINK_BUF: usize = 512 * 1024;
const ECHO_BUF: usize = 256 * 1024;

/// First byte a `throughput` client sends to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// `U`: client uploads; the sink discards and, on EOF, answers with the
    /// byte count it received (u64, little endian) and closes.
    Upload,
    /// `D`: the sink sends until the client goes away.
    Download,
    /// `B`: both at once; no count.
    Both,
}

impl SinkMode {
    pub fn byte(self) -> u8 {
        match self {
            SinkMode::Upload => b'U',
            SinkMode::Download => b'D',
            SinkMode::Both => b'B',
        }
    }
}

/// A running backend; stops (and joins) on drop.
pub struct Backend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn echo(listen: SocketAddr) -> io::Result<Backend> {
        let l = TcpListener::bind(listen)?;
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = thread::Builder::new().name("echo".into()).spawn(move || {
            if let Err(e) = run_echo(l, &s) {
                eprintln!("echo backend: {e}");
            }
        })?;
        Ok(Backend {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn sink(listen: SocketAddr) -> io::Result<Backend> {
        let l = TcpListener::bind(listen)?;
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = thread::Builder::new().name("sink".into()).spawn(move || {
            if let Err(e) = run_sink(l, &s) {
                eprintln!("sink backend: {e}");
            }
        })?;
        Ok(Backend {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Run until the process is killed.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `main` of the `echo` and `sink` binaries: `--listen 127.0.0.1:PORT
/// [--duration SECONDS]`, then `start` on that address until killed or for
/// the duration. Usage errors exit 2, naming the binary.
pub fn serve_main(
    name: &str,
    start: fn(SocketAddr) -> io::Result<Backend>,
) -> std::process::ExitCode {
    let run = || -> Result<(), String> {
        let mut a = crate::args::Args::parse(std::env::args().skip(1))?;
        let listen = crate::loopback(&a.required("listen")?)?;
        let duration = a.duration("duration")?;
        a.finish()?;
        let b = start(listen).map_err(|e| format!("{listen}: {e}"))?;
        eprintln!("{name} listening on {}", b.addr);
        match duration {
            Some(d) => thread::sleep(d),
            None => b.wait(),
        }
        Ok(())
    };
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

struct Epoll(RawFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        Ok(Epoll(cvt(unsafe {
            libc::epoll_create1(libc::EPOLL_CLOEXEC)
        })?))
    }
    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) }).map(|_| ())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

struct EchoConn {
    s: TcpStream,
    pending: Vec<u8>,
    off: usize,
}

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;

fn run_echo(l: TcpListener, stop: &AtomicBool) -> io::Result<()> {
    l.set_nonblocking(true)?;
    let ep = Epoll::new()?;
    let lfd = l.as_raw_fd();
    ep.ctl(libc::EPOLL_CTL_ADD, lfd, IN)?;
    let mut conns: HashMap<RawFd, EchoConn> = HashMap::new();
    let mut buf = vec![0u8; ECHO_BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: events has room for events.len() entries.
        let n = unsafe { libc::epoll_wait(ep.0, events.as_mut_ptr(), events.len() as i32, 200) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            let flags = ev.events;
            if fd == lfd {
                loop {
                    match l.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            s.set_nonblocking(true)?;
                            let cfd = s.as_raw_fd();
                            ep.ctl(libc::EPOLL_CTL_ADD, cfd, IN)?;
                            conns.insert(
                                cfd,
                                EchoConn {
                                    s,
                                    pending: Vec::new(),
                                    off: 0,
                                },
                            );
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        // EMFILE and friends: back off, keep serving the rest.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let Some(c) = conns.get_mut(&fd) else {
                continue;
            };
            let keep = if c.pending.is_empty() {
                echo_readable(c, &mut buf, &ep, fd)
            } else if flags & (OUT | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32) != 0 {
                echo_flush(c, &ep, fd)
            } else {
                true
            };
            if !keep {
                // Dropping the stream closes it, which also removes it from epoll.
                conns.remove(&fd);
            }
        }
    }
    Ok(())
}

/// Read what is there and write it back; park the rest. False: close.
fn echo_readable(c: &mut EchoConn, buf: &mut [u8], ep: &Epoll, fd: RawFd) -> bool {
    for _ in 0..16 {
        let n = match c.s.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let mut w = 0;
        while w < n {
            match c.s.write(&buf[w..n]) {
                Ok(k) => w += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    c.pending.clear();
                    c.pending.extend_from_slice(&buf[w..n]);
                    c.off = 0;
                    return ep.ctl(libc::EPOLL_CTL_MOD, fd, OUT).is_ok();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
    true
}

fn echo_flush(c: &mut EchoConn, ep: &Epoll, fd: RawFd) -> bool {
    while c.off < c.pending.len() {
        match c.s.write(&c.pending[c.off..]) {
            Ok(k) => c.off += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    c.pending.clear();
    c.off = 0;
    ep.ctl(libc::EPOLL_CTL_MOD, fd, IN).is_ok()
}

fn run_sink(l: TcpListener, stop: &AtomicBool) -> io::Result<()> {
    let fd = l.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, 200) };
        if r <= 0 {
            continue;
        }
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                let _ = thread::Builder::new()
                    .name("sink-conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _ = sink_conn(s);
                    });
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
    Ok(())
}

fn sink_conn(mut s: TcpStream) -> io::Result<()> {
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    match mode[0] {
        b'U' => {
            let n = drain(&mut s)?;
            s.write_all(&n.to_le_bytes())?;
        }
        b'D' => pour(&mut s),
        b'B' => {
            let mut w = s.try_clone()?;
            let t = thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || pour(&mut w))?;
            let _ = drain(&mut s);
            let _ = s.shutdown(std::net::Shutdown::Both);
            let _ = t.join();
        }
        _ => {}
    }
    Ok(())
}

fn drain(s: &mut TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; SINK_BUF];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn pour(s: &mut TcpStream) {
    let buf = vec![0x5au8; SINK_BUF];
    loop {
        match s.write(&buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
