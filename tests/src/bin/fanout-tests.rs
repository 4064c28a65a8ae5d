//! Tests of the fanout device ABI, run inside the test VM against the real
//! module: `fanout-tests DEV_A DEV_B DEV_C`, three topics of a module loaded
//! with `ring_size=262144` (and the default record_max, a quarter of it).
//!
//! Each test prints `BAF-TEST ok NAME` or its error and `BAF-TEST FAILED
//! NAME`; `tests/vm.sh` counts those lines. `BAF_TESTS_ONLY=A|B` runs
//! only the tests whose names hold A or B.

use anyhow::{bail, ensure, Context, Result};
use baf::abi::{self, RecordHeader};
use baf::device::{records, Topic};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[path = "../common.rs"]
mod common;
use common::*;

#[path = "../hardening_tests.rs"]
mod hardening;
#[path = "../lossless_tests.rs"]
mod lossless;
#[path = "../mapping.rs"]
mod mapping;
#[path = "../nowait_tests.rs"]
mod nowait;
#[path = "../rw_tests.rs"]
mod rw;
#[path = "../seek_tests.rs"]
mod seek;
#[path = "../topic_tests.rs"]
mod topic;
#[path = "../waiting_tests.rs"]
mod waiting;
#[path = "../writer_tests.rs"]
mod writer_id;
use mapping::{MapReader, Mapping};
#[path = "../stress_tests.rs"]
mod stress;
use stress::Holey;
#[path = "../batch_tests.rs"]
mod batch;
#[path = "../lines_tests.rs"]
mod lines;
#[path = "../mmap_tests.rs"]
mod mmap;
#[path = "../splice_tests.rs"]
mod splice;

const RING: u64 = 262_144;
const RECORD_MAX: usize = (RING / 4) as usize;

struct Ctx {
    a: PathBuf,
    b: PathBuf,
    c: PathBuf,
}

fn reader(path: &Path) -> Result<Topic> {
    Topic::open(path, false, false)
}

fn nb_reader(path: &Path) -> Result<Topic> {
    Topic::open(path, false, true)
}

/// One `read()` into a buffer of `cap` bytes.
fn get(t: &Topic, cap: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; cap];
    let n = t.file().read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

type Rec = (RecordHeader, Vec<u8>);

/// One record-mode `read()`, parsed.
fn get_records(t: &Topic, cap: usize) -> io::Result<Vec<Rec>> {
    let buf = get(t, cap)?;
    Ok(records(&buf)
        .map(|r| (r.header, r.payload.to_vec()))
        .collect())
}

/// Reads a non-blocking record-mode topic until `EAGAIN`.
fn drain(t: &Topic) -> Result<Vec<Rec>> {
    let mut all = Vec::new();
    loop {
        match get_records(t, 1 << 20) {
            Ok(r) if r.is_empty() => bail!("read returned 0 on a live topic"),
            Ok(r) => all.extend(r),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(all),
            Err(e) => return Err(e).context("read"),
        }
    }
}

fn expect_errno<T: std::fmt::Debug>(r: io::Result<T>, errno: i32, what: &str) -> Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        other => bail!(
            "{what}: expected {}, got {other:?}",
            io::Error::from_raw_os_error(errno)
        ),
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Payload that tells its own origin: writer id, counter, length, and bytes
/// derived from all three, so a torn or mixed record cannot pass `check`.
fn pattern(writer: u8, counter: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let head = [writer, 0, 0, 0];
    v.extend_from_slice(&head[..len.min(4)]);
    v.extend(counter.to_le_bytes().iter().take(len.saturating_sub(4)));
    while v.len() < len {
        let i = v.len();
        v.push((i as u8) ^ writer.wrapping_mul(31) ^ (counter as u8));
    }
    v
}

fn parse_pattern(p: &[u8]) -> Result<(u8, u32)> {
    ensure!(p.len() >= 8, "record too short: {}", p.len());
    let writer = p[0];
    let counter = u32::from_le_bytes(p[4..8].try_into()?);
    ensure!(
        p == pattern(writer, counter, p.len()).as_slice(),
        "record of writer {writer} #{counter} ({} bytes) is torn or mixed",
        p.len()
    );
    Ok((writer, counter))
}

// ---------------------------------------------------------------- tests ----

extern "C" fn on_signal(_: libc::c_int) {}

