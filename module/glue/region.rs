// SPDX-License-Identifier: GPL-2.0

//! The shared region: BAR2 of an ivshmem device, requested and mapped write-back, and the
//! protocol's view of it ([`Shm`]) on the kernel's atomics and barriers.

use super::UserIter;
use crate::proto::shm::Shm;
use core::mem::MaybeUninit;
use kernel::ffi::{c_int, c_ulong};
use kernel::{
    bindings,
    error::to_result,
    prelude::*,
    sync::{
        atomic::{
            atomic_load, atomic_store, cmpxchg as atomic_cmpxchg,
            ordering::{Acquire, Full, Relaxed, Release},
        },
        barrier::smp_mb,
    },
};

/// A write-back cacheable mapping of a PCI memory BAR, with the BAR's region requested.
///
/// ivshmem's BAR2 is ordinary host RAM shared between guests, so it is mapped cacheable
/// (`memremap(MEMREMAP_WB)`) rather than as uncached MMIO.
///
/// # Invariants
///
/// `pdev` is a bound PCI device whose BAR `bar` is requested by us; `addr` points to a
/// mapping of `len` bytes of that BAR, valid until `drop`.
pub(crate) struct SharedRegion {
    pdev: *mut bindings::pci_dev,
    bar: c_int,
    addr: *mut u8,
    len: usize,
    /// Bus/physical address of the BAR (for user mappings of the bulk area).
    phys: u64,
}

// SAFETY: The mapping and the request may be used and released from any thread.
unsafe impl Send for SharedRegion {}
// SAFETY: All accesses through `&self` are bounds-checked raw copies; concurrent copies are
// allowed (the region is shared with other guests anyway).
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Requests and maps BAR `bar` of `pdev`.
    pub(crate) fn map(
        pdev: &kernel::pci::Device<kernel::device::Core<'_>>,
        bar: u32,
    ) -> Result<Self> {
        let len = usize::try_from(pdev.resource_len(bar)?).map_err(|_| EINVAL)?;
        let start = pdev.resource_start(bar)?;
        if len == 0 {
            return Err(ENODEV);
        }
        // `pci::Device` is `#[repr(transparent)]` over `Opaque<bindings::pci_dev>`, which is
        // itself transparent, so a pointer to it is a pointer to the `struct pci_dev`. (The
        // `kernel` crate keeps its own `as_raw` private.)
        let raw = core::ptr::from_ref(pdev)
            .cast::<bindings::pci_dev>()
            .cast_mut();
        let bar = c_int::try_from(bar)?;
        // SAFETY: `raw` is a valid, bound PCI device for the duration of the call.
        to_result(unsafe { bindings::pci_request_region(raw, bar, c"vmcs".as_char_ptr()) })?;
        // SAFETY: `start..start + len` is the BAR's resource, which we just requested.
        let addr = unsafe { bindings::memremap(start, len, bindings::MEMREMAP_WB as c_ulong) };
        if addr.is_null() {
            // SAFETY: We requested this region above.
            unsafe { bindings::pci_release_region(raw, bar) };
            return Err(ENOMEM);
        }
        // INVARIANT: the BAR is requested and `addr` maps its `len` bytes.
        Ok(Self {
            pdev: raw,
            bar,
            addr: addr.cast(),
            len,
            phys: start,
        })
    }

    /// Page frame number of the page at `offset` (page-aligned, inside the region).
    pub(crate) fn pfn(&self, offset: usize) -> Option<usize> {
        if offset % kernel::page::PAGE_SIZE != 0 || offset >= self.len {
            return None;
        }
        let addr = self.phys.checked_add(offset as u64)?;
        usize::try_from(addr >> kernel::page::PAGE_SHIFT).ok()
    }

    /// Size of the region in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the region.
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) -> Result {
        let end = offset.checked_add(dst.len()).ok_or(EINVAL)?;
        if end > self.len {
            return Err(EINVAL);
        }
        // SAFETY: `offset..end` lies in the mapping (checked above, type invariant). Other
        // guests may write the bytes concurrently; the copy then returns some mix of old and
        // new bytes, which callers treat as untrusted data.
        unsafe {
            core::ptr::copy_nonoverlapping(self.addr.add(offset), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }

    /// Copies `src` into the region starting at `offset`.
    pub(crate) fn write(&self, offset: usize, src: &[u8]) -> Result {
        let end = offset.checked_add(src.len()).ok_or(EINVAL)?;
        if end > self.len {
            return Err(EINVAL);
        }
        // SAFETY: `offset..end` lies in the mapping (checked above, type invariant).
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.addr.add(offset), src.len()) };
        Ok(())
    }
}

