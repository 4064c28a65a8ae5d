//! `pubmsg TOPIC`: publish stdin to a topic, one record per line.

use anyhow::{Context, Result};
use clap::Parser;
use std::io::{BufRead, Write};

/// Publish stdin to a baf topic: each line (newline included) is one record.
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:\n  service-x | pubmsg sensors\n  seq 3 | pubmsg /dev/fanout0"
)]
struct Args {
    /// Topic name (under /dev/baf) or device path.
    topic: String,
}

fn run(args: Args) -> Result<()> {
    let path = baf::topic_path(&args.topic);
    let mut dev = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open topic {}", path.display()))?;
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if stdin
            .read_until(b'\n', &mut line)
            .context("reading stdin")?
            == 0
        {
            return Ok(());
        }
        // One write per line: the device keeps each write whole.
        dev.write_all(&line)
            .with_context(|| format!("writing to {}", path.display()))?;
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("pubmsg: {e:#}");
        std::process::exit(1);
    }
}
