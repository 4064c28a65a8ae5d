//! A topic's device file, with the fanout ioctls as safe methods; the ABI
//! version check; and the check that a path is a topic's device before it
//! is opened. Batch writes and record-mode reads are in [`crate::batch`].

use crate::abi;
pub use crate::batch::{records, write_batch, Batch, Record};
use crate::error::Kind;
pub use crate::error::{AbiMismatch, ModuleNotLoaded, NotATopic};
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// An open topic device.
pub struct Topic {
    file: File,
}

fn ioctl<T>(file: &File, request: u32, arg: *mut T) -> io::Result<()> {
    ioctl_value(file, request, arg).map(|_| ())
}

/// As [`ioctl`], returning the call's (non-negative) result.
fn ioctl_value<T>(file: &File, request: u32, arg: *mut T) -> io::Result<u32> {
    // SAFETY: `request` is one of the fanout ioctls, whose argument is a `T`
    // as declared in `abi.rs`; `arg` points to a live, properly aligned `T`
    // that the kernel may read and write for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg) };
    u32::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// The byte count a moving system call (`splice`, `sendfile`) returned,
/// calling it again on `EINTR`.
fn moved(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        match usize::try_from(call()) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// `splice(from, NULL, to, NULL, len, SPLICE_F_MOVE)`, again on `EINTR`.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    moved(|| {
        // SAFETY: both descriptors are open for the call (borrowed), the
        // null offsets mean "the files' own positions", and no memory of
        // ours is passed.
        unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
            )
        }
    })
}

