//! VM tests of a topic's life: removal with readers, pollers and writers
//! on it, the publisher lock, and churn of topics and opens.

use super::*;

fn new_topic(name: &str) -> Result<PathBuf> {
    let mut o = baf::control::CreateOptions::defaults();
    o.ring_size = 65536;
    baf::control::create(name, &o)?;
    Ok(baf::control::node_of(name))
}

pub(crate) fn removal_wakes_readers_and_pollers(_cx: &Ctx) -> Result<()> {
    let path = new_topic("removal/t")?;
    let r = reader(&path)?;
    let pr = reader(&path)?;
    let w = writer(&path)?;
    put(&w, b"before")?;
    let blocked = thread::spawn(move || -> Result<Vec<u8>> {
        let mut all = Vec::new();
        loop {
            let got = get(&r, 4096)?;
            if got.is_empty() {
                return Ok(all); // end of file: the topic is gone
            }
            all.extend(got);
        }
    });
    let poller = thread::spawn(move || -> Result<i16> {
        let _ = get(&pr, 4096)?; // consume "before"
        let mut p = libc::pollfd {
            fd: pr.file().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 20_000) };
        ensure!(n == 1, "poll timed out on a removed topic");
        Ok(p.revents)
    });
    thread::sleep(Duration::from_millis(300));
    baf::control::remove("removal/t")?;
    let got = blocked
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    ensure!(got == b"before", "the reader lost buffered data: {got:?}");
    let revents = poller
        .join()
        .map_err(|_| anyhow::anyhow!("poller panicked"))??;
    ensure!(revents & libc::POLLHUP != 0, "no POLLHUP: {revents:#x}");
    expect_errno(
        (&w).write(b"after"),
        libc::ENODEV,
        "write to a removed topic",
    )?;
    ensure!(!path.exists(), "the node is still there");
    expect_errno(
        File::open(&path).map(|_| ()),
        libc::ENOENT,
        "open after removal",
    )?;
    // The name can be used again at once.
    let again = new_topic("removal/t")?;
    let r2 = nb_reader(&again)?;
    put(&writer(&again)?, b"new life")?;
    ensure!(
        get(&r2, 64)? == b"new life",
        "the reused name does not work"
    );
    baf::control::remove("removal/t")?;
    Ok(())
}

pub(crate) fn publisher_lock_dies_with_its_holder(cx: &Ctx) -> Result<()> {
    // A reader cannot keep publishers out.
    let reader_only = Topic::open(&cx.a, false, false)?;
    expect_errno(
        reader_only.claim_publisher(),
        libc::EBADF,
        "claim through a read-only file",
    )?;
    let first = Topic::open(&cx.a, true, true)?;
    let second = Topic::open(&cx.a, true, true)?;
    first.claim_publisher()?;
    first.claim_publisher()?; // again by the holder: fine
    expect_errno(second.claim_publisher(), libc::EBUSY, "second publisher")?;
    drop(first);
    second
        .claim_publisher()
        .context("claim after the holder closed")?;
    drop(second);
    // A child process takes it, says so through a pipe, and is killed.
    let fds = pipe()?;
    let path = c_path(&cx.a)?;
    // SAFETY: the child only makes raw syscalls, then waits to be killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: raw syscalls in the child.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            let ok: u8 =
                u8::from(fd >= 0 && libc::ioctl(fd, abi::IOC_CLAIM_PUBLISHER as _, 0) == 0);
            libc::write(fds[1], (&ok as *const u8).cast(), 1);
            libc::pause();
            libc::_exit(0);
        }
    }
    let mut ok = 0u8;
    // SAFETY: reading one byte into a valid buffer.
    unsafe { libc::read(fds[0], (&mut ok as *mut u8).cast(), 1) };
    let third = Topic::open(&cx.a, true, true)?;
    let held = third.claim_publisher();
    // SAFETY: signalling and reaping our own child; closing our pipe.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    ensure!(ok == 1, "the child could not take the lock");
    expect_errno(held, libc::EBUSY, "claim while another process holds it")?;
    third
        .claim_publisher()
        .context("claim after the holder process died")?;
    Ok(())
}

pub(crate) fn churn_of_topics_and_opens(_cx: &Ctx) -> Result<()> {
    // Threads create and remove topics while others open, write, read,
    // poll and close them. Every blocked reader must be woken by removal;
    // nothing may splat (lockdep, KASAN) or leak (checked at rmmod).
    const NAMES: [&str; 3] = ["churn/a", "churn/b", "churn/c"];
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for k in 0..2 {
        let stop = stop.clone();
        handles.push(thread::spawn(move || -> Result<u64> {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = NAMES[(n as usize + k) % NAMES.len()];
                let mut o = baf::control::CreateOptions::defaults();
                o.ring_size = 16384;
                let _ = baf::control::create(name, &o);
                thread::sleep(Duration::from_millis(5));
                let _ = baf::control::remove(name);
                n += 1;
            }
            Ok(n)
        }));
    }
    for k in 0..4 {
        let stop = stop.clone();
        handles.push(thread::spawn(move || -> Result<u64> {
            let mut opened = 0;
            let mut i = k;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let path = baf::control::node_of(NAMES[i % NAMES.len()]);
                let Ok(f) = OpenOptions::new().read(true).write(true).open(&path) else {
                    continue;
                };
                opened += 1;
                if k % 2 == 0 {
                    // Block in read until a record comes or the topic goes.
                    let mut buf = [0u8; 64];
                    let _ = (&f).read(&mut buf);
                } else {
                    let _ = (&f).write(b"churn");
                    let mut p = libc::pollfd {
                        fd: f.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: polling one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, 200) };
                }
            }
            Ok(opened)
        }));
    }
    thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counts = Vec::new();
    for h in handles {
        while !h.is_finished() {
            // Blocked readers wake when their topic goes.
            for name in NAMES {
                let _ = baf::control::remove(name);
            }
            ensure!(
                Instant::now() < deadline,
                "a thread is still blocked after every topic was removed"
            );
            thread::sleep(Duration::from_millis(20));
        }
        counts.push(h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??);
    }
    ensure!(
        counts[..2].iter().all(|&n| n > 5),
        "too few create/remove cycles: {counts:?}"
    );
    ensure!(
        counts[2..].iter().sum::<u64>() > 5,
        "too few opens: {counts:?}"
    );
    println!(
        "  churn: create/remove cycles {:?}, opens {:?}",
        &counts[..2],
        &counts[2..]
    );
    Ok(())
}

// ------------------------------------------------------- ABI 2 tests ----
