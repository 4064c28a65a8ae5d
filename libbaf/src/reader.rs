//! One topic read either way, for every subscriber (`submsg`, `baf-record`):
//! through a mapping of its ring when the module allows it (no system call
//! per batch), else with record-mode `read()`s; a lossless reader always
//! reads the file, since each `read()` releases waiting writers at once.
//!
//! Both ways hand over the same records with the kernel's headers, and the
//! reader counts every gap in the sequence numbers before a record as that
//! record's loss, so what a subscriber makes of them does not depend on how
//! they were read.
//!
//! A third way hands over payloads only, and never to this process: a
//! reader switched to [`Reader::use_splice`] moves them with `splice` from
//! the topic straight into a pipe (ABI 7), copied once, by the kernel
//! (`submsg t | consumer`). The kernel counts that reader's loss itself.

use crate::abi::{self, RecordHeader};
use crate::device::{Record, Topic};
use crate::mapped::{Mapped, Progress};
use crate::subscribe::{self, Lossless, Opened, StartAt};
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// A topic open for reading ([`Reader::open`]).
pub struct Reader {
    name: String,
    topic: Topic,
    info: abi::Info,
    /// The ring, mapped (else the topic is read with `read()`).
    mapped: Option<Mapped>,
    /// The sequence number expected next; a record above it means loss.
    expect: u64,
    lossless: bool,
    refused: bool,
    /// Set by [`Reader::use_splice`].
    spliced: Option<Spliced>,
}

/// A spliced reader's loss accounting.
#[derive(Clone, Copy, Debug)]
struct Spliced {
    /// The file's `lost` count seen last.
    lost_seen: u64,
    /// Records before where the file stood when switched that the start
    /// point wanted (`--from seq:N` below the oldest): lost already, and
    /// counted in the first batch.
    gap: u64,
}

/// The most bytes one [`Reader::splice_payloads`] asks for (the pipe's
/// room bounds it too).
pub const SPLICE_LEN: usize = 1 << 20;

/// What one [`Reader::read`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Records handed over.
    pub records: u64,
    /// Records lost before them (gaps in the sequence numbers).
    pub lost: u64,
    /// What the read found.
    pub step: Step,
}

/// What one read of a topic found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Step {
    /// Records, or something else worth reading again at once.
    Data,
    /// Nothing new.
    #[default]
    Idle,
    /// The topic is gone: removed, and everything it had is read.
    Gone,
}

/// Whether a failed `mmap` is a refusal by the system (an errno: `EPERM`
/// inside a container's namespaces, `EACCES`, `ENODEV`, `ENOMEM`...), after
/// which `read()` is used without a word; anything else (a control page
/// that makes no sense) is worth a warning.
pub fn quiet_mmap_refusal(e: &io::Error) -> bool {
    e.raw_os_error().is_some()
}

