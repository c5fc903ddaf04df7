//! Kernel adapter: rtnetlink dumps into the planner's facts, and exact route changes.
//!
//! It translates and decides nothing. Dumps become [`Route`], [`Link`], [`Addr`] and [`Neighbour`]
//! values with the meaning `ip -j` gives them (so a snapshot bundle and a live host read alike);
//! [`Kernel::add`] and [`Kernel::delete`] change exactly one route of vpnfix's own and report
//! whether anything changed. Netlink sockets belong to the network namespace of the thread that
//! opens them, and vpnfix runs without `PATH`, so nothing here shells out.

use crate::net::{Addr, Link, Neighbour, Proto, Route, RouteKind};
use ipnet::IpNet;
use nix::errno::Errno;
use rtnetlink::packet_core::{Nla, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoData, InfoTun, LinkAttribute, LinkExtentMask, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType, RouteVia,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::RouteMessageBuilder;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

mod wire;

/// `RT_TABLE_MAIN`: the table `ip route` shows and vpnfix plans against.
pub const MAIN_TABLE: u32 = 254;

/// `IFLA_TUN_TYPE` inside a tun device's `IFLA_INFO_DATA` (`if_link.h`); netlink-packet-route 0.34
/// leaves tun data unparsed (`InfoTun::Other`), so it is read here by number.
const IFLA_TUN_TYPE: u16 = 3;
/// `IFF_TAP`: `tun_fill_info` puts `flags & (IFF_TUN | IFF_TAP)` into `IFLA_TUN_TYPE` as a u8.
const IFF_TAP: u8 = 2;
/// `IP6_RT_PRIO_USER`: the metric the kernel gives an IPv6 route added without one (IPv4: 0).
const IPV6_USER_METRIC: u32 = 1024;
/// NUD state names (`neighbour.h`), bit 0 (`NUD_INCOMPLETE`) first, as iproute2 prints them.
const NUD_NAMES: &str = "INCOMPLETE REACHABLE STALE DELAY PROBE FAILED NOARP PERMANENT";

/// A route vpnfix adds or deletes: exactly these fields identify it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Destination block (no host bits set).
    pub dst: IpNet,
    /// The device it is bound to, so the kernel drops it when the device goes.
    pub dev: String,
    /// Next hop, for tap tunnels.
    pub gateway: Option<IpAddr>,
    /// Routing table, normally [`MAIN_TABLE`].
    pub table: u32,
    /// Route protocol number: vpnfix's own, so it finds (and only ever touches) its own routes.
    pub protocol: u8,
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        write!(f, " proto {}", Proto(self.protocol))
    }
}

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

