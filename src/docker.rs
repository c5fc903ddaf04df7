//! Container engine adapter: finds the engines (Docker, Podman), asks each for its networks
//! (the Docker Engine API through bollard, which Podman serves too; Podman's own API for what
//! that leaves out) and translates their descriptions (`docker network inspect`) into
//! [`DockerNetwork`]s. It translates; it decides nothing (which bridge a network is on is
//! [`crate::bridges`]'s decision).

use crate::net::{Container, DockerNetwork, Egress, Engine, IpamPool, Skipped};
use bollard::models::{ContainerSummary, EndpointResource, Network, NetworkInspect};
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions};
use bollard::Docker;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

pub mod events;
pub mod fresh;
mod libpod;

/// Where engines listen when `DOCKER_HOST` names none: Docker's socket and rootful Podman's
/// (`podman.socket`). Each one that exists is asked; several engines may answer on one host.
pub const USUAL_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/podman/podman.sock"];

/// The engines to ask: `DOCKER_HOST` (from the environment, else `/etc/vpnfix.conf`) alone when
/// it is set, else every usual socket that `exists`.
pub fn engine_hosts(docker_host: Option<&str>, exists: impl Fn(&Path) -> bool) -> Vec<String> {
    match docker_host.filter(|h| !h.is_empty()) {
        Some(h) => vec![h.to_string()],
        None => USUAL_SOCKETS.iter().filter(|s| exists(Path::new(s))).map(|s| format!("unix://{s}")).collect(),
    }
}

/// Why an engine could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The address in `DOCKER_HOST` is not one bollard can use.
    #[error("cannot use the container engine at {host}")]
    Connect {
        /// The address.
        host: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// A request failed (no socket, refused, garbage).
    #[error("the container engine at {host} did not answer {what}")]
    Request {
        /// The address.
        host: String,
        /// Which request.
        what: &'static str,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// A plain request vpnfix makes itself failed, or its answer is not what the engine gives.
    #[error("the container engine at {host} did not answer {what}")]
    Answer {
        /// The address.
        host: String,
        /// Which request.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The engine took longer than the configured time in all.
    #[error("the container engine at {host} did not answer within {ms} ms (VPNFIX_DOCKER_TIMEOUT_MS)")]
    Timeout {
        /// The address.
        host: String,
        /// The limit.
        ms: u64,
    },
}

impl DockerError {
    /// The address of the engine that did not answer.
    pub fn host(&self) -> &str {
        match self {
            DockerError::Connect { host, .. }
            | DockerError::Request { host, .. }
            | DockerError::Answer { host, .. }
            | DockerError::Timeout { host, .. } => host,
        }
    }
}

/// One engine's answer: which engine it is and its networks as `docker network inspect`
/// describes them (Podman's with the bridge name its own API gives, see [`EngineNetwork`]).
#[derive(Clone, Debug)]
pub struct EngineAnswer {
    /// The address asked.
    pub host: String,
    /// Docker or Podman.
    pub engine: Engine,
    /// Its networks.
    pub networks: Vec<EngineNetwork>,
}

/// A network as an engine describes it: `docker network inspect`'s object, with `"Engine":
/// "podman"` beside its fields when Podman gave it (absent means Docker), as a bundle's
/// docker.json holds it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EngineNetwork {
    /// The engine.
    #[serde(rename = "Engine", default, skip_serializing_if = "is_docker")]
    pub engine: Engine,
    /// The description.
    #[serde(flatten)]
    pub inspect: NetworkInspect,
    /// The engine's address, where it was asked live (a bundle's docker.json has none).
    #[serde(skip)]
    pub host: Option<String>,
}

fn is_docker(e: &Engine) -> bool {
    *e == Engine::Docker
}

/// Why the engine at `host` cannot be asked before anything is sent: its Unix socket does not
/// exist (checked here, so a host with no engine costs no thread and no runtime).
pub fn missing(host: &str) -> Option<DockerError> {
    let path = host.strip_prefix("unix://")?;
    let gone = !Path::new(path).exists();
    gone.then(|| DockerError::Connect {
        host: host.into(),
        source: bollard::errors::Error::SocketNotFoundError(path.to_string()),
    })
}

/// Every engine of `hosts`, asked at once, within one overall time limit: each engine's answer
/// or why it gave none.
pub async fn inspect_all(hosts: &[String], timeout_ms: u64) -> Vec<Result<EngineAnswer, DockerError>> {
    let limit = Duration::from_millis(timeout_ms);
    let one = |host: &'_ String| {
        let host = host.clone();
        async move {
            // A long-lived process that follows the engine's events reuses its last answer
            // while the engine has said nothing (see `fresh`).
            if let Some(a) = fresh::kept(&host) {
                return Ok(a);
            }
            let generation = fresh::generation(&host);
            let r = match tokio::time::timeout(limit, inspect_one(&host)).await {
                Ok(r) => r,
                Err(_) => Err(DockerError::Timeout { host: host.clone(), ms: timeout_ms }),
            };
            if let (Some(g), Ok(a)) = (generation, &r) {
                fresh::keep(&host, g, a);
            }
            r
        }
    };
    futures::future::join_all(hosts.iter().map(one)).await
}

