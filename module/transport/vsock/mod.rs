// SPDX-License-Identifier: GPL-2.0

//! The vsock transport: frames over the guest's own AF_VSOCK (docs/architecture.md, "The
//! vsock transport").
//!
//! One in-kernel vsock stream per pair of peers carries every frame between them, as
//! records: a record is a 32-byte frame header (`proto::frame`, the same encoding as in the
//! rings) and its payload; a header of 32 zero bytes is a keepalive. Each side starts every
//! stream with a [`Preamble`] (magic, version, its incarnation). Streams are made on one
//! well-known vsock port (`vsock_port`): the one listener accepts them, and
//! [`VsockLink::reach`] connects one the first time a connect() names a peer no stream
//! reaches yet. Whoever connects first makes the stream; the accepting side sends on it too
//! once the connector's preamble is validated, so one stream serves both directions (two
//! if both connected at once: each side then sends on its own and receives on both).
//!
//! Peer ids here are vsock cids (the host is 2). A peer is live while a stream to it is
//! usable; a stream that ends (the peer closed it, reset it or died), goes silent for
//! `hb_timeout_ms` (keepalives go every `hb_period_ms`), or sends a bad preamble or a bad
//! record is closed, and if it carried frames the peer is reset ([`Upcalls::peer_reset`]):
//! every connection with it gets `ECONNRESET`. A stream whose preamble was bad, or which
//! never sent one, is closed alone.
//!
//! Sending never sleeps: [`VsockLink::send`] and [`VsockLink::send_user`] append the record
//! to the stream's transmit buffer under a spinlock (`Full` when it has no room) and ask
//! for a receive pass ([`Upcalls::wake_rx`], the domain's rx work), which moves the buffer
//! into the socket with non-blocking sends, reads every stream with non-blocking receives,
//! accepts new streams and reports [`Upcalls::tx_space`]. The sockets' callbacks
//! (`sk_data_ready`, `sk_write_space`, `sk_state_change`; module/glue/vsock.rs) only mark
//! their stream and queue that pass.

use super::{PeerInfo, PeerLoss, SendError, Upcalls};
use crate::{
    glue::{
        sync::SpinLockBh,
        vsock::{Io, SockHook, VsockSocket},
        UserIter,
    },
    proto::frame::{flags, FrameHeader, Op, FRAME_HDR_SIZE, MAX_PAYLOAD},
};
use core::{
    mem::MaybeUninit,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    time::{msecs_to_jiffies, Instant, Jiffies, Monotonic},
};

/// The preamble's magic, "VMCS".
pub(crate) const PREAMBLE_MAGIC: [u8; 4] = *b"VMCS";
/// The version of the vsock stream format this module speaks.
pub(crate) const PREAMBLE_VERSION: u16 = 1;
/// Bytes of a preamble: magic (4), version (2, little endian), flags (2), incarnation (8,
/// little endian).
pub(crate) const PREAMBLE_LEN: usize = 16;
/// Preamble flag: an [`Ident`] (16 bytes) follows the preamble. No other flag is defined.
pub(crate) const PREAMBLE_IDENT: u16 = 1;
/// Bytes of the [`Ident`] after a preamble with [`PREAMBLE_IDENT`].
pub(crate) const IDENT_LEN: usize = 16;
/// Bytes a stream's transmit buffer holds.
const TX_CAP: usize = 256 * 1024;
/// Streams at most (accepted beyond this are closed at once).
const MAX_STREAMS: usize = 64;
/// Records read per stream per pass before the pass yields (and asks for another).
const RX_BUDGET: u32 = 64;
/// Largest chunk moved from a transmit buffer into its socket at a time (one send, so at
/// most one virtio-vsock packet). vhost-device-vsock 0.3.0 between sibling guests loses or
/// garbles bytes of packets of 4000 bytes and more after small ones, also for plain
/// AF_VSOCK programs (checked here with `vmcs-socktest vt-raw-*`); 2048-byte packets came
/// through byte-exact (docs/architecture.md, "The vsock transport").
const TX_CHUNK: usize = 2048;
/// `enum vmcs_peer_state`: `VMCS_PEER_JOINING`, `VMCS_PEER_LIVE`.
const PEER_JOINING: u32 = 1;
const PEER_LIVE: u32 = 2;

/// Tunables, from module parameters.
#[derive(Clone, Copy)]
pub(crate) struct Params {
    /// The well-known vsock port of every stream.
    pub(crate) port: u32,
    /// Keepalive period.
    pub(crate) hb_period_ms: u32,
    /// A stream silent this long is dead.
    pub(crate) hb_timeout_ms: u32,
}

