//! `baf-setup apply`: make the set of topics exactly the wanted one, and
//! what it would do (`--dry-run`).

use crate::TopicArgs;
use anyhow::Result;
use baf::control::{self, CreateOptions, Created, TopicStatus};
use baf_cli::Failure;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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
        || u64::from(effective_stall_ms(want)) != s.stall_ms
        || cur
            .node
            .is_some_and(|(mode, uid, gid)| (mode, uid, gid) != (want.mode, want.uid, want.gid))
}

/// The stall timeout a topic created with `o` has: a lossless topic's 0
/// is the module's default (ABI 5).
fn effective_stall_ms(o: &CreateOptions) -> u32 {
    if o.lossless && o.stall_ms == 0 {
        baf::abi::STALL_MS_DEFAULT
    } else {
        o.stall_ms
    }
}

/// What `apply` would do, from the current topics: the wanted ones that
/// are missing are created, those whose settings differ recreated, the
/// others kept; the (non-static) topics not wanted are removed.
pub fn plan_apply(
    wanted: &BTreeMap<String, CreateOptions>,
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
    for (name, opts) in wanted {
        opts.check()?;
        match current.get(name) {
            None => done.created.push(name.clone()),
            Some(cur) if differs(cur, opts, default_ring) => done.recreated.push(name.clone()),
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

/// Checks the wanted names, and that the module is there to apply them to.
fn check_wanted(wanted: &BTreeMap<String, CreateOptions>) -> Result<()> {
    for name in wanted.keys() {
        control::check_name(name)?;
    }
    control::require_module()
}

/// `apply --dry-run`: what [`apply`] would do now, changing nothing.
/// `wanted` is what [`crate::validate`] made of the wanted topics.
pub fn dry_run(wanted: &BTreeMap<String, CreateOptions>) -> Result<Applied> {
    check_wanted(wanted)?;
    let mut current = BTreeMap::new();
    for status in control::list()? {
        let node = std::fs::metadata(control::node_of(&status.name))
            .ok()
            .map(|m| (m.mode() & 0o777, m.uid(), m.gid()));
        current.insert(status.name.clone(), Current { status, node });
    }
    plan_apply(wanted, &current, is_static, default_ring_size())
}

/// `apply`: make the set of (non-static) topics exactly `wanted`, what
/// [`crate::validate`] made of the wanted topics (so a bad setting is
/// refused before anything is removed or created; only the kernel's own
/// refusals, such as its limits, can stop `apply` part way).
pub fn apply(wanted: &BTreeMap<String, CreateOptions>) -> Result<Applied> {
    check_wanted(wanted)?;
    let mut done = Applied::default();
    for t in control::list()? {
        if !is_static(&t.name) && !wanted.contains_key(&t.name) {
            control::remove(&t.name)?;
            done.removed.push(t.name);
        }
    }
    for (name, opts) in wanted {
        match control::create(name, opts) {
            Ok(Created::New) => done.created.push(name.clone()),
            Ok(Created::Existed) => done.kept.push(name.clone()),
            Err(e) if baf_cli::errno(&e) == Some(libc::EEXIST) => {
                control::remove(name)?;
                control::create(name, opts)?;
                done.recreated.push(name.clone());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (wanted, places) = (wanted, crate::Places::new());
        let wanted = crate::validate(&wanted, &places, Some(65536)).unwrap();
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
    fn only_kernel_listed_static_nodes_count_as_static() {
        // Not listed by a kernel here: everything is under /dev/baf.
        assert!(!is_static("fanout0"));
        assert!(!is_static("robot/arm"));
    }
}
