//! Route changes: adds and deletes of vpnfix's own routes, many to a datagram, each answered
//! exactly (added, already there, someone else's in the way; deleted, already gone).

use super::parse::message;
use super::wire::WireError;
use super::{Added, Deleted, Kernel, KernelError, RouteSpec, IPV6_USER_METRIC};
use crate::net::Route;
use nix::errno::Errno;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::HashMap;

/// Flags of an exclusive add: never `NLM_F_REPLACE`.
const ADD: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;

impl Kernel {
    /// Adds one route, create-exclusive ([`Kernel::add_all`]).
    pub fn add(&self, r: &RouteSpec) -> Result<Added, KernelError> {
        self.add_all(std::slice::from_ref(r))?.pop().expect("one answer per route")
    }

    /// Adds every route create-exclusive (`NLM_F_CREATE|NLM_F_EXCL`, never `NLM_F_REPLACE`), many
    /// to a datagram; each one's outcome, in order. An identical route of ours already there is
    /// [`Added::Unchanged`]; anyone else's in the way is [`KernelError::Foreign`], never
    /// replaced. The outer error is the socket's.
    pub fn add_all(&self, routes: &[RouteSpec]) -> Result<Vec<Result<Added, KernelError>>, KernelError> {
        let answers = self.send_all(routes, |r, index| Ok((RouteNetlinkMessage::NewRoute(message(r, index)?), ADD)))?;
        let mut out = Vec::with_capacity(routes.len());
        let mut exists = Vec::new();
        for (r, answer) in routes.iter().zip(answers) {
            out.push(match answer {
                Sent::Answered(Ok(_)) => Ok(Added::Added),
                Sent::Answered(Err(e)) if e.errno() == Some(Errno::EEXIST as i32) => {
                    exists.push(out.len());
                    Err(KernelError::Add(r.clone(), e))
                }
                // The device went away between the lookup and the add, or the remembered
                // index is stale: the device may have come back under a new one.
                Sent::Answered(Err(e)) if e.errno() == Some(Errno::ENODEV as i32) => self.add_again(r),
                Sent::Answered(Err(e)) => Err(KernelError::Add(r.clone(), e)),
                Sent::NoDevice => Err(KernelError::NoDevice(r.dev.clone())),
                Sent::Refused(e) => Err(e),
            });
        }
        if !exists.is_empty() {
            self.settle_exists(routes, &mut out, &exists)?;
        }
        Ok(out)
    }

    /// One add again after ENODEV, through the device's index asked anew.
    fn add_again(&self, r: &RouteSpec) -> Result<Added, KernelError> {
        let no_device = || KernelError::NoDevice(r.dev.clone());
        let fresh = self.refresh_index(&r.dev)?.ok_or_else(no_device)?;
        let body = RouteNetlinkMessage::NewRoute(message(r, fresh)?);
        match self.wire.requests(vec![(body, ADD)]).map_err(|e| KernelError::Add(r.clone(), e))?.pop() {
            Some(Ok(_)) => Ok(Added::Added),
            Some(Err(e)) if e.errno() == Some(Errno::ENODEV as i32) => Err(no_device()),
            Some(Err(e)) if e.errno() == Some(Errno::EEXIST as i32) => {
                let mut one = vec![Err(KernelError::Add(r.clone(), e))];
                self.settle_exists(std::slice::from_ref(r), &mut one, &[0])?;
                one.pop().expect("one")
            }
            Some(Err(e)) => Err(KernelError::Add(r.clone(), e)),
            None => Err(KernelError::Add(r.clone(), WireError::Unexpected("no answer"))),
        }
    }

    /// EEXIST under `NLM_F_EXCL` says a route with the same dst holds the place: in IPv4 one with
    /// the same dst, tos and priority (`fib_table_insert`), in IPv6 one with the same dst and metric
    /// whatever its device (`fib6_add_rt2node`). It may be ours (done already) or anyone's: one
    /// dump of each table concerned tells, for every such answer at once.
    fn settle_exists(
        &self,
        routes: &[RouteSpec],
        out: &mut [Result<Added, KernelError>],
        which: &[usize],
    ) -> Result<(), KernelError> {
        let mut tables: HashMap<u32, Vec<Route>> = HashMap::new();
        for &i in which {
            let r = &routes[i];
            let table = match tables.entry(r.table) {
                std::collections::hash_map::Entry::Occupied(t) => t.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(self.table(AddressFamily::Unspec, r.table)?),
            };
            let same: Vec<&Route> = table.iter().filter(|x| x.dst == r.dst).collect();
            if same.iter().any(|x| r.is(x)) {
                out[i] = Ok(Added::Unchanged);
                continue;
            }
            let default_metric = if r.dst.addr().is_ipv6() { IPV6_USER_METRIC } else { 0 };
            // Gone again since: the kernel's answer stands rather than a guess.
            if let Some(x) = same.iter().find(|x| x.metric == default_metric).or(same.first()) {
                out[i] = Err(KernelError::Foreign { route: r.clone(), existing: x.to_string() });
            }
        }
        Ok(())
    }

