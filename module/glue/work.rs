// SPDX-License-Identifier: GPL-2.0

//! Workqueue operations the `kernel` crate does not wrap yet (used by the domain's works).
//!
//! The `kernel` crate's `Arc<T>` work items own one reference while they are pending: the
//! `Arc` is leaked into the queue on a successful enqueue and taken back in `run`. The two
//! helpers below keep that accounting.

use kernel::ffi::c_int;
use kernel::{bindings, sync::Arc};

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
