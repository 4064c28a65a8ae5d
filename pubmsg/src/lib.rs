//! `pubmsg`: publish stdin to a baf topic.
//!
//! The tool opens (or creates) the topic, takes its publisher lock (unless
//! `--shared`), and publishes its input (stdin, or `-f FILE`), or the `-m`
//! messages given on the command line, one record each.
//!
//! - Lines (and NUL-ended items, `-0`) go out in line mode (`FLAG_LINES`,
//!   ABI 6, [`publish_lines`]): each read of the input is written up to its
//!   last delimiter in one `write()`, and the kernel cuts it into records,
//!   so the tool does no work per line.
//! - `--raw`: each read of the input goes out as it is, in one plain
//!   `write()`, as one record ([`publish_raw`]).
//! - `--len32` frames and `-m` messages are cut into records with
//!   [`baf::frame::Framer`] and go out in batch writes (`FLAG_BATCH`, ABI 2,
//!   [`publish`]): every record the input completed is framed, and the
//!   batch is written as soon as the input has nothing more ready (or it
//!   reaches [`BATCH_MAX`]).
//!
//! Either way a busy producer costs one `write()` and one reader wakeup per
//! many records, and a slow one is never held back.

use anyhow::{Context, Result};
use baf::abi;
use baf::control;
use baf::device::{self, open_error, open_node, Access, Batch, ModuleNotLoaded, NodeError, Topic};
use baf::frame::{FrameError, Framer, Framing};
pub use baf::sys::is_path;
use baf_cli::Failure;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod lines;
mod splice;
pub use lines::{long_lines, publish_lines, LineWriter, LINE_READ};
pub use splice::{publish_spliced, publish_spliced_lines, source_of, Source};

/// What is published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Input {
    /// Stdin, cut into records by the framing.
    #[default]
    Stdin,
    /// A file's contents, cut into records as stdin would be (`-f FILE`).
    File(PathBuf),
    /// These messages, one record each (`-m MESSAGE`, repeatable), each
    /// ended as the framing ends a record: a newline for lines, a NUL for
    /// `-0`, nothing for `--raw`.
    Messages(Vec<OsString>),
}

/// What to publish, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Topic name or device path.
    pub topic: String,
    /// What to publish.
    pub input: Input,
    /// How the input is cut into records.
    pub framing: Framing,
    /// Publish without the topic's publisher lock, alongside other
    /// publishers.
    pub shared: bool,
    /// Create the topic when it does not exist (and the caller may).
    pub create: bool,
    /// Before the first record, wait until this many lossless readers are
    /// attached.
    pub wait_readers: Option<u32>,
}

/// What [`publish`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records written by [`publish`], [`publish_records`] and
    /// [`publish_raw`]; 0 from [`publish_lines`], where the kernel cuts the
    /// records and pubmsg does not count them (that would be work per line),
    /// and from [`publish_spliced`] and [`publish_spliced_lines`], where one
    /// `splice` may write several.
    pub records: u64,
    /// `write()`s (whole batches or blocks; retries after a short write are
    /// not counted).
    pub writes: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Lines longer than the record limit, split.
    pub lines_split: u64,
    /// Empty `--len32` frames skipped.
    pub empty_frames: u64,
}

/// Opens topic `arg` for writing, creating it first when it is a name that
/// does not exist and `create` is set. Returns the topic and the name to
/// show in messages.
pub fn open_topic(arg: &str, create: bool) -> Result<(Topic, String)> {
    if is_path(arg) {
        return open_node(arg, Path::new(arg), Access::Write).map(|t| (t, arg.to_string()));
    }
    control::check_name(arg)?;
    let path = control::node_of(arg);
    match device::check_node(&path) {
        Ok(()) => return open_node(arg, &path, Access::Write).map(|t| (t, arg.to_string())),
        Err(NodeError::Stat(e)) if e.kind() == io::ErrorKind::NotFound => {
            if !control::module_loaded() {
                return Err(ModuleNotLoaded.into());
            }
            if !create {
                return Err(Failure::NoTopic.wrap(anyhow::anyhow!(
                    "topic {arg} does not exist ({}): create it with `baf-setup create {arg}`, or leave out --no-create",
                    path.display()
                )));
            }
        }
        Err(NodeError::Stat(e)) => return Err(open_error(e, arg, &path, Access::Write)),
        Err(e) => return Err(e.into_anyhow(&path)),
    }
    let path = control::create_on_demand(arg)?;
    open_node(arg, &path, Access::Write).map(|t| (t, arg.to_string()))
}

