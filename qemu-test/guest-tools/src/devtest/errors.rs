//! Connection set-up and its errors over loopback: refused, address in use, bad ioctls,
//! message size, accept queue, close with unread data, privileged ports.

use std::os::raw::c_void;

use vmcs_guest_tools::dev::Fd;
use vmcs_guest_tools::sys::{
    ioc, IOC_READ, IOC_WRITE, VMCS_IOC_BIND, VMCS_IOC_GET_INFO, VMCS_IOC_MAGIC,
};
use vmcs_guest_tools::{ename, errno, Res};

use crate::{expect_err, listener, ok, pair, CID_LOCAL, MAX_MSG, PORT_ANY};

pub(crate) fn t_refused() -> Res {
    let c = Fd::open()?;
    expect_err(
        "connect to an unbound port",
        c.connect(CID_LOCAL, 7777, 0),
        libc::ECONNREFUSED,
    )?;
    // The endpoint may try again.
    let (l, port) = listener(1)?;
    ok("connect again", c.connect(CID_LOCAL, port, 0))?;
    expect_err(
        "connect when connected",
        c.connect(CID_LOCAL, port, 0),
        libc::EISCONN,
    )?;
    drop(l);
    let c = Fd::open()?;
    expect_err(
        "connect to an absent peer",
        c.connect(63, 1234, 500),
        libc::EHOSTUNREACH,
    )?;
    println!("ECONNREFUSED, retry works, EISCONN, EHOSTUNREACH");
    Ok(())
}

pub(crate) fn t_addrinuse() -> Res {
    let a = Fd::open()?;
    let b = Fd::open()?;
    let port = ok("bind", a.bind(30001))?;
    expect_err(
        "second bind of the same port",
        b.bind(port),
        libc::EADDRINUSE,
    )?;
    expect_err("bind twice", a.bind(30002), libc::EINVAL)?;
    let any = ok("bind VMCS_PORT_ANY", b.bind(PORT_ANY))?;
    if any < 1024 || any == PORT_ANY {
        return Err(format!("auto port {any}"));
    }
    let n = ok("GET_NAMES", b.names())?;
    if n.local.port != any {
        return Err("GET_NAMES disagrees with BIND".into());
    }
    drop(a);
    let c = Fd::open()?;
    ok("bind a port freed by close", c.bind(30001))?;
    println!("EADDRINUSE, EINVAL on rebind, auto port {any}, port free after close");
    Ok(())
}

pub(crate) fn t_badioctl() -> Res {
    let f = Fd::open()?;
    // SAFETY: deliberately bad user pointers; the kernel must fail with EFAULT.
    let r = unsafe { libc::ioctl(f.0, VMCS_IOC_GET_INFO as _, 8usize as *mut c_void) };
    if r >= 0 || errno() != libc::EFAULT {
        return Err(format!("GET_INFO to a bad pointer: {r} {}", ename(errno())));
    }
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(f.0, VMCS_IOC_BIND as _, 8usize as *mut c_void) };
    if r >= 0 || errno() != libc::EFAULT {
        return Err(format!("BIND from a bad pointer: {}", ename(errno())));
    }
    let mut x = [0u8; 64];
    expect_err(
        "unknown command",
        f.ioctl(ioc(IOC_READ, VMCS_IOC_MAGIC, 0x7f, 8), &mut x),
        libc::ENOTTY,
    )?;
    expect_err(
        "wrong size",
        f.ioctl(ioc(IOC_READ | IOC_WRITE, VMCS_IOC_MAGIC, 2, 12), &mut x),
        libc::ENOTTY,
    )?;
    expect_err("bad SET_OPTS", f.opts(1 << 5, 0, 0), libc::EINVAL)?;
    expect_err("rcvbuf too small", f.opts(2, 0, 100), libc::EINVAL)?;
    expect_err("SHUTDOWN how=3", f.shutdown(3), libc::EINVAL)?;
    let mut b = [0u8; 4];
    expect_err("read unconnected", f.read(&mut b), libc::ENOTCONN)?;
    expect_err("write unconnected", f.write(b"x"), libc::ENOTCONN)?;
    expect_err("listen unbound", f.listen(1), libc::EINVAL)?;
    expect_err("accept not listening", f.accept(0), libc::EINVAL)?;
    println!("EFAULT, ENOTTY (unknown cmd, wrong size), EINVAL, ENOTCONN");
    Ok(())
}

pub(crate) fn t_msgsize() -> Res {
    let (c, s) = pair()?;
    let big = vec![1u8; MAX_MSG + 1];
    expect_err("write of 64 KiB + 1", c.write(&big), libc::EMSGSIZE)?;
    ok("write of 64 KiB", c.write(&big[..MAX_MSG]))?;
    let mut b = vec![0u8; MAX_MSG * 2];
    if ok("read", s.read(&mut b))? != MAX_MSG {
        return Err("64 KiB message came back with another size".into());
    }
    if ok("write 0 bytes", c.write(&[]))? != 0 {
        return Err("empty write".into());
    }
    // A message larger than the peer's whole receive buffer can never be sent.
    ok("SET_OPTS rcvbuf 4 KiB", s.opts(2, 0, 4096))?;
    ok("write", s.write(b"credit"))?;
    ok("read", c.read(&mut b))?;
    expect_err(
        "write beyond the peer's buffer",
        c.write(&big[..8192]),
        libc::EMSGSIZE,
    )?;
    println!("EMSGSIZE above 64 KiB and above the peer's receive buffer");
    Ok(())
}

