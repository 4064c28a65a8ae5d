//! Stress and fuzz of the fanout module, run inside the test VM for a
//! bounded time: `fanout-fuzz [--soak SECONDS] [--seed N] [--static DEV]`.
//!
//! Two stress rounds (a 16 KiB and a 1 MiB ring, both allowing lossless
//! readers) run writers (plain, split and batch writes of 1 byte to
//! `record_max`) against lossy readers (record mode, strict record mode,
//! bytes mode, the mapped ring) and lossless readers (record mode, bytes
//! mode in small pieces). Every record carries its writer, counter, length
//! and a checksum, so a torn or mixed record is caught; each reader checks
//! its order and that delivered + lost = written, with every sequence gap
//! counted as loss (and nothing lost by lossless readers). Meanwhile other
//! threads churn topics in a `fuzz/a/b/c` subtree (levels, node moves,
//! readers blocked in `read()` while their topic is removed), open and close
//! the stress topic, seek it with every whence and random arguments, throw
//! random ioctls with bad pointers at topic files and `/dev/baf-control`,
//! and `rmmod` is tried. Then an unprivileged user tries everything, and a
//! userfaultfd stalls `read()`/`write()`/ioctl in a user copy while other
//! threads must get through.
//!
//! Each check prints `BAF-TEST ok NAME` or its error and `BAF-TEST FAILED
//! NAME`. A watchdog thread ends the process with a FAILED line if a phase
//! takes far longer than its budget (something hangs).

use anyhow::{bail, ensure, Context, Result};
use baf::abi::{self, RecordHeader};
use baf::control::{self, CreateOptions};
use baf::device::{records, Batch, Topic};
use baf::mapped::Mapped;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[path = "../common.rs"]
mod common;
use common::*;

// ------------------------------------------------------------ helpers ----

/// xorshift64*: small, fast, reproducible from `--seed`.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn fork(&mut self) -> Self {
        Self::new(self.next())
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn ename(errno: i32) -> String {
    // "Bad address (os error 14)"
    io::Error::from_raw_os_error(errno).to_string()
}

fn expect_errno<T: std::fmt::Debug>(r: io::Result<T>, allowed: &[i32], what: &str) -> Result<()> {
    match r {
        Err(e) if allowed.contains(&errno(&e)) => Ok(()),
        other => bail!(
            "{what}: expected {}, got {other:?}",
            allowed
                .iter()
                .map(|&e| ename(e))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

fn anyhow_errno(e: &anyhow::Error) -> Option<i32> {
    baf::error::errno(e)
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a system value.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn open_nb(path: &Path, read: bool, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(read)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

fn get(f: &File, cap: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; cap];
    let n = (&*f).read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn sysfs_dir(name: &str) -> PathBuf {
    Path::new(control::SYSFS_CLASS).join(name.replace('/', "!"))
}

fn sysfs_u64(name: &str, what: &str) -> Result<u64> {
    let p = sysfs_dir(name).join(what);
    let s = std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("parse {}: {s:?}", p.display()))
}

fn topic_names() -> BTreeSet<String> {
    std::fs::read_dir(control::SYSFS_CLASS)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A topic made fresh (removed first if a failed run left it).
fn fresh_topic(name: &str, ring: u64, lossless: bool) -> Result<PathBuf> {
    let _ = control::remove(name);
    let mut o = CreateOptions::defaults();
    o.ring_size = ring;
    o.lossless = lossless;
    control::create(name, &o).with_context(|| format!("create {name}"))?;
    Ok(control::node_of(name))
}

/// Runs `f` on a thread and waits at most `secs` for it; `None` on a
/// timeout (the thread is left behind, blocked).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).ok()
}

fn join<T>(h: thread::JoinHandle<Result<T>>, what: &str) -> Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("{what} panicked"))?
        .with_context(|| what.to_string())
}

// ------------------------------------------------------------ watchdog ----

struct Phase {
    name: String,
    deadline: Instant,
}

static PHASE: Mutex<Option<Phase>> = Mutex::new(None);

fn start_watchdog() {
    thread::spawn(|| loop {
        thread::sleep(Duration::from_millis(500));
        let guard = PHASE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = guard.as_ref() {
            if Instant::now() > p.deadline {
                println!(
                    "  watchdog: '{}' is far past its time budget: something hangs; aborting\nBAF-TEST FAILED {}",
                    p.name, p.name
                );
                let _ = io::stdout().flush();
                // SAFETY: ends the process at once; no Rust state is used.
                unsafe { libc::_exit(3) };
            }
        }
    });
}

/// Runs one check under the watchdog (`budget` seconds plus a minute of
/// grace) and prints its result.
fn check(name: &str, budget: f64, failed: &mut u32, f: impl FnOnce() -> Result<()>) {
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Phase {
        name: name.to_string(),
        deadline: Instant::now() + Duration::from_secs_f64(budget + 60.0),
    });
    let r = f();
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = None;
    report(name, r, failed);
}

fn report(name: &str, r: Result<()>, failed: &mut u32) {
    match r {
        Ok(()) => println!("BAF-TEST ok {name}"),
        Err(e) => {
            *failed += 1;
            println!("  {e:#}\nBAF-TEST FAILED {name}");
        }
    }
}

// ------------------------------------------------------------ payloads ----

/// A record payload that tells its own story. `len >= 16`: writer, counter,
/// length and a checksum of the rest (little endian), then bytes derived
/// from writer and counter. Shorter: `0xF0 | len`, then bytes derived from
/// the length alone (too short to name its writer; a writer id is below
/// 0xF0, so the first byte tells the two kinds apart in a byte stream).
fn payload(writer: u32, counter: u32, len: usize) -> Vec<u8> {
    if len < 16 {
        return short_payload(len);
    }
    stress_payload(writer, counter, len)
}

fn short_payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if i == 0 {
                0xF0 | len as u8
            } else {
                0x5A ^ (i as u8).wrapping_mul(7) ^ (len as u8).wrapping_mul(13)
            }
        })
        .collect()
}

/// What a checked payload was: a short one, or (writer, counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Short,
    Long(u32, u32),
}

fn check_payload(p: &[u8], writers: u32, record_max: usize) -> Result<Kind> {
    ensure!(
        !p.is_empty() && p.len() <= record_max,
        "record of {} bytes (record_max {record_max})",
        p.len()
    );
    if p.len() < 16 {
        ensure!(
            p == short_payload(p.len()).as_slice(),
            "short record of {} bytes is torn or mixed: {p:02x?}",
            p.len()
        );
        return Ok(Kind::Short);
    }
    check_stress(p, writers).map(|(w, c)| Kind::Long(w, c))
}

/// The length of the record at the start of a byte stream, if its first
/// bytes are there (`None`: need more bytes).
fn stream_len(s: &[u8], record_max: usize) -> Result<Option<usize>> {
    let Some(&b) = s.first() else {
        return Ok(None);
    };
    if b >= 0xF1 {
        return Ok(Some(usize::from(b & 0x0F)));
    }
    if s.len() < 12 {
        return Ok(None);
    }
    let len = le32(s, 8) as usize;
    ensure!(
        (16..=record_max).contains(&len),
        "bytes mode: a record claims {len} bytes (the stream is out of step)"
    );
    Ok(Some(len))
}

/// A random record length from 1 to `max`: often small, sometimes short
/// (below 16), sometimes up to `max` or exactly `max`.
fn rand_len(rng: &mut Rng, max: usize) -> usize {
    let max = max as u64;
    (match rng.below(20) {
        0 => max,
        1 => rng.range(1, 15),
        2..=4 => rng.range(1, max),
        5..=10 => rng.range(16, 2048.min(max)),
        _ => rng.range(16, 200),
    }) as usize
}

/// Per-writer order of delivered records.
struct Order {
    last: Vec<Option<u32>>,
}

impl Order {
    fn new(writers: u32) -> Self {
        Self {
            last: vec![None; writers as usize],
        }
    }
    fn see(&mut self, k: Kind) -> Result<()> {
        if let Kind::Long(w, c) = k {
            let slot = &mut self.last[w as usize];
            if let Some(prev) = *slot {
                ensure!(c > prev, "writer {w}: #{c} delivered after #{prev}");
            }
            *slot = Some(c);
        }
        Ok(())
    }
}

/// Sequence numbers of delivered records: strictly increasing, and every
/// gap is loss.
struct Seqs {
    next: u64,
    gaps: u64,
    jumps: u64,
}

impl Seqs {
    fn new(start: u64) -> Self {
        Self {
            next: start,
            gaps: 0,
            jumps: 0,
        }
    }
    fn see(&mut self, seq: u64) -> Result<()> {
        ensure!(
            seq >= self.next,
            "seq {seq} delivered where {} or later was due (out of order or repeated)",
            self.next
        );
        if seq > self.next {
            self.gaps += seq - self.next;
            self.jumps += 1;
        }
        self.next = seq + 1;
        Ok(())
    }
}

// --------------------------------------------------------------- stress ----

const WRITERS: u32 = 3;

/// What one reader saw.
struct Tally {
    kind: &'static str,
    delivered: u64,
    lost: u64,
    extra: String,
}

struct Shared {
    path: PathBuf,
    record_max: usize,
    ready: Barrier,
    /// The writers are done; `final_seq` is the topic's next seq.
    done: AtomicBool,
    final_seq: AtomicU64,
}

impl Shared {
    fn finished(&self, cursor: u64) -> bool {
        self.done.load(Ordering::Acquire) && cursor >= self.final_seq.load(Ordering::Acquire)
    }
}

/// Opens a reader (non-blocking), waits at the barrier even on error.
fn open_reader(sh: &Shared, flags: u32) -> Result<Topic> {
    let t = (|| -> Result<Topic> {
        let t = Topic::from_file(open_nb(&sh.path, true, false)?);
        if flags != 0 {
            t.set_flags(flags).context("set flags")?;
        }
        Ok(t)
    })();
    sh.ready.wait();
    t
}

