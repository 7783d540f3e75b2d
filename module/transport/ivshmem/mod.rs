// SPDX-License-Identifier: GPL-2.0

//! The ivshmem transport: peer membership in the region, one SPSC ring per ordered pair of
//! peers, doorbells (MSI-X on `ivshmem-doorbell`) or an adaptive poll (`ivshmem-plain`).
//!
//! # Shape
//!
//! - [`attach_and_join`] (probe, before the domain exists) attaches to the region
//!   (`proto::layout::attach`: the first peer initialises it, late joiners validate it) and
//!   takes a peer slot (`JOINING`): IVPosition on doorbell, `claim_id` on plain.
//! - [`Link::new`] attaches our consumer to every other slot's channel to us (the ring is
//!   the one its producer publishes, validated at every resync) and opens a producer, with a
//!   ring carved from our transmit area, towards every peer already present;
//!   [`Link::start`] publishes `LIVE` and rings every live peer; the domain then arms its
//!   works. A peer that appears later gets its ring when the tick first sees it, and loses
//!   it (the space is freed for later peers) when it leaves or times out (`peers.rs`).
//! - The domain's *tick* (a delayed work, every `hb_period_ms`) beats our heartbeat, samples
//!   every slot (generation, state, heartbeat) and drains the rings. The domain's *rx* work
//!   drains the rings; on doorbell it is queued by the MSI-X handler, on plain it re-arms
//!   itself adaptively.
//! - [`Link::stop`] and [`Link::leave`] tear it down in the order described in
//!   docs/architecture.md.
//!
//! # Locks
//!
//! `rx` (mutex, worker only) → `tx` (spinlock with bottom halves off, also taken by
//! [`Link::send`], which the net device calls in softirq context) → RCU (the region
//! guard, held only around shared-memory accesses, never across an upcall). Upcalls run with
//! `rx` held and nothing else, except `wake_rx`, which may also come from [`Link::send`].
//!
//! The link holds no reference to its domain: whenever it wants a receive pass it asks
//! through [`Upcalls::wake_rx`], and the domain queues its own works.

mod join;
mod peers;
mod rx;
mod selftest;
mod stats;
mod tx;

pub(crate) use join::{abort_join, attach_and_join};
use selftest::selftest_ok;
use stats::{bump, PeerStats};

use super::{held::HeldRing, PeerLoss, Upcalls};
use crate::{
    glue::{sync::SpinLockBh, SharedRegion},
    proto::{
        frame::MAX_PAYLOAD,
        layout::Geometry,
        peer::{self, Membership, PeerState},
        ring::{Channel, Consumer, Producer, RingAlloc, Site},
    },
};
use kernel::{
    devres::Devres,
    new_mutex, pci,
    prelude::*,
    revocable::Revocable,
    sync::{
        atomic::{Atomic, Relaxed},
        new_spinlock, Arc, Mutex, SpinLock,
    },
    time::{msecs_to_jiffies, Instant, Jiffies, Monotonic},
};

