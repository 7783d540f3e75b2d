// SPDX-License-Identifier: GPL-2.0
//! vmcs-socktest: AF_VMCS socket tests for the QEMU guests (qemu-test/scenarios/sockets.sh).
//!
//!   vmcs-socktest list                 names of the loopback tests
//!   vmcs-socktest TEST                 run one loopback test (exit 0 = pass)
//!   vmcs-socktest serve PORT N         guest 0: serve N clients (stream echo on PORT,
//!                                      seqpacket echo on PORT+1)
//!   vmcs-socktest client PORT          run the cross-guest tests against a server
//!   vmcs-socktest vsock-echo-server PORT / vsock-echo-client PORT
//!                                      a plain AF_VSOCK echo, only the family changed
//!   vmcs-socktest hold                 keep a connected pair open (rmmod tests)
//!   vmcs-socktest scale-serve PORT N BYTES / scale-client PORT N BYTES
//!                                      N connections at once, BYTES each, fairness
//!   vmcs-socktest crash-serve PORT / crash-connect PORT / crash-rejoin PORT
//!                                      peer death (crash scenario): ECONNRESET, connect
//!                                      timeout, surviving listener
//!
//! The family number is read from /sys/module/vmcs/parameters/af.

use std::{
    io::Write,
    mem::size_of,
    thread,
    time::{Duration, Instant},
};

use libc::{c_int, c_void, socklen_t};

type Res<T = ()> = Result<T, String>;

const CID_ANY: u32 = u32::MAX;
const CID_LOCAL: u32 = u32::MAX - 1;
const PORT_ANY: u32 = u32::MAX;

/// `struct sockaddr_vmcs` (userspace-tool/include/vmcs.h).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct Addr {
    family: u16,
    reserved1: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

