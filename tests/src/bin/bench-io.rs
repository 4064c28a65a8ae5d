//! The consumer, and a baseline, of the VM's shell benchmarks
//! (tests/vm/bench-lib.sh, tests/vm/tools-bench.sh):
//!
//! - `bench-io count` reads its standard input to the end, 64 KiB a
//!   `read()` as a real consumer does, and prints `BYTES FIRST_US LAST_US
//!   READS`: the bytes it read, `CLOCK_MONOTONIC` in microseconds when its
//!   first and its last read returned data (both the time it saw the end
//!   if nothing came), and the `read()`s that returned data. The last
//!   data, not the end: a topic's reader ends when the topic is removed,
//!   which the benchmark does after the writer is done, and that step is
//!   not the tools' work.
//! - `bench-io tee FILE...` copies its standard input to its standard
//!   output and to each FILE (FIFOs, in the benchmark), 64 KiB a `read()`
//!   and one `write()` of each chunk to each output.
//!
//! `count` replaced `wc -c`, which in the emulated VM costs about 30 ns a
//! byte (busybox counts byte by byte): with it, both sides of a tools row
//! measured mostly `wc`, and their ratio sat near 1 whatever the tools did.
//! Timing from the first byte received to the last, inside the consumer,
//! also needs no `fork()` for a clock (busybox has no `date +%N`) and
//! leaves process start-up out of both sides. `tee` replaced busybox `tee`,
//! which reads 1 KiB at a time (GNU tee reads 8 KiB): the fan-out row's
//! baseline should be the best plain-pipe fan-out, not a slow one.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;

const CHUNK: usize = 64 * 1024;

fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// Calls `each` with every chunk read from standard input, until its end.
fn read_all(mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut stdin = io::stdin().lock();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading standard input"),
        };
        each(&buf[..n])?;
    }
}

fn count() -> Result<()> {
    let (mut total, mut first, mut last, mut reads) = (0u64, None, None, 0u64);
    read_all(|chunk| {
        let now = now_us();
        first.get_or_insert(now);
        last = Some(now);
        total += chunk.len() as u64;
        reads += 1;
        Ok(())
    })?;
    let end = now_us();
    println!(
        "{total} {} {} {reads}",
        first.unwrap_or(end),
        last.unwrap_or(end)
    );
    Ok(())
}

fn tee(paths: &[String]) -> Result<()> {
    let mut outs = Vec::new();
    for p in paths {
        let f = OpenOptions::new()
            .write(true)
            .open(p)
            .with_context(|| format!("opening {p}"))?;
        outs.push((p.as_str(), f));
    }
    // Standard output as a plain file: std's `Stdout` buffers by line, so
    // it would cut each chunk at its last newline into two `write()`s.
    let mut stdout = File::from(
        io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating standard output")?,
    );
    read_all(|chunk| {
        stdout.write_all(chunk).context("writing standard output")?;
        for (p, f) in outs.iter_mut() {
            f.write_all(chunk).with_context(|| format!("writing {p}"))?;
        }
        Ok(())
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("count") if args.len() == 1 => count(),
        Some("tee") => tee(&args[1..]),
        _ => bail!("usage: bench-io count | bench-io tee FILE..."),
    }
}
