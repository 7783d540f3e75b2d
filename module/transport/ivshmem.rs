// SPDX-License-Identifier: GPL-2.0

//! The ivshmem transport: peer membership in the region, one SPSC ring per ordered pair of
//! peers, doorbells (MSI-X on `ivshmem-doorbell`) or an adaptive poll (`ivshmem-plain`).
//!
//! STUB: the API below is the contract with the core; the bodies are being written.

use super::{PeerInfo, SendError, Upcalls};
use crate::proto::frame::FrameHeader;
use kernel::prelude::*;

/// The transport state of one domain.
pub(crate) struct Link {
    local_id: u32,
}

impl Link {
    /// Creates the link state of a domain; `ivposition` is the server-assigned id, if any.
    pub(crate) fn new(ivposition: Option<u32>) -> Self {
        Self {
            local_id: ivposition.unwrap_or(0),
        }
    }

    /// This guest's peer id in the domain.
    pub(crate) fn local_id(&self) -> u32 {
        self.local_id
    }

    /// Queues one frame to `peer` without blocking and rings its doorbell if it sleeps.
    pub(crate) fn send(
        &self,
        _peer: u32,
        _hdr: &FrameHeader,
        _payload: &[u8],
    ) -> Result<(), SendError> {
        Err(SendError::Unreachable)
    }

    /// Whether `peer` is live now.
    pub(crate) fn is_live(&self, _peer: u32) -> bool {
        false
    }

    /// Appends every non-absent peer, this guest included, to `out`.
    pub(crate) fn peers(&self, _out: &mut KVec<PeerInfo>) -> Result {
        Ok(())
    }

    /// Largest payload of one frame on this domain's rings.
    pub(crate) fn max_payload(&self) -> u32 {
        0
    }

    /// Bytes per channel ring.
    pub(crate) fn ring_size(&self) -> u32 {
        0
    }

    /// Peers the region's layout holds.
    pub(crate) fn max_peers(&self) -> u32 {
        0
    }

    /// Tells the transport that the core expects traffic soon (plain: poll faster now).
    pub(crate) fn kick(&self) {}

    /// Drains every inbound ring and reports to `up`. Called by the domain's worker.
    pub(crate) fn poll_rx(&self, _up: &impl Upcalls) {}
}
