// SPDX-License-Identifier: GPL-2.0

//! The AF_VMCS socket family as the socket layer sees it: its registration (the socket
//! layer's `struct proto`, `vmcs_sock_proto` in the C glue, plus the `net_proto_family`;
//! not to be confused with the wire protocol, `crate::proto`) and accessors of the
//! `struct sock` fields the entry points (module/socket/entry.rs) read and write.
//!
//! Every accessor takes the `struct socket` the socket layer handed to an entry point;
//! the C side reaches its `struct sock` (`sock->sk`).

use kernel::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use kernel::{bindings, error::to_result, prelude::*};

// The C glue's side of module/vmcs_glue.h (sockets). `struct sock` and `struct socket` are
// `void *` here: bindgen's types of them are not FFI-safe by lint.
extern "C" {
    fn vmcs_glue_af() -> c_uint;
    fn vmcs_glue_sock_register(family: c_int) -> c_int;
    fn vmcs_glue_sock_unregister();
    fn vmcs_glue_sk_new(net: *mut bindings::net, sock: *mut c_void, kern: c_int) -> *mut c_void;
    fn vmcs_glue_sk_new_accepted(
        sock: *mut c_void,
        newsock: *mut c_void,
        kern: c_int,
    ) -> *mut c_void;
    fn vmcs_glue_sk_priv(sk: *mut c_void) -> *mut c_void;
    fn vmcs_glue_sk_set_priv(sk: *mut c_void, private: *mut c_void);
    fn vmcs_glue_sk_free(sock: *mut c_void);
    fn vmcs_glue_sk_sndtimeo_ms(sk: *mut c_void) -> c_uint;
    fn vmcs_glue_sk_set_err(sk: *mut c_void, err: c_int);
    fn vmcs_glue_sock_set_state(sock: *mut c_void, state: c_int);
    fn vmcs_glue_sk_rcvtimeo(sk: *mut c_void) -> c_long;
    fn vmcs_glue_sk_sndtimeo(sk: *mut c_void) -> c_long;
    fn vmcs_glue_sk_rcvlowat(sk: *mut c_void) -> c_int;
    fn vmcs_glue_sk_rcvbuf(sk: *mut c_void) -> c_int;
    fn vmcs_glue_sk_sndbuf(sk: *mut c_void) -> c_int;
    fn vmcs_glue_sk_set_bufs(sk: *mut c_void, rcvbuf: c_int, sndbuf: c_int);
    fn vmcs_glue_sockptr_copy(dst: *mut c_void, src: *const c_void, len: c_uint) -> c_int;
    fn vmcs_glue_sockptr_timeval(
        src: *const c_void,
        optlen: c_uint,
        old: bool,
        sec: *mut i64,
        usec: *mut i64,
    ) -> c_int;
    fn vmcs_glue_put_timeout(timeo: c_long, v: *mut c_void, old: bool) -> c_int;
    fn vmcs_glue_hz() -> c_ulong;
    fn vmcs_glue_sk_stream_error(sk: *mut c_void, flags: c_int, err: c_int) -> c_int;
    fn vmcs_glue_sk_zerocopy(sk: *mut c_void) -> bool;
    fn vmcs_glue_sk_set_zerocopy(sk: *mut c_void, on: bool);
    fn vmcs_glue_zerocopy_begin(sk: *mut c_void, len: usize) -> *mut c_void;
    fn vmcs_glue_zerocopy_end(uarg: *mut c_void, sent: bool);
    fn vmcs_glue_recv_errqueue(sk: *mut c_void, msg: *mut bindings::msghdr, len: c_int) -> c_int;
    fn vmcs_glue_sk_errqueue_pending(sk: *mut c_void) -> bool;
    fn vmcs_glue_sk_err(sk: *mut c_void) -> c_int;
    fn vmcs_glue_sk_set_rcvlowat(sk: *mut c_void, val: c_int);
    fn vmcs_glue_sk_busy_poll(sk: *mut c_void) -> c_uint;
    fn vmcs_glue_sk_set_busy_poll(sk: *mut c_void, usec: c_uint);
}

/// `SO_BUSY_POLL` (`sk_ll_usec`) of `sock`, in microseconds (0 without
/// `CONFIG_NET_RX_BUSY_POLL`).
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn busy_poll_us(sock: *mut bindings::socket) -> u32 {
    // SAFETY: `sock->sk` is live (function safety requirement).
    unsafe { vmcs_glue_sk_busy_poll(sk(sock)) }
}

/// Sets what `getsockopt(SO_BUSY_POLL)` reports.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn set_busy_poll_us(sock: *mut bindings::socket, usec: u32) {
    // SAFETY: `sock->sk` is live (function safety requirement).
    unsafe { vmcs_glue_sk_set_busy_poll(sk(sock), usec) };
}

