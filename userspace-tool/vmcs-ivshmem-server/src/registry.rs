//! Pure (I/O-free) state machine of the ivshmem-server protocol.
//!
//! The [`Registry`] knows which peer ids are in use and in which order the
//! peers joined, and turns "a peer joins" / "a peer leaves" into the exact
//! list of messages QEMU's reference server (`contrib/ivshmem-server`) would
//! send.  The I/O layer ([`crate::server`]) only executes those plans.

/// A peer id as carried in the protocol (QEMU's doorbell register has 16 bits
/// for it).
pub type PeerId = u16;

/// Protocol version sent as the very first message of every connection.
pub const PROTOCOL_VERSION: i64 = 0;

/// Value sent together with the shared-memory file descriptor.
pub const SHM_MARKER: i64 = -1;

/// Which file descriptor (if any) travels with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdRef {
    /// No descriptor: version, own id, or a disconnect notification.
    None,
    /// The shared-memory descriptor.
    Shm,
    /// Eventfd number `vector` of peer `peer`.
    Vector { peer: PeerId, vector: u16 },
}

impl std::fmt::Display for FdRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("no fd"),
            Self::Shm => f.write_str("shm fd"),
            Self::Vector { peer, vector } => write!(f, "eventfd {vector} of peer {peer}"),
        }
    }
}

/// One protocol message: an int64 (little endian on the wire) for peer `to`,
/// optionally accompanied by one descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub to: PeerId,
    pub value: i64,
    pub fd: FdRef,
}

impl Message {
    const fn new(to: PeerId, value: i64, fd: FdRef) -> Self {
        Self { to, value, fd }
    }

    /// Tells `to` about eventfd `vector` of peer `about`.
    pub fn vector(to: PeerId, about: PeerId, vector: u16) -> Self {
        let fd = FdRef::Vector {
            peer: about,
            vector,
        };
        Self::new(to, i64::from(about), fd)
    }
}

/// Messages produced by a successful [`Registry::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPlan {
    /// The id given to the new peer.
    pub id: PeerId,
    /// Version, id and shm messages for the new peer.  If any of them cannot
    /// be delivered, nobody else has heard of the peer yet, so it can be
    /// dropped with [`Registry::abort_join`] (no disconnect notification).
    pub initial: Vec<Message>,
    /// Everything else, in QEMU's order: the new peer's eventfds to every
    /// existing peer, every existing peer's eventfds to the new peer, and the
    /// new peer's own eventfds to itself.
    pub advertise: Vec<Message>,
}

impl JoinPlan {
    /// All messages in send order.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.initial.iter().chain(self.advertise.iter())
    }
}

/// Peer table and id allocator.
///
/// Two modes. QEMU's (the default): ids go round robin and a leaving peer is
/// announced to the others, who close its eventfds. Sticky (`--sticky-ids`): a
/// joining peer gets the lowest free id, a leave is announced to nobody, and
/// an id that comes back keeps its eventfd objects (the server holds them), so
/// the peers that already had them are told nothing. That is what lets a
/// restarted VM get its old id back: QEMU's ivshmem device frees a departed
/// peer's eventfd array on the leave notice and later writes the id's new
/// eventfds through the freed pointer (docs/ivshmem-server.md).
#[derive(Debug, Clone)]
pub struct Registry {
    max_peers: u32,
    vectors: u16,
    sticky: bool,
    /// Next id to try (QEMU's `cur_id`), always `< max_peers`.
    next_id: u32,
    /// Connected peers, in join order (QEMU keeps a tail queue).
    peers: Vec<PeerId>,
    /// Sticky mode: for each connected peer, the ids whose eventfds it holds.
    known: std::collections::BTreeMap<PeerId, std::collections::BTreeSet<PeerId>>,
}

impl Registry {
    /// `max_peers` ids (`0..max_peers`) are available; each peer gets
    /// `vectors` eventfds.  `max_peers` is clamped to `1..=65536`.
    pub fn new(max_peers: u32, vectors: u16) -> Self {
        Self {
            max_peers: max_peers.clamp(1, 1 << 16),
            vectors,
            sticky: false,
            next_id: 0,
            peers: Vec::new(),
            known: std::collections::BTreeMap::new(),
        }
    }

    /// A registry in sticky mode (see [`Registry`]).
    pub fn new_sticky(max_peers: u32, vectors: u16) -> Self {
        Self {
            sticky: true,
            ..Self::new(max_peers, vectors)
        }
    }

    /// Whether ids are sticky (lowest free, no leave notices).
    pub fn sticky(&self) -> bool {
        self.sticky
    }

    pub fn vectors(&self) -> u16 {
        self.vectors
    }

    pub fn max_peers(&self) -> u32 {
        self.max_peers
    }

