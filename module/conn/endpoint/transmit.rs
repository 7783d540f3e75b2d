// SPDX-License-Identifier: GPL-2.0

//! Transmit: user data copied once, straight into the ring (`send_user`), control frames
//! and the data of callers that cannot wait queued, and the transmit queue pumped into the
//! transport as credit and ring space allow.

use super::{Endpoint, EndpointInner, Phase, Pumped, ResetReason, Timeout, TxItem};
use crate::{
    conn::Conns,
    glue::{errno, UserIter},
    proto::frame::{flags, FrameHeader, Op, SockType, AEAD_TAG, HANDSHAKE_PAYLOAD},
    transport::SendError,
};
use kernel::{prelude::*, sync::MutexGuard};

impl Endpoint {
    /// Sends as much of the transmit queue as the transport takes now. On a transport error
    /// other than `Full` the connection is reset and the error returned.
    /// While the peer's ring is backlogged (`ConnTable::backlogged`) it sends nothing: the frames
    /// wait for their turn in `ConnTable::tx_space`.
    /// While a sender copies straight from user memory (`tx_busy`), it alone sends: its
    /// frames and the queued ones stay in order.
    pub(super) fn pump(&self, conns: &Conns<'_>, st: &mut EndpointInner) -> Result {
        if st.tx_busy || (!st.txq.is_empty() && conns.backlogged(st.peer)) {
            return Ok(());
        }
        self.pump_queue(conns, st, usize::MAX).map(|_| ())
    }

    /// [`Self::pump`] of at most `budget` frames, also when backlogged: whether a frame went
    /// out and whether the transport was full. Nothing while a user copy is in progress.
    pub(super) fn pump_frames(
        &self,
        conns: &Conns<'_>,
        st: &mut EndpointInner,
        budget: usize,
    ) -> Result<Pumped> {
        if st.tx_busy {
            return Ok(Pumped::default());
        }
        self.pump_queue(conns, st, budget)
    }

    /// Sends at most `budget` frames of the transmit queue (the body of [`Self::pump`]; the
    /// direct sender calls it while it owns the order). The frames go out as one batch (one
    /// publish, at most one doorbell: `Conns::flush`).
    fn pump_queue(
        &self,
        conns: &Conns<'_>,
        st: &mut EndpointInner,
        budget: usize,
    ) -> Result<Pumped> {
        let peer = st.peer;
        let r = self.pump_batch(conns, st, budget);
        conns.flush(peer);
        r
    }

