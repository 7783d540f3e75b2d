// SPDX-License-Identifier: GPL-2.0

//! sysfs directories the `kernel` crate has no abstraction for: `/sys/kernel/vmcs/` and one
//! `vmcs<N>/` per domain under it, whose attribute table (`encrypt`) and `kobj_type` live in
//! vmcs_glue.c. The attributes' show and store forward the domain's index to
//! module/domain/entry.rs.

use kernel::{error::from_err_ptr, ffi::c_uint, prelude::*};

extern "C" {
    fn vmcs_glue_sysfs_root_new() -> *mut c_void;
    fn vmcs_glue_sysfs_domain_new(parent: *mut c_void, index: c_uint) -> *mut c_void;
    fn vmcs_glue_sysfs_del(kobj: *mut c_void);
}

/// A sysfs directory (a kobject) this module made; removed when dropped.
///
/// Dropping it waits for the show and store calls running on its attributes
/// (`kobject_del`), so it must not be dropped under a lock they take.
///
/// # Invariants
///
/// `self.0` is a kobject returned by `vmcs_glue_sysfs_root_new` or
/// `vmcs_glue_sysfs_domain_new`, whose reference this value owns.
pub(crate) struct Kobj(*mut c_void);

// SAFETY: A kobject may be removed from any thread; `Kobj` only hands its pointer to
// `vmcs_glue_sysfs_domain_new` (which takes its own reference) and to its own `Drop`.
unsafe impl Send for Kobj {}
// SAFETY: `&Kobj` allows only `domain`, which the kobject core serialises.
unsafe impl Sync for Kobj {}

impl Kobj {
    /// `/sys/kernel/vmcs/`.
    pub(crate) fn root() -> Result<Self> {
        // SAFETY: No preconditions; it returns a kobject or an `ERR_PTR`.
        let k = from_err_ptr(unsafe { vmcs_glue_sysfs_root_new() })?;
        // INVARIANT: A kobject from `vmcs_glue_sysfs_root_new`, ours.
        Ok(Self(k))
    }

    /// `vmcs<index>/` under this directory, with the per-domain attributes.
    pub(crate) fn domain(&self, index: u32) -> Result<Self> {
        // SAFETY: `self.0` is a live kobject (type invariant); the child takes a reference
        // of it, so it outlives the child.
        let k = from_err_ptr(unsafe { vmcs_glue_sysfs_domain_new(self.0, index) })?;
        // INVARIANT: A kobject from `vmcs_glue_sysfs_domain_new`, ours.
        Ok(Self(k))
    }
}

impl Drop for Kobj {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a kobject whose reference we own (type invariant); it is not
        // used again.
        unsafe { vmcs_glue_sysfs_del(self.0) };
    }
}

/// Writes `line` and a newline into a sysfs show buffer; returns the bytes written.
///
/// # Safety
///
/// `buf` must be the `PAGE_SIZE` buffer a sysfs show callback was given.
pub(crate) unsafe fn emit(buf: *mut u8, line: &str) -> isize {
    let n = line.len().min(kernel::page::PAGE_SIZE - 1);
    // SAFETY: `buf` holds `PAGE_SIZE` bytes (the caller's contract) and `n + 1` fits.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, n + 1) };
    if let (Some(dst), Some(src)) = (out.get_mut(..n), line.as_bytes().get(..n)) {
        dst.copy_from_slice(src);
    }
    if let Some(nl) = out.get_mut(n) {
        *nl = b'\n';
    }
    // `n + 1` is at most `PAGE_SIZE`.
    isize::try_from(n + 1).unwrap_or(0)
}

/// The bytes a sysfs store callback was given.
///
/// # Safety
///
/// `buf` and `count` must be those of a sysfs store callback, and the slice must not outlive
/// the call.
pub(crate) unsafe fn input<'a>(buf: *const u8, count: usize) -> &'a [u8] {
    if buf.is_null() {
        return &[];
    }
    // SAFETY: sysfs passes `count` readable bytes at `buf` (the caller's contract).
    unsafe { core::slice::from_raw_parts(buf, count) }
}