/// A record-mode reader; `strict` adds `FLAG_STRICT`, `lossless`
/// `FLAG_LOSSLESS`; `throttle` sleeps now and then so it gets lapped.
fn record_reader(
    sh: &Shared,
    strict: bool,
    lossless: bool,
    throttle: bool,
    mut rng: Rng,
) -> Result<Tally> {
    let mut flags = abi::FLAG_RECORD;
    if strict {
        flags |= abi::FLAG_STRICT;
    }
    if lossless {
        flags |= abi::FLAG_LOSSLESS;
    }
    let t = open_reader(sh, flags)?;
    let start = t.info()?.cursor_seq;
    ensure!(start == 0, "a fresh topic's reader starts at seq {start}");
    let mut order = Order::new(WRITERS);
    let mut seqs = Seqs::new(start);
    let (mut delivered, mut epipes, mut emsgsize) = (0u64, 0u64, 0u64);
    let fd = t.file().as_raw_fd();
    let span_max = abi::record_span(sh.record_max);
    let mut buf = vec![0u8; 4 * span_max];
    loop {
        // Sometimes a buffer too small for the largest record: EMSGSIZE
        // when the next record does not fit, and it stays unread.
        let cap = if rng.chance(10) {
            rng.range(abi::RECORD_HEADER_SIZE as u64, span_max as u64) as usize
        } else {
            rng.range(span_max as u64, buf.len() as u64) as usize
        };
        match t.file().read(&mut buf[..cap]) {
            Ok(0) => bail!("end of file on a live topic"),
            Ok(n) => {
                let mut walked = 0;
                for r in records(&buf[..n]) {
                    ensure!(
                        r.header.len as usize == r.payload.len(),
                        "header length {}",
                        r.header.len
                    );
                    ensure!(r.header.flags == 0, "header flags {:#x}", r.header.flags);
                    order.see(check_payload(r.payload, WRITERS, sh.record_max)?)?;
                    seqs.see(r.header.seq)?;
                    delivered += 1;
                    walked += abi::record_span(r.payload.len());
                }
                ensure!(
                    walked == n,
                    "a record-mode read of {n} bytes holds {walked} bytes of whole records"
                );
                if throttle && rng.chance(30) {
                    thread::sleep(Duration::from_micros(rng.range(100, 3000)));
                }
            }
            Err(e) if errno(&e) == libc::EAGAIN => {
                if sh.finished(t.info()?.cursor_seq) {
                    break;
                }
                poll_in(fd, 50);
            }
            Err(e) if errno(&e) == libc::EPIPE && strict => epipes += 1,
            Err(e) if errno(&e) == libc::EMSGSIZE => {
                ensure!(cap < span_max, "EMSGSIZE with a {cap}-byte buffer");
                emsgsize += 1;
            }
            Err(e) => return Err(e).context("read"),
        }
    }
    let i = t.info()?;
    // Loss after the last delivered record (none expected: a lap always
    // leaves records to read) is loss too.
    seqs.gaps += i.cursor_seq.saturating_sub(seqs.next);
    ensure!(
        i.lost == seqs.gaps,
        "the kernel counts {} lost, the sequence gaps add up to {}",
        i.lost,
        seqs.gaps
    );
    if lossless {
        ensure!(
            i.lost == 0 && i.flags & abi::FLAG_LOSSLESS != 0,
            "a lossless reader lost {} records (flags {:#x})",
            i.lost,
            i.flags
        );
    }
    if strict {
        ensure!(
            epipes >= seqs.jumps && (epipes > 0) == (i.lost > 0),
            "strict: {epipes} EPIPE for {} gaps ({} lost)",
            seqs.jumps,
            i.lost
        );
    }
    let kind = match (lossless, strict, throttle) {
        (true, _, _) => "lossless record",
        (_, true, _) => "strict record",
        (_, _, true) => "throttled record",
        _ => "record",
    };
    Ok(Tally {
        kind,
        delivered,
        lost: i.lost,
        extra: format!("{epipes} EPIPE, {emsgsize} EMSGSIZE"),
    })
}

/// A bytes-mode reader. Lossy: a buffer of at least `record_max`, so every
/// read holds whole records. Lossless: a small random buffer, so records
/// come in pieces (nothing is lost, so the stream stays in step).
fn byte_reader(sh: &Shared, lossless: bool, mut rng: Rng) -> Result<Tally> {
    let t = open_reader(sh, if lossless { abi::FLAG_LOSSLESS } else { 0 })?;
    let fd = t.file().as_raw_fd();
    let mut order = Order::new(WRITERS);
    let mut delivered = 0u64;
    let mut stream: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 2 * sh.record_max];
    loop {
        let cap = if lossless {
            rng.range(1, 5000) as usize
        } else {
            rng.range(sh.record_max as u64, buf.len() as u64) as usize
        };
        match t.file().read(&mut buf[..cap]) {
            Ok(0) => bail!("end of file on a live topic"),
            Ok(n) => {
                stream.extend_from_slice(&buf[..n]);
                let mut at = 0;
                while let Some(len) = stream_len(&stream[at..], sh.record_max)? {
                    if stream.len() - at < len {
                        break;
                    }
                    order.see(check_payload(
                        &stream[at..at + len],
                        WRITERS,
                        sh.record_max,
                    )?)?;
                    delivered += 1;
                    at += len;
                }
                stream.drain(..at);
                ensure!(
                    lossless || stream.is_empty(),
                    "bytes mode: a read with room for any record ended inside one ({} bytes left)",
                    stream.len()
                );
            }
            Err(e) if errno(&e) == libc::EAGAIN => {
                if sh.finished(t.info()?.cursor_seq) {
                    break;
                }
                poll_in(fd, 50);
            }
            Err(e) => return Err(e).context("read"),
        }
    }
    ensure!(
        stream.is_empty(),
        "bytes mode: {} bytes of a record, and the rest never came",
        stream.len()
    );
    let i = t.info()?;
    if lossless {
        ensure!(
            i.lost == 0,
            "a lossless bytes reader lost {} records",
            i.lost
        );
    }
    Ok(Tally {
        kind: if lossless { "lossless bytes" } else { "bytes" },
        delivered,
        lost: i.lost,
        extra: String::new(),
    })
}

/// A reader of the mapped ring (`libbaf::mapped`), throttled now and then.
fn mapped_reader(sh: &Shared, mut rng: Rng) -> Result<Tally> {
    let t = open_reader(sh, 0)?;
    let mut m = Mapped::new(&t).context("map the ring")?;
    let fd = t.file().as_raw_fd();
    let mut order = Order::new(WRITERS);
    let mut seqs = Seqs::new(m.next_seq());
    let (mut delivered, mut lost) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut got: Vec<(RecordHeader, Vec<u8>)> = Vec::new();
    loop {
        got.clear();
        let p = m.read_into(&mut out, rng.range(1, 64), |_, h, pl| {
            got.push((*h, pl.to_vec()));
        })?;
        out.clear();
        lost += p.lost;
        for (h, pl) in &got {
            ensure!(h.len as usize == pl.len(), "header length {}", h.len);
            order.see(check_payload(pl, WRITERS, sh.record_max)?)?;
            seqs.see(h.seq)?;
            delivered += 1;
        }
        ensure!(!p.ended, "the mapped ring says the topic was removed");
        if p.records == 0 {
            if sh.finished(m.next_seq()) {
                break;
            }
            if m.prepare_wait(&t)? {
                poll_in(fd, 50);
            }
        } else if rng.chance(20) {
            thread::sleep(Duration::from_micros(rng.range(100, 2000)));
        }
    }
    m.report_loss(&t)?;
    let i = t.info()?;
    ensure!(
        lost == seqs.gaps && i.lost == lost,
        "mapped: the consumer counted {lost} lost, the gaps add up to {}, the kernel counts {}",
        seqs.gaps,
        i.lost
    );
    Ok(Tally {
        kind: "mapped",
        delivered,
        lost,
        extra: String::new(),
    })
}

/// A writer: plain records, writes longer than `record_max` (split into
/// records, each a whole payload), and batches. Returns records written.
fn stress_writer(sh: &Shared, id: u32, ring: u64, stop: &AtomicBool, mut rng: Rng) -> Result<u64> {
    let files = (|| -> Result<(File, File)> {
        let plain = writer(&sh.path)?;
        let batch = writer(&sh.path)?;
        Topic::from_file(batch.try_clone()?)
            .set_flags(abi::FLAG_BATCH)
            .context("FLAG_BATCH")?;
        Ok((plain, batch))
    })();
    sh.ready.wait();
    let (plain, batch_file) = files?;
    let max = sh.record_max;
    let mut counter = 0u32;
    let mut batch = Batch::new();
    while !stop.load(Ordering::Relaxed) {
        match rng.below(10) {
            0..=5 => {
                let len = rand_len(&mut rng, max);
                put(&plain, &payload(id, counter, len))?;
                counter += 1;
            }
            6..=8 => {
                batch.clear();
                for _ in 0..rng.range(1, 16) {
                    let len = rand_len(&mut rng, max);
                    if batch.len() + Batch::frame_len(len) > (ring / 2) as usize {
                        break;
                    }
                    batch.push(&payload(id, counter, len))?;
                    counter += 1;
                }
                if !batch.is_empty() {
                    put(&batch_file, batch.as_bytes()).context("batch write")?;
                }
            }
            _ => {
                // Whole records of `record_max`, then a tail: the kernel
                // splits the write exactly there.
                let mut data = Vec::new();
                for _ in 0..rng.range(1, 2) {
                    data.extend(payload(id, counter, max));
                    counter += 1;
                }
                data.extend(payload(id, counter, rand_len(&mut rng, max)));
                counter += 1;
                put(&plain, &data).context("split write")?;
            }
        }
    }
    Ok(u64::from(counter))
}

/// The stress topic other threads work on while a round runs.
static CURRENT: Mutex<Option<(PathBuf, bool)>> = Mutex::new(None);

