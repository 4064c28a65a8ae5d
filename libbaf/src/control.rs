//! Topic management: creating and removing topics through the control
//! device, and the kernel's view of every topic in sysfs.

use crate::abi;
use crate::cli::Failure;
use anyhow::{Context, Result};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The control device: `$BAF_CONTROL`, or `/dev/baf-control`.
pub fn control_path() -> PathBuf {
    std::env::var_os("BAF_CONTROL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/baf-control"))
}

/// Where the kernel lists topics: `/sys/class/baf`.
pub const SYSFS_CLASS: &str = "/sys/class/baf";

/// Checks a topic name with the kernel's own rule, with a message that says
/// what is wrong.
pub fn check_name(name: &str) -> Result<()> {
    abi::check_name(name.as_bytes()).map_err(|e| {
        let why = match e {
            abi::NameError::Empty => "it is empty or has an empty level".to_string(),
            abi::NameError::TooLong => format!("it is longer than {} bytes", abi::NAME_MAX),
            abi::NameError::DotLevel => "a level is '.' or '..'".to_string(),
            abi::NameError::BadChar(b) => format!(
                "it contains {:?}; use letters, digits, '.', '_', '-' and '/' between levels",
                char::from(b)
            ),
        };
        Failure::Usage.wrap(anyhow::anyhow!("invalid topic name {name:?}: {why}"))
    })
}

/// Settings of a new topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Ring size in bytes (a power of two); 0 for the module default.
    pub ring_size: u64,
    /// Largest record; 0 for a quarter of the ring.
    pub record_max: u32,
    /// Node permission bits.
    pub mode: u32,
    /// Node owner.
    pub uid: u32,
    /// Node group.
    pub gid: u32,
}

/// The gid of group `name` from `/etc/group`, if it exists.
pub fn group_gid(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

impl CreateOptions {
    /// The defaults: mode 0660, owned by the caller, group `baf` when that
    /// group exists and the caller may use it, else the caller's group.
    pub fn defaults() -> Self {
        let uid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        let gid = match group_gid("baf") {
            Some(g) if uid == 0 || g == egid || in_groups(g) => g,
            _ => egid,
        };
        Self {
            ring_size: 0,
            record_max: 0,
            mode: 0o660,
            uid,
            gid,
        }
    }
}

fn in_groups(gid: u32) -> bool {
    nix::unistd::getgroups()
        .map(|gs| gs.iter().any(|g| g.as_raw() == gid))
        .unwrap_or(false)
}

/// Whether [`create`] made the topic or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// A new topic.
    New,
    /// It existed with the same settings.
    Existed,
}

fn open_control() -> Result<std::fs::File> {
    let path = control_path();
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::NotFound => {
                    Failure::NoTopic.wrap(anyhow::anyhow!(
                        "{} does not exist: is the fanout module loaded? (modprobe fanout)",
                        path.display()
                    ))
                }
                io::ErrorKind::PermissionDenied => Failure::Permission.wrap(anyhow::anyhow!(
                    "no permission to manage topics ({}): run as root or join the group that owns it",
                    path.display()
                )),
                _ => anyhow::Error::new(e).context(format!("cannot open {}", path.display())),
            };
            hint
        })
}

fn control_ioctl<T>(request: u32, arg: &mut T) -> Result<i32> {
    let f = open_control()?;
    // SAFETY: `request` is a control ioctl whose argument is a `T` (see
    // abi.rs); `arg` is a live `T` for the duration of the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), request as _, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error().into())
    } else {
        Ok(rc)
    }
}

/// Creates topic `name` (idempotent when the settings match).
pub fn create(name: &str, opts: &CreateOptions) -> Result<Created> {
    check_name(name)?;
    let Some(packed) = abi::TopicName::new(name.as_bytes()) else {
        return Err(Failure::Usage.wrap(anyhow::anyhow!("topic name {name:?} is too long")));
    };
    let mut spec = abi::TopicSpec {
        name: packed,
        ring_size: opts.ring_size,
        record_max: opts.record_max,
        mode: opts.mode,
        uid: opts.uid,
        gid: opts.gid,
    };
    match control_ioctl(abi::IOC_CREATE, &mut spec) {
        Ok(1) => Ok(Created::New),
        Ok(_) => Ok(Created::Existed),
        Err(e) => Err(explain_errno(e, name, "create")),
    }
}

