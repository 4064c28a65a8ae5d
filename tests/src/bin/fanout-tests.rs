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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

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

fn writer(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("open {} for writing", path.display()))
}

/// One `write()` that must be taken whole.
fn put(w: &File, data: &[u8]) -> Result<()> {
    let n = (&*w).write(data).context("write")?;
    ensure!(n == data.len(), "short write: {n} of {}", data.len());
    Ok(())
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
                let flags: u32 = abi::FLAG_RECORD;
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
    ];
    for (name, test) in tests {
        match test(&cx) {
            Ok(()) => println!("BAF-TEST ok {name}"),
            Err(e) => println!("  {e:#}\nBAF-TEST FAILED {name}"),
        }
    }
}
