//! The bulk phase: one connection per bulk frame that breaks a rule of docs/protocol.md §8.2,
//! each of which the guest must reset, then well-formed transfers it must hand back.

use std::ops::Range;
use std::thread;
use std::time::{Duration, Instant};

use vmcs_proto::bulk;
use vmcs_proto::frame::{flags, FrameHeader, Op, SockType, FRAME_HDR_SIZE};
use vmcs_proto::ring::ctrl;
use vmcs_proto::shm::Shm;

use crate::peer::Peer;
use crate::tap::ok;

/// First source port of the bulk phase's connections (one port per case).
const BULK_SRC: u32 = 50000;

/// Our ports whose frames the peer keeps for this phase ([`Peer::watched`]).
pub const SRC_PORTS: Range<u32> = BULK_SRC..BULK_SRC + 256;

/// Byte `x` of the pattern written into the first page of our extent for the well-formed
/// bulk connection (the guest's `vmcs-test bulk-evil` checks it with the same function).
fn bulk_pattern(x: usize) -> u8 {
    (x as u8).wrapping_mul(7).wrapping_add(13) ^ (x >> 8) as u8
}

/// A bulk frame of the bulk phase: op and `(off, len)`.
type BulkFrame = (Op, u32, u32);

fn bulk_frame(p: &mut Peer, t: u32, src: u32, port: u32, f: BulkFrame) -> bool {
    let mut h = FrameHeader::new(f.0, SockType::SeqPacket, src, port);
    h.buf_alloc = 1 << 20;
    let d = bulk::Desc { off: f.1, len: f.2 };
    // The ring may be full for a moment (the 65-range case): retry.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if p.send(t, h, &d.encode()) {
            return true;
        }
        p.idle(2);
    }
    false
}

/// Opens a connection from our port `src` to `port` of `t` and waits for the guest's
/// `BULK_OFFER` (its server called `BULK_SETUP`). `Err` says what happened instead.
fn bulk_connect(p: &mut Peer, t: u32, src: u32, port: u32) -> Result<(), String> {
    let mut h = FrameHeader::new(Op::Request, SockType::SeqPacket, src, port);
    h.buf_alloc = 1 << 20;
    if !p.send(t, h, &[]) {
        return Err("REQUEST not sent".into());
    }
    match p.await_op(t, src, Op::Response, 5) {
        Some(Op::Response) => {}
        Some(op) => return Err(format!("{op:?} instead of RESPONSE")),
        None => return Err("no RESPONSE".into()),
    }
    match p.await_op(t, src, Op::BulkOffer, 10) {
        Some(Op::BulkOffer) => Ok(()),
        Some(op) => Err(format!("{op:?} instead of BULK_OFFER")),
        None => Err("no BULK_OFFER".into()),
    }
}

/// Writes a `BULK_DATA` with a 16-byte payload (it must be 8) straight into our ring to
/// `t` (the producer refuses to send it); the producer is stale afterwards (re-open it).
fn bulk_bad_len(p: &mut Peer, t: u32, src: u32, port: u32) -> bool {
    let me = p.me.id;
    let pi = p.ctrl_off(me, t, ctrl::PROD_IDX);
    let ci = p.ctrl_off(me, t, ctrl::CONS_IDX);
    let Some(ch) = p.chan_out(t) else {
        return false;
    };
    let (data, rs) = (ch.data_off(), ch.size());
    let cur = p.shm.load_u32_relaxed(pi);
    if cur.wrapping_sub(p.shm.load_u32_acquire(ci)) > rs - 64 {
        return false;
    }
    let mut h = FrameHeader::new(Op::BulkData, SockType::SeqPacket, src, port);
    h.len = 16;
    h.buf_alloc = 1 << 20;
    p.shm
        .write_bytes(data + (cur & (rs - 1)) as usize, &h.encode());
    let payload = [0x11u8; 16];
    let at = cur.wrapping_add(FRAME_HDR_SIZE as u32) & (rs - 1);
    p.shm.write_bytes(data + at as usize, &payload);
    p.shm.store_u32_release(pi, cur.wrapping_add(64));
    true
}

