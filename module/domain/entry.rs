// SPDX-License-Identifier: GPL-2.0

//! The C entry points of a domain's sysfs directory, `/sys/kernel/vmcs/vmcs<N>/` (its
//! attribute table is in vmcs_glue.c): each looks the domain up by index and forwards to it.
//! Nothing in Rust imports this file.

use super::by_index;
use crate::conn::crypto::Policy;
use crate::glue::{self, sysfs};
use kernel::ffi::{c_char, c_uint};
use kernel::prelude::*;

/// Converts an error to the `ssize_t` convention.
fn errno(e: Error) -> isize {
    e.to_errno() as isize
}

/// Parses a policy written to `encrypt`: its name (`off`, `allow`, `require`) or its number,
/// with surrounding white space (echo's newline) ignored.
fn parse_policy(input: &[u8]) -> Option<Policy> {
    let text = core::str::from_utf8(input).ok()?.trim();
    [Policy::Off, Policy::Allow, Policy::Require]
        .into_iter()
        .find(|p| text == p.name() || text.parse::<u32>().ok() == Some(*p as u32))
}

/// `encrypt` read: the domain's encryption policy (`off`, `allow` or `require`).
///
/// # Safety
///
/// `buf` must be the `PAGE_SIZE` buffer of a sysfs show callback.
#[no_mangle]
unsafe extern "C" fn vmcs_sysfs_encrypt_show(index: c_uint, buf: *mut c_char) -> isize {
    let Some(domain) = by_index(index) else {
        return errno(ENODEV);
    };
    // SAFETY: `buf` is a show callback's buffer (the caller's contract).
    unsafe { sysfs::emit(buf.cast(), domain.crypto().policy().name()) }
}

/// `encrypt` write: sets the domain's encryption policy, as `VMCS_IOC_SET_DOMAIN_CRYPTO`
/// does (`CAP_NET_ADMIN`; `EINVAL` for anything but a policy, which stays unchanged).
///
/// # Safety
///
/// `buf` and `count` must be those of a sysfs store callback.
#[no_mangle]
unsafe extern "C" fn vmcs_sysfs_encrypt_store(
    index: c_uint,
    buf: *const c_char,
    count: usize,
) -> isize {
    if !glue::capable_net_admin() {
        return errno(EPERM);
    }
    let Some(domain) = by_index(index) else {
        return errno(ENODEV);
    };
    // SAFETY: `buf` and `count` are a store callback's (the caller's contract); the slice
    // is used only in this call.
    let input = unsafe { sysfs::input(buf.cast(), count) };
    let Some(policy) = parse_policy(input) else {
        return errno(EINVAL);
    };
    domain.crypto().set_policy(policy);
    pr_info!(
        "vmcs{}: encryption policy {} (sysfs)\n",
        domain.index,
        policy.name()
    );
    // sysfs never passes more than `PAGE_SIZE` bytes.
    isize::try_from(count).unwrap_or(isize::MAX)
}
