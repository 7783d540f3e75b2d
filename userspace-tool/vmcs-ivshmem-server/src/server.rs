//! The I/O side: listening socket, per-peer connections and eventfds, and a
//! single-threaded poll loop executing the [`Registry`]'s plans.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::socket::{recv, MsgFlags};

use crate::config::Config;
use crate::files::{Listener, PidFile, Shm};
use crate::log::Logger;
use crate::registry::{FdRef, Message, PeerId, Registry};
use crate::wire::send_msg;

/// How long one send to a peer may block before the peer is considered dead.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
}

/// A peer to drop, with the reason for the log.
type Failure = (PeerId, String);

#[derive(Debug)]
pub struct Server {
    log: Logger,
    registry: Registry,
    conns: BTreeMap<PeerId, Conn>,
    /// One eventfd per vector for each id; peers interrupt that id's holder
    /// through them. Dropped when the peer leaves, except with sticky ids,
    /// where they wait for the id's next holder.
    vectors: BTreeMap<PeerId, Vec<OwnedFd>>,
    listener: Listener,
    shm: Shm,
    _pidfile: Option<PidFile>,
}

impl Server {
    /// Create the shared memory, the listening socket and the pidfile.  All
    /// of them are removed again when the server is dropped.
    pub fn start(cfg: &Config) -> io::Result<Self> {
        let log = Logger::new(cfg.verbose);
        raise_fd_limit(cfg, log);
        let shm = Shm::create(cfg.shm.as_deref(), cfg.size)?;
        let listener = Listener::bind(&cfg.socket)?;
        let pidfile = cfg.pidfile.as_deref().map(PidFile::create).transpose()?;
        log.info(format_args!(
            "listening on {} (shm {}, {} bytes, {} vectors, max {} peers)",
            cfg.socket.display(),
            cfg.shm
                .as_deref()
                .map_or_else(|| "memfd".to_string(), |p| p.display().to_string()),
            cfg.size,
            cfg.vectors,
            cfg.max_peers
        ));
        Ok(Self {
            log,
            registry: if cfg.sticky_ids {
                Registry::new_sticky(u32::from(cfg.max_peers), cfg.vectors)
            } else {
                Registry::new(u32::from(cfg.max_peers), cfg.vectors)
            },
            conns: BTreeMap::new(),
            vectors: BTreeMap::new(),
            listener,
            shm,
            _pidfile: pidfile,
        })
    }

    /// Connected peer ids, in join order.
    pub fn peers(&self) -> &[PeerId] {
        self.registry.peers()
    }

