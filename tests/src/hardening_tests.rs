//! VM tests of the second hardening (issue 21, ABI 5): a bounded lossless
//! stall for every kind of writer, lossless readers only where the owner
//! allows them, writes that lose the race with removal, mapped readers
//! lapped over padding, loss counts no caller can inflate, split reads that
//! cannot mix with record reads, and small-buffer readers that never see a
//! torn record.

use super::*;

/// Record size the filling tests use: 1000 payload bytes, a 1032-byte slot.
const SMALL: usize = 1000;

/// A fresh topic of `ring` bytes (lossless ones with `stall_ms`).
fn fresh_topic(name: &str, ring: u64, lossless: bool, stall_ms: u32) -> Result<PathBuf> {
    let _ = baf::control::remove(name);
    let mut o = baf::control::CreateOptions::defaults();
    o.ring_size = ring;
    o.lossless = lossless;
    o.stall_ms = stall_ms;
    baf::control::create(name, &o).with_context(|| format!("create {name}"))?;
    Ok(baf::control::node_of(name))
}

fn sysfs(name: &str, what: &str) -> Result<u64> {
    let p = format!("/sys/class/baf/{}/{what}", name.replace('/', "!"));
    let s = std::fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    s.trim()
        .parse()
        .with_context(|| format!("parse {p}: {s:?}"))
}

