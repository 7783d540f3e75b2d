// SPDX-License-Identifier: GPL-2.0

//! The one place where vmcs uses raw `bindings::` and talks to its C glue (vmcs_glue.c).
//!
//! Everything here wraps a C interface the `kernel` crate has no abstraction for, in a small
//! safe type: the `/dev/vmcs` registration with our own file_operations, the write-back
//! mapping of the shared BAR, and the C entry points of the file operations, which forward
//! to the safe code in `chardev`.

use crate::{
    chardev::VmcsFile,
    conn::Timeout,
    proto::shm::Shm,
    socket::{SocketOptions, VmcsSocket, DEFAULT_SOCKET_BUFFERS},
    uapi::SockaddrVmcs,
};
use core::ptr::NonNull;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use kernel::{
    bindings,
    error::{from_err_ptr, to_result},
    fs::{file::FileDescriptorReservation, File},
    iov::{IovIterDest, IovIterSource},
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            atomic_load, atomic_store, cmpxchg as atomic_cmpxchg,
            ordering::{Acquire, Full, Relaxed, Release},
        },
        barrier::smp_mb,
        poll::PollTable,
        Arc, ArcBorrow,
    },
    types::{ForeignOwnable, Opaque},
    uaccess::{UserPtr, UserSlice},
};

// The C glue's side of module/vmcs_glue.h.
extern "C" {
    /// `vmf_insert_pfn(vmf->vma, vmf->address, pfn)`.
    fn vmcs_glue_insert_pfn(vmf: *mut c_void, pfn: c_ulong) -> c_uint;
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
    /// Returns the `struct file_operations` of /dev/vmcs (a static table in vmcs_glue.c),
    /// typed `void *` here because bindgen's `file_operations` is not FFI-safe by lint.
    fn vmcs_glue_fops() -> *const c_void;
    /// `anon_inode_getfile("[vmcs]", &vmcs_fops, private_data, O_RDWR | (flags & O_NONBLOCK))`:
    /// a new file with the file operations of /dev/vmcs. Returns an `ERR_PTR` on failure.
    fn vmcs_glue_anon_file(private_data: *mut c_void, flags: c_int) -> *mut c_void;
}

/// The private `address_space` of one /dev/vmcs file: its bulk area mappings are linked
/// there, so [`FileMapping::zap`] removes exactly this file's user mappings.
///
/// # Invariants
///
/// `ptr` is a live mapping from `vmcs_glue_mapping_new`, freed only in `drop`. Files that
/// use it hold an `Arc<VmcsFile>`, which holds an `Arc` of this value, so it outlives them.
pub(crate) struct FileMapping {
    ptr: NonNull<c_void>,
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
        Ok(Arc::new(Self { ptr }, GFP_KERNEL)?)
    }

    /// Makes this mapping the `f_mapping` of `file`.
    ///
    /// # Safety
    ///
    /// `file` must be a new /dev/vmcs file (in open, or not yet installed) whose endpoint
    /// holds this mapping.
    unsafe fn attach(&self, file: *mut bindings::file) {
        // SAFETY: Guaranteed by the caller and the type invariant.
        unsafe { vmcs_glue_file_set_mapping(file.cast(), self.ptr.as_ptr()) };
    }

    /// Removes every user page of every bulk mapping of the file; a later access faults
    /// again (and gets `SIGBUS` once the bulk set-up is over). May sleep.
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
pub(crate) struct Fault(*mut c_void);

/// `VM_FAULT_SIGBUS`.
pub(crate) const VM_FAULT_SIGBUS: u32 = bindings::vm_fault_reason_VM_FAULT_SIGBUS;

impl Fault {
    /// Inserts page frame `pfn` at the faulting address; returns the `vm_fault_t`.
    pub(crate) fn insert_pfn(&self, pfn: usize) -> u32 {
        // SAFETY: `self.0` is the `struct vm_fault` of the fault being handled (type
        // construction in `vmcs_chr_bulk_fault`), whose VMA is `VM_PFNMAP` and shared.
        unsafe { vmcs_glue_insert_pfn(self.0, pfn as c_ulong) }
    }
}

