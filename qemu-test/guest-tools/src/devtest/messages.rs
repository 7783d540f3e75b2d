//! Message semantics over loopback: GET_INFO, sizes, order, wake-ups, poll and epoll,
//! non-blocking files, truncation, end of file.

use std::thread;
use std::time::{Duration, Instant};

use vmcs_guest_tools::dev::Fd;
use vmcs_guest_tools::fd::Epoll;
use vmcs_guest_tools::{ename, Res};

use crate::{expect_err, listener, ok, pair, pattern, CID_LOCAL, MAX_MSG};

pub(crate) fn t_info() -> Res {
    let f = Fd::open()?;
    let info = ok("GET_INFO", f.info())?;
    println!(
        "abi {} domain {} local_cid {} transport {} region {} max_peers {} ring {} max_msg {} npeers {}",
        info.abi_version,
        info.domain,
        info.local_cid,
        info.transport,
        info.region_size,
        info.max_peers,
        info.ring_size,
        info.max_msg_size,
        info.npeers
    );
    for p in &info.peers[..(info.npeers as usize).min(64)] {
        println!(
            "peer {} state {} gen {} hb_age {}",
            p.id, p.state, p.generation, p.heartbeat_age_ms
        );
    }
    if info.abi_version != 1 || info.max_msg_size != MAX_MSG as u32 || info.region_size == 0 {
        return Err("unexpected GET_INFO values".into());
    }
    Ok(())
}

/// Sends messages of many sizes each way and checks every byte.
pub(crate) fn sizes_on(c: &Fd, s: &Fd) -> Res {
    let mut sizes: Vec<usize> = (1..=64).collect();
    sizes.extend([
        100, 255, 256, 1000, 4063, 4064, 4065, 4096, 8191, 8192, 10000, 32768,
    ]);
    sizes.extend([65535, 65536]);
    let mut buf = vec![0u8; MAX_MSG + 16];
    for (i, &n) in sizes.iter().enumerate() {
        for (a, b, dir) in [(c, s, "c->s"), (s, c, "s->c")] {
            let msg = pattern(i as u32 * 7 + n as u32, n);
            let w = ok("write", a.write(&msg))?;
            if w != n {
                return Err(format!("{dir} write {n}: wrote {w}"));
            }
            let r = ok("read", b.read(&mut buf))?;
            if r != n || buf[..r] != msg[..] {
                return Err(format!("{dir} size {n}: read {r} bytes, content mismatch"));
            }
        }
    }
    println!(
        "{} sizes, 1 B .. 64 KiB, both ways, pattern-checked",
        sizes.len()
    );
    Ok(())
}

pub(crate) fn t_sizes() -> Res {
    let (c, s) = pair()?;
    sizes_on(&c, &s)
}

/// 10,000 messages in order, reader in another thread.
pub(crate) fn order_on(w: Fd, r: Fd, n: u32) -> Res {
    let reader = thread::spawn(move || -> Res {
        let mut buf = vec![0u8; 256];
        for i in 0..n {
            let got = ok("read", r.read(&mut buf))?;
            let len = 4 + (i as usize % 61);
            if got != len {
                return Err(format!("message {i}: {got} bytes, want {len}"));
            }
            let seq = u32::from_le_bytes(buf[..4].try_into().unwrap());
            if seq != i || buf[4..got] != pattern(i, len - 4)[..] {
                return Err(format!("message {i}: got sequence {seq} or bad content"));
            }
        }
        Ok(())
    });
    for i in 0..n {
        let len = 4 + (i as usize % 61);
        let mut m = i.to_le_bytes().to_vec();
        m.extend(pattern(i, len - 4));
        ok("write", w.write(&m))?;
    }
    reader.join().map_err(|_| "reader panicked".to_string())??;
    println!("{n} messages in order, none lost");
    Ok(())
}

pub(crate) fn t_order() -> Res {
    let (c, s) = pair()?;
    order_on(c, s, 10_000)
}

