//! The fuzz's ioctl thread: random ioctls, reads and writes with bad
//! pointers on topic files and `/dev/baf-control`, which must give the
//! ABI's errnos and change nothing.

use super::*;

/// Memory for bad pointers: a read-only page, an inaccessible one, and a
/// writable page followed by an inaccessible one.
struct Pages {
    ro: usize,
    none: usize,
    rw: usize,
    /// The end of `rw`: the next page is inaccessible.
    rw_end: usize,
    page: usize,
}

impl Pages {
    fn new(rng: &mut Rng) -> Result<Self> {
        let page = page_size();
        // Never unmapped: the process keeps it to the end, so its addresses
        // are never reused.
        let base = anon_map(4 * page)?;
        let base = base as usize;
        // Bytes with the high bit set: never a valid topic name, so no
        // random buffer can make a topic the cleanup does not know.
        // SAFETY: the first page is ours and writable.
        let ro = unsafe { std::slice::from_raw_parts_mut(base as *mut u8, page) };
        for b in ro.iter_mut() {
            *b = rng.next() as u8 | 0x80;
        }
        // SAFETY: our own pages.
        let ok = unsafe {
            libc::mprotect(base as *mut _, page, libc::PROT_READ) == 0
                && libc::mprotect((base + page) as *mut _, page, libc::PROT_NONE) == 0
                && libc::mprotect((base + 3 * page) as *mut _, page, libc::PROT_NONE) == 0
        };
        ensure!(ok, "mprotect: {}", io::Error::last_os_error());
        Ok(Self {
            ro: base,
            none: base + page,
            rw: base + 2 * page,
            rw_end: base + 3 * page,
            page,
        })
    }

