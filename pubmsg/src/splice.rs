//! `--raw` input moved into the topic by the kernel (ABI 7): `splice` from
//! a pipe, `sendfile` from a regular file, so pubmsg never copies the bytes.

use crate::{publish_raw, Stats};
use anyhow::{Context, Result};
use baf::device::Topic;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Where `--raw` input comes from, for [`publish_spliced`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A pipe or FIFO: `splice`.
    Pipe,
    /// A regular file: `sendfile`.
    File,
}

/// What `input` is, for [`publish_spliced`]: a pipe, a regular file, or
/// neither (a terminal, a socket...: read and write it).
pub fn source_of(input: BorrowedFd<'_>) -> Option<Source> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fstat` writes a `stat` into the valid, writable `st`; the
    // descriptor is open (borrowed).
    let rc = unsafe { libc::fstat(input.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `fstat` succeeded, so it filled in `st`.
    match unsafe { st.assume_init() }.st_mode & libc::S_IFMT {
        libc::S_IFIFO => Some(Source::Pipe),
        libc::S_IFREG => Some(Source::File),
        _ => None,
    }
}

/// `--raw` from a pipe or a regular file, where the module has `splice`
/// (ABI 7): the input moves into the topic with `splice` (a pipe: what it
/// holds) or `sendfile` (a file: 64 KiB at a time), each pass one `write()`,
/// so one record of at most `record_max` bytes (and at most 1 MiB), copied
/// once by the kernel from the pipe's or the page cache's pages into the
/// ring: pubmsg never touches the bytes. Records are not counted (one pass
/// may write several). An input or module that refuses before anything
/// moved (`EINVAL`) means [`publish_raw`], with reads and writes.
pub fn publish_spliced(
    input: BorrowedFd<'_>,
    source: Source,
    topic: &Topic,
    record_max: usize,
) -> Result<Stats> {
    let len = record_max.clamp(1, 1 << 20);
    let mut stats = Stats::default();
    loop {
        let moved = match source {
            Source::Pipe => topic.splice_in(input, len),
            Source::File => topic.sendfile_in(input, len),
        };
        match moved {
            Ok(0) => return Ok(stats),
            Ok(n) => {
                stats.writes += 1;
                stats.bytes += n as u64;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && stats.bytes == 0 => {
                let input = File::from(input.try_clone_to_owned()?);
                return publish_raw(input, topic.file(), record_max);
            }
            Err(e) => return Err(e).context("moving the input into the topic with splice"),
        }
    }
}
