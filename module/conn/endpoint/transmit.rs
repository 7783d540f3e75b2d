// SPDX-License-Identifier: GPL-2.0

//! Transmit: queueing messages and control frames (`send`, `send_stream`) and pumping
//! the transmit queue into the transport as credit and ring space allow.

use super::{Endpoint, EndpointInner, Phase, Pumped, ResetReason, Timeout, TxItem};
use crate::{
    conn::Conns,
    glue::errno,
    proto::frame::{flags, FrameHeader, Op, SockType},
    transport::SendError,
};
use kernel::{prelude::*, sync::MutexGuard};

impl Endpoint {
    /// Sends as much of the transmit queue as the transport takes now. On a transport error
    /// other than `Full` the connection is reset and the error returned.
    /// While the peer's ring is backlogged (`ConnTable::backlogged`) it sends nothing: the frames
    /// wait for their turn in `ConnTable::tx_space`.
    pub(super) fn pump(&self, conns: &Conns<'_>, st: &mut EndpointInner) -> Result {
        if !st.txq.is_empty() && conns.backlogged(st.peer) {
            return Ok(());
        }
        self.pump_frames(conns, st, usize::MAX).map(|_| ())
    }

    /// [`Self::pump`] of at most `budget` frames, also when backlogged: whether a frame went
    /// out and whether the transport was full. The frames go out as one batch (one publish,
    /// at most one doorbell: `Conns::flush`).
    pub(super) fn pump_frames(
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

    /// [`Self::pump_frames`] before the flush.
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
                    (conns.xmit_batched(st.peer, &hdr, &[]), 0, true)
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
                    let mp = conns.max_payload(st.peer) as usize;
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
                        let r = conns.xmit_batched(st.peer, &hdr, &data[*off..*off + n]);
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

    /// `write()`: queues `data` as one message once the peer has credit for all of it.
    pub(crate) fn send(&self, conns: &Conns<'_>, data: KVec<u8>, nonblock: bool) -> Result<usize> {
        self.send_timeout(conns, data, &mut Timeout::blocking(nonblock))
    }

    /// `send` waiting at most `timeout` (`SO_SNDTIMEO`; `EAGAIN` when it runs out).
    pub(crate) fn send_timeout(
        &self,
        conns: &Conns<'_>,
        data: KVec<u8>,
        timeout: &mut Timeout,
    ) -> Result<usize> {
        let len = data.len();
        let mut st = self.inner.lock();
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
            if timeout.0 > 0 {
                conns.kick(st.peer);
            }
            self.wait(&mut st, timeout)?;
        }
        self.queue_msg(conns, st, data)
    }

    /// AF_VMCS `SOCK_STREAM` `send`: queues the first bytes of `data` that the peer's credit
    /// and the transmit queue (`SO_SNDBUF`) take now, waiting within `timeout` until at least
    /// one byte fits; returns how many were queued.
    pub(crate) fn send_stream(
        &self,
        conns: &Conns<'_>,
        mut data: KVec<u8>,
        timeout: &mut Timeout,
    ) -> Result<usize> {
        let mut st = self.inner.lock();
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
            if timeout.0 > 0 {
                conns.kick(st.peer);
            }
            self.wait(&mut st, timeout)?;
        };
        data.truncate(n);
        self.queue_msg(conns, st, data)
    }

    /// Queues `data`, for which the peer has credit, as one message and sends what it can.
    pub(super) fn queue_msg(
        &self,
        conns: &Conns<'_>,
        mut st: MutexGuard<'_, EndpointInner>,
        data: KVec<u8>,
    ) -> Result<usize> {
        let len = data.len();
        // `len` is at most the peer's credit (`peer_free`), a u32.
        st.tx.on_send(len as u32).map_err(|_| EAGAIN)?;
        st.txq.push(TxItem::Msg { data, off: 0 }, GFP_KERNEL)?;
        st.txq_bytes += len;
        st.stats.tx_bytes += len as u64;
        st.stats.tx_msgs += 1;
        self.pump(conns, &mut st)?;
        drop(st);
        conns.loopback_drain();
        Ok(len)
    }

    /// The ring to the peer has room again: sends at most `frames` queued frames, so that
    /// the core can take turns among the peer's connections (`ConnTable::tx_space`).
    pub(in crate::conn) fn on_tx_space(&self, conns: &Conns<'_>, frames: usize) -> Pumped {
        let mut st = self.inner.lock();
        // `pump_frames` wakes the waiters that its frames concern.
        self.pump_frames(conns, &mut st, frames).unwrap_or_default()
    }
}
