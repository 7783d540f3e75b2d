// SPDX-License-Identifier: GPL-2.0
//! SO_BUSY_POLL over loopback: the default window (module parameter `busy_poll_us`) is
//! what getsockopt reads on a new socket, a set value reads back (clamped to
//! VMCS_MAX_BUSY_POLL_US), an accepted socket inherits its listener's; a busy-polling
//! blocking recv still returns data that comes during and after the window, still times
//! out with SO_RCVTIMEO, and a signal still interrupts it (EINTR).

use std::thread;
use std::time::{Duration, Instant};

use vmcs_guest_tools::Res;

use crate::options::{set_timeo, setint};
use crate::sock::{check, expect_err, listener, pair, Sock, CID_LOCAL};

/// The module's default `busy_poll_us`, as the sockets scenario loads vmcs.
const DEFAULT_US: i32 = 50;
/// `VMCS_MAX_BUSY_POLL_US`.
const MAX_US: i32 = vmcs_sys::VMCS_MAX_BUSY_POLL_US as i32;

extern "C" fn on_alarm(_: libc::c_int) {}

pub(crate) fn t_busypoll() -> Res {
    let s = Sock::new(libc::SOCK_STREAM)?;
    let d = s.getopt(libc::SO_BUSY_POLL)?;
    check(
        &format!("SO_BUSY_POLL of a new socket is busy_poll_us ({d})"),
        d == DEFAULT_US,
    )?;
    setint(&s, libc::SO_BUSY_POLL, 1234)?;
    check(
        "SO_BUSY_POLL 1234 reads back",
        s.getopt(libc::SO_BUSY_POLL)? == 1234,
    )?;
    setint(&s, libc::SO_BUSY_POLL, 1 << 30)?;
    let v = s.getopt(libc::SO_BUSY_POLL)?;
    check(
        &format!("SO_BUSY_POLL 2^30 clamps to {MAX_US} ({v})"),
        v == MAX_US,
    )?;
    setint(&s, libc::SO_BUSY_POLL, 0)?;
    check(
        "SO_BUSY_POLL 0 reads back",
        s.getopt(libc::SO_BUSY_POLL)? == 0,
    )?;
    let neg: libc::c_int = -1;
    // SAFETY: `neg` is valid for its size.
    let r = unsafe {
        libc::setsockopt(
            s.0,
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            (&neg as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    expect_err("SO_BUSY_POLL -1", r as isize, libc::EINVAL)?;
    let (l, port) = listener(libc::SOCK_STREAM)?;
    setint(&l, libc::SO_BUSY_POLL, 777)?;
    let c = Sock::new(libc::SOCK_STREAM)?;
    c.connect(CID_LOCAL, port)?;
    let (a, _) = l.accept()?;
    let v = a.getopt(libc::SO_BUSY_POLL)?;
    check(
        &format!("accepted socket inherits SO_BUSY_POLL 777 ({v})"),
        v == 777,
    )?;

    // Data during the window (5 ms in) and after it (300 ms in): both received.
    for ty in [libc::SOCK_STREAM, libc::SOCK_SEQPACKET] {
        let (c, a) = pair(ty)?;
        setint(&a, libc::SO_BUSY_POLL, 100_000)?;
        for delay in [5u64, 300] {
            let cfd = c.0;
            let w = thread::spawn(move || {
                thread::sleep(Duration::from_millis(delay));
                // SAFETY: the fd outlives the thread (joined below).
                unsafe { libc::send(cfd, b"busy".as_ptr().cast(), 4, 0) }
            });
            let mut b = [0u8; 16];
            let n = a.recv(&mut b, 0);
            let sent = w.join().map_err(|_| "join")?;
            check(
                &format!("busy-polling recv (type {ty}) gets data sent after {delay} ms ({n}, sent {sent})"),
                n == 4 && &b[..4] == b"busy",
            )?;
        }
    }

    // SO_RCVTIMEO still holds, the window counted in it.
    let (_c, a) = pair(libc::SOCK_STREAM)?;
    setint(&a, libc::SO_BUSY_POLL, 100_000)?;
    set_timeo(&a, libc::SO_RCVTIMEO, 200)?;
    let mut b = [0u8; 16];
    let t = Instant::now();
    let r = a.recv(&mut b, 0);
    let el = t.elapsed().as_millis();
    expect_err(
        &format!("busy-polling recv, SO_RCVTIMEO 200 ms ({el} ms)"),
        r,
        libc::EAGAIN,
    )?;
    check("waited at least ~200 ms", el >= 150)?;

    // A signal during the busy window: EINTR (a handler without SA_RESTART).
    // SAFETY: a plain handler that does nothing; the sigaction struct is zeroed first.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as usize;
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
    }
    let (_c, a) = pair(libc::SOCK_STREAM)?;
    setint(&a, libc::SO_BUSY_POLL, 100_000)?;
    set_timeo(&a, libc::SO_RCVTIMEO, 5000)?;
    let it = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 30_000,
        },
    };
    // SAFETY: plain syscall with valid arguments.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
    let t = Instant::now();
    let r = a.recv(&mut b, 0);
    let el = t.elapsed().as_millis();
    expect_err(
        &format!("busy-polling recv interrupted by SIGALRM ({el} ms)"),
        r,
        libc::EINTR,
    )?;
    check("interrupted well before SO_RCVTIMEO", el < 4000)?;
    Ok(())
}
