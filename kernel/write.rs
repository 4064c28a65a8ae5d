// SPDX-License-Identifier: GPL-2.0
//! `write()` of an open topic file: plain records, batches of frames (the
//! ring's own record format, or the ABI 3 one), and line mode (the caller's
//! bytes cut into records at each delimiter).

use super::{OpenFile, HDR};
use crate::abi::{self, record_span, RecordHeader};
use crate::atomics::Relaxed;
use crate::compat;
use crate::provenance;
use crate::ring::{Stamp, Stamper, INDEX_STRIDE};
use crate::topic::WriterGuard;
use core::mem::MaybeUninit;
use kernel::{bindings, current, iov::IovIterSource, prelude::*};

/// Bytes of a batch copied into the ring in one go (at most half the ring).
const BATCH_CHUNK: usize = 256 * 1024;

/// Records up to this size are written through a stack buffer in one hold
/// of the topic lock ([`crate::topic::Topic::publish_small`]); larger ones
/// are copied straight into their reservation, outside the lock.
const SMALL: usize = 256;

/// Bytes of the caller's buffer cut into lines at a time in line mode.
const LINE_BLOCK: usize = 64 * 1024;

/// Lines published with one reservation at most, in line mode: their
/// lengths, found once, are kept after the block in the file's line buffer
/// (4 bytes each) until they are written into the ring.
const LINES_MAX: usize = 1024;

/// The size of the file's line buffer: a block, then the lengths.
const LINE_BUF: usize = LINE_BLOCK + 4 * LINES_MAX;

/// The positions of the records of one reservation noted for the sparse
/// index (`ring::Stamper`): one every `INDEX_STRIDE` lines, and one more.
const NOTES: usize = LINES_MAX / INDEX_STRIDE as usize + 1;

/// An open file's line-mode buffers, allocated by its first line-mode
/// `write()`.
#[derive(Default)]
pub(super) struct LineBuf {
    /// A block of the caller's bytes, then the lengths of its lines.
    bytes: KVVec<u8>,
    /// Positions noted for the sparse index while the lines are written.
    notes: KVVec<u64>,
}

/// Where the first `delim` byte of `b` is, looked for 8 bytes at a time.
fn find_byte(b: &[u8], delim: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO.wrapping_mul(u64::from(delim));
    let scan = |from: usize| {
        b.get(from..)
            .and_then(|t| t.iter().position(|&c| c == delim))
            .map(|i| from + i)
    };
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let Ok(w) = <[u8; 8]>::try_from(w) else {
            return scan(at);
        };
        // A byte of `x` is zero where `w` has `delim`; the lowest set bit
        // of `zero` is in the first such byte (bits above it may be set
        // falsely, by the borrow, but never below).
        let x = u64::from_le_bytes(w) ^ pattern;
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    scan(at)
}

/// The length of the record at the start of `b` in line mode: through the
/// first `delim`, at most `record_max` bytes; all of `b` when it ends the
/// caller's buffer (`at_end`). `None` when `b` is empty, or when the line
/// may go on past `b` (no delimiter in it, shorter than `record_max`, and
/// more input follows). With `whole` (`FLAG_WHOLE_LINES`), only a line
/// ended by `delim` within `record_max` bytes is one (and `at_end` is
/// false).
fn next_line(b: &[u8], delim: u8, record_max: usize, at_end: bool, whole: bool) -> Option<usize> {
    let window = b.get(..record_max.min(b.len()))?;
    match find_byte(window, delim) {
        Some(i) => Some(i + 1),
        None if window.is_empty() || whole => None,
        None if window.len() == record_max || at_end => Some(window.len()),
        None => None,
    }
}

/// The errno of a refused batch frame.
fn frame_errno(e: abi::FrameError) -> Error {
    match e {
        abi::FrameError::Invalid => EINVAL,
        abi::FrameError::TooLong => EMSGSIZE,
        abi::FrameError::Truncated => compat::ebadmsg(),
    }
}

/// Copies the next `len` bytes (at most [`SMALL`]) of `iov` into `buf`
/// and returns them; `EFAULT` if the user's buffer faults first. `buf` is
/// not zero-filled first: only the bytes copied in are returned.
///
/// The returned bytes borrow `iov` as well as `buf`, because
/// `IovIterSource::copy_from_iter_raw` ties its result to the iterator.
fn copy_small<'b>(
    iov: &'b mut IovIterSource<'_>,
    buf: &'b mut [MaybeUninit<u8>; SMALL],
    len: usize,
) -> Result<&'b [u8]> {
    let out = buf.get_mut(..len).ok_or(EINVAL)?;
    let payload = iov.copy_from_iter_raw(out);
    if payload.len() < len {
        return Err(EFAULT);
    }
    Ok(payload)
}

