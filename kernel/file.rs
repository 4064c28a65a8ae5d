// SPDX-License-Identifier: GPL-2.0
//! An open file of a topic: its read cursor and modes, and what `read`,
//! `write`, `ioctl`, `poll`, `mmap` and fdinfo do with it. All safe Rust;
//! the raw `file_operations` glue is in `fops.rs`, the ring bytes in
//! `ringmem.rs`.
//!
//! The data path copies each byte once on each side, with no lock held:
//!
//! - `write` reserves a slot under the topic spinlock (evicting the oldest
//!   records and publishing the new tail), copies straight from user memory
//!   into the ring, then commits the record (header, then head with
//!   release). A fault turns the slot into padding; nothing torn is ever
//!   published. Writers of one topic are serialised by a sleeping,
//!   interruptible lock.
//! - `read` takes no topic lock at all: it loads the head (acquire), copies
//!   whole records straight from the ring to user memory, and after each
//!   record checks with a read barrier that the tail did not pass its start
//!   (the seqcount pattern). The records that pass are delivered; a record
//!   the writer overwrote during its copy is dropped and counted as lost, and
//!   reading goes on from the oldest record.
//!
//! Per open file there is only small fixed state: a cursor and a loss count
//! under a spinlock, and a flag that serialises threads reading through the
//! same file (they wait interruptibly; fdinfo never waits for them). The
//! exception is a record larger than the reader's buffer: it is copied
//! whole into a buffer of the file's (charged to the reader's memory
//! cgroup) and handed over from there, so a writer lapping the reader
//! between the pieces cannot tear it.

use crate::abi::{self, record_span, RecordHeader, RECORD_HEADER_SIZE};
use crate::compat;
use crate::provenance::{self, Viewer};
use crate::ring::{Cursor, Mem, Stamp, PAD_FLAG};
use crate::topic::{Lossless, Topic, WriterGuard, KEY_IN, KEY_OUT};
use crate::waitq::{Turn, TurnGuard};
use kernel::{
    bindings, current,
    fs::File,
    iov::{IovIterDest, IovIterSource},
    mm::virt::VmaNew,
    new_spinlock,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Arc, SpinLock, SpinLockGuard,
    },
    transmute::AsBytes,
    uaccess::{UserPtr, UserSlice},
};

const HDR: u64 = RECORD_HEADER_SIZE as u64;
/// Bytes of a batch copied into the ring in one go (at most half the ring).
const BATCH_CHUNK: usize = 256 * 1024;

/// The errno of a refused batch frame.
fn frame_errno(e: abi::FrameError) -> Error {
    match e {
        abi::FrameError::Invalid => EINVAL,
        abi::FrameError::TooLong => EMSGSIZE,
        abi::FrameError::Truncated => compat::ebadmsg(),
    }
}

/// Zero padding after a payload in record mode.
static ZEROS: [u8; 8] = [0; 8];

// Our hand-written ioctl encoding in `abi.rs` (shared with userspace) must
// be the kernel's own.
const _: () = {
    use kernel::ioctl::{_IOR, _IOW, _IOWR};
    assert!(abi::IOC_SET_FLAGS == _IOW::<u32>(abi::IOC_TYPE, 1));
    assert!(abi::IOC_SEEK == _IOWR::<abi::Seek>(abi::IOC_TYPE, 2));
    assert!(abi::IOC_INFO == _IOR::<abi::Info>(abi::IOC_TYPE, 3));
    assert!(abi::IOC_MAPPED_SYNC == _IOW::<abi::MappedSync>(abi::IOC_TYPE, 5));
    assert!(abi::IOC_WAIT_READERS == _IOW::<u32>(abi::IOC_TYPE, 6));
    assert!(abi::INFO_V2_SIZE == core::mem::offset_of!(abi::Info, topic_flags));
    assert!(abi::RECORD_HEADER_SIZE == 40);
    assert!(abi::CTRL_HEADER_SIZE + 4 <= abi::CTRL_HEAD);
    assert!(abi::CTRL_TAIL_SEQ + 8 <= crate::ringmem::CTRL_SIZE);
};

// SAFETY: `Seek` is `repr(C)`, made of integers with no padding (u32, u32,
// u64), so every byte pattern is a valid value.
unsafe impl kernel::transmute::FromBytes for abi::Seek {}
// SAFETY: As above: no padding, so every byte of a `Seek` is initialized.
unsafe impl kernel::transmute::AsBytes for abi::Seek {}
// SAFETY: `MappedSync` is `repr(C)`, two u64 with no padding, so every
// byte pattern is a valid value.
unsafe impl kernel::transmute::FromBytes for abi::MappedSync {}
// SAFETY: `Info` is `repr(C)`, made of integers laid out without padding
// (2 x u32, u64, 2 x u32, 5 x u64, 2 x u32, u64), so every byte is
// initialized.
unsafe impl kernel::transmute::AsBytes for abi::Info {}

/// A record larger than the caller's buffer, handed over in pieces (plain
/// mode only) from the file's copy of it, `ReadState::buf`.
#[derive(Clone, Copy)]
struct Split {
    /// Payload bytes in all.
    len: usize,
    /// Payload bytes already delivered.
    done: usize,
}

