//! iceoryx2 (0.10, `ipc::Service`, zero-copy shared memory) under the
//! harness's [`Transport`] traits.
//!
//! One topic is one publish-subscribe service of `[u8]` slices named
//! `baf-bench/<topic>/<size>` (the size is in the name so that a run with
//! another message size never meets a service left sized for the last one).
//! Every endpoint makes its own [`Node`] on the thread that uses it; every
//! endpoint opens (or creates) its services with the same settings, which
//! depend only on `max_subscribers` and `size`, so threads and processes of
//! one run agree.
//!
//! Waiting: by default (`busy_wait == false`) each publisher also has a
//! Notifier on an event service of the same name and notifies it after each
//! sample; a subscriber blocks on a Listener of that event service (a Unix
//! datagram socket read, with the event bits in shared memory). With
//! `busy_wait == true` there is no event service: `recv` spins on
//! `Subscriber::receive`.
//!
//! Loss: services use iceoryx2's default "safe overflow": a publisher never
//! blocks on a slow subscriber, a full subscriber buffer drops its oldest
//! sample. The harness counts the loss from the sequence numbers.
//!
//! What it needs at run time (tried as root in an empty chroot: a static
//! binary, a tmpfs on `/dev/shm`, nothing else, no environment):
//! - `/dev/shm` a writable tmpfs: the data segments and service state are
//!   POSIX shared memory (`shm_open`, named `iox2_no_std_*` since the crate
//!   is built without its `std` feature). A publisher's segment holds
//!   `max_subscribers * (buffer + 2) + 2` samples of `size` bytes (see
//!   [`buffer_size`]): about 9.6 MB for 9 subscribers of 4 KiB, at most
//!   about [`SEGMENT_BUDGET`] unless messages are so large (≳ 0.9 MB for 9
//!   subscribers) that even [`MIN_BUFFER`] samples exceed it.
//! - `/tmp` writable (made if missing): iceoryx2 keeps `/tmp/iceoryx2/`
//!   (service and node files, the Unix datagram sockets of the event
//!   service).
//! - No environment variable, no `/proc`, no `/etc`. The nodes are given
//!   iceoryx2's built-in default config, so no `iceoryx2.toml` is looked up
//!   (and no user database lookup happens, which static glibc cannot do).
//! - Everything is removed when the last endpoint of a service drops, but
//!   one 16-byte `/dev/shm/iox2_no_std_*.global_mgmt` file that stays.
//!   A process killed mid-run leaves its files; the next node created
//!   removes them (iceoryx2's `cleanup_dead_nodes_on_creation`).
//!
//! The nodes do not install signal handlers (`SignalHandlingMode::Disabled`):
//! SIGINT/SIGTERM stay the harness's. iceoryx2's log level is set to Error
//! once (its default logger in this build is the null logger anyway).

use crate::transport::{Publisher, Subscriber, Transport};
use anyhow::{anyhow, bail, Context, Result};
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher as IoxPublisherPort;
use iceoryx2::port::subscriber::Subscriber as IoxSubscriberPort;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::event::PortFactory as EventFactory;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as PubSubFactory;
use std::sync::Once;
use std::time::{Duration, Instant};

/// Publishers per service (the harness uses 1 or 2).
const MAX_PUBLISHERS: usize = 2;
/// Nodes beyond one per endpoint (a stale node of a dead process, a
/// monitoring tool).
const SPARE_NODES: usize = 4;
/// Largest subscriber buffer: at 64 B-4 KiB messages this is several
/// scheduler time slices of a saturated publisher, so a subscriber that was
/// descheduled for a while catches up instead of losing samples; beyond it,
/// the shared-memory data segment (which grows linearly with it) only costs
/// memory.
const MAX_BUFFER: usize = 256;
/// Smallest subscriber buffer, whatever the message size.
const MIN_BUFFER: usize = 16;
/// Budget for one publisher's data segment (it holds
/// `max_subscribers * (buffer + 2) + 2` samples): large messages get a
/// smaller buffer so that the bench VM's `/dev/shm` is not exhausted.
const SEGMENT_BUDGET: usize = 128 << 20;
/// Samples a subscriber holds at once (it holds one at a time).
const BORROWED_SAMPLES: usize = 2;

