//! Stdout, written in large pieces: gathered in a buffer, written when it
//! is full or when no topic has more to read, and a closed pipe (`submsg |
//! head -1`) is a normal end.

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd};

/// Stdout, written in large pieces.
pub(crate) struct Output {
    pub(crate) file: File,
    pub(crate) buf: Vec<u8>,
    /// The reader went away (`EPIPE`): a normal end.
    pub(crate) closed: bool,
}

/// Flush when this much output is waiting, even if topics are busy.
pub(crate) const FLUSH_AT: usize = 256 * 1024;

impl Output {
    pub(crate) fn new() -> Result<Self> {
        let fd = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("stdout is not open")?;
        Ok(Self {
            file: File::from(fd),
            buf: Vec::with_capacity(FLUSH_AT + 128 * 1024),
            closed: false,
        })
    }

    /// Whether stdout is a pipe (or FIFO) in blocking mode: where a topic's
    /// payloads may go with `splice`, which waits for room as `write()`
    /// does (on a non-blocking pipe its `EAGAIN` would mean either a full
    /// pipe or an empty topic).
    pub(crate) fn is_blocking_pipe(&self) -> bool {
        let fifo = nix::sys::stat::fstat(self.file.as_raw_fd())
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
        let blocking = nix::fcntl::fcntl(self.file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .is_ok_and(|fl| fl & libc::O_NONBLOCK == 0);
        fifo && blocking
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.flush_with(&[])
    }

    /// Writes the buffer and then `tail` (a large payload, straight from
    /// the read buffer: no copy), in one `writev` where it fits.
    pub(crate) fn flush_with(&mut self, tail: &[u8]) -> Result<()> {
        let mut slices = [IoSlice::new(&self.buf), IoSlice::new(tail)];
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() && !self.closed {
            match (&self.file).write_vectored(rest) {
                Ok(0) => {
                    return Err(io::Error::from(io::ErrorKind::WriteZero)).context("writing stdout")
                }
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Someone made our stdout non-blocking: wait for room.
                    let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLOUT)];
                    let _ = nix::poll::poll(&mut fds, PollTimeout::NONE);
                }
                // `submsg t | head -1`: the reader is done, so are we.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => self.closed = true,
                Err(e) => return Err(e).context("writing stdout"),
            }
        }
        self.buf.clear();
        Ok(())
    }
}

/// Raw payloads at least this large go from the read buffer to stdout
/// directly instead of through the output buffer.
pub(crate) const DIRECT: usize = 16 * 1024;
