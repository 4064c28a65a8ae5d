//! Import: Zenoh samples to local topics.
//!
//! One Zenoh subscriber per `--import` key expression (samples this
//! session published are not delivered to it: no echo within a bridge)
//! feeds one bounded channel; one thread drains it. A bridge's sample is a
//! batch of records ([`crate::attach`]): checked in one walk and written
//! with one batch `write()` as it came, no reframing. A sample from any
//! other Zenoh program (no attachment) is one record, framed into a batch
//! of its topic written at the end of the round. A full channel holds
//! Zenoh's receiving side up, so a local topic whose lossless readers are
//! slow slows the whole path down to the source rather than dropping
//! anything here.
//!
//! State is per key (a route: the local topic, a pending batch, and the
//! `seq` expected next from each exporting bridge, at most [`MAX_PEERS`]),
//! found with one lookup per sample, and at most [`MAX_ROUTES`] keys.
//!
//! Topics are created on demand (module defaults, mode 0660, group `baf`)
//! unless `--no-create`. A sample that cannot be written (its key is not a
//! topic name, a record is larger than the topic's record limit, the topic
//! cannot be created, a bridge's sample of another wire version or
//! malformed) is counted and reported, never silently dropped.

use crate::attach::{self, Attachment, DecodeError, Provenance};
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

/// Samples waiting for the import thread, at most (a bridge's sample holds
/// up to [`attach::SAMPLE_BYTES`] of records, or one larger record).
pub const CHANNEL: usize = 256;
/// Most samples taken into one round.
const ROUND_SAMPLES: usize = 256;
/// A topic's pending batch is written once it holds this many bytes of
/// frames.
const BATCH_BYTES: usize = 256 * 1024;
/// Keys (and so local topics, each an open file) remembered, at most.
const MAX_ROUTES: usize = 1024;
/// Keys and topics remembered as warned about, at most.
const MAX_WARNED: usize = 4096;
/// Exporting bridges remembered per key, at most (their next expected
/// `seq`, for the loss in transit).
const MAX_PEERS: usize = 16;

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

/// The seq expected next from one exporting bridge, on one route.
struct Peer {
    bridge: [u8; 16],
    expect: u64,
    /// When it last sent (the importer's sample count), to replace the
    /// longest silent one when the route has [`MAX_PEERS`].
    used: u64,
}

/// Where the samples of one key go, and what is known of their senders.
struct Route {
    key: String,
    /// The local topic's name, or why the key makes none.
    name: Result<Rc<str>, String>,
    /// The local topic, once opened.
    local: Option<Local>,
    /// The exporting bridges heard on this key, at most [`MAX_PEERS`].
    peers: Vec<Peer>,
    /// Records framed one by one (plain Zenoh samples, JSON envelopes,
    /// batches with records too large here), written at the end of the
    /// round or when full.
    pending: Batch,
}