fn stress_round(
    name: &str,
    ring: u64,
    secs: f64,
    rng: &mut Rng,
    mid: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let path = fresh_topic(name, ring, true)?;
    let record_max = Topic::open(&path, false, true)?.info()?.record_max as usize;
    ensure!(
        record_max as u64 == ring / 4,
        "record_max {record_max} for a {ring}-byte ring"
    );
    let readers: Vec<&str> = vec![
        "record",
        "throttled",
        "strict",
        "bytes",
        "mapped",
        "lossless-record",
        "lossless-bytes",
    ];
    let sh = Arc::new(Shared {
        path: path.clone(),
        record_max,
        ready: Barrier::new(readers.len() + WRITERS as usize + 1),
        done: AtomicBool::new(false),
        final_seq: AtomicU64::new(u64::MAX),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut rh = Vec::new();
    for kind in readers {
        let (sh, r) = (sh.clone(), rng.fork());
        rh.push(thread::spawn(move || match kind {
            "record" => record_reader(&sh, false, false, false, r),
            "throttled" => record_reader(&sh, false, false, true, r),
            "strict" => record_reader(&sh, true, false, true, r),
            "bytes" => byte_reader(&sh, false, r),
            "mapped" => mapped_reader(&sh, r),
            "lossless-record" => record_reader(&sh, false, true, false, r),
            _ => byte_reader(&sh, true, r),
        }));
    }
    let mut wh = Vec::new();
    for id in 0..WRITERS {
        let (sh, stop, r) = (sh.clone(), stop.clone(), rng.fork());
        wh.push(thread::spawn(move || {
            stress_writer(&sh, id, ring, &stop, r)
        }));
    }
    sh.ready.wait();
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.clone(), true));
    thread::sleep(Duration::from_secs_f64(secs / 2.0));
    let mid_result = mid();
    thread::sleep(Duration::from_secs_f64(secs / 2.0));
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    let mut errors = Vec::new();
    for (id, h) in wh.into_iter().enumerate() {
        match join(h, &format!("writer {id}")) {
            Ok(n) => written += n,
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let next = Topic::open(&path, false, true)?.info()?.next_seq;
    sh.final_seq.store(next, Ordering::Release);
    sh.done.store(true, Ordering::Release);
    let mut summary = Vec::new();
    for h in rh {
        match join(h, "reader") {
            Ok(t) => {
                if errors.is_empty() && t.delivered + t.lost != written {
                    errors.push(format!(
                        "{} reader: delivered {} + lost {} != written {written}",
                        t.kind, t.delivered, t.lost
                    ));
                }
                if t.kind.starts_with("lossless") && t.lost != 0 {
                    errors.push(format!("{} reader lost {}", t.kind, t.lost));
                }
                summary.push(format!(
                    "{} {}+{} lost{}",
                    t.kind,
                    t.delivered,
                    t.lost,
                    if t.extra.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", t.extra)
                    }
                ));
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() && next != written {
        errors.push(format!(
            "the topic got {next} records, the writers wrote {written}"
        ));
    }
    let _ = control::remove(name);
    println!(
        "  {name}: {written} records by {WRITERS} writers into {} KiB; readers: {}",
        ring / 1024,
        summary.join(", ")
    );
    if let Err(e) = mid_result {
        errors.push(format!("{e:#}"));
    }
    ensure!(errors.is_empty(), "{}", errors.join("; "));
    ensure!(written > 0, "nothing was written");
    Ok(())
}

// ------------------------------------------------------------- churn ----

const CHURN: [&str; 5] = ["fuzz/a", "fuzz/a/b", "fuzz/a/b/c", "fuzz/a/d", "fuzz/e/f"];

fn churn_opts(name: &str, ring: u64) -> CreateOptions {
    let mut o = CreateOptions::defaults();
    o.ring_size = ring;
    o.lossless = name.ends_with('d');
    o
}

fn is_topic(name: &str) -> bool {
    sysfs_dir(name).exists()
}

/// Readers blocked in `read()` on `name` must get what was written, then
/// end of file, once it is removed.
fn eof_round(name: &str, rng: &mut Rng) -> Result<()> {
    let path = control::node_of(name);
    let mut handles = Vec::new();
    for k in 0..3 {
        let t = Topic::open(&path, false, false)?;
        if k == 1 {
            t.set_flags(abi::FLAG_RECORD)?;
        }
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut all = Vec::new();
            let r = loop {
                match get(t.file(), 65536) {
                    Ok(b) if b.is_empty() => break Ok(all),
                    Ok(b) => all.push(b),
                    Err(e) => break Err(e),
                }
            };
            let _ = tx.send(r);
        });
        handles.push((k, rx));
    }
    thread::sleep(Duration::from_millis(rng.range(20, 120)));
    let w = writer(&path)?;
    let n = rng.below(4);
    let mut want = Vec::new();
    for i in 0..n {
        let p = payload(7, i as u32, rand_len(rng, 512));
        put(&w, &p)?;
        want.push(p);
    }
    thread::sleep(Duration::from_millis(rng.range(0, 50)));
    control::remove(name).with_context(|| format!("remove {name}"))?;
    expect_errno((&w).write(b"late"), &[libc::ENODEV], "write after removal")?;
    for (k, rx) in handles {
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| {
                anyhow::anyhow!(
                    "a reader blocked in read() on {name} got no end of file within 10 s of its removal"
                )
            })?
            .with_context(|| format!("reader {k} of {name}"))?;
        let payloads: Vec<u8> = if k == 1 {
            got.iter()
                .flat_map(|b| records(b).map(|r| r.payload.to_vec()).collect::<Vec<_>>())
                .flatten()
                .collect()
        } else {
            got.concat()
        };
        ensure!(
            payloads == want.concat(),
            "reader {k} of {name}: got {} bytes before EOF, want {}",
            payloads.len(),
            want.concat().len()
        );
    }
    Ok(())
}

/// Creation and removal in a subtree with levels, exact results (this
/// thread alone touches these names), node moves for open files, and
/// blocked readers woken by removal.
fn churn(stop: &AtomicBool, mut rng: Rng) -> Result<String> {
    for n in CHURN.iter().rev() {
        let _ = control::remove(n);
    }
    let mut exists: BTreeSet<&str> = BTreeSet::new();
    let (mut creates, mut removes, mut eofs, mut moves) = (0u64, 0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let name = CHURN[rng.below(CHURN.len() as u64) as usize];
        match rng.below(7) {
            0 | 1 => {
                let r = control::create(name, &churn_opts(name, 16384));
                let want = if exists.contains(name) {
                    control::Created::Existed
                } else {
                    control::Created::New
                };
                let got = r.with_context(|| format!("create {name}"))?;
                ensure!(got == want, "create {name}: {got:?}, want {want:?}");
                exists.insert(name);
                let node = control::node_of(name);
                let meta = std::fs::metadata(&node)
                    .with_context(|| format!("the node of {name} ({})", node.display()))?;
                ensure!(
                    meta.file_type().is_char_device(),
                    "{} is not a char device",
                    node.display()
                );
                creates += 1;
            }
            2 => {
                if exists.contains(name) {
                    let r = control::create(name, &churn_opts(name, 32768));
                    match r {
                        Err(e) if anyhow_errno(&e) == Some(libc::EEXIST) => {}
                        other => bail!("create {name} with other settings: {other:?}, want EEXIST"),
                    }
                }
            }
            3 => {
                let r = control::remove(name);
                if exists.remove(name) {
                    r.with_context(|| format!("remove {name}"))?;
                    ensure!(!is_topic(name), "{name} is still in sysfs after removal");
                    removes += 1;
                } else {
                    match r {
                        Err(e) if anyhow_errno(&e) == Some(libc::ENOENT) => {}
                        other => bail!("remove of missing {name}: {other:?}, want ENOENT"),
                    }
                }
            }
            4 => {
                if !exists.contains(name) {
                    control::create(name, &churn_opts(name, 16384))?;
                }
                exists.remove(name);
                eof_round(name, &mut rng)?;
                eofs += 1;
            }
            5 => {
                // An open file of fuzz/a keeps working while its node moves
                // to fuzz/a/@ and back.
                if exists.contains("fuzz/a") && !exists.contains("fuzz/a/b") {
                    let r = Topic::from_file(open_nb(&control::node_of("fuzz/a"), true, false)?);
                    control::create("fuzz/a/b", &churn_opts("fuzz/a/b", 16384))?;
                    exists.insert("fuzz/a/b");
                    let moved = control::node_of("fuzz/a");
                    ensure!(
                        moved.ends_with("fuzz/a/@"),
                        "fuzz/a has a topic below it but its node is {}",
                        moved.display()
                    );
                    put(&writer(&moved)?, b"moved")?;
                    ensure!(
                        get(r.file(), 64)? == b"moved",
                        "the open file lost its topic"
                    );
                    control::remove("fuzz/a/b")?;
                    exists.remove("fuzz/a/b");
                    if !exists.contains("fuzz/a/b/c") && !exists.contains("fuzz/a/d") {
                        let back = control::node_of("fuzz/a");
                        ensure!(
                            back.ends_with("fuzz/a") && back.exists(),
                            "fuzz/a's node did not move back: {}",
                            back.display()
                        );
                        put(&writer(&back)?, b"back")?;
                        ensure!(
                            get(r.file(), 64)? == b"back",
                            "the open file lost its topic"
                        );
                    }
                    moves += 1;
                }
            }
            _ => {
                if exists.contains(name) {
                    let node = control::node_of(name);
                    let r = open_nb(&node, true, false)?;
                    put(&writer(&node)?, b"ping")?;
                    ensure!(get(&r, 64)? == b"ping", "{name}: a write was not read back");
                }
            }
        }
        thread::sleep(Duration::from_millis(rng.range(0, 10)));
    }
    for n in CHURN.iter().rev() {
        if exists.remove(n) {
            control::remove(n)?;
        }
    }
    for n in CHURN {
        ensure!(!is_topic(n), "{n} is left over");
    }
    ensure!(
        creates > 0 && removes > 0 && eofs > 0,
        "too little churn: {creates} creates, {removes} removes, {eofs} EOF rounds"
    );
    Ok(format!(
        "{creates} creates, {removes} removes, {eofs} rounds of blocked readers woken by removal, {moves} node moves"
    ))
}

/// Opens and closes the current stress topic in every mode, maps it, sets
/// flags (a short-lived lossless reader included), never writes.
fn opener(stop: &AtomicBool, mut rng: Rng) -> Result<String> {
    let (mut opens, mut maps, mut lossless) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((path, allows_lossless)) = cur else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        let (rd, wr) = match rng.below(3) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        let f = match OpenOptions::new()
            .read(rd)
            .write(wr)
            .custom_flags(if rng.chance(50) { libc::O_NONBLOCK } else { 0 })
            .open(&path)
        {
            Ok(f) => f,
            // The round ended and the topic went away meanwhile.
            Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENODEV) => continue,
            Err(e) => return Err(e).context("open the stress topic"),
        };
        opens += 1;
        let t = Topic::from_file(f);
        let nb = open_nb(&path, true, false);
        if rd && rng.chance(30) {
            drop(Mapped::new(&t).context("map")?);
            maps += 1;
        }
        if rng.chance(40) {
            let r = t.set_flags(abi::FLAG_LOSSLESS | abi::FLAG_RECORD);
            match (rd, allows_lossless, r) {
                (true, true, Ok(())) => {
                    lossless += 1;
                    // Read a little as a lossless reader, then go.
                    if let Ok(nb) = nb {
                        let nbt = Topic::from_file(nb);
                        if nbt.set_flags(abi::FLAG_LOSSLESS).is_ok() {
                            let _ = get(nbt.file(), 4096);
                        }
                    }
                }
                (false, _, Err(e)) if errno(&e) == libc::EBADF => {}
                (true, false, Err(e)) if errno(&e) == libc::EPERM => {}
                // The round ended and the topic was removed meanwhile.
                (_, _, Err(e)) if errno(&e) == libc::ENODEV => {}
                (_, _, r) => {
                    bail!("FLAG_LOSSLESS (read {rd}, topic allows {allows_lossless}): {r:?}")
                }
            }
        }
        if rng.chance(20) {
            let _ = t.claim_publisher();
        }
        let i = t.info()?;
        ensure!(i.abi_version == abi::ABI_VERSION, "abi {}", i.abi_version);
        if rng.chance(30) {
            thread::sleep(Duration::from_millis(rng.range(1, 20)));
        }
    }
    Ok(format!(
        "{opens} opens, {maps} mappings, {lossless} short-lived lossless readers"
    ))
}

