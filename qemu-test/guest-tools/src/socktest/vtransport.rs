//! The vsock transport between guests with no shared region (qemu-test/scenarios/vsock.sh):
//! AF_VMCS over the guests' own AF_VSOCK, a hostile raw vsock stream on the transport's
//! port, peer death, and a host end.

use std::io::Write;
use std::mem::size_of;
use std::thread;
use std::time::{Duration, Instant};

use libc::c_int;
use vmcs_guest_tools::{errno, strerror, Res};

use crate::cross::seqpacket_echoes;
use crate::sock::{check, Sock, CID_ANY};

/// The vsock transport's default port (`vsock_port`).
const TRANSPORT_PORT: u32 = 22093;

fn flush() {
    let _ = std::io::stdout().flush();
}

/// Connects a `ty` socket to `cid:port`, retrying for a minute (the peer boots).
fn connect_retry(ty: c_int, cid: u32, port: u32) -> Res<Sock> {
    let t0 = Instant::now();
    loop {
        let s = Sock::new(ty)?;
        if s.raw_connect(cid, port)? == 0 {
            return Ok(s);
        }
        let e = errno();
        if t0.elapsed() > Duration::from_secs(90) {
            return Err(format!("connect {cid}:{port}: {}", strerror(e)));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

fn stream_echo(s: &Sock, len: usize, seed: usize) -> Res {
    let data: Vec<u8> = (0..len).map(|i| ((i + seed) % 251) as u8).collect();
    let wfd = s.0;
    let out = data.clone();
    // SAFETY: the fd outlives the thread (joined below).
    let w = thread::spawn(move || unsafe { libc::send(wfd, out.as_ptr().cast(), out.len(), 0) });
    let mut got = vec![0u8; len];
    let n = s.recv(&mut got, libc::MSG_WAITALL);
    let e = strerror(errno());
    let sent = w.join().map_err(|_| "join")?;
    check(
        &format!("{len} bytes stream echo over vsock (sent {sent}, got {n}: {e})"),
        n as usize == len && got == data,
    )
}

/// Raw AF_VSOCK to the transport's port on `cid`, sending a bad preamble: the peer must
/// close that stream (EOF or ECONNRESET), nothing else.
fn bad_preamble(cid: u32) -> Res {
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(format!("socket(AF_VSOCK): {}", strerror(errno())));
        }
        let mut sa: libc::sockaddr_vm = std::mem::zeroed();
        sa.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        sa.svm_cid = cid;
        sa.svm_port = TRANSPORT_PORT;
        let len = size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        if libc::connect(fd, (&sa as *const libc::sockaddr_vm).cast(), len) != 0 {
            let e = strerror(errno());
            libc::close(fd);
            return Err(format!("raw vsock connect to {cid}:{TRANSPORT_PORT}: {e}"));
        }
        let junk = *b"NOT-A-VMCS-PREAMBLE-AT-ALL-0123";
        libc::send(fd, junk.as_ptr().cast(), junk.len(), libc::MSG_NOSIGNAL);
        let tv = libc::timeval {
            tv_sec: 30,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
        // The peer's own preamble may come first; then the end of the stream.
        let mut b = [0u8; 64];
        let mut total = 0;
        let (r, e) = loop {
            let r = libc::recv(fd, b.as_mut_ptr().cast(), b.len(), 0);
            if r <= 0 {
                break (r, errno());
            }
            total += r;
        };
        libc::close(fd);
        println!(
            "bad preamble: {total} bytes, then recv {r} ({})",
            strerror(e)
        );
        check(
            "a bad preamble: the peer closed that vsock stream (EOF or ECONNRESET)",
            total <= 16 && (r == 0 || e == libc::ECONNRESET),
        )
    }
}

/// Guest 1: stream and seqpacket over AF_VMCS to guest `cid`'s `serve PORT 1`, byte-checked;
/// a bad preamble on the same peer's transport port; the first stream still works after.
pub(crate) fn vt_client(cid: u32, port: u32) -> Res {
    let s = connect_retry(libc::SOCK_STREAM, cid, port)?;
    let p = s.name(true)?;
    check(
        &format!("stream connected, getpeername {}:{}", p.svm_cid, p.svm_port),
        p.svm_cid == cid && p.svm_port == port,
    )?;
    stream_echo(&s, 1 << 20, 7)?;
    let q = connect_retry(libc::SOCK_SEQPACKET, cid, port + 1)?;
    seqpacket_echoes(&q)?;
    bad_preamble(cid)?;
    stream_echo(&s, 64 << 10, 3)?;
    println!("VT-HOSTILE-OK");
    flush();
    s.shutdown(libc::SHUT_WR)?;
    let mut b = [0u8; 16];
    check("EOF after SHUT_WR", s.recv(&mut b, 0) == 0)?;
    Ok(())
}

/// Guest 0: accepts one stream on `port` and holds it (guest 1 waits in recv on it).
pub(crate) fn vt_hold(port: u32) -> Res {
    let ls = Sock::new(libc::SOCK_STREAM)?;
    ls.bind(CID_ANY, port)?;
    ls.listen(1)?;
    let (_s, a) = ls.accept()?;
    println!("VT-HELD cid {}", a.svm_cid);
    flush();
    loop {
        thread::sleep(Duration::from_secs(10));
    }
}

/// Guest 1: connects to guest `cid`'s `vt-hold PORT` and blocks in recv: guest 0 is killed,
/// the recv must fail with ECONNRESET.
pub(crate) fn vt_reset(cid: u32, port: u32) -> Res {
    let s = connect_retry(libc::SOCK_STREAM, cid, port)?;
    println!("VT-HOLDING");
    flush();
    let mut b = [0u8; 64];
    let r = s.recv(&mut b, 0);
    let e = errno();
    println!("recv on the held stream: {r} ({})", strerror(e));
    check(
        "peer death over vsock: the blocked recv fails with ECONNRESET",
        r < 0 && e == libc::ECONNRESET,
    )
}

/// Accepts one stream on `port` (the host's) and echoes it until EOF.
pub(crate) fn vt_echo1(port: u32) -> Res {
    let ls = Sock::new(libc::SOCK_STREAM)?;
    ls.bind(CID_ANY, port)?;
    ls.listen(1)?;
    println!("VT-ECHO-LISTENING");
    flush();
    let (s, a) = ls.accept()?;
    println!("echo client cid {}:{}", a.svm_cid, a.svm_port);
    let mut b = vec![0u8; 65536];
    let mut total = 0usize;
    loop {
        let n = s.recv(&mut b, 0);
        if n <= 0 {
            println!("echo: recv {n} ({})", strerror(errno()));
            break;
        }
        s.send_all(&b[..n as usize])?;
        total += n as usize;
    }
    println!("echoed {total} bytes");
    check(
        &format!("echoed {total} bytes to cid {}", a.svm_cid),
        total > 0,
    )
}

/// Connects to `cid:port` (the host's listener) and exchanges `len` bytes both ways.
pub(crate) fn vt_to(cid: u32, port: u32) -> Res {
    let s = connect_retry(libc::SOCK_STREAM, cid, port)?;
    stream_echo(&s, 100_000, 11)
}

fn raw_vsock(cid: u32, port: u32, listen: bool) -> Res<c_int> {
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0);
        let mut sa: libc::sockaddr_vm = std::mem::zeroed();
        sa.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        sa.svm_cid = cid;
        sa.svm_port = port;
        let len = size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        let p = (&sa as *const libc::sockaddr_vm).cast();
        if listen {
            if libc::bind(fd, p, len) != 0 || libc::listen(fd, 1) != 0 {
                return Err(format!("bind/listen: {}", strerror(errno())));
            }
            let c = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
            libc::close(fd);
            return if c < 0 {
                Err(format!("accept: {}", strerror(errno())))
            } else {
                Ok(c)
            };
        }
        let t0 = Instant::now();
        while libc::connect(fd, p, len) != 0 {
            if t0.elapsed() > Duration::from_secs(90) {
                return Err(format!("connect: {}", strerror(errno())));
            }
            thread::sleep(Duration::from_millis(500));
        }
        Ok(fd)
    }
}

