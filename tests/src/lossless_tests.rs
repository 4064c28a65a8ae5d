//! VM tests of lossless readers (ABI 3, `kernel/ABI.md`, "Lossless
//! readers"): a topic created with `TOPIC_LOSSLESS`, readers that set
//! `FLAG_LOSSLESS`, and writers that wait for them.

use super::*;

/// Record size the filling tests use: 1000 payload bytes, a 1032-byte slot.
const SMALL: usize = 1000;

/// A fresh topic of `ring` bytes that allows lossless readers.
fn lossless_topic(name: &str, ring: u64, stall_ms: u32) -> Result<PathBuf> {
    let _ = baf::control::remove(name);
    let mut o = baf::control::CreateOptions::defaults();
    o.ring_size = ring;
    o.lossless = true;
    o.stall_ms = stall_ms;
    baf::control::create(name, &o).with_context(|| format!("create {name}"))?;
    Ok(baf::control::node_of(name))
}

/// A value from the topic's sysfs directory.
fn sysfs(name: &str, what: &str) -> Result<u64> {
    let p = format!("/sys/class/baf/{}/{what}", name.replace('/', "!"));
    let s = std::fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    s.trim()
        .parse()
        .with_context(|| format!("parse {p}: {s:?}"))
}

/// A reader (record mode) that set `FLAG_LOSSLESS`.
fn lossless_reader(path: &Path, nonblock: bool) -> Result<Topic> {
    let t = Topic::open(path, false, nonblock)?;
    t.set_flags(abi::FLAG_RECORD | abi::FLAG_LOSSLESS)
        .context("set FLAG_LOSSLESS")?;
    Ok(t)
}

fn nb_writer(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("open {} for writing", path.display()))
}

/// `IOC_SET_FLAGS` on any file (a write-only one included).
fn set_flags_raw(f: &File, flags: u32) -> io::Result<()> {
    let mut flags = flags;
    // SAFETY: IOC_SET_FLAGS takes a pointer to a live u32.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), abi::IOC_SET_FLAGS as _, &mut flags) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes `SMALL`-byte records numbered from `*next` until the writer gets
/// `EAGAIN`; returns how many it wrote.
fn fill(w: &File, next: &mut u32) -> Result<u32> {
    let mut n = 0;
    loop {
        match (&*w).write(&pattern(1, *next, SMALL)) {
            Ok(k) => {
                ensure!(k == SMALL, "short write {k}");
                *next += 1;
                n += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(n),
            Err(e) => return Err(e).context("write"),
        }
        ensure!(n < 1_000_000, "the writer never had to wait");
    }
}

/// Reads (non-blocking) until `EAGAIN`, checking each record is writer 1's
/// next one; returns how many were read.
fn read_in_order(r: &Topic, next: &mut u32) -> Result<u32> {
    let mut n = 0;
    for (h, p) in drain(r)? {
        let (w, c) = parse_pattern(&p)?;
        ensure!(
            (w, c) == (1, *next),
            "record seq {} is writer {w} #{c}, expected #{next}",
            h.seq
        );
        *next += 1;
        n += 1;
    }
    Ok(n)
}

fn poll_out(fd: i32, timeout_ms: i32) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: polling one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if n == 1 {
        p.revents
    } else {
        0
    }
}

/// Waits up to 10 s for a thread to finish.
fn join_within<T>(t: thread::JoinHandle<T>, what: &str) -> Result<T> {
    let start = Instant::now();
    while !t.is_finished() {
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: still blocked after 10 s"
        );
        thread::sleep(Duration::from_millis(10));
    }
    t.join().map_err(|_| anyhow::anyhow!("{what}: panicked"))
}