fn set_handler(restart: bool) {
    // SAFETY: installing a handler that does nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// A pipe, for a forked child to report through: `[read end, write end]`.
fn pipe() -> Result<[i32; 2]> {
    let mut fds = [0; 2];
    // SAFETY: creating a pipe into a valid array.
    ensure!(unsafe { libc::pipe(fds.as_mut_ptr()) } == 0, "pipe");
    Ok(fds)
}

/// `path` for raw syscalls in a forked child (which must not allocate).
fn c_path(path: &Path) -> Result<std::ffi::CString> {
    Ok(std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?)
}

fn errno_now() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a system value.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Parses one record-mode read buffer strictly: whole records, zero
/// padding, nothing left over.
fn strict_records(buf: &[u8]) -> Result<Vec<Rec>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let h = RecordHeader::from_bytes(rest).context("a partial header in a read")?;
        let len = h.len as usize;
        let span = abi::record_span(len);
        ensure!(
            len > 0 && span <= rest.len(),
            "record of {len} bytes with {} left in the buffer",
            rest.len()
        );
        ensure!(h.flags == 0, "record flags {:#x}", h.flags);
        let pad = &rest[abi::RECORD_HEADER_SIZE + len..span];
        ensure!(pad.iter().all(|&b| b == 0), "non-zero padding {pad:?}");
        out.push((
            h,
            rest[abi::RECORD_HEADER_SIZE..abi::RECORD_HEADER_SIZE + len].to_vec(),
        ));
        rest = &rest[span..];
    }
    Ok(out)
}

/// A named topic made fresh (removed first if a failed run left it).
fn fresh_topic(name: &str, ring_size: u64) -> Result<PathBuf> {
    let _ = baf::control::remove(name);
    let mut o = baf::control::CreateOptions::defaults();
    o.ring_size = ring_size;
    baf::control::create(name, &o)?;
    Ok(baf::control::node_of(name))
}

/// A random stress length: mostly small, sometimes up to `max` (and
/// sometimes exactly `max`).
fn stress_len(rng: &mut u64, max: usize) -> usize {
    let r = xorshift(rng);
    match r % 20 {
        0 => max,
        1 | 2 => 16 + (r >> 8) as usize % (max - 15),
        3..=8 => 16 + (r >> 8) as usize % 1024,
        _ => 16 + (r >> 8) as usize % 128,
    }
}

