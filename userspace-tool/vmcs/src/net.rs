//! `VmcsListener` and `VmcsStream`, modelled on `std::net::{TcpListener, TcpStream}`.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{wait_fd, Backend, Fd};
use crate::error::{Error, Result};
use crate::{sys, VmcsAddr};

/// The largest message one write carries ([`sys::VMCS_MAX_MSG_SIZE`], 64 KiB).
pub const MAX_MSG_SIZE: usize = sys::VMCS_MAX_MSG_SIZE as usize;

/// Default backlog of [`VmcsListener::bind`].
pub const DEFAULT_BACKLOG: u32 = 128;

/// Timeouts and the non-blocking flag, shared by an fd and its `try_clone`s (the flag and
/// the timeouts of a socket belong to its open file description, which dup shares).
#[derive(Debug, Default)]
struct Shared {
    /// Nanoseconds; 0 = none.
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
    nonblocking: AtomicBool,
}

fn load(t: &AtomicU64) -> Option<Duration> {
    match t.load(Ordering::Relaxed) {
        0 => None,
        n => Some(Duration::from_nanos(n)),
    }
}

fn store(t: &AtomicU64, d: Option<Duration>) -> Result<()> {
    let n = match d {
        None => 0,
        Some(d) if d.is_zero() => {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            )))
        }
        Some(d) => d.as_nanos().min(u64::MAX as u128) as u64,
    };
    t.store(n, Ordering::Relaxed);
    Ok(())
}

/// A listening vmcs endpoint.
///
/// ```no_run
/// use vmcs::{VmcsAddr, VmcsListener};
/// use std::io::{Read, Write};
/// let listener = VmcsListener::bind(VmcsAddr::any(5000))?;
/// for stream in listener.incoming() {
///     let mut stream = stream?;
///     let mut buf = vec![0; vmcs::MAX_MSG_SIZE];
///     let n = stream.read(&mut buf)?;   // one message
///     stream.write_all(&buf[..n])?;     // one message back
/// }
/// # Ok::<(), vmcs::Error>(())
/// ```
#[derive(Debug)]
pub struct VmcsListener {
    inner: Fd,
    shared: Arc<Shared>,
}

impl VmcsListener {
    /// Binds to `addr` (normally `VmcsAddr::any(port)`; `PORT_ANY` picks a free port) and
    /// listens, with the detected backend.
    pub fn bind(addr: impl Into<VmcsAddr>) -> Result<VmcsListener> {
        Self::bind_with(Backend::detect()?, addr.into(), DEFAULT_BACKLOG)
    }

    /// [`bind`](Self::bind) with an explicit backend and backlog.
    pub fn bind_with(backend: Backend, addr: VmcsAddr, backlog: u32) -> Result<VmcsListener> {
        let inner = Fd::new(backend)?;
        inner.bind(addr)?;
        inner.listen(backlog)?;
        Ok(VmcsListener {
            inner,
            shared: Arc::default(),
        })
    }

    /// Waits for a connection. Returns it and the connecting side's address.
    pub fn accept(&self) -> Result<(VmcsStream, VmcsAddr)> {
        let (fd, peer) = self.inner.accept()?;
        Ok((VmcsStream::from_fd(fd), peer))
    }

    /// An endless iterator of [`accept`](Self::accept)ed streams.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The bound address (the port `PORT_ANY` picked, for one).
    pub fn local_addr(&self) -> Result<VmcsAddr> {
        Ok(self.inner.names()?.0)
    }

    /// Makes `accept` return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        self.inner.set_nonblocking(nonblocking)?;
        self.shared
            .nonblocking
            .store(nonblocking, Ordering::Relaxed);
        Ok(())
    }

    /// A second handle to the same listener (`dup`).
    pub fn try_clone(&self) -> Result<VmcsListener> {
        Ok(VmcsListener {
            inner: self.inner.try_clone()?,
            shared: self.shared.clone(),
        })
    }

    /// The backend this listener uses.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }
}

/// Iterator of [`VmcsListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a VmcsListener,
}

impl Iterator for Incoming<'_> {
    type Item = Result<VmcsStream>;
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

