//! The consumer over a fake mapping in a `Vec`, written by the module's
//! own ring logic (`kernel/ring.rs`) the way the module writes it.

use super::*;
use crate::ring::{index_len, Mem, Ring, Stamp};
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

const DATA: usize = 4096;

/// A fake mapping: control page and ring in 8-byte cells.
pub(super) struct Fake {
    words: Box<[Cell<u64>]>,
}

impl Fake {
    fn new(size: usize, record_max: u32) -> Rc<Self> {
        let f = Rc::new(Self {
            words: (0..(DATA + size) / 8).map(|_| Cell::new(0)).collect(),
        });
        f.set_u32(abi::CTRL_MAGIC, abi::MMAP_MAGIC);
        f.set_u32(abi::CTRL_ABI_VERSION, abi::ABI_VERSION);
        f.set_u64(abi::CTRL_RING_SIZE, size as u64);
        f.set_u64(abi::CTRL_DATA_OFFSET, DATA as u64);
        f.set_u32(abi::CTRL_RECORD_MAX, record_max);
        f.set_u32(abi::CTRL_HEADER_SIZE, abi::RECORD_HEADER_SIZE as u32);
        f
    }

    fn bytes(&self, off: usize, len: usize) -> Vec<u8> {
        (off..off + len)
            .map(|i| self.words[i / 8].get().to_ne_bytes()[i % 8])
            .collect()
    }

    fn write(&self, off: usize, data: &[u8]) {
        for (k, &b) in data.iter().enumerate() {
            let i = off + k;
            let cell = &self.words[i / 8];
            let mut w = cell.get().to_ne_bytes();
            w[i % 8] = b;
            cell.set(u64::from_ne_bytes(w));
        }
    }

    fn set_u64(&self, off: usize, v: u64) {
        self.words[off / 8].set(v);
    }

    fn set_u32(&self, off: usize, v: u32) {
        self.write(off, &v.to_ne_bytes());
    }

    fn region(self: &Rc<Self>) -> Region {
        Region {
            base: NonNull::new(self.words.as_ptr().cast_mut().cast::<u8>()).unwrap(),
            len: self.words.len() * 8,
            _owner: Owner::Fake {
                _fake: self.clone(),
            },
        }
    }
}

/// The ring's bytes inside the fake mapping.
struct RingBytes(Rc<Fake>);

impl Mem for RingBytes {
    fn header(&self, off: usize) -> RecordHeader {
        RecordHeader::from_bytes(&self.0.bytes(DATA + off, RECORD_HEADER_SIZE)).unwrap()
    }
    fn set_header(&self, off: usize, h: &RecordHeader) {
        self.0.write(DATA + off, &h.to_bytes());
    }
    fn zero(&self, off: usize, len: usize) {
        self.0.write(DATA + off, &vec![0; len]);
    }
    fn put(&self, off: usize, src: &[u8]) -> bool {
        let mut padded = src.to_vec();
        padded.resize(src.len().next_multiple_of(8), 0);
        self.0.write(DATA + off, &padded);
        true
    }
}

/// A writer doing what the module does: reserve (and publish the tail),
/// copy the payload, commit (and publish the head).
struct Writer {
    fake: Rc<Fake>,
    ring: Ring<Vec<u64>>,
    mem: RingBytes,
    /// Every committed payload, by seq.
    sent: Vec<Vec<u8>>,
}

impl Writer {
    fn new(size: usize) -> Self {
        let fake = Fake::new(size, (size / 4) as u32);
        Self {
            mem: RingBytes(fake.clone()),
            fake,
            ring: Ring::new(size, vec![0; index_len(size)]).unwrap(),
            sent: Vec::new(),
        }
    }

