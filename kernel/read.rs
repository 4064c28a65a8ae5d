// SPDX-License-Identifier: GPL-2.0
//! `read()` of an open topic file: the lock-free copy of whole records
//! from the ring (see `file.rs` for how it stays intact), and the pieces of
//! a record larger than the caller's buffer.

use super::pages::PageDest;
use super::{OpenFile, Split, HDR, SPLIT_KEEP};
use crate::abi::{self, record_span, RecordHeader};
use crate::atomics::{Relaxed, Release};
use crate::provenance::{self, Viewer};
use crate::ring::{Cursor, Mem, PAD_FLAG};
use kernel::{current, iov::IovIterDest, prelude::*};

/// Zero padding after a payload in record mode.
static ZEROS: [u8; 8] = [0; 8];

/// Most bytes of a run of records copied in one go (one record larger than
/// this is a run of its own). The tail is checked after each run, and a
/// torn run is given back whole: the bound keeps a writer that laps the
/// reader from undoing more than this much of a `read()`.
const RUN_MAX: usize = 16 * 1024;

/// What one pass over the ring produced.
enum Pass {
    /// `n` bytes delivered (0 only at end of file).
    Done(usize),
    /// Nothing to read yet.
    Nothing,
    /// The writer overwrote what was copied: start again.
    Overrun,
}

impl OpenFile {
    /// `read()`: whole records (or the pieces of one larger than the
    /// caller's buffer); blocks unless `nonblock`; 0 once the topic is
    /// removed and drained.
    pub(crate) fn read(&self, iov: &mut IovIterDest<'_>, nonblock: bool) -> Result<usize> {
        if iov.is_empty() {
            return Ok(0);
        }
        loop {
            let pass = {
                let _g = self.lock_reader()?;
                self.check_demoted()?;
                self.read_once(iov)?
            };
            match pass {
                Pass::Done(n) => return Ok(n),
                // Lapped: the next pass counts the loss and starts again at
                // the oldest record.
                Pass::Overrun => {
                    if current!().signal_pending() {
                        return Err(ERESTARTSYS);
                    }
                    continue;
                }
                Pass::Nothing => {}
            }
            if nonblock {
                // Nothing to ask for here: whoever sleeps next does so in
                // `poll` (epoll looks at a woken file through it before it
                // reports or drops it) or in a blocking `read()`, and both
                // ask for their wakeup before they look.
                return Err(EAGAIN);
            }
            self.topic
                .readers
                .wait_interruptible(|| self.ready_to_wake())?;
        }
    }

    /// Counts the loss of a lapped reader and moves it to the oldest record.
    /// In strict mode this fails once with `EPIPE` (after moving).
    fn catch_up(&self, flags: u32) -> Result<Cursor> {
        let oldest = self.topic.cursor(|r, _| Some(r.oldest())).ok_or(EINVAL)?;
        let mut rs = self.rs.lock();
        let c = rs.cursor;
        if c.pos >= oldest.pos {
            return Ok(c);
        }
        let lost = oldest.seq.saturating_sub(c.seq);
        self.set_cursor(&mut rs, oldest);
        rs.lost = rs.lost.saturating_add(lost);
        rs.counted = rs.counted.max(oldest.seq);
        drop(rs);
        self.topic.stats.lost.add(lost);
        if lost > 0 && flags & abi::FLAG_STRICT != 0 {
            return Err(EPIPE);
        }
        Ok(oldest)
    }

