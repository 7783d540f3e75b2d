//! `vmcs-bench`: round-trip latency and one-way throughput between two guests, over
//! /dev/vmcs and over TCP (the virtio-net link), with the same program and protocol.
//!
//! ```text
//! vmcs-bench serve VMCS_PORT TCP_PORT
//!     serve both transports, one connection at a time, until each got a QUIT
//! vmcs-bench client vmcs|tcp SERVER PORT SIZE [RTT_SECS [TPUT_SECS]]
//!     SERVER: a cid or `auto` (every live peer) for vmcs, an IPv4 address for tcp;
//!     prints one `BENCH ...` line, exit status 0 only if every check held
//! vmcs-bench quit vmcs|tcp SERVER PORT
//! ```
//!
//! Each measurement is one connection that starts with a 16-byte header (magic, mode,
//! message size, 0). Ping-pong: the client sends SIZE bytes, the server echoes them, for
//! RTT_SECS (default 2) after 20 warm-up rounds; reported as the mean (total time /
//! iterations: the guest clock may be coarse) and the 99th percentile of a log-linear
//! histogram of single rounds. Stream: the client writes SIZE-byte messages for TPUT_SECS
//! (default 2), shuts its sending side, and the server answers with the byte and message
//! counts it received; throughput is bytes / (first write .. acknowledgement), in
//! 10^6 bytes per second. Over TCP a "message" is SIZE bytes of the stream.
//!
//! Every echo carries the round number and is checked for length (and fully compared on the
//! first and last round); the stream's acknowledged counts must equal what was sent.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};
use vmcs_guest_tools::dev::{Fd, SHUT_WR};
use vmcs_guest_tools::{ename, exit_with};

type Res<T = ()> = Result<T, String>;

const MAGIC: u32 = 0x766d_6362; // "vmcb"
const MODE_PING: u32 = 1;
const MODE_STREAM: u32 = 2;
const MODE_QUIT: u32 = 3;
const HEADER: usize = 16;
const ACK: usize = 24;
const MAX_MSG: usize = 64 * 1024;
const WARMUP: u64 = 20;
const MAX_ITERS: u64 = 1_000_000;
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// One connection, over either transport.
enum Conn {
    Vmcs(Fd),
    Tcp(TcpStream),
}

impl Conn {
    fn name(&self) -> &'static str {
        match self {
            Conn::Vmcs(_) => "vmcs",
            Conn::Tcp(_) => "tcp",
        }
    }

    /// Sends one message (vmcs) or `buf.len()` bytes of the stream (tcp).
    fn send(&mut self, buf: &[u8]) -> Res {
        match self {
            Conn::Vmcs(f) => match f.write(buf) {
                Ok(n) if n == buf.len() => Ok(()),
                Ok(n) => Err(format!("vmcs write: {n} of {} bytes", buf.len())),
                Err(e) => Err(format!("vmcs write: {}", ename(e))),
            },
            Conn::Tcp(s) => s.write_all(buf).map_err(|e| format!("tcp write: {e}")),
        }
    }

    /// Receives one message (vmcs) or exactly `want` bytes (tcp); 0 means end of file
    /// before the first byte.
    fn recv(&mut self, buf: &mut [u8], want: usize) -> Res<usize> {
        match self {
            Conn::Vmcs(f) => f.read(buf).map_err(|e| format!("vmcs read: {}", ename(e))),
            Conn::Tcp(s) => {
                let mut got = 0;
                while got < want {
                    match s.read(&mut buf[got..want]) {
                        Ok(0) if got == 0 => return Ok(0),
                        Ok(0) => {
                            return Err(format!(
                                "tcp read: end of file after {got} of {want} bytes"
                            ))
                        }
                        Ok(n) => got += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("tcp read: {e}")),
                    }
                }
                Ok(got)
            }
        }
    }

    /// Receives whatever arrives (one message for vmcs), up to `buf.len()` bytes.
    fn recv_some(&mut self, buf: &mut [u8]) -> Res<usize> {
        match self {
            Conn::Vmcs(_) => {
                let n = buf.len();
                self.recv(buf, n)
            }
            Conn::Tcp(s) => loop {
                match s.read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("tcp read: {e}")),
                }
            },
        }
    }

    fn shutdown_write(&mut self) -> Res {
        match self {
            Conn::Vmcs(f) => f
                .shutdown(SHUT_WR)
                .map_err(|e| format!("vmcs shutdown: {}", ename(e))),
            Conn::Tcp(s) => s
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("tcp shutdown: {e}")),
        }
    }
}

