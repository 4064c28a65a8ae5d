// SPDX-License-Identifier: GPL-2.0
//! An open file of a topic: its read cursor and mode, and what `read`,
//! `write`, `ioctl`, `poll` and fdinfo do with it. All safe Rust; the raw
//! `file_operations` glue is in `fops.rs`.
//!
//! Locking: a file's `read` mutex (or `write_buf` mutex) is taken before the
//! topic's spinlock, never after. The spinlock is held only while copying
//! between the ring and the file's kernel bounce buffer; user memory is
//! touched with no spinlock held, so a reader or writer with a faulting or
//! slow buffer can never stall anyone else.

use crate::abi::{self, record_span, RecordHeader, RECORD_HEADER_SIZE};
use crate::provenance::{self, Viewer};
use crate::ring::{Cursor, Next};
use crate::topic::{State, Topic};
use kernel::{
    bindings, current,
    fs::File,
    iov::{IovIterDest, IovIterSource},
    new_mutex,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        poll::PollTable,
        Arc, Mutex,
    },
    uaccess::{UserPtr, UserSlice},
};

/// A read copies at most this much (or one whole record, if larger) per call.
const READ_CHUNK: usize = 64 * 1024;

// Our hand-written ioctl encoding in `abi.rs` (shared with userspace) must
// be the kernel's own.
const _: () = {
    use kernel::ioctl::{_IOR, _IOW, _IOWR};
    assert!(abi::IOC_SET_FLAGS == _IOW::<u32>(abi::IOC_TYPE, 1));
    assert!(abi::IOC_SEEK == _IOWR::<abi::Seek>(abi::IOC_TYPE, 2));
    assert!(abi::IOC_INFO == _IOR::<abi::Info>(abi::IOC_TYPE, 3));
    assert!(abi::RECORD_HEADER_SIZE == 32);
};

// SAFETY: `Seek` is `repr(C)`, made of integers with no padding (u32, u32,
// u64), so every byte pattern is a valid value.
unsafe impl kernel::transmute::FromBytes for abi::Seek {}
// SAFETY: As above: no padding, so every byte of a `Seek` is initialized.
unsafe impl kernel::transmute::AsBytes for abi::Seek {}
// SAFETY: `Info` is `repr(C)`, made of integers laid out without padding
// (2 x u32, u64, 2 x u32, 5 x u64), so every byte is initialized.
unsafe impl kernel::transmute::AsBytes for abi::Info {}

struct ReadState {
    cursor: Cursor,
    /// Records are copied here under the topic lock, then to the user
    /// without it. Allocated on the first read.
    bounce: KVVec<u8>,
    /// `bounce[split.0..split.1]` is the unread rest of one record that was
    /// larger than the caller's buffer (plain mode only).
    split: (usize, usize),
    /// Records this file lost to overrun.
    lost: u64,
}

/// The private data of an open topic file.
#[pin_data(PinnedDrop)]
pub(crate) struct OpenFile {
    topic: Arc<Topic>,
    can_read: bool,
    can_write: bool,
    #[pin]
    read: Mutex<ReadState>,
    #[pin]
    write_buf: Mutex<KVVec<u8>>,
    /// `abi::FLAG_*` of this file.
    flags: Atomic<u32>,
    /// Copy of `read.cursor.seq`, for `poll` and sleeping readers, which do
    /// not take the `read` mutex.
    cursor_seq: Atomic<u64>,
    /// Whether `read.split` holds unread bytes.
    split_pending: Atomic<bool>,
}