pub(crate) fn t_wake() -> Res {
    let (c, s) = pair()?;
    let t0 = Instant::now();
    let reader = thread::spawn(move || -> Res<(usize, Duration)> {
        let mut buf = [0u8; 64];
        let n = ok("blocking read", s.read(&mut buf))?;
        Ok((n, t0.elapsed()))
    });
    thread::sleep(Duration::from_millis(300));
    ok("write", c.write(b"wake up"))?;
    let (n, dt) = reader.join().map_err(|_| "reader panicked".to_string())??;
    if n != 7 || dt < Duration::from_millis(250) {
        return Err(format!("read {n} bytes after {dt:?}"));
    }
    println!("blocked read woken after {dt:?}");
    Ok(())
}

pub(crate) fn t_poll() -> Res {
    let (c, s) = pair()?;
    let ev = s.poll(libc::POLLIN | libc::POLLOUT, 0);
    if ev & libc::POLLIN != 0 || ev & libc::POLLOUT == 0 {
        return Err(format!("idle connection: revents {ev:#x}, want OUT only"));
    }
    // A poll that sleeps is woken by the write.
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        let r = c.write(b"x");
        (c, r)
    });
    let ev = s.poll(libc::POLLIN, 5000);
    let (c, r) = t.join().map_err(|_| "writer panicked")?;
    ok("write", r)?;
    if ev & libc::POLLIN == 0 {
        return Err(format!("after write: revents {ev:#x}, want IN"));
    }
    // epoll, edge of the same.
    let (n, events, data) = Epoll::once(s.0, (libc::EPOLLIN | libc::EPOLLOUT) as u32, 1000)?;
    if n != 1 || events & libc::EPOLLIN as u32 == 0 || data != 7 {
        return Err(format!("epoll: n {n} events {events:#x}"));
    }
    let mut b = [0u8; 8];
    ok("read", s.read(&mut b))?;
    let ev = s.poll(libc::POLLIN, 0);
    if ev & libc::POLLIN != 0 {
        return Err("IN still set after draining".into());
    }
    // Peer shuts down: IN (EOF); peer closes: HUP.
    ok("shutdown", c.shutdown(1))?;
    let ev = s.poll(libc::POLLIN, 1000);
    if ev & libc::POLLIN == 0 {
        return Err(format!("after peer SHUT_WR: revents {ev:#x}, want IN"));
    }
    drop(c);
    let ev = s.poll(libc::POLLIN, 1000);
    if ev & libc::POLLHUP == 0 {
        return Err(format!("after peer close: revents {ev:#x}, want HUP"));
    }
    // Listener: IN when a connection is pending.
    let (l, port) = listener(4)?;
    if l.poll(libc::POLLIN, 0) != 0 {
        return Err("listener readable without a pending connection".into());
    }
    let c2 = Fd::open()?;
    ok("connect", c2.connect(CID_LOCAL, port, 0))?;
    if l.poll(libc::POLLIN, 1000) & libc::POLLIN == 0 {
        return Err("listener not readable with a pending connection".into());
    }
    println!("poll/epoll: OUT when idle, IN on message/EOF/pending accept, HUP on close");
    Ok(())
}

