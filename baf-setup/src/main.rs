//! `baf-setup`: create, remove, apply and show baf topics.

use anyhow::Result;
use baf_cli::Failure;
use baf_setup::{TopicArgs, TEST_TOPIC};
use clap::{Args, CommandFactory, Parser, Subcommand};

/// Create, remove and show baf topics (/dev/baf/<topic>).
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:
  baf-setup create sensors                      # /dev/baf/sensors, 0660, group baf
  baf-setup create robot/arm --size 1M --mode 0640 --group robots
  baf-setup create jobs --lossless --stall-timeout 2s  # writers wait for lossless readers
  baf-setup apply --topics sensors,robot/arm    # exactly these (plus baf-test)
  baf-setup apply --file /etc/baf/topics --dry-run   # show what it would do
  baf-setup status --json
  baf-setup remove sensors

Exit codes: 0 ok, 1 other error, 2 usage (also: apply with an empty set and
no --allow-empty, an --file that does not exist or has a bad line), 3 no such topic, 4 no
permission, 6 the baf module is not loaded (modprobe fanout) or is too old."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Settings {
    /// Ring size in bytes (a power of two, 16K to 64M; K and M suffixes);
    /// default: the module's ring_size.
    #[arg(long, value_parser = baf_setup::parse_size)]
    size: Option<u64>,
    /// Largest record in bytes (4K to a quarter of the ring); default: a
    /// quarter of the ring.
    #[arg(long, value_parser = baf_setup::parse_size)]
    record_max: Option<u64>,
    /// Node permission bits, octal [default: 0660].
    #[arg(long, value_parser = baf_setup::parse_mode)]
    mode: Option<u32>,
    /// Node owner (name or uid) [default: you].
    #[arg(long)]
    owner: Option<String>,
    /// Node group (name or gid) [default: baf if it exists, else yours].
    #[arg(long)]
    group: Option<String>,
    /// Let readers of the topic be lossless (submsg --lossless): a writer
    /// then waits for them instead of overwriting what they have not read
    /// (lossy readers are not affected).
    #[arg(long)]
    lossless: bool,
    /// With --lossless: demote a lossless reader that holds a writer up this
    /// long to lossy (500ms, 2s, or milliseconds; at most 3600s; `never`
    /// only for root) [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = baf_setup::parse_duration_ms)]
    stall_timeout: Option<u32>,
}

