// SPDX-License-Identifier: GPL-2.0

//! The core of vmcs: ports, connections and flow control, shared by /dev/vmcs and AF_VMCS.
//!
//! The core knows neither its domain nor the transport type: every operation is handed a
//! [`Conns`], the table plus a `&dyn transport::Transport`, and the transport's upcalls reach
//! it through the domain (`Conns::deliver`, `peer_reset`, `tx_space`). Frames to this guest itself
//! (loopback: `VMCS_CID_LOCAL` or our own peer id) never reach the transport: they go
//! through a FIFO of the core and are delivered by whichever thread sent them, after it has
//! dropped its locks, through the very `Conns::deliver` path that remote frames take.
//!
//! Locks: the dispatch table (`table`) and the loopback FIFO (`loopback`) are leaves; an `Endpoint`'s
//! mutex may be held while taking either. Nothing is held while frames are delivered.

pub(crate) mod crypto;
mod endpoint;
mod policy;
mod reset;
mod rx_mem;

pub(crate) use endpoint::{Endpoint, ListenWake, Timeout, DEFAULT_RCVBUF, TXQ_MAX};
pub(crate) use policy::{List as PolicyList, Policy};
pub(crate) use reset::{BulkViolation, ResetReason, Violation};
pub(crate) use rx_mem::RxMem;

use reset::{ResetCounts, UNKNOWN_CONNECTION};

use crate::{
    glue::{self, errno, UserIter},
    proto::frame::{FrameHeader, Op, SockType, FRAME_HDR_SIZE},
    transport::{PeerLoss, RxPayload, SendError, Transport},
    uapi,
};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use kernel::{
    alloc::{Allocator, Vec},
    prelude::*,
    sync::{new_mutex, Arc, Mutex},
};

/// Largest receive buffer a connection may ask for (`VMCS_OPT_RCVBUF`).
pub(crate) const MAX_RCVBUF: u32 = 4 << 20;
/// Smallest receive buffer a connection may ask for.
pub(crate) const MIN_RCVBUF: u32 = 4 << 10;
/// Largest listen backlog (`SOMAXCONN`).
const MAX_BACKLOG: usize = 4096;
/// Largest payload of one loopback frame: as on an 8 KiB ring, so that loopback exercises
/// fragmentation like the rings do.
const LOOPBACK_MAX_PAYLOAD: u32 = 4096 - FRAME_HDR_SIZE as u32;
/// Bytes the loopback FIFO holds before senders see `SendError::Full`.
const LOOPBACK_MAX_BYTES: usize = 1 << 20;
/// Longest a teardown waits for closed connections to drain ([`Conns::linger`]).
const LINGER_MS: u32 = 10_000;
/// First port `VMCS_PORT_ANY` tries.
const EPHEMERAL_START: u32 = 49152;

/// Appends `src` to `v` with one `memcpy`.
///
/// `Vec::extend_from_slice` clones element by element, which this kernel (`-Os`) compiles
/// to a byte-by-byte loop; under TCG that is about 50 times slower than `memcpy`. Every
/// payload copy between kernel buffers goes through here. `flags` are those of the growth.
pub(crate) fn append_bytes<A: Allocator>(
    v: &mut Vec<u8, A>,
    src: &[u8],
    flags: kernel::alloc::Flags,
) -> Result {
    v.reserve(src.len(), flags)?;
    let dst = v.spare_capacity_mut().get_mut(..src.len()).ok_or(ENOMEM)?;
    // SAFETY: `dst` is `src.len()` elements of `v`'s spare capacity, valid for writes;
    // `src` is valid for reads of as many bytes; they do not overlap (`src` is a shared
    // borrow, `v` an exclusive one). `MaybeUninit<u8>` has the layout of `u8`.
    unsafe {
        core::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len())
    };
    // SAFETY: the `src.len()` elements after the current length were just initialised, and
    // `reserve` made room for them.
    unsafe { v.inc_len(src.len()) };
    Ok(())
}

