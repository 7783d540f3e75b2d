//! Zero-copy bulk transfer on a `/dev/vmcs` connection (docs/uapi.md "Bulk transfer").
//!
//! ```no_run
//! use vmcs::{bulk::Bulk, Backend, VmcsStream};
//! // Bulk transfer needs the /dev/vmcs backend.
//! let s = VmcsStream::connect_with(Backend::Device, "2:5000".parse()?, None)?;
//! let mut b = Bulk::setup(&s, 64 * 1024, std::time::Duration::from_secs(10))?;
//! b.wait(0, 4096)?; // the range is ours to write
//! b.tx_mut()[..4096].fill(7);
//! b.send(0, 4096)?; // now it is the peer's until it releases it
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The peer's extent ([`Bulk::rx`]) is shared memory that the peer may change at any time:
//! copy bytes out before validating them if the peer is not trusted.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use crate::sys;

/// A range of an extent, as `VMCS_IOC_BULK_SEND` / `VMCS_IOC_BULK_RECV` carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Byte offset in the sender's extent.
    pub off: u32,
    /// Length in bytes.
    pub len: u32,
}

/// One mapping of the file.
#[derive(Debug)]
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Map {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: our own mapping of `len` bytes.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

fn map(fd: RawFd, off: usize, len: usize, prot: i32) -> io::Result<Map> {
    // SAFETY: a new shared mapping chosen by the kernel.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd,
            off as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Map { ptr: p.cast(), len })
}

fn ioctl<T>(fd: RawFd, cmd: u32, arg: &mut T) -> io::Result<()> {
    ioctl_n(fd, cmd, arg).map(|_| ())
}

