//! Topics as they come and go: every topic there is now
//! ([`existing_topics`]), and a [`Watcher`] that notices topics as their
//! nodes appear (`submsg --follow`, the bridge's export), with inotify on
//! the topic directory (`/dev/baf`) and every level below it.
//!
//! devtmpfs makes `/dev/baf` with the first named topic and removes it with
//! the last one, and makes a directory per level (`/dev/baf/robot/arm`), so
//! the watcher also watches the directory above (`/dev`) for the topic
//! directory to (re)appear, and adds a watch to each level directory as it
//! appears, scanning it for nodes made before the watch was in place. In
//! `/dev` it also notices static topics (`/dev/fanoutN`) that appear.
//!
//! Removed topics need no inotify: their open files report `POLLHUP`
//! ([`hung_up`]); a topic removed and made again under the same name shows
//! as a node that appears while the old file is hung up ([`Seen`]).
//!
//! A topic with other topics below it has its node at `<name>/@` (see
//! `kernel/ABI.md`); the watcher reports it by its name.

use crate::control;
pub use crate::sys::is_static_name;
use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Every topic there is: the kernel's list (sysfs) and the nodes under the
/// topic directory ([`crate::sys::dev_dir`]), by name.
pub fn existing_topics() -> Result<BTreeMap<String, PathBuf>> {
    let mut all = BTreeMap::new();
    for t in control::list().context("listing topics")? {
        let path = control::node_of(&t.name);
        all.insert(t.name, path);
    }
    walk(
        &crate::sys::dev_dir(),
        "",
        &mut |_, _| true,
        &mut |name, path| {
            all.entry(name).or_insert(path);
        },
    );
    Ok(all)
}

/// Walks directory `dir` (`rel` under the topic directory, "" for itself):
/// `enter` first (false: leave it out), then every topic node in it to
/// `node` (by name, see [`Watcher::topic_name`]) and every directory below
/// it, the same way.
fn walk(
    dir: &Path,
    rel: &str,
    enter: &mut dyn FnMut(&Path, &str) -> bool,
    node: &mut dyn FnMut(String, PathBuf),
) {
    if !enter(dir, rel) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let sub = Watcher::join(rel, &name);
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path(), &sub, enter, node),
            Ok(t) if t.is_char_device() => node(Watcher::topic_name(&sub), e.path()),
            _ => {}
        }
    }
}

/// Whether the topic of open file `file` was removed: its file reports
/// `POLLHUP` (once what it had is read, a read returns 0).
pub fn hung_up(file: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

/// What a topic node that appeared means to a reader that already reads
/// some topics ([`seen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen<T> {
    /// A topic not read yet: join it.
    New,
    /// The topic already read (its node changed owner or mode): nothing to
    /// do.
    Same,
    /// A topic of that name was removed and made again: finish reading the
    /// old one (`T`, the caller's handle of it), drop it, join the new one.
    Remade(T),
}

/// Sorts out a node that appeared for topic `name`: `current` is the
/// caller's handle of the topic of that name it reads, if any, and
/// `file` gives that handle's open file.
pub fn seen<T: Copy, F: AsFd>(current: Option<T>, file: impl FnOnce(T) -> Option<F>) -> Seen<T> {
    match current {
        None => Seen::New,
        Some(t) => match file(t) {
            Some(f) if !hung_up(&f) => Seen::Same,
            _ => Seen::Remade(t),
        },
    }
}

fn is_char_device(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

/// A topic node that appeared: its name and its path.
pub type Found = (String, PathBuf);

/// Watches the topic directory tree.
pub struct Watcher {
    ino: Inotify,
    /// The topic directory (`/dev/baf`).
    root: PathBuf,
    /// The directory above it, always watched.
    parent: PathBuf,
    parent_wd: Option<WatchDescriptor>,
    /// Watched directories under `root`, as paths relative to it ("" is
    /// `root`).
    dirs: HashMap<WatchDescriptor, String>,
}

const DIR_EVENTS: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_ONLYDIR);