    /// Deletes exactly one route ([`Kernel::delete_all`]).
    pub fn delete(&self, r: &RouteSpec) -> Result<Deleted, KernelError> {
        self.delete_all(std::slice::from_ref(r))?.pop().expect("one answer per route")
    }

    /// Deletes exactly these routes, many to a datagram; each one's outcome, in order. The
    /// kernel deletes only a route whose protocol matches when `RTM_DELROUTE` carries one
    /// (`fib_table_delete`, `ip6_route_del`), and matches oif, table and gateway too, so a
    /// foreign route is never hit. A route that is gone, or whose device is, is
    /// [`Deleted::Unchanged`]. The outer error is the socket's.
    pub fn delete_all(&self, routes: &[RouteSpec]) -> Result<Vec<Result<Deleted, KernelError>>, KernelError> {
        let answers = self.send_all(routes, |r, index| {
            if r.protocol == 0 {
                let why = "protocol 0 would let the kernel delete a route of any protocol";
                return Err(KernelError::Invalid(r.clone(), why.to_string()));
            }
            let mut msg = message(r, index)?;
            // RT_SCOPE_NOWHERE matches any scope in fib_table_delete, as `ip route del` sends it.
            msg.header.scope = RouteScope::NoWhere;
            Ok((RouteNetlinkMessage::DelRoute(msg), NLM_F_REQUEST | NLM_F_ACK))
        })?;
        let gone = |e: &WireError| [Errno::ESRCH, Errno::ENODEV].iter().any(|n| e.errno() == Some(*n as i32));
        let mut out = Vec::with_capacity(routes.len());
        for (r, answer) in routes.iter().zip(answers) {
            out.push(match answer {
                Sent::Answered(Ok(_)) => Ok(Deleted::Deleted),
                // Not found through a remembered index: make sure the device did not come back anew.
                Sent::Answered(Err(e)) if gone(&e) => self.delete_again(r),
                Sent::Answered(Err(e)) => Err(KernelError::Delete(r.clone(), e)),
                // A device that is gone took its routes with it (fib_disable_ip / rt6_disable_ip).
                Sent::NoDevice => Ok(Deleted::Unchanged),
                Sent::Refused(e) => Err(e),
            });
        }
        Ok(out)
    }

    /// A delete that found nothing, once more through the device's index asked anew, if it
    /// changed.
    fn delete_again(&self, r: &RouteSpec) -> Result<Deleted, KernelError> {
        let stale = self.names.borrow().by_name.get(&r.dev).copied();
        let Some(fresh) = self.refresh_index(&r.dev)?.filter(|i| Some(*i) != stale) else {
            return Ok(Deleted::Unchanged);
        };
        let mut msg = message(r, fresh)?;
        msg.header.scope = RouteScope::NoWhere;
        let body = RouteNetlinkMessage::DelRoute(msg);
        match self
            .wire
            .requests(vec![(body, NLM_F_REQUEST | NLM_F_ACK)])
            .map_err(|e| KernelError::Delete(r.clone(), e))?
            .pop()
        {
            Some(Ok(_)) => Ok(Deleted::Deleted),
            Some(Err(e)) if [Errno::ESRCH, Errno::ENODEV].iter().any(|n| e.errno() == Some(*n as i32)) => {
                Ok(Deleted::Unchanged)
            }
            Some(Err(e)) => Err(KernelError::Delete(r.clone(), e)),
            None => Err(KernelError::Delete(r.clone(), WireError::Unexpected("no answer"))),
        }
    }

    /// Resolves each route's device and sends the requests `make` builds, many to a datagram.
    fn send_all(
        &self,
        routes: &[RouteSpec],
        make: impl Fn(&RouteSpec, u32) -> Result<(RouteNetlinkMessage, u16), KernelError>,
    ) -> Result<Vec<Sent>, KernelError> {
        let mut out: Vec<Option<Sent>> = Vec::with_capacity(routes.len());
        let mut reqs = Vec::new();
        for r in routes {
            match self.index(&r.dev)?.map(|i| make(r, i)) {
                None => out.push(Some(Sent::NoDevice)),
                Some(Err(e)) => out.push(Some(Sent::Refused(e))),
                Some(Ok(req)) => {
                    reqs.push(req);
                    out.push(None);
                }
            }
        }
        let mut answers = self.wire.changes(reqs).map_err(KernelError::Socket)?.into_iter();
        Ok(out.into_iter().map(|o| o.unwrap_or_else(|| Sent::Answered(answers.next().expect("answered")))).collect())
    }
}

/// What became of one route's request in [`Kernel::send_all`].
enum Sent {
    /// The kernel's answer.
    Answered(Result<(), WireError>),
    /// Its device does not exist: nothing was sent.
    NoDevice,
    /// It cannot be expressed safely: nothing was sent.
    Refused(KernelError),
}
