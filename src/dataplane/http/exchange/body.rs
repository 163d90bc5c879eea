//! A message's body as its half forwards it, and where it takes the
//! splice path: a body of known length with at least the threshold left
//! splices from its first byte; a chunked body is read by the decoder as
//! it arrives, and a chunk with at least the threshold of data left is
//! spliced for exactly that data, then the body goes back to copying at
//! the data's CRLF (HAProxy's way: bytes the decoder saw and bytes in a
//! pipe never mix).
#![forbid(unsafe_code)]

use crate::dataplane::half::{Flow, Half, Outcome};
use crate::dataplane::io::{Completion, Io, Pump};
use crate::dataplane::token::Dir;
use crate::http1::chunked::ChunkedDecoder;

/// Where a message's body ends, as its half forwards it.
#[derive(Debug)]
pub(crate) struct Body {
    pub half: Half,
    /// A chunked body: the decoder over the bytes not yet handed to the
    /// half (`None` once its end is found, or for other framings).
    pub chunks: Option<ChunkedDecoder>,
    /// Bytes of the half's outbox that were ringway's head, not body.
    pub head_len: u64,
    /// Bytes left in the body or in a chunk from which they splice
    /// ([`crate::dataplane::Settings::http_splice_threshold`]).
    pub threshold: u64,
}

impl Body {
    /// Start forwarding a body in direction `dir`: `outbox` (ringway's head
    /// of `head_len` bytes, then what of the body came with it), then the
    /// rest: `limit` more bytes (`None`: to the end of the stream), or, for
    /// a chunked body, what `chunks` finds. A body or chunk with at least
    /// `threshold` bytes left splices from its first byte after the
    /// outbox; a close-delimited one once `threshold` bytes moved.
    pub fn start(
        dir: Dir,
        (outbox, head_len): (Vec<u8>, u64),
        limit: Option<u64>,
        chunks: Option<ChunkedDecoder>,
        threshold: u64,
        out: &mut Vec<Io>,
    ) -> Body {
        let large = |n: u64| n > 0 && n >= threshold;
        let (splice_after, limit) = match &chunks {
            Some(d) if large(d.chunk_remaining()) => (0, Some(d.chunk_remaining())),
            Some(_) => (u64::MAX, None),
            None => match limit {
                Some(n) if large(n) => (0, Some(n)),
                Some(n) => (u64::MAX, Some(n)),
                None => (threshold, None),
            },
        };
        Body {
            half: Half::start_limited(dir, splice_after, outbox, limit, out),
            chunks,
            head_len,
            threshold,
        }
    }

    /// Body bytes written so far.
    pub fn body_moved(&self) -> u64 {
        self.half.moved().saturating_sub(self.head_len)
    }

    /// A recv completion for this body: a chunked body's decoder looks at
    /// the bytes first and, where the body ends inside them, limits the
    /// half to that point. An error means the body is malformed.
    ///
    /// A buffer that leaves the decoder inside a chunk with at least the
    /// threshold left limits the half to the end of that chunk's data and
    /// asks it to splice the rest; one that crosses the chunk's end (a
    /// multishot recv delivered it before its cancel) takes that back.
    pub(super) fn on_recv(
        &mut self,
        c: &Completion<'_>,
        out: &mut Vec<Io>,
    ) -> Result<Outcome, &'static str> {
        if let (Some(decoder), Some(bid)) = (&mut self.chunks, c.bid) {
            let used = match decoder.feed(c.data, &mut |_| {}) {
                Ok(used) => used as u64,
                Err(e) => {
                    // Nothing of this buffer goes anywhere.
                    out.push(Io::GiveBack(bid));
                    return Err(e.detail());
                }
            };
            if !self.half.is_splicing() {
                let left = decoder.chunk_remaining();
                let splice = !decoder.is_done() && left > 0 && left >= self.threshold;
                let limit = if decoder.is_done() {
                    Some(used)
                } else {
                    splice.then_some(used + left)
                };
                self.half.limit_next(limit);
                self.half.splice_next(splice);
            }
            if decoder.is_done() {
                self.chunks = None;
            }
        }
        let outcome = self.half.on_recv(c.res, c.bid, c.more, out);
        self.after_half(out);
        Ok(outcome)
    }

    /// A chunked body whose half stopped at the end of a chunk's data
    /// (spliced, or copied under the limit after a pipe was refused): the
    /// decoder skips the data it did not see and expects the data's CRLF,
    /// and the half goes back to the copy path, unlimited, for it.
    fn after_half(&mut self, out: &mut Vec<Io>) {
        if let Some(decoder) = &mut self.chunks {
            if self.half.flow() == Flow::Complete {
                decoder.skip_data(decoder.chunk_remaining());
                self.half.resume_copy(None, out);
            }
        }
    }

    pub(super) fn on_send(&mut self, res: i32, out: &mut Vec<Io>) -> Outcome {
        let outcome = self.half.on_send(res, out);
        self.after_half(out);
        outcome
    }

    pub(super) fn on_ready(&mut self, res: i32, out: &mut Vec<Io>) -> Outcome {
        let outcome = self.half.on_ready(res, out);
        self.after_half(out);
        outcome
    }

    pub(super) fn on_pump(&mut self, pump: Pump, out: &mut Vec<Io>) -> Outcome {
        let outcome = self.half.on_pump(pump, out);
        self.after_half(out);
        outcome
    }

    pub(super) fn on_no_pipe(&mut self, out: &mut Vec<Io>) {
        self.half.on_no_pipe(out);
        self.after_half(out);
    }

    pub(super) fn on_buffers(&mut self, out: &mut Vec<Io>) {
        self.half.on_buffers(out);
        self.after_half(out);
    }

    /// The message went through entirely, nothing of it in flight (never
    /// between two chunks of a chunked body).
    pub fn is_complete(&self) -> bool {
        self.chunks.is_none() && self.half.flow() == Flow::Complete
    }

    /// Every byte of the message was written (a receive's cancel may still
    /// be on its way back).
    pub fn is_through(&self) -> bool {
        self.chunks.is_none() && self.half.is_through()
    }
}