impl OpenFile {
    /// Opens `topic`; the new file reads only what is written from now on.
    pub(crate) fn open(
        topic: Arc<Topic>,
        can_read: bool,
        can_write: bool,
    ) -> Result<Pin<KBox<Self>>> {
        let cursor = topic.state.lock().ring.now();
        let this = KBox::pin_init(
            try_pin_init!(Self {
                topic,
                can_read,
                can_write,
                read <- new_mutex!(ReadState {
                    cursor,
                    bounce: KVVec::new(),
                    split: (0, 0),
                    lost: 0,
                }),
                write_buf <- new_mutex!(KVVec::new()),
                flags: Atomic::new(0),
                cursor_seq: Atomic::new(cursor.seq),
                split_pending: Atomic::new(false),
            }? Error),
            GFP_KERNEL,
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

    fn has_unread(&self, st: &State) -> bool {
        st.dead
            || self.split_pending.load(Acquire)
            || st.ring.next_seq() != self.cursor_seq.load(Acquire)
    }

    fn set_cursor(&self, rs: &mut ReadState, c: Cursor) {
        rs.cursor = c;
        self.cursor_seq.store(c.seq, Release);
    }

    /// `read()`: whole records (or the pieces of one larger than the
    /// caller's buffer); blocks unless `nonblock`; 0 once the topic is
    /// removed and drained.
    pub(crate) fn read(&self, iov: &mut IovIterDest<'_>, nonblock: bool) -> Result<usize> {
        if iov.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(n) = self.read_once(iov)? {
                return Ok(n);
            }
            if nonblock {
                return Err(EAGAIN);
            }
            let mut st = self.topic.state.lock();
            while !self.has_unread(&st) {
                if self.topic.wake.wait_interruptible(&mut st) {
                    return Err(ERESTARTSYS);
                }
            }
        }
    }

    /// One pass: `Some(bytes)` when something (or EOF) was delivered, `None`
    /// when there is nothing to read yet.
    fn read_once(&self, iov: &mut IovIterDest<'_>) -> Result<Option<usize>> {
        let mut guard = self.read.lock();
        let rs = &mut *guard;
        if rs.split.0 < rs.split.1 {
            return self.read_split(rs, iov).map(Some);
        }
        if rs.bounce.is_empty() {
            let cap = record_span(self.topic.record_max).max(READ_CHUNK);
            rs.bounce = KVVec::from_elem(0u8, cap, GFP_KERNEL)?;
        }
        let flags = self.flags.load(Relaxed);
        let record_mode = flags & abi::FLAG_RECORD != 0;
        let viewer = Viewer::current();
        let limit = iov.len().min(rs.bounce.len());
        let mut out = 0usize;
        let mut cur = rs.cursor;
        let mut split = false;
        let dead = {
            let st = self.topic.state.lock();
            loop {
                match st.ring.next(cur) {
                    Next::Empty => break,
                    Next::Lapped { lost } => {
                        // The loss is a fact whatever this read does next.
                        cur = st.ring.oldest();
                        self.set_cursor(rs, cur);
                        rs.lost = rs.lost.saturating_add(lost);
                        self.topic.stats.lost.add(lost, Relaxed);
                        if flags & abi::FLAG_STRICT != 0 {
                            return Err(EPIPE);
                        }
                    }
                    Next::Record {
                        header,
                        payload,
                        next,
                    } => {
                        let len = payload.len();
                        let need = if record_mode { record_span(len) } else { len };
                        if out + need > limit {
                            if out == 0 {
                                if record_mode {
                                    // The caller's buffer cannot hold this
                                    // record; it stays unread.
                                    return Err(EMSGSIZE);
                                }
                                let dst = rs.bounce.get_mut(..len).ok_or(EINVAL)?;
                                dst.copy_from_slice(payload);
                                rs.split = (0, len);
                                cur = next;
                                split = true;
                            }
                            break;
                        }
                        let dst = rs.bounce.get_mut(out..out + need).ok_or(EINVAL)?;
                        if record_mode {
                            let h = RecordHeader {
                                len: header.len,
                                flags: 0,
                                seq: header.seq,
                                timestamp_ns: header.timestamp_ns,
                                pid: viewer.pid(header.pid),
                                uid: viewer.uid(header.uid),
                            };
                            let (head, rest) = dst.split_at_mut(RECORD_HEADER_SIZE);
                            head.copy_from_slice(&h.to_bytes());
                            let (body, pad) = rest.split_at_mut(len);
                            body.copy_from_slice(payload);
                            pad.fill(0);
                        } else {
                            dst.copy_from_slice(payload);
                        }
                        out += need;
                        cur = next;
                    }
                }
            }
            st.dead
        };
        if split {
            self.set_cursor(rs, cur);
            self.split_pending.store(true, Release);
            return self.read_split(rs, iov).map(Some);
        }
        if out == 0 {
            return Ok(dead.then_some(0));
        }
        let bytes = rs.bounce.get(..out).ok_or(EINVAL)?;
        if iov.copy_to_iter(bytes) < out {
            // Nothing is consumed: the same records come again next read.
            return Err(EFAULT);
        }
        self.set_cursor(rs, cur);
        Ok(Some(out))
    }

    /// Hands over more of a record that was larger than the caller's buffer.
    fn read_split(&self, rs: &mut ReadState, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let (start, end) = rs.split;
        let rest = rs.bounce.get(start..end).ok_or(EINVAL)?;
        let n = rest.len().min(iov.len());
        let copied = iov.copy_to_iter(rest.get(..n).ok_or(EINVAL)?);
        if copied == 0 {
            return Err(EFAULT);
        }
        rs.split.0 = start + copied;
        if rs.split.0 >= end {
            rs.split = (0, 0);
            self.split_pending.store(false, Release);
        }
        Ok(copied)
    }

    /// `write()`: each `record_max` bytes become one record; never blocks.
    pub(crate) fn write(&self, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let total = iov.len();
        if total == 0 {
            return Ok(0);
        }
        let max = self.topic.record_max;
        let mut buf = self.write_buf.lock();
        if buf.is_empty() {
            *buf = KVVec::from_elem(0u8, max, GFP_KERNEL)?;
        }
        let mut done = 0;
        while done < total {
            let chunk = (total - done).min(max);
            let data = buf.get_mut(..chunk).ok_or(EINVAL)?;
            let copied = iov.copy_from_iter(data);
            // A fault in the middle of a record publishes none of it.
            let result = if copied < chunk {
                Err(EFAULT)
            } else {
                self.topic.publish(data, provenance::stamp())
            };
            if let Err(e) = result {
                return if done > 0 { Ok(done) } else { Err(e) };
            }
            done += chunk;
            if done < total && current!().signal_pending() {
                break;
            }
        }
        Ok(done)
    }

    /// The ioctls of `abi.rs`.
    pub(crate) fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        let ptr = UserPtr::from_addr(arg);
        match cmd {
            abi::IOC_SET_FLAGS => {
                let flags: u32 = UserSlice::new(ptr, size_of::<u32>()).reader().read()?;
                if flags & !abi::FLAGS_ALL != 0 {
                    return Err(EINVAL);
                }
                let rs = self.read.lock();
                let changes_mode = (flags ^ self.flags.load(Relaxed)) & abi::FLAG_RECORD != 0;
                if changes_mode && rs.split.0 < rs.split.1 {
                    // Finish reading the split record first.
                    return Err(EBUSY);
                }
                self.flags.store(flags, Relaxed);
            }
            abi::IOC_SEEK => {
                let (mut r, mut w) = UserSlice::new(ptr, size_of::<abi::Seek>()).reader_writer();
                let mut seek: abi::Seek = r.read()?;
                if seek.reserved != 0 {
                    return Err(EINVAL);
                }
                let mut rs = self.read.lock();
                let c = {
                    let st = self.topic.state.lock();
                    match seek.whence {
                        abi::SEEK_OLDEST => st.ring.oldest(),
                        abi::SEEK_LAST => st.ring.last(seek.arg),
                        abi::SEEK_SEQ => st.ring.find(seek.arg).ok_or(ERANGE)?,
                        abi::SEEK_NOW => st.ring.now(),
                        _ => return Err(EINVAL),
                    }
                };
                seek.arg = c.seq;
                // Report first: if that faults, the cursor has not moved.
                w.write(&seek)?;
                self.set_cursor(&mut rs, c);
                rs.split = (0, 0);
                self.split_pending.store(false, Release);
                drop(rs);
                // A reader of this file sleeping in `read` re-checks.
                self.topic.wake.notify_all();
            }
            abi::IOC_CLAIM_PUBLISHER => self.topic.claim_publisher(self.holder_id())?,
            abi::IOC_INFO => {
                let info = self.info();
                UserSlice::new(ptr, size_of::<abi::Info>())
                    .writer()
                    .write(&info)?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }

    /// This file's identity for the publisher lock: its (pinned) address.
    fn holder_id(&self) -> usize {
        core::ptr::from_ref(self) as usize
    }

    fn info(&self) -> abi::Info {
        let rs = self.read.lock();
        let st = self.topic.state.lock();
        abi::Info {
            abi_version: abi::ABI_VERSION,
            flags: self.flags.load(Relaxed),
            ring_size: st.ring.size(),
            record_max: u32::try_from(self.topic.record_max).unwrap_or(u32::MAX),
            header_size: RECORD_HEADER_SIZE as u32,
            cursor_seq: rs.cursor.seq,
            oldest_seq: st.ring.oldest_seq(),
            next_seq: st.ring.next_seq(),
            lost: rs.lost,
            topic_lost: self.topic.stats.lost.load(Relaxed),
        }
    }

    /// `poll()`: `POLLIN` with unread data, `POLLOUT` for writers, `POLLHUP`
    /// once the topic is removed.
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        table.register_wait(file, &self.topic.wake);
        let st = self.topic.state.lock();
        let mut mask = 0;
        if self.can_write && !st.dead {
            mask |= bindings::POLLOUT | bindings::POLLWRNORM;
        }
        let unread =
            self.split_pending.load(Acquire) || st.ring.next_seq() != self.cursor_seq.load(Acquire);
        if self.can_read && unread {
            mask |= bindings::POLLIN | bindings::POLLRDNORM;
        }
        if st.dead {
            mask |= bindings::POLLHUP;
        }
        mask
    }

    /// The lines this file adds to `/proc/<pid>/fdinfo/<fd>`.
    pub(crate) fn show_fdinfo(&self, m: &SeqFile) {
        let i = self.info();
        let mode = match i.flags & abi::FLAGS_ALL {
            0 => "bytes",
            abi::FLAG_RECORD => "record",
            abi::FLAG_STRICT => "bytes,strict",
            _ => "record,strict",
        };
        seq_print!(
            m,
            "fanout_mode:\t{}\nfanout_cursor_seq:\t{}\nfanout_lost:\t{}\nfanout_oldest_seq:\t{}\nfanout_next_seq:\t{}\nfanout_ring_size:\t{}\nfanout_record_max:\t{}\n",
            mode,
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
        let stats = &self.topic.stats;
        if self.can_read {
            stats.readers.fetch_sub(1, Relaxed);
        }
        if self.can_write {
            stats.writers.fetch_sub(1, Relaxed);
        }
    }
}
