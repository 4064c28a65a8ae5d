//! Host property tests of `kernel/ring.rs`, the module's record ring
//! bookkeeping, against a simple model: the list of every payload ever
//! committed (indexed by sequence number) and the position it was put at.
//!
//! The ring's bytes live in [`VecMem`], a `RefCell<Vec<u8>>` behind the
//! ring's [`Mem`] trait, which also counts header reads (to check the
//! bound on [`Ring::find`]) and lets the test copy payloads in and out the
//! way the module does, around [`Ring::reserve`] and [`Ring::commit`].

use crate::abi::{record_span, FrameError, RecordHeader, RECORD_HEADER_SIZE};
use crate::ring::{
    index_len, max_payload, Chunk, Cursor, Mem, Next, Reservation, Ring, RingError, Stamp, Stamper,
    INDEX_STRIDE, NO_FLOOR, PAD_FLAG,
};
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;

/// Ring bytes in a `Vec`, with header reads counted.
struct VecMem {
    bytes: RefCell<Vec<u8>>,
    header_reads: Cell<usize>,
    /// Offsets whose header was read (while `track` is set).
    read_offsets: RefCell<HashSet<usize>>,
    track: Cell<bool>,
}

impl VecMem {
    fn new(size: usize) -> Self {
        Self {
            bytes: RefCell::new(vec![0; size]),
            header_reads: Cell::new(0),
            read_offsets: RefCell::new(HashSet::new()),
            track: Cell::new(false),
        }
    }

    /// Copies a payload in, as the module does between reserve and commit.
    fn write(&self, off: usize, data: &[u8]) {
        self.bytes.borrow_mut()[off..off + data.len()].copy_from_slice(data);
    }

    /// Copies a payload out.
    fn read(&self, off: usize, len: usize) -> Vec<u8> {
        self.bytes.borrow()[off..off + len].to_vec()
    }

    /// Starts counting header reads afresh.
    fn start_tracking(&self) {
        self.header_reads.set(0);
        self.read_offsets.borrow_mut().clear();
        self.track.set(true);
    }

    /// Stops counting; returns (header reads, distinct offsets read).
    fn stop_tracking(&self) -> (usize, HashSet<usize>) {
        self.track.set(false);
        (
            self.header_reads.get(),
            std::mem::take(&mut *self.read_offsets.borrow_mut()),
        )
    }
}

impl Mem for VecMem {
    fn header(&self, off: usize) -> RecordHeader {
        assert!(off % 8 == 0, "header read at unaligned offset {off}");
        if self.track.get() {
            self.header_reads.set(self.header_reads.get() + 1);
            self.read_offsets.borrow_mut().insert(off);
        }
        RecordHeader::from_bytes(&self.bytes.borrow()[off..off + RECORD_HEADER_SIZE])
            .expect("header inside the ring")
    }

    fn set_header(&self, off: usize, h: &RecordHeader) {
        assert!(off % 8 == 0, "header written at unaligned offset {off}");
        self.bytes.borrow_mut()[off..off + RECORD_HEADER_SIZE].copy_from_slice(&h.to_bytes());
    }

    fn zero(&self, off: usize, len: usize) {
        self.bytes.borrow_mut()[off..off + len].fill(0);
    }

    fn put(&self, off: usize, src: &[u8]) -> bool {
        let padded = src.len().next_multiple_of(8);
        let mut b = self.bytes.borrow_mut();
        let Some(dst) = b.get_mut(off..off + padded) else {
            return false;
        };
        dst.fill(0);
        dst[..src.len()].copy_from_slice(src);
        true
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Reserve, copy, then commit (or abort: the copy "faulted" halfway).
    Append {
        len: usize,
        fill: u8,
        abort: bool,
        /// A reader reads between the payload copy and the commit.
        peek: Option<usize>,
    },
    Read {
        reader: usize,
        max: usize,
    },
    SeekOldest {
        reader: usize,
    },
    SeekNow {
        reader: usize,
    },
    SeekLast {
        reader: usize,
        n: u64,
    },
    SeekSeq {
        reader: usize,
        back: u64,
    },
}

fn op(max_len: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..=max_len, any::<u8>(), prop::bool::weighted(0.15), prop::option::weighted(0.1, 0..3usize))
            .prop_map(|(len, fill, abort, peek)| Op::Append { len, fill, abort, peek }),
        4 => (0..3usize, 1..20usize).prop_map(|(reader, max)| Op::Read { reader, max }),
        1 => (0..3usize).prop_map(|reader| Op::SeekOldest { reader }),
        1 => (0..3usize).prop_map(|reader| Op::SeekNow { reader }),
        1 => (0..3usize, 0..200u64).prop_map(|(reader, n)| Op::SeekLast { reader, n }),
        1 => (0..3usize, 0..200u64).prop_map(|(reader, back)| Op::SeekSeq { reader, back }),
    ]
}

fn payload(seq: u64, len: usize, fill: u8) -> Vec<u8> {
    // Distinct per record, so a record read at the wrong place cannot match.
    (0..len)
        .map(|i| fill ^ (i as u8) ^ (seq as u8).rotate_left(3) ^ ((i >> 8) as u8))
        .collect()
}

fn stamp(seq: u64) -> Stamp {
    Stamp {
        timestamp_ns: seq * 1000 + 7,
        pid: seq as u32 ^ 0x55,
        uid: 1000 + seq as u32 % 3,
        writer: seq ^ 0xabcd_0000_0000,
    }
}

