//! Many connections at once (`scale-serve`, `scale-client`): every byte checked, fairness.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use libc::c_int;
use vmcs_guest_tools::fd::{sys, Epoll};
use vmcs_guest_tools::{ename, errno, strerror, Res};

use crate::cross::find_server;
use crate::sock::{check, Sock, CID_ANY};

/// Raises the open-file limit to its hard maximum.
pub(crate) fn raise_nofile() -> Res {
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
pub(crate) fn scale_byte(i: u32, k: usize) -> u8 {
    ((k + i as usize * 13) % 251) as u8
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
pub(crate) fn scale_serve(port: u32, nconn: usize, bytes: usize) -> Res {
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
                return Err(format!("scale: recv on connection {tag}: {}", strerror(e)));
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
                    return Err(format!("scale: answer: {}", strerror(errno())));
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
pub(crate) fn scale_client(port: u32, nconn: usize, bytes: usize) -> Res {
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
                return Err(format!("connect #{}: {}", socks.len(), strerror(e)));
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
                return Err(format!("connect #{i}: {}", strerror(e)));
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
                return Err(format!("send #{i}: {}", strerror(errno())));
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
            let mut b = [0u8; 16];
            let r = socks[i].recv(&mut b, libc::MSG_WAITALL);
            let e = errno();
            if r < 0 && e == libc::EAGAIN {
                continue;
            }
            let idx = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let cnt = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            if r != 8 || idx as usize != i || cnt as usize != bytes {
                let why = if r < 0 {
                    format!(" ({})", ename(e))
                } else {
                    String::new()
                };
                return Err(format!(
                    "connection {i}: answer {r} bytes{why}, index {idx}, count {cnt} \
                     (want {bytes}; epoll events {:#x})",
                    { ev.events }
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

/// Guest 0 (`burst-serve`): accepts `nconn` stream connections on `port`, reads each one's
/// 4-byte index, then writes `bytes` pattern bytes on every one and closes it at once, and
/// exits; the scenario unloads vmcs right after. The bytes are queued in the kernel, far
/// more than one ring holds, so the connections linger (closing) while they drain: an
/// unload must let them finish (docs/sockets.md, "close").
pub(crate) fn burst_serve(port: u32, nconn: usize, bytes: usize) -> Res {
    let l = Sock::new(libc::SOCK_STREAM)?;
    l.bind(CID_ANY, port)?;
    l.listen(nconn as c_int)?;
    let mut conns = Vec::new();
    for _ in 0..nconn {
        let (s, _) = l.accept()?;
        let mut h = [0u8; 4];
        let r = s.recv(&mut h, libc::MSG_WAITALL);
        if r != 4 {
            return Err(format!("burst: index: {r} ({})", ename(errno())));
        }
        conns.push((u32::from_le_bytes(h), s));
    }
    for (i, s) in conns.iter() {
        let data: Vec<u8> = (0..bytes).map(|k| scale_byte(*i, k)).collect();
        s.send_all(&data)?;
    }
    drop(conns);
    println!("burst: {nconn} connections x {bytes} bytes queued and closed");
    Ok(())
}

/// `nconn` stream connections to the server on `port` (found on any peer), and its cid.
pub(crate) fn connect_many(port: u32, nconn: usize) -> Res<(Vec<Sock>, u32)> {
    let (first, cid) = find_server(libc::SOCK_STREAM, port)?;
    let mut socks = vec![first];
    for _ in 1..nconn {
        let s = Sock::new(libc::SOCK_STREAM)?;
        s.connect(cid, port)?;
        socks.push(s);
    }
    Ok((socks, cid))
}

/// Guest 1 (`burst-client`): `nconn` connections to the `burst-serve` on `port`; each sends
/// its index and must then read exactly `bytes` pattern bytes and end of file.
pub(crate) fn burst_client(port: u32, nconn: usize, bytes: usize) -> Res {
    let (socks, _) = connect_many(port, nconn)?;
    for (i, s) in socks.iter().enumerate() {
        s.send_all(&(i as u32).to_le_bytes())?;
    }
    for (i, s) in socks.iter().enumerate() {
        read_pattern_eof(s, i as u32, bytes)
            .map_err(|e| format!("{e}; the server closed and unloaded vmcs with them queued"))?;
    }
    check(
        &format!("{nconn} connections: all {bytes} bytes each, then end of file, although the server unloaded vmcs right after closing"),
        true,
    )
}

/// Connection `i` on `s`: exactly `bytes` bytes of `scale_byte(i, _)`, then end of file.
pub(crate) fn read_pattern_eof(s: &Sock, i: u32, bytes: usize) -> Res {
    let mut buf = vec![0u8; bytes + 1];
    let r = s.recv(&mut buf, libc::MSG_WAITALL);
    let e = errno();
    let good = r == bytes as isize
        && buf[..bytes]
            .iter()
            .enumerate()
            .all(|(k, b)| *b == scale_byte(i, k));
    if !good {
        let why = if r < 0 {
            ename(e)
        } else {
            "short or corrupt".into()
        };
        return Err(format!("connection {i}: read {r} of {bytes} bytes ({why})"));
    }
    let r = s.recv(&mut buf, 0);
    if r != 0 {
        return Err(format!(
            "connection {i}: {r} after the data, not end of file ({})",
            ename(errno())
        ));
    }
    Ok(())
}
