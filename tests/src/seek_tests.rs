//! VM tests of positions in the history: `IOC_SEEK` to last:N, seq:S,
//! oldest and now, and seeks that land exactly among many records.

use super::*;

pub(crate) fn history_positions(cx: &Ctx) -> Result<()> {
    let w = writer(&cx.a)?;
    for i in 0..10 {
        put(&w, format!("h{i}").as_bytes())?;
    }
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let next = r.info()?.next_seq;
    let payloads = |recs: Vec<Rec>| -> Vec<String> {
        recs.into_iter()
            .map(|(_, p)| String::from_utf8_lossy(&p).into_owned())
            .collect()
    };
    expect_errno(get(&r, 4096), libc::EAGAIN, "a new reader starts at now")?;
    ensure!(r.seek(abi::SEEK_LAST, 1)? == next - 1, "last:1 position");
    ensure!(
        payloads(drain(&r)?) == ["h9"],
        "last:1 is the retained last value"
    );
    r.seek(abi::SEEK_LAST, 3)?;
    ensure!(payloads(drain(&r)?) == ["h7", "h8", "h9"], "last:3");
    ensure!(r.seek(abi::SEEK_SEQ, next - 5)? == next - 5, "seq position");
    ensure!(
        payloads(drain(&r)?) == ["h5", "h6", "h7", "h8", "h9"],
        "seq:S"
    );
    let oldest = r.info()?.oldest_seq;
    ensure!(r.seek(abi::SEEK_OLDEST, 0)? == oldest, "oldest position");
    ensure!(
        r.seek(abi::SEEK_LAST, u64::MAX)? == oldest,
        "last:huge is the oldest"
    );
    ensure!(r.seek(abi::SEEK_NOW, 0)? == next, "now position");
    expect_errno(get(&r, 4096), libc::EAGAIN, "nothing after now")?;
    expect_errno(
        r.seek(abi::SEEK_SEQ, next + 5),
        libc::ERANGE,
        "seq in the future",
    )?;
    // Push the old records out, then ask for one of them.
    for n in 0..3000u32 {
        put(&w, &pattern(8, n, 200))?;
    }
    expect_errno(r.seek(abi::SEEK_SEQ, next - 5), libc::ERANGE, "evicted seq")?;
    expect_errno(r.seek(9, 0), libc::EINVAL, "unknown whence")?;
    let mut bad = abi::Seek {
        whence: abi::SEEK_NOW,
        reserved: 1,
        arg: 0,
    };
    // SAFETY: a valid Seek for the ioctl.
    let rc = unsafe { libc::ioctl(r.file().as_raw_fd(), abi::IOC_SEEK as _, &mut bad) };
    ensure!(
        rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL),
        "reserved != 0 accepted"
    );
    Ok(())
}

/// Payload of the `k`-th record (seq `k`) of the seek test.
fn seek_payload(k: u64, len: usize) -> Vec<u8> {
    let mut v = k.to_le_bytes().to_vec();
    v.extend((8..len).map(|i| (k as u8).wrapping_mul(7) ^ i as u8));
    v
}

fn seek_len(k: u64, mixed: bool) -> usize {
    if mixed {
        16 + (k % 5) as usize * 8
    } else {
        8
    }
}

/// Checks seq:S, last:N and oldest against the record each lands on.
fn check_seek_positions(r: &Topic, mixed_from: u64) -> Result<usize> {
    let info = r.info()?;
    let (oldest, next) = (info.oldest_seq, info.next_seq);
    let read_one = |want: u64| -> Result<()> {
        // 88 bytes: room for one record of at most 48 bytes (40-byte
        // header), never two (the smallest take 48 bytes each).
        let recs = strict_records(&get(r, 88)?)?;
        ensure!(recs.len() == 1, "{} records, want seq {want}", recs.len());
        let (h, p) = &recs[0];
        ensure!(h.seq == want, "landed on seq {}, want {want}", h.seq);
        ensure!(
            *p == seek_payload(want, seek_len(want, want >= mixed_from)),
            "record {want}: wrong payload"
        );
        Ok(())
    };
    let mut targets = vec![oldest, oldest + 1, oldest + 2, next - 2, next - 1];
    let mut m = oldest - oldest % 64;
    while m < next + 64 {
        targets.extend([m.wrapping_sub(1), m, m + 1]);
        m += 64;
    }
    let mut rng = 0x5eed_u64 ^ next;
    targets.extend((0..200).map(|_| oldest + xorshift(&mut rng) % (next - oldest)));
    targets.retain(|&s| s >= oldest && s < next);
    for &s in &targets {
        let got = r
            .seek(abi::SEEK_SEQ, s)
            .with_context(|| format!("seq:{s}"))?;
        ensure!(got == s, "seq:{s} reported {got}");
        read_one(s).with_context(|| format!("after seq:{s}"))?;
    }
    ensure!(r.seek(abi::SEEK_SEQ, next)? == next, "seq:next");
    expect_errno(get(r, 80), libc::EAGAIN, "after seq:next")?;
    for bad in [next + 1, u64::MAX] {
        expect_errno(
            r.seek(abi::SEEK_SEQ, bad),
            libc::ERANGE,
            "seq in the future",
        )?;
    }
    if oldest > 0 {
        expect_errno(
            r.seek(abi::SEEK_SEQ, oldest - 1),
            libc::ERANGE,
            "seq:oldest-1",
        )?;
    }
    let live = next - oldest;
    for n in [
        1,
        2,
        63,
        64,
        65,
        127,
        128,
        129,
        1000,
        live - 1,
        live,
        live + 1,
        u64::MAX,
    ] {
        let want = next.saturating_sub(n).max(oldest);
        let got = r.seek(abi::SEEK_LAST, n)?;
        ensure!(got == want, "last:{n} reported {got}, want {want}");
        read_one(want).with_context(|| format!("after last:{n}"))?;
    }
    ensure!(r.seek(abi::SEEK_LAST, 0)? == next, "last:0 is now");
    ensure!(r.seek(abi::SEEK_OLDEST, 0)? == oldest, "oldest position");
    read_one(oldest).context("after oldest")?;
    Ok(targets.len())
}

pub(crate) fn seek_by_sequence_lands_exactly(_cx: &Ctx) -> Result<()> {
    const NAME: &str = "seek/many";
    let path = fresh_topic(NAME, 1 << 20)?;
    let r = nb_reader(&path)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&path)?;
    // 20000 records of 8 bytes (48-byte slots): 960000 bytes, all still
    // buffered.
    const FIRST: u64 = 20_000;
    for k in 0..FIRST {
        put(&w, &seek_payload(k, seek_len(k, false)))?;
    }
    let i = r.info()?;
    ensure!(
        i.oldest_seq == 0 && i.next_seq == FIRST,
        "after 20000 records: oldest {} next {}",
        i.oldest_seq,
        i.next_seq
    );
    let n1 = check_seek_positions(&r, u64::MAX).context("a ring not yet full")?;
    // 15000 more of 16 to 48 bytes: the ring wraps, the oldest go.
    for k in FIRST..FIRST + 15_000 {
        put(&w, &seek_payload(k, seek_len(k, true)))?;
    }
    ensure!(r.info()?.oldest_seq > 0, "nothing was evicted");
    let n2 = check_seek_positions(&r, FIRST).context("a wrapped ring")?;
    drop((r, w));
    baf::control::remove(NAME)?;
    println!("  seek: {n1} and {n2} sequence numbers checked");
    Ok(())
}
