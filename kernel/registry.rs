// SPDX-License-Identifier: GPL-2.0
//! The topics that exist: created and removed at run time through the
//! control device (and at load for the static `fanoutN` topics), found by
//! minor number when a node is opened.
//!
//! One global mutex orders every create, remove and open lookup, so a name
//! is either fully there (topic, minor, device node) or not at all. The
//! ring's memory is allocated (and a topic's memory freed, with its RCU
//! waits) outside that mutex, so an `open()` never waits for either.
//!
//! The caps (`max_topics`, `max_ring_mb`) count topics as long as their
//! memory lives: a topic is charged before its ring is allocated and
//! uncharged when it is freed (after its last open file or mapping is
//! gone), not when it is removed, so open-then-remove loops cannot pin
//! memory past them.

use crate::abi::{self, NameError, TopicSpec};
use crate::chardev::{Kind, Node, NodeHandle, NodeSpec, MINORS};
use crate::topic::Topic;
use kernel::{
    bindings,
    prelude::*,
    str::CString,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
    task::Kuid,
};

/// Ring bytes of every topic whose memory is alive (charged at creation,
/// uncharged when freed).
static CHARGED_BYTES: Atomic<u64> = Atomic::new(0);
/// Topics whose memory is alive.
static CHARGED_TOPICS: Atomic<u64> = Atomic::new(0);