fn seek_raw(fd: i32, whence: u32, reserved: u32, arg: u64) -> io::Result<u64> {
    let mut s = abi::Seek {
        whence,
        reserved,
        arg,
    };
    // SAFETY: IOC_SEEK takes a pointer to a live Seek.
    let rc = unsafe { libc::ioctl(fd, abi::IOC_SEEK as _, &mut s) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(s.arg)
    }
}

/// Seeks the current stress topic with every whence (and bad ones), random
/// arguments; checks where each lands against the topic's bounds before
/// and after, and that the next read starts there.
fn seeker(stop: &AtomicBool, mut rng: Rng) -> Result<String> {
    let mut n = 0u64;
    let mut by = [0u64; 6];
    while !stop.load(Ordering::Relaxed) {
        let cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((path, _)) = cur else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        let Ok(f) = open_nb(&path, true, false) else {
            continue;
        };
        let t = Topic::from_file(f);
        t.set_flags(abi::FLAG_RECORD)?;
        let fd = t.file().as_raw_fd();
        let mut buf = vec![0u8; 4 * abi::record_span(t.info()?.record_max as usize)];
        for _ in 0..50 {
            let b = t.info()?;
            let whence = match rng.below(10) {
                0 => rng.next() as u32 | 4,
                k => (k % 4) as u32,
            };
            let reserved = if rng.chance(5) {
                rng.next() as u32 | 1
            } else {
                0
            };
            let arg = match rng.below(6) {
                0 => rng.next(),
                1 => rng.below(4),
                2 => b.next_seq.saturating_sub(rng.below(200)),
                3 => b.oldest_seq.saturating_sub(rng.below(3)),
                4 => b.next_seq + rng.below(3),
                _ => rng.range(b.oldest_seq, b.next_seq),
            };
            let r = seek_raw(fd, whence, reserved, arg);
            let a = t.info()?;
            let ctx = || {
                format!(
                    "seek whence {whence} reserved {reserved} arg {arg} (oldest {}..{}, next {}..{}): {r:?}",
                    b.oldest_seq, a.oldest_seq, b.next_seq, a.next_seq
                )
            };
            by[whence.min(4) as usize + usize::from(reserved != 0)] += 1;
            n += 1;
            let s = match (&r, whence) {
                _ if reserved != 0 || whence > 3 => {
                    ensure!(
                        matches!(&r, Err(e) if errno(e) == libc::EINVAL),
                        "{}: want EINVAL",
                        ctx()
                    );
                    continue;
                }
                (Err(e), abi::SEEK_SEQ) if errno(e) == libc::ERANGE => {
                    ensure!(arg < a.oldest_seq || arg > b.next_seq, "{}", ctx());
                    continue;
                }
                (Ok(s), abi::SEEK_SEQ) => {
                    ensure!(
                        *s == arg && arg >= b.oldest_seq && arg <= a.next_seq,
                        "{}",
                        ctx()
                    );
                    *s
                }
                (Ok(s), abi::SEEK_OLDEST) => {
                    ensure!((b.oldest_seq..=a.oldest_seq).contains(s), "{}", ctx());
                    *s
                }
                (Ok(s), abi::SEEK_NOW) => {
                    ensure!((b.next_seq..=a.next_seq).contains(s), "{}", ctx());
                    *s
                }
                (Ok(s), _) => {
                    let lo = b.oldest_seq.max(b.next_seq.saturating_sub(arg));
                    let hi = a.oldest_seq.max(a.next_seq.saturating_sub(arg));
                    ensure!((lo..=hi).contains(s), "{}: want {lo}..={hi}", ctx());
                    *s
                }
                (Err(_), _) => bail!("{}", ctx()),
            };
            ensure!(
                a.cursor_seq == s,
                "{}: INFO says the cursor is at {}",
                ctx(),
                a.cursor_seq
            );
            if rng.chance(30) {
                match t.file().read(&mut buf) {
                    Ok(n) => {
                        if let Some(r) = records(&buf[..n]).next() {
                            ensure!(
                                r.header.seq >= s,
                                "{}: then read seq {}",
                                ctx(),
                                r.header.seq
                            );
                        }
                    }
                    Err(e) if errno(&e) == libc::EAGAIN => {}
                    Err(e) => return Err(e).context("read after a seek"),
                }
            }
        }
    }
    ensure!(n > 0, "no seek was made");
    Ok(format!(
        "{n} seeks (oldest/last/seq/now/bad whence/reserved: {by:?})"
    ))
}

// --------------------------------------------------------- ioctl fuzz ----

/// Memory for bad pointers: a read-only page, an inaccessible one, and a
/// writable page followed by an inaccessible one.
struct Pages {
    ro: usize,
    none: usize,
    rw: usize,
    /// The end of `rw`: the next page is inaccessible.
    rw_end: usize,
    page: usize,
}

impl Pages {
    fn new(rng: &mut Rng) -> Result<Self> {
        let page = page_size();
        // Never unmapped: the process keeps it to the end, so its addresses
        // are never reused.
        let base = anon_map(4 * page)?;
        let base = base as usize;
        // Bytes with the high bit set: never a valid topic name, so no
        // random buffer can make a topic the cleanup does not know.
        // SAFETY: the first page is ours and writable.
        let ro = unsafe { std::slice::from_raw_parts_mut(base as *mut u8, page) };
        for b in ro.iter_mut() {
            *b = rng.next() as u8 | 0x80;
        }
        // SAFETY: our own pages.
        let ok = unsafe {
            libc::mprotect(base as *mut _, page, libc::PROT_READ) == 0
                && libc::mprotect((base + page) as *mut _, page, libc::PROT_NONE) == 0
                && libc::mprotect((base + 3 * page) as *mut _, page, libc::PROT_NONE) == 0
        };
        ensure!(ok, "mprotect: {}", io::Error::last_os_error());
        Ok(Self {
            ro: base,
            none: base + page,
            rw: base + 2 * page,
            rw_end: base + 3 * page,
            page,
        })
    }

    /// Fills the writable page with random bytes (`high`: bytes that never
    /// make a topic name).
    fn scramble(&self, rng: &mut Rng, high: bool) {
        // SAFETY: the writable page is ours; no reference to it is kept.
        let rw = unsafe { std::slice::from_raw_parts_mut(self.rw as *mut u8, self.page) };
        for b in rw.iter_mut() {
            *b = rng.next() as u8 | if high { 0x80 } else { 0 };
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ptr {
    /// Null and the low pages no process can map.
    Low,
    /// Kernel and non-canonical addresses.
    Kernel,
    /// An inaccessible page.
    NoAccess,
    /// Straddles the end of a writable page: too few bytes for the struct.
    Straddle,
    /// A read-only page.
    ReadOnly,
    /// Random bytes in writable memory.
    Random,
    /// A plausible struct in writable memory.
    Plausible,
}

impl Ptr {
    fn bad(self) -> bool {
        matches!(self, Ptr::Low | Ptr::Kernel | Ptr::NoAccess | Ptr::Straddle)
    }
}

const TOPIC_IOCS: [(u32, usize); 7] = [
    (abi::IOC_SET_FLAGS, 4),
    (abi::IOC_SEEK, size_of::<abi::Seek>()),
    (abi::IOC_INFO, size_of::<abi::Info>()),
    (abi::IOC_INFO_V2, abi::INFO_V2_SIZE),
    (abi::IOC_WAIT_READERS, 4),
    (abi::IOC_MAPPED_SYNC, size_of::<abi::MappedSync>()),
    (abi::IOC_CLAIM_PUBLISHER, 0),
];
const CONTROL_IOCS: [(u32, usize); 3] = [
    (abi::IOC_CREATE, size_of::<abi::TopicSpec>()),
    (abi::IOC_CREATE_V2, abi::TOPIC_SPEC_V2_SIZE),
    (abi::IOC_REMOVE, size_of::<abi::TopicName>()),
];

fn known_size(cmd: u32) -> Option<usize> {
    TOPIC_IOCS
        .iter()
        .chain(CONTROL_IOCS.iter())
        .find(|(c, _)| *c == cmd)
        .map(|&(_, s)| s)
}

/// Types of ioctl numbers the VFS handles itself for any file (`FIONBIO`,
/// `FIFREEZE`, `FIGETBSZ`, `FS_IOC_*`, `FICLONE`...): never sent at random.
const VFS_TYPES: [u32; 6] = [0x00, 0x15, 0x54, 0x58, 0x66, 0x94];

fn random_cmd(rng: &mut Rng, control: bool) -> u32 {
    match rng.below(10) {
        0..=3 => {
            let list: &[(u32, usize)] = if control == rng.chance(80) {
                &CONTROL_IOCS
            } else {
                &TOPIC_IOCS
            };
            list[rng.below(list.len() as u64) as usize].0
        }
        4..=6 => {
            let dir = rng.below(4) as u32;
            let nr = rng.below(0x20) as u32;
            let most = if rng.chance(50) { 128 } else { 0x4000 };
            abi::ioc(dir, nr, rng.below(most) as usize)
        }
        _ => loop {
            let c = rng.next() as u32;
            if !VFS_TYPES.contains(&((c >> 8) & 0xff)) && (c >> 8) & 0xff != abi::IOC_TYPE {
                break c;
            }
        },
    }
}

/// Structured creates and removes under fuzz/r*: any outcome the ABI
/// lists, and the cleanup knows every name.
const FUZZ_NAMES: [&str; 4] = ["fuzz/r0", "fuzz/r1", "fuzz/r1/x", "fuzz/r2"];

fn plausible(rng: &mut Rng, cmd: u32, info: &abi::Info, buf: usize) {
    let poke = |off: usize, bytes: &[u8]| {
        // SAFETY: `buf` is inside the writable page with room for the
        // largest struct (checked by the caller's offset choice).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (buf + off) as *mut u8, bytes.len())
        };
    };
    let near = |rng: &mut Rng| match rng.below(4) {
        0 => info.next_seq.saturating_sub(rng.below(50)),
        1 => info.cursor_seq + rng.below(3),
        2 => info.oldest_seq,
        _ => rng.next(),
    };
    match cmd {
        abi::IOC_SET_FLAGS => {
            let f = rng.below(16) as u32
                | if rng.chance(10) {
                    1 << rng.below(32)
                } else {
                    0
                };
            poke(0, &f.to_ne_bytes());
        }
        abi::IOC_SEEK => {
            let w = if rng.chance(90) {
                rng.below(4) as u32
            } else {
                rng.next() as u32
            };
            poke(0, &w.to_ne_bytes());
            poke(4, &(if rng.chance(90) { 0u32 } else { 1 }).to_ne_bytes());
            poke(8, &near(rng).to_ne_bytes());
        }
        abi::IOC_WAIT_READERS => poke(0, &(rng.below(3) as u32).to_ne_bytes()),
        abi::IOC_MAPPED_SYNC => {
            poke(0, &near(rng).to_ne_bytes());
            poke(8, &rng.below(4).to_ne_bytes());
        }
        abi::IOC_CREATE | abi::IOC_CREATE_V2 => {
            let name = FUZZ_NAMES[rng.below(FUZZ_NAMES.len() as u64) as usize];
            let spec = abi::TopicSpec {
                name: abi::TopicName::new(name.as_bytes()).unwrap_or(abi::TopicName {
                    bytes: [0; abi::NAME_MAX + 8],
                }),
                ring_size: match rng.below(7) {
                    0 => 0,
                    1 => 16384,
                    2 => 65536,
                    3 => 1000,
                    4 => 1 << 40,
                    5 => 8192,
                    _ => rng.next(),
                },
                record_max: match rng.below(4) {
                    0 => 0,
                    1 => 4096,
                    _ => rng.next() as u32 % 70000,
                },
                mode: if rng.chance(80) {
                    0o640
                } else {
                    rng.next() as u32
                },
                uid: if rng.chance(80) { 0 } else { rng.next() as u32 },
                gid: if rng.chance(80) { 0 } else { rng.next() as u32 },
                flags: rng.below(3) as u32,
                stall_ms: if rng.chance(70) {
                    0
                } else {
                    rng.next() as u32 % 4_000_000
                },
            };
            // SAFETY: TopicSpec is repr(C) plain data without padding.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&spec as *const abi::TopicSpec).cast::<u8>(),
                    size_of::<abi::TopicSpec>(),
                )
            };
            poke(0, bytes);
        }
        abi::IOC_REMOVE => {
            let name = match rng.below(6) {
                0 => "fanout3",
                1 => "baf-control",
                2 => "fuzz/none",
                k => FUZZ_NAMES[k as usize % FUZZ_NAMES.len()],
            };
            let n = abi::TopicName::new(name.as_bytes())
                .map(|n| n.bytes)
                .unwrap_or([0; 72]);
            poke(0, &n);
        }
        _ => {}
    }
}

