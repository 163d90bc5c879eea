//! Reads the server name (SNI) from a TLS ClientHello without terminating
//! TLS (SPEC §1.4). Sans-io: the caller feeds the bytes read so far and gets
//! an answer, or how many bytes it needs at least; the ClientHello may come
//! in several segments (and, rarely, several TLS records).
#![forbid(unsafe_code)]

/// Upper bound on the bytes ringway reads looking for the SNI. A
/// ClientHello is well under this; a larger one is refused
/// ([`Peek::TooLarge`]), as Envoy's TLS inspector refuses one beyond its
/// buffer (`client_hello_too_large`).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024 + 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// More bytes are needed: at least this many in total.
    NeedMore(usize),
    /// A complete ClientHello: its server name, if it sent one.
    ServerName(Option<String>),
    /// Not a TLS ClientHello (or malformed): route as a client without SNI
    /// would be routed, or close.
    NotTls(&'static str),
    /// A TLS ClientHello larger than [`MAX_CLIENT_HELLO`]: its SNI is not
    /// read, and it is not routed as a client without one.
    TooLarge,
}

/// Looks for the SNI in the first bytes of a connection.
pub fn peek(buf: &[u8]) -> Peek {
    // TLS records: type(1)=22 handshake, version(2), length(2), fragment.
    // The handshake message may span several records; gather its bytes.
    let mut handshake: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            return need(at + 5);
        };
        if header[0] != 22 {
            return Peek::NotTls("the first record is not a TLS handshake");
        }
        if header[1] != 3 {
            return Peek::NotTls("not a TLS record version");
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > 16 * 1024 + 2048 {
            return Peek::NotTls("bad TLS record length");
        }
        let Some(fragment) = buf.get(at + 5..at + 5 + len) else {
            // The handshake header tells the hello's size before the rest
            // of its first record arrives.
            if let (true, Some(&[1, a, b, c])) = (handshake.is_empty(), buf.get(at + 5..at + 9)) {
                if u32::from_be_bytes([0, a, b, c]) as usize + 4 > MAX_CLIENT_HELLO {
                    return Peek::TooLarge;
                }
            }
            return need(at + 5 + len);
        };
        handshake.extend_from_slice(fragment);
        at += 5 + len;
        // Handshake header: type(1)=1 ClientHello, length(3).
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Peek::NotTls("the first handshake message is not a ClientHello");
            }
            let body = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
            if body + 4 > MAX_CLIENT_HELLO {
                return Peek::TooLarge;
            }
            if handshake.len() >= body + 4 {
                return client_hello(&handshake[4..4 + body]);
            }
        }
    }
}

fn need(total: usize) -> Peek {
    if total > MAX_CLIENT_HELLO {
        Peek::TooLarge
    } else {
        Peek::NeedMore(total)
    }
}

/// A cursor that never panics: every read is checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn client_hello(body: &[u8]) -> Peek {
    parse_client_hello(body).unwrap_or(Peek::NotTls("malformed ClientHello"))
}

fn parse_client_hello(body: &[u8]) -> Option<Peek> {
    let mut r = Reader { buf: body };
    r.take(2)?; // client_version
    r.take(32)?; // random
    r.vec8()?; // session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // compression_methods
    if r.buf.is_empty() {
        return Some(Peek::ServerName(None)); // no extensions at all
    }
    let mut extensions = Reader { buf: r.vec16()? };
    while !extensions.buf.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != 0 {
            continue;
        }
        // server_name: list(2) of { type(1) = 0 host_name, name(2) }.
        let mut list = Reader {
            buf: Reader { buf: data }.vec16()?,
        };
        while !list.buf.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                // A DNS host name (RFC 6066): letters, digits, '-', '.'
                // (and '_', seen in the wild). Anything else, spaces and
                // control characters included, is a malformed hello; the
                // name never reaches a log.
                let name = std::str::from_utf8(name).ok()?;
                let host = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
                if name.is_empty() || !name.bytes().all(host) {
                    return None;
                }
                return Some(Peek::ServerName(Some(
                    name.trim_end_matches('.').to_ascii_lowercase(),
                )));
            }
        }
        return Some(Peek::ServerName(None));
    }
    Some(Peek::ServerName(None))
}

