//! The signals that end a program that reads topics (`SIGINT`, `SIGTERM`,
//! `SIGHUP`): blocked, and taken from a signalfd instead, so that the
//! program writes out what it has read (and says what it lost) before it
//! goes. Threads started afterwards inherit the blocked mask.

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Blocks the ending signals in this thread and returns their mask (to
/// unblock them again) and a non-blocking signalfd that reads them.
pub fn take_ending_signals() -> Result<(SigSet, SignalFd)> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().context("blocking signals")?;
    let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("creating a signalfd")?;
    Ok((mask, fd))
}
