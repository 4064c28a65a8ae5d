//! The workspace's layers, checked from `cargo metadata`: the arrows only
//! point down. The library (`baf`) knows nothing of command lines (no
//! clap, no `baf-cli`), and a tool depends on the library and `baf-cli`,
//! never on another tool: what two tools share goes into the library.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// The tool crates: binaries that users run.
const TOOLS: &[&str] = &["pubmsg", "submsg", "baf-setup", "baf-bridge", "baf-record"];
/// Crates the library must not reach, even through others.
const COMMAND_LINE: &[&str] = &["clap", "clap_complete", "clap_mangen", "baf-cli"];

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON")
}

/// Each workspace crate's declared dependencies (normal, build and dev),
/// by name.
fn dependencies(meta: &Value) -> BTreeMap<String, BTreeSet<String>> {
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .map(|d| d["name"].as_str().expect("a name").to_string())
                .collect();
            (p["name"].as_str().expect("a name").to_string(), deps)
        })
        .collect()
}

/// Everything crate `name` depends on inside the workspace, directly or
/// through other workspace crates, with its own third-party dependencies
/// and theirs.
fn reach(all: &BTreeMap<String, BTreeSet<String>>, name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        for d in all.get(&n).into_iter().flatten() {
            if out.insert(d.clone()) && all.contains_key(d) {
                todo.push(d.clone());
            }
        }
    }
    out
}

#[test]
fn the_library_knows_nothing_of_command_lines() {
    let all = dependencies(&metadata());
    assert!(
        all.contains_key("baf"),
        "the baf library is a workspace member"
    );
    let reached = reach(&all, "baf");
    let bad: Vec<&str> = COMMAND_LINE
        .iter()
        .copied()
        .filter(|c| reached.contains(*c))
        .collect();
    assert!(
        bad.is_empty(),
        "libbaf depends on {bad:?}: command-line concerns belong in baf-cli"
    );
}

#[test]
fn tools_depend_on_no_other_tool() {
    let all = dependencies(&metadata());
    let mut found = 0;
    for tool in TOOLS.iter().filter(|t| all.contains_key(**t)) {
        found += 1;
        let reached = reach(&all, tool);
        for other in TOOLS.iter().filter(|o| *o != tool) {
            assert!(
                !reached.contains(*other),
                "{tool} depends on the tool crate {other}: share the code through libbaf (or baf-cli) instead"
            );
        }
        // The workspace crates a tool may use: the two below it.
        let inside: BTreeSet<&str> = all[*tool]
            .iter()
            .map(String::as_str)
            .filter(|d| all.contains_key(*d))
            .collect();
        assert!(
            inside.iter().all(|d| ["baf", "baf-cli"].contains(d)),
            "{tool} uses the workspace crates {inside:?}; only baf and baf-cli are below a tool"
        );
    }
    assert!(
        found >= 4,
        "the tools are workspace members ({found} found)"
    );
}

#[test]
fn the_command_line_crate_sits_on_the_library_only() {
    let all = dependencies(&metadata());
    let reached = reach(&all, "baf-cli");
    assert!(reached.contains("baf"));
    for tool in TOOLS {
        assert!(
            !reached.contains(*tool),
            "baf-cli depends on the tool {tool}"
        );
    }
}

/// Where a file's tests live: a `tests.rs` or `*_tests.rs` module, or a
/// crate's `tests/` directory.
fn is_tests(path: &std::path::Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// One concept a file: no source file outside tests over 700 lines (the
/// kernel module and every crate but the VM test crate, which is tests).
#[test]
fn no_source_file_outside_tests_passes_700_lines() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let mut files = Vec::new();
    for dir in [
        "kernel",
        "libbaf",
        "baf-cli",
        "pubmsg",
        "submsg",
        "baf-setup",
        "baf-bridge",
        "baf-record",
    ] {
        let dir = root.join(dir);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter(|p| !is_tests(p.strip_prefix(root).unwrap_or(p)))
        .filter_map(|p| {
            let lines = std::fs::read_to_string(p).ok()?.lines().count();
            (lines > 700).then(|| format!("{} ({lines} lines)", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "files past one concept: {long:?}");
}
