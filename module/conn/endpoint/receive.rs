// SPDX-License-Identifier: GPL-2.0

//! Receive: frames from the peer (`on_frame`, `on_request`, `on_rw`, resets) and the
//! reads that take messages or bytes out of the receive queue and give credit back.

use super::{rx_queue::Copy, Endpoint, EndpointInner, Phase, ResetReason, Timeout, Violation};
use crate::{
    conn::{
        crypto::{self, HsError, Policy, HS_LEN},
        Conns,
    },
    glue::{errno, UserIter},
    proto::frame::{flags, FrameHeader, Op, SockType, AEAD_TAG, HANDSHAKE_PAYLOAD},
    transport::{PeerLoss, RxPayload},
};
use core::sync::atomic::Ordering::Relaxed;
use kernel::{prelude::*, sync::MutexGuard};

/// What the handshake of an incoming `REQUEST` decided.
enum Answer {
    /// Accept, encrypted: the session and the `RESPONSE` payload.
    Encrypted(KBox<crypto::Session>, [u8; HS_LEN]),
    /// Accept in plaintext.
    Plain,
    /// Refuse with `RST` (`RST_AUTH` to a peer that speaks the handshake).
    Refuse,
}

impl Endpoint {
    /// A `REQUEST` for this listener from `peer`.
    pub(in crate::conn) fn on_request(
        &self,
        conns: &Conns<'_>,
        peer: u32,
        hdr: &FrameHeader,
        payload: &dyn RxPayload,
    ) {
        let (port, bufs) = {
            let st = self.inner.lock();
            (st.port, (st.rcvbuf, st.sndbuf, st.enc))
        };
        let sess = match Self::answer(conns, peer, hdr, payload, bufs.2) {
            Answer::Encrypted(s, p) => Some((s, p)),
            Answer::Plain => None,
            Answer::Refuse => {
                conns.reply_rst_flags(peer, hdr, flags::RST_AUTH);
                return;
            }
        };
        let busy = self.busy_us.load(core::sync::atomic::Ordering::Relaxed);
        let child = match port {
            Some(port) => Endpoint::new_child(port, peer, hdr, bufs, busy, sess).ok(),
            None => None,
        };
        let Some(child) = child else {
            conns.reply_rst(peer, hdr);
            return;
        };
        {
            let mut st = self.inner.lock();
            let ok = st.phase == Phase::Listening
                && st.pending.len() < st.backlog
                && st.ty == hdr.ty
                && conns
                    .insert_child(&child, hdr.dst_port, peer, hdr.src_port)
                    .is_ok();
            if !ok {
                drop(st);
                conns.reply_rst(peer, hdr);
                return;
            }
            if st.pending.push(child.clone(), GFP_KERNEL).is_err() {
                drop(st);
                conns.remove(&child);
                conns.reply_rst(peer, hdr);
                return;
            }
            self.wake();
        }
        let mut c = child.inner.lock();
        let _ = child.pump(conns, &mut c);
    }

    /// The encryption side of an incoming `REQUEST` under the listener's policy `enc`
    /// (docs/security.md "Encryption"): a handshake offer is answered when a key is
    /// installed and the policy is not `off`; a plaintext request, or an offer we cannot
    /// answer, is refused under `require`. Loopback is never encrypted.
    fn answer(
        conns: &Conns<'_>,
        peer: u32,
        hdr: &FrameHeader,
        payload: &dyn RxPayload,
        enc: Policy,
    ) -> Answer {
        let policy = conns.crypto.effective(enc);
        if peer == conns.local_id() || policy == Policy::Off {
            return Answer::Plain;
        }
        let k = &conns.crypto.counters;
        if hdr.len == HANDSHAKE_PAYLOAD {
            let ids = crypto::Ids {
                init_cid: peer,
                init_port: hdr.src_port,
                resp_cid: conns.local_id(),
                resp_port: hdr.dst_port,
                ty: hdr.ty,
            };
            let offer = payload.bytes().unwrap_or(&[]);
            match crypto::respond(&conns.crypto, &ids, offer) {
                Some(Ok((s, p))) => {
                    k.handshakes.fetch_add(1, Relaxed);
                    return Answer::Encrypted(s, p);
                }
                Some(Err(HsError::Auth)) => {
                    k.auth_failed.fetch_add(1, Relaxed);
                    return Answer::Refuse;
                }
                Some(Err(HsError::Local)) => return Answer::Refuse,
                None => {}
            }
        }
        if policy == Policy::Require {
            k.policy_refused.fetch_add(1, Relaxed);
            return Answer::Refuse;
        }
        Answer::Plain
    }