    /// Fills the writable page with random bytes (`high`: bytes that never
    /// make a topic name).
    fn scramble(&self, rng: &mut Rng, high: bool) {
        // SAFETY: the writable page is ours; no reference to it is kept.
        let rw = unsafe { std::slice::from_raw_parts_mut(self.rw as *mut u8, self.page) };
        for b in rw.iter_mut() {
            *b = rng.next() as u8 | if high { 0x80 } else { 0 };
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ptr {
    /// Null and the low pages no process can map.
    Low,
    /// Kernel and non-canonical addresses.
    Kernel,
    /// An inaccessible page.
    NoAccess,
    /// Straddles the end of a writable page: too few bytes for the struct.
    Straddle,
    /// A read-only page.
    ReadOnly,
    /// Random bytes in writable memory.
    Random,
    /// A plausible struct in writable memory.
    Plausible,
}

impl Ptr {
    fn bad(self) -> bool {
        matches!(self, Ptr::Low | Ptr::Kernel | Ptr::NoAccess | Ptr::Straddle)
    }
}

const TOPIC_IOCS: [(u32, usize); 8] = [
    (abi::IOC_SET_FLAGS, 4),
    (abi::IOC_SET_LOWAT, 4),
    (abi::IOC_SEEK, size_of::<abi::Seek>()),
    (abi::IOC_INFO, size_of::<abi::Info>()),
    (abi::IOC_INFO_V2, abi::INFO_V2_SIZE),
    (abi::IOC_WAIT_READERS, 4),
    (abi::IOC_MAPPED_SYNC, size_of::<abi::MappedSync>()),
    (abi::IOC_CLAIM_PUBLISHER, 0),
];
const CONTROL_IOCS: [(u32, usize); 3] = [
    (abi::IOC_CREATE, size_of::<abi::TopicSpec>()),
    (abi::IOC_CREATE_V2, abi::TOPIC_SPEC_V2_SIZE),
    (abi::IOC_REMOVE, size_of::<abi::TopicName>()),
];

fn known_size(cmd: u32) -> Option<usize> {
    TOPIC_IOCS
        .iter()
        .chain(CONTROL_IOCS.iter())
        .find(|(c, _)| *c == cmd)
        .map(|&(_, s)| s)
}

/// Types of ioctl numbers the VFS handles itself for any file (`FIONBIO`,
/// `FIFREEZE`, `FIGETBSZ`, `FS_IOC_*`, `FICLONE`...): never sent at random.
const VFS_TYPES: [u32; 6] = [0x00, 0x15, 0x54, 0x58, 0x66, 0x94];

fn random_cmd(rng: &mut Rng, control: bool) -> u32 {
    match rng.below(10) {
        0..=3 => {
            let list: &[(u32, usize)] = if control == rng.chance(80) {
                &CONTROL_IOCS
            } else {
                &TOPIC_IOCS
            };
            list[rng.below(list.len() as u64) as usize].0
        }
        4..=6 => {
            let dir = rng.below(4) as u32;
            let nr = rng.below(0x20) as u32;
            let most = if rng.chance(50) { 128 } else { 0x4000 };
            abi::ioc(dir, nr, rng.below(most) as usize)
        }
        _ => loop {
            let c = rng.next() as u32;
            if !VFS_TYPES.contains(&((c >> 8) & 0xff)) && (c >> 8) & 0xff != abi::IOC_TYPE {
                break c;
            }
        },
    }
}

/// Structured creates and removes under fuzz/r*: any outcome the ABI
/// lists, and the cleanup knows every name.
pub(crate) const FUZZ_NAMES: [&str; 4] = ["fuzz/r0", "fuzz/r1", "fuzz/r1/x", "fuzz/r2"];

fn plausible(rng: &mut Rng, cmd: u32, info: &abi::Info, buf: usize) {
    let poke = |off: usize, bytes: &[u8]| {
        // SAFETY: `buf` is inside the writable page with room for the
        // largest struct (checked by the caller's offset choice).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (buf + off) as *mut u8, bytes.len())
        };
    };
    let near = |rng: &mut Rng| match rng.below(4) {
        0 => info.next_seq.saturating_sub(rng.below(50)),
        1 => info.cursor_seq + rng.below(3),
        2 => info.oldest_seq,
        _ => rng.next(),
    };
    match cmd {
        abi::IOC_SET_FLAGS => {
            let f = rng.below(16) as u32
                | if rng.chance(10) {
                    1 << rng.below(32)
                } else {
                    0
                };
            poke(0, &f.to_ne_bytes());
        }
        abi::IOC_SEEK => {
            let w = if rng.chance(90) {
                rng.below(4) as u32
            } else {
                rng.next() as u32
            };
            poke(0, &w.to_ne_bytes());
            poke(4, &(if rng.chance(90) { 0u32 } else { 1 }).to_ne_bytes());
            poke(8, &near(rng).to_ne_bytes());
        }
        abi::IOC_WAIT_READERS => poke(0, &(rng.below(3) as u32).to_ne_bytes()),
        abi::IOC_SET_LOWAT => {
            let n = match rng.below(3) {
                0 => rng.below(2) as u32,
                1 => rng.below(1 << 21) as u32,
                _ => rng.next() as u32,
            };
            poke(0, &n.to_ne_bytes());
        }
        abi::IOC_MAPPED_SYNC => {
            poke(0, &near(rng).to_ne_bytes());
            poke(8, &rng.below(4).to_ne_bytes());
        }
        abi::IOC_CREATE | abi::IOC_CREATE_V2 => {
            let name = FUZZ_NAMES[rng.below(FUZZ_NAMES.len() as u64) as usize];
            let spec = abi::TopicSpec {
                name: abi::TopicName::new(name.as_bytes()).unwrap_or(abi::TopicName {
                    bytes: [0; abi::NAME_MAX + 8],
                }),
                ring_size: match rng.below(7) {
                    0 => 0,
                    1 => 16384,
                    2 => 65536,
                    3 => 1000,
                    4 => 1 << 40,
                    5 => 8192,
                    _ => rng.next(),
                },
                record_max: match rng.below(4) {
                    0 => 0,
                    1 => 4096,
                    _ => rng.next() as u32 % 70000,
                },
                mode: if rng.chance(80) {
                    0o640
                } else {
                    rng.next() as u32
                },
                uid: if rng.chance(80) { 0 } else { rng.next() as u32 },
                gid: if rng.chance(80) { 0 } else { rng.next() as u32 },
                flags: rng.below(3) as u32,
                stall_ms: if rng.chance(70) {
                    0
                } else {
                    rng.next() as u32 % 4_000_000
                },
            };
            // SAFETY: TopicSpec is repr(C) plain data without padding.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&spec as *const abi::TopicSpec).cast::<u8>(),
                    size_of::<abi::TopicSpec>(),
                )
            };
            poke(0, bytes);
        }
        abi::IOC_REMOVE => {
            let name = match rng.below(6) {
                0 => "fanout3",
                1 => "baf-control",
                2 => "fuzz/none",
                k => FUZZ_NAMES[k as usize % FUZZ_NAMES.len()],
            };
            let n = abi::TopicName::new(name.as_bytes())
                .map(|n| n.bytes)
                .unwrap_or([0; 72]);
            poke(0, &n);
        }
        _ => {}
    }
}

