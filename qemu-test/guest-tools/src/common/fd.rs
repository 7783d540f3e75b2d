//! Helpers on raw descriptors shared by the guest programs.

use std::os::raw::c_int;

use crate::{errno, strerror, Res};

/// `r` of a syscall as a result: `Err("what: error text")` when it is negative.
pub fn sys(what: &str, r: c_int) -> Res<c_int> {
    if r < 0 {
        Err(format!("{what}: {}", strerror(errno())))
    } else {
        Ok(r)
    }
}

/// recvmsg(2) of one buffer: the result and the `msg_flags` it reported.
pub fn recvmsg(fd: c_int, b: &mut [u8], flags: c_int) -> (isize, c_int) {
    let mut iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    };
    // SAFETY: zeroed msghdr is valid.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    // SAFETY: `m` points at valid buffers.
    let n = unsafe { libc::recvmsg(fd, &mut m, flags) };
    (n, m.msg_flags)
}

/// Closes a descriptor we own.
pub fn close(fd: c_int) {
    // SAFETY: the caller owns `fd` and does not use it again.
    unsafe { libc::close(fd) };
}

/// poll(2) on one descriptor: poll's return value and the revents.
pub fn poll(fd: c_int, events: i16, timeout_ms: c_int) -> (c_int, i16) {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    (r, p.revents)
}

/// Sets or clears `O_NONBLOCK`; fcntl's return value.
pub fn set_nonblock(fd: c_int, on: bool) -> c_int {
    // SAFETY: plain fcntl calls on a descriptor of ours.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        let fl = if on {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        libc::fcntl(fd, libc::F_SETFL, fl)
    }
}

/// An owned epoll instance.
pub struct Epoll(c_int);

impl Epoll {
    pub fn new() -> Res<Self> {
        // SAFETY: plain syscall.
        Ok(Self(sys("epoll_create1", unsafe {
            libc::epoll_create1(libc::EPOLL_CLOEXEC)
        })?))
    }
    fn ctl(&self, op: c_int, fd: c_int, events: u32, tag: u64) -> Res {
        let mut ev = libc::epoll_event { events, u64: tag };
        // SAFETY: `ev` is valid.
        sys("epoll_ctl", unsafe {
            libc::epoll_ctl(self.0, op, fd, &mut ev)
        })?;
        Ok(())
    }
    pub fn add(&self, fd: c_int, events: u32, tag: u64) -> Res {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, tag)
    }
    pub fn modify(&self, fd: c_int, events: u32, tag: u64) -> Res {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, tag)
    }
    /// Waits for events; 0 when interrupted (`EINTR`).
    pub fn wait(&self, out: &mut [libc::epoll_event], ms: c_int) -> Res<usize> {
        // SAFETY: `out` is valid for its length.
        let n = unsafe { libc::epoll_wait(self.0, out.as_mut_ptr(), out.len() as c_int, ms) };
        if n < 0 && errno() == libc::EINTR {
            return Ok(0);
        }
        Ok(sys("epoll_wait", n)? as usize)
    }
    /// A new instance watching `fd` for `events` (tag 7), waited on once for up to `ms`:
    /// how many events came, and the first one's events and tag.
    pub fn once(fd: c_int, events: u32, ms: c_int) -> Res<(usize, u32, u64)> {
        let ep = Self::new()?;
        ep.add(fd, events, 7)?;
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let n = ep.wait(&mut out, ms)?;
        Ok((n, out[0].events, out[0].u64))
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        close(self.0);
    }
}
