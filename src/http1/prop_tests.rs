//! Properties over generated heads: parsing is the same whatever the
//! segmentation, and parse → write → parse keeps what must be kept.

use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::head::{
    RequestScanner, ResponseContext, ResponseScanner, parse_request, parse_response,
};
use super::write::{
    HOP_BY_HOP, REQUEST_OWN, RequestEdits, ResponseEdits, write_request, write_response,
};
use super::{BodyFraming, Version};

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,8}",
        1 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just("%2F".to_owned()),
        1 => Just("%2e%2E".to_owned()),
        1 => Just("a%41".to_owned()),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "x-[a-z0-9]{1,8}",
        1 => prop::sample::select(vec![
            "Accept", "User-Agent", "Cookie", "X-Forwarded-For", "X-Forwarded-Proto", "Connection",
            "Keep-Alive", "TE", "Upgrade", "Expect", "Proxy-Connection",
        ])
        .prop_map(str::to_owned),
    ]
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[!-~]([ -~]{0,10}[!-~])?",
        Just(String::new()),
        prop::sample::select(vec![
            "close",
            "keep-alive, x-1",
            "100-continue",
            "websocket"
        ])
        .prop_map(str::to_owned),
    ]
}

/// A well-formed request head followed by a few body bytes.
fn request_text() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "X-CUSTOM",
        ]),
        prop::collection::vec(segment(), 0..5),
        prop::option::of("[a-zA-Z0-9=&%/?:@._~-]{0,12}"),
        any::<bool>(),
        prop::option::of("[a-z]{1,8}(\\.[a-z]{1,5})?(:[0-9]{1,5})?"),
        prop::collection::vec((field_name(), field_value()), 0..8),
        0..3u8,
        any::<bool>(),
    )
        .prop_map(
            |(method, segments, query, http10, host, fields, framing, absolute)| {
                let path = format!("/{}", segments.join("/"));
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
                let host = host.or_else(|| (!http10).then(|| "h".to_owned()));
                let target = match (&host, absolute) {
                    (Some(h), true) => format!("http://{h}{path}{query}"),
                    _ => format!("{path}{query}"),
                };
                let mut text = format!("{method} {target} {version}\r\n");
                if let Some(h) = host {
                    text.push_str(&format!("Host: {h}\r\n"));
                }
                for (name, value) in fields {
                    text.push_str(&format!("{name}: {value}\r\n"));
                }
                match framing {
                    1 => text.push_str("Content-Length: 3\r\n"),
                    2 if !http10 => text.push_str("Transfer-Encoding: chunked\r\n"),
                    _ => {}
                }
                text.push_str("\r\nabc");
                text
            },
        )
}

/// Maybe one nasty byte inserted somewhere.
fn mutated(text: String) -> impl Strategy<Value = Vec<u8>> {
    let len = text.len();
    (
        prop::option::of((
            0..=len,
            prop::sample::select(vec![b'\n', b'\r', 0u8, b' ', b'\t', b':', 0x7f, b',', 0xe9]),
        )),
        Just(text),
    )
        .prop_map(|(mutation, text)| {
            let mut bytes = text.into_bytes();
            if let Some((at, byte)) = mutation {
                bytes.insert(at, byte);
            }
            bytes
        })
}

