//! The bridge's settings: its command-line flags, its own configuration
//! file (TOML, or JSON), and the Zenoh session's configuration built from
//! them.
//!
//! The file has the flags' settings under the same names (with `_` for
//! `-`), and the Zenoh session's under `[zenoh]`:
//!
//! ```toml
//! export = ["sensors/#", "robot/+/state"]   # baf patterns
//! exclude = ["sensors/debug"]
//! import = ["baf/**"]                       # Zenoh key expressions
//! into = "remote/"
//! key_prefix = "baf"
//! envelope = "none"                         # or "json"
//! congestion = "auto"                       # or "drop", "block"
//! create = true
//! host_name = "robot-1"
//! log_level = "info"
//!
//! [zenoh]
//! mode = "peer"                             # or "client"
//! connect = ["tcp/192.168.1.2:7447"]
//! listen = ["tcp/0.0.0.0:7447"]
//! multicast_scouting = true
//! config = "/etc/zenoh/bridge.json5"        # a Zenoh configuration file
//!
//! [zenoh.set]                               # any Zenoh setting, by its path
//! "transport/link/tx/lease" = 5000
//! ```
//!
//! A file whose name ends in `.json` (or whose text starts with `{`) is
//! read as JSON with the same structure. Flags given on the command line
//! are added to the file's lists (`export`, `exclude`, `import`, `connect`,
//! `listen`, Zenoh settings) and replace its single values. An unknown
//! setting is an error.

use crate::names;
use anyhow::Result;
use baf::pattern::{split_list, Pattern};
use baf_cli::Failure;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use zenoh::key_expr::OwnedKeyExpr;

fn usage(msg: String) -> anyhow::Error {
    Failure::Usage.wrap(anyhow::anyhow!(msg))
}

/// The Zenoh session's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Talks to other peers directly (and to routers), found by the
    /// endpoints given and by multicast scouting.
    Peer,
    /// Talks only to one router (or peer) at a time, through it.
    Client,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Peer => "peer",
            Mode::Client => "client",
        })
    }
}

/// What an imported record holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// The payload as it was published (the default).
    #[default]
    None,
    /// One JSON object a record, with the provenance and the payload.
    Json,
}

/// Zenoh congestion control of exported topics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// Block for topics read losslessly, drop for the others (the default).
    #[default]
    Auto,
    /// Zenoh may drop samples when its queues are full; the importing
    /// bridge counts them.
    Drop,
    /// Zenoh waits for room: a slow network holds the bridge up, and a
    /// lossy topic's ring then overwrites what the bridge has not read (and
    /// the bridge counts that).
    Block,
}

/// The settings as given on the command line (all optional).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// The bridge's configuration file.
    pub config: Option<PathBuf>,
    /// Patterns of topics to export (each may be a comma list).
    pub export: Vec<String>,
    /// Patterns of topics not to export.
    pub exclude: Vec<String>,
    /// Key expressions to import.
    pub import: Vec<String>,
    /// Local prefix of imported topics.
    pub into: Option<String>,
    /// Zenoh key prefix.
    pub key_prefix: Option<String>,
    /// Envelope of imported records.
    pub envelope: Option<Envelope>,
    /// Congestion control of exported topics.
    pub congestion: Option<Congestion>,
    /// Whether missing topics are created for imports (`Some(false)`:
    /// `--no-create`).
    pub create: Option<bool>,
    /// Host name sent with exported records.
    pub host_name: Option<String>,
    /// Log level or filter.
    pub log_level: Option<String>,
    /// Zenoh mode.
    pub mode: Option<Mode>,
    /// Zenoh endpoints to connect to.
    pub connect: Vec<String>,
    /// Zenoh endpoints to listen on.
    pub listen: Vec<String>,
    /// A Zenoh configuration file.
    pub zenoh_config: Option<PathBuf>,
    /// `Some(false)`: no multicast scouting.
    pub multicast_scouting: Option<bool>,
    /// Zenoh settings, `PATH=JSON5`.
    pub zenoh_set: Vec<String>,
}