    /// The `RESPONSE` to our `REQUEST` arrived: completes the handshake we offered (the
    /// session), or accepts a plaintext answer unless the policy requires encryption.
    /// Err when the connect must fail with `EACCES`.
    fn on_response(conns: &Conns<'_>, st: &mut EndpointInner, payload: &[u8]) -> Result {
        let k = &conns.crypto.counters;
        match st.hs.take() {
            Some(hs) if payload.len() == HS_LEN => match hs.finish(payload) {
                Ok(sess) => {
                    st.sess = Some(sess);
                    k.handshakes.fetch_add(1, Relaxed);
                    Ok(())
                }
                Err(_) => {
                    k.auth_failed.fetch_add(1, Relaxed);
                    Err(EACCES)
                }
            },
            // We did not offer: a handshake answer is a forgery or a confused peer.
            None if !payload.is_empty() => {
                k.auth_failed.fetch_add(1, Relaxed);
                Err(EACCES)
            }
            _ if conns.crypto.effective(st.enc) == Policy::Require
                && st.peer != conns.local_id() =>
            {
                k.policy_refused.fetch_add(1, Relaxed);
                Err(EACCES)
            }
            _ => Ok(()),
        }
    }

    /// A frame for this connection.
    pub(in crate::conn) fn on_frame(
        &self,
        conns: &Conns<'_>,
        peer: u32,
        hdr: &FrameHeader,
        payload: &dyn RxPayload,
    ) {
        let mut st = self.inner.lock();
        if st.phase == Phase::Closing {
            // Released: only the queued frames matter; an RST ends the lingering.
            if hdr.op == Op::Rst {
                let reason = ResetReason::PeerReset;
                self.abort(conns, &mut st, errno::econnreset(), false, reason);
            } else {
                let _ = st.apply_peer_credit(hdr);
            }
            return;
        }
        if !st.is_conn() {
            drop(st);
            if hdr.op != Op::Rst {
                conns.reply_rst(peer, hdr);
            }
            return;
        }
        if hdr.ty != st.ty {
            let reason = Violation::TypeMismatch.into();
            self.abort(conns, &mut st, errno::econnreset(), true, reason);
            return;
        }
        if hdr.op == Op::Rst {
            if st.phase == Phase::Connecting && hdr.flags & flags::RST_AUTH != 0 {
                // Refused by the peer's key or policy (docs/uapi.md: `EACCES`).
                conns.crypto.counters.peer_refused.fetch_add(1, Relaxed);
                self.fail_connect(conns, &mut st, EACCES);
            } else if st.phase == Phase::Connecting {
                self.fail_connect(conns, &mut st, errno::econnrefused());
            } else if st.peer_shut_both() {
                self.close_orderly(conns, &mut st);
            } else {
                let reason = ResetReason::PeerReset;
                self.abort(conns, &mut st, errno::econnreset(), false, reason);
            }
            return;
        }
        if hdr.op == Op::Response && st.phase == Phase::Connecting {
            let hs = payload.bytes().unwrap_or(&[]);
            if let Err(e) = Self::on_response(conns, &mut st, hs) {
                self.send_rst(conns, &st);
                self.fail_connect(conns, &mut st, e);
                return;
            }
        }
        let free_before = st.tx.peer_free();
        if let Err(reason) = Self::on_connection_frame(conns, &mut st, hdr, payload) {
            self.abort(conns, &mut st, errno::econnreset(), true, reason);
            return;
        }
        let _ = self.pump(conns, &mut st);
        // A frame in the middle of a SEQPACKET message makes nothing readable: wake the
        // waiters only once the message is complete, unless its credit gave senders room.
        let partial =
            hdr.op == Op::Rw && hdr.ty == SockType::SeqPacket && hdr.flags & flags::EOM == 0;
        if !partial || st.tx.peer_free() > free_before {
            self.wake();
        }
    }

