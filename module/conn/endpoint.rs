// SPDX-License-Identifier: GPL-2.0

//! One endpoint of the core: unbound, bound, listening, or one side of a connection.
//!
//! Every `Endpoint` has one mutex (`inner`, over [`EndpointInner`]) and one poll-capable
//! wait queue (`wq`); every state change wakes all waiters. Frames of a connection leave in order through its transmit queue
//! (`txq`), which is stamped with the current credit (`buf_alloc`, `fwd_cnt`) only when a
//! frame actually goes to the transport, and always under `inner`: so the peer sees the
//! credit counters of one connection move forward only.
//!
//! Locking (docs/architecture.md): an `Endpoint`'s mutex may be held while taking the core's
//! table lock or loopback lock and while calling `Transport::send`/`send_user`; never two
//! `Endpoint` mutexes at once. User memory is copied under it only with page faults disabled
//! (`glue::UserIter`: the copy never sleeps and stops short at a page not present); user
//! pages are faulted in, and copies that may fault are made, with no lock held.

mod bulk;
mod busy_poll;
mod receive;
mod rx_queue;
mod transmit;
mod tx_queue;

use rx_queue::RxQueue;
use tx_queue::TxQueue;

use super::{
    crypto::{self, Policy, HS_LEN},
    Conns, PolicyList, ResetReason, Violation, MAX_BACKLOG, MAX_RCVBUF,
};
use crate::{
    glue::{errno, poll_mask},
    proto::{
        flow::{RxCredit, TxCredit, MAX_BUF_ALLOC},
        frame::{flags, FrameHeader, Op, SockType},
    },
    uapi,
};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use kernel::{
    fs::File,
    new_condvar, new_poll_condvar, new_spinlock,
    prelude::*,
    sync::{
        new_mutex, poll::PollCondVar, poll::PollTable, Arc, CondVar, CondVarTimeoutResult, Mutex,
        MutexGuard, SpinLock,
    },
    time::{msecs_to_jiffies, Jiffies},
};

/// Default receive buffer (credit) of a connection: 4 MiB, sized for bandwidth × delay
/// (a sender streams a whole ring's worth many times over while the credit update of the
/// first quarter travels back, and a seqpacket sender keeps 64 messages of 64 KiB in
/// flight). It is a promise, not an allocation (the receive queue grows with the bytes
/// that arrive); a peer that fills many connections' promises with data nobody reads
/// meets the domain's cap on receive memory (`rx_mem_max_kb`, conn/rx_mem.rs): with the
/// default cap, eight such connections at full credit, after which its frames reset
/// their own connections.
pub(crate) const DEFAULT_RCVBUF: u32 = 4 << 20;
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
/// (non-blocking), [`Timeout::FOREVER`] (`MAX_SCHEDULE_TIMEOUT`) is without a limit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Timeout(pub(crate) kernel::ffi::c_long);

