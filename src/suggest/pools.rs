//! Docker's address pools (`default-address-pools` in daemon.json): Docker's defaults, the
//! configured ones, trimmed clear of every VPN push and route, topped up when trimming cost
//! room, and merged into the existing daemon.json with every other key kept. Pure.

use super::free::Taken;
use crate::cidr::Prefix;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::fmt;

/// The daemon.json key of the pools.
pub const POOLS_KEY: &str = "default-address-pools";

/// One entry of `default-address-pools`: Docker cuts `base` into networks of length `size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// The block the networks come from.
    pub base: IpNet,
    /// The prefix length of each network.
    pub size: u8,
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in /{}s", self.base, self.size)
    }
}

/// Docker's built-in pools (moby's `ipamutils`): 172.17.0.0/16 … 172.31.0.0/16 as /16s, then
/// 192.168.0.0/16 as /20s.
pub fn docker_defaults() -> Vec<Pool> {
    let mut pools: Vec<Pool> =
        (17..=31).map(|b| Pool { base: format!("172.{b}.0.0/16").parse().expect("a valid CIDR"), size: 16 }).collect();
    pools.push(Pool { base: "192.168.0.0/16".parse().expect("a valid CIDR"), size: 20 });
    pools
}

/// The pools an existing daemon.json configures; `None` when it configures none (Docker then
/// uses its defaults). Malformed entries are left out, with a note.
pub fn configured(daemon: Option<&Value>, notes: &mut Vec<String>) -> Option<Vec<Pool>> {
    let list = daemon?.get(POOLS_KEY)?;
    let Some(entries) = list.as_array() else {
        notes.push(format!("daemon.json: {POOLS_KEY} is not a list ({list}); replaced"));
        return None;
    };
    let mut pools = Vec::new();
    for e in entries {
        match parse_pool(e) {
            Some(p) => pools.push(p),
            None => notes.push(format!("daemon.json: {POOLS_KEY} entry {e} is not {{\"base\": CIDR, \"size\": N}}; ignored (Docker will refuse it too)")),
        }
    }
    (!pools.is_empty()).then_some(pools)
}

fn parse_pool(e: &Value) -> Option<Pool> {
    let base: IpNet = e.get("base")?.as_str()?.parse().ok()?;
    let size = u8::try_from(e.get("size")?.as_u64()?).ok()?;
    (size >= base.prefix_len() && size <= base.max_prefix_len()).then_some(Pool { base: base.trunc(), size })
}

/// The pools proposed, and whether they differ from what Docker uses now.
pub struct PoolPlan {
    /// The pools in effect once the proposal is applied.
    pub pools: Vec<Pool>,
    /// Whether they differ from the configured pools (or Docker's defaults).
    pub changed: bool,
}

/// Trims the current pools (`configured`, else Docker's defaults) to what `trim` leaves free;
/// adds one pool inside each IPv4 `prefer` range that has none (first), and one more (last)
/// when trimming cost IPv4 room. New pools are /16s (or the range) of /24 networks, fully free
/// in `fresh` and clear of the kept pools. `search` lists the ranges to try for a /16.
pub fn propose(
    configured: Option<Vec<Pool>>,
    trim: &Taken,
    fresh: &Taken,
    prefer: &[Prefix],
    search: &[Prefix],
) -> PoolPlan {
    let before = configured.unwrap_or_else(docker_defaults);
    let mut kept: Vec<Pool> = Vec::new();
    for p in &before {
        let base = Prefix::from(p.base);
        kept.extend(trim.free_blocks(base, p.size).into_iter().map(|b| Pool { base: b.to_net(), size: p.size }));
    }
    let mut fresh = fresh.clone();
    kept.iter().for_each(|p| fresh.add(Prefix::from(p.base)));
    let mut front = Vec::new();
    for r in prefer.iter().filter(|r| !r.v6) {
        if kept.iter().any(|p| r.contains(Prefix::from(p.base))) {
            continue;
        }
        if let Some(p) = new_pool(&mut fresh, &[*r], r.len.max(16)) {
            front.push(p);
        }
    }
    let mut pools: Vec<Pool> = front.into_iter().chain(kept).collect();
    if capacity_v4(&pools) < capacity_v4(&before) {
        pools.extend(new_pool(&mut fresh, search, 16));
    }
    let pools = normalize(&pools);
    PoolPlan { changed: pools != normalize(&before), pools }
}

/// The lowest free block of length `len` in the first range that has one, as a pool of /24s.
fn new_pool(fresh: &mut Taken, ranges: &[Prefix], len: u8) -> Option<Pool> {
    let base = ranges.iter().filter(|r| r.len <= len).find_map(|r| fresh.lowest_free(*r, len))?;
    fresh.add(base);
    Some(Pool { base: base.to_net(), size: len.max(24) })
}

