//! SPSC byte ring per ordered peer pair with notification suppression
//! (docs/protocol.md §4–§5).
//!
//! Indices are free-running `u32` byte counters; the ring size is a power of
//! two. Records are a 32-byte frame header plus the payload padded to 32
//! bytes, so a header never wraps while a payload may (≤ 2 segments).
//!
//! Ownership: the producer writes only the producer cache line
//! (`prod_idx`, `prod_epoch`, `prod_wants_space`) and the ring data; the
//! consumer writes only the consumer line (`cons_idx`, `cons_ack`,
//! `cons_need_wakeup`). Every value read from the other side is read once and
//! validated; violations yield [`RingError::Corrupt`] for this channel.
//!
//! Notifications (docs/protocol.md §5.2): a side about to sleep stores a fresh
//! non-zero *sleep token* into its flag (`cons_need_wakeup`, `prod_wants_space`),
//! fences and re-checks; the other side rings at most once per token it sees
//! (it remembers the last one it rang for) and never while the flag is 0. So a
//! consumer that was rung and has not gone back to sleep gets no further data
//! doorbells however many frames follow, and a waiting producer gets one space
//! doorbell per wait.

use super::frame::{FrameError, FrameHeader, FRAME_HDR_SIZE, MAX_PAYLOAD};
use super::layout::{prev_pow2, Geometry, MAX_PEERS, MAX_RING_SIZE, MIN_RING_SIZE, PAGE};
use super::shm::Shm;

/// Control block field offsets (relative to the channel control block).
pub mod ctrl {
    /// Producer line: published producer index.
    pub const PROD_IDX: usize = 0x00;
    /// Producer line: producer epoch.
    pub const PROD_EPOCH: usize = 0x04;
    /// Producer line: producer waits for space: 0, or the sleep token of its current
    /// wait.
    pub const PROD_WANTS_SPACE: usize = 0x08;
    /// Producer line: region offset of the ring's data, in the producer's transmit area.
    /// Written before `PROD_EPOCH` is released; read once per epoch (docs/protocol.md §4).
    pub const RING_OFF: usize = 0x0C;
    /// Producer line: ring size in bytes (a power of two); 0 = no ring open.
    pub const RING_SIZE: usize = 0x10;
    /// Consumer line: consumer index.
    pub const CONS_IDX: usize = 0x40;
    /// Consumer line: acknowledged producer epoch.
    pub const CONS_ACK: usize = 0x44;
    /// Consumer line: consumer sleeps, wants a doorbell: 0, or the sleep token of
    /// its current sleep.
    pub const CONS_NEED_WAKEUP: usize = 0x48;
}

/// Record alignment (= header size).
pub const FRAME_ALIGN: u32 = 32;
/// Smallest ring accepted by [`Channel::from_parts`] (tests/model checking).
pub const MIN_TEST_RING: u32 = 128;

/// Why a channel is considered corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The other side's index is more than a ring away from ours.
    IndexRange,
    /// An index or position is not 32-byte aligned.
    IndexAlign,
    /// The frame header did not decode.
    Frame(FrameError),
    /// The frame's record does not fit the channel limit or the published bytes.
    FrameTooLong,
}

/// Channel-level errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// Not enough free space now; retry later (see [`Producer::prepare_wait`]).
    Full,
    /// The consumer has not acknowledged our epoch yet.
    NotReady,
    /// The frame is invalid or larger than [`Channel::max_payload`].
    TooBig,
    /// The producer re-opened the channel (new incarnation): reset all
    /// connections with that peer, then call [`Consumer::resync`].
    Restarted {
        /// New producer epoch.
        epoch: u32,
    },
    /// Hostile or corrupt shared state: reset connections with that peer and
    /// resync (consumer) / re-open (producer).
    Corrupt(Corruption),
}

/// Why the ring a producer published (`RING_OFF`, `RING_SIZE`) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRing {
    /// Size not a power of two.
    NotPowerOfTwo,
    /// Size below [`MIN_RING_SIZE`] or above [`MAX_RING_SIZE`].
    Size,
    /// Offset not aligned to `min(size, PAGE)`.
    Misaligned,
    /// Not inside the producer's own transmit area (out of the region, over the tables,
    /// the bulk area or another slot's area).
    OutsideArea,
    /// The producer changed the published ring while we read it.
    Unstable,
}

/// Locally validated location of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    ctrl: usize,
    data: usize,
    size: u32,
}

/// Where channel `from → to` may live, computed locally from the geometry: its control
/// block and the producer's transmit area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    ctrl: usize,
    area_off: usize,
    area_len: usize,
}

impl Site {
    /// The site of channel `from → to`; `None` for a bad pair.
    pub fn new(g: &Geometry, from: u32, to: u32) -> Option<Self> {
        let ctrl = g.chan_ctrl_off(from, to)?;
        let (area_off, area_len) = g.tx_area(from)?;
        Some(Self {
            ctrl,
            area_off,
            area_len,
        })
    }

    /// A site at explicit offsets (tests, model checking): control block `ctrl`, the
    /// producer's area `[area_off, area_off + area_len)`.
    pub fn from_parts(ctrl: usize, area_off: usize, area_len: usize) -> Self {
        Self {
            ctrl,
            area_off,
            area_len,
        }
    }

    /// The channel at region offset `data` with `size` bytes, if that is a ring the
    /// producer may publish: a power of two in `[MIN_RING_SIZE, MAX_RING_SIZE]`, aligned to
    /// `min(size, PAGE)`, wholly inside the producer's transmit area.
    pub fn channel(&self, data: u64, size: u32) -> Result<Channel, BadRing> {
        if !size.is_power_of_two() {
            return Err(BadRing::NotPowerOfTwo);
        }
        let sz = size as usize;
        if !(MIN_RING_SIZE..=MAX_RING_SIZE).contains(&sz) {
            return Err(BadRing::Size);
        }
        let data = usize::try_from(data).map_err(|_| BadRing::OutsideArea)?;
        if data % sz.min(PAGE) != 0 {
            return Err(BadRing::Misaligned);
        }
        let end = data.checked_add(sz).ok_or(BadRing::OutsideArea)?;
        if data < self.area_off || end > self.area_off + self.area_len {
            return Err(BadRing::OutsideArea);
        }
        Ok(Channel {
            ctrl: self.ctrl,
            data,
            size,
        })
    }
}

