//! `baf-setup`: create, remove, apply and show topics. The logic behind
//! `main.rs`; see `--help` for the command line.

use anyhow::{Context, Result};
use baf::control::{self, CreateOptions, Created, TopicStatus};
use baf_cli::Failure;
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
    /// Whether readers may be lossless; `None` for no (a lossy topic).
    pub lossless: Option<bool>,
    /// Stall timeout in milliseconds (only with `lossless`); `None` for
    /// none.
    pub stall_ms: Option<u32>,
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
        o.lossless = self.lossless.unwrap_or(false);
        o.stall_ms = self.stall_ms.unwrap_or(0);
        Ok(o)
    }

    /// Fills in what these settings leave out from `defaults` (an `apply`
    /// file's line from the command line's settings). A stall timeout is
    /// inherited only by a topic that ends up lossless.
    pub fn inherit(&mut self, defaults: &TopicArgs) {
        if self.size == 0 {
            self.size = defaults.size;
        }
        if self.record_max == 0 {
            self.record_max = defaults.record_max;
        }
        self.mode = self.mode.or(defaults.mode);
        self.owner = self.owner.clone().or(defaults.owner.clone());
        self.group = self.group.clone().or(defaults.group.clone());
        self.lossless = self.lossless.or(defaults.lossless);
        if self.lossless == Some(true) {
            self.stall_ms = self.stall_ms.or(defaults.stall_ms);
        }
    }
}

/// Parses a stall timeout: `500ms`, `2s`, or plain milliseconds; 0 is
/// none, at most one hour.
pub fn parse_duration_ms(s: &str) -> Result<u32, String> {
    let (num, mult) = match s.strip_suffix("ms") {
        Some(n) => (n, 1),
        None => match s.strip_suffix('s') {
            Some(n) => (n, 1000),
            None => (s, 1),
        },
    };
    let ms = num
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!("{s:?} is not a duration (milliseconds, or with an ms or s suffix: 500ms, 2s)")
        })?;
    u32::try_from(ms)
        .ok()
        .filter(|&ms| ms <= baf::abi::STALL_MS_MAX)
        .ok_or_else(|| format!("stall timeout {s:?} is too long: at most 3600s (one hour)"))
}

/// A stall timeout as `status` shows it: `250ms`, `2s`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms >= 1000 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a yes/no setting (`yes`, `no`, `true`, `false`, `on`, `off`,
/// `1`, `0`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not yes or no")),
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
        Err(e) if baf_cli::errno(&e) == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One line of an `apply` file: `NAME [size=B] [record_max=B] [mode=OCT]
/// [group=G] [owner=U] [lossless | lossless=yes|no] [stall_timeout=DURATION]`.
/// A stall timeout needs `lossless` on the same line.
pub fn parse_topic_line(line: &str) -> Result<Option<(String, TopicArgs)>, String> {
    let line = line.split('#').next().unwrap_or_default().trim();
    let mut words = line.split_whitespace();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let mut args = TopicArgs::default();
    for w in words {
        if w == "lossless" {
            args.lossless = Some(true);
            continue;
        }
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("{w:?}: expected key=value (or the word lossless)"))?;
        match k {
            "size" => args.size = parse_size(v)?,
            "record_max" => {
                args.record_max = u32::try_from(parse_size(v)?)
                    .map_err(|_| format!("record_max {v:?} is too large"))?
            }
            "mode" => args.mode = Some(parse_mode(v)?),
            "group" => args.group = Some(v.to_string()),
            "owner" => args.owner = Some(v.to_string()),
            "lossless" => args.lossless = Some(parse_bool(v).map_err(|e| format!("lossless: {e}"))?),
            "stall_timeout" => args.stall_ms = Some(parse_duration_ms(v)?),
            _ => {
                return Err(format!(
                    "unknown setting {k:?} (size, record_max, mode, group, owner, lossless, stall_timeout)"
                ))
            }
        }
    }
    if args.stall_ms.is_some() && args.lossless != Some(true) {
        return Err("stall_timeout needs lossless on the same line (only lossless readers can stall a writer)".into());
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

/// Refuses an empty `wanted` set unless `allow_empty`: applying it would
/// remove every topic made at run time.
pub fn check_not_empty(wanted: &BTreeMap<String, TopicArgs>, allow_empty: bool) -> Result<()> {
    if wanted.is_empty() && !allow_empty {
        return Err(Failure::Usage.wrap(anyhow::anyhow!(
            "refusing to apply an empty set of topics, which would remove every topic made at run time: name topics (NAMES, --topics, --file), or pass --allow-empty"
        )));
    }
    Ok(())
}

/// A topic's settings as far as sysfs and its node show them, to compare
/// with wanted ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    /// From sysfs.
    pub status: TopicStatus,
    /// Node mode (permission bits), uid and gid, when the node exists.
    pub node: Option<(u32, u32, u32)>,
}

