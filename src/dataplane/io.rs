//! The data plane's protocol-neutral vocabulary, shared by every session
//! (TCP, TLS passthrough, and the protocols to come) and the executor that
//! performs it: what a session asks for ([`Io`]), what comes back
//! ([`Completion`], [`Pump`], [`Reservation`]), and how a connection ends
//! ([`Close`]). Pure data: no syscall, no clock, no ring.
#![forbid(unsafe_code)]

use std::time::Duration;

use crate::routing::table::{ClusterId, RouteId};

use super::token::{Dir, Op, Side};

/// One thing a session asks the worker to do. Ring operations complete
/// later as a [`Completion`] with the matching [`Op`]; the others are done
/// at once and, where they have a result, report it through the session
/// method each names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Choose the route's cluster and count the connection against its
    /// limits; answered with `on_reserved`.
    Reserve(RouteId),
    /// Close the previous upstream socket if any, pick an endpoint of the
    /// reserved cluster, open a socket and submit CONNECT linked to its
    /// timeout. When that is impossible the worker calls
    /// `on_connect_unavailable`.
    Connect,
    /// The upstream accepted: count it for the endpoint (and send the
    /// cluster's PROXY header).
    Connected,
    /// Multishot recv from the direction's source into the buffer ring,
    /// ended by the kernel after `buffers` buffers' worth of bytes
    /// (backpressure; one buffer per op where the kernel cannot limit).
    Recv { dir: Dir, buffers: u32 },
    /// One single-shot recv from the direction's source into one provided
    /// buffer (nothing more is received until asked again).
    RecvOnce(Dir),
    /// Cancel the direction's recv.
    CancelRecv(Dir),
    /// Send `len` bytes of provided buffer `bid` from `offset` to the
    /// direction's sink.
    Send {
        dir: Dir,
        bid: u16,
        offset: u32,
        len: u32,
    },
    /// Send the session's outbox for the direction (bytes it owns: a
    /// ClientHello read before routing) with a non-blocking send(2) now, and
    /// report it as an `Op::Send(dir)` completion: nothing stays in flight,
    /// no op ever reads the session's memory.
    SendOwned(Dir),
    /// Return a provided buffer to the ring.
    GiveBack(u16),
    /// The ring ran out of buffers: call `on_buffers` when some came back.
    WaitBuffers(Dir),
    /// Make both sockets non-blocking (the splice path needs it).
    EnterSplice(Dir),
    /// POLL_ADD POLLIN on the direction's source.
    PollIn(Dir),
    /// POLL_ADD POLLOUT on the direction's sink.
    PollOut(Dir),
    /// The direction's sink pushed back (a full socket) for the first time:
    /// the worker may cap what the source socket holds in the kernel
    /// meanwhile (`forward::STALLED_UPSTREAM_RCVBUF`).
    SinkStalled(Dir),
    /// Run `forward::pump` now, reading at most `max` bytes from the
    /// source, and report with `on_pump`.
    Pump {
        dir: Dir,
        in_pipe: u32,
        read: bool,
        max: u64,
    },
    /// SHUTDOWN(SHUT_WR) on the direction's sink, reported at once as an
    /// `Op::Shutdown(dir)` completion.
    Shutdown(Dir),
    /// The direction's source reset and everything read from it was
    /// written: call `on_sent` once the sink's socket has sent it all
    /// (SIOCOUTQ 0); asked again on every tick until then.
    CheckSent(Dir),
    /// Make the close of this socket send a RST (SO_LINGER 0).
    Abort(Side),
    /// The connection is over: cancel what is in flight, then close both
    /// sockets and free the slot once nothing is.
    Finish(Close),
    /// HTTP: route the request the session holds under the plan current
    /// now (each request follows the table of its own time); answered with
    /// `on_route`.
    Route,
    /// HTTP: an upstream connection to the session's target (its route's
    /// cluster picked by weight the first time), from the worker's
    /// keep-alive pool or a new CONNECT (`fresh`: never the pool);
    /// answered with `on_checkout`.
    Checkout { fresh: bool },
    /// HTTP: the request is done with its upstream connection.
    Release(Release),
    /// Hand `len` bytes of provided buffer `bid` from `offset` (bytes a
    /// limited half received past its message) back to the session with
    /// `on_leftover`; the session gives the buffer back.
    Leftover {
        dir: Dir,
        bid: u16,
        offset: u32,
        len: u32,
    },
    /// HTTP: a request ended; count and log it (`take_report`).
    Report,
    /// HTTP: a request head was refused with `status` (counted by reason).
    Reject { status: u16, detail: &'static str },
}

/// What becomes of an HTTP request's upstream connection ([`Io::Release`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Reusable: back to the worker's keep-alive pool, for at most the
    /// server's `Keep-Alive: timeout` when it sent one.
    Pool { server_timeout: Option<Duration> },
    /// Not reusable (either side asked to close, a framing the next
    /// response could not follow, an early response): closed.
    Close,
    /// The connect failed: closed and counted against the endpoint.
    ConnectFailed,
}