/// The subscriber buffer (in samples) of every service of a run: as large
/// as [`MAX_BUFFER`] unless the publisher's data segment would exceed
/// [`SEGMENT_BUDGET`]; depends only on `max_subscribers` and `size` so that
/// every endpoint asks for the same.
pub fn buffer_size(max_subscribers: usize, size: usize) -> usize {
    let per_sample = max_subscribers.max(1) * size.max(64);
    (SEGMENT_BUDGET / per_sample).clamp(MIN_BUFFER, MAX_BUFFER)
}

/// iceoryx2 over shared memory.
pub struct Iox {
    /// Spin on `receive()` instead of blocking on an event Listener.
    pub busy_wait: bool,
    /// Subscribers a service supports (the harness's largest fan-out, ≥ 9).
    pub max_subscribers: usize,
}

/// The settings of a run's services.
#[derive(Clone, Copy)]
struct Settings {
    max_subscribers: usize,
    buffer: usize,
}

impl Iox {
    fn settings(&self, size: usize) -> Settings {
        let max_subscribers = self.max_subscribers.max(1);
        Settings {
            max_subscribers,
            buffer: buffer_size(max_subscribers, size),
        }
    }
}

fn quiet_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| set_log_level(LogLevel::Error));
}

fn service_name(topic: &str, size: usize) -> Result<ServiceName> {
    let name = format!("baf-bench/{topic}/{size}");
    ServiceName::new(&name).map_err(|e| anyhow!("invalid iceoryx2 service name {name:?}: {e:?}"))
}

fn node() -> Result<Node<ipc::Service>> {
    quiet_logger();
    NodeBuilder::new()
        .config(&Config::default())
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(|e| anyhow!("{e:?}"))
        .context("creating an iceoryx2 node (needs writable /dev/shm and /tmp)")
}

fn pubsub_service(
    node: &Node<ipc::Service>,
    name: &ServiceName,
    s: Settings,
) -> Result<PubSubFactory<ipc::Service, [u8], ()>> {
    node.service_builder(name)
        .publish_subscribe::<[u8]>()
        .enable_safe_overflow(true)
        .history_size(0)
        .subscriber_max_buffer_size(s.buffer)
        .subscriber_max_borrowed_samples(BORROWED_SAMPLES)
        .max_subscribers(s.max_subscribers)
        .max_publishers(MAX_PUBLISHERS)
        .max_nodes(s.max_subscribers + MAX_PUBLISHERS + SPARE_NODES)
        .open_or_create()
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| format!("opening iceoryx2 publish-subscribe service {name}"))
}

fn event_service(
    node: &Node<ipc::Service>,
    name: &ServiceName,
    s: Settings,
) -> Result<EventFactory<ipc::Service>> {
    node.service_builder(name)
        .event()
        .max_listeners(s.max_subscribers)
        .max_notifiers(MAX_PUBLISHERS)
        .max_nodes(s.max_subscribers + MAX_PUBLISHERS + SPARE_NODES)
        .open_or_create()
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| format!("opening iceoryx2 event service {name}"))
}

impl Transport for Iox {
    fn name(&self) -> String {
        if self.busy_wait {
            "iceoryx2 (busy-wait)".into()
        } else {
            "iceoryx2".into()
        }
    }

    fn publisher(&self, topic: &str, size: usize) -> Result<Box<dyn Publisher>> {
        let s = self.settings(size);
        let name = service_name(topic, size)?;
        let node = node()?;
        let service = pubsub_service(&node, &name, s)?;
        let events = if self.busy_wait {
            None
        } else {
            let events = event_service(&node, &name, s)?;
            let notifier = events
                .notifier_builder()
                .create()
                .map_err(|e| anyhow!("{e:?}"))
                .with_context(|| format!("creating iceoryx2 notifier on {name}"))?;
            Some((events, notifier))
        };
        let port = service
            .publisher_builder()
            .initial_max_slice_len(size)
            .create()
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| format!("creating iceoryx2 publisher on {name}"))?;
        Ok(Box::new(IoxPublisher {
            port,
            events,
            service,
            _node: node,
        }))
    }

    fn subscriber(&self, topic: &str, size: usize) -> Result<Box<dyn Subscriber>> {
        let s = self.settings(size);
        let name = service_name(topic, size)?;
        let node = node()?;
        let service = pubsub_service(&node, &name, s)?;
        // The Listener first: once the subscriber is counted (what
        // `wait_subscribers` waits for), its Listener is there too.
        let listener = if self.busy_wait {
            None
        } else {
            let events = event_service(&node, &name, s)?;
            Some(
                events
                    .listener_builder()
                    .create()
                    .map_err(|e| anyhow!("{e:?}"))
                    .with_context(|| format!("creating iceoryx2 listener on {name}"))?,
            )
        };
        let port = service
            .subscriber_builder()
            .buffer_size(s.buffer)
            .create()
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| format!("creating iceoryx2 subscriber on {name}"))?;
        Ok(Box::new(IoxSubscriber {
            port,
            listener,
            max_drain: s.buffer,
            _node: node,
        }))
    }
}

