//! Loss reports on stderr: with counts per topic, at most one burst of
//! lines per interval (the counting is `baf::loss`).

use baf::loss::LossCounts;
pub use baf::loss::INTERVAL;
use std::time::{Duration, Instant};

/// Gathers lost-record counts and says when to report them.
#[derive(Debug)]
pub struct LossReporter(LossCounts<String>);

impl LossReporter {
    /// A reporter that reports at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self(LossCounts::new(interval))
    }

    /// Counts `n` records lost on `topic`. Called for every record: with
    /// nothing lost it returns before naming the topic (an allocation).
    #[inline]
    pub fn add(&mut self, topic: &str, n: u64) {
        if n != 0 {
            self.0.add(topic.to_string(), n);
        }
    }

    /// How long until the pending report is due (zero when it is due now);
    /// `None` when nothing is pending.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        self.0.due_in(now)
    }

    /// The report lines, if one is due at `now` (or `force`). The first
    /// line for a topic says what to do about it; later ones only count.
    pub fn take(&mut self, now: Instant, force: bool) -> Vec<String> {
        self.0
            .take(now, force)
            .into_iter()
            .map(|(topic, n, total)| {
                let s = if n == 1 { "" } else { "s" };
                let line = format!(
                    "lost {n} record{s} on topic {topic} (the reader was too slow; {total} lost in all)"
                );
                if total == n {
                    format!("{line}: {}", advice(&topic))
                } else {
                    line
                }
            })
            .collect()
    }

    /// Everything lost on `topic` since start.
    pub fn total(&self, topic: &str) -> u64 {
        self.0.total(&topic.to_string())
    }
}

/// What a reader that loses records on `topic` can do.
pub fn advice(topic: &str) -> String {
    format!(
        "read faster, give the topic a bigger ring (baf-setup create {topic} --size ..., after baf-setup remove {topic}), or read it with submsg --lossless (for a topic created with --lossless)"
    )
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
            vec![format!(
                "lost 5 records on topic a (the reader was too slow; 5 lost in all): {}",
                advice("a")
            )]
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
                "lost 3 records on topic a (the reader was too slow; 8 lost in all)".to_string(),
                format!(
                    "lost 2 records on topic b (the reader was too slow; 2 lost in all): {}",
                    advice("b")
                )
            ]
        );
        assert_eq!(r.total("a"), 8);
        r.add("b", 1);
        assert_eq!(
            r.take(t2, true),
            vec!["lost 1 record on topic b (the reader was too slow; 3 lost in all)"],
            "forced at exit; the advice was given"
        );
        r.add("b", 0);
        assert_eq!(r.due_in(t2), None);
    }
}
