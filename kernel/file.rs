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
//!   (the seqcount pattern). Where a record-mode read returns the ring's
//!   own bytes (its 40-byte headers, to a task in the initial namespaces),
//!   each run of records (up to 16 KiB) is copied in one go and checked
//!   once. The records that pass are delivered; a record
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
//!
//! This file holds the open file itself (its state, `open`, `poll`, `mmap`,
//! fdinfo and release); the paths of the calls on it are one file each:
//! `read.rs` (`read`), `write.rs` (`write`) and `ioctl.rs` (the ioctls).

#[path = "ioctl.rs"]
mod ioctl;
#[path = "pages.rs"]
mod pages;
#[path = "read.rs"]
mod read;
#[path = "write.rs"]
mod write;

use crate::abi::{self, RECORD_HEADER_SIZE};
use crate::atomics::{Acquire, AtomicBool, AtomicU32, AtomicU64, Relaxed, Release};
use crate::provenance;
use crate::ring::Cursor;
use crate::topic::{Lossless, Topic, KEY_IN, KEY_OUT};
use crate::waitq::{Turn, TurnGuard};
use kernel::{
    bindings,
    fs::File,
    mm::virt::VmaNew,
    new_mutex, new_spinlock,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    sync::{Arc, Mutex, SpinLock, SpinLockGuard},
};

/// The size of a record header in the ring.
const HDR: u64 = RECORD_HEADER_SIZE as u64;

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
    flags: AtomicU32,
    /// Copy of `rs.cursor.seq`, for `poll` and sleeping readers.
    cursor_seq: AtomicU64,
    /// Copy of `rs.cursor.pos`, for the wake threshold.
    cursor_pos: AtomicU64,
    /// The wake threshold in ring bytes (`IOC_SET_LOWAT`), 1 to half the
    /// ring; 1 means any record.
    lowat: AtomicU64,
    /// Whether `rs.split` holds unread bytes.
    split_pending: AtomicBool,
    /// Held by the thread reading (or seeking) through this file: the
    /// cursor is its alone.
    read_turn: Turn,
    /// Line mode's buffers (see `write.rs`), allocated by the first
    /// line-mode `write()`. A sleeping lock, held across the copies of a
    /// whole `write()`; it never makes anyone wait, because only a writer
    /// holding the topic's writer turn takes it.
    #[pin]
    lines: Mutex<write::LineBuf>,
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
            euid == topic.uid
                // SAFETY: `in_group_p` only reads the current task's
                // credentials (the opener's, as this is `open`).
                || unsafe { bindings::in_group_p(bindings::kgid_t { val: topic.gid }) } != 0
                // SAFETY: `capable` only reads the current task's
                // credentials and may log an audit record; no pointer is
                // passed.
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
                flags: AtomicU32::new(0),
                cursor_seq: AtomicU64::new(cursor.seq),
                cursor_pos: AtomicU64::new(cursor.pos),
                lowat: AtomicU64::new(1),
                split_pending: AtomicBool::new(false),
                read_turn: Turn::new(),
                lines <- new_mutex!(write::LineBuf::default(), "fanout_lines"),
            }? Error),
            GFP_KERNEL_ACCOUNT,
        )?;
        let stats = &this.topic.stats;
        if can_read {
            stats.readers.add(1);
        }
        if can_write {
            stats.writers.add(1);
        }
        Ok(this)
    }

    /// Whether a reader about to sleep (in `poll` or a blocking `read()`)
    /// should not: the topic was removed, a record is half handed over, or
    /// unread records reach the wake threshold. Asks the topic first to
    /// be woken at that point ([`OpenFile::want_wake`]), so a write that
    /// this test misses wakes the caller, which must already be on the
    /// readers' queue.
    ///
    /// This is the only place a reader asks, and it is enough: every way
    /// to sleep on the readers' queue passes here after it joined the
    /// queue and before it sleeps: a blocking `read()` on each turn of its
    /// wait, `poll` and `select` on each pass, and epoll when a file is
    /// added and each time a wakeup put it on the ready list (epoll then
    /// calls `poll` to learn the events before it reports or drops them).
    fn ready_to_wake(&self) -> bool {
        self.want_wake();
        if self.split_pending.load(Acquire) || self.topic.mem.removed() {
            return true;
        }
        let lowat = self.lowat.load(Relaxed);
        self.topic.mem.head_seq() != self.cursor_seq.load(Acquire)
            && (lowat <= 1
                || self
                    .topic
                    .mem
                    .head()
                    .wrapping_sub(self.cursor_pos.load(Relaxed))
                    >= lowat)
    }

    /// Tells the topic the head at which this file wants its readers'
    /// queue woken: its cursor plus its wake threshold.
    fn want_wake(&self) {
        let at = self
            .cursor_pos
            .load(Relaxed)
            .saturating_add(self.lowat.load(Relaxed));
        self.topic.want_wake(at);
    }

    fn set_cursor(&self, rs: &mut ReadState, c: Cursor) {
        rs.cursor = c;
        self.cursor_pos.store(c.pos, Relaxed);
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

    /// `EPIPE`, once, when the stall timeout demoted this lossless reader to
    /// lossy; its lossless flag is cleared then.
    ///
    /// Called with the read turn held, which `IOC_SET_FLAGS` also holds
    /// while it sets the lossless slot and the flag together: a file
    /// without `FLAG_LOSSLESS` has no slot, so it needs no lock here (the
    /// common case, on every `read()`).
    fn check_demoted(&self) -> Result {
        if self.flags.load(Relaxed) & abi::FLAG_LOSSLESS == 0 {
            return Ok(());
        }
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

    /// This file's identity for the publisher lock: its (pinned) address.
    fn holder_id(&self) -> usize {
        core::ptr::from_ref(self) as usize
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
        if self.can_read && self.ready_to_wake() && !dead {
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
        let batch = match abi::line_delimiter(i.flags) {
            _ if i.flags & abi::FLAG_BATCH != 0 => ",batch",
            Some(0) => ",lines0",
            Some(_) => ",lines",
            None => "",
        };
        let whole = if i.flags & abi::FLAG_WHOLE_LINES != 0 {
            ",whole"
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
            "fanout_mode:\t{}{}{}{}\nfanout_cursor_seq:\t{}\nfanout_lost:\t{}\nfanout_oldest_seq:\t{}\nfanout_next_seq:\t{}\nfanout_ring_size:\t{}\nfanout_record_max:\t{}\nfanout_lowat:\t{}\n",
            mode,
            batch,
            whole,
            lossless,
            i.cursor_seq,
            i.lost,
            i.oldest_seq,
            i.next_seq,
            i.ring_size,
            i.record_max,
            self.lowat.load(Relaxed),
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
            stats.readers.sub(1);
        }
        if self.can_write {
            stats.writers.sub(1);
        }
    }
}
