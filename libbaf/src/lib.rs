//! Shared code of the baf tools.
//!
//! [`abi`] is the kernel module's own ABI file, compiled here unchanged;
//! [`device`] wraps a topic's character device in safe Rust (and writes
//! batches); [`mapped`] reads a topic through a mapping of its ring; [`control`]
//! creates, removes and lists topics; [`cli`] gives the tools their exit
//! codes and one-line errors.

#[path = "../../kernel/abi.rs"]
pub mod abi;
pub mod cli;
pub mod control;
pub mod device;
pub mod frame;
pub mod loss;
pub mod mapped;
pub mod pattern;

#[cfg(test)]
#[path = "../../kernel/ring.rs"]
mod ring;
#[cfg(test)]
mod ring_tests;

use std::path::PathBuf;

/// Where topic nodes live: `$BAF_DEV_DIR`, or `/dev/baf`.
pub fn dev_dir() -> PathBuf {
    std::env::var_os("BAF_DEV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/baf"))
}

/// The device path of a topic: a name is looked up as the kernel placed
/// its node ([`control::node_of`]); a path (starting with `/` or `.`) is
/// used as it is.
pub fn topic_path(topic: &str) -> PathBuf {
    if topic.starts_with('/') || topic.starts_with('.') {
        PathBuf::from(topic)
    } else {
        control::node_of(topic)
    }
}
