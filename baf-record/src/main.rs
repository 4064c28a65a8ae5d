//! `baf-record`: record baf topics to MCAP files and play them back
//! (command line; the work is in the library, `lib.rs`).

use baf::subscribe::StartAt;
use baf_cli::Generate;
use baf_record::file::Compression;
use baf_record::record::{DashcamSettings, Settings};
use baf_record::{play, read::Recording, show, units};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  baf-record record 'robot/#' -e robot/debug -o /var/lib/baf/rec/
  baf-record record sensors --split-size 100M --max-files 10 -o rec/
  baf-record record 'cam/#' --before 30s --after 10s --trigger alarms -o crashes/
  kill -USR1 $(pidof baf-record)          # dashcam: write the window now
  baf-record info rec/baf-20250131T120000Z-0000.mcap
  baf-record cat rec.mcap --json          # submsg's formats, with provenance
  baf-record play rec.mcap --into replay/ --rate 2

Files are MCAP: one channel per topic; each message is the kernel's 40-byte
record header (little-endian: len, flags, seq, timestamp_ns, pid, uid,
writer) and the payload; log time is the wall clock, publish time the
kernel's CLOCK_MONOTONIC stamp; every gap is a message on channel baf.loss.

Exit codes: 0 done (SIGINT or SIGTERM end a recording with its file
finished), 1 other error, 2 usage: a bad option, pattern or value, an
output directory that cannot be written, a file that exists, or a corrupt
or unfinished file for info, cat or play (--recover reads an unfinished
one up to its last complete chunk), 3 no such topic (play, and it cannot
be created), 4 no permission, 6 the baf module is not loaded or too old.";

