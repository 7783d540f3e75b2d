// SPDX-License-Identifier: GPL-2.0

//! One endpoint of the core: unbound, bound, listening, or one side of a connection.
//!
//! Every `Sock` has one mutex (`state`) and one poll-capable wait queue (`wq`); every state
//! change wakes all waiters. Frames of a connection leave in order through its transmit queue
//! (`txq`), which is stamped with the current credit (`buf_alloc`, `fwd_cnt`) only when a
//! frame actually goes to the transport, and always under `state`: so the peer sees the
//! credit counters of one connection move forward only.
//!
//! Locking (docs/architecture.md): a `Sock`'s mutex may be held while taking the core's
//! table lock or loopback lock and while calling `Link::send`; never two `Sock` mutexes at
//! once; never a `Sock` mutex while user memory is copied.

mod bulk;

use super::{Core, MAX_BACKLOG, MAX_RCVBUF};
use crate::{
    ffi::{errno, poll_mask},
    proto::{
        flow::{RxCredit, TxCredit, MAX_BUF_ALLOC},
        frame::{flags, FrameHeader, Op, SockType},
    },
    transport::SendError,
    uapi,
};
use kernel::{
    fs::File,
    new_poll_condvar,
    prelude::*,
    sync::{
        new_mutex, poll::PollCondVar, poll::PollTable, Arc, CondVarTimeoutResult, Mutex, MutexGuard,
    },
    time::{msecs_to_jiffies, Jiffies},
};

/// Default receive buffer (credit) of a connection.
pub(crate) const DEFAULT_RCVBUF: u32 = 256 * 1024;
/// Default bytes of queued, not yet transmitted messages above which writers wait for ring
/// space (AF_VMCS `SO_SNDBUF` sets it per socket).
pub(crate) const TXQ_MAX: usize = 256 * 1024;
/// Smallest transmit queue limit `SO_SNDBUF` may set.
pub(crate) const MIN_TXQ: usize = 4 << 10;
/// Largest transmit queue limit `SO_SNDBUF` may set.
pub(crate) const MAX_TXQ: usize = 4 << 20;
/// Unread empty messages a receiver holds at most (non-empty ones are bounded by credit).
const MAX_EMPTY_MSGS: usize = 1024;
/// Default connect timeout, as vsock's.
const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 2000;

/// How long a call may sleep, in jiffies, as `sk_rcvtimeo`/`sk_sndtimeo`: 0 is not at all
/// (non-blocking), [`Timeo::FOREVER`] (`MAX_SCHEDULE_TIMEOUT`) is without a limit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Timeo(pub(crate) kernel::ffi::c_long);

impl Timeo {
    /// No time limit (`MAX_SCHEDULE_TIMEOUT`).
    pub(crate) const FOREVER: Self = Self(kernel::ffi::c_long::MAX);

    /// `FOREVER`, or 0 when `nonblock`.
    pub(crate) fn blocking(nonblock: bool) -> Self {
        if nonblock {
            Self(0)
        } else {
            Self::FOREVER
        }
    }
}

/// Where an endpoint is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    /// Fresh: no port.
    Idle,
    /// Has a port (bind, or a connect that failed).
    Bound,
    /// Accepts connection requests.
    Listening,
    /// `REQUEST` sent, waiting for `RESPONSE` or `RST`.
    Connecting,
    /// Connected.
    Connected,
    /// Released with frames still queued for the ring: lingers until they are sent.
    Closing,
    /// Connection over (reset, or closed by both sides), or endpoint released.
    Closed,
}

/// Per-connection counters (`ss`-like listing, debugfs).
#[derive(Clone, Copy, Default)]
pub(crate) struct Stats {
    pub(crate) tx_bytes: u64,
    pub(crate) tx_msgs: u64,
    pub(crate) rx_bytes: u64,
    pub(crate) rx_msgs: u64,
    pub(crate) resets: u32,
}

/// What [`Sock::pump_frames`] did.
#[derive(Clone, Copy, Default)]
pub(super) struct Pumped {
    /// At least one frame went out.
    pub(super) sent: bool,
    /// The transport took no more (`tx_space` follows).
    pub(super) full: bool,
}

/// One queued outgoing item.
enum TxItem {
    /// A control frame without payload.
    Ctrl { op: Op, flags: u32 },
    /// A message, sent as RW frames of at most the peer's max payload, the last with EOM.
    Msg { data: KVec<u8>, off: usize },
    /// A bulk area frame (conn/bulk.rs) with its descriptor.
    Bulk {
        op: Op,
        desc: crate::proto::bulk::Desc,
    },
}

/// Received messages: payload bytes back to back, plus one length per complete message.
///
/// Bounded: the bytes by the receive credit (an overrun resets the connection before it is
/// queued), the partial message by `VMCS_MAX_MSG_SIZE`, empty messages by `MAX_EMPTY_MSGS`.
#[derive(Default)]
struct RxQueue {
    data: KVVec<u8>,
    dhead: usize,
    lens: KVVec<u32>,
    lhead: usize,
    /// Bytes of the message being assembled (after the last complete one).
    partial: usize,
    empty: usize,
}