/// Copies between the region and user memory or uninitialised kernel memory (the one-copy
/// data path). Each is bounds-checked: nothing outside `offset..offset + n` of the region
/// is touched, and a range not inside the region copies nothing.
impl SharedRegion {
    /// A pointer to `offset` if `offset..offset + n` lies in the mapping.
    fn range(&self, offset: usize, n: usize) -> Option<*mut u8> {
        let end = offset.checked_add(n)?;
        if end > self.len {
            return None;
        }
        // SAFETY: `offset <= end <= len`: the result stays inside the mapping.
        Some(unsafe { self.addr.add(offset) })
    }

    /// Copies up to `n` bytes from `src` into the region at `offset`, with page faults
    /// disabled (it never sleeps: callable under the ring's spinlock). Returns the bytes
    /// copied: fewer when a user page is not present (the caller faults it in with no lock
    /// held and copies the rest again).
    pub(crate) fn fill_from_user(&self, offset: usize, n: usize, src: &mut UserIter<'_>) -> usize {
        let Some(p) = self.range(offset, n) else {
            return 0;
        };
        // SAFETY: `p..p + n` lies in the mapping (checked by `range`, type invariant).
        unsafe { src.read_raw_nofault(p, n) }
    }

    /// Copies bytes `at..at + n` of the transmitted frame `skb` (head and fragments) into
    /// the region at `offset`: the net device's one copy. False if either range is out of
    /// bounds (nothing outside `offset..offset + n` is touched).
    pub(crate) fn fill_from_skb(
        &self,
        offset: usize,
        n: usize,
        skb: &super::net::TxSkb,
        at: usize,
    ) -> bool {
        let Some(p) = self.range(offset, n) else {
            return false;
        };
        // SAFETY: `p..p + n` lies in the mapping (checked by `range`, type invariant), which
        // is not inside any skb.
        unsafe { skb.copy_bits(at, p, n) }
    }

    /// Copies up to `n` bytes of the region at `offset` to `dst` with page faults disabled
    /// (it never sleeps: callable under a spinlock; receive by reference). Returns the
    /// bytes copied: fewer when a user page is not present, 0 when out of bounds.
    pub(crate) fn copy_to_user_nofault(
        &self,
        offset: usize,
        n: usize,
        dst: &mut UserIter<'_>,
    ) -> usize {
        let Some(p) = self.range(offset, n) else {
            return 0;
        };
        // SAFETY: `p..p + n` lies in the mapping (checked by `range`, type invariant).
        // Other guests may write those bytes during the copy; the reader then gets some
        // mix of old and new bytes, untrusted data as any payload.
        unsafe { dst.write_raw_nofault(p, n) }
    }

    /// Copies `dst.len()` bytes starting at `offset` into `dst` (the spare capacity of a
    /// receive queue). Returns the bytes copied: all of them, or 0 when out of bounds.
    pub(crate) fn read_uninit(&self, offset: usize, dst: &mut [MaybeUninit<u8>]) -> usize {
        let Some(p) = self.range(offset, dst.len()) else {
            return 0;
        };
        // SAFETY: `p..p + dst.len()` lies in the mapping; `dst` is valid for writes of its
        // length and is not in the mapping (a kernel buffer). Concurrent writes by other
        // guests give some mix of old and new bytes, which callers treat as untrusted.
        unsafe { core::ptr::copy_nonoverlapping(p, dst.as_mut_ptr().cast::<u8>(), dst.len()) };
        dst.len()
    }
}

