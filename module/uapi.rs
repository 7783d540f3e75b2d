// SPDX-License-Identifier: GPL-2.0

//! The user API of /dev/vmcs: `#[repr(C)]` mirrors of userspace-tool/include/vmcs.h.
//!
//! The header is the source of truth; the userspace library checks at compile time that
//! its own copy of these layouts matches the header, and the sizes and field offsets are
//! asserted below.

use kernel::{
    ioctl::{_IOR, _IOW, _IOWR},
    transmute::{AsBytes, FromBytes},
};

/// Version of the ABI, reported by `VMCS_IOC_GET_INFO`.
pub(crate) const ABI_VERSION: u32 = 1;
/// Bind to any address (`VMADDR_CID_ANY`).
pub(crate) const CID_ANY: u32 = u32::MAX;
/// This guest: loopback, like `VMADDR_CID_LOCAL` (whose value 1 is a peer id here).
pub(crate) const CID_LOCAL: u32 = u32::MAX - 1;
/// Pick a free port at or above [`PRIVILEGED_PORTS`] (`VMADDR_PORT_ANY`).
pub(crate) const PORT_ANY: u32 = u32::MAX;
/// Ports below this need `CAP_NET_BIND_SERVICE`.
pub(crate) const PRIVILEGED_PORTS: u32 = 1024;
/// Largest message one write carries.
pub(crate) const MAX_MSG_SIZE: u32 = 64 * 1024;
/// Peers a domain can hold.
pub(crate) const MAX_PEERS: usize = 64;

/// `VMCS_TRANSPORT_IVSHMEM_PLAIN`.
pub(crate) const TRANSPORT_IVSHMEM_PLAIN: u32 = 1;
/// `VMCS_TRANSPORT_IVSHMEM_DOORBELL`.
pub(crate) const TRANSPORT_IVSHMEM_DOORBELL: u32 = 2;
/// `VMCS_TRANSPORT_VSOCK`.
pub(crate) const TRANSPORT_VSOCK: u32 = 3;

/// `struct vmcs_addr`.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VmcsAddr {
    pub(crate) cid: u32,
    pub(crate) port: u32,
}

/// `struct vmcs_peer_info`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsPeerInfo {
    pub(crate) id: u32,
    pub(crate) state: u32,
    pub(crate) generation: u32,
    pub(crate) heartbeat_age_ms: u32,
}

/// `struct vmcs_info`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct VmcsInfo {
    pub(crate) abi_version: u32,
    pub(crate) domain: u32,
    pub(crate) local_cid: u32,
    pub(crate) transport: u32,
    pub(crate) region_size: u64,
    pub(crate) max_peers: u32,
    pub(crate) ring_size: u32,
    pub(crate) max_msg_size: u32,
    pub(crate) npeers: u32,
    pub(crate) peers: [VmcsPeerInfo; MAX_PEERS],
}

/// `struct vmcs_connect`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsConnect {
    pub(crate) addr: VmcsAddr,
    pub(crate) timeout_ms: u32,
    pub(crate) flags: u32,
}

/// `struct vmcs_accept`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsAccept {
    pub(crate) flags: u32,
    pub(crate) reserved: u32,
    pub(crate) peer: VmcsAddr,
}

/// `VMCS_OPT_NONBLOCK`.
pub(crate) const OPT_NONBLOCK: u32 = 1 << 0;
/// `VMCS_OPT_RCVBUF`.
pub(crate) const OPT_RCVBUF: u32 = 1 << 1;

/// `struct vmcs_opts`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsOpts {
    pub(crate) mask: u32,
    pub(crate) nonblock: u32,
    pub(crate) rcvbuf: u32,
    pub(crate) reserved: u32,
}

/// `struct vmcs_names`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsNames {
    pub(crate) local: VmcsAddr,
    pub(crate) remote: VmcsAddr,
}

/// `struct vmcs_open_domain`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsOpenDomain {
    pub(crate) domain: u32,
    pub(crate) flags: u32,
}

