//! Between guests: the echo server and the message tests against it (`serve`, `client`),
//! and the receive-side checks of `xrecv`/`xsend` (poll, blocking-read wake, epoll, order).

use std::thread;
use std::time::{Duration, Instant};

use vmcs_guest_tools::dev::Fd;
use vmcs_guest_tools::fd::Epoll;
use vmcs_guest_tools::{ename, Res};

use crate::{ok, pattern, MAX_MSG};

/// A listener on `port` (backlog 16) for the cross-guest servers.
pub(crate) fn listen_on(port: u32) -> Res<Fd> {
    let l = Fd::open()?;
    ok("bind", l.bind(port))?;
    ok("listen", l.listen(16))?;
    println!("listening on port {port}");
    Ok(l)
}

/// Echo server for cross-guest runs.
pub(crate) fn serve(port: u32, n: u32) -> Res {
    let l = listen_on(port)?;
    let mut threads = Vec::new();
    for _ in 0..n {
        let (s, peer) = ok("accept", l.accept(0))?;
        eprintln!("accepted {peer:?}");
        threads.push(thread::spawn(move || {
            let mut b = vec![0u8; MAX_MSG];
            while let Ok(n) = s.read(&mut b) {
                if n == 0 || s.write(&b[..n]).is_err() {
                    break;
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Candidate server cids: the given one, or every live peer but us (`auto`).
pub(crate) fn candidates(cid: Option<u32>) -> Res<Vec<u32>> {
    if let Some(c) = cid {
        return Ok(vec![c]);
    }
    let f = Fd::open()?;
    ok("GET_INFO", f.live_peers())
}

/// Connects to the echo server, retrying for up to a minute.
pub(crate) fn connect_server(cid: Option<u32>, port: u32) -> Res<(Fd, u32)> {
    let t0 = Instant::now();
    loop {
        for cid in candidates(cid)? {
            let c = Fd::open()?;
            match c.connect(cid, port, 2000) {
                Ok(()) => return Ok((c, cid)),
                Err(e) => eprintln!("connect {cid}:{port}: {}", ename(e)),
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("no echo server on port {port}"));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Message tests against an echo server.
pub(crate) fn client(cid: Option<u32>, port: u32) -> Res {
    let t0 = Instant::now();
    let (c, cid) = connect_server(cid, port)?;
    let mut buf = vec![0u8; MAX_MSG];
    let mut count = 0;
    for n in [
        1usize, 2, 3, 31, 32, 33, 100, 224, 225, 480, 1000, 4064, 4065, 8192, 32768, 65536,
    ] {
        let msg = pattern(n as u32, n);
        ok("write", c.write(&msg))?;
        let r = ok("read", c.read(&mut buf))?;
        if buf[..r] != msg[..] {
            return Err(format!("echo of {n} bytes: got {r} bytes, mismatch"));
        }
        count += 1;
    }
    for i in 0..2000u32 {
        let msg = pattern(i, 4 + (i as usize % 200));
        ok("write", c.write(&msg))?;
        let r = ok("read", c.read(&mut buf))?;
        if buf[..r] != msg[..] {
            return Err(format!("echo {i}: mismatch"));
        }
        count += 1;
    }
    // Bad user buffers lose nothing, over the rings (the server echoes every message).
    crate::badbuf::badbuf(&c, &c)?;
    ok("shutdown", c.shutdown(1))?;
    if ok("read EOF", c.read(&mut buf))? != 0 {
        return Err("no EOF after the server saw our shutdown".into());
    }
    println!(
        "{count} messages echoed by {cid}:{port} in {:?}",
        t0.elapsed()
    );
    Ok(())
}

/// Reads `want` from `s`, or fails with `what`.
pub(crate) fn expect_msg(s: &Fd, want: &[u8], what: &str) -> Res {
    let mut b = [0u8; 64];
    let n = ok(what, s.read(&mut b))?;
    if &b[..n] != want {
        return Err(format!(
            "{what}: got {:?}, want {:?}",
            String::from_utf8_lossy(&b[..n]),
            String::from_utf8_lossy(want)
        ));
    }
    Ok(())
}

/// Messages of the cross-guest order test: sequence number, then a pattern.
pub(crate) fn seq_msg(i: u32) -> Vec<u8> {
    let len = 4 + (i as usize % 61);
    let mut m = i.to_le_bytes().to_vec();
    m.extend(pattern(i, len - 4));
    m
}

/// Number of messages of the cross-guest order test.
const XORDER_N: u32 = 10_000;

/// Receiving side of the cross-guest tests, on one accepted connection: poll readiness,
/// a blocking read woken by the peer's write, epoll, then `XORDER_N` messages checked for
/// loss and order, then EOF.
pub(crate) fn cross_recv(s: Fd) -> Res<String> {
    let ev = s.poll(libc::POLLIN | libc::POLLOUT, 0);
    if ev & libc::POLLIN != 0 || ev & libc::POLLOUT == 0 {
        return Err(format!("idle connection: revents {ev:#x}, want OUT only"));
    }
    ok("write ready", s.write(b"ready"))?;
    // poll() sleeping until the other guest writes (500 ms after "ready").
    let t = Instant::now();
    let ev = s.poll(libc::POLLIN, 20_000);
    let poll_dt = t.elapsed();
    if ev & libc::POLLIN == 0 || poll_dt < Duration::from_millis(100) {
        return Err(format!(
            "poll: revents {ev:#x} after {poll_dt:?}, want IN after ~500 ms"
        ));
    }
    expect_msg(&s, b"poll", "read after poll")?;
    ok("write ack", s.write(b"ack"))?;
    // A read that blocks until the other guest writes.
    let t = Instant::now();
    expect_msg(&s, b"wake", "blocking read")?;
    let wake_dt = t.elapsed();
    if wake_dt < Duration::from_millis(100) {
        return Err(format!(
            "blocking read returned after {wake_dt:?}: did not block"
        ));
    }
    ok("write ack", s.write(b"ack"))?;
    // epoll.
    let (n, events, data) = Epoll::once(s.0, libc::EPOLLIN as u32, 20_000)?;
    if n != 1 || events & libc::EPOLLIN as u32 == 0 || data != 7 {
        return Err(format!("epoll: n {n} events {events:#x}"));
    }
    expect_msg(&s, b"epoll", "read after epoll")?;
    ok("write ack", s.write(b"ack"))?;
    // Sequence-numbered messages: none lost, none reordered.
    let t = Instant::now();
    let mut buf = vec![0u8; 256];
    for i in 0..XORDER_N {
        let want = seq_msg(i);
        let got = ok("read", s.read(&mut buf))?;
        if buf[..got] != want[..] {
            let seq = buf
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            return Err(format!(
                "message {i}: {got} bytes, sequence {seq:?}: lost or reordered"
            ));
        }
    }
    let order_dt = t.elapsed();
    if ok("read EOF", s.read(&mut buf))? != 0 {
        return Err("no EOF after the sender's SHUT_WR".into());
    }
    Ok(format!(
        "poll woken after {poll_dt:?}, blocking read woken after {wake_dt:?}, epoll IN, \
         {XORDER_N} messages in order in {order_dt:?}, EOF"
    ))
}

/// `xrecv PORT N`: accept N connections and run [`cross_recv`] on each.
pub(crate) fn xrecv(port: u32, n: u32) -> Res {
    let l = listen_on(port)?;
    let mut threads = Vec::new();
    for _ in 0..n {
        let (s, peer) = ok("accept", l.accept(0))?;
        threads.push(thread::spawn(move || (peer, cross_recv(s))));
    }
    let mut fail = None;
    for t in threads {
        let (peer, r) = t.join().map_err(|_| "receiver panicked".to_string())?;
        match r {
            Ok(m) => println!("from {}:{}: {m}", peer.cid, peer.port),
            Err(e) => {
                println!("from {}:{}: FAIL: {e}", peer.cid, peer.port);
                fail = Some(e);
            }
        }
    }
    fail.map_or(Ok(()), Err)
}

/// `xsend CID|auto PORT`: the sending side of [`cross_recv`].
pub(crate) fn xsend(cid: Option<u32>, port: u32) -> Res {
    let (c, cid) = connect_server(cid, port)?;
    expect_msg(&c, b"ready", "read ready")?;
    thread::sleep(Duration::from_millis(500));
    ok("write poll", c.write(b"poll"))?;
    expect_msg(&c, b"ack", "read ack")?;
    thread::sleep(Duration::from_millis(500));
    ok("write wake", c.write(b"wake"))?;
    expect_msg(&c, b"ack", "read ack")?;
    thread::sleep(Duration::from_millis(300));
    ok("write epoll", c.write(b"epoll"))?;
    expect_msg(&c, b"ack", "read ack")?;
    let t = Instant::now();
    for i in 0..XORDER_N {
        ok("write", c.write(&seq_msg(i)))?;
    }
    ok("shutdown", c.shutdown(1))?;
    let mut b = [0u8; 16];
    if ok("read EOF", c.read(&mut b))? != 0 {
        return Err("no EOF after the receiver closed".into());
    }
    println!(
        "to {cid}:{port}: poll, wake, epoll steps, {XORDER_N} sequence-numbered messages in {:?}",
        t.elapsed()
    );
    Ok(())
}