impl Settings {
    fn args(&self) -> Result<TopicArgs> {
        let record_max = match self.record_max {
            None => 0,
            Some(r) => u32::try_from(r)
                .map_err(|_| Failure::Usage.wrap(anyhow::anyhow!("--record-max is too large")))?,
        };
        if self.stall_timeout.is_some() && !self.lossless {
            return Err(Failure::Usage.wrap(anyhow::anyhow!(
                "--stall-timeout needs --lossless: only lossless readers can hold a writer up"
            )));
        }
        Ok(TopicArgs {
            size: self.size.unwrap_or(0),
            record_max,
            mode: self.mode,
            owner: self.owner.clone(),
            group: self.group.clone(),
            lossless: self.lossless.then_some(true),
            stall_ms: self.stall_timeout,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a topic; succeeds if it exists with the same settings.
    Create {
        /// Topic name: 1-64 of [A-Za-z0-9._-], levels separated by '/'.
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Remove a topic: its readers see end of file, writers get ENODEV.
    /// Removing a topic that does not exist succeeds.
    Remove {
        /// Topic name.
        name: String,
    },
    /// Make the set of topics exactly this one (static /dev/fanoutN
    /// topics are left alone); baf-test is always included unless
    /// --no-test-topic. Every topic is checked before anything changes: a
    /// bad one is refused (exit 2) naming its file and line, and nothing
    /// is applied.
    Apply {
        /// Topic names (also comma-separated).
        #[arg(value_delimiter = ',')]
        names: Vec<String>,
        /// Topic names, comma-separated.
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        /// A file with one topic a line: NAME [size=B] [record_max=B]
        /// [mode=OCTAL] [group=G] [owner=U] [lossless | lossless=yes|no]
        /// [stall_timeout=DURATION] (stall_timeout only with lossless);
        /// '#' starts a comment; '-' is stdin.
        #[arg(long)]
        file: Option<String>,
        /// Do not add the baf-test topic.
        #[arg(long)]
        no_test_topic: bool,
        /// Allow an empty set (it removes every topic made at run time);
        /// without it, apply refuses one.
        #[arg(long)]
        allow_empty: bool,
        /// Print what apply would create, recreate and remove, and change
        /// nothing. (No short flag: -n is submsg's count.)
        #[arg(long)]
        dry_run: bool,
        /// Defaults for topics that do not set their own.
        #[command(flatten)]
        settings: Settings,
    },
    /// Show every topic with its counters. LOSSLESS is yes (with the stall
    /// timeout) or no; for a lossless topic L_READERS counts its
    /// lossless readers now, WAITS the times a writer waited for one, and
    /// DEMOTED the readers the stall timeout made lossy.
    Status {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List topic names, one a line.
    List,
    /// Print a man page or shell completions to stdout.
    #[command(hide = true)]
    Generate {
        /// What to print.
        #[arg(value_enum)]
        what: baf_cli::Generate,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Create { name, settings } => match baf_setup::create(&name, &settings.args()?)? {
            baf::control::Created::New => {
                eprintln!("created {}", baf::control::node_of(&name).display())
            }
            baf::control::Created::Existed => eprintln!("{name} already exists"),
        },
        Command::Remove { name } => {
            if !baf_setup::remove(&name)? {
                eprintln!("{name} does not exist (nothing to do)");
            }
        }
        Command::Apply {
            names,
            topics,
            file,
            no_test_topic,
            allow_empty,
            dry_run,
            settings,
        } => {
            let defaults = settings.args()?;
            let (mut wanted, places) = match &file {
                Some(f) => baf_setup::parse_topic_file(&baf_setup::read_file(f)?, f)?,
                None => Default::default(),
            };
            for n in names.into_iter().chain(topics).filter(|n| !n.is_empty()) {
                wanted.entry(n).or_insert_with(|| defaults.clone());
            }
            for args in wanted.values_mut() {
                // File lines inherit the command-line defaults they leave out.
                args.inherit(&defaults);
            }
            if !no_test_topic {
                wanted.entry(TEST_TOPIC.to_string()).or_insert(defaults);
            }
            baf_setup::check_not_empty(&wanted, allow_empty)?;
            // Every topic is checked before anything is changed: a bad
            // one is refused with its place, and nothing is applied.
            let wanted = baf_setup::validate(&wanted, &places, baf_setup::default_ring_size())?;
            if dry_run {
                let plan = baf_setup::dry_run(&wanted)?;
                print!("{}", baf_setup::describe_plan(&plan));
                return Ok(());
            }
            let done = baf_setup::apply(&wanted)?;
            for (what, names) in [
                ("created", &done.created),
                ("recreated (settings changed)", &done.recreated),
                ("removed", &done.removed),
            ] {
                if !names.is_empty() {
                    eprintln!("{what}: {}", names.join(", "));
                }
            }
        }
        Command::Status { json } => {
            let rows = baf_setup::rows()?;
            if json {
                println!("{}", baf_setup::json(&rows));
            } else {
                print!("{}", baf_setup::table(&rows));
            }
        }
        Command::List => {
            baf::control::require_module()?;
            for t in baf::control::list()? {
                println!("{}", t.name);
            }
        }
        Command::Generate { what } => baf_cli::generate(Cli::command(), what)?,
    }
    Ok(())
}

fn main() {
    baf_cli::main("baf-setup", |_: &Cli| None, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(argv: &[&str]) -> Settings {
        let cli = Cli::try_parse_from(["baf-setup", "create", "t"].iter().chain(argv)).unwrap();
        match cli.command {
            Command::Create { settings, .. } => settings,
            _ => unreachable!(),
        }
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lossless_flags() {
        let a = settings(&["--lossless", "--stall-timeout", "250ms"])
            .args()
            .unwrap();
        assert_eq!((a.lossless, a.stall_ms), (Some(true), Some(250)));
        let a = settings(&["--lossless"]).args().unwrap();
        assert_eq!((a.lossless, a.stall_ms), (Some(true), None));
        let a = settings(&[]).args().unwrap();
        assert_eq!((a.lossless, a.stall_ms), (None, None));
        let err = settings(&["--stall-timeout", "2s"]).args().unwrap_err();
        assert!(baf_cli::message(&err).contains("--stall-timeout needs --lossless"));
        assert_eq!(baf_cli::exit_code(&err), 2);
        assert!(Cli::try_parse_from([
            "baf-setup",
            "create",
            "t",
            "--lossless",
            "--stall-timeout",
            "1h"
        ])
        .is_err());
    }

    #[test]
    fn no_short_flags_that_mean_something_else_in_another_tool() {
        // pubmsg/submsg own the short flags (-n is submsg's count, -f
        // pubmsg's file...); baf-setup has none but -h and -V.
        fn shorts(cmd: &clap::Command, out: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if let Some(c) = a.get_short() {
                    out.push(format!("{} -{c}", cmd.get_name()));
                }
            }
            for sub in cmd.get_subcommands() {
                shorts(sub, out);
            }
        }
        let mut found = Vec::new();
        shorts(&Cli::command(), &mut found);
        assert!(found.is_empty(), "{found:?}");
        assert!(Cli::try_parse_from(["baf-setup", "apply", "-n", "t"]).is_err());
    }
}
