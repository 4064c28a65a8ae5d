//! VM tests of the writer identity in record headers (ABI 4,
//! `kernel/ABI.md`, "Record header"), and of the 32-byte ABI 3 headers that
//! files without `FLAG_WRITER_ID` still read and write.

use super::*;

/// `pidfd_open(pid)`, then the pidfd's inode number (the pidfs inode of the
/// process), which is what the kernel stamps as `writer`.
fn pidfd_ino(pid: i32) -> io::Result<u64> {
    // SAFETY: pidfd_open takes a pid and flags; no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = fd as i32;
    // SAFETY: an all-zero `stat` is a valid value for fstat to fill in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is the pidfd just opened; `st` is a live stat buffer.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the pidfd we own.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(err);
    }
    Ok(st.st_ino)
}

/// `struct clone_args` up to `set_tid_size` (`CLONE_ARGS_SIZE_VER1`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// Forks a child with the pids `tids` (innermost pid namespace first), as
/// `fork()` does: 0 in the child, its pid (as the caller sees it) in the
/// caller, -1 on error. Needs root; the pids must be free.
///
/// # Safety
///
/// As `fork()`: in a multi-threaded caller, the child may only make
/// async-signal-safe calls.
unsafe fn fork_with_pid(tids: &[i32]) -> i32 {
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: tids.len() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a live, fully initialized clone_args of the size
    // passed; with no stack given, clone3 returns twice like fork (the
    // caller's contract covers what the child may do).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    r as i32
}

