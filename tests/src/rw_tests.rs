//! VM tests of reads and writes: whole records, pieces of a large one,
//! splitting and odd sizes, concurrent writers and readers, lapped and
//! strict readers, record headers and what each reader's namespaces show,
//! record mode, fdinfo, and bad user pointers.

use super::*;

pub(crate) fn plain_reads_return_whole_records(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    let w = writer(&cx.a)?;
    put(&w, &[b'a'; 40])?;
    put(&w, &[b'b'; 40])?;
    put(&w, &[b'c'; 10])?;
    // 64 bytes hold one 40-byte record, not two: whole records only.
    ensure!(get(&r, 64)? == [b'a'; 40], "first read");
    let second = get(&r, 64)?;
    ensure!(
        second == [&[b'b'; 40][..], &[b'c'; 10]].concat(),
        "second read: {second:?}"
    );
    expect_errno(get(&r, 64), libc::EAGAIN, "empty topic")
}

pub(crate) fn oversized_record_comes_in_pieces(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    let w = writer(&cx.a)?;
    let big = pattern(1, 7, 1000);
    put(&w, &big)?;
    put(&w, b"next")?;
    let mut got = Vec::new();
    for want in [300, 300, 300, 100] {
        let piece = get(&r, 300)?;
        ensure!(
            piece.len() == want,
            "piece of {} bytes, want {want}",
            piece.len()
        );
        got.extend(piece);
    }
    ensure!(got == big, "pieces do not rebuild the record");
    ensure!(get(&r, 300)? == b"next", "record after the split one");
    Ok(())
}

pub(crate) fn zero_length_write_is_a_noop(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    let w = writer(&cx.a)?;
    let before = r.info()?.next_seq;
    ensure!((&w).write(&[])? == 0, "write of 0 bytes");
    ensure!(r.info()?.next_seq == before, "a record appeared");
    expect_errno(get(&r, 64), libc::EAGAIN, "nothing to read")
}

pub(crate) fn large_write_is_split_into_records(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&cx.a)?;
    let data: Vec<u8> = (0..RECORD_MAX * 3 + RECORD_MAX / 2)
        .map(|i| (i % 251) as u8)
        .collect();
    put(&w, &data)?;
    let recs = drain(&r)?;
    let lens: Vec<usize> = recs.iter().map(|(_, p)| p.len()).collect();
    ensure!(
        lens == [RECORD_MAX, RECORD_MAX, RECORD_MAX, RECORD_MAX / 2],
        "record lengths {lens:?}"
    );
    ensure!(recs.concat_payloads() == data, "bytes differ");
    Ok(())
}

trait Payloads {
    fn concat_payloads(&self) -> Vec<u8>;
}

impl Payloads for Vec<Rec> {
    fn concat_payloads(&self) -> Vec<u8> {
        self.iter().flat_map(|(_, p)| p.iter().copied()).collect()
    }
}

pub(crate) fn huge_write_is_taken_whole(cx: &Ctx) -> Result<()> {
    // 8 MiB in one write(): 32 times the ring. The writer never blocks; the
    // ring keeps the newest records, each whole.
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let before = r.info()?.next_seq;
    let data: Vec<u8> = (0..8usize << 20).map(|i| (i / RECORD_MAX) as u8).collect();
    put(&writer(&cx.a)?, &data)?;
    let after = r.info()?.next_seq;
    ensure!(
        after - before == (data.len() / RECORD_MAX) as u64,
        "{} records for 8 MiB",
        after - before
    );
    let recs = drain(&r)?;
    let last = recs.last().context("nothing kept")?;
    ensure!(
        last.0.seq == after - 1,
        "last record {} != {}",
        last.0.seq,
        after - 1
    );
    for (h, p) in &recs {
        let k = (h.seq - before) as usize;
        ensure!(
            p.len() == RECORD_MAX && p.iter().all(|&b| b == k as u8),
            "record {k} is not chunk {k} of the write"
        );
    }
    Ok(())
}

