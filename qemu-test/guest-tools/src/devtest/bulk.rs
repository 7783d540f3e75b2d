//! Bulk area (zero-copy) tests: the loopback semantics test `bulk`, and the cross-guest
//! `bulk-recv` / `bulk-send` pair that moves `BULK_TOTAL` bytes through the bulk area and
//! then the same bytes through write()/read(), printing both rates (docs/uapi.md "Bulk
//! transfer"; no timing is asserted).

use std::os::raw::c_void;
use std::time::Instant;

use vmcs_guest_tools::dev::Fd;
use vmcs_guest_tools::sys::{
    vmcs_bulk_desc, vmcs_bulk_setup, vmcs_bulk_vec, VMCS_IOC_BULK_RECVV, VMCS_IOC_BULK_SENDV,
};
use vmcs_guest_tools::{ename, errno, Res};

use crate::cross::{connect_server, listen_on};
use crate::{expect_err, ok, pair};

const PAGE: usize = 4096;
const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const RO: i32 = libc::PROT_READ;
const SH: i32 = libc::MAP_SHARED;

/// Word `j` of chunk `i` of the transfer.
pub(crate) fn word(i: u32, j: usize) -> u64 {
    (u64::from(i) << 32 | j as u64) ^ 0x9e37_79b9_7f4a_7c15
}

/// Reads one byte at `p` here, so that this process's page table maps it (a forked child
/// inherits the entry, so what it sees later is this entry, not a new fault).
pub(crate) fn touch(p: *const u8) {
    // SAFETY: `p` is in a live mapping of ours.
    let _ = unsafe { std::ptr::read_volatile(p) };
}

/// In a forked child, reads one byte at `p`; returns how the child ended.
pub(crate) fn touch_in_child(p: *const u8) -> String {
    // SAFETY: fork in a test program; the child only reads and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: `p` was mapped before the fork; the read may fault (what is tested).
        let v = unsafe { std::ptr::read_volatile(p) };
        // SAFETY: plain exit of the child.
        unsafe { libc::_exit(i32::from(v == 0xAB)) };
    }
    let mut st = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if libc::WIFSIGNALED(st) {
        format!("signal {}", libc::WTERMSIG(st))
    } else {
        format!("exit {}", libc::WEXITSTATUS(st))
    }
}

/// In a forked child, reads the `len` bytes at `p`: "zeros" if every byte is 0, else the
/// first other byte, or the signal that ended the child.
pub(crate) fn zeros_in_child(p: *const u8, len: usize) -> String {
    // SAFETY: fork in a test program; the child only reads and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: `p` was mapped for `len` bytes before the fork; the reads may fault (what
        // is tested).
        let bad = (0..len).find(|&i| unsafe { std::ptr::read_volatile(p.add(i)) } != 0);
        let code = match bad {
            None => 0,
            // SAFETY: as above.
            Some(i) => 1 + i32::from(unsafe { std::ptr::read_volatile(p.add(i)) } == 0xAB),
        };
        // SAFETY: plain exit of the child.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if libc::WIFSIGNALED(st) {
        format!("signal {}", libc::WTERMSIG(st))
    } else {
        match libc::WEXITSTATUS(st) {
            0 => "zeros".into(),
            2 => "the old data (0xAB) shows through".into(),
            _ => "non-zero bytes (old data or another connection's)".into(),
        }
    }
}

