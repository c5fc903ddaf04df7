//! Writing a bundle: `vpnfix snapshot` turns the live facts back into the files [`super::read`]
//! reads, so a bundle read back plans exactly as the host it came from.

use super::raw::{RawAddr, RawAddrs, RawLink, RawLinkInfo, RawNeigh, RawRoute};
use super::BundleError;
use crate::config::parse_kv_lines;
use crate::net::{Addr, Link, Neighbour, Route, RouteKind};
use std::path::{Path, PathBuf};

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
    /// The engines' own descriptions, written as `docker network inspect` prints them (with
    /// `"Engine": "podman"` on Podman's).
    pub docker: Option<&'a [crate::docker::EngineNetwork]>,
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
    let flags = if l.up { vec!["UP".to_string()] } else { Vec::new() };
    RawLink { ifindex: l.index, ifname: l.name.clone(), flags, linkinfo }
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
