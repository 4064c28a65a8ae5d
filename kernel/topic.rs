// SPDX-License-Identifier: GPL-2.0
//! A topic: one record ring shared by every open file of one device, the
//! wait queues its readers and writers sleep on, and its counters.
//!
//! A topic is reference counted ([`Arc`]): the device registration holds one
//! reference and every open file another (a mapping holds its file), so a
//! topic removed while files are open lives on, marked dead, until the last
//! one is closed.
//!
//! Locking: the topic spinlock guards the ring's bookkeeping only; it is
//! held to reserve, commit or seek, never while user memory is copied.
//! Writers are serialised by a sleeping, interruptible lock ([`WriterGuard`])
//! held across their copies, so a writer stalled on a page fault makes other
//! writers wait interruptibly and never blocks readers.

use crate::ring::{index_len, Chunk, Cursor, Frames, Reservation, Ring, RingError, Stamp};
use crate::ringmem::RingMem;
use crate::waitq::{Turn, TurnGuard, WaitQueue};
use kernel::{
    alloc::flags::GFP_KERNEL_ACCOUNT,
    bindings, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Atomic, Full, Relaxed},
        Arc, SpinLock,
    },
};

/// What the topic lock protects.
pub(crate) struct State {
    /// The records' positions and sequence numbers.
    pub(crate) ring: Ring<KVec<u64>>,
    /// Set once when the topic is removed; never cleared.
    pub(crate) dead: bool,
}

/// Counters of a topic, kept outside the lock.
pub(crate) struct Stats {
    pub(crate) records: Atomic<u64>,
    pub(crate) bytes: Atomic<u64>,
    pub(crate) lost: Atomic<u64>,
    pub(crate) readers: Atomic<u64>,
    pub(crate) writers: Atomic<u64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            records: Atomic::new(0),
            bytes: Atomic::new(0),
            lost: Atomic::new(0),
            readers: Atomic::new(0),
            writers: Atomic::new(0),
        }
    }
}

/// Topics alive right now (made and not yet freed). Checked at unload: a
/// topic still alive then is a leak, reported in the kernel log.
pub(crate) static LIVE: Atomic<i64> = Atomic::new(0);

/// Poll masks used as wakeup keys.
pub(crate) const KEY_IN: u32 = bindings::POLLIN | bindings::POLLRDNORM;
pub(crate) const KEY_OUT: u32 = bindings::POLLOUT | bindings::POLLWRNORM;
const KEY_HUP: u32 = bindings::POLLHUP;

/// One topic.
#[pin_data(PinnedDrop)]
pub(crate) struct Topic {
    /// The ring's bookkeeping and the dead flag. A spinlock: it is held only
    /// for bookkeeping and header copies inside the kernel.
    #[pin]
    pub(crate) state: SpinLock<State>,
    /// The ring's bytes and the control page readers can map.
    pub(crate) mem: RingMem,
    /// Readers wait here (in `read` and `poll`), woken with `POLLIN`.
    #[pin]
    pub(crate) readers: WaitQueue,
    /// Writers wait here for the writer lock (and `poll` for `POLLOUT`).
    #[pin]
    pub(crate) writers: WaitQueue,
    /// Largest record in bytes.
    pub(crate) record_max: usize,
    pub(crate) stats: Stats,
    /// Identity of the open file holding the publisher lock; 0 when free.
    publisher: Atomic<usize>,
    /// Held by the writer in `write()`.
    writer_turn: Turn,
}

/// Holds the topic's writer lock; dropping it lets the next writer in.
pub(crate) struct WriterGuard<'a> {
    _turn: TurnGuard<'a>,
}

impl Topic {
    /// Makes a topic with a zeroed ring of `ring_size` bytes (a power of
    /// two) and records of at most `record_max` bytes (at most a quarter of
    /// the ring). The caller has validated both. Every allocation is
    /// charged to the caller's memory cgroup.
    pub(crate) fn new(ring_size: usize, record_max: usize) -> Result<Arc<Self>> {
        let mem = RingMem::new(ring_size, record_max)?;
        let index = KVec::from_elem(0u64, index_len(ring_size), GFP_KERNEL_ACCOUNT)?;
        let ring = Ring::new(ring_size, index).map_err(|_: RingError| EINVAL)?;
        let topic = Arc::pin_init(
            try_pin_init!(Self {
                state <- new_spinlock!(State { ring, dead: false }, "fanout_topic"),
                mem,
                readers <- WaitQueue::new(c"fanout_readers", kernel::static_lock_class!()),
                writers <- WaitQueue::new(c"fanout_writers", kernel::static_lock_class!()),
                record_max,
                stats: Stats::new(),
                publisher: Atomic::new(0),
                writer_turn: Turn::new(),
            }? Error),
            GFP_KERNEL_ACCOUNT,
        )?;
        LIVE.add(1, Relaxed);
        Ok(topic)
    }

