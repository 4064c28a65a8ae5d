//! Import: Zenoh samples to local topics.
//!
//! One Zenoh subscriber per `--import` key expression (samples this
//! session published are not delivered to it: no echo within a bridge)
//! feeds one bounded channel; one thread drains it, turns each sample into
//! one record of the local topic its key names, and writes the records of
//! each topic in batches (one `write()` and one reader wakeup for many).
//! A full channel holds Zenoh's receiving side up, so a local topic whose
//! lossless readers are slow slows the whole path down to the source
//! rather than dropping anything here.
//!
//! Topics are created on demand (module defaults, mode 0660, group `baf`)
//! unless `--no-create`. A sample that cannot be written (its key is not a
//! topic name, it is larger than the topic's record limit, the topic cannot
//! be created) is counted and reported, never silently dropped.

use crate::attach::Provenance;
use crate::config::{Envelope, Settings};
use crate::loss::Cause;
use crate::{names, Shared};
use anyhow::{Context, Result};
use baf::abi;
use baf::control;
use baf::device::{self, Access, Batch, NodeError, Topic};
use base64::Engine as _;
use std::collections::{HashMap, HashSet};
use std::io;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;
use zenoh::key_expr::OwnedKeyExpr;
use zenoh::pubsub::Subscriber;
use zenoh::sample::{Locality, Sample, SampleKind};
use zenoh::{Session, Wait};

/// Samples waiting for the import thread, at most.
pub const CHANNEL: usize = 4096;
/// Most samples taken into one round of batches.
const ROUND_SAMPLES: usize = 4096;
/// A topic's batch is written once it holds this many bytes of frames.
const BATCH_BYTES: usize = 256 * 1024;
/// Emptied batches kept for reuse, at most.
const SPARE_BATCHES: usize = 16;
/// Keys whose topic names are remembered, at most.
const TOPIC_CACHE: usize = 65536;

/// Declares one subscriber per key expression, all feeding `tx`. A sample
/// whose key also matches an earlier expression is left to that one's
/// subscriber, so overlapping expressions deliver it once.
pub fn subscribe(
    session: &Session,
    import: &[OwnedKeyExpr],
    tx: &SyncSender<Sample>,
) -> Result<Vec<Subscriber<()>>> {
    let mut subs = Vec::new();
    for (i, ke) in import.iter().enumerate() {
        let earlier: Vec<OwnedKeyExpr> = import.get(..i).unwrap_or_default().to_vec();
        let tx = tx.clone();
        let sub = session
            .declare_subscriber(ke.clone())
            .allowed_origin(Locality::Remote)
            .callback(move |s: Sample| {
                if earlier.iter().any(|e| e.intersects(s.key_expr())) {
                    return;
                }
                // Blocks while the channel is full: backpressure.
                let _ = tx.send(s);
            })
            .wait()
            .map_err(|e| {
                anyhow::anyhow!("cannot subscribe to {ke}: {}", names::zenoh_message(&e))
            })?;
        subs.push(sub);
    }
    Ok(subs)
}

/// A local topic that imported records go to.
struct Local {
    topic: Topic,
    record_max: usize,
}

/// The import side of the bridge.
pub struct Importer<'a> {
    settings: &'a Settings,
    shared: &'a Shared,
    rx: Receiver<Sample>,
    locals: HashMap<String, Local>,
    /// Per exporting bridge and source topic: the seq expected next.
    expected: HashMap<[u8; 16], HashMap<String, u64>>,
    /// Keys seen, and the local topic each goes to.
    topics: HashMap<String, Result<Rc<str>, String>>,
    /// Batches of this round, in the order their topics came up.
    batches: Vec<(String, Batch)>,
    /// Emptied batches, for reuse.
    spare: Vec<Batch>,
    /// Keys and topics already warned about.
    warned: HashSet<String>,
    /// Reused buffer for envelopes.
    scratch: Vec<u8>,
}

impl<'a> Importer<'a> {
    /// An importer of the samples arriving on `rx`.
    pub fn new(settings: &'a Settings, shared: &'a Shared, rx: Receiver<Sample>) -> Self {
        Self {
            settings,
            shared,
            rx,
            locals: HashMap::new(),
            expected: HashMap::new(),
            topics: HashMap::new(),
            batches: Vec::new(),
            spare: Vec::new(),
            warned: HashSet::new(),
            scratch: Vec::new(),
        }
    }

