// SPDX-License-Identifier: GPL-2.0
//! The fanout ABI: the one definition of everything a program exchanges with
//! the module besides plain `read`/`write`/`poll` bytes.
//!
//! This file is compiled into the kernel module (`kernel/fanout.rs`) and into
//! the userspace library (`libbaf`), so the two can never disagree. It uses
//! only `core`. `ABI.md` in this folder explains it in prose.
//!
//! Compatibility rule: fields are only ever appended to the structs below, and
//! `ABI_VERSION` grows when they are. A struct's size is part of its ioctl
//! number, so an old binary keeps getting the layout it was built with.

/// Grows whenever anything in this file changes meaning or grows.
pub const ABI_VERSION: u32 = 9;

/// The first [`ABI_VERSION`] whose topic files can be either end of
/// `splice` and `sendfile` (before it, both fail with `EINVAL`).
pub const ABI_SPLICE: u32 = 7;

/// The ioctl "type" byte of every fanout ioctl.
pub const IOC_TYPE: u32 = 0xBA;

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, IOC_TYPE, nr, size)` as the kernel's generic ioctl encoding
/// (x86, arm64, riscv) computes it.
pub const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | (IOC_TYPE << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// Set this file's read flags (`FLAG_*`). Argument: pointer to a `u32`.
pub const IOC_SET_FLAGS: u32 = ioc(IOC_WRITE, 1, core::mem::size_of::<u32>());
/// Move this file's read cursor. Argument: pointer to a [`Seek`]; on success
/// `Seek::arg` is overwritten with the sequence number now next to be read.
pub const IOC_SEEK: u32 = ioc(IOC_READ | IOC_WRITE, 2, core::mem::size_of::<Seek>());
/// Describe this open file and its topic. Argument: pointer to an [`Info`].
pub const IOC_INFO: u32 = ioc(IOC_READ, 3, core::mem::size_of::<Info>());
/// [`IOC_INFO`] as ABI 2 defined it: the first [`INFO_V2_SIZE`] bytes of an
/// [`Info`]. Still served, and what a tool uses to learn the module's ABI
/// version before it relies on anything newer.
pub const IOC_INFO_V2: u32 = ioc(IOC_READ, 3, INFO_V2_SIZE);
/// Size of [`Info`] in ABI 2 (up to and including `topic_lost`).
pub const INFO_V2_SIZE: usize = 64;

/// Wait until the topic has at least `n` lossless readers (ABI 3).
/// Argument: pointer to a `u32` `n`. `EAGAIN` with `O_NONBLOCK` while it has
/// fewer, `ENODEV` once the topic is removed, `EPERM` when `n > 0` and the
/// topic does not allow lossless readers.
pub const IOC_WAIT_READERS: u32 = ioc(IOC_WRITE, 6, core::mem::size_of::<u32>());

/// Set this file's wake threshold (ABI 8), as `SO_RCVLOWAT`: `poll` reports
/// `POLLIN`, and a blocking `read()` that found nothing wakes, only once at
/// least that many ring bytes (headers and padding included) are unread, or
/// the topic is removed. Argument: pointer to a `u32`; 0 and 1 mean any
/// record; more than half the ring is taken as half. Returns the threshold
/// in effect. `EBADF` on a file not open for reading.
pub const IOC_SET_LOWAT: u32 = ioc(IOC_WRITE, 7, core::mem::size_of::<u32>());

/// The first [`ABI_VERSION`] that knows [`IOC_SET_LOWAT`].
pub const ABI_LOWAT: u32 = 8;

/// Claim the topic's publisher lock for this open file (no argument):
/// `EBUSY` while another open file holds it. The lock is released when the
/// file that holds it is closed, so it dies with its process.
pub const IOC_CLAIM_PUBLISHER: u32 = ioc(0, 4, 0);

/// For readers of the mapping (ABI 2): "I will read record `seq` next, and
/// lost `lost` records since my last sync". Argument: pointer to a
/// [`MappedSync`]. Adds `lost` to this file's and the topic's loss counts
/// and moves this file's cursor to `seq` (so `poll` reports `POLLIN` exactly
/// when a record at or after `seq` exists). Returns 1 instead of 0 when
/// `seq` was already overwritten (the reader was lapped again: read before
/// sleeping). `ERANGE` when `seq` is after the next record to be written;
/// `EINVAL` when `seq` is before the last synced one or `lost` is more than
/// the records between the two.
pub const IOC_MAPPED_SYNC: u32 = ioc(IOC_WRITE, 5, core::mem::size_of::<MappedSync>());

/// Argument of [`IOC_MAPPED_SYNC`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappedSync {
    /// Sequence number the reader reads next.
    pub seq: u64,
    /// Records it lost since its last sync (or since it mapped the ring).
    pub lost: u64,
}

/// Control device: create a topic. Argument: pointer to a [`TopicSpec`].
/// Returns 1 when created, 0 when it already existed with the same settings.
pub const IOC_CREATE: u32 = ioc(IOC_WRITE, 0x10, core::mem::size_of::<TopicSpec>());
/// [`IOC_CREATE`] as ABI 2 defined it: the first [`TOPIC_SPEC_V2_SIZE`]
/// bytes of a [`TopicSpec`] (no `flags`, no `stall_ms`). Still accepted.
pub const IOC_CREATE_V2: u32 = ioc(IOC_WRITE, 0x10, TOPIC_SPEC_V2_SIZE);
/// Size of [`TopicSpec`] in ABI 2 (up to and including `gid`).
pub const TOPIC_SPEC_V2_SIZE: usize = 96;
/// Control device: remove a topic. Argument: pointer to a [`TopicName`].
pub const IOC_REMOVE: u32 = ioc(IOC_WRITE, 0x11, core::mem::size_of::<TopicName>());

/// Longest topic name, in bytes.
pub const NAME_MAX: usize = 64;

/// A topic name as the control ioctls take it: NUL-padded bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicName {
    /// The name, then at least one NUL.
    pub bytes: [u8; NAME_MAX + 8],
}

impl TopicName {
    /// Packs `name`; `None` if it is too long to pack.
    pub fn new(name: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; NAME_MAX + 8];
        bytes.get_mut(..name.len())?.copy_from_slice(name);
        (name.len() < bytes.len()).then_some(Self { bytes })
    }

    /// The name up to the first NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.bytes.len());
        self.bytes.get(..end).unwrap_or_default()
    }
}

/// Argument of [`IOC_CREATE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic name; see [`check_name`].
    pub name: TopicName,
    /// Ring size in bytes (a power of two); 0 for the module's default.
    pub ring_size: u64,
    /// Largest record in bytes; 0 for a quarter of the ring.
    pub record_max: u32,
    /// Permission bits of the node (at most 0o777).
    pub mode: u32,
    /// Owner of the node. Without `CAP_CHOWN`, only the caller's own
    /// effective uid is accepted.
    pub uid: u32,
    /// Group of the node. Without `CAP_CHOWN`, only one of the caller's
    /// groups is accepted.
    pub gid: u32,
    /// `TOPIC_*` flags (ABI 3).
    pub flags: u32,
    /// Stall timeout in milliseconds (ABI 3): a lossless reader that holds a
    /// writer up this long without reading is demoted to lossy. 0: the
    /// default, [`STALL_MS_DEFAULT`] (ABI 5; ABI 3 and 4 meant "never").
    /// At most [`STALL_MS_MAX`], or [`STALL_MS_NEVER`] (only with
    /// `CAP_SYS_ADMIN`); needs [`TOPIC_LOSSLESS`].
    pub stall_ms: u32,
}

