// SPDX-License-Identifier: GPL-2.0
//! The record ring: pure logic over a byte buffer, with no kernel calls, so
//! the same file is compiled into the module and property-tested on the host
//! (`libbaf/src/ring_tests.rs`).
//!
//! Layout: records sit back to back, each a [`RecordHeader`] (stored with the
//! writer's *global* pid and raw kuid) followed by its payload and zero
//! padding to a multiple of 8 bytes. A record never wraps around the end of
//! the buffer: when it would, the rest of the buffer is skipped (marked by a
//! header with [`PAD_FLAG`] when there is room for one). So every payload is
//! one contiguous slice, which also keeps a future read-only `mmap` view
//! simple.
//!
//! Positions (`head`, `tail`, cursors) are byte offsets that only grow; the
//! buffer index is `pos & mask`. With 64-bit positions and sequence numbers,
//! wrapping would take centuries at memory speed; arithmetic on them is
//! still checked or saturating, never silently wrapping.
//!
//! The writer never waits: appending evicts the oldest records until the new
//! one fits. A reader whose next sequence number was evicted is "lapped": it
//! learns how many records it lost and resumes at the oldest one left.

use crate::abi::{record_span, RecordHeader, RECORD_HEADER_SIZE};

/// Header flag (ring-internal) marking skipped space up to the buffer's end.
pub const PAD_FLAG: u32 = 1 << 31;

const HDR: u64 = RECORD_HEADER_SIZE as u64;

/// Where a reader is: the byte position and sequence number of the next
/// record it will read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Byte position (not masked).
    pub pos: u64,
    /// Sequence number of the record at `pos` (or the next one written).
    pub seq: u64,
}

/// What the kernel stamps on a record besides its sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub timestamp_ns: u64,
    /// Writer's pid in the initial pid namespace.
    pub pid: u32,
    /// Writer's kuid.
    pub uid: u32,
}

/// Result of looking at a cursor's next record.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// The cursor is at the newest position: nothing to read.
    Empty,
    /// The cursor's record was evicted; `lost` records are gone. Move the
    /// cursor to [`Ring::oldest`] to go on.
    Lapped {
        /// Records evicted before the reader got to them.
        lost: u64,
    },
    /// A whole record, and the cursor just past it.
    Record {
        /// The stored header (global pid, raw kuid).
        header: RecordHeader,
        /// The payload, contiguous.
        payload: &'a [u8],
        /// The cursor to continue from.
        next: Cursor,
    },
}

/// Why a ring cannot be made or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The buffer length is not a power of two of at least 4 records' room.
    BadSize,
    /// The payload is longer than a quarter of the ring (or empty).
    BadLength,
}

/// A one-to-many ring of whole records over `B` (a `Vec<u8>`, `KVVec<u8>`...).
pub struct Ring<B> {
    buf: B,
    mask: u64,
    head: u64,
    tail: u64,
    next_seq: u64,
    tail_seq: u64,
}

/// Largest payload a ring of `size` bytes accepts: a quarter of it.
pub const fn max_payload(size: usize) -> usize {
    size / 4
}

