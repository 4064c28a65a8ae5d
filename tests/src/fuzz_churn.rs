//! The fuzz's threads beside a stress round: topic churn in a `fuzz/a/b/c`
//! subtree, opens and closes of the stress topic in every mode, and seeks
//! with every whence.

use super::*;

pub(crate) const CHURN: [&str; 5] = ["fuzz/a", "fuzz/a/b", "fuzz/a/b/c", "fuzz/a/d", "fuzz/e/f"];

fn churn_opts(name: &str, ring: u64) -> CreateOptions {
    let mut o = CreateOptions::defaults();
    o.ring_size = ring;
    o.lossless = name.ends_with('d');
    o
}

pub(crate) fn is_topic(name: &str) -> bool {
    sysfs_dir(name).exists()
}

/// Readers blocked in `read()` on `name` must get what was written, then
/// end of file, once it is removed.
fn eof_round(name: &str, rng: &mut Rng) -> Result<()> {
    let path = control::node_of(name);
    let mut handles = Vec::new();
    for k in 0..3 {
        let t = Topic::open(&path, false, false)?;
        if k == 1 {
            t.set_flags(abi::FLAG_RECORD)?;
        }
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut all = Vec::new();
            let r = loop {
                match get(t.file(), 65536) {
                    Ok(b) if b.is_empty() => break Ok(all),
                    Ok(b) => all.push(b),
                    Err(e) => break Err(e),
                }
            };
            let _ = tx.send(r);
        });
        handles.push((k, rx));
    }
    thread::sleep(Duration::from_millis(rng.range(20, 120)));
    let w = writer(&path)?;
    let n = rng.below(4);
    let mut want = Vec::new();
    for i in 0..n {
        let p = payload(7, i as u32, rand_len(rng, 512));
        put(&w, &p)?;
        want.push(p);
    }
    thread::sleep(Duration::from_millis(rng.range(0, 50)));
    control::remove(name).with_context(|| format!("remove {name}"))?;
    expect_errno((&w).write(b"late"), &[libc::ENODEV], "write after removal")?;
    for (k, rx) in handles {
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| {
                anyhow::anyhow!(
                    "a reader blocked in read() on {name} got no end of file within 10 s of its removal"
                )
            })?
            .with_context(|| format!("reader {k} of {name}"))?;
        let payloads: Vec<u8> = if k == 1 {
            got.iter()
                .flat_map(|b| records(b).map(|r| r.payload.to_vec()).collect::<Vec<_>>())
                .flatten()
                .collect()
        } else {
            got.concat()
        };
        ensure!(
            payloads == want.concat(),
            "reader {k} of {name}: got {} bytes before EOF, want {}",
            payloads.len(),
            want.concat().len()
        );
    }
    Ok(())
}