/// Whether the current task may bind ports below 1024 (`CAP_NET_BIND_SERVICE`).
pub(crate) fn capable_net_bind_service() -> bool {
    // SAFETY: `capable` only inspects the current task's credentials.
    unsafe { bindings::capable(bindings::CAP_NET_BIND_SERVICE as c_int) }
}

/// `O_NONBLOCK` and `O_CLOEXEC`, the flags `VMCS_IOC_ACCEPT` takes.
pub(crate) mod oflags {
    /// `O_NONBLOCK`.
    pub(crate) const NONBLOCK: u32 = kernel::bindings::O_NONBLOCK;
    /// `O_CLOEXEC`.
    pub(crate) const CLOEXEC: u32 = kernel::bindings::O_CLOEXEC;
}

/// Installs a new file descriptor for `ep` in the current task: a new anonymous file with
/// the file operations of /dev/vmcs, `O_NONBLOCK` and `O_CLOEXEC` taken from `flags`.
///
/// `before_install` runs with the reserved descriptor number before the descriptor becomes
/// visible (to copy results to user space); if it fails, nothing is installed. On every
/// failure `ep` is released (`VmcsFile::release`), exactly once.
pub(crate) fn install_endpoint(
    ep: Arc<VmcsFile>,
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
    let mapping = ep.mapping.clone();
    let private = ep.into_foreign();
    // The flag fits in a C int.
    let nonblock = (flags & oflags::NONBLOCK) as c_int;
    // SAFETY: `private` is an `Arc<VmcsFile>` turned into a foreign pointer, which the file
    // owns from now on (released by `vmcs_chr_release`).
    let raw = unsafe { vmcs_glue_anon_file(private, nonblock) };
    let raw = match from_err_ptr(raw.cast::<bindings::file>()) {
        Ok(raw) => raw,
        Err(e) => {
            // SAFETY: The file was not created, so `private` is still ours.
            let ep = unsafe { <Arc<VmcsFile> as ForeignOwnable>::from_foreign(private) };
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

/// A registration of the `/dev/vmcs` misc device.
///
/// # Invariants
///
/// `inner` holds a `struct miscdevice` registered with `misc_register()` for the whole life
/// of this value; it is deregistered exactly once, in `drop`.
#[pin_data(PinnedDrop)]
pub(crate) struct MiscRegistration {
    #[pin]
    inner: Opaque<bindings::miscdevice>,
}

// SAFETY: `misc_deregister` may be called from any thread.
unsafe impl Send for MiscRegistration {}
// SAFETY: `&self` gives no access to the inner `miscdevice`.
unsafe impl Sync for MiscRegistration {}

impl MiscRegistration {
    /// Registers `/dev/<name>` with file mode `mode`.
    pub(crate) fn register(name: &'static CStr, mode: u32) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                let mut misc: bindings::miscdevice = pin_init::zeroed();
                misc.minor = bindings::MISC_DYNAMIC_MINOR as c_int;
                misc.name = name.as_char_ptr();
                // SAFETY: `vmcs_glue_fops` returns a pointer to a static table.
                misc.fops = unsafe { vmcs_glue_fops() }.cast();
                // `mode` was masked to permission bits, so it fits in `umode_t`.
                misc.mode = mode as bindings::umode_t;
                // SAFETY: `slot` is valid for writes and pinned.
                unsafe { slot.write(misc) };
                // SAFETY: `slot` holds an initialised, pinned `miscdevice` that outlives the
                // registration, as `drop` deregisters it before the memory goes away.
                // INVARIANT: on success the device is registered.
                to_result(unsafe { bindings::misc_register(slot) })
            }),
        })
    }
}

#[pinned_drop]
impl PinnedDrop for MiscRegistration {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the device is registered.
        unsafe { bindings::misc_deregister(self.inner.get()) };
    }
}

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

/// Socket errnos the `kernel` crate does not name (`kernel::error::code` lacks them).
pub(crate) mod errno {
    use kernel::{bindings, error::Error};

    macro_rules! errnos {
        ($($fn:ident => $name:ident),* $(,)?) => {$(
            #[doc = concat!("`", stringify!($name), "`.")]
            #[allow(dead_code)]
            pub(crate) fn $fn() -> Error {
                // The bindings' errno constants are small positive numbers.
                Error::from_errno(-(bindings::$name as i32))
            }
        )*};
    }

