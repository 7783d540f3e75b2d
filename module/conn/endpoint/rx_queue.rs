// SPDX-License-Identifier: GPL-2.0

//! The receive queue of one connection: whole messages (or a byte stream) as they
//! arrived, bounded by the receive credit and by its domain's receive memory
//! (conn/rx_mem.rs).

use super::{ResetReason, Violation, MAX_EMPTY_MSGS};
use crate::{
    conn::{append_payload, RxMem},
    glue::UserIter,
    transport::{
        held::{HeldRef, Revoked},
        RxPayload,
    },
    uapi,
};
use core::mem::MaybeUninit;
use kernel::{prelude::*, sync::Arc};

/// Allocation flags of the receive queue: a failure resets the connection, so no
/// allocation warning for what a peer makes us hold (the cap bounds it; the kernel crate
/// does not expose `__GFP_NORETRY`).
fn rx_gfp() -> kernel::alloc::Flags {
    GFP_KERNEL | __GFP_NOWARN
}
/// Capacity a drained queue keeps; a larger buffer is freed once it is empty.
const KEEP_DRAINED: usize = 64 << 10;

/// A run of queued payload bytes, in arrival order.
enum Chunk {
    /// This many bytes of `data`, after those of the chunks before it.
    Buf(usize),
    /// A frame held in its ring (receive by reference), of which the first `.1` bytes were
    /// consumed.
    Ref(HeldRef, usize),
}

impl Chunk {
    fn left(&self) -> usize {
        match self {
            Chunk::Buf(n) => *n,
            Chunk::Ref(r, off) => r.len() - off,
        }
    }
}

/// What a copy to the reader did.
pub(super) enum Copy {
    /// Copied this many bytes (fewer than asked: a user page was not present).
    Bytes(usize),
    /// A held frame's payload is gone (its ring was reset): the connection is reset.
    Revoked,
}

/// Received messages: payload bytes in arrival order (copied into `data`, or held in the
/// ring by reference: `chunks`), plus one length per complete message.
///
/// Bounded: the bytes by the receive credit (an overrun resets the connection before it is
/// queued), the partial message by `VMCS_MAX_MSG_SIZE`, empty messages by `MAX_EMPTY_MSGS`,
/// and the buffers' capacity by the domain's [`RxMem`]: `charged` bytes of it are charged
/// there, given back when the buffers shrink, on `clear` and on drop. Held frames cost no
/// receive memory (their bytes are in the ring); their chunk entries do.
#[derive(Default)]
pub(super) struct RxQueue {
    data: KVVec<u8>,
    dhead: usize,
    /// INVARIANT: the `Buf` lengths of `chunks[chead..]` add up to `data.len() - dhead`,
    /// and all chunks' bytes to `bytes`; no chunk is empty.
    chunks: KVVec<Option<Chunk>>,
    chead: usize,
    /// Payload bytes queued (complete messages and the partial one).
    bytes: usize,
    /// Chunks in `chunks[chead..]` that are held frames.
    refs: usize,
    lens: KVVec<u32>,
    lhead: usize,
    /// Bytes of the message being assembled (after the last complete one).
    pub(super) partial: usize,
    empty: usize,
    /// The account `charged` is charged to (the domain of the first frame queued).
    mem: Option<Arc<RxMem>>,
    charged: usize,
}

impl Drop for RxQueue {
    fn drop(&mut self) {
        if let Some(mem) = &self.mem {
            mem.uncharge(self.charged);
        }
    }
}

/// Capacity of `v` after making room for `extra` more elements (`Vec::reserve`'s growth).
fn grown<T, A: kernel::alloc::Allocator>(v: &kernel::alloc::Vec<T, A>, extra: usize) -> usize {
    let need = v.len().saturating_add(extra);
    if need <= v.capacity() {
        v.capacity()
    } else {
        need.max(v.capacity().saturating_mul(2))
    }
}

const CHUNK_SIZE: usize = core::mem::size_of::<Option<Chunk>>();

impl RxQueue {
    pub(super) fn msgs(&self) -> usize {
        self.lens.len() - self.lhead
    }

    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Bytes of buffer this queue holds.
    fn held_mem(&self) -> usize {
        self.data.capacity()
            + self.lens.capacity() * core::mem::size_of::<u32>()
            + self.chunks.capacity() * CHUNK_SIZE
    }

