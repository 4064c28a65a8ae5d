//! What the three tools share at the edge: exit codes, one-line errors,
//! command-line parsing, and generated man pages and completions.

use crate::device::AbiMismatch;
use std::fmt;

/// Classes of failure, each with its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Bad arguments or input (exit 2, as clap uses for usage errors).
    Usage,
    /// No such topic, or no module (or one with an older ABI) (exit 3).
    NoTopic,
    /// Permission denied (exit 4).
    Permission,
    /// The topic already has a publisher (exit 5).
    Busy,
}

impl Failure {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            Failure::Usage => 2,
            Failure::NoTopic => 3,
            Failure::Permission => 4,
            Failure::Busy => 5,
        }
    }

    /// Tags `err` with this class.
    pub fn wrap(self, err: anyhow::Error) -> anyhow::Error {
        err.context(Tag(self))
    }
}

/// Marker context carrying a [`Failure`]; printed as nothing.
#[derive(Debug)]
struct Tag(Failure);

impl fmt::Display for Tag {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

/// The exit code for `err`: a tagged [`Failure`], else one guessed from an
/// error inside it (a module with too old an ABI is [`Failure::NoTopic`];
/// then OS errors), else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if let Some(Tag(f)) = err.downcast_ref::<Tag>() {
        return f.code();
    }
    let abi = |c: &(dyn std::error::Error + 'static)| {
        c.is::<AbiMismatch>()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|e| e.get_ref())
                .is_some_and(|inner| inner.is::<AbiMismatch>())
    };
    if err.chain().any(abi) {
        return Failure::NoTopic.code();
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            match e.kind() {
                std::io::ErrorKind::NotFound => return Failure::NoTopic.code(),
                std::io::ErrorKind::PermissionDenied => return Failure::Permission.code(),
                _ => {}
            }
            if e.raw_os_error() == Some(libc::EBUSY) {
                return Failure::Busy.code();
            }
        }
    }
    1
}

/// The OS error number inside `err`, if any.
pub fn errno(err: &anyhow::Error) -> Option<i32> {
    err.chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .and_then(|e| e.raw_os_error())
}

/// The one line a user sees for `err` (the tags left out).
pub fn message(err: &anyhow::Error) -> String {
    err.chain()
        .map(|c| c.to_string())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
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

/// Clap's message without its usage and tips, on one line.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let main = text.split("\n\n").next().unwrap_or_default();
    let main = main.strip_prefix("error: ").unwrap_or(main);
    main.split_whitespace().collect::<Vec<_>>().join(" ")
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
    fn os_errors_map_to_codes() {
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            .context("cannot open /dev/baf/t");
        assert_eq!(exit_code(&e), 4);
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(exit_code(&e), 3);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
    }

    #[test]
    fn an_old_module_is_no_module() {
        let old = AbiMismatch {
            found: 1,
            needed: 2,
        };
        let e = anyhow::Error::new(old).context("topic t");
        assert_eq!(exit_code(&e), 3);
        assert!(message(&e).contains("fanout.ko"));
        let e = anyhow::Error::new(std::io::Error::new(std::io::ErrorKind::Unsupported, old))
            .context("mapping topic t");
        assert_eq!(exit_code(&e), 3);
    }
}
