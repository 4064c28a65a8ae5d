//! Tests of the fanout device ABI, run inside the test VM against the real
//! module: `fanout-tests DEV_A DEV_B DEV_C`, three topics of a module loaded
//! with `ring_size=262144` (and the default record_max, a quarter of it).
//!
//! Each test prints `BAF-TEST ok NAME` or its error and `BAF-TEST FAILED
//! NAME`; `tests/vm.sh` counts those lines.

use anyhow::{bail, ensure, Context, Result};
use baf::abi::{self, RecordHeader};
use baf::device::{records, Topic};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[path = "../common.rs"]
mod common;
use common::*;

#[path = "../hardening_tests.rs"]
mod hardening;
#[path = "../lossless_tests.rs"]
mod lossless;
#[path = "../nowait_tests.rs"]
mod nowait;
#[path = "../writer_tests.rs"]
mod writer_id;

const RING: u64 = 262_144;
const RECORD_MAX: usize = (RING / 4) as usize;

struct Ctx {
    a: PathBuf,
    b: PathBuf,
    c: PathBuf,
}

fn reader(path: &Path) -> Result<Topic> {
    Topic::open(path, false, false)
}

fn nb_reader(path: &Path) -> Result<Topic> {
    Topic::open(path, false, true)
}

/// One `read()` into a buffer of `cap` bytes.
fn get(t: &Topic, cap: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; cap];
    let n = t.file().read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

type Rec = (RecordHeader, Vec<u8>);

/// One record-mode `read()`, parsed.
fn get_records(t: &Topic, cap: usize) -> io::Result<Vec<Rec>> {
    let buf = get(t, cap)?;
    Ok(records(&buf)
        .map(|r| (r.header, r.payload.to_vec()))
        .collect())
}

/// Reads a non-blocking record-mode topic until `EAGAIN`.
fn drain(t: &Topic) -> Result<Vec<Rec>> {
    let mut all = Vec::new();
    loop {
        match get_records(t, 1 << 20) {
            Ok(r) if r.is_empty() => bail!("read returned 0 on a live topic"),
            Ok(r) => all.extend(r),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(all),
            Err(e) => return Err(e).context("read"),
        }
    }
}

fn expect_errno<T: std::fmt::Debug>(r: io::Result<T>, errno: i32, what: &str) -> Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        other => bail!(
            "{what}: expected {}, got {other:?}",
            io::Error::from_raw_os_error(errno)
        ),
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Payload that tells its own origin: writer id, counter, length, and bytes
/// derived from all three, so a torn or mixed record cannot pass `check`.
fn pattern(writer: u8, counter: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let head = [writer, 0, 0, 0];
    v.extend_from_slice(&head[..len.min(4)]);
    v.extend(counter.to_le_bytes().iter().take(len.saturating_sub(4)));
    while v.len() < len {
        let i = v.len();
        v.push((i as u8) ^ writer.wrapping_mul(31) ^ (counter as u8));
    }
    v
}

fn parse_pattern(p: &[u8]) -> Result<(u8, u32)> {
    ensure!(p.len() >= 8, "record too short: {}", p.len());
    let writer = p[0];
    let counter = u32::from_le_bytes(p[4..8].try_into()?);
    ensure!(
        p == pattern(writer, counter, p.len()).as_slice(),
        "record of writer {writer} #{counter} ({} bytes) is torn or mixed",
        p.len()
    );
    Ok((writer, counter))
}

// ---------------------------------------------------------------- tests ----

fn plain_reads_return_whole_records(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    let w = writer(&cx.a)?;
    put(&w, &[b'a'; 40])?;
    put(&w, &[b'b'; 40])?;
    put(&w, &[b'c'; 10])?;
    // 64 bytes hold one 40-byte record, not two: whole records only.
    ensure!(get(&r, 64)? == [b'a'; 40], "first read");
    let second = get(&r, 64)?;
    ensure!(
        second == [&[b'b'; 40][..], &[b'c'; 10]].concat(),
        "second read: {second:?}"
    );
    expect_errno(get(&r, 64), libc::EAGAIN, "empty topic")
}

fn oversized_record_comes_in_pieces(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    let w = writer(&cx.a)?;
    let big = pattern(1, 7, 1000);
    put(&w, &big)?;
    put(&w, b"next")?;
    let mut got = Vec::new();
    for want in [300, 300, 300, 100] {
        let piece = get(&r, 300)?;
        ensure!(
            piece.len() == want,
            "piece of {} bytes, want {want}",
            piece.len()
        );
        got.extend(piece);
    }
    ensure!(got == big, "pieces do not rebuild the record");
    ensure!(get(&r, 300)? == b"next", "record after the split one");
    Ok(())
}

fn zero_length_write_is_a_noop(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    let w = writer(&cx.a)?;
    let before = r.info()?.next_seq;
    ensure!((&w).write(&[])? == 0, "write of 0 bytes");
    ensure!(r.info()?.next_seq == before, "a record appeared");
    expect_errno(get(&r, 64), libc::EAGAIN, "nothing to read")
}

fn large_write_is_split_into_records(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&cx.a)?;
    let data: Vec<u8> = (0..RECORD_MAX * 3 + RECORD_MAX / 2)
        .map(|i| (i % 251) as u8)
        .collect();
    put(&w, &data)?;
    let recs = drain(&r)?;
    let lens: Vec<usize> = recs.iter().map(|(_, p)| p.len()).collect();
    ensure!(
        lens == [RECORD_MAX, RECORD_MAX, RECORD_MAX, RECORD_MAX / 2],
        "record lengths {lens:?}"
    );
    ensure!(recs.concat_payloads() == data, "bytes differ");
    Ok(())
}

trait Payloads {
    fn concat_payloads(&self) -> Vec<u8>;
}
impl Payloads for Vec<Rec> {
    fn concat_payloads(&self) -> Vec<u8> {
        self.iter().flat_map(|(_, p)| p.iter().copied()).collect()
    }
}

fn huge_write_is_taken_whole(cx: &Ctx) -> Result<()> {
    // 8 MiB in one write(): 32 times the ring. The writer never blocks; the
    // ring keeps the newest records, each whole.
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let before = r.info()?.next_seq;
    let data: Vec<u8> = (0..8usize << 20).map(|i| (i / RECORD_MAX) as u8).collect();
    put(&writer(&cx.a)?, &data)?;
    let after = r.info()?.next_seq;
    ensure!(
        after - before == (data.len() / RECORD_MAX) as u64,
        "{} records for 8 MiB",
        after - before
    );
    let recs = drain(&r)?;
    let last = recs.last().context("nothing kept")?;
    ensure!(
        last.0.seq == after - 1,
        "last record {} != {}",
        last.0.seq,
        after - 1
    );
    for (h, p) in &recs {
        let k = (h.seq - before) as usize;
        ensure!(
            p.len() == RECORD_MAX && p.iter().all(|&b| b == k as u8),
            "record {k} is not chunk {k} of the write"
        );
    }
    Ok(())
}

fn odd_sizes_round_trip(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&cx.a)?;
    let sizes = [
        1,
        2,
        7,
        8,
        9,
        31,
        32,
        33,
        4095,
        4096,
        4097,
        RECORD_MAX - 1,
        RECORD_MAX,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        put(&w, &pattern(3, i as u32, n))?;
    }
    let recs = drain(&r)?;
    ensure!(
        recs.len() == sizes.len(),
        "{} records, want {}",
        recs.len(),
        sizes.len()
    );
    for ((h, p), (i, &n)) in recs.iter().zip(sizes.iter().enumerate()) {
        ensure!(
            h.len as usize == n && p.len() == n,
            "record {i}: length {}",
            h.len
        );
        ensure!(
            *p == pattern(3, i as u32, n),
            "record {i} ({n} bytes) differs"
        );
    }
    Ok(())
}

fn concurrent_writers_never_tear(cx: &Ctx) -> Result<()> {
    const WRITERS: u8 = 4;
    const EACH: u32 = 1500;
    let r = reader(&cx.b)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let start = r.info()?.cursor_seq;
    let path = cx.b.clone();
    let handles: Vec<_> = (0..WRITERS)
        .map(|id| {
            let path = path.clone();
            thread::spawn(move || -> Result<()> {
                let w = writer(&path)?;
                let mut seed = 0x9e37_79b9u32.wrapping_mul(id as u32 + 1);
                for counter in 0..EACH {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let len = 8 + (seed as usize % 3000);
                    put(&w, &pattern(id, counter, len))?;
                }
                Ok(())
            })
        })
        .collect();
    let total = u64::from(WRITERS) * u64::from(EACH);
    let mut last = [None::<u32>; WRITERS as usize];
    let mut received = 0u64;
    let mut prev_seq = None;
    while start + received + r.info()?.lost < start + total {
        for (h, p) in get_records(&r, 1 << 20)? {
            let (id, counter) = parse_pattern(&p)?;
            ensure!(id < WRITERS, "unknown writer {id}");
            if let Some(prev) = last[id as usize] {
                ensure!(counter > prev, "writer {id}: #{counter} after #{prev}");
            }
            last[id as usize] = Some(counter);
            if let Some(s) = prev_seq {
                ensure!(h.seq > s, "sequence went from {s} to {}", h.seq);
            }
            prev_seq = Some(h.seq);
            received += 1;
        }
    }
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    let info = r.info()?;
    ensure!(
        received + info.lost == total,
        "received {received} + lost {} != written {total}",
        info.lost
    );
    println!(
        "  concurrent writers: {received} records checked byte by byte, {} lapped",
        info.lost
    );
    Ok(())
}

fn every_reader_gets_every_record_in_order(cx: &Ctx) -> Result<()> {
    const READERS: usize = 4;
    const TOTAL: u64 = 4000;
    const WINDOW: u64 = 400; // 400 x 136 bytes stays far below the ring
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..READERS).map(|_| AtomicU64::new(0)).collect());
    let ready = Arc::new(Barrier::new(READERS + 1));
    let handles: Vec<_> = (0..READERS)
        .map(|i| {
            let (path, progress, ready) = (cx.c.clone(), progress.clone(), ready.clone());
            thread::spawn(move || -> Result<()> {
                let r = reader(&path)?;
                r.set_flags(abi::FLAG_RECORD)?;
                let mut expect_seq = r.info()?.cursor_seq;
                ready.wait();
                let mut n = 0u64;
                while n < TOTAL {
                    for (h, p) in get_records(&r, 8192)? {
                        ensure!(
                            h.seq == expect_seq,
                            "reader {i}: seq {} want {expect_seq}",
                            h.seq
                        );
                        ensure!(
                            p == pattern(0, n as u32, 100),
                            "reader {i}: record {n} differs"
                        );
                        expect_seq += 1;
                        n += 1;
                    }
                    progress[i].store(n, Ordering::Release);
                }
                ensure!(r.info()?.lost == 0, "reader {i} lost records");
                Ok(())
            })
        })
        .collect();
    ready.wait();
    let w = writer(&cx.c)?;
    for n in 0..TOTAL {
        // Pace: never more than WINDOW records ahead of the slowest reader.
        let deadline = Instant::now() + Duration::from_secs(30);
        while progress
            .iter()
            .any(|p| p.load(Ordering::Acquire) + WINDOW < n)
        {
            ensure!(Instant::now() < deadline, "a reader stalled");
            thread::sleep(Duration::from_millis(1));
        }
        put(&w, &pattern(0, n as u32, 100))?;
    }
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    }
    Ok(())
}

