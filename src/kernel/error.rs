//! The kernel adapter's errors: one variant per failed operation, the netlink cause as its
//! source, and the errno questions the callers ask of it (no privilege, no such device).

use super::{RouteSpec, WireError};
use nix::errno::Errno;
use std::net::IpAddr;

/// A kernel operation that failed, with the netlink cause (and its errno) as its source.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Connect(#[source] std::io::Error),
    /// Sending requests or reading their answers failed: no answer is known for them.
    #[error("cannot talk to the kernel")]
    Socket(#[source] WireError),
    /// Dumping the kernel's routes, links, addresses or neighbours failed.
    #[error("cannot read the kernel's {0}")]
    Dump(&'static str, #[source] WireError),
    /// Looking up a device failed for another reason than its absence.
    #[error("cannot look up device {0}")]
    Device(String, #[source] WireError),
    /// The device a route names does not exist.
    #[error("device {0} does not exist")]
    NoDevice(String),
    /// The route cannot be expressed safely (host bits set, mixed families, protocol 0).
    #[error("cannot use {0}: {1}")]
    Invalid(RouteSpec, String),
    /// Adding a route failed.
    #[error("cannot add {0}")]
    Add(RouteSpec, #[source] WireError),
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
    Delete(RouteSpec, #[source] WireError),
    /// `RTM_GETROUTE` for one address failed (`ENETUNREACH` when no route covers it).
    #[error("cannot ask the kernel how it routes {0}")]
    RouteGet(IpAddr, #[source] WireError),
}

impl KernelError {
    /// The errno the kernel answered, if this error came from a netlink reply.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Dump(_, e)
            | KernelError::Device(_, e)
            | KernelError::Add(_, e)
            | KernelError::Delete(_, e)
            | KernelError::RouteGet(_, e)
            | KernelError::Socket(e) => e.errno(),
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
