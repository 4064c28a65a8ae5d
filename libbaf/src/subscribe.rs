//! Reading topics, for every subscriber (`submsg`, the bridge's export):
//! opening a topic for reading in record mode, losslessly where asked and
//! allowed, at a chosen start point ([`open`]); and one record-mode
//! `read()` of it, with the buffer grown to fit ([`read`]); and the set of
//! topics a subscriber reads, in its epoll set ([`Topics`]).
//!
//! Record mode gives every record its header, whose sequence numbers make
//! loss an exact count: the seq expected next ([`Opened::expect`]) against
//! the one that comes.

use crate::abi;
use crate::device::{self, Access, NotATopic, Topic};
use crate::error::Kind;
use crate::watch::{self, Seen};
use anyhow::Result;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use std::collections::HashMap;
use std::io::{self, Read as _};
use std::path::Path;
use std::str::FromStr;

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

/// Whether a subscription reads losslessly: writers then wait for it, as
/// for a pipe, rather than overwrite what it has not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lossless {
    /// No: a slow reader loses the oldest records.
    No,
    /// Yes, or fail (with [`Kind::Permission`]) where the topic or its
    /// owner does not allow it.
    Required,
    /// Where the topic allows lossless readers and its owner lets this
    /// user be one; else lossy ([`Opened::refused`]).
    IfAllowed,
}

/// A topic opened for reading ([`open`]).
pub struct Opened {
    /// The open file: non-blocking, in record mode, at the start point.
    pub topic: Topic,
    /// What the topic said when it was opened.
    pub info: abi::Info,
    /// The sequence number expected next; a record above it means loss.
    pub expect: u64,
    /// Whether it reads losslessly.
    pub lossless: bool,
    /// With [`Lossless::IfAllowed`]: the topic allows lossless readers,
    /// but not this user.
    pub refused: bool,
}

/// Opens `path` as topic `name` for reading: checked first (only a baf
/// character device is opened), non-blocking, in record mode, lossless as
/// `lossless` says (before the seek, so the seek holds the records from the
/// start point on), and at `start`.
pub fn open(name: &str, path: &Path, start: StartAt, lossless: Lossless) -> Result<Opened> {
    let topic = device::open_node(name, path, Access::Read)?;
    let info = match topic.info() {
        Ok(i) => i,
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
            return Err(anyhow::Error::new(NotATopic {
                path: path.to_path_buf(),
                what: "a device that does not answer the baf ioctls".to_string(),
            }))
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot query topic {name}"))),
    };
    device::check_abi(&info)?;
    let fail = |e: io::Error, what: &str| {
        anyhow::Error::new(e).context(format!("cannot {what} topic {name}"))
    };
    let want = match lossless {
        Lossless::No => false,
        Lossless::Required => true,
        Lossless::IfAllowed => info.topic_flags & abi::TOPIC_LOSSLESS != 0,
    };
    let (mut lossless_now, mut refused) = (false, false);
    if want {
        match topic.set_flags(abi::FLAG_RECORD | abi::FLAG_LOSSLESS) {
            Ok(()) => lossless_now = true,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                if lossless == Lossless::Required {
                    return Err(Kind::Permission.wrap(anyhow::Error::new(e).context(format!(
                        "topic {name} does not allow this user to read losslessly: only a topic created with `baf-setup create {name} --lossless` allows it, and only to its owner, members of its group and root"
                    ))));
                }
                // Only the topic's owner, its group and root may read
                // losslessly (ABI 5): read lossy then.
                refused = true;
            }
            Err(e) => return Err(fail(e, "switch to record mode on")),
        }
    }
    if !lossless_now {
        topic
            .set_flags(abi::FLAG_RECORD)
            .map_err(|e| fail(e, "switch to record mode on"))?;
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
                    // Gone already: start at the oldest and count what is
                    // missing as lost.
                    topic
                        .seek(abi::SEEK_OLDEST, 0)
                        .map_err(|e| fail(e, "seek on"))?;
                    s
                } else if s == info.next_seq {
                    s
                } else {
                    return Err(Kind::Invalid.error(format_args!(
                        "topic {name} has not reached sequence {s} yet (the next record is {})",
                        info.next_seq
                    )));
                }
            }
            Err(e) => return Err(fail(e, "seek on")),
        },
    };
    Ok(Opened {
        topic,
        info,
        expect,
        lossless: lossless_now,
        refused,
    })
}

