//! `vmcs-evil`: a hostile vmcs peer, for the `hostile` QEMU scenario (docs/testing.md).
//!
//! ```text
//! vmcs-evil --shm FILE [--port P] [--phase-ms MS] [--seed S] [--expect N] [--reap-secs S]
//!           [--bulk-port P]
//! ```
//!
//! It maps the backing file of an `ivshmem-plain` region (the same file the guests' QEMUs
//! map), joins the peer table through the protocol (`claim_id`, `join_complete`,
//! heartbeats), waits until the `N` live guests have acknowledged its rings and then
//! attacks them in phases of `MS` milliseconds each:
//!
//! - **a, protocol abuse:** `REQUEST`s to port `P` (and then frames on the connections they
//!   open: credit lies, overruns, type mismatches, unsolicited `RESPONSE`s, data after
//!   `SHUTDOWN`, `CREDIT_REQUEST` storms), `RST` storms, data to unbound ports;
//! - **b, ring corruption:** producer index far ahead, backwards and misaligned, epoch
//!   flapping, garbage and over-long frame headers, bad ops/flags/reserved bits, garbage in
//!   its consumer lines of the guests' rings (`cons_idx`, `cons_ack`);
//! - **c, slot garbage:** generation flapping, bogus states, heartbeat jumps in its own
//!   peer slot;
//! - **d, scribbling:** random bytes all over its rings and control lines, continuously;
//! - **bulk** (after a check that the guests still answer): against each guest that
//!   accepts on `--bulk-port` (default 63000; `vmcs-test bulk-evil` there), one
//!   connection per bad bulk frame (docs/protocol.md §8.2), each after the guest's own
//!   `BULK_OFFER`: offers outside our slice, into the next slice, unaligned, empty, huge,
//!   overflowing, a second offer; `BULK_DATA` before an offer, beyond the extent,
//!   overflowing, empty, overlapping a held range, 65 ranges at once; `BULK_RELEASE` of a
//!   range never lent or before any offer. Each must be answered with `RST`. Then one
//!   well-formed transfer (4 ranges of a known pattern in our slice) that the guest hands
//!   back only after reading the pattern through its mapping. (Bulk frames with a wrong
//!   payload length are corrupt frames: phase b writes some.)
//! - **e, death:** it takes its slot back cleanly, beats for a second, then stops beating
//!   without leaving and waits until a guest reaps its slot.
//!
//! It writes only what a peer may write: its own slot, the producer lines and ring data of
//! its channels to the guests and the consumer lines of the guests' channels to it. The
//! rule it tests (docs/protocol.md §0): a bad peer may break its own connections, never a
//! guest's kernel and never the connections between other peers.
//!
//! Output: TAP lines without numbers (`ok - ...`, `not ok - ...`, `# ...`), which
//! qemu-test/run.sh reports as test points. Exit status 0 when every point passed.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::{Duration, Instant};

use vmcs_proto::bulk;
use vmcs_proto::frame::{flags, FrameHeader, Op, SockType, FRAME_HDR_SIZE};
use vmcs_proto::host::SliceShm;
use vmcs_proto::layout::{self, Geometry};
use vmcs_proto::peer::{self, Membership, PeerState};
use vmcs_proto::ring::{ctrl, Channel, Consumer, Producer, RingError};
use vmcs_proto::shm::Shm;

/// First source port of the bulk phase's connections (one port per case).
const BULK_SRC: u32 = 50000;

/// Byte `x` of the pattern written into the first page of our extent for the well-formed
/// bulk connection (the guest's `vmcs-test bulk-evil` checks it with the same function).
fn bulk_pattern(x: usize) -> u8 {
    (x as u8).wrapping_mul(7).wrapping_add(13) ^ (x >> 8) as u8
}

/// A bulk frame of the bulk phase: op and `(off, len)`.
type BulkFrame = (Op, u32, u32);

/// Heartbeat period while the evil peer pretends to be healthy.
const BEAT: Duration = Duration::from_millis(100);