/// The `struct sock` of `sock`.
///
/// # Safety
///
/// `sock` must be valid.
unsafe fn sk(sock: *mut bindings::socket) -> *mut c_void {
    // SAFETY: `sock` is valid (function safety requirement).
    unsafe { (*sock).sk }.cast()
}

/// The `struct socket` state (`SS_*`), informational (sock_diag, fdinfo).
#[derive(Clone, Copy)]
pub(crate) enum SocketState {
    Unconnected,
    Connecting,
    Connected,
}

/// Gives fresh `sock` a new AF_VMCS `struct sock` (`sk_alloc`, `sock_init_data`) with the
/// family's `proto_ops`; false on `ENOMEM`.
///
/// # Safety
///
/// `net` and `sock` must be valid, `sock` fresh (in `create`), its type checked.
pub(crate) unsafe fn new_sk(
    net: *mut bindings::net,
    sock: *mut bindings::socket,
    kern: c_int,
) -> bool {
    // SAFETY: Guaranteed by the caller.
    !unsafe { vmcs_glue_sk_new(net, sock.cast(), kern) }.is_null()
}

/// Gives `newsock`, fresh in `accept` of `sock`, a new `struct sock` in `sock`'s namespace;
/// false on `ENOMEM`.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket and `newsock` fresh.
pub(crate) unsafe fn new_accepted_sk(
    sock: *mut bindings::socket,
    newsock: *mut bindings::socket,
    kern: c_int,
) -> bool {
    // SAFETY: Guaranteed by the caller.
    !unsafe { vmcs_glue_sk_new_accepted(sock.cast(), newsock.cast(), kern) }.is_null()
}

/// Whether `sock` has a `struct sock` (not after a failed create or after release).
///
/// # Safety
///
/// `sock` must be valid.
pub(crate) unsafe fn has_sk(sock: *mut bindings::socket) -> bool {
    // SAFETY: Guaranteed by the caller.
    !unsafe { sk(sock) }.is_null()
}

/// The Rust private pointer of `sock`'s `struct sock` (null until set).
///
/// # Safety
///
/// `sock` must be an AF_VMCS socket with a `struct sock`.
pub(crate) unsafe fn private(sock: *mut bindings::socket) -> *mut c_void {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_priv(sk(sock)) }
}

/// Sets the Rust private pointer of `sock`'s `struct sock`.
///
/// # Safety
///
/// `sock` must be an AF_VMCS socket with a `struct sock`.
pub(crate) unsafe fn set_private(sock: *mut bindings::socket, private: *mut c_void) {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_set_priv(sk(sock), private) };
}

/// Detaches and drops `sock`'s `struct sock` (release); `sock->sk` is null afterwards.
///
/// # Safety
///
/// `sock` must be an AF_VMCS socket with a `struct sock`, being released.
pub(crate) unsafe fn free_sk(sock: *mut bindings::socket) {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_free(sock.cast()) };
}

/// `SO_SNDTIMEO` in ms for `connect()`; 0 when unset.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn send_timeout_ms(sock: *mut bindings::socket) -> u32 {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_sndtimeo_ms(sk(sock)) }
}

/// `SO_RCVTIMEO` (`receive`) or `SO_SNDTIMEO`, in jiffies.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn timeout(sock: *mut bindings::socket, receive: bool) -> c_long {
    // SAFETY: Guaranteed by the caller; the accessors only read.
    unsafe {
        if receive {
            vmcs_glue_sk_rcvtimeo(sk(sock))
        } else {
            vmcs_glue_sk_sndtimeo(sk(sock))
        }
    }
}

/// `SO_RCVLOWAT`.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn receive_lowat(sock: *mut bindings::socket) -> c_int {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_rcvlowat(sk(sock)) }
}

/// `sk_rcvbuf` and `sk_sndbuf` as the socket layer stored them.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn buffers(sock: *mut bindings::socket) -> (c_int, c_int) {
    // SAFETY: Guaranteed by the caller.
    unsafe { (vmcs_glue_sk_rcvbuf(sk(sock)), vmcs_glue_sk_sndbuf(sk(sock))) }
}

/// Stores `SO_RCVBUF`/`SO_SNDBUF` as `getsockopt` should report them.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn set_buffers(sock: *mut bindings::socket, (rcvbuf, sndbuf): (u32, u32)) {
    let c = |v: u32| c_int::try_from(v).unwrap_or(c_int::MAX);
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_set_bufs(sk(sock), c(rcvbuf), c(sndbuf)) };
}

/// Sets the error `SO_ERROR` reports next (`errno` positive).
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn set_error(sock: *mut bindings::socket, errno: c_int) {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_set_err(sk(sock), errno) };
}

