//! Benchmark, run inside the VM (`scripts/bench.sh`, scenario `bench`):
//! `fanout-bench DEV_A [DEV_B]`, topics of a module loaded with
//! `ring_size=4194304` (DEV_B, for the ping-pong, is made as a named topic
//! when not given).
//!
//! Every figure of a fanout topic is measured in the same run beside a
//! userspace baseline doing the same job:
//!
//! - throughput, one writer and 1 or 8 readers, 64 B, 4 KiB and 64 KiB
//!   records: readers `read()` in record mode into 64 KiB buffers (or one
//!   record, if larger), check each record and drain the topic, as a real
//!   consumer does; against a pipe (1 reader), a userspace `tee` (a thread
//!   reading one pipe and writing every chunk into one pipe per reader) and
//!   a Unix-socket broker (the writer sends every record to one socket per
//!   reader);
//! - at 64 B, readers that ask to be woken a buffer's worth at a time
//!   (`IOC_SET_LOWAT` of 64 KiB, ABI 8) and wait in `poll()` at most 10 ms,
//!   as a consumer of many small records that accepts that latency would,
//!   against the same pipe baselines;
//! - the same with lossless readers (`FLAG_LOSSLESS` on a topic that
//!   allows them: the writer waits for the readers and nothing is lost),
//!   against the pipe and the `tee`;
//! - a reader of the mapped ring (`mmap`) against a pipe and a `read()`
//!   reader;
//! - a batch writer (`FLAG_BATCH`, 512 records of 64 B a `write()`) against
//!   a pipe written a record at a time and 512 records at a time;
//! - wakeup latency, ping-pong between two threads, against pipes and
//!   eventfds.
//!
//! Each case runs for a fixed time (the writer writes for `RUN`, then the
//! readers drain), so the whole run takes a minute or two whatever the
//! machine. The 64 B cases of one record a `write()` (1 and 8 readers), the
//! batch writer and the latency run three times each, in turn with their
//! baselines, and show the median round of each side. CPU is
//! `getrusage(RUSAGE_SELF)` user + system of the whole process over the
//! case (writer, readers, helpers), divided by the bytes
//! delivered. The fanout writer never waits for lossy readers: a reader
//! slower than it loses records (counted, beside every figure), where a pipe
//! slows the writer down instead; with lossless readers it waits too, and
//! any loss fails the run.
//!
//! Prints Markdown tables. Timing never fails anything; a record with
//! wrong content, or any system call failing, does (exit status 1).

use anyhow::{bail, ensure, Context, Result};
use baf::abi::{self, RecordHeader};
use baf::device::{records, Topic};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[path = "../common.rs"]
mod common;
use common::*;

/// How long each case's writer writes.
const RUN: Duration = Duration::from_millis(1200);
/// The readers' buffer, as submsg's.
const READ_BUF: usize = 64 * 1024;
/// Records per `write()` of the batch writer.
const BATCH: usize = 512;
/// Most round trips of a latency case (it also stops after `RUN`).
const MAX_ROUNDS: usize = 20_000;
/// The wake threshold of the readers of the `lowat` rows: a buffer's
/// worth (`IOC_SET_LOWAT`, ABI 8).
const LOWAT: u32 = READ_BUF as u32;
/// How long those readers wait in `poll()` at most: the latency they accept.
const LOWAT_WAIT_MS: i32 = 10;

