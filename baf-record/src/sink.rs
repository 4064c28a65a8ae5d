//! Where recorded records go ([`Sink`]): the current file, split by size
//! or time; or, in dashcam mode, the window in memory and the capture a
//! trigger opens. The recording loop ([`crate::record`]) hands it every
//! record with the loss before it.

use crate::dashcam::{Dashcam, Held, Live};
use crate::file::{McapFile, TopicMeta};
use crate::output::Output;
use anyhow::Result;
use baf::abi::RecordHeader;
use std::time::{Duration, Instant};

/// A topic the recorder knows (by index, for ever: held records name it).
pub(crate) struct Known {
    pub(crate) name: String,
    pub(crate) meta: TopicMeta,
    /// Its records are recorded (it matches the patterns).
    pub(crate) record: bool,
    /// Its records are triggers.
    pub(crate) trigger: bool,
}

/// CLOCK_MONOTONIC now, in ns (the clock of the kernel's stamps).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Where records go.
pub(crate) struct Sink {
    pub(crate) out: Output,
    pub(crate) file: Option<McapFile>,
    pub(crate) opened: Instant,
    pub(crate) dash: Option<Dashcam>,
    pub(crate) known: Vec<Known>,
    pub(crate) wall_offset_ns: i128,
    pub(crate) split_size: Option<u64>,
    pub(crate) split_time: Option<Duration>,
    pub(crate) loss: baf::loss::LossCounts<String>,
    /// Records written since the last flush.
    pub(crate) unflushed: bool,
    /// Files finished, for the summary on stderr.
    pub(crate) finished: Vec<std::path::PathBuf>,
    pub(crate) notes: Vec<(String, String)>,
}

impl Sink {
    pub(crate) fn unix_now(&self) -> i128 {
        i128::from(mono_ns()) + self.wall_offset_ns
    }

    pub(crate) fn open(&mut self) -> Result<()> {
        let mut f = self.out.open(self.unix_now())?;
        for (k, v) in &self.notes {
            f.note(k, v.clone());
        }
        // Every topic recorded so far has its channel, records or not.
        for k in self.known.iter().filter(|k| k.record) {
            f.channel(&k.name, &k.meta)?;
        }
        self.file = Some(f);
        self.opened = Instant::now();
        Ok(())
    }

    pub(crate) fn close(&mut self) -> Result<()> {
        if let Some(f) = self.file.take() {
            self.finished.push(f.finish()?);
        }
        Ok(())
    }

    pub(crate) fn write(
        &mut self,
        topic: usize,
        header: &RecordHeader,
        payload: &[u8],
        lost: u64,
    ) -> Result<()> {
        let k = &self.known[topic];
        if let Some(f) = self.file.as_mut() {
            f.write(&k.name, &k.meta, header, payload, lost, self.wall_offset_ns)?;
            self.unflushed = true;
        }
        Ok(())
    }

    /// One record of topic `topic` came, `lost` records after the last.
    pub(crate) fn take(
        &mut self,
        topic: usize,
        header: &RecordHeader,
        payload: &[u8],
        lost: u64,
    ) -> Result<()> {
        let (record, trigger) = (self.known[topic].record, self.known[topic].trigger);
        if record && lost > 0 {
            self.loss.add(self.known[topic].name.clone(), lost);
        }
        let Some(dash) = self.dash.as_mut() else {
            if !record {
                return Ok(());
            }
            let split = self.split_size.is_some_and(|max| {
                self.file
                    .as_mut()
                    .is_some_and(|f| f.messages() > 0 && f.size() >= max)
            });
            if split {
                self.close()?;
                self.open()?;
            }
            return self.write(topic, header, payload, lost);
        };
        if record {
            match dash.record(header.timestamp_ns) {
                Live::Hold => {}
                Live::Write => self.write(topic, header, payload, lost)?,
                Live::Finish => {
                    dash.finish();
                    self.close()?;
                }
            }
            let held = Held {
                topic,
                header: *header,
                payload: payload.to_vec(),
                lost,
            };
            if let Some(d) = self.dash.as_mut() {
                d.hold(held);
            }
        }
        if trigger {
            self.trigger(header.timestamp_ns)?;
        }
        Ok(())
    }

    /// A trigger at monotonic time `t` (dashcam), or a request for a new
    /// file.
    pub(crate) fn trigger(&mut self, t: u64) -> Result<()> {
        let Some(dash) = self.dash.as_mut() else {
            // Without a dashcam, SIGUSR1 starts a new file.
            self.close()?;
            return self.open();
        };
        let cut = dash.cut;
        let Some(window) = dash.trigger(t) else {
            return Ok(());
        };
        self.open()?;
        if let Some(f) = self.file.as_mut() {
            f.note("trigger_ns", t.to_string());
            eprintln!(
                "baf-record: dashcam: trigger at {t} ns (CLOCK_MONOTONIC): writing {}",
                f.path().display()
            );
        }
        if cut > 0 {
            if let Some(f) = self.file.as_mut() {
                f.note("window_cut_by_max_memory", cut.to_string());
            }
        }
        for h in window {
            self.write(h.topic, &h.header, &h.payload, h.lost)?;
        }
        Ok(())
    }

    /// Time passed: split by time, end a capture, flush the chunk.
    pub(crate) fn tick(&mut self) -> Result<()> {
        if let Some(dash) = self.dash.as_mut() {
            if dash.due(mono_ns(), 200_000_000) {
                dash.finish();
                self.close()?;
            }
        } else if self
            .split_time
            .is_some_and(|t| self.opened.elapsed() >= t && self.file.is_some())
        {
            self.close()?;
            self.open()?;
        }
        if self.unflushed {
            if let Some(f) = self.file.as_mut() {
                f.flush()?;
            }
            self.unflushed = false;
        }
        for (topic, n, total) in self.loss.take(Instant::now(), false) {
            eprintln!("baf-record: topic {topic}: lost {n} records ({total} in all; each gap is written into the recording)");
        }
        Ok(())
    }
}
