// SPDX-License-Identifier: GPL-2.0

//! The vmcsN net device: virtual Ethernet over a domain's transport (docs/netdev.md).
//!
//! One device per domain (`vmcs<index>`); every live peer of the domain is an L2
//! neighbour. Frames travel as `ETH` frames (docs/protocol.md §10) on the same rings as the
//! connections: a unicast frame goes to the peer that owns its destination MAC (the MAC
//! names the peer, [`mac_of`]), broadcast and multicast are copied to every live peer.
//!
//! - Transmit (`ndo_start_xmit`, softirq or bottom halves off): one transmit queue per
//!   peer id ([`VmcsNet::select_queue`]), so a peer whose ring is full stops only its own
//!   queue: its frame is parked, the queue stopped, and both are resumed on the transport's
//!   `tx_space` for that peer ([`VmcsNet::tx_space`]). A peer that is reset drops only its
//!   parked frame. Broadcast goes through this guest's own queue (never stopped); a copy
//!   for a full ring is dropped and counted.
//! - Receive: the domain's rx work hands each validated `ETH` frame up
//!   ([`VmcsNet::receive`]), which checks it (length, checksum place, addresses: a bad one is
//!   dropped and counted, never parsed past its length), copies it into an skb and queues
//!   it; after the pass the work schedules NAPI ([`VmcsNet::rx_flush`], bottom halves off),
//!   whose poll hands at most `budget` frames to the stack ([`VmcsNet::poll`]).
//! - Carrier is up while at least one peer is live ([`VmcsNet::update_carrier`], from the
//!   domain's tick and on peer resets).
//!
//! This layer imports the transport's contract, the protocol and the glue only: it is
//! handed its transport (the domain) as a `dyn Transport`, and the domain forwards the
//! upcalls that concern it. The registration ([`NetRegistration`]) is owned by the domain
//! and dropped in teardown before the transport stops (module/pci.rs).

mod entry;

use crate::{
    glue::{
        net::{NetDevice, Offload, TxSkb},
        sync::SpinLockBh,
        SharedRegion,
    },
    proto::{
        frame::{eth_gso, flags, FrameHeader, Op, SockType, MAX_PAYLOAD},
        ring::record_size,
    },
    transport::{RxPayload, SendError, Transport, TxPayload},
};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use kernel::{
    new_mutex,
    prelude::*,
    str::CString,
    sync::{Arc, Mutex},
};

/// Ethernet header length (destination, source, EtherType).
pub(crate) const ETH_HLEN: usize = 14;
/// One 802.1Q tag, which the MTU leaves room for.
const VLAN_HLEN: u32 = 4;
/// Frames received and not yet taken by the NAPI poll, at most; more are dropped
/// (`rx_queue_full`), as a NIC drops when its receive ring is full.
const RXQ_MAX: u32 = 1024;
/// First byte of every vmcs MAC: locally administered (bit 1), unicast (bit 0 clear).
const MAC_FIRST: u8 = 0x02;
/// Frames limits below this get no TSO (a GSO packet would hardly be bigger than the MTU).
const TSO_MIN: u32 = 8192;
/// EtherTypes of the packets GSO frames may carry.
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// IP protocol number of TCP, the only GSO payload.
const IPPROTO_TCP: u8 = 6;
/// Offset of the checksum field in a TCP header.
const TCP_CSUM_OFF: u16 = 16;

/// The stable MAC of `peer` in the domain named `region_id`: `02:rr:rr:rr:rr:pp`, the four
/// `r` bytes folded from the region identity, `pp` the peer id (< 64). The same on every
/// boot of a guest that gets the same peer id in the same region.
pub(crate) fn mac_of(region_id: u64, peer: u32) -> [u8; 6] {
    let r = ((region_id >> 32) as u32 ^ region_id as u32).to_be_bytes();
    [MAC_FIRST, r[0], r[1], r[2], r[3], (peer & 0xff) as u8]
}

/// The largest MTU the transport carries: one frame payload less the Ethernet header and
/// one VLAN tag (4050 on the default 4 MiB region's 8 KiB rings; 65518 at most).
pub(crate) fn max_mtu(max_payload: u32) -> u32 {
    max_payload
        .min(MAX_PAYLOAD)
        .saturating_sub(ETH_HLEN as u32 + VLAN_HLEN)
}

/// A frame to transmit, copied into the ring in pieces: its head and fragments go straight
/// from the skb into the reserved ring space (`skb_copy_bits`).
impl TxPayload for TxSkb {
    fn len(&self) -> usize {
        self.frame().0
    }

    fn copy_into(&self, shm: &SharedRegion, offset: usize, at: usize, n: usize) -> bool {
        shm.fill_from_skb(offset, n, self, at)
    }
}

