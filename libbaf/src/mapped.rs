//! Reading a topic through a read-only mapping of its ring (ABI 2), with no
//! system call per batch.
//!
//! `mmap(NULL, page_size + ring_size, PROT_READ, MAP_SHARED, fd, 0)` of a
//! topic file gives the control page (`abi::CTRL_*` offsets) and the ring's
//! bytes. The kernel writes both while we read them, so the mapping is only
//! ever touched through raw pointers, with atomic loads (control page) and
//! volatile loads (ring bytes), never through a Rust reference.
//!
//! # The consumer protocol
//!
//! The consumer's state is `(pos, seq)`: the position (an ever-growing byte
//! offset; ring offset `pos & (ring_size - 1)`) and sequence number of the
//! next record it wants. One batch ([`Mapped::read_into`]):
//!
//! 1. Load `CTRL_FLAGS`, then `CTRL_HEAD` with acquire (it is stored with
//!    release after the record bytes below it). `pos == head`: nothing new;
//!    the end of the stream if the flags had `CTRL_FLAG_REMOVED`.
//! 2. Load `CTRL_TAIL`. `pos < tail`: the consumer was lapped; it goes on
//!    from `tail`, and learns the sequence number there from the first real
//!    record's header: `that_seq - seq` records were lost.
//! 3. Copy `[pos, min(head, pos + chunk))` out of the ring into a private
//!    buffer (volatile word loads).
//! 4. Read barrier (`fence(Acquire)`), and load `CTRL_TAIL` again. The
//!    kernel stores a new tail (then a write barrier) *before* it overwrites
//!    anything below it, so every copied byte at a position at or above this
//!    second tail was intact. If the tail passed `pos`, the part below it is
//!    dropped and the consumer is lapped (step 2, from the new tail, loss
//!    counted from the header seqs); what was copied above the new tail is
//!    still good.
//! 5. Walk the private copy: less than a header's room before the end of the
//!    ring is skipped, a header with `RECORD_FLAG_PAD` means "skip
//!    `record_span(len)` bytes", every other header is a record (`len` in
//!    `1..=record_max`, not crossing the end of the ring, its seq the
//!    expected one), handed to the caller with its payload. Since the copy
//!    was validated before this walk, a bad header here is not a race but
//!    broken memory: `InvalidData`, rather than looping forever.
//!
//! Nothing is delivered before step 4 says it is intact, so the caller never
//! has to take output back.
//!
//! # Waiting
//!
//! `poll`/`epoll` on the topic file report `POLLIN` from the file's own
//! kernel cursor, which mapped reading does not move. Before sleeping, call
//! [`Mapped::prepare_wait`]: it seeks the file to the consumer's next seq
//! (`IOC_SEEK`, `SEEK_SEQ`), after which `POLLIN` means "a record with that
//! seq or later exists". It says not to sleep when that seq is gone
//! (`ERANGE`: lapped meanwhile): read again instead.
//!
//! # Where a new mapping starts
//!
//! At the file's cursor (`Info::cursor_seq`), so that seeking the file
//! first (`--from oldest|last:N|seq:S`) works. The consumer starts at a
//! record boundary known to be at or before that seq (the head, if the
//! cursor is at or past the control page's next seq, else the tail) and
//! skips, without delivering them, the records older than the cursor.

use crate::abi::{self, RecordHeader, RECORD_HEADER_SIZE};
use crate::device::Topic;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

const HDR: u64 = RECORD_HEADER_SIZE as u64;

/// Bytes copied out of the ring per batch (more when a single record is
/// larger).
const CHUNK: usize = 256 * 1024;

/// Most rounds (laps, skipped stretches, a head load lagging behind a tail
/// load) in one [`Mapped::read_into`] call before it returns with nothing
/// delivered, to let its caller breathe.
const MAX_ROUNDS: usize = 1024;

/// What one [`Mapped::read_into`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Records handed to the formatting closure.
    pub records: u64,
    /// Records lost to overrun (gaps in the sequence numbers) before them.
    pub lost: u64,
    /// The topic was removed and everything in it was read: the end.
    pub ended: bool,
}

/// Who keeps the mapped memory alive.
enum Owner {
    Map {
        _map: memmap2::Mmap,
    },
    #[cfg(test)]
    Fake {
        _fake: std::rc::Rc<tests::Fake>,
    },
}

/// The mapped memory: `len` bytes at `base`, alive as long as `_owner`.
///
/// # Invariants
///
/// `base..base + len` is readable for as long as this value lives, `base` is
/// 8-aligned, and the memory is never reached through a reference (other
/// code, the kernel, writes it concurrently).
struct Region {
    base: NonNull<u8>,
    len: usize,
    _owner: Owner,
}

impl Region {
    /// The `u64` at byte offset `off`, loaded atomically with `order`; 0 if
    /// `off` is out of range or unaligned.
    fn load_u64(&self, off: usize, order: Ordering) -> u64 {
        if off % 8 != 0 || off.checked_add(8).is_none_or(|end| end > self.len) {
            return 0;
        }
        // SAFETY: `off + 8 <= len` and `base` and `off` are 8-aligned, so
        // the pointer is in bounds and aligned for an `AtomicU64` (same size
        // and alignment as `u64` where 64-bit atomics exist). The memory
        // lives while `self` does (type invariant), and the reference is
        // used for this one load only, so it outlives nothing. Every other
        // access to these control-page words is atomic too (the kernel
        // stores them with its atomics, and this module only loads them
        // atomically), so there is no mixed-size or non-atomic race.
        // `from_ptr` also asks for memory valid for writes, and a mapping
        // is read-only: but nothing here ever writes, and an atomic *load*
        // is a plain load instruction on every target with native 64-bit
        // atomics (no compare-and-swap emulation), so it never faults on a
        // read-only page.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off).cast::<u64>()).load(order) }
    }

