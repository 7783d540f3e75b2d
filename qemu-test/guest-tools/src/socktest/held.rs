// SPDX-License-Identifier: GPL-2.0
//! Receive by reference with a slow reader (`held-serve`, `held-client`; sockets
//! scenario): frames stay in the ring until their reader copies them out, so a reader that
//! does not read would pin the ring for every other connection on it. Guest 1 sends
//! `SLOW_BYTES` on connection A, which guest 0 does not read, then `FAST_BYTES` (several
//! rings' worth) on connection B on the same ring, which guest 0 reads at once: B must
//! complete (A's held frames copied out of the ring, debugfs `rx_copied_out`), and A's
//! bytes must still be all there, in order, when guest 0 finally reads them.

use std::fs;

use vmcs_guest_tools::Res;

use crate::cross::find_server;
use crate::options::set_timeo;
use crate::scale::scale_byte;
use crate::sock::{check, Sock, CID_ANY};

/// Bytes on the connection nobody reads until the other one is done (within its credit:
/// the sender is never blocked on it).
const SLOW_BYTES: usize = 512 * 1024;
/// Bytes on the connection read at once: four times the 1 MiB ring of the harness.
const FAST_BYTES: usize = 4 * 1024 * 1024;

fn pattern(i: u32, n: usize) -> Vec<u8> {
    (0..n).map(|k| scale_byte(i, k)).collect()
}

/// A counter of debugfs `rings` on the line of `peer`.
fn rings_field(peer: u32, name: &str) -> Option<u64> {
    let text = fs::read_to_string("/sys/kernel/debug/vmcs/vmcs0/rings").ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("peer {peer} ")))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == name {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// Reads exactly `n` bytes and checks them against pattern `i`.
fn read_checked(s: &Sock, i: u32, n: usize, what: &str) -> Res {
    let mut buf = vec![0u8; n];
    let r = s.recv(&mut buf, libc::MSG_WAITALL);
    check(
        &format!("{what}: {r} of {n} bytes read, byte-checked"),
        r == n as isize && buf.iter().enumerate().all(|(k, b)| *b == scale_byte(i, k)),
    )
}

/// Guest 0: accepts A then B on `port`; reads B in full first (30 s receive timeout),
/// checks the copy-out counters, then reads A in full, and acknowledges on B.
pub(crate) fn held_serve(port: u32) -> Res {
    let l = Sock::new(libc::SOCK_STREAM)?;
    l.bind(CID_ANY, port)?;
    l.listen(2)?;
    let (a, peer) = l.accept()?;
    let (b, _) = l.accept()?;
    let peer = peer.svm_cid;
    let out0 = rings_field(peer, "rx_copied_out").unwrap_or(0);
    set_timeo(&b, libc::SO_RCVTIMEO, 30_000)?;
    read_checked(&b, 2, FAST_BYTES, "connection B, read at once")?;
    let held = rings_field(peer, "rx_held_frames").unwrap_or(0);
    let out = rings_field(peer, "rx_copied_out").unwrap_or(0);
    let forced = rings_field(peer, "rx_held_forced").unwrap_or(0);
    println!(
        "held: rx_held_frames {held} rx_copied_out {out} (was {out0}) rx_held_forced {forced}"
    );
    check(&format!("frames received by reference ({held})"), held > 0)?;
    check(
        &format!("the unread connection's frames were copied out of the ring ({out})"),
        out > out0,
    )?;
    check(&format!("no held frame dropped ({forced})"), forced == 0)?;
    set_timeo(&a, libc::SO_RCVTIMEO, 30_000)?;
    read_checked(&a, 1, SLOW_BYTES, "connection A, read last")?;
    b.send_all(b"k")?;
    let mut one = [0u8; 1];
    check("connection A: end of file", a.recv(&mut one, 0) == 0)?;
    check("connection B: end of file", b.recv(&mut one, 0) == 0)
}

/// Guest 1: A sends `SLOW_BYTES`, then B on the same ring sends `FAST_BYTES`; waits for
/// guest 0's acknowledgement on B.
pub(crate) fn held_client(port: u32) -> Res {
    let (a, cid) = find_server(libc::SOCK_STREAM, port)?;
    a.send_all(&pattern(1, SLOW_BYTES))?;
    let b = Sock::new(libc::SOCK_STREAM)?;
    b.connect(cid, port)?;
    set_timeo(&b, libc::SO_SNDTIMEO, 60_000)?;
    b.send_all(&pattern(2, FAST_BYTES))?;
    set_timeo(&b, libc::SO_RCVTIMEO, 60_000)?;
    let mut k = [0u8; 1];
    let r = b.recv(&mut k, 0);
    check(
        &format!("guest 0 read the fast connection while the slow one waited, then both ({r})"),
        r == 1 && k[0] == b'k',
    )
}
