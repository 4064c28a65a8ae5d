//! The subscriber's loop: one epoll set for every topic, the `--follow`
//! watcher, a signalfd and stdout; mapped topics on a hot list, read until
//! they have nothing new; the others read with `read()` when ready.

use crate::format::{self, Format, Label, Style};
use crate::loss;
use crate::output::{Output, DIRECT, FLUSH_AT};
use crate::{Config, Plan};
use anyhow::{Context, Result};
use baf::device::{Record, Topic};
use baf::reader::{HotList, Reader, Step};
use baf::subscribe::{self, Lossless, StartAt, Subscribed, Topics};
use baf::watch::{self, Seen, Watcher};
use baf_cli::Failure;
use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::epoll::EpollEvent;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// One subscribed topic.
pub(crate) struct Sub {
    /// The topic, read through its mapping or with `read()`.
    reader: Reader,
    label: Label,
}

impl Subscribed for Sub {
    fn name(&self) -> &str {
        &self.label.name
    }
    fn topic(&self) -> &Topic {
        self.reader.topic()
    }
}

/// Appends `record` of topic `label` to `out` in `format`, counting the
/// `lost` records before it. The same for both ways of reading, so their
/// output is the same.
pub(crate) fn deliver(
    style: Style,
    out: &mut Vec<u8>,
    label: &Label,
    loss: &mut loss::LossReporter,
    record: &Record<'_>,
    lost: u64,
) {
    loss.add(&label.name, lost);
    format::write_record(style, out, label, record, lost);
}

pub(crate) const TOKEN_WATCH: u64 = 0;
pub(crate) const TOKEN_STDOUT: u64 = 1;
pub(crate) const TOKEN_SIGNAL: u64 = 2;
pub(crate) const TOKEN_FIRST_TOPIC: u64 = 16;

/// How the main loop ended.
pub(crate) enum End {
    /// Normally: exit 0.
    Done,
    /// By a signal, to be raised again once the output is out.
    Signal(Signal),
    /// `-W`'s time ran out.
    TimedOut,
}

pub(crate) struct Subscriber<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) plan: Plan,
    pub(crate) topics: Topics<Sub>,
    pub(crate) buf: Vec<u8>,
    pub(crate) out: Output,
    pub(crate) loss: loss::LossReporter,
    pub(crate) remaining: Option<u64>,
    pub(crate) watcher: Option<Watcher>,
    /// Topics already warned about (no permission, not a topic).
    pub(crate) warned: HashSet<String>,
    /// Mapped topics to read again without waiting.
    pub(crate) hot: HotList,
    /// How records are printed (the wall-clock offset kept fresh).
    pub(crate) style: Style,
    /// Records delivered so far.
    pub(crate) received: u64,
    /// When `-W` ends the run.
    pub(crate) deadline: Option<Instant>,
}

impl<'a> Subscriber<'a> {
    /// Opens `path` as topic `name` ([`subscribe::open`]) and adds it to
    /// the epoll set.
    pub(crate) fn join(&mut self, name: &str, path: &Path, start: StartAt) -> Result<()> {
        let lossless = if self.cfg.lossless {
            Lossless::Required
        } else {
            Lossless::No
        };
        // The file is where the reader starts: the ring is mapped from
        // there, or the file is read. A lossless reader reads the file:
        // each read() releases the writers at once.
        let (reader, warning) = Reader::open(name, path, start, lossless, !self.cfg.no_mmap)?;
        if let Some(e) = warning {
            eprintln!("submsg: topic {name}: cannot read it through a mapping ({e}); using read()");
        }
        let mapped = reader.is_mapped();
        if !mapped {
            subscribe::fit(&mut self.buf, reader.info().record_max);
        }
        let token = self.topics.add(Sub {
            reader,
            label: Label::new(name),
        })?;
        if mapped {
            // History (--from) may be waiting: read before sleeping.
            self.hot.keep(token);
        }
        Ok(())
    }

    /// Joins a topic found by a pattern (or by none) or by `--follow`: a
    /// problem never ends submsg; it is returned for the caller to report
    /// ([`Self::warn_skip`]).
    pub(crate) fn join_found(
        &mut self,
        name: &str,
        path: &Path,
        start: StartAt,
    ) -> Option<anyhow::Error> {
        match self.join(name, path, start) {
            Ok(()) => {
                self.warned.remove(name);
                None
            }
            Err(e) => Some(e),
        }
    }

    /// Whether an error joining a topic found by listing or `--follow` is
    /// not worth a word: a node that vanished in between, or, when no topic
    /// was named (every topic), one this user may not read.
    pub(crate) fn quiet_skip(&self, e: &anyhow::Error) -> bool {
        match baf_cli::class(e) {
            Some(Failure::NoTopic) => true,
            Some(Failure::Permission) => self.cfg.topics.is_empty(),
            _ => false,
        }
    }

