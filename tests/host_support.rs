//! Shared by the host tests of the built tools (`pubmsg/tests/host.rs`,
//! `submsg/tests/host.rs`, `baf-setup/tests/host.rs`), each of which
//! includes this file as a module and defines `TOOL` (the binary) and
//! `TOOL_NAME`: running the tool with a time limit, and checking its exit
//! code and one-line stderr.

#![allow(dead_code)] // not every test file uses every helper

use super::{TOOL, TOOL_NAME};
pub(crate) use std::io::Read;
pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::process::{Child, Command, Stdio};
pub(crate) use std::time::{Duration, Instant};

pub(crate) const MODULE_MISSING: &str =
    "the baf module is not loaded: load it with `modprobe fanout` (or `insmod fanout.ko`)";

/// What a run of the tool did.
pub(crate) struct Ran {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Ran {
    /// The one line on stderr (there must be exactly one: no backtrace,
    /// no clap usage block).
    pub(crate) fn line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.len() == 1 && self.stderr.ends_with('\n'),
            "stderr is not one line: {:?}",
            self.stderr
        );
        lines[0]
    }

    /// Checks the exit code and that stderr is exactly `line`.
    pub(crate) fn fails(&self, code: i32, line: &str) {
        assert_eq!(self.line(), line, "stderr");
        assert_eq!(self.code, Some(code), "exit code; stderr: {}", self.stderr);
    }
}

pub(crate) fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(TOOL);
    c.args(args)
        .envs(env.iter().copied())
        // A panic would show a backtrace: there must be none.
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

pub(crate) fn collect(mut child: Child, limit: Duration, what: &str) -> Ran {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (it must not block)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs the tool to its end (at most 20 s: nothing here may block).
pub(crate) fn run_env(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let child = command(args, env).spawn().unwrap();
    collect(child, Duration::from_secs(20), &format!("{args:?}"))
}

pub(crate) fn run(args: &[&str]) -> Ran {
    run_env(args, &[])
}

/// Whether the baf module is absent here (as on the build host and CI).
/// Tests that need it absent skip themselves where it is loaded.
pub(crate) fn module_absent(test: &str) -> bool {
    let absent = !Path::new("/sys/class/baf").exists();
    if !absent {
        eprintln!("{test}: skipped: the baf module is loaded here");
    }
    absent
}

/// A fresh scratch directory for one test.
pub(crate) fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{TOOL_NAME}-host-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0, "mkfifo");
}

/// Checks that `--help` succeeds quietly and lists each of `codes` (an exit
/// code and the start of its meaning).
pub(crate) fn help_lists(codes: &[&str]) {
    let r = run(&["--help"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stderr.is_empty(), "--help wrote to stderr: {}", r.stderr);
    let help = r.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for code in codes {
        assert!(help.contains(code), "--help lacks {code:?}: {help}");
    }
}
