//! `baf-record`: records baf topics to MCAP files and plays them back.
//!
//! - [`file`]: what a recording holds (one channel per topic, the
//!   kernel's header before each payload, gaps on `baf.loss`) and writing
//!   it; [`read`] reads it back, checked whole first.
//! - [`output`]: file names, splitting, `--max-files`.
//! - [`dashcam`]: the in-memory window and its captures (pure logic).
//! - [`record`]: the recording loop, and `sink` where its records go;
//!   [`play`]; [`show`] (`info`, `cat`).
//! - [`units`]: durations and sizes on the command line.

pub mod dashcam;
pub mod file;
pub mod output;
pub mod play;
pub mod read;
pub mod record;
pub mod show;
mod sink;
pub mod units;
