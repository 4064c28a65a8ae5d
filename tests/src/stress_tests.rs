//! VM stress tests: many writers and readers on a small ring (nothing
//! torn, delivered + lost = written), and writes that fault mid-record.

use super::*;

/// What one stress reader saw.
struct ReaderTally {
    delivered: u64,
    lost: u64,
    start: u64,
    end: u64,
}

/// Tracks per-writer counters and sequence numbers of delivered records.
struct Order {
    last: Vec<Option<u32>>,
    prev_seq: Option<u64>,
}

impl Order {
    fn new(writers: u32) -> Self {
        Self {
            last: vec![None; writers as usize],
            prev_seq: None,
        }
    }

    fn record(&mut self, writer: u32, counter: u32) -> Result<()> {
        let slot = &mut self.last[writer as usize];
        if let Some(prev) = *slot {
            ensure!(
                counter > prev,
                "writer {writer}: #{counter} delivered after #{prev}"
            );
        }
        *slot = Some(counter);
        Ok(())
    }

    fn seq(&mut self, seq: u64, start: u64) -> Result<()> {
        ensure!(seq >= start, "seq {seq} before the reader opened ({start})");
        if let Some(p) = self.prev_seq {
            ensure!(seq > p, "seq went from {p} to {seq}");
        }
        self.prev_seq = Some(seq);
        Ok(())
    }
}

const STRESS_WRITERS: u32 = 4;