const MAGIC: u32 = 0xB7;
/// `VMCS_IOC_GET_INFO`.
pub(crate) const IOC_GET_INFO: u32 = _IOR::<VmcsInfo>(MAGIC, 0x01);
/// `VMCS_IOC_BIND`.
pub(crate) const IOC_BIND: u32 = _IOWR::<VmcsAddr>(MAGIC, 0x02);
/// `VMCS_IOC_CONNECT`.
pub(crate) const IOC_CONNECT: u32 = _IOW::<VmcsConnect>(MAGIC, 0x03);
/// `VMCS_IOC_LISTEN`.
pub(crate) const IOC_LISTEN: u32 = _IOW::<u32>(MAGIC, 0x04);
/// `VMCS_IOC_ACCEPT`.
pub(crate) const IOC_ACCEPT: u32 = _IOWR::<VmcsAccept>(MAGIC, 0x05);
/// `VMCS_IOC_SET_OPTS`.
pub(crate) const IOC_SET_OPTS: u32 = _IOW::<VmcsOpts>(MAGIC, 0x06);
/// `VMCS_IOC_GET_NAMES`.
pub(crate) const IOC_GET_NAMES: u32 = _IOR::<VmcsNames>(MAGIC, 0x07);
/// `VMCS_IOC_SHUTDOWN`.
pub(crate) const IOC_SHUTDOWN: u32 = _IOW::<u32>(MAGIC, 0x08);
/// `VMCS_IOC_OPEN_DOMAIN`.
pub(crate) const IOC_OPEN_DOMAIN: u32 = _IOW::<VmcsOpenDomain>(MAGIC, 0x09);
/// `VMCS_MAX_BUSY_POLL_US`: the largest busy-poll window (module parameter `busy_poll_us`,
/// `SO_BUSY_POLL`, `VMCS_IOC_SET_BUSY_POLL`).
pub(crate) const MAX_BUSY_POLL_US: u32 = 100_000;
/// `VMCS_IOC_SET_BUSY_POLL`.
pub(crate) const IOC_SET_BUSY_POLL: u32 = _IOW::<u32>(MAGIC, 0x20);
/// `VMCS_IOC_GET_BUSY_POLL`.
pub(crate) const IOC_GET_BUSY_POLL: u32 = _IOR::<u32>(MAGIC, 0x21);

/// `VMCS_POLICY_ALL`: every list (`VMCS_IOC_POLICY_CLEAR`, `_RESET`).
pub(crate) const POLICY_ALL: u32 = 0;
/// `VMCS_POLICY_CONNECT_IN`: (peer, local port) pairs that may connect to this guest.
pub(crate) const POLICY_CONNECT_IN: u32 = 1;
/// `VMCS_POLICY_CONNECT_OUT`: (peer, remote port) pairs this guest may connect to.
pub(crate) const POLICY_CONNECT_OUT: u32 = 2;
/// `VMCS_POLICY_BIND`: local ports that may be bound.
pub(crate) const POLICY_BIND: u32 = 3;
/// `VMCS_POLICY_MAX_RULES`: rules per domain, all lists together.
pub(crate) const POLICY_MAX_RULES: u32 = 128;

/// `struct vmcs_policy_rule`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsPolicyRule {
    pub(crate) list: u32,
    pub(crate) cid: u32,
    pub(crate) port: u32,
    pub(crate) flags: u32,
}

/// `struct vmcs_policy_get`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsPolicyGet {
    /// User pointer to `count` `struct vmcs_policy_rule`.
    pub(crate) rules: u64,
    pub(crate) count: u32,
    pub(crate) flags: u32,
    pub(crate) denied_in: u64,
    pub(crate) denied_out: u64,
    pub(crate) denied_bind: u64,
}