fn cpu_ns() -> f64 {
    // SAFETY: getrusage fills a zeroed rusage.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let ns = |t: libc::timeval| t.tv_sec as f64 * 1e9 + t.tv_usec as f64 * 1e3;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

/// Wall and CPU time from the start of a case.
struct Clock {
    t0: Instant,
    cpu0: f64,
}

impl Clock {
    fn start() -> Self {
        Self {
            t0: Instant::now(),
            cpu0: cpu_ns(),
        }
    }

    fn stop(self, delivered: u64, lost: u64, offered: u64) -> Measured {
        Measured {
            delivered,
            lost,
            offered,
            secs: self.t0.elapsed().as_secs_f64(),
            cpu_ns: cpu_ns() - self.cpu0,
        }
    }
}

/// One throughput case.
struct Measured {
    /// Payload bytes delivered to all readers together.
    delivered: u64,
    /// Records lost, all readers together.
    lost: u64,
    /// Records written times readers.
    offered: u64,
    secs: f64,
    cpu_ns: f64,
}

impl Measured {
    fn mb_s(&self) -> f64 {
        self.delivered as f64 / self.secs / 1e6
    }

    fn cpu_per_byte(&self) -> String {
        if self.delivered == 0 {
            return "-".into();
        }
        format!("{:.2}", self.cpu_ns / self.delivered as f64)
    }

    fn lost(&self) -> String {
        if self.offered == 0 {
            return "-".into();
        }
        format!(
            "{} ({:.1}%)",
            self.lost,
            100.0 * self.lost as f64 / self.offered as f64
        )
    }
}

/// Rounds of the alternated cases ([`alternate`]).
const ROUNDS: usize = 3;

/// Runs `baf` and `base` in turn, [`ROUNDS`] times each, and keeps the
/// round of each with the median `key` (MB/s, or a latency): a VM's speed
/// drifts within one run (a baseline moved 1.8x between two cases of one
/// run), and alternating lets both sides meet the same drift.
fn alternate<T>(
    mut baf: impl FnMut() -> Result<T>,
    mut base: impl FnMut() -> Result<T>,
    key: fn(&T) -> f64,
) -> Result<(T, T)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(baf()?);
        b.push(base()?);
    }
    Ok((median(a, key), median(b, key)))
}

/// The round with the median `key`.
fn median<T>(mut rounds: Vec<T>, key: fn(&T) -> f64) -> T {
    rounds.sort_by(|x, y| key(x).total_cmp(&key(y)));
    rounds.swap_remove(rounds.len() / 2)
}

/// Marks record number `n` (its first and last 8 bytes).
fn stamp(record: &mut [u8], n: u64) {
    let len = record.len();
    record[..8].copy_from_slice(&n.to_le_bytes());
    record[len - 8..].copy_from_slice(&n.to_le_bytes());
}

fn check(payload: &[u8], size: usize, n: u64) -> Result<()> {
    let len = payload.len();
    ensure!(len == size, "a record of {len} bytes, want {size}");
    let first = u64::from_le_bytes(payload[..8].try_into()?);
    let last = u64::from_le_bytes(payload[len - 8..].try_into()?);
    ensure!(
        first == n && last == n,
        "record {n} carries {first}/{last}: wrong content"
    );
    Ok(())
}

fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?
}

// ------------------------------------------------------------ fanout ----

/// A `read()` reader of a topic in record mode; returns payload bytes and
/// records lost. Record `seq` must carry `(seq - first) % modulus`. It
/// reads until `EAGAIN`, then `poll()`s for at most `wait_ms`.
fn topic_reader(
    t: Topic,
    size: usize,
    modulus: u64,
    wait_ms: i32,
    start: Arc<Barrier>,
    done: Arc<AtomicBool>,
) -> JoinHandle<Result<(u64, u64)>> {
    thread::spawn(move || {
        let first = t.info()?.cursor_seq;
        let mut buf = vec![0u8; READ_BUF.max(abi::record_span(size))];
        let mut got = 0u64;
        start.wait();
        loop {
            match t.file().read(&mut buf) {
                Ok(0) => bail!("end of file on a live topic"),
                Ok(n) => {
                    let mut parsed = 0;
                    for r in records(&buf[..n]) {
                        check(r.payload, size, (r.header.seq - first) % modulus)?;
                        got += r.payload.len() as u64;
                        parsed += abi::record_span(r.payload.len());
                    }
                    ensure!(parsed == n, "a read of {n} bytes holds {parsed} of records");
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    if done.load(Ordering::Acquire) {
                        let i = t.info()?;
                        if i.cursor_seq == i.next_seq {
                            return Ok((got, i.lost));
                        }
                        continue;
                    }
                    poll_in(t.file().as_raw_fd(), wait_ms);
                }
                Err(e) => return Err(e).context("read"),
            }
        }
    })
}

