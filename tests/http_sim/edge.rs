//! Hand-driven cases for the edge paths of issue 15: a WebSocket request
//! upgraded to a tunnel, interim 1xx heads relayed (and a final head that
//! waits for one still being sent), upgrades refused before routing.

use ringway::dataplane::io::{Close, CloseReason, Io};
use ringway::dataplane::token::Dir;

use super::hand::Driver;
use super::traffic::responses_in;

const UP: Dir = Dir::ToUpstream;
const DOWN: Dir = Dir::ToDownstream;

const WEBSOCKET: &[u8] = b"GET /chat HTTP/1.1\r\nhost: tomcat.istio.com\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A request routed and sent on a pooled connection: its head as written
/// upstream.
fn sent_upstream(d: &mut Driver, request: &[u8]) -> Vec<u8> {
    assert_eq!(d.recv(UP, request, false), vec![Io::GiveBack(1), Io::Route]);
    assert_eq!(d.route(), vec![Io::Checkout { fresh: false }]);
    let out = d.checkout(true);
    assert!(out.contains(&Io::SendOwned(UP)), "{out:?}");
    assert!(out.contains(&Io::RecvOnce(DOWN)), "{out:?}");
    let (head, _) = d.send_owned(UP);
    head
}

#[test]
fn a_101_to_a_websocket_request_makes_a_tunnel() {
    let (mut d, _) = Driver::open(&super::plan(false));
    let mut request = WEBSOCKET.to_vec();
    request.extend_from_slice(b"\x81\x85early");
    let head = sent_upstream(&mut d, &request);
    let head = text(&head);
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("sec-websocket-key: "), "{head}");

    let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
    let out = d.recv(DOWN, answer, false);
    assert!(out.contains(&Io::SendOwned(UP)), "{out:?}");
    assert!(out.contains(&Io::SendOwned(DOWN)), "{out:?}");
    assert!(
        !out.iter().any(|io| matches!(io, Io::Release(_))),
        "never pooled: {out:?}"
    );
    let (to_client, _) = d.send_owned(DOWN);
    assert!(
        to_client.ends_with(b"\r\n\r\n\x81\x02hi"),
        "the upstream's bytes after its head"
    );
    let to_client = text(&to_client);
    assert!(
        to_client.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{to_client}"
    );
    assert!(
        to_client.contains("\r\nconnection: upgrade\r\n"),
        "{to_client}"
    );
    assert!(
        to_client.contains("\r\nupgrade: websocket\r\n"),
        "{to_client}"
    );
    let (to_upstream, _) = d.send_owned(UP);
    assert_eq!(
        to_upstream, b"\x81\x85early",
        "the client's bytes after the head"
    );
    assert!(d.s.close().is_none(), "the tunnel is open");
    assert!(d.s.take_report().is_none(), "reported at the end");

    // The drain ends it as a TCP connection: one Finish with every byte,
    // one report with 101.
    let mut out = Vec::new();
    d.s.drain(&mut out);
    let finish: Vec<&Close> = out
        .iter()
        .filter_map(|io| match io {
            Io::Finish(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(finish.len(), 1, "{out:?}");
    assert_eq!(finish[0].reason, CloseReason::Drained);
    let moved = d.s.moved();
    assert_eq!(finish[0].to_upstream, moved[0]);
    assert_eq!(finish[0].to_downstream, moved[1]);
    assert!(moved[0] >= head.len() as u64 + 7, "{moved:?}");
    assert!(out.contains(&Io::Report), "{out:?}");
    assert_eq!(d.report().0, 101);
}

#[test]
fn a_101_to_a_plain_request_is_502() {
    let (mut d, _) = Driver::open(&super::plan(false));
    sent_upstream(&mut d, b"GET /a HTTP/1.1\r\nhost: tomcat.istio.com\r\n\r\n");
    let out = d.recv(
        DOWN,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        false,
    );
    assert!(out.contains(&Io::SendOwned(DOWN)), "{out:?}");
    let (reply, _) = d.send_owned(DOWN);
    assert_eq!(responses_in(&reply, true).unwrap()[0].start, "502");
    assert_eq!(d.report(), (502, "UPE"));
}

#[test]
fn a_100_continue_is_relayed_and_the_final_head_waits_for_it() {
    let (mut d, _) = Driver::open(&super::plan(false));
    let request = b"PUT /a HTTP/1.1\r\nhost: tomcat.istio.com\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n";
    let head = sent_upstream(&mut d, request);
    assert!(text(&head).contains("expect: 100-continue"));
    let out = d.recv(
        DOWN,
        b"HTTP/1.1 100 Continue\r\nX-Hop: 1\r\nConnection: X-Hop\r\n\r\n",
        false,
    );
    assert!(out.contains(&Io::SendOwned(DOWN)), "{out:?}");
    assert!(
        out.contains(&Io::RecvOnce(DOWN)),
        "the final head is read: {out:?}"
    );
    assert_eq!(
        text(d.s.outbox(DOWN).unwrap()),
        "HTTP/1.1 100 Continue\r\n\r\n",
        "hop-by-hop fields removed"
    );
    // The final head arrives before the 100 is sent: it waits.
    let out = d.recv(
        DOWN,
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        false,
    );
    assert!(!out.contains(&Io::SendOwned(DOWN)), "{out:?}");
    let (interim, out) = d.send_owned(DOWN);
    assert_eq!(text(&interim), "HTTP/1.1 100 Continue\r\n\r\n");
    assert!(
        out.contains(&Io::SendOwned(DOWN)),
        "now the final head: {out:?}"
    );
    let (fin, _) = d.send_owned(DOWN);
    let fin = text(&fin);
    assert!(fin.starts_with("HTTP/1.1 200 OK\r\n"), "{fin}");
    // Sent before the request body: the connection closes after it.
    assert!(fin.contains("connection: close\r\n"), "{fin}");
}

#[test]
fn an_http_1_0_client_gets_no_interim_head() {
    let (mut d, _) = Driver::open(&super::plan(false));
    let request = b"GET /a HTTP/1.0\r\nhost: tomcat.istio.com\r\n\r\n";
    sent_upstream(&mut d, request);
    let out = d.recv(DOWN, b"HTTP/1.1 100 Continue\r\n\r\n", false);
    assert!(!out.contains(&Io::SendOwned(DOWN)), "{out:?}");
    assert!(out.contains(&Io::RecvOnce(DOWN)), "{out:?}");
    let out = d.recv(
        DOWN,
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        false,
    );
    assert!(out.contains(&Io::SendOwned(DOWN)), "{out:?}");
    let (fin, _) = d.send_owned(DOWN);
    assert!(text(&fin).starts_with("HTTP/1.0 200 OK\r\n"));
}

#[test]
fn refused_upgrades_close_before_routing() {
    struct Case {
        head: &'static [u8],
        status: u16,
        detail: &'static str,
    }
    let cases = [
        Case { head: b"GET / HTTP/1.1\r\nhost: tomcat.istio.com\r\nconnection: upgrade\r\nupgrade: foo\r\n\r\n", status: 403, detail: "upgrade_failed" },
        Case { head: b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n", status: 405, detail: "http1.connect_not_allowed" },
        Case { head: b"GET / HTTP/1.1\r\nhost: tomcat.istio.com\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n", status: 400, detail: "http1.invalid_websocket_handshake" },
    ];
    for case in cases {
        let (mut d, _) = Driver::open(&super::plan(false));
        let mut bytes = case.head.to_vec();
        bytes.extend_from_slice(b"GET /next HTTP/1.1\r\nhost: tomcat.istio.com\r\n\r\n");
        let out = d.recv(UP, &bytes, false);
        assert_eq!(
            out,
            vec![
                Io::GiveBack(1),
                Io::Reject {
                    status: case.status,
                    detail: case.detail
                },
                Io::SendOwned(DOWN)
            ]
        );
        let (reply, out) = d.send_owned(DOWN);
        let replies = responses_in(&reply, true).unwrap();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].start, case.status.to_string());
        assert!(
            matches!(out.last(), Some(Io::Finish(c)) if c.reason == CloseReason::Done),
            "{out:?}"
        );
    }
}

#[test]
fn the_h2_preface_gets_goaway() {
    let (mut d, _) = Driver::open(&super::plan(false));
    let out = d.recv(UP, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false);
    assert_eq!(out[2], Io::SendOwned(DOWN), "{out:?}");
    let (bytes, _) = d.send_owned(DOWN);
    assert_eq!(&bytes[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(bytes[12], 7);
    assert_eq!(&bytes[22..26], &[0, 0, 0, 0xd]);
}
