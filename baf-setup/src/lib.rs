//! `baf-setup`: create, remove, apply and show topics. The logic behind
//! `main.rs`; see `--help` for the command line.

use anyhow::{Context, Result};
use baf::cli::Failure;
use baf::control::{self, CreateOptions, Created, TopicStatus};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The debugging topic the original baf always created.
pub const TEST_TOPIC: &str = "baf-test";

/// Settings for one topic, as given on the command line or in a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicArgs {
    /// Ring size in bytes; 0 for the module default.
    pub size: u64,
    /// Largest record in bytes; 0 for a quarter of the ring.
    pub record_max: u32,
    /// Node mode; `None` for 0660.
    pub mode: Option<u32>,
    /// Owner (name or number); `None` for the caller.
    pub owner: Option<String>,
    /// Group (name or number); `None` for `baf` when it exists.
    pub group: Option<String>,
}

fn resolve_user(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    nix::unistd::User::from_name(s)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
        .ok_or_else(|| Failure::Usage.wrap(anyhow::anyhow!("no such user {s:?}")))
}

fn resolve_group(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    control::group_gid(s).ok_or_else(|| {
        Failure::Usage.wrap(anyhow::anyhow!(
            "no such group {s:?}: create it (groupadd {s}) or give a number"
        ))
    })
}

impl TopicArgs {
    /// The kernel-level options these settings mean for the caller.
    pub fn options(&self) -> Result<CreateOptions> {
        let mut o = CreateOptions::defaults();
        o.ring_size = self.size;
        o.record_max = self.record_max;
        if let Some(m) = self.mode {
            o.mode = m;
        }
        if let Some(u) = &self.owner {
            o.uid = resolve_user(u)?;
        }
        if let Some(g) = &self.group {
            o.gid = resolve_group(g)?;
        }
        Ok(o)
    }
}

/// Parses an octal mode such as `0660` or `660`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode from 000 to 777"))
}

/// Parses a size with an optional K/M suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.strip_suffix(['K', 'k']) {
        Some(n) => (n, 1024),
        None => match s.strip_suffix(['M', 'm']) {
            Some(n) => (n, 1024 * 1024),
            None => (s, 1),
        },
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or with a K or M suffix)"))
}

/// `create`: make one topic (idempotent).
pub fn create(name: &str, args: &TopicArgs) -> Result<Created> {
    control::create(name, &args.options()?)
}

/// `remove`: remove one topic; a topic that is already gone is fine.
pub fn remove(name: &str) -> Result<bool> {
    match control::remove(name) {
        Ok(()) => Ok(true),
        Err(e) if baf::cli::errno(&e) == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One line of an `apply` file: `NAME [size=B] [record_max=B] [mode=OCT] [group=G] [owner=U]`.
pub fn parse_topic_line(line: &str) -> Result<Option<(String, TopicArgs)>, String> {
    let line = line.split('#').next().unwrap_or_default().trim();
    let mut words = line.split_whitespace();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let mut args = TopicArgs::default();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("{w:?}: expected key=value"))?;
        match k {
            "size" => args.size = parse_size(v)?,
            "record_max" => {
                args.record_max = u32::try_from(parse_size(v)?)
                    .map_err(|_| format!("record_max {v:?} is too large"))?
            }
            "mode" => args.mode = Some(parse_mode(v)?),
            "group" => args.group = Some(v.to_string()),
            "owner" => args.owner = Some(v.to_string()),
            _ => {
                return Err(format!(
                    "unknown setting {k:?} (size, record_max, mode, group, owner)"
                ))
            }
        }
    }
    Ok(Some((name.to_string(), args)))
}