/// Writes `size`-byte records into `dev` until `until`, one a `write()`,
/// or `BATCH` a `write()` with `FLAG_BATCH`; returns the records written.
fn topic_writer(dev: &Path, size: usize, batch: bool, until: Instant) -> Result<u64> {
    let file = OpenOptions::new().write(true).open(dev)?;
    let mut n = 0u64;
    if batch {
        let t = Topic::from_file(file);
        t.set_flags(abi::FLAG_BATCH)?;
        let mut buf = Vec::with_capacity(BATCH * abi::record_span(size));
        for k in 0..BATCH {
            let header = RecordHeader {
                len: size as u32,
                ..RecordHeader::default()
            };
            buf.extend_from_slice(&header.to_bytes());
            let at = buf.len();
            buf.resize(at + size, 0x5a);
            stamp(&mut buf[at..], k as u64);
            buf.resize(at + abi::record_span(size) - abi::RECORD_HEADER_SIZE, 0);
        }
        while Instant::now() < until {
            let w = (t.file()).write(&buf)?;
            ensure!(w == buf.len(), "batch: wrote {w} of {}", buf.len());
            n += BATCH as u64;
        }
    } else {
        let mut chunk = vec![0x5au8; size];
        loop {
            if n % 16 == 0 && Instant::now() >= until {
                break;
            }
            stamp(&mut chunk, n);
            let w = (&file).write(&chunk)?;
            ensure!(w == size, "wrote {w} of {size}");
            n += 1;
        }
    }
    Ok(n)
}

