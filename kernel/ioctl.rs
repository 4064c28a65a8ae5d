// SPDX-License-Identifier: GPL-2.0
//! The ioctls of an open topic file (`abi.rs`): flags, seek, mapped-reader
//! sync, the publisher claim, info and waiting for lossless readers.

use super::OpenFile;
use crate::abi;
use crate::atomics::{Acquire, Relaxed};
use crate::topic::{Lossless, Topic, KEY_IN};
use kernel::{
    prelude::*,
    transmute::AsBytes,
    uaccess::{UserPtr, UserSlice},
};

// Our hand-written ioctl encoding in `abi.rs` (shared with userspace) must
// be the kernel's own.
const _: () = {
    use kernel::ioctl::{_IOR, _IOW, _IOWR};
    assert!(abi::IOC_SET_FLAGS == _IOW::<u32>(abi::IOC_TYPE, 1));
    assert!(abi::IOC_SEEK == _IOWR::<abi::Seek>(abi::IOC_TYPE, 2));
    assert!(abi::IOC_INFO == _IOR::<abi::Info>(abi::IOC_TYPE, 3));
    assert!(abi::IOC_MAPPED_SYNC == _IOW::<abi::MappedSync>(abi::IOC_TYPE, 5));
    assert!(abi::IOC_WAIT_READERS == _IOW::<u32>(abi::IOC_TYPE, 6));
    assert!(abi::IOC_SET_LOWAT == _IOW::<u32>(abi::IOC_TYPE, 7));
    assert!(abi::INFO_V2_SIZE == core::mem::offset_of!(abi::Info, topic_flags));
    assert!(abi::RECORD_HEADER_SIZE == 40);
    assert!(abi::CTRL_HEADER_SIZE + 4 <= abi::CTRL_HEAD);
    assert!(abi::CTRL_TAIL_SEQ + 8 <= crate::ringmem::CTRL_SIZE);
};

// SAFETY: `Seek` is `repr(C)`, made of integers with no padding (u32, u32,
// u64), so every byte pattern is a valid value.
unsafe impl kernel::transmute::FromBytes for abi::Seek {}
// SAFETY: As above: no padding, so every byte of a `Seek` is initialized.
unsafe impl kernel::transmute::AsBytes for abi::Seek {}
// SAFETY: `MappedSync` is `repr(C)`, two u64 with no padding, so every
// byte pattern is a valid value.
unsafe impl kernel::transmute::FromBytes for abi::MappedSync {}
// SAFETY: `Info` is `repr(C)`, made of integers laid out without padding
// (2 x u32, u64, 2 x u32, 5 x u64, 2 x u32, u64), so every byte is
// initialized.
unsafe impl kernel::transmute::AsBytes for abi::Info {}

