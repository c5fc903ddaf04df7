//! What wakes the watcher, each on a thread of its own that sleeps until its source speaks: the
//! kernel's notifications (a blocking `recv`), each engine's event stream (its own runtime),
//! and the signals that ask it to end (`sigwait`). They meet in one channel; a burst of them —
//! a compose project of 30 services starting — is read as one.

use crate::docker::events::{self, EngineEvent, Step};
use crate::kernel::{Changed, Notifications};
use nix::sys::signal::{SigSet, Signal};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How news is gathered into one reconcile: news after a quiet spell (one container started)
/// is acted on almost at once, a storm of it (a compose project of 50 services starting)
/// once it has been quiet for a while, or at the latest after a pause that doubles with each
/// reconcile the storm has already cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pace {
    /// How long without news ends a gathering.
    pub quiet: Duration,
    /// How long a gathering may last, from its first news.
    pub longest: Duration,
}

/// After a calm: the engine's `connect` and `start` of one container come within this.
const SETTLE: Duration = Duration::from_millis(5);
/// In a storm: most gaps between the starts of a compose project are shorter than this, and
/// the table must be right within 200 ms of its last start.
const STORM_QUIET: Duration = Duration::from_millis(150);
/// A storm's first pause before a reconcile, doubled with each one after it…
const STORM_FIRST: Duration = Duration::from_millis(500);
/// … up to this.
const STORM_LONGEST: Duration = Duration::from_secs(4);
/// News this long after the last reconcile comes after a calm.
pub(super) const CALM: Duration = Duration::from_secs(2);

impl Pace {
    /// The pace after a calm.
    pub(super) fn calm() -> Pace {
        Pace { quiet: SETTLE, longest: STORM_FIRST }
    }

    /// The pace in a storm that has cost `reconciles` already (1 or more: the first came at a
    /// calm pace).
    pub(super) fn storm(reconciles: u32) -> Pace {
        let longest = STORM_FIRST.saturating_mul(1 << reconciles.min(8)).min(STORM_LONGEST);
        Pace { quiet: STORM_QUIET, longest }
    }
}

/// One piece of news.
enum Wake {
    Kernel(Changed),
    Engine(EngineEvent),
    Signal(Signal),
    /// A source failed for good (the kernel's socket): the watcher cannot go on blind.
    Broken(String),
}

/// What a burst said, all of it.
#[derive(Debug, Default)]
pub(super) struct Burst {
    /// How many pieces of news.
    pub count: u64,
    /// Whether the tunnel device was deleted.
    pub gone: bool,
    /// Whether anything was said that calls for a reconcile (the kernel's news, an engine's
    /// change or return), vpnfix's own deleted routes aside.
    pub news: bool,
    /// vpnfix's routes deleted (by the watcher itself, or by hand: the record tells).
    pub own_gone: Vec<ipnet::IpNet>,
    /// The engines' news, in order.
    pub engine: Vec<EngineEvent>,
    /// A signal asking the watcher to end.
    pub stop: Option<Signal>,
    /// A source that failed for good.
    pub broken: Option<String>,
    /// When the first news came.
    pub first: Option<Instant>,
}

/// The signals that ask the watcher to end: a supervisor's stop (`SIGTERM`, to a whole process
/// group or cgroup at once), Ctrl-C, a hang-up.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// A container seen `Starting` that has not run (or died) within this is no longer waited for
/// (`docker network connect` of a running container has no `start` to come; a gathering never
/// lasts longer than its pace's `longest` anyway). On a loaded host a start takes seconds.
const STARTING_AT_MOST: Duration = Duration::from_secs(10);

/// The sources, started.
pub(super) struct Wakes {
    rx: Receiver<Wake>,
    dev: String,
    /// Containers starting (seen joining a network, not yet running), since when.
    starting: HashMap<String, Instant>,
    /// Whether news is being gathered (the kernel's thread then passes on all it hears).
    gathering: Arc<AtomicBool>,
}

