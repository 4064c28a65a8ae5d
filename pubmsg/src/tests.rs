use super::*;
use proptest::prelude::*;

/// A reader that returns its data in pieces, with an EINTR before each.
struct Choppy {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    i: usize,
    interrupt: bool,
}

impl Choppy {
    /// `data`, returned in reads of `sizes` bytes (7 after the last).
    fn new(data: &[u8], sizes: Vec<usize>) -> Self {
        Self {
            data: data.to_vec(),
            pos: 0,
            sizes,
            i: 0,
            interrupt: false,
        }
    }
}

impl Read for Choppy {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let size = self.sizes.get(self.i).copied().unwrap_or(7).max(1);
        self.i += 1;
        let n = size.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A batch-mode device stand-in: records every write call's frames;
/// on request, EINTRs and short writes (at frame boundaries, as the
/// kernel makes them).
#[derive(Default)]
struct Sink {
    /// The frames' payloads, per accepted write call.
    writes: Vec<Vec<Vec<u8>>>,
    short: bool,
    calls: usize,
}

impl Sink {
    /// Every record's payload, in order.
    fn records(&self) -> Vec<Vec<u8>> {
        self.writes.concat()
    }
}

impl Write for &mut Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.short && self.calls % 3 == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let mut frames: Vec<_> = baf::device::records(buf).collect();
        for f in &frames {
            // What the kernel checks.
            assert!(f.header.len > 0 && f.header.flags == 0);
        }
        if self.short && frames.len() > 1 && self.calls % 2 == 0 {
            frames.truncate(frames.len() / 2);
        }
        let n = frames
            .iter()
            .map(|f| abi::record_span(f.payload.len()))
            .sum();
        self.writes
            .push(frames.iter().map(|f| f.payload.to_vec()).collect());
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn run_publish(
    framing: Framing,
    max: usize,
    data: &[u8],
    sizes: Vec<usize>,
    short: bool,
    ready: bool,
) -> (Sink, Stats, Vec<String>) {
    let input = Choppy::new(data, sizes);
    let mut sink = Sink {
        short,
        ..Sink::default()
    };
    let mut warnings = Vec::new();
    let mut framer = Framer::new(framing, max);
    let stats = publish(
        input,
        &mut sink,
        &mut framer,
        || ready,
        |w| warnings.push(w.to_string()),
    )
    .unwrap();
    (sink, stats, warnings)
}

#[test]
fn lines_each_a_record_written_as_soon_as_input_pauses() {
    let (sink, stats, warnings) = run_publish(
        Framing::Lines,
        100,
        b"a\nbc\nlast",
        vec![1, 2, 3],
        false,
        false,
    );
    assert_eq!(
        sink.records(),
        vec![b"a\n".to_vec(), b"bc\n".to_vec(), b"last".to_vec()]
    );
    // Nothing more ready after each read: each completed line went out
    // at once, in its own write.
    assert_eq!(sink.writes.len(), 3);
    assert_eq!((stats.records, stats.writes), (3, 3));
    assert!(warnings.is_empty());
}

#[test]
fn ready_input_is_batched() {
    let data: Vec<u8> = (0..1000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let (sink, stats, _) = run_publish(Framing::Lines, 100, &data, vec![100; 200], false, true);
    assert_eq!(stats.records, 1000);
    assert_eq!(sink.records().concat(), data);
    // ~40 bytes a frame: 1000 frames fit one 64 KiB batch.
    assert_eq!(sink.writes.len(), 1);
    assert_eq!(stats.writes, 1);
}

#[test]
fn batches_stop_at_the_size_limit() {
    let line = [b'x'; 1000];
    let mut data = Vec::new();
    for _ in 0..200 {
        data.extend_from_slice(&line);
        data.push(b'\n');
    }
    let (sink, stats, _) = run_publish(Framing::Lines, 4096, &data, vec![4096; 100], false, true);
    assert_eq!(stats.records, 200);
    for w in &sink.writes {
        let bytes: usize = w.iter().map(|p| abi::record_span(p.len())).sum();
        assert!(bytes <= BATCH_MAX);
    }
    assert!(sink.writes.len() >= 200 * 1040 / BATCH_MAX);
    assert_eq!(sink.records().concat(), data);
}

#[test]
fn flush_decisions() {
    assert!(!flush_after_read(0, false, true), "nothing to write");
    assert!(flush_after_read(10, false, false), "stdin idle: write now");
    assert!(
        !flush_after_read(10, true, false),
        "more is ready: gather it"
    );
    assert!(flush_after_read(10, true, true), "end of input");
    assert!(!full_before(0, BATCH_MAX * 2), "a big record goes alone");
    assert!(!full_before(100, BATCH_MAX - 100));
    assert!(full_before(100, BATCH_MAX - 99));
}

#[test]
fn long_lines_warn_once() {
    let mut data = vec![b'x'; 50];
    data.push(b'\n');
    data.extend_from_slice(&[b'y'; 30]);
    let (sink, stats, warnings) = run_publish(Framing::Lines, 16, &data, vec![5], false, false);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("16 bytes"));
    assert_eq!(stats.lines_split, 2);
    assert!(sink.records().iter().all(|w| w.len() <= 16));
    assert_eq!(sink.records().concat(), data);
}

#[test]
fn empty_stdin_publishes_nothing() {
    for framing in [Framing::Lines, Framing::Raw, Framing::Len32] {
        for ready in [false, true] {
            let (sink, stats, _) = run_publish(framing, 100, b"", vec![], false, ready);
            assert!(sink.writes.is_empty());
            assert_eq!(stats, Stats::default());
        }
    }
}

#[test]
fn len32_bad_input_is_a_usage_error_after_the_good_frames() {
    let mut framer = Framer::new(Framing::Len32, 4);
    let mut sink = Sink::default();
    let data = baf::frame::encode_len32([&b"ok"[..], &b"12345"[..]]);
    let e = publish(&data[..], &mut sink, &mut framer, || true, |_| {}).unwrap_err();
    assert_eq!(baf_cli::exit_code(&e), 2);
    assert!(
        baf_cli::message(&e).contains("record limit of 4"),
        "{}",
        baf_cli::message(&e)
    );
    assert_eq!(
        sink.records(),
        vec![b"ok".to_vec()],
        "the good frame went out"
    );
    let mut framer = Framer::new(Framing::Len32, 4);
    let mut sink = Sink::default();
    let mut data = baf::frame::encode_len32([&b"ok"[..]]);
    data.extend_from_slice(&[0u8, 0, 0, 3, 1]);
    let e = publish(&data[..], &mut sink, &mut framer, || true, |_| {}).unwrap_err();
    assert!(baf_cli::message(&e).contains("ended inside a frame"));
    assert_eq!(sink.records(), vec![b"ok".to_vec()]);
}

#[test]
fn write_errors_carry_context() {
    struct Gone;
    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENODEV))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut framer = Framer::new(Framing::Lines, 10);
    let e = publish(&b"x\n"[..], Gone, &mut framer, || false, |_| {}).unwrap_err();
    assert_eq!(baf_cli::errno(&e), Some(libc::ENODEV));
    assert!(baf_cli::message(&e).starts_with("writing to the topic"));
    // Also when the batch fills up in the middle of a read.
    let mut framer = Framer::new(Framing::Lines, 60_000);
    let data = [[b'z'; 40_000].as_slice(), b"\n", &[b'z'; 40_000], b"\n"].concat();
    let e = publish(&data[..], Gone, &mut framer, || true, |_| {}).unwrap_err();
    assert_eq!(baf_cli::errno(&e), Some(libc::ENODEV));
    assert!(baf_cli::message(&e).starts_with("writing to the topic"));
}

