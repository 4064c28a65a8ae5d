// SPDX-License-Identifier: GPL-2.0
//! A topic: one record ring shared by every open file of one device, the
//! wait queue its readers sleep on, and its counters.
//!
//! A topic is reference counted ([`Arc`]): the device registration holds one
//! reference and every open file another, so a topic removed while files are
//! open lives on, marked dead, until the last one is closed.

use crate::ring::{Ring, RingError, Stamp};
use kernel::{
    new_poll_condvar, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Atomic, Full, Relaxed},
        poll::PollCondVar,
        Arc, SpinLock,
    },
};

/// What the topic lock protects.
pub(crate) struct State {
    /// The records.
    pub(crate) ring: Ring<KVVec<u8>>,
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

/// One topic.
#[pin_data(PinnedDrop)]
pub(crate) struct Topic {
    /// The ring and the dead flag. A spinlock: it is held only for memory
    /// copies inside the kernel, never across user memory access or sleep.
    #[pin]
    pub(crate) state: SpinLock<State>,
    /// Readers wait here (in `read` and `poll`); writers and removal wake
    /// every one of them.
    #[pin]
    pub(crate) wake: PollCondVar,
    /// Largest record in bytes.
    pub(crate) record_max: usize,
    pub(crate) stats: Stats,
    /// Identity of the open file holding the publisher lock; 0 when free.
    publisher: Atomic<usize>,
}

impl Topic {
    /// Makes a topic with a zeroed ring of `ring_size` bytes (a power of
    /// two) and records of at most `record_max` bytes (at most a quarter of
    /// the ring). The caller has validated both.
    pub(crate) fn new(ring_size: usize, record_max: usize) -> Result<Arc<Self>> {
        // Zero-filled, so no stale kernel memory can ever reach a reader.
        let buf = KVVec::from_elem(0u8, ring_size, GFP_KERNEL)?;
        let ring = Ring::new(buf).map_err(|_: RingError| EINVAL)?;
        let topic = Arc::pin_init(
            pin_init!(Self {
                state <- new_spinlock!(State { ring, dead: false }, "fanout_topic"),
                wake <- new_poll_condvar!("fanout_wake"),
                record_max,
                stats: Stats::new(),
                publisher: Atomic::new(0),
            }),
            GFP_KERNEL,
        )?;
        LIVE.add(1, Relaxed);
        Ok(topic)
    }

    /// Appends one record (1..=`record_max` bytes) and wakes the readers.
    /// Fails with `ENODEV` once the topic is removed.
    pub(crate) fn publish(&self, payload: &[u8], stamp: Stamp) -> Result {
        {
            let mut st = self.state.lock();
            if st.dead {
                return Err(ENODEV);
            }
            st.ring.append(payload, stamp).map_err(|_| EINVAL)?;
        }
        self.stats.records.add(1, Relaxed);
        self.stats.bytes.add(payload.len() as u64, Relaxed);
        self.wake.notify_all();
        Ok(())
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
        self.wake.notify_all();
    }
}

#[pinned_drop]
impl PinnedDrop for Topic {
    fn drop(self: Pin<&mut Self>) {
        LIVE.fetch_sub(1, Relaxed);
    }
}
