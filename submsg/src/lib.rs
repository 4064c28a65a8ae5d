//! `submsg`: subscribe to baf topics and write their records to stdout.
//!
//! One thread: every topic is an open file, non-blocking, in one epoll set
//! together with the `--follow` watcher, a signalfd and stdout (to notice a
//! closed pipe at once).
//!
//! A topic is read through a read-only mapping of its ring
//! ([`baf::mapped`]) when the module allows it: no system call per batch; a
//! topic with records keeps being read ("hot") until it has nothing new,
//! and only then is its file's cursor moved to where the mapping reader is
//! ([`baf::mapped::Mapped::prepare_wait`]) so that epoll says when more
//! comes. Where mapping is refused (a container's namespaces, `--no-mmap`),
//! the file is in record mode (`FLAG_RECORD`) and each ready topic gets one
//! large `read()`, which returns many whole records. Either way the ring's
//! headers give the sequence numbers, so a gap is an exact count of lost
//! records, and the output is byte for byte the same. Output is gathered in
//! a large buffer and written when it is full or when no topic has anything
//! more to read (idle), so interactive use sees every line at once and busy
//! use makes few large writes.

pub mod follow;
pub mod format;
pub mod loss;

use anyhow::{Context, Result};
use baf::abi;
use baf::cli::Failure;
use baf::control;
use baf::device::{self, ModuleNotLoaded, NodeError, NotATopic, Record, Topic};
use baf::mapped::Mapped;
use baf::pattern::{split_list, Pattern, Selection};
use format::{Format, Label};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

/// Where a new subscription starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartAt {
    /// Only records written from now on (the default).
    #[default]
    Now,
    /// The oldest record still buffered.
    Oldest,
    /// The last N records (all, if fewer are buffered).
    Last(u64),
    /// The record with this sequence number.
    Seq(u64),
}

impl FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |v: &str, what: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{what} needs a whole number, as in {what}:10 (got {v:?})"))
        };
        match s.split_once(':') {
            None if s == "now" => Ok(StartAt::Now),
            None if s == "oldest" => Ok(StartAt::Oldest),
            None if s == "last" => Ok(StartAt::Last(1)),
            Some(("last", n)) => num(n, "last").map(StartAt::Last),
            Some(("seq", n)) => num(n, "seq").map(StartAt::Seq),
            _ => Err(format!(
                "{s:?} is not a start point: use oldest, last:N, seq:S or now"
            )),
        }
    }
}

/// What to subscribe to and how to print it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Topics, patterns or device paths, each possibly a comma list; empty
    /// means every topic.
    pub topics: Vec<String>,
    /// Patterns to leave out, each possibly a comma list.
    pub exclude: Vec<String>,
    /// Join topics created later, drop removed ones.
    pub follow: bool,
    /// Output format.
    pub format: Format,
    /// Where existing topics start.
    pub start: StartAt,
    /// Create a missing topic given by its exact name, when allowed.
    pub create: bool,
    /// Stop after this many records.
    pub count: Option<u64>,
    /// Read with `read()` only, never through a mapping of the ring.
    pub no_mmap: bool,
    /// Subscribe losslessly: writers wait for this reader rather than
    /// overwrite what it has not read (on topics that allow it).
    pub lossless: bool,
}

/// The command line's topics, sorted out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Which topic names to take.
    pub selection: Selection,
    /// Exact names asked for (they must exist, or be created).
    pub exact: Vec<String>,
    /// Device paths asked for (opened as they are).
    pub paths: Vec<String>,
}

impl Plan {
    /// Whether topic `name` (found by listing or by `--follow`) is
    /// selected: it matches a pattern and no exclusion. With no topics
    /// given, every topic is; with only device paths, no other topic is.
    pub fn selects(&self, name: &str) -> bool {
        (self.paths.is_empty() || !self.selection.include.is_empty())
            && self.selection.matches(name)
    }

    /// What `--follow` waits for, for a message: "topics", or "topics
    /// matching 'a,b/#' (except 'c')".
    pub fn describe(&self) -> String {
        let list = |ps: &[Pattern]| ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",");
        let mut s = if self.selection.include.is_empty() {
            "topics".to_string()
        } else {
            format!("topics matching '{}'", list(&self.selection.include))
        };
        if !self.selection.exclude.is_empty() {
            s += &format!(" (except '{}')", list(&self.selection.exclude));
        }
        s
    }
}

