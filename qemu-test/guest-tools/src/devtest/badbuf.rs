//! /dev/vmcs: bad user buffers lose nothing (issue #12). A `write` from memory that is not
//! readable, or only half readable, fails with `EFAULT` and sends nothing; a `read` into
//! memory that is not writable, or only half, fails with `EFAULT` and the message stays
//! queued, read whole by the next `read`.

use vmcs_guest_tools::badmem::Pages;
use vmcs_guest_tools::dev::{count as raw, Fd};
use vmcs_guest_tools::Res;

use crate::{expect_err, ok, pair, pattern};

/// The checks on a connection whose messages written to `w` come back at `r` (a loopback
/// pair, or one file to an echo server).
pub(crate) fn badbuf(w: &Fd, r: &Fd) -> Res {
    let pg = Pages::new()?;
    expect_err(
        "write from an unmapped address",
        // SAFETY: a deliberately bad pointer, which the kernel must check.
        raw(unsafe { libc::write(w.0, 8 as *const libc::c_void, 100) }),
        libc::EFAULT,
    )?;
    expect_err(
        "write from a buffer whose second half is not readable",
        // SAFETY: a deliberately (partly) bad pointer, which the kernel must check.
        raw(unsafe { libc::write(w.0, pg.tail(100).cast(), 200) }),
        libc::EFAULT,
    )?;
    let m1 = pattern(11, 300);
    ok("write", w.write(&m1))?;
    let m2 = pattern(12, 40);
    ok("write", w.write(&m2))?;
    expect_err(
        "read into an unmapped address",
        // SAFETY: a deliberately (partly) bad pointer, which the kernel must check.
        raw(unsafe { libc::read(r.0, 8 as *mut libc::c_void, 1000) }),
        libc::EFAULT,
    )?;
    expect_err(
        "read of a 300-byte message into a buffer whose second half is not writable",
        // SAFETY: a deliberately (partly) bad pointer, which the kernel must check.
        raw(unsafe { libc::read(r.0, pg.tail(100).cast(), 200) }),
        libc::EFAULT,
    )?;
    let mut b = vec![0u8; 1000];
    let n = ok("read after EFAULT", r.read(&mut b))?;
    if b[..n] != m1[..] {
        return Err(format!("after EFAULT: {n} bytes, not the 300-byte message"));
    }
    let n = ok("read", r.read(&mut b))?;
    if b[..n] != m2[..] {
        return Err(format!(
            "second message: {n} bytes, mismatch (a failed write leaked?)"
        ));
    }
    println!("EFAULT on bad write and read buffers; the message stayed queued, nothing leaked");
    Ok(())
}

pub(crate) fn t_badbuf() -> Res {
    let (c, s) = pair()?;
    badbuf(&c, &s)
}