/// A kernel operation that failed. Netlink causes are boxed: `rtnetlink::Error` can hold a whole
/// message, and every `Result` here would carry its size.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// [`Kernel::connect`] was called outside a tokio runtime.
    #[error("no tokio runtime to run the netlink connection on")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Connect(#[source] std::io::Error),
    /// Dumping the kernel's routes, links, addresses or neighbours failed.
    #[error("cannot read the kernel's {0}")]
    Dump(&'static str, #[source] Box<rtnetlink::Error>),
    /// Looking up a device failed for another reason than its absence.
    #[error("cannot look up device {0}")]
    Device(String, #[source] Box<rtnetlink::Error>),
    /// The device a route names does not exist.
    #[error("device {0} does not exist")]
    NoDevice(String),
    /// The route cannot be expressed safely (host bits set, mixed families, protocol 0).
    #[error("cannot use {0}: {1}")]
    Invalid(RouteSpec, String),
    /// Adding a route failed.
    #[error("cannot add {0}")]
    Add(RouteSpec, #[source] Box<rtnetlink::Error>),
    /// A route of someone else holds the place; vpnfix never replaces it.
    #[error("cannot add {route}: already routed by {existing}; not replaced")]
    Foreign {
        /// The route vpnfix wanted.
        route: RouteSpec,
        /// The route in the way, as [`Route`] displays it.
        existing: String,
    },
    /// Deleting a route failed.
    #[error("cannot delete {0}")]
    Delete(RouteSpec, #[source] Box<rtnetlink::Error>),
    /// `RTM_GETROUTE` for one address failed (`ENETUNREACH` when no route covers it).
    #[error("cannot ask the kernel how it routes {0}")]
    RouteGet(IpAddr, #[source] Box<rtnetlink::Error>),
}

impl KernelError {
    /// The errno the kernel answered, if this error came from a netlink reply.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Dump(_, e)
            | KernelError::Device(_, e)
            | KernelError::Add(_, e)
            | KernelError::Delete(_, e)
            | KernelError::RouteGet(_, e) => errno(e),
            KernelError::Connect(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the kernel refused for want of `CAP_NET_ADMIN` (vpnfix running as `user nobody`).
    pub fn is_permission(&self) -> bool {
        self.errno() == Some(Errno::EPERM as i32)
    }

    /// Whether the device named is missing.
    pub fn is_no_device(&self) -> bool {
        matches!(self, KernelError::NoDevice(_)) || self.errno() == Some(Errno::ENODEV as i32)
    }
}

/// The errno of a netlink error reply (positive, like `Errno as i32`); `None` for other errors.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}

fn has_errno(e: &rtnetlink::Error, which: &[Errno]) -> bool {
    errno(e).is_some_and(|n| which.iter().any(|w| *w as i32 == n))
}

/// The first attribute of one variant, mapped: `attr!(msg.attributes, RouteAttribute::Oif(i) => *i)`.
macro_rules! attr {
    ($attrs:expr, $pat:pat => $value:expr) => {
        $attrs.iter().find_map(|a| match a {
            $pat => Some($value),
            _ => None,
        })
    };
}

/// The inner message of one kind, `pick!(msg, NewRoute)`; `None` for any other.
macro_rules! pick {
    ($msg:expr, $kind:ident) => {
        match $msg {
            RouteNetlinkMessage::$kind(m) => Some(m),
            _ => None,
        }
    };
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
        let mut out = self.table(AddressFamily::Inet, MAIN_TABLE).await?;
        out.extend(self.table(AddressFamily::Inet6, MAIN_TABLE).await?);
        Ok(out)
    }

    /// Every device, with its link kind and, for tun devices, whether it is a tap.
    pub async fn links(&self) -> Result<Vec<Link>, KernelError> {
        Ok(self.link_dump().await?.iter().filter_map(link).collect())
    }

    /// Every address on every device, IPv4 and IPv6.
    pub async fn addrs(&self) -> Result<Vec<Addr>, KernelError> {
        let body = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        let msgs = self.wire.dump(body).await.map_err(dump("addresses"))?;
        let msgs: Vec<AddressMessage> = msgs.into_iter().filter_map(|m| pick!(m, NewAddress)).collect();
        self.know(msgs.iter().map(|m| m.header.index)).await?;
        let names = self.names();
        Ok(msgs.iter().filter_map(|m| addr(m, &names.by_index)).collect())
    }

    /// The ARP and NDP tables (every state, NOARP included; the planner chooses).
    pub async fn neighbours(&self) -> Result<Vec<Neighbour>, KernelError> {
        let body = RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default());
        let msgs = self.wire.dump(body).await.map_err(dump("neighbours"))?;
        let msgs: Vec<NeighbourMessage> = msgs.into_iter().filter_map(|m| pick!(m, NewNeighbour)).collect();
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
        if same.iter().any(|x| is_same(x, r)) {
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
        match self.wire.one(RouteNetlinkMessage::GetRoute(msg)).await? {
            RouteNetlinkMessage::NewRoute(m) => Ok(m),
            _ => Err(rtnetlink::Error::RequestFailed),
        }
    }

    /// The routes of one family in one table. A dump without strict checking returns every table
    /// (IPv6 includes table local: ff00::/8, the host's own addresses), so the table is filtered here.
    async fn table(&self, family: AddressFamily, table: u32) -> Result<Vec<Route>, KernelError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        let msgs = self.wire.dump(RouteNetlinkMessage::GetRoute(msg)).await.map_err(dump("routes"))?;
        let ours: Vec<RouteMessage> =
            msgs.into_iter().filter_map(|m| pick!(m, NewRoute)).filter(|m| table_of(m) == table).collect();
        self.know(ours.iter().flat_map(oifs)).await?;
        let names = self.names();
        Ok(ours.iter().filter_map(|m| route(m, &names.by_index)).collect())
    }

    /// Every device, remembered by index and name. Statistics are left out (`RTEXT_FILTER_SKIP_STATS`,
    /// ignored by kernels before 4.x): nothing here reads them and they are most of each message.
    async fn link_dump(&self) -> Result<Vec<LinkMessage>, KernelError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let msgs = self.wire.dump(RouteNetlinkMessage::GetLink(msg)).await.map_err(dump("links"))?;
        let msgs: Vec<LinkMessage> = msgs.into_iter().filter_map(|m| pick!(m, NewLink)).collect();
        let mut names = self.names();
        *names = Names::default();
        for m in &msgs {
            if let Some(n) = name(m) {
                names.learn(m.header.index, &n);
            }
        }
        Ok(msgs)
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
            Ok(RouteNetlinkMessage::NewLink(m)) => {
                self.names().learn(m.header.index, dev);
                Ok(Some(m.header.index))
            }
            Ok(_) => Err(KernelError::Device(dev.to_string(), Box::new(rtnetlink::Error::RequestFailed))),
            Err(e) if has_errno(&e, &[Errno::ENODEV]) => Ok(None),
            Err(e) => Err(KernelError::Device(dev.to_string(), Box::new(e))),
        }
    }
}

/// The devices a route message names: its oif and every next hop's.
fn oifs(msg: &RouteMessage) -> impl Iterator<Item = u32> + '_ {
    msg.attributes.iter().flat_map(|a| match a {
        RouteAttribute::Oif(i) => vec![*i],
        RouteAttribute::MultiPath(hops) => hops.iter().map(|h| h.interface_index).collect(),
        _ => Vec::new(),
    })
}