/// `VMCS_IOC_POLICY_ADD`.
pub(crate) const IOC_POLICY_ADD: u32 = _IOW::<VmcsPolicyRule>(MAGIC, 0x30);
/// `VMCS_IOC_POLICY_DEL`.
pub(crate) const IOC_POLICY_DEL: u32 = _IOW::<VmcsPolicyRule>(MAGIC, 0x31);
/// `VMCS_IOC_POLICY_CLEAR`.
pub(crate) const IOC_POLICY_CLEAR: u32 = _IOW::<u32>(MAGIC, 0x32);
/// `VMCS_IOC_POLICY_RESET`.
pub(crate) const IOC_POLICY_RESET: u32 = _IOW::<u32>(MAGIC, 0x33);
/// `VMCS_IOC_POLICY_GET`.
pub(crate) const IOC_POLICY_GET: u32 = _IOWR::<VmcsPolicyGet>(MAGIC, 0x34);

/// `struct vmcs_bulk_setup` (`VMCS_IOC_BULK_SETUP`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsBulkSetup {
    pub(crate) size: u32,
    pub(crate) timeout_ms: u32,
    pub(crate) tx_size: u32,
    pub(crate) rx_size: u32,
}

/// `struct vmcs_bulk_desc` (`VMCS_IOC_BULK_SEND`, `VMCS_IOC_BULK_RECV`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsBulkDesc {
    pub(crate) off: u32,
    pub(crate) len: u32,
}

/// `struct vmcs_bulk_vec` (`VMCS_IOC_BULK_SENDV`, `_RECVV`, `_RELEASEV`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsBulkVec {
    /// User pointer to `count` `struct vmcs_bulk_desc`.
    pub(crate) descs: u64,
    pub(crate) count: u32,
    pub(crate) flags: u32,
}

/// `VMCS_BULK_MAX_BATCH`: the most descriptors one batched bulk ioctl takes.
pub(crate) const BULK_MAX_BATCH: u32 = 64;

/// `VMCS_IOC_BULK_SETUP`.
pub(crate) const IOC_BULK_SETUP: u32 = _IOWR::<VmcsBulkSetup>(MAGIC, 0x10);
/// `VMCS_IOC_BULK_SEND`.
pub(crate) const IOC_BULK_SEND: u32 = _IOW::<VmcsBulkDesc>(MAGIC, 0x11);
/// `VMCS_IOC_BULK_RECV`.
pub(crate) const IOC_BULK_RECV: u32 = _IOR::<VmcsBulkDesc>(MAGIC, 0x12);
/// `VMCS_IOC_BULK_WAIT`.
pub(crate) const IOC_BULK_WAIT: u32 = _IOW::<VmcsBulkDesc>(MAGIC, 0x14);
/// `VMCS_IOC_BULK_RELEASE`.
pub(crate) const IOC_BULK_RELEASE: u32 = _IOW::<u32>(MAGIC, 0x13);
/// `VMCS_IOC_BULK_SENDV`.
pub(crate) const IOC_BULK_SENDV: u32 = _IOW::<VmcsBulkVec>(MAGIC, 0x15);
/// `VMCS_IOC_BULK_RECVV`.
pub(crate) const IOC_BULK_RECVV: u32 = _IOW::<VmcsBulkVec>(MAGIC, 0x16);
/// `VMCS_IOC_BULK_RELEASEV`.
pub(crate) const IOC_BULK_RELEASEV: u32 = _IOW::<VmcsBulkVec>(MAGIC, 0x17);

/// `VMCS_AF_DEFAULT`: the default AF_VMCS family number (`AF_SNA`, registered by no
/// in-tree family; docs/sockets.md).
pub(crate) const AF_DEFAULT: u32 = 22;

/// `struct sockaddr_vmcs`, layout-identical to AF_VSOCK's `struct sockaddr_vm`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct SockaddrVmcs {
    pub(crate) family: u16,
    pub(crate) reserved1: u16,
    pub(crate) port: u32,
    pub(crate) cid: u32,
    pub(crate) flags: u8,
    pub(crate) zero: [u8; 3],
}