async fn inspect_one(host: &str) -> Result<EngineAnswer, DockerError> {
    // The one time limit is the caller's tokio timeout: bollard's own counts whole seconds
    // (a 500 ms limit would become 0 s and fail every request).
    let docker =
        Docker::connect_with_host(host).map_err(|source| DockerError::Connect { host: host.into(), source })?;
    // No version negotiation: bollard 0.21.1 sends its paths without a `/vX.Y` prefix (its
    // src/uri.rs builds `/v1.53{path}`, then `Url::join` with the absolute path drops it; the
    // version is pinned in Cargo.toml and tests/netns_docker.rs checks the request lines), so
    // every engine, old or new, answers in its own API version. Asking `/version` first would cost a round trip, and
    // on Docker 20.10 the slowest one (it asks containerd and runc for theirs: 5-6 ms).
    // Podman's compatible answer names no bridge; its own network list does, and answering it
    // at all tells Podman from Docker (which has no such path). It is asked only when the
    // compatible answer looks like Podman's, so Docker's route-up pays no extra round trip.
    let mut networks = networks(&docker, host).await?;
    let libpod = match libpod::looks_like_podman(&networks) {
        true => libpod::networks(host).await,
        false => None,
    };
    let engine = if libpod.is_some() { Engine::Podman } else { Engine::Docker };
    if let Some(list) = &libpod {
        libpod::name_bridges(&mut networks, list);
    }
    let with = |inspect| EngineNetwork { engine, inspect, host: Some(host.to_string()) };
    let networks = networks.into_iter().map(with).collect();
    Ok(EngineAnswer { host: host.into(), engine, networks })
}

/// The process of each container of `ids` as the engine at `host` sees it (in the engine's pid
/// namespace, usually this host's), within `timeout_ms` in all: its pid, `None` for a container
/// that is not running (or gone). The error is the engine's: no answer, or none in time. One
/// plain GET each, blocking (no runtime), and only `State` read: bollard's whole container
/// model would cost a third of the binary's size limit.
pub fn pids(host: &str, ids: &[String], timeout_ms: u64) -> Result<Vec<Option<u32>>, DockerError> {
    #[derive(serde::Deserialize)]
    struct Inspect {
        #[serde(rename = "State")]
        state: Option<State>,
    }
    #[derive(serde::Deserialize)]
    struct State {
        #[serde(rename = "Running", default)]
        running: bool,
        #[serde(rename = "Pid", default)]
        pid: i64,
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
    let err = |source| DockerError::Answer { host: host.into(), what: "a container inspection", source };
    let mut out = Vec::new();
    for id in ids {
        // Not an id an engine gives: nothing to ask.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            out.push(None);
            continue;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(DockerError::Timeout { host: host.into(), ms: timeout_ms });
        }
        let pid = match libpod::answer_blocking(host, &format!("/containers/{id}/json"), left) {
            Ok((200, body)) => {
                let i: Inspect = serde_json::from_slice(&body)
                    .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
                let s = i.state.filter(|s| s.running);
                s.and_then(|s| u32::try_from(s.pid).ok()).filter(|p| *p > 0)
            }
            // Removed meanwhile: simply not running.
            Ok((404, _)) => None,
            Ok((status, _)) => return Err(err(std::io::Error::other(format!("HTTP status {status}")))),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(DockerError::Timeout { host: host.into(), ms: timeout_ms })
            }
            Err(e) => return Err(err(e)),
        };
        out.push(pid);
    }
    Ok(out)
}

fn request<'a>(host: &'a str, what: &'static str) -> impl Fn(bollard::errors::Error) -> DockerError + 'a {
    move |source| DockerError::Request { host: host.into(), what, source }
}