/// The ivshmem identity a peer states after its preamble: it is peer `peer`, generation
/// `generation`, of the region whose identity is `region` (docs/architecture.md "Transport
/// per peer"). It comes from the peer's own vsock stream, so a guest in a shared region
/// cannot claim another guest's vsock cid; it is used only when our own view of that
/// region agrees (the slot is live with that generation).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Ident {
    pub(crate) region: u64,
    pub(crate) peer: u32,
    pub(crate) generation: u32,
}

impl Ident {
    fn encode(&self) -> [u8; IDENT_LEN] {
        let mut b = [0u8; IDENT_LEN];
        b[..8].copy_from_slice(&self.region.to_le_bytes());
        b[8..12].copy_from_slice(&self.peer.to_le_bytes());
        b[12..16].copy_from_slice(&self.generation.to_le_bytes());
        b
    }

    /// Any bytes decode; region 0 (a region without identity) states nothing.
    fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; IDENT_LEN] = b.get(..IDENT_LEN)?.try_into().ok()?;
        let mut r = [0u8; 8];
        r.copy_from_slice(&b[..8]);
        let region = u64::from_le_bytes(r);
        (region != 0).then_some(Self {
            region,
            peer: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            generation: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        })
    }
}

/// The preamble each side sends first on a stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Preamble {
    pub(crate) version: u16,
    /// Random per load of the module: a new one from a cid is a restarted peer.
    pub(crate) incarnation: u64,
    /// Whether an [`Ident`] follows ([`PREAMBLE_IDENT`]).
    pub(crate) ident: bool,
}

impl Preamble {
    pub(crate) fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mut b = [0u8; PREAMBLE_LEN];
        b[..4].copy_from_slice(&PREAMBLE_MAGIC);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        let fl = if self.ident { PREAMBLE_IDENT } else { 0 };
        b[6..8].copy_from_slice(&fl.to_le_bytes());
        b[8..16].copy_from_slice(&self.incarnation.to_le_bytes());
        b
    }

    /// Validates a received preamble: magic, version and flags (none but
    /// [`PREAMBLE_IDENT`]).
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; PREAMBLE_LEN] = b.get(..PREAMBLE_LEN)?.try_into().ok()?;
        let version = u16::from_le_bytes([b[4], b[5]]);
        let fl = u16::from_le_bytes([b[6], b[7]]);
        if b[..4] != PREAMBLE_MAGIC || version != PREAMBLE_VERSION || fl & !PREAMBLE_IDENT != 0 {
            return None;
        }
        let mut inc = [0u8; 8];
        inc.copy_from_slice(&b[8..16]);
        Some(Self {
            version,
            incarnation: u64::from_le_bytes(inc),
            ident: fl & PREAMBLE_IDENT != 0,
        })
    }
}

/// Who to wake when a socket reports an event: the owner's receive pass, from
/// [`VsockLink::start`] until [`VsockLink::stop`].
#[pin_data]
struct Waker {
    #[pin]
    upcalls: SpinLockBh<Option<KBox<dyn Upcalls + Send + Sync>>>,
}

impl Waker {
    fn wake(&self) {
        if let Some(u) = self.upcalls.lock().as_ref() {
            u.wake_rx(false);
        }
    }
}

/// A socket's callback target: marks the stream and asks for a pass.
struct Hook {
    pending: AtomicBool,
    waker: Arc<Waker>,
}

impl SockHook for Hook {
    fn event(&self) {
        self.pending.store(true, Relaxed);
        self.waker.wake();
    }
}

/// Why a stream is closed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kill {
    /// The peer ended or reset the stream, or it failed.
    Closed,
    /// Nothing came for `hb_timeout_ms`.
    Silent,
    /// Its preamble was bad.
    BadPreamble,
    /// A record was bad (header that does not decode).
    BadRecord,
    /// The peer came back with a new incarnation.
    Restarted,
    /// This guest leaves (unbind, unload).
    Unbound,
}

impl Kill {
    fn name(self) -> &'static str {
        match self {
            Kill::Closed => "closed",
            Kill::Silent => "silent",
            Kill::BadPreamble => "bad preamble",
            Kill::BadRecord => "bad record",
            Kill::Restarted => "peer restarted",
            Kill::Unbound => "unbound",
        }
    }

    fn loss(self) -> PeerLoss {
        match self {
            Kill::Closed => PeerLoss::Left,
            Kill::Silent => PeerLoss::HeartbeatTimeout,
            Kill::BadPreamble | Kill::BadRecord => PeerLoss::RingCorrupt,
            Kill::Restarted => PeerLoss::Restarted,
            Kill::Unbound => PeerLoss::Unbound,
        }
    }
}

/// What the receive side waits for next.
#[derive(Clone, Copy)]
enum Need {
    Preamble,
    /// The [`Ident`] after a preamble with [`PREAMBLE_IDENT`] (its incarnation).
    Ident(u64),
    Header,
    Payload(FrameHeader),
}

struct RxState {
    /// A record being read: header or payload (at most `MAX_PAYLOAD` bytes).
    buf: KVec<u8>,
    /// Bytes of the current piece read so far.
    have: usize,
    need: Need,
}

