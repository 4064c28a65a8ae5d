//! Loss reports on stderr: with counts per topic, at most one burst of
//! lines per interval.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often loss is reported at most.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Gathers lost-record counts and says when to report them.
#[derive(Debug)]
pub struct LossReporter {
    interval: Duration,
    /// Not yet reported, per topic.
    pending: BTreeMap<String, u64>,
    /// Everything lost since start, per topic.
    totals: BTreeMap<String, u64>,
    last: Option<Instant>,
}

impl LossReporter {
    /// A reporter that reports at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            pending: BTreeMap::new(),
            totals: BTreeMap::new(),
            last: None,
        }
    }

    /// Counts `n` records lost on `topic`.
    pub fn add(&mut self, topic: &str, n: u64) {
        if n == 0 {
            return;
        }
        *self.pending.entry(topic.to_string()).or_default() += n;
        *self.totals.entry(topic.to_string()).or_default() += n;
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

    /// The report lines, if one is due at `now` (or `force`).
    pub fn take(&mut self, now: Instant, force: bool) -> Vec<String> {
        match self.due_in(now) {
            Some(d) if d.is_zero() || force => {}
            _ => return Vec::new(),
        }
        self.last = Some(now);
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(topic, n)| {
                let total = self.totals.get(&topic).copied().unwrap_or(n);
                let s = if n == 1 { "" } else { "s" };
                format!("lost {n} record{s} on topic {topic} (the reader was too slow; {total} lost in all)")
            })
            .collect()
    }

    /// Everything lost on `topic` since start.
    pub fn total(&self, topic: &str) -> u64 {
        self.totals.get(topic).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_loss_at_once_then_rate_limited_with_counts() {
        let t0 = Instant::now();
        let mut r = LossReporter::new(Duration::from_secs(1));
        assert_eq!(r.due_in(t0), None);
        r.add("a", 5);
        assert_eq!(r.due_in(t0), Some(Duration::ZERO));
        assert_eq!(
            r.take(t0, false),
            vec!["lost 5 records on topic a (the reader was too slow; 5 lost in all)"]
        );
        r.add("a", 1);
        r.add("b", 2);
        r.add("a", 2);
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!(r.due_in(t1), Some(Duration::from_millis(700)));
        assert!(r.take(t1, false).is_empty());
        let t2 = t0 + Duration::from_secs(1);
        assert_eq!(
            r.take(t2, false),
            vec![
                "lost 3 records on topic a (the reader was too slow; 8 lost in all)",
                "lost 2 records on topic b (the reader was too slow; 2 lost in all)"
            ]
        );
        assert_eq!(r.total("a"), 8);
        r.add("b", 1);
        assert_eq!(r.take(t2, true).len(), 1, "forced at exit");
        r.add("b", 0);
        assert_eq!(r.due_in(t2), None);
    }
}