impl RxQueue {
    fn msgs(&self) -> usize {
        self.lens.len() - self.lhead
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    /// Appends one fragment; `Err` means the peer broke the message limits.
    fn push(&mut self, payload: &[u8], eom: bool) -> Result {
        let partial = self.partial + payload.len();
        if partial > uapi::MAX_MSG_SIZE as usize {
            return Err(EMSGSIZE);
        }
        if eom && partial == 0 && self.empty >= MAX_EMPTY_MSGS {
            return Err(ENOSPC);
        }
        self.data.extend_from_slice(payload, GFP_KERNEL)?;
        self.partial = partial;
        if eom {
            // `partial` is at most `MAX_MSG_SIZE`, so it fits in u32.
            self.lens.push(partial as u32, GFP_KERNEL)?;
            if partial == 0 {
                self.empty += 1;
            }
            self.partial = 0;
        }
        Ok(())
    }

    /// Removes the oldest complete message; returns its first `max` bytes and its length.
    fn pop(&mut self, max: usize) -> Result<Option<(KVec<u8>, usize)>> {
        let Some((out, len)) = self.peek(max)? else {
            return Ok(None);
        };
        self.dhead += len;
        self.lhead += 1;
        if len == 0 {
            self.empty = self.empty.saturating_sub(1);
        }
        self.compact();
        Ok(Some((out, len)))
    }

    /// The oldest complete message left in place (`MSG_PEEK`): its first `max` bytes and
    /// its length.
    fn peek(&self, max: usize) -> Result<Option<(KVec<u8>, usize)>> {
        let Some(&len) = self.lens.get(self.lhead) else {
            return Ok(None);
        };
        let len = len as usize;
        let n = len.min(max);
        let mut out = KVec::with_capacity(n, GFP_KERNEL)?;
        out.extend_from_slice(&self.data[self.dhead..self.dhead + n], GFP_KERNEL)?;
        Ok(Some((out, len)))
    }

    /// Bytes of complete messages not yet read.
    fn unread(&self) -> usize {
        self.data.len() - self.dhead - self.partial
    }

    /// Byte-stream read: up to `max` bytes across message boundaries; a message read in
    /// part keeps its rest at the front. With `peek` nothing is consumed.
    fn take_bytes(&mut self, max: usize, peek: bool) -> Result<KVec<u8>> {
        let n = self.unread().min(max);
        let mut out = KVec::with_capacity(n, GFP_KERNEL)?;
        out.extend_from_slice(&self.data[self.dhead..self.dhead + n], GFP_KERNEL)?;
        if peek {
            return Ok(out);
        }
        let mut left = n;
        while let Some(len) = self.lens.get_mut(self.lhead) {
            let take = (*len as usize).min(left);
            // `take` is at most `*len`, a u32.
            *len -= take as u32;
            left -= take;
            self.dhead += take;
            if *len != 0 {
                break;
            }
            if take == 0 {
                self.empty = self.empty.saturating_sub(1);
            }
            self.lhead += 1;
            if left == 0 {
                break;
            }
        }
        self.compact();
        Ok(out)
    }

    /// Moves the unread bytes and lengths to the front once the read part dominates.
    fn compact(&mut self) {
        if self.dhead == self.data.len() {
            self.data.clear();
            self.dhead = 0;
        } else if self.dhead >= 4096 && self.dhead * 2 >= self.data.len() {
            self.data.copy_within(self.dhead.., 0);
            let keep = self.data.len() - self.dhead;
            self.data.truncate(keep);
            self.dhead = 0;
        }
        if self.lhead == self.lens.len() {
            self.lens.clear();
            self.lhead = 0;
        } else if self.lhead >= 1024 && self.lhead * 2 >= self.lens.len() {
            self.lens.copy_within(self.lhead.., 0);
            let keep = self.lens.len() - self.lhead;
            self.lens.truncate(keep);
            self.lhead = 0;
        }
    }
}

/// The mutable state of a [`Sock`].
pub(crate) struct State {
    pub(crate) phase: Phase,
    /// Local port, once bound.
    pub(crate) port: Option<u32>,
    /// Peer id and port of the connection (valid from `Connecting` on).
    pub(crate) peer: u32,
    pub(crate) peer_port: u32,
    ty: SockType,
    /// `VMCS_OPT_NONBLOCK`.
    pub(crate) nonblock: bool,
    rcvbuf: u32,
    /// Limit of `txq_bytes` (`SO_SNDBUF`).
    sndbuf: usize,
    tx: TxCredit,
    /// The peer's last advertised receive buffer (clamped).
    peer_buf_alloc: u32,
    rx: RxCredit,
    txq: KVec<TxItem>,
    /// Payload bytes in `txq` not yet handed to the transport.
    txq_bytes: usize,
    rxq: RxQueue,
    /// `SHUTDOWN_RCV`/`SHUTDOWN_SEND` bits the peer sent.
    peer_shut: u32,
    /// `SHUTDOWN_RCV`/`SHUTDOWN_SEND` bits we sent (or will send).
    local_shut: u32,
    /// Sticky error: `ECONNRESET` after a reset, `ECONNREFUSED` after a refused connect.
    err: Option<Error>,
    was_connected: bool,
    backlog: usize,
    pending: KVec<Arc<Sock>>,
    pub(crate) stats: Stats,
    /// Zero-copy bulk area of the connection (conn/bulk.rs).
    bulk: bulk::BulkState,
}

impl State {
    fn new(ty: SockType) -> Self {
        Self {
            phase: Phase::Idle,
            port: None,
            peer: 0,
            peer_port: 0,
            ty,
            nonblock: false,
            rcvbuf: DEFAULT_RCVBUF,
            sndbuf: TXQ_MAX,
            tx: TxCredit::new(),
            peer_buf_alloc: 0,
            rx: RxCredit::new(DEFAULT_RCVBUF),
            txq: KVec::new(),
            txq_bytes: 0,
            rxq: RxQueue::default(),
            peer_shut: 0,
            local_shut: 0,
            err: None,
            was_connected: false,
            backlog: 0,
            pending: KVec::new(),
            stats: Stats::default(),
            bulk: bulk::BulkState::default(),
        }
    }

    /// Fresh connection state towards `peer:peer_port`.
    fn start_conn(&mut self, peer: u32, peer_port: u32) {
        self.peer = peer;
        self.peer_port = peer_port;
        self.tx = TxCredit::new();
        self.peer_buf_alloc = 0;
        self.rx = RxCredit::new(self.rcvbuf);
        self.txq.clear();
        self.txq_bytes = 0;
        self.rxq.clear();
        self.peer_shut = 0;
        self.local_shut = 0;
        self.err = None;
    }

    fn apply_peer_credit(&mut self, hdr: &FrameHeader) -> Result {
        self.tx
            .on_peer_credit(hdr.buf_alloc, hdr.fwd_cnt)
            .map_err(|_| errno::econnreset())?;
        self.peer_buf_alloc = hdr.buf_alloc.min(MAX_BUF_ALLOC);
        Ok(())
    }