pub(crate) fn t_accept2() -> Res {
    let (l, port) = listener(2)?;
    let c1 = Fd::open()?;
    let c2 = Fd::open()?;
    ok("connect 1", c1.connect(CID_LOCAL, port, 0))?;
    ok("connect 2", c2.connect(CID_LOCAL, port, 0))?;
    // Backlog 2 is full now: a third gets refused.
    let c3 = Fd::open()?;
    expect_err(
        "connect beyond the backlog",
        c3.connect(CID_LOCAL, port, 0),
        libc::ECONNREFUSED,
    )?;
    let (s1, p1) = ok("accept 1", l.accept(libc::O_CLOEXEC as u32))?;
    let (s2, p2) = ok("accept 2", l.accept(libc::O_NONBLOCK as u32))?;
    let n1 = ok("names", c1.names())?;
    let n2 = ok("names", c2.names())?;
    if p1.port != n1.local.port || p2.port != n2.local.port || p1.port == p2.port {
        return Err(format!(
            "accepted peers {p1:?} {p2:?} vs {:?} {:?}",
            n1.local, n2.local
        ));
    }
    let sn = ok("names", s1.names())?;
    if sn.local.port != port || sn.remote.port != p1.port {
        return Err("accepted endpoint names".into());
    }
    // SAFETY: fcntl on our descriptors.
    let (fd1, fl2) = unsafe {
        (
            libc::fcntl(s1.0, libc::F_GETFD),
            libc::fcntl(s2.0, libc::F_GETFL),
        )
    };
    if fd1 & libc::FD_CLOEXEC == 0 || fl2 & libc::O_NONBLOCK == 0 {
        return Err("accept flags not applied".into());
    }
    ok("write 1", c1.write(b"one"))?;
    ok("write 2", c2.write(b"two"))?;
    let mut b = [0u8; 8];
    let n = ok("read 2", s2.read(&mut b))?;
    if &b[..n] != b"two" {
        return Err("message to client 2 misrouted".into());
    }
    let n = ok("read 1", s1.read(&mut b))?;
    if &b[..n] != b"one" {
        return Err("message to client 1 misrouted".into());
    }
    // Closing the listener resets a connection not yet accepted, not accepted ones.
    let c4 = Fd::open()?;
    ok("connect 3", c4.connect(CID_LOCAL, port, 0))?;
    drop(l);
    expect_err(
        "read on a connection reset by listener close",
        c4.read(&mut b),
        libc::ECONNRESET,
    )?;
    ok(
        "accepted connection survives listener close",
        s1.write(b"ok"),
    )?;
    println!(
        "two clients accepted on separate fds with their addresses; backlog refuses the third"
    );
    Ok(())
}

pub(crate) fn t_close_unread() -> Res {
    let (c, s) = pair()?;
    ok("write", c.write(b"never read"))?;
    drop(s);
    expect_err(
        "write to a peer that closed with unread data",
        c.write(b"x"),
        libc::ECONNRESET,
    )?;
    let mut b = [0u8; 8];
    expect_err("read after reset", c.read(&mut b), libc::ECONNRESET)?;
    let ev = c.poll(libc::POLLIN, 0);
    if ev & libc::POLLERR == 0 || ev & libc::POLLHUP == 0 {
        return Err(format!("poll after reset: {ev:#x}, want ERR|HUP"));
    }
    println!("close with unread data resets: ECONNRESET, POLLERR|POLLHUP");
    Ok(())
}

pub(crate) fn t_eacces() -> Res {
    // Drop CAP_NET_BIND_SERVICE from the effective set (capset, version 3).
    #[repr(C)]
    struct Hdr {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Hdr {
        version: 0x20080522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data words.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) != 0 {
            return Err(format!("capget: {}", ename(errno())));
        }
        let f = Fd::open()?;
        ok("bind 80 with the capability", f.bind(80))?;
        drop(f);
        d[0].effective &= !(1 << 10);
        if libc::syscall(libc::SYS_capset, &mut h, d.as_mut_ptr()) != 0 {
            return Err(format!("capset: {}", ename(errno())));
        }
    }
    let f = Fd::open()?;
    expect_err(
        "bind 80 without CAP_NET_BIND_SERVICE",
        f.bind(80),
        libc::EACCES,
    )?;
    ok("bind 1024 without it", f.bind(1024))?;
    println!("ports below 1024 need CAP_NET_BIND_SERVICE");
    Ok(())
}
