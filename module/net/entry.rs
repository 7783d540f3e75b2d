// SPDX-License-Identifier: GPL-2.0

//! The C entry points of the vmcsN net device: the `net_device_ops`, `ethtool_ops` and
//! NAPI poll of vmcs_net_glue.c forward to these functions, which forward to [`VmcsNet`].
//! Nothing in Rust imports this file.
//!
//! Every function receives the pointer `NetRegistration::new` registered the device with:
//! a `VmcsNet` inside an `Arc` that the registration holds until `unregister_netdev` has
//! returned, after which no operation of the device runs.

use super::VmcsNet;
use crate::glue::net::TxSkb;
use kernel::ffi::{c_char, c_int, c_uint, c_void};

/// The device behind the pointer the C glue hands over.
///
/// # Safety
///
/// `net` must be the pointer a registered vmcsN device was registered with, in one of its
/// operations.
unsafe fn net<'a>(net: *mut c_void) -> &'a VmcsNet {
    // SAFETY: Guaranteed by the caller: the registration keeps the `VmcsNet` alive while
    // the device's operations can run.
    unsafe { &*net.cast::<VmcsNet>() }
}

/// # Safety
///
/// `ndo_open` of a registered vmcsN device.
#[no_mangle]
unsafe extern "C" fn vmcs_net_open(n: *mut c_void) -> c_int {
    // SAFETY: Guaranteed by the caller.
    match unsafe { net(n) }.open() {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `ndo_stop` of a registered vmcsN device.
#[no_mangle]
unsafe extern "C" fn vmcs_net_stop(n: *mut c_void) -> c_int {
    // SAFETY: Guaranteed by the caller.
    match unsafe { net(n) }.stop() {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `ndo_start_xmit` of a registered vmcsN device; `skb` now belongs to the driver.
#[no_mangle]
unsafe extern "C" fn vmcs_net_xmit(n: *mut c_void, skb: *mut c_void, queue: u16, more: bool) {
    // SAFETY: Guaranteed by the caller.
    let skb = unsafe { TxSkb::from_raw(skb) };
    // SAFETY: Guaranteed by the caller.
    unsafe { net(n) }.xmit(skb, queue, more);
}

/// # Safety
///
/// `ndo_select_queue` of a registered vmcsN device; `data` points to `len` bytes of the
/// skb's linear head.
#[no_mangle]
unsafe extern "C" fn vmcs_net_select_queue(n: *mut c_void, data: *const u8, len: c_uint) -> u16 {
    let frame: &[u8] = if data.is_null() {
        &[]
    } else {
        // SAFETY: Guaranteed by the caller; the head does not change during the call.
        unsafe { core::slice::from_raw_parts(data, len as usize) }
    };
    // SAFETY: Guaranteed by the caller.
    unsafe { net(n) }.select_queue(frame)
}

/// # Safety
///
/// `ndo_features_check` of a registered vmcsN device for the GSO packet `skb`, which the
/// stack still owns.
#[no_mangle]
unsafe extern "C" fn vmcs_net_gso_split(n: *mut c_void, skb: *mut c_void, queue: u16) -> bool {
    // SAFETY: Guaranteed by the caller: `skb` is valid and unchanged during the call.
    unsafe { TxSkb::with_borrowed(skb, |skb| net(n).gso_split(skb, queue)) }
}

/// # Safety
///
/// `ndo_get_stats64` of a registered vmcsN device; `vals` points to `count` writable u64.
#[no_mangle]
unsafe extern "C" fn vmcs_net_get_stats64(n: *mut c_void, vals: *mut u64, count: c_uint) {
    if vals.is_null() {
        return;
    }
    // SAFETY: Guaranteed by the caller.
    let out = unsafe { core::slice::from_raw_parts_mut(vals, count as usize) };
    // SAFETY: Guaranteed by the caller.
    unsafe { net(n) }.stats64(out);
}

/// # Safety
///
/// The NAPI poll of a registered vmcsN device.
#[no_mangle]
unsafe extern "C" fn vmcs_net_poll(n: *mut c_void, budget: c_int) -> c_int {
    // SAFETY: Guaranteed by the caller.
    unsafe { net(n) }.poll(budget)
}

/// # Safety
///
/// ethtool `get_drvinfo` of a registered vmcsN device; `buf` points to `len` writable
/// bytes.
#[no_mangle]
unsafe extern "C" fn vmcs_net_bus_info(n: *mut c_void, buf: *mut c_char, len: c_uint) {
    if buf.is_null() || len == 0 {
        return;
    }
    // SAFETY: Guaranteed by the caller.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len as usize) };
    // SAFETY: Guaranteed by the caller.
    unsafe { net(n) }.bus_info(out);
}

/// # Safety
///
/// ethtool `get_sset_count(ETH_SS_STATS)` of a registered vmcsN device.
#[no_mangle]
unsafe extern "C" fn vmcs_net_stats_count(n: *mut c_void) -> c_int {
    // SAFETY: Guaranteed by the caller.
    c_int::try_from(unsafe { net(n) }.stats_count()).unwrap_or(0)
}

/// # Safety
///
/// ethtool `get_strings(ETH_SS_STATS)` of a registered vmcsN device; `data` points to
/// `ETH_GSTRING_LEN` writable bytes per counter that `vmcs_net_stats_count` reported.
#[no_mangle]
unsafe extern "C" fn vmcs_net_stats_strings(n: *mut c_void, data: *mut u8) {
    if data.is_null() {
        return;
    }
    // SAFETY: Guaranteed by the caller.
    let net = unsafe { net(n) };
    // SAFETY: Guaranteed by the caller: 32 bytes per counter.
    let out = unsafe { core::slice::from_raw_parts_mut(data, net.stats_count() * 32) };
    net.stats_strings(out);
}

/// # Safety
///
/// ethtool `get_ethtool_stats` of a registered vmcsN device; `data` points to `count`
/// writable u64.
#[no_mangle]
unsafe extern "C" fn vmcs_net_stats_values(n: *mut c_void, data: *mut u64, count: u32) {
    if data.is_null() {
        return;
    }
    // SAFETY: Guaranteed by the caller.
    let out = unsafe { core::slice::from_raw_parts_mut(data, count as usize) };
    // SAFETY: Guaranteed by the caller.
    unsafe { net(n) }.stats_values(out);
}
