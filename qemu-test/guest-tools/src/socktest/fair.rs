// SPDX-License-Identifier: GPL-2.0
//! The fairness check of the netdev scenario (qemu-test/scenarios/netdev.sh): AF_VMCS
//! streams on the same rings as a vmcs0 flood, and the reverse. Progress only: the caller
//! asserts that a bounded transfer finished while the other side was still flooding.

use crate::sock::{Sock, CID_ANY};
use std::time::{Duration, Instant};
use vmcs_guest_tools::Res;

/// Accepts `n` stream connections on `port`, one after the other, and reads each to EOF
/// (`FAIR-RX BYTES`).
pub(crate) fn fair_sink(port: u32, n: usize) -> Res {
    let l = Sock::new(libc::SOCK_STREAM)?;
    l.bind(CID_ANY, port)?;
    l.listen(4)?;
    println!("listening");
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..n {
        let (s, a) = l.accept()?;
        let mut got = 0u64;
        loop {
            let r = s.recv(&mut buf, 0);
            if r < 0 {
                return Err(format!("recv after {got} bytes from {}", a.svm_cid));
            }
            if r == 0 {
                break;
            }
            got += r as u64;
        }
        println!("FAIR-RX {got} from cid {}", a.svm_cid);
    }
    Ok(())
}

/// Connects to `cid:port` (retrying for a minute) and sends `bytes`, or with `stop` until
/// that file exists; then closes (`FAIR-TX-DONE BYTES`).
pub(crate) fn fair_send(cid: u32, port: u32, bytes: u64, stop: Option<&str>) -> Res {
    let start = Instant::now();
    let s = loop {
        let s = Sock::new(libc::SOCK_STREAM)?;
        if s.raw_connect(cid, port)? == 0 {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("connect to {cid}:{port} failed for 60 s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("sending");
    let buf = vec![0x5au8; 16 * 1024];
    let mut sent = 0u64;
    loop {
        match stop {
            Some(f) if std::path::Path::new(f).exists() => break,
            None if sent >= bytes => break,
            _ => {}
        }
        let want = match stop {
            Some(_) => buf.len(),
            None => buf.len().min((bytes - sent) as usize),
        };
        s.send_all(&buf[..want])?;
        sent += want as u64;
    }
    s.shutdown(libc::SHUT_WR)?;
    let mut b = [0u8; 1];
    let _ = s.recv(&mut b, 0);
    println!("FAIR-TX-DONE {sent}");
    Ok(())
}