/// One writer, `readers` readers of `dev`; with `lossless` the readers set
/// `FLAG_LOSSLESS` (the topic must allow it), so the writer waits for them
/// and nothing may be lost. With `lowat` the readers set that wake
/// threshold ([`LOWAT`]) and bound their wait with [`LOWAT_WAIT_MS`], as a
/// consumer of many small records that wants them in buffer-sized bites
/// would.
fn topic_case(
    dev: &Path,
    size: usize,
    readers: usize,
    batch: bool,
    lossless: bool,
    lowat: bool,
) -> Result<Measured> {
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(readers + 1));
    let modulus = if batch { BATCH as u64 } else { u64::MAX };
    let handles = (0..readers)
        .map(|_| {
            let t = Topic::open(dev, false, true)?;
            let flags = if lossless {
                abi::FLAG_RECORD | abi::FLAG_LOSSLESS
            } else {
                abi::FLAG_RECORD
            };
            t.set_flags(flags)?;
            let wait_ms = if lowat {
                t.set_lowat(LOWAT).context("IOC_SET_LOWAT")?;
                LOWAT_WAIT_MS
            } else {
                100
            };
            Ok(topic_reader(
                t,
                size,
                modulus,
                wait_ms,
                start.clone(),
                done.clone(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let clock = Clock::start();
    start.wait();
    let written = topic_writer(dev, size, batch, Instant::now() + RUN);
    done.store(true, Ordering::Release);
    let (mut delivered, mut lost) = (0, 0);
    for h in handles {
        let (d, l) = join(h)?;
        delivered += d;
        lost += l;
    }
    let written = written?;
    ensure!(
        !lossless || lost == 0,
        "lossless readers lost {lost} records"
    );
    Ok(clock.stop(delivered, lost, written * readers as u64))
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a system value.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A read-only mapping of a topic (control page, then ring).
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is only read, with atomics or validated copies.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: i32, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh read-only mapping chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: p.cast(), len })
    }

    fn u64_at(&self, off: usize, order: Ordering) -> u64 {
        assert!(off % 8 == 0 && off + 8 <= self.len);
        // SAFETY: in bounds, aligned, mapped while `self` lives; only loaded.
        unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()) }.load(order)
    }

    fn u32_at(&self, off: usize) -> u32 {
        assert!(off % 4 == 0 && off + 4 <= self.len);
        // SAFETY: as above.
        unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast()) }.load(Ordering::Acquire)
    }

    fn header(&self, off: usize) -> RecordHeader {
        let mut b = [0u8; abi::RECORD_HEADER_SIZE];
        for (i, c) in b.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&self.u64_at(off + 8 * i, Ordering::Relaxed).to_ne_bytes());
        }
        RecordHeader::from_bytes(&b).unwrap_or_default()
    }

    /// Appends `len` bytes at `off` to `out`. The writer may be overwriting
    /// them: the caller validates against the tail afterwards and drops the
    /// copy if so (the seqlock pattern, as the kernel's own `read()`).
    fn copy_out(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        assert!(off + len <= self.len);
        out.reserve(len);
        // SAFETY: in bounds of the mapping; `out` has room for `len` more.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.add(off), out.as_mut_ptr().add(out.len()), len);
            out.set_len(out.len() + len);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A reader of the mapped ring (`ABI.md`, "The consumer protocol"), copying
/// up to 64 KiB of records out per pass; returns payload bytes and records
/// lost.
fn mapped_reader(
    t: Topic,
    size: usize,
    start: Arc<Barrier>,
    done: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<(u64, u64)>>> {
    let ring = t.info()?.ring_size as usize;
    let m = Mapping::new(t.file().as_raw_fd(), page_size() + ring)?;
    ensure!(m.u32_at(abi::CTRL_MAGIC) == abi::MMAP_MAGIC, "bad magic");
    let data = m.u64_at(abi::CTRL_DATA_OFFSET, Ordering::Acquire) as usize;
    let record_max = m.u32_at(abi::CTRL_RECORD_MAX) as usize;
    let mask = ring as u64 - 1;
    Ok(thread::spawn(move || {
        // Nobody writes yet: head and its seq agree.
        let mut pos = m.u64_at(abi::CTRL_HEAD, Ordering::Acquire);
        let mut seq = m.u64_at(abi::CTRL_HEAD_SEQ, Ordering::Acquire);
        let first_seq = seq;
        let mut seq_known = true;
        let (mut got, mut lost) = (0u64, 0u64);
        let mut out = Vec::with_capacity(READ_BUF + record_max);
        let mut recs: Vec<(u64, usize, usize)> = Vec::new(); // seq, offset in out, len
        start.wait();
        loop {
            let head = m.u64_at(abi::CTRL_HEAD, Ordering::Acquire);
            if pos == head {
                if done.load(Ordering::Acquire) {
                    if pos == m.u64_at(abi::CTRL_HEAD, Ordering::Acquire) {
                        // Lapped to a tail followed only by padding: the
                        // loss is counted here, nobody writing any more.
                        if !seq_known {
                            lost += m.u64_at(abi::CTRL_HEAD_SEQ, Ordering::Acquire) - seq;
                        }
                        return Ok((got, lost));
                    }
                    continue;
                }
                if seq_known {
                    match t.seek(abi::SEEK_SEQ, seq) {
                        Ok(_) => {
                            poll_in(t.file().as_raw_fd(), 100);
                        }
                        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {}
                        Err(e) => return Err(e).context("SEEK_SEQ"),
                    }
                } else {
                    thread::sleep(Duration::from_millis(1));
                }
                continue;
            }
            let tail = m.u64_at(abi::CTRL_TAIL, Ordering::Acquire);
            if pos < tail {
                pos = tail;
                seq_known = false;
            }
            out.clear();
            recs.clear();
            let mut p = pos;
            let mut next = seq_known.then_some(seq);
            let mut first_pos = None;
            let mut torn = false;
            while p < head && out.len() < READ_BUF {
                let off = p & mask;
                let room = ring as u64 - off;
                if room < abi::RECORD_HEADER_SIZE as u64 {
                    p += room;
                    continue;
                }
                let h = m.header(data + off as usize);
                let span = abi::record_span(h.len as usize) as u64;
                if h.flags & abi::RECORD_FLAG_PAD != 0 {
                    p += span.min(room);
                    continue;
                }
                let len = h.len as usize;
                if next.is_some_and(|s| s != h.seq) || len == 0 || len > record_max || span > room {
                    torn = true;
                    break;
                }
                first_pos.get_or_insert(p);
                recs.push((h.seq, out.len(), len));
                m.copy_out(data + off as usize + abi::RECORD_HEADER_SIZE, len, &mut out);
                p += span;
                next = Some(h.seq + 1);
            }
            fence(Ordering::Acquire);
            if m.u64_at(abi::CTRL_TAIL, Ordering::Relaxed) > first_pos.unwrap_or(pos) {
                continue; // overwritten while copied: start again at the tail
            }
            ensure!(!torn, "a damaged record at {p} the tail does not explain");
            if let Some(&(s, _, _)) = recs.first() {
                if !seq_known {
                    lost += s - seq;
                }
                seq_known = true;
            }
            for &(s, at, len) in &recs {
                check(&out[at..at + len], size, s - first_seq)?;
                got += len as u64;
                seq = s + 1;
            }
            pos = p;
        }
    }))
}

fn mapped_case(dev: &Path, size: usize) -> Result<Measured> {
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(2));
    let t = Topic::open(dev, false, true)?;
    let first = t.info()?.next_seq;
    let h = mapped_reader(t, size, start.clone(), done.clone())?;
    let clock = Clock::start();
    start.wait();
    let written = topic_writer(dev, size, false, Instant::now() + RUN);
    done.store(true, Ordering::Release);
    let (delivered, lost) = join(h)?;
    let written = written?;
    let after = Topic::open(dev, false, true)?.info()?.next_seq;
    ensure!(
        after - first == written,
        "the topic got {} records, the writer wrote {written}",
        after - first
    );
    ensure!(
        delivered / size as u64 + lost == written,
        "mapped reader: {} delivered + {lost} lost != {written} written",
        delivered / size as u64
    );
    Ok(clock.stop(delivered, lost, written))
}

// --------------------------------------------------------- baselines ----

fn pipe_pair() -> Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: creating a pipe into a valid array.
    ensure!(unsafe { libc::pipe(fds.as_mut_ptr()) } == 0, "pipe");
    // SAFETY: both fds were just created and are owned here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn socket_pair() -> Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: creating a socketpair into a valid array.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
    ensure!(rc == 0, "socketpair");
    // SAFETY: both fds were just created and are owned here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Reads a stream to its end in 64 KiB reads; returns the bytes.
fn stream_reader(mut r: File, start: Arc<Barrier>) -> JoinHandle<Result<u64>> {
    thread::spawn(move || {
        let mut buf = vec![0u8; READ_BUF];
        let mut got = 0u64;
        start.wait();
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("read"),
            }
        }
    })
}

