//! The crypto scenario's programs (qemu-test/scenarios/crypto.sh): encrypted and plaintext
//! AF_VMCS streams of a known pattern (the host scans the region for it), a connect that
//! must be refused, and the receiving and sending ends of the ring byte flip.

use std::mem::size_of;
use std::time::{Duration, Instant};

use libc::{c_int, c_void, socklen_t};
use vmcs_guest_tools::sys::{VMCS_SOL_VMCS, VMCS_SO_ENCRYPT, VMCS_SO_ENCRYPTED};
use vmcs_guest_tools::{errno, strerror, Res};

use crate::sock::{Sock, CID_ANY};

/// The repeating unit of a transfer's pattern; the host hook searches the region for it.
fn unit(tag: &str) -> Vec<u8> {
    format!("vmcs-{tag}-pattern-0123456789abcdef-").into_bytes()
}

fn pattern(tag: &str, len: usize) -> Vec<u8> {
    let u = unit(tag);
    (0..len).map(|i| u[i % u.len()]).collect()
}

fn set_encrypt(s: &Sock, mode: u32) -> Res {
    let v = mode as c_int;
    // SAFETY: `v` is valid for its size.
    let r = unsafe {
        libc::setsockopt(
            s.0,
            VMCS_SOL_VMCS,
            VMCS_SO_ENCRYPT,
            (&v as *const c_int).cast::<c_void>(),
            size_of::<c_int>() as socklen_t,
        )
    };
    if r < 0 {
        return Err(format!("setsockopt VMCS_SO_ENCRYPT: {}", strerror(errno())));
    }
    Ok(())
}

