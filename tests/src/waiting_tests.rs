//! VM tests of waiting: `O_NONBLOCK`, blocking reads woken by a write or
//! interrupted by a signal, and poll and epoll waking every waiter.

use super::*;

pub(crate) fn nonblocking_read_gives_eagain(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.a)?;
    expect_errno(get(&r, 4096), libc::EAGAIN, "O_NONBLOCK read")
}

pub(crate) fn blocking_read_is_woken_by_write(cx: &Ctx) -> Result<()> {
    let r = reader(&cx.a)?;
    let t = thread::spawn(move || get(&r, 4096));
    thread::sleep(Duration::from_millis(300));
    ensure!(!t.is_finished(), "read did not block");
    put(&writer(&cx.a)?, b"wake")?;
    let got = t.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    ensure!(got == b"wake", "got {got:?}");
    Ok(())
}

pub(crate) fn signal_interrupts_blocking_read(cx: &Ctx) -> Result<()> {
    use std::os::unix::thread::JoinHandleExt;
    set_handler(false);
    let r = reader(&cx.a)?;
    let t = thread::spawn(move || get(&r, 4096));
    thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own live thread.
    unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGUSR1) };
    let res = t.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
    expect_errno(res, libc::EINTR, "read interrupted without SA_RESTART")?;

    // With SA_RESTART the read restarts and still gets the next record.
    set_handler(true);
    let r = reader(&cx.a)?;
    let t = thread::spawn(move || get(&r, 4096));
    thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGUSR1) };
    thread::sleep(Duration::from_millis(300));
    ensure!(!t.is_finished(), "SA_RESTART read returned early");
    put(&writer(&cx.a)?, b"after-signal")?;
    let got = t.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    ensure!(got == b"after-signal", "restarted read got {got:?}");
    Ok(())
}

pub(crate) fn poll_and_epoll_wake_every_waiter(cx: &Ctx) -> Result<()> {
    const EACH: usize = 8;
    let shared = Arc::new(reader(&cx.a)?);
    let barrier = Arc::new(Barrier::new(3 * EACH + 1));
    let mut handles = Vec::new();
    for i in 0..3 * EACH {
        let (path, shared, barrier) = (cx.a.clone(), shared.clone(), barrier.clone());
        handles.push(thread::spawn(move || -> Result<()> {
            let own = reader(&path)?;
            let fd = match i / EACH {
                0 => own.file().as_raw_fd(),
                _ => shared.file().as_raw_fd(),
            };
            barrier.wait();
            if i / EACH == 2 {
                // epoll, one instance per waiter, on the shared file
                // SAFETY: plain epoll syscalls on fds we own.
                let ep = unsafe { libc::epoll_create1(0) };
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: 1,
                };
                // SAFETY: as above.
                ensure!(
                    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } == 0,
                    "epoll_ctl"
                );
                let mut out = [libc::epoll_event { events: 0, u64: 0 }];
                // SAFETY: as above.
                let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 1, 10_000) };
                // SAFETY: closing our epoll fd.
                unsafe { libc::close(ep) };
                ensure!(
                    n == 1 && out[0].events & libc::EPOLLIN as u32 != 0,
                    "epoll waiter {i} not woken"
                );
            } else {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: polling one valid pollfd.
                let n = unsafe { libc::poll(&mut p, 1, 10_000) };
                ensure!(
                    n == 1 && p.revents & libc::POLLIN != 0,
                    "poll waiter {i} not woken"
                );
            }
            Ok(())
        }));
    }
    barrier.wait();
    thread::sleep(Duration::from_millis(500));
    put(&writer(&cx.a)?, b"for everyone")?;
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("waiter panicked"))??;
    }
    // Readiness without waiting: a writer is always writable, an idle
    // reader is not readable.
    let w = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&cx.a)?;
    let mut p = libc::pollfd {
        fd: w.as_raw_fd(),
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: polling one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 0) };
    ensure!(
        p.revents == libc::POLLOUT,
        "fresh read-write file: revents {:#x}",
        p.revents
    );
    Ok(())
}