fn family() -> Res<c_int> {
    let s = std::fs::read_to_string("/sys/module/vmcs/parameters/af")
        .map_err(|e| format!("read /sys/module/vmcs/parameters/af: {e}"))?;
    s.trim().parse().map_err(|e| format!("af: {e}"))
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ename(e: c_int) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

fn addr(cid: u32, port: u32) -> Res<Addr> {
    Ok(Addr {
        family: u16::try_from(family()?).map_err(|e| e.to_string())?,
        cid,
        port,
        ..Default::default()
    })
}

/// An owned socket.
struct Sock(c_int);

impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn sys(what: &str, r: c_int) -> Res<c_int> {
    if r < 0 {
        Err(format!("{what}: {}", ename(errno())))
    } else {
        Ok(r)
    }
}

/// Expects a call to fail with `want`.
fn expect_err(what: &str, r: isize, want: c_int) -> Res {
    let e = errno();
    if r >= 0 {
        return Err(format!("{what}: succeeded ({r}), expected {}", ename(want)));
    }
    if e != want {
        return Err(format!("{what}: {}, expected {}", ename(e), ename(want)));
    }
    println!("ok: {what} -> {}", ename(want));
    Ok(())
}

fn check(what: &str, cond: bool) -> Res {
    if cond {
        println!("ok: {what}");
        Ok(())
    } else {
        Err(format!("failed: {what}"))
    }
}

impl Sock {
    fn new(ty: c_int) -> Res<Self> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(family()?, ty | libc::SOCK_CLOEXEC, 0) };
        Ok(Self(sys("socket", fd)?))
    }
    fn raw_bind(&self, a: &Addr, len: usize) -> c_int {
        // SAFETY: `a` is valid for `len` <= 16 bytes.
        unsafe { libc::bind(self.0, (a as *const Addr).cast(), len as socklen_t) }
    }
    fn bind(&self, cid: u32, port: u32) -> Res {
        sys("bind", self.raw_bind(&addr(cid, port)?, size_of::<Addr>()))?;
        Ok(())
    }
    fn raw_connect(&self, cid: u32, port: u32) -> Res<c_int> {
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
    fn connect(&self, cid: u32, port: u32) -> Res {
        sys("connect", self.raw_connect(cid, port)?)?;
        Ok(())
    }
    fn listen(&self, backlog: c_int) -> Res {
        // SAFETY: plain syscall.
        sys("listen", unsafe { libc::listen(self.0, backlog) })?;
        Ok(())
    }
    fn raw_accept(&self, flags: c_int) -> (c_int, Addr) {
        let mut a = Addr::default();
        let mut len = size_of::<Addr>() as socklen_t;
        // SAFETY: `a` has room for `len` bytes.
        let fd = unsafe { libc::accept4(self.0, (&mut a as *mut Addr).cast(), &mut len, flags) };
        (fd, a)
    }
    fn accept(&self) -> Res<(Self, Addr)> {
        let (fd, a) = self.raw_accept(libc::SOCK_CLOEXEC);
        Ok((Self(sys("accept", fd)?), a))
    }
    fn name(&self, peer: bool) -> Res<Addr> {
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
    fn send(&self, b: &[u8], flags: c_int) -> isize {
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
    fn send_all(&self, b: &[u8]) -> Res {
        let n = self.send(b, 0);
        if n != b.len() as isize {
            return Err(format!("send {}: {n} {}", b.len(), ename(errno())));
        }
        Ok(())
    }
    fn recv(&self, b: &mut [u8], flags: c_int) -> isize {
        // SAFETY: `b` is valid.
        unsafe { libc::recv(self.0, b.as_mut_ptr().cast(), b.len(), flags) }
    }
    /// recvmsg returning (n, msg_flags).
    fn recvmsg(&self, b: &mut [u8], flags: c_int) -> (isize, c_int) {
        let mut iov = libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        };
        // SAFETY: zeroed msghdr is valid.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        // SAFETY: `m` points at valid buffers.
        let n = unsafe { libc::recvmsg(self.0, &mut m, flags) };
        (n, m.msg_flags)
    }
    fn shutdown(&self, how: c_int) -> Res {
        // SAFETY: plain syscall.
        sys("shutdown", unsafe { libc::shutdown(self.0, how) })?;
        Ok(())
    }
    fn getopt(&self, opt: c_int) -> Res<c_int> {
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
    fn setopt<T>(&self, opt: c_int, v: &T) -> Res {
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
    fn ioctl_int(&self, req: libc::Ioctl) -> Res<c_int> {
        let mut v: c_int = -1;
        // SAFETY: `v` has room for an int.
        sys("ioctl", unsafe { libc::ioctl(self.0, req, &mut v) })?;
        Ok(v)
    }
    fn poll(&self, events: i16, ms: c_int) -> Res<i16> {
        let mut p = libc::pollfd {
            fd: self.0,
            events,
            revents: 0,
        };
        // SAFETY: `p` is valid.
        sys("poll", unsafe { libc::poll(&mut p, 1, ms) })?;
        Ok(p.revents)
    }
    fn set_nonblock(&self) -> Res {
        // SAFETY: plain syscalls.
        unsafe {
            let fl = libc::fcntl(self.0, libc::F_GETFL);
            sys(
                "fcntl",
                libc::fcntl(self.0, libc::F_SETFL, fl | libc::O_NONBLOCK),
            )?;
        }
        Ok(())
    }
}

/// A listener on a free loopback port, and its port.
fn listener(ty: c_int) -> Res<(Sock, u32)> {
    let l = Sock::new(ty)?;
    l.bind(CID_ANY, PORT_ANY)?;
    l.listen(8)?;
    let port = l.name(false)?.port;
    Ok((l, port))
}

/// A connected loopback pair (client, accepted).
fn pair(ty: c_int) -> Res<(Sock, Sock)> {
    let (l, port) = listener(ty)?;
    let c = Sock::new(ty)?;
    c.connect(CID_LOCAL, port)?;
    let (a, _) = l.accept()?;
    Ok((c, a))
}

fn t_family() -> Res {
    let af = family()?;
    check(&format!("af parameter is {af} (non-zero)"), af > 0)?;
    Sock::new(libc::SOCK_STREAM)?;
    Sock::new(libc::SOCK_SEQPACKET)?;
    // SAFETY: plain syscalls.
    let r = unsafe { libc::socket(af, libc::SOCK_DGRAM, 0) };
    expect_err("socket(SOCK_DGRAM)", r as isize, libc::ESOCKTNOSUPPORT)?;
    // SAFETY: plain syscall.
    let r = unsafe { libc::socket(af, libc::SOCK_STREAM, 7) };
    expect_err("socket(protocol 7)", r as isize, libc::EPROTONOSUPPORT)
}

fn t_bind() -> Res {
    let s = Sock::new(libc::SOCK_STREAM)?;
    s.bind(CID_ANY, 4000)?;
    let n = s.name(false)?;
    check("getsockname port 4000", n.port == 4000)?;
    check("getsockname family", n.family as c_int == family()?)?;
    expect_err(
        "bind twice",
        s.raw_bind(&addr(CID_ANY, 4001)?, 16) as isize,
        libc::EINVAL,
    )?;
    let t = Sock::new(libc::SOCK_SEQPACKET)?;
    expect_err(
        "bind a taken port",
        t.raw_bind(&addr(CID_ANY, 4000)?, 16) as isize,
        libc::EADDRINUSE,
    )?;
    let mut bad = addr(CID_ANY, 4002)?;
    bad.family = libc::AF_VSOCK as u16;
    expect_err(
        "bind wrong family",
        t.raw_bind(&bad, 16) as isize,
        libc::EAFNOSUPPORT,
    )?;
    expect_err(
        "bind short address",
        t.raw_bind(&addr(CID_ANY, 4002)?, 8) as isize,
        libc::EINVAL,
    )?;
    expect_err(
        "bind foreign cid",
        t.raw_bind(&addr(12345, 4002)?, 16) as isize,
        libc::EADDRNOTAVAIL,
    )?;
    expect_err(
        "getpeername unconnected",
        {
            let mut a = Addr::default();
            let mut len = 16;
            // SAFETY: `a` has room.
            unsafe { libc::getpeername(t.0, (&mut a as *mut Addr).cast(), &mut len) as isize }
        },
        libc::ENOTCONN,
    )?;
    t.bind(CID_LOCAL, PORT_ANY)?;
    let p = t.name(false)?.port;
    check(
        &format!("autobind port {p} >= 1024"),
        (1024..PORT_ANY).contains(&p),
    )?;
    // /dev/vmcs shares the port space: its bind of our port is refused.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/vmcs");
    if let Ok(f) = f {
        use std::os::fd::AsRawFd;
        let mut a = [CID_ANY, 4000u32];
        // VMCS_IOC_BIND = _IOWR(0xB7, 2, 8 bytes)
        let req = (3u64 << 30) | (8 << 16) | (0xB7 << 8) | 2;
        // SAFETY: `a` is a valid struct vmcs_addr.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), req as libc::Ioctl, a.as_mut_ptr()) };
        expect_err(
            "/dev/vmcs bind of a socket's port",
            r as isize,
            libc::EADDRINUSE,
        )?;
    }
    Ok(())
}

fn t_stream() -> Res {
    let (c, a) = pair(libc::SOCK_STREAM)?;
    let cn = c.name(false)?;
    let ap = a.name(true)?;
    check(
        "accepted peer = client name",
        ap.port == cn.port && ap.cid == cn.cid,
    )?;
    let cp = c.name(true)?;
    check("client peer = server port", cp.port == a.name(false)?.port)?;
    c.send_all(b"hello ")?;
    c.send_all(b"world")?;
    thread::sleep(Duration::from_millis(50));
    check("SIOCINQ = 11", a.ioctl_int(libc::FIONREAD)? == 11)?;
    let mut b = [0u8; 64];
    let n = a.recv(&mut b[..3], libc::MSG_PEEK);
    check("MSG_PEEK 3 bytes", n == 3 && &b[..3] == b"hel")?;
    let n = a.recv(&mut b[..3], 0);
    check("partial read 3", n == 3 && &b[..3] == b"hel")?;
    let n = a.recv(&mut b, 0);
    check(
        &format!("rest across writes ({n})"),
        n == 8 && &b[..8] == b"lo world",
    )?;
    expect_err(
        "MSG_DONTWAIT empty",
        a.recv(&mut b, libc::MSG_DONTWAIT),
        libc::EAGAIN,
    )?;
    check("SIOCOUTQ = 0", c.ioctl_int(libc::TIOCOUTQ)? == 0)?;
    // MSG_WAITALL gathers two sends made later.
    let writer = thread::spawn({
        let fd = c.0;
        move || {
            thread::sleep(Duration::from_millis(100));
            // SAFETY: the fd outlives the thread (joined below).
            unsafe { libc::send(fd, b"abcd".as_ptr().cast(), 4, 0) };
            thread::sleep(Duration::from_millis(100));
            unsafe { libc::send(fd, b"efgh".as_ptr().cast(), 4, 0) };
        }
    });
    let n = a.recv(&mut b[..8], libc::MSG_WAITALL);
    let _ = writer.join();
    check(
        &format!("MSG_WAITALL 8 ({n})"),
        n == 8 && &b[..8] == b"abcdefgh",
    )?;
    // Big transfer through credit: 1 MiB.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let wfd = c.0;
    let data = big.clone();
    let w = thread::spawn(move || {
        // SAFETY: the fd outlives the thread.
        unsafe { libc::send(wfd, data.as_ptr().cast(), data.len(), 0) }
    });
    let mut got = vec![0u8; big.len()];
    let n = a.recv(&mut got, libc::MSG_WAITALL);
    let sent = w.join().map_err(|_| "join")?;
    check(
        &format!("1 MiB stream (sent {sent}, got {n})"),
        n as usize == big.len() && got == big,
    )?;
    // shutdown
    c.shutdown(libc::SHUT_WR)?;
    thread::sleep(Duration::from_millis(50));
    check("EOF after peer SHUT_WR", a.recv(&mut b, 0) == 0)?;
    expect_err("send after SHUT_WR", c.send(b"x", 0), libc::EPIPE)?;
    a.send_all(b"back")?;
    check("other direction still open", c.recv(&mut b, 0) == 4)?;
    a.shutdown(libc::SHUT_RD)?;
    check("read after own SHUT_RD is 0", a.recv(&mut b, 0) == 0)?;
    Ok(())
}

fn t_seqpacket() -> Res {
    let (c, a) = pair(libc::SOCK_SEQPACKET)?;
    c.send_all(b"one")?;
    c.send_all(b"two two")?;
    c.send_all(&[7u8; 100])?;
    c.send_all(b"")?;
    thread::sleep(Duration::from_millis(50));
    let mut b = [0u8; 64];
    let (n, f) = a.recvmsg(&mut b, libc::MSG_PEEK);
    check(
        "MSG_PEEK first message",
        n == 3 && &b[..3] == b"one" && f & libc::MSG_EOR != 0,
    )?;
    let (n, f) = a.recvmsg(&mut b, 0);
    check(
        "first message, MSG_EOR",
        n == 3 && f & libc::MSG_EOR != 0 && f & libc::MSG_TRUNC == 0,
    )?;
    let (n, f) = a.recvmsg(&mut b[..3], 0);
    check(
        "truncated: MSG_TRUNC in msg_flags",
        n == 3 && f & libc::MSG_TRUNC != 0,
    )?;
    let (n, _) = a.recvmsg(&mut b[..10], libc::MSG_TRUNC);
    check(
        &format!("MSG_TRUNC returns the real length ({n})"),
        n == 100,
    )?;
    let big = vec![1u8; 64 * 1024 + 1];
    expect_err("message over 64 KiB", c.send(&big, 0), libc::EMSGSIZE)?;
    drop(c);
    thread::sleep(Duration::from_millis(50));
    check("EOF after peer close", a.recv(&mut b, 0) == 0)?;
    Ok(())
}

fn t_nonblock() -> Res {
    let (l, port) = listener(libc::SOCK_STREAM)?;
    // accept4's SOCK_NONBLOCK is for the new file only; the listener's O_NONBLOCK decides.
    l.set_nonblock()?;
    let (fd, _) = l.raw_accept(0);
    expect_err(
        "nonblocking accept with nothing pending",
        fd as isize,
        libc::EAGAIN,
    )?;
    check("listener not readable", l.poll(libc::POLLIN, 0)? == 0)?;
    let c = Sock::new(libc::SOCK_STREAM)?;
    c.set_nonblock()?;
    let r = c.raw_connect(CID_LOCAL, port)?;
    let e = errno();
    check(
        &format!("nonblocking connect: 0 or EINPROGRESS ({r} {})", ename(e)),
        r == 0 || e == libc::EINPROGRESS,
    )?;
    let ev = c.poll(libc::POLLOUT, 2000)?;
    check(
        &format!("connected socket writable ({ev:#x})"),
        ev & libc::POLLOUT != 0,
    )?;
    check("SO_ERROR 0", c.getopt(libc::SO_ERROR)? == 0)?;
    check(
        "listener readable",
        l.poll(libc::POLLIN, 1000)? & libc::POLLIN != 0,
    )?;
    let (fd, peer) = l.raw_accept(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let a = Sock(sys("accept4", fd)?);
    check("accept4 peer address", peer.port == c.name(false)?.port)?;
    // SAFETY: plain syscall.
    let fl = unsafe { libc::fcntl(a.0, libc::F_GETFL) };
    check("accept4 SOCK_NONBLOCK", fl & libc::O_NONBLOCK != 0)?;
    // SAFETY: plain syscall.
    let fdfl = unsafe { libc::fcntl(a.0, libc::F_GETFD) };
    check("accept4 SOCK_CLOEXEC", fdfl & libc::FD_CLOEXEC != 0)?;
    let mut b = [0u8; 8];
    expect_err("nonblocking recv", a.recv(&mut b, 0), libc::EAGAIN)?;
    check(
        "no POLLIN yet",
        a.poll(libc::POLLIN, 0)? & libc::POLLIN == 0,
    )?;
    c.send_all(b"x")?;
    check(
        "POLLIN after send",
        a.poll(libc::POLLIN, 1000)? & libc::POLLIN != 0,
    )?;
    expect_err(
        "connect when connected",
        c.raw_connect(CID_LOCAL, port)? as isize,
        libc::EISCONN,
    )?;
    // epoll
    // SAFETY: plain syscalls on valid fds.
    unsafe {
        let ep = sys("epoll_create1", libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        sys(
            "epoll_ctl",
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, a.0, &mut ev),
        )?;
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 2];
        let n = libc::epoll_wait(ep, out.as_mut_ptr(), 2, 1000);
        let ok1 = n == 1 && out[0].u64 == 7;
        a.recv(&mut b, 0);
        let n2 = libc::epoll_wait(ep, out.as_mut_ptr(), 2, 0);
        let t = thread::spawn({
            let fd = c.0;
            move || {
                thread::sleep(Duration::from_millis(100));
                libc::send(fd, b"y".as_ptr().cast(), 1, 0);
            }
        });
        let n3 = libc::epoll_wait(ep, out.as_mut_ptr(), 2, 2000);
        let _ = t.join();
        libc::close(ep);
        check(
            &format!("epoll: ready {n}, drained {n2}, woken {n3}"),
            ok1 && n2 == 0 && n3 == 1,
        )?;
    }
    Ok(())
}

fn t_refused() -> Res {
    let c = Sock::new(libc::SOCK_STREAM)?;
    expect_err(
        "connect to a closed port",
        c.raw_connect(CID_LOCAL, 4999)? as isize,
        libc::ECONNREFUSED,
    )?;
    let c = Sock::new(libc::SOCK_STREAM)?;
    c.set_nonblock()?;
    let r = c.raw_connect(CID_LOCAL, 4999)?;
    let e = errno();
    if r < 0 && e == libc::EINPROGRESS {
        let ev = c.poll(libc::POLLOUT, 2000)?;
        check(
            &format!("refused nonblocking connect: POLLERR ({ev:#x})"),
            ev & libc::POLLERR != 0,
        )?;
        check(
            "SO_ERROR ECONNREFUSED",
            c.getopt(libc::SO_ERROR)? == libc::ECONNREFUSED,
        )?;
    } else {
        check(
            &format!("refused nonblocking connect ({})", ename(e)),
            r < 0 && e == libc::ECONNREFUSED,
        )?;
    }
    // Type mismatch: a seqpacket listener refuses a stream connect.
    let (_l, port) = listener(libc::SOCK_SEQPACKET)?;
    let c = Sock::new(libc::SOCK_STREAM)?;
    expect_err(
        "stream connect to a seqpacket listener",
        c.raw_connect(CID_LOCAL, port)? as isize,
        libc::ECONNREFUSED,
    )?;
    let c = Sock::new(libc::SOCK_STREAM)?;
    expect_err(
        "connect to VMCS_PORT_ANY",
        c.raw_connect(CID_LOCAL, PORT_ANY)? as isize,
        libc::EINVAL,
    )?;
    expect_err(
        "connect to a missing peer",
        c.raw_connect(60, 5000)? as isize,
        libc::EHOSTUNREACH,
    )?;
    let l = Sock::new(libc::SOCK_STREAM)?;
    expect_err(
        "listen unbound",
        {
            // SAFETY: plain syscall.
            unsafe { libc::listen(l.0, 1) as isize }
        },
        libc::EINVAL,
    )?;
    expect_err("send unconnected", l.send(b"x", 0), libc::ENOTCONN)?;
    Ok(())
}

fn t_reset() -> Res {
    let (c, a) = pair(libc::SOCK_STREAM)?;
    a.send_all(b"unread")?;
    thread::sleep(Duration::from_millis(50));
    drop(c);
    thread::sleep(Duration::from_millis(50));
    let mut b = [0u8; 8];
    let r = a.recv(&mut b, 0);
    expect_err(
        "recv after peer closed with unread data",
        r,
        libc::ECONNRESET,
    )?;
    let ev = a.poll(libc::POLLIN, 0)?;
    check(
        &format!("POLLHUP|POLLERR after reset ({ev:#x})"),
        ev & libc::POLLHUP != 0,
    )?;
    let (c, a) = pair(libc::SOCK_STREAM)?;
    c.send_all(b"bye")?;
    drop(c);
    thread::sleep(Duration::from_millis(50));
    check(
        "data then EOF after orderly close",
        a.recv(&mut b, 0) == 3 && a.recv(&mut b, 0) == 0,
    )?;
    expect_err("send to closed peer", a.send(b"x", 0), libc::EPIPE)?;
    Ok(())
}

fn t_sockopt() -> Res {
    let (_c, a) = pair(libc::SOCK_STREAM)?;
    let one: c_int = 1;
    a.setopt(libc::SO_RCVLOWAT, &one)?;
    check("SO_RCVLOWAT", a.getopt(libc::SO_RCVLOWAT)? == 1)?;
    check(
        "SO_TYPE stream",
        a.getopt(libc::SO_TYPE)? == libc::SOCK_STREAM,
    )?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 300_000,
    };
    // A loopback connect is answered at once: SO_SNDTIMEO must not break it (the timeout
    // itself is tested in the crash scenario, where the peer stops answering).
    let s = Sock::new(libc::SOCK_STREAM)?;
    s.setopt(libc::SO_SNDTIMEO, &tv)?;
    let (_l, port) = listener(libc::SOCK_STREAM)?;
    s.connect(CID_LOCAL, port)?;
    Ok(())
}

fn setint(s: &Sock, opt: c_int, v: c_int) -> Res {
    s.setopt(opt, &v)
}

fn set_timeo(s: &Sock, opt: c_int, ms: i64) -> Res {
    let tv = libc::timeval {
        tv_sec: ms / 1000,
        tv_usec: (ms % 1000) * 1000,
    };
    s.setopt(opt, &tv)
}

/// Reads exactly `n` bytes (blocking) and checks they are `fill`.
fn drain(s: &Sock, n: usize) -> Res {
    let mut b = vec![0u8; n];
    let got = s.recv(&mut b, libc::MSG_WAITALL);
    if got as usize != n {
        return Err(format!("drain {n}: got {got} {}", ename(errno())));
    }
    Ok(())
}

/// SO_RCVBUF / SO_SNDBUF: getsockopt reports twice the size in use (as Linux does for
/// every family), clamped to 4 KiB..4 MiB; SO_RCVBUF is the credit the peer gets, at
/// once on a connection, before connect, and inherited from a listener. Non-blocking
/// stream sends queue what fits (partial count), seqpacket ones all or nothing.
fn t_bufs() -> Res {
    let s = Sock::new(libc::SOCK_STREAM)?;
    let (r, w) = (s.getopt(libc::SO_RCVBUF)?, s.getopt(libc::SO_SNDBUF)?);
    check(
        &format!("defaults: SO_RCVBUF {r}, SO_SNDBUF {w} (2 x 256 KiB)"),
        r == 512 << 10 && w == 512 << 10,
    )?;
    setint(&s, libc::SO_RCVBUF, 65536)?;
    check(
        "SO_RCVBUF 64 KiB reads 128 KiB",
        s.getopt(libc::SO_RCVBUF)? == 128 << 10,
    )?;
    setint(&s, libc::SO_RCVBUF, 1)?;
    check(
        "SO_RCVBUF 1 clamps to 4 KiB (reads 8 KiB)",
        s.getopt(libc::SO_RCVBUF)? == 8 << 10,
    )?;
    setint(&s, libc::SO_RCVBUF, 64 << 20)?;
    check(
        "SO_RCVBUF 64 MiB clamps to 4 MiB (reads 8 MiB)",
        s.getopt(libc::SO_RCVBUF)? == 8 << 20,
    )?;
    setint(&s, libc::SO_SNDBUF, 10000)?;
    check(
        "SO_SNDBUF 10000 reads 20000",
        s.getopt(libc::SO_SNDBUF)? == 20000,
    )?;
    setint(&s, libc::SO_SNDBUF, 0)?;
    check(
        "SO_SNDBUF 0 clamps to 4 KiB (reads 8 KiB)",
        s.getopt(libc::SO_SNDBUF)? == 8 << 10,
    )?;

    // The receiver shrinks its buffer on a connection: the sender learns at once.
    let (c, a) = pair(libc::SOCK_STREAM)?;
    c.set_nonblock()?;
    setint(&a, libc::SO_RCVBUF, 16384)?;
    let big = vec![5u8; 256 << 10];
    let n = c.send(&big[..65536], 0);
    check(
        &format!("non-blocking 64 KiB send into a 16 KiB buffer queues 16384 ({n})"),
        n == 16384,
    )?;
    expect_err(
        "non-blocking send with no credit",
        c.send(b"x", 0),
        libc::EAGAIN,
    )?;
    check("SIOCINQ 16384", a.ioctl_int(libc::FIONREAD)? == 16384)?;
    drain(&a, 16384)?;
    // It grows it: a 1 MiB buffer takes 1 MiB.
    setint(&a, libc::SO_RCVBUF, 1 << 20)?;
    let big = vec![6u8; 2 << 20];
    let n = c.send(&big, 0);
    check(
        &format!("after SO_RCVBUF 1 MiB, a 2 MiB non-blocking send queues 1 MiB ({n})"),
        n == 1 << 20,
    )?;
    drain(&a, 1 << 20)?;

    // Set before connect: the connecting side advertises it.
    let (l, port) = listener(libc::SOCK_STREAM)?;
    let c = Sock::new(libc::SOCK_STREAM)?;
    setint(&c, libc::SO_RCVBUF, 8192)?;
    c.connect(CID_LOCAL, port)?;
    let (a, _) = l.accept()?;
    a.set_nonblock()?;
    let n = a.send(&big[..65536], 0);
    check(
        &format!("SO_RCVBUF 8 KiB before connect: the peer may send 8192 ({n})"),
        n == 8192,
    )?;
    drain(&c, 8192)?;

    // Inherited from the listener (buffer and getsockopt value).
    let l = Sock::new(libc::SOCK_STREAM)?;
    l.bind(CID_ANY, PORT_ANY)?;
    setint(&l, libc::SO_RCVBUF, 32768)?;
    setint(&l, libc::SO_SNDBUF, 20000)?;
    l.listen(4)?;
    let port = l.name(false)?.port;
    let c = Sock::new(libc::SOCK_STREAM)?;
    c.connect(CID_LOCAL, port)?;
    let (a, _) = l.accept()?;
    check(
        "accepted socket inherits SO_RCVBUF (64 KiB) and SO_SNDBUF (40000)",
        a.getopt(libc::SO_RCVBUF)? == 64 << 10 && a.getopt(libc::SO_SNDBUF)? == 40000,
    )?;
    c.set_nonblock()?;
    let n = c.send(&big[..100_000], 0);
    check(
        &format!("the accepted side's 32 KiB credit: 32768 of 100000 queued ({n})"),
        n == 32768,
    )?;
    drain(&a, 32768)?;

    // A small SO_SNDBUF still moves a large transfer intact.
    setint(&c, libc::SO_SNDBUF, 4096)?;
    let data: Vec<u8> = (0..300_000).map(|i| (i % 249) as u8).collect();
    let w = {
        let fd = c.0;
        let d = data.clone();
        thread::spawn(move || {
            let mut off = 0;
            while off < d.len() {
                // SAFETY: the fd outlives the thread (joined below).
                let n = unsafe { libc::send(fd, d[off..].as_ptr().cast(), d.len() - off, 0) };
                if n > 0 {
                    off += n as usize;
                } else if errno() == libc::EAGAIN {
                    thread::sleep(Duration::from_millis(2));
                } else {
                    break;
                }
            }
            off
        })
    };
    let mut got = vec![0u8; data.len()];
    let n = a.recv(&mut got, libc::MSG_WAITALL);
    let sent = w.join().map_err(|_| "join")?;
    check(
        &format!("300000 bytes through SO_SNDBUF 4 KiB (sent {sent}, got {n})"),
        n as usize == data.len() && got == data,
    )?;

    // Seqpacket stays all or nothing.
    let (c, a) = pair(libc::SOCK_SEQPACKET)?;
    c.set_nonblock()?;
    setint(&a, libc::SO_RCVBUF, 16384)?;
    check("seqpacket 10000 fits", c.send(&big[..10000], 0) == 10000)?;
    expect_err(
        "seqpacket 10000 more: no partial message",
        c.send(&big[..10000], 0),
        libc::EAGAIN,
    )?;
    expect_err(
        "seqpacket larger than the peer's buffer",
        c.send(&big[..20000], 0),
        libc::EMSGSIZE,
    )?;
    let mut b = vec![0u8; 20000];
    check("seqpacket message intact", a.recv(&mut b, 0) == 10000)?;
    Ok(())
}

/// SO_RCVLOWAT on a stream: poll reports POLLIN only at the mark, recv waits for it (or EOF,
/// or the SO_RCVTIMEO timeout, returning what it has).
fn t_lowat() -> Res {
    let (c, a) = pair(libc::SOCK_STREAM)?;
    setint(&a, libc::SO_RCVLOWAT, 100)?;
    c.send_all(&[1u8; 50])?;
    check(
        "50 bytes below SO_RCVLOWAT 100: no POLLIN",
        a.poll(libc::POLLIN, 200)? & libc::POLLIN == 0,
    )?;
    c.send_all(&[2u8; 60])?;
    check(
        "110 bytes: POLLIN",
        a.poll(libc::POLLIN, 1000)? & libc::POLLIN != 0,
    )?;
    let mut b = [0u8; 1000];
    check("recv returns the 110", a.recv(&mut b, 0) == 110)?;
    // A blocking recv waits for the mark across two sends.
    let w = thread::spawn({
        let fd = c.0;
        move || {
            // SAFETY: the fd outlives the thread (joined below).
            unsafe { libc::send(fd, [3u8; 50].as_ptr().cast(), 50, 0) };
            thread::sleep(Duration::from_millis(200));
            unsafe { libc::send(fd, [4u8; 50].as_ptr().cast(), 50, 0) };
        }
    });
    let n = a.recv(&mut b, 0);
    let _ = w.join();
    check(
        &format!("blocking recv waited for 100 bytes ({n})"),
        n == 100 && b[0] == 3 && b[99] == 4,
    )?;
    // With a timeout it returns what it has.
    set_timeo(&a, libc::SO_RCVTIMEO, 300)?;
    c.send_all(&[5u8; 10])?;
    let n = a.recv(&mut b, 0);
    check(
        &format!("SO_RCVTIMEO: 10 bytes below the mark ({n})"),
        n == 10,
    )?;
    // MSG_DONTWAIT returns what is there.
    c.send_all(&[6u8; 20])?;
    thread::sleep(Duration::from_millis(50));
    check(
        "MSG_DONTWAIT below the mark",
        a.recv(&mut b, libc::MSG_DONTWAIT) == 20,
    )?;
    // EOF ends the wait.
    c.send_all(&[7u8; 10])?;
    c.shutdown(libc::SHUT_WR)?;
    check(
        "POLLIN at EOF below the mark",
        a.poll(libc::POLLIN, 1000)? & libc::POLLIN != 0,
    )?;
    let n = a.recv(&mut b, 0);
    check(
        &format!("recv at EOF returns the rest ({n}), then 0"),
        n == 10 && a.recv(&mut b, 0) == 0,
    )?;
    // A mark above the buffer is capped at the buffer.
    let (c, a) = pair(libc::SOCK_STREAM)?;
    setint(&a, libc::SO_RCVBUF, 4096)?;
    setint(&a, libc::SO_RCVLOWAT, 1 << 20)?;
    c.send_all(&[8u8; 4096])?;
    check(
        "SO_RCVLOWAT above the 4 KiB buffer: POLLIN with a full buffer",
        a.poll(libc::POLLIN, 1000)? & libc::POLLIN != 0,
    )?;
    check("recv returns the full buffer", a.recv(&mut b, 0) == 1000)?;
    Ok(())
}

/// SO_RCVTIMEO (recv, accept) and SO_SNDTIMEO (send): EAGAIN when they run out, or the
/// bytes moved so far.
fn t_timeo() -> Res {
    let ms = |t: Instant| t.elapsed().as_millis();
    let (c, a) = pair(libc::SOCK_STREAM)?;
    set_timeo(&a, libc::SO_RCVTIMEO, 200)?;
    let mut b = [0u8; 100];
    let t = Instant::now();
    let r = a.recv(&mut b, 0);
    let el = ms(t);
    expect_err(
        &format!("stream recv, SO_RCVTIMEO 200 ms ({el} ms)"),
        r,
        libc::EAGAIN,
    )?;
    check("waited at least ~200 ms", el >= 150)?;
    c.send_all(b"late")?;
    check("recv after a timeout still works", a.recv(&mut b, 0) == 4)?;
    let (l, _) = listener(libc::SOCK_STREAM)?;
    set_timeo(&l, libc::SO_RCVTIMEO, 200)?;
    let t = Instant::now();
    let (fd, _) = l.raw_accept(0);
    let el = ms(t);
    expect_err(
        &format!("accept, SO_RCVTIMEO 200 ms ({el} ms)"),
        fd as isize,
        libc::EAGAIN,
    )?;
    check("accept waited at least ~200 ms", el >= 150)?;
    let (qc, qa) = pair(libc::SOCK_SEQPACKET)?;
    set_timeo(&qa, libc::SO_RCVTIMEO, 200)?;
    expect_err(
        "seqpacket recv, SO_RCVTIMEO",
        qa.recv(&mut b, 0),
        libc::EAGAIN,
    )?;

    // SO_SNDTIMEO: fill the peer's 4 KiB buffer, then send more.
    setint(&a, libc::SO_RCVBUF, 4096)?;
    set_timeo(&c, libc::SO_SNDTIMEO, 200)?;
    let big = vec![9u8; 10000];
    let t = Instant::now();
    let n = c.send(&big, 0);
    let el = ms(t);
    check(
        &format!("blocking send, SO_SNDTIMEO 200 ms: the 4096 that fit ({n}, {el} ms)"),
        n == 4096 && el >= 150,
    )?;
    let t = Instant::now();
    let r = c.send(&big, 0);
    let el = ms(t);
    expect_err(
        &format!("send with no credit, SO_SNDTIMEO ({el} ms)"),
        r,
        libc::EAGAIN,
    )?;
    drain(&a, 4096)?;
    setint(&qa, libc::SO_RCVBUF, 4096)?;
    set_timeo(&qc, libc::SO_SNDTIMEO, 200)?;
    check("seqpacket 4000 fits", qc.send(&big[..4000], 0) == 4000)?;
    expect_err(
        "seqpacket send with no credit, SO_SNDTIMEO",
        qc.send(&big[..4000], 0),
        libc::EAGAIN,
    )?;
    Ok(())
}

fn t_hold() -> Res {
    let (_c, _a) = pair(libc::SOCK_STREAM)?;
    println!("holding");
    let _ = std::io::stdout().flush();
    loop {
        thread::sleep(Duration::from_secs(10));
    }
}

/// A named loopback test.
type Test = (&'static str, fn() -> Res);

const TESTS: &[Test] = &[
    ("family", t_family),
    ("bind", t_bind),
    ("stream", t_stream),
    ("seqpacket", t_seqpacket),
    ("nonblock", t_nonblock),
    ("refused", t_refused),
    ("reset", t_reset),
    ("sockopt", t_sockopt),
    ("bufs", t_bufs),
    ("rcvlowat", t_lowat),
    ("timeouts", t_timeo),
];

// ---- cross-guest ----

fn echo(s: Sock) {
    let mut b = vec![0u8; 65536];
    loop {
        let n = s.recv(&mut b, 0);
        if n <= 0 || s.send(&b[..n as usize], 0) != n {
            break;
        }
    }
}

fn serve(port: u32, n: usize) -> Res {
    let ls = Sock::new(libc::SOCK_STREAM)?;
    ls.bind(CID_ANY, port)?;
    ls.listen(8)?;
    let lq = Sock::new(libc::SOCK_SEQPACKET)?;
    lq.bind(CID_ANY, port + 1)?;
    lq.listen(8)?;
    println!("listening on {port} (stream) and {} (seqpacket)", port + 1);
    let _ = std::io::stdout().flush();
    let tq = thread::spawn(move || -> Res {
        let mut ts = Vec::new();
        for _ in 0..n {
            let (s, a) = lq.accept()?;
            println!("seqpacket client {}:{}", a.cid, a.port);
            ts.push(thread::spawn(move || echo(s)));
        }
        // Serve until every client has closed its connection.
        for t in ts {
            let _ = t.join();
        }
        Ok(())
    });
    let mut ts = Vec::new();
    for _ in 0..n {
        let (s, a) = ls.accept()?;
        println!("stream client {}:{}", a.cid, a.port);
        ts.push(thread::spawn(move || echo(s)));
    }
    for t in ts {
        let _ = t.join();
    }
    tq.join().map_err(|_| "join")??;
    Ok(())
}

/// Finds the server: every cid but ours, retrying for a minute.
fn find_server(ty: c_int, port: u32) -> Res<(Sock, u32)> {
    let probe = Sock::new(ty)?;
    probe.bind(CID_ANY, PORT_ANY)?;
    let local = probe.name(false)?.cid;
    drop(probe);
    let t0 = Instant::now();
    loop {
        for cid in 0..64 {
            if cid == local {
                continue;
            }
            let s = Sock::new(ty)?;
            if s.raw_connect(cid, port)? == 0 {
                return Ok((s, cid));
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("no server on port {port}"));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

fn client(port: u32) -> Res {
    let (s, cid) = find_server(libc::SOCK_STREAM, port)?;
    let p = s.name(true)?;
    check(
        &format!("stream connected to cid {cid}, getpeername"),
        p.cid == cid && p.port == port,
    )?;
    let big: Vec<u8> = (0..4 << 20).map(|i| (i % 253) as u8).collect();
    let wfd = s.0;
    let data = big.clone();
    let t0 = Instant::now();
    let w = thread::spawn(move || {
        // SAFETY: the fd outlives the thread.
        unsafe { libc::send(wfd, data.as_ptr().cast(), data.len(), 0) }
    });
    let mut got = vec![0u8; big.len()];
    let n = s.recv(&mut got, libc::MSG_WAITALL);
    let rerr = ename(errno());
    let sent = w.join().map_err(|_| "join")?;
    let n2 = s.recv(&mut got, libc::MSG_DONTWAIT);
    let e2 = ename(errno());
    println!("after: recv {n2} ({e2}), first recv error state: {rerr}");
    check(
        &format!(
            "4 MiB stream echo (sent {sent} got {n}) in {:?}",
            t0.elapsed()
        ),
        n as usize == big.len() && got == big,
    )?;
    s.shutdown(libc::SHUT_WR)?;
    let mut b = [0u8; 16];
    check("EOF after SHUT_WR", s.recv(&mut b, 0) == 0)?;
    let (q, _) = find_server(libc::SOCK_SEQPACKET, port + 1)?;
    for len in [1usize, 100, 4000, 9000, 65536] {
        let m: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        q.send_all(&m)?;
        let mut r = vec![0u8; 70000];
        let (n, f) = q.recvmsg(&mut r, 0);
        check(
            &format!("seqpacket {len} bytes back as one message"),
            n as usize == len && r[..len] == m[..] && f & libc::MSG_TRUNC == 0,
        )?;
    }
    Ok(())
}

// ---- scale: many connections at once ----

/// Raises the open-file limit to its hard maximum.
fn raise_nofile() -> Res {
    // SAFETY: plain syscalls with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        sys("getrlimit", libc::getrlimit(libc::RLIMIT_NOFILE, &mut r))?;
        r.rlim_cur = r.rlim_max;
        sys("setrlimit", libc::setrlimit(libc::RLIMIT_NOFILE, &r))?;
    }
    Ok(())
}

/// Byte `k` of connection `i`'s payload.
fn scale_byte(i: u32, k: usize) -> u8 {
    ((k + i as usize * 13) % 251) as u8
}

struct Epoll(c_int);

impl Epoll {
    fn new() -> Res<Self> {
        // SAFETY: plain syscall.
        Ok(Self(sys("epoll_create1", unsafe {
            libc::epoll_create1(libc::EPOLL_CLOEXEC)
        })?))
    }
    fn add(&self, fd: c_int, events: u32, tag: u64) -> Res {
        let mut ev = libc::epoll_event { events, u64: tag };
        // SAFETY: `ev` is valid.
        sys("epoll_ctl", unsafe {
            libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev)
        })?;
        Ok(())
    }
    fn modify(&self, fd: c_int, events: u32, tag: u64) -> Res {
        let mut ev = libc::epoll_event { events, u64: tag };
        // SAFETY: `ev` is valid.
        sys("epoll_ctl", unsafe {
            libc::epoll_ctl(self.0, libc::EPOLL_CTL_MOD, fd, &mut ev)
        })?;
        Ok(())
    }
    fn wait(&self, out: &mut [libc::epoll_event], ms: c_int) -> Res<usize> {
        // SAFETY: `out` is valid for its length.
        let n = unsafe { libc::epoll_wait(self.0, out.as_mut_ptr(), out.len() as c_int, ms) };
        if n < 0 && errno() == libc::EINTR {
            return Ok(0);
        }
        Ok(sys("epoll_wait", n)? as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// One accepted connection of `scale-serve`.
#[derive(Default)]
struct ScaleConn {
    sock: Option<Sock>,
    hdr: Vec<u8>,
    idx: u32,
    got: usize,
    bad: bool,
}

/// Guest 0: accepts `nconn` stream connections on `port`; each sends a 4-byte index and
/// `bytes` payload bytes, then shuts down writing. Reads at most 1 KiB per connection per
/// epoll round, checks every byte, answers `[index, count]` and closes. Fairness: when the
/// first connection has received all its bytes, every connection must have received some
/// (read or queued, SIOCINQ).
fn scale_serve(port: u32, nconn: usize, bytes: usize) -> Res {
    raise_nofile()?;
    let l = Sock::new(libc::SOCK_STREAM)?;
    l.bind(CID_ANY, port)?;
    l.listen(nconn as c_int + 16)?;
    l.set_nonblock()?;
    println!("scale: listening on {port} for {nconn} connections x {bytes} bytes");
    let _ = std::io::stdout().flush();
    let ep = Epoll::new()?;
    const LISTENER: u64 = u64::MAX;
    ep.add(l.0, libc::EPOLLIN as u32, LISTENER)?;
    let mut conns: Vec<ScaleConn> = Vec::new();
    let mut done = 0usize;
    let mut fair: Option<(usize, usize, usize, usize)> = None;
    let mut t0: Option<Instant> = None;
    let start = Instant::now();
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 1024];
    while done < nconn {
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!("scale: only {done} of {nconn} done after 600 s"));
        }
        let n = ep.wait(&mut evs, 1000)?;
        for ev in evs[..n].iter() {
            let tag = ev.u64;
            if tag == LISTENER {
                loop {
                    let (fd, _) = l.raw_accept(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
                    if fd < 0 {
                        break;
                    }
                    let s = Sock(fd);
                    ep.add(fd, libc::EPOLLIN as u32, conns.len() as u64)?;
                    conns.push(ScaleConn {
                        sock: Some(s),
                        ..Default::default()
                    });
                }
                continue;
            }
            let Some(c) = conns.get_mut(tag as usize) else {
                continue;
            };
            let Some(s) = c.sock.as_ref() else { continue };
            let r = s.recv(&mut buf, 0);
            if r < 0 {
                let e = errno();
                if e == libc::EAGAIN {
                    continue;
                }
                return Err(format!("scale: recv on connection {tag}: {}", ename(e)));
            }
            let mut data = &buf[..r as usize];
            if r == 0 {
                // EOF: answer with the index and the count, then close.
                let mut ans = [0u8; 8];
                ans[..4].copy_from_slice(&c.idx.to_le_bytes());
                ans[4..].copy_from_slice(&(c.got as u32).to_le_bytes());
                if c.hdr.len() < 4 || c.got != bytes || c.bad {
                    return Err(format!(
                        "scale: connection {tag} (index {}) ended with {} of {bytes} bytes{}",
                        c.idx,
                        c.got,
                        if c.bad { ", corrupt" } else { "" }
                    ));
                }
                if s.send(&ans, 0) != 8 {
                    return Err(format!("scale: answer: {}", ename(errno())));
                }
                c.sock = None;
                done += 1;
                continue;
            }
            t0.get_or_insert_with(Instant::now);
            while c.hdr.len() < 4 && !data.is_empty() {
                c.hdr.push(data[0]);
                data = &data[1..];
                if c.hdr.len() == 4 {
                    c.idx = u32::from_le_bytes([c.hdr[0], c.hdr[1], c.hdr[2], c.hdr[3]]);
                }
            }
            for (k, b) in data.iter().enumerate() {
                if *b != scale_byte(c.idx, c.got + k) {
                    c.bad = true;
                }
            }
            c.got += data.len();
            if c.got >= bytes && fair.is_none() {
                // Every connection's progress at this moment: bytes read plus queued.
                let mut min = usize::MAX;
                let mut max = 0;
                let mut zero = nconn.saturating_sub(conns.len());
                for c in conns.iter() {
                    let q = c
                        .sock
                        .as_ref()
                        .and_then(|s| s.ioctl_int(libc::FIONREAD).ok())
                        .unwrap_or(0) as usize;
                    let p = c.hdr.len() + c.got + q;
                    min = min.min(p);
                    max = max.max(p);
                    if p == 0 {
                        zero += 1;
                    }
                }
                if conns.len() < nconn {
                    min = 0;
                }
                fair = Some((conns.len(), min, max, zero));
            }
        }
    }
    let secs = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let (acc, min, max, zero) = fair.unwrap_or((0, 0, 0, nconn));
    println!(
        "SCALE-SERVED conns={nconn} bytes_each={bytes} total={} secs={secs:.1} \
         (from the first data to the last EOF)",
        nconn * bytes
    );
    println!(
        "SCALE-FAIRNESS when the first connection completed: accepted {acc}/{nconn}, \
         progress min {min} max {max} bytes, {zero} without progress"
    );
    check(
        &format!("all {nconn} connections served, every byte checked"),
        done == nconn,
    )?;
    check(
        "fair progress: every connection had data when the first one completed",
        zero == 0 && min > 0,
    )
}

/// Guest 1: opens `nconn` non-blocking stream connections to the server on `port`, sends
/// each its index and `bytes` payload bytes in 1 KiB writes, round robin, then checks
/// every answer.
fn scale_client(port: u32, nconn: usize, bytes: usize) -> Res {
    raise_nofile()?;
    let t0 = Instant::now();
    let (first, cid) = find_server(libc::SOCK_STREAM, port)?;
    first.set_nonblock()?;
    let mut socks = vec![first];
    let mut pending = 0usize;
    for _ in 1..nconn {
        let s = Sock::new(libc::SOCK_STREAM)?;
        s.set_nonblock()?;
        let r = s.raw_connect(cid, port)?;
        if r < 0 {
            let e = errno();
            if e != libc::EINPROGRESS {
                return Err(format!("connect #{}: {}", socks.len(), ename(e)));
            }
            pending += 1;
        }
        socks.push(s);
    }
    // Wait until every connect has completed.
    let ep = Epoll::new()?;
    for (i, s) in socks.iter().enumerate() {
        ep.add(s.0, (libc::EPOLLOUT | libc::EPOLLERR) as u32, i as u64)?;
    }
    let mut connected = vec![false; nconn];
    let mut ok = 0;
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while ok < nconn {
        if t0.elapsed() > Duration::from_secs(300) {
            return Err(format!("only {ok} of {nconn} connects completed"));
        }
        let n = ep.wait(&mut evs, 1000)?;
        for ev in evs[..n].iter() {
            let i = ev.u64 as usize;
            if connected[i] {
                continue;
            }
            let e = socks[i].getopt(libc::SO_ERROR)?;
            if e != 0 || ev.events & libc::EPOLLERR as u32 != 0 {
                return Err(format!("connect #{i}: {}", ename(e)));
            }
            connected[i] = true;
            ok += 1;
            // Level-triggered EPOLLOUT would keep firing: watch for input from now on.
            ep.modify(socks[i].0, libc::EPOLLIN as u32, i as u64)?;
        }
    }
    let t_conn = t0.elapsed();
    println!(
        "scale: {nconn} connections to cid {cid} ({pending} completed asynchronously) in {:.1} s",
        t_conn.as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    // Stream for connection i: 4-byte index, then `bytes` payload bytes.
    let total = 4 + bytes;
    let streams: Vec<Vec<u8>> = (0..nconn as u32)
        .map(|i| {
            let mut v = i.to_le_bytes().to_vec();
            v.extend((0..bytes).map(|k| scale_byte(i, k)));
            v
        })
        .collect();
    let mut off = vec![0usize; nconn];
    let mut left = nconn;
    let t1 = Instant::now();
    while left > 0 {
        let mut progress = false;
        for i in 0..nconn {
            if off[i] == total {
                continue;
            }
            let end = (off[i] + 1024).min(total);
            let r = socks[i].send(&streams[i][off[i]..end], 0);
            if r > 0 {
                off[i] += r as usize;
                progress = true;
                if off[i] == total {
                    socks[i].shutdown(libc::SHUT_WR)?;
                    left -= 1;
                }
            } else if errno() != libc::EAGAIN {
                return Err(format!("send #{i}: {}", ename(errno())));
            }
        }
        if !progress {
            if t1.elapsed() > Duration::from_secs(600) {
                return Err(format!(
                    "sending stalled with {left} connections unfinished"
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
    // Answers: [index, count] then EOF.
    let mut answered = vec![false; nconn];
    let mut got = 0;
    let mut b = [0u8; 16];
    while got < nconn {
        if t1.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {got} of {nconn} answers"));
        }
        let n = ep.wait(&mut evs, 1000)?;
        for ev in evs[..n].iter() {
            let i = ev.u64 as usize;
            if answered[i] {
                continue;
            }
            let r = socks[i].recv(&mut b, libc::MSG_WAITALL);
            if r < 0 && errno() == libc::EAGAIN {
                continue;
            }
            let idx = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let cnt = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            if r != 8 || idx as usize != i || cnt as usize != bytes {
                return Err(format!(
                    "connection {i}: answer {r} bytes, index {idx}, count {cnt} (want {bytes})"
                ));
            }
            answered[i] = true;
            got += 1;
        }
    }
    let secs = t1.elapsed().as_secs_f64();
    println!(
        "SCALE conns={nconn} bytes_each={bytes} connect_secs={:.1} transfer_secs={secs:.1}",
        t_conn.as_secs_f64()
    );
    check(
        &format!("{nconn} connections each sent {bytes} bytes and got the right count back"),
        true,
    )
}

// ---- peer death (qemu-test/scenarios/crash.sh) ----

/// Guest 0: a stream listener on `port` and a seqpacket one on `port + 1`. The first
/// incarnation of guest 1 connects to both; this blocks in recv on both and expects
/// ECONNRESET once guest 1 is killed, while a third thread keeps trying to connect to a
/// closed port on guest 1 with SO_SNDTIMEO 300 ms: refused while guest 1 lives,
/// ETIMEDOUT once it is dead but not yet detected (nothing answers), EHOSTUNREACH after.
/// Then the restarted guest 1 connects to the same stream listener and is echoed.
fn crash_serve(port: u32) -> Res {
    let ls = Sock::new(libc::SOCK_STREAM)?;
    ls.bind(CID_ANY, port)?;
    ls.listen(4)?;
    let lq = Sock::new(libc::SOCK_SEQPACKET)?;
    lq.bind(CID_ANY, port + 1)?;
    lq.listen(4)?;
    println!(
        "crash-serve: listening on {port} (stream) and {} (seqpacket)",
        port + 1
    );
    let _ = std::io::stdout().flush();
    let (s, a) = ls.accept()?;
    let (q, _) = lq.accept()?;
    let peer = a.cid;
    println!("SOCK-ACCEPTED stream and seqpacket from cid {peer}");
    let _ = std::io::stdout().flush();
    let blocked = |s: Sock, what: &'static str| {
        thread::spawn(move || -> c_int {
            let mut b = [0u8; 4096];
            loop {
                let r = s.recv(&mut b, 0);
                if r <= 0 {
                    let e = if r == 0 { 0 } else { errno() };
                    println!("{what} recv ended: {r} ({})", ename(e));
                    let _ = std::io::stdout().flush();
                    return e;
                }
            }
        })
    };
    let ts = blocked(s, "stream");
    let tq = blocked(q, "seqpacket");
    let prober = thread::spawn(move || -> (usize, usize, usize, c_int) {
        let (mut refused, mut timedout, mut reset) = (0, 0, 0);
        let t0 = Instant::now();
        loop {
            let Ok(c) = Sock::new(libc::SOCK_STREAM) else {
                return (refused, timedout, reset, -1);
            };
            let _ = set_timeo(&c, libc::SO_SNDTIMEO, 300);
            let t = Instant::now();
            let r = c.raw_connect(peer, port + 99).unwrap_or(-1);
            let e = if r == 0 { 0 } else { errno() };
            match e {
                libc::ECONNREFUSED => refused += 1,
                libc::ETIMEDOUT => {
                    timedout += 1;
                    println!("connect timed out after {} ms", t.elapsed().as_millis());
                }
                libc::ECONNRESET => reset += 1,
                _ => return (refused, timedout, reset, e),
            }
            if t0.elapsed() > Duration::from_secs(300) {
                return (refused, timedout, reset, -1);
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let es = ts.join().map_err(|_| "join")?;
    let eq = tq.join().map_err(|_| "join")?;
    let (refused, timedout, reset, last) = prober.join().map_err(|_| "join")?;
    println!(
        "probe: {refused} refused, {timedout} timed out, {reset} reset, then {}",
        ename(last)
    );
    let _ = std::io::stdout().flush();
    let mut fails = Vec::new();
    if es == libc::ECONNRESET {
        println!("SOCK-STREAM-RESET");
    } else {
        fails.push(format!("stream recv ended with {}", ename(es)));
    }
    if eq == libc::ECONNRESET {
        println!("SOCK-SEQPACKET-RESET");
    } else {
        fails.push(format!("seqpacket recv ended with {}", ename(eq)));
    }
    if timedout > 0 && last == libc::EHOSTUNREACH {
        println!("SOCK-CONNECT-TIMEDOUT");
    } else {
        fails.push("no connect ETIMEDOUT while the dead peer was undetected".into());
    }
    let _ = std::io::stdout().flush();
    // The listener survived: the next incarnation of guest 1 connects here.
    let (s, a) = ls.accept()?;
    println!("rejoined: stream from cid {}:{}", a.cid, a.port);
    let mut b = vec![0u8; 4096];
    let mut msgs = 0;
    loop {
        let n = s.recv(&mut b, 0);
        if n <= 0 {
            break;
        }
        if s.send(&b[..n as usize], 0) != n {
            break;
        }
        msgs += 1;
    }
    println!("SOCK-REJOIN-ECHOED {msgs} reads");
    if fails.is_empty() {
        Ok(())
    } else {
        Err(fails.join("; "))
    }
}

/// Guest 1, first incarnation: connect a stream and a seqpacket socket to guest 0, send a
/// first message on each, then stay connected until killed.
fn crash_connect(port: u32) -> Res {
    let (s, cid) = find_server(libc::SOCK_STREAM, port)?;
    let (q, _) = find_server(libc::SOCK_SEQPACKET, port + 1)?;
    s.send_all(b"hello stream")?;
    q.send_all(b"hello seqpacket")?;
    println!("connected to cid {cid}");
    let _ = std::io::stdout().flush();
    loop {
        thread::sleep(Duration::from_secs(10));
    }
}

/// Guest 1, restarted: connect to the surviving stream listener and exchange 50 messages.
fn crash_rejoin(port: u32) -> Res {
    let (s, cid) = find_server(libc::SOCK_STREAM, port)?;
    for i in 0..50u32 {
        let m: Vec<u8> = (0..200).map(|k| (k as u32 * 3 + i) as u8).collect();
        s.send_all(&m)?;
        let mut b = vec![0u8; 200];
        let n = s.recv(&mut b, libc::MSG_WAITALL);
        if n != 200 || b != m {
            return Err(format!("echo {i}: {n} bytes"));
        }
    }
    s.shutdown(libc::SHUT_WR)?;
    let mut b = [0u8; 8];
    check(
        &format!("50 messages echoed by cid {cid} over the surviving listener, then EOF"),
        s.recv(&mut b, 0) == 0,
    )
}

// ---- AF_VSOCK echo, only the family changed ----

fn vsock_family() -> c_int {
    family().unwrap_or(-1)
}

fn vsock_echo_server(port: u32) -> Res {
    // A standard vsock echo server; `AF_VSOCK` is `vsock_family()`.
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        let fd = libc::socket(vsock_family(), libc::SOCK_STREAM, 0);
        let mut sa: libc::sockaddr_vm = std::mem::zeroed();
        sa.svm_family = vsock_family() as libc::sa_family_t;
        sa.svm_cid = libc::VMADDR_CID_ANY;
        sa.svm_port = port;
        let len = size_of::<libc::sockaddr_vm>() as socklen_t;
        sys(
            "bind",
            libc::bind(fd, (&sa as *const libc::sockaddr_vm).cast(), len),
        )?;
        sys("listen", libc::listen(fd, 1))?;
        println!("vsock-echo listening");
        let _ = std::io::stdout().flush();
        let c = sys(
            "accept",
            libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()),
        )?;
        let mut b = [0u8; 4096];
        loop {
            let n = libc::read(c, b.as_mut_ptr().cast(), b.len());
            if n <= 0 || libc::write(c, b.as_ptr().cast(), n as usize) != n {
                break;
            }
        }
        libc::close(c);
        libc::close(fd);
    }
    Ok(())
}

fn vsock_client(port: u32) -> Res {
    // Find the server's cid with the AF_VMCS helper, then talk plain vsock code.
    let probe = Sock::new(libc::SOCK_STREAM)?;
    probe.bind(CID_ANY, PORT_ANY)?;
    let local = probe.name(false)?.cid;
    drop(probe);
    let t0 = Instant::now();
    loop {
        for cid in (0..64).filter(|&c| c != local) {
            // SAFETY: plain syscalls with valid arguments.
            unsafe {
                let fd = libc::socket(vsock_family(), libc::SOCK_STREAM, 0);
                let mut sa: libc::sockaddr_vm = std::mem::zeroed();
                sa.svm_family = vsock_family() as libc::sa_family_t;
                sa.svm_cid = cid;
                sa.svm_port = port;
                let len = size_of::<libc::sockaddr_vm>() as socklen_t;
                if libc::connect(fd, (&sa as *const libc::sockaddr_vm).cast(), len) != 0 {
                    libc::close(fd);
                    continue;
                }
                let msg = b"hello over vsock code";
                libc::write(fd, msg.as_ptr().cast(), msg.len());
                let mut b = [0u8; 64];
                let n = libc::read(fd, b.as_mut_ptr().cast(), b.len());
                println!(
                    "read {n} ({}) {:?}",
                    ename(errno()),
                    &b[..n.max(0) as usize]
                );
                libc::close(fd);
                return check(
                    &format!("vsock-style echo via cid {cid}"),
                    n as usize == msg.len() && &b[..msg.len()] == msg,
                );
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err("no vsock echo server".into());
        }
        thread::sleep(Duration::from_millis(500));
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).and_then(|s| s.parse::<u32>().ok());
    let r = match args.first().map(String::as_str) {
        Some("list") => {
            for (n, _) in TESTS {
                println!("{n}");
            }
            Ok(())
        }
        Some("serve") => match (arg(1), arg(2)) {
            (Some(p), Some(n)) => serve(p, n as usize),
            _ => Err("usage: serve PORT N".into()),
        },
        Some("client") => arg(1).map_or(Err("usage: client PORT".into()), client),
        Some("vsock-echo-server") => arg(1).map_or(Err("usage".into()), vsock_echo_server),
        Some("vsock-echo-client") => arg(1).map_or(Err("usage".into()), vsock_client),
        Some("hold") => t_hold(),
        Some("scale-serve") => match (arg(1), arg(2), arg(3)) {
            (Some(p), Some(n), Some(b)) => scale_serve(p, n as usize, b as usize),
            _ => Err("usage: scale-serve PORT NCONN BYTES".into()),
        },
        Some("scale-client") => match (arg(1), arg(2), arg(3)) {
            (Some(p), Some(n), Some(b)) => scale_client(p, n as usize, b as usize),
            _ => Err("usage: scale-client PORT NCONN BYTES".into()),
        },
        Some("crash-serve") => arg(1).map_or(Err("usage: crash-serve PORT".into()), crash_serve),
        Some("crash-connect") => {
            arg(1).map_or(Err("usage: crash-connect PORT".into()), crash_connect)
        }
        Some("crash-rejoin") => arg(1).map_or(Err("usage: crash-rejoin PORT".into()), crash_rejoin),
        Some(t) => match TESTS.iter().find(|(n, _)| *n == t) {
            Some((_, f)) => f(),
            None => Err(format!("unknown test {t}")),
        },
        None => Err("usage: vmcs-socktest list|TEST|serve|client|vsock-echo-*|hold".into()),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            println!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
