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
    conn::{Endpoint, Timeout, DEFAULT_RCVBUF, MAX_RCVBUF, MIN_RCVBUF, TXQ_MAX},
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

/// The state of one AF_VMCS socket, owned by its `struct sock`.
#[pin_data]
pub(crate) struct VmcsSocket {
    domain: Arc<Domain>,
    endpoint: Arc<Endpoint>,
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
                domain,
                endpoint,
                stream,
                vsock,
                reader <- new_mutex!((), "vmcs_sock_reader"),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// `close()`: once, from `proto_ops->release`.
    pub(crate) fn release(&self) {
        self.endpoint.release(&self.domain.conns());
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

    /// `bind()`.
    pub(crate) fn bind(&self, raw: &[u8]) -> Result {
        self.domain.alive()?;
        let a = Self::addr(raw)?;
        self.domain.bind_cid(a.cid)?;
        Endpoint::bind(&self.endpoint, &self.domain.conns(), a.port)?;
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
        self.domain.alive()?;
        let a = Self::addr(raw)?;
        Endpoint::connect(
            &self.endpoint,
            &self.domain.conns(),
            a.cid,
            a.port,
            self.vsock.connect_timeout_ms().unwrap_or(sndtimeo_ms),
            nonblock,
        )
        .map_err(connect_errno)
    }

    /// Whether it is a `SOCK_STREAM` socket.
    pub(crate) fn is_stream(&self) -> bool {
        self.stream
    }

    /// Whether the socket is connected now (vsock's `TCP_ESTABLISHED`).
    pub(crate) fn connected(&self) -> bool {
        self.endpoint.connected()
    }

    /// `listen()`.
    pub(crate) fn listen(&self, backlog: i32) -> Result {
        self.domain.alive()?;
        // A negative backlog is the smallest one, as in vsock.
        self.endpoint
            .listen(&self.domain.conns(), u32::try_from(backlog).unwrap_or(0))
    }

    /// `accept()`: the next connection as a new `VmcsSocket`, waiting at most `timeout`.
    pub(crate) fn accept(&self, mut timeout: Timeout) -> Result<Arc<Self>> {
        self.domain.alive()?;
        let (child, _peer, _port) = self
            .endpoint
            .accept_timeout(&self.domain.conns(), &mut timeout)?;
        // As vsock, the connection inherits the listener's SOL_VSOCK options (its credit
        // came from the listener's endpoint already).
        let vsock = self.vsock.clone_for_child();
        match Self::new(self.domain.clone(), child.clone(), self.stream, vsock) {
            Ok(s) => Ok(s),
            Err(e) => {
                child.release(&self.domain.conns());
                Err(e)
            }
        }
    }

    /// `getsockname()` (`peer` false) or `getpeername()`.
    pub(crate) fn name(&self, peer: bool) -> Result<SockaddrVmcs> {
        let (port, remote) = self.endpoint.names();
        let (cid, port) = if peer {
            remote.ok_or(errno::enotconn())?
        } else {
            (self.domain.local_id(), port.unwrap_or(uapi::PORT_ANY))
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
        self.endpoint.shutdown(&self.domain.conns(), how)
    }

    /// `setsockopt(SO_RCVBUF/SO_SNDBUF)` (or accept): applies the values the socket layer
    /// stored (`sk_rcvbuf`, `sk_sndbuf`: twice the user's value, as for every family) as the
    /// connection's receive buffer and transmit queue limit, halved and clamped, and returns
    /// the values `getsockopt` should report from now on: twice the ones in use.
    pub(crate) fn set_bufs(&self, sk_rcvbuf: i32, sk_sndbuf: i32) -> (u32, u32) {
        let half = |v: i32| u32::try_from(v).unwrap_or(0) / 2;
        let rb = half(sk_rcvbuf).clamp(MIN_RCVBUF, MAX_RCVBUF);
        if rb != self.endpoint.bufs().0 {
            self.endpoint.set_opts(&self.domain.conns(), None, Some(rb));
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
        self.endpoint.busy_poll_us(&self.domain.conns())
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
        if self.domain.alive().is_err() {
            return (poll_mask::ERR | poll_mask::HUP, None);
        }
        let mut mask = self.endpoint.poll_lowat(file, table, lowat);
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
    fn call_timeout(&self, flags: u32, opts: SocketOptions) -> Result<Timeout> {
        self.domain.alive()?;
        if flags & msg::OOB != 0 {
            return Err(errno::eopnotsupp());
        }
        Ok(if flags & msg::DONTWAIT != 0 {
            Timeout(0)
        } else {
            opts.timeout
        })
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
        let mut timeout = self.call_timeout(flags, opts)?;
        let conns = self.domain.conns();
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
        let mut timeout = self.call_timeout(flags, opts)?;
        let peek = flags & msg::PEEK != 0;
        let conns = self.domain.conns();
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