struct FuzzFd {
    file: File,
    control: bool,
    read: bool,
    write: bool,
    /// On the static topic: MAPPED_SYNC loss it may legitimately add.
    on_static: bool,
}

fn raw_ioctl(fd: i32, cmd: u32, arg: usize) -> (isize, i32) {
    // SAFETY: a fuzzing ioctl: `arg` is a number the kernel must check; it
    // points either nowhere valid or into our fuzz pages, which nothing
    // else in this process uses.
    let rc = unsafe { libc::ioctl(fd, cmd as _, arg) };
    let e = if rc < 0 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    (rc as isize, e)
}

/// Random ioctls (and reads and writes) with random numbers and bad
/// pointers on topic files (a fuzz topic and the static topic) and on the
/// control device. Every outcome is checked against the ABI; the static
/// topic must end up unchanged.
fn ioctl_fuzz(stop: &AtomicBool, static_topic: &Path, mut rng: Rng) -> Result<String> {
    let pages = Pages::new(&mut rng)?;
    let fuzz_path = fresh_topic("fuzz/ioctl", 16384, true)?;
    let static_name = static_topic
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let records_before = sysfs_u64(&static_name, "records")?;
    let lost_before = sysfs_u64(&static_name, "lost")?;
    let readers_before = sysfs_u64(&static_name, "readers")?;
    let mut allowance = 0u64;
    let mut calls = 0u64;
    let mut outcomes: std::collections::BTreeMap<i32, u64> = Default::default();
    let mut fds: Vec<FuzzFd> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if fds.is_empty() || rng.chance(2) {
            fds.clear();
            for (path, on_static) in [(&fuzz_path, false), (&static_topic.to_path_buf(), true)] {
                for (r, w) in [(true, false), (false, true), (true, true)] {
                    fds.push(FuzzFd {
                        file: open_nb(path, r, w)
                            .with_context(|| format!("open {}", path.display()))?,
                        control: false,
                        read: r,
                        write: w,
                        on_static,
                    });
                }
            }
            for w in [false, true] {
                fds.push(FuzzFd {
                    file: open_nb(&control::control_path(), true, w)?,
                    control: true,
                    read: true,
                    write: w,
                    on_static: false,
                });
            }
        }
        let f = &fds[rng.below(fds.len() as u64) as usize];
        let fd = f.file.as_raw_fd();
        calls += 1;
        if calls % 64 == 0 {
            // Leave the two CPUs to the stress now and then.
            thread::sleep(Duration::from_millis(1));
        }
        if !f.control && rng.chance(15) {
            // A read or write with a random buffer.
            fuzz_rw(f, &pages, &mut rng)?;
            continue;
        }
        let cmd = random_cmd(&mut rng, f.control);
        let size = known_size(cmd);
        let kind = match rng.below(7) {
            0 => Ptr::Low,
            1 => Ptr::Kernel,
            2 => Ptr::NoAccess,
            3 => Ptr::Straddle,
            4 => Ptr::ReadOnly,
            5 => Ptr::Random,
            _ => Ptr::Plausible,
        };
        let kind = if kind == Ptr::Straddle && size.unwrap_or(0) < 2 {
            Ptr::NoAccess
        } else {
            kind
        };
        let info_before = if f.control {
            None
        } else {
            Topic::from_file(f.file.try_clone()?).info().ok()
        };
        let arg = match kind {
            Ptr::Low => [0usize, 8, 0x1000, 0xfff0][rng.below(4) as usize],
            Ptr::Kernel => [
                0xffff_8880_0000_0000usize,
                0xffff_ffff_ff60_0000,
                0x8000_0000_0000_0000,
                usize::MAX - 7,
            ][rng.below(4) as usize],
            Ptr::NoAccess => pages.none + rng.below(pages.page as u64) as usize,
            Ptr::Straddle => pages.rw_end - rng.range(1, size.unwrap_or(2) as u64 - 1) as usize,
            Ptr::ReadOnly => pages.ro + rng.below(256) as usize,
            Ptr::Random | Ptr::Plausible => {
                pages.scramble(&mut rng, f.control);
                let at = pages.rw + rng.below(256) as usize;
                if kind == Ptr::Plausible {
                    let info = info_before.unwrap_or_default();
                    plausible(&mut rng, cmd, &info, at);
                }
                at
            }
        };
        let (rc, e) = raw_ioctl(fd, cmd, arg);
        *outcomes.entry(e).or_default() += 1;
        let what = || {
            format!(
                "ioctl {cmd:#010x} on a {} file (read {}, write {}) with a {kind:?} pointer {arg:#x}: rc {rc}, {}",
                if f.control { "control" } else if f.on_static { "static topic" } else { "topic" },
                f.read,
                f.write,
                if rc < 0 { ename(e) } else { "ok".into() }
            )
        };
        // The outcome the ABI allows.
        if f.control && !f.write {
            ensure!(
                rc == -1 && e == libc::EBADF,
                "{}: want EBADF (read-only control file)",
                what()
            );
            continue;
        }
        if size.is_none() {
            ensure!(rc == -1 && e == libc::ENOTTY, "{}: want ENOTTY", what());
            continue;
        }
        let is_control_cmd = CONTROL_IOCS.iter().any(|(c, _)| *c == cmd);
        if is_control_cmd != f.control {
            ensure!(
                rc == -1 && e == libc::ENOTTY,
                "{}: want ENOTTY (not this device's)",
                what()
            );
            continue;
        }
        if cmd == abi::IOC_CLAIM_PUBLISHER {
            if f.write {
                ensure!(rc == 0 || e == libc::EBUSY, "{}", what());
            } else {
                ensure!(rc == -1 && e == libc::EBADF, "{}: want EBADF", what());
            }
            continue;
        }
        let writes_back = matches!(cmd, abi::IOC_SEEK | abi::IOC_INFO | abi::IOC_INFO_V2);
        if kind.bad() || (kind == Ptr::ReadOnly && matches!(cmd, abi::IOC_INFO | abi::IOC_INFO_V2))
        {
            ensure!(rc == -1 && e == libc::EFAULT, "{}: want EFAULT", what());
        } else if kind == Ptr::ReadOnly && writes_back {
            ensure!(
                rc == -1 && matches!(e, libc::EFAULT | libc::EINVAL | libc::ERANGE),
                "{}: want EFAULT, EINVAL or ERANGE",
                what()
            );
        } else if f.control {
            let ok = if kind != Ptr::Plausible {
                rc == -1 && matches!(e, libc::EINVAL | libc::ENAMETOOLONG)
            } else {
                rc == 0
                    || rc == 1
                    || matches!(
                        e,
                        libc::EINVAL
                            | libc::ENAMETOOLONG
                            | libc::EEXIST
                            | libc::EPERM
                            | libc::ENOENT
                            | libc::ENOSPC
                            | libc::ENOMEM
                    )
            };
            ensure!(ok, "{}", what());
            if rc == 0 && cmd == abi::IOC_REMOVE && kind == Ptr::Plausible {
                // SAFETY: reads back the name we put at `arg`.
                let n = unsafe { std::slice::from_raw_parts(arg as *const u8, 72) };
                let name = String::from_utf8_lossy(n.split(|&b| b == 0).next().unwrap_or_default())
                    .into_owned();
                ensure!(
                    FUZZ_NAMES.contains(&name.as_str()),
                    "{}: removed {name:?}",
                    what()
                );
            }
        } else {
            let ok = rc == 0
                || (rc == 1 && cmd == abi::IOC_MAPPED_SYNC)
                || (rc == -1
                    && matches!(
                        e,
                        libc::EINVAL
                            | libc::ERANGE
                            | libc::EPERM
                            | libc::EBADF
                            | libc::EBUSY
                            | libc::EAGAIN
                            | libc::EPIPE
                    ));
            ensure!(ok, "{}", what());
            if cmd == abi::IOC_INFO && rc == 0 {
                // SAFETY: the kernel just wrote an Info at `arg`.
                let v = unsafe { std::ptr::read_unaligned(arg as *const abi::Info) };
                ensure!(
                    v.abi_version == abi::ABI_VERSION && v.ring_size.is_power_of_two(),
                    "{}: {v:?}",
                    what()
                );
            }
            if cmd == abi::IOC_MAPPED_SYNC && rc >= 0 && f.on_static {
                // SAFETY: reads back the MappedSync at `arg`.
                let m = unsafe { std::ptr::read_unaligned(arg as *const abi::MappedSync) };
                allowance += m.lost;
            }
        }
        // A failed ioctl changes nothing this file can see.
        if rc < 0 && !f.control {
            if let (Some(b), Ok(a)) = (info_before, Topic::from_file(f.file.try_clone()?).info()) {
                ensure!(
                    a.cursor_seq == b.cursor_seq && a.flags == b.flags && a.lost == b.lost,
                    "{}: the failed call changed the file: {b:?} -> {a:?}",
                    what()
                );
            }
        }
    }
    drop(fds);
    // The fuzz topic still works; the static topic is unchanged.
    let r = open_nb(&fuzz_path, true, false)?;
    put(&writer(&fuzz_path)?, b"alive")?;
    let got = get(&r, 64)?;
    ensure!(
        got == b"alive",
        "fuzz/ioctl after the fuzzing: read {got:?}"
    );
    drop(r);
    control::remove("fuzz/ioctl")?;
    for n in FUZZ_NAMES.iter().rev() {
        let _ = control::remove(n);
    }
    for n in FUZZ_NAMES {
        ensure!(!is_topic(n), "{n} is left over");
    }
    let records_after = sysfs_u64(&static_name, "records")?;
    let lost_after = sysfs_u64(&static_name, "lost")?;
    ensure!(
        records_after == records_before,
        "{static_name}: {} records appeared (no write was made to it)",
        records_after - records_before
    );
    ensure!(
        lost_after <= lost_before + allowance,
        "{static_name}: its loss count grew by {} though the accepted syncs reported {allowance}",
        lost_after - lost_before
    );
    let readers_after = sysfs_u64(&static_name, "readers")?;
    ensure!(
        readers_after == readers_before,
        "{static_name}: {readers_after} readers after every fuzz file was closed, {readers_before} before"
    );
    let mut by: Vec<String> = outcomes
        .iter()
        .map(|(e, n)| format!("{}: {n}", if *e == 0 { "ok".into() } else { ename(*e) }))
        .collect();
    by.truncate(12);
    Ok(format!("{calls} calls; {}", by.join(", ")))
}

