// SPDX-License-Identifier: GPL-2.0

//! The module parameters that tune the layers below the crate root, read once per probe.
//! (`module!` in vmcs_drv.rs declares them; this file only reads and clamps them.)

use crate::transport::{ivshmem::Params, vsock};

/// The transport's tunables, from the module parameters, clamped to sane ranges.
pub(crate) fn transport() -> Params {
    let period = (*crate::module_parameters::hb_period_ms.value()).clamp(10, 10_000);
    Params {
        max_peers: (*crate::module_parameters::max_peers.value()).clamp(2, 64),
        hb_period_ms: period,
        hb_timeout_ms: (*crate::module_parameters::hb_timeout_ms.value())
            .max(period.saturating_mul(3)),
        bulk_percent: (*crate::module_parameters::bulk_percent.value()).min(50),
        poll_us: (*crate::module_parameters::poll_us.value()).clamp(20, 10_000),
    }
}

/// The default busy-poll window in microseconds (`busy_poll_us`, at most
/// [`crate::uapi::MAX_BUSY_POLL_US`]; conn/endpoint/busy_poll.rs).
pub(crate) fn busy_poll_us() -> u32 {
    (*crate::module_parameters::busy_poll_us.value()).min(crate::uapi::MAX_BUSY_POLL_US)
}

/// The per-domain cap on receive memory in bytes (`rx_mem_max_kb`, clamped to
/// 256 KiB .. 4 GiB; conn/rx_mem.rs).
pub(crate) fn rx_mem_max() -> usize {
    let kb = (*crate::module_parameters::rx_mem_max_kb.value()).clamp(256, 4 << 20);
    (kb as usize).saturating_mul(1024)
}

/// The vsock transport's tunables, or `None` when it is off (`vsock=0`).
pub(crate) fn vsock() -> Option<vsock::Params> {
    if *crate::module_parameters::vsock.value() == 0 {
        return None;
    }
    let t = transport();
    Some(vsock::Params {
        port: *crate::module_parameters::vsock_port.value(),
        hb_period_ms: t.hb_period_ms,
        hb_timeout_ms: t.hb_timeout_ms,
    })
}

/// The default encryption policy of new domains (`encrypt`: 0 off, 1 allow, 2 require;
/// the domain turns any other value into `allow`, with a warning; docs/security.md).
pub(crate) fn encrypt() -> u32 {
    *crate::module_parameters::encrypt.value()
}
