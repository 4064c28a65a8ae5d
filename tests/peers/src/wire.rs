//! A TCP connection for the broker clients (MQTT, NATS): what is sent is
//! buffered and written when the buffer fills or on `flush` (as the
//! brokers' own client libraries coalesce small messages); what arrives is
//! read in large chunks and cut into frames by the protocol's parser.

use crate::transport::Subscriber;
use anyhow::{bail, Context, Result};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::time::{Duration, Instant};

/// Bytes buffered before a write; the read buffer's starting size.
const BUF: usize = 64 * 1024;

/// One whole frame at the front of the read buffer.
pub struct Frame {
    /// The protocol's kind of frame.
    pub kind: u8,
    /// The bytes handed over (within the frame).
    pub body: Range<usize>,
    /// The frame's whole length.
    pub total: usize,
}

pub struct Conn {
    s: TcpStream,
    out: Vec<u8>,
    inb: Vec<u8>,
    start: usize,
    end: usize,
    timeout: Option<Duration>,
}

impl Conn {
    pub fn connect(addr: &str) -> io::Result<Self> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Self {
            s,
            out: Vec::with_capacity(BUF),
            inb: vec![0; 4 * BUF],
            start: 0,
            end: 0,
            timeout: None,
        })
    }

    /// Queues one message: the protocol's header, written by `head` straight
    /// into the send buffer, then `msg`, then `tail`; writes when the buffer
    /// is full. Nothing is allocated per message.
    pub fn send(&mut self, head: impl FnOnce(&mut Vec<u8>), msg: &[u8], tail: &[u8]) -> Result<()> {
        head(&mut self.out);
        self.out.extend_from_slice(msg);
        self.out.extend_from_slice(tail);
        if self.out.len() >= BUF {
            self.flush()?;
        }
        Ok(())
    }

    /// Queues `p` and writes everything queued.
    pub fn send_now(&mut self, p: &[u8]) -> Result<()> {
        self.out.extend_from_slice(p);
        self.flush()
    }

    pub fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.s
                .write_all(&self.out)
                .context("writing to the broker")?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads more, waiting at most `timeout`; false when nothing came.
    fn fill(&mut self, timeout: Duration) -> Result<bool> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.inb.len() {
            if self.start > 0 {
                self.inb.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                self.inb.resize(self.inb.len() * 2, 0);
            }
        }
        let t = Some(timeout.max(Duration::from_millis(1)));
        if self.timeout != t {
            self.s
                .set_read_timeout(t)
                .context("setting a read timeout")?;
            self.timeout = t;
        }
        match self.s.read(&mut self.inb[self.end..]) {
            Ok(0) => bail!("the broker closed the connection"),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e).context("reading from the broker"),
        }
    }

    /// Hands every whole frame that has arrived to `on` (which says whether
    /// it was a message); if none was a message, waits up to `timeout` for
    /// more. Returns the number of messages.
    pub fn recv(
        &mut self,
        timeout: Duration,
        parse: Parser,
        mut on: impl FnMut(u8, &[u8]) -> Result<bool>,
    ) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut n = 0;
        loop {
            while let Some(f) = parse(&self.inb[self.start..self.end])? {
                let at = self.start;
                if on(f.kind, &self.inb[at + f.body.start..at + f.body.end])? {
                    n += 1;
                }
                self.start += f.total;
            }
            if n > 0 {
                return Ok(n);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left)? {
                return Ok(0);
            }
        }
    }

    /// Waits for the next frame (a handshake answer) and returns its kind
    /// and body; frames after it stay buffered.
    pub fn wait_for(&mut self, timeout: Duration, parse: Parser) -> Result<(u8, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = parse(&self.inb[self.start..self.end])? {
                let at = self.start;
                let body = self.inb[at + f.body.start..at + f.body.end].to_vec();
                self.start += f.total;
                return Ok((f.kind, body));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left)? {
                bail!("the broker did not answer within {timeout:?}");
            }
        }
    }
}

/// The protocol's frame parser.
pub type Parser = fn(&[u8]) -> Result<Option<Frame>>;

/// A broker subscriber: frames cut by `parse`; `payload` gives a message
/// frame's payload (`None` for any other frame).
pub struct BrokerSub {
    pub c: Conn,
    pub parse: Parser,
    pub payload: fn(u8, &[u8]) -> Option<&[u8]>,
}

impl Subscriber for BrokerSub {
    fn recv(&mut self, timeout: Duration, f: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let payload = self.payload;
        self.c.recv(timeout, self.parse, |kind, body| {
            Ok(payload(kind, body).map(&mut *f).is_some())
        })
    }
}