/// Whether a command-line topic is a path rather than a name or pattern.
pub fn is_path(topic: &str) -> bool {
    topic.starts_with('/') || topic.starts_with('.')
}

/// Sorts out the command line's topics: comma lists, paths, patterns.
pub fn plan(cfg: &Config) -> Result<Plan> {
    let usage = |e: baf::pattern::PatternError| Failure::Usage.wrap(anyhow::Error::new(e));
    let mut plan = Plan::default();
    for item in split_list(&cfg.topics).map_err(usage)? {
        if is_path(&item) {
            plan.paths.push(item);
            continue;
        }
        let p = Pattern::parse(&item).map_err(usage)?;
        if let Some(name) = p.exact() {
            control::check_name(name)?;
            plan.exact.push(name.to_string());
        }
        plan.selection.include.push(p);
    }
    for item in split_list(&cfg.exclude).map_err(usage)? {
        plan.selection
            .exclude
            .push(Pattern::parse(&item).map_err(usage)?);
    }
    Ok(plan)
}

/// The name to show for a topic given by its device path.
pub fn label_of_path(path: &str) -> String {
    let p = Path::new(path);
    if let Ok(rel) = p.strip_prefix(baf::dev_dir()) {
        if let Some(s) = rel.to_str().filter(|s| !s.is_empty()) {
            return s.to_string();
        }
    }
    if p.parent() == Some(Path::new("/dev")) {
        if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            if follow::is_static_name(n) {
                return n.to_string();
            }
        }
    }
    path.to_string()
}

/// Every topic there is: the kernel's list (sysfs) and the nodes under the
/// topic directory.
pub fn existing_topics() -> Result<BTreeMap<String, PathBuf>> {
    let mut all = BTreeMap::new();
    for t in control::list().context("listing topics")? {
        let path = control::node_of(&t.name);
        all.insert(t.name, path);
    }
    fn scan(dir: &Path, rel: &str, all: &mut BTreeMap<String, PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let sub = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => scan(&e.path(), &sub, all),
                Ok(t) if t.is_char_device() => {
                    // A topic with topics below it has its node at
                    // `<name>/@` (kernel/ABI.md).
                    let name = sub.strip_suffix("/@").map_or(sub.clone(), str::to_string);
                    all.entry(name).or_insert_with(|| e.path());
                }
                _ => {}
            }
        }
    }
    scan(&baf::dev_dir(), "", &mut all);
    Ok(all)
}

/// One subscribed topic.
struct Sub {
    topic: Topic,
    label: Label,
    /// The sequence number expected next; a record above it means loss.
    expect: u64,
    /// The ring, mapped (else the topic is read with `read()`).
    mapped: Option<Mapped>,
    /// In the hot list: read again without waiting.
    hot: bool,
}

/// What one read of a topic found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Records, or something else worth reading again at once.
    Data,
    /// Nothing new.
    Idle,
    /// The topic is gone (removed and read to its end); it was dropped.
    Gone,
}

/// Appends `record` of topic `label` to `out` in `format`, counting a gap
/// before it (from `expect`, the seq wanted next) as lost. The same for both
/// ways of reading, so their output is the same.
fn deliver(
    format: Format,
    out: &mut Vec<u8>,
    label: &Label,
    expect: &mut u64,
    loss: &mut loss::LossReporter,
    record: &Record<'_>,
) {
    let seq = record.header.seq;
    let lost = seq.saturating_sub(*expect);
    *expect = seq.wrapping_add(1);
    loss.add(&label.name, lost);
    format::write_record(format, out, label, record, lost);
}

/// Whether a failed `mmap` is a refusal by the system (an errno: `EPERM`
/// inside a container's namespaces, `EACCES`, `ENODEV`, `ENOMEM`...), after
/// which `read()` is used without a word; anything else (a control page
/// that makes no sense) is worth a warning.
fn quiet_mmap_refusal(e: &io::Error) -> bool {
    e.raw_os_error().is_some()
}

/// Stdout, written in large pieces.
struct Output {
    file: File,
    buf: Vec<u8>,
    /// The reader went away (`EPIPE`): a normal end.
    closed: bool,
}

/// Flush when this much output is waiting, even if topics are busy.
const FLUSH_AT: usize = 256 * 1024;

impl Output {
    fn new() -> Result<Self> {
        let fd = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("stdout is not open")?;
        Ok(Self {
            file: File::from(fd),
            buf: Vec::with_capacity(FLUSH_AT + 128 * 1024),
            closed: false,
        })
    }

