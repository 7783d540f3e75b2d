// SPDX-License-Identifier: GPL-2.0

//! Domains: one per bound ivshmem device.
//!
//! A domain is the set of guests that share one ivshmem region. Each bound device registers
//! its domain here on probe and removes it on unbind; interfaces look domains up by index.

use crate::{conn::ConnTable, glue::SharedRegion, transport::ivshmem::Link};
use kernel::{
    debugfs::Dir,
    impl_has_delayed_work,
    prelude::*,
    revocable::Revocable,
    sync::Arc,
    workqueue::{DelayedWork, WorkItem},
};

/// Work item id of a domain's receive work (drains the rings; MSI-X or the plain poll).
pub(crate) const RX_WORK: u64 = 1;
/// Work item id of a domain's tick (heartbeat, peer liveness, drain).
pub(crate) const TICK_WORK: u64 = 2;

/// Which QEMU ivshmem variant a device is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum IvshmemVariant {
    /// `ivshmem-plain`: shared memory only, no interrupts, no server-assigned id.
    Plain,
    /// `ivshmem-doorbell`: MSI-X vectors, the doorbell register and an IVPosition id.
    Doorbell,
}

impl IvshmemVariant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            IvshmemVariant::Plain => "ivshmem-plain",
            IvshmemVariant::Doorbell => "ivshmem-doorbell",
        }
    }
}

/// One bound ivshmem device and its shared region.
#[pin_data]
pub(crate) struct Domain {
    /// Small integer naming the domain inside this guest, in probe order.
    pub(crate) index: u32,
    pub(crate) variant: IvshmemVariant,
    /// The peer id QEMU's server gave this guest (doorbell devices only).
    pub(crate) ivposition: Option<u32>,
    /// Size of the shared region in bytes.
    pub(crate) size: usize,
    /// The mapped region. Revoked when the device unbinds; users then get `ENODEV`. Shared
    /// with the transport (`link`), which holds its own reference.
    pub(crate) region: Arc<Revocable<SharedRegion>>,
    /// The transport: membership, rings, doorbells.
    #[pin]
    pub(crate) link: Link,
    /// Ports and connections.
    #[pin]
    pub(crate) core: ConnTable,
    /// Drains the rings: queued by the MSI-X handler (doorbell) or re-armed as an adaptive
    /// poll (plain).
    #[pin]
    pub(crate) rx_work: DelayedWork<Domain, RX_WORK>,
    /// Heartbeat, liveness sampling and a drain, every `hb_period_ms`.
    #[pin]
    pub(crate) tick_work: DelayedWork<Domain, TICK_WORK>,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self, RX_WORK> for Domain { self.rx_work }
    impl HasDelayedWork<Self, TICK_WORK> for Domain { self.tick_work }
}

impl WorkItem<RX_WORK> for Domain {
    type Pointer = Arc<Domain>;

    fn run(this: Arc<Domain>) {
        let (more, activity) = this.link.poll_rx(&this.core);
        if let Some(delay) = this.link.rx_rearm_delay(more, activity) {
            this.link.queue_rx(delay);
        }
    }
}

impl WorkItem<TICK_WORK> for Domain {
    type Pointer = Arc<Domain>;

    fn run(this: Arc<Domain>) {
        this.link.tick(&this.core);
        this.link.queue_tick(this.link.tick_period());
    }
}

kernel::sync::global_lock! {
    // SAFETY: Initialised in module init, by `init_registry`, before the PCI driver and the
    // device node are registered.
    unsafe(uninit) static DOMAINS: Mutex<KVec<Arc<Domain>>> = KVec::new();
}

kernel::sync::global_lock! {
    // SAFETY: Initialised in module init, by `init_registry`, before the PCI driver is
    // registered.
    unsafe(uninit) static DEBUGFS: Mutex<Option<Dir>> = None;
}

/// Initialises the domain registry. Called once, first thing in module init.
pub(crate) fn init_registry() {
    // SAFETY: Called exactly once, from module init, before anything else uses `DOMAINS`.
    unsafe { DOMAINS.init() };
    // SAFETY: Called exactly once, from module init, before anything else uses `DEBUGFS`.
    unsafe { DEBUGFS.init() };
}

/// The debugfs directory `vmcs/`, created on first use.
pub(crate) fn debugfs_root() -> Dir {
    let mut root = DEBUGFS.lock();
    root.get_or_insert_with(|| Dir::new(c"vmcs")).clone()
}

/// Removes the debugfs directory `vmcs/` when dropped (module exit, after the PCI driver and
/// with it every per-domain directory is gone).
pub(crate) struct DebugfsRoot;

impl Drop for DebugfsRoot {
    fn drop(&mut self) {
        let root = DEBUGFS.lock().take();
        drop(root);
    }
}

/// Creates a domain with the lowest free index and adds it to the registry.
///
/// The index is chosen and the domain added under one lock, so concurrent probes never
/// share an index.
pub(crate) fn register_new(make: impl FnOnce(u32) -> Result<Arc<Domain>>) -> Result<Arc<Domain>> {
    let mut domains = DOMAINS.lock();
    let mut index = 0;
    while domains.iter().any(|d| d.index == index) {
        index += 1;
    }
    let domain = make(index)?;
    domains.push(domain.clone(), GFP_KERNEL)?;
    Ok(domain)
}

/// Removes a domain from the registry and revokes its region: files that still hold the
/// domain get `ENODEV` from then on.
pub(crate) fn unregister(domain: &Arc<Domain>) {
    {
        let mut domains = DOMAINS.lock();
        domains.retain(|d| !Arc::ptr_eq(d, domain));
    }
    domain.region.revoke();
}

/// Returns the domain with index `index` (`VMCS_IOC_OPEN_DOMAIN`).
pub(crate) fn by_index(index: u32) -> Option<Arc<Domain>> {
    DOMAINS.lock().iter().find(|d| d.index == index).cloned()
}

/// Returns the domain with the lowest index, the default for a new file.
pub(crate) fn default_domain() -> Option<Arc<Domain>> {
    DOMAINS.lock().iter().min_by_key(|d| d.index).cloned()
}
