//! Between guests: the stream and seqpacket echo server and the client tests against it.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use libc::c_int;
use vmcs_guest_tools::{errno, strerror, Res};

use crate::sock::{check, Sock, CID_ANY, PORT_ANY};

pub(crate) fn echo(s: Sock) {
    let mut b = vec![0u8; 65536];
    loop {
        let n = s.recv(&mut b, 0);
        if n <= 0 || s.send(&b[..n as usize], 0) != n {
            break;
        }
    }
}

pub(crate) fn serve(port: u32, n: usize) -> Res {
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
            println!("seqpacket client {}:{}", a.svm_cid, a.svm_port);
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
        println!("stream client {}:{}", a.svm_cid, a.svm_port);
        ts.push(thread::spawn(move || echo(s)));
    }
    for t in ts {
        let _ = t.join();
    }
    tq.join().map_err(|_| "join")??;
    Ok(())
}

/// Finds the server: every cid but ours, retrying for a minute.
pub(crate) fn find_server(ty: c_int, port: u32) -> Res<(Sock, u32)> {
    let probe = Sock::new(ty)?;
    probe.bind(CID_ANY, PORT_ANY)?;
    let local = probe.name(false)?.svm_cid;
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

/// Messages of 1 B .. 64 KiB to a seqpacket echo: each must come back whole, byte-checked.
pub(crate) fn seqpacket_echoes(q: &Sock) -> Res {
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

pub(crate) fn client(port: u32) -> Res {
    let (s, cid) = find_server(libc::SOCK_STREAM, port)?;
    let p = s.name(true)?;
    check(
        &format!("stream connected to cid {cid}, getpeername"),
        p.svm_cid == cid && p.svm_port == port,
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
    let rerr = strerror(errno());
    let sent = w.join().map_err(|_| "join")?;
    let n2 = s.recv(&mut got, libc::MSG_DONTWAIT);
    let e2 = strerror(errno());
    println!("after: recv {n2} ({e2}), first recv error state: {rerr}");
    check(
        &format!(
            "4 MiB stream echo (sent {sent} got {n}) in {:?}",
            t0.elapsed()
        ),
        n as usize == big.len() && got == big,
    )?;
    // Bad user buffers lose nothing, over the rings (the echo sends back what arrived).
    crate::badbuf::badbuf(&s, &s, libc::SOCK_STREAM)?;
    s.shutdown(libc::SHUT_WR)?;
    let mut b = [0u8; 16];
    check("EOF after SHUT_WR", s.recv(&mut b, 0) == 0)?;
    let (q, _) = find_server(libc::SOCK_SEQPACKET, port + 1)?;
    // The echoes come back to a busy-polling recv (the window outlasts a TCG round trip).
    q.setopt(libc::SO_BUSY_POLL, &20_000i32)?;
    seqpacket_echoes(&q)?;
    crate::badbuf::badbuf(&q, &q, libc::SOCK_SEQPACKET)?;
    Ok(())
}