#[test]
fn messages_are_records_ended_as_the_framing_ends_one() {
    let m: Vec<OsString> = vec!["hello".into(), "a\nb".into()];
    assert_eq!(
        message_records(&m, Framing::Lines, 100).unwrap(),
        vec![b"hello\n".to_vec(), b"a\nb\n".to_vec()]
    );
    assert_eq!(
        message_records(&m, Framing::Nul, 100).unwrap(),
        vec![b"hello\0".to_vec(), b"a\nb\0".to_vec()]
    );
    assert_eq!(
        message_records(&m, Framing::Raw, 100).unwrap(),
        vec![b"hello".to_vec(), b"a\nb".to_vec()]
    );
    // An empty message is a record (a newline), except raw.
    let empty: Vec<OsString> = vec!["".into()];
    assert_eq!(
        message_records(&empty, Framing::Lines, 100).unwrap(),
        vec![b"\n".to_vec()]
    );
    let e = message_records(&empty, Framing::Raw, 100).unwrap_err();
    assert_eq!(baf_cli::exit_code(&e), 2);
    assert!(baf_cli::message(&e).contains("empty"));
    // Too long: refused whole, with which one.
    let e = message_records(&m, Framing::Lines, 4).unwrap_err();
    assert_eq!(baf_cli::exit_code(&e), 2);
    assert!(
        baf_cli::message(&e)
            .starts_with("message 1 (-m) has 6 bytes, more than the topic's record limit of 4"),
        "{}",
        baf_cli::message(&e)
    );
}