    errnos! {
        econnreset => ECONNRESET,
        econnrefused => ECONNREFUSED,
        econnaborted => ECONNABORTED,
        ehostunreach => EHOSTUNREACH,
        enetunreach => ENETUNREACH,
        eaddrinuse => EADDRINUSE,
        eaddrnotavail => EADDRNOTAVAIL,
        enotconn => ENOTCONN,
        eisconn => EISCONN,
        einprogress => EINPROGRESS,
        ealready => EALREADY,
        eopnotsupp => EOPNOTSUPP,
        eprotonosupport => EPROTONOSUPPORT,
        eafnosupport => EAFNOSUPPORT,
        eshutdown => ESHUTDOWN,
        emsgsize => EMSGSIZE,
    }
}

/// Poll event bits (`EPOLL*` in include/uapi/linux/eventpoll.h; bindgen cannot see them
/// because C defines them through `__poll_t` casts). These values are user ABI.
pub(crate) mod poll_mask {
    /// Readable (`EPOLLIN | EPOLLRDNORM`).
    pub(crate) const IN: u32 = 0x0001 | 0x0040;
    /// Writable (`EPOLLOUT | EPOLLWRNORM`).
    pub(crate) const OUT: u32 = 0x0004 | 0x0100;
    /// Error (`EPOLLERR`).
    pub(crate) const ERR: u32 = 0x0008;
    /// Hang-up (`EPOLLHUP`).
    pub(crate) const HUP: u32 = 0x0010;
}

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
unsafe fn endpoint<'a>(file: *mut bindings::file) -> ArcBorrow<'a, VmcsFile> {
    // SAFETY: Per the function's safety requirements `private_data` holds our `Arc` until
    // release, which cannot run while a file operation is in progress.
    unsafe { <Arc<VmcsFile> as ForeignOwnable>::borrow((*file).private_data) }
}

/// Whether `O_NONBLOCK` is set on `file`.
///
/// # Safety
///
/// `file` must be a valid file.
unsafe fn nonblocking(file: *mut bindings::file) -> bool {
    // SAFETY: Per the function's safety requirements, `file` is valid; `f_flags` may change
    // concurrently (fcntl), and any value read is fine.
    let flags = unsafe { core::ptr::addr_of!((*file).f_flags).read_volatile() };
    flags & oflags::NONBLOCK != 0
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
    let (ep, nonblock) = unsafe { (endpoint(file), nonblocking(file)) };
    let writer = UserSlice::new(UserPtr::from_ptr(buf), len).writer();
    to_ssize(ep.read(writer, nonblock))
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
    let (ep, nonblock) = unsafe { (endpoint(file), nonblocking(file)) };
    let reader = UserSlice::new(UserPtr::from_ptr(buf), len).reader();
    to_ssize(ep.write(reader, nonblock))
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
    let (ep, nonblock) = unsafe { (endpoint(file), nonblocking(file)) };
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
            endpoint(file),
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
    let ep = unsafe { endpoint(file) };
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
    let ep = unsafe { endpoint(file) };
    ep.bulk_fault(pgoff, &Fault(vmf))
}

// ------------------------------------------------------------------------------------------
// Transport (module/transport): workqueue operations the `kernel` crate does not wrap yet.
//
// The `kernel` crate's `Arc<T>` work items own one reference while they are pending: the
// `Arc` is leaked into the queue on a successful enqueue and taken back in `run`. The two
// helpers below keep that accounting.
// ------------------------------------------------------------------------------------------

/// The workqueue of vmcs's works: `system_dfl_wq` (unbound), which this kernel prefers to
/// `system_wq` (that one logs a deprecation warning).
pub(crate) fn wq() -> &'static kernel::workqueue::Queue {
    // SAFETY: `system_dfl_wq` is a C global, set up at boot and never destroyed.
    unsafe { kernel::workqueue::Queue::from_raw(bindings::system_dfl_wq) }
}

