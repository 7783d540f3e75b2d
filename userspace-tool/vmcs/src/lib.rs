//! vmcs: VM-to-VM communication over QEMU ivshmem shared memory, from userspace.
//!
//! [`VmcsListener`] and [`VmcsStream`] work like `std::net`'s TCP types, with message
//! (seqpacket) semantics: each write is one message, each read returns one. They talk to the
//! module through `/dev/vmcs` ioctls or, once the module publishes an AF_VMCS family in
//! `/sys/module/vmcs/parameters/af`, through AF_VMCS sockets ([`Backend`]).
//!
//! ```no_run
//! use std::io::{Read, Write};
//! let mut s = vmcs::VmcsStream::connect("2:5000".parse::<vmcs::VmcsAddr>()?)?;
//! s.write_all(b"hello")?;
//! let mut buf = [0u8; vmcs::MAX_MSG_SIZE];
//! let n = s.read(&mut buf)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod addr;
pub mod backend;
pub mod bulk;
pub mod crypto;
pub mod error;
pub mod info;
pub mod net;
pub mod policy;
/// The raw user API (`include/vmcs.h`): the `vmcs-sys` crate.
pub use vmcs_sys as sys;
#[cfg(feature = "tokio")]
pub mod tokio;
pub mod xfer;

pub use addr::{AddrParseError, VmcsAddr, CID_ANY, CID_LOCAL, PORT_ANY};
pub use backend::Backend;
pub use error::{Error, Result};
pub use info::{info, info_all, module_version, Info, PeerInfo, PeerState, Transport};
pub use net::{Incoming, VmcsListener, VmcsSeqpacket, VmcsStream, MAX_MSG_SIZE};
