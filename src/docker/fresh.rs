//! The engines' answers kept by a long-lived process (OpenVPN's plugin helper): each engine's
//! event stream is followed ([`super::events::follow`]), and an answer is reused for as long as
//! the engine has said nothing that can move an address or a bridge and its stream is up. A
//! connect then costs no round trip to the engine (Docker 20.10 takes most of a millisecond to
//! list its containers). A process that never calls [`follow`] (every hook run as a script)
//! asks the engines every time, as before.
//!
//! An answer is kept only if no event came while it was being read: the generation is read
//! before the question and compared after. An event stream starts from just before its first
//! request ([`super::events`]), so nothing between the two is missed.

use super::events::{self, EngineEvent};
use super::EngineAnswer;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The followed engines, by address.
static FOLLOWED: OnceLock<Mutex<HashMap<String, Followed>>> = OnceLock::new();

/// What is known of one followed engine.
#[derive(Default)]
struct Followed {
    /// Whether its event stream is up: only then can an answer be trusted to stay true.
    up: bool,
    /// Counts everything the stream said (events, breaks, returns).
    generation: u64,
    /// The last answer, and the generation it was read at.
    kept: Option<(u64, EngineAnswer)>,
}

/// Follows every engine of `hosts` from now on, each on a thread of its own, for the life of
/// the process. Once is enough: later calls add nothing.
pub fn follow(hosts: &[String]) {
    let map = hosts.iter().map(|h| (h.clone(), Followed::default())).collect();
    if FOLLOWED.set(Mutex::new(map)).is_err() {
        return;
    }
    for host in hosts {
        let host = host.clone();
        let spawned = std::thread::Builder::new().name("vpnfix-fresh".into()).spawn(move || {
            events::follow(&host, |e| {
                heard(&e);
                true
            })
        });
        if let Err(e) = spawned {
            log::debug!("cannot follow the engines' events ({e}): each connect asks them");
        }
    }
}

/// Reads every followed engine once its stream is up (waiting at most `wait`), on a thread of
/// its own: the first connect finds the answers kept already.
pub fn warm(hosts: &[String], wait: std::time::Duration, timeout_ms: u64) {
    let hosts = hosts.to_vec();
    let _ = std::thread::Builder::new().name("vpnfix-warm".into()).spawn(move || {
        let until = std::time::Instant::now() + wait;
        while hosts.iter().any(|h| generation(h).is_none()) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            let _ = rt.block_on(super::inspect_all(&hosts, timeout_ms));
        }
    });
}

/// Counts what an engine's stream said.
fn heard(e: &EngineEvent) {
    let (EngineEvent::Up { host } | EngineEvent::Changed { host, .. } | EngineEvent::Lost { host, .. }) = e;
    with(host, |f| f.heard(!matches!(e, EngineEvent::Lost { .. })));
}

fn with<T>(host: &str, act: impl FnOnce(&mut Followed) -> T) -> Option<T> {
    let mut map = FOLLOWED.get()?.lock().ok()?;
    map.get_mut(host).map(act)
}

/// The engine's kept answer, if nothing happened since it was read.
pub(super) fn kept(host: &str) -> Option<EngineAnswer> {
    with(host, |f| f.kept().cloned()).flatten()
}

/// Before asking the engine: the generation to hand to [`keep`]; `None` when it is not followed
/// or its stream is not up (its answer then cannot be kept).
pub(super) fn generation(host: &str) -> Option<u64> {
    with(host, |f| f.generation()).flatten()
}

/// After asking: keeps the answer, if the stream said nothing since `generation`.
pub(super) fn keep(host: &str, generation: u64, answer: &EngineAnswer) {
    with(host, |f| f.keep(generation, answer));
}

impl Followed {
    /// The stream said something: whatever was kept may be stale; `up` is false for a break.
    fn heard(&mut self, up: bool) {
        self.generation += 1;
        self.up = up;
        self.kept = None;
    }

    fn kept(&self) -> Option<&EngineAnswer> {
        match &self.kept {
            Some((g, a)) if self.up && *g == self.generation => Some(a),
            _ => None,
        }
    }

    fn generation(&self) -> Option<u64> {
        self.up.then_some(self.generation)
    }

    fn keep(&mut self, generation: u64, answer: &EngineAnswer) {
        if self.up && self.generation == generation {
            self.kept = Some((generation, answer.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Engine;

    fn answer(n: usize) -> EngineAnswer {
        let networks = vec![super::super::EngineNetwork::default(); n];
        EngineAnswer { host: "unix:///run/docker.sock".into(), engine: Engine::Docker, networks }
    }

    #[test]
    fn an_answer_is_kept_only_while_the_stream_says_nothing() {
        let mut f = Followed::default();
        // Not followed yet (no stream up): nothing is kept.
        assert_eq!(f.generation(), None);
        f.keep(0, &answer(1));
        assert!(f.kept().is_none());
        // Up: an answer read at the current generation is kept, and reused.
        f.heard(true);
        let g = f.generation().unwrap();
        f.keep(g, &answer(2));
        assert_eq!(f.kept().map(|a| a.networks.len()), Some(2));
        // An event (a container started): gone; an answer read before it is not kept either.
        f.heard(true);
        assert!(f.kept().is_none());
        f.keep(g, &answer(3));
        assert!(f.kept().is_none(), "read before the event: it may miss the container");
        let g = f.generation().unwrap();
        f.keep(g, &answer(4));
        assert_eq!(f.kept().map(|a| a.networks.len()), Some(4));
        // The stream broke: nothing is trusted until it is up again.
        f.heard(false);
        assert!(f.kept().is_none());
        assert_eq!(f.generation(), None);
        f.heard(true);
        assert!(f.kept().is_none(), "back up: read afresh");
    }
}
