// SPDX-License-Identifier: GPL-2.0
//! The record ring's bookkeeping: pure logic over positions, with no kernel
//! calls, so the same file is compiled into the module and property-tested on
//! the host (`libbaf/src/ring_tests.rs`).
//!
//! The bytes live elsewhere (`ringmem.rs` in the module, a `Vec` on the
//! host) and are reached through [`Mem`], which only reads and writes record
//! headers; payloads are copied by the caller straight between user memory
//! and the ring, with no lock held.
//!
//! Layout: records sit back to back, each a [`RecordHeader`] (stored with the
//! writer's *global* pid and raw kuid) followed by its payload and zero
//! padding to a multiple of 8 bytes. A record never wraps around the end of
//! the buffer: when it would, the rest of the buffer is skipped (marked by a
//! header with [`RECORD_FLAG_PAD`] when there is room for one). A slot whose
//! copy faulted also becomes a pad. So every payload is one contiguous slice,
//! which is what makes a read-only `mmap` view simple.
//!
//! Positions (`head`, `tail`, cursors) are byte offsets that only grow; the
//! buffer index is `pos & mask`. With 64-bit positions and sequence numbers,
//! wrapping would take centuries at memory speed; arithmetic on them is
//! still checked or saturating, never silently wrapping.
//!
//! Writing is in two steps so that nobody holds a lock while user memory is
//! copied: [`Ring::reserve`] (under the topic lock) evicts the oldest records
//! until the new one fits and moves the tail *before* anything is
//! overwritten; the caller copies the payload; [`Ring::commit`] (under the
//! lock again) writes the header and moves the head, so readers see the
//! record only once it is complete. [`Ring::abort`] turns the slot into a
//! pad instead, and sequence numbers stay dense. One reservation at a time:
//! writers of a topic are serialised by the caller.
//!
//! Seeking by sequence number uses a sparse index (the position of every
//! [`INDEX_STRIDE`]-th record), so it reads at most `INDEX_STRIDE` headers.

pub use crate::abi::RECORD_FLAG_PAD as PAD_FLAG;
use crate::abi::{check_frame, record_span, FrameError, RecordHeader, RECORD_HEADER_SIZE};

#[path = "stamper.rs"]
mod stamper;
pub use stamper::Stamper;

const HDR: u64 = RECORD_HEADER_SIZE as u64;

/// Every `INDEX_STRIDE`-th sequence number has its position indexed.
pub const INDEX_STRIDE: u64 = 64;

/// Where the ring's bytes are: header access at a buffer offset.
pub trait Mem {
    /// The header stored at `off` (`off + RECORD_HEADER_SIZE <= size`).
    fn header(&self, off: usize) -> RecordHeader;
    /// Stores `h` at `off` (`off + RECORD_HEADER_SIZE <= size`).
    fn set_header(&self, off: usize, h: &RecordHeader);
    /// Zeroes `len` bytes at `off` (the padding after a payload).
    fn zero(&self, off: usize, len: usize);
    /// Copies the payload `src` to `off` (8-aligned) and zeroes what
    /// follows it up to the next multiple of 8 bytes (its padding); false,
    /// with nothing written, if that is not inside the ring.
    fn put(&self, off: usize, src: &[u8]) -> bool;
    /// Called when a reservation has evicted records, before the ring writes
    /// anything into the room they left: a reader that copies without the
    /// lock must be able to see the new tail before any byte below it
    /// changes (the module publishes it to readers here).
    fn evicted(&self, _tail: u64, _tail_seq: u64) {}
}

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
    /// Writer's identity: its pidfs inode number (ABI 4).
    pub writer: u64,
}

/// Result of looking at a cursor's next record.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
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
        /// Buffer offset of the payload (contiguous, `header.len` bytes).
        off: usize,
        /// The cursor to continue from.
        next: Cursor,
    },
}

/// Why a ring cannot be made or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The buffer length is not a power of two of at least 1 KiB, or the
    /// index is too small for it.
    BadSize,
    /// The payload is longer than a quarter of the ring (or empty).
    BadLength,
    /// Another reservation is still open.
    Busy,
    /// The room can only be made by evicting a record at or after the
    /// floor (a lossless reader has not read it): the writer must wait.
    Full,
}

/// The floor when no lossless reader holds records: anything may be evicted.
pub const NO_FLOOR: u64 = u64::MAX;