impl<B> Ring<B>
where
    B: core::ops::Deref<Target = [u8]> + core::ops::DerefMut,
{
    /// Wraps `buf`, which must be zero-filled and a power of two long (at
    /// least 1 KiB).
    pub fn new(buf: B) -> Result<Self, RingError> {
        let len = buf.len();
        if !len.is_power_of_two() || len < 1024 {
            return Err(RingError::BadSize);
        }
        Ok(Self {
            mask: (len as u64) - 1,
            buf,
            head: 0,
            tail: 0,
            next_seq: 0,
            tail_seq: 0,
        })
    }

    /// Ring size in bytes.
    pub fn size(&self) -> u64 {
        self.mask + 1
    }

    /// Sequence number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Sequence number of the oldest record still buffered (`next_seq` when
    /// the ring is empty).
    pub fn oldest_seq(&self) -> u64 {
        self.tail_seq
    }

    /// A cursor at the oldest record still buffered.
    pub fn oldest(&self) -> Cursor {
        Cursor {
            pos: self.tail,
            seq: self.tail_seq,
        }
    }

    /// A cursor that will read only records appended from now on.
    pub fn now(&self) -> Cursor {
        Cursor {
            pos: self.head,
            seq: self.next_seq,
        }
    }

    /// A cursor at record `seq`, if it is still buffered (`seq == next_seq`
    /// gives [`Ring::now`]).
    pub fn find(&self, seq: u64) -> Option<Cursor> {
        if seq < self.tail_seq || seq > self.next_seq {
            return None;
        }
        let mut c = self.oldest();
        while c.seq < seq {
            match self.next(c) {
                Next::Record { next, .. } => c = next,
                // Unreachable while the invariants hold; refuse rather than loop.
                _ => return None,
            }
        }
        Some(c)
    }

    /// A cursor at the last `n` records (all of them if fewer are buffered).
    pub fn last(&self, n: u64) -> Cursor {
        let want = self.next_seq.saturating_sub(n).max(self.tail_seq);
        self.find(want).unwrap_or_else(|| self.now())
    }

    fn header_at(&self, pos: u64) -> RecordHeader {
        let off = (pos & self.mask) as usize;
        self.buf
            .get(off..)
            .and_then(RecordHeader::from_bytes)
            .unwrap_or_default()
    }

    /// Skips padding at `pos`: returns where the next real header starts.
    fn skip_pad(&self, pos: u64) -> u64 {
        let room = self.size() - (pos & self.mask);
        if room < HDR || self.header_at(pos).flags & PAD_FLAG != 0 {
            pos.saturating_add(room)
        } else {
            pos
        }
    }

    /// Drops the oldest record (and padding before it).
    fn evict_one(&mut self) {
        let pos = self.skip_pad(self.tail);
        if pos >= self.head {
            self.tail = self.head;
            return;
        }
        let h = self.header_at(pos);
        self.tail = pos.saturating_add(record_span(h.len as usize) as u64);
        self.tail_seq = self.tail_seq.saturating_add(1);
    }

    /// Appends one record and returns its sequence number and how many old
    /// records it evicted. `payload` must be 1..=`max_payload(size)` bytes.
    pub fn append(&mut self, payload: &[u8], stamp: Stamp) -> Result<(u64, u64), RingError> {
        let len = payload.len();
        if len == 0 || len > max_payload(self.buf.len()) {
            return Err(RingError::BadLength);
        }
        let span = record_span(len) as u64;
        let room_to_end = self.size() - (self.head & self.mask);
        let pad = if room_to_end < span { room_to_end } else { 0 };

        let mut evicted = 0;
        while self.size() - self.head.saturating_sub(self.tail) < pad + span {
            let before = self.tail_seq;
            self.evict_one();
            evicted += self.tail_seq.saturating_sub(before);
        }

        if pad >= HDR {
            let h = RecordHeader {
                len: (pad - HDR) as u32,
                flags: PAD_FLAG,
                ..RecordHeader::default()
            };
            self.write_at(self.head, &h.to_bytes());
        }
        self.head = self.head.saturating_add(pad);

        let seq = self.next_seq;
        let h = RecordHeader {
            len: len as u32,
            flags: 0,
            seq,
            timestamp_ns: stamp.timestamp_ns,
            pid: stamp.pid,
            uid: stamp.uid,
        };
        let off = (self.head & self.mask) as usize;
        self.write_at(self.head, &h.to_bytes());
        let body = off + RECORD_HEADER_SIZE;
        if let Some(dst) = self.buf.get_mut(body..off + span as usize) {
            let (data, zeros) = dst.split_at_mut(len);
            data.copy_from_slice(payload);
            zeros.fill(0);
        }
        self.head = self.head.saturating_add(span);
        self.next_seq = self.next_seq.saturating_add(1);
        Ok((seq, evicted))
    }

    fn write_at(&mut self, pos: u64, bytes: &[u8]) {
        let off = (pos & self.mask) as usize;
        if let Some(dst) = self.buf.get_mut(off..off + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }

    /// Looks at the record at `c`.
    pub fn next(&self, c: Cursor) -> Next<'_> {
        if c.seq < self.tail_seq || c.pos < self.tail {
            return Next::Lapped {
                lost: self.tail_seq.saturating_sub(c.seq),
            };
        }
        if c.seq >= self.next_seq {
            return Next::Empty;
        }
        let pos = self.skip_pad(c.pos);
        let header = self.header_at(pos);
        let off = (pos & self.mask) as usize + RECORD_HEADER_SIZE;
        let payload = self
            .buf
            .get(off..off + header.len as usize)
            .unwrap_or_default();
        Next::Record {
            header,
            payload,
            next: Cursor {
                pos: pos.saturating_add(record_span(header.len as usize) as u64),
                seq: c.seq.saturating_add(1),
            },
        }
    }
}
