// SPDX-License-Identifier: GPL-2.0

//! Transports: what moves frames between this guest and its peers.
//!
//! A transport knows nothing about domains, ports, connections or files: it imports only
//! the wire protocol (`proto`) and the glue. Its whole contract is:
//!
//! - down: the [`Transport`] trait, what the core asks of the transport it is handed
//!   (`local_id`, `send`, `send_user`, `is_live`, `max_payload`, `kick`, the bulk slice
//!   geometry, and for the net device `peer_limit` and `domain_identity`). The domain
//!   implements it over its [`ivshmem::Link`] (module/domain/mod.rs), and hands itself to
//!   the core and to the net device (module/net/) as their transport;
//! - up: the [`Upcalls`] trait, which the domain implements (forwarding frames, resets and
//!   ring space to its core, and queueing its own works when the transport asks for a
//!   receive pass) and which the transport calls. It is the only way up: the transport
//!   holds no reference to anything above it.
//!
//! Nothing the transport passes up comes from shared memory unvalidated: frame headers are
//! decoded and validated by `proto::frame`, payloads are copied out of the region once
//! (straight into the core's receive queue, [`RxPayload`]), and a peer that sends anything
//! corrupt is reset as a whole. User data goes into the region in one copy too
//! ([`Transport::send_user`]).

pub(crate) mod held;
pub(crate) mod ivshmem;
pub(crate) mod vsock;

use crate::{
    glue::{SharedRegion, UserIter},
    proto::frame::FrameHeader,
};
use core::mem::MaybeUninit;

/// Why a frame could not be queued to a peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SendError {
    /// The ring to that peer has no room now; retry after [`Upcalls::tx_space`] for it.
    Full,
    /// The peer is not live (absent, leaving, restarted or reset).
    Unreachable,
    /// The frame is malformed (for example longer than `max_payload`): a caller bug.
    Invalid,
    /// The domain is going away.
    Shutdown,
}

impl From<SendError> for kernel::error::Error {
    fn from(e: SendError) -> Self {
        use kernel::error::code::{EAGAIN, EINVAL, ENODEV};
        match e {
            SendError::Full => EAGAIN,
            SendError::Unreachable => crate::glue::errno::econnreset(),
            SendError::Invalid => EINVAL,
            SendError::Shutdown => ENODEV,
        }
    }
}

/// One peer of the domain, as `VMCS_IOC_GET_INFO` reports it.
#[derive(Clone, Copy, Default)]
pub(crate) struct PeerInfo {
    pub(crate) id: u32,
    /// `enum vmcs_peer_state` (docs/uapi.md).
    pub(crate) state: u32,
    pub(crate) generation: u32,
    /// Milliseconds since the peer's heartbeat last advanced; `u32::MAX` when unknown.
    pub(crate) heartbeat_age_ms: u32,
}

/// Why the transport reset a peer ([`Upcalls::peer_reset`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PeerLoss {
    /// Its slot went absent or leaving.
    Left,
    /// It came back with a new generation, or re-opened its ring to us.
    Restarted,
    /// Its heartbeat stood still for `hb_timeout_ms`.
    HeartbeatTimeout,
    /// A ring between us was found corrupt (and resynchronised).
    RingCorrupt,
    /// We were evicted from the peer table and rejoined.
    Evicted,
    /// This guest leaves the domain (unbind, unload).
    Unbound,
}

