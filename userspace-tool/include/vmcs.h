/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * vmcs user API: /dev/vmcs ioctls and structures, and (later) AF_VMCS addressing.
 *
 * Mirrored by module/uapi.rs (kernel) and, for userspace, by the vmcs-sys crate
 * (userspace-tool/vmcs-sys), whose tests/c_header.rs compares every size, offset, constant
 * and ioctl number with this header. docs/uapi.md documents the semantics and errnos.
 */
#ifndef _UAPI_LINUX_VMCS_H
#define _UAPI_LINUX_VMCS_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Version of this ABI, reported by VMCS_IOC_GET_INFO. */
#define VMCS_ABI_VERSION 1

/* Addresses, as in AF_VSOCK: the cid is the peer id inside the domain. */
#define VMCS_CID_ANY ((__u32)-1)  /* bind: any; as VMADDR_CID_ANY */
/*
 * This guest: loopback, as VMADDR_CID_LOCAL. Not 1 as in vsock, because vmcs cids are
 * peer ids and 1 is a valid peer id (docs/uapi.md, "Differences from AF_VSOCK").
 */
#define VMCS_CID_LOCAL ((__u32)-2)
#define VMCS_PORT_ANY ((__u32)-1) /* bind: pick a free port >= 1024 */
/* Ports below this need CAP_NET_BIND_SERVICE to bind. */
#define VMCS_PRIVILEGED_PORTS 1024

/* Largest message one write() or seqpacket send carries. */
#define VMCS_MAX_MSG_SIZE (64 * 1024)
/* Peers a domain can hold (the protocol's limit). */
#define VMCS_MAX_PEERS 64

struct vmcs_addr {
	__u32 cid;  /* peer id, VMCS_CID_ANY or VMCS_CID_LOCAL */
	__u32 port; /* port, or VMCS_PORT_ANY */
};

/* Peer states as the region's peer table reports them. */
enum vmcs_peer_state {
	VMCS_PEER_ABSENT = 0,
	VMCS_PEER_JOINING = 1,
	VMCS_PEER_LIVE = 2,
	VMCS_PEER_LEAVING = 3,
};

struct vmcs_peer_info {
	__u32 id;
	__u32 state;      /* enum vmcs_peer_state */
	__u32 generation; /* bumped on every (re)join */
	__u32 heartbeat_age_ms; /* time since the peer's heartbeat last advanced; ~0 unknown */
};

/* Transports. */
#define VMCS_TRANSPORT_IVSHMEM_PLAIN 1
#define VMCS_TRANSPORT_IVSHMEM_DOORBELL 2
#define VMCS_TRANSPORT_VSOCK 3 /* the guest's AF_VSOCK; cids are vsock cids */

struct vmcs_info {
	__u32 abi_version;   /* out: VMCS_ABI_VERSION */
	__u32 domain;        /* out: domain index (ivshmem device) of this file */
	__u32 local_cid;     /* out: this guest's peer id in the domain */
	__u32 transport;     /* out: VMCS_TRANSPORT_* */
	__u64 region_size;   /* out: bytes */
	__u32 max_peers;     /* out: peers the region's layout holds */
	__u32 ring_size;     /* out: bytes of the first ring this guest opens (later peers may get smaller ones) */
	__u32 max_msg_size;  /* out: VMCS_MAX_MSG_SIZE */
	__u32 npeers;        /* out: valid entries in peers[] (every non-absent peer, self included) */
	struct vmcs_peer_info peers[VMCS_MAX_PEERS];
};

/* VMCS_IOC_CONNECT argument. */
struct vmcs_connect {
	struct vmcs_addr addr; /* in: the listener */
	__u32 timeout_ms;      /* in: 0 = the default (2000 ms, as vsock's connect timeout) */
	__u32 flags;           /* in: must be 0 */
};

/* VMCS_IOC_ACCEPT argument. */
struct vmcs_accept {
	__u32 flags;           /* in: O_NONBLOCK | O_CLOEXEC for the new fd */
	__u32 reserved;        /* in: must be 0 */
	struct vmcs_addr peer; /* out: the connecting side */
};

