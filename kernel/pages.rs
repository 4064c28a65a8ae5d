// SPDX-License-Identifier: GPL-2.0
//! The pages of a kernel page iterator (`ITER_BVEC`) that `read_iter`
//! fills: what `splice` and `sendfile` out of a topic hand it
//! (`copy_splice_read` allocates the pipe's pages and makes one of them).
//! A bytes-mode read copies each payload into those pages itself, a word
//! at a time (up to 256 bytes; larger ones by `memcpy`), instead of
//! calling `_copy_to_iter` for each record.
//!
//! In the emulated CPU of our benchmarks a `memcpy` is `rep movsb`, which
//! costs by the byte, and a reader of 64-byte records spent more time in
//! those small copies and in `_copy_to_iter` around them than in anything
//! else (a profile of `pubmsg | submsg | consumer`: docs/benchmarks.md).
//! The ring's writer already stores small payloads a word at a time
//! (`ringmem.rs`); this is the same for the reader. On hardware a short
//! word loop costs about what `memcpy` does.

use crate::ringmem::{RingMem, WORD_COPY_MAX};
use kernel::{bindings, ffi::c_void, iov::IovIterDest};

/// The part of a page iterator not yet filled, copied into by
/// [`PageDest::put`] without moving the iterator: the caller moves it by
/// [`PageDest::filled`] once it is done.
pub(super) struct PageDest {
    /// The segments, the iterator's current one first.
    segs: *const bindings::bio_vec,
    nr: usize,
    /// Bytes of the first segment already filled before.
    skip: usize,
    /// Bytes the iterator takes.
    len: usize,
    /// Bytes put so far.
    filled: usize,
    /// The segment holding byte `filled` and the offset of its first
    /// byte: bytes are put in order.
    seg: usize,
    seg_start: usize,
    /// The page mapped last (`kmap_local_page`) and where: kept mapped
    /// while records go into it, undone when the next page is mapped and
    /// on drop.
    mapped: Option<(*mut bindings::page, *mut u8)>,
}

impl PageDest {
    /// The pages left in `iov`, when it is a destination iterator of
    /// kernel pages (`ITER_BVEC`) whose segments each lie inside one page;
    /// `None` for anything else (user memory), which the caller copies
    /// into through the iterator as before.
    ///
    /// # Safety
    ///
    /// The result is used only while `iov` is, and only until `iov` moves
    /// (the caller moves it by [`PageDest::filled`] last).
    pub(super) unsafe fn new(iov: &mut IovIterDest<'_>) -> Option<Self> {
        let len = iov.len();
        let raw = iov.as_raw();
        // SAFETY: `raw` is the valid iterator `iov` wraps. Its type says
        // which member of the union is in use; for `ITER_BVEC`, the `bvec`
        // pointer and `nr_segs` describe the array of segments left, the
        // first `iov_offset` bytes of the first one used. Whoever made the
        // iterator keeps that array and its pages until `read_iter`
        // returns; nothing else writes them meanwhile.
        let (segs, nr, skip) = unsafe {
            let i = &*raw;
            if u32::from(i.iter_type) != bindings::iter_type_ITER_BVEC || i.data_source {
                return None;
            }
            let bvec = i
                .__bindgen_anon_1
                .__bindgen_anon_1
                .as_ref()
                .__bindgen_anon_1
                .bvec;
            (bvec, i.__bindgen_anon_2.nr_segs, i.iov_offset)
        };
        if segs.is_null() || nr == 0 {
            return None;
        }
        let d = Self {
            segs,
            nr,
            skip,
            len,
            filled: 0,
            seg: 0,
            seg_start: 0,
            mapped: None,
        };
        let mut left = len;
        for i in 0..nr {
            if left == 0 {
                break;
            }
            let s = d.seg(i)?;
            let first = if i == 0 { skip } else { 0 };
            let (off, n) = (s.bv_offset as usize, s.bv_len as usize);
            if s.bv_page.is_null() || first > n || off + n > bindings::PAGE_SIZE {
                return None;
            }
            left = left.saturating_sub(n - first);
        }
        (left == 0).then_some(d)
    }

    /// Segment `i`, if there is one.
    fn seg(&self, i: usize) -> Option<&bindings::bio_vec> {
        if i >= self.nr {
            return None;
        }
        // SAFETY: `i < nr`, inside the iterator's array, which outlives
        // `self` (the contract of `new`).
        Some(unsafe { &*self.segs.add(i) })
    }

    /// Bytes put so far.
    pub(super) fn filled(&self) -> usize {
        self.filled
    }

    /// Takes back what was put after the first `to` bytes (a record the
    /// writer tore: the next `put` writes over it).
    pub(super) fn unfill(&mut self, to: usize) {
        // `locate` starts over from the first segment when it is asked
        // for a byte before the one it found last.
        self.filled = self.filled.min(to);
    }

