//! The file layer: written files read back (by this crate's reader; the
//! Python `mcap` package reads them too, in `scripts/mcap-check.py`),
//! rotation, and corrupt or cut-short files.

use super::*;
use crate::output::Output;
use crate::read::{Item, Recording};
use crate::show;

/// A scratch directory, removed at the end.
pub(crate) struct Scratch(pub PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("baf-record-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn header(seq: u64, ts: u64, len: usize) -> RecordHeader {
    RecordHeader {
        len: len as u32,
        flags: 0,
        seq,
        timestamp_ns: ts,
        pid: 42,
        uid: 1000,
        writer: (1 << 40) ^ seq,
    }
}

fn meta() -> TopicMeta {
    TopicMeta {
        ring_size: 65536,
        record_max: 16384,
        lossless: false,
    }
}

/// Writes `n` records to each of topics a, b (seq from 0, with a gap of 3
/// before a's record 5) and returns the path.
fn sample(dir: &Path, name: &str, n: u64, compression: Compression) -> PathBuf {
    let path = dir.join(name);
    let mut f = McapFile::create(&path, compression).unwrap();
    f.channel("empty", &meta()).unwrap();
    for i in 0..n {
        for t in ["a", "b/c"] {
            let seq = if t == "a" && i >= 5 { i + 3 } else { i };
            let lost = if t == "a" && i == 5 { 3 } else { 0 };
            let payload = format!("{t} record {i}\n");
            let h = header(seq, 1_000 + i * 10, payload.len());
            f.write(t, &meta(), &h, payload.as_bytes(), lost, 5_000_000_000)
                .unwrap();
        }
    }
    f.finish().unwrap()
}

fn records(rec: &Recording) -> Vec<(String, RecordHeader, Vec<u8>, u64)> {
    let mut out = Vec::new();
    rec.for_each(|item| {
        if let Item::Record {
            topic,
            header,
            payload,
            log_time,
        } = item
        {
            out.push((topic.to_string(), header, payload.to_vec(), log_time));
        }
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn records_come_back_whole_with_their_headers() {
    let dir = Scratch::new("roundtrip");
    for c in [Compression::None, Compression::Zstd, Compression::Lz4] {
        let path = sample(&dir.0, &format!("{c:?}.mcap"), 20, c);
        let rec = Recording::open(&path, false).unwrap();
        assert!(rec.finished && rec.damage.is_none());
        let got = records(&rec);
        assert_eq!(got.len(), 40, "{c:?}");
        let (topic, h, payload, log_time) = &got[2];
        assert_eq!(topic, "a");
        assert_eq!(payload, b"a record 1\n");
        assert_eq!(*h, header(1, 1_010, payload.len()));
        assert_eq!(*log_time, 5_000_001_010, "monotonic stamp + offset");
        let a: Vec<u64> = got.iter().filter(|r| r.0 == "a").map(|r| r.1.seq).collect();
        assert_eq!(a[4..7], [4, 8, 9]);
    }
}

#[test]
fn info_counts_records_bytes_and_loss() {
    let dir = Scratch::new("info");
    let path = sample(&dir.0, "x.mcap", 10, Compression::None);
    let rec = Recording::open(&path, false).unwrap();
    let all = show::summarize(&rec).unwrap();
    assert_eq!(all["a"].records, 10);
    assert_eq!(all["a"].lost, 3);
    assert_eq!(all["a"].gaps, 1);
    assert_eq!(all["a"].seqs, Some((0, 12)));
    assert_eq!(all["b/c"].lost, 0);
    assert_eq!(
        all["b/c"].bytes,
        (0..10)
            .map(|i| format!("b/c record {i}\n").len() as u64)
            .sum::<u64>()
    );
    let text = show::info(&rec, false).unwrap();
    assert!(text.contains("records: 20, lost: 3"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&show::info(&rec, true).unwrap()).unwrap();
    assert_eq!(json["topics"]["a"]["metadata"]["ring_size"], "65536");
    assert_eq!(json["lost"], 3);
}

#[test]
fn cat_prints_as_submsg_does_with_the_recorded_loss() {
    let dir = Scratch::new("cat");
    let path = sample(&dir.0, "x.mcap", 6, Compression::Zstd);
    let rec = Recording::open(&path, false).unwrap();
    let mut out = Vec::new();
    let only = crate::record::selection(&["a".to_string()], &[]).unwrap();
    show::cat(
        &rec,
        &only,
        show::style(baf::format::Format::Raw, false),
        &mut out,
    )
    .unwrap();
    let want: String = (0..6).map(|i| format!("a record {i}\n")).collect();
    assert_eq!(String::from_utf8(out).unwrap(), want);
    let mut out = Vec::new();
    let all = baf::pattern::Selection::default();
    show::cat(
        &rec,
        &all,
        show::style(baf::format::Format::Json, false),
        &mut out,
    )
    .unwrap();
    let lines: Vec<serde_json::Value> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    let gap = lines.iter().find(|v| v["seq"] == 8).unwrap();
    assert_eq!(gap["lost"], 3);
    assert_eq!(gap["writer"], (1u64 << 40) ^ 8);
    assert_eq!(gap["pid"], 42);
    assert_eq!(gap["time"], baf::format::rfc3339(5_000_001_050));
}

#[test]
fn rotation_keeps_at_most_max_files() {
    let dir = Scratch::new("rotate");
    let mut out = Output::new(&dir.0, "rec", Compression::None, Some(3)).unwrap();
    let mut made = Vec::new();
    for i in 0..7 {
        let f = out.open(1_700_000_000_000_000_000 + i).unwrap();
        made.push(f.finish().unwrap());
        let files = out.files();
        assert!(files.len() <= 3, "{files:?}");
        assert_eq!(files.last(), made.last(), "the newest is kept");
    }
    assert_eq!(out.files(), made[4..].to_vec(), "the oldest went first");
    // A file name given: the first file is exactly it, then name-0001...
    let target = dir.0.join("one.mcap");
    let mut out = Output::new(&target, "x", Compression::None, Some(2)).unwrap();
    let first = out.open(0).unwrap().finish().unwrap();
    assert_eq!(first, target);
    let second = out.open(0).unwrap().finish().unwrap();
    assert_eq!(second, dir.0.join("one-0001.mcap"));
    let third = out.open(0).unwrap().finish().unwrap();
    assert_eq!(out.files(), vec![second, third]);
}

#[test]
fn bad_outputs_are_usage_errors() {
    let dir = Scratch::new("badout");
    let exists = dir.0.join("exists.mcap");
    std::fs::write(&exists, b"x").unwrap();
    let e = Output::new(&exists, "x", Compression::None, None).unwrap_err();
    assert_eq!(baf::error::kind(&e), Some(baf::error::Kind::Invalid));
    assert!(baf::error::message(&e).contains("never overwrites"));
    let e = Output::new(
        &dir.0.join("no/such/dir/f.mcap"),
        "x",
        Compression::None,
        None,
    )
    .unwrap_err();
    assert_eq!(baf::error::kind(&e), Some(baf::error::Kind::Invalid));
    assert!(
        baf::error::message(&e).contains("no such directory"),
        "{e:#}"
    );
}

#[test]
fn cut_short_files_are_refused_or_recovered_up_to_the_last_chunk() {
    let dir = Scratch::new("cut");
    // Large enough for several 1 MiB chunks.
    let path = dir.0.join("big.mcap");
    let mut f = McapFile::create(&path, Compression::None).unwrap();
    let payload = vec![b'x'; 4000];
    for i in 0..2000u64 {
        f.write("t", &meta(), &header(i, i, payload.len()), &payload, 0, 0)
            .unwrap();
    }
    f.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.0.join("cut.mcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = Recording::open(&cut, false).err().unwrap();
    assert_eq!(baf::error::kind(&e), Some(baf::error::Kind::Invalid));
    let msg = baf::error::message(&e);
    assert!(
        msg.contains("not a finished recording") && msg.contains("--recover"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    let rec = Recording::open(&cut, true).unwrap();
    assert!(!rec.finished && rec.damage.is_some());
    let got = records(&rec);
    assert!(got.len() > 500 && got.len() < 2000, "{}", got.len());
    // What is read is whole and in order.
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.1.seq, i as u64);
        assert_eq!(r.2, payload);
    }
}

#[test]
fn corrupt_files_are_refused() {
    let dir = Scratch::new("corrupt");
    let path = sample(&dir.0, "ok.mcap", 50, Compression::None);
    let mut bytes = std::fs::read(&path).unwrap();
    // A payload byte in the middle of the chunk: its CRC no longer fits.
    let at = bytes
        .windows(12)
        .position(|w| w == b"a record 25\n")
        .unwrap();
    bytes[at] = b'A';
    let bad = dir.0.join("bad.mcap");
    std::fs::write(&bad, &bytes).unwrap();
    let e = Recording::open(&bad, false).err().unwrap();
    assert_eq!(baf::error::kind(&e), Some(baf::error::Kind::Invalid));
    assert!(baf::error::message(&e).contains("corrupt"), "{e:#}");
    for junk in [&b""[..], b"hello, world", &bytes[8..]] {
        let p = dir.0.join("junk.mcap");
        std::fs::write(&p, junk).unwrap();
        let e = Recording::open(&p, false).err().unwrap();
        assert!(
            baf::error::message(&e).contains("not an MCAP file"),
            "{e:#}"
        );
    }
}

#[test]
fn a_file_dropped_unfinished_is_still_finished() {
    // What an error path leaves (the writer's drop writes the summary).
    let dir = Scratch::new("drop");
    let path = dir.0.join("d.mcap");
    let mut f = McapFile::create(&path, Compression::Zstd).unwrap();
    f.write("t", &meta(), &header(0, 0, 2), b"hi", 0, 0)
        .unwrap();
    drop(f);
    let rec = Recording::open(&path, false).unwrap();
    assert_eq!(records(&rec).len(), 1);
}

#[test]
fn encoding_round_trips_and_rejects_short_data() {
    let h = header(u64::MAX - 1, 7, 3);
    let mut data = Vec::new();
    encode(&h, b"abc", &mut data);
    assert_eq!(data.len(), HEADER + 3);
    assert_eq!(decode(&data), Some((h, &b"abc"[..])));
    assert_eq!(decode(&data[..HEADER + 2]), None);
    assert_eq!(decode(&data[..10]), None);
}

/// With `BAF_MCAP_SAMPLES=DIR` (`scripts/mcap-check.sh`), writes sample
/// recordings there and `expected.json` (messages per channel and file),
/// for an independent reader to check. Without it, nothing.
#[test]
fn samples_for_other_readers() {
    let Some(dir) = std::env::var_os("BAF_MCAP_SAMPLES") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut expected = serde_json::Map::new();
    for c in [Compression::None, Compression::Zstd, Compression::Lz4] {
        let name = format!("{c:?}.mcap").to_lowercase();
        let _ = std::fs::remove_file(dir.join(&name));
        let path = sample(&dir, &name, 300, c);
        let rec = Recording::open(&path, false).unwrap();
        let all = show::summarize(&rec).unwrap();
        let mut counts = serde_json::Map::new();
        for (topic, t) in &all {
            counts.insert(topic.clone(), t.records.into());
        }
        counts.insert(
            LOSS_TOPIC.into(),
            all.values().map(|t| t.gaps).sum::<u64>().into(),
        );
        expected.insert(name, counts.into());
    }
    std::fs::write(
        dir.join("expected.json"),
        serde_json::Value::from(expected).to_string(),
    )
    .unwrap();
}

/// The cost of compression on this machine: records written per second
/// and the file's size, for 64-byte and 1 KiB text-like records. Run by
/// hand (`cargo test --release -p baf-record -- --ignored --nocapture
/// compression_cost`); docs/record.md has the figures.
#[test]
#[ignore]
fn compression_cost() {
    let dir = Scratch::new("cost");
    for size in [64usize, 1024] {
        // 1024 different text-like payloads (numbers that change), used
        // in turn: compressible as logs and sensor lines are, not more.
        let payloads: Vec<Vec<u8>> = (0..1024u64)
            .map(|k| {
                let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut p = Vec::with_capacity(size);
                while p.len() < size {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let line = format!("id={} t={}.{} s={} ", x % 100_000, x % 40, x % 100, x % 7);
                    p.extend_from_slice(line.as_bytes());
                }
                p.truncate(size);
                p
            })
            .collect();
        let n = (256 << 20) / (size + HEADER) as u64;
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let path = dir.0.join(format!("{c:?}-{size}.mcap"));
            let t0 = std::time::Instant::now();
            let mut f = McapFile::create(&path, c).unwrap();
            for i in 0..n {
                let payload = &payloads[i as usize % 1024];
                f.write("t", &meta(), &header(i, i, size), payload, 0, 0)
                    .unwrap();
            }
            f.finish().unwrap();
            let secs = t0.elapsed().as_secs_f64();
            let bytes = std::fs::metadata(&path).unwrap().len();
            println!(
                "{size:>5} B records, {c:?}: {:.2} M records/s, {:.0} MB/s of payload, file {:.1}% of the payload",
                n as f64 / secs / 1e6,
                (n * size as u64) as f64 / secs / 1e6,
                bytes as f64 * 100.0 / (n * size as u64) as f64
            );
            let _ = std::fs::remove_file(&path);
        }
    }
}