pub(crate) fn lossless_needs_the_owners_consent(cx: &Ctx) -> Result<()> {
    // A topic made without TOPIC_LOSSLESS refuses, and nothing changes.
    let r = reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    expect_errno(
        r.set_flags(abi::FLAG_RECORD | abi::FLAG_LOSSLESS),
        libc::EPERM,
        "FLAG_LOSSLESS on a lossy topic",
    )?;
    let i = r.info()?;
    // (libbaf sets FLAG_WRITER_ID with FLAG_RECORD.)
    ensure!(
        i.flags == abi::FLAG_RECORD | abi::FLAG_WRITER_ID,
        "flags changed: {:#x}",
        i.flags
    );
    ensure!(i.topic_flags == 0 && i.lossless_readers == 0, "{i:?}");

    let name = "ll/consent";
    let path = lossless_topic(name, 65536, 0)?;
    ensure!(sysfs(name, "lossless")? == 1, "sysfs lossless is not 1");
    // A write-only file cannot be a reader.
    let w = writer(&path)?;
    expect_errno(
        set_flags_raw(&w, abi::FLAG_LOSSLESS),
        libc::EBADF,
        "FLAG_LOSSLESS on a write-only file",
    )?;
    let r = lossless_reader(&path, true)?;
    let i = r.info()?;
    ensure!(
        i.flags & abi::FLAG_LOSSLESS != 0
            && i.topic_flags == abi::TOPIC_LOSSLESS
            && i.lossless_readers == 1
            && i.abi_version == abi::ABI_VERSION,
        "{i:?}"
    );
    ensure!(
        sysfs(name, "lossless_readers")? == 1,
        "sysfs lossless_readers"
    );
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", r.file().as_raw_fd()))?;
    ensure!(fdinfo.contains(",lossless"), "fdinfo: {fdinfo}");
    // Clearing the flag makes it lossy again at once.
    r.set_flags(abi::FLAG_RECORD)?;
    ensure!(
        r.info()?.lossless_readers == 0,
        "still counted after clearing"
    );
    r.set_flags(abi::FLAG_RECORD | abi::FLAG_LOSSLESS)?;
    drop(r);
    ensure!(
        sysfs(name, "lossless_readers")? == 0,
        "still counted after close"
    );

    // The control device checks the new fields; the version 2 struct and
    // INFO still work.
    let ctl = OpenOptions::new().write(true).open("/dev/baf-control")?;
    let spec = |name: &str, flags: u32, stall_ms: u32| abi::TopicSpec {
        name: abi::TopicName::new(name.as_bytes()).unwrap_or(abi::TopicName {
            bytes: [0; abi::NAME_MAX + 8],
        }),
        ring_size: 65536,
        record_max: 0,
        mode: 0o600,
        uid: 0,
        gid: 0,
        flags,
        stall_ms,
    };
    let create = |cmd: u32, s: &mut abi::TopicSpec| -> io::Result<i32> {
        // SAFETY: the control ioctls read a TopicSpec (or its version 2
        // prefix), which `s` is, live for the call.
        let rc = unsafe { libc::ioctl(ctl.as_raw_fd(), cmd as _, s as *mut abi::TopicSpec) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    for (flags, stall, what) in [
        (2, 0, "an unknown topic flag"),
        (0, 100, "a stall timeout without TOPIC_LOSSLESS"),
        (
            abi::TOPIC_LOSSLESS,
            abi::STALL_MS_MAX + 1,
            "a stall timeout over an hour",
        ),
    ] {
        expect_errno(
            create(abi::IOC_CREATE, &mut spec("ll/bad", flags, stall)),
            libc::EINVAL,
            what,
        )?;
    }
    ensure!(
        !Path::new("/dev/baf/ll/bad").exists(),
        "a refused topic exists"
    );
    // Version 2 callers get a lossy topic; the same name with other flags
    // is EEXIST.
    let _ = baf::control::remove("ll/v2");
    // Garbage after the version 2 struct must not be read.
    let mut s = spec("ll/v2", 0xdead, 0xbeef);
    ensure!(create(abi::IOC_CREATE_V2, &mut s)? == 1, "v2 create");
    ensure!(
        sysfs("ll/v2", "lossless")? == 0,
        "a v2 create made a lossless topic"
    );
    expect_errno(
        create(abi::IOC_CREATE, &mut spec("ll/v2", abi::TOPIC_LOSSLESS, 0)),
        libc::EEXIST,
        "the same name, now lossless",
    )?;
    ensure!(
        create(abi::IOC_CREATE, &mut spec("ll/v2", 0, 0))? == 0,
        "same settings"
    );
    baf::control::remove("ll/v2")?;
    let r = reader(&path)?;
    let mut buf = [0xAAu8; 96];
    // SAFETY: IOC_INFO_V2 writes 64 bytes; `buf` has 96.
    let rc = unsafe {
        libc::ioctl(
            r.file().as_raw_fd(),
            abi::IOC_INFO_V2 as _,
            buf.as_mut_ptr(),
        )
    };
    ensure!(rc == 0, "IOC_INFO_V2: {}", io::Error::last_os_error());
    ensure!(
        u32::from_ne_bytes(buf[0..4].try_into()?) == abi::ABI_VERSION,
        "IOC_INFO_V2 abi_version"
    );
    ensure!(
        buf[abi::INFO_V2_SIZE..].iter().all(|&b| b == 0xAA),
        "IOC_INFO_V2 wrote past the version 2 struct"
    );
    baf::control::remove(name)?;
    Ok(())
}

pub(crate) fn a_lossless_reader_holds_the_writer(_cx: &Ctx) -> Result<()> {
    let name = "ll/hold";
    let path = lossless_topic(name, 65536, 0)?;
    let r = lossless_reader(&path, true)?;
    let lossy = nb_reader(&path)?;
    lossy.set_flags(abi::FLAG_RECORD)?;
    let w = nb_writer(&path)?;
    let (mut wrote, mut read) = (0u32, 0u32);
    let n = fill(&w, &mut wrote)?;
    let slot = abi::record_span(SMALL) as u32;
    ensure!(
        n * slot <= 65536 && (n + 1) * slot > 65536 - slot,
        "{n} records of {slot} bytes before EAGAIN in a 64 KiB ring"
    );
    ensure!(
        sysfs(name, "writer_waits")? == 0,
        "a non-blocking writer counted as waiting"
    );
    // O_NONBLOCK: EAGAIN again, nothing written.
    expect_errno(
        (&w).write(&[0u8; SMALL]),
        libc::EAGAIN,
        "a full lossless ring",
    )?;
    // The reader frees one slot: exactly one more record fits.
    let got = get_records(&r, abi::record_span(SMALL))?;
    ensure!(got.len() == 1, "read {} records", got.len());
    read += 1;
    ensure!(
        fill(&w, &mut wrote)? == 1,
        "one slot freed, not one record written"
    );
    // Everything, in order, nothing lost.
    read += read_in_order_from(&r, read)?;
    ensure!(read == wrote, "the lossless reader got {read} of {wrote}");
    ensure!(r.info()?.lost == 0, "the lossless reader lost records");

    // A multi-record write is cut where the room ends: a partial count.
    let big = vec![7u8; 5 * RECORD_MAX_64K];
    let k = (&w).write(&big).context("big non-blocking write")?;
    ensure!(
        k == 3 * RECORD_MAX_64K,
        "partial write took {k} bytes, expected 3 records"
    );
    expect_errno((&w).write(&big), libc::EAGAIN, "the next write")?;
    let small = fill(&w, &mut wrote)?;
    // A blocking writer waits until the reader reads.
    let path2 = path.clone();
    let blocked = thread::spawn(move || -> Result<usize> {
        let w = writer(&path2)?;
        Ok((&w).write(&[9u8; SMALL])?)
    });
    thread::sleep(Duration::from_millis(300));
    ensure!(
        !blocked.is_finished(),
        "the writer did not wait for the reader"
    );
    ensure!(
        sysfs(name, "writer_waits")? >= 1,
        "writer_waits not counted"
    );
    let got = get_records(&r, 1 << 20)?;
    ensure!(
        got.len() == 3 + small as usize,
        "read {} records, wrote {}",
        got.len(),
        3 + small
    );
    ensure!(
        join_within(blocked, "blocked writer")?? == SMALL,
        "short write"
    );
    // The lossy reader was lapped meanwhile, and only it lost.
    drain(&lossy)?;
    ensure!(lossy.info()?.lost > 0, "the lossy reader lost nothing");
    ensure!(r.info()?.lost == 0, "the lossless reader lost records");
    drain(&r)?;

    // Seeking back holds the old records again.
    let oldest = r.info()?.oldest_seq;
    let at = r.seek(abi::SEEK_OLDEST, 0)?;
    ensure!(at == oldest, "seek to {at}, oldest {oldest}");
    let mut more = 0u32;
    let free_now = fill(&w, &mut more)?;
    let held = r.info()?;
    ensure!(
        held.oldest_seq == oldest,
        "records after the seek point were overwritten"
    );
    let all = drain(&r)?;
    ensure!(
        all.first().map(|x| x.0.seq) == Some(oldest)
            && all.windows(2).all(|p| p[1].0.seq == p[0].0.seq + 1),
        "not every record from the seek point on ({} read, {free_now} written)",
        all.len()
    );

    // A mapping reader's position is what it last synced.
    let m = lossless_reader(&path, true)?;
    let _ = fill(&w, &mut more)?;
    drain(&r)?;
    expect_errno(
        (&w).write(&[0u8; SMALL]),
        libc::EAGAIN,
        "held by a mapping reader",
    )?;
    let next = m.info()?.next_seq;
    ensure!(!m.mapped_sync(next, 0)?, "sync said lapped");
    ensure!(fill(&w, &mut more)? > 0, "the sync released nothing");

    // RWF_NOWAIT on a blocking file gets EAGAIN as O_NONBLOCK does; a seek
    // forward (SEEK_NOW) releases the writer at once.
    drain(&r)?;
    let bw = writer(&path)?;
    let data = [8u8; SMALL];
    let iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: one iovec over `data`, live for the call; offset -1 means
    // the file's position, as a stream needs.
    let rc = unsafe { libc::pwritev2(bw.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    ensure!(
        rc < 0 && errno_now() == libc::EAGAIN,
        "RWF_NOWAIT write to a held ring: {rc}, {}",
        io::Error::last_os_error()
    );
    m.seek(abi::SEEK_NOW, 0)?;
    ensure!(fill(&w, &mut more)? > 0, "SEEK_NOW released nothing");
    baf::control::remove(name)?;
    Ok(())
}

/// Largest record of a 64 KiB ring.
const RECORD_MAX_64K: usize = 16384;

/// Reads (non-blocking) the rest of writer 1's records, from counter
/// `from` on; returns how many.
fn read_in_order_from(r: &Topic, from: u32) -> Result<u32> {
    let mut next = from;
    read_in_order(r, &mut next)
}

/// A child process; killed and reaped when dropped, so a failing test
/// leaves no stopped reader holding a topic open.
struct Child(libc::pid_t);

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: killing and reaping our own child (harmless if it is
        // already gone).
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

pub(crate) fn a_stopped_lossless_process_blocks_the_writer(_cx: &Ctx) -> Result<()> {
    let name = "ll/stop";
    let path = lossless_topic(name, 65536, 0)?;
    let cpath = c_path(&path)?;
    let spawn = || -> Result<libc::pid_t> {
        let [rd, wr] = pipe()?;
        // SAFETY: the child only makes async-signal-safe calls (open,
        // ioctl, write, read, _exit) before it exits.
        let pid = unsafe { libc::fork() };
        ensure!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: as above; every pointer is live in the child.
            unsafe {
                let fd = libc::open(cpath.as_ptr(), libc::O_RDONLY);
                let mut flags = abi::FLAG_LOSSLESS;
                if fd < 0 || libc::ioctl(fd, abi::IOC_SET_FLAGS as _, &mut flags) < 0 {
                    libc::_exit(1);
                }
                libc::write(wr, b"r".as_ptr().cast(), 1);
                let mut buf = [0u8; 4096];
                while libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
                libc::_exit(0);
            }
        }
        let mut b = [0u8; 1];
        // SAFETY: reading one byte from our pipe into `b`.
        let n = unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) };
        // SAFETY: closing the pipe's two ends, ours.
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        ensure!(n == 1, "the child did not become a lossless reader");
        Ok(pid)
    };
    let stop = |pid: libc::pid_t| -> Result<()> {
        let mut st = 0;
        // SAFETY: signalling and waiting for our own child.
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
            libc::waitpid(pid, &mut st, libc::WUNTRACED);
        }
        ensure!(libc::WIFSTOPPED(st), "the child did not stop");
        Ok(())
    };
    let w = nb_writer(&path)?;
    let mut wrote = 0u32;
    let child = Child(spawn()?);
    let pid = child.0;
    stop(pid)?;
    ensure!(fill(&w, &mut wrote)? > 0, "nothing written");
    expect_errno(
        (&w).write(&[0u8; SMALL]),
        libc::EAGAIN,
        "held by a stopped reader",
    )?;
    let p2 = path.clone();
    let blocked =
        thread::spawn(move || -> Result<usize> { Ok((&writer(&p2)?).write(&[1u8; SMALL])?) });
    thread::sleep(Duration::from_millis(300));
    ensure!(!blocked.is_finished(), "the writer passed a stopped reader");
    // SAFETY: continuing our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    ensure!(
        join_within(blocked, "writer after SIGCONT")?? == SMALL,
        "short write"
    );
    // Stopped again, then killed: its death releases the writer.
    thread::sleep(Duration::from_millis(100));
    stop(pid)?;
    fill(&w, &mut wrote)?;
    let p2 = path.clone();
    let blocked =
        thread::spawn(move || -> Result<usize> { Ok((&writer(&p2)?).write(&[2u8; SMALL])?) });
    thread::sleep(Duration::from_millis(300));
    ensure!(!blocked.is_finished(), "the writer passed a stopped reader");
    drop(child); // SIGKILL
    ensure!(
        join_within(blocked, "writer after SIGKILL")?? == SMALL,
        "short write"
    );
    ensure!(
        sysfs(name, "lossless_readers")? == 0,
        "a dead reader still counted"
    );
    baf::control::remove(name)?;
    Ok(())
}