pub(crate) fn odd_sizes_round_trip(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&cx.a)?;
    let sizes = [
        1,
        2,
        7,
        8,
        9,
        31,
        32,
        33,
        4095,
        4096,
        4097,
        RECORD_MAX - 1,
        RECORD_MAX,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        put(&w, &pattern(3, i as u32, n))?;
    }
    let recs = drain(&r)?;
    ensure!(
        recs.len() == sizes.len(),
        "{} records, want {}",
        recs.len(),
        sizes.len()
    );
    for ((h, p), (i, &n)) in recs.iter().zip(sizes.iter().enumerate()) {
        ensure!(
            h.len as usize == n && p.len() == n,
            "record {i}: length {}",
            h.len
        );
        ensure!(
            *p == pattern(3, i as u32, n),
            "record {i} ({n} bytes) differs"
        );
    }
    Ok(())
}

pub(crate) fn concurrent_writers_never_tear(cx: &Ctx) -> Result<()> {
    const WRITERS: u8 = 4;
    const EACH: u32 = 1500;
    let r = reader(&cx.b)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let start = r.info()?.cursor_seq;
    let path = cx.b.clone();
    let handles: Vec<_> = (0..WRITERS)
        .map(|id| {
            let path = path.clone();
            thread::spawn(move || -> Result<()> {
                let w = writer(&path)?;
                let mut seed = 0x9e37_79b9u32.wrapping_mul(id as u32 + 1);
                for counter in 0..EACH {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let len = 8 + (seed as usize % 3000);
                    put(&w, &pattern(id, counter, len))?;
                }
                Ok(())
            })
        })
        .collect();
    let total = u64::from(WRITERS) * u64::from(EACH);
    let mut last = [None::<u32>; WRITERS as usize];
    let mut received = 0u64;
    let mut prev_seq = None;
    while start + received + r.info()?.lost < start + total {
        for (h, p) in get_records(&r, 1 << 20)? {
            let (id, counter) = parse_pattern(&p)?;
            ensure!(id < WRITERS, "unknown writer {id}");
            if let Some(prev) = last[id as usize] {
                ensure!(counter > prev, "writer {id}: #{counter} after #{prev}");
            }
            last[id as usize] = Some(counter);
            if let Some(s) = prev_seq {
                ensure!(h.seq > s, "sequence went from {s} to {}", h.seq);
            }
            prev_seq = Some(h.seq);
            received += 1;
        }
    }
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    let info = r.info()?;
    ensure!(
        received + info.lost == total,
        "received {received} + lost {} != written {total}",
        info.lost
    );
    println!(
        "  concurrent writers: {received} records checked byte by byte, {} lapped",
        info.lost
    );
    Ok(())
}