/// Checks that `topic` is a baf topic whose module speaks batch writes.
/// Returns what the module says of it (record limit, ABI version).
pub fn check(topic: &Topic, shown: &str) -> Result<abi::Info> {
    let info = match topic.info() {
        Ok(i) => i,
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
            return Err(Failure::Usage.wrap(anyhow::anyhow!(
                "{shown} is not a baf topic (a fanout device)"
            )))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot query topic {shown}")),
    };
    baf::device::check_abi(&info)?;
    Ok(info)
}

/// Takes the topic's publisher lock, with a one-line error when another
/// pubmsg has it (or the module is too old for batch writes). Returns what
/// [`check`] does.
pub fn claim(topic: &Topic, shown: &str) -> Result<abi::Info> {
    let info = check(topic, shown)?;
    match topic.claim_publisher() {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(Failure::Busy.wrap(anyhow::anyhow!(
                "topic {shown} already has a publisher (another pubmsg); stop it first (fuser -v shows it), or publish alongside it with pubmsg --shared"
            )))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot claim topic {shown}")),
    }
    Ok(info)
}

/// Waits until topic `shown` has `n` lossless readers, saying so on stderr
/// if it has fewer now. A topic that does not allow lossless readers is an
/// error (the wait would never end).
pub fn wait_readers(topic: &Topic, shown: &str, n: u32) -> Result<()> {
    let info = topic
        .info()
        .with_context(|| format!("cannot query topic {shown}"))?;
    if n > 0 && info.topic_flags & abi::TOPIC_LOSSLESS == 0 {
        return Err(Failure::Usage.wrap(anyhow::anyhow!(
            "topic {shown} does not allow lossless readers, so --wait-readers would wait forever: create it with `baf-setup create {shown} --lossless`"
        )));
    }
    if info.lossless_readers < u64::from(n) {
        eprintln!(
            "pubmsg: waiting for {n} lossless reader(s) of {shown} ({} now)",
            info.lossless_readers
        );
    }
    topic.wait_readers(n).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENODEV) {
            Failure::NoTopic.wrap(anyhow::anyhow!(
                "topic {shown} was removed while waiting for readers"
            ))
        } else {
            anyhow::Error::new(e).context(format!("waiting for readers of {shown}"))
        }
    })
}

/// Most bytes of frames gathered into one batch `write()` (a single larger
/// record still goes alone).
pub const BATCH_MAX: usize = 64 * 1024;

/// Whether the batch, holding `batch_bytes` of frames, must be written
/// before a frame of `frame_bytes` joins it.
pub fn full_before(batch_bytes: usize, frame_bytes: usize) -> bool {
    batch_bytes > 0 && batch_bytes.saturating_add(frame_bytes) > BATCH_MAX
}

/// Whether to write the batch after a read of stdin was framed: when it
/// holds something and stdin has nothing more ready now (or is at its
/// end), so no record waits for input that has not arrived.
pub fn flush_after_read(batch_bytes: usize, input_ready: bool, eof: bool) -> bool {
    batch_bytes > 0 && (eof || !input_ready)
}

/// Whether stdin has input ready to read (or its end) right now.
pub fn stdin_ready() -> bool {
    input_ready(io::stdin().as_fd())
}

/// Whether `fd` has input ready to read (or its end) right now (a regular
/// file always has).
pub fn input_ready(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: `fds` is a valid array of one `pollfd` for the duration of
    // the call, and a zero timeout never blocks.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    n > 0 && fds[0].revents & (libc::POLLIN | libc::POLLHUP) != 0
}