/// [`TopicSpec::flags`]: readers may set [`FLAG_LOSSLESS`] (ABI 3).
pub const TOPIC_LOSSLESS: u32 = 1 << 0;
/// Every topic flag this ABI version knows; others are refused (`EINVAL`).
pub const TOPIC_FLAGS_ALL: u32 = TOPIC_LOSSLESS;
/// Largest [`TopicSpec::stall_ms`]: one hour.
pub const STALL_MS_MAX: u32 = 3_600_000;
/// The stall timeout of a lossless topic created with `stall_ms` 0 (ABI 5):
/// ten seconds.
pub const STALL_MS_DEFAULT: u32 = 10_000;
/// [`TopicSpec::stall_ms`] for no stall timeout at all (ABI 5): a stuck
/// lossless reader may then hold writers up forever, so only a caller with
/// `CAP_SYS_ADMIN` may ask for it (`EPERM` otherwise).
pub const STALL_MS_NEVER: u32 = u32::MAX;
/// Most lossless readers of one topic at once (ABI 5); one more is refused
/// with `ENOSPC`.
pub const LOSSLESS_MAX: usize = 64;

/// Why a topic name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Empty, or an empty level (`a//b`, leading or trailing `/`).
    Empty,
    /// Longer than [`NAME_MAX`] bytes.
    TooLong,
    /// A level that is `.` or `..`.
    DotLevel,
    /// A byte outside `[A-Za-z0-9._-]` and `/`.
    BadChar(u8),
}