    /// A frame other than `RST` for a connection of a matching type: applies its credit and
    /// acts on it. Err is why the connection must be reset (a peer's violation, or `Local`
    /// when no memory was left for the answer).
    fn on_connection_frame(
        conns: &Conns<'_>,
        st: &mut EndpointInner,
        hdr: &FrameHeader,
        payload: &dyn RxPayload,
    ) -> Result<(), ResetReason> {
        // Frames other than `RW` come as kernel bytes (`RxPayload::bytes`): a few bytes of
        // bulk descriptor at most.
        let small = payload.bytes().unwrap_or(&[]);
        st.apply_peer_credit(hdr)
            .map_err(|_| ResetReason::from(Violation::BadCredit))?;
        match hdr.op {
            Op::Response if st.phase == Phase::Connecting => {
                st.phase = Phase::Connected;
                st.was_connected = true;
            }
            Op::Shutdown if st.phase == Phase::Connected => {
                Self::check_shutdown(conns, st, hdr, payload)?;
                st.peer_shut |= hdr.flags & (flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND);
            }
            Op::Rw if st.phase == Phase::Connected => Self::on_rw(conns, st, hdr, payload)?,
            Op::CreditUpdate => {}
            Op::CreditRequest => st
                .queue_ctrl(Op::CreditUpdate, 0)
                .map_err(|_| ResetReason::Local)?,
            // The bulk area is not encrypted: refused on encrypted connections.
            Op::BulkOffer | Op::BulkData | Op::BulkRelease if st.sess.is_some() => {
                return Err(Violation::UnexpectedFrame.into())
            }
            Op::BulkOffer if st.phase == Phase::Connected => {
                Self::on_bulk_offer(conns, st, small).map_err(Violation::from)?
            }
            Op::BulkData if st.phase == Phase::Connected => {
                Self::on_bulk_data(st, small).map_err(Violation::from)?
            }
            Op::BulkRelease if st.phase == Phase::Connected => {
                Self::on_bulk_release(st, small).map_err(Violation::from)?
            }
            _ => return Err(Violation::UnexpectedFrame.into()),
        }
        Ok(())
    }

    /// A `SHUTDOWN` of an encrypted connection must carry the tag of an empty plaintext
    /// under the next receive nonce (conn/crypto.rs): it proves that the peer sent it after
    /// exactly the frames received so far. A forged one, or one moved ahead of frames
    /// dropped from the ring (a truncated stream), fails and resets the connection
    /// (`decrypt`, counted in `bad_frames`) instead of ending it short. A plaintext
    /// connection's `SHUTDOWN` carries nothing.
    fn check_shutdown(
        conns: &Conns<'_>,
        st: &mut EndpointInner,
        hdr: &FrameHeader,
        payload: &dyn RxPayload,
    ) -> Result<(), ResetReason> {
        let Some(sess) = st.sess.as_deref_mut() else {
            return if hdr.len == 0 {
                Ok(())
            } else {
                Err(Violation::UnexpectedFrame.into())
            };
        };
        if hdr.len == AEAD_TAG && sess.open(hdr, payload).is_some() {
            return Ok(());
        }
        conns.crypto.counters.bad_frames.fetch_add(1, Relaxed);
        Err(ResetReason::Decrypt)
    }

