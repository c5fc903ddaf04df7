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
use rtnetlink::packet_core::{Parseable, NLM_F_REQUEST};
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourMessage;
use rtnetlink::packet_route::route::{RouteAttribute, RouteFlags, RouteMessage, RouteType};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use wire::Answer;

pub use notify::{Changed, Notifications};

mod change;
mod error;
mod notify;
mod parse;
mod wire;

pub use error::KernelError;
pub use wire::WireError;

use parse::{
    addr, family, ifindex, link, neighbour, next_hop, oifs, route, route_get, table_of, RTM_NEWADDR, RTM_NEWLINK,
    RTM_NEWNEIGH, RTM_NEWROUTE,
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

/// The messages of one type in a dump, parsed; how many of that type did not parse.
fn parse_all<M: Parseable<[u8]>>(raws: Vec<wire::Raw>, kind: u16) -> (Vec<M>, usize) {
    let mut bad = 0;
    let msgs =
        raws.iter().filter(|r| r.kind == kind).filter_map(|r| M::parse(&r.body).map_err(|_| bad += 1).ok()).collect();
    (msgs, bad)
}

/// Says, once per dump, how many of its messages vpnfix could not read (a kernel newer than
/// the parser, say): they are left out of the facts, never silently.
fn unreadable(what: &str, bad: usize) {
    if bad > 0 {
        log::warn!("{bad} {what} message(s) of the kernel could not be read; left out");
    }
}

/// An rtnetlink connection in the network namespace of the thread that opened it: plain,
/// blocking requests (many to a datagram) and dumps, no runtime.
///
/// It remembers device names by index (and back) from its link dumps and lookups, so that the
/// routes, addresses and neighbours it reads and the routes it changes name their devices
/// without a link dump each: an index it has not seen refreshes the whole list, and a cached
/// index the kernel no longer knows (ENODEV, ESRCH) is looked up again before the answer counts.
/// A device keeps its index for its lifetime and can only be renamed while down, when the
/// kernel has flushed its routes.
pub struct Kernel {
    wire: wire::Wire,
    names: RefCell<Names>,
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

impl Kernel {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn connect() -> Result<Kernel, KernelError> {
        let wire = wire::Wire::connect().map_err(KernelError::Connect)?;
        Ok(Kernel { wire, names: RefCell::new(Names::default()) })
    }

    /// How many route changes go to the kernel in one datagram: callers that log each change
    /// before it happens hand over this many at a time.
    pub fn batch(&self) -> usize {
        self.wire.batch()
    }

    /// The main table, IPv4 then IPv6, every protocol, as `ip route show table main` lists it.
    pub fn routes(&self) -> Result<Vec<Route>, KernelError> {
        // One dump of every family (`rtnl_dump_all` walks them in order: IPv4, IPv6, then the
        // multicast and MPLS tables, which the family filter drops).
        let mut out = self.table(AddressFamily::Unspec, MAIN_TABLE)?;
        out.sort_by_key(|r| r.dst.addr().is_ipv6()); // stable: IPv4 first, each in kernel order
        Ok(out)
    }

    /// Every device, with its link kind and, for tun devices, whether it is a tap.
    pub fn links(&self) -> Result<Vec<Link>, KernelError> {
        self.link_dump()
    }

    /// Every address on every device, IPv4 and IPv6.
    pub fn addrs(&self) -> Result<Vec<Addr>, KernelError> {
        let body = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        let (msgs, bad): (Vec<AddressMessage>, _) =
            parse_all(self.wire.dump(body).map_err(dump("addresses"))?, RTM_NEWADDR);
        unreadable("address", bad);
        self.know(msgs.iter().map(|m| m.header.index))?;
        let names = self.names.borrow();
        Ok(msgs.iter().filter_map(|m| addr(m, &names.by_index)).collect())
    }

    /// The ARP and NDP tables (every state, NOARP included; the planner chooses).
    pub fn neighbours(&self) -> Result<Vec<Neighbour>, KernelError> {
        let body = RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default());
        let (msgs, bad): (Vec<NeighbourMessage>, _) =
            parse_all(self.wire.dump(body).map_err(dump("neighbours"))?, RTM_NEWNEIGH);
        unreadable("neighbour", bad);
        self.know(msgs.iter().map(|m| m.header.ifindex))?;
        let names = self.names.borrow();
        Ok(msgs.iter().filter_map(|m| neighbour(m, &names.by_index)).collect())
    }

    /// Whether policy routing is the kernel's default, so that the main table decides every
    /// address the local table does not own: every rule of both families matches everything
    /// (no source, destination, TOS, interface, mark, port or uid selector) and looks up table
    /// local at priority 0, main at 32766 or default at 32767, as a kernel without `ip rule`
    /// changes has them.
    pub fn rules_are_default(&self) -> Result<bool, KernelError> {
        let body = RouteNetlinkMessage::GetRule(RuleMessage::default());
        let (rules, bad): (Vec<RuleMessage>, _) = parse_all(self.wire.dump(body).map_err(dump("rules"))?, RTM_NEWRULE);
        for r in rules.iter().filter(|r| !is_default_rule(r)) {
            log::debug!("policy routing is not the kernel's default: {r:?}");
        }
        Ok(bad == 0 && rules.iter().all(is_default_rule))
    }

    /// The route the kernel picks for one address ([`Kernel::route_get_all`]).
    pub fn route_get(&self, addr: IpAddr) -> Result<RouteGet, KernelError> {
        self.route_get_all(&[addr])?.pop().expect("one answer per address")
    }

    /// The route the kernel picks for each address (`RTM_GETROUTE` with `RTM_F_FIB_MATCH`, which
    /// names the matched route with its protocol; a plain lookup reports IPv4 protocol as
    /// unspec), many to a datagram. For a multipath match over several devices the plain lookup
    /// tells which next hop is taken. The outer error is the socket's.
    pub fn route_get_all(&self, addrs: &[IpAddr]) -> Result<Vec<Result<RouteGet, KernelError>>, KernelError> {
        let reqs = addrs.iter().map(|a| (RouteNetlinkMessage::GetRoute(lookup(*a, true)), NLM_F_REQUEST)).collect();
        let answers = self.wire.requests(reqs).map_err(KernelError::Socket)?;
        let fibs: Vec<Result<RouteMessage, wire::WireError>> = answers.into_iter().map(route_message).collect();
        self.know(fibs.iter().flatten().flat_map(oifs))?;
        let mut out = Vec::with_capacity(addrs.len());
        for (a, fib) in addrs.iter().zip(fibs) {
            let failed = |e| KernelError::RouteGet(*a, e);
            out.push(fib.map_err(failed).and_then(|fib| self.pick(*a, &fib)));
        }
        Ok(out)
    }

    /// The answer for `addr` from its FIB match, with the next hop taken when that matched
    /// route is multipath over several devices.
    fn pick(&self, addr: IpAddr, fib: &RouteMessage) -> Result<RouteGet, KernelError> {
        let failed = |e| KernelError::RouteGet(addr, e);
        let answer = route_get(fib, &self.names.borrow().by_index);
        let mut answer = answer.ok_or_else(|| failed(wire::WireError::Unexpected("a route without a destination")))?;
        if answer.dev.is_none() && fib.header.kind == RouteType::Unicast {
            let taken = route_message(Ok(Answer::Message(
                self.wire.one(RouteNetlinkMessage::GetRoute(lookup(addr, false))).map_err(failed)?,
            )))
            .map_err(failed)?;
            self.know(oifs(&taken))?;
            (answer.dev, answer.gateway) = next_hop(&taken.attributes, &self.names.borrow().by_index);
        }
        Ok(answer)
    }

    /// The IPv4 and IPv6 routes of one table, of one family or (`Unspec`) both. A dump without
    /// strict checking returns every table (IPv6 includes table local: ff00::/8, the host's own
    /// addresses), so the table is filtered here.
    fn table(&self, family: AddressFamily, table: u32) -> Result<Vec<Route>, KernelError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        let msgs = self.wire.dump(RouteNetlinkMessage::GetRoute(msg)).map_err(dump("routes"))?;
        let ip = |m: &RouteMessage| matches!(m.header.address_family, AddressFamily::Inet | AddressFamily::Inet6);
        let (mut ours, bad): (Vec<RouteMessage>, _) = parse_all(msgs, RTM_NEWROUTE);
        unreadable("route", bad);
        ours.retain(|m| ip(m) && table_of(m) == table);
        self.know(ours.iter().flat_map(oifs))?;
        let names = self.names.borrow();
        Ok(ours.iter().filter_map(|m| route(m, &names.by_index)).collect())
    }

    /// Every device, remembered by index and name. Statistics are left out (`RTEXT_FILTER_SKIP_STATS`,
    /// ignored by kernels before 4.x): nothing here reads them and they are most of each message.
    fn link_dump(&self) -> Result<Vec<Link>, KernelError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let msgs = self.wire.dump(RouteNetlinkMessage::GetLink(msg)).map_err(dump("links"))?;
        let ours = msgs.iter().filter(|m| m.kind == RTM_NEWLINK);
        let links: Vec<Link> = ours.clone().filter_map(|m| link(&m.body)).collect();
        unreadable("link", ours.count() - links.len());
        let mut names = self.names.borrow_mut();
        *names = Names::default();
        for l in &links {
            names.learn(l.index, &l.name);
        }
        Ok(links)
    }

    /// Makes sure every index is named, with one link dump if any is new (0 means none).
    fn know(&self, mut indexes: impl Iterator<Item = u32>) -> Result<(), KernelError> {
        let unknown = {
            let names = self.names.borrow();
            indexes.any(|i| i != 0 && !names.by_index.contains_key(&i))
        };
        if unknown {
            self.link_dump()?;
        }
        Ok(())
    }

    /// The ifindex of a device; `None` when it does not exist (the kernel answers ENODEV).
    fn index(&self, dev: &str) -> Result<Option<u32>, KernelError> {
        if let Some(i) = self.names.borrow().by_name.get(dev) {
            return Ok(Some(*i));
        }
        self.ask_index(dev)
    }

    /// Forgets a remembered index of `dev` and asks the kernel again.
    fn refresh_index(&self, dev: &str) -> Result<Option<u32>, KernelError> {
        {
            let mut names = self.names.borrow_mut();
            if let Some(stale) = names.by_name.remove(dev) {
                names.by_index.remove(&stale);
            }
        }
        self.ask_index(dev)
    }

    fn ask_index(&self, dev: &str) -> Result<Option<u32>, KernelError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        msg.attributes.push(LinkAttribute::IfName(dev.to_string()));
        match self.wire.one(RouteNetlinkMessage::GetLink(msg)) {
            Ok(answer) if answer.kind == RTM_NEWLINK && answer.body.len() >= 8 => {
                let index = ifindex(&answer.body);
                self.names.borrow_mut().learn(index, dev);
                Ok(Some(index))
            }
            Ok(_) => Err(KernelError::Device(dev.to_string(), wire::WireError::Unexpected("not a link"))),
            Err(e) if e.errno() == Some(Errno::ENODEV as i32) => Ok(None),
            Err(e) => Err(KernelError::Device(dev.to_string(), e)),
        }
    }
}