    /// Runs until asked to stop.
    pub fn run(&mut self) -> Result<()> {
        while !self.shared.stop.requested() {
            let first = match self.rx.recv_timeout(Duration::from_millis(250)) {
                Ok(s) => s,
                Err(RecvTimeoutError::Timeout) => {
                    self.shared.report_loss(false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.take(&first);
            // Take what else is there; when that runs out, give Zenoh's
            // receiving thread one chance to hand over more before
            // writing, so that a busy stream is written in batches (one
            // write and one reader wakeup for many records) and an idle
            // one still at once.
            let mut taken = 1;
            let mut yielded = false;
            while taken < ROUND_SAMPLES {
                match self.rx.try_recv() {
                    Ok(s) => {
                        self.take(&s);
                        taken += 1;
                    }
                    Err(_) if !yielded => {
                        yielded = true;
                        std::thread::yield_now();
                    }
                    Err(_) => break,
                }
            }
            self.flush_all();
            self.shared.report_loss(false);
        }
        self.flush_all();
        Ok(())
    }

    fn warn_once(&mut self, what: &str, msg: impl FnOnce() -> String) {
        if self.warned.insert(what.to_string()) {
            tracing::warn!("{}", msg());
        }
    }

    /// The local topic of key `key` (cached), or why there is none.
    fn topic_of(&mut self, key: &str) -> Result<Rc<str>, String> {
        if let Some(r) = self.topics.get(key) {
            return r.clone();
        }
        let r =
            names::import_topic(&self.settings.key_prefix, &self.settings.into, key).map(Rc::from);
        if self.topics.len() < TOPIC_CACHE {
            self.topics.insert(key.to_string(), r.clone());
        }
        r
    }

    /// Counts the loss that `p` says happened before it: at the source,
    /// and (from the gap in its sequence numbers) in transit. Returns both
    /// together.
    fn count_loss(&mut self, p: &Provenance<&str>) -> u64 {
        let seen = self.expected.entry(p.bridge).or_default();
        let transit = match seen.get_mut(p.topic) {
            Some(exp) => {
                let t = if p.seq >= *exp {
                    p.lost_in_transit(*exp)
                } else {
                    0
                };
                *exp = p.seq.wrapping_add(1);
                t
            }
            None => {
                seen.insert(p.topic.to_string(), p.seq.wrapping_add(1));
                0
            }
        };
        if p.lost > 0 {
            self.shared
                .add_loss(Cause::AtSource(p.host.to_string()), p.topic, p.lost);
        }
        if transit > 0 {
            self.shared
                .add_loss(Cause::InTransit(p.host.to_string()), p.topic, transit);
        }
        p.lost + transit
    }

    /// Takes one sample into this round's batches.
    fn take(&mut self, s: &Sample) {
        if s.kind() != SampleKind::Put {
            return;
        }
        let key = s.key_expr().as_str();
        let name = match self.topic_of(key) {
            Ok(n) => n,
            Err(why) => {
                let key = key.to_string();
                self.warn_once(&format!("key {key}"), || {
                    format!("cannot import key {key}: it does not make a topic name ({why}); its samples are dropped")
                });
                self.shared.add_loss(
                    Cause::NotWritten("its key is not a topic name".into()),
                    &key,
                    1,
                );
                return;
            }
        };
        let attachment = s.attachment().map(|a| a.to_bytes());
        let prov = match attachment.as_deref().map(Provenance::decode) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                let key = key.to_string();
                self.warn_once(&format!("attachment {key}"), || {
                    format!("samples of key {key} carry an attachment this bridge does not understand ({e}): imported without provenance")
                });
                None
            }
            None => None,
        };
        let lost_before = prov.as_ref().map_or(0, |p| self.count_loss(p));
        let payload = s.payload().to_bytes();
        let mut scratch = std::mem::take(&mut self.scratch);
        let record: &[u8] = match self.settings.envelope {
            Envelope::None => &payload,
            Envelope::Json => {
                scratch.clear();
                envelope_json(&mut scratch, prov.as_ref(), key, &payload, lost_before);
                &scratch
            }
        };
        if record.is_empty() {
            self.shared.add_loss(
                Cause::NotWritten("an empty sample cannot be a record".into()),
                &name,
                1,
            );
        } else {
            self.push(&name, key, record);
        }
        self.scratch = scratch;
    }

    /// Adds `record` to topic `name`'s batch (opening or creating the
    /// topic first).
    fn push(&mut self, name: &str, key: &str, record: &[u8]) {
        if !self.locals.contains_key(name) {
            match self.open_local(name, key) {
                Ok(l) => {
                    self.warned.remove(name);
                    self.locals.insert(name.to_string(), l);
                }
                Err(e) => {
                    let msg = baf_cli::message(&e);
                    self.warn_once(name, || {
                        format!("cannot import into topic {name}: {msg}; its records are dropped until it can")
                    });
                    self.shared.add_loss(
                        Cause::NotWritten("the topic cannot be opened".into()),
                        name,
                        1,
                    );
                    return;
                }
            }
        }
        let Some(local) = self.locals.get(name) else {
            return;
        };
        if record.len() > local.record_max {
            let max = local.record_max;
            self.shared.add_loss(
                Cause::NotWritten(format!(
                    "larger than the topic's record limit of {max} bytes"
                )),
                name,
                1,
            );
            return;
        }
        let i = match self.batches.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                let batch = self.spare.pop().unwrap_or_default();
                self.batches.push((name.to_string(), batch));
                self.batches.len() - 1
            }
        };
        let full = {
            let Some((_, batch)) = self.batches.get_mut(i) else {
                return;
            };
            if batch.push(record).is_err() {
                return;
            }
            batch.len() >= BATCH_BYTES
        };
        if full {
            let (name, batch) = self.batches.swap_remove(i);
            self.write(&name, &batch);
            self.recycle(batch);
        }
    }

    fn flush_all(&mut self) {
        for (name, batch) in std::mem::take(&mut self.batches) {
            self.write(&name, &batch);
            self.recycle(batch);
        }
    }

    /// Keeps an emptied batch's memory for the next round (a fresh buffer
    /// for every round of a busy stream would cost a system call or two and
    /// page faults each).
    fn recycle(&mut self, mut batch: Batch) {
        batch.clear();
        if self.spare.len() < SPARE_BATCHES {
            self.spare.push(batch);
        }
    }

    /// Writes one topic's batch.
    fn write(&mut self, name: &str, batch: &Batch) {
        if batch.is_empty() {
            return;
        }
        let Some(local) = self.locals.get(name) else {
            return;
        };
        match device::write_batch(local.topic.file(), batch.as_bytes()) {
            Ok(()) => self
                .shared
                .imported
                .add(batch.records() as u64, batch.payload_bytes() as u64),
            Err(e) => {
                let removed = baf_cli::errno(&e) == Some(libc::ENODEV);
                self.locals.remove(name);
                let why = if removed {
                    tracing::info!("topic {name} was removed; it is opened (or created) again for the next records");
                    "the topic was removed".to_string()
                } else {
                    tracing::warn!("writing to topic {name}: {}", baf_cli::message(&e));
                    "the write failed".to_string()
                };
                // A prefix of the batch may have been published: the
                // count is at most this high.
                self.shared
                    .add_loss(Cause::NotWritten(why), name, batch.records() as u64);
            }
        }
    }

    /// Opens topic `name` for writing, creating it when missing (and
    /// allowed).
    fn open_local(&mut self, name: &str, key: &str) -> Result<Local> {
        let mut path = control::node_of(name);
        match device::check_node(&path) {
            Ok(()) => {}
            Err(NodeError::Stat(e)) if e.kind() == io::ErrorKind::NotFound => {
                if !self.settings.create {
                    return Err(anyhow::anyhow!(
                        "it does not exist, and topics are not created (--no-create)"
                    ));
                }
                control::create(name, &control::CreateOptions::defaults())?;
                tracing::info!("created topic {name} for key {key}");
                path = control::wait_node(name);
            }
            Err(e) => return Err(e.into_anyhow(&path)),
        }
        let topic = device::open_node(name, &path, Access::Write)?;
        let info = topic.info().context("cannot query the topic")?;
        device::check_abi(&info)?;
        topic
            .set_flags(abi::FLAG_BATCH)
            .context("cannot switch the topic to batch writes")?;
        tracing::info!("importing key {key} into topic {name}");
        Ok(Local {
            topic,
            record_max: info.record_max.max(1) as usize,
        })
    }
}

