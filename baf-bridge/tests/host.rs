//! Host-side tests of the built `baf-bridge`: bad arguments, bad
//! configuration files, and no module loaded. They need no fanout module
//! and no network (every error here is found before a Zenoh session is
//! opened); a test that needs the module absent skips itself where it is
//! loaded. Each checks the exit code and that stderr is exactly one line.

const TOOL: &str = env!("CARGO_BIN_EXE_baf-bridge");
const TOOL_NAME: &str = "baf-bridge";

#[path = "../../tests/host_support.rs"]
mod support;
use support::*;

#[test]
fn bad_patterns_keys_and_endpoints_are_usage_errors() {
    run(&["--export", "a/#/b"]).fails(
        2,
        "baf-bridge: invalid topic pattern \"a/#/b\": '#' may only be the last level",
    );
    run(&["--export", "#", "--exclude", "x,,y"]).fails(
        2,
        "baf-bridge: invalid topic pattern \"x,,y\": the list has an empty item",
    );
    run(&["--import", "baf/#"]).fails(
        2,
        "baf-bridge: invalid key expression \"baf/#\": Zenoh key expressions use '*' for one level and '**' for any number of levels (baf's '+' and '#')",
    );
    let r = run(&["--import", "baf//x"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.line()
            .starts_with("baf-bridge: invalid key expression \"baf//x\": "),
        "{}",
        r.stderr
    );
    run(&["--export", "#", "--connect", "udp/10.0.0.1:7447"]).fails(
        2,
        "baf-bridge: invalid endpoint \"udp/10.0.0.1:7447\": this bridge is built with the tcp and unixsock-stream transports only",
    );
    run(&["--export", "#", "--listen", "tcp/127.0.0.1:70000"]).fails(
        2,
        "baf-bridge: invalid endpoint \"tcp/127.0.0.1:70000\": \"70000\" is not a port number (0-65535)",
    );
    run(&["--export", "#", "--connect", "127.0.0.1:7447"]).fails(
        2,
        "baf-bridge: invalid endpoint \"127.0.0.1:7447\": write PROTOCOL/ADDRESS, as in tcp/192.168.1.2:7447 or unixsock-stream/PATH",
    );
}

#[test]
fn other_usage_errors() {
    run(&[]).fails(
        2,
        "baf-bridge: nothing to bridge: give topics to export (--export PATTERN) or keys to import (--import KEYEXPR)",
    );
    run(&["--export", "#", "--mode", "router"]).fails(
        2,
        "baf-bridge: invalid value 'router' for '--mode <MODE>' [possible values: peer, client] (see baf-bridge --help)",
    );
    run(&["--import", "baf/**", "--into", "a b"]).fails(
        2,
        "baf-bridge: invalid --into prefix \"a b\": invalid topic name \"a b\": it contains ' '; use letters, digits, '.', '_', '-' and '/' between levels",
    );
    run(&["--export", "#", "--key-prefix", "baf/"]).fails(
        2,
        "baf-bridge: invalid key prefix \"baf/\": write it without a leading or trailing '/' (baf, not baf/)",
    );
    run(&["--export", "#", "--zenoh-set", "mode=\"router2\""]).fails(
        2,
        "baf-bridge: invalid Zenoh setting mode=\"router2\": unknown variant `router2`, expected one of `router`, `peer`, `client`",
    );
}

#[test]
fn configuration_files() {
    run(&["--config", "/nonexistent/bridge.toml"]).fails(
        2,
        "baf-bridge: cannot read configuration file /nonexistent/bridge.toml: No such file or directory (os error 2)",
    );
    let dir = scratch("config");
    let file = dir.join("bridge.toml");
    std::fs::write(&file, "exports = [\"a\"]\n").unwrap();
    let r = run(&["--config", file.to_str().unwrap()]);
    assert_eq!(r.code, Some(2));
    assert!(r.line().contains("unknown field `exports`"), "{}", r.stderr);
    // A valid file with a bad endpoint: the endpoint is the error.
    std::fs::write(
        &file,
        "export = [\"#\"]\n[zenoh]\nconnect = [\"tcp/10.0.0.1\"]\n",
    )
    .unwrap();
    run(&["--config", file.to_str().unwrap()]).fails(
        2,
        "baf-bridge: invalid endpoint \"tcp/10.0.0.1\": a tcp endpoint needs HOST:PORT",
    );
    let zfile = dir.join("zenoh.json5");
    std::fs::write(&zfile, "{ mode: \"nonsense\" }").unwrap();
    let r = run(&["--export", "#", "--zenoh-config", zfile.to_str().unwrap()]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.line().starts_with(&format!(
            "baf-bridge: bad Zenoh configuration file {}: ",
            zfile.display()
        )),
        "{}",
        r.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_module_is_exit_6() {
    if !module_absent("no_module_is_exit_6") {
        return;
    }
    run(&["--export", "#", "--no-multicast-scouting"])
        .fails(6, &format!("baf-bridge: {MODULE_MISSING}"));
}

#[test]
fn help_lists_the_exit_codes() {
    help_lists(&[
        "0 stopped by a signal",
        "2 usage",
        "6 the baf module is not loaded (modprobe fanout)",
    ]);
    let r = run(&["--generate", "man"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains("baf\\-bridge"), "{}", r.stdout);
}
