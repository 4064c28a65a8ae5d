// SPDX-License-Identifier: GPL-2.0
//! A wait queue with keyed wakeups: the thin unsafe layer over the kernel's
//! `wait_queue_head`.
//!
//! The kernel crate's `PollCondVar` wakes every waiter with no key and always
//! calls into the scheduler. Here a wakeup is skipped entirely when nobody
//! waits (`wq_has_sleeper`), and it carries a poll mask as its key, so epoll
//! entries that did not ask for that event are not woken. A topic has one
//! queue for readers and one for writers.

use crate::atomics::{full_barrier, Acquire, AtomicU32, Relaxed, Release, SeqCst};
use core::ptr;
use kernel::{
    bindings,
    ffi::{c_int, c_long, c_ulong, c_void},
    fs::File,
    prelude::*,
    sync::LockClassKey,
    types::Opaque,
};

/// A wait queue head that sleepers in `read`/`write` and `poll` wait on.
///
/// # Invariants
///
/// `wq` is initialized by `new` and stays pinned until dropped.
#[pin_data(PinnedDrop)]
pub(crate) struct WaitQueue {
    #[pin]
    wq: Opaque<bindings::wait_queue_head>,
}

// SAFETY: A wait queue head is meant to be used from any thread; every
// access goes through the kernel's wait-queue functions and its own lock.
unsafe impl Send for WaitQueue {}
// SAFETY: As above.
unsafe impl Sync for WaitQueue {}

impl WaitQueue {
    /// Initializes the queue.
    pub(crate) fn new(name: &'static CStr, key: Pin<&'static LockClassKey>) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid, pinned memory for a `wait_queue_head`;
            // name and key are static.
            wq <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_waitqueue_head(slot, name.as_char_ptr(), key.as_ptr())
            }),
        })
    }

    fn raw(&self) -> *mut bindings::wait_queue_head {
        self.wq.get()
    }

    /// Whether anyone waits here, after a full barrier that orders the
    /// caller's earlier stores (the condition sleepers test) before the
    /// check; pairs with the barrier in `prepare_to_wait_event`.
    pub(crate) fn has_sleeper(&self) -> bool {
        full_barrier();
        self.queued()
    }

    /// Whether anyone waits here, for a caller that ran [`full_barrier`]
    /// after its last store to the condition sleepers test.
    fn queued(&self) -> bool {
        let wq = self.raw();
        // SAFETY: `wq` is initialized (type invariant). Reading the list
        // head's `next` without the queue lock is what `waitqueue_active`
        // does; a stale answer is covered by the barrier pairing above.
        unsafe {
            let head = &raw mut (*wq).head;
            ptr::read_volatile(&raw const (*head).next) != head
        }
    }

    /// Wakes every waiter with the poll mask `key`, but only if anyone waits.
    pub(crate) fn wake(&self, key: u32) {
        if self.has_sleeper() {
            self.wake_all(key);
        }
    }

    /// As [`WaitQueue::wake`], for a caller that ran [`full_barrier`] after
    /// its last store to the condition sleepers test (no second barrier).
    pub(crate) fn wake_fenced(&self, key: u32) {
        if self.queued() {
            self.wake_all(key);
        }
    }

    fn wake_all(&self, key: u32) {
        // SAFETY: `wq` is initialized; `key` is a poll mask passed as the
        // wakeup key, as `wake_up_interruptible_poll` does.
        unsafe {
            bindings::__wake_up(
                self.raw(),
                bindings::TASK_NORMAL,
                0,
                key as usize as *mut c_void,
            )
        };
    }

    /// Sleeps (interruptibly) until `ready()` is true. `ERESTARTSYS` when a
    /// signal arrives first. `ready` is called with no lock held.
    pub(crate) fn wait_interruptible(&self, ready: impl FnMut() -> bool) -> Result {
        // `schedule_timeout(MAX_SCHEDULE_TIMEOUT)` is a plain `schedule()`.
        self.wait(ready, c_long::MAX).map(|_| ())
    }

    /// As [`WaitQueue::wait_interruptible`], for at most `timeout` jiffies
    /// (more than 0): returns the jiffies left, 0 when the time ran out
    /// before `ready()` became true.
    pub(crate) fn wait_interruptible_timeout(
        &self,
        ready: impl FnMut() -> bool,
        timeout: c_ulong,
    ) -> Result<c_ulong> {
        let left = c_long::try_from(timeout).unwrap_or(c_long::MAX - 1);
        self.wait(ready, left).map(|l| l.max(0) as c_ulong)
    }

    /// Sleeps interruptibly until `ready()`, for at most `left` jiffies
    /// (`c_long::MAX`, the kernel's `MAX_SCHEDULE_TIMEOUT`: no limit).
    /// Returns the jiffies left (at least 1 when `ready()` became true, 0
    /// when the time ran out).
    fn wait(&self, mut ready: impl FnMut() -> bool, mut left: c_long) -> Result<c_long> {
        if ready() {
            return Ok(left.max(1));
        }
        let entry = Opaque::<bindings::wait_queue_entry>::uninit();
        // SAFETY: `entry` is valid memory for a wait entry, living on this
        // stack frame until after `finish_wait` below.
        unsafe { bindings::init_wait_entry(entry.get(), 0) };
        let result = loop {
            // SAFETY: Queue and entry are valid. This sets the task state
            // (with a full barrier) before `ready` is tested, so a wakeup
            // between the test and `schedule_timeout` is not lost.
            let rc = unsafe {
                bindings::prepare_to_wait_event(
                    self.raw(),
                    entry.get(),
                    bindings::TASK_INTERRUPTIBLE as c_int,
                )
            };
            if rc != 0 {
                break Err(ERESTARTSYS);
            }
            if ready() {
                break Ok(left.max(1));
            }
            if left <= 0 {
                break Ok(0);
            }
            // SAFETY: Process context with no spinlock held; the task state
            // was set by `prepare_to_wait_event`, as `schedule_timeout`
            // expects.
            left = unsafe { bindings::schedule_timeout(left) };
        };
        // SAFETY: Queue and entry are valid; this dequeues the entry if it is
        // still queued and sets the task running.
        unsafe { bindings::finish_wait(self.raw(), entry.get()) };
        result
    }

    /// Registers this queue with a `poll` table.
    ///
    /// # Safety
    ///
    /// `table` is null or the valid poll table of the current `poll` call on
    /// `file`.
    pub(crate) unsafe fn register_poll(&self, file: &File, table: *mut bindings::poll_table) {
        // SAFETY: Caller contract for `table`; `file` is valid. The queue
        // outlives the registration: `drop` below clears every entry
        // (`__wake_up_pollfree`) and waits an RCU grace period.
        unsafe { bindings::poll_wait(file.as_ptr(), self.raw(), table) };
    }
}