/// The module's default ring size (its `ring_size` parameter), if readable.
pub fn default_ring_size() -> Option<u64> {
    std::fs::read_to_string("/sys/module/fanout/parameters/ring_size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Whether creating a topic with `want` where `cur` exists would be
/// refused for other settings (so `apply` recreates it). Settings that
/// cannot be seen (the ring size of a topic that takes the module default,
/// when that is unknown; a node that is missing) count as the same.
pub fn differs(cur: &Current, want: &CreateOptions, default_ring: Option<u64>) -> bool {
    let s = &cur.status;
    let ring = match want.ring_size {
        0 => default_ring,
        r => Some(r),
    };
    let record_max = match (want.record_max, ring) {
        (0, Some(r)) => Some(r / 4),
        (0, None) => None,
        (m, _) => Some(u64::from(m)),
    };
    ring.is_some_and(|r| r != s.ring_size)
        || record_max.is_some_and(|m| m != s.record_max)
        || want.lossless != s.lossless
        || u64::from(want.stall_ms) != s.stall_ms
        || cur
            .node
            .is_some_and(|(mode, uid, gid)| (mode, uid, gid) != (want.mode, want.uid, want.gid))
}

/// What `apply` would do, from the current topics: the wanted ones that
/// are missing are created, those whose settings differ recreated, the
/// others kept; the (non-static) topics not wanted are removed.
pub fn plan_apply(
    wanted: &BTreeMap<String, TopicArgs>,
    current: &BTreeMap<String, Current>,
    is_static: impl Fn(&str) -> bool,
    default_ring: Option<u64>,
) -> Result<Applied> {
    let mut done = Applied::default();
    for name in current.keys() {
        if !is_static(name) && !wanted.contains_key(name) {
            done.removed.push(name.clone());
        }
    }
    for (name, args) in wanted {
        let opts = args.options()?;
        opts.check()?;
        match current.get(name) {
            None => done.created.push(name.clone()),
            Some(cur) if differs(cur, &opts, default_ring) => done.recreated.push(name.clone()),
            Some(_) => done.kept.push(name.clone()),
        }
    }
    Ok(done)
}

/// What `apply --dry-run` prints: one line per kind of change, or
/// "nothing to do".
pub fn describe_plan(plan: &Applied) -> String {
    let mut out = String::new();
    for (what, names) in [
        ("would create", &plan.created),
        ("would recreate (settings changed)", &plan.recreated),
        ("would remove", &plan.removed),
        ("unchanged", &plan.kept),
    ] {
        if !names.is_empty() {
            out += &format!("{what}: {}\n", names.join(", "));
        }
    }
    if plan.created.is_empty() && plan.recreated.is_empty() && plan.removed.is_empty() {
        out += "nothing to do\n";
    }
    out
}

/// `apply --dry-run`: what [`apply`] would do now, changing nothing.
pub fn dry_run(wanted: &BTreeMap<String, TopicArgs>) -> Result<Applied> {
    for name in wanted.keys() {
        control::check_name(name)?;
    }
    control::require_module()?;
    let mut current = BTreeMap::new();
    for status in control::list()? {
        let node = std::fs::metadata(control::node_of(&status.name))
            .ok()
            .map(|m| (m.mode() & 0o777, m.uid(), m.gid()));
        current.insert(status.name.clone(), Current { status, node });
    }
    plan_apply(wanted, &current, is_static, default_ring_size())
}

/// `apply`: make the set of (non-static) topics exactly `wanted`.
pub fn apply(wanted: &BTreeMap<String, TopicArgs>) -> Result<Applied> {
    for name in wanted.keys() {
        control::check_name(name)?;
    }
    control::require_module()?;
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
            Err(e) if baf_cli::errno(&e) == Some(libc::EEXIST) => {
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

/// Reads `path` (or stdin for `-`).
pub fn read_file(path: &str) -> Result<String> {
    if path == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            let class = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory => {
                    Some(Failure::Usage)
                }
                std::io::ErrorKind::PermissionDenied => Some(Failure::Permission),
                _ => None,
            };
            let e = anyhow::Error::new(e).context(format!("cannot read {path}"));
            match class {
                Some(c) => c.wrap(e),
                None => e,
            }
        })
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
                group: Some("wheel".into()),
                lossless: None,
                stall_ms: None,
            }
        );
        assert!(parse_topic_line("t colour=red").is_err());
        assert!(parse_topic_line("t size").is_err());
        assert!(parse_topic_line("t mode=999").is_err());
    }

    #[test]
    fn lossless_lines() {
        let args = |line| parse_topic_line(line).unwrap().unwrap().1;
        let a = args("jobs lossless stall_timeout=1s");
        assert_eq!((a.lossless, a.stall_ms), (Some(true), Some(1000)));
        let a = args("jobs size=1M lossless=yes stall_timeout=250ms # x");
        assert_eq!(
            (a.size, a.lossless, a.stall_ms),
            (1 << 20, Some(true), Some(250))
        );
        let a = args("jobs stall_timeout=500 lossless");
        assert_eq!((a.lossless, a.stall_ms), (Some(true), Some(500)));
        let a = args("jobs lossless=no");
        assert_eq!((a.lossless, a.stall_ms), (Some(false), None));
        assert_eq!(args("jobs").lossless, None);
        let o = args("jobs lossless stall_timeout=2s").options().unwrap();
        assert_eq!((o.lossless, o.stall_ms), (true, 2000));
        assert_eq!(o.flags(), baf::abi::TOPIC_LOSSLESS);
        let o = args("jobs").options().unwrap();
        assert_eq!((o.lossless, o.stall_ms, o.flags()), (false, 0, 0));

        let err = |line| parse_topic_line(line).unwrap_err();
        assert!(err("jobs stall_timeout=1s").contains("needs lossless"));
        assert!(err("jobs lossless=no stall_timeout=1s").contains("needs lossless"));
        assert!(err("jobs lossless=maybe").contains("yes or no"));
        assert!(err("jobs lossless stall_timeout=soon").contains("not a duration"));
        assert!(err("jobs lossless stall_timeout=2h").contains("not a duration"));
        assert!(err("jobs lossless stall_timeout=3601s").contains("too long"));
        assert!(err("jobs lossy").contains("key=value"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2s"), Ok(2000));
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("3600s"), Ok(baf::abi::STALL_MS_MAX));
        assert!(parse_duration_ms("3600001").is_err());
        assert!(parse_duration_ms("99999999999999999999s").is_err());
        assert!(parse_duration_ms("-1s").is_err());
        assert!(parse_duration_ms("1.5s").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("ms").is_err());
        assert_eq!(format_duration_ms(250), "250ms");
        assert_eq!(format_duration_ms(2000), "2s");
        assert_eq!(format_duration_ms(1500), "1500ms");
        assert_eq!(parse_bool("yes"), Ok(true));
        assert_eq!(parse_bool("off"), Ok(false));
    }

    #[test]
    fn file_lines_inherit_the_command_line() {
        let defaults = TopicArgs {
            size: 1 << 20,
            mode: Some(0o640),
            lossless: Some(true),
            stall_ms: Some(2000),
            ..TopicArgs::default()
        };
        let mut plain = TopicArgs::default();
        plain.inherit(&defaults);
        assert_eq!(plain, defaults);
        // A line that says lossless=no gets no stall timeout.
        let mut lossy = TopicArgs {
            lossless: Some(false),
            ..TopicArgs::default()
        };
        lossy.inherit(&defaults);
        assert_eq!((lossy.lossless, lossy.stall_ms), (Some(false), None));
        lossy.options().unwrap();
        // Its own stall timeout wins.
        let mut own = TopicArgs {
            size: 65536,
            lossless: Some(true),
            stall_ms: Some(250),
            ..TopicArgs::default()
        };
        own.inherit(&defaults);
        assert_eq!(
            (own.size, own.mode, own.stall_ms),
            (65536, Some(0o640), Some(250))
        );
        // Lossy defaults leave a lossless line as it is.
        let mut line = TopicArgs {
            lossless: Some(true),
            ..TopicArgs::default()
        };
        line.inherit(&TopicArgs::default());
        assert_eq!((line.lossless, line.stall_ms), (Some(true), None));
    }

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
        assert!(baf_cli::message(&err).starts_with("line 2:"), "{err:#}");
        assert_eq!(baf_cli::exit_code(&err), 2);
        let ok = parse_topic_file("a\n\n# c\nb mode=600\n").unwrap();
        assert_eq!(ok.keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn an_empty_set_needs_allow_empty() {
        let none = BTreeMap::new();
        let e = check_not_empty(&none, false).unwrap_err();
        assert_eq!(baf_cli::exit_code(&e), 2);
        assert!(baf_cli::message(&e).contains("--allow-empty"));
        check_not_empty(&none, true).unwrap();
        let one = BTreeMap::from([("a".to_string(), TopicArgs::default())]);
        check_not_empty(&one, false).unwrap();
    }

    fn current(name: &str, ring: u64, lossless: bool, node: Option<(u32, u32, u32)>) -> Current {
        Current {
            status: TopicStatus {
                name: name.into(),
                ring_size: ring,
                record_max: ring / 4,
                lossless,
                ..TopicStatus::default()
            },
            node,
        }
    }

    #[test]
    fn dry_run_plans_like_apply() {
        let me = CreateOptions::defaults();
        let node = Some((0o660, me.uid, me.gid));
        let current = BTreeMap::from([
            ("same".to_string(), current("same", 65536, false, node)),
            ("bigger".to_string(), current("bigger", 65536, false, node)),
            ("lossy".to_string(), current("lossy", 65536, false, node)),
            ("stale".to_string(), current("stale", 65536, false, node)),
            (
                "fanout0".to_string(),
                current("fanout0", 65536, false, None),
            ),
            (
                "chmod".to_string(),
                current("chmod", 65536, false, Some((0o600, me.uid, me.gid))),
            ),
        ]);
        let wanted = BTreeMap::from([
            ("same".to_string(), TopicArgs::default()),
            (
                "bigger".to_string(),
                TopicArgs {
                    size: 1 << 20,
                    ..TopicArgs::default()
                },
            ),
            (
                "lossy".to_string(),
                TopicArgs {
                    lossless: Some(true),
                    ..TopicArgs::default()
                },
            ),
            ("chmod".to_string(), TopicArgs::default()),
            ("new".to_string(), TopicArgs::default()),
        ]);
        let plan = plan_apply(&wanted, &current, |n| n == "fanout0", Some(65536)).unwrap();
        assert_eq!(plan.created, ["new"]);
        assert_eq!(plan.recreated, ["bigger", "chmod", "lossy"]);
        assert_eq!(plan.removed, ["stale"]);
        assert_eq!(plan.kept, ["same"]);
        assert_eq!(
            describe_plan(&plan),
            "would create: new\nwould recreate (settings changed): bigger, chmod, lossy\nwould remove: stale\nunchanged: same\n"
        );
        // An unknown default ring size is not a difference.
        let plan = plan_apply(&wanted, &current, |n| n == "fanout0", None).unwrap();
        assert!(plan.kept.contains(&"same".to_string()));
        assert_eq!(describe_plan(&Applied::default()), "nothing to do\n");
    }

    #[test]
    fn a_missing_file_is_a_usage_error_not_a_missing_topic() {
        let e = read_file("/nonexistent/baf-topics").unwrap_err();
        assert_eq!(baf_cli::exit_code(&e), 2);
        assert_eq!(
            baf_cli::message(&e),
            "cannot read /nonexistent/baf-topics: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn only_kernel_listed_static_nodes_count_as_static() {
        // Not listed by a kernel here: everything is under /dev/baf.
        assert!(!is_static("fanout0"));
        assert!(!is_static("robot/arm"));
    }
}
