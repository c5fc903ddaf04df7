//! The raw types of a bundle's files: iproute2's `ip -j` JSON as it prints it, read by
//! [`super::read`] and written by [`super::write`]. Only the fields vpnfix uses; the rest is
//! ignored on reading and absent on writing.

use serde::{Deserialize, Serialize};

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
    /// `IFF_*` flags by name (`UP`, `LOWER_UP` …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
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