impl SharedRegion {
    /// Returns a pointer to the `T` at `off`, if it lies in the mapping and is aligned.
    fn field<T>(&self, off: usize) -> Option<*mut T> {
        let end = off.checked_add(size_of::<T>())?;
        if end > self.len || off % align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: `off + size_of::<T>() <= len`, so the result stays inside the mapping.
        Some(unsafe { self.addr.add(off) }.cast())
    }
}

/// The protocol's view of the region, on the kernel's LKMM atomics and barriers.
///
/// An offset out of bounds or misaligned is a bug in the caller (the protocol computes
/// offsets from validated geometry only); it never touches memory: loads return 0 and
/// stores are dropped.
impl Shm for SharedRegion {
    fn size(&self) -> usize {
        self.len
    }

    fn load_u32_acquire(&self, off: usize) -> u32 {
        // SAFETY: `field` returned an in-bounds, aligned pointer into the live mapping;
        // every concurrent access to it is atomic or by another guest.
        self.field(off)
            .map_or(0, |p| unsafe { atomic_load(p, Acquire) })
    }

    fn load_u32_relaxed(&self, off: usize) -> u32 {
        // SAFETY: As in `load_u32_acquire`.
        self.field(off)
            .map_or(0, |p| unsafe { atomic_load(p, Relaxed) })
    }

    fn store_u32_release(&self, off: usize, v: u32) {
        if let Some(p) = self.field(off) {
            // SAFETY: As in `load_u32_acquire`.
            unsafe { atomic_store(p, v, Release) };
        }
    }

    fn store_u32_relaxed(&self, off: usize, v: u32) {
        if let Some(p) = self.field(off) {
            // SAFETY: As in `load_u32_acquire`.
            unsafe { atomic_store(p, v, Relaxed) };
        }
    }

    fn cmpxchg_u32(&self, off: usize, old: u32, new: u32) -> core::result::Result<u32, u32> {
        match self.field::<u32>(off) {
            // SAFETY: As in `load_u32_acquire`.
            Some(p) => unsafe { atomic_cmpxchg(p, old, new, Full) },
            None => Err(0),
        }
    }

    fn load_u64_acquire(&self, off: usize) -> u64 {
        // SAFETY: As in `load_u32_acquire`.
        self.field(off)
            .map_or(0, |p| unsafe { atomic_load(p, Acquire) })
    }

    fn load_u64_relaxed(&self, off: usize) -> u64 {
        // SAFETY: As in `load_u32_acquire`.
        self.field(off)
            .map_or(0, |p| unsafe { atomic_load(p, Relaxed) })
    }

    fn store_u64_release(&self, off: usize, v: u64) {
        if let Some(p) = self.field(off) {
            // SAFETY: As in `load_u32_acquire`.
            unsafe { atomic_store(p, v, Release) };
        }
    }

    fn store_u64_relaxed(&self, off: usize, v: u64) {
        if let Some(p) = self.field(off) {
            // SAFETY: As in `load_u32_acquire`.
            unsafe { atomic_store(p, v, Relaxed) };
        }
    }

    fn fence_full(&self) {
        smp_mb();
    }

    fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        // Out of bounds is a caller bug; the destination is then left as it was.
        let _ = self.read(off, dst);
    }

    fn write_bytes(&self, off: usize, src: &[u8]) {
        // Out of bounds is a caller bug; nothing is written then.
        let _ = self.write(off, src);
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `addr` is our mapping and the BAR is requested by us;
        // both are released exactly once, here.
        unsafe {
            bindings::memunmap(self.addr.cast());
            bindings::pci_release_region(self.pdev, self.bar);
        }
    }
}