/// A byte ring: the records waiting to go into the socket.
struct TxBuf {
    buf: KVec<u8>,
    head: usize,
    len: usize,
    /// A sender found no room: report `tx_space` once some was freed.
    full: bool,
    /// Records queued (frames and keepalives), for debugfs and the tick.
    records: u64,
}

impl TxBuf {
    fn new() -> Result<Self> {
        let mut buf = KVec::with_capacity(TX_CAP, GFP_KERNEL)?;
        buf.resize(TX_CAP, 0, GFP_KERNEL)?;
        Ok(Self {
            buf,
            head: 0,
            len: 0,
            full: false,
            records: 0,
        })
    }

    fn room(&self) -> usize {
        TX_CAP - self.len
    }

    /// The two segments of `n` free bytes at logical offset `at` (from `head`).
    fn segments(&mut self, at: usize, n: usize) -> (&mut [u8], &mut [u8]) {
        let start = (self.head + at) % TX_CAP;
        let first = n.min(TX_CAP - start);
        let (lo, hi) = self.buf.split_at_mut(start);
        let (a, _) = hi.split_at_mut(first);
        let (b, _) = lo.split_at_mut(n - first);
        (a, b)
    }

    /// Writes `b` at logical offset `at` (`at + b.len() <= TX_CAP`).
    fn write_at(&mut self, at: usize, b: &[u8]) {
        let (x, y) = self.segments(at, b.len());
        let k = x.len();
        x.copy_from_slice(&b[..k]);
        y.copy_from_slice(&b[k..]);
    }

    /// Appends `b`; the caller checked [`TxBuf::room`].
    fn push(&mut self, b: &[u8]) {
        let at = self.len;
        self.write_at(at, b);
        self.len += b.len();
    }

    /// Copies up to `out.len()` queued bytes into `out`, consuming nothing.
    fn peek(&self, out: &mut [u8]) -> usize {
        let n = self.len.min(out.len());
        let first = n.min(TX_CAP - self.head);
        out[..first].copy_from_slice(&self.buf[self.head..self.head + first]);
        out[first..n].copy_from_slice(&self.buf[..n - first]);
        n
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head = (self.head + n) % TX_CAP;
        self.len -= n;
    }
}

/// One vsock stream to a peer.
#[pin_data]
struct Stream {
    /// The peer's vsock cid.
    cid: u32,
    /// We connected it (else accepted).
    outbound: bool,
    sock: VsockSocket<Hook>,
    #[pin]
    rx: Mutex<RxState>,
    #[pin]
    tx: SpinLockBh<TxBuf>,
    /// The peer's preamble was validated: the stream carries its frames.
    up: AtomicBool,
    /// The incarnation in the peer's preamble (0 until then).
    incarnation: AtomicU64,
    /// The ivshmem identity the peer stated after its preamble, if any (set before `up`).
    #[pin]
    ident: SpinLockBh<Option<Ident>>,
    /// Closed: no longer sent to, read or counted.
    dead: AtomicBool,
    /// [`VsockLink::now_ms`] when bytes last came, and went.
    last_rx_ms: AtomicU64,
    last_tx_ms: AtomicU64,
    /// Bytes received on the stream (debugfs, the log).
    rx_bytes: AtomicU64,
}

impl Stream {
    fn hook(&self) -> Option<&Hook> {
        self.sock.hook()
    }
}

/// The vsock transport of a domain.
#[pin_data]
pub(crate) struct VsockLink {
    index: u32,
    local_cid: u32,
    params: Params,
    /// Our preamble's incarnation.
    incarnation: u64,
    t0: Instant<Monotonic>,
    waker: Arc<Waker>,
    /// Accepts the peers' streams on `params.port`; gone after [`VsockLink::leave`].
    #[pin]
    listener: Mutex<Option<VsockSocket<Hook>>>,
    /// Every open stream (the pass reads them all).
    #[pin]
    streams: Mutex<KVec<Arc<Stream>>>,
    /// The stream each peer's frames go on (atomic context: the send paths). The last
    /// reference of a stream is never dropped here: `streams` holds one until it is closed
    /// in process context.
    #[pin]
    tx_map: SpinLockBh<KVec<(u32, Arc<Stream>)>>,
    /// Serialises [`VsockLink::reach`] (one connect at a time).
    #[pin]
    connecting: Mutex<()>,
    /// The pass's bounce buffer between a transmit buffer and its socket.
    #[pin]
    scratch: Mutex<KVec<u8>>,
    /// The ivshmem identity this guest states on the streams it opens from now on
    /// ([`VsockLink::set_ident`]).
    #[pin]
    own_ident: SpinLockBh<Option<Ident>>,
    stopped: AtomicBool,
    /// Counters for debugfs and the log.
    accepted: AtomicU64,
    refused: AtomicU64,
    bad_preambles: AtomicU64,
    bad_records: AtomicU64,
}

