//! Rate-limited loss counts: how many records were lost per key since the
//! last report and in all, and when the next report is due. The tools word
//! the report lines themselves (`submsg` per topic, `baf-bridge` per topic
//! and cause).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often loss is reported at most.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Lost-record counts per key `K`, reported at most once per interval (the
/// first loss at once).
#[derive(Debug)]
pub struct LossCounts<K> {
    interval: Duration,
    /// Not yet reported.
    pending: BTreeMap<K, u64>,
    /// Everything lost since start.
    totals: BTreeMap<K, u64>,
    last: Option<Instant>,
}

impl<K: Ord + Clone> LossCounts<K> {
    /// Counts that are due at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            pending: BTreeMap::new(),
            totals: BTreeMap::new(),
            last: None,
        }
    }

    /// Counts `n` records lost under `key` (nothing for 0).
    pub fn add(&mut self, key: K, n: u64) {
        if n == 0 {
            return;
        }
        *self.totals.entry(key.clone()).or_default() += n;
        *self.pending.entry(key).or_default() += n;
    }

    /// How long until the pending report is due (zero when it is due now);
    /// `None` when nothing is pending.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        if self.pending.is_empty() {
            return None;
        }
        Some(match self.last {
            None => Duration::ZERO,
            Some(t) => (t + self.interval).saturating_duration_since(now),
        })
    }

    /// If a report is due at `now` (or `force`): each pending key, in key
    /// order, with the count since the last report and the total.
    pub fn take(&mut self, now: Instant, force: bool) -> Vec<(K, u64, u64)> {
        match self.due_in(now) {
            Some(d) if d.is_zero() || force => {}
            _ => return Vec::new(),
        }
        self.last = Some(now);
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(key, n)| {
                let total = self.totals.get(&key).copied().unwrap_or(n);
                (key, n, total)
            })
            .collect()
    }

    /// Everything lost under `key` since start.
    pub fn total(&self, key: &K) -> u64 {
        self.totals.get(key).copied().unwrap_or(0)
    }
}