    /// Queues a control frame; credit updates already queued are not repeated (the stamp is
    /// taken when the frame leaves, so one carries the newest counters).
    fn queue_ctrl(&mut self, op: Op, fl: u32) -> Result {
        if op == Op::CreditUpdate
            && self.txq.iter().any(|i| {
                matches!(
                    i,
                    TxItem::Ctrl {
                        op: Op::CreditUpdate,
                        ..
                    }
                )
            })
        {
            return Ok(());
        }
        self.txq.push(TxItem::Ctrl { op, flags: fl }, GFP_KERNEL)?;
        Ok(())
    }

    fn is_conn(&self) -> bool {
        matches!(self.phase, Phase::Connecting | Phase::Connected)
    }
}

/// An endpoint of the core.
#[pin_data]
pub(crate) struct Sock {
    #[pin]
    pub(crate) state: Mutex<State>,
    #[pin]
    wq: PollCondVar,
}

impl Sock {
    /// Creates an unbound endpoint of type `ty`.
    pub(crate) fn new(ty: SockType) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                state <- new_mutex!(State::new(ty), "vmcs_sock"),
                wq <- new_poll_condvar!("vmcs_sock_wq"),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// Creates the accepted side of a connection requested by `hdr` from `peer`; its first
    /// queued frame is the `RESPONSE`.
    fn new_child(
        port: u32,
        peer: u32,
        hdr: &FrameHeader,
        (rcvbuf, sndbuf): (u32, usize),
    ) -> Result<Arc<Self>> {
        let mut st = State::new(hdr.ty);
        st.rcvbuf = rcvbuf;
        st.sndbuf = sndbuf;
        st.start_conn(peer, hdr.src_port);
        st.port = Some(port);
        st.phase = Phase::Connected;
        st.was_connected = true;
        st.apply_peer_credit(hdr)?;
        st.queue_ctrl(Op::Response, 0)?;
        Arc::pin_init(
            try_pin_init!(Self {
                state <- new_mutex!(st, "vmcs_sock"),
                wq <- new_poll_condvar!("vmcs_sock_wq"),
            }? Error),
            GFP_KERNEL,
        )
    }

    fn wake(&self) {
        self.wq.notify_all();
    }

    /// Sleeps once on the wait queue within `timeo`, which it decreases: `EAGAIN` when no
    /// time is left, on a signal `ERESTARTSYS` without a limit and `EINTR` with one
    /// (`sock_intr_errno`). Callers check their condition again after `Ok`.
    fn wait(&self, st: &mut MutexGuard<'_, State>, timeo: &mut Timeo) -> Result {
        if timeo.0 <= 0 {
            return Err(EAGAIN);
        }
        if *timeo == Timeo::FOREVER {
            return if self.wq.wait_interruptible(st) {
                Err(ERESTARTSYS)
            } else {
                Ok(())
            };
        }
        // `timeo.0` is positive here.
        match self.wq.wait_interruptible_timeout(st, timeo.0 as Jiffies) {
            CondVarTimeoutResult::Woken { jiffies } => {
                timeo.0 = kernel::ffi::c_long::try_from(jiffies).unwrap_or(0);
            }
            // Looked at once more by the caller, then `EAGAIN`.
            CondVarTimeoutResult::Timeout => timeo.0 = 0,
            CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
        }
        Ok(())
    }

    /// Sends as much of the transmit queue as the transport takes now. On a transport error
    /// other than `Full` the connection is reset and the error returned.
    /// While the peer's ring is backlogged (`Core::backlogged`) it sends nothing: the frames
    /// wait for their turn in `Core::tx_space`.
    fn pump(&self, core: &Core, st: &mut State) -> Result {
        if !st.txq.is_empty() && core.backlogged(st.peer) {
            return Ok(());
        }
        self.pump_frames(core, st, usize::MAX).map(|_| ())
    }

    /// [`Self::pump`] of at most `budget` frames, also when backlogged: whether a frame went
    /// out and whether the transport was full.
    fn pump_frames(&self, core: &Core, st: &mut State, mut budget: usize) -> Result<Pumped> {
        let mut out = Pumped::default();
        let Some(port) = st.port else {
            return Ok(out);
        };
        let mut progressed = false;
        while let Some(item) = st.txq.first_mut() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let mut rx = st.rx;
            let (buf_alloc, fwd_cnt) = rx.advertise();
            let mut hdr = FrameHeader::new(Op::Rw, st.ty, port, st.peer_port);
            hdr.buf_alloc = buf_alloc;
            hdr.fwd_cnt = fwd_cnt;
            let (res, sent, done) = match item {
                TxItem::Ctrl { op, flags: fl } => {
                    hdr.op = *op;
                    hdr.flags = *fl;
                    (core.xmit(st.peer, &hdr, &[]), 0, true)
                }
                TxItem::Bulk { op, desc } => {
                    hdr.op = *op;
                    hdr.flags = 0;
                    let p = desc.encode();
                    // The descriptor is 8 bytes.
                    hdr.len = p.len() as u32;
                    (core.xmit(st.peer, &hdr, &p), 0, true)
                }
                TxItem::Msg { data, off } => {
                    let mp = core.max_payload(st.peer) as usize;
                    let left = data.len() - *off;
                    if mp == 0 && left > 0 {
                        (Err(SendError::Unreachable), 0, false)
                    } else {
                        let n = left.min(mp);
                        let last = n == left;
                        // `n` is at most the frame payload limit, so it fits in u32.
                        hdr.len = n as u32;
                        // Stream frames carry no boundaries (docs/protocol.md: EOM only
                        // on SEQPACKET; the receiving transport rejects it on a stream).
                        hdr.flags = if last && st.ty == SockType::SeqPacket {
                            flags::EOM
                        } else {
                            0
                        };
                        let r = core.xmit(st.peer, &hdr, &data[*off..*off + n]);
                        if r.is_ok() {
                            *off += n;
                        }
                        (r, n, last)
                    }
                }
            };
            match res {
                Ok(()) => {
                    st.rx = rx;
                    st.txq_bytes = st.txq_bytes.saturating_sub(sent);
                    progressed = true;
                    if done {
                        let _ = st.txq.remove(0);
                    }
                }
                Err(SendError::Full) => {
                    out.full = true;
                    core.set_backlogged(st.peer);
                    break;
                }
                Err(e) => {
                    let err = match e {
                        SendError::Unreachable => errno::ehostunreach(),
                        other => Error::from(other),
                    };
                    self.abort(core, st, errno::econnreset(), false);
                    return Err(err);
                }
            }
        }
        if progressed {
            self.wake();
        }
        out.sent = progressed;
        if st.phase == Phase::Closing && st.txq.is_empty() {
            st.phase = Phase::Closed;
            core.remove(self);
        }
        Ok(out)
    }

