//! The wire format of an exported sample (version 2): the single source of
//! truth for what one bridge sends another. docs/bridge.md describes the
//! same layout for people.
//!
//! One Zenoh sample carries a **batch**: the records of one topic that one
//! `read()` of the exporting bridge returned (at most [`SAMPLE_BYTES`] of
//! frames; a batch is cut short where the source lost records, so that its
//! loss count is always the loss before its first record).
//!
//! **Payload**: the records as batch-write frames (kernel/ABI.md, "Batch
//! writes"), each the 40-byte ABI 4 record header, the payload, and zero
//! padding to a multiple of 8, with every integer little-endian. The
//! header keeps what the source's kernel stamped: `seq`, `timestamp_ns`,
//! `pid`, `uid` and `writer`; `flags` is 0. On a little-endian host this
//! is exactly what a record-mode `read()` returns, and exactly what a batch
//! `write()` takes (the kernel stamps its own `seq`, time and writer and
//! ignores the sent ones), so the exporting bridge copies the frames it
//! read once and the importing bridge writes the payload as it came.
//!
//! **Attachment**, all integers little-endian, [`FIXED`] bytes and two
//! strings:
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 1 | version: [`VERSION`] (2) |
//! | 1 | 1 | flags: bit 0 ([`FLAG_LOSSLESS`]) set when the topic was read losslessly |
//! | 2 | 1 | `H`, bytes of the host name |
//! | 3 | 1 | `T`, bytes of the topic name |
//! | 4 | 4 | count: records (frames) in the payload, at least 1 |
//! | 8 | 8 | lost: records of the topic overwritten on the source host before the bridge read them, just before the first record |
//! | 16 | 8 | skipped: records since the previous sample that the bridge did not export (it wrote them itself) |
//! | 24 | 8 | realtime offset (signed): `CLOCK_REALTIME` minus `CLOCK_MONOTONIC` on the source host, ns; a record's `timestamp_ns` plus it is its wall-clock time |
//! | 32 | 16 | the exporting bridge's Zenoh session id |
//! | 48 | `H` | host name (UTF-8) |
//! | 48+`H` | `T` | topic name |
//!
//! A reader must ignore bytes after the topic name (later revisions of
//! version 2 may append fields) and refuse a version it does not know.
//! Version 1 (one record a sample, a 72-byte attachment each) is refused
//! with a message that names it.
//!
//! Loss between the bridges: from the last record's `seq` of the previous
//! sample of the same topic and exporting bridge (`expected` is one more),
//! `last seq + 1 - expected - count - lost - skipped` records of this
//! sample's span never arrived ([`Attachment::lost_in_transit`]).

use baf::abi;
use std::borrow::Cow;
use std::fmt;

/// The wire format's version (the attachment's first byte).
pub const VERSION: u8 = 2;
/// Bytes of the attachment before the strings.
pub const FIXED: usize = 48;
/// Flag: the topic was read losslessly.
pub const FLAG_LOSSLESS: u8 = 1;
/// Bytes of a frame's header: the ABI 4 record header.
pub const FRAME_HEADER: usize = 40;
/// Most bytes of frames the exporter puts in one sample, unless a single
/// frame is larger: a sample then fits one Zenoh batch (64 KiB by
/// default, with room for Zenoh's headers and the attachment), so Zenoh
/// neither fragments nor reassembles it.
pub const SAMPLE_BYTES: usize = 63 * 1024;

// The frame header is the kernel's record header.
const _: () = assert!(FRAME_HEADER == abi::RECORD_HEADER_SIZE);

/// Bytes a frame of a `len`-byte record takes (header, payload, padding).
pub const fn frame_span(len: usize) -> usize {
    (FRAME_HEADER + len + 7) & !7
}

/// What a sample's attachment says about its batch. `S` is the type of
/// the two names: `&str` to encode without copying them and as
/// [`Attachment::decode`] gives them (borrowed from the attachment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attachment<S = String> {
    /// [`FLAG_LOSSLESS`] and future flags.
    pub flags: u8,
    /// Records in the payload.
    pub count: u32,
    /// Records lost on the source host just before the first one.
    pub lost: u64,
    /// Records not exported since the previous sample (the bridge's own).
    pub skipped: u64,
    /// `CLOCK_REALTIME` minus `CLOCK_MONOTONIC` on the source host, ns.
    pub realtime_offset: i64,
    /// The exporting bridge's Zenoh session id.
    pub bridge: [u8; 16],
    /// Source host name.
    pub host: S,
    /// Source topic name.
    pub topic: S,
}