/// The bridge's configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct File {
    /// As `--export`.
    pub export: Vec<String>,
    /// As `--exclude`.
    pub exclude: Vec<String>,
    /// As `--import`.
    pub import: Vec<String>,
    /// As `--into`.
    pub into: Option<String>,
    /// As `--key-prefix`.
    pub key_prefix: Option<String>,
    /// As `--envelope`.
    pub envelope: Option<Envelope>,
    /// As `--congestion`.
    pub congestion: Option<Congestion>,
    /// `false` as `--no-create`.
    pub create: Option<bool>,
    /// As `--host-name`.
    pub host_name: Option<String>,
    /// As `--log-level`.
    pub log_level: Option<String>,
    /// The Zenoh session.
    pub zenoh: ZenohFile,
}

/// The `[zenoh]` table of the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZenohFile {
    /// As `--mode`.
    pub mode: Option<Mode>,
    /// As `--connect`.
    pub connect: Vec<String>,
    /// As `--listen`.
    pub listen: Vec<String>,
    /// As `--zenoh-config`.
    pub config: Option<PathBuf>,
    /// `false` as `--no-multicast-scouting`.
    pub multicast_scouting: Option<bool>,
    /// As `--zenoh-set PATH=VALUE`.
    pub set: BTreeMap<String, serde_json::Value>,
}

impl File {
    /// Parses the text of a configuration file: JSON when `path` ends in
    /// `.json` or the text starts with `{`, TOML otherwise.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let shown = path.display();
        let json =
            path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
        let parsed = if json {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| {
            let e = e.split_whitespace().collect::<Vec<_>>().join(" ");
            usage(format!("bad configuration file {shown}: {e}"))
        })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            usage(format!(
                "cannot read configuration file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(path, &text)
    }
}

/// Everything the bridge runs with, checked.
#[derive(Debug)]
pub struct Settings {
    /// Topics to export.
    pub export: Vec<Pattern>,
    /// Topics not to export.
    pub exclude: Vec<Pattern>,
    /// Key expressions to import.
    pub import: Vec<OwnedKeyExpr>,
    /// Local prefix of imported topics: empty, or ending with `/`.
    pub into: String,
    /// Zenoh key prefix of exported topics (no trailing `/`).
    pub key_prefix: String,
    /// Envelope of imported records.
    pub envelope: Envelope,
    /// Congestion control of exported topics.
    pub congestion: Congestion,
    /// Create missing topics for imports.
    pub create: bool,
    /// This host's name, sent with exported records.
    pub host_name: String,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log_filter: String,
    /// The Zenoh session's configuration.
    pub zenoh: zenoh::Config,
    /// What the Zenoh session was asked for, for the log.
    pub zenoh_summary: String,
}

/// This host's name (`/proc/sys/kernel/hostname`).
pub fn default_host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The log filter for `level`: a plain level applies to the bridge (Zenoh
/// itself logs warnings and errors only); anything else is taken as a
/// tracing filter (`info,zenoh=debug`).
pub fn log_filter(level: &str) -> Result<String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let filter = if LEVELS.contains(&level) {
        format!("warn,baf_bridge={level}")
    } else {
        level.to_string()
    };
    tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| {
        usage(format!(
            "invalid log level {level:?}: {e} (use {} or a filter such as info,zenoh=debug)",
            LEVELS.join(", ")
        ))
    })?;
    Ok(filter)
}

fn patterns(items: &[String]) -> Result<Vec<Pattern>> {
    let items = split_list(items).map_err(|e| usage(e.to_string()))?;
    items
        .iter()
        .map(|p| Pattern::parse(p).map_err(|e| usage(e.to_string())))
        .collect()
}

/// `PATH=VALUE` of `--zenoh-set`.
fn zenoh_set(item: &str) -> Result<(String, String)> {
    match item.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(usage(format!(
            "invalid --zenoh-set {item:?}: write PATH=VALUE, as in transport/link/tx/lease=5000 (the value in JSON5)"
        ))),
    }
}

