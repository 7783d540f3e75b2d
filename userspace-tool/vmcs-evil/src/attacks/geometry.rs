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

/// Pumps until every guest of `ts` acknowledged our current epoch, for at most `d`; which
/// of them did.
fn await_acks(p: &mut Peer, ts: &[u32], d: Duration) -> Vec<bool> {
    let t0 = Instant::now();
    let mut acked = vec![false; ts.len()];
    while t0.elapsed() < d {
        p.pump();
        for (a, &t) in acked.iter_mut().zip(ts) {
            *a |= p.acked(t);
        }
        if acked.iter().all(|&a| a) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    acked
}

/// Pumps until `t` acknowledged our current epoch, for at most `d`.
fn await_ack(p: &mut Peer, t: u32, d: Duration) -> bool {
    await_acks(p, &[t], d)[0]
}

/// A lie: what it is, and the ring offset and size published.
type Lie = (&'static str, u64, u32);

/// The lies told to guest `t` (its own transmit area starts at `theirs`).
fn lies(p: &Peer, theirs: usize) -> Option<Vec<Lie>> {
    let g = p.g;
    let (mine, mine_len) = g.tx_area(p.me.id)?;
    let mut lies: Vec<Lie> = vec![
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
    Some(lies)
}

/// Phase g; whether every check passed. Each lie goes to every guest at once (each in its
/// own ring fields), and every guest gets [`WAIT`] to (wrongly) acknowledge it.
pub fn run(p: &mut Peer) -> bool {
    let mut all = true;
    let me = p.me.id;
    if p.g.tx_area(me).is_none() {
        return false;
    }
    let mut told: Vec<(u32, Vec<Lie>)> = Vec::new();
    for &t in &p.targets {
        if let Some((theirs, _)) = p.g.tx_area(t) {
            if let Some(l) = lies(p, theirs) {
                told.push((t, l));
            }
        }
    }
    let targets: Vec<u32> = told.iter().map(|(t, _)| *t).collect();
    let n = told.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    let mut refused = vec![0usize; told.len()];
    for k in 0..n {
        for (t, l) in &told {
            if let Some(&(_, off, size)) = l.get(k) {
                publish(p, *t, off, size);
            }
        }
        // Every guest's window at once.
        let acked = await_acks(p, &targets, WAIT);
        for (j, (t, l)) in told.iter().enumerate() {
            if let Some(&(what, off, size)) = l.get(k) {
                refused[j] += usize::from(!acked[j]);
                all &= ok(
                    !acked[j],
                    format_args!("guest {t} refused a ring {what} ({off:#x}, {size} B)"),
                );
            }
        }
    }
    for (j, (t, l)) in told.iter().enumerate() {
        println!(
            "# phase g: guest {t} refused {} of {} lies",
            refused[j],
            l.len()
        );
    }
    for &t in &targets {
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
