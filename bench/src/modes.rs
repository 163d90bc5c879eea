//! The load generator's modes. Plain threads and blocking sockets: see
//! README "Why threads and blocking sockets".
//!
//! Every mode stops at its deadline (`duration`) or after `count`
//! operations, whichever comes first, and returns one JSON object. When
//! `watch` names a PID, the proxy's CPU (and for `idle` its memory) is
//! sampled around the measured interval.

use crate::backend::{SinkMode, SINK_BUF};
use crate::procfs;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Time given to the proxy to finish closing connections before the last
/// CPU sample.
const SETTLE: Duration = Duration::from_millis(200);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Common {
    pub target: SocketAddr,
    pub duration: Duration,
    pub count: Option<u64>,
    pub watch: Option<u32>,
}

fn connect(target: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&target, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

/// Latency percentiles in microseconds from a histogram in nanoseconds.
fn latency_json(h: &Histogram<u64>) -> Value {
    let us = |v: u64| v as f64 / 1000.0;
    json!({
        "unit": "us",
        "count": h.len(),
        "min": us(h.min()),
        "mean": h.mean() / 1000.0,
        "p50": us(h.value_at_quantile(0.50)),
        "p90": us(h.value_at_quantile(0.90)),
        "p99": us(h.value_at_quantile(0.99)),
        "p99_9": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
    })
}

struct Watch {
    pid: Option<u32>,
    before: Option<procfs::CpuSample>,
}

impl Watch {
    fn start(pid: Option<u32>) -> Watch {
        Watch {
            pid,
            before: pid.map(procfs::cpu),
        }
    }
    fn end(self) -> Value {
        match (self.pid, self.before) {
            (Some(pid), Some(before)) => {
                thread::sleep(SETTLE);
                procfs::cpu_delta(&before, &procfs::cpu(pid))
            }
            _ => Value::Null,
        }
    }
}

fn cpu_s(proxy: &Value) -> Option<f64> {
    proxy.get("cpu_s").and_then(Value::as_f64)
}

// ---------------------------------------------------------------- throughput

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Both,
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "up" => Ok(Direction::Up),
            "down" => Ok(Direction::Down),
            "both" => Ok(Direction::Both),
            _ => Err(format!("{s:?}: expected up, down or both")),
        }
    }
}

#[derive(Default)]
struct StreamResult {
    up: u64,
    down: u64,
    error: Option<String>,
}

/// N streams to a sink; counts bytes that arrived (upload: the sink's own
/// count, sent back after EOF).
pub fn throughput(c: &Common, streams: usize, dir: Direction, buf: usize) -> Value {
    let watch = Watch::start(c.watch);
    let barrier = Arc::new(Barrier::new(streams + 1));
    let stop_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut handles = Vec::new();
    for _ in 0..streams {
        let b = Arc::clone(&barrier);
        let at = Arc::clone(&stop_at);
        let target = c.target;
        handles.push(thread::spawn(move || {
            let mut r = StreamResult::default();
            let s = connect(target).and_then(|mut s| {
                let mode = match dir {
                    Direction::Up => SinkMode::Upload,
                    Direction::Down => SinkMode::Download,
                    Direction::Both => SinkMode::Both,
                };
                s.write_all(&[mode.byte()])?;
                Ok(s)
            });
            b.wait();
            let deadline = at.lock().unwrap().expect("start set");
            match s {
                Ok(s) => {
                    if let Err(e) = stream(s, dir, buf, deadline, &mut r) {
                        r.error = Some(e.to_string());
                    }
                }
                Err(e) => r.error = Some(e.to_string()),
            }
            r
        }));
    }
    let start = Instant::now();
    *stop_at.lock().unwrap() = Some(start + c.duration);
    barrier.wait();
    let results: Vec<StreamResult> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    let secs = start.elapsed().as_secs_f64();
    let proxy = watch.end();
    let up: u64 = results.iter().map(|r| r.up).sum();
    let down: u64 = results.iter().map(|r| r.down).sum();
    let errors: Vec<String> = results.iter().filter_map(|r| r.error.clone()).collect();
    let bytes = up + down;
    let gbit = bytes as f64 * 8.0 / secs / 1e9;
    let cpu_per_gb = cpu_s(&proxy)
        .filter(|_| bytes > 0)
        .map(|s| s / (bytes as f64 / 1e9));
    json!({
        "mode": "throughput",
        "target": c.target.to_string(),
        "streams": streams,
        "direction": format!("{dir:?}").to_lowercase(),
        "buffer_bytes": buf,
        "seconds": secs,
        "bytes_up": up,
        "bytes_down": down,
        "bytes": bytes,
        "gbit_per_s": gbit,
        "errors": errors,
        "proxy": proxy,
        "proxy_cpu_s_per_gb": cpu_per_gb,
        "proxy_cpu_s_per_gib": cpu_per_gb.map(|v| v * 1.073741824),
    })
}