impl Topic {
    /// Opens `path` for reading (and writing if `write`), optionally
    /// non-blocking.
    pub fn open(path: &Path, write: bool, nonblock: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(if nonblock { libc::O_NONBLOCK } else { 0 })
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { file })
    }

    /// Wraps an already open device file.
    pub fn from_file(file: File) -> Self {
        Self { file }
    }

    /// The underlying file (for `read`, `write`, `poll`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Sets this file's read flags (`abi::FLAG_*`). With `FLAG_RECORD` or
    /// `FLAG_BATCH`, `FLAG_WRITER_ID` is set too: this library reads and
    /// writes only the whole ABI 4 record header ([`records`], [`Batch`]).
    pub fn set_flags(&self, mut flags: u32) -> io::Result<()> {
        if flags & (abi::FLAG_RECORD | abi::FLAG_BATCH) != 0 {
            flags |= abi::FLAG_WRITER_ID;
        }
        ioctl(&self.file, abi::IOC_SET_FLAGS, &mut flags)
    }

    /// Moves the read cursor; returns the sequence number read next.
    pub fn seek(&self, whence: u32, arg: u64) -> io::Result<u64> {
        let mut s = abi::Seek {
            whence,
            reserved: 0,
            arg,
        };
        ioctl(&self.file, abi::IOC_SEEK, &mut s)?;
        Ok(s.arg)
    }

    /// For a reader of the mapping: tells the kernel it reads record `seq`
    /// next and lost `lost` records since its last sync, so the loss shows
    /// in the file's and the topic's counts and `poll` refers to `seq`.
    /// `Ok(true)` when `seq` was already overwritten (read before sleeping).
    pub fn mapped_sync(&self, seq: u64, lost: u64) -> io::Result<bool> {
        let mut m = abi::MappedSync { seq, lost };
        // SAFETY: `IOC_MAPPED_SYNC` takes a pointer to a `MappedSync`, which
        // `m` is, live and aligned for the duration of the call; the kernel
        // only reads it.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), abi::IOC_MAPPED_SYNC as _, &mut m) };
        match rc {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Takes the topic's publisher lock for this open file: `EBUSY` while
    /// another open file holds it. Closing the file (or exiting) releases it.
    pub fn claim_publisher(&self) -> io::Result<()> {
        // SAFETY: this ioctl takes no argument.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), abi::IOC_CLAIM_PUBLISHER as _, 0) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Describes this open file and its topic. A module older than ABI 3
    /// fills in only the version 2 part (the rest stays 0), so that
    /// [`check_abi`] can say which version it found.
    pub fn info(&self) -> io::Result<abi::Info> {
        let mut info = abi::Info::default();
        match ioctl(&self.file, abi::IOC_INFO, &mut info) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                // SAFETY: `IOC_INFO_V2` writes the first `INFO_V2_SIZE`
                // bytes of an `Info` (a prefix of its fields), which `info`
                // has room for; it is live and aligned for the call.
                let rc =
                    unsafe { libc::ioctl(self.file.as_raw_fd(), abi::IOC_INFO_V2 as _, &mut info) };
                if rc < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            r => r?,
        }
        Ok(info)
    }

    /// Moves up to `len` bytes from the pipe `input` into the topic with
    /// `splice` (ABI 7): what the pipe holds goes in as one `write()` in
    /// this file's mode, copied once by the kernel from the pipe's pages
    /// into the ring. Returns the bytes moved; 0 when the pipe is at its
    /// end. Waits for the pipe as `read()` would; `EINVAL` from a module
    /// older than ABI 7 (or an `input` that is not a pipe).
    pub fn splice_in(&self, input: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        splice(input, self.file.as_fd(), len)
    }

    /// Moves up to `len` bytes from the regular file `input` (from its
    /// position, which moves on) into the topic with `sendfile` (ABI 7): the
    /// kernel hands the topic the file's pages, at most 64 KiB a pass, each
    /// pass one `write()` in this file's mode, copied once from the page
    /// cache into the ring. Returns the bytes moved; 0 at the file's end.
    pub fn sendfile_in(&self, input: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        moved(|| {
            // SAFETY: both descriptors are open for the call; a null offset
            // means the input's own position.
            unsafe {
                libc::sendfile(
                    self.file.as_raw_fd(),
                    input.as_raw_fd(),
                    std::ptr::null_mut(),
                    len,
                )
            }
        })
    }

    /// Moves what one `read()` of this file would return (at most `len`
    /// bytes, and what room the pipe has) into the pipe `out` with
    /// `splice` (ABI 7), copied once by the kernel from the ring into the
    /// pipe's pages. Returns the bytes moved; 0 at the end of the topic
    /// (removed and drained); `EAGAIN` on a non-blocking file with nothing
    /// new. `EPIPE` when `out` has no reader.
    pub fn splice_out(&self, out: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        splice(self.file.as_fd(), out, len)
    }

    /// Sets this file's wake threshold (ABI 8, `IOC_SET_LOWAT`): `poll`
    /// reports it readable, and a blocking `read()` that found nothing
    /// wakes, only once `bytes` ring bytes (headers included) are unread.
    /// Returns the threshold in effect (at most half the ring). `ENOTTY`
    /// from a module older than ABI 8.
    pub fn set_lowat(&self, bytes: u32) -> io::Result<u32> {
        let mut n = bytes;
        ioctl_value(&self.file, abi::IOC_SET_LOWAT, &mut n)
    }

    /// Waits until the topic has at least `n` lossless readers (ABI 3).
    /// `EAGAIN` on a non-blocking file while it has fewer; `ENODEV` once
    /// the topic is removed.
    pub fn wait_readers(&self, n: u32) -> io::Result<()> {
        let mut n = n;
        ioctl(&self.file, abi::IOC_WAIT_READERS, &mut n)
    }
}

/// How a topic is opened ([`open_node`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// For reading, non-blocking (a subscriber in an epoll set).
    Read,
    /// For writing, blocking (a publisher).
    Write,
}

