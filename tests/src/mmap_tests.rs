//! VM tests of the mapped ring: a consumer under lapping, read-only and
//! checked mappings, a mapping that outlives its topic, and namespaces
//! where mmap is refused.

use super::*;

pub(crate) fn mapped_consumer_under_lapping(_cx: &Ctx) -> Result<()> {
    const NAME: &str = "mapped/lap";
    let path = fresh_topic(NAME, 16384)?;
    let t = nb_reader(&path)?;
    let m = Mapping::map(t.file().as_raw_fd(), page_size() + 16384)?;
    let mut mr = MapReader::at_head(&m)?;
    ensure!(mr.size == 16384 && mr.record_max == 4096, "control page");
    let start = mr.seq;
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let writer_thread = {
        let (path, stop, finished) = (path.clone(), stop.clone(), finished.clone());
        thread::spawn(move || -> Result<u64> {
            let w = writer(&path)?;
            let mut rng = 0x1234_5678_9abc_def1u64;
            let mut counter = 0u32;
            let r = (|| -> Result<u64> {
                while !stop.load(Ordering::Relaxed) {
                    let len = stress_len(&mut rng, 4096);
                    put(&w, &stress_payload(0, counter, len))?;
                    counter += 1;
                }
                Ok(u64::from(counter))
            })();
            finished.store(true, Ordering::Release);
            r
        })
    };
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut delivered = 0u64;
    let mut batches = 0u64;
    let mut prev_ts = 0;
    let result = (|| -> Result<()> {
        loop {
            if Instant::now() > deadline {
                stop.store(true, Ordering::Relaxed);
            }
            let recs = mr.poll(65536)?;
            if recs.is_empty() {
                if finished.load(Ordering::Acquire) && mr.pos == m.u64_at(abi::CTRL_HEAD) {
                    return mr.settle();
                }
                mr.wait(&t, 50)?;
                continue;
            }
            for (h, p) in &recs {
                ensure!(h.len as usize == p.len(), "header length {}", h.len);
                let (_, c) = check_stress(p, 1)?;
                ensure!(
                    u64::from(c) == h.seq.wrapping_sub(start),
                    "record seq {} carries counter {c}",
                    h.seq
                );
                ensure!(h.pid == me && h.uid == 0, "pid {} uid {}", h.pid, h.uid);
                ensure!(h.timestamp_ns >= prev_ts, "time went back");
                prev_ts = h.timestamp_ns;
                delivered += 1;
            }
            batches += 1;
            if batches % 16 == 0 {
                thread::sleep(Duration::from_millis(20)); // get lapped
            }
        }
    })();
    stop.store(true, Ordering::Relaxed);
    let written = writer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))?;
    let _ = baf::control::remove(NAME);
    result?;
    let written = written?;
    let head_seq = m.u64_at(abi::CTRL_HEAD_SEQ);
    ensure!(
        head_seq - start == written,
        "control page: {} records, the writer wrote {written}",
        head_seq - start
    );
    ensure!(
        delivered + mr.lost == written,
        "delivered {delivered} + lost {} != written {written}",
        mr.lost
    );
    ensure!(
        mr.laps > 0 && mr.lost > 0,
        "the mapped reader was never lapped"
    );
    // The kernel counts exactly the loss the mapping reader reported.
    mr.sync(&t)?;
    let info = t.info()?;
    ensure!(
        info.lost == mr.lost && info.topic_lost >= mr.lost,
        "kernel counts {} lost for the file ({} for the topic), the reader saw {}",
        info.lost,
        info.topic_lost,
        mr.lost
    );
    // Loss cannot be over-reported: more than the records moved past since
    // the last sync is EINVAL.
    expect_errno(t.mapped_sync(mr.seq, 1), libc::EINVAL, "over-reported loss")?;
    expect_errno(
        t.mapped_sync(mr.seq + 1_000_000, 0),
        libc::ERANGE,
        "a seq not yet written",
    )?;
    println!(
        "  mapped reader: {written} written, {delivered} delivered, {} lost in {} laps, {} copies dropped",
        mr.lost, mr.laps, mr.retries
    );
    Ok(())
}

