//! Zenoh user/password authentication: the user name, the password file
//! and the users file, checked before the session starts; relative files
//! are systemd credentials.

use super::usage;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// A credential file's path: a relative one is in `$CREDENTIALS_DIRECTORY`
/// (systemd's `LoadCredential=`) when that is set.
pub fn credential_path(path: &Path) -> PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if path.is_relative() && !dir.is_empty() => Path::new(&dir).join(path),
        _ => path.to_path_buf(),
    }
}

/// Checks a user name for Zenoh's user/password authentication.
pub(super) fn check_user(user: &str) -> Result<()> {
    if user.is_empty() || user.contains(':') || user.contains(char::is_whitespace) {
        return Err(usage(format!(
            "invalid user name {user:?}: not empty, no ':' and no white space"
        )));
    }
    Ok(())
}

/// The password in `path`: its text, less one line end; one line, not
/// empty.
pub fn read_password(path: &Path) -> Result<String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read password file {shown}: {e}")))?;
    let pw = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if pw.is_empty() || pw.contains(['\n', '\r']) || pw.trim() != pw {
        return Err(usage(format!(
            "bad password file {shown}: it must hold the password alone, on one line, without leading or trailing white space"
        )));
    }
    Ok(pw.to_string())
}

/// Checks a users file as Zenoh reads it: `USER:PASSWORD` lines (blank
/// lines are skipped); returns how many users it names.
pub fn check_users_file(path: &Path) -> Result<usize> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read users file {shown}: {e}")))?;
    let mut users = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| usage(format!("bad users file {shown}, line {}: {why}", i + 1));
        let Some((user, password)) = line.split_once(':') else {
            return Err(bad("write USER:PASSWORD"));
        };
        check_user(user.trim()).map_err(|e| bad(&baf_cli::message(&e)))?;
        if password.trim().is_empty() {
            return Err(bad("the password is empty"));
        }
        users += 1;
    }
    if users == 0 {
        return Err(usage(format!(
            "bad users file {shown}: it names no user (USER:PASSWORD lines)"
        )));
    }
    Ok(users)
}

/// User/password authentication, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// The user this bridge authenticates as, and its password.
    pub credentials: Option<(String, String)>,
    /// Who may connect to this bridge (Zenoh reads the file).
    pub users_file: Option<PathBuf>,
}

impl Auth {
    /// Checks the settings and reads the password (its file is named in
    /// errors, never the password).
    pub(super) fn resolve(
        user: Option<&str>,
        password_file: Option<&Path>,
        users_file: Option<&Path>,
    ) -> Result<Self> {
        let credentials = match (user, password_file) {
            (None, None) => None,
            (Some(u), Some(p)) => {
                check_user(u)?;
                Some((u.to_string(), read_password(&credential_path(p))?))
            }
            (Some(u), None) => {
                return Err(usage(format!(
                    "user {u:?} needs a password file (--auth-password-file FILE, or password_file in [zenoh.auth])"
                )))
            }
            (None, Some(p)) => {
                return Err(usage(format!(
                    "password file {} needs a user name (--auth-user NAME, or user in [zenoh.auth])",
                    p.display()
                )))
            }
        };
        let users_file = match users_file {
            Some(f) => {
                let f = credential_path(f);
                check_users_file(&f)?;
                Some(f)
            }
            None => None,
        };
        Ok(Self {
            credentials,
            users_file,
        })
    }
}
