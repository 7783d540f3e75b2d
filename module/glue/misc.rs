// SPDX-License-Identifier: GPL-2.0

//! The `/dev/vmcs` misc device registration, with the C glue's own file_operations (whose
//! `owner` pins the module while a file is open; docs/architecture.md).

use kernel::ffi::{c_int, c_void};
use kernel::{bindings, error::to_result, prelude::*, types::Opaque};

extern "C" {
    /// Returns the `struct file_operations` of /dev/vmcs (a static table in vmcs_glue.c),
    /// typed `void *` here because bindgen's `file_operations` is not FFI-safe by lint.
    fn vmcs_glue_fops() -> *const c_void;
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
