//! Region init/validation, peer table and full join handshake.
mod common;

use common::{region, rw};
use proptest::prelude::*;
use vmcs_proto::host::SliceShm;
use vmcs_proto::layout::{
    self, hdr, AttachStep, Attached, InitConfig, InitObserver, LayoutError, RawHeader,
};
use vmcs_proto::peer::{self, JoinMode, Liveness, PeerError, PeerState};
use vmcs_proto::ring::{Channel, Consumer, Producer, RingError};
use vmcs_proto::shm::Shm;

const MIB: usize = 1 << 20;

fn cfg(id: u32) -> InitConfig {
    InitConfig {
        max_peers: 4,
        bulk_size: 0,
        my_id: id,
        region_id: 0x5eed_0000 + u64::from(id),
    }
}

#[test]
fn first_initializes_second_validates() {
    let mem = region(4 * MIB);
    let shm = SliceShm::new(&mem);
    let a = layout::attach(&shm, &cfg(0), 10, 3, || {}).unwrap();
    assert!(matches!(a, Attached::Initialized(_)));
    let b = layout::attach(&shm, &cfg(1), 10, 3, || {}).unwrap();
    assert_eq!(b, Attached::Joined(a.geometry()));
    // The joiner reads the initializer's identity, not its own.
    assert_eq!(layout::region_id(&shm), 0x5eed_0000);
}

#[test]
fn version_mismatch_refused() {
    let mem = region(4 * MIB);
    let shm = SliceShm::new(&mem);
    layout::attach(&shm, &cfg(0), 10, 3, || {}).unwrap();
    // A version-1 region (one fixed ring per slot pair) is refused, and so is any other.
    for v in [1, 3, 0, u32::MAX] {
        shm.store_u32_relaxed(hdr::VERSION, v);
        assert_eq!(
            layout::validate(&shm),
            Err(LayoutError::VersionMismatch { found: v })
        );
    }
}

#[test]
fn stale_initializer_taken_over() {
    let mem = region(4 * MIB);
    let shm = SliceShm::new(&mem);
    let mut obs = InitObserver::default();
    // "Crashed" initializer: wins the CAS and never finishes.
    assert!(matches!(
        layout::attach_step(&shm, &mut obs, 3),
        Ok(AttachStep::Initialize(_))
    ));
    let mut polls = 0;
    let a = layout::attach(&shm, &cfg(1), 100, 3, || polls += 1).unwrap();
    assert!(matches!(a, Attached::Initialized(_)));
    assert!(polls >= 3);
}

#[test]
fn lost_initializer_detects_takeover() {
    let mem = region(4 * MIB);
    let shm = SliceShm::new(&mem);
    let mut obs = InitObserver::default();
    let AttachStep::Initialize(t) = layout::attach_step(&shm, &mut obs, 3).unwrap() else {
        panic!()
    };
    // Someone takes over.
    let mut obs2 = InitObserver::default();
    let mut taken = None;
    for _ in 0..10 {
        if let AttachStep::Initialize(t2) = layout::attach_step(&shm, &mut obs2, 2).unwrap() {
            taken = Some(t2);
            break;
        }
    }
    assert!(taken.is_some());
    assert_eq!(
        layout::initialize(&shm, t, &cfg(0)),
        Err(LayoutError::InitLost)
    );
    layout::initialize(&shm, taken.unwrap(), &cfg(1)).unwrap();
}

#[test]
fn garbage_init_word_is_corrupt_and_recoverable() {
    let mem = region(MIB);
    let shm = SliceShm::new(&mem);
    shm.store_u32_relaxed(hdr::INIT_WORD, 0xffff_ffff);
    assert_eq!(
        layout::attach(&shm, &cfg(0), 5, 3, || {}),
        Err(LayoutError::Corrupt)
    );
    let t = layout::force_reinit(&shm).unwrap();
    layout::initialize(&shm, t, &cfg(0)).unwrap();
    layout::validate(&shm).unwrap();
}

fn bulk_cfg(id: u32) -> InitConfig {
    InitConfig {
        max_peers: 4,
        // A quarter of the region (the initializer's default would cut 16 KiB for 256 KiB rings).
        bulk_size: MIB,
        my_id: id,
        region_id: 0x5eed_0000 + u64::from(id),
    }
}