/// `VMCS_KEY_LEN`.
pub(crate) const KEY_LEN: usize = 32;
/// `VMCS_ENCRYPTED`: or-ed into `VMCS_IOC_GET_ENCRYPT`'s value when encrypted.
pub(crate) const ENCRYPTED: u32 = 0x100;
/// `VMCS_SOL_VMCS`: the AF_VMCS option level of `VMCS_SO_*`.
pub(crate) const SOL_VMCS: i32 = 0x766d;
/// `VMCS_SO_ENCRYPT`.
pub(crate) const SO_ENCRYPT: i32 = 1;
/// `VMCS_SO_ENCRYPTED`.
pub(crate) const SO_ENCRYPTED: i32 = 2;

/// `struct vmcs_key`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsKey {
    pub(crate) flags: u32,
    pub(crate) len: u32,
    pub(crate) key: [u8; KEY_LEN],
}

/// `struct vmcs_crypto_info`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct VmcsCryptoInfo {
    pub(crate) policy: u32,
    pub(crate) key_installed: u32,
    pub(crate) handshakes: u64,
    pub(crate) auth_failed: u64,
    pub(crate) peer_refused: u64,
    pub(crate) policy_refused: u64,
    pub(crate) bad_frames: u64,
}

/// `VMCS_IOC_SET_KEY`.
pub(crate) const IOC_SET_KEY: u32 = _IOW::<VmcsKey>(MAGIC, 0x40);
/// `VMCS_IOC_CLEAR_KEY`.
pub(crate) const IOC_CLEAR_KEY: u32 = _IOW::<u32>(MAGIC, 0x41);
/// `VMCS_IOC_SET_DOMAIN_CRYPTO`.
pub(crate) const IOC_SET_DOMAIN_CRYPTO: u32 = _IOW::<u32>(MAGIC, 0x42);
/// `VMCS_IOC_GET_CRYPTO`.
pub(crate) const IOC_GET_CRYPTO: u32 = _IOR::<VmcsCryptoInfo>(MAGIC, 0x43);
/// `VMCS_IOC_SET_ENCRYPT`.
pub(crate) const IOC_SET_ENCRYPT: u32 = _IOW::<u32>(MAGIC, 0x44);
/// `VMCS_IOC_GET_ENCRYPT`.
pub(crate) const IOC_GET_ENCRYPT: u32 = _IOR::<u32>(MAGIC, 0x45);

/// `SHUT_RD`, `SHUT_WR`, `SHUT_RDWR` for `VMCS_IOC_SHUTDOWN`.
pub(crate) const SHUT_RDWR: u32 = 2;

// SAFETY: The structs below are `#[repr(C)]`, made of `u32`/`u64` fields (and arrays and
// structs of them) laid out without padding (sizes asserted below), so every bit pattern is a
// valid value and no byte is uninitialised.
unsafe impl FromBytes for VmcsAddr {}
// SAFETY: As above.
unsafe impl AsBytes for VmcsAddr {}
// SAFETY: As above.
unsafe impl AsBytes for VmcsPeerInfo {}
// SAFETY: As above.
unsafe impl AsBytes for VmcsInfo {}
// SAFETY: As above.
unsafe impl FromBytes for VmcsConnect {}
// SAFETY: As above.
unsafe impl FromBytes for VmcsAccept {}
// SAFETY: As above.
unsafe impl AsBytes for VmcsAccept {}
// SAFETY: As above.
unsafe impl FromBytes for VmcsOpts {}
// SAFETY: As above.
unsafe impl AsBytes for VmcsNames {}
// SAFETY: As above.
unsafe impl FromBytes for VmcsBulkSetup {}
// SAFETY: As above.
unsafe impl AsBytes for VmcsBulkSetup {}
// SAFETY: As above.
unsafe impl FromBytes for VmcsBulkDesc {}
// SAFETY: As above.
unsafe impl AsBytes for VmcsBulkDesc {}
// SAFETY: As above.
unsafe impl FromBytes for VmcsBulkVec {}
// SAFETY: As above.
unsafe impl FromBytes for VmcsOpenDomain {}
// SAFETY: As above.
unsafe impl FromBytes for VmcsPolicyRule {}
// SAFETY: As above.
unsafe impl AsBytes for VmcsPolicyRule {}
// SAFETY: As above.
unsafe impl FromBytes for VmcsPolicyGet {}
// SAFETY: As above.
unsafe impl AsBytes for VmcsPolicyGet {}
// SAFETY: As above.
unsafe impl AsBytes for VmcsCryptoInfo {}
// SAFETY: `#[repr(C)]` of integers and a byte array, without padding (size asserted below).
unsafe impl FromBytes for VmcsKey {}
// SAFETY: `#[repr(C)]` of integers and a byte array, without padding (size asserted below).
unsafe impl FromBytes for SockaddrVmcs {}
// SAFETY: As above.
unsafe impl AsBytes for SockaddrVmcs {}

