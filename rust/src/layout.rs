//! Region layout, header, geometry, initialisation and validation
//! (docs/protocol.md §1–§2).

use super::shm::Shm;

/// Assumed cache-line size.
pub const CACHE_LINE: usize = 64;
/// `b"VMCS-SHM"` as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"VMCS-SHM");
/// Protocol version; any other value is refused (docs/protocol.md §2, "Versions").
/// Version 2: rings live in per-slot transmit areas and are placed by their producer
/// (§1, §4); version 1 had one fixed ring per ordered slot pair.
pub const PROTOCOL_VERSION: u32 = 2;
/// Size of the header page.
pub const HEADER_SIZE: usize = 4096;
/// Size of one peer-table slot.
pub const PEER_SLOT_SIZE: usize = 64;
/// Size of one channel control block (producer line + consumer line).
pub const CHAN_CTRL_SIZE: usize = 128;
/// Page size used for rounding table sizes.
pub const PAGE: usize = 4096;
/// Maximum number of peers.
pub const MAX_PEERS: u32 = 64;
/// Minimum number of peers.
pub const MIN_PEERS: u32 = 2;
/// Smallest ring: every slot's transmit area holds one for each other slot.
pub const MIN_RING_SIZE: usize = 512;
/// Largest ring.
pub const MAX_RING_SIZE: usize = 16 << 20;
/// Regions larger than this are clamped (the rest of the BAR is unused).
pub const MAX_REGION_SIZE: usize = 1 << 30;
/// Smallest usable region.
pub const MIN_REGION_SIZE: usize = 64 << 10;

/// Header field offsets.
pub mod hdr {
    /// u64 magic.
    pub const MAGIC: usize = 0x00;
    /// u32 version.
    pub const VERSION: usize = 0x08;
    /// u32 header size.
    pub const HEADER_SIZE: usize = 0x0C;
    /// u64 region size.
    pub const REGION_SIZE: usize = 0x10;
    /// u32 max peers.
    pub const MAX_PEERS: usize = 0x18;
    /// u32 size of one slot's transmit area (version 1: the ring size).
    pub const AREA_SIZE: usize = 0x1C;
    /// u64 peer table offset.
    pub const PEER_TABLE_OFF: usize = 0x20;
    /// u64 channel table offset.
    pub const CHAN_TABLE_OFF: usize = 0x28;
    /// u64 ring data offset.
    pub const RING_DATA_OFF: usize = 0x30;
    /// u64 bulk area offset.
    pub const BULK_OFF: usize = 0x38;
    /// u64 bulk area size.
    pub const BULK_SIZE: usize = 0x40;
    /// u32 peer slot size.
    pub const PEER_SLOT_SIZE: usize = 0x48;
    /// u32 channel control size.
    pub const CHAN_CTRL_SIZE: usize = 0x4C;
    /// u64 region identity, chosen by the initializer (random; 0 = none): names the
    /// domain, for example in the net device's MAC addresses (docs/netdev.md).
    pub const REGION_ID: usize = 0x50;
    /// u32 init word (own cache line).
    pub const INIT_WORD: usize = 0x80;
    /// u32 initializer id.
    pub const INITIALIZER: usize = 0x84;
}

/// `init_word` state: untouched region.
pub const INIT_UNINIT: u32 = 0;
/// `init_word` state: someone is initialising.
pub const INIT_INITIALIZING: u32 = 1;
/// `init_word` state: header valid.
pub const INIT_READY: u32 = 2;

/// Split an init word into (epoch, state).
pub const fn init_word_parts(w: u32) -> (u32, u32) {
    (w >> 2, w & 3)
}

/// Build an init word.
pub const fn init_word(epoch: u32, state: u32) -> u32 {
    (epoch << 2) | (state & 3)
}

