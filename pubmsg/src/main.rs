//! `pubmsg TOPIC`: publish stdin to a baf topic (command line; the work is
//! in the library, `lib.rs`).

use baf::frame::Framing;
use baf_cli::Generate;
use clap::Parser;
use pubmsg::Input;
use std::ffi::OsString;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Examples:
  service-x | pubmsg sensors             # each line is one record
  seq 3 | pubmsg /dev/fanout0            # a device path works too
  producer | pubmsg --len32 robot/arm    # big-endian u32 length-prefixed frames
  tar c dir | pubmsg --raw backups       # chunks as they arrive
  pubmsg sensors -m 'temp 21.5'          # one record, 'temp 21.5' and a newline
  pubmsg sensors -f readings.txt         # the file's lines instead of stdin
  find . -print0 | pubmsg -0 files       # NUL-separated items, one record each
  producer | pubmsg --shared logs        # alongside other publishers of logs

A line longer than the topic's record limit is sent as several records (with
one warning); a --len32 frame longer than the limit is refused, and so is a
-m message (then nothing is sent).

One publisher a topic: pubmsg takes the topic's publisher lock, and a second
pubmsg on the topic fails (exit 5) while the first runs. --shared publishes
without taking the lock, so any number of --shared publishers (and at most
one pubmsg without it) write to the topic at once; their records interleave,
each record whole.

Lines (and -0 items) go out in line mode: each read of stdin is written up
to its last newline (NUL) in one write, as soon as it is read, and the
kernel cuts it into records. From a pipe or a file, where the module can,
the kernel moves them itself (splice, sendfile), taking whole lines only;
pubmsg reads a stretch itself only where a line has not ended yet or is
longer than the record limit. --raw writes each read of stdin as one record;
--len32 frames and -m messages go out in batch writes. The fanout module
must have ABI version 6 or later.

A device path must be a baf topic's character device: anything else (a
regular file, a FIFO, another driver's device) is refused without being
opened.

Exit codes: 0 end of input (or every -m message sent), 1 other error, 2
usage or bad input (or a path that is not a baf topic device, an -f file
that does not exist), 3 no such topic (and it cannot be created here), 4 no
permission, 5 the topic already has a publisher (not with --shared), 6 the
baf module is not loaded (modprobe fanout) or is too old.";

/// Publish stdin to a baf topic, one record per line (or chunk, or frame).
///
/// Opens /dev/baf/TOPIC (creating the topic when it is missing and you may
/// create topics), takes the topic's publisher lock (one pubmsg per topic,
/// unless --shared), and writes each line of stdin (or of -f FILE), newline
/// included, as one record; or sends the -m messages. It never loses,
/// duplicates or reorders a byte of its input, and exits 0 at its end.
#[derive(Parser, Debug)]
#[command(name = "pubmsg", version, about, long_about, after_help = AFTER_HELP)]
struct Args {
    /// Topic name (e.g. sensors, robot/arm) or device path (/dev/fanout0,
    /// ./node).
    #[arg(required = true)]
    topic: Option<String>,
    /// Publish MESSAGE as one record and exit, instead of reading stdin:
    /// MESSAGE and a newline (a NUL with -0, nothing more with --raw).
    /// Repeatable: each -m is one record, in order.
    #[arg(short = 'm', long = "message", value_name = "MESSAGE", conflicts_with_all = ["file", "len32"])]
    message: Vec<OsString>,
    /// Read the input from FILE instead of stdin (cut into records the
    /// same way).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Send the input in chunks as they arrive (each read is one record).
    #[arg(long, conflicts_with_all = ["len32", "null"])]
    raw: bool,
    /// Read big-endian 32-bit length-prefixed frames; each frame is one
    /// record (without its prefix).
    #[arg(long, conflicts_with = "null")]
    len32: bool,
    /// Input items end with a NUL byte, not a newline (find -print0,
    /// xargs -0): each item, NUL included, is one record.
    #[arg(short = '0', long = "null")]
    null: bool,
    /// Publish without taking the topic's publisher lock, so that several
    /// publishers can share the topic (their records interleave, each
    /// whole). Not refused when another pubmsg holds the lock, nor keeps
    /// one out.
    #[arg(long)]
    shared: bool,
    /// Fail when the topic does not exist instead of creating it.
    #[arg(long)]
    no_create: bool,
    /// Before sending anything, wait until N lossless readers (submsg
    /// --lossless) are attached, so none of them misses the start. The
    /// topic must allow lossless readers (baf-setup create --lossless).
    #[arg(long, value_name = "N")]
    wait_readers: Option<u32>,
    /// Print a man page or shell completions to stdout and exit.
    #[arg(long, value_name = "KIND", hide = true, exclusive = true)]
    generate: Option<Generate>,
}