/// Creation and removal in a subtree with levels, exact results (this
/// thread alone touches these names), node moves for open files, and
/// blocked readers woken by removal.
pub(crate) fn churn(stop: &AtomicBool, mut rng: Rng) -> Result<String> {
    for n in CHURN.iter().rev() {
        let _ = control::remove(n);
    }
    let mut exists: BTreeSet<&str> = BTreeSet::new();
    let (mut creates, mut removes, mut eofs, mut moves) = (0u64, 0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let name = CHURN[rng.below(CHURN.len() as u64) as usize];
        match rng.below(7) {
            0 | 1 => {
                let r = control::create(name, &churn_opts(name, 16384));
                let want = if exists.contains(name) {
                    control::Created::Existed
                } else {
                    control::Created::New
                };
                let got = r.with_context(|| format!("create {name}"))?;
                ensure!(got == want, "create {name}: {got:?}, want {want:?}");
                exists.insert(name);
                let node = control::node_of(name);
                let meta = std::fs::metadata(&node)
                    .with_context(|| format!("the node of {name} ({})", node.display()))?;
                ensure!(
                    meta.file_type().is_char_device(),
                    "{} is not a char device",
                    node.display()
                );
                creates += 1;
            }
            2 => {
                if exists.contains(name) {
                    let r = control::create(name, &churn_opts(name, 32768));
                    match r {
                        Err(e) if anyhow_errno(&e) == Some(libc::EEXIST) => {}
                        other => bail!("create {name} with other settings: {other:?}, want EEXIST"),
                    }
                }
            }
            3 => {
                let r = control::remove(name);
                if exists.remove(name) {
                    r.with_context(|| format!("remove {name}"))?;
                    ensure!(!is_topic(name), "{name} is still in sysfs after removal");
                    removes += 1;
                } else {
                    match r {
                        Err(e) if anyhow_errno(&e) == Some(libc::ENOENT) => {}
                        other => bail!("remove of missing {name}: {other:?}, want ENOENT"),
                    }
                }
            }
            4 => {
                if !exists.contains(name) {
                    control::create(name, &churn_opts(name, 16384))?;
                }
                exists.remove(name);
                eof_round(name, &mut rng)?;
                eofs += 1;
            }
            5 => {
                // An open file of fuzz/a keeps working while its node moves
                // to fuzz/a/@ and back.
                if exists.contains("fuzz/a") && !exists.contains("fuzz/a/b") {
                    let r = Topic::from_file(open_nb(&control::node_of("fuzz/a"), true, false)?);
                    control::create("fuzz/a/b", &churn_opts("fuzz/a/b", 16384))?;
                    exists.insert("fuzz/a/b");
                    let moved = control::node_of("fuzz/a");
                    ensure!(
                        moved.ends_with("fuzz/a/@"),
                        "fuzz/a has a topic below it but its node is {}",
                        moved.display()
                    );
                    put(&writer(&moved)?, b"moved")?;
                    ensure!(
                        get(r.file(), 64)? == b"moved",
                        "the open file lost its topic"
                    );
                    control::remove("fuzz/a/b")?;
                    exists.remove("fuzz/a/b");
                    if !exists.contains("fuzz/a/b/c") && !exists.contains("fuzz/a/d") {
                        let back = control::node_of("fuzz/a");
                        ensure!(
                            back.ends_with("fuzz/a") && back.exists(),
                            "fuzz/a's node did not move back: {}",
                            back.display()
                        );
                        put(&writer(&back)?, b"back")?;
                        ensure!(
                            get(r.file(), 64)? == b"back",
                            "the open file lost its topic"
                        );
                    }
                    moves += 1;
                }
            }
            _ => {
                if exists.contains(name) {
                    let node = control::node_of(name);
                    let r = open_nb(&node, true, false)?;
                    put(&writer(&node)?, b"ping")?;
                    ensure!(get(&r, 64)? == b"ping", "{name}: a write was not read back");
                }
            }
        }
        thread::sleep(Duration::from_millis(rng.range(0, 10)));
    }
    for n in CHURN.iter().rev() {
        if exists.remove(n) {
            control::remove(n)?;
        }
    }
    for n in CHURN {
        ensure!(!is_topic(n), "{n} is left over");
    }
    ensure!(
        creates > 0 && removes > 0 && eofs > 0,
        "too little churn: {creates} creates, {removes} removes, {eofs} EOF rounds"
    );
    Ok(format!(
        "{creates} creates, {removes} removes, {eofs} rounds of blocked readers woken by removal, {moves} node moves"
    ))
}

/// Opens and closes the current stress topic in every mode, maps it, sets
/// flags (a short-lived lossless reader included), never writes.
pub(crate) fn opener(stop: &AtomicBool, mut rng: Rng) -> Result<String> {
    let (mut opens, mut maps, mut lossless) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((path, allows_lossless)) = cur else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        let (rd, wr) = match rng.below(3) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        let f = match OpenOptions::new()
            .read(rd)
            .write(wr)
            .custom_flags(if rng.chance(50) { libc::O_NONBLOCK } else { 0 })
            .open(&path)
        {
            Ok(f) => f,
            // The round ended and the topic went away meanwhile.
            Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENODEV) => continue,
            Err(e) => return Err(e).context("open the stress topic"),
        };
        opens += 1;
        let t = Topic::from_file(f);
        let nb = open_nb(&path, true, false);
        if rd && rng.chance(30) {
            drop(Mapped::new(&t).context("map")?);
            maps += 1;
        }
        if rng.chance(40) {
            let r = t.set_flags(abi::FLAG_LOSSLESS | abi::FLAG_RECORD);
            match (rd, allows_lossless, r) {
                (true, true, Ok(())) => {
                    lossless += 1;
                    // Read a little as a lossless reader, then go.
                    if let Ok(nb) = nb {
                        let nbt = Topic::from_file(nb);
                        if nbt.set_flags(abi::FLAG_LOSSLESS).is_ok() {
                            let _ = get(nbt.file(), 4096);
                        }
                    }
                }
                (false, _, Err(e)) if errno(&e) == libc::EBADF => {}
                (true, false, Err(e)) if errno(&e) == libc::EPERM => {}
                // The round ended and the topic was removed meanwhile.
                (_, _, Err(e)) if errno(&e) == libc::ENODEV => {}
                (_, _, r) => {
                    bail!("FLAG_LOSSLESS (read {rd}, topic allows {allows_lossless}): {r:?}")
                }
            }
        }
        if rng.chance(20) {
            let _ = t.claim_publisher();
        }
        let i = t.info()?;
        ensure!(i.abi_version == abi::ABI_VERSION, "abi {}", i.abi_version);
        if rng.chance(30) {
            thread::sleep(Duration::from_millis(rng.range(1, 20)));
        }
    }
    Ok(format!(
        "{opens} opens, {maps} mappings, {lossless} short-lived lossless readers"
    ))
}