    /// Connected peers in join order.
    pub fn peers(&self) -> &[PeerId] {
        &self.peers
    }

    pub fn contains(&self, id: PeerId) -> bool {
        self.peers.contains(&id)
    }

    pub fn is_full(&self) -> bool {
        self.peers.len() as u64 >= u64::from(self.max_peers)
    }

    /// The id the next joining peer would get: the first free id starting at
    /// the one after the last id handed out, wrapping within `max_peers`.
    pub fn peek_id(&self) -> Option<PeerId> {
        let first = if self.sticky { 0 } else { self.next_id };
        (0..self.max_peers)
            .map(|i| (first + i) % self.max_peers)
            .filter_map(|id| PeerId::try_from(id).ok())
            .find(|id| !self.contains(*id))
    }

    /// Admit a new peer and plan the messages announcing it.  Returns `None`
    /// when every id is taken.
    pub fn join(&mut self) -> Option<JoinPlan> {
        let id = self.peek_id()?;
        self.next_id = (u32::from(id) + 1) % self.max_peers;
        let value = i64::from(id);

        let initial = vec![
            Message::new(id, PROTOCOL_VERSION, FdRef::None),
            Message::new(id, value, FdRef::None),
            Message::new(id, SHM_MARKER, FdRef::Shm),
        ];

        let mut advertise = Vec::new();
        // The new peer's eventfds to every existing peer (sticky: to those that
        // do not hold them from an earlier incarnation of the id).
        for &other in &self.peers {
            if self.known.get(&other).is_some_and(|k| k.contains(&id)) {
                continue;
            }
            advertise.extend(self.vector_msgs(other, id));
        }
        // Every existing peer's eventfds to the new peer.
        for &other in &self.peers {
            advertise.extend(self.vector_msgs(id, other));
        }
        // The new peer's own eventfds to itself (interrupt setup).
        advertise.extend(self.vector_msgs(id, id));

        if self.sticky {
            for &other in &self.peers {
                self.known.entry(other).or_default().insert(id);
            }
            let mut mine: std::collections::BTreeSet<PeerId> = self.peers.iter().copied().collect();
            mine.insert(id);
            self.known.insert(id, mine);
        }
        self.peers.push(id);
        Some(JoinPlan {
            id,
            initial,
            advertise,
        })
    }

    /// Forget a peer whose join failed before anyone else heard of it.
    pub fn abort_join(&mut self, id: PeerId) {
        self.peers.retain(|&p| p != id);
        self.known.remove(&id);
    }

    /// Remove a peer and plan the disconnect notifications (its id, no
    /// descriptor) to every remaining peer.  Unknown ids produce no messages.
    pub fn leave(&mut self, id: PeerId) -> Vec<Message> {
        if !self.contains(id) {
            return Vec::new();
        }
        self.abort_join(id);
        if self.sticky {
            // The others keep the id's eventfds, which stay valid (the server
            // holds them for the id's next incarnation).
            return Vec::new();
        }
        self.peers
            .iter()
            .map(|&other| Message::new(other, i64::from(id), FdRef::None))
            .collect()
    }

