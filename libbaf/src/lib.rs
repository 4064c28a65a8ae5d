//! The baf library: the fanout device ABI and safe wrappers around it,
//! for the tools and for any program. It knows nothing of command lines
//! or exit codes (that is `baf-cli`); its errors are typed ([`error`]).
//!
//! From the bottom up (each module uses only those above it):
//!
//! - [`abi`] is the kernel module's own ABI file, compiled here unchanged;
//!   [`error`] the typed errors and kinds of failure; [`sys`] what sysfs
//!   and `/dev` say (module loaded, majors, where a topic's node is).
//! - [`batch`] frames records for batch writes and splits record-mode
//!   reads; [`device`] wraps a topic's character device; [`control`]
//!   creates, removes and lists topics.
//! - [`mapped`] reads a topic through a mapping of its ring; [`frame`]
//!   cuts input into records; [`format`] prints records as the tools do; [`pattern`] matches topic names; [`loss`]
//!   counts lost records for rate-limited reports.
//! - [`watch`] notices topics as they are created (and re-created);
//!   [`subscribe`] opens topics for reading and reads them, for every
//!   subscriber (`submsg`, the bridge's export); [`reader`] reads one
//!   topic either way (mapped or `read()`), counting gaps; [`signals`] takes the
//!   signals that end such a program through a signalfd.

#[path = "../../kernel/abi.rs"]
pub mod abi;
pub mod batch;
pub mod control;
pub mod device;
pub mod error;
pub mod format;
pub mod frame;
pub mod loss;
pub mod mapped;
pub mod pattern;
pub mod reader;
pub mod signals;
pub mod subscribe;
pub mod sys;
pub mod watch;

#[cfg(test)]
#[path = "../../kernel/ring.rs"]
mod ring;
#[cfg(test)]
mod ring_tests;

pub use sys::{dev_dir, topic_path};