struct Args {
    shm: String,
    port: u32,
    phase_ms: u64,
    seed: u64,
    expect: usize,
    reap_secs: u64,
    bulk_port: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        shm: String::new(),
        port: 7000,
        phase_ms: 3000,
        seed: 0x5eed_0bad_cafe_f00d,
        expect: 2,
        reap_secs: 30,
        bulk_port: 63000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{k}: not a number: {v}"))
        };
        match k.as_str() {
            "--shm" => a.shm = v,
            "--port" => a.port = num(&v)? as u32,
            "--phase-ms" => a.phase_ms = num(&v)?,
            "--seed" => a.seed = num(&v)?.max(1),
            "--expect" => a.expect = num(&v)? as usize,
            "--reap-secs" => a.reap_secs = num(&v)?,
            "--bulk-port" => a.bulk_port = num(&v)? as u32,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.shm.is_empty() {
        return Err(
            "usage: vmcs-evil --shm FILE [--port P] [--phase-ms MS] [--seed S] \
                    [--expect N] [--reap-secs S] [--bulk-port P]"
                .into(),
        );
    }
    Ok(a)
}

/// xorshift64: reproducible attacks from `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn u32(&mut self) -> u32 {
        (self.next() >> 16) as u32
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Maps the whole backing file, shared, for the life of the process.
fn map(path: &str) -> Result<&'static [AtomicU64], String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))?;
    let len = f.metadata().map_err(|e| format!("{path}: {e}"))?.len() as usize;
    if len < layout::MIN_REGION_SIZE || !len.is_multiple_of(8) {
        return Err(format!("{path}: {len} bytes is not a vmcs region"));
    }
    // SAFETY: a fresh shared mapping of the file; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap {path}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `p` is page-aligned and valid for `len` bytes for the rest of the process (it
    // is never unmapped). `AtomicU64` has the size and alignment of `u64`, and every access
    // through `SliceShm::new` is atomic, so concurrent writers (the guests) are no data race.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<AtomicU64>(), len / 8) })
}

#[derive(Default)]
struct Stats {
    sent: u64,
    full: u64,
    rx: [u64; 16],
    rx_corrupt: u64,
    rx_restarted: u64,
    reopened: u64,
    garbage: u64,
    evicted: u64,
}

struct Evil<'a> {
    shm: SliceShm<'a>,
    g: Geometry,
    me: Membership,
    targets: Vec<u32>,
    prod: Vec<Option<Producer>>,
    cons: Vec<Option<Consumer>>,
    rng: Rng,
    beating: bool,
    last_beat: Instant,
    st: Stats,
    /// Source ports of our `REQUEST`s that a guest answered with `RESPONSE`.
    accepted: Vec<(u32, u32)>,
    /// Frames the guests sent to the source ports of the bulk phase.
    bulk_log: Vec<(u32, FrameHeader)>,
}

fn ok(cond: bool, what: impl std::fmt::Display) -> bool {
    println!(
        "{} - hostile peer: {what}",
        if cond { "ok" } else { "not ok" }
    );
    cond
}

impl<'a> Evil<'a> {
    fn chan_out(&self, t: u32) -> Option<Channel> {
        Channel::new(&self.g, self.me.id, t)
    }
    fn chan_in(&self, t: u32) -> Option<Channel> {
        Channel::new(&self.g, t, self.me.id)
    }

    /// Opens every producer (new epochs) and resyncs every consumer.
    fn open_rings(&mut self) {
        for t in 0..self.g.max_peers {
            if t == self.me.id {
                continue;
            }
            self.prod[t as usize] = self.chan_out(t).map(|c| Producer::open(&self.shm, c).0);
            self.cons[t as usize] = self.chan_in(t).map(|c| Consumer::open(&self.shm, c).0);
        }
    }

    /// Takes our slot again with a new generation (after garbage in it, or an eviction).
    fn rejoin(&mut self) -> bool {
        let Ok(mut m) = peer::join_begin(&self.shm, &self.g, self.me.id, peer::JoinMode::Assigned)
        else {
            return false;
        };
        self.me = m;
        self.open_rings();
        if peer::join_complete(&self.shm, &self.g, &mut m).is_err() {
            return false;
        }
        self.me = m;
        self.last_beat = Instant::now();
        true
    }