    /// The `u32` at byte offset `off`, loaded atomically; 0 if out of range
    /// or unaligned.
    fn load_u32(&self, off: usize, order: Ordering) -> u32 {
        if off % 4 != 0 || off.checked_add(4).is_none_or(|end| end > self.len) {
            return 0;
        }
        // SAFETY: As in `load_u64`, with 4-byte size and alignment (the
        // offset is checked 4-aligned and `base` is 8-aligned).
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off).cast::<u32>()).load(order) }
    }

    /// Appends the `words` 8-byte words at byte offset `off` to `dst`, each
    /// read with a volatile load. Returns false (appending nothing) when the
    /// range is out of bounds or unaligned.
    fn copy_words(&self, off: usize, words: usize, dst: &mut Vec<u8>) -> bool {
        let Some(end) = words.checked_mul(8).and_then(|b| b.checked_add(off)) else {
            return false;
        };
        if off % 8 != 0 || end > self.len {
            return false;
        }
        dst.reserve(words * 8);
        for i in 0..words {
            // SAFETY: `off + 8 * i + 8 <= end <= len` and everything is
            // 8-aligned, so this reads an in-bounds, aligned `u64` of the
            // live mapping (type invariant). The load is volatile because
            // the kernel may be writing these bytes right now: the value
            // may be torn or stale, which the caller detects afterwards
            // (the tail check), but it is never assumed to be stable.
            let w = unsafe {
                std::ptr::read_volatile(self.base.as_ptr().add(off + 8 * i).cast::<u64>())
            };
            dst.extend_from_slice(&w.to_ne_bytes());
            #[cfg(test)]
            tests::after_word(i);
        }
        true
    }
}

/// The ring range `start..end` copied into the scratch buffer, and the head
/// it was copied below.
#[derive(Clone, Copy, Debug)]
struct Copied {
    start: u64,
    end: u64,
    head: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A topic's ring, mapped read-only, and a consumer's place in it.
pub struct Mapped {
    region: Region,
    /// Ring size (a power of two).
    size: u64,
    /// Where the ring's bytes start in the mapping.
    data: usize,
    record_max: u64,
    /// Position of the next record (or padding before it).
    pos: u64,
    /// Sequence number wanted next.
    seq: u64,
    /// `seq` is the record at `pos` exactly; when false (at the start, after
    /// a lap), records older than `seq` are skipped and a newer one means
    /// loss.
    exact: bool,
    /// Records lost and not yet reported to the kernel
    /// ([`Mapped::prepare_wait`], [`Mapped::report_loss`]).
    unreported: u64,
    /// The private copy of the ring range being read.
    scratch: Vec<u8>,
    chunk: u64,
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapped")
            .field("size", &self.size)
            .field("record_max", &self.record_max)
            .field("pos", &self.pos)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Mapped {
    /// Maps `topic` (a topic file open for reading) and starts at the file's
    /// cursor. Fails with the `mmap` errno when mapping is refused (`EPERM`
    /// outside the initial namespaces, `EACCES` for a write-only file,
    /// `ENODEV` for something that is not a topic), `Unsupported` for a
    /// module older than ABI 2, and `InvalidData` for a control page that
    /// makes no sense.
    pub fn new(topic: &Topic) -> io::Result<Self> {
        let info = topic.info()?;
        crate::device::check_abi(&info)
            .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page)
            .ok()
            .filter(|p| p.is_power_of_two() && *p >= 4096)
            .ok_or_else(|| invalid(format!("odd page size {page}")))?;
        let len = usize::try_from(info.ring_size)
            .ok()
            .filter(|s| s.is_power_of_two())
            .and_then(|s| s.checked_add(page))
            .ok_or_else(|| invalid(format!("odd ring size {}", info.ring_size)))?;
        // SAFETY: memmap2's contract is that the mapped file is not changed
        // while the mapping is used as a `&[u8]`. We never do: the mapping
        // is only read through `Region`, with atomic and volatile loads of
        // raw pointers, because the kernel does change it. The mapping is
        // read-only (`PROT_READ`, `MAP_SHARED`), as the kernel requires.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(topic.file())? };
        let base = NonNull::new(map.as_ptr().cast_mut())
            .ok_or_else(|| invalid("mmap returned a null mapping".to_string()))?;
        if base.as_ptr().align_offset(8) != 0 {
            return Err(invalid("mmap returned an unaligned mapping".to_string()));
        }
        let region = Region {
            base,
            len: map.len(),
            _owner: Owner::Map { _map: map },
        };
        Self::from_region(region, info.cursor_seq)
    }

