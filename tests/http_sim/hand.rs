//! Hand-driven cases for the paths the issue names: each feeds an HTTP
//! session completions one by one and asserts on the exact I/O it asks
//! for and the bytes it writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway::dataplane::io::{Checkout, Close, CloseReason, Completion, Io, Release};
use ringway::dataplane::session::Session;
use ringway::dataplane::token::{Dir, Op};
use ringway::dataplane::{Plan, Settings};
use ringway::routing::table::{ClusterId, ListenerRouting};

use super::model::PEER;
use super::traffic::{requests_in, responses_in};

const UP: Dir = Dir::ToUpstream;
const DOWN: Dir = Dir::ToDownstream;
const GET: &[u8] = b"GET /a HTTP/1.1\r\nhost: tomcat.istio.com\r\n\r\n";

/// One session and the clock it runs on; buffers are numbered as they
/// are filled.
pub struct Driver {
    pub s: Session,
    pub now: Instant,
    pub plan: Arc<Plan>,
    pub settings: Settings,
    bid: u16,
}

impl Driver {
    pub fn open(plan: &Arc<Plan>) -> (Driver, Vec<Io>) {
        let settings = Settings {
            splice_after: u64::MAX,
            ..Settings::default()
        };
        let listener = plan
            .table
            .listeners
            .iter()
            .position(|l| matches!(l.routing, ListenerRouting::Http { .. }))
            .unwrap();
        let now = Instant::now();
        let mut out = Vec::new();
        let s = Session::open(plan, listener, PEER, &settings, now, &mut out);
        let d = Driver {
            s,
            now,
            plan: Arc::clone(plan),
            settings,
            bid: 0,
        };
        (d, out)
    }

    /// A recv on `dir` delivers `bytes` in a fresh buffer (`more`: the
    /// multishot recv stays armed).
    pub fn recv(&mut self, dir: Dir, bytes: &[u8], more: bool) -> Vec<Io> {
        self.bid += 1;
        let c = Completion {
            op: Op::Recv(dir),
            res: bytes.len() as i32,
            bid: Some(self.bid),
            data: bytes,
            more,
        };
        let mut out = Vec::new();
        self.s.on_completion(c, self.now, &mut out);
        out
    }

    pub fn done(&mut self, op: Op, res: i32) -> Vec<Io> {
        let mut out = Vec::new();
        self.s
            .on_completion(Completion::done(op, res), self.now, &mut out);
        out
    }

    pub fn route(&mut self) -> Vec<Io> {
        let mut out = Vec::new();
        let plan = Arc::clone(&self.plan);
        self.s.on_route(&plan, [1, 2], self.now, &mut out);
        out
    }

    /// The worker's answer to a checkout: cluster 0, reused or not.
    pub fn checkout(&mut self, reused: bool) -> Vec<Io> {
        let mut out = Vec::new();
        self.s.on_cluster(ClusterId(0));
        self.s.connecting_to(0);
        let c = Checkout {
            cluster: ClusterId(0),
            reused,
        };
        self.s.on_checkout(Ok(c), self.now, &mut out);
        out
    }

    /// The outbox of `dir`, sent whole.
    pub fn send_owned(&mut self, dir: Dir) -> (Vec<u8>, Vec<Io>) {
        let bytes = self.s.outbox(dir).expect("an outbox").to_vec();
        let out = self.done(Op::Send(dir), bytes.len() as i32);
        (bytes, out)
    }

    pub fn tick(&mut self, after: Duration) -> Vec<Io> {
        self.now += after;
        let mut out = Vec::new();
        self.s.on_tick(self.now, &mut out);
        out
    }

    /// The report the session hands over for [`Io::Report`].
    pub fn report(&mut self) -> (u16, &'static str) {
        let r = self.s.take_report().expect("a report");
        (r.status, r.flags)
    }
}

fn status_of(reply: &[u8]) -> String {
    let r = responses_in(reply, true).unwrap();
    assert_eq!(
        r.len(),
        1,
        "one reply in {:?}",
        String::from_utf8_lossy(reply)
    );
    r[0].start.clone()
}

fn says_close(reply: &[u8]) -> bool {
    String::from_utf8_lossy(reply).contains("connection: close\r\n")
}

