//! How names map between baf and Zenoh, and the checks of what a user
//! writes: topic patterns, key expressions, prefixes, endpoints.
//!
//! | baf | Zenoh |
//! | --- | --- |
//! | topic `robot/arm` (exported) | key `<key prefix>/robot/arm` (`baf/robot/arm` by default) |
//! | pattern `robot/+/state` | key expression `baf/robot/*/state` |
//! | pattern `robot/#` | key expressions `baf/robot` and `baf/robot/**` |
//! | topic `<into>/robot/arm` (imported) | key `baf/robot/arm`: the key prefix is taken off, `--into` put on |
//!
//! A key outside the prefix is imported under its whole key (`lab/temp`
//! becomes `<into>/lab/temp`). A key that cannot be a topic name (a level
//! with characters outside `[A-Za-z0-9._-]`, or over 64 bytes with the
//! prefix) is not imported, and the bridge says so once per key.

use anyhow::Result;
use baf_cli::Failure;
use zenoh::key_expr::OwnedKeyExpr;

/// The default Zenoh key prefix of exported topics.
pub const DEFAULT_KEY_PREFIX: &str = "baf";

/// Transports this build of the bridge has (Zenoh's `transport_*`
/// features it is built with).
pub const TRANSPORTS: [&str; 2] = ["tcp", "unixsock-stream"];

fn usage(msg: String) -> anyhow::Error {
    Failure::Usage.wrap(anyhow::anyhow!(msg))
}

/// Checks a Zenoh key prefix: empty (keys are the topic names), or a key
/// without wildcards, not ending with `/`.
pub fn check_key_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| usage(format!("invalid key prefix {prefix:?}: {why}"));
    if prefix.ends_with('/') || prefix.starts_with('/') {
        return Err(bad(
            "write it without a leading or trailing '/' (baf, not baf/)",
        ));
    }
    if prefix
        .split('/')
        .any(|l| l.contains('*') || l.contains('$'))
    {
        return Err(bad("it may not contain wildcards"));
    }
    match OwnedKeyExpr::try_from(prefix) {
        Ok(k) if k.as_str() == prefix => Ok(()),
        Ok(_) => Err(bad("it is not a canonical Zenoh key")),
        Err(e) => Err(bad(&one_line(&e.to_string()))),
    }
}

/// Normalizes and checks a local prefix for imported topics (`--into`):
/// empty, or a topic name, to which a `/` is added (`remote` and `remote/`
/// are the same).
pub fn normalize_into(into: &str) -> Result<String> {
    if into.is_empty() {
        return Ok(String::new());
    }
    let base = into.strip_suffix('/').unwrap_or(into);
    baf::control::check_name(base).map_err(|e| {
        usage(format!(
            "invalid --into prefix {into:?}: {}",
            baf_cli::message(&e)
        ))
    })?;
    Ok(format!("{base}/"))
}

