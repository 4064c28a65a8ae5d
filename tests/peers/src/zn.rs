//! Zenoh in peer mode over loopback TCP, with its defaults (a publisher's
//! congestion control drops when the link is full; a subscriber's queue is
//! Zenoh's default FIFO channel). Each thread has one session: the first
//! session that declares a publisher listens on the transport's endpoint,
//! every other session connects to it, so a publisher is linked straight to
//! each of its subscribers (peers do not route for each other).

use crate::transport::{Publisher, Subscriber, Transport};
use anyhow::{anyhow, Result};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use zenoh::handlers::FifoChannelHandler;
use zenoh::sample::Sample;
use zenoh::Wait;

pub struct Zenoh {
    /// `tcp/127.0.0.1:PORT`.
    pub endpoint: String,
    listening: AtomicBool,
}

impl Zenoh {
    pub fn new(port: u16) -> Self {
        Self {
            endpoint: format!("tcp/127.0.0.1:{port}"),
            listening: AtomicBool::new(false),
        }
    }
}

thread_local! {
    static SESSION: RefCell<Option<zenoh::Session>> = const { RefCell::new(None) };
}

impl Zenoh {
    /// This thread's session; `listen`: a publisher asks, and becomes the
    /// listener if nobody is.
    fn session(&self, listen: bool) -> Result<zenoh::Session> {
        if let Some(s) = SESSION.with(|s| s.borrow().clone()) {
            return Ok(s);
        }
        let mut c = zenoh::Config::default();
        let set = |c: &mut zenoh::Config, k: &str, v: &str| {
            c.insert_json5(k, v)
                .map_err(|e| anyhow!("zenoh setting {k}={v}: {e}"))
        };
        set(&mut c, "mode", "\"peer\"")?;
        set(&mut c, "scouting/multicast/enabled", "false")?;
        set(&mut c, "connect/exit_on_failure", "false")?;
        set(&mut c, "connect/timeout_ms", "-1")?;
        let ep = format!("[\"{}\"]", self.endpoint);
        if listen && !self.listening.swap(true, Ordering::SeqCst) {
            set(&mut c, "listen/endpoints", &ep)?;
        } else {
            set(&mut c, "listen/endpoints", "[]")?;
            set(&mut c, "connect/endpoints", &ep)?;
        }
        let s = zenoh::open(c)
            .wait()
            .map_err(|e| anyhow!("opening a Zenoh session: {e}"))?;
        SESSION.with(|slot| *slot.borrow_mut() = Some(s.clone()));
        Ok(s)
    }
}

struct Pub {
    p: zenoh::pubsub::Publisher<'static>,
}

impl Publisher for Pub {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.p
            .put(msg.to_vec())
            .wait()
            .map_err(|e| anyhow!("zenoh put: {e}"))
    }
    fn wait_subscribers(&mut self, _n: usize, timeout: Duration) -> Result<()> {
        // Zenoh says whether any subscriber matches, not how many: the
        // harness also waits a moment after this for the rest.
        let t0 = Instant::now();
        while !self
            .p
            .matching_status()
            .wait()
            .map_err(|e| anyhow!("{e}"))?
            .matching()
        {
            if t0.elapsed() > timeout {
                anyhow::bail!("no Zenoh subscriber matched within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

struct Sub {
    s: zenoh::pubsub::Subscriber<FifoChannelHandler<Sample>>,
}

impl Subscriber for Sub {
    fn recv(&mut self, timeout: Duration, f: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let mut n = 0;
        let mut take = |sample: Sample| {
            f(&sample.payload().to_bytes());
            n += 1;
        };
        match self.s.recv_timeout(timeout) {
            Ok(Some(sample)) => take(sample),
            Ok(None) => return Ok(0),
            Err(e) => anyhow::bail!("zenoh subscriber: {e}"),
        }
        while let Ok(Some(sample)) = self.s.try_recv() {
            take(sample);
        }
        Ok(n)
    }
}

impl Transport for Zenoh {
    fn name(&self) -> String {
        "Zenoh (peer, TCP loopback)".into()
    }
    fn publisher(&self, topic: &str, _size: usize) -> Result<Box<dyn Publisher>> {
        let s = self.session(true)?;
        let p = s
            .declare_publisher(topic.to_string())
            .wait()
            .map_err(|e| anyhow!("declaring a Zenoh publisher: {e}"))?;
        Ok(Box::new(Pub { p }))
    }
    fn subscriber(&self, topic: &str, _size: usize) -> Result<Box<dyn Subscriber>> {
        let s = self.session(false)?;
        let sub = s
            .declare_subscriber(topic.to_string())
            .wait()
            .map_err(|e| anyhow!("declaring a Zenoh subscriber: {e}"))?;
        Ok(Box::new(Sub { s: sub }))
    }
}