/// Every prefix of `input` parses to "need more" or to what the whole
/// parses to, and a scanner fed the growing prefixes agrees: not whole
/// while the parse needs more, the same refusal when it refuses.
fn check_every_prefix<T: PartialEq + Debug, E: PartialEq + Debug>(
    input: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<T>, E>,
    mut scan: impl FnMut(&[u8]) -> Result<bool, E>,
) -> Result<(), TestCaseError> {
    let full = parse(input);
    for end in 0..=input.len() {
        let partial = parse(&input[..end]);
        let need_more = matches!(partial, Ok(None));
        prop_assert!(
            need_more || partial == full,
            "prefix {end}: {:?} vs {:?}",
            partial,
            full
        );
        match scan(&input[..end]) {
            Ok(whole) => prop_assert_eq!(whole, !need_more, "prefix {}", end),
            Err(e) => {
                prop_assert_eq!(partial, Err(e), "prefix {}", end);
                break;
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn request_parsing_does_not_depend_on_segmentation(input in request_text().prop_flat_map(mutated)) {
        let mut scanner = RequestScanner::new();
        check_every_prefix(&input, parse_request, |buf| scanner.scan(buf))?;
    }

    #[test]
    fn response_parsing_does_not_depend_on_segmentation(
        status in 100..600u16,
        fields in prop::collection::vec((field_name(), field_value()), 0..6),
        framing in 0..3u8,
        mutation in prop::option::of((any::<prop::sample::Index>(), prop::sample::select(vec![b'\n', b'\r', 0u8, b' ', b'\t']))),
    ) {
        let mut text = format!("HTTP/1.1 {status} Reason\r\n");
        for (name, value) in fields {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(["", "Content-Length: 3\r\n", "Transfer-Encoding: chunked\r\n"][usize::from(framing)]);
        text.push_str("\r\nabc");
        let mut input = text.into_bytes();
        if let Some((at, byte)) = mutation {
            input.insert(at.index(input.len() + 1), byte);
        }
        let context = ResponseContext { head_request: false, version: Version::Http11 };
        let mut scanner = ResponseScanner::new();
        check_every_prefix(&input, |buf| parse_response(buf, context), |buf| scanner.scan(buf))?;
    }

    #[test]
    fn a_forwarded_request_parses_back_to_the_same_request(text in request_text(), id in "[a-f0-9-]{1,36}") {
        let (first, consumed) = match parse_request(text.as_bytes()) {
            Ok(Some(parsed)) => parsed,
            other => return Err(TestCaseError::fail(format!("{text:?}: {other:?}"))),
        };
        prop_assert_eq!(&text.as_bytes()[consumed..], b"abc");
        let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        let edits = RequestEdits { target: None, authority: None, peer, request_id: &id, ops: &[], close: false, upgrade: None };
        let mut wire = Vec::new();
        write_request(&first, &edits, &mut wire);
        let (second, consumed) = match parse_request(&wire) {
            Ok(Some(parsed)) => parsed,
            other => return Err(TestCaseError::fail(format!("{:?}: {other:?}", String::from_utf8_lossy(&wire)))),
        };
        prop_assert_eq!(consumed, wire.len());
        prop_assert_eq!(second.method(), first.method());
        prop_assert_eq!(second.path(), first.path());
        prop_assert_eq!(second.query(), first.query());
        prop_assert_eq!(second.authority(), first.authority());
        prop_assert_eq!(second.framing(), first.framing());
        prop_assert_eq!(second.version(), Version::Http11);
        prop_assert!(second.keep_alive());
        prop_assert_eq!(second.fields().first("x-request-id"), Some(id.as_bytes()));
        let xff = second.fields().first("x-forwarded-for").unwrap_or_default();
        prop_assert!(xff.ends_with(b"192.0.2.9"));
        let nominated: Vec<String> = first
            .fields()
            .values("connection")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
            .collect();
        let kept = |(name, _): &(&str, &[u8])| {
            let name = name.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&name.as_str())
                && !REQUEST_OWN.contains(&name.as_str()) && !nominated.contains(&name)
        };
        let want: Vec<(&str, &[u8])> = first.fields().iter().filter(kept).collect();
        let got: Vec<(&str, &[u8])> = second.fields().iter().filter(kept).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn a_forwarded_response_parses_back_to_the_same_response(
        status in 200..600u16,
        fields in prop::collection::vec((field_name(), field_value()), 0..6),
        framing in 0..3u8,
    ) {
        let mut text = format!("HTTP/1.1 {status} Reason\r\n");
        for (name, value) in &fields {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(["", "Content-Length: 3\r\n", "Transfer-Encoding: chunked\r\n"][usize::from(framing)]);
        text.push_str("\r\n");
        let context = ResponseContext { head_request: false, version: Version::Http11 };
        let Ok(Some((first, _))) = parse_response(text.as_bytes(), context) else {
            return Err(TestCaseError::fail(text));
        };
        let edits = ResponseEdits { version: Version::Http11, keep_alive: first.keep_alive(), dechunk: false, ops: &[] };
        let mut wire = Vec::new();
        write_response(&first, &edits, &mut wire);
        let Ok(Some((second, consumed))) = parse_response(&wire, context) else {
            return Err(TestCaseError::fail(String::from_utf8_lossy(&wire).into_owned()));
        };
        prop_assert_eq!(consumed, wire.len());
        prop_assert_eq!(second.status(), first.status());
        prop_assert_eq!(second.reason(), first.reason());
        prop_assert_eq!(second.framing(), first.framing());
        prop_assert_eq!(second.keep_alive(), first.keep_alive());
        let close_delimited = first.framing() == BodyFraming::CloseDelimited;
        prop_assert_eq!(second.fields().values("connection").next().is_some(), close_delimited || !first.keep_alive());
    }
}
