//! `soak`: a long, pipelined, pattern-checked echo exchange with `serve`.

use std::thread;
use std::time::{Duration, Instant};

use vmcs_guest_tools::{ename, Res};

use crate::cross::connect_server;
use crate::{ok, pattern, MAX_MSG};

/// Message `i` of the soak exchange: sequence number, then a pattern, 4 B .. 64 KiB.
pub(crate) fn soak_msg(i: u32) -> Vec<u8> {
    const LENS: [usize; 9] = [4, 5, 33, 250, 1000, 4000, 8200, 20000, MAX_MSG];
    let len = LENS[i as usize % LENS.len()];
    let mut m = i.to_le_bytes().to_vec();
    m.extend(pattern(i, len - 4));
    m
}

/// `soak CID|auto PORT STOP`: against `serve`, a writer thread sends [`soak_msg`]s until the
/// file STOP exists (or, if STOP is a number, that many), then shuts down its sending side;
/// a reader thread checks every echo byte by byte, in order, until EOF. Prints `soaking`
/// once 20 messages came back intact.
pub(crate) fn soak(cid: Option<u32>, port: u32, stop: &str) -> Res {
    let (c, cid) = connect_server(cid, port)?;
    let count: Option<u32> = stop.parse().ok();
    let t0 = Instant::now();
    let (sent, got, bytes, gap) = thread::scope(|sc| {
        let c = &c;
        let writer = sc.spawn(move || -> Res<u32> {
            let mut i = 0u32;
            loop {
                let done = match count {
                    Some(n) => i >= n,
                    None => i >= 20 && std::path::Path::new(stop).exists(),
                };
                if done || t0.elapsed() > Duration::from_secs(300) {
                    break;
                }
                ok("write", c.write(&soak_msg(i)))?;
                i += 1;
            }
            ok("shutdown", c.shutdown(1))?;
            Ok(i)
        });
        let mut buf = vec![0u8; MAX_MSG];
        let mut got = 0u32;
        let mut bytes = 0u64;
        let mut last = Instant::now();
        let mut gap = Duration::ZERO;
        let r: Res = loop {
            let n = match c.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(format!("read after {got} messages: {}", ename(e))),
            };
            let want = soak_msg(got);
            if buf[..n] != want[..] {
                break Err(format!(
                    "echo {got}: {n} bytes, want {}: corrupt, lost or reordered",
                    want.len()
                ));
            }
            got += 1;
            bytes += n as u64;
            gap = gap.max(last.elapsed());
            last = Instant::now();
            if got == 20 {
                println!("soaking with {cid}:{port}");
            }
        };
        let sent = writer.join().map_err(|_| "writer panicked".to_string())??;
        r.map(|()| (sent, got, bytes, gap))
    })?;
    if sent != got {
        return Err(format!("sent {sent} messages, {got} came back"));
    }
    println!(
        "{got} messages ({bytes} bytes) echoed intact by {cid}:{port} in {:?}; longest wait \
         for an echo {gap:?}",
        t0.elapsed()
    );
    // For the scenario's starvation check (hostile on doorbell): bytes echoed per second.
    println!(
        "SOAK-RATE {}",
        (bytes as f64 / t0.elapsed().as_secs_f64().max(1e-3)) as u64
    );
    Ok(())
}