fn header(mode: u32, size: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&mode.to_le_bytes());
    h[8..12].copy_from_slice(&(size as u32).to_le_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Serves one connection; `Ok(true)` when it was a QUIT.
fn serve_one(mut c: Conn, buf: &mut [u8]) -> Res<bool> {
    let n = c.recv(buf, HEADER)?;
    if n != HEADER || u32_at(buf, 0) != MAGIC {
        return Err(format!("{}: bad header ({n} bytes)", c.name()));
    }
    let mode = u32_at(buf, 4);
    let size = u32_at(buf, 8) as usize;
    if size == 0 || size > MAX_MSG {
        return Err(format!("{}: bad size {size}", c.name()));
    }
    match mode {
        MODE_QUIT => Ok(true),
        MODE_PING => {
            loop {
                let n = c.recv(buf, size)?;
                if n == 0 {
                    break;
                }
                c.send(&buf[..n])?;
            }
            Ok(false)
        }
        MODE_STREAM => {
            let (mut bytes, mut msgs, mut bad) = (0u64, 0u64, 0u64);
            loop {
                let n = c.recv_some(buf)?;
                if n == 0 {
                    break;
                }
                bytes += n as u64;
                if let Conn::Vmcs(_) = c {
                    msgs += 1;
                    if n != size {
                        bad += 1;
                    }
                }
            }
            let mut ack = [0u8; ACK];
            ack[0..8].copy_from_slice(&bytes.to_le_bytes());
            ack[8..16].copy_from_slice(&msgs.to_le_bytes());
            ack[16..24].copy_from_slice(&bad.to_le_bytes());
            c.send(&ack)?;
            Ok(false)
        }
        m => Err(format!("{}: bad mode {m}", c.name())),
    }
}

/// Accepts and serves connections one at a time until a QUIT; returns how many it served.
fn serve_loop(mut accept: impl FnMut() -> Res<Conn>, what: &str) -> Res<u64> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut served = 0u64;
    loop {
        let c = accept()?;
        match serve_one(c, &mut buf) {
            Ok(true) => return Ok(served),
            Ok(false) => served += 1,
            // A broken measurement is the client's to report; keep serving.
            Err(e) => eprintln!("{what}: {e}"),
        }
    }
}

fn serve(vmcs_port: u32, tcp_port: u16) -> Res {
    let l = Fd::open()?;
    l.bind(vmcs_port)
        .map_err(|e| format!("vmcs bind {vmcs_port}: {}", ename(e)))?;
    l.listen(4)
        .map_err(|e| format!("vmcs listen: {}", ename(e)))?;
    let t = TcpListener::bind(("0.0.0.0", tcp_port))
        .map_err(|e| format!("tcp bind {tcp_port}: {e}"))?;
    println!("serving vmcs port {vmcs_port}, tcp port {tcp_port}");
    let vt = thread::spawn(move || {
        serve_loop(
            || {
                l.accept(0)
                    .map(|(f, _)| Conn::Vmcs(f))
                    .map_err(|e| format!("vmcs accept: {}", ename(e)))
            },
            "vmcs",
        )
    });
    let tt = thread::spawn(move || {
        serve_loop(
            || {
                let (s, _) = t.accept().map_err(|e| format!("tcp accept: {e}"))?;
                s.set_nodelay(true)
                    .map_err(|e| format!("TCP_NODELAY: {e}"))?;
                Ok(Conn::Tcp(s))
            },
            "tcp",
        )
    });
    let v = vt.join().map_err(|_| "vmcs server panicked")??;
    let t = tt.join().map_err(|_| "tcp server panicked")??;
    println!("served {v} vmcs and {t} tcp measurements");
    Ok(())
}