fn stream(
    mut s: TcpStream,
    dir: Direction,
    buf: usize,
    deadline: Instant,
    r: &mut StreamResult,
) -> io::Result<()> {
    match dir {
        Direction::Up => {
            let data = vec![0xa5u8; buf];
            while Instant::now() < deadline {
                s.write_all(&data)?;
            }
            s.shutdown(std::net::Shutdown::Write)?;
            let mut n = [0u8; 8];
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.read_exact(&mut n)?;
            r.up = u64::from_le_bytes(n);
        }
        Direction::Down => {
            let mut data = vec![0u8; buf.max(SINK_BUF)];
            while Instant::now() < deadline {
                match s.read(&mut data) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            ErrorKind::UnexpectedEof,
                            "sink closed early",
                        ))
                    }
                    Ok(n) => r.down += n as u64,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Direction::Both => {
            let mut rd = s.try_clone()?;
            let reader = thread::spawn(move || {
                let mut data = vec![0u8; SINK_BUF];
                let mut n = 0u64;
                while Instant::now() < deadline {
                    match rd.read(&mut data) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k as u64,
                    }
                }
                n
            });
            let data = vec![0xa5u8; buf];
            while Instant::now() < deadline {
                s.write_all(&data)?;
                r.up += data.len() as u64;
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
            r.down = reader.join().unwrap_or(0);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- connrate

/// Connect, send `size` bytes, read them back (echo), close; repeat on
/// `concurrency` threads.
pub fn connrate(c: &Common, concurrency: usize, size: usize) -> Value {
    let watch = Watch::start(c.watch);
    let start = Instant::now();
    let deadline = start + c.duration;
    let claimed = Arc::new(AtomicU64::new(0));
    let count = c.count.unwrap_or(u64::MAX);
    let handles: Vec<_> = (0..concurrency)
        .map(|_| {
            let claimed = Arc::clone(&claimed);
            let target = c.target;
            thread::spawn(move || {
                let mut h = histogram();
                let mut errors = 0u64;
                let mut last_error = None;
                let req = vec![b'c'; size];
                let mut reply = vec![0u8; size];
                while Instant::now() < deadline && claimed.fetch_add(1, Ordering::Relaxed) < count {
                    let t0 = Instant::now();
                    let r = connect(target).and_then(|mut s| {
                        s.write_all(&req)?;
                        s.read_exact(&mut reply)
                    });
                    match r {
                        Ok(()) => {
                            let _ = h.record(t0.elapsed().as_nanos() as u64);
                        }
                        Err(e) => {
                            errors += 1;
                            last_error = Some(e.to_string());
                            if errors > 1000 && h.is_empty() {
                                break;
                            }
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                (h, errors, last_error)
            })
        })
        .collect();
    let mut h = histogram();
    let mut errors = 0;
    let mut last_error = None;
    for t in handles {
        if let Ok((th, e, le)) = t.join() {
            let _ = h.add(&th);
            errors += e;
            last_error = last_error.or(le);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let proxy = watch.end();
    let n = h.len();
    json!({
        "mode": "connrate",
        "target": c.target.to_string(),
        "concurrency": concurrency,
        "request_bytes": size,
        "seconds": secs,
        "connections": n,
        "errors": errors,
        "last_error": last_error,
        "conns_per_s": n as f64 / secs,
        "latency": latency_json(&h),
        "proxy": proxy,
        "proxy_cpu_s_per_10k_conns": cpu_s(&proxy).filter(|_| n > 0).map(|s| s * 10_000.0 / n as f64),
    })
}

// ---------------------------------------------------------------- rr

/// Request/response on `connections` kept-alive connections (closed loop:
/// one request in flight per connection).
pub fn rr(c: &Common, connections: usize, size: usize) -> Value {
    let watch = Watch::start(c.watch);
    let claimed = Arc::new(AtomicU64::new(0));
    let count = c.count.unwrap_or(u64::MAX);
    let barrier = Arc::new(Barrier::new(connections + 1));
    let failed = Arc::new(AtomicBool::new(false));
    let stop_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let handles: Vec<_> = (0..connections)
        .map(|_| {
            let claimed = Arc::clone(&claimed);
            let b = Arc::clone(&barrier);
            let at = Arc::clone(&stop_at);
            let failed = Arc::clone(&failed);
            let target = c.target;
            thread::spawn(move || {
                let mut h = histogram();
                let s = connect(target);
                b.wait();
                let deadline = at.lock().unwrap().expect("start set");
                let mut s = match s {
                    Ok(s) => s,
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return (h, Some(e.to_string()));
                    }
                };
                let req = vec![b'r'; size];
                let mut reply = vec![0u8; size];
                while Instant::now() < deadline && claimed.fetch_add(1, Ordering::Relaxed) < count {
                    let t0 = Instant::now();
                    if let Err(e) = s.write_all(&req).and_then(|_| s.read_exact(&mut reply)) {
                        return (h, Some(e.to_string()));
                    }
                    let _ = h.record(t0.elapsed().as_nanos() as u64);
                }
                (h, None)
            })
        })
        .collect();
    let start = Instant::now();
    *stop_at.lock().unwrap() = Some(start + c.duration);
    barrier.wait();
    let mut h = histogram();
    let mut errors = Vec::new();
    for t in handles {
        if let Ok((th, e)) = t.join() {
            let _ = h.add(&th);
            errors.extend(e);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let proxy = watch.end();
    let n = h.len();
    json!({
        "mode": "rr",
        "target": c.target.to_string(),
        "connections": connections,
        "request_bytes": size,
        "seconds": secs,
        "requests": n,
        "requests_per_s": n as f64 / secs,
        "errors": errors,
        "latency": latency_json(&h),
        "proxy": proxy,
        "proxy_cpu_us_per_request": cpu_s(&proxy).filter(|_| n > 0).map(|s| s * 1e6 / n as f64),
    })
}

// ---------------------------------------------------------------- idle

/// Open `count` connections (each proves its path with a 1-byte echo), hold
/// them, and report the watched process's memory growth per connection.
pub fn idle(c: &Common, settle: Duration) -> Value {
    let count = c.count.unwrap_or(1000) as usize;
    let start = Instant::now();
    let deadline = start + c.duration;
    let mem_before = c.watch.map(procfs::mem);
    let cpu_before = c.watch.map(procfs::cpu);
    let mut conns = Vec::with_capacity(count);
    let mut error = None;
    while conns.len() < count && Instant::now() < deadline {
        let r = connect(c.target).and_then(|mut s| {
            s.write_all(b"i")?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            Ok(s)
        });
        match r {
            Ok(s) => conns.push(s),
            Err(e) => {
                error = Some(format!("after {} connections: {e}", conns.len()));
                break;
            }
        }
    }
    let open_secs = start.elapsed().as_secs_f64();
    // Hold the connections for `settle` (bounded by the deadline), then sample.
    let hold_until = (Instant::now() + settle).min(deadline.max(Instant::now()));
    thread::sleep(hold_until.saturating_duration_since(Instant::now()));
    let mem_after = c.watch.map(procfs::mem);
    let cpu_after = c.watch.map(procfs::cpu);
    // Prove the connections still work after the hold: one byte on the first and last.
    let mut alive_check = true;
    for s in [conns.first_mut(), None].into_iter().flatten() {
        alive_check &= s
            .write_all(b"j")
            .and_then(|_| s.read_exact(&mut [0u8; 1]))
            .is_ok();
    }
    if let Some(s) = conns.last_mut() {
        alive_check &= s
            .write_all(b"k")
            .and_then(|_| s.read_exact(&mut [0u8; 1]))
            .is_ok();
    }
    let n = conns.len();
    drop(conns);
    let per_conn = |f: fn(&procfs::MemSample) -> u64| match (&mem_before, &mem_after) {
        (Some(b), Some(a)) if n > 0 => Some((f(a) as f64 - f(b) as f64) / n as f64),
        _ => None,
    };
    json!({
        "mode": "idle",
        "target": c.target.to_string(),
        "requested": count,
        "connections": n,
        "open_seconds": open_secs,
        "error": error,
        "alive_after_hold": alive_check,
        "proxy_rss_kib_before": mem_before.map(|m| m.rss_kib),
        "proxy_rss_kib_after": mem_after.map(|m| m.rss_kib),
        "proxy_private_dirty_kib_before": mem_before.map(|m| m.private_dirty_kib),
        "proxy_private_dirty_kib_after": mem_after.map(|m| m.private_dirty_kib),
        "proxy_rss_kib_per_conn": per_conn(|m| m.rss_kib),
        "proxy_private_dirty_kib_per_conn": per_conn(|m| m.private_dirty_kib),
        "proxy": match (&cpu_before, &cpu_after) {
            (Some(b), Some(a)) => procfs::cpu_delta(b, a),
            _ => Value::Null,
        },
    })
}

// ---------------------------------------------------------------- probe

/// Wait until `target` answers a 1-byte echo (through a proxy this proves
/// the whole path), or until the deadline.
pub fn probe(c: &Common) -> Value {
    let start = Instant::now();
    let deadline = start + c.duration;
    let mut last = String::new();
    let mut attempts = 0u64;
    while Instant::now() < deadline {
        attempts += 1;
        let r =
            TcpStream::connect_timeout(&c.target, Duration::from_millis(500)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.write_all(b"p")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                if &b == b"p" {
                    Ok(())
                } else {
                    Err(io::Error::other("wrong echo"))
                }
            });
        match r {
            Ok(()) => {
                return json!({"mode": "probe", "target": c.target.to_string(), "ok": true,
                    "attempts": attempts, "seconds": start.elapsed().as_secs_f64()})
            }
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(50));
    }
    json!({"mode": "probe", "target": c.target.to_string(), "ok": false, "attempts": attempts, "last_error": last})
}

// ---------------------------------------------------------------- exec

/// Run someone else's client (iperf3, wrk, redis-benchmark) to completion,
/// its stdout into `output`, and charge the watched proxy's CPU over that
/// run exactly as the other modes do (sample before the start, sample again
/// 200 ms after the client exits). The client is killed at `timeout`.
pub fn exec(cmd: &[String], output: &Path, timeout: Duration, watch: Option<u32>) -> Value {
    let Some((prog, args)) = cmd.split_first() else {
        return json!({"error": "no command"});
    };
    let out = match std::fs::File::create(output) {
        Ok(f) => f,
        Err(e) => return json!({"error": format!("{}: {e}", output.display())}),
    };
    let watch = Watch::start(watch);
    let start = Instant::now();
    let mut child = match Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return json!({"error": format!("{prog}: {e}"), "proxy": watch.end()}),
    };
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() >= timeout => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let secs = start.elapsed().as_secs_f64();
    json!({
        "mode": "exec",
        "command": cmd,
        "seconds": secs,
        "exit_code": status.and_then(|s| s.code()),
        "timed_out": timed_out,
        "proxy": watch.end(),
    })
}