    /// Says on stderr (once per topic) that topic `name` is skipped because
    /// of `e`, unless that is not worth a word ([`Self::quiet_skip`]).
    pub(crate) fn warn_skip(&mut self, name: &str, e: &anyhow::Error) {
        if !self.quiet_skip(e) && self.warned.insert(name.to_string()) {
            eprintln!("submsg: skipping topic {name}: {}", baf_cli::message(e));
        }
    }

    /// Switches topic `token` to `splice` where it can be
    /// ([`Reader::use_splice`]); it stays as it is where it cannot.
    pub(crate) fn use_splice(&mut self, token: u64) -> Result<()> {
        if let Some(sub) = self.topics.get_mut(token) {
            sub.reader.use_splice()?;
        }
        Ok(())
    }

    fn drop_sub(&mut self, token: u64) {
        self.topics.remove(token);
    }

    /// One read of a topic, whichever way it is read: records through a
    /// mapping are formatted into the output buffer; from `read()`, large
    /// raw payloads go from the read buffer to stdout directly (what
    /// [`deliver`] would do, without the copy).
    fn read_topic(&mut self, token: u64) -> Result<Step> {
        let Self {
            topics,
            buf,
            out,
            loss,
            remaining,
            cfg,
            style,
            received,
            ..
        } = self;
        let Some(sub) = topics.get_mut(token) else {
            return Ok(Step::Gone);
        };
        if sub.reader.is_spliced() {
            // Payloads as they are, moved by the kernel into the stdout
            // pipe; anything buffered goes first.
            if !out.buf.is_empty() {
                out.flush()?;
            }
            if out.closed {
                return Ok(Step::Idle);
            }
            let batch = match sub.reader.splice_payloads(out.file.as_fd()) {
                Ok(b) => b,
                // `submsg t | head -1`: the reader is done, so are we.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    out.closed = true;
                    return Ok(Step::Idle);
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "moving the records of topic {} to stdout",
                        sub.label.name
                    )))
                }
            };
            loss.add(&sub.label.name, batch.lost);
            *received += batch.records;
            if batch.step == Step::Gone {
                self.drop_sub(token);
            }
            return Ok(batch.step);
        }
        let style = *style;
        let direct = !sub.reader.is_mapped()
            && matches!(style.format, Format::Raw | Format::Len32)
            && !style.nul;
        let label = &sub.label;
        // Set when writing stdout failed (that error is returned as it is).
        let mut output_failed = false;
        let limit = remaining.unwrap_or(u64::MAX);
        let read = if sub.reader.is_mapped() && style.format == Format::Raw && !style.nul {
            // Raw payloads go straight from the mapping into the output
            // buffer: nothing is added to them, so no record is needed.
            sub.reader
                .read_payloads(buf, &mut out.buf, limit)
                .inspect(|batch| loss.add(&label.name, batch.lost))
        } else {
            sub.reader.read(buf, limit, |record, lost| {
                if direct && record.payload.len() >= DIRECT {
                    loss.add(&label.name, lost);
                    if style.format == Format::Len32 {
                        out.buf
                            .extend_from_slice(&(record.payload.len() as u32).to_be_bytes());
                    }
                    let r = out.flush_with(record.payload);
                    output_failed = r.is_err();
                    r
                } else {
                    deliver(style, &mut out.buf, label, loss, record, lost);
                    Ok(())
                }
            })
        };
        let batch = match read {
            Ok(b) => b,
            Err(e) if output_failed || sub.reader.is_mapped() => return Err(e),
            Err(e) if baf::error::errno(&e) == Some(libc::EPIPE) && cfg.lossless => {
                // Demoted by the topic's stall timeout: what was delivered
                // is complete up to here; say so and stop.
                out.flush()?;
                return Err(e.context(format!(
                    "topic {}: this lossless reader held the writer up past the topic's stall timeout and was made lossy; records after the output's end were lost",
                    sub.label.name
                )));
            }
            Err(e) => return Err(e.context(format!("reading topic {}", sub.label.name))),
        };
        if let Some(r) = remaining {
            *r = r.saturating_sub(batch.records);
        }
        *received += batch.records;
        if batch.step == Step::Gone {
            self.drop_sub(token);
        }
        Ok(batch.step)
    }

    /// Reads each hot (mapped, busy) topic once; keeps those that had
    /// something, and lets the others sleep in epoll.
    fn serve_hot(&mut self) -> Result<()> {
        let hot = self.hot.take();
        for (i, &token) in hot.iter().enumerate() {
            if self.done() {
                for &rest in hot.get(i..).unwrap_or_default() {
                    self.hot.keep(rest);
                }
                break;
            }
            let step = self.read_topic(token)?;
            let reader = self.topics.get_mut(token).map(|sub| &mut sub.reader);
            self.hot.after(token, step, reader)?;
            if self.out.buf.len() >= FLUSH_AT {
                self.out.flush()?;
            }
        }
        Ok(())
    }

    /// Epoll says topic `token` is ready.
    fn on_ready(&mut self, token: u64) -> Result<()> {
        match self.topics.get(token) {
            Some(sub) if self.hot.ready(token, &sub.reader) => self.read_topic(token).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Topics that `--follow` saw appear.
    fn on_found(&mut self, found: Vec<watch::Found>) -> Result<()> {
        for (name, path) in found {
            if !self.plan.selects(&name) {
                continue;
            }
            match self.topics.seen(&name) {
                Seen::Same => continue, // the topic we already read
                Seen::Remade(token) => {
                    // Removed and made again: finish the old one first.
                    for _ in 0..1_000_000 {
                        if self.read_topic(token)? == Step::Gone {
                            break;
                        }
                    }
                    self.drop_sub(token);
                }
                Seen::New => {}
            }
            // A topic made while we run: read it from its beginning.
            if let Some(e) = self.join_found(&name, &path, StartAt::Oldest) {
                self.warn_skip(&name, &e);
            }
        }
        Ok(())
    }

    pub(crate) fn report_loss(&mut self, force: bool) {
        if self.out.closed {
            // Whoever read our output is gone (`submsg | head -1`): the end
            // is quiet, and records lost after that matter to no one.
            return;
        }
        for line in self.loss.take(Instant::now(), force) {
            eprintln!("submsg: {line}");
        }
    }

    fn done(&self) -> bool {
        self.out.closed
            || self.remaining == Some(0)
            || (self.topics.is_empty() && self.watcher.is_none())
    }

    /// For `--last`: reads every topic until it has nothing new, then
    /// drops it; what is buffered now is all that is printed.
    pub(crate) fn drain(&mut self) -> Result<()> {
        for token in self.topics.tokens() {
            loop {
                if self.done() {
                    return Ok(());
                }
                let step = self.read_topic(token)?;
                if self.out.buf.len() >= FLUSH_AT {
                    self.out.flush()?;
                }
                if step != Step::Data {
                    break;
                }
            }
            self.drop_sub(token);
        }
        self.hot.clear();
        Ok(())
    }

    /// How long until `-W`'s time runs out (`None` without `-W`).
    fn time_left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    pub(crate) fn run(&mut self, signals: &SignalFd) -> Result<End> {
        let mut events = vec![EpollEvent::empty(); 256];
        while !self.done() {
            // Kept fresh, so that a clock step shows in the next records.
            self.style.wall_offset_ns = format::wall_offset_ns();
            self.serve_hot()?;
            if self.done() {
                break;
            }
            let wait = [self.loss.due_in(Instant::now()), self.time_left()]
                .into_iter()
                .flatten()
                .min();
            let timeout = if !self.hot.is_empty() || !self.out.buf.is_empty() {
                PollTimeout::ZERO
            } else if let Some(d) = wait {
                PollTimeout::try_from(d.as_millis().saturating_add(1).min(60_000) as u64)
                    .unwrap_or(PollTimeout::ZERO)
            } else {
                PollTimeout::NONE
            };
            let n = match self.topics.epoll().wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("waiting for topics"),
            };
            if n == 0 && self.hot.is_empty() {
                // Idle: everything read is written now.
                self.out.flush()?;
            }
            for ev in events.iter().take(n) {
                match ev.data() {
                    TOKEN_WATCH => {
                        let found = match self.watcher.as_mut() {
                            Some(w) => w.events()?,
                            None => Vec::new(),
                        };
                        self.on_found(found)?;
                    }
                    TOKEN_STDOUT => {
                        // The pipe's reader is gone (EPOLLERR): stop now
                        // rather than at the next write.
                        self.out.closed = true;
                    }
                    TOKEN_SIGNAL => {
                        if let Ok(Some(info)) = signals.read_signal() {
                            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                                return Ok(End::Signal(sig));
                            }
                        }
                    }
                    token => self.on_ready(token)?,
                }
                if self.done() {
                    break;
                }
            }
            self.report_loss(false);
            if self.out.buf.len() >= FLUSH_AT {
                self.out.flush()?;
            }
            // Checked after a pass, so what was ready when the time ran
            // out is still printed.
            if self.time_left() == Some(Duration::ZERO) && !self.done() {
                return Ok(End::TimedOut);
            }
        }
        Ok(End::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_counts_loss_and_formats_like_write_record() {
        use baf::abi::RecordHeader;
        let label = Label::new("t");
        let mut loss = loss::LossReporter::new(loss::INTERVAL);
        let mut out = Vec::new();
        for (seq, payload, lost) in [(5u64, &b"a\n"[..], 0), (6, b"b\n", 0), (9, b"c\n", 2)] {
            let header = RecordHeader {
                len: payload.len() as u32,
                seq,
                ..RecordHeader::default()
            };
            let record = Record { header, payload };
            deliver(
                Format::Json.into(),
                &mut out,
                &label,
                &mut loss,
                &record,
                lost,
            );
        }
        assert_eq!(loss.total("t"), 2);
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let lost: Vec<_> = lines.iter().map(|v| v["lost"].as_u64().unwrap()).collect();
        assert_eq!(lost, vec![0, 0, 2]);
    }
}