/// How line mode cuts a `write()`: after each `delim`, and with `whole`
/// (`FLAG_WHOLE_LINES`, ABI 9) taking whole lines of at most `record_max`
/// bytes only, stopping before anything else.
#[derive(Clone, Copy)]
struct Cut {
    delim: u8,
    whole: bool,
}

/// What a `write()` call has published so far.
#[derive(Default)]
struct Progress {
    /// Bytes of the caller's buffer taken.
    done: usize,
    records: u64,
    /// Payload bytes.
    bytes: u64,
}

impl OpenFile {
    /// `write()`: each `record_max` bytes become one record, or, in batch
    /// mode, each frame does. Never waits for lossy readers; waits
    /// interruptibly for lossless readers to make room, and for another
    /// writer of the topic that is mid-write (`EAGAIN` instead with
    /// `nonblock`, that is `O_NONBLOCK` or `RWF_NOWAIT`, or the bytes
    /// written so far).
    pub(crate) fn write(&self, iov: &mut IovIterSource<'_>, nonblock: bool) -> Result<usize> {
        let total = iov.len();
        if total == 0 {
            return Ok(0);
        }
        let flags = self.flags.load(Relaxed);
        let batch = flags & abi::FLAG_BATCH != 0;
        let lines = abi::line_delimiter(flags);
        if !batch && lines.is_none() && total <= SMALL {
            return self.write_one_small(iov, total, nonblock);
        }
        let w = self.topic.lock_writer(nonblock)?;
        let stamp = provenance::stamp();
        let mut p = Progress::default();
        let result = if let Some(delim) = lines {
            let whole = flags & abi::FLAG_WHOLE_LINES != 0;
            let cut = Cut { delim, whole };
            self.write_lines(&w, iov, cut, stamp, nonblock, &mut p)
        } else if batch && flags & abi::FLAG_WRITER_ID != 0 {
            self.write_batch(&w, iov, stamp, nonblock, &mut p)
        } else if batch {
            self.write_batch_v3(&w, iov, stamp, nonblock, &mut p)
        } else {
            loop {
                if p.done >= total {
                    break Ok(());
                }
                let len = (total - p.done).min(self.topic.record_max);
                if let Err(e) = self.write_record(&w, iov, len, stamp, nonblock) {
                    break Err(e);
                }
                p.done += len;
                p.records += 1;
                p.bytes += len as u64;
                if p.done < total && current!().signal_pending() {
                    break Ok(());
                }
            }
        };
        drop(w);
        if p.records > 0 {
            self.topic.stats.records.add(p.records);
            self.topic.stats.bytes.add(p.bytes);
            // One wakeup for the whole call, and none if nobody waits.
            self.topic.wake_readers();
        }
        match result {
            Err(e) if p.done == 0 => Err(e),
            _ => Ok(p.done),
        }
    }

    /// A `write()` of one small record (`len` up to [`SMALL`] bytes, not a
    /// batch): copied from the user first, onto the stack (a fault there
    /// publishes nothing), then published under one hold of the topic
    /// lock, with no writer turn when no other writer is inside `write()`
    /// and nothing has to wait ([`crate::topic::Topic::publish_small_unturned`]).
    fn write_one_small(
        &self,
        iov: &mut IovIterSource<'_>,
        len: usize,
        nonblock: bool,
    ) -> Result<usize> {
        let mut buf = [const { MaybeUninit::<u8>::uninit() }; SMALL];
        let payload = copy_small(iov, &mut buf, len)?;
        let stamp = provenance::stamp();
        match self.topic.publish_small_unturned(payload, stamp) {
            Some(r) => r?,
            None => {
                let w = self.topic.lock_writer(nonblock)?;
                self.topic.publish_small(&w, payload, stamp, nonblock)?;
            }
        }
        self.topic.stats.records.add(1);
        self.topic.stats.bytes.add(len as u64);
        self.topic.wake_readers();
        Ok(len)
    }