struct Reader {
    cursor: Cursor,
    lost: u64,
    delivered: u64,
    start: u64,
}

impl Reader {
    fn at(c: Cursor) -> Self {
        Self {
            cursor: c,
            lost: 0,
            delivered: 0,
            start: c.seq,
        }
    }
}

/// The model: every committed record's payload and position, by seq.
#[derive(Default)]
struct Model {
    payloads: Vec<Vec<u8>>,
    positions: Vec<u64>,
}

struct World {
    size: usize,
    ring: Ring<Vec<u64>>,
    mem: VecMem,
    model: Model,
    readers: Vec<Reader>,
}

impl World {
    fn new(size: usize) -> Self {
        let ring = Ring::new(size, vec![0u64; index_len(size)]).expect("a good size");
        let readers = (0..3).map(|_| Reader::at(ring.now())).collect();
        Self {
            size,
            ring,
            mem: VecMem::new(size),
            model: Model::default(),
            readers,
        }
    }

    /// Reads up to `max` records with reader `i`, checking each against the
    /// model and every lap's loss count.
    fn read(&mut self, i: usize, max: usize) {
        let r = &mut self.readers[i];
        for _ in 0..max {
            match self.ring.next(&self.mem, r.cursor) {
                Next::Empty => {
                    assert_eq!(r.cursor.seq, self.ring.next_seq());
                    break;
                }
                Next::Lapped { lost } => {
                    // Zero when only padding after the cursor was dropped
                    // (the ring emptied and its tail jumped to the head).
                    assert!(lost > 0 || r.cursor.pos < self.ring.tail());
                    assert_eq!(r.cursor.seq + lost, self.ring.oldest_seq());
                    r.lost += lost;
                    r.cursor = self.ring.oldest();
                }
                Next::Record { header, off, next } => {
                    let seq = r.cursor.seq;
                    assert_eq!(header.seq, seq);
                    assert_eq!(header.flags, 0);
                    let want = &self.model.payloads[seq as usize];
                    assert_eq!(header.len as usize, want.len());
                    assert_eq!(self.mem.read(off, want.len()), *want, "payload of {seq}");
                    let s = stamp(seq);
                    assert_eq!(
                        (header.timestamp_ns, header.pid, header.uid),
                        (s.timestamp_ns, s.pid, s.uid)
                    );
                    // The record sits where it was reserved.
                    assert_eq!(
                        off as u64,
                        (self.model.positions[seq as usize] & self.ring.mask())
                            + RECORD_HEADER_SIZE as u64
                    );
                    assert!(next.pos <= self.ring.head());
                    r.delivered += 1;
                    r.cursor = next;
                }
            }
        }
        assert_eq!(r.delivered + r.lost, r.cursor.seq - r.start);
    }

    fn append(&mut self, len: usize, fill: u8, abort: bool, peek: Option<usize>) {
        let size = self.size;
        let len = len.min(max_payload(size));
        let seq = self.model.payloads.len() as u64;
        let data = payload(seq, len, fill);
        let (tail0, oldest0, head0) = (self.ring.tail(), self.ring.oldest_seq(), self.ring.head());
        let r: Reservation = self
            .ring
            .reserve(&self.mem, len, NO_FLOOR)
            .expect("reserve");
        assert_eq!(r.len, len);
        assert_eq!(
            self.ring.reserve(&self.mem, 1, NO_FLOOR),
            Err(RingError::Busy)
        );
        let span = record_span(len) as u64;
        // The record never wraps, and starts right at the head or after the
        // end-of-ring padding.
        let off = r.pos & self.ring.mask();
        assert!(off + span <= size as u64, "record wraps");
        assert!(r.pos == head0 || (r.pos % size as u64 == 0 && r.pos - head0 < span));
        // Everything the new record may overwrite is below the tail.
        assert!(r.pos + span - self.ring.tail() <= size as u64);
        assert_eq!(r.evicted, self.ring.oldest_seq() - oldest0);
        for s in self.ring.oldest_seq()..seq {
            assert!(self.model.positions[s as usize] >= self.ring.tail());
        }
        // Not over-eager: each eviction was needed, given that the ring
        // drops padding together with the record after it.
        if r.evicted > 0 {
            let last = self.ring.oldest_seq() - 1;
            let before = if r.evicted == 1 {
                tail0
            } else {
                let prev = (last - 1) as usize;
                self.model.positions[prev] + record_span(self.model.payloads[prev].len()) as u64
            };
            assert!(
                r.pos + span - before > size as u64,
                "evicted record {last} although the new one fit"
            );
        }
        // Nothing is visible before the commit.
        assert_eq!(self.ring.head(), head0);
        if abort {
            // A fault halfway through the copy: some bytes landed.
            self.mem
                .write(r.payload_off(self.ring.mask()), &data[..len / 2]);
        } else {
            self.mem.write(r.payload_off(self.ring.mask()), &data);
        }
        if let Some(i) = peek {
            self.read(i, usize::MAX);
            assert_eq!(self.readers[i].cursor.seq, seq);
        }
        if abort {
            self.ring.abort(&self.mem, &r);
            assert_eq!(self.ring.next_seq(), seq, "an abort uses no seq");
            let h = self.mem.header(off as usize);
            assert!(h.flags & PAD_FLAG != 0);
            assert_eq!(record_span(h.len as usize) as u64, span);
        } else {
            let got = self.ring.commit(&self.mem, &r, stamp(seq));
            assert_eq!(got, seq);
            self.model.payloads.push(data);
            self.model.positions.push(r.pos);
        }
        assert_eq!(self.ring.head(), r.pos + span);
        assert_eq!(self.ring.next_seq(), self.model.payloads.len() as u64);
        // The padding after a payload is zero, so the mapped view leaks
        // nothing stale.
        if !abort {
            let pad = self.mem.read(
                (off + RECORD_HEADER_SIZE as u64) as usize + len,
                span as usize - RECORD_HEADER_SIZE - len,
            );
            assert!(pad.iter().all(|&b| b == 0));
        }
    }

