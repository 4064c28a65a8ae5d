//! NATS core, the least a client must speak: INFO, CONNECT, SUB, PUB, MSG,
//! PING/PONG. Written here, as the MQTT client is, so that what is measured
//! is the server (nats-server), not a client library's runtime. Server
//! PINGs are not answered: a run lasts seconds, the server's first PING
//! comes after two minutes.

use crate::transport::{Publisher, Subscriber, Transport};
use crate::wire::{BrokerSub, Conn, Frame};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::time::Duration;

/// A server at `addr` (`host:port`).
pub struct Nats {
    pub addr: String,
}

const MSG: u8 = b'M';
const PONG: u8 = b'O';
const INFO: u8 = b'N';

/// One whole protocol frame at the front of `buf`.
fn parse(buf: &[u8]) -> Result<Option<Frame>> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[..eol];
    let word = line.split(|&b| b == b' ').next().unwrap_or_default();
    let kind = match word {
        b"MSG" => MSG,
        b"PONG" => PONG,
        b"INFO" => INFO,
        b"PING" => b'I',
        b"+OK" => b'K',
        b"-ERR" => bail!("the NATS server said: {}", String::from_utf8_lossy(line)),
        _ => bail!(
            "the NATS server sent an unknown line: {}",
            String::from_utf8_lossy(line)
        ),
    };
    if kind != MSG {
        return Ok(Some(Frame {
            kind,
            body: 0..eol,
            total: eol + 2,
        }));
    }
    let n: usize = line
        .rsplit(|&b| b == b' ')
        .next()
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse().ok())
        .with_context(|| {
            format!(
                "a MSG line without a size: {}",
                String::from_utf8_lossy(line)
            )
        })?;
    let start = eol + 2;
    Ok((buf.len() >= start + n + 2).then_some(Frame {
        kind,
        body: start..start + n,
        total: start + n + 2,
    }))
}

impl Nats {
    fn connect(&self) -> Result<Conn> {
        let mut c = Conn::connect(&self.addr)
            .with_context(|| format!("connecting to the NATS server at {}", self.addr))?;
        let (kind, _) = c.wait_for(Duration::from_secs(10), parse)?;
        if kind != INFO {
            bail!("the NATS server did not start with INFO");
        }
        c.send_now(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"baf-bench\",\"lang\":\"rust\",\"version\":\"0\",\"protocol\":1}\r\n")?;
        Self::ping(&mut c)?;
        Ok(c)
    }

    /// A round trip: everything sent before it has been processed.
    fn ping(c: &mut Conn) -> Result<()> {
        c.send_now(b"PING\r\n")?;
        let (kind, _) = c.wait_for(Duration::from_secs(10), parse)?;
        if kind != PONG {
            bail!("the NATS server did not answer PING with PONG");
        }
        Ok(())
    }
}

struct Pub {
    c: Conn,
    topic: String,
}

impl Publisher for Pub {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let topic = &self.topic;
        self.c.send(
            |o| {
                // Formatting into a Vec cannot fail.
                let _ = write!(o, "PUB {topic} {}\r\n", msg.len());
            },
            msg,
            b"\r\n",
        )
    }
    fn flush(&mut self) -> Result<()> {
        self.c.flush()
    }
}

/// A MSG frame's payload.
fn payload(kind: u8, body: &[u8]) -> Option<&[u8]> {
    (kind == MSG).then_some(body)
}

impl Transport for Nats {
    fn name(&self) -> String {
        "NATS (core)".into()
    }
    fn publisher(&self, topic: &str, _size: usize) -> Result<Box<dyn Publisher>> {
        Ok(Box::new(Pub {
            c: self.connect()?,
            topic: topic.to_string(),
        }))
    }
    fn subscriber(&self, topic: &str, _size: usize) -> Result<Box<dyn Subscriber>> {
        let mut c = self.connect()?;
        c.send_now(format!("SUB {topic} 1\r\n").as_bytes())?;
        Self::ping(&mut c)?;
        Ok(Box::new(BrokerSub { c, parse, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let buf = b"MSG t 1 5\r\nhello\r\nPING\r\nMSG t 1 3\r\nab";
        let f = parse(buf).unwrap().unwrap();
        assert_eq!(
            (f.kind, &buf[f.body.clone()], f.total),
            (MSG, &b"hello"[..], 18)
        );
        let f = parse(&buf[18..]).unwrap().unwrap();
        assert_eq!((f.kind, f.total), (b'I', 6));
        assert!(parse(&buf[24..]).unwrap().is_none());
        assert!(parse(b"-ERR 'x'\r\n").is_err());
    }
}