struct FuzzFd {
    file: File,
    control: bool,
    read: bool,
    write: bool,
    /// On the static topic: MAPPED_SYNC loss it may legitimately add.
    on_static: bool,
}

fn raw_ioctl(fd: i32, cmd: u32, arg: usize) -> (isize, i32) {
    // SAFETY: a fuzzing ioctl: `arg` is a number the kernel must check; it
    // points either nowhere valid or into our fuzz pages, which nothing
    // else in this process uses.
    let rc = unsafe { libc::ioctl(fd, cmd as _, arg) };
    let e = if rc < 0 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    (rc as isize, e)
}

/// Random ioctls (and reads and writes) with random numbers and bad
/// pointers on topic files (a fuzz topic and the static topic) and on the
/// control device. Every outcome is checked against the ABI; the static
/// topic must end up unchanged.
pub(crate) fn ioctl_fuzz(stop: &AtomicBool, static_topic: &Path, mut rng: Rng) -> Result<String> {
    let pages = Pages::new(&mut rng)?;
    let fuzz_path = fresh_topic("fuzz/ioctl", 16384, true)?;
    let static_name = static_topic
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let records_before = sysfs_u64(&static_name, "records")?;
    let lost_before = sysfs_u64(&static_name, "lost")?;
    let readers_before = sysfs_u64(&static_name, "readers")?;
    let mut allowance = 0u64;
    let mut calls = 0u64;
    let mut outcomes: std::collections::BTreeMap<i32, u64> = Default::default();
    let mut fds: Vec<FuzzFd> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if fds.is_empty() || rng.chance(2) {
            fds.clear();
            for (path, on_static) in [(&fuzz_path, false), (&static_topic.to_path_buf(), true)] {
                for (r, w) in [(true, false), (false, true), (true, true)] {
                    fds.push(FuzzFd {
                        file: open_nb(path, r, w)
                            .with_context(|| format!("open {}", path.display()))?,
                        control: false,
                        read: r,
                        write: w,
                        on_static,
                    });
                }
            }
            for w in [false, true] {
                fds.push(FuzzFd {
                    file: open_nb(&control::control_path(), true, w)?,
                    control: true,
                    read: true,
                    write: w,
                    on_static: false,
                });
            }
        }
        let f = &fds[rng.below(fds.len() as u64) as usize];
        let fd = f.file.as_raw_fd();
        calls += 1;
        if calls % 64 == 0 {
            // Leave the two CPUs to the stress now and then.
            thread::sleep(Duration::from_millis(1));
        }
        if !f.control && rng.chance(15) {
            // A read or write with a random buffer.
            fuzz_rw(f, &pages, &mut rng)?;
            continue;
        }
        let cmd = random_cmd(&mut rng, f.control);
        let size = known_size(cmd);
        let kind = match rng.below(7) {
            0 => Ptr::Low,
            1 => Ptr::Kernel,
            2 => Ptr::NoAccess,
            3 => Ptr::Straddle,
            4 => Ptr::ReadOnly,
            5 => Ptr::Random,
            _ => Ptr::Plausible,
        };
        let kind = if kind == Ptr::Straddle && size.unwrap_or(0) < 2 {
            Ptr::NoAccess
        } else {
            kind
        };
        let info_before = if f.control {
            None
        } else {
            Topic::from_file(f.file.try_clone()?).info().ok()
        };
        let arg = match kind {
            Ptr::Low => [0usize, 8, 0x1000, 0xfff0][rng.below(4) as usize],
            Ptr::Kernel => [
                0xffff_8880_0000_0000usize,
                0xffff_ffff_ff60_0000,
                0x8000_0000_0000_0000,
                usize::MAX - 7,
            ][rng.below(4) as usize],
            Ptr::NoAccess => pages.none + rng.below(pages.page as u64) as usize,
            Ptr::Straddle => pages.rw_end - rng.range(1, size.unwrap_or(2) as u64 - 1) as usize,
            Ptr::ReadOnly => pages.ro + rng.below(256) as usize,
            Ptr::Random | Ptr::Plausible => {
                pages.scramble(&mut rng, f.control);
                let at = pages.rw + rng.below(256) as usize;
                if kind == Ptr::Plausible {
                    let info = info_before.unwrap_or_default();
                    plausible(&mut rng, cmd, &info, at);
                }
                at
            }
        };
        let (rc, e) = raw_ioctl(fd, cmd, arg);
        *outcomes.entry(e).or_default() += 1;
        let what = || {
            format!(
                "ioctl {cmd:#010x} on a {} file (read {}, write {}) with a {kind:?} pointer {arg:#x}: rc {rc}, {}",
                if f.control { "control" } else if f.on_static { "static topic" } else { "topic" },
                f.read,
                f.write,
                if rc < 0 { ename(e) } else { "ok".into() }
            )
        };
        // The outcome the ABI allows.
        if f.control && !f.write {
            ensure!(
                rc == -1 && e == libc::EBADF,
                "{}: want EBADF (read-only control file)",
                what()
            );
            continue;
        }
        if size.is_none() {
            ensure!(rc == -1 && e == libc::ENOTTY, "{}: want ENOTTY", what());
            continue;
        }
        let is_control_cmd = CONTROL_IOCS.iter().any(|(c, _)| *c == cmd);
        if is_control_cmd != f.control {
            ensure!(
                rc == -1 && e == libc::ENOTTY,
                "{}: want ENOTTY (not this device's)",
                what()
            );
            continue;
        }
        if cmd == abi::IOC_CLAIM_PUBLISHER {
            if f.write {
                ensure!(rc == 0 || e == libc::EBUSY, "{}", what());
            } else {
                ensure!(rc == -1 && e == libc::EBADF, "{}: want EBADF", what());
            }
            continue;
        }
        let writes_back = matches!(cmd, abi::IOC_SEEK | abi::IOC_INFO | abi::IOC_INFO_V2);
        if kind.bad() || (kind == Ptr::ReadOnly && matches!(cmd, abi::IOC_INFO | abi::IOC_INFO_V2))
        {
            ensure!(rc == -1 && e == libc::EFAULT, "{}: want EFAULT", what());
        } else if kind == Ptr::ReadOnly && writes_back {
            ensure!(
                rc == -1 && matches!(e, libc::EFAULT | libc::EINVAL | libc::ERANGE),
                "{}: want EFAULT, EINVAL or ERANGE",
                what()
            );
        } else if cmd == abi::IOC_SET_LOWAT {
            // Any value is taken (clamped to 1..=half the ring, which it
            // returns) by a reader; a file that cannot read gets EBADF.
            let half = info_before.map_or(u64::MAX, |i| i.ring_size / 2);
            if f.read {
                ensure!(
                    rc >= 1 && rc as u64 <= half,
                    "{}: want the threshold in effect",
                    what()
                );
            } else {
                ensure!(rc == -1 && e == libc::EBADF, "{}: want EBADF", what());
            }
        } else if f.control {
            let ok = if kind != Ptr::Plausible {
                rc == -1 && matches!(e, libc::EINVAL | libc::ENAMETOOLONG)
            } else {
                rc == 0
                    || rc == 1
                    || matches!(
                        e,
                        libc::EINVAL
                            | libc::ENAMETOOLONG
                            | libc::EEXIST
                            | libc::EPERM
                            | libc::ENOENT
                            | libc::ENOSPC
                            | libc::ENOMEM
                    )
            };
            ensure!(ok, "{}", what());
            if rc == 0 && cmd == abi::IOC_REMOVE && kind == Ptr::Plausible {
                // SAFETY: reads back the name we put at `arg`.
                let n = unsafe { std::slice::from_raw_parts(arg as *const u8, 72) };
                let name = String::from_utf8_lossy(n.split(|&b| b == 0).next().unwrap_or_default())
                    .into_owned();
                ensure!(
                    FUZZ_NAMES.contains(&name.as_str()),
                    "{}: removed {name:?}",
                    what()
                );
            }
        } else {
            let ok = rc == 0
                || (rc == 1 && cmd == abi::IOC_MAPPED_SYNC)
                || (rc == -1
                    && matches!(
                        e,
                        libc::EINVAL
                            | libc::ERANGE
                            | libc::EPERM
                            | libc::EBADF
                            | libc::EBUSY
                            | libc::EAGAIN
                            | libc::EPIPE
                    ));
            ensure!(ok, "{}", what());
            if cmd == abi::IOC_INFO && rc == 0 {
                // SAFETY: the kernel just wrote an Info at `arg`.
                let v = unsafe { std::ptr::read_unaligned(arg as *const abi::Info) };
                ensure!(
                    v.abi_version == abi::ABI_VERSION && v.ring_size.is_power_of_two(),
                    "{}: {v:?}",
                    what()
                );
            }
            if cmd == abi::IOC_MAPPED_SYNC && rc >= 0 && f.on_static {
                // SAFETY: reads back the MappedSync at `arg`.
                let m = unsafe { std::ptr::read_unaligned(arg as *const abi::MappedSync) };
                allowance += m.lost;
            }
        }
        // A failed ioctl changes nothing this file can see.
        if rc < 0 && !f.control {
            if let (Some(b), Ok(a)) = (info_before, Topic::from_file(f.file.try_clone()?).info()) {
                ensure!(
                    a.cursor_seq == b.cursor_seq && a.flags == b.flags && a.lost == b.lost,
                    "{}: the failed call changed the file: {b:?} -> {a:?}",
                    what()
                );
            }
        }
    }
    drop(fds);
    // The fuzz topic still works; the static topic is unchanged.
    let r = open_nb(&fuzz_path, true, false)?;
    put(&writer(&fuzz_path)?, b"alive")?;
    let got = get(&r, 64)?;
    ensure!(
        got == b"alive",
        "fuzz/ioctl after the fuzzing: read {got:?}"
    );
    drop(r);
    control::remove("fuzz/ioctl")?;
    for n in FUZZ_NAMES.iter().rev() {
        let _ = control::remove(n);
    }
    for n in FUZZ_NAMES {
        ensure!(!is_topic(n), "{n} is left over");
    }
    let records_after = sysfs_u64(&static_name, "records")?;
    let lost_after = sysfs_u64(&static_name, "lost")?;
    ensure!(
        records_after == records_before,
        "{static_name}: {} records appeared (no write was made to it)",
        records_after - records_before
    );
    ensure!(
        lost_after <= lost_before + allowance,
        "{static_name}: its loss count grew by {} though the accepted syncs reported {allowance}",
        lost_after - lost_before
    );
    let readers_after = sysfs_u64(&static_name, "readers")?;
    ensure!(
        readers_after == readers_before,
        "{static_name}: {readers_after} readers after every fuzz file was closed, {readers_before} before"
    );
    let mut by: Vec<String> = outcomes
        .iter()
        .map(|(e, n)| format!("{}: {n}", if *e == 0 { "ok".into() } else { ename(*e) }))
        .collect();
    by.truncate(12);
    Ok(format!("{calls} calls; {}", by.join(", ")))
}

