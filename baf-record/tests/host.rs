//! Host-side tests of the built `baf-record`: bad arguments, bad patterns,
//! outputs that cannot be written, and corrupt or cut-short files for
//! `info`, `cat` and `play`. Each checks the exit code, that stderr is one
//! line, and that nothing was written (no file, no stdout).

const TOOL: &str = env!("CARGO_BIN_EXE_baf-record");
const TOOL_NAME: &str = "baf-record";

#[path = "../../tests/host_support.rs"]
mod support;
use support::*;

#[test]
fn a_bad_flag_is_a_usage_error() {
    run(&["record", "--bogus", "-o", "x"]).fails(
        2,
        "baf-record: unexpected argument '--bogus' found (see baf-record --help)",
    );
}

#[test]
fn no_command_is_a_usage_error() {
    run(&[]).fails(
        2,
        "baf-record: a command is needed: record, play, info or cat (see baf-record --help)",
    );
}

#[test]
fn help_lists_the_exit_codes() {
    help_lists(&[
        "0 done",
        "1 other error",
        "2 usage",
        "3 no such topic",
        "4 no permission",
        "6 the baf module",
    ]);
}

#[test]
fn bad_patterns_are_usage_errors_before_any_file() {
    let dir = scratch("pattern");
    let out = dir.join("rec/");
    let r = run(&["record", "a/#/b", "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.line().starts_with("baf-record: "), "{}", r.stderr);
    assert!(!out.exists(), "nothing is made for a bad pattern");
    let r = run(&["record", "ok", "-e", "x/#/y", "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let _ = r.line();
    let r = run(&["record", "/dev/fanout0", "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.line().contains("not device paths"), "{}", r.stderr);
    let r = run(&["record", "--before", "x", "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, Some(2));
    let r = run(&["record", "--after", "5s", "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "--after needs --before: {}", r.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_output_that_cannot_be_written_is_one_line_and_exit_2() {
    let dir = scratch("unwritable");
    let r = run(&["record", "-o", "/proc/baf-record-cannot-write/"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.line()
            .starts_with("baf-record: cannot write recordings in /proc/baf-record-cannot-write/"),
        "{}",
        r.stderr
    );
    let r = run(&["record", "-o", dir.join("no/such/f.mcap").to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.line().contains("no such directory"), "{}", r.stderr);
    let exists = dir.join("there.mcap");
    std::fs::write(&exists, b"keep me").unwrap();
    let r = run(&["record", "-o", exists.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.line().contains("never overwrites"), "{}", r.stderr);
    assert_eq!(std::fs::read(&exists).unwrap(), b"keep me");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_files_are_one_line_and_exit_2_with_nothing_printed() {
    let dir = scratch("badfiles");
    let junk = dir.join("junk.mcap");
    std::fs::write(&junk, b"this is not an MCAP file at all").unwrap();
    let missing = dir.join("missing.mcap");
    for file in [&junk, &missing, &dir] {
        for cmd in ["info", "cat", "play"] {
            let r = run(&[cmd, file.to_str().unwrap()]);
            assert_eq!(r.code, Some(2), "{cmd} {file:?}: {}", r.stderr);
            assert!(r.stdout.is_empty(), "{cmd} printed {:?}", r.stdout);
            let line = r.line();
            assert!(line.starts_with("baf-record: "), "{line}");
        }
    }
    // A file cut short: the start of a real MCAP file, no summary.
    let mut cut = mcap_magic_only();
    cut.extend_from_slice(&[0x01, 0xff]);
    let cutf = dir.join("cut.mcap");
    std::fs::write(&cutf, &cut).unwrap();
    for cmd in ["info", "cat", "play"] {
        let r = run(&[cmd, cutf.to_str().unwrap()]);
        assert_eq!(r.code, Some(2), "{cmd}: {}", r.stderr);
        assert!(r.stdout.is_empty());
        assert!(r.line().contains("--recover"), "{}", r.stderr);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 8 magic bytes every MCAP file starts with.
fn mcap_magic_only() -> Vec<u8> {
    b"\x89MCAP0\r\n".to_vec()
}

#[test]
fn man_page_and_completions() {
    let r = run(&["--generate", "man"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("baf-record"));
    let r = run(&["--generate", "bash"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains("record"));
}

/// The recording loop without the module (it waits for topics): `-W`
/// ends it with a finished, empty file; so does SIGTERM.
#[test]
fn a_recording_ends_with_a_finished_file() {
    if !module_absent("a_recording_ends_with_a_finished_file") {
        return;
    }
    let dir = scratch("finish");
    let file = dir.join("w.mcap");
    let r = run(&["record", "-W", "300ms", "-o", file.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("waiting for topics"), "{}", r.stderr);
    let info = run(&["info", file.to_str().unwrap()]);
    assert_eq!(info.code, Some(0), "{}", info.stderr);
    assert!(info.stdout.contains("state: finished"), "{}", info.stdout);
    assert!(
        info.stdout.contains("records: 0, lost: 0"),
        "{}",
        info.stdout
    );

    let out = dir.join("d/");
    let child = command(&["record", "-o", out.to_str().unwrap()], &[])
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // The directory is made at the start, the file with it.
    let t0 = Instant::now();
    while std::fs::read_dir(&out).map_or(0, |d| d.count()) == 0
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill has no memory preconditions; `pid` is our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let r = collect(child, Duration::from_secs(10), "record until SIGTERM");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("baf-") && name.ends_with("-0000.mcap"),
        "{name}"
    );
    let info = run(&["info", "--json", files[0].to_str().unwrap()]);
    assert_eq!(info.code, Some(0), "{}", info.stderr);
    assert!(info.stdout.contains("\"finished\":true"), "{}", info.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}
