//! `info` (what a recording holds) and `cat` (its records to stdout, in
//! submsg's formats, through [`baf::format`]).

use crate::read::{Item, Recording};
use anyhow::{Context, Result};
use baf::format::{self, Format, Label, Style};
use baf::pattern::Selection;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

/// One topic's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicInfo {
    /// Records.
    pub records: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Records lost, as the file says.
    pub lost: u64,
    /// Gaps (places where records were lost).
    pub gaps: u64,
    /// First and last seq.
    pub seqs: Option<(u64, u64)>,
    /// First and last time on the wall clock.
    pub times: Option<(u64, u64)>,
}

/// Every topic's figures, by name.
pub fn summarize(rec: &Recording) -> Result<BTreeMap<String, TopicInfo>> {
    let mut all: BTreeMap<String, TopicInfo> = BTreeMap::new();
    for (name, _) in rec.topics() {
        all.entry(name).or_default();
    }
    rec.for_each(|item| {
        match item {
            Item::Record {
                topic,
                log_time,
                header,
                payload,
            } => {
                let t = all.entry(topic.to_string()).or_default();
                t.records += 1;
                t.bytes += payload.len() as u64;
                t.seqs = Some(t.seqs.map_or((header.seq, header.seq), |(a, b)| {
                    (a.min(header.seq), b.max(header.seq))
                }));
                t.times = Some(t.times.map_or((log_time, log_time), |(a, b)| {
                    (a.min(log_time), b.max(log_time))
                }));
            }
            Item::Gap(g) => {
                let t = all.entry(g.topic).or_default();
                t.lost += g.lost;
                t.gaps += 1;
            }
        }
        Ok(())
    })?;
    Ok(all)
}

/// `info FILE`: prints the figures (as JSON with `json`).
pub fn info(rec: &Recording, json: bool) -> Result<String> {
    let all = summarize(rec)?;
    let span = all
        .values()
        .filter_map(|t| t.times)
        .fold(None, |acc: Option<(u64, u64)>, (a, b)| {
            Some(acc.map_or((a, b), |(x, y)| (x.min(a), y.max(b))))
        });
    let meta: HashMap<String, BTreeMap<String, String>> = rec.topics().into_iter().collect();
    if json {
        let topics: serde_json::Map<String, serde_json::Value> = all
            .iter()
            .map(|(name, t)| {
                let m = meta.get(name).cloned().unwrap_or_default();
                (
                    name.clone(),
                    serde_json::json!({
                        "records": t.records, "bytes": t.bytes, "lost": t.lost, "gaps": t.gaps,
                        "first_seq": t.seqs.map(|s| s.0), "last_seq": t.seqs.map(|s| s.1),
                        "metadata": m,
                    }),
                )
            })
            .collect();
        let v = serde_json::json!({
            "file": rec.path().display().to_string(),
            "finished": rec.finished,
            "damage": rec.damage,
            "records": all.values().map(|t| t.records).sum::<u64>(),
            "lost": all.values().map(|t| t.lost).sum::<u64>(),
            "start_ns": span.map(|s| s.0),
            "end_ns": span.map(|s| s.1),
            "topics": topics,
        });
        return Ok(format!("{v}\n"));
    }
    let mut s = String::new();
    s += &format!("file: {}\n", rec.path().display());
    match &rec.damage {
        None => s += "state: finished (summary and index present)\n",
        Some(d) => {
            s += &format!(
                "state: NOT finished or damaged ({d}); read up to the last complete chunk\n"
            )
        }
    }
    if let Some((a, b)) = span {
        s += &format!(
            "time: {} .. {} ({:.3} s)\n",
            format::rfc3339(i128::from(a)),
            format::rfc3339(i128::from(b)),
            (b - a) as f64 / 1e9
        );
    }
    let total: u64 = all.values().map(|t| t.records).sum();
    let lost: u64 = all.values().map(|t| t.lost).sum();
    s += &format!("records: {total}, lost: {lost}\n");
    s += &format!(
        "{:<32} {:>10} {:>12} {:>8} {:>6} {:>21} {:>9} {:>8} {:>8}\n",
        "TOPIC", "RECORDS", "BYTES", "LOST", "GAPS", "SEQ", "RING", "REC_MAX", "LOSSLESS"
    );
    for (name, t) in &all {
        let m = meta.get(name).cloned().unwrap_or_default();
        let get = |k: &str| m.get(k).cloned().unwrap_or_else(|| "-".into());
        let seq = t.seqs.map_or("-".to_string(), |(a, b)| format!("{a}..{b}"));
        s += &format!(
            "{:<32} {:>10} {:>12} {:>8} {:>6} {:>21} {:>9} {:>8} {:>8}\n",
            name,
            t.records,
            t.bytes,
            t.lost,
            t.gaps,
            seq,
            get("ring_size"),
            get("record_max"),
            get("lossless")
        );
    }
    Ok(s)
}

/// `cat FILE`: every record (of the topics `only` selects) to `out` as
/// `style` says; a record's `lost` is what the file recorded just before
/// it.
pub fn cat(rec: &Recording, only: &Selection, style: Style, out: &mut dyn Write) -> Result<()> {
    let mut labels: HashMap<String, Label> = HashMap::new();
    let mut pending: HashMap<String, u64> = HashMap::new();
    let mut buf = Vec::with_capacity(256 * 1024);
    let mut closed = false;
    let mut flush = |buf: &mut Vec<u8>, closed: &mut bool| -> Result<()> {
        if !*closed {
            match out.write_all(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => *closed = true,
                r => r.context("writing stdout")?,
            }
        }
        buf.clear();
        Ok(())
    };
    rec.for_each(|item| {
        match item {
            Item::Gap(g) => {
                *pending.entry(g.topic).or_default() += g.lost;
            }
            Item::Record {
                topic,
                log_time,
                header,
                payload,
            } => {
                if !only.matches(topic) {
                    return Ok(());
                }
                let label = labels
                    .entry(topic.to_string())
                    .or_insert_with(|| Label::new(topic));
                let lost = pending.remove(topic).unwrap_or(0);
                // The time the recorder computed, not today's clocks.
                let style = Style {
                    wall_offset_ns: i128::from(log_time) - i128::from(header.timestamp_ns),
                    ..style
                };
                let record = baf::device::Record { header, payload };
                format::write_record(style, &mut buf, label, &record, lost);
                if buf.len() >= 256 * 1024 {
                    flush(&mut buf, &mut closed)?;
                }
            }
        }
        Ok(())
    })?;
    flush(&mut buf, &mut closed)?;
    if !closed {
        match out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r.context("writing stdout")?,
        }
    }
    Ok(())
}

/// The format names of `cat`, as submsg's flags.
pub fn style(format: Format, nul: bool) -> Style {
    Style {
        format,
        nul,
        wall_offset_ns: 0,
    }
}