/// A `write()` split into several records publishes them back to back,
/// even while other writers send one small record a `write()` (which the
/// module publishes without the writer turn when nobody else is inside
/// `write()`: it must not squeeze between the records of another call).
pub(crate) fn split_write_stays_together_beside_small_writers(_cx: &Ctx) -> Result<()> {
    const SPLIT: u8 = 9;
    const SPLITS: u32 = 300;
    const SMALL: u32 = 3000;
    let _ = baf::control::remove("rw/together");
    let mut o = baf::control::CreateOptions::defaults();
    o.ring_size = 8 << 20;
    o.record_max = 4096;
    baf::control::create("rw/together", &o)?;
    let path = baf::control::node_of("rw/together");
    let r = nb_reader(&path)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let max = r.info()?.record_max as usize;
    let mut handles = Vec::new();
    {
        let path = path.clone();
        handles.push(thread::spawn(move || -> Result<()> {
            let w = writer(&path)?;
            for k in 0..SPLITS {
                let data: Vec<u8> = (0..3)
                    .flat_map(|p| pattern(SPLIT, k * 3 + p, max))
                    .collect();
                put(&w, &data)?;
            }
            Ok(())
        }));
    }
    for id in 0..2u8 {
        let path = path.clone();
        handles.push(thread::spawn(move || -> Result<()> {
            let w = writer(&path)?;
            for counter in 0..SMALL {
                put(&w, &pattern(id, counter, 32))?;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    let recs = drain(&r)?;
    let lost = r.info()?.lost;
    let _ = baf::control::remove("rw/together");
    ensure!(
        lost == 0,
        "{lost} records lost on a ring that holds them all"
    );
    ensure!(
        recs.len() == (SPLITS * 3 + 2 * SMALL) as usize,
        "{} records, want {}",
        recs.len(),
        SPLITS * 3 + 2 * SMALL
    );
    let mut small_between = 0;
    let mut open: Option<u32> = None;
    for (_, p) in &recs {
        let (id, counter) = parse_pattern(p)?;
        match (id, open) {
            (SPLIT, None) => {
                ensure!(
                    counter % 3 == 0,
                    "part {} of a write came first",
                    counter % 3
                );
                open = Some(counter);
            }
            (SPLIT, Some(first)) => {
                ensure!(
                    counter == first + 1 || counter == first + 2,
                    "write #{}: record #{counter} inside it",
                    first / 3
                );
                if counter == first + 2 {
                    open = None;
                } else {
                    open = Some(first);
                }
            }
            (_, Some(_)) => small_between += 1,
            (_, None) => {}
        }
    }
    ensure!(
        small_between == 0,
        "{small_between} small records landed between the records of one write()"
    );
    ensure!(open.is_none(), "the last split write is incomplete");
    Ok(())
}

pub(crate) fn every_reader_gets_every_record_in_order(cx: &Ctx) -> Result<()> {
    const READERS: usize = 4;
    const TOTAL: u64 = 4000;
    const WINDOW: u64 = 400; // 400 x 136 bytes stays far below the ring
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..READERS).map(|_| AtomicU64::new(0)).collect());
    let ready = Arc::new(Barrier::new(READERS + 1));
    let handles: Vec<_> = (0..READERS)
        .map(|i| {
            let (path, progress, ready) = (cx.c.clone(), progress.clone(), ready.clone());
            thread::spawn(move || -> Result<()> {
                let r = reader(&path)?;
                r.set_flags(abi::FLAG_RECORD)?;
                let mut expect_seq = r.info()?.cursor_seq;
                ready.wait();
                let mut n = 0u64;
                while n < TOTAL {
                    for (h, p) in get_records(&r, 8192)? {
                        ensure!(
                            h.seq == expect_seq,
                            "reader {i}: seq {} want {expect_seq}",
                            h.seq
                        );
                        ensure!(
                            p == pattern(0, n as u32, 100),
                            "reader {i}: record {n} differs"
                        );
                        expect_seq += 1;
                        n += 1;
                    }
                    progress[i].store(n, Ordering::Release);
                }
                ensure!(r.info()?.lost == 0, "reader {i} lost records");
                Ok(())
            })
        })
        .collect();
    ready.wait();
    let w = writer(&cx.c)?;
    for n in 0..TOTAL {
        // Pace: never more than WINDOW records ahead of the slowest reader.
        let deadline = Instant::now() + Duration::from_secs(30);
        while progress
            .iter()
            .any(|p| p.load(Ordering::Acquire) + WINDOW < n)
        {
            ensure!(Instant::now() < deadline, "a reader stalled");
            thread::sleep(Duration::from_millis(1));
        }
        put(&w, &pattern(0, n as u32, 100))?;
    }
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    }
    Ok(())
}

pub(crate) fn lapped_reader_resumes_with_exact_loss(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let start = r.info()?.cursor_seq;
    let w = writer(&cx.a)?;
    const N: u64 = 3000; // 3000 x 232 bytes: several laps of the ring
    for n in 0..N {
        put(&w, &pattern(5, n as u32, 200))?;
    }
    let info = r.info()?;
    ensure!(info.oldest_seq > start, "the reader was not lapped");
    let recs = drain(&r)?;
    let first = recs.first().context("nothing to read after overrun")?.0.seq;
    let lost = r.info()?.lost;
    ensure!(
        first == info.oldest_seq,
        "resumed at {first}, oldest was {}",
        info.oldest_seq
    );
    ensure!(
        lost == first - start,
        "lost {lost}, but {} records were skipped",
        first - start
    );
    ensure!(
        lost + recs.len() as u64 == N,
        "lost {lost} + read {} != {N}",
        recs.len()
    );
    for (k, (h, p)) in recs.iter().enumerate() {
        ensure!(h.seq == first + k as u64, "gap after resuming at {}", h.seq);
        ensure!(
            *p == pattern(5, (h.seq - start) as u32, 200),
            "record {} differs",
            h.seq
        );
    }
    ensure!(
        r.info()?.topic_lost >= lost,
        "topic total below this reader's loss"
    );
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", r.file().as_raw_fd()))?;
    ensure!(
        fdinfo.contains(&format!("fanout_lost:\t{lost}\n")),
        "fdinfo does not show the loss:\n{fdinfo}"
    );
    println!(
        "  lapped reader: lost exactly {lost}, then read {} in order",
        recs.len()
    );
    Ok(())
}

pub(crate) fn strict_mode_fails_once_with_epipe(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD | abi::FLAG_STRICT)?;
    let start = r.info()?.cursor_seq;
    let w = writer(&cx.a)?;
    for n in 0..3000u32 {
        put(&w, &pattern(6, n, 200))?;
    }
    expect_errno(get(&r, 1 << 20), libc::EPIPE, "first read after overrun")?;
    let info = r.info()?;
    ensure!(
        info.lost == info.oldest_seq - start,
        "loss not counted before EPIPE"
    );
    let recs = drain(&r)?;
    ensure!(
        recs.first().map(|x| x.0.seq) == Some(info.oldest_seq),
        "strict reader did not resume at the oldest record"
    );
    Ok(())
}

pub(crate) fn record_headers_carry_provenance(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let t0 = monotonic_ns();
    // A child that becomes uid 1000 writes two records.
    let path = c_path(&cx.a)?;
    // SAFETY: the child only calls async-signal-safe functions before _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: plain syscalls on valid arguments in the forked child.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            let ok = fd >= 0
                && libc::setgid(1000) == 0
                && libc::setuid(1000) == 0
                && libc::write(fd, b"child-1".as_ptr().cast(), 7) == 7
                && libc::write(fd, b"child-2".as_ptr().cast(), 7) == 7;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    ensure!(status == 0, "child writer failed (status {status})");
    // The parent writes a payload that looks like a header claiming pid 4242:
    // the kernel's header must not care.
    let forged = RecordHeader {
        len: 3,
        flags: 0,
        seq: 999,
        timestamp_ns: 1,
        pid: 4242,
        uid: 4242,
        writer: 4242,
    }
    .to_bytes();
    let w = writer(&cx.a)?;
    put(&w, &forged)?;
    let t1 = monotonic_ns();
    let recs = drain(&r)?;
    ensure!(recs.len() == 3, "{} records", recs.len());
    let me = std::process::id();
    let want = [
        (child as u32, 1000, b"child-1".to_vec()),
        (child as u32, 1000, b"child-2".to_vec()),
        (me, 0, forged.to_vec()),
    ];
    let mut prev_ts = t0;
    for (k, ((h, p), (pid, uid, payload))) in recs.iter().zip(want).enumerate() {
        ensure!(
            h.pid == pid && h.uid == uid,
            "record {k}: pid {} uid {}, want {pid} {uid}",
            h.pid,
            h.uid
        );
        ensure!(
            *p == payload && h.len as usize == payload.len(),
            "record {k}: payload"
        );
        ensure!(
            h.seq == recs[0].0.seq + k as u64,
            "record {k}: seq {}",
            h.seq
        );
        ensure!(
            h.timestamp_ns >= prev_ts && h.timestamp_ns <= t1,
            "record {k}: timestamp {} outside [{prev_ts}, {t1}]",
            h.timestamp_ns
        );
        ensure!(h.flags == 0, "record {k}: flags {}", h.flags);
        prev_ts = h.timestamp_ns;
    }
    Ok(())
}

pub(crate) fn record_mode_refuses_too_small_buffers(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&cx.a)?;
    put(&w, &[7u8; 100])?;
    expect_errno(get(&r, 64), libc::EMSGSIZE, "record mode, 64-byte buffer")?;
    let recs = get_records(&r, 200)?;
    ensure!(
        recs.len() == 1 && recs[0].1 == [7u8; 100],
        "record lost after EMSGSIZE"
    );
    Ok(())
}

