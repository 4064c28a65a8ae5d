//! The fuzz's stress rounds: writers of every kind against lossy, mapped
//! and lossless readers of one topic, each reader checking order,
//! integrity and that delivered + lost = written.

use super::*;

pub(crate) const WRITERS: u32 = 3;

/// What one reader saw.
struct Tally {
    kind: &'static str,
    delivered: u64,
    lost: u64,
    extra: String,
}

struct Shared {
    path: PathBuf,
    record_max: usize,
    ready: Barrier,
    /// The writers are done; `final_seq` is the topic's next seq.
    done: AtomicBool,
    final_seq: AtomicU64,
}

impl Shared {
    fn finished(&self, cursor: u64) -> bool {
        self.done.load(Ordering::Acquire) && cursor >= self.final_seq.load(Ordering::Acquire)
    }
}

/// Opens a reader (non-blocking), waits at the barrier even on error.
fn open_reader(sh: &Shared, flags: u32) -> Result<Topic> {
    let t = (|| -> Result<Topic> {
        let t = Topic::from_file(open_nb(&sh.path, true, false)?);
        if flags != 0 {
            t.set_flags(flags).context("set flags")?;
        }
        Ok(t)
    })();
    sh.ready.wait();
    t
}

/// A record-mode reader; `strict` adds `FLAG_STRICT`, `lossless`
/// `FLAG_LOSSLESS`; `throttle` sleeps now and then so it gets lapped.
fn record_reader(
    sh: &Shared,
    strict: bool,
    lossless: bool,
    throttle: bool,
    mut rng: Rng,
) -> Result<Tally> {
    let mut flags = abi::FLAG_RECORD;
    if strict {
        flags |= abi::FLAG_STRICT;
    }
    if lossless {
        flags |= abi::FLAG_LOSSLESS;
    }
    let t = open_reader(sh, flags)?;
    let start = t.info()?.cursor_seq;
    ensure!(start == 0, "a fresh topic's reader starts at seq {start}");
    let mut order = Order::new(WRITERS);
    let mut seqs = Seqs::new(start);
    let (mut delivered, mut epipes, mut emsgsize) = (0u64, 0u64, 0u64);
    let fd = t.file().as_raw_fd();
    let span_max = abi::record_span(sh.record_max);
    let mut buf = vec![0u8; 4 * span_max];
    loop {
        // Sometimes a buffer too small for the largest record: EMSGSIZE
        // when the next record does not fit, and it stays unread.
        let cap = if rng.chance(10) {
            rng.range(abi::RECORD_HEADER_SIZE as u64, span_max as u64) as usize
        } else {
            rng.range(span_max as u64, buf.len() as u64) as usize
        };
        match t.file().read(&mut buf[..cap]) {
            Ok(0) => bail!("end of file on a live topic"),
            Ok(n) => {
                let mut walked = 0;
                for r in records(&buf[..n]) {
                    ensure!(
                        r.header.len as usize == r.payload.len(),
                        "header length {}",
                        r.header.len
                    );
                    ensure!(r.header.flags == 0, "header flags {:#x}", r.header.flags);
                    order.see(check_payload(r.payload, WRITERS, sh.record_max)?)?;
                    seqs.see(r.header.seq)?;
                    delivered += 1;
                    walked += abi::record_span(r.payload.len());
                }
                ensure!(
                    walked == n,
                    "a record-mode read of {n} bytes holds {walked} bytes of whole records"
                );
                if throttle && rng.chance(30) {
                    thread::sleep(Duration::from_micros(rng.range(100, 3000)));
                }
            }
            Err(e) if errno(&e) == libc::EAGAIN => {
                if sh.finished(t.info()?.cursor_seq) {
                    break;
                }
                poll_in(fd, 50);
            }
            Err(e) if errno(&e) == libc::EPIPE && strict => epipes += 1,
            Err(e) if errno(&e) == libc::EMSGSIZE => {
                ensure!(cap < span_max, "EMSGSIZE with a {cap}-byte buffer");
                emsgsize += 1;
            }
            Err(e) => return Err(e).context("read"),
        }
    }
    let i = t.info()?;
    // Loss after the last delivered record (none expected: a lap always
    // leaves records to read) is loss too.
    seqs.gaps += i.cursor_seq.saturating_sub(seqs.next);
    ensure!(
        i.lost == seqs.gaps,
        "the kernel counts {} lost, the sequence gaps add up to {}",
        i.lost,
        seqs.gaps
    );
    if lossless {
        ensure!(
            i.lost == 0 && i.flags & abi::FLAG_LOSSLESS != 0,
            "a lossless reader lost {} records (flags {:#x})",
            i.lost,
            i.flags
        );
    }
    if strict {
        ensure!(
            epipes >= seqs.jumps && (epipes > 0) == (i.lost > 0),
            "strict: {epipes} EPIPE for {} gaps ({} lost)",
            seqs.jumps,
            i.lost
        );
    }
    let kind = match (lossless, strict, throttle) {
        (true, _, _) => "lossless record",
        (_, true, _) => "strict record",
        (_, _, true) => "throttled record",
        _ => "record",
    };
    Ok(Tally {
        kind,
        delivered,
        lost: i.lost,
        extra: format!("{epipes} EPIPE, {emsgsize} EMSGSIZE"),
    })
}