    /// Makes `charged` match what the queue holds now (it only ever holds less than
    /// charged, after a shrink or a failed allocation).
    fn settle(&mut self) {
        let held = self.held_mem();
        if let Some(mem) = &self.mem {
            if held < self.charged {
                mem.uncharge(self.charged - held);
                self.charged = held;
            }
        }
    }

    /// Charges growth to `want` bytes held in all; false if the cap refuses it.
    fn charge_to(&mut self, want: usize) -> bool {
        if want > self.charged {
            let ok = self
                .mem
                .as_ref()
                .is_some_and(|m| m.try_charge(want - self.charged));
            if !ok {
                return false;
            }
            self.charged = want;
        }
        true
    }

    /// Appends one fragment, charging any growth to `mem` first: kept in the ring by
    /// reference when the transport offers it (`RxPayload::hold`), else copied. `Err` means
    /// the peer broke the message limits (`MessageLimit`), or the domain's receive memory
    /// is full or the allocation failed (`RxMemory`).
    pub(super) fn push(
        &mut self,
        mem: &Arc<RxMem>,
        payload: &dyn RxPayload,
        eom: bool,
    ) -> Result<(), ResetReason> {
        let len = payload.len();
        let partial = self.partial + len;
        if partial > uapi::MAX_MSG_SIZE as usize {
            return Err(Violation::MessageLimit.into());
        }
        if eom && partial == 0 && self.empty >= MAX_EMPTY_MSGS {
            return Err(Violation::MessageLimit.into());
        }
        if self.mem.is_none() {
            self.mem = Some(mem.clone());
        }
        let lens_want = grown(&self.lens, usize::from(eom)) * core::mem::size_of::<u32>();
        let chunks_want = grown(&self.chunks, 1) * CHUNK_SIZE;
        // Held only with room for its chunk entry already charged; else copied.
        let held = if len > 0 && self.charge_to(self.data.capacity() + lens_want + chunks_want) {
            payload.hold()
        } else {
            None
        };
        let res = match held {
            Some(r) => self.append_ref(r, partial, eom),
            None => {
                let want = grown(&self.data, len) + lens_want + chunks_want;
                if !self.charge_to(want) {
                    self.settle();
                    return Err(ResetReason::RxMemory);
                }
                self.append(payload, partial, eom)
            }
        };
        self.settle();
        res.map_err(|_| ResetReason::RxMemory)
    }

    fn append_ref(&mut self, r: HeldRef, partial: usize, eom: bool) -> Result {
        if eom {
            self.lens.reserve(1, rx_gfp())?;
        }
        let n = r.len();
        self.chunks.push(Some(Chunk::Ref(r, 0)), rx_gfp())?;
        self.refs += 1;
        self.bytes += n;
        self.finish(partial, eom)
    }

    fn append(&mut self, payload: &dyn RxPayload, partial: usize, eom: bool) -> Result {
        if eom {
            self.lens.reserve(1, rx_gfp())?;
        }
        let n = payload.len();
        if n > 0 {
            let merge = matches!(self.chunks.last(), Some(Some(Chunk::Buf(_))));
            if !merge {
                self.chunks.reserve(1, rx_gfp())?;
            }
            append_payload(&mut self.data, payload, rx_gfp())?;
            match self.chunks.last_mut() {
                Some(Some(Chunk::Buf(b))) if merge => *b += n,
                _ => self.chunks.push(Some(Chunk::Buf(n)), rx_gfp())?,
            }
            self.bytes += n;
        }
        self.finish(partial, eom)
    }

    fn finish(&mut self, partial: usize, eom: bool) -> Result {
        self.partial = partial;
        if eom {
            // `partial` is at most `MAX_MSG_SIZE`, so it fits in u32.
            self.lens.push(partial as u32, rx_gfp())?;
            if partial == 0 {
                self.empty += 1;
            }
            self.partial = 0;
        }
        Ok(())
    }