/* VMCS_IOC_SET_OPTS argument: fields selected by mask are applied. */
#define VMCS_OPT_NONBLOCK (1u << 0)
#define VMCS_OPT_RCVBUF (1u << 1)
struct vmcs_opts {
	__u32 mask;     /* in: VMCS_OPT_* to apply */
	__u32 nonblock; /* in: 0 or 1; same as fcntl O_NONBLOCK */
	__u32 rcvbuf;   /* in: receive buffer (credit) in bytes, 4 KiB .. 4 MiB */
	__u32 reserved; /* in: must be 0 */
};

/* VMCS_IOC_GET_NAMES argument. */
struct vmcs_names {
	struct vmcs_addr local;  /* out */
	struct vmcs_addr remote; /* out: zero unless connected */
};

/*
 * Bulk transfer (zero-copy through the shared region; docs/uapi.md "Bulk transfer").
 * VMCS_IOC_BULK_SETUP argument.
 */
struct vmcs_bulk_setup {
	__u32 size;       /* in: bytes of our extent (rounded up to pages); ignored once set up */
	__u32 timeout_ms; /* in: wait for the peer's offer, 0 = 2000 ms */
	__u32 tx_size;    /* out: our extent: mmap offset 0, read/write */
	__u32 rx_size;    /* out: the peer's extent: mmap offset tx_size, read-only */
};

/* VMCS_IOC_BULK_SEND (in) and VMCS_IOC_BULK_RECV (out): a range of the sender's extent. */
struct vmcs_bulk_desc {
	__u32 off; /* byte offset in the sender's extent */
	__u32 len; /* bytes, > 0; BULK_RECV: 0 at end of file */
};

/*
 * VMCS_IOC_BULK_SENDV, _RECVV, _RELEASEV: many ranges in one call. The ioctl returns how
 * many it did (>= 1; RECVV: 0 at end of file), or fails with nothing done.
 */
#define VMCS_BULK_MAX_BATCH 64
struct vmcs_bulk_vec {
	__u64 descs; /* in: user pointer to struct vmcs_bulk_desc[count] (RECVV writes them) */
	__u32 count; /* in: 1 .. VMCS_BULK_MAX_BATCH */
	__u32 flags; /* in: 0 */
};

/* VMCS_IOC_OPEN_DOMAIN argument: a new, unbound endpoint on another domain. */
struct vmcs_open_domain {
	__u32 domain; /* in: domain index (VMCS_IOC_GET_INFO's domain; /sys/kernel/debug/vmcs/vmcsN) */
	__u32 flags;  /* in: O_NONBLOCK | O_CLOEXEC for the new fd */
};

#define VMCS_IOC_MAGIC 0xB7
#define VMCS_IOC_GET_INFO _IOR(VMCS_IOC_MAGIC, 0x01, struct vmcs_info)
#define VMCS_IOC_BIND _IOWR(VMCS_IOC_MAGIC, 0x02, struct vmcs_addr)
#define VMCS_IOC_CONNECT _IOW(VMCS_IOC_MAGIC, 0x03, struct vmcs_connect)
#define VMCS_IOC_LISTEN _IOW(VMCS_IOC_MAGIC, 0x04, __u32)
#define VMCS_IOC_ACCEPT _IOWR(VMCS_IOC_MAGIC, 0x05, struct vmcs_accept)
#define VMCS_IOC_SET_OPTS _IOW(VMCS_IOC_MAGIC, 0x06, struct vmcs_opts)
#define VMCS_IOC_GET_NAMES _IOR(VMCS_IOC_MAGIC, 0x07, struct vmcs_names)
#define VMCS_IOC_SHUTDOWN _IOW(VMCS_IOC_MAGIC, 0x08, __u32) /* SHUT_RD, SHUT_WR, SHUT_RDWR */
#define VMCS_IOC_BULK_SETUP _IOWR(VMCS_IOC_MAGIC, 0x10, struct vmcs_bulk_setup)
#define VMCS_IOC_BULK_SEND _IOW(VMCS_IOC_MAGIC, 0x11, struct vmcs_bulk_desc)
#define VMCS_IOC_BULK_RECV _IOR(VMCS_IOC_MAGIC, 0x12, struct vmcs_bulk_desc)
#define VMCS_IOC_BULK_RELEASE _IOW(VMCS_IOC_MAGIC, 0x13, __u32) /* count, oldest first */
#define VMCS_IOC_BULK_WAIT _IOW(VMCS_IOC_MAGIC, 0x14, struct vmcs_bulk_desc)
#define VMCS_IOC_BULK_SENDV _IOW(VMCS_IOC_MAGIC, 0x15, struct vmcs_bulk_vec)
#define VMCS_IOC_BULK_RECVV _IOW(VMCS_IOC_MAGIC, 0x16, struct vmcs_bulk_vec)
#define VMCS_IOC_BULK_RELEASEV _IOW(VMCS_IOC_MAGIC, 0x17, struct vmcs_bulk_vec)
/* Returns a new fd: an endpoint on domain `domain` (ENODEV if there is none). */
#define VMCS_IOC_OPEN_DOMAIN _IOW(VMCS_IOC_MAGIC, 0x09, struct vmcs_open_domain)
/*
 * Busy polling (as SO_BUSY_POLL): blocking read, accept and connect poll the rings for up
 * to this many microseconds before they sleep; 0 = never. Values above
 * VMCS_MAX_BUSY_POLL_US are clamped. A new file starts with the module parameter
 * busy_poll_us; an accepted one inherits the listener's.
 */
