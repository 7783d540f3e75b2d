//! The transports `vmcs-bench` compares, behind one connection type: /dev/vmcs (and its
//! bulk area), AF_VMCS stream and seqpacket sockets, TCP over the virtio-net link and
//! AF_VSOCK through vhost-device-vsock.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};
use vmcs_guest_tools::dev::{Fd, SHUT_WR};
use vmcs_guest_tools::{cid_arg, ename, errno, Res};

/// Largest message of the message transports (`VMCS_MAX_MSG_SIZE`); larger application
/// messages go as several.
pub const MAX_MSG: usize = 64 * 1024;
const AF_VSOCK: i32 = 40;
const CID_ANY: u32 = u32::MAX;
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);
/// Largest write on AF_VSOCK. Between sibling guests vhost-device-vsock 0.3.0 forwards
/// each packet as it is (`recv_raw_pkt`), so it must fit one receive buffer of the other
/// guest: `VIRTIO_VSOCK_DEFAULT_RX_BUF_SIZE` is `SKB_WITH_OVERHEAD(4096)` = 3776 bytes
/// with the 44-byte header, so 3732 bytes of payload. A larger packet arrives truncated, the
/// guest drops it (net/vmw_vsock/virtio_transport.c checks the length) and the connection
/// stalls: seen here with 16 KiB and 64 KiB writes. A write makes packets no larger than
/// itself, so writes of at most 3.5 KiB keep the path working; this is a cost of the
/// backend's sibling mode, and the bench pays it as any program would.
const VSOCK_MAX_WRITE: usize = 3584;

/// `SO_BUSY_POLL` of both ends of [`Path::StreamBp`], in microseconds: longer than a
/// round trip between TCG guests (0.4-1 ms), so that each side finds the other's message
/// while it polls. [`Path::Stream`] sets 0 (no busy polling).
pub const BUSY_POLL_US: i32 = 2000;

/// One measured path. `Bulk` runs over a /dev/vmcs connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Path {
    Dev,
    Stream,
    /// AF_VMCS stream with `SO_BUSY_POLL` ([`BUSY_POLL_US`]) on both ends.
    StreamBp,
    /// AF_VMCS stream as [`Path::Stream`], encrypted: `VMCS_SO_ENCRYPT` require on both
    /// ends (the guests hold the domain's key; docs/security.md "Encryption").
    StreamEnc,
    Seqpacket,
    Bulk,
    Tcp,
    Vsock,
    /// TCP over the vmcs0 net device (docs/netdev.md): the same program as `Tcp`, another
    /// link.
    Vmcs0,
}

impl Path {
    pub const ALL: [Path; 9] = [
        Path::Dev,
        Path::Stream,
        Path::StreamBp,
        Path::StreamEnc,
        Path::Seqpacket,
        Path::Bulk,
        Path::Tcp,
        Path::Vsock,
        Path::Vmcs0,
    ];

    pub fn parse(s: &str) -> Option<Path> {
        Path::ALL.into_iter().find(|p| p.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Path::Dev => "dev",
            Path::Stream => "stream",
            Path::StreamBp => "stream-bp",
            Path::StreamEnc => "stream-enc",
            Path::Seqpacket => "seqpacket",
            Path::Bulk => "bulk",
            Path::Tcp => "tcp",
            Path::Vsock => "vsock",
            Path::Vmcs0 => "vmcs0",
        }
    }

    /// The listening port is the base port plus this.
    pub fn port_offset(self) -> u32 {
        match self {
            Path::Dev | Path::Bulk => 0,
            Path::Tcp => 1,
            Path::Stream => 2,
            Path::Seqpacket => 3,
            Path::Vsock => 4,
            Path::Vmcs0 => 5,
            Path::StreamBp => 6,
            Path::StreamEnc => 7,
        }
    }

    /// Whether the path is a byte stream (no message boundaries kept).
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            Path::Tcp | Path::Stream | Path::StreamBp | Path::StreamEnc | Path::Vsock | Path::Vmcs0
        )
    }

    /// Message boundaries, at most [`MAX_MSG`] bytes each.
    fn messages(self) -> bool {
        matches!(self, Path::Dev | Path::Bulk | Path::Seqpacket)
    }
}