#[test]
fn message_records_go_out_in_batches() {
    let records: Vec<Vec<u8>> = (0..3000).map(|i| format!("m{i}\n").into_bytes()).collect();
    let mut sink = Sink::default();
    let stats = publish_records(&records, &mut sink).unwrap();
    assert_eq!(sink.records(), records);
    assert_eq!(stats.records, 3000);
    assert!(sink.writes.len() > 1 && sink.writes.len() < 10);
    let mut sink = Sink::default();
    assert_eq!(publish_records(&[], &mut sink).unwrap(), Stats::default());
    assert!(sink.writes.is_empty());
}

#[test]
fn nul_items_are_records() {
    let (sink, stats, _) = run_publish(
        Framing::Nul,
        100,
        b"a b\0c\nd\0tail",
        vec![3, 3, 3],
        false,
        false,
    );
    assert_eq!(
        sink.records(),
        vec![b"a b\0".to_vec(), b"c\nd\0".to_vec(), b"tail".to_vec()]
    );
    assert_eq!(stats.records, 3);
}

#[test]
fn input_files_fail_in_one_classed_line() {
    let e = open_input(Path::new("/nonexistent/pubmsg-input")).unwrap_err();
    assert_eq!(baf_cli::exit_code(&e), 2);
    assert!(baf_cli::message(&e).starts_with("cannot open /nonexistent/pubmsg-input (-f): "));
    let e = open_input(Path::new("/")).unwrap_err();
    assert_eq!(baf_cli::exit_code(&e), 2);
    assert_eq!(
        baf_cli::message(&e),
        "/ is a directory: -f takes a file to publish"
    );
}

#[test]
fn paths_and_names() {
    assert!(is_path("/dev/fanout0") && is_path("./t") && !is_path("robot/arm"));
}

proptest! {
    /// Whatever the chunking, readiness, EINTRs and short writes, every
    /// byte of stdin reaches the device once, in order, in records of
    /// 1 to `max` bytes.
    #[test]
    fn no_byte_lost_duplicated_or_reordered(
        data in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..3000),
        sizes in proptest::collection::vec(1usize..500, 0..30),
        max in 1usize..100,
        raw in any::<bool>(),
        short in any::<bool>(),
        ready in any::<bool>(),
    ) {
        let framing = if raw { Framing::Raw } else { Framing::Lines };
        let (sink, stats, _) = run_publish(framing, max, &data, sizes, short, ready);
        prop_assert_eq!(sink.records().concat(), data.clone());
        prop_assert!(sink.records().iter().all(|w| w.len() <= max && !w.is_empty()));
        prop_assert_eq!(stats.bytes, data.len() as u64);
    }

    #[test]
    fn len32_frames_are_records(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..20),
        sizes in proptest::collection::vec(1usize..100, 0..30),
        ready in any::<bool>(),
    ) {
        let data = baf::frame::encode_len32(frames.iter().map(|f| &f[..]));
        let (sink, stats, warnings) = run_publish(Framing::Len32, 64, &data, sizes, false, ready);
        prop_assert_eq!(sink.records(), frames.clone());
        prop_assert_eq!(stats.records, frames.len() as u64);
        prop_assert!(warnings.is_empty());
    }
}

