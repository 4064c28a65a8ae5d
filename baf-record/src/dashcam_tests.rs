//! The dashcam's window with made-up times (ns; one record every 10 ms).

use super::*;

const MS: u64 = 1_000_000;

fn held(ts: u64, len: usize) -> Held {
    Held {
        topic: 0,
        header: RecordHeader {
            len: len as u32,
            seq: ts / (10 * MS),
            timestamp_ns: ts,
            ..RecordHeader::default()
        },
        payload: vec![0; len],
        lost: 0,
    }
}

fn stamps(v: &[Held]) -> Vec<u64> {
    v.iter().map(|h| h.header.timestamp_ns / MS).collect()
}

#[test]
fn a_trigger_writes_exactly_the_window_then_the_after_part() {
    let mut d = Dashcam::new(100 * MS, 50 * MS, 1 << 30);
    for t in (0..=1000).step_by(10) {
        d.hold(held(t * MS, 10));
    }
    // Only the last 100 ms are kept.
    assert_eq!(d.held().0, 11);
    let window = d.trigger(1000 * MS).unwrap();
    assert_eq!(
        stamps(&window),
        (900..=1000).step_by(10).collect::<Vec<_>>()
    );
    // Live records up to 1050 ms are written, then the capture ends.
    assert_eq!(d.record(1040 * MS), Live::Write);
    assert_eq!(d.record(1050 * MS), Live::Write);
    assert_eq!(d.record(1051 * MS), Live::Finish);
    assert!(!d.due(1100 * MS, 100 * MS));
    assert!(d.due(1151 * MS, 100 * MS));
}

#[test]
fn a_trigger_during_a_capture_extends_it() {
    let mut d = Dashcam::new(100 * MS, 50 * MS, 1 << 30);
    assert!(d.trigger(1000 * MS).is_some());
    assert_eq!(d.trigger(1030 * MS), None, "no second file");
    assert_eq!(d.until(), Some(1080 * MS));
    assert_eq!(d.trigger(1010 * MS), None);
    assert_eq!(d.until(), Some(1080 * MS), "never shortened");
    assert_eq!(d.record(1080 * MS), Live::Write);
    d.finish();
    assert!(!d.capturing());
    assert_eq!(d.record(1090 * MS), Live::Hold);
    // The next trigger opens a new capture with its own window.
    assert!(d.trigger(2000 * MS).is_some());
}

#[test]
fn memory_bounds_the_window_and_says_so() {
    // Each record costs 64 + 100 bytes: 5 fit in 820.
    let mut d = Dashcam::new(1000 * MS, 0, 820);
    for t in (0..100).step_by(10) {
        d.hold(held(t * MS, 100));
    }
    assert_eq!(d.held(), (5, 820));
    assert_eq!(d.cut, 5, "dropped for memory, not age");
    let w = d.trigger(90 * MS).unwrap();
    assert_eq!(stamps(&w), vec![50, 60, 70, 80, 90]);
    d.finish();
    assert_eq!(d.cut, 0);
}

#[test]
fn a_record_larger_than_the_bound_is_still_held_alone() {
    let mut d = Dashcam::new(1000 * MS, 0, 100);
    d.hold(held(0, 10));
    d.hold(held(10 * MS, 1000));
    assert_eq!(d.held().0, 1);
    assert_eq!(stamps(&d.trigger(10 * MS).unwrap()), vec![10]);
}

#[test]
fn records_after_the_trigger_time_stay_out_of_the_window_part() {
    // A record stamped after the capture's end (read late) is not in it.
    let mut d = Dashcam::new(100 * MS, 10 * MS, 1 << 30);
    for t in [0, 50, 100, 200] {
        d.hold(held(t * MS, 1));
    }
    // (0 and 50 left the window when 200 came.)
    assert_eq!(stamps(&d.trigger(150 * MS).unwrap()), vec![100]);
}