/// A child that waits until the parent writes a byte to (or closes) the
/// pipe `fds`, then exits 0. Returns its pid.
///
/// # Safety
///
/// As `fork()`.
unsafe fn parked_child(fds: [i32; 2], tids: Option<&[i32]>) -> i32 {
    // SAFETY: the caller's contract.
    let pid = unsafe {
        match tids {
            Some(t) => fork_with_pid(t),
            None => libc::fork(),
        }
    };
    if pid == 0 {
        // SAFETY: raw syscalls in the child, then _exit.
        unsafe {
            libc::close(fds[1]);
            let mut b = [0u8; 1];
            libc::read(fds[0], b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    pid
}

/// Releases and reaps a child made by [`parked_child`].
fn release(fds: [i32; 2], pid: i32) {
    // SAFETY: our pipe's ends and our own child.
    unsafe {
        libc::close(fds[1]);
        libc::close(fds[0]);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
}

/// A child that writes `payload` to `path` and sends its own pidfd inode
/// number over a pipe, then exits; returns (pid, inode) once it is reaped.
fn write_from_child(path: &Path, payload: &[u8]) -> Result<(i32, u64)> {
    let cpath = c_path(path)?;
    let fds = pipe()?;
    // SAFETY: the child makes raw syscalls (and pidfd_ino's, which are
    // syscalls too) and exits.
    let child = unsafe { libc::fork() };
    ensure!(child >= 0, "fork: {}", io::Error::last_os_error());
    if child == 0 {
        // SAFETY: raw syscalls in the forked child.
        unsafe {
            let fd = libc::open(cpath.as_ptr(), libc::O_WRONLY);
            let ino = pidfd_ino(libc::getpid()).unwrap_or(0);
            let ok = fd >= 0
                && libc::write(fd, payload.as_ptr().cast(), payload.len())
                    == payload.len() as isize;
            let b = ino.to_ne_bytes();
            libc::write(fds[1], b.as_ptr().cast(), b.len());
            libc::_exit(if ok && ino != 0 { 0 } else { 1 });
        }
    }
    let mut b = [0u8; 8];
    let mut st = 0;
    // SAFETY: reading our pipe into `b`, reaping our child, closing our fds.
    unsafe {
        libc::read(fds[0], b.as_mut_ptr().cast(), 8);
        libc::waitpid(child, &mut st, 0);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    ensure!(st == 0, "the writing child failed (status {st:#x})");
    Ok((child, u64::from_ne_bytes(b)))
}

pub(crate) fn writer_is_the_pidfd_inode(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    r.seek(abi::SEEK_NOW, 0)?;
    let info = r.info()?;
    ensure!(
        info.header_size as usize == abi::RECORD_HEADER_SIZE
            && info.flags & abi::FLAG_WRITER_ID != 0,
        "libbaf's record mode must read 40-byte headers: {info:?}"
    );
    let me = pidfd_ino(std::process::id() as i32).context("pidfd_open(self)")?;
    let w = writer(&cx.a)?;
    put(&w, b"from the main thread")?;
    let w2 = w.try_clone()?;
    thread::spawn(move || put(&w2, b"from another thread"))
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    let (child, child_ino) = write_from_child(&cx.a, b"from a child")?;
    // A live writer: its pidfd, opened by a reader now, names the writer.
    let fds = pipe()?;
    // SAFETY: the child only blocks on the pipe and exits.
    let live = unsafe { parked_child(fds, None) };
    ensure!(live > 0, "fork");
    let live_ino = pidfd_ino(live);
    release(fds, live);
    let recs = drain(&r)?;
    ensure!(recs.len() == 3, "{} records", recs.len());
    let want = [
        (me, std::process::id()),
        (me, std::process::id()),
        (child_ino, child as u32),
    ];
    for (k, ((h, p), (ino, pid))) in recs.iter().zip(want).enumerate() {
        ensure!(
            h.writer == ino && h.pid == pid,
            "record {k} ({:?}): writer {} pid {}, want {ino} {pid}",
            String::from_utf8_lossy(p),
            h.writer,
            h.pid
        );
    }
    ensure!(me != 0 && child_ino != me, "inodes {me} {child_ino}");
    ensure!(
        live_ino.as_ref().is_ok_and(|&i| i != child_ino && i != me),
        "another process's pidfd inode: {live_ino:?}"
    );
    Ok(())
}

pub(crate) fn a_reused_pid_is_told_apart(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    r.seek(abi::SEEK_NOW, 0)?;
    let (old, old_ino) = write_from_child(&cx.a, b"from a process that exited")?;
    // A new process gets the exited writer's pid.
    let fds = pipe()?;
    // SAFETY: the child only blocks on the pipe and exits.
    let new = unsafe { parked_child(fds, Some(&[old])) };
    let new_ino = pidfd_ino(new);
    release(fds, new);
    ensure!(
        new == old,
        "clone3 with set_tid [{old}] gave pid {new}: {}",
        io::Error::last_os_error()
    );
    let new_ino = new_ino.context("pidfd_open of the new process")?;
    let recs = drain(&r)?;
    let (h, _) = recs.first().context("no record")?;
    ensure!(
        h.pid == old as u32 && h.writer == old_ino && h.writer != new_ino,
        "pid {} writer {}: the old writer was {old_ino}, pid {old} now names {new_ino}",
        h.pid,
        h.writer
    );
    Ok(())
}

/// In a child pid namespace, a record's pid is translated when it is read;
/// once the writer has exited and its pid is reused, the reader must get
/// pid 0, not the new process's pid.
pub(crate) fn a_reused_pid_reads_as_0_in_a_namespace(cx: &Ctx) -> Result<()> {
    let path = c_path(&cx.a)?;
    // SAFETY: the child makes raw syscalls and exits (it is the only
    // thread of its process after fork, and only forks again).
    let helper = unsafe { libc::fork() };
    ensure!(helper >= 0, "fork");
    if helper == 0 {
        // SAFETY: raw syscalls; every exit code names a failed step.
        unsafe {
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                libc::_exit(10);
            }
            let init = libc::fork();
            if init == 0 {
                libc::_exit(reused_pid_in_namespace(&path));
            }
            let mut st = 0;
            libc::waitpid(init, &mut st, 0);
            libc::_exit(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                11
            });
        }
    }
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(helper, &mut st, 0) };
    let code = if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        -1
    };
    ensure!(
        code == 0,
        "in a new pid namespace: {}",
        match code {
            10 => "unshare failed",
            11 => "its init died",
            12 => "open or ioctl failed",
            13 => "fork of the writer failed",
            14 => "the writer failed",
            15 => "clone3 with set_tid did not reuse the writer's pid",
            16 => "no record read",
            17 => "the live writer's record did not show its pid (translation broken)",
            18 => "the exited writer's record shows the pid of the process that reuses it",
            _ => "failed",
        }
    );
    Ok(())
}

/// Runs as pid 1 of a new pid namespace; returns an exit code (0: passed).
///
/// # Safety
///
/// Called in a forked child; makes only raw syscalls.
unsafe fn reused_pid_in_namespace(path: &std::ffi::CStr) -> i32 {
    // SAFETY: raw syscalls on live buffers; see each step.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
        let flags: u32 = abi::FLAG_RECORD | abi::FLAG_WRITER_ID;
        let mut seek = abi::Seek {
            whence: abi::SEEK_NOW,
            reserved: 0,
            arg: 0,
        };
        if fd < 0
            || libc::ioctl(fd, abi::IOC_SET_FLAGS as _, &flags) != 0
            || libc::ioctl(fd, abi::IOC_SEEK as _, &mut seek) != 0
        {
            return 12;
        }
        // The writer reports its global pid (its /proc/self link: /proc is
        // the initial namespace's) before it writes and exits.
        let mut fds = [0; 2];
        libc::pipe(fds.as_mut_ptr());
        let a = libc::fork();
        if a < 0 {
            return 13;
        }
        if a == 0 {
            let mut link = [0u8; 32];
            let n = libc::readlink(c"/proc/self".as_ptr(), link.as_mut_ptr().cast(), 31);
            let global = std::str::from_utf8(&link[..n.max(0) as usize])
                .ok()
                .and_then(|s| s.parse::<i32>().ok())
                .unwrap_or(0);
            let b = global.to_ne_bytes();
            libc::write(fds[1], b.as_ptr().cast(), 4);
            let w = libc::open(path.as_ptr(), libc::O_WRONLY);
            let ok = w >= 0 && libc::write(w, b"gone".as_ptr().cast(), 4) == 4;
            libc::_exit(if ok && global > 0 { 0 } else { 1 });
        }
        let mut b = [0u8; 4];
        libc::read(fds[0], b.as_mut_ptr().cast(), 4);
        let global = i32::from_ne_bytes(b);
        let mut st = 0;
        libc::waitpid(a, &mut st, 0);
        if st != 0 {
            return 14;
        }
        // A live writer, for contrast: its pid must be shown.
        let live_fds = pipe_raw();
        let live = parked_writer(path, live_fds);
        // The exited writer's pid, in this namespace and globally, reused.
        let reuse_fds = pipe_raw();
        let reused = parked_child(reuse_fds, Some(&[a, global]));
        let mut buf = [0u8; 512];
        // Read both records (the live writer writes once it has started).
        let mut n = 0;
        for _ in 0..500 {
            let got = libc::read(fd, buf[n..].as_mut_ptr().cast(), buf.len() - n);
            n += got.max(0) as usize;
            if n >= 2 * abi::record_span(4) {
                break;
            }
            libc::usleep(10_000);
        }
        let recs: Vec<_> = records(&buf[..n])
            .map(|r| (r.header, r.payload.to_vec()))
            .collect();
        // The reusing child was forked after the live writer's pipe and
        // holds its write end: release it first, or the live writer never
        // sees EOF.
        for (fds, pid) in [(reuse_fds, reused), (live_fds, live)] {
            if pid > 0 {
                release(fds, pid);
            }
        }
        if reused != a {
            return 15;
        }
        let find = |p: &[u8]| recs.iter().find(|(_, q)| q == p).map(|(h, _)| h.pid);
        match (find(b"gone"), find(b"alive")) {
            (Some(_), Some(l)) if l != live as u32 => 17,
            (Some(g), Some(_)) if g != 0 => 18,
            (Some(_), Some(_)) => 0,
            _ => 16,
        }
    }
}

