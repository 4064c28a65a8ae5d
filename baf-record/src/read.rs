//! Reading a recording back (`cat`, `info`, `play`): the whole file is
//! checked before anything is done with it, so a corrupt or cut-short file
//! is one clear error (exit 2) and nothing half printed or half played.
//! With `--recover` a file a killed recorder left (no summary) is read up
//! to its last complete chunk instead.

use crate::file::{decode, Gap, ENCODING, LOSS_TOPIC};
use anyhow::{Context, Result};
use baf::abi::RecordHeader;
use baf::error::Kind;
use mcap::read::Options;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A recording, mapped and checked ([`Recording::open`]).
pub struct Recording {
    path: PathBuf,
    map: memmap2::Mmap,
    /// It has its summary (it was finished).
    pub finished: bool,
    /// Messages that can be read (all of them, or those before the damage
    /// with `--recover`).
    pub readable: u64,
    /// With `--recover`: what was wrong past the readable part.
    pub damage: Option<String>,
}

/// One message of a recording.
pub enum Item<'a> {
    /// A record of a topic.
    Record {
        /// The topic.
        topic: &'a str,
        /// Its time on the wall clock (ns since 1970).
        log_time: u64,
        /// The kernel's header.
        header: RecordHeader,
        /// The payload.
        payload: &'a [u8],
    },
    /// A gap: records the recorder lost.
    Gap(Gap),
}

fn bad(path: &Path, what: impl std::fmt::Display) -> anyhow::Error {
    Kind::Invalid.error(format!("{}: {what}", path.display()))
}

impl Recording {
    /// Maps `path` and reads it through once. Without `recover` a file with
    /// no summary or any damage is an error; with it, what comes before the
    /// damage is readable.
    pub fn open(path: &Path, recover: bool) -> Result<Self> {
        let file = File::open(path).map_err(|e| {
            Kind::Invalid
                .wrap(anyhow::Error::new(e).context(format!("cannot open {}", path.display())))
        })?;
        if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(bad(path, "is a directory, not an MCAP file"));
        }
        // SAFETY: the file is only read; a recording changed by someone
        // else while it is read gives wrong bytes, not undefined behaviour
        // in safe code (the bytes are only ever parsed).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        if map.len() < 8 || map.get(..8) != Some(mcap::MAGIC) {
            return Err(bad(
                path,
                "is not an MCAP file (no MCAP magic at its start)",
            ));
        }
        let finished = matches!(mcap::Summary::read(&map), Ok(Some(_)));
        let mut rec = Self {
            path: path.to_path_buf(),
            map,
            finished,
            readable: 0,
            damage: None,
        };
        let mut problem = None;
        let mut readable = 0;
        for m in rec.stream()? {
            match m {
                Ok(m) if m.channel.message_encoding == ENCODING && decode(&m.data).is_none() => {
                    problem = Some(format!(
                        "message {readable} of topic {} is not a baf record",
                        m.channel.topic
                    ));
                    break;
                }
                Ok(_) => readable += 1,
                Err(e) => {
                    problem = Some(e.to_string());
                    break;
                }
            }
        }
        rec.readable = readable;
        if problem.is_none() && !finished {
            problem = Some("no summary at its end".to_string());
        }
        match problem {
            None => Ok(rec),
            Some(p) if recover => {
                rec.damage = Some(p);
                Ok(rec)
            }
            Some(p) if !finished => Err(bad(
                path,
                format!(
                    "is not a finished recording ({p}: the recorder was killed, or the file was cut short); --recover reads the {} records of its complete chunks",
                    rec.readable
                ),
            )),
            Some(p) => Err(bad(
                path,
                format!(
                    "is corrupt ({p}) after {} records; --recover reads those",
                    rec.readable
                ),
            )),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stream(&self) -> Result<mcap::MessageStream<'_>> {
        let options = Options::ValidateChunkCrcs | Options::IgnoreEndMagic;
        mcap::MessageStream::new_with_options(&self.map, options)
            .map_err(|e| bad(&self.path, format!("cannot be read ({e})")))
    }

    /// Every readable message, in the file's order, to `each`.
    pub fn for_each(&self, mut each: impl FnMut(Item<'_>) -> Result<()>) -> Result<()> {
        for m in self.stream()?.take(self.readable as usize) {
            let m = m.map_err(|e| bad(&self.path, e))?;
            let topic = m.channel.topic.as_str();
            if m.channel.message_encoding == ENCODING {
                let Some((header, payload)) = decode(&m.data) else {
                    continue;
                };
                each(Item::Record {
                    topic,
                    log_time: m.log_time,
                    header,
                    payload,
                })?;
            } else if topic == LOSS_TOPIC {
                if let Some(gap) = Gap::from_json(&m.data) {
                    each(Item::Gap(gap))?;
                }
            }
        }
        Ok(())
    }

    /// The channels' metadata: topic name to its settings.
    pub fn topics(&self) -> Vec<(String, std::collections::BTreeMap<String, String>)> {
        let mut out: Vec<(String, std::collections::BTreeMap<String, String>)> = Vec::new();
        for m in self
            .stream()
            .into_iter()
            .flatten()
            .take(self.readable as usize)
        {
            let Ok(m) = m else { break };
            if m.channel.message_encoding == ENCODING
                && !out.iter().any(|(t, _)| *t == m.channel.topic)
            {
                out.push((m.channel.topic.clone(), m.channel.metadata.clone()));
            }
        }
        out
    }
}