    /// Takes the writer lock, sleeping interruptibly while another writer
    /// has it (`EAGAIN` instead with `nonblock`; `ENODEV` once removed).
    pub(crate) fn lock_writer(&self, nonblock: bool) -> Result<WriterGuard<'_>> {
        self.writer_turn
            .take(&self.writers, KEY_OUT, nonblock, || self.mem.removed())?
            .map(|t| WriterGuard { _turn: t })
            .ok_or(ENODEV)
    }

    /// Reserves room for a record of `len` bytes, evicting old records; the
    /// new tail is published before anything is overwritten.
    pub(crate) fn reserve(&self, _w: &WriterGuard<'_>, len: usize) -> Result<Reservation> {
        let mut st = self.state.lock();
        if st.dead {
            return Err(ENODEV);
        }
        // The ring publishes the new tail (`Mem::evicted`) before it writes
        // anything below it.
        st.ring.reserve(&self.mem, len).map_err(|_| EINVAL)
    }

    /// Publishes a reserved record whose payload has been copied in.
    pub(crate) fn commit(&self, _w: &WriterGuard<'_>, r: &Reservation, stamp: Stamp) {
        let mut st = self.state.lock();
        st.ring.commit(&self.mem, r, stamp);
        self.mem.publish_head(st.ring.head(), st.ring.next_seq());
    }

    /// Reserves a chunk for a batch copied in one go (see
    /// `Ring::reserve_bytes`), publishing the new tail first.
    pub(crate) fn reserve_bytes(&self, _w: &WriterGuard<'_>, want: u64, min: u64) -> Result<Chunk> {
        let mut st = self.state.lock();
        if st.dead {
            return Err(ENODEV);
        }
        let c = st
            .ring
            .reserve_bytes(&self.mem, want, min)
            .map_err(|_| EINVAL)?;
        // As in `reserve`, the tail was published before anything was
        // written.
        Ok(c)
    }

    /// Publishes the whole, valid frames copied into a chunk.
    pub(crate) fn commit_frames(
        &self,
        _w: &WriterGuard<'_>,
        c: &Chunk,
        copied: u64,
        stamp: Stamp,
    ) -> Frames {
        let mut st = self.state.lock();
        let f = st
            .ring
            .commit_frames(&self.mem, c, copied, self.record_max, stamp);
        self.mem.publish_head(st.ring.head(), st.ring.next_seq());
        f
    }

    /// Turns a reservation whose copy failed into padding.
    pub(crate) fn abort(&self, _w: &WriterGuard<'_>, r: &Reservation) {
        let mut st = self.state.lock();
        st.ring.abort(&self.mem, r);
        self.mem.publish_head(st.ring.head(), st.ring.next_seq());
    }

    /// A cursor computed from the ring under the lock.
    pub(crate) fn cursor(
        &self,
        f: impl FnOnce(&Ring<KVec<u64>>, &RingMem) -> Option<Cursor>,
    ) -> Option<Cursor> {
        let st = self.state.lock();
        f(&st.ring, &self.mem)
    }

    /// Takes the publisher lock for `holder` (non-zero); `EBUSY` if another
    /// holder has it.
    pub(crate) fn claim_publisher(&self, holder: usize) -> Result {
        match self.publisher.cmpxchg(0, holder, Full) {
            Ok(_) => Ok(()),
            Err(h) if h == holder => Ok(()),
            Err(_) => Err(EBUSY),
        }
    }

    /// Releases the publisher lock if `holder` has it.
    pub(crate) fn release_publisher(&self, holder: usize) {
        let _ = self.publisher.cmpxchg(holder, 0, Full);
    }

    /// Marks the topic removed and wakes everyone waiting on it.
    pub(crate) fn kill(&self) {
        self.state.lock().dead = true;
        self.mem.mark_removed();
        self.readers.wake(KEY_IN | KEY_HUP);
        self.writers.wake(KEY_OUT | KEY_HUP);
    }
}

#[pinned_drop]
impl PinnedDrop for Topic {
    fn drop(self: Pin<&mut Self>) {
        LIVE.fetch_sub(1, Relaxed);
    }
}
