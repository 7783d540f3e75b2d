// SPDX-License-Identifier: GPL-2.0

//! The transmit side: [`Link::send`] into the rings, doorbells to peers, the plain
//! variant's kick, and the senders waiting for ring space.

use super::{bump, Link, MAX_VECTORS, REG_DOORBELL, VEC_DATA, VEC_SPACE};
use crate::{
    glue::{SharedRegion, UserIter},
    proto::{
        frame::{flags, FrameHeader},
        peer::{self, PeerState},
        ring::{Producer, Reservation, RingError, SleepCheck},
    },
    transport::{SendError, TxPayload, Upcalls},
};
use kernel::{io::Io, prelude::*, sync::atomic::Relaxed};

impl Link {
    /// Whether every live peer has consumed all the frames we put in its ring.
    pub(crate) fn tx_drained(&self) -> bool {
        let mut tx = self.tx.lock();
        let Some(shm) = self.region.try_access() else {
            return true;
        };
        tx.iter_mut().enumerate().all(|(p, chan)| {
            let live = u32::try_from(p).is_ok_and(|p| self.is_live(p));
            match chan.prod.as_mut() {
                Some(prod) if live => prod.drained(&*shm),
                _ => true,
            }
        })
    }

    /// Queues one frame to `peer` without blocking and rings its doorbell if it sleeps.
    ///
    /// `hdr.len` is taken from `payload.len()`. Errors: `Invalid` (header does not validate
    /// or payload longer than [`Link::max_payload`]), `Unreachable` (peer not live, or its
    /// ring was found corrupt: a `peer_reset` follows from the worker), `Full` (no room now;
    /// `tx_space(peer)` follows when room appears, unless the peer is reset first),
    /// `Shutdown` (the domain is going away). Never sleeps; callable in atomic context.
    pub(crate) fn send(
        &self,
        up: &impl Upcalls,
        peer: u32,
        hdr: &FrameHeader,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.send_bytes(up, peer, hdr, payload, true)
    }

    /// [`Link::send`] without publishing the producer index: the frame is in the ring but
    /// the consumer sees it only with the next publish ([`Link::flush`], or any
    /// [`Link::send`] to the peer), so that a batch costs one index store, one fence and at
    /// most one doorbell. A full ring publishes what is committed before the sender waits.
    pub(crate) fn send_batched(
        &self,
        up: &impl Upcalls,
        peer: u32,
        hdr: &FrameHeader,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.send_bytes(up, peer, hdr, payload, false)
    }

    /// [`Link::send`] or [`Link::send_batched`] (`publish`) of kernel bytes.
    fn send_bytes(
        &self,
        up: &impl Upcalls,
        peer: u32,
        hdr: &FrameHeader,
        payload: &[u8],
        publish: bool,
    ) -> Result<(), SendError> {
        let len = u32::try_from(payload.len()).map_err(|_| SendError::Invalid)?;
        self.send_frame(
            up,
            peer,
            hdr,
            len,
            |shm, r| {
                r.walk(0, payload.len(), |off, i, n| {
                    if let Some(b) = payload.get(i..i + n) {
                        let _ = shm.write(off, b);
                    }
                }) as u32
            },
            publish,
        )
        .map(|_| ())
    }

    /// [`Link::send`] (`publish`) or [`Link::send_batched`] of a payload in pieces, copied
    /// straight into the reserved ring space (`Transport::send_payload`). A piece that
    /// cannot be copied sends nothing (`Invalid`).
    pub(crate) fn send_payload(
        &self,
        up: &impl Upcalls,
        peer: u32,
        hdr: &FrameHeader,
        payload: &dyn TxPayload,
        publish: bool,
    ) -> Result<(), SendError> {
        let len = u32::try_from(payload.len()).map_err(|_| SendError::Invalid)?;
        let sent = self.send_frame(
            up,
            peer,
            hdr,
            len,
            |shm, r| {
                let mut ok = true;
                r.walk(0, len as usize, |off, at, n| {
                    ok = ok && payload.copy_into(shm, off, at, n);
                });
                // All or nothing: a frame cut short would be a different frame.
                if ok {
                    len
                } else {
                    0
                }
            },
            publish,
        )?;
        if sent == len as usize {
            Ok(())
        } else {
            Err(SendError::Invalid)
        }
    }

    /// Ring bytes queued to `peer` that its consumer has not released (`Transport::tx_backlog`).
    pub(crate) fn tx_backlog(&self, peer: u32) -> u32 {
        let mut tx = self.tx.lock();
        let Some(shm) = self.region.try_access() else {
            return 0;
        };
        match tx.get_mut(peer as usize).and_then(|c| c.prod.as_mut()) {
            Some(prod) => prod.backlog(&*shm),
            None => 0,
        }
    }