/// Adds `n` to `counter` unless that passes `max`; whether it did.
fn charge_one(counter: &Atomic<u64>, n: u64, max: u64) -> bool {
    let mut cur = counter.load(Relaxed);
    loop {
        let Some(new) = cur.checked_add(n).filter(|v| *v <= max) else {
            return false;
        };
        match counter.cmpxchg(cur, new, Relaxed) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// Charges a new topic with a ring of `bytes` against the caps: `ENOSPC`
/// past `max_topics`, `ENOMEM` past `max_ring_mb`, with nothing charged.
fn charge(bytes: u64) -> Result {
    let max_topics = u64::from(crate::compat::param(&crate::module_parameters::max_topics));
    let max_bytes = u64::from(crate::compat::param(&crate::module_parameters::max_ring_mb)) << 20;
    if !charge_one(&CHARGED_TOPICS, 1, max_topics) {
        return Err(ENOSPC);
    }
    if !charge_one(&CHARGED_BYTES, bytes, max_bytes) {
        CHARGED_TOPICS.fetch_sub(1, Relaxed);
        return Err(ENOMEM);
    }
    Ok(())
}

/// Gives back the charge of a topic with a ring of `bytes` whose memory is
/// freed (called from the topic's drop).
pub(crate) fn uncharge(bytes: u64) {
    CHARGED_BYTES.fetch_sub(bytes, Relaxed);
    CHARGED_TOPICS.fetch_sub(1, Relaxed);
}

/// Largest and smallest ring, and smallest record limit.
pub(crate) const RING_MIN: u64 = 16 * 1024;
pub(crate) const RING_MAX: u64 = 64 * 1024 * 1024;
pub(crate) const RECORD_MIN: u64 = 4096;

/// The settings a topic was created with; a second create must match.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) ring_size: u64,
    pub(crate) record_max: u64,
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// `abi::TOPIC_*`.
    pub(crate) flags: u32,
    pub(crate) stall_ms: u32,
    /// A static topic of the `devices` parameter: never removed through the
    /// control device.
    pub(crate) fixed: bool,
}

/// The control device's own name in the `baf` class: no topic may take it.
const RESERVED: &[u8] = b"baf-control";

struct Entry {
    name: CString,
    minor: u32,
    topic: Arc<Topic>,
    settings: Settings,
    /// Whether other topics sit below this one's name, so its node is
    /// `baf/<name>/@` rather than `baf/<name>` (which is their directory).
    parent: bool,
    // Held for its `Drop`, which removes the device node; it is the last
    // field, so the node goes after the topic is killed (see `remove`).
    // `None` only while the node is being moved, or if re-adding it failed.
    node: Option<NodeHandle>,
}

/// Whether `child` is a level below `parent` (`parent/...`).
fn is_under(child: &[u8], parent: &[u8]) -> bool {
    child.len() > parent.len()
        && child.starts_with(parent)
        && child.get(parent.len()) == Some(&b'/')
}

impl Entry {
    /// The devtmpfs path of this topic's node, relative to `/dev`: a static
    /// topic's name; `baf/<name>`; or, for a topic that other topics sit
    /// below, `baf/<name>/@` (`@` is never part of a name, so it cannot
    /// clash with a topic one level down).
    fn path(&self) -> Result<CString> {
        let name = kernel::str::BStr::from_bytes(self.name.to_bytes());
        Ok(if self.settings.fixed {
            CString::try_from_fmt(fmt!("{}", name))?
        } else if self.parent {
            CString::try_from_fmt(fmt!("baf/{}/@", name))?
        } else {
            CString::try_from_fmt(fmt!("baf/{}", name))?
        })
    }

    /// Registers this topic's node where [`Entry::path`] says.
    fn add_node(&mut self, major: u32) -> Result {
        let node = Node::add(
            major,
            NodeSpec {
                kind: Kind::Topic(self.topic.clone()),
                minor: self.minor,
                name: CString::try_from_fmt(fmt!(
                    "{}",
                    kernel::str::BStr::from_bytes(self.name.to_bytes())
                ))?,
                path: self.path()?,
                mode: self.settings.mode,
                uid: bindings::kuid_t {
                    val: self.settings.uid,
                },
                gid: bindings::kgid_t {
                    val: self.settings.gid,
                },
            },
        )?;
        self.node = Some(node);
        Ok(())
    }
}

pub(crate) struct Registry {
    /// Major number of our nodes; 0 until the module has registered it.
    major: u32,
    entries: KVVec<Entry>,
    /// Where the search for a free minor starts: just after the last one
    /// given out, so a freed minor is not reused until the numbering wraps
    /// (a node copied by major:minor, as container runtimes do, cannot
    /// silently open a newer topic).
    next_minor: u32,
}

kernel::sync::global_lock! {
    // SAFETY: `init` is called in the module initializer, before any use.
    pub(crate) unsafe(uninit) static TOPICS: Mutex<Registry> = Registry {
        major: 0,
        entries: KVVec::new(),
        next_minor: 1,
    };
}

/// Checks ring size and record limit (0 picks the defaults).
pub(crate) fn check_sizes(ring: u64, record: u64, default_ring: u64) -> Result<(u64, u64)> {
    let ring = if ring == 0 { default_ring } else { ring };
    if !ring.is_power_of_two() || !(RING_MIN..=RING_MAX).contains(&ring) {
        return Err(EINVAL);
    }
    let record = if record == 0 { ring / 4 } else { record };
    if !(RECORD_MIN..=ring / 4).contains(&record) {
        return Err(EINVAL);
    }
    Ok((ring, record))
}

fn name_error(e: NameError) -> Error {
    match e {
        NameError::TooLong => crate::compat::enametoolong(),
        _ => EINVAL,
    }
}

impl Registry {
    /// Sets the major number of all nodes; called once at load.
    pub(crate) fn set_major(&mut self, major: u32) {
        self.major = major;
    }

    /// The topic behind `minor`, if it exists.
    pub(crate) fn by_minor(&self, minor: u32) -> Option<Arc<Topic>> {
        self.entries
            .iter()
            .find(|e| e.minor == minor)
            .map(|e| e.topic.clone())
    }

    /// Moves the node of entry `i` to its leaf or parent place: removes it,
    /// then adds it again at the new path (same minor and sysfs name). Open
    /// files are not affected: they hold the topic, not the node.
    fn place(&mut self, i: usize, parent: bool) {
        let major = self.major;
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        e.node = None;
        e.parent = parent;
        if let Err(err) = e.add_node(major) {
            pr_warn!(
                "topic {}: its node could not be moved ({:?}); it has none now\n",
                kernel::str::BStr::from_bytes(e.name.to_bytes()),
                err
            );
        }
    }

    /// Run-time topics whose name is an ancestor level of `name`.
    fn ancestors(&self, name: &[u8]) -> KVec<usize> {
        let mut v = KVec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !e.settings.fixed
                && is_under(name, e.name.to_bytes())
                && v.push(i, GFP_KERNEL).is_err()
            {
                break;
            }
        }
        v
    }

    /// Adds `topic` (made by [`create`]) as `name`. Returns `false` when a
    /// topic of that name already exists with the same settings (`EEXIST`
    /// if they differ); the caller then drops `topic`, outside the lock.
    ///
    /// Node layout: a topic's node is `/dev/baf/<name>`, levels being
    /// directories; a topic that has other topics below it (`sport` beside
    /// `sport/tennis`) has its node at `/dev/baf/<name>/@` instead, and is
    /// moved there (or back) as topics below it come and go, so every topic
    /// of every level has a node at once.
    fn insert(&mut self, name: &[u8], s: Settings, topic: &Arc<Topic>) -> Result<bool> {
        if let Some(found) = self.existing(name, s) {
            return found;
        }
        if self.major == 0 {
            return Err(ENODEV);
        }
        let minor = (0..MINORS - 1)
            .map(|i| (self.next_minor - 1 + i) % (MINORS - 1) + 1)
            .find(|m| self.entries.iter().all(|e| e.minor != *m))
            .ok_or(ENOSPC)?;
        let topic = topic.clone();
        let cname = CString::try_from_fmt(fmt!("{}", kernel::str::BStr::from_bytes(name)))?;
        let parent = !s.fixed
            && self
                .entries
                .iter()
                .any(|e| !e.settings.fixed && is_under(e.name.to_bytes(), name));
        let mut entry = Entry {
            name: cname,
            minor,
            topic,
            settings: s,
            parent,
            node: None,
        };
        // Ancestors still at their leaf place must leave it first: it
        // becomes a directory of the new node's path.
        let moving = if s.fixed {
            KVec::new()
        } else {
            let mut v = self.ancestors(name);
            v.retain(|i| self.entries.get(*i).is_some_and(|e| !e.parent));
            v
        };
        for &i in moving.iter() {
            if let Some(e) = self.entries.get_mut(i) {
                e.node = None;
            }
        }
        let added = entry
            .add_node(self.major)
            .and_then(|()| Ok(self.entries.push(entry, GFP_KERNEL)?));
        // Ancestors go to their parent place, or back, if the new topic
        // could not be made.
        for &i in moving.iter() {
            self.place(i, added.is_ok());
        }
        added?;
        self.next_minor = minor % (MINORS - 1) + 1;
        Ok(true)
    }

    /// For a create of `name` with settings `s`: `Some(Ok(false))` when
    /// it exists with exactly these settings, `Some(Err(EEXIST))` with
    /// others, `None` when it does not exist.
    fn existing(&self, name: &[u8], s: Settings) -> Option<Result<bool>> {
        let e = self.entries.iter().find(|e| e.name.to_bytes() == name)?;
        Some(if e.settings == s {
            Ok(false)
        } else {
            Err(EEXIST)
        })
    }

    /// Removes topic `name`: wakes its readers and writers, removes the node.
    /// Open files keep the topic's memory until they are closed. `may` says
    /// whether the caller may remove a topic owned by this kuid; static
    /// topics are never removed here (`EPERM`). Returns the topic, for the
    /// caller to drop after it unlocked the registry (the last reference
    /// frees the ring and waits for RCU).
    fn remove(&mut self, name: &[u8], may: impl FnOnce(u32) -> bool) -> Result<Arc<Topic>> {
        let i = self
            .entries
            .iter()
            .position(|e| e.name.to_bytes() == name)
            .ok_or(ENOENT)?;
        let s = self.entries.get(i).ok_or(ENOENT)?.settings;
        if s.fixed || !may(s.uid) {
            return Err(EPERM);
        }
        let e = self.entries.remove(i)?;
        let topic = e.topic.clone();
        topic.kill();
        drop(e);
        // Ancestors with nothing below them any more go back to their leaf
        // place (at most one: any higher ancestor still has that one below
        // it).
        let mut back = self.ancestors(name);
        back.retain(|j| {
            self.entries.get(*j).is_some_and(|a| {
                a.parent
                    && !self
                        .entries
                        .iter()
                        .any(|o| is_under(o.name.to_bytes(), a.name.to_bytes()))
            })
        });
        for &j in back.iter() {
            self.place(j, false);
        }
        Ok(topic)
    }
}

