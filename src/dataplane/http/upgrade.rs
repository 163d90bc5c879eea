//! Requests that ask to leave HTTP/1.1, judged once their head is parsed
//! and before they are routed (README "HTTP routing": upgrades):
//!
//! | the client sends | ringway |
//! |---|---|
//! | `GET`, `Connection: upgrade`, `Upgrade: websocket`, a `Sec-WebSocket-Key` of 16 bytes in base64, a `Sec-WebSocket-Version` | forwarded with Upgrade and Connection; a `101` makes the connection a tunnel (`tunnel.rs`) |
//! | a WebSocket upgrade that is not that (no or bad key, no version, not GET, HTTP/1.0) | 400, close |
//! | `Upgrade: h2c` alone | Upgrade and `HTTP2-Settings` stripped: served as HTTP/1.1 |
//! | any other `Upgrade` (also a list naming `websocket` with others) | 403 `upgrade_failed`, close (Envoy) |
//! | `CONNECT` | 405, close: ringway is no forward proxy |
//! | the HTTP/2 preface (`PRI * HTTP/2.0`) | an empty SETTINGS frame and GOAWAY `HTTP_1_1_REQUIRED`, close |
//!
//! Refusals close the connection: nothing pipelined behind them is read.
#![forbid(unsafe_code)]

use crate::http1::Version;
use crate::http1::head::{RequestHead, detail};

/// What becomes of a request that passed [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upgrade {
    /// An ordinary request (an `h2c` upgrade is one, stripped).
    None,
    /// A valid WebSocket handshake.
    WebSocket,
}

