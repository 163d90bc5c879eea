//! A worker's keep-alive pool of idle upstream HTTP/1.1 connections: no
//! lock and no atomic (each worker has its own), keyed by endpoint identity
//! (cluster name and address, as the balancer keys its state) so that an
//! idle connection survives a reload that keeps its cluster and endpoint.
//! Last in, first out: the warmest socket goes first.
//!
//! An idle connection has no operation in flight. Whether its server closed
//! it meanwhile is asked when it is taken (a non-blocking `MSG_PEEK`, as
//! Pingora's `test_reusable_stream` does): FIN, stray bytes or an error
//! drop it, and the next one is tried. Expired ones go on the worker's
//! tick. A server that closes a connection just as a request goes out on
//! it is the keep-alive race the HTTP session retries once on a fresh
//! connection.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use socket2::Socket;

use super::plan::{EndpointKey, Plan};

/// Idle connections kept per endpoint and worker; more are closed when
/// released. Envoy keeps every idle connection until its idle timeout and
/// HAProxy's `pool-max-conn` is unlimited by default: a cap below a
/// worker's concurrency against one backend closes connections that the
/// next requests must open again. With 32, wrk `-c50` on one worker opened
/// a new upstream connection for 2-15% of its requests (bench http.sh,
/// 2026-12-01; HAProxy and nginx: none). Idle connections never outnumber
/// the peak of requests in flight, which the process connection cap
/// bounds, so this cap only keeps a runaway within reach of the descriptor
/// budget; the DestinationRule's `maxConnections` counts them too.
pub const MAX_IDLE_PER_ENDPOINT: usize = 4096;

/// A connection counted against its cluster's `maxConnections` (Envoy's
/// circuit breaker counts open connections, idle ones included): the count
/// is given back when the connection is dropped, wherever it is then.
#[derive(Debug)]
pub struct Held(Arc<AtomicU32>);

impl Held {
    /// Count one more connection on `open` if it stays within `max`.
    pub fn acquire(open: &Arc<AtomicU32>, max: u32) -> Option<Held> {
        if open.fetch_add(1, Ordering::Relaxed) >= max {
            open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Held(Arc::clone(open)))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An idle upstream connection.
#[derive(Debug)]
pub struct Idle {
    pub socket: Socket,
    pub held: Option<Held>,
    /// Requests it has carried.
    pub requests: u32,
    /// Closed at this instant if still idle (the cluster's idle timeout,
    /// capped by the server's `Keep-Alive: timeout`).
    pub expires: Instant,
}

/// Why an idle connection was not reused (`ringway_upstream_pool_reuse_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The server closed it, sent bytes nobody asked for, or it failed.
    Closed,
    /// Its idle timeout passed.
    Expired,
}

#[derive(Debug)]
pub struct Pool {
    /// Cluster name → endpoint address → idle connections, oldest first.
    by_cluster: HashMap<String, HashMap<SocketAddr, Vec<Idle>>>,
    idle: usize,
    /// Idle connections kept per endpoint ([`MAX_IDLE_PER_ENDPOINT`]).
    max_idle: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::with_max_idle(MAX_IDLE_PER_ENDPOINT)
    }
}

impl Pool {
    /// A pool keeping at most `max_idle` idle connections per endpoint.
    pub fn with_max_idle(max_idle: usize) -> Pool {
        Pool {
            by_cluster: HashMap::new(),
            idle: 0,
            max_idle,
        }
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.idle
    }

    pub fn is_empty(&self) -> bool {
        self.idle == 0
    }

    /// Keep `conn` for the next request to `key`; false (and `conn`
    /// dropped, so closed) when the endpoint has enough idle ones.
    pub fn put(&mut self, key: EndpointKey<'_>, conn: Idle) -> bool {
        let endpoints = match self.by_cluster.get_mut(key.cluster) {
            Some(e) => e,
            None => self.by_cluster.entry(key.cluster.to_owned()).or_default(),
        };
        let list = endpoints.entry(key.address).or_default();
        if list.len() >= self.max_idle {
            return false;
        }
        list.push(conn);
        self.idle += 1;
        true
    }