/// How many IPv4 networks the pools hold (saturating).
fn capacity_v4(pools: &[Pool]) -> u128 {
    let each = |p: &Pool| 1u128 << u32::from(p.size - p.base.prefix_len()).min(100);
    pools.iter().filter(|p| p.base.addr().is_ipv4()).map(each).fold(0, u128::saturating_add)
}

/// Merges runs of consecutive entries of the same size whose bases form larger CIDR blocks in
/// ascending order: Docker hands out networks in the same order either way, the list is shorter.
pub fn normalize(pools: &[Pool]) -> Vec<Pool> {
    let mut out: Vec<Pool> = Vec::new();
    for p in pools {
        out.push(*p);
        // Join the last two while they are sibling halves of the same size.
        while out.len() >= 2 {
            let (a, b) = (out[out.len() - 2], out[out.len() - 1]);
            let (pa, pb) = (Prefix::from(a.base), Prefix::from(b.base));
            let parent = (a.size == b.size && pa.len == pb.len && pa.len > 0)
                .then(|| Prefix::of(pa.v6, pa.addr, pa.len - 1))
                .filter(|parent| parent.addr == pa.addr && parent.halves().map(|(_, hi)| hi) == Some(pb));
            let Some(parent) = parent else { break };
            out.truncate(out.len() - 2);
            out.push(Pool { base: parent.to_net(), size: a.size });
        }
    }
    out
}

/// Settings of Docker's default bridge (docker0) to change, from its proposed subnets.
#[derive(Debug, Default)]
pub struct DefaultBridge {
    /// `bip`: the bridge's address and prefix (`172.18.0.1/16`).
    pub bip: Option<String>,
    /// `fixed-cidr-v6`.
    pub fixed_cidr_v6: Option<String>,
}

/// The existing daemon.json with the pools (when `pools` is `Some`) and docker0's settings set,
/// every other key kept.
pub fn merge(
    existing: Option<&Value>,
    pools: Option<&[Pool]>,
    docker0: &DefaultBridge,
    notes: &mut Vec<String>,
) -> Value {
    let mut obj: Map<String, Value> = match existing {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            notes.push(format!("the existing daemon.json is not a JSON object ({other}); proposing a new one"));
            Map::new()
        }
    };
    if let Some(pools) = pools {
        let list: Vec<Value> = pools.iter().map(|p| json!({"base": p.base.to_string(), "size": p.size})).collect();
        obj.insert(POOLS_KEY.into(), Value::Array(list));
    }
    for (key, value) in [("bip", &docker0.bip), ("fixed-cidr-v6", &docker0.fixed_cidr_v6)] {
        let Some(v) = value else { continue };
        if let Some(old) = obj.get(key).filter(|old| old.as_str() != Some(v)) {
            notes.push(format!("daemon.json: {key} {old} replaced by \"{v}\""));
        }
        obj.insert(key.into(), Value::String(v.clone()));
    }
    Value::Object(obj)
}

/// daemon.json as text: pretty JSON, except that lists of flat objects (the pools) keep one
/// object a line, so a list of pools reads as a table.
pub fn daemon_json_text(v: &Value) -> String {
    let Value::Object(obj) = v else {
        return serde_json::to_string_pretty(v).expect("JSON values serialize") + "\n";
    };
    let entries: Vec<String> =
        obj.iter().map(|(k, v)| format!("  {}: {}", Value::from(k.as_str()), value_text(v))).collect();
    if entries.is_empty() {
        return "{}\n".into();
    }
    format!("{{\n{}\n}}\n", entries.join(",\n"))
}

fn value_text(v: &Value) -> String {
    let flat = |o: &Value| o.as_object().is_some_and(|m| m.values().all(|x| !x.is_object() && !x.is_array()));
    match v {
        Value::Array(items) if !items.is_empty() && items.iter().all(flat) => {
            let rows: Vec<String> = items.iter().map(|o| format!("    {}", flat_object(o))).collect();
            format!("[\n{}\n  ]", rows.join(",\n"))
        }
        _ => serde_json::to_string_pretty(v).expect("JSON values serialize").replace('\n', "\n  "),
    }
}

/// `{"base": "10.0.0.0/16", "size": 24}`.
fn flat_object(o: &Value) -> String {
    let fields: Vec<String> =
        o.as_object().into_iter().flatten().map(|(k, v)| format!("{}: {v}", Value::from(k.as_str()))).collect();
    format!("{{{}}}", fields.join(", "))
}