/// The `struct delayed_work` of work item `ID` in the `T` at `ptr`.
///
/// # Safety
///
/// `ptr` must point at a valid `T`.
unsafe fn delayed_work_of<T, const ID: u64>(ptr: *mut T) -> *mut bindings::delayed_work
where
    T: kernel::workqueue::HasDelayedWork<T, ID>,
{
    // SAFETY: `ptr` points at a valid `T` (function safety requirement).
    let work = unsafe { <T as kernel::workqueue::HasWork<T, ID>>::raw_get_work(ptr) };
    // SAFETY: `raw_get_work` returned a valid pointer to a `Work<T, ID>`.
    let work = unsafe { kernel::workqueue::Work::raw_get(work) };
    // SAFETY: By `HasDelayedWork`, this `work_struct` is the `work` field of a
    // `delayed_work`, so stepping back to the container stays in the same allocation.
    unsafe { kernel::container_of!(work, bindings::delayed_work, work) }
}

/// Makes delayed work `ID` of `this` run after `delay` jiffies,
/// whether it is idle (it is queued) or already pending (its timer is moved) on [`wq`]:
/// `mod_delayed_work()`. Safe in atomic context.
pub(crate) fn mod_delayed_work<T, const ID: u64>(this: Arc<T>, delay: kernel::time::Jiffies)
where
    T: kernel::workqueue::WorkItem<ID, Pointer = Arc<T>>
        + kernel::workqueue::HasDelayedWork<T, ID>
        + Send
        + Sync,
{
    // The reference the queue owns if the work was idle and is queued now.
    let ptr = Arc::into_raw(this).cast_mut();
    // SAFETY: `ptr` comes from a live `Arc`, so it points at a valid `T`.
    let dwork = unsafe { delayed_work_of::<T, ID>(ptr) };
    // SAFETY: `system_dfl_wq` is a C global, always valid; `dwork` is a `delayed_work`
    // initialised by `DelayedWork::new` (its function is `T`'s `run`), valid while `ptr`'s
    // reference is alive, which the queue owns if the call queues the work.
    let was_pending = unsafe {
        bindings::mod_delayed_work_on(
            bindings::wq_misc_consts_WORK_CPU_UNBOUND as c_int,
            bindings::system_dfl_wq,
            dwork,
            delay,
        )
    };
    if was_pending {
        // The pending work already owns a reference (taken when it was queued); ours is
        // surplus.
        // SAFETY: `ptr` came from `Arc::into_raw` above and was not handed to the queue.
        drop(unsafe { Arc::from_raw(ptr) });
    }
}

/// Runs delayed work `ID` of `this` now if it is pending and waits until it has finished
/// (`flush_delayed_work()`). Sleeps.
pub(crate) fn flush_delayed_work<T, const ID: u64>(this: &Arc<T>)
where
    T: kernel::workqueue::HasDelayedWork<T, ID>,
{
    // SAFETY: `this` is a live `Arc`, so the pointer is a valid `T`.
    let dwork = unsafe { delayed_work_of::<T, ID>(Arc::as_ptr(this).cast_mut()) };
    // SAFETY: `dwork` is an initialised `delayed_work` inside `*this`, which `this` keeps
    // alive for the whole call; flushing does not transfer ownership of any reference.
    unsafe { bindings::flush_delayed_work(dwork) };
}

// ------------------------------------------------------------------------------------------
// AF_VMCS (module/socket.rs): registration and the `proto_ops` entry points.
// ------------------------------------------------------------------------------------------

/// A `struct sock`, opaque here (bindgen's `sock` is not FFI-safe by lint).
type RawSk = c_void;
/// A `struct socket`, opaque to the C glue's declarations for the same reason.
type RawSocket = c_void;

extern "C" {
    fn vmcs_glue_af() -> c_uint;
    fn vmcs_glue_sock_register(family: c_int) -> c_int;
    fn vmcs_glue_sock_unregister();
    fn vmcs_glue_sk_new(net: *mut bindings::net, sock: *mut RawSocket, kern: c_int) -> *mut RawSk;
    fn vmcs_glue_sk_new_accepted(
        sock: *mut RawSocket,
        newsock: *mut RawSocket,
        kern: c_int,
    ) -> *mut RawSk;
    fn vmcs_glue_sk_priv(sk: *mut RawSk) -> *mut c_void;
    fn vmcs_glue_sk_set_priv(sk: *mut RawSk, private: *mut c_void);
    fn vmcs_glue_sk_free(sock: *mut RawSocket);
    fn vmcs_glue_sk_sndtimeo_ms(sk: *mut RawSk) -> c_uint;
    fn vmcs_glue_sk_set_err(sk: *mut RawSk, err: c_int);
    fn vmcs_glue_sock_set_state(sock: *mut RawSocket, state: c_int);
    fn vmcs_glue_sk_rcvtimeo(sk: *mut RawSk) -> c_long;
    fn vmcs_glue_sk_sndtimeo(sk: *mut RawSk) -> c_long;
    fn vmcs_glue_sk_rcvlowat(sk: *mut RawSk) -> c_int;
    fn vmcs_glue_sk_rcvbuf(sk: *mut RawSk) -> c_int;
    fn vmcs_glue_sk_sndbuf(sk: *mut RawSk) -> c_int;
    fn vmcs_glue_sk_set_bufs(sk: *mut RawSk, rcvbuf: c_int, sndbuf: c_int);
}