    /// How many of `offsets` hold a record's header (not padding).
    fn real_headers(&self, offsets: &HashSet<usize>) -> usize {
        offsets
            .iter()
            .filter(|&&o| self.mem.header(o).flags & PAD_FLAG == 0)
            .count()
    }

    /// `find(seq)` agrees with the model and reads at most `INDEX_STRIDE`
    /// real record headers (plus any padding between them).
    fn check_find(&self, seq: u64) -> Option<Cursor> {
        self.mem.start_tracking();
        let found = self.ring.find(&self.mem, seq);
        let (reads, offsets) = self.mem.stop_tracking();
        let buffered = seq >= self.ring.oldest_seq() && seq <= self.ring.next_seq();
        assert_eq!(found.is_some(), buffered, "find({seq})");
        let real = self.real_headers(&offsets);
        assert!(
            real as u64 <= INDEX_STRIDE,
            "find({seq}) read {real} record headers"
        );
        // Each header is read at most twice (skip the padding, then the
        // record itself).
        assert!(reads <= 2 * offsets.len());
        if let Some(c) = found {
            assert_eq!(c.seq, seq);
            let want = match self.model.positions.get(seq as usize) {
                Some(&p) => p,
                None => self.ring.head(),
            };
            // The cursor may stand before padding that precedes the record.
            assert!(c.pos <= want && want - c.pos < self.size as u64);
        }
        found
    }
}