/// Checks a topic name: 1 to [`NAME_MAX`] bytes of `[A-Za-z0-9._-]`, with
/// optional `/`-separated levels, none empty, `.` or `..`.
pub fn check_name(name: &[u8]) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    for level in name.split(|&b| b == b'/') {
        match level {
            [] => return Err(NameError::Empty),
            b"." | b".." => return Err(NameError::DotLevel),
            _ => {}
        }
        if let Some(&b) = level
            .iter()
            .find(|&&b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
        {
            return Err(NameError::BadChar(b));
        }
    }
    Ok(())
}

/// Read flag: every record comes with a [`RecordHeader`] (record mode).
pub const FLAG_RECORD: u32 = 1 << 0;
/// Read flag: a read that finds this file lapped fails once with `EPIPE`
/// (after counting the loss and moving to the oldest buffered record).
pub const FLAG_STRICT: u32 = 1 << 1;
/// Write flag (ABI 2): every `write()` on this file is a framed batch of
/// records, each a [`RecordHeader`]-sized frame header (only `len` and
/// `flags` are read; `flags` must be 0, the other fields are ignored and
/// filled in by the kernel), the payload, and padding to a multiple of 8
/// ([`record_span`]). A record-mode read buffer is therefore a valid batch.
pub const FLAG_BATCH: u32 = 1 << 2;
/// Read flag (ABI 3): this file is a lossless reader. Writers wait rather
/// than overwrite a record it has not read. Only on a topic created with
/// [`TOPIC_LOSSLESS`] (`EPERM` otherwise) and a file open for reading
/// (`EBADF` otherwise); from ABI 5 only for a file opened by the topic's
/// owner, a member of its group or a holder of `CAP_SYS_ADMIN`, and never
/// again on a file the stall timeout demoted (`EPERM`).
pub const FLAG_LOSSLESS: u32 = 1 << 3;
/// Read and write flag (ABI 4): this file's record headers, in record-mode
/// reads and in batch frames, are the whole [`RecordHeader`]
/// ([`RECORD_HEADER_SIZE`] bytes, ending with the writer's identity).
/// Without it they are its first [`RECORD_HEADER_V3_SIZE`] bytes, as
/// programs built for ABI 3 expect.
pub const FLAG_WRITER_ID: u32 = 1 << 4;
/// Write flag (ABI 6): line mode. Every `write()` on this file is cut into
/// records just after each newline (the newline stays in the payload); the
/// end of the `write()` ends a record too, and a line longer than
/// `record_max` is cut every `record_max` bytes. Not with [`FLAG_BATCH`]
/// (`EINVAL`).
pub const FLAG_LINES: u32 = 1 << 5;
/// Write flag (ABI 6), only with [`FLAG_LINES`] (`EINVAL` otherwise): cut
/// after each NUL byte instead of each newline.
pub const FLAG_NUL: u32 = 1 << 6;
/// Write flag (ABI 9), only with [`FLAG_LINES`] (`EINVAL` otherwise): a
/// `write()` takes whole lines of at most `record_max` bytes only, and stops
/// before a line the buffer ends inside of or one longer than `record_max`
/// (returning 0 when the buffer starts with it). For `splice` and
/// `sendfile` into a topic, whose passes end anywhere.
pub const FLAG_WHOLE_LINES: u32 = 1 << 7;
/// The first [`ABI_VERSION`] that knows [`FLAG_WHOLE_LINES`].
pub const ABI_WHOLE_LINES: u32 = 9;
/// Every flag this ABI version knows; others are refused with `EINVAL`.
pub const FLAGS_ALL: u32 = FLAG_RECORD
    | FLAG_STRICT
    | FLAG_BATCH
    | FLAG_LOSSLESS
    | FLAG_WRITER_ID
    | FLAG_LINES
    | FLAG_NUL
    | FLAG_WHOLE_LINES;