#[pinned_drop]
impl PinnedDrop for WaitQueue {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `wq` is initialized. This detaches every poll entry (epoll
        // included), as the kernel crate's `PollCondVar` does on drop.
        unsafe { bindings::__wake_up_pollfree(self.raw()) };
        // Epoll may still touch the queue's lock until an RCU grace period
        // has passed since the entries were removed.
        // SAFETY: Process context (topics are dropped from file release or
        // the control device), where sleeping is allowed.
        unsafe { bindings::synchronize_rcu() };
    }
}

/// A turn that one task at a time holds, across user copies and page
/// faults: the others sleep *interruptibly* on a [`WaitQueue`], so a holder
/// stalled on a fault never leaves anyone in uninterruptible sleep (as a
/// mutex would). Used for a topic's writers and for the threads reading
/// through one open file.
pub(crate) struct Turn {
    /// 1 while held.
    busy: AtomicU32,
    /// Tasks sleeping for it.
    waiting: AtomicU32,
}

/// Holds a [`Turn`]; dropping it wakes the sleepers, if any, with `key`.
pub(crate) struct TurnGuard<'a> {
    turn: &'a Turn,
    wq: &'a WaitQueue,
    key: u32,
}

impl Turn {
    pub(crate) fn new() -> Self {
        Self {
            busy: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
        }
    }

    /// Whether no task holds the turn now.
    pub(crate) fn is_free(&self) -> bool {
        self.busy.load(Acquire) == 0
    }

    /// Takes the turn, sleeping on `wq` while another task holds it.
    /// `EAGAIN` instead of sleeping with `nonblock`; `ERESTARTSYS` on a
    /// signal; `None` when `give_up()` became true first. The guard wakes
    /// `wq` with `key` when it is dropped and someone waits.
    pub(crate) fn take<'a>(
        &'a self,
        wq: &'a WaitQueue,
        key: u32,
        nonblock: bool,
        give_up: impl Fn() -> bool,
    ) -> Result<Option<TurnGuard<'a>>> {
        let take = || self.busy.compare_exchange(0, 1, SeqCst, SeqCst).is_ok();
        if !take() {
            if nonblock {
                return Err(EAGAIN);
            }
            self.waiting.fetch_add(1, SeqCst);
            let mut got = false;
            let r = wq.wait_interruptible(|| {
                got = take();
                got || give_up()
            });
            self.waiting.fetch_sub(1, SeqCst);
            if !got {
                r?;
                return Ok(None);
            }
        }
        Ok(Some(TurnGuard {
            turn: self,
            wq,
            key,
        }))
    }
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.turn.busy.store(0, Release);
        // Orders the release before the check of waiters; pairs with the
        // full barrier of the waiters' increment.
        full_barrier();
        if self.turn.waiting.load(Relaxed) != 0 {
            self.wq.wake(self.key);
        }
    }
}