    /// Checks the control page and places the consumer at `cursor_seq`.
    fn from_region(region: Region, cursor_seq: u64) -> io::Result<Self> {
        let magic = region.load_u32(abi::CTRL_MAGIC, Ordering::Relaxed);
        if magic != abi::MMAP_MAGIC {
            return Err(invalid(format!(
                "the mapped control page has magic {magic:#x}, not {:#x}",
                abi::MMAP_MAGIC
            )));
        }
        let version = region.load_u32(abi::CTRL_ABI_VERSION, Ordering::Relaxed);
        if version < crate::device::MIN_ABI_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                crate::device::AbiMismatch {
                    found: version,
                    needed: crate::device::MIN_ABI_VERSION,
                },
            ));
        }
        let size = region.load_u64(abi::CTRL_RING_SIZE, Ordering::Relaxed);
        let data = region.load_u64(abi::CTRL_DATA_OFFSET, Ordering::Relaxed);
        let record_max = u64::from(region.load_u32(abi::CTRL_RECORD_MAX, Ordering::Relaxed));
        let header_size = region.load_u32(abi::CTRL_HEADER_SIZE, Ordering::Relaxed);
        if header_size as usize != abi::RECORD_HEADER_SIZE {
            return Err(invalid(format!(
                "the mapped ring has {header_size}-byte record headers, not {}",
                abi::RECORD_HEADER_SIZE
            )));
        }
        let fits = data
            .checked_add(size)
            .is_some_and(|end| end <= region.len as u64);
        if !size.is_power_of_two()
            || size < 1024
            || data % 8 != 0
            || data < (abi::CTRL_TAIL_SEQ + 8) as u64
            || !fits
            || record_max == 0
            || abi::record_span(record_max as usize) as u64 > size
        {
            return Err(invalid(format!(
                "the mapped control page makes no sense (ring size {size}, data at {data}, record limit {record_max}, mapping {} bytes)",
                region.len
            )));
        }
        let chunk = (CHUNK as u64)
            .max(2 * abi::record_span(record_max as usize) as u64)
            .min(size);
        let mut m = Self {
            region,
            size,
            data: data as usize,
            record_max,
            pos: 0,
            seq: cursor_seq,
            exact: false,
            unreported: 0,
            scratch: Vec::new(),
            chunk,
        };
        // The head first: the next-seq load after it is at least the seq
        // of the record at the head (it is stored before the head).
        let head = m.head();
        let head_seq = m.region.load_u64(abi::CTRL_HEAD_SEQ, Ordering::Acquire);
        m.pos = if cursor_seq >= head_seq {
            head
        } else {
            m.region.load_u64(abi::CTRL_TAIL, Ordering::Acquire)
        };
        if m.pos % 8 != 0 {
            return Err(invalid(format!("odd ring position {}", m.pos)));
        }
        Ok(m)
    }

    fn head(&self) -> u64 {
        self.region.load_u64(abi::CTRL_HEAD, Ordering::Acquire)
    }

    /// The sequence number this consumer reads next.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The topic's record limit, from the control page.
    pub fn record_max(&self) -> usize {
        self.record_max as usize
    }

    /// Whether the topic was removed (more records may still be unread).
    pub fn removed(&self) -> bool {
        self.region.load_u32(abi::CTRL_FLAGS, Ordering::Acquire) & abi::CTRL_FLAG_REMOVED != 0
    }

    /// Reads the next batch: for each new record, at most `limit` of them,
    /// calls `format(out, header, payload)`, which appends whatever it likes
    /// to `out`. The header is the ring's (the writer's global pid and kuid,
    /// which equal what `read()` reports, since mapping is only allowed in
    /// the initial namespaces); the payload is a private copy. Returns what
    /// was delivered and lost, and whether the stream ended (topic removed,
    /// all read). Nothing new gives a zero [`Progress`]: call
    /// [`Mapped::prepare_wait`] before sleeping.
    pub fn read_into<F>(
        &mut self,
        out: &mut Vec<u8>,
        limit: u64,
        mut format: F,
    ) -> io::Result<Progress>
    where
        F: FnMut(&mut Vec<u8>, &RecordHeader, &[u8]),
    {
        let mut progress = Progress::default();
        if limit == 0 {
            return Ok(progress);
        }
        for _ in 0..MAX_ROUNDS {
            // Flags before head: "removed" and then "nothing past the head"
            // means the end.
            let removed = self.region.load_u32(abi::CTRL_FLAGS, Ordering::Acquire)
                & abi::CTRL_FLAG_REMOVED
                != 0;
            let head = self.head();
            if head % 8 != 0 {
                return Err(invalid(format!("odd ring head {head}")));
            }
            if head < self.pos {
                // Our position came from a tail loaded after an older head,
                // and this head load has not caught up with it yet.
                std::hint::spin_loop();
                continue;
            }
            if head == self.pos {
                if removed && !self.exact {
                    // Lapped over nothing but padding (aborted writes) up
                    // to the final head: every record from `seq` on is
                    // gone, and the head's next seq is final once the
                    // topic is removed.
                    let next = self.region.load_u64(abi::CTRL_HEAD_SEQ, Ordering::Acquire);
                    if next > self.seq {
                        progress.lost += next - self.seq;
                        self.unreported += next - self.seq;
                        self.seq = next;
                    }
                    self.exact = true;
                }
                progress.ended = removed;
                return Ok(progress);
            }
            let tail = self.region.load_u64(abi::CTRL_TAIL, Ordering::Acquire);
            if tail % 8 != 0 {
                return Err(invalid(format!("odd ring tail {tail}")));
            }
            if self.pos < tail {
                self.pos = tail;
                self.exact = false;
                if tail >= head {
                    // The writer moved on since the head was loaded.
                    continue;
                }
            }
            let start = self.pos;
            let end = head.min(start.saturating_add(self.chunk));
            self.copy_out(start, end)?;
            // Pairs with the kernel's write barrier after it stores a tail
            // and before it overwrites anything below it.
            fence(Ordering::Acquire);
            let tail2 = self.region.load_u64(abi::CTRL_TAIL, Ordering::Relaxed);
            if tail2 % 8 != 0 {
                return Err(invalid(format!("odd ring tail {tail2}")));
            }
            if tail2 > start {
                // Lapped during the copy: what is below the new tail may be
                // torn; what is above it is good.
                self.pos = tail2;
                self.exact = false;
                if tail2 >= end {
                    continue;
                }
            }
            let delivered = progress.records;
            let copied = Copied { start, end, head };
            self.walk(copied, out, limit, &mut progress, &mut format)?;
            if progress.records > delivered || progress.records >= limit {
                return Ok(progress);
            }
            if self.pos == start {
                // Nothing at all walked from a position that was not lapped:
                // impossible, since a chunk holds at least a whole record.
                return Err(invalid(format!(
                    "no progress in the mapped ring at position {}",
                    self.pos
                )));
            }
        }
        Ok(progress)
    }

    /// Copies ring positions `start..end` (within one ring's length, both
    /// 8-aligned) into `scratch`.
    fn copy_out(&mut self, start: u64, end: u64) -> io::Result<()> {
        self.scratch.clear();
        let mask = self.size - 1;
        let total = end - start;
        let off = start & mask;
        let first = total.min(self.size - off);
        let ok = self.region.copy_words(
            self.data + off as usize,
            (first / 8) as usize,
            &mut self.scratch,
        ) && self.region.copy_words(
            self.data,
            ((total - first) / 8) as usize,
            &mut self.scratch,
        );
        if ok && end % 8 == 0 {
            Ok(())
        } else {
            Err(invalid(format!("cannot copy ring range {start}..{end}")))
        }
    }

    /// Walks the validated copy in `scratch` from `self.pos`, delivering
    /// records until `progress.records` reaches `limit`.
    fn walk<F>(
        &mut self,
        copied: Copied,
        out: &mut Vec<u8>,
        limit: u64,
        progress: &mut Progress,
        format: &mut F,
    ) -> io::Result<()>
    where
        F: FnMut(&mut Vec<u8>, &RecordHeader, &[u8]),
    {
        let Copied { start, end, head } = copied;
        let mask = self.size - 1;
        let bad = |p: u64, what: String| {
            invalid(format!(
                "the mapped ring holds a bad record at position {p}: {what}"
            ))
        };
        while self.pos < end && progress.records < limit {
            let p = self.pos;
            let room = self.size - (p & mask);
            if room < HDR {
                self.pos = p + room;
                continue;
            }
            let at = (p - start) as usize;
            let Some(h) = self
                .scratch
                .get(at..at + RECORD_HEADER_SIZE)
                .and_then(RecordHeader::from_bytes)
            else {
                break; // the header is past this chunk: next time
            };
            let len = u64::from(h.len);
            let span = abi::record_span(h.len as usize) as u64;
            if h.flags & abi::RECORD_FLAG_PAD != 0 {
                let skip = span.min(room);
                if p + skip > head {
                    return Err(bad(
                        p,
                        format!("padding of {skip} bytes past the head {head}"),
                    ));
                }
                self.pos = p + skip;
                continue;
            }
            if h.flags != 0 || len == 0 || len > self.record_max || span > room {
                return Err(bad(
                    p,
                    format!(
                        "flags {:#x}, length {len}, {room} bytes to the end of the ring",
                        h.flags
                    ),
                ));
            }
            if p + span > end {
                if end == head {
                    return Err(bad(p, format!("{span} bytes long, past the head {head}")));
                }
                break; // the record is past this chunk: next time
            }
            if self.exact {
                if h.seq != self.seq {
                    return Err(bad(
                        p,
                        format!("seq {} where {} was expected", h.seq, self.seq),
                    ));
                }
            } else if h.seq < self.seq {
                // Older than where this reader starts: skip it.
                self.pos = p + span;
                continue;
            } else {
                progress.lost += h.seq - self.seq;
                self.unreported += h.seq - self.seq;
                self.seq = h.seq;
                self.exact = true;
            }
            let payload = self
                .scratch
                .get(at + RECORD_HEADER_SIZE..at + RECORD_HEADER_SIZE + h.len as usize)
                .unwrap_or_default();
            format(out, &h, payload);
            progress.records += 1;
            self.seq = h.seq.saturating_add(1);
            self.pos = p + span;
        }
        Ok(())
    }

    /// Call before sleeping in `poll`/`epoll` on `topic` (the file this was
    /// mapped from): reports this consumer's next seq and its unreported
    /// loss to the kernel (`IOC_MAPPED_SYNC`), which counts the loss for the
    /// file and the topic and moves the file's cursor there, so `POLLIN`
    /// means that record (or a later one) exists. Returns false when it must
    /// not sleep: that seq is no longer buffered (lapped since the last
    /// read), so read again first.
    ///
    /// After a lap over nothing but padding (aborted writes), this consumer
    /// is at the head but does not know the seq there yet (the next record
    /// will tell it, and so the exact loss): the kernel then moves the
    /// file's cursor to the oldest record, so `POLLIN` is right, and this
    /// says it may sleep rather than have its caller spin.
    pub fn prepare_wait(&mut self, topic: &Topic) -> io::Result<bool> {
        loop {
            match topic.mapped_sync(self.seq, self.unreported) {
                Ok(lapped) => {
                    self.unreported = 0;
                    return Ok(self.may_sleep(lapped));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether to sleep after a sync that said `lapped`: not when this
    /// consumer knows exactly where it is (read again first), but after a
    /// lap over padding, where reading again finds nothing until a record
    /// comes.
    fn may_sleep(&self, lapped: bool) -> bool {
        !lapped || !self.exact
    }

    /// Reports loss counted since the last report to the kernel at once
    /// (as [`Mapped::prepare_wait`] does before sleeping), so the file's and
    /// the topic's loss counts are right while this consumer is busy.
    pub fn report_loss(&mut self, topic: &Topic) -> io::Result<()> {
        if self.unreported > 0 {
            self.prepare_wait(topic)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The consumer over a fake mapping in a `Vec`, written by the module's
    //! own ring logic (`kernel/ring.rs`) the way the module writes it.

    use super::*;
    use crate::ring::{index_len, Mem, Ring, Stamp};
    use proptest::prelude::*;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    const DATA: usize = 4096;

    /// A fake mapping: control page and ring in 8-byte cells.
    pub(super) struct Fake {
        words: Box<[Cell<u64>]>,
    }

    impl Fake {
        fn new(size: usize, record_max: u32) -> Rc<Self> {
            let f = Rc::new(Self {
                words: (0..(DATA + size) / 8).map(|_| Cell::new(0)).collect(),
            });
            f.set_u32(abi::CTRL_MAGIC, abi::MMAP_MAGIC);
            f.set_u32(abi::CTRL_ABI_VERSION, abi::ABI_VERSION);
            f.set_u64(abi::CTRL_RING_SIZE, size as u64);
            f.set_u64(abi::CTRL_DATA_OFFSET, DATA as u64);
            f.set_u32(abi::CTRL_RECORD_MAX, record_max);
            f.set_u32(abi::CTRL_HEADER_SIZE, abi::RECORD_HEADER_SIZE as u32);
            f
        }

        fn bytes(&self, off: usize, len: usize) -> Vec<u8> {
            (off..off + len)
                .map(|i| self.words[i / 8].get().to_ne_bytes()[i % 8])
                .collect()
        }

        fn write(&self, off: usize, data: &[u8]) {
            for (k, &b) in data.iter().enumerate() {
                let i = off + k;
                let cell = &self.words[i / 8];
                let mut w = cell.get().to_ne_bytes();
                w[i % 8] = b;
                cell.set(u64::from_ne_bytes(w));
            }
        }

        fn set_u64(&self, off: usize, v: u64) {
            self.words[off / 8].set(v);
        }

        fn set_u32(&self, off: usize, v: u32) {
            self.write(off, &v.to_ne_bytes());
        }

        fn region(self: &Rc<Self>) -> Region {
            Region {
                base: NonNull::new(self.words.as_ptr().cast_mut().cast::<u8>()).unwrap(),
                len: self.words.len() * 8,
                _owner: Owner::Fake {
                    _fake: self.clone(),
                },
            }
        }
    }

    /// The ring's bytes inside the fake mapping.
    struct RingBytes(Rc<Fake>);

    impl Mem for RingBytes {
        fn header(&self, off: usize) -> RecordHeader {
            RecordHeader::from_bytes(&self.0.bytes(DATA + off, RECORD_HEADER_SIZE)).unwrap()
        }
        fn set_header(&self, off: usize, h: &RecordHeader) {
            self.0.write(DATA + off, &h.to_bytes());
        }
        fn zero(&self, off: usize, len: usize) {
            self.0.write(DATA + off, &vec![0; len]);
        }
    }

    /// A writer doing what the module does: reserve (and publish the tail),
    /// copy the payload, commit (and publish the head).
    struct Writer {
        fake: Rc<Fake>,
        ring: Ring<Vec<u64>>,
        mem: RingBytes,
        /// Every committed payload, by seq.
        sent: Vec<Vec<u8>>,
    }

    impl Writer {
        fn new(size: usize) -> Self {
            let fake = Fake::new(size, (size / 4) as u32);
            Self {
                mem: RingBytes(fake.clone()),
                fake,
                ring: Ring::new(size, vec![0; index_len(size)]).unwrap(),
                sent: Vec::new(),
            }
        }

        fn payload(seq: u64, len: usize) -> Vec<u8> {
            (0..len)
                .map(|i| (seq as u8).wrapping_mul(31) ^ i as u8)
                .collect()
        }

        /// Appends a record of `len` bytes (or a faulted write, `abort`).
        fn append(&mut self, len: usize, abort: bool) {
            let seq = self.ring.next_seq();
            let data = Self::payload(seq, len);
            let r = self
                .ring
                .reserve(&self.mem, len, crate::ring::NO_FLOOR)
                .unwrap();
            self.fake
                .set_u64(abi::CTRL_TAIL_SEQ, self.ring.oldest_seq());
            self.fake.set_u64(abi::CTRL_TAIL, self.ring.tail());
            let off = r.payload_off(self.ring.mask());
            if abort {
                self.fake.write(DATA + off, &data[..len / 2]);
                self.ring.abort(&self.mem, &r);
            } else {
                self.fake.write(DATA + off, &data);
                self.ring.commit(
                    &self.mem,
                    &r,
                    Stamp {
                        timestamp_ns: seq,
                        pid: 1,
                        uid: 2,
                        writer: 3,
                    },
                );
                self.sent.push(data);
            }
            self.fake.set_u64(abi::CTRL_HEAD_SEQ, self.ring.next_seq());
            self.fake.set_u64(abi::CTRL_HEAD, self.ring.head());
        }

        fn remove(&self) {
            self.fake.set_u32(abi::CTRL_FLAGS, abi::CTRL_FLAG_REMOVED);
        }

        fn mapped(&self, cursor_seq: u64) -> Mapped {
            Mapped::from_region(self.fake.region(), cursor_seq).unwrap()
        }
    }

    /// A test hook, run after the `i`-th word of each copy.
    type Hook = Box<dyn FnMut(usize)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = RefCell::new(None);
    }

    pub(super) fn after_word(i: usize) {
        HOOK.with(|h| {
            if let Ok(mut h) = h.try_borrow_mut() {
                if let Some(f) = h.as_mut() {
                    f(i);
                }
            }
        });
    }

    fn set_hook(f: Option<Hook>) {
        HOOK.with(|h| *h.borrow_mut() = f);
    }

    /// One delivered record.
    #[derive(Debug, PartialEq)]
    struct Got {
        seq: u64,
        payload: Vec<u8>,
    }

    /// Reads everything available; returns the records, the loss, and
    /// whether the stream ended.
    fn drain(m: &mut Mapped, limit: u64) -> (Vec<Got>, u64, bool) {
        let mut got = Vec::new();
        let mut lost = 0;
        let mut out = Vec::new();
        loop {
            let p = m
                .read_into(&mut out, limit, |out, h, payload| {
                    out.extend_from_slice(&h.seq.to_ne_bytes());
                    out.extend_from_slice(&(payload.len() as u64).to_ne_bytes());
                    out.extend_from_slice(payload);
                })
                .unwrap();
            lost += p.lost;
            if p.records == 0 {
                let mut rest = &out[..];
                while !rest.is_empty() {
                    let seq = u64::from_ne_bytes(rest[..8].try_into().unwrap());
                    let len = u64::from_ne_bytes(rest[8..16].try_into().unwrap()) as usize;
                    got.push(Got {
                        seq,
                        payload: rest[16..16 + len].to_vec(),
                    });
                    rest = &rest[16 + len..];
                }
                return (got, lost, p.ended);
            }
        }
    }

    fn check(w: &Writer, got: &[Got]) {
        for g in got {
            assert_eq!(g.payload, w.sent[g.seq as usize], "payload of {}", g.seq);
        }
        assert!(got.windows(2).all(|p| p[0].seq < p[1].seq));
    }

    #[test]
    fn reads_records_in_order_then_ends_when_removed() {
        let mut w = Writer::new(4096);
        let mut m = w.mapped(0);
        assert_eq!(drain(&mut m, u64::MAX), (vec![], 0, false));
        for len in [1, 5, 8, 100, 3] {
            w.append(len, false);
        }
        let (got, lost, ended) = drain(&mut m, u64::MAX);
        assert_eq!(got.len(), 5);
        assert_eq!((lost, ended), (0, false));
        check(&w, &got);
        assert_eq!(m.next_seq(), 5);
        w.append(7, false);
        w.remove();
        assert!(m.removed());
        let (got, _, ended) = drain(&mut m, u64::MAX);
        assert_eq!(
            (got.len(), ended),
            (1, true),
            "the last record, then the end"
        );
        assert!(drain(&mut m, u64::MAX).2);
    }

    #[test]
    fn limit_is_respected() {
        let mut w = Writer::new(4096);
        let mut m = w.mapped(0);
        for _ in 0..10 {
            w.append(10, false);
        }
        let mut out = Vec::new();
        let p = m.read_into(&mut out, 3, |o, _, _| o.push(1)).unwrap();
        assert_eq!((p.records, out.len()), (3, 3));
        assert_eq!(m.next_seq(), 3);
        let p = m.read_into(&mut out, 0, |o, _, _| o.push(1)).unwrap();
        assert_eq!(p, Progress::default());
        let (got, _, _) = drain(&mut m, u64::MAX);
        assert_eq!(got.first().map(|g| g.seq), Some(3));
        assert_eq!(got.len(), 7);
    }

    #[test]
    fn pads_and_aborts_are_skipped() {
        let mut w = Writer::new(1024);
        let mut m = w.mapped(0);
        let mut all = Vec::new();
        for i in 0..200 {
            w.append(1 + (i * 37) % 200, i % 5 == 3);
            if i % 3 == 0 {
                let (got, lost, _) = drain(&mut m, u64::MAX);
                assert_eq!(lost, 0);
                all.extend(got);
            }
        }
        all.extend(drain(&mut m, u64::MAX).0);
        check(&w, &all);
        assert_eq!(all.len(), w.sent.len());
        assert!(all.iter().enumerate().all(|(i, g)| g.seq == i as u64));
    }

    #[test]
    fn lapped_reader_counts_exact_loss() {
        let mut w = Writer::new(1024);
        let mut m = w.mapped(0);
        for _ in 0..100 {
            w.append(50, false);
        }
        let (got, lost, _) = drain(&mut m, u64::MAX);
        check(&w, &got);
        assert_eq!(got.first().map(|g| g.seq), Some(w.ring.oldest_seq()));
        assert_eq!(lost, w.ring.oldest_seq());
        assert_eq!(got.len() as u64 + lost, 100);
    }

    #[test]
    fn a_lap_over_padding_counts_exact_loss_and_does_not_spin() {
        let mut w = Writer::new(1024);
        let mut m = w.mapped(0);
        for _ in 0..3 {
            w.append(50, false);
        }
        // Aborted writes lap the reader: nothing but padding is left.
        for _ in 0..20 {
            w.append(200, true);
        }
        let (got, lost, ended) = drain(&mut m, u64::MAX);
        assert!(got.is_empty() && lost == 0 && !ended);
        // The sync says "lapped"; the consumer may sleep all the same.
        assert!(m.may_sleep(true));
        // The next record tells the exact loss.
        w.append(50, false);
        let (got, lost, _) = drain(&mut m, u64::MAX);
        assert_eq!((got.len(), lost), (1, 3));
        check(&w, &got);
        assert!(!m.may_sleep(true));
        // Lapped over padding again, then removed: the loss is counted at
        // the end.
        w.append(50, false);
        w.append(50, false);
        for _ in 0..20 {
            w.append(200, true);
        }
        w.remove();
        let (got, lost, ended) = drain(&mut m, u64::MAX);
        assert!(got.is_empty() && ended);
        assert_eq!(lost, 2);
        assert_eq!(m.next_seq(), w.ring.next_seq());
    }

    #[test]
    fn starts_at_the_cursor() {
        let mut w = Writer::new(4096);
        for _ in 0..30 {
            w.append(20, false);
        }
        // "now"
        assert_eq!(drain(&mut w.mapped(30), u64::MAX).0, vec![]);
        // last:5 and oldest
        let (got, lost, _) = drain(&mut w.mapped(25), u64::MAX);
        assert_eq!((got.len(), got[0].seq, lost), (5, 25, 0));
        let oldest = w.ring.oldest_seq();
        let (got, lost, _) = drain(&mut w.mapped(oldest), u64::MAX);
        assert_eq!((got.len() as u64, lost), (30 - oldest, 0));
        // A cursor evicted before the mapping starts: counted as lost.
        for _ in 0..200 {
            w.append(20, false);
        }
        let (got, lost, _) = drain(&mut w.mapped(10), u64::MAX);
        assert_eq!(lost, w.ring.oldest_seq() - 10);
        assert_eq!(got[0].seq, w.ring.oldest_seq());
        check(&w, &got);
    }

    #[test]
    fn head_seq_ahead_of_head_is_harmless() {
        // The writer stored the next seq but not yet the head: the record
        // before the head is older than the cursor and skipped.
        let mut w = Writer::new(4096);
        for _ in 0..3 {
            w.append(20, false);
        }
        let old_head = w.ring.head();
        w.append(20, false);
        w.fake
            .set_u64(abi::CTRL_HEAD, old_head - abi::record_span(20) as u64);
        let mut m = w.mapped(4);
        w.fake.set_u64(abi::CTRL_HEAD, w.ring.head());
        assert_eq!(drain(&mut m, u64::MAX).0, vec![]);
        w.append(20, false);
        let (got, lost, _) = drain(&mut m, u64::MAX);
        assert_eq!((got.len(), got[0].seq, lost), (1, 4, 0));
    }

    #[test]
    fn overwritten_during_copy_is_dropped() {
        let w = Rc::new(RefCell::new(Writer::new(2048)));
        for _ in 0..20 {
            w.borrow_mut().append(40, false);
        }
        let mut m = w.borrow().mapped(0);
        // Halfway through the copy the writer laps the reader, overwriting
        // what is being copied.
        let ww = w.clone();
        let mut fired = false;
        set_hook(Some(Box::new(move |i| {
            if i == 40 && !fired {
                fired = true;
                let mut w = ww.borrow_mut();
                for _ in 0..30 {
                    w.append(40, false);
                }
            }
        })));
        let (got, lost, _) = drain(&mut m, u64::MAX);
        set_hook(None);
        let w = w.borrow();
        check(&w, &got);
        assert!(lost > 0);
        assert_eq!(got.len() as u64 + lost, 50);
        assert_eq!(got.last().map(|g| g.seq), Some(49));
    }

    #[test]
    fn partly_overwritten_copy_keeps_the_intact_part() {
        let w = Rc::new(RefCell::new(Writer::new(4096)));
        for _ in 0..40 {
            w.borrow_mut().append(40, false);
        }
        let mut m = w.borrow().mapped(0);
        // After 10 words of the first copy, the writer evicts a few of the
        // oldest records and overwrites their bytes.
        let ww = w.clone();
        let words = Rc::new(Cell::new(0usize));
        let count = words.clone();
        set_hook(Some(Box::new(move |i| {
            count.set(count.get() + 1);
            if i == 10 && count.get() == 11 {
                let mut w = ww.borrow_mut();
                for _ in 0..20 {
                    w.append(40, false);
                }
            }
        })));
        let (got, lost, _) = drain(&mut m, u64::MAX);
        set_hook(None);
        let w = w.borrow();
        check(&w, &got);
        let oldest = w.ring.oldest_seq();
        assert!(oldest > 0 && oldest < 10, "a few were evicted: {oldest}");
        assert_eq!(lost, oldest);
        assert_eq!(got.len() as u64, 60 - oldest);
        // 40 records of 10 words (40-byte header, 40-byte payload), then the
        // 20 new ones and the padding at the end of the ring: the part of the
        // first copy above the new tail was used, not copied again (that
        // would be 300 words more).
        let per_record = abi::record_span(40) / 8;
        assert!(
            words.get() <= 60 * per_record + 16,
            "{} words copied",
            words.get()
        );
    }

    #[test]
    fn a_head_behind_the_tail_is_waited_out() {
        let mut w = Writer::new(1024);
        let mut m = w.mapped(0);
        for _ in 0..60 {
            w.append(40, false);
        }
        // The head load lags behind the tail load (another CPU's view).
        let head = w.ring.head();
        w.fake.set_u64(abi::CTRL_HEAD, w.ring.tail() - 72);
        let p = m
            .read_into(&mut Vec::new(), u64::MAX, |_, _, _| {})
            .unwrap();
        assert_eq!(p, Progress::default());
        w.fake.set_u64(abi::CTRL_HEAD, head);
        let (got, lost, _) = drain(&mut m, u64::MAX);
        check(&w, &got);
        assert_eq!(got.len() as u64 + lost, 60);
        assert_eq!(got[0].seq, w.ring.oldest_seq());
    }

    #[test]
    fn garbage_that_the_tail_does_not_explain_is_an_error() {
        let mut w = Writer::new(4096);
        let mut m = w.mapped(0);
        w.append(16, false);
        w.append(16, false);
        // Corrupt the second header's seq without moving the tail.
        let off = DATA + abi::record_span(16);
        w.fake.write(off + 8, &77u64.to_ne_bytes());
        let e = m
            .read_into(&mut Vec::new(), u64::MAX, |_, _, _| {})
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("seq 77"), "{e}");
        // A zero length too.
        let mut w = Writer::new(4096);
        let mut m = w.mapped(0);
        w.append(16, false);
        w.fake.write(DATA, &0u32.to_ne_bytes());
        let e = m
            .read_into(&mut Vec::new(), u64::MAX, |_, _, _| {})
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn bad_control_pages_are_refused() {
        let w = Writer::new(4096);
        w.fake.set_u32(abi::CTRL_MAGIC, 0);
        let e = Mapped::from_region(w.fake.region(), 0).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        let w = Writer::new(4096);
        w.fake.set_u32(abi::CTRL_ABI_VERSION, 1);
        let e = Mapped::from_region(w.fake.region(), 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("fanout.ko"), "{e}");
        let w = Writer::new(4096);
        w.fake.set_u64(abi::CTRL_RING_SIZE, 8192);
        assert!(Mapped::from_region(w.fake.region(), 0).is_err());
        let w = Writer::new(4096);
        w.fake.set_u32(abi::CTRL_RECORD_MAX, 0);
        assert!(Mapped::from_region(w.fake.region(), 0).is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write {
            len: usize,
            abort: bool,
        },
        Read {
            limit: u64,
        },
        /// A read during which the writer appends `n` records after `word`
        /// words of the copy.
        RacyRead {
            word: usize,
            n: usize,
            len: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..300, prop::bool::weighted(0.1)).prop_map(|(len, abort)| Op::Write { len, abort }),
            2 => (1u64..50).prop_map(|limit| Op::Read { limit }),
            1 => (0usize..200, 1usize..40, 1usize..300).prop_map(|(word, n, len)| Op::RacyRead { word, n, len }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the writer does, even during a copy, the reader gets
        /// intact records in order, and every seq it passes is either
        /// delivered or counted lost.
        #[test]
        fn consumer_matches_writer(size_log2 in 10u32..13, start in 0u64..3, ops in prop::collection::vec(op(), 1..200)) {
            let size = 1usize << size_log2;
            let w = Rc::new(RefCell::new(Writer::new(size)));
            for _ in 0..start { w.borrow_mut().append(10, false); }
            let mut m = w.borrow().mapped(start);
            let mut got = Vec::new();
            let mut lost = 0;
            for op in ops {
                match op {
                    Op::Write { len, abort } => w.borrow_mut().append(len.min(size / 4), abort),
                    Op::Read { limit } => {
                        let (g, l, _) = drain(&mut m, limit);
                        got.extend(g);
                        lost += l;
                    }
                    Op::RacyRead { word, n, len } => {
                        let ww = w.clone();
                        let mut fired = false;
                        set_hook(Some(Box::new(move |i| {
                            if i == word && !fired {
                                fired = true;
                                let mut w = ww.borrow_mut();
                                for _ in 0..n { w.append(len.min(size / 4), false); }
                            }
                        })));
                        let (g, l, _) = drain(&mut m, u64::MAX);
                        set_hook(None);
                        got.extend(g);
                        lost += l;
                    }
                }
            }
            w.borrow().remove();
            let (g, l, ended) = drain(&mut m, u64::MAX);
            got.extend(g);
            lost += l;
            prop_assert!(ended);
            let w = w.borrow();
            check(&w, &got);
            let total = w.sent.len() as u64;
            prop_assert_eq!(got.len() as u64 + lost, total - start);
            prop_assert_eq!(m.next_seq(), total);
            // Loss only ever from being lapped: what is still buffered was
            // all delivered.
            let oldest = w.ring.oldest_seq();
            let tail_part: Vec<u64> = got.iter().map(|g| g.seq).filter(|&s| s >= oldest).collect();
            prop_assert_eq!(tail_part, (oldest.max(start)..total).collect::<Vec<_>>());
        }
    }
}