    /// Copies one record of `len` bytes from `iov` into the ring.
    fn write_record(
        &self,
        w: &WriterGuard<'_>,
        iov: &mut IovIterSource<'_>,
        len: usize,
        stamp: Stamp,
        nonblock: bool,
    ) -> Result {
        if len <= SMALL {
            // A small record is copied from the user first, onto the stack
            // (a fault there publishes nothing), then reserved, copied and
            // committed under one hold of the topic lock.
            let mut buf = [const { MaybeUninit::<u8>::uninit() }; SMALL];
            let payload = copy_small(iov, &mut buf, len)?;
            return self.topic.publish_small(w, payload, stamp, nonblock);
        }
        // Fault the source in first, so the copy rarely stops half-way.
        // SAFETY: `iov` is a valid source iterator.
        unsafe { bindings::fault_in_iov_iter_readable(iov.as_raw(), len) };
        let r = self.topic.reserve(w, len, nonblock)?;
        let mask = self.topic.mem.size() as u64 - 1;
        if self.topic.mem.copy_in(r.payload_off(mask), len, iov) < len {
            // A fault in the middle publishes nothing torn.
            self.topic.abort(w, &r);
            return Err(EFAULT);
        }
        // ENODEV when the topic was removed meanwhile: nothing published.
        self.topic.commit(w, &r, stamp)
    }

    /// A batch: the frames are the ring's own record format, so they are
    /// copied into the ring in chunks, one copy each, and then checked and
    /// stamped in place under the topic lock (`Ring::commit_frames`). A
    /// frame cut by the end of a chunk is given back and copied again with
    /// the next one.
    fn write_batch(
        &self,
        w: &WriterGuard<'_>,
        iov: &mut IovIterSource<'_>,
        stamp: Stamp,
        nonblock: bool,
        p: &mut Progress,
    ) -> Result {
        let mem = &self.topic.mem;
        let mask = mem.size() as u64 - 1;
        let min = record_span(self.topic.record_max) as u64;
        let cap = (BATCH_CHUNK as u64).max(min).min(mem.size() as u64 / 2);
        loop {
            let rest = iov.len() as u64;
            if rest == 0 {
                return Ok(());
            }
            if rest < HDR {
                return Err(compat::ebadmsg());
            }
            let want = rest.min(cap);
            // SAFETY: `iov` is a valid source iterator.
            unsafe { bindings::fault_in_iov_iter_readable(iov.as_raw(), want as usize) };
            let c = self.topic.reserve_bytes(w, want, min, nonblock)?;
            let copied = mem.copy_in((c.pos & mask) as usize, c.len as usize, iov) as u64;
            let f = self.topic.commit_frames(w, &c, copied, stamp)?;
            // What follows the whole frames is read again next time.
            // SAFETY: `copied - f.used` of the bytes just copied from `iov`.
            unsafe { iov.revert((copied - f.used) as usize) };
            p.done += f.used as usize;
            p.records += f.records;
            p.bytes += f.bytes;
            if let Some(e) = f.error {
                return Err(frame_errno(e));
            }
            if f.records == 0 {
                // A valid frame always fits a chunk, so nothing published
                // means a fault, or a frame cut by the end of the buffer.
                return Err(if copied < c.len {
                    EFAULT
                } else {
                    compat::ebadmsg()
                });
            }
            if !iov.is_empty() && current!().signal_pending() {
                return Ok(());
            }
        }
    }

    /// Line mode: the caller's bytes, cut into records just after each
    /// `delim` (and every `record_max` bytes of a longer line; the end of
    /// the buffer ends a record too). They are copied [`LINE_BLOCK`] bytes
    /// at a time into the file's line buffer, and the lines of a block are
    /// written into the ring as whole records, stamped as they are written
    /// (`ring::Stamper`), in one reservation, and published in one commit
    /// that only moves the head (unlike a batch's, whose frames the commit
    /// checks and stamps). A line
    /// cut by the end of a block is read again with the next one; a line
    /// longer than a block goes through [`Self::write_long_line`]. With
    /// `cut.whole`, it stops (`Ok`) before a line the buffer ends inside
    /// of or one longer than `record_max`, taking nothing of it. Errors as
    /// `write_batch`: after one, only `p` counts.
    fn write_lines(
        &self,
        w: &WriterGuard<'_>,
        iov: &mut IovIterSource<'_>,
        cut: Cut,
        stamp: Stamp,
        nonblock: bool,
        p: &mut Progress,
    ) -> Result {
        let mut buf = self.lines.lock();
        if buf.bytes.len() < LINE_BUF {
            buf.bytes.clear();
            buf.bytes.resize(LINE_BUF, 0, GFP_KERNEL_ACCOUNT)?;
        }
        if buf.notes.len() < NOTES {
            buf.notes.clear();
            buf.notes.resize(NOTES, 0, GFP_KERNEL_ACCOUNT)?;
        }
        self.write_line_blocks(&mut buf, w, iov, cut, stamp, nonblock, p)
    }

