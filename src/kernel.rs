//! Kernel adapter: rtnetlink dumps into the planner's facts, and exact route changes.
//!
//! It translates and decides nothing. Dumps become [`Route`], [`Link`], [`Addr`] and [`Neighbour`]
//! values with the meaning `ip -j` gives them (so a snapshot bundle and a live host read alike);
//! [`Kernel::add`] and [`Kernel::delete`] change exactly one route of vpnfix's own and report
//! whether anything changed. Netlink sockets belong to the network namespace of the thread that
//! opens them, and vpnfix runs without `PATH`, so nothing here shells out.

use crate::net::{Addr, Link, Neighbour, Route};
use ipnet::IpNet;
use nix::errno::Errno;
use rtnetlink::packet_core::{Parseable, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourMessage;
use rtnetlink::packet_route::route::{RouteAttribute, RouteFlags, RouteMessage, RouteScope, RouteType};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

mod error;
mod parse;
mod wire;

use error::has_errno;
pub use error::{errno, KernelError};

use parse::{
    addr, family, ifindex, link, message, neighbour, next_hop, oifs, route, route_get, table_of, RTM_NEWADDR,
    RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE,
};

pub use crate::net::{RouteSpec, MAIN_TABLE};

/// `IP6_RT_PRIO_USER`: the metric the kernel gives an IPv6 route added without one (IPv4: 0).
const IPV6_USER_METRIC: u32 = 1024;

/// What [`Kernel::add`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// The route is new.
    Added,
    /// An identical route of ours (same dst, dev, gateway, table, protocol) was already there.
    Unchanged,
}

/// What [`Kernel::delete`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The route is gone now.
    Deleted,
    /// There was no such route (or its device, and so the route, had already gone).
    Unchanged,
}

/// The kernel's answer to "where does a packet to this address go?" (`ip route get fibmatch`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteGet {
    /// The route that matched.
    pub dst: IpNet,
    /// The device the packet leaves through.
    pub dev: Option<String>,
    /// The next hop, if any.
    pub gateway: Option<IpAddr>,
    /// The table the route is in.
    pub table: u32,
    /// The matched route's protocol.
    pub protocol: u8,
    /// The matched route's metric.
    pub metric: u32,
    /// The address is the host's own or a broadcast (a `local`/`broadcast` route of table
    /// local, which the kernel consults before main): no main-table route changes its answer.
    pub host_owned: bool,
}

/// The messages of one type in a dump, parsed; one that does not parse is left out, as
/// netlink-proto's codec leaves it out of rtnetlink's dumps.
fn parse_all<M: Parseable<[u8]>>(raws: Vec<wire::Raw>, kind: u16) -> Vec<M> {
    raws.iter().filter(|r| r.kind == kind).filter_map(|r| M::parse(&r.body).ok()).collect()
}

/// An rtnetlink connection in the namespace of the thread that made it.
///
/// It remembers device names by index (and back) from its link dumps and lookups, so that the
/// routes, addresses and neighbours it reads and the routes it changes name their devices
/// without a link dump each: an index it has not seen refreshes the whole list, and a cached
/// index the kernel no longer knows (ENODEV, ESRCH) is looked up again before the answer counts.
/// A device keeps its index for its lifetime and can only be renamed while down, when the
/// kernel has flushed its routes.
pub struct Kernel {
    wire: wire::Wire,
    names: Mutex<Names>,
}

/// Device names by index and indexes by name.
#[derive(Default)]
struct Names {
    by_index: HashMap<u32, String>,
    by_name: HashMap<String, u32>,
}

impl Names {
    fn learn(&mut self, index: u32, name: &str) {
        self.by_index.insert(index, name.to_string());
        self.by_name.insert(name.to_string(), index);
    }
}

/// How many requests may wait for their answers at once on one [`Kernel`]. Each unread answer
/// sits in the socket's receive buffer (`net.core.rmem_default`, 208 KiB by default), and the
/// kernel drops one that does not fit (`netlink_overrun`: ENOBUFS, the request never answered).
/// A route lookup's answer is built in an `NLMSG_GOODSIZE` buffer (about 4.3 KiB with its skb,
/// `inet_rtm_getroute`), an ack in well under 1 KiB: 32 lookups fill about two thirds.
pub const IN_FLIGHT: usize = 32;

impl Kernel {
    /// Opens a netlink socket; like every adapter call, it must run inside a tokio runtime.
    pub fn connect() -> Result<Kernel, KernelError> {
        // The socket needs no runtime of its own, but every caller awaits it on one.
        tokio::runtime::Handle::try_current().map_err(KernelError::NoRuntime)?;
        let wire = wire::Wire::connect().map_err(KernelError::Connect)?;
        Ok(Kernel { wire, names: Mutex::new(Names::default()) })
    }

