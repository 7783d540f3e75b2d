// SPDX-License-Identifier: GPL-2.0

//! The vmcsN net device as the network stack sees it: the `struct net_device` (its tables
//! and NAPI context live in module/vmcs_net_glue.c), its registration, and owned socket
//! buffers ([`Skb`]). The logic is in module/net/; its C entry points are in
//! module/net/entry.rs.
//!
//! `struct net_device` and `struct sk_buff` are opaque here (`c_void`): the bindings of
//! 7.2 do not include netdevice.h, and every field access goes through a C helper.

use core::mem::MaybeUninit;
use kernel::ffi::{c_char, c_int, c_uint, c_void};
use kernel::{error::to_result, prelude::*};

extern "C" {
    fn vmcs_net_alloc(
        parent: *mut c_void,
        name: *const c_char,
        txqs: c_uint,
        mac: *const u8,
        max_mtu: c_uint,
        tso_max: c_uint,
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
    fn vmcs_net_rx_data(skb: *mut c_void, len: *mut c_uint) -> *const u8;
    fn vmcs_net_rx_finish(
        dev: *mut c_void,
        skb: *mut c_void,
        partial: bool,
        csum_start: u16,
        csum_offset: u16,
        gso_size: u16,
        gso_tcpv6: bool,
        gso_ecn: bool,
    ) -> c_int;
    fn vmcs_net_stop_queue(dev: *mut c_void, q: u16);
    fn vmcs_net_wake_queue(dev: *mut c_void, q: u16);
    fn vmcs_net_start_queues(dev: *mut c_void);
    fn vmcs_net_stop_queues(dev: *mut c_void);
    fn vmcs_net_skb_len(skb: *mut c_void, head: *mut *const u8, headlen: *mut c_uint) -> c_uint;
    fn vmcs_net_skb_copy_bits(
        skb: *const c_void,
        offset: c_int,
        to: *mut c_void,
        len: c_int,
    ) -> c_int;
    fn vmcs_net_skb_offload(
        skb: *mut c_void,
        start: *mut u16,
        offset: *mut u16,
        gso_size: *mut u32,
        gso_type: *mut u32,
    ) -> bool;
    fn vmcs_net_tx_sent(dev: *mut c_void, q: u16, bytes: c_uint, more: bool) -> bool;
    fn vmcs_net_tx_completed(dev: *mut c_void, q: u16, bytes: c_uint);
    fn vmcs_net_tx_reset(dev: *mut c_void);
    fn vmcs_net_skb_gso_fits(skb: *const c_void, len: c_uint) -> bool;
    fn vmcs_net_icmp_too_big(skb: *mut c_void, mtu: c_uint);
    fn vmcs_net_icmp6_too_big(skb: *mut c_void, mtu: c_uint);
    fn vmcs_net_skb_consume(skb: *mut c_void);
    fn vmcs_net_skb_drop(skb: *mut c_void);
}

/// What a frame leaves to the receiver, in the wire's terms (docs/protocol.md §10): the
/// checksum's place, and for a GSO packet its segment size and type
/// (`proto::frame::eth_gso`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Offload {
    /// (start from the frame's first byte, offset from there) of a checksum not computed.
    pub(crate) csum: Option<(u16, u16)>,
    /// (`gso_size`, `eth_gso` type) of a packet larger than one segment.
    pub(crate) gso: Option<(u32, u32)>,
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
    /// named `name` with `txqs` transmit queues, address `mac`, MTUs up to `max_mtu` and
    /// GSO packets up to `tso_max` bytes (0: no TSO), not registered, carrier off. The
    /// owner unregisters it before `parent` unbinds.
    pub(crate) fn new(
        parent: &kernel::device::Device,
        name: &CStr,
        txqs: u32,
        mac: &[u8; 6],
        max_mtu: u32,
        tso_max: u32,
    ) -> Result<Self> {
        // `Device` is `#[repr(transparent)]` over `Opaque<bindings::device>`: its address is
        // that of the C `struct device` (the kernel crate keeps `as_raw` to itself).
        let parent = core::ptr::from_ref(parent).cast::<c_void>().cast_mut();
        // SAFETY: `parent` is a valid device (the net device takes a reference on it when
        // registered); `name` is NUL-terminated and `mac` is 6 bytes; both are copied.
        let dev = unsafe {
            vmcs_net_alloc(
                parent,
                name.as_char_ptr(),
                txqs,
                mac.as_ptr(),
                max_mtu,
                tso_max,
            )
        };
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

    /// A receive buffer of `len` bytes that `fill` copies the frame into (it returns the
    /// bytes it copied); `None` on `ENOMEM` or when `fill` copied less than `len`.
    pub(crate) fn rx_alloc(
        &self,
        len: usize,
        fill: impl FnOnce(&mut [MaybeUninit<u8>]) -> usize,
    ) -> Option<RxSkb> {
        let n = u32::try_from(len).ok()?;
        let mut data: *mut u8 = core::ptr::null_mut();
        // SAFETY: `dev` is valid; `data` is a valid out-pointer.
        let skb = unsafe { vmcs_net_rx_alloc(self.dev, n, &mut data) };
        if skb.is_null() {
            return None;
        }
        // INVARIANT: the new skb is ours; dropped (freed) on every early return below.
        let skb = RxSkb { skb };
        if data.is_null() {
            return None;
        }
        // SAFETY: `skb_put` made `data` point to `len` writable bytes of the new skb, which
        // nothing else references yet; `MaybeUninit<u8>` has the layout of `u8`.
        let dst = unsafe { core::slice::from_raw_parts_mut(data.cast::<MaybeUninit<u8>>(), len) };
        (fill(dst) == len).then_some(skb)
    }

    /// Sets the protocol, checksum and GSO state of a received frame from `off`, whose
    /// every field Rust has checked against the frame (docs/netdev.md "Hostile input"). Err
    /// if the C side disagrees with the checksum's bounds.
    pub(crate) fn rx_finish(&self, skb: &mut RxSkb, off: &Offload) -> Result {
        let (partial, start, at) = match off.csum {
            Some((s, o)) => (true, s, o),
            None => (false, 0, 0),
        };
        let (size, ty) = off.gso.unwrap_or((0, 0));
        let size = u16::try_from(size).map_err(|_| EINVAL)?;
        let v6 = ty & crate::proto::frame::eth_gso::TCPV6 != 0;
        let ecn = ty & crate::proto::frame::eth_gso::ECN != 0;
        // SAFETY: `skb` is an owned receive skb of this device, at least `ETH_HLEN` long
        // (checked by the caller).
        to_result(unsafe {
            vmcs_net_rx_finish(self.dev, skb.skb, partial, start, at, size, v6, ecn)
        })
    }

    /// BQL: `bytes` queued on transmit queue `q` (`__netdev_tx_sent_queue`); whether the
    /// frames batched so far must be published now.
    pub(crate) fn tx_sent(&self, q: u16, bytes: u32, more: bool) -> bool {
        // SAFETY: `dev` is valid; `q` is below the queues allocated (a peer id, checked by
        // the caller).
        unsafe { vmcs_net_tx_sent(self.dev, q, bytes, more) }
    }

    /// BQL: `bytes` of queue `q` completed. The caller never completes more than it
    /// reported sent since the last [`NetDevice::tx_reset`] (`dql_completed` BUG()s).
    pub(crate) fn tx_completed(&self, q: u16, bytes: u32) {
        // SAFETY: As for `tx_sent`.
        unsafe { vmcs_net_tx_completed(self.dev, q, bytes) };
    }

    /// BQL: every queue starts again from nothing in flight.
    pub(crate) fn tx_reset(&self) {
        // SAFETY: `dev` is valid.
        unsafe { vmcs_net_tx_reset(self.dev) };
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

impl RxSkb {
    /// The frame's bytes (the copy this guest made; nothing else writes them).
    pub(crate) fn data(&self) -> &[u8] {
        let mut len: c_uint = 0;
        // SAFETY: Owned (type invariant); the out-pointer is valid.
        let p = unsafe { vmcs_net_rx_data(self.skb, &mut len) };
        if p.is_null() {
            return &[];
        }
        // SAFETY: `p` points to the `len` bytes of the skb's linear data, which only this
        // owner changes and which live as long as the borrow of `self`.
        unsafe { core::slice::from_raw_parts(p, len as usize) }
    }
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

    /// Runs `f` on an skb the stack still owns (`ndo_features_check`): `f` sees it as a
    /// `&TxSkb` and can neither free nor keep it.
    ///
    /// # Safety
    ///
    /// `skb` must be a valid skb that stays valid and unchanged during the call.
    pub(crate) unsafe fn with_borrowed<R>(skb: *mut c_void, f: impl FnOnce(&TxSkb) -> R) -> R {
        // INVARIANT: not owned, but never dropped or consumed: `ManuallyDrop` keeps it from
        // being freed, and `f` only gets a shared reference (no `consume`, no move).
        let skb = core::mem::ManuallyDrop::new(Self { skb });
        f(&skb)
    }

    /// The frame's length (head and fragments) and its linear head, which holds at least
    /// the Ethernet header of any frame the stack builds (shorter heads are dropped).
    pub(crate) fn frame(&self) -> (usize, &[u8]) {
        let mut head: *const u8 = core::ptr::null();
        let mut headlen: c_uint = 0;
        // SAFETY: `skb` is owned; the out-pointers are valid.
        let len = unsafe { vmcs_net_skb_len(self.skb, &mut head, &mut headlen) };
        if head.is_null() {
            return (len as usize, &[]);
        }
        // SAFETY: `head` points to the `headlen` bytes of the skb's linear part, which stay
        // valid and unchanged while we own the skb (the borrow of `self`).
        (len as usize, unsafe {
            core::slice::from_raw_parts(head, headlen as usize)
        })
    }

    /// Copies bytes `at..at + n` of the frame (head and fragments, `skb_copy_bits`) to
    /// `dst`; false if that range is not in the frame.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `n` bytes and not inside the skb.
    pub(crate) unsafe fn copy_bits(&self, at: usize, dst: *mut u8, n: usize) -> bool {
        let (Ok(at), Ok(n)) = (c_int::try_from(at), c_int::try_from(n)) else {
            return false;
        };
        // SAFETY: `skb` is owned; `dst` is valid for `n` bytes (function safety
        // requirement); `skb_copy_bits` checks the range against the skb.
        unsafe { vmcs_net_skb_copy_bits(self.skb, at, dst.cast(), n) == 0 }
    }

    /// What the frame leaves to the receiver: its checksum and GSO state (a GSO type the
    /// wire has not carries bit 31, which [`crate::net`] drops).
    pub(crate) fn offload(&self) -> Offload {
        let (mut start, mut off, mut size, mut ty) = (0u16, 0u16, 0u32, 0u32);
        // SAFETY: `skb` is owned; the out-pointers are valid.
        let partial =
            unsafe { vmcs_net_skb_offload(self.skb, &mut start, &mut off, &mut size, &mut ty) };
        Offload {
            csum: partial.then_some((start, off)),
            gso: (size != 0).then_some((size, ty)),
        }
    }

    /// Whether every segment of this GSO packet, Ethernet header included, is at most `len`
    /// bytes (`skb_gso_validate_mac_len`).
    pub(crate) fn gso_fits(&self, len: u32) -> bool {
        // SAFETY: `skb` is valid (owned, or borrowed for the call: `with_borrowed`); the
        // helper only reads it.
        unsafe { vmcs_net_skb_gso_fits(self.skb, len) }
    }

    /// Answers the frame's sender with ICMP "fragmentation needed" (IPv4, `v6` false) or
    /// ICMPv6 "packet too big" naming `mtu`, as a tunnel does: the sender's stack lowers its
    /// path MTU to this destination and sends again. The frame is not consumed (the caller
    /// drops it). The ICMP helpers check the IP header's bounds and send nothing for a frame
    /// that is not a unicast IP packet of this host's routes.
    pub(crate) fn icmp_too_big(&self, mtu: u32, v6: bool) {
        // SAFETY: `skb` is owned; `icmp_ndo_send`/`icmpv6_ndo_send` run in any context the
        // transmit path runs in (tunnels call them from `ndo_start_xmit`).
        unsafe {
            if v6 {
                vmcs_net_icmp6_too_big(self.skb, mtu)
            } else {
                vmcs_net_icmp_too_big(self.skb, mtu)
            }
        }
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