    /// One pass over the ring. The caller holds the reader guard.
    ///
    /// Each record is checked right after it is copied: if the tail has not
    /// passed its start, the writer had not begun to overwrite it, so the
    /// copy is intact. Writers overwrite oldest first, so the intact records
    /// of a pass are a prefix: they are delivered, and the pass stops at the
    /// first torn one (the next pass counts the loss and goes on from the
    /// oldest record).
    fn read_once(&self, iov: &mut IovIterDest<'_>) -> Result<Pass> {
        let flags = self.flags.load(Relaxed);
        let record_mode = flags & abi::FLAG_RECORD != 0;
        // The header this file reads: the ring's own, or its ABI 3 prefix.
        let hsize = abi::header_size(flags);
        let mem = &self.topic.mem;
        let (mut c, split) = {
            let rs = self.rs.lock();
            (rs.cursor, rs.split)
        };
        if let Some(s) = split {
            return self.read_split(s, iov).map(Pass::Done);
        }
        // Removal is checked before the head, so a reader that sees it has
        // also seen every record.
        let dead = mem.removed();
        let head = mem.head();
        if c.pos < mem.tail() {
            c = self.catch_up(flags)?;
        }
        let size = mem.size() as u64;
        let mask = size - 1;
        let limit = iov.len();
        // A record-mode read of the ring's own header, by a task in the
        // initial namespaces (which sees global pids and kuids as they
        // are), returns exactly the ring's bytes: committed records have
        // flags 0 and zero padding. Runs of such records are copied in
        // one go ([`Self::run_end`]), not three copies a record.
        let whole = record_mode && hsize as u64 == HDR && provenance::in_initial_namespaces();
        let viewer = (record_mode && !whole).then(Viewer::current);
        // Bytes mode into kernel pages (`splice`): payloads are put into
        // the pages directly (`pages.rs`), and `iov` moves once, at the end.
        let mut dest = if record_mode {
            None
        } else {
            // SAFETY: `dest` lives in this call only, and `iov` moves only
            // after its last use (below the loop), or through the split
            // path, which runs only while nothing was put.
            unsafe { PageDest::new(iov) }
        };
        let mut out = 0usize;
        let mut pos = c.pos;
        let mut seq = c.seq;
        // Where the walk to the current record began: the padding skipped
        // on the way was read from the ring too, so the check covers it.
        let mut rec_start = pos;
        let mut faulted = false;
        let mut torn = false;
        let mut new_split = None;
        while pos < head {
            let off = pos & mask;
            let room = size - off;
            if room < HDR {
                pos += room;
                continue;
            }
            let h = mem.header(off as usize);
            if h.flags & PAD_FLAG != 0 {
                pos += (record_span(h.len as usize) as u64).min(room);
                continue;
            }
            let len = h.len as usize;
            if !self.is_record(&h, seq) {
                if mem.tail_after_copy() <= rec_start {
                    // A damaged header the tail does not explain: never
                    // loop on it.
                    return Err(EIO);
                }
                torn = true;
                break;
            }
            let body = (off + HDR) as usize;
            let need = if record_mode {
                abi::record_span_sized(hsize, len)
            } else {
                len
            };
            let before = iov.len();
            if out + need > limit {
                if out > 0 {
                    break;
                }
                if record_mode {
                    if mem.tail_after_copy() > rec_start {
                        torn = true;
                        break;
                    }
                    // The caller's buffer cannot hold this record; it stays
                    // unread.
                    return Err(EMSGSIZE);
                }
                // Plain mode: hand the record over in pieces, from a copy
                // of the whole record, so a writer cannot tear it.
                match self.start_split(body, len, rec_start, iov)? {
                    None => torn = true,
                    Some(0) => faulted = true,
                    Some(n) => {
                        out = n;
                        new_split = Some(Split { len, done: n });
                        pos += record_span(len) as u64;
                        seq += 1;
                        rec_start = pos;
                    }
                }
                break;
            }
            let (ok, delivered, end, end_seq) = if whole {
                let room = (limit - out).min(RUN_MAX);
                let (end, end_seq) = self.run_end(pos, need, seq, head, room);
                let bytes = (end - pos) as usize;
                let copied = mem.copy_out(off as usize, bytes, iov);
                if copied == bytes || copied < need {
                    (copied == bytes, bytes, end, end_seq)
                } else {
                    // A fault part-way (the caller's buffer runs into a
                    // hole): the whole records before it stand.
                    let (end, end_seq) = self.run_end(pos, need, seq, head, copied);
                    let kept = (end - pos) as usize;
                    // SAFETY: `copied - kept` of the bytes just copied into
                    // `iov`.
                    unsafe { iov.revert(copied - kept) };
                    (true, kept, end, end_seq)
                }
            } else {
                let mut ok = true;
                if let Some(v) = &viewer {
                    let hb = RecordHeader {
                        len: h.len,
                        flags: 0,
                        seq: h.seq,
                        timestamp_ns: h.timestamp_ns,
                        pid: v.pid(h.pid, h.writer),
                        uid: v.uid(h.uid),
                        writer: h.writer,
                    }
                    .to_bytes();
                    let hb = hb.get(..hsize).unwrap_or_default();
                    ok = iov.copy_to_iter(hb) == hsize;
                }
                ok = ok
                    && match dest.as_mut() {
                        Some(d) => d.put(mem, body, len),
                        None => mem.copy_out(body, len, iov) == len,
                    };
                if record_mode && ok {
                    let pad = need - hsize - len;
                    ok = iov.copy_to_iter(ZEROS.get(..pad).unwrap_or_default()) == pad;
                }
                (ok, need, pos + record_span(len) as u64, seq + 1)
            };
            let intact = mem.tail_after_copy() <= rec_start;
            if !ok || !intact {
                // Give back this record's (or run's) bytes; the ones before
                // it stand, and the next pass starts again at it.
                // SAFETY: `before - iov.len()` bytes of this record (or run)
                // were copied into `iov` just above.
                unsafe { iov.revert(before - iov.len()) };
                if let Some(d) = dest.as_mut() {
                    d.unfill(out);
                }
                faulted = !ok && intact;
                torn = !intact;
                break;
            }
            out += delivered;
            pos = end;
            seq = end_seq;
            rec_start = pos;
        }
        if let Some(d) = &dest {
            iov.advance(d.filled());
        }
        if out == 0 {
            if torn {
                // The writer overwrote our next record: count the loss and
                // go on from the oldest one.
                return Ok(Pass::Overrun);
            }
            if faulted {
                return Err(EFAULT);
            }
        }
        let mut rs = self.rs.lock();
        // Only what a check covered is passed: padding read after the last
        // delivered record may have been torn, so it is read again.
        self.set_cursor(
            &mut rs,
            Cursor {
                pos: rec_start,
                seq,
            },
        );
        rs.counted = rs.counted.max(seq);
        if new_split.is_some() {
            rs.split = new_split;
            self.split_pending.store(true, Release);
        }
        self.unlock_and_release(rs);
        if out > 0 {
            return Ok(Pass::Done(out));
        }
        Ok(if dead && pos >= head {
            Pass::Done(0)
        } else {
            Pass::Nothing
        })
    }