/// Writes `batch` to `out` (all of it, see [`baf::device::write_batch`]),
/// counts it, and empties it.
fn flush<W: Write>(out: &mut W, batch: &mut Batch, stats: &mut Stats) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    baf::device::write_batch(&mut *out, batch.as_bytes()).context("writing to the topic")?;
    stats.records += batch.records() as u64;
    stats.bytes += batch.payload_bytes() as u64;
    stats.writes += 1;
    batch.clear();
    Ok(())
}

/// Reads `input` to its end and writes it to `out` (a topic file with
/// `FLAG_BATCH` set) as records, gathered into batches: after each read of
/// `input`, every record it completed is framed, and the batch is written
/// once `ready()` says no more input is ready now (or at the end of input),
/// or when it reaches [`BATCH_MAX`]. Loops on `EINTR` and short writes;
/// `warn` is called once for the first over-long line and once for the
/// first empty frame. Records framed before bad input are written before
/// the error is returned.
pub fn publish<R: Read, W: Write>(
    mut input: R,
    mut out: W,
    framer: &mut Framer,
    mut ready: impl FnMut() -> bool,
    mut warn: impl FnMut(&str),
) -> Result<Stats> {
    let chunk = match framer.framing() {
        // Raw chunks go out as they arrive: never read more than a record.
        Framing::Raw => framer.record_max().min(1 << 20),
        _ => 256 * 1024,
    };
    let mut buf = vec![0u8; chunk];
    let mut stats = Stats::default();
    let mut batch = Batch::with_capacity(BATCH_MAX);
    // A write error inside the framer's callback, kept whole here (the
    // callback can only return an `io::Error`).
    let mut failed: Option<anyhow::Error> = None;
    let mut warned_split = false;
    let mut warned_empty = false;
    let mut check = |framer: &Framer| {
        if framer.lines_split() > 0 && !warned_split {
            warned_split = true;
            warn(&format!(
                "a line is longer than the topic's record limit ({} bytes): it is sent as several records",
                framer.record_max()
            ));
        }
        if framer.empty_frames() > 0 && !warned_empty {
            warned_empty = true;
            warn("an empty frame was skipped: a record cannot be empty");
        }
    };
    let mut eof = false;
    while !eof {
        let n = match input.read(&mut buf) {
            Ok(0) => {
                eof = true;
                0
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                flush(&mut out, &mut batch, &mut stats)?;
                return Err(e).context("reading stdin");
            }
        };
        let mut emit = |record: &[u8]| -> io::Result<()> {
            if full_before(batch.len(), Batch::frame_len(record.len())) {
                if let Err(e) = flush(&mut out, &mut batch, &mut stats) {
                    failed = Some(e);
                    return Err(io::Error::other("the batch write failed"));
                }
            }
            batch.push(record)
        };
        let framed = if eof {
            framer.finish(&mut emit)
        } else {
            framer.push(buf.get(..n).unwrap_or_default(), &mut emit)
        };
        if let Some(e) = failed.take() {
            return Err(e);
        }
        check(framer);
        if let Err(e) = framed {
            // What came before the bad input is published, as it would
            // have been one record at a time.
            flush(&mut out, &mut batch, &mut stats)?;
            return Err(match e {
                FrameError::Io(e) => anyhow::Error::new(e).context("framing a record"),
                other => Failure::Usage.wrap(anyhow::anyhow!("bad input: {other}")),
            });
        }
        if flush_after_read(batch.len(), eof || ready(), eof) {
            flush(&mut out, &mut batch, &mut stats)?;
        }
    }
    stats.lines_split = framer.lines_split();
    stats.empty_frames = framer.empty_frames();
    Ok(stats)
}