    fn beat(&mut self) {
        if !self.beating || self.last_beat.elapsed() < BEAT {
            return;
        }
        self.last_beat = Instant::now();
        if peer::heartbeat(&self.shm, &self.g, &mut self.me).is_err() {
            // A guest reaped us (or our own garbage did): come back.
            self.st.evicted += 1;
            self.rejoin();
        }
    }

    /// Beats and drains what the guests sent us.
    fn pump(&mut self) {
        self.beat();
        for i in 0..self.targets.len() {
            let t = self.targets[i];
            let Some(c) = self.cons[t as usize].as_mut() else {
                continue;
            };
            for _ in 0..512 {
                match c.peek(&self.shm) {
                    Ok(Some(f)) => {
                        self.st.rx[(f.hdr.op as usize) & 15] += 1;
                        if (BULK_SRC..BULK_SRC + 256).contains(&f.hdr.dst_port) {
                            self.bulk_log.push((t, f.hdr));
                        }
                        if f.hdr.op == Op::Response {
                            self.accepted.push((t, f.hdr.dst_port));
                        }
                        c.consume(&self.shm, &f);
                    }
                    Ok(None) => break,
                    Err(RingError::Restarted { .. }) => {
                        self.st.rx_restarted += 1;
                        c.resync(&self.shm);
                    }
                    Err(_) => {
                        self.st.rx_corrupt += 1;
                        c.resync(&self.shm);
                        break;
                    }
                }
            }
        }
    }

