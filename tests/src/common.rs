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

/// Waits up to `timeout_ms` for `fd` to be readable; whether it is.
pub(crate) fn poll_in(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polling one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n == 1 && p.revents & libc::POLLIN != 0
}

pub(crate) fn le32(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(p[at..at + 4].try_into().unwrap_or_default())
}

pub(crate) fn fnv1a(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
    })
}

/// A fresh private anonymous mapping of `len` bytes, readable and
/// writable; the caller owns it (and unmaps it, or keeps it to the end).
pub(crate) fn anon_map(len: usize) -> Result<*mut libc::c_void> {
    // SAFETY: asks for a new mapping anywhere; nothing existing is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    ensure!(
        p != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    Ok(p)
}

pub(crate) fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A stress record: writer id, counter, length and a checksum of the rest
/// (16 bytes, little endian), then bytes derived from writer and counter.
pub(crate) fn stress_payload(writer: u32, counter: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.max(16)];
    let mut x = (u64::from(writer) << 32 | u64::from(counter)) ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in v[16..].chunks_mut(8) {
        let w = xorshift(&mut x).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
    let sum = fnv1a(&v[16..]);
    v[0..4].copy_from_slice(&writer.to_le_bytes());
    v[4..8].copy_from_slice(&counter.to_le_bytes());
    v[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    v[12..16].copy_from_slice(&sum.to_le_bytes());
    v
}

/// Checks a stress record; returns its writer and counter.
pub(crate) fn check_stress(p: &[u8], writers: u32) -> Result<(u32, u32)> {
    ensure!(p.len() >= 16, "stress record of {} bytes", p.len());
    let (w, c, len, sum) = (le32(p, 0), le32(p, 4), le32(p, 8), le32(p, 12));
    ensure!(
        len as usize == p.len(),
        "record says {len} bytes, has {} (writer {w} #{c})",
        p.len()
    );
    ensure!(w < writers, "unknown writer {w}");
    ensure!(
        fnv1a(&p[16..]) == sum,
        "checksum of writer {w} #{c} ({len} bytes) is wrong: torn or mixed"
    );
    Ok((w, c))
}
