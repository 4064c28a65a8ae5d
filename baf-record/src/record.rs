//! `baf-record record`: the recording loop. One thread and one epoll set:
//! the topics (read through their mappings, or with `read()` when lossless;
//! [`baf::reader`]), the watcher that joins topics created later, a
//! signalfd for the signals that end it and one for `SIGUSR1` (a dashcam
//! trigger, or a new file). Records go to the current file ([`Sink`]), or,
//! in dashcam mode, into the window until a trigger.

use crate::dashcam::Dashcam;
use crate::file::TopicMeta;
use crate::output::Output;
use crate::sink::{mono_ns, Known, Sink};
use anyhow::{Context, Result};
use baf::device::Topic;
use baf::pattern::{split_list, Pattern, Selection};
use baf::reader::{HotList, Reader, Step};
use baf::subscribe::{Lossless, StartAt, Subscribed, Topics};
use baf::watch::{Seen, Watcher};
use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `record` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Topic patterns (comma lists too); none means every topic.
    pub topics: Vec<String>,
    /// Patterns to leave out.
    pub exclude: Vec<String>,
    /// `-o`: a directory or a file.
    pub output: std::path::PathBuf,
    /// File names in a directory start with this.
    pub prefix: String,
    /// Read losslessly where the topic allows it.
    pub lossless: bool,
    /// Never read through a mapping.
    pub no_mmap: bool,
    /// Where topics existing at the start are read from.
    pub start: StartAt,
    /// Start a new file past this many bytes.
    pub split_size: Option<u64>,
    /// Start a new file after this long.
    pub split_time: Option<Duration>,
    /// Keep at most this many files.
    pub max_files: Option<usize>,
    /// Chunk compression.
    pub compression: crate::file::Compression,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Dashcam mode.
    pub dashcam: Option<DashcamSettings>,
}

/// The dashcam's settings.
#[derive(Clone, Debug, Default)]
pub struct DashcamSettings {
    /// Kept in memory before a trigger.
    pub before: Duration,
    /// Written after the last trigger.
    pub after: Duration,
    /// Most bytes held.
    pub max_memory: u64,
    /// Any record on these topics is a trigger.
    pub triggers: Vec<String>,
}

fn usage(e: baf::pattern::PatternError) -> anyhow::Error {
    baf::error::Kind::Invalid.wrap(anyhow::Error::new(e))
}

/// Patterns and excludes as a selection; exact names are checked.
pub fn selection(topics: &[String], exclude: &[String]) -> Result<Selection> {
    let mut sel = Selection::default();
    for item in split_list(topics).map_err(usage)? {
        if baf::sys::is_path(&item) {
            return Err(baf::error::Kind::Invalid.error(format!(
                "{item}: baf-record takes topic names and patterns, not device paths"
            )));
        }
        let p = Pattern::parse(&item).map_err(usage)?;
        if let Some(name) = p.exact() {
            baf::control::check_name(name)?;
        }
        sel.include.push(p);
    }
    for item in split_list(exclude).map_err(usage)? {
        sel.exclude.push(Pattern::parse(&item).map_err(usage)?);
    }
    Ok(sel)
}

struct Sub {
    reader: Reader,
    index: usize,
}

impl Subscribed for Sub {
    fn name(&self) -> &str {
        self.reader.name()
    }
    fn topic(&self) -> &Topic {
        self.reader.topic()
    }
}

const TOKEN_WATCH: u64 = 0;
const TOKEN_SIGNAL: u64 = 1;
const TOKEN_USR1: u64 = 2;
const TOKEN_FIRST_TOPIC: u64 = 16;

struct Recorder<'a> {
    s: &'a Settings,
    selection: Selection,
    triggers: Selection,
    topics: Topics<Sub>,
    sink: Sink,
    buf: Vec<u8>,
    hot: HotList,
    watcher: Watcher,
    warned: HashSet<String>,
}

