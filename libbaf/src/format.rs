//! How a subscriber prints records (`submsg`, `baf-record cat`): raw,
//! prefixed, verbose, JSON with provenance, or len32 frames.

use crate::device::Record;
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
    /// `topic line` for every line of every record (`mosquitto_sub -v`).
    Verbose,
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
    /// `topic ` for [`Format::Verbose`].
    verbose: Vec<u8>,
    /// The name as a JSON string, quotes included.
    json: String,
}

impl Label {
    /// Prepares `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            prefix: format!("{name}: ").into_bytes(),
            verbose: format!("{name} ").into_bytes(),
            json: json_string(name),
        }
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// How records are printed: the format, and what ends each record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// The output format.
    pub format: Format,
    /// End each record with a NUL byte instead of a newline (`-0`): the
    /// record's own final newline (or NUL) is left out, and a record is
    /// one item, prefixed once, whatever newlines it holds.
    pub nul: bool,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns, for the JSON `time`
    /// field ([`wall_offset_ns`]).
    pub wall_offset_ns: i128,
}

impl From<Format> for Style {
    fn from(format: Format) -> Self {
        Style {
            format,
            ..Style::default()
        }
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// How far CLOCK_REALTIME is ahead of CLOCK_MONOTONIC (the clock of the
/// kernel's record timestamps) now, in ns: a record's wall-clock time is
/// its timestamp plus this.
pub fn wall_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}

/// `unix_ns` (ns since 1970-01-01 UTC) as RFC 3339 in UTC with
/// nanoseconds: `2025-01-31T12:00:00.000000001Z`.
pub fn rfc3339(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// `payload` without its final newline or NUL (for `-0`).
fn trimmed(payload: &[u8]) -> &[u8] {
    match payload.split_last() {
        Some((b'\n' | 0, rest)) => rest,
        _ => payload,
    }
}

/// Appends `record` of topic `label` to `out` as `style` says. `lost` is
/// the number of records of this topic lost just before this one.
pub fn write_record(
    style: impl Into<Style>,
    out: &mut Vec<u8>,
    label: &Label,
    record: &Record<'_>,
    lost: u64,
) {
    let style = style.into();
    let payload = record.payload;
    let end = if style.nul { 0 } else { b'\n' };
    match style.format {
        Format::Raw if style.nul => {
            out.extend_from_slice(trimmed(payload));
            out.push(0);
        }
        Format::Raw => out.extend_from_slice(payload),
        Format::Len32 => crate::frame::deframe(crate::frame::Framing::Len32, payload, out),
        Format::Prefix | Format::Verbose if style.nul => {
            let prefix = if style.format == Format::Prefix {
                &label.prefix
            } else {
                &label.verbose
            };
            out.extend_from_slice(prefix);
            out.extend_from_slice(trimmed(payload));
            out.push(0);
        }
        Format::Prefix | Format::Verbose => {
            let prefix = if style.format == Format::Prefix {
                &label.prefix
            } else {
                &label.verbose
            };
            // Every line gets the prefix; the record ends with a newline.
            let mut rest = payload;
            loop {
                out.extend_from_slice(prefix);
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
            let time = rfc3339(i128::from(h.timestamp_ns) + style.wall_offset_ns);
            match std::str::from_utf8(payload) {
                Ok(s) => {
                    let _ = serde_json::to_writer(&mut *out, s);
                    let _ = write!(out, ",\"encoding\":\"utf8\",\"time\":\"{time}\"}}");
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
                    let _ = write!(out, "\",\"encoding\":\"base64\",\"time\":\"{time}\"}}");
                }
            }
            out.push(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::RecordHeader;
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

    fn fmt_style(style: Style, name: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_record(style, &mut out, &Label::new(name), &rec(payload), 0);
        out
    }

    #[test]
    fn verbose_is_topic_space_line() {
        assert_eq!(fmt(Format::Verbose, "a/b", b"one\n", 0), b"a/b one\n");
        assert_eq!(fmt(Format::Verbose, "t", b"1\n2", 0), b"t 1\nt 2\n");
    }

    #[test]
    fn nul_ends_each_record() {
        let nul = |format| Style {
            format,
            nul: true,
            ..Style::default()
        };
        assert_eq!(fmt_style(nul(Format::Raw), "t", b"a\n"), b"a\0");
        assert_eq!(fmt_style(nul(Format::Raw), "t", b"a\nb"), b"a\nb\0");
        assert_eq!(fmt_style(nul(Format::Raw), "t", b"x\0"), b"x\0");
        assert_eq!(fmt_style(nul(Format::Raw), "t", b"\n"), b"\0");
        assert_eq!(fmt_style(nul(Format::Prefix), "t", b"a\nb\n"), b"t: a\nb\0");
        assert_eq!(fmt_style(nul(Format::Verbose), "t", b"a\nb"), b"t a\nb\0");
        let json = fmt_style(nul(Format::Json), "t", b"a\n");
        assert_eq!(json.last(), Some(&0));
        assert!(!json.contains(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&json[..json.len() - 1]).unwrap();
        assert_eq!(v["payload"], "a\n");
    }

    #[test]
    fn rfc3339_utc_with_nanoseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339(4_107_542_399 * 1_000_000_000 + 5),
            "2100-02-28T23:59:59.000000005Z"
        );
    }

    #[test]
    fn json_time_is_the_timestamp_on_the_wall_clock() {
        let style = Style {
            format: Format::Json,
            nul: false,
            // The monotonic clock started at 2023-11-14T22:13:20Z.
            wall_offset_ns: 1_700_000_000_000_000_000,
        };
        let out = fmt_style(style, "t", b"x");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123456789Z");
        // The other fields are as they were.
        assert_eq!(v["timestamp"], 123_456_789);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut want = vec![
            "topic",
            "seq",
            "timestamp",
            "pid",
            "uid",
            "writer",
            "lost",
            "payload",
            "encoding",
            "time",
        ];
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
        // The live offset puts a fresh timestamp near now.
        let off = wall_offset_ns();
        assert!(off > 1_500_000_000_000_000_000, "{off}");
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
