// SPDX-License-Identifier: GPL-2.0

//! AF_VMCS: the socket family's operations over the core (docs/sockets.md).
//!
//! Each socket is one endpoint of the core (`conn::Endpoint`) of the default domain, exactly
//! like a `/dev/vmcs` file (module/chardev/): the two share one port space. `SOCK_SEQPACKET`
//! uses the core's message calls; `SOCK_STREAM` its byte-stream calls (`recv_stream`). The
//! raw `proto_ops` entry points live in [`entry`] (nothing imports it) and call the methods
//! here.

mod entry;

mod vsockopt;

pub(crate) use vsockopt::VsockOpts;

use crate::{
    conn::{Endpoint, ListenWake, Timeout, DEFAULT_RCVBUF, MAX_RCVBUF, MIN_RCVBUF, TXQ_MAX},
    domain::{self, Domain},
    glue::{self, errno, poll_mask},
    proto::frame::{flags, SockType},
    uapi::{self, SockaddrVmcs},
};
use kernel::{
    fs::File,
    iov::{IovIterDest, IovIterSource},
    new_mutex,
    prelude::*,
    sync::{poll::PollTable, Arc, Mutex},
    transmute::FromBytes,
};

/// `SOCK_STREAM`.
pub(crate) const SOCK_STREAM: i32 = 1;
/// `SOCK_SEQPACKET`.
pub(crate) const SOCK_SEQPACKET: i32 = 5;

/// `recvmsg`/`sendmsg` flags (include/linux/socket.h).
pub(crate) mod msg {
    pub(crate) const PEEK: u32 = kernel::bindings::MSG_PEEK;
    pub(crate) const TRUNC: u32 = kernel::bindings::MSG_TRUNC;
    pub(crate) const DONTWAIT: u32 = kernel::bindings::MSG_DONTWAIT;
    pub(crate) const EOR: u32 = kernel::bindings::MSG_EOR;
    pub(crate) const WAITALL: u32 = kernel::bindings::MSG_WAITALL;
    pub(crate) const OOB: u32 = kernel::bindings::MSG_OOB;
    pub(crate) const ZEROCOPY: u32 = kernel::bindings::MSG_ZEROCOPY;
    pub(crate) const ERRQUEUE: u32 = kernel::bindings::MSG_ERRQUEUE;
}

/// `SIOCINQ` (`FIONREAD`) and `SIOCOUTQ` (`TIOCOUTQ`), generic ioctl numbers.
pub(crate) const SIOCINQ: u32 = 0x541B;
/// See [`SIOCINQ`].
pub(crate) const SIOCOUTQ: u32 = 0x5411;

// The `af` default in the C glue is the header's VMCS_AF_DEFAULT.
const _: () = assert!(uapi::AF_DEFAULT == 22);

/// The AF_VMCS family number in use (the `af` module parameter).
pub(crate) fn family() -> u16 {
    // Registration refuses numbers that do not fit (`af` < `AF_MAX`).
    glue::af_param() as u16
}

/// The `struct sock` options a call obeys (read by [`entry`] for each call).
#[derive(Clone, Copy)]
pub(crate) struct SocketOptions {
    /// `SO_RCVTIMEO` (recv, accept) or `SO_SNDTIMEO` (send), in jiffies; 0 when the call
    /// must not block.
    pub(crate) timeout: Timeout,
    /// `SO_RCVLOWAT` (at least 1).
    pub(crate) lowat: usize,
}

/// `SO_RCVBUF`/`SO_SNDBUF` values of a fresh socket, as `getsockopt` reports them: twice
/// the receive buffer and transmit queue limit in use (docs/sockets.md).
pub(crate) const DEFAULT_SOCKET_BUFFERS: (u32, u32) = (2 * DEFAULT_RCVBUF, 2 * TXQ_MAX as u32);

/// vsock's errno for a connect the peer answered with `RST` (nothing listens, the backlog
/// is full, the type differs): af_vsock.c reports `ECONNRESET` where the core (and
/// `/dev/vmcs`, docs/uapi.md) says `ECONNREFUSED`.
fn connect_errno(e: Error) -> Error {
    if e == errno::econnrefused() {
        errno::econnreset()
    } else {
        e
    }
}

