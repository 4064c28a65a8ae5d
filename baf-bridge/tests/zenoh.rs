//! The Zenoh sessions the bridge opens, on loopback, from its own settings
//! (`Settings::resolve`, as `baf-bridge` builds them): what a default
//! bridge does not do (find peers it was not told of), and user/password
//! authentication, for real: matching credentials connect and a sample
//! crosses, a wrong password or none is refused and nothing crosses.
//!
//! These need no fanout module (the bridge's records are Zenoh samples
//! here; tests/vm/bridge.sh runs whole bridges with records in topics).
//! Only loopback addresses are used, and multicast scouting is never
//! turned on here (it would send to 224.0.0.224 off this machine).

use baf_bridge::config::{Flags, Settings};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zenoh::Wait;

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("baf-bridge-zenoh-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A TCP port free on loopback (now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn open(flags: Flags) -> zenoh::Session {
    let s = Settings::resolve(flags).unwrap();
    zenoh::open(s.zenoh).wait().unwrap()
}

/// Flags of a bridge that imports everything (as `--import 'baf/**'`).
fn bridge() -> Flags {
    Flags {
        import: vec!["baf/**".into()],
        ..Flags::default()
    }
}

fn peers(s: &zenoh::Session) -> usize {
    s.info().peers_zid().wait().count()
}

/// Waits up to `limit` for `s` to have a peer.
fn connected(s: &zenoh::Session, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if peers(s) > 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Whether a sample `from` publishes on `key` reaches `to` within `limit`
/// (published again every 100 ms: Zenoh drops what is published before
/// the subscription has reached the publisher).
fn crosses(from: &zenoh::Session, to: &zenoh::Session, key: &str, limit: Duration) -> bool {
    let sub = to.declare_subscriber(key).wait().unwrap();
    let end = Instant::now() + limit;
    while Instant::now() < end {
        from.put(key, "record").wait().unwrap();
        if let Ok(Some(s)) = sub.recv_timeout(Duration::from_millis(100)) {
            return s.payload().to_bytes().as_ref() == b"record";
        }
    }
    false
}

/// Two bridges that each listen on loopback, told of no other, do not find
/// each other: no multicast scouting, no gossip by default. (The positive
/// case, the same two with --connect, is `authentication` below.)
#[test]
fn default_bridges_find_no_peer() {
    let a = open(Flags {
        listen: vec![format!("tcp/127.0.0.1:{}", free_port())],
        ..bridge()
    });
    let b = open(Flags {
        listen: vec![format!("tcp/127.0.0.1:{}", free_port())],
        export: vec!["#".into()],
        ..bridge()
    });
    // Zenoh's multicast scouting finds a peer within its scouting delay
    // (500 ms) when it is on.
    assert!(!connected(&a, Duration::from_secs(3)), "a found a peer");
    assert_eq!(peers(&b), 0, "b found a peer");
    assert!(!crosses(&b, &a, "baf/t", Duration::from_secs(1)));
}

/// A bridge listens on loopback and takes only the users of its users
/// file; another connects to it.
#[test]
fn authentication() {
    let dir = scratch("auth");
    let users = dir.join("users");
    std::fs::write(&users, "robot-2:right horse battery\nother:x\n").unwrap();
    let right = dir.join("right");
    std::fs::write(&right, "right horse battery\n").unwrap();
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "wrong horse battery\n").unwrap();
    let port = free_port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let a = open(Flags {
        listen: vec![endpoint.clone()],
        auth_users_file: Some(users),
        ..bridge()
    });
    let connect = |user: Option<&str>, pw: Option<&PathBuf>| {
        open(Flags {
            connect: vec![endpoint.clone()],
            export: vec!["#".into()],
            auth_user: user.map(str::to_string),
            auth_password_file: pw.cloned(),
            ..bridge()
        })
    };

    for (what, user, pw) in [
        ("a wrong password", Some("robot-2"), Some(&wrong)),
        ("an unknown user", Some("robot-3"), Some(&right)),
        ("no credentials", None, None),
    ] {
        let b = connect(user, pw);
        assert!(!connected(&b, Duration::from_secs(3)), "{what}: connected");
        assert_eq!(peers(&a), 0, "{what}: a has a peer");
        assert!(
            !crosses(&b, &a, "baf/t", Duration::from_secs(1)),
            "{what}: a sample crossed"
        );
        b.close().wait().unwrap();
    }

    let b = connect(Some("robot-2"), Some(&right));
    assert!(
        connected(&b, Duration::from_secs(20)),
        "the right password: not connected"
    );
    assert!(
        crosses(&b, &a, "baf/t", Duration::from_secs(20)),
        "the right password: nothing crossed"
    );
    // And the other way.
    assert!(crosses(&a, &b, "baf/u", Duration::from_secs(20)));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Three bridges on loopback: b and c connect to a, each listens too.
/// Without --gossip, c connects to none of the peers it hears of through
/// a (b); with --gossip (the control) it does. Returns c's peer count after
/// `wait`.
fn third_peer(gossip: bool, wait: Duration) -> usize {
    let ep = || format!("tcp/127.0.0.1:{}", free_port());
    let (pa, pb, pc) = (ep(), ep(), ep());
    let with = |listen: &str, connect: Option<&str>| Flags {
        listen: vec![listen.to_string()],
        connect: connect.map(|c| vec![c.to_string()]).unwrap_or_default(),
        gossip: gossip.then_some(true),
        ..bridge()
    };
    let a = open(with(&pa, None));
    let b = open(with(&pb, Some(&pa)));
    assert!(connected(&b, Duration::from_secs(20)), "b did not reach a");
    let c = open(with(&pc, Some(&pa)));
    assert!(connected(&c, Duration::from_secs(20)), "c did not reach a");
    let end = Instant::now() + wait;
    while Instant::now() < end && peers(&c) < 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let n = peers(&c);
    for s in [c, b, a] {
        s.close().wait().unwrap();
    }
    n
}

#[test]
fn no_gossip_connections_by_default() {
    assert_eq!(
        third_peer(false, Duration::from_secs(4)),
        1,
        "without --gossip, c connected to a peer it heard of"
    );
    assert_eq!(
        third_peer(true, Duration::from_secs(20)),
        2,
        "the control: with --gossip, c did not connect to b"
    );
}
