//! The mapped memory of [`super::Mapped`]: a region the kernel writes while
//! we read it, so it is only ever loaded through raw pointers (atomic loads
//! of the control page, volatile loads of the ring), never through a Rust
//! reference.

use crate::abi::{RecordHeader, RECORD_HEADER_SIZE};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Who keeps the mapped memory alive.
pub(super) enum Owner {
    Map {
        _map: memmap2::Mmap,
    },
    #[cfg(test)]
    Fake {
        _fake: std::rc::Rc<super::tests::Fake>,
    },
}

/// The mapped memory: `len` bytes at `base`, alive as long as `_owner`.
///
/// # Invariants
///
/// `base..base + len` is readable for as long as this value lives, `base` is
/// 8-aligned, and the memory is never reached through a reference (other
/// code, the kernel, writes it concurrently).
pub(super) struct Region {
    pub(super) base: NonNull<u8>,
    pub(super) len: usize,
    pub(super) _owner: Owner,
}

impl Region {
    /// The `u64` at byte offset `off`, loaded atomically with `order`; 0 if
    /// `off` is out of range or unaligned.
    pub(super) fn load_u64(&self, off: usize, order: Ordering) -> u64 {
        if off % 8 != 0 || off.checked_add(8).is_none_or(|end| end > self.len) {
            return 0;
        }
        // SAFETY: `off + 8 <= len` and `base` and `off` are 8-aligned, so
        // the pointer is in bounds and aligned for an `AtomicU64` (same size
        // and alignment as `u64` where 64-bit atomics exist). The memory
        // lives while `self` does (type invariant), and the reference is
        // used for this one load only, so it outlives nothing. Every other
        // access to these control-page words is atomic too (the kernel
        // stores them with its atomics, and this module only loads them
        // atomically), so there is no mixed-size or non-atomic race.
        // `from_ptr` also asks for memory valid for writes, and a mapping
        // is read-only: but nothing here ever writes, and an atomic *load*
        // is a plain load instruction on every target with native 64-bit
        // atomics (no compare-and-swap emulation), so it never faults on a
        // read-only page.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off).cast::<u64>()).load(order) }
    }

    /// The `u32` at byte offset `off`, loaded atomically; 0 if out of range
    /// or unaligned.
    pub(super) fn load_u32(&self, off: usize, order: Ordering) -> u32 {
        if off % 4 != 0 || off.checked_add(4).is_none_or(|end| end > self.len) {
            return 0;
        }
        // SAFETY: As in `load_u64`, with 4-byte size and alignment (the
        // offset is checked 4-aligned and `base` is 8-aligned).
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off).cast::<u32>()).load(order) }
    }

    /// The record header at byte offset `off`, read word by word with
    /// volatile loads (the kernel may be writing it: the caller checks the
    /// tail afterwards); `None` when out of bounds or unaligned.
    pub(super) fn header(&self, off: usize) -> Option<RecordHeader> {
        const WORDS: usize = RECORD_HEADER_SIZE / 8;
        if off % 8 != 0
            || off
                .checked_add(RECORD_HEADER_SIZE)
                .is_none_or(|end| end > self.len)
        {
            return None;
        }
        let mut bytes = [0u8; RECORD_HEADER_SIZE];
        for (i, dst) in bytes.chunks_exact_mut(8).enumerate().take(WORDS) {
            // SAFETY: `off + 8 * i + 8 <= off + RECORD_HEADER_SIZE <= len`
            // and `base` and `off` are 8-aligned, so this is an in-bounds,
            // aligned `u64` of the live mapping (type invariant), loaded
            // volatile because the kernel may be writing it (as in
            // `copy_words`).
            let w = unsafe {
                std::ptr::read_volatile(self.base.as_ptr().add(off + 8 * i).cast::<u64>())
            };
            dst.copy_from_slice(&w.to_ne_bytes());
        }
        RecordHeader::from_bytes(&bytes)
    }

    /// Appends the `words` 8-byte words at byte offset `off` to `dst`, each
    /// read with a volatile load. Returns false (appending nothing) when the
    /// range is out of bounds or unaligned.
    pub(super) fn copy_words(&self, off: usize, words: usize, dst: &mut Vec<u8>) -> bool {
        let Some(end) = words.checked_mul(8).and_then(|b| b.checked_add(off)) else {
            return false;
        };
        if off % 8 != 0 || end > self.len {
            return false;
        }
        dst.reserve(words * 8);
        let at = dst.len();
        // Written through a raw pointer into the reserved room, then the
        // length set once: a bounds-checked `extend` per word costs more
        // than the load itself.
        let out = dst.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        for i in 0..words {
            // SAFETY: `off + 8 * i + 8 <= end <= len` and everything is
            // 8-aligned, so this reads an in-bounds, aligned `u64` of the
            // live mapping (type invariant). The load is volatile because
            // the kernel may be writing these bytes right now: the value
            // may be torn or stale, which the caller detects afterwards
            // (the tail check), but it is never assumed to be stable.
            let w = unsafe {
                std::ptr::read_volatile(self.base.as_ptr().add(off + 8 * i).cast::<u64>())
            };
            // SAFETY: `reserve` above made room for `words * 8` bytes past
            // `dst.len()`, so bytes `8 * i..8 * i + 8` of the spare
            // capacity are in the allocation; `write_unaligned` needs no
            // alignment, and nothing else refers to the spare capacity.
            unsafe { out.add(8 * i).cast::<u64>().write_unaligned(w) };
            #[cfg(test)]
            super::tests::after_word(i);
        }
        // SAFETY: the `words * 8` bytes after the old length were all
        // written (initialized) by the loop above, within the capacity.
        unsafe { dst.set_len(at + words * 8) };
        true
    }
}