/// A read or write on a fuzz file with a random buffer and length.
fn fuzz_rw(f: &FuzzFd, pages: &Pages, rng: &mut Rng) -> Result<()> {
    let fd = f.file.as_raw_fd();
    let (ptr, len, bad) = match rng.below(5) {
        0 => (0usize, rng.range(1, 100) as usize, true),
        1 => (pages.none, rng.range(1, 4096) as usize, true),
        2 => {
            let k = rng.range(1, 64) as usize;
            (pages.rw_end - k, k + rng.range(1, 64) as usize, false)
        }
        _ => {
            pages.scramble(rng, false);
            (pages.rw, rng.range(0, pages.page as u64) as usize, false)
        }
    };
    let write = f.write && (!f.read || rng.chance(50)) && !f.on_static;
    if f.on_static && !f.read {
        return Ok(());
    }
    // SAFETY: fuzzing: the kernel checks `ptr`; it points nowhere valid or
    // into our fuzz pages.
    let rc = unsafe {
        if write {
            libc::write(fd, ptr as *const _, len)
        } else {
            libc::read(fd, ptr as *mut _, len)
        }
    };
    let e = if rc < 0 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    let ok = if rc >= 0 {
        rc as usize <= len && !(bad && rc > 0)
    } else if write {
        matches!(
            e,
            libc::EFAULT | libc::EAGAIN | libc::EINVAL | libc::EMSGSIZE | libc::EBADMSG
        )
    } else {
        matches!(
            e,
            libc::EFAULT | libc::EAGAIN | libc::EMSGSIZE | libc::EPIPE
        )
    };
    ensure!(
        ok,
        "{} of {len} bytes at {ptr:#x} ({}): rc {rc}, {}",
        if write { "write" } else { "read" },
        if bad { "bad" } else { "partly or fully valid" },
        ename(e)
    );
    Ok(())
}