    /// [`Self::pump_queue`] before the flush.
    fn pump_batch(
        &self,
        conns: &Conns<'_>,
        st: &mut EndpointInner,
        mut budget: usize,
    ) -> Result<Pumped> {
        let mut out = Pumped::default();
        let Some(port) = st.port else {
            return Ok(out);
        };
        let mut progressed = false;
        let mut finished = false;
        let bytes_before = st.txq_bytes;
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
                    match st.sess.as_deref_mut() {
                        // An encrypted connection's `SHUTDOWN` is the tag of an empty
                        // plaintext under the next nonce: the receiver verifies it with the
                        // count of frames it got, so a forged or early `SHUTDOWN` (frames
                        // dropped before it) resets instead of ending the stream short.
                        Some(sess) if *op == Op::Shutdown => {
                            hdr.len = AEAD_TAG;
                            let r = match sess.seal(&hdr, &[]) {
                                Some(tag) => conns.xmit_batched(st.peer, &hdr, tag),
                                None => Err(SendError::Invalid),
                            };
                            if r.is_ok() {
                                sess.sent();
                            }
                            (r, 0, true)
                        }
                        _ => (conns.xmit_batched(st.peer, &hdr, &[]), 0, true),
                    }
                }
                TxItem::Handshake { op, payload } => {
                    hdr.op = *op;
                    hdr.flags = 0;
                    hdr.len = HANDSHAKE_PAYLOAD;
                    (conns.xmit_batched(st.peer, &hdr, payload), 0, true)
                }
                TxItem::Bulk { op, desc } => {
                    hdr.op = *op;
                    hdr.flags = 0;
                    let p = desc.encode();
                    // The descriptor is 8 bytes.
                    hdr.len = p.len() as u32;
                    (conns.xmit_batched(st.peer, &hdr, &p), 0, true)
                }
                TxItem::Msg { data, off } => {
                    let mut mp = conns.max_payload(st.peer) as usize;
                    // An encrypted frame carries the tag beyond its plaintext.
                    let tag = if st.sess.is_some() {
                        AEAD_TAG as usize
                    } else {
                        0
                    };
                    mp = mp.saturating_sub(tag);
                    let left = data.len() - *off;
                    if mp == 0 && (left > 0 || tag > 0) {
                        (Err(SendError::Unreachable), 0, false)
                    } else {
                        let n = left.min(mp);
                        let last = n == left;
                        // `n + tag` is at most the frame payload limit, so it fits in u32.
                        hdr.len = (n + tag) as u32;
                        // Stream frames carry no boundaries (docs/protocol.md: EOM only
                        // on SEQPACKET; the receiving transport rejects it on a stream).
                        hdr.flags = if last && st.ty == SockType::SeqPacket {
                            flags::EOM
                        } else {
                            0
                        };
                        let plain = &data[*off..*off + n];
                        let r = match st.sess.as_deref_mut() {
                            // Sealed in the session's private buffer, then copied into
                            // the ring (conn/crypto.rs).
                            Some(sess) => match sess.seal(&hdr, plain) {
                                Some(sealed) => conns.xmit_batched(st.peer, &hdr, sealed),
                                None => Err(SendError::Invalid),
                            },
                            None => conns.xmit_batched(st.peer, &hdr, plain),
                        };
                        if r.is_ok() {
                            *off += n;
                            if let Some(sess) = st.sess.as_deref_mut() {
                                sess.sent();
                            }
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
                        st.txq.pop_front();
                        finished = true;
                    }
                }
                Err(SendError::Full) => {
                    out.full = true;
                    conns.set_backlogged(st.peer);
                    break;
                }
                Err(e) => {
                    let (err, reason) = match e {
                        SendError::Unreachable => (errno::ehostunreach(), ResetReason::Unreachable),
                        other => (Error::from(other), ResetReason::Local),
                    };
                    self.abort(conns, st, errno::econnreset(), false, reason);
                    return Err(err);
                }
            }
        }
        // Waiters care about a finished item (a whole message, a control or bulk frame) or
        // about room in the send buffer; frames in the middle of a message that leave room
        // below half of `SO_SNDBUF` do not wake them (as `sk_stream_write_space`).
        let low = st.sndbuf / 2;
        if finished || (bytes_before > low && st.txq_bytes <= low) {
            self.wake();
        }
        out.sent = progressed;
        if st.phase == Phase::Closing && st.txq.is_empty() {
            st.phase = Phase::Closed;
            conns.remove(self);
        }
        Ok(out)
    }

    /// Sends an `RST` for the connection now (best effort, not through the queue).
    pub(super) fn send_rst(&self, conns: &Conns<'_>, st: &EndpointInner) {
        if let Some(port) = st.port {
            let hdr = FrameHeader::new(Op::Rst, st.ty, port, st.peer_port);
            let _ = conns.xmit(st.peer, &hdr, &[]);
        }
    }

    /// Whether `send` may queue data now: the connection's error, `EPIPE` or `ENOTCONN`.
    pub(super) fn sendable(st: &EndpointInner) -> Result {
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

    /// `write()`/`sendmsg()` of `src`, copied once: straight from user memory into the ring
    /// (`Transport::send_user`), in frames of at most the peer's max payload.
    ///
    /// SEQPACKET (`stream` false): one message of all of `src`, all or nothing: the buffer
    /// is faulted in first (`EFAULT` before anything is sent), then it waits within
    /// `timeout` for credit for all of it (`EMSGSIZE` beyond the peer's buffer). STREAM:
    /// what the peer's credit takes now, waiting until at least one byte fits. Returns the
    /// bytes sent (see [`Self::send_direct`] for a send cut short).
    pub(crate) fn send_user(
        &self,
        conns: &Conns<'_>,
        src: &mut UserIter<'_>,
        timeout: &mut Timeout,
        stream: bool,
    ) -> Result<usize> {
        let len = src.len();
        if !stream && len > 0 && src.fault_in(len) < len {
            return Err(EFAULT);
        }
        let mut st = self.inner.lock();
        let total = loop {
            Self::sendable(&st)?;
            if !stream && len > st.peer_buf_alloc as usize {
                return Err(errno::emsgsize());
            }
            if len == 0 {
                return Ok(0);
            }
            // One sender at a time: a message is never interleaved with another's frames.
            if !st.tx_busy {
                let free = st.tx.peer_free() as usize;
                let room = if st.sess.is_some() && st.txq_bytes == 0 {
                    // Encrypted data goes through the transmit queue (sealed frame by
                    // frame as it leaves): at most `SO_SNDBUF` (or one largest message)
                    // of it at once.
                    st.sndbuf.max(crate::uapi::MAX_MSG_SIZE as usize)
                } else if st.txq_bytes == 0 {
                    usize::MAX
                } else {
                    st.sndbuf.saturating_sub(st.txq_bytes)
                };
                let n = if stream {
                    len.min(free).min(room)
                } else if free >= len && len <= room {
                    len
                } else {
                    0
                };
                if n > 0 {
                    break n;
                }
            }
            if timeout.0 > 0 {
                conns.kick(st.peer);
            }
            self.wait(&mut st, timeout)?;
        };
        // The credit for all of it is taken now, as it was checked; what a fault leaves
        // unsent is given back.
        // `total` is at most the peer's credit (`peer_free`), a u32.
        st.tx.on_send(total as u32).map_err(|_| EAGAIN)?;
        st.tx_busy = true;
        let (mut st, res) = if st.sess.is_some() {
            self.send_sealed(conns, st, src, total)
        } else {
            self.send_direct(conns, st, src, total, timeout, stream)
        };
        st.tx_busy = false;
        if let Ok(n) = res {
            st.stats.tx_bytes += n as u64;
            st.stats.tx_msgs += 1;
        }
        // Control frames queued meanwhile go now; the next sender may start.
        let _ = self.pump(conns, &mut st);
        self.wake();
        drop(st);
        conns.loopback_drain();
        res
    }

    /// The frames of one [`Self::send_user`]: `total` bytes of `src`, whose credit is
    /// taken, while this thread owns the connection's transmit order (`tx_busy`).
    ///
    /// - Each frame is copied from user memory into the reserved ring space under the
    ///   transport's spinlock with page faults disabled. A copy cut short commits what it
    ///   copied; the rest of the buffer is then faulted in with no lock held, and the next
    ///   frame starts where it stopped.
    /// - Frames queued earlier (control frames, data a caller could not wait for) go
    ///   first, and while the ring to the peer is backlogged the connections with queued
    ///   frames take their turns first (`ConnTable::tx_space`); when the ring is full this
    ///   sender waits for room (`tx_waiting`, woken by `on_tx_space`) and then copies
    ///   directly.
    /// - A caller that cannot wait (non-blocking, its timeout ran out, a signal) has the
    ///   rest copied into a kernel buffer and queued: all of a SEQPACKET message, or a
    ///   STREAM send that sent nothing yet (what poll's `POLLOUT` promised); a stream that
    ///   sent something returns its count.
    /// - A buffer that turns out unreadable midway (another thread unmapped it) ends the
    ///   send: a short count (or `EFAULT` if nothing left); a SEQPACKET message is closed
    ///   at what was sent, by an empty `EOM` frame. The unsent credit is given back.
    fn send_direct<'a>(
        &'a self,
        conns: &Conns<'_>,
        mut st: MutexGuard<'a, EndpointInner>,
        src: &mut UserIter<'_>,
        total: usize,
        timeout: &mut Timeout,
        stream: bool,
    ) -> (MutexGuard<'a, EndpointInner>, Result<usize>) {
        let mut sent = 0usize;
        let local = st.peer == conns.local_id();
        let mut drained = false;
        let res = loop {
            if sent == total {
                break Ok(());
            }
            if let Err(e) = Self::sendable(&st) {
                break Err(e);
            }
            // While the ring is backlogged the round robin goes first, for our own queued
            // frames too; after it they go before the next direct frame.
            let backlogged = conns.backlogged(st.peer);
            if !backlogged && !st.txq.is_empty() {
                if let Err(e) = self.pump_queue(conns, &mut st, usize::MAX) {
                    break Err(e);
                }
            }
            let mut wait = backlogged || !st.txq.is_empty();
            let mut fault = 0;
            if !wait {
                match self.send_frame_user(conns, &mut st, src, total - sent, sent, total) {
                    Ok(Some((k, n))) => {
                        sent += k;
                        if k > 0 {
                            drained = false;
                        }
                        if k < n {
                            fault = n - k;
                        }
                    }
                    Ok(None) => {
                        conns.set_backlogged(st.peer);
                        wait = true;
                    }
                    Err(e) => break Err(e),
                }
            }
            if fault > 0 {
                drop(st);
                let present = src.fault_in(fault);
                st = self.inner.lock();
                if present == 0 {
                    break Err(EFAULT);
                }
                continue;
            }
            if wait && local && !drained {
                // The loopback FIFO is drained by the threads that send, after they drop
                // their locks: drain it once, then go on.
                drained = true;
                drop(st);
                conns.loopback_drain();
                st = self.inner.lock();
                continue;
            }
            if wait {
                let w = if local {
                    // Still full: nobody else may drain it soon; as a caller that cannot
                    // wait (the queued rest goes with the next drain, as before).
                    Err(EAGAIN)
                } else {
                    st.tx_waiting = true;
                    if timeout.0 > 0 {
                        conns.kick(st.peer);
                    }
                    let w = self.wait(&mut st, timeout);
                    st.tx_waiting = false;
                    w
                };
                if let Err(e) = w {
                    if stream && sent > 0 {
                        break Ok(());
                    }
                    let (g, queued) = self.queue_rest(conns, st, src, total - sent);
                    st = g;
                    match queued {
                        Ok(q) => {
                            sent += q;
                            break if q == 0 { Err(e) } else { Ok(()) };
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        if sent < total {
            // `total - sent` is at most the credit taken, a u32.
            st.tx.on_unsend((total - sent) as u32);
            if !stream && sent > 0 && Self::sendable(&st).is_ok() {
                // Close the message at what was sent: an empty `EOM` frame.
                if st
                    .txq
                    .push(
                        TxItem::Msg {
                            data: KVec::new(),
                            off: 0,
                        },
                        GFP_KERNEL,
                    )
                    .is_err()
                {
                    self.reset_local(conns, &mut st);
                }
            }
        }
        let res = match res {
            Ok(()) => Ok(sent),
            Err(_) if sent > 0 => Ok(sent),
            Err(e) => Err(e),
        };
        (st, res)
    }

    /// The data of one [`Self::send_user`] on an encrypted connection: `total` bytes of
    /// `src` (their credit taken) copied into a kernel buffer and queued; the transmit
    /// queue seals each frame in the session's private buffer as it leaves
    /// ([`Self::pump`]), so plaintext never reaches shared memory. A buffer that is not
    /// readable midway sends what was read (`EFAULT` when nothing was); the unsent credit
    /// is given back.
    fn send_sealed<'a>(
        &'a self,
        conns: &Conns<'_>,
        st: MutexGuard<'a, EndpointInner>,
        src: &mut UserIter<'_>,
        total: usize,
    ) -> (MutexGuard<'a, EndpointInner>, Result<usize>) {
        let (mut st, res) = self.queue_rest(conns, st, src, total);
        let sent = res.as_ref().copied().unwrap_or_default();
        if sent < total {
            // `total - sent` is at most the credit taken, a u32.
            st.tx.on_unsend((total - sent) as u32);
        }
        let res = match res {
            Ok(0) => Err(EFAULT),
            other => other,
        };
        (st, res)
    }

    /// One data frame of at most `left` bytes of `src`, straight into the ring: `Some((k,
    /// n))` when `k` of the frame's `n` bytes went (fewer at a user page not present),
    /// `None` when the ring is full. `sent` of `total` bytes went before (the last frame
    /// of a SEQPACKET message carries `EOM`). On a transport error the connection is reset.
    fn send_frame_user(
        &self,
        conns: &Conns<'_>,
        st: &mut EndpointInner,
        src: &mut UserIter<'_>,
        left: usize,
        sent: usize,
        total: usize,
    ) -> Result<Option<(usize, usize)>> {
        let port = st.port.ok_or_else(errno::enotconn)?;
        let mp = conns.max_payload(st.peer) as usize;
        let res = if mp == 0 {
            Err(SendError::Unreachable)
        } else {
            let n = left.min(mp);
            let mut rx = st.rx;
            let (buf_alloc, fwd_cnt) = rx.advertise();
            let mut hdr = FrameHeader::new(Op::Rw, st.ty, port, st.peer_port);
            hdr.buf_alloc = buf_alloc;
            hdr.fwd_cnt = fwd_cnt;
            // `n` is at most the frame payload limit, so it fits in u32.
            hdr.len = n as u32;
            hdr.flags = if sent + n == total && st.ty == SockType::SeqPacket {
                flags::EOM
            } else {
                0
            };
            conns.xmit_user(st.peer, &hdr, src).map(|k| {
                if k > 0 {
                    // The stamp went out with the frame.
                    st.rx = rx;
                }
                (k, n)
            })
        };
        match res {
            Ok(r) => Ok(Some(r)),
            Err(SendError::Full) => Ok(None),
            Err(e) => {
                let (err, reason) = match e {
                    SendError::Unreachable => (errno::ehostunreach(), ResetReason::Unreachable),
                    other => (Error::from(other), ResetReason::Local),
                };
                self.abort(conns, st, errno::econnreset(), false, reason);
                Err(err)
            }
        }
    }

    /// The caller cannot wait for ring space: copies the next `left` bytes of `src` into a
    /// kernel buffer, with no lock held (it may fault and sleep), and queues them as the
    /// rest of the message (their credit is taken). Returns the bytes queued (fewer where
    /// the buffer was not readable).
    fn queue_rest<'a>(
        &'a self,
        conns: &Conns<'_>,
        st: MutexGuard<'a, EndpointInner>,
        src: &mut UserIter<'_>,
        left: usize,
    ) -> (MutexGuard<'a, EndpointInner>, Result<usize>) {
        drop(st);
        let mut data = match KVec::<u8>::with_capacity(left, GFP_KERNEL) {
            Ok(d) => d,
            Err(e) => return (self.inner.lock(), Err(e.into())),
        };
        let got = match data.spare_capacity_mut().get_mut(..left) {
            Some(dst) => src.read(dst),
            None => 0,
        };
        // SAFETY: `read` initialised the first `got` spare elements.
        unsafe { data.inc_len(got) };
        let mut st = self.inner.lock();
        if got == 0 {
            return (st, Ok(0));
        }
        if let Err(e) = Self::sendable(&st) {
            src.revert(got);
            return (st, Err(e));
        }
        if let Err(e) = st.txq.push(TxItem::Msg { data, off: 0 }, GFP_KERNEL) {
            src.revert(got);
            return (st, Err(e.into()));
        }
        st.txq_bytes += got;
        // As `pump` (its turn in the round robin while the ring is backlogged), for the
        // owner of the transmit order.
        let r = if conns.backlogged(st.peer) {
            Ok(got)
        } else {
            self.pump_queue(conns, &mut st, usize::MAX).map(|_| got)
        };
        (st, r)
    }

    /// The ring to the peer has room again: sends at most `frames` queued frames, so that
    /// the core can take turns among the peer's connections (`ConnTable::tx_space`).
    pub(in crate::conn) fn on_tx_space(&self, conns: &Conns<'_>, frames: usize) -> Pumped {
        let mut st = self.inner.lock();
        if st.tx_waiting {
            // A sender waits to copy straight into the ring: its turn.
            self.wake();
        }
        // `pump_frames` wakes the waiters that its frames concern.
        self.pump_frames(conns, &mut st, frames).unwrap_or_default()
    }
}