/// The Zenoh session's configuration.
fn zenoh_config(
    mode: Option<Mode>,
    connect: &[String],
    listen: &[String],
    file: Option<&Path>,
    multicast_scouting: Option<bool>,
    set: &[(String, String)],
) -> Result<(zenoh::Config, String)> {
    for ep in connect.iter().chain(listen) {
        names::check_endpoint(ep)?;
    }
    let mut c = match file {
        Some(p) => zenoh::Config::from_file(p).map_err(|e| {
            usage(format!(
                "bad Zenoh configuration file {}: {}",
                p.display(),
                names::zenoh_message(&e)
            ))
        })?,
        None => zenoh::Config::default(),
    };
    let set_json = |c: &mut zenoh::Config, key: &str, value: &str| {
        c.insert_json5(key, value).map_err(|e| {
            usage(format!(
                "invalid Zenoh setting {key}={value}: {}",
                names::zenoh_message(&e)
            ))
        })
    };
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    if let Some(m) = mode {
        set_json(&mut c, "mode", &format!("\"{m}\""))?;
    }
    if !connect.is_empty() {
        set_json(&mut c, "connect/endpoints", &json(connect))?;
    }
    if !listen.is_empty() {
        set_json(&mut c, "listen/endpoints", &json(listen))?;
    }
    if let Some(on) = multicast_scouting {
        set_json(&mut c, "scouting/multicast/enabled", &on.to_string())?;
    }
    let unset = |c: &zenoh::Config, key: &str| c.get_json(key).is_ok_and(|v| v == "null");
    // A bridge keeps trying to reach the endpoints it was given, rather
    // than give up (Zenoh's default for a client is to fail at once).
    if unset(&c, "connect/exit_on_failure") {
        set_json(&mut c, "connect/exit_on_failure", "false")?;
    }
    if unset(&c, "connect/timeout_ms") {
        set_json(&mut c, "connect/timeout_ms", "-1")?;
    }
    for (k, v) in set {
        set_json(&mut c, k, v)?;
    }
    let mode = c
        .get_json("mode")
        .ok()
        .filter(|m| m != "null")
        .unwrap_or_else(|| "\"peer\"".into());
    let mut summary = format!("mode {}", mode.trim_matches('"'));
    if !listen.is_empty() {
        summary += &format!(", listening on {}", listen.join(" "));
    }
    if !connect.is_empty() {
        summary += &format!(", connecting to {}", connect.join(" "));
    }
    if multicast_scouting == Some(false) {
        summary += ", no multicast scouting";
    }
    if let Some(p) = file {
        summary += &format!(", Zenoh configuration {}", p.display());
    }
    Ok((c, summary))
}

impl Settings {
    /// Checks the flags (and the configuration file they name) and puts
    /// them together. Any problem is a usage error (exit 2).
    pub fn resolve(flags: Flags) -> Result<Self> {
        let file = match &flags.config {
            Some(p) => File::load(p)?,
            None => File::default(),
        };
        let cat = |a: &[String], b: &[String]| [a, b].concat();
        let export = patterns(&cat(&file.export, &flags.export))?;
        let exclude = patterns(&cat(&file.exclude, &flags.exclude))?;
        let import = split_list(&cat(&file.import, &flags.import))
            .map_err(|e| usage(e.to_string()))?
            .iter()
            .map(|k| names::parse_import(k))
            .collect::<Result<Vec<_>>>()?;
        if export.is_empty() && import.is_empty() {
            return Err(usage(
                "nothing to bridge: give topics to export (--export PATTERN) or keys to import (--import KEYEXPR)".into(),
            ));
        }
        let key_prefix = flags
            .key_prefix
            .or(file.key_prefix)
            .unwrap_or_else(|| names::DEFAULT_KEY_PREFIX.to_string());
        names::check_key_prefix(&key_prefix)?;
        let into = names::normalize_into(flags.into.or(file.into).as_deref().unwrap_or(""))?;
        let host_name = flags
            .host_name
            .or(file.host_name)
            .unwrap_or_else(default_host_name);
        if host_name.is_empty() || host_name.len() > 255 || host_name.contains(char::is_control) {
            return Err(usage(format!(
                "invalid host name {host_name:?}: 1 to 255 bytes, no control characters"
            )));
        }
        let log_filter = log_filter(
            flags
                .log_level
                .or(file.log_level)
                .as_deref()
                .unwrap_or("info"),
        )?;
        let mut set = Vec::new();
        for (k, v) in &file.zenoh.set {
            set.push((k.clone(), v.to_string()));
        }
        for item in &flags.zenoh_set {
            set.push(zenoh_set(item)?);
        }
        let (zenoh, zenoh_summary) = zenoh_config(
            flags.mode.or(file.zenoh.mode),
            &cat(&file.zenoh.connect, &flags.connect),
            &cat(&file.zenoh.listen, &flags.listen),
            flags
                .zenoh_config
                .as_deref()
                .or(file.zenoh.config.as_deref()),
            flags.multicast_scouting.or(file.zenoh.multicast_scouting),
            &set,
        )?;
        Ok(Self {
            export,
            exclude,
            import,
            into,
            key_prefix,
            envelope: flags.envelope.or(file.envelope).unwrap_or_default(),
            congestion: flags.congestion.or(file.congestion).unwrap_or_default(),
            create: flags.create.or(file.create).unwrap_or(true),
            host_name,
            log_filter,
            zenoh,
            zenoh_summary,
        })
    }

