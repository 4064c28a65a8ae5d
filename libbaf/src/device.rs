//! A topic's device file, with the fanout ioctls as safe methods; the ABI
//! version check; and batch writes ([`Batch`], [`write_batch`]).

use crate::abi;
use anyhow::{Context, Result};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An open topic device.
pub struct Topic {
    file: File,
}

fn ioctl<T>(file: &File, request: u32, arg: *mut T) -> io::Result<()> {
    // SAFETY: `request` is one of the fanout ioctls, whose argument is a `T`
    // as declared in `abi.rs`; `arg` points to a live, properly aligned `T`
    // that the kernel may read and write for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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

    /// Waits until the topic has at least `n` lossless readers (ABI 3).
    /// `EAGAIN` on a non-blocking file while it has fewer; `ENODEV` once
    /// the topic is removed.
    pub fn wait_readers(&self, n: u32) -> io::Result<()> {
        let mut n = n;
        ioctl(&self.file, abi::IOC_WAIT_READERS, &mut n)
    }
}

/// The oldest module ABI the tools work with: batch writes and the mapped
/// ring came with version 2, lossless readers with version 3, the writer
/// identity (and the 40-byte record header) with version 4.
pub const MIN_ABI_VERSION: u32 = 4;

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
    /// downcastable ([`crate::cli::exit_code`] gives them their codes).
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
    check_major(path, major, crate::control::majors().as_deref())
}