/// A split's buffer larger than this is freed when the split is done.
const SPLIT_KEEP: usize = 64 * 1024;

struct ReadState {
    /// The next record this file reads.
    cursor: Cursor,
    /// The record being handed over in pieces, if any; `cursor` is already
    /// past it.
    split: Option<Split>,
    /// The payload of `split` (its capacity is kept for the next one, up to
    /// [`SPLIT_KEEP`]). Taken out while it is used, so no copy happens
    /// under the spinlock.
    buf: KVVec<u8>,
    /// Records this file lost to overrun.
    lost: u64,
    /// The sequence number of the last seek or mapped-reader sync: a
    /// mapping reader cannot report more loss than it moved past since.
    synced: u64,
    /// The highest sequence number up to which this file's loss has been
    /// counted (or its records read): never lowered, so seeking back and
    /// syncing again cannot count the same records twice.
    counted: u64,
    /// This file's lossless slot, while it is a lossless reader.
    slot: Option<Arc<Lossless>>,
    /// The stall timeout demoted this file: it cannot be lossless again.
    was_demoted: bool,
}

impl ReadState {
    /// The oldest position this file still needs: its cursor (a record it
    /// hands over in pieces is in its own buffer).
    fn hold_pos(&self) -> u64 {
        self.cursor.pos
    }

    /// Moves a lossless reader's slot forward to what it still needs;
    /// whether it moved (then the caller calls `Topic::released`).
    fn release(&self) -> bool {
        let Some(l) = &self.slot else {
            return false;
        };
        let pos = self.hold_pos();
        if pos <= l.pos.load(Relaxed) {
            return false;
        }
        l.pos.store(pos, Release);
        true
    }
}

/// The private data of an open topic file.
#[pin_data(PinnedDrop)]
pub(crate) struct OpenFile {
    topic: Arc<Topic>,
    can_read: bool,
    can_write: bool,
    /// Whether the opener may be a lossless reader: the topic's owner, a
    /// member of its group, or a holder of `CAP_SYS_ADMIN`.
    may_lossless: bool,
    /// Cursor, split record and loss count: small, and never held across a
    /// user copy or a sleep.
    #[pin]
    rs: SpinLock<ReadState>,
    /// `abi::FLAG_*` of this file.
    flags: Atomic<u32>,
    /// Copy of `rs.cursor.seq`, for `poll` and sleeping readers.
    cursor_seq: Atomic<u64>,
    /// Whether `rs.split` holds unread bytes.
    split_pending: Atomic<bool>,
    /// Held by the thread reading (or seeking) through this file: the
    /// cursor is its alone.
    read_turn: Turn,
}

/// What a `write()` call has published so far.
#[derive(Default)]
struct Progress {
    /// Bytes of the caller's buffer taken.
    done: usize,
    records: u64,
    /// Payload bytes.
    bytes: u64,
}

/// What one pass over the ring produced.
enum Pass {
    /// `n` bytes delivered (0 only at end of file).
    Done(usize),
    /// Nothing to read yet.
    Nothing,
    /// The writer overwrote what was copied: start again.
    Overrun,
}

