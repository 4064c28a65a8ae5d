//! Input moved into the topic by the kernel: `splice` from a pipe,
//! `sendfile` from a regular file, so pubmsg never copies the bytes. `--raw`
//! (ABI 7), and lines (ABI 9, whole lines a pass).

use crate::{line_flags, publish_raw, LineWriter, Stats};
use anyhow::{Context, Result};
use baf::abi;
use baf::device::Topic;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd};

/// Where `--raw` input comes from, for [`publish_spliced`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A pipe or FIFO: `splice`.
    Pipe,
    /// A regular file: `sendfile`.
    File,
}

impl Source {
    /// One move of up to `len` bytes of `input` into `topic`: `splice` from
    /// a pipe, `sendfile` from a file.
    fn pass(self, topic: &Topic, input: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        match self {
            Source::Pipe => topic.splice_in(input, len),
            Source::File => topic.sendfile_in(input, len),
        }
    }
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
        let moved = source.pass(topic, input, len);
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

/// Line mode from a pipe or a regular file, where the module takes whole
/// lines from a pass (`FLAG_WHOLE_LINES`, ABI 9): the input moves into the
/// topic with `splice` or `sendfile`, and the kernel cuts it into lines as
/// it copies it from the pipe's or the page cache's pages into the ring, so
/// pubmsg never touches the bytes. A pass takes only its whole lines; a
/// line it cuts stays in the pipe (or is read again from the file) for the
/// next pass. A pass that takes nothing (the input's end, a line not ended
/// yet, or one longer than `record_max`) returns 0: pubmsg then reads that
/// stretch itself ([`LineWriter`], in plain line mode),
/// until what it read ends with a whole line, and splices again.
pub fn publish_spliced_lines(
    input: BorrowedFd<'_>,
    source: Source,
    topic: &Topic,
    delim: u8,
    record_max: usize,
    mut warn: impl FnMut(&str),
) -> Result<Stats> {
    let flags = line_flags(delim);
    let mode = |whole: bool| {
        let f = if whole {
            flags | abi::FLAG_WHOLE_LINES
        } else {
            flags
        };
        topic
            .set_flags(f)
            .context("switching the topic file's line mode")
    };
    let mut reader = File::from(input.try_clone_to_owned()?);
    let mut peek = match source {
        Source::Pipe => Peek::new().ok(),
        Source::File => None,
    };
    let mut lines = LineWriter::new(topic.file(), delim, record_max);
    let mut moved_any = false;
    mode(true)?;
    loop {
        let moved = source.pass(topic, input, SPLICE_LINES);
        match moved {
            Ok(0) => {
                // The end, or a stretch that is not whole lines: read it,
                // until what was read ends with a whole line. From a pipe,
                // the rest of a line already in it is read exactly, so
                // that the next read does not end inside a line again.
                mode(false)?;
                loop {
                    if !lines.step(&mut reader, &mut warn)? {
                        return Ok(lines.stats);
                    }
                    if !lines.pending() {
                        break;
                    }
                    let Some(peek) = peek.as_mut() else {
                        continue;
                    };
                    // The read above took all the pipe held: wait for
                    // more, and look for the line's end in it before
                    // taking any.
                    peek.wait(input);
                    if let Some(end) = peek.line_end(input, delim) {
                        if !lines.read_exactly(&mut reader, end, &mut warn)? {
                            return Ok(lines.stats);
                        }
                        // Unless another reader of the pipe took some of
                        // it first: then read on.
                        if !lines.pending() {
                            break;
                        }
                    }
                }
                mode(true)?;
            }
            Ok(n) => {
                moved_any = true;
                lines.stats.writes += 1;
                lines.stats.bytes += n as u64;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !moved_any => {
                mode(false)?;
                while lines.step(&mut reader, &mut warn)? {}
                return Ok(lines.stats);
            }
            Err(e) => return Err(e).context("moving the input into the topic with splice"),
        }
    }
}

/// Bytes asked of one `splice` or `sendfile` of lines: a pipe hands over
/// what it holds (64 KiB unless it was made larger), a file 64 KiB a pass.
const SPLICE_LINES: usize = 1 << 20;

/// Looks into a pipe without taking anything from it: `tee` duplicates
/// what the pipe holds into a pipe of our own (no copy), which is then
/// read and emptied.
struct Peek {
    r: File,
    w: File,
    buf: Vec<u8>,
    /// A read of our pipe failed, so it may hold stale bytes: no more
    /// looking.
    broken: bool,
}

impl Peek {
    fn new() -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: `pipe2` writes two descriptors into the valid `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `pipe2` just made both descriptors, owned by nothing else.
        let (r, w) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        Ok(Self {
            r,
            w,
            buf: vec![0; PEEK],
            broken: false,
        })
    }

    /// Waits until the pipe `input` has something to read, or has no
    /// writer left (or a signal comes: the caller reads on either way).
    fn wait(&self, input: BorrowedFd<'_>) {
        let mut p = libc::pollfd {
            fd: input.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid `pollfd` for the call.
        unsafe { libc::poll(&mut p, 1, -1) };
    }

    /// How many bytes of the pipe `input`, as it holds them now, go up to
    /// and including its first `delim`: `None` when what it holds has
    /// none (or it is empty, or anything fails: the caller reads on).
    fn line_end(&mut self, input: BorrowedFd<'_>, delim: u8) -> Option<usize> {
        if self.broken {
            return None;
        }
        // SAFETY: both descriptors are open pipes for the call; `tee`
        // passes no memory of ours. Non-blocking: an empty pipe is EAGAIN.
        let n = unsafe {
            libc::tee(
                input.as_raw_fd(),
                self.w.as_raw_fd(),
                PEEK,
                libc::SPLICE_F_NONBLOCK,
            )
        };
        let n = usize::try_from(n).ok().filter(|&n| n > 0)?;
        // Our pipe now holds those `n` bytes: all of them are read out,
        // or it is never looked at again.
        let read = match self.buf.get_mut(..n) {
            Some(seen) => self.r.read_exact(seen).is_ok(),
            None => false,
        };
        if !read {
            self.broken = true;
            return None;
        }
        memchr::memchr(delim, self.buf.get(..n)?).map(|i| i + 1)
    }
}

/// Bytes of a pipe [`Peek`] looks at, at most: what a pipe holds by
/// default.
const PEEK: usize = 64 * 1024;
