//! VM tests of `splice` and `sendfile` (ABI 7): a topic file as either end,
//! with the meaning of `write()` (into it) and `read()` (out of it), in
//! every mode; a record that does not fit the pipe's room, a lapped
//! reader, and `sendfile` out of a topic into a file refused.

use super::*;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

/// A pipe as two owned ends: `(read end, write end)`.
fn owned_pipe() -> Result<(File, File)> {
    let [r, w] = pipe()?;
    // SAFETY: `pipe` just made both descriptors, and nothing else owns them.
    Ok(unsafe {
        (
            File::from(OwnedFd::from_raw_fd(r)),
            File::from(OwnedFd::from_raw_fd(w)),
        )
    })
}

/// Reads exactly `n` bytes from `r`.
fn take(mut r: &File, n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).context("reading the pipe")?;
    Ok(buf)
}

/// `sendfile(out, input, NULL, len)`: the bytes moved.
fn sendfile(out: BorrowedFd<'_>, input: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call; a null offset means
    // the input's own position.
    let n = unsafe {
        libc::sendfile(
            out.as_raw_fd(),
            input.as_raw_fd(),
            std::ptr::null_mut(),
            len,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

pub(crate) fn splice_into_a_topic_is_a_write(cx: &Ctx) -> Result<()> {
    let rec = nb_reader(&cx.a)?;
    rec.set_flags(abi::FLAG_RECORD)?;
    let w = Topic::open(&cx.a, true, false)?;
    let (pr, mut pw) = owned_pipe()?;

    // What the pipe holds goes in as one write(): one record in plain mode.
    pw.write_all(b"hello ")?;
    pw.write_all(b"world")?;
    let n = w.splice_in(pr.as_fd(), 1 << 20)?;
    ensure!(n == 11, "spliced {n} bytes of 11");
    let got: Vec<Vec<u8>> = drain(&rec)?.into_iter().map(|(_, p)| p).collect();
    ensure!(got == [b"hello world".to_vec()], "records {got:?}");

    // At most the length asked for; the rest stays in the pipe.
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
    pw.write_all(&data)?;
    let n = w.splice_in(pr.as_fd(), 300)?;
    ensure!(n == 300, "spliced {n} bytes, asked for 300");
    let mut moved = 300;
    while moved < data.len() {
        moved += w.splice_in(pr.as_fd(), 1 << 20)?;
    }
    let got = drain(&rec)?;
    ensure!(
        got.first().map(|(_, p)| p.len()) == Some(300),
        "the first record is not the 300 bytes asked for"
    );
    ensure!(
        got.iter().all(|(_, p)| p.len() <= RECORD_MAX),
        "a record over record_max"
    );
    let joined: Vec<u8> = got.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    ensure!(joined == data, "the spliced bytes differ");
    ensure!(
        got.windows(2).all(|r| r[1].0.seq == r[0].0.seq + 1),
        "sequence numbers not dense"
    );

    // Line mode: the kernel cuts what the pipe held at its newlines.
    let wl = Topic::open(&cx.a, true, false)?;
    wl.set_flags(abi::FLAG_LINES)?;
    pw.write_all(b"a\nbb\nccc")?;
    ensure!(wl.splice_in(pr.as_fd(), 1 << 20)? == 8, "line mode: short");
    let got: Vec<Vec<u8>> = drain(&rec)?.into_iter().map(|(_, p)| p).collect();
    ensure!(
        got == [b"a\n".to_vec(), b"bb\n".to_vec(), b"ccc".to_vec()],
        "line mode: records {got:?}"
    );

    // sendfile from a regular file: the file's bytes, in records of at most
    // record_max.
    let path = Path::new("/tmp/splice-source");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 + 5) as u8).collect();
    std::fs::write(path, &data)?;
    let f = File::open(path)?;
    let mut moved = 0;
    while moved < data.len() {
        let n = sendfile(w.file().as_fd(), f.as_fd(), data.len() - moved)?;
        ensure!(n > 0, "sendfile stopped at {moved} of {}", data.len());
        moved += n;
    }
    let got = drain(&rec)?;
    ensure!(
        got.iter().all(|(_, p)| p.len() <= RECORD_MAX),
        "sendfile: a record over record_max"
    );
    let joined: Vec<u8> = got.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    ensure!(joined == data, "sendfile: the bytes differ");
    std::fs::remove_file(path)?;

    // The end of the pipe: 0, and nothing published.
    drop(pw);
    ensure!(w.splice_in(pr.as_fd(), 1 << 20)? == 0, "no end of the pipe");
    ensure!(
        drain(&rec)?.is_empty(),
        "the pipe's end published something"
    );
    Ok(())
}

pub(crate) fn splice_out_of_a_topic_is_a_read(cx: &Ctx) -> Result<()> {
    let bytes = nb_reader(&cx.b)?;
    let recm = nb_reader(&cx.b)?;
    recm.set_flags(abi::FLAG_RECORD)?;
    let w = writer(&cx.b)?;
    let (pr, pw) = owned_pipe()?;

    // Bytes mode: the payloads; then EAGAIN on the non-blocking file.
    for p in [&b"one"[..], b"two", b"three"] {
        put(&w, p)?;
    }
    let n = bytes.splice_out(pw.as_fd(), 1 << 20)?;
    ensure!(n == 11, "bytes mode: spliced {n} of 11");
    ensure!(take(&pr, n)? == b"onetwothree", "bytes mode: bytes differ");
    expect_errno(
        bytes.splice_out(pw.as_fd(), 1 << 20),
        libc::EAGAIN,
        "bytes mode, nothing new",
    )?;

    // Record mode: headers, payloads and padding, as a read() gives them.
    let n = recm.splice_out(pw.as_fd(), 1 << 20)?;
    let got = strict_records(&take(&pr, n)?)?;
    let payloads: Vec<&[u8]> = got.iter().map(|(_, p)| &p[..]).collect();
    ensure!(
        payloads == [&b"one"[..], b"two", b"three"],
        "record mode: {payloads:?}"
    );

    // A record larger than the pipe's room: in record mode EMSGSIZE, and it
    // stays unread; in bytes mode it comes in pieces, whole.
    // SAFETY: F_SETPIPE_SZ on our own pipe.
    ensure!(
        unsafe { libc::fcntl(pw.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) } >= 4096,
        "F_SETPIPE_SZ"
    );
    let big = pattern(3, 1, 10_000);
    put(&w, &big)?;
    expect_errno(
        recm.splice_out(pw.as_fd(), 1 << 20),
        libc::EMSGSIZE,
        "record mode, a record larger than the pipe's room",
    )?;
    let got = drain(&recm)?;
    ensure!(
        got.len() == 1 && got[0].1 == big,
        "record mode: the large record was not left unread"
    );
    let mut joined = Vec::new();
    while joined.len() < big.len() {
        let n = bytes.splice_out(pw.as_fd(), 1 << 20)?;
        ensure!(n > 0 && n <= 4096, "bytes mode: a piece of {n} bytes");
        joined.extend(take(&pr, n)?);
    }
    ensure!(
        joined == big,
        "bytes mode: the pieces differ from the record"
    );

    // A lapped reader: whole records only, and the loss counted.
    // SAFETY: as above.
    unsafe { libc::fcntl(pw.as_raw_fd(), libc::F_SETPIPE_SZ, 65536) };
    let total = 4000u32;
    for i in 0..total {
        put(&w, &pattern(1, i, 100))?;
    }
    let mut data = Vec::new();
    loop {
        match bytes.splice_out(pw.as_fd(), 1 << 20) {
            Ok(n) => data.extend(take(&pr, n)?),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => return Err(e).context("splice out of a lapped reader"),
        }
    }
    ensure!(data.len() % 100 == 0, "{} bytes: a torn record", data.len());
    let mut last = None;
    for chunk in data.chunks(100) {
        let (writer, counter) = parse_pattern(chunk)?;
        ensure!(writer == 1, "a record of writer {writer}");
        ensure!(
            last.is_none_or(|l| counter == l + 1),
            "record {counter} after {last:?}"
        );
        last = Some(counter);
    }
    let lost = bytes.info()?.lost;
    ensure!(lost > 0, "the reader was not lapped");
    ensure!(
        (data.len() / 100) as u64 + lost == u64::from(total),
        "{} delivered and {lost} lost of {total}",
        data.len() / 100
    );
    ensure!(last == Some(total - 1), "the newest record is missing");

    // sendfile out of a topic: into a pipe it is a splice; into a file or a
    // socket the kernel wants a regular file as the input (EINVAL), and the
    // record stays unread.
    put(&w, b"to a pipe")?;
    let n = sendfile(pw.as_fd(), bytes.file().as_fd(), 1 << 20).context("sendfile to a pipe")?;
    ensure!(n == 9, "sendfile to a pipe: {n} bytes");
    ensure!(take(&pr, n)? == b"to a pipe", "sendfile: bytes differ");
    put(&w, b"not to a file")?;
    let path = Path::new("/tmp/splice-sink");
    let f = File::create(path)?;
    expect_errno(
        sendfile(f.as_fd(), bytes.file().as_fd(), 1 << 20),
        libc::EINVAL,
        "sendfile from a topic into a file",
    )?;
    std::fs::remove_file(path)?;
    ensure!(
        get(&bytes, 100)? == b"not to a file",
        "a refused sendfile consumed the record"
    );
    drain(&recm)?;
    Ok(())
}

/// The records a whole-lines `write()` of `data` makes: its lines up to
/// the last `delim`, cut as [`super::lines::cut`] cuts them.
fn whole_prefix(data: &[u8], delim: u8) -> &[u8] {
    data.iter()
        .rposition(|&b| b == delim)
        .map_or(&data[..0], |i| &data[..=i])
}

pub(crate) fn whole_lines_leave_the_cut_line(cx: &Ctx) -> Result<()> {
    use super::lines::{cut, fdinfo_mode};
    let rec = nb_reader(&cx.a)?;
    rec.set_flags(abi::FLAG_RECORD)?;
    let bytes = nb_reader(&cx.a)?;
    let w = Topic::open(&cx.a, true, false)?;
    let records = |what: &str| -> Result<Vec<Vec<u8>>> {
        let got: Vec<Vec<u8>> = drain(&rec)?.into_iter().map(|(_, p)| p).collect();
        let b = super::lines::drain_bytes(&bytes).with_context(|| what.to_string())?;
        ensure!(b == got.concat(), "{what}: the bytes-mode reader differs");
        Ok(got)
    };

    // Only with line mode; a refused flag changes nothing.
    for bad in [
        abi::FLAG_WHOLE_LINES,
        abi::FLAG_WHOLE_LINES | abi::FLAG_NUL,
        abi::FLAG_WHOLE_LINES | abi::FLAG_LINES | abi::FLAG_BATCH,
    ] {
        expect_errno(w.set_flags(bad), libc::EINVAL, "whole lines, bad flags")?;
    }
    ensure!(
        fdinfo_mode(&w)? == "bytes",
        "a refused flag changed the mode"
    );
    w.set_flags(abi::FLAG_LINES | abi::FLAG_WHOLE_LINES)?;
    let mode = fdinfo_mode(&w)?;
    ensure!(mode == "bytes,lines,whole", "fdinfo: {mode}");

    // write(): the whole lines, not the unended one after them.
    ensure!(w.file().write(b"a\nbb\nccc")? == 5, "a\\nbb\\nccc: not 5");
    let got = records("a\\nbb\\nccc")?;
    ensure!(got == [&b"a\n"[..], b"bb\n"], "records {got:?}");
    // No whole line at the start: 0, nothing published.
    let seq = rec.info()?.next_seq;
    ensure!(w.file().write(b"ccc")? == 0, "an unended line was taken");
    // A line of record_max bytes (newline included) is one; a longer one
    // is not taken, nor anything after it.
    let mut exact = vec![b'x'; RECORD_MAX - 1];
    exact.push(b'\n');
    let mut long = vec![b'y'; RECORD_MAX];
    long.extend_from_slice(b"\nz\n");
    ensure!(w.file().write(&long)? == 0, "a line over record_max taken");
    ensure!(rec.info()?.next_seq == seq, "a refused stretch published");
    let data = [&b"p\n"[..], &exact, &long].concat();
    let n = w.file().write(&data)?;
    ensure!(n == 2 + RECORD_MAX, "lines before a long one: {n}");
    let got = records("before a long line")?;
    ensure!(got == [b"p\n".to_vec(), exact], "before a long line");

    // Lines across the kernel's 64 KiB blocks, binary bytes among them,
    // ending inside a line: every whole line, one record each.
    let mut data = super::lines::random_lines(0x3a11, 500, 150_000);
    data.extend_from_slice(b"an unended line");
    let whole = whole_prefix(&data, b'\n');
    let n = w.file().write(&data)?;
    ensure!(n == whole.len(), "took {n} of {} whole", whole.len());
    ensure!(
        records("random lines")? == cut(whole, b'\n', RECORD_MAX),
        "random lines: records differ"
    );

    // splice: a pass takes its whole lines; the cut one stays in the pipe
    // and goes with the rest of its line.
    let (pr, mut pw) = owned_pipe()?;
    pw.write_all(b"one\ntwo\nthr")?;
    ensure!(w.splice_in(pr.as_fd(), 1 << 20)? == 8, "splice: not 8");
    let got = records("splice")?;
    ensure!(got == [&b"one\n"[..], b"two\n"], "splice: {got:?}");
    ensure!(
        w.splice_in(pr.as_fd(), 1 << 20)? == 0,
        "splice of 'thr' not 0"
    );
    ensure!(records("splice 0")?.is_empty(), "a splice of 0 published");
    pw.write_all(b"ee\nfour")?;
    ensure!(
        w.splice_in(pr.as_fd(), 1 << 20)? == 6,
        "splice: 'thr' was lost"
    );
    ensure!(records("splice 2")? == [b"three\n"], "splice: three");
    drop(pw);
    let mut rest = Vec::new();
    (&pr).read_to_end(&mut rest)?;
    ensure!(rest == b"four", "the pipe held {rest:?}, not four");

    // sendfile: the file's offset ends just past the last whole line, and
    // passes of 64 KiB ending anywhere lose no byte and cut no line.
    let path = Path::new("/tmp/splice-lines");
    std::fs::write(path, &data)?;
    let f = File::open(path)?;
    let mut moved = 0;
    loop {
        let n = sendfile(w.file().as_fd(), f.as_fd(), 1 << 20)?;
        if n == 0 {
            break;
        }
        moved += n;
    }
    // SAFETY: lseek on our own open file.
    let off = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_CUR) };
    ensure!(
        moved == whole.len() && off == whole.len() as i64,
        "sendfile: moved {moved}, offset {off}, want {}",
        whole.len()
    );
    ensure!(
        records("sendfile")? == cut(whole, b'\n', RECORD_MAX),
        "sendfile: records differ"
    );
    std::fs::remove_file(path)?;

    // NUL-ended items: the same at each NUL.
    w.set_flags(abi::FLAG_LINES | abi::FLAG_NUL | abi::FLAG_WHOLE_LINES)?;
    ensure!(w.file().write(b"a\0b\nc")? == 2, "NUL: not 2");
    ensure!(records("NUL")? == [b"a\0"], "NUL: records");

    // A line longer than a block (64 KiB) but within the record limit (1
    // MiB): taken whole when it ends, not when the buffer ends first.
    let big = super::fresh_topic("whole-big", 4 << 20)?;
    let rb = nb_reader(&big)?;
    rb.set_flags(abi::FLAG_RECORD)?;
    let wb = Topic::open(&big, true, false)?;
    wb.set_flags(abi::FLAG_LINES | abi::FLAG_WHOLE_LINES)?;
    let mut data = vec![b'a'; 200_000];
    data.push(b'\n');
    data.extend(vec![b'b'; 300_000]);
    ensure!(wb.file().write(&data)? == 200_001, "big: not the long line");
    ensure!(
        wb.file().write(&data[200_001..])? == 0,
        "big: unended taken"
    );
    let mut lens = Vec::new();
    loop {
        match get(&rb, 2 << 20) {
            Ok(buf) => lens.extend(strict_records(&buf)?.iter().map(|(_, p)| p.len())),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => return Err(e).context("read, big topic"),
        }
    }
    ensure!(lens == [200_001], "big: records of {lens:?}");
    drop((rb, wb));
    baf::control::remove("whole-big")?;
    Ok(())
}

