//! What the system says about baf, without opening a device: whether the
//! module is loaded, its devices' major numbers, where a topic's node is
//! (sysfs, `/dev/baf`), and whether a command-line topic is a path or a
//! name.

use crate::error::ModuleNotLoaded;
use std::path::{Path, PathBuf};

/// Where the kernel lists topics: `/sys/class/baf`.
pub const SYSFS_CLASS: &str = "/sys/class/baf";

/// Whether the baf module is loaded: its class is in sysfs.
pub fn module_loaded() -> bool {
    Path::new(SYSFS_CLASS).is_dir()
}

/// A [`ModuleNotLoaded`] error unless the module is loaded.
pub fn require_module() -> anyhow::Result<()> {
    if module_loaded() {
        Ok(())
    } else {
        Err(ModuleNotLoaded.into())
    }
}

/// The major numbers of the baf class's devices (from
/// `/sys/class/baf/*/dev`, `MAJOR:MINOR`); `None` when the module is not
/// loaded.
pub fn majors() -> Option<Vec<u32>> {
    let dir = std::fs::read_dir(SYSFS_CLASS).ok()?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Ok(dev) = std::fs::read_to_string(entry.path().join("dev")) else {
            continue;
        };
        if let Some(Ok(major)) = dev.trim().split(':').next().map(str::parse::<u32>) {
            if !out.contains(&major) {
                out.push(major);
            }
        }
    }
    Some(out)
}

/// Where topic nodes live: `$BAF_DEV_DIR`, or `/dev/baf`.
pub fn dev_dir() -> PathBuf {
    std::env::var_os("BAF_DEV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/baf"))
}

/// The device node of topic `name`, as the kernel named it (the `DEVNAME`
/// of its sysfs `uevent`: `/dev/baf/<name>`, or `/dev/fanoutN` for the
/// static topics); for a topic the kernel does not list, where it would be:
/// under [`dev_dir`].
pub fn node_of(name: &str) -> PathBuf {
    let uevent = Path::new(SYSFS_CLASS)
        .join(name.replace('/', "!"))
        .join("uevent");
    std::fs::read_to_string(uevent)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|dev| Path::new("/dev").join(dev))
        })
        .unwrap_or_else(|| dev_dir().join(name))
}

/// Whether a command-line topic is a device path (starting with `/` or
/// `.`, used as it is) rather than a name or pattern.
pub fn is_path(topic: &str) -> bool {
    topic.starts_with('/') || topic.starts_with('.')
}

/// The device path of a topic: a name is looked up as the kernel placed
/// its node ([`node_of`]); a path ([`is_path`]) is used as it is.
pub fn topic_path(topic: &str) -> PathBuf {
    if is_path(topic) {
        PathBuf::from(topic)
    } else {
        node_of(topic)
    }
}

/// Whether `name` is a static topic's node name (`fanoutN`).
pub fn is_static_name(name: &str) -> bool {
    name.strip_prefix("fanout")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The name to show for a topic given by its device path: its name under
/// [`dev_dir`], a static topic's node name, else the path as given.
pub fn label_of_path(path: &str) -> String {
    let p = Path::new(path);
    if let Ok(rel) = p.strip_prefix(dev_dir()) {
        if let Some(s) = rel.to_str().filter(|s| !s.is_empty()) {
            return s.to_string();
        }
    }
    if p.parent() == Some(Path::new("/dev")) {
        if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            if is_static_name(n) {
                return n.to_string();
            }
        }
    }
    path.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names() {
        assert!(is_path("/dev/fanout0") && is_path("./t") && !is_path("robot/arm"));
        assert_eq!(topic_path("/dev/fanout0"), PathBuf::from("/dev/fanout0"));
    }

    #[test]
    fn static_names() {
        assert!(is_static_name("fanout0") && is_static_name("fanout63"));
        assert!(!is_static_name("fanout") && !is_static_name("fanoutx") && !is_static_name("baf"));
    }

    #[test]
    fn labels_of_paths() {
        assert_eq!(label_of_path("/dev/fanout2"), "fanout2");
        assert_eq!(label_of_path("./node"), "./node");
        let under = dev_dir().join("robot/arm");
        assert_eq!(label_of_path(under.to_str().unwrap()), "robot/arm");
    }
}