/// The wanted set for `apply`, from a file's text.
pub fn parse_topic_file(text: &str) -> Result<BTreeMap<String, TopicArgs>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        match parse_topic_line(line) {
            Ok(Some((name, args))) => {
                out.insert(name, args);
            }
            Ok(None) => {}
            Err(e) => return Err(Failure::Usage.wrap(anyhow::anyhow!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
}

/// Whether a topic is one of the module's static `fanoutN` topics (the
/// kernel put its node straight in /dev), which `apply` leaves alone.
pub fn is_static(name: &str) -> bool {
    control::node_of(name).parent() == Some(Path::new("/dev"))
}

/// What `apply` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Topics created.
    pub created: Vec<String>,
    /// Topics recreated because their settings changed.
    pub recreated: Vec<String>,
    /// Topics removed.
    pub removed: Vec<String>,
    /// Topics left as they were.
    pub kept: Vec<String>,
}

/// `apply`: make the set of (non-static) topics exactly `wanted`.
pub fn apply(wanted: &BTreeMap<String, TopicArgs>) -> Result<Applied> {
    for name in wanted.keys() {
        control::check_name(name)?;
    }
    let mut done = Applied::default();
    for t in control::list()? {
        if !is_static(&t.name) && !wanted.contains_key(&t.name) {
            control::remove(&t.name)?;
            done.removed.push(t.name);
        }
    }
    for (name, args) in wanted {
        match create(name, args) {
            Ok(Created::New) => done.created.push(name.clone()),
            Ok(Created::Existed) => done.kept.push(name.clone()),
            Err(e) if baf::cli::errno(&e) == Some(libc::EEXIST) => {
                control::remove(name)?;
                create(name, args)?;
                done.recreated.push(name.clone());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

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

/// The `status` table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<24} {:>9} {:>8} {:>10} {:>12} {:>7} {:>7} {:>8} {:>10}  {}\n",
        "TOPIC", "RING", "REC_MAX", "RECORDS", "BYTES", "READERS", "WRITERS", "LOST", "SEQ", "NODE"
    );
    for r in rows {
        let s = &r.status;
        let perms = r.perms.as_ref().map_or_else(
            || "(no node)".to_string(),
            |(m, u, g)| format!("{m:04o} {u}:{g}"),
        );
        out += &format!(
            "{:<24} {:>9} {:>8} {:>10} {:>12} {:>7} {:>7} {:>8} {:>10}  {} {}\n",
            s.name,
            s.ring_size,
            s.record_max,
            s.records,
            s.bytes,
            s.readers,
            s.writers,
            s.lost,
            s.next_seq,
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
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Reads `path` (or stdin for `-`).
pub fn read_file(path: &str) -> Result<String> {
    if path == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_lines() {
        assert_eq!(parse_topic_line("  # only a comment").unwrap(), None);
        assert_eq!(parse_topic_line("").unwrap(), None);
        let (n, a) = parse_topic_line("robot/arm size=1M record_max=8K mode=0640 group=wheel # x")
            .unwrap()
            .unwrap();
        assert_eq!(n, "robot/arm");
        assert_eq!(
            a,
            TopicArgs {
                size: 1 << 20,
                record_max: 8192,
                mode: Some(0o640),
                owner: None,
                group: Some("wheel".into())
            }
        );
        assert!(parse_topic_line("t colour=red").is_err());
        assert!(parse_topic_line("t size").is_err());
        assert!(parse_topic_line("t mode=999").is_err());
    }

    #[test]
    fn sizes_and_modes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert!(parse_size("big").is_err());
        assert!(parse_size("99999999999999999999M").is_err());
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("1777").is_err());
    }

    #[test]
    fn files_report_the_bad_line() {
        let err = parse_topic_file("a\nb size=x\n").unwrap_err();
        assert!(baf::cli::message(&err).starts_with("line 2:"), "{err:#}");
        assert_eq!(baf::cli::exit_code(&err), 2);
        let ok = parse_topic_file("a\n\n# c\nb mode=600\n").unwrap();
        assert_eq!(ok.keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn only_kernel_listed_static_nodes_count_as_static() {
        // Not listed by a kernel here: everything is under /dev/baf.
        assert!(!is_static("fanout0"));
        assert!(!is_static("robot/arm"));
    }
}
