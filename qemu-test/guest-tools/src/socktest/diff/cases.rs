//! The cases of the differential suite. Each one does what a vsock program does and records
//! what it sees; `Env` hides only the family number and the cids.

use std::mem::size_of;
use std::thread;
use std::time::Duration;

use libc::{c_int, SOCK_SEQPACKET as SEQ, SOCK_STREAM as STREAM};
use vmcs_guest_tools::Res;

use super::{
    pattern, ret, Case, Env, Kind, Obs, Serve, ALL, NO_LISTENER, S, SOL_AF_VSOCK, WRITE_CLOSE,
};

const SO_VM_SOCKETS_BUFFER_SIZE: c_int = 0;
const SO_VM_SOCKETS_BUFFER_MIN_SIZE: c_int = 1;
const SO_VM_SOCKETS_BUFFER_MAX_SIZE: c_int = 2;
const SO_VM_SOCKETS_PEER_HOST_VM_ID: c_int = 3;
const SO_VM_SOCKETS_TRUSTED: c_int = 5;
const SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD: c_int = 6;
const SO_VM_SOCKETS_NONBLOCK_TXRX: c_int = 7;
const SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW: c_int = 8;
const SO_ZEROCOPY: c_int = 60;
const SOL_VSOCK: c_int = 287;
const VSOCK_RECVERR: c_int = 1;
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;

/// A port where nothing listens.
fn closed(env: &Env) -> (u32, u32) {
    match env.kind {
        Kind::VmcsCross { peer, base } => (peer, base + NO_LISTENER),
        _ => (env.local, 4999),
    }
}

/// A connected pair over loopback: (client, accepted).
fn pair(env: &Env, ty: c_int) -> Res<(S, S)> {
    let l = S::new(*env, ty)?;
    l.bind(u32::MAX, u32::MAX)?;
    if l.listen(8) < 0 {
        return Err(format!("listen: {}", ret(-1)));
    }
    let port = l.name(false).1.svm_port;
    let c = S::new(*env, ty)?;
    if c.connect(env.local, port) < 0 {
        return Err(format!("connect: {}", ret(-1)));
    }
    let (fd, _) = l.accept(0);
    if fd < 0 {
        return Err(format!("accept: {}", ret(-1)));
    }
    Ok((c, S::adopt(fd, *env)))
}

/// A client connected to a server of `kind`.
fn client(env: &Env, ty: c_int, kind: Serve, o: &mut Obs) -> Res<S> {
    let (cid, port) = env.server(ty, kind)?;
    let c = S::new(*env, ty)?;
    o.r("connect", c.connect(cid, port));
    Ok(c)
}

/// Reads until end of file (or an error or 5 s of silence); the bytes.
fn read_all(s: &S, o: &mut Obs, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = vec![0u8; 65536];
    loop {
        if s.poll(libc::POLLIN, 5000) == "0" {
            o.put(what, "no end of file in 5 s");
            return out;
        }
        let n = s.recv(&mut b, 0);
        if n <= 0 {
            o.r(&format!("{what} last recv"), n);
            return out;
        }
        out.extend_from_slice(&b[..n as usize]);
    }
}

