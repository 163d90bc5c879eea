//! How a worker accepts. Far below the process connection cap, one
//! multishot accept per listening socket; near it, at most
//! [`ACCEPT_BATCH`] single-shot accepts, each of which takes one connection;
//! at it, none: clients wait in the kernel's listen backlog, as HAProxy's
//! `maxconn` leaves them, instead of being accepted and closed. Accepting
//! resumes when connections close (at once on the worker that closed one,
//! within a tick on the others).
//!
//! A multishot accept takes every connection queued on its socket in one go
//! (the kernel loops until the queue is empty), up to the listen backlog.
//! So it is armed only while the room under the cap exceeds what all
//! sockets' backlogs can hold ([`Budget::burst_per_listener`] per listener);
//! the single-shot accepts near the cap may take at most their number beyond
//! it before they are cancelled, and the budget keeps descriptors for that.
//!
//! [`Budget::burst_per_listener`]: super::budget::Budget::burst_per_listener
#![forbid(unsafe_code)]

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::budget::ACCEPT_BATCH;
use super::token;
use super::worker::{Lifecycle, Worker};

/// What a listener entry does once the accepts being cancelled have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Decide again (the cap was reached, or the kind of accept changes).
    Steer,
    /// EMFILE/ENFILE: arm nothing until this instant.
    Pause(Instant),
    /// The listener is closed or the worker stops; the entry may be reused.
    Stop,
}

/// The accepts of one listener entry. Every accept submitted ends with
/// exactly one final completion (without IORING_CQE_F_MORE), which is how
/// the accepts in flight are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepting {
    /// Nothing in flight; [`Worker::steer`] decides what to arm.
    Idle,
    /// A multishot accept is in flight (far below the cap).
    Multishot,
    /// This many single-shot accepts are in flight (near the cap).
    Single(u16),
    /// A cancel was submitted for the `ops` accepts in flight.
    Cancelling { ops: u16, then: After },
    /// Nothing in flight after EMFILE/ENFILE, until this instant.
    Paused(Instant),
    /// Nothing in flight and nothing to arm: a closed entry may be reused.
    Stopped,
}

impl Accepting {
    fn in_flight(self) -> u16 {
        match self {
            Accepting::Multishot => 1,
            Accepting::Single(n) | Accepting::Cancelling { ops: n, .. } => n,
            Accepting::Idle | Accepting::Paused(_) | Accepting::Stopped => 0,
        }
    }

    /// The state once nothing is in flight any more.
    fn settled(then: After) -> Accepting {
        match then {
            After::Steer => Accepting::Idle,
            After::Pause(until) => Accepting::Paused(until),
            After::Stop => Accepting::Stopped,
        }
    }
}

impl Worker {
    /// Arm, top up, narrow or stop the accepts of listener entry `i` for the
    /// room left under the connection cap.
    pub(super) fn steer(&mut self, i: usize) {
        let Some(entry) = self.listeners.get(i) else {
            return;
        };
        let state = entry.accepting;
        if !matches!(
            state,
            Accepting::Idle | Accepting::Multishot | Accepting::Single(_)
        ) || self.lifecycle != Lifecycle::Serving
        {
            return;
        }
        let Some(socket) = &entry.listener.socket else {
            return;
        };
        let fd = socket.as_fd();
        let cap = self.shared.budget.max_connections;
        let open = self.shared.open.load(Ordering::Relaxed);
        let room = cap.saturating_sub(open);
        let listening = self.listeners.listening();
        let burst = self
            .shared
            .budget
            .burst_per_listener
            .saturating_mul(listening);
        let batch = u16::try_from(room.min(usize::from(ACCEPT_BATCH))).unwrap_or(ACCEPT_BATCH);
        let token = token::accept(i as u32);
        match state {
            Accepting::Multishot | Accepting::Single(_) if room == 0 => {
                self.wind_down(i, After::Steer);
            }
            Accepting::Multishot if room <= burst => self.wind_down(i, After::Steer),
            // Back to multishot only well clear of the threshold, so that a
            // count hovering around it does not cancel and re-arm each time.
            Accepting::Single(_) if room > burst.saturating_mul(2) => {
                self.wind_down(i, After::Steer);
            }
            Accepting::Single(n) if n < batch => {
                for _ in n..batch {
                    self.ring.accept_once(fd, token);
                }
                self.set_accepting(i, Accepting::Single(batch));
            }
            Accepting::Idle if room > burst => {
                self.ring.accept_multi(fd, token);
                self.set_accepting(i, Accepting::Multishot);
            }
            Accepting::Idle if batch > 0 => {
                for _ in 0..batch {
                    self.ring.accept_once(fd, token);
                }
                self.set_accepting(i, Accepting::Single(batch));
            }
            _ => {}
        }
    }

