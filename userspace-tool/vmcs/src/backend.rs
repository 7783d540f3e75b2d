//! Backends: `/dev/vmcs` ioctls now, AF_VMCS sockets when the module publishes a family.
//!
//! Every operation of [`crate::VmcsListener`] and [`crate::VmcsStream`] goes through
//! [`Fd`], which dispatches on [`Backend`]. The AF_VMCS backend is plain sockaddr_vm-shaped
//! socket calls with the family read from `/sys/module/vmcs/parameters/af`.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys;
use crate::VmcsAddr;

/// The character device.
pub const DEVICE_PATH: &str = "/dev/vmcs";
/// The module parameter that carries the AF_VMCS family number (absent or 0: no sockets).
pub const AF_PARAM_PATH: &str = "/sys/module/vmcs/parameters/af";

/// How this process talks to vmcs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Backend {
    /// `/dev/vmcs`: one open file per listener or connection, driven by ioctls.
    Device,
    /// AF_VMCS `SOCK_SEQPACKET` sockets in this address family.
    Socket { family: i32 },
}

impl Backend {
    /// AF_VMCS sockets if the module publishes a family number, else `/dev/vmcs`, else
    /// [`Error::ModuleNotLoaded`]. `VMCS_BACKEND=device` or `VMCS_BACKEND=socket` forces one.
    pub fn detect() -> Result<Backend> {
        let forced = std::env::var("VMCS_BACKEND").ok();
        let family = read_af_param(Path::new(AF_PARAM_PATH));
        match (forced.as_deref(), family) {
            (Some("device"), _) => Ok(Backend::Device),
            (Some("socket"), Some(family)) => Ok(Backend::Socket { family }),
            (Some("socket"), None) => Err(Error::ModuleNotLoaded),
            (_, Some(family)) => Ok(Backend::Socket { family }),
            (_, None) if Path::new(DEVICE_PATH).exists() => Ok(Backend::Device),
            (_, None) => Err(Error::ModuleNotLoaded),
        }
    }

    /// A name for humans: `/dev/vmcs` or `AF_VMCS (family N)`.
    pub fn describe(&self) -> String {
        match self {
            Backend::Device => DEVICE_PATH.to_string(),
            Backend::Socket { family } => format!("AF_VMCS socket (family {family})"),
        }
    }
}

/// Parses the af parameter file: a positive family number, or None.
pub(crate) fn read_af_param(path: &Path) -> Option<i32> {
    let s = fs::read_to_string(path).ok()?;
    match s.trim().parse::<i32>() {
        Ok(n) if n > 0 && n < i32::from(u16::MAX) => Some(n),
        _ => None,
    }
}

/// Retries `f` while it fails with `EINTR`; returns its non-negative result.
fn cvt<T: Copy + PartialOrd + Default>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        let r = f();
        if r >= T::default() {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Waits until `fd` is ready for `events` or `timeout` passes (`TimedOut`). Returns the
/// revents; `POLLERR`/`POLLHUP` count as ready, so the next call reports the condition.
pub(crate) fn wait_fd(fd: RawFd, events: i16, timeout: Option<Duration>) -> io::Result<i16> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so a 0.3 ms timeout does not spin with 0.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as i32
            }
        };
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            return Ok(p.revents);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "vmcs: timed out"));
        }
    }
}

/// Issues an ioctl whose argument is a pointer to `arg`.
fn ioctl<T>(fd: RawFd, cmd: u32, arg: &mut T) -> io::Result<i32> {
    // SAFETY: cmd's size field is size_of::<T>() (see sys), and arg is a valid T.
    cvt(|| unsafe { libc::ioctl(fd, cmd as _, arg as *mut T) })
}

/// Opens the character device, sorting the errors.
pub(crate) fn open_device() -> Result<OwnedFd> {
    let path = CString::new(DEVICE_PATH).expect("no NUL");
    // SAFETY: valid C string.
    match cvt(|| unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) }) {
        // SAFETY: a fresh fd we own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(Error::ModuleNotLoaded),
        Err(e) => Err(e.into()),
    }
}

fn sockaddr(family: i32, a: VmcsAddr) -> sys::sockaddr_vmcs {
    sys::sockaddr_vmcs::new(family as libc::sa_family_t, a.cid, a.port)
}