/// An epoll instance watching `fd` for `EPOLLIN` (`et`: edge-triggered).
struct Epoll(i32);

impl Epoll {
    fn new(fd: i32, et: bool) -> Result<Self> {
        // SAFETY: a plain syscall; the fd is checked.
        let ep = unsafe { libc::epoll_create1(0) };
        ensure!(ep >= 0, "epoll_create1: {}", io::Error::last_os_error());
        let this = Self(ep);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32 | if et { libc::EPOLLET as u32 } else { 0 },
            u64: 1,
        };
        // SAFETY: both fds are open; `ev` is a valid event.
        let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        ensure!(rc == 0, "epoll_ctl: {}", io::Error::last_os_error());
        Ok(this)
    }

    /// Whether an event came within `ms` milliseconds.
    fn wait(&self, ms: i32) -> bool {
        let mut out = [libc::epoll_event { events: 0, u64: 0 }];
        // SAFETY: `out` has room for the one event asked for.
        unsafe { libc::epoll_wait(self.0, out.as_mut_ptr(), 1, ms) == 1 }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: closing the epoll fd this value owns.
        unsafe { libc::close(self.0) };
    }
}

pub(crate) fn wake_threshold_holds_poll_and_blocking_reads(cx: &Ctx) -> Result<()> {
    const PAYLOAD: [u8; 100] = [0x61; 100];
    let span = abi::record_span(PAYLOAD.len()) as u32;
    let w = writer(&cx.a)?;
    let r = reader(&cx.a)?;
    let fd = r.file().as_raw_fd();
    // The threshold in effect: 7 records' worth, 0 is 1, past half the ring
    // is half the ring.
    ensure!(r.set_lowat(0)? == 1, "IOC_SET_LOWAT 0 is not 1");
    let half = (RING / 2) as u32;
    ensure!(
        r.set_lowat(u32::MAX)? == half,
        "IOC_SET_LOWAT max is not half the ring"
    );
    ensure!(
        r.set_lowat(7 * span - 1)? == 7 * span - 1,
        "IOC_SET_LOWAT refused a value"
    );
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    let want = format!("fanout_lowat:\t{}\n", 7 * span - 1);
    ensure!(text.contains(&want), "fdinfo lacks {want:?}:\n{text}");
    expect_errno(
        Topic::from_file(writer(&cx.a)?).set_lowat(10),
        libc::EBADF,
        "IOC_SET_LOWAT on a write-only file",
    )?;
    let ep = Epoll::new(fd, false)?;

    // Below the threshold: not readable, to poll and to epoll; a read still
    // returns what is there.
    for _ in 0..6 {
        put(&w, &PAYLOAD)?;
    }
    ensure!(
        !poll_in(fd, 300),
        "readable with 6 records below the threshold"
    );
    ensure!(
        !ep.wait(0),
        "epoll ready with 6 records below the threshold"
    );
    put(&w, &PAYLOAD)?;
    ensure!(poll_in(fd, 0), "not readable at the threshold");
    ensure!(ep.wait(0), "epoll not ready at the threshold");
    ensure!(
        get(&r, 1 << 16)?.len() == 7 * PAYLOAD.len(),
        "7 records in one read"
    );
    put(&w, &PAYLOAD)?;
    ensure!(
        get(&r, 4096)?.len() == PAYLOAD.len(),
        "a read below the threshold"
    );
    let nb = nb_reader(&cx.a)?;
    nb.set_lowat(1 << 16)?;
    put(&w, b"x")?;
    ensure!(
        get(&nb, 4096)? == b"x",
        "a non-blocking read ignores the threshold"
    );
    ensure!(get(&r, 4096)? == b"x", "the record below the threshold");

    // A blocking read that finds nothing sleeps until the threshold is
    // reached, then gets all of it in one read.
    let t = thread::spawn(move || get(&r, 1 << 16).map(|b| (b, r)));
    // Asleep in `read()` before anything comes.
    thread::sleep(Duration::from_millis(300));
    ensure!(!t.is_finished(), "a blocking read of nothing returned");
    put(&w, b"x")?;
    for _ in 0..6 {
        put(&w, &PAYLOAD)?;
    }
    thread::sleep(Duration::from_millis(300));
    ensure!(!t.is_finished(), "a blocking read woke below the threshold");
    put(&w, &PAYLOAD)?;
    let (got, r) = join_within(t, 10)?;
    ensure!(
        got.len() == 1 + 7 * PAYLOAD.len(),
        "woken read got {} bytes",
        got.len()
    );

    // Lowering the threshold wakes a reader sleeping with the old one.
    let t = thread::spawn(move || get(&r, 1 << 16).map(|b| (b, r)));
    thread::sleep(Duration::from_millis(300));
    put(&w, &PAYLOAD)?;
    thread::sleep(Duration::from_millis(300));
    ensure!(!t.is_finished(), "a blocking read woke below the threshold");
    lower_and_join(t, fd, PAYLOAD.len())?;

    // Edge-triggered epoll after a partial read: the next write wakes it.
    let et = nb_reader(&cx.a)?;
    let ep = Epoll::new(et.file().as_raw_fd(), true)?;
    put(&w, b"one")?;
    put(&w, b"two")?;
    ensure!(ep.wait(5000), "edge-triggered epoll not woken");
    ensure!(get(&et, 3)? == b"one", "the first of two records");
    ensure!(
        !ep.wait(0),
        "edge-triggered epoll ready again with no new write"
    );
    put(&w, b"three")?;
    ensure!(
        ep.wait(5000),
        "edge-triggered epoll not woken after a partial read"
    );
    Ok(())
}

