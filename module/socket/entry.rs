// SPDX-License-Identifier: GPL-2.0

//! The C entry points of AF_VMCS: the `proto_ops` and `net_proto_family` tables of
//! vmcs_glue.c forward to these functions, which forward to [`VmcsSocket`]. Nothing in
//! Rust imports this file.

use super::{msg, SocketOptions, VmcsSocket, DEFAULT_SOCKET_BUFFERS};
use crate::{
    conn::Timeout,
    glue::{
        errno, oflags,
        socket::{self as sk, OptVal, SocketState},
    },
    uapi::SockaddrVmcs,
};
use kernel::ffi::{c_int, c_uint, c_ulong, c_void};
use kernel::{
    bindings,
    fs::File,
    iov::{IovIterDest, IovIterSource},
    prelude::*,
    sync::{poll::PollTable, Arc, ArcBorrow},
    types::ForeignOwnable,
    uaccess::{UserPtr, UserSlice},
};

/// The options of a live AF_VMCS socket's `struct sock` for one receive (`receive`) or send.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket (its `sk` set).
unsafe fn socket_options(
    sock: *mut bindings::socket,
    receive: bool,
    nonblock: bool,
) -> SocketOptions {
    // SAFETY: `sock` is live (function safety requirement); the accessors only read.
    let (timeout, lowat) = unsafe { (sk::timeout(sock, receive), sk::receive_lowat(sock)) };
    SocketOptions {
        timeout: if nonblock {
            Timeout(0)
        } else {
            Timeout(timeout)
        },
        lowat: usize::try_from(lowat).unwrap_or(1).max(1),
    }
}

/// Borrows the `VmcsSocket` of a socket.
///
/// # Safety
///
/// `sock` must be an AF_VMCS socket whose `create` (or `accept`) succeeded and that is not
/// yet released.
unsafe fn vmcs_socket<'a>(sock: *mut bindings::socket) -> ArcBorrow<'a, VmcsSocket> {
    // SAFETY: Per the safety requirements `sock->sk` is ours and its private pointer holds
    // an `Arc<VmcsSocket>` until release, which does not run concurrently with other ops.
    unsafe { <Arc<VmcsSocket> as ForeignOwnable>::borrow(sk::private(sock)) }
}

/// Makes the `struct sock` of `sock` own `socket`.
///
/// # Safety
///
/// `sock` must have a fresh AF_VMCS `struct sock` without a private pointer.
unsafe fn attach(sock: *mut bindings::socket, socket: Arc<VmcsSocket>) {
    // SAFETY: Per the safety requirements; release takes the `Arc` back.
    unsafe { sk::set_private(sock, socket.into_foreign()) };
}

fn to_int(r: Result) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Copies `len` bytes of a socket address the socket layer copied into kernel memory.
///
/// # Safety
///
/// `addr` must be valid for reads of `len` bytes when `len` is positive.
unsafe fn addr_bytes<'a>(addr: *const bindings::sockaddr_unsized, len: c_int) -> &'a [u8] {
    match usize::try_from(len) {
        // SAFETY: Per the safety requirements.
        Ok(n) if n > 0 && !addr.is_null() => unsafe {
            core::slice::from_raw_parts(addr.cast::<u8>(), n)
        },
        _ => &[],
    }
}

/// # Safety
///
/// Called by `__sock_create` with a fresh `sock` of `net`.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_create(
    net: *mut bindings::net,
    sock: *mut bindings::socket,
    protocol: c_int,
    kern: c_int,
) -> c_int {
    // SAFETY: `sock` is valid (function safety requirement).
    let ty = c_int::from(unsafe { (*sock).type_ });
    let socket = match VmcsSocket::create(ty, protocol) {
        Ok(s) => s,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: `net` and `sock` are valid; the type was checked by `create`.
    if !unsafe { sk::new_sk(net, sock, kern) } {
        socket.release();
        return ENOMEM.to_errno();
    }
    let busy = socket.busy_poll();
    // SAFETY: `sock->sk` is fresh and now ours.
    unsafe {
        attach(sock, socket);
        sk::set_buffers(sock, DEFAULT_SOCKET_BUFFERS);
        sk::set_busy_poll_us(sock, busy);
    }
    0
}

/// # Safety
///
/// Called by the C glue's `setsockopt` after the socket layer stored `SO_BUSY_POLL` of the
/// live AF_VMCS socket `sock`.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_busy_poll_changed(sock: *mut bindings::socket) {
    // SAFETY: `sock` is live (function safety requirement).
    let (s, us) = unsafe { (vmcs_socket(sock), sk::busy_poll_us(sock)) };
    let us = s.set_busy_poll(us);
    // SAFETY: `sock` is live.
    unsafe { sk::set_busy_poll_us(sock, us) };
}