fn dump(what: &'static str) -> impl Fn(rtnetlink::Error) -> KernelError {
    move |e| KernelError::Dump(what, Box::new(e))
}

fn family(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// The `RTM_NEWROUTE`/`RTM_DELROUTE` body for `r`: unicast, `RTA_OIF`, `RTA_GATEWAY` when set,
/// `RTA_TABLE` past 255, scope link for an IPv4 route without gateway (as `ip route add` does;
/// IPv6 routes have no scope).
fn message(r: &RouteSpec, index: u32) -> Result<RouteMessage, KernelError> {
    let invalid = |why: String| KernelError::Invalid(r.clone(), why);
    if r.dst.trunc() != r.dst {
        return Err(invalid("the destination has host bits set".to_string()));
    }
    let on_link = r.gateway.is_none() && r.dst.addr().is_ipv4();
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.dst.addr(), r.dst.prefix_len())
        .map_err(|e| invalid(e.to_string()))?
        .output_interface(index)
        .table_id(r.table)
        .protocol(RouteProtocol::from(r.protocol))
        .kind(RouteType::Unicast)
        .scope(if on_link { RouteScope::Link } else { RouteScope::Universe });
    if let Some(gw) = r.gateway {
        builder = builder.gateway(gw).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(builder.build())
}

fn is_same(x: &Route, r: &RouteSpec) -> bool {
    x.kind == RouteKind::Unicast
        && x.dst == r.dst
        && x.dev.as_deref() == Some(r.dev.as_str())
        && x.gateway == r.gateway
        && x.protocol == Proto(r.protocol)
}

/// `RTA_TABLE` carries the full table id; the header's u8 says 252 (`RT_TABLE_COMPAT`) past 255.
fn table_of(msg: &RouteMessage) -> u32 {
    attr!(msg.attributes, RouteAttribute::Table(t) => *t).unwrap_or(u32::from(msg.header.table))
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The destination prefix; a route without `RTA_DST` is the family's default route.
fn prefix(msg: &RouteMessage) -> Option<IpNet> {
    let dst = attr!(msg.attributes, RouteAttribute::Destination(d) => ip(d));
    let addr = match (dst, msg.header.address_family) {
        (Some(a), _) => a?,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    IpNet::new(addr, msg.header.destination_prefix_length).ok()
}

/// `RTA_GATEWAY`, or `RTA_VIA` (an IPv4 route via an IPv6 next hop, RFC 5549).
fn gateway(a: &RouteAttribute) -> Option<IpAddr> {
    match a {
        RouteAttribute::Gateway(g) => ip(g),
        RouteAttribute::Via(RouteVia::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Via(RouteVia::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Device and gateway. A multipath route has a device only if all its next hops share one; its
/// gateway is the first next hop's (as `bundle::route` reads `ip -j`). A device missing from the
/// link dump (created since) leaves `dev` empty rather than guessed.
fn next_hop(attrs: &[RouteAttribute], names: &HashMap<u32, String>) -> (Option<String>, Option<IpAddr>) {
    let hops = attr!(attrs, RouteAttribute::MultiPath(hops) => hops).filter(|h| !h.is_empty());
    if let Some(hops) = hops {
        let shared = hops.windows(2).all(|w| w[0].interface_index == w[1].interface_index);
        let dev = shared.then(|| names.get(&hops[0].interface_index).cloned()).flatten();
        return (dev, hops[0].attributes.iter().find_map(gateway));
    }
    let dev = attr!(attrs, RouteAttribute::Oif(i) => *i).and_then(|i| names.get(&i).cloned());
    (dev, attrs.iter().find_map(gateway))
}

/// A dumped route; `None` for cache entries (`RTM_F_CLONED`: IPv6 exceptions such as PMTU and
/// redirects) and for anything without an IP destination.
fn route(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    let h = &msg.header;
    if h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    // Like `bundle::route`: unicast forwards; blackhole, unreachable, prohibit, throw (and the rare
    // local/broadcast/nat in the main table) send nothing through a device vpnfix could contest.
    let unicast = h.kind == RouteType::Unicast;
    let (dev, gateway) = next_hop(&msg.attributes, names);
    Some(Route {
        dst: prefix(msg)?,
        dev: dev.filter(|_| unicast),
        gateway,
        metric: attr!(msg.attributes, RouteAttribute::Priority(p) => *p).unwrap_or(0),
        protocol: Proto(h.protocol.into()),
        scope: h.scope.into(),
        kind: if unicast { RouteKind::Unicast } else { RouteKind::Reject },
    })
}

fn route_get(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<RouteGet> {
    let r = route(msg, names)?;
    let (table, protocol) = (table_of(msg), r.protocol.0);
    Some(RouteGet {
        dst: r.dst,
        dev: r.dev,
        gateway: r.gateway,
        table,
        protocol,
        metric: r.metric,
        host_owned: matches!(msg.header.kind, RouteType::Local | RouteType::Broadcast),
    })
}

fn name(msg: &LinkMessage) -> Option<String> {
    attr!(msg.attributes, LinkAttribute::IfName(n) => n.clone())
}

fn link(msg: &LinkMessage) -> Option<Link> {
    let info = attr!(msg.attributes, LinkAttribute::LinkInfo(i) => i.as_slice()).unwrap_or_default();
    let kind = attr!(info, LinkInfo::Kind(k) => k.to_string());
    Some(Link { index: msg.header.index, name: name(msg)?, kind, tap: info.iter().any(is_tap) })
}

fn is_tap(info: &LinkInfo) -> bool {
    let LinkInfo::Data(InfoData::Tun(attrs)) = info else {
        return false;
    };
    attrs.iter().any(|a| {
        let InfoTun::Other(nla) = a else { return false };
        let mut value = vec![0; nla.value_len()];
        nla.emit_value(&mut value);
        nla.kind() == IFLA_TUN_TYPE && value.first() == Some(&IFF_TAP)
    })
}

/// `IFA_LOCAL` is the device's own address; `IFA_ADDRESS` is the peer on a point-to-point link and
/// the only one IPv6 sends otherwise (iproute2 prints `local` the same way).
fn addr(msg: &AddressMessage, names: &HashMap<u32, String>) -> Option<Addr> {
    let local = attr!(msg.attributes, AddressAttribute::Local(ip) => *ip);
    Some(Addr {
        dev: names.get(&msg.header.index)?.clone(),
        addr: local.or(attr!(msg.attributes, AddressAttribute::Address(ip) => *ip))?,
        prefix_len: msg.header.prefix_len,
    })
}

fn neighbour(msg: &NeighbourMessage, names: &HashMap<u32, String>) -> Option<Neighbour> {
    let addr = attr!(msg.attributes, NeighbourAttribute::Destination(a) => a).and_then(|a| match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    let state = nud_names(u16::from(msg.header.state));
    Some(Neighbour { dev: names.get(&msg.header.ifindex)?.clone(), addr, state })
}

/// NUD bits as iproute2 names them; 0 is `NONE`.
fn nud_names(state: u16) -> Vec<String> {
    if state == 0 {
        return vec!["NONE".to_string()];
    }
    let set = NUD_NAMES.split(' ').enumerate().filter(|(bit, _)| state & (1 << bit) != 0);
    set.map(|(_, n)| n.to_string()).collect()
}

#[cfg(test)]
mod tests {
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