fn run(size_log2: u32, ops: Vec<Op>) {
    let mut w = World::new(1usize << size_log2);
    for op in ops {
        match op {
            Op::Append {
                len,
                fill,
                abort,
                peek,
            } => w.append(len, fill, abort, peek),
            Op::Read { reader, max } => w.read(reader, max),
            Op::SeekOldest { reader } => {
                let c = w.ring.oldest();
                assert_eq!(c.seq, w.ring.oldest_seq());
                w.readers[reader] = Reader::at(c);
            }
            Op::SeekNow { reader } => {
                let c = w.ring.now();
                assert_eq!((c.seq, c.pos), (w.ring.next_seq(), w.ring.head()));
                w.readers[reader] = Reader::at(c);
            }
            Op::SeekLast { reader, n } => {
                w.mem.start_tracking();
                let c = w.ring.last(&w.mem, n);
                let (_, offsets) = w.mem.stop_tracking();
                assert!(w.real_headers(&offsets) as u64 <= INDEX_STRIDE);
                let want = w.ring.next_seq().saturating_sub(n).max(w.ring.oldest_seq());
                assert_eq!(c.seq, want);
                w.readers[reader] = Reader::at(c);
            }
            Op::SeekSeq { reader, back } => {
                // Around the buffered range, both sides included.
                let seq = (w.ring.next_seq() + 3).saturating_sub(back);
                if let Some(c) = w.check_find(seq) {
                    w.readers[reader] = Reader::at(c);
                }
            }
        }
    }
    // Every reader can read to the end, and a fresh oldest reader sees the
    // whole buffered history.
    for i in 0..w.readers.len() {
        w.read(i, usize::MAX);
    }
    w.readers[0] = Reader::at(w.ring.oldest());
    w.read(0, usize::MAX);
    assert_eq!(w.readers[0].lost, 0);
    assert_eq!(
        w.readers[0].delivered,
        w.ring.next_seq() - w.ring.oldest_seq()
    );
    for seq in w.ring.oldest_seq()..=w.ring.next_seq() {
        w.check_find(seq);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ring_matches_model(
        size_log2 in 10u32..14,
        ops in prop::collection::vec(op(4096), 1..300),
    ) {
        run(size_log2, ops);
    }

    #[test]
    fn small_records_many_laps(ops in prop::collection::vec(op(40), 1..600)) {
        run(10, ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Many small records in a bigger ring, so the sparse index wraps and
    /// seeks land far from indexed records.
    #[test]
    fn index_bound_holds(
        lens in prop::collection::vec(1usize..24, 200..3000),
        aborts in prop::collection::vec(any::<bool>(), 64),
        backs in prop::collection::vec(0u64..400, 1..20),
    ) {
        let mut w = World::new(1 << 13);
        for (i, len) in lens.iter().enumerate() {
            w.append(*len, i as u8, aborts[i % 64] && i % 7 == 0, None);
        }
        for back in backs {
            w.check_find(w.ring.next_seq().saturating_sub(back));
        }
    }
}

#[test]
fn rejects_bad_sizes_and_lengths() {
    assert!(matches!(
        Ring::new(3000, vec![0u64; 64]),
        Err(RingError::BadSize)
    ));
    assert!(matches!(
        Ring::new(512, vec![0u64; 64]),
        Err(RingError::BadSize)
    ));
    assert!(matches!(
        Ring::new(1 << 16, vec![0u64; index_len(1 << 16) - 1]),
        Err(RingError::BadSize)
    ));
    let mem = VecMem::new(1024);
    let mut ring = Ring::new(1024, vec![0u64; index_len(1024)]).unwrap();
    assert_eq!(ring.reserve(&mem, 0, NO_FLOOR), Err(RingError::BadLength));
    assert_eq!(ring.reserve(&mem, 257, NO_FLOOR), Err(RingError::BadLength));
    let r = ring.reserve(&mem, 256, NO_FLOOR).unwrap();
    assert_eq!(ring.commit(&mem, &r, Stamp::default()), 0);
}

#[test]
fn stamps_are_kept() {
    let mem = VecMem::new(1024);
    let mut ring = Ring::new(1024, vec![0u64; index_len(1024)]).unwrap();
    let c = ring.now();
    let stamp = Stamp {
        timestamp_ns: 42,
        pid: 7,
        uid: 1000,
        writer: 1 << 40,
    };
    let r = ring.reserve(&mem, 2, NO_FLOOR).unwrap();
    mem.write(r.payload_off(ring.mask()), b"hi");
    ring.commit(&mem, &r, stamp);
    let Next::Record { header, off, .. } = ring.next(&mem, c) else {
        panic!("no record")
    };
    assert_eq!(
        (header.len, header.timestamp_ns, header.pid, header.uid),
        (2, 42, 7, 1000)
    );
    assert_eq!(mem.read(off, 2), b"hi");
}

#[test]
fn abort_publishes_nothing_and_keeps_seqs_dense() {
    let mem = VecMem::new(1024);
    let mut ring = Ring::new(1024, vec![0u64; index_len(1024)]).unwrap();
    let c = ring.now();
    let r = ring.reserve(&mem, 10, NO_FLOOR).unwrap();
    mem.write(r.payload_off(ring.mask()), b"garbage!!!");
    ring.abort(&mem, &r);
    assert_eq!(ring.next(&mem, c), Next::Empty);
    let r = ring.reserve(&mem, 3, NO_FLOOR).unwrap();
    mem.write(r.payload_off(ring.mask()), b"abc");
    assert_eq!(ring.commit(&mem, &r, Stamp::default()), 0);
    let Next::Record { header, off, next } = ring.next(&mem, c) else {
        panic!("no record")
    };
    assert_eq!((header.seq, header.len), (0, 3));
    assert_eq!(mem.read(off, 3), b"abc");
    assert_eq!(next.seq, 1);
    assert_eq!(ring.next(&mem, next), Next::Empty);
}

/// Frames as a batch `write()` carries them: header (only `len`), payload,
/// padding (junk, which the ring must zero).
fn frames(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        let h = RecordHeader {
            len: p.len() as u32,
            seq: 0xdead, // ignored: the ring fills in its own
            pid: 77,
            ..RecordHeader::default()
        };
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(p);
        out.resize(
            out.len() + (record_span(p.len()) - RECORD_HEADER_SIZE - p.len()),
            0xee,
        );
    }
    out
}

/// Pushes `batch` through `reserve_bytes`/`commit_frames` the way the
/// module's batch write does (chunks of at most `cap` bytes; a frame cut by
/// a chunk's end goes again with the next chunk); returns the bytes taken
/// and the error that stopped it.
fn push_batch(
    ring: &mut Ring<Vec<u64>>,
    mem: &VecMem,
    batch: &[u8],
    cap: u64,
    record_max: usize,
) -> (usize, Option<FrameError>) {
    let mask = ring.size() - 1;
    let min = record_span(record_max) as u64;
    let mut done = 0usize;
    while done < batch.len() {
        let rest = (batch.len() - done) as u64;
        let c = ring
            .reserve_bytes(mem, rest.min(cap), min, NO_FLOOR)
            .expect("reserve");
        let off = (c.pos & mask) as usize;
        mem.write(off, &batch[done..done + c.len as usize]);
        let f = ring.commit_frames(mem, &c, c.len, record_max, stamp(0));
        done += f.used as usize;
        if f.error.is_some() {
            return (done, f.error);
        }
        if f.records == 0 {
            return (done, Some(FrameError::Truncated));
        }
    }
    (done, None)
}

#[test]
fn batches_are_framed_in_place_across_laps() {
    let size = 16384;
    let record_max = size / 4;
    let mut ring = Ring::new(size, vec![0u64; index_len(size)]).unwrap();
    let mem = VecMem::new(size);
    let mut all: Vec<Vec<u8>> = Vec::new();
    let mut reader = ring.now();
    let mut rng = 7u64;
    for round in 0..200 {
        let n = 1 + (round % 13);
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let len = 1 + (rng >> 33) as usize % if i % 5 == 0 { record_max } else { 100 };
                payload(all.len() as u64 + i as u64, len, round as u8)
            })
            .collect();
        let batch = frames(&payloads);
        // Small chunks force frames to be cut and copied again.
        let (used, err) = push_batch(&mut ring, &mem, &batch, 5000, record_max);
        assert_eq!((used, err), (batch.len(), None), "round {round}");
        all.extend(payloads);
        // Read everything still buffered since the last round.
        loop {
            match ring.next(&mem, reader) {
                Next::Empty => break,
                Next::Lapped { .. } => reader = ring.oldest(),
                Next::Record { header, off, next } => {
                    let want = &all[header.seq as usize];
                    assert_eq!(header.len as usize, want.len());
                    assert_eq!(mem.read(off, want.len()), *want, "seq {}", header.seq);
                    assert_eq!((header.pid, header.flags), (stamp(0).pid, 0));
                    // Padding was zeroed, whatever the writer sent.
                    let pad = record_span(want.len()) - RECORD_HEADER_SIZE - want.len();
                    assert!(mem.read(off + want.len(), pad).iter().all(|&b| b == 0));
                    reader = next;
                }
            }
        }
    }
    assert_eq!(ring.next_seq(), all.len() as u64);
    // Seeks still land exactly, through the index the batches filled in.
    for seq in ring.oldest_seq()..ring.next_seq() {
        let c = ring.find(&mem, seq).expect("buffered");
        let Next::Record { header, .. } = ring.next(&mem, c) else {
            panic!("no record at seq {seq}")
        };
        assert_eq!(header.seq, seq);
    }
}

