//! VM tests of line mode (`FLAG_LINES`, ABI 6): the kernel cuts writes
//! into records at each delimiter, across its 64 KiB blocks, at the record
//! limit, and at the end of each write; old and new readers (record mode
//! with either header, bytes mode, the mapping) see the same records; bad
//! flags and faults lose nothing.

use super::*;

/// The records a line-mode `write()` of `data` makes: cut just after each
/// `delim`, every `max` bytes of a longer line, and at the end.
pub(crate) fn cut(data: &[u8], delim: u8, max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let window = &rest[..max.min(rest.len())];
        let len = window
            .iter()
            .position(|&b| b == delim)
            .map_or(window.len(), |i| i + 1);
        out.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    out
}

/// At least `total` bytes of lines of 0 to `max_len - 1` random bytes
/// (NUL bytes among them, newlines only at their ends), each ended by a
/// newline, from `seed`.
pub(crate) fn random_lines(seed: u64, max_len: u64, total: usize) -> Vec<u8> {
    let mut rng = seed;
    let mut data = Vec::new();
    while data.len() < total {
        let len = (xorshift(&mut rng) % max_len) as usize;
        data.extend((0..len).map(|_| match xorshift(&mut rng) as u8 {
            b'\n' => 0,
            b => b,
        }));
        data.push(b'\n');
    }
    data
}

/// The payloads of a non-blocking record-mode file with 32-byte headers,
/// read until `EAGAIN`.
fn drain_v3(t: &Topic) -> Result<Vec<Vec<u8>>> {
    const V3: usize = abi::RECORD_HEADER_V3_SIZE;
    let mut out = Vec::new();
    loop {
        let buf = match get(t, 1 << 20) {
            Ok(b) => b,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(out),
            Err(e) => return Err(e).context("read (ABI 3 reader)"),
        };
        let mut rest = &buf[..];
        while !rest.is_empty() {
            let h = RecordHeader::from_bytes_sized(rest, V3).context("ABI 3 header")?;
            let len = h.len as usize;
            let span = abi::record_span_sized(V3, len);
            ensure!(span <= rest.len(), "ABI 3 record of {len} bytes cut");
            out.push(rest[V3..V3 + len].to_vec());
            rest = &rest[span..];
        }
    }
}

/// Bytes of a non-blocking bytes-mode file, read until `EAGAIN`.
pub(crate) fn drain_bytes(t: &Topic) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match get(t, 1 << 16) {
            Ok(b) => out.extend(b),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(out),
            Err(e) => return Err(e).context("read (bytes mode)"),
        }
    }
}

pub(crate) fn fdinfo_mode(t: &Topic) -> Result<String> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", t.file().as_raw_fd()))?;
    s.lines()
        .find_map(|l| l.strip_prefix("fanout_mode:\t"))
        .map(str::to_string)
        .context("no fanout_mode in fdinfo")
}