impl Watcher {
    /// Starts watching `root` (which may not exist yet). Returns the watcher
    /// and the topics (name, node) it found already there.
    pub fn new(root: &Path) -> Result<(Self, Vec<Found>)> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .context("cannot start inotify for --follow")?;
        let parent = match root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let parent_wd = ino.add_watch(&parent, DIR_EVENTS).ok();
        let mut w = Self {
            ino,
            root: root.to_path_buf(),
            parent,
            parent_wd,
            dirs: HashMap::new(),
        };
        let mut found = Vec::new();
        w.add_tree("", &mut found);
        Ok((w, found))
    }

    /// The inotify descriptor, for epoll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ino.as_fd()
    }

    /// The topic name of the node at `rel` under the root: its path, but a
    /// topic with other topics below it has its node at `<name>/@`.
    pub fn topic_name(rel: &str) -> String {
        rel.strip_suffix("/@").unwrap_or(rel).to_string()
    }

    /// The path `name` in directory `rel` under the root.
    pub fn join(rel: &str, name: &str) -> String {
        if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        }
    }

    /// Watches directory `rel` under the root and everything below it;
    /// pushes the topic nodes in it to `found`.
    fn add_tree(&mut self, rel: &str, found: &mut Vec<Found>) {
        let dir = if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        };
        // Watch first, then list: a node made in between is seen twice,
        // never missed.
        let (ino, dirs) = (&self.ino, &mut self.dirs);
        walk(
            &dir,
            rel,
            &mut |dir, rel| match ino.add_watch(dir, DIR_EVENTS) {
                Ok(wd) => {
                    dirs.insert(wd, rel.to_string());
                    true
                }
                Err(_) => false, // gone already, or not a directory
            },
            &mut |name, path| found.push((name, path)),
        );
    }

    /// Reads pending events; returns the topic names whose nodes appeared
    /// (or changed owner or mode, so that a failed open may be retried).
    pub fn events(&mut self) -> Result<Vec<Found>> {
        let mut found = Vec::new();
        loop {
            let events = match self.ino.read_events() {
                Ok(ev) => ev,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("reading inotify events"),
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were dropped: look at everything again.
                    self.rescan(&mut found);
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.dirs.remove(&ev.wd);
                    continue;
                }
                let Some(name) = ev.name.and_then(|n| n.into_string().ok()) else {
                    continue;
                };
                let is_dir = ev.mask.contains(AddWatchFlags::IN_ISDIR);
                if Some(ev.wd) == self.parent_wd {
                    if self.root.file_name().is_some_and(|r| r == name.as_str()) && is_dir {
                        // (A stale watch of the old directory, if any, goes
                        // with its IN_IGNORED.)
                        self.add_tree("", &mut found);
                    } else if is_static_name(&name) {
                        let path = self.parent.join(&name);
                        if is_char_device(&path) {
                            found.push((name, path));
                        }
                    }
                    continue;
                }
                let Some(rel) = self.dirs.get(&ev.wd).cloned() else {
                    continue;
                };
                let sub = Self::join(&rel, &name);
                if is_dir {
                    if ev
                        .mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                    {
                        self.add_tree(&sub, &mut found);
                    }
                } else {
                    let path = self.root.join(&sub);
                    if is_char_device(&path) {
                        found.push((Self::topic_name(&sub), path));
                    }
                }
            }
        }
        Ok(found)
    }

    fn rescan(&mut self, found: &mut Vec<Found>) {
        for wd in std::mem::take(&mut self.dirs).into_keys() {
            let _ = self.ino.rm_watch(wd);
        }
        self.add_tree("", found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// inotify on a plain directory tree (char devices cannot be made
    /// without privileges, so this checks the directory handling; the VM
    /// tests check real topics).
    #[test]
    fn watches_levels_as_they_appear() {
        let tmp = std::env::temp_dir().join(format!("baf-watch-{}", std::process::id()));
        let root = tmp.join("baf");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let (mut w, found) = Watcher::new(&root).unwrap();
        assert!(found.is_empty());
        std::fs::create_dir_all(root.join("robot/arm")).unwrap();
        // Wait for the root and its levels to be watched.
        let t0 = Instant::now();
        while w.dirs.len() < 3 && t0.elapsed() < Duration::from_secs(5) {
            w.events().unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut rels: Vec<_> = w.dirs.values().cloned().collect();
        rels.sort();
        assert_eq!(rels, vec!["", "robot", "robot/arm"]);
        std::fs::remove_dir_all(&root).unwrap();
        let t0 = Instant::now();
        while !w.dirs.is_empty() && t0.elapsed() < Duration::from_secs(5) {
            w.events().unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            w.dirs.is_empty(),
            "watches of removed directories are dropped"
        );
        std::fs::create_dir_all(root.join("again")).unwrap();
        let t0 = Instant::now();
        while w.dirs.len() < 2 && t0.elapsed() < Duration::from_secs(5) {
            w.events().unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            w.dirs.len(),
            2,
            "the root is watched again when it comes back"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
