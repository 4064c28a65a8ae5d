//! Framing: how `pubmsg` cuts a byte stream into records, and how a reader
//! (`submsg`) turns records back into the same byte stream.
//!
//! | framing | writer side ([`Framer`]) | reader side ([`deframe`]) |
//! | --- | --- | --- |
//! | [`Framing::Lines`] | each line, newline included, is one record; a final line without newline too | payloads as they are |
//! | [`Framing::Nul`] | the same with NUL bytes for newlines: each NUL-terminated item, NUL included | payloads as they are |
//! | [`Framing::Raw`] | each chunk as it arrives is one record | payloads as they are |
//! | [`Framing::Len32`] | each big-endian `u32` length-prefixed frame is one record (the prefix is not sent) | each payload with its `u32` prefix again |
//!
//! A record holds at most `record_max` bytes. A longer line (or raw chunk)
//! is split into `record_max`-sized pieces, in order, and counted
//! ([`Framer::lines_split`]); a longer `--len32` frame cannot be one record
//! and is refused ([`FrameError::TooLarge`]), since splitting it would
//! change the message boundaries its reader relies on. A zero-length frame
//! cannot be a record either (a zero-length `write()` publishes nothing):
//! it is skipped and counted ([`Framer::empty_frames`]).
//!
//! Whatever the input and however it is chunked, the records' bytes put back
//! by [`deframe`] are exactly the input (less skipped empty frames).

use std::fmt;
use std::io;

/// How a byte stream is cut into records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One record per line, newline included.
    Lines,
    /// One record per NUL-terminated item, NUL included (`find -print0`).
    Nul,
    /// One record per chunk read.
    Raw,
    /// One record per big-endian `u32` length-prefixed frame.
    Len32,
}

/// Why framing failed.
#[derive(Debug)]
pub enum FrameError {
    /// A `--len32` frame longer than the record limit.
    TooLarge {
        /// The frame's length.
        len: u64,
        /// The record limit.
        max: usize,
        /// Offset of the frame's length prefix in the input.
        offset: u64,
    },
    /// The input ended inside a `--len32` frame.
    Truncated {
        /// Bytes of the frame (prefix included) that were there.
        have: u64,
        /// Bytes the frame needed (prefix included), when known.
        want: Option<u64>,
    },
    /// Emitting a record failed.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max, offset } => write!(
                f,
                "the frame at input offset {offset} has {len} bytes, more than the topic's record limit of {max}; \
                 create the topic with a larger record limit (baf-setup create NAME --record-max ...)"
            ),
            FrameError::Truncated { have, want: Some(w) } => write!(
                f,
                "the input ended inside a frame ({have} of its {w} bytes, length prefix included)"
            ),
            FrameError::Truncated { have, want: None } => write!(
                f,
                "the input ended inside a frame's 4-byte length prefix ({have} bytes)"
            ),
            FrameError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Where a `--len32` frame stands.
#[derive(Clone, Copy, Debug)]
enum Len32State {
    /// Reading the 4-byte prefix; `pending` holds what came so far.
    Prefix,
    /// Reading `len` payload bytes into `pending`.
    Payload { len: usize },
}

/// Cuts a byte stream into records (the writer's side).
///
/// Feed it with [`Framer::push`] as input arrives and call
/// [`Framer::finish`] at end of input; each record is handed to the `emit`
/// callback, in order. Records are never empty and never longer than
/// `record_max`.
#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    record_max: usize,
    /// Lines: the incomplete line. Len32: the incomplete prefix or payload.
    pending: Vec<u8>,
    state: Len32State,
    /// Input bytes consumed, for error messages.
    offset: u64,
    /// Offset of the current `--len32` frame.
    frame_start: u64,
    lines_split: u64,
    empty_frames: u64,
    /// The line being gathered was already split (counted once).
    splitting: bool,
}

impl Framer {
    /// A framer for records of at most `record_max` (at least 1) bytes.
    pub fn new(framing: Framing, record_max: usize) -> Self {
        Self {
            framing,
            record_max: record_max.max(1),
            pending: Vec::new(),
            state: Len32State::Prefix,
            offset: 0,
            frame_start: 0,
            lines_split: 0,
            empty_frames: 0,
            splitting: false,
        }
    }

    /// The framing.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The record limit.
    pub fn record_max(&self) -> usize {
        self.record_max
    }

    /// Lines (or raw chunks) that were longer than the record limit and
    /// were split into several records.
    pub fn lines_split(&self) -> u64 {
        self.lines_split
    }

    /// Zero-length `--len32` frames, skipped.
    pub fn empty_frames(&self) -> u64 {
        self.empty_frames
    }

