//! The PROXY protocol header ringway sends to an upstream first when the
//! cluster's DestinationRule asks for it (`proxyProtocol.version`): v1 (text)
//! or v2 (binary), carrying the client's address and the address it
//! connected to. Pure: addresses in, bytes out.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use crate::routing::table::ProxyProtocol;

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const V2_PROXY: u8 = 0x21;
/// Version 2, command LOCAL (no addresses).
const V2_LOCAL: u8 = 0x20;
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;

/// The header for a connection from `client` to `local`.
pub fn header(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = (canonical(client), canonical(local));
    match version {
        ProxyProtocol::V1 => match (client, local) {
            (SocketAddr::V4(c), SocketAddr::V4(l)) => format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                c.ip(),
                l.ip(),
                c.port(),
                l.port()
            )
            .into_bytes(),
            (SocketAddr::V6(c), SocketAddr::V6(l)) => format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                c.ip(),
                l.ip(),
                c.port(),
                l.port()
            )
            .into_bytes(),
            _ => b"PROXY UNKNOWN\r\n".to_vec(),
        },
        ProxyProtocol::V2 => {
            let mut h = V2_SIGNATURE.to_vec();
            match (client, local) {
                (SocketAddr::V4(c), SocketAddr::V4(l)) => {
                    h.extend_from_slice(&[V2_PROXY, V2_TCP4, 0, 12]);
                    h.extend_from_slice(&c.ip().octets());
                    h.extend_from_slice(&l.ip().octets());
                    h.extend_from_slice(&c.port().to_be_bytes());
                    h.extend_from_slice(&l.port().to_be_bytes());
                }
                (SocketAddr::V6(c), SocketAddr::V6(l)) => {
                    h.extend_from_slice(&[V2_PROXY, V2_TCP6, 0, 36]);
                    h.extend_from_slice(&c.ip().octets());
                    h.extend_from_slice(&l.ip().octets());
                    h.extend_from_slice(&c.port().to_be_bytes());
                    h.extend_from_slice(&l.port().to_be_bytes());
                }
                _ => h.extend_from_slice(&[V2_LOCAL, 0, 0, 0]),
            }
            h
        }
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener) as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_one_text_line() {
        struct Case {
            client: &'static str,
            local: &'static str,
            want: &'static str,
        }
        let cases = [
            Case {
                client: "192.0.2.1:51000",
                local: "198.51.100.7:31400",
                want: "PROXY TCP4 192.0.2.1 198.51.100.7 51000 31400\r\n",
            },
            Case {
                client: "[2001:db8::1]:51000",
                local: "[2001:db8::2]:443",
                want: "PROXY TCP6 2001:db8::1 2001:db8::2 51000 443\r\n",
            },
            Case {
                client: "[::ffff:192.0.2.1]:51000",
                local: "198.51.100.7:31400",
                want: "PROXY TCP4 192.0.2.1 198.51.100.7 51000 31400\r\n",
            },
            Case {
                client: "[2001:db8::1]:51000",
                local: "198.51.100.7:31400",
                want: "PROXY UNKNOWN\r\n",
            },
        ];
        for case in cases {
            let h = header(
                ProxyProtocol::V1,
                case.client.parse().unwrap(),
                case.local.parse().unwrap(),
            );
            assert_eq!(String::from_utf8(h).unwrap(), case.want);
        }
    }

    #[test]
    fn v2_is_the_binary_header() {
        let h = header(
            ProxyProtocol::V2,
            "192.0.2.1:51000".parse().unwrap(),
            "198.51.100.7:31400".parse().unwrap(),
        );
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 7]);
        want.extend_from_slice(&51000u16.to_be_bytes());
        want.extend_from_slice(&31400u16.to_be_bytes());
        assert_eq!(h, want);
        let h6 = header(
            ProxyProtocol::V2,
            "[2001:db8::1]:1".parse().unwrap(),
            "[2001:db8::2]:2".parse().unwrap(),
        );
        assert_eq!(h6.len(), 16 + 36);
        assert_eq!(&h6[12..16], &[0x21, 0x21, 0, 36]);
    }
}
