//! How `submsg` writes each record to stdout.

use baf::device::Record;
use base64::Engine as _;
use std::io::Write as _;

/// The output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Payloads as they were written (lines stay lines).
    #[default]
    Raw,
    /// `topic: line` for every line of every record.
    Prefix,
    /// One JSON object per record, one a line.
    Json,
    /// Each payload after its big-endian `u32` length, as `pubmsg --len32`
    /// reads it.
    Len32,
}

/// A topic's name, prepared once for each format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// The name.
    pub name: String,
    /// `topic: ` for [`Format::Prefix`].
    prefix: Vec<u8>,
    /// The name as a JSON string, quotes included.
    json: String,
}

impl Label {
    /// Prepares `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            prefix: format!("{name}: ").into_bytes(),
            json: json_string(name),
        }
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Appends `record` of topic `label` to `out` in `format`. `lost` is the
/// number of records of this topic lost just before this one.
pub fn write_record(
    format: Format,
    out: &mut Vec<u8>,
    label: &Label,
    record: &Record<'_>,
    lost: u64,
) {
    let payload = record.payload;
    match format {
        Format::Raw => out.extend_from_slice(payload),
        Format::Len32 => baf::frame::deframe(baf::frame::Framing::Len32, payload, out),
        Format::Prefix => {
            // Every line gets the prefix; the record ends with a newline.
            let mut rest = payload;
            loop {
                out.extend_from_slice(&label.prefix);
                match memchr::memchr(b'\n', rest) {
                    Some(i) if i + 1 < rest.len() => {
                        out.extend_from_slice(&rest[..=i]);
                        rest = &rest[i + 1..];
                    }
                    Some(_) => {
                        out.extend_from_slice(rest);
                        break;
                    }
                    None => {
                        out.extend_from_slice(rest);
                        out.push(b'\n');
                        break;
                    }
                }
            }
        }
        Format::Json => {
            let h = &record.header;
            let _ = write!(
                out,
                "{{\"topic\":{},\"seq\":{},\"timestamp\":{},\"pid\":{},\"uid\":{},\"writer\":{},\"lost\":{},\"payload\":",
                label.json, h.seq, h.timestamp_ns, h.pid, h.uid, h.writer, lost
            );
            match std::str::from_utf8(payload) {
                Ok(s) => {
                    let _ = serde_json::to_writer(&mut *out, s);
                    out.extend_from_slice(b",\"encoding\":\"utf8\"}\n");
                }
                Err(_) => {
                    out.push(b'"');
                    let start = out.len();
                    let len = base64::encoded_len(payload.len(), true).unwrap_or(0);
                    out.resize(start + len, 0);
                    let n = base64::engine::general_purpose::STANDARD
                        .encode_slice(payload, &mut out[start..])
                        .unwrap_or(0);
                    out.truncate(start + n);
                    out.extend_from_slice(b"\",\"encoding\":\"base64\"}\n");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baf::abi::RecordHeader;
    use proptest::prelude::*;

    fn rec(payload: &[u8]) -> Record<'_> {
        Record {
            header: RecordHeader {
                len: payload.len() as u32,
                flags: 0,
                seq: 7,
                timestamp_ns: 123_456_789,
                pid: 42,
                uid: 1000,
                writer: 1 << 33,
            },
            payload,
        }
    }

    fn fmt(format: Format, name: &str, payload: &[u8], lost: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_record(format, &mut out, &Label::new(name), &rec(payload), lost);
        out
    }

    #[test]
    fn raw_and_len32() {
        assert_eq!(fmt(Format::Raw, "t", b"a\nb", 0), b"a\nb");
        assert_eq!(fmt(Format::Len32, "t", b"ab", 0), b"\0\0\0\x02ab");
    }

    #[test]
    fn prefix_every_line() {
        assert_eq!(fmt(Format::Prefix, "t", b"one\n", 0), b"t: one\n");
        assert_eq!(fmt(Format::Prefix, "t", b"one", 0), b"t: one\n");
        assert_eq!(
            fmt(Format::Prefix, "a/b", b"1\n2\n", 0),
            b"a/b: 1\na/b: 2\n"
        );
        assert_eq!(fmt(Format::Prefix, "t", b"1\n2", 0), b"t: 1\nt: 2\n");
        assert_eq!(fmt(Format::Prefix, "t", b"\n", 0), b"t: \n");
    }

    #[test]
    fn json_utf8() {
        let out = fmt(Format::Json, "robot/arm", b"caf\xc3\xa9 \"q\"\n", 3);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["topic"], "robot/arm");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["timestamp"], 123_456_789);
        assert_eq!(v["pid"], 42);
        assert_eq!(v["uid"], 1000);
        assert_eq!(v["writer"], 1u64 << 33);
        assert_eq!(v["lost"], 3);
        assert_eq!(v["payload"], "café \"q\"\n");
        assert_eq!(v["encoding"], "utf8");
    }

    #[test]
    fn json_binary_is_base64() {
        let out = fmt(Format::Json, "t", b"\xff\x00\xfe", 0);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["payload"], "/wD+");
    }

    proptest! {
        /// Any payload gives one valid JSON line whose payload decodes back
        /// to the same bytes.
        #[test]
        fn json_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..200), utf8 in any::<bool>(), name in "[a-z]{1,8}(/[a-z]{1,8}){0,2}") {
            let payload = if utf8 { String::from_utf8_lossy(&payload).into_owned().into_bytes() } else { payload };
            let out = fmt(Format::Json, &name, &payload, 0);
            prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let s = v["payload"].as_str().unwrap();
            let back = match v["encoding"].as_str().unwrap() {
                "utf8" => s.as_bytes().to_vec(),
                "base64" => base64::engine::general_purpose::STANDARD.decode(s).unwrap(),
                other => panic!("{other}"),
            };
            prop_assert_eq!(back, payload);
            prop_assert_eq!(v["topic"].as_str().unwrap(), name.as_str());
        }

        /// Prefix output: every line starts with the prefix, and without the
        /// prefixes it is the payload (plus a final newline when missing).
        #[test]
        fn prefix_lines(payload in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..100)) {
            let out = fmt(Format::Prefix, "t", &payload, 0);
            prop_assert_eq!(out.last(), Some(&b'\n'));
            let mut back = Vec::new();
            for line in out.split_inclusive(|&b| b == b'\n') {
                prop_assert!(line.starts_with(b"t: "));
                back.extend_from_slice(&line[3..]);
            }
            let mut want = payload.clone();
            if want.last() != Some(&b'\n') {
                want.push(b'\n');
            }
            prop_assert_eq!(back, want);
        }
    }
}
