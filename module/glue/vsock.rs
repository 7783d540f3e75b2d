// SPDX-License-Identifier: GPL-2.0

//! In-kernel AF_VSOCK stream sockets for the vsock transport (module/transport/vsock/).
//!
//! The `kernel` crate has no socket-client abstraction: the calls (`sock_create_kern`,
//! `kernel_bind`/`listen`/`accept`/`connect`, `kernel_sendmsg`/`recvmsg`) are one-line
//! forwarders in module/vmcs_vsock_glue.c, and [`VsockSocket`] owns one socket and its
//! callbacks. Every send and receive is non-blocking (`MSG_DONTWAIT`); only
//! [`VsockSocket::connect`] and [`VsockSocket::new_listener`] may sleep.
//!
//! The socket's `sk_data_ready`, `sk_write_space` and `sk_state_change` callbacks (softirq
//! or process context, under the socket's callback lock) call [`SockHook::event`] of the
//! hook installed with [`VsockSocket::set_hook`], and chain to the callbacks they replaced.
//! A hook must only note the event and queue a work: it runs in atomic context.

use core::ptr::NonNull;
use kernel::ffi::{c_int, c_void};
use kernel::{bindings, error::to_result, prelude::*};

// The C glue's side (module/vmcs_glue.h, vsock). `struct socket` is `void *` here.
extern "C" {
    fn vmcs_vsock_create(res: *mut *mut c_void) -> c_int;
    fn vmcs_vsock_release(sock: *mut c_void);
    fn vmcs_vsock_local_cid(sock: *mut c_void, cid: *mut u32) -> c_int;
    fn vmcs_vsock_listen(sock: *mut c_void, port: u32, backlog: c_int) -> c_int;
    fn vmcs_vsock_accept(sock: *mut c_void, newsock: *mut *mut c_void) -> c_int;
    fn vmcs_vsock_connect(sock: *mut c_void, cid: u32, port: u32) -> c_int;
    fn vmcs_vsock_peer_cid(sock: *mut c_void, cid: *mut u32) -> c_int;
    fn vmcs_vsock_send(sock: *mut c_void, buf: *const c_void, len: usize) -> c_int;
    fn vmcs_vsock_recv(sock: *mut c_void, buf: *mut c_void, len: usize) -> c_int;
    fn vmcs_vsock_usable(sock: *mut c_void) -> bool;
    fn vmcs_vsock_shutdown(sock: *mut c_void);
    fn vmcs_vsock_set_callbacks(
        sock: *mut c_void,
        event: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
    ) -> c_int;
    fn vmcs_vsock_clear_callbacks(sock: *mut c_void);
}

/// What a socket's callbacks call (atomic context: note the event, queue a work).
pub(crate) trait SockHook: Send + Sync {
    /// Data, room to send, a new connection to accept, or a change of state.
    fn event(&self);
}

/// The C callbacks' event: forwards to the installed hook.
///
/// # Safety
///
/// `ctx` is the pointer [`VsockSocket::set_hook`] gave the C glue: a `H` that stays alive
/// until [`VsockSocket`] cleared its callbacks (which waits for running ones).
unsafe extern "C" fn hook_event<H: SockHook>(ctx: *mut c_void) {
    // SAFETY: See the function's safety section: `ctx` points to a live `H`.
    let hook = unsafe { &*ctx.cast::<H>() };
    hook.event();
}

/// Result of a non-blocking receive or send.
pub(crate) enum Io {
    /// This many bytes moved (never 0).
    Moved(usize),
    /// Nothing now (`EAGAIN`): the callbacks say when to try again.
    Again,
    /// End of stream (receive: the peer closed).
    Closed,
    /// The stream failed (an error other than `EAGAIN`).
    Failed,
}

fn io_result(r: c_int) -> Io {
    match r {
        0 => Io::Closed,
        n if n > 0 => Io::Moved(n as usize),
        e if e == -(bindings::EAGAIN as c_int) => Io::Again,
        _ => Io::Failed,
    }
}

/// One kernel AF_VSOCK stream socket, released on drop (its callbacks cleared first).
///
/// # Invariants
///
/// `sock` is a live `struct socket` this value owns; `hook`, when set, is the context the
/// socket's callbacks were given.
pub(crate) struct VsockSocket<H: SockHook> {
    sock: NonNull<c_void>,
    hook: Option<KBox<H>>,
}

// SAFETY: The socket calls lock the socket themselves; `H` is `Send + Sync`.
unsafe impl<H: SockHook> Send for VsockSocket<H> {}
// SAFETY: As above: every method is safe to call concurrently (the socket layer locks).
unsafe impl<H: SockHook> Sync for VsockSocket<H> {}

impl<H: SockHook> VsockSocket<H> {
    fn create() -> Result<Self> {
        let mut raw: *mut c_void = core::ptr::null_mut();
        // SAFETY: `raw` is a valid out pointer; on success it holds a new socket we own.
        to_result(unsafe { vmcs_vsock_create(&mut raw) })?;
        let sock = NonNull::new(raw).ok_or(ENOMEM)?;
        // INVARIANT: a new socket, owned by this value; no hook yet.
        Ok(Self { sock, hook: None })
    }