    /// Emits `data` as records of at most `record_max` bytes; counts a split.
    fn emit_split<E>(&mut self, data: &[u8], emit: &mut E) -> io::Result<()>
    where
        E: FnMut(&[u8]) -> io::Result<()>,
    {
        if data.len() > self.record_max && !self.splitting {
            self.lines_split += 1;
        }
        for piece in data.chunks(self.record_max) {
            emit(piece)?;
        }
        Ok(())
    }

    /// Takes more input; emits every record it completes.
    pub fn push<E>(&mut self, input: &[u8], emit: &mut E) -> Result<(), FrameError>
    where
        E: FnMut(&[u8]) -> io::Result<()>,
    {
        match self.framing {
            Framing::Raw => {
                self.offset += input.len() as u64;
                self.emit_split(input, emit)?;
                Ok(())
            }
            Framing::Lines => self.push_lines(b'\n', input, emit),
            Framing::Nul => self.push_lines(0, input, emit),
            Framing::Len32 => self.push_len32(input, emit),
        }
    }

    /// Lines ended by `end` (a newline, or NUL for [`Framing::Nul`]).
    fn push_lines<E>(&mut self, end: u8, mut input: &[u8], emit: &mut E) -> Result<(), FrameError>
    where
        E: FnMut(&[u8]) -> io::Result<()>,
    {
        self.offset += input.len() as u64;
        while let Some(i) = memchr::memchr(end, input) {
            let (line, rest) = input.split_at(i + 1);
            input = rest;
            if self.pending.is_empty() {
                self.emit_split(line, emit)?;
            } else {
                let mut whole = std::mem::take(&mut self.pending);
                whole.extend_from_slice(line);
                let r = self.emit_split(&whole, emit);
                whole.clear();
                self.pending = whole; // keeps its capacity
                r?;
            }
            self.splitting = false;
        }
        if !input.is_empty() {
            self.pending.extend_from_slice(input);
            // A partial line beyond the limit is split now, so memory stays
            // bounded and its first pieces go out while it is still coming.
            // Exactly `record_max` bytes are kept: at end of input they may
            // still be one whole (final) line.
            if self.pending.len() > self.record_max {
                let cut = (self.pending.len() - 1) / self.record_max * self.record_max;
                if !self.splitting {
                    self.lines_split += 1;
                    self.splitting = true;
                }
                let rest = self.pending.split_off(cut);
                let head = std::mem::replace(&mut self.pending, rest);
                for piece in head.chunks(self.record_max) {
                    emit(piece)?;
                }
            }
        }
        Ok(())
    }

    fn push_len32<E>(&mut self, mut input: &[u8], emit: &mut E) -> Result<(), FrameError>
    where
        E: FnMut(&[u8]) -> io::Result<()>,
    {
        while !input.is_empty() {
            match self.state {
                Len32State::Prefix => {
                    let need = 4 - self.pending.len();
                    let (take, rest) = input.split_at(need.min(input.len()));
                    self.pending.extend_from_slice(take);
                    self.offset += take.len() as u64;
                    input = rest;
                    if self.pending.len() < 4 {
                        break;
                    }
                    let mut b = [0u8; 4];
                    b.copy_from_slice(&self.pending[..4]);
                    self.pending.clear();
                    let len = u32::from_be_bytes(b) as u64;
                    if len > self.record_max as u64 {
                        return Err(FrameError::TooLarge {
                            len,
                            max: self.record_max,
                            offset: self.frame_start,
                        });
                    }
                    if len == 0 {
                        self.empty_frames += 1;
                        self.frame_start = self.offset;
                        continue;
                    }
                    self.state = Len32State::Payload { len: len as usize };
                }
                Len32State::Payload { len } => {
                    if self.pending.is_empty() && input.len() >= len {
                        // The whole frame is in this chunk: no copy.
                        let (frame, rest) = input.split_at(len);
                        emit(frame)?;
                        input = rest;
                        self.offset += len as u64;
                    } else {
                        let need = len - self.pending.len();
                        let (take, rest) = input.split_at(need.min(input.len()));
                        self.pending.extend_from_slice(take);
                        self.offset += take.len() as u64;
                        input = rest;
                        if self.pending.len() < len {
                            break;
                        }
                        let r = emit(&self.pending);
                        self.pending.clear();
                        r?;
                    }
                    self.state = Len32State::Prefix;
                    self.frame_start = self.offset;
                }
            }
        }
        Ok(())
    }

    /// Ends the input: emits a final line without newline, or fails if the
    /// input ended inside a `--len32` frame.
    pub fn finish<E>(&mut self, emit: &mut E) -> Result<(), FrameError>
    where
        E: FnMut(&[u8]) -> io::Result<()>,
    {
        match self.framing {
            Framing::Raw => Ok(()),
            Framing::Lines | Framing::Nul => {
                if !self.pending.is_empty() {
                    let last = std::mem::take(&mut self.pending);
                    self.emit_split(&last, emit)?;
                }
                Ok(())
            }
            Framing::Len32 => {
                let have = self.offset - self.frame_start;
                match self.state {
                    Len32State::Prefix if self.pending.is_empty() => Ok(()),
                    Len32State::Prefix => Err(FrameError::Truncated { have, want: None }),
                    Len32State::Payload { len } => Err(FrameError::Truncated {
                        have,
                        want: Some(len as u64 + 4),
                    }),
                }
            }
        }
    }
}

