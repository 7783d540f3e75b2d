// SPDX-License-Identifier: GPL-2.0

//! Why a connection was reset, so that a reset keeps its reason: the receive path returns
//! `Result<_, Violation>`, every reset records a [`ResetReason`] in its connection
//! (`vmcs ss`, column `reset_reason`) and counts it in its domain (debugfs `resets`).
//! docs/architecture.md ("Reset reasons") lists them.

use crate::transport::PeerLoss;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A bulk area frame that breaks docs/protocol.md §8.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BulkViolation {
    /// The payload is no valid descriptor (length, encoding).
    Descriptor,
    /// A `BULK_OFFER` whose extent is not a page-aligned range of the peer's own slice.
    Extent,
    /// A second `BULK_OFFER`, or one after the bulk set-up ended.
    SecondOffer,
    /// `BULK_DATA` before both sides offered an extent.
    NoExtent,
    /// `BULK_DATA` outside the extent, empty, or overlapping a range we hold.
    Range,
    /// More ranges lent at once than `MAX_DESCS`.
    TooMany,
    /// `BULK_RELEASE` of anything but our oldest lent range.
    Release,
}

/// A protocol violation by the peer, found by the receive path of a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Violation {
    /// A frame whose socket type is not the connection's.
    TypeMismatch,
    /// Credit counters that go backwards or claim bytes never sent.
    BadCredit,
    /// An `RW` frame beyond the receive credit (or whose payload is not its header's length).
    CreditOverrun,
    /// A message longer than `VMCS_MAX_MSG_SIZE` or too many empty messages.
    MessageLimit,
    /// A frame the connection's state does not allow (data before the connection is up,
    /// a second `RESPONSE`, an unknown op).
    UnexpectedFrame,
    /// A bulk area frame that breaks the bulk rules.
    Bulk(BulkViolation),
}

/// Why a connection was reset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ResetReason {
    /// The peer sent `RST` on an established connection (not after shutting both ways).
    PeerReset,
    /// The transport reset the peer (`Upcalls::peer_reset`): it left, restarted, timed
    /// out or corrupted a ring, or this guest was evicted or leaves the domain.
    PeerLost(PeerLoss),
    /// The transport refused a frame because the peer is not live (any more).
    Unreachable,
    /// This side reset it: closed with unread data, a listener closed with connections
    /// not yet accepted, or no memory for a control frame.
    Local,
    /// The peer broke the protocol.
    Violation(Violation),
    /// A frame would have passed the domain's cap on receive memory (`rx_mem_max_kb`,
    /// conn/rx_mem.rs), or no memory was left to queue it.
    RxMemory,
    /// An encrypted `RW` frame failed verification (altered, replayed, reordered, dropped
    /// or truncated; conn/crypto.rs).
    Decrypt,
}

impl From<Violation> for ResetReason {
    fn from(v: Violation) -> Self {
        ResetReason::Violation(v)
    }
}

impl From<BulkViolation> for Violation {
    fn from(b: BulkViolation) -> Self {
        Violation::Bulk(b)
    }
}

/// Names of the debugfs `resets` rows, in [`ResetReason::index`] order, then
/// [`UNKNOWN_CONNECTION`] (a frame for no connection, answered with `RST`).
const NAMES: [&str; COUNTERS] = [
    "peer_reset",
    "peer_left",
    "peer_restarted",
    "peer_timeout",
    "ring_corrupt",
    "evicted",
    "unbound",
    "unreachable",
    "local",
    "type_mismatch",
    "bad_credit",
    "credit_overrun",
    "message_limit",
    "unexpected_frame",
    "bulk_descriptor",
    "bulk_extent",
    "bulk_second_offer",
    "bulk_no_extent",
    "bulk_range",
    "bulk_too_many",
    "bulk_release",
    "rx_memory",
    "decrypt",
    "unknown_connection",
];

/// Number of counters of [`ResetCounts`].
const COUNTERS: usize = 24;

/// Index of the counter of frames for no connection.
pub(crate) const UNKNOWN_CONNECTION: usize = COUNTERS - 1;

impl ResetReason {
    /// Position in the debugfs `resets` table.
    fn index(self) -> usize {
        match self {
            ResetReason::PeerReset => 0,
            ResetReason::PeerLost(cause) => match cause {
                PeerLoss::Left => 1,
                PeerLoss::Restarted => 2,
                PeerLoss::HeartbeatTimeout => 3,
                PeerLoss::RingCorrupt => 4,
                PeerLoss::Evicted => 5,
                PeerLoss::Unbound => 6,
            },
            ResetReason::Unreachable => 7,
            ResetReason::Local => 8,
            ResetReason::Violation(v) => match v {
                Violation::TypeMismatch => 9,
                Violation::BadCredit => 10,
                Violation::CreditOverrun => 11,
                Violation::MessageLimit => 12,
                Violation::UnexpectedFrame => 13,
                Violation::Bulk(b) => match b {
                    BulkViolation::Descriptor => 14,
                    BulkViolation::Extent => 15,
                    BulkViolation::SecondOffer => 16,
                    BulkViolation::NoExtent => 17,
                    BulkViolation::Range => 18,
                    BulkViolation::TooMany => 19,
                    BulkViolation::Release => 20,
                },
            },
            ResetReason::RxMemory => 21,
            ResetReason::Decrypt => 22,
        }
    }

    /// The reason's name (no spaces), as debugfs `resets` and `connections` show it.
    pub(crate) fn name(self) -> &'static str {
        NAMES[self.index()]
    }
}

/// Resets per reason in one domain, and frames for no connection (debugfs `resets`).
pub(crate) struct ResetCounts([AtomicU64; COUNTERS]);

impl ResetCounts {
    pub(crate) const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; COUNTERS])
    }

    /// Counts one reset for `reason`.
    pub(crate) fn count(&self, reason: ResetReason) {
        self.bump(reason.index());
    }

    /// Counts one event at `index` (a [`ResetReason`]'s or [`UNKNOWN_CONNECTION`]).
    pub(crate) fn bump(&self, index: usize) {
        if let Some(c) = self.0.get(index) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Writes the table: a header line `reason count`, then one line per reason.
    pub(crate) fn show(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        writeln!(out, "reason count")?;
        for (name, c) in NAMES.iter().zip(self.0.iter()) {
            writeln!(out, "{} {}", name, c.load(Relaxed))?;
        }
        Ok(())
    }
}
