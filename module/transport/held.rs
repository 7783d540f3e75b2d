// SPDX-License-Identifier: GPL-2.0

//! Receive by reference: frames a receive queue keeps in the ring instead of copying them
//! (docs/architecture.md "Receive by reference").
//!
//! A [`HeldRing`] belongs to one inbound ring. The receive pass admits a frame (at most
//! [`HELD_MAX`] frames held per ring) and
//! hands the core a [`HeldRef`]; the consumer's released index then stops at the oldest
//! frame still held (`Consumer::set_pin`), so the producer never reuses bytes a reader may
//! still copy. A reader copies the payload straight from the ring to user memory
//! ([`HeldRef::copy_to_user`]) and drops the reference, which marks the frame done; the
//! next release moves the pin over the done prefix.
//!
//! Everything about a held frame (its index, length and the ring's geometry) is local
//! state, recorded when the header was read and validated once; nothing is read from
//! shared memory again except the payload bytes themselves, and every copy is re-bounded
//! against the ring geometry held here. A peer that rewrites a held payload changes only
//! what its own reader receives.
//!
//! Lock order: the transport's `rx` mutex → an endpoint's mutex → [`HeldRing`]'s spinlock
//! (a leaf: nothing is taken under it but the region's RCU guard).

use crate::{
    glue::{SharedRegion, UserIter},
    proto::ring::{walk_segments, Channel, Segment},
};
use core::mem::MaybeUninit;
use kernel::{
    new_spinlock,
    prelude::*,
    revocable::Revocable,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, SpinLock,
    },
};

/// Frames one ring holds at most.
pub(crate) const HELD_MAX: usize = 64;

/// One held frame.
#[derive(Clone, Copy)]
struct Entry {
    /// Free-running ring index of its record.
    pos: u32,
    /// Payload length.
    len: u32,
    /// Its reader dropped the reference (consumed, reset, copied out).
    done: bool,
    /// When it was admitted (the link's `now_ms`).
    at_ms: u64,
    /// The connection it belongs to: (our port, the peer's port).
    ports: (u32, u32),
}

const EMPTY: Entry = Entry {
    pos: 0,
    len: 0,
    done: true,
    at_ms: 0,
    ports: (0, 0),
};

struct Inner {
    /// The ring's geometry as validated at the consumer's last resync; `None`: nothing is
    /// admitted (no ring open).
    ch: Option<Channel>,
    /// Bumped by [`HeldRing::reset`]: references of an older generation are dead.
    gen: u64,
    /// Sequence number of `ents[head]`.
    head_seq: u64,
    head: usize,
    len: usize,
    ents: [Entry; HELD_MAX],
}

impl Inner {
    fn get(&self, seq: u64) -> Option<&Entry> {
        let k = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        if k >= self.len {
            return None;
        }
        self.ents.get((self.head + k) % HELD_MAX)
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let k = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        if k >= self.len {
            return None;
        }
        self.ents.get_mut((self.head + k) % HELD_MAX)
    }

    /// Drops the done prefix; the oldest frame still held, if any.
    fn settle(&mut self) -> Option<Entry> {
        while self.len > 0 {
            let e = *self.ents.get(self.head)?;
            if !e.done {
                return Some(e);
            }
            self.head = (self.head + 1) % HELD_MAX;
            self.len -= 1;
            self.head_seq = self.head_seq.wrapping_add(1);
        }
        None
    }
}

/// The oldest frame a ring still holds ([`HeldRing::oldest`]).
#[derive(Clone, Copy)]
pub(crate) struct Oldest {
    pub(crate) seq: u64,
    pub(crate) pos: u32,
    pub(crate) at_ms: u64,
    /// (our port, the peer's port) of its connection.
    pub(crate) ports: (u32, u32),
}