// The layouts are ABI: they must match vmcs.h on every architecture.
const _: () = {
    assert!(size_of::<VmcsAddr>() == 8);
    assert!(size_of::<VmcsPeerInfo>() == 16);
    assert!(size_of::<VmcsInfo>() == 40 + 16 * MAX_PEERS);
    assert!(size_of::<VmcsConnect>() == 16);
    assert!(size_of::<VmcsAccept>() == 16);
    assert!(size_of::<VmcsOpts>() == 16);
    assert!(size_of::<VmcsNames>() == 16);
    assert!(size_of::<VmcsOpenDomain>() == 8);
    assert!(size_of::<SockaddrVmcs>() == 16);
    assert!(size_of::<VmcsBulkSetup>() == 16);
    assert!(size_of::<VmcsBulkDesc>() == 8);
    assert!(size_of::<VmcsBulkVec>() == 16);
    assert!(size_of::<VmcsPolicyRule>() == 16);
    assert!(size_of::<VmcsPolicyGet>() == 40);
    assert!(size_of::<VmcsKey>() == 40);
    assert!(size_of::<VmcsCryptoInfo>() == 48);
};

// Field offsets, as the C compiler lays out the structs of vmcs.h (every field naturally
// aligned, no padding): a reordered or retyped field fails the build, not the ABI.
macro_rules! offsets {
    ($($ty:ty { $($field:ident: $off:expr),* $(,)? })*) => {
        const _: () = {$($(
            assert!(core::mem::offset_of!($ty, $field) == $off);
        )*)*};
    };
}

offsets! {
    VmcsAddr { cid: 0, port: 4 }
    VmcsPeerInfo { id: 0, state: 4, generation: 8, heartbeat_age_ms: 12 }
    VmcsInfo {
        abi_version: 0,
        domain: 4,
        local_cid: 8,
        transport: 12,
        region_size: 16,
        max_peers: 24,
        ring_size: 28,
        max_msg_size: 32,
        npeers: 36,
        peers: 40,
    }
    VmcsConnect { addr: 0, timeout_ms: 8, flags: 12 }
    VmcsAccept { flags: 0, reserved: 4, peer: 8 }
    VmcsOpts { mask: 0, nonblock: 4, rcvbuf: 8, reserved: 12 }
    VmcsNames { local: 0, remote: 8 }
    VmcsOpenDomain { domain: 0, flags: 4 }
    VmcsBulkSetup { size: 0, timeout_ms: 4, tx_size: 8, rx_size: 12 }
    VmcsBulkDesc { off: 0, len: 4 }
    VmcsBulkVec { descs: 0, count: 8, flags: 12 }
    VmcsPolicyRule { list: 0, cid: 4, port: 8, flags: 12 }
    VmcsPolicyGet { rules: 0, count: 8, flags: 12, denied_in: 16, denied_out: 24, denied_bind: 32 }
    VmcsKey { flags: 0, len: 4, key: 8 }
    VmcsCryptoInfo {
        policy: 0,
        key_installed: 4,
        handshakes: 8,
        auth_failed: 16,
        peer_refused: 24,
        policy_refused: 32,
        bad_frames: 40,
    }
    SockaddrVmcs { family: 0, reserved1: 2, port: 4, cid: 8, flags: 12, zero: 13 }
}
