//! Bundles: a directory of `ip -j` and `docker network inspect` dumps plus the hook's
//! environment, so a conflict on any machine can be planned here without root or Docker.
//!
//! Files (all optional; a missing one means "nothing of that kind"): `route.json`
//! (`ip -j route show table main`), `route6.json` (`ip -j -6 route show table main`),
//! `link.json` (`ip -j -d link show`), `addr.json` (`ip -j addr show`), `neigh.json`
//! (`ip -j neigh show`), `docker.json` (`docker network inspect $(docker network ls -q)`),
//! `env` (`KEY=value` lines). The raw types mirror iproute2's JSON, so `snapshot` writes them too.

mod raw;
mod write;

pub use raw::{RawAddr, RawAddrs, RawLink, RawLinkInfo, RawNeigh, RawNexthop, RawRoute};
pub use write::{to_texts, write, Snapshot};

use crate::config::parse_kv_lines;
use crate::docker;
use crate::net::{Addr, Host, Link, Neighbour, Proto, Route, RouteKind, Skipped};
use ipnet::IpNet;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A bundle file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file exists but could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not the JSON `ip -j` or `docker network inspect` prints.
    #[error("{path} is not the JSON that `{command}` prints")]
    Json {
        /// The file.
        path: PathBuf,
        /// The command that makes it.
        command: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// What a bundle holds, parsed: a host and the hook environment it was captured with.
#[derive(Debug, Default)]
pub struct Bundle {
    /// The host's tables and engines' networks; entries that could not be understood are in
    /// its `skipped`, one line each.
    pub host: Host,
    /// The hook environment.
    pub env: Vec<(String, String)>,
}

impl Bundle {
    /// The planner's facts: this bundle's host with a hook's tunnel and pushes; `skipped` (what
    /// the caller already set aside) comes first, then the bundle's own, then the hook's.
    pub fn into_facts(self, input: crate::hook::HookInput, mut skipped: Vec<Skipped>) -> crate::net::Facts {
        let mut host = self.host;
        skipped.append(&mut host.skipped);
        host.skipped = skipped;
        host.into_facts(input)
    }
}

/// The files of a bundle, in the order they are read.
pub const FILES: [&str; 7] =
    ["route.json", "route6.json", "link.json", "addr.json", "neigh.json", "docker.json", "env"];

/// Reads a bundle directory.
pub fn read(dir: &Path) -> Result<Bundle, BundleError> {
    parse(dir, |name| {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BundleError::Read { path, source }),
        }
    })
}

/// Parses a bundle held in memory: `(file name, contents)` pairs named as in [`FILES`]; a file
/// not listed is missing. The same code as [`read`], without the file system (errors name the
/// bare file); the fuzz targets and the corpus replay test call it.
pub fn from_texts(files: &[(&str, &[u8])]) -> Result<Bundle, BundleError> {
    parse(Path::new(""), |name| Ok(files.iter().find(|(n, _)| *n == name).map(|(_, b)| b.to_vec())))
}

