//! The MCAP file layer: what a recording holds and how it is laid out.
//!
//! - One channel per topic, named as the topic, message encoding
//!   [`ENCODING`], with the schema [`SCHEMA_NAME`] (which documents the
//!   layout below) and the topic's settings as channel metadata
//!   (`ring_size`, `record_max`, `lossless`).
//! - Each message's data is the kernel's 40-byte record header,
//!   little-endian (`len` u32, `flags` u32, `seq` u64, `timestamp_ns` u64,
//!   `pid` u32, `uid` u32, `writer` u64), then the payload: provenance and
//!   the full 64-bit seq travel with every record. The MCAP `sequence` is
//!   the seq's low 32 bits, `log_time` the record's time on the wall clock
//!   (ns since 1970), `publish_time` the kernel's CLOCK_MONOTONIC stamp.
//! - Every gap is a message on the channel [`LOSS_TOPIC`] (JSON
//!   `{"topic","lost","before_seq"}`), written just before the record that
//!   came after it, and at the end the totals are a metadata record of the
//!   same name; a file never hides a gap.

use anyhow::{Context, Result};
use baf::abi::RecordHeader;
use mcap::records::{MessageHeader, Metadata};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Message encoding of the topics' channels.
pub const ENCODING: &str = "baf.record";
/// Name of the schema of the topics' channels.
pub const SCHEMA_NAME: &str = "baf.RecordHeader+payload";
/// The schema's text: the layout of a message.
pub const SCHEMA: &str = "40-byte header, little-endian: len u32, flags u32, seq u64, \
timestamp_ns u64 (CLOCK_MONOTONIC), pid u32, uid u32, writer u64 (pidfs inode); then len payload bytes";
/// The channel (and metadata record) of recorded loss.
pub const LOSS_TOPIC: &str = "baf.loss";
/// Size of the header before each payload.
pub const HEADER: usize = 40;

/// How chunks are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Not at all (the default: the recorder keeps up with writers).
    #[default]
    None,
    /// zstd.
    Zstd,
    /// lz4.
    Lz4,
}

impl Compression {
    fn mcap(self) -> Option<mcap::Compression> {
        match self {
            Compression::None => None,
            Compression::Zstd => Some(mcap::Compression::Zstd),
            Compression::Lz4 => Some(mcap::Compression::Lz4),
        }
    }
}

/// What the file says about a topic (its channel's metadata).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicMeta {
    /// Ring bytes.
    pub ring_size: u64,
    /// Largest record.
    pub record_max: u32,
    /// Read losslessly.
    pub lossless: bool,
}

impl TopicMeta {
    fn to_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("ring_size".to_string(), self.ring_size.to_string()),
            ("record_max".to_string(), self.record_max.to_string()),
            ("lossless".to_string(), self.lossless.to_string()),
        ])
    }
}

/// `header` and `payload` as a message's data (appended to `out`).
pub fn encode(header: &RecordHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&header.flags.to_le_bytes());
    out.extend_from_slice(&header.seq.to_le_bytes());
    out.extend_from_slice(&header.timestamp_ns.to_le_bytes());
    out.extend_from_slice(&header.pid.to_le_bytes());
    out.extend_from_slice(&header.uid.to_le_bytes());
    out.extend_from_slice(&header.writer.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A message's data back as header and payload; `None` when it is not a
/// record (too short, or a length that does not fit).
pub fn decode(data: &[u8]) -> Option<(RecordHeader, &[u8])> {
    let u32_at = |i: usize| Some(u32::from_le_bytes(data.get(i..i + 4)?.try_into().ok()?));
    let u64_at = |i: usize| Some(u64::from_le_bytes(data.get(i..i + 8)?.try_into().ok()?));
    let header = RecordHeader {
        len: u32_at(0)?,
        flags: u32_at(4)?,
        seq: u64_at(8)?,
        timestamp_ns: u64_at(16)?,
        pid: u32_at(24)?,
        uid: u32_at(28)?,
        writer: u64_at(32)?,
    };
    let payload = data.get(HEADER..)?;
    (payload.len() == header.len as usize).then_some((header, payload))
}

/// One recorded gap, as the [`LOSS_TOPIC`] message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The topic that lost records.
    pub topic: String,
    /// How many.
    pub lost: u64,
    /// The seq of the record after them.
    pub before_seq: u64,
}

impl Gap {
    fn to_json(&self) -> Vec<u8> {
        serde_json::json!({"topic": self.topic, "lost": self.lost, "before_seq": self.before_seq})
            .to_string()
            .into_bytes()
    }

    /// A [`LOSS_TOPIC`] message back.
    pub fn from_json(data: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(data).ok()?;
        Some(Self {
            topic: v.get("topic")?.as_str()?.to_string(),
            lost: v.get("lost")?.as_u64()?,
            before_seq: v.get("before_seq")?.as_u64()?,
        })
    }
}

