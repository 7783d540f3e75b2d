//! Property tests: ring vs a VecDeque model, hostile indices, framing.
mod common;

use std::collections::VecDeque;

use common::{channel_pair, region, rw};
use proptest::prelude::*;
use vmcs_proto::frame::{FrameHeader, FRAME_HDR_SIZE};
use vmcs_proto::host::SliceShm;
use vmcs_proto::ring::{ctrl, record_size, Channel, Consumer, Producer, RingError, SleepCheck};
use vmcs_proto::shm::Shm;

#[derive(Debug, Clone)]
enum Act {
    Send(Vec<u8>),
    /// Reserve for the whole vector, copy only its first `.1` bytes (a copy
    /// that stopped short), truncate and commit (nothing for 0).
    SendShort(Vec<u8>, u16),
    Recv,
    RecvDeferred(u8),
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Act::Send),
        2 => (proptest::collection::vec(any::<u8>(), 1..300), any::<u16>())
            .prop_map(|(v, k)| Act::SendShort(v, k)),
        2 => Just(Act::Recv),
        1 => (1u8..5).prop_map(Act::RecvDeferred),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary interleavings of sends and receives (wrapping around many
    /// times, starting at an arbitrary index) behave like a FIFO of messages
    /// bounded by ring capacity.
    #[test]
    fn ring_matches_model(size_log in 9u32..12, start in any::<u32>(), acts in proptest::collection::vec(act(), 1..200)) {
        let size = 1u32 << size_log;
        let mem = region(128 + size as usize);
        let shm = SliceShm::new(&mem);
        // Start the free-running indices anywhere (aligned) to exercise wrap.
        shm.store_u32_relaxed(ctrl::PROD_IDX, start & !31);
        let (mut p, mut c) = channel_pair(&shm, size);
        let ch = p.channel();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut used = 0u32;
        let rec = |l: usize| vmcs_proto::ring::record_size(l as u32).unwrap();
        for a in acts {
            match a {
                Act::Send(data) => {
                    let len = data.len().min(ch.max_payload() as usize);
                    let data = &data[..len];
                    match p.send(&shm, &rw(len as u32), data) {
                        Ok(_) => { used += rec(len); model.push_back(data.to_vec()); }
                        Err(RingError::Full) => prop_assert!(used + rec(len) > size),
                        Err(RingError::TooBig) => prop_assert!(len == 0),
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
                Act::SendShort(data, cut) => {
                    let len = data.len().min(ch.max_payload() as usize);
                    let cut = (cut as usize) % (len + 1);
                    match p.reserve(&shm, &rw(len as u32)) {
                        Ok(mut r) => {
                            // Copy the first `cut` bytes piece by piece, as a user copy
                            // into the segments would, then stop.
                            let mut done = 0;
                            for seg in r.segments() {
                                let n = seg.len.min(cut - done);
                                shm.write_bytes(seg.off, &data[done..done + n]);
                                done += n;
                            }
                            prop_assert_eq!(done, cut);
                            r.truncate(cut as u32);
                            prop_assert_eq!(r.header().len as usize, cut);
                            prop_assert_eq!(r.segments()[0].len + r.segments()[1].len, cut);
                            if cut > 0 {
                                prop_assert!(p.commit_deferred(&shm, r));
                                p.publish(&shm);
                                used += rec(cut);
                                model.push_back(data[..cut].to_vec());
                            }
                        }
                        Err(RingError::Full) => prop_assert!(used + rec(len) > size),
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
                Act::Recv | Act::RecvDeferred(_) => {
                    let n = if let Act::RecvDeferred(n) = a { n as usize } else { 1 };
                    for _ in 0..n {
                        match c.peek(&shm).unwrap() {
                            None => { prop_assert!(model.is_empty()); break; }
                            Some(f) => {
                                let want = model.pop_front().unwrap();
                                prop_assert_eq!(f.hdr.len as usize, want.len());
                                prop_assert_eq!(f.segs[0].len + f.segs[1].len, want.len());
                                let mut got = vec![0u8; want.len()];
                                prop_assert_eq!(c.read(&shm, &f, 0, &mut got), want.len());
                                prop_assert_eq!(&got, &want);
                                // Walking the payload covers it exactly, in order.
                                let mut walked = vec![0u8; want.len()];
                                let w = f.walk(0, usize::MAX, |off, i, n| {
                                    shm.read_bytes(off, &mut walked[i..i + n]);
                                });
                                prop_assert_eq!(w, want.len());
                                prop_assert_eq!(&walked, &want);
                                // Partial reads from an offset agree too.
                                if want.len() > 3 {
                                    let mut tail = vec![0u8; want.len() - 3];
                                    c.read(&shm, &f, 3, &mut tail);
                                    prop_assert_eq!(&tail[..], &want[3..]);
                                }
                                used -= rec(want.len());
                                if matches!(a, Act::RecvDeferred(_)) {
                                    prop_assert!(c.consume_deferred(&f));
                                } else {
                                    c.consume(&shm, &f);
                                }
                            }
                        }
                    }
                    c.release(&shm);
                }
            }
        }
        // Drain.
        while let Some(f) = c.peek(&shm).unwrap() {
            let want = model.pop_front().unwrap();
            let mut got = vec![0u8; want.len()];
            c.read(&shm, &f, 0, &mut got);
            prop_assert_eq!(got, want);
            c.consume(&shm, &f);
        }
        prop_assert!(model.is_empty());
        prop_assert_eq!(c.prepare_sleep(&shm), SleepCheck::MaySleep);
    }

    /// Whatever a hostile producer writes into its line and the ring, the
    /// consumer returns frames whose segments lie inside the ring, or an
    /// error, and never panics.
    #[test]
    fn consumer_survives_garbage(size_log in 7u32..11, prod in any::<u32>(), epoch_same in any::<bool>(), bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let size = 1u32 << size_log;
        let mem = region(128 + size as usize);
        let shm = SliceShm::new(&mem);
        shm.write_bytes(128, &bytes[..bytes.len().min(size as usize)]);
        let ch = Channel::from_parts(0, 128, size).unwrap();
        let (mut c, _) = Consumer::open(&shm, ch);
        if !epoch_same { shm.store_u32_relaxed(ctrl::PROD_EPOCH, 7); }
        shm.store_u32_release(ctrl::PROD_IDX, prod);
        for _ in 0..64 {
            match c.peek(&shm) {
                Ok(Some(f)) => {
                    for s in f.segs {
                        prop_assert!(s.off >= 128 && s.off + s.len <= 128 + size as usize);
                    }
                    prop_assert!(f.hdr.len <= ch.max_payload());
                    c.consume(&shm, &f);
                }
                Ok(None) => break,
                Err(RingError::Restarted { .. }) => { c.resync(&shm); }
                Err(RingError::Corrupt(_)) => break,
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }

    /// A hostile consumer index never lets the producer overwrite unconsumed
    /// data or exceed the ring.
    #[test]
    fn producer_survives_garbage(cons in any::<u32>(), n in 0usize..20) {
        let size = 512u32;
        let mem = region(128 + size as usize);
        let shm = SliceShm::new(&mem);
        let (mut p, _c) = channel_pair(&shm, size);
        for _ in 0..n { let _ = p.send(&shm, &rw(40), &[1u8; 40]); }
        shm.store_u32_release(ctrl::CONS_IDX, cons);
        match p.send(&shm, &rw(100), &[2u8; 100]) {
            Ok(_) | Err(RingError::Full) | Err(RingError::Corrupt(_)) => {}
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    /// Any 32 bytes either decode to a header that re-encodes identically, or
    /// are rejected.
    #[test]
    fn frame_decode_roundtrip(b in proptest::array::uniform32(any::<u8>())) {
        if let Ok(h) = FrameHeader::decode(&b) {
            prop_assert_eq!(h.encode(), b);
            prop_assert!(h.validate().is_ok());
        }
    }
}

#[test]
fn header_size_is_alignment() {
    assert_eq!(FRAME_HDR_SIZE as u32, vmcs_proto::ring::FRAME_ALIGN);
}

#[test]
fn wrap_splits_payload_in_two_segments() {
    let size = 512u32;
    let mem = region(128 + size as usize);
    let shm = SliceShm::new(&mem);
    shm.store_u32_relaxed(ctrl::PROD_IDX, 512 - 64);
    let (mut p, mut c) = channel_pair(&shm, size);
    let data: Vec<u8> = (0..200u8).collect();
    p.send(&shm, &rw(200), &data).unwrap();
    let f = c.peek(&shm).unwrap().unwrap();
    assert_eq!(f.segs[0].len, 32);
    assert_eq!(f.segs[1].len, 168);
    assert_eq!(f.segs[1].off, 128);
    let mut got = vec![0; 200];
    c.read(&shm, &f, 0, &mut got);
    assert_eq!(got, data);
}

#[test]
fn notification_suppression_flags() {
    let mem = region(128 + 512);
    let shm = SliceShm::new(&mem);
    let (mut p, mut c) = channel_pair(&shm, 512);
    // Awake consumer: no doorbell.
    assert!(!p.send(&shm, &rw(8), &[0; 8]).unwrap());
    // Data pending: may not sleep.
    assert_eq!(c.prepare_sleep(&shm), SleepCheck::Pending);
    let f = c.peek(&shm).unwrap().unwrap();
    c.consume(&shm, &f);
    assert_eq!(c.prepare_sleep(&shm), SleepCheck::MaySleep);
    // Sleeping consumer: doorbell.
    assert!(p.send(&shm, &rw(8), &[0; 8]).unwrap());
    c.cancel_sleep(&shm);
    assert!(!p.send(&shm, &rw(8), &[0; 8]).unwrap());
    // Fill, producer waits for space, consumer release rings it.
    while p.send(&shm, &rw(200), &[0; 200]).is_ok() {}
    assert_eq!(p.prepare_wait(&shm, 200).unwrap(), SleepCheck::MaySleep);
    let f = c.peek(&shm).unwrap().unwrap();
    assert!(c.consume(&shm, &f));
}

/// The space doorbell comes once a quarter of the ring is free, once per wait of the
/// producer (its token), never for every freed frame; a new wait is rung again.
#[test]
fn space_doorbell_at_watermark() {
    let size = 2048u32;
    let mem = region(128 + size as usize);
    let shm = SliceShm::new(&mem);
    let (mut p, mut c) = channel_pair(&shm, size);
    // 64-byte payloads: 96-byte records, 21 of them fill 2016 bytes.
    let mut sent = 0;
    while p.send(&shm, &rw(64), &[7; 64]).is_ok() {
        sent += 1;
    }
    assert_eq!(p.prepare_wait(&shm, 64).unwrap(), SleepCheck::MaySleep);
    let mut rung = vec![];
    for _ in 0..sent {
        let f = c.peek(&shm).unwrap().unwrap();
        assert!(c.consume_deferred(&f));
        rung.push((c.known_free(), c.release_at_watermark(&shm)));
    }
    assert_eq!(c.peek(&shm), Ok(None));
    // No doorbell below a quarter (512 bytes) free, exactly one at the first release
    // from there on, none after it for the same wait.
    let first = rung.iter().position(|r| r.1).expect("one doorbell");
    assert!(rung[first].0 >= size / 4);
    assert!(first == 0 || rung[first - 1].0 < size / 4);
    assert_eq!(rung.iter().filter(|r| r.1).count(), 1, "{rung:?}");
    // The producer waits again (new token): the next release rings again.
    while p.send(&shm, &rw(64), &[7; 64]).is_ok() {}
    assert_eq!(p.prepare_wait(&shm, 64).unwrap(), SleepCheck::MaySleep);
    let mut n = 0;
    while let Some(f) = c.peek(&shm).unwrap() {
        assert!(c.consume_deferred(&f));
        n += u32::from(c.release_at_watermark(&shm));
    }
    assert_eq!(n, 1);
    // A producer that does not wait gets none.
    p.cancel_wait(&shm);
    p.send(&shm, &rw(64), &[7; 64]).unwrap();
    let f = c.peek(&shm).unwrap().unwrap();
    assert!(c.consume_deferred(&f));
    assert!(!c.release_at_watermark(&shm));
}

/// Data doorbells: one per sleep of the consumer, however many frames follow before it
/// goes back to sleep; none while it is awake; a new sleep is rung again.
#[test]
fn data_doorbell_once_per_sleep() {
    let mem = region(128 + 4096);
    let shm = SliceShm::new(&mem);
    let (mut p, mut c) = channel_pair(&shm, 4096);
    assert_eq!(c.prepare_sleep(&shm), SleepCheck::MaySleep);
    let rings: Vec<bool> = (0..5)
        .map(|_| p.send(&shm, &rw(8), &[1; 8]).unwrap())
        .collect();
    assert_eq!(rings, [true, false, false, false, false]);
    assert_eq!(p.take_suppressed(), 4);
    assert_eq!(p.take_suppressed(), 0);
    // The consumer woke (the doorbell): drains with the flag clear, then sleeps again.
    c.cancel_sleep(&shm);
    assert!(!p.send(&shm, &rw(8), &[1; 8]).unwrap());
    while let Some(f) = c.peek(&shm).unwrap() {
        assert!(c.consume_deferred(&f));
    }
    c.release(&shm);
    assert_eq!(c.prepare_sleep(&shm), SleepCheck::MaySleep);
    assert!(p.send(&shm, &rw(8), &[1; 8]).unwrap());
    assert!(!p.send(&shm, &rw(8), &[1; 8]).unwrap());
    // Woken by something else (no cancel) and asleep again: a new token, rung again.
    while let Some(f) = c.peek(&shm).unwrap() {
        assert!(c.consume_deferred(&f));
    }
    c.release(&shm);
    assert_eq!(c.prepare_sleep(&shm), SleepCheck::MaySleep);
    assert!(p.send(&shm, &rw(8), &[1; 8]).unwrap());
}

/// Batches: frames committed with `commit_deferred` are invisible until one `publish`,
/// which rings at most once; `release_batched` publishes only every quarter ring.
#[test]
fn batched_publish_and_release() {
    let size = 2048u32;
    let mem = region(128 + size as usize);
    let shm = SliceShm::new(&mem);
    let (mut p, mut c) = channel_pair(&shm, size);
    assert_eq!(c.prepare_sleep(&shm), SleepCheck::MaySleep);
    for k in 0..8u8 {
        let r = p.reserve(&shm, &rw(64)).unwrap();
        p.write(&shm, &r, 0, &[k; 64]);
        assert!(p.commit_deferred(&shm, r));
        assert!(p.unpublished());
    }
    assert_eq!(c.peek(&shm), Ok(None), "nothing published yet");
    assert!(p.publish(&shm));
    assert!(!p.unpublished());
    let mut released = vec![];
    for k in 0..8u8 {
        let f = c.peek(&shm).unwrap().unwrap();
        let mut b = [0u8; 64];
        c.read(&shm, &f, 0, &mut b);
        assert_eq!(b, [k; 64]);
        assert!(c.consume_deferred(&f));
        c.release_batched(&shm);
        released.push(c.unreleased());
    }
    // 96-byte records: released at 6 records (576 >= 512), then 2 left unreleased.
    assert_eq!(released, [96, 192, 288, 384, 480, 0, 96, 192]);
    assert!(!p.drained(&shm));
    c.release_at_watermark(&shm);
    assert!(p.drained(&shm));
}

#[test]
fn producer_reopen_discards_and_handshakes() {
    let mem = region(128 + 512);
    let shm = SliceShm::new(&mem);
    let (mut p, mut c) = channel_pair(&shm, 512);
    p.send(&shm, &rw(8), &[1; 8]).unwrap();
    p.send(&shm, &rw(8), &[2; 8]).unwrap();
    // Producer "reboots": new incarnation.
    let (mut p2, _) = Producer::open(&shm, p.channel());
    assert_eq!(p2.send(&shm, &rw(8), &[3; 8]), Err(RingError::NotReady));
    // The consumer's next index reload reports the restart; old frames are
    // discarded by the resync.
    assert_eq!(
        c.peek(&shm),
        Err(RingError::Restarted { epoch: p2.epoch() })
    );
    c.resync(&shm);
    assert_eq!(c.peek(&shm), Ok(None));
    p2.send(&shm, &rw(8), &[3; 8]).unwrap();
    let f = c.peek(&shm).unwrap().unwrap();
    let mut b = [0; 8];
    c.read(&shm, &f, 0, &mut b);
    assert_eq!(b, [3; 8]);
}

#[test]
fn corrupt_then_resync_recovers() {
    let mem = region(128 + 512);
    let shm = SliceShm::new(&mem);
    let (mut p, mut c) = channel_pair(&shm, 512);
    p.send(&shm, &rw(8), &[1; 8]).unwrap();
    // Scribble the header's op field.
    shm.write_bytes(128 + 4, &[0xff, 0xff]);
    assert!(matches!(c.peek(&shm), Err(RingError::Corrupt(_))));
    c.resync(&shm);
    assert_eq!(c.peek(&shm), Ok(None));
    p.send(&shm, &rw(8), &[1; 8]).unwrap();
    assert!(c.peek(&shm).unwrap().is_some());
}

/// One step of the `hostile` scenario's attack on a channel (userspace-tool/vmcs-evil),
/// applied by the producer side.
#[derive(Debug, Clone)]
enum Attack {
    /// A well-formed frame of this many payload bytes.
    Frame(u16),
    /// `prod_idx` moved by this many bytes (ahead, behind, misaligned).
    Jump(i32),
    /// A new `prod_epoch`.
    Epoch(u32),
    /// Bytes written at the producer's position, then `prod_idx` advanced by `adv * 32`.
    Garbage(Vec<u8>, u8),
    /// Random bytes anywhere in the ring data.
    Scribble(u16, Vec<u8>),
    /// The producer re-opens the channel (what the evil does between attacks).
    Reopen,
}

fn attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        3 => (1u16..300).prop_map(Attack::Frame),
        1 => any::<i32>().prop_map(Attack::Jump),
        1 => any::<u32>().prop_map(Attack::Epoch),
        1 => (proptest::collection::vec(any::<u8>(), 1..96), any::<u8>()).prop_map(|(b, a)| Attack::Garbage(b, a)),
        1 => (any::<u16>(), proptest::collection::vec(any::<u8>(), 1..64)).prop_map(|(o, b)| Attack::Scribble(o, b)),
        2 => Just(Attack::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A consumer handling errors as the module does (`Restarted` and `Corrupt`: resync)
    /// survives any sequence of the hostile peer's attacks: every frame it accepts lies
    /// inside the ring, every loop ends, and once the attacker re-opens the channel and
    /// behaves, a frame arrives intact.
    #[test]
    fn consumer_survives_hostile_sequence(attacks in proptest::collection::vec(attack(), 1..80)) {
        let size = 1024u32;
        let mem = region(128 + size as usize);
        let shm = SliceShm::new(&mem);
        let ch = Channel::from_parts(0, 128, size).unwrap();
        let (mut p, mut c) = channel_pair(&shm, size);
        let drain = |c: &mut Consumer| -> Result<(), TestCaseError> {
            for _ in 0..64 {
                match c.peek(&shm) {
                    Ok(Some(f)) => {
                        for s in f.segs {
                            prop_assert!(s.off >= 128 && s.off + s.len <= 128 + size as usize);
                        }
                        let mut b = vec![0u8; f.hdr.len as usize];
                        c.read(&shm, &f, 0, &mut b);
                        c.consume(&shm, &f);
                    }
                    Ok(None) => break,
                    Err(RingError::Restarted { .. }) | Err(RingError::Corrupt(_)) => {
                        c.resync(&shm);
                    }
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
            }
            Ok(())
        };
        for a in attacks {
            let cur = shm.load_u32_relaxed(ctrl::PROD_IDX);
            match a {
                Attack::Frame(n) => { let _ = p.send(&shm, &rw(n.into()), &vec![7u8; n.into()]); }
                Attack::Jump(d) => shm.store_u32_release(ctrl::PROD_IDX, cur.wrapping_add(d as u32)),
                Attack::Epoch(e) => shm.store_u32_release(ctrl::PROD_EPOCH, e),
                Attack::Garbage(b, adv) => {
                    let at = 128 + (cur & !31 & (size - 1)) as usize;
                    let n = b.len().min(128 + size as usize - at);
                    shm.write_bytes(at, &b[..n]);
                    shm.store_u32_release(ctrl::PROD_IDX, (cur & !31).wrapping_add(u32::from(adv) * 32));
                }
                Attack::Scribble(o, b) => {
                    let at = 128 + (o as usize % (size as usize - b.len()));
                    shm.write_bytes(at, &b);
                }
                Attack::Reopen => p = Producer::open(&shm, ch).0,
            }
            drain(&mut c)?;
        }
        // The attacker behaves again: re-open, the consumer acks, a frame passes intact.
        p = Producer::open(&shm, ch).0;
        drain(&mut c)?;
        prop_assert!(p.prepare_wait(&shm, 0).is_ok());
        p.cancel_wait(&shm);
        let msg: Vec<u8> = (0..100u8).collect();
        prop_assert!(p.send(&shm, &rw(100), &msg).is_ok());
        let f = c.peek(&shm).unwrap().expect("frame after recovery");
        let mut b = vec![0u8; 100];
        c.read(&shm, &f, 0, &mut b);
        prop_assert_eq!(b, msg);
    }
}

/// `Producer::drained` (what an unload waits for): false while a published frame is
/// unread, true once the consumer has released it; deferred consumption counts only
/// after the release.
#[test]
fn drained_follows_the_consumer() {
    let mem = region(128 + 1024);
    let shm = SliceShm::new(&mem);
    let (mut p, mut c) = channel_pair(&shm, 1024);
    assert!(p.drained(&shm), "a fresh ring is drained");
    p.send(&shm, &rw(10), &[7u8; 10]).unwrap();
    p.send(&shm, &rw(20), &[8u8; 20]).unwrap();
    assert!(!p.drained(&shm));
    let f = c.peek(&shm).unwrap().unwrap();
    c.consume(&shm, &f);
    assert!(!p.drained(&shm), "one frame still unread");
    let f = c.peek(&shm).unwrap().unwrap();
    assert!(c.consume_deferred(&f));
    assert!(!p.drained(&shm), "consumed but not yet released");
    c.release(&shm);
    assert!(p.drained(&shm));
}

/// `Producer::backlog` (the net device's BQL completions): the ring bytes of every record
/// written, published or not, until the consumer releases them; 0 on a fresh channel and
/// on a corrupt consumer index.
#[test]
fn backlog_counts_records_until_released() {
    let mem = region(128 + 1024);
    let shm = SliceShm::new(&mem);
    let (mut p, mut c) = channel_pair(&shm, 1024);
    assert_eq!(p.backlog(&shm), 0, "a fresh ring has no backlog");
    let rec10 = record_size(10).unwrap();
    let rec20 = record_size(20).unwrap();
    p.send(&shm, &rw(10), &[7u8; 10]).unwrap();
    p.send_deferred(&shm, &rw(20), &[8u8; 20]).unwrap();
    assert_eq!(
        p.backlog(&shm),
        rec10 + rec20,
        "unpublished records count too"
    );
    p.publish(&shm);
    let f = c.peek(&shm).unwrap().unwrap();
    assert!(c.consume_deferred(&f));
    assert_eq!(
        p.backlog(&shm),
        rec10 + rec20,
        "consumed but not yet released"
    );
    c.release(&shm);
    assert_eq!(p.backlog(&shm), rec20);
    let f = c.peek(&shm).unwrap().unwrap();
    c.consume(&shm, &f);
    assert_eq!(p.backlog(&shm), 0);
    // A consumer index beyond the producer's is corrupt: no backlog (nothing is read).
    shm.store_u32_relaxed(p.channel().ctrl_off() + ctrl::CONS_IDX, 0x1000_0000);
    assert_eq!(p.backlog(&shm), 0);
}

#[test]
fn truncated_reservation_clears_eom_and_frees_the_rest() {
    let mem = region(128 + 1024);
    let shm = SliceShm::new(&mem);
    let (mut p, mut c) = channel_pair(&shm, 1024);
    let mut h = rw(300);
    h.ty = vmcs_proto::frame::SockType::SeqPacket;
    h.flags = vmcs_proto::frame::flags::EOM;
    let mut r = p.reserve(&shm, &h).unwrap();
    r.truncate(10);
    r.clear_flags(vmcs_proto::frame::flags::EOM);
    // Truncating to more than is reserved changes nothing.
    r.truncate(500);
    assert_eq!(r.header().len, 10);
    assert!(p.commit_deferred(&shm, r));
    p.publish(&shm);
    let f = c.peek(&shm).unwrap().unwrap();
    assert_eq!(f.hdr.len, 10);
    assert_eq!(f.hdr.flags & vmcs_proto::frame::flags::EOM, 0);
    c.consume(&shm, &f);
    // The record took 32 + 32 bytes, not 32 + 320: a frame of 900 - 32 bytes fits now
    // beside it only if the rest was given back.
    assert!(p.send(&shm, &rw(400), &[7u8; 400]).is_ok());
    assert!(p.send(&shm, &rw(400), &[8u8; 400]).is_ok());
}