    /// Queues the payload of an `RW` frame; Err when the peer broke the credit or message
    /// limits, or the domain's receive memory is full (this connection is reset: the one
    /// whose frame arrived, docs/architecture.md "Receive memory").
    pub(super) fn on_rw(
        conns: &Conns<'_>,
        st: &mut EndpointInner,
        hdr: &FrameHeader,
        payload: &dyn RxPayload,
    ) -> Result<(), ResetReason> {
        let Some(mut sess) = st.sess.take() else {
            return Self::on_rw_plain(conns, st, hdr, payload);
        };
        // Encrypted: the payload is copied out of shared memory into the session's private
        // buffer first, then verified and decrypted there (conn/crypto.rs).
        let r = match sess.open(hdr, payload) {
            Some(plain) => {
                let mut h = *hdr;
                // `plain` is at most one frame's payload.
                h.len = plain.len() as u32;
                if h.len == 0 && (hdr.ty == SockType::Stream || hdr.flags & flags::EOM == 0) {
                    Err(Violation::UnexpectedFrame.into())
                } else {
                    Self::on_rw_plain(conns, st, &h, &plain)
                }
            }
            None => {
                conns.crypto.counters.bad_frames.fetch_add(1, Relaxed);
                Err(ResetReason::Decrypt)
            }
        };
        st.sess = Some(sess);
        r
    }

    /// [`Self::on_rw`] of a plaintext payload (as received, or decrypted).
    fn on_rw_plain(
        conns: &Conns<'_>,
        st: &mut EndpointInner,
        hdr: &FrameHeader,
        payload: &dyn RxPayload,
    ) -> Result<(), ResetReason> {
        if payload.len() != hdr.len as usize || st.rx.on_recv(hdr.len).is_err() {
            return Err(Violation::CreditOverrun.into());
        }
        let eom = hdr.ty == SockType::Stream || hdr.flags & flags::EOM != 0;
        if st.local_shut & flags::SHUTDOWN_RCV != 0 {
            // Shut for reading: discard, but give the credit back.
            if st.rx.on_consumed(hdr.len).is_err() {
                return Err(Violation::CreditOverrun.into());
            }
            if st.rx.needs_update() {
                let _ = st.queue_ctrl(Op::CreditUpdate, 0);
            }
            return Ok(());
        }
        if let Err(reason) = st.rxq.push(conns.rx_mem(), payload, eom) {
            if reason == ResetReason::RxMemory && conns.rx_mem().refused() {
                pr_warn!(
                    "receive memory cap (rx_mem_max_kb) reached: resetting the connection from peer {} port {}\n",
                    st.peer,
                    st.peer_port
                );
            }
            return Err(reason);
        }
        st.stats.rx_bytes += u64::from(hdr.len);
        if eom {
            st.stats.rx_msgs += 1;
        }
        Ok(())
    }

    /// Orderly close: the peer shut both directions, then reset or left. Unread data stays
    /// readable, then reads return 0.
    fn close_orderly(&self, conns: &Conns<'_>, st: &mut EndpointInner) {
        // Unread data stays readable after the peer is gone: frames held in its ring are
        // copied out first (its ring may be reset or reused next).
        if st.rxq.copy_out().is_err() {
            st.rxq.clear();
            st.err = Some(errno::econnreset());
        }
        st.bulk.end(conns);
        st.phase = Phase::Closed;
        st.txq.clear();
        st.txq_bytes = 0;
        conns.detach(self);
        self.wake();
    }

    /// The peer is gone: reset without sending anything (kept readable to end of file when
    /// it had closed in order).
    pub(in crate::conn) fn on_peer_reset(&self, conns: &Conns<'_>, cause: PeerLoss) {
        let mut st = self.inner.lock();
        match st.phase {
            Phase::Connecting => self.fail_connect(conns, &mut st, errno::econnreset()),
            // The peer had closed in order: it is gone as after its `RST`.
            Phase::Connected if st.peer_shut_both() => self.close_orderly(conns, &mut st),
            Phase::Connected | Phase::Closing => {
                let reason = ResetReason::PeerLost(cause);
                self.abort(conns, &mut st, errno::econnreset(), false, reason)
            }
            _ => {}
        }
    }

