//! Loss reports: counts per topic and cause, at most one burst of lines
//! per interval (as `submsg` reports its own loss).

use baf::loss::LossCounts;
pub use baf::loss::INTERVAL;
use std::time::{Duration, Instant};

/// Where records were lost.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// Overwritten in this host's ring before this bridge read them for
    /// export.
    BeforeExport,
    /// Overwritten in the source host's ring before its bridge read them
    /// (the count came with the records); the source host's name.
    AtSource(String),
    /// Sent by the source host's bridge, never received here (Zenoh
    /// dropped them); the source host's name.
    InTransit(String),
    /// Received, but could not be written to the local topic; why.
    NotWritten(String),
}

/// Gathers lost-record counts and says when to report them.
#[derive(Debug)]
pub struct LossReporter(LossCounts<(Cause, String)>);

impl LossReporter {
    /// A reporter that reports at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self(LossCounts::new(interval))
    }

    /// Counts `n` records of `topic` lost for `cause`.
    pub fn add(&mut self, cause: Cause, topic: &str, n: u64) {
        self.0.add((cause, topic.to_string()), n);
    }

    /// How long until the pending report is due; `None` when nothing is
    /// pending.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        self.0.due_in(now)
    }

    /// The report lines, if one is due at `now` (or `force`).
    pub fn take(&mut self, now: Instant, force: bool) -> Vec<String> {
        self.0
            .take(now, force)
            .into_iter()
            .map(|((cause, topic), n, total)| {
                let r = if n == 1 { "record" } else { "records" };
                match cause {
                    Cause::BeforeExport => format!(
                        "lost {n} {r} of topic {topic} before export (the bridge read too slowly; {total} lost in all)"
                    ),
                    Cause::AtSource(host) => format!(
                        "host {host} lost {n} {r} of topic {topic} before its bridge exported them ({total} in all)"
                    ),
                    Cause::InTransit(host) => format!(
                        "lost {n} {r} of topic {topic} from host {host} in transit (Zenoh dropped them; {total} in all)"
                    ),
                    Cause::NotWritten(why) => format!(
                        "dropped {n} imported {r} of topic {topic}: {why} ({total} in all)"
                    ),
                }
            })
            .collect()
    }

    /// Everything lost for `cause` on `topic` since start.
    pub fn total(&self, cause: &Cause, topic: &str) -> u64 {
        self.0.total(&(cause.clone(), topic.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_at_once_then_rate_limited() {
        let t0 = Instant::now();
        let mut r = LossReporter::new(Duration::from_secs(1));
        assert_eq!(r.due_in(t0), None);
        r.add(Cause::BeforeExport, "a", 5);
        assert_eq!(
            r.take(t0, false),
            vec!["lost 5 records of topic a before export (the bridge read too slowly; 5 lost in all)"]
        );
        r.add(Cause::InTransit("h".into()), "a", 1);
        r.add(Cause::AtSource("h".into()), "a", 2);
        r.add(Cause::BeforeExport, "a", 0);
        let t1 = t0 + Duration::from_millis(400);
        assert_eq!(r.due_in(t1), Some(Duration::from_millis(600)));
        assert!(r.take(t1, false).is_empty());
        let lines = r.take(t0 + Duration::from_secs(1), false);
        assert_eq!(
            lines,
            vec![
                "host h lost 2 records of topic a before its bridge exported them (2 in all)",
                "lost 1 record of topic a from host h in transit (Zenoh dropped them; 1 in all)",
            ]
        );
        r.add(Cause::NotWritten("too large".into()), "r/a", 3);
        assert_eq!(r.take(t1, true).len(), 1, "forced at exit");
        assert_eq!(r.total(&Cause::BeforeExport, "a"), 5);
        assert_eq!(r.total(&Cause::NotWritten("too large".into()), "r/a"), 3);
    }
}
