// SPDX-License-Identifier: GPL-2.0

//! `#[repr(C)]` mirrors of `userspace-tool/include/vmcs.h` (the source of truth), the ioctl
//! numbers and the constants, with the C names.
//!
//! Self-contained: this file uses nothing but `core`, so it can be compiled as a module of
//! another crate through `#[path]`. Field names are the C names, so the layout test
//! (`tests/c_header.rs`) can compare each `offset_of!` with the C compiler's `offsetof` and
//! each `size_of` with its `sizeof`.

#![allow(non_camel_case_types)]

use core::mem::size_of;

/// `sa_family_t` (`unsigned short` on Linux).
pub type sa_family_t = u16;

/// `VMCS_ABI_VERSION`.
pub const VMCS_ABI_VERSION: u32 = 1;
/// `VMCS_CID_ANY`: bind to any cid (as `VMADDR_CID_ANY`).
pub const VMCS_CID_ANY: u32 = u32::MAX;
/// `VMCS_CID_LOCAL`: this guest, loopback (as `VMADDR_CID_LOCAL`).
pub const VMCS_CID_LOCAL: u32 = u32::MAX - 1;
/// `VMCS_PORT_ANY`: bind picks a free port >= 1024.
pub const VMCS_PORT_ANY: u32 = u32::MAX;
/// `VMCS_PRIVILEGED_PORTS`: ports below need `CAP_NET_BIND_SERVICE`.
pub const VMCS_PRIVILEGED_PORTS: u32 = 1024;
/// `VMCS_MAX_MSG_SIZE`: the largest message one write carries.
pub const VMCS_MAX_MSG_SIZE: u32 = 64 * 1024;
/// `VMCS_MAX_PEERS`.
pub const VMCS_MAX_PEERS: usize = 64;

/// `VMCS_PEER_ABSENT`.
pub const VMCS_PEER_ABSENT: u32 = 0;
/// `VMCS_PEER_JOINING`.
pub const VMCS_PEER_JOINING: u32 = 1;
/// `VMCS_PEER_LIVE`.
pub const VMCS_PEER_LIVE: u32 = 2;
/// `VMCS_PEER_LEAVING`.
pub const VMCS_PEER_LEAVING: u32 = 3;

/// `VMCS_TRANSPORT_IVSHMEM_PLAIN`.
pub const VMCS_TRANSPORT_IVSHMEM_PLAIN: u32 = 1;
/// `VMCS_TRANSPORT_IVSHMEM_DOORBELL`.
pub const VMCS_TRANSPORT_IVSHMEM_DOORBELL: u32 = 2;
/// `VMCS_TRANSPORT_VSOCK`.
pub const VMCS_TRANSPORT_VSOCK: u32 = 3;

/// `VMCS_OPT_NONBLOCK`.
pub const VMCS_OPT_NONBLOCK: u32 = 1 << 0;
/// `VMCS_OPT_RCVBUF`.
pub const VMCS_OPT_RCVBUF: u32 = 1 << 1;

/// `struct vmcs_addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_addr {
    pub cid: u32,
    pub port: u32,
}

/// `struct vmcs_peer_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_peer_info {
    pub id: u32,
    /// `enum vmcs_peer_state`.
    pub state: u32,
    pub generation: u32,
    /// `u32::MAX`: unknown.
    pub heartbeat_age_ms: u32,
}

/// `struct vmcs_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vmcs_info {
    pub abi_version: u32,
    pub domain: u32,
    pub local_cid: u32,
    pub transport: u32,
    pub region_size: u64,
    pub max_peers: u32,
    pub ring_size: u32,
    pub max_msg_size: u32,
    pub npeers: u32,
    pub peers: [vmcs_peer_info; VMCS_MAX_PEERS],
}

impl Default for vmcs_info {
    fn default() -> Self {
        Self {
            abi_version: 0,
            domain: 0,
            local_cid: 0,
            transport: 0,
            region_size: 0,
            max_peers: 0,
            ring_size: 0,
            max_msg_size: 0,
            npeers: 0,
            peers: [vmcs_peer_info::default(); VMCS_MAX_PEERS],
        }
    }
}

