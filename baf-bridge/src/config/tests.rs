use super::*;

fn flags() -> Flags {
    Flags {
        export: vec!["#".into()],
        connect: vec!["tcp/127.0.0.1:7447".into()],
        ..Flags::default()
    }
}

fn usage_of(f: Flags) -> String {
    let e = Settings::resolve(f).unwrap_err();
    assert_eq!(baf_cli::exit_code(&e), 2, "{e:#}");
    let m = baf_cli::message(&e);
    assert!(!m.contains('\n'), "{m}");
    m
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("baf-bridge-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn defaults() {
    let s = Settings::resolve(flags()).unwrap();
    assert_eq!(s.key_prefix, "baf");
    assert_eq!(s.into, "");
    assert!(s.create);
    assert_eq!(s.envelope, Envelope::None);
    assert_eq!(s.congestion, Congestion::Auto);
    assert_eq!(s.log_filter, "warn,baf_bridge=info");
    assert!(s.exports("a/b") && s.exports("x"));
    assert_eq!(
        s.zenoh.get_json("connect/exit_on_failure").unwrap(),
        "false"
    );
    assert_eq!(
        s.zenoh_summary,
        "mode peer, connecting to tcp/127.0.0.1:7447, no scouting"
    );
    // Safe by default: no scouting, no gossip, no listening, no
    // authentication, nothing to warn about.
    let z = |k: &str| s.zenoh.get_json(k).unwrap();
    assert_eq!(z("scouting/multicast/enabled"), "false");
    assert_eq!(z("scouting/gossip/enabled"), "true");
    assert_eq!(z("scouting/gossip/autoconnect"), "[]");
    assert_eq!(z("listen/endpoints"), "[]");
    assert_eq!(z("transport/auth/usrpwd/user"), "null");
    assert_eq!(z("transport/auth/usrpwd/dictionary_file"), "null");
    assert!(s.warnings.is_empty());
    // Zenoh's own defaults, which the bridge does not keep: scouting
    // unset (on, when the session opens) and a listening endpoint.
    let zd = zenoh::Config::default();
    assert_eq!(zd.get_json("scouting/multicast/enabled").unwrap(), "null");
    assert_eq!(zd.get_json("scouting/gossip/enabled").unwrap(), "null");
    let listen = zd.get_json("listen/endpoints").unwrap();
    assert!(listen.contains("tcp/[::]:0"), "{listen}");
}

#[test]
fn nothing_is_exported_by_default() {
    let s = Settings::resolve(Flags {
        import: vec!["baf/**".into()],
        connect: vec!["tcp/127.0.0.1:7447".into()],
        ..Flags::default()
    })
    .unwrap();
    assert!(s.export.is_empty());
    assert!(!s.exports("a") && !s.exports("a/b"));
}

#[test]
fn scouting_on_request() {
    let s = Settings::resolve(Flags {
        multicast_scouting: Some(true),
        gossip: Some(true),
        connect: vec![],
        ..flags()
    })
    .unwrap();
    let z = |k: &str| s.zenoh.get_json(k).unwrap();
    assert_eq!(z("scouting/multicast/enabled"), "true");
    assert_eq!(z("scouting/gossip/enabled"), "true");
    assert_eq!(z("scouting/gossip/autoconnect"), "null");
    assert_eq!(s.zenoh_summary, "mode peer, multicast and gossip scouting");
    // --zenoh-set comes last and may say otherwise.
    let s = Settings::resolve(Flags {
        zenoh_set: vec!["scouting/gossip/autoconnect=[\"peer\"]".into()],
        ..flags()
    })
    .unwrap();
    assert_eq!(
        s.zenoh.get_json("scouting/gossip/autoconnect").unwrap(),
        r#"["peer"]"#
    );
    assert!(s.zenoh_summary.ends_with(", gossip scouting"));
}

#[test]
fn no_endpoint_is_a_usage_error() {
    let m = usage_of(Flags {
        connect: vec![],
        ..flags()
    });
    assert!(m.starts_with("no Zenoh endpoint: "), "{m}");
    // Endpoints in a Zenoh configuration file count, and are kept.
    let z = scratch(
        "z.json5",
        "{ listen: { endpoints: [\"tcp/127.0.0.1:7449\"] } }",
    );
    let s = Settings::resolve(Flags {
        connect: vec![],
        zenoh_config: Some(z),
        ..flags()
    })
    .unwrap();
    assert_eq!(
        s.zenoh.get_json("listen/endpoints").unwrap(),
        r#"["tcp/127.0.0.1:7449"]"#
    );
    // Listening only is enough.
    Settings::resolve(Flags {
        connect: vec![],
        listen: vec!["tcp/127.0.0.1:0".into()],
        ..flags()
    })
    .unwrap();
}

#[test]
fn listening_without_authentication_is_warned_of() {
    let s = Settings::resolve(Flags {
        listen: vec![
            "tcp/127.0.0.1:7447".into(),
            "tcp/[::1]:7447".into(),
            "unixsock-stream/x.sock".into(),
            "tcp/0.0.0.0:7447".into(),
        ],
        ..flags()
    })
    .unwrap();
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    assert!(s.warnings[0].starts_with("listening on tcp/0.0.0.0:7447 without authentication"));
    let users = scratch("users-warn", "b:secret\n");
    let s = Settings::resolve(Flags {
        listen: vec!["tcp/0.0.0.0:7447".into()],
        auth_users_file: Some(users),
        ..flags()
    })
    .unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn authentication() {
    let pw = scratch("pw", "s3cret:x\n");
    let users = scratch("users", "\n a : s3cret:x \nb:other\n");
    let s = Settings::resolve(Flags {
        auth_user: Some("a".into()),
        auth_password_file: Some(pw.clone()),
        auth_users_file: Some(users.clone()),
        ..flags()
    })
    .unwrap();
    let z = |k: &str| s.zenoh.get_json(k).unwrap();
    assert_eq!(z("transport/auth/usrpwd/user"), "\"a\"");
    assert_eq!(z("transport/auth/usrpwd/password"), "\"s3cret:x\"");
    assert_eq!(
        z("transport/auth/usrpwd/dictionary_file"),
        serde_json::to_string(&users).unwrap()
    );
    assert!(s
        .zenoh_summary
        .contains(", authenticating as a, accepting the users of "));
    assert!(!s.zenoh_summary.contains("s3cret"));
    let with = |f: fn(&mut Flags), pw: &Path| {
        let mut fl = flags();
        fl.auth_user = Some("a".into());
        fl.auth_password_file = Some(pw.to_path_buf());
        f(&mut fl);
        usage_of(fl)
    };
    assert!(with(|f| f.auth_password_file = None, &pw).contains("needs a password file"));
    assert!(with(|f| f.auth_user = None, &pw).contains("needs a user name"));
    assert!(with(|f| f.auth_user = Some("a:b".into()), &pw).contains("invalid user name"));
    let m = with(|_| (), Path::new("/nonexistent/pw"));
    assert!(
        m.starts_with("cannot read password file /nonexistent/pw: "),
        "{m}"
    );
    for bad in ["", "\n", "two\nlines\n", " spaced\n"] {
        let m = with(|_| (), &scratch("badpw", bad));
        assert!(m.starts_with("bad password file "), "{bad:?}: {m}");
        assert!(!m.contains("two") && !m.contains("spaced"), "{m}");
    }
    for (text, want) in [
        ("a:x\nnocolon\n", "line 2: write USER:PASSWORD"),
        ("a b:x\n", "line 1: invalid user name"),
        ("a:\n", "line 1: the password is empty"),
        ("\n\n", "it names no user"),
    ] {
        let m = usage_of(Flags {
            auth_users_file: Some(scratch("badusers", text)),
            ..flags()
        });
        assert!(
            m.starts_with("bad users file ") && m.contains(want),
            "{text:?}: {m}"
        );
    }
}

#[test]
fn exports_and_import_targets() {
    let s = Settings::resolve(Flags {
        export: vec!["#".into()],
        exclude: vec!["secret/#".into()],
        import: vec!["baf/robot/**".into(), "lab/*".into()],
        into: Some("remote".into()),
        ..flags()
    })
    .unwrap();
    assert!(s.exports("sensors") && s.exports("remotex/a"));
    assert!(!s.exports("secret/a"), "excluded");
    assert!(
        !s.exports("remote/sensors") && !s.exports("remote/a/b"),
        "imports"
    );
    assert!(s.import_target("remote/robot/arm"));
    assert!(!s.import_target("remote/sensors"));
    assert!(
        s.import_target("remote/lab/temp"),
        "a key outside the prefix"
    );
    assert!(!s.import_target("remote/lab/a/b"), "lab/* is one level");
    assert!(!s.import_target("sensors") && !s.import_target("remote/"));
    // Same names on both sides: every exported topic may be imported.
    let mirror = Settings::resolve(Flags {
        export: vec!["#".into()],
        import: vec!["baf/robot/**".into()],
        ..flags()
    })
    .unwrap();
    assert!(mirror.exports("robot/arm") && mirror.import_target("robot/arm"));
    assert!(mirror.exports("sensors") && !mirror.import_target("sensors"));
    assert!(
        !mirror.import_target("baf/robot/arm"),
        "that is key baf/baf/robot/arm"
    );
}

#[test]
fn nothing_to_bridge() {
    assert!(usage_of(Flags::default()).starts_with("nothing to bridge"));
}

#[test]
fn bad_values_are_usage_errors() {
    let with = |f: fn(&mut Flags)| {
        let mut fl = flags();
        f(&mut fl);
        usage_of(fl)
    };
    assert!(with(|f| f.export = vec!["a/#/b".into()]).contains("invalid topic pattern"));
    assert!(with(|f| f.exclude = vec!["a,,b".into()]).contains("empty item"));
    assert!(with(|f| f.import = vec!["baf/#".into()]).contains("invalid key expression"));
    assert!(with(|f| f.connect = vec!["udp/1.2.3.4:5".into()]).contains("invalid endpoint"));
    assert!(with(|f| f.listen = vec!["tcp/1.2.3.4".into()]).contains("invalid endpoint"));
    assert!(with(|f| f.key_prefix = Some("baf/".into())).contains("key prefix"));
    assert!(with(|f| f.into = Some("a b".into())).contains("--into"));
    assert!(with(|f| f.host_name = Some(String::new())).contains("host name"));
    assert!(with(|f| f.log_level = Some("loud[".into())).contains("log level"));
    assert!(with(|f| f.zenoh_set = vec!["x".into()]).contains("PATH=VALUE"));
    assert!(
        with(|f| f.zenoh_set = vec!["mode=\"router2\"".into()]).contains("invalid Zenoh setting")
    );
    assert!(with(|f| f.config = Some("/nonexistent/bridge.toml".into()))
        .contains("cannot read configuration file"));
    assert!(
        with(|f| f.zenoh_config = Some("/nonexistent/z.json5".into()))
            .contains("Zenoh configuration file")
    );
}

#[test]
fn file_and_flags_together() {
    let p = scratch(
        "bridge.toml",
        r#"
export = ["sensors/#"]
exclude = ["sensors/debug"]
import = ["baf/**"]
into = "remote"
envelope = "json"
congestion = "block"
create = false
host_name = "robot-1"

[zenoh]
mode = "client"
connect = ["tcp/127.0.0.1:7447"]
multicast_scouting = false

[zenoh.set]
"transport/link/tx/lease" = 5000
"#,
    );
    let s = Settings::resolve(Flags {
        config: Some(p),
        export: vec!["robot/+".into()],
        connect: vec!["tcp/127.0.0.1:7448".into()],
        host_name: Some("robot-2".into()),
        ..Flags::default()
    })
    .unwrap();
    assert!(s.exports("sensors/a") && s.exports("robot/arm"));
    assert!(!s.exports("sensors/debug") && !s.exports("other"));
    assert_eq!(s.import.len(), 1);
    assert_eq!(s.into, "remote/");
    assert_eq!(s.envelope, Envelope::Json);
    assert_eq!(s.congestion, Congestion::Block);
    assert!(!s.create);
    assert_eq!(s.host_name, "robot-2", "a flag replaces the file's value");
    assert_eq!(s.zenoh.get_json("mode").unwrap(), "\"client\"");
    assert_eq!(
        s.zenoh.get_json("connect/endpoints").unwrap(),
        r#"["tcp/127.0.0.1:7447","tcp/127.0.0.1:7448"]"#
    );
    assert_eq!(s.zenoh.get_json("transport/link/tx/lease").unwrap(), "5000");
    assert_eq!(
        s.zenoh_summary,
        "mode client, connecting to tcp/127.0.0.1:7447 tcp/127.0.0.1:7448, no scouting"
    );
}

#[test]
fn json_files_and_file_errors() {
    let p = scratch(
        "bridge.json",
        r#"{"import": ["baf/*"], "zenoh": {"listen": ["tcp/127.0.0.1:0"]}}"#,
    );
    let s = Settings::resolve(Flags {
        config: Some(p),
        ..Flags::default()
    })
    .unwrap();
    assert_eq!(s.import[0].as_str(), "baf/*");
    let bad = |name: &str, text: &str| {
        usage_of(Flags {
            config: Some(scratch(name, text)),
            ..flags()
        })
    };
    let m = bad("a.toml", "import = [\"baf/**\"]\nexports = [\"x\"]");
    assert!(m.starts_with("bad configuration file "), "{m}");
    assert!(
        m.contains("a.toml, line 2, column 1: unknown field `exports`"),
        "{m}"
    );
    assert!(bad("b.toml", "export = [").contains("b.toml, line 1, column 11: "));
    let m = bad("c.json", "{\"zenoh\":\n {\"mode\": \"router\"}}");
    assert!(m.contains("c.json, line 2, column "), "{m}");
    assert!(m.contains("unknown variant `router`"), "{m}");
    assert!(!m.contains(" at line "), "{m}");
    let m = bad("d.toml", "[zenoh]\nconnect = [\"tcp/x\"]");
    assert!(
        m.contains("d.toml, key zenoh.connect: invalid endpoint \"tcp/x\""),
        "{m}"
    );
    let m = bad("e.toml", "create = \"yes\"");
    assert!(m.contains("e.toml, line 1, column 10: invalid type"), "{m}");
    let m = bad("f.toml", "export = [\"a/#/b\"]");
    assert!(
        m.contains("f.toml, key export: invalid topic pattern"),
        "{m}"
    );
    let m = bad("g.toml", "[zenoh.set]\nmode = \"router2\"");
    assert!(
        m.contains("g.toml, key zenoh.set: invalid Zenoh setting"),
        "{m}"
    );
    let m = bad(
        "h.toml",
        "[zenoh.auth]\npassword_file = \"/nonexistent/pw\"",
    );
    assert!(
        m.contains(
            "h.toml, key zenoh.auth.password_file: cannot read password file /nonexistent/pw"
        ),
        "{m}"
    );
    let m = bad("i.toml", "[zenoh.auth]\nuser = \"x\"\npasswd = 1");
    assert!(
        m.contains("i.toml, line 3, column 1: unknown field `passwd`"),
        "{m}"
    );
}