pub(crate) fn signals_and_removal_release_a_blocked_writer(_cx: &Ctx) -> Result<()> {
    use std::os::unix::thread::JoinHandleExt;
    let name = "ll/signal";
    let path = lossless_topic(name, 65536, 0)?;
    let r = lossless_reader(&path, true)?;
    let w = nb_writer(&path)?;
    // Three largest records, then small ones until full.
    ensure!(
        (&w).write(&vec![3u8; 3 * RECORD_MAX_64K])? == 3 * RECORD_MAX_64K,
        "three largest records into an empty ring"
    );
    let mut wrote = 0;
    fill(&w, &mut wrote)?;
    set_handler(false);
    let p2 = path.clone();
    let t = thread::spawn(move || -> io::Result<usize> {
        let w = OpenOptions::new().write(true).open(&p2)?;
        (&w).write(&[4u8; SMALL])
    });
    thread::sleep(Duration::from_millis(300));
    ensure!(!t.is_finished(), "the writer did not wait");
    // SAFETY: signalling our own live thread.
    unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGUSR1) };
    expect_errno(
        join_within(t, "interrupted writer")?,
        libc::EINTR,
        "a signal to a writer that wrote nothing",
    )?;
    // Room for one largest record: a two-record write is cut by the signal.
    let first = get_records(&r, abi::record_span(RECORD_MAX_64K))?;
    ensure!(
        first.len() == 1 && first[0].1.len() == RECORD_MAX_64K,
        "not the big record"
    );
    let p2 = path.clone();
    let t = thread::spawn(move || -> io::Result<usize> {
        let w = OpenOptions::new().write(true).open(&p2)?;
        (&w).write(&vec![5u8; 2 * RECORD_MAX_64K])
    });
    thread::sleep(Duration::from_millis(300));
    ensure!(
        !t.is_finished(),
        "the writer did not wait for the second record"
    );
    // SAFETY: as above.
    unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGUSR1) };
    let n = join_within(t, "interrupted writer")?.context("partial write")?;
    ensure!(n == RECORD_MAX_64K, "interrupted write returned {n}");

    // Removal wakes a blocked writer with ENODEV; the reader drains to EOF.
    let p2 = path.clone();
    let t = thread::spawn(move || -> io::Result<usize> {
        let w = OpenOptions::new().write(true).open(&p2)?;
        (&w).write(&[6u8; SMALL])
    });
    thread::sleep(Duration::from_millis(300));
    ensure!(!t.is_finished(), "the writer did not wait");
    baf::control::remove(name)?;
    expect_errno(
        join_within(t, "writer at removal")?,
        libc::ENODEV,
        "removal",
    )?;
    let mut got = 0usize;
    loop {
        match get_records(&r, 1 << 20) {
            Ok(v) if v.is_empty() => break,
            Ok(v) => got += v.len(),
            Err(e) => return Err(e).context("draining a removed topic"),
        }
    }
    // Two big records, the small ones, and the interrupted write's first.
    ensure!(
        got == 2 + wrote as usize + 1,
        "drained {got} records, wrote {}",
        2 + wrote + 1
    );
    ensure!(r.info()?.lost == 0, "the lossless reader lost records");
    Ok(())
}

