//! An engine's event stream, for the watcher: the container and network events that can move an
//! address or a bridge (`docker events`), the stream's breaks, and its return. It translates;
//! what a change means is the watcher's reconcile.
//!
//! No polling: the stream sleeps until the engine says something, and a broken stream waits for
//! the engine's Unix socket to be created again (inotify on its directory: dockerd and Podman
//! remove a stale socket and create a new one when they start). Only a TCP `DOCKER_HOST`, which
//! no file announces, is tried again after a growing pause.

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What an engine's stream said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineEvent {
    /// The engine answers (first, or again after a break): its facts must be read afresh.
    Up {
        /// The engine's address.
        host: String,
    },
    /// A container or network changed, e.g. `container start milvus-etcd`.
    Changed {
        /// The engine's address.
        host: String,
        /// What changed, for the log.
        what: String,
        /// Where a container's start is in it.
        step: Step,
    },
    /// The stream broke: the engine's facts are unknown until it is `Up` again.
    Lost {
        /// The engine's address.
        host: String,
        /// Why, for the log.
        why: String,
    },
}

/// Where a container's start is: a start joins the container's networks (`network connect`)
/// before the container runs (`container start`), and the engine lists it, with its address,
/// only once it runs. A watcher that sees a container `Starting` waits for it to be `Running`
/// (or `Dead`) before it reads the engine again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Container (its id) joined a network: it is starting, or was connected while running.
    Starting(String),
    /// Container (its id) runs.
    Running(String),
    /// Container (its id) stopped.
    Dead(String),
    /// A network's own event, or a container's leaving one.
    Other,
}

/// The actions that can put an address on a bridge, take one off, or make or remove a bridge:
/// a container's `start` and `die`, a network's `create`, `destroy`, `connect` and
/// `disconnect` (`docker events --filter`: values of one key are or-ed, keys and-ed).
const ACTIONS: [&str; 6] = ["start", "die", "create", "destroy", "connect", "disconnect"];

/// The longest pause between attempts at a TCP engine.
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// What an event says, when the watcher acts on it (Podman's compatible stream may not filter):
/// a line for the log and the step of a container's start.
pub fn matters(e: &EventMessage) -> Option<(String, Step)> {
    let typ = e.typ.map(|t| t.to_string())?;
    let action = e.action.as_deref()?;
    let actor = e.actor.as_ref();
    let attr = |k: &str| actor.and_then(|a| a.attributes.as_ref()?.get(k).cloned());
    let id = actor.and_then(|a| a.id.clone()).unwrap_or_default();
    let step = match (typ.as_str(), action) {
        ("container", "start") => Step::Running(id),
        ("container", "die") => Step::Dead(id),
        ("network", "connect") => Step::Starting(attr("container").unwrap_or_default()),
        ("network", "create" | "destroy" | "disconnect") => Step::Other,
        _ => return None,
    };
    let what = format!("{typ} {action} {}", attr("name").unwrap_or_default());
    Some((what.trim_end().to_string(), step))
}

/// Follows the engine at `host` for as long as `send` accepts what it says (`false`: the
/// watcher is gone). Blocking: it runs a runtime of its own on the calling thread.
pub fn follow(host: &str, send: impl Fn(EngineEvent) -> bool) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            send(EngineEvent::Lost { host: host.into(), why: format!("no runtime to follow it: {e}") });
            return;
        }
    };
    let socket = host.strip_prefix("unix://").map(PathBuf::from);
    let mut pause = Duration::from_secs(1);
    let mut was_up = false;
    loop {
        match rt.block_on(stream(host, &send)) {
            Ended::Receiver => return,
            Ended::Broke(why) => {
                was_up = true;
                pause = Duration::from_secs(1);
                if !send(EngineEvent::Lost { host: host.into(), why }) {
                    return;
                }
            }
            Ended::NoAnswer(why) => {
                log::debug!("{host} {}: {why}", if was_up { "is not back yet" } else { "does not answer" });
                // Its socket may accept and the engine still refuse (starting): no spinning.
                std::thread::sleep(pause);
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        }
        let made = socket
            .as_deref()
            .map(|p| crate::fsutil::wait_until_made(p, || std::os::unix::net::UnixStream::connect(p).is_ok()));
        if !matches!(made, Some(Ok(()))) {
            // A TCP engine, or inotify failed (out of watches?): a pause rather than a spin.
            std::thread::sleep(pause);
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }
}

/// How a stream ended.
enum Ended {
    /// The watcher no longer listens.
    Receiver,
    /// It was up and broke.
    Broke(String),
    /// The engine did not answer at all.
    NoAnswer(String),
}

/// One life of the stream: the engine is asked for its networks (so `Up` means it serves), then its events are
/// followed from just before the ping (Docker replays them from its buffer: none is lost
/// between the gather `Up` causes and the stream's start).
async fn stream(host: &str, send: &impl Fn(EngineEvent) -> bool) -> Ended {
    let docker = match Docker::connect_with_host(host) {
        Ok(d) => d,
        Err(e) => return Ended::NoAnswer(e.to_string()),
    };
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    // The network list a gather asks anyway (no other request's code in the binary): it
    // answers once the engine serves.
    if let Err(e) = docker.list_networks(None::<bollard::query_parameters::ListNetworksOptions>).await {
        return Ended::NoAnswer(crate::logging::chain(&e));
    }
    if !send(EngineEvent::Up { host: host.into() }) {
        return Ended::Receiver;
    }
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string(), "network".to_string()]),
        ("event".to_string(), ACTIONS.iter().map(|a| a.to_string()).collect()),
    ]);
    let since = format!("{}.{:09}", since.as_secs(), since.subsec_nanos());
    let options = EventsOptions { since: Some(since), until: None, filters: Some(filters) };
    let mut events = docker.events(Some(options));
    while let Some(e) = events.next().await {
        match e {
            Ok(e) => {
                if let Some((what, step)) = matters(&e) {
                    if !send(EngineEvent::Changed { host: host.into(), what, step }) {
                        return Ended::Receiver;
                    }
                }
            }
            Err(e) => return Ended::Broke(crate::logging::chain(&e)),
        }
    }
    Ended::Broke("the engine ended its event stream".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> EventMessage {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn only_events_that_move_addresses_or_bridges_matter() {
        let start = event(r#"{"Type":"container","Action":"start","Actor":{"ID":"ab","Attributes":{"name":"web"}}}"#);
        assert_eq!(matters(&start), Some(("container start web".into(), Step::Running("ab".into()))));
        let connect = event(
            r#"{"Type":"network","Action":"connect","Actor":{"ID":"n1","Attributes":{"container":"ab","name":"n"}}}"#,
        );
        assert_eq!(matters(&connect), Some(("network connect n".into(), Step::Starting("ab".into()))));
        let create = event(r#"{"Type":"network","Action":"create","Actor":{"ID":"cd","Attributes":{"name":"n1"}}}"#);
        assert_eq!(matters(&create), Some(("network create n1".into(), Step::Other)));
        for quiet in [
            r#"{"Type":"container","Action":"create"}"#,
            r#"{"Type":"container","Action":"exec_start: sh"}"#,
            r#"{"Type":"image","Action":"pull"}"#,
            r#"{"Type":"volume","Action":"destroy"}"#,
            r#"{"Action":"start"}"#,
        ] {
            assert_eq!(matters(&event(quiet)), None, "{quiet}");
        }
    }
}