/// A read or write on a fuzz file with a random buffer and length.
fn fuzz_rw(f: &FuzzFd, pages: &Pages, rng: &mut Rng) -> Result<()> {
    let fd = f.file.as_raw_fd();
    let (ptr, len, bad) = match rng.below(5) {
        0 => (0usize, rng.range(1, 100) as usize, true),
        1 => (pages.none, rng.range(1, 4096) as usize, true),
        2 => {
            let k = rng.range(1, 64) as usize;
            (pages.rw_end - k, k + rng.range(1, 64) as usize, false)
        }
        _ => {
            pages.scramble(rng, false);
            (pages.rw, rng.range(0, pages.page as u64) as usize, false)
        }
    };
    let write = f.write && (!f.read || rng.chance(50)) && !f.on_static;
    if f.on_static && !f.read {
        return Ok(());
    }
    // SAFETY: fuzzing: the kernel checks `ptr`; it points nowhere valid or
    // into our fuzz pages.
    let rc = unsafe {
        if write {
            libc::write(fd, ptr as *const _, len)
        } else {
            libc::read(fd, ptr as *mut _, len)
        }
    };
    let e = if rc < 0 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    let ok = if rc >= 0 {
        rc as usize <= len && !(bad && rc > 0)
    } else if write {
        matches!(
            e,
            libc::EFAULT | libc::EAGAIN | libc::EINVAL | libc::EMSGSIZE | libc::EBADMSG
        )
    } else {
        matches!(
            e,
            libc::EFAULT | libc::EAGAIN | libc::EMSGSIZE | libc::EPIPE
        )
    };
    ensure!(
        ok,
        "{} of {len} bytes at {ptr:#x} ({}): rc {rc}, {}",
        if write { "write" } else { "read" },
        if bad { "bad" } else { "partly or fully valid" },
        ename(e)
    );
    Ok(())
}

// -------------------------------------------------------------- rmmod ----

/// `delete_module("fanout")` while topic files are open must be refused,
/// and the module must stay.
fn rmmod_refused() -> Result<()> {
    let name = CString::new("fanout")?;
    // SAFETY: delete_module with a valid NUL-terminated name.
    let rc = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    let e = io::Error::last_os_error();
    ensure!(
        rc != 0,
        "rmmod fanout succeeded while topic files were open"
    );
    ensure!(
        matches!(errno(&e), libc::EBUSY | libc::EAGAIN),
        "rmmod fanout under load: {e}, want EBUSY or EAGAIN"
    );
    ensure!(
        Path::new("/sys/module/fanout").exists() && control::control_path().exists(),
        "the module or its control device is gone after a refused rmmod"
    );
    // busybox rmmod too, as a user would.
    if let Ok(out) = std::process::Command::new("rmmod").arg("fanout").output() {
        ensure!(!out.status.success(), "`rmmod fanout` succeeded under load");
    }
    ensure!(
        Path::new("/sys/module/fanout").exists(),
        "the module is gone"
    );
    Ok(())
}

// ------------------------------------------------------ unprivileged ----

