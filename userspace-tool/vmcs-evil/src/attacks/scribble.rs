//! Phase d, scribbling: random bytes into our rings and control lines, continuously.

use std::thread;
use std::time::{Duration, Instant};

use vmcs_proto::ring::ctrl;
use vmcs_proto::shm::Shm;

use crate::peer::Peer;

/// Phase d: random bytes into everything we own, continuously.
pub fn run(p: &mut Peer, ms: u64) {
    let t0 = Instant::now();
    let mut junk = vec![0u8; 512];
    while t0.elapsed() < Duration::from_millis(ms) {
        for i in 0..p.targets.len() {
            let t = p.targets[i];
            let me = p.me.id;
            let Some(ch) = p.chan_out(t) else { continue };
            let (data, rs) = (ch.data_off(), ch.size() as usize);
            let n = 1 + p.rng.below(junk.len() as u64) as usize;
            let at = p.rng.below((rs - n) as u64) as usize;
            p.rng.fill(&mut junk[..n]);
            p.shm.write_bytes(data + at, &junk[..n]);
            let fields = [
                p.ctrl_off(me, t, ctrl::PROD_IDX),
                p.ctrl_off(me, t, ctrl::PROD_EPOCH),
                p.ctrl_off(me, t, ctrl::PROD_WANTS_SPACE),
                p.ctrl_off(me, t, ctrl::RING_OFF),
                p.ctrl_off(me, t, ctrl::RING_SIZE),
                p.ctrl_off(t, me, ctrl::CONS_IDX),
                p.ctrl_off(t, me, ctrl::CONS_ACK),
                p.ctrl_off(t, me, ctrl::CONS_NEED_WAKEUP),
            ];
            let f = fields[p.rng.below(fields.len() as u64) as usize];
            let v = p.rng.u32();
            p.shm.store_u32_release(f, v);
            p.st.garbage += 2;
        }
        p.beat();
        thread::sleep(Duration::from_millis(1));
    }
    p.open_rings();
}