/// An ioctl whose non-negative result is a count.
fn ioctl_n<T>(fd: RawFd, cmd: u32, arg: &mut T) -> io::Result<usize> {
    loop {
        // SAFETY: `arg` is the struct `cmd` expects, valid for reads and writes.
        let r = unsafe { libc::ioctl(fd, cmd as _, arg as *mut T as *mut libc::c_void) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// The bulk area of one connection: our extent mapped read/write, the peer's read-only.
///
/// It borrows the connection. When the connection ends (peer closed or reset), the mappings
/// stop showing the region: they read zeros (a private page of the file) from then on,
/// never the data of a later connection. Stop using them once `recv` reports the end.
#[derive(Debug)]
pub struct Bulk<'a> {
    fd: BorrowedFd<'a>,
    tx: Map,
    rx: Map,
}

// SAFETY: the mappings are plain shared memory; `&self` gives only reads (of bytes that may
// change underneath, like any shared memory) and `&mut self` the writes.
unsafe impl Send for Bulk<'_> {}

impl<'a> Bulk<'a> {
    /// `VMCS_IOC_BULK_SETUP` with an extent of `size` bytes (rounded up to pages), waiting
    /// up to `timeout` for the peer's offer, then maps both extents.
    pub fn setup(conn: &'a impl AsFd, size: u32, timeout: Duration) -> io::Result<Bulk<'a>> {
        let bfd = conn.as_fd();
        let fd = bfd.as_raw_fd();
        let mut s = sys::vmcs_bulk_setup {
            size,
            timeout_ms: u32::try_from(timeout.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
            ..Default::default()
        };
        ioctl(fd, sys::VMCS_IOC_BULK_SETUP, &mut s)?;
        let tx = map(
            fd,
            0,
            s.tx_size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
        )?;
        let rx = map(fd, s.tx_size as usize, s.rx_size as usize, libc::PROT_READ)?;
        Ok(Bulk { fd: bfd, tx, rx })
    }

    /// Our extent. Write only ranges that are ours ([`Bulk::wait`]).
    pub fn tx_mut(&mut self) -> &mut [u8] {
        // SAFETY: a live read/write mapping of `len` bytes, borrowed mutably from `self`.
        unsafe { std::slice::from_raw_parts_mut(self.tx.ptr, self.tx.len) }
    }

    /// The peer's extent (read-only; the peer may change it at any time).
    pub fn rx(&self) -> &[u8] {
        // SAFETY: a live readable mapping of `len` bytes. Concurrent changes by the peer
        // only change byte values.
        unsafe { std::slice::from_raw_parts(self.rx.ptr, self.rx.len) }
    }

    /// Lends `[off, off + len)` of our extent to the peer (`VMCS_IOC_BULK_SEND`).
    pub fn send(&self, off: u32, len: u32) -> io::Result<()> {
        ioctl(
            self.fd.as_raw_fd(),
            sys::VMCS_IOC_BULK_SEND,
            &mut sys::vmcs_bulk_desc { off, len },
        )
    }

    /// Waits until `[off, off + len)` of our extent is ours again (`VMCS_IOC_BULK_WAIT`).
    pub fn wait(&self, off: u32, len: u32) -> io::Result<()> {
        ioctl(
            self.fd.as_raw_fd(),
            sys::VMCS_IOC_BULK_WAIT,
            &mut sys::vmcs_bulk_desc { off, len },
        )
    }

    /// The next range the peer lent us (offsets in [`Bulk::rx`]); `None` at end of file.
    pub fn recv(&self) -> io::Result<Option<Range>> {
        let mut d = sys::vmcs_bulk_desc::default();
        ioctl(self.fd.as_raw_fd(), sys::VMCS_IOC_BULK_RECV, &mut d)?;
        Ok((d.len > 0).then_some(Range {
            off: d.off,
            len: d.len,
        }))
    }

    /// Hands the `count` oldest received ranges back to the peer.
    pub fn release(&self, count: u32) -> io::Result<()> {
        let mut c = count;
        ioctl(self.fd.as_raw_fd(), sys::VMCS_IOC_BULK_RELEASE, &mut c)
    }

    /// One batched ioctl over `ranges` (at most [`MAX_BATCH`]).
    fn vec(&self, cmd: u32, ranges: &mut [sys::vmcs_bulk_desc]) -> io::Result<usize> {
        if ranges.is_empty() || ranges.len() > MAX_BATCH {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut v = sys::vmcs_bulk_vec {
            descs: ranges.as_mut_ptr() as u64,
            // At most MAX_BATCH.
            count: ranges.len() as u32,
            flags: 0,
        };
        ioctl_n(self.fd.as_raw_fd(), cmd, &mut v)
    }

    /// Lends `ranges` of our extent to the peer in one call (`VMCS_IOC_BULK_SENDV`, at
    /// most [`MAX_BATCH`]): waits for the first, then lends the others in order while they
    /// can be without waiting. Returns how many were lent (at least 1).
    pub fn send_many(&self, ranges: &[Range]) -> io::Result<usize> {
        self.vec(sys::VMCS_IOC_BULK_SENDV, &mut descs(ranges))
    }

    /// Up to `max` (at most [`MAX_BATCH`]) of the oldest ranges the peer lent us, in one
    /// call (`VMCS_IOC_BULK_RECVV`); waits for at least one. Empty at end of file.
    pub fn recv_many(&self, max: usize) -> io::Result<Vec<Range>> {
        let mut d = vec![sys::vmcs_bulk_desc::default(); max.clamp(1, MAX_BATCH)];
        let n = self.vec(sys::VMCS_IOC_BULK_RECVV, &mut d)?;
        Ok(d[..n.min(d.len())]
            .iter()
            .map(|d| Range {
                off: d.off,
                len: d.len,
            })
            .collect())
    }

    /// Hands `ranges` back to the peer in one call (`VMCS_IOC_BULK_RELEASEV`): each must
    /// be the oldest range still held. Returns how many were released.
    pub fn release_many(&self, ranges: &[Range]) -> io::Result<usize> {
        self.vec(sys::VMCS_IOC_BULK_RELEASEV, &mut descs(ranges))
    }
}

/// `ranges` as the kernel's descriptors.
fn descs(ranges: &[Range]) -> Vec<sys::vmcs_bulk_desc> {
    ranges
        .iter()
        .map(|r| sys::vmcs_bulk_desc {
            off: r.off,
            len: r.len,
        })
        .collect()
}

/// The most ranges one batched call ([`Bulk::send_many`], [`Bulk::recv_many`],
/// [`Bulk::release_many`]) takes.
pub const MAX_BATCH: usize = sys::VMCS_BULK_MAX_BATCH as usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_on_another_file_is_enotty() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = Bulk::setup(&f, 4096, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    }
}
