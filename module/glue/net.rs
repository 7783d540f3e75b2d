// SPDX-License-Identifier: GPL-2.0

//! The vmcsN net device as the network stack sees it: the `struct net_device` (its tables
//! and NAPI context live in module/vmcs_net_glue.c), its registration, and owned socket
//! buffers ([`Skb`]). The logic is in module/net/; its C entry points are in
//! module/net/entry.rs.
//!
//! `struct net_device` and `struct sk_buff` are opaque here (`c_void`): the bindings of
//! 7.2 do not include netdevice.h, and every field access goes through a C helper.

use kernel::ffi::{c_char, c_int, c_uint, c_void};
use kernel::{error::to_result, prelude::*};

extern "C" {
    fn vmcs_net_alloc(
        parent: *mut c_void,
        name: *const c_char,
        txqs: c_uint,
        mac: *const u8,
        max_mtu: c_uint,
    ) -> *mut c_void;
    fn vmcs_net_set_rust(dev: *mut c_void, rust: *mut c_void);
    fn vmcs_net_register(dev: *mut c_void) -> c_int;
    fn vmcs_net_unregister(dev: *mut c_void);
    fn vmcs_net_free(dev: *mut c_void);
    fn vmcs_net_name(dev: *mut c_void) -> *const c_char;
    fn vmcs_net_set_carrier(dev: *mut c_void, on: bool);
    fn vmcs_net_mtu(dev: *mut c_void) -> c_uint;
    fn vmcs_net_napi_enable(dev: *mut c_void);
    fn vmcs_net_napi_disable(dev: *mut c_void);
    fn vmcs_net_napi_schedule(dev: *mut c_void);
    fn vmcs_net_napi_complete(dev: *mut c_void, done: c_int) -> bool;
    fn vmcs_net_napi_reschedule(dev: *mut c_void);
    fn vmcs_net_rx_enqueue(dev: *mut c_void, skb: *mut c_void);
    fn vmcs_net_rx_dequeue(dev: *mut c_void) -> *mut c_void;
    fn vmcs_net_rx_queued(dev: *mut c_void) -> c_uint;
    fn vmcs_net_rx_purge(dev: *mut c_void);
    fn vmcs_net_gro_receive(dev: *mut c_void, skb: *mut c_void);
    fn vmcs_net_rx_alloc(dev: *mut c_void, len: c_uint, data: *mut *mut u8) -> *mut c_void;
    fn vmcs_net_rx_finish(
        dev: *mut c_void,
        skb: *mut c_void,
        partial: bool,
        csum_start: u16,
        csum_offset: u16,
    ) -> c_int;
    fn vmcs_net_stop_queue(dev: *mut c_void, q: u16);
    fn vmcs_net_wake_queue(dev: *mut c_void, q: u16);
    fn vmcs_net_start_queues(dev: *mut c_void);
    fn vmcs_net_stop_queues(dev: *mut c_void);
    fn vmcs_net_skb_data(skb: *mut c_void, data: *mut *const u8, len: *mut c_uint) -> bool;
    fn vmcs_net_skb_csum(skb: *mut c_void, start: *mut u16, offset: *mut u16) -> bool;
    fn vmcs_net_skb_consume(skb: *mut c_void);
    fn vmcs_net_skb_drop(skb: *mut c_void);
}

/// One `struct net_device` of the C glue, allocated and freed by this value.
///
/// # Invariants
///
/// `dev` is a device from `vmcs_net_alloc`, freed exactly once, in `drop`. It is registered
/// between a successful [`NetDevice::register`] and [`NetDevice::unregister`] (the owner
/// calls them at most once each, in that order, and unregisters before dropping).
pub(crate) struct NetDevice {
    dev: *mut c_void,
}

// SAFETY: The net_device may be used from any thread; every helper takes its own locks.
unsafe impl Send for NetDevice {}
// SAFETY: As above: `&NetDevice` methods are callable concurrently.
unsafe impl Sync for NetDevice {}

impl NetDevice {
    /// A new Ethernet device of `parent` (its sysfs `device`, what udev's `DRIVERS` sees)
    /// named `name` with `txqs` transmit queues, address `mac` and MTUs up to `max_mtu`,
    /// not registered, carrier off. The owner unregisters it before `parent` unbinds.
    pub(crate) fn new(
        parent: &kernel::device::Device,
        name: &CStr,
        txqs: u32,
        mac: &[u8; 6],
        max_mtu: u32,
    ) -> Result<Self> {
        // `Device` is `#[repr(transparent)]` over `Opaque<bindings::device>`: its address is
        // that of the C `struct device` (the kernel crate keeps `as_raw` to itself).
        let parent = core::ptr::from_ref(parent).cast::<c_void>().cast_mut();
        // SAFETY: `parent` is a valid device (the net device takes a reference on it when
        // registered); `name` is NUL-terminated and `mac` is 6 bytes; both are copied.
        let dev =
            unsafe { vmcs_net_alloc(parent, name.as_char_ptr(), txqs, mac.as_ptr(), max_mtu) };
        if dev.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: allocated just now, not registered.
        Ok(Self { dev })
    }