/// What an unprivileged process may not do, tried from a child that drops
/// to uid/gid 65534 with no groups, with files root opened for it.
fn unprivileged() -> Result<()> {
    const NOBODY: u32 = 65534;
    let priv_path = fresh_topic("fuzz/priv", 16384, false)?;
    let ctl = control::control_path();
    let ctl_rw = OpenOptions::new().read(true).write(true).open(&ctl)?;
    let ctl_ro = File::open(&ctl)?;
    let t_ro = open_nb(&priv_path, true, false)?;
    let t_wo = open_nb(&priv_path, false, true)?;
    let before = topic_names();
    let static_records = sysfs_u64("fanout1", "records").ok();
    let spec = |name: &str, uid: u32, gid: u32| abi::TopicSpec {
        name: abi::TopicName::new(name.as_bytes()).unwrap_or(abi::TopicName { bytes: [0; 72] }),
        ring_size: 16384,
        record_max: 0,
        mode: 0o666,
        uid,
        gid,
        flags: 0,
        stall_ms: 0,
    };
    let mut specs = [
        spec("fuzz/nobody", 0, 0),
        spec("fuzz/nobody", NOBODY, 0),
        spec("fuzz/nobody", NOBODY, NOBODY),
    ];
    let mut names = [
        abi::TopicName::new(b"fuzz/priv").unwrap_or(abi::TopicName { bytes: [0; 72] }),
        abi::TopicName::new(b"fanout1").unwrap_or(abi::TopicName { bytes: [0; 72] }),
    ];
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let paths = [
        c(&ctl.to_string_lossy()),
        c(&priv_path.to_string_lossy()),
        c("/dev/fanout1"),
        c("/sys/class/baf/fanout1/lost"),
        c("fanout"),
    ];
    let lossless: u32 = abi::FLAG_LOSSLESS;
    let one: u32 = 1;
    let (ctl_rw, ctl_ro, t_ro, t_wo) = (
        ctl_rw.as_raw_fd(),
        ctl_ro.as_raw_fd(),
        t_ro.as_raw_fd(),
        t_wo.as_raw_fd(),
    );
    // (what, allowed errnos)
    let attempts: [(&str, &[i32]); 20] = [
        ("open /dev/baf-control O_RDWR", &[libc::EACCES]),
        ("open /dev/baf-control O_RDONLY", &[libc::EACCES]),
        ("open fuzz/priv O_RDONLY", &[libc::EACCES]),
        ("open fuzz/priv O_WRONLY", &[libc::EACCES]),
        ("open /dev/fanout1 O_RDWR", &[libc::EACCES]),
        ("open a sysfs statistic for writing", &[libc::EACCES]),
        (
            "IOC_CREATE owned by root (inherited control file)",
            &[libc::EPERM],
        ),
        ("IOC_CREATE with group 0 (not its own)", &[libc::EPERM]),
        ("IOC_REMOVE of root's topic", &[libc::EPERM]),
        ("IOC_REMOVE of a static topic", &[libc::EPERM]),
        ("IOC_CREATE on a read-only control file", &[libc::EBADF]),
        ("IOC_REMOVE on a read-only control file", &[libc::EBADF]),
        (
            "IOC_CLAIM_PUBLISHER on a read-only topic file",
            &[libc::EBADF],
        ),
        ("write() on a read-only topic file", &[libc::EBADF]),
        (
            "FLAG_LOSSLESS on a topic without TOPIC_LOSSLESS",
            &[libc::EPERM],
        ),
        (
            "IOC_WAIT_READERS 1 on a topic without TOPIC_LOSSLESS",
            &[libc::EPERM],
        ),
        ("mmap of a write-only topic file", &[libc::EACCES]),
        (
            "mmap PROT_WRITE of a read-only topic file",
            &[libc::EACCES, libc::EPERM],
        ),
        ("delete_module(fanout)", &[libc::EPERM]),
        ("finish: uid and gid are 65534", &[]),
    ];
    let mut pipe = [0i32; 2];
    // SAFETY: a fresh pipe.
    ensure!(unsafe { libc::pipe(pipe.as_mut_ptr()) } == 0, "pipe");
    // SAFETY: the child makes raw system calls only (no allocation, no
    // locks), writes its results to the pipe and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: raw system calls on values prepared before the fork.
        unsafe {
            let mut res = [[0i32; 2]; 20];
            let dropped = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(NOBODY) == 0
                && libc::setuid(NOBODY) == 0;
            let r = |rc: i64| -> [i32; 2] {
                if rc < 0 {
                    [-1, *libc::__errno_location()]
                } else {
                    [rc.min(i64::from(i32::MAX)) as i32, 0]
                }
            };
            if dropped {
                res[0] = r(libc::open(paths[0].as_ptr(), libc::O_RDWR) as i64);
                res[1] = r(libc::open(paths[0].as_ptr(), libc::O_RDONLY) as i64);
                res[2] = r(libc::open(paths[1].as_ptr(), libc::O_RDONLY) as i64);
                res[3] = r(libc::open(paths[1].as_ptr(), libc::O_WRONLY) as i64);
                res[4] = r(libc::open(paths[2].as_ptr(), libc::O_RDWR) as i64);
                res[5] = r(libc::open(paths[3].as_ptr(), libc::O_WRONLY) as i64);
                res[6] = r(libc::ioctl(ctl_rw, abi::IOC_CREATE as _, &mut specs[0]) as i64);
                res[7] = r(libc::ioctl(ctl_rw, abi::IOC_CREATE as _, &mut specs[1]) as i64);
                res[8] = r(libc::ioctl(ctl_rw, abi::IOC_REMOVE as _, &mut names[0]) as i64);
                res[9] = r(libc::ioctl(ctl_rw, abi::IOC_REMOVE as _, &mut names[1]) as i64);
                res[10] = r(libc::ioctl(ctl_ro, abi::IOC_CREATE as _, &mut specs[2]) as i64);
                res[11] = r(libc::ioctl(ctl_ro, abi::IOC_REMOVE as _, &mut names[0]) as i64);
                res[12] = r(libc::ioctl(t_ro, abi::IOC_CLAIM_PUBLISHER as _, 0) as i64);
                res[13] = r(libc::write(t_ro, b"x".as_ptr().cast(), 1) as i64);
                res[14] = r(libc::ioctl(t_ro, abi::IOC_SET_FLAGS as _, &lossless) as i64);
                res[15] = r(libc::ioctl(t_ro, abi::IOC_WAIT_READERS as _, &one) as i64);
                let m = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    t_wo,
                    0,
                );
                res[16] = if m == libc::MAP_FAILED { r(-1) } else { [0, 0] };
                let m = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    t_ro,
                    0,
                );
                res[17] = if m == libc::MAP_FAILED { r(-1) } else { [0, 0] };
                res[18] = r(libc::syscall(
                    libc::SYS_delete_module,
                    paths[4].as_ptr(),
                    libc::O_NONBLOCK,
                ));
                res[19] = if libc::getuid() == NOBODY
                    && libc::geteuid() == NOBODY
                    && libc::getgid() == NOBODY
                {
                    [0, 0]
                } else {
                    [-1, 0]
                };
            } else {
                res[19] = [-1, *libc::__errno_location()];
            }
            libc::write(pipe[1], res.as_ptr().cast(), size_of_val(&res));
            libc::_exit(0);
        }
    }
    ensure!(child > 0, "fork: {}", io::Error::last_os_error());
    // SAFETY: our end of the pipe is closed once.
    unsafe { libc::close(pipe[1]) };
    let mut res = [[0i32; 2]; 20];
    // SAFETY: reading into a buffer of exactly this size.
    let n = unsafe { libc::read(pipe[0], res.as_mut_ptr().cast(), size_of_val(&res)) };
    let mut status = 0;
    // SAFETY: reaping our own child; closing our pipe end.
    unsafe {
        libc::waitpid(child, &mut status, 0);
        libc::close(pipe[0]);
    }
    ensure!(
        n as usize == size_of_val(&res),
        "the child reported {n} bytes (status {status:#x})"
    );
    let mut errors = Vec::new();
    for (i, (what, allowed)) in attempts.iter().enumerate() {
        let [rc, e] = res[i];
        let fine = if allowed.is_empty() {
            rc == 0
        } else {
            rc == -1 && allowed.contains(&e)
        };
        if !fine {
            errors.push(format!(
                "{what}: {}",
                if rc >= 0 && !allowed.is_empty() {
                    format!("succeeded (rc {rc})")
                } else if allowed.is_empty() {
                    format!("no ({})", ename(e))
                } else {
                    format!(
                        "{}, want {}",
                        ename(e),
                        allowed
                            .iter()
                            .map(|&a| ename(a))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    )
                }
            ));
        }
    }
    // Nothing changed.
    let after = topic_names();
    if after != before {
        errors.push(format!("the topics changed: {before:?} -> {after:?}"));
    }
    if static_records != sysfs_u64("fanout1", "records").ok() {
        errors.push("fanout1 got records".into());
    }
    let meta = std::fs::metadata(&ctl)?;
    use std::os::unix::fs::MetadataExt;
    if meta.mode() & 0o7777 != 0o660 || meta.uid() != 0 {
        errors.push(format!(
            "the control node is now mode {:o} uid {}",
            meta.mode() & 0o7777,
            meta.uid()
        ));
    }
    control::remove("fuzz/priv")?;
    ensure!(errors.is_empty(), "{}", errors.join("; "));
    Ok(())
}

// -------------------------------------------------------- userfaultfd ----

const UFFD_API: u64 = 0xAA;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

const fn uffd_ioc(dir: u32, nr: u32, size: usize) -> u64 {
    ((dir << 30) | ((size as u32) << 16) | (0xAA << 8) | nr) as u64
}
const UFFDIO_API: u64 = uffd_ioc(3, 0x3F, 24);
const UFFDIO_REGISTER: u64 = uffd_ioc(3, 0x00, 32);
const UFFDIO_ZEROPAGE: u64 = uffd_ioc(3, 0x04, 32);

/// Anonymous memory whose pages fault into a userfaultfd nobody serves
/// until we say so.
struct Uffd {
    fd: i32,
    base: usize,
    len: usize,
}

impl Uffd {
    fn new(pages: usize) -> Result<Self> {
        // SAFETY: the userfaultfd system call with flags only.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) }
            as i32;
        ensure!(fd >= 0, "userfaultfd: {}", io::Error::last_os_error());
        let mut api = [UFFD_API, 0, 0];
        // SAFETY: UFFDIO_API takes a struct uffdio_api (3 x u64).
        ensure!(
            unsafe { libc::ioctl(fd, UFFDIO_API as _, api.as_mut_ptr()) } == 0,
            "UFFDIO_API: {}",
            io::Error::last_os_error()
        );
        let len = pages * page_size();
        // Never touched before it is registered below.
        let base = anon_map(len)?;
        let mut reg = [base as u64, len as u64, UFFDIO_REGISTER_MODE_MISSING, 0];
        // SAFETY: UFFDIO_REGISTER takes a struct uffdio_register (4 x u64).
        ensure!(
            unsafe { libc::ioctl(fd, UFFDIO_REGISTER as _, reg.as_mut_ptr()) } == 0,
            "UFFDIO_REGISTER: {}",
            io::Error::last_os_error()
        );
        Ok(Self {
            fd,
            base: base as usize,
            len,
        })
    }

    /// Waits for a page fault in the region; its address.
    fn fault(&self, secs: i32) -> Result<u64> {
        poll_in(self.fd, secs * 1000);
        let mut msg = [0u8; 32];
        // SAFETY: reading one uffd_msg (32 bytes).
        let n = unsafe { libc::read(self.fd, msg.as_mut_ptr().cast(), 32) };
        ensure!(
            n == 32,
            "no userfault within {secs} s ({})",
            io::Error::last_os_error()
        );
        ensure!(
            msg[0] == UFFD_EVENT_PAGEFAULT,
            "userfault event {:#x}",
            msg[0]
        );
        Ok(u64::from_ne_bytes(msg[16..24].try_into()?))
    }

    /// Maps a zero page at the faulting page: the stalled copy goes on.
    fn serve(&self, addr: u64) -> Result<()> {
        let page = page_size() as u64;
        let mut z = [addr & !(page - 1), page, 0, 0];
        // SAFETY: UFFDIO_ZEROPAGE takes a struct uffdio_zeropage (4 x u64).
        let rc = unsafe { libc::ioctl(self.fd, UFFDIO_ZEROPAGE as _, z.as_mut_ptr()) };
        ensure!(rc == 0, "UFFDIO_ZEROPAGE: {}", io::Error::last_os_error());
        Ok(())
    }
}

impl Drop for Uffd {
    fn drop(&mut self) {
        // SAFETY: our own mapping and descriptor; closing the descriptor
        // releases any fault still waiting (it then fails).
        unsafe {
            libc::munmap(self.base as *mut _, self.len);
            libc::close(self.fd);
        }
    }
}

fn fdinfo(fd: i32) -> Result<String> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    ensure!(
        s.contains("fanout_cursor_seq"),
        "fdinfo without fanout lines: {s}"
    );
    Ok(s)
}

