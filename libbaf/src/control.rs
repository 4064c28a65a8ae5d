//! Topic management: creating and removing topics through the control
//! device, and the kernel's view of every topic in sysfs.

use crate::abi;
use crate::error::{errno, Kind, ModuleNotLoaded};
pub use crate::sys::{majors, module_loaded, node_of, require_module, SYSFS_CLASS};
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
        Kind::Invalid.wrap(anyhow::anyhow!("invalid topic name {name:?}: {why}"))
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
    /// Whether readers may become lossless (`TOPIC_LOSSLESS`, ABI 3): a
    /// writer then waits for them instead of overwriting what they have not
    /// read.
    pub lossless: bool,
    /// Stall timeout in milliseconds (ABI 3): a lossless reader that holds a
    /// writer up this long is demoted to lossy. 0: never. At most
    /// [`abi::STALL_MS_MAX`], and only with [`CreateOptions::lossless`].
    pub stall_ms: u32,
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
            lossless: false,
            stall_ms: 0,
        }
    }

    /// The `TOPIC_*` flags these options mean.
    pub fn flags(&self) -> u32 {
        if self.lossless {
            abi::TOPIC_LOSSLESS
        } else {
            0
        }
    }

    /// Checks what the kernel would refuse with a bare `EINVAL` but a
    /// program can say better: the stall timeout's range, and that it needs
    /// a lossless topic.
    pub fn check(&self) -> Result<()> {
        if self.stall_ms > 0 && !self.lossless {
            return Err(Kind::Invalid.wrap(anyhow::anyhow!(
                "a stall timeout needs a lossless topic: it demotes lossless readers that hold writers up"
            )));
        }
        if self.stall_ms > abi::STALL_MS_MAX {
            return Err(Kind::Invalid.wrap(anyhow::anyhow!(
                "stall timeout {} ms is too long: at most {} ms (one hour)",
                self.stall_ms,
                abi::STALL_MS_MAX
            )));
        }
        Ok(())
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
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound if !module_loaded() => ModuleNotLoaded.into(),
            io::ErrorKind::NotFound => Kind::NoModule.wrap(anyhow::anyhow!(
                "{} does not exist, though the baf module is loaded: is /dev a devtmpfs?",
                path.display()
            )),
            io::ErrorKind::PermissionDenied => Kind::Permission.wrap(anyhow::anyhow!(
                "no permission to manage topics ({}): run as root or join the group that owns it",
                path.display()
            )),
            _ => anyhow::Error::new(e).context(format!("cannot open {}", path.display())),
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
    opts.check()?;
    let Some(packed) = abi::TopicName::new(name.as_bytes()) else {
        return Err(Kind::Invalid.wrap(anyhow::anyhow!("topic name {name:?} is too long")));
    };
    let mut spec = abi::TopicSpec {
        name: packed,
        ring_size: opts.ring_size,
        record_max: opts.record_max,
        mode: opts.mode,
        uid: opts.uid,
        gid: opts.gid,
        flags: opts.flags(),
        stall_ms: opts.stall_ms,
    };
    match control_ioctl(abi::IOC_CREATE, &mut spec) {
        Ok(1) => Ok(Created::New),
        Ok(_) => Ok(Created::Existed),
        Err(e) => Err(explain_errno(e, name, "create")),
    }
}

/// Creates topic `name`, missing, with the defaults (for a tool that
/// creates topics on demand), and returns its node ([`wait_node`]). A
/// failure is "no such topic" ([`Kind::NoTopic`]) with the reason, but a
/// module that is not there (or too old) stays that.
pub fn create_on_demand(name: &str) -> Result<PathBuf> {
    match create(name, &CreateOptions::defaults()) {
        Ok(_) => Ok(wait_node(name)),
        Err(e) if crate::error::kind(&e) == Some(Kind::NoModule) => Err(e),
        Err(e) => Err(Kind::NoTopic.error(format_args!(
            "topic {name} does not exist and cannot be created here ({}): as root, run `baf-setup create {name}`",
            crate::error::message(&e)
        ))),
    }
}

