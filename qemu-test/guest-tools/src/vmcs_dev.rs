//! Minimal /dev/vmcs plumbing for `vmcs-bench` (docs/uapi.md; numbers from
//! userspace-tool/include/vmcs.h). `vmcs-test` keeps its own, fuller copy with the
//! semantics-test helpers.

use std::ffi::CString;
use std::io::Error;
use std::os::raw::{c_int, c_ulong, c_void};

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Addr {
    pub cid: u32,
    pub port: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PeerInfo {
    id: u32,
    state: u32,
    generation: u32,
    heartbeat_age_ms: u32,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct Info {
    abi_version: u32,
    domain: u32,
    local_cid: u32,
    transport: u32,
    region_size: u64,
    max_peers: u32,
    ring_size: u32,
    max_msg_size: u32,
    npeers: u32,
    peers: [PeerInfo; 64],
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Connect {
    addr: Addr,
    timeout_ms: u32,
    flags: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct BulkSetup {
    size: u32,
    timeout_ms: u32,
    tx_size: u32,
    rx_size: u32,
}
/// `struct vmcs_bulk_desc`: a range of an extent.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BulkDesc {
    pub off: u32,
    pub len: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Accept {
    flags: u32,
    reserved: u32,
    peer: Addr,
}

const fn ioc(dir: u32, nr: u32, size: usize) -> c_ulong {
    ((dir << 30) | ((size as u32) << 16) | (0xB7 << 8) | nr) as c_ulong
}
const W: u32 = 1;
const R: u32 = 2;
const IOC_GET_INFO: c_ulong = ioc(R, 1, std::mem::size_of::<Info>());
const IOC_BIND: c_ulong = ioc(R | W, 2, 8);
const IOC_CONNECT: c_ulong = ioc(W, 3, 16);
const IOC_LISTEN: c_ulong = ioc(W, 4, 4);
const IOC_ACCEPT: c_ulong = ioc(R | W, 5, 16);
const IOC_SHUTDOWN: c_ulong = ioc(W, 8, 4);
const IOC_BULK_SETUP: c_ulong = ioc(R | W, 0x10, 16);
const IOC_BULK_SEND: c_ulong = ioc(W, 0x11, 8);
const IOC_BULK_RECV: c_ulong = ioc(R, 0x12, 8);
const IOC_BULK_RELEASE: c_ulong = ioc(W, 0x13, 4);
const IOC_BULK_WAIT: c_ulong = ioc(W, 0x14, 8);
/// `VMCS_CID_ANY`.
const CID_ANY: u32 = u32::MAX;
/// Peer state "live" in `vmcs_peer_info`.
const PEER_LIVE: u32 = 2;
pub const SHUT_WR: u32 = 1;

fn errno() -> i32 {
    Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// An errno as text.
pub fn ename(e: i32) -> String {
    format!("{} ({})", Error::from_raw_os_error(e), e)
}

/// One /dev/vmcs file.
pub struct Fd(c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

impl Fd {
    pub fn raw(&self) -> c_int {
        self.0
    }
    pub fn open() -> Result<Fd, String> {
        let p = CString::new("/dev/vmcs").unwrap();
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open /dev/vmcs: {}", ename(errno())));
        }
        Ok(Fd(fd))
    }
    fn ioctl<T>(&self, cmd: c_ulong, arg: &mut T) -> Result<c_int, i32> {
        // SAFETY: `arg` is a valid, properly sized struct for `cmd`.
        let r = unsafe { libc::ioctl(self.0, cmd as _, arg as *mut T as *mut c_void) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(r)
        }
    }
    pub fn bind(&self, port: u32) -> Result<u32, i32> {
        let mut a = Addr { cid: CID_ANY, port };
        self.ioctl(IOC_BIND, &mut a)?;
        Ok(a.port)
    }
    pub fn listen(&self, backlog: u32) -> Result<(), i32> {
        let mut b = backlog;
        self.ioctl(IOC_LISTEN, &mut b).map(|_| ())
    }
    pub fn connect(&self, cid: u32, port: u32, timeout_ms: u32) -> Result<(), i32> {
        let mut c = Connect {
            addr: Addr { cid, port },
            timeout_ms,
            flags: 0,
        };
        self.ioctl(IOC_CONNECT, &mut c).map(|_| ())
    }
    pub fn accept(&self) -> Result<(Fd, Addr), i32> {
        let mut a = Accept::default();
        let fd = self.ioctl(IOC_ACCEPT, &mut a)?;
        Ok((Fd(fd), a.peer))
    }
    pub fn shutdown(&self, how: u32) -> Result<(), i32> {
        let mut h = how;
        self.ioctl(IOC_SHUTDOWN, &mut h).map(|_| ())
    }
    /// `VMCS_IOC_BULK_SETUP`: offers an extent of `size` bytes, waits for the peer's;
    /// returns (tx_size, rx_size).
    pub fn bulk_setup(&self, size: u32, timeout_ms: u32) -> Result<(u32, u32), i32> {
        let mut s = BulkSetup {
            size,
            timeout_ms,
            ..Default::default()
        };
        self.ioctl(IOC_BULK_SETUP, &mut s)?;
        Ok((s.tx_size, s.rx_size))
    }
    pub fn bulk_send(&self, off: u32, len: u32) -> Result<(), i32> {
        self.ioctl(IOC_BULK_SEND, &mut BulkDesc { off, len })
            .map(|_| ())
    }
    pub fn bulk_wait(&self, off: u32, len: u32) -> Result<(), i32> {
        self.ioctl(IOC_BULK_WAIT, &mut BulkDesc { off, len })
            .map(|_| ())
    }
    /// The oldest range lent to us; `len == 0` is end of file.
    pub fn bulk_recv(&self) -> Result<BulkDesc, i32> {
        let mut d = BulkDesc::default();
        self.ioctl(IOC_BULK_RECV, &mut d)?;
        Ok(d)
    }
    pub fn bulk_release(&self, n: u32) -> Result<(), i32> {
        let mut n = n;
        self.ioctl(IOC_BULK_RELEASE, &mut n).map(|_| ())
    }
    /// The live peers of this guest's domain, this guest excluded.
    pub fn live_peers(&self) -> Result<Vec<u32>, i32> {
        // SAFETY: Info is plain old data.
        let mut info: Info = unsafe { std::mem::zeroed() };
        self.ioctl(IOC_GET_INFO, &mut info)?;
        Ok(info.peers[..(info.npeers as usize).min(64)]
            .iter()
            .filter(|p| p.id != info.local_cid && p.state == PEER_LIVE)
            .map(|p| p.id)
            .collect())
    }
}
