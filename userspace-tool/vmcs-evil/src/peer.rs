//! A well-behaved host peer of an `ivshmem-plain` region: it maps the region's backing file,
//! claims a peer id, joins, beats, keeps its rings open, and sends and receives frames. The
//! attacks (`crate::attacks`) use it to say what they break.

use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::{Duration, Instant};

use vmcs_proto::frame::{FrameHeader, Op, SockType};
use vmcs_proto::host::SliceShm;
use vmcs_proto::layout::{self, Geometry};
use vmcs_proto::peer::{self, Membership, PeerState};
use vmcs_proto::ring::{Channel, Consumer, Producer, RingAlloc, RingError, Site};
use vmcs_proto::shm::Shm;

/// Heartbeat period while the evil peer pretends to be healthy.
pub const BEAT: Duration = Duration::from_millis(100);

/// xorshift64: reproducible attacks from `--seed`.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn u32(&mut self) -> u32 {
        (self.next() >> 16) as u32
    }
    pub fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Maps the whole backing file, shared, for the life of the process.
pub fn map(path: &str) -> Result<&'static [AtomicU64], String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))?;
    map_file(&f, path)
}

/// Maps all of `f` (named `path` in errors), shared, for the life of the process.
pub fn map_file(f: &File, path: &str) -> Result<&'static [AtomicU64], String> {
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

/// What the peer sent and saw, for the `#` lines.
#[derive(Default)]
pub struct Stats {
    pub sent: u64,
    pub full: u64,
    pub rx: [u64; 16],
    pub rx_corrupt: u64,
    pub rx_restarted: u64,
    pub reopened: u64,
    pub garbage: u64,
    pub evicted: u64,
}

/// Our side of the region: our slot, our producers to each guest and our consumers of
/// their rings to us.
pub struct Peer<'a> {
    pub shm: SliceShm<'a>,
    pub g: Geometry,
    pub me: Membership,
    /// The live guests when we joined.
    pub targets: Vec<u32>,
    pub prod: Vec<Option<Producer>>,
    pub cons: Vec<Option<Consumer>>,
    /// Our rings' places in our transmit area, as a guest keeps them.
    pub alloc: RingAlloc,
    pub rng: Rng,
    /// Whether [`Peer::beat`] advances our heartbeat.
    pub beating: bool,
    pub last_beat: Instant,
    pub st: Stats,
    /// Source ports of our `REQUEST`s that a guest answered with `RESPONSE`.
    pub accepted: Vec<(u32, u32)>,
    /// Our ports whose frames from the guests are kept in `watched`.
    pub watch: Range<u32>,
    /// Frames the guests sent to our ports in `watch`.
    pub watched: Vec<(u32, FrameHeader)>,
}

impl<'a> Peer<'a> {
    /// Joins the region the guests initialised over `words` (we never initialise it: we
    /// wait up to 30 s for it to be READY): claims an id, opens our rings, completes the join.
    /// `assigned`: the id the doorbell server gave us (ivshmem-doorbell), else we claim one.
    pub fn join(
        words: &'a [AtomicU64],
        seed: u64,
        watch: Range<u32>,
        assigned: Option<u32>,
    ) -> Result<Self, String> {
        let shm = SliceShm::new(words);
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
        let mut me = match assigned {
            Some(id) => peer::join_begin(&shm, &g, id, peer::JoinMode::Assigned)
                .map_err(|e| format!("join_begin({id}): {e:?}"))?,
            None => peer::claim_id(&shm, &g).map_err(|e| format!("claim_id: {e:?}"))?,
        };
        let targets: Vec<u32> = (0..g.max_peers)
            .filter(|&p| p != me.id)
            .filter(|&p| peer::snapshot(&shm, &g, p).is_ok_and(|s| s.state == PeerState::Live))
            .collect();
        let mut e = Peer {
            shm,
            g,
            me,
            targets,
            prod: vec![None; n],
            cons: vec![None; n],
            alloc: RingAlloc::new(&g, me.id).ok_or("no transmit area")?,
            rng: Rng(seed),
            beating: true,
            last_beat: Instant::now(),
            st: Stats::default(),
            accepted: Vec::new(),
            watch,
            watched: Vec::new(),
        };
        e.open_rings();
        peer::join_complete(&shm, &g, &mut me).map_err(|e| format!("join_complete: {e:?}"))?;
        e.me = me;
        Ok(e)
    }

