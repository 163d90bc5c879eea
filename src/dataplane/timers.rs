//! Connection deadlines (idle timeout, maximum duration, the ClientHello
//! timeout, a reset waiting for its sink) in a min-heap, so that a tick
//! costs the deadlines that are due, not one check per connection: an idle
//! connection costs nothing until its idle timeout comes.
//!
//! Nothing is removed in place. Each slot remembers the one instant it is
//! scheduled at; an entry whose slot was freed, reused or rescheduled
//! earlier is skipped when it comes up, and the heap is rebuilt without such
//! entries once they outnumber the live ones. A deadline that moves later
//! (bytes moved, so the idle timeout moved) is not rescheduled: the entry
//! fires, the connection finds nothing due and is scheduled again, once
//! per idle-timeout period at most.
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A slot due at `at` (`generation` tells a reused slot apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due {
    pub at: Instant,
    pub index: u32,
    pub generation: u32,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Due>>,
}

/// Stale entries tolerated beyond twice the live ones before a rebuild.
const SLACK: usize = 1024;

impl Timers {
    pub fn schedule(&mut self, due: Due) {
        self.heap.push(Reverse(due));
    }

    /// Move every entry due at `now` or earlier into `out` (earliest
    /// first). Entries scheduled while `out` is handled wait for the next
    /// call, even if already due: a tick never loops on one connection.
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<Due>) {
        while let Some(Reverse(due)) = self.heap.peek() {
            if due.at > now {
                break;
            }
            out.push(*due);
            self.heap.pop();
        }
    }

    /// Drop the entries `current` rejects once there are far more entries
    /// than `live` connections.
    pub fn compact(&mut self, live: usize, current: impl Fn(&Due) -> bool) {
        if self.heap.len() > 2 * live + SLACK {
            self.heap.retain(|Reverse(due)| current(due));
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn due_entries_come_out_earliest_first_and_only_when_due() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut timers = Timers::default();
        for (index, ms) in [(1, 300), (2, 100), (3, 200), (4, 100)] {
            timers.schedule(Due {
                at: at(ms),
                index,
                generation: 7,
            });
        }
        let mut out = Vec::new();
        timers.take_due(at(50), &mut out);
        assert!(out.is_empty());
        timers.take_due(at(200), &mut out);
        let order: Vec<u32> = out.iter().map(|d| d.index).collect();
        assert_eq!(order, [2, 4, 3]);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn stale_entries_are_dropped_once_they_outnumber_the_live_ones() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for index in 0..3000 {
            timers.schedule(Due {
                at: t0 + Duration::from_secs(3600),
                index,
                generation: 1,
            });
        }
        // Ten connections still open (slots 0..10): the rest are stale.
        timers.compact(10, |d| d.index < 10);
        assert_eq!(timers.len(), 10);
        // Below the slack nothing is rebuilt.
        timers.compact(0, |_| false);
        assert_eq!(timers.len(), 10);
    }
}
