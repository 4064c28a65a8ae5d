//! `baf-bridge`: carries chosen baf topics to and from other hosts over
//! Zenoh.
//!
//! - **Export** ([`export`]): every local topic that matches `--export`
//!   (now and later, as `submsg --follow`) is read in record mode, and the
//!   records of each read are published as one Zenoh sample under
//!   `<key prefix>/<topic>`: the record frames, each with its own
//!   provenance, and one attachment for the batch (the wire format,
//!   [`attach`]).
//! - **Import** ([`import`]): samples matching `--import` key expressions
//!   are written into local topics named after their keys (under
//!   `--into`), created on demand: a bridge's sample with one batch
//!   `write()`, any other sample as one record.
//! - **No loops**: the bridge never exports a record it wrote itself (the
//!   kernel stamps each record with its writer), and its subscribers do not
//!   receive what its own session publishes.
//! - **Loss is visible**: records overwritten before export, dropped by
//!   Zenoh on the way, or not writable here are counted and reported on
//!   stderr at most once a second ([`loss`]).
//!
//! Threads: the export loop, the import loop, a signal thread (SIGTERM,
//! SIGINT and SIGHUP stop the bridge cleanly), and the main thread, which
//! logs peers as they come and go. Zenoh runs its own threads.

pub mod attach;
pub mod config;
mod export;
mod import;
pub mod loss;
pub mod names;

pub use export::Me;
pub use import::envelope_json;

use anyhow::{Context, Result};
use config::Settings;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zenoh::Wait;

/// How long the bridge may take to stop after a signal before it exits
/// anyway (a write held up by a lossless reader, a blocked Zenoh put).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A stop request, seen by every loop.
pub struct Stop {
    flag: AtomicBool,
    /// Readable once a stop was requested (for epoll).
    pub wake: EventFd,
}

impl Stop {
    fn new() -> Result<Self> {
        Ok(Self {
            flag: AtomicBool::new(false),
            wake: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .context("creating an eventfd")?,
        })
    }

    /// Asks every loop to stop.
    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.wake.write(1);
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Records and payload bytes, counted.
#[derive(Default)]
pub struct Counter {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl Counter {
    /// Counts `records` records of `bytes` payload bytes in all.
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// (records, bytes) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// What the bridge's threads share.
pub struct Shared {
    /// The stop request.
    pub stop: Stop,
    loss: Mutex<loss::LossReporter>,
    /// Records exported.
    pub exported: Counter,
    /// Records imported.
    pub imported: Counter,
}

impl Shared {
    fn new() -> Result<Self> {
        Ok(Self {
            stop: Stop::new()?,
            loss: Mutex::new(loss::LossReporter::new(loss::INTERVAL)),
            exported: Counter::default(),
            imported: Counter::default(),
        })
    }

    /// Counts lost records.
    pub fn add_loss(&self, cause: loss::Cause, topic: &str, n: u64) {
        if n > 0 {
            if let Ok(mut l) = self.loss.lock() {
                l.add(cause, topic, n);
            }
        }
    }

    /// When the next loss report is due.
    pub fn loss_due_in(&self, now: Instant) -> Option<Duration> {
        self.loss.lock().ok().and_then(|l| l.due_in(now))
    }