/// Appends to `out` what a reader writes for one record's `payload`, so
/// that the output stream equals the writer's input: the payload itself,
/// or for [`Framing::Len32`] the payload after its big-endian length.
pub fn deframe(framing: Framing, payload: &[u8], out: &mut Vec<u8>) {
    if framing == Framing::Len32 {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Encodes `frames` as a `--len32` stream (tests, and programs that feed
/// `pubmsg --len32`).
pub fn encode_len32<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        deframe(Framing::Len32, f, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frames `input` cut at `cuts` (chunk sizes); returns the records.
    fn frame(
        framing: Framing,
        max: usize,
        input: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<Vec<u8>>, Framer), FrameError> {
        let mut f = Framer::new(framing, max);
        let mut records = Vec::new();
        let mut emit = |r: &[u8]| {
            records.push(r.to_vec());
            Ok(())
        };
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            let (a, b) = rest.split_at(n);
            f.push(a, &mut emit)?;
            rest = b;
            i += 1;
        }
        f.finish(&mut emit)?;
        Ok((records, f))
    }

    fn joined(framing: Framing, records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            deframe(framing, r, &mut out);
        }
        out
    }

    #[test]
    fn lines_one_record_each_final_line_without_newline_too() {
        let (r, f) = frame(Framing::Lines, 100, b"a\nbb\n\nccc", &[]).unwrap();
        assert_eq!(
            r,
            vec![
                b"a\n".to_vec(),
                b"bb\n".to_vec(),
                b"\n".to_vec(),
                b"ccc".to_vec()
            ]
        );
        assert_eq!(f.lines_split(), 0);
    }

    #[test]
    fn nul_items_one_record_each_nul_included() {
        let (r, f) = frame(Framing::Nul, 100, b"a b\0c\nd\0\0last", &[2, 3, 1]).unwrap();
        assert_eq!(
            r,
            vec![
                b"a b\0".to_vec(),
                b"c\nd\0".to_vec(),
                b"\0".to_vec(),
                b"last".to_vec()
            ]
        );
        assert_eq!(f.lines_split(), 0);
        let (r, f) = frame(Framing::Nul, 3, b"abcdef\0", &[]).unwrap();
        assert_eq!(r, vec![b"abc".to_vec(), b"def".to_vec(), b"\0".to_vec()]);
        assert_eq!(f.lines_split(), 1);
    }

    #[test]
    fn lines_across_chunks() {
        let (r, _) = frame(Framing::Lines, 100, b"hello\nworld\n", &[2, 5, 1, 1]).unwrap();
        assert_eq!(r, vec![b"hello\n".to_vec(), b"world\n".to_vec()]);
    }

    #[test]
    fn long_line_split_and_counted_once() {
        let line = [b'x'; 25];
        let mut input = line.to_vec();
        input.push(b'\n');
        input.extend_from_slice(b"ok\n");
        let (r, f) = frame(Framing::Lines, 10, &input, &[3, 3, 3, 3, 3, 3, 3, 3, 3]).unwrap();
        assert_eq!(f.lines_split(), 1);
        assert!(r.iter().all(|r| r.len() <= 10));
        assert_eq!(r.last().unwrap(), b"ok\n");
        assert_eq!(joined(Framing::Lines, &r), input);
        // Whole chunks: the same records.
        let (r2, _) = frame(Framing::Lines, 10, &input, &[]).unwrap();
        assert_eq!(r, r2);
    }

    #[test]
    fn a_final_line_of_exactly_record_max_is_one_record() {
        let (r, f) = frame(Framing::Lines, 4, b"abcd", &[1, 1, 1, 1]).unwrap();
        assert_eq!(r, vec![b"abcd".to_vec()]);
        assert_eq!(f.lines_split(), 0);
        let (r, f) = frame(Framing::Lines, 4, b"abc\n", &[1, 1, 1, 1]).unwrap();
        assert_eq!(r, vec![b"abc\n".to_vec()]);
        assert_eq!(f.lines_split(), 0);
    }

    #[test]
    fn empty_input_no_record() {
        for framing in [Framing::Lines, Framing::Nul, Framing::Raw, Framing::Len32] {
            let (r, _) = frame(framing, 10, b"", &[]).unwrap();
            assert!(r.is_empty());
        }
    }

    #[test]
    fn len32_frames() {
        let input = encode_len32([&b"abc"[..], b"", b"\0\xff\n"]);
        let (r, f) = frame(Framing::Len32, 10, &input, &[1, 1, 2, 5]).unwrap();
        assert_eq!(r, vec![b"abc".to_vec(), b"\0\xff\n".to_vec()]);
        assert_eq!(f.empty_frames(), 1);
    }

    #[test]
    fn len32_too_large_is_refused_with_its_offset() {
        let input = encode_len32([&b"ok"[..], &[7u8; 11][..]]);
        match frame(Framing::Len32, 10, &input, &[]) {
            Err(FrameError::TooLarge {
                len: 11,
                max: 10,
                offset: 6,
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn len32_truncated() {
        let mut input = encode_len32([&b"abcdef"[..]]);
        input.pop();
        assert!(matches!(
            frame(Framing::Len32, 10, &input, &[]),
            Err(FrameError::Truncated {
                have: 9,
                want: Some(10)
            })
        ));
        assert!(matches!(
            frame(Framing::Len32, 10, &[0, 0], &[]),
            Err(FrameError::Truncated {
                have: 2,
                want: None
            })
        ));
    }

    #[test]
    fn emit_errors_propagate() {
        let mut f = Framer::new(Framing::Lines, 10);
        let mut emit = |_: &[u8]| Err(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(f.push(b"a\n", &mut emit), Err(FrameError::Io(_))));
    }

    proptest! {
        /// Lines and raw: the records put together are the input exactly,
        /// each is 1..=max bytes, and (lines) a newline only ends a record.
        #[test]
        fn lines_and_raw_round_trip(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..2000),
            max in 1usize..64,
            cuts in proptest::collection::vec(1usize..300, 0..20),
            raw in any::<bool>(),
        ) {
            let framing = if raw { Framing::Raw } else { Framing::Lines };
            let (records, f) = frame(framing, max, &input, &cuts).unwrap();
            prop_assert_eq!(joined(framing, &records), input.clone());
            for r in &records {
                prop_assert!(!r.is_empty() && r.len() <= max);
            }
            if framing == Framing::Lines {
                for r in &records {
                    if let Some(i) = r.iter().position(|&b| b == b'\n') {
                        prop_assert_eq!(i, r.len() - 1);
                    }
                }
                // Splitting does not depend on how the input was chunked.
                let (whole, g) = frame(framing, max, &input, &[]).unwrap();
                prop_assert_eq!(&records, &whole);
                prop_assert_eq!(f.lines_split(), g.lines_split());
                let long = input
                    .split_inclusive(|&b| b == b'\n')
                    .filter(|l| l.len() > max)
                    .count() as u64;
                prop_assert_eq!(f.lines_split(), long);
            }
        }

        /// Len32: any frames (none empty, none too large), encoded and cut
        /// anywhere, come out as the same records, and the reader's deframer
        /// restores the input byte for byte.
        #[test]
        fn len32_round_trip(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..30),
            cuts in proptest::collection::vec(1usize..40, 0..40),
        ) {
            let input = encode_len32(frames.iter().map(|f| &f[..]));
            let (records, f) = frame(Framing::Len32, 50, &input, &cuts).unwrap();
            prop_assert_eq!(&records, &frames);
            prop_assert_eq!(f.empty_frames(), 0);
            prop_assert_eq!(joined(Framing::Len32, &records), input);
        }

        /// Len32 with empty frames: they are skipped and counted, the rest
        /// pass.
        #[test]
        fn len32_empty_frames_skipped(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5), 0..30),
        ) {
            let input = encode_len32(frames.iter().map(|f| &f[..]));
            let (records, f) = frame(Framing::Len32, 8, &input, &[3]).unwrap();
            let nonempty: Vec<_> = frames.iter().filter(|f| !f.is_empty()).cloned().collect();
            prop_assert_eq!(records, nonempty);
            prop_assert_eq!(f.empty_frames(), frames.iter().filter(|f| f.is_empty()).count() as u64);
        }

        /// Truncating a len32 stream anywhere inside a frame is an error,
        /// never a silently shortened record.
        #[test]
        fn len32_truncation_detected(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 1..10),
            cut in any::<proptest::sample::Index>(),
        ) {
            let input = encode_len32(frames.iter().map(|f| &f[..]));
            let at = cut.index(input.len());
            let mut boundaries = vec![0usize];
            for f in &frames {
                boundaries.push(boundaries.last().unwrap() + 4 + f.len());
            }
            let r = frame(Framing::Len32, 20, &input[..at], &[]);
            if boundaries.contains(&at) {
                prop_assert!(r.is_ok());
            } else {
                let is_truncated = matches!(r, Err(FrameError::Truncated { .. }));
                prop_assert!(is_truncated);
            }
        }
    }
}