/// Space reserved for one record by [`Ring::reserve`].
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Position of the record's header.
    pub pos: u64,
    /// Payload length.
    pub len: usize,
    /// Records evicted to make room.
    pub evicted: u64,
}

impl Reservation {
    /// Buffer offset where the payload goes, given the ring's mask.
    pub fn payload_off(&self, mask: u64) -> usize {
        ((self.pos & mask) + HDR) as usize
    }
}

/// Contiguous space reserved for a batch by [`Ring::reserve_bytes`].
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Position of the first byte.
    pub pos: u64,
    /// Bytes reserved.
    pub len: u64,
    /// The sequence number the chunk's first record gets: the ring's next
    /// one when the chunk was reserved (nothing else is published while it
    /// is open).
    pub seq: u64,
}

/// The header of a committed record: `len` payload bytes, sequence number
/// `seq`, stamped with `stamp`.
fn stamped(len: usize, seq: u64, stamp: Stamp) -> RecordHeader {
    RecordHeader {
        len: len as u32,
        flags: 0,
        seq,
        timestamp_ns: stamp.timestamp_ns,
        pid: stamp.pid,
        uid: stamp.uid,
        writer: stamp.writer,
    }
}

/// How [`Ring::commit_frames`] ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Frames {
    /// Records published.
    pub records: u64,
    /// Payload bytes published.
    pub bytes: u64,
    /// Bytes of the chunk they took (whole frames, padding included).
    pub used: u64,
    /// Why it stopped before the end of what was copied: a bad frame, or
    /// `None` when the rest is only the start of a frame.
    pub error: Option<FrameError>,
}

/// Largest payload a ring of `size` bytes accepts: a quarter of it.
pub const fn max_payload(size: usize) -> usize {
    size / 4
}

/// Entries the sparse index needs for a ring of `size` bytes: one per
/// [`INDEX_STRIDE`] of the most records the ring can hold, plus two, rounded
/// up to a power of two.
pub const fn index_len(size: usize) -> usize {
    let most = size / record_span(1);
    (most / INDEX_STRIDE as usize + 2).next_power_of_two()
}

/// A one-to-many ring of whole records; `I` is the sparse index storage.
pub struct Ring<I> {
    mask: u64,
    /// End of the newest committed record.
    head: u64,
    /// End of the open reservation (`head` when there is none).
    reserved: u64,
    tail: u64,
    next_seq: u64,
    tail_seq: u64,
    index: I,
}