/// Damages a frame.
type Spoil = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn a_bad_frame_stops_the_batch_after_the_good_ones() {
    let size = 16384;
    let record_max = 4096;
    let good = vec![vec![1u8; 10], vec![2u8; 20]];
    let good_len = frames(&good).len();
    let cases: Vec<(Spoil, Option<FrameError>)> = vec![
        (
            Box::new(|b: &mut Vec<u8>| b[..4].copy_from_slice(&0u32.to_ne_bytes())),
            Some(FrameError::Invalid),
        ),
        (
            Box::new(|b: &mut Vec<u8>| b[4..8].copy_from_slice(&1u32.to_ne_bytes())),
            Some(FrameError::Invalid),
        ),
        (
            Box::new(|b: &mut Vec<u8>| b[..4].copy_from_slice(&5000u32.to_ne_bytes())),
            Some(FrameError::TooLong),
        ),
        (
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 3)),
            Some(FrameError::Truncated),
        ),
    ];
    for (i, (spoil, want)) in cases.into_iter().enumerate() {
        let mut ring = Ring::new(size, vec![0u64; index_len(size)]).unwrap();
        let mem = VecMem::new(size);
        let mut third = frames(&[vec![3u8; 30]]);
        spoil(&mut third);
        let mut batch = frames(&good);
        batch.extend_from_slice(&third);
        if want != Some(FrameError::Truncated) {
            // A truncated frame can only be the last one.
            batch.extend_from_slice(&frames(&[vec![4u8; 8]]));
        }
        let (used, err) = push_batch(&mut ring, &mem, &batch, 1 << 13, record_max);
        assert_eq!((used, err), (good_len, want), "case {i}");
        assert_eq!(
            ring.next_seq(),
            2,
            "case {i}: nothing after the good frames"
        );
    }
}

/// One step of the lossless model test.
#[derive(Clone, Debug)]
enum LosslessOp {
    /// Write a record of this many bytes (as a batch chunk when `batch`).
    Write { len: usize, batch: bool },
    /// The lossless reader reads up to this many records.
    Read(usize),
}

fn lossless_op(max_len: usize) -> impl Strategy<Value = LosslessOp> {
    prop_oneof![
        3 => (1..=max_len, any::<bool>()).prop_map(|(len, batch)| LosslessOp::Write { len, batch }),
        1 => (1usize..8).prop_map(LosslessOp::Read),
    ]
}