    /// [`Self::write_lines`] with the line buffer `buf` in hand.
    #[allow(clippy::too_many_arguments)]
    fn write_line_blocks(
        &self,
        buf: &mut LineBuf,
        w: &WriterGuard<'_>,
        iov: &mut IovIterSource<'_>,
        cut: Cut,
        stamp: Stamp,
        nonblock: bool,
        p: &mut Progress,
    ) -> Result {
        let Cut { delim, whole } = cut;
        let mem = &self.topic.mem;
        let mask = mem.size() as u64 - 1;
        let record_max = self.topic.record_max;
        // The most bytes of frames reserved at once: at least the largest
        // frame a block can hold.
        let largest = record_span(record_max.min(LINE_BLOCK)) as u64;
        let cap = (BATCH_CHUNK as u64).max(largest).min(mem.size() as u64 / 2);
        loop {
            let want = iov.len().min(LINE_BLOCK);
            if want == 0 {
                return Ok(());
            }
            let (block_buf, lens) = buf.bytes.split_at_mut_checked(LINE_BLOCK).ok_or(EINVAL)?;
            let got = iov.copy_from_iter(block_buf.get_mut(..want).ok_or(EINVAL)?);
            // A block that ends the caller's buffer ends its last record
            // (not with whole lines only).
            let last = got == want && iov.is_empty();
            let at_end = last && !whole;
            let block = block_buf.get(..got).unwrap_or_default();
            let line = |at: usize| {
                block
                    .get(at..)
                    .and_then(|b| next_line(b, delim, record_max, at_end, whole))
            };
            // The first byte of the block not yet published.
            let mut start = 0;
            loop {
                // The lines that fit one reservation, their lengths noted...
                let mut span = 0u64;
                let mut end = start;
                let mut first = 0u64;
                let mut n = 0;
                for slot in lens.chunks_exact_mut(4) {
                    let Some(len) = line(end) else { break };
                    let s = record_span(len) as u64;
                    if span + s > cap {
                        break;
                    }
                    if span == 0 {
                        first = s;
                    }
                    let Ok(slot) = <&mut [u8; 4]>::try_from(slot) else {
                        break;
                    };
                    // A line is at most `LINE_BLOCK` bytes.
                    *slot = (len as u32).to_ne_bytes();
                    n += 1;
                    span += s;
                    end += len;
                }
                if end == start {
                    break;
                }
                // Room for the first line at least, so a short stretch
                // before the ring's end is used rather than padded.
                let c = self.topic.reserve_bytes(w, span, first, nonblock)?;
                // ...written as records, stamped as they go, as many as
                // the chunk holds (it may be shorter: the ring's end, or a
                // lossless reader's hold), and published with no second
                // look at them.
                let mut stamper = Stamper::new(&c, mask, stamp, &mut buf.notes);
                let mut at = start;
                let mut bad = false;
                for slot in lens.chunks_exact(4).take(n) {
                    let len = slot.try_into().map_or(0, u32::from_ne_bytes) as usize;
                    let payload = block.get(at..at + len).unwrap_or_default();
                    match stamper.push(mem, payload) {
                        Ok(true) => at += len,
                        Ok(false) => break,
                        // Not a line, or not inside the ring: cannot happen;
                        // if it did, nothing from this line on is published.
                        Err(_) => {
                            bad = true;
                            break;
                        }
                    }
                }
                let off = stamper.used();
                let f = self.topic.commit_stamped(w, &c, &stamper)?;
                p.done += f.bytes as usize;
                p.records += f.records;
                p.bytes += f.bytes;
                start += f.bytes as usize;
                if bad || f.used < off {
                    return Err(EIO);
                }
                if !(at_end && start == got) && current!().signal_pending() {
                    return Ok(());
                }
            }
            if got < want {
                // A fault: the lines before it are published, nothing of
                // the one it cut.
                return Err(EFAULT);
            }
            let rest = got - start;
            if rest == 0 {
                continue;
            }
            // SAFETY: the last `rest` bytes copied from `iov` above.
            unsafe { iov.revert(rest) };
            if whole && (last || rest >= record_max) {
                // Whole lines only: `rest` begins with a line the buffer
                // ends inside of, or with more than `record_max` bytes
                // without a delimiter. Not taken: the caller has it.
                return Ok(());
            }
            if rest < got {
                // A line cut by the end of the block: read it again with
                // the next one.
                continue;
            }
            // A whole block without a delimiter, and shorter than
            // `record_max`: a long line.
            let Some(len) = self.write_long_line(&mut buf.bytes, w, iov, cut, stamp, nonblock)?
            else {
                return Ok(());
            };
            p.done += len;
            p.records += 1;
            p.bytes += len as u64;
            if !iov.is_empty() && current!().signal_pending() {
                return Ok(());
            }
        }
    }

