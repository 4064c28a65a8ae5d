//! The library's typed errors, and the kind of failure an error is.
//!
//! A kind is decided where the error is known: there the error is tagged
//! ([`Kind::wrap`]), or it is one of the typed errors of this module
//! ([`ModuleNotLoaded`], [`AbiMismatch`], [`NotATopic`]), whose kind
//! [`kind`] knows. Nothing is guessed from an error's text or OS error
//! kind: an untagged error has no kind. What a kind means to a user (an
//! exit code) is the tools' business (`baf-cli`).

use std::fmt;
use std::path::PathBuf;

/// Kinds of failure a program may want to tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Bad arguments or input: a name, a size, a path that is not a topic.
    Invalid,
    /// No such topic.
    NoTopic,
    /// Permission denied (a topic or the control device).
    Permission,
    /// The topic already has a publisher.
    Busy,
    /// The baf module is not loaded, or speaks too old an ABI.
    NoModule,
    /// A time limit the caller set ran out before the work was done
    /// (`submsg -W` with nothing received).
    TimedOut,
}

impl Kind {
    /// Tags `err` with this kind.
    pub fn wrap(self, err: anyhow::Error) -> anyhow::Error {
        err.context(Tag(self))
    }

    /// A new error of this kind that says `msg`.
    pub fn error(self, msg: impl fmt::Display) -> anyhow::Error {
        self.wrap(anyhow::anyhow!("{msg}"))
    }
}

/// Marker context carrying a [`Kind`]; printed as nothing.
#[derive(Debug)]
struct Tag(Kind);

impl fmt::Display for Tag {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

/// The kind of a typed error of this module, if `e` is one.
fn typed_kind(e: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    if e.is::<ModuleNotLoaded>() || e.is::<AbiMismatch>() {
        Some(Kind::NoModule)
    } else if e.is::<NotATopic>() {
        Some(Kind::Invalid)
    } else {
        None
    }
}

/// The kind of `err`: the outermost [`Kind`] tag, else that of a typed
/// error inside it (also one carried inside an `io::Error`); `None` for an
/// error nobody classified.
pub fn kind(err: &anyhow::Error) -> Option<Kind> {
    if let Some(Tag(k)) = err.downcast_ref::<Tag>() {
        return Some(*k);
    }
    err.chain().find_map(|c| {
        typed_kind(c).or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|e| e.get_ref())
                .and_then(|inner| typed_kind(inner))
        })
    })
}

/// The OS error number inside `err`, if any.
pub fn errno(err: &anyhow::Error) -> Option<i32> {
    err.chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .and_then(|e| e.raw_os_error())
}

/// `err` on one line: its chain of messages joined by `: ` (the tags left
/// out).
pub fn message(err: &anyhow::Error) -> String {
    err.chain()
        .map(|c| c.to_string())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// The loaded module speaks an older ABI than this program needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiMismatch {
    /// The module's ABI version (`Info::abi_version`).
    pub found: u32,
    /// The version needed.
    pub needed: u32,
}

impl fmt::Display for AbiMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the loaded fanout module has ABI version {}, but this program needs version {} or later: \
             load the fanout.ko built with it (rmmod fanout; insmod fanout.ko)",
            self.found, self.needed
        )
    }
}

impl std::error::Error for AbiMismatch {}

/// The baf (fanout) kernel module is not loaded: there is no
/// `/sys/class/baf`, so no topic or control device can exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleNotLoaded;

impl fmt::Display for ModuleNotLoaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the baf module is not loaded: load it with `modprobe fanout` (or `insmod fanout.ko`)",
        )
    }
}

impl std::error::Error for ModuleNotLoaded {}

/// A path given as a topic is not a baf topic device (a regular file, a
/// FIFO, a directory, another driver's character device...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotATopic {
    /// The path as given.
    pub path: PathBuf,
    /// What it is instead ("a FIFO", "a regular file", ...).
    pub what: String,
}

impl fmt::Display for NotATopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}, not a baf topic device",
            self.path.display(),
            self.what
        )
    }
}

impl std::error::Error for NotATopic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_kept_and_hidden() {
        let e = Kind::Busy.error("topic t already has a publisher");
        assert_eq!(kind(&e), Some(Kind::Busy));
        assert_eq!(message(&e), "topic t already has a publisher");
        let e = e.context("publishing to t");
        assert_eq!(kind(&e), Some(Kind::Busy));
        assert_eq!(
            message(&e),
            "publishing to t: topic t already has a publisher"
        );
        let e = Kind::NoTopic.wrap(Kind::Invalid.error("x"));
        assert_eq!(kind(&e), Some(Kind::NoTopic), "the outermost tag wins");
    }

    #[test]
    fn os_errors_are_not_guessed() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(kind(&e), None);
        assert_eq!(errno(&e), Some(libc::ENOENT));
        assert_eq!(kind(&anyhow::anyhow!("other")), None);
    }

    #[test]
    fn typed_errors_have_their_kinds() {
        let e = anyhow::Error::new(ModuleNotLoaded).context("topic t");
        assert_eq!(kind(&e), Some(Kind::NoModule));
        let e = anyhow::Error::new(NotATopic {
            path: "/tmp/f".into(),
            what: "a FIFO".into(),
        });
        assert_eq!(kind(&e), Some(Kind::Invalid));
        let old = AbiMismatch {
            found: 1,
            needed: 2,
        };
        let e = anyhow::Error::new(std::io::Error::new(std::io::ErrorKind::Unsupported, old))
            .context("mapping topic t");
        assert_eq!(kind(&e), Some(Kind::NoModule));
    }
}
