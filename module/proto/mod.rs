// SPDX-License-Identifier: GPL-2.0

//! The shared-memory protocol: the very files of the host crate in rust/src, compiled into
//! the module through `#[path]` (no copy). See docs/protocol.md.
//!
//! The protocol files are `no_std`, use only `core` and contain no `unsafe`; all access to
//! the region goes through [`shm::Shm`], which `glue::SharedRegion` implements with the
//! kernel's atomics and barriers.

// The transport uses the protocol piece by piece as it lands; until then parts are unused.
#![allow(dead_code)]
// The files are the public API of the host crate, so their items are `pub`; inside the
// module they are reachable from this crate only.
#![allow(unreachable_pub)]
#![forbid(unsafe_code)]

#[path = "../../rust/src/bulk.rs"]
pub(crate) mod bulk;
#[path = "../../rust/src/flow.rs"]
pub(crate) mod flow;
#[path = "../../rust/src/frame.rs"]
pub(crate) mod frame;
#[path = "../../rust/src/layout.rs"]
pub(crate) mod layout;
#[path = "../../rust/src/peer.rs"]
pub(crate) mod peer;
#[path = "../../rust/src/ring.rs"]
pub(crate) mod ring;
#[path = "../../rust/src/shm.rs"]
pub(crate) mod shm;