    /// One message per vector telling `to` about the eventfds of `about`.
    fn vector_msgs(&self, to: PeerId, about: PeerId) -> impl Iterator<Item = Message> {
        (0..self.vectors).map(move |vector| Message::vector(to, about, vector))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Message as M;

    #[test]
    fn first_peer_gets_id_zero_and_its_own_vectors() {
        let mut r = Registry::new(16, 2);
        let plan = r.join().expect("room");
        assert_eq!(plan.id, 0);
        assert_eq!(
            plan.initial,
            vec![
                Message::new(0, 0, FdRef::None),
                Message::new(0, 0, FdRef::None),
                Message::new(0, -1, FdRef::Shm),
            ]
        );
        assert_eq!(plan.advertise, vec![M::vector(0, 0, 0), M::vector(0, 0, 1)]);
    }

    #[test]
    fn join_order_matches_qemu() {
        let mut r = Registry::new(16, 2);
        r.join();
        r.join();
        let plan = r.join().expect("room");
        assert_eq!(plan.id, 2);
        assert_eq!(plan.initial[1], Message::new(2, 2, FdRef::None));
        assert_eq!(
            plan.advertise,
            vec![
                // new peer's vectors to existing peers, in join order
                M::vector(0, 2, 0),
                M::vector(0, 2, 1),
                M::vector(1, 2, 0),
                M::vector(1, 2, 1),
                // existing peers' vectors to the new peer
                M::vector(2, 0, 0),
                M::vector(2, 0, 1),
                M::vector(2, 1, 0),
                M::vector(2, 1, 1),
                // own vectors
                M::vector(2, 2, 0),
                M::vector(2, 2, 1),
            ]
        );
        assert_eq!(plan.messages().count(), 13);
    }

    #[test]
    fn leave_notifies_remaining_peers() {
        let mut r = Registry::new(16, 1);
        for _ in 0..3 {
            r.join();
        }
        assert_eq!(
            r.leave(1),
            vec![
                Message::new(0, 1, FdRef::None),
                Message::new(2, 1, FdRef::None)
            ]
        );
        assert_eq!(r.peers(), &[0, 2]);
        assert!(r.leave(1).is_empty(), "second leave is a no-op");
        assert!(r.leave(42).is_empty());
    }

    #[test]
    fn ids_go_up_and_are_not_reused_immediately() {
        let mut r = Registry::new(16, 1);
        assert_eq!(r.join().map(|p| p.id), Some(0));
        assert_eq!(r.join().map(|p| p.id), Some(1));
        r.leave(1);
        assert_eq!(r.join().map(|p| p.id), Some(2), "rejoin gets a new id");
        r.leave(0);
        assert_eq!(r.join().map(|p| p.id), Some(3));
    }

    #[test]
    fn ids_wrap_and_skip_used_ones() {
        let mut r = Registry::new(3, 1);
        for want in 0..3 {
            assert_eq!(r.join().map(|p| p.id), Some(want));
        }
        assert!(r.is_full());
        assert_eq!(r.peek_id(), None);
        assert!(r.join().is_none());
        r.leave(1);
        // next_id wrapped to 0 (in use) -> 1
        assert_eq!(r.join().map(|p| p.id), Some(1));
        r.leave(0);
        // next is 2 (in use) -> wraps to 0
        assert_eq!(r.join().map(|p| p.id), Some(0));
        assert_eq!(r.peers(), &[2, 1, 0]);
    }

    #[test]
    fn abort_join_sends_nothing() {
        let mut r = Registry::new(4, 1);
        r.join();
        let plan = r.join().expect("room");
        r.abort_join(plan.id);
        assert_eq!(r.peers(), &[0]);
        // the aborted id is still "used up" for allocation purposes
        assert_eq!(r.join().map(|p| p.id), Some(2));
    }

    #[test]
    fn sticky_ids_come_back_without_notices() {
        let mut r = Registry::new_sticky(16, 1);
        for want in 0..3 {
            assert_eq!(r.join().map(|p| p.id), Some(want));
        }
        assert!(r.leave(1).is_empty(), "no leave notice");
        let plan = r.join().expect("room");
        assert_eq!(plan.id, 1, "the lowest free id: its own");
        // 0 and 2 hold id 1's eventfds already: only the new peer is told.
        assert!(plan.advertise.iter().all(|m| m.to == 1));
        assert_eq!(
            plan.advertise.iter().map(|m| m.value).collect::<Vec<_>>(),
            vec![0, 2, 1]
        );
        // A peer that joined while id 1 was away learns it when it comes back.
        r.leave(1);
        assert_eq!(r.join().map(|p| p.id), Some(1));
        r.leave(1);
        let late = r.join().expect("room");
        assert_eq!(late.id, 1);
        r.leave(2);
        let p3 = r.join().expect("room");
        assert_eq!(p3.id, 2);
        // the new 2 knows 0 and 1; the others already knew 2
        assert!(p3.advertise.iter().all(|m| m.to == 2));
        r.leave(1);
        let back = r.join().expect("room");
        assert_eq!(back.id, 1);
        assert!(
            back.advertise.iter().all(|m| m.to == 1),
            "the new 2 got 1's eventfds when it joined: {:?}",
            back.advertise
        );
    }

    #[test]
    fn sticky_id_unknown_to_a_later_peer_is_advertised_to_it() {
        let mut r = Registry::new_sticky(16, 1);
        for want in 0..4 {
            assert_eq!(r.join().map(|p| p.id), Some(want));
        }
        r.leave(1);
        r.leave(2);
        // Takes 1 while 2 is away: it hears of 0 and 3 only.
        let x = r.join().expect("room");
        assert_eq!(x.id, 1);
        assert_eq!(
            x.advertise.iter().map(|m| m.value).collect::<Vec<_>>(),
            vec![0, 3, 1]
        );
        // 2 comes back: 0 and 3 hold its eventfds, the new 1 does not.
        let y = r.join().expect("room");
        assert_eq!(y.id, 2);
        let told: Vec<_> = y
            .advertise
            .iter()
            .filter(|m| m.to != 2)
            .map(|m| (m.to, m.value))
            .collect();
        assert_eq!(told, vec![(1, 2)]);
    }

    #[test]
    fn max_peers_is_clamped() {
        assert_eq!(Registry::new(0, 1).max_peers(), 1);
        let mut big = Registry::new(u32::MAX, 1);
        assert_eq!(big.max_peers(), 65536);
        assert_eq!(big.join().map(|p| p.id), Some(0));
    }
}
