// SPDX-License-Identifier: GPL-2.0

//! Scheduler checks the busy-poll loops need (conn/endpoint/busy_poll.rs): the `kernel`
//! crate has `signal_pending` on a task but no `need_resched`, an inline C function.

extern "C" {
    fn vmcs_glue_need_resched() -> bool;
    fn vmcs_glue_single_task_running() -> bool;
    fn vmcs_glue_jiffies_to_usecs(j: kernel::ffi::c_ulong) -> kernel::ffi::c_uint;
}

/// Whether the current task should give the CPU up (`need_resched()`).
pub(crate) fn need_resched() -> bool {
    // SAFETY: `need_resched()` reads a flag of the current task; always safe.
    unsafe { vmcs_glue_need_resched() }
}

/// Whether the current task is the only one runnable on this CPU
/// (`single_task_running()`, which KVM's halt polling checks too).
pub(crate) fn single_task_running() -> bool {
    // SAFETY: reads this CPU's run-queue length; always safe (a stale answer only ends a
    // busy poll early or late).
    unsafe { vmcs_glue_single_task_running() }
}

/// Whether a signal is pending for the current task.
pub(crate) fn signal_pending() -> bool {
    kernel::current!().signal_pending()
}

/// The current `jiffies`.
pub(crate) fn jiffies() -> kernel::ffi::c_ulong {
    // SAFETY: `jiffies` is a C global the timer interrupt updates; a racy read of one
    // machine word is what C's `READ_ONCE(jiffies)` does.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(kernel::bindings::jiffies)) }
}

/// `jiffies_to_usecs()`.
pub(crate) fn jiffies_to_usecs(j: kernel::ffi::c_ulong) -> u32 {
    // SAFETY: a pure conversion.
    unsafe { vmcs_glue_jiffies_to_usecs(j) }
}