fn encrypted(s: &Sock) -> Res<bool> {
    let mut v: c_int = -1;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: `v` has room for an int.
    let r = unsafe {
        libc::getsockopt(
            s.0,
            VMCS_SOL_VMCS,
            VMCS_SO_ENCRYPTED,
            (&mut v as *mut c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(format!(
            "getsockopt VMCS_SO_ENCRYPTED: {}",
            strerror(errno())
        ));
    }
    Ok(v == 1)
}

fn listen_one(port: u32, mode: u32) -> Res<Sock> {
    let l = Sock::new(libc::SOCK_STREAM)?;
    set_encrypt(&l, mode)?;
    l.bind(CID_ANY, port)?;
    l.listen(4)?;
    let (c, _) = l.accept()?;
    Ok(c)
}

fn connect(cid: u32, port: u32, mode: u32) -> Res<Sock> {
    let s = Sock::new(libc::SOCK_STREAM)?;
    set_encrypt(&s, mode)?;
    s.connect(cid, port)?;
    Ok(s)
}

/// `crypto-serve PORT MODE BYTES TAG`: accept one stream (listener option MODE), read
/// BYTES, check they are TAG's pattern; prints `encrypted 0|1`.
pub fn crypto_serve(port: u32, mode: u32, bytes: usize, tag: &str) -> Res {
    let c = listen_one(port, mode)?;
    println!("encrypted {}", u8::from(encrypted(&c)?));
    let want = pattern(tag, bytes);
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    while got < bytes {
        let n = c.recv(&mut buf, 0);
        if n < 0 {
            return Err(format!("recv after {got} bytes: {}", strerror(errno())));
        }
        if n == 0 {
            return Err(format!("end of stream after {got} of {bytes} bytes"));
        }
        let n = n as usize;
        if buf[..n] != want[got..got + n] {
            return Err(format!("data differs from the pattern at {got}"));
        }
        got += n;
    }
    println!("ok: {bytes} bytes of the {tag} pattern received intact");
    Ok(())
}

/// `crypto-send CID PORT MODE BYTES TAG`: connect (option MODE), send BYTES of TAG's
/// pattern, wait for the peer to close; prints `encrypted 0|1`.
pub fn crypto_send(cid: u32, port: u32, mode: u32, bytes: usize, tag: &str) -> Res {
    let s = connect(cid, port, mode)?;
    println!("encrypted {}", u8::from(encrypted(&s)?));
    let data = pattern(tag, bytes);
    for chunk in data.chunks(65536) {
        let mut off = 0;
        while off < chunk.len() {
            let n = s.send(&chunk[off..], 0);
            if n <= 0 {
                return Err(format!("send: {}", strerror(errno())));
            }
            off += n as usize;
        }
    }
    s.shutdown(libc::SHUT_WR)?;
    let mut b = [0u8; 16];
    // The server closes once it has read everything.
    let _ = s.recv(&mut b, 0);
    println!("ok: sent {bytes} bytes of the {tag} pattern");
    Ok(())
}

/// The errno of a name the scenario passes.
fn errno_of(name: &str) -> Res<c_int> {
    Ok(match name {
        "EACCES" => libc::EACCES,
        "ECONNRESET" => libc::ECONNRESET,
        "ECONNREFUSED" => libc::ECONNREFUSED,
        _ => return Err(format!("unknown errno name {name}")),
    })
}

/// `crypto-refused CID PORT MODE ERRNO`: connect must fail with ERRNO (a name, `EACCES`).
pub fn crypto_refused(cid: u32, port: u32, mode: u32, want: &str) -> Res {
    let s = Sock::new(libc::SOCK_STREAM)?;
    set_encrypt(&s, mode)?;
    let r = s.raw_connect(cid, port)?;
    if r == 0 {
        return Err(format!("connect succeeded, expected {want}"));
    }
    let e = errno();
    if e != errno_of(want)? {
        return Err(format!("connect: {}, expected {want}", strerror(e)));
    }
    println!("ok: connect -> {want}");
    Ok(())
}

/// `crypto-flip-serve PORT`: accept one encrypted stream; its first frame was altered in
/// the ring, so the read must fail with `ECONNRESET` and deliver nothing.
pub fn crypto_flip_serve(port: u32) -> Res {
    let c = listen_one(port, 2)?;
    if !encrypted(&c)? {
        return Err("connection not encrypted".into());
    }
    let mut buf = [0u8; 4096];
    let n = c.recv(&mut buf, 0);
    if n >= 0 {
        return Err(format!(
            "recv returned {n}: the altered frame was delivered"
        ));
    }
    let e = errno();
    if e != libc::ECONNRESET {
        return Err(format!("recv: {}, expected ECONNRESET", strerror(e)));
    }
    println!("ok: the altered frame reset the connection (recv -> ECONNRESET)");
    Ok(())
}

fn wait_file(path: &str, what: &str, secs: u64) -> Res {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(what)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("no {what} in {path} after {secs} s"))
}

/// `crypto-flip-send CID PORT CTL`: connect (require), touch /tmp/flip.ready, wait for
/// `GO` in CTL (the host has stopped the receiver), send one 100-byte message, touch
/// /tmp/flip.sent, then wait for the receiver's reset (`ECONNRESET`).
pub fn crypto_flip_send(cid: u32, port: u32, ctl: &str) -> Res {
    let s = connect(cid, port, 2)?;
    if !encrypted(&s)? {
        return Err("connection not encrypted".into());
    }
    std::fs::write("/tmp/flip.ready", "ready\n").map_err(|e| e.to_string())?;
    wait_file(ctl, "GO", 60)?;
    s.send_all(&pattern("FLIP", 100))?;
    std::fs::write("/tmp/flip.sent", "sent\n").map_err(|e| e.to_string())?;
    let mut b = [0u8; 16];
    let n = s.recv(&mut b, 0);
    let e = errno();
    if n >= 0 || e != libc::ECONNRESET {
        return Err(format!("recv: {n} {}, expected ECONNRESET", strerror(e)));
    }
    println!("ok: the receiver reset the connection (ECONNRESET)");
    Ok(())
}