/// Loopback: set-up, mmap rules, descriptors, ownership, end of file, teardown.
pub(crate) fn t_bulk() -> Res {
    // Not connected: every bulk operation is ENOTCONN.
    let u = Fd::open()?;
    expect_err("SETUP unconnected", u.bulk_setup(4096, 0), libc::ENOTCONN)?;
    expect_err("SEND unconnected", u.bulk_send(0, 1), libc::ENOTCONN)?;
    expect_err("RECV unconnected", u.bulk_recv(), libc::ENOTCONN)?;
    expect_err("RELEASE unconnected", u.bulk_release(1), libc::ENOTCONN)?;
    expect_err(
        "mmap unconnected",
        u.mmap(0, PAGE, RW, SH).map(|_| ()),
        libc::ENOTCONN,
    )?;

    let (c, s) = pair()?;
    expect_err(
        "mmap before SETUP",
        c.mmap(0, PAGE, RW, SH).map(|_| ()),
        libc::ENOTCONN,
    )?;
    expect_err("SEND before SETUP", c.bulk_send(0, 1), libc::ENOTCONN)?;
    expect_err("SETUP size 0", c.bulk_setup(0, 0), libc::EINVAL)?;
    expect_err(
        "SETUP larger than the slice",
        c.bulk_setup(1 << 30, 0),
        libc::EINVAL,
    )?;
    // Non-blocking: the offer goes out, the peer's has not come yet.
    c.set_nonblock(true);
    expect_err("SETUP non-blocking", c.bulk_setup(5000, 0), libc::EAGAIN)?;
    let ss = ok("SETUP (server)", s.bulk_setup(3 * 4096, 5000))?;
    let cs = ok("SETUP (client, again)", c.bulk_setup(0, 5000))?;
    c.set_nonblock(false);
    if (cs.tx_size, cs.rx_size, ss.tx_size, ss.rx_size) != (8192, 12288, 12288, 8192) {
        return Err(format!("sizes: client {cs:?}, server {ss:?}"));
    }
    let tx = cs.tx_size as usize;
    let rx = cs.rx_size as usize;

    // mmap: bounds, alignment, sharing, and the peer's extent read-only.
    expect_err(
        "mmap across both extents",
        c.mmap(0, tx + PAGE, RO, SH).map(|_| ()),
        libc::EINVAL,
    )?;
    expect_err(
        "mmap past the end",
        c.mmap(tx + rx, PAGE, RO, SH).map(|_| ()),
        libc::EINVAL,
    )?;
    expect_err(
        "mmap rx overlong",
        c.mmap(tx, rx + PAGE, RO, SH).map(|_| ()),
        libc::EINVAL,
    )?;
    expect_err(
        "mmap unaligned offset",
        c.mmap(100, PAGE, RO, SH).map(|_| ()),
        libc::EINVAL,
    )?;
    expect_err(
        "mmap MAP_PRIVATE",
        c.mmap(0, PAGE, RO, libc::MAP_PRIVATE).map(|_| ()),
        libc::EINVAL,
    )?;
    expect_err(
        "mmap peer extent writable",
        c.mmap(tx, rx, RW, SH).map(|_| ()),
        libc::EACCES,
    )?;
    let ro = ok(
        "mmap peer extent",
        s.mmap(ss.tx_size as usize, ss.rx_size as usize, RO, SH),
    )?;
    let s_tx = ok(
        "mmap own extent (server)",
        s.mmap(0, ss.tx_size as usize, RW, SH),
    )?;
    // SAFETY: mprotect of our own mapping.
    let r = unsafe { libc::mprotect(ro.ptr.cast::<c_void>(), ro.len, RW) };
    if r == 0 {
        return Err("mprotect(PROT_WRITE) of the peer's extent succeeded".into());
    }
    expect_err(
        "mprotect peer extent writable",
        Err::<(), _>(errno()),
        libc::EACCES,
    )?;

    // Data: the client lends two ranges, the server reads them in place.
    let mut w = ok("mmap own extent", c.mmap(0, tx, RW, SH))?;
    for (j, x) in w.words_mut().iter_mut().enumerate() {
        *x = word(7, j);
    }
    ok("SEND 0+5000", c.bulk_send(0, 5000))?;
    ok("SEND 5000+3000", c.bulk_send(5000, 3000))?;
    expect_err(
        "SEND out of bounds",
        c.bulk_send(tx as u32 - 10, 11),
        libc::EINVAL,
    )?;
    expect_err("SEND empty", c.bulk_send(0, 0), libc::EINVAL)?;
    expect_err(
        "SEND offset overflow",
        c.bulk_send(u32::MAX, 2),
        libc::EINVAL,
    )?;
    c.set_nonblock(true);
    expect_err(
        "SEND overlapping a lent range",
        c.bulk_send(4000, 200),
        libc::EAGAIN,
    )?;
    expect_err("WAIT for a lent range", c.bulk_wait(0, 1), libc::EAGAIN)?;
    c.set_nonblock(false);
    if s.poll(libc::POLLIN, 2000) & libc::POLLIN == 0 {
        return Err("no POLLIN for a pending descriptor".into());
    }
    let want = w.slice().to_vec();
    for (off, len) in [(0u32, 5000u32), (5000, 3000)] {
        let d = ok("RECV", s.bulk_recv())?;
        if d != (vmcs_bulk_desc { off, len }) {
            return Err(format!("RECV: got {d:?}, want {off}+{len}"));
        }
        let got = &ro.slice()[off as usize..(off + len) as usize];
        if got != &want[off as usize..(off + len) as usize] {
            return Err(format!("bytes of {off}+{len} differ in the peer's mapping"));
        }
    }
    expect_err("RELEASE more than held", s.bulk_release(3), libc::EINVAL)?;
    expect_err("RELEASE 0", s.bulk_release(0), libc::EINVAL)?;
    ok("RELEASE 2", s.bulk_release(2))?;
    ok("WAIT after release", c.bulk_wait(0, 8000))?;
    ok("SEND again after release", c.bulk_send(4000, 200))?;
    let d = ok("RECV again", s.bulk_recv())?;
    if d != (vmcs_bulk_desc {
        off: 4000,
        len: 200,
    }) {
        return Err(format!("RECV again: {d:?}"));
    }

    // The client closes (a mapping holds the file open, so unmap first): the server's RECV
    // reports end of file or reset, and every bulk mapping of the server's still open file
    // stops showing the region (the extents may serve other connections now): it reads the
    // file's private zero page.
    let mut s_tx = s_tx;
    s_tx.slice_mut().fill(0xAB);
    touch(ro.ptr);
    touch(s_tx.ptr);
    drop(w);
    drop(c);
    let s_nb = s.bulk_recv();
    match s_nb {
        Ok(vmcs_bulk_desc { len: 0, .. }) => {}
        Err(e) if e == libc::ECONNRESET => {}
        other => return Err(format!("RECV after the peer closed: {other:?}")),
    }
    // A new connection takes the freed extents (first fit: the same offsets) and fills
    // them with its own pattern: the old mappings must show neither it nor the old data.
    let (c2, s2) = pair()?;
    c2.set_nonblock(true);
    let _ = c2.bulk_setup(tx as u32, 0);
    c2.set_nonblock(false);
    let ss2 = ok("SETUP (new server)", s2.bulk_setup(ss.tx_size, 5000))?;
    let cs2 = ok("SETUP (new client)", c2.bulk_setup(0, 5000))?;
    let mut n1 = ok("mmap new client", c2.mmap(0, cs2.tx_size as usize, RW, SH))?;
    let mut n2 = ok("mmap new server", s2.mmap(0, ss2.tx_size as usize, RW, SH))?;
    n1.slice_mut().fill(0xC1);
    n2.slice_mut().fill(0xC2);
    for (what, m) in [("peer-extent", &ro), ("own-extent", &s_tx)] {
        let how = zeros_in_child(m.ptr, m.len);
        if how != "zeros" {
            return Err(format!(
                "{what} mapping after teardown (the new connection wrote 0xC1/0xC2, the old data was 0xAB and the word pattern): {how}"
            ));
        }
    }
    // Writing a stale own-extent mapping is harmless: it lands in the private page, never
    // in the region.
    s_tx.slice_mut()[..PAGE].fill(0x5A);
    if n1.slice().iter().any(|&b| b != 0xC1) || n2.slice().iter().any(|&b| b != 0xC2) {
        return Err("a write to a stale mapping reached the new connection's extent".into());
    }
    drop((n1, n2, c2, s2));
    expect_err(
        "mmap after teardown",
        s.mmap(0, PAGE, RO, SH).map(|_| ()),
        libc::ENOTCONN,
    )?;
    // The range still held went back with the connection.
    match s.bulk_release(1) {
        Err(e) if e == libc::EPIPE || e == libc::ECONNRESET => {}
        other => return Err(format!("RELEASE after the end: {other:?}")),
    }
    println!(
        "ENOTCONN before set-up; mmap EINVAL/EACCES rules; SEND EINVAL/EAGAIN; \
         in-place reads; RELEASE; EOF after the peer closed, then its stale mappings read \
         zeros, never the next connection's data"
    );
    Ok(())
}