    fn payload(seq: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (seq as u8).wrapping_mul(31) ^ i as u8)
            .collect()
    }

    /// Appends a record of `len` bytes (or a faulted write, `abort`).
    fn append(&mut self, len: usize, abort: bool) {
        let seq = self.ring.next_seq();
        let data = Self::payload(seq, len);
        let r = self
            .ring
            .reserve(&self.mem, len, crate::ring::NO_FLOOR)
            .unwrap();
        self.fake
            .set_u64(abi::CTRL_TAIL_SEQ, self.ring.oldest_seq());
        self.fake.set_u64(abi::CTRL_TAIL, self.ring.tail());
        let off = r.payload_off(self.ring.mask());
        if abort {
            self.fake.write(DATA + off, &data[..len / 2]);
            self.ring.abort(&self.mem, &r);
        } else {
            self.fake.write(DATA + off, &data);
            self.ring.commit(
                &self.mem,
                &r,
                Stamp {
                    timestamp_ns: seq,
                    pid: 1,
                    uid: 2,
                    writer: 3,
                },
            );
            self.sent.push(data);
        }
        self.fake.set_u64(abi::CTRL_HEAD_SEQ, self.ring.next_seq());
        self.fake.set_u64(abi::CTRL_HEAD, self.ring.head());
    }

    fn remove(&self) {
        self.fake.set_u32(abi::CTRL_FLAGS, abi::CTRL_FLAG_REMOVED);
    }

    fn mapped(&self, cursor_seq: u64) -> Mapped {
        Mapped::from_region(self.fake.region(), cursor_seq).unwrap()
    }
}

/// A test hook, run after the `i`-th word of each copy.
type Hook = Box<dyn FnMut(usize)>;

thread_local! {
    static HOOK: RefCell<Option<Hook>> = RefCell::new(None);
}

pub(super) fn after_word(i: usize) {
    HOOK.with(|h| {
        if let Ok(mut h) = h.try_borrow_mut() {
            if let Some(f) = h.as_mut() {
                f(i);
            }
        }
    });
}

fn set_hook(f: Option<Hook>) {
    HOOK.with(|h| *h.borrow_mut() = f);
}

/// One delivered record.
#[derive(Debug, PartialEq)]
struct Got {
    seq: u64,
    payload: Vec<u8>,
}

