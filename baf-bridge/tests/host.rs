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
        "baf-bridge: nothing to bridge: give topics to export (--export PATTERN) or keys to import (--import KEYEXPR); nothing is exported by default",
    );
    run(&["--export", "#"]).fails(
        2,
        "baf-bridge: no Zenoh endpoint: give endpoints to listen on (--listen ENDPOINT) or connect to (--connect ENDPOINT), or turn on --multicast-scouting",
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
        &format!(
            "baf-bridge: bad configuration file {}, key zenoh.connect: invalid endpoint \"tcp/10.0.0.1\": a tcp endpoint needs HOST:PORT",
            file.display()
        ),
    );
    let zfile = dir.join("zenoh.json5");
    std::fs::write(&zfile, "{ mode: \"nonsense\" }").unwrap();
    let r = run(&[
        "--export",
        "#",
        "--connect",
        "tcp/127.0.0.1:7447",
        "--zenoh-config",
        zfile.to_str().unwrap(),
    ]);
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
    run(&["--export", "#", "--connect", "tcp/127.0.0.1:7447"])
        .fails(6, &format!("baf-bridge: {MODULE_MISSING}"));
    // The old spelling of the default is still taken.
    run(&[
        "--export",
        "#",
        "--connect",
        "tcp/127.0.0.1:7447",
        "--no-multicast-scouting",
    ])
    .fails(6, &format!("baf-bridge: {MODULE_MISSING}"));
}

/// `-e` is --exclude, as in submsg: `-e '#'` alone exports nothing (with
/// `-e` as --export, as it once was, this would get as far as the module
/// check). `-x` is kept for --exclude.
#[test]
fn dash_e_excludes() {
    let nothing = "baf-bridge: nothing to bridge: give topics to export (--export PATTERN) or keys to import (--import KEYEXPR); nothing is exported by default";
    for flag in ["-e", "-x", "--exclude"] {
        run(&[flag, "#", "--connect", "tcp/127.0.0.1:7447"]).fails(2, nothing);
    }
    let r = run(&["-e", "a/#/b", "--export", "#"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.line().contains("invalid topic pattern \"a/#/b\""),
        "{}",
        r.stderr
    );
}

/// A bad configuration file: one line that names the file and the line
/// (syntax, unknown key, wrong type) or the key (a bad value), exit 2, and
/// nothing started (the module check, which comes first of all, is never
/// reached: the error is the same with the module loaded or not).
#[test]
fn bad_configuration_files_are_one_line_and_exit_2() {
    let dir = scratch("badconfig");
    let cases: &[(&str, &str, &str)] = &[
        (
            "malformed.toml",
            "import = [\"baf/**\"]\n[zenoh\nconnect = []\n",
            "line 2, column 7: ",
        ),
        (
            "unknown.toml",
            "import = [\"baf/**\"]\n\n[zenoh]\nlisten = [\"tcp/127.0.0.1:0\"]\nmulticast = true\n",
            "line 5, column 1: unknown field `multicast`, expected one of ",
        ),
        (
            "type.toml",
            "import = \"baf/**\"\n",
            "line 1, column 10: invalid type: string \"baf/**\", expected a sequence",
        ),
        (
            "endpoint.toml",
            "import = [\"baf/**\"]\n[zenoh]\nconnect = [\"tcp/10.0.0.1\"]\n",
            "key zenoh.connect: invalid endpoint \"tcp/10.0.0.1\": a tcp endpoint needs HOST:PORT",
        ),
        (
            "pattern.toml",
            "export = [\"a/#/b\"]\n",
            "key export: invalid topic pattern \"a/#/b\": '#' may only be the last level",
        ),
        (
            "auth.toml",
            "import = [\"baf/**\"]\n[zenoh.auth]\nuser = \"me\"\npassword = \"x\"\n",
            "line 4, column 1: unknown field `password`, expected one of `user`, `password_file`, `users_file`",
        ),
        (
            "broken.json",
            "{\"import\": [\"baf/**\"],\n \"zenoh\": {\"listen\": 5}}",
            "line 2, column ",
        ),
    ];
    for (name, text, want) in cases {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let r = run(&["--config", file.to_str().unwrap()]);
        let line = r.line();
        let head = format!("baf-bridge: bad configuration file {}, ", file.display());
        assert!(
            line.starts_with(&head) && line[head.len()..].starts_with(want),
            "{name}: {line}"
        );
        assert_eq!(r.code, Some(2), "{name}: {line}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Authentication settings are checked before anything starts: a missing
/// or bad password or users file is one line and exit 2; a relative name
/// is a systemd credential (in $CREDENTIALS_DIRECTORY).
#[test]
fn authentication_files() {
    let dir = scratch("auth");
    let pw = dir.join("pw");
    let users = dir.join("users");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::write(&users, "a:secret\nnocolon\n").unwrap();
    let base = ["--import", "baf/**", "--connect", "tcp/127.0.0.1:7447"];
    let with = |more: &[&str]| run(&[&base[..], more].concat());
    with(&["--auth-user", "a"]).fails(
        2,
        "baf-bridge: user \"a\" needs a password file (--auth-password-file FILE, or password_file in [zenoh.auth])",
    );
    with(&["--auth-user", "a", "--auth-password-file", "/nonexistent/pw"]).fails(
        2,
        "baf-bridge: cannot read password file /nonexistent/pw: No such file or directory (os error 2)",
    );
    with(&["--auth-users-file", users.to_str().unwrap()]).fails(
        2,
        &format!(
            "baf-bridge: bad users file {}, line 2: write USER:PASSWORD",
            users.display()
        ),
    );
    // The password is never on the command line: there is no flag for it.
    let r = with(&["--auth-password", "secret"]);
    assert_eq!(r.code, Some(2));
    assert!(r.line().contains("--auth-password"), "{}", r.stderr);
    // Relative names: in $CREDENTIALS_DIRECTORY.
    std::fs::write(&users, "a:secret\n").unwrap();
    let creds = [("CREDENTIALS_DIRECTORY", dir.to_str().unwrap())];
    let args = [
        &base[..],
        &[
            "--auth-user",
            "a",
            "--auth-password-file",
            "pw",
            "--auth-users-file",
            "users",
        ],
    ]
    .concat();
    if module_absent("authentication_files") {
        run_env(&args, &creds).fails(6, &format!("baf-bridge: {MODULE_MISSING}"));
    }
    let mut missing = args.clone();
    missing[7] = "nopw";
    run_env(&missing, &creds).fails(
        2,
        &format!(
            "baf-bridge: cannot read password file {}: No such file or directory (os error 2)",
            dir.join("nopw").display()
        ),
    );
    std::fs::remove_dir_all(&dir).unwrap();
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