    /// The warmest live connection to `key`, and how many stale ones were
    /// dropped on the way (each counted by `stale`).
    pub fn take(
        &mut self,
        key: EndpointKey<'_>,
        now: Instant,
        mut stale: impl FnMut(Stale),
    ) -> Option<Idle> {
        let list = self
            .by_cluster
            .get_mut(key.cluster)
            .and_then(|e| e.get_mut(&key.address))?;
        while let Some(conn) = list.pop() {
            self.idle -= 1;
            if conn.expires <= now {
                stale(Stale::Expired);
                continue;
            }
            if !still_open(&conn.socket) {
                stale(Stale::Closed);
                continue;
            }
            return Some(conn);
        }
        None
    }

    /// Drop connections whose idle timeout passed; the number dropped per
    /// cluster goes to `expired`.
    pub fn expire(&mut self, now: Instant, mut expired: impl FnMut(&str, usize)) {
        for (cluster, endpoints) in &mut self.by_cluster {
            let mut n = 0;
            for list in endpoints.values_mut() {
                let before = list.len();
                list.retain(|c| c.expires > now);
                n += before - list.len();
            }
            if n > 0 {
                self.idle -= n;
                expired(cluster, n);
            }
        }
        self.by_cluster.retain(|_, e| {
            e.retain(|_, l| !l.is_empty());
            !e.is_empty()
        });
    }

    /// A new plan: keep the connections whose cluster and endpoint address
    /// it still has, close the rest (the number closed per cluster goes to
    /// `dropped`).
    pub fn retain(&mut self, plan: &Plan, mut dropped: impl FnMut(&str, usize)) {
        let mut idle = 0;
        self.by_cluster.retain(|name, endpoints| {
            let before: usize = endpoints.values().map(Vec::len).sum();
            let targets = plan.cluster_index(name).map(|c| &plan.endpoints[c]);
            endpoints.retain(|address, _| {
                targets.is_some_and(|t| t.iter().any(|t| t.address == *address))
            });
            let after: usize = endpoints.values().map(Vec::len).sum();
            if after < before {
                dropped(name, before - after);
            }
            idle += after;
            !endpoints.is_empty()
        });
        self.idle = idle;
    }

    /// Idle connections per cluster (`ringway_upstream_pool_idle`).
    pub fn idle_by_cluster(&self) -> impl Iterator<Item = (&str, usize)> {
        self.by_cluster
            .iter()
            .map(|(name, e)| (name.as_str(), e.values().map(Vec::len).sum()))
    }

    /// Close everything (the worker stops); the number closed per cluster
    /// goes to `dropped`.
    pub fn clear(&mut self, mut dropped: impl FnMut(&str, usize)) {
        for (name, endpoints) in self.by_cluster.drain() {
            dropped(&name, endpoints.values().map(Vec::len).sum());
        }
        self.idle = 0;
    }
}

