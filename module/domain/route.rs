// SPDX-License-Identifier: GPL-2.0

//! Transport per peer (docs/architecture.md "Transport per peer"): which domain an AF_VMCS
//! connect goes through when a guest has both an ivshmem domain and the vsock domain, and
//! the vsock cid that names an ivshmem peer.
//!
//! In such a guest ("dual") AF_VMCS names every peer by its vsock cid, the name that stays
//! when the ivshmem device goes. A peer states its ivshmem identity (region, slot,
//! generation) after its vsock preamble ([`Ident`]); a connect to a cid whose stated slot is
//! live with that generation in our lowest-numbered ivshmem domain goes over ivshmem,
//! every other one over vsock. The statement comes from the peer's own vsock stream, so no
//! guest of the region can make us send a vsock cid's traffic to itself by writing shared
//! memory; it can only name a slot that our own view of the region confirms.

use super::{registry, Carrier, Domain};
use crate::{transport::vsock::Ident, uapi};
use kernel::{prelude::*, sync::Arc};

/// How long a connect waits for a just-connected stream's preamble (and ident); TCG
/// guests on a loaded host answer within a second or two.
const IDENT_WAIT_MS: u32 = 3000;

impl Domain {
    /// Whether this is the vsock domain.
    pub(crate) fn is_vsock(&self) -> bool {
        matches!(self.carrier, Carrier::Vsock(_))
    }

    /// The identity this guest states for an ivshmem domain: region, own slot, generation.
    fn ivshmem_ident(&self) -> Option<Ident> {
        let link = self.link()?;
        self.alive().ok()?;
        let region = link.region_id();
        (region != 0).then(|| Ident {
            region,
            peer: link.local_id(),
            generation: link.generation(),
        })
    }

    /// The generation of `peer` if it is live in this ivshmem domain.
    fn live_generation(&self, peer: u32) -> Option<u32> {
        let link = self.link()?;
        self.alive().ok()?;
        let mut peers = KVec::new();
        link.peers(&mut peers).ok()?;
        peers
            .iter()
            .find(|p| p.id == peer && p.state == crate::proto::peer::PeerState::Live as u32)
            .map(|p| p.generation)
    }

    /// Whether `id` names a live peer of this ivshmem domain (not this guest).
    fn confirms(&self, id: Ident) -> bool {
        let Some(link) = self.link() else {
            return false;
        };
        link.region_id() == id.region
            && id.peer != link.local_id()
            && self.live_generation(id.peer) == Some(id.generation)
    }

    /// The vsock cid that names `peer` of this ivshmem domain in a dual guest: the one cid
    /// whose stream stated that slot and its current generation, if any.
    fn vsock_name(&self, peer: u32) -> Option<u32> {
        let link = self.link()?;
        let vs = vsock_domain()?;
        let Carrier::Vsock(v) = &vs.carrier else {
            return None;
        };
        let generation = self.live_generation(peer)?;
        v.cid_of(Ident {
            region: link.region_id(),
            peer,
            generation,
        })
    }

    /// The cid AF_VMCS shows for this guest on a socket of this domain
    /// (`getsockname`): in a dual guest its vsock cid, else its id in the domain.
    pub(crate) fn socket_local_cid(&self) -> u32 {
        dual_local_cid().unwrap_or_else(|| self.local_id())
    }

    /// The cid AF_VMCS shows for `peer` of this domain (`getpeername`, `accept`): in a
    /// dual guest an ivshmem peer's vsock cid when a stream of the peer stated that slot
    /// ([`Domain::vsock_name`]; its slot id otherwise), else `peer`.
    pub(crate) fn socket_peer_cid(&self, peer: u32) -> u32 {
        if self.is_vsock() || dual().is_none() {
            return peer;
        }
        self.vsock_name(peer).unwrap_or(peer)
    }

    /// This guest's vsock cid, if this is the vsock domain.
    fn vsock_cid(&self) -> Option<u32> {
        match &self.carrier {
            Carrier::Vsock(v) => Some(v.local_id()),
            Carrier::Ivshmem { .. } => None,
        }
    }
}

/// The vsock domain, while it is up.
fn vsock_domain() -> Option<Arc<Domain>> {
    registry::lowest(|d| d.is_vsock() && d.alive().is_ok())
}

/// The lowest-numbered ivshmem domain that is bound.
fn ivshmem_domain() -> Option<Arc<Domain>> {
    registry::lowest(|d| !d.is_vsock() && d.alive().is_ok())
}

/// The ivshmem domain and the vsock domain, when this guest has both (AF_VMCS then names
/// peers by vsock cid and picks the transport per connect).
pub(crate) fn dual() -> Option<(Arc<Domain>, Arc<Domain>)> {
    Some((ivshmem_domain()?, vsock_domain()?))
}

/// This guest's vsock cid in a dual guest.
pub(crate) fn dual_local_cid() -> Option<u32> {
    dual().and_then(|(_, vs)| vs.vsock_cid())
}

/// Where an AF_VMCS connect to `cid` goes in a dual guest: the domain and the peer id in it
/// (`None` when the guest is not dual: the socket's own domain, unchanged). Connects the
/// vsock stream to `cid` first (process context, may sleep up to vsock's connect timeout
/// and [`IDENT_WAIT_MS`]); a cid no stream reaches goes to the vsock domain, whose connect
/// then fails with `EHOSTUNREACH`.
pub(crate) fn route(cid: u32) -> Option<(Arc<Domain>, u32)> {
    let (iv, vs) = dual()?;
    let Carrier::Vsock(v) = &vs.carrier else {
        return None;
    };
    if cid == uapi::CID_LOCAL || cid == uapi::CID_ANY || cid == v.local_id() {
        return Some((vs, cid));
    }
    if v.reach(cid) {
        if let Some(id) = v.peer_ident(cid, IDENT_WAIT_MS) {
            if iv.confirms(id) {
                return Some((iv, id.peer));
            }
        }
    }
    Some((vs, cid))
}

/// Tells the vsock domain which ivshmem identity to state on its new streams (an ivshmem
/// domain was bound or unbound, or the vsock domain came up).
pub(crate) fn refresh_ident() {
    let Some(vs) = vsock_domain() else {
        return;
    };
    if let Carrier::Vsock(v) = &vs.carrier {
        v.set_ident(ivshmem_domain().and_then(|d| d.ivshmem_ident()));
    }
}
