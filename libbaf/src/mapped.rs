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
use region::{Owner, Region};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

#[path = "mapped_region.rs"]
mod region;

#[path = "mapped_payloads.rs"]
mod payloads;

const HDR: u64 = RECORD_HEADER_SIZE as u64;

/// Bytes copied out of the ring per batch (more, for that record alone, when
/// a single record is larger). Not scaled by the record limit: with the
/// default limit (a quarter of the ring) that made every batch of small
/// records copy megabytes at a time, which runs out of the caches.
const CHUNK: usize = 256 * 1024;

/// Bytes of the ring [`Mapped::read_payloads`] walks in place between two
/// checks of the tail: what a lap during the walk makes it read again.
const WALK: u64 = 64 * 1024;

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

/// The ring range `start..end` copied into the scratch buffer, and the head
/// it was copied below.
#[derive(Clone, Copy, Debug)]
struct Copied {
    start: u64,
    end: u64,
    head: u64,
}

/// How a round of reading begins ([`Mapped::begin_round`]).
enum Round {
    /// Nothing new: return what was done.
    End,
    /// Look at the ring again.
    Again,
    /// Read from the consumer's position up to this head.
    From(u64),
}

/// What to do with a record ([`Mapped::classify`]).
enum Next {
    /// Pass over this many bytes.
    Skip(u64),
    /// Deliver the record, of this span.
    Deliver(u64),
}

fn bad_record(p: u64, what: String) -> io::Error {
    invalid(format!(
        "the mapped ring holds a bad record at position {p}: {what}"
    ))
}

