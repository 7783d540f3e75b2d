// SPDX-License-Identifier: GPL-2.0

//! The core of vmcs: ports, connections and flow control, shared by /dev/vmcs and AF_VMCS.
//!
//! STUB: the implementation is being written. The core calls its domain's transport only
//! through `transport::ivshmem::Link`'s API and is called by it only through
//! `transport::Upcalls`.

use crate::{proto::frame::FrameHeader, transport::Upcalls};
use kernel::prelude::*;

/// Ports and connections of one domain.
#[pin_data]
pub(crate) struct Core {}

impl Core {
    /// Creates an empty core.
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {})
    }
}

impl Upcalls for Core {
    fn deliver(&self, _peer: u32, _hdr: &FrameHeader, _payload: &[u8]) {}
    fn peer_reset(&self, _peer: u32) {}
    fn tx_space(&self, _peer: u32) {}
}
