//! Bundles: a directory of `ip -j` and `docker network inspect` dumps plus the hook's
//! environment, so a conflict on any machine can be planned here without root or Docker.
//!
//! Files (all optional; a missing one means "nothing of that kind"): `route.json`
//! (`ip -j route show table main`), `route6.json` (`ip -j -6 route show table main`),
//! `link.json` (`ip -j -d link show`), `addr.json` (`ip -j addr show`), `neigh.json`
//! (`ip -j neigh show`), `docker.json` (`docker network inspect $(docker network ls -q)`),
//! `env` (`KEY=value` lines). The raw types mirror iproute2's JSON, so `snapshot` writes them too.

use crate::config::parse_kv_lines;
use crate::docker;
use crate::net::{Addr, DockerNetwork, Link, Neighbour, Proto, Route, RouteKind, Skipped};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
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

/// What a bundle holds, parsed.
#[derive(Debug, Default)]
pub struct Bundle {
    /// Main-table routes, IPv4 then IPv6.
    pub routes: Vec<Route>,
    /// Devices.
    pub links: Vec<Link>,
    /// Addresses.
    pub addrs: Vec<Addr>,
    /// Neighbour entries.
    pub neighbours: Vec<Neighbour>,
    /// Docker networks; `None` without `docker.json`.
    pub docker: Option<Vec<DockerNetwork>>,
    /// The hook environment.
    pub env: Vec<(String, String)>,
    /// Entries that could not be understood, one line each.
    pub skipped: Vec<Skipped>,
}

impl Bundle {
    /// The planner's facts: this bundle's tables with a hook's tunnel and pushes; `skipped` (what
    /// the caller already set aside) comes first, then the hook's and the bundle's own.
    pub fn into_facts(self, input: crate::hook::HookInput, mut skipped: Vec<Skipped>) -> crate::net::Facts {
        skipped.extend(input.skipped);
        skipped.extend(self.skipped);
        crate::net::Facts::new(
            input.tunnel,
            input.pushes,
            self.routes,
            self.links,
            self.addrs,
            self.neighbours,
            self.docker,
            skipped,
        )
    }
}

/// One route as `ip -j route` prints it.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawRoute {
    /// Route type; absent for unicast.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `default`, a prefix, or a bare address for a host route.
    pub dst: String,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Protocol name or number; absent for `boot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Scope name; absent for `global`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Metric; absent for 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// Multipath next hops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nexthops: Vec<RawNexthop>,
    /// Route flags (`linkdown`, `onlink` …).
    #[serde(default)]
    pub flags: Vec<String>,
}

/// One next hop of a multipath route.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawNexthop {
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
}

/// One device as `ip -j -d link` prints it.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawLink {
    /// Interface index.
    pub ifindex: u32,
    /// Name.
    pub ifname: String,
    /// Kind details (`-d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkinfo: Option<RawLinkInfo>,
}

/// `linkinfo` of a device.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawLinkInfo {
    /// `bridge`, `tun`, `veth` …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_kind: Option<String>,
    /// Kind data; for tun devices `{"type": "tun"|"tap"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_data: Option<serde_json::Value>,
}

/// One device's addresses as `ip -j addr` prints them.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawAddrs {
    /// Device name.
    pub ifname: String,
    /// Its addresses.
    #[serde(default)]
    pub addr_info: Vec<RawAddr>,
}

/// One address.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawAddr {
    /// `inet` or `inet6`.
    pub family: String,
    /// The address.
    pub local: String,
    /// Prefix length.
    pub prefixlen: u8,
}

