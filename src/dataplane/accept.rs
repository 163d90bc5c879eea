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
//!
//! This file is the state of one listener entry's accepts and its
//! transitions, pure; `listeners.rs` submits what they call for.
#![forbid(unsafe_code)]

use std::time::Instant;

use super::budget::ACCEPT_BATCH;

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
    /// Nothing in flight; [`Accepting::steer`] decides what to arm.
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

/// The room under the process connection cap, as a worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Connections the process may still open.
    pub free: usize,
    /// What every open listening socket's backlog could hand a multishot
    /// accept in one go.
    pub burst: usize,
}

/// What to submit for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Nothing,
    /// Cancel what is in flight (then go to the `After` given).
    Cancel,
    /// One multishot accept.
    Multishot,
    /// This many more single-shot accepts.
    Single(u16),
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

    /// Arm, top up, narrow or stop the accepts for the room left under the
    /// connection cap: what to submit, and the state after it.
    pub fn steer(self, room: Room) -> (Arm, Accepting) {
        let batch = u16::try_from(room.free.min(usize::from(ACCEPT_BATCH))).unwrap_or(ACCEPT_BATCH);
        match self {
            Accepting::Multishot | Accepting::Single(_) if room.free == 0 => {
                self.wind_down(After::Steer)
            }
            Accepting::Multishot if room.free <= room.burst => self.wind_down(After::Steer),
            // Back to multishot only well clear of the threshold, so that a
            // count hovering around it does not cancel and re-arm each time.
            Accepting::Single(_) if room.free > room.burst.saturating_mul(2) => {
                self.wind_down(After::Steer)
            }
            Accepting::Single(n) if n < batch => (Arm::Single(batch - n), Accepting::Single(batch)),
            Accepting::Idle if room.free > room.burst => (Arm::Multishot, Accepting::Multishot),
            Accepting::Idle if batch > 0 => (Arm::Single(batch), Accepting::Single(batch)),
            state => (Arm::Nothing, state),
        }
    }

    /// Cancel what is in flight, then go to `then`: whether a cancel must
    /// be submitted, and the state after it.
    pub fn wind_down(self, then: After) -> (Arm, Accepting) {
        match self {
            Accepting::Cancelling { ops, then: current } => (
                Arm::Nothing,
                Accepting::Cancelling {
                    ops,
                    // A stop is never undone by a later pause or steer.
                    then: if current == After::Stop {
                        After::Stop
                    } else {
                        then
                    },
                },
            ),
            Accepting::Multishot | Accepting::Single(_) => (
                Arm::Cancel,
                Accepting::Cancelling {
                    ops: self.in_flight(),
                    then,
                },
            ),
            Accepting::Stopped => (Arm::Nothing, Accepting::Stopped),
            Accepting::Idle | Accepting::Paused(_) => (Arm::Nothing, Accepting::settled(then)),
        }
    }

    /// An accept completed for the last time.
    pub fn ended(self) -> Accepting {
        match self {
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
        }
    }

    /// A closed listener's accepts are being cancelled.
    pub fn is_closing(self) -> bool {
        matches!(
            self,
            Accepting::Cancelling {
                then: After::Stop,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAR: Room = Room {
        free: 10_000,
        burst: 4096,
    };

    #[test]
    fn far_below_the_cap_one_multishot_near_it_single_shots_at_it_none() {
        assert_eq!(
            Accepting::Idle.steer(FAR),
            (Arm::Multishot, Accepting::Multishot)
        );
        let near = Room {
            free: 100,
            burst: 4096,
        };
        let (arm, state) = Accepting::Multishot.steer(near);
        assert_eq!(arm, Arm::Cancel, "a multishot could take the whole backlog");
        assert_eq!(
            Accepting::Idle.steer(near),
            (Arm::Single(ACCEPT_BATCH), Accepting::Single(ACCEPT_BATCH))
        );
        // The cancel ends with one final completion: then steer again.
        assert_eq!(state.ended(), Accepting::Idle);
        // Two accepts of the batch took a connection each: topped up.
        let s = Accepting::Single(ACCEPT_BATCH).ended().ended();
        assert_eq!(
            s.steer(near),
            (Arm::Single(2), Accepting::Single(ACCEPT_BATCH))
        );
        // Only three connections of room: at most three accepts.
        let three = Room {
            free: 3,
            burst: 4096,
        };
        assert_eq!(
            Accepting::Idle.steer(three),
            (Arm::Single(3), Accepting::Single(3))
        );
        // At the cap: everything in flight is cancelled, nothing armed.
        let full = Room {
            free: 0,
            burst: 4096,
        };
        assert_eq!(Accepting::Single(3).steer(full).0, Arm::Cancel);
        assert_eq!(Accepting::Idle.steer(full), (Arm::Nothing, Accepting::Idle));
    }

    #[test]
    fn back_to_multishot_only_well_clear_of_the_threshold() {
        let just_over = Room {
            free: 5000,
            burst: 4096,
        };
        assert_eq!(Accepting::Single(8).steer(just_over).0, Arm::Nothing);
        let clear = Room {
            free: 9000,
            burst: 4096,
        };
        let (arm, state) = Accepting::Single(8).steer(clear);
        assert_eq!(arm, Arm::Cancel);
        assert_eq!(
            state,
            Accepting::Cancelling {
                ops: 8,
                then: After::Steer
            }
        );
    }

    #[test]
    fn a_stop_is_never_undone_and_a_stopped_entry_stays_stopped() {
        let (arm, s) = Accepting::Multishot.wind_down(After::Stop);
        assert_eq!(arm, Arm::Cancel);
        assert!(s.is_closing());
        let later = Instant::now();
        let (arm, s) = s.wind_down(After::Pause(later));
        assert_eq!(arm, Arm::Nothing, "one cancel is enough");
        assert_eq!(
            s,
            Accepting::Cancelling {
                ops: 1,
                then: After::Stop
            }
        );
        assert_eq!(s.ended(), Accepting::Stopped);
        assert_eq!(
            Accepting::Stopped.steer(FAR),
            (Arm::Nothing, Accepting::Stopped)
        );
        // A pause with nothing in flight takes effect at once.
        assert_eq!(
            Accepting::Idle.wind_down(After::Pause(later)),
            (Arm::Nothing, Accepting::Paused(later))
        );
        assert_eq!(Accepting::Paused(later).steer(FAR).0, Arm::Nothing);
    }
}