fn lossless_reader(path: &Path) -> Result<Topic> {
    let t = Topic::open(path, false, true)?;
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

/// Writes `SMALL`-byte records until `EAGAIN`; returns how many.
fn fill(w: &File) -> Result<u32> {
    let mut n = 0;
    loop {
        match (&*w).write(&[9u8; SMALL]) {
            Ok(k) => ensure!(k == SMALL, "short write {k}"),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(n),
            Err(e) => return Err(e).context("write"),
        }
        n += 1;
        ensure!(n < 100_000, "the writer never had to wait");
    }
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

/// Two lossless readers that never read, at different positions: one from
/// the start, one after five records.
fn two_stuck_readers(path: &Path) -> Result<(Topic, Topic)> {
    let r1 = lossless_reader(path)?;
    let w = writer(path)?;
    for _ in 0..5 {
        put(&w, &[1u8; SMALL])?;
    }
    let r2 = lossless_reader(path)?;
    Ok((r1, r2))
}

/// The demoted readers: `EPIPE` once, and they cannot be lossless again
/// without reopening.
fn check_demoted(path: &Path, readers: &[&Topic]) -> Result<()> {
    for r in readers {
        expect_errno(get(r, 1 << 20), libc::EPIPE, "a demoted reader's read")?;
        ensure!(
            r.info()?.flags & abi::FLAG_LOSSLESS == 0,
            "a demoted reader is still lossless"
        );
        expect_errno(
            r.set_flags(abi::FLAG_RECORD | abi::FLAG_LOSSLESS),
            libc::EPERM,
            "FLAG_LOSSLESS again after a demotion",
        )?;
    }
    // A new open file may be lossless again.
    lossless_reader(path).context("a reopened reader")?;
    Ok(())
}

pub(crate) fn the_stall_bound_holds_for_every_writer(_cx: &Ctx) -> Result<()> {
    // The default stall timeout applies to a lossless topic made with 0.
    let name = "hd/default";
    let path = fresh_topic(name, 65536, true, 0)?;
    ensure!(
        sysfs(name, "stall_ms")? == u64::from(abi::STALL_MS_DEFAULT),
        "the default stall timeout is not in effect: {}",
        sysfs(name, "stall_ms")?
    );
    ensure!(
        reader(&path)?.info()?.stall_ms == abi::STALL_MS_DEFAULT,
        "IOC_INFO stall_ms"
    );
    baf::control::remove(name)?;

    // 1. A blocking writer: two stuck readers at different positions are
    //    demoted together, after one stall timeout (not two).
    let stall = 2000u32;
    let name = "hd/block";
    let path = fresh_topic(name, 65536, true, stall)?;
    let (r1, r2) = two_stuck_readers(&path)?;
    let w = writer(&path)?;
    let start = Instant::now();
    // Three rings' worth: both readers' records are overwritten.
    for _ in 0..200 {
        put(&w, &[2u8; SMALL])?;
    }
    let took = start.elapsed();
    ensure!(
        sysfs(name, "demoted")? == 2,
        "demoted {}",
        sysfs(name, "demoted")?
    );
    ensure!(
        took >= Duration::from_millis(u64::from(stall) * 3 / 4)
            && took < Duration::from_millis(u64::from(stall) * 7 / 4),
        "a blocking writer behind two stuck readers took {took:?} with a {stall} ms stall timeout"
    );
    check_demoted(&path, &[&r1, &r2])?;
    baf::control::remove(name)?;

    // 2. A non-blocking writer that only ever gets EAGAIN still makes the
    //    stall timeout run out.
    let stall = 1000u32;
    let name = "hd/nonblock";
    let path = fresh_topic(name, 65536, true, stall)?;
    let r = lossless_reader(&path)?;
    let w = nb_writer(&path)?;
    ensure!(fill(&w)? > 0, "nothing written");
    let start = Instant::now();
    loop {
        match (&w).write(&[3u8; SMALL]) {
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
            Err(e) => return Err(e).context("non-blocking write"),
        }
        ensure!(
            start.elapsed() < Duration::from_millis(u64::from(stall) + 5000),
            "an O_NONBLOCK writer still gets EAGAIN after {:?} (stall timeout {stall} ms)",
            start.elapsed()
        );
        thread::sleep(Duration::from_millis(20));
    }
    ensure!(
        start.elapsed() >= Duration::from_millis(u64::from(stall) * 3 / 4),
        "the non-blocking writer passed early: {:?}",
        start.elapsed()
    );
    ensure!(sysfs(name, "demoted")? == 1, "demoted");
    check_demoted(&path, &[&r])?;
    baf::control::remove(name)?;

    // 3. A poll-driven writer: POLLOUT comes once the stall timeout ran
    //    out, with no other write or read to wake it.
    let name = "hd/poll";
    let path = fresh_topic(name, 65536, true, stall)?;
    let r = lossless_reader(&path)?;
    let w = nb_writer(&path)?;
    ensure!(fill(&w)? > 0, "nothing written");
    let start = Instant::now();
    let revents = poll_out(w.as_raw_fd(), (stall + 5000) as i32);
    let waited = start.elapsed();
    ensure!(
        revents & libc::POLLOUT != 0,
        "poll for POLLOUT behind a stuck reader timed out after {waited:?} (stall timeout {stall} ms)"
    );
    ensure!(
        waited >= Duration::from_millis(u64::from(stall) * 3 / 4),
        "POLLOUT came early: {waited:?}"
    );
    (&w).write(&[4u8; SMALL]).context("write after POLLOUT")?;
    ensure!(sysfs(name, "demoted")? == 1, "demoted");
    check_demoted(&path, &[&r])?;
    baf::control::remove(name)?;
    Ok(())
}

/// Runs `f` in a child process with uid and gid 65534 and the
/// supplementary groups `groups`; its exit status.
fn as_nobody(groups: &[libc::gid_t], f: impl FnOnce() -> i32) -> Result<i32> {
    // SAFETY: the child makes only raw system calls (setgroups, setgid,
    // setuid, open, ioctl, close) before `_exit`, and allocates nothing.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                libc::_exit(100);
            }
            libc::_exit(f());
        }
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    ensure!(libc::WIFEXITED(st), "the child did not exit: {st:#x}");
    Ok(libc::WEXITSTATUS(st))
}

/// In a child: opens `path` read-only and sets `FLAG_LOSSLESS`; 0 when
/// that worked, else the errno (200 if the open failed).
fn try_lossless(path: &std::ffi::CStr) -> i32 {
    // SAFETY: raw calls with a live path and a live flags word.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return 200;
        }
        let mut flags = abi::FLAG_LOSSLESS;
        let rc = libc::ioctl(fd, abi::IOC_SET_FLAGS as _, &mut flags);
        let errno = *libc::__errno_location();
        libc::close(fd);
        if rc == 0 {
            0
        } else {
            errno
        }
    }
}

