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
//!
//! Lossless readers and the stall clock are in `lossless.rs`.

#[path = "lossless.rs"]
mod lossless;

pub(crate) use lossless::Lossless;
use lossless::StallTimer;

use crate::abi;
use crate::atomics::{full_barrier, AtomicBool, AtomicU64, Relaxed as CoreRelaxed, SeqCst};
use crate::ring::{
    index_len, Chunk, Cursor, Frames, Mem, Reservation, Ring, RingError, Stamp, Stamper,
};
use crate::ringmem::RingMem;
use crate::waitq::{Turn, TurnGuard, WaitQueue};
use kernel::{
    alloc::flags::GFP_KERNEL_ACCOUNT,
    bindings,
    ffi::c_ulong,
    new_spinlock,
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
    /// The slots of the lossless readers (unordered); never more than
    /// `abi::LOSSLESS_MAX`, room for which is allocated with the topic.
    lossless: KVec<Arc<Lossless>>,
    /// The stall clock: since when (jiffies) a writer or poller has found
    /// no room with the floor it holds; `None` while nobody waits.
    stall: Option<(c_ulong, u64)>,
}

/// A statistics counter. Nothing is ordered against it, so it is a `core`
/// atomic, updated in place: the kernel crate's `Atomic` calls a C helper
/// out of line for each operation, and every `write()` makes two.
#[derive(Default)]
pub(crate) struct Counter(crate::atomics::AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, crate::atomics::Relaxed);
    }

    pub(crate) fn sub(&self, n: u64) {
        self.0.fetch_sub(n, crate::atomics::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(crate::atomics::Relaxed)
    }
}