enum Handle {
    Dev(Fd),
    Sock(OwnedFd),
}

/// One connection.
pub struct Conn {
    pub path: Path,
    h: Handle,
}

impl Conn {
    fn raw(&self) -> RawFd {
        match &self.h {
            Handle::Dev(f) => f.0,
            Handle::Sock(s) => s.as_raw_fd(),
        }
    }

    /// The /dev/vmcs file of a `Dev` or `Bulk` connection.
    pub fn dev(&self) -> Option<&Fd> {
        match &self.h {
            Handle::Dev(f) => Some(f),
            Handle::Sock(_) => None,
        }
    }

    /// Runs a read or write syscall `op` until it is not interrupted by a signal.
    fn retry(&self, what: &str, mut op: impl FnMut() -> isize) -> Res<usize> {
        loop {
            let r = op();
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = errno();
            if e != libc::EINTR {
                return Err(format!("{} {what}: {}", self.path.name(), ename(e)));
            }
        }
    }

    fn write_some(&self, buf: &[u8]) -> Res<usize> {
        // SAFETY: a valid buffer and our descriptor.
        self.retry("write", || unsafe {
            libc::write(self.raw(), buf.as_ptr().cast(), buf.len())
        })
    }

    /// One read: a message on the message transports, whatever is there on the others;
    /// 0 is end of file.
    pub fn recv_some(&self, buf: &mut [u8]) -> Res<usize> {
        let (p, n) = (buf.as_mut_ptr(), buf.len());
        // SAFETY: a valid buffer and our descriptor.
        self.retry("read", || unsafe { libc::read(self.raw(), p.cast(), n) })
    }

    /// Sends one application message: as messages of at most [`MAX_MSG`] bytes on the
    /// message transports, as bytes of the stream on the others. Returns the number of
    /// transport messages.
    pub fn send_app(&self, buf: &[u8]) -> Res<u64> {
        if self.path.messages() {
            let mut n = 0;
            for m in buf.chunks(MAX_MSG) {
                let w = self.write_some(m)?;
                if w != m.len() {
                    return Err(format!(
                        "{} write: {w} of {} bytes",
                        self.path.name(),
                        m.len()
                    ));
                }
                n += 1;
            }
            Ok(n)
        } else {
            let most = if self.path == Path::Vsock {
                VSOCK_MAX_WRITE
            } else {
                usize::MAX
            };
            let mut done = 0;
            while done < buf.len() {
                let end = buf.len().min(done + most);
                done += self.write_some(&buf[done..end])?;
            }
            Ok(1)
        }
    }

    /// Receives one application message of exactly `buf.len()` bytes (see
    /// [`Conn::send_app`]); `Ok(0)` for end of file before its first byte.
    pub fn recv_app(&self, buf: &mut [u8]) -> Res<usize> {
        let want = buf.len();
        let mut got = 0;
        while got < want {
            let end = if self.path.messages() {
                (got + MAX_MSG).min(want)
            } else {
                want
            };
            match self.recv_some(&mut buf[got..end])? {
                0 if got == 0 => return Ok(0),
                0 => {
                    return Err(format!(
                        "{}: end of file after {got} of {want} bytes",
                        self.path.name()
                    ))
                }
                n => got += n,
            }
        }
        Ok(got)
    }

    pub fn shutdown_write(&self) -> Res {
        let r = match &self.h {
            Handle::Dev(f) => f.shutdown(SHUT_WR),
            Handle::Sock(s) => {
                // SAFETY: our socket.
                if unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) } < 0 {
                    Err(errno())
                } else {
                    Ok(())
                }
            }
        };
        r.map_err(|e| format!("{} shutdown: {}", self.path.name(), ename(e)))
    }
}

/// The AF_VMCS family number, as the loaded module says.
fn af_vmcs() -> Res<i32> {
    let s = std::fs::read_to_string("/sys/module/vmcs/parameters/af")
        .map_err(|e| format!("/sys/module/vmcs/parameters/af: {e}"))?;
    match s.trim().parse() {
        Ok(0) | Err(_) => Err(format!("AF_VMCS not registered (af={})", s.trim())),
        Ok(n) => Ok(n),
    }
}

/// `struct sockaddr_vm`, which `struct sockaddr_vmcs` copies.
#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved1: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

