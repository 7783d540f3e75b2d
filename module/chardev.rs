// SPDX-License-Identifier: GPL-2.0

//! `/dev/vmcs`: one endpoint per open file.
//!
//! At this stage the device exposes the raw shared region of the default domain as a
//! positional byte window (read, write, lseek), which the foundation tests use to show that
//! bytes written in one guest are read in another. Message semantics replace it once the
//! protocol core lands (docs/uapi.md).

use crate::{
    domain::{self, Domain},
    ffi::poll_mask,
};
use kernel::{
    prelude::*,
    sync::Arc,
    uaccess::{UserSliceReader, UserSliceWriter},
};

/// Largest chunk copied per step between the region and user memory.
const CHUNK: usize = 4096;

/// The state of one open `/dev/vmcs` file.
pub(crate) struct Endpoint {
    domain: Arc<Domain>,
}

impl Endpoint {
    /// Opens an endpoint on the default domain; `ENODEV` when no ivshmem device is bound.
    pub(crate) fn open() -> Result<Arc<Self>> {
        let domain = domain::default_domain().ok_or(ENODEV)?;
        Ok(Arc::new(Self { domain }, GFP_KERNEL)?)
    }

    /// Called once when the file is released.
    pub(crate) fn release(&self) {}

    /// Returns the region range `pos..pos + len` clamped to the region, or `None` at its end.
    fn window(&self, pos: i64, len: usize, size: usize) -> Result<Option<(usize, usize)>> {
        let start = usize::try_from(pos).map_err(|_| EINVAL)?;
        if start >= size || len == 0 {
            return Ok(None);
        }
        Ok(Some((start, len.min(size - start).min(CHUNK))))
    }

    /// Reads from the region at `*pos`; returns 0 at the end of the region.
    pub(crate) fn read(&self, mut out: UserSliceWriter, pos: &mut i64) -> Result<usize> {
        let mut done = 0;
        let mut buf = KVec::from_elem(0u8, CHUNK, GFP_KERNEL)?;
        while !out.is_empty() {
            let n = {
                let region = self.domain.region.try_access().ok_or(ENODEV)?;
                let Some((start, n)) = self.window(*pos, out.len(), region.len())? else {
                    break;
                };
                region.read(start, &mut buf[..n])?;
                n
            };
            out.write_slice(&buf[..n])?;
            // `n` is at most CHUNK, so it fits in i64.
            *pos += n as i64;
            done += n;
        }
        Ok(done)
    }

    /// Writes to the region at `*pos`; `ENOSPC` when `*pos` is at or past its end.
    pub(crate) fn write(&self, mut input: UserSliceReader, pos: &mut i64) -> Result<usize> {
        let mut done = 0;
        let mut buf = KVec::from_elem(0u8, CHUNK, GFP_KERNEL)?;
        while !input.is_empty() {
            let size = self.domain.region.try_access().ok_or(ENODEV)?.len();
            let Some((start, n)) = self.window(*pos, input.len(), size)? else {
                if done == 0 {
                    return Err(ENOSPC);
                }
                break;
            };
            input.read_slice(&mut buf[..n])?;
            let region = self.domain.region.try_access().ok_or(ENODEV)?;
            region.write(start, &buf[..n])?;
            // `n` is at most CHUNK, so it fits in i64.
            *pos += n as i64;
            done += n;
        }
        Ok(done)
    }

    /// No ioctl is defined yet.
    pub(crate) fn ioctl(&self, _cmd: u32, _arg: usize) -> Result<isize> {
        Err(ENOTTY)
    }

    /// The region window is always readable and writable while the device is bound.
    pub(crate) fn poll(&self) -> u32 {
        if self.domain.region.try_access().is_some() {
            poll_mask::IN | poll_mask::OUT
        } else {
            poll_mask::ERR | poll_mask::HUP
        }
    }
}