/// The held frames of one inbound ring.
#[pin_data]
pub(crate) struct HeldRing {
    region: Arc<Revocable<SharedRegion>>,
    #[pin]
    inner: SpinLock<Inner>,
    /// Frames admitted, payload bytes admitted, frames copied out for a slow reader, frames
    /// dropped without their reader (nobody to copy them out to), for debugfs.
    pub(crate) held_frames: Atomic<u64>,
    pub(crate) held_bytes: Atomic<u64>,
    pub(crate) copied_out: Atomic<u64>,
    pub(crate) forced: Atomic<u64>,
    /// 1 when a reader dropped the oldest held frame: a release would move the pin.
    release_due: Atomic<u32>,
}

impl HeldRing {
    /// An empty set of held frames over `region` (nothing is admitted until
    /// [`HeldRing::reset`] names a ring).
    pub(crate) fn new(region: Arc<Revocable<SharedRegion>>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                region,
                inner <- new_spinlock!(
                    Inner {
                        ch: None,
                        gen: 0,
                        head_seq: 0,
                        head: 0,
                        len: 0,
                        ents: [EMPTY; HELD_MAX],
                    },
                    "vmcs_held"
                ),
                held_frames: Atomic::new(0),
                held_bytes: Atomic::new(0),
                copied_out: Atomic::new(0),
                forced: Atomic::new(0),
                release_due: Atomic::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// Forgets every held frame (the consumer resynchronised, the peer was reset) and
    /// holds frames of `ch` from now on (`None`: of no ring). Every reference still out is
    /// dead: its copies return [`Revoked`].
    pub(crate) fn reset(&self, ch: Option<Channel>) {
        let mut g = self.inner.lock();
        g.gen = g.gen.wrapping_add(1);
        g.head = 0;
        g.len = 0;
        g.head_seq = 0;
        g.ch = ch;
    }

    /// Admits the frame at ring index `pos` (record of `rec` bytes, `len` payload bytes) of
    /// connection `ports`, consumed by a cursor at `pos + rec`: `None` when the ring holds
    /// [`HELD_MAX`] frames already (or the span from the oldest held record to the cursor
    /// would pass the ring, which a valid cursor never does); then the caller copies it.
    /// The span is bounded by the copy-outs instead (`Link::copy_out_slow`): a reader
    /// whose oldest frame pins more than half the ring for long is copied out.
    pub(crate) fn admit(
        self: &Arc<Self>,
        pos: u32,
        rec: u32,
        len: u32,
        now_ms: u64,
        ports: (u32, u32),
    ) -> Option<HeldRef> {
        let mut g = self.inner.lock();
        let ch = g.ch?;
        let oldest = g.settle().map_or(pos, |e| e.pos);
        let span = pos.wrapping_add(rec).wrapping_sub(oldest);
        if g.len >= HELD_MAX || span > ch.size() || ch.held_segments(pos, len).is_none() {
            return None;
        }
        let slot = (g.head + g.len) % HELD_MAX;
        let e = g.ents.get_mut(slot)?;
        *e = Entry {
            pos,
            len,
            done: false,
            at_ms: now_ms,
            ports,
        };
        let seq = g.head_seq.wrapping_add(g.len as u64);
        g.len += 1;
        let gen = g.gen;
        drop(g);
        self.held_frames.fetch_add(1, Relaxed);
        self.held_bytes.fetch_add(u64::from(len), Relaxed);
        Some(HeldRef {
            ring: self.clone(),
            gen,
            seq,
            len,
        })
    }

    /// Whether a reader dropped the oldest held frame since the last call (a release would
    /// move the pin); clears it.
    pub(crate) fn take_release_due(&self) -> bool {
        self.release_due.xchg(0, Relaxed) != 0
    }

    /// The index of the oldest frame still held (the consumer's pin), `None` if none is.
    pub(crate) fn pin(&self) -> Option<u32> {
        self.inner.lock().settle().map(|e| e.pos)
    }

    /// The oldest frame still held, if any.
    pub(crate) fn oldest(&self) -> Option<Oldest> {
        let mut g = self.inner.lock();
        let e = g.settle()?;
        Some(Oldest {
            seq: g.head_seq,
            pos: e.pos,
            at_ms: e.at_ms,
            ports: e.ports,
        })
    }

    /// Drops held frame `seq` although its reader did not (it was to be copied out and
    /// nobody holds it any more); its reference, if one is still out, is dead.
    pub(crate) fn force(&self, seq: u64) {
        let mut g = self.inner.lock();
        if let Some(e) = g.get_mut(seq) {
            if !e.done {
                e.done = true;
                drop(g);
                self.forced.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A held frame's payload was dropped (its ring was reset or it was forced out): nothing
/// can be copied from it any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Revoked;

/// A reference to the payload of a frame held in its ring (a receive queue's entry).
/// Dropping it gives the frame back to the ring.
pub(crate) struct HeldRef {
    ring: Arc<HeldRing>,
    gen: u64,
    seq: u64,
    len: u32,
}

impl HeldRef {
    /// Payload length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Calls `f(region_offset, local_start, n)` for payload bytes `at..at + n` of the held
    /// frame, with the region mapped, under the ring's spinlock (so the frame cannot be
    /// released meanwhile); `f` returns the bytes it copied. Returns the bytes copied.
    fn with_bytes(
        &self,
        at: usize,
        n: usize,
        mut f: impl FnMut(&SharedRegion, usize, usize, usize) -> usize,
    ) -> core::result::Result<usize, Revoked> {
        let g = self.ring.inner.lock();
        if g.gen != self.gen {
            return Err(Revoked);
        }
        let (Some(e), Some(ch)) = (g.get(self.seq), g.ch) else {
            return Err(Revoked);
        };
        if e.done {
            return Err(Revoked);
        }
        // Re-bounded against the geometry held here: the segments lie in the ring's data
        // area, and `at..at + n` inside the payload.
        let segs: [Segment; 2] = ch.held_segments(e.pos, e.len).ok_or(Revoked)?;
        let end = at.checked_add(n).ok_or(Revoked)?;
        if end > e.len as usize {
            return Err(Revoked);
        }
        // The RCU guard only for the copy (never across a sleep: the copy cannot fault).
        let Some(shm) = self.ring.region.try_access() else {
            return Err(Revoked);
        };
        let mut done = 0;
        let mut short = false;
        walk_segments(&segs, at, n, |off, local, k| {
            if short {
                return;
            }
            let c = f(&shm, off, local, k);
            done += c;
            if c != k {
                short = true;
            }
        });
        Ok(done)
    }

    /// Copies payload bytes `at..at + n` straight from the ring to `dst` with page faults
    /// disabled (it never sleeps). Returns the bytes copied: fewer when a user page is not
    /// present (the caller faults it in with no lock held and copies again).
    pub(crate) fn copy_to_user(
        &self,
        at: usize,
        n: usize,
        dst: &mut UserIter<'_>,
    ) -> core::result::Result<usize, Revoked> {
        self.with_bytes(at, n, |shm, off, _, k| {
            shm.copy_to_user_nofault(off, k, dst)
        })
    }

    /// Copies payload bytes `at..at + dst.len()` into kernel memory (a copy-out).
    pub(crate) fn copy_to(
        &self,
        at: usize,
        dst: &mut [MaybeUninit<u8>],
    ) -> core::result::Result<usize, Revoked> {
        let n = dst.len();
        let got = self.with_bytes(at, n, |shm, off, local, k| {
            dst.get_mut(local..local + k)
                .map_or(0, |d| shm.read_uninit(off, d))
        })?;
        if got == n {
            Ok(got)
        } else {
            Err(Revoked)
        }
    }
}

impl Drop for HeldRef {
    fn drop(&mut self) {
        let mut g = self.ring.inner.lock();
        if g.gen == self.gen {
            let head = g.head_seq == self.seq;
            if let Some(e) = g.get_mut(self.seq) {
                e.done = true;
                if head {
                    self.ring.release_due.store(1, Relaxed);
                }
            }
        }
    }
}