impl Timeout {
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

/// What [`Endpoint::pump_frames`] did.
#[derive(Clone, Copy, Default)]
pub(super) struct Pumped {
    /// At least one frame went out.
    pub(super) sent: bool,
    /// The transport took no more (`tx_space` follows).
    pub(super) full: bool,
}

/// See [`Endpoint::shut_state`].
pub(crate) struct ShutState {
    /// Idle or bound: neither listening nor connecting nor connected (ever, or again after
    /// a failed connect).
    pub(crate) unconnected: bool,
    /// `SHUTDOWN_*` bits this side sent.
    pub(crate) local: u32,
    /// `SHUTDOWN_*` bits the peer sent.
    pub(crate) peer: u32,
    /// The connection is over (closed in order or reset).
    pub(crate) over: bool,
    /// It ended with an error (reset).
    pub(crate) reset: bool,
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
    /// A `REQUEST` or `RESPONSE` carrying the encryption handshake (conn/crypto.rs).
    Handshake { op: Op, payload: [u8; HS_LEN] },
}

/// The mutable state of a [`Endpoint`].
pub(crate) struct EndpointInner {
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
    txq: TxQueue,
    /// Payload bytes in `txq` not yet handed to the transport.
    txq_bytes: usize,
    /// A sender is copying straight from user memory into the ring (`send_user`): until it
    /// is done, only it sends (its frames and the queued ones, in order), and other senders
    /// wait for it.
    tx_busy: bool,
    /// That sender waits for ring space or its turn; `on_tx_space` wakes it.
    tx_waiting: bool,
    rxq: RxQueue,
    /// `SHUTDOWN_RCV`/`SHUTDOWN_SEND` bits the peer sent.
    peer_shut: u32,
    /// `SHUTDOWN_RCV`/`SHUTDOWN_SEND` bits we sent (or will send).
    local_shut: u32,
    /// Sticky error: `ECONNRESET` after a reset, `ECONNREFUSED` after a refused connect.
    err: Option<Error>,
    was_connected: bool,
    backlog: usize,
    pending: KVec<Arc<Endpoint>>,
    pub(crate) stats: Stats,
    /// Why the connection was last reset (`vmcs ss`, column `reset_reason`).
    last_reset: Option<ResetReason>,
    /// Zero-copy bulk area of the connection (conn/bulk.rs).
    bulk: bulk::BulkState,
    /// The encryption this endpoint asks for (`VMCS_SO_ENCRYPT`, `VMCS_IOC_SET_ENCRYPT`;
    /// `Off` is the domain's default); accepted connections inherit their listener's.
    enc: Policy,
    /// The initiator's half of the handshake while `Connecting` (conn/crypto.rs).
    hs: Option<KBox<crypto::Pending>>,
    /// The connection's keys and nonce counters once the handshake succeeded: every `RW`
    /// frame is sealed and opened with them.
    sess: Option<KBox<crypto::Session>>,
}

impl EndpointInner {
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
            txq: TxQueue::default(),
            txq_bytes: 0,
            tx_busy: false,
            tx_waiting: false,
            rxq: RxQueue::default(),
            peer_shut: 0,
            local_shut: 0,
            err: None,
            was_connected: false,
            backlog: 0,
            pending: KVec::new(),
            stats: Stats::default(),
            last_reset: None,
            bulk: bulk::BulkState::default(),
            enc: Policy::Off,
            hs: None,
            sess: None,
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
        self.hs = None;
        self.sess = None;
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

    /// The peer shut both directions: it closed in order (POLLHUP; a later `RST` or its loss
    /// ends the connection with its data still readable, then end of file).
    pub(super) fn peer_shut_both(&self) -> bool {
        self.peer_shut == flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND
    }
}

/// One waiter's wake-up for several listening endpoints (an AF_VMCS listener reachable
/// through two domains, docs/architecture.md "Transport per peer"): every wake-up of an
/// endpoint it is attached to ([`Endpoint::set_listen_wake`]) counts an event and wakes
/// it. A waiter reads [`ListenWake::events`], looks at every endpoint (their own locks, none
/// of this one), then sleeps in [`ListenWake::wait`] only if no event came meanwhile: the
/// count is compared under `lock`, which [`ListenWake::notify`] takes before it wakes, so
/// no wake-up between the look and the sleep is lost. Lock order: an endpoint's mutex, then
/// `lock` (a waiter never holds `lock` while it takes an endpoint's).
#[pin_data]
pub(crate) struct ListenWake {
    events: AtomicU64,
    #[pin]
    lock: SpinLock<()>,
    #[pin]
    cv: CondVar,
}

impl ListenWake {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                events: AtomicU64::new(0),
                lock <- new_spinlock!((), "vmcs_listen_wake"),
                cv <- new_condvar!("vmcs_listen_wake_cv"),
            }),
            GFP_KERNEL,
        )
    }

    fn notify(&self) {
        self.events.fetch_add(1, SeqCst);
        drop(self.lock.lock());
        self.cv.notify_all();
    }

    /// The events counted so far.
    pub(crate) fn events(&self) -> u64 {
        self.events.load(SeqCst)
    }

    /// Sleeps until an event after `seen` within `timeout`, which it decreases; errors as
    /// [`Endpoint`]'s waits (`EAGAIN` when no time is left, `ERESTARTSYS` or `EINTR` on a
    /// signal).
    pub(crate) fn wait(&self, seen: u64, timeout: &mut Timeout) -> Result {
        if timeout.0 <= 0 {
            return Err(EAGAIN);
        }
        let mut g = self.lock.lock();
        if self.events() != seen {
            return Ok(());
        }
        if *timeout == Timeout::FOREVER {
            return if self.cv.wait_interruptible(&mut g) {
                Err(ERESTARTSYS)
            } else {
                Ok(())
            };
        }
        match self
            .cv
            .wait_interruptible_timeout(&mut g, timeout.0 as Jiffies)
        {
            CondVarTimeoutResult::Woken { jiffies } => {
                timeout.0 = kernel::ffi::c_long::try_from(jiffies).unwrap_or(0);
            }
            CondVarTimeoutResult::Timeout => timeout.0 = 0,
            CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
        }
        Ok(())
    }
}