/// Counters of one peer (ethtool `peerN_*`).
#[derive(Default)]
struct PeerCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    /// Frames to this peer not sent: not live, its ring full (broadcast copies), reset
    /// while parked.
    tx_dropped: AtomicU64,
    /// Frames from this peer dropped: malformed, no memory, receive queue full, device down.
    rx_dropped: AtomicU64,
    /// Of `rx_dropped`, the malformed ones.
    rx_bad: AtomicU64,
    /// Times the ring to this peer was full (its queue stopped).
    tx_ring_full: AtomicU64,
}

/// Device-wide counters (ethtool), by cause.
#[derive(Default)]
struct Counters {
    rx_runt: AtomicU64,
    rx_bad_header: AtomicU64,
    rx_bad_csum: AtomicU64,
    rx_bad_src: AtomicU64,
    rx_nomem: AtomicU64,
    rx_queue_full: AtomicU64,
    rx_down: AtomicU64,
    tx_no_peer: AtomicU64,
    tx_errors: AtomicU64,
    multicast: AtomicU64,
    rx_bad_gso: AtomicU64,
    tx_gso: AtomicU64,
    rx_gso: AtomicU64,
    /// GSO packets longer than their peer's ring that the stack segmented for us
    /// ([`VmcsNet::gso_split`]).
    tx_gso_split: AtomicU64,
    /// Frames (or GSO packets whose segments are) longer than their peer's ring: answered
    /// with ICMP "too big" and dropped ([`VmcsNet::too_big`]).
    tx_too_big: AtomicU64,
}

/// Names of the device-wide ethtool counters, in the order [`VmcsNet::stats_values`] writes.
const GLOBAL_STATS: [&str; 15] = [
    "rx_runt",
    "rx_bad_header",
    "rx_bad_csum",
    "rx_bad_src",
    "rx_nomem",
    "rx_queue_full",
    "rx_down",
    "tx_no_peer",
    "tx_errors",
    "multicast",
    "rx_bad_gso",
    "tx_gso",
    "rx_gso",
    "tx_gso_split",
    "tx_too_big",
];
/// Names of the per-peer ethtool counters (`peer<N>_<name>`).
const PEER_STATS: [&str; 8] = [
    "rx_packets",
    "rx_bytes",
    "tx_packets",
    "tx_bytes",
    "tx_dropped",
    "rx_dropped",
    "rx_bad",
    "tx_ring_full",
];

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Relaxed);
}

/// The net device of one domain.
#[pin_data]
pub(crate) struct VmcsNet {
    dev: NetDevice,
    /// The domain, as the transport frames go out on.
    transport: KBox<dyn Transport + Send + Sync>,
    /// The domain's index (`vmcs<index>`, ethtool bus info).
    index: u32,
    /// This guest's peer id.
    local: u32,
    /// Peer ids are below this; also the number of transmit queues.
    peers: u32,
    /// The region identity the MACs are made of.
    region_id: u64,
    /// One frame per peer that found its ring full, sent on `tx_space` (its queue is
    /// stopped meanwhile). Taken with bottom halves off (the transmit path runs in softirq).
    #[pin]
    parked: SpinLockBh<KVec<Option<TxSkb>>>,
    /// BQL, per peer queue: ring bytes reported sent (`netdev_tx_sent_queue`) and not yet
    /// completed. Completed means: the peer's consumer released that ring space (its rx
    /// pass copied the frames out), bounded from below by the transport's backlog
    /// ([`VmcsNet::complete`]). Never more is completed than was sent (`dql_completed`
    /// BUG()s otherwise). Taken inside `parked`, never the other way round.
    #[pin]
    bql: SpinLockBh<KVec<u32>>,
    /// Between `ndo_open` and `ndo_stop`.
    up: AtomicBool,
    /// Frames were queued for the NAPI poll since the last [`VmcsNet::rx_flush`].
    rx_pending: AtomicBool,
    /// The carrier as last set. A mutex, so that the works and `ndo_open` deciding at once
    /// cannot leave it set the other way round (process context only).
    #[pin]
    carrier: Mutex<bool>,
    per_peer: KVec<PeerCounters>,
    counters: Counters,
}

/// The registration of a domain's net device: unregisters it on drop (waiting until no
/// operation of it runs), then lets the [`VmcsNet`] go.
///
/// # Invariants
///
/// `net.dev` is registered, with `net` as the pointer its entry points receive, until
/// `drop`.
pub(crate) struct NetRegistration {
    net: Arc<VmcsNet>,
}

