//! The model kernel's side of the simulation: which operation completes
//! next and how (random segments, partial sends, ENOBUFS, cancellations,
//! connects), the upstream servers answering what they receive, and the
//! client writing its requests (pipelined or one after another).

use std::time::Duration;

use ringway::dataplane::io::Completion;
use ringway::dataplane::token::{Dir, Op};

use super::model::{Pending, Sock, World};
use super::traffic::{requests_in, responses_in};

impl World {
    /// Complete responses the client has received (parsed on from the end
    /// of the last complete one, when more bytes arrived).
    pub fn client_responses(&mut self) -> usize {
        let (len, at, n) = self.client_seen;
        if len != self.client.rx.len() {
            let more = responses_in(&self.client.rx[at..], false).unwrap_or_default();
            let end = more.last().map_or(0, |m| m.end);
            self.client_seen = (self.client.rx.len(), at + end, n + more.len());
        }
        self.client_seen.2
    }

    /// The server behind connection `i` reads what it received and
    /// answers each complete request. A request's first byte arriving
    /// before the client has the response before it is an early forward.
    pub fn serve(&mut self, i: usize) {
        let answered = self.client_responses();
        let conn = &mut self.conns[i];
        if conn.dead {
            return;
        }
        if conn.started_with.is_none() && conn.peer.rx.len() > conn.parsed {
            conn.started_with = Some(answered);
        }
        let got = requests_in(&conn.peer.rx[conn.parsed..])
            .unwrap_or_else(|e| panic!("upstream {i} received a malformed request: {e}"));
        for mut m in got {
            let k = m.seq.expect("every request carries x-seq");
            let before = conn.started_with.unwrap_or(answered);
            assert!(
                before >= k,
                "request {k} reached upstream {i} when the client had {before} responses"
            );
            assert!(
                self.served[k].is_none(),
                "request {k} reached an upstream twice"
            );
            conn.parsed += m.end;
            m.end = conn.parsed;
            self.served[k] = Some((m, i));
            conn.started_with = (conn.peer.rx.len() > conn.parsed).then_some(answered);
            let (wire, _, closes) = &self.answers[k];
            conn.peer.tx.extend_from_slice(wire);
            conn.peer.fin |= *closes;
        }
    }

    /// The client writes the requests it may write now, and closes once
    /// every response arrived.
    pub fn client_progress(&mut self) {
        let done = self.client_responses();
        while self.released < self.requests.len() {
            let k = self.released;
            if k > 0 && !self.requests[k].pipelined && done < k {
                break;
            }
            self.client.tx.extend_from_slice(&self.requests[k].wire);
            self.released += 1;
        }
        if done == self.requests.len() {
            self.client.fin = true;
        }
    }

    /// Whether an op can complete now.
    fn ready(&self, p: &Pending) -> bool {
        if self.finished.is_some() {
            return true;
        }
        let source = |sock: Sock| {
            let (peer, dead) = match sock {
                Sock::Client => (&self.client, false),
                Sock::Up(i) => (&self.conns[i].peer, self.conns[i].dead),
            };
            dead || peer.available() > 0 || peer.fin
        };
        match *p {
            Pending::Recv {
                sock, cancelled, ..
            } => cancelled || source(sock),
            Pending::Poll {
                op: Op::Readable(_),
                sock,
            } => source(sock),
            _ => true,
        }
    }

    /// One random step: a completion, buffers coming back, or time.
    /// Returns false when nothing at all can happen any more.
    pub fn step(&mut self) -> bool {
        self.client_progress();
        let ready: Vec<usize> = (0..self.pending.len())
            .filter(|&i| self.ready(&self.pending[i]))
            .collect();
        let starved: Vec<Dir> = Dir::BOTH
            .into_iter()
            .filter(|d| self.starved[d.index()] && !self.free.is_empty())
            .collect();
        if ready.is_empty() && starved.is_empty() {
            if self.finished.is_some() {
                return false;
            }
            // Nothing moves until a timer fires.
            let at = self.session.next_deadline();
            self.now = at
                .unwrap_or(self.now + Duration::from_secs(1))
                .max(self.now);
            return self.tick();
        }
        if !self.late_cancels {
            // The kernel cancels at submission: a cancelled recv ends
            // before anything that happens after.
            let cancelled = ready.iter().find(|&&i| {
                matches!(
                    self.pending[i],
                    Pending::Recv {
                        cancelled: true,
                        ..
                    }
                )
            });
            if let Some(&i) = cancelled {
                let p = self.pending.remove(i);
                self.complete(p);
                return true;
            }
        }
        let pick = self.rng.below((ready.len() + starved.len() + 1) as u64) as usize;
        if pick < ready.len() {
            let p = self.pending.remove(ready[pick]);
            self.complete(p);
        } else if pick < ready.len() + starved.len() {
            let d = starved[pick - ready.len()];
            self.starved[d.index()] = false;
            let mut out = Vec::new();
            self.session.on_buffers(d, &mut out);
            self.apply(out);
        } else {
            self.now += Duration::from_millis(self.rng.below(20));
            self.tick();
        }
        true
    }