/// Consumers a producer plans a full share for: three, so that every pair of up to four
/// live peers gets the same ring each way (docs/protocol.md §1, "Ring placement").
pub const FAIR_PEERS: usize = 3;

/// The ring set aside for each consumer beyond the first [`FAIR_PEERS`] when the fair share is
/// `share`: a 64th of it, at least [`MIN_RING_SIZE`].
pub fn floor_ring(share: usize) -> usize {
    (share / 64).max(MIN_RING_SIZE)
}

/// Bytes of a transmit area that give [`FAIR_PEERS`] consumers (or all of them, if the region
/// has fewer other slots) a ring of `share` bytes and every other slot one of
/// [`floor_ring`]`(share)`. `None` on overflow.
pub fn area_for_share(share: usize, max_peers: u32) -> Option<usize> {
    let others = (max_peers as usize).checked_sub(1)?;
    let k = others.min(FAIR_PEERS);
    share
        .checked_mul(k)?
        .checked_add((others - k).checked_mul(floor_ring(share))?)
}

/// The fair share of a transmit area of `area_len` bytes in a region of `max_peers` slots: the
/// largest power of two, at most [`MAX_RING_SIZE`], for which [`area_for_share`] fits the area
/// ([`MIN_RING_SIZE`] if none does; the geometry guarantees a minimum ring for every slot).
pub fn fair_share(area_len: usize, max_peers: u32) -> usize {
    let mut s = MAX_RING_SIZE;
    // Bounded: log2(MAX_RING_SIZE / MIN_RING_SIZE) halvings.
    while s > MIN_RING_SIZE && !matches!(area_for_share(s, max_peers), Some(n) if n <= area_len) {
        s /= 2;
    }
    s
}

/// A producer's allocator of rings in its own transmit area: private state, nothing of it
/// is in shared memory. One ring per consumer slot.
///
/// Policy (docs/protocol.md §1): every consumer gets the fair share of the area
/// ([`fair_share`]: the same ring for the first [`FAIR_PEERS`] consumers, with a
/// [`floor_ring`] kept for each other slot), or the largest power of two below it that fits a
/// free block aligned to its size (relative to the area) and still leaves a floor ring for
/// every slot that has no ring yet; failing that, [`MIN_RING_SIZE`] each. Existing rings are
/// never moved or resized; a freed ring's space serves later consumers.
#[derive(Clone, Debug)]
pub struct RingAlloc {
    me: u32,
    max_peers: u32,
    area_off: usize,
    area_len: usize,
    /// Per consumer slot: (offset in the area, size); size 0 = none.
    rings: [(u32, u32); MAX_PEERS as usize],
}

impl RingAlloc {
    /// The allocator of slot `me`'s area, empty.
    pub fn new(g: &Geometry, me: u32) -> Option<Self> {
        let (area_off, area_len) = g.tx_area(me)?;
        u32::try_from(area_len).ok()?;
        Some(Self {
            me,
            max_peers: g.max_peers,
            area_off,
            area_len,
            rings: [(0, 0); MAX_PEERS as usize],
        })
    }

    fn used(&self) -> usize {
        self.rings.iter().map(|r| r.1 as usize).sum()
    }

    fn fits(&self, off: usize, size: usize) -> bool {
        off + size <= self.area_len
            && self.rings.iter().all(|&(o, s)| {
                let (o, s) = (o as usize, s as usize);
                s == 0 || off + size <= o || o + s <= off
            })
    }

    /// The fair share of this area ([`fair_share`]): the ring each consumer gets while
    /// there is room.
    pub fn share(&self) -> usize {
        fair_share(self.area_len, self.max_peers)
    }

    /// The ring for consumer `to`, allocating it if it has none. `None` for a bad id, or if
    /// the area has no room (never, while the reservation rule holds).
    pub fn alloc(&mut self, g: &Geometry, to: u32) -> Option<Channel> {
        if to >= self.max_peers || to == self.me {
            return None;
        }
        if let Some(c) = self.get(g, to) {
            return Some(c);
        }
        let unopened = (0..self.max_peers)
            .filter(|&p| p != self.me && p != to)
            .filter(|&p| self.rings.get(p as usize).is_some_and(|r| r.1 == 0))
            .count();
        let free = self.area_len.saturating_sub(self.used());
        let share = self.share();
        // First try to leave a floor ring for every slot without a ring, then only the
        // minimum (always possible: every ring is a power of two of at least MIN_RING_SIZE
        // aligned to its size, so free space comes in minimum rings).
        for unit in [floor_ring(share), MIN_RING_SIZE] {
            if let Some(c) = self.alloc_keeping(g, to, share, free, unopened * unit) {
                return Some(c);
            }
        }
        None
    }

    /// [`RingAlloc::alloc`] of at most `max` bytes keeping `reserve` of the `free` bytes.
    fn alloc_keeping(
        &mut self,
        g: &Geometry,
        to: u32,
        max: usize,
        free: usize,
        reserve: usize,
    ) -> Option<Channel> {
        let mut size = prev_pow2(max.min(self.area_len).min(MAX_RING_SIZE)).max(MIN_RING_SIZE);
        // Bounded: at most log2(MAX_RING_SIZE / MIN_RING_SIZE) + 1 sizes, each with at most
        // MAX_PEERS + 1 candidate offsets (the area's start and each ring's end, aligned up).
        while size >= MIN_RING_SIZE {
            if size + reserve <= free {
                let cands = core::iter::once(0usize).chain(
                    self.rings
                        .iter()
                        .filter(|r| r.1 != 0)
                        .map(|&(o, s)| (o as usize + s as usize).next_multiple_of(size)),
                );
                if let Some(off) = cands.filter(|&c| self.fits(c, size)).min() {
                    let slot = self.rings.get_mut(to as usize)?;
                    *slot = (u32::try_from(off).ok()?, u32::try_from(size).ok()?);
                    return self.get(g, to);
                }
            }
            size /= 2;
        }
        None
    }

