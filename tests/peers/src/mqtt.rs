//! MQTT 3.1.1 at QoS 0, the least a client must speak: CONNECT, SUBSCRIBE,
//! PUBLISH. Written here (a few dozen lines) rather than taken from a crate
//! so that no client library's threads or runtime sit between the harness
//! and the broker: what is measured is the broker (mosquitto).

use crate::transport::{Publisher, Subscriber, Transport};
use crate::wire::{BrokerSub, Conn, Frame};
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A broker at `addr` (`host:port`).
pub struct Mqtt {
    pub addr: String,
}

static CLIENT: AtomicU64 = AtomicU64::new(0);

/// MQTT's variable-length "remaining length".
fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One packet: fixed-header byte, remaining length, body.
fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![kind];
    put_len(&mut p, body.len());
    p.extend_from_slice(body);
    p
}

/// A whole packet at the front of `buf`: its type byte and body.
fn parse(buf: &[u8]) -> Result<Option<Frame>> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let (mut n, mut shift, mut i) = (0usize, 0u32, 1usize);
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        n |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            bail!("the broker sent a packet length of more than 4 bytes");
        }
    }
    Ok((buf.len() >= i + n).then_some(Frame {
        kind,
        body: i..i + n,
        total: i + n,
    }))
}

impl Mqtt {
    fn connect(&self) -> Result<Conn> {
        let mut c = Conn::connect(&self.addr)
            .with_context(|| format!("connecting to the MQTT broker at {}", self.addr))?;
        let id = format!(
            "baf-bench-{}-{}",
            std::process::id(),
            CLIENT.fetch_add(1, Ordering::Relaxed)
        );
        let mut body = Vec::new();
        put_str(&mut body, "MQTT");
        body.extend_from_slice(&[4, 0x02, 0, 0]); // level 4, clean session, no keep-alive
        put_str(&mut body, &id);
        c.send_now(&packet(0x10, &body))?;
        let (kind, _) = c.wait_for(Duration::from_secs(10), parse)?;
        if kind != 0x20 {
            bail!("the MQTT broker answered CONNECT with packet type {kind:#x}");
        }
        Ok(c)
    }
}

struct Pub {
    c: Conn,
    /// The topic, as PUBLISH carries it.
    topic: Vec<u8>,
}

impl Publisher for Pub {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        // PUBLISH, QoS 0: topic, payload (no packet id).
        let topic = &self.topic;
        self.c.send(
            |o| {
                o.push(0x30);
                put_len(o, topic.len() + msg.len());
                o.extend_from_slice(topic);
            },
            msg,
            b"",
        )
    }
    fn flush(&mut self) -> Result<()> {
        self.c.flush()
    }
}

/// A PUBLISH packet's payload (after its topic, and its packet id at QoS 1
/// and 2).
fn payload(kind: u8, body: &[u8]) -> Option<&[u8]> {
    if kind & 0xf0 != 0x30 {
        return None;
    }
    let tl = body
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)?;
    body.get(2 + tl + if kind & 0x06 != 0 { 2 } else { 0 }..)
}

impl Transport for Mqtt {
    fn name(&self) -> String {
        "mosquitto (MQTT, QoS 0)".into()
    }
    fn publisher(&self, topic: &str, _size: usize) -> Result<Box<dyn Publisher>> {
        let c = self.connect()?;
        let mut t = Vec::new();
        put_str(&mut t, topic);
        Ok(Box::new(Pub { c, topic: t }))
    }
    fn subscriber(&self, topic: &str, _size: usize) -> Result<Box<dyn Subscriber>> {
        let mut c = self.connect()?;
        let mut body = vec![0, 1];
        put_str(&mut body, topic);
        body.push(0);
        c.send_now(&packet(0x82, &body))?;
        let (kind, _) = c.wait_for(Duration::from_secs(10), parse)?;
        if kind != 0x90 {
            bail!("the MQTT broker answered SUBSCRIBE with packet type {kind:#x}");
        }
        Ok(Box::new(BrokerSub { c, parse, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for n in [0usize, 1, 127, 128, 16383, 16384, 2_097_151] {
            let p = packet(0x30, &vec![7; n]);
            let f = parse(&p).unwrap().unwrap();
            assert_eq!((f.kind, f.body.len(), f.total), (0x30, n, p.len()));
            assert!(parse(&p[..p.len() - 1]).unwrap().is_none());
        }
    }
}