/// An endpoint of the core.
#[pin_data]
pub(crate) struct Endpoint {
    #[pin]
    pub(crate) inner: Mutex<EndpointInner>,
    #[pin]
    wq: PollCondVar,
    /// Also woken on every wake-up of this endpoint (a listener in two domains).
    #[pin]
    listen_wake: SpinLock<Option<Arc<ListenWake>>>,
    /// Busy-poll window in microseconds, or `busy_poll::BUSY_POLL_DEFAULT` (the domain's).
    busy_us: AtomicU32,
}

impl Endpoint {
    /// Creates an unbound endpoint of type `ty`.
    pub(crate) fn new(ty: SockType) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                inner <- new_mutex!(EndpointInner::new(ty), "vmcs_sock"),
                wq <- new_poll_condvar!("vmcs_sock_wq"),
                listen_wake <- new_spinlock!(None, "vmcs_sock_listen_wake"),
                busy_us: AtomicU32::new(busy_poll::BUSY_POLL_DEFAULT),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// Creates the accepted side of a connection requested by `hdr` from `peer`; its first
    /// queued frame is the `RESPONSE`. It inherits the listener's buffers and busy-poll
    /// window (`busy_us`).
    fn new_child(
        port: u32,
        peer: u32,
        hdr: &FrameHeader,
        (rcvbuf, sndbuf, enc): (u32, usize, Policy),
        busy_us: u32,
        sess: Option<(KBox<crypto::Session>, [u8; HS_LEN])>,
    ) -> Result<Arc<Self>> {
        let mut st = EndpointInner::new(hdr.ty);
        st.rcvbuf = rcvbuf;
        st.sndbuf = sndbuf;
        st.enc = enc;
        st.start_conn(peer, hdr.src_port);
        st.port = Some(port);
        st.phase = Phase::Connected;
        st.was_connected = true;
        st.apply_peer_credit(hdr)?;
        match sess {
            Some((sess, payload)) => {
                st.sess = Some(sess);
                st.txq.push(
                    TxItem::Handshake {
                        op: Op::Response,
                        payload,
                    },
                    GFP_KERNEL,
                )?;
            }
            None => st.queue_ctrl(Op::Response, 0)?,
        }
        Arc::pin_init(
            try_pin_init!(Self {
                inner <- new_mutex!(st, "vmcs_sock"),
                wq <- new_poll_condvar!("vmcs_sock_wq"),
                listen_wake <- new_spinlock!(None, "vmcs_sock_listen_wake"),
                busy_us: AtomicU32::new(busy_us),
            }? Error),
            GFP_KERNEL,
        )
    }

    fn wake(&self) {
        self.wq.notify_all();
        if let Some(w) = self.listen_wake.lock().as_ref() {
            w.notify();
        }
    }

    /// Attaches (or with `None` detaches) a [`ListenWake`] woken with this endpoint.
    pub(crate) fn set_listen_wake(&self, w: Option<Arc<ListenWake>>) {
        *self.listen_wake.lock() = w;
    }

    /// Whether `connect` may start here (unbound or bound, nothing more).
    pub(crate) fn can_connect(&self) -> bool {
        matches!(self.inner.lock().phase, Phase::Idle | Phase::Bound)
    }