    /// The ring allocated for `to`, if any.
    pub fn get(&self, g: &Geometry, to: u32) -> Option<Channel> {
        let &(o, s) = self.rings.get(to as usize)?;
        if s == 0 {
            return None;
        }
        let data = self.area_off.checked_add(o as usize)?;
        Site::new(g, self.me, to)?.channel(data as u64, s).ok()
    }

    /// Frees `to`'s ring (the caller has closed the channel first).
    pub fn free(&mut self, to: u32) {
        if let Some(r) = self.rings.get_mut(to as usize) {
            *r = (0, 0);
        }
    }
}

/// Closes channel `ch` as its producer: publishes "no ring" (`RING_SIZE` 0) under a new
/// epoch, so that a consumer still attached stops reading it. Call before freeing the ring.
pub fn close_producer<S: Shm + ?Sized>(shm: &S, ch: &Channel) {
    let epoch = ch.next_epoch(shm);
    shm.store_u32_relaxed(ch.at(ctrl::RING_SIZE), 0);
    shm.store_u32_release(ch.at(ctrl::PROD_EPOCH), epoch);
}

/// A contiguous piece of a payload in the region (absolute offset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Region offset.
    pub off: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Record size for a payload of `len` bytes.
pub fn record_size(len: u32) -> Option<u32> {
    len.checked_add(FRAME_ALIGN - 1)
        .map(|l| l & !(FRAME_ALIGN - 1))
        .and_then(|l| l.checked_add(FRAME_HDR_SIZE as u32))
}

impl Channel {
    /// Channel `from → to` at a fixed placement: slot `from`'s area split evenly between
    /// every other slot (ring `k` for the `k`-th other slot, the largest power of two that
    /// fits). A valid ring any peer may publish; for tests, benches and host tools. The
    /// module places its rings with [`RingAlloc`].
    pub fn static_split(g: &Geometry, from: u32, to: u32) -> Option<Self> {
        let n = g.max_peers.checked_sub(1)? as usize;
        let size = prev_pow2((g.area_size / n.max(1)).min(MAX_RING_SIZE));
        let k = if to < from { to } else { to.checked_sub(1)? } as usize;
        let (off, _) = g.tx_area(from)?;
        let data = off.checked_add(k.checked_mul(size)?)?;
        Site::new(g, from, to)?
            .channel(data as u64, u32::try_from(size).ok()?)
            .ok()
    }

    /// Channel at explicit offsets (tests, model checking). `size` must be a
    /// power of two ≥ [`MIN_TEST_RING`] and ≤ 2^30, `ctrl` 64-aligned, `data`
    /// 32-aligned.
    pub fn from_parts(ctrl: usize, data: usize, size: u32) -> Option<Self> {
        let ok = size.is_power_of_two()
            && (MIN_TEST_RING..=1 << 30).contains(&size)
            && ctrl % 64 == 0
            && data % FRAME_ALIGN as usize == 0
            && data.checked_add(size as usize).is_some();
        ok.then_some(Self { ctrl, data, size })
    }

    /// Ring size in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Region offset of the ring data.
    pub fn data_off(&self) -> usize {
        self.data
    }

    /// Region offset of the control block.
    pub fn ctrl_off(&self) -> usize {
        self.ctrl
    }

    /// Largest payload of one frame on this channel: a record may use at
    /// most half the ring so that two can be in flight.
    pub fn max_payload(&self) -> u32 {
        (self.size / 2 - FRAME_HDR_SIZE as u32).min(MAX_PAYLOAD)
    }

    fn at(&self, field: usize) -> usize {
        self.ctrl + field
    }

    /// The producer epoch after ours (we are its only writer, so relaxed), never 0.
    fn next_epoch<S: Shm + ?Sized>(&self, shm: &S) -> u32 {
        match shm
            .load_u32_relaxed(self.at(ctrl::PROD_EPOCH))
            .wrapping_add(1)
        {
            0 => 1,
            e => e,
        }
    }

    /// Region offset of free-running index `idx`.
    fn pos(&self, idx: u32) -> usize {
        self.data + (idx & (self.size - 1)) as usize
    }

    /// Payload segments of a frame held past the consumer's cursor (receive by
    /// reference): the record at free-running index `idx` with `len` payload bytes,
    /// re-bounded against this channel's own geometry (never re-read from shared
    /// memory): `None` unless `idx` is record-aligned and `len` at most
    /// [`Channel::max_payload`]. Every segment then lies inside the ring's data area.
    pub fn held_segments(&self, idx: u32, len: u32) -> Option<[Segment; 2]> {
        if idx % FRAME_HDR_SIZE as u32 != 0 || len > self.max_payload() {
            return None;
        }
        Some(self.segments(idx, len))
    }

    /// Payload segments of a record starting at `idx` with `len` bytes.
    /// Requires `idx` 32-aligned and `record_size(len) <= size`.
    fn segments(&self, idx: u32, len: u32) -> [Segment; 2] {
        let start = (idx.wrapping_add(FRAME_HDR_SIZE as u32)) & (self.size - 1);
        let first = len.min(self.size - start);
        [
            Segment {
                off: self.data + start as usize,
                len: first as usize,
            },
            Segment {
                off: self.data,
                len: (len - first) as usize,
            },
        ]
    }

    /// One half of the store-buffering (Dekker) pattern that prevents lost
    /// wake-ups: store-release our index (the data/space it covers becomes
    /// visible), full fence (store→load order), then read the other side's
    /// sleep flag. Returns the flag: 0, or the sleeper's token.
    fn publish_and_check<S: Shm + ?Sized>(&self, shm: &S, idx: usize, v: u32, flag: usize) -> u32 {
        shm.store_u32_release(self.at(idx), v);
        self.fence_and_check(shm, flag)
    }