/// Appends the received `payload` to `v`: one copy, straight from where the transport holds
/// it (the ring) into `v`'s spare capacity. `flags` are those of the growth.
pub(crate) fn append_payload<A: Allocator>(
    v: &mut Vec<u8, A>,
    payload: &dyn RxPayload,
    flags: kernel::alloc::Flags,
) -> Result {
    let len = payload.len();
    v.reserve(len, flags)?;
    let dst = v.spare_capacity_mut().get_mut(..len).ok_or(ENOMEM)?;
    if payload.copy_to(dst) != len {
        // The transport's buffer is gone (unbind).
        return Err(ENODEV);
    }
    // SAFETY: `copy_to` initialised the `len` spare elements after the current length, and
    // `reserve` made room for them.
    unsafe { v.inc_len(len) };
    Ok(())
}

/// A new `KVec` holding a copy of `src` (one allocation, one `memcpy`, no zero fill).
pub(crate) fn copy_bytes(src: &[u8]) -> Result<KVec<u8>> {
    let mut v = KVec::with_capacity(src.len(), GFP_KERNEL)?;
    append_bytes(&mut v, src, GFP_KERNEL)?;
    Ok(v)
}

/// One endpoint that frames may be dispatched to.
struct Entry {
    /// Local port.
    port: u32,
    /// Peer id and port, for a connection (or a connect in progress).
    remote: Option<(u32, u32)>,
    /// The endpoint owns `port` (bind or autobind); accepted connections share their
    /// listener's port and do not own it.
    owner: bool,
    listening: bool,
    sock: Arc<Endpoint>,
}

impl Entry {
    fn is(&self, sock: &Endpoint) -> bool {
        core::ptr::eq(&*self.sock, sock)
    }
}

struct Table {
    entries: KVec<Entry>,
    next_port: u32,
    /// One bit per peer id (< 64): a frame to that peer found the ring full and a
    /// `tx_space` is owed. Until it has drained every queue, connections to the peer send
    /// only in the round robin of `tx_space`, not directly from `send` (which would pass
    /// the connections already waiting). Under the table lock, so that `tx_space` clears
    /// it and lists the connections in one step.
    backlog: u64,
}

impl Table {
    /// Every endpoint with a connection to `peer`.
    fn conns_with(&self, peer: u32) -> KVec<Arc<Endpoint>> {
        let mut out = KVec::new();
        for e in self.entries.iter() {
            if matches!(e.remote, Some((p, _)) if p == peer) {
                // On allocation failure the rest are missed; they are reset on their next
                // frame or by their owner.
                if out.push(e.sock.clone(), GFP_KERNEL).is_err() {
                    break;
                }
            }
        }
        out
    }
}

/// A loopback frame waiting for delivery.
struct LoopbackFrame {
    hdr: FrameHeader,
    payload: KVec<u8>,
}

struct LoopbackQueue {
    frames: KVec<LoopbackFrame>,
    bytes: usize,
    /// A thread is delivering; others only enqueue.
    draining: bool,
    /// A sender saw `Full`: report `tx_space` after the next batch.
    full: bool,
}

/// Ports and connections of one domain: the dispatch table of endpoints, the loopback FIFO
/// and the allocator of our bulk slice. It holds no reference to the transport: every
/// operation that sends is handed one, as [`Conns`].
#[pin_data]
pub(crate) struct ConnTable {
    #[pin]
    table: Mutex<Table>,
    #[pin]
    loopback: Mutex<LoopbackQueue>,
    /// Extents in use in our slice of the bulk area (conn/bulk.rs), slice-relative.
    #[pin]
    bulk: Mutex<KVec<crate::proto::bulk::Desc>>,
    /// Where the next `tx_space` round robin starts.
    tx_next: AtomicUsize,
    /// Resets per reason, and frames for no connection (debugfs `resets`).
    resets: ResetCounts,
    /// Bytes held by the receive queues of this domain's endpoints, and their cap.
    rx_mem: Arc<RxMem>,
    /// Busy-poll window of endpoints that did not set their own, in microseconds (module
    /// parameter `busy_poll_us`; conn/endpoint/busy_poll.rs).
    busy_poll_us: u32,
    /// The access-control allow-lists (conn/policy.rs), checked only through
    /// [`Conns::policy_check`].
    #[pin]
    policy: Policy,
    /// Encryption: the domain's policy, pre-shared key and counters (conn/crypto.rs).
    #[pin]
    pub(crate) crypto: crypto::CryptoConf,
}

impl ConnTable {
    /// Writes the debugfs `resets` table (conn/reset.rs).
    pub(crate) fn show_resets(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        self.resets.show(out)
    }