    /// A socket listening on `port` (any cid), and this guest's vsock cid (`ENODEV` when
    /// the guest has no vsock transport to the host). May sleep.
    pub(crate) fn new_listener(port: u32, backlog: u32) -> Result<(Self, u32)> {
        let s = Self::create()?;
        let mut cid = 0u32;
        // SAFETY: `s.sock` is live (invariant); `cid` is a valid out pointer.
        to_result(unsafe { vmcs_vsock_local_cid(s.sock.as_ptr(), &mut cid) })?;
        let backlog = c_int::try_from(backlog).unwrap_or(c_int::MAX);
        // SAFETY: `s.sock` is live (invariant).
        to_result(unsafe { vmcs_vsock_listen(s.sock.as_ptr(), port, backlog) })?;
        Ok((s, cid))
    }

    /// A stream connected to `cid:port` (blocking, at most vsock's connect timeout).
    pub(crate) fn connect(cid: u32, port: u32) -> Result<Self> {
        let s = Self::create()?;
        // SAFETY: `s.sock` is live (invariant).
        to_result(unsafe { vmcs_vsock_connect(s.sock.as_ptr(), cid, port) })?;
        Ok(s)
    }

    /// The next pending connection of a listener, and its peer's cid; `None` if none now.
    pub(crate) fn accept(&self) -> Result<Option<(Self, u32)>> {
        let mut raw: *mut c_void = core::ptr::null_mut();
        // SAFETY: `self.sock` is live (invariant); `raw` is a valid out pointer.
        let r = unsafe { vmcs_vsock_accept(self.sock.as_ptr(), &mut raw) };
        if r == -(bindings::EAGAIN as c_int) {
            return Ok(None);
        }
        to_result(r)?;
        let sock = NonNull::new(raw).ok_or(ENOMEM)?;
        // INVARIANT: the accepted socket is ours now.
        let s = Self { sock, hook: None };
        let mut cid = 0u32;
        // SAFETY: `s.sock` is live; `cid` is a valid out pointer.
        to_result(unsafe { vmcs_vsock_peer_cid(s.sock.as_ptr(), &mut cid) })?;
        Ok(Some((s, cid)))
    }

    /// Installs `hook` as the target of the socket's callbacks (once).
    pub(crate) fn set_hook(&mut self, hook: KBox<H>) -> Result {
        if self.hook.is_some() {
            return Err(EINVAL);
        }
        let ctx = core::ptr::from_ref::<H>(&*hook).cast_mut().cast::<c_void>();
        // SAFETY: `self.sock` is live; `ctx` points to the boxed hook, which this value
        // keeps until `clear_hook` or drop cleared the callbacks (type invariant).
        to_result(unsafe { vmcs_vsock_set_callbacks(self.sock.as_ptr(), hook_event::<H>, ctx) })?;
        self.hook = Some(hook);
        Ok(())
    }

    /// The installed hook.
    pub(crate) fn hook(&self) -> Option<&H> {
        self.hook.as_deref()
    }

    /// Receives at most `buf.len()` bytes without blocking.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> Io {
        if buf.is_empty() {
            return Io::Again;
        }
        // SAFETY: `self.sock` is live; `buf` is writable for its length.
        io_result(unsafe {
            vmcs_vsock_recv(self.sock.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        })
    }

    /// Sends at most `buf.len()` bytes without blocking.
    pub(crate) fn send(&self, buf: &[u8]) -> Io {
        if buf.is_empty() {
            return Io::Again;
        }
        // SAFETY: `self.sock` is live; `buf` is readable for its length.
        match unsafe { vmcs_vsock_send(self.sock.as_ptr(), buf.as_ptr().cast(), buf.len()) } {
            0 => Io::Again,
            r => io_result(r),
        }
    }

    /// Whether the stream is established, with no error and not shut for sending.
    pub(crate) fn usable(&self) -> bool {
        // SAFETY: `self.sock` is live (invariant).
        unsafe { vmcs_vsock_usable(self.sock.as_ptr()) }
    }

    /// Shuts both directions (the peer sees the stream end). May sleep.
    pub(crate) fn shutdown(&self) {
        // SAFETY: `self.sock` is live (invariant).
        unsafe { vmcs_vsock_shutdown(self.sock.as_ptr()) };
    }
}

impl<H: SockHook> Drop for VsockSocket<H> {
    fn drop(&mut self) {
        if self.hook.is_some() {
            // SAFETY: `self.sock` is live; after this no callback uses the hook.
            unsafe { vmcs_vsock_clear_callbacks(self.sock.as_ptr()) };
        }
        // SAFETY: `self.sock` is ours (invariant) and never used again.
        unsafe { vmcs_vsock_release(self.sock.as_ptr()) };
    }
}