impl NetRegistration {
    /// Creates and registers `vmcs<index>` over `transport` (the domain), whose region
    /// identity names the MACs, as a child of the ivshmem device `parent`.
    pub(crate) fn new(
        parent: &kernel::device::Device,
        index: u32,
        transport: KBox<dyn Transport + Send + Sync>,
    ) -> Result<Self> {
        let local = transport.local_id();
        let peers = transport.peer_limit().clamp(1, 64);
        let region_id = transport.domain_identity();
        let max_mtu = max_mtu(transport.frame_limit());
        if (max_mtu as usize) < 68 {
            pr_warn!(
                "vmcs{}: frames of {} bytes are too small for a net device\n",
                index,
                transport.frame_limit()
            );
            return Err(EINVAL);
        }
        let name = CString::try_from_fmt(fmt!("vmcs{}", index))?;
        let mac = mac_of(region_id, local);
        // A GSO packet is one ring frame: at most the frame limit (the stack keeps
        // `skb->len` below `tso_max`).
        let limit = transport.frame_limit().min(MAX_PAYLOAD);
        let tso_max = if limit >= TSO_MIN { limit } else { 0 };
        let dev = NetDevice::new(parent, &name, peers, &mac, max_mtu, tso_max)?;
        let mut parked = KVec::with_capacity(peers as usize, GFP_KERNEL)?;
        let mut per_peer = KVec::with_capacity(peers as usize, GFP_KERNEL)?;
        let mut bql = KVec::with_capacity(peers as usize, GFP_KERNEL)?;
        for _ in 0..peers {
            parked.push(None, GFP_KERNEL)?;
            per_peer.push(PeerCounters::default(), GFP_KERNEL)?;
            bql.push(0u32, GFP_KERNEL)?;
        }
        let net = Arc::pin_init(
            pin_init!(VmcsNet {
                dev,
                transport,
                index,
                local,
                peers,
                region_id,
                parked <- SpinLockBh::new(parked, c"vmcs_net_parked", kernel::static_lock_class!()),
                bql <- SpinLockBh::new(bql, c"vmcs_net_bql", kernel::static_lock_class!()),
                up: AtomicBool::new(false),
                rx_pending: AtomicBool::new(false),
                carrier <- new_mutex!(false, "vmcs_net_carrier"),
                per_peer,
                counters: Counters::default(),
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: `net` owns the device and is kept alive by this registration until after
        // `unregister` in `drop`.
        unsafe { net.dev.register(Arc::as_ptr(&net).cast()) }?;
        pr_info!(
            "vmcs{}: net device {} up to MTU {}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\n",
            index,
            net.dev.name().to_str().unwrap_or("?"),
            max_mtu,
            mac[0],
            mac[1],
            mac[2],
            mac[3],
            mac[4],
            mac[5]
        );
        // INVARIANT: registered just now with `net` as its pointer.
        Ok(Self { net })
    }

    /// The device, for the upcalls the domain forwards.
    pub(crate) fn net(&self) -> &Arc<VmcsNet> {
        &self.net
    }
}

impl Drop for NetRegistration {
    fn drop(&mut self) {
        // Closes the device if it is up (`ndo_stop`) and waits for every operation.
        self.net.dev.unregister();
        // Upcalls that still hold the `Arc` see the device down and drop what they get.
        self.net.up.store(false, Relaxed);
        self.net.dev.rx_purge();
        self.net.drop_parked();
    }
}

impl VmcsNet {
    /// The counters of `peer`.
    fn peer(&self, peer: u32) -> Option<&PeerCounters> {
        self.per_peer.get(peer as usize)
    }

    /// The peer a unicast destination MAC names, if it is one of this domain's.
    fn peer_of(&self, mac: &[u8]) -> Option<u32> {
        let p = u32::from(*mac.get(5)?);
        if p >= self.peers || p == self.local {
            return None;
        }
        (mac.get(..6)? == mac_of(self.region_id, p).as_slice()).then_some(p)
    }

    /// `ndo_open`.
    fn open(&self) -> Result {
        self.dev.napi_enable();
        {
            // BQL starts from nothing in flight, on both sides at once.
            let mut bql = self.bql.lock();
            bql.iter_mut().for_each(|b| *b = 0);
            self.dev.tx_reset();
        }
        self.up.store(true, Relaxed);
        self.dev.start_queues();
        self.update_carrier();
        Ok(())
    }

    /// `ndo_stop`: no frame is received or parked afterwards.
    fn stop(&self) -> Result {
        self.up.store(false, Relaxed);
        self.dev.stop_queues();
        self.dev.napi_disable();
        self.dev.rx_purge();
        self.drop_parked();
        Ok(())
    }

    /// Drops every parked frame (counted as `tx_dropped` of its peer).
    fn drop_parked(&self) {
        let mut freed = KVec::new();
        {
            let mut parked = self.parked.lock();
            for (p, slot) in parked.iter_mut().enumerate() {
                if let Some(skb) = slot.take() {
                    if let Some(c) = self.per_peer.get(p) {
                        bump(&c.tx_dropped);
                    }
                    // On allocation failure the frame is freed here, under the lock
                    // (`dev_kfree_skb_any` is fine in any context).
                    let _ = freed.push(skb, GFP_ATOMIC);
                }
            }
        }
        drop(freed);
    }

    /// Carrier up while at least one peer is live (and the device is up).
    pub(crate) fn update_carrier(&self) {
        let mut carrier = self.carrier.lock();
        let live = self.up.load(Relaxed)
            && (0..self.peers).any(|p| p != self.local && self.transport.is_live(p));
        if *carrier != live {
            *carrier = live;
            self.dev.set_carrier(live);
        }
    }

    /// `ndo_select_queue`: the destination peer's queue for unicast to a peer of the
    /// domain, this guest's own queue (never stopped) for everything else.
    fn select_queue(&self, frame: &[u8]) -> u16 {
        let q = frame
            .get(..6)
            .filter(|d| d[0] & 1 == 0)
            .and_then(|d| self.peer_of(d))
            .unwrap_or(self.local);
        // Below `peers` <= 64.
        q as u16
    }

    /// The `ETH` frame header for a frame that leaves `off` to the receiver.
    fn header(off: &Offload) -> FrameHeader {
        let mut hdr = FrameHeader::new(Op::Eth, SockType::Stream, 0, 0);
        if let Some((start, at)) = off.csum {
            hdr.flags = flags::ETH_CSUM_PARTIAL;
            hdr.src_port = u32::from(start);
            hdr.dst_port = u32::from(at);
        }
        if let Some((size, ty)) = off.gso {
            hdr.buf_alloc = size;
            hdr.fwd_cnt = ty;
        }
        hdr
    }

    /// Whether the wire can carry what `off` leaves to the receiver: a GSO packet is TCP
    /// over IPv4 or IPv6 (ECN or not) with its checksum left partial and a 16-bit MSS.
    fn offload_ok(off: &Offload) -> bool {
        match off.gso {
            None => true,
            Some((size, ty)) => {
                let kind = ty & !eth_gso::ECN;
                (kind == eth_gso::TCPV4 || kind == eth_gso::TCPV6)
                    && (1..=u32::from(u16::MAX)).contains(&size)
                    && off.csum.is_some()
            }
        }
    }

    /// `ndo_start_xmit`: sends or parks `skb` (queue `queue`); never fails. With `more`
    /// (`netdev_xmit_more`) the frame may stay unpublished until the batch's last one: one
    /// index store and at most one doorbell per batch.
    fn xmit(&self, skb: TxSkb, queue: u16, more: bool) {
        self.xmit_one(skb, queue, more);
        // Whatever became of this frame, a batch ends here: publish what it left queued.
        if !more && u32::from(queue) != self.local && u32::from(queue) < self.peers {
            self.transport.flush(u32::from(queue));
        }
    }

    fn xmit_one(&self, skb: TxSkb, queue: u16, more: bool) {
        let off = skb.offload();
        let (len, head) = skb.frame();
        if len < ETH_HLEN
            || head.len() < ETH_HLEN
            || len > self.transport.frame_limit() as usize
            || !Self::offload_ok(&off)
        {
            bump(&self.counters.tx_errors);
            return;
        }
        let hdr = Self::header(&off);
        if head[0] & 1 != 0 {
            // Broadcast and multicast: one copy per live peer, best effort.
            bump(&self.counters.multicast);
            for p in 0..self.peers {
                if p == self.local || !self.transport.is_live(p) {
                    continue;
                }
                let Some(c) = self.peer(p) else { continue };
                match self.transport.send_payload(p, &hdr, &skb, true) {
                    Ok(()) => {
                        bump(&c.tx_packets);
                        add(&c.tx_bytes, len);
                    }
                    Err(SendError::Full) => {
                        bump(&c.tx_ring_full);
                        bump(&c.tx_dropped);
                    }
                    Err(_) => bump(&c.tx_dropped),
                }
            }
            skb.consume();
            return;
        }
        let Some(peer) = self.peer_of(head) else {
            bump(&self.counters.tx_no_peer);
            return;
        };
        let Some(c) = self.peer(peer) else { return };
        // The ring to this peer may be smaller than the frame limit (a later peer's ring,
        // docs/protocol.md "Ring placement"): the sender learns the peer's MTU.
        let max = self.transport.max_payload(peer) as usize;
        if max != 0 && len > max {
            self.too_big(&skb, head, max);
            bump(&c.tx_dropped);
            return;
        }
        // Below `peers` <= 64.
        let q = peer as u16;
        // Under the lock, so that a `tx_space` for the peer cannot run between our `Full`
        // and the parking (the transport reports space only after a `Full`).
        // A batch is the frames of one queue; a frame that came through another queue than
        // its peer's is published at once.
        let batch = more && queue == q;
        let mut parked = self.parked.lock();
        self.complete(peer);
        match self.transport.send_payload(peer, &hdr, &skb, false) {
            Ok(()) => {
                let kick = self.bql_sent(peer, len, batch);
                drop(parked);
                if kick {
                    self.transport.flush(peer);
                }
                bump(&c.tx_packets);
                add(&c.tx_bytes, len);
                if off.gso.is_some() {
                    bump(&self.counters.tx_gso);
                }
                skb.consume();
            }
            Err(SendError::Full) => {
                // The transport published the batch before it found the ring full.
                bump(&c.tx_ring_full);
                if let Some(slot) = parked.get_mut(peer as usize) {
                    self.dev.stop_queue(q);
                    if let Some(old) = slot.replace(skb) {
                        // Only when the frame came through another queue than its peer's.
                        bump(&c.tx_dropped);
                        drop(old);
                    }
                }
            }
            Err(_) => {
                drop(parked);
                bump(&c.tx_dropped);
                // Publish what the batch queued before this frame.
                self.transport.flush(peer);
            }
        }
    }

    /// `ndo_features_check` of a GSO packet on queue `queue` (its peer): whether the stack
    /// must segment it first, because it is longer than the ring to that peer allows and
    /// its segments are not. A packet whose segments are too long too is left whole: the
    /// transmit path answers it with ICMP ([`VmcsNet::too_big`]).
    fn gso_split(&self, skb: &TxSkb, queue: u16) -> bool {
        let peer = u32::from(queue);
        if peer == self.local || peer >= self.peers {
            return false;
        }
        let max = self.transport.max_payload(peer);
        let (len, _) = skb.frame();
        if max == 0 || len <= max as usize || !skb.gso_fits(max) {
            return false;
        }
        bump(&self.counters.tx_gso_split);
        true
    }

    /// A frame longer than the ring to its peer allows (`max` bytes of Ethernet frame): its
    /// sender gets ICMP "too big" with the MTU that peer takes (a tunnel's answer), so TCP
    /// lowers its path MTU to that destination and resends; the frame is dropped by the
    /// caller. Other EtherTypes (no path MTU to learn) are only dropped.
    fn too_big(&self, skb: &TxSkb, head: &[u8], max: usize) {
        bump(&self.counters.tx_too_big);
        let mtu = max.saturating_sub(ETH_HLEN) as u32;
        match head.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) {
            Some(ETH_P_IP) => skb.icmp_too_big(mtu, false),
            Some(ETH_P_IPV6) => skb.icmp_too_big(mtu, true),
            _ => {}
        }
    }

    /// BQL: a frame of `len` bytes went into the ring to `peer` (its record's ring bytes
    /// are counted); whether the batch must be published now. Called under `parked`.
    fn bql_sent(&self, peer: u32, len: usize, more: bool) -> bool {
        let rec = u32::try_from(len).ok().and_then(record_size).unwrap_or(0);
        let mut bql = self.bql.lock();
        // What is counted here and only that is ever completed (`complete`).
        let rec = match bql.get_mut(peer as usize) {
            Some(b) => match b.checked_add(rec) {
                Some(n) => {
                    *b = n;
                    rec
                }
                None => 0,
            },
            None => 0,
        };
        self.dev.tx_sent(peer as u16, rec, more)
    }

    /// BQL completion for `peer`: of the ring bytes in flight, at most the transport's
    /// backlog (what the consumer has not released, ours and the connections') can still
    /// be unread, so the rest is completed. A consumer index that lies can only complete
    /// our own frames early or late, never more than were sent.
    fn complete(&self, peer: u32) {
        let mut bql = self.bql.lock();
        let Some(b) = bql.get_mut(peer as usize) else {
            return;
        };
        if *b == 0 {
            return;
        }
        let backlog = self.transport.tx_backlog(peer);
        let done = *b - (*b).min(backlog);
        if done > 0 {
            *b -= done;
            self.dev.tx_completed(peer as u16, done);
        }
    }

    /// BQL completions for every peer with frames in flight (after each receive pass and
    /// on the domain's tick, so a stopped queue is woken at the latest one tick after the
    /// peer read its frames).
    fn complete_all(&self) {
        for p in 0..self.peers {
            if p != self.local {
                self.complete(p);
            }
        }
    }

    /// The ring to `peer` has room again: the parked frame goes, then its queue wakes.
    pub(crate) fn tx_space(&self, peer: u32) {
        let mut parked = self.parked.lock();
        let Some(slot) = parked.get_mut(peer as usize) else {
            return;
        };
        let Some(skb) = slot.take() else {
            drop(parked);
            if self.up.load(Relaxed) {
                self.wake(peer);
            }
            return;
        };
        let off = skb.offload();
        let hdr = Self::header(&off);
        let (len, _) = skb.frame();
        let r = self.transport.send_payload(peer, &hdr, &skb, true);
        let c = self.peer(peer);
        match r {
            Ok(()) => {
                self.bql_sent(peer, len, false);
                drop(parked);
                if let Some(c) = c {
                    bump(&c.tx_packets);
                    add(&c.tx_bytes, len);
                }
                if off.gso.is_some() {
                    bump(&self.counters.tx_gso);
                }
                skb.consume();
                self.wake(peer);
            }
            Err(SendError::Full) => {
                // Still full: the transport reports space again.
                if let Some(slot) = parked.get_mut(peer as usize) {
                    *slot = Some(skb);
                }
            }
            Err(_) => {
                drop(parked);
                if let Some(c) = c {
                    bump(&c.tx_dropped);
                }
                drop(skb);
                self.wake(peer);
            }
        }
    }

    fn wake(&self, peer: u32) {
        if let Ok(q) = u16::try_from(peer) {
            self.dev.wake_queue(q);
        }
    }

    /// `peer` was reset (left, died, restarted): its parked frame is dropped and its queue
    /// woken (frames for it are dropped while it is not live); nothing else is touched.
    pub(crate) fn peer_reset(&self, peer: u32) {
        let skb = self
            .parked
            .lock()
            .get_mut(peer as usize)
            .and_then(|s| s.take());
        if skb.is_some() {
            if let Some(c) = self.peer(peer) {
                bump(&c.tx_dropped);
            }
        }
        drop(skb);
        if self.up.load(Relaxed) {
            self.wake(peer);
        }
        self.update_carrier();
    }

    /// Checks a received `ETH` frame's header against its length `len`, before anything
    /// is copied: returns what the frame leaves to us (checksum place, GSO). Every bound is
    /// checked against `len`.
    fn check_hdr(&self, hdr: &FrameHeader, len: usize) -> Result<Offload, ()> {
        let k = &self.counters;
        if len < ETH_HLEN {
            bump(&k.rx_runt);
            return Err(());
        }
        if hdr.flags & flags::ETH_CSUM_PARTIAL == 0 {
            if (hdr.src_port | hdr.dst_port | hdr.buf_alloc | hdr.fwd_cnt) != 0 {
                bump(&k.rx_bad_header);
                return Err(());
            }
            return Ok(Offload::default());
        }
        // The checksum field (2 bytes at start + offset) lies after the Ethernet header and
        // inside the frame.
        let start = hdr.src_port as usize;
        let end = start
            .checked_add(hdr.dst_port as usize)
            .and_then(|e| e.checked_add(2));
        let csum = match (
            u16::try_from(hdr.src_port),
            u16::try_from(hdr.dst_port),
            end,
        ) {
            (Ok(s), Ok(o), Some(end)) if start >= ETH_HLEN && end <= len => (s, o),
            _ => {
                bump(&k.rx_bad_csum);
                return Err(());
            }
        };
        if (hdr.buf_alloc | hdr.fwd_cnt) == 0 {
            return Ok(Offload {
                csum: Some(csum),
                gso: None,
            });
        }
        // GSO: a known type, an MSS below the frame, the checksum in a TCP header after at
        // least a minimal IP header.
        let kind = hdr.fwd_cnt & !eth_gso::ECN;
        let ip_min = match kind {
            eth_gso::TCPV4 => 20,
            eth_gso::TCPV6 => 40,
            _ => usize::MAX,
        };
        let size = hdr.buf_alloc;
        if ip_min == usize::MAX
            || size == 0
            || size > u32::from(u16::MAX)
            || size as usize >= len
            || csum.1 != TCP_CSUM_OFF
            || (csum.0 as usize) < ETH_HLEN + ip_min
        {
            bump(&k.rx_bad_gso);
            return Err(());
        }
        Ok(Offload {
            csum: Some(csum),
            gso: Some((size, hdr.fwd_cnt)),
        })
    }

    /// Checks the received frame's bytes (this guest's own copy, read once): a unicast
    /// source, and for GSO the EtherType, IP header and TCP header the header promised, with
    /// more TCP payload than one segment.
    fn check_frame(&self, off: &Offload, f: &[u8]) -> Result<(), ()> {
        let k = &self.counters;
        // The source is a unicast address (a frame "from" a group address is malformed).
        if !matches!(f.get(6), Some(b) if b & 1 == 0) {
            bump(&k.rx_bad_src);
            return Err(());
        }
        let (Some((size, ty)), Some((start, _))) = (off.gso, off.csum) else {
            return Ok(());
        };
        let start = start as usize;
        let be16 = |i: usize| f.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let ip_ok = match ty & !eth_gso::ECN {
            eth_gso::TCPV4 => {
                let ihl = f.get(ETH_HLEN).map(|b| (b >> 4, usize::from(b & 0xf) * 4));
                be16(12) == Some(ETH_P_IP)
                    && ihl.is_some_and(|(v, l)| v == 4 && ETH_HLEN + l == start)
                    && f.get(ETH_HLEN + 9) == Some(&IPPROTO_TCP)
            }
            _ => {
                be16(12) == Some(ETH_P_IPV6)
                    && f.get(ETH_HLEN).is_some_and(|b| b >> 4 == 6)
                    && f.get(ETH_HLEN + 6) == Some(&IPPROTO_TCP)
                    && ETH_HLEN + 40 == start
            }
        };
        // The TCP header (data offset in words) and then more than one segment's payload.
        let tcp_ok = f
            .get(start + 12)
            .map(|b| usize::from(b >> 4) * 4)
            .is_some_and(|thl| thl >= 20 && f.len().saturating_sub(start + thl) > size as usize);
        if ip_ok && tcp_ok {
            Ok(())
        } else {
            bump(&k.rx_bad_gso);
            Err(())
        }
    }

    /// An `ETH` frame from `peer` (the domain's rx work), still in the ring: its header is
    /// checked, it is copied once into an skb, its bytes are checked there, and it is
    /// queued for the NAPI poll. A bad frame is dropped and counted.
    pub(crate) fn receive(&self, peer: u32, hdr: &FrameHeader, payload: &dyn RxPayload) {
        let Some(c) = self.peer(peer) else { return };
        let bad = || {
            bump(&c.rx_bad);
            bump(&c.rx_dropped);
        };
        let len = payload.len();
        let Ok(off) = self.check_hdr(hdr, len) else {
            bad();
            return;
        };
        if !self.up.load(Relaxed) {
            bump(&self.counters.rx_down);
            bump(&c.rx_dropped);
            return;
        }
        if self.dev.rx_queued() >= RXQ_MAX {
            bump(&self.counters.rx_queue_full);
            bump(&c.rx_dropped);
            self.rx_pending.store(true, Relaxed);
            return;
        }
        let Some(mut skb) = self.dev.rx_alloc(len, |dst| payload.copy_to(dst)) else {
            bump(&self.counters.rx_nomem);
            bump(&c.rx_dropped);
            return;
        };
        if self.check_frame(&off, skb.data()).is_err() {
            bad();
            return;
        }
        if self.dev.rx_finish(&mut skb, &off).is_err() {
            bump(&self.counters.rx_bad_csum);
            bad();
            return;
        }
        bump(&c.rx_packets);
        add(&c.rx_bytes, len);
        if off.gso.is_some() {
            bump(&self.counters.rx_gso);
        }
        self.dev.rx_enqueue(skb);
        self.rx_pending.store(true, Relaxed);
    }

    /// After a receive pass (and on the domain's tick): BQL completions, and the NAPI poll
    /// scheduled if frames were queued.
    pub(crate) fn rx_flush(&self) {
        self.complete_all();
        if self.rx_pending.swap(false, Relaxed) && self.up.load(Relaxed) {
            self.dev.napi_schedule();
        }
    }

    /// The NAPI poll: at most `budget` frames to the stack.
    fn poll(&self, budget: i32) -> i32 {
        let mut done = 0;
        while done < budget && self.dev.rx_deliver_one() {
            done += 1;
        }
        // A frame queued after the last dequeue and before completion found the context
        // still scheduled: look again once it is complete.
        if done < budget && self.dev.napi_complete(done) && self.dev.rx_queued() > 0 {
            self.dev.napi_reschedule();
        }
        done
    }

    /// `ndo_get_stats64`: rx/tx packets and bytes, errors, drops, length errors (the order
    /// the C glue copies them in).
    fn stats64(&self, out: &mut [u64]) {
        let mut v = [0u64; 9];
        for c in self.per_peer.iter() {
            v[0] += c.rx_packets.load(Relaxed);
            v[1] += c.tx_packets.load(Relaxed);
            v[2] += c.rx_bytes.load(Relaxed);
            v[3] += c.tx_bytes.load(Relaxed);
            v[4] += c.rx_bad.load(Relaxed);
            v[6] += c.rx_dropped.load(Relaxed);
            v[7] += c.tx_dropped.load(Relaxed);
        }
        let k = &self.counters;
        v[5] = k.tx_errors.load(Relaxed);
        v[7] += k.tx_no_peer.load(Relaxed) + k.tx_errors.load(Relaxed);
        v[8] = k.rx_runt.load(Relaxed);
        for (o, x) in out.iter_mut().zip(v.iter()) {
            *o = *x;
        }
    }

    /// ethtool: how many counters ([`GLOBAL_STATS`], then [`PEER_STATS`] per peer id).
    fn stats_count(&self) -> usize {
        GLOBAL_STATS.len() + PEER_STATS.len() * self.peers as usize
    }

    /// ethtool: the counters' names, `ETH_GSTRING_LEN` (32) bytes each, into `out`.
    fn stats_strings(&self, out: &mut [u8]) {
        let mut put = |i: usize, s: &[&[u8]]| {
            let Some(dst) = out.get_mut(i * 32..(i + 1) * 32) else {
                return;
            };
            dst.fill(0);
            let mut n = 0;
            for part in s {
                for &b in part.iter() {
                    if n < 31 {
                        dst[n] = b;
                        n += 1;
                    }
                }
            }
        };
        for (i, s) in GLOBAL_STATS.iter().enumerate() {
            put(i, &[s.as_bytes()]);
        }
        let mut i = GLOBAL_STATS.len();
        for p in 0..self.peers {
            let mut num = [0u8; 2];
            let digits: &[u8] = if p < 10 {
                num[0] = b'0' + p as u8;
                &num[..1]
            } else {
                num[0] = b'0' + (p / 10) as u8;
                num[1] = b'0' + (p % 10) as u8;
                &num[..2]
            };
            for s in PEER_STATS.iter() {
                put(i, &[b"peer", digits, b"_", s.as_bytes()]);
                i += 1;
            }
        }
    }

    /// ethtool: the counters' values, in the order of [`VmcsNet::stats_strings`].
    fn stats_values(&self, out: &mut [u64]) {
        let k = &self.counters;
        let global = [
            &k.rx_runt,
            &k.rx_bad_header,
            &k.rx_bad_csum,
            &k.rx_bad_src,
            &k.rx_nomem,
            &k.rx_queue_full,
            &k.rx_down,
            &k.tx_no_peer,
            &k.tx_errors,
            &k.multicast,
            &k.rx_bad_gso,
            &k.tx_gso,
            &k.rx_gso,
            &k.tx_gso_split,
            &k.tx_too_big,
        ];
        out.fill(0);
        let mut slots = out.iter_mut();
        for c in global {
            if let Some(o) = slots.next() {
                *o = c.load(Relaxed);
            }
        }
        for c in self.per_peer.iter() {
            let peer = [
                &c.rx_packets,
                &c.rx_bytes,
                &c.tx_packets,
                &c.tx_bytes,
                &c.tx_dropped,
                &c.rx_dropped,
                &c.rx_bad,
                &c.tx_ring_full,
            ];
            for a in peer {
                if let Some(o) = slots.next() {
                    *o = a.load(Relaxed);
                }
            }
        }
    }

    /// debugfs `net`: the ethtool counters as `name value` lines (what the tests read;
    /// busybox has no ethtool).
    pub(crate) fn show(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let n = self.stats_count();
        let mut names = KVec::new();
        let mut vals = KVec::new();
        if names.resize(n * 32, 0u8, GFP_KERNEL).is_err()
            || vals.resize(n, 0u64, GFP_KERNEL).is_err()
        {
            return Err(core::fmt::Error);
        }
        self.stats_strings(&mut names);
        self.stats_values(&mut vals);
        writeln!(
            f,
            "mtu {} carrier {} up {}",
            self.dev.mtu(),
            u8::from(*self.carrier.lock()),
            u8::from(self.up.load(Relaxed))
        )?;
        for (i, v) in vals.iter().enumerate() {
            let name = names.get(i * 32..(i + 1) * 32).unwrap_or(&[]);
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let name = core::str::from_utf8(&name[..len]).unwrap_or("?");
            // Per-peer lines only for peers that ever exchanged frames, to keep it short.
            if name.starts_with("peer") && *v == 0 {
                continue;
            }
            writeln!(f, "{} {}", name, v)?;
        }
        Ok(())
    }

    /// ethtool bus info: `vmcs<index>` plus the peer id.
    fn bus_info(&self, out: &mut [u8]) {
        out.fill(0);
        let mut w = SliceWriter { buf: out, len: 0 };
        let _ = core::fmt::write(
            &mut w,
            format_args!("vmcs{}:peer{}", self.index, self.local),
        );
    }
}

/// A `fmt::Write` into a byte buffer that keeps the last byte for the NUL and drops the rest.
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len + 1 < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}