#define VMCS_MAX_BUSY_POLL_US 100000
#define VMCS_IOC_SET_BUSY_POLL _IOW(VMCS_IOC_MAGIC, 0x20, __u32)
#define VMCS_IOC_GET_BUSY_POLL _IOR(VMCS_IOC_MAGIC, 0x21, __u32)

/*
 * Encryption (docs/security.md "Encryption"). Policies: VMCS_ENCRYPT_OFF (a socket's or
 * file's "the domain's default"), VMCS_ENCRYPT_ALLOW (encrypt when both sides hold the
 * domain's pre-shared key and the peer speaks the handshake, plaintext otherwise),
 * VMCS_ENCRYPT_REQUIRE (encrypt or refuse: connect fails with EACCES). A connection uses
 * the stricter of its domain's and its socket's policy. A wrong key fails connect with
 * EACCES.
 */
#define VMCS_ENCRYPT_OFF 0
#define VMCS_ENCRYPT_ALLOW 1
#define VMCS_ENCRYPT_REQUIRE 2
#define VMCS_KEY_LEN 32

/* The domain's pre-shared key (VMCS_IOC_SET_KEY; CAP_NET_ADMIN; never readable back). */
struct vmcs_key {
	__u32 flags;            /* 0 */
	__u32 len;              /* VMCS_KEY_LEN */
	__u8 key[VMCS_KEY_LEN];
};

/* VMCS_IOC_GET_CRYPTO: the domain's policy, whether a key is installed, the counters. */
struct vmcs_crypto_info {
	__u32 policy;           /* VMCS_ENCRYPT_* */
	__u32 key_installed;    /* 0 or 1 */
	__u64 handshakes;       /* encrypted connections set up */
	__u64 auth_failed;      /* handshakes whose peer tag did not verify (wrong key) */
	__u64 peer_refused;     /* connects the peer refused for its key or policy */
	__u64 policy_refused;   /* connections this side refused by policy */
	__u64 bad_frames;       /* encrypted frames that failed verification (reset) */
};

/* Install (replace) or remove the key of the file's domain; CAP_NET_ADMIN (EPERM). */
#define VMCS_IOC_SET_KEY _IOW(VMCS_IOC_MAGIC, 0x40, struct vmcs_key)
#define VMCS_IOC_CLEAR_KEY _IOW(VMCS_IOC_MAGIC, 0x41, __u32) /* 0 */
/* The domain's policy, VMCS_ENCRYPT_*; CAP_NET_ADMIN. */
#define VMCS_IOC_SET_DOMAIN_CRYPTO _IOW(VMCS_IOC_MAGIC, 0x42, __u32)
#define VMCS_IOC_GET_CRYPTO _IOR(VMCS_IOC_MAGIC, 0x43, struct vmcs_crypto_info)
/* The file's own policy, VMCS_ENCRYPT_* (any user; it can only make it stricter). */
#define VMCS_IOC_SET_ENCRYPT _IOW(VMCS_IOC_MAGIC, 0x44, __u32)
/* The file's policy, or-ed with VMCS_ENCRYPTED when its connection is encrypted. */
#define VMCS_IOC_GET_ENCRYPT _IOR(VMCS_IOC_MAGIC, 0x45, __u32)
#define VMCS_ENCRYPTED 0x100