pub(crate) fn lossless_only_where_the_owner_allows(_cx: &Ctx) -> Result<()> {
    // A topic of root's, 0644: anyone may read it, only its owner and group
    // may hold its writers up.
    let name = "hd/owner";
    let _ = baf::control::remove(name);
    let mut o = baf::control::CreateOptions::defaults();
    o.ring_size = 65536;
    o.lossless = true;
    o.mode = 0o644;
    o.uid = 0;
    o.gid = 0;
    baf::control::create(name, &o)?;
    let path = c_path(&baf::control::node_of(name))?;
    let rc = as_nobody(&[], || try_lossless(&path))?;
    ensure!(
        rc == libc::EPERM,
        "an unprivileged reader of a 0644 root topic: FLAG_LOSSLESS gave {rc}, not EPERM"
    );
    // A member of the topic's group may.
    let name2 = "hd/group";
    let _ = baf::control::remove(name2);
    o.mode = 0o640;
    o.gid = 900;
    baf::control::create(name2, &o)?;
    let path2 = c_path(&baf::control::node_of(name2))?;
    let rc = as_nobody(&[900], || try_lossless(&path2))?;
    ensure!(rc == 0, "a member of the topic's group was refused: {rc}");
    // Root (the owner, with CAP_SYS_ADMIN) may.
    lossless_reader(&baf::control::node_of(name))?;

    // No stall timeout at all only for CAP_SYS_ADMIN.
    let spec = |n: &str, stall_ms: u32, uid: u32, gid: u32| abi::TopicSpec {
        name: abi::TopicName::new(n.as_bytes()).unwrap_or(abi::TopicName {
            bytes: [0; abi::NAME_MAX + 8],
        }),
        ring_size: 65536,
        record_max: 0,
        mode: 0o660,
        uid,
        gid,
        flags: abi::TOPIC_LOSSLESS,
        stall_ms,
    };
    let create = |s: &abi::TopicSpec| -> i32 {
        // SAFETY: raw calls with a live spec.
        unsafe {
            let fd = libc::open(c"/dev/baf-control".as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return 200;
            }
            let rc = libc::ioctl(fd, abi::IOC_CREATE as _, s as *const abi::TopicSpec);
            let errno = *libc::__errno_location();
            libc::close(fd);
            if rc >= 0 {
                0
            } else {
                errno
            }
        }
    };
    let _ = baf::control::remove("hd/never");
    let never = spec("hd/never", abi::STALL_MS_NEVER, 65534, 900);
    let rc = as_nobody(&[900], || create(&never))?;
    ensure!(
        rc == libc::EPERM,
        "an unprivileged creator turned the stall timeout off: {rc}"
    );
    ensure!(
        !Path::new("/dev/baf/hd/never").exists(),
        "the refused topic exists"
    );
    ensure!(
        create(&spec("hd/never", abi::STALL_MS_NEVER, 0, 0)) == 0,
        "root"
    );
    ensure!(
        sysfs("hd/never", "stall_ms")? == u64::from(abi::STALL_MS_NEVER),
        "stall_ms of a topic without a timeout"
    );

    // At most LOSSLESS_MAX lossless readers.
    let p = baf::control::node_of(name);
    let mut many = Vec::new();
    for _ in 0..abi::LOSSLESS_MAX {
        many.push(lossless_reader(&p)?);
    }
    let extra = Topic::open(&p, false, true)?;
    expect_errno(
        extra.set_flags(abi::FLAG_LOSSLESS),
        libc::ENOSPC,
        "one lossless reader too many",
    )?;
    drop(many);
    extra.set_flags(abi::FLAG_LOSSLESS)?;
    for n in [name, name2, "hd/never"] {
        baf::control::remove(n)?;
    }
    Ok(())
}

