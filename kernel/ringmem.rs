// SPDX-License-Identifier: GPL-2.0
//! The thin unsafe layer over a topic's ring memory: one vmalloc area,
//! charged to the creator's memory cgroup, holding the control page and then
//! the ring's bytes, exactly as a reader maps it (`ABI.md`, "Mapped ring").
//!
//! Writers copy into a reserved slot and readers copy out of committed
//! records with no lock held, so the bytes are shared mutable memory. They
//! are therefore only ever reached through raw pointers and the kernel's own
//! copy routines (`_copy_from_iter`, `_copy_to_iter`), never through a Rust
//! reference to a slice; a reader validates what it copied against the
//! control page's tail afterwards (the seqcount pattern, see `file.rs`).

use crate::abi::{self, RecordHeader, RECORD_HEADER_SIZE};
use crate::ring::Mem;
use kernel::{
    alloc::flags::GFP_KERNEL_ACCOUNT,
    bindings,
    ffi::c_void,
    iov::{IovIterDest, IovIterSource},
    prelude::*,
};
// The control page is read by userspace, with C11 (or Rust) atomics, and
// never by C code of the kernel: so its words are `core` atomics, which
// compile to plain loads and stores (x86) or `ldar`/`stlr` (arm64) in
// place. The kernel crate's `Atomic` would call a C helper out of line for
// each access, and a one-record `write()` makes five of them: about 7% of
// its time in our benchmark VM.
use core::sync::atomic::{
    fence, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

/// Size of the control page (and offset of the ring's bytes in the area).
pub(crate) const CTRL_SIZE: usize = bindings::PAGE_SIZE;

/// Payloads up to this many bytes are copied into the ring (and out of it
/// into a spliced pipe's pages, `pages.rs`) by 8-byte words rather than by
/// `memcpy`. In the emulated CPU of our benchmarks `memcpy` is `rep movsb`,
/// which costs per byte: words took a fifth off each line of a line-mode
/// `write()` there (620 to 500 ns for 64-byte lines). On hardware a short
/// word loop costs about what `memcpy` does.
pub(crate) const WORD_COPY_MAX: usize = 256;

/// A topic's vmalloc area: the control page, then `size` ring bytes.
///
/// # Invariants
///
/// `base` is the start of `area`'s buffer, which is `CTRL_SIZE + size`
/// bytes long, page aligned, and never resized or moved; `size` is a power
/// of two.
pub(crate) struct RingMem {
    area: VVec<u8>,
    base: *mut u8,
    size: usize,
}

// SAFETY: The area is plain memory owned by this value; every shared access
// goes through atomics (control page) or raw copies whose races are
// validated by the ring protocol, never through references.
unsafe impl Send for RingMem {}
// SAFETY: As above.
unsafe impl Sync for RingMem {}

impl RingMem {
    /// Allocates a zeroed area for a ring of `size` bytes (a power of two)
    /// and fills in the constant fields of the control page.
    pub(crate) fn new(size: usize, record_max: usize) -> Result<Self> {
        let total = CTRL_SIZE.checked_add(size).ok_or(EINVAL)?;
        // Zero-filled, so no stale kernel memory can ever reach a reader.
        let mut area = VVec::from_elem(0u8, total, GFP_KERNEL_ACCOUNT)?;
        let base = area.as_mut_ptr();
        let this = Self { area, base, size };
        this.u32_at(abi::CTRL_MAGIC).store(abi::MMAP_MAGIC, Relaxed);
        this.u32_at(abi::CTRL_ABI_VERSION)
            .store(abi::ABI_VERSION, Relaxed);
        this.u64_at(abi::CTRL_RING_SIZE).store(size as u64, Relaxed);
        this.u64_at(abi::CTRL_DATA_OFFSET)
            .store(CTRL_SIZE as u64, Relaxed);
        this.u32_at(abi::CTRL_RECORD_MAX)
            .store(u32::try_from(record_max).unwrap_or(u32::MAX), Relaxed);
        this.u32_at(abi::CTRL_HEADER_SIZE)
            .store(RECORD_HEADER_SIZE as u32, Relaxed);
        Ok(this)
    }

    /// Ring size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Bytes of the whole area (control page and ring).
    pub(crate) fn area_len(&self) -> usize {
        self.area.len()
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        // SAFETY: Every `CTRL_*` u64 offset is 8-aligned and inside the
        // control page (page aligned, see the invariants), which lives as
        // long as `self`; the control page is only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.base.add(off).cast::<u64>()) }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        // SAFETY: As for `u64_at`, with 4-aligned offsets.
        unsafe { AtomicU32::from_ptr(self.base.add(off).cast::<u32>()) }
    }

    /// Publishes a new head: the record bytes below `head` are complete.
    pub(crate) fn publish_head(&self, head: u64, next_seq: u64) {
        self.u64_at(abi::CTRL_HEAD_SEQ).store(next_seq, Release);
        self.u64_at(abi::CTRL_HEAD).store(head, Release);
    }

    /// Publishes a new tail, before anything below it is overwritten: the
    /// release fence orders the tail before the caller's later stores into
    /// the ring (as `smp_wmb()`; pairs with the fence in `tail_after_copy`).
    pub(crate) fn publish_tail(&self, tail: u64, tail_seq: u64) {
        self.u64_at(abi::CTRL_TAIL_SEQ).store(tail_seq, Relaxed);
        self.u64_at(abi::CTRL_TAIL).store(tail, Relaxed);
        fence(Release);
    }

    /// The committed head, with acquire: the bytes below it may be read.
    pub(crate) fn head(&self) -> u64 {
        self.u64_at(abi::CTRL_HEAD).load(Acquire)
    }

    /// The sequence number of the next record.
    pub(crate) fn head_seq(&self) -> u64 {
        self.u64_at(abi::CTRL_HEAD_SEQ).load(Acquire)
    }

    /// The tail, read after copying out of the ring: a record that starts at
    /// or after it was intact during the copy.
    pub(crate) fn tail_after_copy(&self) -> u64 {
        // As `smp_rmb()`: the copy's loads before the tail's.
        fence(Acquire);
        self.u64_at(abi::CTRL_TAIL).load(Relaxed)
    }

    /// The tail as it is now.
    pub(crate) fn tail(&self) -> u64 {
        self.u64_at(abi::CTRL_TAIL).load(Acquire)
    }

    /// Marks the topic removed in the control page.
    pub(crate) fn mark_removed(&self) {
        self.u32_at(abi::CTRL_FLAGS)
            .store(abi::CTRL_FLAG_REMOVED, Release);
    }

    /// Whether the topic was removed.
    pub(crate) fn removed(&self) -> bool {
        self.u32_at(abi::CTRL_FLAGS).load(Acquire) & abi::CTRL_FLAG_REMOVED != 0
    }

    /// A pointer to ring offset `off`, checked to leave `len` bytes.
    fn data(&self, off: usize, len: usize) -> Option<*mut u8> {
        let end = off.checked_add(len)?;
        if end > self.size {
            return None;
        }
        // SAFETY: `CTRL_SIZE + off + len <= CTRL_SIZE + size`, the area's
        // length, so the pointer stays inside the allocation.
        Some(unsafe { self.base.add(CTRL_SIZE + off) })
    }

    /// Copies `len` bytes from the user into ring offset `off`; returns how
    /// many were copied (fewer on a fault). The caller owns the reservation
    /// covering these bytes, so no reader takes them as a record yet.
    pub(crate) fn copy_in(&self, off: usize, len: usize, iov: &mut IovIterSource<'_>) -> usize {
        let Some(dst) = self.data(off, len) else {
            return 0;
        };
        // SAFETY: `dst..dst + len` is inside the area (checked by `data`);
        // `iov` is a valid source iterator. The copy may race only with
        // readers, which validate against the tail published before it.
        unsafe { bindings::_copy_from_iter(dst.cast::<c_void>(), len, iov.as_raw()) }
    }

    /// Copies `len` bytes at ring offset `off` to the user; returns how many
    /// were copied. A writer may overwrite them meanwhile: the caller must
    /// validate with [`RingMem::tail_after_copy`] before delivering them.
    pub(crate) fn copy_out(&self, off: usize, len: usize, iov: &mut IovIterDest<'_>) -> usize {
        let Some(src) = self.data(off, len) else {
            return 0;
        };
        // SAFETY: `src..src + len` is inside the area (checked by `data`);
        // `iov` is a valid destination iterator.
        unsafe { bindings::_copy_to_iter(src.cast::<c_void>().cast_const(), len, iov.as_raw()) }
    }

    /// The words of the payload of `len` bytes at ring offset `off`, padding
    /// included: `None` unless `off` is 8-aligned and they are inside the
    /// ring. A writer may overwrite them while they are read: the caller
    /// validates with [`RingMem::tail_after_copy`], as for `copy_out`.
    pub(crate) fn words(&self, off: usize, len: usize) -> Option<*const u64> {
        if off % 8 != 0 {
            return None;
        }
        // The area is page aligned, so an 8-aligned offset is an 8-aligned
        // address.
        Some(self.data(off, (len + 7) & !7)?.cast_const().cast::<u64>())
    }

    /// Copies `dst.len()` bytes at ring offset `off` into `dst`; false (and
    /// nothing copied) if they are not inside the ring. A writer may
    /// overwrite them meanwhile: the caller must validate with
    /// [`RingMem::tail_after_copy`] before using them.
    pub(crate) fn copy_to_kernel(&self, off: usize, dst: &mut [u8]) -> bool {
        let Some(src) = self.data(off, dst.len()) else {
            return false;
        };
        // SAFETY: `src..src + dst.len()` is inside the area (checked by
        // `data`) and does not overlap `dst`, a buffer of the caller's.
        // The ring bytes may be written concurrently, as for `header`; the
        // caller validates the copy against the tail.
        unsafe { core::ptr::copy_nonoverlapping(src.cast_const(), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// The `struct page` of page `index` of the area (control page first).
    pub(crate) fn page(&self, index: usize) -> Option<*mut bindings::page> {
        let off = index.checked_mul(bindings::PAGE_SIZE)?;
        if off >= self.area.len() {
            return None;
        }
        // SAFETY: The address is inside the vmalloc area, which lives as
        // long as `self`.
        let page = unsafe { bindings::vmalloc_to_page(self.base.add(off).cast::<c_void>()) };
        (!page.is_null()).then_some(page)
    }
}

impl Mem for RingMem {
    #[inline]
    fn header(&self, off: usize) -> RecordHeader {
        let Some(src) = self.data(off, RECORD_HEADER_SIZE) else {
            return RecordHeader::default();
        };
        // SAFETY: `src` has `RECORD_HEADER_SIZE` readable bytes (checked by
        // `data`). `RecordHeader` is `repr(C)` with integer fields only and
        // no padding (`abi.rs` asserts its size), so any bytes are a valid
        // value, and its native-endian layout is exactly the ring's header
        // format (what `RecordHeader::from_bytes` parses field by field).
        // The read is unaligned-safe. Callers read headers of committed
        // records under the topic lock; racing readers validate the copy
        // against the tail before they trust it.
        unsafe { core::ptr::read_unaligned(src.cast_const().cast::<RecordHeader>()) }
    }

    #[inline]
    fn set_header(&self, off: usize, h: &RecordHeader) {
        let Some(dst) = self.data(off, RECORD_HEADER_SIZE) else {
            return;
        };
        // SAFETY: `dst` has `RECORD_HEADER_SIZE` writable bytes (checked by
        // `data`); only the lock holder, or the writer holding the
        // reservation these bytes are in, writes headers. The layout written
        // is the ring's header format, as for `header` above.
        unsafe { core::ptr::write_unaligned(dst.cast::<RecordHeader>(), *h) };
    }

    #[inline]
    fn zero(&self, off: usize, len: usize) {
        if len == 0 {
            return;
        }
        if let Some(dst) = self.data(off, len) {
            // SAFETY: `dst` has `len` writable bytes (checked by `data`).
            unsafe { core::ptr::write_bytes(dst, 0, len) };
        }
    }

    /// Copies `src` into ring offset `off`, and zeroes what follows it up to
    /// the next multiple of 8 bytes (the record's padding); false (nothing
    /// copied) if that is not inside the ring. The caller owns the
    /// reservation covering these bytes, so no reader takes them as a
    /// record yet.
    ///
    /// A payload of up to [`WORD_COPY_MAX`] bytes at an 8-aligned offset
    /// (every payload's: records start 8-aligned and the header is 40
    /// bytes) is stored a word at a time, its last word filled up with
    /// zeroes.
    #[inline]
    fn put(&self, off: usize, src: &[u8]) -> bool {
        let padded = (src.len() + 7) & !7;
        let Some(dst) = self.data(off, padded) else {
            return false;
        };
        if src.len() <= WORD_COPY_MAX && off % 8 == 0 {
            let mut words = src.chunks_exact(8);
            let mut at = dst.cast::<u64>();
            for w in &mut words {
                let Ok(b) = <[u8; 8]>::try_from(w) else {
                    break;
                };
                // SAFETY: `at` is inside `dst`, which has `padded` writable
                // bytes (checked by `data`), one word per chunk of `src`; it
                // is 8-aligned (the area is page aligned and `off` is a
                // multiple of 8). Volatile so that the loop stays word
                // stores rather than becoming a `memcpy` call; the bytes are
                // shared memory, as for the `memcpy` below.
                unsafe {
                    at.write_volatile(u64::from_ne_bytes(b));
                    at = at.add(1);
                }
            }
            let rest = words.remainder();
            if !rest.is_empty() {
                let mut w = 0u64;
                for i in (0..rest.len()).rev() {
                    w = (w << 8) | u64::from(rest.get(i).copied().unwrap_or(0));
                }
                // SAFETY: As above: the last word of `dst`. Its bytes in
                // memory are `rest`, then zeroes.
                unsafe { at.write_volatile(u64::from_ne_bytes(w.to_le_bytes())) };
            }
            return true;
        }
        // SAFETY: `dst..dst + padded` is inside the area (checked by
        // `data`) and does not overlap `src`, a buffer of the caller's;
        // `src.len() <= padded`. Readers may be copying these bytes out
        // concurrently; they validate against the tail published before the
        // reservation was made.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
            core::ptr::write_bytes(dst.add(src.len()), 0, padded - src.len());
        }
        true
    }

    #[inline]
    fn evicted(&self, tail: u64, tail_seq: u64) {
        self.publish_tail(tail, tail_seq);
    }
}
