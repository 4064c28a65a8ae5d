//! The measurements: fan-out throughput and ping-pong latency through any
//! [`Transport`], with every endpoint on its own thread of this process
//! (brokers run as their own processes). Messages carry their sequence
//! number in their first 8 bytes: subscribers count what arrives, check
//! that nothing arrives twice or out of order, and what never arrives is
//! loss.

use crate::transport::Transport;
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// A subscriber that has heard nothing this long after the publisher
/// finished is done.
const QUIET: Duration = Duration::from_millis(500);

/// At most this many bytes a case (so a broker that queues without bound
/// cannot fill the VM's memory).
const BUDGET: usize = 64 << 20;

/// CPU time (user + system) of a process, from /proc (`self` or a pid).
pub fn cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

/// The pid of a running process named `comm` (a broker), if any.
pub fn pid_of(comm: &str) -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let name = e.file_name().into_string().ok()?;
        name.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
        let c = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (c.trim() == comm).then_some(name)
    })
}

/// This process and its broker (by process name), CPU so far.
fn cpu_now(broker: Option<&str>) -> Duration {
    cpu("self") + broker.and_then(pid_of).map_or(Duration::ZERO, |p| cpu(&p))
}

fn message(seq: u64, size: usize) -> Vec<u8> {
    let mut m = vec![0x5a; size.max(8)];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m
}

fn seq_of(m: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(m.get(..8)?.try_into().ok()?))
}

/// What one subscriber of a throughput case saw.
#[derive(Default)]
struct Seen {
    got: u64,
    bad: u64,
    last: Option<Instant>,
    /// Why it stopped early (a broker closed it, say).
    ended: Option<String>,
}

/// One throughput case.
pub struct Throughput {
    pub sent: u64,
    /// Messages delivered, all subscribers together.
    pub got: u64,
    pub secs: f64,
    pub cpu: Duration,
    pub size: usize,
    pub subs: usize,
    pub notes: Vec<String>,
}

impl Throughput {
    pub fn msgs_per_s(&self) -> f64 {
        self.got as f64 / self.secs.max(1e-9)
    }
    pub fn mb_per_s(&self) -> f64 {
        self.msgs_per_s() * self.size as f64 / 1e6
    }
    pub fn lost_pct(&self) -> f64 {
        let want = self.sent * self.subs as u64;
        if want == 0 {
            return 0.0;
        }
        100.0 * (want.saturating_sub(self.got)) as f64 / want as f64
    }
    /// CPU (this process and the broker) per delivered MB, in ms.
    pub fn cpu_ms_per_mb(&self) -> f64 {
        let mb = (self.got as f64 * self.size as f64 / 1e6).max(1e-9);
        self.cpu.as_secs_f64() * 1e3 / mb
    }
}