    /// Full fence, then read the other side's sleep flag (see
    /// `publish_and_check`).
    fn fence_and_check<S: Shm + ?Sized>(&self, shm: &S, flag: usize) -> u32 {
        shm.fence_full();
        shm.load_u32_relaxed(self.at(flag))
    }

    /// Validate the distance between our trusted index and the other side's.
    fn check_distance(&self, ahead: u32, behind: u32) -> Result<u32, RingError> {
        let d = ahead.wrapping_sub(behind);
        if d > self.size {
            return Err(RingError::Corrupt(Corruption::IndexRange));
        }
        if d % FRAME_ALIGN != 0 || behind % FRAME_ALIGN != 0 {
            return Err(RingError::Corrupt(Corruption::IndexAlign));
        }
        Ok(d)
    }
}

/// Walk payload segments starting `at` bytes into the payload, for at most
/// `max` bytes, calling `f(region_off, local_start, n)` per piece. Returns
/// bytes walked.
/// Walks payload segments from byte `at` for at most `max` bytes, calling
/// `f(region_off, local_start, n)` per contiguous piece; returns the bytes walked.
pub fn walk_segments<F: FnMut(usize, usize, usize)>(
    segs: &[Segment; 2],
    at: usize,
    max: usize,
    mut f: F,
) -> usize {
    let mut skip = at;
    let mut done = 0usize;
    for s in segs {
        if skip >= s.len {
            skip -= s.len;
            continue;
        }
        let n = (s.len - skip).min(max - done);
        f(s.off + skip, done, n);
        done += n;
        skip = 0;
    }
    done
}

/// Whether a sleep flag read as `token` asks for a doorbell, given the token the
/// caller last rang for (`rung`, updated): only a non-zero token not rung for yet.
/// A flag seen at 0 forgets `rung`, so a token equal to an old one after the other
/// side cleared its flag in between still rings.
/// `suppressed` counts the doorbells a flag-only protocol would have rung (a
/// non-zero flag) that the token saved.
fn ring_for(token: u32, rung: &mut u32, suppressed: &mut u32) -> bool {
    if token == 0 {
        *rung = 0;
        return false;
    }
    if token == *rung {
        *suppressed = suppressed.wrapping_add(1);
        return false;
    }
    *rung = token;
    true
}

/// The next sleep token after `t`: never 0 (0 is "awake").
fn next_token(t: u32) -> u32 {
    match t.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

/// Outcome of a pre-sleep re-check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SleepCheck {
    /// Flag is set and nothing arrived: safe to sleep until a doorbell.
    MaySleep,
    /// Work arrived meanwhile (flag cleared again): do not sleep.
    Pending,
}

/// Space reserved for one frame; pass back to [`Producer::commit`].
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    hdr: FrameHeader,
    pos: u32,
    rec: u32,
    segs: [Segment; 2],
}

impl Reservation {
    /// Payload segments (absolute region offsets) for direct copies, e.g.
    /// `copy_from_user` straight into the mapping.
    pub fn segments(&self) -> [Segment; 2] {
        self.segs
    }
    /// The header that will be written.
    pub fn header(&self) -> &FrameHeader {
        &self.hdr
    }

    /// Walks the payload from byte `at`, for at most `max` bytes, calling
    /// `f(region_off, local_start, n)` per contiguous piece (at most two: a
    /// payload may wrap). Returns the bytes walked. For copies into the ring
    /// from a source the caller owns (user memory), which may stop short.
    pub fn walk<F: FnMut(usize, usize, usize)>(&self, at: usize, max: usize, f: F) -> usize {
        walk_segments(&self.segs, at, max, f)
    }

    /// Shrinks the reservation to a payload of `len` bytes (a copy into it
    /// stopped short, for example at a user page that is not present). Nothing
    /// is visible to the consumer before the commit, so the committed record is
    /// then an ordinary frame of `len` bytes, and the space after it is free
    /// again. A `len` not smaller than the reserved one changes nothing.
    pub fn truncate(&mut self, len: u32) {
        if len >= self.hdr.len {
            return;
        }
        self.hdr.len = len;
        // `len` is smaller than a length that had a record size.
        self.rec = record_size(len).unwrap_or(self.rec);
        let first = (len as usize).min(self.segs[0].len);
        self.segs[0].len = first;
        self.segs[1].len = len as usize - first;
    }

    /// Clears `bits` in the header's flags (for example `EOM` on a frame that a
    /// short copy ended before the end of its message).
    pub fn clear_flags(&mut self, bits: u32) {
        self.hdr.flags &= !bits;
    }
}

/// Producer side of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Producer {
    ch: Channel,
    /// Local authoritative producer index (next record position).
    prod: u32,
    /// Last validated consumer index.
    cons_cache: u32,
    epoch: u32,
    ready: bool,
    /// The consumer's sleep token we last rang for (0: none).
    rung: u32,
    /// Our last wait token (`prod_wants_space`).
    wait_token: u32,
    /// Producer index as last published.
    published: u32,
    /// Doorbells saved by the token since the last [`Self::take_suppressed`].
    suppressed: u32,
}

