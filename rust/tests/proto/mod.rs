//! The protocol files, included the way the kernel module includes them.
#![allow(dead_code, unreachable_pub)]

#[path = "../../src/bulk.rs"]
pub(crate) mod bulk;
#[path = "../../src/flow.rs"]
pub(crate) mod flow;
#[path = "../../src/frame.rs"]
pub(crate) mod frame;
#[path = "../../src/layout.rs"]
pub(crate) mod layout;
#[path = "../../src/peer.rs"]
pub(crate) mod peer;
#[path = "../../src/ring.rs"]
pub(crate) mod ring;
#[path = "../../src/shm.rs"]
pub(crate) mod shm;