/// Every network with its containers, as `docker network inspect` describes them, in one round
/// trip: the network list (which omits containers since API 1.28) and the running containers'
/// network settings are asked together and joined. Inspecting each network after the list
/// would cost a second round trip (about 0.7 ms on Docker 20.10). All drivers are listed, as
/// `docker network ls` does, so a snapshot's docker.json is what DESIGN.md defines;
/// [`from_inspect`] keeps the bridges.
async fn networks(docker: &Docker, host: &str) -> Result<Vec<NetworkInspect>, DockerError> {
    let (list, containers) = tokio::join!(
        docker.list_networks(None::<ListNetworksOptions>),
        docker.list_containers(Some(ListContainersOptions { all: false, ..Default::default() }))
    );
    let list = list.map_err(request(host, "the network list"))?;
    let containers = containers.map_err(request(host, "the container list"))?;
    Ok(join(list, containers))
}

/// The networks with their running containers' endpoints, as a network inspection lists them.
fn join(list: Vec<Network>, containers: Vec<ContainerSummary>) -> Vec<NetworkInspect> {
    let mut endpoints = endpoints(containers);
    let mut take = |key: &Option<String>| key.as_ref().and_then(|k| endpoints.remove(k));
    let inspect = |n: Network| NetworkInspect {
        // Podman before 5.4 put the network's name where its id belongs (containers/podman#24910).
        containers: Some(take(&n.id).or_else(|| take(&n.name)).unwrap_or_default()),
        name: n.name,
        id: n.id,
        created: n.created,
        scope: n.scope,
        driver: n.driver,
        enable_ipv4: n.enable_ipv4,
        enable_ipv6: n.enable_ipv6,
        ipam: n.ipam,
        internal: n.internal,
        attachable: n.attachable,
        ingress: n.ingress,
        config_from: n.config_from,
        config_only: n.config_only,
        options: n.options,
        labels: n.labels,
        peers: n.peers,
        ..Default::default()
    };
    list.into_iter().map(inspect).collect()
}

/// The endpoints of running containers by network (its id, or its name where the engine gives
/// no id), keyed by container id, as a network inspection lists them: the container's name
/// without the leading `/`, addresses with their prefix length.
fn endpoints(containers: Vec<ContainerSummary>) -> HashMap<String, HashMap<String, EndpointResource>> {
    let with_len = |ip: Option<String>, len: Option<i64>| {
        ip.filter(|a| !a.is_empty()).map(|a| format!("{a}/{}", len.unwrap_or(0)))
    };
    let mut out: HashMap<String, HashMap<String, EndpointResource>> = HashMap::new();
    for c in containers {
        let id = c.id.unwrap_or_default();
        let name = c.names.as_deref().and_then(own_name);
        for (network, ep) in c.network_settings.and_then(|s| s.networks).into_iter().flatten() {
            let key = ep.network_id.filter(|n| !n.is_empty()).unwrap_or(network);
            let resource = EndpointResource {
                name: name.clone(),
                endpoint_id: ep.endpoint_id,
                mac_address: ep.mac_address,
                ipv4_address: with_len(ep.ip_address, ep.ip_prefix_len),
                ipv6_address: with_len(ep.global_ipv6_address, ep.global_ipv6_prefix_len),
            };
            out.entry(key).or_default().insert(id.clone(), resource);
        }
    }
    out
}

/// A container's own name among its `Names`: legacy `--link` adds aliases such as `/web/db`,
/// which sort before it; the name is the one with no `/` after the leading one (as the docker
/// CLI picks it).
fn own_name(names: &[String]) -> Option<String> {
    let trimmed = names.iter().map(|n| n.strip_prefix('/').unwrap_or(n));
    trimmed.clone().find(|n| !n.contains('/')).or_else(|| trimmed.clone().next()).map(str::to_string)
}

/// The bridge option moby's bridge driver reads (`com.docker.network.bridge.name`).
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// The compose project label.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// The label naming the network's key in the compose file.
const COMPOSE_NETWORK: &str = "com.docker.compose.network";