pub(crate) fn writes_racing_removal_fail_with_enodev(_cx: &Ctx) -> Result<()> {
    const LEN: usize = 60_000;
    for round in 0..40u64 {
        let name = "hd/race";
        let path = fresh_topic(name, 1 << 20, true, 0)?;
        let r = Topic::open(&path, false, false)?;
        r.set_flags(abi::FLAG_RECORD | abi::FLAG_LOSSLESS)?;
        let reader = thread::spawn(move || -> Result<(u64, u64)> {
            let mut got = 0u64;
            loop {
                match get_records(&r, 2 << 20) {
                    Ok(v) if v.is_empty() => break,
                    Ok(v) => {
                        for (_, p) in &v {
                            ensure!(p.len() == LEN, "a record of {} bytes", p.len());
                        }
                        got += v.len() as u64;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => return Err(e).context("read"),
                }
            }
            Ok((got, r.info()?.lost))
        });
        // Opened here, before the removal can come.
        let w = writer(&path)?;
        let written = Arc::new(AtomicU64::new(0));
        let w2 = written.clone();
        let writer_t = thread::spawn(move || -> Result<(u64, i32)> {
            let data = vec![5u8; LEN];
            loop {
                match (&w).write(&data) {
                    Ok(n) => {
                        ensure!(n == LEN, "short write {n}");
                        w2.fetch_add(1, Ordering::Release);
                    }
                    Err(e) => {
                        return Ok((w2.load(Ordering::Acquire), e.raw_os_error().unwrap_or(0)))
                    }
                }
            }
        });
        // Removed while the writer is busy writing.
        let start = Instant::now();
        while written.load(Ordering::Acquire) == 0 {
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "round {round}: the writer wrote nothing"
            );
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(round % 7 * 2));
        baf::control::remove(name)?;
        let (wrote, errno) = writer_t
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        let (got, lost) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        ensure!(
            errno == libc::ENODEV,
            "round {round}: the writer ended with errno {errno}, not ENODEV"
        );
        ensure!(lost == 0, "round {round}: the lossless reader lost {lost}");
        ensure!(
            got == wrote,
            "round {round}: the writer was told {wrote} records were written, the reader got {got} before end of file"
        );
    }
    Ok(())
}

pub(crate) fn seek_and_sync_cannot_inflate_loss(_cx: &Ctx) -> Result<()> {
    let name = "hd/sync";
    let path = fresh_topic(name, 65536, false, 0)?;
    let r = nb_reader(&path)?;
    let w = writer(&path)?;
    for i in 0..100u32 {
        put(&w, &i.to_le_bytes())?;
    }
    let before = r.info()?.topic_lost;
    let oldest = r.seek(abi::SEEK_OLDEST, 0)?;
    let next = r.info()?.next_seq;
    let k = next - oldest;
    // The first report of those records is taken...
    ensure!(!r.mapped_sync(next, k)?, "lapped?");
    ensure!(r.info()?.topic_lost == before + k, "the first report");
    // ...but the same records cannot be reported again after a seek back.
    for _ in 0..5 {
        r.seek(abi::SEEK_OLDEST, 0)?;
        expect_errno(r.mapped_sync(next, k), libc::EINVAL, "the same loss again")?;
        expect_errno(r.mapped_sync(next, 1), libc::EINVAL, "one record again")?;
        ensure!(r.mapped_sync(next, 0).is_ok(), "a sync without loss");
    }
    let i = r.info()?;
    ensure!(
        i.topic_lost == before + k && i.lost == k,
        "the topic's loss grew to {} (file {}), from {before} + {k}",
        i.topic_lost,
        i.lost
    );

    baf::control::remove(name)?;

    // A refused sync does not move a lossless reader's hold.
    let name = "hd/hold";
    let path = fresh_topic(name, 65536, true, 0)?;
    let lr = lossless_reader(&path)?;
    let w = nb_writer(&path)?;
    for _ in 0..20 {
        put(&w, &[6u8; SMALL])?;
    }
    let oldest = lr.seek(abi::SEEK_OLDEST, 0)?;
    drain(&lr)?;
    let cursor = lr.info()?.cursor_seq;
    expect_errno(
        lr.mapped_sync(oldest + 1, 1000),
        libc::EINVAL,
        "a sync claiming too much loss",
    )?;
    ensure!(
        lr.info()?.cursor_seq == cursor,
        "a refused sync moved the cursor"
    );
    // Nothing unread is held: almost a whole ring fits.
    let n = fill(&w)?;
    let fits = 65536 / abi::record_span(SMALL) as u32;
    ensure!(
        n + 3 >= fits,
        "only {n} records fit after a refused sync (about {fits} should): it moved the hold"
    );
    baf::control::remove(name)?;
    Ok(())
}

