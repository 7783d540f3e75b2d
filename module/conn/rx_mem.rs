// SPDX-License-Identifier: GPL-2.0

//! The per-domain cap on receive memory (module parameter `rx_mem_max_kb`).
//!
//! Every connection advertises a receive credit (default 256 KiB, up to 4 MiB) that is a
//! promise, not an allocation: the receive queue grows as bytes arrive. Without a cap a
//! peer that fills many connections whose readers do not read makes this guest allocate
//! the sum of all credits. Each receive queue charges the bytes it holds (the capacity
//! of its buffers) to its domain's [`RxMem`] before it grows; a frame that would pass
//! the cap resets its own connection (`ResetReason::RxMemory`, docs/architecture.md).

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Bytes held by the receive queues of one domain, and their cap.
pub(crate) struct RxMem {
    used: AtomicUsize,
    max: usize,
    /// Frames refused for the cap (the log line is rate-limited on it).
    refused: AtomicUsize,
}

impl RxMem {
    /// An empty account capped at `max` bytes.
    pub(crate) const fn new(max: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            max,
            refused: AtomicUsize::new(0),
        }
    }

    /// Charges `n` bytes if they fit under the cap; `false` (nothing charged) if not.
    pub(super) fn try_charge(&self, n: usize) -> bool {
        self.used
            .fetch_update(Relaxed, Relaxed, |u| {
                u.checked_add(n).filter(|&t| t <= self.max)
            })
            .is_ok()
    }

    /// Returns `n` charged bytes.
    pub(super) fn uncharge(&self, n: usize) {
        // Saturating: a bug here must not wrap the account into "always full".
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |u| Some(u.saturating_sub(n)));
    }

    /// Counts a refused frame; `true` when it should be logged (the 1st, 2nd, 4th, 8th ...).
    pub(super) fn refused(&self) -> bool {
        (self.refused.fetch_add(1, Relaxed) + 1).is_power_of_two()
    }
}
