//! vmcs shared-memory protocol: region layout, peer table, per-pair SPSC rings,
//! frame format and credit-based flow control. See `docs/protocol.md`.
//!
//! Every protocol module is a self-contained file that the kernel module also
//! compiles through `#[path]`; they refer to each other only as `super::x`.
//! `host` (an [`shm::Shm`] over ordinary memory) is for userspace only.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]
// Nothing read from shared memory may panic: no indexing, unwrap or panics
// in the protocol files (tests are exempt).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

pub mod bulk;
pub mod flow;
pub mod frame;
pub mod layout;
pub mod peer;
pub mod ring;
pub mod shm;

#[allow(
    unsafe_code,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]
pub mod host;