/// Removes topic `name`: its readers see end of file, its writers `ENODEV`.
pub fn remove(name: &str) -> Result<()> {
    check_name(name)?;
    let Some(mut packed) = abi::TopicName::new(name.as_bytes()) else {
        return Err(Failure::Usage.wrap(anyhow::anyhow!("topic name {name:?} is too long")));
    };
    control_ioctl(abi::IOC_REMOVE, &mut packed)
        .map(|_| ())
        .map_err(|e| explain_errno(e, name, "remove"))
}

/// Says what a control ioctl's errno means; the OS error stays the cause,
/// so callers can still test it with [`crate::cli::errno`].
fn explain_errno(e: anyhow::Error, name: &str, what: &str) -> anyhow::Error {
    let (class, msg) = match crate::cli::errno(&e) {
        Some(libc::EEXIST) => (
            Failure::Usage,
            format!("topic {name:?} already exists with other settings: remove it first (baf-setup remove {name})"),
        ),
        Some(libc::ENOENT) => (Failure::NoTopic, format!("topic {name:?} does not exist")),
        Some(libc::EPERM) => (
            Failure::Permission,
            format!("cannot {what} topic {name:?} with that owner or group: only root may give topics to others"),
        ),
        Some(libc::EINVAL) => (
            Failure::Usage,
            format!("cannot {what} topic {name:?}: the size must be a power of two from 16K to 64M, record_max from 4K to a quarter of it, the mode at most 0777"),
        ),
        _ => return e.context(format!("cannot {what} topic {name:?}")),
    };
    class.wrap(e.context(msg))
}

/// One topic as the kernel reports it in sysfs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicStatus {
    /// Topic name.
    pub name: String,
    /// Ring size in bytes.
    pub ring_size: u64,
    /// Largest record in bytes.
    pub record_max: u64,
    /// Records written, ever.
    pub records: u64,
    /// Payload bytes written, ever.
    pub bytes: u64,
    /// Open files that can read.
    pub readers: u64,
    /// Open files that can write.
    pub writers: u64,
    /// Records lost by readers, ever.
    pub lost: u64,
    /// The next sequence number.
    pub next_seq: u64,
    /// The oldest sequence number still buffered.
    pub oldest_seq: u64,
}

fn read_u64(dir: &Path, attr: &str) -> Result<u64> {
    let p = dir.join(attr);
    let s = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("parsing {}", p.display()))
}

/// Every topic, sorted by name. Empty when the module is not loaded.
pub fn list() -> Result<Vec<TopicStatus>> {
    let dir = match std::fs::read_dir(SYSFS_CLASS) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(SYSFS_CLASS),
    };
    let mut out = Vec::new();
    for entry in dir {
        let path = entry?.path();
        let Ok(name) = std::fs::read_to_string(path.join("name")) else {
            continue; // the control device, or a topic removed meanwhile
        };
        let stat = || -> Result<TopicStatus> {
            Ok(TopicStatus {
                name: name.trim_end().to_string(),
                ring_size: read_u64(&path, "ring_size")?,
                record_max: read_u64(&path, "record_max")?,
                records: read_u64(&path, "records")?,
                bytes: read_u64(&path, "bytes")?,
                readers: read_u64(&path, "readers")?,
                writers: read_u64(&path, "writers")?,
                lost: read_u64(&path, "lost")?,
                next_seq: read_u64(&path, "next_seq")?,
                oldest_seq: read_u64(&path, "oldest_seq")?,
            })
        };
        if let Ok(s) = stat() {
            out.push(s);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The device node of topic `name`, as the kernel named it (the `DEVNAME`
/// of its sysfs `uevent`: `/dev/baf/<name>`, or `/dev/fanoutN` for the
/// static topics); for a topic the kernel does not list, where it would be:
/// under [`crate::dev_dir`].
pub fn node_of(name: &str) -> PathBuf {
    let uevent = Path::new(SYSFS_CLASS)
        .join(name.replace('/', "!"))
        .join("uevent");
    std::fs::read_to_string(uevent)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|dev| Path::new("/dev").join(dev))
        })
        .unwrap_or_else(|| crate::dev_dir().join(name))
}