fn lapped_reader_resumes_with_exact_loss(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let start = r.info()?.cursor_seq;
    let w = writer(&cx.a)?;
    const N: u64 = 3000; // 3000 x 232 bytes: several laps of the ring
    for n in 0..N {
        put(&w, &pattern(5, n as u32, 200))?;
    }
    let info = r.info()?;
    ensure!(info.oldest_seq > start, "the reader was not lapped");
    let recs = drain(&r)?;
    let first = recs.first().context("nothing to read after overrun")?.0.seq;
    let lost = r.info()?.lost;
    ensure!(
        first == info.oldest_seq,
        "resumed at {first}, oldest was {}",
        info.oldest_seq
    );
    ensure!(
        lost == first - start,
        "lost {lost}, but {} records were skipped",
        first - start
    );
    ensure!(
        lost + recs.len() as u64 == N,
        "lost {lost} + read {} != {N}",
        recs.len()
    );
    for (k, (h, p)) in recs.iter().enumerate() {
        ensure!(h.seq == first + k as u64, "gap after resuming at {}", h.seq);
        ensure!(
            *p == pattern(5, (h.seq - start) as u32, 200),
            "record {} differs",
            h.seq
        );
    }
    ensure!(
        r.info()?.topic_lost >= lost,
        "topic total below this reader's loss"
    );
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", r.file().as_raw_fd()))?;
    ensure!(
        fdinfo.contains(&format!("fanout_lost:\t{lost}\n")),
        "fdinfo does not show the loss:\n{fdinfo}"
    );
    println!(
        "  lapped reader: lost exactly {lost}, then read {} in order",
        recs.len()
    );
    Ok(())
}

fn strict_mode_fails_once_with_epipe(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD | abi::FLAG_STRICT)?;
    let start = r.info()?.cursor_seq;
    let w = writer(&cx.a)?;
    for n in 0..3000u32 {
        put(&w, &pattern(6, n, 200))?;
    }
    expect_errno(get(&r, 1 << 20), libc::EPIPE, "first read after overrun")?;
    let info = r.info()?;
    ensure!(
        info.lost == info.oldest_seq - start,
        "loss not counted before EPIPE"
    );
    let recs = drain(&r)?;
    ensure!(
        recs.first().map(|x| x.0.seq) == Some(info.oldest_seq),
        "strict reader did not resume at the oldest record"
    );
    Ok(())
}

fn record_headers_carry_provenance(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let t0 = monotonic_ns();
    // A child that becomes uid 1000 writes two records.
    let path = c_path(&cx.a)?;
    // SAFETY: the child only calls async-signal-safe functions before _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: plain syscalls on valid arguments in the forked child.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            let ok = fd >= 0
                && libc::setgid(1000) == 0
                && libc::setuid(1000) == 0
                && libc::write(fd, b"child-1".as_ptr().cast(), 7) == 7
                && libc::write(fd, b"child-2".as_ptr().cast(), 7) == 7;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    ensure!(status == 0, "child writer failed (status {status})");
    // The parent writes a payload that looks like a header claiming pid 4242:
    // the kernel's header must not care.
    let forged = RecordHeader {
        len: 3,
        flags: 0,
        seq: 999,
        timestamp_ns: 1,
        pid: 4242,
        uid: 4242,
        writer: 4242,
    }
    .to_bytes();
    let w = writer(&cx.a)?;
    put(&w, &forged)?;
    let t1 = monotonic_ns();
    let recs = drain(&r)?;
    ensure!(recs.len() == 3, "{} records", recs.len());
    let me = std::process::id();
    let want = [
        (child as u32, 1000, b"child-1".to_vec()),
        (child as u32, 1000, b"child-2".to_vec()),
        (me, 0, forged.to_vec()),
    ];
    let mut prev_ts = t0;
    for (k, ((h, p), (pid, uid, payload))) in recs.iter().zip(want).enumerate() {
        ensure!(
            h.pid == pid && h.uid == uid,
            "record {k}: pid {} uid {}, want {pid} {uid}",
            h.pid,
            h.uid
        );
        ensure!(
            *p == payload && h.len as usize == payload.len(),
            "record {k}: payload"
        );
        ensure!(
            h.seq == recs[0].0.seq + k as u64,
            "record {k}: seq {}",
            h.seq
        );
        ensure!(
            h.timestamp_ns >= prev_ts && h.timestamp_ns <= t1,
            "record {k}: timestamp {} outside [{prev_ts}, {t1}]",
            h.timestamp_ns
        );
        ensure!(h.flags == 0, "record {k}: flags {}", h.flags);
        prev_ts = h.timestamp_ns;
    }
    Ok(())
}

fn record_mode_refuses_too_small_buffers(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&cx.a)?;
    put(&w, &[7u8; 100])?;
    expect_errno(get(&r, 64), libc::EMSGSIZE, "record mode, 64-byte buffer")?;
    let recs = get_records(&r, 200)?;
    ensure!(
        recs.len() == 1 && recs[0].1 == [7u8; 100],
        "record lost after EMSGSIZE"
    );
    Ok(())
}

fn history_positions(cx: &Ctx) -> Result<()> {
    let w = writer(&cx.a)?;
    for i in 0..10 {
        put(&w, format!("h{i}").as_bytes())?;
    }
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let next = r.info()?.next_seq;
    let payloads = |recs: Vec<Rec>| -> Vec<String> {
        recs.into_iter()
            .map(|(_, p)| String::from_utf8_lossy(&p).into_owned())
            .collect()
    };
    expect_errno(get(&r, 4096), libc::EAGAIN, "a new reader starts at now")?;
    ensure!(r.seek(abi::SEEK_LAST, 1)? == next - 1, "last:1 position");
    ensure!(
        payloads(drain(&r)?) == ["h9"],
        "last:1 is the retained last value"
    );
    r.seek(abi::SEEK_LAST, 3)?;
    ensure!(payloads(drain(&r)?) == ["h7", "h8", "h9"], "last:3");
    ensure!(r.seek(abi::SEEK_SEQ, next - 5)? == next - 5, "seq position");
    ensure!(
        payloads(drain(&r)?) == ["h5", "h6", "h7", "h8", "h9"],
        "seq:S"
    );
    let oldest = r.info()?.oldest_seq;
    ensure!(r.seek(abi::SEEK_OLDEST, 0)? == oldest, "oldest position");
    ensure!(
        r.seek(abi::SEEK_LAST, u64::MAX)? == oldest,
        "last:huge is the oldest"
    );
    ensure!(r.seek(abi::SEEK_NOW, 0)? == next, "now position");
    expect_errno(get(&r, 4096), libc::EAGAIN, "nothing after now")?;
    expect_errno(
        r.seek(abi::SEEK_SEQ, next + 5),
        libc::ERANGE,
        "seq in the future",
    )?;
    // Push the old records out, then ask for one of them.
    for n in 0..3000u32 {
        put(&w, &pattern(8, n, 200))?;
    }
    expect_errno(r.seek(abi::SEEK_SEQ, next - 5), libc::ERANGE, "evicted seq")?;
    expect_errno(r.seek(9, 0), libc::EINVAL, "unknown whence")?;
    let mut bad = abi::Seek {
        whence: abi::SEEK_NOW,
        reserved: 1,
        arg: 0,
    };
    // SAFETY: a valid Seek for the ioctl.
    let rc = unsafe { libc::ioctl(r.file().as_raw_fd(), abi::IOC_SEEK as _, &mut bad) };
    ensure!(
        rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL),
        "reserved != 0 accepted"
    );
    Ok(())
}

fn nonblocking_read_gives_eagain(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    expect_errno(get(&r, 4096), libc::EAGAIN, "O_NONBLOCK read")
}

fn blocking_read_is_woken_by_write(cx: &Ctx) -> Result<()> {
    let r = reader(&cx.a)?;
    let t = thread::spawn(move || get(&r, 4096));
    thread::sleep(Duration::from_millis(300));
    ensure!(!t.is_finished(), "read did not block");
    put(&writer(&cx.a)?, b"wake")?;
    let got = t.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    ensure!(got == b"wake", "got {got:?}");
    Ok(())
}

extern "C" fn on_signal(_: libc::c_int) {}

fn set_handler(restart: bool) {
    // SAFETY: installing a handler that does nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

fn signal_interrupts_blocking_read(cx: &Ctx) -> Result<()> {
    use std::os::unix::thread::JoinHandleExt;
    set_handler(false);
    let r = reader(&cx.a)?;
    let t = thread::spawn(move || get(&r, 4096));
    thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own live thread.
    unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGUSR1) };
    let res = t.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
    expect_errno(res, libc::EINTR, "read interrupted without SA_RESTART")?;

    // With SA_RESTART the read restarts and still gets the next record.
    set_handler(true);
    let r = reader(&cx.a)?;
    let t = thread::spawn(move || get(&r, 4096));
    thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGUSR1) };
    thread::sleep(Duration::from_millis(300));
    ensure!(!t.is_finished(), "SA_RESTART read returned early");
    put(&writer(&cx.a)?, b"after-signal")?;
    let got = t.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    ensure!(got == b"after-signal", "restarted read got {got:?}");
    Ok(())
}

fn poll_and_epoll_wake_every_waiter(cx: &Ctx) -> Result<()> {
    const EACH: usize = 8;
    let shared = Arc::new(reader(&cx.a)?);
    let barrier = Arc::new(Barrier::new(3 * EACH + 1));
    let mut handles = Vec::new();
    for i in 0..3 * EACH {
        let (path, shared, barrier) = (cx.a.clone(), shared.clone(), barrier.clone());
        handles.push(thread::spawn(move || -> Result<()> {
            let own = reader(&path)?;
            let fd = match i / EACH {
                0 => own.file().as_raw_fd(),
                _ => shared.file().as_raw_fd(),
            };
            barrier.wait();
            if i / EACH == 2 {
                // epoll, one instance per waiter, on the shared file
                // SAFETY: plain epoll syscalls on fds we own.
                let ep = unsafe { libc::epoll_create1(0) };
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: 1,
                };
                // SAFETY: as above.
                ensure!(
                    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } == 0,
                    "epoll_ctl"
                );
                let mut out = [libc::epoll_event { events: 0, u64: 0 }];
                // SAFETY: as above.
                let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 1, 10_000) };
                // SAFETY: closing our epoll fd.
                unsafe { libc::close(ep) };
                ensure!(
                    n == 1 && out[0].events & libc::EPOLLIN as u32 != 0,
                    "epoll waiter {i} not woken"
                );
            } else {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: polling one valid pollfd.
                let n = unsafe { libc::poll(&mut p, 1, 10_000) };
                ensure!(
                    n == 1 && p.revents & libc::POLLIN != 0,
                    "poll waiter {i} not woken"
                );
            }
            Ok(())
        }));
    }
    barrier.wait();
    thread::sleep(Duration::from_millis(500));
    put(&writer(&cx.a)?, b"for everyone")?;
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("waiter panicked"))??;
    }
    // Readiness without waiting: a writer is always writable, an idle
    // reader is not readable.
    let w = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&cx.a)?;
    let mut p = libc::pollfd {
        fd: w.as_raw_fd(),
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: polling one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 0) };
    ensure!(
        p.revents == libc::POLLOUT,
        "fresh read-write file: revents {:#x}",
        p.revents
    );
    Ok(())
}

fn bad_user_pointers_give_efault(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    let w = writer(&cx.a)?;
    let bad = 8usize as *mut libc::c_void; // never mapped
    let before = r.info()?.next_seq;
    // SAFETY: the kernel must reject the bad pointer; nothing is touched here.
    let rc = unsafe { libc::write(w.as_raw_fd(), bad, 100) };
    ensure!(
        rc == -1 && errno_now() == libc::EFAULT,
        "write from a bad pointer: {rc}"
    );
    ensure!(
        r.info()?.next_seq == before,
        "a bad write published a record"
    );

    put(&w, b"keep me")?;
    // SAFETY: as above, for read.
    let rc = unsafe { libc::read(r.file().as_raw_fd(), bad, 100) };
    ensure!(
        rc == -1 && errno_now() == libc::EFAULT,
        "read into a bad pointer: {rc}"
    );
    ensure!(
        get(&r, 100)? == b"keep me",
        "the record was consumed by the failed read"
    );

    for cmd in [abi::IOC_INFO, abi::IOC_SEEK, abi::IOC_SET_FLAGS] {
        // SAFETY: as above, for ioctl.
        let rc = unsafe { libc::ioctl(r.file().as_raw_fd(), cmd as _, bad) };
        ensure!(
            rc == -1 && errno_now() == libc::EFAULT,
            "ioctl {cmd:#x} with a bad pointer: {rc}"
        );
    }
    // SAFETY: an unknown ioctl number with a null argument.
    let rc = unsafe { libc::ioctl(r.file().as_raw_fd(), 0xBA99 as _, 0) };
    ensure!(
        rc == -1 && errno_now() == libc::ENOTTY,
        "unknown ioctl: {rc}"
    );
    expect_errno(r.set_flags(1 << 7), libc::EINVAL, "unknown flag")?;
    // pread/pwrite make no sense on a stream.
    let mut buf = [0u8; 8];
    // SAFETY: valid buffer.
    let rc = unsafe { libc::pread(r.file().as_raw_fd(), buf.as_mut_ptr().cast(), 8, 0) };
    ensure!(rc == -1 && errno_now() == libc::ESPIPE, "pread: {rc}");
    Ok(())
}