/// Creates topic `name` with settings `s` (checked by the caller). Returns
/// `false` when it already exists with the same settings (`EEXIST` if they
/// differ). The topic is charged against the caps and its ring allocated
/// before the registry is locked.
pub(crate) fn create(name: &[u8], s: Settings) -> Result<bool> {
    if name == RESERVED {
        return Err(EINVAL);
    }
    if let Some(found) = TOPICS.lock().existing(name, s) {
        return found;
    }
    charge(s.ring_size)?;
    let topic = match Topic::new(
        s.ring_size as usize,
        s.record_max as usize,
        s.flags,
        s.stall_ms,
        s.uid,
        s.gid,
    ) {
        Ok(t) => t,
        Err(e) => {
            uncharge(s.ring_size);
            return Err(e);
        }
    };
    let r = TOPICS.lock().insert(name, s, &topic);
    // Not inserted: the last reference goes here, unlocked.
    drop(topic);
    r
}

/// Removes every topic (module unload); each is freed outside the lock.
pub(crate) fn clear() {
    loop {
        let e = {
            let mut reg = TOPICS.lock();
            let e = reg.entries.pop();
            if e.is_none() {
                reg.major = 0;
            }
            e
        };
        let Some(e) = e else {
            break;
        };
        e.topic.kill();
        drop(e);
    }
}