impl Wakes {
    /// Subscribes to the kernel's notifications (before returning: nothing after this is
    /// missed), blocks the stop signals in every thread but the one that waits for them, and
    /// follows each engine of `hosts`.
    pub(super) fn start(dev: &str, hosts: &[String], proto: u8) -> Result<Wakes, crate::kernel::KernelError> {
        let mut kernel = Notifications::open(proto)?;
        let signals = stop_signals();
        // Blocked here, before any thread starts: every thread inherits the mask, so only the
        // `sigwait` below ever takes them.
        let _ = signals.thread_block();
        let (tx, rx) = channel();
        let gathering = Arc::new(AtomicBool::new(false));
        let busy = Arc::clone(&gathering);
        spawn("vpnfix-kernel", &tx, move |tx| loop {
            let news = match kernel.wait(None) {
                // While news is being gathered, every notification is passed on: in a storm, the
                // kernel's work for a container being started (its veth pair) keeps the
                // gathering open. Otherwise only news wakes the watcher.
                Ok(c) if c.any || !c.links_gone.is_empty() || !c.own_gone.is_empty() => Wake::Kernel(c),
                Ok(c) if busy.load(Ordering::Relaxed) => Wake::Kernel(c),
                Ok(_) => continue,
                Err(e) => Wake::Broken(crate::logging::chain(&e)),
            };
            let broken = matches!(news, Wake::Broken(_));
            if tx.send(news).is_err() || broken {
                return;
            }
        });
        spawn("vpnfix-signals", &tx, move |tx| {
            while let Ok(sig) = signals.wait() {
                if tx.send(Wake::Signal(sig)).is_err() {
                    return;
                }
            }
        });
        for host in hosts {
            let host = host.clone();
            spawn("vpnfix-engine", &tx, move |tx| events::follow(&host, |e| tx.send(Wake::Engine(e)).is_ok()));
        }
        Ok(Wakes { rx, dev: dev.to_string(), starting: HashMap::new(), gathering })
    }

    /// Sleeps until news comes, then reads on at `pace` (chosen from the time the first news
    /// came: `pace(first)`). A quiet spell ends the gathering only when no container is half
    /// started: its address is news only once the engine lists it, running.
    pub(super) fn burst(&mut self, pace: impl Fn(Instant) -> Pace) -> Burst {
        let mut b = Burst::default();
        match self.rx.recv() {
            Ok(w) => self.add(&mut b, w),
            Err(_) => b.broken = Some("every source of news ended".into()),
        }
        self.gathering.store(true, Ordering::Relaxed);
        let start = Instant::now();
        b.first = Some(start);
        let Pace { quiet, longest } = pace(start);
        while let Some(left) = longest.checked_sub(start.elapsed()) {
            let wait = match self.waiting_for_a_start() {
                Some(until) => until.saturating_duration_since(Instant::now()).max(quiet),
                None => quiet,
            };
            match self.rx.recv_timeout(wait.min(left)) {
                Ok(w) => self.add(&mut b, w),
                Err(RecvTimeoutError::Timeout) if self.waiting_for_a_start().is_some() => {}
                Err(_) => break,
            }
        }
        self.gathering.store(false, Ordering::Relaxed);
        log::debug!(
            "gathered {} item(s) in {} ms at {quiet:?}/{longest:?}; {} container(s) starting",
            b.count,
            start.elapsed().as_millis(),
            self.starting.len()
        );
        b
    }

    /// When the wait for the containers now starting ends, if any is.
    fn waiting_for_a_start(&mut self) -> Option<Instant> {
        let now = Instant::now();
        self.starting.retain(|_, since| now.duration_since(*since) < STARTING_AT_MOST);
        self.starting.values().min().map(|since| *since + STARTING_AT_MOST)
    }

    /// The news until `deadline`, or `None` when there was none by then.
    pub(super) fn until(&mut self, deadline: Instant) -> Option<Burst> {
        let w = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()?;
        let mut b = Burst::default();
        self.add(&mut b, w);
        Some(b)
    }

    fn add(&mut self, b: &mut Burst, w: Wake) {
        b.count += 1;
        match w {
            Wake::Kernel(c) => {
                b.gone |= c.links_gone.contains(&self.dev);
                b.news |= c.any;
                b.own_gone.extend(c.own_gone);
            }
            Wake::Engine(e) => {
                match &e {
                    EngineEvent::Changed { step: Step::Starting(id), .. } => {
                        self.starting.insert(id.clone(), Instant::now());
                    }
                    EngineEvent::Changed { step: Step::Running(id) | Step::Dead(id), .. } => {
                        self.starting.remove(id);
                    }
                    EngineEvent::Lost { .. } => self.starting.clear(),
                    _ => {}
                }
                b.news |= !matches!(e, EngineEvent::Lost { .. });
                b.engine.push(e);
            }
            Wake::Signal(s) => b.stop = Some(s),
            Wake::Broken(why) => b.broken = Some(why),
        }
    }
}

/// Starts a named thread with its own end of the channel.
fn spawn(name: &str, tx: &Sender<Wake>, body: impl FnOnce(Sender<Wake>) + Send + 'static) {
    let tx = tx.clone();
    let started = std::thread::Builder::new().name(name.into()).spawn(move || body(tx));
    if let Err(e) = started {
        log::warn!("cannot start thread {name} ({e}); the watcher goes on without that source");
    }
}
