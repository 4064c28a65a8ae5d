//! What the baf tools share at the edge: exit codes, one-line errors,
//! command-line parsing, and generated man pages and completions. The
//! library (`baf`) below knows nothing of these: its errors have kinds
//! ([`baf::error::Kind`]), and this crate gives each kind its exit code.
//!
//! Exit codes (the same in every tool; each tool's `--help` has the table):
//!
//! | code | [`Failure`] | meaning |
//! |------|-------------|---------|
//! | 0 | | success |
//! | 1 | | any other error |
//! | 2 | [`Failure::Usage`] | bad arguments or input; a path that is not a baf topic device |
//! | 3 | [`Failure::NoTopic`] | no such topic (and it cannot be created here) |
//! | 4 | [`Failure::Permission`] | no permission (topic or control device) |
//! | 5 | [`Failure::Busy`] | the topic already has a publisher |
//! | 6 | [`Failure::NoModule`] | the baf module is not loaded, or is too old |
//! | 7 | [`Failure::TimedOut`] | a time limit ran out with nothing done (`submsg -W` with no record) |
//!
//! A class is decided where the error is known: there the error is tagged
//! ([`Failure::wrap`], the same tag as [`baf::error::Kind::wrap`]), or it
//! is one of the library's typed errors ([`baf::error::ModuleNotLoaded`],
//! [`baf::error::AbiMismatch`], [`baf::error::NotATopic`]), which
//! [`exit_code`] maps. Nothing is guessed from an error's text or OS error
//! kind: an untagged error is exit 1.

use baf::error::Kind;
pub use baf::error::{errno, message};

/// Classes of failure, each with its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Bad arguments or input (exit 2, as clap uses for usage errors).
    Usage,
    /// No such topic (exit 3).
    NoTopic,
    /// Permission denied (exit 4).
    Permission,
    /// The topic already has a publisher (exit 5).
    Busy,
    /// The baf module is not loaded, or speaks too old an ABI (exit 6).
    NoModule,
    /// A time limit ran out with nothing done (exit 7): `submsg -W` that
    /// received no record.
    TimedOut,
}

impl Failure {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            Failure::Usage => 2,
            Failure::NoTopic => 3,
            Failure::Permission => 4,
            Failure::Busy => 5,
            Failure::NoModule => 6,
            Failure::TimedOut => 7,
        }
    }

    /// Tags `err` with this class.
    pub fn wrap(self, err: anyhow::Error) -> anyhow::Error {
        Kind::from(self).wrap(err)
    }
}

impl From<Failure> for Kind {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Usage => Kind::Invalid,
            Failure::NoTopic => Kind::NoTopic,
            Failure::Permission => Kind::Permission,
            Failure::Busy => Kind::Busy,
            Failure::NoModule => Kind::NoModule,
            Failure::TimedOut => Kind::TimedOut,
        }
    }
}

impl From<Kind> for Failure {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Invalid => Failure::Usage,
            Kind::NoTopic => Failure::NoTopic,
            Kind::Permission => Failure::Permission,
            Kind::Busy => Failure::Busy,
            Kind::NoModule => Failure::NoModule,
            Kind::TimedOut => Failure::TimedOut,
        }
    }
}

/// The class of `err` ([`baf::error::kind`]); `None` for an error nobody
/// classified (exit 1).
pub fn class(err: &anyhow::Error) -> Option<Failure> {
    baf::error::kind(err).map(Failure::from)
}

/// The exit code for `err`: its [`class`]'s code, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    class(err).map_or(1, Failure::code)
}

/// Runs a tool's main function: on error prints `TOOL: message` on one line
/// and exits with the error's code. Never shows a backtrace.
pub fn run(tool: &str, f: impl FnOnce() -> anyhow::Result<()>) -> ! {
    match f() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{tool}: {}", message(&e));
            std::process::exit(exit_code(&e))
        }
    }
}

/// A tool's whole `main`: parses its command line ([`parse`]); prints the
/// man page or completions when `generate` finds `--generate` in it, else
/// runs `work`; then exits as [`run`] does.
pub fn main<P: clap::Parser>(
    tool: &str,
    generate: impl FnOnce(&P) -> Option<Generate>,
    work: impl FnOnce(P) -> anyhow::Result<()>,
) -> ! {
    let args: P = parse(tool);
    run(tool, || match generate(&args) {
        Some(what) => self::generate(P::command(), what),
        None => work(args),
    })
}

/// Parses the command line of `tool`. `--help` and `--version` print and
/// exit 0; any usage error is one line and exit code 2 (clap's own message
/// would be several lines).
pub fn parse<P: clap::Parser>(tool: &str) -> P {
    P::try_parse().unwrap_or_else(|e| {
        use clap::error::ErrorKind;
        match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                eprintln!("{tool}: {} (see {tool} --help)", one_line(&e));
                std::process::exit(Failure::Usage.code())
            }
        }
    })
}

/// Clap's message without its usage and tips, on one line; a flag clap
/// finds close to a misspelt one is named (`did you mean '--follow'?`).
pub fn one_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = e.render().to_string();
    let main = text.split("\n\n").next().unwrap_or_default();
    let main = main.strip_prefix("error: ").unwrap_or(main);
    let mut line = main.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(ContextValue::String(similar)) = e.get(ContextKind::SuggestedArg) {
        line += &format!("; did you mean '{similar}'?");
    }
    line
}

/// What `--generate` (or `baf-setup generate`) prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// A man page (roff).
    Man,
    /// bash completions.
    Bash,
    /// zsh completions.
    Zsh,
    /// fish completions.
    Fish,
    /// elvish completions.
    Elvish,
    /// PowerShell completions.
    Powershell,
}

