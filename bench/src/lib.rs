//! ringway's benchmark harness: a load generator (`loadgen`), echo and sink
//! backends, and the /proc accounting used to charge CPU and memory to the
//! proxy under test. Everything talks to 127.0.0.1 only and every run is
//! bounded in time.

pub mod args;
pub mod backend;
pub mod modes;
pub mod procfs;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Parse `addr` and refuse anything but 127.0.0.1: the harness never sends
/// load off this machine.
pub fn loopback(addr: &str) -> Result<SocketAddr, String> {
    let sa: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP:port address"))?;
    if sa.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST) {
        return Err(format!(
            "{addr}: refusing a target or listen address other than 127.0.0.1"
        ));
    }
    Ok(sa)
}

#[cfg(test)]
mod tests {
    use super::loopback;

    #[test]
    fn only_127_0_0_1() {
        assert!(loopback("127.0.0.1:80").is_ok());
        assert!(loopback("127.0.0.2:80").is_err());
        assert!(loopback("10.0.0.1:80").is_err());
        assert!(loopback("[::1]:80").is_err());
        assert!(loopback("0.0.0.0:80").is_err());
        assert!(loopback("localhost:80").is_err());
    }
}
