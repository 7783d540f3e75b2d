// SPDX-License-Identifier: GPL-2.0

//! The bulk area of one connection: zero-copy transfer through the shared region
//! (docs/protocol.md §8, docs/uapi.md "Bulk transfer").
//!
//! Each side may allocate one page-aligned *extent* in its own slice of the bulk area
//! (`ConnTable::bulk` is the local allocator of our slice; nothing about it is shared) and offers
//! it to the other side (`BULK_OFFER`). The sender then publishes ranges of its extent
//! (`BULK_DATA`); a range belongs to the receiver until it is handed back (`BULK_RELEASE`,
//! oldest first). Everything a peer sends is validated here; a violation resets the
//! connection. When the connection ends, the extent goes back to the allocator and every
//! user mapping of the file is zapped first, so a process never keeps access to an extent
//! that later serves another connection: a stale mapping faults in the file's private
//! zero page instead.

use super::{Endpoint, EndpointInner, Phase, Timeout, TxItem};
use crate::{
    conn::{BulkViolation, Conns},
    glue::{self, errno, FileMapping},
    proto::{
        bulk::{first_fit, Desc, MAX_DESCS},
        frame::{flags, Op},
    },
};
use kernel::{
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, CondVarTimeoutResult, MutexGuard},
    time::msecs_to_jiffies,
};

/// Default wait of `VMCS_IOC_BULK_SETUP` for the peer's offer.
const DEFAULT_SETUP_TIMEOUT_MS: u32 = 2000;

/// The bulk state of a connection (inside its [`EndpointInner`]).
#[derive(Default)]
pub(crate) struct BulkState {
    /// Our extent, relative to our slice.
    tx: Option<Desc>,
    /// The peer's extent, relative to its slice (validated when it arrived).
    rx: Option<Desc>,
    /// Published ranges of our extent the peer has not handed back, oldest first.
    out: KVec<Desc>,
    /// Ranges of the peer's extent received, not yet taken by `BULK_RECV`.
    inq: KVec<Desc>,
    /// Ranges taken by `BULK_RECV`, not yet released, oldest first.
    held: KVec<Desc>,
    /// The file whose mappings to zap when the bulk set-up ends.
    mapping: Option<Arc<FileMapping>>,
    /// The set-up is over (connection ended): mappings fault in the file's private zero
    /// page from now on.
    ended: bool,
}

impl BulkState {
    /// Whether `d` can be lent now: fewer than `MAX_DESCS` lent, and no overlap with one.
    fn can_lend(&self, d: &Desc) -> bool {
        self.out.len() < MAX_DESCS && !self.out.iter().any(|o| o.overlaps(d))
    }

    /// Whether a descriptor waits for `BULK_RECV` (poll's `EPOLLIN`).
    pub(super) fn readable(&self) -> bool {
        !self.inq.is_empty()
    }

    /// Ends the set-up: zaps the user mappings, then frees our extent. Idempotent.
    pub(super) fn end(&mut self, conns: &Conns<'_>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Some(m) = self.mapping.take() {
            m.zap();
        }
        if let Some(tx) = self.tx.take() {
            conns.bulk.lock().retain(|d| d.off != tx.off);
        }
        self.rx = None;
        self.out.clear();
        self.inq.clear();
        self.held.clear();
    }

    /// Region offset of page `pgoff` of the file's bulk mappings (ours first, then the
    /// peer's), and whether it is the peer's.
    fn page(
        &self,
        conns: &Conns<'_>,
        peer: u32,
        local: u32,
        pgoff: usize,
    ) -> Option<(usize, bool)> {
        let off = pgoff.checked_mul(PAGE_SIZE)?;
        let tx = self.tx?;
        let transport = conns.transport();
        if off < tx.len as usize {
            let (base, _) = transport.bulk_slice(local)?;
            return Some((base + tx.off as usize + off, false));
        }
        let rx = self.rx?;
        let roff = off - tx.len as usize;
        if roff < rx.len as usize {
            let (base, _) = transport.bulk_slice(peer)?;
            return Some((base + rx.off as usize + roff, true));
        }
        None
    }
}