pub(crate) fn pollout_follows_the_lossless_readers(_cx: &Ctx) -> Result<()> {
    let name = "ll/poll";
    let path = lossless_topic(name, 65536, 0)?;
    let r = lossless_reader(&path, true)?;
    let w = nb_writer(&path)?;
    let fd = w.as_raw_fd();
    ensure!(
        poll_out(fd, 0) & libc::POLLOUT != 0,
        "no POLLOUT on an empty ring"
    );
    let mut wrote = 0;
    fill(&w, &mut wrote)?;
    ensure!(
        poll_out(fd, 0) & libc::POLLOUT == 0,
        "POLLOUT on a full ring"
    );
    // SAFETY: plain epoll calls on our own descriptors.
    let ep = unsafe { libc::epoll_create1(0) };
    ensure!(ep >= 0, "epoll_create1");
    let mut ev = libc::epoll_event {
        events: libc::EPOLLOUT as u32,
        u64: 1,
    };
    // SAFETY: as above.
    ensure!(
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } == 0,
        "epoll_ctl"
    );
    let mut out = [libc::epoll_event { events: 0, u64: 0 }; 1];
    // SAFETY: as above.
    let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 1, 0) };
    ensure!(n == 0, "epoll reports EPOLLOUT on a full ring");
    let poller = thread::spawn(move || poll_out(fd, 10_000));
    thread::sleep(Duration::from_millis(300));
    ensure!(!poller.is_finished(), "poll returned on a full ring");
    // One small record read: a largest record still does not fit.
    ensure!(
        get_records(&r, abi::record_span(SMALL))?.len() == 1,
        "read one"
    );
    thread::sleep(Duration::from_millis(200));
    ensure!(
        !poller.is_finished(),
        "POLLOUT without room for a largest record"
    );
    drain(&r)?;
    let revents = join_within(poller, "poller")?;
    ensure!(
        revents & libc::POLLOUT != 0,
        "poll woke without POLLOUT: {revents:#x}"
    );
    // SAFETY: as above.
    let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 1, 5000) };
    // SAFETY: closing our epoll descriptor.
    unsafe { libc::close(ep) };
    ensure!(
        n == 1 && out[0].events & libc::EPOLLOUT as u32 != 0,
        "no EPOLLOUT after the reader read"
    );
    baf::control::remove(name)?;
    Ok(())
}

