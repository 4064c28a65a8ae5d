//! The bridge's configuration file: its structure, parsed from TOML or
//! JSON, and errors that name the file, the line and the key.

use super::{usage, Congestion, Envelope, Mode};
use anyhow::Result;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// As `--multicast-scouting` (off by default).
    pub multicast_scouting: Option<bool>,
    /// As `--gossip` (off by default).
    pub gossip: Option<bool>,
    /// User/password authentication.
    pub auth: AuthFile,
    /// As `--zenoh-set PATH=VALUE`.
    pub set: BTreeMap<String, serde_json::Value>,
}

/// The `[zenoh.auth]` table of the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthFile {
    /// As `--auth-user`.
    pub user: Option<String>,
    /// As `--auth-password-file`.
    pub password_file: Option<PathBuf>,
    /// As `--auth-users-file`.
    pub users_file: Option<PathBuf>,
}

impl File {
    /// Parses the text of a configuration file: JSON when `path` ends in
    /// `.json` or the text starts with `{`, TOML otherwise. An error is one
    /// line with the file, the line and the column.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let shown = path.display();
        let json =
            path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
        let (line, column, what) = if json {
            match serde_json::from_str(text) {
                Ok(f) => return Ok(f),
                Err(e) => {
                    let what = e.to_string();
                    // serde_json appends " at line L column C".
                    let what = match what.rfind(" at line ") {
                        Some(i) => what.get(..i).unwrap_or_default().to_string(),
                        None => what,
                    };
                    (e.line(), e.column(), what)
                }
            }
        } else {
            match toml::from_str(text) {
                Ok(f) => return Ok(f),
                Err(e) => {
                    let (line, column) = match e.span() {
                        Some(span) => line_column(text, span.start),
                        None => (0, 0),
                    };
                    (line, column, e.message().to_string())
                }
            }
        };
        let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
        Err(usage(if line > 0 {
            format!("bad configuration file {shown}, line {line}, column {column}: {what}")
        } else {
            format!("bad configuration file {shown}: {what}")
        }))
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

/// The 1-based line and column of byte `at` in `text`.
pub(super) fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

/// `r`, with an error naming the configuration file and the key its bad
/// value was under.
pub(super) fn in_file<T>(file: Option<&Path>, key: &str, r: Result<T>) -> Result<T> {
    match file {
        None => r,
        Some(f) => r.map_err(|e| {
            usage(format!(
                "bad configuration file {}, key {key}: {}",
                f.display(),
                baf_cli::message(&e)
            ))
        }),
    }
}
