//! `baf-bridge-bench`: the measuring ends of the bridge benchmark
//! (`tests/vm/bridge-bench.sh`), and its baseline, Zenoh's own pub/sub
//! with the bridge's session settings and no baf.
//!
//! Throughput: a publisher sends N records (or samples) of S bytes, each
//! starting with its index; a subscriber checks that they arrive in order
//! and prints how many it got and how long the first to the last took.
//! Latency: a ping sends one record and waits for the pong's, N times; the
//! pong sends back each record it gets. Results are one line each,
//! `key=value` words, for the script to put side by side.
//!
//! Not a tool for users: no man page, and errors are plain.

use anyhow::{bail, Context, Result};
use baf::abi;
use baf::device::{self, Batch, Topic};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use zenoh::qos::CongestionControl;
use zenoh::Wait;

#[derive(Parser, Debug)]
#[command(name = "baf-bridge-bench", about = "Ends of the bridge benchmark")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Zenoh session settings: the bridge's flags of the same names.
#[derive(clap::Args, Debug, Clone)]
struct Session {
    /// Endpoint to connect to.
    #[arg(long)]
    connect: Vec<String>,
    /// Endpoint to listen on.
    #[arg(long)]
    listen: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Publish COUNT samples of SIZE bytes on KEY (blocking congestion
    /// control), once a subscriber matches.
    ZenohPub {
        #[command(flatten)]
        session: Session,
        #[arg(long)]
        key: String,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        size: usize,
        /// Wait this long after a subscriber matches (others may come).
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
        /// Send this attachment (hex) with every sample: to test what a
        /// bridge makes of samples of other wire versions or malformed.
        #[arg(long)]
        attachment_hex: Option<String>,
    },
    /// Receive COUNT samples on KEY; prints the result.
    ZenohSub {
        #[command(flatten)]
        session: Session,
        #[arg(long)]
        key: String,
        #[arg(long)]
        count: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Stop when nothing came for this many seconds (after the first).
        #[arg(long)]
        idle: Option<u64>,
    },
    /// Round trips: put on PING, wait for the sample on PONG, COUNT times.
    ZenohPing {
        #[command(flatten)]
        session: Session,
        #[arg(long)]
        ping: String,
        #[arg(long)]
        pong: String,
        #[arg(long)]
        count: u64,
    },
    /// Sends every sample of PING back on PONG.
    ZenohPong {
        #[command(flatten)]
        session: Session,
        #[arg(long)]
        ping: String,
        #[arg(long)]
        pong: String,
    },
    /// Write COUNT records of SIZE bytes to TOPIC, in batches.
    BafPub {
        topic: String,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        size: usize,
    },
    /// Read COUNT records from TOPIC (losslessly if it allows); prints the
    /// result.
    BafSub {
        topic: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Round trips: write a record to OUT, wait for one on IN, COUNT times.
    BafPing {
        #[arg(long)]
        out: String,
        #[arg(long = "in")]
        input: String,
        #[arg(long)]
        count: u64,
    },
    /// Writes every record of IN to OUT.
    BafPong {
        #[arg(long = "in")]
        input: String,
        #[arg(long)]
        out: String,
    },
}

fn open_session(s: &Session) -> Result<zenoh::Session> {
    let mut c = zenoh::Config::default();
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    let set = |c: &mut zenoh::Config, k: &str, v: &str| {
        c.insert_json5(k, v)
            .map_err(|e| anyhow::anyhow!("zenoh setting {k}={v}: {e}"))
    };
    set(&mut c, "scouting/multicast/enabled", "false")?;
    set(&mut c, "connect/exit_on_failure", "false")?;
    set(&mut c, "connect/timeout_ms", "-1")?;
    if !s.connect.is_empty() {
        set(&mut c, "connect/endpoints", &json(&s.connect))?;
    }
    if !s.listen.is_empty() {
        set(&mut c, "listen/endpoints", &json(&s.listen))?;
    }
    zenoh::open(c)
        .wait()
        .map_err(|e| anyhow::anyhow!("opening a Zenoh session: {e}"))
}

/// A payload of `size` bytes (at least 8) starting with `i`.
fn payload(i: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0x5a; size.max(8)];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

fn index(p: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(p.get(..8)?.try_into().ok()?))
}

/// Counts in-order arrivals; prints the result line.
struct Receiver {
    got: u64,
    next: u64,
    out_of_order: u64,
    first: Option<Instant>,
    last: Instant,
}

impl Receiver {
    fn new() -> Self {
        Self {
            got: 0,
            next: 0,
            out_of_order: 0,
            first: None,
            last: Instant::now(),
        }
    }

    fn take(&mut self, p: &[u8]) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = now;
        self.got += 1;
        match index(p) {
            Some(i) if i == self.next => self.next += 1,
            Some(i) if i > self.next => {
                self.out_of_order += 1;
                self.next = i + 1;
            }
            _ => self.out_of_order += 1,
        }
    }

