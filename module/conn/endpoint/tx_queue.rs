// SPDX-License-Identifier: GPL-2.0

//! The transmit queue of one connection: a FIFO of [`TxItem`]s whose front leaves without
//! shifting the rest (the kernel crate has no `VecDeque`).

use super::TxItem;
use kernel::{alloc::AllocError, prelude::*};

/// Items before `head` are sent; they are kept (emptied) until the next compaction.
///
/// `KVec::remove(0)` would move every queued item for every frame that finishes an item;
/// here the front advances by an index and the vector is compacted once the sent part is at
/// least half of it, so each item is moved at most once on average.
#[derive(Default)]
pub(super) struct TxQueue {
    items: KVec<TxItem>,
    /// INVARIANT: `head <= items.len()`.
    head: usize,
}

/// Sent items kept before a compaction is worth its move.
const COMPACT_MIN: usize = 32;

impl TxQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.head >= self.items.len()
    }

    pub(super) fn clear(&mut self) {
        self.items.clear();
        self.head = 0;
    }

    pub(super) fn push(
        &mut self,
        item: TxItem,
        flags: kernel::alloc::Flags,
    ) -> Result<(), AllocError> {
        self.items.push(item, flags)
    }

    /// The queued (not yet sent) items, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &TxItem> {
        self.items.iter().skip(self.head)
    }

    /// The oldest queued item.
    pub(super) fn first_mut(&mut self) -> Option<&mut TxItem> {
        self.items.get_mut(self.head)
    }

    /// Drops the oldest queued item (it was sent).
    pub(super) fn pop_front(&mut self) {
        let Some(item) = self.items.get_mut(self.head) else {
            return;
        };
        // Free a sent message's buffer now, not at the next compaction.
        if let TxItem::Msg { data, off } = item {
            *data = KVec::new();
            *off = 0;
        }
        // INVARIANT: `head` was the index of an item, so `head + 1 <= items.len()`.
        self.head += 1;
        if self.head == self.items.len() {
            self.clear();
        } else if self.head >= COMPACT_MIN && self.head * 2 >= self.items.len() {
            let keep = self.items.len() - self.head;
            self.items.as_mut_slice().rotate_left(self.head);
            self.items.truncate(keep);
            // INVARIANT: 0 <= items.len().
            self.head = 0;
        }
    }
}