/// The node of topic `name`, just created ([`create`]): devtmpfs makes it
/// before the create returns, but a `/dev` managed by a slower helper may
/// take a moment, so this waits for it up to a second.
pub fn wait_node(name: &str) -> PathBuf {
    for _ in 0..50 {
        let path = node_of(name);
        if path.exists() {
            return path;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    node_of(name)
}

/// Removes topic `name`: its readers see end of file, its writers `ENODEV`.
pub fn remove(name: &str) -> Result<()> {
    check_name(name)?;
    let Some(mut packed) = abi::TopicName::new(name.as_bytes()) else {
        return Err(Kind::Invalid.wrap(anyhow::anyhow!("topic name {name:?} is too long")));
    };
    control_ioctl(abi::IOC_REMOVE, &mut packed)
        .map(|_| ())
        .map_err(|e| explain_errno(e, name, "remove"))
}

/// Says what a control ioctl's errno means; the OS error stays the cause,
/// so callers can still test it with [`errno`].
fn explain_errno(e: anyhow::Error, name: &str, what: &str) -> anyhow::Error {
    let (class, msg) = match errno(&e) {
        Some(libc::EEXIST) => (
            Kind::Invalid,
            format!("topic {name:?} already exists with other settings: remove it first (baf-setup remove {name})"),
        ),
        Some(libc::ENOENT) => (Kind::NoTopic, format!("topic {name:?} does not exist")),
        Some(libc::EPERM) if what == "remove" => (
            Kind::Permission,
            format!("cannot remove topic {name:?}: only its owner or root may remove it, and static fanoutN topics are removed only by unloading the module"),
        ),
        Some(libc::EPERM) => (
            Kind::Permission,
            format!("cannot {what} topic {name:?} with that owner or group: only root may give topics to others"),
        ),
        Some(libc::ENOSPC) => (
            Kind::Invalid,
            format!("cannot {what} topic {name:?}: too many topics (the module's max_topics limit; remove one, or load fanout with a larger max_topics)"),
        ),
        Some(libc::ENOMEM) => (
            Kind::Invalid,
            format!("cannot {what} topic {name:?}: its ring would take the topics' memory past the module's max_ring_mb limit (remove a topic, pick a smaller --size, or load fanout with a larger max_ring_mb)"),
        ),
        Some(libc::EINVAL) if name == "baf-control" => (
            Kind::Invalid,
            format!("cannot {what} topic {name:?}: the name is reserved for the control device"),
        ),
        Some(libc::EINVAL) => (
            Kind::Invalid,
            format!(
                "cannot {what} topic {name:?}: the size must be a power of two from 16K to 64M, record_max from 4K to a quarter of it, the mode at most 0777, and a stall timeout at most {} ms and only on a lossless topic",
                abi::STALL_MS_MAX
            ),
        ),
        // A module older than ABI 3 does not know IOC_CREATE with the longer
        // TopicSpec (its size is part of the number).
        Some(libc::ENOTTY) => (
            Kind::NoModule,
            format!("cannot {what} topic {name:?}: the loaded fanout module is older than ABI version {}: load the fanout.ko built with this program (rmmod fanout; insmod fanout.ko)", abi::ABI_VERSION),
        ),
        // Says it all, and the same in every tool.
        _ if e.downcast_ref::<ModuleNotLoaded>().is_some() => return e,
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
    /// Whether readers may be lossless (`TOPIC_LOSSLESS`).
    pub lossless: bool,
    /// Stall timeout in milliseconds; 0 for none.
    pub stall_ms: u64,
    /// Open files that are lossless readers now.
    pub lossless_readers: u64,
    /// Times a writer waited for a lossless reader, ever.
    pub writer_waits: u64,
    /// Lossless readers demoted to lossy by the stall timeout, ever.
    pub demoted: u64,
}

fn read_u64(dir: &Path, attr: &str) -> Result<u64> {
    let p = dir.join(attr);
    let s = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("parsing {}", p.display()))
}

/// A value that came with ABI 3: 0 when the module is older and does not
/// have it, so `status` still shows an older module's topics.
fn read_u64_v3(dir: &Path, attr: &str) -> Result<u64> {
    if dir.join(attr).exists() {
        read_u64(dir, attr)
    } else {
        Ok(0)
    }
}

/// One topic's values from its sysfs directory `dir`.
fn read_status(dir: &Path) -> Result<TopicStatus> {
    let name = std::fs::read_to_string(dir.join("name"))
        .with_context(|| format!("reading {}", dir.join("name").display()))?;
    Ok(TopicStatus {
        name: name.trim_end().to_string(),
        ring_size: read_u64(dir, "ring_size")?,
        record_max: read_u64(dir, "record_max")?,
        records: read_u64(dir, "records")?,
        bytes: read_u64(dir, "bytes")?,
        readers: read_u64(dir, "readers")?,
        writers: read_u64(dir, "writers")?,
        lost: read_u64(dir, "lost")?,
        next_seq: read_u64(dir, "next_seq")?,
        oldest_seq: read_u64(dir, "oldest_seq")?,
        lossless: read_u64_v3(dir, "lossless")? != 0,
        stall_ms: read_u64_v3(dir, "stall_ms")?,
        lossless_readers: read_u64_v3(dir, "lossless_readers")?,
        writer_waits: read_u64_v3(dir, "writer_waits")?,
        demoted: read_u64_v3(dir, "demoted")?,
    })
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
        // The control device has no `name`; a topic removed meanwhile
        // loses its files: both are left out.
        if let Ok(s) = read_status(&entry?.path()) {
            out.push(s);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossless_options() {
        let mut o = CreateOptions::defaults();
        assert!(!o.lossless);
        assert_eq!((o.flags(), o.stall_ms), (0, 0));
        o.check().unwrap();

        o.stall_ms = 250;
        let err = o.check().unwrap_err();
        assert!(
            crate::error::message(&err).contains("needs a lossless topic"),
            "{err:#}"
        );
        assert_eq!(crate::error::kind(&err), Some(Kind::Invalid));

        o.lossless = true;
        assert_eq!(o.flags(), abi::TOPIC_LOSSLESS);
        o.check().unwrap();
        o.stall_ms = abi::STALL_MS_MAX;
        o.check().unwrap();
        o.stall_ms = abi::STALL_MS_MAX + 1;
        assert_eq!(
            crate::error::kind(&o.check().unwrap_err()),
            Some(Kind::Invalid)
        );
    }

    fn topic_dir(tag: &str, values: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("baf-control-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (attr, value) in values {
            std::fs::write(dir.join(attr), format!("{value}\n")).unwrap();
        }
        dir
    }

    const V2: [(&str, &str); 10] = [
        ("name", "robot/arm"),
        ("ring_size", "65536"),
        ("record_max", "16384"),
        ("records", "3"),
        ("bytes", "30"),
        ("readers", "2"),
        ("writers", "1"),
        ("lost", "4"),
        ("next_seq", "3"),
        ("oldest_seq", "0"),
    ];

    #[test]
    fn status_from_sysfs() {
        let mut values = V2.to_vec();
        values.extend([
            ("lossless", "1"),
            ("stall_ms", "250"),
            ("lossless_readers", "1"),
            ("writer_waits", "7"),
            ("demoted", "2"),
        ]);
        let dir = topic_dir("v3", &values);
        let s = read_status(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            s,
            TopicStatus {
                name: "robot/arm".into(),
                ring_size: 65536,
                record_max: 16384,
                records: 3,
                bytes: 30,
                readers: 2,
                writers: 1,
                lost: 4,
                next_seq: 3,
                oldest_seq: 0,
                lossless: true,
                stall_ms: 250,
                lossless_readers: 1,
                writer_waits: 7,
                demoted: 2,
            }
        );
    }

    #[test]
    fn status_of_an_older_module_has_no_lossless_values() {
        let dir = topic_dir("v2", &V2);
        let s = read_status(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((s.name.as_str(), s.lost), ("robot/arm", 4));
        assert!(!s.lossless);
        assert_eq!(
            (s.stall_ms, s.lossless_readers, s.writer_waits, s.demoted),
            (0, 0, 0, 0)
        );
        // Without `name` (the control device) it is not a topic.
        let dir = topic_dir("control", &[("dev", "250:0")]);
        assert!(read_status(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