thread_local! {
    /// Whether `drain` reads with `read_payloads` rather than `read_into`.
    static PAYLOADS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` twice: with `drain` reading through `read_into`, then through
/// `read_payloads`.
fn both(f: impl Fn()) {
    for payloads in [false, true] {
        PAYLOADS.with(|p| p.set(payloads));
        f();
    }
    PAYLOADS.with(|p| p.set(false));
}

/// Reads everything available; returns the records, the loss, and
/// whether the stream ended.
fn drain(m: &mut Mapped, limit: u64) -> (Vec<Got>, u64, bool) {
    if PAYLOADS.with(Cell::get) {
        return drain_payloads(m, limit);
    }
    let mut got = Vec::new();
    let mut lost = 0;
    let mut out = Vec::new();
    loop {
        let p = m
            .read_into(&mut out, limit, |out, h, payload| {
                out.extend_from_slice(&h.seq.to_ne_bytes());
                out.extend_from_slice(&(payload.len() as u64).to_ne_bytes());
                out.extend_from_slice(payload);
            })
            .unwrap();
        lost += p.lost;
        if p.records == 0 {
            let mut rest = &out[..];
            while !rest.is_empty() {
                let seq = u64::from_ne_bytes(rest[..8].try_into().unwrap());
                let len = u64::from_ne_bytes(rest[8..16].try_into().unwrap()) as usize;
                got.push(Got {
                    seq,
                    payload: rest[16..16 + len].to_vec(),
                });
                rest = &rest[16 + len..];
            }
            return (got, lost, p.ended);
        }
    }
}

/// `drain` through `read_payloads`: each payload is followed in `out` by
/// its seq and length (appended by `after`), so the output is parsed from
/// its end.
fn drain_payloads(m: &mut Mapped, limit: u64) -> (Vec<Got>, u64, bool) {
    let mut lost = 0;
    let mut out = Vec::new();
    loop {
        let before = out.len();
        let p = m
            .read_payloads(&mut out, limit, |out, h| {
                out.extend_from_slice(&h.seq.to_ne_bytes());
                out.extend_from_slice(&u64::from(h.len).to_ne_bytes());
            })
            .unwrap();
        lost += p.lost;
        assert!(
            p.records > 0 || out.len() == before,
            "output without records"
        );
        if p.records == 0 {
            let mut got = Vec::new();
            let mut end = out.len();
            while end > 0 {
                let seq = u64::from_ne_bytes(out[end - 16..end - 8].try_into().unwrap());
                let len = u64::from_ne_bytes(out[end - 8..end].try_into().unwrap()) as usize;
                let at = end - 16 - len;
                got.push(Got {
                    seq,
                    payload: out[at..end - 16].to_vec(),
                });
                end = at;
            }
            got.reverse();
            return (got, lost, p.ended);
        }
    }
}

fn check(w: &Writer, got: &[Got]) {
    for g in got {
        assert_eq!(g.payload, w.sent[g.seq as usize], "payload of {}", g.seq);
    }
    assert!(got.windows(2).all(|p| p[0].seq < p[1].seq));
}

#[test]
fn reads_records_in_order_then_ends_when_removed() {
    both(|| {
        let mut w = Writer::new(4096);
        let mut m = w.mapped(0);
        assert_eq!(drain(&mut m, u64::MAX), (vec![], 0, false));
        for len in [1, 5, 8, 100, 3] {
            w.append(len, false);
        }
        let (got, lost, ended) = drain(&mut m, u64::MAX);
        assert_eq!(got.len(), 5);
        assert_eq!((lost, ended), (0, false));
        check(&w, &got);
        assert_eq!(m.next_seq(), 5);
        w.append(7, false);
        w.remove();
        assert!(m.removed());
        let (got, _, ended) = drain(&mut m, u64::MAX);
        assert_eq!(
            (got.len(), ended),
            (1, true),
            "the last record, then the end"
        );
        assert!(drain(&mut m, u64::MAX).2);
    });
}

#[test]
fn a_record_larger_than_the_chunk_is_copied_whole() {
    let mut w = Writer::new(4096);
    let mut m = w.mapped(0);
    m.chunk = 64;
    for len in [3, 1000, 5, 900, 1024] {
        w.append(len, false);
    }
    let (got, lost, _) = drain(&mut m, u64::MAX);
    assert_eq!(got.len(), 5);
    assert_eq!(lost, 0);
    check(&w, &got);
    assert_eq!(m.want, 0, "back to chunk-sized copies");
}

#[test]
fn limit_is_respected() {
    let mut w = Writer::new(4096);
    let mut m = w.mapped(0);
    for _ in 0..10 {
        w.append(10, false);
    }
    let mut out = Vec::new();
    let p = m.read_into(&mut out, 3, |o, _, _| o.push(1)).unwrap();
    assert_eq!((p.records, out.len()), (3, 3));
    assert_eq!(m.next_seq(), 3);
    let p = m.read_into(&mut out, 0, |o, _, _| o.push(1)).unwrap();
    assert_eq!(p, Progress::default());
    let (got, _, _) = drain(&mut m, u64::MAX);
    assert_eq!(got.first().map(|g| g.seq), Some(3));
    assert_eq!(got.len(), 7);
}

#[test]
fn pads_and_aborts_are_skipped() {
    both(|| {
        let mut w = Writer::new(1024);
        let mut m = w.mapped(0);
        let mut all = Vec::new();
        for i in 0..200 {
            w.append(1 + (i * 37) % 200, i % 5 == 3);
            if i % 3 == 0 {
                let (got, lost, _) = drain(&mut m, u64::MAX);
                assert_eq!(lost, 0);
                all.extend(got);
            }
        }
        all.extend(drain(&mut m, u64::MAX).0);
        check(&w, &all);
        assert_eq!(all.len(), w.sent.len());
        assert!(all.iter().enumerate().all(|(i, g)| g.seq == i as u64));
    });
}

#[test]
fn lapped_reader_counts_exact_loss() {
    both(|| {
        let mut w = Writer::new(1024);
        let mut m = w.mapped(0);
        for _ in 0..100 {
            w.append(50, false);
        }
        let (got, lost, _) = drain(&mut m, u64::MAX);
        check(&w, &got);
        assert_eq!(got.first().map(|g| g.seq), Some(w.ring.oldest_seq()));
        assert_eq!(lost, w.ring.oldest_seq());
        assert_eq!(got.len() as u64 + lost, 100);
    });
}

#[test]
fn a_lap_over_padding_counts_exact_loss_and_does_not_spin() {
    both(|| {
        let mut w = Writer::new(1024);
        let mut m = w.mapped(0);
        for _ in 0..3 {
            w.append(50, false);
        }
        // Aborted writes lap the reader: nothing but padding is left.
        for _ in 0..20 {
            w.append(200, true);
        }
        let (got, lost, ended) = drain(&mut m, u64::MAX);
        assert!(got.is_empty() && lost == 0 && !ended);
        // The sync says "lapped"; the consumer may sleep all the same.
        assert!(m.may_sleep(true));
        // The next record tells the exact loss.
        w.append(50, false);
        let (got, lost, _) = drain(&mut m, u64::MAX);
        assert_eq!((got.len(), lost), (1, 3));
        check(&w, &got);
        assert!(!m.may_sleep(true));
        // Lapped over padding again, then removed: the loss is counted at
        // the end.
        w.append(50, false);
        w.append(50, false);
        for _ in 0..20 {
            w.append(200, true);
        }
        w.remove();
        let (got, lost, ended) = drain(&mut m, u64::MAX);
        assert!(got.is_empty() && ended);
        assert_eq!(lost, 2);
        assert_eq!(m.next_seq(), w.ring.next_seq());
    });
}

#[test]
fn starts_at_the_cursor() {
    both(|| {
        let mut w = Writer::new(4096);
        for _ in 0..30 {
            w.append(20, false);
        }
        // "now"
        assert_eq!(drain(&mut w.mapped(30), u64::MAX).0, vec![]);
        // last:5 and oldest
        let (got, lost, _) = drain(&mut w.mapped(25), u64::MAX);
        assert_eq!((got.len(), got[0].seq, lost), (5, 25, 0));
        let oldest = w.ring.oldest_seq();
        let (got, lost, _) = drain(&mut w.mapped(oldest), u64::MAX);
        assert_eq!((got.len() as u64, lost), (30 - oldest, 0));
        // A cursor evicted before the mapping starts: counted as lost.
        for _ in 0..200 {
            w.append(20, false);
        }
        let (got, lost, _) = drain(&mut w.mapped(10), u64::MAX);
        assert_eq!(lost, w.ring.oldest_seq() - 10);
        assert_eq!(got[0].seq, w.ring.oldest_seq());
        check(&w, &got);
    });
}

#[test]
fn head_seq_ahead_of_head_is_harmless() {
    both(|| {
        // The writer stored the next seq but not yet the head: the record
        // before the head is older than the cursor and skipped.
        let mut w = Writer::new(4096);
        for _ in 0..3 {
            w.append(20, false);
        }
        let old_head = w.ring.head();
        w.append(20, false);
        w.fake
            .set_u64(abi::CTRL_HEAD, old_head - abi::record_span(20) as u64);
        let mut m = w.mapped(4);
        w.fake.set_u64(abi::CTRL_HEAD, w.ring.head());
        assert_eq!(drain(&mut m, u64::MAX).0, vec![]);
        w.append(20, false);
        let (got, lost, _) = drain(&mut m, u64::MAX);
        assert_eq!((got.len(), got[0].seq, lost), (1, 4, 0));
    });
}

#[test]
fn overwritten_during_copy_is_dropped() {
    let w = Rc::new(RefCell::new(Writer::new(2048)));
    for _ in 0..20 {
        w.borrow_mut().append(40, false);
    }
    let mut m = w.borrow().mapped(0);
    // Halfway through the copy the writer laps the reader, overwriting
    // what is being copied.
    let ww = w.clone();
    let mut fired = false;
    set_hook(Some(Box::new(move |i| {
        if i == 40 && !fired {
            fired = true;
            let mut w = ww.borrow_mut();
            for _ in 0..30 {
                w.append(40, false);
            }
        }
    })));
    let (got, lost, _) = drain(&mut m, u64::MAX);
    set_hook(None);
    let w = w.borrow();
    check(&w, &got);
    assert!(lost > 0);
    assert_eq!(got.len() as u64 + lost, 50);
    assert_eq!(got.last().map(|g| g.seq), Some(49));
}

/// Sets the copy hook: it counts the words copied, and when `fire(i,
/// count)` says so (the word's index in its copy, the words so far), the
/// writer appends `n` records of 40 bytes. Returns the count.
fn lap_after(
    w: &Rc<RefCell<Writer>>,
    fire: impl Fn(usize, usize) -> bool + 'static,
    n: usize,
) -> Rc<Cell<usize>> {
    let ww = w.clone();
    let words = Rc::new(Cell::new(0usize));
    let count = words.clone();
    set_hook(Some(Box::new(move |i| {
        count.set(count.get() + 1);
        if fire(i, count.get()) {
            let mut w = ww.borrow_mut();
            for _ in 0..n {
                w.append(40, false);
            }
        }
    })));
    words
}

#[test]
fn partly_overwritten_copy_keeps_the_intact_part() {
    let w = Rc::new(RefCell::new(Writer::new(4096)));
    for _ in 0..40 {
        w.borrow_mut().append(40, false);
    }
    let mut m = w.borrow().mapped(0);
    // After 10 words of the first copy, the writer evicts a few of the
    // oldest records and overwrites their bytes.
    let words = lap_after(&w, |i, count| i == 10 && count == 11, 20);
    let (got, lost, _) = drain(&mut m, u64::MAX);
    set_hook(None);
    let w = w.borrow();
    check(&w, &got);
    let oldest = w.ring.oldest_seq();
    assert!(oldest > 0 && oldest < 10, "a few were evicted: {oldest}");
    assert_eq!(lost, oldest);
    assert_eq!(got.len() as u64, 60 - oldest);
    // 40 records of 10 words (40-byte header, 40-byte payload), then the
    // 20 new ones and the padding at the end of the ring: the part of the
    // first copy above the new tail was used, not copied again (that
    // would be 300 words more).
    let per_record = abi::record_span(40) / 8;
    assert!(
        words.get() <= 60 * per_record + 16,
        "{} words copied",
        words.get()
    );
}

#[test]
fn payloads_overwritten_during_the_walk_are_taken_back() {
    for at in [1, 7, 30, 100] {
        let w = Rc::new(RefCell::new(Writer::new(2048)));
        for _ in 0..20 {
            w.borrow_mut().append(40, false);
        }
        let mut m = w.borrow().mapped(0);
        // After `at` payload words the writer laps the reader, overwriting
        // what the walk has read and what it is about to read.
        lap_after(&w, move |_, count| count == at, 30);
        let (got, lost, _) = drain_payloads(&mut m, u64::MAX);
        set_hook(None);
        let w = w.borrow();
        check(&w, &got);
        assert!(lost > 0, "lapped after {at} words");
        assert_eq!(got.len() as u64 + lost, 50, "after {at} words");
        assert_eq!(got.last().map(|g| g.seq), Some(49));
        assert_eq!(got.first().map(|g| g.seq), Some(lost));
    }
}

#[test]
fn payloads_respect_the_limit_and_a_long_walk_is_cut() {
    let mut w = Writer::new(4096);
    let mut m = w.mapped(0);
    for _ in 0..10 {
        w.append(10, false);
    }
    let mut out = Vec::new();
    let p = m.read_payloads(&mut out, 3, |_, _| {}).unwrap();
    assert_eq!((p.records, out.len()), (3, 30));
    assert_eq!(out[..10], Writer::payload(0, 10)[..]);
    assert_eq!(m.next_seq(), 3);
    assert_eq!(
        m.read_payloads(&mut out, 0, |_, _| {}).unwrap(),
        Progress::default()
    );
    // A walk stops after `chunk` bytes of ring, at a record's end.
    m.chunk = 64;
    out.clear();
    let p = m.read_payloads(&mut out, u64::MAX, |_, _| {}).unwrap();
    assert_eq!(p.records, 2, "two 56-byte records reach 64 bytes");
    let (got, _, _) = drain_payloads(&mut m, u64::MAX);
    assert_eq!(got.first().map(|g| g.seq), Some(5));
    assert_eq!(got.len(), 5);
    check(&w, &got);
}

#[test]
fn payloads_of_garbage_the_tail_does_not_explain_are_an_error() {
    let mut w = Writer::new(4096);
    let mut m = w.mapped(0);
    w.append(16, false);
    w.append(16, false);
    let off = DATA + abi::record_span(16);
    w.fake.write(off + 8, &77u64.to_ne_bytes());
    let mut out = Vec::new();
    let e = m.read_payloads(&mut out, u64::MAX, |_, _| {}).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("seq 77"), "{e}");
    // A length past the head.
    let mut w = Writer::new(4096);
    let mut m = w.mapped(0);
    w.append(16, false);
    w.fake.write(DATA, &600u32.to_ne_bytes());
    let e = m.read_payloads(&mut out, u64::MAX, |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("past the head"), "{e}");
}

#[test]
fn a_head_behind_the_tail_is_waited_out() {
    let mut w = Writer::new(1024);
    let mut m = w.mapped(0);
    for _ in 0..60 {
        w.append(40, false);
    }
    // The head load lags behind the tail load (another CPU's view).
    let head = w.ring.head();
    w.fake.set_u64(abi::CTRL_HEAD, w.ring.tail() - 72);
    let p = m
        .read_into(&mut Vec::new(), u64::MAX, |_, _, _| {})
        .unwrap();
    assert_eq!(p, Progress::default());
    w.fake.set_u64(abi::CTRL_HEAD, head);
    let (got, lost, _) = drain(&mut m, u64::MAX);
    check(&w, &got);
    assert_eq!(got.len() as u64 + lost, 60);
    assert_eq!(got[0].seq, w.ring.oldest_seq());
}

#[test]
fn garbage_that_the_tail_does_not_explain_is_an_error() {
    let mut w = Writer::new(4096);
    let mut m = w.mapped(0);
    w.append(16, false);
    w.append(16, false);
    // Corrupt the second header's seq without moving the tail.
    let off = DATA + abi::record_span(16);
    w.fake.write(off + 8, &77u64.to_ne_bytes());
    let e = m
        .read_into(&mut Vec::new(), u64::MAX, |_, _, _| {})
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("seq 77"), "{e}");
    // A zero length too.
    let mut w = Writer::new(4096);
    let mut m = w.mapped(0);
    w.append(16, false);
    w.fake.write(DATA, &0u32.to_ne_bytes());
    let e = m
        .read_into(&mut Vec::new(), u64::MAX, |_, _, _| {})
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn bad_control_pages_are_refused() {
    let w = Writer::new(4096);
    w.fake.set_u32(abi::CTRL_MAGIC, 0);
    let e = Mapped::from_region(w.fake.region(), 0).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
    let w = Writer::new(4096);
    w.fake.set_u32(abi::CTRL_ABI_VERSION, 1);
    let e = Mapped::from_region(w.fake.region(), 0).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    assert!(e.to_string().contains("fanout.ko"), "{e}");
    let w = Writer::new(4096);
    w.fake.set_u64(abi::CTRL_RING_SIZE, 8192);
    assert!(Mapped::from_region(w.fake.region(), 0).is_err());
    let w = Writer::new(4096);
    w.fake.set_u32(abi::CTRL_RECORD_MAX, 0);
    assert!(Mapped::from_region(w.fake.region(), 0).is_err());
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        len: usize,
        abort: bool,
    },
    Read {
        limit: u64,
    },
    /// A read during which the writer appends `n` records after `word`
    /// words of the copy.
    RacyRead {
        word: usize,
        n: usize,
        len: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..300, prop::bool::weighted(0.1)).prop_map(|(len, abort)| Op::Write { len, abort }),
        2 => (1u64..50).prop_map(|limit| Op::Read { limit }),
        1 => (0usize..200, 1usize..40, 1usize..300).prop_map(|(word, n, len)| Op::RacyRead { word, n, len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the writer does, even during a copy, the reader gets
    /// intact records in order, and every seq it passes is either
    /// delivered or counted lost.
    #[test]
    fn consumer_matches_writer(size_log2 in 10u32..13, start in 0u64..3, chunk in prop::sample::select(vec![64u64, 256, 1 << 20]), payloads: bool, ops in prop::collection::vec(op(), 1..200)) {
        PAYLOADS.with(|p| p.set(payloads));
        let size = 1usize << size_log2;
        let w = Rc::new(RefCell::new(Writer::new(size)));
        for _ in 0..start { w.borrow_mut().append(10, false); }
        let mut m = w.borrow().mapped(start);
        // Copies smaller than the records, as the 256 KiB chunk is for
        // large records on a large ring.
        m.chunk = chunk.min(size as u64);
        let mut got = Vec::new();
        let mut lost = 0;
        for op in ops {
            match op {
                Op::Write { len, abort } => w.borrow_mut().append(len.min(size / 4), abort),
                Op::Read { limit } => {
                    let (g, l, _) = drain(&mut m, limit);
                    got.extend(g);
                    lost += l;
                }
                Op::RacyRead { word, n, len } => {
                    let ww = w.clone();
                    let mut fired = false;
                    let mut words = 0;
                    // After `word` words copied in all (`read_payloads`
                    // copies a payload at a time).
                    set_hook(Some(Box::new(move |_| {
                        words += 1;
                        if words > word && !fired {
                            fired = true;
                            let mut w = ww.borrow_mut();
                            for _ in 0..n { w.append(len.min(size / 4), false); }
                        }
                    })));
                    let (g, l, _) = drain(&mut m, u64::MAX);
                    set_hook(None);
                    got.extend(g);
                    lost += l;
                }
            }
        }
        w.borrow().remove();
        let (g, l, ended) = drain(&mut m, u64::MAX);
        got.extend(g);
        lost += l;
        prop_assert!(ended);
        let w = w.borrow();
        check(&w, &got);
        let total = w.sent.len() as u64;
        prop_assert_eq!(got.len() as u64 + lost, total - start);
        prop_assert_eq!(m.next_seq(), total);
        // Loss only ever from being lapped: what is still buffered was
        // all delivered.
        let oldest = w.ring.oldest_seq();
        let tail_part: Vec<u64> = got.iter().map(|g| g.seq).filter(|&s| s >= oldest).collect();
        prop_assert_eq!(tail_part, (oldest.max(start)..total).collect::<Vec<_>>());
        PAYLOADS.with(|p| p.set(false));
    }
}
