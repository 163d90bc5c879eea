//! Real TLS ClientHello bytes, built by hand (no TLS dependency): used by
//! `src/sni.rs`'s unit tests and by the integration tests.

/// A ClientHello as a TLS client writes it, with optional SNI, split
/// into records of at most `record` bytes of handshake.
pub fn client_hello_bytes(sni: Option<&str>, record: usize) -> Vec<u8> {
    client_hello_padded(sni, record, 0)
}

/// The same with a padding extension (RFC 7685) of `padding` bytes, as
/// clients send to grow a hello (large post-quantum key shares do it too).
pub fn client_hello_padded(sni: Option<&str>, record: usize, padding: u16) -> Vec<u8> {
    let mut ext = Vec::new();
    // An unrelated extension first (supported_versions), as real clients send.
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    if padding > 0 {
        ext.extend_from_slice(&[0x00, 0x15]);
        ext.extend_from_slice(&padding.to_be_bytes());
        ext.resize(ext.len() + usize::from(padding), 0);
    }
    if let Some(name) = sni {
        let n = name.len() as u16;
        ext.extend_from_slice(&[0x00, 0x00]);
        ext.extend_from_slice(&(n + 5).to_be_bytes());
        ext.extend_from_slice(&(n + 3).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&n.to_be_bytes());
        ext.extend_from_slice(name.as_bytes());
    }
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut out = Vec::new();
    for chunk in hs.chunks(record) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}