/// A pipe, for a forked child to report through: `[read end, write end]`.
fn pipe() -> Result<[i32; 2]> {
    let mut fds = [0; 2];
    // SAFETY: creating a pipe into a valid array.
    ensure!(unsafe { libc::pipe(fds.as_mut_ptr()) } == 0, "pipe");
    Ok(fds)
}

/// `path` for raw syscalls in a forked child (which must not allocate).
fn c_path(path: &Path) -> Result<std::ffi::CString> {
    Ok(std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?)
}

fn errno_now() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn fdinfo_shows_the_cursor(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD | abi::FLAG_STRICT)?;
    let i = r.info()?;
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", r.file().as_raw_fd()))?;
    for want in [
        "fanout_mode:\trecord,strict\n".to_string(),
        format!("fanout_cursor_seq:\t{}\n", i.cursor_seq),
        format!("fanout_ring_size:\t{RING}\n"),
        format!("fanout_record_max:\t{RECORD_MAX}\n"),
    ] {
        ensure!(text.contains(&want), "fdinfo lacks {want:?}:\n{text}");
    }
    ensure!(
        i.abi_version == abi::ABI_VERSION && i.header_size as usize == abi::RECORD_HEADER_SIZE,
        "info: {i:?}"
    );
    Ok(())
}

fn pid_and_uid_follow_the_readers_namespaces(cx: &Ctx) -> Result<()> {
    let w = writer(&cx.a)?;
    put(&w, b"from the host")?;
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let fds = pipe()?;
    let path = c_path(&cx.a)?;
    // SAFETY: the child only makes raw syscalls and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: raw syscalls in the forked child; results are checked and
        // reported through the exit code and the pipe.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) != 0 {
                libc::_exit(10);
            }
            let grandchild = libc::fork();
            if grandchild == 0 {
                // pid 1 of a new pid namespace, in a user namespace with no
                // mapping: the host writer is invisible, root is unmapped.
                let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK);
                if fd < 0 {
                    libc::_exit(11);
                }
                let flags: u32 = abi::FLAG_RECORD | abi::FLAG_WRITER_ID;
                let mut seek = abi::Seek {
                    whence: abi::SEEK_LAST,
                    reserved: 0,
                    arg: 1,
                };
                if libc::ioctl(fd, abi::IOC_SET_FLAGS as _, &flags) != 0
                    || libc::ioctl(fd, abi::IOC_SEEK as _, &mut seek) != 0
                {
                    libc::_exit(12);
                }
                let mut buf = [0u8; 256];
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                let Some(h) = RecordHeader::from_bytes(&buf[..n.max(0) as usize]) else {
                    libc::_exit(13);
                };
                if h.pid != 0 {
                    libc::_exit(14);
                }
                if h.uid != 65534 {
                    libc::_exit(15);
                }
                let ok = libc::write(fd, b"from the namespace".as_ptr().cast(), 18) == 18;
                libc::_exit(if ok { 0 } else { 16 });
            }
            let bytes = grandchild.to_ne_bytes();
            libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
            let mut st = 0;
            libc::waitpid(grandchild, &mut st, 0);
            libc::_exit(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                20
            });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; reading the pipe into a valid buffer.
    let grandchild = unsafe {
        libc::waitpid(child, &mut status, 0);
        let mut b = [0u8; 4];
        libc::read(fds[0], b.as_mut_ptr().cast(), 4);
        libc::close(fds[0]);
        libc::close(fds[1]);
        i32::from_ne_bytes(b)
    };
    let code = libc::WEXITSTATUS(status);
    ensure!(
        code == 0,
        "in the namespace: {}",
        match code {
            10 => "unshare failed",
            11 => "open failed",
            12 => "ioctl failed",
            13 => "no record read",
            14 => "the host writer's pid was visible (want 0)",
            15 => "the host writer's uid was not the overflow uid",
            _ => "failed",
        }
    );
    let recs = drain(&r)?;
    let (h, p) = recs.last().context("no record from the namespace")?;
    ensure!(p == b"from the namespace", "payload {p:?}");
    ensure!(
        h.pid == grandchild as u32 && h.uid == 0,
        "host sees pid {} uid {}, want {grandchild} 0",
        h.pid,
        h.uid
    );
    Ok(())
}

fn new_topic(name: &str) -> Result<PathBuf> {
    let mut o = baf::control::CreateOptions::defaults();
    o.ring_size = 65536;
    baf::control::create(name, &o)?;
    Ok(baf::control::node_of(name))
}

fn removal_wakes_readers_and_pollers(_cx: &Ctx) -> Result<()> {
    let path = new_topic("removal/t")?;
    let r = reader(&path)?;
    let pr = reader(&path)?;
    let w = writer(&path)?;
    put(&w, b"before")?;
    let blocked = thread::spawn(move || -> Result<Vec<u8>> {
        let mut all = Vec::new();
        loop {
            let got = get(&r, 4096)?;
            if got.is_empty() {
                return Ok(all); // end of file: the topic is gone
            }
            all.extend(got);
        }
    });
    let poller = thread::spawn(move || -> Result<i16> {
        let _ = get(&pr, 4096)?; // consume "before"
        let mut p = libc::pollfd {
            fd: pr.file().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 20_000) };
        ensure!(n == 1, "poll timed out on a removed topic");
        Ok(p.revents)
    });
    thread::sleep(Duration::from_millis(300));
    baf::control::remove("removal/t")?;
    let got = blocked
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    ensure!(got == b"before", "the reader lost buffered data: {got:?}");
    let revents = poller
        .join()
        .map_err(|_| anyhow::anyhow!("poller panicked"))??;
    ensure!(revents & libc::POLLHUP != 0, "no POLLHUP: {revents:#x}");
    expect_errno(
        (&w).write(b"after"),
        libc::ENODEV,
        "write to a removed topic",
    )?;
    ensure!(!path.exists(), "the node is still there");
    expect_errno(
        File::open(&path).map(|_| ()),
        libc::ENOENT,
        "open after removal",
    )?;
    // The name can be used again at once.
    let again = new_topic("removal/t")?;
    let r2 = nb_reader(&again)?;
    put(&writer(&again)?, b"new life")?;
    ensure!(
        get(&r2, 64)? == b"new life",
        "the reused name does not work"
    );
    baf::control::remove("removal/t")?;
    Ok(())
}

fn publisher_lock_dies_with_its_holder(cx: &Ctx) -> Result<()> {
    // A reader cannot keep publishers out.
    let reader_only = Topic::open(&cx.a, false, false)?;
    expect_errno(
        reader_only.claim_publisher(),
        libc::EBADF,
        "claim through a read-only file",
    )?;
    let first = Topic::open(&cx.a, true, true)?;
    let second = Topic::open(&cx.a, true, true)?;
    first.claim_publisher()?;
    first.claim_publisher()?; // again by the holder: fine
    expect_errno(second.claim_publisher(), libc::EBUSY, "second publisher")?;
    drop(first);
    second
        .claim_publisher()
        .context("claim after the holder closed")?;
    drop(second);
    // A child process takes it, says so through a pipe, and is killed.
    let fds = pipe()?;
    let path = c_path(&cx.a)?;
    // SAFETY: the child only makes raw syscalls, then waits to be killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: raw syscalls in the child.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            let ok: u8 =
                u8::from(fd >= 0 && libc::ioctl(fd, abi::IOC_CLAIM_PUBLISHER as _, 0) == 0);
            libc::write(fds[1], (&ok as *const u8).cast(), 1);
            libc::pause();
            libc::_exit(0);
        }
    }
    let mut ok = 0u8;
    // SAFETY: reading one byte into a valid buffer.
    unsafe { libc::read(fds[0], (&mut ok as *mut u8).cast(), 1) };
    let third = Topic::open(&cx.a, true, true)?;
    let held = third.claim_publisher();
    // SAFETY: signalling and reaping our own child; closing our pipe.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    ensure!(ok == 1, "the child could not take the lock");
    expect_errno(held, libc::EBUSY, "claim while another process holds it")?;
    third
        .claim_publisher()
        .context("claim after the holder process died")?;
    Ok(())
}

fn churn_of_topics_and_opens(_cx: &Ctx) -> Result<()> {
    // Threads create and remove topics while others open, write, read,
    // poll and close them. Every blocked reader must be woken by removal;
    // nothing may splat (lockdep, KASAN) or leak (checked at rmmod).
    const NAMES: [&str; 3] = ["churn/a", "churn/b", "churn/c"];
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for k in 0..2 {
        let stop = stop.clone();
        handles.push(thread::spawn(move || -> Result<u64> {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = NAMES[(n as usize + k) % NAMES.len()];
                let mut o = baf::control::CreateOptions::defaults();
                o.ring_size = 16384;
                let _ = baf::control::create(name, &o);
                thread::sleep(Duration::from_millis(5));
                let _ = baf::control::remove(name);
                n += 1;
            }
            Ok(n)
        }));
    }
    for k in 0..4 {
        let stop = stop.clone();
        handles.push(thread::spawn(move || -> Result<u64> {
            let mut opened = 0;
            let mut i = k;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let path = baf::control::node_of(NAMES[i % NAMES.len()]);
                let Ok(f) = OpenOptions::new().read(true).write(true).open(&path) else {
                    continue;
                };
                opened += 1;
                if k % 2 == 0 {
                    // Block in read until a record comes or the topic goes.
                    let mut buf = [0u8; 64];
                    let _ = (&f).read(&mut buf);
                } else {
                    let _ = (&f).write(b"churn");
                    let mut p = libc::pollfd {
                        fd: f.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: polling one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, 200) };
                }
            }
            Ok(opened)
        }));
    }
    thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counts = Vec::new();
    for h in handles {
        while !h.is_finished() {
            // Blocked readers wake when their topic goes.
            for name in NAMES {
                let _ = baf::control::remove(name);
            }
            ensure!(
                Instant::now() < deadline,
                "a thread is still blocked after every topic was removed"
            );
            thread::sleep(Duration::from_millis(20));
        }
        counts.push(h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??);
    }
    ensure!(
        counts[..2].iter().all(|&n| n > 5),
        "too few create/remove cycles: {counts:?}"
    );
    ensure!(
        counts[2..].iter().sum::<u64>() > 5,
        "too few opens: {counts:?}"
    );
    println!(
        "  churn: create/remove cycles {:?}, opens {:?}",
        &counts[..2],
        &counts[2..]
    );
    Ok(())
}

// ------------------------------------------------------- ABI 2 tests ----

