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
//! Lossless readers (`ABI.md`, "Lossless readers"): each has a [`Lossless`]
//! slot, listed under the topic lock, holding the oldest position it still
//! needs. A writer's reservation evicts nothing at or after the lowest of
//! them (the *floor*); when that leaves too little room it sleeps on the
//! writers' queue until the floor moves. A reader publishes progress with a
//! release store to its slot and no topic lock, then wakes the writers only
//! if one of them (or a poller) said it wanted room: the writer sets
//! `room_wanted` and then re-reads the floor, the reader stores its position
//! and then reads `room_wanted`, each with a full barrier in between, so at
//! least one of them sees the other's store.
//!
//! The stall clock (`ABI.md`, "Stall timeout"): the first writer, poller or
//! non-blocking writer that finds no room starts it (under the topic lock,
//! with the floor it saw); it restarts whenever the floor moves, and the
//! first of them to find no room once it has run for the stall timeout
//! demotes every lossless reader below what its record needs. A timer
//! wakes the writers' queue at the deadline, so a `poll` for `POLLOUT` runs
//! again then and does the demotion itself.

use crate::abi;
use crate::compat::smp_mb;
use crate::ring::{
    index_len, Chunk, Cursor, Frames, Reservation, Ring, RingError, Stamp, NO_FLOOR,
};
use crate::ringmem::RingMem;
use crate::waitq::{Turn, TurnGuard, WaitQueue};
use kernel::{
    alloc::flags::GFP_KERNEL_ACCOUNT,
    bindings,
    ffi::{c_long, c_ulong},
    new_spinlock,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed, Release},
        Arc, SpinLock,
    },
    types::Opaque,
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

impl State {
    /// The oldest position any lossless reader still needs ([`NO_FLOOR`]
    /// when there is none): nothing at or after it may be evicted.
    fn floor(&self) -> u64 {
        self.lossless
            .iter()
            .map(|l| l.pos.load(Acquire))
            .min()
            .unwrap_or(NO_FLOOR)
    }
}

/// What a lossless reader shares with the topic's writers.
pub(crate) struct Lossless {
    /// The oldest ring position this reader still needs. Moved forward by
    /// the reader alone (release), and backward only under the topic lock.
    pub(crate) pos: Atomic<u64>,
    /// Set (under the topic lock, as the slot leaves the list) when the
    /// stall timeout demoted this reader to lossy.
    pub(crate) demoted: Atomic<bool>,
    /// `pos` when the stall clock last started (under the topic lock): a
    /// reader still there when it runs out read nothing all that time.
    mark: Atomic<u64>,
}

impl Lossless {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                pos: Atomic::new(0),
                demoted: Atomic::new(false),
                mark: Atomic::new(u64::MAX),
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }
}

/// Counters of a topic, kept outside the lock.
pub(crate) struct Stats {
    pub(crate) records: Atomic<u64>,
    pub(crate) bytes: Atomic<u64>,
    pub(crate) lost: Atomic<u64>,
    pub(crate) readers: Atomic<u64>,
    pub(crate) writers: Atomic<u64>,
    pub(crate) lossless_readers: Atomic<u64>,
    /// Times a writer waited for a lossless reader.
    pub(crate) writer_waits: Atomic<u64>,
    /// Lossless readers demoted by the stall timeout.
    pub(crate) demoted: Atomic<u64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            records: Atomic::new(0),
            bytes: Atomic::new(0),
            lost: Atomic::new(0),
            readers: Atomic::new(0),
            writers: Atomic::new(0),
            lossless_readers: Atomic::new(0),
            writer_waits: Atomic::new(0),
            demoted: Atomic::new(0),
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
    room_wanted: Atomic<bool>,
}

/// A topic's stall timer: a kernel `timer_list`.
#[repr(transparent)]
#[pin_data]
struct StallTimer {
    #[pin]
    t: Opaque<bindings::timer_list>,
}

// SAFETY: A timer is meant to be armed and shut down from any thread; every
// access goes through the kernel's timer functions and their own locking.
unsafe impl Send for StallTimer {}
// SAFETY: As above.
unsafe impl Sync for StallTimer {}