/// A writer that may evict nothing at or after a lossless reader's cursor:
/// the reader never loses a record; `Full` comes exactly when the room
/// cannot be made without passing the reader (checked against the bytes the
/// reader holds), and changes nothing; `room_for` agrees with `reserve`; a
/// shortened batch chunk never passes the reader either.
fn run_lossless(size_log2: u32, ops: Vec<LosslessOp>) {
    let size = 1usize << size_log2;
    let record_max = max_payload(size);
    let mut ring = Ring::new(size, vec![0u64; index_len(size)]).unwrap();
    let mem = VecMem::new(size);
    let mut all: Vec<Vec<u8>> = Vec::new();
    let mut reader = ring.now();
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            LosslessOp::Write { len, batch } => {
                let len = len.min(record_max);
                let floor = reader.pos;
                let span = record_span(len) as u64;
                let before = (ring.head(), ring.tail(), ring.oldest_seq(), ring.next_seq());
                let room = ring.room_for(&mem, len, floor);
                let seq = all.len() as u64;
                let data = payload(seq, len, i as u8);
                if batch {
                    let frame = frames(std::slice::from_ref(&data));
                    let min = record_span(record_max) as u64;
                    match ring.reserve_bytes(&mem, frame.len() as u64, min, floor) {
                        Ok(c) => {
                            assert!(room, "op {i}: a chunk although room_for said no");
                            assert!(
                                c.pos + c.len <= floor + size as u64,
                                "op {i}: chunk passes the reader"
                            );
                            assert!(ring.tail() <= floor, "op {i}: evicted past the reader");
                            mem.write((c.pos & ring.mask()) as usize, &frame);
                            let f = ring.commit_frames(
                                &mem,
                                &c,
                                frame.len() as u64,
                                record_max,
                                stamp(seq),
                            );
                            assert_eq!((f.records, f.error), (1, None));
                            all.push(data);
                        }
                        Err(e) => {
                            assert_eq!(e, RingError::Full);
                            assert!(!room, "op {i}: Full although room_for said yes");
                            let after =
                                (ring.head(), ring.tail(), ring.oldest_seq(), ring.next_seq());
                            assert_eq!(before, after, "op {i}: Full changed the ring");
                        }
                    }
                } else {
                    match ring.reserve(&mem, len, floor) {
                        Ok(r) => {
                            assert!(room, "op {i}: reserved although room_for said no");
                            assert!(
                                r.pos + span <= floor + size as u64,
                                "op {i}: record passes the reader"
                            );
                            assert!(ring.tail() <= floor, "op {i}: evicted past the reader");
                            mem.write(r.payload_off(ring.mask()), &data);
                            ring.commit(&mem, &r, stamp(seq));
                            all.push(data);
                        }
                        Err(e) => {
                            assert_eq!(e, RingError::Full);
                            assert!(!room, "op {i}: Full although room_for said yes");
                            let after =
                                (ring.head(), ring.tail(), ring.oldest_seq(), ring.next_seq());
                            assert_eq!(before, after, "op {i}: Full changed the ring");
                            // Not over-cautious: even the bytes before the
                            // reader could not have made room.
                            let pad = if size as u64 - (ring.head() & ring.mask()) < span {
                                size as u64 - (ring.head() & ring.mask())
                            } else {
                                0
                            };
                            assert!(
                                ring.head() - floor + pad + span > size as u64,
                                "op {i}: Full with room to spare"
                            );
                            // Without the reader the write goes through.
                            assert!(ring.room_for(&mem, len, NO_FLOOR));
                        }
                    }
                }
            }
            LosslessOp::Read(n) => {
                for _ in 0..n {
                    match ring.next(&mem, reader) {
                        Next::Empty => break,
                        Next::Lapped { lost } => {
                            panic!("op {i}: lossless reader lapped, {lost} lost")
                        }
                        Next::Record { header, off, next } => {
                            let want = &all[header.seq as usize];
                            assert_eq!(header.seq, reader.seq);
                            assert_eq!(mem.read(off, want.len()), *want, "seq {}", header.seq);
                            reader = next;
                        }
                    }
                }
            }
        }
    }
    // Drain: everything written is still there for the reader, in order.
    loop {
        match ring.next(&mem, reader) {
            Next::Empty => break,
            Next::Lapped { lost } => panic!("lossless reader lapped at the end, {lost} lost"),
            Next::Record { header, off, next } => {
                assert_eq!(
                    mem.read(off, all[header.seq as usize].len()),
                    all[header.seq as usize]
                );
                reader = next;
            }
        }
    }
    assert_eq!(reader.seq, all.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_lossless_reader_never_loses(ops in proptest::collection::vec(lossless_op(300), 1..300)) {
        run_lossless(10, ops);
    }

    #[test]
    fn a_lossless_reader_never_loses_large_records(ops in proptest::collection::vec(lossless_op(4096), 1..200)) {
        run_lossless(14, ops);
    }
}

#[test]
fn a_batch_chunk_shrinks_to_the_room_before_a_lossless_reader() {
    let size = 16384usize;
    let mut ring = Ring::new(size, vec![0u64; index_len(size)]).unwrap();
    let mem = VecMem::new(size);
    let reader = ring.now();
    // Fill 3/4 of the ring while the reader reads nothing.
    let p = payload(0, 100, 1);
    let mut seq = 0;
    while ring.head() + record_span(100) as u64 <= (size * 3 / 4) as u64 {
        let r = ring.reserve(&mem, 100, reader.pos).unwrap();
        mem.write(r.payload_off(ring.mask()), &p);
        ring.commit(&mem, &r, stamp(seq));
        seq += 1;
    }
    let free = size as u64 - ring.head();
    // Want half the ring; only `free` bytes are left before the reader.
    let c = ring
        .reserve_bytes(&mem, size as u64 / 2, record_span(200) as u64, reader.pos)
        .unwrap();
    assert_eq!(c.len, free & !7);
    assert_eq!(ring.tail(), reader.pos, "nothing evicted");
    // Nothing copied: the chunk is given back.
    ring.commit_frames(&mem, &c, 0, 4096, stamp(0));
    // Less room than a largest frame: Full, until the reader moves on.
    assert_eq!(
        ring.reserve_bytes(&mem, size as u64 / 2, free + 8, reader.pos),
        Err(RingError::Full)
    );
    let c = ring
        .reserve_bytes(&mem, size as u64 / 2, free + 8, ring.head())
        .unwrap();
    assert_eq!(c.len, size as u64 / 2);
}

