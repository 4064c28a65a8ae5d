//! VM tests of non-blocking I/O the kernel starts itself: `RWF_NOWAIT` on a
//! blocking file, and io_uring (which tries each request with `IOCB_NOWAIT`
//! first, so the module's `FMODE_NOWAIT` paths must give `EAGAIN` rather
//! than sleep, and then punts to a worker that may block).

use super::*;
use io_uring::{opcode, types, IoUring};

/// Waits up to 5 s for `n` completions; returns (user_data, result) pairs.
fn completions(ring: &mut IoUring, n: usize) -> Vec<(u64, i32)> {
    let mut got = Vec::new();
    for _ in 0..500 {
        got.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        if got.len() >= n {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    got
}

pub(crate) fn rwf_nowait_and_io_uring(_cx: &Ctx) -> Result<()> {
    let path = fresh_topic("nowait", 1 << 16)?;
    let r = reader(&path)?;
    let rfd = r.file().as_raw_fd();
    let w = writer(&path)?;
    let mut buf = vec![0u8; 4096];

    // RWF_NOWAIT on a blocking reader with nothing to read: EAGAIN, at once.
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let t0 = Instant::now();
    // SAFETY: one valid iovec over `buf`, which outlives the call.
    let rc = unsafe { libc::preadv2(rfd, &iov, 1, -1, libc::RWF_NOWAIT) };
    let errno = errno_now();
    ensure!(
        rc == -1 && errno == libc::EAGAIN && t0.elapsed() < Duration::from_secs(2),
        "RWF_NOWAIT read of an empty topic: {rc}, errno {errno}"
    );

    let mut ring = IoUring::new(8).context("io_uring_setup")?;
    // The same through io_uring: a NOWAIT read completes with -EAGAIN.
    let nowait = opcode::Read::new(types::Fd(rfd), buf.as_mut_ptr(), buf.len() as u32)
        .offset(u64::MAX)
        .rw_flags(libc::RWF_NOWAIT)
        .build()
        .user_data(1);
    // SAFETY: `buf` outlives the request (we wait for its completion).
    unsafe { ring.submission().push(&nowait) }.context("push")?;
    ring.submit().context("io_uring_enter")?;
    let c = completions(&mut ring, 1);
    ensure!(c == [(1, -libc::EAGAIN)], "io_uring RWF_NOWAIT read: {c:?}");

    // A plain read waits for data (it must not complete now)...
    let read = opcode::Read::new(types::Fd(rfd), buf.as_mut_ptr(), buf.len() as u32)
        .offset(u64::MAX)
        .build()
        .user_data(2);
    // SAFETY: as above; `buf` is not touched until the read completes.
    unsafe { ring.submission().push(&read) }.context("push")?;
    ring.submit().context("io_uring_enter")?;
    thread::sleep(Duration::from_millis(300));
    let early: Vec<_> = ring.completion().map(|c| c.result()).collect();
    ensure!(
        early.is_empty(),
        "a read of an empty topic completed: {early:?}"
    );
    // ...and an io_uring write publishes a record that completes it.
    let msg = b"through io_uring";
    let write = opcode::Write::new(types::Fd(w.as_raw_fd()), msg.as_ptr(), msg.len() as u32)
        .offset(u64::MAX)
        .build()
        .user_data(3);
    // SAFETY: `msg` is a static byte string.
    unsafe { ring.submission().push(&write) }.context("push")?;
    ring.submit().context("io_uring_enter")?;
    let mut c = completions(&mut ring, 2);
    c.sort_unstable();
    let n = msg.len() as i32;
    ensure!(c == [(2, n), (3, n)], "io_uring read and write: {c:?}");
    ensure!(&buf[..msg.len()] == msg, "read {:?}", &buf[..msg.len()]);
    Ok(())
}
