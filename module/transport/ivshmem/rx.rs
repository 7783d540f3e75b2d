// SPDX-License-Identifier: GPL-2.0

//! The receive side: one pass of the domain's rx work drains every inbound ring into the
//! bounce buffer and up to [`Upcalls::deliver`]; the doorbell IRQ and the plain poll's
//! re-arm delay.

use super::{
    bump, selftest_ok, Link, LinkRx, POLL_HOT_MS, POLL_MAX_US, RX_BUDGET, SELFTEST_PORT, VEC_SPACE,
};
use crate::{
    proto::{
        frame::{FrameHeader, Op},
        peer,
        ring::{RingError, SleepCheck},
    },
    transport::{PeerLoss, Upcalls},
};
use kernel::{
    prelude::*,
    sync::atomic::{Full, Relaxed},
    time::Delta,
};

impl Link {
    /// Called from the MSI-X handler of `vector` (hard IRQ context): counts the doorbell.
    /// Returns whether the caller is to queue the receive work, which drains the rings and
    /// serves waiting senders either way.
    pub(crate) fn doorbell_irq(&self, vector: u32) -> bool {
        if self.running.load(Relaxed) == 0 {
            return false;
        }
        bump(&self.doorbells_rx, 1);
        if let Some(c) = self.doorbells_rx_vec.get(vector as usize) {
            bump(c, 1);
        }
        if vector != VEC_SPACE {
            // Ordered before the work runs by the queueing.
            self.rx_pending.store(1, Relaxed);
        }
        true
    }

    /// One pass of the domain's rx work: drains every inbound ring (unless only
    /// [`VEC_SPACE`] doorbells asked for it) and serves waiting senders; reports to `up`.
    ///
    /// Returns `(more, activity)`: `more` when a ring still held frames after its budget,
    /// `activity` when anything was received or sent-space appeared.
    pub(crate) fn poll_rx(&self, up: &impl Upcalls) -> (bool, bool) {
        let drain = !self.doorbell || self.rx_pending.xchg(0, Full) != 0;
        if !drain {
            bump(&self.space_only_passes, 1);
        }
        self.poll(up, drain)
    }

    /// [`Link::poll_rx`], draining the rings if `drain`.
    pub(super) fn poll(&self, up: &impl Upcalls, drain: bool) -> (bool, bool) {
        if self.running.load(Relaxed) == 0 {
            return (false, false);
        }
        let mut more = false;
        let mut activity = false;
        {
            let mut rx = self.rx.lock();
            if rx.broken {
                return (false, false);
            }
            for p in 0..self.geo.max_peers {
                if p == self.local_id || !drain {
                    continue;
                }
                if let Some(s) = self.stats.get(p as usize) {
                    if s.tx_corrupt.load(Relaxed) != 0 {
                        s.tx_corrupt.store(0, Relaxed);
                        if let Some(t) = rx.peers.get_mut(p as usize) {
                            if t.incarnation.is_some() {
                                self.reset_peer(t, p, up, PeerLoss::RingCorrupt);
                            }
                        }
                    }
                }
                let (m, a) = self.drain_peer(&mut rx, p, up);
                more |= m;
                activity |= a;
            }
        }
        activity |= self.check_tx_waiters(up);
        (more, activity)
    }

    /// Takes up to [`RX_BUDGET`] frames from peer `p`'s ring.
    pub(super) fn drain_peer(&self, rx: &mut LinkRx, p: u32, up: &impl Upcalls) -> (bool, bool) {
        let i = p as usize;
        let present = rx.peers.get(i).is_some_and(|t| t.rx.is_some());
        if !present {
            return (false, false);
        }
        if rx.peers.get(i).is_some_and(|t| t.incarnation.is_none()) {
            self.refresh_peer(rx, p, false, up);
        }
        let mut activity = false;
        enum Step {
            Idle,
            Again,
            Frame(FrameHeader, usize, bool),
            Restarted,
            Corrupt(RingError),
        }
        let mut cancelled = false;
        for _ in 0..RX_BUDGET {
            let step = {
                let LinkRx { peers, buf, .. } = &mut *rx;
                let Some(t) = peers.get_mut(i) else {
                    return (false, activity);
                };
                let up_now = t.incarnation.is_some();
                let Some(c) = t.rx.as_mut() else {
                    return (false, activity);
                };
                let Some(shm) = self.region.try_access() else {
                    return (false, activity);
                };
                if self.doorbell && !cancelled {
                    c.cancel_sleep(&*shm);
                    cancelled = true;
                }
                match c.peek(&*shm) {
                    Ok(None) => {
                        if self.doorbell && c.prepare_sleep(&*shm) == SleepCheck::Pending {
                            Step::Again
                        } else {
                            Step::Idle
                        }
                    }
                    // Frames of a peer that is not up (joining, or declared dead) stay in
                    // the ring until it is up or re-opens it.
                    Ok(Some(_)) if !up_now => Step::Idle,
                    Ok(Some(f)) => {
                        let len = f.hdr.len as usize;
                        match buf.get_mut(..len) {
                            Some(dst) => {
                                c.read(&*shm, &f, 0, dst);
                                c.consume_deferred(&f);
                                let n = c.release_at_watermark(&*shm);
                                Step::Frame(f.hdr, len, n)
                            }
                            None => Step::Corrupt(RingError::TooBig),
                        }
                    }
                    Err(RingError::Restarted { .. }) => Step::Restarted,
                    Err(e) => Step::Corrupt(e),
                }
            };
            match step {
                Step::Idle => return (false, activity),
                Step::Again => {}
                Step::Frame(hdr, len, notify) => {
                    activity = true;
                    if notify {
                        self.ring(p, VEC_SPACE);
                    }
                    let payload = rx.buf.get(..len).unwrap_or(&[]);
                    if let Some(s) = self.stats.get(i) {
                        bump(&s.rx_frames, 1);
                        bump(&s.rx_bytes, len as u64);
                        if hdr.dst_port == SELFTEST_PORT && hdr.op == Op::Rw {
                            bump(&s.selftest_rx, 1);
                            if !selftest_ok(&hdr, payload) {
                                bump(&s.selftest_bad, 1);
                            }
                            continue;
                        }
                    }
                    up.deliver(p, &hdr, payload);
                }
                Step::Restarted => {
                    activity = true;
                    self.on_restarted(rx, p, false, up);
                }
                Step::Corrupt(e) => {
                    activity = true;
                    if let Some(s) = self.stats.get(i) {
                        bump(&s.drops, 1);
                    }
                    if self.log_ok(p) {
                        pr_warn!(
                            "vmcs{}: ring from peer {} is corrupt ({:?}), resync\n",
                            self.index,
                            p,
                            e
                        );
                    }
                    self.on_restarted(rx, p, true, up);
                    return (false, activity);
                }
            }
        }
        (true, activity)
    }