pub(crate) fn bad_user_pointers_give_efault(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    let w = writer(&cx.a)?;
    let bad = 8usize as *mut libc::c_void; // never mapped
    let before = r.info()?.next_seq;
    // SAFETY: the kernel must reject the bad pointer; nothing is touched here.
    let rc = unsafe { libc::write(w.as_raw_fd(), bad, 100) };
    ensure!(
        rc == -1 && errno_now() == libc::EFAULT,
        "write from a bad pointer: {rc}"
    );
    ensure!(
        r.info()?.next_seq == before,
        "a bad write published a record"
    );

    // A small record (written through the kernel's stack buffer) and a
    // large one whose bytes run into an unmapped page: EFAULT, nothing
    // published, and the next record keeps the next seq.
    let page = page_size();
    let holey = Holey::new(4 * page, 2 * page)?;
    for len in [200usize, 3000] {
        expect_errno(
            holey.write_to(w.as_raw_fd(), 2 * page - len / 2, len),
            libc::EFAULT,
            &format!("a {len}-byte write running into a hole"),
        )?;
        ensure!(
            r.info()?.next_seq == before,
            "a faulted {len}-byte write published a record"
        );
    }
    let from_hole_edge = holey.write_to(w.as_raw_fd(), 2 * page - 100, 100)?;
    ensure!(
        from_hole_edge == 100,
        "the 100 bytes before the hole: {from_hole_edge}"
    );
    let mut rec = [0u8; 100];
    for (i, b) in rec.iter_mut().enumerate() {
        *b = ((2 * page - 100 + i) % 251) as u8;
    }
    ensure!(get(&r, 200)? == rec, "the record before the hole, intact");
    ensure!(
        r.info()?.next_seq == before + 1,
        "seqs stay dense after faults"
    );

    put(&w, b"keep me")?;
    // SAFETY: as above, for read.
    let rc = unsafe { libc::read(r.file().as_raw_fd(), bad, 100) };
    ensure!(
        rc == -1 && errno_now() == libc::EFAULT,
        "read into a bad pointer: {rc}"
    );
    ensure!(
        get(&r, 100)? == b"keep me",
        "the record was consumed by the failed read"
    );

    // A read of many small records into a buffer that runs into a hole:
    // the whole records before the hole are delivered, the rest stay
    // unread, in both modes.
    for (flags, span, fit) in [(0, 50, 4), (abi::FLAG_RECORD, 96, 2)] {
        r.set_flags(flags)?;
        let recs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![b'a' + i; 50]).collect();
        for rec in &recs {
            put(&w, rec)?;
        }
        let got = holey.read_from(r.file().as_raw_fd(), 2 * page - 230, 1000)?;
        ensure!(
            got.len() == fit * span,
            "flags {flags}: read {} bytes before the hole, want {}",
            got.len(),
            fit * span
        );
        let rest = get(&r, 4096)?;
        let payloads: Vec<Vec<u8>> = if flags == 0 {
            [got, rest]
                .concat()
                .chunks(50)
                .map(<[u8]>::to_vec)
                .collect()
        } else {
            strict_records(&[got, rest].concat())?
                .into_iter()
                .map(|(_, p)| p)
                .collect()
        };
        ensure!(
            payloads == recs,
            "flags {flags}: records lost or torn around the fault"
        );
    }
    r.set_flags(0)?;

    for cmd in [abi::IOC_INFO, abi::IOC_SEEK, abi::IOC_SET_FLAGS] {
        // SAFETY: as above, for ioctl.
        let rc = unsafe { libc::ioctl(r.file().as_raw_fd(), cmd as _, bad) };
        ensure!(
            rc == -1 && errno_now() == libc::EFAULT,
            "ioctl {cmd:#x} with a bad pointer: {rc}"
        );
    }
    // SAFETY: an unknown ioctl number with a null argument.
    let rc = unsafe { libc::ioctl(r.file().as_raw_fd(), 0xBA99 as _, 0) };
    ensure!(
        rc == -1 && errno_now() == libc::ENOTTY,
        "unknown ioctl: {rc}"
    );
    expect_errno(r.set_flags(1 << 7), libc::EINVAL, "unknown flag")?;
    // pread/pwrite make no sense on a stream.
    let mut buf = [0u8; 8];
    // SAFETY: valid buffer.
    let rc = unsafe { libc::pread(r.file().as_raw_fd(), buf.as_mut_ptr().cast(), 8, 0) };
    ensure!(rc == -1 && errno_now() == libc::ESPIPE, "pread: {rc}");
    Ok(())
}