impl<I> Ring<I>
where
    I: core::ops::Deref<Target = [u64]> + core::ops::DerefMut,
{
    /// A ring of `size` bytes (a power of two, at least 1 KiB) whose memory
    /// is zero-filled; `index` must hold [`index_len`]`(size)` entries.
    pub fn new(size: usize, index: I) -> Result<Self, RingError> {
        if !size.is_power_of_two() || size < 1024 || index.len() < index_len(size) {
            return Err(RingError::BadSize);
        }
        Ok(Self {
            mask: (size as u64) - 1,
            head: 0,
            reserved: 0,
            tail: 0,
            next_seq: 0,
            tail_seq: 0,
            index,
        })
    }

    /// Ring size in bytes.
    pub fn size(&self) -> u64 {
        self.mask + 1
    }

    /// `size - 1`: buffer offset of a position is `pos & mask`.
    pub fn mask(&self) -> u64 {
        self.mask
    }

    /// Position just past the newest committed record.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Position of the oldest record still intact.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Sequence number the next committed record gets.
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

    /// A cursor that will read only records committed from now on.
    pub fn now(&self) -> Cursor {
        Cursor {
            pos: self.head,
            seq: self.next_seq,
        }
    }

    fn slot(&self, seq: u64) -> usize {
        ((seq / INDEX_STRIDE) & (self.index.len() as u64 - 1)) as usize
    }

    /// A cursor at record `seq`, if it is still buffered (`seq == next_seq`
    /// gives [`Ring::now`]). Reads at most [`INDEX_STRIDE`] headers.
    pub fn find<M: Mem>(&self, mem: &M, seq: u64) -> Option<Cursor> {
        if seq < self.tail_seq || seq > self.next_seq {
            return None;
        }
        if seq == self.next_seq {
            return Some(self.now());
        }
        let base = seq - seq % INDEX_STRIDE;
        let mut c = if base >= self.tail_seq {
            let pos = *self.index.get(self.slot(base))?;
            Cursor { pos, seq: base }
        } else {
            self.oldest()
        };
        while c.seq < seq {
            match self.next(mem, c) {
                Next::Record { next, .. } => c = next,
                // Unreachable while the invariants hold; refuse rather than loop.
                _ => return None,
            }
        }
        Some(c)
    }

    /// A cursor at the last `n` records (all of them if fewer are buffered).
    pub fn last<M: Mem>(&self, mem: &M, n: u64) -> Cursor {
        let want = self.next_seq.saturating_sub(n).max(self.tail_seq);
        self.find(mem, want).unwrap_or_else(|| self.now())
    }

    /// Skips padding at `pos`: returns where the next real header starts
    /// (or `limit`, if the padding reaches it).
    fn skip_pad<M: Mem>(&self, mem: &M, pos: u64, limit: u64) -> u64 {
        self.next_record(mem, pos, limit).0
    }

    /// [`Ring::skip_pad`], with the payload length of the record found
    /// there (0 when the padding reaches `limit`), from the one read of its
    /// header.
    fn next_record<M: Mem>(&self, mem: &M, mut pos: u64, limit: u64) -> (u64, u32) {
        while pos < limit {
            let off = pos & self.mask;
            let room = self.size() - off;
            if room < HDR {
                pos = pos.saturating_add(room);
                continue;
            }
            let h = mem.header(off as usize);
            if h.flags & PAD_FLAG == 0 {
                return (pos, h.len);
            }
            pos = pos.saturating_add((record_span(h.len as usize) as u64).min(room));
        }
        (pos, 0)
    }

    /// Reserves room for a record of `len` bytes (1..=`max_payload(size)`)
    /// after the newest one, evicting the oldest records as needed but none
    /// that starts at or after `floor` (the oldest position a lossless reader
    /// still needs; [`NO_FLOOR`] if none): [`RingError::Full`] when that is
    /// not enough, with nothing changed. When this returns a reservation,
    /// [`Ring::tail`] is past everything the caller may overwrite, and
    /// [`Mem::evicted`] has been told so before the ring wrote anything (an
    /// end-of-ring pad header).
    pub fn reserve<M: Mem>(
        &mut self,
        mem: &M,
        len: usize,
        floor: u64,
    ) -> Result<Reservation, RingError> {
        if len == 0 || len > max_payload(self.size() as usize) {
            return Err(RingError::BadLength);
        }
        if self.reserved != self.head {
            return Err(RingError::Busy);
        }
        let span = record_span(len) as u64;
        let pad = self.end_pad(span);
        let planned = self
            .plan(mem, pad + span, floor)
            .map_err(|_| RingError::Full)?;
        let (pos, evicted) = self.make_room(mem, pad, span, planned);
        Ok(Reservation { pos, len, evicted })
    }

    /// Bytes left unused at the end of the ring before a record of `span`
    /// bytes, which never wraps: all of them if it does not fit, else none.
    fn end_pad(&self, span: u64) -> u64 {
        let room_to_end = self.size() - (self.head & self.mask);
        if room_to_end < span {
            room_to_end
        } else {
            0
        }
    }

    /// Whether a record of `len` bytes could be reserved now without
    /// evicting anything at or after `floor`.
    pub fn room_for<M: Mem>(&self, mem: &M, len: usize, floor: u64) -> bool {
        let span = record_span(len) as u64;
        self.plan(mem, self.end_pad(span) + span, floor).is_ok()
    }

    /// Where the tail would be after evicting the oldest records until
    /// `need` bytes are free after the head, evicting no record that starts
    /// at or after `floor`: `Ok((tail, tail_seq))`, or `Err(free)`, the most
    /// bytes that can be freed. Changes nothing.
    fn plan<M: Mem>(&self, mem: &M, need: u64, floor: u64) -> Result<(u64, u64), u64> {
        let (mut tail, mut seq) = (self.tail, self.tail_seq);
        loop {
            let free = self.size() - self.head.saturating_sub(tail);
            if free >= need {
                return Ok((tail, seq));
            }
            // A stride at a time while that is not yet enough: the next
            // indexed record starts after every record before it, so if
            // freeing up to it is still too little, and it starts at or
            // before the floor, each of those records would be evicted one
            // by one anyway (a big reservation, such as a batch's or a
            // line-mode block's, evicts hundreds of small records).
            let next = (seq / INDEX_STRIDE)
                .saturating_add(1)
                .saturating_mul(INDEX_STRIDE);
            if next < self.next_seq {
                if let Some(&pos) = self.index.get(self.slot(next)) {
                    if pos > tail
                        && pos <= floor
                        && self.size() - self.head.saturating_sub(pos) < need
                    {
                        tail = pos;
                        seq = next;
                        continue;
                    }
                }
            }
            let (start, len) = self.next_record(mem, tail, self.head);
            if start >= self.head {
                // Only padding is left: all of the ring is free.
                return Ok((self.head, seq));
            }
            if start >= floor {
                // Padding before the floor's record can still go.
                return Err(self.size() - (self.head - start));
            }
            tail = start.saturating_add(record_span(len as usize) as u64);
            seq = seq.saturating_add(1);
        }
    }

    /// Evicts the oldest records up to `planned`, the tail and its
    /// sequence number that [`Ring::plan`] gave for `pad + len` bytes, tells
    /// `mem` the new tail before writing anything, marks the `pad` bytes at
    /// the end of the ring as padding, and reserves `len` bytes after them.
    /// Returns the reserved position and the records evicted.
    fn make_room<M: Mem>(
        &mut self,
        mem: &M,
        pad: u64,
        len: u64,
        planned: (u64, u64),
    ) -> (u64, u64) {
        let before = self.tail_seq;
        let (tail, tail_seq) = planned;
        self.tail = tail;
        self.tail_seq = tail_seq;
        mem.evicted(self.tail, self.tail_seq);
        if pad >= HDR {
            let h = RecordHeader {
                len: (pad - HDR) as u32,
                flags: PAD_FLAG,
                ..RecordHeader::default()
            };
            mem.set_header((self.head & self.mask) as usize, &h);
        }
        let pos = self.head.saturating_add(pad);
        self.reserved = pos.saturating_add(len);
        (pos, self.tail_seq - before)
    }

    /// Where the tail has to be for a record of `len` bytes to fit after the
    /// head, whatever it evicts: a reader below it is lapped by that record.
    /// Changes nothing.
    pub fn tail_for<M: Mem>(&self, mem: &M, len: usize) -> u64 {
        let span = record_span(len) as u64;
        match self.plan(mem, self.end_pad(span) + span, NO_FLOOR) {
            Ok((tail, _)) => tail,
            Err(_) => self.head,
        }
    }

    /// Gives up the open reservation (or chunk) without publishing
    /// anything: the head stays where it is, so no reader ever sees what
    /// was copied into it.
    pub fn cancel(&mut self) {
        self.reserved = self.head;
    }

    /// Publishes the reserved record, whose payload the caller has copied in;
    /// returns its sequence number.
    pub fn commit<M: Mem>(&mut self, mem: &M, r: &Reservation, stamp: Stamp) -> u64 {
        let seq = self.stamp_record(mem, r.pos, r.len, stamp);
        self.head = self.reserved;
        seq
    }

    /// Makes the bytes at `pos` (a payload of `len` bytes already in place)
    /// the next record: zeroes its padding, writes its header and indexes
    /// it. Returns its sequence number.
    fn stamp_record<M: Mem>(&mut self, mem: &M, pos: u64, len: usize, stamp: Stamp) -> u64 {
        let seq = self.next_seq;
        let off = (pos & self.mask) as usize;
        let span = record_span(len);
        mem.zero(
            off + RECORD_HEADER_SIZE + len,
            span - RECORD_HEADER_SIZE - len,
        );
        mem.set_header(off, &stamped(len, seq, stamp));
        if seq % INDEX_STRIDE == 0 {
            let slot = self.slot(seq);
            if let Some(e) = self.index.get_mut(slot) {
                *e = pos;
            }
        }
        self.next_seq = seq.saturating_add(1);
        seq
    }

    /// Reserves contiguous room for a batch of frames copied in one go:
    /// `want` bytes, or fewer where the ring's end comes first, but at least
    /// `min` (the caller passes the span of a largest frame, so any valid
    /// frame fits): if less than `min` is left before the end, the rest of
    /// the ring is padded and the chunk starts at its beginning. `want` and
    /// `min` must be at most half the ring. Evicts as [`Ring::reserve`] does;
    /// when the `floor` leaves less than `want` but at least `min` (or
    /// `want`, if smaller), the chunk is shortened to what is free, else
    /// [`RingError::Full`].
    pub fn reserve_bytes<M: Mem>(
        &mut self,
        mem: &M,
        want: u64,
        min: u64,
        floor: u64,
    ) -> Result<Chunk, RingError> {
        if want == 0 || want > self.size() / 2 || min > self.size() / 2 {
            return Err(RingError::BadLength);
        }
        if self.reserved != self.head {
            return Err(RingError::Busy);
        }
        let need = min.min(want);
        let room_to_end = self.size() - (self.head & self.mask);
        let (pad, room) = if room_to_end < need {
            (room_to_end, self.size())
        } else {
            (0, room_to_end)
        };
        let mut len = want.min(room);
        let planned = match self.plan(mem, pad + len, floor) {
            Ok(planned) => planned,
            Err(free) => {
                // Frames are multiples of 8 bytes.
                let fits = free.saturating_sub(pad) & !7;
                if fits < need {
                    return Err(RingError::Full);
                }
                len = len.min(fits);
                self.plan(mem, pad + len, floor)
                    .map_err(|_| RingError::Full)?
            }
        };
        let (pos, _) = self.make_room(mem, pad, len, planned);
        Ok(Chunk {
            pos,
            len,
            seq: self.next_seq,
        })
    }

    /// Publishes the whole, valid frames at the start of a chunk whose first
    /// `copied` bytes the caller has copied in: fills in each header's
    /// sequence number and stamp, zeroes its padding, and moves the head past
    /// the last one. What follows them is given back (the next reservation
    /// starts there). Stops at the first bad frame, or at a frame that is
    /// not all there.
    pub fn commit_frames<M: Mem>(
        &mut self,
        mem: &M,
        c: &Chunk,
        copied: u64,
        record_max: usize,
        stamp: Stamp,
    ) -> Frames {
        let end = c.pos.saturating_add(copied.min(c.len));
        let mut off = c.pos;
        let mut done = Frames {
            records: 0,
            bytes: 0,
            used: 0,
            error: None,
        };
        while off.saturating_add(HDR) <= end {
            let at = (off & self.mask) as usize;
            let h = mem.header(at);
            let (len, span) = match check_frame(&h, (end - off) as usize, record_max) {
                Ok(v) => v,
                Err(FrameError::Truncated) => break,
                Err(e) => {
                    done.error = Some(e);
                    break;
                }
            };
            self.stamp_record(mem, off, len, stamp);
            off += span as u64;
            done.records += 1;
            done.bytes += len as u64;
        }
        done.used = off - c.pos;
        if done.records > 0 {
            self.head = off;
        }
        self.reserved = self.head;
        done
    }

    /// Gives up the reservation (the payload copy failed): the slot becomes
    /// padding, and no sequence number is used.
    pub fn abort<M: Mem>(&mut self, mem: &M, r: &Reservation) {
        mem.set_header(
            (r.pos & self.mask) as usize,
            &RecordHeader {
                len: (record_span(r.len) - RECORD_HEADER_SIZE) as u32,
                flags: PAD_FLAG,
                ..RecordHeader::default()
            },
        );
        self.head = self.reserved;
    }

    /// Looks at the record at `c` (which must be at or after a record
    /// boundary at or after the tail, or be lapped).
    pub fn next<M: Mem>(&self, mem: &M, c: Cursor) -> Next {
        if c.seq < self.tail_seq || c.pos < self.tail {
            return Next::Lapped {
                lost: self.tail_seq.saturating_sub(c.seq),
            };
        }
        if c.seq >= self.next_seq {
            return Next::Empty;
        }
        let pos = self.skip_pad(mem, c.pos, self.head);
        if pos >= self.head {
            return Next::Empty;
        }
        let off = (pos & self.mask) as usize;
        let header = mem.header(off);
        Next::Record {
            header,
            off: off + RECORD_HEADER_SIZE,
            next: Cursor {
                pos: pos.saturating_add(record_span(header.len as usize) as u64),
                seq: c.seq.saturating_add(1),
            },
        }
    }
}
