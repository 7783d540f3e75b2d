//! vmcs-ivshmem-server: a host-side server speaking QEMU's ivshmem-server
//! protocol (docs/specs/ivshmem-spec.rst in QEMU) for `ivshmem-doorbell`.
//!
//! * [`registry`]: the pure protocol state machine (ids, message plans).
//! * [`wire`]: message framing (int64 LE + optional SCM_RIGHTS descriptor).
//! * [`server`]: sockets, eventfds and the poll loop.
//! * [`files`]: shared memory, socket and pidfile with cleanup on drop.
//! * [`config`]: command-line options.

pub mod config;
pub mod files;
pub mod log;
pub mod registry;
pub mod server;
pub mod wire;

pub use config::Config;
pub use server::Server;