    /// Sends an `RST` for the connection now (best effort, not through the queue).
    fn send_rst(&self, core: &Core, st: &State) {
        if let Some(port) = st.port {
            let hdr = FrameHeader::new(Op::Rst, st.ty, port, st.peer_port);
            let _ = core.xmit(st.peer, &hdr, &[]);
        }
    }

    /// Resets the connection: optionally sends `RST`, records `err`, drops both queues and
    /// detaches it from the dispatch table.
    fn abort(&self, core: &Core, st: &mut State, err: Error, rst: bool) {
        if rst
            && matches!(
                st.phase,
                Phase::Connecting | Phase::Connected | Phase::Closing
            )
        {
            self.send_rst(core, st);
        }
        let releasing = st.phase == Phase::Closing;
        st.bulk.end(core);
        st.err = Some(err);
        st.phase = Phase::Closed;
        st.txq.clear();
        st.txq_bytes = 0;
        st.rxq.clear();
        st.stats.resets += 1;
        if releasing {
            core.remove(self);
        } else {
            core.detach(self);
        }
        self.wake();
    }

    /// A failed connect: back to `Bound`, so that the endpoint may connect again.
    fn fail_connect(&self, core: &Core, st: &mut State, err: Error) {
        st.phase = Phase::Bound;
        st.err = Some(err);
        st.txq.clear();
        st.txq_bytes = 0;
        core.detach(self);
        self.wake();
    }

    /// `VMCS_IOC_BIND`.
    pub(crate) fn bind(this: &Arc<Self>, core: &Core, port: u32) -> Result<u32> {
        let mut st = this.state.lock();
        if st.phase != Phase::Idle {
            return Err(EINVAL);
        }
        let port = core.bind_port(this, port)?;
        st.port = Some(port);
        st.phase = Phase::Bound;
        Ok(port)
    }

    /// `VMCS_IOC_LISTEN`.
    pub(crate) fn listen(&self, core: &Core, backlog: u32) -> Result {
        let mut st = self.state.lock();
        match st.phase {
            Phase::Bound | Phase::Listening => {}
            _ => return Err(EINVAL),
        }
        st.backlog = (backlog as usize).clamp(1, MAX_BACKLOG);
        if st.phase == Phase::Bound {
            core.set_listening(self)?;
            st.phase = Phase::Listening;
        }
        Ok(())
    }

    /// `VMCS_IOC_CONNECT`.
    pub(crate) fn connect(
        this: &Arc<Self>,
        core: &Core,
        cid: u32,
        port: u32,
        timeout_ms: u32,
        nonblock: bool,
    ) -> Result {
        let s: &Sock = this;
        if port == uapi::PORT_ANY {
            return Err(EINVAL);
        }
        {
            let mut st = s.state.lock();
            match st.phase {
                Phase::Idle | Phase::Bound => {}
                Phase::Connecting => return Err(errno::ealready()),
                Phase::Connected => return Err(errno::eisconn()),
                Phase::Listening => return Err(EINVAL),
                Phase::Closing | Phase::Closed => return Err(errno::eisconn()),
            }
            let peer = core.resolve(cid)?;
            if st.port.is_none() {
                st.port = Some(core.bind_port(this, uapi::PORT_ANY)?);
                st.phase = Phase::Bound;
            }
            st.start_conn(peer, port);
            core.set_remote(s, peer, port)?;
            st.phase = Phase::Connecting;
            st.queue_ctrl(Op::Request, 0)?;
            if let Err(e) = s.pump(core, &mut st) {
                s.fail_connect(core, &mut st, e);
                st.err = None;
                return Err(e);
            }
        }
        core.lo_drain();

        let mut st = s.state.lock();
        core.kick(st.peer);
        let timeout = if timeout_ms == 0 {
            DEFAULT_CONNECT_TIMEOUT_MS
        } else {
            timeout_ms
        };
        let mut left = msecs_to_jiffies(timeout);
        loop {
            match st.phase {
                Phase::Connected => return Ok(()),
                Phase::Connecting => {}
                _ => return Err(st.err.take().unwrap_or(errno::econnreset())),
            }
            if nonblock {
                return Err(errno::einprogress());
            }
            let err = match s.wq.wait_interruptible_timeout(&mut st, left) {
                CondVarTimeoutResult::Woken { jiffies } => {
                    left = jiffies;
                    continue;
                }
                CondVarTimeoutResult::Timeout => ETIMEDOUT,
                CondVarTimeoutResult::Signal { .. } => EINTR,
            };
            // The answer may have arrived with the timeout or the signal: look again.
            if st.phase != Phase::Connecting {
                continue;
            }
            s.send_rst(core, &st);
            s.fail_connect(core, &mut st, err);
            st.err = None;
            drop(st);
            core.lo_drain();
            return Err(err);
        }
    }

    /// `VMCS_IOC_ACCEPT`: the next established connection and its peer address.
    pub(crate) fn accept(&self, nonblock: bool) -> Result<(Arc<Sock>, u32, u32)> {
        self.accept_timeo(&mut Timeo::blocking(nonblock))
    }

