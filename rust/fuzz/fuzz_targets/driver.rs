//! Shared fuzz driver: builds a region from fuzzer bytes and runs the
//! consumer/producer/validation paths against it.
#![allow(dead_code)]

use std::sync::atomic::AtomicU64;

use vmcs_proto::frame::{FrameHeader, Op, SockType};
use vmcs_proto::host::SliceShm;
use vmcs_proto::layout::{self, Geometry, InitConfig, InitObserver};
use vmcs_proto::peer;
use vmcs_proto::ring::{Channel, Consumer, Producer, RingError};
use vmcs_proto::shm::Shm;

pub const REGION: usize = 64 * 1024;

pub fn region() -> Vec<AtomicU64> {
    (0..REGION / 8).map(|_| AtomicU64::new(0)).collect()
}

/// Apply "scribble" records from `data`: [off_lo, off_hi, len, bytes...].
/// Offsets are biased towards the interesting parts (header, control blocks,
/// ring starts) by the top bits of `off_hi`.
pub fn scribble(shm: &SliceShm<'_>, g: Option<&Geometry>, data: &[u8], mut each: impl FnMut()) {
    let mut i = 0;
    let mut n = 0;
    while i + 3 <= data.len() && n < 256 {
        let raw = u16::from_le_bytes([data[i], data[i + 1]]) as usize;
        let len = (data[i + 2] as usize % 48).min(data.len() - i - 3);
        let base = match (g, raw >> 14) {
            (Some(g), 1) => g.chan_table_off,
            (Some(g), 2) => g.ring_data_off,
            (Some(g), 3) => g.peer_table_off,
            _ => 0,
        };
        let off = (base + (raw & 0x3fff)).min(REGION - len);
        shm.write_bytes(off, &data[i + 3..i + 3 + len]);
        i += 3 + len;
        n += 1;
        each();
    }
}

/// Initialise a valid 2-peer region and open both directions.
pub fn setup(shm: &SliceShm<'_>) -> (Geometry, Producer, Consumer) {
    let cfg = InitConfig {
        max_peers: 2,
        bulk_size: 0,
        my_id: 0,
        region_id: 0,
    };
    let g = layout::attach(shm, &cfg, 4, 2, || {})
        .expect("init")
        .geometry();
    // The peer's producer starts near the end of the ring so frames wrap,
    // and leaves valid frames in flight for the scribbles to corrupt.
    let inbound = Channel::static_split(&g, 1, 0).unwrap();
    let ctrl = g.chan_ctrl_off(1, 0).unwrap();
    shm.store_u32_relaxed(
        ctrl + vmcs_proto::ring::ctrl::PROD_IDX,
        inbound.size().wrapping_sub(96),
    );
    let (mut peer_p, _) = Producer::open(shm, inbound);
    let (c, _) = Consumer::open(shm, inbound);
    let mut h = FrameHeader::new(Op::Rw, SockType::Stream, 5, 6);
    for len in [0u32, 100, 7, 300] {
        h.len = len;
        let mut hh = h;
        if len == 0 {
            hh = FrameHeader::new(Op::CreditUpdate, SockType::Stream, 5, 6);
        }
        peer_p
            .send(shm, &hh, &[0xA5; 300][..len as usize])
            .expect("seed send");
    }
    let (p, _) = Producer::open(shm, Channel::static_split(&g, 0, 1).unwrap());
    (g, p, c)
}

/// Run the consumer (and our producer) against whatever is in the region.
/// Must never panic, never go out of bounds (SliceShm asserts) and always
/// terminate.
pub fn exercise(shm: &SliceShm<'_>, g: &Geometry, p: &mut Producer, c: &mut Consumer) {
    let mut buf = [0u8; 1024];
    let mut resyncs = 0;
    for _ in 0..512 {
        match c.peek(shm) {
            Ok(Some(f)) => {
                let ch = c.channel();
                assert!(f.hdr.len <= ch.max_payload());
                let total = f.segs[0].len + f.segs[1].len;
                assert_eq!(total, f.hdr.len as usize);
                let mut at = 0;
                while at < total {
                    let n = c.read(shm, &f, at, &mut buf);
                    assert!(n > 0);
                    at += n;
                }
                let _ = FrameHeader::decode(&f.hdr.encode()).expect("re-decode");
                c.consume(shm, &f);
            }
            Ok(None) => {
                let _ = c.prepare_sleep(shm);
                break;
            }
            Err(RingError::Restarted { .. }) | Err(RingError::Corrupt(_)) => {
                resyncs += 1;
                if resyncs > 4 {
                    break;
                }
                c.resync(shm);
            }
            Err(e) => panic!("unexpected consumer error {e:?}"),
        }
    }
    let mut h = FrameHeader::new(Op::Rw, SockType::SeqPacket, 3, 4);
    h.flags = vmcs_proto::frame::flags::EOM;
    for i in 0..8u32 {
        match p.send(shm, &h, &buf[..(i as usize * 37) % 200]) {
            Ok(_) | Err(RingError::Full) | Err(RingError::NotReady) => {}
            Err(RingError::Corrupt(_)) => {
                let (np, _) = Producer::open(shm, p.channel());
                *p = np;
            }
            Err(e) => panic!("unexpected producer error {e:?}"),
        }
        let _ = p.prepare_wait(shm, 100);
    }
    // Header validation and peer table reads on the scribbled region.
    let _ = layout::validate(shm);
    let mut obs = InitObserver::default();
    let _ = layout::attach_step(shm, &mut obs, 1);
    for id in 0..g.max_peers {
        if let Ok(s) = peer::snapshot(shm, g, id) {
            let _ = peer::assess(&s, &s);
        }
    }
}