    /// The producer `p` re-opened its channel to us (new epoch): reset its connections if
    /// that ends an incarnation we had, then acknowledge the new epoch.
    pub(super) fn on_restarted(&self, rx: &mut LinkRx, p: u32, corrupt: bool, up: &impl Upcalls) {
        let snap = self
            .region
            .try_access()
            .and_then(|shm| peer::snapshot(&*shm, &self.geo, p).ok());
        let gen = snap.map(|s| s.gen);
        let Some(t) = rx.peers.get_mut(p as usize) else {
            return;
        };
        if let Some(g) = t.incarnation {
            if corrupt {
                self.reset_peer(t, p, up, PeerLoss::RingCorrupt);
            } else if Some(g) != gen {
                if self.log_ok(p) {
                    pr_info!(
                        "vmcs{}: peer {} restarted (generation {} -> {:?}), reset\n",
                        self.index,
                        p,
                        g,
                        gen
                    );
                }
                self.reset_peer(t, p, up, PeerLoss::Restarted);
            } else if t.acked_gen == Some(g) {
                if self.log_ok(p) {
                    pr_info!("vmcs{}: peer {} re-opened its ring, reset\n", self.index, p);
                }
                self.reset_peer(t, p, up, PeerLoss::Restarted);
            }
        }
        let notify = match (self.region.try_access(), t.rx.as_mut()) {
            (Some(shm), Some(c)) => c.resync(&*shm),
            _ => false,
        };
        let (open, bad, size) = t.rx.as_ref().map_or((false, None, 0), |c| {
            (c.is_open(), c.ring_error(), super::rx_ring_size(c))
        });
        // Only an epoch whose ring we accepted counts as opened in this generation.
        t.acked_gen = gen.filter(|_| open);
        if let Some(s) = self.stats.get(p as usize) {
            s.rx_ring.store(size, Relaxed);
        }
        if let Some(why) = bad {
            // The peer published a ring outside its transmit area, of a bad size or
            // alignment: nothing is read from it and the epoch is not acknowledged; the
            // peer's connections are reset, the next epoch is looked at afresh.
            if let Some(s) = self.stats.get(p as usize) {
                bump(&s.drops, 1);
                bump(&s.refused, 1);
            }
            if self.log_ok(p) {
                pr_warn!(
                    "vmcs{}: ring from peer {} refused ({:?}), reset\n",
                    self.index,
                    p,
                    why
                );
            }
            if t.incarnation.is_some() {
                self.reset_peer(t, p, up, PeerLoss::RingCorrupt);
            }
        }
        if corrupt || bad.is_some() {
            // The next live sample brings the incarnation back up with fresh state.
            t.incarnation = None;
        }
        if notify {
            self.ring(p, VEC_SPACE);
        }
    }

    /// The next delay of the receive work after a pass, `None` to leave it idle
    /// ([`Delta::ZERO`]: at once). The pass it schedules drains the rings.
    ///
    /// Plain: the owner waits this long with a high-resolution timer, so the interval is
    /// `Params::poll_us` while traffic moves (or for [`POLL_HOT_MS`] after it or a kick),
    /// then doubles per idle pass up to [`POLL_MAX_US`].
    pub(crate) fn rx_rearm_delay(&self, more: bool, activity: bool) -> Option<Delta> {
        let d = self.next_rx_delay(more, activity)?;
        self.rx_pending.store(1, Relaxed);
        Some(d)
    }

    pub(super) fn next_rx_delay(&self, more: bool, activity: bool) -> Option<Delta> {
        if more {
            return Some(Delta::ZERO);
        }
        if self.doorbell {
            return None;
        }
        let min = self.params.poll_us;
        let now = self.now_ms();
        if activity {
            self.active_ms.store(now, Relaxed);
        }
        let hot = now.saturating_sub(self.active_ms.load(Relaxed)) < POLL_HOT_MS;
        let d = if activity || hot {
            min
        } else {
            self.poll_delay
                .load(Relaxed)
                .saturating_mul(2)
                .clamp(min, POLL_MAX_US.max(min))
        };
        self.poll_delay.store(d, Relaxed);
        Some(Delta::from_micros(i64::from(d)))
    }
}
