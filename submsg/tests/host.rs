//! Host-side tests of the built `submsg`: bad arguments, no module loaded
//! (with and without --follow), and paths that are not baf topic devices.
//! They need no fanout module (the build host and CI have none); a test
//! that needs the module absent skips itself where it is loaded. Each
//! checks the exit code and that stderr is exactly one line.

const TOOL: &str = env!("CARGO_BIN_EXE_submsg");
const TOOL_NAME: &str = "submsg";

#[path = "../../tests/host_support.rs"]
mod support;
use support::*;

/// Starts submsg (which keeps running with --follow), waits for its first
/// line on stderr and a little more, checks it is still running, stops it,
/// and returns its stderr.
fn stderr_while_following(args: &[&str]) -> String {
    use std::sync::{Arc, Mutex};
    let mut child = command(args, &[]).spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.lock().unwrap().contains(&b'\n') {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?}: said nothing on stderr in 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Anything more would come at once.
    std::thread::sleep(Duration::from_millis(300));
    let still = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
    assert!(still.is_none(), "{args:?} ended ({still:?}): {text}");
    text
}

fn one_line(text: &str) -> &str {
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() == 1, "stderr is not one line: {text:?}");
    lines[0]
}

#[test]
fn bad_arguments_are_usage_errors() {
    run(&["--from", "nonsense", "t"]).fails(
        2,
        "submsg: invalid value 'nonsense' for '--from <WHERE>': \"nonsense\" is not a start point: use oldest, last:N, seq:S or now (see submsg --help)",
    );
    run(&["--bogus"]).fails(
        2,
        "submsg: unexpected argument '--bogus' found (see submsg --help)",
    );
    run(&["a/#/b"]).fails(
        2,
        "submsg: invalid topic pattern \"a/#/b\": '#' may only be the last level",
    );
    run(&["a b"]).fails(
        2,
        "submsg: invalid topic pattern \"a b\": it contains ' '; topic names use letters, digits, '.', '_', '-' and '/'",
    );
}

#[test]
fn help_lists_the_exit_codes() {
    help_lists(&[
        "2 usage",
        "3 no such topic",
        "4 no permission",
        "6 the baf module is not loaded (modprobe fanout)",
        "7 -W's time ran out and no record arrived",
    ]);
}

#[test]
fn help_explains_the_new_flags() {
    help_lists(&[
        "-W, --timeout <SECONDS>",
        "-v, --verbose",
        "-0, --null",
        "-F, --follow",
        "--last",
        "--no-wait",
        "time (the timestamp on the wall clock: RFC 3339 in UTC",
        "submsg -n 1 -W 5 alarms",
    ]);
}

#[test]
fn new_flags_fail_in_one_line_with_exit_2() {
    run(&["-W", "0", "t"]).fails(
        2,
        "submsg: invalid value '0' for '--timeout <SECONDS>': \"0\" is not a number of seconds above 0, as in 5 or 0.5 (see submsg --help)",
    );
    run(&["--last", "--from", "oldest"]).fails(
        2,
        "submsg: the argument '--last' cannot be used with '--from <WHERE>' (see submsg --help)",
    );
    run(&["--last", "-F"]).fails(
        2,
        "submsg: the argument '--last' cannot be used with '--follow' (see submsg --help)",
    );
    run(&["-0", "--len32", "t"]).fails(
        2,
        "submsg: the argument '--null' cannot be used with '--len32' (see submsg --help)",
    );
    run(&["-v", "-p", "t"]).fails(
        2,
        "submsg: the argument '--verbose' cannot be used with '--prefix' (see submsg --help)",
    );
    // A misspelt flag: clap's guess is on the same line.
    run(&["--folow", "t"]).fails(
        2,
        "submsg: unexpected argument '--folow' found; did you mean '--follow'? (see submsg --help)",
    );
    // -f is pubmsg's input file: submsg has none (--follow is -F).
    run(&["-f", "t"]).fails(
        2,
        "submsg: unexpected argument '-f' found (see submsg --help)",
    );
    run(&["-W"]).fails(
        2,
        "submsg: a value is required for '--timeout <SECONDS>' but none was supplied (see submsg --help)",
    );
}

#[test]
fn without_the_module_the_new_flags_say_how_to_load_it() {
    if !module_absent("without_the_module_the_new_flags_say_how_to_load_it") {
        return;
    }
    for args in [
        &["--no-wait", "sensors"][..],
        &["--last"],
        &["--last", "sensors"],
        &["-W", "1", "-v", "-0", "sensors"],
    ] {
        run(args).fails(6, &format!("submsg: {MODULE_MISSING}"));
    }
}

#[test]
fn without_the_module_every_selection_says_how_to_load_it() {
    if !module_absent("without_the_module_every_selection_says_how_to_load_it") {
        return;
    }
    let line = format!("submsg: {MODULE_MISSING}");
    for args in [
        &[][..],
        &["sensors"],
        &["--no-create", "sensors"],
        &["robot/#"],
        &["a,b", "-e", "b"],
        &["/dev/fanout0"],
    ] {
        let r = run(args);
        assert_eq!(r.line(), line, "{args:?}");
        assert_eq!(r.code, Some(6), "{args:?}");
    }
}

#[test]
fn follow_says_what_it_waits_for() {
    if !module_absent("follow_says_what_it_waits_for") {
        return;
    }
    for (args, what) in [
        (&["-F", "x"][..], "topics matching 'x'"),
        (&["--follow"], "topics"),
        (
            &["-F", "robot/#", "-e", "robot/debug"],
            "topics matching 'robot/#' (except 'robot/debug')",
        ),
    ] {
        let text = stderr_while_following(args);
        assert_eq!(
            one_line(&text),
            format!("submsg: {MODULE_MISSING}; waiting for {what} to be created"),
            "{args:?}"
        );
    }
}

#[test]
fn a_regular_file_is_not_a_topic() {
    let dir = scratch("file");
    let file = dir.join("node");
    std::fs::write(&file, b"data\n").unwrap();
    let p = file.to_str().unwrap();
    run(&[p]).fails(
        2,
        &format!("submsg: {p} is a regular file, not a baf topic device"),
    );
    run(&["-F", p]).fails(
        2,
        &format!("submsg: {p} is a regular file, not a baf topic device"),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = scratch("fifo");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let p = fifo.to_str().unwrap();
    let line = format!("submsg: {p} is a FIFO, not a baf topic device");
    run(&[p]).fails(2, &line);
    run(&["--follow", p]).fails(2, &line);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn another_drivers_device_is_not_a_topic() {
    let r = run(&["/dev/null"]);
    if Path::new("/sys/class/baf").exists() {
        assert_eq!(r.code, Some(2), "{}", r.stderr);
        assert!(r
            .line()
            .starts_with("submsg: /dev/null is the character device of another driver (major 1;"));
    } else {
        r.fails(6, &format!("submsg: {MODULE_MISSING}"));
    }
}
