//! [`Mapped::read_payloads`]: payloads appended straight from the mapping
//! to the caller's buffer, walking the ring in place and trusting nothing
//! read until the tail says the writer did not reach it.

use super::{bad_record, no_progress, Mapped, Next, Progress, HDR, WALK};
use crate::abi::{RecordHeader, RECORD_HEADER_SIZE};
use std::io;

impl Mapped {
    /// Reads the next batch as [`Mapped::read_into`] does, but appends each
    /// record's payload to `out` straight from the mapping, with no private
    /// copy of the ring in between and no header bytes copied: one copy of
    /// each payload byte, where `read_into` makes two and copies the
    /// headers too. After each payload it calls `after(out, header)`, which
    /// may append more (a delimiter); it must not do anything else it
    /// cannot take back, since a batch the writer turns out to have
    /// overwritten meanwhile is taken back from `out`.
    ///
    /// The walk reads the ring in place: headers and payloads are loaded
    /// while the writer may overwrite them, so nothing found on the way is
    /// trusted until the tail is checked after the walk (at most `chunk`
    /// bytes of the ring). If the tail passed the walk's start, everything
    /// appended in it is taken back (`out` truncated, the sequence number
    /// and loss rolled back) and the walk starts again from the new tail,
    /// counting the loss there; a bad header is an error only when the tail
    /// does not explain it.
    pub fn read_payloads<F>(
        &mut self,
        out: &mut Vec<u8>,
        limit: u64,
        mut after: F,
    ) -> io::Result<Progress>
    where
        F: FnMut(&mut Vec<u8>, &RecordHeader),
    {
        self.rounds(limit, |m, head, progress| {
            let start = m.pos;
            let saved = (m.seq, m.unreported, out.len(), *progress);
            let walked = m.walk_in_place(head, out, limit, progress, &mut after);
            let tail2 = m.tail_after_copy()?;
            if tail2 > start {
                // Lapped during the walk: any of it may be torn, even the
                // headers that led it. Take it all back and go on from the
                // new tail.
                let (seq, unreported, len, before) = saved;
                out.truncate(len);
                (m.seq, m.unreported, *progress) = (seq, unreported, before);
                m.pos = tail2;
                m.exact = false;
                return Ok(false);
            }
            // The tail did not move past the walk: it read intact bytes, so
            // a bad record is really bad.
            walked?;
            if progress.records > saved.3.records || progress.records >= limit {
                return Ok(true);
            }
            if m.pos == start {
                return Err(no_progress(m.pos));
            }
            Ok(false)
        })
    }

    /// Walks the ring itself from `self.pos` towards `head`, at most about
    /// `chunk` bytes and `limit` records, appending payloads to `out`
    /// ([`Mapped::read_payloads`]). Nothing it reads is trusted yet: its
    /// caller checks the tail afterwards, and an error here (a header that
    /// makes no sense) counts only if the tail does not explain it.
    fn walk_in_place<F>(
        &mut self,
        head: u64,
        out: &mut Vec<u8>,
        limit: u64,
        progress: &mut Progress,
        after: &mut F,
    ) -> io::Result<()>
    where
        F: FnMut(&mut Vec<u8>, &RecordHeader),
    {
        let start = self.pos;
        let mask = self.size - 1;
        let most = self.chunk.min(WALK);
        while self.pos < head && progress.records < limit && self.pos - start < most {
            let p = self.pos;
            let off = p & mask;
            let room = self.size - off;
            if room < HDR {
                self.pos = p + room;
                continue;
            }
            let at = self.data + off as usize;
            let h = self
                .region
                .header(at)
                .ok_or_else(|| bad_record(p, "out of the mapping".to_string()))?;
            let span = match self.classify(p, &h, room, head, progress)? {
                Next::Skip(n) => {
                    self.pos = p + n;
                    continue;
                }
                Next::Deliver(span) => span,
            };
            // The payload's words: they end inside the record's span.
            let len = h.len as usize;
            let mark = out.len();
            if !self
                .region
                .copy_words(at + RECORD_HEADER_SIZE, len.div_ceil(8), out)
            {
                return Err(bad_record(p, "out of the mapping".to_string()));
            }
            out.truncate(mark + len);
            after(out, &h);
            progress.records += 1;
            self.seq = h.seq.saturating_add(1);
            self.pos = p + span;
        }
        Ok(())
    }
}