/// A line-mode device stand-in: cuts each write as the kernel does (just
/// after each delimiter, every `max` bytes of a longer line, and at the
/// end of the write); on request, EINTRs and short writes (at record
/// boundaries, as the kernel makes them).
struct LineSink {
    delim: u8,
    max: usize,
    records: Vec<Vec<u8>>,
    short: bool,
    calls: usize,
}

impl Write for &mut LineSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.short && self.calls % 3 == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let mut cut = Vec::new();
        let mut rest = buf;
        while !rest.is_empty() {
            let window = &rest[..self.max.min(rest.len())];
            let len = memchr::memchr(self.delim, window).map_or(window.len(), |i| i + 1);
            cut.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        if self.short && cut.len() > 1 && self.calls % 2 == 0 {
            cut.truncate(cut.len() / 2);
        }
        let n = cut.iter().map(Vec::len).sum();
        self.records.extend(cut);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Publishes `data` in line mode through a [`LineSink`].
fn run_lines(
    delim: u8,
    max: usize,
    data: &[u8],
    sizes: Vec<usize>,
    short: bool,
) -> (Vec<Vec<u8>>, Stats, Vec<String>) {
    let input = Choppy::new(data, sizes);
    let mut sink = LineSink {
        delim,
        max,
        records: Vec::new(),
        short,
        calls: 0,
    };
    let mut warnings = Vec::new();
    let stats = publish_lines(input, &mut sink, delim, max, |w| {
        warnings.push(w.to_string())
    })
    .unwrap();
    (sink.records, stats, warnings)
}

#[test]
fn line_mode_writes_end_at_a_delimiter() {
    // Input arriving in pieces that cut lines: each write still ends at
    // a line's end, so no line becomes two records.
    let (records, stats, warnings) = run_lines(
        b'\n',
        100,
        b"one\ntwo\nthree\nfour",
        vec![5, 3, 9, 2],
        false,
    );
    assert_eq!(records, [&b"one\n"[..], b"two\n", b"three\n", b"four"]);
    assert_eq!(stats.bytes, 18);
    assert!(stats.writes >= 3, "{stats:?}");
    assert!(warnings.is_empty());
}

#[test]
fn line_mode_long_lines_warn_once_and_are_cut_at_the_limit() {
    let mut data = vec![b'a'; 40];
    data.push(b'\n');
    data.extend_from_slice(b"short\n");
    data.extend(vec![b'b'; 20]);
    data.push(b'\n');
    let (records, stats, warnings) = run_lines(b'\n', 16, &data, vec![7; 20], false);
    let lens: Vec<_> = records.iter().map(Vec::len).collect();
    assert_eq!(lens, [16, 16, 9, 6, 16, 5]);
    assert_eq!(stats.lines_split, 2);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // A line longer than the whole read buffer, in a topic whose limit
    // is larger still: the buffer grows, the line is one record.
    let mut big = vec![b'x'; LINE_READ * 3];
    big.push(b'\n');
    let (records, stats, warnings) = run_lines(b'\n', LINE_READ * 4, &big, vec![65536; 20], false);
    assert_eq!(records, [big.clone()]);
    assert_eq!((stats.lines_split, warnings.len()), (0, 0));
}

#[test]
fn line_mode_long_line_counting() {
    // The delimiter counts: "aaaa\n" is 5 bytes.
    assert_eq!(long_lines(b"aaa\nbb\ncccccc", b'\n', 4, 0), 1);
    assert_eq!(long_lines(b"aaaa\nbb\ncccc", b'\n', 4, 0), 1);
    assert_eq!(long_lines(b"aaaaa\nbb\ncccccc", b'\n', 4, 0), 2);
    // The first line's earlier pieces were counted when they were sent.
    assert_eq!(long_lines(b"aaaaa\nbb\n", b'\n', 4, 8), 0);
    assert_eq!(long_lines(b"ab\n", b'\n', 4, 0), 0);
}

proptest! {
    /// Line mode makes exactly the records the framer makes, whatever
    /// the chunking, EINTRs and short writes: lines (or NUL-ended items),
    /// delimiter included, longer ones cut every `max` bytes, and a final
    /// unended one.
    #[test]
    fn line_mode_makes_the_framers_records(
        data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(0u8), any::<u8>()], 0..3000),
        sizes in proptest::collection::vec(1usize..500, 0..30),
        max in 1usize..100,
        nul in any::<bool>(),
        short in any::<bool>(),
    ) {
        let (framing, delim) = if nul { (Framing::Nul, 0) } else { (Framing::Lines, b'\n') };
        let (framed, framed_stats, _) = run_publish(framing, max, &data, vec![data.len().max(1)], false, true);
        let (records, stats, warnings) = run_lines(delim, max, &data, sizes, short);
        prop_assert_eq!(&records, &framed.records());
        prop_assert_eq!(stats.bytes, data.len() as u64);
        prop_assert_eq!(stats.lines_split, framed_stats.lines_split);
        prop_assert_eq!(warnings.len(), usize::from(stats.lines_split > 0));
    }
}