/// A stress reader in record mode with a `cap`-byte buffer.
fn stress_record_reader(
    path: &Path,
    cap: usize,
    ready: &Barrier,
    done: &AtomicBool,
) -> Result<ReaderTally> {
    let opened = (|| -> Result<(Topic, u64)> {
        let t = nb_reader(path)?;
        t.set_flags(abi::FLAG_RECORD)?;
        let start = t.info()?.cursor_seq;
        Ok((t, start))
    })();
    ready.wait(); // even on error, so that nobody waits for us forever
    let (t, start) = opened?;
    let mut order = Order::new(STRESS_WRITERS);
    let mut delivered = 0u64;
    let mut buf = vec![0u8; cap];
    loop {
        match t.file().read(&mut buf) {
            Ok(0) => bail!("end of file on a live topic"),
            Ok(n) => {
                for (h, p) in strict_records(&buf[..n])? {
                    ensure!(h.len as usize == p.len(), "header length {}", h.len);
                    let (w, c) = check_stress(&p, STRESS_WRITERS)?;
                    order.record(w, c)?;
                    order.seq(h.seq, start)?;
                    delivered += 1;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if done.load(Ordering::Acquire) {
                    let i = t.info()?;
                    if i.cursor_seq == i.next_seq {
                        break;
                    }
                    continue;
                }
                poll_in(t.file().as_raw_fd(), 50);
            }
            Err(e) => return Err(e).context("read"),
        }
    }
    let i = t.info()?;
    if let Some(last) = order.prev_seq {
        ensure!(
            last < i.next_seq,
            "seq {last} beyond next_seq {}",
            i.next_seq
        );
    }
    Ok(ReaderTally {
        delivered,
        lost: i.lost,
        start,
        end: i.next_seq,
    })
}

/// A stress reader in bytes mode with a small buffer: records larger than
/// it come in pieces; each record's own length field frames the stream. A
/// split record overwritten before its last piece is dropped by the kernel
/// (and counted lost): then this file's loss count grows while a record is
/// half read.
fn stress_byte_reader(
    path: &Path,
    cap: usize,
    ready: &Barrier,
    done: &AtomicBool,
) -> Result<ReaderTally> {
    let opened = (|| -> Result<(Topic, u64)> {
        let t = nb_reader(path)?;
        let start = t.info()?.cursor_seq;
        Ok((t, start))
    })();
    ready.wait(); // even on error
    let (t, start) = opened?;
    let mut order = Order::new(STRESS_WRITERS);
    let mut delivered = 0u64;
    let mut partial: Vec<u8> = Vec::new();
    let mut lost_before = 0u64;
    let mut dropped_splits = 0u64;
    let mut buf = vec![0u8; cap];
    loop {
        match t.file().read(&mut buf) {
            Ok(0) => bail!("end of file on a live topic"),
            Ok(n) => {
                if !partial.is_empty() && t.info()?.lost > lost_before {
                    partial.clear(); // the rest of that record is gone
                    dropped_splits += 1;
                }
                partial.extend_from_slice(&buf[..n]);
                loop {
                    if partial.len() < 12 {
                        break;
                    }
                    let len = le32(&partial, 8) as usize;
                    ensure!(
                        (16..=4096).contains(&len),
                        "bytes mode: a record claims {len} bytes (stream out of step)"
                    );
                    if partial.len() < len {
                        break;
                    }
                    let (w, c) = check_stress(&partial[..len], STRESS_WRITERS)?;
                    order.record(w, c)?;
                    delivered += 1;
                    partial.drain(..len);
                }
                if !partial.is_empty() {
                    lost_before = t.info()?.lost;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                // A split record dropped, and nothing after it yet.
                if !partial.is_empty() && t.info()?.lost > lost_before {
                    partial.clear();
                    dropped_splits += 1;
                }
                if done.load(Ordering::Acquire) {
                    let i = t.info()?;
                    if i.cursor_seq == i.next_seq {
                        ensure!(
                            partial.is_empty(),
                            "bytes mode: {} bytes of a record, and the rest never came",
                            partial.len()
                        );
                        break;
                    }
                    continue;
                }
                poll_in(t.file().as_raw_fd(), 50);
            }
            Err(e) => return Err(e).context("read"),
        }
    }
    let i = t.info()?;
    println!("  stress: the small-buffer reader saw {dropped_splits} split records dropped");
    Ok(ReaderTally {
        delivered,
        lost: i.lost,
        start,
        end: i.next_seq,
    })
}

pub(crate) fn stress_small_ring_many_writers_and_readers(_cx: &Ctx) -> Result<()> {
    const NAME: &str = "stress/small";
    let path = fresh_topic(NAME, 16384)?;
    let record_max = reader(&path)?.info()?.record_max as usize;
    ensure!(record_max == 4096, "record_max {record_max}");
    let ready = Arc::new(Barrier::new(3 + STRESS_WRITERS as usize + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for (k, cap) in [(0, 65536usize), (1, 65536), (2, 1000)] {
        let (path, ready, done) = (path.clone(), ready.clone(), done.clone());
        readers.push(thread::spawn(move || {
            if k < 2 {
                stress_record_reader(&path, cap, &ready, &done)
            } else {
                stress_byte_reader(&path, cap, &ready, &done)
            }
        }));
    }
    let mut writers = Vec::new();
    for id in 0..STRESS_WRITERS {
        let (path, ready, stop) = (path.clone(), ready.clone(), stop.clone());
        writers.push(thread::spawn(move || -> Result<u64> {
            let w = writer(&path);
            let mut rng = 0x2545_f491_4f6c_dd1du64.wrapping_mul(u64::from(id) + 1);
            ready.wait(); // even on error
            let w = w?;
            let mut counter = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let len = stress_len(&mut rng, record_max);
                put(&w, &stress_payload(id, counter, len))?;
                counter += 1;
            }
            Ok(u64::from(counter))
        }));
    }
    ready.wait();
    thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    let mut werr = None;
    for h in writers {
        match h.join().map_err(|_| anyhow::anyhow!("writer panicked"))? {
            Ok(n) => written += n,
            Err(e) => werr = Some(e),
        }
    }
    done.store(true, Ordering::Release);
    let tallies: Vec<Result<ReaderTally>> = readers
        .into_iter()
        .map(|h| h.join().map_err(|_| anyhow::anyhow!("reader panicked"))?)
        .collect();
    let _ = baf::control::remove(NAME);
    if let Some(e) = werr {
        return Err(e.context("writer"));
    }
    let mut summary = Vec::new();
    let mut any_loss = false;
    for (k, t) in tallies.into_iter().enumerate() {
        let t = t.with_context(|| format!("reader {k}"))?;
        ensure!(
            t.end - t.start == written,
            "reader {k}: the topic got {} records, the writers wrote {written}",
            t.end - t.start
        );
        ensure!(
            t.delivered + t.lost == written,
            "reader {k}: delivered {} + lost {} != written {written}",
            t.delivered,
            t.lost
        );
        ensure!(t.delivered > 0, "reader {k} got nothing");
        any_loss |= t.lost > 0;
        summary.push(format!("{}+{} lost", t.delivered, t.lost));
    }
    ensure!(
        any_loss,
        "no reader was lapped: the overrun paths were not exercised"
    );
    println!(
        "  stress: {written} records by {STRESS_WRITERS} writers into 16 KiB; readers: {}",
        summary.join(", ")
    );
    Ok(())
}

/// Anonymous memory with one page unmapped at `hole` (a page-aligned
/// offset), filled with `i % 251` elsewhere.
pub(crate) struct Holey {
    ptr: *mut u8,
    len: usize,
}

impl Holey {
    pub(crate) fn new(len: usize, hole: usize) -> Result<Self> {
        let p = anon_map(len)?;
        let ptr = p.cast::<u8>();
        for i in 0..len {
            // SAFETY: inside the fresh mapping.
            unsafe { ptr.add(i).write((i % 251) as u8) };
        }
        // SAFETY: one page of our own mapping.
        let rc = unsafe { libc::munmap(ptr.add(hole).cast(), page_size()) };
        ensure!(rc == 0, "munmap: {}", io::Error::last_os_error());
        Ok(Self { ptr, len })
    }

    /// Copies `data` to offset `at` (outside the hole).
    pub(crate) fn put(&self, at: usize, data: &[u8]) {
        assert!(at + data.len() <= self.len);
        // SAFETY: in bounds; the caller keeps clear of the hole.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(at), data.len()) };
    }

    /// `write(fd, ptr + at, len)`.
    pub(crate) fn write_to(&self, fd: i32, at: usize, len: usize) -> io::Result<usize> {
        assert!(at + len <= self.len);
        // SAFETY: the kernel reads the range; the hole must make it fault.
        let rc = unsafe { libc::write(fd, self.ptr.add(at).cast(), len) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }

    /// `read(fd, ptr + at, len)`, and the bytes read.
    pub(crate) fn read_from(&self, fd: i32, at: usize, len: usize) -> io::Result<Vec<u8>> {
        assert!(at + len <= self.len);
        // SAFETY: the kernel writes the range; the hole must make it fault.
        let rc = unsafe { libc::read(fd, self.ptr.add(at).cast(), len) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel wrote `rc` bytes there, before the hole.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.add(at), rc as usize) }.to_vec())
    }

    pub(crate) fn bytes(&self, at: usize, len: usize) -> Vec<u8> {
        (at..at + len).map(|i| (i % 251) as u8).collect()
    }
}

impl Drop for Holey {
    fn drop(&mut self) {
        // SAFETY: our own range (unmapping the hole again is harmless).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Real records and pads in the mapped ring between two positions.
fn reals_and_pads(
    mr: &MapReader<'_>,
    from: u64,
    to: u64,
) -> (Vec<RecordHeader>, Vec<RecordHeader>) {
    let (mut reals, mut pads) = (Vec::new(), Vec::new());
    for (_, h) in mr.slots(from, to) {
        match h {
            Some(h) if h.flags & abi::RECORD_FLAG_PAD != 0 => pads.push(h),
            Some(h) => reals.push(h),
            None => {}
        }
    }
    (reals, pads)
}

pub(crate) fn faulting_write_publishes_nothing_torn(cx: &Ctx) -> Result<()> {
    let page = page_size();
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let mfile = File::open(&cx.a)?;
    let m = Mapping::map(mfile.as_raw_fd(), page + RING as usize)?;
    let mr = MapReader::at_head(&m)?;
    let w = writer(&cx.a)?;

    // 1. One record that runs into the hole: EFAULT, nothing published,
    //    the slot is a pad.
    let mem = Holey::new(3 * page, page)?;
    let before = r.info()?.next_seq;
    let head0 = m.u64_at(abi::CTRL_HEAD);
    expect_errno(
        mem.write_to(w.as_raw_fd(), page - 100, 200),
        libc::EFAULT,
        "a 200-byte record over the hole",
    )?;
    ensure!(r.info()?.next_seq == before, "a faulted record got a seq");
    ensure!(
        m.u64_at(abi::CTRL_HEAD_SEQ) == before,
        "the control page's head seq moved"
    );
    let head1 = m.u64_at(abi::CTRL_HEAD);
    let (reals, pads) = reals_and_pads(&mr, head0, head1);
    ensure!(reals.is_empty(), "records in the faulted slot: {reals:?}");
    // If the kernel reserved a slot before the copy faulted, it is a pad.
    ensure!(
        head1 == head0
            || pads
                .iter()
                .any(|h| h.len as usize == abi::record_span(200) - abi::RECORD_HEADER_SIZE),
        "the faulted slot is not a pad of its record's size: {pads:?}"
    );
    expect_errno(get(&r, 4096), libc::EAGAIN, "reading after the fault")?;
    put(&w, b"after the fault")?;
    let recs = drain(&r)?;
    ensure!(
        recs.len() == 1 && recs[0].0.seq == before && recs[0].1 == b"after the fault",
        "after the fault: {recs:?}"
    );

    // 2. A write of two records whose second runs into the hole: the first
    //    is published whole, the call returns its size, seqs stay dense.
    let mem = Holey::new(2 * RECORD_MAX + page, RECORD_MAX + page)?;
    let before = r.info()?.next_seq;
    let head0 = m.u64_at(abi::CTRL_HEAD);
    let n = mem
        .write_to(w.as_raw_fd(), 0, 2 * RECORD_MAX)
        .context("a write whose second record faults")?;
    ensure!(n == RECORD_MAX, "returned {n}, want {RECORD_MAX}");
    ensure!(r.info()?.next_seq == before + 1, "not exactly one record");
    put(&w, b"next")?;
    let recs = drain(&r)?;
    ensure!(recs.len() == 2, "{} records", recs.len());
    ensure!(
        recs[0].0.seq == before && recs[0].1 == mem.bytes(0, RECORD_MAX),
        "the first record (seq {}) is not the first {RECORD_MAX} bytes",
        recs[0].0.seq
    );
    ensure!(
        recs[1].0.seq == before + 1 && recs[1].1 == b"next",
        "the next write got seq {} (want {})",
        recs[1].0.seq,
        before + 1
    );
    let (reals, pads) = reals_and_pads(&mr, head0, m.u64_at(abi::CTRL_HEAD));
    ensure!(
        reals.iter().map(|h| h.seq).collect::<Vec<_>>() == [before, before + 1],
        "records in the ring: {reals:?}"
    );
    // The faulted record's slot, if one was reserved, is a pad (the only
    // other padding, one wrap at the ring's end, is smaller than a slot).
    let spans: u64 = reals
        .iter()
        .map(|h| abi::record_span(h.len as usize) as u64)
        .sum();
    let extra = m.u64_at(abi::CTRL_HEAD) - head0 - spans;
    ensure!(
        extra < abi::record_span(RECORD_MAX) as u64
            || pads.iter().any(|h| h.len as usize == RECORD_MAX),
        "{extra} bytes beside the two records, but no pad for the faulted one: {pads:?}"
    );

    // 3. A batch whose second frame's payload runs into the hole: the
    //    first frame is published, the call returns its span; the rest
    //    gives EFAULT.
    let bw = Topic::open(&cx.a, true, true)?;
    bw.set_flags(abi::FLAG_BATCH)?;
    let mem = Holey::new(3 * page, page)?;
    let f1 = frame(100, &pattern(4, 1, 100), 0);
    let f2 = frame(400, &[], 0);
    let at1 = page - 200 - f1.len();
    mem.put(at1, &f1);
    mem.put(page - 200, &f2[..abi::RECORD_HEADER_SIZE]);
    let before = r.info()?.next_seq;
    let n = mem
        .write_to(bw.file().as_raw_fd(), at1, f1.len() + abi::record_span(400))
        .context("batch with a faulting frame")?;
    ensure!(n == f1.len(), "batch returned {n}, want {}", f1.len());
    expect_errno(
        mem.write_to(bw.file().as_raw_fd(), page - 200, abi::record_span(400)),
        libc::EFAULT,
        "the faulting frame alone",
    )?;
    let recs = drain(&r)?;
    ensure!(
        recs.len() == 1 && recs[0].0.seq == before && recs[0].1 == pattern(4, 1, 100),
        "batch before the fault: {recs:?}"
    );
    ensure!(
        r.info()?.next_seq == before + 1,
        "the faulting frame got a seq"
    );
    Ok(())
}