impl Producer {
    /// Open (or re-open) the channel as producer: keep our index, bump the
    /// epoch, and wait for the consumer's acknowledgement before writing.
    /// Returns the producer and whether to ring the consumer's doorbell.
    pub fn open<S: Shm + ?Sized>(shm: &S, ch: Channel) -> (Self, bool) {
        // Our own index: relaxed is enough (we are its only writer); align
        // down in case the memory was scribbled on.
        let raw = shm.load_u32_relaxed(ch.at(ctrl::PROD_IDX));
        let p0 = raw & !(FRAME_ALIGN - 1);
        let epoch = ch.next_epoch(shm);
        shm.store_u32_relaxed(ch.at(ctrl::PROD_WANTS_SPACE), 0);
        // The ring's place, published by the epoch's release below (read once per epoch by
        // the consumer). `data` is a region offset below MAX_REGION_SIZE.
        shm.store_u32_relaxed(ch.at(ctrl::RING_OFF), ch.data as u32);
        shm.store_u32_relaxed(ch.at(ctrl::RING_SIZE), ch.size);
        if raw != p0 {
            shm.store_u32_relaxed(ch.at(ctrl::PROD_IDX), p0);
        }
        // Release: a consumer that acquires the new epoch also sees P0. Same
        // Dekker pattern as publish(): the consumer must learn of the new
        // epoch even if it is asleep.
        let token = ch.publish_and_check(shm, ctrl::PROD_EPOCH, epoch, ctrl::CONS_NEED_WAKEUP);
        let mut me = Self {
            ch,
            prod: p0,
            cons_cache: p0,
            epoch,
            ready: false,
            rung: 0,
            wait_token: 0,
            published: p0,
            suppressed: 0,
        };
        let notify = ring_for(token, &mut me.rung, &mut me.suppressed);
        (me, notify)
    }

    /// The channel.
    pub fn channel(&self) -> Channel {
        self.ch
    }

    /// Our epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    fn check_ready<S: Shm + ?Sized>(&mut self, shm: &S) -> Result<(), RingError> {
        if self.ready {
            return Ok(());
        }
        // Acquire pairs with the consumer's release of cons_ack in resync(),
        // making its cons_idx store visible.
        if shm.load_u32_acquire(self.ch.at(ctrl::CONS_ACK)) != self.epoch {
            return Err(RingError::NotReady);
        }
        self.ready = true;
        self.refresh_cons(shm)
    }

    fn refresh_cons<S: Shm + ?Sized>(&mut self, shm: &S) -> Result<(), RingError> {
        // Acquire pairs with the consumer's release in release(): its reads
        // of the records it consumed happen before we overwrite them.
        let c = shm.load_u32_acquire(self.ch.at(ctrl::CONS_IDX));
        self.ch.check_distance(self.prod, c)?;
        self.cons_cache = c;
        Ok(())
    }

    fn free(&self) -> u32 {
        self.ch.size - self.prod.wrapping_sub(self.cons_cache)
    }

    /// Whether the consumer has taken every frame published so far. A channel whose
    /// consumer never acknowledged our epoch holds nothing of ours; a corrupt consumer index
    /// counts as drained too (nothing more will be read from it).
    pub fn drained<S: Shm + ?Sized>(&mut self, shm: &S) -> bool {
        if !self.ready || self.refresh_cons(shm).is_err() {
            return true;
        }
        self.prod == self.cons_cache
    }

    /// Ring bytes written (published or not) that the consumer has not released: 0 on a
    /// channel whose consumer never acknowledged our epoch or whose consumer index is
    /// corrupt (nothing more will be read from it). At most the ring's size.
    pub fn backlog<S: Shm + ?Sized>(&mut self, shm: &S) -> u32 {
        if !self.ready || self.refresh_cons(shm).is_err() {
            return 0;
        }
        self.prod.wrapping_sub(self.cons_cache)
    }

    /// Reserve space for a frame with header `hdr` (`hdr.len` = payload size).
    pub fn reserve<S: Shm + ?Sized>(
        &mut self,
        shm: &S,
        hdr: &FrameHeader,
    ) -> Result<Reservation, RingError> {
        if hdr.validate().is_err() || hdr.len > self.ch.max_payload() {
            return Err(RingError::TooBig);
        }
        let rec = record_size(hdr.len).ok_or(RingError::TooBig)?;
        self.check_ready(shm)?;
        if rec > self.free() {
            self.refresh_cons(shm)?;
            if rec > self.free() {
                return Err(RingError::Full);
            }
        }
        Ok(Reservation {
            hdr: *hdr,
            pos: self.prod,
            rec,
            segs: self.ch.segments(self.prod, hdr.len),
        })
    }

    /// Copy `data` into the reserved payload at byte `at`. Returns bytes copied
    /// (clipped to the reservation).
    pub fn write<S: Shm + ?Sized>(
        &self,
        shm: &S,
        r: &Reservation,
        at: usize,
        data: &[u8],
    ) -> usize {
        walk_segments(&r.segs, at, data.len(), |off, i, n| {
            if let Some(b) = data.get(i..i + n) {
                shm.write_bytes(off, b);
            }
        })
    }

    /// Write the header and advance the local index without publishing.
    /// Returns false (and does nothing) for a stale reservation.
    pub fn commit_deferred<S: Shm + ?Sized>(&mut self, shm: &S, r: Reservation) -> bool {
        if r.pos != self.prod || !self.ready {
            return false;
        }
        shm.write_bytes(self.ch.pos(r.pos), &r.hdr.encode());
        self.prod = self.prod.wrapping_add(r.rec);
        true
    }

    /// Publish everything committed so far (one index store and one fence for
    /// any number of [`Self::commit_deferred`] frames). Returns whether the
    /// consumer's doorbell must be rung: it sleeps, with a token we have not rung
    /// for yet.
    pub fn publish<S: Shm + ?Sized>(&mut self, shm: &S) -> bool {
        // Release: header and payload bytes are visible before the index;
        // fence + flag check pairs with Consumer::prepare_sleep().
        let token =
            self.ch
                .publish_and_check(shm, ctrl::PROD_IDX, self.prod, ctrl::CONS_NEED_WAKEUP);
        self.published = self.prod;
        ring_for(token, &mut self.rung, &mut self.suppressed)
    }

    /// Doorbells to the consumer that the sleep token saved (a non-zero flag we had
    /// rung for already) since the last call; resets the count.
    pub fn take_suppressed(&mut self) -> u32 {
        core::mem::take(&mut self.suppressed)
    }

    /// Whether frames were committed (`commit_deferred`) but not yet published.
    pub fn unpublished(&self) -> bool {
        self.published != self.prod
    }

    /// `commit_deferred` + `publish`.
    pub fn commit<S: Shm + ?Sized>(&mut self, shm: &S, r: Reservation) -> bool {
        self.commit_deferred(shm, r) && self.publish(shm)
    }

    /// Reserve, copy `payload` (its length overrides `hdr.len`), commit.
    /// Returns whether to ring the doorbell.
    pub fn send<S: Shm + ?Sized>(
        &mut self,
        shm: &S,
        hdr: &FrameHeader,
        payload: &[u8],
    ) -> Result<bool, RingError> {
        let mut h = *hdr;
        h.len = u32::try_from(payload.len()).map_err(|_| RingError::TooBig)?;
        let r = self.reserve(shm, &h)?;
        self.write(shm, &r, 0, payload);
        Ok(self.commit(shm, r))
    }

    /// Reserve, copy `payload` (its length overrides `hdr.len`) and commit
    /// without publishing: a batch of these is published by one [`Self::publish`].
    pub fn send_deferred<S: Shm + ?Sized>(
        &mut self,
        shm: &S,
        hdr: &FrameHeader,
        payload: &[u8],
    ) -> Result<(), RingError> {
        let mut h = *hdr;
        h.len = u32::try_from(payload.len()).map_err(|_| RingError::TooBig)?;
        let r = self.reserve(shm, &h)?;
        self.write(shm, &r, 0, payload);
        self.commit_deferred(shm, r);
        Ok(())
    }

    /// Before sleeping because `reserve` returned `Full`/`NotReady`: set the
    /// wants-space flag to a fresh token, fence, re-check. `len`: payload size
    /// wanted. Publish frames committed with `commit_deferred` first: the
    /// consumer cannot free space it has not seen.
    pub fn prepare_wait<S: Shm + ?Sized>(
        &mut self,
        shm: &S,
        len: u32,
    ) -> Result<SleepCheck, RingError> {
        self.wait_token = next_token(self.wait_token);
        shm.store_u32_relaxed(self.ch.at(ctrl::PROD_WANTS_SPACE), self.wait_token);
        // Full fence: flag store before the cons_idx/cons_ack loads (Dekker
        // with the consumer's release()/resync()).
        shm.fence_full();
        let rec = record_size(len.min(self.ch.max_payload())).unwrap_or(u32::MAX);
        let ok = match self.check_ready(shm) {
            Ok(()) => {
                self.refresh_cons(shm)?;
                rec <= self.free()
            }
            Err(RingError::NotReady) => false,
            Err(e) => return Err(e),
        };
        if ok {
            self.cancel_wait(shm);
            Ok(SleepCheck::Pending)
        } else {
            Ok(SleepCheck::MaySleep)
        }
    }

    /// Clear the wants-space flag (after wake-up).
    pub fn cancel_wait<S: Shm + ?Sized>(&mut self, shm: &S) {
        shm.store_u32_relaxed(self.ch.at(ctrl::PROD_WANTS_SPACE), 0);
    }
}