    /// Publishes the frames [`Link::send_batched`] committed to `peer`, ringing its doorbell
    /// if it sleeps.
    pub(crate) fn flush(&self, peer: u32) {
        let notify = {
            let mut tx = self.tx.lock();
            let Some(shm) = self.region.try_access() else {
                return;
            };
            match tx.get_mut(peer as usize).and_then(|c| c.prod.as_mut()) {
                Some(prod) if prod.unpublished() => {
                    let n = prod.publish(&*shm);
                    self.count_suppressed(peer, prod);
                    n
                }
                _ => false,
            }
        };
        if notify {
            self.ring(peer, VEC_DATA);
        }
    }

    /// Adds the doorbells `prod`'s token check saved to `peer`'s counters.
    fn count_suppressed(&self, peer: u32, prod: &mut Producer) {
        let saved = prod.take_suppressed();
        if saved != 0 {
            if let Some(s) = self.stats.get(peer as usize) {
                bump(&s.doorbells_suppressed, u64::from(saved));
            }
        }
    }

    /// Queues one frame to `peer` whose payload, the next `hdr.len` bytes of `src`, is
    /// copied from user memory straight into the reserved ring space, with page faults
    /// disabled, under the tx spinlock (`Transport::send_user`). A copy cut short at a page
    /// that is not present commits a frame of the bytes copied, without `EOM`, or nothing
    /// for none: the reservation is only local until the commit, so the ring never holds a
    /// half-written or unpublished record. Returns the bytes sent; errors as [`Link::send`].
    pub(crate) fn send_user(
        &self,
        up: &impl Upcalls,
        peer: u32,
        hdr: &FrameHeader,
        src: &mut UserIter<'_>,
    ) -> Result<usize, SendError> {
        let want = hdr.len;
        let sent = self.send_frame(
            up,
            peer,
            hdr,
            want,
            |shm, r| {
                let mut got = 0usize;
                for seg in r.segments() {
                    if seg.len == 0 {
                        continue;
                    }
                    let n = shm.fill_from_user(seg.off, seg.len, src);
                    got += n;
                    if n < seg.len {
                        break;
                    }
                }
                // At most the reserved length, a u32.
                got as u32
            },
            true,
        )?;
        if let Some(s) = self.stats.get(peer as usize) {
            bump(&s.tx_user_bytes, sent as u64);
            if sent < want as usize {
                bump(&s.tx_short, 1);
            }
        }
        Ok(sent)
    }

    /// Reserves room for a frame of `len` payload bytes to `peer`, lets `fill` copy the
    /// payload into the reservation (it returns the bytes it copied, from the start), and
    /// commits what it copied: the frame shrinks to that (without `EOM`), and a frame whose
    /// payload got nothing is not sent. With `publish` the producer index is published at
    /// once (and the doorbell rung if the peer sleeps); without, the frame waits for the
    /// next publish ([`Link::flush`]). Returns the payload bytes sent.
    fn send_frame(
        &self,
        up: &impl Upcalls,
        peer: u32,
        hdr: &FrameHeader,
        len: u32,
        fill: impl FnOnce(&SharedRegion, &Reservation) -> u32,
        publish: bool,
    ) -> Result<usize, SendError> {
        if self.running.load(Relaxed) == 0 {
            return Err(SendError::Shutdown);
        }
        let mut h = *hdr;
        h.len = len;
        if len > self.max_payload(peer) || h.validate().is_err() {
            return Err(SendError::Invalid);
        }
        if !self.is_live(peer) {
            return Err(SendError::Unreachable);
        }
        let mut corrupt = false;
        let mut full = false;
        let (notify, sent, committed) = {
            let mut tx = self.tx.lock();
            let chan = tx.get_mut(peer as usize).ok_or(SendError::Unreachable)?;
            let shm = self.region.try_access().ok_or(SendError::Shutdown)?;
            let prod = chan.prod.as_mut().ok_or(SendError::Unreachable)?;
            let mut flushed = false;
            let reserved = match prod.reserve(&*shm, &h) {
                Ok(r) => Some(r),
                Err(RingError::Full | RingError::NotReady) => {
                    // The consumer cannot free space it has not seen: publish the batch
                    // before waiting.
                    flushed = prod.unpublished() && prod.publish(&*shm);
                    match prod.prepare_wait(&*shm, len) {
                        Ok(SleepCheck::Pending) => match prod.reserve(&*shm, &h) {
                            Ok(r) => Some(r),
                            Err(_) => {
                                full = true;
                                None
                            }
                        },
                        Ok(SleepCheck::MaySleep) => {
                            full = true;
                            None
                        }
                        Err(_) => {
                            corrupt = true;
                            None
                        }
                    }
                }
                Err(RingError::TooBig) => return Err(SendError::Invalid),
                Err(_) => {
                    corrupt = true;
                    None
                }
            };
            let mut out = (flushed, 0, false);
            if let Some(mut r) = reserved {
                let got = fill(&shm, &r).min(len);
                if got < len {
                    r.truncate(got);
                    r.clear_flags(flags::EOM);
                }
                // Nothing copied: the reservation is dropped, nothing was written where
                // the consumer looks.
                if got > 0 || len == 0 {
                    let rung = if publish {
                        prod.commit(&*shm, r)
                    } else {
                        prod.commit_deferred(&*shm, r);
                        false
                    };
                    out = (flushed || rung, got, true);
                }
            }
            if full {
                chan.want = Some(len);
            }
            self.count_suppressed(peer, prod);
            out
        };
        if notify {
            self.ring(peer, VEC_DATA);
        }
        if full {
            return Err(SendError::Full);
        }
        if corrupt {
            // The consumer's index on this channel is invalid: re-open it with a new epoch
            // and have the worker reset the peer's connections.
            {
                let mut tx = self.tx.lock();
                if let (Some(chan), Some(shm)) =
                    (tx.get_mut(peer as usize), self.region.try_access())
                {
                    if let Some(prod) = chan.prod.as_mut() {
                        *prod = Producer::open(&*shm, prod.channel()).0;
                    }
                    chan.want = None;
                }
            }
            if let Some(s) = self.stats.get(peer as usize) {
                s.tx_corrupt.store(1, Relaxed);
            }
            if self.log_ok(peer) {
                pr_warn!(
                    "vmcs{}: ring to peer {} is corrupt, re-opened\n",
                    self.index,
                    peer
                );
            }
            self.ring(peer, VEC_DATA);
            self.request_rx(up, false);
            return Err(SendError::Unreachable);
        }
        if !committed {
            return Ok(0);
        }
        if let Some(s) = self.stats.get(peer as usize) {
            bump(&s.tx_frames, 1);
            bump(&s.tx_bytes, u64::from(sent));
        }
        Ok(sent as usize)
    }