fn vm_addr(family: i32, cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm {
        family: family as u16,
        reserved1: 0,
        port,
        cid,
        flags: 0,
        zero: [0; 3],
    }
}

/// A socket of the vsock-like families (AF_VMCS, AF_VSOCK).
fn vm_socket(family: i32, ty: i32) -> Res<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket({family}, {ty}): {}", ename(errno())));
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SO_BUSY_POLL` of the AF_VMCS stream paths: [`BUSY_POLL_US`] on `stream-bp`, 0 on
/// `stream` (the module's default window would otherwise apply).
fn set_busy_poll(s: &OwnedFd, path: Path) -> Res {
    let us: i32 = match path {
        Path::StreamBp => BUSY_POLL_US,
        Path::Stream | Path::StreamEnc => 0,
        _ => return Ok(()),
    };
    // SAFETY: `us` is valid for its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            (&us as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r < 0 {
        return Err(format!(
            "{}: SO_BUSY_POLL {us}: {}",
            path.name(),
            ename(errno())
        ));
    }
    Ok(())
}

/// `VMCS_SO_ENCRYPT` require on [`Path::StreamEnc`] (a listener's accepted sockets inherit
/// it); nothing on the other paths.
fn set_encrypt(s: &OwnedFd, path: Path) -> Res {
    if path != Path::StreamEnc {
        return Ok(());
    }
    let v: i32 = 2;
    // SAFETY: `v` is valid for its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            vmcs_guest_tools::sys::VMCS_SOL_VMCS,
            vmcs_guest_tools::sys::VMCS_SO_ENCRYPT,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r < 0 {
        return Err(format!(
            "{}: VMCS_SO_ENCRYPT 2: {}",
            path.name(),
            ename(errno())
        ));
    }
    Ok(())
}

fn family_type(path: Path) -> Res<(i32, i32)> {
    Ok(match path {
        Path::Stream | Path::StreamBp | Path::StreamEnc => (af_vmcs()?, libc::SOCK_STREAM),
        Path::Seqpacket => (af_vmcs()?, libc::SOCK_SEQPACKET),
        Path::Vsock => (AF_VSOCK, libc::SOCK_STREAM),
        p => return Err(format!("{} is not a socket path", p.name())),
    })
}

/// A listener of one path.
pub enum Listener {
    Dev(Fd),
    Vm(OwnedFd, Path),
    Tcp(TcpListener, Path),
}

pub fn listen(path: Path, port: u32) -> Res<Listener> {
    match path {
        Path::Dev | Path::Bulk => {
            let l = Fd::open()?;
            l.bind(port)
                .map_err(|e| format!("vmcs bind {port}: {}", ename(e)))?;
            l.listen(4)
                .map_err(|e| format!("vmcs listen: {}", ename(e)))?;
            Ok(Listener::Dev(l))
        }
        Path::Tcp | Path::Vmcs0 => TcpListener::bind(("0.0.0.0", port as u16))
            .map(|l| Listener::Tcp(l, path))
            .map_err(|e| format!("tcp bind {port}: {e}")),
        p => {
            let (family, ty) = family_type(p)?;
            let s = vm_socket(family, ty)?;
            // Accepted sockets inherit the listener's window and encryption.
            set_busy_poll(&s, p)?;
            set_encrypt(&s, p)?;
            let a = vm_addr(family, CID_ANY, port);
            // SAFETY: `a` is a valid sockaddr_vm of the size given.
            let r = unsafe {
                libc::bind(
                    s.as_raw_fd(),
                    (&a as *const SockaddrVm).cast(),
                    std::mem::size_of::<SockaddrVm>() as u32,
                )
            };
            if r < 0 {
                return Err(format!("{} bind {port}: {}", p.name(), ename(errno())));
            }
            // SAFETY: our socket.
            if unsafe { libc::listen(s.as_raw_fd(), 4) } < 0 {
                return Err(format!("{} listen: {}", p.name(), ename(errno())));
            }
            Ok(Listener::Vm(s, p))
        }
    }
}

impl Listener {
    pub fn accept(&self) -> Res<Conn> {
        match self {
            Listener::Dev(l) => l
                .accept(libc::O_CLOEXEC as u32)
                .map(|(f, _)| Conn {
                    path: Path::Dev,
                    h: Handle::Dev(f),
                })
                .map_err(|e| format!("vmcs accept: {}", ename(e))),
            Listener::Tcp(l, path) => {
                let (s, _) = l.accept().map_err(|e| format!("tcp accept: {e}"))?;
                s.set_nodelay(true)
                    .map_err(|e| format!("TCP_NODELAY: {e}"))?;
                Ok(Conn {
                    path: *path,
                    h: Handle::Sock(s.into()),
                })
            }
            Listener::Vm(l, p) => loop {
                // SAFETY: our listening socket; no address wanted.
                let fd = unsafe {
                    libc::accept4(
                        l.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                if fd >= 0 {
                    return Ok(Conn {
                        path: *p,
                        // SAFETY: a new descriptor that nothing else owns.
                        h: Handle::Sock(unsafe { OwnedFd::from_raw_fd(fd) }),
                    });
                }
                let e = errno();
                if e != libc::EINTR {
                    return Err(format!("{} accept: {}", p.name(), ename(e)));
                }
            },
        }
    }
}

/// The cids to try for a vmcs `server`: one number, or `auto` for every live peer.
fn vmcs_cids(server: &str) -> Res<Vec<u32>> {
    match cid_arg(server) {
        Some(cid) => Ok(vec![cid]),
        None if server == "auto" => Fd::open()?
            .live_peers()
            .map_err(|e| format!("GET_INFO: {}", ename(e))),
        None => Err(format!("bad cid {server}")),
    }
}

fn connect_once(path: Path, server: &str, port: u32) -> Res<Conn> {
    match path {
        Path::Dev | Path::Bulk => {
            let mut last = format!("no live peer for {server}");
            for cid in vmcs_cids(server)? {
                let f = Fd::open()?;
                match f.connect(cid, port, 2000) {
                    Ok(()) => {
                        return Ok(Conn {
                            path,
                            h: Handle::Dev(f),
                        })
                    }
                    Err(e) => last = format!("vmcs connect {cid}:{port}: {}", ename(e)),
                }
            }
            Err(last)
        }
        Path::Tcp | Path::Vmcs0 => {
            let a: SocketAddr = format!("{server}:{port}")
                .parse()
                .map_err(|_| format!("bad address {server}:{port}"))?;
            let s = TcpStream::connect_timeout(&a, Duration::from_secs(2))
                .map_err(|e| format!("tcp connect {a}: {e}"))?;
            s.set_nodelay(true)
                .map_err(|e| format!("TCP_NODELAY: {e}"))?;
            Ok(Conn {
                path,
                h: Handle::Sock(s.into()),
            })
        }
        p => {
            let (family, ty) = family_type(p)?;
            let cids = if p == Path::Vsock {
                vec![server
                    .parse()
                    .map_err(|_| format!("bad vsock cid {server}"))?]
            } else {
                vmcs_cids(server)?
            };
            let mut last = format!("no live peer for {server}");
            for cid in cids {
                let s = vm_socket(family, ty)?;
                set_busy_poll(&s, p)?;
                set_encrypt(&s, p)?;
                let a = vm_addr(family, cid, port);
                // SAFETY: `a` is a valid sockaddr_vm of the size given.
                let r = unsafe {
                    libc::connect(
                        s.as_raw_fd(),
                        (&a as *const SockaddrVm).cast(),
                        std::mem::size_of::<SockaddrVm>() as u32,
                    )
                };
                if r == 0 {
                    return Ok(Conn {
                        path,
                        h: Handle::Sock(s),
                    });
                }
                last = format!("{} connect {cid}:{port}: {}", p.name(), ename(errno()));
            }
            Err(last)
        }
    }
}

/// Connects, retrying for up to a minute (the server may still be starting).
pub fn connect(path: Path, server: &str, port: u32) -> Res<Conn> {
    let t0 = Instant::now();
    loop {
        match connect_once(path, server, port) {
            Ok(c) => return Ok(c),
            Err(e) if t0.elapsed() >= CONNECT_PATIENCE => {
                return Err(format!("no server after {CONNECT_PATIENCE:?}: {e}"))
            }
            Err(_) => thread::sleep(Duration::from_millis(300)),
        }
    }
}