/// A request forwarded on a connection from the pool: the request head
/// goes out, the response head is being read.
fn forwarded(d: &mut Driver, request: &[u8]) {
    assert_eq!(d.recv(UP, request, false), vec![Io::GiveBack(1), Io::Route]);
    assert_eq!(d.route(), vec![Io::Checkout { fresh: false }]);
    assert_eq!(
        d.checkout(true),
        vec![Io::SendOwned(UP), Io::RecvOnce(DOWN)]
    );
}

#[test]
fn a_404_for_an_unknown_host_keeps_the_connection() {
    let (mut d, out) = Driver::open(&super::plan(false));
    assert_eq!(out, vec![Io::RecvOnce(UP)]);
    let head = b"GET /x HTTP/1.1\r\nhost: nowhere.example.com\r\n\r\n";
    assert_eq!(d.recv(UP, head, false), vec![Io::GiveBack(1), Io::Route]);
    assert_eq!(d.route(), vec![Io::SendOwned(DOWN)]);
    let (reply, out) = d.send_owned(DOWN);
    assert_eq!(status_of(&reply), "404");
    assert!(!says_close(&reply));
    assert_eq!(
        out,
        vec![Io::Report, Io::RecvOnce(UP)],
        "the next request is read"
    );
    assert_eq!(d.report(), (404, "NR"));
    assert!(d.s.close().is_none());
}

#[test]
fn a_local_answer_to_a_request_with_an_unread_body_closes() {
    let (mut d, _) = Driver::open(&super::plan(false));
    let head = b"POST /x HTTP/1.1\r\nhost: nowhere.example.com\r\ncontent-length: 10\r\n\r\n1234";
    assert_eq!(d.recv(UP, head, false), vec![Io::GiveBack(1), Io::Route]);
    assert_eq!(d.route(), vec![Io::SendOwned(DOWN)]);
    let (reply, out) = d.send_owned(DOWN);
    assert_eq!(status_of(&reply), "404");
    assert!(says_close(&reply), "the unread body ends the connection");
    assert_eq!(out[0], Io::Report);
    assert!(
        matches!(
            out[1..],
            [Io::Finish(Close {
                reason: CloseReason::Done,
                ..
            })]
        ),
        "{out:?}"
    );
}

#[test]
fn a_closing_connection_counts_its_last_reply_once() {
    let (mut d, _) = Driver::open(&super::plan(false));
    let head = b"POST /x HTTP/1.1\r\nhost: nowhere.example.com\r\ncontent-length: 10\r\n\r\n1234";
    d.recv(UP, head, false);
    d.route();
    let (reply, out) = d.send_owned(DOWN);
    let close = Close {
        reason: CloseReason::Done,
        to_upstream: 0,
        to_downstream: reply.len() as u64,
    };
    assert_eq!(out, vec![Io::Report, Io::Finish(close)]);
}

#[test]
fn a_head_not_whole_within_the_head_timeout_gets_408() {
    let (mut d, _) = Driver::open(&super::plan(false));
    assert_eq!(
        d.recv(UP, b"GET /a HTTP/1.1\r\nho", false),
        vec![Io::GiveBack(1), Io::RecvOnce(UP)]
    );
    let timeout = d.settings.http.head_timeout;
    assert_eq!(d.s.next_deadline(), Some(d.now + timeout));
    assert!(
        d.tick(timeout - Duration::from_millis(1)).is_empty(),
        "not yet"
    );
    let out = d.tick(Duration::from_millis(1));
    assert_eq!(
        out[0],
        Io::Reject {
            status: 408,
            detail: "request_header_timeout"
        }
    );
    assert_eq!(out[1], Io::SendOwned(DOWN));
    let (reply, out) = d.send_owned(DOWN);
    assert_eq!(status_of(&reply), "408");
    assert!(says_close(&reply));
    assert!(matches!(
        out.last(),
        Some(Io::Finish(Close {
            reason: CloseReason::Done,
            ..
        }))
    ));
}

#[test]
fn a_route_timeout_before_the_response_head_gets_504_ut() {
    let plan = super::plan_edited(|vs| {
        vs.replace(
            "  - name: front-tomcat-route\n",
            "  - name: front-tomcat-route\n    timeout: 2s\n",
        )
    });
    let (mut d, _) = Driver::open(&plan);
    forwarded(&mut d, GET);
    let (head, out) = d.send_owned(UP);
    assert_eq!(requests_in(&head).unwrap()[0].start, "GET /a");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(d.s.next_deadline(), Some(d.now + Duration::from_secs(2)));
    assert!(d.tick(Duration::from_millis(1999)).is_empty(), "not yet");
    let out = d.tick(Duration::from_millis(1));
    assert!(
        out.contains(&Io::SendOwned(DOWN)),
        "a 504 for the client: {out:?}"
    );
    let (reply, _) = d.send_owned(DOWN);
    assert_eq!(status_of(&reply), "504");
    assert_eq!(d.report(), (504, "UT"));
}