/// # Safety
///
/// Called by the C glue's `setsockopt` after the socket layer stored `SO_RCVBUF` or
/// `SO_SNDBUF` (or their `FORCE` forms) of the live AF_VMCS socket `sock`.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_bufs_changed(sock: *mut bindings::socket) {
    // SAFETY: `sock` is live (function safety requirement).
    let (s, (rcvbuf, sndbuf)) = unsafe { (vmcs_socket(sock), sk::buffers(sock)) };
    let bufs = s.set_bufs(rcvbuf, sndbuf);
    // SAFETY: `sock` is live.
    unsafe { sk::set_buffers(sock, bufs) };
}

/// # Safety
///
/// Called by the C glue's `setsockopt` for levels other than `SOL_SOCKET` and for
/// `SO_ZEROCOPY`, on the live AF_VMCS socket `sock`; `optval` points at the call's
/// `sockptr_t` of `optlen` bytes.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_setsockopt(
    sock: *mut bindings::socket,
    level: c_int,
    optname: c_int,
    optval: *const c_void,
    optlen: c_uint,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let (s, v) = unsafe { (vmcs_socket(sock), OptVal::new(optval, optlen)) };
    match s.setsockopt(level, optname, &v) {
        Ok(Some(on)) => {
            // SAFETY: `sock` is live.
            unsafe { sk::set_zerocopy(sock, on) };
            0
        }
        Ok(None) => {
            // A buffer size option may have changed the receive buffer.
            let bufs = s.sk_bufs();
            // SAFETY: `sock` is live.
            unsafe { sk::set_buffers(sock, bufs) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the C glue's `getsockopt` for levels other than `SOL_SOCKET`, on the live
/// AF_VMCS socket `sock`; `v` valid for 16 bytes.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_getsockopt(
    sock: *mut bindings::socket,
    level: c_int,
    optname: c_int,
    v: *mut u8,
    len: c_int,
) -> c_int {
    // SAFETY: Guaranteed by the caller: `v` is 16 writable bytes, not aliased.
    let (s, out) = unsafe { (vmcs_socket(sock), &mut *v.cast::<[u8; 16]>()) };
    match s.getsockopt(level, optname, out, len) {
        Ok(n) => n as c_int,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `proto_ops->set_rcvlowat` of a live AF_VMCS socket's `struct sock` `sk`, called by
/// `sock_setsockopt(SO_RCVLOWAT)`.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_set_rcvlowat(sk: *mut c_void, val: c_int) -> c_int {
    // SAFETY: `sk` is live and ours (function safety requirement); its private pointer holds
    // the `Arc<VmcsSocket>` while the socket is in use.
    let s = unsafe { <Arc<VmcsSocket> as ForeignOwnable>::borrow(sk::sk_private(sk)) };
    if let Err(e) = s.check_rcvlowat(val) {
        return e.to_errno();
    }
    // SAFETY: `sk` is live.
    unsafe { sk::sk_set_rcvlowat(sk, val) };
    0
}

/// # Safety
///
/// `proto_ops->release` of an AF_VMCS socket.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_release(sock: *mut bindings::socket) -> c_int {
    // SAFETY: `sock` is valid; `sk` is null after a failed create or a second release.
    if !unsafe { sk::has_sk(sock) } {
        return 0;
    }
    // SAFETY: `sock->sk` is ours; release runs once, after every other op.
    let private = unsafe { sk::private(sock) };
    if !private.is_null() {
        // SAFETY: Set by `attach` from `Arc::into_foreign`; cleared below.
        let socket = unsafe { <Arc<VmcsSocket> as ForeignOwnable>::from_foreign(private) };
        // SAFETY: `sock->sk` is ours.
        unsafe { sk::set_private(sock, core::ptr::null_mut()) };
        socket.release();
    }
    // SAFETY: `sock` owns `sk`; this drops it and clears `sock->sk`.
    unsafe { sk::free_sk(sock) };
    0
}

/// # Safety
///
/// `proto_ops->bind` of a live AF_VMCS socket; `addr` valid for `len` bytes.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_bind(
    sock: *mut bindings::socket,
    addr: *mut bindings::sockaddr_unsized,
    len: c_int,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let (s, a) = unsafe { (vmcs_socket(sock), addr_bytes(addr, len)) };
    to_int(s.bind(a))
}

/// # Safety
///
/// `proto_ops->connect` of a live AF_VMCS socket; `addr` valid for `len` bytes.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_connect(
    sock: *mut bindings::socket,
    addr: *mut bindings::sockaddr_unsized,
    len: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let (s, a, timeout) = unsafe {
        (
            vmcs_socket(sock),
            addr_bytes(addr, len),
            sk::send_timeout_ms(sock),
        )
    };
    // The flags are the file's `f_flags`; `O_NONBLOCK` fits.
    let nonblock = (flags as u32) & oflags::NONBLOCK != 0;
    let mut r = s.connect(a, nonblock, timeout);
    if nonblock {
        // As vsock, a non-blocking connect always reports `EINPROGRESS` (loopback answers
        // before the call returns): the result shows in poll and `SO_ERROR`.
        match r {
            Ok(()) => r = Err(errno::einprogress()),
            Err(e) if e == errno::econnreset() => {
                // SAFETY: `sock` is live; `sk_err` is what `SO_ERROR` reports.
                unsafe { sk::set_error(sock, -e.to_errno()) };
                r = Err(errno::einprogress());
            }
            Err(_) => {}
        }
    }
    let state = match r {
        Ok(()) => SocketState::Connected,
        Err(_) if s.connected() => SocketState::Connected,
        Err(e) if e == errno::einprogress() || e == errno::ealready() => SocketState::Connecting,
        Err(_) => SocketState::Unconnected,
    };
    // SAFETY: `sock` is valid; the state is informational (sock_diag, fdinfo).
    unsafe { sk::set_state(sock, state) };
    to_int(r)
}