/// The file under the MCAP writer, counting how far it reached.
struct Sink {
    inner: BufWriter<File>,
    pos: u64,
    /// The furthest position written: the file's size.
    end: Rc<Cell<u64>>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        self.end.set(self.end.get().max(self.pos));
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for Sink {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

/// A recording being written.
pub struct McapFile {
    path: PathBuf,
    writer: mcap::Writer<Sink>,
    /// The file's size so far (chunks written out).
    end: Rc<Cell<u64>>,
    /// Message bytes since the size last grew (the chunk being filled).
    pending: u64,
    end_seen: u64,
    schema: u16,
    channels: HashMap<String, u16>,
    loss_channel: Option<u16>,
    /// Records lost per topic, in this file.
    losses: BTreeMap<String, u64>,
    /// Payload bytes (headers not counted) written.
    bytes: u64,
    messages: u64,
    data: Vec<u8>,
    /// Extra metadata written at the end.
    notes: BTreeMap<String, String>,
}

/// Target size of a chunk before it is closed (and compressed).
pub const CHUNK: u64 = 1024 * 1024;

impl McapFile {
    /// Creates `path` (which must not exist: nothing is overwritten).
    pub fn create(path: &Path, compression: Compression) -> Result<Self> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let opts = mcap::WriteOptions::new()
            .compression(compression.mcap())
            .chunk_size(Some(CHUNK))
            .profile("")
            .library(concat!("baf-record ", env!("CARGO_PKG_VERSION")));
        let end = Rc::new(Cell::new(0));
        let sink = Sink {
            inner: BufWriter::with_capacity(256 * 1024, file),
            pos: 0,
            end: end.clone(),
        };
        let mut writer = opts
            .create(sink)
            .with_context(|| format!("cannot start {}", path.display()))?;
        let schema = writer
            .add_schema(SCHEMA_NAME, "text", SCHEMA.as_bytes())
            .context("writing the schema")?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            end,
            pending: 0,
            end_seen: 0,
            schema,
            channels: HashMap::new(),
            loss_channel: None,
            losses: BTreeMap::new(),
            bytes: 0,
            messages: 0,
            data: Vec::with_capacity(64 * 1024),
            notes: BTreeMap::new(),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size so far, counting the chunk being filled
    /// uncompressed (what `--split-size` compares).
    pub fn size(&mut self) -> u64 {
        let end = self.end.get();
        if end != self.end_seen {
            self.end_seen = end;
            self.pending = 0;
        }
        end + self.pending
    }

    /// Messages (records) written.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Adds topic `name`'s channel (once; later calls change nothing).
    pub fn channel(&mut self, name: &str, meta: &TopicMeta) -> Result<u16> {
        if let Some(&id) = self.channels.get(name) {
            return Ok(id);
        }
        let id = self
            .writer
            .add_channel(self.schema, name, ENCODING, &meta.to_map())
            .with_context(|| format!("writing the channel of topic {name}"))?;
        self.channels.insert(name.to_string(), id);
        Ok(id)
    }

    /// Writes one record of topic `name`, after a [`LOSS_TOPIC`] message
    /// when `lost` records came before it. `wall_offset_ns` puts the
    /// kernel's monotonic stamp on the wall clock.
    pub fn write(
        &mut self,
        name: &str,
        meta: &TopicMeta,
        header: &RecordHeader,
        payload: &[u8],
        lost: u64,
        wall_offset_ns: i128,
    ) -> Result<()> {
        let channel = self.channel(name, meta)?;
        let log_time = u64::try_from(i128::from(header.timestamp_ns) + wall_offset_ns).unwrap_or(0);
        if lost > 0 {
            self.gap(
                &Gap {
                    topic: name.to_string(),
                    lost,
                    before_seq: header.seq,
                },
                log_time,
                header.timestamp_ns,
            )?;
        }
        self.data.clear();
        encode(header, payload, &mut self.data);
        let h = MessageHeader {
            channel_id: channel,
            sequence: header.seq as u32,
            log_time,
            publish_time: header.timestamp_ns,
        };
        self.writer
            .write_to_known_channel(&h, &self.data)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.bytes += payload.len() as u64;
        self.pending += (self.data.len() + 31) as u64;
        self.messages += 1;
        Ok(())
    }

    fn gap(&mut self, gap: &Gap, log_time: u64, mono: u64) -> Result<()> {
        let channel = match self.loss_channel {
            Some(c) => c,
            None => {
                let c = self
                    .writer
                    .add_channel(0, LOSS_TOPIC, "json", &BTreeMap::new())
                    .context("writing the loss channel")?;
                self.loss_channel = Some(c);
                c
            }
        };
        *self.losses.entry(gap.topic.clone()).or_default() += gap.lost;
        let h = MessageHeader {
            channel_id: channel,
            sequence: 0,
            log_time,
            publish_time: mono,
        };
        self.writer
            .write_to_known_channel(&h, &gap.to_json())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// A note for the file's `baf.recording` metadata.
    pub fn note(&mut self, key: &str, value: String) {
        self.notes.insert(key.to_string(), value);
    }

    /// Closes the current chunk and writes it out, so that a recorder
    /// killed after this leaves a file readable up to here.
    pub fn flush(&mut self) -> Result<()> {
        self.writer
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Writes the loss totals and notes as metadata, the summary and the
    /// index, and closes the file.
    pub fn finish(mut self) -> Result<PathBuf> {
        let path = self.path.clone();
        let fail = || format!("finishing {}", path.display());
        let loss = Metadata {
            name: LOSS_TOPIC.to_string(),
            metadata: self
                .losses
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        };
        self.writer.write_metadata(&loss).with_context(fail)?;
        if !self.notes.is_empty() {
            let notes = Metadata {
                name: "baf.recording".to_string(),
                metadata: std::mem::take(&mut self.notes),
            };
            self.writer.write_metadata(&notes).with_context(fail)?;
        }
        self.writer.finish().with_context(fail)?;
        let mut sink = self.writer.into_inner();
        sink.flush().with_context(fail)?;
        let file = sink
            .inner
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(fail)?;
        file.sync_data().with_context(fail)?;
        Ok(path)
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
