//! A topic's device file, with the fanout ioctls as safe methods.

use crate::abi;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// An open topic device.
pub struct Topic {
    file: File,
}

fn ioctl<T>(file: &File, request: u32, arg: *mut T) -> io::Result<()> {
    // SAFETY: `request` is one of the fanout ioctls, whose argument is a `T`
    // as declared in `abi.rs`; `arg` points to a live, properly aligned `T`
    // that the kernel may read and write for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Topic {
    /// Opens `path` for reading (and writing if `write`), optionally
    /// non-blocking.
    pub fn open(path: &Path, write: bool, nonblock: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(if nonblock { libc::O_NONBLOCK } else { 0 })
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { file })
    }

    /// Wraps an already open device file.
    pub fn from_file(file: File) -> Self {
        Self { file }
    }

    /// The underlying file (for `read`, `write`, `poll`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Sets this file's read flags (`abi::FLAG_*`).
    pub fn set_flags(&self, mut flags: u32) -> io::Result<()> {
        ioctl(&self.file, abi::IOC_SET_FLAGS, &mut flags)
    }

    /// Moves the read cursor; returns the sequence number read next.
    pub fn seek(&self, whence: u32, arg: u64) -> io::Result<u64> {
        let mut s = abi::Seek {
            whence,
            reserved: 0,
            arg,
        };
        ioctl(&self.file, abi::IOC_SEEK, &mut s)?;
        Ok(s.arg)
    }

    /// Takes the topic's publisher lock for this open file: `EBUSY` while
    /// another open file holds it. Closing the file (or exiting) releases it.
    pub fn claim_publisher(&self) -> io::Result<()> {
        // SAFETY: this ioctl takes no argument.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), abi::IOC_CLAIM_PUBLISHER as _, 0) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Describes this open file and its topic.
    pub fn info(&self) -> io::Result<abi::Info> {
        let mut info = abi::Info::default();
        ioctl(&self.file, abi::IOC_INFO, &mut info)?;
        Ok(info)
    }
}

/// One record of a record-mode read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The kernel-filled header.
    pub header: abi::RecordHeader,
    /// The payload.
    pub payload: &'a [u8],
}

/// Splits the bytes of one record-mode `read()` into records. Stops at the
/// first incomplete record (which the kernel never returns).
pub fn records(mut buf: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        let header = abi::RecordHeader::from_bytes(buf)?;
        let len = header.len as usize;
        let payload = buf.get(abi::RECORD_HEADER_SIZE..abi::RECORD_HEADER_SIZE + len)?;
        buf = buf.get(abi::record_span(len)..).unwrap_or_default();
        Some(Record { header, payload })
    })
}
