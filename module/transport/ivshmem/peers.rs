// SPDX-License-Identifier: GPL-2.0

//! Peers and liveness: the heartbeat tick samples every slot and applies the liveness
//! rules (up, restarted, left, heartbeat timeout); a reset is reported up once per
//! incarnation.

use super::{bump, Link, LinkRx, PeerTracking};
use crate::{
    proto::peer::{self, PeerState},
    transport::{PeerInfo, PeerLoss, Upcalls},
};
use kernel::{prelude::*, sync::atomic::Relaxed};

impl Link {
    /// The heartbeat tick: beat, sample every slot, drain. Called by the domain's tick work.
    pub(crate) fn tick(&self, up: &impl Upcalls) {
        if self.running.load(Relaxed) == 0 {
            return;
        }
        {
            let mut rx = self.rx.lock();
            if rx.broken {
                return;
            }
            let beat = {
                let Some(shm) = self.region.try_access() else {
                    return;
                };
                peer::heartbeat(&*shm, &self.geo, &mut rx.me)
            };
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
        match snap.state {
            PeerState::Live => {
                if t.dead_gen == Some(snap.gen) {
                    return;
                }
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
                        let v = self
                            .region
                            .try_access()
                            .and_then(|shm| peer::vectors(&*shm, &self.geo, p).ok());
                        s.vectors.store(v.unwrap_or(0), Relaxed);
                    }
                    if self.log_ok(p) {
                        pr_info!("vmcs{}: peer {} up (generation {})\n", idx, p, snap.gen);
                    }
                }
            }
            PeerState::Joining => {
                t.dead_gen = None;
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
            }
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
