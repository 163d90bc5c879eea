//! A worker's listening sockets, one entry per listener it has opened: the
//! socket, where it sits in the current table, its accepts (the state
//! machine of `accept.rs`, submitted here) and its active-connections
//! gauge, kept together. An entry outlives its socket until its accepts
//! have ended, so that an accept token (the entry's index) never names a
//! different listener while one is in flight.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use socket2::Socket;

use super::accept::{Accepting, After, Arm, Room};
use super::ring::Ring;
use super::token;

/// A listening socket of a worker, as the supervisor binds it at start or
/// the worker on a reload.
pub struct WorkerListener {
    /// `None` once a reload removed the listener (its entry stays until
    /// its accepts have ended).
    pub socket: Option<Socket>,
    pub address: SocketAddr,
    /// Index into the current table's listeners.
    pub index: usize,
    pub name: String,
}

/// One listener entry of a worker.
pub struct Entry {
    pub listener: WorkerListener,
    pub accepting: Accepting,
    /// Connections open on this listener (the worker's share of the gauge).
    pub gauge: Arc<AtomicI64>,
}

impl Entry {
    pub fn is_open(&self) -> bool {
        self.listener.socket.is_some()
    }
}

/// The entries, indexed like accept tokens.
#[derive(Default)]
pub struct Listeners {
    entries: Vec<Entry>,
}

impl Listeners {
    /// The listeners bound at start, each with its gauge.
    pub fn new(
        listeners: Vec<WorkerListener>,
        mut gauge: impl FnMut(SocketAddr) -> Arc<AtomicI64>,
    ) -> Listeners {
        let entries = listeners
            .into_iter()
            .map(|listener| Entry {
                gauge: gauge(listener.address),
                listener,
                accepting: Accepting::Idle,
            })
            .collect();
        Listeners { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Entry> {
        self.entries.get_mut(i)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Add a newly bound listener, in an entry a closed listener left once
    /// its accepts ended, or a new one; its index. It starts idle.
    pub fn place(&mut self, listener: WorkerListener, gauge: Arc<AtomicI64>) -> usize {
        let entry = Entry {
            listener,
            accepting: Accepting::Idle,
            gauge,
        };
        match self
            .entries
            .iter()
            .position(|e| !e.is_open() && e.accepting == Accepting::Stopped)
        {
            Some(i) => {
                self.entries[i] = entry;
                i
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        }
    }

    /// Entries with an open socket.
    pub fn listening(&self) -> usize {
        self.entries.iter().filter(|e| e.is_open()).count()
    }

    /// Closed entries whose accepts are still being cancelled (`POST
    /// /reload` answers once none is left).
    pub fn closing(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.accepting.is_closing())
            .count()
    }

    /// Arm, top up, narrow or stop entry `i`'s accepts for `room`.
    pub fn steer(&mut self, i: usize, ring: &mut Ring, room: Room) {
        let Some(entry) = self.entries.get_mut(i) else {
            return;
        };
        let Some(socket) = &entry.listener.socket else {
            return;
        };
        let (arm, next) = entry.accepting.steer(room);
        let token = token::accept(i as u32);
        match arm {
            Arm::Nothing => {}
            Arm::Cancel => ring.cancel_all(token, token::STOP_ACCEPT),
            Arm::Multishot => ring.accept_multi(socket.as_fd(), token),
            Arm::Single(n) => {
                for _ in 0..n {
                    ring.accept_once(socket.as_fd(), token);
                }
            }
        }
        entry.accepting = next;
    }

    /// Steer every entry (after connections closed, and on the tick, which
    /// also ends pauses that are over).
    pub fn steer_all(&mut self, ring: &mut Ring, room: Room, now: Instant) {
        for i in 0..self.entries.len() {
            if let Accepting::Paused(until) = self.entries[i].accepting {
                if now < until {
                    continue;
                }
                self.entries[i].accepting = Accepting::Idle;
            }
            self.steer(i, ring, room);
        }
    }

    /// Cancel what entry `i` has in flight, then go to `then`.
    pub fn wind_down(&mut self, i: usize, ring: &mut Ring, then: After) {
        let Some(entry) = self.entries.get_mut(i) else {
            return;
        };
        let (arm, next) = entry.accepting.wind_down(then);
        if arm == Arm::Cancel {
            ring.cancel_all(token::accept(i as u32), token::STOP_ACCEPT);
        }
        entry.accepting = next;
    }

    /// EMFILE/ENFILE: every open entry stops accepting until `until`.
    pub fn pause(&mut self, ring: &mut Ring, until: Instant) {
        for i in 0..self.entries.len() {
            if self.entries[i].is_open() {
                self.wind_down(i, ring, After::Pause(until));
            }
        }
    }

    /// An accept of entry `i` completed for the last time: whether that
    /// was the end of a closed listener (the control plane's reload answer
    /// waits for it).
    pub fn accept_ended(&mut self, i: usize) -> bool {
        let Some(entry) = self.entries.get_mut(i) else {
            return false;
        };
        let was_closing = entry.accepting.is_closing();
        entry.accepting = entry.accepting.ended();
        was_closing && entry.accepting == Accepting::Stopped
    }

    /// The open entry on `address`, if any.
    pub fn find_open(&self, address: SocketAddr) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.is_open() && e.listener.address == address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(port: u16, open: bool) -> WorkerListener {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        WorkerListener {
            socket: open.then(|| {
                Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket")
            }),
            address,
            index: 0,
            name: format!("l{port}"),
        }
    }

    #[test]
    fn a_closed_entry_is_reused_only_once_its_accepts_have_ended() {
        let mut ls = Listeners::new(vec![listener(1, true), listener(2, true)], |_| {
            Arc::default()
        });
        assert_eq!(ls.listening(), 2);
        // Entry 0 closes; its accept is still being cancelled.
        let e = ls.get_mut(0).expect("entry 0");
        e.listener.socket = None;
        e.accepting = Accepting::Cancelling {
            ops: 1,
            then: After::Stop,
        };
        assert_eq!((ls.listening(), ls.closing()), (1, 1));
        assert_eq!(ls.place(listener(3, true), Arc::default()), 2);
        // Its accept ended: the entry may hold another listener.
        ls.get_mut(0).expect("entry 0").accepting = Accepting::Stopped;
        assert_eq!(ls.closing(), 0);
        assert_eq!(ls.place(listener(4, true), Arc::default()), 0);
        assert_eq!(ls.len(), 3);
        assert_eq!(ls.get(0).map(|e| e.accepting), Some(Accepting::Idle));
        let port = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        assert_eq!(ls.find_open(port(4)), Some(0));
        assert_eq!(ls.find_open(port(1)), None);
    }

    #[test]
    fn each_entry_gets_the_gauge_of_its_address() {
        let ls = Listeners::new(vec![listener(5, true), listener(6, false)], |a| {
            Arc::new(AtomicI64::new(i64::from(a.port())))
        });
        let gauges: Vec<i64> = ls
            .iter()
            .map(|e| e.gauge.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        assert_eq!(gauges, [5, 6]);
        assert_eq!(ls.listening(), 1);
        assert!(!ls.is_empty());
    }
}
