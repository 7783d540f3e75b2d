// SPDX-License-Identifier: GPL-2.0

//! The receive side: one pass of the domain's rx work drains every inbound ring up to
//! [`Upcalls::deliver`] (`RW` and `ETH` payloads straight out of the ring, [`RingPayload`];
//! the few bytes of other frames through the bounce buffer); the doorbell IRQ and the plain poll's
//! re-arm delay.

use super::{
    bump, open_channel, selftest_ok, Link, LinkRx, PeerTracking, HOLD_MAX_MS, HOLD_MIN,
    HOLD_SPAN_MS, POLL_HOT_MS, POLL_MAX_US, RX_BUDGET, SELFTEST_PORT, VEC_SPACE,
};
use crate::{
    glue::SharedRegion,
    proto::{
        frame::{FrameHeader, Op},
        peer,
        ring::{RingError, RxFrame, SleepCheck},
    },
    transport::{
        held::{HeldRef, HeldRing, HELD_MAX},
        PeerLoss, RxPayload, Upcalls,
    },
};
use core::{cell::Cell, mem::MaybeUninit};
use kernel::{
    prelude::*,
    revocable::Revocable,
    sync::{
        atomic::{Full, Relaxed},
        Arc,
    },
    time::Delta,
};

/// The payload of an `RW` or `ETH` frame still in the ring, for [`Upcalls::deliver`]: the
/// core (the net device) copies it once, straight into its receive queue (the skb), before
/// the rx pass releases the slot. The
/// header was read once and validated (`Consumer::peek`); the payload bytes are read as
/// they are, so a peer that changes them meanwhile changes only what its reader receives.
struct RingPayload<'a> {
    region: &'a Revocable<SharedRegion>,
    frame: &'a RxFrame,
    /// The ring's held frames, when this frame may be held by reference (`hold`).
    held: Option<&'a Arc<HeldRing>>,
    now_ms: u64,
    /// Set once `hold` handed out a reference: the release stops at this frame.
    taken: Cell<bool>,
}

impl RxPayload for RingPayload<'_> {
    fn len(&self) -> usize {
        self.frame.hdr.len as usize
    }

    fn bytes(&self) -> Option<&[u8]> {
        None
    }

    fn copy_to(&self, dst: &mut [MaybeUninit<u8>]) -> usize {
        if dst.len() > self.len() {
            return 0;
        }
        // The RCU guard is held for the copy only: the region cannot be unmapped under it.
        let Some(shm) = self.region.try_access() else {
            return 0;
        };
        let mut ok = true;
        let n = self.frame.walk(0, dst.len(), |off, at, n| {
            let copied = dst
                .get_mut(at..at + n)
                .map_or(0, |d| shm.read_uninit(off, d));
            if copied != n {
                ok = false;
            }
        });
        if ok {
            n
        } else {
            0
        }
    }

    fn hold(&self) -> Option<HeldRef> {
        let h = self.held?;
        let hdr = &self.frame.hdr;
        if self.taken.get() || hdr.len < HOLD_MIN {
            return None;
        }
        let r = h.admit(
            self.frame.pos(),
            self.frame.rec(),
            hdr.len,
            self.now_ms,
            (hdr.dst_port, hdr.src_port),
        )?;
        self.taken.set(true);
        Some(r)
    }
}