impl VsockLink {
    /// A link listening on `params.port`. `ENODEV` when this guest has no vsock transport
    /// to the host (no virtio-vsock device). May sleep.
    pub(crate) fn new(index: u32, params: Params) -> Result<impl PinInit<Self, Error>> {
        let waker = Arc::pin_init(
            pin_init!(Waker {
                upcalls <- SpinLockBh::new(None, c"vmcs_vsock_waker", kernel::static_lock_class!()),
            }),
            GFP_KERNEL,
        )?;
        let (mut listener, local_cid) = VsockSocket::new_listener(params.port, 64)?;
        listener.set_hook(KBox::new(
            Hook {
                pending: AtomicBool::new(true),
                waker: waker.clone(),
            },
            GFP_KERNEL,
        )?)?;
        let mut scratch = KVec::with_capacity(TX_CHUNK, GFP_KERNEL)?;
        scratch.resize(TX_CHUNK, 0, GFP_KERNEL)?;
        let incarnation = crate::glue::random_u64() | 1;
        Ok(try_pin_init!(VsockLink {
            index,
            local_cid,
            params,
            incarnation,
            t0: Instant::<Monotonic>::now(),
            waker,
            listener <- new_mutex!(Some(listener), "vmcs_vsock_listener"),
            streams <- new_mutex!(KVec::new(), "vmcs_vsock_streams"),
            tx_map <- SpinLockBh::new(KVec::new(), c"vmcs_vsock_tx_map", kernel::static_lock_class!()),
            connecting <- new_mutex!((), "vmcs_vsock_connect"),
            scratch <- new_mutex!(scratch, "vmcs_vsock_scratch"),
            own_ident <- SpinLockBh::new(None, c"vmcs_vsock_ident", kernel::static_lock_class!()),
            stopped: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bad_preambles: AtomicU64::new(0),
            bad_records: AtomicU64::new(0),
        }))
    }

    /// Starts waking `up`'s receive pass on socket events.
    pub(crate) fn start(&self, up: KBox<dyn Upcalls + Send + Sync>) {
        *self.waker.upcalls.lock() = Some(up);
        self.waker.wake();
    }