fn no_progress(pos: u64) -> io::Error {
    invalid(format!("no progress in the mapped ring at position {pos}"))
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
    /// Bytes copied per batch.
    chunk: u64,
    /// Bytes from `pos` the next copy must hold: the span of a record
    /// found larger than `chunk` (0 when none is pending).
    want: u64,
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
        let chunk = (CHUNK as u64).min(size);
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
            want: 0,
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
        self.rounds(limit, |m, head, progress| {
            let start = m.pos;
            let end = head.min(start.saturating_add(m.chunk.max(m.want)));
            m.copy_out(start, end)?;
            let tail2 = m.tail_after_copy()?;
            if tail2 > start {
                // Lapped during the copy: what is below the new tail may be
                // torn; what is above it is good.
                m.pos = tail2;
                m.exact = false;
                if tail2 >= end {
                    return Ok(false);
                }
            }
            let delivered = progress.records;
            let copied = Copied { start, end, head };
            m.walk(copied, out, limit, progress, &mut format)?;
            if progress.records > delivered || progress.records >= limit {
                return Ok(true);
            }
            if m.pos == start && m.want > end - start && end < head {
                // A record larger than the chunk: copy it whole next round.
                return Ok(false);
            }
            if m.pos == start {
                // Nothing at all walked from a position that was not lapped:
                // impossible, since a copy holds at least a whole record.
                return Err(no_progress(m.pos));
            }
            Ok(false)
        })
    }

    /// Reads in rounds (at most [`MAX_ROUNDS`], at most `limit` records):
    /// each round that has something to read from `pos` up to a head calls
    /// `round(self, head, progress)`, which reads and says whether to
    /// return now (`true`) or go on with the next round.
    fn rounds<R>(&mut self, limit: u64, mut round: R) -> io::Result<Progress>
    where
        R: FnMut(&mut Self, u64, &mut Progress) -> io::Result<bool>,
    {
        let mut progress = Progress::default();
        if limit == 0 {
            return Ok(progress);
        }
        for _ in 0..MAX_ROUNDS {
            let head = match self.begin_round(&mut progress)? {
                Round::End => return Ok(progress),
                Round::Again => continue,
                Round::From(head) => head,
            };
            if round(self, head, &mut progress)? {
                return Ok(progress);
            }
        }
        Ok(progress)
    }

    /// The start of a round of reading: looks at the head and tail, moves a
    /// lapped consumer to the tail, and says whether to read from `pos`
    /// (up to the head it returns), look again, or return `progress`
    /// (nothing new; `progress.ended` set when the topic is removed).
    fn begin_round(&mut self, progress: &mut Progress) -> io::Result<Round> {
        // Flags before head: "removed" and then "nothing past the head"
        // means the end.
        let removed =
            self.region.load_u32(abi::CTRL_FLAGS, Ordering::Acquire) & abi::CTRL_FLAG_REMOVED != 0;
        let head = self.head();
        if head % 8 != 0 {
            return Err(invalid(format!("odd ring head {head}")));
        }
        if head < self.pos {
            // Our position came from a tail loaded after an older head,
            // and this head load has not caught up with it yet.
            std::hint::spin_loop();
            return Ok(Round::Again);
        }
        if head == self.pos {
            if removed && !self.exact {
                // Lapped over nothing but padding (aborted writes) up to
                // the final head: every record from `seq` on is gone, and
                // the head's next seq is final once the topic is removed.
                let next = self.region.load_u64(abi::CTRL_HEAD_SEQ, Ordering::Acquire);
                if next > self.seq {
                    progress.lost += next - self.seq;
                    self.unreported += next - self.seq;
                    self.seq = next;
                }
                self.exact = true;
            }
            progress.ended = removed;
            return Ok(Round::End);
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
                return Ok(Round::Again);
            }
        }
        Ok(Round::From(head))
    }

    /// The tail after reading ring bytes: every byte read at a position at
    /// or above it was intact.
    fn tail_after_copy(&self) -> io::Result<u64> {
        // Pairs with the kernel's write barrier after it stores a tail and
        // before it overwrites anything below it.
        fence(Ordering::Acquire);
        let tail = self.region.load_u64(abi::CTRL_TAIL, Ordering::Relaxed);
        if tail % 8 != 0 {
            return Err(invalid(format!("odd ring tail {tail}")));
        }
        Ok(tail)
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

    /// What to do with the record whose header `h` is at position `p`,
    /// `room` bytes before the end of the ring, below `head`: skip `n`
    /// bytes (padding, or a record older than this consumer's start), or
    /// deliver it (its span). Counts the loss before the first record after
    /// a lap. A header that makes no sense is an error.
    fn classify(
        &mut self,
        p: u64,
        h: &RecordHeader,
        room: u64,
        head: u64,
        progress: &mut Progress,
    ) -> io::Result<Next> {
        let len = u64::from(h.len);
        let span = abi::record_span(h.len as usize) as u64;
        if h.flags & abi::RECORD_FLAG_PAD != 0 {
            let skip = span.min(room);
            if p + skip > head {
                return Err(bad_record(
                    p,
                    format!("padding of {skip} bytes past the head {head}"),
                ));
            }
            return Ok(Next::Skip(skip));
        }
        if h.flags != 0 || len == 0 || len > self.record_max || span > room {
            return Err(bad_record(
                p,
                format!(
                    "flags {:#x}, length {len}, {room} bytes to the end of the ring",
                    h.flags
                ),
            ));
        }
        if p + span > head {
            return Err(bad_record(
                p,
                format!("{span} bytes long, past the head {head}"),
            ));
        }
        if self.exact {
            if h.seq != self.seq {
                return Err(bad_record(
                    p,
                    format!("seq {} where {} was expected", h.seq, self.seq),
                ));
            }
        } else if h.seq < self.seq {
            // Older than where this reader starts: skip it.
            return Ok(Next::Skip(span));
        } else {
            progress.lost += h.seq - self.seq;
            self.unreported += h.seq - self.seq;
            self.seq = h.seq;
            self.exact = true;
        }
        Ok(Next::Deliver(span))
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
            let span = abi::record_span(h.len as usize) as u64;
            let sane = h.flags == 0 && h.len > 0 && u64::from(h.len) <= self.record_max;
            if sane && p + span > end && end < head && span <= room {
                // The record is past this chunk: next time, in a copy that
                // holds it whole.
                self.want = span;
                break;
            }
            let span = match self.classify(p, &h, room, head, progress)? {
                Next::Skip(n) => {
                    self.pos = p + n;
                    continue;
                }
                Next::Deliver(span) => span,
            };
            let payload = self
                .scratch
                .get(at + RECORD_HEADER_SIZE..at + RECORD_HEADER_SIZE + h.len as usize)
                .unwrap_or_default();
            format(out, &h, payload);
            self.want = 0;
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
#[path = "mapped_tests.rs"]
mod tests;