/// Errors while initialising or validating the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Parameters out of range (max_peers, bulk size, …).
    BadParams,
    /// Region too small for the requested number of peers.
    RegionTooSmall,
    /// Magic does not match.
    BadMagic,
    /// Protocol version differs from [`PROTOCOL_VERSION`].
    VersionMismatch {
        /// Version found in the header.
        found: u32,
    },
    /// Header fields inconsistent with the recomputed geometry, or invalid
    /// init state.
    Corrupt,
    /// Header's region size differs from our BAR size.
    SizeMismatch,
    /// Timed out waiting for another peer to initialise.
    InitTimeout,
    /// Our initialisation was taken over by another peer; retry attaching.
    InitLost,
}

/// Locally computed and validated geometry. The only source of offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Region size used (clamped to [`MAX_REGION_SIZE`]).
    pub region_size: usize,
    /// Number of peer slots.
    pub max_peers: u32,
    /// Bytes of each slot's transmit area (a multiple of [`PAGE`]): slot `i` owns
    /// `[ring_data_off + i * area_size, + area_size)` and carves its outbound rings from it.
    pub area_size: usize,
    /// Peer table offset.
    pub peer_table_off: usize,
    /// Channel control table offset.
    pub chan_table_off: usize,
    /// Ring data offset: the first slot's transmit area.
    pub ring_data_off: usize,
    /// Bulk area offset (0 if none).
    pub bulk_off: usize,
    /// Bulk area size (0 if none).
    pub bulk_size: usize,
}

fn round_up(v: usize, a: usize) -> Option<usize> {
    v.checked_add(a - 1).map(|x| x & !(a - 1))
}

/// The largest power of two `<= v` (0 for 0).
pub fn prev_pow2(v: usize) -> usize {
    if v == 0 {
        0
    } else {
        1usize << (usize::BITS - 1 - v.leading_zeros())
    }
}

impl Geometry {
    /// Deterministically compute the layout (docs/protocol.md §1).
    pub fn compute(
        region_size: usize,
        max_peers: u32,
        bulk_size: usize,
    ) -> Result<Self, LayoutError> {
        let region_size = region_size.min(MAX_REGION_SIZE);
        if region_size < MIN_REGION_SIZE {
            return Err(LayoutError::RegionTooSmall);
        }
        if !(MIN_PEERS..=MAX_PEERS).contains(&max_peers)
            || bulk_size % PAGE != 0
            || bulk_size > region_size / 2
        {
            return Err(LayoutError::BadParams);
        }
        let n = max_peers as usize;
        let nch = n * (n - 1);
        let peer_table_off = HEADER_SIZE;
        let chan_table_off =
            round_up(n * PEER_SLOT_SIZE, PAGE).and_then(|s| s.checked_add(peer_table_off));
        let chan_table_off = chan_table_off.ok_or(LayoutError::BadParams)?;
        let ring_data_off = round_up(nch * CHAN_CTRL_SIZE, PAGE)
            .and_then(|s| s.checked_add(chan_table_off))
            .ok_or(LayoutError::BadParams)?;
        let usable = region_size
            .checked_sub(bulk_size)
            .and_then(|r| r.checked_sub(ring_data_off))
            .ok_or(LayoutError::RegionTooSmall)?;
        // Each slot's area holds a minimum ring for every other slot.
        let area_size = usable / n / PAGE * PAGE;
        if area_size < (n - 1) * MIN_RING_SIZE || area_size == 0 {
            return Err(LayoutError::RegionTooSmall);
        }
        let bulk_off = if bulk_size == 0 {
            0
        } else {
            region_size - bulk_size
        };
        Ok(Self {
            region_size,
            max_peers,
            area_size,
            peer_table_off,
            chan_table_off,
            ring_data_off,
            bulk_off,
            bulk_size,
        })
    }

    /// Number of channels (`max_peers * (max_peers - 1)`).
    pub fn channels(&self) -> usize {
        let n = self.max_peers as usize;
        n * n.saturating_sub(1)
    }

    /// Channel index for `from → to`; `None` if either id is out of range or
    /// `from == to`.
    pub fn channel_index(&self, from: u32, to: u32) -> Option<usize> {
        if from >= self.max_peers || to >= self.max_peers || from == to {
            return None;
        }
        let j = if to < from { to } else { to - 1 };
        Some(from as usize * (self.max_peers as usize - 1) + j as usize)
    }

