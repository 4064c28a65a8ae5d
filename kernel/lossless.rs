// SPDX-License-Identifier: GPL-2.0
//! Lossless readers of a topic (`ABI.md`, "Lossless readers"): each has a
//! [`Lossless`] slot, listed under the topic lock, holding the oldest
//! position it still needs. A writer's reservation evicts nothing at or after the lowest of
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

use super::{State, Topic, KEY_IN, KEY_OUT};
use crate::abi;
use crate::atomics::{full_barrier, Acquire, AtomicBool, AtomicU64, Relaxed, Release, SeqCst};
use crate::ring::{Ring, RingError, NO_FLOOR};
use crate::ringmem::RingMem;
use kernel::{
    alloc::flags::GFP_KERNEL_ACCOUNT,
    bindings,
    ffi::{c_long, c_ulong},
    prelude::*,
    sync::Arc,
    types::Opaque,
};

impl State {
    /// The oldest position any lossless reader still needs ([`NO_FLOOR`]
    /// when there is none): nothing at or after it may be evicted.
    pub(super) fn floor(&self) -> u64 {
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
    pub(crate) pos: AtomicU64,
    /// Set (under the topic lock, as the slot leaves the list) when the
    /// stall timeout demoted this reader to lossy.
    pub(crate) demoted: AtomicBool,
    /// `pos` when the stall clock last started (under the topic lock): a
    /// reader still there when it runs out read nothing all that time.
    mark: AtomicU64,
}

impl Lossless {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                pos: AtomicU64::new(0),
                demoted: AtomicBool::new(false),
                mark: AtomicU64::new(u64::MAX),
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }
}
/// A topic's stall timer: a kernel `timer_list`.
#[repr(transparent)]
#[pin_data]
pub(super) struct StallTimer {
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
    pub(super) fn new() -> impl PinInit<Self> {
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

    pub(super) fn raw(&self) -> *mut bindings::timer_list {
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
impl Topic {
    /// Runs `attempt` under the topic lock with the lossless readers' floor
    /// until it finds room. While it does not, the writer sleeps
    /// (interruptibly) until the floor moves or the stall clock runs out:
    /// `EAGAIN` instead with `nonblock`, `ERESTARTSYS` on a signal, `ENODEV`
    /// once the topic is removed. When the stall clock has run out, every
    /// lossless reader below what a record of `need` bytes needs is
    /// demoted, whether this writer blocks or not.
    pub(super) fn with_room<T>(
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
                self.stats.writer_waits.add(1);
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
        full_barrier();
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
        self.stats.demoted.add(n);
        self.stats.lossless_readers.sub(n);
        n
    }

    /// Called by a lossless reader after it moved its slot forward: wakes
    /// the writers if one of them wants room.
    pub(crate) fn released(&self) {
        full_barrier();
        if self.room_wanted.load(Relaxed) && self.room_wanted.swap(false, SeqCst) {
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
        self.stats.lossless_readers.add(1);
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
            self.stats.lossless_readers.sub(1);
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
        let enough = || self.stats.lossless_readers.get() >= n;
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
}