/// `struct vmcs_connect`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_connect {
    pub addr: vmcs_addr,
    /// 0: the default (2000 ms).
    pub timeout_ms: u32,
    pub flags: u32,
}

/// `struct vmcs_accept`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_accept {
    /// `O_NONBLOCK | O_CLOEXEC` for the new fd.
    pub flags: u32,
    pub reserved: u32,
    pub peer: vmcs_addr,
}

/// `struct vmcs_opts`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_opts {
    pub mask: u32,
    pub nonblock: u32,
    pub rcvbuf: u32,
    pub reserved: u32,
}

/// `struct vmcs_names`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_names {
    pub local: vmcs_addr,
    pub remote: vmcs_addr,
}

/// `struct vmcs_bulk_setup` (`VMCS_IOC_BULK_SETUP`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_bulk_setup {
    /// In: bytes of our extent (rounded up to pages).
    pub size: u32,
    /// In: wait for the peer's offer, 0 = 2000 ms.
    pub timeout_ms: u32,
    /// Out: our extent (mmap offset 0, read/write).
    pub tx_size: u32,
    /// Out: the peer's extent (mmap offset `tx_size`, read-only).
    pub rx_size: u32,
}

/// `struct vmcs_bulk_desc` (`VMCS_IOC_BULK_SEND`, `VMCS_IOC_BULK_RECV`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_bulk_desc {
    /// Byte offset in the sender's extent.
    pub off: u32,
    /// Bytes; `VMCS_IOC_BULK_RECV` gives 0 at end of file.
    pub len: u32,
}

/// `VMCS_BULK_MAX_BATCH`: the most descriptors one batched bulk ioctl takes.
pub const VMCS_BULK_MAX_BATCH: u32 = 64;

/// `struct vmcs_bulk_vec` (`VMCS_IOC_BULK_SENDV`, `_RECVV`, `_RELEASEV`): many ranges in
/// one call; the ioctl returns how many it did, or fails with nothing done.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_bulk_vec {
    /// User pointer to `count` [`vmcs_bulk_desc`]s (`VMCS_IOC_BULK_RECVV` writes them).
    pub descs: u64,
    /// 1 ..= [`VMCS_BULK_MAX_BATCH`].
    pub count: u32,
    /// 0.
    pub flags: u32,
}

/// `struct vmcs_open_domain` (`VMCS_IOC_OPEN_DOMAIN`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_open_domain {
    pub domain: u32,
    pub flags: u32,
}

/// `VMCS_AF_DEFAULT`: the AF_VMCS family number unless the module parameter `af` changes it
/// (the live value is in `/sys/module/vmcs/parameters/af`; 0 there means no socket family).
pub const VMCS_AF_DEFAULT: u32 = 22;

/// `struct sockaddr_vmcs`: layout-identical to AF_VSOCK's `struct sockaddr_vm`, with the
/// AF_VMCS family number (read from `/sys/module/vmcs/parameters/af`) in `svm_family`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct sockaddr_vmcs {
    pub svm_family: sa_family_t,
    pub svm_reserved1: u16,
    pub svm_port: u32,
    pub svm_cid: u32,
    pub svm_flags: u8,
    pub svm_zero: [u8; 3],
}

/// `VMCS_ENCRYPT_OFF`: a socket's or file's "the domain's default"; a domain's "never".
pub const VMCS_ENCRYPT_OFF: u32 = 0;
/// `VMCS_ENCRYPT_ALLOW`: encrypt when both sides hold the key and the peer can.
pub const VMCS_ENCRYPT_ALLOW: u32 = 1;
/// `VMCS_ENCRYPT_REQUIRE`: encrypt or refuse (`EACCES`).
pub const VMCS_ENCRYPT_REQUIRE: u32 = 2;
/// `VMCS_KEY_LEN`: bytes of a pre-shared key.
pub const VMCS_KEY_LEN: usize = 32;
/// `VMCS_ENCRYPTED`: or-ed into `VMCS_IOC_GET_ENCRYPT`'s value when encrypted.
pub const VMCS_ENCRYPTED: u32 = 0x100;
/// `VMCS_SOL_VMCS`: the AF_VMCS option level of `VMCS_SO_*`.
pub const VMCS_SOL_VMCS: i32 = 0x766d;
/// `VMCS_SO_ENCRYPT`: int, `VMCS_ENCRYPT_*`.
pub const VMCS_SO_ENCRYPT: i32 = 1;
/// `VMCS_SO_ENCRYPTED`: int, read only: 1 if the connection is encrypted.
pub const VMCS_SO_ENCRYPTED: i32 = 2;