/// Size of the BAR0 register block.
pub(crate) const REGS_SIZE: usize = 256;
/// BAR0 register: ring a peer, `(peer << 16) | vector`.
const REG_DOORBELL: usize = 0x0C;
/// MSI-X vector for "data (or a new epoch) for you": rung by producers.
pub(crate) const VEC_DATA: u32 = 0;
/// MSI-X vector for "space (or an acknowledgement) for you": rung by consumers for a
/// producer that waits. Used only towards peers that advertise at least two vectors
/// (`peer::SLOT_VECTORS`); others get everything on [`VEC_DATA`].
pub(crate) const VEC_SPACE: u32 = 1;
/// MSI-X vectors a domain uses at most.
pub(crate) const MAX_VECTORS: u32 = 2;
/// Frames taken from one peer's ring per pass before the work requeues itself.
const RX_BUDGET: u32 = 64;
/// Receive by reference: `RW` payloads shorter than this are copied (a copy that small
/// costs less than pinning ring space for it).
const HOLD_MIN: u32 = 512;
/// A held frame older than this is copied out (its reader is slow), in milliseconds.
const HOLD_MAX_MS: u64 = 100;
/// A held frame pinning more than half the ring (oldest held record to the cursor) is
/// copied out once it is this old, in milliseconds: its reader had its chance, and the
/// connections behind it on the ring must not wait for it.
const HOLD_SPAN_MS: u64 = 20;
/// Attach: polls of ~1 ms while another peer initialises the region (5 s).
const ATTACH_POLLS: u32 = 5000;
/// Attach: an initializer unchanged for this many polls is presumed dead (2 s).
const ATTACH_STALE_POLLS: u32 = 2000;
/// Plain: slowest poll interval when idle, in microseconds (100 ms).
const POLL_MAX_US: u32 = 100_000;
/// Plain: keep polling at the fastest interval (`Params::poll_us`) this long after the last
/// frame received or sent or the last kick, so a request/response exchange finds the reply
/// within one short period instead of after the backed-off interval. After it the interval
/// doubles per idle pass up to [`POLL_MAX_US`].
const POLL_HOT_MS: u64 = 10;
/// Port of the transport's self-test frames (`VMADDR_PORT_ANY`, never a bound port): they
/// are counted and checked by the transport and never delivered to the core.
const SELFTEST_PORT: u32 = u32::MAX;
/// Log lines one peer's events may cause per [`LOG_WINDOW_MS`]. A hostile peer can make
/// every poll find its ring corrupt or re-opened (and the peer come up again after it), so
/// these lines are rate-limited per peer; the rest are counted, and summarised once the
/// window has passed. Heartbeat timeouts and reaps (at most one per incarnation and
/// `hb_timeout_ms`) are always logged.
const LOG_BURST: u32 = 10;
/// See [`LOG_BURST`].
const LOG_WINDOW_MS: u64 = 5000;

/// Tunables, from module parameters.
#[derive(Clone, Copy)]
pub(crate) struct Params {
    /// Peer slots of a region this guest initialises.
    pub(crate) max_peers: u32,
    /// Heartbeat and liveness sampling period.
    pub(crate) hb_period_ms: u32,
    /// A live peer whose heartbeat has not moved for this long is declared dead.
    pub(crate) hb_timeout_ms: u32,
    /// Percent of a region this guest initialises that goes to the bulk area.
    pub(crate) bulk_percent: u32,
    /// Plain: the fastest poll interval in microseconds, while traffic moves.
    pub(crate) poll_us: u32,
}

/// The outcome of [`attach_and_join`]: a validated geometry and our `JOINING` slot.
#[derive(Clone, Copy)]
pub(crate) struct Joined {
    geo: Geometry,
    me: Membership,
    /// The region identity (`layout::region_id`), read once at attach.
    region_id: u64,
}

/// Our side of the channel towards one peer.
struct TxChannel {
    prod: Option<Producer>,
    /// `send` returned `Full` for a payload of this size; `tx_space` is owed.
    want: Option<u32>,
}

/// The generation in which the epoch a consumer acknowledges now was opened, when that is
/// known: a LIVE peer opened its producers before it went live (protocol §4), so the epoch
/// is its current generation's. A JOINING peer may not have opened its producer to us yet;
/// claiming its generation then would make the open that follows look like a re-open within
/// one generation (a reset of a peer that did nothing wrong, seen at boot).
fn opened_gen(s: peer::PeerSnapshot) -> Option<u32> {
    (s.state == PeerState::Live).then_some(s.gen)
}

/// The ring `c` reads, if the producer has one open and we accepted it: what held frames
/// are bounded by (`HeldRing::reset`).
fn open_channel(c: &Consumer) -> Option<Channel> {
    c.is_open().then(|| c.channel())
}

/// The size of the ring `c` reads, 0 while the producer has none open (for debugfs).
fn rx_ring_size(c: &Consumer) -> u32 {
    if c.is_open() {
        c.channel().size()
    } else {
        0
    }
}

/// What the receive side knows about one peer.
struct PeerTracking {
    rx: Option<Consumer>,
    /// The frames of `rx`'s ring that receive queues hold by reference
    /// (transport/held.rs); the consumer's pin follows its oldest one.
    held: Option<Arc<HeldRing>>,
    /// Generation of the incarnation we consider up (not yet reset).
    incarnation: Option<u32>,
    /// Generation in which we last acknowledged the peer's producer epoch.
    acked_gen: Option<u32>,
    /// Incarnation declared dead by heartbeat timeout; ignored until its generation changes.
    dead_gen: Option<u32>,
    last_hb: u64,
    hb_at_ms: u64,
}