pub(crate) fn the_stall_timeout_demotes_a_stuck_reader(_cx: &Ctx) -> Result<()> {
    let name = "ll/stall";
    let path = lossless_topic(name, 65536, 300)?;
    ensure!(sysfs(name, "stall_ms")? == 300, "sysfs stall_ms");
    let stuck = lossless_reader(&path, true)?;
    // A slow reader that keeps reading is not demoted.
    let slow = lossless_reader(&path, true)?;
    let done = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU32::new(0));
    let (d2, p2) = (done.clone(), progress.clone());
    let slow_t = thread::spawn(move || -> Result<u32> {
        let mut next = 0u32;
        while !d2.load(Ordering::Relaxed) {
            match get_records(&slow, abi::record_span(SMALL)) {
                Ok(v) => {
                    for (_, p) in v {
                        let (_, c) = parse_pattern(&p)?;
                        ensure!(c == next, "slow reader got #{c}, expected #{next}");
                        next += 1;
                        p2.store(next, Ordering::Relaxed);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(e) => return Err(e).context("slow reader"),
            }
            thread::sleep(Duration::from_millis(20));
        }
        ensure!(
            slow.info()?.flags & abi::FLAG_LOSSLESS != 0,
            "the slow reader was demoted"
        );
        next += read_in_order_from(&slow, next)?;
        Ok(next)
    });
    let w = writer(&path)?;
    let start = Instant::now();
    let total = 150u32;
    // The slow reader is past the stuck one before the writer has to wait,
    // so only the stuck one holds the floor when the timeout runs out.
    put(&w, &pattern(1, 0, SMALL))?;
    while progress.load(Ordering::Relaxed) == 0 {
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "the slow reader read nothing"
        );
        thread::sleep(Duration::from_millis(5));
    }
    for k in 1..total {
        put(&w, &pattern(1, k, SMALL))?;
    }
    let took = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let got = join_within(slow_t, "slow reader")??;
    ensure!(
        got == total,
        "the slow lossless reader got {got} of {total}"
    );
    ensure!(
        sysfs(name, "demoted")? == 1,
        "demoted = {}",
        sysfs(name, "demoted")?
    );
    ensure!(
        took >= Duration::from_millis(250),
        "the writer did not wait ({took:?})"
    );
    // The stuck reader: EPIPE once, then lossy reading with its loss counted.
    expect_errno(
        get(&stuck, 1 << 20),
        libc::EPIPE,
        "the demoted reader's next read",
    )?;
    let i = stuck.info()?;
    ensure!(
        i.flags & abi::FLAG_LOSSLESS == 0,
        "still lossless: {:#x}",
        i.flags
    );
    let rest = drain(&stuck)?;
    let i = stuck.info()?;
    ensure!(
        i.lost > 0 && i.lost + rest.len() as u64 == u64::from(total),
        "lost {} + read {}",
        i.lost,
        rest.len()
    );
    ensure!(
        sysfs(name, "lossless_readers")? == 0,
        "lossless_readers after demotion and close"
    );
    baf::control::remove(name)?;
    Ok(())
}