/// Raw AF_VSOCK, byte-checked: reads in pieces of 16, 32, 32, then `big` bytes (as the
/// transport's parser does) and checks every byte of the pattern. Diagnoses the path.
pub(crate) fn vt_raw_serve(port: u32, total: u32, big: u32) -> Res {
    let fd = raw_vsock(libc::VMADDR_CID_ANY, port, true)?;
    let mut off = 0usize;
    let mut pieces = [16usize, 32, 32].into_iter();
    let mut b = vec![0u8; big as usize];
    while off < total as usize {
        let want = pieces
            .next()
            .unwrap_or(big as usize)
            .min(total as usize - off);
        let mut have = 0;
        while have < want {
            // SAFETY: `b` has room for `want` bytes.
            let r = unsafe { libc::recv(fd, b[have..].as_mut_ptr().cast(), want - have, 0) };
            if r <= 0 {
                return Err(format!("recv at {}: {r} {}", off + have, strerror(errno())));
            }
            have += r as usize;
        }
        for (i, &x) in b[..want].iter().enumerate() {
            if x != ((off + i) % 251) as u8 {
                return Err(format!(
                    "raw vsock: byte {} is {x:#x}, not {:#x}",
                    off + i,
                    (off + i) % 251
                ));
            }
        }
        off += want;
    }
    println!("raw vsock: {off} bytes in order");
    // SAFETY: plain syscall.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Writes `total` pattern bytes in writes of 16, 32, then `chunk`.
pub(crate) fn vt_raw_client(cid: u32, port: u32, total: u32, chunk: u32) -> Res {
    let fd = raw_vsock(cid, port, false)?;
    let data: Vec<u8> = (0..total as usize).map(|i| (i % 251) as u8).collect();
    let mut off = 0usize;
    let mut pieces = [16usize, 32].into_iter();
    while off < data.len() {
        let n = pieces
            .next()
            .unwrap_or(chunk as usize)
            .min(data.len() - off);
        // SAFETY: `data[off..off + n]` is valid.
        let r = unsafe { libc::send(fd, data[off..].as_ptr().cast(), n, libc::MSG_NOSIGNAL) };
        if r <= 0 {
            return Err(format!("send at {off}: {}", strerror(errno())));
        }
        off += r as usize;
    }
    let mut b = [0u8; 1];
    // SAFETY: plain syscall; waits for the server's close.
    unsafe { libc::recv(fd, b.as_mut_ptr().cast(), 1, 0) };
    println!("raw vsock: sent {off}");
    Ok(())
}

/// Waits until `path` exists (the scenario's go-ahead), up to 5 minutes.
fn wait_file(path: &str) -> Res {
    let t0 = Instant::now();
    while !std::path::Path::new(path).exists() {
        if t0.elapsed() > Duration::from_secs(300) {
            return Err(format!("{path} never appeared"));
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A stream and a seqpacket connection to `cid`'s `serve PORT N` (stream on `port`,
/// seqpacket on `port + 1`), getpeername checked.
fn dual_pair(cid: u32, port: u32) -> Res<(Sock, Sock)> {
    let s = connect_retry(libc::SOCK_STREAM, cid, port)?;
    let q = connect_retry(libc::SOCK_SEQPACKET, cid, port + 1)?;
    for (what, x, p) in [("stream", &s, port), ("seqpacket", &q, port + 1)] {
        let a = x.name(true)?;
        check(
            &format!(
                "{what} to {cid}:{p}: getpeername {}:{}",
                a.svm_cid, a.svm_port
            ),
            a.svm_cid == cid && a.svm_port == p,
        )?;
    }
    Ok((s, q))
}

/// 1 MiB stream and seqpacket echoes (1 B .. 64 KiB) on both pairs at the same time.
fn dual_exchange(pairs: &[(&Sock, &Sock, u32)]) -> Res {
    thread::scope(|sc| {
        let hs: Vec<_> = pairs
            .iter()
            .flat_map(|&(s, q, cid)| {
                [
                    sc.spawn(move || stream_echo(s, 1 << 20, cid as usize)),
                    sc.spawn(move || seqpacket_echoes(q)),
                ]
            })
            .collect();
        hs.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| "exchange thread panicked".to_string())?
        })
    })
}

/// Guest 1 of the vsock-dual scenario (ivshmem with guest `c0`, vsock with `c0` and
/// `c2`): both peers at once (the route picks ivshmem for `c0`, vsock for `c2`); then,
/// after the scenario unbound the ivshmem device (`/tmp/vt-unbound`), the held stream to
/// `c0` fails with ECONNRESET, the one to `c2` still works, and a new connection to `c0`
/// goes over vsock.
pub(crate) fn vt_dual(c0: u32, c2: u32, port: u32) -> Res {
    let (s0, q0) = dual_pair(c0, port)?;
    let (s2, q2) = dual_pair(c2, port)?;
    dual_exchange(&[(&s0, &q0, c0), (&s2, &q2, c2)])?;
    // Made while the guest is dual (in the ivshmem domain), connected after the unbind.
    let pre = Sock::new(libc::SOCK_STREAM)?;
    println!("VT-DUAL-UP");
    flush();
    wait_file("/tmp/vt-unbound")?;
    let tv = libc::timeval {
        tv_sec: 20,
        tv_usec: 0,
    };
    s0.setopt(libc::SO_RCVTIMEO, &tv)?;
    let mut b = [0u8; 64];
    let r = s0.recv(&mut b, 0);
    let e = errno();
    println!(
        "recv on the ivshmem stream after unbind: {r} ({})",
        strerror(e)
    );
    check(
        "the ivshmem stream to the region peer failed with ECONNRESET after unbind",
        r < 0 && e == libc::ECONNRESET,
    )?;
    stream_echo(&s2, 64 << 10, 1)?;
    drop((s0, q0));
    let r = pre.raw_connect(c0, port)?;
    let e = strerror(errno());
    check(
        &format!("a socket made before the unbind connects to {c0}:{port} after it ({r}: {e})"),
        r == 0,
    )?;
    let m0 = connect_retry(libc::SOCK_SEQPACKET, c0, port + 1)?;
    for (what, x, p) in [("stream", &pre, port), ("seqpacket", &m0, port + 1)] {
        let a = x.name(true)?;
        check(
            &format!(
                "{what} to {c0}:{p} after unbind: getpeername {}:{}",
                a.svm_cid, a.svm_port
            ),
            a.svm_cid == c0 && a.svm_port == p,
        )?;
    }
    dual_exchange(&[(&pre, &m0, c0)])?;
    println!("VT-DUAL-RECONNECTED");
    flush();
    wait_file("/tmp/vt-done")?;
    Ok(())
}
