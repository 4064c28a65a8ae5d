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