/// A bytes-mode reader. Lossy: a buffer of at least `record_max`, so every
/// read holds whole records. Lossless: a small random buffer, so records
/// come in pieces (nothing is lost, so the stream stays in step).
fn byte_reader(sh: &Shared, lossless: bool, mut rng: Rng) -> Result<Tally> {
    let t = open_reader(sh, if lossless { abi::FLAG_LOSSLESS } else { 0 })?;
    let fd = t.file().as_raw_fd();
    let mut order = Order::new(WRITERS);
    let mut delivered = 0u64;
    let mut stream: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 2 * sh.record_max];
    loop {
        let cap = if lossless {
            rng.range(1, 5000) as usize
        } else {
            rng.range(sh.record_max as u64, buf.len() as u64) as usize
        };
        match t.file().read(&mut buf[..cap]) {
            Ok(0) => bail!("end of file on a live topic"),
            Ok(n) => {
                stream.extend_from_slice(&buf[..n]);
                let mut at = 0;
                while let Some(len) = stream_len(&stream[at..], sh.record_max)? {
                    if stream.len() - at < len {
                        break;
                    }
                    order.see(check_payload(
                        &stream[at..at + len],
                        WRITERS,
                        sh.record_max,
                    )?)?;
                    delivered += 1;
                    at += len;
                }
                stream.drain(..at);
                ensure!(
                    lossless || stream.is_empty(),
                    "bytes mode: a read with room for any record ended inside one ({} bytes left)",
                    stream.len()
                );
            }
            Err(e) if errno(&e) == libc::EAGAIN => {
                if sh.finished(t.info()?.cursor_seq) {
                    break;
                }
                poll_in(fd, 50);
            }
            Err(e) => return Err(e).context("read"),
        }
    }
    ensure!(
        stream.is_empty(),
        "bytes mode: {} bytes of a record, and the rest never came",
        stream.len()
    );
    let i = t.info()?;
    if lossless {
        ensure!(
            i.lost == 0,
            "a lossless bytes reader lost {} records",
            i.lost
        );
    }
    Ok(Tally {
        kind: if lossless { "lossless bytes" } else { "bytes" },
        delivered,
        lost: i.lost,
        extra: String::new(),
    })
}

/// A reader of the mapped ring (`libbaf::mapped`), throttled now and then.
fn mapped_reader(sh: &Shared, mut rng: Rng) -> Result<Tally> {
    let t = open_reader(sh, 0)?;
    let mut m = Mapped::new(&t).context("map the ring")?;
    let fd = t.file().as_raw_fd();
    let mut order = Order::new(WRITERS);
    let mut seqs = Seqs::new(m.next_seq());
    let (mut delivered, mut lost) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut got: Vec<(RecordHeader, Vec<u8>)> = Vec::new();
    loop {
        got.clear();
        let p = m.read_into(&mut out, rng.range(1, 64), |_, h, pl| {
            got.push((*h, pl.to_vec()));
        })?;
        out.clear();
        lost += p.lost;
        for (h, pl) in &got {
            ensure!(h.len as usize == pl.len(), "header length {}", h.len);
            order.see(check_payload(pl, WRITERS, sh.record_max)?)?;
            seqs.see(h.seq)?;
            delivered += 1;
        }
        ensure!(!p.ended, "the mapped ring says the topic was removed");
        if p.records == 0 {
            if sh.finished(m.next_seq()) {
                break;
            }
            if m.prepare_wait(&t)? {
                poll_in(fd, 50);
            }
        } else if rng.chance(20) {
            thread::sleep(Duration::from_micros(rng.range(100, 2000)));
        }
    }
    m.report_loss(&t)?;
    let i = t.info()?;
    ensure!(
        lost == seqs.gaps && i.lost == lost,
        "mapped: the consumer counted {lost} lost, the gaps add up to {}, the kernel counts {}",
        seqs.gaps,
        i.lost
    );
    Ok(Tally {
        kind: "mapped",
        delivered,
        lost,
        extra: String::new(),
    })
}

