// SPDX-License-Identifier: GPL-2.0

//! The ivshmem transport: peer membership in the region, one SPSC ring per ordered pair of
//! peers, doorbells (MSI-X on `ivshmem-doorbell`) or an adaptive poll (`ivshmem-plain`).
//!
//! # Shape
//!
//! - [`attach_and_join`] (probe, before the domain exists) attaches to the region
//!   (`proto::layout::attach`: the first peer initialises it, late joiners validate it) and
//!   takes a peer slot (`JOINING`): IVPosition on doorbell, `claim_id` on plain.
//! - [`Link::new`] opens our producer towards every other slot (new epoch) and resyncs our
//!   consumer from every other slot; [`Link::start`] publishes `LIVE`, rings every live peer
//!   and arms the works of the domain.
//! - The domain's *tick* (a delayed work, every `hb_period_ms`) beats our heartbeat, samples
//!   every slot (generation, state, heartbeat) and drains the rings. The domain's *rx* work
//!   drains the rings; on doorbell it is queued by the MSI-X handler, on plain it re-arms
//!   itself adaptively.
//! - [`Link::stop`] and [`Link::leave`] tear it down in the order described in
//!   docs/architecture.md.
//!
//! # Locks
//!
//! `rx` (mutex, worker only) → `tx` (spinlock, also taken by [`Link::send`]) → RCU (the region
//! guard, held only around shared-memory accesses, never across an upcall). `owner`
//! (spinlock) is a leaf. Upcalls run with `rx` held and nothing else.

use super::{PeerInfo, SendError, Upcalls};
use crate::{
    domain::{Domain, RX_WORK},
    ffi::{self, SharedRegion},
    proto::{
        frame::{FrameHeader, Op, SockType},
        layout::{self, Geometry, InitConfig, LayoutError},
        peer::{self, JoinMode, Membership, PeerError, PeerState},
        ring::{ctrl, Channel, Consumer, Producer, RingError, SleepCheck},
        shm::Shm,
    },
};
use core::fmt;
use kernel::{
    device,
    devres::Devres,
    io::Io,
    new_mutex, new_spinlock, pci,
    prelude::*,
    revocable::Revocable,
    sync::{
        atomic::{Atomic, Full, Relaxed},
        Arc, Mutex, SpinLock,
    },
    time::{delay::fsleep, msecs_to_jiffies, Delta, Instant, Jiffies, Monotonic},
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
/// Attach: polls of ~1 ms while another peer initialises the region (5 s).
const ATTACH_POLLS: u32 = 5000;
/// Attach: an initializer unchanged for this many polls is presumed dead (2 s).
const ATTACH_STALE_POLLS: u32 = 2000;
/// Plain: fastest poll interval, in jiffies, while traffic flows.
const POLL_MIN: Jiffies = 1;
/// Plain: slowest poll interval when idle, in milliseconds.
const POLL_MAX_MS: u32 = 100;
/// Plain: keep polling at [`POLL_MIN`] this long after the last frame received or sent, so
/// a request/response exchange finds the reply on the next jiffy instead of after the
/// backed-off interval. Idle links still back off to [`POLL_MAX_MS`].
const POLL_HOT_MS: u64 = 50;
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
}

