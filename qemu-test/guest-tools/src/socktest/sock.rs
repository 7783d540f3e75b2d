//! AF_VMCS sockets as the tests use them: the address, an owned socket with its calls,
//! and the checks that print `ok: ...` lines.

use std::mem::size_of;

use libc::{c_int, c_void, socklen_t};
use vmcs_guest_tools::fd::{self, sys};
use vmcs_guest_tools::sys::{sockaddr_vmcs, VMCS_CID_ANY, VMCS_CID_LOCAL, VMCS_PORT_ANY};
use vmcs_guest_tools::{errno, strerror, Res};

pub const CID_ANY: u32 = VMCS_CID_ANY;
pub const CID_LOCAL: u32 = VMCS_CID_LOCAL;
pub const PORT_ANY: u32 = VMCS_PORT_ANY;

/// `struct sockaddr_vmcs`.
pub type Addr = sockaddr_vmcs;

/// The AF_VMCS family number, from /sys/module/vmcs/parameters/af.
pub fn family() -> Res<c_int> {
    let s = std::fs::read_to_string("/sys/module/vmcs/parameters/af")
        .map_err(|e| format!("read /sys/module/vmcs/parameters/af: {e}"))?;
    s.trim().parse().map_err(|e| format!("af: {e}"))
}

/// An AF_VMCS address of `cid:port`.
pub fn addr(cid: u32, port: u32) -> Res<Addr> {
    let family = u16::try_from(family()?).map_err(|e| e.to_string())?;
    Ok(sockaddr_vmcs::new(family, cid, port))
}

/// An owned socket.
pub struct Sock(pub c_int);

impl Drop for Sock {
    fn drop(&mut self) {
        fd::close(self.0);
    }
}

/// Expects a call to fail with `want`.
pub fn expect_err(what: &str, r: isize, want: c_int) -> Res {
    let e = errno();
    if r >= 0 {
        return Err(format!(
            "{what}: succeeded ({r}), expected {}",
            strerror(want)
        ));
    }
    if e != want {
        return Err(format!(
            "{what}: {}, expected {}",
            strerror(e),
            strerror(want)
        ));
    }
    println!("ok: {what} -> {}", strerror(want));
    Ok(())
}

pub fn check(what: &str, cond: bool) -> Res {
    if cond {
        println!("ok: {what}");
        Ok(())
    } else {
        Err(format!("failed: {what}"))
    }
}

