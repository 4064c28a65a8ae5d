// SPDX-License-Identifier: GPL-2.0
//! The atomics of the paths every `read()` and `write()` takes.
//!
//! These are `core`'s atomics, which compile to instructions in place. The
//! kernel crate's `Atomic` calls a C helper out of line for every
//! operation in 7.2 and 7.3 (helpers are not inlined into modules), and a
//! one-record `write()` made about a dozen such calls: taking them out made
//! it 13% cheaper in our benchmark VM, and on a kernel built with return
//! thunks every call costs more still.
//!
//! Only what these paths need is used, with orderings that compile to what
//! the kernel's own would on x86-64 and arm64: `Relaxed`, `Acquire` loads,
//! `Release` stores, read-modify-writes that are `SeqCst` where the kernel
//! code had a fully ordered one, and [`full_barrier`] for `smp_mb()`. Every
//! use still pairs with the barriers of the C code it meets (the wait
//! queue's `prepare_to_wait_event`, for one) as `smp_mb()` would. Paths
//! taken only when a topic or module is made or removed keep the kernel
//! crate's `Atomic`.

pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};

/// A full memory barrier, as `smp_mb()`: `mfence` on x86-64, `dmb ish` on
/// arm64.
#[inline(always)]
pub(crate) fn full_barrier() {
    core::sync::atomic::fence(SeqCst);
}