/// Writes `size`-byte records, `per_write` a `write()`, into every one of
/// `outs` until `until`; returns the records written.
fn stream_writer(outs: &mut [File], size: usize, per_write: usize, until: Instant) -> Result<u64> {
    let mut chunk = vec![0x5au8; size * per_write];
    let mut n = 0u64;
    loop {
        if n % (16 * per_write as u64) == 0 && Instant::now() >= until {
            break;
        }
        for (k, rec) in chunk.chunks_mut(size).enumerate() {
            stamp(rec, n + k as u64);
        }
        for w in outs.iter_mut() {
            w.write_all(&chunk)?;
        }
        n += per_write as u64;
    }
    Ok(n)
}

/// One pipe, one reader.
fn pipe_case(size: usize, per_write: usize) -> Result<Measured> {
    let (r, w) = pipe_pair()?;
    let start = Arc::new(Barrier::new(2));
    let h = stream_reader(r, start.clone());
    let clock = Clock::start();
    start.wait();
    let mut outs = [w];
    let written = stream_writer(&mut outs, size, per_write, Instant::now() + RUN);
    drop(outs);
    let delivered = join(h)?;
    written?;
    Ok(clock.stop(delivered, 0, 0))
}

/// The writer writes into one pipe; a `tee` thread copies every chunk it
/// reads into one pipe per reader.
fn tee_case(size: usize, readers: usize) -> Result<Measured> {
    let (tee_in, w) = pipe_pair()?;
    let start = Arc::new(Barrier::new(readers + 2));
    let mut outs = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..readers {
        let (r, w) = pipe_pair()?;
        outs.push(w);
        handles.push(stream_reader(r, start.clone()));
    }
    let tee = {
        let start = start.clone();
        thread::spawn(move || -> Result<()> {
            let mut tee_in = tee_in;
            let mut buf = vec![0u8; READ_BUF];
            start.wait();
            loop {
                let n = match tee_in.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).context("tee read"),
                };
                for o in outs.iter_mut() {
                    o.write_all(&buf[..n])?;
                }
            }
        })
    };
    let clock = Clock::start();
    start.wait();
    let mut ins = [w];
    let written = stream_writer(&mut ins, size, 1, Instant::now() + RUN);
    drop(ins);
    join(tee)?;
    let mut delivered = 0;
    for h in handles {
        delivered += join(h)?;
    }
    written?;
    Ok(clock.stop(delivered, 0, 0))
}