/// Sets `sock->state`.
///
/// # Safety
///
/// `sock` must be valid.
pub(crate) unsafe fn set_state(sock: *mut bindings::socket, state: SocketState) {
    let s = match state {
        SocketState::Unconnected => bindings::socket_state_SS_UNCONNECTED,
        SocketState::Connecting => bindings::socket_state_SS_CONNECTING,
        SocketState::Connected => bindings::socket_state_SS_CONNECTED,
    };
    // SAFETY: Guaranteed by the caller; the state is informational.
    unsafe { vmcs_glue_sock_set_state(sock.cast(), s as c_int) };
}

/// A `setsockopt` value: the `sockptr_t` the socket layer handed over and its length.
///
/// # Invariants
///
/// `ptr` points at a `sockptr_t` valid for the `setsockopt` call this value lives in, whose
/// buffer has `len` bytes (user memory is checked on each copy).
pub(crate) struct OptVal {
    ptr: *const c_void,
    len: c_uint,
}

impl OptVal {
    /// Wraps the `sockptr_t` of a `setsockopt` call.
    ///
    /// # Safety
    ///
    /// `ptr` must point at a valid `sockptr_t` for the life of the value.
    pub(crate) unsafe fn new(ptr: *const c_void, len: c_uint) -> Self {
        // INVARIANT: Guaranteed by the caller.
        Self { ptr, len }
    }

    /// The length the caller gave (`optlen`).
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Copies the first `N` bytes: `EFAULT` when they cannot be read. The caller checked the
    /// length.
    pub(crate) fn read<const N: usize>(&self) -> Result<[u8; N]> {
        let mut v = [0u8; N];
        // SAFETY: `v` has room for `N` bytes; `self.ptr` is valid (type invariant).
        to_result(unsafe { vmcs_glue_sockptr_copy(v.as_mut_ptr().cast(), self.ptr, N as c_uint) })?;
        Ok(v)
    }

    /// A `struct timeval` in the old (`__kernel_old_timeval`) or new
    /// (`__kernel_sock_timeval`) layout, as `sock_copy_user_timeval`: `EINVAL` when too short,
    /// `EFAULT`.
    pub(crate) fn timeval(&self, old: bool) -> Result<(i64, i64)> {
        let (mut sec, mut usec) = (0, 0);
        // SAFETY: `self.ptr` is valid (type invariant); the outputs are valid for writes.
        to_result(unsafe {
            vmcs_glue_sockptr_timeval(self.ptr, self.len, old, &mut sec, &mut usec)
        })?;
        Ok((sec, usec))
    }
}

/// A timeout in jiffies as `getsockopt` reports it (`sock_get_timeout`), an old or new
/// timeval, in `out`; returns its size.
pub(crate) fn put_timeout(jiffies: c_long, out: &mut [u8; 16], old: bool) -> usize {
    // SAFETY: `out` has room for the largest timeval (16 bytes).
    let n = unsafe { vmcs_glue_put_timeout(jiffies, out.as_mut_ptr().cast(), old) };
    usize::try_from(n).unwrap_or(0)
}

/// `HZ`, the kernel's jiffies per second.
pub(crate) fn hz() -> u64 {
    // SAFETY: Returns a constant.
    u64::from(unsafe { vmcs_glue_hz() } as u32)
}

/// A failed stream send's error as every stream family reports it (`sk_stream_error`): a
/// pending socket error replaces `EPIPE`, and `EPIPE` raises `SIGPIPE` unless
/// `MSG_NOSIGNAL`. `err` and the result are negative errnos.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket, in its `sendmsg`.
pub(crate) unsafe fn stream_error(sock: *mut bindings::socket, flags: u32, err: c_int) -> c_int {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_stream_error(sk(sock), flags as c_int, err) }
}

/// `SO_ZEROCOPY` (`SOCK_ZEROCOPY`).
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn zerocopy(sock: *mut bindings::socket) -> bool {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_zerocopy(sk(sock)) }
}

/// Sets `SO_ZEROCOPY`.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn set_zerocopy(sock: *mut bindings::socket, on: bool) {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_set_zerocopy(sk(sock), on) }
}

/// One `MSG_ZEROCOPY` completion (`SO_EE_CODE_ZEROCOPY_COPIED`), taken before a send and
/// queued on the error queue by [`ZeroCopy::end`] when the send sent bytes.
///
/// # Invariants
///
/// `uarg` is a `ubuf_info` from `msg_zerocopy_realloc`, ended exactly once (by `end` or on
/// drop).
pub(crate) struct ZeroCopy {
    uarg: *mut c_void,
}

impl ZeroCopy {
    /// Takes a completion for a send of up to `len` bytes; `ENOMEM` (the send must fail,
    /// as vsock's).
    ///
    /// # Safety
    ///
    /// `sock` must be a live AF_VMCS socket, in its `sendmsg` (process context), and the
    /// value must be ended before the call returns.
    pub(crate) unsafe fn begin(sock: *mut bindings::socket, len: usize) -> Result<Self> {
        // SAFETY: Guaranteed by the caller.
        let uarg = unsafe { vmcs_glue_zerocopy_begin(sk(sock), len) };
        if uarg.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: just taken.
        Ok(Self { uarg })
    }