/// The options of a live AF_VMCS socket's `struct sock` for one receive (`rcv`) or send.
///
/// # Safety
///
/// `sock` must be a live AF_VMCS socket (its `sk` set).
unsafe fn socket_options(sock: *mut bindings::socket, rcv: bool, nonblock: bool) -> SocketOptions {
    // SAFETY: `sock->sk` is live (function safety requirement); the accessors only read.
    let (timeo, lowat) = unsafe {
        let sk = (*sock).sk.cast();
        let t = if rcv {
            vmcs_glue_sk_rcvtimeo(sk)
        } else {
            vmcs_glue_sk_sndtimeo(sk)
        };
        (t, vmcs_glue_sk_rcvlowat(sk))
    };
    SocketOptions {
        timeo: if nonblock { Timeout(0) } else { Timeout(timeo) },
        lowat: usize::try_from(lowat).unwrap_or(1).max(1),
    }
}

/// Stores `SO_RCVBUF`/`SO_SNDBUF` as `getsockopt` should report them.
///
/// # Safety
///
/// `sk` must be a live AF_VMCS `struct sock`.
unsafe fn sk_set_bufs(sk: *mut RawSk, (rcvbuf, sndbuf): (u32, u32)) {
    let c = |v: u32| c_int::try_from(v).unwrap_or(c_int::MAX);
    // SAFETY: `sk` is live (function safety requirement).
    unsafe { vmcs_glue_sk_set_bufs(sk, c(rcvbuf), c(sndbuf)) };
}

/// The `af` module parameter (declared in the C glue so that sysfs shows it).
pub(crate) fn af_param() -> u32 {
    // SAFETY: Reads a module parameter, set before init and read-only in sysfs.
    unsafe { vmcs_glue_af() }
}

/// The registration of the AF_VMCS socket family (`proto_register` + `sock_register`).
///
/// # Invariants
///
/// When `registered` is true, the family is registered, and unregistered exactly once in
/// `drop`.
pub(crate) struct SocketFamilyRegistration {
    registered: bool,
}

impl SocketFamilyRegistration {
    /// Registers family `af`; `af` 0 registers nothing. A number in use fails with a
    /// message (`EEXIST`).
    pub(crate) fn register(af: u32) -> Result<Self> {
        if af == 0 {
            return Ok(Self { registered: false });
        }
        let family = c_int::try_from(af).map_err(|_| EINVAL)?;
        // SAFETY: Registers static tables of the C glue; `drop` unregisters them.
        let r = to_result(unsafe { vmcs_glue_sock_register(family) });
        match r {
            Ok(()) => {
                pr_info!("AF_VMCS registered as address family {}\n", af);
                // INVARIANT: registered just now.
                Ok(Self { registered: true })
            }
            Err(e) if e == EEXIST => {
                pr_err!(
                    "address family {} is taken by another protocol: load vmcs with af=<free \
                     number> or af=0 (docs/sockets.md)\n",
                    af
                );
                Err(e)
            }
            Err(e) => {
                pr_err!("cannot register address family {}: {:?}\n", af, e);
                Err(e)
            }
        }
    }
}

impl Drop for SocketFamilyRegistration {
    fn drop(&mut self) {
        if self.registered {
            // SAFETY: By the type invariant the family is registered.
            unsafe { vmcs_glue_sock_unregister() };
        }
    }
}