/// The second listening endpoint of a listener in a guest with an ivshmem domain and the
/// vsock domain ("dual", docs/architecture.md "Transport per peer"): the same port in the
/// other domain, so that peers reach it over either transport.
struct AltListener {
    domain: Arc<Domain>,
    endpoint: Arc<Endpoint>,
    /// Woken with either endpoint (accept waits on both).
    wake: Arc<ListenWake>,
}

/// The state of one AF_VMCS socket, owned by its `struct sock`.
#[pin_data]
pub(crate) struct VmcsSocket {
    /// The domain the endpoint is in: the default domain until a connect in a dual guest
    /// routes it to another one ([`domain::route`]), then fixed.
    #[pin]
    domain: Mutex<Arc<Domain>>,
    endpoint: Arc<Endpoint>,
    /// A listener's endpoint in the other domain of a dual guest.
    #[pin]
    alt: Mutex<Option<AltListener>>,
    /// Held by `connect` while it picks the domain and moves the endpoint there.
    #[pin]
    connecting: Mutex<()>,
    stream: bool,
    /// The `SOL_VSOCK` options (`SO_VM_SOCKETS_*`).
    vsock: VsockOpts,
    /// Held by a stream `recvmsg` from the first look at the queue until the bytes it
    /// copied to the user are consumed (vsock's `lock_sock`), so that a failed copy
    /// (`EFAULT`) leaves them queued and two readers never take the same bytes. Only
    /// readers take it: nothing else waits for it.
    #[pin]
    reader: Mutex<()>,
}

impl VmcsSocket {
    /// `socket(AF_VMCS, ty, protocol)`.
    pub(crate) fn create(ty: i32, protocol: i32) -> Result<Arc<Self>> {
        let stream = match ty {
            SOCK_STREAM => true,
            SOCK_SEQPACKET => false,
            _ => {
                return Err(Error::from_errno(
                    -(kernel::bindings::ESOCKTNOSUPPORT as i32),
                ))
            }
        };
        if protocol != 0 {
            return Err(errno::eprotonosupport());
        }
        let domain = domain::default_domain().ok_or(ENODEV)?;
        let endpoint = Endpoint::new(if stream {
            SockType::Stream
        } else {
            SockType::SeqPacket
        })?;
        Self::new(domain, endpoint, stream, VsockOpts::default())
    }

    fn new(
        domain: Arc<Domain>,
        endpoint: Arc<Endpoint>,
        stream: bool,
        vsock: VsockOpts,
    ) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                domain <- new_mutex!(domain, "vmcs_sock_domain"),
                endpoint,
                alt <- new_mutex!(None, "vmcs_sock_alt"),
                connecting <- new_mutex!((), "vmcs_sock_connecting"),
                stream,
                vsock,
                reader <- new_mutex!((), "vmcs_sock_reader"),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// The domain the endpoint is in now.
    fn dom(&self) -> Arc<Domain> {
        self.domain.lock().clone()
    }

    /// `ENODEV` once the socket's domain is gone, `ECONNRESET` for a socket that had a
    /// connection there (an unbound ivshmem device: vsock's error on migration).
    fn live(&self, d: &Domain) -> Result {
        d.alive().map_err(|e| {
            if self.endpoint.names().1.is_some() {
                errno::econnreset()
            } else {
                e
            }
        })
    }

    /// `close()`: once, from `proto_ops->release`.
    pub(crate) fn release(&self) {
        self.endpoint.set_listen_wake(None);
        self.endpoint.release(&self.dom().conns());
        let alt = self.alt.lock().take();
        if let Some(a) = alt {
            a.endpoint.set_listen_wake(None);
            a.endpoint.release(&a.domain.conns());
        }
    }

    /// Parses a user `struct sockaddr_vmcs`.
    fn addr(raw: &[u8]) -> Result<SockaddrVmcs> {
        let a = SockaddrVmcs::from_bytes_copy_prefix(raw)
            .map(|(a, _)| a)
            .ok_or(EINVAL)?;
        // vsock: EINVAL for an address of another family too (`vsock_addr_cast`).
        if a.family != family() {
            return Err(EINVAL);
        }
        Ok(a)
    }