/// `vmcs_bulk_desc { off, len }`.
fn bd(off: u32, len: u32) -> vmcs_bulk_desc {
    vmcs_bulk_desc { off, len }
}

/// Loopback: the batched ioctls (`BULK_SENDV`, `_RECVV`, `_RELEASEV`): counts, partial
/// completion (the number done, or an errno with nothing done), bounds, and no range lost
/// to a bad buffer.
pub(crate) fn t_bulk_batch() -> Res {
    let (c, s) = pair()?;
    c.set_nonblock(true);
    // 8 pages and 1: both fit in the smallest slice (64 KiB: 4 MiB region, 16 peers).
    let _ = c.bulk_setup(8 * 4096, 0);
    c.set_nonblock(false);
    let ss = ok("SETUP (server)", s.bulk_setup(4096, 5000))?;
    let cs = ok("SETUP (client)", c.bulk_setup(0, 5000))?;
    let tx = cs.tx_size;
    if tx != 8 * 4096 || ss.rx_size != tx {
        return Err(format!("sizes: client {cs:?}, server {ss:?}"));
    }
    let mut zero = [bd(0, 1)];
    expect_err(
        "SENDV count 0",
        c.bulk_vec(VMCS_IOC_BULK_SENDV, &mut zero, 0).map(|_| ()),
        libc::EINVAL,
    )?;
    let mut many = vec![bd(0, 1); 65];
    expect_err(
        "SENDV count 65",
        c.bulk_vec(VMCS_IOC_BULK_SENDV, &mut many, 65).map(|_| ()),
        libc::EINVAL,
    )?;
    let mut bad = vmcs_bulk_vec {
        descs: 8,
        count: 1,
        flags: 0,
    };
    expect_err(
        "SENDV bad pointer",
        c.ioctl(VMCS_IOC_BULK_SENDV, &mut bad).map(|_| ()),
        libc::EFAULT,
    )?;
    let mut flagged = vmcs_bulk_vec {
        descs: zero.as_mut_ptr() as u64,
        count: 1,
        flags: 1,
    };
    expect_err(
        "SENDV flags",
        c.ioctl(VMCS_IOC_BULK_SENDV, &mut flagged).map(|_| ()),
        libc::EINVAL,
    )?;
    expect_err(
        "SENDV first out of bounds",
        c.bulk_sendv(&[bd(tx - 10, 11), bd(0, 1)]).map(|_| ()),
        libc::EINVAL,
    )?;
    let n = ok(
        "SENDV 3",
        c.bulk_sendv(&[bd(0, 4096), bd(4096, 4096), bd(8192, 100)]),
    )?;
    if n != 3 {
        return Err(format!("SENDV of 3 lent {n}"));
    }
    // Partial: the second is out of bounds, then the second overlaps the first.
    let n = ok("SENDV valid+bad", c.bulk_sendv(&[bd(20000, 10), bd(tx, 1)]))?;
    let m = ok(
        "SENDV overlapping itself",
        c.bulk_sendv(&[bd(30000, 10), bd(30005, 10)]),
    )?;
    if (n, m) != (1, 1) {
        return Err(format!("partial SENDVs lent {n} and {m}, want 1 and 1"));
    }
    c.set_nonblock(true);
    expect_err(
        "SENDV first overlapping a lent range",
        c.bulk_sendv(&[bd(50, 10)]).map(|_| ()),
        libc::EAGAIN,
    )?;
    c.set_nonblock(false);
    let want = [
        bd(0, 4096),
        bd(4096, 4096),
        bd(8192, 100),
        bd(20000, 10),
        bd(30000, 10),
    ];
    // A bad buffer loses nothing: the ranges stay queued for the next call.
    let mut badr = vmcs_bulk_vec {
        descs: 8,
        count: 4,
        flags: 0,
    };
    expect_err(
        "RECVV bad pointer",
        s.ioctl(VMCS_IOC_BULK_RECVV, &mut badr).map(|_| ()),
        libc::EFAULT,
    )?;
    let got = ok("RECVV 2", s.bulk_recvv(2))?;
    if got != want[..2] {
        return Err(format!("RECVV 2: {got:?}, want {:?}", &want[..2]));
    }
    let got2 = ok("RECVV 64", s.bulk_recvv(64))?;
    if got2 != want[2..] {
        return Err(format!("RECVV 64: {got2:?}, want {:?}", &want[2..]));
    }
    s.set_nonblock(true);
    expect_err(
        "RECVV nothing queued",
        s.bulk_recvv(8).map(|_| ()),
        libc::EAGAIN,
    )?;
    s.set_nonblock(false);
    // RELEASEV: each must be the oldest held, in order.
    expect_err(
        "RELEASEV not the oldest",
        s.bulk_releasev(&[want[1]]).map(|_| ()),
        libc::EINVAL,
    )?;
    let n = ok("RELEASEV 2", s.bulk_releasev(&want[..2]))?;
    let m = ok("RELEASEV good+bad", s.bulk_releasev(&[want[2], want[4]]))?;
    if (n, m) != (2, 1) {
        return Err(format!("RELEASEVs released {n} and {m}, want 2 and 1"));
    }
    ok("WAIT after RELEASEV", c.bulk_wait(0, 8192 + 100))?;
    ok("RELEASEV the rest", s.bulk_releasev(&want[3..]))?;
    ok("WAIT for everything", c.bulk_wait(0, tx))?;
    // 64 ranges in one call, then no 65th.
    let all: Vec<_> = (0..64).map(|i| bd(i * 512, 512)).collect();
    let n = ok("SENDV 64", c.bulk_sendv(&all))?;
    c.set_nonblock(true);
    expect_err(
        "SENDV a 65th lent range",
        c.bulk_sendv(&[bd(tx - 1, 1)]).map(|_| ()),
        libc::EAGAIN,
    )?;
    c.set_nonblock(false);
    let got = ok("RECVV 64 ranges", s.bulk_recvv(64))?;
    if n != 64 || got != all {
        return Err(format!("SENDV 64 lent {n}, RECVV got {} ranges", got.len()));
    }
    let n = ok("RELEASEV 64", s.bulk_releasev(&got))?;
    ok("WAIT after 64", c.bulk_wait(0, tx))?;
    // The old ioctls still work alongside.
    ok("SEND", c.bulk_send(100, 200))?;
    let d = ok("RECV", s.bulk_recv())?;
    ok("RELEASE", s.bulk_release(1))?;
    if n != 64 || d != bd(100, 200) {
        return Err(format!("RELEASEV 64 released {n}; RECV {d:?}"));
    }
    ok("WAIT", c.bulk_wait(100, 200))?;
    drop(c);
    match s.bulk_recvv(8) {
        Ok(v) if v.is_empty() => {}
        Err(e) if e == libc::ECONNRESET => {}
        other => return Err(format!("RECVV after the peer closed: {other:?}")),
    }
    println!(
        "SENDV/RECVV/RELEASEV: EINVAL/EFAULT with nothing done, partial counts, 64 per call, \
         nothing lost to a bad buffer, EOF"
    );
    Ok(())
}