    /// Pumps until every guest has acknowledged our rings' epochs (they do once they have
    /// seen us come up), for at most `secs`.
    pub fn await_acks(&mut self, secs: u64) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            self.pump();
            let ts = self.targets.clone();
            if ts.iter().all(|&t| self.ready(t)) {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Whether the guests still treat us as a peer: a well-formed `REQUEST` to an unbound
    /// port, sent every 100 ms for at most `secs`, is answered with `RST`.
    pub fn answers_request(&mut self, secs: u64) -> bool {
        let rst0 = self.st.rx[Op::Rst as usize];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            for i in 0..self.targets.len() {
                let tg = self.targets[i];
                let r = FrameHeader::new(Op::Request, SockType::SeqPacket, 4242, 4243);
                self.send(tg, r, &[]);
            }
            self.idle(100);
            if self.st.rx[Op::Rst as usize] > rst0 {
                return true;
            }
        }
        false
    }

    /// Our ring to `t` (carved from our transmit area on first use).
    pub fn chan_out(&mut self, t: u32) -> Option<Channel> {
        self.alloc.alloc(&self.g, t)
    }

    /// Opens a producer (new epoch, our ring published) towards every live guest and
    /// attaches a consumer to every guest's channel to us.
    pub fn open_rings(&mut self) {
        for t in 0..self.g.max_peers {
            if t == self.me.id {
                continue;
            }
            let out = if self.targets.contains(&t) {
                self.chan_out(t)
            } else {
                None
            };
            self.prod[t as usize] = out.map(|c| Producer::open(&self.shm, c).0);
            self.cons[t as usize] =
                Site::new(&self.g, t, self.me.id).map(|s| Consumer::attach(&self.shm, s).0);
        }
    }

    /// Takes our slot again with a new generation (after garbage in it, or an eviction).
    pub fn rejoin(&mut self) -> bool {
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

    pub fn beat(&mut self) {
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
    pub fn pump(&mut self) {
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
                        if self.watch.contains(&f.hdr.dst_port) {
                            self.watched.push((t, f.hdr));
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
    pub fn idle(&mut self, ms: u64) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(ms) {
            self.pump();
            thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn reopen(&mut self, t: u32) {
        self.st.reopened += 1;
        self.prod[t as usize] = self.chan_out(t).map(|c| Producer::open(&self.shm, c).0);
    }

    /// The epoch our producer line towards `t` shows now, and whether `t` acknowledged it.
    pub fn acked(&self, t: u32) -> bool {
        let e = self.shm.load_u32_acquire(self.ctrl_off(
            self.me.id,
            t,
            vmcs_proto::ring::ctrl::PROD_EPOCH,
        ));
        self.shm
            .load_u32_acquire(self.ctrl_off(self.me.id, t, vmcs_proto::ring::ctrl::CONS_ACK))
            == e
    }

    /// Sends one well-formed frame (as far as the ring is concerned).
    pub fn send(&mut self, t: u32, hdr: FrameHeader, payload: &[u8]) -> bool {
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

    pub fn ready(&mut self, t: u32) -> bool {
        let h = FrameHeader::new(Op::CreditRequest, SockType::Stream, 1, 1);
        self.prod[t as usize]
            .as_mut()
            .is_some_and(|p| p.reserve(&self.shm, &h).is_ok())
    }

    pub fn ctrl_off(&self, from: u32, to: u32, field: usize) -> usize {
        self.g.chan_ctrl_off(from, to).unwrap_or(0) + field
    }

    pub fn max_payload(&mut self) -> u32 {
        let t = self.targets[0];
        self.chan_out(t).map_or(0, |c| c.max_payload())
    }

    /// Pumps until a frame with `op` (or, unless `op` is `RST`, an `RST`) arrives from `t`
    /// for our port `src`, for at most `secs`; returns its op.
    pub fn await_op(&mut self, t: u32, src: u32, op: Op, secs: u64) -> Option<Op> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            self.pump();
            if let Some(&(_, h)) = self
                .watched
                .iter()
                .find(|(g, h)| *g == t && h.dst_port == src && (h.op == op || h.op == Op::Rst))
            {
                return Some(h.op);
            }
            thread::sleep(Duration::from_millis(1));
        }
        None
    }
}