pub(crate) fn a_publisher_waits_for_its_readers(cx: &Ctx) -> Result<()> {
    // Never on a topic that allows no lossless reader.
    let plain = Topic::open(&cx.a, true, false)?;
    expect_errno(plain.wait_readers(1), libc::EPERM, "a lossy topic")?;
    plain
        .wait_readers(0)
        .context("0 readers of a lossy topic")?;
    let name = "ll/wait";
    let path = lossless_topic(name, 65536, 0)?;
    let nb = Topic::open(&path, true, true)?;
    expect_errno(
        nb.wait_readers(1),
        libc::EAGAIN,
        "O_NONBLOCK, no reader yet",
    )?;
    nb.wait_readers(0).context("waiting for 0 readers")?;
    let p2 = path.clone();
    let t = thread::spawn(move || {
        Topic::open(&p2, true, false)?
            .wait_readers(2)
            .map_err(anyhow::Error::from)
    });
    let r1 = lossless_reader(&path, false)?;
    thread::sleep(Duration::from_millis(300));
    ensure!(!t.is_finished(), "returned with one of two readers");
    let _plain = reader(&path)?; // a lossy reader does not count
    thread::sleep(Duration::from_millis(100));
    ensure!(!t.is_finished(), "a lossy reader was counted");
    let r2 = lossless_reader(&path, false)?;
    join_within(t, "wait for 2 readers")??;
    drop((r1, r2));
    let p2 = path.clone();
    let t = thread::spawn(move || {
        Topic::open(&p2, true, false)?
            .wait_readers(1)
            .map_err(anyhow::Error::from)
    });
    thread::sleep(Duration::from_millis(300));
    baf::control::remove(name)?;
    let res = join_within(t, "wait at removal")?;
    ensure!(
        res.as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<io::Error>())
            .and_then(|e| e.raw_os_error())
            == Some(libc::ENODEV),
        "removal while waiting for readers gave {res:?}"
    );
    Ok(())
}