    fn flush(&mut self) -> Result<()> {
        self.flush_with(&[])
    }

    /// Writes the buffer and then `tail` (a large payload, straight from
    /// the read buffer: no copy), in one `writev` where it fits.
    fn flush_with(&mut self, tail: &[u8]) -> Result<()> {
        let mut slices = [IoSlice::new(&self.buf), IoSlice::new(tail)];
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() && !self.closed {
            match (&self.file).write_vectored(rest) {
                Ok(0) => {
                    return Err(io::Error::from(io::ErrorKind::WriteZero)).context("writing stdout")
                }
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Someone made our stdout non-blocking: wait for room.
                    let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLOUT)];
                    let _ = nix::poll::poll(&mut fds, PollTimeout::NONE);
                }
                // `submsg t | head -1`: the reader is done, so are we.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => self.closed = true,
                Err(e) => return Err(e).context("writing stdout"),
            }
        }
        self.buf.clear();
        Ok(())
    }
}

/// Raw payloads at least this large go from the read buffer to stdout
/// directly instead of through the output buffer.
const DIRECT: usize = 16 * 1024;

const TOKEN_WATCH: u64 = 0;
const TOKEN_STDOUT: u64 = 1;
const TOKEN_SIGNAL: u64 = 2;
const TOKEN_FIRST_TOPIC: u64 = 16;

/// How the main loop ended.
enum End {
    /// Normally: exit 0.
    Done,
    /// By a signal, to be raised again once the output is out.
    Signal(Signal),
}

struct Subscriber<'a> {
    cfg: &'a Config,
    plan: Plan,
    epoll: Epoll,
    subs: HashMap<u64, Sub>,
    by_name: HashMap<String, u64>,
    next_token: u64,
    buf: Vec<u8>,
    out: Output,
    loss: loss::LossReporter,
    remaining: Option<u64>,
    watcher: Option<follow::Watcher>,
    /// Topics already warned about (no permission, not a topic).
    warned: HashSet<String>,
    /// Mapped topics to read again without waiting.
    hot: Vec<u64>,
}