/// A cluster-wide HTTP cap a request holds a place under while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// Requests in flight (`http2MaxRequests`).
    Requests,
    /// Requests being retried (`maxRetries`).
    Retries,
}

impl Cap {
    pub fn index(self) -> usize {
        match self {
            Cap::Requests => 0,
            Cap::Retries => 1,
        }
    }
}

/// The answer to [`Io::Checkout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkout {
    pub cluster: ClusterId,
    /// An idle keep-alive connection, checked and ready (send at once);
    /// else a CONNECT is in flight and an `Op::Connect` completion follows.
    pub reused: bool,
}

/// The completion of one operation, as the worker decoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion<'a> {
    pub op: Op,
    pub res: i32,
    /// The provided buffer a recv filled; the session gives it back.
    pub bid: Option<u16>,
    /// The bytes of that buffer (empty without one): a borrowed view, valid
    /// until the call returns, for sessions that read what arrives.
    pub data: &'a [u8],
    /// Whether a multishot op stays armed.
    pub more: bool,
}

impl Completion<'_> {
    /// A completion that carries no buffer.
    pub fn done(op: Op, res: i32) -> Completion<'static> {
        Completion {
            op,
            res,
            bid: None,
            data: &[],
            more: false,
        }
    }
}

/// The source after a pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// It may have more bytes right now (the pump yielded, reached its byte
    /// cap, or was told not to read).
    Open,
    /// No bytes now (EAGAIN).
    WouldBlock,
    /// FIN.
    Eof,
    /// Reset or another error.
    Failed,
}

/// The sink after a pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkState {
    /// Took everything the pipe held.
    Ok,
    /// Full (EAGAIN) while the pipe still holds bytes.
    WouldBlock,
    /// Reset, broken pipe or another error.
    Failed,
}

/// What one pump did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pump {
    pub read: u64,
    pub written: u64,
    /// Bytes left in the pipe.
    pub in_pipe: u32,
    pub source: SourceState,
    pub sink: SinkState,
}

/// Per-connection limits, from the route, the cluster and the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub idle_timeout: Option<Duration>,
    pub max_duration: Option<Duration>,
    pub connect_attempts: u32,
    /// Bytes after which a direction moves to the splice path.
    pub splice_after: u64,
}

/// A route reserved for a connection ([`Io::Reserve`]): the cluster it
/// counts against and the limits the connection runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub cluster: ClusterId,
    pub limits: Limits,
}

/// Why a connection ended (the access log's termination flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions finished (`-`).
    Done,
    /// No endpoint accepted the connection (`UF`).
    ConnectFailed,
    /// The cluster or the process is at its connection limit (`UO`).
    Overflow,
    /// The cluster has no usable endpoint (`UH`).
    NoHealthyUpstream,
    /// No route for this listener (`NR`).
    NoRoute,
    /// No bytes either way for the route's idle timeout (`IT`).
    IdleTimeout,
    /// The route's maximum connection duration passed (`MD`).
    MaxDuration,
    /// The process is stopping (`DR`).
    Drained,
    /// The downstream reset (`DC`).
    DownstreamReset,
    /// The upstream reset (`UC`).
    UpstreamReset,
    /// ringway itself ran out of a resource for the connection: no
    /// descriptor (EMFILE/ENFILE) or socket memory for its upstream socket
    /// (`OM`, Envoy's flag for the proxy protecting itself; HAProxy logs
    /// `R`, "a resource on the proxy has been exhausted").
    LocalResource,
}

impl CloseReason {
    /// The access log's termination flag.
    pub fn flag(self) -> &'static str {
        match self {
            CloseReason::Done => "-",
            CloseReason::ConnectFailed => "UF",
            CloseReason::Overflow => "UO",
            CloseReason::NoHealthyUpstream => "UH",
            CloseReason::NoRoute => "NR",
            CloseReason::IdleTimeout => "IT",
            CloseReason::MaxDuration => "MD",
            CloseReason::Drained => "DR",
            CloseReason::DownstreamReset => "DC",
            CloseReason::UpstreamReset => "UC",
            CloseReason::LocalResource => "OM",
        }
    }

    /// The close reason of a reset by `side`.
    pub fn reset_by(side: Side) -> CloseReason {
        match side {
            Side::Downstream => CloseReason::DownstreamReset,
            Side::Upstream => CloseReason::UpstreamReset,
        }
    }
}

/// How a connection ended, with the bytes written each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub reason: CloseReason,
    /// Bytes written to the upstream and to the downstream.
    pub to_upstream: u64,
    pub to_downstream: u64,
}

impl Close {
    /// A connection that ended before any byte moved.
    pub fn empty(reason: CloseReason) -> Close {
        Close {
            reason,
            to_upstream: 0,
            to_downstream: 0,
        }
    }
}