fn c_socket_types(env: &Env, o: &mut Obs) -> Res {
    for (name, ty, proto) in [
        ("stream", STREAM, 0),
        ("seqpacket", SEQ, 0),
        ("stream protocol 1", STREAM, 1),
        ("raw", libc::SOCK_RAW, 0),
    ] {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(env.family, ty, proto) };
        o.put(
            &format!("socket {name}"),
            if fd >= 0 { "ok".to_string() } else { ret(-1) },
        );
        if fd >= 0 {
            // SAFETY: ours.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

fn c_socket_dgram(env: &Env, o: &mut Obs) -> Res {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(env.family, libc::SOCK_DGRAM, 0) };
    o.put(
        "socket dgram",
        if fd >= 0 { "ok".to_string() } else { ret(-1) },
    );
    if fd >= 0 {
        // SAFETY: ours.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

fn c_bind(env: &Env, o: &mut Obs) -> Res {
    let s = S::new(*env, STREAM)?;
    let (r, a) = s.name(false);
    o.put(
        "getsockname unbound",
        format!("{} {} {}", ret(r), env.cid(a.svm_cid), a.svm_port as i32),
    );
    let (r, _) = s.name(true);
    o.r("getpeername unbound", r);
    o.r("bind short", s.raw_bind(&s.addr(u32::MAX, 7000), 8));
    let mut wrong = s.addr(u32::MAX, 7000);
    wrong.svm_family = libc::AF_UNIX as libc::sa_family_t;
    o.r(
        "bind wrong family",
        s.raw_bind(&wrong, size_of::<libc::sockaddr_vm>()),
    );
    o.r(
        "bind other cid",
        s.raw_bind(&s.addr(77, 7000), size_of::<libc::sockaddr_vm>()),
    );
    o.r(
        "bind any:7000",
        s.raw_bind(&s.addr(u32::MAX, 7000), size_of::<libc::sockaddr_vm>()),
    );
    let (r, a) = s.name(false);
    o.put(
        "getsockname bound",
        format!("{} {} {}", ret(r), env.cid(a.svm_cid), a.svm_port),
    );
    o.r(
        "bind again",
        s.raw_bind(&s.addr(u32::MAX, 7001), size_of::<libc::sockaddr_vm>()),
    );
    let t = S::new(*env, STREAM)?;
    o.r(
        "bind port in use",
        t.raw_bind(&t.addr(u32::MAX, 7000), size_of::<libc::sockaddr_vm>()),
    );
    let q = S::new(*env, SEQ)?;
    o.r(
        "bind same port, other type",
        q.raw_bind(&q.addr(u32::MAX, 7000), size_of::<libc::sockaddr_vm>()),
    );
    let u = S::new(*env, STREAM)?;
    o.r(
        "bind local cid",
        u.raw_bind(&u.addr(env.local, 7002), size_of::<libc::sockaddr_vm>()),
    );
    let v = S::new(*env, STREAM)?;
    o.r(
        "bind port 100 as root",
        v.raw_bind(&v.addr(u32::MAX, 100), size_of::<libc::sockaddr_vm>()),
    );
    Ok(())
}

fn c_listen(env: &Env, o: &mut Obs) -> Res {
    let s = S::new(*env, STREAM)?;
    o.r("listen unbound", s.listen(1) as isize);
    s.bind(u32::MAX, u32::MAX)?;
    o.r("listen", s.listen(-5) as isize);
    o.r("listen again", s.listen(10) as isize);
    o.r("connect on a listener", s.connect(env.local, 4998));
    o.r("shutdown a listener", s.shutdown(libc::SHUT_RDWR));
    o.put("poll listener", s.poll(ALL, 0));
    o.put("SIOCINQ listener", s.ioctl_int(libc::FIONREAD));
    let (c, _) = pair(env, STREAM)?;
    o.r("listen connected", c.listen(1) as isize);
    Ok(())
}

fn c_connect_closed(env: &Env, o: &mut Obs) -> Res {
    let (cid, port) = closed(env);
    let c = S::new(*env, STREAM)?;
    o.r("connect, no listener", c.connect(cid, port));
    o.put("SO_ERROR", c.getint(libc::SOL_SOCKET, libc::SO_ERROR));
    o.r("connect again", c.connect(cid, port));
    o.put("poll", c.poll(ALL, 0));
    let q = S::new(*env, SEQ)?;
    o.r("seqpacket connect, no listener", q.connect(cid, port));
    Ok(())
}

fn c_connect_bound_not_listening(env: &Env, o: &mut Obs) -> Res {
    let b = S::new(*env, STREAM)?;
    b.bind(u32::MAX, u32::MAX)?;
    let port = b.name(false).1.svm_port;
    let c = S::new(*env, STREAM)?;
    o.r("connect to a bound socket", c.connect(env.local, port));
    Ok(())
}

fn c_connect_type_mismatch(env: &Env, o: &mut Obs) -> Res {
    let (cid, port) = env.server(SEQ, Serve::Echo)?;
    let c = S::new(*env, STREAM)?;
    o.r(
        "stream connect to a seqpacket listener",
        c.connect(cid, port),
    );
    Ok(())
}

fn c_connect_errors(env: &Env, o: &mut Obs) -> Res {
    let c = S::new(*env, STREAM)?;
    o.r(
        "connect short address",
        c.raw_connect(&c.addr(env.local, 5), 8),
    );
    let mut wrong = c.addr(env.local, 5);
    wrong.svm_family = libc::AF_UNIX as libc::sa_family_t;
    o.r(
        "connect wrong family",
        c.raw_connect(&wrong, size_of::<libc::sockaddr_vm>()),
    );
    let (a, _b) = pair(env, STREAM)?;
    let port = a.name(true).1.svm_port;
    o.r("connect connected", a.connect(env.local, port));
    Ok(())
}

fn c_connect_nonblock(env: &Env, o: &mut Obs) -> Res {
    let (cid, port) = env.server(STREAM, Serve::Echo)?;
    let c = S::new(*env, STREAM)?;
    c.nonblock(true);
    o.r("nonblocking connect", c.connect(cid, port));
    let r2 = c.connect(cid, port);
    // Still connecting or connected already: both are what vsock gives, by timing.
    let e2 = ret(r2);
    o.put(
        "connect again at once",
        if e2.ends_with("EALREADY") || e2.ends_with("EISCONN") {
            "EALREADY|EISCONN"
        } else {
            e2.as_str()
        },
    );
    o.put("poll", c.settle(libc::POLLOUT));
    o.put("SO_ERROR", c.getint(libc::SOL_SOCKET, libc::SO_ERROR));
    o.r("connect after completion", c.connect(cid, port));
    let (r, a) = c.name(true);
    o.put(
        "getpeername",
        format!("{} {} {}", ret(r), env.cid(a.svm_cid), a.svm_port == port),
    );
    o.r("send", c.send(b"abc", 0));
    let mut b = [0u8; 8];
    o.put("poll echo", c.settle(libc::POLLIN));
    let n = c.recv(&mut b, 0);
    o.bytes("recv echo", n, &b, b"abc");
    Ok(())
}

fn c_connect_nonblock_refused(env: &Env, o: &mut Obs) -> Res {
    let (cid, port) = closed(env);
    let c = S::new(*env, STREAM)?;
    c.nonblock(true);
    let r = c.connect(cid, port);
    o.put("nonblocking connect, no listener", ret(r));
    o.put("poll", c.settle(libc::POLLERR));
    o.put("SO_ERROR", c.getint(libc::SOL_SOCKET, libc::SO_ERROR));
    o.put("SO_ERROR again", c.getint(libc::SOL_SOCKET, libc::SO_ERROR));
    let mut b = [0u8; 4];
    o.r("recv", c.recv(&mut b, 0));
    o.r("send", c.send(b"x", libc::MSG_NOSIGNAL));
    Ok(())
}

fn c_accept(env: &Env, o: &mut Obs) -> Res {
    let l = S::new(*env, STREAM)?;
    let (fd, _) = l.accept(0);
    o.r("accept unbound", fd as isize);
    l.bind(u32::MAX, u32::MAX)?;
    let (fd, _) = l.accept(0);
    o.r("accept not listening", fd as isize);
    o.r("listen", l.listen(4) as isize);
    l.nonblock(true);
    let (fd, _) = l.accept(0);
    o.r("accept O_NONBLOCK, nothing pending", fd as isize);
    l.nonblock(false);
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    o.r(
        "SO_RCVTIMEO 100 ms",
        l.setopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv),
    );
    let (fd, _) = l.accept(0);
    o.r("accept with SO_RCVTIMEO, nothing pending", fd as isize);
    let port = l.name(false).1.svm_port;
    let c = S::new(*env, STREAM)?;
    o.r("connect", c.connect(env.local, port));
    o.put("poll listener", l.settle(libc::POLLIN));
    let (fd, a) = l.accept(libc::SOCK_NONBLOCK);
    o.r("accept4", if fd < 0 { -1 } else { 0 });
    let cport = c.name(false).1.svm_port;
    o.put(
        "accepted peer",
        format!("{} {}", env.cid(a.svm_cid), a.svm_port == cport),
    );
    if fd >= 0 {
        let s = S::adopt(fd, *env);
        // SAFETY: plain fcntl.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        o.put("accepted O_NONBLOCK", fl & libc::O_NONBLOCK != 0);
        let (r, n) = s.name(false);
        o.put(
            "accepted getsockname",
            format!("{} {} {}", ret(r), env.cid(n.svm_cid), n.svm_port == port),
        );
        o.put("accepted poll", s.poll(ALL, 0));
    }
    Ok(())
}

fn c_accept_after_client_close(env: &Env, o: &mut Obs) -> Res {
    let l = S::new(*env, STREAM)?;
    l.bind(u32::MAX, u32::MAX)?;
    l.listen(4);
    let port = l.name(false).1.svm_port;
    let c = S::new(*env, STREAM)?;
    o.r("connect", c.connect(env.local, port));
    o.r("send", c.send(b"bye", 0));
    drop(c);
    thread::sleep(Duration::from_millis(200));
    let (fd, _) = l.accept(0);
    o.r(
        "accept after the client closed",
        if fd < 0 { -1 } else { 0 },
    );
    if fd >= 0 {
        let s = S::adopt(fd, *env);
        o.put("poll", s.settle(libc::POLLIN));
        let got = read_all(&s, o, "read");
        o.put("bytes", got == b"bye");
    }
    Ok(())
}

fn c_fast_close_server(env: &Env, o: &mut Obs) -> Res {
    for ty in [STREAM, SEQ] {
        let c = client(env, ty, Serve::WriteClose, o)?;
        let got = read_all(&c, o, "read");
        o.put("bytes then EOF", got == pattern(WRITE_CLOSE));
        o.put("poll at EOF", c.settle(libc::POLLRDHUP));
        o.r("send after peer close", c.send(b"x", libc::MSG_NOSIGNAL));
    }
    Ok(())
}

fn c_stream_data(env: &Env, o: &mut Obs) -> Res {
    let c = client(env, STREAM, Serve::Echo, o)?;
    let mut b = [0u8; 64];
    o.r(
        "recv MSG_DONTWAIT, empty",
        c.recv(&mut b, libc::MSG_DONTWAIT),
    );
    o.put("poll empty", c.poll(ALL, 0));
    o.r("send 0 bytes", c.send(b"", 0));
    o.r("send", c.send(b"hello world", 0));
    o.put("poll after echo", c.settle(libc::POLLIN));
    o.put("SIOCINQ", c.ioctl_int(libc::FIONREAD));
    o.put("SIOCOUTQ", c.ioctl_int(libc::TIOCOUTQ));
    let n = c.recv(&mut b[..5], libc::MSG_PEEK);
    o.bytes("recv MSG_PEEK 5", n, &b, b"hello");
    let n = c.recv(&mut b[..5], 0);
    o.bytes("recv 5", n, &b, b"hello");
    let (n, fl) = c.recvmsg(&mut b[..3], libc::MSG_TRUNC);
    o.put("recvmsg MSG_TRUNC 3", format!("{} flags {:#x}", ret(n), fl));
    let n = c.recv(&mut b, 0);
    o.bytes("recv rest", n, &b, b"rld");
    o.r(
        "recv 0-byte buffer",
        c.recv(&mut b[..0], libc::MSG_DONTWAIT),
    );
    o.r("send MSG_OOB", c.send(b"x", libc::MSG_OOB));
    o.r(
        "recv MSG_OOB",
        c.recv(&mut b, libc::MSG_OOB | libc::MSG_DONTWAIT),
    );
    let a = c.addr(env.local, 1);
    // SAFETY: valid buffers.
    let r = unsafe {
        libc::sendto(
            c.fd,
            b"x".as_ptr().cast(),
            1,
            0,
            (&a as *const libc::sockaddr_vm).cast(),
            size_of::<libc::sockaddr_vm>() as u32,
        )
    };
    o.r("sendto an address, connected", r);
    Ok(())
}

fn c_sendto_unconnected(env: &Env, o: &mut Obs) -> Res {
    let c = S::new(*env, STREAM)?;
    let a = c.addr(env.local, 1);
    // SAFETY: valid buffers.
    let r = unsafe {
        libc::sendto(
            c.fd,
            b"x".as_ptr().cast(),
            1,
            libc::MSG_NOSIGNAL,
            (&a as *const libc::sockaddr_vm).cast(),
            size_of::<libc::sockaddr_vm>() as u32,
        )
    };
    o.r("sendto an address, unconnected", r);
    o.r("send unconnected", c.send(b"x", libc::MSG_NOSIGNAL));
    o.signals("send unconnected");
    let mut b = [0u8; 4];
    o.r("recv unconnected", c.recv(&mut b, libc::MSG_DONTWAIT));
    o.r("shutdown unconnected", c.shutdown(libc::SHUT_RDWR));
    o.put("poll unconnected", c.poll(ALL, 0));
    Ok(())
}

fn c_waitall(env: &Env, o: &mut Obs) -> Res {
    let (a, b) = pair(env, STREAM)?;
    let fd = a.fd;
    let t = thread::spawn(move || {
        for p in [&b"1234"[..], b"5678"] {
            thread::sleep(Duration::from_millis(100));
            // SAFETY: `fd` stays open until the join below.
            unsafe { libc::send(fd, p.as_ptr().cast(), p.len(), 0) };
        }
    });
    let mut buf = [0u8; 8];
    let n = b.recv(&mut buf, libc::MSG_WAITALL);
    let _ = t.join();
    o.bytes("recv MSG_WAITALL 8 of two sends", n, &buf, b"12345678");
    Ok(())
}

fn c_seqpacket(env: &Env, o: &mut Obs) -> Res {
    let c = client(env, SEQ, Serve::Echo, o)?;
    o.r("send 5", c.send(b"first", 0));
    o.r("send 6", c.send(b"second", 0));
    o.r("send 0", c.send(b"", 0));
    o.put("poll", c.settle(libc::POLLIN));
    let mut b = [0u8; 64];
    let (n, fl) = c.recvmsg(&mut b, libc::MSG_PEEK);
    o.put("recvmsg MSG_PEEK", format!("{} flags {:#x}", ret(n), fl));
    let (n, fl) = c.recvmsg(&mut b[..3], 0);
    o.put("recvmsg 3 of 5", format!("{} flags {:#x}", ret(n), fl));
    let (n, fl) = c.recvmsg(&mut b[..2], libc::MSG_TRUNC);
    o.put(
        "recvmsg 2 of 6, MSG_TRUNC",
        format!("{} flags {:#x}", ret(n), fl),
    );
    thread::sleep(Duration::from_millis(100));
    let (n, fl) = c.recvmsg(&mut b, libc::MSG_DONTWAIT);
    o.put("recvmsg next", format!("{} flags {:#x}", ret(n), fl));
    let big = vec![1u8; 65536 + 1];
    o.r("send 64 KiB + 1", c.send(&big, 0));
    Ok(())
}

fn c_shutdown_wr(env: &Env, o: &mut Obs) -> Res {
    for ty in [STREAM, SEQ] {
        let (a, b) = pair(env, ty)?;
        o.r("shutdown bad how", a.shutdown(7));
        o.r("send before", a.send(b"data", 0));
        o.r("SHUT_WR", a.shutdown(libc::SHUT_WR));
        o.r("SHUT_WR again", a.shutdown(libc::SHUT_WR));
        o.r("send after SHUT_WR", a.send(b"x", 0));
        o.signals("send after SHUT_WR");
        o.r(
            "send after SHUT_WR, MSG_NOSIGNAL",
            a.send(b"x", libc::MSG_NOSIGNAL),
        );
        o.signals("send MSG_NOSIGNAL");
        o.put("poll own side", a.poll(ALL, 0));
        o.put("poll peer", b.settle(libc::POLLRDHUP));
        let got = read_all(&b, o, "peer reads");
        o.put("peer bytes", got == b"data");
        o.r("peer sends back", b.send(b"back", 0));
        o.put("poll own side after", a.settle(libc::POLLIN));
        let mut buf = [0u8; 8];
        let n = a.recv(&mut buf, 0);
        o.bytes("recv after SHUT_WR", n, &buf, b"back");
    }
    Ok(())
}

fn c_shutdown_rd(env: &Env, o: &mut Obs) -> Res {
    for ty in [STREAM, SEQ] {
        let (a, b) = pair(env, ty)?;
        o.r("peer sends", b.send(b"early", 0));
        a.settle(libc::POLLIN);
        o.r("SHUT_RD", a.shutdown(libc::SHUT_RD));
        let mut buf = [0u8; 8];
        o.r("recv after SHUT_RD", a.recv(&mut buf, 0));
        o.put("poll own side", a.poll(ALL, 0));
        o.put("poll peer", b.settle(libc::POLLOUT));
        thread::sleep(Duration::from_millis(100));
        o.r(
            "peer sends after SHUT_RD",
            b.send(b"late", libc::MSG_NOSIGNAL),
        );
        o.r("send own side", a.send(b"ok", 0));
        let n = b.recv(&mut buf, 0);
        o.bytes("peer recv", n, &buf, b"ok");
    }
    Ok(())
}

fn c_shutdown_rdwr(env: &Env, o: &mut Obs) -> Res {
    for ty in [STREAM, SEQ] {
        let (a, b) = pair(env, ty)?;
        o.r("SHUT_RDWR", a.shutdown(libc::SHUT_RDWR));
        o.put("poll own side", a.poll(ALL, 0));
        o.put("poll peer", b.settle(libc::POLLRDHUP));
        let mut buf = [0u8; 8];
        o.r("peer recv", b.recv(&mut buf, 0));
        o.r("peer send", b.send(b"x", libc::MSG_NOSIGNAL));
        o.r("own recv", a.recv(&mut buf, 0));
    }
    Ok(())
}

fn c_sigpipe_peer_closed(env: &Env, o: &mut Obs) -> Res {
    for ty in [STREAM, SEQ] {
        let (a, b) = pair(env, ty)?;
        drop(b);
        o.put("poll", a.settle(libc::POLLRDHUP));
        o.r("send to a closed peer", a.send(b"x", 0));
        o.signals("send to a closed peer");
        let mut buf = [0u8; 8];
        o.r("recv from a closed peer", a.recv(&mut buf, 0));
    }
    Ok(())
}

fn c_close_with_data(env: &Env, o: &mut Obs) -> Res {
    let (a, b) = pair(env, STREAM)?;
    let data = pattern(100_000);
    let fd = a.fd;
    let d = data.clone();
    let t = thread::spawn(move || {
        let mut off = 0;
        while off < d.len() {
            // SAFETY: `fd` stays open until the join.
            let n = unsafe {
                libc::send(
                    fd,
                    d[off..].as_ptr().cast(),
                    d.len() - off,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                break;
            }
            off += n as usize;
        }
        off
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < 10_000 {
        let n = b.recv(&mut buf, 0);
        if n <= 0 {
            break;
        }
        got.extend_from_slice(&buf[..n as usize]);
    }
    let sent = t.join().unwrap_or(0);
    o.put("all sent", sent == data.len());
    drop(a);
    got.extend(read_all(&b, o, "rest"));
    o.put("every byte, then EOF", got == data);
    Ok(())
}

fn c_close_unread(env: &Env, o: &mut Obs) -> Res {
    for ty in [STREAM, SEQ] {
        let (a, b) = pair(env, ty)?;
        o.r("send", a.send(b"never read", 0));
        b.settle(libc::POLLIN);
        drop(b);
        o.put(
            "poll after the peer closed with unread data",
            a.settle(libc::POLLRDHUP),
        );
        let mut buf = [0u8; 8];
        o.r("recv", a.recv(&mut buf, 0));
        o.r("send", a.send(b"x", libc::MSG_NOSIGNAL));
        o.put("SO_ERROR", a.getint(libc::SOL_SOCKET, libc::SO_ERROR));
    }
    Ok(())
}

fn c_linger(env: &Env, o: &mut Obs) -> Res {
    let (a, b) = pair(env, STREAM)?;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 2,
    };
    o.r("SO_LINGER", a.setopt(libc::SOL_SOCKET, libc::SO_LINGER, &l));
    let (r, v) = a.getopt(libc::SOL_SOCKET, libc::SO_LINGER, 8);
    o.put("SO_LINGER read", format!("{} {:?}", ret(r), v));
    o.r("send", a.send(&pattern(5000), 0));
    // SAFETY: closes our descriptor once.
    let r = unsafe { libc::close(a.fd) };
    std::mem::forget(a);
    o.r("close with SO_LINGER", r as isize);
    let got = read_all(&b, o, "peer");
    o.put("peer got all", got == pattern(5000));
    Ok(())
}

fn c_timeouts(env: &Env, o: &mut Obs) -> Res {
    let (a, _b) = pair(env, STREAM)?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    o.r(
        "SO_RCVTIMEO",
        a.setopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv),
    );
    let (r, v) = a.getopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, 16);
    o.put("SO_RCVTIMEO read", format!("{} {:?}", ret(r), v));
    let mut buf = [0u8; 8];
    o.r("recv times out", a.recv(&mut buf, 0));
    let bad = libc::timeval {
        tv_sec: 0,
        tv_usec: 2_000_000,
    };
    o.r(
        "SO_SNDTIMEO bad usec",
        a.setopt(libc::SOL_SOCKET, libc::SO_SNDTIMEO, &bad),
    );
    o.r(
        "SO_SNDTIMEO",
        a.setopt(libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv),
    );
    Ok(())
}

fn c_rcvlowat(env: &Env, o: &mut Obs) -> Res {
    let (a, b) = pair(env, STREAM)?;
    let v: c_int = 5;
    o.r(
        "SO_RCVLOWAT 5",
        b.setopt(libc::SOL_SOCKET, libc::SO_RCVLOWAT, &v),
    );
    o.put(
        "SO_RCVLOWAT read",
        b.getint(libc::SOL_SOCKET, libc::SO_RCVLOWAT),
    );
    o.r("send 3", a.send(b"abc", 0));
    thread::sleep(Duration::from_millis(200));
    o.put("poll with 3 of 5", b.poll(ALL, 0));
    o.r("send 3 more", a.send(b"def", 0));
    o.put("poll with 6 of 5", b.settle(libc::POLLIN));
    let mut buf = [0u8; 16];
    let n = b.recv(&mut buf, 0);
    o.bytes("recv", n, &buf, b"abcdef");
    let huge: c_int = 1 << 30;
    o.r(
        "SO_RCVLOWAT above the buffer",
        b.setopt(libc::SOL_SOCKET, libc::SO_RCVLOWAT, &huge),
    );
    Ok(())
}

fn c_small_credit(env: &Env, o: &mut Obs) -> Res {
    let l = S::new(*env, STREAM)?;
    let size: u64 = 1000;
    o.r(
        "listener SO_VM_SOCKETS_BUFFER_SIZE 1000",
        l.setopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &size),
    );
    l.bind(u32::MAX, u32::MAX)?;
    l.listen(4);
    let port = l.name(false).1.svm_port;
    let c = S::new(*env, STREAM)?;
    o.r("connect", c.connect(env.local, port));
    let (fd, _) = l.accept(0);
    let s = S::adopt(fd, *env);
    let (r, v) = s.getopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, 8);
    o.put("accepted BUFFER_SIZE", format!("{} {:?}", ret(r), v));
    let data = pattern(5000);
    o.r("send 5000 MSG_DONTWAIT", c.send(&data, libc::MSG_DONTWAIT));
    o.r("send again MSG_DONTWAIT", c.send(&data, libc::MSG_DONTWAIT));
    o.put("poll sender", c.poll(ALL, 0));
    s.settle(libc::POLLIN);
    let mut buf = vec![0u8; 8192];
    let n = s.recv(&mut buf, 0);
    o.bytes("receiver reads", n, &buf, &data);
    o.put("poll sender after the read", c.settle(libc::POLLOUT));
    let q = S::new(*env, SEQ)?;
    let small: u64 = 500;
    let lq = S::new(*env, SEQ)?;
    lq.setopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &small);
    lq.bind(u32::MAX, u32::MAX)?;
    lq.listen(4);
    o.r(
        "seqpacket connect",
        q.connect(env.local, lq.name(false).1.svm_port),
    );
    let (_fd, _) = lq.accept(0);
    let _acc = S::adopt(_fd, *env);
    o.r(
        "seqpacket message above the peer's buffer",
        q.send(&data[..600], 0),
    );
    o.r("seqpacket message within it", q.send(&data[..400], 0));
    Ok(())
}

