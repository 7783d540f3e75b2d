//! Peer table: join/leave, generation, heartbeat, liveness
//! (docs/protocol.md §3).

use super::layout::Geometry;
use super::shm::Shm;

/// Offset of the state word within a slot.
pub const SLOT_STATE: usize = 0x00;
/// Offset of the doorbell vector count within a slot: how many MSI-X vectors the owner
/// handles (0 or 1: only vector 0). Written by the owner while `JOINING`; untrusted.
pub const SLOT_VECTORS: usize = 0x04;
/// Offset of the heartbeat within a slot.
pub const SLOT_HEARTBEAT: usize = 0x08;
/// Offset of the feature word within a slot (docs/protocol.md §3): the optional protocol
/// extensions the owner understands. Written by the owner while `JOINING`; untrusted (a
/// peer that lies only breaks its own connections). Zero in slots of peers that predate it.
pub const SLOT_FEATURES: usize = 0x10;
/// Feature bit: the owner understands the encryption handshake (payloads on `REQUEST` and
/// `RESPONSE`, `RST` with `RST_AUTH`) and encrypted `RW` frames (docs/protocol.md §6.1).
pub const FEAT_CRYPTO: u32 = 1 << 0;
/// The features this implementation advertises.
pub const FEATURES: u32 = FEAT_CRYPTO;

/// Peer state (low two bits of the state word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Slot free.
    Absent = 0,
    /// Peer is joining (rings not yet ready).
    Joining = 1,
    /// Peer is up.
    Live = 2,
    /// Peer is leaving.
    Leaving = 3,
}

impl PeerState {
    fn from_bits(b: u32) -> Self {
        match b & 3 {
            0 => PeerState::Absent,
            1 => PeerState::Joining,
            2 => PeerState::Live,
            _ => PeerState::Leaving,
        }
    }
}

/// Generation mask (30 bits).
pub const GEN_MASK: u32 = (1 << 30) - 1;

/// Pack a state word.
pub const fn state_word(gen: u32, st: PeerState) -> u32 {
    ((gen & GEN_MASK) << 2) | st as u32
}

/// Peer-table errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerError {
    /// Id out of range.
    BadId,
    /// Slot not claimable (not ABSENT, or CAS lost repeatedly).
    Busy,
    /// Our slot no longer holds our (generation, LIVE): we were reaped.
    Evicted,
    /// Operation requires LIVE.
    NotLive,
}

/// How to take a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinMode {
    /// Id assigned by the ivshmem server: take the slot whatever its state
    /// (a previous incarnation of this id may have crashed).
    Assigned,
    /// ivshmem-plain: only take an ABSENT slot.
    Claim,
}

/// A consistent view of one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// State.
    pub state: PeerState,
    /// Generation.
    pub gen: u32,
    /// Heartbeat counter.
    pub heartbeat: u64,
    /// Raw state word (for `reap`).
    pub word: u32,
}

/// Liveness verdict comparing two snapshots of the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Same incarnation, making progress (or still absent).
    Same,
    /// A new incarnation (generation differs, slot present).
    Restarted(u32),
    /// Peer left or is leaving.
    Gone,
    /// Same incarnation, LIVE, heartbeat did not advance.
    Stale,
}

/// Our own membership: id and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Our peer id.
    pub id: u32,
    /// Our generation.
    pub gen: u32,
    heartbeat: u64,
}

fn slot<S: Shm + ?Sized>(_shm: &S, g: &Geometry, id: u32) -> Result<usize, PeerError> {
    g.peer_slot_off(id).ok_or(PeerError::BadId)
}

/// Bound on CAS retries when someone else is racing on our slot.
const CAS_RETRIES: u32 = 16;