/// What the core needs of the transport that carries its frames (down).
pub(crate) trait Transport {
    /// This guest's peer id in the domain.
    fn local_id(&self) -> u32;
    /// Queues one frame to `peer` without blocking (callable in atomic context, also in
    /// softirq context: the net device's transmit path);
    /// `hdr.len` is taken from `payload.len()`. See [`SendError`]. For control frames and
    /// for data a caller could not wait to copy straight from user memory (queued in a
    /// kernel buffer), see [`Transport::send_user`].
    fn send(&self, peer: u32, hdr: &FrameHeader, payload: &[u8]) -> Result<(), SendError>;
    /// Queues one data frame to `peer` whose payload, the next `hdr.len` bytes of `src`, is
    /// copied straight from user memory into the transport's own buffer (the ring) with page
    /// faults disabled: it never sleeps, and no half-written frame is ever left behind.
    ///
    /// Returns the bytes sent. A copy cut short by a user page that is not present sends
    /// the bytes it copied as a shorter frame without `EOM` (0: no frame at all); the
    /// caller faults the rest in with no lock held (`UserIter::fault_in`) and sends again.
    /// Errors as for [`Transport::send`]; on an error nothing was sent and `src` did not
    /// advance.
    fn send_user(
        &self,
        peer: u32,
        hdr: &FrameHeader,
        src: &mut UserIter<'_>,
    ) -> Result<usize, SendError>;
    /// As [`Transport::send`], but the frame may stay invisible to the peer until
    /// [`Transport::flush`] for it (or any `send` to it): one publish and at most one
    /// doorbell per batch. The caller flushes before it lets go of its batch.
    fn send_batched(&self, peer: u32, hdr: &FrameHeader, payload: &[u8]) -> Result<(), SendError>;
    /// Makes every frame queued to `peer` with `send_batched` visible to it.
    fn flush(&self, peer: u32);
    /// As [`Transport::send`] (`publish`) or [`Transport::send_batched`], for a payload
    /// copied in pieces straight into the ring ([`TxPayload`]); `Invalid` if a piece could
    /// not be copied (nothing is sent then).
    fn send_payload(
        &self,
        peer: u32,
        hdr: &FrameHeader,
        payload: &dyn TxPayload,
        publish: bool,
    ) -> Result<(), SendError>;
    /// Ring bytes (records: headers, payloads, padding) queued to `peer`, published or not,
    /// that its consumer has not released yet; 0 when there is no ring to it (the net
    /// device's BQL completions, docs/netdev.md).
    fn tx_backlog(&self, peer: u32) -> u32;
    /// Whether `peer` is live now (never true for this guest itself).
    fn is_live(&self, peer: u32) -> bool;
    /// Makes `peer` reachable if this transport can and says whether it is live then
    /// (connect's address check; process context, no spinlock held: it may sleep). The
    /// vsock transport connects its stream to the peer here; by default, [`Transport::is_live`].
    fn reach(&self, peer: u32) -> bool {
        self.is_live(peer)
    }
    /// Largest payload of one frame to `peer` (its ring's limit; 0 while no ring is open).
    /// The protocol extensions `peer` advertised (`proto::peer::FEAT_*`; untrusted: a peer
    /// that lies breaks only its own connections). Transports without a feature word
    /// report none.
    fn peer_features(&self, _peer: u32) -> u32 {
        0
    }
    fn max_payload(&self, peer: u32) -> u32;
    /// Largest payload of one frame to any peer (the bound of every
    /// [`Transport::max_payload`]; the net device's MTU is sized from it).
    fn frame_limit(&self) -> u32;
    /// Traffic is expected soon (a waiter sleeps on a remote peer): poll fast.
    fn kick(&self);
    /// A reader dropped held frames ([`held::HeldRef`]): release their ring space now (in
    /// the caller's context if no receive pass runs, else by the receive work). Process
    /// context, no lock held.
    fn release_held(&self) {}
    /// Busy polling: runs one receive pass in the caller's context (process context, no
    /// lock held that upcalls take) unless one is running, leaving the data doorbells
    /// unarmed (the caller is awake and polls again). `last`: the caller stops polling; the
    /// pass arms the doorbells (if another pass runs, the receive work is queued to do
    /// it). Returns whether it ran a pass.
    fn busy_poll(&self, last: bool) -> bool;
    /// Region offset and size of `peer`'s slice of the bulk area (docs/protocol.md §8).
    fn bulk_slice(&self, peer: u32) -> Option<(usize, usize)>;
    /// Page frame number of the region page at `offset`; `None` once the region is gone.
    fn pfn(&self, offset: usize) -> Option<usize>;
    /// Whether every live peer has read every frame sent to it so far.
    fn tx_drained(&self) -> bool;
    /// Peer ids of the domain are below this.
    fn peer_limit(&self) -> u32;
    /// The transport's name, as debugfs `connections` (`vmcs ss`) shows it per connection.
    fn name(&self) -> &'static str {
        "-"
    }
    /// An identity of the domain, the same for every member and while the domain exists
    /// (ivshmem: the region's `region_id`); names the net device's MACs.
    fn domain_identity(&self) -> u64;
}

