// SPDX-License-Identifier: GPL-2.0
//! Records the kernel frames itself (line mode), written whole into an
//! open chunk of the ring outside the topic lock and published with a
//! commit that only moves the head. A part of `ring.rs` (its child
//! module), so it is compiled into the module and host-tested with it.

use super::{stamped, Chunk, Frames, Mem, Ring, RingError, Stamp, INDEX_STRIDE};
use crate::abi::{record_span, RECORD_HEADER_SIZE};

/// Writes whole records into a chunk outside the topic lock, for records
/// whose frames the kernel makes itself (line mode): each header gets its
/// final sequence number and stamp as it is written, and the positions of
/// the records the sparse index needs are noted, so that
/// [`Ring::commit_stamped`] only has to index them and move the head. The
/// writer holds the chunk (one at a time), so no reader looks at these
/// bytes until that commit.
///
/// The notes go in storage the caller lends (`notes`, one entry per
/// [`INDEX_STRIDE`] records it may write, plus one): the stamper takes no
/// record that would need a note more. Lent rather than owned, so that
/// making a stamper costs nothing per `write()`: a stamper holding an
/// array of 24 notes made a one-line `write()` about 0.4 µs dearer in our
/// benchmark VM, against one of 2.
pub struct Stamper<'a> {
    /// The chunk's first position, and the end of its room.
    start: u64,
    end: u64,
    /// Where the next record goes.
    pos: u64,
    /// The sequence numbers of the first record and of the next one.
    first_seq: u64,
    seq: u64,
    mask: u64,
    stamp: Stamp,
    /// Positions of the records whose sequence number is a multiple of
    /// [`INDEX_STRIDE`], in order; the first `indexed_len` are set.
    indexed: &'a mut [u64],
    indexed_len: usize,
    /// Payload bytes written.
    bytes: u64,
}

impl<'a> Stamper<'a> {
    /// A stamper for chunk `c` of a ring whose mask is `mask`, stamping
    /// each record with `stamp` and noting positions in `notes`.
    pub fn new(c: &Chunk, mask: u64, stamp: Stamp, notes: &'a mut [u64]) -> Self {
        Self {
            start: c.pos,
            end: c.pos.saturating_add(c.len),
            pos: c.pos,
            first_seq: c.seq,
            seq: c.seq,
            mask,
            stamp,
            indexed: notes,
            indexed_len: 0,
            bytes: 0,
        }
    }

    /// Writes `payload` as the next record, header, payload and zero
    /// padding: `Ok(true)`; `Ok(false)`, writing nothing, when it does not
    /// fit the rest of the chunk (or the index notes are full). An empty
    /// payload, one longer than a quarter of the ring, or a copy outside
    /// the ring (which a chunk never leads to) is
    /// [`RingError::BadLength`].
    pub fn push<M: Mem>(&mut self, mem: &M, payload: &[u8]) -> Result<bool, RingError> {
        let len = payload.len();
        if len == 0 || len as u64 > (self.mask + 1) / 4 {
            return Err(RingError::BadLength);
        }
        let span = record_span(len) as u64;
        if self.pos.saturating_add(span) > self.end {
            return Ok(false);
        }
        let indexed = self.seq % INDEX_STRIDE == 0;
        if indexed && self.indexed_len >= self.indexed.len() {
            return Ok(false);
        }
        let off = (self.pos & self.mask) as usize;
        if !mem.put(off + RECORD_HEADER_SIZE, payload) {
            return Err(RingError::BadLength);
        }
        mem.set_header(off, &stamped(len, self.seq, self.stamp));
        if indexed {
            if let Some(e) = self.indexed.get_mut(self.indexed_len) {
                *e = self.pos;
            }
            self.indexed_len += 1;
        }
        self.pos += span;
        self.seq = self.seq.saturating_add(1);
        self.bytes += len as u64;
        Ok(true)
    }

    /// Bytes of the chunk the records written so far take.
    pub fn used(&self) -> u64 {
        self.pos - self.start
    }
}

impl<I> Ring<I>
where
    I: core::ops::Deref<Target = [u64]> + core::ops::DerefMut,
{
    /// Publishes the records `s` wrote into chunk `c`: they are whole and
    /// stamped already, so this only indexes them and moves the head past
    /// them; the rest of the chunk is given back. A stamper that does not
    /// match the chunk, or whose sequence numbers are not the ring's next
    /// (neither can happen while one chunk at a time is open), has its
    /// records checked and stamped again, as [`Ring::commit_frames`] does.
    pub fn commit_stamped<M: Mem>(
        &mut self,
        mem: &M,
        c: &Chunk,
        s: &Stamper<'_>,
        record_max: usize,
    ) -> Frames {
        let used = s.used();
        let end = c.pos.saturating_add(c.len);
        if s.start != c.pos || s.end != end || s.first_seq != self.next_seq || self.reserved != end
        {
            return self.commit_frames(mem, c, used, record_max, s.stamp);
        }
        // The first sequence number at or after the first record's that
        // the index keeps: the first note's.
        let mut seq = s
            .first_seq
            .div_ceil(INDEX_STRIDE)
            .saturating_mul(INDEX_STRIDE);
        for &pos in s.indexed.iter().take(s.indexed_len) {
            let slot = self.slot(seq);
            if let Some(e) = self.index.get_mut(slot) {
                *e = pos;
            }
            seq = seq.saturating_add(INDEX_STRIDE);
        }
        let records = s.seq - s.first_seq;
        if records > 0 {
            self.next_seq = s.seq;
            self.head = s.pos;
        }
        self.reserved = self.head;
        Frames {
            records,
            bytes: s.bytes,
            used,
            error: None,
        }
    }
}