/// Grows `buf` so that one `read()` takes a record of `record_max` bytes
/// with its header.
pub fn fit(buf: &mut Vec<u8>, record_max: u32) {
    let span = abi::record_span(record_max as usize);
    if buf.len() < span {
        buf.resize(span, 0);
    }
}

/// What one record-mode `read()` of a topic found ([`read`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Whole records in the first this many bytes of the buffer
    /// ([`crate::batch::records`]).
    Records(usize),
    /// Nothing to read now.
    Idle,
    /// Read again at once (interrupted, or the buffer was grown for a
    /// record larger than it).
    Again,
    /// The topic was removed, and everything it had is read.
    Gone,
}

/// One record-mode `read()` of `topic` into `buf` (non-blocking). A record
/// larger than the buffer grows it ([`Step::Again`]). Any other error is
/// the caller's: `EPIPE` on a lossless reader means the topic's stall
/// timeout made it lossy.
pub fn read(topic: &Topic, buf: &mut Vec<u8>) -> io::Result<Step> {
    match topic.file().read(buf) {
        Ok(0) => Ok(Step::Gone),
        Ok(n) => Ok(Step::Records(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Idle),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Step::Again),
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
            // A record larger than the buffer: make room and retry.
            let max = topic.info().map(|i| i.record_max).unwrap_or(1 << 20);
            let want = abi::record_span(max as usize).max(buf.len() * 2);
            buf.resize(want, 0);
            Ok(Step::Again)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(Step::Gone),
        Err(e) => Err(e),
    }
}

/// What a subscriber keeps for each topic it reads ([`Topics`]).
pub trait Subscribed {
    /// The topic's name.
    fn name(&self) -> &str;
    /// Its open file.
    fn topic(&self) -> &Topic;
}

/// The topics a subscriber reads: each an open file in the subscriber's
/// epoll set under a token of its own, and found by name too. Tokens below
/// the first one given to [`Topics::new`] are the caller's (a watcher, a
/// signalfd...).
pub struct Topics<T> {
    epoll: Epoll,
    items: HashMap<u64, T>,
    by_name: HashMap<String, u64>,
    next: u64,
}

impl<T: Subscribed> Topics<T> {
    /// No topics yet, in `epoll`; topics get tokens from `first` up.
    pub fn new(epoll: Epoll, first: u64) -> Self {
        Self {
            epoll,
            items: HashMap::new(),
            by_name: HashMap::new(),
            next: first,
        }
    }

    /// The epoll set (to wait on, and for the caller's own files).
    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// Adds `item`, which epoll then reports ready to read under the token
    /// returned.
    pub fn add(&mut self, item: T) -> Result<u64> {
        let token = self.next;
        self.epoll
            .add(
                item.topic().file(),
                EpollEvent::new(EpollFlags::EPOLLIN, token),
            )
            .map_err(|e| {
                anyhow::Error::new(io::Error::from(e))
                    .context(format!("cannot watch topic {}", item.name()))
            })?;
        self.next += 1;
        self.by_name.insert(item.name().to_string(), token);
        self.items.insert(token, item);
        Ok(token)
    }

    /// Takes topic `token` out (its file leaves the epoll set).
    pub fn remove(&mut self, token: u64) -> Option<T> {
        let item = self.items.remove(&token)?;
        let _ = self.epoll.delete(item.topic().file());
        if self.by_name.get(item.name()) == Some(&token) {
            self.by_name.remove(item.name());
        }
        Some(item)
    }

    /// Topic `token`.
    pub fn get(&self, token: u64) -> Option<&T> {
        self.items.get(&token)
    }

    /// Topic `token`, to change.
    pub fn get_mut(&mut self, token: u64) -> Option<&mut T> {
        self.items.get_mut(&token)
    }

    /// Whether topic `name` is read.
    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// What a node that appeared for topic `name` means ([`watch::seen`]).
    pub fn seen(&self, name: &str) -> Seen<u64> {
        let current = self.by_name.get(name).copied();
        watch::seen(current, |t| self.items.get(&t).map(|i| i.topic().file()))
    }

    /// Whether no topic is read.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every topic's token.
    pub fn tokens(&self) -> Vec<u64> {
        self.items.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_fit_the_largest_record() {
        let mut buf = vec![0u8; 16];
        fit(&mut buf, 100);
        assert_eq!(buf.len(), abi::record_span(100));
        fit(&mut buf, 10);
        assert_eq!(buf.len(), abi::record_span(100), "never shrinks");
    }
}