/// The writer sends every record into one Unix stream socket per reader.
fn unix_case(size: usize, readers: usize) -> Result<Measured> {
    each_case(size, readers, socket_pair)
}

/// The writer writes every record into one pipe per reader: what a program
/// without a bus does to feed several consumers record by record.
fn pipes_case(size: usize, readers: usize) -> Result<Measured> {
    each_case(size, readers, pipe_pair)
}

/// The writer writes every record into each of `readers` streams made by
/// `pair`.
fn each_case(size: usize, readers: usize, pair: fn() -> Result<(File, File)>) -> Result<Measured> {
    let start = Arc::new(Barrier::new(readers + 1));
    let mut outs = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..readers {
        let (r, w) = pair()?;
        outs.push(w);
        handles.push(stream_reader(r, start.clone()));
    }
    let clock = Clock::start();
    start.wait();
    let written = stream_writer(&mut outs, size, 1, Instant::now() + RUN);
    drop(outs);
    let mut delivered = 0;
    for h in handles {
        delivered += join(h)?;
    }
    written?;
    Ok(clock.stop(delivered, 0, 0))
}

// ----------------------------------------------------------- latency ----

struct Latency {
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_round: f64,
    rounds: usize,
}

/// Ping-pong: this thread writes 8 bytes into `a_w`; an echo thread blocked
/// reading `a_r` wakes and writes them into `b_w`; this thread, blocked
/// reading `b_r`, wakes. Half the round trip is one write-to-wakeup.
fn pingpong(a_w: File, a_r: File, b_w: File, b_r: File) -> Result<Latency> {
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = stop.clone();
        thread::spawn(move || -> Result<()> {
            let (mut a_r, mut b_w) = (a_r, b_w);
            let mut buf = [0u8; 64];
            loop {
                let n = a_r.read(&mut buf).context("echo read")?;
                if stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                ensure!(n == 8, "echo got {n} bytes");
                ensure!(b_w.write(&buf[..8])? == 8, "echo write");
            }
        })
    };
    let (mut a_w, mut b_r) = (a_w, b_r);
    let mut rtts = Vec::with_capacity(MAX_ROUNDS);
    let mut round = |i: u64, rtts: Option<&mut Vec<u64>>| -> Result<()> {
        let msg = (i + 1).to_le_bytes();
        let t0 = Instant::now();
        ensure!(a_w.write(&msg)? == 8, "ping write");
        let mut buf = [0u8; 64];
        let n = b_r.read(&mut buf)?;
        let rtt = t0.elapsed().as_nanos() as u64;
        ensure!(
            n == 8 && buf[..8] == msg,
            "pong {:?} for ping {i}",
            &buf[..n]
        );
        if let Some(v) = rtts {
            v.push(rtt);
        }
        Ok(())
    };
    let result = (|| -> Result<Latency> {
        for i in 0..100 {
            round(i, None)?; // warm up
        }
        let clock = Clock::start();
        let until = Instant::now() + RUN;
        let mut i = 100;
        while rtts.len() < MAX_ROUNDS && Instant::now() < until {
            round(i, Some(&mut rtts))?;
            i += 1;
        }
        let cpu = cpu_ns() - clock.cpu0;
        rtts.sort_unstable();
        let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize] as f64 / 2e3;
        Ok(Latency {
            p50_us: at(0.5),
            p99_us: at(0.99),
            cpu_us_per_round: cpu / rtts.len() as f64 / 1e3,
            rounds: rtts.len(),
        })
    })();
    stop.store(true, Ordering::Release);
    // Wakes the echo thread, which sees `stop`.
    let _ = a_w.write(&1u64.to_le_bytes());
    join(echo)?;
    result
}