    /// `accept` waiting at most `timeo` (`SO_RCVTIMEO`; `EAGAIN` when it runs out).
    pub(crate) fn accept_timeo(&self, timeo: &mut Timeo) -> Result<(Arc<Sock>, u32, u32)> {
        let mut st = self.state.lock();
        loop {
            if st.phase != Phase::Listening {
                return Err(EINVAL);
            }
            if !st.pending.is_empty() {
                let child = st.pending.remove(0).map_err(|_| EINVAL)?;
                drop(st);
                let (peer, port) = {
                    let c = child.state.lock();
                    (c.peer, c.peer_port)
                };
                return Ok((child, peer, port));
            }
            self.wait(&mut st, timeo)?;
        }
    }

    /// A `REQUEST` for this listener from `peer`.
    pub(super) fn on_request(&self, core: &Core, peer: u32, hdr: &FrameHeader) {
        let (port, bufs) = {
            let st = self.state.lock();
            (st.port, (st.rcvbuf, st.sndbuf))
        };
        let child = match port {
            Some(port) => Sock::new_child(port, peer, hdr, bufs).ok(),
            None => None,
        };
        let Some(child) = child else {
            core.reply_rst(peer, hdr);
            return;
        };
        {
            let mut st = self.state.lock();
            let ok = st.phase == Phase::Listening
                && st.pending.len() < st.backlog
                && st.ty == hdr.ty
                && core
                    .insert_child(&child, hdr.dst_port, peer, hdr.src_port)
                    .is_ok();
            if !ok {
                drop(st);
                core.reply_rst(peer, hdr);
                return;
            }
            if st.pending.push(child.clone(), GFP_KERNEL).is_err() {
                drop(st);
                core.remove(&child);
                core.reply_rst(peer, hdr);
                return;
            }
            self.wake();
        }
        let mut c = child.state.lock();
        let _ = child.pump(core, &mut c);
    }

    /// A frame for this connection.
    pub(super) fn on_frame(&self, core: &Core, peer: u32, hdr: &FrameHeader, payload: &[u8]) {
        let mut st = self.state.lock();
        if st.phase == Phase::Closing {
            // Released: only the queued frames matter; an RST ends the lingering.
            if hdr.op == Op::Rst {
                self.abort(core, &mut st, errno::econnreset(), false);
            } else {
                let _ = st.apply_peer_credit(hdr);
            }
            return;
        }
        if !st.is_conn() {
            drop(st);
            if hdr.op != Op::Rst {
                core.reply_rst(peer, hdr);
            }
            return;
        }
        if hdr.ty != st.ty {
            self.abort(core, &mut st, errno::econnreset(), true);
            return;
        }
        if hdr.op == Op::Rst {
            if st.phase == Phase::Connecting {
                self.fail_connect(core, &mut st, errno::econnrefused());
            } else if st.peer_shut == flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND {
                // Orderly close: the peer shut both directions first. Unread data stays
                // readable, then reads return 0.
                st.bulk.end(core);
                st.phase = Phase::Closed;
                st.txq.clear();
                st.txq_bytes = 0;
                core.detach(self);
                self.wake();
            } else {
                self.abort(core, &mut st, errno::econnreset(), false);
            }
            return;
        }
        if st.apply_peer_credit(hdr).is_err() {
            self.abort(core, &mut st, errno::econnreset(), true);
            return;
        }
        let ok = match hdr.op {
            Op::Response if st.phase == Phase::Connecting => {
                st.phase = Phase::Connected;
                st.was_connected = true;
                true
            }
            Op::Shutdown if st.phase == Phase::Connected => {
                st.peer_shut |= hdr.flags & (flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND);
                true
            }
            Op::Rw if st.phase == Phase::Connected => self.on_rw(&mut st, hdr, payload),
            Op::CreditUpdate => true,
            Op::CreditRequest => st.queue_ctrl(Op::CreditUpdate, 0).is_ok(),
            Op::BulkOffer if st.phase == Phase::Connected => {
                Self::on_bulk_offer(core, &mut st, payload)
            }
            Op::BulkData if st.phase == Phase::Connected => Self::on_bulk_data(&mut st, payload),
            Op::BulkRelease if st.phase == Phase::Connected => {
                Self::on_bulk_release(&mut st, payload)
            }
            _ => false,
        };
        if !ok {
            self.abort(core, &mut st, errno::econnreset(), true);
            return;
        }
        let _ = self.pump(core, &mut st);
        self.wake();
    }

    /// Queues the payload of an `RW` frame; `false` when the peer broke the credit or
    /// message limits.
    fn on_rw(&self, st: &mut State, hdr: &FrameHeader, payload: &[u8]) -> bool {
        if payload.len() != hdr.len as usize || st.rx.on_recv(hdr.len).is_err() {
            return false;
        }
        let eom = hdr.ty == SockType::Stream || hdr.flags & flags::EOM != 0;
        if st.local_shut & flags::SHUTDOWN_RCV != 0 {
            // Shut for reading: discard, but give the credit back.
            if st.rx.on_consumed(hdr.len).is_err() {
                return false;
            }
            if st.rx.needs_update() {
                let _ = st.queue_ctrl(Op::CreditUpdate, 0);
            }
            return true;
        }
        if st.rxq.push(payload, eom).is_err() {
            return false;
        }
        st.stats.rx_bytes += u64::from(hdr.len);
        if eom {
            st.stats.rx_msgs += 1;
        }
        true
    }

    /// The peer is gone: reset without sending anything.
    // Reached through `Upcalls::peer_reset`, which the transport stub does not call yet.
    #[allow(dead_code)]
    pub(super) fn on_peer_reset(&self, core: &Core) {
        let mut st = self.state.lock();
        match st.phase {
            Phase::Connecting => self.fail_connect(core, &mut st, errno::econnreset()),
            Phase::Connected | Phase::Closing => {
                self.abort(core, &mut st, errno::econnreset(), false)
            }
            _ => {}
        }
    }