/// Whether `flags` is a combination [`IOC_SET_FLAGS`] accepts: only known
/// flags, line mode not with batches, and [`FLAG_NUL`] and
/// [`FLAG_WHOLE_LINES`] only in line mode.
pub const fn flags_valid(flags: u32) -> bool {
    flags & !FLAGS_ALL == 0
        && !(flags & FLAG_LINES != 0 && flags & FLAG_BATCH != 0)
        && !(flags & (FLAG_NUL | FLAG_WHOLE_LINES) != 0 && flags & FLAG_LINES == 0)
}

/// The delimiter after which a `write()` on a file with `flags` is cut
/// into records ([`FLAG_LINES`]), if any.
pub const fn line_delimiter(flags: u32) -> Option<u8> {
    if flags & FLAG_LINES == 0 {
        None
    } else if flags & FLAG_NUL != 0 {
        Some(0)
    } else {
        Some(b'\n')
    }
}

/// Header flag of a slot in the ring that holds no record (ABI 2; seen only
/// by `mmap` readers): skip [`record_span`]`(len)` bytes. Space at the end of
/// the ring too small for a header (`< RECORD_HEADER_SIZE` bytes) is skipped
/// without one.
pub const RECORD_FLAG_PAD: u32 = 1 << 31;

/// Why a batch frame is refused (see [`check_frame`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// `len` is 0 or `flags` is not 0 (`EINVAL`).
    Invalid,
    /// `len` is above the topic's record limit (`EMSGSIZE`).
    TooLong,
    /// The buffer ends inside the frame (`EBADMSG`).
    Truncated,
}

/// Checks the frame at the start of `rest` (the unread part of a batch) for
/// a topic whose records are at most `record_max` bytes; returns its payload
/// length and the bytes the whole frame takes.
#[inline]
pub fn check_frame(
    header: &RecordHeader,
    rest: usize,
    record_max: usize,
) -> Result<(usize, usize), FrameError> {
    check_frame_sized(header, RECORD_HEADER_SIZE, rest, record_max)
}

/// [`check_frame`] for frames whose headers are `header_size` bytes
/// ([`RECORD_HEADER_SIZE`] or [`RECORD_HEADER_V3_SIZE`]).
#[inline]
pub fn check_frame_sized(
    header: &RecordHeader,
    header_size: usize,
    rest: usize,
    record_max: usize,
) -> Result<(usize, usize), FrameError> {
    let len = header.len as usize;
    if len == 0 || header.flags != 0 {
        return Err(FrameError::Invalid);
    }
    if len > record_max {
        return Err(FrameError::TooLong);
    }
    let span = record_span_sized(header_size, len);
    if rest < span {
        return Err(FrameError::Truncated);
    }
    Ok((len, span))
}

// --- The mapped ring (ABI 2) ------------------------------------------------
//
// `mmap(NULL, page_size + ring_size, PROT_READ, MAP_SHARED, fd, 0)` on a
// topic file opened for reading gives the control page (offset 0) and, from
// offset `page_size` on, the ring's bytes. Byte offsets in the control page:

