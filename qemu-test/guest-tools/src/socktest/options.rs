//! Socket options over loopback: SO_* basics, SO_RCVBUF/SO_SNDBUF, SO_RCVLOWAT,
//! SO_RCVTIMEO/SO_SNDTIMEO.

use std::thread;
use std::time::{Duration, Instant};

use libc::c_int;
use vmcs_guest_tools::{errno, strerror, Res};

use crate::sock::{check, expect_err, listener, pair, Sock, CID_ANY, CID_LOCAL, PORT_ANY};

pub(crate) fn t_sockopt() -> Res {
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

pub(crate) fn setint(s: &Sock, opt: c_int, v: c_int) -> Res {
    s.setopt(opt, &v)
}

pub(crate) fn set_timeo(s: &Sock, opt: c_int, ms: i64) -> Res {
    let tv = libc::timeval {
        tv_sec: ms / 1000,
        tv_usec: (ms % 1000) * 1000,
    };
    s.setopt(opt, &tv)
}

/// Reads exactly `n` bytes (blocking) and checks they are `fill`.
pub(crate) fn drain(s: &Sock, n: usize) -> Res {
    let mut b = vec![0u8; n];
    let got = s.recv(&mut b, libc::MSG_WAITALL);
    if got as usize != n {
        return Err(format!("drain {n}: got {got} {}", strerror(errno())));
    }
    Ok(())
}

/// SO_RCVBUF / SO_SNDBUF: getsockopt reports twice the size in use (as Linux does for
/// every family), clamped to 4 KiB..4 MiB (default 4 MiB; SO_SNDBUF 256 KiB); SO_RCVBUF is the credit the peer gets, at
/// once on a connection, before connect, and inherited from a listener. Non-blocking
/// stream sends queue what fits (partial count), seqpacket ones all or nothing.
pub(crate) fn t_bufs() -> Res {
    let s = Sock::new(libc::SOCK_STREAM)?;
    let (r, w) = (s.getopt(libc::SO_RCVBUF)?, s.getopt(libc::SO_SNDBUF)?);
    check(
        &format!("defaults: SO_RCVBUF {r} (2 x 4 MiB), SO_SNDBUF {w} (2 x 256 KiB)"),
        r == 8 << 20 && w == 512 << 10,
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
    let port = l.name(false)?.svm_port;
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
pub(crate) fn t_lowat() -> Res {
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
    // A mark above the buffer is refused, as vsock (docs/sockets.md).
    let (_c, a) = pair(libc::SOCK_STREAM)?;
    setint(&a, libc::SO_RCVBUF, 4096)?;
    let big: libc::c_int = 1 << 20;
    // SAFETY: `big` is a valid int for the call.
    let r = unsafe {
        libc::setsockopt(
            a.0,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&big as *const libc::c_int).cast(),
            4,
        )
    };
    expect_err(
        "SO_RCVLOWAT above the 4 KiB buffer",
        r as isize,
        libc::EINVAL,
    )?;
    setint(&a, libc::SO_RCVLOWAT, 4096)?;
    check(
        "SO_RCVLOWAT of the whole buffer is taken",
        a.getopt(libc::SO_RCVLOWAT)? == 4096,
    )?;
    Ok(())
}

/// SO_RCVTIMEO (recv, accept) and SO_SNDTIMEO (send): EAGAIN when they run out, or the
/// bytes moved so far.
pub(crate) fn t_timeo() -> Res {
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