fn page_size() -> usize {
    // SAFETY: sysconf only reads a system value.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A read-only `mmap` of a topic file: the control page, then the ring.
/// Everything in it is read with atomic loads (the kernel writes it
/// concurrently).
#[derive(Debug)]
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, prot, flags, fd, offset)`.
    fn raw(fd: i32, len: usize, prot: i32, flags: i32, offset: i64) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel; nothing existing is
        // replaced.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: p.cast(), len })
    }

    /// The documented mapping: read-only, shared, from offset 0.
    fn map(fd: i32, len: usize) -> io::Result<Self> {
        Self::raw(fd, len, libc::PROT_READ, libc::MAP_SHARED, 0)
    }

    fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off + 8 <= self.len,
            "offset {off} outside the mapping"
        );
        // SAFETY: in bounds (checked), 8-aligned (the mapping is page aligned),
        // mapped for as long as `self` lives; only ever loaded.
        unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()) }
    }

    fn u32_at(&self, off: usize) -> u32 {
        assert!(
            off % 4 == 0 && off + 4 <= self.len,
            "offset {off} outside the mapping"
        );
        // SAFETY: as in `atomic_u64`, 4-aligned.
        unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast()) }.load(Ordering::Acquire)
    }

    /// A `u64` of the control page, loaded with acquire.
    fn u64_at(&self, off: usize) -> u64 {
        self.atomic_u64(off).load(Ordering::Acquire)
    }

    fn u64_relaxed(&self, off: usize) -> u64 {
        self.atomic_u64(off).load(Ordering::Relaxed)
    }

    fn unmap(mut self) -> io::Result<()> {
        let len = std::mem::replace(&mut self.len, 0);
        // SAFETY: our own mapping, unmapped once (Drop sees len 0).
        if unsafe { libc::munmap(self.ptr.cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

const HDR: u64 = abi::RECORD_HEADER_SIZE as u64;

/// A consumer of the mapped ring, written from `ABI.md` ("The consumer
/// protocol") independently of `libbaf`, so it checks the layout too.
struct MapReader<'a> {
    m: &'a Mapping,
    data: usize,
    size: u64,
    record_max: usize,
    /// Position and sequence number of the next record.
    pos: u64,
    seq: u64,
    /// False after a lap, until a record at the new position is validated.
    seq_known: bool,
    lost: u64,
    /// Of `lost`, what the kernel was told (`IOC_MAPPED_SYNC`).
    reported: u64,
    laps: u64,
    /// Batches dropped because the tail passed them during the copy.
    retries: u64,
}

impl<'a> MapReader<'a> {
    /// Checks the control page; the reader starts at `pos`/`seq`.
    fn new(m: &'a Mapping, pos: u64, seq: u64) -> Result<Self> {
        ensure!(
            m.u32_at(abi::CTRL_MAGIC) == abi::MMAP_MAGIC,
            "magic {:#x}",
            m.u32_at(abi::CTRL_MAGIC)
        );
        ensure!(
            m.u32_at(abi::CTRL_ABI_VERSION) == abi::ABI_VERSION,
            "control page ABI version {}",
            m.u32_at(abi::CTRL_ABI_VERSION)
        );
        let data = m.u64_at(abi::CTRL_DATA_OFFSET) as usize;
        ensure!(data == page_size(), "data offset {data}");
        let size = m.u64_at(abi::CTRL_RING_SIZE);
        ensure!(
            size.is_power_of_two() && data + size as usize <= m.len,
            "ring size {size} in a mapping of {}",
            m.len
        );
        Ok(Self {
            m,
            data,
            size,
            record_max: m.u32_at(abi::CTRL_RECORD_MAX) as usize,
            pos,
            seq,
            seq_known: true,
            lost: 0,
            laps: 0,
            retries: 0,
            reported: 0,
        })
    }

    /// A reader at the head (only while nobody writes: head and its
    /// sequence number are two loads).
    fn at_head(m: &'a Mapping) -> Result<Self> {
        let (pos, seq) = (m.u64_at(abi::CTRL_HEAD), m.u64_at(abi::CTRL_HEAD_SEQ));
        Self::new(m, pos, seq)
    }

    fn header(&self, off: u64) -> RecordHeader {
        let mut b = [0u8; abi::RECORD_HEADER_SIZE];
        for (i, chunk) in b.chunks_exact_mut(8).enumerate() {
            let w = self.m.u64_relaxed(self.data + off as usize + i * 8);
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        RecordHeader::from_bytes(&b).unwrap_or_default()
    }

    fn payload(&self, off: u64, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        for i in (0..len).step_by(8) {
            let w = self.m.u64_relaxed(self.data + off as usize + i);
            v.extend_from_slice(&w.to_ne_bytes());
        }
        v.truncate(len);
        v
    }

    /// Every slot (records and pads) from `from` to `to`, as headers.
    fn slots(&self, from: u64, to: u64) -> Vec<(u64, Option<RecordHeader>)> {
        let mut out = Vec::new();
        let mut p = from;
        while p < to {
            let off = p & (self.size - 1);
            let room = self.size - off;
            if room < HDR {
                out.push((p, None));
                p += room;
                continue;
            }
            let h = self.header(off);
            out.push((p, Some(h)));
            p += (abi::record_span(h.len as usize) as u64).min(room);
        }
        out
    }

    /// Up to about `max` payload bytes of validated records; empty when
    /// there is nothing new.
    fn poll(&mut self, max: usize) -> Result<Vec<Rec>> {
        let mask = self.size - 1;
        loop {
            let head = self.m.u64_at(abi::CTRL_HEAD);
            ensure!(self.pos <= head, "cursor {} past the head {head}", self.pos);
            if self.pos == head {
                return Ok(Vec::new());
            }
            let tail = self.m.u64_at(abi::CTRL_TAIL);
            if self.pos < tail {
                self.pos = tail;
                self.seq_known = false;
                self.laps += 1;
            }
            let mut p = self.pos;
            let mut next = self.seq_known.then_some(self.seq);
            let mut first = None;
            let mut out = Vec::new();
            let mut bytes = 0;
            let mut torn = None;
            while p < head {
                let off = p & mask;
                let room = self.size - off;
                if room < HDR {
                    p += room;
                    continue;
                }
                let h = self.header(off);
                if h.flags & abi::RECORD_FLAG_PAD != 0 {
                    p += (abi::record_span(h.len as usize) as u64).min(room);
                    continue;
                }
                let len = h.len as usize;
                if next.is_some_and(|s| h.seq != s)
                    || len == 0
                    || len > self.record_max
                    || h.flags != 0
                    || abi::record_span(len) as u64 > room
                {
                    torn = Some(format!("at {p}: {h:?}, expected seq {next:?}"));
                    break;
                }
                if !out.is_empty() && bytes + len > max {
                    break;
                }
                first.get_or_insert((p, h.seq));
                out.push((h, self.payload(off + HDR, len)));
                bytes += len;
                p += abi::record_span(len) as u64;
                next = Some(h.seq + 1);
            }
            fence(Ordering::Acquire);
            let tail = self.m.u64_relaxed(abi::CTRL_TAIL);
            if tail > first.map_or(self.pos, |f: (u64, u64)| f.0) {
                // Overwritten while we copied: drop it all, start at the tail.
                self.retries += 1;
                continue;
            }
            if let Some(t) = torn {
                bail!("a damaged record the tail does not explain: {t}");
            }
            ensure!(p <= head, "walked past the head: {p} > {head}");
            if let Some((_, s)) = first {
                if !self.seq_known {
                    ensure!(s >= self.seq, "seq went back from {} to {s}", self.seq);
                    self.lost += s - self.seq;
                }
                self.seq = next.unwrap_or(s + 1);
                self.seq_known = true;
            }
            self.pos = p;
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// At the head with nobody writing: a loss not yet counted (lapped to a
    /// tail followed only by padding) is the head's seq minus ours.
    fn settle(&mut self) -> Result<()> {
        ensure!(
            self.pos == self.m.u64_at(abi::CTRL_HEAD),
            "settle: not at the head"
        );
        let head_seq = self.m.u64_at(abi::CTRL_HEAD_SEQ);
        if !self.seq_known {
            ensure!(head_seq >= self.seq, "head seq {head_seq} < {}", self.seq);
            self.lost += head_seq - self.seq;
            self.seq = head_seq;
            self.seq_known = true;
        }
        ensure!(
            self.seq == head_seq,
            "at the head with seq {}, head seq {head_seq}",
            self.seq
        );
        Ok(())
    }

    /// Tells the kernel where we are and what we lost since we last said
    /// (`IOC_MAPPED_SYNC`); true when our next record is already gone.
    fn sync(&mut self, t: &Topic) -> Result<bool> {
        let lapped = t
            .mapped_sync(self.seq, self.lost - self.reported)
            .context("IOC_MAPPED_SYNC")?;
        self.reported = self.lost;
        Ok(lapped)
    }

    /// Sleeps until something may be new: tells the kernel where we are
    /// (`IOC_MAPPED_SYNC`), then polls the file.
    fn wait(&mut self, t: &Topic, timeout_ms: i32) -> Result<()> {
        if !self.seq_known {
            thread::sleep(Duration::from_millis(1));
            return Ok(());
        }
        if self.sync(t)? {
            return Ok(()); // lapped: read again first
        }
        let mut p = libc::pollfd {
            fd: t.file().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
        Ok(())
    }
}

/// Parses one record-mode read buffer strictly: whole records, zero
/// padding, nothing left over.
fn strict_records(buf: &[u8]) -> Result<Vec<Rec>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let h = RecordHeader::from_bytes(rest).context("a partial header in a read")?;
        let len = h.len as usize;
        let span = abi::record_span(len);
        ensure!(
            len > 0 && span <= rest.len(),
            "record of {len} bytes with {} left in the buffer",
            rest.len()
        );
        ensure!(h.flags == 0, "record flags {:#x}", h.flags);
        let pad = &rest[abi::RECORD_HEADER_SIZE + len..span];
        ensure!(pad.iter().all(|&b| b == 0), "non-zero padding {pad:?}");
        out.push((
            h,
            rest[abi::RECORD_HEADER_SIZE..abi::RECORD_HEADER_SIZE + len].to_vec(),
        ));
        rest = &rest[span..];
    }
    Ok(out)
}

/// A named topic made fresh (removed first if a failed run left it).
fn fresh_topic(name: &str, ring_size: u64) -> Result<PathBuf> {
    let _ = baf::control::remove(name);
    let mut o = baf::control::CreateOptions::defaults();
    o.ring_size = ring_size;
    baf::control::create(name, &o)?;
    Ok(baf::control::node_of(name))
}

/// A random stress length: mostly small, sometimes up to `max` (and
/// sometimes exactly `max`).
fn stress_len(rng: &mut u64, max: usize) -> usize {
    let r = xorshift(rng);
    match r % 20 {
        0 => max,
        1 | 2 => 16 + (r >> 8) as usize % (max - 15),
        3..=8 => 16 + (r >> 8) as usize % 1024,
        _ => 16 + (r >> 8) as usize % 128,
    }
}

/// What one stress reader saw.
struct ReaderTally {
    delivered: u64,
    lost: u64,
    start: u64,
    end: u64,
}

/// Tracks per-writer counters and sequence numbers of delivered records.
struct Order {
    last: Vec<Option<u32>>,
    prev_seq: Option<u64>,
}

impl Order {
    fn new(writers: u32) -> Self {
        Self {
            last: vec![None; writers as usize],
            prev_seq: None,
        }
    }

    fn record(&mut self, writer: u32, counter: u32) -> Result<()> {
        let slot = &mut self.last[writer as usize];
        if let Some(prev) = *slot {
            ensure!(
                counter > prev,
                "writer {writer}: #{counter} delivered after #{prev}"
            );
        }
        *slot = Some(counter);
        Ok(())
    }

    fn seq(&mut self, seq: u64, start: u64) -> Result<()> {
        ensure!(seq >= start, "seq {seq} before the reader opened ({start})");
        if let Some(p) = self.prev_seq {
            ensure!(seq > p, "seq went from {p} to {seq}");
        }
        self.prev_seq = Some(seq);
        Ok(())
    }
}

const STRESS_WRITERS: u32 = 4;

/// A stress reader in record mode with a `cap`-byte buffer.
fn stress_record_reader(
    path: &Path,
    cap: usize,
    ready: &Barrier,
    done: &AtomicBool,
) -> Result<ReaderTally> {
    let opened = (|| -> Result<(Topic, u64)> {
        let t = nb_reader(path)?;
        t.set_flags(abi::FLAG_RECORD)?;
        let start = t.info()?.cursor_seq;
        Ok((t, start))
    })();
    ready.wait(); // even on error, so that nobody waits for us forever
    let (t, start) = opened?;
    let mut order = Order::new(STRESS_WRITERS);
    let mut delivered = 0u64;
    let mut buf = vec![0u8; cap];
    loop {
        match t.file().read(&mut buf) {
            Ok(0) => bail!("end of file on a live topic"),
            Ok(n) => {
                for (h, p) in strict_records(&buf[..n])? {
                    ensure!(h.len as usize == p.len(), "header length {}", h.len);
                    let (w, c) = check_stress(&p, STRESS_WRITERS)?;
                    order.record(w, c)?;
                    order.seq(h.seq, start)?;
                    delivered += 1;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if done.load(Ordering::Acquire) {
                    let i = t.info()?;
                    if i.cursor_seq == i.next_seq {
                        break;
                    }
                    continue;
                }
                poll_in(t.file().as_raw_fd(), 50);
            }
            Err(e) => return Err(e).context("read"),
        }
    }
    let i = t.info()?;
    if let Some(last) = order.prev_seq {
        ensure!(
            last < i.next_seq,
            "seq {last} beyond next_seq {}",
            i.next_seq
        );
    }
    Ok(ReaderTally {
        delivered,
        lost: i.lost,
        start,
        end: i.next_seq,
    })
}

/// A stress reader in bytes mode with a small buffer: records larger than
/// it come in pieces; each record's own length field frames the stream. A
/// split record overwritten before its last piece is dropped by the kernel
/// (and counted lost): then this file's loss count grows while a record is
/// half read.
fn stress_byte_reader(
    path: &Path,
    cap: usize,
    ready: &Barrier,
    done: &AtomicBool,
) -> Result<ReaderTally> {
    let opened = (|| -> Result<(Topic, u64)> {
        let t = nb_reader(path)?;
        let start = t.info()?.cursor_seq;
        Ok((t, start))
    })();
    ready.wait(); // even on error
    let (t, start) = opened?;
    let mut order = Order::new(STRESS_WRITERS);
    let mut delivered = 0u64;
    let mut partial: Vec<u8> = Vec::new();
    let mut lost_before = 0u64;
    let mut dropped_splits = 0u64;
    let mut buf = vec![0u8; cap];
    loop {
        match t.file().read(&mut buf) {
            Ok(0) => bail!("end of file on a live topic"),
            Ok(n) => {
                if !partial.is_empty() && t.info()?.lost > lost_before {
                    partial.clear(); // the rest of that record is gone
                    dropped_splits += 1;
                }
                partial.extend_from_slice(&buf[..n]);
                loop {
                    if partial.len() < 12 {
                        break;
                    }
                    let len = le32(&partial, 8) as usize;
                    ensure!(
                        (16..=4096).contains(&len),
                        "bytes mode: a record claims {len} bytes (stream out of step)"
                    );
                    if partial.len() < len {
                        break;
                    }
                    let (w, c) = check_stress(&partial[..len], STRESS_WRITERS)?;
                    order.record(w, c)?;
                    delivered += 1;
                    partial.drain(..len);
                }
                if !partial.is_empty() {
                    lost_before = t.info()?.lost;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                // A split record dropped, and nothing after it yet.
                if !partial.is_empty() && t.info()?.lost > lost_before {
                    partial.clear();
                    dropped_splits += 1;
                }
                if done.load(Ordering::Acquire) {
                    let i = t.info()?;
                    if i.cursor_seq == i.next_seq {
                        ensure!(
                            partial.is_empty(),
                            "bytes mode: {} bytes of a record, and the rest never came",
                            partial.len()
                        );
                        break;
                    }
                    continue;
                }
                poll_in(t.file().as_raw_fd(), 50);
            }
            Err(e) => return Err(e).context("read"),
        }
    }
    let i = t.info()?;
    println!("  stress: the small-buffer reader saw {dropped_splits} split records dropped");
    Ok(ReaderTally {
        delivered,
        lost: i.lost,
        start,
        end: i.next_seq,
    })
}

fn stress_small_ring_many_writers_and_readers(_cx: &Ctx) -> Result<()> {
    const NAME: &str = "stress/small";
    let path = fresh_topic(NAME, 16384)?;
    let record_max = reader(&path)?.info()?.record_max as usize;
    ensure!(record_max == 4096, "record_max {record_max}");
    let ready = Arc::new(Barrier::new(3 + STRESS_WRITERS as usize + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for (k, cap) in [(0, 65536usize), (1, 65536), (2, 1000)] {
        let (path, ready, done) = (path.clone(), ready.clone(), done.clone());
        readers.push(thread::spawn(move || {
            if k < 2 {
                stress_record_reader(&path, cap, &ready, &done)
            } else {
                stress_byte_reader(&path, cap, &ready, &done)
            }
        }));
    }
    let mut writers = Vec::new();
    for id in 0..STRESS_WRITERS {
        let (path, ready, stop) = (path.clone(), ready.clone(), stop.clone());
        writers.push(thread::spawn(move || -> Result<u64> {
            let w = writer(&path);
            let mut rng = 0x2545_f491_4f6c_dd1du64.wrapping_mul(u64::from(id) + 1);
            ready.wait(); // even on error
            let w = w?;
            let mut counter = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let len = stress_len(&mut rng, record_max);
                put(&w, &stress_payload(id, counter, len))?;
                counter += 1;
            }
            Ok(u64::from(counter))
        }));
    }
    ready.wait();
    thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    let mut werr = None;
    for h in writers {
        match h.join().map_err(|_| anyhow::anyhow!("writer panicked"))? {
            Ok(n) => written += n,
            Err(e) => werr = Some(e),
        }
    }
    done.store(true, Ordering::Release);
    let tallies: Vec<Result<ReaderTally>> = readers
        .into_iter()
        .map(|h| h.join().map_err(|_| anyhow::anyhow!("reader panicked"))?)
        .collect();
    let _ = baf::control::remove(NAME);
    if let Some(e) = werr {
        return Err(e.context("writer"));
    }
    let mut summary = Vec::new();
    let mut any_loss = false;
    for (k, t) in tallies.into_iter().enumerate() {
        let t = t.with_context(|| format!("reader {k}"))?;
        ensure!(
            t.end - t.start == written,
            "reader {k}: the topic got {} records, the writers wrote {written}",
            t.end - t.start
        );
        ensure!(
            t.delivered + t.lost == written,
            "reader {k}: delivered {} + lost {} != written {written}",
            t.delivered,
            t.lost
        );
        ensure!(t.delivered > 0, "reader {k} got nothing");
        any_loss |= t.lost > 0;
        summary.push(format!("{}+{} lost", t.delivered, t.lost));
    }
    ensure!(
        any_loss,
        "no reader was lapped: the overrun paths were not exercised"
    );
    println!(
        "  stress: {written} records by {STRESS_WRITERS} writers into 16 KiB; readers: {}",
        summary.join(", ")
    );
    Ok(())
}

/// Anonymous memory with one page unmapped at `hole` (a page-aligned
/// offset), filled with `i % 251` elsewhere.
struct Holey {
    ptr: *mut u8,
    len: usize,
}

impl Holey {
    fn new(len: usize, hole: usize) -> Result<Self> {
        let p = anon_map(len)?;
        let ptr = p.cast::<u8>();
        for i in 0..len {
            // SAFETY: inside the fresh mapping.
            unsafe { ptr.add(i).write((i % 251) as u8) };
        }
        // SAFETY: one page of our own mapping.
        let rc = unsafe { libc::munmap(ptr.add(hole).cast(), page_size()) };
        ensure!(rc == 0, "munmap: {}", io::Error::last_os_error());
        Ok(Self { ptr, len })
    }

    /// Copies `data` to offset `at` (outside the hole).
    fn put(&self, at: usize, data: &[u8]) {
        assert!(at + data.len() <= self.len);
        // SAFETY: in bounds; the caller keeps clear of the hole.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(at), data.len()) };
    }

    /// `write(fd, ptr + at, len)`.
    fn write_to(&self, fd: i32, at: usize, len: usize) -> io::Result<usize> {
        assert!(at + len <= self.len);
        // SAFETY: the kernel reads the range; the hole must make it fault.
        let rc = unsafe { libc::write(fd, self.ptr.add(at).cast(), len) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }

    fn bytes(&self, at: usize, len: usize) -> Vec<u8> {
        (at..at + len).map(|i| (i % 251) as u8).collect()
    }
}

impl Drop for Holey {
    fn drop(&mut self) {
        // SAFETY: our own range (unmapping the hole again is harmless).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Real records and pads in the mapped ring between two positions.
fn reals_and_pads(
    mr: &MapReader<'_>,
    from: u64,
    to: u64,
) -> (Vec<RecordHeader>, Vec<RecordHeader>) {
    let (mut reals, mut pads) = (Vec::new(), Vec::new());
    for (_, h) in mr.slots(from, to) {
        match h {
            Some(h) if h.flags & abi::RECORD_FLAG_PAD != 0 => pads.push(h),
            Some(h) => reals.push(h),
            None => {}
        }
    }
    (reals, pads)
}

fn faulting_write_publishes_nothing_torn(cx: &Ctx) -> Result<()> {
    let page = page_size();
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let mfile = File::open(&cx.a)?;
    let m = Mapping::map(mfile.as_raw_fd(), page + RING as usize)?;
    let mr = MapReader::at_head(&m)?;
    let w = writer(&cx.a)?;

    // 1. One record that runs into the hole: EFAULT, nothing published,
    //    the slot is a pad.
    let mem = Holey::new(3 * page, page)?;
    let before = r.info()?.next_seq;
    let head0 = m.u64_at(abi::CTRL_HEAD);
    expect_errno(
        mem.write_to(w.as_raw_fd(), page - 100, 200),
        libc::EFAULT,
        "a 200-byte record over the hole",
    )?;
    ensure!(r.info()?.next_seq == before, "a faulted record got a seq");
    ensure!(
        m.u64_at(abi::CTRL_HEAD_SEQ) == before,
        "the control page's head seq moved"
    );
    let head1 = m.u64_at(abi::CTRL_HEAD);
    let (reals, pads) = reals_and_pads(&mr, head0, head1);
    ensure!(reals.is_empty(), "records in the faulted slot: {reals:?}");
    // If the kernel reserved a slot before the copy faulted, it is a pad.
    ensure!(
        head1 == head0
            || pads
                .iter()
                .any(|h| h.len as usize == abi::record_span(200) - abi::RECORD_HEADER_SIZE),
        "the faulted slot is not a pad of its record's size: {pads:?}"
    );
    expect_errno(get(&r, 4096), libc::EAGAIN, "reading after the fault")?;
    put(&w, b"after the fault")?;
    let recs = drain(&r)?;
    ensure!(
        recs.len() == 1 && recs[0].0.seq == before && recs[0].1 == b"after the fault",
        "after the fault: {recs:?}"
    );

    // 2. A write of two records whose second runs into the hole: the first
    //    is published whole, the call returns its size, seqs stay dense.
    let mem = Holey::new(2 * RECORD_MAX + page, RECORD_MAX + page)?;
    let before = r.info()?.next_seq;
    let head0 = m.u64_at(abi::CTRL_HEAD);
    let n = mem
        .write_to(w.as_raw_fd(), 0, 2 * RECORD_MAX)
        .context("a write whose second record faults")?;
    ensure!(n == RECORD_MAX, "returned {n}, want {RECORD_MAX}");
    ensure!(r.info()?.next_seq == before + 1, "not exactly one record");
    put(&w, b"next")?;
    let recs = drain(&r)?;
    ensure!(recs.len() == 2, "{} records", recs.len());
    ensure!(
        recs[0].0.seq == before && recs[0].1 == mem.bytes(0, RECORD_MAX),
        "the first record (seq {}) is not the first {RECORD_MAX} bytes",
        recs[0].0.seq
    );
    ensure!(
        recs[1].0.seq == before + 1 && recs[1].1 == b"next",
        "the next write got seq {} (want {})",
        recs[1].0.seq,
        before + 1
    );
    let (reals, pads) = reals_and_pads(&mr, head0, m.u64_at(abi::CTRL_HEAD));
    ensure!(
        reals.iter().map(|h| h.seq).collect::<Vec<_>>() == [before, before + 1],
        "records in the ring: {reals:?}"
    );
    // The faulted record's slot, if one was reserved, is a pad (the only
    // other padding, one wrap at the ring's end, is smaller than a slot).
    let spans: u64 = reals
        .iter()
        .map(|h| abi::record_span(h.len as usize) as u64)
        .sum();
    let extra = m.u64_at(abi::CTRL_HEAD) - head0 - spans;
    ensure!(
        extra < abi::record_span(RECORD_MAX) as u64
            || pads.iter().any(|h| h.len as usize == RECORD_MAX),
        "{extra} bytes beside the two records, but no pad for the faulted one: {pads:?}"
    );

    // 3. A batch whose second frame's payload runs into the hole: the
    //    first frame is published, the call returns its span; the rest
    //    gives EFAULT.
    let bw = Topic::open(&cx.a, true, true)?;
    bw.set_flags(abi::FLAG_BATCH)?;
    let mem = Holey::new(3 * page, page)?;
    let f1 = frame(100, &pattern(4, 1, 100), 0);
    let f2 = frame(400, &[], 0);
    let at1 = page - 200 - f1.len();
    mem.put(at1, &f1);
    mem.put(page - 200, &f2[..abi::RECORD_HEADER_SIZE]);
    let before = r.info()?.next_seq;
    let n = mem
        .write_to(bw.file().as_raw_fd(), at1, f1.len() + abi::record_span(400))
        .context("batch with a faulting frame")?;
    ensure!(n == f1.len(), "batch returned {n}, want {}", f1.len());
    expect_errno(
        mem.write_to(bw.file().as_raw_fd(), page - 200, abi::record_span(400)),
        libc::EFAULT,
        "the faulting frame alone",
    )?;
    let recs = drain(&r)?;
    ensure!(
        recs.len() == 1 && recs[0].0.seq == before && recs[0].1 == pattern(4, 1, 100),
        "batch before the fault: {recs:?}"
    );
    ensure!(
        r.info()?.next_seq == before + 1,
        "the faulting frame got a seq"
    );
    Ok(())
}

/// A batch frame: header (`len`, `flags`, junk in the fields the kernel
/// fills in), payload, junk padding.
fn frame(len: u32, payload: &[u8], flags: u32) -> Vec<u8> {
    let mut v = RecordHeader {
        len,
        flags,
        seq: 0xdead_beef,
        timestamp_ns: 77,
        pid: 4242,
        uid: 4242,
        writer: 4242,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(payload);
    let span = abi::record_span(payload.len());
    v.resize(span, 0xee);
    v
}

fn batch_writes(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let bw = Topic::open(&cx.a, true, true)?;
    bw.set_flags(abi::FLAG_BATCH)?;
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", bw.file().as_raw_fd()))?;
    ensure!(
        fdinfo.contains("fanout_mode:\tbytes,batch\n"),
        "fdinfo of a batch writer:\n{fdinfo}"
    );
    let me = std::process::id();

    // A good batch: every frame is one record, exactly.
    let mut lens: Vec<usize> = (0..60).map(|i| (i * 37) % 600 + 1).collect();
    lens.extend([7, 8, 9, 31, 32, 33, RECORD_MAX]);
    let payloads: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(2, i as u32, n))
        .collect();
    let batch: Vec<u8> = payloads
        .iter()
        .flat_map(|p| frame(p.len() as u32, p, 0))
        .collect();
    let before = r.info()?.next_seq;
    let t0 = monotonic_ns();
    let n = (bw.file()).write(&batch).context("good batch")?;
    ensure!(n == batch.len(), "good batch: wrote {n} of {}", batch.len());
    let raw = get(&r, 1 << 20)?;
    let recs = strict_records(&raw)?;
    ensure!(
        recs.len() == payloads.len(),
        "{} records from {} frames",
        recs.len(),
        payloads.len()
    );
    for (k, ((h, p), want)) in recs.iter().zip(&payloads).enumerate() {
        ensure!(
            p == want && h.len as usize == want.len(),
            "record {k}: payload"
        );
        ensure!(h.seq == before + k as u64, "record {k}: seq {}", h.seq);
        ensure!(
            h.pid == me && h.uid == 0,
            "record {k}: pid {} uid {} (the frame's were ignored?)",
            h.pid,
            h.uid
        );
        ensure!(
            h.timestamp_ns == recs[0].0.timestamp_ns && h.timestamp_ns >= t0,
            "record {k}: timestamp {} (one stamp per call, after {t0})",
            h.timestamp_ns
        );
    }
    expect_errno(get(&r, 4096), libc::EAGAIN, "after the good batch")?;

    // A bad frame stops the batch: the good frames before it are taken,
    // writing the rest gives the frame's errno, nothing after it appears.
    let g1 = frame(5, b"good1", 0);
    let g2 = frame(16, b"good-2-sixteen-b", 0);
    let g3 = frame(5, b"good3", 0);
    let oversize = vec![1u8; RECORD_MAX + 1];
    let g3_span = abi::record_span(5);
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("zero length", frame(0, &[], 0), libc::EINVAL),
        (
            "len above record_max",
            frame((RECORD_MAX + 1) as u32, &oversize, 0),
            libc::EMSGSIZE,
        ),
        ("non-zero flags", frame(10, b"0123456789", 1), libc::EINVAL),
        (
            "the pad flag",
            frame(10, b"0123456789", abi::RECORD_FLAG_PAD),
            libc::EINVAL,
        ),
        ("truncated in the header", g3[..20].to_vec(), libc::EBADMSG),
        (
            "truncated in the payload",
            g3[..abi::RECORD_HEADER_SIZE + 3].to_vec(),
            libc::EBADMSG,
        ),
        (
            "truncated in the padding",
            g3[..g3_span - 1].to_vec(),
            libc::EBADMSG,
        ),
    ];
    for (what, bad, errno) in cases {
        let truncated = errno == libc::EBADMSG;
        let mut buf = [g1.clone(), g2.clone(), bad].concat();
        if !truncated {
            buf.extend_from_slice(&g3);
        }
        let good = g1.len() + g2.len();
        let before = r.info()?.next_seq;
        let n = (bw.file())
            .write(&buf)
            .with_context(|| format!("{what}: batch"))?;
        ensure!(
            n == good,
            "{what}: wrote {n}, want {good} (the good frames)"
        );
        expect_errno(
            (bw.file()).write(&buf[n..]),
            errno,
            &format!("{what}: the rest"),
        )?;
        let recs = drain(&r)?;
        let got: Vec<&[u8]> = recs.iter().map(|(_, p)| p.as_slice()).collect();
        ensure!(
            got == [&b"good1"[..], &b"good-2-sixteen-b"[..]],
            "{what}: published {got:?}"
        );
        ensure!(
            recs[0].0.seq == before && r.info()?.next_seq == before + 2,
            "{what}: seqs"
        );
    }

    // What a record-mode reader got is a valid batch: republish it.
    let w = writer(&cx.a)?;
    let originals: Vec<Vec<u8>> = (0..20)
        .map(|i| pattern(6, i, 10 + i as usize * 13))
        .collect();
    for p in &originals {
        put(&w, p)?;
    }
    let raw = get(&r, 1 << 20)?;
    ensure!(strict_records(&raw)?.len() == 20, "20 records in one read");
    let before = r.info()?.next_seq;
    let n = (bw.file())
        .write(&raw)
        .context("republishing a read buffer")?;
    ensure!(n == raw.len(), "republished {n} of {}", raw.len());
    let again = drain(&r)?;
    ensure!(
        again.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>() == originals,
        "republished payloads differ"
    );
    ensure!(
        again
            .iter()
            .enumerate()
            .all(|(k, (h, _))| h.seq == before + k as u64),
        "republished records got new dense seqs"
    );
    Ok(())
}

fn mapped_consumer_under_lapping(_cx: &Ctx) -> Result<()> {
    const NAME: &str = "mapped/lap";
    let path = fresh_topic(NAME, 16384)?;
    let t = nb_reader(&path)?;
    let m = Mapping::map(t.file().as_raw_fd(), page_size() + 16384)?;
    let mut mr = MapReader::at_head(&m)?;
    ensure!(mr.size == 16384 && mr.record_max == 4096, "control page");
    let start = mr.seq;
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let writer_thread = {
        let (path, stop, finished) = (path.clone(), stop.clone(), finished.clone());
        thread::spawn(move || -> Result<u64> {
            let w = writer(&path)?;
            let mut rng = 0x1234_5678_9abc_def1u64;
            let mut counter = 0u32;
            let r = (|| -> Result<u64> {
                while !stop.load(Ordering::Relaxed) {
                    let len = stress_len(&mut rng, 4096);
                    put(&w, &stress_payload(0, counter, len))?;
                    counter += 1;
                }
                Ok(u64::from(counter))
            })();
            finished.store(true, Ordering::Release);
            r
        })
    };
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut delivered = 0u64;
    let mut batches = 0u64;
    let mut prev_ts = 0;
    let result = (|| -> Result<()> {
        loop {
            if Instant::now() > deadline {
                stop.store(true, Ordering::Relaxed);
            }
            let recs = mr.poll(65536)?;
            if recs.is_empty() {
                if finished.load(Ordering::Acquire) && mr.pos == m.u64_at(abi::CTRL_HEAD) {
                    return mr.settle();
                }
                mr.wait(&t, 50)?;
                continue;
            }
            for (h, p) in &recs {
                ensure!(h.len as usize == p.len(), "header length {}", h.len);
                let (_, c) = check_stress(p, 1)?;
                ensure!(
                    u64::from(c) == h.seq.wrapping_sub(start),
                    "record seq {} carries counter {c}",
                    h.seq
                );
                ensure!(h.pid == me && h.uid == 0, "pid {} uid {}", h.pid, h.uid);
                ensure!(h.timestamp_ns >= prev_ts, "time went back");
                prev_ts = h.timestamp_ns;
                delivered += 1;
            }
            batches += 1;
            if batches % 16 == 0 {
                thread::sleep(Duration::from_millis(20)); // get lapped
            }
        }
    })();
    stop.store(true, Ordering::Relaxed);
    let written = writer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))?;
    let _ = baf::control::remove(NAME);
    result?;
    let written = written?;
    let head_seq = m.u64_at(abi::CTRL_HEAD_SEQ);
    ensure!(
        head_seq - start == written,
        "control page: {} records, the writer wrote {written}",
        head_seq - start
    );
    ensure!(
        delivered + mr.lost == written,
        "delivered {delivered} + lost {} != written {written}",
        mr.lost
    );
    ensure!(
        mr.laps > 0 && mr.lost > 0,
        "the mapped reader was never lapped"
    );
    // The kernel counts exactly the loss the mapping reader reported.
    mr.sync(&t)?;
    let info = t.info()?;
    ensure!(
        info.lost == mr.lost && info.topic_lost >= mr.lost,
        "kernel counts {} lost for the file ({} for the topic), the reader saw {}",
        info.lost,
        info.topic_lost,
        mr.lost
    );
    // Loss cannot be over-reported: more than the records moved past since
    // the last sync is EINVAL.
    expect_errno(t.mapped_sync(mr.seq, 1), libc::EINVAL, "over-reported loss")?;
    expect_errno(
        t.mapped_sync(mr.seq + 1_000_000, 0),
        libc::ERANGE,
        "a seq not yet written",
    )?;
    println!(
        "  mapped reader: {written} written, {delivered} delivered, {} lost in {} laps, {} copies dropped",
        mr.lost, mr.laps, mr.retries
    );
    Ok(())
}

fn mmap_is_read_only_and_checked(cx: &Ctx) -> Result<()> {
    let page = page_size();
    let full = page + RING as usize;
    let ro = File::open(&cx.a)?;
    let rw = OpenOptions::new().read(true).write(true).open(&cx.a)?;
    let wo = writer(&cx.a)?;
    let fd = ro.as_raw_fd();
    {
        let m = Mapping::map(fd, full).context("the documented mapping")?;
        let mr = MapReader::at_head(&m)?;
        ensure!(
            mr.size == RING && mr.record_max == RECORD_MAX,
            "control page: ring {} record_max {}",
            mr.size,
            mr.record_max
        );
        ensure!(
            m.u32_at(abi::CTRL_FLAGS) & abi::CTRL_FLAG_REMOVED == 0,
            "a live topic marked removed"
        );
        // The mapping follows the topic.
        let seq = m.u64_at(abi::CTRL_HEAD_SEQ);
        put(&wo, b"seen through the mapping")?;
        ensure!(
            m.u64_at(abi::CTRL_HEAD_SEQ) == seq + 1,
            "head seq did not move"
        );
        let mut mr = mr;
        let recs = mr.poll(1 << 20)?;
        ensure!(
            recs.len() == 1 && recs[0].1 == b"seen through the mapping" && recs[0].0.seq == seq,
            "mapped record: {recs:?}"
        );
    }
    Mapping::map(fd, page).context("only the control page")?;
    let rwx = libc::PROT_READ | libc::PROT_WRITE;
    expect_errno(
        Mapping::raw(rw.as_raw_fd(), full, rwx, libc::MAP_SHARED, 0),
        libc::EPERM,
        "PROT_WRITE, MAP_SHARED, O_RDWR file",
    )?;
    expect_errno(
        Mapping::raw(fd, full, rwx, libc::MAP_PRIVATE, 0),
        libc::EPERM,
        "PROT_WRITE, MAP_PRIVATE",
    )?;
    for (what, file, flags) in [
        ("MAP_SHARED of an O_RDWR file", &rw, libc::MAP_SHARED),
        ("MAP_PRIVATE", &ro, libc::MAP_PRIVATE),
    ] {
        let m = match Mapping::raw(file.as_raw_fd(), full, libc::PROT_READ, flags, 0) {
            Ok(m) => m,
            // The ABI documents MAP_SHARED only; refusing MAP_PRIVATE is fine.
            Err(e) if flags == libc::MAP_PRIVATE => {
                println!("  mmap: a read-only MAP_PRIVATE mapping is refused ({e})");
                continue;
            }
            Err(e) => return Err(e).context(what),
        };
        // SAFETY: changing the protection of our own mapping (which must
        // fail).
        let rc = unsafe { libc::mprotect(m.ptr.cast(), page, rwx) };
        ensure!(
            rc == -1 && errno_now() == libc::EACCES,
            "mprotect(PROT_WRITE) of a read-only {what} mapping: {rc} {}",
            io::Error::last_os_error()
        );
    }
    expect_errno(
        Mapping::map(wo.as_raw_fd(), full),
        libc::EACCES,
        "mmap of an O_WRONLY file",
    )?;
    expect_errno(
        Mapping::raw(fd, page, libc::PROT_READ, libc::MAP_SHARED, page as i64),
        libc::EINVAL,
        "offset of one page",
    )?;
    expect_errno(
        Mapping::map(fd, full + page),
        libc::EINVAL,
        "a page more than control page + ring",
    )?;
    Ok(())
}

fn mapping_outlives_topic_removal(_cx: &Ctx) -> Result<()> {
    const NAME: &str = "mapped/removed";
    let path = fresh_topic(NAME, 65536)?;
    let file = File::open(&path)?;
    let m = Mapping::map(file.as_raw_fd(), page_size() + 65536)?;
    let r = nb_reader(&path)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&path)?;
    let payloads: Vec<Vec<u8>> = (0..5)
        .map(|i| pattern(9, i, 100 + 50 * i as usize))
        .collect();
    for p in &payloads {
        put(&w, p)?;
    }
    let read = drain(&r)?;
    let mut mr = MapReader::new(&m, 0, 0)?;
    let mapped = mr.poll(1 << 20)?;
    ensure!(
        mapped == read,
        "the mapping and read() disagree:\n{mapped:?}\n{read:?}"
    );
    ensure!(
        mapped.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>() == payloads,
        "mapped payloads"
    );
    baf::control::remove(NAME)?;
    drop((w, r, file));
    ensure!(!path.exists(), "the node is still there");
    ensure!(
        m.u32_at(abi::CTRL_FLAGS) & abi::CTRL_FLAG_REMOVED != 0,
        "CTRL_FLAGS {:#x} after removal",
        m.u32_at(abi::CTRL_FLAGS)
    );
    let mut again = MapReader::new(&m, 0, 0)?;
    let after = again.poll(1 << 20)?;
    ensure!(
        after == read,
        "the mapping changed after removal: {after:?}"
    );
    ensure!(
        again.poll(1 << 20)?.is_empty(),
        "more records after removal"
    );
    ensure!(
        m.u64_at(abi::CTRL_HEAD_SEQ) == 5,
        "head seq {}",
        m.u64_at(abi::CTRL_HEAD_SEQ)
    );
    m.unmap().context("munmap after removal")?;
    Ok(())
}

/// In a child process in other namespaces: `mmap` of a topic (opened there,
/// or inherited) must be `EPERM`; a record-mode read must work and show the
/// last record with `want_pid`/`want_uid`. Returns 0 or `base + reason`.
///
/// # Safety
///
/// Only for a forked child: raw syscalls, no allocation.
unsafe fn ns_child_checks(
    path: &std::ffi::CStr,
    inherited: i32,
    page: usize,
    want_pid: u32,
    want_uid: u32,
    base: i32,
) -> i32 {
    // SAFETY: raw syscalls on valid arguments (caller contract).
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
        if fd < 0 {
            return base + 1;
        }
        for f in [fd, inherited] {
            let p = libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f,
                0,
            );
            if p != libc::MAP_FAILED {
                return base + 2;
            }
            if errno_now() != libc::EPERM {
                return base + 3;
            }
        }
        let flags: u32 = abi::FLAG_RECORD | abi::FLAG_WRITER_ID;
        let mut seek = abi::Seek {
            whence: abi::SEEK_LAST,
            reserved: 0,
            arg: 1,
        };
        if libc::ioctl(fd, abi::IOC_SET_FLAGS as _, &flags) != 0
            || libc::ioctl(fd, abi::IOC_SEEK as _, &mut seek) != 0
        {
            return base + 4;
        }
        let mut buf = [0u8; 256];
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        let Some(h) = RecordHeader::from_bytes(&buf[..n.max(0) as usize]) else {
            return base + 5;
        };
        let want = NS_PAYLOAD;
        if h.len as usize != want.len()
            || buf.get(abi::RECORD_HEADER_SIZE..abi::RECORD_HEADER_SIZE + want.len()) != Some(want)
        {
            return base + 6;
        }
        if h.pid != want_pid {
            return base + 7;
        }
        if h.uid != want_uid {
            return base + 8;
        }
        0
    }
}

const NS_PAYLOAD: &[u8] = b"written outside the namespaces";

fn mmap_refused_in_other_namespaces(cx: &Ctx) -> Result<()> {
    let w = writer(&cx.a)?;
    put(&w, NS_PAYLOAD)?;
    let me = std::process::id();
    let inherited = File::open(&cx.a)?;
    let ifd = inherited.as_raw_fd();
    let path = c_path(&cx.a)?;
    let page = page_size();
    // (flags to unshare, fork after it, pid and uid of the host writer as
    // seen there, base of the exit codes)
    let variants = [
        (libc::CLONE_NEWUSER | libc::CLONE_NEWPID, true, 0, 65534, 10),
        (libc::CLONE_NEWPID, true, 0, 0, 20),
        (libc::CLONE_NEWUSER, false, me, 65534, 30),
    ];
    for (flags, fork_again, want_pid, want_uid, base) in variants {
        // SAFETY: the child only makes raw syscalls and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: raw syscalls in the forked child.
            unsafe {
                if libc::unshare(flags) != 0 {
                    libc::_exit(base + 9);
                }
                if !fork_again {
                    libc::_exit(ns_child_checks(&path, ifd, page, want_pid, want_uid, base));
                }
                let grandchild = libc::fork();
                if grandchild == 0 {
                    libc::_exit(ns_child_checks(&path, ifd, page, want_pid, want_uid, base));
                }
                let mut st = 0;
                libc::waitpid(grandchild, &mut st, 0);
                libc::_exit(if libc::WIFEXITED(st) {
                    libc::WEXITSTATUS(st)
                } else {
                    base + 9
                });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        let ns = match base {
            10 => "new user + pid namespaces",
            20 => "a new pid namespace",
            _ => "a new user namespace",
        };
        ensure!(
            code == 0,
            "in {ns}: {}",
            match code - base {
                1 => "open failed".to_string(),
                2 => "mmap succeeded (must be EPERM)".to_string(),
                3 => "mmap failed, but not with EPERM".to_string(),
                4 => "ioctl failed".to_string(),
                5 => "read returned no record".to_string(),
                6 => "read returned the wrong record".to_string(),
                7 => format!("the host writer's pid is not {want_pid}"),
                8 => format!("the host writer's uid is not {want_uid}"),
                9 => "unshare or fork failed".to_string(),
                _ => format!("exit status {status:#x}"),
            }
        );
    }
    // The inherited file still maps in the initial namespaces.
    Mapping::map(ifd, page).context("mmap in the initial namespaces")?;
    Ok(())
}

/// Payload of the `k`-th record (seq `k`) of the seek test.
fn seek_payload(k: u64, len: usize) -> Vec<u8> {
    let mut v = k.to_le_bytes().to_vec();
    v.extend((8..len).map(|i| (k as u8).wrapping_mul(7) ^ i as u8));
    v
}

fn seek_len(k: u64, mixed: bool) -> usize {
    if mixed {
        16 + (k % 5) as usize * 8
    } else {
        8
    }
}

/// Checks seq:S, last:N and oldest against the record each lands on.
fn check_seek_positions(r: &Topic, mixed_from: u64) -> Result<usize> {
    let info = r.info()?;
    let (oldest, next) = (info.oldest_seq, info.next_seq);
    let read_one = |want: u64| -> Result<()> {
        // 88 bytes: room for one record of at most 48 bytes (40-byte
        // header), never two (the smallest take 48 bytes each).
        let recs = strict_records(&get(r, 88)?)?;
        ensure!(recs.len() == 1, "{} records, want seq {want}", recs.len());
        let (h, p) = &recs[0];
        ensure!(h.seq == want, "landed on seq {}, want {want}", h.seq);
        ensure!(
            *p == seek_payload(want, seek_len(want, want >= mixed_from)),
            "record {want}: wrong payload"
        );
        Ok(())
    };
    let mut targets = vec![oldest, oldest + 1, oldest + 2, next - 2, next - 1];
    let mut m = oldest - oldest % 64;
    while m < next + 64 {
        targets.extend([m.wrapping_sub(1), m, m + 1]);
        m += 64;
    }
    let mut rng = 0x5eed_u64 ^ next;
    targets.extend((0..200).map(|_| oldest + xorshift(&mut rng) % (next - oldest)));
    targets.retain(|&s| s >= oldest && s < next);
    for &s in &targets {
        let got = r
            .seek(abi::SEEK_SEQ, s)
            .with_context(|| format!("seq:{s}"))?;
        ensure!(got == s, "seq:{s} reported {got}");
        read_one(s).with_context(|| format!("after seq:{s}"))?;
    }
    ensure!(r.seek(abi::SEEK_SEQ, next)? == next, "seq:next");
    expect_errno(get(r, 80), libc::EAGAIN, "after seq:next")?;
    for bad in [next + 1, u64::MAX] {
        expect_errno(
            r.seek(abi::SEEK_SEQ, bad),
            libc::ERANGE,
            "seq in the future",
        )?;
    }
    if oldest > 0 {
        expect_errno(
            r.seek(abi::SEEK_SEQ, oldest - 1),
            libc::ERANGE,
            "seq:oldest-1",
        )?;
    }
    let live = next - oldest;
    for n in [
        1,
        2,
        63,
        64,
        65,
        127,
        128,
        129,
        1000,
        live - 1,
        live,
        live + 1,
        u64::MAX,
    ] {
        let want = next.saturating_sub(n).max(oldest);
        let got = r.seek(abi::SEEK_LAST, n)?;
        ensure!(got == want, "last:{n} reported {got}, want {want}");
        read_one(want).with_context(|| format!("after last:{n}"))?;
    }
    ensure!(r.seek(abi::SEEK_LAST, 0)? == next, "last:0 is now");
    ensure!(r.seek(abi::SEEK_OLDEST, 0)? == oldest, "oldest position");
    read_one(oldest).context("after oldest")?;
    Ok(targets.len())
}

fn seek_by_sequence_lands_exactly(_cx: &Ctx) -> Result<()> {
    const NAME: &str = "seek/many";
    let path = fresh_topic(NAME, 1 << 20)?;
    let r = nb_reader(&path)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&path)?;
    // 20000 records of 8 bytes (48-byte slots): 960000 bytes, all still
    // buffered.
    const FIRST: u64 = 20_000;
    for k in 0..FIRST {
        put(&w, &seek_payload(k, seek_len(k, false)))?;
    }
    let i = r.info()?;
    ensure!(
        i.oldest_seq == 0 && i.next_seq == FIRST,
        "after 20000 records: oldest {} next {}",
        i.oldest_seq,
        i.next_seq
    );
    let n1 = check_seek_positions(&r, u64::MAX).context("a ring not yet full")?;
    // 15000 more of 16 to 48 bytes: the ring wraps, the oldest go.
    for k in FIRST..FIRST + 15_000 {
        put(&w, &seek_payload(k, seek_len(k, true)))?;
    }
    ensure!(r.info()?.oldest_seq > 0, "nothing was evicted");
    let n2 = check_seek_positions(&r, FIRST).context("a wrapped ring")?;
    drop((r, w));
    baf::control::remove(NAME)?;
    println!("  seek: {n1} and {n2} sequence numbers checked");
    Ok(())
}

fn batch_write_wakes_a_blocked_reader_once(cx: &Ctx) -> Result<()> {
    const N: usize = 2000;
    let r = reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let start = r.info()?.cursor_seq;
    let ep_file = nb_reader(&cx.a)?;
    let ready = Arc::new(Barrier::new(3));
    let blocked = {
        let ready = ready.clone();
        thread::spawn(move || -> Result<Vec<Rec>> {
            ready.wait();
            strict_records(&get(&r, 1 << 20)?)
        })
    };
    let counter = {
        let ready = ready.clone();
        thread::spawn(move || -> Result<u32> {
            // SAFETY: plain epoll syscalls on fds we own.
            let ep = unsafe { libc::epoll_create1(0) };
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: 1,
            };
            // SAFETY: as above.
            let rc = unsafe {
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ep_file.file().as_raw_fd(), &mut ev)
            };
            ready.wait(); // even on error
            ensure!(ep >= 0 && rc == 0, "epoll: {}", io::Error::last_os_error());
            let mut events = 0;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let mut out = [libc::epoll_event { events: 0, u64: 0 }];
                let timeout = if events == 0 { 1000 } else { 1500 };
                // SAFETY: as above.
                let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 1, timeout) };
                if n > 0 {
                    events += 1;
                } else if events > 0 || Instant::now() > deadline {
                    break;
                }
            }
            // SAFETY: closing our epoll fd.
            unsafe { libc::close(ep) };
            drop(ep_file);
            Ok(events)
        })
    };
    ready.wait();
    thread::sleep(Duration::from_millis(300));
    ensure!(!blocked.is_finished(), "the reader did not block");
    let bw = Topic::open(&cx.a, true, false)?;
    bw.set_flags(abi::FLAG_BATCH)?;
    let payloads: Vec<Vec<u8>> = (0..N).map(|i| pattern(7, i as u32, 64)).collect();
    let batch: Vec<u8> = payloads.iter().flat_map(|p| frame(64, p, 0)).collect();
    let n = (bw.file()).write(&batch)?;
    ensure!(n == batch.len(), "batch: wrote {n} of {}", batch.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !blocked.is_finished() {
        // (A reader never woken is left behind; later writes free it.)
        ensure!(
            Instant::now() < deadline,
            "the blocked reader was not woken by the batch"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let recs = blocked
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let events = counter
        .join()
        .map_err(|_| anyhow::anyhow!("epoll waiter panicked"))??;
    ensure!(
        recs.len() == N,
        "the woken reader got {} of the batch's {N} records in its read (woken before the batch was complete?)",
        recs.len()
    );
    for (k, (h, p)) in recs.iter().enumerate() {
        ensure!(
            h.seq == start + k as u64 && *p == payloads[k],
            "record {k}: seq {}",
            h.seq
        );
    }
    ensure!(
        events == 1,
        "an edge-triggered epoll waiter was woken {events} times by one batch write"
    );
    Ok(())
}

type Test = fn(&Ctx) -> Result<()>;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [a, b, c] = <[PathBuf; 3]>::try_from(args).unwrap_or_else(|_| {
        eprintln!("usage: fanout-tests DEV_A DEV_B DEV_C");
        std::process::exit(2)
    });
    let cx = Ctx { a, b, c };
    let tests: &[(&str, Test)] = &[
        (
            "plain reads return whole records",
            plain_reads_return_whole_records,
        ),
        (
            "a record larger than the buffer comes in pieces",
            oversized_record_comes_in_pieces,
        ),
        (
            "a zero-length write is a no-op",
            zero_length_write_is_a_noop,
        ),
        (
            "a large write is split into record_max records",
            large_write_is_split_into_records,
        ),
        (
            "an 8 MiB write is taken whole, newest records kept",
            huge_write_is_taken_whole,
        ),
        ("odd sizes round-trip exactly", odd_sizes_round_trip),
        (
            "concurrent writers: no torn or mixed record",
            concurrent_writers_never_tear,
        ),
        (
            "4 readers each get every record in order",
            every_reader_gets_every_record_in_order,
        ),
        (
            "a lapped reader resumes with its exact loss",
            lapped_reader_resumes_with_exact_loss,
        ),
        (
            "strict mode: EPIPE once per overrun",
            strict_mode_fails_once_with_epipe,
        ),
        (
            "record headers: pid, uid, seq, time; unforgeable",
            record_headers_carry_provenance,
        ),
        (
            "writer identity: the writer's pidfd inode, per process",
            writer_id::writer_is_the_pidfd_inode,
        ),
        (
            "writer identity: a reused pid is told apart from the old writer",
            writer_id::a_reused_pid_is_told_apart,
        ),
        (
            "a child pid namespace reads an exited writer's reused pid as 0",
            writer_id::a_reused_pid_reads_as_0_in_a_namespace,
        ),
        (
            "ABI 3 programs: 32-byte headers in reads and batch frames",
            writer_id::abi3_programs_keep_32_byte_headers,
        ),
        (
            "RWF_NOWAIT and io_uring: EAGAIN instead of sleeping, blocking reads wait",
            nowait::rwf_nowait_and_io_uring,
        ),
        (
            "record mode: too small a buffer is EMSGSIZE, loses nothing",
            record_mode_refuses_too_small_buffers,
        ),
        (
            "history: last:N, seq:S, oldest, now, ERANGE",
            history_positions,
        ),
        (
            "O_NONBLOCK read gives EAGAIN",
            nonblocking_read_gives_eagain,
        ),
        (
            "a blocking read is woken by a write",
            blocking_read_is_woken_by_write,
        ),
        (
            "a signal interrupts a blocking read cleanly",
            signal_interrupts_blocking_read,
        ),
        (
            "poll and epoll: 24 waiters all woken",
            poll_and_epoll_wake_every_waiter,
        ),
        (
            "bad user pointers give EFAULT and change nothing",
            bad_user_pointers_give_efault,
        ),
        (
            "fdinfo and INFO show the cursor and mode",
            fdinfo_shows_the_cursor,
        ),
        (
            "pid/uid are shown in the reader's namespaces",
            pid_and_uid_follow_the_readers_namespaces,
        ),
        (
            "removal wakes readers (EOF after the buffered data) and pollers (POLLHUP), writers get ENODEV, the name is reusable",
            removal_wakes_readers_and_pollers,
        ),
        (
            "the publisher lock has one holder and dies with its file or process",
            publisher_lock_dies_with_its_holder,
        ),
        (
            "churn: create/remove/open/read/poll/close from 6 threads, all woken",
            churn_of_topics_and_opens,
        ),
        (
            "stress: 4 writers, 3 readers, a 16 KiB ring: nothing torn, delivered + lost = written",
            stress_small_ring_many_writers_and_readers,
        ),
        (
            "a write that faults mid-record publishes nothing torn; seqs stay dense",
            faulting_write_publishes_nothing_torn,
        ),
        (
            "batch writes: frames become records; a bad frame stops the batch with its errno",
            batch_writes,
        ),
        (
            "mmap consumer under lapping: nothing torn, every gap counted",
            mapped_consumer_under_lapping,
        ),
        (
            "mmap is read-only (EPERM, EACCES) and checks offset and length (EINVAL)",
            mmap_is_read_only_and_checked,
        ),
        (
            "a mapping outlives the topic's removal and shows CTRL_FLAG_REMOVED",
            mapping_outlives_topic_removal,
        ),
        (
            "mmap is EPERM in other pid or user namespaces; read() works there",
            mmap_refused_in_other_namespaces,
        ),
        (
            "seek by seq, last:N, oldest land exactly on 35000 records",
            seek_by_sequence_lands_exactly,
        ),
        (
            "a batch write wakes a blocked reader once, with the whole batch",
            batch_write_wakes_a_blocked_reader_once,
        ),
        (
            "lossless: only with the owner's consent (EPERM, EBADF); ABI 2 structs still work",
            lossless::lossless_needs_the_owners_consent,
        ),
        (
            "lossless: the writer waits (EAGAIN, partial counts), seeks and syncs hold",
            lossless::a_lossless_reader_holds_the_writer,
        ),
        (
            "lossless: a SIGSTOPped reader blocks the writer; SIGCONT or SIGKILL releases it",
            lossless::a_stopped_lossless_process_blocks_the_writer,
        ),
        (
            "lossless: signals and removal release a blocked writer (EINTR, partial, ENODEV)",
            lossless::signals_and_removal_release_a_blocked_writer,
        ),
        (
            "lossless: poll and epoll POLLOUT follow the lossless readers",
            lossless::pollout_follows_the_lossless_readers,
        ),
        (
            "lossless: the stall timeout demotes a stuck reader (EPIPE once), not a slow one",
            lossless::the_stall_timeout_demotes_a_stuck_reader,
        ),
        (
            "lossless: IOC_WAIT_READERS waits for lossless readers (EAGAIN, ENODEV, EPERM)",
            lossless::a_publisher_waits_for_its_readers,
        ),
        (
            "lossless: 12000 records, plain and batched, byte-exact to two lossless readers",
            lossless::lossless_stress_is_byte_exact,
        ),
        (
            "stall bound: a blocking, an O_NONBLOCK and a poll-driven writer resume after one stall timeout; stuck readers demoted together, never lossless again",
            hardening::the_stall_bound_holds_for_every_writer,
        ),
        (
            "FLAG_LOSSLESS only for the topic's owner, group or CAP_SYS_ADMIN; no stall timeout only for CAP_SYS_ADMIN; at most LOSSLESS_MAX",
            hardening::lossless_only_where_the_owner_allows,
        ),
        (
            "writes racing removal: ENODEV, and every write reported done is read before end of file",
            hardening::writes_racing_removal_fail_with_enodev,
        ),
        (
            "seek back + MAPPED_SYNC cannot count the same loss twice; a refused sync moves no hold",
            hardening::seek_and_sync_cannot_inflate_loss,
        ),
        (
            "a split read cannot slip into record mode (raw bytes in a record-mode read)",
            hardening::split_and_record_reads_do_not_mix,
        ),
        (
            "1-, 7-, 100- and 3000-byte readers of a busy topic never see a torn record",
            hardening::small_buffer_readers_never_see_a_torn_record,
        ),
        (
            "a mapped reader lapped over padding sleeps, then counts its loss exactly",
            hardening::a_mapped_reader_lapped_over_padding,
        ),
        (
            "open() of a topic does not wait while a 64 MiB ring is allocated or freed",
            hardening::opens_do_not_wait_for_a_big_ring,
        ),
    ];
    for (name, test) in tests {
        match test(&cx) {
            Ok(()) => println!("BAF-TEST ok {name}"),
            Err(e) => println!("  {e:#}\nBAF-TEST FAILED {name}"),
        }
    }
}