/// Borrows the `VmcsSocket` of a socket.
///
/// # Safety
///
/// `sock` must be an AF_VMCS socket whose `create` (or `accept`) succeeded and that is not
/// yet released.
unsafe fn sock_ref<'a>(sock: *mut bindings::socket) -> ArcBorrow<'a, VmcsSocket> {
    // SAFETY: Per the safety requirements `sock->sk` is ours and its private pointer holds
    // an `Arc<VmcsSocket>` until release, which does not run concurrently with other ops.
    unsafe { <Arc<VmcsSocket> as ForeignOwnable>::borrow(vmcs_glue_sk_priv((*sock).sk.cast())) }
}

/// Makes `sk` own `sref`.
///
/// # Safety
///
/// `sk` must be a fresh AF_VMCS `struct sock` without a private pointer.
unsafe fn attach(sk: *mut RawSk, sref: Arc<VmcsSocket>) {
    // SAFETY: Per the safety requirements; release takes the `Arc` back.
    unsafe { vmcs_glue_sk_set_priv(sk, sref.into_foreign()) };
}

fn to_int(r: Result) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Copies `len` bytes of a socket address the socket layer copied into kernel memory.
///
/// # Safety
///
/// `addr` must be valid for reads of `len` bytes when `len` is positive.
unsafe fn addr_bytes<'a>(addr: *const bindings::sockaddr_unsized, len: c_int) -> &'a [u8] {
    match usize::try_from(len) {
        // SAFETY: Per the safety requirements.
        Ok(n) if n > 0 && !addr.is_null() => unsafe {
            core::slice::from_raw_parts(addr.cast::<u8>(), n)
        },
        _ => &[],
    }
}

/// # Safety
///
/// Called by `__sock_create` with a fresh `sock` of `net`.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_create(
    net: *mut bindings::net,
    sock: *mut bindings::socket,
    protocol: c_int,
    kern: c_int,
) -> c_int {
    // SAFETY: `sock` is valid (function safety requirement).
    let ty = c_int::from(unsafe { (*sock).type_ });
    let sref = match VmcsSocket::create(ty, protocol) {
        Ok(s) => s,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: `net` and `sock` are valid; the type was checked by `create`.
    let sk = unsafe { vmcs_glue_sk_new(net, sock.cast(), kern) };
    if sk.is_null() {
        sref.release();
        return ENOMEM.to_errno();
    }
    // SAFETY: `sk` is fresh and now ours.
    unsafe {
        attach(sk, sref);
        sk_set_bufs(sk, DEFAULT_SOCKET_BUFFERS);
    }
    0
}

/// # Safety
///
/// Called by the C glue's `setsockopt` after the socket layer stored `SO_RCVBUF` or
/// `SO_SNDBUF` (or their `FORCE` forms) of the live AF_VMCS socket `sock`.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_bufs_changed(sock: *mut bindings::socket) {
    // SAFETY: `sock` is live (function safety requirement).
    let (s, sk) = unsafe { (sock_ref(sock), (*sock).sk.cast::<RawSk>()) };
    // SAFETY: `sk` is live.
    let bufs = unsafe { s.set_bufs(vmcs_glue_sk_rcvbuf(sk), vmcs_glue_sk_sndbuf(sk)) };
    // SAFETY: `sk` is live.
    unsafe { sk_set_bufs(sk, bufs) };
}

/// # Safety
///
/// `proto_ops->release` of an AF_VMCS socket.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_release(sock: *mut bindings::socket) -> c_int {
    // SAFETY: `sock` is valid; `sk` is null after a failed create or a second release.
    let sk = unsafe { (*sock).sk }.cast::<RawSk>();
    if sk.is_null() {
        return 0;
    }
    // SAFETY: `sk` is ours; release runs once, after every other op.
    let private = unsafe { vmcs_glue_sk_priv(sk) };
    if !private.is_null() {
        // SAFETY: Set by `attach` from `Arc::into_foreign`; cleared below.
        let sref = unsafe { <Arc<VmcsSocket> as ForeignOwnable>::from_foreign(private) };
        // SAFETY: `sk` is ours.
        unsafe { vmcs_glue_sk_set_priv(sk, core::ptr::null_mut()) };
        sref.release();
    }
    // SAFETY: `sock` owns `sk`; this drops it and clears `sock->sk`.
    unsafe { vmcs_glue_sk_free(sock.cast()) };
    0
}

