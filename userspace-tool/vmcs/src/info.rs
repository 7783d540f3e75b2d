//! `VMCS_IOC_GET_INFO` as Rust values.

use serde::{Serialize, Serializer};

use crate::error::Result;
use crate::sys;

/// A peer's state in the region's peer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    Absent,
    Joining,
    Live,
    Leaving,
    /// A value this library does not know (a newer module).
    Unknown(u32),
}

impl PeerState {
    /// From `enum vmcs_peer_state`.
    pub fn from_raw(v: u32) -> Self {
        match v {
            sys::VMCS_PEER_ABSENT => PeerState::Absent,
            sys::VMCS_PEER_JOINING => PeerState::Joining,
            sys::VMCS_PEER_LIVE => PeerState::Live,
            sys::VMCS_PEER_LEAVING => PeerState::Leaving,
            v => PeerState::Unknown(v),
        }
    }

    /// `absent`, `joining`, `live`, `leaving` or `unknown(N)`.
    pub fn name(&self) -> String {
        match self {
            PeerState::Absent => "absent".into(),
            PeerState::Joining => "joining".into(),
            PeerState::Live => "live".into(),
            PeerState::Leaving => "leaving".into(),
            PeerState::Unknown(v) => format!("unknown({v})"),
        }
    }
}

impl Serialize for PeerState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// The transport of a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    IvshmemPlain,
    IvshmemDoorbell,
    /// The guest's AF_VSOCK: peer ids are vsock cids (the host is 2).
    Vsock,
    Unknown(u32),
}

impl Transport {
    /// From `VMCS_TRANSPORT_*`.
    pub fn from_raw(v: u32) -> Self {
        match v {
            sys::VMCS_TRANSPORT_IVSHMEM_PLAIN => Transport::IvshmemPlain,
            sys::VMCS_TRANSPORT_IVSHMEM_DOORBELL => Transport::IvshmemDoorbell,
            sys::VMCS_TRANSPORT_VSOCK => Transport::Vsock,
            v => Transport::Unknown(v),
        }
    }

    /// `ivshmem-plain`, `ivshmem-doorbell`, `vsock` or `unknown(N)`.
    pub fn name(&self) -> String {
        match self {
            Transport::IvshmemPlain => "ivshmem-plain".into(),
            Transport::IvshmemDoorbell => "ivshmem-doorbell".into(),
            Transport::Vsock => "vsock".into(),
            Transport::Unknown(v) => format!("unknown({v})"),
        }
    }
}

impl Serialize for Transport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// One peer of the domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// Its cid.
    pub id: u32,
    pub state: PeerState,
    /// Bumped on every (re)join.
    pub generation: u32,
    /// Time since its heartbeat last advanced; None if unknown.
    pub heartbeat_age_ms: Option<u32>,
    /// This guest.
    pub is_self: bool,
}

/// What `VMCS_IOC_GET_INFO` reports about this guest's domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Info {
    pub abi_version: u32,
    pub domain: u32,
    pub local_cid: u32,
    pub transport: Transport,
    pub region_size: u64,
    pub max_peers: u32,
    pub ring_size: u32,
    pub max_msg_size: u32,
    /// Every non-absent peer, this guest included.
    pub peers: Vec<PeerInfo>,
}

impl Info {
    /// From the raw struct (npeers is clamped to the array).
    pub fn from_raw(raw: &sys::vmcs_info) -> Info {
        let n = (raw.npeers as usize).min(sys::VMCS_MAX_PEERS);
        let peers = raw.peers[..n]
            .iter()
            .map(|p| PeerInfo {
                id: p.id,
                state: PeerState::from_raw(p.state),
                generation: p.generation,
                heartbeat_age_ms: (p.heartbeat_age_ms != u32::MAX).then_some(p.heartbeat_age_ms),
                is_self: p.id == raw.local_cid,
            })
            .collect();
        Info {
            abi_version: raw.abi_version,
            domain: raw.domain,
            local_cid: raw.local_cid,
            transport: Transport::from_raw(raw.transport),
            region_size: raw.region_size,
            max_peers: raw.max_peers,
            ring_size: raw.ring_size,
            max_msg_size: raw.max_msg_size,
            peers,
        }
    }
}

/// Asks the module about this guest's domain (`VMCS_IOC_GET_INFO` on `/dev/vmcs`).
pub fn info() -> Result<Info> {
    Ok(Info::from_raw(&crate::backend::get_info()?))
}

/// Every domain of this guest, in index order (a guest with an ivshmem device and vsock
/// has two: docs/uapi.md "The address plan").
pub fn info_all() -> Result<Vec<Info>> {
    Ok(crate::backend::get_info_all()?
        .iter()
        .map(Info::from_raw)
        .collect())
}

/// The loaded module's version (`/sys/module/vmcs/version`), if it publishes one.
pub fn module_version() -> Option<String> {
    let v = std::fs::read_to_string("/sys/module/vmcs/version").ok()?;
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_raw() {
        let mut raw = sys::vmcs_info {
            abi_version: 1,
            domain: 0,
            local_cid: 2,
            transport: 2,
            region_size: 4 << 20,
            max_peers: 8,
            ring_size: 65536,
            max_msg_size: 65536,
            npeers: 2,
            ..Default::default()
        };
        raw.peers[0] = sys::vmcs_peer_info {
            id: 1,
            state: 2,
            generation: 3,
            heartbeat_age_ms: 12,
        };
        raw.peers[1] = sys::vmcs_peer_info {
            id: 2,
            state: 9,
            generation: 1,
            heartbeat_age_ms: u32::MAX,
        };
        let i = Info::from_raw(&raw);
        assert_eq!(i.transport, Transport::IvshmemDoorbell);
        assert_eq!(i.peers.len(), 2);
        assert_eq!(i.peers[0].state, PeerState::Live);
        assert!(!i.peers[0].is_self);
        assert_eq!(i.peers[1].state.name(), "unknown(9)");
        assert_eq!(i.peers[1].heartbeat_age_ms, None);
        assert!(i.peers[1].is_self);
        let j = serde_json::to_value(&i).unwrap();
        assert_eq!(j["transport"], "ivshmem-doorbell");
        assert_eq!(j["peers"][0]["state"], "live");
        raw.npeers = 1000;
        assert_eq!(Info::from_raw(&raw).peers.len(), sys::VMCS_MAX_PEERS);
    }
}