/// The import side of the bridge.
pub struct Importer<'a> {
    settings: &'a Settings,
    shared: &'a Shared,
    rx: Receiver<Sample>,
    /// Routes, and their index by key: one lookup a sample.
    routes: Vec<Route>,
    index: HashMap<String, usize>,
    /// Routes with records pending.
    dirty: Vec<usize>,
    /// Samples taken, as a clock for [`Peer::used`].
    taken: u64,
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
            routes: Vec::new(),
            index: HashMap::new(),
            dirty: Vec::new(),
            taken: 0,
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
            // Take what else is there; when that runs out and records are
            // pending (plain samples of one record each), give Zenoh's
            // receiving thread one chance to hand over more before writing
            // them, so that a busy stream of those is written in batches
            // too and an idle one still at once.
            let mut taken = 1;
            let mut yielded = false;
            while taken < ROUND_SAMPLES {
                match self.rx.try_recv() {
                    Ok(s) => {
                        self.take(&s);
                        taken += 1;
                    }
                    Err(_) if !yielded && !self.dirty.is_empty() => {
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

    /// Warns once about `what` (at most [`MAX_WARNED`] remembered: past
    /// that, all are forgotten and may be warned about again).
    fn warn_once(&mut self, what: String, msg: impl FnOnce() -> String) {
        if self.warned.len() >= MAX_WARNED && !self.warned.contains(&what) {
            self.warned.clear();
        }
        if self.warned.insert(what) {
            tracing::warn!("{}", msg());
        }
    }

    /// The route of key `key`: one lookup, made on the key's first sample.
    /// At [`MAX_ROUTES`] keys, all are forgotten (their topics closed, the
    /// sequence numbers expected forgotten) and learnt again.
    fn route(&mut self, key: &str) -> usize {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        if self.routes.len() >= MAX_ROUTES {
            self.flush_all();
            tracing::info!(
                "more than {MAX_ROUTES} keys imported: closing their topics and starting over"
            );
            self.routes.clear();
            self.index.clear();
        }
        let name =
            names::import_topic(&self.settings.key_prefix, &self.settings.into, key).map(Rc::from);
        self.routes.push(Route {
            key: key.to_string(),
            name,
            local: None,
            peers: Vec::new(),
            pending: Batch::new(),
        });
        let i = self.routes.len() - 1;
        self.index.insert(key.to_string(), i);
        i
    }

    /// Route `r`'s topic, opened (or created) now if it is not yet: its
    /// name and record limit, or `None` when it cannot be (counted as `n`
    /// records not written, and warned about once).
    fn local(&mut self, r: usize, n: u64) -> Option<(Rc<str>, usize)> {
        let route = self.routes.get_mut(r)?;
        let name = match &route.name {
            Ok(name) => name.clone(),
            Err(why) => {
                let (key, why) = (route.key.clone(), why.clone());
                self.warn_once(format!("key {key}"), || {
                    format!("cannot import key {key}: it does not make a topic name ({why}); its samples are dropped")
                });
                self.shared.add_loss(
                    Cause::NotWritten("its key is not a topic name".into()),
                    &key,
                    n,
                );
                return None;
            }
        };
        if let Some(l) = &route.local {
            return Some((name, l.record_max));
        }
        let key = route.key.clone();
        match self.open_local(&name, &key) {
            Ok(l) => {
                let max = l.record_max;
                self.warned.remove(&*name);
                if let Some(route) = self.routes.get_mut(r) {
                    route.local = Some(l);
                }
                Some((name, max))
            }
            Err(e) => {
                let msg = baf_cli::message(&e);
                self.warn_once(name.to_string(), || {
                    format!("cannot import into topic {name}: {msg}; its records are dropped until it can")
                });
                self.shared.add_loss(
                    Cause::NotWritten("the topic cannot be opened".into()),
                    &name,
                    n,
                );
                None
            }
        }
    }

    /// Counts the loss that batch `a` (its last record `last_seq`) says
    /// happened before it: at the source, and (from the gap in the
    /// sequence numbers of route `r`'s bridge) in transit. Returns both
    /// together.
    fn count_loss(&mut self, r: usize, a: &Attachment<&str>, last_seq: u64) -> u64 {
        let now = self.taken;
        let Some(route) = self.routes.get_mut(r) else {
            return 0;
        };
        let transit = match route.peers.iter_mut().find(|p| p.bridge == a.bridge) {
            Some(p) => {
                let t = a.lost_in_transit(p.expect, last_seq);
                p.expect = last_seq.wrapping_add(1);
                p.used = now;
                t
            }
            None => {
                let peer = Peer {
                    bridge: a.bridge,
                    expect: last_seq.wrapping_add(1),
                    used: now,
                };
                if route.peers.len() < MAX_PEERS {
                    route.peers.push(peer);
                } else if let Some(old) = route.peers.iter_mut().min_by_key(|p| p.used) {
                    *old = peer;
                }
                0
            }
        };
        if a.lost > 0 {
            self.shared
                .add_loss(Cause::AtSource(a.host.to_string()), a.topic, a.lost);
        }
        if transit > 0 {
            self.shared
                .add_loss(Cause::InTransit(a.host.to_string()), a.topic, transit);
        }
        a.lost + transit
    }

    /// Takes one sample: a bridge's batch is written at once, a plain
    /// sample is one record, framed into its topic's pending batch.
    fn take(&mut self, s: &Sample) {
        if s.kind() != SampleKind::Put {
            return;
        }
        self.taken += 1;
        let r = self.route(s.key_expr().as_str());
        let payload = s.payload().to_bytes();
        match s.attachment().map(|a| a.to_bytes()) {
            Some(att) => self.take_batch(r, &att, &payload),
            None => self.take_plain(r, &payload),
        }
    }

    /// A sample from a program other than a bridge: its payload is one
    /// record.
    fn take_plain(&mut self, r: usize, payload: &[u8]) {
        let Some((name, max)) = self.local(r, 1) else {
            return;
        };
        if payload.is_empty() {
            self.shared.add_loss(
                Cause::NotWritten("an empty sample cannot be a record".into()),
                &name,
                1,
            );
            return;
        }
        match self.settings.envelope {
            Envelope::None => self.push(r, &name, max, payload),
            Envelope::Json => {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                let key = self.routes.get(r).map(|x| x.key.as_str()).unwrap_or("");
                envelope_json::<&str>(&mut scratch, None, key, payload, 0);
                self.push(r, &name, max, &scratch);
                self.scratch = scratch;
            }
        }
    }

    /// A bridge's batch: checked whole, then written with one batch
    /// `write()` as it came (or record by record into the pending batch,
    /// for envelopes and records too large here). A batch this bridge
    /// cannot read is dropped, counted and warned about once per key.
    fn take_batch(&mut self, r: usize, att: &[u8], payload: &[u8]) {
        let a = match Attachment::decode(att) {
            Ok(a) => a,
            Err(e) => {
                self.refuse(r, &e, 1);
                return;
            }
        };
        let n = u64::from(a.count);
        let Some((name, max)) = self.local(r, n) else {
            return;
        };
        let c = match attach::check(payload, a.count, max) {
            Ok(c) => c,
            Err(e) => {
                self.refuse(r, &e, n);
                return;
            }
        };
        let lost = self.count_loss(r, &a, c.last_seq);
        if self.settings.envelope == Envelope::None && c.too_long == 0 {
            self.flush(r);
            self.write(r, &name, &attach::to_native(payload), n, c.payload_bytes);
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        for (i, f) in attach::frames(payload).map_while(Result::ok).enumerate() {
            match self.settings.envelope {
                Envelope::None => self.push(r, &name, max, f.payload),
                Envelope::Json => {
                    scratch.clear();
                    let lost = if i == 0 { lost } else { 0 };
                    let p = a.provenance(&f.header);
                    envelope_json(&mut scratch, Some(&p), "", f.payload, lost);
                    self.push(r, &name, max, &scratch);
                }
            }
        }
        self.scratch = scratch;
    }

    /// Drops a sample this bridge cannot read: counted as `n` records not
    /// written, warned about once per key and kind of problem.
    fn refuse(&mut self, r: usize, e: &DecodeError, n: u64) {
        let key = self
            .routes
            .get(r)
            .map(|x| x.key.clone())
            .unwrap_or_default();
        let kind = std::mem::discriminant(e);
        self.warn_once(format!("sample {key} {kind:?}"), || {
            format!("cannot import a sample of key {key}: {e}; it is dropped (reported once for this key)")
        });
        let why = match e {
            DecodeError::Older | DecodeError::Version(_) => "a sample of another wire version",
            _ => "a malformed sample",
        };
        let topic = match self.routes.get(r).map(|x| &x.name) {
            Some(Ok(name)) => name.to_string(),
            _ => key,
        };
        self.shared
            .add_loss(Cause::NotWritten(why.into()), &topic, n);
    }

    /// Adds `record` to route `r`'s pending batch.
    fn push(&mut self, r: usize, name: &str, record_max: usize, record: &[u8]) {
        if record.len() > record_max {
            self.shared.add_loss(
                Cause::NotWritten(format!(
                    "larger than the topic's record limit of {record_max} bytes"
                )),
                name,
                1,
            );
            return;
        }
        let Some(route) = self.routes.get_mut(r) else {
            return;
        };
        if route.pending.is_empty() {
            self.dirty.push(r);
        }
        if route.pending.push(record).is_err() {
            return;
        }
        if route.pending.len() >= BATCH_BYTES {
            self.flush(r);
        }
    }

    /// Writes route `r`'s pending batch.
    fn flush(&mut self, r: usize) {
        let Some(route) = self.routes.get_mut(r) else {
            return;
        };
        if route.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut route.pending);
        if let Ok(name) = route.name.clone() {
            let (n, bytes) = (batch.records() as u64, batch.payload_bytes() as u64);
            self.write(r, &name, batch.as_bytes(), n, bytes);
        }
        if let Some(route) = self.routes.get_mut(r) {
            // Its memory, for the next round.
            route.pending = batch;
            route.pending.clear();
        }
    }

    fn flush_all(&mut self) {
        for r in std::mem::take(&mut self.dirty) {
            self.flush(r);
        }
    }

    /// Writes `frames` (`n` records of `bytes` payload bytes) to route
    /// `r`'s topic with one batch `write()`.
    fn write(&mut self, r: usize, name: &str, frames: &[u8], n: u64, bytes: u64) {
        let Some(route) = self.routes.get_mut(r) else {
            return;
        };
        let Some(local) = &route.local else {
            self.shared.add_loss(
                Cause::NotWritten("the topic cannot be opened".into()),
                name,
                n,
            );
            return;
        };
        match device::write_batch(local.topic.file(), frames) {
            Ok(()) => self.shared.imported.add(n, bytes),
            Err(e) => {
                let removed = baf_cli::errno(&e) == Some(libc::ENODEV);
                route.local = None;
                let why = if removed {
                    tracing::info!("topic {name} was removed; it is opened (or created) again for the next records");
                    "the topic was removed".to_string()
                } else {
                    tracing::warn!("writing to topic {name}: {}", baf_cli::message(&e));
                    "the write failed".to_string()
                };
                // A prefix of the batch may have been published: the
                // count is at most this high.
                self.shared.add_loss(Cause::NotWritten(why), name, n);
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
