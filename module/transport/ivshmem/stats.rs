// SPDX-License-Identifier: GPL-2.0

//! Per-peer counters, the per-peer log rate limit, and the debugfs `peers` and `rings`
//! files.

use super::{Link, LOG_BURST, LOG_WINDOW_MS};
use crate::{
    proto::{ring::ctrl, shm::Shm},
    transport::held::HeldRing,
};
use core::fmt;
use kernel::{
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

/// Counters of one peer, for debugfs.
pub(super) struct PeerStats {
    pub(super) tx_frames: Atomic<u64>,
    pub(super) tx_bytes: Atomic<u64>,
    pub(super) rx_frames: Atomic<u64>,
    pub(super) rx_bytes: Atomic<u64>,
    /// Payload bytes copied straight from user memory into the ring (`send_user`).
    pub(super) tx_user_bytes: Atomic<u64>,
    /// `send_user` copies cut short by a user page that was not present.
    pub(super) tx_short: Atomic<u64>,
    /// `RW` payload bytes handed up in the ring, for the core to copy straight out.
    pub(super) rx_ring_bytes: Atomic<u64>,
    pub(super) doorbells_tx: Atomic<u64>,
    /// Doorbells to this peer that its sleep or wait token saved: the flag asked for one,
    /// but we had rung for that very sleep already (docs/protocol.md §5.2).
    pub(super) doorbells_suppressed: Atomic<u64>,
    pub(super) resets: Atomic<u64>,
    pub(super) selftest_rx: Atomic<u64>,
    pub(super) selftest_bad: Atomic<u64>,
    /// Times the ring from this peer was found corrupt and resynchronised; whatever it
    /// held unread was dropped.
    pub(super) drops: Atomic<u64>,
    /// Rings this peer published that we refused (outside its transmit area, bad size or
    /// alignment); each also counts as a drop.
    pub(super) refused: Atomic<u64>,
    /// Milliseconds since the link started at which the heartbeat last moved.
    pub(super) hb_seen_ms: Atomic<u64>,
    /// Doorbell vectors the peer advertised when it came up.
    pub(super) vectors: Atomic<u32>,
    /// Feature word (`proto::peer::FEAT_*`) the peer advertised when it came up.
    pub(super) features: Atomic<u32>,
    /// Live (1) or not (0): what `is_live` reports.
    pub(super) live: Atomic<u32>,
    /// Largest payload of one frame on our ring to this peer, 0 while none is open.
    pub(super) max_payload: Atomic<u32>,
    /// Size of our ring to this peer, 0 while none is open.
    pub(super) tx_ring: Atomic<u32>,
    /// Size of the peer's ring to us that we accepted, 0 while none.
    pub(super) rx_ring: Atomic<u32>,
    /// `send` found the ring to this peer corrupt; the worker owes the core a reset.
    pub(super) tx_corrupt: Atomic<u32>,
    /// Log rate limit ([`LOG_BURST`]): start of the current window, lines logged in it, and
    /// lines suppressed since the last summary. Updated without atomicity across fields: a
    /// race only makes the counts approximate.
    pub(super) log_at_ms: Atomic<u64>,
    pub(super) log_lines: Atomic<u32>,
    pub(super) log_dropped: Atomic<u64>,
}

impl PeerStats {
    pub(super) fn new() -> Self {
        Self {
            tx_frames: Atomic::new(0),
            tx_bytes: Atomic::new(0),
            rx_frames: Atomic::new(0),
            rx_bytes: Atomic::new(0),
            tx_user_bytes: Atomic::new(0),
            tx_short: Atomic::new(0),
            rx_ring_bytes: Atomic::new(0),
            doorbells_tx: Atomic::new(0),
            doorbells_suppressed: Atomic::new(0),
            resets: Atomic::new(0),
            selftest_rx: Atomic::new(0),
            selftest_bad: Atomic::new(0),
            drops: Atomic::new(0),
            refused: Atomic::new(0),
            hb_seen_ms: Atomic::new(0),
            vectors: Atomic::new(0),
            features: Atomic::new(0),
            live: Atomic::new(0),
            max_payload: Atomic::new(0),
            tx_ring: Atomic::new(0),
            rx_ring: Atomic::new(0),
            tx_corrupt: Atomic::new(0),
            log_at_ms: Atomic::new(0),
            log_lines: Atomic::new(0),
            log_dropped: Atomic::new(0),
        }
    }
}

pub(super) fn bump(a: &Atomic<u64>, n: u64) {
    a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Link {
    /// Whether an event of peer `p` may be logged now ([`LOG_BURST`]); counts it otherwise.
    pub(super) fn log_ok(&self, p: u32) -> bool {
        let Some(s) = self.stats.get(p as usize) else {
            return false;
        };
        self.log_window(p);
        let n = s.log_lines.load(Relaxed);
        if n < LOG_BURST {
            s.log_lines.store(n + 1, Relaxed);
            true
        } else {
            bump(&s.log_dropped, 1);
            false
        }
    }

    /// Opens a new log window for peer `p` once the current one has passed, and reports how
    /// many lines the rate limit suppressed.
    pub(super) fn log_window(&self, p: u32) {
        let Some(s) = self.stats.get(p as usize) else {
            return;
        };
        let now = self.now_ms();
        if now.saturating_sub(s.log_at_ms.load(Relaxed)) < LOG_WINDOW_MS {
            return;
        }
        s.log_at_ms.store(now, Relaxed);
        s.log_lines.store(0, Relaxed);
        let dropped = s.log_dropped.load(Relaxed);
        if dropped != 0 {
            s.log_dropped.store(0, Relaxed);
            pr_warn!(
                "vmcs{}: peer {}: {} more events not logged (rate limit: {} lines per {} s)\n",
                self.index,
                p,
                dropped,
                LOG_BURST,
                LOG_WINDOW_MS / 1000
            );
        }
    }

    /// debugfs `peers`.
    pub(crate) fn show_peers(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = KVec::new();
        if self.peers(&mut v).is_err() {
            return writeln!(f, "unbound");
        }
        writeln!(f, "id state generation heartbeat_age_ms")?;
        for p in v.iter() {
            let state = match p.state {
                1 => "joining",
                2 => "live",
                3 => "leaving",
                _ => "absent",
            };
            let me = if p.id == self.local_id { " self" } else { "" };
            let alive = if p.id != self.local_id && !self.is_live(p.id) {
                " down"
            } else {
                ""
            };
            writeln!(
                f,
                "{} {} {} {}{}{}",
                p.id, state, p.generation, p.heartbeat_age_ms, me, alive
            )?;
        }
        Ok(())
    }

    /// debugfs `rings`.
    pub(crate) fn show_rings(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = |c: fn(&PeerStats) -> &Atomic<u64>| {
            self.stats
                .iter()
                .map(|s| c(s).load(Relaxed))
                .fold(0u64, u64::wrapping_add)
        };
        writeln!(
            f,
            "local {} area_size {} doorbells_rx {} vectors {} \
             doorbells_rx_vec0 {} doorbells_rx_vec1 {} space_only_passes {} \
             doorbells_tx {} doorbells_suppressed {} tx_bytes {} rx_bytes {}",
            self.local_id,
            self.geo.area_size,
            self.doorbells_rx.load(Relaxed),
            self.vectors.load(Relaxed),
            self.doorbells_rx_vec[0].load(Relaxed),
            self.doorbells_rx_vec[1].load(Relaxed),
            self.space_only_passes.load(Relaxed),
            total(|s| &s.doorbells_tx),
            total(|s| &s.doorbells_suppressed),
            total(|s| &s.tx_bytes),
            total(|s| &s.rx_bytes)
        )?;
        for p in 0..self.geo.max_peers {
            let Some(s) = self.stats.get(p as usize) else {
                continue;
            };
            if p == self.local_id
                || (s.live.load(Relaxed) == 0
                    && s.tx_frames.load(Relaxed) == 0
                    && s.rx_frames.load(Relaxed) == 0
                    && s.resets.load(Relaxed) == 0)
            {
                continue;
            }
            let idx = |from, to, field| {
                self.geo.chan_ctrl_off(from, to).and_then(|o| {
                    self.region
                        .try_access()
                        .map(|shm| shm.load_u32_relaxed(o + field))
                })
            };
            let h = self.held.get(p as usize).and_then(Option::as_ref);
            let held = |c: fn(&HeldRing) -> &Atomic<u64>| h.map_or(0, |h| c(h).load(Relaxed));
            let txp = idx(self.local_id, p, ctrl::PROD_IDX).unwrap_or(0);
            let txc = idx(self.local_id, p, ctrl::CONS_IDX).unwrap_or(0);
            let rxp = idx(p, self.local_id, ctrl::PROD_IDX).unwrap_or(0);
            let rxc = idx(p, self.local_id, ctrl::CONS_IDX).unwrap_or(0);
            writeln!(
                f,
                "peer {} live {} tx_ring {} rx_ring {} max_payload {} \
                 tx prod {} cons {} frames {} bytes {} doorbells {} \
                 rx prod {} cons {} frames {} bytes {} drops {} refused {} resets {} selftest_rx {} \
                 selftest_bad {} tx_user_bytes {} tx_short {} rx_ring_bytes {} \
                 doorbells_suppressed {} rx_held_frames {} rx_held_bytes {} rx_copied_out {} \
                 rx_held_forced {}",
                p,
                s.live.load(Relaxed),
                s.tx_ring.load(Relaxed),
                s.rx_ring.load(Relaxed),
                s.max_payload.load(Relaxed),
                txp,
                txc,
                s.tx_frames.load(Relaxed),
                s.tx_bytes.load(Relaxed),
                s.doorbells_tx.load(Relaxed),
                rxp,
                rxc,
                s.rx_frames.load(Relaxed),
                s.rx_bytes.load(Relaxed),
                s.drops.load(Relaxed),
                s.refused.load(Relaxed),
                s.resets.load(Relaxed),
                s.selftest_rx.load(Relaxed),
                s.selftest_bad.load(Relaxed),
                s.tx_user_bytes.load(Relaxed),
                s.tx_short.load(Relaxed),
                s.rx_ring_bytes.load(Relaxed),
                s.doorbells_suppressed.load(Relaxed),
                held(|h| &h.held_frames),
                held(|h| &h.held_bytes),
                held(|h| &h.copied_out),
                held(|h| &h.forced)
            )?;
        }
        Ok(())
    }
}
