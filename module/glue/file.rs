// SPDX-License-Identifier: GPL-2.0

//! Files of /dev/vmcs as the kernel sees them: the private `address_space` of each file,
//! page faults of its bulk area mappings, and anonymous files for accepted connections.

use super::oflags;
use core::ptr::NonNull;
use kernel::ffi::{c_int, c_uint, c_ulong, c_void};
use kernel::{
    bindings,
    error::from_err_ptr,
    fs::{file::FileDescriptorReservation, File},
    page::Page,
    prelude::*,
    sync::{aref::ARef, Arc, SetOnce},
    types::ForeignOwnable,
};

// The C glue's side of module/vmcs_glue.h (mm helpers).
extern "C" {
    /// `vmf_insert_pfn(vmf->vma, vmf->address, pfn)`.
    fn vmcs_glue_insert_pfn(vmf: *mut c_void, pfn: c_ulong) -> c_uint;
    /// `vmf_insert_pfn(vmf->vma, vmf->address, page_to_pfn(page))`. `page` is a `struct
    /// page *` (typed `void *`: bindgen's `page` is not FFI-safe by lint).
    fn vmcs_glue_insert_page(vmf: *mut c_void, page: *mut c_void) -> c_uint;
    /// A new zeroed, `address_space_init_once`d `struct address_space`, or null.
    fn vmcs_glue_mapping_new() -> *mut c_void;
    /// `kfree` of a mapping from `vmcs_glue_mapping_new`.
    fn vmcs_glue_mapping_free(m: *mut c_void);
    /// Makes `m` the file's `f_mapping` (host and a_ops copied from the old one). `file` is
    /// a `struct file *` (typed `void *`: bindgen's `file` is not FFI-safe by lint).
    fn vmcs_glue_file_set_mapping(file: *mut c_void, m: *mut c_void);
    /// `unmap_mapping_range(m, 0, 0, 1)`: removes every user page table entry of every
    /// mapping of the files that use `m`.
    fn vmcs_glue_mapping_zap(m: *mut c_void);
    /// `anon_inode_getfile("[vmcs]", &vmcs_fops, private_data, O_RDWR | (flags & O_NONBLOCK))`:
    /// a new file with the file operations of /dev/vmcs. Returns an `ERR_PTR` on failure.
    fn vmcs_glue_anon_file(private_data: *mut c_void, flags: c_int) -> *mut c_void;
}

/// The private `address_space` of one /dev/vmcs file: its bulk area mappings are linked
/// there, so [`FileMapping::zap`] removes exactly this file's user mappings.
///
/// It also holds the file's private zero page: once the file's bulk set-up is over, its
/// stale mappings fault this page in instead of the region's (docs/uapi.md "Bulk
/// transfer"), so they read zeros and never another connection's data.
///
/// # Invariants
///
/// `ptr` is a live mapping from `vmcs_glue_mapping_new`, freed only in `drop`. Files that
/// use it hold their private data, which holds an `Arc` of this value, so it outlives them,
/// and so does `zero`: every user page table entry of it is in a VMA of such a file, and a
/// VMA holds its file.
pub(crate) struct FileMapping {
    ptr: NonNull<c_void>,
    /// The private zeroed page of the file's stale bulk mappings, allocated by the first
    /// bulk `mmap` ([`FileMapping::prepare_zero_page`]), freed with the file.
    zero: SetOnce<Page>,
}

// SAFETY: The mapping is only used through `unmap_mapping_range`, which locks it, and freed
// once, when the last reference goes.
unsafe impl Send for FileMapping {}
// SAFETY: As above.
unsafe impl Sync for FileMapping {}

impl FileMapping {
    /// A new, empty mapping.
    pub(crate) fn new() -> Result<Arc<Self>> {
        // SAFETY: No preconditions.
        let ptr = NonNull::new(unsafe { vmcs_glue_mapping_new() }).ok_or(ENOMEM)?;
        // INVARIANT: `ptr` is a new mapping.
        Ok(Arc::new(
            Self {
                ptr,
                zero: SetOnce::new(),
            },
            GFP_KERNEL,
        )?)
    }

    /// Allocates the file's private zero page if it has none yet (called by every bulk
    /// `mmap`, so that a fault never needs to allocate it).
    pub(crate) fn prepare_zero_page(&self) -> Result {
        if self.zero.as_ref().is_none() {
            let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
            // A concurrent mmap may have populated it first: then ours is dropped.
            let _ = self.zero.populate(page);
        }
        Ok(())
    }

    /// Makes this mapping the `f_mapping` of `file`.
    ///
    /// # Safety
    ///
    /// `file` must be a new /dev/vmcs file (in open, or not yet installed) whose endpoint
    /// holds this mapping.
    pub(crate) unsafe fn attach(&self, file: *mut bindings::file) {
        // SAFETY: Guaranteed by the caller and the type invariant.
        unsafe { vmcs_glue_file_set_mapping(file.cast(), self.ptr.as_ptr()) };
    }

    /// Removes every user page of every bulk mapping of the file; a later access faults
    /// again (and gets the private zero page once the bulk set-up is over). May sleep.
    pub(crate) fn zap(&self) {
        // SAFETY: By the type invariant the mapping is live.
        unsafe { vmcs_glue_mapping_zap(self.ptr.as_ptr()) };
    }
}

impl Drop for FileMapping {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the mapping is live and no file uses it any more.
        unsafe { vmcs_glue_mapping_free(self.ptr.as_ptr()) };
    }
}