fn c_vsock_options(env: &Env, o: &mut Obs) -> Res {
    let s = S::new(*env, STREAM)?;
    for (name, opt) in [
        ("BUFFER_SIZE", SO_VM_SOCKETS_BUFFER_SIZE),
        ("BUFFER_MIN_SIZE", SO_VM_SOCKETS_BUFFER_MIN_SIZE),
        ("BUFFER_MAX_SIZE", SO_VM_SOCKETS_BUFFER_MAX_SIZE),
        ("CONNECT_TIMEOUT_OLD", SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD),
        ("CONNECT_TIMEOUT_NEW", SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW),
        ("PEER_HOST_VM_ID", SO_VM_SOCKETS_PEER_HOST_VM_ID),
        ("TRUSTED", SO_VM_SOCKETS_TRUSTED),
        ("NONBLOCK_TXRX", SO_VM_SOCKETS_NONBLOCK_TXRX),
    ] {
        let (r, v) = s.getopt(SOL_AF_VSOCK, opt, 16);
        o.put(&format!("get {name}"), format!("{} {:?}", ret(r), v));
    }
    let (r, _) = s.getopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, 4);
    o.r("get BUFFER_SIZE into 4 bytes", r);
    let (r, _) = s.getopt(SOL_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, 8);
    o.r("get at level SOL_VSOCK", r);
    let (r, _) = s.getopt(6, 1, 4);
    o.r("get at level 6", r);
    let v: u64 = 1 << 20;
    o.r(
        "set BUFFER_SIZE 1 MiB",
        s.setopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &v),
    );
    let (_, g) = s.getopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, 8);
    o.put("BUFFER_SIZE (clamped to the max)", format!("{g:?}"));
    o.r(
        "set BUFFER_MAX_SIZE 2 MiB",
        s.setopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_MAX_SIZE, &(2u64 << 20)),
    );
    o.r(
        "set BUFFER_SIZE 1 MiB again",
        s.setopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &v),
    );
    let (_, g) = s.getopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, 8);
    o.put("BUFFER_SIZE", format!("{g:?}"));
    o.r(
        "set BUFFER_MIN_SIZE 1.5 MiB",
        s.setopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_MIN_SIZE, &(3u64 << 19)),
    );
    let (_, g) = s.getopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, 8);
    o.put("BUFFER_SIZE (raised to the min)", format!("{g:?}"));
    o.r(
        "set BUFFER_SIZE with 4 bytes",
        s.setopt_len(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &v, 4),
    );
    o.r("set BUFFER_SIZE bad pointer", unsafe {
        // SAFETY: the kernel must refuse the pointer; nothing is written here.
        libc::setsockopt(
            s.fd,
            SOL_AF_VSOCK,
            SO_VM_SOCKETS_BUFFER_SIZE,
            8 as *const libc::c_void,
            8,
        ) as isize
    });
    o.r(
        "set PEER_HOST_VM_ID",
        s.setopt(SOL_AF_VSOCK, SO_VM_SOCKETS_PEER_HOST_VM_ID, &v),
    );
    o.r("set unknown level", s.setopt(6, 1, &1i32));
    for (name, opt) in [
        ("OLD", SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD),
        ("NEW", SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW),
    ] {
        let tv: [i64; 2] = [1, 500_001];
        o.r(
            &format!("set CONNECT_TIMEOUT_{name} 1.500001 s"),
            s.setopt(SOL_AF_VSOCK, opt, &tv),
        );
        let (r, g) = s.getopt(SOL_AF_VSOCK, opt, 16);
        o.put(
            &format!("get CONNECT_TIMEOUT_{name}"),
            format!("{} {g:?}", ret(r)),
        );
        o.r(
            &format!("set CONNECT_TIMEOUT_{name} -1 s"),
            s.setopt(SOL_AF_VSOCK, opt, &[-1i64, 0]),
        );
        o.r(
            &format!("set CONNECT_TIMEOUT_{name} usec 1e6"),
            s.setopt(SOL_AF_VSOCK, opt, &[0i64, 1_000_000]),
        );
        o.r(
            &format!("set CONNECT_TIMEOUT_{name} 8 bytes"),
            s.setopt_len(SOL_AF_VSOCK, opt, &tv, 8),
        );
        o.r(
            &format!("set CONNECT_TIMEOUT_{name} 0"),
            s.setopt(SOL_AF_VSOCK, opt, &[0i64, 0]),
        );
        let (r, g) = s.getopt(SOL_AF_VSOCK, opt, 16);
        o.put(
            &format!("get CONNECT_TIMEOUT_{name} after 0"),
            format!("{} {g:?}", ret(r)),
        );
    }
    // Inherited by accepted connections.
    let l = S::new(*env, STREAM)?;
    l.setopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_MIN_SIZE, &4096u64);
    l.setopt(SOL_AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &65536u64);
    l.setopt(SOL_AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &[3i64, 0]);
    l.bind(u32::MAX, u32::MAX)?;
    l.listen(4);
    let c = S::new(*env, STREAM)?;
    c.connect(env.local, l.name(false).1.svm_port);
    let (fd, _) = l.accept(0);
    let a = S::adopt(fd, *env);
    for (name, opt) in [
        ("BUFFER_SIZE", SO_VM_SOCKETS_BUFFER_SIZE),
        ("BUFFER_MIN_SIZE", SO_VM_SOCKETS_BUFFER_MIN_SIZE),
        ("CONNECT_TIMEOUT_NEW", SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW),
    ] {
        let (r, v) = a.getopt(SOL_AF_VSOCK, opt, 16);
        o.put(&format!("accepted {name}"), format!("{} {:?}", ret(r), v));
    }
    Ok(())
}

