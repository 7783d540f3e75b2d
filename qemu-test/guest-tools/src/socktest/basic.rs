//! Loopback basics: the family, bind, stream and seqpacket data, non-blocking calls,
//! refused and reset connections, and `hold` (a pair held open across rmmod).

use std::io::Write;
use std::thread;
use std::time::Duration;

use libc::c_int;
use vmcs_guest_tools::fd::sys;
use vmcs_guest_tools::{errno, strerror, Res};

use crate::sock::{
    addr, check, expect_err, family, listener, pair, Addr, Sock, CID_ANY, CID_LOCAL, PORT_ANY,
};

pub(crate) fn t_family() -> Res {
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

pub(crate) fn t_bind() -> Res {
    let s = Sock::new(libc::SOCK_STREAM)?;
    s.bind(CID_ANY, 4000)?;
    let n = s.name(false)?;
    check("getsockname port 4000", n.svm_port == 4000)?;
    check("getsockname family", n.svm_family as c_int == family()?)?;
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
    bad.svm_family = libc::AF_VSOCK as u16;
    expect_err(
        "bind wrong family (EINVAL, as vsock)",
        t.raw_bind(&bad, 16) as isize,
        libc::EINVAL,
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
    let p = t.name(false)?.svm_port;
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

pub(crate) fn t_stream() -> Res {
    let (c, a) = pair(libc::SOCK_STREAM)?;
    let cn = c.name(false)?;
    let ap = a.name(true)?;
    check(
        "accepted peer = client name",
        ap.svm_port == cn.svm_port && ap.svm_cid == cn.svm_cid,
    )?;
    let cp = c.name(true)?;
    check(
        "client peer = server port",
        cp.svm_port == a.name(false)?.svm_port,
    )?;
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

pub(crate) fn t_seqpacket() -> Res {
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

pub(crate) fn t_nonblock() -> Res {
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
        &format!(
            "nonblocking connect: 0 or EINPROGRESS ({r} {})",
            strerror(e)
        ),
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
    check(
        "accept4 peer address",
        peer.svm_port == c.name(false)?.svm_port,
    )?;
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

/// A connect that nothing accepts fails with `ECONNRESET`, as vsock's (docs/sockets.md).
pub(crate) fn t_refused() -> Res {
    let c = Sock::new(libc::SOCK_STREAM)?;
    expect_err(
        "connect to a closed port",
        c.raw_connect(CID_LOCAL, 4999)? as isize,
        libc::ECONNRESET,
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
            "SO_ERROR ECONNRESET (vsock)",
            c.getopt(libc::SO_ERROR)? == libc::ECONNRESET,
        )?;
    } else {
        check(
            &format!("refused nonblocking connect ({})", strerror(e)),
            r < 0 && e == libc::ECONNRESET,
        )?;
    }
    // Type mismatch: a seqpacket listener refuses a stream connect.
    let (_l, port) = listener(libc::SOCK_SEQPACKET)?;
    let c = Sock::new(libc::SOCK_STREAM)?;
    expect_err(
        "stream connect to a seqpacket listener",
        c.raw_connect(CID_LOCAL, port)? as isize,
        libc::ECONNRESET,
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

pub(crate) fn t_reset() -> Res {
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

pub(crate) fn t_hold() -> Res {
    let (_c, _a) = pair(libc::SOCK_STREAM)?;
    println!("holding");
    let _ = std::io::stdout().flush();
    loop {
        thread::sleep(Duration::from_secs(10));
    }
}