    /// Stops the wakeups and the sends (teardown; then the owner flushes its works and
    /// calls [`VsockLink::leave`]).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Relaxed);
        let up = self.waker.upcalls.lock().take();
        drop(up);
    }

    /// Closes every stream and the listener, resetting every peer.
    pub(crate) fn leave(&self, up: &dyn Upcalls) {
        self.stopped.store(true, Relaxed);
        let listener = self.listener.lock().take();
        drop(listener);
        for s in self.snapshot().iter() {
            self.kill(s, Kill::Unbound, up);
        }
    }

    /// Until [`VsockLink::stop`].
    pub(crate) fn alive(&self) -> bool {
        !self.stopped.load(Relaxed)
    }

    /// This guest's vsock cid.
    pub(crate) fn local_id(&self) -> u32 {
        self.local_cid
    }

    /// The tick period in jiffies.
    pub(crate) fn tick_period(&self) -> Jiffies {
        msecs_to_jiffies(self.params.hb_period_ms).max(1)
    }

    /// The size of a stream's transmit buffer (`VMCS_IOC_GET_INFO`'s ring size).
    pub(crate) fn buffer_size(&self) -> u32 {
        TX_CAP as u32
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(0)
    }

    fn snapshot(&self) -> KVec<Arc<Stream>> {
        let streams = self.streams.lock();
        let mut v = KVec::with_capacity(streams.len(), GFP_KERNEL).unwrap_or_default();
        for s in streams.iter() {
            if v.push(s.clone(), GFP_KERNEL).is_err() {
                break;
            }
        }
        v
    }

    /// A new stream over `sock` (connected or accepted), its preamble queued.
    fn new_stream(
        &self,
        mut sock: VsockSocket<Hook>,
        cid: u32,
        outbound: bool,
    ) -> Result<Arc<Stream>> {
        sock.set_hook(KBox::new(
            Hook {
                pending: AtomicBool::new(true),
                waker: self.waker.clone(),
            },
            GFP_KERNEL,
        )?)?;
        let mut rxbuf = KVec::with_capacity(FRAME_HDR_SIZE + MAX_PAYLOAD as usize, GFP_KERNEL)?;
        rxbuf.resize(FRAME_HDR_SIZE + MAX_PAYLOAD as usize, 0, GFP_KERNEL)?;
        let mut tx = TxBuf::new()?;
        let ident = *self.own_ident.lock();
        tx.push(
            &Preamble {
                version: PREAMBLE_VERSION,
                incarnation: self.incarnation,
                ident: ident.is_some(),
            }
            .encode(),
        );
        if let Some(i) = ident {
            tx.push(&i.encode());
        }
        let now = self.now_ms();
        let s = Arc::pin_init(
            try_pin_init!(Stream {
                cid,
                outbound,
                sock,
                rx <- new_mutex!(RxState { buf: rxbuf, have: 0, need: Need::Preamble }, "vmcs_vsock_rx"),
                tx <- SpinLockBh::new(tx, c"vmcs_vsock_tx", kernel::static_lock_class!()),
                up: AtomicBool::new(false),
                incarnation: AtomicU64::new(0),
                ident <- SpinLockBh::new(None, c"vmcs_vsock_peer_ident", kernel::static_lock_class!()),
                dead: AtomicBool::new(false),
                last_rx_ms: AtomicU64::new(now),
                last_tx_ms: AtomicU64::new(now),
                rx_bytes: AtomicU64::new(0),
            }),
            GFP_KERNEL,
        )?;
        self.streams.lock().push(s.clone(), GFP_KERNEL)?;
        Ok(s)
    }

    /// The stream `peer`'s frames go on, if any: `f` runs under the map's spinlock.
    fn with_tx<R>(&self, peer: u32, f: impl FnOnce(&Stream) -> R) -> Option<R> {
        let map = self.tx_map.lock();
        map.iter()
            .find(|(c, s)| *c == peer && !s.dead.load(Relaxed))
            .map(|(_, s)| f(s))
    }

    /// Makes `s` the stream `peer`'s frames go on, unless one is set.
    fn adopt_tx(&self, s: &Arc<Stream>) -> Result {
        let mut map = self.tx_map.lock();
        if map
            .iter()
            .any(|(c, t)| *c == s.cid && !t.dead.load(Relaxed))
        {
            return Ok(());
        }
        map.push((s.cid, s.clone()), GFP_ATOMIC)?;
        Ok(())
    }

    /// Whether a stream reaches `peer` now.
    pub(crate) fn is_live(&self, peer: u32) -> bool {
        self.with_tx(peer, |s| s.sock.usable()).unwrap_or(false)
    }

    /// Connects a stream to `peer` unless one reaches it (process context, may sleep up to
    /// vsock's connect timeout). Whether `peer` is reachable afterwards.
    pub(crate) fn reach(&self, peer: u32) -> bool {
        if self.is_live(peer) {
            return true;
        }
        // 0 and 1 are vsock's hypervisor and local cids: never a peer (loopback is `VMCS_CID_LOCAL`).
        if self.stopped.load(Relaxed) || peer == self.local_cid || peer == u32::MAX || peer < 2 {
            return false;
        }
        let _one = self.connecting.lock();
        if self.is_live(peer) {
            return true;
        }
        let sock = match VsockSocket::connect(peer, self.params.port) {
            Ok(s) => s,
            Err(_) => return false,
        };
        let s = match self.new_stream(sock, peer, true) {
            Ok(s) => s,
            Err(_) => return false,
        };
        if self.adopt_tx(&s).is_err() {
            return false;
        }
        self.waker.wake();
        pr_info!(
            "vmcs{}: vsock stream to cid {} connected\n",
            self.index,
            peer
        );
        self.is_live(peer)
    }

    /// Queues one frame to `peer` (atomic context; never sleeps).
    pub(crate) fn send(
        &self,
        peer: u32,
        hdr: &FrameHeader,
        payload: &[u8],
    ) -> Result<(), SendError> {
        if self.stopped.load(Relaxed) {
            return Err(SendError::Shutdown);
        }
        let len = u32::try_from(payload.len()).map_err(|_| SendError::Invalid)?;
        if len > MAX_PAYLOAD {
            return Err(SendError::Invalid);
        }
        let mut h = *hdr;
        h.len = len;
        if h.validate().is_err() {
            return Err(SendError::Invalid);
        }
        let r = self
            .with_tx(peer, |s| {
                let mut tx = s.tx.lock();
                if tx.room() < FRAME_HDR_SIZE + payload.len() {
                    tx.full = true;
                    return Err(SendError::Full);
                }
                tx.push(&h.encode());
                tx.push(payload);
                tx.records += 1;
                Ok(())
            })
            .unwrap_or(Err(SendError::Unreachable));
        if r.is_ok() {
            self.waker.wake();
        }
        r
    }

    /// Queues one data frame whose payload is copied from user memory with page faults
    /// disabled (see `Transport::send_user`). Returns the bytes sent.
    pub(crate) fn send_user(
        &self,
        peer: u32,
        hdr: &FrameHeader,
        src: &mut UserIter<'_>,
    ) -> Result<usize, SendError> {
        if self.stopped.load(Relaxed) {
            return Err(SendError::Shutdown);
        }
        if hdr.len > MAX_PAYLOAD || hdr.len as usize > src.len() || hdr.validate().is_err() {
            return Err(SendError::Invalid);
        }
        let want = hdr.len as usize;
        let r = self
            .with_tx(peer, |s| {
                let mut tx = s.tx.lock();
                if tx.room() < FRAME_HDR_SIZE + want {
                    tx.full = true;
                    return Err(SendError::Full);
                }
                let at = tx.len;
                let (a, b) = tx.segments(at + FRAME_HDR_SIZE, want);
                let mut copied = copy_in(src, a);
                if copied == a.len() {
                    copied += copy_in(src, b);
                }
                if copied == 0 {
                    return Ok(0);
                }
                let mut h = *hdr;
                if copied < want {
                    // Cut short by a page not present: a shorter frame, not the message's end.
                    h.len = copied as u32;
                    h.flags &= !(flags::EOM | flags::EOR);
                }
                tx.write_at(at, &h.encode());
                tx.len += FRAME_HDR_SIZE + copied;
                tx.records += 1;
                Ok(copied)
            })
            .unwrap_or(Err(SendError::Unreachable));
        if matches!(r, Ok(n) if n > 0) {
            self.waker.wake();
        }
        r
    }

    /// Whether every transmit buffer is empty.
    pub(crate) fn tx_drained(&self) -> bool {
        let map = self.tx_map.lock();
        map.iter()
            .all(|(_, s)| s.dead.load(Relaxed) || s.tx.lock().len == 0)
    }

    /// The receive pass: accepts new streams, moves transmit buffers into their sockets,
    /// reads every stream and delivers its frames. Returns whether work is left (the owner
    /// queues another pass at once).
    pub(crate) fn poll_rx(&self, up: &dyn Upcalls) -> bool {
        if self.stopped.load(Relaxed) {
            return false;
        }
        self.accept_all();
        let mut more = false;
        for s in self.snapshot().iter() {
            if s.dead.load(Relaxed) {
                continue;
            }
            if let Some(h) = s.hook() {
                h.pending.store(false, Relaxed);
            }
            if let Err(k) = self.flush(s, up) {
                self.kill(s, k, up);
                continue;
            }
            match self.read(s, up) {
                Ok(m) => more |= m,
                Err(k) => {
                    self.kill(s, k, up);
                    continue;
                }
            }
            if !s.sock.usable() {
                self.kill(s, Kill::Closed, up);
            }
        }
        more
    }

    fn accept_all(&self) {
        let listener = self.listener.lock();
        let Some(l) = listener.as_ref() else {
            return;
        };
        if let Some(h) = l.hook() {
            if !h.pending.swap(false, Relaxed) {
                return;
            }
        }
        loop {
            let (sock, cid) = match l.accept() {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(_) => continue,
            };
            if self.streams.lock().len() >= MAX_STREAMS {
                self.refused.fetch_add(1, Relaxed);
                drop(sock);
                continue;
            }
            if self.new_stream(sock, cid, false).is_ok() {
                self.accepted.fetch_add(1, Relaxed);
            }
        }
    }

    /// Moves `s`'s transmit buffer into its socket as far as it takes it.
    fn flush(&self, s: &Stream, up: &dyn Upcalls) -> Result<(), Kill> {
        let mut freed = false;
        {
            let mut scratch = self.scratch.lock();
            loop {
                let k = s.tx.lock().peek(&mut scratch);
                if k == 0 {
                    break;
                }
                match s.sock.send(&scratch[..k]) {
                    Io::Moved(n) => {
                        s.tx.lock().consume(n);
                        freed = true;
                        s.last_tx_ms.store(self.now_ms(), Relaxed);
                        if n < k {
                            break;
                        }
                    }
                    Io::Again => break,
                    Io::Closed | Io::Failed => return Err(Kill::Closed),
                }
            }
        }
        if freed {
            let was_full = {
                let mut tx = s.tx.lock();
                core::mem::replace(&mut tx.full, false)
            };
            if was_full {
                up.tx_space(s.cid);
            }
        }
        Ok(())
    }

    /// Reads `s` and delivers whole records, at most [`RX_BUDGET`]. `Ok(true)`: more may
    /// be waiting.
    fn read(&self, s: &Arc<Stream>, up: &dyn Upcalls) -> Result<bool, Kill> {
        let mut rx = s.rx.lock();
        for _ in 0..RX_BUDGET {
            let want = match rx.need {
                Need::Preamble => PREAMBLE_LEN,
                Need::Ident(_) => IDENT_LEN,
                Need::Header => FRAME_HDR_SIZE,
                Need::Payload(h) => h.len as usize,
            };
            while rx.have < want {
                let have = rx.have;
                match s.sock.recv(&mut rx.buf[have..want]) {
                    Io::Moved(n) => {
                        rx.have += n;
                        s.rx_bytes.fetch_add(n as u64, Relaxed);
                        s.last_rx_ms.store(self.now_ms(), Relaxed);
                    }
                    Io::Again => return Ok(false),
                    Io::Closed | Io::Failed => return Err(Kill::Closed),
                }
            }
            rx.have = 0;
            match rx.need {
                Need::Preamble => {
                    let Some(p) = Preamble::decode(&rx.buf[..PREAMBLE_LEN]) else {
                        self.bad_preambles.fetch_add(1, Relaxed);
                        return Err(Kill::BadPreamble);
                    };
                    if p.ident {
                        rx.need = Need::Ident(p.incarnation);
                        continue;
                    }
                    rx.need = Need::Header;
                    self.stream_up(s, p.incarnation, up)?;
                }
                Need::Ident(incarnation) => {
                    *s.ident.lock() = Ident::decode(&rx.buf[..IDENT_LEN]);
                    rx.need = Need::Header;
                    self.stream_up(s, incarnation, up)?;
                }
                Need::Header => {
                    let mut b = [0u8; FRAME_HDR_SIZE];
                    b.copy_from_slice(&rx.buf[..FRAME_HDR_SIZE]);
                    if b == [0u8; FRAME_HDR_SIZE] {
                        continue; // keepalive
                    }
                    let h = match FrameHeader::decode(&b) {
                        Ok(h) if h.op != Op::Eth => h,
                        r => {
                            pr_info!(
                                "vmcs{}: vsock cid {}: bad record header {:02x?} ({:?}) after {} bytes\n",
                                self.index,
                                s.cid,
                                b,
                                r.err(),
                                s.rx_bytes.load(Relaxed)
                            );
                            self.bad_records.fetch_add(1, Relaxed);
                            return Err(Kill::BadRecord);
                        }
                    };
                    if h.len == 0 {
                        up.deliver(s.cid, &h, &(&[] as &[u8]));
                    } else {
                        rx.need = Need::Payload(h);
                    }
                }
                Need::Payload(h) => {
                    rx.need = Need::Header;
                    let payload: &[u8] = &rx.buf[..h.len as usize];
                    up.deliver(s.cid, &h, &payload);
                }
            }
        }
        Ok(true)
    }

    /// `s`'s preamble (and ident) were read: it carries the peer's frames from now on.
    fn stream_up(&self, s: &Arc<Stream>, incarnation: u64, up: &dyn Upcalls) -> Result<(), Kill> {
        s.incarnation.store(incarnation, Relaxed);
        s.up.store(true, Relaxed);
        self.restarted_peer(s, incarnation, up);
        self.adopt_tx(s).map_err(|_| Kill::Closed)
    }

    /// Sets the ivshmem identity this guest states on the streams it opens or accepts from
    /// now on (the domain layer: an ivshmem domain was bound or unbound). Streams already
    /// open keep the one they sent; a peer checks it against the region, so a stale one
    /// only makes it use vsock.
    pub(crate) fn set_ident(&self, ident: Option<Ident>) {
        *self.own_ident.lock() = ident;
    }

    /// The ivshmem identity `cid` stated on a stream that is up, waiting up to `wait_ms`
    /// for the preamble of a stream just connected (process context; may sleep).
    pub(crate) fn peer_ident(&self, cid: u32, wait_ms: u32) -> Option<Ident> {
        let mut waited = 0;
        loop {
            let mut any = false;
            for s in self.snapshot().iter() {
                if s.cid != cid || s.dead.load(Relaxed) {
                    continue;
                }
                any = true;
                if s.up.load(Relaxed) {
                    if let Some(i) = *s.ident.lock() {
                        return Some(i);
                    }
                }
            }
            let up = self.with_tx(cid, |s| s.up.load(Relaxed)).unwrap_or(false);
            if up || !any || waited >= wait_ms || self.stopped.load(Relaxed) {
                return None;
            }
            kernel::time::delay::fsleep(kernel::time::Delta::from_millis(5));
            waited += 5;
        }
    }

    /// The one cid whose stream stated `ident` (none if no stream or more than one cid
    /// did: the name is then ambiguous).
    pub(crate) fn cid_of(&self, ident: Ident) -> Option<u32> {
        let mut found = None;
        for s in self.snapshot().iter() {
            if s.dead.load(Relaxed) || !s.up.load(Relaxed) || *s.ident.lock() != Some(ident) {
                continue;
            }
            match found {
                None => found = Some(s.cid),
                Some(c) if c == s.cid => {}
                Some(_) => return None,
            }
        }
        found
    }

    /// `s` validated a preamble with `incarnation`: other streams of its cid that came
    /// from another incarnation belong to a peer that restarted, and are closed.
    fn restarted_peer(&self, s: &Arc<Stream>, incarnation: u64, up: &dyn Upcalls) {
        for o in self.snapshot().iter() {
            let inc = o.incarnation.load(Relaxed);
            if o.cid == s.cid && !Arc::ptr_eq(o, s) && inc != 0 && inc != incarnation {
                self.kill(o, Kill::Restarted, up);
            }
        }
    }

    /// Closes `s`; resets its peer if the stream carried frames.
    fn kill(&self, s: &Arc<Stream>, why: Kill, up: &dyn Upcalls) {
        if s.dead.swap(true, Relaxed) {
            return;
        }
        let was_tx = {
            let mut map = self.tx_map.lock();
            let before = map.len();
            map.retain(|(_, t)| !Arc::ptr_eq(t, s));
            map.len() != before
        };
        self.streams.lock().retain(|t| !Arc::ptr_eq(t, s));
        let carried = was_tx || s.up.load(Relaxed);
        if why != Kill::Unbound {
            pr_info!(
                "vmcs{}: vsock stream {} cid {}: {}{}\n",
                self.index,
                if s.outbound { "to" } else { "from" },
                s.cid,
                why.name(),
                if carried { ", peer reset" } else { "" }
            );
        }
        s.sock.shutdown();
        if carried {
            up.peer_reset(s.cid, why.loss());
        }
    }

    /// The tick: keepalives on idle streams we send on, and silent streams closed.
    pub(crate) fn tick(&self, up: &dyn Upcalls) {
        if self.stopped.load(Relaxed) {
            return;
        }
        let now = self.now_ms();
        let streams = self.snapshot();
        let mut wake = false;
        for s in streams.iter() {
            if s.dead.load(Relaxed) {
                continue;
            }
            let idle = now.saturating_sub(s.last_tx_ms.load(Relaxed));
            if s.up.load(Relaxed) || s.outbound {
                if idle >= u64::from(self.params.hb_period_ms) {
                    let mut tx = s.tx.lock();
                    if tx.len == 0 {
                        tx.push(&[0u8; FRAME_HDR_SIZE]);
                        wake = true;
                    }
                }
            }
            // A peer is heard on any of its streams.
            let heard = streams
                .iter()
                .filter(|o| o.cid == s.cid && !o.dead.load(Relaxed))
                .map(|o| o.last_rx_ms.load(Relaxed))
                .max()
                .unwrap_or(0);
            if now.saturating_sub(heard) > u64::from(self.params.hb_timeout_ms) {
                self.kill(s, Kill::Silent, up);
            }
        }
        if wake {
            self.waker.wake();
        }
    }

    /// `VMCS_IOC_GET_INFO`'s peers: every cid a stream reaches.
    pub(crate) fn peers(&self, out: &mut KVec<PeerInfo>) -> Result {
        let now = self.now_ms();
        for s in self.snapshot().iter() {
            if s.dead.load(Relaxed) || out.iter().any(|p| p.id == s.cid) {
                continue;
            }
            let age = now.saturating_sub(s.last_rx_ms.load(Relaxed));
            out.push(
                PeerInfo {
                    id: s.cid,
                    state: if self.is_live(s.cid) {
                        PEER_LIVE
                    } else {
                        PEER_JOINING
                    },
                    generation: 0,
                    heartbeat_age_ms: u32::try_from(age).unwrap_or(u32::MAX),
                },
                GFP_KERNEL,
            )?;
        }
        Ok(())
    }

    /// debugfs `peers` (the streams).
    pub(crate) fn show_peers(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(
            f,
            "vsock cid {} port {}: accepted {} refused {} bad_preambles {} bad_records {}",
            self.local_cid,
            self.params.port,
            self.accepted.load(Relaxed),
            self.refused.load(Relaxed),
            self.bad_preambles.load(Relaxed),
            self.bad_records.load(Relaxed)
        )?;
        writeln!(f, "cid dir up tx queued_bytes records ident")?;
        for s in self.snapshot().iter() {
            let is_tx = self
                .with_tx(s.cid, |t| core::ptr::eq(t, &**s))
                .unwrap_or(false);
            let (queued, records) = {
                let tx = s.tx.lock();
                (tx.len, tx.records)
            };
            write!(
                f,
                "{} {} {} {} {} {} ",
                s.cid,
                if s.outbound { "out" } else { "in" },
                u8::from(s.up.load(Relaxed)),
                u8::from(is_tx),
                queued,
                records
            )?;
            match *s.ident.lock() {
                Some(i) => writeln!(f, "{:x}:{}:{}", i.region, i.peer, i.generation)?,
                None => writeln!(f, "-")?,
            }
        }
        Ok(())
    }
}

/// Copies from user memory into `dst` with page faults disabled; the bytes copied.
fn copy_in(src: &mut UserIter<'_>, dst: &mut [u8]) -> usize {
    if dst.is_empty() {
        return 0;
    }
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; `read_nofault` only writes
    // initialised bytes (copied from user memory) into it, so `dst` stays initialised.
    let dst = unsafe {
        core::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<MaybeUninit<u8>>(), dst.len())
    };
    src.read_nofault(dst)
}