    /// `register_netdev`: the device appears, and the C glue hands `owner` to every entry
    /// point of module/net/entry.rs from now on.
    ///
    /// # Safety
    ///
    /// `owner` must point to the net layer's `VmcsNet` that owns this value, and stay valid
    /// until [`NetDevice::unregister`] returned.
    pub(crate) unsafe fn register(&self, owner: *const c_void) -> Result {
        // SAFETY: `dev` is valid and not registered (type invariant); no entry point runs
        // before `register_netdev`, so the pointer is in place for all of them.
        unsafe { vmcs_net_set_rust(self.dev, owner.cast_mut()) };
        // SAFETY: As above.
        to_result(unsafe { vmcs_net_register(self.dev) })
    }

    /// `unregister_netdev`: closes the device if it is up and waits until no operation of
    /// it runs any more.
    pub(crate) fn unregister(&self) {
        // SAFETY: `dev` is valid and registered (type invariant: called once, after
        // `register` succeeded).
        unsafe { vmcs_net_unregister(self.dev) };
    }

    /// The interface name (`vmcs0`, ...), for log lines.
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: `dev->name` is a NUL-terminated array inside the device, which lives as
        // long as `self`; renames rewrite it in place (a racing rename may show a mix).
        unsafe { CStr::from_char_ptr(vmcs_net_name(self.dev)) }
    }

    /// Carrier on or off (`netif_carrier_on/off`).
    pub(crate) fn set_carrier(&self, on: bool) {
        // SAFETY: `dev` is valid.
        unsafe { vmcs_net_set_carrier(self.dev, on) };
    }

    /// The current MTU.
    pub(crate) fn mtu(&self) -> u32 {
        // SAFETY: `dev` is valid; the helper reads `dev->mtu` once.
        unsafe { vmcs_net_mtu(self.dev) }
    }

    /// `napi_enable` (in `ndo_open`).
    pub(crate) fn napi_enable(&self) {
        // SAFETY: `dev` is valid; the NAPI context was added at allocation.
        unsafe { vmcs_net_napi_enable(self.dev) };
    }

    /// `napi_disable` (in `ndo_stop`): waits for a running poll.
    pub(crate) fn napi_disable(&self) {
        // SAFETY: As for `napi_enable`.
        unsafe { vmcs_net_napi_disable(self.dev) };
    }

    /// Schedules the NAPI poll from process context (bottom halves off around it).
    pub(crate) fn napi_schedule(&self) {
        // SAFETY: As for `napi_enable`; scheduling a disabled context does nothing.
        unsafe { vmcs_net_napi_schedule(self.dev) };
    }

    /// `napi_complete_done` (in the poll): false if the poll must go on.
    pub(crate) fn napi_complete(&self, done: i32) -> bool {
        // SAFETY: Called from the NAPI poll of this device.
        unsafe { vmcs_net_napi_complete(self.dev, done) }
    }

    /// `napi_schedule` from the NAPI poll itself (softirq context).
    pub(crate) fn napi_reschedule(&self) {
        // SAFETY: Called from the NAPI poll of this device, bottom halves are off.
        unsafe { vmcs_net_napi_reschedule(self.dev) };
    }

    /// Queues a received frame for the NAPI poll.
    pub(crate) fn rx_enqueue(&self, skb: RxSkb) {
        let skb = core::mem::ManuallyDrop::new(skb);
        // SAFETY: `skb` is owned; the queue takes it over.
        unsafe { vmcs_net_rx_enqueue(self.dev, skb.skb) };
    }

    /// Frames waiting for the NAPI poll.
    pub(crate) fn rx_queued(&self) -> u32 {
        // SAFETY: `dev` is valid; a lockless read of the queue length.
        unsafe { vmcs_net_rx_queued(self.dev) }
    }

    /// Drops every frame waiting for the NAPI poll.
    pub(crate) fn rx_purge(&self) {
        // SAFETY: `dev` is valid; the queue has its own lock.
        unsafe { vmcs_net_rx_purge(self.dev) };
    }

    /// Hands the oldest queued frame to the stack (`napi_gro_receive`); false if none.
    /// Called from the NAPI poll only.
    pub(crate) fn rx_deliver_one(&self) -> bool {
        // SAFETY: `dev` is valid; the queue has its own lock.
        let skb = unsafe { vmcs_net_rx_dequeue(self.dev) };
        if skb.is_null() {
            return false;
        }
        // SAFETY: `skb` is an owned, finished receive skb; the stack takes it over. Called
        // from the NAPI poll (softirq).
        unsafe { vmcs_net_gro_receive(self.dev, skb) };
        true
    }

    /// A receive buffer holding a copy of `frame`; `None` on `ENOMEM`.
    pub(crate) fn rx_alloc(&self, frame: &[u8]) -> Option<RxSkb> {
        let len = u32::try_from(frame.len()).ok()?;
        let mut data: *mut u8 = core::ptr::null_mut();
        // SAFETY: `dev` is valid; `data` is a valid out-pointer.
        let skb = unsafe { vmcs_net_rx_alloc(self.dev, len, &mut data) };
        if skb.is_null() || data.is_null() {
            return None;
        }
        // SAFETY: `skb_put` made `data` point to `len` writable bytes of the new skb, which
        // nothing else references yet; `frame` is `len` readable bytes elsewhere.
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), data, frame.len()) };
        Some(RxSkb { skb })
    }

    /// Sets the protocol and checksum state of a received frame: `csum` is the partial
    /// checksum's (start, offset) from the frame's start, already checked against its
    /// length; `None` means verified. Err if the C side disagrees with the bounds.
    pub(crate) fn rx_finish(&self, skb: &mut RxSkb, csum: Option<(u16, u16)>) -> Result {
        let (partial, start, off) = match csum {
            Some((s, o)) => (true, s, o),
            None => (false, 0, 0),
        };
        // SAFETY: `skb` is an owned receive skb of this device, at least `ETH_HLEN` long
        // (checked by the caller).
        to_result(unsafe { vmcs_net_rx_finish(self.dev, skb.skb, partial, start, off) })
    }

    /// Stops transmit queue `q` (`netif_stop_subqueue`).
    pub(crate) fn stop_queue(&self, q: u16) {
        // SAFETY: `dev` is valid; `q` below the queues allocated is the caller's choice and
        // the helper ignores nothing: callers pass a peer id below `txqs`.
        unsafe { vmcs_net_stop_queue(self.dev, q) };
    }

    /// Wakes transmit queue `q` (`netif_wake_subqueue`).
    pub(crate) fn wake_queue(&self, q: u16) {
        // SAFETY: As for `stop_queue`.
        unsafe { vmcs_net_wake_queue(self.dev, q) };
    }

    /// Starts every transmit queue (`ndo_open`).
    pub(crate) fn start_queues(&self) {
        // SAFETY: `dev` is valid.
        unsafe { vmcs_net_start_queues(self.dev) };
    }

    /// Stops every transmit queue (`ndo_stop`).
    pub(crate) fn stop_queues(&self) {
        // SAFETY: `dev` is valid.
        unsafe { vmcs_net_stop_queues(self.dev) };
    }
}