#[test]
fn a_retry_on_a_new_connection_sends_the_same_request_body_included() {
    let (mut d, _) = Driver::open(&super::plan(false));
    forwarded(
        &mut d,
        b"POST /a HTTP/1.1\r\nhost: tomcat.istio.com\r\ncontent-length: 5\r\n\r\nhello",
    );
    let (first, _) = d.send_owned(UP);
    assert_eq!(requests_in(&first).unwrap()[0].body, b"hello");
    // The server had closed the pooled connection: FIN before any byte.
    let out = d.done(Op::Recv(DOWN), 0);
    assert_eq!(
        out,
        vec![Io::Release(Release::Close), Io::Checkout { fresh: true }]
    );
    assert!(d.checkout(false).is_empty(), "connecting");
    let out = d.done(Op::Connect, 0);
    assert_eq!(
        out,
        vec![Io::Connected, Io::SendOwned(UP), Io::RecvOnce(DOWN)]
    );
    let (second, _) = d.send_owned(UP);
    assert_eq!(
        String::from_utf8_lossy(&second),
        String::from_utf8_lossy(&first),
        "the same request again"
    );
}

#[test]
fn connection_close_from_the_client_ends_the_connection_after_its_response() {
    let (mut d, _) = Driver::open(&super::plan(false));
    forwarded(
        &mut d,
        b"GET /a HTTP/1.1\r\nhost: tomcat.istio.com\r\nconnection: close\r\n\r\n",
    );
    let (head, _) = d.send_owned(UP);
    assert_eq!(requests_in(&head).unwrap()[0].start, "GET /a");
    let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    assert_eq!(
        d.recv(DOWN, response, false),
        vec![Io::GiveBack(2), Io::SendOwned(DOWN)]
    );
    let (reply, out) = d.send_owned(DOWN);
    assert_eq!(status_of(&reply), "200");
    assert!(says_close(&reply), "the client asked to close");
    assert_eq!(
        out[..2],
        [
            Io::Release(Release::Pool {
                server_timeout: None
            }),
            Io::Report
        ]
    );
    assert!(matches!(
        out[2],
        Io::Finish(Close {
            reason: CloseReason::Done,
            ..
        })
    ));
    assert_eq!(d.report(), (200, "-"));
}

#[test]
fn drain_closes_an_idle_connection_at_once() {
    let (mut d, _) = Driver::open(&super::plan(false));
    let mut out = Vec::new();
    d.s.drain(&mut out);
    assert_eq!(out, vec![Io::Finish(Close::empty(CloseReason::Drained))]);
}

#[test]
fn drain_ends_a_busy_connection_at_once_with_dr() {
    let (mut d, _) = Driver::open(&super::plan(false));
    forwarded(&mut d, GET);
    let mut out = Vec::new();
    d.s.drain(&mut out);
    assert_eq!(
        out,
        vec![Io::Report, Io::Finish(Close::empty(CloseReason::Drained))]
    );
    assert_eq!(d.report(), (0, "DR"));
}

#[test]
fn wind_down_lets_a_busy_connection_finish_its_response_with_connection_close() {
    let (mut d, _) = Driver::open(&super::plan(false));
    forwarded(&mut d, GET);
    let mut out = Vec::new();
    let Session::Http(h) = &mut d.s else {
        panic!("an HTTP session");
    };
    h.wind_down(&mut out);
    assert!(out.is_empty(), "the request in flight goes on: {out:?}");
    let (_, out) = d.send_owned(UP);
    assert!(out.is_empty());
    let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    assert_eq!(
        d.recv(DOWN, response, false),
        vec![Io::GiveBack(2), Io::SendOwned(DOWN)]
    );
    let (reply, out) = d.send_owned(DOWN);
    assert!(says_close(&reply), "a draining connection says it closes");
    assert!(
        matches!(
            out.last(),
            Some(Io::Finish(Close {
                reason: CloseReason::Done,
                ..
            }))
        ),
        "{out:?}"
    );
}