    /// Creates an empty table whose receive queues hold at most `rx_mem_max` bytes and
    /// whose endpoints busy-poll for `busy_poll_us` unless they set their own window.
    pub(crate) fn new(
        rx_mem_max: usize,
        busy_poll_us: u32,
        encrypt: crypto::Policy,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            table <- new_mutex!(
                Table { entries: KVec::new(), next_port: EPHEMERAL_START, backlog: 0 },
                "vmcs_table"
            ),
            loopback <- new_mutex!(
                LoopbackQueue { frames: KVec::new(), bytes: 0, draining: false, full: false },
                "vmcs_lo"
            ),
            bulk <- new_mutex!(KVec::new(), "vmcs_bulk"),
            tx_next: AtomicUsize::new(0),
            resets: ResetCounts::new(),
            rx_mem: Arc::new(RxMem::new(rx_mem_max), GFP_KERNEL)?,
            busy_poll_us: busy_poll_us.min(uapi::MAX_BUSY_POLL_US),
            policy <- Policy::new(),
            crypto <- crypto::CryptoConf::new(encrypt),
        })
    }

    /// The access-control policy of this domain (`VMCS_IOC_POLICY_*`, debugfs `policy`).
    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The busy-poll window of endpoints that did not set their own (`busy_poll_us`).
    pub(crate) fn busy_poll_default(&self) -> u32 {
        self.busy_poll_us
    }

    /// The account of this domain's receive memory (conn/rx_mem.rs).
    fn rx_mem(&self) -> &Arc<RxMem> {
        &self.rx_mem
    }

    fn backlog_bit(peer: u32) -> u64 {
        1u64.checked_shl(peer).unwrap_or(0)
    }

    /// Whether connections to `peer` wait for `tx_space` (`Table::backlog`).
    fn backlogged(&self, peer: u32) -> bool {
        self.table.lock().backlog & Self::backlog_bit(peer) != 0
    }

    /// A frame to `peer` found the ring full.
    fn set_backlogged(&self, peer: u32) {
        self.table.lock().backlog |= Self::backlog_bit(peer);
    }

    /// Clears `peer`'s backlog bit; returns its connections as of that moment.
    fn clear_backlogged(&self, peer: u32) -> KVec<Arc<Endpoint>> {
        let mut t = self.table.lock();
        t.backlog &= !Self::backlog_bit(peer);
        t.conns_with(peer)
    }

    /// Binds `sock` to `port` (`VMCS_PORT_ANY`: a free one at or above 1024).
    fn bind_port(&self, sock: &Arc<Endpoint>, port: u32) -> Result<u32> {
        let mut t = self.table.lock();
        if t.entries.iter().any(|e| e.is(sock)) {
            return Err(EINVAL);
        }
        let taken = |t: &Table, p: u32| t.entries.iter().any(|e| e.owner && e.port == p);
        let port = if port == uapi::PORT_ANY {
            let span = uapi::PORT_ANY - uapi::PRIVILEGED_PORTS;
            let mut p = t.next_port;
            let mut found = None;
            // Bounded: at most one probe per entry plus one finds a free port.
            for _ in 0..=t.entries.len() {
                if p < uapi::PRIVILEGED_PORTS || p == uapi::PORT_ANY {
                    p = uapi::PRIVILEGED_PORTS;
                }
                if !taken(&t, p) {
                    found = Some(p);
                    break;
                }
                p = uapi::PRIVILEGED_PORTS + (p - uapi::PRIVILEGED_PORTS + 1) % span;
            }
            let p = found.ok_or(errno::eaddrnotavail())?;
            t.next_port = p.wrapping_add(1);
            p
        } else {
            if port < uapi::PRIVILEGED_PORTS && !glue::capable_net_bind_service() {
                return Err(EACCES);
            }
            if taken(&t, port) {
                return Err(errno::eaddrinuse());
            }
            port
        };
        t.entries.push(
            Entry {
                port,
                remote: None,
                owner: true,
                listening: false,
                sock: sock.clone(),
            },
            GFP_KERNEL,
        )?;
        Ok(port)
    }

    fn with_entry(&self, sock: &Endpoint, f: impl FnOnce(&mut Entry)) -> Result {
        let mut t = self.table.lock();
        let e = t.entries.iter_mut().find(|e| e.is(sock)).ok_or(EINVAL)?;
        f(e);
        Ok(())
    }

    fn set_listening(&self, sock: &Endpoint) -> Result {
        self.with_entry(sock, |e| e.listening = true)
    }

    fn set_remote(&self, sock: &Endpoint, peer: u32, port: u32) -> Result {
        self.with_entry(sock, |e| e.remote = Some((peer, port)))
    }

    /// Stops dispatching frames to `sock`; an owner keeps its port.
    fn detach(&self, sock: &Endpoint) {
        let removed = {
            let mut t = self.table.lock();
            let Some(i) = t.entries.iter().position(|e| e.is(sock)) else {
                return;
            };
            if t.entries[i].owner {
                t.entries[i].remote = None;
                t.entries[i].listening = false;
                None
            } else {
                t.entries.remove(i).ok()
            }
        };
        drop(removed);
    }

    /// Forgets `sock` entirely (its port is free again).
    fn remove(&self, sock: &Endpoint) {
        let removed = {
            let mut t = self.table.lock();
            t.entries
                .iter()
                .position(|e| e.is(sock))
                .and_then(|i| t.entries.remove(i).ok())
        };
        drop(removed);
    }

    /// Adds an accepted connection `port` ← `peer:peer_port`.
    fn insert_child(&self, child: &Arc<Endpoint>, port: u32, peer: u32, peer_port: u32) -> Result {
        let mut t = self.table.lock();
        if t.entries
            .iter()
            .any(|e| e.port == port && e.remote == Some((peer, peer_port)))
        {
            return Err(errno::eaddrinuse());
        }
        t.entries.push(
            Entry {
                port,
                remote: Some((peer, peer_port)),
                owner: false,
                listening: false,
                sock: child.clone(),
            },
            GFP_KERNEL,
        )?;
        Ok(())
    }

    /// Every endpoint with a connection to `peer`.
    fn conns_with(&self, peer: u32) -> KVec<Arc<Endpoint>> {
        self.table.lock().conns_with(peer)
    }
}

