// SPDX-License-Identifier: GPL-2.0

//! Peers and liveness: the heartbeat tick samples every slot and applies the liveness
//! rules (up, restarted, left, heartbeat timeout); a reset is reported up once per
//! incarnation. Our ring to a peer is carved from our transmit area when the peer is first
//! seen present and freed when it leaves or times out (docs/protocol.md §1).

use super::{bump, Link, LinkRx, PeerTracking, VEC_DATA};
use crate::{
    proto::{
        peer::{self, PeerState},
        ring::{self, Producer},
    },
    transport::{PeerInfo, PeerLoss, Upcalls},
};
use kernel::{prelude::*, sync::atomic::Relaxed};

impl Link {
    /// The heartbeat tick: beat, sample every slot, drain. Called by the domain's tick work.
    pub(crate) fn tick(&self, up: &impl Upcalls) {
        if self.running.load(Relaxed) == 0 {
            return;
        }
        // Beat first, without the `rx` mutex: a long receive pass holds it, and a heartbeat
        // that waited for it stood still for longer than `hb_timeout_ms` on a quiet machine
        // (the 1000-connection test of the sockets scenario on the sanitizer kernel).
        let beat = self.beat();
        {
            let mut rx = self.rx.lock();
            if rx.broken {
                return;
            }
            if beat.is_err() {
                self.rejoin(&mut rx, up);
            }
            for p in 0..self.geo.max_peers {
                if p != self.local_id {
                    self.refresh_peer(&mut rx, p, true, up);
                    self.log_window(p);
                }
            }
        }
        let (more, activity) = self.poll(up, true);
        if more || (activity && !self.doorbell) {
            self.kick_rx(up);
        }
    }

    /// Beats our heartbeat (the `me` spinlock only, never `rx`). `Err` when our slot is no
    /// longer ours (we were reaped): the tick then rejoins.
    fn beat(&self) -> core::result::Result<(), ()> {
        let mut me = self.me.lock();
        let Some(shm) = self.region.try_access() else {
            return Ok(());
        };
        let r = peer::heartbeat(&*shm, &self.geo, &mut me).map_err(|_| ());
        drop(shm);
        drop(me);
        self.beat_ms.store(self.now_ms(), Relaxed);
        r
    }

    /// Beats when a heartbeat is due (`hb_period_ms` since the last one): called by a
    /// receive pass per frame, so a pass that runs long never lets our heartbeat stand
    /// still, whatever the tick is waiting for. An eviction it finds is left to the tick.
    pub(super) fn beat_if_due(&self) {
        let due = self.now_ms().saturating_sub(self.beat_ms.load(Relaxed))
            >= u64::from(self.params.hb_period_ms);
        if due && self.running.load(Relaxed) != 0 {
            let _ = self.beat();
        }
    }

    /// Asks for a receive pass now (plain: also back to the fast poll).
    pub(super) fn kick_rx(&self, up: &impl Upcalls) {
        if self.doorbell {
            self.request_rx(up, false);
        } else {
            self.kick(up);
        }
    }

    /// Samples slot `p` and applies the liveness rules (docs/architecture.md, transport).
    pub(super) fn refresh_peer(
        &self,
        rx: &mut LinkRx,
        p: u32,
        check_stale: bool,
        up: &impl Upcalls,
    ) {
        let now = self.now_ms();
        let Some(snap) = self
            .region
            .try_access()
            .and_then(|shm| peer::snapshot(&*shm, &self.geo, p).ok())
        else {
            return;
        };
        let Some(t) = rx.peers.get_mut(p as usize) else {
            return;
        };
        let idx = self.index;
        // What to do with our ring to `p` once `t` is no longer borrowed.
        let (mut opened, mut closed) = (false, false);
        match snap.state {
            PeerState::Live => {
                if t.dead_gen == Some(snap.gen) {
                    return;
                }
                opened = true;
                if t.incarnation == Some(snap.gen) {
                    if snap.heartbeat != t.last_hb {
                        t.last_hb = snap.heartbeat;
                        t.hb_at_ms = now;
                        if let Some(s) = self.stats.get(p as usize) {
                            s.hb_seen_ms.store(now, Relaxed);
                        }
                    } else if check_stale
                        && now.saturating_sub(t.hb_at_ms) > u64::from(self.params.hb_timeout_ms)
                    {
                        pr_warn!(
                            "vmcs{}: peer {} heartbeat timeout ({} ms, generation {}), reset\n",
                            idx,
                            p,
                            now.saturating_sub(t.hb_at_ms),
                            snap.gen
                        );
                        t.dead_gen = Some(snap.gen);
                        self.reset_peer(t, p, up, PeerLoss::HeartbeatTimeout);
                        (opened, closed) = (false, true);
                        let reaped = self
                            .region
                            .try_access()
                            .is_some_and(|shm| peer::reap(&*shm, &self.geo, p, &snap));
                        if reaped {
                            pr_info!("vmcs{}: reaped the slot of peer {}\n", idx, p);
                        }
                    }
                } else {
                    if let Some(old) = t.incarnation {
                        if self.log_ok(p) {
                            pr_info!(
                                "vmcs{}: peer {} restarted (generation {} -> {}), reset\n",
                                idx,
                                p,
                                old,
                                snap.gen
                            );
                        }
                        self.reset_peer(t, p, up, PeerLoss::Restarted);
                    }
                    t.incarnation = Some(snap.gen);
                    t.dead_gen = None;
                    t.last_hb = snap.heartbeat;
                    t.hb_at_ms = now;
                    if let Some(s) = self.stats.get(p as usize) {
                        s.hb_seen_ms.store(now, Relaxed);
                        s.live.store(1, Relaxed);
                        let (v, f) = match self.region.try_access() {
                            Some(shm) => (
                                peer::vectors(&*shm, &self.geo, p).ok(),
                                peer::features(&*shm, &self.geo, p).ok(),
                            ),
                            None => (None, None),
                        };
                        s.vectors.store(v.unwrap_or(0), Relaxed);
                        s.features.store(f.unwrap_or(0), Relaxed);
                    }
                    if self.log_ok(p) {
                        pr_info!("vmcs{}: peer {} up (generation {})\n", idx, p, snap.gen);
                    }
                }
            }
            PeerState::Joining => {
                t.dead_gen = None;
                opened = true;
                if let Some(old) = t.incarnation {
                    if old != snap.gen {
                        if self.log_ok(p) {
                            pr_info!(
                                "vmcs{}: peer {} restarting (generation {} -> {}), reset\n",
                                idx,
                                p,
                                old,
                                snap.gen
                            );
                        }
                        self.reset_peer(t, p, up, PeerLoss::Restarted);
                    }
                }
            }
            PeerState::Absent | PeerState::Leaving => {
                t.dead_gen = None;
                if let Some(old) = t.incarnation {
                    if self.log_ok(p) {
                        pr_info!("vmcs{}: peer {} left (generation {}), reset\n", idx, p, old);
                    }
                    self.reset_peer(t, p, up, PeerLoss::Left);
                }
                closed = true;
            }
        }
        if opened {
            self.open_tx(rx, p);
        } else if closed {
            self.close_tx(rx, p);
        }
    }

