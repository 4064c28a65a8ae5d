//! VM tests of batch writes: frames become records, a bad frame stops the
//! batch with its errno, and one batch wakes a blocked reader once.

use super::*;

pub(crate) fn batch_writes(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let bw = Topic::open(&cx.a, true, true)?;
    bw.set_flags(abi::FLAG_BATCH)?;
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", bw.file().as_raw_fd()))?;
    ensure!(
        fdinfo.contains("fanout_mode:\tbytes,batch\n"),
        "fdinfo of a batch writer:\n{fdinfo}"
    );
    let me = std::process::id();

    // A good batch: every frame is one record, exactly.
    let mut lens: Vec<usize> = (0..60).map(|i| (i * 37) % 600 + 1).collect();
    lens.extend([7, 8, 9, 31, 32, 33, RECORD_MAX]);
    let payloads: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(2, i as u32, n))
        .collect();
    let batch: Vec<u8> = payloads
        .iter()
        .flat_map(|p| frame(p.len() as u32, p, 0))
        .collect();
    let before = r.info()?.next_seq;
    let t0 = monotonic_ns();
    let n = (bw.file()).write(&batch).context("good batch")?;
    ensure!(n == batch.len(), "good batch: wrote {n} of {}", batch.len());
    let raw = get(&r, 1 << 20)?;
    let recs = strict_records(&raw)?;
    ensure!(
        recs.len() == payloads.len(),
        "{} records from {} frames",
        recs.len(),
        payloads.len()
    );
    for (k, ((h, p), want)) in recs.iter().zip(&payloads).enumerate() {
        ensure!(
            p == want && h.len as usize == want.len(),
            "record {k}: payload"
        );
        ensure!(h.seq == before + k as u64, "record {k}: seq {}", h.seq);
        ensure!(
            h.pid == me && h.uid == 0,
            "record {k}: pid {} uid {} (the frame's were ignored?)",
            h.pid,
            h.uid
        );
        ensure!(
            h.timestamp_ns == recs[0].0.timestamp_ns && h.timestamp_ns >= t0,
            "record {k}: timestamp {} (one stamp per call, after {t0})",
            h.timestamp_ns
        );
    }
    expect_errno(get(&r, 4096), libc::EAGAIN, "after the good batch")?;

    // A bad frame stops the batch: the good frames before it are taken,
    // writing the rest gives the frame's errno, nothing after it appears.
    let g1 = frame(5, b"good1", 0);
    let g2 = frame(16, b"good-2-sixteen-b", 0);
    let g3 = frame(5, b"good3", 0);
    let oversize = vec![1u8; RECORD_MAX + 1];
    let g3_span = abi::record_span(5);
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("zero length", frame(0, &[], 0), libc::EINVAL),
        (
            "len above record_max",
            frame((RECORD_MAX + 1) as u32, &oversize, 0),
            libc::EMSGSIZE,
        ),
        ("non-zero flags", frame(10, b"0123456789", 1), libc::EINVAL),
        (
            "the pad flag",
            frame(10, b"0123456789", abi::RECORD_FLAG_PAD),
            libc::EINVAL,
        ),
        ("truncated in the header", g3[..20].to_vec(), libc::EBADMSG),
        (
            "truncated in the payload",
            g3[..abi::RECORD_HEADER_SIZE + 3].to_vec(),
            libc::EBADMSG,
        ),
        (
            "truncated in the padding",
            g3[..g3_span - 1].to_vec(),
            libc::EBADMSG,
        ),
    ];
    for (what, bad, errno) in cases {
        let truncated = errno == libc::EBADMSG;
        let mut buf = [g1.clone(), g2.clone(), bad].concat();
        if !truncated {
            buf.extend_from_slice(&g3);
        }
        let good = g1.len() + g2.len();
        let before = r.info()?.next_seq;
        let n = (bw.file())
            .write(&buf)
            .with_context(|| format!("{what}: batch"))?;
        ensure!(
            n == good,
            "{what}: wrote {n}, want {good} (the good frames)"
        );
        expect_errno(
            (bw.file()).write(&buf[n..]),
            errno,
            &format!("{what}: the rest"),
        )?;
        let recs = drain(&r)?;
        let got: Vec<&[u8]> = recs.iter().map(|(_, p)| p.as_slice()).collect();
        ensure!(
            got == [&b"good1"[..], &b"good-2-sixteen-b"[..]],
            "{what}: published {got:?}"
        );
        ensure!(
            recs[0].0.seq == before && r.info()?.next_seq == before + 2,
            "{what}: seqs"
        );
    }

    // What a record-mode reader got is a valid batch: republish it.
    let w = writer(&cx.a)?;
    let originals: Vec<Vec<u8>> = (0..20)
        .map(|i| pattern(6, i, 10 + i as usize * 13))
        .collect();
    for p in &originals {
        put(&w, p)?;
    }
    let raw = get(&r, 1 << 20)?;
    ensure!(strict_records(&raw)?.len() == 20, "20 records in one read");
    let before = r.info()?.next_seq;
    let n = (bw.file())
        .write(&raw)
        .context("republishing a read buffer")?;
    ensure!(n == raw.len(), "republished {n} of {}", raw.len());
    let again = drain(&r)?;
    ensure!(
        again.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>() == originals,
        "republished payloads differ"
    );
    ensure!(
        again
            .iter()
            .enumerate()
            .all(|(k, (h, _))| h.seq == before + k as u64),
        "republished records got new dense seqs"
    );
    Ok(())
}

