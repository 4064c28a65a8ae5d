//! `baf-setup`: create, remove, apply and show topics. The logic behind
//! `main.rs`; see `--help` for the command line.

mod apply;
mod status;

use anyhow::{Context, Result};
pub use apply::{
    apply, check_not_empty, default_ring_size, describe_plan, differs, dry_run, is_static,
    plan_apply, Applied, Current,
};
use baf::control::{self, CreateOptions, Created};
use baf_cli::Failure;
pub use status::{json, rows, table, Row};
use std::collections::BTreeMap;

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

/// Parses a stall timeout: `500ms`, `2s`, or plain milliseconds, at most
/// one hour; 0 is the module's default (10 s), `never` none at all (only
/// root may create such a topic).
pub fn parse_duration_ms(s: &str) -> Result<u32, String> {
    if s == "never" {
        return Ok(baf::abi::STALL_MS_NEVER);
    }
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

/// A stall timeout as `status` shows it: `250ms`, `2s`, `never`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms == u64::from(baf::abi::STALL_MS_NEVER) {
        "never".to_string()
    } else if ms >= 1000 && ms % 1000 == 0 {
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

/// Where each wanted topic of `apply` was asked for, to name in an error:
/// `FILE line N` for a file's line; a topic named on the command line has
/// no entry (its error names the topic).
pub type Places = BTreeMap<String, String>;

/// The wanted set for `apply`, from the text of file `source` (`-` is
/// stdin), and where each topic is in it. A bad line, a bad topic name or a
/// topic named twice is a usage error naming the file and line.
pub fn parse_topic_file(text: &str, source: &str) -> Result<(BTreeMap<String, TopicArgs>, Places)> {
    let source = if source == "-" { "stdin" } else { source };
    let mut out = BTreeMap::new();
    let mut places = Places::new();
    for (i, line) in text.lines().enumerate() {
        let place = format!("{source} line {}", i + 1);
        let bad = |e: String| Failure::Usage.wrap(anyhow::anyhow!("{place}: {e}"));
        match parse_topic_line(line) {
            Ok(Some((name, args))) => {
                control::check_name(&name).map_err(|e| bad(baf_cli::message(&e)))?;
                if let Some(first) = places.get(&name) {
                    return Err(bad(format!("topic {name:?} is already on {first}")));
                }
                out.insert(name.clone(), args);
                places.insert(name, place);
            }
            Ok(None) => {}
            Err(e) => return Err(bad(e)),
        }
    }
    Ok((out, places))
}

/// Smallest and largest ring, smallest record (the kernel's limits, which
/// it refuses with a bare `EINVAL`).
const RING_MIN: u64 = 16 << 10;
const RING_MAX: u64 = 64 << 20;
const RECORD_MIN: u64 = 4 << 10;

/// Checks a ring size and largest record as the kernel will; a ring of 0
/// is the module's `default_ring` (when that is unknown, only what can be
/// checked without it is).
fn check_sizes(size: u64, record_max: u32, default_ring: Option<u64>) -> Result<(), String> {
    if size != 0 && (!size.is_power_of_two() || !(RING_MIN..=RING_MAX).contains(&size)) {
        return Err(format!("size {size} is not a power of two from 16K to 64M"));
    }
    let ring = if size == 0 { default_ring } else { Some(size) };
    let record = u64::from(record_max);
    if record != 0 {
        let top = ring.map_or(RING_MAX / 4, |r| r / 4);
        if !(RECORD_MIN..=top).contains(&record) {
            return Err(match ring {
                Some(r) => format!(
                    "record_max {record} is not from 4K to a quarter of the ring ({})",
                    r / 4
                ),
                None => format!("record_max {record} is not from 4K to 16M"),
            });
        }
    }
    Ok(())
}

/// Checks every wanted topic (name, owner and group, sizes, stall
/// timeout) and turns it into what the kernel is asked, before `apply`
/// changes anything: a bad one is a usage error naming its place (its
/// file and line from `places`, else the topic), and nothing is applied.
pub fn validate(
    wanted: &BTreeMap<String, TopicArgs>,
    places: &Places,
    default_ring: Option<u64>,
) -> Result<BTreeMap<String, CreateOptions>> {
    let mut out = BTreeMap::new();
    for (name, args) in wanted {
        let place = || match places.get(name) {
            Some(p) => p.clone(),
            None => format!("topic {name:?}"),
        };
        let checked = control::check_name(name)
            .and_then(|()| args.options())
            .and_then(|o| {
                o.check()?;
                check_sizes(args.size, args.record_max, default_ring)
                    .map_err(|e| Failure::Usage.wrap(anyhow::anyhow!(e)))?;
                Ok(o)
            });
        match checked {
            Ok(o) => {
                out.insert(name.clone(), o);
            }
            Err(e) => {
                return Err(Failure::Usage.wrap(anyhow::anyhow!(
                    "{}: {}",
                    place(),
                    baf_cli::message(&e)
                )))
            }
        }
    }
    Ok(out)
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
        let err = parse_topic_file("a\nb size=x\n", "/etc/baf/topics").unwrap_err();
        assert_eq!(
            baf_cli::message(&err),
            "/etc/baf/topics line 2: \"x\" is not a size (bytes, or with a K or M suffix)"
        );
        assert_eq!(baf_cli::exit_code(&err), 2);
        let err = parse_topic_file("a\n\nb\n a # again\n", "-").unwrap_err();
        assert_eq!(
            baf_cli::message(&err),
            "stdin line 4: topic \"a\" is already on stdin line 1"
        );
        let err = parse_topic_file("a\nb c=d\n", "t").unwrap_err();
        assert!(
            baf_cli::message(&err).starts_with("t line 2: unknown setting"),
            "{err:#}"
        );
        let err = parse_topic_file("a\nb/../c\n", "t").unwrap_err();
        assert_eq!(
            baf_cli::message(&err),
            "t line 2: invalid topic name \"b/../c\": a level is '.' or '..'"
        );
        assert_eq!(baf_cli::exit_code(&err), 2);
        let (ok, places) = parse_topic_file("a\n\n# c\nb mode=600\n", "f").unwrap();
        assert_eq!(ok.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(places["b"], "f line 4");
    }

    #[test]
    fn everything_is_checked_before_anything_is_applied() {
        let text = "good\nalso/good size=1M\nbig size=128M\n";
        let (wanted, places) = parse_topic_file(text, "f").unwrap();
        let err = validate(&wanted, &places, Some(65536)).unwrap_err();
        assert_eq!(
            baf_cli::message(&err),
            "f line 3: size 134217728 is not a power of two from 16K to 64M"
        );
        assert_eq!(baf_cli::exit_code(&err), 2);
        let bad = |line: &str, default_ring| {
            let (w, p) = parse_topic_file(line, "f").unwrap();
            baf_cli::message(&validate(&w, &p, default_ring).unwrap_err())
        };
        assert_eq!(
            bad("t size=1000", None),
            "f line 1: size 1000 is not a power of two from 16K to 64M"
        );
        assert_eq!(
            bad("t size=64K record_max=32K", None),
            "f line 1: record_max 32768 is not from 4K to a quarter of the ring (16384)"
        );
        assert_eq!(
            bad("t record_max=32K", Some(65536)),
            "f line 1: record_max 32768 is not from 4K to a quarter of the ring (16384)"
        );
        assert_eq!(
            bad("t record_max=1K", None),
            "f line 1: record_max 1024 is not from 4K to 16M"
        );
        assert!(bad("t group=no-such-group-baf", None)
            .starts_with("f line 1: no such group \"no-such-group-baf\""));
        assert!(bad("t owner=no-such-user-baf", None)
            .starts_with("f line 1: no such user \"no-such-user-baf\""));
        // Unknown module default: a record_max that fits some ring passes.
        let (w, p) = parse_topic_file("t record_max=32K\nu size=16K\n", "f").unwrap();
        let opts = validate(&w, &p, None).unwrap();
        assert_eq!(opts["t"].record_max, 32768);
        assert_eq!(opts["u"].ring_size, 16384);
        // A topic from the command line is named as such.
        let cli = BTreeMap::from([(
            "cli".to_string(),
            TopicArgs {
                size: 3 << 20,
                ..TopicArgs::default()
            },
        )]);
        assert_eq!(
            baf_cli::message(&validate(&cli, &Places::new(), None).unwrap_err()),
            "topic \"cli\": size 3145728 is not a power of two from 16K to 64M"
        );
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
}
