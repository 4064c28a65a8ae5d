//! The dashcam: the last `--before` of records kept in memory (at most
//! `--max-memory` bytes of them); a trigger at time T writes the records
//! stamped from T - before, then goes on writing live ones up to
//! T + after; a trigger during a capture moves its end. Times are the
//! kernel's CLOCK_MONOTONIC stamps (ns), so the window is exact whatever
//! the recorder's own delays; this module is pure logic, tested with
//! made-up times.

use baf::abi::RecordHeader;
use std::collections::VecDeque;

/// A record held in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The recorder's index of its topic.
    pub topic: usize,
    /// The kernel's header.
    pub header: RecordHeader,
    /// The payload.
    pub payload: Vec<u8>,
    /// Records lost just before it.
    pub lost: u64,
}

/// Bytes a held record is counted for.
fn cost(h: &Held) -> u64 {
    (h.payload.len() + 64) as u64
}

/// What to do with a record that came ([`Dashcam::record`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// Keep it in the window only.
    Hold,
    /// A capture is open and the record is inside it: write it too.
    Write,
    /// The record is past the capture's end: finish the capture first.
    Finish,
}

/// The window and the capture.
#[derive(Debug)]
pub struct Dashcam {
    before: u64,
    after: u64,
    max_bytes: u64,
    held: VecDeque<Held>,
    bytes: u64,
    /// Records dropped from the window for memory (not for age) since the
    /// last capture started: the window was shorter than asked.
    pub cut: u64,
    /// The open capture's end (monotonic ns).
    until: Option<u64>,
}

impl Dashcam {
    /// A window of `before_ns`, captures running `after_ns` past their last
    /// trigger, and at most `max_bytes` held.
    pub fn new(before_ns: u64, after_ns: u64, max_bytes: u64) -> Self {
        Self {
            before: before_ns,
            after: after_ns,
            max_bytes,
            held: VecDeque::new(),
            bytes: 0,
            cut: 0,
            until: None,
        }
    }

    /// Whether a capture is open.
    pub fn capturing(&self) -> bool {
        self.until.is_some()
    }

    /// The open capture's end.
    pub fn until(&self) -> Option<u64> {
        self.until
    }

    /// Records held, and their bytes.
    pub fn held(&self) -> (usize, u64) {
        (self.held.len(), self.bytes)
    }

    /// What a record stamped `ts` means for the open capture.
    pub fn record(&self, ts: u64) -> Live {
        match self.until {
            None => Live::Hold,
            Some(end) if ts <= end => Live::Write,
            Some(_) => Live::Finish,
        }
    }

    /// Keeps `h` in the window, dropping what is older than the window
    /// (from `h`'s time back) and what is past the memory bound.
    pub fn hold(&mut self, h: Held) {
        let now = h.header.timestamp_ns;
        self.bytes += cost(&h);
        self.held.push_back(h);
        let oldest = now.saturating_sub(self.before);
        while let Some(f) = self.held.front() {
            let old = f.header.timestamp_ns < oldest;
            let full = self.bytes > self.max_bytes && self.held.len() > 1;
            if !old && !full {
                break;
            }
            if !old {
                self.cut += 1;
            }
            self.bytes -= cost(f);
            self.held.pop_front();
        }
    }

    /// A trigger at `t`: opens a capture and returns the window's records
    /// stamped from `t - before` on (to be written first, in order), or,
    /// during a capture, moves its end and returns `None`.
    pub fn trigger(&mut self, t: u64) -> Option<Vec<Held>> {
        let end = t.saturating_add(self.after);
        if let Some(until) = self.until.as_mut() {
            *until = (*until).max(end);
            return None;
        }
        self.until = Some(end);
        let from = t.saturating_sub(self.before);
        let out = self
            .held
            .iter()
            .filter(|h| h.header.timestamp_ns >= from && h.header.timestamp_ns <= end)
            .cloned()
            .collect();
        Some(out)
    }

    /// Whether the open capture is over at monotonic time `now` (its end
    /// passed by `grace`, for records stamped before the end to arrive).
    pub fn due(&self, now: u64, grace: u64) -> bool {
        self.until.is_some_and(|u| now > u.saturating_add(grace))
    }

    /// Closes the capture.
    pub fn finish(&mut self) {
        self.until = None;
        self.cut = 0;
    }
}

#[cfg(test)]
#[path = "dashcam_tests.rs"]
mod tests;