    /// Logs the loss report if one is due (or `force`).
    pub fn report_loss(&self, force: bool) {
        let lines = match self.loss.lock() {
            Ok(mut l) => l.take(Instant::now(), force),
            Err(_) => return,
        };
        for line in lines {
            tracing::warn!("{line}");
        }
    }
}

/// Log lines as `baf-bridge: LEVEL: message` on stderr (`zenoh: ` before
/// Zenoh's own).
struct LineFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LineFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(w, "baf-bridge: {level}: ")?;
        if !meta.target().starts_with("baf_bridge") {
            let origin = meta.target().split("::").next().unwrap_or_default();
            write!(w, "{origin}: ")?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Sends log lines to stderr with `filter` (`RUST_LOG` wins when set).
pub fn init_log(filter: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(LineFormat)
        .try_init();
}

/// Waits for SIGTERM, SIGINT or SIGHUP: asks the loops to stop, and exits
/// the process after [`STOP_GRACE`] if they have not (or at a second
/// signal).
fn watch_signals(signals: SignalFd, shared: &'static Shared) {
    let mut deadline: Option<Instant> = None;
    loop {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if timeout.is_some_and(|t| t.is_zero()) {
            tracing::warn!(
                "still running {} s after the stop signal: exiting now",
                STOP_GRACE.as_secs()
            );
            shared.report_loss(true);
            std::process::exit(0);
        }
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&signals),
            nix::poll::PollFlags::POLLIN,
        )];
        let t = match timeout {
            None => nix::poll::PollTimeout::NONE,
            Some(t) => nix::poll::PollTimeout::try_from(t.as_millis().min(60_000) as u64 + 1)
                .unwrap_or(nix::poll::PollTimeout::ZERO),
        };
        if !matches!(nix::poll::poll(&mut fds, t), Ok(n) if n > 0) {
            continue;
        }
        let Ok(Some(info)) = signals.read_signal() else {
            continue;
        };
        let name = Signal::try_from(info.ssi_signo as i32)
            .map(|s| s.as_str())
            .unwrap_or("a signal");
        if deadline.is_some() {
            tracing::warn!("{name} again: exiting now");
            std::process::exit(0);
        }
        tracing::info!("{name}: stopping");
        shared.stop.request();
        deadline = Some(Instant::now() + STOP_GRACE);
    }
}

/// Logs the peers (and routers) of the session that came and went since
/// `known`.
fn log_peers(session: &zenoh::Session, known: &mut BTreeSet<String>) {
    let info = session.info();
    let now: BTreeSet<String> = info
        .peers_zid()
        .wait()
        .map(|z| format!("peer {z}"))
        .chain(info.routers_zid().wait().map(|z| format!("router {z}")))
        .collect();
    for p in now.difference(known) {
        tracing::info!("connected to Zenoh {p}");
    }
    for p in known.difference(&now) {
        tracing::info!("disconnected from Zenoh {p}");
    }
    *known = now;
}

/// The whole bridge: runs until SIGTERM (or SIGINT, SIGHUP), then exits 0.
pub fn run(settings: Settings) -> Result<()> {
    init_log(&settings.log_filter);
    baf::control::require_module()?;
    // Signals are blocked in every thread (Zenoh's too, which inherit the
    // mask) and read from a signalfd by one.
    let (_, signals) = baf::signals::take_ending_signals()?;
    // Lives as long as the process: the signal thread may outlive `run`.
    let shared: &'static Shared = Box::leak(Box::new(Shared::new()?));
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || watch_signals(signals, shared))
        .context("starting the signal thread")?;

    tracing::info!(
        "baf-bridge {} on host {}: opening a Zenoh session ({})",
        env!("CARGO_PKG_VERSION"),
        settings.host_name,
        settings.zenoh_summary
    );
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    let session = zenoh::open(settings.zenoh.clone()).wait().map_err(|e| {
        anyhow::anyhow!(
            "cannot open the Zenoh session: {}",
            names::zenoh_message(&e)
        )
    })?;
    tracing::info!("Zenoh session {} is open", session.zid());

    let (tx, rx) = std::sync::mpsc::sync_channel(import::CHANNEL);
    let subscribers = import::subscribe(&session, &settings.import, &tx)?;
    drop(tx);
    for ke in &settings.import {
        let into = if settings.into.is_empty() {
            "topics of the same name".to_string()
        } else {
            format!("topics under {}", settings.into)
        };
        tracing::info!(
            "importing {ke} into {into} (the key prefix {}/ taken off)",
            settings.key_prefix
        );
    }
    if !settings.export.is_empty() {
        let list = |ps: &[baf::pattern::Pattern]| {
            ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
        };
        let except = if settings.exclude.is_empty() {
            String::new()
        } else {
            format!(" except {}", list(&settings.exclude))
        };
        let imports = if settings.into.is_empty() {
            String::new()
        } else {
            format!(
                " (not those under {}: they hold this bridge's imports)",
                settings.into
            )
        };
        tracing::info!(
            "exporting topics matching {}{except}{imports}, now and as they are created",
            list(&settings.export)
        );
    }

    let result = std::thread::scope(|scope| -> Result<()> {
        let session = &session;
        let settings = &settings;
        let import = (!settings.import.is_empty()).then(|| {
            std::thread::Builder::new()
                .name("import".into())
                .spawn_scoped(scope, move || {
                    let r = import::Importer::new(settings, shared, rx).run();
                    shared.stop.request();
                    r
                })
        });
        let export = (!settings.export.is_empty()).then(|| {
            std::thread::Builder::new()
                .name("export".into())
                .spawn_scoped(scope, move || {
                    let r =
                        export::Exporter::new(settings, session, shared).and_then(|mut e| e.run());
                    shared.stop.request();
                    r
                })
        });
        let mut peers = BTreeSet::new();
        while !shared.stop.requested() {
            log_peers(session, &mut peers);
            shared.report_loss(false);
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&shared.stop.wake),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
        }
        let mut result = Ok(());
        for handle in [import, export].into_iter().flatten() {
            let joined = handle
                .context("starting a thread")?
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a bridge thread panicked")));
            if result.is_ok() {
                result = joined;
            }
        }
        result
    });
    drop(subscribers);
    let _ = session.close().wait();
    shared.report_loss(true);
    let (er, eb) = shared.exported.get();
    let (ir, ib) = shared.imported.get();
    tracing::info!(
        "stopped: exported {er} records ({eb} bytes), imported {ir} records ({ib} bytes)"
    );
    result
}