impl Drop for NetDevice {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `dev` is valid and no longer registered; nothing
        // uses it after this.
        unsafe { vmcs_net_free(self.dev) };
    }
}

/// A received frame being prepared for the stack (owned `struct sk_buff`).
///
/// # Invariants
///
/// `skb` is an skb this value owns; it is freed in `drop` unless handed over.
pub(crate) struct RxSkb {
    skb: *mut c_void,
}

impl Drop for RxSkb {
    fn drop(&mut self) {
        // SAFETY: Owned (type invariant).
        unsafe { vmcs_net_skb_drop(self.skb) };
    }
}

/// A frame the stack handed to `ndo_start_xmit` (owned `struct sk_buff`): dropped
/// (`dev_kfree_skb_any`, counted as a drop by tracing) unless [`TxSkb::consume`]d.
///
/// # Invariants
///
/// `skb` is an skb this value owns.
pub(crate) struct TxSkb {
    skb: *mut c_void,
}

// SAFETY: An skb may be freed from any context (`dev_kfree_skb_any`).
unsafe impl Send for TxSkb {}

impl TxSkb {
    /// Takes over the skb `ndo_start_xmit` was handed.
    ///
    /// # Safety
    ///
    /// `skb` must be the skb of an `ndo_start_xmit` call, which now belongs to the driver.
    pub(crate) unsafe fn from_raw(skb: *mut c_void) -> Self {
        // INVARIANT: the driver owns `skb` (function safety requirement).
        Self { skb }
    }

    /// The frame's bytes (linearised first; `None` on `ENOMEM`).
    pub(crate) fn data(&mut self) -> Option<&[u8]> {
        let mut data: *const u8 = core::ptr::null();
        let mut len: c_uint = 0;
        // SAFETY: `skb` is owned; the out-pointers are valid.
        if !unsafe { vmcs_net_skb_data(self.skb, &mut data, &mut len) } || data.is_null() {
            return None;
        }
        // SAFETY: After linearisation `data` points to `len` bytes of the skb's head, which
        // stay valid and unchanged while we own the skb (the `&mut self` borrow).
        Some(unsafe { core::slice::from_raw_parts(data, len as usize) })
    }

    /// The checksum left to the device: (start from the frame's start, offset), or `None`.
    pub(crate) fn csum_partial(&self) -> Option<(u16, u16)> {
        let (mut start, mut off) = (0u16, 0u16);
        // SAFETY: `skb` is owned; the out-pointers are valid.
        unsafe { vmcs_net_skb_csum(self.skb, &mut start, &mut off) }.then_some((start, off))
    }

    /// Frees a transmitted frame (`dev_consume_skb_any`).
    pub(crate) fn consume(self) {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: Owned (type invariant); not used again.
        unsafe { vmcs_net_skb_consume(this.skb) };
    }
}

impl Drop for TxSkb {
    fn drop(&mut self) {
        // SAFETY: Owned (type invariant).
        unsafe { vmcs_net_skb_drop(self.skb) };
    }
}