/// # Safety
///
/// `proto_ops->bind` of a live AF_VMCS socket; `addr` valid for `len` bytes.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_bind(
    sock: *mut bindings::socket,
    addr: *mut bindings::sockaddr_unsized,
    len: c_int,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let (s, a) = unsafe { (sock_ref(sock), addr_bytes(addr, len)) };
    to_int(s.bind(a))
}

/// # Safety
///
/// `proto_ops->connect` of a live AF_VMCS socket; `addr` valid for `len` bytes.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_connect(
    sock: *mut bindings::socket,
    addr: *mut bindings::sockaddr_unsized,
    len: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let (s, a, timeout) = unsafe {
        (
            sock_ref(sock),
            addr_bytes(addr, len),
            vmcs_glue_sk_sndtimeo_ms((*sock).sk.cast()),
        )
    };
    // The flags are the file's `f_flags`; `O_NONBLOCK` fits.
    let nonblock = (flags as u32) & oflags::NONBLOCK != 0;
    let r = s.connect(a, nonblock, timeout);
    let state = match r {
        Ok(()) => bindings::socket_state_SS_CONNECTED,
        Err(e) if e == errno::einprogress() || e == errno::ealready() => {
            bindings::socket_state_SS_CONNECTING
        }
        Err(_) => bindings::socket_state_SS_UNCONNECTED,
    };
    // SAFETY: `sock` is valid; the state is informational (sock_diag, fdinfo).
    unsafe { vmcs_glue_sock_set_state(sock.cast(), state as c_int) };
    to_int(r)
}

/// # Safety
///
/// `proto_ops->accept` of a live AF_VMCS socket; `newsock` a fresh socket of the same
/// type and ops.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_accept(
    sock: *mut bindings::socket,
    newsock: *mut bindings::socket,
    flags: c_int,
    kern: c_int,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let s = unsafe { sock_ref(sock) };
    let nonblock = (flags as u32) & oflags::NONBLOCK != 0;
    // SAFETY: `sock` is live. `sock_rcvtimeo()`: accept waits at most SO_RCVTIMEO.
    let timeo = unsafe { socket_options(sock, true, nonblock) }.timeo;
    let child = match s.accept(timeo) {
        Ok(c) => c,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: `sock` is live and `newsock` fresh.
    let sk = unsafe { vmcs_glue_sk_new_accepted(sock.cast(), newsock.cast(), kern) };
    if sk.is_null() {
        child.release();
        return ENOMEM.to_errno();
    }
    // The connection inherited the listener's buffers; so do the options that show them.
    let bufs = child.sk_bufs();
    // SAFETY: `sk` is fresh; `newsock` is valid.
    unsafe {
        attach(sk, child);
        sk_set_bufs(sk, bufs);
        vmcs_glue_sock_set_state(newsock.cast(), bindings::socket_state_SS_CONNECTED as c_int);
    }
    0
}

/// # Safety
///
/// `proto_ops->getname` of a live AF_VMCS socket; `addr` valid for a
/// `struct sockaddr_storage`.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_getname(
    sock: *mut bindings::socket,
    addr: *mut bindings::sockaddr,
    peer: c_int,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let s = unsafe { sock_ref(sock) };
    match s.name(peer != 0) {
        Ok(a) => {
            // SAFETY: `addr` has room for a `sockaddr_storage` (128 bytes).
            unsafe { addr.cast::<SockaddrVmcs>().write_unaligned(a) };
            size_of::<SockaddrVmcs>() as c_int
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `proto_ops->poll` of a live AF_VMCS socket open as `file`; `wait` null or valid.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_poll(
    file: *mut bindings::file,
    sock: *mut bindings::socket,
    wait: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: As in `vmcs_chr_poll`: the file is open for the call, `wait` null or valid.
    let (s, f, table) = unsafe {
        (
            sock_ref(sock),
            File::from_raw_file(file),
            PollTable::from_raw(wait),
        )
    };
    // SAFETY: `sock` is live.
    let lowat = unsafe { socket_options(sock, true, true) }.lowat;
    let (mask, err) = s.poll(f, &table, lowat);
    if let Some(e) = err {
        // SAFETY: `sock->sk` is live; `sk_err` is what `SO_ERROR` reports.
        unsafe { vmcs_glue_sk_set_err((*sock).sk.cast(), -e.to_errno()) };
    }
    mask
}

/// # Safety
///
/// `proto_ops->ioctl` of a live AF_VMCS socket; `arg` a user pointer.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_ioctl(
    sock: *mut bindings::socket,
    cmd: c_uint,
    arg: c_ulong,
) -> c_int {
    // SAFETY: Guaranteed by the caller.
    let s = unsafe { sock_ref(sock) };
    let r = s.ioctl_queued(cmd).and_then(|n| {
        let v = c_int::try_from(n).unwrap_or(c_int::MAX);
        UserSlice::new(UserPtr::from_addr(arg), size_of::<c_int>())
            .writer()
            .write(&v)
    });
    to_int(r)
}

/// # Safety
///
/// `proto_ops->listen` of a live AF_VMCS socket.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_listen(sock: *mut bindings::socket, backlog: c_int) -> c_int {
    // SAFETY: Guaranteed by the caller.
    to_int(unsafe { sock_ref(sock) }.listen(backlog))
}