const SOCKADDR_LEN: libc::socklen_t = size_of::<sys::sockaddr_vmcs>() as libc::socklen_t;

/// One vmcs endpoint: an open `/dev/vmcs` file or an AF_VMCS socket.
#[derive(Debug)]
pub(crate) struct Fd {
    pub(crate) fd: OwnedFd,
    pub(crate) backend: Backend,
}

impl Fd {
    /// A new unconnected endpoint.
    pub(crate) fn new(backend: Backend) -> Result<Fd> {
        let fd = match backend {
            Backend::Device => open_device()?,
            Backend::Socket { family } => {
                // SAFETY: plain syscall.
                let r = cvt(|| unsafe {
                    libc::socket(family, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)
                });
                match r {
                    // SAFETY: a fresh fd we own.
                    Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                    Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                        return Err(Error::ModuleNotLoaded)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        Ok(Fd { fd, backend })
    }

    /// Wraps an fd: sockets are taken as AF_VMCS, anything else as `/dev/vmcs`.
    pub(crate) fn from_owned(fd: OwnedFd) -> Fd {
        // SAFETY: fstat on a valid fd into a zeroed stat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let is_sock = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0
            && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK;
        let backend = if is_sock {
            let mut dom: libc::c_int = 0;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: valid out pointers.
            unsafe {
                libc::getsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_DOMAIN,
                    (&mut dom as *mut i32).cast(),
                    &mut len,
                )
            };
            Backend::Socket { family: dom }
        } else {
            Backend::Device
        };
        Fd { fd, backend }
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn bind(&self, addr: VmcsAddr) -> Result<VmcsAddr> {
        match self.backend {
            Backend::Device => {
                let mut a: sys::vmcs_addr = addr.into();
                ioctl(self.raw(), sys::VMCS_IOC_BIND, &mut a)?;
                Ok(a.into())
            }
            Backend::Socket { family } => {
                let sa = sockaddr(family, addr);
                // SAFETY: valid sockaddr of the given length.
                cvt(|| unsafe {
                    libc::bind(
                        self.raw(),
                        (&sa as *const sys::sockaddr_vmcs).cast(),
                        SOCKADDR_LEN,
                    )
                })?;
                Ok(self.names()?.0)
            }
        }
    }

    pub(crate) fn listen(&self, backlog: u32) -> Result<()> {
        match self.backend {
            Backend::Device => {
                let mut b = backlog;
                ioctl(self.raw(), sys::VMCS_IOC_LISTEN, &mut b)?;
            }
            Backend::Socket { .. } => {
                let b = backlog.min(i32::MAX as u32) as i32;
                // SAFETY: plain syscall.
                cvt(|| unsafe { libc::listen(self.raw(), b) })?;
            }
        }
        Ok(())
    }

    /// Accepts one connection; the new fd is close-on-exec.
    pub(crate) fn accept(&self) -> Result<(Fd, VmcsAddr)> {
        match self.backend {
            Backend::Device => {
                let mut a = sys::vmcs_accept {
                    flags: libc::O_CLOEXEC as u32,
                    ..Default::default()
                };
                let fd = ioctl(self.raw(), sys::VMCS_IOC_ACCEPT, &mut a)?;
                // SAFETY: VMCS_IOC_ACCEPT returns a new fd that we own.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                Ok((
                    Fd {
                        fd,
                        backend: self.backend,
                    },
                    a.peer.into(),
                ))
            }
            Backend::Socket { .. } => {
                let mut sa = sys::sockaddr_vmcs::default();
                let mut len = SOCKADDR_LEN;
                // SAFETY: valid out pointers of the given length.
                let fd = cvt(|| unsafe {
                    libc::accept4(
                        self.raw(),
                        (&mut sa as *mut sys::sockaddr_vmcs).cast(),
                        &mut len,
                        libc::SOCK_CLOEXEC,
                    )
                })?;
                // SAFETY: a fresh fd we own.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                Ok((
                    Fd {
                        fd,
                        backend: self.backend,
                    },
                    VmcsAddr::new(sa.svm_cid, sa.svm_port),
                ))
            }
        }
    }

    /// Connects; `timeout` None means the backend's default (2 s for /dev/vmcs, as vsock).
    pub(crate) fn connect(&self, addr: VmcsAddr, timeout: Option<Duration>) -> Result<()> {
        match self.backend {
            Backend::Device => {
                let timeout_ms = match timeout {
                    None => 0,
                    Some(t) => t.as_millis().clamp(1, u32::MAX as u128) as u32,
                };
                let mut c = sys::vmcs_connect {
                    addr: addr.into(),
                    timeout_ms,
                    flags: 0,
                };
                ioctl(self.raw(), sys::VMCS_IOC_CONNECT, &mut c)?;
                Ok(())
            }
            Backend::Socket { family } => self
                .connect_socket(family, addr, timeout)
                // AF_VMCS reports a connect that nothing accepted as vsock does
                // (`ECONNRESET`, docs/sockets.md): for a connect that is a refusal.
                .map_err(|e| match e {
                    Error::Reset => Error::Refused,
                    e => e,
                }),
        }
    }

    /// The AF_VMCS side of [`Self::connect`]: blocking, or non-blocking plus a poll within
    /// `timeout`.
    fn connect_socket(&self, family: i32, addr: VmcsAddr, timeout: Option<Duration>) -> Result<()> {
        let sa = sockaddr(family, addr);
        let Some(timeout) = timeout else {
            // SAFETY: valid sockaddr of the given length.
            cvt(|| unsafe {
                libc::connect(
                    self.raw(),
                    (&sa as *const sys::sockaddr_vmcs).cast(),
                    SOCKADDR_LEN,
                )
            })?;
            return Ok(());
        };
        // Non-blocking connect, then poll for completion.
        self.set_nonblocking(true)?;
        // SAFETY: as above.
        let r = unsafe {
            libc::connect(
                self.raw(),
                (&sa as *const sys::sockaddr_vmcs).cast(),
                SOCKADDR_LEN,
            )
        };
        let res = if r == 0 {
            Ok(())
        } else {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                Err(e.into())
            } else {
                wait_fd(self.raw(), libc::POLLOUT, Some(timeout))
                    .map_err(Error::from)
                    .and_then(|_| match self.take_so_error()? {
                        0 => Ok(()),
                        e => Err(Error::from_errno(e)),
                    })
            }
        };
        self.set_nonblocking(false)?;
        res
    }

    fn take_so_error(&self) -> Result<i32> {
        let mut err: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid out pointers.
        cvt(|| unsafe {
            libc::getsockopt(
                self.raw(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut i32).cast(),
                &mut len,
            )
        })?;
        Ok(err)
    }

    /// (local, remote); remote is `0:0` when unconnected.
    pub(crate) fn names(&self) -> Result<(VmcsAddr, VmcsAddr)> {
        match self.backend {
            Backend::Device => {
                let mut n = sys::vmcs_names::default();
                ioctl(self.raw(), sys::VMCS_IOC_GET_NAMES, &mut n)?;
                Ok((n.local.into(), n.remote.into()))
            }
            Backend::Socket { .. } => {
                let get = |f: unsafe extern "C" fn(
                    i32,
                    *mut libc::sockaddr,
                    *mut libc::socklen_t,
                ) -> i32|
                 -> Result<VmcsAddr> {
                    let mut sa = sys::sockaddr_vmcs::default();
                    let mut len = SOCKADDR_LEN;
                    // SAFETY: valid out pointers of the given length.
                    cvt(|| unsafe {
                        f(
                            self.raw(),
                            (&mut sa as *mut sys::sockaddr_vmcs).cast(),
                            &mut len,
                        )
                    })?;
                    Ok(VmcsAddr::new(sa.svm_cid, sa.svm_port))
                };
                let local = get(libc::getsockname)?;
                let remote = match get(libc::getpeername) {
                    Ok(a) => a,
                    Err(Error::Io(e)) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                        VmcsAddr::new(0, 0)
                    }
                    Err(e) => return Err(e),
                };
                Ok((local, remote))
            }
        }
    }

    pub(crate) fn shutdown(&self, how: std::net::Shutdown) -> Result<()> {
        let how = match how {
            std::net::Shutdown::Read => libc::SHUT_RD,
            std::net::Shutdown::Write => libc::SHUT_WR,
            std::net::Shutdown::Both => libc::SHUT_RDWR,
        };
        match self.backend {
            Backend::Device => {
                let mut h = how as u32;
                ioctl(self.raw(), sys::VMCS_IOC_SHUTDOWN, &mut h)?;
            }
            // SAFETY: plain syscall.
            Backend::Socket { .. } => {
                cvt(|| unsafe { libc::shutdown(self.raw(), how) })?;
            }
        }
        Ok(())
    }

    /// `O_NONBLOCK` through fcntl: both backends honour the file's flag.
    pub(crate) fn set_nonblocking(&self, on: bool) -> Result<()> {
        // SAFETY: fcntl on a valid fd.
        let fl = cvt(|| unsafe { libc::fcntl(self.raw(), libc::F_GETFL) })?;
        let new = if on {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        if new != fl {
            // SAFETY: as above.
            cvt(|| unsafe { libc::fcntl(self.raw(), libc::F_SETFL, new) })?;
        }
        Ok(())
    }

    pub(crate) fn try_clone(&self) -> Result<Fd> {
        Ok(Fd {
            fd: self.fd.try_clone()?,
            backend: self.backend,
        })
    }

    /// One message in; 0 means end of stream.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes.
        cvt(|| unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) })
            .map(|n| n as usize)
    }

    /// One message out.
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let r = match self.backend {
            // SAFETY: buf is valid for buf.len() bytes.
            Backend::Device => {
                cvt(|| unsafe { libc::write(self.raw(), buf.as_ptr().cast(), buf.len()) })
            }
            // MSG_NOSIGNAL: a closed peer gives EPIPE, not SIGPIPE.
            // SAFETY: as above.
            Backend::Socket { .. } => cvt(|| unsafe {
                libc::send(
                    self.raw(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            }),
        };
        r.map(|n| n as usize)
    }
}