pub(crate) fn fdinfo_shows_the_cursor(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD | abi::FLAG_STRICT)?;
    let i = r.info()?;
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", r.file().as_raw_fd()))?;
    for want in [
        "fanout_mode:\trecord,strict\n".to_string(),
        format!("fanout_cursor_seq:\t{}\n", i.cursor_seq),
        format!("fanout_ring_size:\t{RING}\n"),
        format!("fanout_record_max:\t{RECORD_MAX}\n"),
    ] {
        ensure!(text.contains(&want), "fdinfo lacks {want:?}:\n{text}");
    }
    ensure!(
        i.abi_version == abi::ABI_VERSION && i.header_size as usize == abi::RECORD_HEADER_SIZE,
        "info: {i:?}"
    );
    Ok(())
}

pub(crate) fn pid_and_uid_follow_the_readers_namespaces(cx: &Ctx) -> Result<()> {
    let w = writer(&cx.a)?;
    put(&w, b"from the host")?;
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let fds = pipe()?;
    let path = c_path(&cx.a)?;
    // SAFETY: the child only makes raw syscalls and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: raw syscalls in the forked child; results are checked and
        // reported through the exit code and the pipe.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) != 0 {
                libc::_exit(10);
            }
            let grandchild = libc::fork();
            if grandchild == 0 {
                // pid 1 of a new pid namespace, in a user namespace with no
                // mapping: the host writer is invisible, root is unmapped.
                let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK);
                if fd < 0 {
                    libc::_exit(11);
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
                    libc::_exit(12);
                }
                let mut buf = [0u8; 256];
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                let Some(h) = RecordHeader::from_bytes(&buf[..n.max(0) as usize]) else {
                    libc::_exit(13);
                };
                if h.pid != 0 {
                    libc::_exit(14);
                }
                if h.uid != 65534 {
                    libc::_exit(15);
                }
                let ok = libc::write(fd, b"from the namespace".as_ptr().cast(), 18) == 18;
                libc::_exit(if ok { 0 } else { 16 });
            }
            let bytes = grandchild.to_ne_bytes();
            libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
            let mut st = 0;
            libc::waitpid(grandchild, &mut st, 0);
            libc::_exit(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                20
            });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; reading the pipe into a valid buffer.
    let grandchild = unsafe {
        libc::waitpid(child, &mut status, 0);
        let mut b = [0u8; 4];
        libc::read(fds[0], b.as_mut_ptr().cast(), 4);
        libc::close(fds[0]);
        libc::close(fds[1]);
        i32::from_ne_bytes(b)
    };
    let code = libc::WEXITSTATUS(status);
    ensure!(
        code == 0,
        "in the namespace: {}",
        match code {
            10 => "unshare failed",
            11 => "open failed",
            12 => "ioctl failed",
            13 => "no record read",
            14 => "the host writer's pid was visible (want 0)",
            15 => "the host writer's uid was not the overflow uid",
            _ => "failed",
        }
    );
    let recs = drain(&r)?;
    let (h, p) = recs.last().context("no record from the namespace")?;
    ensure!(p == b"from the namespace", "payload {p:?}");
    ensure!(
        h.pid == grandchild as u32 && h.uid == 0,
        "host sees pid {} uid {}, want {grandchild} 0",
        h.pid,
        h.uid
    );
    Ok(())
}
