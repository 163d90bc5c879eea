//! A strict, incremental decoder of the chunked transfer coding (RFC 9112
//! §7.1). ringway's own: httparse's `parse_chunk_size` accepts an empty
//! size line, a size without digits and bare LF in extensions.
//!
//! Rules: 1–16 hex digits; optional extensions `;name[=token|"quoted"]`
//! with the grammar's BWS; CRLF only; a size line of at most 4 KiB; data
//! followed by exactly CRLF; trailer fields (`name: value` lines) of at
//! most 60 KiB in all. The decoder stops exactly after the last chunk's
//! trailers, so the next pipelined message is never consumed.

use thiserror::Error;

use super::fields::is_tchar;

/// The longest chunk-size line, CRLF included.
pub const MAX_SIZE_LINE: usize = 4 * 1024;
/// The most trailer bytes, final CRLF included.
pub const MAX_TRAILERS: usize = 60 * 1024;
/// The most hex digits of a chunk size (a u64).
const MAX_SIZE_DIGITS: u8 = 16;

/// Why a chunked body is malformed. The message cannot be framed, so the
/// connection closes (400 to a client, 502 for an upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ChunkError {
    #[error("chunk size line without a hex digit")]
    EmptySize,
    #[error("chunk size with more than 16 hex digits")]
    SizeTooLong,
    #[error("chunk size line with a character other than hex digits, `;` extensions and CRLF")]
    InvalidSizeLine,
    #[error("chunk extension is not `;name[=token|\"quoted\"]`")]
    InvalidExtension,
    #[error("chunk size line longer than 4 KiB")]
    SizeLineTooLong,
    #[error("line ended by LF without CR, or CR without LF")]
    BareLineEnd,
    #[error("chunk data not followed by exactly CRLF")]
    MissingDataCrlf,
    #[error("trailer field is not `name: value`")]
    InvalidTrailer,
    #[error("trailers longer than 60 KiB")]
    TrailersTooLarge,
}

