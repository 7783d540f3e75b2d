//! ivshmem-doorbell: the hostile peer as a client of the doorbell server (docs/ivshmem-server.md,
//! "Protocol"), and the doorbell storm.
//!
//! On `--server SOCK` it connects like a QEMU would, takes the id the server assigns (its
//! slot: `JoinMode::Assigned`), maps the shared memory through the descriptor the server
//! hands it, and keeps every other peer's eventfds. The storm thread then writes to all of
//! them, every vector, as fast as it can (no pause between writes) until it is told to stop:
//! each write is an MSI-X interrupt in a guest. A guest must stay responsive and keep
//! serving its other connections (the `hostile` scenario on doorbell measures that).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use vmcs_ivshmem_server::wire::recv_msg;

/// What the server gave us.
pub struct Doorbell {
    /// Kept open: closing it would tell the server we left.
    _sock: UnixStream,
    pub id: u32,
    pub shm: File,
    /// Every other peer's eventfds (all vectors), as the server announced them at join.
    pub peers: Vec<(u32, OwnedFd)>,
}

fn msg(s: &UnixStream) -> Result<(i64, Option<OwnedFd>), String> {
    recv_msg(s.as_fd())
        .map_err(|e| format!("doorbell server: {e}"))?
        .ok_or_else(|| "doorbell server closed the connection".to_string())
}

impl Doorbell {
    /// Connects to the server at `path` and reads the join messages: version, our id, the
    /// shared memory, the other peers' eventfds, then our own `vectors` eventfds (the last
    /// messages of a join).
    pub fn connect(path: &str, vectors: usize) -> Result<Self, String> {
        let s = UnixStream::connect(path).map_err(|e| format!("connect {path}: {e}"))?;
        let (v, _) = msg(&s)?;
        if v != 0 {
            return Err(format!("doorbell server speaks protocol {v}, not 0"));
        }
        let (id, _) = msg(&s)?;
        let id = u32::try_from(id).map_err(|_| format!("bad id {id}"))?;
        let (m, fd) = msg(&s)?;
        let shm = match (m, fd) {
            (-1, Some(fd)) => File::from(fd),
            _ => return Err(format!("expected the shared memory, got {m}")),
        };
        let mut peers = Vec::new();
        let mut own = 0;
        while own < vectors {
            match msg(&s)? {
                (p, Some(fd)) if p == i64::from(id) => {
                    drop(fd);
                    own += 1;
                }
                (p, Some(fd)) => peers.push((p as u32, fd)),
                (_, None) => {}
            }
        }
        Ok(Self {
            _sock: s,
            id,
            shm,
            peers,
        })
    }
}

/// The doorbell storm: one thread ringing every descriptor in turn until stopped.
pub struct Storm {
    stop: Arc<AtomicBool>,
    pub rung: Arc<AtomicU64>,
    t: Option<JoinHandle<()>>,
}

impl Storm {
    pub fn start(fds: Vec<OwnedFd>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rung = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), rung.clone());
        let t = thread::spawn(move || {
            let one = 1u64.to_ne_bytes();
            while !s.load(Relaxed) {
                for f in &fds {
                    // SAFETY: an eventfd we own; 8 valid bytes.
                    let n = unsafe { libc::write(f.as_raw_fd(), one.as_ptr().cast(), 8) };
                    if n == 8 {
                        r.fetch_add(1, Relaxed);
                    }
                }
            }
        });
        Self {
            stop,
            rung,
            t: Some(t),
        }
    }

    /// Stops the storm; how many doorbells it rang.
    pub fn stop(&mut self) -> u64 {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
        self.rung.load(Relaxed)
    }
}