    /// The main table, IPv4 then IPv6, every protocol, as `ip route show table main` lists it.
    pub async fn routes(&self) -> Result<Vec<Route>, KernelError> {
        // One dump of every family (`rtnl_dump_all` walks them in order: IPv4, IPv6, then the
        // multicast and MPLS tables, which the family filter drops).
        let mut out = self.table(AddressFamily::Unspec, MAIN_TABLE).await?;
        out.sort_by_key(|r| r.dst.addr().is_ipv6()); // stable: IPv4 first, each in kernel order
        Ok(out)
    }

    /// Every device, with its link kind and, for tun devices, whether it is a tap.
    pub async fn links(&self) -> Result<Vec<Link>, KernelError> {
        self.link_dump().await
    }

    /// Every address on every device, IPv4 and IPv6.
    pub async fn addrs(&self) -> Result<Vec<Addr>, KernelError> {
        let body = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        let msgs: Vec<AddressMessage> = parse_all(self.wire.dump(body).await.map_err(dump("addresses"))?, RTM_NEWADDR);
        self.know(msgs.iter().map(|m| m.header.index)).await?;
        let names = self.names();
        Ok(msgs.iter().filter_map(|m| addr(m, &names.by_index)).collect())
    }

    /// The ARP and NDP tables (every state, NOARP included; the planner chooses).
    pub async fn neighbours(&self) -> Result<Vec<Neighbour>, KernelError> {
        let body = RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default());
        let msgs: Vec<NeighbourMessage> =
            parse_all(self.wire.dump(body).await.map_err(dump("neighbours"))?, RTM_NEWNEIGH);
        self.know(msgs.iter().map(|m| m.header.ifindex)).await?;
        let names = self.names();
        Ok(msgs.iter().filter_map(|m| neighbour(m, &names.by_index)).collect())
    }

    /// Adds `r` create-exclusive (`NLM_F_CREATE|NLM_F_EXCL`, never `NLM_F_REPLACE`).
    ///
    /// Requests of several calls awaited together (`join_all`, `buffered`) are in flight at
    /// once; keep at most [`IN_FLIGHT`] of them.
    pub async fn add(&self, r: &RouteSpec) -> Result<Added, KernelError> {
        let no_device = || KernelError::NoDevice(r.dev.clone());
        let (index, cached) = self.index(&r.dev).await?.ok_or_else(no_device)?;
        let mut result = self.add_at(r, index).await?;
        if cached && matches!(&result, Err(e) if has_errno(e, &[Errno::ENODEV])) {
            // The cached index is gone: the device may have come back under a new one.
            result = match self.refresh_index(&r.dev, index).await? {
                Some(fresh) => self.add_at(r, fresh).await?,
                None => return Err(no_device()),
            };
        }
        match result {
            Ok(()) => Ok(Added::Added),
            Err(e) if has_errno(&e, &[Errno::EEXIST]) => self.settle_exists(r, e).await,
            // The device went away between the lookup and the add.
            Err(e) if has_errno(&e, &[Errno::ENODEV]) => Err(no_device()),
            Err(e) => Err(KernelError::Add(r.clone(), Box::new(e))),
        }
    }

    /// The kernel's answer to adding `r` through device `index` (the outer error: `r` is invalid).
    async fn add_at(&self, r: &RouteSpec, index: u32) -> Result<Result<(), rtnetlink::Error>, KernelError> {
        let body = RouteNetlinkMessage::NewRoute(message(r, index)?);
        Ok(self.wire.ack(body, NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE).await)
    }

    /// EEXIST under `NLM_F_EXCL` says a route with the same dst holds the place: in IPv4 one with
    /// the same dst, tos and priority (`fib_table_insert`), in IPv6 one with the same dst and metric
    /// whatever its device (`fib6_add_rt2node`). It may be ours (done already) or anyone's.
    async fn settle_exists(&self, r: &RouteSpec, e: rtnetlink::Error) -> Result<Added, KernelError> {
        let mut same = self.table(family(r.dst.addr()), r.table).await?;
        same.retain(|x| x.dst == r.dst);
        if r.in_table(&same) {
            return Ok(Added::Unchanged);
        }
        let default_metric = if r.dst.addr().is_ipv6() { IPV6_USER_METRIC } else { 0 };
        match same.iter().find(|x| x.metric == default_metric).or(same.first()) {
            Some(x) => Err(KernelError::Foreign { route: r.clone(), existing: x.to_string() }),
            // Gone again since: report the kernel's answer rather than guess.
            None => Err(KernelError::Add(r.clone(), Box::new(e))),
        }
    }

    /// Deletes exactly `r`. The kernel deletes only a route whose protocol matches when
    /// `RTM_DELROUTE` carries one (`fib_table_delete`, `ip6_route_del`), and matches oif, table and
    /// gateway too, so a foreign route is never hit. Calls awaited together are in flight at once,
    /// as for [`Kernel::add`].
    pub async fn delete(&self, r: &RouteSpec) -> Result<Deleted, KernelError> {
        if r.protocol == 0 {
            let why = "protocol 0 would let the kernel delete a route of any protocol";
            return Err(KernelError::Invalid(r.clone(), why.to_string()));
        }
        // A device that is gone took its routes with it (fib_disable_ip / rt6_disable_ip).
        let Some((index, cached)) = self.index(&r.dev).await? else {
            return Ok(Deleted::Unchanged);
        };
        let mut result = self.delete_at(r, index).await?;
        if cached && result == Deleted::Unchanged {
            // Not found through a remembered index: make sure the device did not come back anew.
            if let Some(fresh) = self.refresh_index(&r.dev, index).await?.filter(|i| *i != index) {
                result = self.delete_at(r, fresh).await?;
            }
        }
        Ok(result)
    }

    async fn delete_at(&self, r: &RouteSpec, index: u32) -> Result<Deleted, KernelError> {
        let mut msg = message(r, index)?;
        // RT_SCOPE_NOWHERE matches any scope in fib_table_delete, as `ip route del` sends it.
        msg.header.scope = RouteScope::NoWhere;
        match self.wire.ack(RouteNetlinkMessage::DelRoute(msg), NLM_F_REQUEST | NLM_F_ACK).await {
            Ok(()) => Ok(Deleted::Deleted),
            Err(e) if has_errno(&e, &[Errno::ESRCH, Errno::ENODEV]) => Ok(Deleted::Unchanged),
            Err(e) => Err(KernelError::Delete(r.clone(), Box::new(e))),
        }
    }

    /// The route the kernel picks for `addr` (`RTM_GETROUTE` with `RTM_F_FIB_MATCH`, which names
    /// the matched route with its protocol; a plain lookup reports IPv4 protocol as unspec). For a
    /// multipath match over several devices the plain lookup tells which next hop is taken. Calls
    /// awaited together are in flight at once, as for [`Kernel::add`].
    pub async fn route_get(&self, addr: IpAddr) -> Result<RouteGet, KernelError> {
        let failed = |e| KernelError::RouteGet(addr, Box::new(e));
        let fib = self.lookup(addr, true).await.map_err(failed)?;
        self.know(oifs(&fib)).await?;
        let mut answer =
            route_get(&fib, &self.names().by_index).ok_or_else(|| failed(rtnetlink::Error::RequestFailed))?;
        if answer.dev.is_none() && fib.header.kind == RouteType::Unicast {
            let taken = self.lookup(addr, false).await.map_err(failed)?;
            self.know(oifs(&taken)).await?;
            (answer.dev, answer.gateway) = next_hop(&taken.attributes, &self.names().by_index);
        }
        Ok(answer)
    }

    async fn lookup(&self, addr: IpAddr, fib_match: bool) -> Result<RouteMessage, rtnetlink::Error> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(addr);
        msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        msg.header.flags.set(RouteFlags::FibMatch, fib_match);
        msg.attributes.push(RouteAttribute::Destination(addr.into()));
        let answer = self.wire.one(RouteNetlinkMessage::GetRoute(msg)).await?;
        if answer.kind != RTM_NEWROUTE {
            return Err(rtnetlink::Error::RequestFailed);
        }
        RouteMessage::parse(&answer.body).map_err(|e| rtnetlink::Error::InvalidNla(e.to_string()))
    }

    /// The IPv4 and IPv6 routes of one table, of one family or (`Unspec`) both. A dump without
    /// strict checking returns every table (IPv6 includes table local: ff00::/8, the host's own
    /// addresses), so the table is filtered here.
    async fn table(&self, family: AddressFamily, table: u32) -> Result<Vec<Route>, KernelError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        let msgs = self.wire.dump(RouteNetlinkMessage::GetRoute(msg)).await.map_err(dump("routes"))?;
        let ip = |m: &RouteMessage| matches!(m.header.address_family, AddressFamily::Inet | AddressFamily::Inet6);
        let mut ours: Vec<RouteMessage> = parse_all(msgs, RTM_NEWROUTE);
        ours.retain(|m| ip(m) && table_of(m) == table);
        self.know(ours.iter().flat_map(oifs)).await?;
        let names = self.names();
        Ok(ours.iter().filter_map(|m| route(m, &names.by_index)).collect())
    }

    /// Every device, remembered by index and name. Statistics are left out (`RTEXT_FILTER_SKIP_STATS`,
    /// ignored by kernels before 4.x): nothing here reads them and they are most of each message.
    async fn link_dump(&self) -> Result<Vec<Link>, KernelError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let msgs = self.wire.dump(RouteNetlinkMessage::GetLink(msg)).await.map_err(dump("links"))?;
        let links: Vec<Link> = msgs.iter().filter(|m| m.kind == RTM_NEWLINK).filter_map(|m| link(&m.body)).collect();
        let mut names = self.names();
        *names = Names::default();
        for l in &links {
            names.learn(l.index, &l.name);
        }
        Ok(links)
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Names> {
        // A panic elsewhere while the lock was held leaves a map that is still consistent.
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure every index is named, with one link dump if any is new (0 means none).
    async fn know(&self, mut indexes: impl Iterator<Item = u32>) -> Result<(), KernelError> {
        let unknown = {
            let names = self.names();
            indexes.any(|i| i != 0 && !names.by_index.contains_key(&i))
        };
        if unknown {
            self.link_dump().await?;
        }
        Ok(())
    }

    /// The ifindex of a device and whether it was remembered; `None` when it does not exist (the
    /// kernel answers ENODEV).
    async fn index(&self, dev: &str) -> Result<Option<(u32, bool)>, KernelError> {
        if let Some(i) = self.names().by_name.get(dev) {
            return Ok(Some((*i, true)));
        }
        Ok(self.ask_index(dev).await?.map(|i| (i, false)))
    }

    /// Forgets a remembered index of `dev` and asks the kernel again.
    async fn refresh_index(&self, dev: &str, stale: u32) -> Result<Option<u32>, KernelError> {
        {
            let mut names = self.names();
            names.by_name.remove(dev);
            names.by_index.remove(&stale);
        }
        self.ask_index(dev).await
    }

    async fn ask_index(&self, dev: &str) -> Result<Option<u32>, KernelError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        msg.attributes.push(LinkAttribute::IfName(dev.to_string()));
        match self.wire.one(RouteNetlinkMessage::GetLink(msg)).await {
            Ok(answer) if answer.kind == RTM_NEWLINK && answer.body.len() >= 8 => {
                let index = ifindex(&answer.body);
                self.names().learn(index, dev);
                Ok(Some(index))
            }
            Ok(_) => Err(KernelError::Device(dev.to_string(), Box::new(rtnetlink::Error::RequestFailed))),
            Err(e) if has_errno(&e, &[Errno::ENODEV]) => Ok(None),
            Err(e) => Err(KernelError::Device(dev.to_string(), Box::new(e))),
        }
    }
}

