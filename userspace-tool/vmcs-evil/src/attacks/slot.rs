//! Phase c, slot garbage: generation flapping, bogus states and heartbeat jumps in our own
//! peer slot.

use std::time::{Duration, Instant};

use vmcs_proto::peer::{self, PeerState};
use vmcs_proto::shm::Shm;

use crate::peer::Peer;

/// Phase c: garbage in our own peer slot.
pub fn run(p: &mut Peer, ms: u64) {
    let off = p.g.peer_slot_off(p.me.id).unwrap_or(0);
    p.beating = false;
    let t0 = Instant::now();
    let gen = p.me.gen;
    while t0.elapsed() < Duration::from_millis(ms) {
        let w = match p.rng.below(6) {
            0 | 1 => peer::state_word(gen.wrapping_add(p.rng.u32() % 4), PeerState::Live),
            2 => peer::state_word(gen, PeerState::Joining),
            3 => peer::state_word(gen, PeerState::Leaving),
            4 => peer::state_word(gen, PeerState::Absent),
            _ => p.rng.u32(),
        };
        p.shm.store_u32_release(off + peer::SLOT_STATE, w);
        let hb = if p.rng.below(2) == 0 { p.rng.next() } else { 0 };
        p.shm.store_u64_release(off + peer::SLOT_HEARTBEAT, hb);
        p.st.garbage += 1;
        p.idle(20);
    }
    p.beating = true;
    if !p.rejoin() {
        println!("# could not take the slot back after the garbage");
    }
}
