//! `pubmsg`: publish stdin to a baf topic.
//!
//! The tool opens (or creates) the topic, takes its publisher lock, and
//! cuts stdin into records with [`baf::frame::Framer`]: one `write()` per
//! record, so each record reaches every reader whole.

use anyhow::{Context, Result};
use baf::cli::Failure;
use baf::control;
use baf::device::Topic;
use baf::frame::{FrameError, Framer, Framing};
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to publish, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Topic name or device path.
    pub topic: String,
    /// How stdin is cut into records.
    pub framing: Framing,
    /// Create the topic when it does not exist (and the caller may).
    pub create: bool,
}

/// What [`publish`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records written.
    pub records: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Lines longer than the record limit, split.
    pub lines_split: u64,
    /// Empty `--len32` frames skipped.
    pub empty_frames: u64,
}

/// Whether a command-line topic is a path (used as it is) rather than a
/// name.
pub fn is_path(topic: &str) -> bool {
    topic.starts_with('/') || topic.starts_with('.')
}

fn open_write(path: &Path) -> io::Result<Topic> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map(Topic::from_file)
}

/// Says what an error opening topic `shown` at `path` means, with what to do.
fn open_error(e: io::Error, shown: &str, path: &Path) -> anyhow::Error {
    let p = path.display();
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Failure::Permission.wrap(anyhow::anyhow!(
            "no permission to write to topic {shown} ({p}): join the group that owns it (ls -l {p})"
        )),
        Some(libc::ENOENT) => Failure::NoTopic.wrap(anyhow::anyhow!(
            "topic {shown} does not exist ({p}): create it with `baf-setup create {shown}`"
        )),
        Some(libc::ENXIO) | Some(libc::ENODEV) => {
            Failure::NoTopic.wrap(anyhow::anyhow!("topic {shown} was removed ({p})"))
        }
        _ => anyhow::Error::new(e).context(format!("cannot open topic {shown} ({p})")),
    }
}