    /// A line longer than the line buffer, at the start of `iov`: reads
    /// ahead (through `buf`) to its delimiter, its `record_max`-th byte or
    /// the end of the caller's buffer, goes back, and publishes that many
    /// bytes as one record, copied straight into the ring
    /// ([`Self::write_record`]). Returns its length; `None`, publishing
    /// nothing, when `cut.whole` and no delimiter ends it within
    /// `record_max` bytes and the caller's buffer.
    fn write_long_line(
        &self,
        buf: &mut KVVec<u8>,
        w: &WriterGuard<'_>,
        iov: &mut IovIterSource<'_>,
        cut: Cut,
        stamp: Stamp,
        nonblock: bool,
    ) -> Result<Option<usize>> {
        let record_max = self.topic.record_max;
        let mut seen = 0;
        let len = loop {
            let want = iov.len().min(LINE_BLOCK).min(record_max - seen);
            if want == 0 {
                if cut.whole {
                    // SAFETY: `seen` bytes were copied from `iov` in this
                    // loop.
                    unsafe { iov.revert(seen) };
                    return Ok(None);
                }
                break seen;
            }
            let got = iov.copy_from_iter(buf.get_mut(..want).ok_or(EINVAL)?);
            let found = buf.get(..got).and_then(|b| find_byte(b, cut.delim));
            seen += got;
            if let Some(i) = found {
                break seen - got + i + 1;
            }
            if got < want {
                // SAFETY: `seen` bytes were copied from `iov` in this loop.
                unsafe { iov.revert(seen) };
                return Err(EFAULT);
            }
        };
        // SAFETY: `seen` bytes were copied from `iov` in the loop above.
        unsafe { iov.revert(seen) };
        self.write_record(w, iov, len, stamp, nonblock)?;
        Ok(Some(len))
    }

    /// A batch whose frames have the 32-byte ABI 3 header (a program built
    /// before ABI 4): not the ring's layout, so each frame is published as
    /// one record through [`Self::write_record`]. Errors as `write_batch`;
    /// after one, only `p` counts (`write()` returns `p.done` or the error),
    /// not where `iov` stopped.
    fn write_batch_v3(
        &self,
        w: &WriterGuard<'_>,
        iov: &mut IovIterSource<'_>,
        stamp: Stamp,
        nonblock: bool,
        p: &mut Progress,
    ) -> Result {
        const V3: usize = abi::RECORD_HEADER_V3_SIZE;
        loop {
            let rest = iov.len();
            if rest == 0 {
                return Ok(());
            }
            let mut hb = [0u8; V3];
            let got = iov.copy_from_iter(&mut hb);
            let h = RecordHeader::from_bytes_sized(&hb, V3).filter(|_| got == V3);
            let checked = match h {
                Some(h) => {
                    abi::check_frame_sized(&h, V3, rest, self.topic.record_max).map_err(frame_errno)
                }
                None if rest < V3 => Err(compat::ebadmsg()),
                None => Err(EFAULT),
            };
            let (len, span) = checked?;
            self.write_record(w, iov, len, stamp, nonblock)?;
            iov.advance(span - V3 - len);
            p.done += span;
            p.records += 1;
            p.bytes += len as u64;
            if !iov.is_empty() && current!().signal_pending() {
                return Ok(());
            }
        }
    }
}