/// Says what an error opening topic `name` (as given: a name or a path) at
/// `path` means, with what to do; the OS error stays the cause where no
/// kind fits.
pub fn open_error(e: io::Error, name: &str, path: &Path, access: Access) -> anyhow::Error {
    let p = path.display();
    let write = access == Access::Write;
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Kind::Permission.error(format!(
            "no permission to {} topic {name} ({p}): join the group that owns it (ls -l {p})",
            if write { "write to" } else { "read" }
        )),
        Some(libc::ENOENT) if !crate::sys::module_loaded() => ModuleNotLoaded.into(),
        Some(libc::ENOENT) if write && crate::sys::is_path(name) => {
            Kind::NoTopic.error(format!("{p} does not exist"))
        }
        Some(libc::ENOENT) if write => Kind::NoTopic.error(format!(
            "topic {name} does not exist ({p}): create it with `baf-setup create {name}`"
        )),
        Some(libc::ENXIO) | Some(libc::ENODEV) if write => {
            Kind::NoTopic.error(format!("topic {name} was removed ({p})"))
        }
        Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
            Kind::NoTopic.error(format!("topic {name} does not exist ({p})"))
        }
        _ => anyhow::Error::new(e).context(format!("cannot open topic {name} ({p})")),
    }
}

/// Opens topic `name`'s node `path`, checked first ([`check_node`]: a FIFO
/// or a regular file is refused without being opened, so nothing blocks),
/// with errors that say what they mean ([`open_error`]).
pub fn open_node(name: &str, path: &Path, access: Access) -> Result<Topic> {
    match check_node(path) {
        Ok(()) => {}
        Err(NodeError::Stat(e)) => return Err(open_error(e, name, path, access)),
        Err(e) => return Err(e.into_anyhow(path)),
    }
    let mut options = OpenOptions::new();
    match access {
        Access::Read => options.read(true).custom_flags(libc::O_NONBLOCK),
        Access::Write => options.write(true),
    };
    options
        .open(path)
        .map(Topic::from_file)
        .map_err(|e| open_error(e, name, path, access))
}

/// The oldest module ABI the tools work with: batch writes and the mapped
/// ring came with version 2, lossless readers with version 3, the writer
/// identity (and the 40-byte record header) with version 4, the bounded
/// lossless stall with version 5, line mode (`pubmsg`'s writes) with
/// version 6.
pub const MIN_ABI_VERSION: u32 = 6;

/// Checks that the module that filled in `info` speaks at least
/// [`MIN_ABI_VERSION`].
pub fn check_abi(info: &abi::Info) -> Result<(), AbiMismatch> {
    if info.abi_version >= MIN_ABI_VERSION {
        Ok(())
    } else {
        Err(AbiMismatch {
            found: info.abi_version,
            needed: MIN_ABI_VERSION,
        })
    }
}

/// Why [`check_node`] refused a path.
#[derive(Debug)]
pub enum NodeError {
    /// `stat` failed (`NotFound`, `PermissionDenied` on a directory...).
    Stat(io::Error),
    /// It is not a baf topic device.
    NotATopic(NotATopic),
    /// It is a character device, but the module is not loaded.
    ModuleNotLoaded,
}

impl NodeError {
    /// As an error for a program to return: the typed errors stay
    /// downcastable ([`crate::error::kind`] gives them their kinds).
    pub fn into_anyhow(self, path: &Path) -> anyhow::Error {
        match self {
            NodeError::Stat(e) => {
                anyhow::Error::new(e).context(format!("cannot open {}", path.display()))
            }
            NodeError::NotATopic(e) => anyhow::Error::new(e),
            NodeError::ModuleNotLoaded => anyhow::Error::new(ModuleNotLoaded),
        }
    }
}