pub(crate) fn batch_write_wakes_a_blocked_reader_once(cx: &Ctx) -> Result<()> {
    const N: usize = 2000;
    let r = reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let start = r.info()?.cursor_seq;
    let ep_file = nb_reader(&cx.a)?;
    let ready = Arc::new(Barrier::new(3));
    let blocked = {
        let ready = ready.clone();
        thread::spawn(move || -> Result<Vec<Rec>> {
            ready.wait();
            strict_records(&get(&r, 1 << 20)?)
        })
    };
    let counter = {
        let ready = ready.clone();
        thread::spawn(move || -> Result<u32> {
            // SAFETY: plain epoll syscalls on fds we own.
            let ep = unsafe { libc::epoll_create1(0) };
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: 1,
            };
            // SAFETY: as above.
            let rc = unsafe {
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ep_file.file().as_raw_fd(), &mut ev)
            };
            ready.wait(); // even on error
            ensure!(ep >= 0 && rc == 0, "epoll: {}", io::Error::last_os_error());
            let mut events = 0;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let mut out = [libc::epoll_event { events: 0, u64: 0 }];
                let timeout = if events == 0 { 1000 } else { 1500 };
                // SAFETY: as above.
                let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 1, timeout) };
                if n > 0 {
                    events += 1;
                } else if events > 0 || Instant::now() > deadline {
                    break;
                }
            }
            // SAFETY: closing our epoll fd.
            unsafe { libc::close(ep) };
            drop(ep_file);
            Ok(events)
        })
    };
    ready.wait();
    thread::sleep(Duration::from_millis(300));
    ensure!(!blocked.is_finished(), "the reader did not block");
    let bw = Topic::open(&cx.a, true, false)?;
    bw.set_flags(abi::FLAG_BATCH)?;
    let payloads: Vec<Vec<u8>> = (0..N).map(|i| pattern(7, i as u32, 64)).collect();
    let batch: Vec<u8> = payloads.iter().flat_map(|p| frame(64, p, 0)).collect();
    let n = (bw.file()).write(&batch)?;
    ensure!(n == batch.len(), "batch: wrote {n} of {}", batch.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !blocked.is_finished() {
        // (A reader never woken is left behind; later writes free it.)
        ensure!(
            Instant::now() < deadline,
            "the blocked reader was not woken by the batch"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let recs = blocked
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let events = counter
        .join()
        .map_err(|_| anyhow::anyhow!("epoll waiter panicked"))??;
    ensure!(
        recs.len() == N,
        "the woken reader got {} of the batch's {N} records in its read (woken before the batch was complete?)",
        recs.len()
    );
    for (k, (h, p)) in recs.iter().enumerate() {
        ensure!(
            h.seq == start + k as u64 && *p == payloads[k],
            "record {k}: seq {}",
            h.seq
        );
    }
    ensure!(
        events == 1,
        "an edge-triggered epoll waiter was woken {events} times by one batch write"
    );
    Ok(())
}
