//! Host-side tests of the built `pubmsg`: bad arguments, no module loaded,
//! and paths that are not baf topic devices. They need no fanout module
//! (the build host and CI have none); a test that needs the module absent
//! skips itself where it is loaded. Each checks the exit code and that
//! stderr is exactly one line.

const TOOL: &str = env!("CARGO_BIN_EXE_pubmsg");
const TOOL_NAME: &str = "pubmsg";

#[path = "../../tests/host_support.rs"]
mod support;
use support::*;

#[test]
fn a_bad_flag_is_a_usage_error() {
    run(&["--bogus", "t"]).fails(
        2,
        "pubmsg: unexpected argument '--bogus' found (see pubmsg --help)",
    );
}

#[test]
fn an_unknown_short_flag_is_a_usage_error() {
    run(&["-x", "t"]).fails(
        2,
        "pubmsg: unexpected argument '-x' found (see pubmsg --help)",
    );
}

#[test]
fn one_input_at_a_time() {
    run(&["-m", "hi", "-f", "in", "t"]).fails(
        2,
        "pubmsg: the argument '--message <MESSAGE>' cannot be used with '--file <FILE>' (see pubmsg --help)",
    );
    run(&["-0", "--raw", "t"]).fails(
        2,
        "pubmsg: the argument '--null' cannot be used with '--raw' (see pubmsg --help)",
    );
    run(&["-m", "hi", "--len32", "t"]).fails(
        2,
        "pubmsg: the argument '--message <MESSAGE>' cannot be used with '--len32' (see pubmsg --help)",
    );
}

#[test]
fn an_input_file_that_is_not_there_is_bad_input_before_any_topic() {
    // Checked before the topic is opened (or created): the same answer
    // with or without the module.
    run(&["-f", "/nonexistent/input", "t"]).fails(
        2,
        "pubmsg: cannot open /nonexistent/input (-f): No such file or directory (os error 2)",
    );
    let dir = scratch("input-dir");
    let p = dir.to_str().unwrap();
    run(&["--file", p, "t"]).fails(
        2,
        &format!("pubmsg: {p} is a directory: -f takes a file to publish"),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_explains_the_new_flags() {
    help_lists(&[
        "-m, --message <MESSAGE>",
        "-f, --file <FILE>",
        "-0, --null",
        "--shared",
        "pubmsg sensors -m 'temp 21.5'",
        "5 the topic already has a publisher (not with --shared)",
    ]);
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
    help_lists(&[
        "2 usage",
        "3 no such topic",
        "4 no permission",
        "5 the topic already has a publisher",
        "6 the baf module is not loaded (modprobe fanout)",
    ]);
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
