//! The bridge's settings: its command-line flags, its own configuration
//! file (TOML, or JSON), and the Zenoh session's configuration built from
//! them.
//!
//! The file has the flags' settings under the same names (with `_` for
//! `-`), and the Zenoh session's under `[zenoh]`:
//!
//! ```toml
//! export = ["sensors/#", "robot/+/state"]   # baf patterns; none by default
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
//! multicast_scouting = false                # the default: off
//! gossip = false                            # the default: connect to no peer heard of
//! config = "/etc/zenoh/bridge.json5"        # a Zenoh configuration file
//!
//! [zenoh.auth]                              # Zenoh user/password authentication
//! user = "robot-1"                          # this bridge's name to the bridges it connects to
//! password_file = "/etc/baf/bridge/robot-1.password"
//! users_file = "/etc/baf/bridge/users"      # USER:PASSWORD lines: who may connect to this one
//!
//! [zenoh.set]                               # any Zenoh setting, by its path
//! "transport/link/tx/lease" = 5000
//! ```
//!
//! Safe by default: nothing is exported unless `export` names it, no
//! multicast scouting nor gossip unless asked, and the bridge listens only
//! on the endpoints given (Zenoh's own default is a random TCP port on
//! every address). A relative `password_file` or `users_file` is a systemd
//! credential: the file of that name in `$CREDENTIALS_DIRECTORY`, when that
//! is set.
//!
//! A file whose name ends in `.json` (or whose text starts with `{`) is
//! read as JSON with the same structure. Flags given on the command line
//! are added to the file's lists (`export`, `exclude`, `import`, `connect`,
//! `listen`, Zenoh settings) and replace its single values. An unknown
//! setting is an error. Every error in the file is one line that names the
//! file and the line (syntax, unknown keys, wrong types) or the key (a bad
//! value), and exit 2: nothing is started.

mod auth;
mod file;

use auth::check_user;
pub use auth::{check_users_file, credential_path, read_password, Auth};
use file::in_file;
pub use file::{AuthFile, File, ZenohFile};

use crate::names;
use anyhow::Result;
use baf::pattern::{split_list, Pattern};
use baf_cli::Failure;
use serde::Deserialize;
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
    /// endpoints given (and by scouting, when it is on).
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
    /// Multicast scouting (`Some(true)`: `--multicast-scouting`).
    pub multicast_scouting: Option<bool>,
    /// Gossip scouting (`Some(true)`: `--gossip`).
    pub gossip: Option<bool>,
    /// Zenoh settings, `PATH=JSON5`.
    pub zenoh_set: Vec<String>,
    /// The user name this bridge authenticates as.
    pub auth_user: Option<String>,
    /// The file holding its password.
    pub auth_password_file: Option<PathBuf>,
    /// The `USER:PASSWORD` file of those that may connect to it.
    pub auth_users_file: Option<PathBuf>,
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
    /// Warnings to log at the start (listening without authentication).
    pub warnings: Vec<String>,
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

fn check_host_name(host_name: &str) -> Result<()> {
    if host_name.is_empty() || host_name.len() > 255 || host_name.contains(char::is_control) {
        return Err(usage(format!(
            "invalid host name {host_name:?}: 1 to 255 bytes, no control characters"
        )));
    }
    Ok(())
}