/// `u32`: [`MMAP_MAGIC`].
pub const CTRL_MAGIC: usize = 0;
/// `u32`: [`ABI_VERSION`] of the module that made the ring.
pub const CTRL_ABI_VERSION: usize = 4;
/// `u64`: ring size in bytes (a power of two).
pub const CTRL_RING_SIZE: usize = 8;
/// `u64`: where the ring's bytes start in the mapping (the page size).
pub const CTRL_DATA_OFFSET: usize = 16;
/// `u32`: the topic's record limit.
pub const CTRL_RECORD_MAX: usize = 24;
/// `u32`, atomic: [`CTRL_FLAG_REMOVED`] once the topic is removed.
pub const CTRL_FLAGS: usize = 28;
/// `u32`: size of the record headers in the ring, [`RECORD_HEADER_SIZE`]
/// (ABI 4).
pub const CTRL_HEADER_SIZE: usize = 32;
/// `u64`, atomic: position just past the newest committed record. Stored with
/// release order after the record's bytes: load it with acquire.
pub const CTRL_HEAD: usize = 64;
/// `u64`, atomic: sequence number the next record will get.
pub const CTRL_HEAD_SEQ: usize = 72;
/// `u64`, atomic: position of the oldest record still intact. Stored (then a
/// write barrier) before the writer overwrites anything below it.
pub const CTRL_TAIL: usize = 128;
/// `u64`, atomic: sequence number of the record at the tail (informational:
/// it is not updated atomically with [`CTRL_TAIL`]; use the record headers).
pub const CTRL_TAIL_SEQ: usize = 136;

/// Value at [`CTRL_MAGIC`]: "baf4" in little-endian bytes. ABI 2 and 3 used
/// "bafR" (`0x5266_6162`); the new value makes their mapped readers refuse
/// the ring's longer ABI 4 headers instead of misreading them.
pub const MMAP_MAGIC: u32 = 0x3466_6162;
/// [`CTRL_FLAGS`] bit: the topic was removed; nothing more will be written.
pub const CTRL_FLAG_REMOVED: u32 = 1;

/// [`Seek::whence`]: the oldest record still buffered.
pub const SEEK_OLDEST: u32 = 0;
/// [`Seek::whence`]: the last `arg` records (fewer if fewer are buffered).
pub const SEEK_LAST: u32 = 1;
/// [`Seek::whence`]: the record with sequence number `arg`; `ERANGE` if it is
/// no longer (or not yet) buffered.
pub const SEEK_SEQ: u32 = 2;
/// [`Seek::whence`]: skip everything buffered; read only what comes next.
pub const SEEK_NOW: u32 = 3;

/// Argument of [`IOC_SEEK`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seek {
    /// One of the `SEEK_*` values.
    pub whence: u32,
    /// Must be zero.
    pub reserved: u32,
    /// A count (`SEEK_LAST`) or a sequence number (`SEEK_SEQ`); on return,
    /// the sequence number of the next record this file will read.
    pub arg: u64,
}

/// Result of [`IOC_INFO`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// [`ABI_VERSION`] of the running module.
    pub abi_version: u32,
    /// This file's read flags (`FLAG_*`).
    pub flags: u32,
    /// Ring size of the topic, in bytes.
    pub ring_size: u64,
    /// Largest record, in bytes; a longer `write()` is split into records
    /// of this size.
    pub record_max: u32,
    /// Size of [`RecordHeader`] as this module writes it.
    pub header_size: u32,
    /// Sequence number this file reads next.
    pub cursor_seq: u64,
    /// Sequence number of the oldest record still buffered.
    pub oldest_seq: u64,
    /// Sequence number the next record written will get.
    pub next_seq: u64,
    /// Records this open file has lost to overrun.
    pub lost: u64,
    /// Records lost by all readers of the topic, ever.
    pub topic_lost: u64,
    /// `TOPIC_*` flags of the topic (ABI 3).
    pub topic_flags: u32,
    /// The topic's stall timeout in milliseconds, 0 for none (ABI 3).
    pub stall_ms: u32,
    /// Files of the topic that are lossless readers now (ABI 3).
    pub lossless_readers: u64,
}

