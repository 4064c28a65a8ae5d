//! A mapped reader for the VM tests: a topic's control page and ring
//! mapped read-only, read the way `ABI.md` ("Mapped ring") says.

use super::*;

/// A read-only `mmap` of a topic file: the control page, then the ring.
/// Everything in it is read with atomic loads (the kernel writes it
/// concurrently).
#[derive(Debug)]
pub(crate) struct Mapping {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, prot, flags, fd, offset)`.
    pub(crate) fn raw(fd: i32, len: usize, prot: i32, flags: i32, offset: i64) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel; nothing existing is
        // replaced.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: p.cast(), len })
    }

    /// The documented mapping: read-only, shared, from offset 0.
    pub(crate) fn map(fd: i32, len: usize) -> io::Result<Self> {
        Self::raw(fd, len, libc::PROT_READ, libc::MAP_SHARED, 0)
    }

    pub(crate) fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off + 8 <= self.len,
            "offset {off} outside the mapping"
        );
        // SAFETY: in bounds (checked), 8-aligned (the mapping is page aligned),
        // mapped for as long as `self` lives; only ever loaded.
        unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()) }
    }

    pub(crate) fn u32_at(&self, off: usize) -> u32 {
        assert!(
            off % 4 == 0 && off + 4 <= self.len,
            "offset {off} outside the mapping"
        );
        // SAFETY: as in `atomic_u64`, 4-aligned.
        unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast()) }.load(Ordering::Acquire)
    }

    /// A `u64` of the control page, loaded with acquire.
    pub(crate) fn u64_at(&self, off: usize) -> u64 {
        self.atomic_u64(off).load(Ordering::Acquire)
    }

    pub(crate) fn u64_relaxed(&self, off: usize) -> u64 {
        self.atomic_u64(off).load(Ordering::Relaxed)
    }

    pub(crate) fn unmap(mut self) -> io::Result<()> {
        let len = std::mem::replace(&mut self.len, 0);
        // SAFETY: our own mapping, unmapped once (Drop sees len 0).
        if unsafe { libc::munmap(self.ptr.cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

const HDR: u64 = abi::RECORD_HEADER_SIZE as u64;

/// A consumer of the mapped ring, written from `ABI.md` ("The consumer
/// protocol") independently of `libbaf`, so it checks the layout too.
pub(crate) struct MapReader<'a> {
    pub(crate) m: &'a Mapping,
    pub(crate) data: usize,
    pub(crate) size: u64,
    pub(crate) record_max: usize,
    /// Position and sequence number of the next record.
    pub(crate) pos: u64,
    pub(crate) seq: u64,
    /// False after a lap, until a record at the new position is validated.
    pub(crate) seq_known: bool,
    pub(crate) lost: u64,
    /// Of `lost`, what the kernel was told (`IOC_MAPPED_SYNC`).
    pub(crate) reported: u64,
    pub(crate) laps: u64,
    /// Batches dropped because the tail passed them during the copy.
    pub(crate) retries: u64,
}

impl<'a> MapReader<'a> {
    /// Checks the control page; the reader starts at `pos`/`seq`.
    pub(crate) fn new(m: &'a Mapping, pos: u64, seq: u64) -> Result<Self> {
        ensure!(
            m.u32_at(abi::CTRL_MAGIC) == abi::MMAP_MAGIC,
            "magic {:#x}",
            m.u32_at(abi::CTRL_MAGIC)
        );
        ensure!(
            m.u32_at(abi::CTRL_ABI_VERSION) == abi::ABI_VERSION,
            "control page ABI version {}",
            m.u32_at(abi::CTRL_ABI_VERSION)
        );
        let data = m.u64_at(abi::CTRL_DATA_OFFSET) as usize;
        ensure!(data == page_size(), "data offset {data}");
        let size = m.u64_at(abi::CTRL_RING_SIZE);
        ensure!(
            size.is_power_of_two() && data + size as usize <= m.len,
            "ring size {size} in a mapping of {}",
            m.len
        );
        Ok(Self {
            m,
            data,
            size,
            record_max: m.u32_at(abi::CTRL_RECORD_MAX) as usize,
            pos,
            seq,
            seq_known: true,
            lost: 0,
            laps: 0,
            retries: 0,
            reported: 0,
        })
    }

    /// A reader at the head (only while nobody writes: head and its
    /// sequence number are two loads).
    pub(crate) fn at_head(m: &'a Mapping) -> Result<Self> {
        let (pos, seq) = (m.u64_at(abi::CTRL_HEAD), m.u64_at(abi::CTRL_HEAD_SEQ));
        Self::new(m, pos, seq)
    }

    pub(crate) fn header(&self, off: u64) -> RecordHeader {
        let mut b = [0u8; abi::RECORD_HEADER_SIZE];
        for (i, chunk) in b.chunks_exact_mut(8).enumerate() {
            let w = self.m.u64_relaxed(self.data + off as usize + i * 8);
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        RecordHeader::from_bytes(&b).unwrap_or_default()
    }

    pub(crate) fn payload(&self, off: u64, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        for i in (0..len).step_by(8) {
            let w = self.m.u64_relaxed(self.data + off as usize + i);
            v.extend_from_slice(&w.to_ne_bytes());
        }
        v.truncate(len);
        v
    }

    /// Every slot (records and pads) from `from` to `to`, as headers.
    pub(crate) fn slots(&self, from: u64, to: u64) -> Vec<(u64, Option<RecordHeader>)> {
        let mut out = Vec::new();
        let mut p = from;
        while p < to {
            let off = p & (self.size - 1);
            let room = self.size - off;
            if room < HDR {
                out.push((p, None));
                p += room;
                continue;
            }
            let h = self.header(off);
            out.push((p, Some(h)));
            p += (abi::record_span(h.len as usize) as u64).min(room);
        }
        out
    }

    /// Up to about `max` payload bytes of validated records; empty when
    /// there is nothing new.
    pub(crate) fn poll(&mut self, max: usize) -> Result<Vec<Rec>> {
        let mask = self.size - 1;
        loop {
            let head = self.m.u64_at(abi::CTRL_HEAD);
            ensure!(self.pos <= head, "cursor {} past the head {head}", self.pos);
            if self.pos == head {
                return Ok(Vec::new());
            }
            let tail = self.m.u64_at(abi::CTRL_TAIL);
            if self.pos < tail {
                self.pos = tail;
                self.seq_known = false;
                self.laps += 1;
                if tail >= head {
                    // The writer moved on since `head` was loaded: this tail
                    // is past it, so load the head again.
                    continue;
                }
            }
            let mut p = self.pos;
            let mut next = self.seq_known.then_some(self.seq);
            let mut first = None;
            let mut out = Vec::new();
            let mut bytes = 0;
            let mut torn = None;
            while p < head {
                let off = p & mask;
                let room = self.size - off;
                if room < HDR {
                    p += room;
                    continue;
                }
                let h = self.header(off);
                if h.flags & abi::RECORD_FLAG_PAD != 0 {
                    p += (abi::record_span(h.len as usize) as u64).min(room);
                    continue;
                }
                let len = h.len as usize;
                if next.is_some_and(|s| h.seq != s)
                    || len == 0
                    || len > self.record_max
                    || h.flags != 0
                    || abi::record_span(len) as u64 > room
                {
                    torn = Some(format!("at {p}: {h:?}, expected seq {next:?}"));
                    break;
                }
                if !out.is_empty() && bytes + len > max {
                    break;
                }
                first.get_or_insert((p, h.seq));
                out.push((h, self.payload(off + HDR, len)));
                bytes += len;
                p += abi::record_span(len) as u64;
                next = Some(h.seq + 1);
            }
            fence(Ordering::Acquire);
            let tail = self.m.u64_relaxed(abi::CTRL_TAIL);
            if tail > first.map_or(self.pos, |f: (u64, u64)| f.0) {
                // Overwritten while we copied: drop it all, start at the tail.
                self.retries += 1;
                continue;
            }
            if let Some(t) = torn {
                bail!("a damaged record the tail does not explain: {t}");
            }
            ensure!(p <= head, "walked past the head: {p} > {head}");
            if let Some((_, s)) = first {
                if !self.seq_known {
                    ensure!(s >= self.seq, "seq went back from {} to {s}", self.seq);
                    self.lost += s - self.seq;
                }
                self.seq = next.unwrap_or(s + 1);
                self.seq_known = true;
            }
            self.pos = p;
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// At the head with nobody writing: a loss not yet counted (lapped to a
    /// tail followed only by padding) is the head's seq minus ours.
    pub(crate) fn settle(&mut self) -> Result<()> {
        ensure!(
            self.pos == self.m.u64_at(abi::CTRL_HEAD),
            "settle: not at the head"
        );
        let head_seq = self.m.u64_at(abi::CTRL_HEAD_SEQ);
        if !self.seq_known {
            ensure!(head_seq >= self.seq, "head seq {head_seq} < {}", self.seq);
            self.lost += head_seq - self.seq;
            self.seq = head_seq;
            self.seq_known = true;
        }
        ensure!(
            self.seq == head_seq,
            "at the head with seq {}, head seq {head_seq}",
            self.seq
        );
        Ok(())
    }

    /// Tells the kernel where we are and what we lost since we last said
    /// (`IOC_MAPPED_SYNC`); true when our next record is already gone.
    pub(crate) fn sync(&mut self, t: &Topic) -> Result<bool> {
        let lapped = t
            .mapped_sync(self.seq, self.lost - self.reported)
            .context("IOC_MAPPED_SYNC")?;
        self.reported = self.lost;
        Ok(lapped)
    }

    /// Sleeps until something may be new: tells the kernel where we are
    /// (`IOC_MAPPED_SYNC`), then polls the file.
    pub(crate) fn wait(&mut self, t: &Topic, timeout_ms: i32) -> Result<()> {
        if !self.seq_known {
            thread::sleep(Duration::from_millis(1));
            return Ok(());
        }
        if self.sync(t)? {
            return Ok(()); // lapped: read again first
        }
        let mut p = libc::pollfd {
            fd: t.file().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
        Ok(())
    }
}