/// A batch frame: header (`len`, `flags`, junk in the fields the kernel
/// fills in), payload, junk padding.
fn frame(len: u32, payload: &[u8], flags: u32) -> Vec<u8> {
    let mut v = RecordHeader {
        len,
        flags,
        seq: 0xdead_beef,
        timestamp_ns: 77,
        pid: 4242,
        uid: 4242,
        writer: 4242,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(payload);
    let span = abi::record_span(payload.len());
    v.resize(span, 0xee);
    v
}

type Test = fn(&Ctx) -> Result<()>;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [a, b, c] = <[PathBuf; 3]>::try_from(args).unwrap_or_else(|_| {
        eprintln!("usage: fanout-tests DEV_A DEV_B DEV_C");
        std::process::exit(2)
    });
    let cx = Ctx { a, b, c };
    let tests: &[(&str, Test)] = &[
        (
            "plain reads return whole records",
            rw::plain_reads_return_whole_records,
        ),
        (
            "a record larger than the buffer comes in pieces",
            rw::oversized_record_comes_in_pieces,
        ),
        (
            "a zero-length write is a no-op",
            rw::zero_length_write_is_a_noop,
        ),
        (
            "a large write is split into record_max records",
            rw::large_write_is_split_into_records,
        ),
        (
            "an 8 MiB write is taken whole, newest records kept",
            rw::huge_write_is_taken_whole,
        ),
        ("odd sizes round-trip exactly", rw::odd_sizes_round_trip),
        (
            "concurrent writers: no torn or mixed record",
            rw::concurrent_writers_never_tear,
        ),
        (
            "a split write stays together beside small writers",
            rw::split_write_stays_together_beside_small_writers,
        ),
        (
            "4 readers each get every record in order",
            rw::every_reader_gets_every_record_in_order,
        ),
        (
            "a lapped reader resumes with its exact loss",
            rw::lapped_reader_resumes_with_exact_loss,
        ),
        (
            "strict mode: EPIPE once per overrun",
            rw::strict_mode_fails_once_with_epipe,
        ),
        (
            "record headers: pid, uid, seq, time; unforgeable",
            rw::record_headers_carry_provenance,
        ),
        (
            "writer identity: the writer's pidfd inode, per process",
            writer_id::writer_is_the_pidfd_inode,
        ),
        (
            "writer identity: a reused pid is told apart from the old writer",
            writer_id::a_reused_pid_is_told_apart,
        ),
        (
            "a child pid namespace reads an exited writer's reused pid as 0",
            writer_id::a_reused_pid_reads_as_0_in_a_namespace,
        ),
        (
            "ABI 3 programs: 32-byte headers in reads and batch frames",
            writer_id::abi3_programs_keep_32_byte_headers,
        ),
        (
            "record mode: runs copied whole match record-by-record reads",
            writer_id::record_runs_match_record_by_record_reads,
        ),
        (
            "RWF_NOWAIT and io_uring: EAGAIN instead of sleeping, blocking reads wait",
            nowait::rwf_nowait_and_io_uring,
        ),
        (
            "record mode: too small a buffer is EMSGSIZE, loses nothing",
            rw::record_mode_refuses_too_small_buffers,
        ),
        (
            "history: last:N, seq:S, oldest, now, ERANGE",
            seek::history_positions,
        ),
        (
            "O_NONBLOCK read gives EAGAIN",
            waiting::nonblocking_read_gives_eagain,
        ),
        (
            "a blocking read is woken by a write",
            waiting::blocking_read_is_woken_by_write,
        ),
        (
            "a signal interrupts a blocking read cleanly",
            waiting::signal_interrupts_blocking_read,
        ),
        (
            "poll and epoll: 24 waiters all woken",
            waiting::poll_and_epoll_wake_every_waiter,
        ),
        (
            "wake threshold (ABI 8): poll, epoll and blocking reads wait for it, non-blocking reads do not",
            waiting::wake_threshold_holds_poll_and_blocking_reads,
        ),
        (
            "every write reaches sleeping readers: blocking, poll, epoll (level and edge), thresholded",
            waiting::writes_always_reach_sleeping_readers,
        ),
        (
            "bad user pointers give EFAULT and change nothing",
            rw::bad_user_pointers_give_efault,
        ),
        (
            "fdinfo and INFO show the cursor and mode",
            rw::fdinfo_shows_the_cursor,
        ),
        (
            "pid/uid are shown in the reader's namespaces",
            rw::pid_and_uid_follow_the_readers_namespaces,
        ),
        (
            "removal wakes readers (EOF after the buffered data) and pollers (POLLHUP), writers get ENODEV, the name is reusable",
            topic::removal_wakes_readers_and_pollers,
        ),
        (
            "the publisher lock has one holder and dies with its file or process",
            topic::publisher_lock_dies_with_its_holder,
        ),
        (
            "churn: create/remove/open/read/poll/close from 6 threads, all woken",
            topic::churn_of_topics_and_opens,
        ),
        (
            "stress: 4 writers, 3 readers, a 16 KiB ring: nothing torn, delivered + lost = written",
            stress::stress_small_ring_many_writers_and_readers,
        ),
        (
            "a write that faults mid-record publishes nothing torn; seqs stay dense",
            stress::faulting_write_publishes_nothing_torn,
        ),
        (
            "batch writes: frames become records; a bad frame stops the batch with its errno",
            batch::batch_writes,
        ),
        (
            "mmap consumer under lapping: nothing torn, every gap counted",
            mmap::mapped_consumer_under_lapping,
        ),
        (
            "mmap is read-only (EPERM, EACCES) and checks offset and length (EINVAL)",
            mmap::mmap_is_read_only_and_checked,
        ),
        (
            "a mapping outlives the topic's removal and shows CTRL_FLAG_REMOVED",
            mmap::mapping_outlives_topic_removal,
        ),
        (
            "mmap is EPERM in other pid or user namespaces; read() works there",
            mmap::mmap_refused_in_other_namespaces,
        ),
        (
            "seek by seq, last:N, oldest land exactly on 35000 records",
            seek::seek_by_sequence_lands_exactly,
        ),
        (
            "a batch write wakes a blocked reader once, with the whole batch",
            batch::batch_write_wakes_a_blocked_reader_once,
        ),
        (
            "line mode: writes cut at each delimiter (across 64 KiB blocks, at the record limit, at the write's end); old and new readers agree; bad flags refused",
            lines::line_mode_cuts_writes_into_lines,
        ),
        (
            "line mode: a fault publishes the whole lines before it; lines longer than a block stay one record",
            lines::line_mode_faults_and_long_lines,
        ),
        (
            "splice and sendfile into a topic: a write() of what the pipe holds, in each mode",
            splice::splice_into_a_topic_is_a_write,
        ),
        (
            "whole lines only (ABI 9): write(), splice and sendfile take whole lines and leave the cut one; a long line refused; bad flags refused",
            splice::whole_lines_leave_the_cut_line,
        ),
        (
            "splice and sendfile out of a topic: a read() into the pipe (bytes and record mode, a record larger than the pipe, a lapped reader)",
            splice::splice_out_of_a_topic_is_a_read,
        ),
        (
            "splice out of a topic under a writer that laps it: whole payloads in order, at every alignment and page boundary, and the loss counted",
            splice::splice_out_under_a_writer,
        ),
        (
            "lossless: only with the owner's consent (EPERM, EBADF); ABI 2 structs still work",
            lossless::lossless_needs_the_owners_consent,
        ),
        (
            "lossless: the writer waits (EAGAIN, partial counts), seeks and syncs hold",
            lossless::a_lossless_reader_holds_the_writer,
        ),
        (
            "lossless: a SIGSTOPped reader blocks the writer; SIGCONT or SIGKILL releases it",
            lossless::a_stopped_lossless_process_blocks_the_writer,
        ),
        (
            "lossless: signals and removal release a blocked writer (EINTR, partial, ENODEV)",
            lossless::signals_and_removal_release_a_blocked_writer,
        ),
        (
            "lossless: poll and epoll POLLOUT follow the lossless readers",
            lossless::pollout_follows_the_lossless_readers,
        ),
        (
            "lossless: the stall timeout demotes a stuck reader (EPIPE once), not a slow one",
            lossless::the_stall_timeout_demotes_a_stuck_reader,
        ),
        (
            "lossless: IOC_WAIT_READERS waits for lossless readers (EAGAIN, ENODEV, EPERM)",
            lossless::a_publisher_waits_for_its_readers,
        ),
        (
            "lossless: 12000 records, plain and batched, byte-exact to two lossless readers",
            lossless::lossless_stress_is_byte_exact,
        ),
        (
            "stall bound: a blocking, an O_NONBLOCK and a poll-driven writer resume after one stall timeout; stuck readers demoted together, never lossless again",
            hardening::the_stall_bound_holds_for_every_writer,
        ),
        (
            "FLAG_LOSSLESS only for the topic's owner, group or CAP_SYS_ADMIN; no stall timeout only for CAP_SYS_ADMIN; at most LOSSLESS_MAX",
            hardening::lossless_only_where_the_owner_allows,
        ),
        (
            "writes racing removal: ENODEV, and every write reported done is read before end of file",
            hardening::writes_racing_removal_fail_with_enodev,
        ),
        (
            "seek back + MAPPED_SYNC cannot count the same loss twice; a refused sync moves no hold",
            hardening::seek_and_sync_cannot_inflate_loss,
        ),
        (
            "a split read cannot slip into record mode (raw bytes in a record-mode read)",
            hardening::split_and_record_reads_do_not_mix,
        ),
        (
            "1-, 7-, 100- and 3000-byte readers of a busy topic never see a torn record",
            hardening::small_buffer_readers_never_see_a_torn_record,
        ),
        (
            "a mapped reader lapped over padding sleeps, then counts its loss exactly",
            hardening::a_mapped_reader_lapped_over_padding,
        ),
        (
            "open() of a topic does not wait while a 64 MiB ring is allocated or freed",
            hardening::opens_do_not_wait_for_a_big_ring,
        ),
    ];
    // `BAF_TESTS_ONLY=TEXT|TEXT...` runs only the tests whose names hold
    // one of the TEXTs (to check tests against a mutated module by hand).
    let only = std::env::var("BAF_TESTS_ONLY").unwrap_or_default();
    let wanted = |n: &str| only.split('|').any(|w| n.contains(w));
    for (name, test) in tests.iter().filter(|(n, _)| wanted(n)) {
        match test(&cx) {
            Ok(()) => println!("BAF-TEST ok {name}"),
            Err(e) => println!("  {e:#}\nBAF-TEST FAILED {name}"),
        }
    }
}
