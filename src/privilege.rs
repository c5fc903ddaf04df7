//! The watcher's privilege: it keeps CAP_NET_ADMIN (its routes) and nothing else, but for the
//! routes inside containers (`VPNFIX_CONTAINER_ROUTES`, the default): entering a container's
//! network namespace takes CAP_SYS_ADMIN (`setns`), and opening it through a process of another
//! user (a container's `USER`) CAP_SYS_PTRACE. It stays the
//! user it was started as (root, from OpenVPN's route-up or NetworkManager's dispatcher), whose
//! files are the state directory and, as owner, the engines' sockets (`root:docker 0660`), so no
//! other capability is needed: not CAP_DAC_OVERRIDE, CAP_SYS_ADMIN nor CAP_SETUID. Started as
//! another user (a unit's `User=` with ambient capabilities), it keeps CAP_DAC_OVERRIDE too,
//! where it has it: that is what reaches the engines' sockets there. The bounding set loses the
//! rest too, and `no_new_privs` is set, so nothing it could ever run gets them back.

use caps::{CapSet, Capability, CapsHashSet};

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
#[error("cannot drop every capability but those it needs ({0})")]
pub struct DropError(String);

/// Keeps CAP_NET_ADMIN alone (and CAP_DAC_OVERRIDE when not root; CAP_SYS_ADMIN and
/// CAP_SYS_PTRACE with `containers`), in this thread (capabilities are per thread: call it
/// before any other thread starts, which then inherits them). A process without CAP_NET_ADMIN
/// ends with none at all. Returns what it kept.
pub fn keep_only_needed(containers: bool) -> Result<CapsHashSet, DropError> {
    let err = |e: caps::errors::CapsError| DropError(e.to_string());
    let had = caps::read(None, CapSet::Permitted).map_err(err)?;
    // Not root (a unit's `User=` with ambient capabilities): the engines' sockets are not its
    // own files, and CAP_DAC_OVERRIDE is what reaches them, as it did in the hook.
    let root = nix::unistd::geteuid().is_root();
    let inside = [Capability::CAP_SYS_ADMIN, Capability::CAP_SYS_PTRACE];
    let needed = |c: &Capability| {
        *c == Capability::CAP_NET_ADMIN
            || (!root && *c == Capability::CAP_DAC_OVERRIDE)
            || (containers && inside.contains(c))
    };
    let keep: CapsHashSet = if had.contains(&Capability::CAP_NET_ADMIN) {
        had.iter().copied().filter(needed).collect()
    } else {
        CapsHashSet::new()
    };
    // The bounding set can only shrink while CAP_SETPCAP is still effective: it goes first.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(err)? {
        for cap in caps::read(None, CapSet::Bounding).map_err(err)? {
            if !keep.contains(&cap) && cap != Capability::CAP_NET_ADMIN {
                caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    caps::set(None, CapSet::Effective, &keep).map_err(err)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err)?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| DropError(e.to_string()))?;
    Ok(keep)
}

/// Whether this thread may change routes: CAP_NET_ADMIN in its effective set, as root has and as
/// systemd's `AmbientCapabilities=CAP_NET_ADMIN` gives an unprivileged unit.
pub fn may_change_routes() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap_or(false)
}

/// Whether this thread may enter other network namespaces (`setns` takes CAP_SYS_ADMIN): where
/// it may not (Debian's `openvpn-client@` units bound it away), routes inside containers cannot
/// be made.
pub fn may_enter_namespaces() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap_or(false)
}