    /// Serve until `stop` becomes readable (e.g. a signalfd or a pipe).
    pub fn run(&mut self, stop: BorrowedFd<'_>) -> io::Result<()> {
        loop {
            let ids: Vec<PeerId> = self.conns.keys().copied().collect();
            let (stop_ev, listen_ev, peer_ev) = {
                let mut fds = Vec::with_capacity(ids.len() + 2);
                fds.push(PollFd::new(stop, PollFlags::POLLIN));
                fds.push(PollFd::new(
                    self.listener.listener.as_fd(),
                    PollFlags::POLLIN,
                ));
                for conn in self.conns.values() {
                    fds.push(PollFd::new(conn.stream.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let ev: Vec<PollFlags> = fds
                    .iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect();
                (ev[0], ev[1], ev[2..].to_vec())
            };
            if !stop_ev.is_empty() {
                self.log.info(format_args!(
                    "stopping, closing {} peer connections",
                    self.conns.len()
                ));
                return Ok(());
            }
            let mut failed = Vec::new();
            for (id, ev) in ids.into_iter().zip(peer_ev) {
                if let Some(reason) = self.check_peer(id, ev) {
                    failed.push((id, reason));
                }
            }
            self.drop_peers(failed);
            if !listen_ev.is_empty() {
                self.accept_all();
            }
        }
    }

    /// Peers never send anything: readable means EOF, an error, or a protocol
    /// violation, and in all those cases the peer is dropped (as QEMU's
    /// server does).  Returns the reason if the peer has to go.
    fn check_peer(&self, id: PeerId, ev: PollFlags) -> Option<String> {
        if ev.is_empty() {
            return None;
        }
        let conn = self.conns.get(&id)?;
        let mut byte = [0u8; 1];
        match recv(
            std::os::fd::AsRawFd::as_raw_fd(&conn.stream),
            &mut byte,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => Some(String::new()),
            Ok(_) => Some("sent data on a one-way protocol".into()),
            Err(Errno::EAGAIN | Errno::EINTR)
                if !ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) =>
            {
                None
            }
            Err(Errno::EAGAIN | Errno::EINTR) => Some("hung up".into()),
            Err(e) => Some(e.desc().to_string()),
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.listener.accept() {
                Ok((stream, _)) => self.handle_new(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    self.log.info(format_args!("accept failed: {e}"));
                    // e.g. EMFILE: the connection stays queued; don't spin.
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
            }
        }
    }

    fn handle_new(&mut self, stream: UnixStream) {
        if self.registry.is_full() {
            self.log.info(format_args!(
                "refusing connection: all {} peer ids in use",
                self.registry.max_peers()
            ));
            return;
        }
        let setup = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(SEND_TIMEOUT)));
        if let Err(e) = setup {
            self.log
                .info(format_args!("refusing connection: socket setup: {e}"));
            return;
        }
        let Some(id) = self.registry.peek_id() else {
            return;
        };
        if !self.vectors.contains_key(&id) {
            match make_eventfds(self.registry.vectors()) {
                Ok(v) => {
                    self.vectors.insert(id, v);
                }
                Err(e) => {
                    self.log.info(format_args!(
                        "refusing connection: cannot create eventfd: {e}"
                    ));
                    return;
                }
            }
        }
        let Some(plan) = self.registry.join() else {
            return;
        };
        self.log
            .debug(format_args!("accepted connection as peer {id}"));
        self.conns.insert(id, Conn { stream });

        let mut failed = Vec::new();
        self.deliver(&plan.initial, &mut failed);
        if let Some((_, reason)) = failed.first() {
            // Nobody else knows about this peer yet: drop it silently.
            self.log.info(format_args!(
                "peer {id} dropped during handshake ({reason})"
            ));
            self.registry.abort_join(id);
            self.conns.remove(&id);
            if !self.registry.sticky() {
                self.vectors.remove(&id);
            }
            return;
        }
        self.deliver(&plan.advertise, &mut failed);
        self.log.info(format_args!(
            "peer {id} joined ({} vectors)",
            self.registry.vectors()
        ));
        self.drop_peers(failed);
    }

    /// Send `msgs` in order, skipping peers that already failed; peers whose
    /// send fails are appended to `failed`.
    fn deliver(&self, msgs: &[Message], failed: &mut Vec<Failure>) {
        for m in msgs {
            if failed.iter().any(|(id, _)| *id == m.to) {
                continue;
            }
            let Some(conn) = self.conns.get(&m.to) else {
                continue;
            };
            let fd = match m.fd {
                FdRef::None => None,
                FdRef::Shm => Some(self.shm.as_fd()),
                FdRef::Vector { peer, vector } => {
                    let fd = self
                        .vectors
                        .get(&peer)
                        .and_then(|v| v.get(usize::from(vector)));
                    match fd {
                        Some(fd) => Some(fd.as_fd()),
                        None => {
                            self.log.debug(format_args!(
                                "skipping message to peer {}: peer {peer} vector {vector} gone",
                                m.to
                            ));
                            continue;
                        }
                    }
                }
            };
            match send_msg(conn.stream.as_fd(), m.value, fd) {
                Ok(()) => self
                    .log
                    .debug(format_args!("-> peer {}: {} + {}", m.to, m.value, m.fd)),
                Err(e) => failed.push((m.to, format!("send failed: {e}"))),
            }
        }
    }

    /// Remove peers and notify the others; failures while notifying cascade.
    fn drop_peers(&mut self, mut failed: Vec<Failure>) {
        while let Some((id, reason)) = failed.pop() {
            if self.conns.remove(&id).is_none() {
                continue;
            }
            if !self.registry.sticky() {
                self.vectors.remove(&id);
            }
            if reason.is_empty() {
                self.log.info(format_args!("peer {id} left"));
            } else {
                self.log.info(format_args!("peer {id} left ({reason})"));
            }
            let msgs = self.registry.leave(id);
            self.deliver(&msgs, &mut failed);
        }
    }
}

fn make_eventfds(n: u16) -> io::Result<Vec<OwnedFd>> {
    (0..n)
        .map(|_| {
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map(OwnedFd::from)
                .map_err(io::Error::from)
        })
        .collect()
}

/// Each peer costs `vectors + 1` descriptors; raise the soft limit if the
/// configured maximum would not fit.
fn raise_fd_limit(cfg: &Config, log: Logger) {
    let need = u64::from(cfg.max_peers) * (u64::from(cfg.vectors) + 1) + 64;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= need {
        return;
    }
    let new = need.min(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, new, hard).is_err() || new < need {
        log.info(format_args!(
            "warning: descriptor limit {new} may be too low for {} peers x {} vectors",
            cfg.max_peers, cfg.vectors
        ));
    }
}
