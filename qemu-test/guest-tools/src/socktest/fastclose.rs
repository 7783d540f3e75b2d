//! A server that accepts, writes and closes at once (docs/sockets.md, "connect"): the
//! client's connect must still succeed, and the client then reads every byte and end of
//! file, as on vsock.

use std::thread;

use vmcs_guest_tools::fd::{self, sys};
use vmcs_guest_tools::{errno, strerror, Res};

use crate::cross::find_server;
use crate::scale::{read_pattern_eof, scale_byte};
use crate::sock::{check, listener, Sock, CID_ANY, CID_LOCAL};

/// Iterations and bytes of the loopback test.
const LOOP_N: usize = 200;
const LOOP_BYTES: usize = 4096;

/// Accepts `n` connections on `l`; on each writes `bytes` pattern bytes and closes it.
fn serve_on(l: &Sock, n: usize, bytes: usize) -> Res {
    for i in 0..n {
        let (s, _) = l.accept()?;
        let data: Vec<u8> = (0..bytes).map(|k| scale_byte(i as u32, k)).collect();
        s.send_all(&data)?;
    }
    Ok(())
}

/// Connection `i` to `cid:port`: blocking connect, except every fourth one, which is
/// non-blocking and must then poll writable with `SO_ERROR` 0.
fn connect_one(cid: u32, port: u32, i: usize) -> Res<Sock> {
    let s = Sock::new(libc::SOCK_STREAM)?;
    if i % 4 != 3 {
        let r = s.raw_connect(cid, port)?;
        if r != 0 {
            return Err(format!(
                "connection {i}: blocking connect failed: {}",
                strerror(errno())
            ));
        }
        return Ok(s);
    }
    s.set_nonblock()?;
    let r = s.raw_connect(cid, port)?;
    if r != 0 && errno() != libc::EINPROGRESS {
        return Err(format!(
            "connection {i}: non-blocking connect failed: {}",
            strerror(errno())
        ));
    }
    let ev = s.poll(libc::POLLOUT, 10000)?;
    let so_error = s.getopt(libc::SO_ERROR)?;
    if ev & libc::POLLOUT == 0 || so_error != 0 {
        return Err(format!(
            "connection {i}: non-blocking connect: poll {ev:#x}, SO_ERROR {}",
            strerror(so_error)
        ));
    }
    sys("fcntl", fd::set_nonblock(s.0, false))?;
    Ok(s)
}

/// Loopback: `LOOP_N` connections to a server thread that writes and closes at once.
pub(crate) fn t_fastclose() -> Res {
    let (l, port) = listener(libc::SOCK_STREAM)?;
    let srv = thread::spawn(move || serve_on(&l, LOOP_N, LOOP_BYTES));
    for i in 0..LOOP_N {
        let s = connect_one(CID_LOCAL, port, i)?;
        read_pattern_eof(&s, i as u32, LOOP_BYTES)?;
    }
    srv.join().map_err(|_| "join")??;
    check(
        &format!("{LOOP_N} connects to a server that wrote {LOOP_BYTES} bytes and closed at once: all succeeded, all bytes then EOF"),
        true,
    )
}

/// Guest 0 (`fastclose-serve`): `n` connections on `port`, each written and closed at once;
/// `port + 1` accepts and closes any number, for the client to find this guest.
pub(crate) fn fastclose_serve(port: u32, n: usize, bytes: usize) -> Res {
    let p = Sock::new(libc::SOCK_STREAM)?;
    p.bind(CID_ANY, port + 1)?;
    p.listen(8)?;
    let l = Sock::new(libc::SOCK_STREAM)?;
    l.bind(CID_ANY, port)?;
    l.listen(8)?;
    thread::spawn(move || while p.accept().is_ok() {});
    serve_on(&l, n, bytes)?;
    println!("fastclose: {n} connections x {bytes} bytes written and closed at once");
    Ok(())
}

/// Guest 1 (`fastclose-client`): finds `fastclose-serve` on `port + 1`, then `n`
/// connections to `port`; every connect succeeds and reads `bytes` bytes and end of file.
pub(crate) fn fastclose_client(port: u32, n: usize, bytes: usize) -> Res {
    let (_, cid) = find_server(libc::SOCK_STREAM, port + 1)?;
    for i in 0..n {
        let s = connect_one(cid, port, i)?;
        read_pattern_eof(&s, i as u32, bytes)?;
    }
    check(
        &format!("{n} connects to guest 0, which wrote {bytes} bytes and closed at once: all succeeded, all bytes then EOF"),
        true,
    )
}