pub(crate) fn line_mode_cuts_writes_into_lines(cx: &Ctx) -> Result<()> {
    let rec = nb_reader(&cx.a)?;
    rec.set_flags(abi::FLAG_RECORD)?;
    let old = nb_reader(&cx.a)?;
    super::writer_id::set_flags_v3(&old, abi::FLAG_RECORD)?;
    let bytes = nb_reader(&cx.a)?;
    let mfile = File::open(&cx.a)?;
    let m = Mapping::map(mfile.as_raw_fd(), page_size() + RING as usize)?;
    let mut mr = MapReader::at_head(&m)?;
    let w = Topic::open(&cx.a, true, true)?;

    // Bad flags: refused, and nothing changes.
    expect_errno(
        w.set_flags(abi::FLAG_LINES | abi::FLAG_BATCH),
        libc::EINVAL,
        "lines with batch",
    )?;
    expect_errno(
        w.set_flags(abi::FLAG_NUL),
        libc::EINVAL,
        "NUL without lines",
    )?;
    expect_errno(
        w.set_flags(abi::FLAGS_ALL + 1),
        libc::EINVAL,
        "an unknown flag",
    )?;
    ensure!(
        fdinfo_mode(&w)? == "bytes",
        "a refused flag changed the mode"
    );
    w.set_flags(abi::FLAG_LINES)?;
    ensure!(
        fdinfo_mode(&w)? == "bytes,lines",
        "fdinfo: {}",
        fdinfo_mode(&w)?
    );

    // Binary lines (NUL bytes in them) of 1 to 300 bytes, two newlines
    // side by side at the end of the first 64 KiB block (one ends it, one
    // starts the next as a line of its own), lines across the other block
    // edges, and no newline at the end.
    let mut data = random_lines(0x5eed, 300, 150_000);
    data[65535] = b'\n';
    data[65536] = b'\n';
    data.extend_from_slice(b"no newline at the end");
    let want = cut(&data, b'\n', RECORD_MAX);
    ensure!(
        want.iter().any(|r| r.contains(&0)),
        "the data has no NUL byte"
    );
    let before = rec.info()?.next_seq;
    let n = w.file().write(&data).context("a line-mode write")?;
    ensure!(n == data.len(), "wrote {n} of {}", data.len());
    let got = drain(&rec)?;
    ensure!(
        got.len() == want.len(),
        "{} records, want {}",
        got.len(),
        want.len()
    );
    for (k, ((h, p), want)) in got.iter().zip(&want).enumerate() {
        ensure!(
            p == want,
            "record {k}: {} bytes, want {}",
            p.len(),
            want.len()
        );
        ensure!(h.seq == before + k as u64, "record {k}: seq {}", h.seq);
        ensure!(
            h.timestamp_ns == got[0].0.timestamp_ns,
            "record {k}: not one stamp per write"
        );
    }
    ensure!(
        drain_v3(&old)? == want,
        "the ABI 3 record reader's records differ"
    );
    ensure!(
        drain_bytes(&bytes)? == data,
        "the bytes-mode reader's bytes differ"
    );
    let mapped: Vec<Vec<u8>> = mr.poll(usize::MAX)?.into_iter().map(|(_, p)| p).collect();
    ensure!(mapped == want, "the mapping reader's records differ");

    // Lines at and past the record limit: cut every record_max bytes, the
    // delimiter with the last piece; a line of exactly record_max bytes
    // (newline included) is one record.
    let mut data = vec![b'x'; RECORD_MAX + 10];
    data.push(b'\n');
    data.extend(vec![b'y'; RECORD_MAX - 1]);
    data.push(b'\n');
    data.extend_from_slice(b"end");
    let n = w.file().write(&data).context("long lines")?;
    ensure!(n == data.len(), "long lines: wrote {n} of {}", data.len());
    let lens: Vec<usize> = drain(&rec)?.iter().map(|(_, p)| p.len()).collect();
    ensure!(
        lens == [RECORD_MAX, 11, RECORD_MAX, 3],
        "long lines: records of {lens:?}"
    );
    ensure!(drain_bytes(&bytes)? == data, "long lines: bytes differ");

    // Small writes: each ends a record; "\n" alone is a record.
    for (input, records) in [
        (&b"one\ntwo"[..], &[&b"one\n"[..], b"two"][..]),
        (b"\n", &[b"\n"]),
        (b"a\0b\0", &[b"a\0b\0"]),
    ] {
        ensure!(w.file().write(input)? == input.len(), "{input:?}: short");
        let got: Vec<Vec<u8>> = drain(&rec)?.into_iter().map(|(_, p)| p).collect();
        ensure!(got == records, "{input:?}: records {got:?}");
    }
    drain_bytes(&bytes)?;
    drain_v3(&old)?;

    // NUL-ended items (FLAG_NUL): cut after each NUL; newlines are payload.
    let w0 = Topic::open(&cx.a, true, true)?;
    w0.set_flags(abi::FLAG_LINES | abi::FLAG_NUL)?;
    ensure!(
        fdinfo_mode(&w0)? == "bytes,lines0",
        "fdinfo: {}",
        fdinfo_mode(&w0)?
    );
    let input = b"a\nb\0c\0\0d";
    ensure!(w0.file().write(input)? == input.len(), "NUL items: short");
    let got: Vec<Vec<u8>> = drain(&rec)?.into_iter().map(|(_, p)| p).collect();
    ensure!(
        got == [&b"a\nb\0"[..], b"c\0", b"\0", b"d"],
        "NUL items: {got:?}"
    );

    // More short lines in one block than one reservation takes (1024):
    // 3000 lines of 1 to 12 bytes, each a record, in order.
    drain_bytes(&bytes)?;
    drain_v3(&old)?;
    let mut data = Vec::new();
    for i in 0..3000usize {
        data.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, i % 12));
        data.push(b'\n');
    }
    let want = cut(&data, b'\n', RECORD_MAX);
    ensure!(want.len() == 3000, "{} short lines", want.len());
    let first = rec.info()?.next_seq;
    ensure!(w.file().write(&data)? == data.len(), "short lines: short");
    let got: Vec<Vec<u8>> = drain(&rec)?.into_iter().map(|(_, p)| p).collect();
    ensure!(
        got == want,
        "short lines: {} records, the first differing at {:?}",
        got.len(),
        got.iter().zip(&want).position(|(g, w)| g != w)
    );
    ensure!(drain_bytes(&bytes)? == data, "short lines: bytes differ");
    drain_v3(&old)?;
    // Seeks land on those lines: the sparse index the line-mode commit
    // filled in (a position every 64th record) is right, at and around
    // its entries and across reservations.
    for k in [
        0u64, 1, 63, 64, 65, 1000, 1023, 1024, 1025, 2047, 2048, 2999,
    ] {
        let seq = first + k;
        ensure!(
            rec.seek(abi::SEEK_SEQ, seq)? == seq,
            "short lines: seek to {seq}"
        );
        let got = drain(&rec)?;
        let (h, p) = got.first().context("short lines: nothing after a seek")?;
        ensure!(
            h.seq == seq && *p == want[k as usize],
            "short lines: a seek to line {k} read seq {} ({} bytes)",
            h.seq,
            p.len()
        );
        ensure!(
            got.len() as u64 == 3000 - k,
            "short lines: {} records after line {k}",
            got.len()
        );
    }

    // Clearing the flag: plain records again.
    w.set_flags(0)?;
    ensure!(w.file().write(b"p\nq\n")? == 4, "plain write");
    let got: Vec<Vec<u8>> = drain(&rec)?.into_iter().map(|(_, p)| p).collect();
    ensure!(got == [b"p\nq\n"], "after clearing FLAG_LINES: {got:?}");
    Ok(())
}

