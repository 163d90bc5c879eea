//! `user_data` <-> [`Event`]: the one place a completion's 64 bits are
//! decoded. A connection token packs the slab index, the slot generation (so a
//! late completion for a reused slot is recognised) and the operation.
#![forbid(unsafe_code)]

/// A direction of a connection: which socket is read and which is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Downstream (client) → upstream (backend).
    ToUpstream,
    /// Upstream → downstream.
    ToDownstream,
}

impl Dir {
    pub const BOTH: [Dir; 2] = [Dir::ToUpstream, Dir::ToDownstream];

    pub fn index(self) -> usize {
        match self {
            Dir::ToUpstream => 0,
            Dir::ToDownstream => 1,
        }
    }

    /// The direction that reads from `side`.
    pub fn reading(side: Side) -> Dir {
        match side {
            Side::Downstream => Dir::ToUpstream,
            Side::Upstream => Dir::ToDownstream,
        }
    }

    /// The socket this direction reads from.
    pub fn source(self) -> Side {
        match self {
            Dir::ToUpstream => Side::Downstream,
            Dir::ToDownstream => Side::Upstream,
        }
    }

    /// The socket this direction writes to.
    pub fn sink(self) -> Side {
        match self {
            Dir::ToUpstream => Side::Upstream,
            Dir::ToDownstream => Side::Downstream,
        }
    }
}

/// One of the two sockets of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Downstream => Side::Upstream,
            Side::Upstream => Side::Downstream,
        }
    }
}

/// The operation a connection token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Connect,
    /// The LINK_TIMEOUT linked to [`Op::Connect`].
    ConnectTimeout,
    /// Multishot recv from the direction's source into the buffer ring.
    Recv(Dir),
    /// Send to the direction's sink.
    Send(Dir),
    /// Readiness of the direction's source (splice path).
    Readable(Dir),
    /// Readiness of the direction's sink (splice path).
    Writable(Dir),
    /// SHUTDOWN(SHUT_WR) of the direction's sink.
    Shutdown(Dir),
    /// ASYNC_CANCEL of every op on one socket.
    Cancel(Side),
    /// ASYNC_CANCEL of the direction's multishot recv.
    CancelRecv(Dir),
}

impl Op {
    fn code(self) -> u8 {
        let dir = |d: Dir| d.index() as u8;
        match self {
            Op::Connect => 1,
            Op::ConnectTimeout => 2,
            Op::Recv(d) => 3 + dir(d),
            Op::Send(d) => 5 + dir(d),
            Op::Readable(d) => 7 + dir(d),
            Op::Writable(d) => 9 + dir(d),
            Op::Shutdown(d) => 11 + dir(d),
            Op::Cancel(Side::Downstream) => 13,
            Op::Cancel(Side::Upstream) => 14,
            Op::CancelRecv(d) => 15 + dir(d),
        }
    }

    fn from_code(code: u8) -> Option<Op> {
        let dir = |base: u8| {
            if code == base {
                Dir::ToUpstream
            } else {
                Dir::ToDownstream
            }
        };
        Some(match code {
            1 => Op::Connect,
            2 => Op::ConnectTimeout,
            3 | 4 => Op::Recv(dir(3)),
            5 | 6 => Op::Send(dir(5)),
            7 | 8 => Op::Readable(dir(7)),
            9 | 10 => Op::Writable(dir(9)),
            11 | 12 => Op::Shutdown(dir(11)),
            13 => Op::Cancel(Side::Downstream),
            14 => Op::Cancel(Side::Upstream),
            15 | 16 => Op::CancelRecv(dir(15)),
            _ => return None,
        })
    }
}

/// A connection operation: slab index, slot generation, operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub conn: u32,
    /// Only the low [`GENERATION_BITS`] bits are kept.
    pub generation: u32,
    pub op: Op,
}

pub const GENERATION_BITS: u32 = 24;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;
/// Slab index reserved for the worker's own operations.
const RESERVED_CONN: u32 = u32::MAX;
/// Slab index reserved for sockets that outlive a connection (the upstream
/// keep-alive pool): their operations carry the pool entry where a
/// connection's carry its generation.
const POOL_CONN: u32 = u32::MAX - 1;
/// The first slab index a connection may not have.
pub const MAX_CONNS: u32 = POOL_CONN;
const ACCEPT_CODE: u8 = 0xA0;
const WAKE_CODE: u8 = 0xA1;
const STOP_ACCEPT_CODE: u8 = 0xA2;