impl OpenFile {
    /// The ioctls of `abi.rs`; `nonblock` is the file's `O_NONBLOCK`.
    pub(crate) fn ioctl(&self, cmd: u32, arg: usize, nonblock: bool) -> Result<isize> {
        let ptr = UserPtr::from_addr(arg);
        match cmd {
            abi::IOC_SET_FLAGS => {
                let flags: u32 = UserSlice::new(ptr, size_of::<u32>()).reader().read()?;
                self.set_flags(flags)?;
            }
            abi::IOC_SEEK => {
                let (mut r, mut w) = UserSlice::new(ptr, size_of::<abi::Seek>()).reader_writer();
                let mut seek: abi::Seek = r.read()?;
                if seek.reserved != 0 {
                    return Err(EINVAL);
                }
                let _g = self.lock_reader()?;
                let slot = self.rs.lock().slot.clone();
                let c = self
                    .topic
                    .seek(slot.as_deref(), |ring, mem| match seek.whence {
                        abi::SEEK_OLDEST => Some(ring.oldest()),
                        abi::SEEK_LAST => Some(ring.last(mem, seek.arg)),
                        abi::SEEK_SEQ => ring.find(mem, seek.arg),
                        abi::SEEK_NOW => Some(ring.now()),
                        _ => None,
                    });
                let c = match (c, seek.whence) {
                    (Some(c), _) => c,
                    (None, abi::SEEK_SEQ) => return Err(ERANGE),
                    (None, _) => return Err(EINVAL),
                };
                seek.arg = c.seq;
                // Report first: if that faults, the cursor has not moved.
                w.write(&seek)?;
                let mut rs = self.rs.lock();
                rs.synced = c.seq;
                self.move_cursor(rs, c);
                // A reader of this file sleeping in `read` re-checks.
                self.topic.readers.wake(KEY_IN);
            }
            abi::IOC_MAPPED_SYNC => {
                let m: abi::MappedSync = UserSlice::new(ptr, size_of::<abi::MappedSync>())
                    .reader()
                    .read()?;
                return self.mapped_sync(m);
            }
            abi::IOC_CLAIM_PUBLISHER => {
                // Only a file that can publish may keep others from it.
                if !self.can_write {
                    return Err(EBADF);
                }
                self.topic.claim_publisher(self.holder_id())?
            }
            abi::IOC_INFO => {
                let info = self.info();
                UserSlice::new(ptr, size_of::<abi::Info>())
                    .writer()
                    .write(&info)?;
            }
            abi::IOC_INFO_V2 => {
                let info = self.info();
                let bytes = info.as_bytes().get(..abi::INFO_V2_SIZE).ok_or(EINVAL)?;
                UserSlice::new(ptr, bytes.len())
                    .writer()
                    .write_slice(bytes)?;
            }
            abi::IOC_SET_LOWAT => {
                let n: u32 = UserSlice::new(ptr, size_of::<u32>()).reader().read()?;
                return self.set_lowat(n);
            }
            abi::IOC_WAIT_READERS => {
                let n: u32 = UserSlice::new(ptr, size_of::<u32>()).reader().read()?;
                self.topic.wait_readers(u64::from(n), nonblock)?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }

    /// `IOC_SET_LOWAT`: this file's wake threshold, 1 to half the ring (0
    /// means 1). Returns the threshold in effect.
    fn set_lowat(&self, n: u32) -> Result<isize> {
        if !self.can_read {
            return Err(EBADF);
        }
        let half = (self.topic.mem.size() / 2) as u64;
        let v = u64::from(n).min(half).max(1);
        self.lowat.store(v, Relaxed);
        // A reader of this file sleeping in `poll` or `read` with the old
        // threshold looks again.
        self.topic.readers.wake(KEY_IN);
        isize::try_from(v).map_err(|_| EINVAL)
    }

    /// `IOC_SET_FLAGS`. Nothing changes on an error.
    fn set_flags(&self, flags: u32) -> Result {
        if !abi::flags_valid(flags) {
            return Err(EINVAL);
        }
        let lossless = flags & abi::FLAG_LOSSLESS != 0;
        if lossless && !self.can_read {
            return Err(EBADF);
        }
        if lossless && !self.may_lossless {
            // A lossy topic, or an opener its owner did not allow.
            return Err(EPERM);
        }
        // The cursor (and the split record) are ours from here on: no
        // other thread's read can start a split behind the check below.
        let _g = self.lock_reader()?;
        let changes_mode = (flags ^ self.flags.load(Relaxed)) & abi::FLAG_RECORD != 0;
        if changes_mode && self.split_pending.load(Acquire) {
            // Finish reading the split record first.
            return Err(EBUSY);
        }
        let (slot, pos) = {
            let mut rs = self.rs.lock();
            let demoted =
                rs.was_demoted || rs.slot.as_ref().is_some_and(|l| l.demoted.load(Acquire));
            if lossless && demoted {
                // Demoted by the stall timeout: lossless again only after
                // reopening the topic.
                return Err(EPERM);
            }
            let slot = if demoted {
                // Cleared after a demotion: start afresh.
                rs.was_demoted = true;
                rs.slot.take()
            } else {
                None
            };
            let r = (rs.slot.clone(), rs.hold_pos());
            drop(rs);
            drop(slot);
            r
        };
        match (lossless, slot) {
            (true, None) => {
                let slot = Lossless::new()?;
                self.topic.add_lossless(&slot, pos)?;
                self.rs.lock().slot = Some(slot);
            }
            (false, Some(slot)) => {
                self.rs.lock().slot = None;
                self.topic.remove_lossless(&slot);
            }
            _ => {}
        }
        self.flags.store(flags, Relaxed);
        Ok(())
    }

    /// `IOC_MAPPED_SYNC`: a mapping reader reports where it is and what it
    /// lost. 1 when `seq` is already overwritten, else 0. The report is
    /// checked before anything (the lossless hold included) moves.
    fn mapped_sync(&self, m: abi::MappedSync) -> Result<isize> {
        let _g = self.lock_reader()?;
        self.check_demoted()?;
        let (slot, synced, counted) = {
            let rs = self.rs.lock();
            (rs.slot.clone(), rs.synced, rs.counted)
        };
        // Loss can only be reported for records never counted before: not
        // again after a seek backward.
        if m.seq < synced || m.lost > m.seq.saturating_sub(synced.max(counted)) {
            return Err(EINVAL);
        }
        let (c, lapped) = {
            let st = self.topic.state.lock();
            let ring = &st.ring;
            if m.seq > ring.next_seq() {
                return Err(ERANGE);
            }
            let found = if m.seq < ring.oldest_seq() {
                (ring.oldest(), true)
            } else {
                (ring.find(&self.topic.mem, m.seq).ok_or(ERANGE)?, false)
            };
            if let Some(l) = &slot {
                Topic::hold_back(&st, l, found.0.pos);
            }
            found
        };
        let mut rs = self.rs.lock();
        rs.synced = m.seq;
        rs.counted = rs.counted.max(m.seq);
        rs.lost = rs.lost.saturating_add(m.lost);
        self.move_cursor(rs, c);
        self.topic.stats.lost.add(m.lost);
        Ok(isize::from(lapped))
    }

    pub(super) fn info(&self) -> abi::Info {
        let (cursor, lost, lossless) = {
            let rs = self.rs.lock();
            let lossless = rs.slot.as_ref().is_some_and(|l| !l.demoted.load(Acquire));
            (rs.cursor, rs.lost, lossless)
        };
        let mut flags = self.flags.load(Relaxed) & !abi::FLAG_LOSSLESS;
        if lossless {
            flags |= abi::FLAG_LOSSLESS;
        }
        let st = self.topic.state.lock();
        abi::Info {
            abi_version: abi::ABI_VERSION,
            flags,
            ring_size: st.ring.size(),
            record_max: u32::try_from(self.topic.record_max).unwrap_or(u32::MAX),
            header_size: abi::header_size(flags) as u32,
            cursor_seq: cursor.seq,
            oldest_seq: st.ring.oldest_seq(),
            next_seq: st.ring.next_seq(),
            lost,
            topic_lost: self.topic.stats.lost.get(),
            topic_flags: self.topic.flags,
            stall_ms: self.topic.stall_ms,
            lossless_readers: self.topic.stats.lossless_readers.get(),
        }
    }
}
