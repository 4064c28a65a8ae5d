//! `baf-setup status`: every topic's counters and node, as a table or
//! as JSON.

use crate::format_duration_ms;
use anyhow::Result;
use baf::control::{self, TopicStatus};
use std::os::unix::fs::MetadataExt;

/// A topic's row in `status`: the kernel's counters and its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// From sysfs.
    pub status: TopicStatus,
    /// Node path.
    pub node: String,
    /// Node mode, owner and group, when the node exists.
    pub perms: Option<(u32, String, String)>,
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name)
}

/// Every topic with its node.
pub fn rows() -> Result<Vec<Row>> {
    control::require_module()?;
    Ok(control::list()?
        .into_iter()
        .map(|status| {
            let node = control::node_of(&status.name);
            let perms = std::fs::metadata(&node)
                .ok()
                .map(|m| (m.mode() & 0o7777, user_name(m.uid()), group_name(m.gid())));
            Row {
                node: node.display().to_string(),
                status,
                perms,
            }
        })
        .collect())
}

/// The `status` table. LOSSLESS is `no`, `yes`, or `yes,TIMEOUT` with a
/// stall timeout; a lossy topic shows `-` for the lossless counters
/// (L_READERS: lossless readers now, WAITS: writer waits, DEMOTED: readers
/// demoted by the stall timeout).
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<24} {:>9} {:>8} {:>10} {:>12} {:>7} {:>7} {:>8} {:>10} {:>9} {:>9} {:>8} {:>7}  {}\n",
        "TOPIC",
        "RING",
        "REC_MAX",
        "RECORDS",
        "BYTES",
        "READERS",
        "WRITERS",
        "LOST",
        "SEQ",
        "LOSSLESS",
        "L_READERS",
        "WAITS",
        "DEMOTED",
        "NODE"
    );
    for r in rows {
        let s = &r.status;
        let perms = r.perms.as_ref().map_or_else(
            || "(no node)".to_string(),
            |(m, u, g)| format!("{m:04o} {u}:{g}"),
        );
        let (lossless, [l_readers, waits, demoted]) = if s.lossless {
            let mode = match s.stall_ms {
                0 => "yes".to_string(),
                ms => format!("yes,{}", format_duration_ms(ms)),
            };
            let n = [s.lossless_readers, s.writer_waits, s.demoted].map(|n| n.to_string());
            (mode, n)
        } else {
            ("no".to_string(), ["-", "-", "-"].map(String::from))
        };
        out += &format!(
            "{:<24} {:>9} {:>8} {:>10} {:>12} {:>7} {:>7} {:>8} {:>10} {:>9} {:>9} {:>8} {:>7}  {} {}\n",
            s.name,
            s.ring_size,
            s.record_max,
            s.records,
            s.bytes,
            s.readers,
            s.writers,
            s.lost,
            s.next_seq,
            lossless,
            l_readers,
            waits,
            demoted,
            r.node,
            perms
        );
    }
    out
}

/// The `status --json` document: an array of objects.
pub fn json(rows: &[Row]) -> String {
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let s = &r.status;
            serde_json::json!({
                "name": s.name,
                "node": r.node,
                "mode": r.perms.as_ref().map(|p| format!("{:04o}", p.0)),
                "owner": r.perms.as_ref().map(|p| p.1.clone()),
                "group": r.perms.as_ref().map(|p| p.2.clone()),
                "ring_size": s.ring_size,
                "record_max": s.record_max,
                "records": s.records,
                "bytes": s.bytes,
                "readers": s.readers,
                "writers": s.writers,
                "lost": s.lost,
                "next_seq": s.next_seq,
                "oldest_seq": s.oldest_seq,
                "lossless": s.lossless,
                "stall_ms": s.stall_ms,
                "lossless_readers": s.lossless_readers,
                "writer_waits": s.writer_waits,
                "demoted": s.demoted,
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, lossless: bool, stall_ms: u64) -> Row {
        Row {
            status: TopicStatus {
                name: name.into(),
                ring_size: 65536,
                record_max: 16384,
                records: 12,
                lossless,
                stall_ms,
                lossless_readers: 1,
                writer_waits: 34,
                demoted: 5,
                ..TopicStatus::default()
            },
            node: format!("/dev/baf/{name}"),
            perms: Some((0o660, "root".into(), "baf".into())),
        }
    }

    #[test]
    fn status_shows_lossless_topics() {
        let rows = [
            row("jobs", true, 250),
            row("plain", false, 0),
            row("wait", true, 0),
        ];
        let t = table(&rows);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        let header = &lines[0];
        let col = |name| header.iter().position(|h| *h == name).unwrap();
        let cell = |row: usize, name| lines[row][col(name)];
        assert_eq!(cell(1, "LOSSLESS"), "yes,250ms");
        assert_eq!(cell(1, "L_READERS"), "1");
        assert_eq!(cell(1, "WAITS"), "34");
        assert_eq!(cell(1, "DEMOTED"), "5");
        assert_eq!(cell(2, "LOSSLESS"), "no");
        assert_eq!(cell(2, "WAITS"), "-");
        assert_eq!(cell(3, "LOSSLESS"), "yes");
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .ends_with("/dev/baf/jobs 0660 root:baf"),
            "{t}"
        );

        let j: serde_json::Value = serde_json::from_str(&json(&rows)).unwrap();
        assert_eq!(j[0]["lossless"], true);
        assert_eq!(j[0]["stall_ms"], 250);
        assert_eq!(j[0]["lossless_readers"], 1);
        assert_eq!(j[0]["writer_waits"], 34);
        assert_eq!(j[0]["demoted"], 5);
        assert_eq!(j[1]["lossless"], false);
        assert_eq!(j[1]["stall_ms"], 0);
    }
}