/// Bytes moved each way in the cross-guest test.
const BULK_TOTAL: usize = 16 << 20;
/// Message size of the write()/read() phase.
const CHUNK: usize = 16 << 10;
/// Largest extent the sender asks for; it halves the request until this guest's slice
/// holds it (docs/protocol.md §8.1).
const BULK_MAX_EXTENT: u32 = 8 << 20;
/// Descriptor size of the bulk phase: the extent in 8 ranges, at most this.
const BULK_MAX_RANGE: usize = 1 << 20;

/// `BULK_SETUP` with the largest extent (a power of two from `max` down) that this guest's
/// slice holds.
pub(crate) fn setup_largest(f: &Fd, max: u32, timeout_ms: u32) -> Result<vmcs_bulk_setup, String> {
    let mut want = max;
    loop {
        match f.bulk_setup(want, timeout_ms) {
            Err(e) if e == libc::EINVAL && want > PAGE as u32 => want /= 2,
            Err(e) => return Err(format!("SETUP {want}: {}", ename(e))),
            Ok(st) => return Ok(st),
        }
    }
}

/// Guest 0: accepts one connection, receives `BULK_TOTAL` bytes by descriptor (batched:
/// `BULK_RECVV`, checked in place, `BULK_RELEASEV`), then the same through read(); answers
/// each phase with a message.
pub(crate) fn bulk_recv(port: u32) -> Res {
    let l = listen_on(port)?;
    let (s, peer) = ok("accept", l.accept(0))?;
    let st = ok("SETUP", s.bulk_setup(4096, 60_000))?;
    println!(
        "bulk set up with {}:{}: tx {} rx {}",
        peer.cid, peer.port, st.tx_size, st.rx_size
    );
    let rx = ok(
        "mmap peer extent",
        s.mmap(st.tx_size as usize, st.rx_size as usize, RO, SH),
    )?;
    let mut got = 0usize;
    let mut i = 0u32;
    let mut range = 0usize;
    let (mut calls, mut most) = (0u32, 0usize);
    let t0 = Instant::now();
    while got < BULK_TOTAL {
        let ds = ok("RECVV", s.bulk_recvv(64))?;
        if ds.is_empty() {
            return Err(format!("end of file after {got} bytes"));
        }
        calls += 1;
        most = most.max(ds.len());
        for d in &ds {
            let len = d.len as usize;
            if range == 0 {
                range = len;
            }
            if len != range || !(d.off as usize).is_multiple_of(range) || !len.is_multiple_of(8) {
                return Err(format!("descriptor {i}: {d:?} (ranges of {range})"));
            }
            let w = &rx.words()[d.off as usize / 8..(d.off as usize + len) / 8];
            if let Some(j) = (0..w.len()).find(|&j| w[j] != word(i, j)) {
                return Err(format!("range {i} word {j} differs"));
            }
            got += len;
            i += 1;
        }
        let n = ok("RELEASEV", s.bulk_releasev(&ds))?;
        if n != ds.len() {
            return Err(format!("RELEASEV released {n} of {}", ds.len()));
        }
    }
    let bulk_t = t0.elapsed();
    ok("ack", s.write(format!("bulk {got}").as_bytes()))?;
    // The same bytes through read().
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0usize;
    let t0 = Instant::now();
    while got < BULK_TOTAL {
        let n = ok("read", s.read(&mut buf))?;
        if n != CHUNK {
            return Err(format!("read {n} bytes, want {CHUNK}"));
        }
        let i = (got / CHUNK) as u32;
        for (j, c) in buf[..n].chunks_exact(8).enumerate() {
            if u64::from_ne_bytes(c.try_into().unwrap()) != word(i, j) {
                return Err(format!("read chunk {i} word {j} differs"));
            }
        }
        got += n;
    }
    let rw_t = t0.elapsed();
    ok("ack", s.write(format!("read {got}").as_bytes()))?;
    let mib = BULK_TOTAL as f64 / (1 << 20) as f64;
    println!(
        "zero-copy bulk: {mib} MiB in {:.2} s ({:.1} MiB/s), extent {} KiB, ranges of {} KiB, {calls} RECVV calls (up to {most} ranges each); write/read: {mib} MiB in {:.2} s ({:.1} MiB/s); same boot, checked in both",
        bulk_t.as_secs_f64(),
        mib / bulk_t.as_secs_f64(),
        st.rx_size >> 10,
        range >> 10,
        rw_t.as_secs_f64(),
        mib / rw_t.as_secs_f64()
    );
    // The sender closes: end of file (or reset) for RECV.
    match s.bulk_recv() {
        Ok(vmcs_bulk_desc { len: 0, .. }) => Ok(()),
        Err(e) if e == libc::ECONNRESET => Ok(()),
        Ok(d) => Err(format!("RECV after the sender closed: {d:?}")),
        Err(e) => Err(format!("RECV after the sender closed: {}", ename(e))),
    }
}