    /// `read()`: one message, its first `dst.len()` bytes copied straight from the receive
    /// queue to user memory (the rest is discarded); 0 is end of file. A buffer that cannot
    /// be written fails with `EFAULT`, and the message stays queued.
    pub(crate) fn recv_user(
        &self,
        conns: &Conns<'_>,
        dst: &mut UserIter<'_>,
        nonblock: bool,
    ) -> Result<usize> {
        let max = dst.len();
        self.busy_poll(
            conns,
            &mut Timeout::blocking(nonblock),
            EndpointInner::recv_ready,
        );
        let mut st = self.inner.lock();
        loop {
            if !st.was_connected {
                return Err(errno::enotconn());
            }
            if st.local_shut & flags::SHUTDOWN_RCV != 0 {
                return Ok(0);
            }
            match Self::copy_msg(&mut st, dst, max, false) {
                Copied::Done(n, len) => {
                    self.consumed(conns, &mut st, len)?;
                    drop(st);
                    conns.loopback_drain();
                    conns.release_held();
                    return Ok(n);
                }
                Copied::Fault(want) => {
                    // Fault the buffer in with no lock held (the receive worker takes
                    // this one), then copy the message again.
                    drop(st);
                    if dst.fault_in(want) < want {
                        return Err(EFAULT);
                    }
                    st = self.inner.lock();
                    continue;
                }
                Copied::Revoked => return Err(self.revoked(conns, &mut st)),
                Copied::Empty => {}
            }
            if let Some(e) = st.err {
                return Err(e);
            }
            if st.peer_shut & flags::SHUTDOWN_SEND != 0 || st.phase != Phase::Connected {
                return Ok(0);
            }
            if nonblock {
                return Err(EAGAIN);
            }
            conns.kick(st.peer);
            if self.wq.wait_interruptible(&mut st) {
                return Err(ERESTARTSYS);
            }
        }
    }

    /// Copies the oldest message's first `max` bytes to `dst` with page faults disabled
    /// (the only user copy made under the endpoint's mutex: it never sleeps) and, unless
    /// `peek`, removes it. A copy cut short is undone (`dst` goes back): the message stays.
    fn copy_msg(st: &mut EndpointInner, dst: &mut UserIter<'_>, max: usize, peek: bool) -> Copied {
        let Some((copy, want, len)) = st.rxq.copy_msg_to(dst, max) else {
            return Copied::Empty;
        };
        let copied = match copy {
            Copy::Bytes(n) => n,
            Copy::Revoked => return Copied::Revoked,
        };
        if copied < want {
            dst.revert(copied);
            return Copied::Fault(want);
        }
        if !peek {
            st.rxq.drop_msg();
        }
        Copied::Done(copied, len)
    }

    /// A frame this connection held in its ring is gone (the ring was reset under it, or
    /// it was forced out): the data is lost, so the connection is reset (`ECONNRESET`).
    fn revoked(&self, conns: &Conns<'_>, st: &mut EndpointInner) -> Error {
        self.reset_local(conns, st);
        errno::econnreset()
    }

    /// A slow reader (`Upcalls::copy_out`): copies every frame this connection holds in
    /// its ring out into its receive queue; a connection that cannot be given the memory
    /// is reset (`rx_memory`). Returns the frames copied out.
    pub(in crate::conn) fn copy_out_held(&self, conns: &Conns<'_>) -> usize {
        let mut st = self.inner.lock();
        match st.rxq.copy_out() {
            Ok(n) => n,
            Err(reason) => {
                self.abort(conns, &mut st, errno::econnreset(), true, reason);
                0
            }
        }
    }

