//! A plain AF_VSOCK echo with only the family changed.

use std::io::Write;
use std::mem::size_of;
use std::thread;
use std::time::{Duration, Instant};

use libc::{c_int, socklen_t};
use vmcs_guest_tools::fd::sys;
use vmcs_guest_tools::{errno, strerror, Res};

use crate::sock::{check, family, Sock, CID_ANY, PORT_ANY};

pub(crate) fn vsock_family() -> c_int {
    family().unwrap_or(-1)
}

pub(crate) fn vsock_echo_server(port: u32) -> Res {
    // A standard vsock echo server; `AF_VSOCK` is `vsock_family()`.
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        let fd = libc::socket(vsock_family(), libc::SOCK_STREAM, 0);
        let mut sa: libc::sockaddr_vm = std::mem::zeroed();
        sa.svm_family = vsock_family() as libc::sa_family_t;
        sa.svm_cid = libc::VMADDR_CID_ANY;
        sa.svm_port = port;
        let len = size_of::<libc::sockaddr_vm>() as socklen_t;
        sys(
            "bind",
            libc::bind(fd, (&sa as *const libc::sockaddr_vm).cast(), len),
        )?;
        sys("listen", libc::listen(fd, 1))?;
        println!("vsock-echo listening");
        let _ = std::io::stdout().flush();
        let c = sys(
            "accept",
            libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()),
        )?;
        let mut b = [0u8; 4096];
        loop {
            let n = libc::read(c, b.as_mut_ptr().cast(), b.len());
            if n <= 0 || libc::write(c, b.as_ptr().cast(), n as usize) != n {
                break;
            }
        }
        libc::close(c);
        libc::close(fd);
    }
    Ok(())
}

pub(crate) fn vsock_client(port: u32) -> Res {
    // Find the server's cid with the AF_VMCS helper, then talk plain vsock code.
    let probe = Sock::new(libc::SOCK_STREAM)?;
    probe.bind(CID_ANY, PORT_ANY)?;
    let local = probe.name(false)?.svm_cid;
    drop(probe);
    let t0 = Instant::now();
    loop {
        for cid in (0..64).filter(|&c| c != local) {
            // SAFETY: plain syscalls with valid arguments.
            unsafe {
                let fd = libc::socket(vsock_family(), libc::SOCK_STREAM, 0);
                let mut sa: libc::sockaddr_vm = std::mem::zeroed();
                sa.svm_family = vsock_family() as libc::sa_family_t;
                sa.svm_cid = cid;
                sa.svm_port = port;
                let len = size_of::<libc::sockaddr_vm>() as socklen_t;
                if libc::connect(fd, (&sa as *const libc::sockaddr_vm).cast(), len) != 0 {
                    libc::close(fd);
                    continue;
                }
                let msg = b"hello over vsock code";
                libc::write(fd, msg.as_ptr().cast(), msg.len());
                let mut b = [0u8; 64];
                let n = libc::read(fd, b.as_mut_ptr().cast(), b.len());
                println!(
                    "read {n} ({}) {:?}",
                    strerror(errno()),
                    &b[..n.max(0) as usize]
                );
                libc::close(fd);
                return check(
                    &format!("vsock-style echo via cid {cid}"),
                    n as usize == msg.len() && &b[..msg.len()] == msg,
                );
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err("no vsock echo server".into());
        }
        thread::sleep(Duration::from_millis(500));
    }
}
