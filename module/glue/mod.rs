// SPDX-License-Identifier: GPL-2.0

//! The one place where vmcs uses raw `bindings::` and talks to its C glue (vmcs_glue.c).
//!
//! Every file here wraps a C interface the `kernel` crate has no abstraction for, in a small
//! safe type or a narrow `unsafe fn`: the shared region mapping ([`region`]), the files of
//! /dev/vmcs with their mappings and faults ([`file`]), the misc device ([`misc`]) and
//! socket family ([`socket`]) registrations, user memory for the one-copy data path
//! ([`uiter`]), the vmcsN net device and its socket buffers ([`net`]), a spinlock with
//! bottom halves off ([`sync`]), workqueue helpers ([`work`]), errnos ([`errno`]) and poll
//! masks the kernel crate lacks.
//!
//! It imports nothing of vmcs but the wire protocol (`proto`, for [`region`]'s `Shm`) and
//! `uapi`: no layer above reaches back through here (ci/import-graph.py checks it). The C
//! entry points that call up into the interfaces live beside them, in
//! module/chardev/entry.rs and module/socket/entry.rs, which nothing in Rust imports.

pub(crate) mod crypto;
pub(crate) mod errno;
pub(crate) mod file;
pub(crate) mod misc;
pub(crate) mod net;
pub(crate) mod region;
pub(crate) mod sched;
pub(crate) mod socket;
pub(crate) mod sync;
pub(crate) mod sysfs;
pub(crate) mod uiter;
pub(crate) mod vsock;
pub(crate) mod work;

pub(crate) use file::{DevFilePrivate, Fault, FileMapping};
pub(crate) use misc::MiscRegistration;
pub(crate) use region::SharedRegion;
pub(crate) use socket::{af_param, SocketFamilyRegistration};
pub(crate) use uiter::UserIter;
pub(crate) use work::{flush_delayed_work, mod_delayed_work, wq};

use kernel::bindings;
use kernel::ffi::c_int;

/// Whether the current task may bind ports below 1024 (`CAP_NET_BIND_SERVICE`).
pub(crate) fn capable_net_bind_service() -> bool {
    // SAFETY: `capable` only inspects the current task's credentials.
    unsafe { bindings::capable(bindings::CAP_NET_BIND_SERVICE as c_int) }
}

/// Whether the current task may change the access-control policy (`CAP_NET_ADMIN`).
pub(crate) fn capable_net_admin() -> bool {
    // SAFETY: `capable` only inspects the current task's credentials.
    unsafe { bindings::capable(bindings::CAP_NET_ADMIN as c_int) }
}

/// A random u64 (`get_random_u64`): the identity of a region this guest initialises.
pub(crate) fn random_u64() -> u64 {
    // SAFETY: `get_random_u64` has no preconditions (it may block only before the crng is
    // ready, which it never does after early boot).
    unsafe { bindings::get_random_u64() }
}

/// `O_NONBLOCK` and `O_CLOEXEC`, the flags `VMCS_IOC_ACCEPT` takes.
pub(crate) mod oflags {
    /// `O_NONBLOCK`.
    pub(crate) const NONBLOCK: u32 = kernel::bindings::O_NONBLOCK;
    /// `O_CLOEXEC`.
    pub(crate) const CLOEXEC: u32 = kernel::bindings::O_CLOEXEC;
}

/// Poll event bits (`EPOLL*` in include/uapi/linux/eventpoll.h; bindgen cannot see them
/// because C defines them through `__poll_t` casts). These values are user ABI.
pub(crate) mod poll_mask {
    /// Readable (`EPOLLIN | EPOLLRDNORM`).
    pub(crate) const IN: u32 = 0x0001 | 0x0040;
    /// Writable (`EPOLLOUT | EPOLLWRNORM`).
    pub(crate) const OUT: u32 = 0x0004 | 0x0100;
    /// Error (`EPOLLERR`).
    pub(crate) const ERR: u32 = 0x0008;
    /// Hang-up (`EPOLLHUP`).
    pub(crate) const HUP: u32 = 0x0010;
    /// The peer shut its sending side, or this side its receiving one (`EPOLLRDHUP`).
    pub(crate) const RDHUP: u32 = 0x2000;
}