impl EndpointInner {
    /// A `BULK_RECV` would not wait: a range to take, an error or the end of the transfer
    /// (the conditions of [`Endpoint::bulk_recv`]).
    fn bulk_recv_ready(&self) -> bool {
        !self.was_connected
            || (self.bulk.tx.is_none() && !self.bulk.ended)
            || !self.bulk.inq.is_empty()
            || self.err.is_some()
            || self.peer_shut & flags::SHUTDOWN_SEND != 0
            || self.local_shut & flags::SHUTDOWN_RCV != 0
            || self.phase != Phase::Connected
    }
}

impl Endpoint {
    /// The usual errors of a connection that cannot move data (as `write`).
    fn bulk_conn_err(st: &EndpointInner) -> Result {
        if let Some(e) = st.err {
            if st.was_connected {
                return Err(e);
            }
        }
        match st.phase {
            Phase::Connected => Ok(()),
            _ if st.was_connected => Err(EPIPE),
            _ => Err(errno::enotconn()),
        }
    }

    /// `VMCS_IOC_BULK_SETUP`: allocates our extent of `size` bytes (rounded up to pages) if
    /// not done yet, offers it, and waits for the peer's offer. Returns both extents' sizes.
    pub(crate) fn bulk_setup(
        &self,
        conns: &Conns<'_>,
        size: u32,
        timeout_ms: u32,
        nonblock: bool,
        mapping: &Arc<FileMapping>,
    ) -> Result<(u32, u32)> {
        let mut st = self.inner.lock();
        Self::bulk_conn_err(&st)?;
        if st.sess.is_some() {
            // The bulk area is shared memory the cipher does not cover: refused on
            // encrypted connections (docs/security.md "Encryption").
            return Err(errno::eopnotsupp());
        }
        if st.bulk.ended {
            return Err(EPIPE);
        }
        if st.bulk.tx.is_none() {
            let local = conns.local_id();
            let (_, slice) = conns
                .transport()
                .bulk_slice(local)
                .ok_or(errno::eopnotsupp())?;
            let len = (size as usize)
                .checked_next_multiple_of(PAGE_SIZE)
                .ok_or(EINVAL)?;
            if len == 0 || len > slice {
                return Err(EINVAL);
            }
            // `len` is at most the slice, at most half of a region of at most 1 GiB.
            let len = u32::try_from(len)?;
            let tx = {
                let mut used = conns.bulk.lock();
                let off = first_fit(&used, slice, len).ok_or(ENOSPC)?;
                let d = Desc { off, len };
                used.push(d, GFP_KERNEL)?;
                d
            };
            st.bulk.tx = Some(tx);
            st.bulk.mapping = Some(mapping.clone());
            if let Err(e) = st.txq.push(
                TxItem::Bulk {
                    op: Op::BulkOffer,
                    desc: tx,
                },
                GFP_KERNEL,
            ) {
                st.bulk.end(conns);
                st.bulk.ended = false;
                return Err(e.into());
            }
            self.pump(conns, &mut st)?;
            // Loopback: deliver the offer now (the FIFO is drained without our lock).
            drop(st);
            conns.loopback_drain();
            st = self.inner.lock();
        }
        let timeout = if timeout_ms == 0 {
            DEFAULT_SETUP_TIMEOUT_MS
        } else {
            timeout_ms
        };
        let mut left = msecs_to_jiffies(timeout);
        loop {
            Self::bulk_conn_err(&st)?;
            if let (Some(tx), Some(rx)) = (st.bulk.tx, st.bulk.rx) {
                return Ok((tx.len, rx.len));
            }
            if st.bulk.ended {
                return Err(EPIPE);
            }
            if nonblock {
                return Err(EAGAIN);
            }
            conns.kick(st.peer);
            match self.wq.wait_interruptible_timeout(&mut st, left) {
                CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                CondVarTimeoutResult::Timeout => {
                    if st.bulk.rx.is_some() {
                        continue;
                    }
                    return Err(ETIMEDOUT);
                }
                CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
            }
        }
    }