/// A vmcs connection. Connections are **seqpacket**: message boundaries are kept.
///
/// - Each `write` sends **one message** of at most [`MAX_MSG_SIZE`] bytes. A longer buffer
///   is cut at `MAX_MSG_SIZE` and `write` returns the count sent, so `write_all` of a large
///   buffer sends it as several full-size messages.
/// - Each `read` returns **one message**; pass a buffer of `MAX_MSG_SIZE` to be sure to get
///   whole messages (what happens to the tail of a longer message is the kernel's choice;
///   seqpacket sockets drop it). `Ok(0)` means the peer shut down its writing side or
///   closed: avoid sending empty messages.
/// - Timeouts are implemented with `poll(2)` on the fd and shared with `try_clone`s.
#[derive(Debug)]
pub struct VmcsStream {
    inner: Fd,
    shared: Arc<Shared>,
}

/// `/dev/vmcs` connections are seqpacket; this is the same type under that name.
pub type VmcsSeqpacket = VmcsStream;

impl VmcsStream {
    fn from_fd(inner: Fd) -> VmcsStream {
        VmcsStream {
            inner,
            shared: Arc::default(),
        }
    }

    /// Connects to `addr` (`cid:port`) with the backend's default timeout (2 s).
    pub fn connect(addr: impl Into<VmcsAddr>) -> Result<VmcsStream> {
        Self::connect_with(Backend::detect()?, addr.into(), None)
    }

    /// Connects, giving up after `timeout` ([`Error::TimedOut`]).
    pub fn connect_timeout(addr: impl Into<VmcsAddr>, timeout: Duration) -> Result<VmcsStream> {
        if timeout.is_zero() {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot connect with a 0 timeout",
            )));
        }
        Self::connect_with(Backend::detect()?, addr.into(), Some(timeout))
    }

    /// [`connect`](Self::connect) with an explicit backend.
    pub fn connect_with(
        backend: Backend,
        addr: VmcsAddr,
        timeout: Option<Duration>,
    ) -> Result<VmcsStream> {
        let fd = Fd::new(backend)?;
        fd.connect(addr, timeout)?;
        Ok(Self::from_fd(fd))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<VmcsAddr> {
        Ok(self.inner.names()?.1)
    }

    /// This end's address.
    pub fn local_addr(&self) -> Result<VmcsAddr> {
        Ok(self.inner.names()?.0)
    }

    /// Shuts down reading, writing or both; the peer reads end-of-stream after `Write`.
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        self.inner.shutdown(how)
    }

    /// Makes reads and writes return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        self.inner.set_nonblocking(nonblocking)?;
        self.shared
            .nonblocking
            .store(nonblocking, Ordering::Relaxed);
        Ok(())
    }

    /// Bounds how long a read waits (`None`: forever). A zero duration is refused.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<()> {
        store(&self.shared.read_timeout, t)
    }

    /// Bounds how long a write waits for room (`None`: forever).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> Result<()> {
        store(&self.shared.write_timeout, t)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        load(&self.shared.read_timeout)
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        load(&self.shared.write_timeout)
    }

    /// A second handle to the same connection (`dup`), sharing timeouts and blocking mode:
    /// for example one thread reads while another writes.
    pub fn try_clone(&self) -> Result<VmcsStream> {
        Ok(VmcsStream {
            inner: self.inner.try_clone()?,
            shared: self.shared.clone(),
        })
    }

    /// The backend this stream uses.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    fn wait(&self, events: i16, t: Option<Duration>) -> io::Result<()> {
        if let Some(t) = t {
            if !self.shared.nonblocking.load(Ordering::Relaxed) {
                wait_fd(self.inner.fd.as_raw_fd(), events, Some(t))?;
            }
        }
        Ok(())
    }

    /// Receives one message into `buf`; `Ok(0)` at end of stream.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait(libc::POLLIN, self.read_timeout())?;
        self.inner.read(buf)
    }

    /// Sends `buf` as one message; fails with `EMSGSIZE` above [`MAX_MSG_SIZE`].
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > MAX_MSG_SIZE {
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        self.wait(libc::POLLOUT, self.write_timeout())?;
        self.inner.write(buf)
    }
}

impl Read for &VmcsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf)
    }
}

impl Write for &VmcsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(&buf[..buf.len().min(MAX_MSG_SIZE)])
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for VmcsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for VmcsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