/// Prints a man page or completions for `cmd` to stdout.
pub fn generate(mut cmd: clap::Command, what: Generate) -> anyhow::Result<()> {
    use std::io::Write;
    // Rendered in memory first: the completion generators panic on a write
    // error, and a closed stdout (`| head`) is no reason for a panic.
    let mut text = Vec::new();
    let name = cmd.get_name().to_string();
    let shell = match what {
        Generate::Man => None,
        Generate::Bash => Some(clap_complete::Shell::Bash),
        Generate::Zsh => Some(clap_complete::Shell::Zsh),
        Generate::Fish => Some(clap_complete::Shell::Fish),
        Generate::Elvish => Some(clap_complete::Shell::Elvish),
        Generate::Powershell => Some(clap_complete::Shell::PowerShell),
    };
    match shell {
        None => clap_mangen::Man::new(cmd).render(&mut text)?,
        Some(shell) => clap_complete::generate(shell, &mut cmd, name, &mut text),
    }
    match std::io::stdout().lock().write_all(&text) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baf::error::{AbiMismatch, ModuleNotLoaded, NotATopic};

    #[test]
    fn tagged_failures_keep_their_code_and_hide_the_tag() {
        let e = Failure::Busy.wrap(anyhow::anyhow!("topic t already has a publisher"));
        assert_eq!(exit_code(&e), 5);
        assert_eq!(message(&e), "topic t already has a publisher");
        let e = e.context("publishing to t");
        assert_eq!(exit_code(&e), 5);
        assert_eq!(
            message(&e),
            "publishing to t: topic t already has a publisher"
        );
    }

    #[test]
    fn os_errors_are_not_guessed() {
        // A file that is not there is not a missing topic, and so on: only
        // the code that knows what an error means classifies it.
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            .context("cannot open /etc/baf/topics");
        assert_eq!(exit_code(&e), 1);
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(exit_code(&e), 1);
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(exit_code(&e), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
        let e = Failure::Permission.wrap(anyhow::Error::new(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        )));
        assert_eq!(exit_code(&e), 4);
    }

    #[test]
    fn the_outermost_tag_wins() {
        let e = Failure::NoTopic.wrap(Failure::Usage.wrap(anyhow::anyhow!("x")));
        assert_eq!(class(&e), Some(Failure::NoTopic));
        assert_eq!(message(&e), "x");
    }

    #[test]
    fn typed_library_errors_have_their_codes() {
        let e = anyhow::Error::new(ModuleNotLoaded).context("topic t");
        assert_eq!(exit_code(&e), 6);
        assert_eq!(
            message(&e),
            "topic t: the baf module is not loaded: load it with `modprobe fanout` (or `insmod fanout.ko`)"
        );
        let e = anyhow::Error::new(NotATopic {
            path: "/tmp/f".into(),
            what: "a FIFO".into(),
        });
        assert_eq!(exit_code(&e), 2);
        assert_eq!(message(&e), "/tmp/f is a FIFO, not a baf topic device");
        // Codes are distinct.
        let all = [
            Failure::Usage,
            Failure::NoTopic,
            Failure::Permission,
            Failure::Busy,
            Failure::NoModule,
            Failure::TimedOut,
        ];
        let mut codes: Vec<i32> = all.iter().map(|f| f.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes, vec![2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn usage_errors_are_one_line_naming_the_flag() {
        let cmd = || {
            clap::Command::new("t")
                .arg(
                    clap::Arg::new("follow")
                        .long("follow")
                        .short('F')
                        .action(clap::ArgAction::SetTrue),
                )
                .arg(clap::Arg::new("count").short('n').long("count"))
        };
        let line = |args: &[&str]| {
            let e = cmd()
                .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
                .unwrap_err();
            assert_eq!(e.exit_code(), 2);
            one_line(&e)
        };
        assert_eq!(
            line(&["--folow"]),
            "unexpected argument '--folow' found; did you mean '--follow'?"
        );
        assert_eq!(line(&["-x"]), "unexpected argument '-x' found");
        assert_eq!(
            line(&["-n"]),
            "a value is required for '--count <count>' but none was supplied"
        );
        assert_eq!(line(&["--bogus"]), "unexpected argument '--bogus' found");
    }

    #[test]
    fn an_old_module_is_no_module() {
        let old = AbiMismatch {
            found: 1,
            needed: 2,
        };
        let e = anyhow::Error::new(old).context("topic t");
        assert_eq!(exit_code(&e), 6);
        assert!(message(&e).contains("fanout.ko"));
        let e = anyhow::Error::new(std::io::Error::new(std::io::ErrorKind::Unsupported, old))
            .context("mapping topic t");
        assert_eq!(exit_code(&e), 6);
    }
}

/// The output formats `submsg` and `baf-record cat` share, flattened into
/// their arguments: at most one of them; none prints the records as they
/// are.
#[derive(clap::Args, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[group(id = "format", multiple = false)]
pub struct OutputFormat {
    /// Print each line as 'topic: line'.
    #[arg(short, long)]
    pub prefix: bool,
    /// Print each line as 'topic line' (the topic and a space, as
    /// mosquitto_sub -v).
    #[arg(short, long)]
    pub verbose: bool,
    /// Print one JSON object per record.
    #[arg(short, long)]
    pub json: bool,
    /// Print each record after its big-endian u32 length (the input format
    /// of pubmsg --len32).
    #[arg(long, conflicts_with = "null")]
    pub len32: bool,
}

impl OutputFormat {
    /// The format chosen.
    pub fn format(&self) -> baf::format::Format {
        use baf::format::Format;
        if self.prefix {
            Format::Prefix
        } else if self.verbose {
            Format::Verbose
        } else if self.json {
            Format::Json
        } else if self.len32 {
            Format::Len32
        } else {
            Format::Raw
        }
    }
}