/// A validated frame at the head of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxFrame {
    /// Decoded header (copied once from the ring).
    pub hdr: FrameHeader,
    /// Payload location (second segment non-empty when wrapping).
    pub segs: [Segment; 2],
    pos: u32,
    rec: u32,
}

impl RxFrame {
    /// Walks the payload from byte `at`, for at most `max` bytes, calling
    /// `f(region_off, local_start, n)` per contiguous piece (at most two).
    /// Returns the bytes walked. For copies out of the ring straight into a
    /// destination the caller owns (a receive queue), before
    /// [`Consumer::consume_deferred`] gives the space back.
    pub fn walk<F: FnMut(usize, usize, usize)>(&self, at: usize, max: usize, f: F) -> usize {
        walk_segments(&self.segs, at, max.min(self.hdr.len as usize), f)
    }

    /// Free-running ring index of the record (its header): a held frame's pin.
    pub fn pos(&self) -> u32 {
        self.pos
    }

    /// Bytes of the record in the ring (header, payload, padding).
    pub fn rec(&self) -> u32 {
        self.rec
    }
}

/// Consumer side of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consumer {
    ch: Channel,
    cons: u32,
    /// Consumer index as last published (`release`).
    released: u32,
    prod_cache: u32,
    epoch: u32,
    /// Our last sleep token (`cons_need_wakeup`).
    sleep_token: u32,
    /// The producer's wait token we last rang for (0: none).
    rung: u32,
    /// Doorbells saved by the token since the last [`Self::take_suppressed`].
    suppressed: u32,
    /// Where the producer may place the ring: `Some` when the ring is read from its
    /// control line at every resync ([`Consumer::attach`]), `None` for a fixed channel.
    site: Option<Site>,
    /// Whether `ch` is a ring the producer published under `epoch`.
    open: bool,
    /// Why the ring published under `epoch` was refused.
    bad: Option<BadRing>,
    /// Index of the oldest frame consumed but still held by reference (receive by
    /// reference): releases publish no further than this, so the producer never reuses
    /// its bytes while a reader may still copy them.
    pin: Option<u32>,
}

impl Consumer {
    /// Open the channel as consumer (discarding anything in flight). Returns
    /// the consumer and whether to ring the producer's doorbell.
    pub fn open<S: Shm + ?Sized>(shm: &S, ch: Channel) -> (Self, bool) {
        let mut c = Self {
            ch,
            cons: 0,
            released: 0,
            prod_cache: 0,
            epoch: 0,
            sleep_token: 0,
            rung: 0,
            suppressed: 0,
            site: None,
            open: true,
            bad: None,
            pin: None,
        };
        let n = c.resync(shm);
        (c, n)
    }