impl Sock {
    pub fn new(ty: c_int) -> Res<Self> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(family()?, ty | libc::SOCK_CLOEXEC, 0) };
        Ok(Self(sys("socket", fd)?))
    }
    pub fn raw_bind(&self, a: &Addr, len: usize) -> c_int {
        // SAFETY: `a` is valid for `len` <= 16 bytes.
        unsafe { libc::bind(self.0, (a as *const Addr).cast(), len as socklen_t) }
    }
    pub fn bind(&self, cid: u32, port: u32) -> Res {
        sys("bind", self.raw_bind(&addr(cid, port)?, size_of::<Addr>()))?;
        Ok(())
    }
    pub fn raw_connect(&self, cid: u32, port: u32) -> Res<c_int> {
        let a = addr(cid, port)?;
        // SAFETY: `a` is a valid address.
        Ok(unsafe {
            libc::connect(
                self.0,
                (&a as *const Addr).cast(),
                size_of::<Addr>() as socklen_t,
            )
        })
    }
    pub fn connect(&self, cid: u32, port: u32) -> Res {
        sys("connect", self.raw_connect(cid, port)?)?;
        Ok(())
    }
    pub fn listen(&self, backlog: c_int) -> Res {
        // SAFETY: plain syscall.
        sys("listen", unsafe { libc::listen(self.0, backlog) })?;
        Ok(())
    }
    pub fn raw_accept(&self, flags: c_int) -> (c_int, Addr) {
        let mut a = Addr::default();
        let mut len = size_of::<Addr>() as socklen_t;
        // SAFETY: `a` has room for `len` bytes.
        let fd = unsafe { libc::accept4(self.0, (&mut a as *mut Addr).cast(), &mut len, flags) };
        (fd, a)
    }
    pub fn accept(&self) -> Res<(Self, Addr)> {
        let (fd, a) = self.raw_accept(libc::SOCK_CLOEXEC);
        Ok((Self(sys("accept", fd)?), a))
    }
    pub fn name(&self, peer: bool) -> Res<Addr> {
        let mut a = Addr::default();
        let mut len = size_of::<Addr>() as socklen_t;
        let p = (&mut a as *mut Addr).cast();
        // SAFETY: `a` has room for `len` bytes.
        let r = unsafe {
            if peer {
                libc::getpeername(self.0, p, &mut len)
            } else {
                libc::getsockname(self.0, p, &mut len)
            }
        };
        sys(if peer { "getpeername" } else { "getsockname" }, r)?;
        Ok(a)
    }
    pub fn send(&self, b: &[u8], flags: c_int) -> isize {
        // SAFETY: `b` is valid.
        unsafe {
            libc::send(
                self.0,
                b.as_ptr().cast(),
                b.len(),
                flags | libc::MSG_NOSIGNAL,
            )
        }
    }
    pub fn send_all(&self, b: &[u8]) -> Res {
        let n = self.send(b, 0);
        if n != b.len() as isize {
            return Err(format!("send {}: {n} {}", b.len(), strerror(errno())));
        }
        Ok(())
    }
    pub fn recv(&self, b: &mut [u8], flags: c_int) -> isize {
        // SAFETY: `b` is valid.
        unsafe { libc::recv(self.0, b.as_mut_ptr().cast(), b.len(), flags) }
    }
    /// recvmsg returning (n, msg_flags).
    pub fn recvmsg(&self, b: &mut [u8], flags: c_int) -> (isize, c_int) {
        vmcs_guest_tools::fd::recvmsg(self.0, b, flags)
    }
    pub fn shutdown(&self, how: c_int) -> Res {
        // SAFETY: plain syscall.
        sys("shutdown", unsafe { libc::shutdown(self.0, how) })?;
        Ok(())
    }
    pub fn getopt(&self, opt: c_int) -> Res<c_int> {
        let mut v: c_int = 0;
        let mut len = size_of::<c_int>() as socklen_t;
        // SAFETY: `v` has room.
        let r = unsafe {
            libc::getsockopt(
                self.0,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut c_int).cast(),
                &mut len,
            )
        };
        sys("getsockopt", r)?;
        Ok(v)
    }
    pub fn setopt<T>(&self, opt: c_int, v: &T) -> Res {
        // SAFETY: `v` is valid for its size.
        let r = unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                opt,
                (v as *const T).cast::<c_void>(),
                size_of::<T>() as socklen_t,
            )
        };
        sys("setsockopt", r)?;
        Ok(())
    }
    pub fn ioctl_int(&self, req: libc::Ioctl) -> Res<c_int> {
        let mut v: c_int = -1;
        // SAFETY: `v` has room for an int.
        sys("ioctl", unsafe { libc::ioctl(self.0, req, &mut v) })?;
        Ok(v)
    }
    pub fn poll(&self, events: i16, ms: c_int) -> Res<i16> {
        let (r, revents) = fd::poll(self.0, events, ms);
        sys("poll", r)?;
        Ok(revents)
    }
    pub fn set_nonblock(&self) -> Res {
        sys("fcntl", fd::set_nonblock(self.0, true))?;
        Ok(())
    }
}

/// A listener on a free loopback port, and its port.
pub fn listener(ty: c_int) -> Res<(Sock, u32)> {
    let l = Sock::new(ty)?;
    l.bind(CID_ANY, PORT_ANY)?;
    l.listen(8)?;
    let port = l.name(false)?.svm_port;
    Ok((l, port))
}

/// A connected loopback pair (client, accepted).
pub fn pair(ty: c_int) -> Res<(Sock, Sock)> {
    let (l, port) = listener(ty)?;
    let c = Sock::new(ty)?;
    c.connect(CID_LOCAL, port)?;
    let (a, _) = l.accept()?;
    Ok((c, a))
}