/// Why a sample was not understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The attachment is shorter than its fixed part or its strings.
    Short,
    /// Version 1: one record a sample, sent by an older bridge.
    Older,
    /// A version this bridge does not know.
    Version(u8),
    /// A name that is not UTF-8.
    NotUtf8,
    /// The payload ends inside a frame.
    Truncated,
    /// A frame of length 0 or with flags set.
    BadFrame,
    /// The payload holds a number of frames other than the count.
    Count {
        /// The attachment's count.
        said: u32,
        /// Frames in the payload.
        found: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short => f.write_str("its attachment is too short"),
            DecodeError::Older => write!(
                f,
                "it comes from an older baf-bridge (wire version 1, one record a sample); this one speaks version {VERSION}: upgrade the exporting bridge"
            ),
            DecodeError::Version(v) => write!(
                f,
                "its attachment has wire version {v}, and this baf-bridge knows only version {VERSION}"
            ),
            DecodeError::NotUtf8 => f.write_str("a name in its attachment is not UTF-8"),
            DecodeError::Truncated => f.write_str("its payload ends inside a record frame"),
            DecodeError::BadFrame => {
                f.write_str("its payload has a record frame of length 0 or with flags set")
            }
            DecodeError::Count { said, found } => write!(
                f,
                "its attachment counts {said} records, its payload holds {found}"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// `s` cut to at most 255 bytes at a character boundary.
fn short(s: &str) -> &str {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

impl<S: AsRef<str>> Attachment<S> {
    /// Appends the encoded attachment to `out`. Names longer than 255
    /// bytes are cut (a topic name has at most 64; a host name at most 64
    /// on Linux).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let host = short(self.host.as_ref());
        let topic = short(self.topic.as_ref());
        out.reserve(FIXED + host.len() + topic.len());
        out.extend_from_slice(&[VERSION, self.flags, host.len() as u8, topic.len() as u8]);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.lost.to_le_bytes());
        out.extend_from_slice(&self.skipped.to_le_bytes());
        out.extend_from_slice(&self.realtime_offset.to_le_bytes());
        out.extend_from_slice(&self.bridge);
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(topic.as_bytes());
    }

    /// The encoded attachment.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// Records of this sample's span lost between the two bridges, given
    /// the `seq` expected next from the same bridge and topic and the
    /// `seq` of the sample's last record.
    pub fn lost_in_transit(&self, expected: u64, last_seq: u64) -> u64 {
        last_seq
            .wrapping_add(1)
            .saturating_sub(expected)
            .saturating_sub(u64::from(self.count))
            .saturating_sub(self.lost)
            .saturating_sub(self.skipped)
    }

    /// The wall-clock time of a record stamped `timestamp` (monotonic, ns)
    /// on the source host; 0 if it would be before 1970.
    pub fn realtime(&self, timestamp: u64) -> u64 {
        u64::try_from(i128::from(timestamp) + i128::from(self.realtime_offset)).unwrap_or(0)
    }
}

impl<'a> Attachment<&'a str> {
    /// Decodes an attachment; the names are borrowed from it.
    pub fn decode(b: &'a [u8]) -> Result<Self, DecodeError> {
        match *b.first().ok_or(DecodeError::Short)? {
            VERSION => {}
            1 => return Err(DecodeError::Older),
            v => return Err(DecodeError::Version(v)),
        }
        let fixed = b.get(..FIXED).ok_or(DecodeError::Short)?;
        let (h, t) = (usize::from(fixed[2]), usize::from(fixed[3]));
        let host = b.get(FIXED..FIXED + h).ok_or(DecodeError::Short)?;
        let topic = b.get(FIXED + h..FIXED + h + t).ok_or(DecodeError::Short)?;
        let text = |s: &'a [u8]| std::str::from_utf8(s).map_err(|_| DecodeError::NotUtf8);
        let mut bridge = [0u8; 16];
        bridge.copy_from_slice(&fixed[32..48]);
        Ok(Self {
            flags: fixed[1],
            count: u32_at(fixed, 4).ok_or(DecodeError::Short)?,
            lost: u64_at(fixed, 8).ok_or(DecodeError::Short)?,
            skipped: u64_at(fixed, 16).ok_or(DecodeError::Short)?,
            realtime_offset: u64_at(fixed, 24).ok_or(DecodeError::Short)? as i64,
            bridge,
            host: text(host)?,
            topic: text(topic)?,
        })
    }
}

/// Reads a frame header (little-endian) from the start of `b`.
pub fn frame_header(b: &[u8]) -> Option<abi::RecordHeader> {
    Some(abi::RecordHeader {
        len: u32_at(b, 0)?,
        flags: u32_at(b, 4)?,
        seq: u64_at(b, 8)?,
        timestamp_ns: u64_at(b, 16)?,
        pid: u32_at(b, 24)?,
        uid: u32_at(b, 28)?,
        writer: u64_at(b, 32)?,
    })
}

/// Writes `h` as a frame header (little-endian) into the first
/// [`FRAME_HEADER`] bytes of `out`.
pub fn put_frame_header(h: &abi::RecordHeader, out: &mut [u8]) {
    if let Some(o) = out.get_mut(..FRAME_HEADER) {
        o[0..4].copy_from_slice(&h.len.to_le_bytes());
        o[4..8].copy_from_slice(&h.flags.to_le_bytes());
        o[8..16].copy_from_slice(&h.seq.to_le_bytes());
        o[16..24].copy_from_slice(&h.timestamp_ns.to_le_bytes());
        o[24..28].copy_from_slice(&h.pid.to_le_bytes());
        o[28..32].copy_from_slice(&h.uid.to_le_bytes());
        o[32..40].copy_from_slice(&h.writer.to_le_bytes());
    }
}

/// One record of a sample's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Its header, as the source's kernel stamped it.
    pub header: abi::RecordHeader,
    /// Where its frame starts in the payload.
    pub offset: usize,
    /// The record.
    pub payload: &'a [u8],
}