    /// Open channel `site` as consumer: the ring is the one its producer published
    /// (`RING_OFF`, `RING_SIZE`), read once per producer epoch at [`Consumer::resync`] and
    /// validated against the producer's transmit area. Until the producer publishes a valid
    /// ring, [`Consumer::peek`] finds nothing and reports a new epoch as `Restarted`;
    /// [`Consumer::ring_error`] says why a published ring was refused.
    pub fn attach<S: Shm + ?Sized>(shm: &S, site: Site) -> (Self, bool) {
        let mut c = Self {
            // Not used while `open` is false; inside the producer's area (which holds at
            // least one minimum ring) in any case.
            ch: Channel {
                ctrl: site.ctrl,
                data: site.area_off,
                size: MIN_RING_SIZE as u32,
            },
            cons: 0,
            prod_cache: 0,
            epoch: 0,
            released: 0,
            sleep_token: 0,
            rung: 0,
            suppressed: 0,
            site: Some(site),
            open: false,
            bad: None,
            pin: None,
        };
        let n = c.resync(shm);
        (c, n)
    }

    /// Whether the producer has a valid ring open (acknowledged by us).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Why the ring published under the current epoch was refused (the caller resets
    /// that peer), `None` if it was accepted or none is published.
    pub fn ring_error(&self) -> Option<BadRing> {
        self.bad
    }

    /// The channel.
    pub fn channel(&self) -> Channel {
        self.ch
    }

    /// Acknowledged producer epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Discard everything in flight and acknowledge the producer's current
    /// epoch. Returns whether to ring the producer's doorbell.
    pub fn resync<S: Shm + ?Sized>(&mut self, shm: &S) -> bool {
        // Acquire on the epoch, then on the index: a freshly opened producer
        // does not move prod_idx until acked, so this is its P0.
        let e = shm.load_u32_acquire(self.ch.at(ctrl::PROD_EPOCH));
        if let Some(site) = self.site {
            // The ring published with epoch `e`: read once, after the epoch (acquire pairs
            // with the producer's release in `Producer::open`); acquire loads so that the
            // epoch re-read below cannot move before them. A different epoch then means
            // the producer re-opened while we read: treated as nothing published, and the
            // next peek reports the new epoch.
            let off = shm.load_u32_acquire(site.ctrl + ctrl::RING_OFF);
            let size = shm.load_u32_acquire(site.ctrl + ctrl::RING_SIZE);
            let e2 = shm.load_u32_relaxed(site.ctrl + ctrl::PROD_EPOCH);
            self.epoch = e;
            self.open = false;
            self.bad = None;
            if e2 != e || size == 0 {
                return false;
            }
            match site.channel(u64::from(off), size) {
                Ok(ch) => self.ch = ch,
                Err(b) => {
                    self.bad = Some(b);
                    return false;
                }
            }
            self.open = true;
        }
        let p = shm.load_u32_acquire(self.ch.at(ctrl::PROD_IDX));
        shm.store_u32_relaxed(self.ch.at(ctrl::CONS_NEED_WAKEUP), 0);
        shm.store_u32_relaxed(self.ch.at(ctrl::CONS_IDX), p);
        // Release: the cons_idx store is visible to whoever acquires the ack.
        shm.store_u32_release(self.ch.at(ctrl::CONS_ACK), e);
        self.cons = p;
        self.released = p;
        self.prod_cache = p;
        self.epoch = e;
        self.pin = None;
        // Dekker with Producer::prepare_wait(). An acknowledgement always rings a
        // waiting producer (it may wait for exactly this).
        let token = self.ch.fence_and_check(shm, ctrl::PROD_WANTS_SPACE);
        self.rung = token;
        token != 0
    }

    /// Reload and validate the producer index (and check the epoch).
    fn refresh_prod<S: Shm + ?Sized>(&mut self, shm: &S) -> Result<(), RingError> {
        // Acquire pairs with the producer's release in publish(): the record
        // bytes up to p are visible.
        let p = shm.load_u32_acquire(self.ch.at(ctrl::PROD_IDX));
        // Same cache line; ordered after the acquire above.
        let e = shm.load_u32_relaxed(self.ch.at(ctrl::PROD_EPOCH));
        if e != self.epoch {
            return Err(RingError::Restarted { epoch: e });
        }
        self.ch.check_distance(p, self.cons)?;
        self.prod_cache = p;
        Ok(())
    }

    /// The next frame, validated, or `None` if the ring is empty.
    pub fn peek<S: Shm + ?Sized>(&mut self, shm: &S) -> Result<Option<RxFrame>, RingError> {
        if !self.open {
            // No ring (yet, or a refused one): only a new epoch matters.
            let e = shm.load_u32_acquire(self.ch.at(ctrl::PROD_EPOCH));
            return if e != self.epoch {
                Err(RingError::Restarted { epoch: e })
            } else {
                Ok(None)
            };
        }
        if self.cons == self.prod_cache {
            self.refresh_prod(shm)?;
            if self.cons == self.prod_cache {
                return Ok(None);
            }
        }
        let avail = self.ch.check_distance(self.prod_cache, self.cons)?;
        let mut raw = [0u8; FRAME_HDR_SIZE];
        // cons is 32-aligned and the ring a multiple of 32: the header is
        // contiguous and inside this ring.
        shm.read_bytes(self.ch.pos(self.cons), &mut raw);
        let hdr =
            FrameHeader::decode(&raw).map_err(|e| RingError::Corrupt(Corruption::Frame(e)))?;
        let rec = record_size(hdr.len).unwrap_or(u32::MAX);
        if hdr.len > self.ch.max_payload() || rec > avail {
            return Err(RingError::Corrupt(Corruption::FrameTooLong));
        }
        Ok(Some(RxFrame {
            hdr,
            segs: self.ch.segments(self.cons, hdr.len),
            pos: self.cons,
            rec,
        }))
    }

    /// Copy payload bytes starting at `at` into `dst`. Returns bytes copied.
    /// The producer could scribble concurrently; the header is unaffected.
    pub fn read<S: Shm + ?Sized>(&self, shm: &S, f: &RxFrame, at: usize, dst: &mut [u8]) -> usize {
        let max = dst.len();
        walk_segments(&f.segs, at, max, |off, i, n| {
            if let Some(b) = dst.get_mut(i..i + n) {
                shm.read_bytes(off, b);
            }
        })
    }

