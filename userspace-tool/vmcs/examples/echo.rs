//! echo: an AF_VMCS echo server and client, written as an ordinary AF_VSOCK program.
//!
//! ```text
//! echo server PORT             accept connections; send every message back
//! echo client CID PORT [TEXT]  send TEXT (default "hello"), print the reply
//! ```
//!
//! This is a vsock(7) program with one change: the address family. Linux has no fixed
//! number for AF_VMCS, so [`af_vmcs`] reads it from `/sys/module/vmcs/parameters/af`
//! (docs/sockets.md) where a vsock program would write `libc::AF_VSOCK`. Everything else,
//! `struct sockaddr_vm`, `VMADDR_CID_ANY`, `SOCK_SEQPACKET`, bind/listen/accept/connect and
//! read/write, is vsock's, unchanged.
//!
//! It speaks the same protocol as examples/c/echo.c (which uses /dev/vmcs): SOCK_SEQPACKET,
//! one message per write and per read, so either one's server works with either client.
//! The `vmcs` crate offers the same as `VmcsListener`/`VmcsStream`; this example shows the
//! bare socket calls.
//!
//! Build: `cargo build --example echo` (in userspace-tool/); for a guest,
//! `cargo build --release --target x86_64-unknown-linux-musl --example echo`.
//! Exit status as the C example: 0 ok, 1 I/O error, 2 usage, 3 no vmcs, 4 peer absent or
//! refused.

use std::io::{self, Write};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

/// The largest message (`VMCS_MAX_MSG_SIZE`).
const MAX_MSG: usize = 64 * 1024;

/// The one change from a vsock program: the address family, `libc::AF_VSOCK` there.
fn af_vmcs() -> io::Result<libc::c_int> {
    let s = std::fs::read_to_string("/sys/module/vmcs/parameters/af").map_err(|e| {
        io::Error::new(
            e.kind(),
            "the vmcs module is not loaded (no /sys/module/vmcs)",
        )
    })?;
    match s.trim().parse() {
        Ok(0) => Err(io::Error::other(
            "vmcs was loaded with af=0: no socket family",
        )),
        Ok(af) => Ok(af),
        Err(_) => Err(io::Error::other(format!("bad af parameter {s:?}"))),
    }
}

/// Fails with the errno of the last call when `r` is negative.
fn cvt<T: Copy + PartialOrd + Default>(r: T) -> io::Result<T> {
    if r < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn socket(af: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; a non-negative result is a new fd we own.
    let fd = cvt(unsafe { libc::socket(af, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh, open descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(af: libc::c_int, cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_vm = unsafe { zeroed() };
    sa.svm_family = af as libc::sa_family_t;
    sa.svm_cid = cid;
    sa.svm_port = port;
    sa
}

const SA_LEN: libc::socklen_t = size_of::<libc::sockaddr_vm>() as libc::socklen_t;

fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    cvt(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
        .map(|n| n as usize)
}

fn write(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: buf is valid for reads of its length.
    let n = cvt(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })?;
    if n as usize == buf.len() {
        Ok(())
    } else {
        Err(io::Error::other("short write"))
    }
}

fn serve(port: u32) -> Result<(), (u8, String)> {
    let af = af_vmcs().map_err(|e| (3, e.to_string()))?;
    let l = socket(af).map_err(|e| (3, format!("socket: {e}")))?;
    let sa = sockaddr(af, libc::VMADDR_CID_ANY, port);
    // SAFETY: sa is a valid sockaddr_vm of SA_LEN bytes.
    cvt(unsafe {
        libc::bind(
            l.as_raw_fd(),
            (&sa as *const libc::sockaddr_vm).cast(),
            SA_LEN,
        )
    })
    .map_err(|e| (1, format!("bind: {e}")))?;
    // SAFETY: listen() takes no pointers.
    cvt(unsafe { libc::listen(l.as_raw_fd(), 16) }).map_err(|e| (1, format!("listen: {e}")))?;
    println!("listening on port {port}");
    let _ = io::stdout().flush();
    let mut buf = vec![0u8; MAX_MSG];
    loop {
        // SAFETY: peer and len are valid for writes; the kernel fills at most len bytes.
        let (c, peer) = unsafe {
            let mut peer: libc::sockaddr_vm = zeroed();
            let mut len = SA_LEN;
            let fd = libc::accept4(
                l.as_raw_fd(),
                (&mut peer as *mut libc::sockaddr_vm).cast(),
                &mut len,
                libc::SOCK_CLOEXEC,
            );
            match cvt(fd) {
                Ok(fd) => (OwnedFd::from_raw_fd(fd), peer),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err((1, format!("accept: {e}"))),
            }
        };
        println!("connection from {}:{}", peer.svm_cid, peer.svm_port);
        let _ = io::stdout().flush();
        loop {
            match read(&c, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = write(&c, &buf[..n]) {
                        eprintln!("echo: write: {e}");
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("echo: read: {e}");
                    break;
                }
            }
        }
    }
}

fn client(cid: u32, port: u32, text: &str) -> Result<(), (u8, String)> {
    if text.len() > MAX_MSG {
        return Err((2, format!("message longer than {MAX_MSG} bytes")));
    }
    let af = af_vmcs().map_err(|e| (3, e.to_string()))?;
    let s = socket(af).map_err(|e| (3, format!("socket: {e}")))?;
    let sa = sockaddr(af, cid, port);
    // SAFETY: sa is a valid sockaddr_vm of SA_LEN bytes.
    let r = unsafe {
        libc::connect(
            s.as_raw_fd(),
            (&sa as *const libc::sockaddr_vm).cast(),
            SA_LEN,
        )
    };
    if let Err(e) = cvt(r) {
        return Err(match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) => (4, format!("peer {cid} is absent")),
            // AF_VMCS says ECONNRESET when nothing listens, as AF_VSOCK does
            // (docs/sockets.md); ECONNREFUSED is /dev/vmcs's and TCP's.
            Some(libc::ECONNRESET | libc::ECONNREFUSED) => {
                (4, format!("nothing listens on {cid}:{port}"))
            }
            _ => (1, format!("connect: {e}")),
        });
    }
    write(&s, text.as_bytes()).map_err(|e| (1, format!("write: {e}")))?;
    let mut buf = vec![0u8; MAX_MSG];
    let n = read(&s, &mut buf).map_err(|e| (1, format!("read: {e}")))?;
    let mut out = io::stdout().lock();
    out.write_all(&buf[..n])
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| (1, format!("stdout: {e}")))?;
    // SAFETY: shutdown() takes no pointers.
    unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let num = |s: &str| s.parse::<u32>().ok();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [_, "server", port] => num(port).map(serve),
        [_, "client", cid, port] => num(cid).zip(num(port)).map(|(c, p)| client(c, p, "hello")),
        [_, "client", cid, port, text] => num(cid).zip(num(port)).map(|(c, p)| client(c, p, text)),
        _ => None,
    };
    match r {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err((code, msg))) => {
            eprintln!("echo: {msg}");
            ExitCode::from(code)
        }
        None => {
            let me = args.first().map_or("echo", String::as_str);
            eprintln!("usage: {me} server PORT | {me} client CID PORT [TEXT]");
            ExitCode::from(2)
        }
    }
}