impl<'a> Subscriber<'a> {
    /// Opens `path` as topic `name` and adds it to the epoll set. The path
    /// is checked first: only a baf character device is opened (a FIFO or a
    /// regular file is refused without being opened).
    fn join(&mut self, name: &str, path: &Path, start: StartAt) -> Result<()> {
        let shown = path.display();
        let open_error = |e: io::Error| -> anyhow::Error {
            let no_permission = || {
                Failure::Permission.wrap(anyhow::anyhow!(
                    "no permission to read topic {name} ({shown}): join the group that owns it (ls -l {shown})"
                ))
            };
            match e.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => no_permission(),
                Some(libc::ENOENT) if !control::module_loaded() => ModuleNotLoaded.into(),
                Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
                    Failure::NoTopic.wrap(anyhow::anyhow!("topic {name} does not exist ({shown})"))
                }
                _ => anyhow::Error::new(e).context(format!("cannot open topic {name} ({shown})")),
            }
        };
        match device::check_node(path) {
            Ok(()) => {}
            Err(NodeError::Stat(e)) => return Err(open_error(e)),
            Err(e) => return Err(e.into_anyhow(path)),
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(open_error)?;
        let topic = Topic::from_file(file);
        let info = match topic.info() {
            Ok(i) => i,
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                return Err(anyhow::Error::new(NotATopic {
                    path: path.to_path_buf(),
                    what: "a device that does not answer the baf ioctls".to_string(),
                }))
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot query topic {name}")))
            }
        };
        baf::device::check_abi(&info)?;
        let fail = |e: io::Error, what: &str| {
            anyhow::Error::new(e).context(format!("cannot {what} topic {name}"))
        };
        // Lossless before the seek: the seek then holds the records from
        // the start point on.
        let flags = if self.cfg.lossless {
            abi::FLAG_RECORD | abi::FLAG_LOSSLESS
        } else {
            abi::FLAG_RECORD
        };
        match topic.set_flags(flags) {
            Ok(()) => {}
            Err(e) if self.cfg.lossless && e.raw_os_error() == Some(libc::EPERM) => {
                return Err(Failure::Permission.wrap(anyhow::Error::new(e).context(
                    format!(
                        "topic {name} does not allow lossless readers: its owner can allow them with `baf-setup create {name} --lossless` (on a new topic)"
                    ),
                )))
            }
            Err(e) => return Err(fail(e, "switch to record mode on")),
        }
        let expect = match start {
            StartAt::Now => info.cursor_seq,
            StartAt::Oldest => topic
                .seek(abi::SEEK_OLDEST, 0)
                .map_err(|e| fail(e, "seek on"))?,
            StartAt::Last(n) => topic
                .seek(abi::SEEK_LAST, n)
                .map_err(|e| fail(e, "seek on"))?,
            StartAt::Seq(s) => match topic.seek(abi::SEEK_SEQ, s) {
                Ok(seq) => seq,
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                    let info = topic.info().map_err(|e| fail(e, "query"))?;
                    if s < info.oldest_seq {
                        // Gone already: start at the oldest and count
                        // what is missing as lost.
                        topic
                            .seek(abi::SEEK_OLDEST, 0)
                            .map_err(|e| fail(e, "seek on"))?;
                        s
                    } else if s == info.next_seq {
                        s
                    } else {
                        return Err(Failure::Usage.wrap(anyhow::anyhow!(
                            "topic {name} has not reached sequence {s} yet (the next record is {})",
                            info.next_seq
                        )));
                    }
                }
                Err(e) => return Err(fail(e, "seek on")),
            },
        };
        // The file is where the reader starts (seeked above): map the ring
        // from there, or read the file. A lossless reader reads the file:
        // each read() releases the writers at once.
        let mapped = if self.cfg.no_mmap || self.cfg.lossless {
            None
        } else {
            match Mapped::new(&topic) {
                Ok(m) => Some(m),
                Err(e) => {
                    if !quiet_mmap_refusal(&e) {
                        eprintln!(
                            "submsg: topic {name}: cannot read it through a mapping ({e}); using read()"
                        );
                    }
                    None
                }
            }
        };
        if mapped.is_none() {
            let span = abi::record_span(info.record_max as usize);
            if self.buf.len() < span {
                self.buf.resize(span, 0);
            }
        }
        let token = self.next_token;
        self.next_token += 1;
        self.epoll
            .add(topic.file(), EpollEvent::new(EpollFlags::EPOLLIN, token))
            .map_err(|e| fail(e.into(), "watch"))?;
        let hot = mapped.is_some();
        self.subs.insert(
            token,
            Sub {
                topic,
                label: Label::new(name),
                expect,
                mapped,
                hot,
            },
        );
        if hot {
            // History (--from) may be waiting: read before sleeping.
            self.hot.push(token);
        }
        self.by_name.insert(name.to_string(), token);
        Ok(())
    }

    /// Joins a topic found by a pattern (or by none) or by `--follow`: a
    /// problem never ends submsg; it is returned for the caller to report
    /// ([`Self::warn_skip`]).
    fn join_found(&mut self, name: &str, path: &Path, start: StartAt) -> Option<anyhow::Error> {
        match self.join(name, path, start) {
            Ok(()) => {
                self.warned.remove(name);
                None
            }
            Err(e) => Some(e),
        }
    }

    /// Says on stderr (once per topic) that topic `name` is skipped because
    /// of `e`; a node that vanished in between is not worth a word.
    fn warn_skip(&mut self, name: &str, e: &anyhow::Error) {
        if baf::cli::class(e) != Some(Failure::NoTopic) && self.warned.insert(name.to_string()) {
            eprintln!("submsg: skipping topic {name}: {}", baf::cli::message(e));
        }
    }

    fn drop_sub(&mut self, token: u64) {
        if let Some(sub) = self.subs.remove(&token) {
            let _ = self.epoll.delete(sub.topic.file());
            if self.by_name.get(&sub.label.name) == Some(&token) {
                self.by_name.remove(&sub.label.name);
            }
        }
    }

    /// One read of a topic, whichever way it is read.
    fn read_topic(&mut self, token: u64) -> Result<Step> {
        match self.subs.get(&token) {
            None => Ok(Step::Gone),
            Some(sub) if sub.mapped.is_some() => self.read_mapped(token),
            Some(_) => self.read_file(token),
        }
    }

    /// One batch out of a mapped ring.
    fn read_mapped(&mut self, token: u64) -> Result<Step> {
        let Self {
            subs,
            out,
            loss,
            remaining,
            cfg,
            ..
        } = self;
        let Some(sub) = subs.get_mut(&token) else {
            return Ok(Step::Gone);
        };
        let Some(mapped) = sub.mapped.as_mut() else {
            return Ok(Step::Gone);
        };
        let format = cfg.format;
        let (label, expect) = (&sub.label, &mut sub.expect);
        let limit = remaining.unwrap_or(u64::MAX);
        let progress = mapped
            .read_into(&mut out.buf, limit, |buf, header, payload| {
                let record = Record {
                    header: *header,
                    payload,
                };
                deliver(format, buf, label, expect, loss, &record);
            })
            .with_context(|| format!("reading topic {} through its mapping", sub.label.name))?;
        if progress.lost > 0 {
            // The kernel counts a mapping reader's loss only when told.
            mapped
                .report_loss(&sub.topic)
                .with_context(|| format!("reporting loss on topic {}", sub.label.name))?;
        }
        if let Some(r) = remaining {
            *r = r.saturating_sub(progress.records);
        }
        if progress.ended {
            self.drop_sub(token);
            Ok(Step::Gone)
        } else if progress.records > 0 {
            Ok(Step::Data)
        } else {
            Ok(Step::Idle)
        }
    }

    /// Before sleeping: moves a mapped topic's file cursor to where its
    /// reader is. False when the reader must read again first.
    fn prepare_wait(&mut self, token: u64) -> Result<bool> {
        let Some(sub) = self.subs.get_mut(&token) else {
            return Ok(true);
        };
        let Some(mapped) = sub.mapped.as_mut() else {
            return Ok(true);
        };
        mapped
            .prepare_wait(&sub.topic)
            .with_context(|| format!("cannot seek on topic {}", sub.label.name))
    }

    /// Reads each hot (mapped, busy) topic once; keeps those that had
    /// something, and lets the others sleep in epoll.
    fn serve_hot(&mut self) -> Result<()> {
        let hot = std::mem::take(&mut self.hot);
        for (i, &token) in hot.iter().enumerate() {
            if self.done() {
                self.hot.extend_from_slice(hot.get(i..).unwrap_or_default());
                break;
            }
            let keep = match self.read_topic(token)? {
                Step::Gone => false,
                Step::Data => true,
                Step::Idle => !self.prepare_wait(token)?,
            };
            if keep {
                self.hot.push(token);
            } else if let Some(sub) = self.subs.get_mut(&token) {
                sub.hot = false;
            }
            if self.out.buf.len() >= FLUSH_AT {
                self.out.flush()?;
            }
        }
        Ok(())
    }

    /// Epoll says topic `token` is ready.
    fn on_ready(&mut self, token: u64) -> Result<()> {
        match self.subs.get_mut(&token) {
            Some(sub) if sub.mapped.is_some() => {
                if !sub.hot {
                    sub.hot = true;
                    self.hot.push(token);
                }
                Ok(())
            }
            Some(_) => self.read_file(token).map(|_| ()),
            None => Ok(()),
        }
    }

    /// One `read()` of a ready topic.
    fn read_file(&mut self, token: u64) -> Result<Step> {
        let Self {
            subs,
            buf,
            out,
            loss,
            remaining,
            cfg,
            ..
        } = self;
        let Some(sub) = subs.get_mut(&token) else {
            return Ok(Step::Gone);
        };
        let n = match sub.topic.file().read(buf) {
            Ok(0) => {
                self.drop_sub(token);
                return Ok(Step::Gone);
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(Step::Idle)
            }
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                // A record larger than the buffer: make room and retry.
                let max = sub.topic.info().map(|i| i.record_max).unwrap_or(1 << 20);
                let want = abi::record_span(max as usize).max(buf.len() * 2);
                buf.resize(want, 0);
                return Ok(Step::Data);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                self.drop_sub(token);
                return Ok(Step::Gone);
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) && cfg.lossless => {
                // Demoted by the topic's stall timeout: what was delivered
                // is complete up to here; say so and stop.
                out.flush()?;
                return Err(anyhow::Error::new(e).context(format!(
                    "topic {}: this lossless reader held the writer up past the topic's stall timeout and was made lossy; records after the output's end were lost",
                    sub.label.name
                )));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading topic {}", sub.label.name));
            }
        };
        for record in baf::device::records(buf.get(..n).unwrap_or_default()) {
            if *remaining == Some(0) {
                break;
            }
            match cfg.format {
                Format::Raw | Format::Len32 if record.payload.len() >= DIRECT => {
                    // Large payloads go from the read buffer to stdout
                    // directly (what `deliver` would do, without the copy).
                    let seq = record.header.seq;
                    loss.add(&sub.label.name, seq.saturating_sub(sub.expect));
                    sub.expect = seq.wrapping_add(1);
                    if cfg.format == Format::Len32 {
                        out.buf
                            .extend_from_slice(&(record.payload.len() as u32).to_be_bytes());
                    }
                    out.flush_with(record.payload)?;
                }
                format => deliver(
                    format,
                    &mut out.buf,
                    &sub.label,
                    &mut sub.expect,
                    loss,
                    &record,
                ),
            }
            if let Some(r) = remaining {
                *r -= 1;
            }
        }
        Ok(Step::Data)
    }

    /// Whether a subscribed topic's file says its topic was removed.
    fn is_hung_up(&self, token: u64) -> bool {
        let Some(sub) = self.subs.get(&token) else {
            return true;
        };
        let mut fds = [PollFd::new(sub.topic.file().as_fd(), PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP))
    }

    /// Topics that `--follow` saw appear.
    fn on_found(&mut self, found: Vec<follow::Found>) -> Result<()> {
        for (name, path) in found {
            if !self.plan.selects(&name) {
                continue;
            }
            if let Some(&token) = self.by_name.get(&name) {
                if !self.is_hung_up(token) {
                    continue; // the topic we already read
                }
                // Removed and made again: finish the old one first.
                for _ in 0..1_000_000 {
                    if self.read_topic(token)? == Step::Gone {
                        break;
                    }
                }
                self.drop_sub(token);
            }
            // A topic made while we run: read it from its beginning.
            if let Some(e) = self.join_found(&name, &path, StartAt::Oldest) {
                self.warn_skip(&name, &e);
            }
        }
        Ok(())
    }

    fn report_loss(&mut self, force: bool) {
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
            || (self.subs.is_empty() && self.watcher.is_none())
    }

    fn run(&mut self, signals: &SignalFd) -> Result<End> {
        let mut events = vec![EpollEvent::empty(); 256];
        while !self.done() {
            self.serve_hot()?;
            if self.done() {
                break;
            }
            let timeout = if !self.hot.is_empty() || !self.out.buf.is_empty() {
                PollTimeout::ZERO
            } else if let Some(d) = self.loss.due_in(Instant::now()) {
                PollTimeout::try_from(d.as_millis().saturating_add(1).min(60_000) as u64)
                    .unwrap_or(PollTimeout::ZERO)
            } else {
                PollTimeout::NONE
            };
            let n = match self.epoll.wait(&mut events, timeout) {
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
        }
        Ok(End::Done)
    }
}

