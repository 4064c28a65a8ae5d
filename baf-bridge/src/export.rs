//! Export: local topics to Zenoh.
//!
//! One thread and one epoll set, as `submsg` does it (both open and read
//! topics with [`baf::subscribe`] and follow them with [`baf::watch`]): every exported topic
//! is an open file in record mode (`read()`, many whole records a call),
//! with the `--follow` watcher for topics created later, and an eventfd that
//! says stop. The records of one read become one Zenoh sample on their
//! topic's key (or a few, at most [`attach::SAMPLE_BYTES`] each): the
//! frames as they were read, each with its own seq, time, pid, uid and
//! writer, and one attachment for the batch ([`crate::attach`]).
//!
//! Records the bridge wrote itself (its imports) are skipped: their
//! kernel-stamped writer is this process. A topic that allows lossless
//! readers is read losslessly, and its samples are sent with Zenoh's
//! blocking congestion control, so nothing is lost between the writer and
//! the network: a slow network holds the topic's writers up instead.

use crate::attach::{self, Attachment};
use crate::config::{Congestion, Settings};
use crate::loss::Cause;
use crate::Shared;
use anyhow::{Context, Result};
use baf::abi;
use baf::device::Topic;
use baf::subscribe::{self, Lossless, Opened, StartAt, Step, Subscribed, Topics};
use baf::watch::{self, Seen, Watcher};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;
use zenoh::pubsub::Publisher;
use zenoh::qos::CongestionControl;
use zenoh::{Session, Wait};

const TOKEN_WATCH: u64 = 0;
const TOKEN_STOP: u64 = 1;
const TOKEN_FIRST_TOPIC: u64 = 16;

/// Reads of one topic in a row before the others get a turn.
const READS_IN_A_ROW: usize = 8;

/// This process as a record's writer: its pid, and its pidfs inode (ABI 4;
/// 0 where the kernel has no pidfs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Me {
    /// `getpid()`.
    pub pid: u32,
    /// The pidfs inode number of this process (`fstat` of a pidfd).
    pub writer: u64,
}

impl Me {
    /// This process.
    pub fn current() -> Self {
        Self {
            pid: std::process::id(),
            writer: own_pidfs_inode(),
        }
    }

    /// Whether `h` is a record this process wrote: the kernel stamps the
    /// writer's identity and pid, which no writer can forge.
    pub fn wrote(&self, h: &abi::RecordHeader) -> bool {
        if self.writer != 0 && h.writer != 0 {
            h.writer == self.writer
        } else {
            h.pid != 0 && h.pid == self.pid
        }
    }
}

/// The pidfs inode number of this process, 0 if there is none.
fn own_pidfs_inode() -> u64 {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    // SAFETY: pidfd_open takes a pid and flags and returns a new file
    // descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    let Ok(fd) = i32::try_from(fd) else { return 0 };
    if fd < 0 {
        return 0;
    }
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody
    // else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(fd).metadata().map_or(0, |m| m.ino())
}