/// The frames of a sample's payload, in order; an error ends them.
pub fn frames(payload: &[u8]) -> impl Iterator<Item = Result<Frame<'_>, DecodeError>> + '_ {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= payload.len() {
            return None;
        }
        let r = frame_at(payload, at);
        match &r {
            Ok(f) => at += frame_span(f.payload.len()),
            Err(_) => failed = true,
        }
        Some(r)
    })
}

fn frame_at(payload: &[u8], at: usize) -> Result<Frame<'_>, DecodeError> {
    let rest = payload.get(at..).unwrap_or_default();
    let header = frame_header(rest).ok_or(DecodeError::Truncated)?;
    let len = header.len as usize;
    if len == 0 || header.flags != 0 {
        return Err(DecodeError::BadFrame);
    }
    if rest.len() < frame_span(len) {
        return Err(DecodeError::Truncated);
    }
    let body = rest
        .get(FRAME_HEADER..FRAME_HEADER + len)
        .ok_or(DecodeError::Truncated)?;
    Ok(Frame {
        header,
        offset: at,
        payload: body,
    })
}

/// What one walk of a sample's payload found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// `seq` of the first record.
    pub first_seq: u64,
    /// `seq` of the last record.
    pub last_seq: u64,
    /// Payload bytes of all records.
    pub payload_bytes: u64,
    /// Records longer than `record_max` (they cannot be written as they
    /// are).
    pub too_long: u32,
}

/// Checks a sample's payload against its attachment's `count`: whole
/// frames, none empty or flagged, exactly `count` of them (at least one).
/// Counts the records longer than `record_max`.
pub fn check(payload: &[u8], count: u32, record_max: usize) -> Result<Checked, DecodeError> {
    let mut c = Checked::default();
    let mut found = 0u64;
    for f in frames(payload) {
        let f = f?;
        if found == 0 {
            c.first_seq = f.header.seq;
        }
        c.last_seq = f.header.seq;
        c.payload_bytes += f.payload.len() as u64;
        if f.payload.len() > record_max {
            c.too_long += 1;
        }
        found += 1;
    }
    if found != u64::from(count) || found == 0 {
        return Err(DecodeError::Count { said: count, found });
    }
    Ok(c)
}