impl ChunkError {
    /// An Envoy-like detail for access logs and reject metrics.
    pub fn detail(self) -> &'static str {
        match self {
            ChunkError::EmptySize | ChunkError::SizeTooLong | ChunkError::InvalidSizeLine => {
                "http1.invalid_chunk_size"
            }
            ChunkError::InvalidExtension => "http1.invalid_chunk_extension",
            ChunkError::SizeLineTooLong => "http1.chunk_size_line_too_long",
            ChunkError::BareLineEnd => "http1.bare_line_feed",
            ChunkError::MissingDataCrlf => "http1.chunk_data_without_crlf",
            ChunkError::InvalidTrailer => "http1.invalid_trailer",
            ChunkError::TrailersTooLarge => "http1.trailers_too_large",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    /// Whitespace after the digits: only `;` may follow.
    SizeWs,
    ExtStart,
    ExtName,
    ExtNameWs,
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedEscape,
    ExtAfterValue,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    Failed(ChunkError),
}

/// Decodes one chunked body fed in any segmentation.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    digits: u8,
    size: u64,
    /// Bytes of the current size line so far.
    line: usize,
    /// Data bytes left in the current chunk.
    remaining: u64,
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            digits: 0,
            size: 0,
            line: 0,
            remaining: 0,
            trailers: 0,
        }
    }

    /// Decode from `data`: returns how many of its bytes belong to this
    /// body (all of them unless the body ended inside `data`), calling
    /// `payload` with the chunk data. After an error, every call returns it
    /// again.
    pub fn feed(&mut self, data: &[u8], payload: &mut impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Failed(e) => return Err(e),
                State::Data => {
                    let left = usize::try_from(self.remaining).unwrap_or(usize::MAX);
                    let n = left.min(data.len() - i);
                    payload(&data[i..i + n]);
                    self.remaining -= n as u64;
                    i += n;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    if let Err(e) = self.step(data[i]) {
                        self.state = State::Failed(e);
                        return Err(e);
                    }
                    i += 1;
                }
            }
        }
        match self.state {
            State::Failed(e) => Err(e),
            _ => Ok(i),
        }
    }

    /// The last chunk and its trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes left in the current chunk (0 outside chunk data): what a
    /// splice may move before the decoder must see bytes again.
    pub fn chunk_remaining(&self) -> u64 {
        if self.state == State::Data {
            self.remaining
        } else {
            0
        }
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        if b == b'\n'
            && !matches!(
                self.state,
                State::SizeLf | State::DataLf | State::TrailerLf | State::FinalLf
            )
        {
            return Err(ChunkError::BareLineEnd);
        }
        match self.state {
            State::DataCr | State::DataLf => self.step_data_end(b),
            State::TrailerLineStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::FinalLf => self.step_trailer(b),
            _ => {
                self.line += 1;
                if self.line > MAX_SIZE_LINE {
                    return Err(ChunkError::SizeLineTooLong);
                }
                self.step_size_line(b)
            }
        }
    }

    fn step_size_line(&mut self, b: u8) -> Result<(), ChunkError> {
        let ws = b == b' ' || b == b'\t';
        self.state = match (self.state, b) {
            (State::Size, _) if b.is_ascii_hexdigit() => {
                self.digits += 1;
                if self.digits > MAX_SIZE_DIGITS {
                    return Err(ChunkError::SizeTooLong);
                }
                let digit = char::from(b).to_digit(16).unwrap_or(0);
                self.size = self.size << 4 | u64::from(digit);
                State::Size
            }
            (State::Size, b';' | b' ' | b'\t' | b'\r') if self.digits == 0 => {
                return Err(ChunkError::EmptySize);
            }
            (State::Size, b'\r') => State::SizeLf,
            (State::Size | State::SizeWs, _) if ws => State::SizeWs,
            (State::Size | State::SizeWs, b';') => State::ExtStart,
            (State::Size | State::SizeWs, _) => return Err(ChunkError::InvalidSizeLine),
            (State::SizeLf, b'\n') => self.end_size_line(),
            (State::SizeLf, _) => return Err(ChunkError::BareLineEnd),
            (state, _) => step_extension(state, b)?,
        };
        Ok(())
    }

    fn end_size_line(&mut self) -> State {
        self.line = 0;
        if self.size == 0 {
            State::TrailerLineStart
        } else {
            self.remaining = self.size;
            State::Data
        }
    }

    fn step_data_end(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match (self.state, b) {
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => {
                self.digits = 0;
                self.size = 0;
                State::Size
            }
            _ => return Err(ChunkError::MissingDataCrlf),
        };
        Ok(())
    }

    fn step_trailer(&mut self, b: u8) -> Result<(), ChunkError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkError::TrailersTooLarge);
        }
        self.state = match (self.state, b) {
            (State::TrailerLineStart, b'\r') => State::FinalLf,
            (State::TrailerLineStart | State::TrailerName, _) if is_tchar(b) => State::TrailerName,
            (State::TrailerName, b':') => State::TrailerValue,
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerValue, _) if is_field_vchar(b) => State::TrailerValue,
            (State::TrailerLf, b'\n') => State::TrailerLineStart,
            (State::FinalLf, b'\n') => State::Done,
            (State::TrailerLf | State::FinalLf, _) => return Err(ChunkError::BareLineEnd),
            _ => return Err(ChunkError::InvalidTrailer),
        };
        Ok(())
    }
}

/// One byte of `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted ) ] )`.
fn step_extension(state: State, b: u8) -> Result<State, ChunkError> {
    let ws = b == b' ' || b == b'\t';
    Ok(match state {
        State::ExtStart if ws => State::ExtStart,
        State::ExtStart if is_tchar(b) => State::ExtName,
        State::ExtName if is_tchar(b) => State::ExtName,
        State::ExtName | State::ExtNameWs if ws => State::ExtNameWs,
        State::ExtName | State::ExtNameWs if b == b'=' => State::ExtValueStart,
        State::ExtValueStart if ws => State::ExtValueStart,
        State::ExtValueStart if b == b'"' => State::ExtQuoted,
        State::ExtValueStart | State::ExtToken if is_tchar(b) => State::ExtToken,
        State::ExtQuoted if b == b'"' => State::ExtAfterValue,
        State::ExtQuoted if b == b'\\' => State::ExtQuotedEscape,
        State::ExtQuoted if is_qdtext(b) => State::ExtQuoted,
        State::ExtQuotedEscape if b == b'\t' || b == b' ' || b >= 0x21 && b != 0x7f => State::ExtQuoted,
        State::ExtToken | State::ExtAfterValue if ws => State::ExtAfterValue,
        State::ExtName | State::ExtNameWs | State::ExtToken | State::ExtAfterValue if b == b';' => {
            State::ExtStart
        }
        State::ExtName | State::ExtToken | State::ExtAfterValue if b == b'\r' => State::SizeLf,
        _ => return Err(ChunkError::InvalidExtension),
    })
}

/// qdtext (RFC 9110 §5.6.4): HTAB, SP, VCHAR but `"` and `\`, obs-text.
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || b == b' ' || b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b) || b >= 0x80
}

/// A byte of a field value: HTAB, SP, VCHAR, obs-text.
fn is_field_vchar(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}
