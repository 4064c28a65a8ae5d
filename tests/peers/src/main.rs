//! `baf-peer-bench`: baf beside the buses users would pick instead, run
//! inside the bench VM by `tests/vm/peer-bench.sh` (brokers started there,
//! on loopback). Every bus goes through the same harness ([`run`]): one
//! publisher thread, subscriber threads that count and check what arrives,
//! the same message sizes and run times. Prints Markdown tables; timing
//! never fails anything, a wrong or reordered message does.
//!
//!   baf-peer-bench throughput PEER... [--subs 1,8] [--sizes 64,4096,65536] [--secs 1]
//!   baf-peer-bench latency PEER... [--sizes 64,4096] [--rounds 2000]
//!   baf-peer-bench smoke PEER...     (one round trip each: the test suite's check)
//!
//! PEER: baf-read, baf-mmap, baf-batch, mqtt, nats, zenoh, iceoryx2,
//! iceoryx2-busy (latency only: its busy-waiting figure, shown apart).

mod bafx;
mod iox;
mod mqtt;
mod nats;
mod run;
mod transport;
mod wire;
mod zn;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::time::Duration;
use transport::Transport;

#[derive(Parser)]
#[command(about = "baf beside mosquitto, NATS, Zenoh and iceoryx2 (the bench VM's peer benchmark)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// The MQTT broker.
    #[arg(long, global = true, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// The NATS server.
    #[arg(long, global = true, default_value = "127.0.0.1:4222")]
    nats: String,
    /// First TCP port for Zenoh's sessions (one port a case).
    #[arg(long, global = true, default_value_t = 17447)]
    zenoh_port: u16,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fan-out throughput: one publisher, N subscribers.
    Throughput {
        peers: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        subs: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "64,4096,65536")]
        sizes: Vec<usize>,
        /// How long the publisher sends, each case.
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
    },
    /// Ping-pong round trips, blocking waits on both sides.
    Latency {
        peers: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "64,4096")]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 2000)]
        rounds: usize,
    },
    /// A few round trips through each peer: it starts and moves messages.
    Smoke { peers: Vec<String> },
}

/// A bus by name, and the broker process whose CPU counts with it.
struct Peer {
    t: Box<dyn Transport>,
    broker: Option<&'static str>,
}

fn peer(name: &str, cli: &Cli, case: u16) -> Result<Peer> {
    let (t, broker): (Box<dyn Transport>, _) = match name {
        "baf-read" => (Box::new(bafx::Baf { mmap: false, batch: false }), None),
        "baf-mmap" => (Box::new(bafx::Baf { mmap: true, batch: false }), None),
        "baf-batch" => (Box::new(bafx::Baf { mmap: true, batch: true }), None),
        "mqtt" => (Box::new(mqtt::Mqtt { addr: cli.mqtt.clone() }), Some("mosquitto")),
        "nats" => (Box::new(nats::Nats { addr: cli.nats.clone() }), Some("nats-server")),
        // A fresh port a case: sessions of the last case may still be
        // closing.
        "zenoh" => (Box::new(zn::Zenoh::new(cli.zenoh_port.wrapping_add(case))), None),
        "iceoryx2" => (Box::new(iox::Iox { busy_wait: false, max_subscribers: 16 }), None),
        "iceoryx2-busy" => (Box::new(iox::Iox { busy_wait: true, max_subscribers: 16 }), None),
        _ => bail!("unknown peer {name:?} (baf-read, baf-mmap, baf-batch, mqtt, nats, zenoh, iceoryx2, iceoryx2-busy)"),
    };
    Ok(Peer { t, broker })
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("baf-peer-bench: {e:#}");
        std::process::exit(1);
    }
}

fn human(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn size_name(s: usize) -> String {
    if s >= 1024 && s.is_multiple_of(1024) {
        format!("{} KiB", s / 1024)
    } else {
        format!("{s} B")
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let mut case: u16 = 0;
    match &cli.cmd {
        Cmd::Throughput {
            peers,
            subs,
            sizes,
            secs,
        } => {
            println!(
                "| bus | subscribers | message | delivered msg/s | MB/s | lost | CPU ms per MB |"
            );
            println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
            for &n in subs {
                for &size in sizes {
                    if size < 8 {
                        bail!("messages must have at least 8 bytes (their sequence number)");
                    }
                    for name in peers {
                        case += 1;
                        let p = peer(name, &cli, case)?;
                        let topic = format!("t-{case}");
                        let r = run::throughput(
                            p.t.as_ref(),
                            &topic,
                            n,
                            size,
                            Duration::from_secs_f64(*secs),
                            p.broker,
                        )
                        .with_context(|| format!("{}: {n} subscribers, {size} B", p.t.name()))?;
                        let notes = if r.notes.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", r.notes.join("; "))
                        };
                        println!(
                            "| {}{notes} | {n} | {} | {} | {:.1} | {:.1}% | {:.1} |",
                            p.t.name(),
                            size_name(size),
                            human(r.msgs_per_s()),
                            r.mb_per_s(),
                            r.lost_pct(),
                            r.cpu_ms_per_mb()
                        );
                    }
                }
            }
        }
        Cmd::Latency {
            peers,
            sizes,
            rounds,
        } => {
            println!("| bus | message | round trip p50 µs | p99 µs | round trips | lost |");
            println!("| --- | ---: | ---: | ---: | ---: | ---: |");
            for &size in sizes {
                for name in peers {
                    case += 1;
                    let p = peer(name, &cli, case)?;
                    let l = run::latency(p.t.as_ref(), &case.to_string(), size, *rounds)
                        .with_context(|| format!("{}: round trips of {size} B", p.t.name()))?;
                    println!(
                        "| {} | {} | {:.0} | {:.0} | {} | {} |",
                        p.t.name(),
                        size_name(size),
                        l.pct(0.5),
                        l.pct(0.99),
                        l.rtts.len(),
                        l.lost
                    );
                }
            }
        }
        Cmd::Smoke { peers } => {
            for name in peers {
                case += 1;
                let p = peer(name, &cli, case)?;
                let l = run::latency(p.t.as_ref(), &format!("smoke{case}"), 64, 3)
                    .with_context(|| format!("{}: smoke test", p.t.name()))?;
                if l.rtts.is_empty() {
                    bail!("{}: no message came back", p.t.name());
                }
                println!(
                    "ok {name}: {} round trips, p50 {:.0} µs",
                    l.rtts.len(),
                    l.pct(0.5)
                );
            }
        }
    }
    Ok(())
}
