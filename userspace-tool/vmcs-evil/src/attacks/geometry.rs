//! Phase g, ring geometry lies: the ring we publish for a guest (`RING_OFF`, `RING_SIZE` in
//! our producer line, docs/protocol.md §4) is out of the region, over the header, the peer
//! table, the channel table, the bulk area or the guest's own transmit area, straddles the
//! end of ours, is not a power of two, too small, too large or misaligned; and, last, it
//! changes after the guest accepted it. Each lie comes with a new epoch: the guest must
//! refuse it (never acknowledge that epoch; it resets us and counts a refused ring), keep
//! the ring it validated when the published one changes without a new epoch, and accept a
//! valid ring again afterwards.

use std::time::{Duration, Instant};

use vmcs_proto::frame::{FrameHeader, Op, SockType};
use vmcs_proto::ring::ctrl;
use vmcs_proto::shm::Shm;

use crate::peer::Peer;
use crate::tap::ok;

/// How long a guest has to acknowledge an epoch. A lie that is still unacknowledged after
/// this is counted as refused (the guest's own `refused` counter, checked by the scenario,
/// says whether it looked at it).
const WAIT: Duration = Duration::from_millis(1000);

/// Publishes ring (`off`, `size`) towards `t` under a new epoch, as `Producer::open` would.
fn publish(p: &Peer, t: u32, off: u64, size: u32) {
    let me = p.me.id;
    p.shm
        .store_u32_relaxed(p.ctrl_off(me, t, ctrl::RING_OFF), off as u32);
    p.shm
        .store_u32_relaxed(p.ctrl_off(me, t, ctrl::RING_SIZE), size);
    let pe = p.ctrl_off(me, t, ctrl::PROD_EPOCH);
    let e = p.shm.load_u32_relaxed(pe).wrapping_add(1).max(1);
    p.shm.store_u32_release(pe, e);
}

/// Pumps until `t` acknowledged our current epoch, for at most `d`.
fn await_ack(p: &mut Peer, t: u32, d: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        p.pump();
        if p.acked(t) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Phase g; whether every check passed.
pub fn run(p: &mut Peer) -> bool {
    let mut all = true;
    let g = p.g;
    let me = p.me.id;
    let Some((mine, mine_len)) = g.tx_area(me) else {
        return false;
    };
    for i in 0..p.targets.len() {
        let t = p.targets[i];
        let Some((theirs, _)) = g.tx_area(t) else {
            continue;
        };
        let mut lies: Vec<(&str, u64, u32)> = vec![
            ("out of the region", g.region_size as u64, 4096),
            (
                "straddling the region's end",
                g.region_size as u64 - 4096,
                8192,
            ),
            ("over the header", 0, 4096),
            ("over the peer table", g.peer_table_off as u64, 4096),
            ("over the channel table", g.chan_table_off as u64, 4096),
            ("in the guest's own transmit area", theirs as u64, 4096),
            (
                "straddling the end of our area",
                (mine + mine_len) as u64 - 4096,
                8192,
            ),
            ("not a power of two", mine as u64, 3 * 4096),
            ("below the minimum ring", mine as u64, 256),
            ("above the maximum ring", mine as u64, 32 << 20),
            ("misaligned", mine as u64 + 32, 4096),
            ("at offset 2^32 - 4 KiB", u64::from(u32::MAX) - 4095, 4096),
        ];
        if g.bulk_size > 0 {
            lies.push(("over the bulk area", g.bulk_off as u64, 4096));
        }
        let mut refused = 0;
        for &(what, off, size) in &lies {
            publish(p, t, off, size);
            let acked = await_ack(p, t, WAIT);
            refused += usize::from(!acked);
            all &= ok(
                !acked,
                format_args!("guest {t} refused a ring {what} ({off:#x}, {size} B)"),
            );
        }
        println!(
            "# phase g: guest {t} refused {refused} of {} lies",
            lies.len()
        );
        // A valid ring, accepted; then the published one changes without a new epoch.
        p.reopen(t);
        let back = await_ack(p, t, Duration::from_secs(10));
        all &= ok(
            back,
            format_args!("guest {t} accepted a valid ring after the lies"),
        );
        p.shm
            .store_u32_relaxed(p.ctrl_off(me, t, ctrl::RING_OFF), 0);
        p.shm
            .store_u32_relaxed(p.ctrl_off(me, t, ctrl::RING_SIZE), 4096);
        let rst0 = p.st.rx[Op::Rst as usize];
        let mut answered = false;
        let t0 = Instant::now();
        while back && t0.elapsed() < Duration::from_secs(10) && !answered {
            let r = FrameHeader::new(Op::Request, SockType::SeqPacket, 4244, 4245);
            p.send(t, r, &[]);
            p.idle(100);
            answered = p.st.rx[Op::Rst as usize] > rst0;
        }
        all &= ok(
            answered,
            format_args!(
                "guest {t} kept reading the ring it validated after ours changed without a new \
                 epoch (RST to a REQUEST)"
            ),
        );
        p.reopen(t);
        all &= ok(
            await_ack(p, t, Duration::from_secs(10)),
            format_args!("guest {t} accepted our ring again"),
        );
    }
    all
}
