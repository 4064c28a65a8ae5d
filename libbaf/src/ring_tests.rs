//! Host property tests of `kernel/ring.rs`, the module's record ring, against
//! a simple model: the list of every payload ever appended.

use crate::abi::record_span;
use crate::ring::{max_payload, Cursor, Next, Ring, RingError, Stamp};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append { len: usize, fill: u8 },
    Read { reader: usize, max: usize },
    SeekOldest { reader: usize },
    SeekLast { reader: usize, n: u64 },
    SeekSeq { reader: usize, back: u64 },
}

fn op(max_len: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..=max_len, any::<u8>()).prop_map(|(len, fill)| Op::Append { len, fill }),
        4 => (0..3usize, 1..20usize).prop_map(|(reader, max)| Op::Read { reader, max }),
        1 => (0..3usize).prop_map(|reader| Op::SeekOldest { reader }),
        1 => (0..3usize, 0..40u64).prop_map(|(reader, n)| Op::SeekLast { reader, n }),
        1 => (0..3usize, 0..40u64).prop_map(|(reader, back)| Op::SeekSeq { reader, back }),
    ]
}

fn payload(seq: u64, len: usize, fill: u8) -> Vec<u8> {
    // Distinct per record, so a record read at the wrong place cannot match.
    (0..len)
        .map(|i| fill ^ (i as u8) ^ (seq as u8).rotate_left(3))
        .collect()
}

struct Reader {
    cursor: Cursor,
    lost: u64,
    delivered: u64,
    start: u64,
}

fn run(size_log2: u32, ops: Vec<Op>) {
    let size = 1usize << size_log2;
    let mut ring = Ring::new(vec![0u8; size]).unwrap();
    let mut model: Vec<Vec<u8>> = Vec::new();
    let mut readers: Vec<Reader> = (0..3)
        .map(|_| Reader {
            cursor: ring.now(),
            lost: 0,
            delivered: 0,
            start: 0,
        })
        .collect();

    for op in ops {
        match op {
            Op::Append { len, fill } => {
                let len = len.min(max_payload(size));
                let seq = model.len() as u64;
                let data = payload(seq, len, fill);
                let before = ring.oldest_seq();
                let (got, evicted) = ring.append(&data, Stamp::default()).unwrap();
                assert_eq!(got, seq);
                assert_eq!(evicted, ring.oldest_seq() - before);
                model.push(data);
                assert_eq!(ring.next_seq(), model.len() as u64);
                // Not over-eager: what is kept plus the newest evicted record
                // would not have fit (allowing for one wrap pad).
                if ring.oldest_seq() > 0 {
                    let kept: usize = model[ring.oldest_seq() as usize..]
                        .iter()
                        .map(|p| record_span(p.len()))
                        .sum();
                    let one_more = record_span(model[ring.oldest_seq() as usize - 1].len());
                    assert!(kept + one_more + record_span(max_payload(size)) > size);
                }
            }
            Op::Read { reader, max } => {
                let r = &mut readers[reader];
                for _ in 0..max {
                    match ring.next(r.cursor) {
                        Next::Empty => {
                            assert_eq!(r.cursor.seq, ring.next_seq());
                            break;
                        }
                        Next::Lapped { lost } => {
                            assert!(lost > 0);
                            assert_eq!(r.cursor.seq + lost, ring.oldest_seq());
                            r.lost += lost;
                            r.cursor = ring.oldest();
                        }
                        Next::Record {
                            header,
                            payload,
                            next,
                        } => {
                            assert_eq!(header.seq, r.cursor.seq);
                            assert_eq!(payload, &model[header.seq as usize][..]);
                            r.delivered += 1;
                            r.cursor = next;
                        }
                    }
                }
                assert_eq!(r.delivered + r.lost, r.cursor.seq - r.start);
            }
            Op::SeekOldest { reader } => {
                let r = &mut readers[reader];
                r.cursor = ring.oldest();
                (r.start, r.delivered, r.lost) = (r.cursor.seq, 0, 0);
            }
            Op::SeekLast { reader, n } => {
                let r = &mut readers[reader];
                r.cursor = ring.last(n);
                let want = ring.next_seq().saturating_sub(n).max(ring.oldest_seq());
                assert_eq!(r.cursor.seq, want);
                (r.start, r.delivered, r.lost) = (r.cursor.seq, 0, 0);
            }
            Op::SeekSeq { reader, back } => {
                let seq = ring.next_seq().saturating_sub(back);
                let found = ring.find(seq);
                assert_eq!(found.is_some(), seq >= ring.oldest_seq());
                if let Some(c) = found {
                    assert_eq!(c.seq, seq);
                    let r = &mut readers[reader];
                    r.cursor = c;
                    (r.start, r.delivered, r.lost) = (seq, 0, 0);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

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

#[test]
fn rejects_bad_sizes_and_lengths() {
    assert_eq!(Ring::new(vec![0u8; 3000]).err(), Some(RingError::BadSize));
    assert_eq!(Ring::new(vec![0u8; 512]).err(), Some(RingError::BadSize));
    let mut ring = Ring::new(vec![0u8; 1024]).unwrap();
    assert_eq!(
        ring.append(&[], Stamp::default()),
        Err(RingError::BadLength)
    );
    assert_eq!(
        ring.append(&[0; 257], Stamp::default()),
        Err(RingError::BadLength)
    );
    assert!(ring.append(&[0; 256], Stamp::default()).is_ok());
}

#[test]
fn stamps_are_kept() {
    let mut ring = Ring::new(vec![0u8; 1024]).unwrap();
    let c = ring.now();
    let stamp = Stamp {
        timestamp_ns: 42,
        pid: 7,
        uid: 1000,
    };
    ring.append(b"hi", stamp).unwrap();
    let Next::Record { header, .. } = ring.next(c) else {
        panic!("no record")
    };
    assert_eq!(
        (header.len, header.timestamp_ns, header.pid, header.uid),
        (2, 42, 7, 1000)
    );
}