/// Take slot `id` and bump its generation; state becomes JOINING. Afterwards
/// open producers / resync consumers for every other peer, then call
/// [`join_complete`].
pub fn join_begin<S: Shm + ?Sized>(
    shm: &S,
    g: &Geometry,
    id: u32,
    mode: JoinMode,
) -> Result<Membership, PeerError> {
    let off = slot(shm, g, id)?;
    let mut w = shm.load_u32_acquire(off + SLOT_STATE);
    for _ in 0..CAS_RETRIES {
        if mode == JoinMode::Claim && PeerState::from_bits(w) != PeerState::Absent {
            return Err(PeerError::Busy);
        }
        let gen = ((w >> 2).wrapping_add(1)) & GEN_MASK;
        // Full ordering: our later ring resets are ordered after the claim.
        match shm.cmpxchg_u32(off + SLOT_STATE, w, state_word(gen, PeerState::Joining)) {
            Ok(_) => {
                let hb = shm.load_u64_relaxed(off + SLOT_HEARTBEAT);
                return Ok(Membership {
                    id,
                    gen,
                    heartbeat: hb,
                });
            }
            Err(cur) => w = cur,
        }
    }
    Err(PeerError::Busy)
}

/// ivshmem-plain: claim the first ABSENT slot. At most `max_peers` CASes.
pub fn claim_id<S: Shm + ?Sized>(shm: &S, g: &Geometry) -> Result<Membership, PeerError> {
    for id in 0..g.max_peers {
        if let Ok(m) = join_begin(shm, g, id, JoinMode::Claim) {
            return Ok(m);
        }
    }
    Err(PeerError::Busy)
}

/// Publish LIVE (our ring resets become visible first) and beat once.
pub fn join_complete<S: Shm + ?Sized>(
    shm: &S,
    g: &Geometry,
    m: &mut Membership,
) -> Result<(), PeerError> {
    transition(
        shm,
        g,
        m,
        PeerState::Joining,
        PeerState::Live,
        PeerError::Evicted,
    )?;
    heartbeat(shm, g, m)
}

/// Advertise how many doorbell vectors we handle. Call between [`join_begin`] and
/// [`join_complete`], whose fully ordered CAS publishes it.
pub fn set_vectors<S: Shm + ?Sized>(
    shm: &S,
    g: &Geometry,
    m: &Membership,
    n: u32,
) -> Result<(), PeerError> {
    let off = slot(shm, g, m.id)?;
    shm.store_u32_relaxed(off + SLOT_VECTORS, n);
    Ok(())
}

/// The doorbell vector count peer `id` advertises (read once; any value is possible, the
/// caller only compares it).
pub fn vectors<S: Shm + ?Sized>(shm: &S, g: &Geometry, id: u32) -> Result<u32, PeerError> {
    let off = slot(shm, g, id)?;
    Ok(shm.load_u32_acquire(off + SLOT_VECTORS))
}

/// Advertise the protocol extensions we understand ([`FEATURES`]). Call between
/// [`join_begin`] and [`join_complete`], whose fully ordered CAS publishes it.
pub fn set_features<S: Shm + ?Sized>(
    shm: &S,
    g: &Geometry,
    m: &Membership,
    features: u32,
) -> Result<(), PeerError> {
    let off = slot(shm, g, m.id)?;
    shm.store_u32_relaxed(off + SLOT_FEATURES, features);
    Ok(())
}

/// The feature word peer `id` advertises (read once; any value is possible).
pub fn features<S: Shm + ?Sized>(shm: &S, g: &Geometry, id: u32) -> Result<u32, PeerError> {
    let off = slot(shm, g, id)?;
    Ok(shm.load_u32_acquire(off + SLOT_FEATURES))
}

/// Increment our heartbeat after checking we still own the slot.
pub fn heartbeat<S: Shm + ?Sized>(
    shm: &S,
    g: &Geometry,
    m: &mut Membership,
) -> Result<(), PeerError> {
    let off = slot(shm, g, m.id)?;
    if shm.load_u32_acquire(off + SLOT_STATE) != state_word(m.gen, PeerState::Live) {
        return Err(PeerError::Evicted);
    }
    m.heartbeat = m.heartbeat.wrapping_add(1);
    // Release: observers that see this beat also see everything we did before.
    shm.store_u64_release(off + SLOT_HEARTBEAT, m.heartbeat);
    Ok(())
}

