//! Line mode (ABI 6): lines read from the input and written up to the last
//! delimiter read, for the kernel to cut into records; the reading loop
//! one read at a time ([`LineWriter`]), which the spliced path
//! ([`crate::publish_spliced_lines`]) falls back on for a stretch.

use crate::Stats;
use anyhow::{Context, Result};
use std::io::{self, Read, Write};

/// Bytes of input read at a time in line mode (the buffer grows for a line
/// longer than this, up to the record limit).
pub const LINE_READ: usize = 256 * 1024;

/// Line mode (ABI 6): reads `input` to its end and writes it to `out` (a
/// topic file with `FLAG_LINES` set, and `FLAG_NUL` for a `delim` of 0),
/// where the kernel cuts it into records just after each `delim`. After
/// each read, everything up to the last delimiter read so far goes out in
/// one `write()` (so no record waits for input that has not arrived, and a
/// line is never cut by the end of a `write()`); the rest waits for the
/// next read, and at the end of input it goes out as the final record. A
/// line longer than `record_max` is written `record_max` bytes at a time
/// (the records the framing of [`crate::publish`] would make), and `warn` is
/// called once for the first one. Loops on `EINTR` and short writes; after
/// a read error, the lines before it have been published.
pub fn publish_lines<R: Read, W: Write>(
    mut input: R,
    out: W,
    delim: u8,
    record_max: usize,
    mut warn: impl FnMut(&str),
) -> Result<Stats> {
    let mut lines = LineWriter::new(out, delim, record_max);
    while lines.step(&mut input, &mut warn)? {}
    Ok(lines.stats)
}

/// [`publish_lines`] one read at a time, so that [`crate::publish_spliced_lines`]
/// can read a stretch of its input itself and then splice again.
pub struct LineWriter<W> {
    out: W,
    delim: u8,
    record_max: usize,
    buf: Vec<u8>,
    /// Bytes at the start of `buf`: the line not yet ended.
    filled: usize,
    /// Bytes of that line already written, `record_max` at a time.
    line_written: usize,
    /// What was written.
    pub stats: Stats,
}

impl<W: Write> LineWriter<W> {
    /// A writer of lines ended by `delim` into `out`, a topic file in line
    /// mode whose record limit is `record_max`.
    pub fn new(out: W, delim: u8, record_max: usize) -> Self {
        Self {
            out,
            delim,
            record_max: record_max.max(1),
            buf: vec![0u8; LINE_READ],
            filled: 0,
            line_written: 0,
            stats: Stats::default(),
        }
    }

    /// Whether a line read is not written yet (it has not ended).
    pub fn pending(&self) -> bool {
        self.filled > 0
    }

    fn send(&mut self, end: usize) -> Result<()> {
        let bytes = self.buf.get(..end).unwrap_or_default();
        self.out.write_all(bytes).context("writing to the topic")?;
        self.stats.writes += 1;
        self.stats.bytes += bytes.len() as u64;
        Ok(())
    }

    /// One read of `input`, and the `write()`s it allows. `Ok(false)` at
    /// the end of input, everything written.
    pub fn step<R: Read>(&mut self, input: &mut R, warn: &mut impl FnMut(&str)) -> Result<bool> {
        Ok(self.read_step(input, usize::MAX, warn)?.is_some())
    }

    /// Reads exactly `n` more bytes of `input` (fewer at its end), and
    /// writes what they end. For a caller that knows the `n`-th byte ends
    /// the line not yet ended: then nothing is left [`Self::pending`].
    /// `Ok(false)` at the end of input, everything written.
    pub fn read_exactly<R: Read>(
        &mut self,
        input: &mut R,
        mut n: usize,
        warn: &mut impl FnMut(&str),
    ) -> Result<bool> {
        while n > 0 {
            match self.read_step(input, n, warn)? {
                Some(got) => n -= got.min(n),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// [`Self::step`], reading at most `limit` bytes: `Some` of the bytes
    /// read, `None` at the end of input.
    fn read_step<R: Read>(
        &mut self,
        input: &mut R,
        limit: usize,
        warn: &mut impl FnMut(&str),
    ) -> Result<Option<usize>> {
        let (delim, record_max) = (self.delim, self.record_max);
        if self.filled == self.buf.len() {
            // A full buffer without a delimiter: a line longer than it.
            let whole = self.filled / record_max * record_max;
            if whole == 0 {
                // The record limit is larger than the buffer: grow it.
                let len = self.buf.len().saturating_mul(2);
                self.buf.resize(len, 0);
                return Ok(Some(0));
            }
            if self.line_written == 0 {
                self.stats.lines_split += 1;
                if self.stats.lines_split == 1 {
                    warn(&long_line_warning(record_max));
                }
            }
            self.send(whole)?;
            self.buf.copy_within(whole..self.filled, 0);
            self.filled -= whole;
            self.line_written += whole;
        }
        let filled = self.filled;
        let room = self.buf.len().min(filled.saturating_add(limit));
        let n = match input.read(self.buf.get_mut(filled..room).unwrap_or_default()) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Some(0)),
            Err(e) => return Err(e).context("reading stdin"),
        };
        let eof = n == 0;
        let new = self.buf.get(filled..filled + n).unwrap_or_default();
        let end = match memchr::memrchr(delim, new) {
            _ if eof => filled,
            Some(i) => filled + i + 1,
            None => {
                self.filled += n;
                return Ok(Some(n));
            }
        };
        if end > 0 {
            let chunk = self.buf.get(..end).unwrap_or_default();
            let long = long_lines(chunk, delim, record_max, self.line_written);
            if long > 0 && self.stats.lines_split == 0 {
                warn(&long_line_warning(record_max));
            }
            self.stats.lines_split += long;
            self.send(end)?;
        }
        if eof {
            self.filled = 0;
            return Ok(None);
        }
        self.buf.copy_within(end..filled + n, 0);
        self.filled = filled + n - end;
        self.line_written = 0;
        Ok(Some(n))
    }
}

/// The warning for the first line longer than the record limit.
fn long_line_warning(record_max: usize) -> String {
    format!("a line is longer than the topic's record limit ({record_max} bytes): it is sent as several records")
}

/// How many lines of `chunk` (whole lines, the last one maybe unended, the
/// first one `before` bytes longer than it shows) are longer than
/// `record_max`. Looks at each line only when `chunk` could hold one.
pub fn long_lines(chunk: &[u8], delim: u8, record_max: usize, before: usize) -> u64 {
    if before.saturating_add(chunk.len()) <= record_max {
        return 0;
    }
    let mut count = 0;
    let mut start = 0usize;
    let mut extra = before;
    let mut ends = memchr::memchr_iter(delim, chunk).map(|i| i + 1);
    loop {
        let end = ends.next().unwrap_or(chunk.len());
        if end <= start {
            return count;
        }
        // A line begun by pieces already sent was counted then.
        if extra == 0 && end - start > record_max {
            count += 1;
        }
        extra = 0;
        start = end;
    }
}
