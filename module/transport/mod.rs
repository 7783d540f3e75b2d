// SPDX-License-Identifier: GPL-2.0

//! Transports: what moves frames between this guest and its peers.
//!
//! A transport knows nothing about ports, connections or files. Its whole contract with the
//! core is:
//!
//! - down (core → transport): [`ivshmem::Link`]'s `local_id`, `send`, `is_live`, `peers`,
//!   `max_payload` and `kick`, called with a `&Link` borrowed from the domain;
//! - up (transport → core): the [`Upcalls`] trait, which `conn::ConnTable` implements and which
//!   the transport's receive worker calls.
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

/// Events a transport reports to the core of its domain.
///
/// All three are called from the domain's receive worker (process context). They may take
/// the core's locks and allocate, but must never wait for user space or for the ring.
pub(crate) trait Upcalls {
    /// A frame from `peer`, validated; `payload.len() == hdr.len as usize`.
    fn deliver(&self, peer: u32, hdr: &FrameHeader, payload: &[u8]);
    /// `peer` restarted, left, died or sent corrupt data: every connection with it is
    /// reset and its waiters woken with `ECONNRESET`.
    fn peer_reset(&self, peer: u32);
    /// The ring to `peer` has room again (after a `SendError::Full`).
    fn tx_space(&self, peer: u32);
}