/// The outcome of [`attach_and_join`]: a validated geometry and our `JOINING` slot.
#[derive(Clone, Copy)]
pub(crate) struct Joined {
    geo: Geometry,
    me: Membership,
}

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
            LayoutError::VersionMismatch { .. } => ffi::errno::eprotonosupport(),
            LayoutError::InitTimeout => ETIMEDOUT,
            LayoutError::RegionTooSmall | LayoutError::BadParams => EINVAL,
            _ => EIO,
        }
    })?;
    let geo = attached.geometry();
    if let layout::Attached::Initialized(_) = attached {
        dev_info!(
            dev,
            "initialised the region: {} peers, {} KiB rings, {} KiB bulk area\n",
            geo.max_peers,
            geo.ring_size / 1024,
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
    Ok(Joined { geo, me })
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

/// Counters of one peer, for debugfs.
struct PeerStats {
    tx_frames: Atomic<u64>,
    tx_bytes: Atomic<u64>,
    rx_frames: Atomic<u64>,
    rx_bytes: Atomic<u64>,
    doorbells_tx: Atomic<u64>,
    resets: Atomic<u64>,
    selftest_rx: Atomic<u64>,
    selftest_bad: Atomic<u64>,
    /// Times the ring from this peer was found corrupt and resynchronised; whatever it
    /// held unread was dropped.
    drops: Atomic<u64>,
    /// Milliseconds since the link started at which the heartbeat last moved.
    hb_seen_ms: Atomic<u64>,
    /// Doorbell vectors the peer advertised when it came up.
    vectors: Atomic<u32>,
    /// Live (1) or not (0): what `is_live` reports.
    live: Atomic<u32>,
    /// `send` found the ring to this peer corrupt; the worker owes the core a reset.
    tx_corrupt: Atomic<u32>,
    /// Log rate limit ([`LOG_BURST`]): start of the current window, lines logged in it, and
    /// lines suppressed since the last summary. Updated without atomicity across fields: a
    /// race only makes the counts approximate.
    log_at_ms: Atomic<u64>,
    log_lines: Atomic<u32>,
    log_dropped: Atomic<u64>,
}

impl PeerStats {
    fn new() -> Self {
        Self {
            tx_frames: Atomic::new(0),
            tx_bytes: Atomic::new(0),
            rx_frames: Atomic::new(0),
            rx_bytes: Atomic::new(0),
            doorbells_tx: Atomic::new(0),
            resets: Atomic::new(0),
            selftest_rx: Atomic::new(0),
            selftest_bad: Atomic::new(0),
            drops: Atomic::new(0),
            hb_seen_ms: Atomic::new(0),
            vectors: Atomic::new(0),
            live: Atomic::new(0),
            tx_corrupt: Atomic::new(0),
            log_at_ms: Atomic::new(0),
            log_lines: Atomic::new(0),
            log_dropped: Atomic::new(0),
        }
    }
}

fn bump(a: &Atomic<u64>, n: u64) {
    a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Our side of the channel towards one peer.
struct TxChan {
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

/// What the receive side knows about one peer.
struct PeerTrack {
    rx: Option<Consumer>,
    /// Generation of the incarnation we consider up (not yet reset).
    inc: Option<u32>,
    /// Generation in which we last acknowledged the peer's producer epoch.
    acked_gen: Option<u32>,
    /// Incarnation declared dead by heartbeat timeout; ignored until its generation changes.
    dead_gen: Option<u32>,
    last_hb: u64,
    hb_at_ms: u64,
}

/// State owned by the workers.
struct RxState {
    me: Membership,
    /// We were evicted and could not take our slot back: the link is dead.
    broken: bool,
    peers: KVec<PeerTrack>,
    /// Payload bounce buffer, `max_payload` bytes: every payload is copied out of the region
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
    max_payload: u32,
    params: Params,
    t0: Instant<Monotonic>,
    stats: KVec<PeerStats>,
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
    /// Plain: the current poll interval in jiffies.
    poll_delay: Atomic<usize>,
    /// Plain: [`Link::now_ms`] of the last frame received or send kick.
    active_ms: Atomic<u64>,
    #[pin]
    tx: SpinLock<KVec<TxChan>>,
    #[pin]
    rx: Mutex<RxState>,
    /// The domain this link belongs to, while works may be queued (`start`..`stop`). Every
    /// queueing of a work item from process context happens under this lock, so after `stop`
    /// took it nothing can queue a work again.
    #[pin]
    owner: SpinLock<Option<Arc<Domain>>>,
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
        let max_payload = Channel::new(&geo, 0, 1).ok_or(EINVAL)?.max_payload();
        let mut tx = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut peers = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut stats = KVec::with_capacity(n, GFP_KERNEL)?;
        let t0 = Instant::<Monotonic>::now();
        {
            let shm = region.try_access().ok_or(ENODEV)?;
            for p in 0..geo.max_peers {
                let (prod, rx, acked) =
                    match (Channel::new(&geo, me.id, p), Channel::new(&geo, p, me.id)) {
                        (Some(out), Some(inb)) => {
                            let gen = peer::snapshot(&*shm, &geo, p).ok().and_then(opened_gen);
                            (
                                Some(Producer::open(&*shm, out).0),
                                Some(Consumer::open(&*shm, inb).0),
                                gen,
                            )
                        }
                        _ => (None, None, None),
                    };
                tx.push(TxChan { prod, want: None }, GFP_KERNEL)?;
                peers.push(
                    PeerTrack {
                        rx,
                        inc: None,
                        acked_gen: acked,
                        dead_gen: None,
                        last_hb: 0,
                        hb_at_ms: 0,
                    },
                    GFP_KERNEL,
                )?;
                stats.push(PeerStats::new(), GFP_KERNEL)?;
            }
        }
        let buf = KVec::from_elem(0u8, max_payload as usize, GFP_KERNEL)?;
        let doorbell = regs.is_some();
        Ok(try_pin_init!(Self {
            index,
            doorbell,
            region,
            regs,
            geo,
            local_id: me.id,
            max_payload,
            params,
            t0,
            stats,
            doorbells_rx: Atomic::new(0),
            doorbells_rx_vec: [Atomic::new(0), Atomic::new(0)],
            vectors: Atomic::new(0),
            rx_pending: Atomic::new(1),
            space_only_passes: Atomic::new(0),
            running: Atomic::new(0),
            poll_delay: Atomic::new(POLL_MIN),
            active_ms: Atomic::new(0),
            tx <- new_spinlock!(tx, "vmcs_link_tx"),
            rx <- new_mutex!(
                RxState {
                    me,
                    broken: false,
                    peers,
                    buf,
                },
                "vmcs_link_rx"
            ),
            owner <- new_spinlock!(None, "vmcs_link_owner"),
        }))
    }

    /// Publishes `LIVE`, rings every live peer and arms the domain's works.
    pub(crate) fn start(&self, domain: &Arc<Domain>) -> Result {
        {
            let mut rx = self.rx.lock();
            let shm = self.region.try_access().ok_or(ENODEV)?;
            let _ = peer::set_vectors(&*shm, &self.geo, &rx.me, self.vectors.load(Relaxed));
            peer::join_complete(&*shm, &self.geo, &mut rx.me).map_err(|_| EBUSY)?;
        }
        pr_info!(
            "vmcs{}: joined as peer {} (generation {}), {} slots, {} B rings, max payload {}\n",
            self.index,
            self.local_id,
            self.rx.lock().me.gen,
            self.geo.max_peers,
            self.geo.ring_size,
            self.max_payload
        );
        self.ring_live_peers();
        self.running.store(1, Relaxed);
        *self.owner.lock() = Some(domain.clone());
        self.queue_rx(0);
        self.queue_tick(0);
        Ok(())
    }

    /// Stops queueing works and handling doorbells. The caller then synchronises the IRQ and
    /// flushes the works, after which no transport code runs until [`Link::leave`].
    pub(crate) fn stop(&self) {
        self.running.store(0, Relaxed);
        let owner = self.owner.lock().take();
        drop(owner);
    }

    /// Leaves the peer table and resets every peer, so that the core wakes all its waiters.
    pub(crate) fn leave(&self, up: &impl Upcalls) {
        let mut rx = self.rx.lock();
        if let Some(shm) = self.region.try_access() {
            if peer::leave_begin(&*shm, &self.geo, &rx.me).is_ok() {
                let _ = peer::leave_complete(&*shm, &self.geo, &rx.me);
            } else {
                // Never went LIVE (probe failed before `start` finished).
                abort_join(
                    &shm,
                    &Joined {
                        geo: self.geo,
                        me: rx.me,
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
                t.inc = None;
            }
            if let Some(s) = self.stats.get(p as usize) {
                s.live.store(0, Relaxed);
            }
            up.peer_reset(p);
        }
        // Loopback connections end with the domain too: their bulk mappings point into this
        // region, which is about to be released.
        up.peer_reset(self.local_id);
    }

    /// This guest's peer id in the domain.
    // API of the core (module/ports), which is being written against it.
    #[allow(dead_code)]
    pub(crate) fn local_id(&self) -> u32 {
        self.local_id
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
        peer: u32,
        hdr: &FrameHeader,
        payload: &[u8],
    ) -> Result<(), SendError> {
        if self.running.load(Relaxed) == 0 {
            return Err(SendError::Shutdown);
        }
        let len = u32::try_from(payload.len()).map_err(|_| SendError::Invalid)?;
        let mut h = *hdr;
        h.len = len;
        if len > self.max_payload || h.validate().is_err() {
            return Err(SendError::Invalid);
        }
        if !self.is_live(peer) {
            return Err(SendError::Unreachable);
        }
        let mut corrupt = false;
        let notify = {
            let mut tx = self.tx.lock();
            let chan = tx.get_mut(peer as usize).ok_or(SendError::Unreachable)?;
            let shm = self.region.try_access().ok_or(SendError::Shutdown)?;
            let prod = chan.prod.as_mut().ok_or(SendError::Unreachable)?;
            match prod.send(&*shm, &h, payload) {
                Ok(n) => n,
                Err(RingError::Full | RingError::NotReady) => match prod.prepare_wait(&*shm, len) {
                    Ok(SleepCheck::Pending) => match prod.send(&*shm, &h, payload) {
                        Ok(n) => n,
                        Err(_) => {
                            chan.want = Some(len);
                            return Err(SendError::Full);
                        }
                    },
                    Ok(SleepCheck::MaySleep) => {
                        chan.want = Some(len);
                        return Err(SendError::Full);
                    }
                    Err(_) => {
                        corrupt = true;
                        false
                    }
                },
                Err(RingError::TooBig) => return Err(SendError::Invalid),
                Err(_) => {
                    corrupt = true;
                    false
                }
            }
        };
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
            self.queue_rx(0);
            return Err(SendError::Unreachable);
        }
        if let Some(s) = self.stats.get(peer as usize) {
            bump(&s.tx_frames, 1);
            bump(&s.tx_bytes, u64::from(len));
        }
        if notify {
            self.ring(peer, VEC_DATA);
        }
        Ok(())
    }

    /// Whether an event of peer `p` may be logged now ([`LOG_BURST`]); counts it otherwise.
    fn log_ok(&self, p: u32) -> bool {
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
    fn log_window(&self, p: u32) {
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

    /// Whether `peer` is live now (never true for this guest itself).
    pub(crate) fn is_live(&self, peer: u32) -> bool {
        peer != self.local_id
            && self
                .stats
                .get(peer as usize)
                .is_some_and(|s| s.live.load(Relaxed) != 0)
    }

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

    /// Largest payload of one frame on this domain's rings.
    // API of the core (module/ports), which is being written against it.
    #[allow(dead_code)]
    pub(crate) fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Bytes per channel ring.
    // API of the core (module/ports), which is being written against it.
    #[allow(dead_code)]
    pub(crate) fn ring_size(&self) -> u32 {
        u32::try_from(self.geo.ring_size).unwrap_or(0)
    }

    /// Peers the region's layout holds.
    // API of the core (module/ports), which is being written against it.
    #[allow(dead_code)]
    pub(crate) fn max_peers(&self) -> u32 {
        self.geo.max_peers
    }

    /// Region offset and size of `peer`'s slice of the bulk area (docs/protocol.md §8);
    /// `None` when the region has no bulk area or `peer` is out of range.
    pub(crate) fn bulk_slice(&self, peer: u32) -> Option<(usize, usize)> {
        let off = crate::proto::bulk::slice_off(&self.geo, peer)?;
        Some((off, crate::proto::bulk::slice_size(&self.geo)))
    }

    /// Tells the transport that the core expects traffic soon (plain: poll fast from now).
    pub(crate) fn kick(&self) {
        if self.doorbell {
            return;
        }
        self.poll_delay.store(POLL_MIN, Relaxed);
        self.active_ms.store(self.now_ms(), Relaxed);
        self.rx_pending.store(1, Relaxed);
        let owner = self.owner.lock();
        if let Some(d) = owner.as_ref() {
            ffi::mod_delayed_work::<Domain, RX_WORK>(d.clone(), 0);
        }
    }

    /// Sets the number of MSI-X vectors this guest handles (probe, before [`Link::start`]).
    pub(crate) fn set_vectors(&self, n: u32) {
        self.vectors.store(n.min(MAX_VECTORS), Relaxed);
    }

    /// Called from the MSI-X handler of `vector` (hard IRQ context): counts the doorbell and
    /// queues the receive work, which drains the rings and serves waiting senders either way.
    pub(crate) fn doorbell_irq(&self, domain: &Arc<Domain>, vector: u32) {
        if self.running.load(Relaxed) == 0 {
            return;
        }
        bump(&self.doorbells_rx, 1);
        if let Some(c) = self.doorbells_rx_vec.get(vector as usize) {
            bump(c, 1);
        }
        if vector != VEC_SPACE {
            // Ordered before the work runs by the queueing.
            self.rx_pending.store(1, Relaxed);
        }
        let _ = ffi::wq().enqueue::<Arc<Domain>, RX_WORK>(domain.clone());
    }

    /// The next delay of the receive work after a pass, `None` to leave it idle.
    pub(crate) fn rx_rearm_delay(&self, more: bool, activity: bool) -> Option<Jiffies> {
        if more {
            return Some(0);
        }
        if self.doorbell {
            return None;
        }
        let max = msecs_to_jiffies(POLL_MAX_MS).max(POLL_MIN);
        let now = self.now_ms();
        if activity {
            self.active_ms.store(now, Relaxed);
        }
        let hot = now.saturating_sub(self.active_ms.load(Relaxed)) < POLL_HOT_MS;
        let d = if activity || hot {
            POLL_MIN
        } else {
            self.poll_delay
                .load(Relaxed)
                .saturating_mul(2)
                .clamp(POLL_MIN, max)
        };
        self.poll_delay.store(d, Relaxed);
        Some(d)
    }

    /// Queues the receive work after `delay` jiffies, unless stopped or already queued.
    pub(crate) fn queue_rx(&self, delay: Jiffies) {
        self.rx_pending.store(1, Relaxed);
        let owner = self.owner.lock();
        if let Some(d) = owner.as_ref() {
            let _ = ffi::wq().enqueue_delayed::<Arc<Domain>, RX_WORK>(d.clone(), delay);
        }
    }

    /// Queues the tick after `delay` jiffies, unless stopped or already queued.
    pub(crate) fn queue_tick(&self, delay: Jiffies) {
        let owner = self.owner.lock();
        if let Some(d) = owner.as_ref() {
            let _ = ffi::wq()
                .enqueue_delayed::<Arc<Domain>, { crate::domain::TICK_WORK }>(d.clone(), delay);
        }
    }

    /// The tick period in jiffies.
    pub(crate) fn tick_period(&self) -> Jiffies {
        msecs_to_jiffies(self.params.hb_period_ms).max(1)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(0)
    }

    /// Rings `peer`'s doorbell on `vector` (doorbell variant only): [`VEC_SPACE`] only if the
    /// peer advertised that it handles it, [`VEC_DATA`] otherwise.
    fn ring(&self, peer: u32, vector: u32) {
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
    fn ring_live_peers(&self) {
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
            self.kick_rx();
        }
    }

    /// Queues the receive work now (plain: also back to the fast poll).
    fn kick_rx(&self) {
        if self.doorbell {
            self.queue_rx(0);
        } else {
            self.kick();
        }
    }

    /// We were evicted (reaped while paused, or our slot was taken): reset every peer and
    /// take our slot again with a new generation.
    fn rejoin(&self, rx: &mut RxState, up: &impl Upcalls) {
        pr_warn!(
            "vmcs{}: evicted from the peer table, rejoining\n",
            self.index
        );
        for p in 0..self.geo.max_peers {
            if let Some(t) = rx.peers.get_mut(p as usize) {
                if t.inc.is_some() {
                    self.reset_peer(t, p, up);
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
                t.acked_gen = u32::try_from(p)
                    .ok()
                    .and_then(|p| peer::snapshot(&*shm, &self.geo, p).ok())
                    .and_then(opened_gen);
            }
        }
        let _ = peer::set_vectors(&*shm, &self.geo, &me, self.vectors.load(Relaxed));
        if peer::join_complete(&*shm, &self.geo, &mut me).is_err() {
            pr_err!(
                "vmcs{}: evicted while rejoining; link is down\n",
                self.index
            );
            rx.broken = true;
            return;
        }
        rx.me = me;
        drop(shm);
        pr_info!(
            "vmcs{}: rejoined as peer {} (generation {})\n",
            self.index,
            self.local_id,
            me.gen
        );
        self.ring_live_peers();
    }

    /// Marks `p` down and tells the core. Called with `rx` held, outside the region guard.
    fn reset_peer(&self, t: &mut PeerTrack, p: u32, up: &impl Upcalls) {
        t.inc = None;
        if let Some(s) = self.stats.get(p as usize) {
            s.live.store(0, Relaxed);
            bump(&s.resets, 1);
        }
        if let Some(chan) = self.tx.lock().get_mut(p as usize) {
            chan.want = None;
        }
        up.peer_reset(p);
    }

    /// Samples slot `p` and applies the liveness rules (docs/architecture.md, transport).
    fn refresh_peer(&self, rx: &mut RxState, p: u32, check_stale: bool, up: &impl Upcalls) {
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
                if t.inc == Some(snap.gen) {
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
                        self.reset_peer(t, p, up);
                        let reaped = self
                            .region
                            .try_access()
                            .is_some_and(|shm| peer::reap(&*shm, &self.geo, p, &snap));
                        if reaped {
                            pr_info!("vmcs{}: reaped the slot of peer {}\n", idx, p);
                        }
                    }
                } else {
                    if let Some(old) = t.inc {
                        if self.log_ok(p) {
                            pr_info!(
                                "vmcs{}: peer {} restarted (generation {} -> {}), reset\n",
                                idx,
                                p,
                                old,
                                snap.gen
                            );
                        }
                        self.reset_peer(t, p, up);
                    }
                    t.inc = Some(snap.gen);
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
                if let Some(old) = t.inc {
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
                        self.reset_peer(t, p, up);
                    }
                }
            }
            PeerState::Absent | PeerState::Leaving => {
                t.dead_gen = None;
                if let Some(old) = t.inc {
                    if self.log_ok(p) {
                        pr_info!("vmcs{}: peer {} left (generation {}), reset\n", idx, p, old);
                    }
                    self.reset_peer(t, p, up);
                }
            }
        }
    }

    /// The producer `p` re-opened its channel to us (new epoch): reset its connections if
    /// that ends an incarnation we had, then acknowledge the new epoch.
    fn on_restarted(&self, rx: &mut RxState, p: u32, corrupt: bool, up: &impl Upcalls) {
        let snap = self
            .region
            .try_access()
            .and_then(|shm| peer::snapshot(&*shm, &self.geo, p).ok());
        let gen = snap.map(|s| s.gen);
        let Some(t) = rx.peers.get_mut(p as usize) else {
            return;
        };
        if let Some(g) = t.inc {
            if corrupt {
                self.reset_peer(t, p, up);
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
                self.reset_peer(t, p, up);
            } else if t.acked_gen == Some(g) {
                if self.log_ok(p) {
                    pr_info!("vmcs{}: peer {} re-opened its ring, reset\n", self.index, p);
                }
                self.reset_peer(t, p, up);
            }
        }
        let notify = match (self.region.try_access(), t.rx.as_mut()) {
            (Some(shm), Some(c)) => c.resync(&*shm),
            _ => false,
        };
        t.acked_gen = gen;
        if corrupt {
            // The next live sample brings the incarnation back up with fresh state.
            t.inc = None;
        }
        if notify {
            self.ring(p, VEC_SPACE);
        }
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
    fn poll(&self, up: &impl Upcalls, drain: bool) -> (bool, bool) {
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
                            if t.inc.is_some() {
                                self.reset_peer(t, p, up);
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
    fn drain_peer(&self, rx: &mut RxState, p: u32, up: &impl Upcalls) -> (bool, bool) {
        let i = p as usize;
        let present = rx.peers.get(i).is_some_and(|t| t.rx.is_some());
        if !present {
            return (false, false);
        }
        if rx.peers.get(i).is_some_and(|t| t.inc.is_none()) {
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
                let RxState { peers, buf, .. } = &mut *rx;
                let Some(t) = peers.get_mut(i) else {
                    return (false, activity);
                };
                let up_now = t.inc.is_some();
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
                                let n = c.release(&*shm);
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

    /// Reports `tx_space` for every channel whose sender waits and that has room now.
    fn check_tx_waiters(&self, up: &impl Upcalls) -> bool {
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
            self.queue_rx(0);
        }
        for p in 0..self.geo.max_peers {
            if ready & (1 << p) != 0 {
                up.tx_space(p);
            }
        }
        ready != 0
    }

    /// Sends `count` self-test frames to `peer` (debugfs `selftest`): stream `RW` frames to
    /// [`SELFTEST_PORT`] of varying length with a checkable pattern, `fwd_cnt` = sequence.
    /// Sleeps while the ring is full (process context only). Returns frames sent.
    pub(crate) fn selftest(&self, peer: u32, count: u32) -> Result<u32> {
        let mut buf = KVec::from_elem(0u8, self.max_payload as usize, GFP_KERNEL)?;
        let mut sent = 0;
        let mut waits = 0u32;
        while sent < count {
            let len = 1 + (sent.wrapping_mul(97) % self.max_payload);
            let mut hdr = FrameHeader::new(Op::Rw, SockType::Stream, SELFTEST_PORT, SELFTEST_PORT);
            hdr.len = len;
            hdr.fwd_cnt = sent;
            let payload = buf.get_mut(..len as usize).ok_or(EINVAL)?;
            fill_pattern(&hdr, payload);
            match self.send(peer, &hdr, payload) {
                Ok(()) => sent += 1,
                Err(SendError::Full) => {
                    waits += 1;
                    if waits > 10_000 {
                        return Err(ETIMEDOUT);
                    }
                    self.kick();
                    fsleep(Delta::from_millis(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.kick();
        Ok(sent)
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
        writeln!(
            f,
            "local {} ring_size {} max_payload {} doorbells_rx {} vectors {} \
             doorbells_rx_vec0 {} doorbells_rx_vec1 {} space_only_passes {}",
            self.local_id,
            self.geo.ring_size,
            self.max_payload,
            self.doorbells_rx.load(Relaxed),
            self.vectors.load(Relaxed),
            self.doorbells_rx_vec[0].load(Relaxed),
            self.doorbells_rx_vec[1].load(Relaxed),
            self.space_only_passes.load(Relaxed)
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
            let txp = idx(self.local_id, p, ctrl::PROD_IDX).unwrap_or(0);
            let txc = idx(self.local_id, p, ctrl::CONS_IDX).unwrap_or(0);
            let rxp = idx(p, self.local_id, ctrl::PROD_IDX).unwrap_or(0);
            let rxc = idx(p, self.local_id, ctrl::CONS_IDX).unwrap_or(0);
            writeln!(
                f,
                "peer {} live {} tx prod {} cons {} frames {} bytes {} doorbells {} \
                 rx prod {} cons {} frames {} bytes {} drops {} resets {} selftest_rx {} selftest_bad {}",
                p,
                s.live.load(Relaxed),
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
                s.resets.load(Relaxed),
                s.selftest_rx.load(Relaxed),
                s.selftest_bad.load(Relaxed)
            )?;
        }
        Ok(())
    }
}

/// The self-test payload byte at `i` of a frame.
fn pattern_byte(hdr: &FrameHeader, i: usize) -> u8 {
    // Truncations intended: a byte pattern.
    (hdr.fwd_cnt as u8).wrapping_mul(31) ^ (i as u8) ^ ((i >> 8) as u8)
}

fn fill_pattern(hdr: &FrameHeader, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(hdr, i);
    }
}

fn selftest_ok(hdr: &FrameHeader, buf: &[u8]) -> bool {
    buf.len() == hdr.len as usize
        && buf
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte(hdr, i))
}
