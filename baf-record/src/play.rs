//! `play FILE`: publishes a recording's records back into topics (the same
//! names, or under `--into PREFIX`), in the file's order, with the
//! original spacing (the kernel's monotonic stamps), scaled by `--rate`, or
//! as fast as the topics take them (`--fast`); missing topics are created
//! on demand, as `pubmsg` and the bridge's import do.

use crate::read::{Item, Recording};
use anyhow::{Context, Result};
use baf::device::{self, Access, Topic};
use baf::pattern::Selection;
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// How to play.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Topic names get this in front.
    pub into: String,
    /// Only these topics.
    pub only: Selection,
    /// Speed: 2.0 is twice as fast.
    pub rate: f64,
    /// No waiting at all.
    pub fast: bool,
    /// Again and again, until a signal.
    pub repeat: bool,
    /// Create missing topics.
    pub create: bool,
}

/// An open target topic.
struct Target {
    topic: Topic,
    record_max: usize,
    warned: bool,
}

fn open(name: &str, create: bool) -> Result<Target> {
    let path = baf::topic_path(name);
    let topic = match device::open_node(name, &path, Access::Write) {
        Ok(t) => t,
        Err(e) if create && baf_cli::class(&e) == Some(baf_cli::Failure::NoTopic) => {
            let path = baf::control::create_on_demand(name)?;
            device::open_node(name, &path, Access::Write)?
        }
        Err(e) => return Err(e),
    };
    let info = topic
        .info()
        .with_context(|| format!("cannot query topic {name}"))?;
    device::check_abi(&info)?;
    Ok(Target {
        topic,
        record_max: info.record_max as usize,
        warned: false,
    })
}

/// What was played.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Played {
    /// Records published.
    pub records: u64,
    /// Payload bytes.
    pub bytes: u64,
}

/// Plays `rec` once, or again and again with `repeat`.
pub fn run(rec: &Recording, s: &Settings) -> Result<Played> {
    let mut targets: HashMap<String, Target> = HashMap::new();
    let mut played = Played::default();
    // Open every topic first: a topic that cannot be written stops the
    // play before anything is published.
    let mut names = Vec::new();
    for (name, _) in rec.topics() {
        if s.only.matches(&name) {
            names.push(name);
        }
    }
    for name in &names {
        let target = format!("{}{name}", s.into);
        baf::control::check_name(&target)?;
        targets.insert(name.clone(), open(&target, s.create)?);
    }
    loop {
        let start = Instant::now();
        let mut first: Option<u64> = None;
        rec.for_each(|item| {
            let Item::Record {
                topic,
                header,
                payload,
                ..
            } = item
            else {
                return Ok(());
            };
            let Some(t) = targets.get_mut(topic) else {
                return Ok(());
            };
            if !s.fast {
                let t0 = *first.get_or_insert(header.timestamp_ns);
                let offset = header.timestamp_ns.saturating_sub(t0) as f64 / s.rate;
                let due = start + Duration::from_nanos(offset as u64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            if payload.len() > t.record_max && !t.warned {
                t.warned = true;
                eprintln!(
                    "baf-record: a record of {} bytes is larger than topic {}{topic}'s limit ({}): it is split",
                    payload.len(),
                    s.into,
                    t.record_max
                );
            }
            if !payload.is_empty() {
                let mut file = t.topic.file();
                file.write_all(payload)
                    .with_context(|| format!("publishing to topic {}{topic}", s.into))?;
            }
            played.records += 1;
            played.bytes += payload.len() as u64;
            Ok(())
        })?;
        if !s.repeat {
            return Ok(played);
        }
    }
}