fn c_bad_buffers(env: &Env, o: &mut Obs) -> Res {
    let bad = 8 as *mut libc::c_void;
    let (a, b) = pair(env, STREAM)?;
    o.r("stream send 5", a.send(b"12345", 0));
    b.settle(libc::POLLIN);
    // SAFETY: the kernel must refuse the bad pointer.
    o.r("stream recv into a bad buffer", unsafe {
        libc::recv(b.fd, bad, 5, 0)
    });
    let mut buf = [0u8; 8];
    let n = b.recv(&mut buf, libc::MSG_DONTWAIT);
    o.bytes("stream recv after it (data kept)", n, &buf, b"12345");
    // SAFETY: as above.
    o.r("stream send from a bad buffer", unsafe {
        libc::send(a.fd, bad, 5, 0)
    });
    let (a, b) = pair(env, SEQ)?;
    o.r("seqpacket send 5", a.send(b"12345", 0));
    o.r("seqpacket send 3", a.send(b"678", 0));
    b.settle(libc::POLLIN);
    // SAFETY: as above.
    o.r("seqpacket recv into a bad buffer", unsafe {
        libc::recv(b.fd, bad, 5, 0)
    });
    thread::sleep(Duration::from_millis(100));
    let n = b.recv(&mut buf, libc::MSG_DONTWAIT);
    o.bytes("seqpacket recv after it", n, &buf, b"678");
    // SAFETY: as above.
    o.r("seqpacket send from a bad buffer", unsafe {
        libc::send(a.fd, bad, 5, 0)
    });
    Ok(())
}