fn topic_pingpong(dev_a: &Path, dev_b: &Path) -> Result<Latency> {
    let open_r = |p: &Path| OpenOptions::new().read(true).open(p);
    let open_w = |p: &Path| OpenOptions::new().write(true).open(p);
    let (a_r, b_r) = (open_r(dev_a)?, open_r(dev_b)?);
    pingpong(open_w(dev_a)?, a_r, open_w(dev_b)?, b_r)
}

fn pipe_pingpong() -> Result<Latency> {
    let (a_r, a_w) = pipe_pair()?;
    let (b_r, b_w) = pipe_pair()?;
    pingpong(a_w, a_r, b_w, b_r)
}

fn eventfd_pingpong() -> Result<Latency> {
    let efd = || -> Result<(File, File)> {
        // SAFETY: creating an eventfd.
        let fd = unsafe { libc::eventfd(0, 0) };
        ensure!(fd >= 0, "eventfd: {}", io::Error::last_os_error());
        // SAFETY: the fd was just created and is owned here.
        let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok((f.try_clone()?, f))
    };
    let (a_r, a_w) = efd()?;
    let (b_r, b_w) = efd()?;
    pingpong(a_w, a_r, b_w, b_r)
}

// -------------------------------------------------------------- main ----

fn size_name(size: usize) -> String {
    match size {
        s if s < 1024 => format!("{s} B"),
        s => format!("{} KiB", s / 1024),
    }
}

fn row(case: &str, baf: &Measured, base: &Measured) {
    println!(
        "| {case} | {:.1} | {:.1} | {:.2} | {} | {} | {} |",
        baf.mb_s(),
        base.mb_s(),
        baf.mb_s() / base.mb_s(),
        baf.lost(),
        baf.cpu_per_byte(),
        base.cpu_per_byte()
    );
}

fn latency_row(case: &str, baf: &Latency, base: &Latency) {
    println!(
        "| {case} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {} / {} |",
        baf.p50_us,
        baf.p99_us,
        base.p50_us,
        base.p99_us,
        baf.p50_us / base.p50_us,
        baf.cpu_us_per_round,
        base.cpu_us_per_round,
        baf.rounds,
        base.rounds
    );
}

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let dev = args
        .first()
        .context("usage: fanout-bench DEV_A [DEV_B]")?
        .clone();
    let made_pong = args.get(1).is_none();
    let pong = match args.get(1) {
        Some(p) => p.clone(),
        None => {
            let mut o = baf::control::CreateOptions::defaults();
            o.ring_size = 65536;
            let _ = baf::control::remove("bench-pong");
            baf::control::create("bench-pong", &o)?;
            baf::control::node_of("bench-pong")
        }
    };
    // A topic of the module's default ring size that allows lossless
    // readers.
    let mut o = baf::control::CreateOptions::defaults();
    o.lossless = true;
    let _ = baf::control::remove("bench-lossless");
    baf::control::create("bench-lossless", &o)?;
    let lossless = baf::control::node_of("bench-lossless");
    let result = run(&dev, &pong, &lossless);
    let _ = baf::control::remove("bench-lossless");
    if made_pong {
        let _ = baf::control::remove("bench-pong");
    }
    result
}