/// The whole tool.
pub fn run(cfg: &Config) -> Result<()> {
    let plan = plan(cfg)?;
    // Signals that end us arrive through a signalfd, so buffered output is
    // written before we go.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().context("blocking signals")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("creating a signalfd")?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("creating an epoll set")?;
    epoll
        .add(
            signals.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
        )
        .context("watching signals")?;
    let out = Output::new()?;
    // EPOLLERR is always reported: for a pipe, it means its reader is gone.
    // (A regular file cannot be watched; that is fine.)
    let _ = epoll.add(
        out.file.as_fd(),
        EpollEvent::new(EpollFlags::empty(), TOKEN_STDOUT),
    );

    let mut sub = Subscriber {
        cfg,
        plan,
        epoll,
        subs: HashMap::new(),
        by_name: HashMap::new(),
        next_token: TOKEN_FIRST_TOPIC,
        buf: vec![0u8; 256 * 1024],
        out,
        loss: loss::LossReporter::new(loss::INTERVAL),
        remaining: cfg.count,
        watcher: None,
        warned: HashSet::new(),
        hot: Vec::new(),
    };
    if cfg.follow {
        // Watch before listing, so a topic made in between is not missed.
        let (w, _) = follow::Watcher::new(&baf::dev_dir())?;
        sub.epoll
            .add(w.fd(), EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WATCH))
            .context("watching the topic directory")?;
        sub.watcher = Some(w);
    }

    // Device paths, as they are: any problem is an error.
    for path in sub.plan.paths.clone() {
        let name = label_of_path(&path);
        if sub.by_name.contains_key(&name) {
            continue;
        }
        sub.join(&name, Path::new(&path), cfg.start)?;
    }
    let loaded = control::module_loaded();
    if !loaded && !cfg.follow {
        return Err(ModuleNotLoaded.into());
    }
    // Existing topics that match.
    let existing = existing_topics()?;
    // Topics found by a pattern that could not be read: reported, skipped.
    let mut skipped = Vec::new();
    for (name, path) in &existing {
        if sub.by_name.contains_key(name) || !sub.plan.selects(name) {
            continue;
        }
        if sub.plan.exact.contains(name) {
            // Asked for by name: any problem is an error.
            sub.join(name, path, cfg.start)?;
        } else if let Some(e) = sub.join_found(name, path, cfg.start) {
            if baf::cli::class(&e) != Some(Failure::NoTopic) {
                skipped.push((name.clone(), e));
            }
        }
    }
    // Exact names that do not exist: create them, or wait, or fail.
    let mut waiting = Vec::new();
    for name in sub.plan.exact.clone() {
        if existing.contains_key(&name) || sub.plan.selection.excluded(&name) {
            continue;
        }
        if cfg.create && loaded {
            match control::create(&name, &control::CreateOptions::defaults()) {
                Ok(_) => {
                    let path = control::node_of(&name);
                    sub.join(&name, &path, StartAt::Oldest)?;
                    continue;
                }
                Err(e) if baf::cli::class(&e) == Some(Failure::NoModule) => return Err(e),
                Err(e) if !cfg.follow => {
                    return Err(Failure::NoTopic.wrap(anyhow::anyhow!(
                        "topic {name} does not exist and cannot be created here ({}): as root, run `baf-setup create {name}`",
                        baf::cli::message(&e)
                    )))
                }
                Err(_) => {}
            }
        } else if !cfg.follow {
            return Err(Failure::NoTopic.wrap(anyhow::anyhow!(
                "topic {name} does not exist: create it with `baf-setup create {name}`, or use --follow to wait for it"
            )));
        }
        waiting.push(name);
    }
    if sub.subs.is_empty() && !cfg.follow {
        // Nothing to read. If matching topics were there but none could be
        // read, that is the error (one line, with its class).
        let mut skipped = skipped.into_iter();
        if let Some((_, first)) = skipped.next() {
            let n = skipped.len() + 1;
            return Err(if n == 1 {
                first
            } else {
                first.context(format!(
                    "none of the {n} matching topics can be read; the first"
                ))
            });
        }
        let what = if cfg.topics.is_empty() && cfg.exclude.is_empty() {
            "there are no topics: create one with `baf-setup create NAME`, or use --follow to wait"
                .to_string()
        } else {
            format!(
                "no topic matches {}: see `baf-setup list`, or use --follow to wait",
                sub.plan
                    .selection
                    .include
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        return Err(Failure::NoTopic.wrap(anyhow::anyhow!(what)));
    }
    for (name, e) in &skipped {
        sub.warn_skip(name, e);
    }
    if sub.subs.is_empty() {
        // --follow with nothing to read yet: say what we wait for.
        let module = if loaded {
            String::new()
        } else {
            format!("{ModuleNotLoaded}; ")
        };
        eprintln!(
            "submsg: {module}waiting for {} to be created",
            sub.plan.describe()
        );
    } else {
        for name in &waiting {
            eprintln!("submsg: waiting for topic {name} to be created");
        }
    }

    let end = sub.run(&signals);
    // Whatever happened, what was read goes out, and loss is told.
    let flushed = sub.out.flush();
    sub.report_loss(true);
    match end? {
        End::Done => flushed,
        End::Signal(sig) => {
            // End the way the signal would have ended us.
            let _ = mask.thread_unblock();
            let _ = nix::sys::signal::raise(sig);
            std::process::exit(128 + sig as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(topics: &[&str], exclude: &[&str]) -> Config {
        Config {
            topics: topics.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        }
    }

    #[test]
    fn start_points() {
        assert_eq!("oldest".parse::<StartAt>(), Ok(StartAt::Oldest));
        assert_eq!("now".parse::<StartAt>(), Ok(StartAt::Now));
        assert_eq!("last".parse::<StartAt>(), Ok(StartAt::Last(1)));
        assert_eq!("last:10".parse::<StartAt>(), Ok(StartAt::Last(10)));
        assert_eq!("seq:0".parse::<StartAt>(), Ok(StartAt::Seq(0)));
        assert!("last:x"
            .parse::<StartAt>()
            .unwrap_err()
            .contains("whole number"));
        assert!("first"
            .parse::<StartAt>()
            .unwrap_err()
            .contains("oldest, last:N, seq:S"));
        assert!("seq:-1".parse::<StartAt>().is_err());
    }

    #[test]
    fn plan_sorts_names_patterns_paths() {
        let p = plan(&cfg(
            &["a,b/+", "/dev/fanout0", "c", "./x"],
            &["b/secret,z*"],
        ))
        .unwrap();
        assert_eq!(p.exact, vec!["a", "c"]);
        assert_eq!(p.paths, vec!["/dev/fanout0", "./x"]);
        assert_eq!(p.selection.include.len(), 3);
        assert_eq!(p.selection.exclude.len(), 2);
        assert!(p.selection.matches("b/open") && !p.selection.matches("b/secret"));
        assert!(!p.selection.matches("d"));
    }

    #[test]
    fn paths_alone_select_no_other_topic() {
        let p = plan(&cfg(&["/dev/fanout0"], &[])).unwrap();
        assert!(!p.selects("anything"));
        let p = plan(&cfg(&["/dev/fanout0", "a/#"], &[])).unwrap();
        assert!(p.selects("a/b") && !p.selects("b"));
        let p = plan(&cfg(&[], &[])).unwrap();
        assert!(p.selects("anything"));
    }

    #[test]
    fn follow_says_what_it_waits_for() {
        assert_eq!(plan(&cfg(&[], &[])).unwrap().describe(), "topics");
        assert_eq!(
            plan(&cfg(&["x"], &[])).unwrap().describe(),
            "topics matching 'x'"
        );
        assert_eq!(
            plan(&cfg(&["a/#,b"], &["a/c"])).unwrap().describe(),
            "topics matching 'a/#,b' (except 'a/c')"
        );
    }

    #[test]
    fn plan_with_nothing_takes_everything() {
        let p = plan(&cfg(&[], &["fanout*"])).unwrap();
        assert!(p.selection.matches("anything") && !p.selection.matches("fanout1"));
    }

    #[test]
    fn plan_errors_are_usage_errors() {
        for bad in [&["a,,b"][..], &["a/#/b"], &["x y"]] {
            let e = plan(&cfg(bad, &[])).unwrap_err();
            assert_eq!(baf::cli::exit_code(&e), 2, "{bad:?}: {e:#}");
        }
        let e = plan(&cfg(&[], &["bad*pattern"])).unwrap_err();
        assert_eq!(baf::cli::exit_code(&e), 2);
    }

    #[test]
    fn deliver_counts_gaps_and_formats_like_write_record() {
        use baf::abi::RecordHeader;
        let label = Label::new("t");
        let mut loss = loss::LossReporter::new(loss::INTERVAL);
        let mut expect = 5;
        let mut out = Vec::new();
        for (seq, payload) in [(5u64, &b"a\n"[..]), (6, b"b\n"), (9, b"c\n")] {
            let header = RecordHeader {
                len: payload.len() as u32,
                seq,
                ..RecordHeader::default()
            };
            let record = Record { header, payload };
            deliver(
                Format::Json,
                &mut out,
                &label,
                &mut expect,
                &mut loss,
                &record,
            );
        }
        assert_eq!(expect, 10);
        assert_eq!(loss.total("t"), 2);
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let lost: Vec<_> = lines.iter().map(|v| v["lost"].as_u64().unwrap()).collect();
        assert_eq!(lost, vec![0, 0, 2]);
    }

    #[test]
    fn mmap_refusals_by_the_system_are_quiet() {
        assert!(quiet_mmap_refusal(&io::Error::from_raw_os_error(
            libc::EPERM
        )));
        assert!(quiet_mmap_refusal(&io::Error::from_raw_os_error(
            libc::ENODEV
        )));
        assert!(!quiet_mmap_refusal(&io::Error::new(
            io::ErrorKind::InvalidData,
            "bad control page"
        )));
    }

    #[test]
    fn labels_of_paths() {
        assert_eq!(label_of_path("/dev/fanout2"), "fanout2");
        assert_eq!(label_of_path("./node"), "./node");
        let under = baf::dev_dir().join("robot/arm");
        assert_eq!(label_of_path(under.to_str().unwrap()), "robot/arm");
    }
}