/// `CLOCK_REALTIME` minus `CLOCK_MONOTONIC`, in ns: added to a record's
/// monotonic timestamp, the wall-clock time it was written.
fn realtime_offset() -> i128 {
    let ns = |id| {
        nix::time::clock_gettime(id).map_or(0i128, |t| {
            i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
        })
    };
    ns(nix::time::ClockId::CLOCK_REALTIME) - ns(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// One exported topic.
struct Exported {
    name: String,
    topic: Topic,
    publisher: Publisher<'static>,
    /// The sequence number expected next; a record above it means loss.
    expect: u64,
    lossless: bool,
    /// Lost in the ring since the last sample, sent with the next one.
    lost: u64,
    /// Not exported since the last sample (our own), sent with the next.
    skipped: u64,
    /// A failed `put` was logged.
    put_failed: bool,
}

impl Subscribed for Exported {
    fn name(&self) -> &str {
        &self.name
    }
    fn topic(&self) -> &Topic {
        &self.topic
    }
}

/// A batch being gathered: frames copied, and a run of frames still in
/// the read buffer (counted, not yet copied).
#[derive(Default)]
struct Outgoing {
    frames: Vec<u8>,
    count: u32,
    bytes: u64,
    pending: u32,
    pending_bytes: u64,
}

impl Outgoing {
    /// Copies the pending run, `run`, into the batch.
    fn take(&mut self, run: &[u8]) {
        if run.is_empty() {
            return;
        }
        if self.frames.is_empty() {
            self.frames.reserve_exact(run.len());
        }
        let start = self.frames.len();
        self.frames.extend_from_slice(run);
        attach::native_to_wire(&mut self.frames, start);
        self.count += self.pending;
        self.bytes += self.pending_bytes;
        self.pending = 0;
        self.pending_bytes = 0;
    }
}

/// What every sample of one read shares.
struct Out<'a> {
    host: &'a str,
    bridge: [u8; 16],
    realtime_offset: i64,
}

impl Out<'_> {
    /// Publishes `batch` on `t`'s key with its attachment; the records and
    /// payload bytes sent.
    fn send(&self, t: &mut Exported, batch: Outgoing) -> (u64, u64) {
        let att = Attachment {
            flags: if t.lossless { attach::FLAG_LOSSLESS } else { 0 },
            count: batch.count,
            lost: t.lost,
            skipped: t.skipped,
            realtime_offset: self.realtime_offset,
            bridge: self.bridge,
            host: self.host,
            topic: t.name.as_str(),
        };
        match t
            .publisher
            .put(batch.frames)
            .attachment(att.encode())
            .wait()
        {
            Ok(()) => {
                t.lost = 0;
                t.skipped = 0;
                t.put_failed = false;
                (u64::from(batch.count), batch.bytes)
            }
            Err(e) => {
                if !t.put_failed {
                    tracing::warn!(
                        "topic {}: cannot publish records: {}",
                        t.name,
                        crate::names::zenoh_message(&e)
                    );
                    t.put_failed = true;
                }
                (0, 0)
            }
        }
    }
}

/// The export side of the bridge.
pub struct Exporter<'a> {
    settings: &'a Settings,
    session: &'a Session,
    shared: &'a Shared,
    watcher: Option<Watcher>,
    topics: Topics<Exported>,
    buf: Vec<u8>,
    me: Me,
    bridge: [u8; 16],
    /// Topics already warned about.
    warned: HashSet<String>,
}

