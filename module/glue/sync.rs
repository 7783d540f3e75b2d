// SPDX-License-Identifier: GPL-2.0

//! A spinlock taken with bottom halves off (`spin_lock_bh`), which the `kernel` crate of
//! 7.2 lacks.
//!
//! The net device's transmit path (`ndo_start_xmit`) runs in softirq context and sends
//! through the transport like the core does from process context. A plain spinlock that
//! both take would deadlock when the softirq interrupts a holder on the same CPU, so every
//! lock the transmit path takes ([`SpinLockBh`]: the link's tx lock, the domain's
//! `works_enabled`) turns bottom halves off while held.

use kernel::{bindings, sync::lock::Backend};

extern "C" {
    fn vmcs_glue_spin_lock_bh(lock: *mut bindings::spinlock_t);
    fn vmcs_glue_spin_unlock_bh(lock: *mut bindings::spinlock_t);
    fn vmcs_glue_spin_trylock_bh(lock: *mut bindings::spinlock_t) -> kernel::ffi::c_int;
}

/// A spinlock whose holder runs with bottom halves off. Created like the kernel's locks:
/// `SpinLockBh::new(value, c"name", kernel::static_lock_class!())`.
pub(crate) type SpinLockBh<T> = kernel::sync::lock::Lock<T, SpinLockBhBackend>;

/// The [`Backend`] of [`SpinLockBh`]: `spin_lock_bh`/`spin_unlock_bh`.
pub(crate) struct SpinLockBhBackend;

// SAFETY: `lock`/`try_lock` acquire the spinlock (with bottom halves off) so that only one
// guard exists at a time, `unlock` releases it (and turns them back on); `init` initialises
// it with the given class. The state is a `spinlock_t`, as for the kernel's `SpinLock`.
unsafe impl Backend for SpinLockBhBackend {
    type State = bindings::spinlock_t;
    type GuardState = ();

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const kernel::ffi::c_char,
        key: *mut bindings::lock_class_key,
    ) {
        // SAFETY: The caller guarantees that `ptr` is valid for writes and that `name` and
        // `key` are valid for the lifetime of the lock.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: The caller guarantees that `ptr` points to an initialised spinlock.
        unsafe { vmcs_glue_spin_lock_bh(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, _guard_state: &Self::GuardState) {
        // SAFETY: The caller guarantees that `ptr` is initialised and held by this context.
        unsafe { vmcs_glue_spin_unlock_bh(ptr) }
    }

    unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
        // SAFETY: The caller guarantees that `ptr` points to an initialised spinlock.
        (unsafe { vmcs_glue_spin_trylock_bh(ptr) } != 0).then_some(())
    }

    unsafe fn assert_is_held(ptr: *mut Self::State) {
        // SAFETY: The caller guarantees that `ptr` points to an initialised spinlock.
        unsafe { bindings::spin_assert_is_held(ptr) }
    }
}