/// What a file of type `ft` is, for a message; `None` for a character
/// device.
pub fn file_kind(ft: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_char_device() {
        None
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_file() {
        Some("a regular file")
    } else if ft.is_dir() {
        Some("a directory")
    } else if ft.is_socket() {
        Some("a socket")
    } else if ft.is_block_device() {
        Some("a block device")
    } else {
        Some("not a device")
    }
}

/// Decides whether a character device with major number `major` can be a
/// topic, given the majors of the baf class (`None`: the module is not
/// loaded).
pub fn check_major(path: &Path, major: u32, baf_majors: Option<&[u32]>) -> Result<(), NodeError> {
    match baf_majors {
        None => Err(NodeError::ModuleNotLoaded),
        // No device listed (none readable): the open file's IOC_INFO decides.
        Some(m) if m.is_empty() || m.contains(&major) => Ok(()),
        Some(m) => Err(NodeError::NotATopic(NotATopic {
            path: path.to_path_buf(),
            what: format!(
                "the character device of another driver (major {major}; baf devices have major {})",
                m.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        })),
    }
}

/// Checks, without opening it, that `path` can be a topic device: it
/// exists, is a character device, and its major number is one of the baf
/// class's (`/sys/class/baf/*/dev`). A FIFO is never opened, so this never
/// blocks. The open file's `IOC_INFO` is the final word.
pub fn check_node(path: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(NodeError::Stat)?;
    if let Some(what) = file_kind(meta.file_type()) {
        return Err(NodeError::NotATopic(NotATopic {
            path: path.to_path_buf(),
            what: what.to_string(),
        }));
    }
    let major = libc::major(meta.rdev());
    check_major(path, major, crate::sys::majors().as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn abi_check() {
        let mut info = abi::Info {
            abi_version: 2,
            ..abi::Info::default()
        };
        let e = check_abi(&info).unwrap_err();
        assert_eq!(
            e,
            AbiMismatch {
                found: 2,
                needed: 6
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("version 2") && msg.contains("fanout.ko") && !msg.contains('\n'));
        // A module without line mode, which pubmsg writes lines with.
        info.abi_version = 5;
        assert_eq!(check_abi(&info).unwrap_err().needed, 6);
        info.abi_version = abi::ABI_VERSION;
        assert!(check_abi(&info).is_ok());
    }

    /// A topic stand-in for batch writes: takes whole frames only, up to
    /// `take` of them per call, with `EINTR`s, then fails once `fail_after`
    /// frames were taken.
    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("baf-device-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn not_a_topic(path: &Path) -> String {
        match check_node(path) {
            Err(NodeError::NotATopic(e)) => e.to_string(),
            other => panic!("{}: {other:?}", path.display()),
        }
    }

    #[test]
    fn only_character_devices_pass_and_fifos_are_not_opened() {
        let dir = scratch("nodes");
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            not_a_topic(&file),
            format!(
                "{} is a regular file, not a baf topic device",
                file.display()
            )
        );
        // Opening a FIFO for writing would block: check_node only stats it.
        assert_eq!(
            not_a_topic(&fifo),
            format!("{} is a FIFO, not a baf topic device", fifo.display())
        );
        assert!(not_a_topic(&dir).contains("is a directory"));
        match check_node(&dir.join("missing")) {
            Err(NodeError::Stat(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
        // A character device passes the type check; whether it is the
        // module's is then the majors' question.
        if std::path::Path::new("/dev/null").exists() && !crate::sys::module_loaded() {
            assert!(matches!(
                check_node(Path::new("/dev/null")),
                Err(NodeError::ModuleNotLoaded)
            ));
        }
    }

    #[test]
    fn majors_decide_whose_device_it_is() {
        let p = Path::new("/dev/null");
        assert!(check_major(p, 250, Some(&[250])).is_ok());
        assert!(check_major(p, 250, Some(&[])).is_ok());
        assert!(matches!(
            check_major(p, 1, None),
            Err(NodeError::ModuleNotLoaded)
        ));
        match check_major(p, 1, Some(&[250, 251])) {
            Err(NodeError::NotATopic(e)) => assert_eq!(
                e.to_string(),
                "/dev/null is the character device of another driver (major 1; baf devices have major 250 or 251), not a baf topic device"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn node_errors_keep_their_types() {
        let p = Path::new("/x");
        let e = NodeError::ModuleNotLoaded.into_anyhow(p);
        assert_eq!(crate::error::kind(&e), Some(crate::error::Kind::NoModule));
        let e = NodeError::Stat(io::Error::from_raw_os_error(libc::ENOENT)).into_anyhow(p);
        assert_eq!(crate::error::kind(&e), None);
        assert_eq!(crate::error::errno(&e), Some(libc::ENOENT));
    }
}
