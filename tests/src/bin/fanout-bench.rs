//! Throughput benchmark, run inside the VM (`scripts/bench.sh`): one writer,
//! 1 or 8 readers, through a fanout topic, through pipes (the writer copies
//! every record into one pipe per reader, like `tee`), and through Unix
//! stream sockets (one per reader, like a broker). All three run in the same
//! VM, so only the ratios mean anything.
//!
//! Usage: `fanout-bench DEV` with the module loaded with `ring_size=4194304`.
//! Prints a Markdown table. Timing never fails anything.

use anyhow::{Context, Result};
use baf::device::Topic;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

const READ_BUF: usize = 256 * 1024;

struct Outcome {
    delivered: u64,
    secs: f64,
    lost: u64,
}

impl Outcome {
    fn mb_s(&self) -> f64 {
        self.delivered as f64 / self.secs / 1e6
    }
}

fn bytes_for(size: usize) -> u64 {
    // Enough to take a good fraction of a second under TCG.
    match size {
        s if s < 1024 => 4 << 20,
        _ => 48 << 20,
    }
}

fn fanout(dev: &Path, size: usize, readers: usize) -> Result<Outcome> {
    let total = bytes_for(size);
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(readers + 1));
    let handles: Vec<_> = (0..readers)
        .map(|_| {
            let r = Topic::open(dev, false, true)?;
            let (done, start) = (done.clone(), start.clone());
            Ok(thread::spawn(move || -> Result<(u64, u64)> {
                let mut buf = vec![0u8; READ_BUF.max(size)];
                let mut got = 0u64;
                start.wait();
                loop {
                    match r.file().read(&mut buf) {
                        Ok(n) => got += n as u64,
                        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                            if done.load(Ordering::Acquire) {
                                let i = r.info()?;
                                if i.cursor_seq == i.next_seq {
                                    return Ok((got, i.lost));
                                }
                                continue;
                            }
                            let mut p = libc::pollfd {
                                fd: r.file().as_raw_fd(),
                                events: libc::POLLIN,
                                revents: 0,
                            };
                            // SAFETY: polling one valid pollfd.
                            unsafe { libc::poll(&mut p, 1, 50) };
                        }
                        Err(e) => return Err(e).context("read"),
                    }
                }
            }))
        })
        .collect::<Result<_>>()?;
    let w = OpenOptions::new().write(true).open(dev)?;
    let chunk = vec![0x5au8; size];
    start.wait();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        sent += (&w).write(&chunk)? as u64;
    }
    done.store(true, Ordering::Release);
    let mut out = Outcome {
        delivered: 0,
        secs: 0.0,
        lost: 0,
    };
    for h in handles {
        let (got, lost) = h.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        out.delivered += got;
        out.lost += lost;
    }
    out.secs = t0.elapsed().as_secs_f64();
    Ok(out)
}

/// A writer copying every chunk into one stream per reader.
fn streams(size: usize, readers: usize, unix: bool) -> Result<Outcome> {
    let total = bytes_for(size);
    let mut writers = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..readers {
        let mut fds = [0; 2];
        // SAFETY: creating a pipe or socketpair into a valid array.
        let rc = unsafe {
            if unix {
                libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr())
            } else {
                libc::pipe(fds.as_mut_ptr())
            }
        };
        anyhow::ensure!(rc == 0, "pipe/socketpair failed");
        // SAFETY: both fds were just created and are owned here.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        writers.push(File::from(w));
        let mut r = File::from(r);
        handles.push(thread::spawn(move || -> Result<u64> {
            let mut buf = vec![0u8; READ_BUF];
            let mut got = 0u64;
            loop {
                match r.read(&mut buf)? {
                    0 => return Ok(got),
                    n => got += n as u64,
                }
            }
        }));
    }
    let chunk = vec![0x5au8; size];
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        for w in &mut writers {
            w.write_all(&chunk)?;
        }
        sent += size as u64;
    }
    drop(writers);
    let mut delivered = 0;
    for h in handles {
        delivered += h.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    }
    Ok(Outcome {
        delivered,
        secs: t0.elapsed().as_secs_f64(),
        lost: 0,
    })
}

fn main() -> Result<()> {
    let dev = std::env::args_os()
        .nth(1)
        .context("usage: fanout-bench DEV")?;
    let dev = Path::new(&dev);
    println!("| record | readers | fanout MB/s | pipe MB/s | unix MB/s | fanout/pipe | fanout/unix | fanout records lost |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for size in [64usize, 4096, 65536] {
        for readers in [1usize, 8] {
            let f = fanout(dev, size, readers)?;
            let p = streams(size, readers, false)?;
            let u = streams(size, readers, true)?;
            let written = bytes_for(size) / size as u64 * readers as u64;
            println!(
                "| {} | {readers} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1}% |",
                match size {
                    64 => "64 B".to_string(),
                    s => format!("{} KiB", s / 1024),
                },
                f.mb_s(),
                p.mb_s(),
                u.mb_s(),
                f.mb_s() / p.mb_s(),
                f.mb_s() / u.mb_s(),
                100.0 * f.lost as f64 / written as f64
            );
        }
    }
    Ok(())
}