    /// Copies the first `n` queued bytes to `dst` with page faults disabled, from `data`
    /// and straight from the ring for held frames (the one copy of the receive side).
    fn copy_front(&self, dst: &mut UserIter<'_>, n: usize) -> Copy {
        let mut done = 0;
        let mut doff = self.dhead;
        for c in self.chunks.iter().skip(self.chead).flatten() {
            if done == n {
                break;
            }
            let want = c.left().min(n - done);
            let got = match c {
                Chunk::Buf(b) => {
                    let got = self
                        .data
                        .get(doff..doff + want)
                        .map_or(0, |src| dst.write_nofault(src));
                    doff += b;
                    got
                }
                Chunk::Ref(r, off) => match r.copy_to_user(*off, want, dst) {
                    Ok(g) => g,
                    Err(Revoked) => return Copy::Revoked,
                },
            };
            done += got;
            if got < want {
                break;
            }
        }
        Copy::Bytes(done)
    }

    /// Takes the first `n` queued bytes off the chunks (they were copied to the reader):
    /// held frames read to their end are given back to their ring.
    fn consume_front(&mut self, n: usize) {
        let mut left = n.min(self.bytes);
        self.bytes -= left;
        while left > 0 {
            let Some(slot) = self.chunks.get_mut(self.chead) else {
                break;
            };
            let Some(c) = slot.as_mut() else {
                self.chead += 1;
                continue;
            };
            let take = c.left().min(left);
            left -= take;
            let empty = match c {
                Chunk::Buf(b) => {
                    *b -= take;
                    self.dhead += take;
                    *b == 0
                }
                Chunk::Ref(r, off) => {
                    *off += take;
                    *off == r.len()
                }
            };
            if empty {
                if matches!(slot, Some(Chunk::Ref(..))) {
                    self.refs = self.refs.saturating_sub(1);
                }
                // Drops a held frame's reference: its ring space goes back.
                *slot = None;
                self.chead += 1;
            }
        }
    }

    /// Copies the first `max` bytes of the oldest complete message to `dst` with page faults
    /// disabled, leaving it queued (`drop_msg` removes it once the copy is whole). Returns
    /// `(copied, wanted, len)`: `copied < wanted` when a user page was not present; `len`
    /// is the message's length.
    pub(super) fn copy_msg_to(
        &self,
        dst: &mut UserIter<'_>,
        max: usize,
    ) -> Option<(Copy, usize, usize)> {
        let len = *self.lens.get(self.lhead)? as usize;
        let n = len.min(max);
        Some((self.copy_front(dst, n), n, len))
    }

    /// Removes the oldest complete message (after it was copied to its reader).
    pub(super) fn drop_msg(&mut self) {
        let Some(&len) = self.lens.get(self.lhead) else {
            return;
        };
        self.consume_front(len as usize);
        self.lhead += 1;
        if len == 0 {
            self.empty = self.empty.saturating_sub(1);
        }
        self.compact();
    }

    /// Bytes of complete messages not yet read.
    pub(super) fn unread(&self) -> usize {
        self.bytes - self.partial
    }

    /// Byte-stream read: copies up to `max` unread bytes, across message boundaries, to
    /// `dst` with page faults disabled, leaving them queued (`consume_bytes` takes them).
    /// Returns `(copied, wanted)`: `copied < wanted` when a user page was not present.
    pub(super) fn copy_stream_to(&self, dst: &mut UserIter<'_>, max: usize) -> (Copy, usize) {
        let n = self.unread().min(max);
        (self.copy_front(dst, n), n)
    }