/*
 * AF_VMCS: setsockopt/getsockopt level VMCS_SOL_VMCS. VMCS_SO_ENCRYPT (int, VMCS_ENCRYPT_*)
 * as VMCS_IOC_SET_ENCRYPT; VMCS_SO_ENCRYPTED (int, read only): 1 if the connection is
 * encrypted.
 */
#define VMCS_SOL_VMCS 0x766d
#define VMCS_SO_ENCRYPT 1
#define VMCS_SO_ENCRYPTED 2

/*
 * Access control (docs/security.md "Access control"), per domain (the file's). Three
 * allow-lists; the default of each is one rule any:any (everything allowed). A rule's cid
 * may be VMCS_CID_ANY and its port VMCS_PORT_ANY. Loopback is never filtered. Changing the
 * policy needs CAP_NET_ADMIN (EPERM); anybody may read it. Denials: an inbound connect is
 * answered as if nothing listened (the peer sees ECONNREFUSED on /dev/vmcs, ECONNRESET on
 * AF_VMCS, as vsock); an outbound connect fails with EPERM, an explicit bind with EACCES.
 */
#define VMCS_POLICY_ALL 0         /* CLEAR, RESET: every list */
#define VMCS_POLICY_CONNECT_IN 1  /* (peer, local port) that may connect to this guest */
#define VMCS_POLICY_CONNECT_OUT 2 /* (peer, remote port) this guest may connect to */
#define VMCS_POLICY_BIND 3        /* local ports that may be bound (cid: VMCS_CID_ANY) */
#define VMCS_POLICY_MAX_RULES 128 /* per domain, all lists together (ENOSPC beyond) */

struct vmcs_policy_rule {
	__u32 list;  /* VMCS_POLICY_CONNECT_IN, _CONNECT_OUT or _BIND */
	__u32 cid;   /* peer id or VMCS_CID_ANY (not VMCS_CID_LOCAL) */
	__u32 port;  /* port or VMCS_PORT_ANY */
	__u32 flags; /* must be 0 */
};

/* VMCS_IOC_POLICY_GET argument; the ioctl returns how many rules it copied. */
struct vmcs_policy_get {
	__u64 rules;       /* in: user pointer to struct vmcs_policy_rule[count] */
	__u32 count;       /* in: room in rules; out: rules in the table */
	__u32 flags;       /* in: must be 0 */
	__u64 denied_in;   /* out: inbound connects refused by the policy */
	__u64 denied_out;  /* out: outbound connects denied */
	__u64 denied_bind; /* out: binds denied */
};

/* ADD: EEXIST if present, ENOSPC when full. DEL: the equal rule, ENOENT if none. */
#define VMCS_IOC_POLICY_ADD _IOW(VMCS_IOC_MAGIC, 0x30, struct vmcs_policy_rule)
#define VMCS_IOC_POLICY_DEL _IOW(VMCS_IOC_MAGIC, 0x31, struct vmcs_policy_rule)
/* CLEAR empties the list(s) (deny all); RESET restores the default (allow all). */
#define VMCS_IOC_POLICY_CLEAR _IOW(VMCS_IOC_MAGIC, 0x32, __u32)
#define VMCS_IOC_POLICY_RESET _IOW(VMCS_IOC_MAGIC, 0x33, __u32)
#define VMCS_IOC_POLICY_GET _IOWR(VMCS_IOC_MAGIC, 0x34, struct vmcs_policy_get)

/*
 * AF_VMCS sockets (docs/sockets.md). Linux has no free address-family number for an
 * out-of-tree module: the family is the module parameter `af` (0 = no socket family),
 * VMCS_AF_DEFAULT unless changed; read the live value from /sys/module/vmcs/parameters/af.
 * 22 is AF_SNA, which no in-tree protocol registers.
 */
#define VMCS_AF_DEFAULT 22

/* Layout-identical to AF_VSOCK's struct sockaddr_vm. */
struct sockaddr_vmcs {
	__u16 svm_family;    /* the AF_VMCS number */
	__u16 svm_reserved1;
	__u32 svm_port;      /* port, or VMCS_PORT_ANY */
	__u32 svm_cid;       /* peer id, VMCS_CID_ANY or VMCS_CID_LOCAL */
	__u8 svm_flags;
	__u8 svm_zero[3];
};

#endif /* _UAPI_LINUX_VMCS_H */
