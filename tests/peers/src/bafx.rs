//! baf itself, through libbaf as the tools use it: a topic per name
//! (`/dev/baf/<name>`, made by the bench script), `write()` publishers (a
//! message each, or batches of up to 512 frames and 64 KiB), and readers that `read()` in
//! record mode or read the mapped ring ([`baf::reader::Reader`], submsg's
//! reader). Readers wait in `poll()`.

use crate::transport::{Publisher, Subscriber, Transport};
use anyhow::{Context, Result};
use baf::abi;
use baf::batch::{write_batch, Batch};
use baf::device::Topic;
use baf::reader::{Reader, Step};
use baf::subscribe::{Lossless, StartAt};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Records a batch `write()` carries at most...
pub const BATCH: usize = 512;
/// ...and payload bytes (as `pubmsg`, which batches what one 64 KiB read of
/// its input holds): a batch of 512 large records would be larger than the
/// ring and lap every reader by itself.
pub const BATCH_BYTES: usize = 64 * 1024;

pub struct Baf {
    /// Readers map the ring (else they `read()`).
    pub mmap: bool,
    /// The publisher writes batches of [`BATCH`] (else a message a `write()`).
    pub batch: bool,
}

/// The topic a harness topic name stands for: its first word, so that
/// `t-3` (case 3's topic on the other buses) is `/dev/baf/peer-t`.
fn path(topic: &str) -> PathBuf {
    let base = topic.split('-').next().unwrap_or(topic);
    baf::topic_path(&format!("peer-{base}"))
}

struct Pub {
    t: Topic,
    batch: Option<Batch>,
}

impl Publisher for Pub {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        match self.batch.as_mut() {
            None => {
                (&mut self.t.file())
                    .write_all(msg)
                    .context("writing a record")?;
            }
            Some(b) => {
                b.push(msg)?;
                if b.records() == BATCH || b.payload_bytes() >= BATCH_BYTES {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        if let Some(b) = self.batch.as_mut() {
            if !b.is_empty() {
                write_batch(self.t.file(), b.as_bytes())?;
                b.clear();
            }
        }
        Ok(())
    }
}

struct Sub {
    r: Reader,
    buf: Vec<u8>,
}

impl Subscriber for Sub {
    fn recv(&mut self, timeout: Duration, f: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let b = self.r.read(&mut self.buf, u64::MAX, |rec, _lost| {
                f(rec.payload);
                Ok(())
            })?;
            if b.records > 0 {
                return Ok(b.records as usize);
            }
            match b.step {
                Step::Data => continue,
                Step::Gone => anyhow::bail!("the topic was removed"),
                Step::Idle => {}
            }
            if !self.r.prepare_wait()? {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            let mut pfd = libc::pollfd {
                fd: self.r.topic().file().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e).context("poll on a topic");
                }
            }
        }
    }
}

impl Transport for Baf {
    fn name(&self) -> String {
        match (self.batch, self.mmap) {
            (false, false) => "baf, read() readers".into(),
            (false, true) => "baf, mapped readers".into(),
            (true, _) => "baf, batched writes, mapped readers".into(),
        }
    }
    fn publisher(&self, topic: &str, _size: usize) -> Result<Box<dyn Publisher>> {
        let p = path(topic);
        let t = Topic::open(&p, true, false).with_context(|| format!("opening {}", p.display()))?;
        let batch = if self.batch {
            t.set_flags(abi::FLAG_BATCH).context("setting FLAG_BATCH")?;
            Some(Batch::with_capacity(1 << 20))
        } else {
            None
        };
        Ok(Box::new(Pub { t, batch }))
    }
    fn subscriber(&self, topic: &str, _size: usize) -> Result<Box<dyn Subscriber>> {
        let p = path(topic);
        let (r, warning) = Reader::open(topic, &p, StartAt::Now, Lossless::No, self.mmap)?;
        if let Some(w) = warning {
            anyhow::bail!("mapping {}: {w}", p.display());
        }
        if self.mmap && !r.is_mapped() {
            anyhow::bail!("{} could not be mapped", p.display());
        }
        Ok(Box::new(Sub {
            r,
            buf: vec![0; 256 * 1024],
        }))
    }
}