/// # Safety
///
/// `proto_ops->accept` of a live AF_VMCS socket; `newsock` a fresh socket of the same
/// type and ops.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_accept(
    sock: *mut bindings::socket,
    newsock: *mut bindings::socket,
    flags: c_int,
    kern: c_int,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let s = unsafe { vmcs_socket(sock) };
    let nonblock = (flags as u32) & oflags::NONBLOCK != 0;
    // SAFETY: `sock` is live. `sock_rcvtimeo()`: accept waits at most SO_RCVTIMEO.
    let timeout = unsafe { socket_options(sock, true, nonblock) }.timeout;
    let child = match s.accept(timeout) {
        Ok(c) => c,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: `sock` is live and `newsock` fresh.
    if !unsafe { sk::new_accepted_sk(sock, newsock, kern) } {
        child.release();
        return ENOMEM.to_errno();
    }
    // The connection inherited the listener's buffers; so do the options that show them.
    let bufs = child.sk_bufs();
    let busy = child.busy_poll();
    // SAFETY: `newsock->sk` is fresh; `newsock` is valid.
    unsafe {
        attach(newsock, child);
        sk::set_buffers(newsock, bufs);
        sk::set_busy_poll_us(newsock, busy);
        sk::set_state(newsock, SocketState::Connected);
    }
    0
}

/// # Safety
///
/// `proto_ops->getname` of a live AF_VMCS socket; `addr` valid for a
/// `struct sockaddr_storage`.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_getname(
    sock: *mut bindings::socket,
    addr: *mut bindings::sockaddr,
    peer: c_int,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let s = unsafe { vmcs_socket(sock) };
    match s.name(peer != 0) {
        Ok(a) => {
            // SAFETY: `addr` has room for a `sockaddr_storage` (128 bytes).
            unsafe { addr.cast::<SockaddrVmcs>().write_unaligned(a) };
            size_of::<SockaddrVmcs>() as c_int
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `proto_ops->poll` of a live AF_VMCS socket open as `file`; `wait` null or valid.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_poll(
    file: *mut bindings::file,
    sock: *mut bindings::socket,
    wait: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: As in `vmcs_chr_poll`: the file is open for the call, `wait` null or valid.
    let (s, f, table) = unsafe {
        (
            vmcs_socket(sock),
            File::from_raw_file(file),
            PollTable::from_raw(wait),
        )
    };
    // SAFETY: `sock` is live.
    let lowat = unsafe { socket_options(sock, true, true) }.lowat;
    let (mut mask, err) = s.poll(f, &table, lowat);
    if let Some(e) = err {
        // SAFETY: `sock->sk` is live; `sk_err` is what `SO_ERROR` reports.
        unsafe { sk::set_error(sock, -e.to_errno()) };
    }
    // SAFETY: `sock` is live. As vsock: a pending socket error, or an entry on the error
    // queue (a MSG_ZEROCOPY completion), is POLLERR.
    if unsafe { sk::errqueue_pending(sock) || sk::error(sock) != 0 } {
        mask |= crate::glue::poll_mask::ERR;
    }
    mask
}

/// # Safety
///
/// `proto_ops->ioctl` of a live AF_VMCS socket; `arg` a user pointer.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_ioctl(
    sock: *mut bindings::socket,
    cmd: c_uint,
    arg: c_ulong,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let s = unsafe { vmcs_socket(sock) };
    let r = s.ioctl_queued(cmd).and_then(|n| {
        let v = c_int::try_from(n).unwrap_or(c_int::MAX);
        UserSlice::new(UserPtr::from_addr(arg), size_of::<c_int>())
            .writer()
            .write(&v)
    });
    to_int(r)
}

/// # Safety
///
/// `proto_ops->listen` of a live AF_VMCS socket.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_listen(sock: *mut bindings::socket, backlog: c_int) -> c_int {
    // SAFETY: Guaranteed by the caller.
    to_int(unsafe { vmcs_socket(sock) }.listen(backlog))
}