// Fields drop in order: ports, then services, then the node.
struct IoxPublisher {
    port: IoxPublisherPort<ipc::Service, [u8], ()>,
    events: Option<(EventFactory<ipc::Service>, Notifier<ipc::Service>)>,
    service: PubSubFactory<ipc::Service, [u8], ()>,
    _node: Node<ipc::Service>,
}

impl Publisher for IoxPublisher {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let sample = self
            .port
            .loan_slice_uninit(msg.len())
            .map_err(|e| anyhow!("{e:?}"))
            .context("iceoryx2 loan")?;
        sample
            .write_from_slice(msg)
            .send()
            .map_err(|e| anyhow!("{e:?}"))
            .context("iceoryx2 send")?;
        if let Some((_, notifier)) = &self.events {
            notifier
                .notify()
                .map_err(|e| anyhow!("{e:?}"))
                .context("iceoryx2 notify")?;
        }
        Ok(())
    }

    /// Polls (every millisecond) until the service counts `n` subscribers
    /// (and, in blocking mode, `n` listeners on the event service), then
    /// connects this publisher to them with `update_connections()`, so the
    /// next `send` reaches them all. Fails if they are not there by
    /// `timeout`.
    fn wait_subscribers(&mut self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let subscribers = self.service.dynamic_config().number_of_subscribers();
            let listeners = match &self.events {
                Some((events, _)) => events.dynamic_config().number_of_listeners(),
                None => n,
            };
            if subscribers >= n && listeners >= n {
                return self
                    .port
                    .update_connections()
                    .map_err(|e| anyhow!("{e:?}"))
                    .context("iceoryx2 update_connections");
            }
            if Instant::now() >= deadline {
                bail!(
                    "iceoryx2: {subscribers} subscribers and {listeners} listeners of {n} \
                     after {timeout:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

// Fields drop in order: ports, then the node.
struct IoxSubscriber {
    port: IoxSubscriberPort<ipc::Service, [u8], ()>,
    listener: Option<Listener<ipc::Service>>,
    /// At most this many samples per `recv` (what the buffer held), so a
    /// publisher faster than `f` cannot keep `recv` from returning.
    max_drain: usize,
    _node: Node<ipc::Service>,
}

impl IoxSubscriber {
    fn drain(&self, f: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let mut n = 0;
        while n < self.max_drain {
            match self
                .port
                .receive()
                .map_err(|e| anyhow!("{e:?}"))
                .context("iceoryx2 receive")?
            {
                Some(sample) => {
                    f(sample.payload());
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }
}

impl Subscriber for IoxSubscriber {
    fn recv(&mut self, timeout: Duration, f: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let n = self.drain(f)?;
        if n > 0 {
            return Ok(n);
        }
        let deadline = Instant::now() + timeout;
        match &self.listener {
            // Blocking: a notification left from samples already taken
            // wakes the wait with nothing new, so wait again until samples
            // come or the time is up.
            Some(listener) => loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(0);
                }
                listener
                    .timed_wait(|_| {}, left)
                    .map_err(|e| anyhow!("{e:?}"))
                    .context("iceoryx2 listener wait")?;
                let n = self.drain(f)?;
                if n > 0 {
                    return Ok(n);
                }
            },
            None => loop {
                let n = self.drain(f)?;
                if n > 0 {
                    return Ok(n);
                }
                if Instant::now() >= deadline {
                    return Ok(0);
                }
                std::hint::spin_loop();
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    /// `subs` subscribers on threads, the publisher on this one: 100
    /// messages of `size` bytes, each carrying its number; every subscriber
    /// must get all of them, in order.
    fn round_trip(busy_wait: bool, size: usize, subs: usize) {
        const N: u64 = 100;
        let iox = Iox {
            busy_wait,
            max_subscribers: 9,
        };
        let topic = format!("test-{}-{busy_wait}-{size}-{subs}", std::process::id());
        thread::scope(|scope| {
            let (ready_tx, ready_rx) = mpsc::channel();
            let handles: Vec<_> = (0..subs)
                .map(|_| {
                    let (iox, topic, ready_tx) = (&iox, &topic, ready_tx.clone());
                    scope.spawn(move || -> Result<Vec<u64>> {
                        let mut sub = iox.subscriber(topic, size)?;
                        let _ = ready_tx.send(());
                        let mut got = Vec::new();
                        let deadline = Instant::now() + Duration::from_secs(20);
                        while (got.len() as u64) < N && Instant::now() < deadline {
                            sub.recv(Duration::from_millis(200), &mut |m| {
                                assert_eq!(m.len(), size);
                                let seq = u64::from_le_bytes(m[..8].try_into().unwrap());
                                assert!(m[8..].iter().all(|&b| b == seq as u8));
                                got.push(seq);
                            })?;
                        }
                        Ok(got)
                    })
                })
                .collect();
            for _ in 0..subs {
                ready_rx.recv().unwrap();
            }
            let mut publisher = iox.publisher(&topic, size).unwrap();
            publisher
                .wait_subscribers(subs, Duration::from_secs(5))
                .unwrap();
            let mut msg = vec![0u8; size];
            for seq in 0..N {
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                msg[8..].fill(seq as u8);
                publisher.send(&msg).unwrap();
            }
            publisher.flush().unwrap();
            for h in handles {
                let got = h.join().unwrap().unwrap();
                assert_eq!(got, (0..N).collect::<Vec<_>>());
            }
        });
    }

    #[test]
    fn blocking_64() {
        round_trip(false, 64, 2);
    }

    #[test]
    fn blocking_4096() {
        round_trip(false, 4096, 2);
    }

    #[test]
    fn busy_wait_64() {
        round_trip(true, 64, 2);
    }

    #[test]
    fn busy_wait_4096() {
        round_trip(true, 4096, 2);
    }

    /// Nine subscribers, each with its own node, on nine threads.
    #[test]
    fn blocking_nine_subscribers() {
        round_trip(false, 4096, 9);
    }

    /// A subscriber that does not read does not stop the publisher: its
    /// buffer keeps the newest samples.
    #[test]
    fn stalled_subscriber_loses_oldest() {
        let iox = Iox {
            busy_wait: false,
            max_subscribers: 9,
        };
        let buffer = buffer_size(9, 64);
        let topic = format!("test-overflow-{}", std::process::id());
        let mut sub = iox.subscriber(&topic, 64).unwrap();
        let mut publisher = iox.publisher(&topic, 64).unwrap();
        publisher
            .wait_subscribers(1, Duration::from_secs(5))
            .unwrap();
        let sent = 10 * buffer as u64;
        let mut msg = [0u8; 64];
        for seq in 0..sent {
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            publisher.send(&msg).unwrap();
        }
        let mut got = Vec::new();
        while sub
            .recv(Duration::from_millis(50), &mut |m| {
                got.push(u64::from_le_bytes(m[..8].try_into().unwrap()))
            })
            .unwrap()
            > 0
        {}
        assert_eq!(got, (sent - buffer as u64..sent).collect::<Vec<_>>());
    }

    #[test]
    fn recv_times_out() {
        for busy_wait in [false, true] {
            let iox = Iox {
                busy_wait,
                max_subscribers: 9,
            };
            let topic = format!("test-timeout-{}-{busy_wait}", std::process::id());
            let mut sub = iox.subscriber(&topic, 64).unwrap();
            let _publisher = iox.publisher(&topic, 64).unwrap();
            let t = Instant::now();
            let n = sub
                .recv(Duration::from_millis(50), &mut |_| panic!("no message"))
                .unwrap();
            assert_eq!(n, 0);
            assert!(t.elapsed() >= Duration::from_millis(50));
        }
    }
}