/// One neighbour entry as `ip -j neigh` prints it.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawNeigh {
    /// Address.
    pub dst: String,
    /// Device.
    pub dev: String,
    /// NUD states.
    #[serde(default)]
    pub state: Vec<String>,
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
        if let Some(text) = load(file)? {
            let json_error = |source| BundleError::Json { path: dir.join(file), command, source };
            routes_from(&text, file, v6, &mut b).map_err(json_error)?;
        }
    }
    let links: Vec<RawLink> = json(dir, &mut load, "link.json", "ip -j -d link show")?.unwrap_or_default();
    b.links = links.iter().map(link).collect();
    let addrs: Vec<RawAddrs> = json(dir, &mut load, "addr.json", "ip -j addr show")?.unwrap_or_default();
    b.addrs = addrs.iter().flat_map(|d| self::addrs(d, &mut b.skipped)).collect();
    let neigh: Vec<RawNeigh> = json(dir, &mut load, "neigh.json", "ip -j neigh show")?.unwrap_or_default();
    b.neighbours = neigh.iter().filter_map(|n| neighbour(n, &mut b.skipped)).collect();
    let networks: Option<Vec<bollard::models::NetworkInspect>> =
        json(dir, &mut load, "docker.json", "docker network inspect")?;
    b.docker = networks.map(|ns| ns.iter().filter_map(|n| docker::from_inspect(n, &mut b.skipped)).collect());
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
    let Some(text) = load(name)? else {
        return Ok(None);
    };
    serde_json::from_slice(&text).map(Some).map_err(|source| BundleError::Json {
        path: dir.join(name),
        command,
        source,
    })
}