fn dump(what: &'static str) -> impl Fn(rtnetlink::Error) -> KernelError {
    move |e| KernelError::Dump(what, Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::parse::nud_names;
    use super::*;

    fn spec(dst: &str, gateway: Option<&str>, table: u32, protocol: u8) -> RouteSpec {
        let gateway = gateway.map(|g| g.parse().unwrap());
        RouteSpec { dst: dst.parse().unwrap(), dev: "tun0".into(), gateway, table, protocol }
    }

    #[test]
    fn route_specs_display_like_ip_route() {
        assert_eq!(spec("172.20.1.0/24", None, MAIN_TABLE, 86).to_string(), "172.20.1.0/24 dev tun0 proto 86");
        let r = spec("172.20.1.0/24", Some("10.8.0.1"), 1000, 4);
        assert_eq!(r.to_string(), "172.20.1.0/24 via 10.8.0.1 dev tun0 table 1000 proto static");
    }

    #[test]
    fn nud_states_are_named_as_iproute2_names_them() {
        assert_eq!(nud_names(0), ["NONE"]);
        assert_eq!(nud_names(0x02), ["REACHABLE"]);
        assert_eq!(nud_names(0x80), ["PERMANENT"]);
        assert_eq!(nud_names(0x24), ["STALE", "FAILED"]);
    }

    #[test]
    fn messages_refuse_what_the_kernel_would_misread() {
        let invalid = |r: RouteSpec| matches!(message(&r, 3), Err(KernelError::Invalid(..)));
        assert!(invalid(spec("172.20.1.5/24", None, MAIN_TABLE, 86)), "host bits");
        assert!(invalid(spec("fd00::/64", Some("10.0.0.1"), MAIN_TABLE, 86)), "mixed families");
        let msg = message(&spec("fd00::/64", None, 1000, 86), 3).unwrap();
        assert_eq!((table_of(&msg), msg.header.scope), (1000, RouteScope::Universe));
        let msg = message(&spec("172.20.1.0/24", None, MAIN_TABLE, 86), 3).unwrap();
        assert_eq!((table_of(&msg), msg.header.scope), (MAIN_TABLE, RouteScope::Link));
    }
}