/// The frames of a checked payload as a batch `write()` takes them: the
/// payload itself on a little-endian host; on a big-endian one, a copy
/// with each header in native byte order.
pub fn to_native(payload: &[u8]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        return Cow::Borrowed(payload);
    }
    let mut out = payload.to_vec();
    let offsets: Vec<(usize, abi::RecordHeader)> = frames(payload)
        .map_while(Result::ok)
        .map(|f| (f.offset, f.header))
        .collect();
    for (at, h) in offsets {
        if let Some(o) = out.get_mut(at..at + FRAME_HEADER) {
            o.copy_from_slice(&h.to_bytes());
        }
    }
    Cow::Owned(out)
}

/// Makes the record-mode frames just appended to `out` (from `start` on)
/// wire frames: nothing to do on a little-endian host; on a big-endian
/// one, each header turned little-endian.
pub fn native_to_wire(out: &mut [u8], start: usize) {
    if cfg!(target_endian = "little") {
        return;
    }
    let mut at = start;
    while let Some(h) = out.get(at..).and_then(abi::RecordHeader::from_bytes) {
        if let Some(o) = out.get_mut(at..) {
            put_frame_header(&h, o);
        }
        at += frame_span(h.len as usize);
    }
}

/// Appends the frame of one record to `out` (header little-endian).
pub fn push_frame(out: &mut Vec<u8>, header: &abi::RecordHeader, payload: &[u8]) {
    let start = out.len();
    out.resize(start + frame_span(payload.len()), 0);
    if let Some(frame) = out.get_mut(start..) {
        put_frame_header(
            &abi::RecordHeader {
                len: payload.len() as u32,
                flags: 0,
                ..*header
            },
            frame,
        );
        if let Some(body) = frame.get_mut(FRAME_HEADER..FRAME_HEADER + payload.len()) {
            body.copy_from_slice(payload);
        }
    }
}

/// Where a record came from, as `--envelope json` shows it: the batch's
/// attachment and the record's frame header together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance<S = String> {
    /// Writer's pid on the source host (0: not visible to the bridge).
    pub pid: u32,
    /// Writer's effective uid.
    pub uid: u32,
    /// Sequence number in the source topic.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` at write, ns (source host).
    pub timestamp: u64,
    /// `CLOCK_REALTIME` at write, ns since the epoch (source host).
    pub realtime: u64,
    /// Source host name.
    pub host: S,
    /// Source topic name.
    pub topic: S,
}

impl<'a> Attachment<&'a str> {
    /// The provenance of the record with header `h` in this batch.
    pub fn provenance(&self, h: &abi::RecordHeader) -> Provenance<&'a str> {
        Provenance {
            pid: h.pid,
            uid: h.uid,
            seq: h.seq,
            timestamp: h.timestamp_ns,
            realtime: self.realtime(h.timestamp_ns),
            host: self.host,
            topic: self.topic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn att() -> Attachment<&'static str> {
        Attachment {
            flags: FLAG_LOSSLESS,
            count: 3,
            lost: 2,
            skipped: 1,
            realtime_offset: -5,
            bridge: *b"0123456789abcdef",
            host: "robot-1",
            topic: "robot/arm",
        }
    }

    fn header(seq: u64) -> abi::RecordHeader {
        abi::RecordHeader {
            seq,
            timestamp_ns: 1000 + seq,
            pid: 4242,
            uid: 1000,
            writer: 77,
            ..abi::RecordHeader::default()
        }
    }