/// A plain-mode device stand-in: each write is one record (the caller
/// keeps writes within the record limit); EINTR on every third call.
#[derive(Default)]
struct PlainSink {
    records: Vec<Vec<u8>>,
    calls: usize,
}

impl Write for &mut PlainSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls % 3 == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        self.records.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn raw_reads_are_records_each_within_the_limit() {
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let input = Choppy::new(&data, vec![100, 3000, 1, 4000, 999]);
    let mut sink = PlainSink::default();
    let stats = publish_raw(input, &mut sink, 1024).unwrap();
    assert_eq!(sink.records.concat(), data);
    let lens: Vec<_> = sink.records.iter().map(Vec::len).collect();
    assert_eq!(&lens[..5], [100, 1024, 1, 1024, 999]);
    assert!(lens.iter().all(|&n| (1..=1024).contains(&n)));
    assert_eq!((stats.records, stats.bytes), (lens.len() as u64, 5000));
}

#[test]
fn line_writer_reads_exactly_to_a_line_end_and_leaves_nothing_pending() {
    // What the spliced path does after a pass took nothing: read the rest
    // of the unended line exactly (its end found by a peek), so nothing
    // is left pending and the next bytes go back to splice.
    let mut sink = LineSink {
        delim: b'\n',
        max: 100,
        records: Vec::new(),
        short: false,
        calls: 0,
    };
    // (Choppy's reads are interrupted every other time: retried.)
    let mut input = Choppy::new(b"tw", vec![2]);
    let mut warn = |_: &str| {};
    let mut lines = LineWriter::new(&mut sink, b'\n', 100);
    for _ in 0..2 {
        assert!(lines.step(&mut input, &mut warn).unwrap());
    }
    assert!(lines.pending(), "an unended line is pending");
    let mut input = Choppy::new(b"o\nthree\nfo", vec![1, 10]);
    assert!(lines.read_exactly(&mut input, 2, &mut warn).unwrap());
    assert!(!lines.pending(), "the line's end was read");
    // The rest is still in the input, untouched.
    for _ in 0..2 {
        assert!(lines.step(&mut input, &mut warn).unwrap());
    }
    assert!(lines.pending());
    let mut steps = 0;
    while lines.step(&mut input, &mut warn).unwrap() {
        steps += 1;
        assert!(steps < 5, "no end");
    }
    let stats = lines.stats;
    assert_eq!(stats.bytes, 12);
    assert_eq!(sink.records, [&b"two\n"[..], b"three\n", b"fo"]);
}
