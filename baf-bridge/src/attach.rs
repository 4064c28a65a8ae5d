//! The provenance of an exported record, sent as the Zenoh sample's
//! attachment.
//!
//! Version 1, all integers little-endian, 72 bytes and two strings:
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 1 | version: 1 |
//! | 1 | 1 | flags: bit 0 set when the topic was read losslessly |
//! | 2 | 1 | `H`, bytes of the host name |
//! | 3 | 1 | `T`, bytes of the topic name |
//! | 4 | 4 | pid of the record's writer, as the exporting bridge sees it (0: not visible) |
//! | 8 | 4 | effective uid of the writer |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 8 | seq: the record's sequence number in its topic |
//! | 24 | 8 | timestamp: `CLOCK_MONOTONIC` of the source host when it was written, ns |
//! | 32 | 8 | realtime: the same instant on the source host's `CLOCK_REALTIME`, ns since the epoch |
//! | 40 | 8 | lost: records of the topic overwritten on the source host before the bridge read them, just before this one |
//! | 48 | 8 | skipped: records of the topic just before this one that the bridge did not export (it wrote them itself) |
//! | 56 | 16 | the exporting bridge's Zenoh session id |
//! | 72 | `H` | host name (UTF-8) |
//! | 72+`H` | `T` | topic name |
//!
//! A reader must ignore bytes after the topic name (later versions append
//! fields) and refuse a version it does not know. `seq` minus the previous
//! sample's `seq` of the same topic and bridge, less one, less `lost` and
//! `skipped`, is what was lost between the two bridges.

use std::fmt;

/// The attachment's version.
pub const VERSION: u8 = 1;
/// Bytes before the strings.
pub const FIXED: usize = 72;
/// Flag: the topic was read losslessly.
pub const FLAG_LOSSLESS: u8 = 1;

/// Where a record came from. `S` is the type of the two names: `&str` to
/// encode without copying them, and what [`Provenance::decode`] gives
/// (borrowed from the attachment); `String` to keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance<S = String> {
    /// [`FLAG_LOSSLESS`] and future flags.
    pub flags: u8,
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
    /// Records lost on the source host just before this one.
    pub lost: u64,
    /// Records not exported just before this one (the bridge's own).
    pub skipped: u64,
    /// The exporting bridge's Zenoh session id.
    pub bridge: [u8; 16],
    /// Source host name.
    pub host: S,
    /// Source topic name.
    pub topic: S,
}

/// Why an attachment was not understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its fixed part or its strings.
    Short,
    /// A version this bridge does not know.
    Version(u8),
    /// A name that is not UTF-8.
    NotUtf8,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short => f.write_str("the provenance attachment is too short"),
            DecodeError::Version(v) => write!(f, "unknown provenance attachment version {v}"),
            DecodeError::NotUtf8 => f.write_str("a name in the provenance attachment is not UTF-8"),
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