/// Joins the reader thread `t` if it returns within `secs` seconds; a
/// reader never woken fails the test instead of hanging it.
fn join_within<T>(t: thread::JoinHandle<io::Result<T>>, secs: u64) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !t.is_finished() {
        ensure!(
            Instant::now() < deadline,
            "a blocking reader not woken in {secs} s"
        );
        thread::sleep(Duration::from_millis(5));
    }
    Ok(t.join().map_err(|_| anyhow::anyhow!("reader panicked"))??)
}

/// Lowers the wake threshold of the open file behind `fd` (owned by the
/// reader `t` sleeping in `read()`) to 1 and checks that `t` then returns
/// `len` bytes.
fn lower_and_join(
    t: thread::JoinHandle<io::Result<(Vec<u8>, Topic)>>,
    fd: i32,
    len: usize,
) -> Result<()> {
    let one: u32 = 1;
    // SAFETY: `fd` is open (the reader thread owns it until it returns) and
    // the argument is a `u32`, as `IOC_SET_LOWAT` takes.
    let rc = unsafe { libc::ioctl(fd, abi::IOC_SET_LOWAT as _, &one) };
    ensure!(rc == 1, "IOC_SET_LOWAT 1: {rc}");
    let (got, _r) = join_within(t, 10)?;
    ensure!(got.len() == len, "woken read got {} bytes", got.len());
    Ok(())
}

/// The wake threshold of the [`Wait::Threshold`] reader.
const LOWAT: u64 = 4096;

/// How a reader of [`writes_always_reach_sleeping_readers`] waits.
#[derive(Clone, Copy, Debug)]
enum Wait {
    Blocking,
    Poll,
    EpollLevel,
    EpollEdge,
    Threshold,
}

pub(crate) fn writes_always_reach_sleeping_readers(cx: &Ctx) -> Result<()> {
    // Writers skip the readers' wakeup when no reader asked for one since
    // the last: every way of waiting must still be woken by every write.
    // Each way alone first (one reader's wish cannot then cover for
    // another's), then all together.
    let waits = [
        Wait::Blocking,
        Wait::Poll,
        Wait::EpollLevel,
        Wait::EpollEdge,
        Wait::Threshold,
    ];
    for how in waits {
        readers_keep_up(cx, &[how], 500, 4000)?;
    }
    readers_keep_up(cx, &waits, 1500, 20_000)
}