impl Recorder<'_> {
    fn join(&mut self, name: &str, path: &Path, start: StartAt) {
        let record = self.selection.matches(name);
        let trigger = !self.triggers.include.is_empty() && self.triggers.matches(name);
        if !record && !trigger {
            return;
        }
        let lossless = if self.s.lossless {
            Lossless::IfAllowed
        } else {
            Lossless::No
        };
        let (reader, warning) = match Reader::open(name, path, start, lossless, !self.s.no_mmap) {
            Ok(r) => r,
            Err(e) => {
                let quiet = baf_cli::class(&e) == Some(baf_cli::Failure::NoTopic)
                    || (baf_cli::class(&e) == Some(baf_cli::Failure::Permission)
                        && self.s.topics.is_empty());
                if !quiet && self.warned.insert(name.to_string()) {
                    eprintln!(
                        "baf-record: skipping topic {name}: {}",
                        baf_cli::message(&e)
                    );
                }
                return;
            }
        };
        self.warned.remove(name);
        if let Some(e) = warning {
            eprintln!(
                "baf-record: topic {name}: cannot read it through a mapping ({e}); using read()"
            );
        }
        if reader.refused() && self.warned.insert(name.to_string()) {
            eprintln!(
                "baf-record: topic {name} allows lossless readers, but not this user (only its owner, its group and root): recording it lossy"
            );
        }
        if !reader.is_mapped() {
            baf::subscribe::fit(&mut self.buf, reader.info().record_max);
        }
        let meta = TopicMeta {
            ring_size: reader.info().ring_size,
            record_max: reader.info().record_max,
            lossless: reader.lossless(),
        };
        let index = match self.sink.known.iter().position(|k| k.name == name) {
            Some(i) => {
                self.sink.known[i].meta = meta.clone();
                i
            }
            None => {
                self.sink.known.push(Known {
                    name: name.to_string(),
                    meta: meta.clone(),
                    record,
                    trigger,
                });
                self.sink.known.len() - 1
            }
        };
        if record {
            if let Some(f) = self.sink.file.as_mut() {
                let _ = f.channel(name, &meta);
            }
        }
        let mapped = reader.is_mapped();
        match self.topics.add(Sub { reader, index }) {
            Ok(token) if mapped => self.hot.keep(token),
            Ok(_) => {}
            Err(e) => eprintln!(
                "baf-record: skipping topic {name}: {}",
                baf_cli::message(&e)
            ),
        }
    }

    fn read(&mut self, token: u64) -> Result<Step> {
        let Self {
            topics, sink, buf, ..
        } = self;
        let Some(sub) = topics.get_mut(token) else {
            return Ok(Step::Gone);
        };
        let index = sub.index;
        let batch = match sub.reader.read(buf, u64::MAX, |r, lost| {
            sink.take(index, &r.header, r.payload, lost)
        }) {
            Ok(b) => b,
            Err(e) if baf::error::errno(&e) == Some(libc::EPIPE) => {
                eprintln!(
                    "baf-record: topic {}: the stall timeout made this lossless reader lossy; what it loses now is recorded as loss",
                    sub.reader.name()
                );
                return Ok(Step::Data);
            }
            Err(e) => return Err(e.context(format!("recording topic {}", sub.reader.name()))),
        };
        if batch.step == Step::Gone {
            self.topics.remove(token);
        }
        Ok(batch.step)
    }

    fn serve_hot(&mut self) -> Result<()> {
        for token in self.hot.take() {
            let step = self.read(token)?;
            let reader = self.topics.get_mut(token).map(|sub| &mut sub.reader);
            self.hot.after(token, step, reader)?;
        }
        Ok(())
    }

    /// Reads every topic until it has nothing new (before the end, so what
    /// was written before the signal is in the file).
    fn drain(&mut self) -> Result<()> {
        for token in self.topics.tokens() {
            for _ in 0..10_000 {
                if self.read(token)? != Step::Data {
                    break;
                }
            }
        }
        Ok(())
    }

    fn on_ready(&mut self, token: u64) -> Result<()> {
        match self.topics.get(token) {
            Some(sub) if self.hot.ready(token, &sub.reader) => self.read(token).map(|_| ()),
            _ => Ok(()),
        }
    }

    fn on_found(&mut self, found: Vec<baf::watch::Found>) -> Result<()> {
        for (name, path) in found {
            match self.topics.seen(&name) {
                Seen::Same => continue,
                Seen::Remade(token) => {
                    for _ in 0..1_000_000 {
                        if self.read(token)? == Step::Gone {
                            break;
                        }
                    }
                    self.topics.remove(token);
                }
                Seen::New => {}
            }
            self.join(&name, &path, StartAt::Oldest);
        }
        Ok(())
    }
}

/// Blocks `SIGUSR1` and returns a signalfd for it.
fn take_usr1() -> Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGUSR1);
    mask.thread_block().context("blocking SIGUSR1")?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("creating a signalfd")
}