/// Appends the JSON envelope of an imported record to `out`: one object
/// and a newline, with the provenance (`host`, `topic`, `seq`,
/// `timestamp`, `realtime`, `pid`, `uid`, `lost`) when the sample had it,
/// else the sample's `key`; then `payload` (a string) and `encoding`
/// (`utf8`, or `base64` when the payload is not UTF-8).
pub fn envelope_json<S: AsRef<str>>(
    out: &mut Vec<u8>,
    prov: Option<&Provenance<S>>,
    key: &str,
    payload: &[u8],
    lost: u64,
) {
    use std::io::Write as _;
    let string = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let _ = match prov {
        Some(p) => write!(
            out,
            "{{\"host\":{},\"topic\":{},\"seq\":{},\"timestamp\":{},\"realtime\":{},\"pid\":{},\"uid\":{},\"lost\":{lost},",
            string(p.host.as_ref()),
            string(p.topic.as_ref()),
            p.seq,
            p.timestamp,
            p.realtime,
            p.pid,
            p.uid
        ),
        None => write!(out, "{{\"key\":{},", string(key)),
    };
    let (text, encoding) = match std::str::from_utf8(payload) {
        Ok(s) => (string(s), "utf8"),
        Err(_) => (
            string(&base64::engine::general_purpose::STANDARD.encode(payload)),
            "base64",
        ),
    };
    let _ = writeln!(out, "\"payload\":{text},\"encoding\":\"{encoding}\"}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let p = Provenance {
            pid: 12,
            uid: 1000,
            seq: 3,
            timestamp: 5,
            realtime: 6,
            host: "robot-1",
            topic: "robot/arm",
            ..Provenance::default()
        };
        let mut out = Vec::new();
        envelope_json(&mut out, Some(&p), "baf/robot/arm", b"hi\n", 2);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{\"host\":\"robot-1\",\"topic\":\"robot/arm\",\"seq\":3,\"timestamp\":5,\"realtime\":6,\"pid\":12,\"uid\":1000,\"lost\":2,\"payload\":\"hi\\n\",\"encoding\":\"utf8\"}\n"
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["payload"], "hi\n");
        out.clear();
        envelope_json::<&str>(&mut out, None, "lab/temp", &[0xff, 0], 0);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"key": "lab/temp", "payload": "/wA=", "encoding": "base64"})
        );
    }
}
