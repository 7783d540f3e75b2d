// SPDX-License-Identifier: GPL-2.0

//! The receive queue of one connection: whole messages (or a byte stream) as they
//! arrived, bounded by the receive credit and by its domain's receive memory
//! (conn/rx_mem.rs).

use super::{ResetReason, Violation, MAX_EMPTY_MSGS};
use crate::{
    conn::{append_bytes, copy_bytes, RxMem},
    uapi,
};
use kernel::{prelude::*, sync::Arc};

/// Allocation flags of the receive queue: a failure resets the connection, so no
/// allocation warning for what a peer makes us hold (the cap bounds it; the kernel crate
/// does not expose `__GFP_NORETRY`).
fn rx_gfp() -> kernel::alloc::Flags {
    GFP_KERNEL | __GFP_NOWARN
}
/// Capacity a drained queue keeps; a larger buffer is freed once it is empty.
const KEEP_DRAINED: usize = 64 << 10;

/// Received messages: payload bytes back to back, plus one length per complete message.
///
/// Bounded: the bytes by the receive credit (an overrun resets the connection before it is
/// queued), the partial message by `VMCS_MAX_MSG_SIZE`, empty messages by `MAX_EMPTY_MSGS`,
/// and the buffers' capacity by the domain's [`RxMem`]: `charged` bytes of it are charged
/// there, given back when the buffers shrink, on `clear` and on drop.
#[derive(Default)]
pub(super) struct RxQueue {
    data: KVVec<u8>,
    dhead: usize,
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

impl RxQueue {
    pub(super) fn msgs(&self) -> usize {
        self.lens.len() - self.lhead
    }

    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Bytes of buffer this queue holds.
    fn held(&self) -> usize {
        self.data.capacity() + self.lens.capacity() * core::mem::size_of::<u32>()
    }

    /// Makes `charged` match what the queue holds now (it only ever holds less than
    /// charged, after a shrink or a failed allocation).
    fn settle(&mut self) {
        let held = self.held();
        if let Some(mem) = &self.mem {
            if held < self.charged {
                mem.uncharge(self.charged - held);
                self.charged = held;
            }
        }
    }

    /// Appends one fragment, charging any growth to `mem` first. `Err` means the peer
    /// broke the message limits (`MessageLimit`), or the domain's receive memory is full
    /// or the allocation failed (`RxMemory`).
    pub(super) fn push(
        &mut self,
        mem: &Arc<RxMem>,
        payload: &[u8],
        eom: bool,
    ) -> Result<(), ResetReason> {
        let partial = self.partial + payload.len();
        if partial > uapi::MAX_MSG_SIZE as usize {
            return Err(Violation::MessageLimit.into());
        }
        if eom && partial == 0 && self.empty >= MAX_EMPTY_MSGS {
            return Err(Violation::MessageLimit.into());
        }
        if self.mem.is_none() {
            self.mem = Some(mem.clone());
        }
        let want = grown(&self.data, payload.len())
            + grown(&self.lens, usize::from(eom)) * core::mem::size_of::<u32>();
        if want > self.charged {
            let ok = self
                .mem
                .as_ref()
                .is_some_and(|m| m.try_charge(want - self.charged));
            if !ok {
                return Err(ResetReason::RxMemory);
            }
            self.charged = want;
        }
        let res = self.append(payload, partial, eom);
        self.settle();
        res.map_err(|_| ResetReason::RxMemory)
    }

    fn append(&mut self, payload: &[u8], partial: usize, eom: bool) -> Result {
        if eom {
            self.lens.reserve(1, rx_gfp())?;
        }
        append_bytes(&mut self.data, payload, rx_gfp())?;
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

    /// Removes the oldest complete message; returns its first `max` bytes and its length.
    pub(super) fn pop(&mut self, max: usize) -> Result<Option<(KVec<u8>, usize)>> {
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
    pub(super) fn peek(&self, max: usize) -> Result<Option<(KVec<u8>, usize)>> {
        let Some(&len) = self.lens.get(self.lhead) else {
            return Ok(None);
        };
        let len = len as usize;
        let n = len.min(max);
        let out = copy_bytes(self.data.get(self.dhead..self.dhead + n).ok_or(EINVAL)?)?;
        Ok(Some((out, len)))
    }

    /// Bytes of complete messages not yet read.
    pub(super) fn unread(&self) -> usize {
        self.data.len() - self.dhead - self.partial
    }

    /// Byte-stream read: up to `max` bytes across message boundaries; a message read in
    /// part keeps its rest at the front. With `peek` nothing is consumed.
    pub(super) fn take_bytes(&mut self, max: usize, peek: bool) -> Result<KVec<u8>> {
        let n = self.unread().min(max);
        let out = copy_bytes(self.data.get(self.dhead..self.dhead + n).ok_or(EINVAL)?)?;
        if !peek {
            self.skip_bytes(n);
        }
        Ok(out)
    }

    /// Drops up to `n` unread bytes of the byte stream (read in place before); returns how
    /// many.
    pub(super) fn skip_bytes(&mut self, n: usize) -> usize {
        let n = self.unread().min(n);
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
        n
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
