// SPDX-License-Identifier: GPL-2.0

//! The C entry points of /dev/vmcs: the `file_operations` and `vm_operations` table of
//! vmcs_glue.c forwards to these functions, which forward to [`VmcsFile`]. Nothing in Rust
//! imports this file.

use super::VmcsFile;
use crate::glue::{self, file, Fault};
use kernel::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use kernel::{
    bindings,
    fs::File,
    prelude::*,
    sync::{poll::PollTable, Arc, ArcBorrow},
    types::ForeignOwnable,
};

/// Converts a `Result` of a byte count to the `ssize_t` convention.
fn to_ssize(r: Result<usize>) -> isize {
    match r {
        // A count never exceeds the `size_t` the caller passed in, which fits in `ssize_t`.
        Ok(n) => isize::try_from(n).unwrap_or(isize::MAX),
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// `file` must be a file being opened on /dev/vmcs.
#[no_mangle]
unsafe extern "C" fn vmcs_chr_open(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    match VmcsFile::open() {
        Ok(ep) => {
            // SAFETY: `file` is being opened and its endpoint holds the mapping.
            unsafe { ep.mapping.attach(file) };
            // SAFETY: `file` is valid during open; private_data is ours from now on.
            unsafe { (*file).private_data = ep.into_foreign() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `file` must be a /dev/vmcs file whose open succeeded and that is being released.
#[no_mangle]
unsafe extern "C" fn vmcs_chr_release(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: `private_data` was set by `vmcs_chr_open` from `Arc::into_foreign`, and release
    // runs once, after all other file operations.
    let ep = unsafe { <Arc<VmcsFile> as ForeignOwnable>::from_foreign((*file).private_data) };
    ep.release();
    0
}

/// Borrows the endpoint of an open /dev/vmcs file.
///
/// # Safety
///
/// `file` must be a /dev/vmcs file whose open succeeded and that is not yet released.
unsafe fn dev_file<'a>(file: *mut bindings::file) -> ArcBorrow<'a, VmcsFile> {
    // SAFETY: Per the function's safety requirements `private_data` holds our `Arc` until
    // release, which cannot run while a file operation is in progress.
    unsafe { <Arc<VmcsFile> as ForeignOwnable>::borrow((*file).private_data) }
}

/// # Safety
///
/// `file` must be an open /dev/vmcs file and `buf` a user pointer.
#[no_mangle]
unsafe extern "C" fn vmcs_chr_read(
    file: *mut bindings::file,
    buf: *mut c_void,
    len: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: Guaranteed by the caller.
    let (ep, nonblock) = unsafe { (dev_file(file), file::nonblocking(file)) };
    to_ssize(glue::UserIter::user(buf as usize, len, false).and_then(|dst| ep.read(dst, nonblock)))
}

/// # Safety
///
/// `file` must be an open /dev/vmcs file and `buf` a user pointer.
#[no_mangle]
unsafe extern "C" fn vmcs_chr_write(
    file: *mut bindings::file,
    buf: *mut c_void,
    len: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: Guaranteed by the caller.
    let (ep, nonblock) = unsafe { (dev_file(file), file::nonblocking(file)) };
    to_ssize(glue::UserIter::user(buf as usize, len, true).and_then(|src| ep.write(src, nonblock)))
}

/// # Safety
///
/// `file` must be an open /dev/vmcs file.
#[no_mangle]
unsafe extern "C" fn vmcs_chr_ioctl(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: Guaranteed by the caller.
    let (ep, nonblock) = unsafe { (dev_file(file), file::nonblocking(file)) };
    match ep.ioctl(cmd, arg, nonblock) {
        Ok(v) => v as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// `file` must be an open /dev/vmcs file and `wait` null or a valid poll table.
#[no_mangle]
unsafe extern "C" fn vmcs_chr_poll(
    file: *mut bindings::file,
    wait: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: Guaranteed by the caller: the file is open (so its refcount is positive for the
    // duration of the call) and `fdget_pos` users of it take `f_pos_lock`; `wait` is null or
    // valid for the duration of the call.
    let (ep, f, table) = unsafe {
        (
            dev_file(file),
            File::from_raw_file(file),
            PollTable::from_raw(wait),
        )
    };
    ep.poll(f, &table)
}

/// `mmap` of a bulk area (the glue has checked `VM_SHARED`): `readonly` is set when the
/// range is the peer's extent (the glue then clears `VM_MAYWRITE`).
///
/// # Safety
///
/// `file` must be an open /dev/vmcs file and `readonly` valid for a write.
#[no_mangle]
unsafe extern "C" fn vmcs_chr_bulk_mmap(
    file: *mut bindings::file,
    pgoff: c_ulong,
    len: c_ulong,
    write: bool,
    readonly: *mut bool,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let ep = unsafe { dev_file(file) };
    match ep.bulk_mmap(pgoff, len, write) {
        Ok(ro) => {
            // SAFETY: Guaranteed by the caller.
            unsafe { *readonly = ro };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// A fault in a bulk area mapping of `file` at page `pgoff` of the file.
///
/// # Safety
///
/// `file` must be the (open, since the VMA pins it) /dev/vmcs file of the faulting
/// `VM_PFNMAP` VMA, `vmf` the fault being handled.
#[no_mangle]
unsafe extern "C" fn vmcs_chr_bulk_fault(
    file: *mut bindings::file,
    pgoff: c_ulong,
    vmf: *mut c_void,
) -> c_uint {
    // SAFETY: Guaranteed by the caller.
    let (ep, fault) = unsafe { (dev_file(file), Fault::from_raw(vmf)) };
    ep.bulk_fault(pgoff, &fault)
}