/// `RTM_NEWRULE` (`rtnetlink.h`).
const RTM_NEWRULE: u16 = 32;

/// One of the rules a kernel starts with: (priority, table) local 0, main 32766, default
/// 32767, selecting every packet. Rules of other families (IPv4 multicast routing's, family 129) decide no unicast route.
fn is_default_rule(m: &RuleMessage) -> bool {
    let h = &m.header;
    if !matches!(h.family, AddressFamily::Inet | AddressFamily::Inet6) {
        return true;
    }
    let plain = h.dst_len == 0 && h.src_len == 0 && h.tos == 0 && h.action == RuleAction::ToTable;
    let (mut priority, mut table) = (0, u32::from(h.table));
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Protocol(_) | RuleAttribute::SuppressPrefixLen(u32::MAX) => {}
            _ => return false,
        }
    }
    plain && matches!((priority, table), (0, 255) | (32766, 254) | (32767, 253))
}

/// A route lookup for one address (`fib_match`: the matched route itself).
fn lookup(addr: IpAddr, fib_match: bool) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(addr);
    msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
    msg.header.flags.set(RouteFlags::FibMatch, fib_match);
    msg.attributes.push(RouteAttribute::Destination(addr.into()));
    msg
}

/// A lookup's answer as a route message.
fn route_message(answer: Result<Answer, wire::WireError>) -> Result<RouteMessage, wire::WireError> {
    match answer? {
        Answer::Message(m) if m.kind == RTM_NEWROUTE => {
            RouteMessage::parse(&m.body).map_err(|_| wire::WireError::Unexpected("a route message cut short"))
        }
        _ => Err(wire::WireError::Unexpected("not a route")),
    }
}

fn dump(what: &'static str) -> impl Fn(wire::WireError) -> KernelError {
    move |e| KernelError::Dump(what, e)
}

#[cfg(test)]
mod tests {
    use super::parse::{message, nud_names};
    use super::*;
    use rtnetlink::packet_route::route::RouteScope;

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