    /// Waits until the connection can lend ranges of our extent; returns our extent's
    /// length.
    fn bulk_lendable(st: &EndpointInner) -> Result<u32> {
        Self::bulk_conn_err(st)?;
        if st.local_shut & flags::SHUTDOWN_SEND != 0 || st.peer_shut & flags::SHUTDOWN_RCV != 0 {
            return Err(EPIPE);
        }
        match (st.bulk.tx, st.bulk.rx) {
            (Some(tx), Some(_)) => Ok(tx.len),
            _ => Err(errno::enotconn()),
        }
    }

    /// `VMCS_IOC_BULK_WAIT`: waits until no lent range overlaps `[off, off + len)` of our
    /// extent (it is ours to write again).
    pub(crate) fn bulk_wait(
        &self,
        conns: &Conns<'_>,
        off: u32,
        len: u32,
        nonblock: bool,
    ) -> Result {
        let d = Desc { off, len };
        if !nonblock {
            // Busy polling (docs/architecture.md "Busy polling"): a release that comes
            // within the window needs no doorbell and no wake-up.
            let mut t = Timeout::FOREVER;
            self.busy_poll(conns, &mut t, |st| {
                Self::bulk_lendable(st).is_err() || !st.bulk.out.iter().any(|o| o.overlaps(&d))
            });
        }
        let mut st = self.inner.lock();
        loop {
            if !d.valid_in(Self::bulk_lendable(&st)?) {
                return Err(EINVAL);
            }
            if !st.bulk.out.iter().any(|o| o.overlaps(&d)) {
                return Ok(());
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

    /// `VMCS_IOC_BULK_SEND` and `_SENDV`: lends the ranges `descs` of our extent to the
    /// peer, in order. Waits (unless `nonblock`) while the first overlaps a range the peer
    /// still owns or `MAX_DESCS` are lent; the others are lent while they can be without
    /// waiting. Returns how many were lent (at least 1), or an error with none lent.
    pub(crate) fn bulk_send(
        &self,
        conns: &Conns<'_>,
        descs: &[Desc],
        nonblock: bool,
    ) -> Result<usize> {
        let Some(&first) = descs.first() else {
            return Err(EINVAL);
        };
        let mut st = self.inner.lock();
        loop {
            if !first.valid_in(Self::bulk_lendable(&st)?) {
                return Err(EINVAL);
            }
            if st.bulk.can_lend(&first) {
                break;
            }
            if nonblock {
                return Err(EAGAIN);
            }
            conns.kick(st.peer);
            if self.wq.wait_interruptible(&mut st) {
                return Err(ERESTARTSYS);
            }
        }
        let ext = Self::bulk_lendable(&st)?;
        let mut done = 0;
        for &d in descs {
            // `first` passed these checks above; a later one that fails ends the batch.
            if !d.valid_in(ext) || !st.bulk.can_lend(&d) {
                break;
            }
            if let Err(e) = Self::bulk_lend(&mut st, d) {
                if done == 0 {
                    return Err(e);
                }
                break;
            }
            done += 1;
        }
        self.pump(conns, &mut st)?;
        drop(st);
        conns.loopback_drain();
        Ok(done)
    }

    /// Records `d` as lent and queues its `BULK_DATA` frame.
    fn bulk_lend(st: &mut EndpointInner, d: Desc) -> Result {
        st.bulk.out.push(d, GFP_KERNEL)?;
        if let Err(e) = st.txq.push(
            TxItem::Bulk {
                op: Op::BulkData,
                desc: d,
            },
            GFP_KERNEL,
        ) {
            st.bulk.out.pop();
            return Err(e.into());
        }
        Ok(())
    }

    /// `VMCS_IOC_BULK_RECV` and `_RECVV`: up to `max` of the oldest ranges the peer lent
    /// us (offsets in its extent), at least one; empty at end of file. The ranges are ours
    /// (held) until released; [`Endpoint::bulk_unrecv`] puts them back if they cannot be
    /// handed to the caller.
    pub(crate) fn bulk_recv(
        &self,
        conns: &Conns<'_>,
        max: usize,
        nonblock: bool,
    ) -> Result<KVec<Desc>> {
        if !nonblock {
            let mut t = Timeout::FOREVER;
            self.busy_poll(conns, &mut t, EndpointInner::bulk_recv_ready);
        }
        let mut st: MutexGuard<'_, EndpointInner> = self.inner.lock();
        loop {
            if !st.was_connected {
                return Err(errno::enotconn());
            }
            if st.bulk.tx.is_none() && !st.bulk.ended {
                return Err(errno::enotconn());
            }
            if !st.bulk.inq.is_empty() {
                let b = &mut st.bulk;
                let n = b.inq.len().min(max);
                let mut got = KVec::with_capacity(n, GFP_KERNEL)?;
                got.extend_from_slice(&b.inq[..n], GFP_KERNEL)?;
                b.held.extend_from_slice(&got, GFP_KERNEL)?;
                let rest = b.inq.len() - n;
                b.inq.copy_within(n.., 0);
                b.inq.truncate(rest);
                return Ok(got);
            }
            if let Some(e) = st.err {
                return Err(e);
            }
            if st.peer_shut & flags::SHUTDOWN_SEND != 0
                || st.local_shut & flags::SHUTDOWN_RCV != 0
                || st.phase != Phase::Connected
            {
                return Ok(KVec::new());
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

    /// Undoes a [`Endpoint::bulk_recv`] whose result could not be copied to the user: the
    /// ranges still held go back to the front of the receive queue, in order, so nothing
    /// is lost to a bad buffer.
    pub(crate) fn bulk_unrecv(&self, got: &[Desc]) {
        let mut st = self.inner.lock();
        let b = &mut st.bulk;
        if b.ended {
            return;
        }
        let mut back = KVec::new();
        for d in got {
            if let Some(i) = b.held.iter().position(|h| h == d) {
                let _ = b.held.remove(i);
                if back.push(*d, GFP_KERNEL).is_err() {
                    break;
                }
            }
        }
        if back.extend_from_slice(&b.inq, GFP_KERNEL).is_ok() {
            b.inq = back;
        }
    }

    /// `VMCS_IOC_BULK_RELEASE` (`descs` `None`: the `count` oldest held ranges) and
    /// `_RELEASEV` (`descs`: each must be the oldest range still held, in order): hands
    /// ranges back to the peer. Returns how many (at least 1), or an error with none
    /// released.
    pub(crate) fn bulk_release(
        &self,
        conns: &Conns<'_>,
        descs: Option<&[Desc]>,
        count: usize,
    ) -> Result<usize> {
        let mut st = self.inner.lock();
        if !st.was_connected {
            return Err(errno::enotconn());
        }
        if st.bulk.ended {
            // The connection is over: everything went back with it.
            Self::bulk_conn_err(&st)?;
            return Ok(count);
        }
        if count == 0 || (descs.is_none() && count > st.bulk.held.len()) {
            return Err(EINVAL);
        }
        let mut done = 0;
        for i in 0..count {
            let Some(&d) = st.bulk.held.first() else {
                break;
            };
            if descs.is_some_and(|v| v.get(i) != Some(&d)) {
                break;
            }
            if st.phase == Phase::Connected {
                if let Err(e) = st.txq.push(
                    TxItem::Bulk {
                        op: Op::BulkRelease,
                        desc: d,
                    },
                    GFP_KERNEL,
                ) {
                    if done == 0 {
                        return Err(e.into());
                    }
                    break;
                }
            }
            let _ = st.bulk.held.remove(0);
            done += 1;
        }
        if done == 0 {
            return Err(EINVAL);
        }
        if st.phase == Phase::Connected {
            self.pump(conns, &mut st)?;
        }
        drop(st);
        conns.loopback_drain();
        Ok(done)
    }

    /// `mmap` of `len` bytes at page `pgoff`: our extent is at 0, the peer's right after it
    /// (read-only). Returns whether the range is the peer's.
    pub(crate) fn bulk_mmap(&self, pgoff: usize, len: usize, write: bool) -> Result<bool> {
        let st = self.inner.lock();
        if st.bulk.ended {
            return Err(errno::enotconn());
        }
        let Some(tx) = st.bulk.tx else {
            return Err(errno::enotconn());
        };
        let off = pgoff.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        let end = off.checked_add(len).ok_or(EINVAL)?;
        let txl = tx.len as usize;
        if len == 0 || len % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        if end <= txl {
            return Ok(false);
        }
        let rxl = st.bulk.rx.map_or(0, |r| r.len as usize);
        if off >= txl && end <= txl + rxl {
            if write {
                return Err(EACCES);
            }
            return Ok(true);
        }
        Err(EINVAL)
    }

    /// A fault at page `pgoff` of a bulk mapping of the file whose mapping is `mapping`:
    /// inserts the region's page while the set-up is alive (under the lock, so that
    /// teardown's zap comes after), else the file's private zero page (a stale mapping
    /// reads zeros, never the data of the connection the extent serves next).
    pub(crate) fn bulk_fault(
        &self,
        conns: &Conns<'_>,
        pgoff: usize,
        fault: &glue::Fault,
        mapping: &FileMapping,
    ) -> u32 {
        let st = self.inner.lock();
        if st.bulk.ended || st.phase != Phase::Connected {
            return fault.insert_zero_page(mapping);
        }
        let local = conns.local_id();
        let Some((off, _)) = st.bulk.page(conns, st.peer, local, pgoff) else {
            return fault.insert_zero_page(mapping);
        };
        match conns.transport().pfn(off) {
            Some(pfn) => fault.insert_pfn(pfn),
            None => fault.insert_zero_page(mapping),
        }
    }

    /// `BULK_OFFER` from the peer: its extent, once; Err on a violation.
    pub(super) fn on_bulk_offer(
        conns: &Conns<'_>,
        st: &mut EndpointInner,
        payload: &[u8],
    ) -> Result<(), BulkViolation> {
        let d = Desc::decode(payload).ok_or(BulkViolation::Descriptor)?;
        let (_, slice) = conns
            .transport()
            .bulk_slice(st.peer)
            .ok_or(BulkViolation::Extent)?;
        if st.bulk.rx.is_some() || st.bulk.ended {
            return Err(BulkViolation::SecondOffer);
        }
        if !d.valid_extent(slice) {
            return Err(BulkViolation::Extent);
        }
        st.bulk.rx = Some(d);
        Ok(())
    }

    /// `BULK_DATA` from the peer: a range of its extent is ours now; Err on a violation
    /// (no extent offered, out of bounds, empty, overlapping a range we own, too many).
    pub(super) fn on_bulk_data(
        st: &mut EndpointInner,
        payload: &[u8],
    ) -> Result<(), BulkViolation> {
        let d = Desc::decode(payload).ok_or(BulkViolation::Descriptor)?;
        let b = &mut st.bulk;
        let (Some(_), Some(rx)) = (b.tx, b.rx) else {
            return Err(BulkViolation::NoExtent);
        };
        if !d.valid_in(rx.len)
            || b.inq.iter().any(|o| o.overlaps(&d))
            || b.held.iter().any(|o| o.overlaps(&d))
        {
            return Err(BulkViolation::Range);
        }
        if b.inq.len() + b.held.len() >= MAX_DESCS || b.inq.push(d, GFP_KERNEL).is_err() {
            return Err(BulkViolation::TooMany);
        }
        Ok(())
    }

    /// `BULK_RELEASE` from the peer: must hand back our oldest outstanding range.
    pub(super) fn on_bulk_release(
        st: &mut EndpointInner,
        payload: &[u8],
    ) -> Result<(), BulkViolation> {
        let d = Desc::decode(payload).ok_or(BulkViolation::Descriptor)?;
        if st.bulk.out.first() != Some(&d) {
            return Err(BulkViolation::Release);
        }
        st.bulk
            .out
            .remove(0)
            .map(|_| ())
            .map_err(|_| BulkViolation::Release)
    }
}