/// A writer: plain records, writes longer than `record_max` (split into
/// records, each a whole payload), and batches. Returns records written.
fn stress_writer(sh: &Shared, id: u32, ring: u64, stop: &AtomicBool, mut rng: Rng) -> Result<u64> {
    let files = (|| -> Result<(File, File)> {
        let plain = writer(&sh.path)?;
        let batch = writer(&sh.path)?;
        Topic::from_file(batch.try_clone()?)
            .set_flags(abi::FLAG_BATCH)
            .context("FLAG_BATCH")?;
        Ok((plain, batch))
    })();
    sh.ready.wait();
    let (plain, batch_file) = files?;
    let max = sh.record_max;
    let mut counter = 0u32;
    let mut batch = Batch::new();
    while !stop.load(Ordering::Relaxed) {
        match rng.below(10) {
            0..=5 => {
                let len = rand_len(&mut rng, max);
                put(&plain, &payload(id, counter, len))?;
                counter += 1;
            }
            6..=8 => {
                batch.clear();
                for _ in 0..rng.range(1, 16) {
                    let len = rand_len(&mut rng, max);
                    if batch.len() + Batch::frame_len(len) > (ring / 2) as usize {
                        break;
                    }
                    batch.push(&payload(id, counter, len))?;
                    counter += 1;
                }
                if !batch.is_empty() {
                    put(&batch_file, batch.as_bytes()).context("batch write")?;
                }
            }
            _ => {
                // Whole records of `record_max`, then a tail: the kernel
                // splits the write exactly there.
                let mut data = Vec::new();
                for _ in 0..rng.range(1, 2) {
                    data.extend(payload(id, counter, max));
                    counter += 1;
                }
                data.extend(payload(id, counter, rand_len(&mut rng, max)));
                counter += 1;
                put(&plain, &data).context("split write")?;
            }
        }
    }
    Ok(u64::from(counter))
}

/// The stress topic other threads work on while a round runs.
pub(crate) static CURRENT: Mutex<Option<(PathBuf, bool)>> = Mutex::new(None);

pub(crate) fn stress_round(
    name: &str,
    ring: u64,
    secs: f64,
    rng: &mut Rng,
    mid: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let path = fresh_topic(name, ring, true)?;
    let record_max = Topic::open(&path, false, true)?.info()?.record_max as usize;
    ensure!(
        record_max as u64 == ring / 4,
        "record_max {record_max} for a {ring}-byte ring"
    );
    let readers: Vec<&str> = vec![
        "record",
        "throttled",
        "strict",
        "bytes",
        "mapped",
        "lossless-record",
        "lossless-bytes",
    ];
    let sh = Arc::new(Shared {
        path: path.clone(),
        record_max,
        ready: Barrier::new(readers.len() + WRITERS as usize + 1),
        done: AtomicBool::new(false),
        final_seq: AtomicU64::new(u64::MAX),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut rh = Vec::new();
    for kind in readers {
        let (sh, r) = (sh.clone(), rng.fork());
        rh.push(thread::spawn(move || match kind {
            "record" => record_reader(&sh, false, false, false, r),
            "throttled" => record_reader(&sh, false, false, true, r),
            "strict" => record_reader(&sh, true, false, true, r),
            "bytes" => byte_reader(&sh, false, r),
            "mapped" => mapped_reader(&sh, r),
            "lossless-record" => record_reader(&sh, false, true, false, r),
            _ => byte_reader(&sh, true, r),
        }));
    }
    let mut wh = Vec::new();
    for id in 0..WRITERS {
        let (sh, stop, r) = (sh.clone(), stop.clone(), rng.fork());
        wh.push(thread::spawn(move || {
            stress_writer(&sh, id, ring, &stop, r)
        }));
    }
    sh.ready.wait();
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.clone(), true));
    thread::sleep(Duration::from_secs_f64(secs / 2.0));
    let mid_result = mid();
    thread::sleep(Duration::from_secs_f64(secs / 2.0));
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    let mut errors = Vec::new();
    for (id, h) in wh.into_iter().enumerate() {
        match join(h, &format!("writer {id}")) {
            Ok(n) => written += n,
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let next = Topic::open(&path, false, true)?.info()?.next_seq;
    sh.final_seq.store(next, Ordering::Release);
    sh.done.store(true, Ordering::Release);
    let mut summary = Vec::new();
    for h in rh {
        match join(h, "reader") {
            Ok(t) => {
                if errors.is_empty() && t.delivered + t.lost != written {
                    errors.push(format!(
                        "{} reader: delivered {} + lost {} != written {written}",
                        t.kind, t.delivered, t.lost
                    ));
                }
                if t.kind.starts_with("lossless") && t.lost != 0 {
                    errors.push(format!("{} reader lost {}", t.kind, t.lost));
                }
                summary.push(format!(
                    "{} {}+{} lost{}",
                    t.kind,
                    t.delivered,
                    t.lost,
                    if t.extra.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", t.extra)
                    }
                ));
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() && next != written {
        errors.push(format!(
            "the topic got {next} records, the writers wrote {written}"
        ));
    }
    let _ = control::remove(name);
    println!(
        "  {name}: {written} records by {WRITERS} writers into {} KiB; readers: {}",
        ring / 1024,
        summary.join(", ")
    );
    if let Err(e) = mid_result {
        errors.push(format!("{e:#}"));
    }
    ensure!(errors.is_empty(), "{}", errors.join("; "));
    ensure!(written > 0, "nothing was written");
    Ok(())
}