/// `tail_for` says where the tail must be for a record to fit: a
/// reservation made with no floor leaves the tail exactly there, and a
/// floor below it makes the reservation fail.
#[test]
fn tail_for_is_where_a_reservation_puts_the_tail() {
    let mem = VecMem::new(4096);
    let mut ring = Ring::new(4096, vec![0; index_len(4096)]).unwrap();
    for len in [100usize, 700, 33, 900, 250, 1000, 64, 512, 1024, 8] {
        let need = ring.tail_for(&mem, len);
        assert!(need >= ring.tail());
        if need > ring.tail() {
            // A lossless reader at the oldest record (below the needed
            // tail) stops it.
            assert_eq!(ring.reserve(&mem, len, ring.tail()), Err(RingError::Full));
        }
        let r = ring.reserve(&mem, len, NO_FLOOR).unwrap();
        assert_eq!(ring.tail(), need, "record of {len}");
        ring.commit(&mem, &r, Stamp::default());
    }
}

/// `cancel` gives a reservation up without publishing anything: the head
/// and the next seq stay, and the next reservation starts where it did.
#[test]
fn cancel_publishes_nothing() {
    let mem = VecMem::new(4096);
    let mut ring = Ring::new(4096, vec![0; index_len(4096)]).unwrap();
    let r = ring.reserve(&mem, 100, NO_FLOOR).unwrap();
    ring.commit(&mem, &r, Stamp::default());
    let (head, seq) = (ring.head(), ring.next_seq());
    let r = ring.reserve(&mem, 200, NO_FLOOR).unwrap();
    ring.cancel();
    assert_eq!((ring.head(), ring.next_seq()), (head, seq));
    assert_eq!(ring.reserve(&mem, 300, NO_FLOOR).unwrap().pos, r.pos);
}

/// A reservation that evicts hundreds of small records goes a stride of
/// the sparse index at a time, reading few headers, and evicts exactly
/// what evicting record by record would: `World::append` checks that every
/// record below the new tail had to go and that none at or above it went.
#[test]
fn a_big_reservation_evicts_whole_strides_at_once() {
    let size = 1usize << 15;
    let mut w = World::new(size);
    // Small records, some aborted (padding between records), until the
    // ring has wrapped.
    for i in 0..1500usize {
        w.append(1 + i % 5, i as u8, i % 97 == 0, None);
    }
    for big in [max_payload(size), 7777, 7000] {
        let oldest = w.ring.oldest_seq();
        w.mem.start_tracking();
        w.append(big, 7, false, None);
        let (reads, _) = w.mem.stop_tracking();
        let evicted = w.ring.oldest_seq() - oldest;
        assert!(evicted >= 2 * INDEX_STRIDE, "{big}: evicted {evicted}");
        assert!(
            (reads as u64) < evicted / 2,
            "{big}: {reads} header reads to evict {evicted} records"
        );
        for i in 0..700usize {
            w.append(1 + i % 5, i as u8, i % 89 == 0, None);
        }
    }
    for i in 0..w.readers.len() {
        w.read(i, usize::MAX);
    }
}

/// A stride is not skipped past a lossless reader's floor: a batch chunk
/// evicts the small records before the floor and none after it.
#[test]
fn strides_stop_at_the_floor() {
    let size = 1usize << 15;
    let mut ring = Ring::new(size, vec![0u64; index_len(size)]).unwrap();
    let mem = VecMem::new(size);
    let p = payload(0, 3, 1);
    let mut positions = Vec::new();
    for seq in 0..1000u64 {
        let r = ring.reserve(&mem, 3, NO_FLOOR).unwrap();
        mem.write(r.payload_off(ring.mask()), &p);
        positions.push(r.pos);
        ring.commit(&mem, &r, stamp(seq));
    }
    // A lossless reader at a record 150 records past the oldest, which is
    // not on a stride boundary.
    let k = (ring.oldest_seq() + 150) as usize;
    assert_ne!(k as u64 % INDEX_STRIDE, 0);
    let floor = positions[k];
    let c = ring
        .reserve_bytes(&mem, size as u64 / 2, record_span(8) as u64, floor)
        .unwrap();
    assert_eq!(ring.oldest_seq(), k as u64, "evicted up to the floor only");
    assert_eq!(ring.tail(), floor);
    assert_eq!(
        c.len,
        (size as u64 - (ring.head() - floor)).min(size as u64 / 2) & !7
    );
}