impl OpenFile {
    /// Opens `topic`; the new file reads only what is written from now on.
    pub(crate) fn open(
        topic: Arc<Topic>,
        can_read: bool,
        can_write: bool,
    ) -> Result<Pin<KBox<Self>>> {
        let cursor = topic.cursor(|r, _| Some(r.now())).unwrap_or_default();
        let may_lossless = can_read && topic.flags & abi::TOPIC_LOSSLESS != 0 && {
            let euid = kernel::task::Kuid::current_euid().into_raw().val;
            // SAFETY: `in_group_p` and `capable` only read the current
            // task's credentials (the opener's, as this is `open`).
            euid == topic.uid
                || unsafe { bindings::in_group_p(bindings::kgid_t { val: topic.gid }) } != 0
                || unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as i32) }
        };
        let this = KBox::pin_init(
            try_pin_init!(Self {
                topic,
                can_read,
                can_write,
                may_lossless,
                rs <- new_spinlock!(ReadState {
                    cursor,
                    split: None,
                    buf: KVVec::new(),
                    lost: 0,
                    synced: cursor.seq,
                    counted: cursor.seq,
                    slot: None,
                    was_demoted: false,
                }, "fanout_file"),
                flags: Atomic::new(0),
                cursor_seq: Atomic::new(cursor.seq),
                split_pending: Atomic::new(false),
                read_turn: Turn::new(),
            }? Error),
            GFP_KERNEL_ACCOUNT,
        )?;
        let stats = &this.topic.stats;
        if can_read {
            stats.readers.add(1, Relaxed);
        }
        if can_write {
            stats.writers.add(1, Relaxed);
        }
        Ok(this)
    }

    fn has_unread(&self) -> bool {
        self.split_pending.load(Acquire)
            || self.topic.mem.head_seq() != self.cursor_seq.load(Acquire)
            || self.topic.mem.removed()
    }

    fn set_cursor(&self, rs: &mut ReadState, c: Cursor) {
        rs.cursor = c;
        self.cursor_seq.store(c.seq, Release);
    }

    /// Moves the cursor to `c` for a seek or a mapping reader's sync,
    /// dropping any record half handed over, then unlocks as
    /// [`OpenFile::unlock_and_release`] does.
    fn move_cursor(&self, mut rs: SpinLockGuard<'_, ReadState>, c: Cursor) {
        self.set_cursor(&mut rs, c);
        rs.split = None;
        self.split_pending.store(false, Release);
        self.unlock_and_release(rs);
    }

    /// Unlocks the read state after the cursor moved; if this is a lossless
    /// reader whose oldest needed position moved forward, wakes the writers
    /// waiting for room (outside the spinlock).
    fn unlock_and_release(&self, rs: SpinLockGuard<'_, ReadState>) {
        let released = rs.release();
        drop(rs);
        if released {
            self.topic.released();
        }
    }

    /// Takes this file's read side, waiting interruptibly for another thread
    /// that reads through it.
    fn lock_reader(&self) -> Result<TurnGuard<'_>> {
        self.read_turn
            .take(&self.topic.readers, KEY_IN, false, || false)?
            .ok_or(EINVAL)
    }

    /// `read()`: whole records (or the pieces of one larger than the
    /// caller's buffer); blocks unless `nonblock`; 0 once the topic is
    /// removed and drained.
    pub(crate) fn read(&self, iov: &mut IovIterDest<'_>, nonblock: bool) -> Result<usize> {
        if iov.is_empty() {
            return Ok(0);
        }
        loop {
            let pass = {
                let _g = self.lock_reader()?;
                self.check_demoted()?;
                self.read_once(iov)?
            };
            match pass {
                Pass::Done(n) => return Ok(n),
                // Lapped: the next pass counts the loss and starts again at
                // the oldest record.
                Pass::Overrun => {
                    if current!().signal_pending() {
                        return Err(ERESTARTSYS);
                    }
                    continue;
                }
                Pass::Nothing => {}
            }
            if nonblock {
                return Err(EAGAIN);
            }
            self.topic
                .readers
                .wait_interruptible(|| self.has_unread())?;
        }
    }

    /// `EPIPE`, once, when the stall timeout demoted this lossless reader to
    /// lossy; its lossless flag is cleared then.
    fn check_demoted(&self) -> Result {
        let mut rs = self.rs.lock();
        if !rs.slot.as_ref().is_some_and(|l| l.demoted.load(Acquire)) {
            return Ok(());
        }
        // It already left the topic's list; this drops the file's share.
        let slot = rs.slot.take();
        rs.was_demoted = true;
        drop(rs);
        drop(slot);
        let flags = self.flags.load(Relaxed);
        self.flags.store(flags & !abi::FLAG_LOSSLESS, Relaxed);
        Err(EPIPE)
    }

    /// Counts the loss of a lapped reader and moves it to the oldest record.
    /// In strict mode this fails once with `EPIPE` (after moving).
    fn catch_up(&self, flags: u32) -> Result<Cursor> {
        let oldest = self.topic.cursor(|r, _| Some(r.oldest())).ok_or(EINVAL)?;
        let mut rs = self.rs.lock();
        let c = rs.cursor;
        if c.pos >= oldest.pos {
            return Ok(c);
        }
        let lost = oldest.seq.saturating_sub(c.seq);
        self.set_cursor(&mut rs, oldest);
        rs.lost = rs.lost.saturating_add(lost);
        rs.counted = rs.counted.max(oldest.seq);
        drop(rs);
        self.topic.stats.lost.add(lost, Relaxed);
        if lost > 0 && flags & abi::FLAG_STRICT != 0 {
            return Err(EPIPE);
        }
        Ok(oldest)
    }

    /// One pass over the ring. The caller holds the reader guard.
    ///
    /// Each record is checked right after it is copied: if the tail has not
    /// passed its start, the writer had not begun to overwrite it, so the
    /// copy is intact. Writers overwrite oldest first, so the intact records
    /// of a pass are a prefix: they are delivered, and the pass stops at the
    /// first torn one (the next pass counts the loss and goes on from the
    /// oldest record).
    fn read_once(&self, iov: &mut IovIterDest<'_>) -> Result<Pass> {
        let flags = self.flags.load(Relaxed);
        let record_mode = flags & abi::FLAG_RECORD != 0;
        // The header this file reads: the ring's own, or its ABI 3 prefix.
        let hsize = abi::header_size(flags);
        let mem = &self.topic.mem;
        let (mut c, split) = {
            let rs = self.rs.lock();
            (rs.cursor, rs.split)
        };
        if let Some(s) = split {
            return self.read_split(s, iov).map(Pass::Done);
        }
        // Removal is checked before the head, so a reader that sees it has
        // also seen every record.
        let dead = mem.removed();
        let head = mem.head();
        if c.pos < mem.tail() {
            c = self.catch_up(flags)?;
        }
        let size = mem.size() as u64;
        let mask = size - 1;
        let limit = iov.len();
        let viewer = record_mode.then(Viewer::current);
        let mut out = 0usize;
        let mut pos = c.pos;
        let mut seq = c.seq;
        // Where the walk to the current record began: the padding skipped
        // on the way was read from the ring too, so the check covers it.
        let mut rec_start = pos;
        let mut faulted = false;
        let mut torn = false;
        let mut new_split = None;
        while pos < head {
            let off = pos & mask;
            let room = size - off;
            if room < HDR {
                pos += room;
                continue;
            }
            let h = mem.header(off as usize);
            if h.flags & PAD_FLAG != 0 {
                pos += (record_span(h.len as usize) as u64).min(room);
                continue;
            }
            let len = h.len as usize;
            if h.seq != seq || len == 0 || len > self.topic.record_max {
                if mem.tail_after_copy() <= rec_start {
                    // A damaged header the tail does not explain: never
                    // loop on it.
                    return Err(EIO);
                }
                torn = true;
                break;
            }
            let body = (off + HDR) as usize;
            let need = if record_mode {
                abi::record_span_sized(hsize, len)
            } else {
                len
            };
            let before = iov.len();
            if out + need > limit {
                if out > 0 {
                    break;
                }
                if record_mode {
                    if mem.tail_after_copy() > rec_start {
                        torn = true;
                        break;
                    }
                    // The caller's buffer cannot hold this record; it stays
                    // unread.
                    return Err(EMSGSIZE);
                }
                // Plain mode: hand the record over in pieces, from a copy
                // of the whole record, so a writer cannot tear it.
                match self.start_split(body, len, rec_start, iov)? {
                    None => torn = true,
                    Some(0) => faulted = true,
                    Some(n) => {
                        out = n;
                        new_split = Some(Split { len, done: n });
                        pos += record_span(len) as u64;
                        seq += 1;
                        rec_start = pos;
                    }
                }
                break;
            }
            let mut ok = true;
            if let Some(v) = &viewer {
                let hb = RecordHeader {
                    len: h.len,
                    flags: 0,
                    seq: h.seq,
                    timestamp_ns: h.timestamp_ns,
                    pid: v.pid(h.pid, h.writer),
                    uid: v.uid(h.uid),
                    writer: h.writer,
                }
                .to_bytes();
                let hb = hb.get(..hsize).unwrap_or_default();
                ok = iov.copy_to_iter(hb) == hsize;
            }
            ok = ok && mem.copy_out(body, len, iov) == len;
            if record_mode && ok {
                let pad = need - hsize - len;
                ok = iov.copy_to_iter(ZEROS.get(..pad).unwrap_or_default()) == pad;
            }
            let intact = mem.tail_after_copy() <= rec_start;
            if !ok || !intact {
                // Give back this record's bytes; the ones before it stand.
                // SAFETY: `before - iov.len()` bytes of this record were
                // copied into `iov` just above.
                unsafe { iov.revert(before - iov.len()) };
                faulted = !ok && intact;
                torn = !intact;
                break;
            }
            out += need;
            pos += record_span(len) as u64;
            seq += 1;
            rec_start = pos;
        }
        if out == 0 {
            if torn {
                // The writer overwrote our next record: count the loss and
                // go on from the oldest one.
                return Ok(Pass::Overrun);
            }
            if faulted {
                return Err(EFAULT);
            }
        }
        let mut rs = self.rs.lock();
        // Only what a check covered is passed: padding read after the last
        // delivered record may have been torn, so it is read again.
        self.set_cursor(
            &mut rs,
            Cursor {
                pos: rec_start,
                seq,
            },
        );
        rs.counted = rs.counted.max(seq);
        if new_split.is_some() {
            rs.split = new_split;
            self.split_pending.store(true, Release);
        }
        self.unlock_and_release(rs);
        if out > 0 {
            return Ok(Pass::Done(out));
        }
        Ok(if dead && pos >= head {
            Pass::Done(0)
        } else {
            Pass::Nothing
        })
    }

    /// Starts handing over a record of `len` payload bytes at ring offset
    /// `body` (its walk began at `rec_start`) that is larger than the
    /// caller's buffer: copies all of it into this file's buffer, checks
    /// that the writer did not overwrite it meanwhile, and delivers the
    /// first piece. `None` when it was overwritten (nothing delivered);
    /// `Some(0)` on a fault (nothing delivered); else the bytes delivered.
    fn start_split(
        &self,
        body: usize,
        len: usize,
        rec_start: u64,
        iov: &mut IovIterDest<'_>,
    ) -> Result<Option<usize>> {
        let mut buf = core::mem::take(&mut self.rs.lock().buf);
        let r = (|| -> Result<Option<usize>> {
            buf.clear();
            buf.resize(len, 0, GFP_KERNEL_ACCOUNT)?;
            let mem = &self.topic.mem;
            if !mem.copy_to_kernel(body, &mut buf) || mem.tail_after_copy() > rec_start {
                return Ok(None);
            }
            let first = buf.get(..iov.len().min(len)).unwrap_or_default();
            Ok(Some(iov.copy_to_iter(first)))
        })();
        self.put_buf(buf, r.as_ref().is_ok_and(|n| n.is_some_and(|n| n > 0)));
        r
    }

    /// Gives the split buffer back to the read state; when no split is
    /// under way (`keep` false) a large one is freed, outside the lock.
    fn put_buf(&self, buf: KVVec<u8>, keep: bool) {
        let big = buf.capacity() > SPLIT_KEEP;
        let spare = if keep || !big {
            core::mem::replace(&mut self.rs.lock().buf, buf)
        } else {
            buf
        };
        drop(spare);
    }

    /// Hands over more of a record larger than the caller's buffer, from
    /// this file's copy of it.
    fn read_split(&self, s: Split, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let buf = core::mem::take(&mut self.rs.lock().buf);
        let end = s.len.min(s.done.saturating_add(iov.len()));
        let piece = buf.get(s.done..end).unwrap_or_default();
        let copied = iov.copy_to_iter(piece);
        let done = s.done + copied;
        let finished = done >= s.len;
        let mut rs = self.rs.lock();
        if copied > 0 {
            if finished {
                rs.split = None;
                self.split_pending.store(false, Release);
            } else {
                rs.split = Some(Split { done, ..s });
            }
        }
        drop(rs);
        self.put_buf(buf, !finished);
        if copied == 0 {
            return Err(EFAULT);
        }
        Ok(copied)
    }

    /// `write()`: each `record_max` bytes become one record, or, in batch
    /// mode, each frame does. Never waits for lossy readers; waits
    /// interruptibly for lossless readers to make room, and for another
    /// writer of the topic that is mid-write (`EAGAIN` instead with
    /// `nonblock`, that is `O_NONBLOCK` or `RWF_NOWAIT`, or the bytes
    /// written so far).
    pub(crate) fn write(&self, iov: &mut IovIterSource<'_>, nonblock: bool) -> Result<usize> {
        let total = iov.len();
        if total == 0 {
            return Ok(0);
        }
        let flags = self.flags.load(Relaxed);
        let batch = flags & abi::FLAG_BATCH != 0;
        let w = self.topic.lock_writer(nonblock)?;
        let stamp = provenance::stamp();
        let mut p = Progress::default();
        let result = if batch && flags & abi::FLAG_WRITER_ID != 0 {
            self.write_batch(&w, iov, stamp, nonblock, &mut p)
        } else if batch {
            self.write_batch_v3(&w, iov, stamp, nonblock, &mut p)
        } else {
            loop {
                if p.done >= total {
                    break Ok(());
                }
                let len = (total - p.done).min(self.topic.record_max);
                if let Err(e) = self.write_record(&w, iov, len, stamp, nonblock) {
                    break Err(e);
                }
                p.done += len;
                p.records += 1;
                p.bytes += len as u64;
                if p.done < total && current!().signal_pending() {
                    break Ok(());
                }
            }
        };
        drop(w);
        if p.records > 0 {
            self.topic.stats.records.add(p.records, Relaxed);
            self.topic.stats.bytes.add(p.bytes, Relaxed);
            // One wakeup for the whole call, and none if nobody waits.
            self.topic.readers.wake(KEY_IN);
        }
        match result {
            Err(e) if p.done == 0 => Err(e),
            _ => Ok(p.done),
        }
    }

    /// Copies one record of `len` bytes from `iov` into the ring.
    fn write_record(
        &self,
        w: &WriterGuard<'_>,
        iov: &mut IovIterSource<'_>,
        len: usize,
        stamp: Stamp,
        nonblock: bool,
    ) -> Result {
        // Fault the source in first, so the copy rarely stops half-way.
        // SAFETY: `iov` is a valid source iterator.
        unsafe { bindings::fault_in_iov_iter_readable(iov.as_raw(), len) };
        let r = self.topic.reserve(w, len, nonblock)?;
        let mask = self.topic.mem.size() as u64 - 1;
        if self.topic.mem.copy_in(r.payload_off(mask), len, iov) < len {
            // A fault in the middle publishes nothing torn.
            self.topic.abort(w, &r);
            return Err(EFAULT);
        }
        // ENODEV when the topic was removed meanwhile: nothing published.
        self.topic.commit(w, &r, stamp)
    }

    /// A batch: the frames are the ring's own record format, so they are
    /// copied into the ring in chunks, one copy each, and then checked and
    /// stamped in place under the topic lock (`Ring::commit_frames`). A
    /// frame cut by the end of a chunk is given back and copied again with
    /// the next one.
    fn write_batch(
        &self,
        w: &WriterGuard<'_>,
        iov: &mut IovIterSource<'_>,
        stamp: Stamp,
        nonblock: bool,
        p: &mut Progress,
    ) -> Result {
        let mem = &self.topic.mem;
        let mask = mem.size() as u64 - 1;
        let min = record_span(self.topic.record_max) as u64;
        let cap = (BATCH_CHUNK as u64).max(min).min(mem.size() as u64 / 2);
        loop {
            let rest = iov.len() as u64;
            if rest == 0 {
                return Ok(());
            }
            if rest < HDR {
                return Err(compat::ebadmsg());
            }
            let want = rest.min(cap);
            // SAFETY: `iov` is a valid source iterator.
            unsafe { bindings::fault_in_iov_iter_readable(iov.as_raw(), want as usize) };
            let c = self.topic.reserve_bytes(w, want, min, nonblock)?;
            let copied = mem.copy_in((c.pos & mask) as usize, c.len as usize, iov) as u64;
            let f = self.topic.commit_frames(w, &c, copied, stamp)?;
            // What follows the whole frames is read again next time.
            // SAFETY: `copied - f.used` of the bytes just copied from `iov`.
            unsafe { iov.revert((copied - f.used) as usize) };
            p.done += f.used as usize;
            p.records += f.records;
            p.bytes += f.bytes;
            if let Some(e) = f.error {
                return Err(frame_errno(e));
            }
            if f.records == 0 {
                // A valid frame always fits a chunk, so nothing published
                // means a fault, or a frame cut by the end of the buffer.
                return Err(if copied < c.len {
                    EFAULT
                } else {
                    compat::ebadmsg()
                });
            }
            if !iov.is_empty() && current!().signal_pending() {
                return Ok(());
            }
        }
    }

    /// A batch whose frames have the 32-byte ABI 3 header (a program built
    /// before ABI 4): not the ring's layout, so each frame is published as
    /// one record through [`Self::write_record`]. Errors as `write_batch`;
    /// after one, only `p` counts (`write()` returns `p.done` or the error),
    /// not where `iov` stopped.
    fn write_batch_v3(
        &self,
        w: &WriterGuard<'_>,
        iov: &mut IovIterSource<'_>,
        stamp: Stamp,
        nonblock: bool,
        p: &mut Progress,
    ) -> Result {
        const V3: usize = abi::RECORD_HEADER_V3_SIZE;
        loop {
            let rest = iov.len();
            if rest == 0 {
                return Ok(());
            }
            let mut hb = [0u8; V3];
            let got = iov.copy_from_iter(&mut hb);
            let h = RecordHeader::from_bytes_sized(&hb, V3).filter(|_| got == V3);
            let checked = match h {
                Some(h) => {
                    abi::check_frame_sized(&h, V3, rest, self.topic.record_max).map_err(frame_errno)
                }
                None if rest < V3 => Err(compat::ebadmsg()),
                None => Err(EFAULT),
            };
            let (len, span) = checked?;
            self.write_record(w, iov, len, stamp, nonblock)?;
            iov.advance(span - V3 - len);
            p.done += span;
            p.records += 1;
            p.bytes += len as u64;
            if !iov.is_empty() && current!().signal_pending() {
                return Ok(());
            }
        }
    }

    /// The ioctls of `abi.rs`; `nonblock` is the file's `O_NONBLOCK`.
    pub(crate) fn ioctl(&self, cmd: u32, arg: usize, nonblock: bool) -> Result<isize> {
        let ptr = UserPtr::from_addr(arg);
        match cmd {
            abi::IOC_SET_FLAGS => {
                let flags: u32 = UserSlice::new(ptr, size_of::<u32>()).reader().read()?;
                self.set_flags(flags)?;
            }
            abi::IOC_SEEK => {
                let (mut r, mut w) = UserSlice::new(ptr, size_of::<abi::Seek>()).reader_writer();
                let mut seek: abi::Seek = r.read()?;
                if seek.reserved != 0 {
                    return Err(EINVAL);
                }
                let _g = self.lock_reader()?;
                let slot = self.rs.lock().slot.clone();
                let c = self
                    .topic
                    .seek(slot.as_deref(), |ring, mem| match seek.whence {
                        abi::SEEK_OLDEST => Some(ring.oldest()),
                        abi::SEEK_LAST => Some(ring.last(mem, seek.arg)),
                        abi::SEEK_SEQ => ring.find(mem, seek.arg),
                        abi::SEEK_NOW => Some(ring.now()),
                        _ => None,
                    });
                let c = match (c, seek.whence) {
                    (Some(c), _) => c,
                    (None, abi::SEEK_SEQ) => return Err(ERANGE),
                    (None, _) => return Err(EINVAL),
                };
                seek.arg = c.seq;
                // Report first: if that faults, the cursor has not moved.
                w.write(&seek)?;
                let mut rs = self.rs.lock();
                rs.synced = c.seq;
                self.move_cursor(rs, c);
                // A reader of this file sleeping in `read` re-checks.
                self.topic.readers.wake(KEY_IN);
            }
            abi::IOC_MAPPED_SYNC => {
                let m: abi::MappedSync = UserSlice::new(ptr, size_of::<abi::MappedSync>())
                    .reader()
                    .read()?;
                return self.mapped_sync(m);
            }
            abi::IOC_CLAIM_PUBLISHER => {
                // Only a file that can publish may keep others from it.
                if !self.can_write {
                    return Err(EBADF);
                }
                self.topic.claim_publisher(self.holder_id())?
            }
            abi::IOC_INFO => {
                let info = self.info();
                UserSlice::new(ptr, size_of::<abi::Info>())
                    .writer()
                    .write(&info)?;
            }
            abi::IOC_INFO_V2 => {
                let info = self.info();
                let bytes = info.as_bytes().get(..abi::INFO_V2_SIZE).ok_or(EINVAL)?;
                UserSlice::new(ptr, bytes.len())
                    .writer()
                    .write_slice(bytes)?;
            }
            abi::IOC_WAIT_READERS => {
                let n: u32 = UserSlice::new(ptr, size_of::<u32>()).reader().read()?;
                self.topic.wait_readers(u64::from(n), nonblock)?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }

    /// `IOC_SET_FLAGS`. Nothing changes on an error.
    fn set_flags(&self, flags: u32) -> Result {
        if flags & !abi::FLAGS_ALL != 0 {
            return Err(EINVAL);
        }
        let lossless = flags & abi::FLAG_LOSSLESS != 0;
        if lossless && !self.can_read {
            return Err(EBADF);
        }
        if lossless && !self.may_lossless {
            // A lossy topic, or an opener its owner did not allow.
            return Err(EPERM);
        }
        // The cursor (and the split record) are ours from here on: no
        // other thread's read can start a split behind the check below.
        let _g = self.lock_reader()?;
        let changes_mode = (flags ^ self.flags.load(Relaxed)) & abi::FLAG_RECORD != 0;
        if changes_mode && self.split_pending.load(Acquire) {
            // Finish reading the split record first.
            return Err(EBUSY);
        }
        let (slot, pos) = {
            let mut rs = self.rs.lock();
            let demoted =
                rs.was_demoted || rs.slot.as_ref().is_some_and(|l| l.demoted.load(Acquire));
            if lossless && demoted {
                // Demoted by the stall timeout: lossless again only after
                // reopening the topic.
                return Err(EPERM);
            }
            let slot = if demoted {
                // Cleared after a demotion: start afresh.
                rs.was_demoted = true;
                rs.slot.take()
            } else {
                None
            };
            let r = (rs.slot.clone(), rs.hold_pos());
            drop(rs);
            drop(slot);
            r
        };
        match (lossless, slot) {
            (true, None) => {
                let slot = Lossless::new()?;
                self.topic.add_lossless(&slot, pos)?;
                self.rs.lock().slot = Some(slot);
            }
            (false, Some(slot)) => {
                self.rs.lock().slot = None;
                self.topic.remove_lossless(&slot);
            }
            _ => {}
        }
        self.flags.store(flags, Relaxed);
        Ok(())
    }

    /// `IOC_MAPPED_SYNC`: a mapping reader reports where it is and what it
    /// lost. 1 when `seq` is already overwritten, else 0. The report is
    /// checked before anything (the lossless hold included) moves.
    fn mapped_sync(&self, m: abi::MappedSync) -> Result<isize> {
        let _g = self.lock_reader()?;
        self.check_demoted()?;
        let (slot, synced, counted) = {
            let rs = self.rs.lock();
            (rs.slot.clone(), rs.synced, rs.counted)
        };
        // Loss can only be reported for records never counted before: not
        // again after a seek backward.
        if m.seq < synced || m.lost > m.seq.saturating_sub(synced.max(counted)) {
            return Err(EINVAL);
        }
        let (c, lapped) = {
            let st = self.topic.state.lock();
            let ring = &st.ring;
            if m.seq > ring.next_seq() {
                return Err(ERANGE);
            }
            let found = if m.seq < ring.oldest_seq() {
                (ring.oldest(), true)
            } else {
                (ring.find(&self.topic.mem, m.seq).ok_or(ERANGE)?, false)
            };
            if let Some(l) = &slot {
                Topic::hold_back(&st, l, found.0.pos);
            }
            found
        };
        let mut rs = self.rs.lock();
        rs.synced = m.seq;
        rs.counted = rs.counted.max(m.seq);
        rs.lost = rs.lost.saturating_add(m.lost);
        self.move_cursor(rs, c);
        self.topic.stats.lost.add(m.lost, Relaxed);
        Ok(isize::from(lapped))
    }

    /// This file's identity for the publisher lock: its (pinned) address.
    fn holder_id(&self) -> usize {
        core::ptr::from_ref(self) as usize
    }

    fn info(&self) -> abi::Info {
        let (cursor, lost, lossless) = {
            let rs = self.rs.lock();
            let lossless = rs.slot.as_ref().is_some_and(|l| !l.demoted.load(Acquire));
            (rs.cursor, rs.lost, lossless)
        };
        let mut flags = self.flags.load(Relaxed) & !abi::FLAG_LOSSLESS;
        if lossless {
            flags |= abi::FLAG_LOSSLESS;
        }
        let st = self.topic.state.lock();
        abi::Info {
            abi_version: abi::ABI_VERSION,
            flags,
            ring_size: st.ring.size(),
            record_max: u32::try_from(self.topic.record_max).unwrap_or(u32::MAX),
            header_size: abi::header_size(flags) as u32,
            cursor_seq: cursor.seq,
            oldest_seq: st.ring.oldest_seq(),
            next_seq: st.ring.next_seq(),
            lost,
            topic_lost: self.topic.stats.lost.load(Relaxed),
            topic_flags: self.topic.flags,
            stall_ms: self.topic.stall_ms,
            lossless_readers: self.topic.stats.lossless_readers.load(Relaxed),
        }
    }

    /// `poll()`: `POLLIN` with unread data, `POLLOUT` for writers, `POLLHUP`
    /// once the topic is removed. Readers wait on the readers' queue,
    /// writers on the writers' queue.
    ///
    /// # Safety
    ///
    /// `table` is null or the valid poll table of this `poll` call on `file`.
    pub(crate) unsafe fn poll(&self, file: &File, table: *mut bindings::poll_table) -> u32 {
        if self.can_read {
            // SAFETY: Caller contract.
            unsafe { self.topic.readers.register_poll(file, table) };
        }
        if self.can_write {
            // SAFETY: Caller contract.
            unsafe { self.topic.writers.register_poll(file, table) };
        }
        let dead = self.topic.mem.removed();
        let mut mask = 0;
        // Only when a largest record fits without passing a lossless
        // reader; otherwise that reader's progress wakes us.
        if self.can_write && !dead && self.topic.has_room() {
            mask |= KEY_OUT;
        }
        if self.can_read && self.has_unread() && !dead {
            mask |= KEY_IN;
        }
        if dead {
            mask |= bindings::POLLHUP;
            if self.can_read && self.has_unread_data() {
                mask |= KEY_IN;
            }
        }
        mask
    }

    fn has_unread_data(&self) -> bool {
        self.split_pending.load(Acquire)
            || self.topic.mem.head_seq() != self.cursor_seq.load(Acquire)
    }

    /// `mmap()`: a read-only view of the control page and the ring
    /// (`ABI.md`, "Mapped ring"). Refused outside the initial pid and user
    /// namespaces, because the ring's headers hold global pids and kuids.
    pub(crate) fn mmap(&self, vma: &VmaNew) -> Result {
        if !self.can_read {
            return Err(EACCES);
        }
        if !provenance::in_initial_namespaces() {
            return Err(EPERM);
        }
        if vma.writable() {
            return Err(EPERM);
        }
        // No later mprotect(PROT_WRITE) either.
        vma.try_clear_maywrite()?;
        // SAFETY: `vma` is a valid VMA being set up by this mmap call.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        let len = vma.end() - vma.start();
        if pgoff != 0 || len > self.topic.mem.area_len() {
            return Err(EINVAL);
        }
        vma.set_dontexpand();
        vma.set_dontdump();
        let vma = vma.set_mixedmap();
        let pages = len.div_ceil(bindings::PAGE_SIZE);
        for i in 0..pages {
            let page = self.topic.mem.page(i).ok_or(EINVAL)?;
            let addr = vma.start() + i * bindings::PAGE_SIZE;
            // SAFETY: `vma` is being set up by this mmap call (so its mmap
            // lock is held) and is VM_MIXEDMAP; `page` is a page of the
            // ring's vmalloc area, which lives until the topic is dropped,
            // after every file (and so every mapping, which holds its file)
            // is gone; the mapping takes its own reference on the page.
            kernel::error::to_result(unsafe {
                bindings::vm_insert_page(vma.as_ptr(), addr, page)
            })?;
        }
        Ok(())
    }

    /// The lines this file adds to `/proc/<pid>/fdinfo/<fd>`.
    pub(crate) fn show_fdinfo(&self, m: &SeqFile) {
        let i = self.info();
        let mode = match i.flags & (abi::FLAG_RECORD | abi::FLAG_STRICT) {
            0 => "bytes",
            abi::FLAG_RECORD => "record",
            abi::FLAG_STRICT => "bytes,strict",
            _ => "record,strict",
        };
        let batch = if i.flags & abi::FLAG_BATCH != 0 {
            ",batch"
        } else {
            ""
        };
        let lossless = if i.flags & abi::FLAG_LOSSLESS != 0 {
            ",lossless"
        } else {
            ""
        };
        seq_print!(
            m,
            "fanout_mode:\t{}{}{}\nfanout_cursor_seq:\t{}\nfanout_lost:\t{}\nfanout_oldest_seq:\t{}\nfanout_next_seq:\t{}\nfanout_ring_size:\t{}\nfanout_record_max:\t{}\n",
            mode,
            batch,
            lossless,
            i.cursor_seq,
            i.lost,
            i.oldest_seq,
            i.next_seq,
            i.ring_size,
            i.record_max
        );
    }
}

#[pinned_drop]
impl PinnedDrop for OpenFile {
    fn drop(self: Pin<&mut Self>) {
        self.topic.release_publisher(self.holder_id());
        let slot = self.rs.lock().slot.take();
        if let Some(l) = slot {
            // Releases any writer this reader held up.
            self.topic.remove_lossless(&l);
        }
        let stats = &self.topic.stats;
        if self.can_read {
            stats.readers.fetch_sub(1, Relaxed);
        }
        if self.can_write {
            stats.writers.fetch_sub(1, Relaxed);
        }
    }
}
