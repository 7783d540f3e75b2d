//! `/dev/vmcs`: one file, its ioctls (docs/uapi.md) and its mmap of the bulk area.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};

use vmcs_sys::{
    vmcs_accept, vmcs_addr, vmcs_bulk_desc, vmcs_bulk_setup, vmcs_bulk_vec, vmcs_connect,
    vmcs_info, vmcs_names, vmcs_open_domain, vmcs_opts, VMCS_CID_ANY, VMCS_IOC_ACCEPT,
    VMCS_IOC_BIND, VMCS_IOC_BULK_RECV, VMCS_IOC_BULK_RECVV, VMCS_IOC_BULK_RELEASE,
    VMCS_IOC_BULK_RELEASEV, VMCS_IOC_BULK_SEND, VMCS_IOC_BULK_SENDV, VMCS_IOC_BULK_SETUP,
    VMCS_IOC_BULK_WAIT, VMCS_IOC_CONNECT, VMCS_IOC_GET_INFO, VMCS_IOC_GET_NAMES, VMCS_IOC_LISTEN,
    VMCS_IOC_OPEN_DOMAIN, VMCS_IOC_SET_OPTS, VMCS_IOC_SHUTDOWN, VMCS_MAX_PEERS, VMCS_PEER_LIVE,
};

use crate::{ename, errno, fd, Res};

/// `SHUT_WR` for [`Fd::shutdown`].
pub const SHUT_WR: u32 = 1;

/// One /dev/vmcs file.
pub struct Fd(pub c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        fd::close(self.0);
    }
}

/// `r` of a syscall that returns a count or -1.
pub fn count(r: isize) -> Result<usize, i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