/// A head refused before routing: the status of the local reply and the
/// detail logged (the connection closes after the reply).
pub(crate) type Refusal = (u16, &'static str);

/// Judge a request head's method and upgrade fields.
pub(crate) fn classify(head: &RequestHead) -> Result<Upgrade, Refusal> {
    if head.method() == "CONNECT" {
        return Err((405, detail::CONNECT));
    }
    let Some(value) = head.upgrade() else {
        // `upgrade()` is HTTP/1.1 only; a WebSocket handshake in HTTP/1.0
        // cannot work (RFC 6455 §4.1 requires 1.1).
        let fields = head.fields();
        let websocket_on_10 = head.version() == Version::Http10
            && fields.connection_has("upgrade")
            && fields
                .values("upgrade")
                .flat_map(list_items)
                .any(is_websocket);
        return match websocket_on_10 {
            true => Err((400, detail::INVALID_WEBSOCKET)),
            false => Ok(Upgrade::None),
        };
    };
    let tokens: Vec<&[u8]> = list_items(value).collect();
    if !tokens.is_empty() && tokens.iter().all(|t| t.eq_ignore_ascii_case(b"h2c")) {
        return Ok(Upgrade::None);
    }
    match tokens[..] {
        [token] if is_websocket(token) => match valid_handshake(head) {
            true => Ok(Upgrade::WebSocket),
            false => Err((400, detail::INVALID_WEBSOCKET)),
        },
        _ => Err((403, detail::UPGRADE_FAILED)),
    }
}

/// A request [`classify`] accepted as a WebSocket handshake.
pub(crate) fn wants_websocket(head: &RequestHead) -> bool {
    classify(head) == Ok(Upgrade::WebSocket)
}

/// The items of a comma-separated field value, trimmed, empty ones
/// skipped.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

fn is_websocket(token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(b"websocket")
}

/// RFC 6455 §4.1 as a proxy can check it: GET, one key that is 16 bytes
/// in base64, a version. (Which versions the server speaks is its call: it
/// answers 426 with the ones it does.)
fn valid_handshake(head: &RequestHead) -> bool {
    let fields = head.fields();
    let mut keys = fields.values("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) => key,
        _ => return false,
    };
    let version = fields.first("sec-websocket-version");
    head.method() == "GET" && is_key(key) && version.is_some_and(|v| !v.is_empty())
}

/// 16 bytes in base64: 22 characters of the alphabet, the last of them
/// carrying 2 bits (so `A`, `Q`, `g` or `w`), then `==`.
fn is_key(key: &[u8]) -> bool {
    let alphabet = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24
        && key[..22].iter().all(alphabet)
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
        && &key[22..] == b"=="
}

/// What ringway sends an HTTP/2 client that opened with the connection
/// preface (RFC 9113 §3.4): its own preface (an empty SETTINGS frame),
/// then GOAWAY with last stream 0 and `HTTP_1_1_REQUIRED` (0xd, §7), which
/// h2 clients report as such, where an HTTP/1.1 505 is unreadable to them.
pub(crate) fn h2_refusal() -> Vec<u8> {
    const DEBUG: &[u8] = b"ringway: this listener speaks HTTP/1.1 only";
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const HTTP_1_1_REQUIRED: u32 = 0xd;
    let mut out = Vec::with_capacity(9 + 9 + 8 + DEBUG.len());
    // Frame header: 24-bit length, type, flags, stream 0.
    out.extend_from_slice(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]);
    let len = u32::try_from(8 + DEBUG.len()).unwrap_or(8);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&HTTP_1_1_REQUIRED.to_be_bytes());
    out.extend_from_slice(DEBUG);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::parse_request;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn judge(head: &str) -> Result<Upgrade, Refusal> {
        let (head, _) = parse_request(head.as_bytes())
            .expect("parses")
            .expect("whole");
        classify(&head)
    }

    fn ws(method: &str, version: &str, extra: &str) -> String {
        format!(
            "{method} /ws {version}\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{extra}\r\n"
        )
    }

    #[test]
    fn upgrades_are_judged_before_routing() {
        struct Case {
            name: &'static str,
            head: String,
            want: Result<Upgrade, Refusal>,
        }
        let valid = format!("Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n");
        let bad = 400;
        let cases = [
            Case { name: "plain GET", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n".into(), want: Ok(Upgrade::None) },
            Case { name: "websocket", head: ws("GET", "HTTP/1.1", &valid), want: Ok(Upgrade::WebSocket) },
            Case { name: "no key", head: ws("GET", "HTTP/1.1", "Sec-WebSocket-Version: 13\r\n"), want: Err((bad, detail::INVALID_WEBSOCKET)) },
            Case { name: "key of 15 bytes", head: ws("GET", "HTTP/1.1", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\r\nSec-WebSocket-Version: 13\r\n"), want: Err((bad, detail::INVALID_WEBSOCKET)) },
            Case { name: "key with stray bits", head: ws("GET", "HTTP/1.1", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\nSec-WebSocket-Version: 13\r\n"), want: Err((bad, detail::INVALID_WEBSOCKET)) },
            Case { name: "two keys", head: ws("GET", "HTTP/1.1", &format!("{valid}Sec-WebSocket-Key: {KEY}\r\n")), want: Err((bad, detail::INVALID_WEBSOCKET)) },
            Case { name: "no version", head: ws("GET", "HTTP/1.1", &format!("Sec-WebSocket-Key: {KEY}\r\n")), want: Err((bad, detail::INVALID_WEBSOCKET)) },
            Case { name: "POST", head: ws("POST", "HTTP/1.1", &valid), want: Err((bad, detail::INVALID_WEBSOCKET)) },
            Case { name: "HTTP/1.0", head: ws("GET", "HTTP/1.0", &valid), want: Err((bad, detail::INVALID_WEBSOCKET)) },
            Case { name: "foo", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n".into(), want: Err((403, detail::UPGRADE_FAILED)) },
            Case { name: "websocket among others", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket, foo\r\n\r\n".into(), want: Err((403, detail::UPGRADE_FAILED)) },
            Case { name: "h2c", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n".into(), want: Ok(Upgrade::None) },
            Case { name: "Upgrade not nominated", head: "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\n\r\n".into(), want: Ok(Upgrade::None) },
            Case { name: "foo on HTTP/1.0", head: "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n".into(), want: Ok(Upgrade::None) },
            Case { name: "CONNECT", head: "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".into(), want: Err((405, detail::CONNECT)) },
        ];
        for case in cases {
            assert_eq!(judge(&case.head), case.want, "{}", case.name);
        }
    }

    #[test]
    fn the_h2_refusal_is_settings_then_goaway_http_1_1_required() {
        let bytes = h2_refusal();
        assert_eq!(&bytes[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0], "empty SETTINGS");
        let goaway = &bytes[9..];
        let len = u32::from_be_bytes([0, goaway[0], goaway[1], goaway[2]]) as usize;
        assert_eq!(goaway[3], 7, "GOAWAY");
        assert_eq!(goaway.len(), 9 + len);
        assert_eq!(&goaway[9..13], &[0, 0, 0, 0], "last stream 0");
        assert_eq!(&goaway[13..17], &[0, 0, 0, 0xd], "HTTP_1_1_REQUIRED");
    }
}
