//! `--fill N`: N well-behaved, idle peers that only occupy slots (the `netdev-ring`
//! scenario, docs/testing.md). A guest opens its rings in the order its peers appear and
//! gives the first three the fair share (docs/protocol.md "Ring placement"), so with three
//! fillers up before it, a guest that joins later gets a floor ring from the guests already
//! there (16 KiB on a 64 MiB region): a peer with a smaller ring than the frame limit,
//! without booting five guests.
//!
//! Each filler claims an id, joins, beats every 100 ms and drains what the guests send it
//! (broadcasts, neighbour discovery). They leave (LEAVING, ABSENT) once no other peer
//! has been live with a moving heartbeat for 3 s (the guests unloaded or powered off),
//! or after `secs` at most (a failure).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::{Duration, Instant};

use vmcs_proto::peer::{self, PeerState};

use crate::peer::Peer;

/// How long no other peer may beat before the fillers leave.
const QUIET: Duration = Duration::from_secs(3);

fn ok(cond: bool, what: impl std::fmt::Display) -> bool {
    println!(
        "{} - filler peers: {what}",
        if cond { "ok" } else { "not ok" }
    );
    cond
}

/// Runs `n` fillers on the region over `words` for at most `secs`; whether all went well.
pub fn run(words: &'static [AtomicU64], n: usize, secs: u64, seed: u64) -> Result<bool, String> {
    let mut fills = Vec::new();
    for i in 0..n {
        let f = Peer::join(words, seed.wrapping_add(i as u64), 0..0, None)?;
        fills.push(f);
    }
    let ids: Vec<u32> = fills.iter().map(|f| f.me.id).collect();
    let mut all = ok(
        fills.len() == n,
        format_args!("{n} joined as peers {ids:?}"),
    );
    let t0 = Instant::now();
    // Heartbeat of every other slot when it last moved.
    let mut seen: HashMap<u32, (u64, Instant)> = HashMap::new();
    let mut last_alive = Instant::now();
    let mut evicted = 0;
    let quiet = loop {
        for f in fills.iter_mut() {
            f.pump();
        }
        let g = fills[0].g;
        let mut others = Vec::new();
        for p in (0..g.max_peers).filter(|p| !ids.contains(p)) {
            let Ok(s) = peer::snapshot(&fills[0].shm, &g, p) else {
                continue;
            };
            if s.state != PeerState::Live {
                seen.remove(&p);
                continue;
            }
            let e = seen.entry(p).or_insert((s.heartbeat, Instant::now()));
            if e.0 != s.heartbeat {
                *e = (s.heartbeat, Instant::now());
            }
            if e.1.elapsed() < QUIET {
                last_alive = Instant::now();
                others.push(p);
            }
        }
        // Drain every live guest's ring to us, also of guests that came after us.
        for f in fills.iter_mut() {
            f.targets = others.clone();
            evicted = evicted.max(f.st.evicted);
        }
        if last_alive.elapsed() >= QUIET {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            break false;
        }
        thread::sleep(Duration::from_millis(10));
    };
    all &= ok(
        quiet,
        format_args!(
            "the guests went away after {:?} (at most {secs} s)",
            t0.elapsed()
        ),
    );
    all &= ok(
        evicted == 0,
        format_args!("no filler was reaped while it beat ({evicted} evictions)"),
    );
    for f in fills.iter() {
        let _ = peer::leave_begin(&f.shm, &f.g, &f.me);
        let _ = peer::leave_complete(&f.shm, &f.g, &f.me);
    }
    println!(
        "# filler peers: received {:?} frames by op",
        fills.iter().fold([0u64; 16], |mut a, f| {
            a.iter_mut().zip(f.st.rx.iter()).for_each(|(x, y)| *x += y);
            a
        })
    );
    Ok(all)
}