    fn print(&self, expected: u64) {
        let us = self
            .first
            .map_or(0, |f| self.last.duration_since(f).as_micros());
        println!(
            "got={} expected={expected} out_of_order={} elapsed_us={us} cpu_ms={}",
            self.got,
            self.out_of_order,
            cpu_ms()
        );
    }
}

/// CPU time (user + system) of this process so far, in ms.
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime, in clock ticks (100 a second on Linux).
    (ticks(11) + ticks(12)) * 10
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

fn print_rtts(mut rtts: Vec<u128>) {
    rtts.sort_unstable();
    println!(
        "round_trips={} p50_us={} p99_us={}",
        rtts.len(),
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99)
    );
}

/// The bytes of a hex string.
fn unhex(h: &str) -> Result<Vec<u8>> {
    let digits = h.as_bytes();
    if digits.len() % 2 != 0 {
        bail!("an odd number of hex digits: {h}");
    }
    digits
        .chunks(2)
        .map(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .with_context(|| format!("not hex: {h}"))
        })
        .collect()
}

fn zenoh_pub(
    s: &Session,
    key: &str,
    count: u64,
    size: usize,
    wait_ms: u64,
    attachment: Option<Vec<u8>>,
) -> Result<()> {
    let session = open_session(s)?;
    let publisher = session
        .declare_publisher(key.to_string())
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t0 = Instant::now();
    while !publisher
        .matching_status()
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .matching()
    {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("no subscriber of {key} after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(wait_ms));
    for i in 0..count {
        let put = publisher.put(payload(i, size));
        match &attachment {
            Some(a) => put.attachment(a.clone()).wait(),
            None => put.wait(),
        }
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // Let the last samples leave before the session closes (what is still
    // queued then is dropped).
    std::thread::sleep(Duration::from_millis(2000));
    let _ = session.close().wait();
    Ok(())
}

fn zenoh_sub(s: &Session, key: &str, count: u64, timeout: u64, idle: Option<u64>) -> Result<()> {
    let session = open_session(s)?;
    let sub = session
        .declare_subscriber(key.to_string())
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("ready");
    let mut r = Receiver::new();
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while r.got < count {
        let mut left = deadline.saturating_duration_since(Instant::now());
        if let (Some(idle), Some(_)) = (idle, r.first) {
            left = left.min(Duration::from_secs(idle));
        }
        match sub.recv_timeout(left) {
            Ok(Some(sample)) => r.take(&sample.payload().to_bytes()),
            _ => break,
        }
    }
    r.print(count);
    Ok(())
}

fn zenoh_ping(s: &Session, ping: &str, pong: &str, count: u64) -> Result<()> {
    let session = open_session(s)?;
    let sub = session
        .declare_subscriber(pong.to_string())
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let publisher = session
        .declare_publisher(ping.to_string())
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Warm up until the pong answers.
    let t0 = Instant::now();
    loop {
        publisher
            .put(payload(u64::MAX, 64))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Ok(Some(_)) = sub.recv_timeout(Duration::from_millis(200)) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("no pong after 60 s");
        }
    }
    while sub.try_recv().ok().flatten().is_some() {}
    let mut rtts = Vec::with_capacity(count as usize);
    for i in 0..count {
        let t = Instant::now();
        publisher
            .put(payload(i, 64))
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        loop {
            match sub.recv_timeout(Duration::from_secs(10)) {
                Ok(Some(sample)) if index(&sample.payload().to_bytes()) == Some(i) => break,
                Ok(Some(_)) => continue,
                _ => bail!("round trip {i}: no pong within 10 s"),
            }
        }
        rtts.push(t.elapsed().as_micros());
    }
    print_rtts(rtts);
    Ok(())
}

fn zenoh_pong(s: &Session, ping: &str, pong: &str) -> Result<()> {
    let session = open_session(s)?;
    let publisher = session
        .declare_publisher(pong.to_string())
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sub = session
        .declare_subscriber(ping.to_string())
        .wait()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("ready");
    while let Ok(sample) = sub.recv() {
        publisher
            .put(sample.payload().clone())
            .wait()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

fn open_topic(name: &str, write: bool) -> Result<Topic> {
    let path = baf::topic_path(name);
    let topic = Topic::open(&path, write, false)?;
    let info = topic.info().context("IOC_INFO")?;
    device::check_abi(&info)?;
    if write {
        topic.set_flags(abi::FLAG_BATCH)?;
    } else if info.topic_flags & abi::TOPIC_LOSSLESS != 0 {
        topic.set_flags(abi::FLAG_RECORD | abi::FLAG_LOSSLESS)?;
    } else {
        topic.set_flags(abi::FLAG_RECORD)?;
    }
    Ok(topic)
}

fn baf_pub(name: &str, count: u64, size: usize) -> Result<()> {
    let topic = open_topic(name, true)?;
    let mut batch = Batch::with_capacity(64 * 1024);
    for i in 0..count {
        if batch.len() + Batch::frame_len(size.max(8)) > 64 * 1024 {
            device::write_batch(topic.file(), batch.as_bytes())?;
            batch.clear();
        }
        batch.push(&payload(i, size))?;
    }
    device::write_batch(topic.file(), batch.as_bytes())?;
    Ok(())
}

/// Reads records of `topic` into `f` until it returns false or `deadline`,
/// through `buf` (kept by the caller: a fresh megabyte each call would cost
/// a mapping and page faults).
fn read_records(
    topic: &Topic,
    buf: &mut [u8],
    deadline: Instant,
    mut f: impl FnMut(&device::Record<'_>) -> bool,
) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let mut fds = [PollFd::new(topic.file().as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(1000) as u64 + 1)
            .unwrap_or(PollTimeout::ZERO);
        if !matches!(nix::poll::poll(&mut fds, ms), Ok(n) if n > 0) {
            continue;
        }
        let n = match topic.file().read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the topic"),
        };
        for r in device::records(&buf[..n]) {
            if !f(&r) {
                return Ok(());
            }
        }
    }
}

fn baf_sub(name: &str, count: u64, timeout: u64) -> Result<()> {
    let topic = open_topic(name, false)?;
    eprintln!("ready");
    let mut r = Receiver::new();
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut buf = vec![0u8; 1 << 20];
    read_records(&topic, &mut buf, deadline, |rec| {
        r.take(rec.payload);
        r.got < count
    })?;
    r.print(count);
    Ok(())
}

fn baf_ping(out: &str, input: &str, count: u64) -> Result<()> {
    // Plain writes: each is one record, sent at once.
    let w = Topic::open(&baf::topic_path(out), true, false)?;
    let r = open_topic(input, false)?;
    let mut buf = vec![0u8; 1 << 20];
    let send = |i: u64| -> Result<()> {
        let n = w.file().write(&payload(i, 64))?;
        if n != 64 {
            bail!("short write");
        }
        Ok(())
    };
    // Warm up until the pong answers.
    let t0 = Instant::now();
    loop {
        send(u64::MAX)?;
        let mut answered = false;
        read_records(
            &r,
            &mut buf,
            Instant::now() + Duration::from_millis(300),
            |_| {
                answered = true;
                false
            },
        )?;
        if answered {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("no pong after 60 s");
        }
    }
    // Drain late warm-up answers.
    read_records(
        &r,
        &mut buf,
        Instant::now() + Duration::from_millis(300),
        |_| true,
    )?;
    let mut rtts = Vec::with_capacity(count as usize);
    for i in 0..count {
        let t = Instant::now();
        send(i)?;
        let mut got = false;
        read_records(
            &r,
            &mut buf,
            Instant::now() + Duration::from_secs(10),
            |rec| {
                got = index(rec.payload) == Some(i);
                !got
            },
        )?;
        if !got {
            bail!("round trip {i}: no pong within 10 s");
        }
        rtts.push(t.elapsed().as_micros());
    }
    print_rtts(rtts);
    Ok(())
}

fn baf_pong(input: &str, out: &str) -> Result<()> {
    let r = open_topic(input, false)?;
    let w = Topic::open(&baf::topic_path(out), true, false)?;
    eprintln!("ready");
    let mut buf = vec![0u8; 1 << 20];
    read_records(
        &r,
        &mut buf,
        Instant::now() + Duration::from_secs(3600),
        |rec| w.file().write_all(rec.payload).is_ok(),
    )
}

fn main() {
    let args = Args::parse();
    let r = match &args.cmd {
        Cmd::ZenohPub {
            session,
            key,
            count,
            size,
            wait_ms,
            attachment_hex,
        } => attachment_hex
            .as_deref()
            .map(unhex)
            .transpose()
            .and_then(|att| zenoh_pub(session, key, *count, *size, *wait_ms, att)),
        Cmd::ZenohSub {
            session,
            key,
            count,
            timeout,
            idle,
        } => zenoh_sub(session, key, *count, *timeout, *idle),
        Cmd::ZenohPing {
            session,
            ping,
            pong,
            count,
        } => zenoh_ping(session, ping, pong, *count),
        Cmd::ZenohPong {
            session,
            ping,
            pong,
        } => zenoh_pong(session, ping, pong),
        Cmd::BafPub { topic, count, size } => baf_pub(topic, *count, *size),
        Cmd::BafSub {
            topic,
            count,
            timeout,
        } => baf_sub(topic, *count, *timeout),
        Cmd::BafPing { out, input, count } => baf_ping(out, input, *count),
        Cmd::BafPong { input, out } => baf_pong(input, out),
    };
    if let Err(e) = r {
        eprintln!("baf-bridge-bench: {}", baf_cli::message(&e));
        std::process::exit(1);
    }
}