/// Waits until `n` endpoints are ready, or one failed.
fn wait_ready(ready: &AtomicUsize, failed: &AtomicBool, n: usize) -> Result<()> {
    let t0 = Instant::now();
    while ready.load(Ordering::SeqCst) < n {
        if failed.load(Ordering::SeqCst) {
            bail!("a subscriber failed to start");
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("subscribers not ready after 30 s");
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// One publisher sends `size`-byte messages for `run` (or [`BUDGET`]
/// bytes) to `subs` subscribers.
pub fn throughput(
    t: &dyn Transport,
    topic: &str,
    subs: usize,
    size: usize,
    run: Duration,
    broker: Option<&str>,
) -> Result<Throughput> {
    let ready = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let done: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
    let max = (BUDGET / size.max(1)).max(1) as u64;
    thread::scope(|s| {
        let mut hs = Vec::new();
        for _ in 0..subs {
            hs.push(s.spawn(|| -> Result<Seen> {
                let mut sub = match t.subscriber(topic, size) {
                    Ok(sub) => sub,
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                };
                ready.fetch_add(1, Ordering::SeqCst);
                let mut seen = Seen::default();
                let mut next = 0u64;
                loop {
                    let (mut got, mut bad) = (0u64, 0u64);
                    let r = sub.recv(Duration::from_millis(50), &mut |m| {
                        got += 1;
                        match seq_of(m) {
                            Some(q) if q >= next && m.len() == size => next = q + 1,
                            _ => bad += 1,
                        }
                    });
                    seen.got += got;
                    seen.bad += bad;
                    let now = Instant::now();
                    match r {
                        Ok(0) => {}
                        Ok(_) => seen.last = Some(now),
                        Err(e) => {
                            seen.ended = Some(format!("{e:#}"));
                            return Ok(seen);
                        }
                    }
                    let fin = *done.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    if let Some((at, sent)) = fin {
                        let since = seen.last.map_or(at, |l| l.max(at));
                        if seen.got >= sent || now.duration_since(since) > QUIET {
                            return Ok(seen);
                        }
                    }
                }
            }));
        }
        let publish = || -> Result<(Instant, Duration, u64)> {
            let mut p = t.publisher(topic, size)?;
            wait_ready(&ready, &failed, subs)?;
            p.wait_subscribers(subs, Duration::from_secs(30))?;
            thread::sleep(Duration::from_millis(300));
            let mut m = message(0, size);
            let c0 = cpu_now(broker);
            let t0 = Instant::now();
            let mut sent = 0u64;
            while sent < max && (!sent.is_multiple_of(16) || t0.elapsed() < run) {
                m[..8].copy_from_slice(&sent.to_le_bytes());
                p.send(&m)?;
                sent += 1;
            }
            p.flush()?;
            Ok((t0, c0, sent))
        };
        // The publisher runs on its own thread too (a Zenoh session lives
        // as long as its thread).
        let ph = s.spawn(publish);
        let published = ph
            .join()
            .map_err(|_| anyhow::anyhow!("the publisher panicked"))?;
        let (t0, c0, sent) = match published {
            Ok(v) => v,
            Err(e) => {
                // Let the subscribers stop.
                *done.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some((Instant::now(), 0));
                for h in hs {
                    let _ = h.join();
                }
                return Err(e);
            }
        };
        *done.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some((Instant::now(), sent));
        let mut r = Throughput {
            sent,
            got: 0,
            secs: 0.0,
            cpu: Duration::ZERO,
            size,
            subs,
            notes: Vec::new(),
        };
        let mut last = t0;
        for h in hs {
            let seen = h
                .join()
                .map_err(|_| anyhow::anyhow!("a subscriber panicked"))??;
            if seen.bad > 0 {
                bail!(
                    "{}: a subscriber got {} messages twice, out of order or of the wrong size",
                    t.name(),
                    seen.bad
                );
            }
            r.got += seen.got;
            if let Some(l) = seen.last {
                last = last.max(l);
            }
            if let Some(e) = seen.ended {
                r.notes.push(format!("a subscriber was cut off: {e}"));
            }
        }
        r.cpu = cpu_now(broker).saturating_sub(c0);
        r.secs = last.duration_since(t0).as_secs_f64();
        Ok(r)
    })
}

/// One latency case: round trips in microseconds, sorted, and the pings
/// that never came back.
pub struct Latency {
    pub rtts: Vec<f64>,
    pub lost: u64,
}

impl Latency {
    pub fn pct(&self, p: f64) -> f64 {
        if self.rtts.is_empty() {
            return f64::NAN;
        }
        let i = ((self.rtts.len() - 1) as f64 * p).round() as usize;
        self.rtts.get(i).copied().unwrap_or(f64::NAN)
    }
}

/// Ping-pong: one thread publishes a message on `ping-…` and waits for it
/// to come back on `pong-…`, where another thread echoes it; `rounds`
/// times (after 20 unmeasured ones), or until 20 s have passed.
pub fn latency(t: &dyn Transport, case: &str, size: usize, rounds: usize) -> Result<Latency> {
    let ping = format!("ping-{case}");
    let pong = format!("pong-{case}");
    let ready = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let echo = s.spawn(|| -> Result<()> {
            let started = (|| {
                Ok::<_, anyhow::Error>((t.subscriber(&ping, size)?, t.publisher(&pong, size)?))
            })();
            let (mut sub, mut p) = match started {
                Ok(v) => v,
                Err(e) => {
                    failed.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            };
            ready.fetch_add(1, Ordering::SeqCst);
            let mut err = None;
            while !stop.load(Ordering::SeqCst) {
                sub.recv(Duration::from_millis(50), &mut |m| {
                    if err.is_none() {
                        err = p.send(m).and_then(|_| p.flush()).err();
                    }
                })?;
                if let Some(e) = err.take() {
                    return Err(e);
                }
            }
            Ok(())
        });
        let pinger = s.spawn(|| -> Result<Latency> {
            let r = (|| {
                let mut p = t.publisher(&ping, size)?;
                let mut sub = t.subscriber(&pong, size)?;
                wait_ready(&ready, &failed, 1)?;
                p.wait_subscribers(1, Duration::from_secs(30))?;
                thread::sleep(Duration::from_millis(300));
                let mut lat = Latency {
                    rtts: Vec::with_capacity(rounds),
                    lost: 0,
                };
                let start = Instant::now();
                let mut m = message(0, size);
                for i in 0..(rounds + 20) as u64 {
                    if start.elapsed() > Duration::from_secs(20) {
                        break;
                    }
                    m[..8].copy_from_slice(&i.to_le_bytes());
                    let t0 = Instant::now();
                    p.send(&m)?;
                    p.flush()?;
                    let mut back = false;
                    while !back && t0.elapsed() < Duration::from_secs(1) {
                        sub.recv(Duration::from_millis(200), &mut |r| {
                            back |= seq_of(r) == Some(i)
                        })?;
                    }
                    let us = t0.elapsed().as_secs_f64() * 1e6;
                    match (back, i >= 20) {
                        (true, true) => lat.rtts.push(us),
                        (false, true) => lat.lost += 1,
                        _ => {}
                    }
                }
                lat.rtts.sort_by(|a, b| a.total_cmp(b));
                Ok(lat)
            })();
            stop.store(true, Ordering::SeqCst);
            r
        });
        let lat = pinger
            .join()
            .map_err(|_| anyhow::anyhow!("the pinger panicked"))?;
        stop.store(true, Ordering::SeqCst);
        echo.join()
            .map_err(|_| anyhow::anyhow!("the echo thread panicked"))?
            .context("the echo side")?;
        lat
    })
}