/// Records framed for one batch `write()` on a file with
/// [`abi::FLAG_BATCH`]: each frame is a [`abi::RecordHeader`] with only
/// `len` set, the payload, and zero padding to [`abi::record_span`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    buf: Vec<u8>,
    records: usize,
    payload_bytes: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` of frames.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Bytes the frame of a `len`-byte payload takes.
    pub const fn frame_len(len: usize) -> usize {
        abi::record_span(len)
    }

    /// Appends one record. An empty payload, or one longer than a header
    /// can describe, is refused (`InvalidInput`); the topic's own limit is
    /// the caller's to respect (the kernel refuses the frame with
    /// `EMSGSIZE`).
    pub fn push(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a record must have 1 to 4294967295 bytes",
                )
            })?;
        let header = abi::RecordHeader {
            len,
            ..abi::RecordHeader::default()
        };
        let start = self.buf.len();
        self.buf.extend_from_slice(&header.to_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(start + abi::record_span(payload.len()), 0);
        self.records += 1;
        self.payload_bytes += payload.len();
        Ok(())
    }

    /// The frames, ready for `write()`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes of frames.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Records in the batch.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Payload bytes in the batch.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.records = 0;
        self.payload_bytes = 0;
    }
}

/// Writes the framed batch `frames` (see [`Batch`]) to a topic file with
/// [`abi::FLAG_BATCH`] set, all of it.
///
/// The kernel may publish only a prefix of the frames: a signal ends a
/// batch early at a frame boundary, and a bad frame ends it before that
/// frame. The write is then retried from where it stopped (and an `EINTR`
/// before anything was published is retried too), so a bad frame gets its
/// errno on the retry. An error after part of the batch was published says
/// how much was.
pub fn write_batch<W: Write>(mut out: W, frames: &[u8]) -> Result<()> {
    let total = records(frames).count();
    let mut done = 0usize;
    let mut done_records = 0usize;
    while done < frames.len() {
        let rest = frames.get(done..).unwrap_or_default();
        match out.write(rest) {
            Ok(0) => {
                return Err(partial(
                    io::Error::from(io::ErrorKind::WriteZero),
                    done_records,
                    total,
                ))
            }
            Ok(n) => {
                let n = n.min(rest.len());
                // The kernel stops only at frame boundaries.
                let mut walked = 0usize;
                let mut count = 0usize;
                for r in records(rest) {
                    if walked >= n {
                        break;
                    }
                    walked += abi::record_span(r.payload.len());
                    count += 1;
                }
                if walked != n {
                    return Err(partial(
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("the topic took {n} bytes of a batch, which is not a whole number of frames"),
                        ),
                        done_records,
                        total,
                    ));
                }
                done += n;
                done_records += count;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(partial(e, done_records, total)),
        }
    }
    Ok(())
}

/// `e`, with how much of the batch was published when there was some.
fn partial(e: io::Error, done: usize, total: usize) -> anyhow::Error {
    let e = anyhow::Error::new(e);
    if done == 0 {
        e
    } else {
        e.context(format!(
            "the topic took {done} of the {total} records of a batch, then refused the rest"
        ))
    }
}

/// One record of a record-mode read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The kernel-filled header.
    pub header: abi::RecordHeader,
    /// The payload.
    pub payload: &'a [u8],
}

/// Splits the bytes of one record-mode `read()` into records. Stops at the
/// first incomplete record (which the kernel never returns).
pub fn records(mut buf: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        let header = abi::RecordHeader::from_bytes(buf)?;
        let len = header.len as usize;
        let payload = buf.get(abi::RECORD_HEADER_SIZE..abi::RECORD_HEADER_SIZE + len)?;
        buf = buf.get(abi::record_span(len)..).unwrap_or_default();
        Some(Record { header, payload })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_are_record_mode_records() {
        let mut b = Batch::new();
        assert!(b.is_empty());
        b.push(b"hello").unwrap();
        b.push(&[7u8; 8]).unwrap();
        b.push(b"x").unwrap();
        assert_eq!(b.records(), 3);
        assert_eq!(b.payload_bytes(), 14);
        assert_eq!(b.len(), 48 + 48 + 48);
        let bytes = b.as_bytes();
        assert_eq!(&bytes[..4], &5u32.to_ne_bytes());
        assert!(bytes[4..40].iter().all(|&x| x == 0), "flags and the rest 0");
        assert_eq!(&bytes[40..45], b"hello");
        assert!(bytes[45..48].iter().all(|&x| x == 0), "zero padding");
        let recs: Vec<_> = records(bytes).collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].payload, &[7u8; 8]);
        for r in &recs {
            let (len, span) = abi::check_frame(&r.header, bytes.len(), 100).unwrap();
            assert_eq!((len, span), (r.payload.len(), Batch::frame_len(len)));
        }
        b.clear();
        assert!(b.is_empty() && b.as_bytes().is_empty());
        assert_eq!(b.push(b"").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

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
                needed: 4
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("version 2") && msg.contains("fanout.ko") && !msg.contains('\n'));
        info.abi_version = abi::ABI_VERSION;
        assert!(check_abi(&info).is_ok());
    }

    /// A topic stand-in for batch writes: takes whole frames only, up to
    /// `take` of them per call, with `EINTR`s, then fails once `fail_after`
    /// frames were taken.
    struct Device {
        got: Vec<u8>,
        take: usize,
        calls: usize,
        fail_after: Option<usize>,
        taken: usize,
    }

    impl Write for &mut Device {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            if self.fail_after == Some(self.taken) {
                return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
            }
            let mut n = 0;
            for r in records(buf).take(self.take) {
                if self.fail_after == Some(self.taken) {
                    break;
                }
                n += abi::record_span(r.payload.len());
                self.taken += 1;
            }
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn device(take: usize, fail_after: Option<usize>) -> Device {
        Device {
            got: Vec::new(),
            take,
            calls: 0,
            fail_after,
            taken: 0,
        }
    }

    #[test]
    fn batch_write_errors_say_how_far_it_got() {
        let mut b = Batch::new();
        for i in 0..10u8 {
            b.push(&[i; 3]).unwrap();
        }
        let mut d = device(4, Some(6));
        let e = write_batch(&mut d, b.as_bytes()).unwrap_err();
        assert_eq!(crate::cli::errno(&e), Some(libc::EMSGSIZE));
        assert!(
            crate::cli::message(&e).starts_with("the topic took 6 of the 10 records"),
            "{}",
            crate::cli::message(&e)
        );
        assert_eq!(d.got, b.as_bytes()[..6 * abi::record_span(3)]);
        // Refused at once: the plain errno.
        let mut d = device(4, Some(0));
        let e = write_batch(&mut d, b.as_bytes()).unwrap_err();
        assert_eq!(crate::cli::errno(&e), Some(libc::EMSGSIZE));
        assert!(!crate::cli::message(&e).contains("records"));
    }

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
        if std::path::Path::new("/dev/null").exists() && !crate::control::module_loaded() {
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
        assert_eq!(crate::cli::class(&e), Some(crate::cli::Failure::NoModule));
        let e = NodeError::Stat(io::Error::from_raw_os_error(libc::ENOENT)).into_anyhow(p);
        assert_eq!(crate::cli::class(&e), None);
        assert_eq!(crate::cli::errno(&e), Some(libc::ENOENT));
    }

    #[test]
    fn a_short_count_inside_a_frame_is_an_error() {
        struct Odd;
        impl Write for Odd {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len().min(12))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut b = Batch::new();
        b.push(b"abc").unwrap();
        let e = write_batch(Odd, b.as_bytes()).unwrap_err();
        assert!(crate::cli::message(&e).contains("not a whole number of frames"));
    }

    proptest! {
        /// However the device splits a batch, it gets every frame once, in
        /// order.
        #[test]
        fn short_writes_resume_at_the_boundary(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..50), 0..40),
            take in 1usize..5,
        ) {
            let mut b = Batch::new();
            for p in &payloads {
                b.push(p).unwrap();
            }
            let mut d = device(take, None);
            write_batch(&mut d, b.as_bytes()).unwrap();
            prop_assert_eq!(&d.got, &b.as_bytes().to_vec());
            let back: Vec<Vec<u8>> = records(&d.got).map(|r| r.payload.to_vec()).collect();
            prop_assert_eq!(back, payloads);
        }
    }
}
