// SPDX-License-Identifier: GPL-2.0

//! The `SOL_VSOCK` options of AF_VMCS and `SO_ZEROCOPY`, with af_vsock.c's semantics and
//! errnos (docs/sockets.md "Socket options"): `SO_VM_SOCKETS_BUFFER_SIZE`, `_MIN_SIZE`,
//! `_MAX_SIZE` (the connection's receive buffer, the credit its peer gets) and both
//! `SO_VM_SOCKETS_CONNECT_TIMEOUT` layouts; every other option of the level, like
//! `SO_VM_SOCKETS_PEER_HOST_VM_ID`, is `ENOPROTOOPT` there too.

use super::VmcsSocket;
use crate::{
    conn::{crypto::Policy, MAX_RCVBUF},
    glue::socket::{hz, put_timeout, OptVal},
};
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use kernel::{bindings, prelude::*};

/// Option numbers of `<linux/vm_sockets.h>`.
pub(crate) mod opt {
    pub(crate) const BUFFER_SIZE: i32 = 0;
    pub(crate) const BUFFER_MIN_SIZE: i32 = 1;
    pub(crate) const BUFFER_MAX_SIZE: i32 = 2;
    pub(crate) const CONNECT_TIMEOUT_OLD: i32 = 6;
    pub(crate) const CONNECT_TIMEOUT_NEW: i32 = 8;
}

/// The level vsock programs pass: `AF_VSOCK` (40). The AF_VMCS family number works too
/// (a program that replaced every `AF_VSOCK`).
const LEVEL_AF_VSOCK: i32 = 40;
/// `SOL_SOCKET`.
pub(crate) const SOL_SOCKET: i32 = bindings::SOL_SOCKET as i32;
/// `SO_ZEROCOPY`.
pub(crate) const SO_ZEROCOPY: i32 = bindings::SO_ZEROCOPY as i32;

/// af_vsock.c's defaults (`VSOCK_DEFAULT_BUFFER_*`).
const DEFAULT_BUFFER_SIZE: u64 = 256 * 1024;
const DEFAULT_BUFFER_MIN: u64 = 128;
const DEFAULT_BUFFER_MAX: u64 = 256 * 1024;
/// `VSOCK_DEFAULT_CONNECT_TIMEOUT`, in seconds.
const DEFAULT_CONNECT_TIMEOUT_S: i64 = 2;
const USEC_PER_SEC: i64 = 1_000_000;

fn enoprotoopt() -> Error {
    Error::from_errno(-(bindings::ENOPROTOOPT as i32))
}

fn erange() -> Error {
    Error::from_errno(-(bindings::ERANGE as i32))
}

/// vsock's per-socket options (`struct vsock_sock`'s `buffer_*` and `connect_timeout`).
/// Atomics stand for vsock's `lock_sock`: each field is read and written whole; two
/// threads setting options of one socket at once see one of the orders.
pub(crate) struct VsockOpts {
    buffer_size: AtomicU64,
    buffer_min: AtomicU64,
    buffer_max: AtomicU64,
    /// `SO_VM_SOCKETS_CONNECT_TIMEOUT` in jiffies; 0 while never set (then `connect`
    /// waits `SO_SNDTIMEO` if set, else vsock's 2 s).
    connect_timeout: AtomicI64,
}

impl Default for VsockOpts {
    fn default() -> Self {
        Self {
            buffer_size: AtomicU64::new(DEFAULT_BUFFER_SIZE),
            buffer_min: AtomicU64::new(DEFAULT_BUFFER_MIN),
            buffer_max: AtomicU64::new(DEFAULT_BUFFER_MAX),
            connect_timeout: AtomicI64::new(0),
        }
    }
}

