//! `baf-setup`: manage topics. Topic management arrives with dynamic topics;
//! for now it reports what the running module provides.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Create, remove and show baf topics.
#[derive(Parser)]
#[command(version, after_help = "Examples:\n  baf-setup status")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show each fanout device and its ring state.
    Status,
}

fn status() -> Result<()> {
    println!(
        "{:<16} {:>10} {:>10} {:>12}",
        "DEVICE", "RING", "RECORD_MAX", "NEXT_SEQ"
    );
    let mut entries: Vec<_> = std::fs::read_dir("/dev")
        .context("cannot list /dev")?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("fanout"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let topic = baf::device::Topic::open(&e.path(), false, true)?;
        let info = topic
            .info()
            .with_context(|| format!("querying {}", e.path().display()))?;
        println!(
            "{:<16} {:>10} {:>10} {:>12}",
            e.file_name().to_string_lossy(),
            info.ring_size,
            info.record_max,
            info.next_seq
        );
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    let result = match args.command {
        Command::Status => status(),
    };
    if let Err(e) = result {
        eprintln!("baf-setup: {e:#}");
        std::process::exit(1);
    }
}