    /// Rings `peer`'s doorbell on `vector` (doorbell variant only): [`VEC_SPACE`] only if the
    /// peer advertised that it handles it, [`VEC_DATA`] otherwise.
    pub(super) fn ring(&self, peer: u32, vector: u32) {
        let Some(regs) = self.regs.as_ref() else {
            return;
        };
        if peer >= self.geo.max_peers || peer == self.local_id {
            return;
        }
        let Some(s) = self.stats.get(peer as usize) else {
            return;
        };
        let vector = if vector == VEC_SPACE && s.vectors.load(Relaxed) >= MAX_VECTORS {
            VEC_SPACE
        } else {
            VEC_DATA
        };
        if let Some(bar) = regs.try_access() {
            bar.write32((peer << 16) | vector, REG_DOORBELL);
            if let Some(s) = self.stats.get(peer as usize) {
                bump(&s.doorbells_tx, 1);
            }
        }
    }

    /// Rings every peer whose slot is present, so that it notices our new epochs.
    pub(super) fn ring_live_peers(&self) {
        let mut mask = 0u64;
        if let Some(shm) = self.region.try_access() {
            for p in 0..self.geo.max_peers {
                if p == self.local_id {
                    continue;
                }
                if let Ok(s) = peer::snapshot(&*shm, &self.geo, p) {
                    if matches!(s.state, PeerState::Live | PeerState::Joining) {
                        mask |= 1 << p;
                    }
                }
            }
        }
        for p in 0..self.geo.max_peers {
            if mask & (1 << p) != 0 {
                self.ring(p, VEC_DATA);
            }
        }
    }

    /// Tells the transport that the core expects traffic soon (plain: poll fast from now).
    pub(crate) fn kick(&self, up: &impl Upcalls) {
        if self.doorbell {
            return;
        }
        self.poll_delay.store(self.params.poll_us, Relaxed);
        self.active_ms.store(self.now_ms(), Relaxed);
        self.request_rx(up, true);
    }

    /// Asks the owner for a receive pass that drains the rings (`now`: at once, even if one
    /// is scheduled for later).
    pub(super) fn request_rx(&self, up: &impl Upcalls, now: bool) {
        self.rx_pending.store(1, Relaxed);
        up.wake_rx(now);
    }

    /// Reports `tx_space` for every channel whose sender waits and that has room now.
    pub(super) fn check_tx_waiters(&self, up: &impl Upcalls) -> bool {
        let mut ready = 0u64;
        let mut corrupt = false;
        {
            let mut tx = self.tx.lock();
            let Some(shm) = self.region.try_access() else {
                return false;
            };
            for (p, chan) in tx.iter_mut().enumerate() {
                let Some(len) = chan.want else { continue };
                let Some(prod) = chan.prod.as_mut() else {
                    continue;
                };
                match prod.prepare_wait(&*shm, len) {
                    Ok(SleepCheck::Pending) => {
                        chan.want = None;
                        ready |= 1 << p;
                    }
                    Ok(SleepCheck::MaySleep) => {}
                    Err(_) => {
                        // Corrupt consumer index: re-open; the worker resets the peer.
                        *prod = Producer::open(&*shm, prod.channel()).0;
                        chan.want = None;
                        corrupt = true;
                        if let Some(s) = self.stats.get(p) {
                            s.tx_corrupt.store(1, Relaxed);
                        }
                    }
                }
            }
        }
        if corrupt {
            // The reset is done by a draining pass.
            self.request_rx(up, false);
        }
        for p in 0..self.geo.max_peers {
            if ready & (1 << p) != 0 {
                up.tx_space(p);
            }
        }
        ready != 0
    }
}