/// # Safety
///
/// `proto_ops->shutdown` of a live AF_VMCS socket.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_shutdown(sock: *mut bindings::socket, how: c_int) -> c_int {
    // SAFETY: Guaranteed by the caller.
    to_int(unsafe { vmcs_socket(sock) }.shutdown(how))
}

/// # Safety
///
/// `proto_ops->sendmsg` of a live AF_VMCS socket; `m` a valid `msghdr` with a source
/// iterator.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_sendmsg(
    sock: *mut bindings::socket,
    m: *mut bindings::msghdr,
    len: usize,
) -> c_int {
    // SAFETY: Guaranteed by the caller: `msg_iter` is a source iterator valid for the call.
    let (s, flags, opts, src) = unsafe {
        (
            vmcs_socket(sock),
            (*m).msg_flags,
            socket_options(sock, false, sk::nonblocking(sock)),
            IovIterSource::from_raw(core::ptr::addr_of_mut!((*m).msg_iter)),
        )
    };
    // SAFETY: `m` is valid.
    if unsafe { (*m).msg_namelen } != 0 {
        // vsock: a connection-oriented socket takes no destination.
        return if s.connected() {
            errno::eisconn()
        } else {
            errno::eopnotsupp()
        }
        .to_errno();
    }
    // MSG_ZEROCOPY with SO_ZEROCOPY: the bytes are copied into kernel memory (the ring is
    // shared with the peer: nothing is lent), and the completion that says so
    // (SO_EE_CODE_ZEROCOPY_COPIED) is taken before the send and queued once it sent bytes,
    // as vsock's; without SO_ZEROCOPY the flag is ignored, as vsock and TCP.
    // SAFETY: `sock` is live.
    let zc = if flags & msg::ZEROCOPY != 0 && unsafe { sk::zerocopy(sock) } {
        // SAFETY: `sock` is live, in `sendmsg` (process context); ended below.
        match unsafe { sk::ZeroCopy::begin(sock, len) } {
            Ok(z) => Some(z),
            Err(e) => return e.to_errno(),
        }
    } else {
        None
    };
    let res = s.sendmsg(src, flags, opts);
    if let Some(z) = zc {
        z.end(matches!(res, Ok(n) if n > 0));
    }
    let r = match res {
        Ok(n) => return c_int::try_from(n).unwrap_or(c_int::MAX),
        Err(e) => e.to_errno(),
    };
    if s.is_stream() {
        // SAFETY: `sock` is live, in its `sendmsg`. SIGPIPE on EPIPE, as vsock.
        unsafe { sk::stream_error(sock, flags, r) }
    } else {
        r
    }
}

/// # Safety
///
/// `proto_ops->recvmsg` of a live AF_VMCS socket; `m` a valid `msghdr` with a destination
/// iterator and `msg_name` null or room for a `sockaddr_storage`.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_recvmsg(
    sock: *mut bindings::socket,
    m: *mut bindings::msghdr,
    len: usize,
    flags: c_int,
) -> c_int {
    if flags as u32 & msg::ERRQUEUE != 0 {
        // SAFETY: `sock` is live and `m` its `msghdr`.
        return unsafe { sk::recv_errqueue(sock, m, len) };
    }
    // SAFETY: Guaranteed by the caller: `msg_iter` is a destination iterator.
    let (s, opts, dst) = unsafe {
        (
            vmcs_socket(sock),
            socket_options(sock, true, sk::nonblocking(sock)),
            IovIterDest::from_raw(core::ptr::addr_of_mut!((*m).msg_iter)),
        )
    };
    match s.recvmsg(dst, flags as u32, opts) {
        Ok((n, out)) => {
            // SAFETY: `m` is valid; `msg_name`, when set, has room for the address.
            unsafe {
                (*m).msg_flags |= out;
                if !(*m).msg_name.is_null() {
                    if let Some(a) = s.peer_addr() {
                        (*m).msg_name.cast::<SockaddrVmcs>().write_unaligned(a);
                        (*m).msg_namelen = size_of::<SockaddrVmcs>() as c_int;
                    }
                }
            }
            c_int::try_from(n).unwrap_or(c_int::MAX)
        }
        Err(e) => e.to_errno(),
    }
}