impl Fd {
    /// Opens /dev/vmcs; with `VMCS_DOMAIN=N` in the environment, an endpoint on domain N
    /// (`VMCS_IOC_OPEN_DOMAIN`) instead of the default domain 0.
    pub fn open() -> Res<Fd> {
        let p = CString::new("/dev/vmcs").unwrap();
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open /dev/vmcs: {}", ename(errno())));
        }
        let f = Fd(fd);
        match std::env::var("VMCS_DOMAIN")
            .ok()
            .and_then(|d| d.parse().ok())
        {
            Some(d) => f
                .open_domain(d, 0)
                .map_err(|e| format!("VMCS_IOC_OPEN_DOMAIN: {}", ename(e))),
            None => Ok(f),
        }
    }
    /// A new endpoint on domain `d`.
    pub fn open_domain(&self, d: u32, flags: u32) -> Result<Fd, i32> {
        let mut a = vmcs_open_domain { domain: d, flags };
        self.ioctl(VMCS_IOC_OPEN_DOMAIN, &mut a).map(Fd)
    }
    /// ioctl `cmd` with `arg`; its return value or the errno.
    pub fn ioctl<T>(&self, cmd: u32, arg: &mut T) -> Result<c_int, i32> {
        // SAFETY: `arg` is a valid, properly sized struct for `cmd`.
        let r = unsafe { libc::ioctl(self.0, cmd as _, arg as *mut T as *mut c_void) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(r)
        }
    }
    /// `VMCS_IOC_GET_INFO`.
    pub fn info(&self) -> Result<vmcs_info, i32> {
        let mut info = vmcs_info::default();
        self.ioctl(VMCS_IOC_GET_INFO, &mut info)?;
        Ok(info)
    }
    /// The live peers of this guest's domain, this guest excluded.
    pub fn live_peers(&self) -> Result<Vec<u32>, i32> {
        let info = self.info()?;
        Ok(info.peers[..(info.npeers as usize).min(VMCS_MAX_PEERS)]
            .iter()
            .filter(|p| p.id != info.local_cid && p.state == VMCS_PEER_LIVE)
            .map(|p| p.id)
            .collect())
    }
    /// Binds to `port` (of any cid); the port bound.
    pub fn bind(&self, port: u32) -> Result<u32, i32> {
        let mut a = vmcs_addr {
            cid: VMCS_CID_ANY,
            port,
        };
        self.ioctl(VMCS_IOC_BIND, &mut a)?;
        Ok(a.port)
    }
    pub fn listen(&self, backlog: u32) -> Result<(), i32> {
        let mut b = backlog;
        self.ioctl(VMCS_IOC_LISTEN, &mut b).map(|_| ())
    }
    pub fn connect(&self, cid: u32, port: u32, timeout_ms: u32) -> Result<(), i32> {
        let mut c = vmcs_connect {
            addr: vmcs_addr { cid, port },
            timeout_ms,
            flags: 0,
        };
        self.ioctl(VMCS_IOC_CONNECT, &mut c).map(|_| ())
    }
    /// Accepts one connection (`flags`: `O_NONBLOCK | O_CLOEXEC` for the new file).
    pub fn accept(&self, flags: u32) -> Result<(Fd, vmcs_addr), i32> {
        let mut a = vmcs_accept {
            flags,
            ..Default::default()
        };
        let fd = self.ioctl(VMCS_IOC_ACCEPT, &mut a)?;
        Ok((Fd(fd), a.peer))
    }
    /// `VMCS_IOC_SET_OPTS`.
    pub fn opts(&self, mask: u32, nonblock: u32, rcvbuf: u32) -> Result<(), i32> {
        let mut o = vmcs_opts {
            mask,
            nonblock,
            rcvbuf,
            reserved: 0,
        };
        self.ioctl(VMCS_IOC_SET_OPTS, &mut o).map(|_| ())
    }
    /// `VMCS_IOC_GET_NAMES`.
    pub fn names(&self) -> Result<vmcs_names, i32> {
        let mut n = vmcs_names::default();
        self.ioctl(VMCS_IOC_GET_NAMES, &mut n)?;
        Ok(n)
    }
    pub fn shutdown(&self, how: u32) -> Result<(), i32> {
        let mut h = how;
        self.ioctl(VMCS_IOC_SHUTDOWN, &mut h).map(|_| ())
    }
    /// Sends one message.
    pub fn write(&self, buf: &[u8]) -> Result<usize, i32> {
        // SAFETY: valid buffer.
        count(unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) })
    }
    /// Receives one message (0: end of file).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, i32> {
        // SAFETY: valid buffer.
        count(unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) })
    }
    /// The revents of one poll (0 on timeout or error).
    pub fn poll(&self, events: i16, timeout_ms: i32) -> i16 {
        match fd::poll(self.0, events, timeout_ms) {
            (r, _) if r <= 0 => 0,
            (_, revents) => revents,
        }
    }
    pub fn set_nonblock(&self, on: bool) {
        fd::set_nonblock(self.0, on);
    }
    /// `VMCS_IOC_BULK_SETUP`.
    pub fn bulk_setup(&self, size: u32, timeout_ms: u32) -> Result<vmcs_bulk_setup, i32> {
        let mut s = vmcs_bulk_setup {
            size,
            timeout_ms,
            ..Default::default()
        };
        self.ioctl(VMCS_IOC_BULK_SETUP, &mut s)?;
        Ok(s)
    }
    pub fn bulk_send(&self, off: u32, len: u32) -> Result<(), i32> {
        self.ioctl(VMCS_IOC_BULK_SEND, &mut vmcs_bulk_desc { off, len })
            .map(|_| ())
    }
    pub fn bulk_wait(&self, off: u32, len: u32) -> Result<(), i32> {
        self.ioctl(VMCS_IOC_BULK_WAIT, &mut vmcs_bulk_desc { off, len })
            .map(|_| ())
    }
    pub fn bulk_recv(&self) -> Result<vmcs_bulk_desc, i32> {
        let mut d = vmcs_bulk_desc::default();
        self.ioctl(VMCS_IOC_BULK_RECV, &mut d)?;
        Ok(d)
    }
    pub fn bulk_release(&self, n: u32) -> Result<(), i32> {
        let mut n = n;
        self.ioctl(VMCS_IOC_BULK_RELEASE, &mut n).map(|_| ())
    }
    /// A batched bulk ioctl (`VMCS_IOC_BULK_SENDV`, `_RECVV`, `_RELEASEV`) over `d`, with
    /// `count` given separately so that a test can pass a bad one; returns its result.
    pub fn bulk_vec(&self, cmd: u32, d: &mut [vmcs_bulk_desc], count: u32) -> Result<usize, i32> {
        let mut v = vmcs_bulk_vec {
            descs: d.as_mut_ptr() as u64,
            count,
            flags: 0,
        };
        self.ioctl(cmd, &mut v).map(|n| n as usize)
    }
    /// `VMCS_IOC_BULK_SENDV` of `d`.
    pub fn bulk_sendv(&self, d: &[vmcs_bulk_desc]) -> Result<usize, i32> {
        let mut d = d.to_vec();
        let n = d.len() as u32;
        self.bulk_vec(VMCS_IOC_BULK_SENDV, &mut d, n)
    }
    /// `VMCS_IOC_BULK_RECVV` of up to `max` ranges.
    pub fn bulk_recvv(&self, max: usize) -> Result<Vec<vmcs_bulk_desc>, i32> {
        let mut d = vec![vmcs_bulk_desc::default(); max];
        let n = self.bulk_vec(VMCS_IOC_BULK_RECVV, &mut d, max as u32)?;
        d.truncate(n);
        Ok(d)
    }
    /// `VMCS_IOC_BULK_RELEASEV` of `d`.
    pub fn bulk_releasev(&self, d: &[vmcs_bulk_desc]) -> Result<usize, i32> {
        let mut d = d.to_vec();
        let n = d.len() as u32;
        self.bulk_vec(VMCS_IOC_BULK_RELEASEV, &mut d, n)
    }
    /// mmap of `len` bytes at `off` of the bulk area.
    pub fn mmap(&self, off: usize, len: usize, prot: i32, flags: i32) -> Result<Map, i32> {
        // SAFETY: a new mapping chosen by the kernel.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, self.0, off as i64) };
        if p == libc::MAP_FAILED {
            Err(errno())
        } else {
            Ok(Map { ptr: p.cast(), len })
        }
    }
}

/// A shared mapping of a /dev/vmcs file.
pub struct Map {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl Map {
    pub fn slice(&self) -> &[u8] {
        // SAFETY: mapped, readable, `len` bytes; the peer may change bytes at any time, which
        // for plain bytes is only a wrong value.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub fn slice_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, writable.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
    pub fn words_mut(&mut self) -> &mut [u64] {
        // SAFETY: as above, writable, page-aligned.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast(), self.len / 8) }
    }
    pub fn words(&self) -> &[u64] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len / 8) }
    }
}