/// A well-formed transfer on a new connection (from `*src`, tried up to `tries` times
/// while the guest does not accept): our offer, 4 ranges of the pattern page; the guest
/// must hand all 4 back (it does so only when it read the pattern), then an orderly
/// close. Returns whether it worked, and what happened.
fn bulk_good(p: &mut Peer, t: u32, src: &mut u32, port: u32, tries: u32) -> (bool, String) {
    let mut s = *src;
    let mut conn = Err(String::new());
    for _ in 0..tries {
        s = *src;
        *src += 1;
        conn = bulk_connect(p, t, s, port);
        if conn.is_ok() {
            break;
        }
        p.idle(200);
    }
    if let Err(e) = conn {
        return (false, e);
    }
    let ranges: Vec<(u32, u32)> = (0..4).map(|k| (k * 1024, 1024)).collect();
    let sent = bulk_frame(p, t, s, port, (Op::BulkOffer, 0, 8192))
        && ranges
            .iter()
            .all(|&(o, l)| bulk_frame(p, t, s, port, (Op::BulkData, o, l)));
    let t1 = Instant::now();
    let mut back = Vec::new();
    let releases = |b: &Vec<Op>| b.iter().filter(|&&o| o == Op::BulkRelease).count();
    while sent
        && releases(&back) < ranges.len()
        && !back.contains(&Op::Rst)
        && t1.elapsed() < Duration::from_secs(10)
    {
        p.pump();
        back = p
            .watched
            .iter()
            .filter(|(g, h)| *g == t && h.dst_port == s && h.op != Op::CreditUpdate)
            .map(|(_, h)| h.op)
            .collect();
        thread::sleep(Duration::from_millis(1));
    }
    let n = releases(&back);
    // Orderly close: SHUTDOWN both ways, then RST (the guest sees end of file).
    let mut sh = FrameHeader::new(Op::Shutdown, SockType::SeqPacket, s, port);
    sh.flags = flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND;
    p.send(t, sh, &[]);
    let r = FrameHeader::new(Op::Rst, SockType::SeqPacket, s, port);
    p.send(t, r, &[]);
    p.idle(200);
    (
        sent && n == ranges.len() && !back.contains(&Op::Rst),
        format!("port {s}: {n} BULK_RELEASE, frames {back:?}"),
    )
}