impl StallTimer {
    /// Initializes the timer with [`stall_fired`] as its callback.
    fn new() -> impl PinInit<Self> {
        let key = kernel::static_lock_class!();
        pin_init!(Self {
            // SAFETY: `slot` is valid, pinned memory for a timer; the
            // callback is `stall_fired`, whose contract the topic's drop
            // keeps; name and key are static.
            t <- Opaque::ffi_init(|slot| unsafe {
                bindings::timer_init_key(
                    slot,
                    Some(stall_fired),
                    0,
                    c"fanout_stall".as_char_ptr(),
                    key.as_ptr(),
                )
            }),
        })
    }

    fn raw(&self) -> *mut bindings::timer_list {
        self.t.get()
    }
}

/// The stall timer's callback (softirq context): wakes the writers.
///
/// # Safety
///
/// Called by the timer core for the `stall_timer` of a live [`Topic`]
/// (the topic's drop shuts the timer down and waits for this to finish).
unsafe extern "C" fn stall_fired(t: *mut bindings::timer_list) {
    let off = core::mem::offset_of!(Topic, stall_timer);
    // SAFETY: `t` is the `stall_timer` field (a `StallTimer`, which has the
    // layout of the `timer_list` it wraps) of a `Topic` that is alive until
    // its drop has shut the timer down, so stepping back by the field's
    // offset gives that topic.
    let topic = unsafe { &*t.cast::<u8>().sub(off).cast::<Topic>() };
    topic.writers.wake(KEY_OUT);
}

/// What the stall clock says to a writer or poller that found no room.
enum Stall {
    /// Readers were demoted: try again.
    Demoted,
    /// Wait, at most until this jiffy.
    Until(c_ulong),
    /// The topic has no stall timeout: wait for the readers.
    Never,
}

/// The current jiffies.
fn jiffies_now() -> c_ulong {
    // SAFETY: `jiffies` is the kernel's tick counter, always mapped; a
    // volatile read of the aligned word is what `READ_ONCE(jiffies)` does.
    unsafe { core::ptr::read_volatile(&raw const bindings::jiffies) }
}