/// Real ClientHello bytes for tests (shared with the integration tests).
#[cfg(test)]
#[path = "../tests/common/client_hello.rs"]
pub(crate) mod client_hello;

#[cfg(test)]
mod tests {
    use super::client_hello::{client_hello_bytes, client_hello_padded};
    use super::*;

    #[test]
    fn reads_the_server_name() {
        let hello = client_hello_bytes(Some("DB.Example.com"), 16384);
        assert_eq!(
            peek(&hello),
            Peek::ServerName(Some("db.example.com".into()))
        );
        assert_eq!(
            peek(&client_hello_bytes(None, 16384)),
            Peek::ServerName(None)
        );
    }

    #[test]
    fn a_hello_in_pieces_asks_for_more_until_complete() {
        for record in [16384, 40, 7] {
            let hello = client_hello_bytes(Some("kafka.example.com"), record);
            for cut in 0..hello.len() {
                match peek(&hello[..cut]) {
                    Peek::NeedMore(n) => {
                        assert!(n > cut && n <= hello.len(), "cut {cut}: need {n}")
                    }
                    other => panic!("record {record}, cut {cut}: {other:?}"),
                }
            }
            assert_eq!(
                peek(&hello),
                Peek::ServerName(Some("kafka.example.com".into()))
            );
        }
    }

    #[test]
    fn a_hello_above_16_kib_is_too_large_whatever_its_records() {
        for record in [16384, 4000] {
            let hello = client_hello_padded(Some("db.example.com"), record, 17_000);
            assert_eq!(peek(&hello), Peek::TooLarge, "record {record}");
            // Known from the handshake header, before the rest arrives.
            assert_eq!(peek(&hello[..9]), Peek::TooLarge, "record {record}");
        }
        // Just under the limit is read.
        let hello = client_hello_padded(Some("db.example.com"), 16384, 16_000);
        assert_eq!(
            peek(&hello),
            Peek::ServerName(Some("db.example.com".into()))
        );
    }

    #[test]
    fn a_server_name_that_is_not_a_host_name_is_malformed() {
        struct Case {
            name: &'static str,
            ok: bool,
        }
        for case in [
            Case {
                name: "a b.example.com",
                ok: false,
            },
            Case {
                name: "a\tb.example.com",
                ok: false,
            },
            Case {
                name: "a\nb",
                ok: false,
            },
            Case {
                name: "\"quoted\"",
                ok: false,
            },
            Case {
                name: "caf\u{e9}.example",
                ok: false,
            },
            Case {
                name: "xn--caf-dma.example",
                ok: true,
            },
            Case {
                name: "_srv.my-host.example.",
                ok: true,
            },
        ] {
            let got = peek(&client_hello_bytes(Some(case.name), 16384));
            if case.ok {
                assert!(
                    matches!(got, Peek::ServerName(Some(_))),
                    "{:?}: {got:?}",
                    case.name
                );
            } else {
                assert_eq!(
                    got,
                    Peek::NotTls("malformed ClientHello"),
                    "{:?}",
                    case.name
                );
            }
        }
    }

    #[test]
    fn other_protocols_are_not_tls() {
        assert!(matches!(peek(b"GET / HTTP/1.1\r\n\r\n"), Peek::NotTls(_)));
        assert!(matches!(
            peek(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"),
            Peek::NotTls(_)
        ));
        assert_eq!(peek(b""), Peek::NeedMore(5));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let hello = client_hello_bytes(Some("a.example.com"), 16384);
        // Every single-byte corruption of a real hello, and every prefix.
        for i in 0..hello.len() {
            for b in [0u8, 1, 0x7f, 0xff] {
                let mut bad = hello.clone();
                bad[i] = b;
                let _ = peek(&bad);
            }
        }
        let mut x: u32 = 12345;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = peek(&bytes);
            let mut framed = vec![22, 3, 1, (len >> 8) as u8, len as u8, 1];
            framed.extend_from_slice(&bytes);
            let _ = peek(&framed);
        }
    }
}