/// `--raw` (from stdin or a file): each read of `input`, of at most
/// `record_max` bytes (and at most 1 MiB), is written to `out` (a topic file
/// in plain mode) as it is, in one `write()`, so it is one record, copied
/// once, straight from this buffer into the ring. Loops on `EINTR`.
pub fn publish_raw<R: Read, W: Write>(
    mut input: R,
    mut out: W,
    record_max: usize,
) -> Result<Stats> {
    let mut buf = vec![0u8; record_max.clamp(1, 1 << 20)];
    let mut stats = Stats::default();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(stats),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading stdin"),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        out.write_all(chunk).context("writing to the topic")?;
        stats.records += 1;
        stats.writes += 1;
        stats.bytes += n as u64;
    }
}

/// The flags of line mode cutting at `delim` (ABI 6): `FLAG_LINES`, and
/// `FLAG_NUL` for a `delim` of 0.
pub fn line_flags(delim: u8) -> u32 {
    match delim {
        0 => abi::FLAG_LINES | abi::FLAG_NUL,
        _ => abi::FLAG_LINES,
    }
}

/// Switches `topic` to line mode, cutting at `delim` (ABI 6).
pub fn line_mode(topic: &Topic, shown: &str, delim: u8) -> Result<()> {
    topic
        .set_flags(line_flags(delim))
        .with_context(|| format!("cannot switch topic {shown} to line mode"))
}

/// Switches `topic` to batch writes (the ABI was checked by [`claim`]).
pub fn batch_mode(topic: &Topic, shown: &str) -> Result<()> {
    topic
        .set_flags(abi::FLAG_BATCH)
        .with_context(|| format!("cannot switch topic {shown} to batch writes"))
}

/// The records for `-m` messages: each message ended as `framing` ends a
/// record (a newline for lines, a NUL for [`Framing::Nul`], nothing for
/// raw). Every one is checked before any is sent: a message that cannot be
/// one record (empty, or longer than `record_max`) is a usage error, and
/// then nothing is published.
pub fn message_records(
    messages: &[OsString],
    framing: Framing,
    record_max: usize,
) -> Result<Vec<Vec<u8>>> {
    let mut records = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let mut r = m.as_bytes().to_vec();
        match framing {
            Framing::Lines => r.push(b'\n'),
            Framing::Nul => r.push(0),
            Framing::Raw | Framing::Len32 => {}
        }
        let which = if messages.len() == 1 {
            "the message".to_string()
        } else {
            format!("message {} (-m)", i + 1)
        };
        if r.is_empty() {
            return Err(Failure::Usage.wrap(anyhow::anyhow!(
                "{which} is empty, and a record cannot be: nothing was published"
            )));
        }
        if r.len() > record_max {
            return Err(Failure::Usage.wrap(anyhow::anyhow!(
                "{which} has {} bytes, more than the topic's record limit of {record_max}: nothing was published; create the topic with a larger record limit (baf-setup create NAME --record-max ...)",
                r.len()
            )));
        }
        records.push(r);
    }
    Ok(records)
}

/// Writes `records` to `out` (a topic file with `FLAG_BATCH` set) in
/// batches of at most [`BATCH_MAX`] bytes (a larger record alone).
pub fn publish_records<W: Write>(records: &[Vec<u8>], mut out: W) -> Result<Stats> {
    let mut stats = Stats::default();
    let mut batch = Batch::with_capacity(BATCH_MAX);
    for r in records {
        if full_before(batch.len(), Batch::frame_len(r.len())) {
            flush(&mut out, &mut batch, &mut stats)?;
        }
        batch.push(r).context("framing a record")?;
    }
    flush(&mut out, &mut batch, &mut stats)?;
    Ok(stats)
}

/// Opens `-f FILE` for reading: one line on error, classed (a file that is
/// not there, or a directory, is bad input; no permission is that).
pub fn open_input(path: &Path) -> Result<File> {
    let class = |e: &io::Error| match e.kind() {
        io::ErrorKind::NotFound => Some(Failure::Usage),
        io::ErrorKind::PermissionDenied => Some(Failure::Permission),
        _ => None,
    };
    let shown = path.display();
    let file = File::open(path).map_err(|e| {
        let c = class(&e);
        let e = anyhow::Error::new(e).context(format!("cannot open {shown} (-f)"));
        match c {
            Some(c) => c.wrap(e),
            None => e,
        }
    })?;
    match file.metadata() {
        Ok(m) if m.is_dir() => Err(Failure::Usage.wrap(anyhow::anyhow!(
            "{shown} is a directory: -f takes a file to publish"
        ))),
        _ => Ok(file),
    }
}

