//! `submsg TOPIC`: copy a topic to stdout.

use anyhow::{Context, Result};
use clap::Parser;
use std::io::{ErrorKind, Read, Write};

/// Subscribe to a baf topic and write what is published to stdout.
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:\n  submsg sensors | service-y\n  submsg /dev/fanout0"
)]
struct Args {
    /// Topic name (under /dev/baf) or device path.
    topic: String,
}

fn run(args: Args) -> Result<()> {
    let path = baf::topic_path(&args.topic);
    let mut dev = std::fs::File::open(&path)
        .with_context(|| format!("cannot open topic {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match dev.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        match out.write_all(&buf[..n]).and_then(|()| out.flush()) {
            Ok(()) => {}
            // A closed stdout (`submsg t | head -1`) is a normal way to stop.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing stdout"),
        }
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("submsg: {e:#}");
        std::process::exit(1);
    }
}