/// Guest 1..: connects, sets up the largest extent its slice holds, cuts it into 8 ranges
/// and lends `BULK_TOTAL` bytes through it, half the extent per `BULK_SENDV` (the other
/// half is being read meanwhile), then writes the same bytes.
pub(crate) fn bulk_send(cid: Option<u32>, port: u32) -> Res {
    let (c, cid) = connect_server(cid, port)?;
    let st = setup_largest(&c, BULK_MAX_EXTENT, 60_000)?;
    let ext = st.tx_size as usize;
    let range = (ext / 8).min(BULK_MAX_RANGE) / PAGE * PAGE;
    if range == 0 {
        return Err(format!("extent of {ext} bytes"));
    }
    let slots = ext / range;
    let half = (slots / 2).max(1);
    let mut tx = ok("mmap own extent", c.mmap(0, ext, RW, SH))?;
    let total = (BULK_TOTAL / range) as u32;
    let t0 = Instant::now();
    let mut i = 0u32;
    let mut calls = 0u32;
    while i < total {
        let first = (i as usize % slots) / half * half;
        let k = half.min(slots - first).min((total - i) as usize);
        let (off, len) = (first * range, k * range);
        // The ranges are ours again once the receiver released them.
        ok("WAIT", c.bulk_wait(off as u32, len as u32))?;
        let mut descs = Vec::with_capacity(k);
        for s in 0..k {
            let o = off + s * range;
            for (j, x) in tx.words_mut()[o / 8..(o + range) / 8]
                .iter_mut()
                .enumerate()
            {
                *x = word(i + s as u32, j);
            }
            descs.push(vmcs_bulk_desc {
                off: o as u32,
                len: range as u32,
            });
        }
        let mut sent = 0;
        while sent < k {
            sent += ok("SENDV", c.bulk_sendv(&descs[sent..]))?;
            calls += 1;
        }
        i += k as u32;
    }
    let mut b = [0u8; 64];
    let n = ok("read ack", c.read(&mut b))?;
    let bulk_t = t0.elapsed();
    if &b[..n] != format!("bulk {}", total as usize * range).as_bytes() {
        return Err(format!("ack: {:?}", String::from_utf8_lossy(&b[..n])));
    }
    let t0 = Instant::now();
    let mut m = vec![0u8; CHUNK];
    for i in 0..(BULK_TOTAL / CHUNK) as u32 {
        for (j, c) in m.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&word(i, j).to_ne_bytes());
        }
        ok("write", c.write(&m))?;
    }
    let n = ok("read ack", c.read(&mut b))?;
    let rw_t = t0.elapsed();
    if &b[..n] != format!("read {BULK_TOTAL}").as_bytes() {
        return Err(format!("ack 2: {:?}", String::from_utf8_lossy(&b[..n])));
    }
    println!(
        "to {cid}:{port}: {} MiB by descriptor in {:.2} s (extent {} KiB, {slots} ranges of {} KiB, {calls} SENDV calls), by write() in {:.2} s",
        BULK_TOTAL >> 20,
        bulk_t.as_secs_f64(),
        ext >> 10,
        range >> 10,
        rw_t.as_secs_f64()
    );
    Ok(())
}

