//! Helpers shared by the VM test programs (`fanout-tests`, `fanout-fuzz`,
//! `fanout-bench`), each of which includes this file as a module.

#![allow(dead_code)] // not every program uses every helper

use anyhow::{ensure, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

pub(crate) fn writer(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("open {} for writing", path.display()))
}

/// One `write()` that must be taken whole.
pub(crate) fn put(w: &File, data: &[u8]) -> Result<()> {
    let n = (&*w).write(data).context("write")?;
    ensure!(n == data.len(), "short write: {n} of {}", data.len());
    Ok(())
}

pub(crate) fn poll_in(fd: i32, timeout_ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polling one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout_ms) };
}

pub(crate) fn le32(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(p[at..at + 4].try_into().unwrap_or_default())
}

pub(crate) fn fnv1a(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
    })
}