/// In record mode every record a `read()` returns starts with this header,
/// filled in by the kernel; the payload follows, then zero padding up to the
/// next multiple of 8 bytes ([`record_span`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Reserved for the kernel; zero in this ABI version.
    pub flags: u32,
    /// Sequence number: 0 for a topic's first record, then +1 each record.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` time of the write, in nanoseconds.
    pub timestamp_ns: u64,
    /// Writer's process id in the reader's pid namespace; 0 if not visible.
    pub pid: u32,
    /// Writer's user id in the reader's user namespace.
    pub uid: u32,
    /// Writer's identity (ABI 4, only with [`FLAG_WRITER_ID`]): the pidfs
    /// inode number of the writing process, as `fstat()` of a pidfd for it
    /// gives in `st_ino`; never reused before reboot, unlike a pid. 0 if
    /// unknown.
    pub writer: u64,
}

/// Size of [`RecordHeader`]: the header in the ring, in batch frames and
/// in record-mode reads of a file with [`FLAG_WRITER_ID`].
pub const RECORD_HEADER_SIZE: usize = core::mem::size_of::<RecordHeader>();
// The ring, batch frames and record-mode reads all use this 40-byte layout:
// fields back to back, no padding (the module reads and writes it in place).
const _: () = assert!(RECORD_HEADER_SIZE == 40);
/// Size of the ABI 3 record header (no `writer`): what a file without
/// [`FLAG_WRITER_ID`] reads and writes.
pub const RECORD_HEADER_V3_SIZE: usize = 32;

/// Bytes one record of `len` payload bytes takes in the ring and in a
/// record-mode read with [`FLAG_WRITER_ID`]: header plus payload, rounded
/// up to 8.
#[inline]
pub const fn record_span(len: usize) -> usize {
    record_span_sized(RECORD_HEADER_SIZE, len)
}

/// [`record_span`] with `header_size`-byte headers.
#[inline]
pub const fn record_span_sized(header_size: usize, len: usize) -> usize {
    (header_size + len + 7) & !7
}

/// Size of the record headers of a file with read/write flags `flags`.
#[inline]
pub const fn header_size(flags: u32) -> usize {
    if flags & FLAG_WRITER_ID != 0 {
        RECORD_HEADER_SIZE
    } else {
        RECORD_HEADER_V3_SIZE
    }
}

impl RecordHeader {
    /// The header as the bytes `read()` delivers (native endian).
    pub fn to_bytes(self) -> [u8; RECORD_HEADER_SIZE] {
        let mut b = [0u8; RECORD_HEADER_SIZE];
        b[0..4].copy_from_slice(&self.len.to_ne_bytes());
        b[4..8].copy_from_slice(&self.flags.to_ne_bytes());
        b[8..16].copy_from_slice(&self.seq.to_ne_bytes());
        b[16..24].copy_from_slice(&self.timestamp_ns.to_ne_bytes());
        b[24..28].copy_from_slice(&self.pid.to_ne_bytes());
        b[28..32].copy_from_slice(&self.uid.to_ne_bytes());
        b[32..40].copy_from_slice(&self.writer.to_ne_bytes());
        b
    }

    /// Parses a header from the first [`RECORD_HEADER_SIZE`] bytes of `b`.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Self::from_bytes_sized(b, RECORD_HEADER_SIZE)
    }

    /// Parses a `header_size`-byte header from the start of `b`: with
    /// [`RECORD_HEADER_V3_SIZE`], `writer` is 0.
    pub fn from_bytes_sized(b: &[u8], header_size: usize) -> Option<Self> {
        let u32_at = |i: usize| Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?));
        let u64_at = |i: usize| Some(u64::from_ne_bytes(b.get(i..i + 8)?.try_into().ok()?));
        let writer = if header_size >= RECORD_HEADER_SIZE {
            u64_at(32)?
        } else {
            0
        };
        Some(Self {
            len: u32_at(0)?,
            flags: u32_at(4)?,
            seq: u64_at(8)?,
            timestamp_ns: u64_at(16)?,
            pid: u32_at(24)?,
            uid: u32_at(28)?,
            writer,
        })
    }
}