impl VsockOpts {
    /// The options an accepted connection starts with: the listener's.
    pub(crate) fn clone_for_child(&self) -> Self {
        Self {
            buffer_size: AtomicU64::new(self.buffer_size.load(Relaxed)),
            buffer_min: AtomicU64::new(self.buffer_min.load(Relaxed)),
            buffer_max: AtomicU64::new(self.buffer_max.load(Relaxed)),
            connect_timeout: AtomicI64::new(self.connect_timeout.load(Relaxed)),
        }
    }

    /// The connect timeout in ms, if `SO_VM_SOCKETS_CONNECT_TIMEOUT` was set.
    pub(crate) fn connect_timeout_ms(&self) -> Option<u32> {
        let j = self.connect_timeout.load(Relaxed);
        if j <= 0 {
            return None;
        }
        let ms = (j as u64).saturating_mul(1000).div_ceil(hz().max(1));
        Some(u32::try_from(ms).unwrap_or(u32::MAX).max(1))
    }

    fn connect_timeout_jiffies(&self) -> i64 {
        match self.connect_timeout.load(Relaxed) {
            0 => DEFAULT_CONNECT_TIMEOUT_S * hz() as i64,
            j => j,
        }
    }
}

/// Whether `level` is vsock's option level.
fn vsock_level(level: i32) -> bool {
    level == LEVEL_AF_VSOCK || level == i32::from(super::family())
}

impl VmcsSocket {
    /// `vsock_update_buffer_size`: `val` clamped to the minimum and maximum becomes the
    /// buffer size and the connection's receive buffer (at most `MAX_RCVBUF`, 4 MiB: the
    /// credit a peer may hold unread here). `set` is an explicit `SO_VM_SOCKETS_BUFFER_SIZE`:
    /// it applies when the size differs from the buffer in use (4 MiB by default, or what
    /// `SO_RCVBUF` set: the endpoint's), so a program that asks for vsock's 256 KiB default
    /// gets it although the stored size already reads 256 KiB. Otherwise (the minimum or
    /// maximum changed) it applies, as in vsock, only when the clamp changed the stored size.
    fn update_buffer_size(&self, val: u64, set: bool) {
        let o = &self.vsock;
        let val = val
            .max(o.buffer_min.load(Relaxed))
            .min(o.buffer_max.load(Relaxed));
        let rb = u32::try_from(val.min(u64::from(MAX_RCVBUF))).unwrap_or(MAX_RCVBUF);
        let apply = if set {
            rb != self.endpoint.bufs().0
        } else {
            val != o.buffer_size.load(Relaxed)
        };
        if apply {
            self.endpoint.set_opts(&self.dom().conns(), None, Some(rb));
        }
        o.buffer_size.store(val, Relaxed);
    }

    /// `setsockopt` at `VMCS_SOL_VMCS`: `VMCS_SO_ENCRYPT` (an int, `VMCS_ENCRYPT_*`).
    fn set_vmcs_opt(&self, optname: i32, v: &OptVal) -> Result {
        match optname {
            crate::uapi::SO_ENCRYPT => {
                if v.len() < 4 {
                    return Err(EINVAL);
                }
                let p = u32::try_from(i32::from_ne_bytes(v.read::<4>()?))
                    .ok()
                    .and_then(Policy::from_u32)
                    .ok_or(EINVAL)?;
                self.endpoint.set_encrypt(p);
                Ok(())
            }
            _ => Err(enoprotoopt()),
        }
    }