    /// Pumps for `ms` milliseconds.
    fn idle(&mut self, ms: u64) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(ms) {
            self.pump();
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn reopen(&mut self, t: u32) {
        self.st.reopened += 1;
        self.prod[t as usize] = self.chan_out(t).map(|c| Producer::open(&self.shm, c).0);
    }

    /// Sends one well-formed frame (as far as the ring is concerned).
    fn send(&mut self, t: u32, hdr: FrameHeader, payload: &[u8]) -> bool {
        let Some(p) = self.prod[t as usize].as_mut() else {
            return false;
        };
        match p.send(&self.shm, &hdr, payload) {
            Ok(_) => {
                self.st.sent += 1;
                true
            }
            Err(RingError::Full | RingError::NotReady | RingError::TooBig) => {
                self.st.full += 1;
                false
            }
            Err(_) => {
                self.reopen(t);
                false
            }
        }
    }

    fn ready(&mut self, t: u32) -> bool {
        let h = FrameHeader::new(Op::CreditRequest, SockType::Stream, 1, 1);
        self.prod[t as usize]
            .as_mut()
            .is_some_and(|p| p.reserve(&self.shm, &h).is_ok())
    }

    fn ctrl_off(&self, from: u32, to: u32, field: usize) -> usize {
        self.g.chan_ctrl_off(from, to).unwrap_or(0) + field
    }

    fn max_payload(&self) -> u32 {
        self.chan_out(self.targets[0])
            .map_or(0, |c| c.max_payload())
    }

    /// Pumps until a frame with `op` (or, unless `op` is `RST`, an `RST`) arrives from `t`
    /// for our port `src`, for at most `secs`; returns its op.
    fn await_op(&mut self, t: u32, src: u32, op: Op, secs: u64) -> Option<Op> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            self.pump();
            if let Some(&(_, h)) = self
                .bulk_log
                .iter()
                .find(|(g, h)| *g == t && h.dst_port == src && (h.op == op || h.op == Op::Rst))
            {
                return Some(h.op);
            }
            thread::sleep(Duration::from_millis(1));
        }
        None
    }

    fn bulk_frame(&mut self, t: u32, src: u32, port: u32, f: BulkFrame) -> bool {
        let mut h = FrameHeader::new(f.0, SockType::SeqPacket, src, port);
        h.buf_alloc = 1 << 20;
        let d = bulk::Desc { off: f.1, len: f.2 };
        // The ring may be full for a moment (the 65-range case): retry.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if self.send(t, h, &d.encode()) {
                return true;
            }
            self.idle(2);
        }
        false
    }

    /// Opens a connection from our port `src` to `port` of `t` and waits for the guest's
    /// `BULK_OFFER` (its server called `BULK_SETUP`). `Err` says what happened instead.
    fn bulk_connect(&mut self, t: u32, src: u32, port: u32) -> Result<(), String> {
        let mut h = FrameHeader::new(Op::Request, SockType::SeqPacket, src, port);
        h.buf_alloc = 1 << 20;
        if !self.send(t, h, &[]) {
            return Err("REQUEST not sent".into());
        }
        match self.await_op(t, src, Op::Response, 5) {
            Some(Op::Response) => {}
            Some(op) => return Err(format!("{op:?} instead of RESPONSE")),
            None => return Err("no RESPONSE".into()),
        }
        match self.await_op(t, src, Op::BulkOffer, 10) {
            Some(Op::BulkOffer) => Ok(()),
            Some(op) => Err(format!("{op:?} instead of BULK_OFFER")),
            None => Err("no BULK_OFFER".into()),
        }
    }

    /// Writes a `BULK_DATA` with a 16-byte payload (it must be 8) straight into our ring to
    /// `t` (the producer refuses to send it); the producer is stale afterwards (re-open it).
    fn bulk_bad_len(&mut self, t: u32, src: u32, port: u32) -> bool {
        let me = self.me.id;
        let rs = self.g.ring_size as u32;
        let pi = self.ctrl_off(me, t, ctrl::PROD_IDX);
        let ci = self.ctrl_off(me, t, ctrl::CONS_IDX);
        let Some(data) = self.g.ring_off(me, t) else {
            return false;
        };
        let cur = self.shm.load_u32_relaxed(pi);
        if cur.wrapping_sub(self.shm.load_u32_acquire(ci)) > rs - 64 {
            return false;
        }
        let mut h = FrameHeader::new(Op::BulkData, SockType::SeqPacket, src, port);
        h.len = 16;
        h.buf_alloc = 1 << 20;
        self.shm
            .write_bytes(data + (cur & (rs - 1)) as usize, &h.encode());
        let payload = [0x11u8; 16];
        let at = cur.wrapping_add(FRAME_HDR_SIZE as u32) & (rs - 1);
        self.shm.write_bytes(data + at as usize, &payload);
        self.shm.store_u32_release(pi, cur.wrapping_add(64));
        true
    }

    /// A well-formed transfer on a new connection (from `*src`, tried up to `tries` times
    /// while the guest does not accept): our offer, 4 ranges of the pattern page; the guest
    /// must hand all 4 back (it does so only when it read the pattern), then an orderly
    /// close. Returns whether it worked, and what happened.
    fn bulk_good(&mut self, t: u32, src: &mut u32, port: u32, tries: u32) -> (bool, String) {
        let mut s = *src;
        let mut conn = Err(String::new());
        for _ in 0..tries {
            s = *src;
            *src += 1;
            conn = self.bulk_connect(t, s, port);
            if conn.is_ok() {
                break;
            }
            self.idle(200);
        }
        if let Err(e) = conn {
            return (false, e);
        }
        let ranges: Vec<(u32, u32)> = (0..4).map(|k| (k * 1024, 1024)).collect();
        let sent = self.bulk_frame(t, s, port, (Op::BulkOffer, 0, 8192))
            && ranges
                .iter()
                .all(|&(o, l)| self.bulk_frame(t, s, port, (Op::BulkData, o, l)));
        let t1 = Instant::now();
        let mut back = Vec::new();
        let releases = |b: &Vec<Op>| b.iter().filter(|&&o| o == Op::BulkRelease).count();
        while sent
            && releases(&back) < ranges.len()
            && !back.contains(&Op::Rst)
            && t1.elapsed() < Duration::from_secs(10)
        {
            self.pump();
            back = self
                .bulk_log
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
        self.send(t, sh, &[]);
        let r = FrameHeader::new(Op::Rst, SockType::SeqPacket, s, port);
        self.send(t, r, &[]);
        self.idle(200);
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
    fn bulk_phase(&mut self, port: u32) -> bool {
        let slice = bulk::slice_size(&self.g) as u32;
        let Some(mine) = bulk::slice_off(&self.g, self.me.id) else {
            return ok(false, "bulk phase: the region has no bulk area");
        };
        let pg = 4096u32;
        // Our extent: pages 0 and 1 of our slice; page 0 carries the pattern, page 1 zeros
        // (the bad cases lend ranges of page 1, which the guest holds, never releases).
        let mut ext = vec![0u8; 2 * pg as usize];
        for (x, b) in ext[..pg as usize].iter_mut().enumerate() {
            *b = bulk_pattern(x);
        }
        self.shm.write_bytes(mine, &ext);
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
        for i in 0..self.targets.len() {
            let t = self.targets[i];
            // Does this guest serve bulk on `port`?
            match self.bulk_connect(t, src, port) {
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
                        if let Err(e) = self.bulk_connect(t, s, port) {
                            all &= ok(false, format_args!("bulk, peer {t}, {what}: {e}"));
                            continue;
                        }
                        s
                    }
                };
                let sent = frames.iter().all(|&f| self.bulk_frame(t, s, port, f));
                let got = self.await_op(t, s, Op::Rst, 5);
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
            let (good, what) = self.bulk_good(t, &mut src, port, 1);
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
            let sent = self.bulk_connect(t, s, port).is_ok()
                && self.bulk_frame(t, s, port, good_offer)
                && self.bulk_bad_len(t, s, port);
            self.idle(300);
            self.reopen(t);
            let t1 = Instant::now();
            while !self.ready(t) && t1.elapsed() < Duration::from_secs(10) {
                self.idle(10);
            }
            let (good, what) = self.bulk_good(t, &mut src, port, 5);
            all &= ok(
                sent && good,
                format_args!(
                    "bulk: after a BULK_DATA with a 16-byte payload (sent {sent}), peer {t} \
                     still serves bulk: {what}"
                ),
            );
            self.idle(200);
        }
        println!(
            "# bulk phase done in {:?} ({attacked} guests served bulk)",
            t0.elapsed()
        );
        all & ok(attacked > 0, "bulk: a guest served bulk on the bulk port")
    }

    /// Phase a: frames that decode, with hostile meaning.
    fn protocol_abuse(&mut self, port: u32, ms: u64) {
        let t0 = Instant::now();
        let mp = self.max_payload() as usize;
        let big = vec![0xa5u8; mp];
        let mut k = 0u32;
        while t0.elapsed() < Duration::from_millis(ms) {
            for i in 0..self.targets.len() {
                let t = self.targets[i];
                let src = 40000 + (k % 512);
                let seq = |op| FrameHeader::new(op, SockType::SeqPacket, src, port);
                let mut h = seq(Op::Request);
                h.buf_alloc = 1 << 20;
                match k % 8 {
                    0 => {
                        self.send(t, h, &[]);
                    }
                    1 => {
                        // Data within credit on the connection just requested, then a
                        // CREDIT_REQUEST storm.
                        self.send(t, h, &[]);
                        let mut d = seq(Op::Rw);
                        d.flags = flags::EOM;
                        d.buf_alloc = 1 << 20;
                        self.send(t, d, b"hello from the evil peer");
                        for _ in 0..20 {
                            self.send(t, seq(Op::CreditRequest), &[]);
                        }
                    }
                    2 => {
                        // A credit lie: fwd_cnt acknowledges bytes never sent.
                        self.send(t, h, &[]);
                        let mut d = seq(Op::CreditUpdate);
                        d.buf_alloc = u32::MAX;
                        d.fwd_cnt = 0x8000_0000;
                        self.send(t, d, &[]);
                    }
                    3 => {
                        // Overrun: far more data than the guest's buffer allows.
                        self.send(t, h, &[]);
                        for _ in 0..64 {
                            let mut d = seq(Op::Rw);
                            d.buf_alloc = 1 << 20;
                            if !self.send(t, d, &big) {
                                break;
                            }
                        }
                    }
                    4 => {
                        // Unsolicited RESPONSE, SHUTDOWN then data, a stream frame on a
                        // seqpacket connection.
                        self.send(t, h, &[]);
                        self.send(t, seq(Op::Response), &[]);
                        let mut s = seq(Op::Shutdown);
                        s.flags = flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND;
                        self.send(t, s, &[]);
                        let mut d = seq(Op::Rw);
                        d.flags = flags::EOM;
                        self.send(t, d, b"after shutdown");
                        let d = FrameHeader::new(Op::Rw, SockType::Stream, src, port);
                        self.send(t, d, b"wrong type");
                    }
                    5 => {
                        // RST storm: random ports, and the listener's port from random
                        // sources.
                        for j in 0..64 {
                            let dst = if j % 2 == 0 { port } else { self.rng.u32() };
                            let r =
                                FrameHeader::new(Op::Rst, SockType::SeqPacket, self.rng.u32(), dst);
                            self.send(t, r, &[]);
                        }
                    }
                    6 => {
                        // Data and requests to unbound ports (the guest answers RST).
                        for _ in 0..16 {
                            let dst = 1024 + self.rng.u32() % 60000;
                            let mut d = FrameHeader::new(Op::Rw, SockType::SeqPacket, src, dst);
                            d.flags = flags::EOM;
                            self.send(t, d, b"nobody home");
                            let r = FrameHeader::new(Op::Request, SockType::Stream, src, dst);
                            self.send(t, r, &[]);
                        }
                    }
                    _ => {
                        // Frames on the connections the guest accepted.
                        let acc: Vec<u32> = self
                            .accepted
                            .iter()
                            .filter(|(g, _)| *g == t)
                            .map(|(_, p)| *p)
                            .take(8)
                            .collect();
                        for p in acc {
                            let mut d = FrameHeader::new(Op::Rw, SockType::SeqPacket, p, port);
                            d.flags = flags::EOM;
                            d.fwd_cnt = self.rng.u32();
                            self.send(t, d, b"lie");
                        }
                    }
                }
            }
            k += 1;
            self.pump();
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Phase b: the ring's own fields and headers, broken in every way the consumer checks.
    fn ring_corruption(&mut self, ms: u64) {
        let t0 = Instant::now();
        let mut k = 0u32;
        let rs = self.g.ring_size as u32;
        while t0.elapsed() < Duration::from_millis(ms) {
            for i in 0..self.targets.len() {
                let t = self.targets[i];
                let me = self.me.id;
                let pi = self.ctrl_off(me, t, ctrl::PROD_IDX);
                let pe = self.ctrl_off(me, t, ctrl::PROD_EPOCH);
                let cur = self.shm.load_u32_relaxed(pi) & !31;
                let data = self.g.ring_off(me, t).unwrap_or(0);
                let at = data + (cur & (rs - 1)) as usize;
                let kind = k % 10;
                match kind {
                    0 => self.shm.store_u32_release(pi, cur.wrapping_add(rs * 8)),
                    1 => self.shm.store_u32_release(pi, cur.wrapping_sub(64)),
                    2 => self.shm.store_u32_release(pi, cur.wrapping_add(33)),
                    3 => {
                        for _ in 0..8 {
                            let e = self.rng.u32();
                            self.shm.store_u32_release(pe, e);
                        }
                    }
                    4 => {
                        let mut junk = [0u8; 64];
                        self.rng.fill(&mut junk);
                        self.shm.write_bytes(at, &junk);
                        self.shm.store_u32_release(pi, cur.wrapping_add(64));
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
                        self.shm.write_bytes(at, &b);
                        self.shm
                            .store_u32_release(pi, cur.wrapping_add(FRAME_HDR_SIZE as u32 + 128));
                    }
                    7 => {
                        // Our consumer line of the guest's ring to us.
                        let ci = self.ctrl_off(t, me, ctrl::CONS_IDX);
                        let ca = self.ctrl_off(t, me, ctrl::CONS_ACK);
                        let v = self.rng.u32();
                        self.shm.store_u32_release(ci, v);
                        let v = self.rng.u32();
                        self.shm.store_u32_release(ca, v);
                        self.shm
                            .store_u32_relaxed(self.ctrl_off(t, me, ctrl::CONS_NEED_WAKEUP), 1);
                    }
                    8 => {
                        // A valid frame, then the epoch changes under it.
                        let mut d = FrameHeader::new(Op::Rw, SockType::SeqPacket, 1, 2);
                        d.flags = flags::EOM;
                        self.send(t, d, b"x");
                        self.shm.store_u32_release(pe, 0);
                    }
                    _ => self
                        .shm
                        .store_u32_relaxed(self.ctrl_off(me, t, ctrl::PROD_WANTS_SPACE), 1),
                }
                self.st.garbage += 1;
            }
            self.idle(25);
            for i in 0..self.targets.len() {
                let t = self.targets[i];
                self.reopen(t);
                if let Some(c) = self.cons[t as usize].as_mut() {
                    c.resync(&self.shm);
                }
            }
            self.idle(25);
            k += 1;
        }
    }

    /// Phase c: garbage in our own peer slot.
    fn slot_garbage(&mut self, ms: u64) {
        let off = self.g.peer_slot_off(self.me.id).unwrap_or(0);
        self.beating = false;
        let t0 = Instant::now();
        let gen = self.me.gen;
        while t0.elapsed() < Duration::from_millis(ms) {
            let w = match self.rng.below(6) {
                0 | 1 => peer::state_word(gen.wrapping_add(self.rng.u32() % 4), PeerState::Live),
                2 => peer::state_word(gen, PeerState::Joining),
                3 => peer::state_word(gen, PeerState::Leaving),
                4 => peer::state_word(gen, PeerState::Absent),
                _ => self.rng.u32(),
            };
            self.shm.store_u32_release(off + peer::SLOT_STATE, w);
            let hb = if self.rng.below(2) == 0 {
                self.rng.next()
            } else {
                0
            };
            self.shm.store_u64_release(off + peer::SLOT_HEARTBEAT, hb);
            self.st.garbage += 1;
            self.idle(20);
        }
        self.beating = true;
        if !self.rejoin() {
            println!("# could not take the slot back after the garbage");
        }
    }

    /// Phase d: random bytes into everything we own, continuously.
    fn scribble(&mut self, ms: u64) {
        let t0 = Instant::now();
        let rs = self.g.ring_size;
        let mut junk = vec![0u8; 512];
        while t0.elapsed() < Duration::from_millis(ms) {
            for i in 0..self.targets.len() {
                let t = self.targets[i];
                let me = self.me.id;
                let data = self.g.ring_off(me, t).unwrap_or(0);
                let n = 1 + self.rng.below(junk.len() as u64) as usize;
                let at = self.rng.below((rs - n) as u64) as usize;
                self.rng.fill(&mut junk[..n]);
                self.shm.write_bytes(data + at, &junk[..n]);
                let fields = [
                    self.ctrl_off(me, t, ctrl::PROD_IDX),
                    self.ctrl_off(me, t, ctrl::PROD_EPOCH),
                    self.ctrl_off(me, t, ctrl::PROD_WANTS_SPACE),
                    self.ctrl_off(t, me, ctrl::CONS_IDX),
                    self.ctrl_off(t, me, ctrl::CONS_ACK),
                    self.ctrl_off(t, me, ctrl::CONS_NEED_WAKEUP),
                ];
                let f = fields[self.rng.below(fields.len() as u64) as usize];
                let v = self.rng.u32();
                self.shm.store_u32_release(f, v);
                self.st.garbage += 2;
            }
            self.beat();
            thread::sleep(Duration::from_millis(1));
        }
        self.open_rings();
    }
}

fn run(a: &Args) -> Result<bool, String> {
    let words = map(&a.shm)?;
    let shm = SliceShm::new(words);
    // Never initialise: wait for the guests to have done it.
    let t0 = Instant::now();
    let g = loop {
        let w = shm.load_u32_acquire(layout::hdr::INIT_WORD);
        if w & 3 == layout::INIT_READY {
            break layout::validate(&shm).map_err(|e| format!("region header: {e:?}"))?;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("region never became READY".into());
        }
        thread::sleep(Duration::from_millis(50));
    };
    let n = g.max_peers as usize;
    let mut me = peer::claim_id(&shm, &g).map_err(|e| format!("claim_id: {e:?}"))?;
    let targets: Vec<u32> = (0..g.max_peers)
        .filter(|&p| p != me.id)
        .filter(|&p| peer::snapshot(&shm, &g, p).is_ok_and(|s| s.state == PeerState::Live))
        .collect();
    let mut e = Evil {
        shm,
        g,
        me,
        targets,
        prod: vec![None; n],
        cons: vec![None; n],
        rng: Rng(a.seed),
        beating: true,
        last_beat: Instant::now(),
        st: Stats::default(),
        accepted: Vec::new(),
        bulk_log: Vec::new(),
    };
    e.open_rings();
    peer::join_complete(&shm, &g, &mut me).map_err(|e| format!("join_complete: {e:?}"))?;
    e.me = me;
    let mut all = ok(
        e.targets.len() >= a.expect,
        format_args!(
            "joined as peer {} (generation {}) next to live guests {:?} ({} B rings)",
            me.id, me.gen, e.targets, g.ring_size
        ),
    );
    if e.targets.is_empty() {
        return Ok(false);
    }
    // The guests acknowledge our epochs once they have seen us come up.
    let t0 = Instant::now();
    let mut acked = false;
    while t0.elapsed() < Duration::from_secs(20) {
        e.pump();
        let ts = e.targets.clone();
        if ts.iter().all(|&t| e.ready(t)) {
            acked = true;
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    all &= ok(
        acked,
        format_args!(
            "every guest acknowledged our rings after {:?}",
            t0.elapsed()
        ),
    );

    let ms = a.phase_ms;
    let t = Instant::now();
    e.protocol_abuse(a.port, ms);
    println!(
        "# phase a (protocol abuse) done in {:?}: {} frames sent, {} refused (ring full), \
         guests answered RST {} RESPONSE {} CREDIT_UPDATE {}",
        t.elapsed(),
        e.st.sent,
        e.st.full,
        e.st.rx[Op::Rst as usize],
        e.st.rx[Op::Response as usize],
        e.st.rx[Op::CreditUpdate as usize]
    );
    all &= ok(
        e.st.rx[Op::Rst as usize] > 0,
        "the guests answered bad frames with RST",
    );
    let t = Instant::now();
    e.ring_corruption(ms);
    println!(
        "# phase b (ring corruption) done in {:?}: {} corruptions, {} re-opens",
        t.elapsed(),
        e.st.garbage,
        e.st.reopened
    );
    let t = Instant::now();
    e.slot_garbage(ms);
    println!("# phase c (slot garbage) done in {:?}", t.elapsed());
    let t = Instant::now();
    e.scribble(ms);
    println!(
        "# phase d (scribbling) done in {:?}: {} writes in all; evicted {} times",
        t.elapsed(),
        e.st.garbage,
        e.st.evicted
    );

    // The guests still treat us as a peer: a well-formed frame to an unbound port is
    // answered with RST.
    let rst0 = e.st.rx[Op::Rst as usize];
    let t = Instant::now();
    let mut answered = false;
    while t.elapsed() < Duration::from_secs(15) {
        for i in 0..e.targets.len() {
            let tg = e.targets[i];
            let r = FrameHeader::new(Op::Request, SockType::SeqPacket, 4242, 4243);
            e.send(tg, r, &[]);
        }
        e.idle(100);
        if e.st.rx[Op::Rst as usize] > rst0 {
            answered = true;
            break;
        }
    }
    all &= ok(
        answered,
        format_args!(
            "after the attack the guests still answer a well-formed REQUEST (RST after {:?})",
            t.elapsed()
        ),
    );

    all &= e.bulk_phase(a.bulk_port);

    // Phase e: beat a little with a clean slot, then die without leaving.
    e.rejoin();
    e.idle(1000);
    let off = e.g.peer_slot_off(e.me.id).unwrap_or(0);
    let word = peer::state_word(e.me.gen, PeerState::Live);
    println!("# phase e: heartbeat stops now (generation {})", e.me.gen);
    let t = Instant::now();
    let mut reaped = false;
    while t.elapsed() < Duration::from_secs(a.reap_secs) {
        if e.shm.load_u32_acquire(off + peer::SLOT_STATE) != word {
            reaped = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let now = e.shm.load_u32_acquire(off + peer::SLOT_STATE);
    all &= ok(
        reaped && now & 3 == PeerState::Absent as u32,
        format_args!(
            "a guest reaped our slot {:?} after the heartbeat stopped (state word {now:#x})",
            t.elapsed()
        ),
    );
    println!(
        "# totals: {} frames sent, {} refused, received {:?} by op, {} corrupt and {} \
         re-opened rings from the guests seen",
        e.st.sent, e.st.full, e.st.rx, e.st.rx_corrupt, e.st.rx_restarted
    );
    Ok(all)
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vmcs-evil: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            ok(false, format_args!("set-up: {e}"));
            ExitCode::FAILURE
        }
    }
}