/// Writer 1's `k`-th record in the stress test: random length, pattern
/// bytes.
fn stress_rec(k: u32) -> Vec<u8> {
    let mut x = u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let len = 8 + (xorshift(&mut x) % if k % 50 == 0 { 16000 } else { 600 }) as usize;
    pattern(1, k, len)
}

pub(crate) fn lossless_stress_is_byte_exact(_cx: &Ctx) -> Result<()> {
    let name = "ll/stress";
    let path = lossless_topic(name, 65536, 0)?;
    let total = 12_000u32;
    // Reader 1: records, checked one by one. Reader 2: bytes through a
    // small buffer (records come in pieces), throttled. A lossy reader.
    let r1 = lossless_reader(&path, false)?;
    let r2 = Topic::open(&path, false, false)?;
    r2.set_flags(abi::FLAG_LOSSLESS)?;
    let lossy = Topic::open(&path, false, false)?;
    lossy.set_flags(abi::FLAG_RECORD)?;
    let t1 = thread::spawn(move || -> Result<()> {
        let mut next = 0u32;
        while next < total {
            for (h, p) in get_records(&r1, 1 << 16)? {
                ensure!(
                    p == stress_rec(next),
                    "reader 1: record seq {} is not #{next}",
                    h.seq
                );
                next += 1;
            }
        }
        ensure!(r1.info()?.lost == 0, "reader 1 lost records");
        Ok(())
    });
    let t2 = thread::spawn(move || -> Result<u64> {
        let (mut k, mut at, mut cur) = (0u32, 0usize, stress_rec(0));
        let mut bytes = 0u64;
        let mut reads = 0u32;
        let mut buf = [0u8; 777];
        while k < total {
            let n = r2.file().read(&mut buf)?;
            ensure!(n > 0, "reader 2: end of file");
            for &b in &buf[..n] {
                ensure!(b == cur[at], "reader 2: byte {at} of record #{k} differs");
                at += 1;
                if at == cur.len() {
                    k += 1;
                    at = 0;
                    cur = stress_rec(k);
                }
            }
            bytes += n as u64;
            reads += 1;
            if reads % 16 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        ensure!(r2.info()?.lost == 0, "reader 2 lost records");
        Ok(bytes)
    });
    let t3 = thread::spawn(move || -> Result<u64> {
        let mut seen = 0u64;
        let mut last = None;
        loop {
            let v = get_records(&lossy, 1 << 16)?;
            for (h, p) in v {
                ensure!(
                    p == stress_rec(h.seq as u32),
                    "lossy reader: record {} is torn",
                    h.seq
                );
                ensure!(last.is_none_or(|l| h.seq > l), "lossy reader: out of order");
                last = Some(h.seq);
                seen += 1;
            }
            if last == Some(u64::from(total) - 1) {
                return Ok(seen);
            }
        }
    });
    // Plain writes and batches, from one writer.
    let w = writer(&path)?;
    let bw = Topic::open(&path, true, false)?;
    bw.set_flags(abi::FLAG_BATCH)?;
    let mut k = 0u32;
    while k < total {
        if k % 3 == 0 {
            let mut b = baf::device::Batch::new();
            let end = (k + 40).min(total);
            for j in k..end {
                b.push(&stress_rec(j))?;
            }
            baf::device::write_batch(bw.file(), b.as_bytes())?;
            k = end;
        } else {
            put(&w, &stress_rec(k))?;
            k += 1;
        }
    }
    join_within(t1, "reader 1")??;
    let bytes = join_within(t2, "reader 2")??;
    let lossy_seen = join_within(t3, "lossy reader")??;
    let want: u64 = (0..total).map(|k| stress_rec(k).len() as u64).sum();
    ensure!(bytes == want, "reader 2 got {bytes} bytes of {want}");
    println!("  lossy reader saw {lossy_seen} of {total} records");
    baf::control::remove(name)?;
    Ok(())
}