/// State owned by the workers.
struct LinkRx {
    /// We were evicted and could not take our slot back: the link is dead.
    broken: bool,
    peers: KVec<PeerTracking>,
    /// Our rings' places in our transmit area (local state; the tx lock holds the producers).
    alloc: RingAlloc,
    /// Payload bounce buffer, `MAX_PAYLOAD` bytes: every payload is copied out of the region
    /// exactly once, here, before the core sees it.
    buf: KVec<u8>,
}

/// The transport state of one domain.
#[pin_data]
pub(crate) struct Link {
    index: u32,
    doorbell: bool,
    region: Arc<Revocable<SharedRegion>>,
    regs: Option<Devres<pci::Bar<'static, REGS_SIZE>>>,
    geo: Geometry,
    local_id: u32,
    /// The region identity published by its initializer (docs/protocol.md §2).
    region_id: u64,
    params: Params,
    t0: Instant<Monotonic>,
    stats: KVec<PeerStats>,
    /// Per peer, the held frames of its ring to us (the same as `PeerTracking::held`, for
    /// debugfs without the `rx` mutex).
    held: KVec<Option<Arc<HeldRing>>>,
    doorbells_rx: Atomic<u64>,
    /// Doorbells received per MSI-X vector ([`VEC_DATA`], [`VEC_SPACE`]).
    doorbells_rx_vec: [Atomic<u64>; MAX_VECTORS as usize],
    /// MSI-X vectors this guest handles (0 on plain); advertised in our slot.
    vectors: Atomic<u32>,
    /// 1 when the next pass of the rx work must drain the rings: set by everything that
    /// queues it except a [`VEC_SPACE`] doorbell, which only needs the waiting senders served.
    rx_pending: Atomic<u32>,
    /// Passes of the rx work that skipped the rings (only [`VEC_SPACE`] doorbells).
    space_only_passes: Atomic<u64>,
    /// 1 between `start` and `stop`.
    running: Atomic<u32>,
    /// Plain: the current poll interval in microseconds.
    poll_delay: Atomic<u32>,
    /// Plain: [`Link::now_ms`] of the last frame received or send kick.
    active_ms: Atomic<u64>,
    /// Bottom halves off while held: the net device sends from softirq context.
    #[pin]
    tx: SpinLockBh<KVec<TxChannel>>,
    #[pin]
    rx: Mutex<LinkRx>,
    /// Our membership (id, generation, heartbeat count). A lock of its own, not a field of
    /// `rx`: the heartbeat must never wait for a receive pass (`Link::beat`), which may
    /// hold `rx` for long (1000 connections' frames, resets). Order: `rx` → `me`.
    #[pin]
    me: SpinLock<Membership>,
    /// [`Link::now_ms`] of our last heartbeat: a long receive pass beats when one is due.
    beat_ms: Atomic<u64>,
}