    /// Whether `h` (not padding) is the header of record `seq` as the ring
    /// commits it: one the writer has not torn or overwritten.
    fn is_record(&self, h: &RecordHeader, seq: u64) -> bool {
        h.seq == seq && h.len != 0 && h.len as usize <= self.topic.record_max
    }

    /// The end of the run of records that starts with the one at `pos`
    /// (`span` bytes, sequence number `seq`, already checked): the records
    /// after it that are in sequence, before `head` and the end of the
    /// ring, and fit `room` bytes with it (the first always counts).
    /// Returns the position and sequence number after the run. Headers
    /// read here may be torn by a writer: the caller checks the tail after
    /// copying the run, which covers them.
    fn run_end(&self, pos: u64, span: usize, seq: u64, head: u64, room: usize) -> (u64, u64) {
        let mem = &self.topic.mem;
        let mask = mem.size() as u64 - 1;
        let ring_end = (pos | mask) + 1;
        let limit = head.min(ring_end).min(pos + room as u64);
        let mut end = pos + span as u64;
        let mut next = seq + 1;
        while end + HDR <= limit {
            let h = mem.header((end & mask) as usize);
            let len = h.len as usize;
            if h.flags != 0 || !self.is_record(&h, next) {
                break;
            }
            let span = record_span(len) as u64;
            if end + span > limit {
                break;
            }
            end += span;
            next += 1;
        }
        (end, next)
    }

    /// Starts handing over a record of `len` payload bytes at ring offset
    /// `body` (its walk began at `rec_start`) that is larger than the
    /// caller's buffer: copies all of it into this file's buffer, checks
    /// that the writer did not overwrite it meanwhile, and delivers the
    /// first piece. `None` when it was overwritten (nothing delivered);
    /// `Some(0)` on a fault (nothing delivered); else the bytes delivered.
    fn start_split(
        &self,
        body: usize,
        len: usize,
        rec_start: u64,
        iov: &mut IovIterDest<'_>,
    ) -> Result<Option<usize>> {
        let mut buf = core::mem::take(&mut self.rs.lock().buf);
        let r = (|| -> Result<Option<usize>> {
            buf.clear();
            buf.resize(len, 0, GFP_KERNEL_ACCOUNT)?;
            let mem = &self.topic.mem;
            if !mem.copy_to_kernel(body, &mut buf) || mem.tail_after_copy() > rec_start {
                return Ok(None);
            }
            let first = buf.get(..iov.len().min(len)).unwrap_or_default();
            Ok(Some(iov.copy_to_iter(first)))
        })();
        self.put_buf(buf, r.as_ref().is_ok_and(|n| n.is_some_and(|n| n > 0)));
        r
    }

    /// Gives the split buffer back to the read state; when no split is
    /// under way (`keep` false) a large one is freed, outside the lock.
    fn put_buf(&self, buf: KVVec<u8>, keep: bool) {
        let big = buf.capacity() > SPLIT_KEEP;
        let spare = if keep || !big {
            core::mem::replace(&mut self.rs.lock().buf, buf)
        } else {
            buf
        };
        drop(spare);
    }

    /// Hands over more of a record larger than the caller's buffer, from
    /// this file's copy of it.
    fn read_split(&self, s: Split, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let buf = core::mem::take(&mut self.rs.lock().buf);
        let end = s.len.min(s.done.saturating_add(iov.len()));
        let piece = buf.get(s.done..end).unwrap_or_default();
        let copied = iov.copy_to_iter(piece);
        let done = s.done + copied;
        let finished = done >= s.len;
        let mut rs = self.rs.lock();
        if copied > 0 {
            if finished {
                rs.split = None;
                self.split_pending.store(false, Release);
            } else {
                rs.split = Some(Split { done, ..s });
            }
        }
        drop(rs);
        self.put_buf(buf, !finished);
        if copied == 0 {
            return Err(EFAULT);
        }
        Ok(copied)
    }
}