pub(crate) fn split_and_record_reads_do_not_mix(_cx: &Ctx) -> Result<()> {
    const LEN: usize = 5000;
    let name = "hd/split";
    let path = fresh_topic(name, 1 << 20, false, 0)?;
    let t = Arc::new(Topic::open(&path, false, true)?);
    let stop = Arc::new(AtomicBool::new(false));
    let p2 = path.clone();
    let s2 = stop.clone();
    let writer_t = thread::spawn(move || -> Result<()> {
        let w = writer(&p2)?;
        let mut k = 0u32;
        while !s2.load(Ordering::Relaxed) {
            put(&w, &pattern(3, k, LEN))?;
            k += 1;
            thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    });
    // A thread reads in small pieces through the same file, splitting
    // records whenever the file is in bytes mode.
    let (t2, s3) = (t.clone(), stop.clone());
    let piece_t = thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !s3.load(Ordering::Relaxed) {
            let _ = t2.file().read(&mut buf);
        }
    });
    let start = Instant::now();
    let mut checked = 0u64;
    let mut result = Ok(());
    while start.elapsed() < Duration::from_secs(3) {
        if t.set_flags(0).is_err() {
            continue;
        }
        match t.set_flags(abi::FLAG_RECORD) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => {
                result = Err(e).context("set record mode");
                break;
            }
        }
        // Record mode now: whatever this read returns must be records.
        let buf = match get(&t, 1 << 20) {
            Ok(b) => b,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => continue,
            Err(e) => {
                result = Err(e).context("record-mode read");
                break;
            }
        };
        let mut rest = &buf[..];
        while !rest.is_empty() {
            let h = abi::RecordHeader::from_bytes_sized(rest, abi::RECORD_HEADER_SIZE);
            let ok = h.is_some_and(|h| {
                let span = abi::record_span(h.len as usize);
                h.len as usize == LEN
                    && h.flags == 0
                    && span <= rest.len()
                    && parse_pattern(&rest[abi::RECORD_HEADER_SIZE..][..LEN]).is_ok()
            });
            if !ok {
                result = Err(anyhow::anyhow!(
                    "a record-mode read returned {} bytes that are not records (raw bytes of a split record?)",
                    rest.len()
                ));
                break;
            }
            rest = &rest[abi::record_span(LEN)..];
            checked += 1;
        }
        if result.is_err() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer_t
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    piece_t
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    result?;
    ensure!(checked > 0, "no record-mode read returned records");
    baf::control::remove(name)?;
    Ok(())
}

pub(crate) fn small_buffer_readers_never_see_a_torn_record(_cx: &Ctx) -> Result<()> {
    let name = "hd/torn";
    let path = fresh_topic(name, 65536, false, 0)?;
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for cap in [1usize, 7, 100, 3000] {
        let t = Topic::open(&path, false, true)?;
        let d = done.clone();
        readers.push(thread::spawn(move || -> Result<(usize, u64, u64)> {
            let mut stream = Vec::new();
            let mut buf = vec![0u8; cap];
            let mut records = 0u64;
            loop {
                match t.file().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => stream.extend_from_slice(&buf[..n]),
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                        if d.load(Ordering::Acquire) {
                            break;
                        }
                        poll_in(t.file().as_raw_fd(), 50);
                    }
                    Err(e) => return Err(e).context("read"),
                }
                // Whole records off the front of the stream.
                while stream.len() >= 16 {
                    let len = le32(&stream, 8) as usize;
                    ensure!(
                        (16..=16384).contains(&len),
                        "reader with a {cap}-byte buffer: a record says it has {len} bytes (torn: part of one record, then another)"
                    );
                    if stream.len() < len {
                        break;
                    }
                    check_stress(&stream[..len], 1).with_context(|| {
                        format!("reader with a {cap}-byte buffer, after {records} whole records")
                    })?;
                    stream.drain(..len);
                    records += 1;
                }
            }
            ensure!(
                stream.is_empty(),
                "reader with a {cap}-byte buffer ends with {} bytes of a record",
                stream.len()
            );
            Ok((cap, records, t.info()?.lost))
        }));
    }
    let w = writer(&path)?;
    let start = Instant::now();
    let mut k = 0u32;
    let mut x = 7u64;
    while start.elapsed() < Duration::from_secs(3) {
        let len = 2000 + (xorshift(&mut x) % 14000) as usize;
        put(&w, &stress_payload(0, k, len))?;
        k += 1;
        if k % 8 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    done.store(true, Ordering::Release);
    let mut lapped = 0;
    for r in readers {
        let (cap, records, lost) = r.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        ensure!(
            records > 0,
            "the reader with a {cap}-byte buffer read nothing"
        );
        println!("  a {cap}-byte reader: {records} whole records, {lost} lost of {k}");
        if lost > 0 {
            lapped += 1;
        }
    }
    ensure!(lapped > 0, "no reader was lapped: not a test of lapping");
    baf::control::remove(name)?;
    Ok(())
}