    /// Queues the completion if `sent` (else gives its id back).
    pub(crate) fn end(self, sent: bool) {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: By the type invariant `uarg` is live and not ended yet; `ManuallyDrop`
        // keeps `drop` from ending it again.
        unsafe { vmcs_glue_zerocopy_end(this.uarg, sent) };
    }
}

impl Drop for ZeroCopy {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `uarg` is live and not ended yet.
        unsafe { vmcs_glue_zerocopy_end(self.uarg, false) };
    }
}

/// `recvmsg(MSG_ERRQUEUE)`: the next error queue entry (`sock_recv_errqueue`); bytes or a
/// negative errno.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket and `m` the `msghdr` of its `recvmsg`.
pub(crate) unsafe fn recv_errqueue(
    sock: *mut bindings::socket,
    m: *mut bindings::msghdr,
    len: usize,
) -> c_int {
    let len = c_int::try_from(len).unwrap_or(c_int::MAX);
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_recv_errqueue(sk(sock), m, len) }
}

/// Whether the error queue holds an entry (`POLLERR`).
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn errqueue_pending(sock: *mut bindings::socket) -> bool {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_errqueue_pending(sk(sock)) }
}

/// The pending socket error (`sk_err`, positive; 0 when none).
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket.
pub(crate) unsafe fn error(sock: *mut bindings::socket) -> c_int {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_err(sk(sock)) }
}

/// The Rust private pointer of a live AF_VMCS `struct sock` (for the ops that get the
/// `struct sock` only).
///
/// # Safety
///
/// `sk` must be a live AF_VMCS `struct sock`.
pub(crate) unsafe fn sk_private(sk: *mut c_void) -> *mut c_void {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_priv(sk) }
}

/// Stores `SO_RCVLOWAT` (0 is 1, as the socket layer does).
///
/// # Safety
///
/// `sk` must be a live AF_VMCS `struct sock`.
pub(crate) unsafe fn sk_set_rcvlowat(sk: *mut c_void, val: c_int) {
    // SAFETY: Guaranteed by the caller.
    unsafe { vmcs_glue_sk_set_rcvlowat(sk, val) }
}

/// Whether the socket's file is `O_NONBLOCK` (kernel sockets have no file).
///
/// # Safety
///
/// `sock` must be valid.
pub(crate) unsafe fn nonblocking(sock: *mut bindings::socket) -> bool {
    // SAFETY: `sock` is valid; `file` is null or valid while the socket is in use.
    let file = unsafe { (*sock).file };
    // SAFETY: As above.
    !file.is_null() && unsafe { super::file::nonblocking(file) }
}

/// The AF_VMCS family number: the `af` module parameter (0: no socket family), declared in
/// the C glue because parameters of `module!` do not appear in sysfs, and `af` must be
/// readable in /sys/module/vmcs/parameters/af.
pub(crate) fn af_param() -> u32 {
    // SAFETY: Reads a module parameter, set before init and read-only in sysfs.
    unsafe { vmcs_glue_af() }
}

/// The registration of the AF_VMCS socket family (`proto_register` + `sock_register`).
///
/// # Invariants
///
/// When `registered` is true, the family is registered, and unregistered exactly once in
/// `drop`.
pub(crate) struct SocketFamilyRegistration {
    registered: bool,
}

impl SocketFamilyRegistration {
    /// Registers family `af`; `af` 0 registers nothing. A number in use fails with a
    /// message (`EEXIST`).
    pub(crate) fn register(af: u32) -> Result<Self> {
        if af == 0 {
            return Ok(Self { registered: false });
        }
        let family = c_int::try_from(af).map_err(|_| EINVAL)?;
        // SAFETY: Registers static tables of the C glue; `drop` unregisters them.
        let r = to_result(unsafe { vmcs_glue_sock_register(family) });
        match r {
            Ok(()) => {
                pr_info!("AF_VMCS registered as address family {}\n", af);
                // INVARIANT: registered just now.
                Ok(Self { registered: true })
            }
            Err(e) if e == EEXIST => {
                pr_err!(
                    "address family {} is taken by another protocol: load vmcs with af=<free \
                     number> or af=0 (docs/sockets.md)\n",
                    af
                );
                Err(e)
            }
            Err(e) => {
                pr_err!("cannot register address family {}: {:?}\n", af, e);
                Err(e)
            }
        }
    }
}

impl Drop for SocketFamilyRegistration {
    fn drop(&mut self) {
        if self.registered {
            // SAFETY: By the type invariant the family is registered.
            unsafe { vmcs_glue_sock_unregister() };
        }
    }
}
