//! Batches of records: framing them for one batch `write()`
//! ([`Batch`], [`write_batch`]), and splitting a record-mode `read()` into
//! records ([`records`]).

use crate::abi;
use anyhow::Result;
use std::io::{self, Write};

/// Records framed for one batch `write()` on a file with
/// [`abi::FLAG_BATCH`]: each frame is a [`abi::RecordHeader`] with only
/// `len` set, the payload, and zero padding to [`abi::record_span`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    buf: Vec<u8>,
    records: usize,
    payload_bytes: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` of frames.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Bytes the frame of a `len`-byte payload takes.
    pub const fn frame_len(len: usize) -> usize {
        abi::record_span(len)
    }

    /// Appends one record. An empty payload, or one longer than a header
    /// can describe, is refused (`InvalidInput`); the topic's own limit is
    /// the caller's to respect (the kernel refuses the frame with
    /// `EMSGSIZE`).
    pub fn push(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a record must have 1 to 4294967295 bytes",
                )
            })?;
        // One reservation, then the frame in place: the header (only `len`
        // set: the rest is zero, as is the padding), the payload.
        let start = self.buf.len();
        let span = abi::record_span(payload.len());
        self.buf.resize(start + span, 0);
        if let Some(frame) = self.buf.get_mut(start..start + span) {
            frame[..4].copy_from_slice(&len.to_ne_bytes());
            frame[abi::RECORD_HEADER_SIZE..abi::RECORD_HEADER_SIZE + payload.len()]
                .copy_from_slice(payload);
        }
        self.records += 1;
        self.payload_bytes += payload.len();
        Ok(())
    }

    /// The frames, ready for `write()`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes of frames.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Records in the batch.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Payload bytes in the batch.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.records = 0;
        self.payload_bytes = 0;
    }
}

/// Writes the framed batch `frames` (see [`Batch`]) to a topic file with
/// [`abi::FLAG_BATCH`] set, all of it.
///
/// The kernel may publish only a prefix of the frames: a signal ends a
/// batch early at a frame boundary, and a bad frame ends it before that
/// frame. The write is then retried from where it stopped (and an `EINTR`
/// before anything was published is retried too), so a bad frame gets its
/// errno on the retry. An error after part of the batch was published says
/// how much was.
pub fn write_batch<W: Write>(mut out: W, frames: &[u8]) -> Result<()> {
    // Frame counts are needed only to word an error: counted then.
    let total = || records(frames).count();
    let mut done = 0usize;
    while done < frames.len() {
        let rest = frames.get(done..).unwrap_or_default();
        match out.write(rest) {
            Ok(0) => {
                return Err(partial(
                    io::Error::from(io::ErrorKind::WriteZero),
                    records(frames.get(..done).unwrap_or_default()).count(),
                    total(),
                ))
            }
            // All of it: the common case, nothing to walk.
            Ok(n) if n >= rest.len() => done = frames.len(),
            Ok(n) => {
                // The kernel stops only at frame boundaries.
                let mut walked = 0usize;
                for r in records(rest) {
                    if walked >= n {
                        break;
                    }
                    walked += abi::record_span(r.payload.len());
                }
                if walked != n {
                    return Err(partial(
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("the topic took {n} bytes of a batch, which is not a whole number of frames"),
                        ),
                        records(frames.get(..done).unwrap_or_default()).count(),
                        total(),
                    ));
                }
                done += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(partial(
                    e,
                    records(frames.get(..done).unwrap_or_default()).count(),
                    total(),
                ))
            }
        }
    }
    Ok(())
}

/// `e`, with how much of the batch was published when there was some.
fn partial(e: io::Error, done: usize, total: usize) -> anyhow::Error {
    let e = anyhow::Error::new(e);
    if done == 0 {
        e
    } else {
        e.context(format!(
            "the topic took {done} of the {total} records of a batch, then refused the rest"
        ))
    }
}

/// One record of a record-mode read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The kernel-filled header.
    pub header: abi::RecordHeader,
    /// The payload.
    pub payload: &'a [u8],
}

/// Splits the bytes of one record-mode `read()` into records. Stops at the
/// first incomplete record (which the kernel never returns).
pub fn records(mut buf: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        let header = abi::RecordHeader::from_bytes(buf)?;
        let len = header.len as usize;
        let payload = buf.get(abi::RECORD_HEADER_SIZE..abi::RECORD_HEADER_SIZE + len)?;
        buf = buf.get(abi::record_span(len)..).unwrap_or_default();
        Some(Record { header, payload })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_are_record_mode_records() {
        let mut b = Batch::new();
        assert!(b.is_empty());
        b.push(b"hello").unwrap();
        b.push(&[7u8; 8]).unwrap();
        b.push(b"x").unwrap();
        assert_eq!(b.records(), 3);
        assert_eq!(b.payload_bytes(), 14);
        assert_eq!(b.len(), 48 + 48 + 48);
        let bytes = b.as_bytes();
        assert_eq!(&bytes[..4], &5u32.to_ne_bytes());
        assert!(bytes[4..40].iter().all(|&x| x == 0), "flags and the rest 0");
        assert_eq!(&bytes[40..45], b"hello");
        assert!(bytes[45..48].iter().all(|&x| x == 0), "zero padding");
        let recs: Vec<_> = records(bytes).collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].payload, &[7u8; 8]);
        for r in &recs {
            let (len, span) = abi::check_frame(&r.header, bytes.len(), 100).unwrap();
            assert_eq!((len, span), (r.payload.len(), Batch::frame_len(len)));
        }
        b.clear();
        assert!(b.is_empty() && b.as_bytes().is_empty());
        assert_eq!(b.push(b"").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    struct Device {
        got: Vec<u8>,
        take: usize,
        calls: usize,
        fail_after: Option<usize>,
        taken: usize,
    }

    impl Write for &mut Device {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            if self.fail_after == Some(self.taken) {
                return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
            }
            let mut n = 0;
            for r in records(buf).take(self.take) {
                if self.fail_after == Some(self.taken) {
                    break;
                }
                n += abi::record_span(r.payload.len());
                self.taken += 1;
            }
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn device(take: usize, fail_after: Option<usize>) -> Device {
        Device {
            got: Vec::new(),
            take,
            calls: 0,
            fail_after,
            taken: 0,
        }
    }

    #[test]
    fn batch_write_errors_say_how_far_it_got() {
        let mut b = Batch::new();
        for i in 0..10u8 {
            b.push(&[i; 3]).unwrap();
        }
        let mut d = device(4, Some(6));
        let e = write_batch(&mut d, b.as_bytes()).unwrap_err();
        assert_eq!(crate::error::errno(&e), Some(libc::EMSGSIZE));
        assert!(
            crate::error::message(&e).starts_with("the topic took 6 of the 10 records"),
            "{}",
            crate::error::message(&e)
        );
        assert_eq!(d.got, b.as_bytes()[..6 * abi::record_span(3)]);
        // Refused at once: the plain errno.
        let mut d = device(4, Some(0));
        let e = write_batch(&mut d, b.as_bytes()).unwrap_err();
        assert_eq!(crate::error::errno(&e), Some(libc::EMSGSIZE));
        assert!(!crate::error::message(&e).contains("records"));
    }

    #[test]
    fn a_short_count_inside_a_frame_is_an_error() {
        struct Odd;
        impl Write for Odd {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len().min(12))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut b = Batch::new();
        b.push(b"abc").unwrap();
        let e = write_batch(Odd, b.as_bytes()).unwrap_err();
        assert!(crate::error::message(&e).contains("not a whole number of frames"));
    }

    proptest! {
        /// However the device splits a batch, it gets every frame once, in
        /// order.
        #[test]
        fn short_writes_resume_at_the_boundary(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..50), 0..40),
            take in 1usize..5,
        ) {
            let mut b = Batch::new();
            for p in &payloads {
                b.push(p).unwrap();
            }
            let mut d = device(take, None);
            write_batch(&mut d, b.as_bytes()).unwrap();
            prop_assert_eq!(&d.got, &b.as_bytes().to_vec());
            let back: Vec<Vec<u8>> = records(&d.got).map(|r| r.payload.to_vec()).collect();
            prop_assert_eq!(back, payloads);
        }
    }
}
