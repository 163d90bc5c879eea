//! Listening sockets: one per worker per listener, bound with SO_REUSEPORT so
//! the kernel spreads connections across workers. Knows nothing of routes.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Accept queue length asked for (the kernel caps it at `net.core.somaxconn`).
pub const BACKLOG: i32 = 4096;

/// Whether `address` can be bound the way [`bind`] binds it: bound and
/// closed again without listening, so no connection ever lands on it.
pub fn probe(address: SocketAddr) -> io::Result<()> {
    bound(address).map(drop)
}

/// A blocking listening socket on `address` that shares the port with the
/// other workers' sockets.
pub fn bind(address: SocketAddr) -> io::Result<Socket> {
    let socket = bound(address)?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// A TCP socket bound to `address` with SO_REUSEADDR and SO_REUSEPORT
/// (IPv6 only for IPv6 addresses), not yet listening.
fn bound(address: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&address.into())?;
    Ok(socket)
}