fn pipe_raw() -> [i32; 2] {
    let mut fds = [0; 2];
    // SAFETY: creating a pipe into a valid array.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    fds
}

/// A child that writes `alive` to `path`, then waits on the pipe as
/// [`parked_child`] does.
///
/// # Safety
///
/// As `fork()`.
unsafe fn parked_writer(path: &std::ffi::CStr, fds: [i32; 2]) -> i32 {
    // SAFETY: the caller's contract.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw syscalls in the child, then _exit.
        unsafe {
            libc::close(fds[1]);
            let w = libc::open(path.as_ptr(), libc::O_WRONLY);
            libc::write(w, b"alive".as_ptr().cast(), 5);
            let mut b = [0u8; 1];
            libc::read(fds[0], b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    pid
}

/// `IOC_SET_FLAGS` as a program built for ABI 3 calls it (libbaf adds
/// `FLAG_WRITER_ID`, so it is bypassed here).
pub(crate) fn set_flags_v3(t: &Topic, flags: u32) -> io::Result<()> {
    let mut flags = flags;
    // SAFETY: IOC_SET_FLAGS takes a pointer to a live u32.
    let rc = unsafe { libc::ioctl(t.file().as_raw_fd(), abi::IOC_SET_FLAGS as _, &mut flags) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A batch frame with a 32-byte ABI 3 header and junk padding.
fn frame_v3(len: u32, payload: &[u8], flags: u32) -> Vec<u8> {
    let h = RecordHeader {
        len,
        flags,
        seq: 0xdead,
        pid: 4242,
        ..RecordHeader::default()
    }
    .to_bytes();
    let mut v = h[..abi::RECORD_HEADER_V3_SIZE].to_vec();
    v.extend_from_slice(payload);
    v.resize(
        abi::record_span_sized(abi::RECORD_HEADER_V3_SIZE, payload.len()),
        0xee,
    );
    v
}

/// Splits a record-mode read with 32-byte headers.
fn records_v3(mut buf: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    const V3: usize = abi::RECORD_HEADER_V3_SIZE;
    while let Some(h) = RecordHeader::from_bytes_sized(buf, V3) {
        let len = h.len as usize;
        let Some(p) = buf.get(V3..V3 + len) else {
            break;
        };
        out.push((h, p.to_vec()));
        buf = buf
            .get(abi::record_span_sized(V3, len)..)
            .unwrap_or_default();
    }
    out
}

pub(crate) fn abi3_programs_keep_32_byte_headers(cx: &Ctx) -> Result<()> {
    const V3: usize = abi::RECORD_HEADER_V3_SIZE;
    let r3 = nb_reader(&cx.b)?;
    set_flags_v3(&r3, abi::FLAG_RECORD)?;
    r3.seek(abi::SEEK_NOW, 0)?;
    let i = r3.info()?;
    ensure!(
        i.header_size as usize == V3,
        "header_size {}",
        i.header_size
    );
    let r4 = nb_reader(&cx.b)?;
    r4.set_flags(abi::FLAG_RECORD)?;
    r4.seek(abi::SEEK_NOW, 0)?;
    let w = Topic::open(&cx.b, true, true)?;
    set_flags_v3(&w, abi::FLAG_BATCH)?;
    // Three good frames (odd sizes, a record_max one), then a bad one.
    let big = pattern(9, 3, RECORD_MAX);
    let good = [b"a".to_vec(), pattern(1, 2, 13), big.clone()];
    let mut batch: Vec<u8> = good
        .iter()
        .flat_map(|p| frame_v3(p.len() as u32, p, 0))
        .collect();
    let good_len = batch.len();
    batch.extend(frame_v3(2, b"no", 1));
    let n = w.file().write(&batch)?;
    ensure!(
        n == good_len,
        "a bad 4th frame: write gave {n}, want {good_len}"
    );
    for (bad, errno) in [
        (frame_v3(2, b"no", 1), libc::EINVAL),
        (frame_v3(0, b"", 0), libc::EINVAL),
        (frame_v3(RECORD_MAX as u32 + 1, b"x", 0), libc::EMSGSIZE),
        (frame_v3(2, b"no", 0)[..V3 + 1].to_vec(), libc::EBADMSG),
        (vec![0u8; V3 - 1], libc::EBADMSG),
    ] {
        let e = w.file().write(&bad).err().and_then(|e| e.raw_os_error());
        ensure!(
            e == Some(errno),
            "frame {:?}: {e:?}, want {errno}",
            &bad[..8.min(bad.len())]
        );
    }
    let got3 = records_v3(&get(&r3, 1 << 20)?);
    let got4 = drain(&r4)?;
    ensure!(
        got3.len() == 3 && got4.len() == 3,
        "{} and {} records",
        got3.len(),
        got4.len()
    );
    let me = std::process::id();
    for (k, ((h3, p3), (h4, p4))) in got3.iter().zip(&got4).enumerate() {
        ensure!(
            *p3 == good[k] && *p4 == good[k] && h3.seq == h4.seq && h3.pid == me && h4.pid == me,
            "record {k}: {h3:?} / {h4:?}"
        );
        ensure!(
            h3.writer == 0 && h4.writer != 0,
            "writer {} / {}",
            h3.writer,
            h4.writer
        );
    }
    // What an ABI 3 reader got is a valid ABI 3 batch: publish it again.
    let r3b = nb_reader(&cx.b)?;
    set_flags_v3(&r3b, abi::FLAG_RECORD)?;
    r3b.seek(abi::SEEK_NOW, 0)?;
    let again: Vec<u8> = got3
        .iter()
        .flat_map(|(h, p)| frame_v3(h.len, p, 0))
        .collect();
    ensure!(w.file().write(&again)? == again.len(), "republish");
    let back = records_v3(&get(&r3b, 1 << 20)?);
    ensure!(
        back.iter().map(|(_, p)| p).eq(good.iter()),
        "republished records differ"
    );
    Ok(())
}

/// A record-mode read with the ring's own 40-byte headers, in the initial
/// namespaces, copies runs of whole records in one go (`kernel/read.rs`,
/// `run_end`). It must give exactly what the record-by-record path gives a
/// reader of 32-byte headers: the same records, headers and payloads, and
/// zero padding even after batch frames padded with junk, at buffer sizes
/// that end a run anywhere, and across the padding at the ring's end.
pub(crate) fn record_runs_match_record_by_record_reads(_cx: &Ctx) -> Result<()> {
    const NAME: &str = "wid/runs";
    let path = fresh_topic(NAME, 16384)?;
    let runs = nb_reader(&path)?;
    runs.set_flags(abi::FLAG_RECORD)?;
    let one = nb_reader(&path)?;
    set_flags_v3(&one, abi::FLAG_RECORD)?;
    let w = writer(&path)?;
    let b = Topic::open(&path, true, true)?;
    set_flags_v3(&b, abi::FLAG_BATCH)?;
    let mut x = 11u64;
    let mut want = Vec::new();
    let (mut got_runs, mut got_one) = (Vec::new(), Vec::new());
    for round in 0..80usize {
        // Under 6 KiB a round: neither reader is lapped in 16 KiB.
        for _ in 0..20 {
            let p = pattern(3, want.len() as u32, 1 + (xorshift(&mut x) % 200) as usize);
            put(&w, &p)?;
            want.push(p);
        }
        let mut frames = Vec::new();
        for _ in 0..10 {
            let p = pattern(4, want.len() as u32, 1 + (xorshift(&mut x) % 61) as usize);
            frames.extend(frame_v3(p.len() as u32, &p, 0));
            want.push(p);
        }
        ensure!(
            b.file().write(&frames)? == frames.len(),
            "round {round}: batch"
        );
        let cap = [240usize, 241, 500, 1000, 4096, 65536][round % 6];
        loop {
            let buf = match get(&runs, cap) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                r => r.with_context(|| format!("round {round}: read {cap}"))?,
            };
            let mut at = 0;
            while at < buf.len() {
                let h = RecordHeader::from_bytes(&buf[at..]).context("a cut header")?;
                let len = h.len as usize;
                let span = abi::record_span(len);
                let rec = buf.get(at..at + span).context("a cut record")?;
                ensure!(
                    rec[abi::RECORD_HEADER_SIZE + len..].iter().all(|&c| c == 0),
                    "round {round}, record {}: padding not zero",
                    h.seq
                );
                got_runs.push((h, rec[abi::RECORD_HEADER_SIZE..][..len].to_vec()));
                at += span;
            }
        }
        got_one.extend(records_v3(&get(&one, 65536)?));
    }
    ensure!(
        runs.info()?.lost == 0 && one.info()?.lost == 0,
        "a reader was lapped"
    );
    ensure!(
        got_runs.len() == want.len() && got_one.len() == want.len(),
        "{} and {} records of {}",
        got_runs.len(),
        got_one.len(),
        want.len()
    );
    let first = got_runs[0].0.seq;
    for (k, ((h, p), (h3, p3))) in got_runs.iter().zip(&got_one).enumerate() {
        let same = (h.len, h.flags, h.seq, h.timestamp_ns, h.pid, h.uid)
            == (h3.len, h3.flags, h3.seq, h3.timestamp_ns, h3.pid, h3.uid);
        ensure!(
            same && h.seq == first + k as u64 && h.writer != 0 && h3.writer == 0,
            "record {k}: {h:?} / {h3:?}"
        );
        ensure!(*p == want[k] && *p3 == want[k], "record {k}: payload");
    }
    let wrapped = want
        .iter()
        .map(|p| abi::record_span(p.len()))
        .sum::<usize>()
        / 16384;
    println!("  {} records, the ring wrapped {wrapped} times", want.len());
    baf::control::remove(NAME)?;
    Ok(())
}