impl Link {
    /// Creates the link state of a domain from our `JOINING` slot: opens our producer towards
    /// every other slot and resyncs our consumer from every other slot.
    pub(crate) fn new(
        index: u32,
        joined: Joined,
        region: Arc<Revocable<SharedRegion>>,
        regs: Option<Devres<pci::Bar<'static, REGS_SIZE>>>,
        params: Params,
    ) -> Result<impl PinInit<Self, Error>> {
        let geo = joined.geo;
        let me = joined.me;
        let n = geo.max_peers as usize;
        let mut alloc = RingAlloc::new(&geo, me.id).ok_or(EINVAL)?;
        let mut tx = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut peers = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut stats = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut held_all = KVec::with_capacity(n, GFP_KERNEL)?;
        // Allocated here: no allocation that may sleep under the region's RCU guard below.
        let mut held_new = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..geo.max_peers {
            held_new.push(HeldRing::new(region.clone())?, GFP_KERNEL)?;
        }
        let t0 = Instant::<Monotonic>::now();
        {
            let shm = region.try_access().ok_or(ENODEV)?;
            for p in 0..geo.max_peers {
                let st = PeerStats::new();
                let snap = peer::snapshot(&*shm, &geo, p).ok();
                let (rx, acked, held) = match Site::new(&geo, p, me.id) {
                    Some(site) => {
                        let c = Consumer::attach(&*shm, site).0;
                        st.rx_ring.store(rx_ring_size(&c), Relaxed);
                        let gen = snap.and_then(opened_gen).filter(|_| c.is_open());
                        let h = held_new.get(p as usize).cloned().ok_or(ENOMEM)?;
                        h.reset(open_channel(&c));
                        (Some(c), gen, Some(h))
                    }
                    None => (None, None, None),
                };
                // A ring towards every peer already there; later ones get theirs when the
                // tick first sees them (`open_tx`).
                let present =
                    snap.is_some_and(|s| matches!(s.state, PeerState::Live | PeerState::Joining));
                let out = if present { alloc.alloc(&geo, p) } else { None };
                let prod = out.map(|ch| {
                    st.tx_ring.store(ch.size(), Relaxed);
                    st.max_payload.store(ch.max_payload(), Relaxed);
                    Producer::open(&*shm, ch).0
                });
                tx.push(TxChannel { prod, want: None }, GFP_KERNEL)?;
                held_all.push(held.clone(), GFP_KERNEL)?;
                peers.push(
                    PeerTracking {
                        rx,
                        held,
                        incarnation: None,
                        acked_gen: acked,
                        dead_gen: None,
                        last_hb: 0,
                        hb_at_ms: 0,
                    },
                    GFP_KERNEL,
                )?;
                stats.push(st, GFP_KERNEL)?;
            }
        }
        let buf = KVec::from_elem(0u8, MAX_PAYLOAD as usize, GFP_KERNEL)?;
        let doorbell = regs.is_some();
        Ok(try_pin_init!(Self {
            index,
            doorbell,
            region,
            regs,
            geo,
            local_id: me.id,
            region_id: joined.region_id,
            params,
            t0,
            stats,
            held: held_all,
            doorbells_rx: Atomic::new(0),
            doorbells_rx_vec: [Atomic::new(0), Atomic::new(0)],
            vectors: Atomic::new(0),
            rx_pending: Atomic::new(1),
            space_only_passes: Atomic::new(0),
            running: Atomic::new(0),
            poll_delay: Atomic::new(params.poll_us),
            active_ms: Atomic::new(0),
            tx <- SpinLockBh::new(tx, c"vmcs_link_tx", kernel::static_lock_class!()),
            beat_ms: Atomic::new(0),
            me <- new_spinlock!(me, "vmcs_link_me"),
            rx <- new_mutex!(
                LinkRx {
                    broken: false,
                    peers,
                    alloc,
                    buf,
                },
                "vmcs_link_rx"
            ),
        }))
    }

    /// Publishes `LIVE` and rings every live peer. The domain arms its works afterwards.
    pub(crate) fn start(&self) -> Result {
        {
            let _rx = self.rx.lock();
            let mut me = self.me.lock();
            let shm = self.region.try_access().ok_or(ENODEV)?;
            let _ = peer::set_vectors(&*shm, &self.geo, &me, self.vectors.load(Relaxed));
            let _ = peer::set_features(&*shm, &self.geo, &me, peer::FEATURES);
            peer::join_complete(&*shm, &self.geo, &mut me).map_err(|_| EBUSY)?;
        }
        pr_info!(
            "vmcs{}: joined as peer {} (generation {}), {} slots, {} KiB transmit area, \
             first ring {} KiB\n",
            self.index,
            self.local_id,
            self.me.lock().gen,
            self.geo.max_peers,
            self.geo.area_size / 1024,
            self.ring_size() / 1024
        );
        self.ring_live_peers();
        self.running.store(1, Relaxed);
        self.rx_pending.store(1, Relaxed);
        Ok(())
    }

    /// Stops sending and handling doorbells. The domain then stops queueing its works,
    /// synchronises the IRQ and flushes the works, after which no transport code runs until
    /// [`Link::leave`].
    pub(crate) fn stop(&self) {
        self.running.store(0, Relaxed);
    }

