//! What every bus under test offers the harness: a publisher that sends
//! one message, and a subscriber that waits for messages and hands each one
//! over. Publishers and subscribers are made on the thread that uses them,
//! so they need not be `Send`.

use anyhow::Result;
use std::time::Duration;

/// One message out.
pub trait Publisher {
    /// Sends one message, as the bus does by default (it may block, queue
    /// or drop: whatever a user of the bus gets).
    fn send(&mut self, msg: &[u8]) -> Result<()>;
    /// Pushes out what `send` buffered (the end of a run).
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Waits until `n` subscribers can receive what is sent next (for a
    /// bus that connects them lazily), at most `timeout`.
    fn wait_subscribers(&mut self, n: usize, timeout: Duration) -> Result<()> {
        let _ = (n, timeout);
        Ok(())
    }
}

/// Messages in.
pub trait Subscriber {
    /// Waits (blocking, not spinning) up to `timeout` for messages and calls
    /// `f` with each one that has arrived; returns how many (0: none came).
    fn recv(&mut self, timeout: Duration, f: &mut dyn FnMut(&[u8])) -> Result<usize>;
}

/// A bus: its name in the tables, and how to make endpoints on a topic.
/// `size` is the size of every message that will be sent (for buses that
/// size their buffers up front).
pub trait Transport: Sync {
    fn name(&self) -> String;
    fn publisher(&self, topic: &str, size: usize) -> Result<Box<dyn Publisher>>;
    fn subscriber(&self, topic: &str, size: usize) -> Result<Box<dyn Subscriber>>;
}