impl Args {
    fn options(&self) -> pubmsg::Options {
        pubmsg::Options {
            topic: self.topic.clone().unwrap_or_default(),
            input: if !self.message.is_empty() {
                Input::Messages(self.message.clone())
            } else if let Some(f) = &self.file {
                Input::File(f.clone())
            } else {
                Input::Stdin
            },
            framing: if self.raw {
                Framing::Raw
            } else if self.len32 {
                Framing::Len32
            } else if self.null {
                Framing::Nul
            } else {
                Framing::Lines
            },
            shared: self.shared,
            create: !self.no_create,
            wait_readers: self.wait_readers,
        }
    }
}

fn main() {
    baf_cli::main(
        "pubmsg",
        |a: &Args| a.generate,
        |a| pubmsg::run(&a.options()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse_from(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("pubmsg").chain(args.iter().copied()))
    }

    #[test]
    fn framing_flags() {
        assert_eq!(
            parse_from(&["t"]).unwrap().options().framing,
            Framing::Lines
        );
        assert_eq!(
            parse_from(&["--raw", "t"]).unwrap().options().framing,
            Framing::Raw
        );
        assert_eq!(
            parse_from(&["t", "--len32"]).unwrap().options().framing,
            Framing::Len32
        );
        assert!(parse_from(&["--raw", "--len32", "t"]).is_err());
        assert_eq!(
            parse_from(&["-0", "t"]).unwrap().options().framing,
            Framing::Nul
        );
        assert_eq!(
            parse_from(&["t", "--null"]).unwrap().options().framing,
            Framing::Nul
        );
        assert!(parse_from(&["-0", "--raw", "t"]).is_err());
        assert!(parse_from(&["-0", "--len32", "t"]).is_err());
    }

    #[test]
    fn messages_file_or_stdin() {
        assert_eq!(parse_from(&["t"]).unwrap().options().input, Input::Stdin);
        assert_eq!(
            parse_from(&["t", "-m", "a", "--message", "b c"])
                .unwrap()
                .options()
                .input,
            Input::Messages(vec!["a".into(), "b c".into()])
        );
        assert_eq!(
            parse_from(&["-f", "in.txt", "t"]).unwrap().options().input,
            Input::File("in.txt".into())
        );
        // One input at a time; a message has no --len32 frame.
        let e = parse_from(&["-m", "a", "-f", "x", "t"]).unwrap_err();
        assert_eq!(
            baf_cli::one_line(&e),
            "the argument '--message <MESSAGE>' cannot be used with '--file <FILE>'"
        );
        assert!(parse_from(&["-m", "a", "--len32", "t"]).is_err());
        assert!(parse_from(&["-m", "a", "-0", "t"]).is_ok());
        assert!(parse_from(&["-m", "t"]).is_err(), "-m takes a value");
    }

    #[test]
    fn shared_skips_the_lock() {
        assert!(!parse_from(&["t"]).unwrap().options().shared);
        assert!(parse_from(&["--shared", "t"]).unwrap().options().shared);
    }

    #[test]
    fn short_flags_have_one_meaning_across_the_tools() {
        // -f is a file (as for mosquitto_pub), -m a message, -0 NUL items;
        // submsg uses -F for --follow so that -f means one thing.
        let cmd = Args::command();
        let shorts: Vec<(char, &str)> = cmd
            .get_arguments()
            .filter_map(|a| Some((a.get_short()?, a.get_id().as_str())))
            .collect();
        assert_eq!(shorts, vec![('m', "message"), ('f', "file"), ('0', "null")]);
    }

    #[test]
    fn topic_required_unless_generating() {
        let e = parse_from(&[]).unwrap_err();
        assert_eq!(
            baf_cli::one_line(&e),
            "the following required arguments were not provided: <TOPIC>"
        );
        assert_eq!(
            parse_from(&["--generate", "man"]).unwrap().generate,
            Some(Generate::Man)
        );
        assert!(parse_from(&["--generate", "man", "t"]).is_err());
        assert!(parse_from(&["--generate", "nonsense"]).is_err());
    }

    #[test]
    fn create_by_default() {
        let o = parse_from(&["robot/arm"]).unwrap().options();
        assert!(o.create);
        assert_eq!(o.topic, "robot/arm");
        assert!(!parse_from(&["--no-create", "t"]).unwrap().options().create);
    }

    #[test]
    fn one_line_errors() {
        let e = parse_from(&["--bogus", "t"]).unwrap_err();
        let line = baf_cli::one_line(&e);
        assert!(!line.contains('\n'));
        assert!(line.contains("--bogus"), "{line}");
    }

    #[test]
    fn help_has_examples_and_clap_is_consistent() {
        Args::command().debug_assert();
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("Examples:") && help.contains("pubmsg --len32"));
    }

    #[test]
    fn man_page_and_completions_render() {
        let mut man = Vec::new();
        clap_mangen::Man::new(Args::command())
            .render(&mut man)
            .unwrap();
        assert!(String::from_utf8(man).unwrap().contains("len32"));
        let mut bash = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Args::command(),
            "pubmsg",
            &mut bash,
        );
        assert!(String::from_utf8(bash).unwrap().contains("--no-create"));
    }
}