/// Parses the bundle files that `load` returns (`Ok(None)`: missing), each fetched when its turn
/// comes, so the first unreadable or malformed file is the one reported.
fn parse<F>(dir: &Path, mut load: F) -> Result<Bundle, BundleError>
where
    F: FnMut(&'static str) -> Result<Option<Vec<u8>>, BundleError>,
{
    let mut b = Bundle::default();
    for (file, command, v6) in
        [("route.json", "ip -j route show table main", false), ("route6.json", "ip -j -6 route show table main", true)]
    {
        read_json(dir, &mut load, file, command, |text| routes_from(text, file, v6, &mut b))?;
    }
    let links: Vec<RawLink> = json(dir, &mut load, "link.json", "ip -j -d link show")?.unwrap_or_default();
    b.host.links = links.iter().map(link).collect();
    let addrs: Vec<RawAddrs> = json(dir, &mut load, "addr.json", "ip -j addr show")?.unwrap_or_default();
    b.host.addrs = addrs.iter().flat_map(|d| self::addrs(d, &mut b.host.skipped)).collect();
    let neigh: Vec<RawNeigh> = json(dir, &mut load, "neigh.json", "ip -j neigh show")?.unwrap_or_default();
    b.host.neighbours = neigh.iter().filter_map(|n| neighbour(n, &mut b.host.skipped)).collect();
    let networks: Option<Vec<docker::EngineNetwork>> = json(dir, &mut load, "docker.json", "docker network inspect")?;
    b.host.docker = networks.map(|ns| ns.iter().filter_map(|n| docker::from_inspect(n, &mut b.host.skipped)).collect());
    b.env = match load("env")? {
        // `read_to_string` refused what is not UTF-8; so does this.
        Some(bytes) => parse_kv_lines(&String::from_utf8(bytes).map_err(|e| BundleError::Read {
            path: dir.join("env"),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?),
        None => Vec::new(),
    };
    Ok(b)
}

fn json<T, F>(dir: &Path, load: &mut F, name: &'static str, command: &'static str) -> Result<Option<T>, BundleError>
where
    T: serde::de::DeserializeOwned,
    F: FnMut(&'static str) -> Result<Option<Vec<u8>>, BundleError>,
{
    read_json(dir, load, name, command, |text| serde_json::from_slice(text))
}

/// Loads file `name` and parses it with `parse`; `None` when the file is absent, an error
/// naming the file and the command whose output it should be when it is not that JSON.
fn read_json<T, F, P>(
    dir: &Path,
    load: &mut F,
    name: &'static str,
    command: &'static str,
    parse: P,
) -> Result<Option<T>, BundleError>
where
    F: FnMut(&'static str) -> Result<Option<Vec<u8>>, BundleError>,
    P: FnOnce(&[u8]) -> Result<T, serde_json::Error>,
{
    let Some(text) = load(name)? else {
        return Ok(None);
    };
    parse(&text).map(Some).map_err(|source| BundleError::Json { path: dir.join(name), command, source })
}

/// The routes of a `route.json` or `route6.json` text into `b`, each converted as soon as it is
/// parsed: a 100,000-route table (12 MiB of `ip -j` text) never exists as a `Vec<RawRoute>` (a
/// string per field) beside the routes made from it.
fn routes_from(text: &[u8], file: &'static str, v6: bool, b: &mut Bundle) -> Result<(), serde_json::Error> {
    struct Each<'b> {
        file: &'static str,
        v6: bool,
        b: &'b mut Bundle,
    }
    impl<'de> serde::de::Visitor<'de> for Each<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of routes")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while let Some(raw) = seq.next_element::<RawRoute>()? {
                i += 1;
                match route(&raw, self.v6) {
                    Ok(r) => self.b.host.routes.push(r),
                    Err(why) => {
                        let subject = format!("{} entry {i}", self.file);
                        self.b.host.skipped.push(Skipped::new(subject, format!("{why}; entry skipped")))
                    }
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    serde::Deserializer::deserialize_seq(&mut de, Each { file, v6, b })?;
    de.end()
}

/// A route from its JSON form (the files hold table main only: `ip -j route show table main`).
pub fn route(raw: &RawRoute, v6: bool) -> Result<Route, String> {
    let dst = parse_dst(&raw.dst, v6).ok_or_else(|| format!("dst {:?} is not a prefix", raw.dst))?;
    let ip = |s: &Option<String>| -> Result<Option<IpAddr>, String> {
        s.as_deref().map(|g| g.parse().map_err(|_| format!("gateway {g:?} is not an address"))).transpose()
    };
    let mut gateway = ip(&raw.gateway)?;
    let mut dev = raw.dev.clone();
    if !raw.nexthops.is_empty() {
        // A multipath route leaves through one device only if all its next hops share it.
        let devs: Vec<&Option<String>> = raw.nexthops.iter().map(|n| &n.dev).collect();
        dev = if devs.windows(2).all(|w| w[0] == w[1]) { devs[0].clone() } else { None };
        gateway = ip(&raw.nexthops[0].gateway)?;
    }
    let protocol = match raw.protocol.as_deref() {
        None => Proto(3), // iproute2 omits "boot", the default of `ip route add`
        Some(p) => Proto::parse(p).ok_or_else(|| format!("protocol {p:?} is unknown"))?,
    };
    let kind = match raw.kind.as_deref() {
        None | Some("unicast") => RouteKind::Unicast,
        Some(_) => RouteKind::Reject,
    };
    Ok(Route {
        dst,
        dev: if kind == RouteKind::Reject { None } else { dev },
        gateway,
        metric: raw.metric.unwrap_or(0),
        protocol,
        scope: scope(raw.scope.as_deref()).ok_or_else(|| format!("scope {:?} is unknown", raw.scope))?,
        kind,
    })
}

fn parse_dst(dst: &str, v6: bool) -> Option<IpNet> {
    if dst == "default" {
        return Some(if v6 { "::/0".parse().ok()? } else { "0.0.0.0/0".parse().ok()? });
    }
    let net = dst.parse::<IpNet>().ok().or_else(|| dst.parse::<IpAddr>().ok().map(IpNet::from))?;
    (net.addr().is_ipv6() == v6 && net.trunc() == net).then_some(net)
}

fn scope(s: Option<&str>) -> Option<u8> {
    match s {
        None | Some("global") | Some("universe") => Some(0),
        Some("site") => Some(200),
        Some("link") => Some(253),
        Some("host") => Some(254),
        Some("nowhere") => Some(255),
        Some(n) => n.parse().ok(),
    }
}

/// A device from its JSON form.
pub fn link(raw: &RawLink) -> Link {
    let info = raw.linkinfo.as_ref();
    let tap =
        info.and_then(|i| i.info_data.as_ref()).and_then(|d| d.get("type")).and_then(|t| t.as_str()) == Some("tap");
    let up = raw.flags.iter().any(|f| f == "UP");
    Link { index: raw.ifindex, name: raw.ifname.clone(), kind: info.and_then(|i| i.info_kind.clone()), tap, up }
}

fn addrs(raw: &RawAddrs, skipped: &mut Vec<Skipped>) -> Vec<Addr> {
    let mut out = Vec::new();
    for a in &raw.addr_info {
        match a.local.parse() {
            Ok(addr) => out.push(Addr { dev: raw.ifname.clone(), addr, prefix_len: a.prefixlen }),
            Err(_) => skipped.push(Skipped::new(
                format!("addr.json {}", raw.ifname),
                format!("{:?} is not an address; entry skipped", a.local),
            )),
        }
    }
    out
}

fn neighbour(raw: &RawNeigh, skipped: &mut Vec<Skipped>) -> Option<Neighbour> {
    match raw.dst.parse() {
        Ok(addr) => Some(Neighbour { dev: raw.dev.clone(), addr, state: raw.state.clone() }),
        Err(_) => {
            skipped.push(Skipped::new(
                format!("neigh.json {}", raw.dev),
                format!("{:?} is not an address; entry skipped", raw.dst),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests;