    /// Moves an unbound or bound endpoint from the port space of `from` to that of `to`
    /// (the same port: `EADDRINUSE` if `to` has it taken), before a connect that goes
    /// through another domain. `EINVAL` in any other state.
    pub(crate) fn rebind(this: &Arc<Self>, from: &Conns<'_>, to: &Conns<'_>) -> Result {
        let st = this.inner.lock();
        match (st.phase, st.port) {
            (Phase::Idle, _) => Ok(()),
            (Phase::Bound, Some(port)) => {
                to.bind_port(this, port)?;
                from.remove(this);
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }

    /// Sleeps once on the wait queue within `timeout`, which it decreases: `EAGAIN` when no
    /// time is left, on a signal `ERESTARTSYS` without a limit and `EINTR` with one
    /// (`sock_intr_errno`). Callers check their condition again after `Ok`.
    fn wait(&self, st: &mut MutexGuard<'_, EndpointInner>, timeout: &mut Timeout) -> Result {
        if timeout.0 <= 0 {
            return Err(EAGAIN);
        }
        if *timeout == Timeout::FOREVER {
            return if self.wq.wait_interruptible(st) {
                Err(ERESTARTSYS)
            } else {
                Ok(())
            };
        }
        // `timeout.0` is positive here.
        match self.wq.wait_interruptible_timeout(st, timeout.0 as Jiffies) {
            CondVarTimeoutResult::Woken { jiffies } => {
                timeout.0 = kernel::ffi::c_long::try_from(jiffies).unwrap_or(0);
            }
            // Looked at once more by the caller, then `EAGAIN`.
            CondVarTimeoutResult::Timeout => timeout.0 = 0,
            CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
        }
        Ok(())
    }

    /// Resets the connection for `reason`: optionally sends `RST`, records `err` and the
    /// reason (counted in the domain), drops both queues and detaches it from the dispatch
    /// table.
    fn abort(
        &self,
        conns: &Conns<'_>,
        st: &mut EndpointInner,
        err: Error,
        rst: bool,
        reason: ResetReason,
    ) {
        if rst
            && matches!(
                st.phase,
                Phase::Connecting | Phase::Connected | Phase::Closing
            )
        {
            self.send_rst(conns, st);
        }
        let releasing = st.phase == Phase::Closing;
        st.bulk.end(conns);
        st.err = Some(err);
        st.phase = Phase::Closed;
        st.txq.clear();
        st.txq_bytes = 0;
        st.rxq.clear();
        st.stats.resets += 1;
        st.last_reset = Some(reason);
        conns.resets.count(reason);
        if releasing {
            conns.remove(self);
        } else {
            conns.detach(self);
        }
        self.wake();
    }

    /// Resets the connection from this side: `RST` to the peer, `ECONNRESET` here.
    fn reset_local(&self, conns: &Conns<'_>, st: &mut EndpointInner) {
        self.abort(conns, st, errno::econnreset(), true, ResetReason::Local);
    }

    /// A failed connect: back to `Bound`, so that the endpoint may connect again.
    fn fail_connect(&self, conns: &Conns<'_>, st: &mut EndpointInner, err: Error) {
        st.phase = Phase::Bound;
        st.err = Some(err);
        st.txq.clear();
        st.txq_bytes = 0;
        conns.detach(self);
        self.wake();
    }

    /// `VMCS_IOC_BIND`.
    pub(crate) fn bind(this: &Arc<Self>, conns: &Conns<'_>, port: u32) -> Result<u32> {
        let mut st = this.inner.lock();
        if st.phase != Phase::Idle {
            return Err(EINVAL);
        }
        if port != uapi::PORT_ANY {
            conns.policy_check(PolicyList::Bind, uapi::CID_ANY, port)?;
        }
        let port = conns.bind_port(this, port)?;
        st.port = Some(port);
        st.phase = Phase::Bound;
        Ok(port)
    }

    /// `VMCS_IOC_LISTEN`.
    pub(crate) fn listen(&self, conns: &Conns<'_>, backlog: u32) -> Result {
        let mut st = self.inner.lock();
        match st.phase {
            Phase::Bound | Phase::Listening => {}
            _ => return Err(EINVAL),
        }
        st.backlog = (backlog as usize).clamp(1, MAX_BACKLOG);
        if st.phase == Phase::Bound {
            conns.set_listening(self)?;
            st.phase = Phase::Listening;
        }
        Ok(())
    }

    /// `VMCS_IOC_CONNECT`.
    pub(crate) fn connect(
        this: &Arc<Self>,
        conns: &Conns<'_>,
        cid: u32,
        port: u32,
        timeout_ms: u32,
        nonblock: bool,
    ) -> Result {
        let s: &Endpoint = this;
        if port == uapi::PORT_ANY {
            return Err(EINVAL);
        }
        {
            let mut st = s.inner.lock();
            match st.phase {
                Phase::Idle | Phase::Bound => {}
                Phase::Connecting => return Err(errno::ealready()),
                Phase::Connected => return Err(errno::eisconn()),
                Phase::Listening => return Err(EINVAL),
                Phase::Closing | Phase::Closed => return Err(errno::eisconn()),
            }
            let peer = conns.resolve(cid)?;
            conns.policy_check(PolicyList::ConnectOut, peer, port)?;
            if st.port.is_none() {
                st.port = Some(conns.bind_port(this, uapi::PORT_ANY)?);
                st.phase = Phase::Bound;
            }
            let offer = s.crypto_offer(conns, &st, peer, port)?;
            st.start_conn(peer, port);
            conns.set_remote(s, peer, port)?;
            st.phase = Phase::Connecting;
            match offer {
                Some((pending, payload)) => {
                    st.hs = Some(pending);
                    st.txq.push(
                        TxItem::Handshake {
                            op: Op::Request,
                            payload,
                        },
                        GFP_KERNEL,
                    )?;
                }
                None => st.queue_ctrl(Op::Request, 0)?,
            }
            if let Err(e) = s.pump(conns, &mut st) {
                s.fail_connect(conns, &mut st, e);
                st.err = None;
                return Err(e);
            }
        }
        conns.loopback_drain();

        let timeout = if timeout_ms == 0 {
            DEFAULT_CONNECT_TIMEOUT_MS
        } else {
            timeout_ms
        };
        let mut left = msecs_to_jiffies(timeout);
        if !nonblock {
            let mut t = Timeout(kernel::ffi::c_long::try_from(left).unwrap_or(1));
            s.busy_poll(conns, &mut t, EndpointInner::connect_ready);
            left = Jiffies::try_from(t.0).unwrap_or(1);
        }
        let mut st = s.inner.lock();
        conns.kick(st.peer);
        loop {
            match st.phase {
                Phase::Connected => return Ok(()),
                Phase::Connecting => {}
                // Accepted, then closed in order before this thread ran (a fast server):
                // the connect succeeded; the data and end of file stay readable.
                Phase::Closed if st.was_connected && st.err.is_none() => return Ok(()),
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
            s.send_rst(conns, &st);
            s.fail_connect(conns, &mut st, err);
            st.err = None;
            drop(st);
            conns.loopback_drain();
            return Err(err);
        }
    }

    /// `VMCS_IOC_ACCEPT`: the next established connection and its peer address.
    pub(crate) fn accept(
        &self,
        conns: &Conns<'_>,
        nonblock: bool,
    ) -> Result<(Arc<Endpoint>, u32, u32)> {
        self.accept_timeout(conns, &mut Timeout::blocking(nonblock))
    }

    /// `accept` waiting at most `timeout` (`SO_RCVTIMEO`; `EAGAIN` when it runs out).
    pub(crate) fn accept_timeout(
        &self,
        conns: &Conns<'_>,
        timeout: &mut Timeout,
    ) -> Result<(Arc<Endpoint>, u32, u32)> {
        self.busy_poll(conns, timeout, EndpointInner::accept_ready);
        let mut st = self.inner.lock();
        loop {
            if st.phase != Phase::Listening {
                return Err(EINVAL);
            }
            if !st.pending.is_empty() {
                let child = st.pending.remove(0).map_err(|_| EINVAL)?;
                drop(st);
                let (peer, port) = {
                    let c = child.inner.lock();
                    (c.peer, c.peer_port)
                };
                return Ok((child, peer, port));
            }
            self.wait(&mut st, timeout)?;
        }
    }

    /// `VMCS_IOC_SHUTDOWN` with `how` = `SHUT_RD` (0), `SHUT_WR` (1) or `SHUT_RDWR` (2).
    pub(crate) fn shutdown(&self, conns: &Conns<'_>, how: u32) -> Result {
        let bits = match how {
            0 => flags::SHUTDOWN_RCV,
            1 => flags::SHUTDOWN_SEND,
            2 => flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND,
            _ => return Err(EINVAL),
        };
        {
            let mut st = self.inner.lock();
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
                self.pump(conns, &mut st)?;
            }
            self.wake();
        }
        conns.loopback_drain();
        Ok(())
    }

    /// The file is closed. A connection with unread data is reset (`RST`: the peer gets
    /// `ECONNRESET`); otherwise it is shut both ways, then `RST` (the peer reads the rest,
    /// then end of file). A listener resets every connection not yet accepted.
    pub(crate) fn release(&self, conns: &Conns<'_>) {
        let mut pending = KVec::new();
        {
            let mut st = self.inner.lock();
            st.bulk.end(conns);
            match st.phase {
                Phase::Listening => {
                    core::mem::swap(&mut pending, &mut st.pending);
                    st.phase = Phase::Closed;
                    conns.remove(self);
                }
                Phase::Connected if st.rxq.msgs() > 0 || st.rxq.partial > 0 => {
                    self.reset_local(conns, &mut st);
                    conns.remove(self);
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
                        self.reset_local(conns, &mut st);
                        conns.remove(self);
                    } else {
                        st.phase = Phase::Closing;
                        // Removes the entry once everything is sent; else `tx_space` will.
                        let _ = self.pump(conns, &mut st);
                    }
                }
                Phase::Connecting => {
                    self.send_rst(conns, &st);
                    st.phase = Phase::Closed;
                    conns.remove(self);
                }
                _ => {
                    st.phase = Phase::Closed;
                    conns.remove(self);
                }
            }
            st.rxq.clear();
        }
        for child in pending.drain_all() {
            let mut c = child.inner.lock();
            child.reset_local(conns, &mut c);
            conns.remove(&child);
        }
        conns.loopback_drain();
    }

    /// Sets `VMCS_OPT_NONBLOCK` and/or the receive buffer.
    pub(crate) fn set_opts(&self, conns: &Conns<'_>, nonblock: Option<bool>, rcvbuf: Option<u32>) {
        {
            let mut st = self.inner.lock();
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
                    let _ = self.pump(conns, &mut st);
                }
            }
        }
        conns.loopback_drain();
    }

    /// Sets the transmit queue limit (`SO_SNDBUF`), clamped; returns the value in use.
    pub(crate) fn set_sndbuf(&self, n: usize) -> usize {
        let n = n.clamp(MIN_TXQ, MAX_TXQ);
        self.inner.lock().sndbuf = n;
        self.wake();
        n
    }

    /// The receive buffer (credit) and transmit queue limit in use.
    pub(crate) fn bufs(&self) -> (u32, usize) {
        let st = self.inner.lock();
        (st.rcvbuf, st.sndbuf)
    }

    /// Whether `VMCS_OPT_NONBLOCK` is set.
    pub(crate) fn nonblock(&self) -> bool {
        self.inner.lock().nonblock
    }

    /// Local port and, when connected (or once was), the peer.
    pub(crate) fn names(&self) -> (Option<u32>, Option<(u32, u32)>) {
        let st = self.inner.lock();
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
        let st = self.inner.lock();
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
                // Writable also once the peer shut reading (a send fails at once with
                // `EPIPE`), as vsock: a connect answered by a server that closed at once
                // is seen to complete before the `RST` comes.
                if st.local_shut & flags::SHUTDOWN_SEND == 0
                    && (st.peer_shut & flags::SHUTDOWN_RCV != 0
                        || (st.tx.peer_free() > 0 && st.txq_bytes < st.sndbuf))
                {
                    mask |= poll_mask::OUT;
                }
                if st.peer_shut_both() {
                    mask |= poll_mask::HUP;
                }
            }
            Phase::Closed | Phase::Closing if st.was_connected => {
                mask |= poll_mask::IN | poll_mask::HUP;
                // As vsock (and TCP): writable, so that a non-blocking connect that
                // completed and was closed at once is seen to complete.
                if st.local_shut & flags::SHUTDOWN_SEND == 0 {
                    mask |= poll_mask::OUT;
                }
                if st.err.is_some() {
                    mask |= poll_mask::ERR;
                }
            }
            Phase::Bound if st.err.is_some() => mask |= poll_mask::ERR,
            _ => {}
        }
        mask
    }

    /// `SIOCINQ`, `SIOCOUTQ`: unread bytes and bytes queued but not yet sent.
    pub(crate) fn queued(&self) -> (usize, usize) {
        let st = self.inner.lock();
        (st.rxq.unread(), st.txq_bytes)
    }

    /// The shutdown state AF_VMCS's `poll` reports as vsock does.
    pub(crate) fn shut_state(&self) -> ShutState {
        let st = self.inner.lock();
        ShutState {
            unconnected: matches!(st.phase, Phase::Idle | Phase::Bound),
            local: st.local_shut,
            peer: st.peer_shut,
            over: st.was_connected && matches!(st.phase, Phase::Closed | Phase::Closing),
            reset: st.err.is_some(),
        }
    }

    /// Whether the connection is established now.
    pub(crate) fn connected(&self) -> bool {
        self.inner.lock().phase == Phase::Connected
    }

    /// Released with frames still queued ([`Phase::Closing`]).
    pub(crate) fn is_closing(&self) -> bool {
        self.inner.lock().phase == Phase::Closing
    }

    /// The sticky error, if any (`SO_ERROR`), without clearing it.
    pub(crate) fn error(&self) -> Option<Error> {
        self.inner.lock().err
    }

    /// What a connect to `peer:port` offers (conn/crypto.rs): the handshake state and the
    /// `REQUEST` payload, or `None` for plaintext (loopback, policy `off`, no key or a peer
    /// without the handshake under `allow`); `EACCES` under `require` when encryption is
    /// impossible (counted as `policy_refused`).
    fn crypto_offer(
        &self,
        conns: &Conns<'_>,
        st: &EndpointInner,
        peer: u32,
        port: u32,
    ) -> Result<Option<(KBox<crypto::Pending>, [u8; HS_LEN])>> {
        let policy = conns.crypto.effective(st.enc);
        if peer == conns.local_id() || policy == Policy::Off {
            return Ok(None);
        }
        let ids = crypto::Ids {
            init_cid: conns.local_id(),
            init_port: st.port.unwrap_or(0),
            resp_cid: peer,
            resp_port: port,
            ty: st.ty,
        };
        let started = if conns.peer_crypto(peer) {
            crypto::initiate(&conns.crypto, &ids)
        } else {
            None
        };
        match started {
            Some(Ok(hs)) => Ok(Some(hs)),
            Some(Err(_)) => Err(ENOMEM),
            None if policy == Policy::Require => {
                conns
                    .crypto
                    .counters
                    .policy_refused
                    .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                Err(EACCES)
            }
            None => Ok(None),
        }
    }

    /// Sets the encryption this endpoint asks for (for connections it makes or accepts
    /// from now on).
    pub(crate) fn set_encrypt(&self, p: Policy) {
        self.inner.lock().enc = p;
    }

    /// The encryption this endpoint asks for.
    pub(crate) fn encrypt(&self) -> Policy {
        self.inner.lock().enc
    }

    /// Whether the connection is encrypted.
    pub(crate) fn encrypted(&self) -> bool {
        self.inner.lock().sess.is_some()
    }

    /// Writes this endpoint's row of the debugfs `connections` table (columns in
    /// [`super::CONNECTIONS_HEADER`]; no spaces inside a field). Remote is `-` when there is
    /// no peer (idle, bound or listening endpoints).
    pub(crate) fn describe(
        &self,
        local_id: u32,
        transport: &str,
        out: &mut impl core::fmt::Write,
    ) -> core::fmt::Result {
        let st = self.inner.lock();
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
            "{} {} {} {} {} {} {} {} {} {} {} {}",
            state,
            st.stats.rx_bytes,
            st.stats.tx_bytes,
            st.stats.rx_msgs,
            st.stats.tx_msgs,
            st.rx.queued(),
            st.rxq.msgs(),
            st.tx.peer_free(),
            st.stats.resets,
            st.last_reset.map_or("-", ResetReason::name),
            if st.sess.is_some() { "yes" } else { "no" },
            transport
        )
    }
}