    /// The ring to the peer has room again: sends at most `frames` queued frames, so that
    /// the core can take turns among the peer's connections (`Core::tx_space`).
    pub(super) fn on_tx_space(&self, core: &Core, frames: usize) -> Pumped {
        let mut st = self.state.lock();
        let r = self.pump_frames(core, &mut st, frames).unwrap_or_default();
        self.wake();
        r
    }

    /// `read()`: one message, truncated to `max` bytes; `Ok(None)` is end of file.
    pub(crate) fn recv(&self, core: &Core, max: usize, nonblock: bool) -> Result<KVec<u8>> {
        let mut st = self.state.lock();
        let msg = loop {
            if !st.was_connected {
                return Err(errno::enotconn());
            }
            if st.local_shut & flags::SHUTDOWN_RCV != 0 {
                return Ok(KVec::new());
            }
            if let Some((msg, len)) = st.rxq.pop(max)? {
                // `len` is at most `MAX_MSG_SIZE`.
                if st.rx.on_consumed(len as u32).is_err() {
                    self.abort(core, &mut st, errno::econnreset(), true);
                    return Err(errno::econnreset());
                }
                if st.phase == Phase::Connected && st.rx.needs_update() {
                    st.queue_ctrl(Op::CreditUpdate, 0)?;
                    let _ = self.pump(core, &mut st);
                }
                break msg;
            }
            if let Some(e) = st.err {
                return Err(e);
            }
            if st.peer_shut & flags::SHUTDOWN_SEND != 0 || st.phase != Phase::Connected {
                return Ok(KVec::new());
            }
            if nonblock {
                return Err(EAGAIN);
            }
            core.kick(st.peer);
            if self.wq.wait_interruptible(&mut st) {
                return Err(ERESTARTSYS);
            }
        };
        drop(st);
        core.lo_drain();
        Ok(msg)
    }

    /// Whether `send` may queue data now: the connection's error, `EPIPE` or `ENOTCONN`.
    fn sendable(st: &State) -> Result {
        if let Some(e) = st.err {
            if st.was_connected {
                return Err(e);
            }
        }
        match st.phase {
            Phase::Connected => {}
            _ if st.was_connected => return Err(EPIPE),
            _ => return Err(errno::enotconn()),
        }
        if st.local_shut & flags::SHUTDOWN_SEND != 0 || st.peer_shut & flags::SHUTDOWN_RCV != 0 {
            return Err(EPIPE);
        }
        Ok(())
    }

    /// `write()`: queues `data` as one message once the peer has credit for all of it.
    pub(crate) fn send(&self, core: &Core, data: KVec<u8>, nonblock: bool) -> Result<usize> {
        self.send_timeo(core, data, &mut Timeo::blocking(nonblock))
    }

    /// `send` waiting at most `timeo` (`SO_SNDTIMEO`; `EAGAIN` when it runs out).
    pub(crate) fn send_timeo(
        &self,
        core: &Core,
        data: KVec<u8>,
        timeo: &mut Timeo,
    ) -> Result<usize> {
        let len = data.len();
        let mut st = self.state.lock();
        loop {
            Self::sendable(&st)?;
            if len > st.peer_buf_alloc as usize {
                return Err(errno::emsgsize());
            }
            if len == 0 {
                return Ok(0);
            }
            if st.tx.peer_free() as usize >= len
                && (st.txq_bytes == 0 || st.txq_bytes + len <= st.sndbuf)
            {
                break;
            }
            if timeo.0 > 0 {
                core.kick(st.peer);
            }
            self.wait(&mut st, timeo)?;
        }
        self.queue_msg(core, st, data)
    }

    /// AF_VMCS `SOCK_STREAM` `send`: queues the first bytes of `data` that the peer's credit
    /// and the transmit queue (`SO_SNDBUF`) take now, waiting within `timeo` until at least
    /// one byte fits; returns how many were queued.
    pub(crate) fn send_stream(
        &self,
        core: &Core,
        mut data: KVec<u8>,
        timeo: &mut Timeo,
    ) -> Result<usize> {
        let mut st = self.state.lock();
        let n = loop {
            Self::sendable(&st)?;
            if data.is_empty() {
                return Ok(0);
            }
            let room = st.sndbuf.saturating_sub(st.txq_bytes);
            let n = data.len().min(st.tx.peer_free() as usize).min(room);
            if n > 0 {
                break n;
            }
            if timeo.0 > 0 {
                core.kick(st.peer);
            }
            self.wait(&mut st, timeo)?;
        };
        data.truncate(n);
        self.queue_msg(core, st, data)
    }

    /// Queues `data`, for which the peer has credit, as one message and sends what it can.
    fn queue_msg(
        &self,
        core: &Core,
        mut st: MutexGuard<'_, State>,
        data: KVec<u8>,
    ) -> Result<usize> {
        let len = data.len();
        // `len` is at most the peer's credit (`peer_free`), a u32.
        st.tx.on_send(len as u32).map_err(|_| EAGAIN)?;
        st.txq.push(TxItem::Msg { data, off: 0 }, GFP_KERNEL)?;
        st.txq_bytes += len;
        st.stats.tx_bytes += len as u64;
        st.stats.tx_msgs += 1;
        self.pump(core, &mut st)?;
        drop(st);
        core.lo_drain();
        Ok(len)
    }

    /// `VMCS_IOC_SHUTDOWN` with `how` = `SHUT_RD` (0), `SHUT_WR` (1) or `SHUT_RDWR` (2).
    pub(crate) fn shutdown(&self, core: &Core, how: u32) -> Result {
        let bits = match how {
            0 => flags::SHUTDOWN_RCV,
            1 => flags::SHUTDOWN_SEND,
            2 => flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND,
            _ => return Err(EINVAL),
        };
        {
            let mut st = self.state.lock();
            if !st.was_connected {
                return Err(errno::enotconn());
            }
            let new = bits & !st.local_shut;
            st.local_shut |= bits;
            if new & flags::SHUTDOWN_RCV != 0 {
                // Unread messages are dropped; their credit goes back to the peer.
                let queued = st.rx.queued();
                st.rxq.clear();
                let _ = st.rx.on_consumed(queued);
            }
            if new != 0 && st.phase == Phase::Connected {
                st.queue_ctrl(Op::Shutdown, new)?;
                if new & flags::SHUTDOWN_RCV != 0 && st.rx.needs_update() {
                    st.queue_ctrl(Op::CreditUpdate, 0)?;
                }
                self.pump(core, &mut st)?;
            }
            self.wake();
        }
        core.lo_drain();
        Ok(())
    }