#[test]
fn bulk_area_initialised_and_joined() {
    let mem = region(4 * MIB);
    let shm = SliceShm::new(&mem);
    let a = layout::attach(&shm, &bulk_cfg(0), 10, 3, || {}).unwrap();
    let g = a.geometry();
    assert_eq!(g.bulk_size, MIB);
    assert_eq!(g.bulk_off, 3 * MIB);
    // A joiner with another preference takes the header's value.
    let b = layout::attach(&shm, &cfg(1), 10, 3, || {}).unwrap();
    assert_eq!(b, Attached::Joined(g));
    assert_eq!(vmcs_proto::bulk::slice_size(&g), MIB / 4);
    assert_eq!(
        vmcs_proto::bulk::slice_off(&g, 3),
        Some(3 * MIB + 3 * MIB / 4)
    );
    // Corrupt bulk fields are refused.
    for (off, val) in [
        (hdr::BULK_SIZE, MIB as u64 + 1),
        (hdr::BULK_SIZE, 3 * MIB as u64),
        (hdr::BULK_SIZE, 0),
        (hdr::BULK_OFF, 0),
        (hdr::BULK_OFF, 3 * MIB as u64 + 4096),
    ] {
        let before = shm.load_u64_relaxed(off);
        shm.store_u64_relaxed(off, val);
        assert_eq!(
            layout::validate(&shm),
            Err(LayoutError::Corrupt),
            "{off:#x} = {val}"
        );
        shm.store_u64_relaxed(off, before);
    }
    assert_eq!(layout::validate(&shm), Ok(g));
}

proptest! {
    /// Any single corrupted word of a header with a bulk area is rejected (or
    /// harmless), never accepted with another geometry.
    #[test]
    fn bulk_header_corruption_rejected(word in 0usize..20, val in any::<u32>()) {
        let mem = region(4 * MIB);
        let shm = SliceShm::new(&mem);
        let g = layout::attach(&shm, &bulk_cfg(0), 10, 3, || {}).unwrap().geometry();
        shm.store_u32_relaxed(word * 4, val);
        if let Ok(g2) = layout::validate(&shm) {
            prop_assert_eq!(g2, g);
        }
    }

    /// Any single corrupted header word is rejected (or harmless), never
    /// accepted with a different geometry, never panics.
    #[test]
    fn header_corruption_rejected(word in 0usize..20, val in any::<u32>()) {
        let mem = region(4 * MIB);
        let shm = SliceShm::new(&mem);
        let g = layout::attach(&shm, &cfg(0), 10, 3, || {}).unwrap().geometry();
        let before = RawHeader::read(&shm);
        shm.store_u32_relaxed(word * 4, val);
        if let Ok(g2) = layout::validate(&shm) {
            prop_assert_eq!(g2, g);
            prop_assert_eq!(RawHeader::read(&shm), before);
        }
    }

    /// Validation of arbitrary header bytes never panics and any accepted
    /// geometry lies inside the region.
    #[test]
    fn arbitrary_header(bytes in proptest::collection::vec(any::<u8>(), 0x50), bar in 0usize..64 * MIB) {
        let mem = region(MIB);
        let shm = SliceShm::new(&mem);
        shm.write_bytes(0, &bytes);
        if let Ok(g) = RawHeader::read(&shm).validate(bar) {
            prop_assert!(g.ring_data_end() <= g.region_size);
        }
    }
}