    /// `setsockopt` of a level other than `SOL_SOCKET`, and `SO_ZEROCOPY` (whose flag the
    /// entry point sets with the value returned: `Some(on)`).
    pub(crate) fn setsockopt(&self, level: i32, optname: i32, v: &OptVal) -> Result<Option<bool>> {
        let u64_val = || -> Result<u64> {
            if v.len() < 8 {
                return Err(EINVAL);
            }
            Ok(u64::from_ne_bytes(v.read::<8>()?))
        };
        if level == SOL_SOCKET && optname == SO_ZEROCOPY {
            if v.len() < 4 {
                return Err(EINVAL);
            }
            return match i32::from_ne_bytes(v.read::<4>()?) {
                0 => Ok(Some(false)),
                1 => Ok(Some(true)),
                _ => Err(EINVAL),
            };
        }
        if level == crate::uapi::SOL_VMCS {
            return self.set_vmcs_opt(optname, v).map(|()| None);
        }
        if !vsock_level(level) {
            return Err(enoprotoopt());
        }
        let o = &self.vsock;
        match optname {
            opt::BUFFER_SIZE => self.update_buffer_size(u64_val()?, true),
            opt::BUFFER_MAX_SIZE => {
                o.buffer_max.store(u64_val()?, Relaxed);
                self.update_buffer_size(o.buffer_size.load(Relaxed), false);
            }
            opt::BUFFER_MIN_SIZE => {
                o.buffer_min.store(u64_val()?, Relaxed);
                self.update_buffer_size(o.buffer_size.load(Relaxed), false);
            }
            opt::CONNECT_TIMEOUT_OLD | opt::CONNECT_TIMEOUT_NEW => {
                let (sec, usec) = v.timeval(optname == opt::CONNECT_TIMEOUT_OLD)?;
                let hz = hz() as i64;
                // As af_vsock.c, unsigned arithmetic on `usec` included.
                if sec >= 0 && usec < USEC_PER_SEC && sec < i64::MAX / hz - 1 {
                    let per = (USEC_PER_SEC / hz) as u64;
                    let frac = (usec as u64).wrapping_add(per - 1) / per;
                    let j = (sec * hz).wrapping_add(frac as i64);
                    // 0 is vsock's default, which "never set" stands for here.
                    let j = if j == 0 {
                        DEFAULT_CONNECT_TIMEOUT_S * hz
                    } else {
                        j
                    };
                    o.connect_timeout.store(j, Relaxed);
                } else {
                    return Err(erange());
                }
            }
            _ => return Err(enoprotoopt()),
        }
        Ok(None)
    }

    /// `getsockopt` of a level other than `SOL_SOCKET`: the value in `out`, its length
    /// (`len`, the caller's `optlen`, must hold it; a longer one is cut, as vsock).
    pub(crate) fn getsockopt(
        &self,
        level: i32,
        optname: i32,
        out: &mut [u8; 16],
        len: i32,
    ) -> Result<usize> {
        if level == crate::uapi::SOL_VMCS {
            let v: i32 = match optname {
                crate::uapi::SO_ENCRYPT => self.endpoint.encrypt() as i32,
                crate::uapi::SO_ENCRYPTED => i32::from(self.endpoint.encrypted()),
                _ => return Err(enoprotoopt()),
            };
            out[..4].copy_from_slice(&v.to_ne_bytes());
            if usize::try_from(len).map_err(|_| EINVAL)? < 4 {
                return Err(EINVAL);
            }
            return Ok(4);
        }
        if !vsock_level(level) {
            return Err(enoprotoopt());
        }
        let o = &self.vsock;
        let mut put64 = |v: u64| {
            out[..8].copy_from_slice(&v.to_ne_bytes());
            8
        };
        let lv = match optname {
            opt::BUFFER_SIZE => put64(o.buffer_size.load(Relaxed)),
            opt::BUFFER_MAX_SIZE => put64(o.buffer_max.load(Relaxed)),
            opt::BUFFER_MIN_SIZE => put64(o.buffer_min.load(Relaxed)),
            opt::CONNECT_TIMEOUT_OLD | opt::CONNECT_TIMEOUT_NEW => put_timeout(
                o.connect_timeout_jiffies() as kernel::ffi::c_long,
                out,
                optname == opt::CONNECT_TIMEOUT_OLD,
            ),
            _ => return Err(enoprotoopt()),
        };
        let len = usize::try_from(len).map_err(|_| EINVAL)?;
        if len < lv {
            return Err(EINVAL);
        }
        Ok(lv)
    }
}