/// The wake eventfd read (stop requests from the supervisor).
pub const WAKE: u64 = encode(RESERVED_CONN, 0, WAKE_CODE);

/// The ASYNC_CANCEL of the accepts when the worker stops.
pub const STOP_ACCEPT: u64 = encode(RESERVED_CONN, 0, STOP_ACCEPT_CODE);

/// The multishot accept of the worker's `listener`-th listening socket.
pub fn accept(listener: u32) -> u64 {
    encode(RESERVED_CONN, listener, ACCEPT_CODE)
}

/// Operation `op` of pool entry `entry` (only the low [`GENERATION_BITS`]
/// bits of `entry` are kept).
pub fn pool(entry: u32, op: Op) -> u64 {
    encode(POOL_CONN, entry, op.code())
}

const fn encode(conn: u32, generation: u32, code: u8) -> u64 {
    ((conn as u64) << 32) | (((generation & GENERATION_MASK) as u64) << 8) | code as u64
}

impl Token {
    pub fn new(conn: u32, generation: u32, op: Op) -> Token {
        Token {
            conn,
            generation: generation & GENERATION_MASK,
            op,
        }
    }

    pub fn user_data(self) -> u64 {
        encode(self.conn, self.generation, self.op.code())
    }
}

/// What a completion is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Wake,
    StopAccept,
    Accept {
        listener: u32,
    },
    Conn(Token),
    /// An operation of a pooled upstream socket (entry, operation).
    Pool {
        entry: u32,
        op: Op,
    },
    /// Not a token this worker issues; logged and ignored.
    Unknown(u64),
}

pub fn decode(user_data: u64) -> Event {
    let conn = (user_data >> 32) as u32;
    let generation = ((user_data >> 8) as u32) & GENERATION_MASK;
    let code = user_data as u8;
    if conn == RESERVED_CONN {
        return match code {
            WAKE_CODE => Event::Wake,
            STOP_ACCEPT_CODE => Event::StopAccept,
            ACCEPT_CODE => Event::Accept {
                listener: generation,
            },
            _ => Event::Unknown(user_data),
        };
    }
    match Op::from_code(code) {
        Some(op) if conn == POOL_CONN => Event::Pool {
            entry: generation,
            op,
        },
        Some(op) => Event::Conn(Token {
            conn,
            generation,
            op,
        }),
        None => Event::Unknown(user_data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips() {
        let ops = [
            Op::Connect,
            Op::ConnectTimeout,
            Op::Recv(Dir::ToUpstream),
            Op::Recv(Dir::ToDownstream),
            Op::Send(Dir::ToUpstream),
            Op::Send(Dir::ToDownstream),
            Op::Readable(Dir::ToUpstream),
            Op::Readable(Dir::ToDownstream),
            Op::Writable(Dir::ToUpstream),
            Op::Writable(Dir::ToDownstream),
            Op::Shutdown(Dir::ToUpstream),
            Op::Shutdown(Dir::ToDownstream),
            Op::Cancel(Side::Downstream),
            Op::Cancel(Side::Upstream),
            Op::CancelRecv(Dir::ToUpstream),
            Op::CancelRecv(Dir::ToDownstream),
        ];
        for op in ops {
            let t = Token::new(7, 0x1234_5678, op);
            assert_eq!(decode(t.user_data()), Event::Conn(t), "{op:?}");
            assert_eq!(t.generation, 0x34_5678);
        }
    }

    #[test]
    fn reserved_tokens_are_not_connections() {
        assert_eq!(decode(WAKE), Event::Wake);
        assert_eq!(decode(STOP_ACCEPT), Event::StopAccept);
        assert_eq!(decode(accept(3)), Event::Accept { listener: 3 });
        assert!(matches!(decode(0), Event::Unknown(0)));
    }

    #[test]
    fn pool_tokens_are_neither_connections_nor_the_workers_own() {
        let t = pool(0x12_3456, Op::Recv(Dir::ToDownstream));
        assert_eq!(
            decode(t),
            Event::Pool {
                entry: 0x12_3456,
                op: Op::Recv(Dir::ToDownstream)
            }
        );
        // The highest slab index a connection may have is below the pool's.
        let last = Token::new(MAX_CONNS - 1, 1, Op::Connect);
        assert_eq!(decode(last.user_data()), Event::Conn(last));
    }
}