/// Runs `probe` on another thread while something is stalled in a user
/// copy; it must finish within a few seconds.
fn probe_while_stalled(
    what: &str,
    probe: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<()> {
    match within(8, probe) {
        Some(r) => r.with_context(|| format!("while {what}")),
        None => bail!("while {what}, the probe did not finish within 8 s: a lock is held across the user copy"),
    }
}

/// A `read()`, a `write()` and an ioctl stalled in a user copy (the buffer
/// is a userfaultfd page nobody serves) hold no lock others need.
fn userfault() -> Result<()> {
    // --- read() stalled copying out.
    let path = fresh_topic("fuzz/uffd", 16384, false)?;
    let stalled = Topic::open(&path, false, false)?;
    let other = Arc::new(Topic::open(&path, false, true)?);
    let w = Arc::new(writer(&path)?);
    put(&w, b"hello")?;
    let u = Uffd::new(2)?;
    let (buf, fd) = (u.base, stalled.file().as_raw_fd());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // SAFETY: reading into the registered region (2 pages).
        let n = unsafe { libc::read(fd, buf as *mut _, 4096) };
        let r = if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        };
        let _ = tx.send(r);
        drop(stalled);
    });
    let addr = u.fault(10).context("read() into a userfaultfd page")?;
    let probe = {
        let (other, w) = (other.clone(), w.clone());
        move || -> Result<()> {
            fdinfo(fd)?;
            let got = get(other.file(), 4096)?;
            ensure!(got == b"hello", "the other reader got {got:?}");
            put(&w, b"during")?;
            let got = get(other.file(), 4096)?;
            ensure!(got == b"during", "the other reader got {got:?}");
            let mut info = abi::Info::default();
            // SAFETY: IOC_INFO on the stalled file, into a live Info.
            let rc = unsafe { libc::ioctl(fd, abi::IOC_INFO as _, &mut info) };
            ensure!(
                rc == 0 && info.next_seq == 2,
                "INFO of the stalled file: rc {rc}, {info:?}"
            );
            let mut o = CreateOptions::defaults();
            o.ring_size = 16384;
            control::create("fuzz/uffd2", &o)?;
            control::remove("fuzz/uffd2")?;
            Ok(())
        }
    };
    let r1 = probe_while_stalled("a read() is stalled in its copy", probe);
    u.serve(addr)?;
    let n = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| {
            anyhow::anyhow!("the stalled read() did not finish after its fault was served")
        })?
        .context("the stalled read()")?;
    // SAFETY: the read wrote `n` bytes at `buf`, now a real page.
    let got = unsafe { std::slice::from_raw_parts(buf as *const u8, n) };
    r1?;
    ensure!(
        got.starts_with(b"hello"),
        "the stalled read() returned {got:?}"
    );
    drop(u);

    // --- a seek whose argument is in a stalled page.
    let u = Uffd::new(1)?;
    let seeker = Topic::open(&path, false, true)?;
    let (arg, sfd) = (u.base, seeker.file().as_raw_fd());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // SAFETY: IOC_SEEK with its argument in the registered page.
        let rc = unsafe { libc::ioctl(sfd, abi::IOC_SEEK as _, arg) };
        let _ = tx.send(if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        });
        drop(seeker);
    });
    let addr = u.fault(10).context("IOC_SEEK from a userfaultfd page")?;
    let probe = {
        let (other, w) = (other.clone(), w.clone());
        move || -> Result<()> {
            other.seek(abi::SEEK_OLDEST, 0)?;
            put(&w, b"seek")?;
            let i = other.info()?;
            ensure!(i.next_seq >= 3, "next_seq {}", i.next_seq);
            Ok(())
        }
    };
    let r2 = probe_while_stalled("an IOC_SEEK is stalled reading its argument", probe);
    u.serve(addr)?; // a zero Seek: SEEK_OLDEST
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow::anyhow!("the stalled IOC_SEEK did not finish"))?
        .context("the stalled IOC_SEEK (a zero Seek is SEEK_OLDEST)")?;
    r2?;
    drop(u);

    // --- write() stalled copying in: readers, fdinfo, INFO, a
    // non-blocking writer and the topic's removal get through.
    let u = Uffd::new(1)?;
    let blocked = Topic::open(&path, false, false)?;
    let bfd = blocked.file().as_raw_fd();
    let (btx, brx) = mpsc::channel();
    thread::spawn(move || {
        let mut n = 0;
        let r = loop {
            match get(blocked.file(), 4096) {
                Ok(b) if b.is_empty() => break Ok(n),
                Ok(_) => n += 1,
                Err(e) => break Err(e),
            }
        };
        let _ = btx.send(r);
    });
    let (src, wfd) = (u.base, w.as_raw_fd());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // SAFETY: writing from the registered page.
        let n = unsafe { libc::write(wfd, src as *const _, 100) };
        let _ = tx.send(if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        });
    });
    let addr = u.fault(10).context("write() from a userfaultfd page")?;
    let probe = {
        let (other, path) = (other.clone(), path.clone());
        move || -> Result<()> {
            fdinfo(wfd)?;
            fdinfo(bfd)?;
            let _ = other.info()?;
            match get(other.file(), 4096) {
                Ok(_) => {}
                Err(e) if errno(&e) == libc::EAGAIN => {}
                Err(e) => return Err(e).context("read beside a stalled writer"),
            }
            let nb = open_nb(&path, false, true)?;
            match (&nb).write(b"nb") {
                Ok(2) => {}
                Err(e) if errno(&e) == libc::EAGAIN => {}
                r => bail!("a non-blocking writer beside a stalled one: {r:?}"),
            }
            control::remove("fuzz/uffd").context("remove the topic of a stalled writer")?;
            Ok(())
        }
    };
    let r3 = probe_while_stalled("a write() is stalled in its copy", probe);
    let eof = brx.recv_timeout(Duration::from_secs(8));
    u.serve(addr)?;
    let wr = rx.recv_timeout(Duration::from_secs(10)).map_err(|_| {
        anyhow::anyhow!("the stalled write() did not finish after its fault was served")
    })?;
    r3?;
    match wr {
        Ok(100) => {}
        Err(e) if errno(&e) == libc::ENODEV => {}
        r => bail!("the stalled write() after the topic's removal: {r:?}, want 100 or ENODEV"),
    }
    eof.map_err(|_| anyhow::anyhow!("a reader blocked in read() got no EOF while a writer was stalled and the topic was removed"))?
        .context("the blocked reader")?;
    let _ = control::remove("fuzz/uffd");
    Ok(())
}

// --------------------------------------------------------------- main ----

fn main() {
    let mut secs = 60.0f64;
    let mut seed = None;
    let mut static_topic = PathBuf::from("/dev/fanout3");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v.as_deref().map(str::parse::<u64>)) {
            ("--soak", Some(Ok(s))) => secs = s.max(10) as f64,
            ("--seed", Some(Ok(s))) => seed = Some(s),
            ("--static", _) if v.is_some() => static_topic = PathBuf::from(v.unwrap_or_default()),
            _ => {
                eprintln!("usage: fanout-fuzz [--soak SECONDS] [--seed N] [--static /dev/fanoutN]");
                std::process::exit(2);
            }
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!("  fanout-fuzz: seed {seed}, about {secs:.0} s (rerun with --seed {seed})");
    start_watchdog();
    let mut rng = Rng::new(seed);
    let mut failed = 0u32;
    let t0 = Instant::now();
    for n in [
        "fuzz/s16k",
        "fuzz/s1m",
        "fuzz/ioctl",
        "fuzz/priv",
        "fuzz/uffd",
        "fuzz/uffd2",
    ] {
        let _ = control::remove(n);
    }

    // Stress rounds, with churn, opens, seeks, ioctl fuzz and rmmod beside.
    let round = secs * 0.4;
    let stop = Arc::new(AtomicBool::new(false));
    let aux: Vec<(&str, thread::JoinHandle<Result<String>>)> = vec![
        ("churn", {
            let (s, r) = (stop.clone(), rng.fork());
            thread::spawn(move || churn(&s, r))
        }),
        ("opener", {
            let (s, r) = (stop.clone(), rng.fork());
            thread::spawn(move || opener(&s, r))
        }),
        ("seeker", {
            let (s, r) = (stop.clone(), rng.fork());
            thread::spawn(move || seeker(&s, r))
        }),
        ("ioctl", {
            let (s, r, p) = (stop.clone(), rng.fork(), static_topic.clone());
            thread::spawn(move || ioctl_fuzz(&s, &p, r))
        }),
    ];
    let mut rmmod = Vec::new();
    for (name, ring) in [("fuzz/s16k", 16384u64), ("fuzz/s1m", 1 << 20)] {
        let label = format!(
            "fuzz: {} KiB ring, {WRITERS} writers (plain, split, batch; 1 B to record_max), record/strict/bytes/mmap/lossless readers: nothing torn, in order, every gap counted, delivered + lost = written, lossless lose nothing",
            ring / 1024
        );
        let mut r = rng.fork();
        check(&label, round, &mut failed, || {
            stress_round(name, ring, round, &mut r, || {
                rmmod.push(rmmod_refused());
                Ok(())
            })
        });
    }
    stop.store(true, Ordering::Relaxed);
    let labels = [
        ("churn", "fuzz: churn in fuzz/a/b/c under load: create (New/Existed/EEXIST), remove (ENOENT), node moves keep open files, blocked readers get their data then EOF on removal"),
        ("opener", "fuzz: opens and closes of the stress topic in every mode, mappings, short-lived lossless readers (EPERM/EBADF where not allowed)"),
        ("seeker", "fuzz: IOC_SEEK with every whence and random arguments lands within the topic's bounds (EINVAL, ERANGE where due)"),
        ("ioctl", "fuzz: random ioctls, reads and writes with bad pointers on topic files and /dev/baf-control: the ABI's errnos, nothing changed"),
    ];
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Phase {
        name: "fuzz: the churn, open, seek and ioctl threads stop".into(),
        deadline: Instant::now() + Duration::from_secs(90),
    });
    let results: Vec<(&str, Result<String>)> =
        aux.into_iter().map(|(k, h)| (k, join(h, k))).collect();
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = None;
    // A thread that failed half-way may have left its topics.
    for n in CHURN.iter().chain(FUZZ_NAMES.iter()).rev() {
        let _ = control::remove(n);
    }
    let _ = control::remove("fuzz/ioctl");
    for (k, label) in labels {
        let r = results
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, r)| match r {
                Ok(s) => {
                    println!("  {k}: {s}");
                    Ok(())
                }
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            })
            .unwrap_or_else(|| Err(anyhow::anyhow!("no result")));
        report(label, r, &mut failed);
    }
    let rm = rmmod
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .and_then(|v| {
            ensure!(v.len() == 2, "rmmod was tried {} times, not twice", v.len());
            Ok(())
        });
    report(
        "fuzz: rmmod under load is refused (EBUSY/EAGAIN) and the module and its topics keep working",
        rm,
        &mut failed,
    );
    check(
        "fuzz: an unprivileged user (uid/gid 65534) can open, create, remove, claim, set, map and unload nothing it may not",
        10.0,
        &mut failed,
        unprivileged,
    );
    check(
        "fuzz: userfaultfd: read(), write() and IOC_SEEK stalled in a user copy hold no lock (fdinfo, reads, writes, create/remove, removal get through)",
        30.0,
        &mut failed,
        userfault,
    );
    check(
        "fuzz: nothing left behind (no fuzz topic, static topics without extra readers or writers)",
        5.0,
        &mut failed,
        || {
            let left: Vec<String> = topic_names()
                .into_iter()
                .filter(|n| n.starts_with("fuzz!"))
                .collect();
            ensure!(left.is_empty(), "topics left: {left:?}");
            for n in topic_names()
                .into_iter()
                .filter(|n| n.starts_with("fanout"))
            {
                let (r, w) = (sysfs_u64(&n, "readers")?, sysfs_u64(&n, "writers")?);
                ensure!(r == 0 && w == 0, "{n}: {r} readers, {w} writers still open");
            }
            Ok(())
        },
    );
    println!(
        "  fanout-fuzz: {:.0} s, {failed} failed",
        t0.elapsed().as_secs_f64()
    );
    std::process::exit(i32::from(failed > 0));
}