/// Connects to the server, retrying for up to a minute (it may still be starting).
fn connect(transport: &str, server: &str, port: u32) -> Res<Conn> {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < CONNECT_PATIENCE {
        match transport {
            "vmcs" => {
                let cids = if server == "auto" {
                    Fd::open()?
                        .live_peers()
                        .map_err(|e| format!("GET_INFO: {}", ename(e)))?
                } else {
                    vec![server.parse().map_err(|_| format!("bad cid {server}"))?]
                };
                for cid in cids {
                    let f = Fd::open()?;
                    match f.connect(cid, port, 2000) {
                        Ok(()) => return Ok(Conn::Vmcs(f)),
                        Err(e) => last = format!("vmcs connect {cid}:{port}: {}", ename(e)),
                    }
                }
            }
            "tcp" => {
                let a: SocketAddr = format!("{server}:{port}")
                    .parse()
                    .map_err(|_| format!("bad address {server}:{port}"))?;
                match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
                    Ok(s) => {
                        s.set_nodelay(true)
                            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
                        return Ok(Conn::Tcp(s));
                    }
                    Err(e) => last = format!("tcp connect {a}: {e}"),
                }
            }
            t => return Err(format!("unknown transport {t}")),
        }
        thread::sleep(Duration::from_millis(500));
    }
    Err(format!("no server after {CONNECT_PATIENCE:?}: {last}"))
}

/// Log-linear histogram of nanoseconds: exact below 8, then 8 buckets per power of two
/// (at most 12.5 % wide).
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; 64 * 8],
            total: 0,
        }
    }
    fn bucket(v: u64) -> usize {
        if v < 8 {
            v as usize
        } else {
            let m = 63 - v.leading_zeros() as u64;
            ((m - 2) * 8 + ((v >> (m - 3)) & 7)) as usize
        }
    }
    /// The smallest value of bucket `i`.
    fn lower(i: usize) -> u64 {
        if i < 8 {
            i as u64
        } else {
            let (m, sub) = (i as u64 / 8 + 2, i as u64 % 8);
            (8 + sub) << (m - 3)
        }
    }
    fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
    }
    /// The upper edge of the bucket holding the `q` quantile.
    fn quantile(&self, q: f64) -> u64 {
        let want = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Self::lower(i + 1);
            }
        }
        0
    }
}

fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

struct Rtt {
    iters: u64,
    mean_ns: f64,
    p99_ns: u64,
}

fn ping_pong(transport: &str, server: &str, port: u32, size: usize, secs: f64) -> Res<Rtt> {
    let mut c = connect(transport, server, port)?;
    c.send(&header(MODE_PING, size))?;
    let mut out = vec![0u8; size];
    fill(&mut out, size as u64);
    let mut back = vec![0u8; MAX_MSG];
    let mut hist = Histogram::new();
    let limit = Duration::from_secs_f64(secs);
    let mut round = |c: &mut Conn, i: u64, full: bool| -> Res {
        out[..8].copy_from_slice(&i.to_le_bytes());
        c.send(&out)?;
        let n = c.recv(&mut back, size)?;
        if n != size || back[..8] != out[..8] || (full && back[..n] != out[..]) {
            return Err(format!(
                "round {i}: echo of {n} bytes (want {size}) does not match"
            ));
        }
        Ok(())
    };
    for i in 0..WARMUP {
        round(&mut c, i, i == 0)?;
    }
    let t0 = Instant::now();
    let mut iters = 0u64;
    let mut prev = t0;
    while iters < MAX_ITERS {
        round(&mut c, WARMUP + iters, false)?;
        let now = Instant::now();
        hist.record((now - prev).as_nanos() as u64);
        prev = now;
        iters += 1;
        if now - t0 >= limit {
            break;
        }
    }
    let total = prev - t0;
    round(&mut c, WARMUP + iters, true)?;
    c.shutdown_write()?;
    if c.recv(&mut back, size)? != 0 {
        return Err("ping-pong: no end of file after our shutdown".into());
    }
    Ok(Rtt {
        iters,
        mean_ns: total.as_nanos() as f64 / iters as f64,
        p99_ns: hist.quantile(0.99),
    })
}

struct Tput {
    bytes: u64,
    msgs: u64,
    secs: f64,
}