    /// Offset of the control block of channel `from → to`.
    pub fn chan_ctrl_off(&self, from: u32, to: u32) -> Option<usize> {
        self.channel_index(from, to)
            .map(|c| self.chan_table_off + c * CHAN_CTRL_SIZE)
    }

    /// Region offset and length of slot `id`'s transmit area: the only place where the
    /// rings it produces may lie.
    pub fn tx_area(&self, id: u32) -> Option<(usize, usize)> {
        (id < self.max_peers).then(|| {
            (
                self.ring_data_off + id as usize * self.area_size,
                self.area_size,
            )
        })
    }

    /// Offset of peer `id`'s slot.
    pub fn peer_slot_off(&self, id: u32) -> Option<usize> {
        (id < self.max_peers).then(|| self.peer_table_off + id as usize * PEER_SLOT_SIZE)
    }

    /// End of the ring data (the last slot's transmit area).
    pub fn ring_data_end(&self) -> usize {
        self.ring_data_off + self.max_peers as usize * self.area_size
    }
}

/// Header fields, each read exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeader {
    /// Magic.
    pub magic: u64,
    /// Version.
    pub version: u32,
    /// Header size.
    pub header_size: u32,
    /// Region size.
    pub region_size: u64,
    /// Max peers.
    pub max_peers: u32,
    /// Transmit area size.
    pub area_size: u32,
    /// Peer table offset.
    pub peer_table_off: u64,
    /// Channel table offset.
    pub chan_table_off: u64,
    /// Ring data offset.
    pub ring_data_off: u64,
    /// Bulk offset.
    pub bulk_off: u64,
    /// Bulk size.
    pub bulk_size: u64,
    /// Peer slot size.
    pub peer_slot_size: u32,
    /// Channel control size.
    pub chan_ctrl_size: u32,
}

impl RawHeader {
    /// Read every field once (relaxed; the caller has already observed READY
    /// with acquire, which orders these loads after the initializer's writes).
    pub fn read<S: Shm + ?Sized>(shm: &S) -> Self {
        Self {
            magic: shm.load_u64_relaxed(hdr::MAGIC),
            version: shm.load_u32_relaxed(hdr::VERSION),
            header_size: shm.load_u32_relaxed(hdr::HEADER_SIZE),
            region_size: shm.load_u64_relaxed(hdr::REGION_SIZE),
            max_peers: shm.load_u32_relaxed(hdr::MAX_PEERS),
            area_size: shm.load_u32_relaxed(hdr::AREA_SIZE),
            peer_table_off: shm.load_u64_relaxed(hdr::PEER_TABLE_OFF),
            chan_table_off: shm.load_u64_relaxed(hdr::CHAN_TABLE_OFF),
            ring_data_off: shm.load_u64_relaxed(hdr::RING_DATA_OFF),
            bulk_off: shm.load_u64_relaxed(hdr::BULK_OFF),
            bulk_size: shm.load_u64_relaxed(hdr::BULK_SIZE),
            peer_slot_size: shm.load_u32_relaxed(hdr::PEER_SLOT_SIZE),
            chan_ctrl_size: shm.load_u32_relaxed(hdr::CHAN_CTRL_SIZE),
        }
    }

    /// The header an initializer writes for `g`.
    pub fn from_geometry(g: &Geometry) -> Self {
        Self {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            header_size: HEADER_SIZE as u32,
            region_size: g.region_size as u64,
            max_peers: g.max_peers,
            area_size: g.area_size as u32,
            peer_table_off: g.peer_table_off as u64,
            chan_table_off: g.chan_table_off as u64,
            ring_data_off: g.ring_data_off as u64,
            bulk_off: g.bulk_off as u64,
            bulk_size: g.bulk_size as u64,
            peer_slot_size: PEER_SLOT_SIZE as u32,
            chan_ctrl_size: CHAN_CTRL_SIZE as u32,
        }
    }