    /// Drop the frame locally without publishing (batching). Returns false for
    /// a frame that is not the current head.
    pub fn consume_deferred(&mut self, f: &RxFrame) -> bool {
        if f.pos != self.cons {
            return false;
        }
        self.cons = self.cons.wrapping_add(f.rec);
        true
    }

    /// Publish the consumer index. Returns whether to ring the producer's
    /// doorbell (it waits for space, with a token we have not rung for).
    pub fn release<S: Shm + ?Sized>(&mut self, shm: &S) -> bool {
        self.release_if(shm, 0)
    }

    /// Bytes consumed (`consume_deferred`) that a release would publish now (up to the
    /// pin, [`Self::set_pin`]) but that are not released yet.
    pub fn unreleased(&self) -> u32 {
        self.limit().wrapping_sub(self.released)
    }

    /// The read cursor: the index after the last frame consumed (held frames included).
    pub fn cursor(&self) -> u32 {
        self.cons
    }

    /// Sets the index of the oldest frame still held by reference (`None`: none held).
    /// Releases then publish no further than it. A pin outside the consumed and not yet
    /// released span (`released..=cursor`) is a caller bug; it holds the released index
    /// where it is (never lets the producer reuse bytes that may still be read).
    pub fn set_pin(&mut self, pin: Option<u32>) {
        self.pin = pin;
    }

    /// Where a release may publish the consumer index to: the cursor, or the pin.
    fn limit(&self) -> u32 {
        match self.pin {
            None => self.cons,
            Some(p) if p.wrapping_sub(self.released) <= self.cons.wrapping_sub(self.released) => p,
            Some(_) => self.released,
        }
    }

    /// Publishes the consumer index; asks for the doorbell only if the producer
    /// waits with a token not rung for yet and at least `min_free` bytes are free
    /// as far as this consumer knows (`known_free`). A token is used up only by a
    /// doorbell, so a release below `min_free` leaves it for a later one.
    fn release_if<S: Shm + ?Sized>(&mut self, shm: &S, min_free: u32) -> bool {
        // Release: our payload reads happen before the producer reuses space;
        // fence + flag check pairs with Producer::prepare_wait().
        let to = self.limit();
        let token = self
            .ch
            .publish_and_check(shm, ctrl::CONS_IDX, to, ctrl::PROD_WANTS_SPACE);
        self.released = to;
        if token != 0 && self.known_free() < min_free {
            return false;
        }
        ring_for(token, &mut self.rung, &mut self.suppressed)
    }

    /// Doorbells to the producer that its wait token saved since the last call;
    /// resets the count.
    pub fn take_suppressed(&mut self) -> u32 {
        core::mem::take(&mut self.suppressed)
    }

    /// Ring bytes free as far as this consumer knows: the ring size less the bytes
    /// between its index and the producer index it last validated (a stale producer
    /// index can only make this larger than the truth). The whole ring when it has
    /// consumed everything it saw.
    pub fn known_free(&self) -> u32 {
        self.ch
            .size()
            .saturating_sub(self.prod_cache.wrapping_sub(self.limit()))
    }

    /// [`Self::release`] with a space-doorbell watermark: publishes the consumer index
    /// as always, but asks for the doorbell only once at least a quarter of the ring is
    /// free (`known_free`), and once per wait of the producer (its token), so that a
    /// waiting producer is not rung for every frame. No lost wake-up: a release that
    /// leaves less free than that leaves frames in the ring, and the release that
    /// consumes the last one it saw sees the whole ring free and rings, unless this
    /// very wait was rung already (docs/protocol.md §5.2).
    pub fn release_at_watermark<S: Shm + ?Sized>(&mut self, shm: &S) -> bool {
        self.release_if(shm, self.ch.size() / 4)
    }

    /// Batched release: publishes the consumer index only once a quarter of the ring
    /// was consumed since the last release (then as [`Self::release_at_watermark`]);
    /// below that it does nothing. The caller releases the rest with
    /// [`Self::release_at_watermark`] before it stops reading the ring (in every case
    /// before it sleeps).
    pub fn release_batched<S: Shm + ?Sized>(&mut self, shm: &S) -> bool {
        if self.unreleased() < self.ch.size() / 4 {
            return false;
        }
        self.release_at_watermark(shm)
    }

    /// `consume_deferred` + `release`.
    pub fn consume<S: Shm + ?Sized>(&mut self, shm: &S, f: &RxFrame) -> bool {
        self.consume_deferred(f) && self.release(shm)
    }

    /// Before sleeping on an empty ring: set need-wakeup to a fresh token, fence,
    /// re-check. A producer rings once per token, so every sleep takes a new one.
    pub fn prepare_sleep<S: Shm + ?Sized>(&mut self, shm: &S) -> SleepCheck {
        self.sleep_token = next_token(self.sleep_token);
        shm.store_u32_relaxed(self.ch.at(ctrl::CONS_NEED_WAKEUP), self.sleep_token);
        // Full fence: flag store before the prod_idx load (Dekker with
        // Producer::publish()).
        shm.fence_full();
        let p = shm.load_u32_acquire(self.ch.at(ctrl::PROD_IDX));
        let e = shm.load_u32_relaxed(self.ch.at(ctrl::PROD_EPOCH));
        // Without an open ring only a new epoch is work.
        if (self.open && p != self.cons) || e != self.epoch {
            self.cancel_sleep(shm);
            SleepCheck::Pending
        } else {
            SleepCheck::MaySleep
        }
    }

    /// Clear need-wakeup (after a doorbell). Relaxed: a spurious doorbell is
    /// harmless.
    pub fn cancel_sleep<S: Shm + ?Sized>(&mut self, shm: &S) {
        shm.store_u32_relaxed(self.ch.at(ctrl::CONS_NEED_WAKEUP), 0);
    }
}