/// Reads every MSG_ZEROCOPY completion queued: (entries, lowest id, highest id, code,
/// errno, origin, cmsg level and type), waiting up to 5 s for the first.
fn zerocopy_completions(s: &S, o: &mut Obs, want_hi: u32) {
    let mut got: Vec<(u32, u32, u8, u32, u8, i32, i32)> = Vec::new();
    let mut hi_seen = None;
    for _ in 0..50 {
        let mut ctrl = [0u8; 256];
        // SAFETY: zeroed msghdr is valid.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_control = ctrl.as_mut_ptr().cast();
        m.msg_controllen = ctrl.len() as _;
        // SAFETY: `m` points at valid buffers.
        let n = unsafe { libc::recvmsg(s.fd, &mut m, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if n < 0 {
            if hi_seen.is_some_and(|h| h >= want_hi) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        // SAFETY: the kernel filled `ctrl` with `m.msg_controllen` bytes of cmsgs.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&m);
            if c.is_null() {
                o.put("errqueue entry", "no cmsg");
                continue;
            }
            let e = &*(libc::CMSG_DATA(c) as *const libc::sock_extended_err);
            got.push((
                e.ee_info,
                e.ee_data,
                e.ee_code,
                e.ee_errno,
                e.ee_origin,
                (*c).cmsg_level,
                (*c).cmsg_type,
            ));
            hi_seen = Some(e.ee_data);
        }
    }
    let lo = got.iter().map(|g| g.0).min();
    let hi = got.iter().map(|g| g.1).max();
    o.put("completion ids", format!("{lo:?}..{hi:?}"));
    let mut kinds: Vec<String> = got
        .iter()
        .map(|g| {
            format!(
                "errno {} origin {} code {} cmsg {}/{}",
                g.3,
                if g.4 == SO_EE_ORIGIN_ZEROCOPY {
                    "ZEROCOPY".into()
                } else {
                    format!("{}", g.4)
                },
                g.2,
                if g.5 == SOL_VSOCK {
                    "SOL_VSOCK".into()
                } else {
                    format!("{}", g.5)
                },
                if g.6 == VSOCK_RECVERR {
                    "VSOCK_RECVERR".into()
                } else {
                    format!("{}", g.6)
                }
            )
        })
        .collect();
    kinds.dedup();
    o.put("completions", kinds.join("; "));
}

fn c_zerocopy_options(env: &Env, o: &mut Obs) -> Res {
    let s = S::new(*env, STREAM)?;
    o.put(
        "SO_ZEROCOPY default",
        s.getint(libc::SOL_SOCKET, SO_ZEROCOPY),
    );
    o.r(
        "SO_ZEROCOPY 2",
        s.setopt(libc::SOL_SOCKET, SO_ZEROCOPY, &2i32),
    );
    o.r(
        "SO_ZEROCOPY 2 bytes",
        s.setopt_len(libc::SOL_SOCKET, SO_ZEROCOPY, &1i32, 2),
    );
    o.r(
        "SO_ZEROCOPY 1",
        s.setopt(libc::SOL_SOCKET, SO_ZEROCOPY, &1i32),
    );
    o.put("SO_ZEROCOPY read", s.getint(libc::SOL_SOCKET, SO_ZEROCOPY));
    let mut b = [0u8; 8];
    let (n, _) = s.recvmsg(&mut b, libc::MSG_ERRQUEUE);
    o.r("MSG_ERRQUEUE, empty, unconnected", n);
    o.r(
        "SO_ZEROCOPY 0",
        s.setopt(libc::SOL_SOCKET, SO_ZEROCOPY, &0i32),
    );
    Ok(())
}

fn c_zerocopy(env: &Env, o: &mut Obs) -> Res {
    for ty in [STREAM, SEQ] {
        let (a, b) = pair(env, ty)?;
        let data = pattern(4000);
        o.r(
            "MSG_ZEROCOPY without SO_ZEROCOPY",
            a.send(&data, libc::MSG_ZEROCOPY),
        );
        o.r(
            "SO_ZEROCOPY 1",
            a.setopt(libc::SOL_SOCKET, SO_ZEROCOPY, &1i32),
        );
        for i in 0..3 {
            o.r(
                &format!("MSG_ZEROCOPY send {i}"),
                a.send(&data, libc::MSG_ZEROCOPY),
            );
        }
        o.r(
            "MSG_ZEROCOPY send 0 bytes",
            a.send(&data[..0], libc::MSG_ZEROCOPY),
        );
        o.r("plain send", a.send(&data[..10], 0));
        // The receiver reads everything (vsock completes when its buffers are freed).
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < 4 * 4000 + 10 {
            if b.poll(libc::POLLIN, 5000) == "0" {
                break;
            }
            let n = b.recv(&mut buf, 0);
            if n <= 0 {
                break;
            }
            got.extend_from_slice(&buf[..n as usize]);
        }
        o.put("receiver bytes", got.len());
        o.put("sender poll", a.settle(libc::POLLERR));
        zerocopy_completions(&a, o, 2);
        o.put("sender poll after", a.poll(ALL, 0));
        let (n, _) = a.recvmsg(&mut buf[..8], libc::MSG_ERRQUEUE);
        o.r("MSG_ERRQUEUE empty", n);
    }
    Ok(())
}

fn c_getname_connected(env: &Env, o: &mut Obs) -> Res {
    let c = client(env, STREAM, Serve::Echo, o)?;
    let (r, a) = c.name(false);
    o.put("getsockname", format!("{} {}", ret(r), env.cid(a.svm_cid)));
    let (r, p) = c.name(true);
    o.put("getpeername", format!("{} {}", ret(r), env.cid(p.svm_cid)));
    Ok(())
}

fn c_shut_wr_server(env: &Env, o: &mut Obs) -> Res {
    let c = client(env, STREAM, Serve::ShutWr, o)?;
    o.put("poll", c.settle(libc::POLLRDHUP));
    let mut b = [0u8; 8];
    o.r("recv: end of file", c.recv(&mut b, 0));
    o.r("send still works", c.send(b"ping", 0));
    o.r("SHUT_WR", c.shutdown(libc::SHUT_WR));
    o.put("poll after both shut", c.settle(libc::POLLHUP));
    Ok(())
}

fn c_silent_server_credit(env: &Env, o: &mut Obs) -> Res {
    let c = client(env, STREAM, Serve::Silent, o)?;
    let data = pattern(65536);
    let mut total = 0usize;
    // Up to 32 MiB: past either family's default buffer (vsock 256 KiB, vmcs 4 MiB plus
    // SO_SNDBUF), so both end at EAGAIN.
    for _ in 0..512 {
        let n = c.send(&data, libc::MSG_DONTWAIT);
        if n <= 0 {
            o.r("send when the peer's buffer is full", n);
            break;
        }
        total += n as usize;
    }
    o.put("bytes queued before EAGAIN (the peer's buffer)", total);
    o.put("poll", c.poll(ALL, 0));
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    c.setopt(libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv);
    o.r("blocking send with SO_SNDTIMEO, no room", c.send(&data, 0));
    Ok(())
}

fn c_poll_pair(env: &Env, o: &mut Obs) -> Res {
    let (a, _b) = pair(env, STREAM)?;
    o.put("poll connected", a.poll(ALL, 0));
    o.put("poll unbound", S::new(*env, STREAM)?.poll(ALL, 0));
    Ok(())
}

/// Every case, in order.
pub(crate) const CASES: &[Case] = &[
    Case {
        name: "socket-types",
        cross: false,
        run: c_socket_types,
    },
    Case {
        name: "socket-dgram",
        cross: false,
        run: c_socket_dgram,
    },
    Case {
        name: "bind",
        cross: false,
        run: c_bind,
    },
    Case {
        name: "listen",
        cross: false,
        run: c_listen,
    },
    Case {
        name: "connect-no-listener",
        cross: true,
        run: c_connect_closed,
    },
    Case {
        name: "connect-bound-not-listening",
        cross: false,
        run: c_connect_bound_not_listening,
    },
    Case {
        name: "connect-type-mismatch",
        cross: true,
        run: c_connect_type_mismatch,
    },
    Case {
        name: "connect-errors",
        cross: false,
        run: c_connect_errors,
    },
    Case {
        name: "connect-nonblocking",
        cross: true,
        run: c_connect_nonblock,
    },
    Case {
        name: "connect-nonblocking-refused",
        cross: true,
        run: c_connect_nonblock_refused,
    },
    Case {
        name: "accept",
        cross: false,
        run: c_accept,
    },
    Case {
        name: "accept-after-client-close",
        cross: false,
        run: c_accept_after_client_close,
    },
    Case {
        name: "server-writes-and-closes-at-once",
        cross: true,
        run: c_fast_close_server,
    },
    Case {
        name: "stream-data-and-flags",
        cross: true,
        run: c_stream_data,
    },
    Case {
        name: "unconnected-calls",
        cross: false,
        run: c_sendto_unconnected,
    },
    Case {
        name: "msg-waitall",
        cross: false,
        run: c_waitall,
    },
    Case {
        name: "seqpacket-messages",
        cross: true,
        run: c_seqpacket,
    },
    Case {
        name: "shutdown-wr",
        cross: false,
        run: c_shutdown_wr,
    },
    Case {
        name: "shutdown-rd",
        cross: false,
        run: c_shutdown_rd,
    },
    Case {
        name: "shutdown-rdwr",
        cross: false,
        run: c_shutdown_rdwr,
    },
    Case {
        name: "server-shuts-wr",
        cross: true,
        run: c_shut_wr_server,
    },
    Case {
        name: "sigpipe-peer-closed",
        cross: false,
        run: c_sigpipe_peer_closed,
    },
    Case {
        name: "close-with-queued-data",
        cross: false,
        run: c_close_with_data,
    },
    Case {
        name: "close-with-unread-data",
        cross: false,
        run: c_close_unread,
    },
    Case {
        name: "so-linger",
        cross: false,
        run: c_linger,
    },
    Case {
        name: "timeouts",
        cross: false,
        run: c_timeouts,
    },
    Case {
        name: "so-rcvlowat",
        cross: false,
        run: c_rcvlowat,
    },
    Case {
        name: "credit-small-buffers",
        cross: false,
        run: c_small_credit,
    },
    Case {
        name: "credit-peer-not-reading",
        cross: true,
        run: c_silent_server_credit,
    },
    Case {
        name: "sol-vsock-options",
        cross: false,
        run: c_vsock_options,
    },
    Case {
        name: "bad-buffers",
        cross: false,
        run: c_bad_buffers,
    },
    Case {
        name: "so-zerocopy-option",
        cross: false,
        run: c_zerocopy_options,
    },
    Case {
        name: "msg-zerocopy-error-queue",
        cross: false,
        run: c_zerocopy,
    },
    Case {
        name: "getname-connected",
        cross: true,
        run: c_getname_connected,
    },
    Case {
        name: "poll-connected",
        cross: false,
        run: c_poll_pair,
    },
];