/// Counters of a topic, kept outside the lock.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) records: Counter,
    pub(crate) bytes: Counter,
    pub(crate) lost: Counter,
    pub(crate) readers: Counter,
    pub(crate) writers: Counter,
    pub(crate) lossless_readers: Counter,
    /// Times a writer waited for a lossless reader.
    pub(crate) writer_waits: Counter,
    /// Lossless readers demoted by the stall timeout.
    pub(crate) demoted: Counter,
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
    /// `abi::TOPIC_*` flags the topic was created with.
    pub(crate) flags: u32,
    /// Stall timeout in milliseconds as in effect (the default filled in;
    /// `abi::STALL_MS_NEVER` for none); 0 on a lossy topic.
    pub(crate) stall_ms: u32,
    /// The stall timeout in jiffies (at least 1); 0 for none.
    stall_jiffies: c_ulong,
    /// Owner and group (raw kuid, kgid): who may be a lossless reader.
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Wakes the writers' queue when the stall clock runs out, so pollers
    /// for `POLLOUT` look again (and demote).
    #[pin]
    stall_timer: StallTimer,
    /// A writer or poller found no room: the next lossless reader to make
    /// progress wakes the writers' queue.
    room_wanted: AtomicBool,
    /// The lowest head (ring position) at which a reader asked since the
    /// last wakeup to have the readers' queue woken; `u64::MAX` for none.
    /// A reader asks before every test that may send it to sleep
    /// ([`Topic::want_wake`]); a write wakes the queue only when its head
    /// reaches this ([`Topic::wake_readers`]).
    wake_at: AtomicU64,
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
    /// `stall_ms` is the timeout in effect (`abi::STALL_MS_NEVER` for none),
    /// `uid` and `gid` the owner and group.
    pub(crate) fn new(
        ring_size: usize,
        record_max: usize,
        flags: u32,
        stall_ms: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Arc<Self>> {
        let mem = RingMem::new(ring_size, record_max)?;
        let index = KVec::from_elem(0u64, index_len(ring_size), GFP_KERNEL_ACCOUNT)?;
        let ring = Ring::new(ring_size, index).map_err(|_: RingError| EINVAL)?;
        let lossless_topic = flags & abi::TOPIC_LOSSLESS != 0;
        let lossless = KVec::with_capacity(
            if lossless_topic { abi::LOSSLESS_MAX } else { 0 },
            GFP_KERNEL_ACCOUNT,
        )?;
        let stall_jiffies = if !lossless_topic || stall_ms == abi::STALL_MS_NEVER {
            0
        } else {
            // At least one jiffy: 0 means "no timeout".
            kernel::time::msecs_to_jiffies(stall_ms).max(1)
        };
        let topic = Arc::pin_init(
            try_pin_init!(Self {
                state <- new_spinlock!(
                    State { ring, dead: false, lossless, stall: None },
                    "fanout_topic"
                ),
                mem,
                readers <- WaitQueue::new(c"fanout_readers", kernel::static_lock_class!()),
                writers <- WaitQueue::new(c"fanout_writers", kernel::static_lock_class!()),
                record_max,
                stats: Stats::default(),
                publisher: Atomic::new(0),
                writer_turn: Turn::new(),
                flags,
                stall_ms,
                stall_jiffies,
                uid,
                gid,
                stall_timer <- StallTimer::new(),
                room_wanted: AtomicBool::new(false),
                wake_at: AtomicU64::new(u64::MAX),
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
    /// new tail is published before anything is overwritten. Waits for
    /// lossless readers (see [`Topic::with_room`]).
    pub(crate) fn reserve(
        &self,
        _w: &WriterGuard<'_>,
        len: usize,
        nonblock: bool,
    ) -> Result<Reservation> {
        // The ring publishes the new tail (`Mem::evicted`) before it writes
        // anything below it.
        self.with_room(nonblock, len, |ring, mem, floor| {
            ring.reserve(mem, len, floor)
        })
    }

    /// Reserves a chunk for a batch copied in one go (see
    /// `Ring::reserve_bytes`), publishing the new tail first. Waits for
    /// lossless readers as [`Topic::reserve`] does.
    pub(crate) fn reserve_bytes(
        &self,
        _w: &WriterGuard<'_>,
        want: u64,
        min: u64,
        nonblock: bool,
    ) -> Result<Chunk> {
        // A chunk needs room for a largest frame.
        self.with_room(nonblock, self.record_max, |ring, mem, floor| {
            ring.reserve_bytes(mem, want, min, floor)
        })
    }

    /// Publishes a small record from a kernel buffer in one go: reserve,
    /// copy and commit under one hold of the topic lock (no separate
    /// reservation, so no second lock round trip and nothing to abort).
    /// Waits for lossless readers as [`Topic::reserve`] does; `ENODEV`,
    /// publishing nothing, once the topic was removed.
    pub(crate) fn publish_small(
        &self,
        _w: &WriterGuard<'_>,
        payload: &[u8],
        stamp: Stamp,
        nonblock: bool,
    ) -> Result {
        self.with_room(nonblock, payload.len(), |ring, mem, floor| {
            Self::put_small(ring, mem, payload, stamp, floor)
        })
    }

    /// [`Topic::publish_small`] without the writer turn, where the turn
    /// would change nothing: no other writer is inside `write()` (one that
    /// is may be between two records of one call, which stay together) and
    /// the record fits without waiting for a lossless reader. `None` when
    /// either is not so: the caller then takes the turn and calls
    /// [`Topic::publish_small`]. Saves a one-record `write()` the turn's
    /// atomic operations and barriers.
    pub(crate) fn publish_small_unturned(&self, payload: &[u8], stamp: Stamp) -> Option<Result> {
        let mut st = self.state.lock();
        if st.dead {
            return Some(Err(ENODEV));
        }
        // A writer takes the turn before it publishes anything, and every
        // publication holds this lock: so a turn found free under the lock
        // means that no `write()` has published part of its records yet,
        // and one that takes the turn from now on publishes after this
        // record.
        if !self.writer_turn.is_free() {
            return None;
        }
        let floor = st.floor();
        match Self::put_small(&mut st.ring, &self.mem, payload, stamp, floor) {
            Ok(()) => {
                // As `with_room` does when a reservation succeeds.
                st.stall = None;
                Some(Ok(()))
            }
            // Only the turn's holder waits for lossless readers.
            Err(RingError::Full) => None,
            Err(_) => Some(Err(EINVAL)),
        }
    }

    /// Reserves, copies and commits a small record under the topic lock
    /// (the caller holds it, through `ring`), publishing the head.
    fn put_small(
        ring: &mut Ring<KVec<u64>>,
        mem: &RingMem,
        payload: &[u8],
        stamp: Stamp,
        floor: u64,
    ) -> Result<(), RingError> {
        let mask = mem.size() as u64 - 1;
        let r = ring.reserve(mem, payload.len(), floor)?;
        // The reservation is inside the ring, so the copy cannot fail; if
        // it did, nothing is published.
        if !mem.put(r.payload_off(mask), payload) {
            ring.abort(mem, &r);
            mem.publish_head(ring.head(), ring.next_seq());
            return Err(RingError::BadLength);
        }
        ring.commit(mem, &r, stamp);
        mem.publish_head(ring.head(), ring.next_seq());
        Ok(())
    }

    /// Publishes a reserved record whose payload has been copied in;
    /// `ENODEV`, publishing nothing, when the topic was removed meanwhile
    /// (its readers may already have seen the end).
    pub(crate) fn commit(&self, _w: &WriterGuard<'_>, r: &Reservation, stamp: Stamp) -> Result {
        let mut st = self.state.lock();
        if st.dead {
            st.ring.cancel();
            return Err(ENODEV);
        }
        st.ring.commit(&self.mem, r, stamp);
        self.mem.publish_head(st.ring.head(), st.ring.next_seq());
        Ok(())
    }

    /// Publishes the whole, valid frames copied into a chunk; `ENODEV`, as
    /// [`Topic::commit`], once the topic was removed.
    pub(crate) fn commit_frames(
        &self,
        _w: &WriterGuard<'_>,
        c: &Chunk,
        copied: u64,
        stamp: Stamp,
    ) -> Result<Frames> {
        self.commit_chunk(|ring, mem| ring.commit_frames(mem, c, copied, self.record_max, stamp))
    }

    /// Publishes the records a [`Stamper`] wrote into a chunk (see
    /// `Ring::commit_stamped`); `ENODEV` as [`Topic::commit_frames`].
    pub(crate) fn commit_stamped(
        &self,
        _w: &WriterGuard<'_>,
        c: &Chunk,
        s: &Stamper<'_>,
    ) -> Result<Frames> {
        self.commit_chunk(|ring, mem| ring.commit_stamped(mem, c, s, self.record_max))
    }

    /// Commits the open chunk with `commit` under the topic lock and
    /// publishes the head; `ENODEV`, giving the chunk back, once the topic
    /// was removed.
    fn commit_chunk(
        &self,
        commit: impl FnOnce(&mut Ring<KVec<u64>>, &RingMem) -> Frames,
    ) -> Result<Frames> {
        let mut st = self.state.lock();
        if st.dead {
            st.ring.cancel();
            return Err(ENODEV);
        }
        let f = commit(&mut st.ring, &self.mem);
        self.mem.publish_head(st.ring.head(), st.ring.next_seq());
        Ok(f)
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
        self.seek(None, f)
    }

    /// As [`Topic::cursor`], and the lossless `slot` (if any) is moved back
    /// to the new cursor under the same lock, so nothing from there on can
    /// be overwritten before the reader gets there.
    pub(crate) fn seek(
        &self,
        slot: Option<&Lossless>,
        f: impl FnOnce(&Ring<KVec<u64>>, &RingMem) -> Option<Cursor>,
    ) -> Option<Cursor> {
        let st = self.state.lock();
        let c = f(&st.ring, &self.mem)?;
        if let Some(l) = slot {
            Self::hold_back(&st, l, c.pos);
        }
        Some(c)
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

    /// Asks for the readers' queue to be woken once the head reaches `at`,
    /// then orders that wish before the caller's next look at the head.
    /// The caller is already on the readers' queue.
    ///
    /// With [`Topic::wake_readers`] this is the store-buffering pattern:
    /// the writer stores the head, then (after a full barrier) loads the
    /// wish; the reader stores the wish, then (after a full barrier) loads
    /// the head. One of them sees the other's store, so either the writer
    /// wakes the reader or the reader sees the new head and does not sleep.
    pub(crate) fn want_wake(&self, at: u64) {
        if self.wake_at.load(CoreRelaxed) > at {
            self.wake_at.fetch_min(at, SeqCst);
        }
        full_barrier();
    }

    /// After a write published records: wakes the readers' queue (key
    /// `POLLIN`) if the new head reaches the lowest wish made since the
    /// last wakeup, and takes every wish made so far. A reader whose wish
    /// is taken was on the queue when it made it, so this wakeup reaches
    /// it, and it asks again before it sleeps again; a reader already
    /// woken and not yet running has made no new wish, so the writes
    /// until it runs skip the queue.
    pub(crate) fn wake_readers(&self) {
        // Also the barrier the queue check below needs after the head's
        // store (as `wq_has_sleeper`'s), so that check adds none.
        full_barrier();
        if self.mem.head() < self.wake_at.load(CoreRelaxed) {
            return;
        }
        self.wake_at.swap(u64::MAX, SeqCst);
        self.readers.wake_fenced(KEY_IN);
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
        // SAFETY: The timer was initialized in `new`; this waits for a
        // running callback and keeps it from being armed again, so none
        // runs once the topic's memory is freed.
        unsafe { bindings::timer_shutdown_sync(self.stall_timer.raw()) };
        crate::registry::uncharge(self.mem.size() as u64);
        LIVE.fetch_sub(1, Relaxed);
    }
}