    /// Whether topic `name` is exported: it matches `--export` and no
    /// `--exclude`, and it is not under `--into` (the topics there hold this
    /// bridge's imports: they came from elsewhere and are not sent on).
    pub fn exports(&self, name: &str) -> bool {
        self.export.iter().any(|p| p.matches(name))
            && !self.exclude.iter().any(|p| p.matches(name))
            && (self.into.is_empty() || !name.starts_with(&self.into))
    }

    /// Whether imported samples may be written into topic `name`: some
    /// `--import` key expression matches a key that maps to it. Such a topic
    /// is never read losslessly for export, so that the bridge never holds
    /// up its own writes (with `--into ""`, the same name can be exported
    /// and imported: two bridges that block on each other must not wait for
    /// themselves).
    pub fn import_target(&self, name: &str) -> bool {
        let Some(rest) = name.strip_prefix(&self.into).filter(|r| !r.is_empty()) else {
            return false;
        };
        // The keys `import_topic` maps to `name`: the prefixed one, and the
        // whole key when it is outside the prefix.
        let prefixed = names::export_key(&self.key_prefix, rest);
        let outside = !self.key_prefix.is_empty()
            && rest != self.key_prefix
            && !rest.starts_with(&format!("{}/", self.key_prefix));
        let mut keys = vec![prefixed];
        if outside {
            keys.push(rest.to_string());
        }
        keys.iter().any(|k| {
            OwnedKeyExpr::try_from(k.as_str())
                .is_ok_and(|k| self.import.iter().any(|ke| ke.intersects(&k)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Flags {
        Flags {
            export: vec!["#".into()],
            ..Flags::default()
        }
    }

    fn usage_of(f: Flags) -> String {
        let e = Settings::resolve(f).unwrap_err();
        assert_eq!(baf_cli::exit_code(&e), 2, "{e:#}");
        let m = baf_cli::message(&e);
        assert!(!m.contains('\n'), "{m}");
        m
    }

    fn scratch(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("baf-bridge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(flags()).unwrap();
        assert_eq!(s.key_prefix, "baf");
        assert_eq!(s.into, "");
        assert!(s.create);
        assert_eq!(s.envelope, Envelope::None);
        assert_eq!(s.congestion, Congestion::Auto);
        assert_eq!(s.log_filter, "warn,baf_bridge=info");
        assert!(s.exports("a/b") && s.exports("x"));
        assert_eq!(
            s.zenoh.get_json("connect/exit_on_failure").unwrap(),
            "false"
        );
        assert_eq!(s.zenoh_summary, "mode peer");
    }

    #[test]
    fn exports_and_import_targets() {
        let s = Settings::resolve(Flags {
            export: vec!["#".into()],
            exclude: vec!["secret/#".into()],
            import: vec!["baf/robot/**".into(), "lab/*".into()],
            into: Some("remote".into()),
            ..Flags::default()
        })
        .unwrap();
        assert!(s.exports("sensors") && s.exports("remotex/a"));
        assert!(!s.exports("secret/a"), "excluded");
        assert!(
            !s.exports("remote/sensors") && !s.exports("remote/a/b"),
            "imports"
        );
        assert!(s.import_target("remote/robot/arm"));
        assert!(!s.import_target("remote/sensors"));
        assert!(
            s.import_target("remote/lab/temp"),
            "a key outside the prefix"
        );
        assert!(!s.import_target("remote/lab/a/b"), "lab/* is one level");
        assert!(!s.import_target("sensors") && !s.import_target("remote/"));
        // Same names on both sides: every exported topic may be imported.
        let mirror = Settings::resolve(Flags {
            export: vec!["#".into()],
            import: vec!["baf/robot/**".into()],
            ..Flags::default()
        })
        .unwrap();
        assert!(mirror.exports("robot/arm") && mirror.import_target("robot/arm"));
        assert!(mirror.exports("sensors") && !mirror.import_target("sensors"));
        assert!(
            !mirror.import_target("baf/robot/arm"),
            "that is key baf/baf/robot/arm"
        );
    }

    #[test]
    fn nothing_to_bridge() {
        assert!(usage_of(Flags::default()).starts_with("nothing to bridge"));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let with = |f: fn(&mut Flags)| {
            let mut fl = flags();
            f(&mut fl);
            usage_of(fl)
        };
        assert!(with(|f| f.export = vec!["a/#/b".into()]).contains("invalid topic pattern"));
        assert!(with(|f| f.exclude = vec!["a,,b".into()]).contains("empty item"));
        assert!(with(|f| f.import = vec!["baf/#".into()]).contains("invalid key expression"));
        assert!(with(|f| f.connect = vec!["udp/1.2.3.4:5".into()]).contains("invalid endpoint"));
        assert!(with(|f| f.listen = vec!["tcp/1.2.3.4".into()]).contains("invalid endpoint"));
        assert!(with(|f| f.key_prefix = Some("baf/".into())).contains("key prefix"));
        assert!(with(|f| f.into = Some("a b".into())).contains("--into"));
        assert!(with(|f| f.host_name = Some(String::new())).contains("host name"));
        assert!(with(|f| f.log_level = Some("loud[".into())).contains("log level"));
        assert!(with(|f| f.zenoh_set = vec!["x".into()]).contains("PATH=VALUE"));
        assert!(with(|f| f.zenoh_set = vec!["mode=\"router2\"".into()])
            .contains("invalid Zenoh setting"));
        assert!(with(|f| f.config = Some("/nonexistent/bridge.toml".into()))
            .contains("cannot read configuration file"));
        assert!(
            with(|f| f.zenoh_config = Some("/nonexistent/z.json5".into()))
                .contains("Zenoh configuration file")
        );
    }

    #[test]
    fn file_and_flags_together() {
        let p = scratch(
            "bridge.toml",
            r#"
export = ["sensors/#"]
exclude = ["sensors/debug"]
import = ["baf/**"]
into = "remote"
envelope = "json"
congestion = "block"
create = false
host_name = "robot-1"

[zenoh]
mode = "client"
connect = ["tcp/127.0.0.1:7447"]
multicast_scouting = false

[zenoh.set]
"transport/link/tx/lease" = 5000
"#,
        );
        let s = Settings::resolve(Flags {
            config: Some(p),
            export: vec!["robot/+".into()],
            connect: vec!["tcp/127.0.0.1:7448".into()],
            host_name: Some("robot-2".into()),
            ..Flags::default()
        })
        .unwrap();
        assert!(s.exports("sensors/a") && s.exports("robot/arm"));
        assert!(!s.exports("sensors/debug") && !s.exports("other"));
        assert_eq!(s.import.len(), 1);
        assert_eq!(s.into, "remote/");
        assert_eq!(s.envelope, Envelope::Json);
        assert_eq!(s.congestion, Congestion::Block);
        assert!(!s.create);
        assert_eq!(s.host_name, "robot-2", "a flag replaces the file's value");
        assert_eq!(s.zenoh.get_json("mode").unwrap(), "\"client\"");
        assert_eq!(
            s.zenoh.get_json("connect/endpoints").unwrap(),
            r#"["tcp/127.0.0.1:7447","tcp/127.0.0.1:7448"]"#
        );
        assert_eq!(s.zenoh.get_json("transport/link/tx/lease").unwrap(), "5000");
        assert_eq!(
            s.zenoh_summary,
            "mode client, connecting to tcp/127.0.0.1:7447 tcp/127.0.0.1:7448, no multicast scouting"
        );
    }

    #[test]
    fn json_files_and_file_errors() {
        let p = scratch(
            "bridge.json",
            r#"{"import": ["baf/*"], "zenoh": {"listen": ["tcp/127.0.0.1:0"]}}"#,
        );
        let s = Settings::resolve(Flags {
            config: Some(p),
            ..Flags::default()
        })
        .unwrap();
        assert_eq!(s.import[0].as_str(), "baf/*");
        let bad = |name: &str, text: &str| {
            usage_of(Flags {
                config: Some(scratch(name, text)),
                ..flags()
            })
        };
        assert!(bad("a.toml", "exports = [\"x\"]").contains("unknown field `exports`"));
        assert!(bad("b.toml", "export = [").contains("bad configuration file"));
        assert!(bad("c.json", "{\"zenoh\": {\"mode\": \"router\"}}").contains("unknown variant"));
        assert!(bad("d.toml", "[zenoh]\nconnect = [\"tcp/x\"]").contains("invalid endpoint"));
    }
}