fn stream(transport: &str, server: &str, port: u32, size: usize, secs: f64) -> Res<Tput> {
    let mut c = connect(transport, server, port)?;
    c.send(&header(MODE_STREAM, size))?;
    let mut out = vec![0u8; size];
    fill(&mut out, !(size as u64));
    // Read the clock about once per 64 KiB, so that small messages do not mostly measure it.
    let per_check = (MAX_MSG / size).max(1) as u64;
    let limit = Duration::from_secs_f64(secs);
    let (mut bytes, mut msgs) = (0u64, 0u64);
    let t0 = Instant::now();
    'send: loop {
        for _ in 0..per_check {
            c.send(&out)?;
            bytes += size as u64;
            msgs += 1;
        }
        if t0.elapsed() >= limit {
            break 'send;
        }
    }
    c.shutdown_write()?;
    let mut ack = [0u8; MAX_MSG];
    let n = c.recv(&mut ack, ACK)?;
    let elapsed = t0.elapsed();
    if n != ACK {
        return Err(format!("stream: acknowledgement of {n} bytes, want {ACK}"));
    }
    let (got, got_msgs, bad) = (u64_at(&ack, 0), u64_at(&ack, 8), u64_at(&ack, 16));
    if got != bytes {
        return Err(format!(
            "stream: server received {got} bytes, we sent {bytes}"
        ));
    }
    if let Conn::Vmcs(_) = c {
        if got_msgs != msgs || bad != 0 {
            return Err(format!(
                "stream: server received {got_msgs} messages ({bad} not {size} bytes), we sent {msgs}"
            ));
        }
    }
    Ok(Tput {
        bytes,
        msgs,
        secs: elapsed.as_secs_f64(),
    })
}

fn client(args: &[String]) -> Res {
    let usage = || "usage: client vmcs|tcp SERVER PORT SIZE [RTT_SECS [TPUT_SECS]]".to_string();
    let transport = args.first().ok_or_else(usage)?.as_str();
    let server = args.get(1).ok_or_else(usage)?.as_str();
    let port: u32 = args.get(2).and_then(|s| s.parse().ok()).ok_or_else(usage)?;
    let size: usize = args.get(3).and_then(|s| s.parse().ok()).ok_or_else(usage)?;
    let rtt_secs: f64 = args
        .get(4)
        .map_or(Some(2.0), |s| s.parse().ok())
        .ok_or_else(usage)?;
    let tput_secs: f64 = args
        .get(5)
        .map_or(Some(2.0), |s| s.parse().ok())
        .ok_or_else(usage)?;
    if !(8..=MAX_MSG).contains(&size) {
        return Err(format!("SIZE must be 8..={MAX_MSG}"));
    }
    let r = ping_pong(transport, server, port, size, rtt_secs)?;
    let t = stream(transport, server, port, size, tput_secs)?;
    println!(
        "BENCH transport={transport} size={size} iters={} rtt_us={:.1} p99_us={:.1} bytes={} msgs={} secs={:.3} mb_per_s={:.2}",
        r.iters,
        r.mean_ns / 1e3,
        r.p99_ns as f64 / 1e3,
        t.bytes,
        t.msgs,
        t.secs,
        t.bytes as f64 / t.secs / 1e6
    );
    Ok(())
}

fn quit(args: &[String]) -> Res {
    let usage = || "usage: quit vmcs|tcp SERVER PORT".to_string();
    let transport = args.first().ok_or_else(usage)?.as_str();
    let server = args.get(1).ok_or_else(usage)?.as_str();
    let port: u32 = args.get(2).and_then(|s| s.parse().ok()).ok_or_else(usage)?;
    let mut c = connect(transport, server, port)?;
    c.send(&header(MODE_QUIT, 1))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("serve") => match (
            args.get(2).and_then(|s| s.parse().ok()),
            args.get(3).and_then(|s| s.parse().ok()),
        ) {
            (Some(v), Some(t)) => serve(v, t),
            _ => Err("usage: serve VMCS_PORT TCP_PORT".into()),
        },
        Some("client") => client(&args[2..]),
        Some("quit") => quit(&args[2..]),
        _ => {
            eprintln!("usage: vmcs-bench serve|client|quit ... (see the source header)");
            return ExitCode::from(2);
        }
    };
    exit_with(r, "FAIL")
}