/// CAS our own slot from `(gen, from)` to `(gen, to)`; `err` if it is not in
/// that state (someone reaped or took it).
fn transition<S: Shm + ?Sized>(
    shm: &S,
    g: &Geometry,
    m: &Membership,
    from: PeerState,
    to: PeerState,
    err: PeerError,
) -> Result<(), PeerError> {
    let off = slot(shm, g, m.id)?;
    // Fully ordered CAS: everything we did before is visible to whoever
    // observes the new state with acquire.
    shm.cmpxchg_u32(
        off + SLOT_STATE,
        state_word(m.gen, from),
        state_word(m.gen, to),
    )
    .map(|_| ())
    .map_err(|_| err)
}

/// LIVE → LEAVING. The caller then resets its connections and calls
/// [`leave_complete`].
///
/// While the slot is still ours, the feature word goes back to 0: a later occupant that
/// does not write one (an older build of this version) is then not taken for a peer that
/// speaks our extensions. (A reaped slot keeps its dead owner's word; every joiner of this
/// build writes its own before it goes live.)
pub fn leave_begin<S: Shm + ?Sized>(
    shm: &S,
    g: &Geometry,
    m: &Membership,
) -> Result<(), PeerError> {
    transition(
        shm,
        g,
        m,
        PeerState::Live,
        PeerState::Leaving,
        PeerError::NotLive,
    )?;
    let off = slot(shm, g, m.id)?;
    shm.store_u32_relaxed(off + SLOT_FEATURES, 0);
    Ok(())
}

/// LEAVING → ABSENT (only if the slot is still ours).
pub fn leave_complete<S: Shm + ?Sized>(
    shm: &S,
    g: &Geometry,
    m: &Membership,
) -> Result<(), PeerError> {
    transition(
        shm,
        g,
        m,
        PeerState::Leaving,
        PeerState::Absent,
        PeerError::Evicted,
    )
}

/// Read a slot (state word with acquire, then heartbeat with acquire).
pub fn snapshot<S: Shm + ?Sized>(
    shm: &S,
    g: &Geometry,
    id: u32,
) -> Result<PeerSnapshot, PeerError> {
    let off = slot(shm, g, id)?;
    let word = shm.load_u32_acquire(off + SLOT_STATE);
    let heartbeat = shm.load_u64_acquire(off + SLOT_HEARTBEAT);
    Ok(PeerSnapshot {
        state: PeerState::from_bits(word),
        gen: word >> 2,
        heartbeat,
        word,
    })
}

/// Reap a slot that has been `Stale` for long: CAS the exact observed LIVE
/// word to ABSENT. Returns whether we reaped it.
pub fn reap<S: Shm + ?Sized>(shm: &S, g: &Geometry, id: u32, seen: &PeerSnapshot) -> bool {
    if seen.state != PeerState::Live {
        return false;
    }
    match slot(shm, g, id) {
        Ok(off) => shm
            .cmpxchg_u32(
                off + SLOT_STATE,
                seen.word,
                state_word(seen.gen, PeerState::Absent),
            )
            .is_ok(),
        Err(_) => false,
    }
}

/// Compare two snapshots of the same slot taken one sampling period apart.
pub fn assess(prev: &PeerSnapshot, now: &PeerSnapshot) -> Liveness {
    let present = |s: PeerState| matches!(s, PeerState::Joining | PeerState::Live);
    if !present(now.state) {
        return if present(prev.state) {
            Liveness::Gone
        } else {
            Liveness::Same
        };
    }
    if now.gen != prev.gen || !present(prev.state) {
        return Liveness::Restarted(now.gen);
    }
    if now.state == PeerState::Live
        && prev.state == PeerState::Live
        && now.heartbeat == prev.heartbeat
    {
        return Liveness::Stale;
    }
    Liveness::Same
}
