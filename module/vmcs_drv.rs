// SPDX-License-Identifier: GPL-2.0

//! vmcs: fast VM-to-VM communication over QEMU's ivshmem shared memory.
//!
//! Layers (see docs/architecture.md):
//! - `pci`, the ivshmem PCI driver; each bound device is a `domain::Domain`.
//! - `domain`, the registry of bound devices and their shared regions.
//! - `chardev`, the `/dev/vmcs` character device.
//! - `proto`, the wire protocol and region layout, shared with the host crate in rust/.
//! - `ffi`, the one place with raw `bindings::` use and the C glue interface.

use kernel::prelude::*;

mod chardev;
mod conn;
mod domain;
mod glue;
mod net;
mod params;
mod pci;
mod proto;
mod socket;
mod transport;
mod uapi;

module! {
    type: VmcsModule,
    name: "vmcs",
    authors: ["vmcs developers"],
    description: "VM-to-VM communication over ivshmem shared memory",
    license: "GPL",
    params: {
        devmode: u32 {
            default: 0o660,
            description: "File mode of /dev/vmcs (default 0660)",
        },
        max_peers: u32 {
            default: 16,
            description: "Peer slots of a region this guest initialises, 2..64 (default 16)",
        },
        hb_period_ms: u32 {
            default: 200,
            description: "Heartbeat and peer sampling period in ms (default 200)",
        },
        hb_timeout_ms: u32 {
            default: 1500,
            description: "A peer whose heartbeat is stale this long is dead, ms (default 1500)",
        },
        bulk_percent: u32 {
            default: 25,
            description: "Percent of a region this guest initialises for the bulk area, 0..50 (default 25)",
        },
        rx_mem_max_kb: u32 {
            default: 32768,
            description: "Cap on receive-queue memory per domain in KiB, 256..4194304 (default 32768)",
        },
        poll_us: u32 {
            default: 100,
            description: "ivshmem-plain: receive poll interval while traffic moves, 20..10000 us (default 100)",
        },
        vsock: u32 {
            default: 0,
            description: "1: a domain over the guest's AF_VSOCK (virtio-vsock), peers named by vsock cid (default 0: off)",
        },
        vsock_port: u32 {
            default: 22093,
            description: "The vsock port of the vsock transport's streams (default 22093)",
        },
        busy_poll_us: u32 {
            default: 50,
            description: "Busy-poll window of blocking receive, accept and connect before sleeping, 0..100000 us (default 50; SO_BUSY_POLL, VMCS_IOC_SET_BUSY_POLL per socket and file)",
        },
        encrypt: u32 {
            default: 1,
            description: "Default encryption policy of each domain: 0 off, 1 allow (encrypt when both sides have the pre-shared key), 2 require (default 1; VMCS_IOC_SET_DOMAIN_CRYPTO per domain, VMCS_SO_ENCRYPT per socket)",
        },
    },
}

/// The module version, reported by `vmcs status`.
pub(crate) const VERSION: &str = "0.1.0";

#[pin_data]
struct VmcsModule {
    // Field order is drop order: the device node goes first, so no new file can reach a
    // domain while the PCI driver unbinds the devices.
    #[pin]
    _chrdev: glue::MiscRegistration,
    #[pin]
    _pci: kernel::driver::Registration<kernel::pci::Adapter<pci::IvshmemDriver>>,
    // After the PCI driver: its domain is numbered after the ivshmem devices present at
    // load, so their addressing is unchanged.
    _vsock: domain::VsockDomain,
    _debugfs: domain::DebugfsRoot,
    _sysfs: domain::SysfsRoot,
    // Last: dropped first, so no new socket reaches the core while the rest goes away (open
    // sockets pin the module, so there are none at unload).
    _socket: glue::SocketFamilyRegistration,
}

impl kernel::InPlaceModule for VmcsModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        domain::init_registry();
        let mode = *module_parameters::devmode.value() & 0o777;
        pr_info!("vmcs {} loading\n", VERSION);
        try_pin_init!(Self {
            _chrdev <- glue::MiscRegistration::register(c"vmcs", mode),
            _pci <- kernel::driver::Registration::new(c"vmcs", module),
            _vsock: domain::VsockDomain::new(params::vsock()),
            _debugfs: domain::DebugfsRoot,
            _sysfs: domain::SysfsRoot,
            _socket: glue::SocketFamilyRegistration::register(glue::af_param())?,
        })
    }
}