fn import_keys(items: &[String]) -> Result<Vec<OwnedKeyExpr>> {
    split_list(items)
        .map_err(|e| usage(e.to_string()))?
        .iter()
        .map(|k| names::parse_import(k))
        .collect()
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

/// The Zenoh side of the settings, checked.
struct Net<'a> {
    mode: Option<Mode>,
    connect: &'a [String],
    listen: &'a [String],
    file: Option<&'a Path>,
    multicast_scouting: bool,
    gossip: bool,
    auth: Auth,
    /// `(PATH, JSON5, where it came from)`.
    set: Vec<(String, String, Option<&'a Path>)>,
}

/// Whether an endpoint listens on loopback (or a Unix socket) only.
fn local_endpoint(ep: &str) -> bool {
    let Some((proto, rest)) = ep.split_once('/') else {
        return false;
    };
    if proto != "tcp" {
        return true;
    }
    let address = rest.split(['?', '#']).next().unwrap_or_default();
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The Zenoh session's configuration, with a summary for the log and
/// the warnings to log.
fn zenoh_config(net: Net) -> Result<(zenoh::Config, String, Vec<String>)> {
    let Net {
        mode,
        connect,
        listen,
        file,
        multicast_scouting,
        gossip,
        auth,
        set,
    } = net;
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
    } else {
        // Zenoh's default listens on a random TCP port on every address
        // (peer mode): the bridge listens only where it is told to (here
        // or in a Zenoh configuration file).
        let default = zenoh::Config::default();
        if c.get_json("listen/endpoints").ok() == default.get_json("listen/endpoints").ok() {
            set_json(&mut c, "listen/endpoints", "[]")?;
        }
    }
    // No scouting unless asked: peers are the endpoints given.
    set_json(
        &mut c,
        "scouting/multicast/enabled",
        &multicast_scouting.to_string(),
    )?;
    // Gossip stays on (Zenoh warns without it, as it de-duplicates data
    // through gateways with it), but without --gossip the bridge connects
    // to none of the peers it hears of.
    set_json(&mut c, "scouting/gossip/enabled", "true")?;
    if !gossip {
        set_json(&mut c, "scouting/gossip/autoconnect", "[]")?;
    }
    if let Some((user, password)) = &auth.credentials {
        let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
        set_json(&mut c, "transport/auth/usrpwd/user", &s(user))?;
        set_json(&mut c, "transport/auth/usrpwd/password", &s(password))?;
    }
    if let Some(f) = &auth.users_file {
        let f = f.to_string_lossy();
        set_json(
            &mut c,
            "transport/auth/usrpwd/dictionary_file",
            &serde_json::to_string(&f).unwrap_or_default(),
        )?;
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
    for (k, v, origin) in &set {
        in_file(*origin, "zenoh.set", set_json(&mut c, k, v))?;
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
    let on = |k: &str| c.get_json(k).is_ok_and(|v| v == "true");
    let gossip_connects = on("scouting/gossip/enabled")
        && c.get_json("scouting/gossip/autoconnect")
            .is_ok_and(|v| v != "[]");
    summary += match (on("scouting/multicast/enabled"), gossip_connects) {
        (false, false) => ", no scouting",
        (true, false) => ", multicast scouting",
        (false, true) => ", gossip scouting",
        (true, true) => ", multicast and gossip scouting",
    };
    if let Some((user, _)) = &auth.credentials {
        summary += &format!(", authenticating as {user}");
    }
    if let Some(f) = &auth.users_file {
        summary += &format!(", accepting the users of {}", f.display());
    }
    if let Some(p) = file {
        summary += &format!(", Zenoh configuration {}", p.display());
    }
    let mut warnings = Vec::new();
    if auth.users_file.is_none() {
        for ep in listen.iter().filter(|ep| !local_endpoint(ep)) {
            warnings.push(format!(
                "listening on {ep} without authentication (--auth-users-file): any host that reaches it may connect, receive what this bridge exports and send what it imports"
            ));
        }
    }
    if connect.is_empty()
        && c.get_json("listen/endpoints").is_ok_and(|v| v == "[]")
        && !on("scouting/multicast/enabled")
        && c.get_json("connect/endpoints").is_ok_and(|v| v == "[]")
    {
        return Err(usage(
            "no Zenoh endpoint: give endpoints to listen on (--listen ENDPOINT) or connect to (--connect ENDPOINT), or turn on --multicast-scouting".into(),
        ));
    }
    Ok((c, summary, warnings))
}

impl Settings {
    /// Checks the flags (and the configuration file they name) and puts
    /// them together. Any problem is a usage error (exit 2).
    pub fn resolve(flags: Flags) -> Result<Self> {
        let file = match &flags.config {
            Some(p) => File::load(p)?,
            None => File::default(),
        };
        // The file's values are checked first, so that an error in one
        // names the file and the key.
        let at = flags.config.as_deref();
        let mut export = in_file(at, "export", patterns(&file.export))?;
        export.extend(patterns(&flags.export)?);
        let mut exclude = in_file(at, "exclude", patterns(&file.exclude))?;
        exclude.extend(patterns(&flags.exclude)?);
        let mut import = in_file(at, "import", import_keys(&file.import))?;
        import.extend(import_keys(&flags.import)?);
        if export.is_empty() && import.is_empty() {
            return Err(usage(
                "nothing to bridge: give topics to export (--export PATTERN) or keys to import (--import KEYEXPR); nothing is exported by default".into(),
            ));
        }
        if let Some(p) = &file.key_prefix {
            in_file(at, "key_prefix", names::check_key_prefix(p))?;
        }
        let key_prefix = flags
            .key_prefix
            .or(file.key_prefix)
            .unwrap_or_else(|| names::DEFAULT_KEY_PREFIX.to_string());
        names::check_key_prefix(&key_prefix)?;
        if let Some(i) = &file.into {
            in_file(at, "into", names::normalize_into(i))?;
        }
        let into = names::normalize_into(flags.into.or(file.into).as_deref().unwrap_or(""))?;
        if let Some(h) = &file.host_name {
            in_file(at, "host_name", check_host_name(h))?;
        }
        let host_name = flags
            .host_name
            .or(file.host_name)
            .unwrap_or_else(default_host_name);
        check_host_name(&host_name)?;
        if let Some(l) = &file.log_level {
            in_file(at, "log_level", log_filter(l))?;
        }
        let log_filter = log_filter(
            flags
                .log_level
                .or(file.log_level)
                .as_deref()
                .unwrap_or("info"),
        )?;
        for ep in &file.zenoh.connect {
            in_file(at, "zenoh.connect", names::check_endpoint(ep))?;
        }
        for ep in &file.zenoh.listen {
            in_file(at, "zenoh.listen", names::check_endpoint(ep))?;
        }
        let mut set = Vec::new();
        for (k, v) in &file.zenoh.set {
            set.push((k.clone(), v.to_string(), at));
        }
        for item in &flags.zenoh_set {
            let (k, v) = zenoh_set(item)?;
            set.push((k, v, None));
        }
        let fa = &file.zenoh.auth;
        if let Some(u) = &fa.user {
            in_file(at, "zenoh.auth.user", check_user(u))?;
        }
        if let Some(p) = &fa.password_file {
            in_file(
                at,
                "zenoh.auth.password_file",
                read_password(&credential_path(p)),
            )?;
        }
        if let Some(p) = &fa.users_file {
            in_file(
                at,
                "zenoh.auth.users_file",
                check_users_file(&credential_path(p)),
            )?;
        }
        let auth = Auth::resolve(
            flags.auth_user.as_deref().or(fa.user.as_deref()),
            flags
                .auth_password_file
                .as_deref()
                .or(fa.password_file.as_deref()),
            flags
                .auth_users_file
                .as_deref()
                .or(fa.users_file.as_deref()),
        )?;
        let connect = [file.zenoh.connect.as_slice(), &flags.connect].concat();
        let listen = [file.zenoh.listen.as_slice(), &flags.listen].concat();
        let (zenoh, zenoh_summary, warnings) = zenoh_config(Net {
            mode: flags.mode.or(file.zenoh.mode),
            connect: &connect,
            listen: &listen,
            file: flags
                .zenoh_config
                .as_deref()
                .or(file.zenoh.config.as_deref()),
            multicast_scouting: flags
                .multicast_scouting
                .or(file.zenoh.multicast_scouting)
                .unwrap_or(false),
            gossip: flags.gossip.or(file.zenoh.gossip).unwrap_or(false),
            auth,
            set,
        })?;
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
            warnings,
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
mod tests;