/// A domain's [`ConnTable`] together with the transport its frames go out on: what every
/// operation of the core is handed (built by the domain, `Domain::conns`). Table-only
/// operations are reached through `Deref`.
#[derive(Clone, Copy)]
pub(crate) struct Conns<'a> {
    connections: &'a ConnTable,
    transport: &'a dyn Transport,
}

impl<'a> Conns<'a> {
    /// Pairs `connections` with the `transport` it sends on.
    pub(crate) fn new(connections: &'a ConnTable, transport: &'a dyn Transport) -> Self {
        Self {
            connections,
            transport,
        }
    }

    /// The transport (bulk slice geometry and page frames, for conn/endpoint/bulk.rs).
    fn transport(&self) -> &'a dyn Transport {
        self.transport
    }
}

impl core::ops::Deref for Conns<'_> {
    type Target = ConnTable;

    fn deref(&self) -> &ConnTable {
        self.connections
    }
}

impl Conns<'_> {
    fn local_id(&self) -> u32 {
        self.transport.local_id()
    }

    /// Access control, the one check on every path (conn/policy.rs): a `REQUEST` for a
    /// listener (`List::ConnectIn`, [`Self::deliver`]), a connect (`List::ConnectOut`,
    /// `Endpoint::connect`) and an explicit bind (`List::Bind`, `Endpoint::bind`).
    /// `Err` is the denial's errno; it was counted and logged. Never sleeps.
    pub(crate) fn policy_check(&self, list: policy::List, cid: u32, port: u32) -> Result {
        self.policy.check(list, self.local_id(), cid, port)
    }

    /// Maps a user cid to a peer id: `VMCS_CID_LOCAL` and our own id are this guest;
    /// anything else must be a live peer (`EHOSTUNREACH`).
    pub(crate) fn resolve(&self, cid: u32) -> Result<u32> {
        let local = self.local_id();
        if cid == uapi::CID_LOCAL || cid == local {
            return Ok(local);
        }
        if cid == uapi::CID_ANY || !self.transport.reach(cid) {
            return Err(errno::ehostunreach());
        }
        Ok(cid)
    }

    /// Largest payload of one frame to `peer`.
    fn max_payload(&self, peer: u32) -> u32 {
        if peer == self.local_id() {
            LOOPBACK_MAX_PAYLOAD
        } else {
            self.transport.max_payload(peer)
        }
    }

    /// Hands one frame to the transport, or to the loopback FIFO. Never blocks.
    fn xmit(&self, peer: u32, hdr: &FrameHeader, payload: &[u8]) -> Result<(), SendError> {
        self.xmit_frame(peer, hdr, payload, false)
    }

    /// [`Self::xmit`] as part of a batch that ends with [`Self::flush`] (one publish and at
    /// most one doorbell for the batch, `Transport::send_batched`).
    fn xmit_batched(&self, peer: u32, hdr: &FrameHeader, payload: &[u8]) -> Result<(), SendError> {
        self.xmit_frame(peer, hdr, payload, true)
    }

    /// Ends a batch of [`Self::xmit_batched`] frames to `peer`.
    fn flush(&self, peer: u32) {
        if peer != self.local_id() {
            self.transport.flush(peer);
        }
    }

    fn xmit_frame(
        &self,
        peer: u32,
        hdr: &FrameHeader,
        payload: &[u8],
        batched: bool,
    ) -> Result<(), SendError> {
        if peer != self.local_id() {
            return if batched {
                self.transport.send_batched(peer, hdr, payload)
            } else {
                self.transport.send(peer, hdr, payload)
            };
        }
        if payload.len() > LOOPBACK_MAX_PAYLOAD as usize {
            return Err(SendError::Invalid);
        }
        let mut q = self.loopback.lock();
        if q.bytes >= LOOPBACK_MAX_BYTES {
            q.full = true;
            return Err(SendError::Full);
        }
        // On allocation failure too, `Full` promises a `tx_space` (after the next batch).
        let Ok(data) = copy_bytes(payload) else {
            q.full = true;
            return Err(SendError::Full);
        };
        if q.frames
            .push(
                LoopbackFrame {
                    hdr: *hdr,
                    payload: data,
                },
                GFP_KERNEL,
            )
            .is_err()
        {
            q.full = true;
            return Err(SendError::Full);
        }
        q.bytes += payload.len() + FRAME_HDR_SIZE;
        Ok(())
    }

    /// Hands one data frame of the next `hdr.len` bytes of `src` to the transport
    /// ([`Transport::send_user`]: straight into the ring), or to the loopback FIFO (one
    /// copy into the frame's buffer). Never blocks and never takes a page fault: returns
    /// the bytes sent, fewer (a frame without `EOM`, or none for 0) when a user page is not
    /// present.
    fn xmit_user(
        &self,
        peer: u32,
        hdr: &FrameHeader,
        src: &mut UserIter<'_>,
    ) -> Result<usize, SendError> {
        if peer != self.local_id() {
            return self.transport.send_user(peer, hdr, src);
        }
        let len = hdr.len as usize;
        if len > LOOPBACK_MAX_PAYLOAD as usize {
            return Err(SendError::Invalid);
        }
        let mut q = self.loopback.lock();
        if q.bytes >= LOOPBACK_MAX_BYTES {
            q.full = true;
            return Err(SendError::Full);
        }
        // On allocation failure too, `Full` promises a `tx_space` (after the next batch).
        let Ok(mut data) = KVec::<u8>::with_capacity(len, GFP_KERNEL) else {
            q.full = true;
            return Err(SendError::Full);
        };
        let got = match data.spare_capacity_mut().get_mut(..len) {
            Some(dst) => src.read_nofault(dst),
            None => 0,
        };
        if got == 0 && len > 0 {
            return Ok(0);
        }
        // SAFETY: `read_nofault` initialised the first `got` spare elements.
        unsafe { data.inc_len(got) };
        let mut h = *hdr;
        // `got` is at most `len`, a u32.
        h.len = got as u32;
        if got < len {
            h.flags &= !crate::proto::frame::flags::EOM;
        }
        if q.frames
            .push(
                LoopbackFrame {
                    hdr: h,
                    payload: data,
                },
                GFP_KERNEL,
            )
            .is_err()
        {
            // Nothing was sent: give the bytes back to the caller's iterator.
            src.revert(got);
            q.full = true;
            return Err(SendError::Full);
        }
        q.bytes += got + FRAME_HDR_SIZE;
        Ok(got)
    }

    /// Teardown, while the transport still runs: waits (at most [`LINGER_MS`]) until every
    /// closed connection has handed its last frames (data, `SHUTDOWN`, `RST`) to the
    /// transport and every live peer has read them, so that data a peer was promised by
    /// `send` and `close` is not lost to an unload right after the close. A dead peer is
    /// reset by the heartbeat meanwhile, which ends its connections' lingering.
    pub(crate) fn linger(&self) {
        for _ in 0..LINGER_MS / 10 {
            self.loopback_drain();
            let endpoints = {
                let t = self.table.lock();
                let mut v = KVec::new();
                for e in t.entries.iter().filter(|e| e.remote.is_some()) {
                    if v.push(e.sock.clone(), GFP_KERNEL).is_err() {
                        break;
                    }
                }
                v
            };
            if !endpoints.iter().any(|e| e.is_closing()) && self.transport.tx_drained() {
                return;
            }
            drop(endpoints);
            kernel::time::delay::fsleep(kernel::time::Delta::from_millis(10));
        }
        pr_info!(
            "vmcs: teardown after {} ms with closed connections not yet drained\n",
            LINGER_MS
        );
    }

    /// Delivers every queued loopback frame, in order. Called with no lock held by every
    /// operation that may have sent a frame; only one thread delivers at a time.
    pub(crate) fn loopback_drain(&self) {
        let local = self.local_id();
        let mut batch = KVec::new();
        {
            let mut q = self.loopback.lock();
            if q.draining || (q.frames.is_empty() && !q.full) {
                return;
            }
            q.draining = true;
        }
        loop {
            let full = {
                let mut q = self.loopback.lock();
                if q.frames.is_empty() && !q.full {
                    q.draining = false;
                    return;
                }
                core::mem::swap(&mut batch, &mut q.frames);
                q.bytes = 0;
                core::mem::replace(&mut q.full, false)
            };
            for f in batch.drain_all() {
                self.deliver(local, &f.hdr, &f.payload.as_slice());
            }
            if full {
                self.tx_space(local);
            }
        }
    }

    /// One receive pass of the transport in the caller's context, if none runs now (busy
    /// polling; never waits for the pass that runs); whether it ran. Loopback frames are
    /// delivered by their senders and need none.
    /// With `last`, the pass arms the doorbells again, or the receive work is asked to.
    fn busy_poll_rx(&self, last: bool) -> bool {
        self.transport.busy_poll(last)
    }

    /// Tells the transport that traffic is expected (a waiter sleeps on a remote peer).
    fn kick(&self, peer: u32) {
        if peer != self.local_id() {
            self.transport.kick();
        }
    }

    /// After a read dropped frames held in a ring: their space goes back now.
    pub(crate) fn release_held(&self) {
        self.transport.release_held();
    }

    /// `Upcalls::copy_out`: the connection (`ports`: our port, the peer's) with `peer`
    /// copies the frames it holds in the ring out into its receive queue. Returns the
    /// frames copied out (0 when there is no such connection).
    pub(crate) fn copy_out(&self, peer: u32, ports: (u32, u32)) -> usize {
        let conn = {
            let t = self.table.lock();
            t.entries
                .iter()
                .find(|e| e.port == ports.0 && e.remote == Some((peer, ports.1)))
                .map(|e| e.sock.clone())
        };
        conn.map_or(0, |c| c.copy_out_held(self))
    }

    /// Answers a frame for no connection with `RST` (never an `RST`). Best effort.
    fn reply_rst(&self, peer: u32, hdr: &FrameHeader) {
        self.reply_rst_flags(peer, hdr, 0);
    }

    /// [`Self::reply_rst`] with `flags` (`RST_AUTH`: refused by the encryption policy or
    /// the handshake; only to a peer that advertises `FEAT_CRYPTO`, else plain).
    fn reply_rst_flags(&self, peer: u32, hdr: &FrameHeader, flags: u32) {
        if hdr.op == Op::Rst {
            return;
        }
        let mut rst = FrameHeader::new(Op::Rst, hdr.ty, hdr.dst_port, hdr.src_port);
        if self.peer_crypto(peer) {
            rst.flags = flags;
        }
        let _ = self.xmit(peer, &rst, &[]);
    }

    /// Whether `peer` speaks the encryption handshake (`FEAT_CRYPTO`); never for this
    /// guest itself (loopback frames do not cross shared memory and are not encrypted).
    fn peer_crypto(&self, peer: u32) -> bool {
        peer != self.local_id()
            && self.transport.peer_features(peer) & crate::proto::peer::FEAT_CRYPTO != 0
    }

    /// Writes the debugfs `connections` table: [`CONNECTIONS_HEADER`], then one row per
    /// endpoint (what `vmcs ss` parses).
    pub(crate) fn describe(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let socks = {
            let t = self.table.lock();
            let mut v = KVec::new();
            for e in t.entries.iter() {
                if v.push(e.sock.clone(), GFP_KERNEL).is_err() {
                    break;
                }
            }
            v
        };
        writeln!(out, "{}", CONNECTIONS_HEADER)?;
        let local = self.local_id();
        let name = self.transport.name();
        for s in socks.iter() {
            s.describe(local, name, out)?;
        }
        Ok(())
    }

    /// A validated frame from `peer` (`Upcalls::deliver` of the domain, and loopback).
    pub(crate) fn deliver(&self, peer: u32, hdr: &FrameHeader, payload: &dyn RxPayload) {
        let (conn, listener) = {
            let t = self.table.lock();
            let conn = t
                .entries
                .iter()
                .find(|e| e.port == hdr.dst_port && e.remote == Some((peer, hdr.src_port)))
                .map(|e| e.sock.clone());
            let listener = if conn.is_none() && hdr.op == Op::Request {
                t.entries
                    .iter()
                    .find(|e| e.listening && e.port == hdr.dst_port)
                    .map(|e| e.sock.clone())
            } else {
                None
            };
            (conn, listener)
        };
        if let Some(c) = conn {
            c.on_frame(self, peer, hdr, payload);
        } else if let Some(l) = listener {
            if self
                .policy_check(policy::List::ConnectIn, peer, hdr.dst_port)
                .is_err()
            {
                // Refused as when nothing listens: the peer cannot tell the two apart.
                self.reply_rst(peer, hdr);
                return;
            }
            l.on_request(self, peer, hdr, payload);
        } else {
            if hdr.op != Op::Rst {
                self.resets.bump(UNKNOWN_CONNECTION);
            }
            self.reply_rst(peer, hdr);
        }
    }

    /// `peer` is gone or was reset (`Upcalls::peer_reset`): every connection with it is reset.
    pub(crate) fn peer_reset(&self, peer: u32, cause: PeerLoss) {
        for s in self.clear_backlogged(peer).iter() {
            s.on_peer_reset(self, cause);
        }
    }

    /// Room in the ring to `peer`: its connections take turns, one frame each per round
    /// (round robin, starting where the last round stopped), until the ring is full or no
    /// one has anything queued, so that no connection starves the others.
    pub(crate) fn tx_space(&self, peer: u32) {
        let conns = self.conns_with(peer);
        let n = conns.len();
        if n == 0 {
            self.clear_backlogged(peer);
            return;
        }
        let start = self.tx_next.load(Relaxed) % n;
        let mut active = KVec::new();
        for k in 0..n {
            // On allocation failure a connection misses this round; its own next send or
            // the next `tx_space` pumps it.
            let _ = active.push((start + k) % n, GFP_KERNEL);
        }
        while !active.is_empty() {
            // The connections that sent a frame stay for the next round, compacted in
            // place (no allocation per round).
            let mut kept = 0;
            for k in 0..active.len() {
                let Some(&i) = active.get(k) else { break };
                let Some(s) = conns.get(i) else { continue };
                let r = s.on_tx_space(self, 1);
                if r.full {
                    // This one goes first next time.
                    self.tx_next.store(i, Relaxed);
                    return;
                }
                if r.sent {
                    if let Some(slot) = active.get_mut(kept) {
                        *slot = i;
                    }
                    kept += 1;
                }
            }
            active.truncate(kept);
        }
        // Every queue is empty: direct sends again. A sender that saw the bit still set
        // had queued its frames under its `Endpoint` lock and had its table entry already (the
        // check takes the table lock): this pass, listed and run after the clear, sends them.
        for s in self.clear_backlogged(peer).iter() {
            if s.on_tx_space(self, usize::MAX).full {
                return;
            }
        }
    }
}

/// Column names of the debugfs `connections` table.
pub(crate) const CONNECTIONS_HEADER: &str =
    "local remote state rx_bytes tx_bytes rx_msgs tx_msgs rx_queued rx_queued_msgs credit resets \
     reset_reason encrypted transport";

/// Socket type of `/dev/vmcs` connections.
pub(crate) const CHARDEV_TYPE: SockType = SockType::SeqPacket;
