//! The kernel adapter's errors: one variant per failed operation, the netlink cause as its
//! source, and the errno questions the callers ask of it (no privilege, no such device).

use super::RouteSpec;
use nix::errno::Errno;
use std::net::IpAddr;

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

/// Whether a netlink error reply carries one of these errnos.
pub(super) fn has_errno(e: &rtnetlink::Error, which: &[Errno]) -> bool {
    errno(e).is_some_and(|n| which.iter().any(|w| *w as i32 == n))
}
