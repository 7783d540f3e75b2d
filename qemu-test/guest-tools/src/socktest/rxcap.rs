//! The per-domain receive memory cap (`rxcap-serve`, `rxcap-client`; guest 0 loads vmcs
//! with a small `rx_mem_max_kb`): connections whose reader never reads are reset once
//! their queues pass the cap (`ECONNRESET` at the sender), and the receiver still serves.

use std::thread;
use std::time::{Duration, Instant};

use libc::c_int;
use vmcs_guest_tools::{ename, errno, Res};

use crate::scale::{connect_many, scale_byte};
use crate::sock::{check, Sock, CID_ANY};

/// Bytes each flooding connection sends, well within its (default, 4 MiB) credit: eight
/// of them pass the 1 MiB cap of the test.
const FLOOD_BYTES: usize = 256 * 1024;

/// Guest 0 (`rxcap-serve`): listens on `port` with room for `nconn` connections and never
/// accepts nor reads them; then accepts one on `port + 1`, closes the flood listener (its
/// queued connections are reset, their memory given back), sends one byte and echoes
/// `FLOOD_BYTES` there (which fit under the cap only if the flood's memory was returned).
pub(crate) fn rxcap_serve(port: u32, nconn: usize) -> Res {
    let flood = Sock::new(libc::SOCK_STREAM)?;
    flood.bind(CID_ANY, port)?;
    flood.listen(nconn as c_int + 1)?;
    let fresh = Sock::new(libc::SOCK_STREAM)?;
    fresh.bind(CID_ANY, port + 1)?;
    fresh.listen(1)?;
    let (s, _) = fresh.accept()?;
    drop(flood);
    // The flood's memory is given back: let the fresh connection send.
    s.send_all(b"g")?;
    let mut buf = vec![0u8; FLOOD_BYTES];
    let r = s.recv(&mut buf, libc::MSG_WAITALL);
    check(
        &format!("fresh connection: {r} of {FLOOD_BYTES} bytes read, byte-checked"),
        r == FLOOD_BYTES as isize && buf.iter().enumerate().all(|(k, b)| *b == scale_byte(7, k)),
    )?;
    s.send_all(&buf)?;
    let mut one = [0u8; 1];
    let r = s.recv(&mut one, 0);
    check(&format!("fresh connection: end of file ({r})"), r == 0)
}

/// Guest 1 (`rxcap-client`): `nconn` connections to `rxcap-serve` on `port`, each sending
/// `FLOOD_BYTES` that are never read; some must be reset (`ECONNRESET`). Then a fresh
/// connection to `port + 1`, once the server has closed the flood, is echoed byte-checked.
pub(crate) fn rxcap_client(port: u32, nconn: usize) -> Res {
    let (socks, cid) = connect_many(port, nconn)?;
    let data: Vec<u8> = (0..FLOOD_BYTES).map(|k| scale_byte(7, k)).collect();
    let mut reset = vec![false; nconn];
    for (i, s) in socks.iter().enumerate() {
        let n = s.send(&data, 0);
        if n < 0 {
            let e = errno();
            if e != libc::ECONNRESET {
                return Err(format!("connection {i}: send: {}", ename(e)));
            }
            reset[i] = true;
        }
    }
    // The receiver resets connections as their frames arrive: wait until one is seen.
    let t0 = Instant::now();
    loop {
        let mut b = [0u8; 1];
        for (i, s) in socks.iter().enumerate() {
            if !reset[i] && s.recv(&mut b, libc::MSG_DONTWAIT) < 0 && errno() == libc::ECONNRESET {
                reset[i] = true;
            }
        }
        if reset.iter().any(|r| *r) || t0.elapsed() > Duration::from_secs(60) {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let n = reset.iter().filter(|r| **r).count();
    println!("rxcap: {n} of {nconn} connections reset");
    check(
        &format!("{n} of {nconn} unread connections of {FLOOD_BYTES} bytes reset (ECONNRESET)"),
        n > 0,
    )?;
    drop(socks);
    let s = Sock::new(libc::SOCK_STREAM)?;
    s.connect(cid, port + 1)?;
    let mut go = [0u8; 1];
    let r = s.recv(&mut go, 0);
    check(
        &format!("fresh connection: go byte ({r})"),
        r == 1 && go[0] == b'g',
    )?;
    s.send_all(&data)?;
    s.shutdown(libc::SHUT_WR)?;
    let mut buf = vec![0u8; FLOOD_BYTES];
    let r = s.recv(&mut buf, libc::MSG_WAITALL);
    check(
        &format!("fresh connection echoed {r} of {FLOOD_BYTES} bytes, byte-checked"),
        r == FLOOD_BYTES as isize && buf == data,
    )
}