fn seek_raw(fd: i32, whence: u32, reserved: u32, arg: u64) -> io::Result<u64> {
    let mut s = abi::Seek {
        whence,
        reserved,
        arg,
    };
    // SAFETY: IOC_SEEK takes a pointer to a live Seek.
    let rc = unsafe { libc::ioctl(fd, abi::IOC_SEEK as _, &mut s) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(s.arg)
    }
}

/// Seeks the current stress topic with every whence (and bad ones), random
/// arguments; checks where each lands against the topic's bounds before
/// and after, and that the next read starts there.
pub(crate) fn seeker(stop: &AtomicBool, mut rng: Rng) -> Result<String> {
    let mut n = 0u64;
    let mut by = [0u64; 6];
    while !stop.load(Ordering::Relaxed) {
        let cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((path, _)) = cur else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        let Ok(f) = open_nb(&path, true, false) else {
            continue;
        };
        let t = Topic::from_file(f);
        t.set_flags(abi::FLAG_RECORD)?;
        let fd = t.file().as_raw_fd();
        let mut buf = vec![0u8; 4 * abi::record_span(t.info()?.record_max as usize)];
        for _ in 0..50 {
            let b = t.info()?;
            let whence = match rng.below(10) {
                0 => rng.next() as u32 | 4,
                k => (k % 4) as u32,
            };
            let reserved = if rng.chance(5) {
                rng.next() as u32 | 1
            } else {
                0
            };
            let arg = match rng.below(6) {
                0 => rng.next(),
                1 => rng.below(4),
                2 => b.next_seq.saturating_sub(rng.below(200)),
                3 => b.oldest_seq.saturating_sub(rng.below(3)),
                4 => b.next_seq + rng.below(3),
                _ => rng.range(b.oldest_seq, b.next_seq),
            };
            let r = seek_raw(fd, whence, reserved, arg);
            let a = t.info()?;
            let ctx = || {
                format!(
                    "seek whence {whence} reserved {reserved} arg {arg} (oldest {}..{}, next {}..{}): {r:?}",
                    b.oldest_seq, a.oldest_seq, b.next_seq, a.next_seq
                )
            };
            by[whence.min(4) as usize + usize::from(reserved != 0)] += 1;
            n += 1;
            let s = match (&r, whence) {
                _ if reserved != 0 || whence > 3 => {
                    ensure!(
                        matches!(&r, Err(e) if errno(e) == libc::EINVAL),
                        "{}: want EINVAL",
                        ctx()
                    );
                    continue;
                }
                (Err(e), abi::SEEK_SEQ) if errno(e) == libc::ERANGE => {
                    ensure!(arg < a.oldest_seq || arg > b.next_seq, "{}", ctx());
                    continue;
                }
                (Ok(s), abi::SEEK_SEQ) => {
                    ensure!(
                        *s == arg && arg >= b.oldest_seq && arg <= a.next_seq,
                        "{}",
                        ctx()
                    );
                    *s
                }
                (Ok(s), abi::SEEK_OLDEST) => {
                    ensure!((b.oldest_seq..=a.oldest_seq).contains(s), "{}", ctx());
                    *s
                }
                (Ok(s), abi::SEEK_NOW) => {
                    ensure!((b.next_seq..=a.next_seq).contains(s), "{}", ctx());
                    *s
                }
                (Ok(s), _) => {
                    let lo = b.oldest_seq.max(b.next_seq.saturating_sub(arg));
                    let hi = a.oldest_seq.max(a.next_seq.saturating_sub(arg));
                    ensure!((lo..=hi).contains(s), "{}: want {lo}..={hi}", ctx());
                    *s
                }
                (Err(_), _) => bail!("{}", ctx()),
            };
            ensure!(
                a.cursor_seq == s,
                "{}: INFO says the cursor is at {}",
                ctx(),
                a.cursor_seq
            );
            if rng.chance(30) {
                match t.file().read(&mut buf) {
                    Ok(n) => {
                        if let Some(r) = records(&buf[..n]).next() {
                            ensure!(
                                r.header.seq >= s,
                                "{}: then read seq {}",
                                ctx(),
                                r.header.seq
                            );
                        }
                    }
                    Err(e) if errno(&e) == libc::EAGAIN => {}
                    Err(e) => return Err(e).context("read after a seek"),
                }
            }
        }
    }
    ensure!(n > 0, "no seek was made");
    Ok(format!(
        "{n} seeks (oldest/last/seq/now/bad whence/reserved: {by:?})"
    ))
}