/// Record baf topics to MCAP files, and play them back.
#[derive(Parser, Debug)]
#[command(name = "baf-record", version, about, long_about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Print a man page or shell completions to stdout and exit.
    #[arg(long, value_name = "KIND", hide = true, exclusive = true)]
    generate: Option<Generate>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Record topics (chosen as submsg chooses them; topics created later
    /// too) to MCAP files.
    Record(RecordArgs),
    /// Publish a recording's records back into topics.
    Play(PlayArgs),
    /// What a recording holds: topics, counts, bytes, time span, loss.
    Info(InfoArgs),
    /// A recording's records to stdout, in submsg's formats.
    Cat(CatArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Comp {
    None,
    Zstd,
    Lz4,
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// Topic names or patterns (+ one level, # the rest, a trailing *);
    /// comma lists too; none means every topic.
    topics: Vec<String>,
    /// Leave out topics matching these patterns.
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    exclude: Vec<String>,
    /// A directory (files named PREFIX-TIME-N.mcap), or a file name.
    #[arg(short = 'o', long, value_name = "DIR|FILE")]
    output: PathBuf,
    /// File names in a directory start with this.
    #[arg(long, value_name = "PREFIX", default_value = "baf")]
    prefix: String,
    /// Read losslessly where the topic allows it (writers then wait for
    /// the recorder); elsewhere lossy, as by default.
    #[arg(short = 'L', long)]
    lossless: bool,
    /// Read with read() only, never through a mapping of the ring.
    #[arg(long)]
    no_mmap: bool,
    /// Where topics that exist at the start are read from: now, oldest,
    /// last:N.
    #[arg(long, value_name = "WHERE", default_value = "now", value_parser = |s: &str| s.parse::<StartAt>())]
    from: StartAt,
    /// Start a new file once this one is this large (64K, 100M, 1G).
    #[arg(long, value_name = "SIZE", value_parser = units::size)]
    split_size: Option<u64>,
    /// Start a new file after this long (10s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    split_time: Option<Duration>,
    /// Keep at most N files: the oldest is removed.
    #[arg(long, value_name = "N")]
    max_files: Option<usize>,
    /// Chunk compression.
    #[arg(long, value_enum, default_value = "none")]
    compression: Comp,
    /// Stop after this long.
    #[arg(short = 'W', long, value_name = "DURATION", value_parser = units::duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    dashcam: DashcamArgs,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("dash").args(["after", "trigger", "max_memory"]).multiple(true).requires("before")))]
struct DashcamArgs {
    /// Dashcam: keep this much in memory, and write it only on a trigger
    /// (SIGUSR1, or a record on --trigger).
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    before: Option<Duration>,
    /// Dashcam: after a trigger, write on for this long (a trigger meanwhile
    /// extends it).
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    after: Option<Duration>,
    /// Dashcam: any record on these topics is a trigger.
    #[arg(long, value_name = "TOPIC")]
    trigger: Vec<String>,
    /// Dashcam: hold at most this much in memory (the oldest goes first).
    #[arg(long, value_name = "SIZE", value_parser = units::size)]
    max_memory: Option<u64>,
}

#[derive(Args, Debug)]
struct PlayArgs {
    /// The recording.
    file: PathBuf,
    /// Only topics matching these patterns.
    #[arg(short = 't', long = "topics", value_name = "PATTERN")]
    topics: Vec<String>,
    /// Publish under PREFIX + the topic's name (replay/ makes replay/sensors).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    into: String,
    /// Speed factor of the original spacing (2 is twice as fast).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    rate: f64,
    /// No waiting: as fast as the topics take them.
    #[arg(long, conflicts_with = "rate")]
    fast: bool,
    /// Play again and again (until a signal).
    #[arg(long = "loop")]
    repeat: bool,
    /// Never create a missing topic.
    #[arg(long)]
    no_create: bool,
    /// Read an unfinished file up to its last complete chunk.
    #[arg(long)]
    recover: bool,
}

#[derive(Args, Debug)]
struct InfoArgs {
    /// The recording.
    file: PathBuf,
    /// One JSON object.
    #[arg(short, long)]
    json: bool,
    /// Read an unfinished file up to its last complete chunk.
    #[arg(long)]
    recover: bool,
}

#[derive(Args, Debug)]
struct CatArgs {
    /// The recording.
    file: PathBuf,
    /// Only topics matching these patterns.
    #[arg(short = 't', long = "topics", value_name = "PATTERN")]
    topics: Vec<String>,
    #[command(flatten)]
    output: baf_cli::OutputFormat,
    /// End each record with a NUL byte instead of a newline.
    #[arg(short = '0', long = "null")]
    null: bool,
    /// Read an unfinished file up to its last complete chunk.
    #[arg(long)]
    recover: bool,
}

fn usage(msg: String) -> anyhow::Error {
    baf_cli::Failure::Usage.wrap(anyhow::anyhow!(msg))
}

fn record(a: RecordArgs) -> anyhow::Result<()> {
    let d = a.dashcam;
    let dashcam = d.before.map(|before| DashcamSettings {
        before,
        after: d.after.unwrap_or_default(),
        max_memory: d.max_memory.unwrap_or(64 << 20),
        triggers: d.trigger,
    });
    if dashcam.is_some() && (a.split_size.is_some() || a.split_time.is_some()) {
        return Err(usage(
            "--split-size and --split-time do not apply to a dashcam (--before): each trigger makes one file".into(),
        ));
    }
    let s = Settings {
        topics: a.topics,
        exclude: a.exclude,
        output: a.output,
        prefix: a.prefix,
        lossless: a.lossless,
        no_mmap: a.no_mmap,
        start: a.from,
        split_size: a.split_size,
        split_time: a.split_time,
        max_files: a.max_files,
        compression: match a.compression {
            Comp::None => Compression::None,
            Comp::Zstd => Compression::Zstd,
            Comp::Lz4 => Compression::Lz4,
        },
        duration: a.duration,
        dashcam,
    };
    baf_record::record::run(&s)
}

fn main() {
    baf_cli::main(
        "baf-record",
        |c: &Cli| c.generate,
        |c| match c.cmd {
            None => Err(usage(
                "a command is needed: record, play, info or cat (see baf-record --help)".into(),
            )),
            Some(Cmd::Record(a)) => record(a),
            Some(Cmd::Play(a)) => {
                if !(a.rate > 0.0 && a.rate.is_finite()) {
                    return Err(usage(format!("--rate {} must be above 0", a.rate)));
                }
                let only = baf_record::record::selection(&a.topics, &[])?;
                let rec = Recording::open(&a.file, a.recover)?;
                let s = play::Settings {
                    into: a.into,
                    only,
                    rate: a.rate,
                    fast: a.fast,
                    repeat: a.repeat,
                    create: !a.no_create,
                };
                let p = play::run(&rec, &s)?;
                eprintln!(
                    "baf-record: played {} records ({} bytes)",
                    p.records, p.bytes
                );
                Ok(())
            }
            Some(Cmd::Info(a)) => {
                let rec = Recording::open(&a.file, a.recover)?;
                print!("{}", show::info(&rec, a.json)?);
                Ok(())
            }
            Some(Cmd::Cat(a)) => {
                let only = baf_record::record::selection(&a.topics, &[])?;
                let rec = Recording::open(&a.file, a.recover)?;
                let mut out = std::io::stdout().lock();
                show::cat(
                    &rec,
                    &only,
                    show::style(a.output.format(), a.null),
                    &mut out,
                )
            }
        },
    )
}