/// Lines written through a [`Stamper`] and published by
/// [`Ring::commit_stamped`] (line mode) leave the ring exactly as the same
/// records framed by the writer and stamped by [`Ring::commit_frames`]
/// (batch mode) do: every byte, the head, the tail and every seek, across
/// laps, with chunks cut short by the ring's end.
#[test]
fn stamped_records_match_committed_frames() {
    let size = 16384;
    let record_max = size / 4;
    let cap = 8000u64;
    let new = || {
        (
            Ring::new(size, vec![0u64; index_len(size)]).unwrap(),
            VecMem::new(size),
        )
    };
    let (mut framed, fmem) = new();
    let (mut stamped, smem) = new();
    // Garbage where the padding goes, so only zeroing makes them equal.
    fmem.write(0, &vec![0xee; size]);
    smem.write(0, &vec![0xee; size]);
    let mask = size as u64 - 1;
    let mut rng = 11u64;
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for round in 0..3000u64 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = 1 + (rng >> 33) as usize % if round % 37 == 0 { record_max } else { 60 };
        lines.push(payload(round, len, round as u8));
        // A write of a few lines to a few hundred.
        if (rng >> 20) % 61 != 0 && lines.len() < 300 {
            continue;
        }
        let mut rest = &lines[..];
        while !rest.is_empty() {
            let mut want = 0u64;
            for l in rest {
                let s = record_span(l.len()) as u64;
                if want + s > cap {
                    break;
                }
                want += s;
            }
            let first = record_span(rest[0].len()) as u64;
            let c = framed.reserve_bytes(&fmem, want, first, NO_FLOOR).unwrap();
            let d = stamped.reserve_bytes(&smem, want, first, NO_FLOOR).unwrap();
            assert_eq!(c, d);
            let mut notes = [0u64; 8];
            let mut s = Stamper::new(&d, mask, stamp(round), &mut notes);
            let mut off = 0u64;
            for l in rest {
                if !s.push(&smem, l).unwrap() {
                    break;
                }
                let at = ((c.pos + off) & mask) as usize;
                let h = RecordHeader {
                    len: l.len() as u32,
                    ..RecordHeader::default()
                };
                fmem.set_header(at, &h);
                fmem.write(at + RECORD_HEADER_SIZE, l);
                off += record_span(l.len()) as u64;
            }
            assert_eq!(s.used(), off);
            let f = framed.commit_frames(&fmem, &c, off, record_max, stamp(round));
            let g = stamped.commit_stamped(&smem, &d, &s, record_max);
            assert_eq!(f, g, "round {round}");
            assert!(f.records > 0);
            rest = &rest[f.records as usize..];
        }
        lines.clear();
        assert_eq!(*fmem.bytes.borrow(), *smem.bytes.borrow(), "round {round}");
        assert_eq!(
            (
                framed.head(),
                framed.tail(),
                framed.next_seq(),
                framed.oldest_seq()
            ),
            (
                stamped.head(),
                stamped.tail(),
                stamped.next_seq(),
                stamped.oldest_seq()
            )
        );
    }
    assert!(stamped.oldest_seq() > 0, "the ring lapped");
    for seq in stamped.oldest_seq()..=stamped.next_seq() {
        assert_eq!(framed.find(&fmem, seq), stamped.find(&smem, seq), "{seq}");
    }
}

/// A stamper takes no record past the last one its index notes cover, and
/// none past its chunk: what it took is published whole and can be found.
#[test]
fn a_stamper_stops_where_its_notes_or_chunk_end() {
    let size = 1usize << 18;
    let mut ring = Ring::new(size, vec![0u64; index_len(size)]).unwrap();
    let mem = VecMem::new(size);
    let mask = ring.mask();
    let c = ring
        .reserve_bytes(&mem, size as u64 / 2, record_span(1) as u64, NO_FLOOR)
        .unwrap();
    let mut notes = [0u64; 24];
    let mut s = Stamper::new(&c, mask, stamp(1), &mut notes);
    let mut n = 0u64;
    while s.push(&mem, &[n as u8]).unwrap() {
        n += 1;
    }
    // Records 0, 64, ... need a note each: the note for the 25th is one too
    // many.
    assert_eq!(n, 24 * INDEX_STRIDE);
    assert!(s.used() < c.len, "stopped by the notes, not the chunk");
    assert_eq!(s.push(&mem, &[]), Err(RingError::BadLength));
    let f = ring.commit_stamped(&mem, &c, &s, size / 4);
    assert_eq!((f.records, f.bytes, f.error), (n, n, None));
    assert_eq!(ring.next_seq(), n);
    for seq in (0..n).step_by(13) {
        let Next::Record { header, off, .. } = ring.next(&mem, ring.find(&mem, seq).unwrap())
        else {
            panic!("no record {seq}")
        };
        assert_eq!((header.seq, header.pid), (seq, stamp(1).pid));
        assert_eq!(mem.read(off, 1), [seq as u8]);
    }
    // A chunk too short for the next record.
    let c = ring.reserve_bytes(&mem, 64, 64, NO_FLOOR).unwrap();
    let mut notes = [0u64; 1];
    let mut s = Stamper::new(&c, mask, stamp(2), &mut notes);
    assert_eq!(s.push(&mem, &[1; 24]), Ok(true));
    assert_eq!(s.push(&mem, &[2; 1]), Ok(false), "64 - 64 bytes left");
    let f = ring.commit_stamped(&mem, &c, &s, size / 4);
    assert_eq!((f.records, f.used), (1, 64));
}

/// A stamper whose sequence numbers are not the ring's next (which one
/// open chunk at a time rules out) is not trusted: its records are checked
/// and stamped again at the commit.
#[test]
fn a_stale_stamper_is_stamped_again() {
    let size = 16384;
    let mut ring = Ring::new(size, vec![0u64; index_len(size)]).unwrap();
    let mem = VecMem::new(size);
    let c = ring.reserve_bytes(&mem, 1000, 48, NO_FLOOR).unwrap();
    let stale = Chunk {
        seq: c.seq + 5,
        ..c
    };
    let mut notes = [0u64; 1];
    let mut s = Stamper::new(&stale, ring.mask(), stamp(3), &mut notes);
    for i in 0..3u8 {
        assert_eq!(s.push(&mem, &[i; 9]), Ok(true));
    }
    let f = ring.commit_stamped(&mem, &c, &s, size / 4);
    assert_eq!(f.records, 3);
    let mut cur = ring.oldest();
    for seq in 0..3 {
        let Next::Record { header, next, .. } = ring.next(&mem, cur) else {
            panic!("no record {seq}")
        };
        assert_eq!(header.seq, seq, "stamped again with the ring's own");
        cur = next;
    }
}
