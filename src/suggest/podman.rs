//! Podman's side of the permanent fix: its own default network and address pools
//! (`containers.conf` `[network]` `default_subnet` / `default_subnet_pools`), kept clear of every
//! VPN route, as a block to merge. Pure.

use super::pools::Pool;
use super::{NetworkFix, Owner};
use crate::cidr::Prefix;
use crate::net::Engine;
use ipnet::IpNet;
use std::fmt::Write;

/// Where Podman reads its settings as root.
pub const CONTAINERS_CONF: &str = "/etc/containers/containers.conf";

/// Podman's default network (`podman`, bridge `podman0`): `default_subnet` in containers.conf.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";

/// Podman's built-in pools (containers/common's `default_subnet_pools`): 10.89.0.0/16 through
/// 10.255.255.0/24, cut into /24s, in this order.
pub fn default_pools() -> Vec<Pool> {
    ["10.89.0.0/16", "10.90.0.0/15", "10.92.0.0/14", "10.96.0.0/11", "10.128.0.0/9"]
        .iter()
        .map(|b| Pool { base: b.parse().expect("a valid CIDR"), size: 24 })
        .collect()
}

/// Every block Podman hands out by itself: a proposal there could meet a network Podman makes
/// next.
pub fn reserved() -> Vec<Prefix> {
    let default: IpNet = DEFAULT_SUBNET.parse().expect("a valid CIDR");
    default_pools().iter().map(|p| Prefix::from(p.base)).chain([Prefix::from(default)]).collect()
}

/// The `[network]` block for containers.conf: the pools when they change, the default network's
/// subnet when it moves; `None` when neither.
pub fn conf_block(pools: Option<&[Pool]>, networks: &[NetworkFix]) -> Option<String> {
    let default = networks
        .iter()
        .find(|f| f.owner == Owner::DefaultBridge && f.engine == Some(Engine::Podman) && f.current.addr().is_ipv4())
        .and_then(|f| f.proposed);
    if pools.is_none() && default.is_none() {
        return None;
    }
    let mut out = format!("# {CONTAINERS_CONF} (merge into its [network] table)\n[network]\n");
    if let Some(d) = default {
        let _ = writeln!(out, "default_subnet = \"{d}\"");
    }
    if let Some(pools) = pools {
        out.push_str("default_subnet_pools = [\n");
        for p in pools {
            let _ = writeln!(out, "  {{\"base\" = \"{}\", \"size\" = {}}},", p.base, p.size);
        }
        out.push_str("]\n");
    }
    Some(out)
}

/// The step that makes the block take effect.
pub fn conf_step(networks: &[NetworkFix]) -> String {
    let moved: Vec<String> = networks
        .iter()
        .filter(|f| f.owner == Owner::DefaultBridge && f.engine == Some(Engine::Podman))
        .filter_map(|f| f.proposed.map(|p| format!(" (the default network on {} moves to {p} once no container uses it: stop them, then start them again)", f.bridge)))
        .collect();
    format!(
        "merge the [network] block above into {CONTAINERS_CONF}; networks Podman creates afterwards (`podman network create` without --subnet, compose) take their subnets from these pools{}",
        moved.concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podmans_own_ranges_are_reserved_and_the_block_is_toml() {
        let r = reserved();
        let inside = |a: &str| r.iter().any(|p| p.contains(Prefix::from(a.parse::<IpNet>().unwrap())));
        assert!(inside("10.88.0.0/24") && inside("10.89.3.0/24") && inside("10.200.0.0/24"));
        assert!(!inside("10.0.0.0/16") && !inside("172.18.0.0/16"));
        let pools = [Pool { base: "10.90.0.0/15".parse().unwrap(), size: 24 }];
        let text = conf_block(Some(&pools), &[]).unwrap();
        assert!(
            text.contains("[network]\ndefault_subnet_pools = [\n  {\"base\" = \"10.90.0.0/15\", \"size\" = 24},\n]"),
            "{text}"
        );
        assert_eq!(conf_block(None, &[]), None);
    }
}
