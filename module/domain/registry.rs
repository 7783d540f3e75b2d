// SPDX-License-Identifier: GPL-2.0

//! The registry of bound domains (probe order, lowest free index), the debugfs root and the
//! sysfs directories (`/sys/kernel/vmcs/vmcs<N>/`, module/domain/entry.rs).

use super::Domain;
use crate::glue::sysfs::Kobj;
use kernel::{debugfs::Dir, prelude::*, sync::Arc};

/// `/sys/kernel/vmcs/` (made with the first domain) and each domain's directory, by index.
struct SysfsDirs {
    root: Option<Kobj>,
    domains: KVec<(u32, Kobj)>,
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

kernel::sync::global_lock! {
    // SAFETY: Initialised in module init, by `init_registry`, before the PCI driver is
    // registered.
    unsafe(uninit) static SYSFS: Mutex<SysfsDirs> = SysfsDirs {
        root: None,
        domains: KVec::new(),
    };
}

/// Initialises the domain registry. Called once, first thing in module init.
pub(crate) fn init_registry() {
    // SAFETY: Called exactly once, from module init, before anything else uses `DOMAINS`.
    unsafe { DOMAINS.init() };
    // SAFETY: Called exactly once, from module init, before anything else uses `DEBUGFS`.
    unsafe { DEBUGFS.init() };
    // SAFETY: Called exactly once, from module init, before anything else uses `SYSFS`.
    unsafe { SYSFS.init() };
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

/// Removes `/sys/kernel/vmcs/` when dropped (module exit, after every domain is gone).
pub(crate) struct SysfsRoot;

impl Drop for SysfsRoot {
    fn drop(&mut self) {
        let mut dirs = SYSFS.lock();
        let root = dirs.root.take();
        let domains = core::mem::take(&mut dirs.domains);
        drop(dirs);
        drop(domains);
        drop(root);
    }
}

/// Makes `/sys/kernel/vmcs/vmcs<index>/`. A domain without it still works: only the sysfs
/// attributes are missing (logged).
fn sysfs_add(index: u32) {
    let mut dirs = SYSFS.lock();
    if dirs.root.is_none() {
        match Kobj::root() {
            Ok(root) => dirs.root = Some(root),
            Err(e) => {
                pr_warn!("vmcs{}: no /sys/kernel/vmcs: {:?}\n", index, e);
                return;
            }
        }
    }
    let made = match &dirs.root {
        Some(root) => root.domain(index),
        None => Err(ENOENT),
    };
    let added = made.and_then(|k| {
        dirs.domains
            .push((index, k), GFP_KERNEL)
            .map_err(Error::from)
    });
    if let Err(e) = added {
        pr_warn!("vmcs{}: no sysfs directory: {:?}\n", index, e);
    }
}

/// Removes `/sys/kernel/vmcs/vmcs<index>/`, waiting for its running show and store calls
/// (which take the registry's lock: none is held here).
fn sysfs_remove(index: u32) {
    let dir = {
        let mut dirs = SYSFS.lock();
        let pos = dirs.domains.iter().position(|(i, _)| *i == index);
        pos.and_then(|p| dirs.domains.remove(p).ok())
    };
    drop(dir);
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
    drop(domains);
    sysfs_add(index);
    Ok(domain)
}

/// Removes a domain from the registry and revokes its region: files that still hold the
/// domain get `ENODEV` from then on.
pub(crate) fn unregister(domain: &Arc<Domain>) {
    // First, so that the index is never reused while its directory is still there.
    sysfs_remove(domain.index);
    {
        let mut domains = DOMAINS.lock();
        domains.retain(|d| !Arc::ptr_eq(d, domain));
        // A static is never dropped, not even at rmmod: give the buffer back once the last
        // domain is gone (kmemleak found it, one per load, on the sanitizer kernel).
        if domains.is_empty() {
            *domains = KVec::new();
        }
    }
    domain.revoke();
    // An ivshmem domain went: the vsock domain's new streams no longer state it.
    super::route::refresh_ident();
}

/// The lowest-numbered domain for which `pred` holds.
pub(crate) fn lowest(pred: impl Fn(&Domain) -> bool) -> Option<Arc<Domain>> {
    DOMAINS
        .lock()
        .iter()
        .filter(|d| pred(d))
        .min_by_key(|d| d.index)
        .cloned()
}

/// Returns the domain with index `index` (`VMCS_IOC_OPEN_DOMAIN`).
pub(crate) fn by_index(index: u32) -> Option<Arc<Domain>> {
    DOMAINS.lock().iter().find(|d| d.index == index).cloned()
}

/// Returns the domain with the lowest index, the default for a new file.
pub(crate) fn default_domain() -> Option<Arc<Domain>> {
    DOMAINS.lock().iter().min_by_key(|d| d.index).cloned()
}
