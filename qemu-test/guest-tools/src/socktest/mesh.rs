//! The chaos mesh (qemu-test/scenarios/chaos.sh, `make stress`): every guest serves and
//! connects to every other live guest with three kinds of checksummed traffic, and says how
//! each connection ended.
//!
//! ```text
//! vmcs-socktest mesh PORT EXPECT STOPFILE [once|lenient]
//! ```
//!
//! - **stream** (AF_VMCS `SOCK_STREAM`, port PORT): the client writes 1 B .. 16 KiB of a
//!   pattern that depends on the byte's offset in the stream, the server echoes, the client
//!   checks every byte in order;
//! - **seqpacket** (port PORT+1): messages of 4 B .. 32 KiB, each a sequence number and a
//!   pattern, echoed whole and compared;
//! - **bulk** (/dev/vmcs, port PORT+2): the client lends 4 KiB ranges of its bulk extent
//!   with a pattern per unit, the server checks them in place through its read-only
//!   mapping, releases them and answers the unit number.
//!
//! Both ends say who they are first (a 16-byte tag, `VMCS_MESH_TAG` or `GUEST.INCARNATION`
//! from the environment init exports), so that every line names the peer incarnation.
//! A connection that ends other than by our own orderly close is classified: if its peer
//! (cid) stopped being live or changed generation within 30 s, the peer died or left and
//! the end is `expected` (its errno is printed: a killed peer must give `ECONNRESET`, which
//! the host checks); if the peer is still live with the same generation it is
//! `UNEXPECTED` (a survivor's connection was disturbed); a byte that differs is `CORRUPT`.
//!
//! Lines on stdout (all `# `-prefixed TAP comments; the scenario sends them to the TAP
//! stream, run.sh's chaos controller and table read them):
//! `MESH-UP kind peer=TAG cid=C`, `MESH-END kind side peer=TAG cid=C err=E after_ms=MS
//! units=N verdict=V`, `MESH-READY` (every kind up with EXPECT live peers),
//! `MESH-JOINED TAG` (every kind up with that peer incarnation for the first time),
//! `MESH-PROGRESS bytes=B units=N`, and at the end `MESH-TOTAL ...`.
//!
//! It runs until STOPFILE exists, then closes its clients in order and waits (up to 60 s)
//! until no other guest's client has been connected for 3 s (not if STOPFILE says `quick`: the others
//! go on). `once`: stop as soon as it is ready
//! (the reload cycles) without waiting for the others. `lenient`: this guest's own device
//! goes away under it (unbind), so ends whose peer is still live are `local`, not failures;
//! corruption still fails. Exit status 0 when nothing was unexpected or corrupt.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use vmcs_guest_tools::dev::{Fd, Map};
use vmcs_guest_tools::sys::VMCS_PEER_LIVE;
use vmcs_guest_tools::{errno, Res};

use crate::options::set_timeo;
use crate::sock::{Sock, CID_ANY};

/// The three kinds of traffic, and their port offsets.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Stream,
    Seq,
    Bulk,
}

const KINDS: [Kind; 3] = [Kind::Stream, Kind::Seq, Kind::Bulk];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Seq => "seqpacket",
            Kind::Bulk => "bulk",
        }
    }
    fn port(self, base: u32) -> u32 {
        base + self as u32
    }
}

/// How a connection ended (other than by our orderly close).
enum Fail {
    Errno(i32),
    Eof,
    Stall,
    Corrupt(String),
}

impl Fail {
    fn text(&self) -> String {
        match self {
            Fail::Errno(e) => errno_name(*e).into(),
            Fail::Eof => "EOF".into(),
            Fail::Stall => "STALL".into(),
            Fail::Corrupt(w) => format!("CORRUPT({w})"),
        }
    }
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::ECONNRESET => "ECONNRESET",
        libc::EPIPE => "EPIPE",
        libc::ENOTCONN => "ENOTCONN",
        libc::ENODEV => "ENODEV",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EAGAIN => "EAGAIN",
        libc::ENOSPC => "ENOSPC",
        libc::EINTR => "EINTR",
        _ => "other",
    }
}