fn run(dev: &Path, pong: &Path, lossless: &Path) -> Result<()> {
    println!(
        "Throughput: payload MB/s delivered to all readers together, ratio = baf / baseline \
         (above 1, baf is faster); lost = records the fanout readers lost (of records written \
         x readers); CPU = user + system time of the whole process per delivered byte."
    );
    println!();
    println!("| case | baf MB/s | baseline MB/s | ratio | baf lost | baf CPU ns/byte | baseline CPU ns/byte |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut pipe_64 = None;
    let abi_version = Topic::open(dev, false, true)?.info()?.abi_version;
    let lowat_known = abi_version >= abi::ABI_LOWAT;
    if !lowat_known {
        eprintln!("fanout-bench: the module is ABI {abi_version}: no wake-threshold rows");
    }
    for size in [64usize, 4096, 65536] {
        let s = size_name(size);
        let (baf1, pipe1) = if size == 64 {
            alternate(
                || topic_case(dev, size, 1, false, false, false),
                || pipe_case(size, 1),
                Measured::mb_s,
            )?
        } else {
            (
                topic_case(dev, size, 1, false, false, false)?,
                pipe_case(size, 1)?,
            )
        };
        let unix1 = unix_case(size, 1)?;
        row(&format!("{s}, 1 reader: read() vs pipe"), &baf1, &pipe1);
        row(
            &format!("{s}, 1 reader: read() vs unix socket"),
            &baf1,
            &unix1,
        );
        let (baf8, pipes8) = if size == 64 {
            let (b, p) = alternate(
                || topic_case(dev, size, 8, false, false, false),
                || pipes_case(size, 8),
                Measured::mb_s,
            )?;
            (b, Some(p))
        } else {
            (topic_case(dev, size, 8, false, false, false)?, None)
        };
        let tee8 = tee_case(size, 8)?;
        let unix8 = unix_case(size, 8)?;
        row(
            &format!("{s}, 8 readers: read() vs tee into 8 pipes"),
            &baf8,
            &tee8,
        );
        row(
            &format!("{s}, 8 readers: read() vs unix broker, 8 sockets"),
            &baf8,
            &unix8,
        );
        if let Some(pipes8) = &pipes8 {
            row(
                &format!(
                    "{s}, 8 readers: read() vs a writer into 8 pipes, a write per record each"
                ),
                &baf8,
                pipes8,
            );
        }
        if size == 65536 {
            let mapped = mapped_case(dev, size)?;
            row(&format!("{s}, 1 reader: mmap vs pipe"), &mapped, &pipe1);
            row(&format!("{s}, 1 reader: mmap vs read()"), &mapped, &baf1);
        }
        // The same with lossless readers: the writer waits for them, as a
        // pipe writer (and tee) does.
        let ll1 = topic_case(lossless, size, 1, false, true, false)?;
        row(
            &format!("{s}, 1 lossless reader: read() vs pipe"),
            &ll1,
            &pipe1,
        );
        let ll8 = topic_case(lossless, size, 8, false, true, false)?;
        row(
            &format!("{s}, 8 lossless readers: read() vs tee into 8 pipes"),
            &ll8,
            &tee8,
        );
        if size == 64 && lowat_known {
            // Readers that ask to be woken a buffer's worth at a time
            // (ABI 8), against the same baselines in turn.
            for (readers, baseline) in [
                (1, "pipe"),
                (8, "a writer into 8 pipes, a write per record each"),
            ] {
                let (lw, base) = alternate(
                    || topic_case(dev, size, readers, false, false, true),
                    || match readers {
                        1 => pipe_case(size, 1),
                        n => pipes_case(size, n),
                    },
                    Measured::mb_s,
                )?;
                let who = if readers == 1 {
                    "1 reader"
                } else {
                    "8 readers"
                };
                row(
                    &format!("{s}, {who}, woken at 64 KiB: read() vs {baseline}"),
                    &lw,
                    &base,
                );
            }
        }
        if size == 64 {
            pipe_64 = Some(pipe1);
        }
    }
    let (batch, pipe_batched) = alternate(
        || topic_case(dev, 64, 1, true, false, false),
        || pipe_case(64, BATCH),
        Measured::mb_s,
    )?;
    if let Some(p) = &pipe_64 {
        row(
            &format!("64 B, 1 reader: batch writer ({BATCH} a write) vs pipe, a write per record"),
            &batch,
            p,
        );
    }
    row(
        &format!("64 B, 1 reader: batch writer ({BATCH} a write) vs pipe, {BATCH} records a write"),
        &batch,
        &pipe_batched,
    );

    println!();
    println!(
        "Wakeup latency: ping-pong between two threads, half a round trip (write -> the \
         blocked reader returns); ratio = baf p50 / baseline p50 (below 1, baf is faster)."
    );
    println!();
    println!("| wakeup latency | baf p50 us | baf p99 us | baseline p50 us | baseline p99 us | ratio p50 | baf CPU us/round trip | baseline CPU us/round trip | round trips |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let (topic, pipe) = alternate(
        || topic_pingpong(dev, pong),
        pipe_pingpong,
        |l: &Latency| l.p50_us,
    )?;
    let efd = eventfd_pingpong()?;
    latency_row("topic -> topic vs pipe -> pipe", &topic, &pipe);
    latency_row("topic -> topic vs eventfd -> eventfd", &topic, &efd);
    Ok(())
}