    /// Gives `n` consumed bytes back to the peer as credit (after a read).
    pub(super) fn consumed(&self, conns: &Conns<'_>, st: &mut EndpointInner, n: usize) -> Result {
        // `n` is bounded by the receive buffer, a u32.
        if st.rx.on_consumed(n as u32).is_err() {
            self.reset_local(conns, st);
            return Err(errno::econnreset());
        }
        if st.phase == Phase::Connected && st.rx.needs_update() {
            st.queue_ctrl(Op::CreditUpdate, 0)?;
            let _ = self.pump(conns, st);
        }
        Ok(())
    }

    /// Waits for something to read: `Ok(true)` when there is, `Ok(false)` at end of file.
    pub(super) fn wait_readable(
        &self,
        conns: &Conns<'_>,
        st: &mut MutexGuard<'_, EndpointInner>,
        timeout: &mut Timeout,
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
            if timeout.0 > 0 {
                conns.kick(st.peer);
            }
            self.wait(st, timeout)?;
        }
    }

    /// AF_VMCS `SOCK_SEQPACKET` `recvmsg`: one message, its first `dst.len()` bytes copied
    /// straight to user memory, and its full length; `peek` leaves it queued. End of file
    /// is `(0, 0)`. A buffer that cannot be written fails with `EFAULT`; the message stays.
    pub(crate) fn recv_seq_user(
        &self,
        conns: &Conns<'_>,
        dst: &mut UserIter<'_>,
        timeout: &mut Timeout,
        peek: bool,
    ) -> Result<(usize, usize)> {
        let max = dst.len();
        self.busy_poll(conns, timeout, EndpointInner::recv_ready);
        let mut st = self.inner.lock();
        loop {
            if !self.wait_readable(conns, &mut st, timeout)? {
                return Ok((0, 0));
            }
            match Self::copy_msg(&mut st, dst, max, peek) {
                Copied::Done(n, len) => {
                    if !peek {
                        self.consumed(conns, &mut st, len)?;
                    }
                    drop(st);
                    conns.loopback_drain();
                    conns.release_held();
                    return Ok((n, len));
                }
                Copied::Fault(want) => {
                    drop(st);
                    if dst.fault_in(want) < want {
                        return Err(EFAULT);
                    }
                    st = self.inner.lock();
                }
                Copied::Revoked => return Err(self.revoked(conns, &mut st)),
                Copied::Empty => return Ok((0, 0)),
            }
        }
    }

    /// AF_VMCS `SOCK_STREAM` `recvmsg`: up to `max` bytes of the byte stream (message
    /// boundaries ignored, the rest of a message stays queued), copied straight to user
    /// memory; 0 at end of file. Bytes that could not be copied stay queued: fewer than
    /// were there when a user page is not writable, `EFAULT` when none was.
    pub(crate) fn recv_stream_user(
        &self,
        conns: &Conns<'_>,
        dst: &mut UserIter<'_>,
        max: usize,
        timeout: &mut Timeout,
        peek: bool,
    ) -> Result<usize> {
        self.busy_poll(conns, timeout, EndpointInner::recv_ready);
        let mut st = self.inner.lock();
        loop {
            if !self.wait_readable(conns, &mut st, timeout)? {
                return Ok(0);
            }
            let (copy, want) = st.rxq.copy_stream_to(dst, max);
            let copied = match copy {
                Copy::Bytes(n) => n,
                Copy::Revoked => return Err(self.revoked(conns, &mut st)),
            };
            if copied == 0 && want > 0 {
                drop(st);
                if dst.fault_in(want) == 0 {
                    return Err(EFAULT);
                }
                st = self.inner.lock();
                continue;
            }
            if !peek {
                st.rxq.consume_bytes(copied);
                self.consumed(conns, &mut st, copied)?;
            }
            drop(st);
            conns.loopback_drain();
            conns.release_held();
            return Ok(copied);
        }
    }
}

/// What [`Endpoint::copy_msg`] did.
enum Copied {
    /// Copied this many bytes of a message of that length.
    Done(usize, usize),
    /// A user page was not present: fault in this many bytes and copy again.
    Fault(usize),
    /// No complete message is queued.
    Empty,
    /// A frame held in the ring is gone: the connection is reset.
    Revoked,
}
