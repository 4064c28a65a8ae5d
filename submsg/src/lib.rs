//! `submsg`: subscribe to baf topics and write their records to stdout.
//!
//! One thread: every topic is an open file, non-blocking, in one epoll set
//! together with the `--follow` watcher, a signalfd and stdout (to notice a
//! closed pipe at once).
//!
//! A topic is read through a read-only mapping of its ring
//! ([`baf::mapped`]) when the module allows it: no system call per batch; a
//! topic with records keeps being read ("hot") until it has nothing new,
//! and only then is its file's cursor moved to where the mapping reader is
//! ([`baf::mapped::Mapped::prepare_wait`]) so that epoll says when more
//! comes. Where mapping is refused (a container's namespaces, `--no-mmap`),
//! the file is in record mode (`FLAG_RECORD`) and each ready topic gets one
//! large `read()`, which returns many whole records. Either way the ring's
//! headers give the sequence numbers, so a gap is an exact count of lost
//! records, and the output is byte for byte the same. Output is gathered in
//! a large buffer and written when it is full or when no topic has anything
//! more to read (idle), so interactive use sees every line at once and busy
//! use makes few large writes.

pub use baf::format;
pub mod loss;
mod output;
mod subscriber;

use anyhow::{Context, Result};
use baf::control;
use baf::device::ModuleNotLoaded;
use baf::pattern::{split_list, Pattern, Selection};
pub use baf::subscribe::StartAt;
use baf::subscribe::Topics;
use baf::sys::{is_path, label_of_path};
use baf_cli::Failure;
use format::{Format, Style};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use output::Output;
use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;
use subscriber::{End, Subscriber, TOKEN_FIRST_TOPIC, TOKEN_SIGNAL, TOKEN_STDOUT, TOKEN_WATCH};

/// What to subscribe to and how to print it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Topics, patterns or device paths, each possibly a comma list; empty
    /// means every topic.
    pub topics: Vec<String>,
    /// Patterns to leave out, each possibly a comma list.
    pub exclude: Vec<String>,
    /// Join topics created later, drop removed ones.
    pub follow: bool,
    /// Output format.
    pub format: Format,
    /// Where existing topics start.
    pub start: StartAt,
    /// Create a missing topic given by its exact name, when allowed.
    pub create: bool,
    /// Stop after this many records.
    pub count: Option<u64>,
    /// Read with `read()` only, never through a mapping of the ring.
    pub no_mmap: bool,
    /// Subscribe losslessly: writers wait for this reader rather than
    /// overwrite what it has not read (on topics that allow it).
    pub lossless: bool,
    /// End each record with a NUL byte instead of a newline (`-0`).
    pub nul: bool,
    /// Print the last record of each topic and exit (`--last`).
    pub last: bool,
    /// A topic named on the command line must exist: no creating it, no
    /// waiting for it (`--no-wait`).
    pub no_wait: bool,
    /// Exit after this long (`-W`).
    pub timeout: Option<std::time::Duration>,
}

/// The command line's topics, sorted out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Which topic names to take.
    pub selection: Selection,
    /// Exact names asked for (they must exist, or be created).
    pub exact: Vec<String>,
    /// Device paths asked for (opened as they are).
    pub paths: Vec<String>,
}

impl Plan {
    /// Whether topic `name` (found by listing or by `--follow`) is
    /// selected: it matches a pattern and no exclusion. With no topics
    /// given, every topic is; with only device paths, no other topic is.
    pub fn selects(&self, name: &str) -> bool {
        (self.paths.is_empty() || !self.selection.include.is_empty())
            && self.selection.matches(name)
    }

    /// What `--follow` waits for, for a message: "topics", or "topics
    /// matching 'a,b/#' (except 'c')".
    pub fn describe(&self) -> String {
        let list = |ps: &[Pattern]| ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",");
        let mut s = if self.selection.include.is_empty() {
            "topics".to_string()
        } else {
            format!("topics matching '{}'", list(&self.selection.include))
        };
        if !self.selection.exclude.is_empty() {
            s += &format!(" (except '{}')", list(&self.selection.exclude));
        }
        s
    }
}

/// Sorts out the command line's topics: comma lists, paths, patterns.
pub fn plan(cfg: &Config) -> Result<Plan> {
    let usage = |e: baf::pattern::PatternError| Failure::Usage.wrap(anyhow::Error::new(e));
    let mut plan = Plan::default();
    for item in split_list(&cfg.topics).map_err(usage)? {
        if is_path(&item) {
            plan.paths.push(item);
            continue;
        }
        let p = Pattern::parse(&item).map_err(usage)?;
        if let Some(name) = p.exact() {
            control::check_name(name)?;
            plan.exact.push(name.to_string());
        }
        plan.selection.include.push(p);
    }
    for item in split_list(&cfg.exclude).map_err(usage)? {
        plan.selection
            .exclude
            .push(Pattern::parse(&item).map_err(usage)?);
    }
    Ok(plan)
}

