// SPDX-License-Identifier: GPL-2.0

//! Transports: what moves frames between this guest and its peers.
//!
//! A transport knows nothing about domains, ports, connections or files: it imports only
//! the wire protocol (`proto`) and the glue. Its whole contract is:
//!
//! - down: the [`Transport`] trait, what the core asks of the transport it is handed
//!   (`local_id`, `send`, `is_live`, `max_payload`, `kick`, the bulk slice geometry). The
//!   domain implements it over its [`ivshmem::Link`] (module/domain/mod.rs);
//! - up: the [`Upcalls`] trait, which the domain implements (forwarding frames, resets and
//!   ring space to its core, and queueing its own works when the transport asks for a
//!   receive pass) and which the transport calls. It is the only way up: the transport
//!   holds no reference to anything above it.
//!
//! Nothing the transport passes up comes from shared memory unvalidated: frame headers are
//! decoded and validated by `proto::frame`, payloads are copied out of the region once, and
//! a peer that sends anything corrupt is reset as a whole.

pub(crate) mod ivshmem;

use crate::proto::frame::FrameHeader;

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
    /// Queues one frame to `peer` without blocking (callable in atomic context);
    /// `hdr.len` is taken from `payload.len()`. See [`SendError`].
    fn send(&self, peer: u32, hdr: &FrameHeader, payload: &[u8]) -> Result<(), SendError>;
    /// Whether `peer` is live now (never true for this guest itself).
    fn is_live(&self, peer: u32) -> bool;
    /// Largest payload of one frame to `peer` (its ring's limit; 0 while no ring is open).
    fn max_payload(&self, peer: u32) -> u32;
    /// Traffic is expected soon (a waiter sleeps on a remote peer): poll fast.
    fn kick(&self);
    /// Region offset and size of `peer`'s slice of the bulk area (docs/protocol.md §8).
    fn bulk_slice(&self, peer: u32) -> Option<(usize, usize)>;
    /// Page frame number of the region page at `offset`; `None` once the region is gone.
    fn pfn(&self, offset: usize) -> Option<usize>;
    /// Whether every live peer has read every frame sent to it so far.
    fn tx_drained(&self) -> bool;
}

/// Events a transport reports to its owner (up).
///
/// `deliver`, `peer_reset` and `tx_space` are called from the domain's receive worker
/// (process context). They may take the core's locks and allocate, but must never wait for
/// user space or for the ring. `wake_rx` may be called from any process context, also with
/// spinlocks held, and never sleeps.
pub(crate) trait Upcalls {
    /// A frame from `peer`, validated; `payload.len() == hdr.len as usize`.
    fn deliver(&self, peer: u32, hdr: &FrameHeader, payload: &[u8]);
    /// `peer` restarted, left, died or sent corrupt data (`cause`): every connection with it
    /// is reset and its waiters woken with `ECONNRESET`.
    fn peer_reset(&self, peer: u32, cause: PeerLoss);
    /// The ring to `peer` has room again (after a `SendError::Full`).
    fn tx_space(&self, peer: u32);
    /// The transport wants a receive pass (its owner's rx work): soon if idle, or, with
    /// `now`, at once even if one is already scheduled for later.
    fn wake_rx(&self, now: bool);
}