/// A bridge network from Docker's description; `None` for other drivers (host, null, overlay,
/// macvlan …), which own no Linux bridge. Malformed addresses are reported and left out.
pub fn from_inspect(en: &EngineNetwork, skipped: &mut Vec<Skipped>) -> Option<DockerNetwork> {
    let n = &en.inspect;
    if n.driver.as_deref() != Some("bridge") {
        return None;
    }
    let name = n.name.clone().unwrap_or_default();
    let id = n.id.clone().unwrap_or_default();
    let bridge = n
        .options
        .as_ref()
        .and_then(|o| o.get(BRIDGE_NAME))
        .filter(|b| !b.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("br-{}", id.get(..12).unwrap_or(&id)));
    let mut bad = |what: &str, v: &str| {
        skipped.push(Skipped::new(
            format!("{} network {name}", en.engine),
            format!("{what} {v:?} is malformed; left out"),
        ));
    };
    let mut ipam = Vec::new();
    for c in n.ipam.as_ref().and_then(|i| i.config.as_ref()).into_iter().flatten() {
        let Some(subnet) = c.subnet.as_deref() else { continue };
        let Ok(subnet) = subnet.parse::<IpNet>() else {
            bad("subnet", subnet);
            continue;
        };
        let gateway = c.gateway.as_deref().filter(|g| !g.is_empty()).and_then(|g| g.parse().ok());
        let ip_range = c.ip_range.as_deref().filter(|r| !r.is_empty()).and_then(|r| r.parse().ok());
        ipam.push(IpamPool { subnet: subnet.trunc(), gateway, ip_range });
    }
    let mut containers = Vec::new();
    // Docker's map has no order: walk it by container id so output and reports are stable.
    let mut endpoints: Vec<_> = n.containers.iter().flatten().collect();
    endpoints.sort_by(|a, b| a.0.cmp(b.0));
    for (cid, ep) in endpoints {
        let mut addrs = Vec::new();
        for a in [&ep.ipv4_address, &ep.ipv6_address].into_iter().flatten().filter(|a| !a.is_empty()) {
            match a.parse::<IpNet>().map(|n| n.addr()).or_else(|_| a.parse::<IpAddr>()) {
                Ok(ip) => addrs.push(ip),
                Err(_) => bad("container address", a),
            }
        }
        let cname = ep.name.clone().unwrap_or_else(|| cid.get(..12).unwrap_or(cid).to_string());
        containers.push(Container { id: cid.clone(), name: cname, addrs });
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    Some(DockerNetwork {
        engine: en.engine,
        compose_project: n.labels.as_ref().and_then(|l| l.get(COMPOSE_PROJECT)).cloned(),
        compose_network: n.labels.as_ref().and_then(|l| l.get(COMPOSE_NETWORK)).cloned(),
        name,
        id,
        bridge,
        ipam,
        containers,
        egress: egress(n),
        host: en.host.clone(),
    })
}

/// The bridge driver's option that turns masquerading off.
const MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";

/// How the network's containers leave the host, as its description says: `Internal` (Docker's and
/// Podman's), the bridge driver's masquerade option (moby parses it as a Go bool).
fn egress(n: &NetworkInspect) -> Egress {
    let masquerade = n.options.as_ref().and_then(|o| o.get(MASQUERADE)).map(|v| v.trim().to_ascii_lowercase());
    if n.internal == Some(true) {
        Egress::Internal
    } else if matches!(masquerade.as_deref(), Some("false" | "0" | "f")) {
        Egress::NoMasquerade
    } else {
        Egress::Masquerade
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn networks(json: &str) -> Vec<Network> {
        serde_json::from_str(json).unwrap()
    }

    fn containers(json: &str) -> Vec<ContainerSummary> {
        serde_json::from_str(json).unwrap()
    }

    /// `name: ipv4 ipv6` of each endpoint of a joined network, sorted.
    fn endpoints_of(n: &NetworkInspect) -> Vec<String> {
        let mut v: Vec<String> = n
            .containers
            .iter()
            .flatten()
            .map(|(id, e)| {
                let v6 = e.ipv6_address.as_deref().unwrap_or("-");
                format!("{id} {}: {} {v6}", e.name.as_deref().unwrap_or("?"), e.ipv4_address.as_deref().unwrap_or("-"))
            })
            .collect();
        v.sort();
        v
    }

    const TWO_NETWORKS: &str = r#"[
        {"Name":"a_default","Id":"aaaa","Driver":"bridge"},
        {"Name":"b_default","Id":"bbbb","Driver":"bridge"},
        {"Name":"empty","Id":"eeee","Driver":"bridge"},
        {"Name":"host","Id":"hhhh","Driver":"host"}
    ]"#;

    #[test]
    fn containers_join_every_network_they_are_on_as_inspect_shows_them() {
        let list = containers(
            r#"[
            {"Id":"c1","Names":["/web"],"NetworkSettings":{"Networks":{
                "a_default":{"NetworkID":"aaaa","EndpointID":"e1","IPAddress":"172.20.0.2","IPPrefixLen":16,
                             "GlobalIPv6Address":"fd42::2","GlobalIPv6PrefixLen":64,"MacAddress":"02:42:ac:14:00:02"},
                "b_default":{"NetworkID":"bbbb","EndpointID":"e2","IPAddress":"172.21.0.2","IPPrefixLen":16,
                             "GlobalIPv6Address":"","GlobalIPv6PrefixLen":0}}}},
            {"Id":"c2","Names":["/web/db","/db"],"NetworkSettings":{"Networks":{
                "a_default":{"NetworkID":"aaaa","IPAddress":"172.20.0.3","IPPrefixLen":16}}}},
            {"Id":"c3","Names":["/hostnet"],"NetworkSettings":{"Networks":{
                "host":{"NetworkID":"hhhh","IPAddress":""}}}}
        ]"#,
        );
        let joined = join(networks(TWO_NETWORKS), list);
        let by_name = |n: &str| joined.iter().find(|j| j.name.as_deref() == Some(n)).unwrap();
        assert_eq!(
            endpoints_of(by_name("a_default")),
            ["c1 web: 172.20.0.2/16 fd42::2/64", "c2 db: 172.20.0.3/16 -"],
            "a link alias (/web/db) is not the name; an empty IPv6 address is none"
        );
        assert_eq!(endpoints_of(by_name("b_default")), ["c1 web: 172.21.0.2/16 -"]);
        assert_eq!(by_name("empty").containers.as_ref().map(HashMap::len), Some(0), "no containers: an empty map");
        assert_eq!(endpoints_of(by_name("host")), ["c3 hostnet: - -"]);
        assert_eq!(joined.len(), 4, "every driver is listed; from_inspect keeps the bridges");
    }

    /// Podman before 5.4 gives the network's name as `NetworkID` (containers/podman#24910), and
    /// some engines none at all: the containers still join their network.
    #[test]
    fn a_network_named_where_its_id_belongs_still_gets_its_containers() {
        let list = containers(
            r#"[
            {"Id":"p1","Names":["/api"],"NetworkSettings":{"Networks":{
                "a_default":{"NetworkID":"a_default","IPAddress":"172.20.0.5","IPPrefixLen":16}}}},
            {"Id":"p2","Names":["/worker"],"NetworkSettings":{"Networks":{
                "b_default":{"NetworkID":"","IPAddress":"172.21.0.5","IPPrefixLen":16}}}}
        ]"#,
        );
        let joined = join(networks(TWO_NETWORKS), list);
        assert_eq!(endpoints_of(&joined[0]), ["p1 api: 172.20.0.5/16 -"]);
        assert_eq!(endpoints_of(&joined[1]), ["p2 worker: 172.21.0.5/16 -"]);
    }

    #[test]
    fn a_containers_own_name_is_the_one_without_a_link_path() {
        let names = |v: &[&str]| own_name(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(names(&["/db"]), Some("db".into()));
        assert_eq!(names(&["/a/db", "/b/db", "/db"]), Some("db".into()));
        assert_eq!(names(&["/x/y"]), Some("x/y".into()), "no plain name: the first, as it is");
        assert_eq!(names(&[]), None);
    }

    /// A snapshot's docker.json marks Podman's networks and reads back the same; Docker's
    /// objects are `docker network inspect`'s, unmarked.
    #[test]
    fn the_engine_is_kept_in_a_bundle() {
        let text = r#"[{"Name":"pdtnet","Id":"9a","Driver":"bridge","Engine":"podman"},{"Name":"milvus","Id":"7b"}]"#;
        let list: Vec<EngineNetwork> = serde_json::from_str(text).unwrap();
        assert_eq!((list[0].engine, list[1].engine), (Engine::Podman, Engine::Docker));
        assert_eq!(list[0].inspect.name.as_deref(), Some("pdtnet"));
        let back = serde_json::to_string(&list).unwrap();
        assert!(back.contains(r#""Engine":"podman""#) && back.matches("Engine").count() == 1, "{back}");
        let mut skipped = Vec::new();
        let n = from_inspect(&list[0], &mut skipped).unwrap();
        assert_eq!((n.engine, n.bridge.as_str()), (Engine::Podman, "br-9a"), "no name given: the guess, a hint only");
    }

    #[test]
    fn engines_are_docker_host_alone_or_every_usual_socket_there() {
        let none = |_: &Path| false;
        let all = |_: &Path| true;
        assert_eq!(engine_hosts(Some("tcp://10.0.0.1:2375"), all), ["tcp://10.0.0.1:2375"]);
        assert_eq!(engine_hosts(None, all), ["unix:///var/run/docker.sock", "unix:///run/podman/podman.sock"]);
        assert_eq!(engine_hosts(Some(""), |p: &Path| p.ends_with("podman.sock")), ["unix:///run/podman/podman.sock"]);
        assert!(engine_hosts(None, none).is_empty());
    }
}