/// A Zenoh error as one line for a user: without the source location
/// Zenoh appends (" at /path/to/file.rs:86."), and a JSON5 parser's
/// message without its debug wrapping.
pub fn zenoh_message(e: &dyn std::fmt::Display) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.rfind(" at /") {
        if s.get(i..).is_some_and(|rest| rest.contains(".rs:")) {
            s.truncate(i);
        }
    }
    if let Some(start) = s.find("msg: \"") {
        let rest = s.get(start + 6..).unwrap_or_default();
        if let Some(end) = rest.find('"') {
            s = rest.get(..end).unwrap_or_default().to_string();
        }
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn one_line(s: &str) -> String {
    zenoh_message(&s)
}

/// Checks and canonizes a key expression given to `--import`.
pub fn parse_import(text: &str) -> Result<OwnedKeyExpr> {
    let bad = |why: String| usage(format!("invalid key expression {text:?}: {why}"));
    if text.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if text.split('/').any(|l| l == "#" || l == "+") {
        return Err(bad(
            "Zenoh key expressions use '*' for one level and '**' for any number of levels (baf's '+' and '#')".into(),
        ));
    }
    OwnedKeyExpr::autocanonize(text.to_string()).map_err(|e| bad(one_line(&e.to_string())))
}

/// The Zenoh key of exported topic `topic`.
pub fn export_key(prefix: &str, topic: &str) -> String {
    if prefix.is_empty() {
        topic.to_string()
    } else {
        format!("{prefix}/{topic}")
    }
}

/// The local topic a sample with key `key` is imported into, or why it
/// cannot be one.
pub fn import_topic(prefix: &str, into: &str, key: &str) -> Result<String, String> {
    let rest = if prefix.is_empty() {
        key
    } else {
        key.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(key)
    };
    let name = format!("{into}{rest}");
    match baf::abi::check_name(name.as_bytes()) {
        Ok(()) => Ok(name),
        Err(_) => match baf::control::check_name(&name) {
            Err(e) => Err(baf_cli::message(&e)),
            Ok(()) => Err(format!("{name:?} is not a topic name")),
        },
    }
}

/// Checks a Zenoh endpoint (`tcp/127.0.0.1:7447`, `unixsock-stream/PATH`)
/// against the transports this build has.
pub fn check_endpoint(text: &str) -> Result<()> {
    let bad = |why: &str| usage(format!("invalid endpoint {text:?}: {why}"));
    let Some((proto, rest)) = text.split_once('/') else {
        return Err(bad(
            "write PROTOCOL/ADDRESS, as in tcp/192.168.1.2:7447 or unixsock-stream/PATH",
        ));
    };
    if !TRANSPORTS.contains(&proto) {
        return Err(bad(&format!(
            "this bridge is built with the {} transports only",
            TRANSPORTS.join(" and ")
        )));
    }
    // PROTOCOL/ADDRESS[?METADATA][#CONFIG]
    let address = rest.split(['?', '#']).next().unwrap_or_default();
    if address.is_empty() {
        return Err(bad("the address is missing"));
    }
    if proto == "tcp" {
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(bad("a tcp endpoint needs HOST:PORT"));
        };
        if host.is_empty() {
            return Err(bad(
                "the host is missing (use 0.0.0.0 or [::] for every address)",
            ));
        }
        if port.parse::<u16>().is_err() {
            return Err(bad(&format!("{port:?} is not a port number (0-65535)")));
        }
    }
    zenoh::config::EndPoint::try_from(text.to_string())
        .map(|_| ())
        .map_err(|e| bad(&one_line(&e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_message(r: Result<impl std::fmt::Debug>) -> String {
        let e = r.unwrap_err();
        assert_eq!(baf_cli::exit_code(&e), 2, "{e:#}");
        let m = baf_cli::message(&e);
        assert!(!m.contains('\n'), "{m}");
        m
    }

    #[test]
    fn key_prefixes() {
        check_key_prefix("baf").unwrap();
        check_key_prefix("site/robot-1").unwrap();
        check_key_prefix("").unwrap();
        assert!(usage_message(check_key_prefix("baf/")).contains("trailing"));
        assert!(usage_message(check_key_prefix("a/*")).contains("wildcards"));
        assert!(usage_message(check_key_prefix("a/**")).contains("wildcards"));
        usage_message(check_key_prefix("a//b"));
        usage_message(check_key_prefix("a?b"));
    }

    #[test]
    fn into_prefixes() {
        assert_eq!(normalize_into("").unwrap(), "");
        assert_eq!(normalize_into("remote").unwrap(), "remote/");
        assert_eq!(normalize_into("remote/").unwrap(), "remote/");
        assert_eq!(normalize_into("hosts/a").unwrap(), "hosts/a/");
        assert!(usage_message(normalize_into("a b/")).contains("--into"));
        usage_message(normalize_into("/"));
        usage_message(normalize_into("a/../b"));
    }

    #[test]
    fn import_key_expressions() {
        assert_eq!(parse_import("baf/**").unwrap().as_str(), "baf/**");
        assert_eq!(parse_import("baf/*/state").unwrap().as_str(), "baf/*/state");
        // Zenoh canonizes what it can.
        assert_eq!(parse_import("baf/**/**").unwrap().as_str(), "baf/**");
        assert!(usage_message(parse_import("baf/#")).contains("'**'"));
        assert!(usage_message(parse_import("baf/+/x")).contains("'*'"));
        usage_message(parse_import(""));
        usage_message(parse_import("a//b"));
        usage_message(parse_import("a/b?"));
    }

    #[test]
    fn names_both_ways() {
        assert_eq!(export_key("baf", "robot/arm"), "baf/robot/arm");
        assert_eq!(export_key("", "robot/arm"), "robot/arm");
        assert_eq!(
            import_topic("baf", "remote/", "baf/robot/arm").unwrap(),
            "remote/robot/arm"
        );
        assert_eq!(import_topic("baf", "", "baf/t").unwrap(), "t");
        // Outside the prefix: the whole key.
        assert_eq!(import_topic("baf", "r/", "lab/temp").unwrap(), "r/lab/temp");
        assert_eq!(import_topic("baf", "r/", "bafx/t").unwrap(), "r/bafx/t");
        assert_eq!(import_topic("", "r/", "baf/t").unwrap(), "r/baf/t");
        // Keys that cannot be topics.
        assert!(import_topic("baf", "", "baf/a b").is_err());
        assert!(import_topic("baf", "", "baf/@x").unwrap_err().contains('@'));
        let long = format!("baf/{}", "x".repeat(60));
        assert!(import_topic("baf", "remote/", &long).is_err());
        // The prefix alone is a key outside the prefix.
        assert_eq!(import_topic("baf", "r/", "baf").unwrap(), "r/baf");
    }

    #[test]
    fn zenoh_messages() {
        let raw = "Json5Err(Message { msg: \"unknown variant `router2`, expected one of `router`, `peer`\", location: Some(Location { line: 1, column: 1 }) }) at /build/zenoh-1.10.2/src/api/config.rs:86.";
        assert_eq!(
            zenoh_message(&raw),
            "unknown variant `router2`, expected one of `router`, `peer`"
        );
        assert_eq!(
            zenoh_message(&"Can not create a new TCP listener bound to tcp/127.0.0.1:1: Permission denied\n  at /x/y.rs:3."),
            "Can not create a new TCP listener bound to tcp/127.0.0.1:1: Permission denied"
        );
        assert_eq!(zenoh_message(&"plain at /tmp/x"), "plain at /tmp/x");
    }

    #[test]
    fn endpoints() {
        check_endpoint("tcp/127.0.0.1:7447").unwrap();
        check_endpoint("tcp/[::1]:7447").unwrap();
        check_endpoint("tcp/0.0.0.0:0").unwrap();
        check_endpoint("tcp/robot-2.local:7447").unwrap();
        check_endpoint("unixsock-stream//run/baf/zenoh.sock").unwrap();
        assert!(
            usage_message(check_endpoint("udp/127.0.0.1:7447")).contains("tcp and unixsock-stream")
        );
        assert!(usage_message(check_endpoint("127.0.0.1:7447")).contains("PROTOCOL/ADDRESS"));
        assert!(usage_message(check_endpoint("tcp/127.0.0.1:99999")).contains("port"));
        assert!(usage_message(check_endpoint("tcp/127.0.0.1")).contains("HOST:PORT"));
        usage_message(check_endpoint("tcp/:7447"));
        usage_message(check_endpoint("tcp/"));
    }
}
