//! `submsg [TOPICS...] [-e EXCLUDED...]`: subscribe to baf topics and write
//! them to stdout (command line; the work is in the library, `lib.rs`).

use baf_cli::Generate;
use clap::Parser;
use std::time::Duration;
use submsg::StartAt;

const AFTER_HELP: &str = "\
Topics are names (sensors, robot/arm), device paths (/dev/fanout0), or
patterns: '+' is one level and '#' the rest (robot/+/joint1, robot/#), a
trailing '*' matches any suffix (file.*), and '*' alone is every topic.
Lists may be comma-separated, as in: submsg a,b -e c,d

Examples:
  submsg sensors | service-y             # one topic, records as written
  submsg                                 # every topic
  submsg 'robot/#' -e robot/debug        # a subtree, less one topic
  submsg -F 'file.*' --prefix            # also topics made later; 'topic: line'
  submsg -v 'robot/#'                    # 'topic line', as mosquitto_sub -v
  submsg sensors --from last:10 --json   # the last 10 records, as JSON lines
  submsg sensors --from oldest -n 1      # the oldest record still buffered
  submsg --last                          # the latest record of every topic
  submsg -n 1 -W 5 alarms                # wait at most 5 s for one record
  submsg -0 files | xargs -0 ls -l       # NUL after each record
  submsg frames --len32 | consumer       # exact frames for pubmsg --len32 data

--json prints one object a line: topic, seq, timestamp (CLOCK_MONOTONIC ns),
pid and uid of the writer, writer (the writing process's pidfd inode number:
unlike a pid, never reused before reboot), lost (records lost just before
this one), payload (a string), encoding (utf8, or base64 when the payload
is not UTF-8) and time (the timestamp on the wall clock: RFC 3339 in UTC
with nanoseconds, 2025-01-31T12:00:00.123456789Z, converted with the
clocks' difference when the record is printed, so a clock step since the
write shifts it).

-0 ends each record with a NUL byte instead of a newline: a record's own
final newline (or NUL, from pubmsg -0) is left out, and a record with
several lines is one item (--prefix and -v prefix it once).

Lost records (a reader too slow for the ring) are reported on stderr, at
most once a second, with counts per topic, and the first report for a topic
says what to do. A closed stdout (submsg | head -1) ends submsg quietly with
status 0.

Topics are read through a read-only mapping of their rings where the module
allows it (not inside a container's pid or user namespace), else with
read(); --no-mmap forces read(). One topic printed as it is (no -n, -0,
--lossless or format option) into a pipe goes there by splice: the kernel
copies the payloads from the ring into the pipe itself. The output is the
same either way. The fanout module must have ABI version 6 or later.

A device path must be a baf topic's character device: anything else (a
regular file, a FIFO, another driver's device) is refused without being
opened. A topic found by a pattern (or by --follow) that cannot be read is
reported on stderr and skipped; with no topic given (every topic), topics
this user may not read are skipped without a word; a topic given by its
exact name or path must be readable.

A topic given by its exact name that does not exist is created (when you
may create topics) and read from its start, with a notice on stderr; with
--follow, one that cannot be created is waited for. --no-wait makes a
missing named topic an error (exit 3) instead.

Exit codes: 0 done (stdout closed, --count reached, every topic removed,
--last printed, -W's time ran out after at least one record), 1 other
error, 2 usage (or a path that is not a baf topic device), 3 no such topic
(and it cannot be created here, or --no-wait), 4 no permission, 6 the baf
module is not loaded (modprobe fanout) or is too old, 7 -W's time ran out
and no record arrived.";

/// Subscribe to baf topics and write what is published to stdout.
///
/// Reads every selected topic (all of them when none is given) with one
/// thread and epoll, from the moment it starts (or from --from), and
/// writes the records to stdout in large buffered writes, flushed as soon
/// as no topic has more to read. Topics are read through a read-only
/// mapping of their rings where allowed (no system call per batch), else
/// with read(); the output is the same.
#[derive(Parser, Debug)]
#[command(name = "submsg", version, about, long_about, after_help = AFTER_HELP)]
struct Args {
    /// Topics, patterns or device paths (comma lists too); none means every
    /// topic.
    topics: Vec<String>,
    /// Leave out topics matching these patterns (comma lists too).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Keep running: join matching topics created later (read from their
    /// first record), drop removed ones (as tail -F follows names).
    #[arg(short = 'F', long)]
    follow: bool,
    #[command(flatten)]
    output: baf_cli::OutputFormat,
    /// End each record with a NUL byte instead of a newline (for xargs -0):
    /// a record's own final newline (or NUL) is left out.
    #[arg(short = '0', long = "null")]
    null: bool,
    /// Where to start in each topic: oldest, last:N, seq:S, or now.
    #[arg(long, value_name = "WHERE", default_value = "now", value_parser = parse_start)]
    from: StartAt,
    /// Print the last record of each topic (the latest value; none for an
    /// empty topic) and exit, as --from last that does not wait for more.
    /// A named topic must exist.
    #[arg(long, conflicts_with_all = ["from", "follow"])]
    last: bool,
    /// Exit after this many records.
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u64>,
    /// Exit SECONDS (decimals allowed) after subscribing: status 0 if a
    /// record arrived by then, else 7.
    #[arg(short = 'W', long = "timeout", value_name = "SECONDS", value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// Fail when a topic given by name does not exist instead of creating
    /// it (with --follow: wait for it instead).
    #[arg(long)]
    no_create: bool,
    /// Fail (exit 3) when a topic given by name does not exist, instead of
    /// creating it or waiting for it.
    #[arg(long)]
    no_wait: bool,
    /// Read topics with read() only, not through a read-only mapping of
    /// their rings (which is used when allowed: not inside a container's
    /// pid or user namespace), nor by splice into a pipe.
    #[arg(long)]
    no_mmap: bool,
    /// Lose nothing: writers wait for this reader, as for a pipe, rather
    /// than overwrite what it has not read. Every topic must allow it
    /// (baf-setup create NAME --lossless); reads with read(), not a mapping.
    #[arg(short = 'L', long)]
    lossless: bool,
    /// Print a man page or shell completions to stdout and exit.
    #[arg(long, value_name = "KIND", hide = true, exclusive = true)]
    generate: Option<Generate>,
}

fn parse_start(s: &str) -> Result<StartAt, String> {
    s.parse()
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a number of seconds above 0, as in 5 or 0.5");
    let secs: f64 = s.trim().parse().map_err(|_| bad())?;
    if secs.is_nan() || secs <= 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

impl Args {
    fn config(&self) -> submsg::Config {
        submsg::Config {
            topics: self.topics.clone(),
            exclude: self.exclude.clone(),
            follow: self.follow,
            format: self.output.format(),
            start: self.from,
            create: !self.no_create,
            count: self.count,
            no_mmap: self.no_mmap,
            lossless: self.lossless,
            nul: self.null,
            last: self.last,
            no_wait: self.no_wait,
            timeout: self.timeout,
        }
    }
}

fn main() {
    baf_cli::main(
        "submsg",
        |a: &Args| a.generate,
        |a| submsg::run(&a.config()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use submsg::format::Format;

    fn parse_from(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("submsg").chain(args.iter().copied()))
    }

    #[test]
    fn topics_and_excludes_in_both_forms() {
        let c = parse_from(&["a,b", "c", "-e", "x,y", "--exclude", "z"])
            .unwrap()
            .config();
        assert_eq!(c.topics, vec!["a,b", "c"]);
        assert_eq!(c.exclude, vec!["x,y", "z"]);
        let p = submsg::plan(&c).unwrap();
        assert_eq!(p.exact, vec!["a", "b", "c"]);
        assert_eq!(p.selection.exclude.len(), 3);
        assert!(parse_from(&[]).unwrap().config().topics.is_empty());
    }

    #[test]
    fn formats_exclude_each_other() {
        assert_eq!(parse_from(&["t"]).unwrap().config().format, Format::Raw);
        assert_eq!(
            parse_from(&["--prefix", "t"]).unwrap().config().format,
            Format::Prefix
        );
        assert_eq!(
            parse_from(&["-j", "t"]).unwrap().config().format,
            Format::Json
        );
        assert_eq!(
            parse_from(&["--len32", "t"]).unwrap().config().format,
            Format::Len32
        );
        assert!(parse_from(&["--json", "--prefix", "t"]).is_err());
    }

    #[test]
    fn from_and_count() {
        let c = parse_from(&["--from", "last:5", "-n", "3", "t"])
            .unwrap()
            .config();
        assert_eq!(c.start, StartAt::Last(5));
        assert_eq!(c.count, Some(3));
        assert_eq!(parse_from(&["t"]).unwrap().config().start, StartAt::Now);
        let e = parse_from(&["--from", "yesterday"]).unwrap_err();
        assert!(
            baf_cli::one_line(&e).contains("oldest, last:N, seq:S"),
            "{}",
            baf_cli::one_line(&e)
        );
        assert!(!baf_cli::one_line(&e).contains('\n'));
    }

    #[test]
    fn mmap_by_default() {
        assert!(!parse_from(&["t"]).unwrap().config().no_mmap);
        assert!(parse_from(&["--no-mmap", "t"]).unwrap().config().no_mmap);
    }

    #[test]
    fn follow_and_create() {
        let c = parse_from(&["-F", "--no-create", "robot/#"])
            .unwrap()
            .config();
        assert!(c.follow && !c.create);
        assert!(parse_from(&["t"]).unwrap().config().create);
    }

    #[test]
    fn mosquitto_habits() {
        let c = parse_from(&["-v", "-0", "-W", "2.5", "t"])
            .unwrap()
            .config();
        assert_eq!(c.format, Format::Verbose);
        assert!(c.nul);
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(
            parse_from(&["--timeout", "7", "t"])
                .unwrap()
                .config()
                .timeout,
            Some(Duration::from_secs(7))
        );
        let c = parse_from(&["t"]).unwrap().config();
        assert!(!c.nul && !c.last && !c.no_wait && c.timeout.is_none());
        assert!(parse_from(&["-v", "--prefix", "t"]).is_err());
        assert!(parse_from(&["-0", "--len32", "t"]).is_err());
        assert!(parse_from(&["-0", "--json", "t"]).is_ok());
        for bad in ["0", "-1", "x", "nan", "inf", ""] {
            let e = parse_from(&[&format!("--timeout={bad}"), "t"]).unwrap_err();
            let line = baf_cli::one_line(&e);
            assert!(
                line.contains("is not a number of seconds above 0"),
                "{bad}: {line}"
            );
        }
    }

    #[test]
    fn last_and_no_wait() {
        let c = parse_from(&["--last"]).unwrap().config();
        assert!(c.last && c.topics.is_empty());
        assert!(parse_from(&["--last", "--from", "oldest"]).is_err());
        assert!(parse_from(&["--last", "-F"]).is_err());
        assert!(parse_from(&["--no-wait", "t"]).unwrap().config().no_wait);
    }

    #[test]
    fn short_flags_have_one_meaning_across_the_tools() {
        // -f is pubmsg's input file, so --follow is -F (tail -F); -v is
        // mosquitto_sub's 'topic payload'; -n a count (head -n), as
        // nowhere else.
        let cmd = Args::command();
        let mut shorts: Vec<(char, &str)> = cmd
            .get_arguments()
            .filter_map(|a| Some((a.get_short()?, a.get_id().as_str())))
            .collect();
        shorts.sort_unstable();
        assert_eq!(
            shorts,
            vec![
                ('0', "null"),
                ('F', "follow"),
                ('L', "lossless"),
                ('W', "timeout"),
                ('e', "exclude"),
                ('j', "json"),
                ('n', "count"),
                ('p', "prefix"),
                ('v', "verbose"),
            ]
        );
    }

    #[test]
    fn generate_alone() {
        assert_eq!(
            parse_from(&["--generate", "zsh"]).unwrap().generate,
            Some(Generate::Zsh)
        );
        assert!(parse_from(&["--generate", "zsh", "t"]).is_err());
    }

    #[test]
    fn help_has_examples_and_clap_is_consistent() {
        Args::command().debug_assert();
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("Examples:") && help.contains("submsg 'robot/#'"));
    }

    #[test]
    fn man_page_and_completions_render() {
        let mut man = Vec::new();
        clap_mangen::Man::new(Args::command())
            .render(&mut man)
            .unwrap();
        assert!(String::from_utf8(man).unwrap().contains("follow"));
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "submsg", &mut out);
            assert!(String::from_utf8(out).unwrap().contains("exclude"));
        }
    }
}
