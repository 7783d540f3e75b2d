//! Bad user buffers lose nothing (issue #12, docs/architecture.md "The walk of one message"):
//! a send from memory that is not readable fails with `EFAULT` (seqpacket: nothing is sent;
//! stream: the bytes before the bad page go, a short count), and a recv into memory that is
//! not writable fails with `EFAULT` (stream: the bytes before the bad page are read) while
//! the rest stays queued for the next read, whole and in order.

use std::thread;
use std::time::{Duration, Instant};

use libc::c_int;
use vmcs_guest_tools::{badmem::Pages, Res};

use crate::sock::{check, expect_err, pair, Sock};

fn send_raw(s: &Sock, p: *const u8, n: usize) -> isize {
    // SAFETY: deliberately (partly) bad pointers: the kernel must check them.
    unsafe { libc::send(s.0, p.cast(), n, libc::MSG_NOSIGNAL) }
}

fn recv_raw(s: &Sock, p: *mut u8, n: usize, flags: c_int) -> isize {
    // SAFETY: as in `send_raw`.
    unsafe { libc::recv(s.0, p.cast(), n, flags) }
}

/// Waits (at most 20 s) until `r` has `n` unread bytes.
fn wait_queued(r: &Sock, n: usize) -> Res {
    let t0 = Instant::now();
    loop {
        let q = r.ioctl_int(libc::FIONREAD)?;
        if q as usize >= n {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return Err(format!("only {q} of {n} bytes arrived"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The checks on a connection whose bytes written to `w` arrive at `r` (a loopback pair,
/// or one socket to an echo server).
pub(crate) fn badbuf(w: &Sock, r: &Sock, ty: c_int) -> Res {
    let seq = ty == libc::SOCK_SEQPACKET;
    let kind = if seq { "seqpacket" } else { "stream" };
    let pg = Pages::new()?;
    let half = 100;
    expect_err(
        &format!("{kind} send from an unmapped address"),
        send_raw(w, 8 as *const u8, 100),
        libc::EFAULT,
    )?;
    let mut want = Vec::new();
    if seq {
        expect_err(
            "seqpacket send from a buffer whose second half is not readable (nothing sent)",
            send_raw(w, pg.tail(half), 2 * half),
            libc::EFAULT,
        )?;
    } else {
        let n = send_raw(w, pg.tail(half), 2 * half);
        check(
            &format!("stream send from a half-readable buffer sends the readable half ({n})"),
            n == half as isize,
        )?;
        want.extend(pg.tail_bytes(half));
    }
    let m1: Vec<u8> = (0..300).map(|i| (i * 3 + 1) as u8).collect();
    w.send_all(&m1)?;
    want.extend(&m1);
    let m2 = b"the second message";
    w.send_all(m2)?;
    want.extend(m2);
    wait_queued(r, want.len())?;
    expect_err(
        &format!("{kind} recv into an unmapped address"),
        recv_raw(r, 8 as *mut u8, 1000, 0),
        libc::EFAULT,
    )?;
    expect_err(
        &format!("{kind} MSG_PEEK into an unmapped address"),
        recv_raw(r, 8 as *mut u8, 1000, libc::MSG_PEEK),
        libc::EFAULT,
    )?;
    let mut b = vec![0u8; 1000];
    if seq {
        expect_err(
            "seqpacket recv of a 300-byte message into a buffer whose second half is not writable",
            recv_raw(r, pg.tail(half), 2 * half, 0),
            libc::EFAULT,
        )?;
        let n = r.recv(&mut b, 0);
        check(
            &format!("the message stayed queued: read whole after EFAULT ({n})"),
            n == 300 && b[..300] == m1[..],
        )?;
        let n = r.recv(&mut b, 0);
        check(
            "the next message follows, and nothing of the failed sends",
            n == m2.len() as isize && &b[..m2.len()] == m2,
        )?;
    } else {
        let n = recv_raw(r, pg.tail(half), 2 * half, 0);
        check(
            &format!("stream recv into a half-writable buffer reads the writable half ({n})"),
            n == half as isize,
        )?;
        let mut got = pg.tail_bytes(half);
        let rest = want.len() - half;
        let n = r.recv(&mut b[..rest], libc::MSG_WAITALL);
        if n > 0 {
            got.extend(&b[..n as usize]);
        }
        check(
            &format!(
                "the stream after EFAULT: {} bytes in order, nothing lost or repeated",
                got.len()
            ),
            got == want,
        )?;
    }
    Ok(())
}

/// Loopback: both socket types.
pub(crate) fn t_badbuf() -> Res {
    for ty in [libc::SOCK_STREAM, libc::SOCK_SEQPACKET] {
        let (c, a) = pair(ty)?;
        badbuf(&c, &a, ty)?;
    }
    Ok(())
}