/// A page fault in a bulk area mapping.
///
/// # Invariants
///
/// The pointer is the `struct vm_fault` of a fault being handled on a `VM_PFNMAP`, shared
/// VMA of a /dev/vmcs file, valid while the value lives.
pub(crate) struct Fault(*mut c_void);

/// `VM_FAULT_SIGBUS`.
const VM_FAULT_SIGBUS: u32 = bindings::vm_fault_reason_VM_FAULT_SIGBUS;

impl Fault {
    /// Wraps the fault `vmf`.
    ///
    /// # Safety
    ///
    /// `vmf` must be the `struct vm_fault` of a fault being handled on a `VM_PFNMAP`, shared
    /// VMA, and the value must not outlive the fault handler.
    pub(crate) unsafe fn from_raw(vmf: *mut c_void) -> Self {
        // INVARIANT: Guaranteed by the caller.
        Self(vmf)
    }

    /// Inserts page frame `pfn` at the faulting address; returns the `vm_fault_t`.
    pub(crate) fn insert_pfn(&self, pfn: usize) -> u32 {
        // SAFETY: By the type invariant `self.0` is the `struct vm_fault` of the fault being
        // handled, whose VMA is `VM_PFNMAP` and shared.
        unsafe { vmcs_glue_insert_pfn(self.0, pfn as c_ulong) }
    }

    /// Inserts the private zero page of `m`, the mapping of the faulting file, at the
    /// faulting address (with the VMA's protection: read-only on a read-only mapping);
    /// `SIGBUS` if the file has none (no bulk `mmap` succeeded, so no such fault happens).
    pub(crate) fn insert_zero_page(&self, m: &FileMapping) -> u32 {
        let Some(page) = m.zero.as_ref() else {
            return VM_FAULT_SIGBUS;
        };
        // SAFETY: By the type invariant `self.0` is the `struct vm_fault` of the fault being
        // handled, whose VMA is `VM_PFNMAP` and shared; `m` is the mapping of its file, so
        // by `FileMapping`'s invariant the page outlives every page table entry of it.
        unsafe { vmcs_glue_insert_page(self.0, page.as_ptr().cast()) }
    }
}

/// The private data of a /dev/vmcs file (`file->private_data`, an `Arc` of it): what the
/// file operations of the C glue's table expect to find there.
///
/// # Safety
///
/// Exactly one type implements it: the one the `/dev/vmcs` entry points (module/chardev/
/// entry.rs) take back out of `private_data`.
pub(crate) unsafe trait DevFilePrivate: Send + Sync + Sized + 'static {
    /// The file's own `address_space`.
    fn mapping(&self) -> &Arc<FileMapping>;
    /// Called exactly once when the file goes (or is never made).
    fn release(&self);
}

/// Installs a new file descriptor for `ep` in the current task: a new anonymous file with
/// the file operations of /dev/vmcs, `O_NONBLOCK` and `O_CLOEXEC` taken from `flags`.
///
/// `before_install` runs with the reserved descriptor number before the descriptor becomes
/// visible (to copy results to user space); if it fails, nothing is installed. On every
/// failure `ep` is released ([`DevFilePrivate::release`]), exactly once.
pub(crate) fn install_dev_file<T: DevFilePrivate>(
    ep: Arc<T>,
    flags: u32,
    before_install: impl FnOnce(u32) -> Result,
) -> Result<u32> {
    let reservation = match FileDescriptorReservation::get_unused_fd_flags(flags & oflags::CLOEXEC)
    {
        Ok(r) => r,
        Err(e) => {
            ep.release();
            return Err(e);
        }
    };
    let fd = reservation.reserved_fd();
    let mapping = ep.mapping().clone();
    let private = ep.into_foreign();
    // The flag fits in a C int.
    let nonblock = (flags & oflags::NONBLOCK) as c_int;
    // SAFETY: `private` is an `Arc<T>` turned into a foreign pointer, which the file
    // owns from now on (released by `vmcs_chr_release`).
    let raw = unsafe { vmcs_glue_anon_file(private, nonblock) };
    let raw = match from_err_ptr(raw.cast::<bindings::file>()) {
        Ok(raw) => raw,
        Err(e) => {
            // SAFETY: The file was not created, so `private` is still ours.
            let ep = unsafe { <Arc<T> as ForeignOwnable>::from_foreign(private) };
            ep.release();
            return Err(e);
        }
    };
    // SAFETY: `anon_inode_getfile` returned a new file with one reference, which the `ARef`
    // takes over; `File` is a transparent wrapper of `struct file`; nobody else knows the
    // file yet, so there is no `fdget_pos` on it.
    let file: ARef<File> = unsafe { ARef::from_raw(NonNull::new_unchecked(raw.cast())) };
    // SAFETY: `raw` is the new file of the endpoint, not yet installed, and the endpoint
    // holds `mapping`.
    unsafe { mapping.attach(raw) };
    // On failure `file` is dropped: `fput` releases the endpoint through the file.
    before_install(fd)?;
    reservation.fd_install(file);
    Ok(fd)
}

/// Whether `O_NONBLOCK` is set on `file`.
///
/// # Safety
///
/// `file` must be a valid file.
pub(crate) unsafe fn nonblocking(file: *mut bindings::file) -> bool {
    // SAFETY: Per the function's safety requirements, `file` is valid; `f_flags` may change
    // concurrently (fcntl), and any value read is fine.
    let flags = unsafe { core::ptr::addr_of!((*file).f_flags).read_volatile() };
    flags & oflags::NONBLOCK != 0
}