    /// Where byte `at` goes: its segment, its offset in the segment's
    /// page, and how many bytes from it on the segment holds.
    fn locate(&mut self, at: usize) -> Option<(*mut bindings::page, usize, usize)> {
        if at >= self.len {
            return None;
        }
        if at < self.seg_start {
            (self.seg, self.seg_start) = (0, 0);
        }
        loop {
            let i = self.seg;
            let s = self.seg(i)?;
            let first = if i == 0 { self.skip } else { 0 };
            let n = (s.bv_len as usize).saturating_sub(first);
            if at < self.seg_start + n {
                let into = at - self.seg_start;
                let held = (n - into).min(self.len - at);
                return Some((s.bv_page, s.bv_offset as usize + first + into, held));
            }
            self.seg_start += n;
            self.seg += 1;
        }
    }

    /// `page` mapped, the page mapped before undone.
    fn map(&mut self, page: *mut bindings::page) -> *mut u8 {
        match self.mapped {
            Some((p, base)) if p == page => base,
            _ => {
                self.unmap();
                // SAFETY: `page` is a page of the iterator's, kept by its
                // maker (see `new`); the mapping is undone by `unmap`, the
                // only mapping this makes at a time.
                let base = unsafe { bindings::kmap_local_page(page) }.cast::<u8>();
                self.mapped = Some((page, base));
                base
            }
        }
    }

    /// Undoes the mapping [`PageDest::map`] made, if any.
    fn unmap(&mut self) {
        if let Some((_, base)) = self.mapped.take() {
            // SAFETY: `base` is the mapping `map` made, not undone yet.
            unsafe { bindings::kunmap_local(base.cast::<c_void>().cast_const()) };
        }
    }

    /// Puts the `len` payload bytes at ring offset `off` (8-aligned, as
    /// every payload is) next; false, putting nothing, if they do not fit
    /// or are not inside the ring. The ring's bytes may be overwritten
    /// meanwhile: the caller checks the tail after, as for any copy out of
    /// the ring, and [`PageDest::unfill`]s a torn record.
    pub(super) fn put(&mut self, mem: &RingMem, off: usize, len: usize) -> bool {
        if len > self.len - self.filled {
            return false;
        }
        let Some(src) = mem.words(off, len) else {
            return false;
        };
        let mut done = 0;
        while done < len {
            let Some((page, at, held)) = self.locate(self.filled + done) else {
                return false;
            };
            let n = held.min(len - done);
            let base = self.map(page);
            // SAFETY: `at + n <= PAGE_SIZE` (checked in `new`): inside the
            // mapped page, which nothing else reads or writes until
            // `read_iter` returns. `src` has the words holding payload
            // bytes `done..done + n` (`words`).
            unsafe {
                let dst = base.add(at);
                if len <= WORD_COPY_MAX {
                    copy_words(src, done, n, dst);
                } else {
                    // A larger payload: one `memcpy` a page, which costs
                    // less than words from a few hundred bytes on. The
                    // ring's bytes are shared memory, as for any copy out
                    // of it; the caller checks the tail after.
                    core::ptr::copy_nonoverlapping(src.cast::<u8>().add(done), dst, n);
                }
            }
            done += n;
        }
        self.filled += len;
        true
    }
}

impl Drop for PageDest {
    fn drop(&mut self) {
        self.unmap();
    }
}

/// Copies bytes `from..from + n` of the words at `src` to `dst`: a word at
/// a time where `from` is a word's start, byte by byte where it is not
/// (the rest of a payload that a page boundary of the destination cut).
///
/// # Safety
///
/// `src` is 8-aligned and has the words holding those bytes (others may
/// be writing them); `dst` has `n` writable bytes no one else uses.
unsafe fn copy_words(src: *const u64, from: usize, n: usize, dst: *mut u8) {
    // SAFETY: word `i` holds bytes `8 * i..8 * i + 8`, readable by the
    // contract. Volatile: the ring is shared memory, and it keeps the
    // loops below word loads rather than a `memcpy` call.
    let word = |i: usize| unsafe { src.add(i).read_volatile() }.to_ne_bytes();
    let mut i = 0;
    if from % 8 == 0 {
        while i + 8 <= n {
            // SAFETY: bytes `i..i + 8` of `dst`, below `n`.
            unsafe {
                dst.add(i)
                    .cast::<[u8; 8]>()
                    .write_unaligned(word((from + i) / 8))
            };
            i += 8;
        }
    }
    while i < n {
        let b = from + i;
        let w = word(b / 8);
        let k = b % 8;
        let m = (8 - k).min(n - i);
        for (j, &v) in w.iter().skip(k).take(m).enumerate() {
            // SAFETY: byte `i + j < n` of `dst`.
            unsafe { dst.add(i + j).write(v) };
        }
        i += m;
    }
}