/// The whole tool.
pub fn run(cfg: &Config) -> Result<()> {
    let plan = plan(cfg)?;
    // Signals that end us arrive through a signalfd, so buffered output is
    // written before we go.
    let (mask, signals) = baf::signals::take_ending_signals()?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("creating an epoll set")?;
    epoll
        .add(
            signals.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
        )
        .context("watching signals")?;
    let out = Output::new()?;
    // EPOLLERR is always reported: for a pipe, it means its reader is gone.
    // (A regular file cannot be watched; that is fine.)
    let _ = epoll.add(
        out.file.as_fd(),
        EpollEvent::new(EpollFlags::empty(), TOKEN_STDOUT),
    );

    let mut sub = Subscriber {
        cfg,
        plan,
        topics: Topics::new(epoll, TOKEN_FIRST_TOPIC),
        buf: vec![0u8; 256 * 1024],
        out,
        loss: loss::LossReporter::new(loss::INTERVAL),
        remaining: cfg.count,
        watcher: None,
        warned: HashSet::new(),
        hot: baf::reader::HotList::default(),
        style: Style {
            format: cfg.format,
            nul: cfg.nul,
            wall_offset_ns: format::wall_offset_ns(),
        },
        received: 0,
        deadline: None,
    };
    // --last: each topic's last record, and no more.
    let start = if cfg.last {
        StartAt::Last(1)
    } else {
        cfg.start
    };
    if cfg.follow {
        // Watch before listing, so a topic made in between is not missed.
        let (w, _) = baf::watch::Watcher::new(&baf::dev_dir())?;
        sub.topics
            .epoll()
            .add(w.fd(), EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WATCH))
            .context("watching the topic directory")?;
        sub.watcher = Some(w);
    }

    // Device paths, as they are: any problem is an error.
    for path in sub.plan.paths.clone() {
        let name = label_of_path(&path);
        if sub.topics.has(&name) {
            continue;
        }
        sub.join(&name, Path::new(&path), start)?;
    }
    let loaded = control::module_loaded();
    if !loaded && !cfg.follow {
        return Err(ModuleNotLoaded.into());
    }
    // Existing topics that match.
    let existing = baf::watch::existing_topics()?;
    // Topics found by a pattern (or by none) that could not be read:
    // reported and skipped (quietly, when no topic was named: every topic
    // this user may read is what was asked for).
    let mut skipped = Vec::new();
    for (name, path) in &existing {
        if sub.topics.has(name) || !sub.plan.selects(name) {
            continue;
        }
        if sub.plan.exact.contains(name) {
            // Asked for by name: any problem is an error.
            sub.join(name, path, start)?;
        } else if let Some(e) = sub.join_found(name, path, start) {
            if baf_cli::class(&e) != Some(Failure::NoTopic) {
                skipped.push((name.clone(), e));
            }
        }
    }
    // Exact names that do not exist: create them, or wait, or fail.
    let mut waiting = Vec::new();
    for name in sub.plan.exact.clone() {
        if existing.contains_key(&name) || sub.plan.selection.excluded(&name) {
            continue;
        }
        if cfg.no_wait || cfg.last {
            let why = if cfg.no_wait { "--no-wait" } else { "--last" };
            return Err(Failure::NoTopic.wrap(anyhow::anyhow!(
                "topic {name} does not exist ({why}): see `baf-setup list`, or create it with `baf-setup create {name}`"
            )));
        }
        if cfg.create && loaded {
            match control::create_on_demand(&name) {
                Ok(path) => {
                    sub.join(&name, &path, StartAt::Oldest)?;
                    eprintln!(
                        "submsg: topic {name} did not exist: created it, waiting for its records (--no-wait fails instead)"
                    );
                    continue;
                }
                Err(e) if !cfg.follow || baf_cli::class(&e) == Some(Failure::NoModule) => {
                    return Err(e)
                }
                Err(_) => {}
            }
        } else if !cfg.follow {
            return Err(Failure::NoTopic.wrap(anyhow::anyhow!(
                "topic {name} does not exist: create it with `baf-setup create {name}`, or use --follow to wait for it"
            )));
        }
        waiting.push(name);
    }
    if sub.topics.is_empty() && !cfg.follow {
        // Nothing to read. If matching topics were there but none could be
        // read, that is the error (one line, with its class).
        let mut skipped = skipped.into_iter();
        if let Some((_, first)) = skipped.next() {
            let n = skipped.len() + 1;
            return Err(if n == 1 {
                first
            } else {
                first.context(format!(
                    "none of the {n} matching topics can be read; the first"
                ))
            });
        }
        let what = if cfg.topics.is_empty() && cfg.exclude.is_empty() {
            "there are no topics: create one with `baf-setup create NAME`, or use --follow to wait"
                .to_string()
        } else {
            format!(
                "no topic matches {}: see `baf-setup list`, or use --follow to wait",
                sub.plan
                    .selection
                    .include
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        return Err(Failure::NoTopic.wrap(anyhow::anyhow!(what)));
    }
    for (name, e) in &skipped {
        sub.warn_skip(name, e);
    }
    if cfg.last {
        sub.drain()?;
        sub.out.flush()?;
        sub.report_loss(true);
        return Ok(());
    }
    if sub.topics.is_empty() {
        // --follow with nothing to read yet: say what we wait for.
        let module = if loaded {
            String::new()
        } else {
            format!("{ModuleNotLoaded}; ")
        };
        eprintln!(
            "submsg: {module}waiting for {} to be created",
            sub.plan.describe()
        );
    } else {
        for name in &waiting {
            eprintln!("submsg: waiting for topic {name} to be created");
        }
    }

    // One topic and no more to come (no --follow), its payloads as they
    // are, to a pipe, with no count to stop at: the kernel moves them into
    // the pipe itself (`splice`), copied once, with nothing to split (a
    // record larger than the pipe's room goes in pieces, which another
    // topic's records must not come between, hence one topic).
    let plain = cfg.format == Format::Raw && !cfg.nul && cfg.count.is_none();
    if plain && !cfg.lossless && !cfg.no_mmap && sub.watcher.is_none() {
        if let [token] = sub.topics.tokens()[..] {
            if sub.out.is_blocking_pipe() {
                sub.use_splice(token)?;
            }
        }
    }

    // -W counts from here, once every topic is subscribed (as
    // mosquitto_sub's counts from its connection).
    sub.deadline = cfg.timeout.map(|t| Instant::now() + t);
    let end = sub.run(&signals);
    // Whatever happened, what was read goes out, and loss is told.
    let flushed = sub.out.flush();
    sub.report_loss(true);
    match end? {
        End::Done => flushed,
        End::TimedOut if sub.received > 0 => flushed,
        End::TimedOut => {
            flushed?;
            let secs = cfg.timeout.unwrap_or_default().as_secs_f64();
            Err(Failure::TimedOut
                .wrap(anyhow::anyhow!("no record arrived in {secs} s (-W {secs})")))
        }
        End::Signal(sig) => {
            // End the way the signal would have ended us.
            let _ = mask.thread_unblock();
            let _ = nix::sys::signal::raise(sig);
            std::process::exit(128 + sig as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(topics: &[&str], exclude: &[&str]) -> Config {
        Config {
            topics: topics.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        }
    }

    #[test]
    fn start_points() {
        assert_eq!("oldest".parse::<StartAt>(), Ok(StartAt::Oldest));
        assert_eq!("now".parse::<StartAt>(), Ok(StartAt::Now));
        assert_eq!("last".parse::<StartAt>(), Ok(StartAt::Last(1)));
        assert_eq!("last:10".parse::<StartAt>(), Ok(StartAt::Last(10)));
        assert_eq!("seq:0".parse::<StartAt>(), Ok(StartAt::Seq(0)));
        assert!("last:x"
            .parse::<StartAt>()
            .unwrap_err()
            .contains("whole number"));
        assert!("first"
            .parse::<StartAt>()
            .unwrap_err()
            .contains("oldest, last:N, seq:S"));
        assert!("seq:-1".parse::<StartAt>().is_err());
    }

    #[test]
    fn plan_sorts_names_patterns_paths() {
        let p = plan(&cfg(
            &["a,b/+", "/dev/fanout0", "c", "./x"],
            &["b/secret,z*"],
        ))
        .unwrap();
        assert_eq!(p.exact, vec!["a", "c"]);
        assert_eq!(p.paths, vec!["/dev/fanout0", "./x"]);
        assert_eq!(p.selection.include.len(), 3);
        assert_eq!(p.selection.exclude.len(), 2);
        assert!(p.selection.matches("b/open") && !p.selection.matches("b/secret"));
        assert!(!p.selection.matches("d"));
    }

    #[test]
    fn paths_alone_select_no_other_topic() {
        let p = plan(&cfg(&["/dev/fanout0"], &[])).unwrap();
        assert!(!p.selects("anything"));
        let p = plan(&cfg(&["/dev/fanout0", "a/#"], &[])).unwrap();
        assert!(p.selects("a/b") && !p.selects("b"));
        let p = plan(&cfg(&[], &[])).unwrap();
        assert!(p.selects("anything"));
    }

    #[test]
    fn follow_says_what_it_waits_for() {
        assert_eq!(plan(&cfg(&[], &[])).unwrap().describe(), "topics");
        assert_eq!(
            plan(&cfg(&["x"], &[])).unwrap().describe(),
            "topics matching 'x'"
        );
        assert_eq!(
            plan(&cfg(&["a/#,b"], &["a/c"])).unwrap().describe(),
            "topics matching 'a/#,b' (except 'a/c')"
        );
    }

    #[test]
    fn plan_with_nothing_takes_everything() {
        let p = plan(&cfg(&[], &["fanout*"])).unwrap();
        assert!(p.selection.matches("anything") && !p.selection.matches("fanout1"));
    }

    #[test]
    fn plan_errors_are_usage_errors() {
        for bad in [&["a,,b"][..], &["a/#/b"], &["x y"]] {
            let e = plan(&cfg(bad, &[])).unwrap_err();
            assert_eq!(baf_cli::exit_code(&e), 2, "{bad:?}: {e:#}");
        }
        let e = plan(&cfg(&[], &["bad*pattern"])).unwrap_err();
        assert_eq!(baf_cli::exit_code(&e), 2);
    }
}
