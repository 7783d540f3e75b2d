// SPDX-License-Identifier: GPL-2.0

//! Joining the peer table: attach to the region and take a slot (probe), give it back
//! when probe fails, and take it again after an eviction (`rejoin`).

use super::{opened_gen, Joined, Link, LinkRx, Params, ATTACH_POLLS, ATTACH_STALE_POLLS};
use crate::{
    glue::{self, SharedRegion},
    proto::{
        layout::{self, InitConfig, LayoutError},
        peer::{self, JoinMode, PeerError, PeerState},
        ring::Producer,
        shm::Shm,
    },
    transport::{PeerLoss, Upcalls},
};
use kernel::{
    device,
    prelude::*,
    sync::atomic::Relaxed,
    time::{delay::fsleep, Delta},
};

/// Attaches to the region and takes a peer slot (state `JOINING`).
///
/// `ivposition` is the server-assigned id on `ivshmem-doorbell`, `None` on plain.
pub(crate) fn attach_and_join(
    dev: &device::Device,
    shm: &SharedRegion,
    ivposition: Option<u32>,
    params: &Params,
) -> Result<Joined> {
    let cfg = InitConfig {
        max_peers: params.max_peers,
        bulk_size: crate::proto::bulk::initial_size(
            shm.len(),
            params.max_peers,
            params.bulk_percent,
        ),
        my_id: ivposition.unwrap_or(u32::MAX),
        region_id: glue::random_u64(),
    };
    let attached = layout::attach(shm, &cfg, ATTACH_POLLS, ATTACH_STALE_POLLS, || {
        fsleep(Delta::from_millis(1))
    })
    .map_err(|e| {
        match e {
            LayoutError::VersionMismatch { found } => dev_err!(
                dev,
                "region speaks vmcs protocol version {}, this module speaks {}\n",
                found,
                layout::PROTOCOL_VERSION
            ),
            e => dev_err!(dev, "cannot attach to the shared region: {:?}\n", e),
        }
        match e {
            LayoutError::VersionMismatch { .. } => glue::errno::eprotonosupport(),
            LayoutError::InitTimeout => ETIMEDOUT,
            LayoutError::RegionTooSmall | LayoutError::BadParams => EINVAL,
            _ => EIO,
        }
    })?;
    let geo = attached.geometry();
    // Read once, after READY (as the header): the initializer's identity, or ours.
    let region_id = layout::region_id(shm);
    if let layout::Attached::Initialized(_) = attached {
        dev_info!(
            dev,
            "initialised the region (protocol version {}): {} peers, {} KiB transmit area \
             each, {} KiB bulk area\n",
            layout::PROTOCOL_VERSION,
            geo.max_peers,
            geo.area_size / 1024,
            geo.bulk_size / 1024
        );
    }
    let me = match ivposition {
        Some(id) => peer::join_begin(shm, &geo, id, JoinMode::Assigned),
        None => peer::claim_id(shm, &geo),
    }
    .map_err(|e| {
        dev_err!(
            dev,
            "cannot take a peer slot (IVPosition {:?}, {} slots): {:?}\n",
            ivposition,
            geo.max_peers,
            e
        );
        match e {
            PeerError::BadId => EINVAL,
            _ => EBUSY,
        }
    })?;
    Ok(Joined { geo, me, region_id })
}

/// Gives a slot taken by [`attach_and_join`] back when probe fails before [`Link::start`].
pub(crate) fn abort_join(shm: &SharedRegion, joined: &Joined) {
    if let Some(off) = joined.geo.peer_slot_off(joined.me.id) {
        let _ = shm.cmpxchg_u32(
            off + peer::SLOT_STATE,
            peer::state_word(joined.me.gen, PeerState::Joining),
            peer::state_word(joined.me.gen, PeerState::Absent),
        );
    }
}

impl Link {
    /// We were evicted (reaped while paused, or our slot was taken): reset every peer and
    /// take our slot again with a new generation.
    pub(super) fn rejoin(&self, rx: &mut LinkRx, up: &impl Upcalls) {
        pr_warn!(
            "vmcs{}: evicted from the peer table, rejoining\n",
            self.index
        );
        for p in 0..self.geo.max_peers {
            if let Some(t) = rx.peers.get_mut(p as usize) {
                if t.incarnation.is_some() {
                    self.reset_peer(t, p, up, PeerLoss::Evicted);
                }
            }
        }
        let mode = if self.doorbell {
            JoinMode::Assigned
        } else {
            JoinMode::Claim
        };
        let Some(shm) = self.region.try_access() else {
            return;
        };
        let mut me = match peer::join_begin(&*shm, &self.geo, self.local_id, mode) {
            Ok(m) => m,
            Err(e) => {
                pr_err!(
                    "vmcs{}: cannot take peer slot {} back ({:?}); link is down\n",
                    self.index,
                    self.local_id,
                    e
                );
                rx.broken = true;
                return;
            }
        };
        {
            let mut tx = self.tx.lock();
            for chan in tx.iter_mut() {
                if let Some(prod) = chan.prod.as_mut() {
                    *prod = Producer::open(&*shm, prod.channel()).0;
                }
                chan.want = None;
            }
        }
        for (p, t) in rx.peers.iter_mut().enumerate() {
            if let Some(c) = t.rx.as_mut() {
                let _ = c.resync(&*shm);
                if let Some(h) = t.held.as_ref() {
                    h.reset(super::open_channel(c));
                }
                t.acked_gen = u32::try_from(p)
                    .ok()
                    .and_then(|p| peer::snapshot(&*shm, &self.geo, p).ok())
                    .and_then(opened_gen)
                    .filter(|_| c.is_open());
            }
        }
        let _ = peer::set_vectors(&*shm, &self.geo, &me, self.vectors.load(Relaxed));
        let _ = peer::set_features(&*shm, &self.geo, &me, peer::FEATURES);
        if peer::join_complete(&*shm, &self.geo, &mut me).is_err() {
            pr_err!(
                "vmcs{}: evicted while rejoining; link is down\n",
                self.index
            );
            rx.broken = true;
            return;
        }
        *self.me.lock() = me;
        self.beat_ms.store(self.now_ms(), Relaxed);
        drop(shm);
        pr_info!(
            "vmcs{}: rejoined as peer {} (generation {})\n",
            self.index,
            self.local_id,
            me.gen
        );
        self.ring_live_peers();
    }
}