/// The whole `record` command.
pub fn run(s: &Settings) -> Result<()> {
    let chosen = selection(&s.topics, &s.exclude)?;
    let triggers = match &s.dashcam {
        Some(d) => selection(&d.triggers, &[])?,
        None => Selection::default(),
    };
    let out = Output::new(&s.output, &s.prefix, s.compression, s.max_files)?;
    let (_mask, signals) = baf::signals::take_ending_signals()?;
    let usr1 = take_usr1()?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("creating an epoll set")?;
    for (fd, token) in [(signals.as_fd(), TOKEN_SIGNAL), (usr1.as_fd(), TOKEN_USR1)] {
        epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
            .context("watching signals")?;
    }
    // Watch before listing, so a topic made in between is not missed.
    let (watcher, _) = Watcher::new(&baf::dev_dir())?;
    epoll
        .add(
            watcher.fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WATCH),
        )
        .context("watching the topic directory")?;
    let dash = s.dashcam.as_ref().map(|d| {
        Dashcam::new(
            d.before.as_nanos() as u64,
            d.after.as_nanos() as u64,
            d.max_memory,
        )
    });
    let mut notes = vec![
        ("patterns".to_string(), s.topics.join(",")),
        ("excluded".to_string(), s.exclude.join(",")),
        ("lossless".to_string(), s.lossless.to_string()),
    ];
    if let Some(d) = &s.dashcam {
        notes.push(("dashcam_before_ns".into(), d.before.as_nanos().to_string()));
        notes.push(("dashcam_after_ns".into(), d.after.as_nanos().to_string()));
    }
    let mut r = Recorder {
        s,
        selection: chosen,
        triggers,
        topics: Topics::new(epoll, TOKEN_FIRST_TOPIC),
        sink: Sink {
            out,
            file: None,
            opened: Instant::now(),
            dash,
            known: Vec::new(),
            wall_offset_ns: baf::format::wall_offset_ns(),
            split_size: s.split_size,
            split_time: s.split_time,
            loss: baf::loss::LossCounts::new(baf::loss::INTERVAL),
            unflushed: false,
            finished: Vec::new(),
            notes,
        },
        buf: vec![0u8; 256 * 1024],
        hot: HotList::default(),
        watcher,
        warned: HashSet::new(),
    };
    if r.sink.dash.is_none() {
        r.sink.open()?;
    }
    if !baf::control::module_loaded() {
        eprintln!(
            "baf-record: {}; waiting for topics",
            baf::device::ModuleNotLoaded
        );
    } else {
        for (name, path) in baf::watch::existing_topics()? {
            r.join(&name, &path, s.start);
        }
    }
    let end = s.duration.map(|d| Instant::now() + d);
    let result = r.run(&signals, &usr1, end);
    // Whatever happened, the file is finished and indexed.
    let closed = r.sink.close();
    for (topic, n, total) in r.sink.loss.take(Instant::now(), true) {
        eprintln!("baf-record: topic {topic}: lost {n} records ({total} in all; each gap is written into the recording)");
    }
    result?;
    closed
}

impl Recorder<'_> {
    fn run(&mut self, signals: &SignalFd, usr1: &SignalFd, end: Option<Instant>) -> Result<()> {
        let mut events = vec![EpollEvent::empty(); 64];
        let mut last_tick = Instant::now();
        loop {
            self.sink.wall_offset_ns = baf::format::wall_offset_ns();
            self.serve_hot()?;
            let tick = if self.sink.dash.as_ref().is_some_and(Dashcam::capturing) {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(500)
            };
            let timeout = if self.hot.is_empty() {
                PollTimeout::try_from(tick.as_millis() as u64).unwrap_or(PollTimeout::ZERO)
            } else {
                PollTimeout::ZERO
            };
            let n = match self.topics.epoll().wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("waiting for topics"),
            };
            for ev in events.iter().take(n) {
                match ev.data() {
                    TOKEN_WATCH => {
                        let found = self.watcher.events()?;
                        self.on_found(found)?;
                    }
                    TOKEN_SIGNAL => {
                        if let Ok(Some(_)) = signals.read_signal() {
                            // Read what is there, then finish.
                            return self.drain();
                        }
                    }
                    TOKEN_USR1 => {
                        if let Ok(Some(_)) = usr1.read_signal() {
                            self.drain()?;
                            self.sink.trigger(mono_ns())?;
                        }
                    }
                    token => self.on_ready(token)?,
                }
            }
            // Not at every idle pass: each tick closes the chunk being
            // filled, and chunks must stay large while topics are busy.
            if last_tick.elapsed() >= tick {
                self.sink.tick()?;
                last_tick = Instant::now();
            }
            if end.is_some_and(|e| Instant::now() >= e) {
                return self.drain();
            }
        }
    }
}