    /// Write all fields (relaxed; published by the READY CAS).
    pub fn write<S: Shm + ?Sized>(&self, shm: &S) {
        shm.store_u64_relaxed(hdr::MAGIC, self.magic);
        shm.store_u32_relaxed(hdr::VERSION, self.version);
        shm.store_u32_relaxed(hdr::HEADER_SIZE, self.header_size);
        shm.store_u64_relaxed(hdr::REGION_SIZE, self.region_size);
        shm.store_u32_relaxed(hdr::MAX_PEERS, self.max_peers);
        shm.store_u32_relaxed(hdr::AREA_SIZE, self.area_size);
        shm.store_u64_relaxed(hdr::PEER_TABLE_OFF, self.peer_table_off);
        shm.store_u64_relaxed(hdr::CHAN_TABLE_OFF, self.chan_table_off);
        shm.store_u64_relaxed(hdr::RING_DATA_OFF, self.ring_data_off);
        shm.store_u64_relaxed(hdr::BULK_OFF, self.bulk_off);
        shm.store_u64_relaxed(hdr::BULK_SIZE, self.bulk_size);
        shm.store_u32_relaxed(hdr::PEER_SLOT_SIZE, self.peer_slot_size);
        shm.store_u32_relaxed(hdr::CHAN_CTRL_SIZE, self.chan_ctrl_size);
    }

    /// Validate against our own BAR size; returns the locally recomputed
    /// geometry, which is the only thing used afterwards.
    pub fn validate(&self, bar_size: usize) -> Result<Geometry, LayoutError> {
        if self.magic != MAGIC {
            return Err(LayoutError::BadMagic);
        }
        if self.version != PROTOCOL_VERSION {
            return Err(LayoutError::VersionMismatch {
                found: self.version,
            });
        }
        if self.header_size as usize != HEADER_SIZE
            || self.peer_slot_size as usize != PEER_SLOT_SIZE
            || self.chan_ctrl_size as usize != CHAN_CTRL_SIZE
        {
            return Err(LayoutError::Corrupt);
        }
        let ours = bar_size.min(MAX_REGION_SIZE);
        if usize::try_from(self.region_size).ok() != Some(ours) {
            return Err(LayoutError::SizeMismatch);
        }
        let bulk = usize::try_from(self.bulk_size).map_err(|_| LayoutError::Corrupt)?;
        let g = Geometry::compute(ours, self.max_peers, bulk).map_err(|_| LayoutError::Corrupt)?;
        if Self::from_geometry(&g) != *self {
            return Err(LayoutError::Corrupt);
        }
        Ok(g)
    }
}

/// Validate a READY region: read the header once and check it.
pub fn validate<S: Shm + ?Sized>(shm: &S) -> Result<Geometry, LayoutError> {
    if shm.size() < MIN_REGION_SIZE {
        return Err(LayoutError::RegionTooSmall);
    }
    RawHeader::read(shm).validate(shm.size())
}

/// The region identity the initializer published (`hdr::REGION_ID`; any value is valid,
/// 0 = none). Read once, after READY was observed with acquire (as the header).
pub fn region_id<S: Shm + ?Sized>(shm: &S) -> u64 {
    shm.load_u64_relaxed(hdr::REGION_ID)
}

/// Parameters chosen by the initializer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitConfig {
    /// Number of peer slots.
    pub max_peers: u32,
    /// Bulk area size (v1: 0).
    pub bulk_size: usize,
    /// Our id for the `initializer` field (`u32::MAX` if unknown yet).
    pub my_id: u32,
    /// The region identity to publish (`hdr::REGION_ID`), random in the kernel.
    pub region_id: u64,
}

/// Right to initialise, obtained by winning the init-word CAS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitTicket {
    word: u32,
}

/// Result of one attach poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachStep {
    /// We won the CAS: call [`initialize`].
    Initialize(InitTicket),
    /// Region is READY: call [`validate`].
    Ready,
    /// Someone else is initialising; wait and poll again.
    Wait,
}

/// Tracks how long the same INITIALIZING word has been observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitObserver {
    last: u32,
    same_polls: u32,
}