/// A receive or send that found nothing for this long is a stall.
const STALL_MS: i64 = 30_000;
/// How long an ended connection's peer is watched for death or departure.
const DIED_WAIT: Duration = Duration::from_secs(30);
/// Size of a bulk unit.
const CHUNK: usize = 4096;
/// Bulk units in flight per connection (the client's extent).
const SLOTS: usize = 2;

/// What all threads share.
struct Mesh {
    base: u32,
    tag: [u8; 16],
    stop: AtomicBool,
    lenient: bool,
    dev: Fd,
    bytes: AtomicU64,
    units: AtomicU64,
    expected: AtomicU64,
    local: AtomicU64,
    unexpected: AtomicU64,
    corrupt: AtomicU64,
    connect_fail: AtomicU64,
    server_conns: AtomicUsize,
    /// (cid, kind) with a client thread.
    running: Mutex<HashSet<(u32, Kind)>>,
    /// (cid, kind) whose client has verified a unit and still runs.
    up: Mutex<HashSet<(u32, Kind)>>,
    /// Peer tag -> kinds ever up with it.
    joined: Mutex<HashMap<String, HashSet<Kind>>>,
}

fn tag_text(t: &[u8]) -> String {
    let end = t.iter().position(|&b| b == 0).unwrap_or(t.len());
    String::from_utf8_lossy(&t[..end]).into_owned()
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Byte `k` of a stream with seed `s`.
fn stream_byte(s: u64, k: u64) -> u8 {
    let x = (k ^ s).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8
}

/// Word `j` of bulk unit `i` of a connection with seed `s`.
fn bulk_word(s: u64, i: u64, j: usize) -> u64 {
    (s ^ (i << 20) ^ j as u64).wrapping_mul(0xff51_afd7_ed55_8ccd)
}

/// Seqpacket message `i` with seed `s`: the number, then a pattern.
fn seq_msg(s: u64, i: u64) -> Vec<u8> {
    let len = 4 + ((s ^ i.wrapping_mul(7919)) % 32764) as usize;
    let mut m = (i as u32).to_le_bytes().to_vec();
    m.extend((0..len - 4).map(|k| stream_byte(s ^ i, k as u64)));
    m
}

/// Sizes of stream units: 1 B .. 16 KiB.
fn stream_len(s: u64, i: u64) -> usize {
    1 + ((s >> 3 ^ i.wrapping_mul(104_729)) % 16384) as usize
}

impl Mesh {
    fn say(&self, line: String) {
        println!("# {line}");
    }

    /// The generation of live peer `cid`, if it is live.
    fn peer_gen(&self, cid: u32) -> Option<u32> {
        let info = self.dev.info().ok()?;
        info.peers[..(info.npeers as usize).min(info.peers.len())]
            .iter()
            .find(|p| p.id == cid && p.state == VMCS_PEER_LIVE)
            .map(|p| p.generation)
    }

    /// Whether peer `cid` of generation `gen` died or left: not live, or another
    /// generation, within [`DIED_WAIT`].
    fn died(&self, cid: u32, gen: Option<u32>) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < DIED_WAIT {
            if gen.is_none() || self.peer_gen(cid) != gen {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Classifies and reports a connection's end.
    fn ended(&self, kind: Kind, side: &str, cid: u32, tr: &Track, f: Fail) {
        let (gen, peer, units) = (tr.gen, &tr.peer, tr.units);
        let after = tr.last.elapsed().as_millis();
        let verdict = match f {
            Fail::Corrupt(_) => {
                self.corrupt.fetch_add(1, Relaxed);
                "CORRUPT"
            }
            _ if self.died(cid, gen) => {
                self.expected.fetch_add(1, Relaxed);
                "expected"
            }
            _ if self.lenient => {
                self.local.fetch_add(1, Relaxed);
                "local"
            }
            _ => {
                self.unexpected.fetch_add(1, Relaxed);
                "UNEXPECTED"
            }
        };
        self.say(format!(
            "MESH-END {} {side} peer={peer} cid={cid} err={} after_ms={after} units={units} verdict={verdict}",
            kind.name(),
            f.text()
        ));
    }

    fn counted(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Relaxed);
        self.units.fetch_add(1, Relaxed);
    }
}

/// What one connection's end knows of it: the peer's generation when it began, the peer
/// incarnation's tag, the units verified and when the last one was.
struct Track {
    gen: Option<u32>,
    peer: String,
    units: u64,
    last: Instant,
}

impl Track {
    fn new(m: &Mesh, cid: u32) -> Self {
        Self {
            gen: m.peer_gen(cid),
            peer: "?".into(),
            units: 0,
            last: Instant::now(),
        }
    }
    /// Exchanges the tags; the connection's pattern seed (the same on both ends).
    fn greet(&mut self, m: &Mesh, kind: Kind, conn: &Conn) -> Result<u64, Fail> {
        let t = conn.hello(kind, &m.tag)?;
        self.peer = tag_text(&t);
        Ok(fnv(&m.tag) ^ fnv(&t) ^ kind as u64)
    }
}

/// One connection, either end: an AF_VMCS socket or a /dev/vmcs file.
enum Conn {
    Sock(Sock),
    Dev(Fd),
}

fn sock_err(n: isize) -> Fail {
    match n {
        0 => Fail::Eof,
        _ => match errno() {
            libc::EAGAIN => Fail::Stall,
            e => Fail::Errno(e),
        },
    }
}

fn dev_err(e: i32) -> Fail {
    match e {
        libc::ETIMEDOUT | libc::EAGAIN => Fail::Stall,
        e => Fail::Errno(e),
    }
}

impl Conn {
    fn send(&self, b: &[u8]) -> Result<(), Fail> {
        match self {
            Conn::Sock(s) => {
                let mut off = 0;
                while off < b.len() {
                    let n = s.send(&b[off..], 0);
                    if n <= 0 {
                        return Err(sock_err(if n == 0 { -1 } else { n }));
                    }
                    off += n as usize;
                }
                Ok(())
            }
            Conn::Dev(f) => f.write(b).map(|_| ()).map_err(dev_err),
        }
    }
    /// One message (seqpacket, /dev/vmcs) or up to `b.len()` bytes (stream, `all`: exactly).
    fn recv(&self, b: &mut [u8], all: bool) -> Result<usize, Fail> {
        match self {
            Conn::Sock(s) => {
                // MSG_WAITALL returns what it has when the connection ends; the next call
                // then says how (end of file or the error).
                let mut got = 0;
                loop {
                    let n = s.recv(&mut b[got..], if all { libc::MSG_WAITALL } else { 0 });
                    if n <= 0 {
                        return Err(sock_err(n));
                    }
                    got += n as usize;
                    if !all || got == b.len() {
                        return Ok(got);
                    }
                }
            }
            Conn::Dev(f) => {
                if f.poll(libc::POLLIN, STALL_MS as i32) == 0 {
                    return Err(Fail::Stall);
                }
                match f.read(b) {
                    Ok(0) => Err(Fail::Eof),
                    Ok(n) => Ok(n),
                    Err(e) => Err(dev_err(e)),
                }
            }
        }
    }
    fn hello(&self, kind: Kind, tag: &[u8; 16]) -> Result<[u8; 16], Fail> {
        self.send(tag)?;
        let mut t = [0u8; 16];
        let n = self.recv(&mut t, kind == Kind::Stream)?;
        if n != 16 {
            return Err(Fail::Corrupt(format!("hello of {n} bytes")));
        }
        Ok(t)
    }
    /// Orderly close: shut our sending side and read to end of file.
    fn close(self) {
        match &self {
            Conn::Sock(s) => {
                let _ = s.shutdown(libc::SHUT_WR);
                let mut b = [0u8; 4096];
                while s.recv(&mut b, 0) > 0 {}
            }
            Conn::Dev(f) => {
                let _ = f.shutdown(vmcs_guest_tools::dev::SHUT_WR);
                let mut b = vec![0u8; 65536];
                while f.poll(libc::POLLIN, 5000) != 0 && matches!(f.read(&mut b), Ok(n) if n > 0) {}
            }
        }
    }
}

fn sock_connect(kind: Kind, cid: u32, port: u32) -> Result<Conn, i32> {
    let ty = if kind == Kind::Stream {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_SEQPACKET
    };
    let s = Sock::new(ty).map_err(|_| errno())?;
    let _ = set_timeo(&s, libc::SO_SNDTIMEO, 2000);
    if s.raw_connect(cid, port).map_err(|_| errno())? != 0 {
        return Err(errno());
    }
    let _ = set_timeo(&s, libc::SO_SNDTIMEO, STALL_MS);
    let _ = set_timeo(&s, libc::SO_RCVTIMEO, STALL_MS);
    Ok(Conn::Sock(s))
}

/// The client side of one connection to `cid`, until it ends or we stop.
fn client(m: &Mesh, kind: Kind, cid: u32) {
    let port = kind.port(m.base);
    let conn = match kind {
        Kind::Bulk => Fd::open()
            .map_err(|_| libc::ENODEV)
            .and_then(|f| f.connect(cid, port, 2000).map(|()| Conn::Dev(f))),
        _ => sock_connect(kind, cid, port),
    };
    let conn = match conn {
        Ok(c) => c,
        Err(_) => {
            m.connect_fail.fetch_add(1, Relaxed);
            return;
        }
    };
    let mut tr = Track::new(m, cid);
    let r = (|| -> Result<(), Fail> {
        let seed = tr.greet(m, kind, &conn)?;
        let peer = tr.peer.clone();
        let mut off = 0u64;
        let mut buf = vec![0u8; 65536];
        let mut tx: Option<Map> = None;
        if kind == Kind::Bulk {
            let Conn::Dev(f) = &conn else { unreachable!() };
            let st = f
                .bulk_setup((SLOTS * CHUNK) as u32, STALL_MS as u32)
                .map_err(dev_err)?;
            let map = f
                .mmap(
                    0,
                    st.tx_size as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                )
                .map_err(dev_err)?;
            tx = Some(map);
        }
        while !m.stop.load(Relaxed) {
            let n = match kind {
                Kind::Stream => {
                    let len = stream_len(seed, tr.units);
                    let data: Vec<u8> = (0..len as u64)
                        .map(|k| stream_byte(seed, off + k))
                        .collect();
                    conn.send(&data)?;
                    conn.recv(&mut buf[..len], true)?;
                    if buf[..len] != data[..] {
                        let k = (0..len).find(|&k| buf[k] != data[k]).unwrap_or(0);
                        return Err(Fail::Corrupt(format!("stream byte {}", off + k as u64)));
                    }
                    off += len as u64;
                    len
                }
                Kind::Seq => {
                    let msg = seq_msg(seed, tr.units);
                    conn.send(&msg)?;
                    let n = conn.recv(&mut buf, false)?;
                    if buf[..n] != msg[..] {
                        return Err(Fail::Corrupt(format!(
                            "message {}: {n} bytes, want {}",
                            tr.units,
                            msg.len()
                        )));
                    }
                    n
                }
                Kind::Bulk => {
                    let Conn::Dev(f) = &conn else { unreachable!() };
                    let map = tx.as_mut().expect("mapped");
                    let slot = (tr.units as usize % SLOTS) * CHUNK;
                    f.bulk_wait(slot as u32, CHUNK as u32).map_err(dev_err)?;
                    for (j, w) in map.words_mut()[slot / 8..(slot + CHUNK) / 8]
                        .iter_mut()
                        .enumerate()
                    {
                        *w = bulk_word(seed, tr.units, j);
                    }
                    f.bulk_send(slot as u32, CHUNK as u32).map_err(dev_err)?;
                    let n = conn.recv(&mut buf, false)?;
                    if buf[..n] != tr.units.to_le_bytes() {
                        return Err(Fail::Corrupt(format!(
                            "bulk unit {}: the server answered {:?}",
                            tr.units,
                            &buf[..n.min(16)]
                        )));
                    }
                    CHUNK
                }
            };
            m.counted(n);
            tr.units += 1;
            tr.last = Instant::now();
            if tr.units == 1 {
                m.up.lock().unwrap().insert((cid, kind));
                m.say(format!("MESH-UP {} peer={peer} cid={cid}", kind.name()));
                m.joined
                    .lock()
                    .unwrap()
                    .entry(peer.clone())
                    .or_default()
                    .insert(kind);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })();
    m.up.lock().unwrap().remove(&(cid, kind));
    match r {
        Ok(()) => conn.close(),
        Err(f) => m.ended(kind, "client", cid, &tr, f),
    }
}

/// The server side of one accepted connection: echo (stream, seqpacket) or check bulk
/// units (bulk), until the client closes.
fn serve_conn(m: &Mesh, kind: Kind, conn: Conn, cid: u32) {
    let mut tr = Track::new(m, cid);
    let r = (|| -> Result<(), Fail> {
        let seed = tr.greet(m, kind, &conn)?;
        let mut buf = vec![0u8; 65536];
        let mut rx: Option<Map> = None;
        loop {
            match kind {
                Kind::Stream | Kind::Seq => {
                    let n = match conn.recv(&mut buf, false) {
                        Err(Fail::Eof) => return Ok(()),
                        r => r?,
                    };
                    conn.send(&buf[..n])?;
                }
                Kind::Bulk => {
                    let Conn::Dev(f) = &conn else { unreachable!() };
                    if rx.is_none() {
                        let st = f.bulk_setup(4096, STALL_MS as u32).map_err(dev_err)?;
                        rx = Some(
                            f.mmap(
                                st.tx_size as usize,
                                st.rx_size as usize,
                                libc::PROT_READ,
                                libc::MAP_SHARED,
                            )
                            .map_err(dev_err)?,
                        );
                    }
                    if f.poll(libc::POLLIN | libc::POLLHUP, STALL_MS as i32) == 0 {
                        return Err(Fail::Stall);
                    }
                    let d = f.bulk_recv().map_err(dev_err)?;
                    if d.len == 0 {
                        return Ok(());
                    }
                    let map = rx.as_ref().expect("mapped");
                    let (o, l) = (d.off as usize, d.len as usize);
                    if l != CHUNK || o + l > map.len {
                        return Err(Fail::Corrupt(format!("bulk descriptor {o}+{l}")));
                    }
                    let w = &map.words()[o / 8..(o + l) / 8];
                    if let Some(j) = (0..w.len()).find(|&j| w[j] != bulk_word(seed, tr.units, j)) {
                        return Err(Fail::Corrupt(format!("bulk unit {} word {j}", tr.units)));
                    }
                    f.bulk_release(1).map_err(dev_err)?;
                    conn.send(&tr.units.to_le_bytes())?;
                }
            }
            tr.units += 1;
            tr.last = Instant::now();
        }
    })();
    drop(conn);
    if let Err(f) = r {
        m.ended(kind, "server", cid, &tr, f);
    }
}

/// Accepts connections of `kind` for ever, one thread each.
fn acceptor(m: &'static Mesh, kind: Kind) -> Res {
    let port = kind.port(m.base);
    if kind == Kind::Bulk {
        let l = Fd::open()?;
        l.bind(port).map_err(|e| format!("bind {port}: {e}"))?;
        l.listen(16).map_err(|e| format!("listen {port}: {e}"))?;
        thread::spawn(move || loop {
            match l.accept(0) {
                Ok((f, a)) => spawn_server(m, kind, Conn::Dev(f), a.cid),
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
        });
    } else {
        let ty = if kind == Kind::Stream {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_SEQPACKET
        };
        let l = Sock::new(ty)?;
        l.bind(CID_ANY, port)?;
        l.listen(16)?;
        thread::spawn(move || loop {
            match l.accept() {
                Ok((s, a)) => {
                    let _ = set_timeo(&s, libc::SO_SNDTIMEO, STALL_MS);
                    let _ = set_timeo(&s, libc::SO_RCVTIMEO, STALL_MS);
                    spawn_server(m, kind, Conn::Sock(s), a.svm_cid)
                }
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
        });
    }
    Ok(())
}

fn spawn_server(m: &'static Mesh, kind: Kind, c: Conn, cid: u32) {
    m.server_conns.fetch_add(1, Relaxed);
    thread::spawn(move || {
        serve_conn(m, kind, c, cid);
        m.server_conns.fetch_sub(1, Relaxed);
    });
}

/// `mesh PORT EXPECT STOPFILE [once|lenient]`.
pub(crate) fn mesh(base: u32, expect: usize, stop: &str, mode: &str) -> Res {
    let tag_s = std::env::var("VMCS_MESH_TAG").unwrap_or_else(|_| {
        format!(
            "{}.{}",
            std::env::var("VMCS_GUEST").unwrap_or_default(),
            std::env::var("VMCS_INCARNATION").unwrap_or_else(|_| "1".into())
        )
    });
    let mut tag = [0u8; 16];
    let tb = tag_s.as_bytes();
    tag[..tb.len().min(15)].copy_from_slice(&tb[..tb.len().min(15)]);
    let once = mode == "once";
    let m: &'static Mesh = Box::leak(Box::new(Mesh {
        base,
        tag,
        stop: AtomicBool::new(false),
        lenient: mode == "lenient",
        dev: Fd::open()?,
        bytes: AtomicU64::new(0),
        units: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        local: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        corrupt: AtomicU64::new(0),
        connect_fail: AtomicU64::new(0),
        server_conns: AtomicUsize::new(0),
        running: Mutex::new(HashSet::new()),
        up: Mutex::new(HashSet::new()),
        joined: Mutex::new(HashMap::new()),
    }));
    for k in KINDS {
        acceptor(m, k)?;
    }
    m.say(format!("mesh {tag_s}: serving on {base}..{}", base + 2));
    let t0 = Instant::now();
    let mut last_progress = Instant::now();
    let mut next_try: HashMap<(u32, Kind), Instant> = HashMap::new();
    let mut ready = false;
    let mut announced: HashSet<String> = HashSet::new();
    let mut clients = Vec::new();
    loop {
        if std::path::Path::new(stop).exists() || (once && ready) {
            break;
        }
        let live = m.dev.live_peers().unwrap_or_default();
        for &cid in &live {
            for k in KINDS {
                let key = (cid, k);
                if next_try.get(&key).is_some_and(|t| *t > Instant::now()) {
                    continue;
                }
                if !m.running.lock().unwrap().insert(key) {
                    continue;
                }
                next_try.insert(key, Instant::now() + Duration::from_millis(500));
                clients.push(thread::spawn(move || {
                    client(m, k, cid);
                    m.running.lock().unwrap().remove(&key);
                }));
            }
        }
        clients.retain(|h| !h.is_finished());
        if !ready && live.len() >= expect {
            let up = m.up.lock().unwrap();
            if live
                .iter()
                .all(|&c| KINDS.iter().all(|&k| up.contains(&(c, k))))
            {
                ready = true;
                m.say(format!(
                    "MESH-READY {tag_s} with {} peers after {} ms",
                    live.len(),
                    t0.elapsed().as_millis()
                ));
            }
        }
        for (t, ks) in m.joined.lock().unwrap().iter() {
            if ks.len() == KINDS.len() && announced.insert(t.clone()) {
                m.say(format!("MESH-JOINED {t}"));
            }
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            m.say(format!(
                "MESH-PROGRESS bytes={} units={}",
                m.bytes.load(Relaxed),
                m.units.load(Relaxed)
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
    m.stop.store(true, Relaxed);
    for h in clients {
        let _ = h.join();
    }
    let quick = std::fs::read_to_string(stop).is_ok_and(|s| s.trim() == "quick");
    if !once && !quick {
        // Until no other guest's client has been connected for 3 s (one that connected
        // just before its own stop still gets served), at most 60 s.
        let t = Instant::now();
        let mut idle = Instant::now();
        while idle.elapsed() < Duration::from_secs(3) && t.elapsed() < Duration::from_secs(60) {
            if m.server_conns.load(Relaxed) > 0 {
                idle = Instant::now();
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    let (unexp, corrupt) = (m.unexpected.load(Relaxed), m.corrupt.load(Relaxed));
    m.say(format!(
        "MESH-TOTAL bytes={} units={} expected={} local={} unexpected={unexp} corrupt={corrupt} connect_failures={} server_conns_left={}",
        m.bytes.load(Relaxed),
        m.units.load(Relaxed),
        m.expected.load(Relaxed),
        m.local.load(Relaxed),
        m.connect_fail.load(Relaxed),
        m.server_conns.load(Relaxed),
    ));
    if unexp + corrupt > 0 {
        return Err(format!("{unexp} unexpected ends, {corrupt} corrupt"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_by_seed_and_unit() {
        assert_ne!(seq_msg(1, 0), seq_msg(2, 0));
        assert_ne!(seq_msg(1, 0), seq_msg(1, 1));
        assert!((1..=16384).contains(&stream_len(5, 9)));
        assert_ne!(bulk_word(1, 0, 0), bulk_word(1, 1, 0));
        let m = seq_msg(3, 77);
        assert!(m.len() >= 4 && m.len() <= 32768);
        assert_eq!(&m[..4], &77u32.to_le_bytes());
    }
}