/// The bulk phase: on one connection each, bulk frames that break a rule of
/// docs/protocol.md §8.2 (the guest must reset just that connection: we see its `RST`),
/// then one well-formed transfer of a known pattern, which the guest must hand back
/// (it releases the ranges only when it read the pattern through its mapping).
/// Only targets that accept on `port` (a `vmcs-test bulk-evil` server) are attacked.
pub fn run(p: &mut Peer, port: u32) -> bool {
    let slice = bulk::slice_size(&p.g) as u32;
    let Some(mine) = bulk::slice_off(&p.g, p.me.id) else {
        return ok(false, "bulk phase: the region has no bulk area");
    };
    let pg = 4096u32;
    // Our extent: pages 0 and 1 of our slice; page 0 carries the pattern, page 1 zeros
    // (the bad cases lend ranges of page 1, which the guest holds, never releases).
    let mut ext = vec![0u8; 2 * pg as usize];
    for (x, b) in ext[..pg as usize].iter_mut().enumerate() {
        *b = bulk_pattern(x);
    }
    p.shm.write_bytes(mine, &ext);
    use Op::{BulkData as D, BulkOffer as O, BulkRelease as R};
    let good_offer = (O, 0, 2 * pg);
    let mut many = vec![good_offer];
    many.extend((0..65).map(|i| (D, pg + 16 * i, 16)));
    let cases: Vec<(&str, Vec<BulkFrame>)> = vec![
        ("OFFER outside our slice", vec![(O, slice, pg)]),
        (
            "OFFER into the next peer's slice",
            vec![(O, slice - pg, 2 * pg)],
        ),
        ("OFFER at an unaligned offset", vec![(O, 100, pg)]),
        ("OFFER of an unaligned length", vec![(O, 0, 100)]),
        ("OFFER of length 0", vec![(O, 0, 0)]),
        ("OFFER of a huge length", vec![(O, 0, 0xffff_f000)]),
        ("OFFER whose end overflows", vec![(O, 0xffff_f000, 2 * pg)]),
        ("a second OFFER", vec![good_offer, good_offer]),
        ("DATA before any OFFER", vec![(D, pg, 16)]),
        (
            "DATA beyond the extent",
            vec![good_offer, (D, 2 * pg - 100, 200)],
        ),
        (
            "DATA whose end overflows",
            vec![good_offer, (D, 0xffff_fff0, 0x20)],
        ),
        ("DATA of length 0", vec![good_offer, (D, pg, 0)]),
        (
            "DATA overlapping a range the guest holds",
            vec![good_offer, (D, pg, 100), (D, pg + 50, 100)],
        ),
        ("65 ranges lent at once (64 allowed)", many),
        (
            "RELEASE of a range never lent",
            vec![good_offer, (R, 0, pg)],
        ),
        ("RELEASE before any OFFER", vec![(R, 0, 16), (R, 0, 16)]),
    ];
    let mut all = true;
    let mut src = BULK_SRC;
    let t0 = Instant::now();
    let mut attacked = 0;
    for i in 0..p.targets.len() {
        let t = p.targets[i];
        // Does this guest serve bulk on `port`?
        match bulk_connect(p, t, src, port) {
            Ok(()) => {}
            Err(e) => {
                println!("# bulk phase: peer {t} does not serve bulk on port {port}: {e}");
                src += 1;
                continue;
            }
        }
        attacked += 1;
        let mut first = Some(src);
        src += 1;
        let mut resets = 0;
        for (what, frames) in &cases {
            let s = match first.take() {
                Some(s) => s,
                None => {
                    let s = src;
                    src += 1;
                    if let Err(e) = bulk_connect(p, t, s, port) {
                        all &= ok(false, format_args!("bulk, peer {t}, {what}: {e}"));
                        continue;
                    }
                    s
                }
            };
            let sent = frames.iter().all(|&f| bulk_frame(p, t, s, port, f));
            let got = p.await_op(t, s, Op::Rst, 5);
            if sent && got == Some(Op::Rst) {
                resets += 1;
            } else {
                all &= ok(
                    false,
                    format_args!("bulk, peer {t}, {what}: sent {sent}, answer {got:?}"),
                );
            }
        }
        all &= ok(
            resets == cases.len(),
            format_args!(
                "bulk: peer {t} reset each of the {} connections with a bad bulk frame \
                 ({resets} RSTs)",
                cases.len()
            ),
        );
        let (good, what) = bulk_good(p, t, &mut src, port, 1);
        all &= ok(
            good,
            format_args!(
                "bulk: peer {t} read the pattern through its mapping and handed the ranges \
                 back: {what}"
            ),
        );
        // A bulk frame with a wrong payload length is a corrupt frame: the guest resyncs
        // the ring and resets every connection with us, this one too.
        let s = src;
        src += 1;
        let sent = bulk_connect(p, t, s, port).is_ok()
            && bulk_frame(p, t, s, port, good_offer)
            && bulk_bad_len(p, t, s, port);
        p.idle(300);
        p.reopen(t);
        let t1 = Instant::now();
        while !p.ready(t) && t1.elapsed() < Duration::from_secs(10) {
            p.idle(10);
        }
        let (good, what) = bulk_good(p, t, &mut src, port, 5);
        all &= ok(
            sent && good,
            format_args!(
                "bulk: after a BULK_DATA with a 16-byte payload (sent {sent}), peer {t} \
                 still serves bulk: {what}"
            ),
        );
        p.idle(200);
    }
    println!(
        "# bulk phase done in {:?} ({attacked} guests served bulk)",
        t0.elapsed()
    );
    all & ok(attacked > 0, "bulk: a guest served bulk on the bulk port")
}