pub(crate) fn mmap_is_read_only_and_checked(cx: &Ctx) -> Result<()> {
    let page = page_size();
    let full = page + RING as usize;
    let ro = File::open(&cx.a)?;
    let rw = OpenOptions::new().read(true).write(true).open(&cx.a)?;
    let wo = writer(&cx.a)?;
    let fd = ro.as_raw_fd();
    {
        let m = Mapping::map(fd, full).context("the documented mapping")?;
        let mr = MapReader::at_head(&m)?;
        ensure!(
            mr.size == RING && mr.record_max == RECORD_MAX,
            "control page: ring {} record_max {}",
            mr.size,
            mr.record_max
        );
        ensure!(
            m.u32_at(abi::CTRL_FLAGS) & abi::CTRL_FLAG_REMOVED == 0,
            "a live topic marked removed"
        );
        // The mapping follows the topic.
        let seq = m.u64_at(abi::CTRL_HEAD_SEQ);
        put(&wo, b"seen through the mapping")?;
        ensure!(
            m.u64_at(abi::CTRL_HEAD_SEQ) == seq + 1,
            "head seq did not move"
        );
        let mut mr = mr;
        let recs = mr.poll(1 << 20)?;
        ensure!(
            recs.len() == 1 && recs[0].1 == b"seen through the mapping" && recs[0].0.seq == seq,
            "mapped record: {recs:?}"
        );
    }
    Mapping::map(fd, page).context("only the control page")?;
    let rwx = libc::PROT_READ | libc::PROT_WRITE;
    expect_errno(
        Mapping::raw(rw.as_raw_fd(), full, rwx, libc::MAP_SHARED, 0),
        libc::EPERM,
        "PROT_WRITE, MAP_SHARED, O_RDWR file",
    )?;
    expect_errno(
        Mapping::raw(fd, full, rwx, libc::MAP_PRIVATE, 0),
        libc::EPERM,
        "PROT_WRITE, MAP_PRIVATE",
    )?;
    for (what, file, flags) in [
        ("MAP_SHARED of an O_RDWR file", &rw, libc::MAP_SHARED),
        ("MAP_PRIVATE", &ro, libc::MAP_PRIVATE),
    ] {
        let m = match Mapping::raw(file.as_raw_fd(), full, libc::PROT_READ, flags, 0) {
            Ok(m) => m,
            // The ABI documents MAP_SHARED only; refusing MAP_PRIVATE is fine.
            Err(e) if flags == libc::MAP_PRIVATE => {
                println!("  mmap: a read-only MAP_PRIVATE mapping is refused ({e})");
                continue;
            }
            Err(e) => return Err(e).context(what),
        };
        // SAFETY: changing the protection of our own mapping (which must
        // fail).
        let rc = unsafe { libc::mprotect(m.ptr.cast(), page, rwx) };
        ensure!(
            rc == -1 && errno_now() == libc::EACCES,
            "mprotect(PROT_WRITE) of a read-only {what} mapping: {rc} {}",
            io::Error::last_os_error()
        );
    }
    expect_errno(
        Mapping::map(wo.as_raw_fd(), full),
        libc::EACCES,
        "mmap of an O_WRONLY file",
    )?;
    expect_errno(
        Mapping::raw(fd, page, libc::PROT_READ, libc::MAP_SHARED, page as i64),
        libc::EINVAL,
        "offset of one page",
    )?;
    expect_errno(
        Mapping::map(fd, full + page),
        libc::EINVAL,
        "a page more than control page + ring",
    )?;
    Ok(())
}

pub(crate) fn mapping_outlives_topic_removal(_cx: &Ctx) -> Result<()> {
    const NAME: &str = "mapped/removed";
    let path = fresh_topic(NAME, 65536)?;
    let file = File::open(&path)?;
    let m = Mapping::map(file.as_raw_fd(), page_size() + 65536)?;
    let r = nb_reader(&path)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&path)?;
    let payloads: Vec<Vec<u8>> = (0..5)
        .map(|i| pattern(9, i, 100 + 50 * i as usize))
        .collect();
    for p in &payloads {
        put(&w, p)?;
    }
    let read = drain(&r)?;
    let mut mr = MapReader::new(&m, 0, 0)?;
    let mapped = mr.poll(1 << 20)?;
    ensure!(
        mapped == read,
        "the mapping and read() disagree:\n{mapped:?}\n{read:?}"
    );
    ensure!(
        mapped.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>() == payloads,
        "mapped payloads"
    );
    baf::control::remove(NAME)?;
    drop((w, r, file));
    ensure!(!path.exists(), "the node is still there");
    ensure!(
        m.u32_at(abi::CTRL_FLAGS) & abi::CTRL_FLAG_REMOVED != 0,
        "CTRL_FLAGS {:#x} after removal",
        m.u32_at(abi::CTRL_FLAGS)
    );
    let mut again = MapReader::new(&m, 0, 0)?;
    let after = again.poll(1 << 20)?;
    ensure!(
        after == read,
        "the mapping changed after removal: {after:?}"
    );
    ensure!(
        again.poll(1 << 20)?.is_empty(),
        "more records after removal"
    );
    ensure!(
        m.u64_at(abi::CTRL_HEAD_SEQ) == 5,
        "head seq {}",
        m.u64_at(abi::CTRL_HEAD_SEQ)
    );
    m.unmap().context("munmap after removal")?;
    Ok(())
}