/// `IOC_CREATE` on the control device, for the current task.
pub(crate) fn create_from_user(spec: &TopicSpec, default_ring: u64) -> Result<bool> {
    let name = spec.name.as_bytes();
    abi::check_name(name).map_err(name_error)?;
    let (ring_size, record_max) =
        check_sizes(spec.ring_size, u64::from(spec.record_max), default_ring)?;
    let mode = u16::try_from(spec.mode)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or(EINVAL)?;
    let lossless = spec.flags & abi::TOPIC_LOSSLESS != 0;
    if spec.flags & !abi::TOPIC_FLAGS_ALL != 0
        || (spec.stall_ms > abi::STALL_MS_MAX && spec.stall_ms != abi::STALL_MS_NEVER)
        || (spec.stall_ms != 0 && !lossless)
    {
        return Err(EINVAL);
    }
    // A lossless topic always has a stall timeout; only an administrator
    // may let a stuck reader hold its writers up forever.
    if spec.stall_ms == abi::STALL_MS_NEVER {
        // SAFETY: `capable` only reads the current task's credentials.
        if !unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as i32) } {
            return Err(EPERM);
        }
    }
    let stall_ms = if lossless && spec.stall_ms == 0 {
        abi::STALL_MS_DEFAULT
    } else {
        spec.stall_ms
    };
    // SAFETY: These helpers only read the current task's credentials.
    let (ns, euid) = unsafe { (bindings::current_user_ns(), Kuid::current_euid().into_raw()) };
    // SAFETY: `ns` is the current task's own user namespace.
    let (uid, gid) = unsafe {
        (
            bindings::make_kuid(ns, spec.uid),
            bindings::make_kgid(ns, spec.gid),
        )
    };
    if uid.val == u32::MAX || gid.val == u32::MAX {
        // Not mapped in the caller's user namespace.
        return Err(EINVAL);
    }
    // Without CAP_CHOWN, a topic can only be given to oneself and one's own
    // groups, as with chown(2).
    // SAFETY: `capable` and `in_group_p` only read the current credentials.
    let may_chown = unsafe { bindings::capable(bindings::CAP_CHOWN as i32) };
    // SAFETY: As above.
    if !may_chown && (uid.val != euid.val || unsafe { bindings::in_group_p(gid) } == 0) {
        return Err(EPERM);
    }
    create(
        name,
        Settings {
            ring_size,
            record_max,
            mode,
            uid: uid.val,
            gid: gid.val,
            flags: spec.flags,
            stall_ms,
            fixed: false,
        },
    )
}

/// `IOC_REMOVE` on the control device, for the current task: the topic's
/// owner (by effective uid) or a holder of `CAP_SYS_ADMIN` may remove it.
pub(crate) fn remove_from_user(name: &[u8]) -> Result {
    let euid = Kuid::current_euid().into_raw();
    let topic = TOPICS.lock().remove(name, |owner| {
        // SAFETY: `capable` only reads the current task's credentials.
        owner == euid.val || unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as i32) }
    })?;
    // If no file holds it, the topic is freed here, with the registry
    // unlocked.
    drop(topic);
    Ok(())
}