/// The length of record `counter` in [`splice_out_under_a_writer`]: 8 to
/// 307 bytes, odd and even, so that payloads end anywhere in a word and
/// cross the pipe's page boundaries anywhere.
fn varied_len(counter: u32) -> usize {
    8 + (counter as usize * 37) % 300
}

/// Bytes-mode `splice` puts payloads into the pipe's pages itself, a word
/// at a time (`kernel/pages.rs`): under a writer that laps the reader,
/// every payload arrives whole and in order, across page boundaries and at
/// every alignment, and what is missing is what the reader was told it
/// lost. Each pass starts lapped, so the writer tears records while they
/// are copied.
pub(crate) fn splice_out_under_a_writer(cx: &Ctx) -> Result<()> {
    let r = nb_reader(&cx.b)?;
    let w = writer(&cx.b)?;
    let (pr, pw) = owned_pipe()?;
    let total = 40_000u32;
    let writing = std::thread::spawn(move || -> Result<()> {
        for i in 0..total {
            put(&w, &pattern(2, i, varied_len(i)))?;
        }
        Ok(())
    });
    let mut data = Vec::new();
    let mut pass = 0usize;
    loop {
        let done = writing.is_finished();
        // Each pass starts lapped, at the oldest record, which the writer
        // is busy overwriting: records torn in the middle of a pass.
        let info = r.info()?;
        if !done && info.oldest_seq <= info.cursor_seq {
            std::thread::yield_now();
            continue;
        }
        // Ask for different amounts, so passes end inside records and the
        // pipe's pages fill from different offsets.
        let want = 1 + (pass * 7919) % 70_000;
        pass += 1;
        match r.splice_out(pw.as_fd(), want) {
            Ok(n) => data.extend(take(&pr, n)?),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if done {
                    break;
                }
                std::thread::yield_now();
            }
            Err(e) => return Err(e).context("splice out under a writer"),
        }
    }
    writing
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    let (mut at, mut got, mut last) = (0, 0u64, None);
    while at < data.len() {
        let head = data.get(at..at + 8).context("a torn record at the end")?;
        let counter = u32::from_le_bytes(head[4..8].try_into()?);
        let len = varied_len(counter);
        let rec = data
            .get(at..at + len)
            .with_context(|| format!("record {counter} cut at the end"))?;
        let (writer, c) = parse_pattern(rec).with_context(|| format!("at byte {at}"))?;
        ensure!(writer == 2 && c == counter, "record {c} of writer {writer}");
        ensure!(
            last.is_none_or(|l| counter > l),
            "record {counter} after {last:?}"
        );
        last = Some(counter);
        at += len;
        got += 1;
    }
    let lost = r.info()?.lost;
    ensure!(lost > 0, "the reader was not lapped");
    ensure!(
        got + lost == u64::from(total),
        "{got} delivered and {lost} lost of {total}"
    );
    ensure!(last == Some(total - 1), "the newest record is missing");
    Ok(())
}