impl Reader {
    /// Opens `path` as topic `name` ([`subscribe::open`]) and maps its ring
    /// from the start point when `mmap` says so and the reader is not
    /// lossless. A mapping the system refuses means `read()`; a mapping
    /// refused for another reason is returned beside the reader, for the
    /// caller to warn about ([`quiet_mmap_refusal`]).
    pub fn open(
        name: &str,
        path: &Path,
        start: StartAt,
        lossless: Lossless,
        mmap: bool,
    ) -> Result<(Self, Option<io::Error>)> {
        let Opened {
            topic,
            info,
            expect,
            lossless,
            refused,
        } = subscribe::open(name, path, start, lossless)?;
        let mut warning = None;
        let mapped = if mmap && !lossless {
            match Mapped::new(&topic) {
                Ok(m) => Some(m),
                Err(e) => {
                    if !quiet_mmap_refusal(&e) {
                        warning = Some(e);
                    }
                    None
                }
            }
        } else {
            None
        };
        let reader = Self {
            name: name.to_string(),
            topic,
            info,
            mapped,
            expect,
            lossless,
            refused,
            spliced: None,
        };
        Ok((reader, warning))
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its open file.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// What the topic said when it was opened (ring size, record limit...).
    pub fn info(&self) -> &abi::Info {
        &self.info
    }

    /// Whether it is read through a mapping of its ring.
    pub fn is_mapped(&self) -> bool {
        self.mapped.is_some()
    }

    /// Whether its payloads go out with `splice` ([`Reader::use_splice`]).
    pub fn is_spliced(&self) -> bool {
        self.spliced.is_some()
    }

    /// Switches this reader, before its first read, to moving payloads
    /// into a pipe with `splice` ([`Reader::splice_payloads`]): the
    /// mapping, if any, is dropped and the file goes to bytes mode, where
    /// a `read()` (and so a `splice`) returns the payloads of whole
    /// records and nothing else. False, changing nothing, where that
    /// cannot be: a module older than ABI 7, or a lossless reader (kept on
    /// record-mode `read()`s, so that `EPIPE` can only mean the stall
    /// timeout, never a closed pipe).
    pub fn use_splice(&mut self) -> Result<bool> {
        if self.info.abi_version < abi::ABI_SPLICE || self.lossless {
            return Ok(false);
        }
        let fail = |e: io::Error, what: &str| {
            anyhow::Error::new(e).context(format!("cannot {what} topic {}", self.name))
        };
        self.topic
            .set_flags(0)
            .map_err(|e| fail(e, "switch to bytes mode on"))?;
        let info = self.topic.info().map_err(|e| fail(e, "query"))?;
        self.mapped = None;
        self.spliced = Some(Spliced {
            lost_seen: info.lost,
            gap: info.cursor_seq.saturating_sub(self.expect),
        });
        Ok(true)
    }

    /// For a reader switched by [`Reader::use_splice`]: one `splice` of
    /// what a `read()` would return now, straight from the ring into the
    /// pipe `out` (at most [`SPLICE_LEN`] bytes and the pipe's room). A
    /// record larger than that room goes in pieces over the following
    /// calls, as for `read()`; the batch counts it at its first piece. The
    /// records moved and those lost before them come from the file's
    /// cursor and loss count (`IOC_INFO`) after the move. Waits for room
    /// in `out` if it is a blocking pipe. `EPIPE` means `out` has no
    /// reader; any other error is returned as it is.
    pub fn splice_payloads(&mut self, out: BorrowedFd<'_>) -> io::Result<Batch> {
        let mut batch = Batch::default();
        let Some(Spliced { lost_seen, gap }) = self.spliced else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        match self.topic.splice_out(out, SPLICE_LEN) {
            Ok(0) => {
                // Removed, and everything it had moved (each move before
                // this one was counted after it).
                batch.step = Step::Gone;
                return Ok(batch);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                batch.step = Step::Gone;
                return Ok(batch);
            }
            Ok(_) => batch.step = Step::Data,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(batch),
            Err(e) => return Err(e),
        }
        let info = self.topic.info()?;
        batch.lost = info.lost.saturating_sub(lost_seen).saturating_add(gap);
        batch.records = info
            .cursor_seq
            .saturating_sub(self.expect)
            .saturating_sub(batch.lost);
        self.spliced = Some(Spliced {
            lost_seen: info.lost,
            gap: 0,
        });
        self.expect = info.cursor_seq;
        Ok(batch)
    }

    /// Whether it reads losslessly.
    pub fn lossless(&self) -> bool {
        self.lossless
    }

    /// Asked for lossless where allowed ([`Lossless::IfAllowed`]): the topic
    /// allows lossless readers, but not this user.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// The sequence number expected next.
    pub fn expect(&self) -> u64 {
        self.expect
    }

    /// Reads what is there, at most `limit` records: hands each one to
    /// `on` with the number of records lost just before it. `buf` is the
    /// buffer of `read()` (grown as needed; unused for a mapped topic).
    /// An error of `on` stops the read and is returned (records read with
    /// it from a mapping in the same batch are not handed over). A read
    /// error is returned as the `io::Error` (`EPIPE` on a lossless reader
    /// means the topic's stall timeout made it lossy).
    pub fn read<F>(&mut self, buf: &mut Vec<u8>, limit: u64, mut on: F) -> Result<Batch>
    where
        F: FnMut(&Record<'_>, u64) -> Result<()>,
    {
        let mut batch = Batch::default();
        if limit == 0 {
            return Ok(batch);
        }
        let expect = &mut self.expect;
        let mut failed = None;
        // Hands one record over; false once `on` failed.
        let mut deliver = |header: &RecordHeader, payload: &[u8], batch: &mut Batch| {
            let lost = gap(expect, header.seq);
            batch.records += 1;
            batch.lost += lost;
            if failed.is_none() {
                let record = Record {
                    header: *header,
                    payload,
                };
                if let Err(e) = on(&record, lost) {
                    failed = Some(e);
                }
            }
            failed.is_none()
        };
        if let Some(mapped) = self.mapped.as_mut() {
            let mut unused = Vec::new();
            let progress = mapped
                .read_into(&mut unused, limit, |_, header, payload| {
                    deliver(header, payload, &mut batch);
                })
                .with_context(|| format!("reading topic {} through its mapping", self.name))?;
            if progress.lost > 0 {
                // The kernel counts a mapping reader's loss only when told.
                mapped
                    .report_loss(&self.topic)
                    .with_context(|| format!("reporting loss on topic {}", self.name))?;
            }
            batch.step = step_of(&progress);
        } else {
            let n = match subscribe::read(&self.topic, buf)? {
                subscribe::Step::Records(n) => n,
                subscribe::Step::Idle => return Ok(batch),
                subscribe::Step::Again => {
                    batch.step = Step::Data;
                    return Ok(batch);
                }
                subscribe::Step::Gone => {
                    batch.step = Step::Gone;
                    return Ok(batch);
                }
            };
            for record in crate::device::records(buf.get(..n).unwrap_or_default()) {
                if batch.records == limit || !deliver(&record.header, record.payload, &mut batch) {
                    break;
                }
            }
            batch.step = Step::Data;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(batch),
        }
    }

    /// Reads what is there, at most `limit` records, appending each
    /// record's payload to `out` and nothing else (for a consumer that
    /// wants the payloads as they are: `submsg`'s raw output). Through a
    /// mapping the payloads are copied straight from the ring into `out`
    /// ([`Mapped::read_payloads`]), which is what makes this worth having;
    /// with `read()` they are read into `buf` and appended from there.
    pub fn read_payloads(
        &mut self,
        buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
        limit: u64,
    ) -> Result<Batch> {
        let Some(mapped) = self.mapped.as_mut() else {
            return self.read(buf, limit, |record, _| {
                out.extend_from_slice(record.payload);
                Ok(())
            });
        };
        let mut batch = Batch::default();
        if limit == 0 {
            return Ok(batch);
        }
        let progress = mapped
            .read_payloads(out, limit, |_, _| {})
            .with_context(|| format!("reading topic {} through its mapping", self.name))?;
        // The mapping counts the gaps itself; the next record expected is
        // the mapping's.
        self.expect = mapped.next_seq();
        if progress.lost > 0 {
            mapped
                .report_loss(&self.topic)
                .with_context(|| format!("reporting loss on topic {}", self.name))?;
        }
        batch.records = progress.records;
        batch.lost = progress.lost;
        batch.step = step_of(&progress);
        Ok(batch)
    }

    /// Before sleeping: moves a mapped topic's file cursor to where its
    /// reader is. False when the reader must read again first (always true
    /// for a topic read with `read()`).
    pub fn prepare_wait(&mut self) -> io::Result<bool> {
        match self.mapped.as_mut() {
            Some(m) => m.prepare_wait(&self.topic),
            None => Ok(true),
        }
    }
}

/// The topics read through their mappings that have records now, by the
/// subscriber's tokens. Epoll wakes a mapped reader's file only when the
/// kernel's cursor for that file moves, so a mapped topic that epoll
/// reported ready is read pass after pass, without waiting, until a read
/// finds nothing and [`Reader::prepare_wait`] has moved the file's cursor
/// to the reader (records that came in between keep it on the list). The
/// subscription loops of `submsg` and `baf-record` both keep theirs here.
#[derive(Debug, Default)]
pub struct HotList {
    tokens: Vec<u64>,
    on: HashSet<u64>,
}

impl HotList {
    /// Epoll said topic `token`, read by `reader`, is ready. A mapped
    /// reader goes on the list and `false` is returned; a reader using
    /// `read()` is not kept here, and `true` says: read it now.
    pub fn ready(&mut self, token: u64, reader: &Reader) -> bool {
        if !reader.is_mapped() {
            return true;
        }
        self.keep(token);
        false
    }

    /// Puts `token` on the list (once), to be read in the next pass: a
    /// mapped topic just joined (history may be waiting), or one a pass
    /// that stopped early did not reach.
    pub fn keep(&mut self, token: u64) {
        if self.on.insert(token) {
            self.tokens.push(token);
        }
    }

    /// The topics to read in one pass, in the order they became hot; the
    /// list is empty until [`HotList::after`] (or `keep`) puts them back.
    pub fn take(&mut self) -> Vec<u64> {
        self.on.clear();
        std::mem::take(&mut self.tokens)
    }

    /// Topic `token` was read once in a pass and the read found `step`;
    /// `reader` is the topic's reader, `None` once the caller dropped it.
    /// The topic stays hot while it has records; found idle, it leaves
    /// unless records came in before its file's cursor moved; gone, it
    /// leaves.
    pub fn after(&mut self, token: u64, step: Step, reader: Option<&mut Reader>) -> Result<()> {
        let keep = match (step, reader) {
            (Step::Data, Some(_)) => true,
            (Step::Idle, Some(r)) => !r
                .prepare_wait()
                .with_context(|| format!("cannot seek on topic {}", r.name()))?,
            _ => false,
        };
        if keep {
            self.keep(token);
        }
        Ok(())
    }

    /// Whether no topic is hot (then the subscriber may wait in epoll).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Forgets every topic.
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.on.clear();
    }
}

/// What a read through a mapping found.
fn step_of(progress: &Progress) -> Step {
    if progress.ended {
        Step::Gone
    } else if progress.records > 0 {
        Step::Data
    } else {
        Step::Idle
    }
}

/// The records lost before a record with sequence number `seq` when
/// `expect` was wanted; `expect` then moves past it.
pub fn gap(expect: &mut u64, seq: u64) -> u64 {
    let lost = seq.saturating_sub(*expect);
    *expect = seq.wrapping_add(1);
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_list_keeps_each_topic_once_in_order() {
        let mut hot = HotList::default();
        assert!(hot.is_empty());
        hot.keep(7);
        hot.keep(3);
        hot.keep(7);
        assert_eq!(hot.take(), vec![7, 3]);
        assert!(hot.is_empty(), "a pass takes the list");
        // Without a reader (dropped by the caller) a topic leaves, whatever
        // the read found.
        hot.after(7, Step::Data, None).unwrap();
        hot.after(3, Step::Idle, None).unwrap();
        assert!(hot.is_empty());
        hot.keep(3);
        hot.keep(9);
        hot.clear();
        assert!(hot.take().is_empty());
    }

    #[test]
    fn gaps_are_counted_and_the_expectation_moves() {
        let mut expect = 5;
        assert_eq!(gap(&mut expect, 5), 0);
        assert_eq!(gap(&mut expect, 6), 0);
        assert_eq!(gap(&mut expect, 9), 2);
        assert_eq!(expect, 10);
        // An older record (a seek back) is no loss.
        assert_eq!(gap(&mut expect, 3), 0);
        assert_eq!(expect, 4);
    }

    #[test]
    fn mmap_refusals_by_the_system_are_quiet() {
        assert!(quiet_mmap_refusal(&io::Error::from_raw_os_error(
            libc::EPERM
        )));
        assert!(quiet_mmap_refusal(&io::Error::from_raw_os_error(
            libc::ENODEV
        )));
        assert!(!quiet_mmap_refusal(&io::Error::new(
            io::ErrorKind::InvalidData,
            "bad control page"
        )));
    }
}