/// One step of the attach procedure (docs/protocol.md §2). `stale_polls`: how
/// many consecutive polls of an unchanged INITIALIZING word mean the
/// initializer died (then we take over).
pub fn attach_step<S: Shm + ?Sized>(
    shm: &S,
    obs: &mut InitObserver,
    stale_polls: u32,
) -> Result<AttachStep, LayoutError> {
    if shm.size() < MIN_REGION_SIZE {
        return Err(LayoutError::RegionTooSmall);
    }
    // Acquire: if READY, pairs with the initializer's fully ordered READY CAS
    // so all header and table writes are visible.
    let w = shm.load_u32_acquire(hdr::INIT_WORD);
    let (epoch, state) = init_word_parts(w);
    match state {
        INIT_READY => Ok(AttachStep::Ready),
        INIT_UNINIT if w == 0 => {
            match shm.cmpxchg_u32(hdr::INIT_WORD, 0, init_word(1, INIT_INITIALIZING)) {
                Ok(_) => Ok(AttachStep::Initialize(InitTicket {
                    word: init_word(1, INIT_INITIALIZING),
                })),
                Err(_) => Ok(AttachStep::Wait),
            }
        }
        INIT_INITIALIZING => {
            if w == obs.last {
                obs.same_polls = obs.same_polls.saturating_add(1);
            } else {
                obs.last = w;
                obs.same_polls = 0;
            }
            if obs.same_polls < stale_polls {
                return Ok(AttachStep::Wait);
            }
            // Stale: take over with a new epoch. Exactly one waiter wins.
            let new = init_word(epoch.wrapping_add(1), INIT_INITIALIZING);
            obs.same_polls = 0;
            match shm.cmpxchg_u32(hdr::INIT_WORD, w, new) {
                Ok(_) => Ok(AttachStep::Initialize(InitTicket { word: new })),
                Err(_) => Ok(AttachStep::Wait),
            }
        }
        _ => Err(LayoutError::Corrupt),
    }
}

/// Force re-initialisation (administrative recovery from a corrupt header).
/// Takes the init word from whatever it is to a new INITIALIZING epoch.
pub fn force_reinit<S: Shm + ?Sized>(shm: &S) -> Option<InitTicket> {
    let w = shm.load_u32_acquire(hdr::INIT_WORD);
    let new = init_word(init_word_parts(w).0.wrapping_add(1), INIT_INITIALIZING);
    shm.cmpxchg_u32(hdr::INIT_WORD, w, new)
        .ok()
        .map(|_| InitTicket { word: new })
}

fn still_ours<S: Shm + ?Sized>(shm: &S, t: InitTicket) -> bool {
    shm.load_u32_acquire(hdr::INIT_WORD) == t.word
}

/// Initialise the region (we hold `ticket`). Zeroes the peer and channel
/// tables chunk by chunk, re-checking ownership before each chunk, writes the
/// header, then publishes READY with a fully ordered CAS.
pub fn initialize<S: Shm + ?Sized>(
    shm: &S,
    ticket: InitTicket,
    cfg: &InitConfig,
) -> Result<Geometry, LayoutError> {
    let g = Geometry::compute(shm.size(), cfg.max_peers, cfg.bulk_size)?;
    let zero = [0u8; 256];
    let mut off = g.peer_table_off;
    // Bounded: (ring_data_off - peer_table_off) / 256 iterations.
    while off < g.ring_data_off {
        if off % PAGE == 0 && !still_ours(shm, ticket) {
            return Err(LayoutError::InitLost);
        }
        let n = (g.ring_data_off - off).min(zero.len());
        shm.write_bytes(off, zero.get(..n).unwrap_or(&[]));
        off += n;
    }
    // Clear the rest of the header page (future fields must read as zero),
    // except the init line.
    let mut off = hdr::CHAN_CTRL_SIZE + 4;
    while off < HEADER_SIZE {
        if !(hdr::INIT_WORD..hdr::INIT_WORD + CACHE_LINE).contains(&off) {
            shm.store_u32_relaxed(off, 0);
        }
        off += 4;
    }
    RawHeader::from_geometry(&g).write(shm);
    shm.store_u64_relaxed(hdr::REGION_ID, cfg.region_id);
    shm.store_u32_relaxed(hdr::INITIALIZER, cfg.my_id);
    let (epoch, _) = init_word_parts(ticket.word);
    // Fully ordered: publishes everything above to acquirers of READY.
    match shm.cmpxchg_u32(hdr::INIT_WORD, ticket.word, init_word(epoch, INIT_READY)) {
        Ok(_) => Ok(g),
        Err(_) => Err(LayoutError::InitLost),
    }
}