/// Whether jiffy `a` is at or after `b` (`time_after_eq`).
fn reached(a: c_ulong, b: c_ulong) -> bool {
    a.wrapping_sub(b) as c_long >= 0
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
                stats: Stats::new(),
                publisher: Atomic::new(0),
                writer_turn: Turn::new(),
                flags,
                stall_ms,
                stall_jiffies,
                uid,
                gid,
                stall_timer <- StallTimer::new(),
                room_wanted: Atomic::new(false),
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

    /// Runs `attempt` under the topic lock with the lossless readers' floor
    /// until it finds room. While it does not, the writer sleeps
    /// (interruptibly) until the floor moves or the stall clock runs out:
    /// `EAGAIN` instead with `nonblock`, `ERESTARTSYS` on a signal, `ENODEV`
    /// once the topic is removed. When the stall clock has run out, every
    /// lossless reader below what a record of `need` bytes needs is
    /// demoted, whether this writer blocks or not.
    fn with_room<T>(
        &self,
        nonblock: bool,
        need: usize,
        mut attempt: impl FnMut(&mut Ring<KVec<u64>>, &RingMem, u64) -> Result<T, RingError>,
    ) -> Result<T> {
        let mut counted = false;
        loop {
            let (floor, stall, demoted) = {
                let mut st = self.state.lock();
                if st.dead {
                    return Err(ENODEV);
                }
                let mut demoted = false;
                loop {
                    let floor = st.floor();
                    match attempt(&mut st.ring, &self.mem, floor) {
                        Ok(v) => {
                            st.stall = None;
                            drop(st);
                            if demoted {
                                self.writers.wake(KEY_OUT);
                            }
                            return Ok(v);
                        }
                        Err(RingError::Full) => {}
                        Err(_) => return Err(EINVAL),
                    }
                    match self.stalled(&mut st, floor, need) {
                        Stall::Demoted => demoted = true,
                        other => break (floor, other, demoted),
                    }
                }
            };
            if demoted {
                self.writers.wake(KEY_OUT);
            }
            if let Stall::Until(deadline) = stall {
                self.arm_stall_timer(deadline);
            }
            if nonblock {
                return Err(EAGAIN);
            }
            if !counted {
                self.stats.writer_waits.add(1, Relaxed);
                counted = true;
                // Readers must see what this call wrote so far, or a
                // lossless one would never come to make room.
                self.readers.wake(KEY_IN);
            }
            let moved = || {
                self.want_room();
                self.mem.removed() || self.state.lock().floor() != floor
            };
            match stall {
                Stall::Until(deadline) => {
                    let left = deadline.wrapping_sub(jiffies_now());
                    if left as c_long > 0 {
                        self.writers.wait_interruptible_timeout(moved, left)?;
                    }
                }
                _ => self.writers.wait_interruptible(moved)?,
            }
        }
    }

    /// The stall clock, for a writer or poller that found no room with the
    /// lossless readers' `floor`, for a record of `need` bytes: starts it
    /// (or restarts it, if the floor moved since), or, when it has run for
    /// the stall timeout, demotes every lossless reader below the position
    /// the record needs, all at once.
    fn stalled(&self, st: &mut State, floor: u64, need: usize) -> Stall {
        if self.stall_jiffies == 0 {
            return Stall::Never;
        }
        let now = jiffies_now();
        if let Some((since, f)) = st.stall {
            let deadline = since.wrapping_add(self.stall_jiffies);
            if f == floor && !reached(now, deadline) {
                return Stall::Until(deadline);
            }
            if f == floor {
                let below = st.ring.tail_for(&self.mem, need);
                st.stall = None;
                if self.demote(st, below) > 0 {
                    return Stall::Demoted;
                }
            }
        }
        st.stall = Some((now, floor));
        for l in st.lossless.iter() {
            l.mark.store(l.pos.load(Acquire), Relaxed);
        }
        Stall::Until(now.wrapping_add(self.stall_jiffies))
    }

    /// Makes the stall timer fire at jiffy `deadline` (or earlier, if it
    /// was set so).
    fn arm_stall_timer(&self, deadline: c_ulong) {
        // SAFETY: The timer was initialized in `new` and is shut down only
        // in the drop, which cannot run while `self` is borrowed.
        unsafe { bindings::timer_reduce(self.stall_timer.raw(), deadline) };
    }

    /// Says that a writer or poller waits for room; pairs with
    /// [`Topic::released`].
    fn want_room(&self) {
        self.room_wanted.store(true, Release);
        smp_mb();
    }

    /// Demotes, when the stall clock ran out, the lossless readers whose
    /// position is below `need` (they hold the record back) and those that
    /// read nothing since the clock started although records waited for
    /// them (so k stuck readers cost one timeout, not k): they leave the
    /// list, marked, and become lossy. Returns how many.
    fn demote(&self, st: &mut State, need: u64) -> u64 {
        let before = st.lossless.len();
        let head = st.ring.head();
        st.lossless.retain(|l| {
            let pos = l.pos.load(Acquire);
            let stuck = pos < head && pos == l.mark.load(Relaxed);
            if pos >= need && !stuck {
                return true;
            }
            l.demoted.store(true, Release);
            false
        });
        let n = (before - st.lossless.len()) as u64;
        self.stats.demoted.add(n, Relaxed);
        self.stats.lossless_readers.fetch_sub(n, Relaxed);
        n
    }

    /// Called by a lossless reader after it moved its slot forward: wakes
    /// the writers if one of them wants room.
    pub(crate) fn released(&self) {
        smp_mb();
        if self.room_wanted.load(Relaxed) && self.room_wanted.xchg(false, Full) {
            self.writers.wake(KEY_OUT);
        }
    }

    /// Whether a record of `record_max` bytes fits without passing a
    /// lossless reader (demoting stuck ones when the stall clock ran out).
    /// When it does not, the next progress of a lossless reader, or the
    /// stall timer, wakes the writers' queue (for `poll`).
    pub(crate) fn has_room(&self) -> bool {
        let fits = || {
            let mut st = self.state.lock();
            let mut demoted = false;
            let r = loop {
                let floor = st.floor();
                if floor == NO_FLOOR || st.ring.room_for(&self.mem, self.record_max, floor) {
                    // Nobody waits for room now (any record fits).
                    st.stall = None;
                    break (true, None);
                }
                match self.stalled(&mut st, floor, self.record_max) {
                    Stall::Demoted => demoted = true,
                    Stall::Until(d) => break (false, Some(d)),
                    Stall::Never => break (false, None),
                }
            };
            drop(st);
            if demoted {
                self.writers.wake(KEY_OUT);
            }
            if let (_, Some(d)) = r {
                self.arm_stall_timer(d);
            }
            r.0
        };
        if fits() {
            return true;
        }
        self.want_room();
        // Checked again after the flag is up, so a release in between is
        // seen either here or by the releasing reader.
        fits()
    }

    /// Makes `slot` a lossless reader's, holding the records from `pos`
    /// (or from the oldest one, if `pos` was already overwritten). `ENOSPC`
    /// when the topic has `abi::LOSSLESS_MAX` of them.
    pub(crate) fn add_lossless(&self, slot: &Arc<Lossless>, pos: u64) -> Result {
        if self.flags & abi::TOPIC_LOSSLESS == 0 {
            return Err(EPERM);
        }
        let mut st = self.state.lock();
        if st.lossless.len() >= abi::LOSSLESS_MAX {
            return Err(ENOSPC);
        }
        slot.pos.store(pos.max(st.ring.tail()), Release);
        slot.demoted.store(false, Relaxed);
        slot.mark.store(u64::MAX, Relaxed);
        // Room for `LOSSLESS_MAX` slots was allocated with the topic.
        st.lossless
            .push_within_capacity(slot.clone())
            .map_err(|_| ENOSPC)?;
        drop(st);
        self.stats.lossless_readers.add(1, Relaxed);
        // A publisher may wait for lossless readers.
        self.writers.wake(KEY_OUT);
        Ok(())
    }

    /// Removes `slot` from the lossless readers (if it is still listed)
    /// and releases any writer it held up.
    pub(crate) fn remove_lossless(&self, slot: &Arc<Lossless>) {
        let gone = {
            let mut st = self.state.lock();
            let i = st.lossless.iter().position(|l| Arc::ptr_eq(l, slot));
            i.and_then(|i| st.lossless.remove(i).ok())
        };
        if let Some(l) = gone {
            drop(l);
            self.stats.lossless_readers.fetch_sub(1, Relaxed);
            self.released();
        }
    }

    /// Moves `slot` back to `pos` under the topic lock (a seek backward), if
    /// `pos` is before it and still buffered; a forward move is the
    /// reader's own release store.
    pub(crate) fn hold_back(st: &State, slot: &Lossless, pos: u64) {
        if pos < slot.pos.load(Relaxed) && !slot.demoted.load(Relaxed) {
            slot.pos.store(pos.max(st.ring.tail()), Release);
        }
    }

    /// Waits until the topic has at least `n` lossless readers (`EAGAIN`
    /// instead with `nonblock`, `ENODEV` once removed, `EPERM` at once if
    /// the topic allows none, as the wait could never end).
    pub(crate) fn wait_readers(&self, n: u64, nonblock: bool) -> Result {
        if n > 0 && self.flags & abi::TOPIC_LOSSLESS == 0 {
            return Err(EPERM);
        }
        let enough = || self.stats.lossless_readers.load(Relaxed) >= n;
        if !enough() && nonblock {
            return Err(EAGAIN);
        }
        self.writers
            .wait_interruptible(|| enough() || self.mem.removed())?;
        if enough() {
            Ok(())
        } else {
            Err(ENODEV)
        }
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
        let mut st = self.state.lock();
        if st.dead {
            st.ring.cancel();
            return Err(ENODEV);
        }
        let f = st
            .ring
            .commit_frames(&self.mem, c, copied, self.record_max, stamp);
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