/// Opens topic `arg` for writing, creating it first when it is a name that
/// does not exist and `create` is set. Returns the topic and the name to
/// show in messages.
pub fn open_topic(arg: &str, create: bool) -> Result<(Topic, String)> {
    if is_path(arg) {
        let path = PathBuf::from(arg);
        return open_write(&path)
            .map(|t| (t, arg.to_string()))
            .map_err(|e| open_error(e, arg, &path));
    }
    control::check_name(arg)?;
    let path = control::node_of(arg);
    match open_write(&path) {
        Ok(t) => return Ok((t, arg.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Failure::NoTopic.wrap(anyhow::anyhow!(
                "topic {arg} does not exist ({}): create it with `baf-setup create {arg}`, or leave out --no-create",
                path.display()
            )))
        }
        Err(e) => return Err(open_error(e, arg, &path)),
    }
    if let Err(e) = control::create(arg, &control::CreateOptions::defaults()) {
        return Err(Failure::NoTopic.wrap(anyhow::anyhow!(
            "topic {arg} does not exist and cannot be created here ({}): as root, run `baf-setup create {arg}`",
            baf::cli::message(&e)
        )));
    }
    // devtmpfs makes the node before the create returns; a /dev managed by
    // a slower helper may take a moment.
    let path = baf::topic_path(arg);
    let mut tries = 0;
    loop {
        match open_write(&path) {
            Ok(t) => return Ok((t, arg.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(open_error(e, arg, &path)),
        }
    }
}

/// Takes the topic's publisher lock, with a one-line error when another
/// pubmsg has it. Returns the topic's record limit.
pub fn claim(topic: &Topic, shown: &str) -> Result<usize> {
    let info = match topic.info() {
        Ok(i) => i,
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
            return Err(Failure::Usage.wrap(anyhow::anyhow!(
                "{shown} is not a baf topic (a fanout device)"
            )))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot query topic {shown}")),
    };
    match topic.claim_publisher() {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(Failure::Busy.wrap(anyhow::anyhow!(
                "topic {shown} already has a publisher (another pubmsg); stop it first (fuser -v shows it)"
            )))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot claim topic {shown}")),
    }
    Ok(info.record_max.max(1) as usize)
}

/// Reads `input` to its end and writes it to `out` as records, one
/// `write()` each. Loops on `EINTR` and partial writes; `warn` is called
/// once for the first over-long line and once for the first empty frame.
pub fn publish<R: Read, W: Write>(
    mut input: R,
    mut out: W,
    framer: &mut Framer,
    mut warn: impl FnMut(&str),
) -> Result<Stats> {
    let chunk = match framer.framing() {
        // Raw chunks go out as they arrive: never read more than a record.
        Framing::Raw => framer.record_max().min(1 << 20),
        _ => 256 * 1024,
    };
    let mut buf = vec![0u8; chunk];
    let mut stats = Stats::default();
    let mut emit = |record: &[u8]| -> io::Result<()> {
        out.write_all(record)?;
        stats.records += 1;
        stats.bytes += record.len() as u64;
        Ok(())
    };
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
    let frame_err = |e: FrameError| match e {
        FrameError::Io(e) => anyhow::Error::new(e).context("writing to the topic"),
        other => Failure::Usage.wrap(anyhow::anyhow!("bad input: {other}")),
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading stdin"),
        };
        framer
            .push(buf.get(..n).unwrap_or_default(), &mut emit)
            .map_err(frame_err)?;
        check(framer);
    }
    framer.finish(&mut emit).map_err(frame_err)?;
    check(framer);
    stats.lines_split = framer.lines_split();
    stats.empty_frames = framer.empty_frames();
    Ok(stats)
}

/// The whole tool: open, claim, publish stdin, exit 0 at EOF.
pub fn run(opts: &Options) -> Result<()> {
    let (topic, shown) = open_topic(&opts.topic, opts.create)?;
    let record_max = claim(&topic, &shown)?;
    let mut framer = Framer::new(opts.framing, record_max);
    let stdin = io::stdin().lock();
    let warn = |msg: &str| eprintln!("pubmsg: warning: {msg}");
    publish(stdin, topic.file(), &mut framer, warn).map_err(|e| {
        if baf::cli::errno(&e) == Some(libc::ENODEV) {
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that returns its data in pieces, with an EINTR before each.
    struct Choppy {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        i: usize,
        interrupt: bool,
    }

    impl Read for Choppy {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let size = self.sizes.get(self.i).copied().unwrap_or(7).max(1);
            self.i += 1;
            let n = size.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// A device stand-in: records every write; short writes and EINTR on
    /// request.
    #[derive(Default)]
    struct Sink {
        writes: Vec<Vec<u8>>,
        short: bool,
        calls: usize,
    }

    impl Write for &mut Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.short && self.calls % 3 == 0 {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let n = if self.short && buf.len() > 1 && self.calls % 2 == 0 {
                buf.len() / 2
            } else {
                buf.len()
            };
            self.writes.push(buf[..n].to_vec());
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn run_publish(
        framing: Framing,
        max: usize,
        data: &[u8],
        sizes: Vec<usize>,
        short: bool,
    ) -> (Sink, Stats, Vec<String>) {
        let input = Choppy {
            data: data.to_vec(),
            pos: 0,
            sizes,
            i: 0,
            interrupt: false,
        };
        let mut sink = Sink {
            short,
            ..Sink::default()
        };
        let mut warnings = Vec::new();
        let mut framer = Framer::new(framing, max);
        let stats = publish(input, &mut sink, &mut framer, |w| {
            warnings.push(w.to_string())
        })
        .unwrap();
        (sink, stats, warnings)
    }

    #[test]
    fn lines_one_write_each() {
        let (sink, stats, warnings) =
            run_publish(Framing::Lines, 100, b"a\nbc\nlast", vec![1, 2, 3], false);
        assert_eq!(
            sink.writes,
            vec![b"a\n".to_vec(), b"bc\n".to_vec(), b"last".to_vec()]
        );
        assert_eq!(stats.records, 3);
        assert!(warnings.is_empty());
    }

    #[test]
    fn long_lines_warn_once() {
        let mut data = vec![b'x'; 50];
        data.push(b'\n');
        data.extend_from_slice(&[b'y'; 30]);
        let (sink, stats, warnings) = run_publish(Framing::Lines, 16, &data, vec![5], false);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("16 bytes"));
        assert_eq!(stats.lines_split, 2);
        assert!(sink.writes.iter().all(|w| w.len() <= 16));
        assert_eq!(sink.writes.concat(), data);
    }

    #[test]
    fn empty_stdin_publishes_nothing() {
        for framing in [Framing::Lines, Framing::Raw, Framing::Len32] {
            let (sink, stats, _) = run_publish(framing, 100, b"", vec![], false);
            assert!(sink.writes.is_empty());
            assert_eq!(stats, Stats::default());
        }
    }

    #[test]
    fn len32_bad_input_is_a_usage_error() {
        let mut framer = Framer::new(Framing::Len32, 4);
        let mut sink = Sink::default();
        let data = baf::frame::encode_len32([&b"12345"[..]]);
        let e = publish(&data[..], &mut sink, &mut framer, |_| {}).unwrap_err();
        assert_eq!(baf::cli::exit_code(&e), 2);
        assert!(
            baf::cli::message(&e).contains("record limit of 4"),
            "{}",
            baf::cli::message(&e)
        );
        let mut framer = Framer::new(Framing::Len32, 4);
        let e = publish(&[0u8, 0, 0, 3, 1][..], &mut sink, &mut framer, |_| {}).unwrap_err();
        assert!(baf::cli::message(&e).contains("ended inside a frame"));
    }

    #[test]
    fn write_errors_carry_context() {
        struct Gone;
        impl Write for Gone {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::ENODEV))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut framer = Framer::new(Framing::Lines, 10);
        let e = publish(&b"x\n"[..], Gone, &mut framer, |_| {}).unwrap_err();
        assert_eq!(baf::cli::errno(&e), Some(libc::ENODEV));
        assert!(baf::cli::message(&e).starts_with("writing to the topic"));
    }

    #[test]
    fn paths_and_names() {
        assert!(is_path("/dev/fanout0") && is_path("./t") && !is_path("robot/arm"));
    }

    proptest! {
        /// Whatever the chunking, EINTRs and short writes, every byte of
        /// stdin reaches the device once, in order.
        #[test]
        fn no_byte_lost_duplicated_or_reordered(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..3000),
            sizes in proptest::collection::vec(1usize..500, 0..30),
            max in 1usize..100,
            raw in any::<bool>(),
            short in any::<bool>(),
        ) {
            let framing = if raw { Framing::Raw } else { Framing::Lines };
            let (sink, stats, _) = run_publish(framing, max, &data, sizes, short);
            prop_assert_eq!(sink.writes.concat(), data.clone());
            prop_assert!(sink.writes.iter().all(|w| w.len() <= max && !w.is_empty()));
            prop_assert_eq!(stats.bytes, data.len() as u64);
        }

        #[test]
        fn len32_frames_are_writes(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..20),
            sizes in proptest::collection::vec(1usize..100, 0..30),
        ) {
            let data = baf::frame::encode_len32(frames.iter().map(|f| &f[..]));
            let (sink, stats, warnings) = run_publish(Framing::Len32, 64, &data, sizes, false);
            prop_assert_eq!(sink.writes, frames.clone());
            prop_assert_eq!(stats.records, frames.len() as u64);
            prop_assert!(warnings.is_empty());
        }
    }
}