/// `struct vmcs_key` (`VMCS_IOC_SET_KEY`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_key {
    pub flags: u32,
    pub len: u32,
    pub key: [u8; VMCS_KEY_LEN],
}

/// `struct vmcs_crypto_info` (`VMCS_IOC_GET_CRYPTO`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_crypto_info {
    pub policy: u32,
    pub key_installed: u32,
    pub handshakes: u64,
    pub auth_failed: u64,
    pub peer_refused: u64,
    pub policy_refused: u64,
    pub bad_frames: u64,
}

// The standard Linux _IOC encoding (asm-generic/ioctl.h, used by x86, arm64, riscv).
const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
/// `_IOC_WRITE`: userspace writes, the kernel reads.
pub const IOC_WRITE: u32 = 1;
/// `_IOC_READ`: the kernel writes, userspace reads.
pub const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)`.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    assert!(size < (1 << IOC_SIZESHIFT));
    (dir << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | (ty << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
}
/// `_IOR(type, nr, T)`.
pub const fn ior<T>(ty: u32, nr: u32) -> u32 {
    ioc(IOC_READ, ty, nr, size_of::<T>())
}
/// `_IOW(type, nr, T)`.
pub const fn iow<T>(ty: u32, nr: u32) -> u32 {
    ioc(IOC_WRITE, ty, nr, size_of::<T>())
}
/// `_IOWR(type, nr, T)`.
pub const fn iowr<T>(ty: u32, nr: u32) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size_of::<T>())
}

/// `VMCS_IOC_MAGIC`.
pub const VMCS_IOC_MAGIC: u32 = 0xB7;
/// `VMCS_IOC_GET_INFO`: `_IOR(0xB7, 0x01, struct vmcs_info)`.
pub const VMCS_IOC_GET_INFO: u32 = ior::<vmcs_info>(VMCS_IOC_MAGIC, 0x01);
/// `VMCS_IOC_BIND`: `_IOWR(0xB7, 0x02, struct vmcs_addr)`.
pub const VMCS_IOC_BIND: u32 = iowr::<vmcs_addr>(VMCS_IOC_MAGIC, 0x02);
/// `VMCS_IOC_CONNECT`: `_IOW(0xB7, 0x03, struct vmcs_connect)`.
pub const VMCS_IOC_CONNECT: u32 = iow::<vmcs_connect>(VMCS_IOC_MAGIC, 0x03);
/// `VMCS_IOC_LISTEN`: `_IOW(0xB7, 0x04, __u32)` (the backlog).
pub const VMCS_IOC_LISTEN: u32 = iow::<u32>(VMCS_IOC_MAGIC, 0x04);
/// `VMCS_IOC_ACCEPT`: `_IOWR(0xB7, 0x05, struct vmcs_accept)`.
pub const VMCS_IOC_ACCEPT: u32 = iowr::<vmcs_accept>(VMCS_IOC_MAGIC, 0x05);
/// `VMCS_IOC_SET_OPTS`: `_IOW(0xB7, 0x06, struct vmcs_opts)`.
pub const VMCS_IOC_SET_OPTS: u32 = iow::<vmcs_opts>(VMCS_IOC_MAGIC, 0x06);
/// `VMCS_IOC_GET_NAMES`: `_IOR(0xB7, 0x07, struct vmcs_names)`.
pub const VMCS_IOC_GET_NAMES: u32 = ior::<vmcs_names>(VMCS_IOC_MAGIC, 0x07);
/// `VMCS_IOC_SHUTDOWN`: `_IOW(0xB7, 0x08, __u32)` (`SHUT_RD`, `SHUT_WR`, `SHUT_RDWR`).
pub const VMCS_IOC_SHUTDOWN: u32 = iow::<u32>(VMCS_IOC_MAGIC, 0x08);
/// `VMCS_IOC_BULK_SETUP`: `_IOWR(0xB7, 0x10, struct vmcs_bulk_setup)`.
pub const VMCS_IOC_BULK_SETUP: u32 = iowr::<vmcs_bulk_setup>(VMCS_IOC_MAGIC, 0x10);
/// `VMCS_IOC_BULK_SEND`: `_IOW(0xB7, 0x11, struct vmcs_bulk_desc)`.
pub const VMCS_IOC_BULK_SEND: u32 = iow::<vmcs_bulk_desc>(VMCS_IOC_MAGIC, 0x11);
/// `VMCS_IOC_BULK_RECV`: `_IOR(0xB7, 0x12, struct vmcs_bulk_desc)`.
pub const VMCS_IOC_BULK_RECV: u32 = ior::<vmcs_bulk_desc>(VMCS_IOC_MAGIC, 0x12);
/// `VMCS_IOC_BULK_RELEASE`: `_IOW(0xB7, 0x13, __u32)` (how many ranges, oldest first).
pub const VMCS_IOC_BULK_RELEASE: u32 = iow::<u32>(VMCS_IOC_MAGIC, 0x13);
/// `VMCS_IOC_BULK_WAIT`: `_IOW(0xB7, 0x14, struct vmcs_bulk_desc)`.
pub const VMCS_IOC_BULK_WAIT: u32 = iow::<vmcs_bulk_desc>(VMCS_IOC_MAGIC, 0x14);
/// `VMCS_IOC_BULK_SENDV`: `_IOW(0xB7, 0x15, struct vmcs_bulk_vec)`; returns ranges lent.
pub const VMCS_IOC_BULK_SENDV: u32 = iow::<vmcs_bulk_vec>(VMCS_IOC_MAGIC, 0x15);
/// `VMCS_IOC_BULK_RECVV`: `_IOW(0xB7, 0x16, struct vmcs_bulk_vec)`; returns ranges
/// received (written to `descs`), 0 at end of file.
pub const VMCS_IOC_BULK_RECVV: u32 = iow::<vmcs_bulk_vec>(VMCS_IOC_MAGIC, 0x16);
/// `VMCS_IOC_BULK_RELEASEV`: `_IOW(0xB7, 0x17, struct vmcs_bulk_vec)`; returns ranges
/// released (each must be the oldest one held).
pub const VMCS_IOC_BULK_RELEASEV: u32 = iow::<vmcs_bulk_vec>(VMCS_IOC_MAGIC, 0x17);
/// `VMCS_IOC_OPEN_DOMAIN`: `_IOW(0xB7, 0x09, struct vmcs_open_domain)`; returns a new fd.
pub const VMCS_IOC_OPEN_DOMAIN: u32 = iow::<vmcs_open_domain>(VMCS_IOC_MAGIC, 0x09);
/// `VMCS_MAX_BUSY_POLL_US`: the largest busy-poll window, in microseconds.
pub const VMCS_MAX_BUSY_POLL_US: u32 = 100_000;
/// `VMCS_IOC_SET_BUSY_POLL`: `_IOW(0xB7, 0x20, __u32)`: the busy-poll window of blocking
/// read, accept and connect, in microseconds (0 = never; clamped).
pub const VMCS_IOC_SET_BUSY_POLL: u32 = iow::<u32>(VMCS_IOC_MAGIC, 0x20);
/// `VMCS_IOC_GET_BUSY_POLL`: `_IOR(0xB7, 0x21, __u32)`: the window in use.
pub const VMCS_IOC_GET_BUSY_POLL: u32 = ior::<u32>(VMCS_IOC_MAGIC, 0x21);
/// `VMCS_IOC_SET_KEY`: `_IOW(0xB7, 0x40, struct vmcs_key)`; `CAP_NET_ADMIN`.
pub const VMCS_IOC_SET_KEY: u32 = iow::<vmcs_key>(VMCS_IOC_MAGIC, 0x40);
/// `VMCS_IOC_CLEAR_KEY`: `_IOW(0xB7, 0x41, __u32)` (0); `CAP_NET_ADMIN`.
pub const VMCS_IOC_CLEAR_KEY: u32 = iow::<u32>(VMCS_IOC_MAGIC, 0x41);
/// `VMCS_IOC_SET_DOMAIN_CRYPTO`: `_IOW(0xB7, 0x42, __u32)`; `CAP_NET_ADMIN`.
pub const VMCS_IOC_SET_DOMAIN_CRYPTO: u32 = iow::<u32>(VMCS_IOC_MAGIC, 0x42);
/// `VMCS_IOC_GET_CRYPTO`: `_IOR(0xB7, 0x43, struct vmcs_crypto_info)`.
pub const VMCS_IOC_GET_CRYPTO: u32 = ior::<vmcs_crypto_info>(VMCS_IOC_MAGIC, 0x43);
/// `VMCS_IOC_SET_ENCRYPT`: `_IOW(0xB7, 0x44, __u32)`: the file's policy.
pub const VMCS_IOC_SET_ENCRYPT: u32 = iow::<u32>(VMCS_IOC_MAGIC, 0x44);
/// `VMCS_IOC_GET_ENCRYPT`: `_IOR(0xB7, 0x45, __u32)`: the file's policy | `VMCS_ENCRYPTED`.
pub const VMCS_IOC_GET_ENCRYPT: u32 = ior::<u32>(VMCS_IOC_MAGIC, 0x45);

/// `VMCS_POLICY_ALL`: every list (`VMCS_IOC_POLICY_CLEAR`, `_RESET`).
pub const VMCS_POLICY_ALL: u32 = 0;
/// `VMCS_POLICY_CONNECT_IN`: (peer, local port) pairs that may connect to this guest.
pub const VMCS_POLICY_CONNECT_IN: u32 = 1;
/// `VMCS_POLICY_CONNECT_OUT`: (peer, remote port) pairs this guest may connect to.
pub const VMCS_POLICY_CONNECT_OUT: u32 = 2;
/// `VMCS_POLICY_BIND`: local ports that may be bound.
pub const VMCS_POLICY_BIND: u32 = 3;
/// `VMCS_POLICY_MAX_RULES`: rules per domain, all lists together.
pub const VMCS_POLICY_MAX_RULES: u32 = 128;

/// `struct vmcs_policy_rule`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_policy_rule {
    /// `VMCS_POLICY_CONNECT_IN`, `_CONNECT_OUT` or `_BIND`.
    pub list: u32,
    /// Peer id or `VMCS_CID_ANY`.
    pub cid: u32,
    /// Port or `VMCS_PORT_ANY`.
    pub port: u32,
    /// 0.
    pub flags: u32,
}

/// `struct vmcs_policy_get` (`VMCS_IOC_POLICY_GET`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vmcs_policy_get {
    /// User pointer to `count` [`vmcs_policy_rule`]s.
    pub rules: u64,
    /// In: room in `rules`; out: rules in the table.
    pub count: u32,
    /// 0.
    pub flags: u32,
    pub denied_in: u64,
    pub denied_out: u64,
    pub denied_bind: u64,
}

/// `VMCS_IOC_POLICY_ADD`: `_IOW(0xB7, 0x30, struct vmcs_policy_rule)`.
pub const VMCS_IOC_POLICY_ADD: u32 = iow::<vmcs_policy_rule>(VMCS_IOC_MAGIC, 0x30);
/// `VMCS_IOC_POLICY_DEL`: `_IOW(0xB7, 0x31, struct vmcs_policy_rule)`.
pub const VMCS_IOC_POLICY_DEL: u32 = iow::<vmcs_policy_rule>(VMCS_IOC_MAGIC, 0x31);
/// `VMCS_IOC_POLICY_CLEAR`: `_IOW(0xB7, 0x32, __u32)` (a list or `VMCS_POLICY_ALL`).
pub const VMCS_IOC_POLICY_CLEAR: u32 = iow::<u32>(VMCS_IOC_MAGIC, 0x32);
/// `VMCS_IOC_POLICY_RESET`: `_IOW(0xB7, 0x33, __u32)` (a list or `VMCS_POLICY_ALL`).
pub const VMCS_IOC_POLICY_RESET: u32 = iow::<u32>(VMCS_IOC_MAGIC, 0x33);
/// `VMCS_IOC_POLICY_GET`: `_IOWR(0xB7, 0x34, struct vmcs_policy_get)`; returns the rules
/// copied.
pub const VMCS_IOC_POLICY_GET: u32 = iowr::<vmcs_policy_get>(VMCS_IOC_MAGIC, 0x34);

// Compile-time checks; tests/c_header.rs compares every size and offset with the C header
// (and `sockaddr_vmcs` with `<linux/vm_sockets.h>`'s `sockaddr_vm`).
const _: () = {
    assert!(size_of::<vmcs_addr>() == 8);
    assert!(size_of::<vmcs_peer_info>() == 16);
    assert!(size_of::<vmcs_info>() == 40 + 16 * VMCS_MAX_PEERS);
    assert!(size_of::<vmcs_connect>() == 16);
    assert!(size_of::<vmcs_accept>() == 16);
    assert!(size_of::<vmcs_opts>() == 16);
    assert!(size_of::<vmcs_names>() == 16);
    assert!(size_of::<vmcs_bulk_setup>() == 16);
    assert!(size_of::<vmcs_bulk_desc>() == 8);
    assert!(size_of::<vmcs_bulk_vec>() == 16);
    assert!(size_of::<sockaddr_vmcs>() == 16);
    assert!(size_of::<vmcs_key>() == 40);
    assert!(size_of::<vmcs_crypto_info>() == 48);
    assert!(size_of::<vmcs_policy_rule>() == 16);
    assert!(size_of::<vmcs_policy_get>() == 40);
};

impl sockaddr_vmcs {
    /// An address in `family` (the AF_VMCS number) for `cid:port`.
    pub const fn new(family: sa_family_t, cid: u32, port: u32) -> Self {
        Self {
            svm_family: family,
            svm_reserved1: 0,
            svm_port: port,
            svm_cid: cid,
            svm_flags: 0,
            svm_zero: [0; 3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_by_hand() {
        // _IOR(0xB7, 1, 1064 bytes) = 2 << 30 | 1064 << 16 | 0xB7 << 8 | 1
        assert_eq!(
            VMCS_IOC_GET_INFO,
            (2 << 30) | (1064 << 16) | (0xB7 << 8) | 1
        );
        assert_eq!(VMCS_IOC_BIND, (3 << 30) | (8 << 16) | (0xB7 << 8) | 2);
        assert_eq!(VMCS_IOC_LISTEN, (1 << 30) | (4 << 16) | (0xB7 << 8) | 4);
        assert_eq!(VMCS_IOC_SHUTDOWN, 0x4004_B708);
        assert_eq!(VMCS_IOC_BULK_SETUP, 0xC010_B710);
        assert_eq!(VMCS_IOC_BULK_SEND, 0x4008_B711);
        assert_eq!(VMCS_IOC_BULK_RECV, 0x8008_B712);
        assert_eq!(VMCS_IOC_BULK_RELEASE, 0x4004_B713);
        assert_eq!(VMCS_IOC_BULK_WAIT, 0x4008_B714);
        assert_eq!(VMCS_IOC_BULK_SENDV, 0x4010_B715);
        assert_eq!(VMCS_IOC_BULK_RECVV, 0x4010_B716);
        assert_eq!(VMCS_IOC_BULK_RELEASEV, 0x4010_B717);
    }
}