    /// The file is closed. A connection with unread data is reset (`RST`: the peer gets
    /// `ECONNRESET`); otherwise it is shut both ways, then `RST` (the peer reads the rest,
    /// then end of file). A listener resets every connection not yet accepted.
    pub(crate) fn release(&self, core: &Core) {
        let mut pending = KVec::new();
        {
            let mut st = self.state.lock();
            st.bulk.end(core);
            match st.phase {
                Phase::Listening => {
                    core::mem::swap(&mut pending, &mut st.pending);
                    st.phase = Phase::Closed;
                    core.remove(self);
                }
                Phase::Connected if st.rxq.msgs() > 0 || st.rxq.partial > 0 => {
                    self.abort(core, &mut st, errno::econnreset(), true);
                    core.remove(self);
                }
                Phase::Connected => {
                    let new = (flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND) & !st.local_shut;
                    st.local_shut |= new;
                    let queued = if new != 0 {
                        st.queue_ctrl(Op::Shutdown, new)
                    } else {
                        Ok(())
                    }
                    .and_then(|()| st.queue_ctrl(Op::Rst, 0));
                    if queued.is_err() {
                        self.abort(core, &mut st, errno::econnreset(), true);
                        core.remove(self);
                    } else {
                        st.phase = Phase::Closing;
                        // Removes the entry once everything is sent; else `tx_space` will.
                        let _ = self.pump(core, &mut st);
                    }
                }
                Phase::Connecting => {
                    self.send_rst(core, &st);
                    st.phase = Phase::Closed;
                    core.remove(self);
                }
                _ => {
                    st.phase = Phase::Closed;
                    core.remove(self);
                }
            }
            st.rxq.clear();
        }
        for child in pending.drain_all() {
            let mut c = child.state.lock();
            child.abort(core, &mut c, errno::econnreset(), true);
            core.remove(&child);
        }
        core.lo_drain();
    }

    /// Sets `VMCS_OPT_NONBLOCK` and/or the receive buffer.
    pub(crate) fn set_opts(&self, core: &Core, nonblock: Option<bool>, rcvbuf: Option<u32>) {
        {
            let mut st = self.state.lock();
            if let Some(nb) = nonblock {
                st.nonblock = nb;
            }
            if let Some(rb) = rcvbuf {
                let rb = rb.min(MAX_RCVBUF);
                let changed = rb != st.rcvbuf;
                st.rcvbuf = rb;
                st.rx.set_buf_alloc(rb);
                // A smaller buffer is announced at once too, not only with the next frame.
                if st.phase == Phase::Connected && (changed || st.rx.needs_update()) {
                    let _ = st.queue_ctrl(Op::CreditUpdate, 0);
                    let _ = self.pump(core, &mut st);
                }
            }
        }
        core.lo_drain();
    }

    /// Sets the transmit queue limit (`SO_SNDBUF`), clamped; returns the value in use.
    pub(crate) fn set_sndbuf(&self, n: usize) -> usize {
        let n = n.clamp(MIN_TXQ, MAX_TXQ);
        self.state.lock().sndbuf = n;
        self.wake();
        n
    }

    /// The receive buffer (credit) and transmit queue limit in use.
    pub(crate) fn bufs(&self) -> (u32, usize) {
        let st = self.state.lock();
        (st.rcvbuf, st.sndbuf)
    }

    /// Whether `VMCS_OPT_NONBLOCK` is set.
    pub(crate) fn nonblock(&self) -> bool {
        self.state.lock().nonblock
    }

    /// Local port and, when connected (or once was), the peer.
    pub(crate) fn names(&self) -> (Option<u32>, Option<(u32, u32)>) {
        let st = self.state.lock();
        let remote = if st.was_connected || st.phase == Phase::Connecting {
            Some((st.peer, st.peer_port))
        } else {
            None
        };
        (st.port, remote)
    }

    /// `poll()`: registers with the wait queue and returns the ready mask.
    pub(crate) fn poll(&self, file: &File, table: &PollTable<'_>) -> u32 {
        self.poll_lowat(file, table, 1)
    }

    /// `poll()` where a stream is readable (`POLLIN`) only with at least `lowat` unread bytes
    /// (`SO_RCVLOWAT`, at most the receive buffer), or at end of file.
    pub(crate) fn poll_lowat(&self, file: &File, table: &PollTable<'_>, lowat: usize) -> u32 {
        table.register_wait(file, &self.wq);
        let st = self.state.lock();
        let mut mask = 0;
        match st.phase {
            Phase::Listening => {
                if !st.pending.is_empty() {
                    mask |= poll_mask::IN;
                }
            }
            Phase::Connected => {
                let readable = if st.ty == SockType::Stream {
                    st.rxq.unread() >= lowat.min(st.rcvbuf as usize).max(1)
                } else {
                    st.rxq.msgs() > 0
                };
                if readable
                    || st.bulk.readable()
                    || st.peer_shut & flags::SHUTDOWN_SEND != 0
                    || st.local_shut & flags::SHUTDOWN_RCV != 0
                {
                    mask |= poll_mask::IN;
                }
                if st.local_shut & flags::SHUTDOWN_SEND == 0
                    && st.peer_shut & flags::SHUTDOWN_RCV == 0
                    && st.tx.peer_free() > 0
                    && st.txq_bytes < st.sndbuf
                {
                    mask |= poll_mask::OUT;
                }
                if st.peer_shut == flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND {
                    mask |= poll_mask::HUP;
                }
            }
            Phase::Closed | Phase::Closing if st.was_connected => {
                mask |= poll_mask::IN | poll_mask::HUP;
                if st.err.is_some() {
                    mask |= poll_mask::ERR;
                }
            }
            Phase::Bound if st.err.is_some() => mask |= poll_mask::ERR,
            _ => {}
        }
        mask
    }