macro_rules! fd_traits {
    ($t:ty, $make:expr) => {
        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.inner.fd.as_raw_fd()
            }
        }
        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.inner.fd.as_fd()
            }
        }
        impl IntoRawFd for $t {
            fn into_raw_fd(self) -> RawFd {
                self.inner.fd.into_raw_fd()
            }
        }
        impl From<$t> for OwnedFd {
            fn from(s: $t) -> OwnedFd {
                s.inner.fd
            }
        }
        impl From<OwnedFd> for $t {
            /// Sockets are taken as AF_VMCS, any other fd as a `/dev/vmcs` file.
            fn from(fd: OwnedFd) -> $t {
                $make(Fd::from_owned(fd))
            }
        }
        impl FromRawFd for $t {
            /// # Safety
            /// `fd` must be an open fd that the caller owns and gives away.
            unsafe fn from_raw_fd(fd: RawFd) -> $t {
                // SAFETY: forwarded to the caller.
                <$t>::from(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        }
    };
}

fd_traits!(VmcsStream, VmcsStream::from_fd);
fd_traits!(VmcsListener, |inner| VmcsListener {
    inner,
    shared: Arc::default()
});

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Instant;

    /// Two connected streams over an AF_UNIX seqpacket pair: the same message semantics
    /// as vmcs, so the stream logic runs without the module.
    pub(crate) fn pair() -> (VmcsStream, VmcsStream) {
        let mut fds = [0; 2];
        // SAFETY: valid out array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: fresh fds we own.
        unsafe {
            (
                VmcsStream::from_raw_fd(fds[0]),
                VmcsStream::from_raw_fd(fds[1]),
            )
        }
    }

    #[test]
    fn messages_keep_boundaries() {
        let (a, b) = pair();
        assert_eq!(
            a.backend(),
            Backend::Socket {
                family: libc::AF_UNIX
            }
        );
        (&a).write_all(b"hello").unwrap();
        (&a).write_all(b"world!").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!((&b).read(&mut buf).unwrap(), 5);
        assert_eq!((&b).read(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"world!");
    }

    #[test]
    fn write_all_splits_at_max_msg_size() {
        let (a, b) = pair();
        let big = vec![7u8; MAX_MSG_SIZE + 10];
        let t = std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_MSG_SIZE * 2];
            let n1 = b.recv(&mut buf).unwrap();
            let n2 = b.recv(&mut buf).unwrap();
            (n1, n2)
        });
        (&a).write_all(&big).unwrap();
        assert_eq!(t.join().unwrap(), (MAX_MSG_SIZE, 10));
        assert_eq!(
            a.send(&big).unwrap_err().raw_os_error(),
            Some(libc::EMSGSIZE)
        );
    }

    #[test]
    fn read_timeout_and_nonblocking() {
        let (a, _b) = pair();
        let mut buf = [0u8; 8];
        a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let t = Instant::now();
        let e = (&a).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert!(matches!(Error::from(e), Error::TimedOut));
        assert!(a.set_read_timeout(Some(Duration::ZERO)).is_err());
        // Clones share the timeout.
        let c = a.try_clone().unwrap();
        assert_eq!(c.read_timeout(), Some(Duration::from_millis(20)));
        a.set_read_timeout(None).unwrap();
        a.set_nonblocking(true).unwrap();
        assert_eq!(
            (&c).read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn shutdown_write_gives_eof() {
        let (a, b) = pair();
        a.send(b"x").unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(b.recv(&mut buf).unwrap(), 1);
        assert_eq!(b.recv(&mut buf).unwrap(), 0);
        drop(a);
        assert!(matches!(
            Error::from(b.send(b"y").unwrap_err()),
            Error::Reset
        ));
    }

    #[test]
    fn fd_traits_round_trip() {
        let (a, _b) = pair();
        let raw = a.as_raw_fd();
        let raw2 = a.into_raw_fd();
        assert_eq!(raw, raw2);
        // SAFETY: we own raw2.
        let back = unsafe { VmcsStream::from_raw_fd(raw2) };
        assert_eq!(back.as_fd().as_raw_fd(), raw);
        // A non-socket fd is taken as /dev/vmcs.
        let f = std::fs::File::open("/dev/null").unwrap();
        let s = VmcsStream::from(OwnedFd::from(f));
        assert_eq!(s.backend(), Backend::Device);
    }
}