/// Points `t`'s consumer's pin at the oldest frame its ring still holds by reference.
fn sync_pin(t: &mut PeerTracking) {
    if let (Some(c), Some(h)) = (t.rx.as_mut(), t.held.as_ref()) {
        c.set_pin(h.pin());
    }
}

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

    /// Takes up to [`RX_BUDGET`] frames from peer `p`'s ring, then releases what it took
    /// that is not released yet: one consumer-index release per pass, or per quarter ring
    /// consumed within it (`Consumer::release_batched`).
    pub(super) fn drain_peer(&self, rx: &mut LinkRx, p: u32, up: &impl Upcalls) -> (bool, bool) {
        self.drain_peer_armed(rx, p, up, true)
    }

    /// [`Self::drain_peer`]; `arm`: on doorbell, set `cons_need_wakeup` (fresh token, fence,
    /// re-check) when the ring is empty; without it the flag stays clear (a busy poller is
    /// awake and looks again).
    fn drain_peer_armed(
        &self,
        rx: &mut LinkRx,
        p: u32,
        up: &impl Upcalls,
        arm: bool,
    ) -> (bool, bool) {
        let r = self.drain_peer_frames(rx, p, up, arm);
        self.copy_out_slow(rx, p, up);
        self.flush_release(rx, p);
        r
    }

    /// Copies out the held frames of slow readers on peer `p`'s ring: while the oldest
    /// frame still held is older than [`HOLD_MAX_MS`], or pins more than half the ring and
    /// is older than [`HOLD_SPAN_MS`], its connection copies everything it holds into its
    /// receive queue (`Upcalls::copy_out`); a frame nobody copied out then is dropped
    /// (`forced`), so that one reader never holds the ring for the other connections.
    fn copy_out_slow(&self, rx: &mut LinkRx, p: u32, up: &impl Upcalls) {
        let now = self.now_ms();
        for _ in 0..HELD_MAX {
            let Some(t) = rx.peers.get(p as usize) else {
                return;
            };
            let (Some(c), Some(h)) = (t.rx.as_ref(), t.held.as_ref()) else {
                return;
            };
            let Some(o) = h.oldest() else {
                return;
            };
            let age = now.saturating_sub(o.at_ms);
            let span = c.cursor().wrapping_sub(o.pos);
            let slow = age >= HOLD_MAX_MS || (span > c.channel().size() / 2 && age >= HOLD_SPAN_MS);
            if !slow {
                return;
            }
            let h = h.clone();
            up.copy_out(p, o.ports);
            if h.oldest().is_some_and(|n| n.seq == o.seq) {
                h.force(o.seq);
            } else {
                bump(&h.copied_out, 1);
            }
        }
    }

    /// A reader dropped held frames (`Transport::release_held`): move the pins and release,
    /// here if no receive pass runs, else in the receive work.
    pub(crate) fn release_held(&self, up: &impl Upcalls) {
        if self.running.load(Relaxed) == 0 {
            return;
        }
        let Some(mut rx) = self.rx.try_lock() else {
            self.request_rx(up, false);
            return;
        };
        for p in 0..self.geo.max_peers {
            let due = rx
                .peers
                .get(p as usize)
                .and_then(|t| t.held.as_ref())
                .is_some_and(|h| h.take_release_due());
            if due {
                // A fast reader behind a slow one on the ring: the slow one's frames may
                // be due for their copy-out now.
                self.copy_out_slow(&mut rx, p, up);
                self.flush_release(&mut rx, p);
            }
        }
    }

    /// Busy polling (`Transport::busy_poll`): one pass over every inbound ring in the
    /// caller's context if no pass runs now (never waits for the receive lock). Without
    /// `last` the data doorbells stay unarmed; with it they are armed as by the receive
    /// work, which is queued instead if another pass holds the lock.
    pub(crate) fn busy_poll(&self, up: &impl Upcalls, last: bool) -> bool {
        if self.running.load(Relaxed) == 0 {
            return false;
        }
        let Some(mut rx) = self.rx.try_lock() else {
            if last {
                self.request_rx(up, false);
            }
            return false;
        };
        if rx.broken {
            return false;
        }
        for p in 0..self.geo.max_peers {
            if p != self.local_id {
                self.drain_peer_armed(&mut rx, p, up, last);
            }
        }
        drop(rx);
        if last {
            self.check_tx_waiters(up);
        }
        true
    }

    /// Releases what the consumer of peer `p`'s ring consumed and has not released yet,
    /// ringing the producer if it waits (at the watermark); counts the doorbells the wait
    /// token saved.
    fn flush_release(&self, rx: &mut LinkRx, p: u32) {
        let Some(t) = rx.peers.get_mut(p as usize) else {
            return;
        };
        sync_pin(t);
        let Some(c) = t.rx.as_mut() else {
            return;
        };
        let notify = match self.region.try_access() {
            Some(shm) if c.unreleased() != 0 => c.release_at_watermark(&*shm),
            _ => false,
        };
        let saved = c.take_suppressed();
        if let Some(s) = self.stats.get(p as usize) {
            bump(&s.doorbells_suppressed, u64::from(saved));
        }
        if notify {
            self.ring(p, VEC_SPACE);
        }
    }

    /// [`Self::drain_peer_armed`] without the final release.
    fn drain_peer_frames(
        &self,
        rx: &mut LinkRx,
        p: u32,
        up: &impl Upcalls,
        arm: bool,
    ) -> (bool, bool) {
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
            /// An `RW` frame left in the ring for the core to copy straight out of.
            InRing(RxFrame),
            Restarted,
            Corrupt(RingError),
        }
        let mut cancelled = false;
        for _ in 0..RX_BUDGET {
            self.beat_if_due();
            let step = {
                let LinkRx { peers, buf, .. } = &mut *rx;
                let Some(t) = peers.get_mut(i) else {
                    return (false, activity);
                };
                sync_pin(t);
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
                        if self.doorbell && arm && c.prepare_sleep(&*shm) == SleepCheck::Pending {
                            Step::Again
                        } else {
                            Step::Idle
                        }
                    }
                    // Frames of a peer that is not up (joining, or declared dead) stay in
                    // the ring until it is up or re-opens it.
                    Ok(Some(_)) if !up_now => Step::Idle,
                    Ok(Some(f))
                        if (f.hdr.op == Op::Rw && f.hdr.dst_port != SELFTEST_PORT)
                            || f.hdr.op == Op::Eth =>
                    {
                        Step::InRing(f)
                    }
                    Ok(Some(f)) => {
                        let len = f.hdr.len as usize;
                        match buf.get_mut(..len) {
                            Some(dst) => {
                                c.read(&*shm, &f, 0, dst);
                                c.consume_deferred(&f);
                                let n = c.release_batched(&*shm);
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
                    up.deliver(p, &hdr, &payload);
                }
                Step::InRing(f) => {
                    activity = true;
                    let len = f.hdr.len as usize;
                    if let Some(s) = self.stats.get(i) {
                        bump(&s.rx_frames, 1);
                        bump(&s.rx_bytes, len as u64);
                        bump(&s.rx_ring_bytes, len as u64);
                    }
                    // The core copies the payload once, from the ring into its receive
                    // queue, during the upcall; the slot is released after it. The rx
                    // mutex keeps the consumer where it is meanwhile.
                    // `RW` payloads may stay in the ring by reference (`hold`); the
                    // release then stops at the oldest frame still held.
                    let held = rx
                        .peers
                        .get(i)
                        .and_then(|t| t.held.clone())
                        .filter(|_| f.hdr.op == Op::Rw);
                    let payload = RingPayload {
                        region: &self.region,
                        frame: &f,
                        held: held.as_ref(),
                        now_ms: self.now_ms(),
                        taken: Cell::new(false),
                    };
                    up.deliver(p, &f.hdr, &payload);
                    let notify = match (rx.peers.get_mut(i), self.region.try_access()) {
                        (Some(t), Some(shm)) => {
                            sync_pin(t);
                            match t.rx.as_mut() {
                                Some(c) => c.consume_deferred(&f) && c.release_at_watermark(&*shm),
                                None => false,
                            }
                        }
                        _ => false,
                    };
                    if notify {
                        self.ring(p, VEC_SPACE);
                    }
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
        // Every frame held in the old ring dies with it (the peer's connections were reset
        // above; a reference still out reads nothing any more).
        if let Some(h) = t.held.as_ref() {
            h.reset(None);
        }
        let notify = match (self.region.try_access(), t.rx.as_mut()) {
            (Some(shm), Some(c)) => c.resync(&*shm),
            _ => false,
        };
        if let (Some(h), Some(c)) = (t.held.as_ref(), t.rx.as_ref()) {
            h.reset(open_channel(c));
        }
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