/// The payload of a received frame, as [`Upcalls::deliver`] hands it up: kernel bytes, or
/// (`RW` and `ETH` frames) the bytes still in the transport's buffer, which the core copies once,
/// straight to where it keeps them. Valid only during the upcall.
pub(crate) trait RxPayload {
    /// Payload length in bytes (the header's `len`).
    fn len(&self) -> usize;
    /// The payload, when it is in kernel memory. Frames other than `RW` and `ETH` always come so
    /// (their payloads are a few bytes: bulk descriptors); for those it may be
    /// `None`.
    fn bytes(&self) -> Option<&[u8]>;
    /// Copies the first `dst.len()` bytes (at most [`RxPayload::len`]) into `dst`. Returns
    /// the bytes copied: all of them, or 0 when the transport's buffer is gone (unbind).
    /// Bytes a hostile peer changes under the copy change only what this reader receives.
    fn copy_to(&self, dst: &mut [MaybeUninit<u8>]) -> usize;
    /// Receive by reference (`RW` frames on a ring): the payload stays in the ring and the
    /// core keeps the reference instead of a copy, or `None` (then the core copies). At
    /// most once per payload.
    fn hold(&self) -> Option<held::HeldRef> {
        None
    }
}

/// Kernel bytes (the bounce buffer, a loopback frame), passed as `&payload`.
impl RxPayload for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn bytes(&self) -> Option<&[u8]> {
        Some(*self)
    }

    fn copy_to(&self, dst: &mut [MaybeUninit<u8>]) -> usize {
        let Some(src) = self.get(..dst.len()) else {
            return 0;
        };
        // SAFETY: `src` and `dst` are both `dst.len()` bytes long and do not overlap (a
        // shared and an exclusive borrow); `MaybeUninit<u8>` has the layout of `u8`.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len())
        };
        src.len()
    }
}

/// A frame payload in pieces (a socket buffer's head and fragments) that the transport
/// copies straight into its buffer, the ring, with no copy in between.
pub(crate) trait TxPayload {
    /// Payload length in bytes.
    fn len(&self) -> usize;
    /// Copies payload bytes `at..at + n` into the region at `offset`; false if it could not
    /// (then the frame is not sent).
    fn copy_into(&self, shm: &SharedRegion, offset: usize, at: usize, n: usize) -> bool;
}

/// Events a transport reports to its owner (up).
///
/// `deliver`, `peer_reset` and `tx_space` are called from the domain's receive worker
/// (process context). They may take the core's locks and allocate, but must never wait for
/// user space or for the ring. `wake_rx` may be called from any process context, also with
/// spinlocks held, and never sleeps.
pub(crate) trait Upcalls {
    /// A frame from `peer`, validated; `payload.len() == hdr.len as usize`. The payload of
    /// an `RW` or `ETH` frame may still be in the transport's buffer (the ring), valid only during
    /// the call: the core copies it once, straight into its receive queue.
    fn deliver(&self, peer: u32, hdr: &FrameHeader, payload: &dyn RxPayload);
    /// `peer` restarted, left, died or sent corrupt data (`cause`): every connection with it
    /// is reset and its waiters woken with `ECONNRESET`.
    fn peer_reset(&self, peer: u32, cause: PeerLoss);
    /// The ring to `peer` has room again (after a `SendError::Full`).
    fn tx_space(&self, peer: u32);
    /// Frames of the connection (`ports`: our port, the peer's port) with `peer` are held in
    /// a ring too long or pin too much of it (a slow reader): the core copies every frame
    /// it holds by reference on that connection out into its own memory and drops the
    /// references (or resets the connection when it has no memory for them).
    fn copy_out(&self, _peer: u32, _ports: (u32, u32)) {}
    /// The transport wants a receive pass (its owner's rx work): soon if idle, or, with
    /// `now`, at once even if one is already scheduled for later.
    fn wake_rx(&self, now: bool);
}