    fn payload(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, p) in records {
            push_frame(&mut out, &header(*seq), p);
        }
        out
    }

    #[test]
    fn attachment_layout_is_as_documented() {
        let b = att().encode();
        assert_eq!(b.len(), FIXED + 7 + 9);
        assert_eq!(&b[..4], &[2, 1, 7, 9]);
        assert_eq!(&b[4..8], &3u32.to_le_bytes());
        assert_eq!(&b[8..16], &2u64.to_le_bytes());
        assert_eq!(&b[16..24], &1u64.to_le_bytes());
        assert_eq!(&b[24..32], &(-5i64).to_le_bytes());
        assert_eq!(&b[32..48], b"0123456789abcdef");
        assert_eq!(&b[48..], b"robot-1robot/arm");
    }

    #[test]
    fn frames_are_record_mode_frames() {
        // On a little-endian host a wire frame is byte for byte what a
        // record-mode read returns and a batch write takes.
        let p = payload(&[(7, b"hello")]);
        assert_eq!(p.len(), frame_span(5));
        assert_eq!(frame_span(5), abi::record_span(5));
        assert_eq!(&p[..4], &5u32.to_le_bytes());
        assert_eq!(&p[8..16], &7u64.to_le_bytes());
        assert_eq!(&p[FRAME_HEADER..FRAME_HEADER + 5], b"hello");
        assert!(
            p[FRAME_HEADER + 5..].iter().all(|&b| b == 0),
            "zero padding"
        );
        if cfg!(target_endian = "little") {
            let h = abi::RecordHeader {
                len: 5,
                ..header(7)
            };
            assert_eq!(&p[..FRAME_HEADER], &h.to_bytes());
            let read: Vec<_> = baf::device::records(&p).collect();
            assert_eq!(read.len(), 1);
            assert_eq!(read[0].header, h);
            assert_eq!(read[0].payload, b"hello");
            assert!(matches!(to_native(&p), Cow::Borrowed(_)), "no copy");
        }
        let mut native = p.clone();
        native_to_wire(&mut native, 0);
        assert_eq!(native, p, "a no-op on frames already little-endian here");
    }

    #[test]
    fn round_trip_many_records() {
        let recs: Vec<(u64, Vec<u8>)> = (0..1000u64)
            .map(|i| (10 + i, vec![i as u8; 1 + (i as usize % 70)]))
            .collect();
        let borrowed: Vec<(u64, &[u8])> = recs.iter().map(|(s, p)| (*s, p.as_slice())).collect();
        let p = payload(&borrowed);
        let c = check(&p, 1000, 64).unwrap();
        assert_eq!(c.first_seq, 10);
        assert_eq!(c.last_seq, 1009);
        // Lengths 65..=70: 6 of every 70 records, 14 whole cycles.
        assert_eq!(c.too_long, 84);
        let got: Vec<(u64, Vec<u8>)> = frames(&p)
            .map(|f| f.unwrap())
            .map(|f| (f.header.seq, f.payload.to_vec()))
            .collect();
        assert_eq!(got, recs);
        let a = att();
        let f = frames(&p).next().unwrap().unwrap();
        let prov = a.provenance(&f.header);
        assert_eq!((prov.pid, prov.uid, prov.seq), (4242, 1000, 10));
        assert_eq!((prov.timestamp, prov.realtime), (1010, 1005));
    }

    #[test]
    fn max_sizes() {
        // A 64 KiB record (the largest the tests use) and a sample of the
        // most bytes the exporter sends.
        let big = vec![0xa5u8; 65536];
        let p = payload(&[(0, &big)]);
        assert_eq!(check(&p, 1, 65536).unwrap().too_long, 0);
        assert_eq!(check(&p, 1, 65535).unwrap().too_long, 1);
        let one = [1u8; 64];
        let n = SAMPLE_BYTES / frame_span(64);
        let recs: Vec<(u64, &[u8])> = (0..n as u64).map(|i| (i, &one[..])).collect();
        let p = payload(&recs);
        assert!(p.len() <= SAMPLE_BYTES);
        assert_eq!(check(&p, n as u32, 64).unwrap().last_seq, n as u64 - 1);
        // Long names are cut at a character, to fit their length byte.
        let long = "é".repeat(200);
        let a = Attachment {
            host: long.as_str(),
            ..att()
        };
        let b = a.encode();
        assert_eq!(Attachment::decode(&b).unwrap().host, "é".repeat(127));
        let a = Attachment {
            count: u32::MAX,
            lost: u64::MAX,
            skipped: u64::MAX,
            realtime_offset: i64::MIN,
            ..att()
        };
        let b = a.encode();
        assert_eq!(Attachment::decode(&b).unwrap(), a);
    }

    #[test]
    fn bad_attachments() {
        let b = att().encode();
        assert_eq!(Attachment::decode(&[]), Err(DecodeError::Short));
        assert_eq!(Attachment::decode(&b[..40]), Err(DecodeError::Short));
        assert_eq!(
            Attachment::decode(&b[..b.len() - 1]),
            Err(DecodeError::Short)
        );
        let mut v1 = b.clone();
        v1[0] = 1;
        assert_eq!(Attachment::decode(&v1), Err(DecodeError::Older));
        assert!(DecodeError::Older.to_string().contains("older baf-bridge"));
        let mut v3 = b.clone();
        v3[0] = 3;
        assert_eq!(Attachment::decode(&v3), Err(DecodeError::Version(3)));
        assert!(DecodeError::Version(3).to_string().contains("version 3"));
        let mut bad = b.clone();
        bad[FIXED] = 0xff;
        assert_eq!(Attachment::decode(&bad), Err(DecodeError::NotUtf8));
        // Later revisions may append: ignored.
        let mut longer = b.clone();
        longer.extend_from_slice(b"more");
        assert_eq!(Attachment::decode(&longer).unwrap(), att());
    }

    #[test]
    fn bad_payloads() {
        let p = payload(&[(1, b"abc"), (2, b"defgh")]);
        assert!(check(&p, 2, 100).is_ok());
        // Cut anywhere inside the second frame, or inside the first.
        for cut in [p.len() - 1, frame_span(3) + 3, frame_span(3) + 41, 10, 1] {
            assert_eq!(
                check(&p[..cut], 2, 100),
                Err(DecodeError::Truncated),
                "{cut}"
            );
        }
        // Whole frames, but not as many as the count says.
        assert_eq!(
            check(&p[..frame_span(3)], 2, 100),
            Err(DecodeError::Count { said: 2, found: 1 })
        );
        assert_eq!(
            check(&p, 3, 100),
            Err(DecodeError::Count { said: 3, found: 2 })
        );
        assert_eq!(
            check(&[], 0, 100),
            Err(DecodeError::Count { said: 0, found: 0 })
        );
        let mut flagged = p.clone();
        flagged[4] = 1;
        assert_eq!(check(&flagged, 2, 100), Err(DecodeError::BadFrame));
        let mut empty = p.clone();
        empty[..4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(check(&empty, 2, 100), Err(DecodeError::BadFrame));
        // A length far past the end.
        let mut huge = p.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(check(&huge, 2, 100), Err(DecodeError::Truncated));
    }

    #[test]
    fn transit_loss() {
        let a = att(); // 3 records, 2 lost at the source, 1 skipped
                       // Expected 10; the last is 17: 8 seqs, 6 accounted for.
        assert_eq!(a.lost_in_transit(10, 17), 2);
        assert_eq!(a.lost_in_transit(12, 17), 0);
        assert_eq!(a.lost_in_transit(30, 17), 0, "older than expected: nothing");
        let plain = Attachment {
            count: 1,
            lost: 0,
            skipped: 0,
            ..att()
        };
        assert_eq!(plain.lost_in_transit(3, 7), 4);
        assert_eq!(plain.lost_in_transit(7, 7), 0);
    }

    proptest! {
        #[test]
        fn round_trip(
            flags: u8, count: u32, lost: u64, skipped: u64, realtime_offset: i64,
            bridge: [u8; 16],
            host in "[a-z0-9.-]{0,64}", topic in "[a-z0-9/]{1,64}",
        ) {
            let a = Attachment { flags, count, lost, skipped, realtime_offset, bridge, host: host.as_str(), topic: topic.as_str() };
            let b = a.encode();
            prop_assert_eq!(Attachment::decode(&b).unwrap(), a);
        }

        #[test]
        fn frames_round_trip(recs in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 1..300)), 1..50)) {
            let borrowed: Vec<(u64, &[u8])> = recs.iter().map(|(s, p)| (*s, p.as_slice())).collect();
            let p = payload(&borrowed);
            let c = check(&p, recs.len() as u32, 300).unwrap();
            prop_assert_eq!(c.too_long, 0);
            prop_assert_eq!(c.last_seq, recs.last().unwrap().0);
            let got: Vec<(u64, Vec<u8>)> = frames(&p).map(|f| f.unwrap()).map(|f| (f.header.seq, f.payload.to_vec())).collect();
            prop_assert_eq!(&got, &recs);
            // Any cut short of the end is refused, never a panic.
            for cut in 0..p.len() {
                prop_assert!(check(&p[..cut], recs.len() as u32, 300).is_err());
            }
        }
    }
}
