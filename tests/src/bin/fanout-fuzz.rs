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

#[path = "../fuzz_churn.rs"]
mod fuzz_churn;
#[path = "../fuzz_ioctl.rs"]
mod fuzz_ioctl;
#[path = "../fuzz_stress.rs"]
mod fuzz_stress;
#[path = "../fuzz_unprivileged.rs"]
mod fuzz_unprivileged;
#[path = "../fuzz_userfault.rs"]
mod fuzz_userfault;
use fuzz_churn::{churn, is_topic, opener, seeker, CHURN};
use fuzz_ioctl::{ioctl_fuzz, FUZZ_NAMES};
use fuzz_stress::{stress_round, CURRENT, WRITERS};
use fuzz_unprivileged::{rmmod_refused, unprivileged};
use fuzz_userfault::userfault;

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