pub(crate) fn a_mapped_reader_lapped_over_padding(_cx: &Ctx) -> Result<()> {
    let name = "hd/pads";
    let path = fresh_topic(name, 65536, false, 0)?;
    let t = Topic::open(&path, false, true)?;
    let mut m = baf::mapped::Mapped::new(&t)?;
    let w = writer(&path)?;
    for i in 0..3u32 {
        put(&w, &i.to_le_bytes())?;
    }
    let before = t.info()?.topic_lost;
    // Writes that fault mid-record leave only padding: ten of 16 KiB lap
    // the 64 KiB ring.
    let page = page_size();
    let holey = Holey::new(8 * page, 6 * page)?;
    for _ in 0..10 {
        let at = 6 * page - 12_000;
        expect_errno(
            holey.write_to(w.as_raw_fd(), at, 16_000),
            libc::EFAULT,
            "a write into the hole",
        )?;
    }
    let mut out = Vec::new();
    let mut slept = false;
    for _ in 0..3 {
        let p = m.read_into(&mut out, u64::MAX, |_, _, _| {})?;
        ensure!(p.records == 0, "records out of padding");
        if m.prepare_wait(&t)? {
            slept = true;
            break;
        }
    }
    ensure!(
        slept,
        "a mapped reader lapped over padding is told never to sleep (it would spin)"
    );
    // The next record tells the exact loss.
    put(&w, b"next")?;
    let mut got = Vec::new();
    let p = m.read_into(&mut out, u64::MAX, |_, h, payload| {
        got.push((h.seq, payload.to_vec()))
    })?;
    ensure!(
        p.records == 1 && p.lost == 3 && got.first().is_some_and(|g| g.1 == b"next"),
        "after the lap: {p:?}, {got:?}"
    );
    m.report_loss(&t)?;
    let i = t.info()?;
    ensure!(
        i.lost == 3 && i.topic_lost == before + 3,
        "loss counted: file {}, topic {} (was {before})",
        i.lost,
        i.topic_lost
    );
    // Lapped over padding again, then the topic is removed: the loss is
    // counted at the end of the stream.
    put(&w, b"a")?;
    put(&w, b"b")?;
    for _ in 0..10 {
        let _ = holey.write_to(w.as_raw_fd(), 6 * page - 12_000, 16_000);
    }
    baf::control::remove(name)?;
    let p = m.read_into(&mut out, u64::MAX, |_, _, _| {})?;
    ensure!(p.ended && p.lost == 2, "at the end: {p:?}");
    Ok(())
}

pub(crate) fn opens_do_not_wait_for_a_big_ring(cx: &Ctx) -> Result<()> {
    // A 64 MiB ring takes a while to allocate and zero, and its removal
    // waits for RCU: neither may hold up an open() of another topic.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let maker = thread::spawn(move || -> Result<Vec<Duration>> {
        let mut took = Vec::new();
        let name = "hd/big";
        let _ = baf::control::remove(name);
        let mut o = baf::control::CreateOptions::defaults();
        o.ring_size = 64 << 20;
        for _ in 0..4 {
            let t = Instant::now();
            baf::control::create(name, &o)?;
            took.push(t.elapsed());
            baf::control::remove(name)?;
        }
        s2.store(true, Ordering::Release);
        Ok(took)
    });
    let mut worst = Duration::ZERO;
    let mut opens = 0u32;
    while !stop.load(Ordering::Acquire) {
        let t = Instant::now();
        let f = File::open(&cx.b)?;
        worst = worst.max(t.elapsed());
        drop(f);
        opens += 1;
        thread::sleep(Duration::from_micros(500));
    }
    let took = maker
        .join()
        .map_err(|_| anyhow::anyhow!("maker panicked"))??;
    let create = took.iter().min().copied().unwrap_or_default();
    println!("  creating a 64 MiB topic took at least {create:?}; the slowest of {opens} opens meanwhile {worst:?}");
    ensure!(
        worst * 2 < create,
        "an open() waited {worst:?} while a 64 MiB topic was made ({create:?}): the registry lock is held across the allocation"
    );
    Ok(())
}