/// The encryption ioctls (`VMCS_IOC_SET_KEY` and friends) on a fresh `/dev/vmcs` file:
/// `cmd` with `arg`.
pub(crate) fn domain_ioctl<T>(cmd: u32, arg: &mut T) -> Result<()> {
    let fd = open_device()?;
    ioctl(fd.as_raw_fd(), cmd, arg)?;
    Ok(())
}

/// `VMCS_IOC_GET_INFO` on a fresh `/dev/vmcs` file.
pub(crate) fn get_info() -> Result<sys::vmcs_info> {
    let fd = open_device()?;
    let mut info = sys::vmcs_info::default();
    ioctl(fd.as_raw_fd(), sys::VMCS_IOC_GET_INFO, &mut info)?;
    Ok(info)
}

/// `VMCS_IOC_GET_INFO` of every domain, in index order (`VMCS_IOC_OPEN_DOMAIN` on
/// 0 .. `VMCS_MAX_DOMAINS`; indices nothing is bound to are skipped).
pub(crate) fn get_info_all() -> Result<Vec<sys::vmcs_info>> {
    let fd = open_device()?;
    let mut out = Vec::new();
    for d in 0..MAX_DOMAINS {
        let mut a = sys::vmcs_open_domain {
            domain: d,
            flags: libc::O_CLOEXEC as u32,
        };
        let nfd = match ioctl(fd.as_raw_fd(), sys::VMCS_IOC_OPEN_DOMAIN, &mut a) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => continue,
            Err(e) => return Err(e.into()),
        };
        // SAFETY: a fresh fd we own.
        let dfd = unsafe { OwnedFd::from_raw_fd(nfd) };
        let mut info = sys::vmcs_info::default();
        match ioctl(dfd.as_raw_fd(), sys::VMCS_IOC_GET_INFO, &mut info) {
            Ok(_) => out.push(info),
            // Unbound between the two calls.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Domain indices `get_info_all` looks at (ivshmem devices and the vsock domain of one
/// guest; the module numbers them from 0, lowest free first).
const MAX_DOMAINS: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn af_param_parsing() {
        let dir = std::env::temp_dir().join(format!("vmcs-af-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("af");
        assert_eq!(read_af_param(&p), None);
        fs::write(&p, "46\n").unwrap();
        assert_eq!(read_af_param(&p), Some(46));
        fs::write(&p, "0\n").unwrap();
        assert_eq!(read_af_param(&p), None);
        fs::write(&p, "junk").unwrap();
        assert_eq!(read_af_param(&p), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wait_fd_times_out() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let t = Instant::now();
        let e = wait_fd(a.as_raw_fd(), libc::POLLIN, Some(Duration::from_millis(30))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(30));
    }
}
