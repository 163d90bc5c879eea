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
    pub fn feed(
        &mut self,
        data: &[u8],
        payload: &mut impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
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

    /// `n` bytes of the current chunk's data went by without being fed
    /// (a splice moved them): the decoder goes on as if it had seen them,
    /// expecting the data's CRLF once the chunk's data is all through. At
    /// most [`ChunkedDecoder::chunk_remaining`]; more is a caller's bug
    /// (debug assertion) and is cut to that.
    pub fn skip_data(&mut self, n: u64) {
        debug_assert!(n <= self.chunk_remaining(), "skipped past the chunk's data");
        if self.state != State::Data {
            return;
        }
        self.remaining -= n.min(self.remaining);
        if self.remaining == 0 {
            self.state = State::DataCr;
        }
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        if b == b'\n'
            && !matches!(
                self.state,
                State::SizeLf | State::DataCr | State::DataLf | State::TrailerLf | State::FinalLf
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
        State::ExtQuotedEscape if b == b'\t' || b == b' ' || b >= 0x21 && b != 0x7f => {
            State::ExtQuoted
        }
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
    b == b'\t'
        || b == b' '
        || b == 0x21
        || (0x23..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
        || b >= 0x80
}

/// A byte of a field value: HTAB, SP, VCHAR, obs-text.
fn is_field_vchar(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feed `input` in one piece: (consumed, payload) or the error.
    fn decode(input: &[u8]) -> Result<(usize, Vec<u8>, bool), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut payload = Vec::new();
        let consumed = decoder.feed(input, &mut |d| payload.extend_from_slice(d))?;
        Ok((consumed, payload, decoder.is_done()))
    }

    #[test]
    fn data_skipped_by_a_splice_resumes_at_the_chunks_crlf() {
        // "a\r\n" + 10 data bytes + "\r\n3\r\nabc\r\n0\r\n\r\n": 4 of the
        // data fed, 6 skipped (spliced), then the rest fed.
        let mut d = ChunkedDecoder::new();
        let mut payload = Vec::new();
        assert_eq!(
            d.feed(b"a\r\n0123", &mut |p| payload.extend_from_slice(p)),
            Ok(7)
        );
        assert_eq!(d.chunk_remaining(), 6);
        d.skip_data(2);
        assert_eq!(d.chunk_remaining(), 4);
        d.skip_data(4);
        assert_eq!(d.chunk_remaining(), 0, "at the data's CRLF");
        let rest = b"\r\n3\r\nabc\r\n0\r\n\r\nNEXT";
        assert_eq!(
            d.feed(rest, &mut |p| payload.extend_from_slice(p)),
            Ok(rest.len() - 4)
        );
        assert!(d.is_done());
        assert_eq!(payload, b"0123abc", "skipped bytes are not payload");
        // Skipping outside chunk data changes nothing.
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"5\r\nhello", &mut |_| {}), Ok(8));
        d.skip_data(0);
        assert_eq!(d.feed(b"x", &mut |_| {}), Err(ChunkError::MissingDataCrlf));
    }

    #[test]
    fn well_formed_bodies_decode_and_stop_at_their_end() {
        struct Case {
            input: &'static [u8],
            consumed: usize,
            payload: &'static [u8],
            done: bool,
        }
        let cases = [
            Case {
                input: b"5\r\nhello\r\n0\r\n\r\n",
                consumed: 15,
                payload: b"hello",
                done: true,
            },
            Case {
                input: b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
                consumed: 15,
                payload: b"hello",
                done: true,
            },
            Case {
                input: b"0\r\n\r\n",
                consumed: 5,
                payload: b"",
                done: true,
            },
            Case {
                input: b"A\r\n0123456789\r\n0\r\n\r\n",
                consumed: 20,
                payload: b"0123456789",
                done: true,
            },
            Case {
                input: b"000000000000000a\r\n0123456789\r\n0\r\n\r\n",
                consumed: 35,
                payload: b"0123456789",
                done: true,
            },
            Case {
                input: b"3;name\r\nabc\r\n0\r\n\r\n",
                consumed: 18,
                payload: b"abc",
                done: true,
            },
            Case {
                input: b"3 ; a=b ; c = \"q \\\" d\"\r\nabc\r\n0\r\n\r\n",
                consumed: 34,
                payload: b"abc",
                done: true,
            },
            Case {
                input: b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B:\r\n\r\nnext",
                consumed: 29,
                payload: b"abc",
                done: true,
            },
            Case {
                input: b"5\r\nhel",
                consumed: 6,
                payload: b"hel",
                done: false,
            },
        ];
        for case in cases {
            let got = decode(case.input);
            let want = Ok((case.consumed, case.payload.to_vec(), case.done));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(case.input));
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_SIZE_LINE));
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_TRAILERS));
        let cases: [(&[u8], ChunkError); 19] = [
            (b"\r\n", ChunkError::EmptySize),
            (b";x\r\n", ChunkError::EmptySize),
            (b"0x5\r\nhello\r\n", ChunkError::InvalidSizeLine),
            (b"x\r\n", ChunkError::InvalidSizeLine),
            (b"-5\r\n", ChunkError::InvalidSizeLine),
            (b"00000000000000005\r\n", ChunkError::SizeTooLong),
            (b"5 \r\nhello\r\n", ChunkError::InvalidSizeLine),
            (b"5\nhello\r\n", ChunkError::BareLineEnd),
            (b"5;ext\nhello\r\n", ChunkError::BareLineEnd),
            (b"5;a\nb\r\nhello\r\n", ChunkError::BareLineEnd),
            (b"5\rhello", ChunkError::BareLineEnd),
            (b"5;\r\nhello\r\n", ChunkError::InvalidExtension),
            (b"5;a=\"b\r\n", ChunkError::InvalidExtension),
            (b"5;a=b c\r\n", ChunkError::InvalidExtension),
            (b"5\r\nhelloX\r\n0\r\n\r\n", ChunkError::MissingDataCrlf),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingDataCrlf),
            (b"0\r\n folded\r\n\r\n", ChunkError::InvalidTrailer),
            (b"0\r\nX : y\r\n\r\n", ChunkError::InvalidTrailer),
            (b"0\r\nX: y\r\n\n", ChunkError::BareLineEnd),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode(input),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            decode(long_ext.as_bytes()),
            Err(ChunkError::SizeLineTooLong)
        );
        assert_eq!(
            decode(long_trailer.as_bytes()),
            Err(ChunkError::TrailersTooLarge)
        );
    }

    #[test]
    fn an_error_sticks() {
        let mut decoder = ChunkedDecoder::new();
        let mut sink = |_: &[u8]| {};
        assert_eq!(
            decoder.feed(b"z", &mut sink),
            Err(ChunkError::InvalidSizeLine)
        );
        assert_eq!(
            decoder.feed(b"0\r\n\r\n", &mut sink),
            Err(ChunkError::InvalidSizeLine)
        );
    }

    #[test]
    fn chunk_remaining_counts_down_the_current_chunk() {
        let mut decoder = ChunkedDecoder::new();
        let mut sink = |_: &[u8]| {};
        assert_eq!(decoder.feed(b"10\r\n", &mut sink), Ok(4));
        assert_eq!(decoder.chunk_remaining(), 16);
        assert_eq!(decoder.feed(b"0123456", &mut sink), Ok(7));
        assert_eq!(decoder.chunk_remaining(), 9);
        assert_eq!(decoder.feed(b"789abcdef\r", &mut sink), Ok(10));
        assert_eq!(decoder.chunk_remaining(), 0);
        assert!(!decoder.is_done());
        assert_eq!(decoder.feed(b"\n0\r\n\r\nrest", &mut sink), Ok(6));
        assert!(decoder.is_done());
        assert_eq!(decoder.feed(b"rest", &mut sink), Ok(0));
    }

    fn extension() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z]{1,5}".prop_map(|n| format!(";{n}")),
            ("[a-z]{1,5}", "[a-z0-9]{1,5}").prop_map(|(n, v)| format!(" ;{n}={v}")),
            ("[a-z]{1,5}", "[ a-z;=]{0,6}").prop_map(|(n, v)| format!(";{n} = \"{v}\"")),
        ]
    }

    fn chunks() -> impl Strategy<Value = Vec<(Vec<u8>, String)>> {
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..300), extension()),
            0..8,
        )
    }

    fn trailers() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,8}", "[ -~]{0,12}"), 0..3)
    }

    fn encode(
        chunks: &[(Vec<u8>, String)],
        last_ext: &str,
        trailers: &[(String, String)],
        upper: bool,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for (data, ext) in chunks {
            let size = if upper {
                format!("{:X}", data.len())
            } else {
                format!("{:x}", data.len())
            };
            out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("0{last_ext}\r\n").as_bytes());
        for (name, value) in trailers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn any_segmentation_decodes_the_same_and_stops_at_the_end(
            chunks in chunks(),
            last_ext in extension(),
            trailers in trailers(),
            upper in any::<bool>(),
            trailing in proptest::collection::vec(any::<u8>(), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let encoded = encode(&chunks, &last_ext, &trailers, upper);
            let mut wire = encoded.clone();
            wire.extend_from_slice(&trailing);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut decoder = ChunkedDecoder::new();
            let mut payload = Vec::new();
            let mut consumed = 0;
            let mut from = 0;
            for cut in cuts {
                let n = decoder.feed(&wire[from..cut], &mut |d| payload.extend_from_slice(d)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                consumed += n;
                if decoder.is_done() {
                    break;
                }
                prop_assert_eq!(n, cut - from);
                from = cut;
            }
            let want: Vec<u8> = chunks.iter().flat_map(|(d, _)| d.iter().copied()).collect();
            prop_assert!(decoder.is_done());
            prop_assert_eq!(consumed, encoded.len());
            prop_assert_eq!(payload, want);
        }
    }
}