impl<'a> Exporter<'a> {
    /// Sets up the epoll set and the watcher, and joins the topics that
    /// exist and are exported.
    pub fn new(settings: &'a Settings, session: &'a Session, shared: &'a Shared) -> Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("creating an epoll set")?;
        epoll
            .add(
                shared.stop.wake.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_STOP),
            )
            .context("watching the stop event")?;
        // Watch before listing, so that a topic made in between is seen.
        let (watcher, _) =
            Watcher::new(&baf::dev_dir()).context("watching for topics created later")?;
        epoll
            .add(
                watcher.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WATCH),
            )
            .context("watching the topic directory")?;
        let mut ex = Self {
            settings,
            session,
            shared,
            watcher: Some(watcher),
            topics: Topics::new(epoll, TOKEN_FIRST_TOPIC),
            buf: vec![0u8; 256 * 1024],
            me: Me::current(),
            bridge: session.zid().to_le_bytes(),
            warned: HashSet::new(),
        };
        let existing = watch::existing_topics()?;
        for (name, path) in existing {
            if settings.exports(&name) {
                // Existing topics: from now on, as submsg reads them.
                ex.join(&name, &path, false);
            }
        }
        Ok(ex)
    }

    /// Starts exporting topic `name`; from its oldest buffered record when
    /// `from_oldest` (a topic created while the bridge runs). A problem is
    /// logged once and the topic skipped.
    fn join(&mut self, name: &str, path: &Path, from_oldest: bool) {
        match self.try_join(name, path, from_oldest) {
            Ok(()) => {
                self.warned.remove(name);
            }
            Err(e) => {
                if self.warned.insert(name.to_string()) {
                    tracing::warn!("cannot export topic {name}: {}", baf_cli::message(&e));
                }
            }
        }
    }

    fn try_join(&mut self, name: &str, path: &Path, from_oldest: bool) -> Result<()> {
        // Never losslessly where this bridge's own imports may go: it
        // would hold its own writes up.
        let lossless = if self.settings.import_target(name) {
            Lossless::No
        } else {
            Lossless::IfAllowed
        };
        let start = if from_oldest {
            StartAt::Oldest
        } else {
            StartAt::Now
        };
        let Opened {
            topic,
            info,
            expect,
            lossless,
            refused,
        } = subscribe::open(name, path, start, lossless)?;
        if refused {
            tracing::warn!(
                "topic {name}: its owner does not let this user read losslessly; exporting it lossy"
            );
        }
        subscribe::fit(&mut self.buf, info.record_max);
        let block = match self.settings.congestion {
            Congestion::Auto => lossless,
            Congestion::Block => true,
            Congestion::Drop => false,
        };
        let key = crate::names::export_key(&self.settings.key_prefix, name);
        let publisher = self
            .session
            .declare_publisher(key.clone())
            .congestion_control(if block {
                CongestionControl::Block
            } else {
                CongestionControl::Drop
            })
            .wait()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot declare a Zenoh publisher for {key}: {}",
                    crate::names::zenoh_message(&e)
                )
            })?;
        self.topics.add(Exported {
            name: name.to_string(),
            topic,
            publisher,
            expect,
            lossless,
            lost: 0,
            skipped: 0,
            put_failed: false,
        })?;
        tracing::info!(
            "exporting topic {name} as {key} ({}, congestion control {})",
            if lossless { "read losslessly" } else { "lossy" },
            if block { "block" } else { "drop" }
        );
        Ok(())
    }

    fn drop_topic(&mut self, token: u64, why: &str) {
        if let Some(t) = self.topics.remove(token) {
            tracing::info!("topic {} {why}: no longer exported", t.name);
            let _ = t.publisher.undeclare().wait();
        }
    }

    /// Reads topic `token` until it has nothing more (or others deserve a
    /// turn), publishing every record.
    fn read_topic(&mut self, token: u64) -> Result<()> {
        for _ in 0..READS_IN_A_ROW {
            let Some(t) = self.topics.get_mut(token) else {
                return Ok(());
            };
            let n = match subscribe::read(&t.topic, &mut self.buf) {
                Ok(Step::Records(n)) => n,
                Ok(Step::Idle) => return Ok(()),
                Ok(Step::Again) => continue,
                Ok(Step::Gone) => {
                    self.drop_topic(token, "was removed");
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) && t.lossless => {
                    // The topic's stall timeout made us lossy: what was
                    // overwritten shows as a gap. A demoted file cannot be
                    // lossless again (ABI 5): lossy from now on.
                    tracing::warn!(
                        "topic {}: the bridge held its writer up past the topic's stall timeout and was made lossy; exporting it lossy until the bridge restarts",
                        t.name
                    );
                    t.lossless = false;
                    continue;
                }
                Err(e) => {
                    tracing::warn!("reading topic {}: {e}", t.name);
                    self.drop_topic(token, "cannot be read");
                    return Ok(());
                }
            };
            self.publish(token, n);
            if n < self.buf.len() / 2 {
                // Most likely all there was.
                return Ok(());
            }
        }
        Ok(())
    }

    /// Publishes the records in the first `n` bytes of the read buffer:
    /// one sample per batch of them ([`attach`]). A batch is the frames as
    /// they were read, less the bridge's own records; it ends at
    /// [`attach::SAMPLE_BYTES`], and before a record that follows a loss
    /// (the loss count travels with the batch and is the loss before its
    /// first record).
    fn publish(&mut self, token: u64, n: usize) {
        let Self {
            topics,
            buf,
            me,
            shared,
            settings,
            bridge,
            ..
        } = self;
        let Some(t) = topics.get_mut(token) else {
            return;
        };
        let read = buf.get(..n).unwrap_or_default();
        let out = Out {
            host: settings.host_name.as_str(),
            bridge: *bridge,
            realtime_offset: i64::try_from(realtime_offset()).unwrap_or(0),
        };
        let mut batch = Outgoing::default();
        // The frames from `run` to `at` go into the batch as they are.
        let (mut run, mut at) = (0usize, 0usize);
        let (mut records, mut bytes) = (0u64, 0u64);
        while let Some(h) = read.get(at..).and_then(abi::RecordHeader::from_bytes) {
            let len = h.len as usize;
            let span = abi::record_span(len);
            if at + span > n {
                break;
            }
            let gap = h.seq.saturating_sub(t.expect);
            t.expect = h.seq.wrapping_add(1);
            let own = me.wrote(&h);
            let full = batch.frames.len() + (at - run) + span > attach::SAMPLE_BYTES;
            if gap > 0 || own || full {
                batch.take(read.get(run..at).unwrap_or_default());
                run = at;
                if (gap > 0 || full) && batch.count > 0 {
                    let (r, b) = out.send(t, std::mem::take(&mut batch));
                    records += r;
                    bytes += b;
                }
            }
            if gap > 0 {
                t.lost += gap;
                shared.add_loss(Cause::BeforeExport, &t.name, gap);
            }
            if own {
                t.skipped += 1;
                run = at + span;
            } else {
                batch.pending += 1;
                batch.pending_bytes += len as u64;
            }
            at += span;
        }
        batch.take(read.get(run..at).unwrap_or_default());
        if batch.count > 0 {
            let (r, b) = out.send(t, batch);
            records += r;
            bytes += b;
        }
        shared.exported.add(records, bytes);
    }

    /// Topics the watcher saw appear.
    fn on_found(&mut self) -> Result<()> {
        let found = match self.watcher.as_mut() {
            Some(w) => w.events()?,
            None => return Ok(()),
        };
        for (name, path) in found {
            if !self.settings.exports(&name) {
                continue;
            }
            match self.topics.seen(&name) {
                Seen::Same => continue,
                Seen::Remade(token) => {
                    // Removed and made again: finish the old one first.
                    for _ in 0..1000 {
                        if self.topics.get(token).is_none() {
                            break;
                        }
                        self.read_topic(token)?;
                    }
                    self.drop_topic(token, "was removed");
                }
                Seen::New => {}
            }
            self.join(&name, &path, true);
        }
        Ok(())
    }

    /// Runs until asked to stop.
    pub fn run(&mut self) -> Result<()> {
        let mut events = vec![EpollEvent::empty(); 64];
        while !self.shared.stop.requested() {
            let timeout = match self.shared.loss_due_in(Instant::now()) {
                Some(d) => EpollTimeout::try_from(d.as_millis().saturating_add(1).min(1000) as u64)
                    .unwrap_or(EpollTimeout::ZERO),
                None => EpollTimeout::from(1000u16),
            };
            let n = match self.topics.epoll().wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("waiting for topics"),
            };
            for ev in events.iter().take(n) {
                match ev.data() {
                    TOKEN_STOP => {}
                    TOKEN_WATCH => self.on_found()?,
                    token => self.read_topic(token)?,
                }
                if self.shared.stop.requested() {
                    break;
                }
            }
            self.shared.report_loss(false);
        }
        for token in self.topics.tokens() {
            if let Some(t) = self.topics.remove(token) {
                let _ = t.publisher.undeclare().wait();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_records_by_identity_or_pid() {
        let me = Me {
            pid: 100,
            writer: 5000,
        };
        let h = |pid, writer| abi::RecordHeader {
            pid,
            writer,
            ..abi::RecordHeader::default()
        };
        assert!(me.wrote(&h(100, 5000)));
        // The identity decides when both sides have one (a pid may be
        // reused, or seen through another namespace).
        assert!(!me.wrote(&h(100, 6000)));
        assert!(me.wrote(&h(7, 5000)));
        // Without identities, the pid; pid 0 (not visible) is nobody.
        assert!(me.wrote(&h(100, 0)));
        assert!(!me.wrote(&h(101, 0)));
        let no_pidfs = Me { pid: 0, writer: 0 };
        assert!(!no_pidfs.wrote(&h(0, 0)));
    }

    #[test]
    fn this_process_has_an_identity() {
        let me = Me::current();
        assert_eq!(me.pid, std::process::id());
        // pidfs came with Linux 6.9; older hosts give 0.
        if me.writer != 0 {
            assert_eq!(Me::current().writer, me.writer, "stable");
        }
    }

    #[test]
    fn realtime_offset_is_plausible() {
        // Since 2020 and monotonic since boot: the offset is after 2020.
        assert!(realtime_offset() > 1_577_836_800 * 1_000_000_000);
    }
}
