//! What wakes the watcher, each on a thread of its own that sleeps until its source speaks: the
//! kernel's notifications (a blocking `recv`), each engine's event stream (its own runtime),
//! and the signals that ask it to end (`sigwait`). They meet in one channel; a burst of them —
//! a compose project of 30 services starting — is read as one.

use crate::docker::events::{self, EngineEvent};
use crate::kernel::{Changed, Notifications};
use nix::sys::signal::{SigSet, Signal};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// A burst ends after this long without news.
const QUIET: Duration = Duration::from_millis(50);
/// A burst that goes on longer is acted on anyway.
const LONGEST: Duration = Duration::from_secs(1);

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

/// The sources, started.
pub(super) struct Wakes {
    rx: Receiver<Wake>,
    dev: String,
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
        spawn("vpnfix-kernel", &tx, move |tx| loop {
            let news = match kernel.wait(None) {
                Ok(c) if c.any || !c.links_gone.is_empty() || !c.own_gone.is_empty() => Wake::Kernel(c),
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
        Ok(Wakes { rx, dev: dev.to_string() })
    }

    /// Sleeps until news comes, then reads until it has been quiet for [`QUIET`] (at most
    /// [`LONGEST`]).
    pub(super) fn burst(&self) -> Burst {
        let mut b = Burst::default();
        match self.rx.recv() {
            Ok(w) => self.add(&mut b, w),
            Err(_) => b.broken = Some("every source of news ended".into()),
        }
        let start = Instant::now();
        while start.elapsed() < LONGEST {
            match self.rx.recv_timeout(QUIET) {
                Ok(w) => self.add(&mut b, w),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        b
    }

    /// The news until `deadline`, or `None` when there was none by then.
    pub(super) fn until(&self, deadline: Instant) -> Option<Burst> {
        let w = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()?;
        let mut b = Burst::default();
        self.add(&mut b, w);
        Some(b)
    }

    fn add(&self, b: &mut Burst, w: Wake) {
        b.count += 1;
        match w {
            Wake::Kernel(c) => {
                b.gone |= c.links_gone.contains(&self.dev);
                b.news |= c.any;
                b.own_gone.extend(c.own_gone);
            }
            Wake::Engine(e) => {
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