    /// Takes the first `n` unread bytes of the byte stream (they were copied to their
    /// reader); a message read in part keeps its rest at the front.
    pub(super) fn consume_bytes(&mut self, n: usize) {
        let n = n.min(self.unread());
        let mut left = n;
        while let Some(len) = self.lens.get_mut(self.lhead) {
            let take = (*len as usize).min(left);
            // `take` is at most `*len`, a u32.
            *len -= take as u32;
            left -= take;
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
        self.consume_front(n);
        self.compact();
    }

    /// Copies every held frame of this queue out of its ring into `data` and drops the
    /// references (a slow reader, or a connection whose data outlives its peer): the queued
    /// bytes are rebuilt in order in one new buffer, charged first. `Err` when the receive
    /// memory cap or the allocator refuses it, or a held frame is gone (the caller resets).
    pub(super) fn copy_out(&mut self) -> Result<usize, ResetReason> {
        if self.refs == 0 {
            return Ok(0);
        }
        let total = self.bytes;
        let want = total + self.lens.capacity() * core::mem::size_of::<u32>() + CHUNK_SIZE;
        // Old and new buffers are both held until the swap.
        if !self.charge_to(self.held_mem() + want) {
            return Err(ResetReason::RxMemory);
        }
        let mut data = KVVec::<u8>::new();
        let mut chunks = KVVec::<Option<Chunk>>::new();
        let built = data.reserve(total, rx_gfp()).is_ok() && chunks.reserve(1, rx_gfp()).is_ok();
        if !built {
            self.settle();
            return Err(ResetReason::RxMemory);
        }
        let mut doff = self.dhead;
        let mut copied_out = 0;
        for c in self.chunks.iter().skip(self.chead).flatten() {
            let n = c.left();
            let Some(dst) = data.spare_capacity_mut().get_mut(..n) else {
                self.settle();
                return Err(ResetReason::RxMemory);
            };
            let ok = match c {
                Chunk::Buf(b) => {
                    let src = self.data.get(doff..doff + n).unwrap_or(&[]);
                    doff += b;
                    copy_uninit(src, dst)
                }
                Chunk::Ref(r, off) => {
                    copied_out += 1;
                    r.copy_to(*off, dst) == Ok(n)
                }
            };
            if !ok {
                self.settle();
                return Err(ResetReason::Local);
            }
            // SAFETY: the `n` spare elements after the length were initialised just now.
            unsafe { data.inc_len(n) };
        }
        if total > 0 {
            let _ = chunks.push(Some(Chunk::Buf(total)), rx_gfp());
        }
        // The old chunks drop here: every held frame goes back to its ring.
        self.data = data;
        self.dhead = 0;
        self.chunks = chunks;
        self.chead = 0;
        self.refs = 0;
        self.settle();
        Ok(copied_out)
    }

    /// Moves the unread bytes and lengths to the front once the read part dominates.
    pub(super) fn compact(&mut self) {
        if self.dhead == self.data.len() {
            if self.data.capacity() > KEEP_DRAINED {
                self.data = KVVec::new();
            } else {
                self.data.clear();
            }
            self.dhead = 0;
        } else if self.dhead >= 4096 && self.dhead * 2 >= self.data.len() {
            self.data.copy_within(self.dhead.., 0);
            let keep = self.data.len() - self.dhead;
            self.data.truncate(keep);
            self.dhead = 0;
        }
        if self.chead == self.chunks.len() {
            self.chunks.clear();
            self.chead = 0;
        } else if self.chead >= 64 && self.chead * 2 >= self.chunks.len() {
            // Move the live chunks to the front (in place; the consumed slots are `None`).
            let live = self.chunks.len() - self.chead;
            for k in 0..live {
                let taken = self.chunks.get_mut(self.chead + k).and_then(Option::take);
                if let Some(slot) = self.chunks.get_mut(k) {
                    *slot = taken;
                }
            }
            self.chunks.truncate(live);
            self.chead = 0;
        }
        if self.lhead == self.lens.len() {
            if self.lens.capacity() * core::mem::size_of::<u32>() > KEEP_DRAINED {
                self.lens = KVVec::new();
            } else {
                self.lens.clear();
            }
            self.lhead = 0;
        } else if self.lhead >= 1024 && self.lhead * 2 >= self.lens.len() {
            self.lens.copy_within(self.lhead.., 0);
            let keep = self.lens.len() - self.lhead;
            self.lens.truncate(keep);
            self.lhead = 0;
        }
        self.settle();
    }
}

/// Copies `src` into `dst` (both of the same length); false if they differ.
fn copy_uninit(src: &[u8], dst: &mut [MaybeUninit<u8>]) -> bool {
    if src.len() != dst.len() {
        return false;
    }
    // SAFETY: both are `src.len()` bytes long and do not overlap (a shared and an
    // exclusive borrow); `MaybeUninit<u8>` has the layout of `u8`.
    unsafe {
        core::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len())
    };
    true
}