/// One reader per entry of `waits` reads every record of a writer that
/// first writes `lockstep` records one at a time, each once the readers
/// have the one before (so each is asleep when it comes), then `free`
/// records as fast as it can. A reader not woken with records unread (for
/// the thresholded one, 4 KiB of them) within 10 s fails.
fn readers_keep_up(cx: &Ctx, waits: &[Wait], lockstep: u64, free: u64) -> Result<()> {
    let seen: Arc<Vec<AtomicU64>> = Arc::new(waits.iter().map(|_| AtomicU64::new(0)).collect());
    let total = lockstep + free;
    let start = Arc::new(Barrier::new(waits.len() + 1));
    let mut handles = Vec::new();
    for (i, &how) in waits.iter().enumerate() {
        let t = match how {
            Wait::Blocking => reader(&cx.a)?,
            _ => nb_reader(&cx.a)?,
        };
        if matches!(how, Wait::Threshold) {
            t.set_lowat(LOWAT as u32)?;
        }
        let (seen, start) = (seen.clone(), start.clone());
        handles.push(thread::spawn(move || -> Result<()> {
            let fd = t.file().as_raw_fd();
            let ep = match how {
                Wait::EpollLevel => Some(Epoll::new(fd, false)?),
                Wait::EpollEdge => Some(Epoll::new(fd, true)?),
                _ => None,
            };
            start.wait();
            let mut got = 0u64;
            let deadline = Instant::now() + Duration::from_secs(120);
            while got < total {
                ensure!(
                    Instant::now() < deadline,
                    "{how:?}: {got} of {total} after 120 s"
                );
                // Records are 8 bytes: the record number, little-endian.
                match get(&t, 1 << 16) {
                    Ok(b) => {
                        ensure!(
                            b.len() % 8 == 0 && !b.is_empty(),
                            "{how:?}: read {}",
                            b.len()
                        );
                        for c in b.chunks(8) {
                            let n = u64::from_le_bytes(c.try_into().unwrap_or_default());
                            ensure!(n >= got, "{how:?}: record {n} after {got}");
                            got = n + 1;
                        }
                        seen[i].store(got, Ordering::Release);
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                    Err(e) => return Err(e).context("read"),
                }
                // Nothing more to read: wait as this reader does; a missed
                // wakeup shows as a timeout.
                // The thresholded reader waits at the end of the run with
                // less than its threshold unread: not for long.
                let ms = if matches!(how, Wait::Threshold) {
                    2000
                } else {
                    10_000
                };
                let woken = match &ep {
                    Some(ep) => ep.wait(ms),
                    None => poll_in(fd, ms),
                };
                let i = t.info()?;
                let unread = i.next_seq - i.cursor_seq;
                let enough = match how {
                    Wait::Threshold => unread * abi::record_span(8) as u64 >= LOWAT,
                    _ => unread > 0,
                };
                ensure!(
                    woken || !enough || got == total,
                    "{how:?}: not woken in {ms} ms with {unread} records unread"
                );
            }
            Ok(())
        }));
    }
    let w = writer(&cx.a)?;
    start.wait();
    for n in 0..total {
        put(&w, &n.to_le_bytes())?;
        if n < lockstep {
            let deadline = Instant::now() + Duration::from_secs(15);
            // Wait until every reader but the thresholded one has the
            // record (it waits for 4 KiB).
            while seen
                .iter()
                .zip(waits)
                .any(|(s, how)| !matches!(how, Wait::Threshold) && s.load(Ordering::Acquire) <= n)
            {
                ensure!(Instant::now() < deadline, "readers stuck at record {n}");
                thread::yield_now();
            }
        }
    }
    // A blocking reader that missed the last wakeup would sleep for ever:
    // wait for all of them with a deadline before joining.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.iter().any(|s| s.load(Ordering::Acquire) < total) {
        // A reader that failed reports why.
        if let Some(k) = handles.iter().position(|h| h.is_finished()) {
            handles
                .swap_remove(k)
                .join()
                .map_err(|_| anyhow::anyhow!("reader panicked"))??;
            continue;
        }
        ensure!(
            Instant::now() < deadline,
            "readers stuck: {:?} of {total}",
            seen.iter()
                .map(|s| s.load(Ordering::Acquire))
                .collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(10));
    }
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    }
    Ok(())
}