    /// Timers, at the worker's tick; a session acts only at or after the
    /// deadline it announced.
    fn tick(&mut self) -> bool {
        let deadline = self.session.next_deadline();
        let mut out = Vec::new();
        self.session.on_tick(self.now, &mut out);
        assert!(
            out.is_empty() || deadline.is_some_and(|d| d <= self.now),
            "{out:?} at a tick before the deadline {deadline:?}"
        );
        self.log.push(format!("tick -> {out:?}"));
        self.apply(out);
        deadline.is_some()
    }

    fn complete(&mut self, p: Pending) {
        let over = self.finished.is_some();
        match p {
            Pending::Recv {
                dir,
                sock,
                left,
                cancelled,
            } => self.complete_recv(dir, sock, left, cancelled),
            Pending::CancelRecv(dir) => {
                if let Some(at) = self.pending.iter().position(
                    |q| matches!(q, Pending::Recv { dir: d, cancelled: true, .. } if *d == dir),
                ) {
                    self.pending.remove(at);
                    self.feed(Completion::done(Op::Recv(dir), -libc::ECANCELED));
                }
                self.feed(Completion::done(Op::CancelRecv(dir), 0));
            }
            Pending::Send {
                dir,
                sock,
                bid,
                offset,
                len,
            } => {
                let res = if over && self.rng.chance(50) {
                    -libc::ECANCELED
                } else {
                    let bytes = self.held[&bid][offset as usize..(offset + len) as usize].to_vec();
                    self.write(sock, &bytes)
                };
                self.feed(Completion::done(Op::Send(dir), res));
            }
            Pending::Poll { op, .. } => {
                let res = if over { -libc::ECANCELED } else { 1 };
                self.feed(Completion::done(op, res));
            }
            Pending::Connect { conn, res } => {
                let res = if over { -libc::ECANCELED } else { res };
                self.conns[conn].connected = res == 0;
                self.feed(Completion::done(Op::Connect, res));
            }
            Pending::ConnectTimeout(res) => self.feed(Completion::done(Op::ConnectTimeout, res)),
        }
    }

    fn complete_recv(&mut self, dir: Dir, sock: Sock, left: u32, cancelled: bool) {
        let over = self.finished.is_some();
        let dead = matches!(sock, Sock::Up(i) if self.conns[i].dead);
        let available = self.peer(sock).available();
        if over || (cancelled && (available == 0 || self.rng.chance(70))) {
            return self.feed(Completion::done(Op::Recv(dir), -libc::ECANCELED));
        }
        if dead {
            let res = if self.rng.chance(50) {
                0
            } else {
                -libc::ECONNRESET
            };
            return self.feed(Completion::done(Op::Recv(dir), res));
        }
        if available == 0 {
            return self.feed(Completion::done(Op::Recv(dir), 0));
        }
        // The ring is the worker's, shared with its other connections:
        // it may be empty whatever this one holds.
        let dry = self.rng.chance(3);
        let Some(bid) = (if dry { None } else { self.free.pop() }) else {
            return self.feed(Completion::done(Op::Recv(dir), -libc::ENOBUFS));
        };
        let n = (1 + self.rng.below(u64::from(self.buffer_size))).min(available as u64) as usize;
        let peer = self.peer(sock);
        let data = peer.tx[peer.read..peer.read + n].to_vec();
        peer.read += n;
        let more = left > 1 && !cancelled && self.rng.chance(90);
        if more {
            self.pending.push(Pending::Recv {
                dir,
                sock,
                left: left - 1,
                cancelled,
            });
        }
        self.held.insert(bid, data.clone());
        self.feed(Completion {
            op: Op::Recv(dir),
            res: n as i32,
            bid: Some(bid),
            data: &data,
            more,
        });
    }
}