pub(crate) fn t_nonblock() -> Res {
    let (c, s) = pair()?;
    let mut b = [0u8; 16];
    s.set_nonblock(true);
    expect_err("O_NONBLOCK read", s.read(&mut b), libc::EAGAIN)?;
    s.set_nonblock(false);
    ok("SET_OPTS nonblock", s.opts(1, 1, 0))?;
    expect_err("VMCS_OPT_NONBLOCK read", s.read(&mut b), libc::EAGAIN)?;
    ok("SET_OPTS blocking", s.opts(1, 0, 0))?;
    let (l, _) = listener(1)?;
    l.set_nonblock(true);
    expect_err("nonblocking accept", l.accept(0), libc::EAGAIN)?;
    // Flow control: with a 64 KiB receive buffer and nobody reading, nonblocking writes
    // stop with EAGAIN once the credit is used up, and resume after a read.
    let (c2, s2) = {
        let (l, port) = listener(1)?;
        let c = Fd::open()?;
        ok("connect", c.connect(CID_LOCAL, port, 0))?;
        let (s, _) = ok("accept", l.accept(0))?;
        (c, s)
    };
    ok("SET_OPTS rcvbuf", s2.opts(2, 0, 64 * 1024))?;
    // The credit update reaches the writer with the next frame; give it a message.
    ok("write", s2.write(b"hi"))?;
    ok("read", c2.read(&mut b))?;
    c2.set_nonblock(true);
    let msg = vec![0x5a; 1000];
    let mut sent = 0;
    let stop = loop {
        match c2.write(&msg) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
        if sent > 1 << 20 {
            return Err("wrote 1 MiB into a 64 KiB receive buffer".into());
        }
    };
    if stop != libc::EAGAIN || !(60 * 1024..=64 * 1024).contains(&sent) {
        return Err(format!(
            "credit exhausted after {sent} bytes with {}",
            ename(stop)
        ));
    }
    let mut big = vec![0u8; MAX_MSG];
    for _ in 0..40 {
        ok("read", s2.read(&mut big))?;
    }
    ok("write after credit update", c2.write(&msg))?;
    drop(c);
    println!("EAGAIN on empty read/accept; writes stop after {sent} B of 64 KiB credit, resume after reads");
    Ok(())
}

pub(crate) fn t_truncate() -> Res {
    let (c, s) = pair()?;
    let m1 = pattern(1, 100);
    ok("write", c.write(&m1))?;
    ok("write", c.write(b"second"))?;
    let mut b = [0u8; 10];
    let n = ok("read", s.read(&mut b))?;
    if n != 10 || b[..] != m1[..10] {
        return Err(format!("short read returned {n}"));
    }
    let mut b2 = [0u8; 100];
    let n = ok("read", s.read(&mut b2))?;
    if &b2[..n] != b"second" {
        return Err("rest of the truncated message was not discarded".into());
    }
    println!("a 10-byte read of a 100-byte message returns 10, the rest is discarded");
    Ok(())
}

pub(crate) fn t_eof() -> Res {
    let (c, s) = pair()?;
    ok("write", c.write(b"last words"))?;
    ok("shutdown SHUT_WR", c.shutdown(1))?;
    expect_err("write after SHUT_WR", c.write(b"x"), libc::EPIPE)?;
    let mut b = [0u8; 64];
    let n = ok("read", s.read(&mut b))?;
    if &b[..n] != b"last words" {
        return Err("data before SHUTDOWN lost".into());
    }
    if ok("read at EOF", s.read(&mut b))? != 0 || ok("read at EOF again", s.read(&mut b))? != 0 {
        return Err("read after peer shutdown did not return 0".into());
    }
    // The other direction still works.
    ok("write back", s.write(b"still open"))?;
    let n = ok("read", c.read(&mut b))?;
    if &b[..n] != b"still open" {
        return Err("half-closed connection lost the other direction".into());
    }
    // SHUT_RD on the receiver: the writer gets EPIPE, the reader 0.
    let (c, s) = pair()?;
    ok("shutdown SHUT_RD", s.shutdown(0))?;
    expect_err(
        "write to a peer that shut reading",
        c.write(b"x"),
        libc::EPIPE,
    )?;
    if ok("read after SHUT_RD", s.read(&mut b))? != 0 {
        return Err("read after SHUT_RD did not return 0".into());
    }
    // Orderly close: the peer reads the remaining message, then EOF, then writes EPIPE.
    let (c, s) = pair()?;
    ok("write", c.write(b"bye"))?;
    drop(c);
    let n = ok("read after peer close", s.read(&mut b))?;
    if &b[..n] != b"bye" || ok("read", s.read(&mut b))? != 0 {
        return Err("orderly close: data then EOF expected".into());
    }
    expect_err("write after peer close", s.write(b"x"), libc::EPIPE)?;
    println!("SHUT_WR: peer drains then reads 0; writer EPIPE; close: data, EOF, EPIPE");
    Ok(())
}