    /// Leaves the peer table and resets every peer, so that the core wakes all its waiters.
    pub(crate) fn leave(&self, up: &impl Upcalls) {
        let mut rx = self.rx.lock();
        let me = *self.me.lock();
        if let Some(shm) = self.region.try_access() {
            if peer::leave_begin(&*shm, &self.geo, &me).is_ok() {
                let _ = peer::leave_complete(&*shm, &self.geo, &me);
            } else {
                // Never went LIVE (probe failed before `start` finished).
                abort_join(
                    &shm,
                    &Joined {
                        geo: self.geo,
                        me,
                        region_id: self.region_id,
                    },
                );
            }
        }
        pr_info!("vmcs{}: left the peer table\n", self.index);
        for p in 0..self.geo.max_peers {
            if p == self.local_id {
                continue;
            }
            if let Some(t) = rx.peers.get_mut(p as usize) {
                t.incarnation = None;
            }
            if let Some(s) = self.stats.get(p as usize) {
                s.live.store(0, Relaxed);
                s.features.store(0, Relaxed);
            }
            up.peer_reset(p, PeerLoss::Unbound);
        }
        // Loopback connections end with the domain too: their bulk mappings point into this
        // region, which is about to be released.
        up.peer_reset(self.local_id, PeerLoss::Unbound);
    }

    /// This guest's peer id in the domain.
    pub(crate) fn local_id(&self) -> u32 {
        self.local_id
    }

    /// Largest payload of one frame on our ring to `peer`; 0 while none is open.
    pub(crate) fn max_payload(&self, peer: u32) -> u32 {
        self.stats
            .get(peer as usize)
            .map_or(0, |s| s.max_payload.load(Relaxed))
    }

    /// The feature word (`proto::peer::FEAT_*`) `peer` advertised when it came up, 0 for
    /// no peer.
    pub(crate) fn peer_features(&self, peer: u32) -> u32 {
        self.stats
            .get(peer as usize)
            .map_or(0, |s| s.features.load(Relaxed))
    }

    /// The size of the first ring this guest opens (to a peer when no other has one): the
    /// fair share of its transmit area (`ring::fair_share`), which the first three peers
    /// get; later peers may get smaller ones (debugfs `rings` lists each).
    pub(crate) fn ring_size(&self) -> u32 {
        self.first_ring().map_or(0, |c| c.size())
    }

    /// The ring this guest would open first (to a peer when no other has one); no
    /// arithmetic that can panic (objtool sees a panic call as a fall-through).
    fn first_ring(&self) -> Option<Channel> {
        let to = self
            .local_id
            .wrapping_add(1)
            .checked_rem(self.geo.max_peers)?;
        RingAlloc::new(&self.geo, self.local_id).and_then(|mut a| a.alloc(&self.geo, to))
    }

    /// Largest payload of one frame to any peer: that of the first ring this guest opens
    /// (later peers may get smaller rings; [`Link::max_payload`] has each one's limit).
    pub(crate) fn frame_limit(&self) -> u32 {
        self.first_ring().map_or(0, |c| c.max_payload())
    }

    /// This guest's generation in its slot (changes when it rejoins).
    pub(crate) fn generation(&self) -> u32 {
        self.me.lock().gen
    }

    /// The region identity (0 if its initializer published none).
    pub(crate) fn region_id(&self) -> u64 {
        self.region_id
    }

    /// Peers the region's layout holds.
    pub(crate) fn max_peers(&self) -> u32 {
        self.geo.max_peers
    }

    /// Region offset and size of `peer`'s slice of the bulk area (docs/protocol.md §8);
    /// `None` when the region has no bulk area or `peer` is out of range.
    pub(crate) fn bulk_slice(&self, peer: u32) -> Option<(usize, usize)> {
        let off = crate::proto::bulk::slice_off(&self.geo, peer)?;
        Some((off, crate::proto::bulk::slice_size(&self.geo)))
    }

    /// Sets the number of MSI-X vectors this guest handles (probe, before [`Link::start`]).
    pub(crate) fn set_vectors(&self, n: u32) {
        self.vectors.store(n.min(MAX_VECTORS), Relaxed);
    }

    /// The tick period in jiffies.
    pub(crate) fn tick_period(&self) -> Jiffies {
        msecs_to_jiffies(self.params.hb_period_ms).max(1)
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(0)
    }
}