#[test]
fn peer_lifecycle_and_liveness() {
    let mem = region(4 * MIB);
    let shm = SliceShm::new(&mem);
    let g = layout::attach(&shm, &cfg(0), 10, 3, || {})
        .unwrap()
        .geometry();
    let s0 = peer::snapshot(&shm, &g, 2).unwrap();
    assert_eq!(s0.state, PeerState::Absent);
    let mut m = peer::claim_id(&shm, &g).unwrap();
    assert_eq!(m.id, 0);
    let mut m1 = peer::claim_id(&shm, &g).unwrap();
    assert_eq!(m1.id, 1);
    peer::join_complete(&shm, &g, &mut m).unwrap();
    peer::join_complete(&shm, &g, &mut m1).unwrap();
    let a = peer::snapshot(&shm, &g, 0).unwrap();
    peer::heartbeat(&shm, &g, &mut m).unwrap();
    let b = peer::snapshot(&shm, &g, 0).unwrap();
    assert_eq!(peer::assess(&a, &b), Liveness::Same);
    assert_eq!(peer::assess(&b, &b), Liveness::Stale);
    // Crash + rejoin with the same (server-assigned) id: new generation.
    let mut m2 = peer::join_begin(&shm, &g, 0, JoinMode::Assigned).unwrap();
    assert_ne!(m2.gen, m.gen);
    peer::join_complete(&shm, &g, &mut m2).unwrap();
    let c = peer::snapshot(&shm, &g, 0).unwrap();
    assert_eq!(peer::assess(&b, &c), Liveness::Restarted(m2.gen));
    // The old incarnation notices.
    assert_eq!(peer::heartbeat(&shm, &g, &mut m), Err(PeerError::Evicted));
    // Reap a stale peer; it notices at its next heartbeat.
    let s1 = peer::snapshot(&shm, &g, 1).unwrap();
    assert!(peer::reap(&shm, &g, 1, &s1));
    assert_eq!(
        peer::assess(&s1, &peer::snapshot(&shm, &g, 1).unwrap()),
        Liveness::Gone
    );
    assert_eq!(peer::heartbeat(&shm, &g, &mut m1), Err(PeerError::Evicted));
    // Leave: the feature word goes back to 0 while the slot is still ours.
    peer::set_features(&shm, &g, &m2, peer::FEATURES).unwrap();
    assert_eq!(peer::features(&shm, &g, m2.id).unwrap(), peer::FEATURES);
    peer::leave_begin(&shm, &g, &m2).unwrap();
    assert_eq!(peer::features(&shm, &g, m2.id).unwrap(), 0);
    peer::leave_complete(&shm, &g, &m2).unwrap();
    assert_eq!(
        peer::snapshot(&shm, &g, 0).unwrap().state,
        PeerState::Absent
    );
    assert_eq!(
        peer::join_begin(&shm, &g, 9, JoinMode::Claim),
        Err(PeerError::BadId)
    );
    assert!(peer::snapshot(&shm, &g, 64).is_err());
}

/// Full join sequence for two peers over real geometry, then a restart of one.
#[test]
fn two_peer_join_handshake() {
    let mem = region(4 * MIB);
    let shm = SliceShm::new(&mem);
    let g = layout::attach(&shm, &cfg(0), 10, 3, || {})
        .unwrap()
        .geometry();
    let join = |id: u32, other: u32| {
        let mut m = peer::join_begin(&shm, &g, id, JoinMode::Assigned).unwrap();
        let (p, _) = Producer::open(&shm, Channel::static_split(&g, id, other).unwrap());
        let (c, _) = Consumer::open(&shm, Channel::static_split(&g, other, id).unwrap());
        peer::join_complete(&shm, &g, &mut m).unwrap();
        (p, c)
    };
    let (mut p0, mut c0) = join(0, 1);
    assert_eq!(p0.send(&shm, &rw(4), b"ping"), Err(RingError::NotReady));
    let (mut p1, mut c1) = join(1, 0);
    // Peer 1 opened its consumer after peer 0's producer: already acked.
    p0.send(&shm, &rw(4), b"ping").unwrap();
    let f = c1.peek(&shm).unwrap().unwrap();
    c1.consume(&shm, &f);
    // Peer 0's consumer sees peer 1's new producer epoch and acks.
    assert!(matches!(c0.peek(&shm), Err(RingError::Restarted { .. })));
    c0.resync(&shm);
    p1.send(&shm, &rw(4), b"pong").unwrap();
    assert!(c0.peek(&shm).unwrap().is_some());
    // Peer 1 reboots.
    let (mut p1b, _c1b) = join(1, 0);
    assert_eq!(p1b.send(&shm, &rw(1), b"x"), Err(RingError::NotReady));
    assert!(matches!(c0.peek(&shm), Ok(Some(_)))); // cached old frame
    let f = c0.peek(&shm).unwrap().unwrap();
    c0.consume(&shm, &f);
    assert!(matches!(c0.peek(&shm), Err(RingError::Restarted { .. })));
    c0.resync(&shm);
    p1b.send(&shm, &rw(1), b"x").unwrap();
    p0.send(&shm, &rw(1), b"y").unwrap();
}