impl<S: AsRef<str>> Provenance<S> {
    /// Appends the encoded attachment to `out`. Names longer than 255
    /// bytes are cut (a topic name has at most 64; a host name at most 64
    /// on Linux).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let host = short(self.host.as_ref());
        let topic = short(self.topic.as_ref());
        out.reserve(FIXED + host.len() + topic.len());
        out.push(VERSION);
        out.push(self.flags);
        out.push(host.len() as u8);
        out.push(topic.len() as u8);
        out.extend_from_slice(&self.pid.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for v in [
            self.seq,
            self.timestamp,
            self.realtime,
            self.lost,
            self.skipped,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
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

    /// Records lost between the two bridges before this one, given the
    /// `seq` expected next from the same bridge and topic.
    pub fn lost_in_transit(&self, expected: u64) -> u64 {
        self.seq
            .saturating_sub(expected)
            .saturating_sub(self.lost)
            .saturating_sub(self.skipped)
    }
}

impl<'a> Provenance<&'a str> {
    /// Decodes an attachment; the names are borrowed from it.
    pub fn decode(b: &'a [u8]) -> Result<Self, DecodeError> {
        let version = *b.first().ok_or(DecodeError::Short)?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let fixed = b.get(..FIXED).ok_or(DecodeError::Short)?;
        let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().unwrap_or_default());
        let (h, t) = (usize::from(fixed[2]), usize::from(fixed[3]));
        let host = b.get(FIXED..FIXED + h).ok_or(DecodeError::Short)?;
        let topic = b.get(FIXED + h..FIXED + h + t).ok_or(DecodeError::Short)?;
        let text = |s: &'a [u8]| std::str::from_utf8(s).map_err(|_| DecodeError::NotUtf8);
        let mut bridge = [0u8; 16];
        bridge.copy_from_slice(&fixed[56..72]);
        Ok(Self {
            flags: fixed[1],
            pid: u32_at(4),
            uid: u32_at(8),
            seq: u64_at(16),
            timestamp: u64_at(24),
            realtime: u64_at(32),
            lost: u64_at(40),
            skipped: u64_at(48),
            bridge,
            host: text(host)?,
            topic: text(topic)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Provenance<&'static str> {
        Provenance {
            flags: FLAG_LOSSLESS,
            pid: 4242,
            uid: 1000,
            seq: 7,
            timestamp: 123_456_789,
            realtime: 1_700_000_000_000_000_000,
            lost: 2,
            skipped: 1,
            bridge: *b"0123456789abcdef",
            host: "robot-1",
            topic: "robot/arm",
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let b = sample().encode();
        assert_eq!(b.len(), FIXED + 7 + 9);
        assert_eq!(&b[..4], &[1, 1, 7, 9]);
        assert_eq!(&b[4..8], &4242u32.to_le_bytes());
        assert_eq!(&b[8..12], &1000u32.to_le_bytes());
        assert_eq!(&b[12..16], &[0; 4]);
        assert_eq!(&b[16..24], &7u64.to_le_bytes());
        assert_eq!(&b[40..48], &2u64.to_le_bytes());
        assert_eq!(&b[48..56], &1u64.to_le_bytes());
        assert_eq!(&b[56..72], b"0123456789abcdef");
        assert_eq!(&b[72..], b"robot-1robot/arm");
    }

    #[test]
    fn bad_attachments() {
        let b = sample().encode();
        assert_eq!(Provenance::decode(&[]), Err(DecodeError::Short));
        assert_eq!(Provenance::decode(&b[..40]), Err(DecodeError::Short));
        assert_eq!(
            Provenance::decode(&b[..b.len() - 1]),
            Err(DecodeError::Short)
        );
        let mut v2 = b.clone();
        v2[0] = 2;
        assert_eq!(Provenance::decode(&v2), Err(DecodeError::Version(2)));
        let mut bad = b.clone();
        bad[FIXED] = 0xff;
        assert_eq!(Provenance::decode(&bad), Err(DecodeError::NotUtf8));
        // Later versions may append: ignored.
        let mut longer = b.clone();
        longer.extend_from_slice(b"more");
        assert_eq!(Provenance::decode(&longer).unwrap(), sample());
    }

    #[test]
    fn transit_loss() {
        let mut p = sample();
        // Expected 3, got 7: 4 missing, 2 lost at the source, 1 skipped.
        assert_eq!(p.lost_in_transit(3), 1);
        assert_eq!(p.lost_in_transit(7), 0);
        assert_eq!(p.lost_in_transit(9), 0, "older than expected: nothing");
        p.lost = 0;
        p.skipped = 0;
        assert_eq!(p.lost_in_transit(3), 4);
    }

    #[test]
    fn long_names_are_cut_at_a_character() {
        let long = "é".repeat(200);
        let p = Provenance {
            host: long.as_str(),
            ..sample()
        };
        let b = p.encode();
        let d = Provenance::decode(&b).unwrap();
        assert_eq!(d.host, "é".repeat(127));
    }

    proptest! {
        #[test]
        fn round_trip(
            flags: u8, pid: u32, uid: u32, seq: u64, timestamp: u64, realtime: u64,
            lost: u64, skipped: u64, bridge: [u8; 16],
            host in "[a-z0-9.-]{0,64}", topic in "[a-z0-9/]{1,64}",
        ) {
            let p = Provenance { flags, pid, uid, seq, timestamp, realtime, lost, skipped, bridge, host: host.as_str(), topic: topic.as_str() };
            let b = p.encode();
            prop_assert_eq!(Provenance::decode(&b).unwrap(), p);
        }
    }
}