    /// `bind()`. In a dual guest this guest's vsock cid names it too.
    pub(crate) fn bind(&self, raw: &[u8]) -> Result {
        let d = self.dom();
        d.alive()?;
        let a = Self::addr(raw)?;
        if domain::dual_local_cid() != Some(a.cid) {
            d.bind_cid(a.cid)?;
        }
        Endpoint::bind(&self.endpoint, &d.conns(), a.port)?;
        Ok(())
    }

    /// `SO_RCVLOWAT`: vsock refuses a mark above the receive buffer (`EINVAL`).
    pub(crate) fn check_rcvlowat(&self, val: i32) -> Result {
        if i64::from(val) > i64::from(self.endpoint.bufs().0) {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// `connect()`, waiting `SO_VM_SOCKETS_CONNECT_TIMEOUT` if set, else `sndtimeo_ms`
    /// (`SO_SNDTIMEO`; 0 is the default, 2 s).
    pub(crate) fn connect(&self, raw: &[u8], nonblock: bool, sndtimeo_ms: u32) -> Result {
        let a = Self::addr(raw)?;
        let (d, peer) = self.pick_domain(a.cid)?;
        d.alive()?;
        Endpoint::connect(
            &self.endpoint,
            &d.conns(),
            peer,
            a.port,
            self.vsock.connect_timeout_ms().unwrap_or(sndtimeo_ms),
            nonblock,
        )
        .map_err(connect_errno)
    }

    /// The domain a connect to `cid` goes through and the peer's id there
    /// (docs/architecture.md "Transport per peer"): in a dual guest the route (ivshmem for
    /// a region peer, vsock otherwise); else the socket's domain, or the default domain if
    /// the socket's went away before it connected (an unbound ivshmem device: the vsock
    /// domain). An endpoint that may connect is moved there (its port too).
    fn pick_domain(&self, cid: u32) -> Result<(Arc<Domain>, u32)> {
        let _g = self.connecting.lock();
        let cur = self.dom();
        if !self.endpoint.can_connect() {
            // Connecting, connected or listening: the endpoint says which error.
            return Ok((cur, cid));
        }
        let to = match domain::route(cid) {
            Some(r) => r,
            None if cur.alive().is_err() => match domain::default_domain() {
                Some(d) => (d, cid),
                None => return Ok((cur, cid)),
            },
            None => return Ok((cur, cid)),
        };
        if !Arc::ptr_eq(&to.0, &cur) {
            Endpoint::rebind(&self.endpoint, &cur.conns(), &to.0.conns())?;
            *self.domain.lock() = to.0.clone();
        }
        Ok(to)
    }

    /// Whether it is a `SOCK_STREAM` socket.
    pub(crate) fn is_stream(&self) -> bool {
        self.stream
    }

    /// Whether the socket is connected now (vsock's `TCP_ESTABLISHED`).
    pub(crate) fn connected(&self) -> bool {
        self.endpoint.connected()
    }

    /// `listen()`. In a dual guest the listener listens in both domains, on the same port.
    pub(crate) fn listen(&self, backlog: i32) -> Result {
        let d = self.dom();
        d.alive()?;
        // A negative backlog is the smallest one, as in vsock.
        let backlog = u32::try_from(backlog).unwrap_or(0);
        self.listen_alt(&d, backlog)?;
        let r = self.endpoint.listen(&d.conns(), backlog);
        if r.is_err() {
            let alt = self.alt.lock().take();
            if let Some(a) = alt {
                a.endpoint.release(&a.domain.conns());
            }
        }
        r
    }

    /// A dual guest's second listening endpoint, in the other domain (or its new backlog).
    fn listen_alt(&self, d: &Arc<Domain>, backlog: u32) -> Result {
        let mut alt = self.alt.lock();
        if let Some(a) = &*alt {
            return a.endpoint.listen(&a.domain.conns(), backlog);
        }
        let Some((iv, vs)) = domain::dual() else {
            return Ok(());
        };
        let other = if Arc::ptr_eq(d, &iv) {
            vs
        } else if Arc::ptr_eq(d, &vs) {
            iv
        } else {
            return Ok(());
        };
        // Not bound (listen fails with EINVAL), or already listening alone.
        let Some(port) = self.endpoint.names().0 else {
            return Ok(());
        };
        let ep = Endpoint::new(if self.stream {
            SockType::Stream
        } else {
            SockType::SeqPacket
        })?;
        let conns = other.conns();
        ep.set_opts(&conns, None, Some(self.endpoint.bufs().0));
        Endpoint::bind(&ep, &conns, port)?;
        if let Err(e) = ep.listen(&conns, backlog) {
            ep.release(&conns);
            return Err(e);
        }
        let wake = ListenWake::new()?;
        self.endpoint.set_listen_wake(Some(wake.clone()));
        ep.set_listen_wake(Some(wake.clone()));
        *alt = Some(AltListener {
            domain: other,
            endpoint: ep,
            wake,
        });
        Ok(())
    }

    /// `accept()`: the next connection as a new `VmcsSocket`, waiting at most `timeout`;
    /// a dual listener's from either domain.
    pub(crate) fn accept(&self, mut timeout: Timeout) -> Result<Arc<Self>> {
        let d = self.dom();
        let alt = self
            .alt
            .lock()
            .as_ref()
            .map(|a| (a.domain.clone(), a.endpoint.clone(), a.wake.clone()));
        let (d, child) = match alt {
            None => {
                d.alive()?;
                let (child, _, _) = self.endpoint.accept_timeout(&d.conns(), &mut timeout)?;
                (d, child)
            }
            Some((ad, ae, wake)) => 'both: loop {
                let seen = wake.events();
                let mut any = false;
                for (dom, ep) in [(&d, &self.endpoint), (&ad, &ae)] {
                    if dom.alive().is_err() {
                        continue;
                    }
                    any = true;
                    match ep.accept_timeout(&dom.conns(), &mut Timeout(0)) {
                        Ok((child, _, _)) => break 'both (dom.clone(), child),
                        Err(e) if e == EAGAIN => {}
                        Err(e) => return Err(e),
                    }
                }
                if !any {
                    return Err(ENODEV);
                }
                wake.wait(seen, &mut timeout)?;
            },
        };
        // As vsock, the connection inherits the listener's SOL_VSOCK options (its credit
        // came from the listener's endpoint already).
        let vsock = self.vsock.clone_for_child();
        match Self::new(d.clone(), child.clone(), self.stream, vsock) {
            Ok(s) => Ok(s),
            Err(e) => {
                child.release(&d.conns());
                Err(e)
            }
        }
    }

    /// `getsockname()` (`peer` false) or `getpeername()`.
    pub(crate) fn name(&self, peer: bool) -> Result<SockaddrVmcs> {
        let (port, remote) = self.endpoint.names();
        let d = self.dom();
        let (cid, port) = if peer {
            let (id, port) = remote.ok_or(errno::enotconn())?;
            (d.socket_peer_cid(id), port)
        } else {
            (d.socket_local_cid(), port.unwrap_or(uapi::PORT_ANY))
        };
        Ok(SockaddrVmcs {
            family: family(),
            port,
            cid,
            ..Default::default()
        })
    }

    /// `shutdown()`: `SHUT_RD`, `SHUT_WR`, `SHUT_RDWR`.
    pub(crate) fn shutdown(&self, how: i32) -> Result {
        let how = u32::try_from(how).map_err(|_| EINVAL)?;
        self.endpoint.shutdown(&self.dom().conns(), how)
    }

    /// `setsockopt(SO_RCVBUF/SO_SNDBUF)` (or accept): applies the values the socket layer
    /// stored (`sk_rcvbuf`, `sk_sndbuf`: twice the user's value, as for every family) as the
    /// connection's receive buffer and transmit queue limit, halved and clamped, and returns
    /// the values `getsockopt` should report from now on: twice the ones in use.
    pub(crate) fn set_bufs(&self, sk_rcvbuf: i32, sk_sndbuf: i32) -> (u32, u32) {
        let half = |v: i32| u32::try_from(v).unwrap_or(0) / 2;
        let rb = half(sk_rcvbuf).clamp(MIN_RCVBUF, MAX_RCVBUF);
        if rb != self.endpoint.bufs().0 {
            self.endpoint.set_opts(&self.dom().conns(), None, Some(rb));
            if let Some(a) = &*self.alt.lock() {
                a.endpoint.set_opts(&a.domain.conns(), None, Some(rb));
            }
        }
        let sb = self.endpoint.set_sndbuf(half(sk_sndbuf) as usize);
        // Both are at most 4 MiB.
        (2 * rb, 2 * sb as u32)
    }

    /// `SO_BUSY_POLL` was set to `us`; returns the window in use (clamped), which
    /// `getsockopt` then reports.
    pub(crate) fn set_busy_poll(&self, us: u32) -> u32 {
        self.endpoint.set_busy_poll_us(us)
    }

    /// The busy-poll window in use (what `getsockopt(SO_BUSY_POLL)` reports): the domain's
    /// default (`busy_poll_us`) for a new socket, the listener's for an accepted one.
    pub(crate) fn busy_poll(&self) -> u32 {
        self.endpoint.busy_poll_us(&self.dom().conns())
    }

    /// The values `getsockopt(SO_RCVBUF/SO_SNDBUF)` reports (twice the ones in use).
    pub(crate) fn sk_bufs(&self) -> (u32, u32) {
        let (rb, sb) = self.endpoint.bufs();
        (2 * rb, 2 * sb as u32)
    }

    /// `poll()`: the ready mask and the error `SO_ERROR` should report, if any. A stream is
    /// readable with at least `lowat` bytes (`SO_RCVLOWAT`).
    pub(crate) fn poll(
        &self,
        file: &File,
        table: &PollTable<'_>,
        lowat: usize,
    ) -> (u32, Option<Error>) {
        if let Err(e) = self.live(&self.dom()) {
            let err = (e == errno::econnreset()).then_some(e);
            return (poll_mask::ERR | poll_mask::HUP, err);
        }
        let mut mask = self.endpoint.poll_lowat(file, table, lowat);
        // A dual listener: readable when either endpoint has a connection to accept.
        if let Some(a) = &*self.alt.lock() {
            if a.domain.alive().is_ok() {
                mask |= a.endpoint.poll_lowat(file, table, lowat) & poll_mask::IN;
            }
        }
        // The shutdown bits as vsock (and TCP) report them (`vsock_poll_shutdown`): HUP once
        // this side shut both ways, or sending while the peer shut sending too (or after a
        // reset); RDHUP once nothing more can arrive. An unconnected socket is writable
        // (vsock's `TCP_CLOSE`).
        let sh = self.endpoint.shut_state();
        let both = flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND;
        mask &= !poll_mask::HUP;
        if sh.local == both
            || (sh.local & sh.peer & flags::SHUTDOWN_SEND != 0)
            || (sh.over && sh.reset)
        {
            mask |= poll_mask::HUP;
        }
        if sh.local & flags::SHUTDOWN_RCV != 0 || sh.peer & flags::SHUTDOWN_SEND != 0 || sh.over {
            mask |= poll_mask::RDHUP;
        }
        if sh.unconnected {
            mask |= poll_mask::OUT;
        }
        let err = if mask & poll_mask::ERR != 0 {
            self.endpoint.error().map(connect_errno)
        } else {
            None
        };
        (mask, err)
    }

    /// `ioctl()`: `SIOCINQ`, `SIOCOUTQ`; `EOPNOTSUPP` before a connection (vsock: no
    /// transport yet, listeners included).
    pub(crate) fn ioctl_queued(&self, cmd: u32) -> Result<usize> {
        if matches!(cmd, SIOCINQ | SIOCOUTQ) && self.endpoint.names().1.is_none() {
            return Err(errno::eopnotsupp());
        }
        let (inq, outq) = self.endpoint.queued();
        match cmd {
            SIOCINQ => Ok(inq),
            SIOCOUTQ => Ok(outq),
            _ => Err(ENOIOCTLCMD),
        }
    }

    /// The checks every `sendmsg`/`recvmsg` starts with (the domain is alive, no
    /// `MSG_OOB`), and how long it may wait: `opts.timeout`, 0 with `MSG_DONTWAIT`.
    fn call_timeout(&self, flags: u32, opts: SocketOptions) -> Result<(Arc<Domain>, Timeout)> {
        let d = self.dom();
        self.live(&d)?;
        if flags & msg::OOB != 0 {
            return Err(errno::eopnotsupp());
        }
        let t = if flags & msg::DONTWAIT != 0 {
            Timeout(0)
        } else {
            opts.timeout
        };
        Ok((d, t))
    }

    /// `sendmsg()`, waiting at most `opts.timeout` (`SO_SNDTIMEO`). A seqpacket send is one
    /// message of at most `VMCS_MAX_MSG_SIZE` bytes, all or nothing; a stream send queues
    /// what the peer's credit and `SO_SNDBUF` take, and returns the bytes queued before an
    /// error or the timeout if there were any (a non-blocking one: `EAGAIN` only when
    /// nothing fits).
    pub(crate) fn sendmsg(
        &self,
        src: &mut IovIterSource<'_>,
        flags: u32,
        opts: SocketOptions,
    ) -> Result<usize> {
        let (d, mut timeout) = self.call_timeout(flags, opts)?;
        let conns = d.conns();
        let len = src.len();
        // User memory goes straight into the ring (`Endpoint::send_user`).
        let mut src = glue::UserIter::source(src);
        if !self.stream {
            if len > uapi::MAX_MSG_SIZE as usize {
                return Err(errno::emsgsize());
            }
            return self
                .endpoint
                .send_user(&conns, &mut src, &mut timeout, false);
        }
        let mut sent = 0;
        while !src.is_empty() {
            match self
                .endpoint
                .send_user(&conns, &mut src, &mut timeout, true)
            {
                Ok(n) => sent += n,
                Err(e) => return if sent > 0 { Ok(sent) } else { Err(e) },
            }
        }
        Ok(sent)
    }

    /// `recvmsg()`: the bytes read and the `msg_flags` to report (`MSG_TRUNC`, `MSG_EOR`).
    /// With `MSG_TRUNC` in `flags`, a seqpacket read returns the message's real length. Waits
    /// at most `opts.timeout` (`SO_RCVTIMEO`, then `EAGAIN`); a stream read waits until
    /// `SO_RCVLOWAT` bytes (the full length with `MSG_WAITALL`) were read, or end of file,
    /// an error, a signal or the timeout, and then returns what it has.
    pub(crate) fn recvmsg(
        &self,
        dst: &mut IovIterDest<'_>,
        flags: u32,
        opts: SocketOptions,
    ) -> Result<(usize, u32)> {
        let (d, mut timeout) = self.call_timeout(flags, opts)?;
        let peek = flags & msg::PEEK != 0;
        let conns = d.conns();
        let max = dst.len();
        // The receive queue goes straight to user memory.
        let mut dst = glue::UserIter::dest(dst);
        if !self.stream {
            let (n, len) = self
                .endpoint
                .recv_seq_user(&conns, &mut dst, &mut timeout, peek)?;
            let mut out = msg::EOR;
            if len > n {
                out |= msg::TRUNC;
            }
            let ret = if flags & msg::TRUNC != 0 { len } else { n };
            return Ok((ret, out));
        }
        if max == 0 {
            return Ok((0, 0));
        }
        // `sock_rcvlowat()`: MSG_WAITALL waits for everything, else for SO_RCVLOWAT bytes
        // (at most the receive buffer, which could never hold more).
        let target = if flags & msg::WAITALL != 0 {
            max
        } else {
            opts.lowat
                .min(max)
                .min(self.endpoint.bufs().0 as usize)
                .max(1)
        };
        let _reader = self.reader.lock();
        let mut copied = 0;
        while copied < max {
            // Once `target` bytes are read, only what is there already is added.
            let mut now = if copied >= target {
                Timeout(0)
            } else {
                timeout
            };
            let n =
                match self
                    .endpoint
                    .recv_stream_user(&conns, &mut dst, max - copied, &mut now, peek)
                {
                    Ok(n) => n,
                    // Bytes already read are returned; the error shows on the next call.
                    Err(_) if copied > 0 => break,
                    Err(e) => return Err(e),
                };
            if copied < target {
                timeout = now;
            }
            if n == 0 {
                break;
            }
            copied += n;
            if peek {
                break;
            }
        }
        Ok((copied, 0))
    }

    /// The peer's address (`recvfrom`'s `src_addr`), when connected.
    pub(crate) fn peer_addr(&self) -> Option<SockaddrVmcs> {
        self.name(true).ok()
    }
}
