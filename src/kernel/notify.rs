//! The kernel's notifications, for the watcher: link, neighbour and route changes as they
//! happen (rtnetlink multicast groups), sorted into what can change a plan and what cannot.

use super::parse::{self, link, neighbour, table_of, RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE};
use super::wire::{self, WireError};
use super::KernelError;
use ipnet::IpNet;
use rtnetlink::packet_core::Parseable;
use rtnetlink::packet_route::neighbour::NeighbourMessage;
use rtnetlink::packet_route::route::RouteMessage;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// What the kernel said changed, for the watcher.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Devices deleted (their names).
    pub links_gone: Vec<String>,
    /// Whether anything that can change a plan was said (or notifications were lost: read
    /// everything again). vpnfix's own routes are not in it: see `own_gone`.
    pub any: bool,
    /// Routes of vpnfix's protocol deleted (their destinations): the watcher's own deletions,
    /// or someone's `ip route del` of a route it still wants: only the record tells.
    pub own_gone: Vec<IpNet>,
}

/// The kernel's link, neighbour and route notifications.
pub struct Notifications {
    wire: wire::Events,
    /// vpnfix's route protocol number: its own adds are not news.
    proto: u8,
    /// The neighbours seen (device index, address): a neighbour's state changes (`REACHABLE`
    /// to `STALE` and back, on every timer) are not news, a new address on a bridge is.
    neighbours: HashSet<(u32, IpAddr)>,
    /// The links seen and whether each was up: a link's other changes (carrier, statistics,
    /// a port joining a bridge) are not news.
    links: HashMap<u32, bool>,
}

impl Notifications {
    /// Subscribes in the calling thread's network namespace; routes of protocol `proto` are
    /// vpnfix's.
    pub fn open(proto: u8) -> Result<Notifications, KernelError> {
        let wire = wire::Events::open().map_err(KernelError::Connect)?;
        Ok(Notifications { wire, proto, neighbours: Default::default(), links: HashMap::new() })
    }

    /// Waits for the next notifications, at most `limit` (`None`: until some come).
    pub fn wait(&mut self, limit: Option<std::time::Duration>) -> Result<Changed, KernelError> {
        let msgs = self.wire.next(limit).map_err(|e| KernelError::Socket(WireError::Io(e)))?;
        let Some(msgs) = msgs else { return Ok(Changed { any: true, ..Changed::default() }) };
        let mut c = Changed::default();
        for m in &msgs {
            // Family AF_UNSPEC only: a bridge port's removal (AF_BRIDGE) deletes no device.
            if m.kind == RTM_DELLINK && m.body.first() == Some(&0) {
                c.links_gone.extend(link(&m.body).map(|l| l.name));
            }
            c.any |= self.news(m, &mut c.own_gone);
        }
        Ok(c)
    }

    /// Whether a notification can change a plan. A route's, but vpnfix's own (a deleted one goes
    /// to `own_gone`), those of table local (the host's own addresses) and link-local or
    /// multicast ones. A link's when it is new, gone or goes up or down (the kernel drops a
    /// device's IPv4 routes with it and says nothing of them), but a veth's (a container's
    /// plumbing: its engine's events and its neighbour entry say what matters). A neighbour's
    /// when it is new or gone, but IPv6 link-local and multicast ones.
    fn news(&mut self, m: &wire::Raw, own_gone: &mut Vec<IpNet>) -> bool {
        match m.kind {
            RTM_NEWROUTE | RTM_DELROUTE => {
                let Ok(r) = RouteMessage::parse(&m.body) else { return true };
                let dst = parse::prefix(&r);
                if u8::from(r.header.protocol) == self.proto {
                    if m.kind == RTM_DELROUTE {
                        own_gone.extend(dst);
                    }
                    return false;
                }
                let scoped = |n: &IpNet| match n.addr() {
                    IpAddr::V6(a) => a.is_unicast_link_local() || a.is_multicast(),
                    IpAddr::V4(a) => a.is_multicast() || a.is_link_local(),
                };
                table_of(&r) != u32::from(RT_TABLE_LOCAL) && !dst.as_ref().is_some_and(scoped)
            }
            // A bridge's own notes on its ports (family AF_BRIDGE: STP state, learning) are not
            // the link's; only AF_UNSPEC ones are.
            RTM_NEWLINK | RTM_DELLINK if m.body.first().is_some_and(|f| *f != 0) => false,
            RTM_NEWLINK | RTM_DELLINK => {
                let Some(l) = link(&m.body) else { return true };
                let was = match m.kind {
                    RTM_NEWLINK => self.links.insert(l.index, l.up),
                    _ => self.links.remove(&l.index),
                };
                l.kind.as_deref() != Some("veth") && (m.kind == RTM_DELLINK || was != Some(l.up))
            }
            RTM_NEWNEIGH | RTM_DELNEIGH => {
                let Ok(n) = NeighbourMessage::parse(&m.body) else { return true };
                let Some(at) = neighbour(&n, &HashMap::from([(n.header.ifindex, String::new())])) else {
                    return false;
                };
                // IPv6 link-local neighbours (every container's router solicitation makes one)
                // and multicast ones are in no one's subnet.
                if matches!(at.addr, IpAddr::V6(a) if a.is_unicast_link_local() || a.is_multicast()) {
                    return false;
                }
                let key = (n.header.ifindex, at.addr);
                match m.kind {
                    RTM_NEWNEIGH => self.neighbours.insert(key),
                    _ => self.neighbours.remove(&key),
                }
            }
            _ => true,
        }
    }
}

/// `RTM_DELLINK`, `RTM_DELROUTE`, `RTM_DELNEIGH` (`rtnetlink.h`).
const RTM_DELLINK: u16 = 17;
const RTM_DELROUTE: u16 = 25;
const RTM_DELNEIGH: u16 = 29;
/// The local table's number (`RT_TABLE_LOCAL`).
const RT_TABLE_LOCAL: u8 = 255;