pub(crate) fn line_mode_faults_and_long_lines(cx: &Ctx) -> Result<()> {
    let page = page_size();
    let r = nb_reader(&cx.a)?;
    r.set_flags(abi::FLAG_RECORD)?;
    let w = Topic::open(&cx.a, true, true)?;
    w.set_flags(abi::FLAG_LINES)?;

    // A write that runs into unmapped memory: the whole lines before the
    // fault are published, nothing of the line it cuts; the call returns
    // their size.
    let mem = Holey::new(3 * page, page)?;
    let line = [&[b'l'; 29][..], b"\n"].concat();
    let lines = line.repeat(30);
    mem.put(page - 1000, &lines);
    mem.put(page - 100, &[b'z'; 100]);
    let before = r.info()?.next_seq;
    let n = mem
        .write_to(w.file().as_raw_fd(), page - 1000, 2000)
        .context("a write into the hole")?;
    ensure!(
        n == 900,
        "returned {n}, want the 900 bytes of the whole lines"
    );
    let got = drain(&r)?;
    ensure!(
        got.len() == 30 && got.iter().all(|(_, p)| *p == line) && got[0].0.seq == before,
        "before the fault: {} records",
        got.len()
    );
    expect_errno(
        mem.write_to(w.file().as_raw_fd(), page, 10),
        libc::EFAULT,
        "a write in the hole",
    )?;
    ensure!(
        r.info()?.next_seq == before + 30,
        "a faulted write published something"
    );

    // A topic whose record limit (1 MiB) is larger than the kernel's 64
    // KiB line block: a line longer than a block is found by reading
    // ahead and is still one record, up to the limit.
    let big = fresh_topic("lines-big", 4 << 20)?;
    let rb = nb_reader(&big)?;
    rb.set_flags(abi::FLAG_RECORD)?;
    let wb = Topic::open(&big, true, true)?;
    wb.set_flags(abi::FLAG_LINES)?;
    let max = rb.info()?.record_max as usize;
    ensure!(max == 1 << 20, "record_max {max}");
    let mut data = vec![b'a'; 200_000];
    data.push(b'\n');
    data.extend_from_slice(b"short\n");
    data.extend(vec![b'b'; 1_500_000]);
    let n = wb.file().write(&data).context("long lines, big topic")?;
    ensure!(n == data.len(), "big topic: wrote {n} of {}", data.len());
    let mut got = Vec::new();
    loop {
        match get(&rb, 2 << 20) {
            Ok(buf) => got.extend(strict_records(&buf)?.into_iter().map(|(_, p)| p)),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => return Err(e).context("read, big topic"),
        }
    }
    ensure!(
        got == cut(&data, b'\n', max),
        "big topic: records of {:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );

    // A fault while reading ahead through a long line: nothing of it.
    let hole = 48 * page;
    let mem = Holey::new(hole + 2 * page, hole)?;
    mem.put(0, &vec![b'c'; hole]);
    let before = rb.info()?.next_seq;
    expect_errno(
        mem.write_to(wb.file().as_raw_fd(), 0, hole + page),
        libc::EFAULT,
        "a long line into the hole",
    )?;
    ensure!(
        rb.info()?.next_seq == before,
        "a long line cut by a fault was published"
    );
    drop((rb, wb));
    baf::control::remove("lines-big")?;
    Ok(())
}