    /// Gives `p` a ring carved from our transmit area, if it has none, and opens it (new
    /// epoch; the doorbell tells the peer). Called with `rx` held.
    pub(super) fn open_tx(&self, rx: &mut LinkRx, p: u32) {
        let Some(shm) = self.region.try_access() else {
            return;
        };
        let mut tx = self.tx.lock();
        let Some(chan) = tx.get_mut(p as usize) else {
            return;
        };
        if chan.prod.is_some() {
            return;
        }
        let Some(ch) = rx.alloc.alloc(&self.geo, p) else {
            return;
        };
        chan.prod = Some(Producer::open(&*shm, ch).0);
        chan.want = None;
        drop(tx);
        drop(shm);
        if let Some(s) = self.stats.get(p as usize) {
            s.tx_ring.store(ch.size(), Relaxed);
            s.max_payload.store(ch.max_payload(), Relaxed);
        }
        if self.log_ok(p) {
            pr_info!(
                "vmcs{}: peer {}: our ring to it is {} KiB at {:#x}, max payload {}\n",
                self.index,
                p,
                ch.size() / 1024,
                ch.data_off(),
                ch.max_payload()
            );
        }
        self.ring(p, VEC_DATA);
    }

    /// Closes our ring to `p` ("no ring" under a new epoch) and frees its space for later
    /// peers. Called with `rx` held, after the peer's connections were reset.
    pub(super) fn close_tx(&self, rx: &mut LinkRx, p: u32) {
        let Some(shm) = self.region.try_access() else {
            return;
        };
        let mut tx = self.tx.lock();
        let Some(chan) = tx.get_mut(p as usize) else {
            return;
        };
        if let Some(prod) = chan.prod.take() {
            ring::close_producer(&*shm, &prod.channel());
            rx.alloc.free(p);
        }
        chan.want = None;
        drop(tx);
        if let Some(s) = self.stats.get(p as usize) {
            s.tx_ring.store(0, Relaxed);
            s.max_payload.store(0, Relaxed);
        }
    }

    /// Marks `p` down and tells the core. Called with `rx` held, outside the region guard.
    pub(super) fn reset_peer(
        &self,
        t: &mut PeerTracking,
        p: u32,
        up: &impl Upcalls,
        cause: PeerLoss,
    ) {
        t.incarnation = None;
        if let Some(s) = self.stats.get(p as usize) {
            s.live.store(0, Relaxed);
            // Read again when a new generation comes up.
            s.features.store(0, Relaxed);
            bump(&s.resets, 1);
        }
        if let Some(chan) = self.tx.lock().get_mut(p as usize) {
            chan.want = None;
        }
        up.peer_reset(p, cause);
    }

    /// Whether `peer` is live now (never true for this guest itself).
    pub(crate) fn is_live(&self, peer: u32) -> bool {
        peer != self.local_id
            && self
                .stats
                .get(peer as usize)
                .is_some_and(|s| s.live.load(Relaxed) != 0)
    }

    /// Appends every non-absent peer, this guest included, to `out`.
    pub(crate) fn peers(&self, out: &mut KVec<PeerInfo>) -> Result {
        let now = self.now_ms();
        for p in 0..self.geo.max_peers {
            let snap = {
                let shm = self.region.try_access().ok_or(ENODEV)?;
                peer::snapshot(&*shm, &self.geo, p).ok()
            };
            let Some(snap) = snap else { continue };
            if snap.state == PeerState::Absent {
                continue;
            }
            let heartbeat_age_ms = if p == self.local_id {
                0
            } else {
                match self.stats.get(p as usize) {
                    Some(s) if s.live.load(Relaxed) != 0 => {
                        u32::try_from(now.saturating_sub(s.hb_seen_ms.load(Relaxed)))
                            .unwrap_or(u32::MAX)
                    }
                    _ => u32::MAX,
                }
            };
            out.push(
                PeerInfo {
                    id: p,
                    state: snap.state as u32,
                    generation: snap.gen,
                    heartbeat_age_ms,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(())
    }
}
