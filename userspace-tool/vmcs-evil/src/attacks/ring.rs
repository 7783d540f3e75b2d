//! Phase b, ring corruption: the ring's own fields and headers, broken in every way the
//! consumer checks.

use std::time::{Duration, Instant};

use vmcs_proto::frame::{flags, FrameHeader, Op, SockType, FRAME_HDR_SIZE};
use vmcs_proto::ring::ctrl;
use vmcs_proto::shm::Shm;

use crate::peer::Peer;

/// Phase b: the ring's own fields and headers, broken in every way the consumer checks.
pub fn run(p: &mut Peer, ms: u64) {
    let t0 = Instant::now();
    let mut k = 0u32;
    while t0.elapsed() < Duration::from_millis(ms) {
        for i in 0..p.targets.len() {
            let t = p.targets[i];
            let me = p.me.id;
            let Some(ch) = p.chan_out(t) else { continue };
            let rs = ch.size();
            let pi = p.ctrl_off(me, t, ctrl::PROD_IDX);
            let pe = p.ctrl_off(me, t, ctrl::PROD_EPOCH);
            let cur = p.shm.load_u32_relaxed(pi) & !31;
            let data = ch.data_off();
            let at = data + (cur & (rs - 1)) as usize;
            let kind = k % 10;
            match kind {
                0 => p.shm.store_u32_release(pi, cur.wrapping_add(rs * 8)),
                1 => p.shm.store_u32_release(pi, cur.wrapping_sub(64)),
                2 => p.shm.store_u32_release(pi, cur.wrapping_add(33)),
                3 => {
                    for _ in 0..8 {
                        let e = p.rng.u32();
                        p.shm.store_u32_release(pe, e);
                    }
                }
                4 => {
                    let mut junk = [0u8; 64];
                    p.rng.fill(&mut junk);
                    p.shm.write_bytes(at, &junk);
                    p.shm.store_u32_release(pi, cur.wrapping_add(64));
                }
                5 | 6 => {
                    // Headers that name a valid op but break a rule.
                    let mut h = FrameHeader::new(Op::Rw, SockType::SeqPacket, 1, 2);
                    h.len = if kind == 5 { rs } else { 100 };
                    let mut b = h.encode();
                    if kind == 6 {
                        match (k / 10) % 5 {
                            0 => b[4] = 99,   // bad op
                            1 => b[8] = 0x80, // bad flags
                            2 => b[28] = 1,   // reserved
                            3 => b[6] = 7,    // bad type
                            // A bulk op with a 100-byte payload (it must be 8).
                            _ => b[4] = 8 + (k / 50 % 3) as u8,
                        }
                    }
                    p.shm.write_bytes(at, &b);
                    p.shm
                        .store_u32_release(pi, cur.wrapping_add(FRAME_HDR_SIZE as u32 + 128));
                }
                7 => {
                    // Our consumer line of the guest's ring to us.
                    let ci = p.ctrl_off(t, me, ctrl::CONS_IDX);
                    let ca = p.ctrl_off(t, me, ctrl::CONS_ACK);
                    let v = p.rng.u32();
                    p.shm.store_u32_release(ci, v);
                    let v = p.rng.u32();
                    p.shm.store_u32_release(ca, v);
                    p.shm
                        .store_u32_relaxed(p.ctrl_off(t, me, ctrl::CONS_NEED_WAKEUP), 1);
                }
                8 => {
                    // A valid frame, then the epoch changes under it.
                    let mut d = FrameHeader::new(Op::Rw, SockType::SeqPacket, 1, 2);
                    d.flags = flags::EOM;
                    p.send(t, d, b"x");
                    p.shm.store_u32_release(pe, 0);
                }
                _ => p
                    .shm
                    .store_u32_relaxed(p.ctrl_off(me, t, ctrl::PROD_WANTS_SPACE), 1),
            }
            p.st.garbage += 1;
        }
        p.idle(25);
        for i in 0..p.targets.len() {
            let t = p.targets[i];
            p.reopen(t);
            if let Some(c) = p.cons[t as usize].as_mut() {
                c.resync(&p.shm);
            }
        }
        p.idle(25);
        k += 1;
    }
}
