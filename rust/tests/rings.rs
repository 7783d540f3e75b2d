//! Protocol v2 geometry: per-slot transmit areas, the producer's ring allocator, the ring a
//! producer publishes and the consumer's validation of it (docs/protocol.md §1, §4).
mod common;

use common::{region, rw};
use proptest::prelude::*;
use vmcs_proto::bulk;
use vmcs_proto::host::SliceShm;
use vmcs_proto::layout::{self, Geometry, InitConfig, MAX_RING_SIZE, MIN_RING_SIZE, PAGE};
use vmcs_proto::ring::{
    close_producer, ctrl, BadRing, Channel, Consumer, Producer, RingAlloc, RingError, Site,
};
use vmcs_proto::shm::Shm;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The module's default geometry for a region: 16 slots, 25 % bulk area.
fn default_geometry(region: usize) -> Geometry {
    let b = bulk::initial_size(region, 16, 25);
    Geometry::compute(region, 16, b).unwrap()
}

/// Ring sizes producer 0 gives consumers 1..live, opened in that order.
fn rings_for(g: &Geometry, live: u32) -> Vec<u32> {
    let mut a = RingAlloc::new(g, 0).unwrap();
    (1..live).map(|p| a.alloc(g, p).unwrap().size()).collect()
}

fn fmt(b: u32) -> String {
    match b as usize {
        b if b >= MIB => format!("{} MiB", b / MIB),
        b if b >= KIB => format!("{} KiB", b / KIB),
        b => format!("{b} B"),
    }
}

