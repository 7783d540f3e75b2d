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
    // Then the end of the stream: on an encrypted connection the peer's SHUTDOWN is
    // authenticated (its tag verified), so this also shows a good one is accepted.
    let n = c.recv(&mut buf, 0);
    if n != 0 {
        return Err(format!(
            "after {bytes} bytes: recv {n} ({}), expected end of file",
            strerror(errno())
        ));
    }
    println!("ok: {bytes} bytes of the {tag} pattern received intact, then end of file");
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

/// What the host does to an encrypted stream while the receiver is stopped
/// (qemu-test/crypto-host.py): the sender's part of it, and how many bytes the receiver
/// must still get intact before the reset.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tamper {
    /// One 100-byte message; the host flips a ciphertext byte: nothing is delivered.
    Flip,
    /// Two 100-byte messages; the host copies the first frame over the second (a replay):
    /// the first is delivered, the copy resets.
    Replay,
    /// A 100-byte message, a 1-byte one, then `SHUT_WR`; the host moves the `SHUTDOWN`
    /// over the 1-byte frame (same ring record size), dropping it: the first message is
    /// delivered, the early `SHUTDOWN` resets instead of ending the stream short.
    Trunc,
}

impl Tamper {
    fn parse(s: &str) -> Res<Self> {
        Ok(match s {
            "flip" => Tamper::Flip,
            "replay" => Tamper::Replay,
            "trunc" => Tamper::Trunc,
            _ => return Err(format!("unknown tamper kind {s} (flip, replay, trunc)")),
        })
    }

    /// Bytes the receiver gets intact before the reset.
    fn good(self) -> usize {
        match self {
            Tamper::Flip => 0,
            Tamper::Replay | Tamper::Trunc => 100,
        }
    }
}

/// `crypto-victim PORT KIND`: accept one encrypted stream (listener `require`), read; the
/// host tampers with it in the ring (KIND: flip, replay, trunc), so at most KIND's good
/// bytes may arrive (intact), then the read must fail with `ECONNRESET`: neither the
/// altered bytes nor an end of file (a silently truncated stream) may be seen.
pub fn crypto_victim(port: u32, kind: &str) -> Res {
    let kind = Tamper::parse(kind)?;
    let c = listen_one(port, 2)?;
    if !encrypted(&c)? {
        return Err("connection not encrypted".into());
    }
    let want = pattern("TAMPER", 256);
    let mut got = 0usize;
    let mut buf = [0u8; 4096];
    loop {
        let n = c.recv(&mut buf, 0);
        if n < 0 {
            let e = errno();
            if e != libc::ECONNRESET {
                return Err(format!(
                    "recv after {got} bytes: {}, expected ECONNRESET",
                    strerror(e)
                ));
            }
            break;
        }
        if n == 0 {
            return Err(format!(
                "end of file after {got} bytes: the stream ended short without a reset"
            ));
        }
        let n = n as usize;
        if got + n > kind.good() || buf[..n] != want[got..got + n] {
            return Err(format!(
                "recv {n} bytes after {got}: tampered data was delivered"
            ));
        }
        got += n;
    }
    // The reset may drop good bytes not yet read (as a TCP RST does): `got` is at most the
    // good part, and what came was intact.
    println!("ok: {got} good bytes, then the tampered frame reset the connection (ECONNRESET)");
    Ok(())
}

fn wait_file(path: &str, what: &str, secs: u64) -> Res {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(what)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("no {what} in {path} after {secs} s"))
}

/// `crypto-tamper CID PORT KIND CTL`: connect (`require`), write /tmp/KIND.ready, wait for
/// `GO-KIND` in CTL (the host has stopped the receiver), send KIND's frames (see
/// [`Tamper`]), write /tmp/KIND.sent, then wait for the receiver's reset (`ECONNRESET`).
pub fn crypto_tamper(cid: u32, port: u32, kind_name: &str, ctl: &str) -> Res {
    let kind = Tamper::parse(kind_name)?;
    let s = connect(cid, port, 2)?;
    if !encrypted(&s)? {
        return Err("connection not encrypted".into());
    }
    let ready = format!("/tmp/{kind_name}.ready");
    std::fs::write(&ready, "ready\n").map_err(|e| e.to_string())?;
    wait_file(ctl, &format!("GO-{}", kind_name.to_uppercase()), 120)?;
    let data = pattern("TAMPER", 256);
    match kind {
        Tamper::Flip => s.send_all(&data[..100])?,
        Tamper::Replay => {
            s.send_all(&data[..100])?;
            s.send_all(&data[100..200])?;
        }
        Tamper::Trunc => {
            s.send_all(&data[..100])?;
            s.send_all(&data[100..101])?;
            s.shutdown(libc::SHUT_WR)?;
        }
    }
    std::fs::write(format!("/tmp/{kind_name}.sent"), "sent\n").map_err(|e| e.to_string())?;
    let mut b = [0u8; 16];
    let n = s.recv(&mut b, 0);
    let e = errno();
    if n >= 0 || e != libc::ECONNRESET {
        return Err(format!("recv: {n} {}, expected ECONNRESET", strerror(e)));
    }
    println!("ok: the receiver reset the connection (ECONNRESET)");
    Ok(())
}
