//! The watcher's privilege: it keeps CAP_NET_ADMIN (its routes) and nothing else. It stays the
//! user it was started as (root, from OpenVPN's route-up or NetworkManager's dispatcher), whose
//! files are the state directory and, as owner, the engines' sockets (`root:docker 0660`), so no
//! other capability is needed: not CAP_DAC_OVERRIDE, CAP_SYS_ADMIN nor CAP_SETUID. The bounding
//! set loses the rest too, and `no_new_privs` is set, so nothing it could ever run gets them back.

use caps::{CapSet, Capability, CapsHashSet};

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
#[error("cannot drop every capability but CAP_NET_ADMIN ({0})")]
pub struct DropError(String);

/// Keeps CAP_NET_ADMIN alone, in this thread (capabilities are per thread: call it before any
/// other thread starts, which then inherits them). A process without CAP_NET_ADMIN ends with
/// none at all. Returns what it kept.
pub fn keep_net_admin_only() -> Result<CapsHashSet, DropError> {
    let err = |e: caps::errors::CapsError| DropError(e.to_string());
    let had = caps::read(None, CapSet::Permitted).map_err(err)?;
    let keep: CapsHashSet = had.iter().copied().filter(|c| *c == Capability::CAP_NET_ADMIN).collect();
    // The bounding set can only shrink while CAP_SETPCAP is still effective: it goes first.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(err)? {
        for cap in caps::read(None, CapSet::Bounding).map_err(err)? {
            if cap != Capability::CAP_NET_ADMIN {
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