/// The routes of a `route.json` or `route6.json` text into `b`, each converted as soon as it is
/// parsed: a 100,000-route table (12 MiB of `ip -j` text) never exists as raw JSON values, which
/// take three times the memory of the routes themselves.
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
                    Ok(Some(r)) => self.b.routes.push(r),
                    Ok(None) => {}
                    Err(why) => {
                        let subject = format!("{} entry {i}", self.file);
                        self.b.skipped.push(Skipped::new(subject, format!("{why}; entry skipped")))
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

/// A route from its JSON form; `Ok(None)` for entries of other tables.
pub fn route(raw: &RawRoute, v6: bool) -> Result<Option<Route>, String> {
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
    Ok(Some(Route {
        dst,
        dev: if kind == RouteKind::Reject { None } else { dev },
        gateway,
        metric: raw.metric.unwrap_or(0),
        protocol,
        scope: scope(raw.scope.as_deref()).ok_or_else(|| format!("scope {:?} is unknown", raw.scope))?,
        kind,
    }))
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
    Link { index: raw.ifindex, name: raw.ifname.clone(), kind: info.and_then(|i| i.info_kind.clone()), tap }
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

/// What `snapshot` writes: the live facts in the bundle format.
pub struct Snapshot<'a> {
    /// Main-table routes.
    pub routes: &'a [Route],
    /// Devices.
    pub links: &'a [Link],
    /// Addresses.
    pub addrs: &'a [Addr],
    /// Neighbour entries.
    pub neighbours: &'a [Neighbour],
    /// Docker's own descriptions, written as `docker network inspect` prints them.
    pub docker: Option<&'a [bollard::models::NetworkInspect]>,
    /// The hook environment.
    pub env: &'a [(String, String)],
}

/// Writes a bundle that [`read`] (and so `plan --from`) reads back to the same facts.
pub fn write(dir: &Path, s: &Snapshot) -> Result<(), BundleError> {
    let io = |path: PathBuf| move |source| BundleError::Write { path, source };
    std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    for (name, bytes) in to_texts(s) {
        std::fs::write(dir.join(name), bytes).map_err(io(dir.join(name)))?;
    }
    Ok(())
}

/// The files [`write`] writes, named as in [`FILES`] (`docker.json` only with Docker's
/// descriptions); [`from_texts`] reads them back to the same facts.
pub fn to_texts(s: &Snapshot) -> Vec<(&'static str, Vec<u8>)> {
    let json = |v: serde_json::Value| serde_json::to_vec_pretty(&v).expect("JSON values serialize");
    let (v4, v6): (Vec<&Route>, Vec<&Route>) = s.routes.iter().partition(|r| r.dst.addr().is_ipv4());
    let neigh: Vec<RawNeigh> = s
        .neighbours
        .iter()
        .map(|n| RawNeigh { dst: n.addr.to_string(), dev: n.dev.clone(), state: n.state.clone() })
        .collect();
    let mut out = vec![
        ("route.json", json(serde_json::json!(v4.iter().map(|r| raw_route(r)).collect::<Vec<_>>()))),
        ("route6.json", json(serde_json::json!(v6.iter().map(|r| raw_route(r)).collect::<Vec<_>>()))),
        ("link.json", json(serde_json::json!(s.links.iter().map(raw_link).collect::<Vec<_>>()))),
        ("addr.json", json(serde_json::json!(raw_addrs(s.addrs)))),
        ("neigh.json", json(serde_json::json!(neigh))),
    ];
    if let Some(d) = s.docker {
        out.push(("docker.json", serde_json::to_vec_pretty(d).expect("Docker's models serialize")));
    }
    let env: String = s.env.iter().map(|(k, v)| env_line(k, v)).collect();
    out.push(("env", env.into_bytes()));
    out
}

/// A `KEY=value` line that [`parse_kv_lines`] reads back as this very pair: bare when it can
/// be, else with the value in double quotes, which the reader strips exactly once (a value with
/// surrounding blanks or its own quotes would otherwise come back trimmed or unquoted).
fn env_line(k: &str, v: &str) -> String {
    let bare = format!("{k}={v}\n");
    if parse_kv_lines(&bare).first().is_some_and(|(pk, pv)| pk == k && pv == v) {
        bare
    } else {
        format!("{k}=\"{v}\"\n")
    }
}

fn raw_route(r: &Route) -> RawRoute {
    let scope = match r.scope {
        0 => None,
        200 => Some("site".to_string()),
        253 => Some("link".to_string()),
        254 => Some("host".to_string()),
        n => Some(n.to_string()),
    };
    RawRoute {
        kind: (r.kind == RouteKind::Reject).then(|| "unreachable".to_string()),
        dst: if r.dst.prefix_len() == 0 { "default".into() } else { r.dst.to_string() },
        gateway: r.gateway.map(|g| g.to_string()),
        dev: r.dev.clone(),
        protocol: (r.protocol.0 != 3).then(|| r.protocol.to_string()),
        scope,
        metric: (r.metric != 0).then_some(r.metric),
        nexthops: Vec::new(),
        flags: Vec::new(),
    }
}

fn raw_link(l: &Link) -> RawLink {
    // A tap device is written even without a kind (a hand-made bundle may have one): [`link`]
    // reads `tap` from `info_data` alone.
    let linkinfo = (l.kind.is_some() || l.tap).then(|| RawLinkInfo {
        info_kind: l.kind.clone(),
        info_data: l.tap.then(|| serde_json::json!({"type": "tap"})),
    });
    RawLink { ifindex: l.index, ifname: l.name.clone(), linkinfo }
}

fn raw_addrs(addrs: &[Addr]) -> Vec<RawAddrs> {
    let mut out: Vec<RawAddrs> = Vec::new();
    for a in addrs {
        let entry = RawAddr {
            family: if a.addr.is_ipv4() { "inet" } else { "inet6" }.into(),
            local: a.addr.to_string(),
            prefixlen: a.prefix_len,
        };
        match out.iter_mut().find(|d| d.ifname == a.dev) {
            Some(d) => d.addr_info.push(entry),
            None => out.push(RawAddrs { ifname: a.dev.clone(), addr_info: vec![entry] }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawRoute {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn routes_as_iproute2_prints_them() {
        let r = route(&raw(r#"{"dst":"172.20.0.0/16","gateway":"10.8.0.1","dev":"tun0","flags":[]}"#), false)
            .unwrap()
            .unwrap();
        assert_eq!(r.to_string(), "172.20.0.0/16 via 10.8.0.1 dev tun0 proto boot metric 0");
        let r = route(&raw(r#"{"dst":"172.20.0.0/16","dev":"br-x","protocol":"kernel","scope":"link","prefsrc":"172.20.0.1","flags":[]}"#), false).unwrap().unwrap();
        assert!(r.is_on_link());
        let r = route(&raw(r#"{"dst":"10.0.1.66","dev":"tun0","protocol":"kernel","scope":"link","flags":[]}"#), false)
            .unwrap()
            .unwrap();
        assert_eq!(r.dst.to_string(), "10.0.1.66/32");
        let r = route(&raw(r#"{"dst":"default","gateway":"fe80::1","dev":"eth0","metric":1024,"flags":[]}"#), true)
            .unwrap()
            .unwrap();
        assert_eq!(r.dst.to_string(), "::/0");
        let r = route(&raw(r#"{"type":"unreachable","dst":"10.0.0.0/8","protocol":"86","flags":[]}"#), false)
            .unwrap()
            .unwrap();
        assert_eq!((r.kind, r.dev, r.protocol), (RouteKind::Reject, None, Proto(86)));
        let r = route(&raw(r#"{"dst":"10.9.0.0/16","nexthops":[{"gateway":"10.0.0.1","dev":"eth0"},{"gateway":"10.1.0.1","dev":"eth1"}],"flags":[]}"#), false).unwrap().unwrap();
        assert_eq!(r.dev, None, "multipath over two devices has no single device");
    }

    #[test]
    fn bad_route_entries_say_what_is_wrong() {
        let cases = [
            (r#"{"dst":"172.20.0.0/33","flags":[]}"#, "dst \"172.20.0.0/33\" is not a prefix"),
            (r#"{"dst":"172.20.0.1/16","flags":[]}"#, "dst \"172.20.0.1/16\" is not a prefix"),
            (r#"{"dst":"fd00::/64","flags":[]}"#, "dst \"fd00::/64\" is not a prefix"),
            (r#"{"dst":"10.0.0.0/8","gateway":"x","flags":[]}"#, "gateway \"x\" is not an address"),
            (r#"{"dst":"10.0.0.0/8","protocol":"martian","flags":[]}"#, "protocol \"martian\" is unknown"),
        ];
        for (json, why) in cases {
            assert_eq!(route(&raw(json), false).unwrap_err(), why);
        }
    }

    #[test]
    fn the_captured_bundles_read_completely() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bundles");
        for name in ["seed-openvpn26", "seed-route-noexec", "shop-ipv6-aggregate"] {
            let b = read(&Path::new(root).join(name)).unwrap();
            assert!(b.skipped.is_empty(), "{name}: {:?}", b.skipped);
            assert!(b.routes.len() >= 15, "{name}");
            let docker = b.docker.unwrap();
            let milvus = docker.iter().find(|n| n.name == "milvus").unwrap();
            assert_eq!(milvus.bridge, "br-2e7df30ca722");
            assert_eq!(milvus.compose_project.as_deref(), Some("milvus"));
            assert_eq!(milvus.containers.len(), 3);
            assert!(b.links.iter().any(|l| l.name == "br-2e7df30ca722" && l.is_bridge()));
            assert!(b.env.iter().any(|(k, v)| k == "dev" && v == "tun0"));
        }
    }

    #[test]
    fn a_written_bundle_reads_back_to_the_same_facts() {
        let src = read(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bundles/shop-ipv6-aggregate")))
            .unwrap();
        let docker: Vec<bollard::models::NetworkInspect> = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/bundles/shop-ipv6-aggregate/docker.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("vpnfix-bundle-rt-{}", std::process::id()));
        let snap = Snapshot {
            routes: &src.routes,
            links: &src.links,
            addrs: &src.addrs,
            neighbours: &src.neighbours,
            docker: Some(&docker),
            env: &src.env,
        };
        write(&dir, &snap).unwrap();
        let back = read(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back.routes, src.routes);
        assert_eq!(back.links, src.links);
        assert_eq!(back.addrs, src.addrs);
        assert_eq!(back.neighbours, src.neighbours);
        assert_eq!(back.docker, src.docker);
        assert_eq!(back.env, src.env);
    }

    #[test]
    fn environment_values_with_blanks_or_quotes_are_written_to_read_back() {
        // Found by the bundle fuzz target (fuzz/artifacts/bundle/crash-env-value-with-spaces-or-quotes).
        let env: Vec<(String, String)> = [("VPNFIX_KEEP", " 172.20.5.0/24"), ("a", "'x'"), ("b", "\"y"), ("c", "z ")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let snap = Snapshot { routes: &[], links: &[], addrs: &[], neighbours: &[], docker: None, env: &env };
        let files = to_texts(&snap);
        let (_, text) = files.iter().find(|(n, _)| *n == "env").unwrap();
        assert_eq!(String::from_utf8_lossy(text), "VPNFIX_KEEP=\" 172.20.5.0/24\"\na=\"'x'\"\nb=\"y\nc=\"z \"\n");
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        assert_eq!(from_texts(&files).unwrap().env, env);
    }

    #[test]
    fn a_missing_directory_is_an_empty_bundle_and_bad_json_names_the_file() {
        let b = read(Path::new("/nonexistent/vpnfix-bundle")).unwrap();
        assert!(b.routes.is_empty() && b.docker.is_none() && b.env.is_empty());
        let dir = std::env::temp_dir().join(format!("vpnfix-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("route.json"), "[{\"dst\": ").unwrap();
        let err = read(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.ends_with("route.json is not the JSON that `ip -j route show table main` prints"), "{err}");
    }
}