/// `bulk-hold GOFILE`: a loopback connection with bulk set up and both extents mapped on
/// both sides; prints "mapped", waits for GOFILE (the scenario unbinds the device, then
/// creates it), then checks that every mapping now reads zeros (not the pattern it held).
pub(crate) fn bulk_hold(go: &str) -> Res {
    let (c, s) = pair()?;
    c.set_nonblock(true);
    let _ = c.bulk_setup(4096, 0);
    c.set_nonblock(false);
    let ss = ok("SETUP (server)", s.bulk_setup(4096, 5000))?;
    let cs = ok("SETUP (client)", c.bulk_setup(4096, 5000))?;
    let maps = [
        ok("mmap", c.mmap(0, cs.tx_size as usize, RW, SH))?,
        ok(
            "mmap",
            c.mmap(cs.tx_size as usize, cs.rx_size as usize, RO, SH),
        )?,
        ok("mmap", s.mmap(0, ss.tx_size as usize, RW, SH))?,
        ok(
            "mmap",
            s.mmap(ss.tx_size as usize, ss.rx_size as usize, RO, SH),
        )?,
    ];
    let mut maps = maps;
    // Each side fills its own extent; both see their own and the peer's pattern.
    maps[0].slice_mut().fill(0xAB);
    maps[2].slice_mut().fill(0xAB);
    for m in &maps {
        touch(m.ptr);
        let how = touch_in_child(m.ptr);
        if how != "exit 1" {
            return Err(format!("mapping before unbind: child ended with {how}"));
        }
    }
    println!("mapped");
    let t0 = Instant::now();
    while !std::path::Path::new(go).exists() {
        if t0.elapsed().as_secs() > 60 {
            return Err(format!("{go} did not appear"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for m in &maps {
        let how = zeros_in_child(m.ptr, m.len);
        if how != "zeros" {
            return Err(format!("mapping after unbind: {how}"));
        }
    }
    println!("every bulk mapping reads zeros after unbind");
    Ok(())
}

/// Byte `x` of the pattern `vmcs-evil` writes into the first page of its extent (the same
/// function is in userspace-tool/vmcs-evil).
pub(crate) fn evil_pattern(x: usize) -> u8 {
    (x as u8).wrapping_mul(7).wrapping_add(13) ^ (x >> 8) as u8
}

/// Ranges of the well-formed connection of `vmcs-evil`'s bulk phase.
const EVIL_GOOD_RANGES: usize = 4;

/// `bulk-evil PORT STOPFILE`: the bulk-enabled server the hostile peer attacks (scenario
/// `hostile`). Accepts connections one at a time until STOPFILE exists; on each, sets up
/// bulk, maps the peer's extent read-only and receives ranges, holding them; when the
/// first `EVIL_GOOD_RANGES` ranges all carry the evil peer's pattern (checked byte by byte
/// through the mapping) it releases them (the peer sees the `BULK_RELEASE`s). Counts how
/// each connection ended and prints `bulk-evil: resets R good G other O`.
pub(crate) fn bulk_evil(port: u32, stop: &str) -> Res {
    let l = listen_on(port)?;
    let (mut resets, mut good, mut other) = (0u32, 0u32, 0u32);
    loop {
        if l.poll(libc::POLLIN, 100) & libc::POLLIN == 0 {
            if std::path::Path::new(stop).exists() {
                break;
            }
            continue;
        }
        let Ok((s, peer)) = l.accept(0) else {
            continue;
        };
        // Each connection is served by a child: a peer can reset the connection while we
        // read its range in place; the kernel then replaces the mapping by a zero page
        // (docs/uapi.md "Bulk transfer"), so the child reads zeros, not the pattern. A
        // kernel that raised SIGBUS instead would end the child, not the server.
        let end = bulk_evil_child(&s);
        println!("connection from {}:{}: {end}", peer.cid, peer.port);
        match end.as_str() {
            "reset" | "reset (SIGBUS while reading in place)" => resets += 1,
            "good" => good += 1,
            _ => other += 1,
        }
    }
    println!("bulk-evil: resets {resets} good {good} other {other}");
    Ok(())
}

/// [`bulk_evil_conn`] in a child process; its outcome comes back as the exit status.
pub(crate) fn bulk_evil_child(s: &Fd) -> String {
    // SAFETY: this process is single-threaded; the child only runs `bulk_evil_conn` and
    // exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let end = bulk_evil_conn(s);
        let code = match end.as_str() {
            "reset" => 10,
            "good" => 11,
            _ => {
                println!("child: {end}");
                12
            }
        };
        std::process::exit(code);
    }
    if pid < 0 {
        return "fork failed".into();
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer; `pid` is our child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return "waitpid failed".into();
    }
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS {
        return "reset (SIGBUS while reading in place)".into();
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(10) => "reset".into(),
        Some(11) => "good".into(),
        _ => format!("child ended with status {status:#x}"),
    }
}

/// One connection of [`bulk_evil`]: "reset", "good" (the pattern arrived, was released,
/// then end of file) or what else happened.
pub(crate) fn bulk_evil_conn(s: &Fd) -> String {
    let st = match s.bulk_setup(4096, 10_000) {
        Ok(st) => st,
        Err(e) if e == libc::ECONNRESET => return "reset".into(),
        Err(e) => return format!("SETUP: {}", ename(e)),
    };
    let rx = match s.mmap(st.tx_size as usize, st.rx_size as usize, RO, SH) {
        Ok(m) => m,
        // The connection ended between the setup and the mmap (docs/uapi.md: `ENOTCONN`
        // once it is over); a read, which no longer blocks, says whether it was a reset.
        Err(e) if e == libc::ENOTCONN => {
            return match s.read(&mut [0u8; 1]) {
                Err(r) if r == libc::ECONNRESET => "reset".into(),
                r => format!("mmap: ENOTCONN, then read: {r:?}"),
            };
        }
        Err(e) => return format!("mmap: {}", ename(e)),
    };
    let (mut held, mut matched, mut released) = (0usize, 0usize, false);
    loop {
        let d = match s.bulk_recv() {
            Ok(d) => d,
            Err(e) if e == libc::ECONNRESET => return "reset".into(),
            Err(e) => return format!("RECV: {}", ename(e)),
        };
        if d.len == 0 {
            return if released {
                "good".into()
            } else {
                format!("end of file after {held} ranges, {matched} with the pattern")
            };
        }
        let (o, n) = (d.off as usize, d.len as usize);
        // The kernel validated the range against the extent: it is inside the mapping.
        let Some(b) = rx.slice().get(o..o + n) else {
            return format!("range {d:?} outside the {} B mapping", rx.len);
        };
        held += 1;
        if b.iter().enumerate().all(|(i, &v)| v == evil_pattern(o + i)) {
            matched += 1;
        }
        if !released && held == EVIL_GOOD_RANGES && matched == EVIL_GOOD_RANGES {
            if let Err(e) = s.bulk_release(EVIL_GOOD_RANGES as u32) {
                return format!("RELEASE: {}", ename(e));
            }
            released = true;
            held = 0;
        }
    }
}

/// Extent of the crash scenario's bulk connections.
const CRASH_EXTENT: u32 = 64 << 10;

/// `crash-bulk-send CID|auto PORT BYTE`: connects, sets up a 64 KiB extent, fills it with
/// BYTE and lends all of it, prints "bulk-lent", then waits for the peer's message (an
/// incarnation that is killed never gets it) and exits.
pub(crate) fn crash_bulk_send(cid: Option<u32>, port: u32, byte: u8) -> Res {
    let (c, cid) = connect_server(cid, port)?;
    let st = ok("SETUP", c.bulk_setup(CRASH_EXTENT, 60_000))?;
    let mut tx = ok("mmap own extent", c.mmap(0, st.tx_size as usize, RW, SH))?;
    tx.slice_mut().fill(byte);
    ok("SEND", c.bulk_send(0, st.tx_size))?;
    println!("bulk-lent {:#x} to {cid}:{port}", byte);
    let mut b = [0u8; 16];
    let n = ok("read", c.read(&mut b))?;
    println!("peer said {:?}", String::from_utf8_lossy(&b[..n]));
    Ok(())
}

/// `crash-bulk-recv PORT`: guest 0 of the crash scenario. Accepts the first incarnation's
/// bulk connection, maps its extent and checks the 0xA1 fill in place, holding the range;
/// waits for the reset its crash causes; then the stale mapping must read zeros. Accepts
/// the restarted incarnation's connection (plain: the same peer id, so its new extent is in
/// the same slice, likely the same bytes), checks its 0xB2 fill through the new mapping, and
/// the old mapping must still read zeros: never the old data, never the new owner's.
/// Prints CRASH-BULK-ZEROS on success.
pub(crate) fn crash_bulk_recv(port: u32) -> Res {
    let l = listen_on(port)?;
    let (s, peer) = ok("accept", l.accept(0))?;
    let st = ok("SETUP", s.bulk_setup(4096, 60_000))?;
    let old = ok(
        "mmap peer extent",
        s.mmap(st.tx_size as usize, st.rx_size as usize, RO, SH),
    )?;
    let d = ok("RECV", s.bulk_recv())?;
    if d.len != st.rx_size || old.slice().iter().any(|&b| b != 0xA1) {
        return Err(format!(
            "first incarnation's range {d:?} does not hold 0xA1"
        ));
    }
    println!(
        "holding {} B of 0xA1 from {}:{}",
        d.len, peer.cid, peer.port
    );
    // Blocked until the crash is detected.
    match s.bulk_recv() {
        Err(e) if e == libc::ECONNRESET => {}
        other => return Err(format!("RECV after the crash: {other:?}, want ECONNRESET")),
    }
    let how = zeros_in_child(old.ptr, old.len);
    if how != "zeros" {
        return Err(format!("stale mapping after the crash: {how}"));
    }
    let (s2, peer2) = ok("accept (restarted peer)", l.accept(0))?;
    let st2 = ok("SETUP (restarted peer)", s2.bulk_setup(4096, 60_000))?;
    let new = ok(
        "mmap new extent",
        s2.mmap(st2.tx_size as usize, st2.rx_size as usize, RO, SH),
    )?;
    let d2 = ok("RECV (restarted peer)", s2.bulk_recv())?;
    if d2.len != st2.rx_size || new.slice().iter().any(|&b| b != 0xB2) {
        return Err(format!(
            "restarted incarnation's range {d2:?} does not hold 0xB2"
        ));
    }
    let how = zeros_in_child(old.ptr, old.len);
    if how != "zeros" {
        return Err(format!(
            "stale mapping while the restarted peer's extent holds 0xB2: {how}"
        ));
    }
    ok("RELEASE", s2.bulk_release(1))?;
    ok("tell", s2.write(b"done"))?;
    println!(
        "CRASH-BULK-ZEROS: the stale mapping of {}'s extent reads zeros after its crash and \
         while {}:{} fills its new one",
        peer.cid, peer2.cid, peer2.port
    );
    Ok(())
}