/// Whether a geometry was freshly initialised by us or attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// We initialised the region.
    Initialized(Geometry),
    /// Someone else had; we validated it.
    Joined(Geometry),
}

impl Attached {
    /// The geometry either way.
    pub fn geometry(&self) -> Geometry {
        match *self {
            Attached::Initialized(g) | Attached::Joined(g) => g,
        }
    }
}

/// Convenience driver: poll up to `max_polls` times, calling `wait()` between
/// polls (the kernel sleeps ~1 ms there); initialise if we win, take over a
/// stale initialisation after `stale_polls`, validate otherwise.
pub fn attach<S: Shm + ?Sized, W: FnMut()>(
    shm: &S,
    cfg: &InitConfig,
    max_polls: u32,
    stale_polls: u32,
    mut wait: W,
) -> Result<Attached, LayoutError> {
    let mut obs = InitObserver::default();
    for _ in 0..max_polls {
        match attach_step(shm, &mut obs, stale_polls)? {
            AttachStep::Ready => return validate(shm).map(Attached::Joined),
            AttachStep::Initialize(t) => match initialize(shm, t, cfg) {
                Ok(g) => return Ok(Attached::Initialized(g)),
                Err(LayoutError::InitLost) => {}
                Err(e) => return Err(e),
            },
            AttachStep::Wait => {}
        }
        wait();
    }
    Err(LayoutError::InitTimeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_table() {
        let mib = 1 << 20;
        let kib = 1 << 10;
        // (region, max_peers, bulk, area)
        let cases = [
            (4 * mib, 64, 0, 56 * kib),
            (32 * mib, 64, 0, 504 * kib),
            (4 * mib, 16, 0, 252 * kib),
            (4 * mib, 16, mib, 188 * kib),
            (64 * mib, 16, 16 * mib, 3 * mib - 4 * kib),
            (4 * mib, 2, 0, 2 * mib - 8 * kib),
            (64 * kib, 2, 0, 24 * kib),
        ];
        for (r, n, b, area) in cases {
            let g = Geometry::compute(r, n, b).unwrap();
            assert_eq!(g.area_size, area, "{r} {n}");
            assert!(g.ring_data_end() <= g.region_size - b);
            assert!(g.area_size >= (n as usize - 1) * MIN_RING_SIZE);
            let (o, l) = g.tx_area(n - 1).unwrap();
            assert_eq!(o + l, g.ring_data_end());
            assert_eq!(g.tx_area(n), None);
        }
        assert_eq!(
            Geometry::compute(mib, 64, 0),
            Err(LayoutError::RegionTooSmall)
        );
        assert_eq!(Geometry::compute(mib, 65, 0), Err(LayoutError::BadParams));
        assert_eq!(Geometry::compute(mib, 1, 0), Err(LayoutError::BadParams));
        let g = Geometry::compute(8 * mib, 8, 2 * mib).unwrap();
        assert!(g.ring_data_end() <= g.bulk_off);
        assert_eq!(g.bulk_off + g.bulk_size, g.region_size);
    }

    #[test]
    fn channel_index_is_bijective() {
        let g = Geometry::compute(8 << 20, 64, 0).unwrap();
        let mut seen = [false; 64 * 63];
        for i in 0..64 {
            for j in 0..64 {
                match g.channel_index(i, j) {
                    Some(c) => {
                        assert!(!seen[c]);
                        seen[c] = true;
                    }
                    None => assert_eq!(i, j),
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(g.channel_index(64, 0), None);
    }
}