    /// [`Worker::steer`] every listener entry (after a connection closed,
    /// and on the tick, which also ends pauses).
    pub(super) fn steer_all(&mut self, now: Instant) {
        for i in 0..self.listeners.len() {
            if let Some(Accepting::Paused(until)) = self.accepting(i) {
                if now < until {
                    continue;
                }
                self.set_accepting(i, Accepting::Idle);
            }
            self.steer(i);
        }
    }

    /// Cancel what entry `i` has in flight, then go to `then`.
    pub(super) fn wind_down(&mut self, i: usize, then: After) {
        let Some(state) = self.accepting(i) else {
            return;
        };
        let next = match state {
            Accepting::Cancelling { ops, then: current } => Accepting::Cancelling {
                ops,
                // A stop is never undone by a later pause or steer.
                then: if current == After::Stop {
                    After::Stop
                } else {
                    then
                },
            },
            Accepting::Multishot | Accepting::Single(_) => {
                self.ring
                    .cancel_all(token::accept(i as u32), token::STOP_ACCEPT);
                Accepting::Cancelling {
                    ops: state.in_flight(),
                    then,
                }
            }
            Accepting::Stopped => Accepting::Stopped,
            Accepting::Idle | Accepting::Paused(_) => Accepting::settled(then),
        };
        self.set_accepting(i, next);
    }

    /// EMFILE/ENFILE (on accept, or on an upstream socket): every listener
    /// of this worker stops accepting until `until`.
    pub(super) fn pause_accepting(&mut self, until: Instant) {
        for i in 0..self.listeners.len() {
            if self.listeners.get(i).is_some_and(|e| e.is_open()) {
                self.wind_down(i, After::Pause(until));
            }
        }
    }

    /// An accept of entry `i` completed for the last time.
    pub(super) fn accept_ended(&mut self, i: usize) {
        let was = self.accepting(i);
        self.accept_settles(i);
        // A closed listener stopped accepting: tell the control plane,
        // whose reload answer waits for it.
        if matches!(
            was,
            Some(Accepting::Cancelling {
                then: After::Stop,
                ..
            })
        ) && self.accepting(i) == Some(Accepting::Stopped)
        {
            self.status.closing(self.listeners.closing());
        }
    }

    fn accept_settles(&mut self, i: usize) {
        let Some(state) = self.accepting(i) else {
            return;
        };
        let next = match state {
            Accepting::Multishot => Accepting::Idle,
            Accepting::Single(n) if n > 1 => Accepting::Single(n - 1),
            Accepting::Single(_) => Accepting::Idle,
            Accepting::Cancelling { ops, then } if ops > 1 => {
                Accepting::Cancelling { ops: ops - 1, then }
            }
            Accepting::Cancelling { then, .. } => Accepting::settled(then),
            state @ (Accepting::Idle | Accepting::Paused(_) | Accepting::Stopped) => {
                debug_assert!(false, "accept completion with none in flight: {state:?}");
                state
            }
        };
        self.set_accepting(i, next);
    }

    fn accepting(&self, i: usize) -> Option<Accepting> {
        self.listeners.get(i).map(|e| e.accepting)
    }

    fn set_accepting(&mut self, i: usize, state: Accepting) {
        if let Some(e) = self.listeners.get_mut(i) {
            e.accepting = state;
        }
    }
}