/// In a child process in other namespaces: `mmap` of a topic (opened there,
/// or inherited) must be `EPERM`; a record-mode read must work and show the
/// last record with `want_pid`/`want_uid`. Returns 0 or `base + reason`.
///
/// # Safety
///
/// Only for a forked child: raw syscalls, no allocation.
unsafe fn ns_child_checks(
    path: &std::ffi::CStr,
    inherited: i32,
    page: usize,
    want_pid: u32,
    want_uid: u32,
    base: i32,
) -> i32 {
    // SAFETY: raw syscalls on valid arguments (caller contract).
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
        if fd < 0 {
            return base + 1;
        }
        for f in [fd, inherited] {
            let p = libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f,
                0,
            );
            if p != libc::MAP_FAILED {
                return base + 2;
            }
            if errno_now() != libc::EPERM {
                return base + 3;
            }
        }
        let flags: u32 = abi::FLAG_RECORD | abi::FLAG_WRITER_ID;
        let mut seek = abi::Seek {
            whence: abi::SEEK_LAST,
            reserved: 0,
            arg: 1,
        };
        if libc::ioctl(fd, abi::IOC_SET_FLAGS as _, &flags) != 0
            || libc::ioctl(fd, abi::IOC_SEEK as _, &mut seek) != 0
        {
            return base + 4;
        }
        let mut buf = [0u8; 256];
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        let Some(h) = RecordHeader::from_bytes(&buf[..n.max(0) as usize]) else {
            return base + 5;
        };
        let want = NS_PAYLOAD;
        if h.len as usize != want.len()
            || buf.get(abi::RECORD_HEADER_SIZE..abi::RECORD_HEADER_SIZE + want.len()) != Some(want)
        {
            return base + 6;
        }
        if h.pid != want_pid {
            return base + 7;
        }
        if h.uid != want_uid {
            return base + 8;
        }
        0
    }
}

const NS_PAYLOAD: &[u8] = b"written outside the namespaces";

pub(crate) fn mmap_refused_in_other_namespaces(cx: &Ctx) -> Result<()> {
    let w = writer(&cx.a)?;
    put(&w, NS_PAYLOAD)?;
    let me = std::process::id();
    let inherited = File::open(&cx.a)?;
    let ifd = inherited.as_raw_fd();
    let path = c_path(&cx.a)?;
    let page = page_size();
    // (flags to unshare, fork after it, pid and uid of the host writer as
    // seen there, base of the exit codes)
    let variants = [
        (libc::CLONE_NEWUSER | libc::CLONE_NEWPID, true, 0, 65534, 10),
        (libc::CLONE_NEWPID, true, 0, 0, 20),
        (libc::CLONE_NEWUSER, false, me, 65534, 30),
    ];
    for (flags, fork_again, want_pid, want_uid, base) in variants {
        // SAFETY: the child only makes raw syscalls and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: raw syscalls in the forked child.
            unsafe {
                if libc::unshare(flags) != 0 {
                    libc::_exit(base + 9);
                }
                if !fork_again {
                    libc::_exit(ns_child_checks(&path, ifd, page, want_pid, want_uid, base));
                }
                let grandchild = libc::fork();
                if grandchild == 0 {
                    libc::_exit(ns_child_checks(&path, ifd, page, want_pid, want_uid, base));
                }
                let mut st = 0;
                libc::waitpid(grandchild, &mut st, 0);
                libc::_exit(if libc::WIFEXITED(st) {
                    libc::WEXITSTATUS(st)
                } else {
                    base + 9
                });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        let ns = match base {
            10 => "new user + pid namespaces",
            20 => "a new pid namespace",
            _ => "a new user namespace",
        };
        ensure!(
            code == 0,
            "in {ns}: {}",
            match code - base {
                1 => "open failed".to_string(),
                2 => "mmap succeeded (must be EPERM)".to_string(),
                3 => "mmap failed, but not with EPERM".to_string(),
                4 => "ioctl failed".to_string(),
                5 => "read returned no record".to_string(),
                6 => "read returned the wrong record".to_string(),
                7 => format!("the host writer's pid is not {want_pid}"),
                8 => format!("the host writer's uid is not {want_uid}"),
                9 => "unshare or fork failed".to_string(),
                _ => format!("exit status {status:#x}"),
            }
        );
    }
    // The inherited file still maps in the initial namespaces.
    Mapping::map(ifd, page).context("mmap in the initial namespaces")?;
    Ok(())
}
