// SPDX-License-Identifier: GPL-2.0
//! `write()` of an open topic file: plain records, and batches of frames
//! (the ring's own record format, or the ABI 3 one).

use super::{OpenFile, HDR};
use crate::abi::{self, record_span, RecordHeader};
use crate::compat;
use crate::provenance;
use crate::ring::Stamp;
use crate::topic::{WriterGuard, KEY_IN};
use core::mem::MaybeUninit;
use kernel::{bindings, current, iov::IovIterSource, prelude::*, sync::atomic::Relaxed};

/// Bytes of a batch copied into the ring in one go (at most half the ring).
const BATCH_CHUNK: usize = 256 * 1024;

/// Records up to this size are written through a stack buffer in one hold
/// of the topic lock ([`crate::topic::Topic::publish_small`]); larger ones
/// are copied straight into their reservation, outside the lock.
const SMALL: usize = 256;

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
        if !batch && total <= SMALL {
            return self.write_one_small(iov, total, nonblock);
        }
        let w = self.topic.lock_writer(nonblock)?;
        let stamp = provenance::stamp();
        let mut p = Progress::default();
        let result = if batch && flags & abi::FLAG_WRITER_ID != 0 {
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
            self.topic.stats.records.add(p.records, Relaxed);
            self.topic.stats.bytes.add(p.bytes, Relaxed);
            // One wakeup for the whole call, and none if nobody waits.
            self.topic.readers.wake(KEY_IN);
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
        self.topic.stats.records.add(1, Relaxed);
        self.topic.stats.bytes.add(len as u64, Relaxed);
        self.topic.readers.wake(KEY_IN);
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
