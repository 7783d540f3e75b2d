//! Phase e, death: we take our slot back cleanly, beat for a second, then stop beating
//! without leaving; a guest must reap our slot.

use std::thread;
use std::time::{Duration, Instant};

use vmcs_proto::peer::{self, PeerState};
use vmcs_proto::shm::Shm;

use crate::peer::Peer;
use crate::tap::ok;

/// Dies and waits up to `reap_secs` for a guest to reap our slot; whether one did.
pub fn run(e: &mut Peer, reap_secs: u64) -> bool {
    e.rejoin();
    e.idle(1000);
    let off = e.g.peer_slot_off(e.me.id).unwrap_or(0);
    let word = peer::state_word(e.me.gen, PeerState::Live);
    println!("# phase e: heartbeat stops now (generation {})", e.me.gen);
    let t = Instant::now();
    let mut reaped = false;
    while t.elapsed() < Duration::from_secs(reap_secs) {
        if e.shm.load_u32_acquire(off + peer::SLOT_STATE) != word {
            reaped = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let now = e.shm.load_u32_acquire(off + peer::SLOT_STATE);
    ok(
        reaped && now & 3 == PeerState::Absent as u32,
        format_args!(
            "a guest reaped our slot {:?} after the heartbeat stopped (state word {now:#x})",
            t.elapsed()
        ),
    )
}