/// # Safety
///
/// `proto_ops->shutdown` of a live AF_VMCS socket.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_shutdown(sock: *mut bindings::socket, how: c_int) -> c_int {
    // SAFETY: Guaranteed by the caller.
    to_int(unsafe { sock_ref(sock) }.shutdown(how))
}

/// Whether the socket's file is `O_NONBLOCK` (kernel sockets have no file).
///
/// # Safety
///
/// `sock` must be valid.
unsafe fn sock_nonblocking(sock: *mut bindings::socket) -> bool {
    // SAFETY: `sock` is valid; `file` is null or valid while the socket is in use.
    let file = unsafe { (*sock).file };
    // SAFETY: As above.
    !file.is_null() && unsafe { nonblocking(file) }
}

/// # Safety
///
/// `proto_ops->sendmsg` of a live AF_VMCS socket; `m` a valid `msghdr` with a source
/// iterator.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_sendmsg(
    sock: *mut bindings::socket,
    m: *mut bindings::msghdr,
    _len: usize,
) -> c_int {
    // SAFETY: Guaranteed by the caller: `msg_iter` is a source iterator valid for the call.
    let (s, flags, opts, src) = unsafe {
        (
            sock_ref(sock),
            (*m).msg_flags,
            socket_options(sock, false, sock_nonblocking(sock)),
            IovIterSource::from_raw(core::ptr::addr_of_mut!((*m).msg_iter)),
        )
    };
    // SAFETY: `m` is valid.
    if !unsafe { (*m).msg_name }.is_null() {
        // vsock: the destination of a connected socket cannot be given.
        return errno::eisconn().to_errno();
    }
    match s.sendmsg(src, flags, opts) {
        Ok(n) => c_int::try_from(n).unwrap_or(c_int::MAX),
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `proto_ops->recvmsg` of a live AF_VMCS socket; `m` a valid `msghdr` with a destination
/// iterator and `msg_name` null or room for a `sockaddr_storage`.
#[no_mangle]
unsafe extern "C" fn vmcs_sock_recvmsg(
    sock: *mut bindings::socket,
    m: *mut bindings::msghdr,
    _len: usize,
    flags: c_int,
) -> c_int {
    // SAFETY: Guaranteed by the caller: `msg_iter` is a destination iterator.
    let (s, opts, dst) = unsafe {
        (
            sock_ref(sock),
            socket_options(sock, true, sock_nonblocking(sock)),
            IovIterDest::from_raw(core::ptr::addr_of_mut!((*m).msg_iter)),
        )
    };
    match s.recvmsg(dst, flags as u32, opts) {
        Ok((n, out)) => {
            // SAFETY: `m` is valid; `msg_name`, when set, has room for the address.
            unsafe {
                (*m).msg_flags |= out;
                if !(*m).msg_name.is_null() {
                    if let Some(a) = s.peer_addr() {
                        (*m).msg_name.cast::<SockaddrVmcs>().write_unaligned(a);
                        (*m).msg_namelen = size_of::<SockaddrVmcs>() as c_int;
                    }
                }
            }
            c_int::try_from(n).unwrap_or(c_int::MAX)
        }
        Err(e) => e.to_errno(),
    }
}