    /// Gives `n` consumed bytes back to the peer as credit (after a read).
    fn consumed(&self, core: &Core, st: &mut State, n: usize) -> Result {
        // `n` is bounded by the receive buffer, a u32.
        if st.rx.on_consumed(n as u32).is_err() {
            self.abort(core, st, errno::econnreset(), true);
            return Err(errno::econnreset());
        }
        if st.phase == Phase::Connected && st.rx.needs_update() {
            st.queue_ctrl(Op::CreditUpdate, 0)?;
            let _ = self.pump(core, st);
        }
        Ok(())
    }

    /// Waits for something to read: `Ok(true)` when there is, `Ok(false)` at end of file.
    fn wait_readable(
        &self,
        core: &Core,
        st: &mut MutexGuard<'_, State>,
        timeo: &mut Timeo,
    ) -> Result<bool> {
        loop {
            if !st.was_connected {
                return Err(errno::enotconn());
            }
            if st.local_shut & flags::SHUTDOWN_RCV != 0 {
                return Ok(false);
            }
            if st.rxq.msgs() > 0 {
                return Ok(true);
            }
            if let Some(e) = st.err {
                return Err(e);
            }
            if st.peer_shut & flags::SHUTDOWN_SEND != 0 || st.phase != Phase::Connected {
                return Ok(false);
            }
            if timeo.0 > 0 {
                core.kick(st.peer);
            }
            self.wait(st, timeo)?;
        }
    }

    /// AF_VMCS `SOCK_SEQPACKET` `recvmsg`: one message, its first `max` bytes and its full
    /// length; `peek` leaves it queued. End of file is an empty message of length 0.
    pub(crate) fn recv_seq(
        &self,
        core: &Core,
        max: usize,
        timeo: &mut Timeo,
        peek: bool,
    ) -> Result<(KVec<u8>, usize)> {
        let mut st = self.state.lock();
        if !self.wait_readable(core, &mut st, timeo)? {
            return Ok((KVec::new(), 0));
        }
        let got = if peek {
            st.rxq.peek(max)?
        } else {
            st.rxq.pop(max)?
        };
        let Some((msg, len)) = got else {
            return Ok((KVec::new(), 0));
        };
        if !peek {
            self.consumed(core, &mut st, len)?;
        }
        drop(st);
        core.lo_drain();
        Ok((msg, len))
    }

    /// AF_VMCS `SOCK_STREAM` `recvmsg`: up to `max` bytes of the byte stream (message
    /// boundaries ignored, the rest of a message stays queued); empty at end of file.
    pub(crate) fn recv_stream(
        &self,
        core: &Core,
        max: usize,
        timeo: &mut Timeo,
        peek: bool,
    ) -> Result<KVec<u8>> {
        let mut st = self.state.lock();
        if !self.wait_readable(core, &mut st, timeo)? {
            return Ok(KVec::new());
        }
        let data = st.rxq.take_bytes(max, peek)?;
        if !peek {
            self.consumed(core, &mut st, data.len())?;
        }
        drop(st);
        core.lo_drain();
        Ok(data)
    }

    /// Largest chunk one `send` of a byte stream may carry now: the peer's receive buffer,
    /// at most `VMCS_MAX_MSG_SIZE` (at least 1, so that `send` reports the real error).
    pub(crate) fn stream_chunk(&self) -> usize {
        let st = self.state.lock();
        (st.peer_buf_alloc.min(uapi::MAX_MSG_SIZE) as usize)
            .min(st.sndbuf)
            .max(1)
    }

    /// `SIOCINQ`, `SIOCOUTQ`: unread bytes and bytes queued but not yet sent.
    pub(crate) fn queued(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.rxq.unread(), st.txq_bytes)
    }

    /// Released with frames still queued ([`Phase::Closing`]).
    pub(crate) fn is_closing(&self) -> bool {
        self.state.lock().phase == Phase::Closing
    }

    /// The sticky error, if any (`SO_ERROR`), without clearing it.
    pub(crate) fn error(&self) -> Option<Error> {
        self.state.lock().err
    }

    /// One line of the connection listing.
    // For the debugfs listing, which is not wired up yet.
    #[allow(dead_code)]
    /// Writes this endpoint's row of the debugfs `connections` table (columns in
    /// [`super::CONNECTIONS_HEADER`]; no spaces inside a field). Remote is `-` when there is
    /// no peer (idle, bound or listening endpoints).
    pub(crate) fn describe(
        &self,
        local_id: u32,
        out: &mut impl core::fmt::Write,
    ) -> core::fmt::Result {
        let st = self.state.lock();
        let state = match st.phase {
            Phase::Idle => "idle",
            Phase::Bound => "bound",
            Phase::Listening => "listen",
            Phase::Connecting => "connecting",
            Phase::Connected => "established",
            Phase::Closing => "closing",
            Phase::Closed => "closed",
        };
        match st.port {
            Some(p) => write!(out, "{}:{} ", local_id, p)?,
            None => write!(out, "{}:- ", local_id)?,
        }
        if matches!(st.phase, Phase::Idle | Phase::Bound | Phase::Listening) {
            write!(out, "- ")?;
        } else {
            write!(out, "{}:{} ", st.peer, st.peer_port)?;
        }
        writeln!(
            out,
            "{} {} {} {} {} {} {} {} {}",
            state,
            st.stats.rx_bytes,
            st.stats.tx_bytes,
            st.stats.rx_msgs,
            st.stats.tx_msgs,
            st.rx.queued(),
            st.rxq.msgs(),
            st.tx.peer_free(),
            st.stats.resets
        )
    }
}