/// Whether an idle connection can carry a request: nothing to read and no
/// FIN (a non-blocking peek says EAGAIN).
fn still_open(socket: &Socket) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit()];
    match socket.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        // FIN (0) or bytes no request asked for: not reusable.
        Ok(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    /// A connected pair: the pool's side as a socket2 socket, and the
    /// server's side.
    fn pair() -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (Socket::from(client), server)
    }

    /// Wait until the kernel has what makes `socket` unfit for reuse (a
    /// FIN or bytes): at most 10 s.
    fn until_not_reusable(socket: &Socket) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while still_open(socket) {
            assert!(
                Instant::now() < deadline,
                "the server's FIN or bytes never arrived"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn key(address: SocketAddr) -> EndpointKey<'static> {
        EndpointKey {
            cluster: "outbound|8080|v1|front-tomcat.default.svc.cluster.local",
            address,
        }
    }

    fn idle(socket: Socket, expires: Instant, open: &Arc<AtomicU32>) -> Idle {
        Idle {
            socket,
            held: Held::acquire(open, u32::MAX),
            requests: 1,
            expires,
        }
    }

    #[test]
    fn the_warmest_live_connection_goes_first_and_closed_ones_are_dropped() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let open = Arc::new(AtomicU32::new(0));
        let address: SocketAddr = "127.0.0.1:18081".parse().expect("addr");
        let (a, _server_a) = pair();
        let (b, mut server_b) = pair();
        let (c, server_c) = pair();
        // The test's own handles on b and c, to see what the kernel got.
        let (b_view, c_view) = (b.try_clone().expect("dup"), c.try_clone().expect("dup"));
        let a_port = a.local_addr().expect("a").as_socket().expect("inet").port();
        let mut pool = Pool::default();
        assert!(pool.put(key(address), idle(a, later, &open)));
        assert!(pool.put(key(address), idle(b, later, &open)));
        assert!(pool.put(key(address), idle(c, later, &open)));
        assert_eq!((pool.len(), open.load(Ordering::Relaxed)), (3, 3));
        // c's server closed; b's server sent bytes nobody asked for.
        drop(server_c);
        server_b.write_all(b"HTTP/1.1 200 OK\r\n").expect("write");
        until_not_reusable(&b_view);
        until_not_reusable(&c_view);
        let mut stale = Vec::new();
        let got = pool.take(key(address), now, |s| stale.push(s));
        let got = got.expect("a is live");
        let port = got
            .socket
            .local_addr()
            .expect("a")
            .as_socket()
            .expect("inet")
            .port();
        assert_eq!(port, a_port);
        assert_eq!(stale, vec![Stale::Closed, Stale::Closed]);
        // Dropped connections gave their cluster count back.
        assert_eq!((pool.len(), open.load(Ordering::Relaxed)), (0, 1));
        drop(got);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn expired_connections_are_not_reused_and_go_on_the_tick() {
        let now = Instant::now();
        let open = Arc::new(AtomicU32::new(0));
        let address: SocketAddr = "127.0.0.1:18081".parse().expect("addr");
        let (a, _sa) = pair();
        let (b, _sb) = pair();
        let mut pool = Pool::default();
        pool.put(key(address), idle(a, now + Duration::from_secs(1), &open));
        pool.put(key(address), idle(b, now + Duration::from_secs(5), &open));
        let mut expired = Vec::new();
        pool.expire(now + Duration::from_secs(2), |c, n| {
            expired.push((c.to_owned(), n))
        });
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1, 1);
        assert_eq!(pool.len(), 1);
        let mut stale = Vec::new();
        assert!(
            pool.take(key(address), now + Duration::from_secs(6), |s| stale
                .push(s))
                .is_none()
        );
        assert_eq!(stale, vec![Stale::Expired]);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_endpoint_keeps_at_most_its_share_of_idle_connections() {
        let now = Instant::now() + Duration::from_secs(60);
        let open = Arc::new(AtomicU32::new(0));
        let address: SocketAddr = "127.0.0.1:18081".parse().expect("addr");
        let mut pool = Pool::with_max_idle(4);
        let mut servers = Vec::new();
        for _ in 0..4 {
            let (s, server) = pair();
            servers.push(server);
            assert!(pool.put(key(address), idle(s, now, &open)));
        }
        let (s, _server) = pair();
        assert!(!pool.put(key(address), idle(s, now, &open)));
        assert_eq!(open.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn the_cluster_count_refuses_past_max_connections() {
        let open = Arc::new(AtomicU32::new(0));
        let first = Held::acquire(&open, 1);
        assert!(first.is_some());
        assert!(Held::acquire(&open, 1).is_none());
        drop(first);
        assert!(Held::acquire(&open, 1).is_some());
    }
}