/// The table in docs/protocol.md §1 ("Ring sizes"): region 4/16/64/256 MiB, default
/// parameters, 2/4/8/16 live peers; each entry is the largest and smallest ring one
/// producer has open. Printed with `--nocapture`; the figures the issue asks for asserted.
#[test]
fn ring_size_table() {
    for r in [4, 16, 64, 256] {
        let g = default_geometry(r * MIB);
        let mut row = format!("| {r} MiB | {} KiB |", g.area_size / KIB);
        for live in [2, 4, 8, 16] {
            let v = rings_for(&g, live);
            let (max, min) = (*v.iter().max().unwrap(), *v.iter().min().unwrap());
            row += &if max == min {
                format!(" {} |", fmt(max))
            } else {
                format!(" {} .. {} |", fmt(max), fmt(min))
            };
        }
        println!("{row}");
    }
    let g = default_geometry(64 * MIB);
    // Two and three guests: 1 MiB each way per pair; frames of 64 KiB.
    assert_eq!(rings_for(&g, 2), [1 << 20]);
    assert_eq!(rings_for(&g, 3), [1 << 20, 1 << 20]);
    // Four: the fair share, 1 MiB, for the fourth pair too (the initializer's bulk area,
    // 13248 KiB, leaves 3264 KiB transmit areas: three 1 MiB rings and a 16 KiB floor for
    // each other slot).
    assert_eq!(g.bulk_size, 13248 * KIB);
    assert_eq!(g.area_size, 3264 * KIB);
    assert_eq!(rings_for(&g, 4), [1 << 20, 1 << 20, 1 << 20]);
    // A fifth and later peers share what is left, never less than the floor.
    assert_eq!(rings_for(&g, 6)[3..], [16 << 10, 16 << 10]);
    let mut a = RingAlloc::new(&g, 0).unwrap();
    assert_eq!(a.alloc(&g, 1).unwrap().max_payload(), 64 << 10);
    // Every producer of the four gives each of the others 1 MiB, whatever its id and the
    // order in which the others appear.
    for me in 0..4u32 {
        for order in [[0u32, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
            let mut a = RingAlloc::new(&g, me).unwrap();
            for to in order.into_iter().filter(|&p| p != me) {
                assert_eq!(a.alloc(&g, to).unwrap().size(), 1 << 20, "{me} {order:?}");
            }
        }
    }
    // A peer that leaves gives its ring back (closed, then freed); the next one to join
    // gets the same share in that space, and the rings still open never move.
    let mut a = RingAlloc::new(&g, 0).unwrap();
    let (r1, r2, r3) = (
        a.alloc(&g, 1).unwrap(),
        a.alloc(&g, 2).unwrap(),
        a.alloc(&g, 3).unwrap(),
    );
    a.free(2);
    let r7 = a.alloc(&g, 7).unwrap();
    assert_eq!((r7.size(), r7.data_off()), (r2.size(), r2.data_off()));
    assert_eq!((a.get(&g, 1), a.get(&g, 3)), (Some(r1), Some(r3)));
    // The other region sizes: the fourth pair gets the first pair's ring.
    for (r, share) in [(4, 64 * KIB), (16, 256 * KIB), (256, 4 * MIB)] {
        let g = default_geometry(r * MIB);
        assert_eq!(rings_for(&g, 4), [share as u32; 3], "{r} MiB");
    }
    // Sixteen: every slot still has a ring.
    assert_eq!(rings_for(&g, 16).len(), 15);
    assert!(rings_for(&g, 16)
        .iter()
        .all(|&s| s as usize >= MIN_RING_SIZE));
}

/// The smallest regions still give every slot a minimum ring.
#[test]
fn small_regions_join_with_small_rings() {
    for (region, peers) in [(64 * KIB, 2u32), (256 * KIB, 16), (4 * MIB, 64), (MIB, 16)] {
        let b = bulk::initial_size(region, peers, 25);
        let g = Geometry::compute(region, peers, b).unwrap();
        for me in 0..peers {
            let mut a = RingAlloc::new(&g, me).unwrap();
            for to in (0..peers).filter(|&p| p != me) {
                let ch = a.alloc(&g, to).unwrap();
                assert!(ch.size() as usize >= MIN_RING_SIZE);
                assert!(ch.max_payload() > 0);
            }
        }
    }
}

/// Every ring the allocator hands out is one the consumer accepts, and the rings of one
/// producer never overlap, whatever the order of opens and frees.
fn check_alloc(g: &Geometry, me: u32, ops: &[(bool, u32)]) {
    let mut a = RingAlloc::new(g, me).unwrap();
    let n = g.max_peers;
    for &(open, to) in ops {
        let to = to % n;
        if to == me {
            continue;
        }
        if open {
            let ch = a
                .alloc(g, to)
                .expect("the reservation always leaves a minimum ring");
            let site = Site::new(g, me, to).unwrap();
            assert_eq!(site.channel(ch.data_off() as u64, ch.size()), Ok(ch));
        } else {
            a.free(to);
        }
        let rings: Vec<Channel> = (0..n).filter_map(|p| a.get(g, p)).collect();
        for (i, x) in rings.iter().enumerate() {
            for y in &rings[i + 1..] {
                let (xa, xb) = (x.data_off(), x.data_off() + x.size() as usize);
                let (ya, yb) = (y.data_off(), y.data_off() + y.size() as usize);
                assert!(xb <= ya || yb <= xa, "{x:?} overlaps {y:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn alloc_never_overlaps(region_mib in prop::sample::select(vec![1usize, 4, 64]),
                            peers in 2u32..=16,
                            ops in proptest::collection::vec((any::<bool>(), 0u32..64), 1..80)) {
        let region = region_mib * MIB;
        let b = bulk::initial_size(region, peers, 25);
        if let Ok(g) = Geometry::compute(region, peers, b) {
            check_alloc(&g, peers / 2, &ops);
        }
    }

    /// Whatever a producer publishes, a ring the consumer accepts lies inside the
    /// producer's transmit area, is a power of two between the limits and aligned.
    #[test]
    fn site_accepts_only_rings_in_the_area(off in any::<u32>(), size in any::<u32>(),
                                           pick in 0u32..6) {
        let g = default_geometry(64 * MIB);
        let (a, l) = g.tx_area(3).unwrap();
        // Bias towards the interesting edges.
        let off = match pick {
            0 => a as u32 + (off % l as u32),
            1 => (a + l) as u32 - (off % 8192),
            _ => off,
        };
        let size = if pick == 2 { 1 << (size % 26) } else { size };
        let site = Site::new(&g, 3, 5).unwrap();
        if let Ok(ch) = site.channel(u64::from(off), size) {
            let (d, s) = (ch.data_off(), ch.size() as usize);
            prop_assert!(d >= a && d + s <= a + l);
            prop_assert!(s.is_power_of_two() && (MIN_RING_SIZE..=MAX_RING_SIZE).contains(&s));
            prop_assert_eq!(d % s.min(PAGE), 0);
            prop_assert!(d >= g.ring_data_off && d + s <= g.bulk_off);
        }
    }
}

#[test]
fn site_refuses_each_lie() {
    let g = default_geometry(64 * MIB);
    let (a, l) = g.tx_area(2).unwrap();
    let (other, _) = g.tx_area(1).unwrap();
    let site = Site::new(&g, 2, 1).unwrap();
    let a64 = a as u64;
    for (off, size, why) in [
        (g.region_size as u64, 4096, BadRing::OutsideArea),
        (0, 4096, BadRing::OutsideArea),
        (g.peer_table_off as u64, 4096, BadRing::OutsideArea),
        (g.chan_table_off as u64, 4096, BadRing::OutsideArea),
        (g.bulk_off as u64, 4096, BadRing::OutsideArea),
        (other as u64, 4096, BadRing::OutsideArea),
        ((a + l) as u64 - 4096, 8192, BadRing::OutsideArea),
        (a64, 3 * 4096, BadRing::NotPowerOfTwo),
        (a64, 0, BadRing::NotPowerOfTwo),
        (a64, 256, BadRing::Size),
        (a64, 32 << 20, BadRing::Size),
        (a64 + 32, 4096, BadRing::Misaligned),
        (a64 + 512, 1024, BadRing::Misaligned),
        (u64::MAX - 4095, 4096, BadRing::OutsideArea),
    ] {
        assert_eq!(site.channel(off, size), Err(why), "{off:#x} {size}");
    }
    assert!(site.channel(a64, 4096).is_ok());
    assert!(site.channel(a64 + 512, 512).is_ok());
    assert!(site.channel((a + l) as u64 - 8192, 8192).is_ok());
}

/// Two peers over a real region: the consumer sees no ring until the producer opens one,
/// accepts the published ring, refuses a lie (never acknowledging it), keeps the ring it
/// validated when the published one changes without a new epoch, follows a close, and
/// accepts a valid ring again.
#[test]
fn consumer_reads_the_published_ring_once_per_epoch() {
    let mem = region(4 * MIB);
    let shm = SliceShm::new(&mem);
    let cfg = InitConfig {
        max_peers: 4,
        bulk_size: 0,
        my_id: 0,
        region_id: 0,
    };
    let g = layout::attach(&shm, &cfg, 10, 3, || {}).unwrap().geometry();
    let site = Site::new(&g, 1, 0).unwrap();
    let (mut c, _) = Consumer::attach(&shm, site);
    assert!(!c.is_open());
    assert_eq!(c.peek(&shm), Ok(None));
    let mut alloc = RingAlloc::new(&g, 1).unwrap();
    let ch = alloc.alloc(&g, 0).unwrap();
    let (mut p, _) = Producer::open(&shm, ch);
    // A new epoch: the consumer resyncs, reads and accepts the ring.
    assert!(matches!(c.peek(&shm), Err(RingError::Restarted { .. })));
    c.resync(&shm);
    assert!(c.is_open());
    assert_eq!(c.channel(), ch);
    p.send(&shm, &rw(5), b"hello").unwrap();
    let f = c.peek(&shm).unwrap().unwrap();
    assert_eq!(f.hdr.len, 5);
    c.consume(&shm, &f);

    // The published ring changes without a new epoch: ignored.
    let at = |f| ch.ctrl_off() + f;
    shm.store_u32_relaxed(at(ctrl::RING_OFF), 0);
    shm.store_u32_relaxed(at(ctrl::RING_SIZE), 4096);
    p.send(&shm, &rw(3), b"abc").unwrap();
    let f = c.peek(&shm).unwrap().unwrap();
    assert_eq!(f.hdr.len, 3);
    c.consume(&shm, &f);

    // The same lie under a new epoch: refused, not acknowledged, nothing read.
    let e = shm.load_u32_relaxed(at(ctrl::PROD_EPOCH)) + 1;
    shm.store_u32_release(at(ctrl::PROD_EPOCH), e);
    assert!(matches!(c.peek(&shm), Err(RingError::Restarted { .. })));
    c.resync(&shm);
    assert!(!c.is_open());
    assert_eq!(c.ring_error(), Some(BadRing::OutsideArea));
    assert_ne!(shm.load_u32_relaxed(at(ctrl::CONS_ACK)), e);
    assert_eq!(c.peek(&shm), Ok(None));
    // A consumer without a ring may sleep; only a new epoch wakes it.
    assert_eq!(
        c.prepare_sleep(&shm),
        vmcs_proto::ring::SleepCheck::MaySleep
    );

    // A valid re-open is accepted again.
    let (mut p, _) = Producer::open(&shm, ch);
    assert!(matches!(c.peek(&shm), Err(RingError::Restarted { .. })));
    c.resync(&shm);
    assert!(c.is_open() && c.ring_error().is_none());
    p.send(&shm, &rw(1), b"x").unwrap();
    let f = c.peek(&shm).unwrap().unwrap();
    c.consume(&shm, &f);

    // Close: "no ring" under a new epoch; the consumer stops reading.
    close_producer(&shm, &ch);
    alloc.free(0);
    assert!(matches!(c.peek(&shm), Err(RingError::Restarted { .. })));
    c.resync(&shm);
    assert!(!c.is_open() && c.ring_error().is_none());
    assert_eq!(c.peek(&shm), Ok(None));
}

/// The rings one producer gives 15 consumers in the order they appear (docs/protocol.md
/// §1): never growing, never below the reserved floor.
#[test]
fn ring_size_sequences() {
    for r in [4, 16, 64, 256] {
        let g = default_geometry(r * MIB);
        let v = rings_for(&g, 16);
        assert!(v.windows(2).all(|w| w[0] >= w[1]), "{v:?}");
        let floor = vmcs_proto::ring::floor_ring(v[0] as usize);
        assert!(v[..3].iter().all(|&s| s == v[0]), "{v:?}");
        assert!(v.iter().all(|&s| s as usize >= floor), "{v:?}");
        let v: Vec<String> = v.into_iter().map(fmt).collect();
        println!("{r} MiB: {}", v.join(", "));
    }
}

/// The first ring a slot opens with the module's default bulk share (25 %), by region size
/// and slot count (docs/protocol.md §8.1 lists it next to the bulk slice).
#[test]
fn first_ring_with_the_default_bulk_share() {
    for (region, peers, ring) in [
        (4usize << 20, 16u32, 64u32 << 10),
        (64 << 20, 16, 1 << 20),
        (64 << 20, 8, 2 << 20),
        (64 << 20, 4, 4 << 20),
        (256 << 20, 16, 4 << 20),
    ] {
        let g = Geometry::compute(
            region,
            peers,
            vmcs_proto::bulk::initial_size(region, peers, 25),
        )
        .unwrap();
        let first = RingAlloc::new(&g, 0)
            .and_then(|mut a| a.alloc(&g, 1))
            .map_or(0, |c| c.size());
        assert_eq!(first, ring, "{region} {peers}");
    }
}
