//! Host-side tests of the built `pubmsg`: bad arguments, no module loaded,
//! and paths that are not baf topic devices. They need no fanout module
//! (the build host and CI have none); a test that needs the module absent
//! skips itself where it is loaded. Each checks the exit code and that
//! stderr is exactly one line.

#![allow(dead_code)] // the shared helper below is not all used here

const TOOL: &str = env!("CARGO_BIN_EXE_pubmsg");
const TOOL_NAME: &str = "pubmsg";

// --- shared helper (the same in pubmsg, submsg and baf-setup tests) -------
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODULE_MISSING: &str =
    "the baf module is not loaded: load it with `modprobe fanout` (or `insmod fanout.ko`)";

/// What a run of the tool did.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// The one line on stderr (there must be exactly one: no backtrace,
    /// no clap usage block).
    fn line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.len() == 1 && self.stderr.ends_with('\n'),
            "stderr is not one line: {:?}",
            self.stderr
        );
        lines[0]
    }

    /// Checks the exit code and that stderr is exactly `line`.
    fn fails(&self, code: i32, line: &str) {
        assert_eq!(self.line(), line, "stderr");
        assert_eq!(self.code, Some(code), "exit code; stderr: {}", self.stderr);
    }
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
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

fn collect(mut child: Child, limit: Duration, what: &str) -> Ran {
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
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let child = command(args, env).spawn().unwrap();
    collect(child, Duration::from_secs(20), &format!("{args:?}"))
}

fn run(args: &[&str]) -> Ran {
    run_env(args, &[])
}

/// Whether the baf module is absent here (as on the build host and CI).
/// Tests that need it absent skip themselves where it is loaded.
fn module_absent(test: &str) -> bool {
    let absent = !Path::new("/sys/class/baf").exists();
    if !absent {
        eprintln!("{test}: skipped: the baf module is loaded here");
    }
    absent
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{TOOL_NAME}-host-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0, "mkfifo");
}
// --- end of the shared helper ---------------------------------------------

#[test]
fn a_bad_flag_is_a_usage_error() {
    run(&["--bogus", "t"]).fails(
        2,
        "pubmsg: unexpected argument '--bogus' found (see pubmsg --help)",
    );
}

#[test]
fn a_missing_topic_is_a_usage_error() {
    run(&[]).fails(
        2,
        "pubmsg: the following required arguments were not provided: <TOPIC> (see pubmsg --help)",
    );
}

#[test]
fn a_bad_name_is_a_usage_error() {
    run(&["a b"]).fails(
        2,
        "pubmsg: invalid topic name \"a b\": it contains ' '; use letters, digits, '.', '_', '-' and '/' between levels",
    );
}

#[test]
fn help_lists_the_exit_codes() {
    let r = run(&["--help"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stderr.is_empty());
    let help = r.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for code in [
        "2 usage",
        "3 no such topic",
        "4 no permission",
        "5 the topic already has a publisher",
        "6 the baf module is not loaded (modprobe fanout)",
    ] {
        assert!(help.contains(code), "--help lacks {code:?}: {help}");
    }
}

#[test]
fn without_the_module_a_name_says_how_to_load_it() {
    if !module_absent("without_the_module_a_name_says_how_to_load_it") {
        return;
    }
    // Not "create it with baf-setup create", which would fail too.
    run(&["sensors"]).fails(6, &format!("pubmsg: {MODULE_MISSING}"));
    run(&["--no-create", "sensors"]).fails(6, &format!("pubmsg: {MODULE_MISSING}"));
}

#[test]
fn without_the_module_a_device_path_says_how_to_load_it() {
    if !module_absent("without_the_module_a_device_path_says_how_to_load_it") {
        return;
    }
    run(&["/dev/fanout0"]).fails(6, &format!("pubmsg: {MODULE_MISSING}"));
    run(&["/nonexistent/topic"]).fails(6, &format!("pubmsg: {MODULE_MISSING}"));
}

#[test]
fn another_drivers_device_is_not_a_topic() {
    let r = run(&["/dev/null"]);
    if Path::new("/sys/class/baf").exists() {
        assert_eq!(r.code, Some(2), "{}", r.stderr);
        assert!(r
            .line()
            .starts_with("pubmsg: /dev/null is the character device of another driver (major 1;"));
    } else {
        r.fails(6, &format!("pubmsg: {MODULE_MISSING}"));
    }
}

#[test]
fn a_regular_file_is_not_a_topic() {
    let dir = scratch("file");
    let file = dir.join("node");
    std::fs::write(&file, b"").unwrap();
    let p = file.to_str().unwrap();
    run(&[p]).fails(
        2,
        &format!("pubmsg: {p} is a regular file, not a baf topic device"),
    );
    // Nothing was written to it.
    assert_eq!(std::fs::read(&file).unwrap(), b"");
    // A relative path (starting with '.') is a path too.
    let r = collect(
        command(&["./node"], &[]).current_dir(&dir).spawn().unwrap(),
        Duration::from_secs(20),
        "./node",
    );
    r.fails(
        2,
        "pubmsg: ./node is a regular file, not a baf topic device",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    // Opening a FIFO for writing blocks until it has a reader: pubmsg must
    // not open it (the helper fails the test if it runs for 20 s).
    let dir = scratch("fifo");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let p = fifo.to_str().unwrap();
    run(&[p]).fails(2, &format!("pubmsg: {p} is a FIFO, not a baf topic device"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_directory_is_not_a_topic() {
    let dir = scratch("dir");
    let p = dir.to_str().unwrap();
    run(&[p]).fails(
        2,
        &format!("pubmsg: {p} is a directory, not a baf topic device"),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_name_whose_node_is_not_a_device_is_refused() {
    // $BAF_DEV_DIR/NAME is where a name's node is looked up (when the
    // kernel does not list it).
    let dir = scratch("devdir");
    std::fs::write(dir.join("baf-host-file"), b"").unwrap();
    mkfifo(&dir.join("baf-host-fifo"));
    let env = [("BAF_DEV_DIR", dir.to_str().unwrap())];
    let node = dir.join("baf-host-file");
    run_env(&["baf-host-file"], &env).fails(
        2,
        &format!(
            "pubmsg: {} is a regular file, not a baf topic device",
            node.display()
        ),
    );
    let node = dir.join("baf-host-fifo");
    run_env(&["baf-host-fifo"], &env).fails(
        2,
        &format!(
            "pubmsg: {} is a FIFO, not a baf topic device",
            node.display()
        ),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