/// The whole tool: open, claim (unless shared), publish the input, exit 0
/// at its end.
pub fn run(opts: &Options) -> Result<()> {
    // The input first: a file that cannot be read creates no topic.
    let file = match &opts.input {
        Input::File(path) => Some(open_input(path)?),
        _ => None,
    };
    let (topic, shown) = open_topic(&opts.topic, opts.create)?;
    let info = if opts.shared {
        check(&topic, &shown)?
    } else {
        claim(&topic, &shown)?
    };
    let record_max = info.record_max.max(1) as usize;
    let messages = match &opts.input {
        Input::Messages(m) => Some(message_records(m, opts.framing, record_max)?),
        _ => None,
    };
    // Lines and NUL-ended items of the input: line mode; the rest: batches.
    let lines = match opts.framing {
        _ if messages.is_some() => None,
        Framing::Lines => Some(b'\n'),
        Framing::Nul => Some(0),
        Framing::Raw | Framing::Len32 => None,
    };
    // Raw chunks of the input: plain writes, a record each; from a pipe or
    // a file, spliced where the module has it.
    let raw = messages.is_none() && opts.framing == Framing::Raw;
    let splice = raw && info.abi_version >= abi::ABI_SPLICE;
    let source = |fd: BorrowedFd<'_>| source_of(fd).filter(|_| splice);
    // Lines from a pipe or a file: spliced too, where the module takes
    // whole lines a pass.
    let splice_lines = info.abi_version >= abi::ABI_WHOLE_LINES;
    let line_source = |fd: BorrowedFd<'_>| source_of(fd).filter(|_| splice_lines);
    match lines {
        Some(delim) => line_mode(&topic, &shown, delim)?,
        None if raw => {}
        None => batch_mode(&topic, &shown)?,
    }
    if let Some(n) = opts.wait_readers {
        wait_readers(&topic, &shown, n)?;
    }
    let mut framer = Framer::new(opts.framing, record_max);
    let warn = |msg: &str| eprintln!("pubmsg: warning: {msg}");
    let done = match (messages, file, lines) {
        (Some(records), _, _) => publish_records(&records, topic.file()),
        (None, Some(f), Some(delim)) => match line_source(f.as_fd()) {
            Some(src) => publish_spliced_lines(f.as_fd(), src, &topic, delim, record_max, warn),
            None => publish_lines(&f, topic.file(), delim, record_max, warn),
        },
        (None, None, Some(delim)) => match line_source(io::stdin().as_fd()) {
            Some(src) => {
                let stdin = io::stdin();
                publish_spliced_lines(stdin.as_fd(), src, &topic, delim, record_max, warn)
            }
            None => publish_lines(io::stdin().lock(), topic.file(), delim, record_max, warn),
        },
        (None, Some(f), None) if raw => match source(f.as_fd()) {
            Some(src) => publish_spliced(f.as_fd(), src, &topic, record_max),
            None => publish_raw(&f, topic.file(), record_max),
        },
        (None, None, None) if raw => match source(io::stdin().as_fd()) {
            Some(src) => publish_spliced(io::stdin().as_fd(), src, &topic, record_max),
            None => publish_raw(io::stdin().lock(), topic.file(), record_max),
        },
        (None, Some(f), None) => {
            let ready = || input_ready(f.as_fd());
            publish(&f, topic.file(), &mut framer, ready, warn)
        }
        (None, None, None) => publish(
            io::stdin().lock(),
            topic.file(),
            &mut framer,
            stdin_ready,
            warn,
        ),
    };
    done.map_err(|e| {
        if baf_cli::errno(&e) == Some(libc::ENODEV) {
            Failure::NoTopic.wrap(anyhow::anyhow!(
                "topic {shown} was removed while publishing"
            ))
        } else {
            e.context(format!("publishing to {shown}"))
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;
