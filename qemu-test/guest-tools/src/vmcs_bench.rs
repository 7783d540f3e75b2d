//! `vmcs-bench`: round trips and one-way throughput between two guests over every path
//! `make bench` compares (docs/performance.md), with one program and one protocol, and the
//! in-guest memcpy baseline.
//!
//! ```text
//! vmcs-bench serve BASE
//!     serve every path, one connection at a time per path, until a QUIT:
//!     /dev/vmcs and its bulk area on port BASE, TCP BASE+1, AF_VMCS stream BASE+2,
//!     AF_VMCS seqpacket BASE+3, AF_VSOCK BASE+4, TCP for the vmcs0 path BASE+5, AF_VMCS
//!     stream with SO_BUSY_POLL on both ends BASE+6, encrypted stream BASE+7 (a path that
//!     cannot listen is skipped)
//! vmcs-bench client PATH SERVER BASE SIZE RTT_SECS TPUT_SECS
//!     PATH: dev, stream (SO_BUSY_POLL 0), stream-bp (SO_BUSY_POLL 2000 us), stream-enc
//!     (encrypted: VMCS_SO_ENCRYPT require, SO_BUSY_POLL 0), seqpacket, bulk, tcp, vsock
//!     or vmcs0 (TCP over the vmcs0 net device); SERVER: a cid or `auto` (every live peer) for the vmcs paths, an IPv4 address for tcp and vmcs0, a cid for vsock;
//!     prints one
//!     `BENCH ...` line and one `CDF ...` line; exit status 0 only if every check held
//! vmcs-bench memcpy SIZE SECS
//!     in-guest memcpy of SIZE-byte blocks over an 8 MiB working set
//! vmcs-bench quit SERVER BASE [PATH]   tell the server to quit, over PATH (default dev; the
//!     vsock-transport pass of the bench scenario uses stream)
//! vmcs-bench barrier-serve PORT N      accept N TCP connections, then release them all
//! vmcs-bench barrier ADDR PORT         wait at guest ADDR's barrier
//! ```
//!
//! A measurement is a connection that starts with a 16-byte header (magic, mode, size, 0).
//! An application message of SIZE bytes (64 B .. 4 MiB) travels as one write on the stream
//! transports and as messages of at most 64 KiB on the message transports (/dev/vmcs,
//! seqpacket); over the bulk area as ranges of the sender's extent (`BULK_SEND`), which the
//! receiver reads in place.
//!
//! - Round trip: the client sends a message, the server echoes it (bulk: copies the ranges
//!   into its own extent and lends them back), after a warm-up, for RTT_SECS and at least
//!   5 rounds (at most 4 x RTT_SECS). Every round is timed on its own (the guests run on
//!   the TSC, see qemu-test/guest-clock.sh): mean, p50, p99, max, and 101 quantiles for
//!   the CDF. Every echo carries the round number; the first and last are compared in full.
//! - Throughput: the client sends messages for TPUT_SECS, shuts its sending side, and the
//!   server acknowledges the bytes and messages it received (bulk: ranges, each copied out
//!   of the mapping before release); 10^6 bytes per second from the first write to the
//!   acknowledgement. Both sides count their guest's busy CPU time (/proc/stat, all
//!   processes, kernel threads and interrupts) over the transfer: `cpu_s_per_gb` is the
//!   sum of both guests' busy seconds per 10^9 bytes. It does not see host-side work
//!   (QEMU's netdev, vhost-device-vsock).

mod bench_conn;

use bench_conn::{connect, listen, Conn, Listener, Path, MAX_MSG};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use vmcs_guest_tools::dev::{Fd, Map};
use vmcs_guest_tools::sys::vmcs_bulk_desc;
use vmcs_guest_tools::{ename, exit_with, Res};

const MAGIC: u32 = 0x766d_6362; // "vmcb"
const MODE_PING: u32 = 1;
const MODE_STREAM: u32 = 2;
const MODE_QUIT: u32 = 3;
const MODE_BULK_PING: u32 = 4;
const MODE_BULK_STREAM: u32 = 5;
/// As [`MODE_BULK_STREAM`], but the server reads every range in place (one pass over its
/// words, no copy out) before releasing it.
const MODE_BULK_STREAM_ZC: u32 = 6;
const HEADER: usize = 16;
/// Acknowledgement of a stream: bytes, messages, bad messages, the server's busy CPU
/// ticks and its elapsed nanoseconds, as little-endian u64s.
const ACK: usize = 40;
const MAX_SIZE: usize = 4 << 20;
const MIN_ROUNDS: usize = 5;
const MAX_ROUNDS: usize = 1_000_000;

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

/// Busy CPU time of this guest so far, in USER_HZ ticks (all CPUs, everything but idle
/// and iowait).
fn cpu_busy() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    f.iter().take(8).sum::<u64>() - f.get(3).copied().unwrap_or(0) - f.get(4).copied().unwrap_or(0)
}

/// USER_HZ: /proc/stat's tick.
const TICKS_PER_S: f64 = 100.0;

fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// `len` bytes at `off` of a bulk mapping, bounds checked. The peer may change the bytes
/// at any time, which for plain bytes is only a wrong value.
fn range(m: &Map, off: usize, len: usize) -> Res<&[u8]> {
    off.checked_add(len)
        .and_then(|end| m.slice().get(off..end))
        .ok_or_else(|| format!("range {off}+{len} outside the {} B extent", m.len))
}

/// `len` writable bytes at `off` of our own extent, bounds checked.
fn range_mut(m: &mut Map, off: usize, len: usize) -> Res<&mut [u8]> {
    if off.checked_add(len).is_none_or(|e| e > m.len) {
        return Err(format!("range {off}+{len} outside the {} B extent", m.len));
    }
    // SAFETY: inside our writable mapping (checked), borrowed mutably through `m`; the range
    // is ours to write (the caller waited for it with BULK_WAIT).
    Ok(unsafe { std::slice::from_raw_parts_mut(m.ptr.add(off), len) })
}

/// Maps `len` bytes of the bulk area at `off`.
fn map(f: &Fd, off: usize, len: usize, prot: i32) -> Res<Map> {
    f.mmap(off, len, prot, libc::MAP_SHARED)
        .map_err(|e| format!("mmap bulk {off}+{len}: {}", ename(e)))
}

/// Both extents of a bulk connection, and how messages are cut into ranges of ours.
struct Bulk<'a> {
    f: &'a Fd,
    tx: Map,
    rx: Map,
    chunk: usize,
    slots: usize,
    next: usize,
    /// Ranges received by `BULK_RECVV` and not yet handed out by [`Bulk::recv`].
    inq: std::collections::VecDeque<vmcs_bulk_desc>,
    /// Ranges handed out and not yet released, oldest first.
    held: Vec<vmcs_bulk_desc>,
    /// Slots from `next` up to this one are ours (a `BULK_WAIT` of their group returned).
    ready: usize,
    stats: BulkStats,
}

/// What one side of a bulk connection did: the calls and the time it waited, printed as a
/// `BULKSTAT` line (docs/performance.md "The bulk path").
#[derive(Default)]
struct BulkStats {
    waits: u64,
    wait_ns: u64,
    sendv: u64,
    recvv: u64,
    recvv_ns: u64,
    releasev: u64,
    tx_bytes: u64,
    rx_bytes: u64,
}

impl BulkStats {
    /// `BULKSTAT` line: calls per MiB moved and the share of the time spent waiting.
    fn line(&self, what: &str, size: usize, ext: usize, secs: f64) -> String {
        let mib = ((self.tx_bytes + self.rx_bytes) as f64 / (1u64 << 20) as f64).max(1e-9);
        let per = |n: u64| n as f64 / mib;
        format!(
            "BULKSTAT {what} size={size} extent={ext} mib={mib:.1} waits_per_mib={:.2} \
             wait_pct={:.1} sendv_per_mib={:.2} recvv_per_mib={:.2} recvv_wait_pct={:.1} \
             releasev_per_mib={:.2}",
            per(self.waits),
            self.wait_ns as f64 / 1e7 / secs.max(1e-9),
            per(self.sendv),
            per(self.recvv),
            self.recvv_ns as f64 / 1e7 / secs.max(1e-9),
            per(self.releasev)
        )
    }
}

/// Largest extent a bench connection asks for (it takes an eighth off the request until
/// this guest's slice holds it: a failed `BULK_SETUP` allocates nothing).
const BULK_MAX_EXTENT: u32 = 16 << 20;
/// Largest range: messages larger than this are lent as several ranges, in one
/// `BULK_SENDV`.
const BULK_MAX_RANGE: usize = 1 << 20;

impl<'a> Bulk<'a> {
    /// `BULK_SETUP` with the largest extent this guest's slice gives, then both mappings.
    fn setup(f: &'a Fd, size: usize) -> Res<Bulk<'a>> {
        let mut want = BULK_MAX_EXTENT;
        let (tx, rx) = loop {
            match f.bulk_setup(want, 10_000) {
                Ok(s) => break (s.tx_size, s.rx_size),
                Err(e) if (e == libc::EINVAL || e == libc::ENOSPC) && want > 4096 => {
                    want = ((want - want / 8) & !4095).max(4096)
                }
                Err(e) => return Err(format!("BULK_SETUP {want}: {}", ename(e))),
            }
        };
        let (tx, rx) = (tx as usize, rx as usize);
        let txm = map(f, 0, tx, libc::PROT_READ | libc::PROT_WRITE)?;
        let rxm = map(f, tx, rx, libc::PROT_READ)?;
        // At least four ranges fit the extent; at most 64 are lent at once.
        let chunk = size.min(tx / 4).clamp(1, BULK_MAX_RANGE);
        Ok(Bulk {
            f,
            tx: txm,
            rx: rxm,
            chunk,
            slots: (tx / chunk).clamp(1, 64),
            next: 0,
            inq: Default::default(),
            held: Vec::new(),
            ready: 0,
            stats: BulkStats::default(),
        })
    }

    /// Copies `msg` into our extent and lends it: its ranges go out in one `BULK_SENDV`
    /// per contiguous run of slots (two when the message wraps around the extent).
    fn send(&mut self, msg: &[u8]) -> Res {
        let parts: Vec<&[u8]> = msg.chunks(self.chunk).collect();
        let mut i = 0;
        while i < parts.len() {
            if self.next >= self.ready {
                // Our next group of slots (a quarter of the extent) back with one
                // `BULK_WAIT`: the other three stay lent meanwhile.
                let group = (self.slots / 4).max(1);
                let end = (self.next + group).min(self.slots);
                let t = Instant::now();
                self.f
                    .bulk_wait(
                        (self.next * self.chunk) as u32,
                        ((end - self.next) * self.chunk) as u32,
                    )
                    .map_err(|e| format!("BULK_WAIT: {}", ename(e)))?;
                self.stats.waits += 1;
                self.stats.wait_ns += t.elapsed().as_nanos() as u64;
                self.ready = end;
            }
            // A run of the ready slots from `next`, at most 64.
            let run = (parts.len() - i).min(self.ready - self.next);
            let first = self.next * self.chunk;
            let mut descs = Vec::with_capacity(run);
            let mut off = first;
            for part in &parts[i..i + run] {
                range_mut(&mut self.tx, off, part.len())?.copy_from_slice(part);
                descs.push(vmcs_bulk_desc {
                    off: off as u32,
                    len: part.len() as u32,
                });
                off += self.chunk;
            }
            let mut sent = 0;
            while sent < run {
                sent += self
                    .f
                    .bulk_sendv(&descs[sent..])
                    .map_err(|e| format!("BULK_SENDV: {}", ename(e)))?;
                self.stats.sendv += 1;
            }
            self.stats.tx_bytes += parts[i..i + run]
                .iter()
                .map(|p| p.len() as u64)
                .sum::<u64>();
            self.next += run;
            if self.next == self.slots {
                self.next = 0;
                self.ready = 0;
            }
            i += run;
        }
        Ok(())
    }

    /// The next range lent to us, `None` at end of file; ranges come in batches
    /// (`BULK_RECVV`), and those handed out are released in batches too
    /// ([`Bulk::release_all`]).
    fn recv(&mut self) -> Res<Option<&[u8]>> {
        if self.inq.is_empty() {
            let t = Instant::now();
            let ds = self
                .f
                .bulk_recvv(64)
                .map_err(|e| format!("BULK_RECVV: {}", ename(e)))?;
            self.stats.recvv += 1;
            self.stats.recvv_ns += t.elapsed().as_nanos() as u64;
            self.stats.rx_bytes += ds.iter().map(|d| u64::from(d.len)).sum::<u64>();
            if ds.is_empty() {
                return Ok(None);
            }
            self.inq.extend(ds);
        }
        let Some(d) = self.inq.pop_front() else {
            return Ok(None);
        };
        self.held.push(d);
        range(&self.rx, d.off as usize, d.len as usize).map(Some)
    }

    /// Releases every range handed out (one `BULK_RELEASEV`).
    fn release_all(&mut self) -> Res {
        let mut done = 0;
        while done < self.held.len() {
            done += self
                .f
                .bulk_releasev(&self.held[done..])
                .map_err(|e| format!("BULK_RELEASEV: {}", ename(e)))?;
            self.stats.releasev += 1;
        }
        self.held.clear();
        Ok(())
    }

    /// Releases what was handed out once the batch it came in is used up, or a quarter of
    /// the peer's extent is held (so that the sender refills it while we read the rest of
    /// a large batch).
    fn release_batch(&mut self) -> Res {
        let held: usize = self.held.iter().map(|d| d.len as usize).sum();
        if self.inq.is_empty() || self.held.len() >= 64 || held >= self.rx.len / 4 {
            self.release_all()?;
        }
        Ok(())
    }

    /// Receives one message of `buf.len()` bytes into `buf` (copying every range out and
    /// releasing it); `Ok(false)` at end of file before its first byte.
    fn recv_msg(&mut self, buf: &mut [u8]) -> Res<bool> {
        let mut got = 0;
        while got < buf.len() {
            let Some(r) = self.recv()? else {
                if got == 0 {
                    return Ok(false);
                }
                return Err(format!(
                    "bulk: end of file after {got} of {} bytes",
                    buf.len()
                ));
            };
            let n = r.len();
            let Some(dst) = buf.get_mut(got..got + n) else {
                return Err(format!("bulk: range of {n} bytes overruns the message"));
            };
            dst.copy_from_slice(r);
            got += n;
            // Copied out: hand it back at once, so that a message larger than the peer's
            // extent does not wait for ranges we hold.
            self.release_batch()?;
        }
        self.release_all()?;
        Ok(true)
    }
}

/// One pass over the words of `r` (reading in place, as a zero-copy consumer does).
fn read_in_place(r: &[u8]) -> u64 {
    let (head, words, tail) = {
        // SAFETY: any bytes are valid u64s; the middle part is aligned.
        unsafe { r.align_to::<u64>() }
    };
    let mut x = 0u64;
    for &w in words {
        x = x.wrapping_add(w);
    }
    for &b in head.iter().chain(tail) {
        x = x.wrapping_add(u64::from(b));
    }
    x
}

/// Serves one connection; `Ok(true)` when it was a QUIT.
fn serve_one(c: Conn, buf: &mut [u8]) -> Res<bool> {
    let mut h = [0u8; HEADER];
    if c.recv_app(&mut h)? != HEADER || u32_at(&h, 0) != MAGIC {
        return Err(format!("{}: bad header", c.path.name()));
    }
    let mode = u32_at(&h, 4);
    let size = u32_at(&h, 8) as usize;
    if size == 0 || size > MAX_SIZE {
        return Err(format!("{}: bad size {size}", c.path.name()));
    }
    let msg = &mut buf[..size];
    match mode {
        MODE_QUIT => return Ok(true),
        MODE_PING => {
            while c.recv_app(msg)? != 0 {
                c.send_app(msg)?;
            }
        }
        MODE_STREAM => {
            let (busy0, t0) = (cpu_busy(), Instant::now());
            let (mut bytes, mut msgs, mut bad) = (0u64, 0u64, 0u64);
            // The message transports carry SIZE as 64 KiB messages and a remainder.
            let lens = [size.min(MAX_MSG), size % MAX_MSG];
            loop {
                let n = c.recv_some(buf)?;
                if n == 0 {
                    break;
                }
                bytes += n as u64;
                msgs += 1;
                if !lens.contains(&n) {
                    bad += 1;
                }
            }
            ack(&c, bytes, msgs, bad, busy0, t0)?;
        }
        MODE_BULK_PING | MODE_BULK_STREAM | MODE_BULK_STREAM_ZC if c.dev().is_some() => {
            let mut b = Bulk::setup(c.dev().unwrap(), size)?;
            if mode == MODE_BULK_PING {
                while b.recv_msg(msg)? {
                    b.send(msg)?;
                }
            } else {
                let (busy0, t0) = (cpu_busy(), Instant::now());
                let (mut bytes, mut ranges, mut sum) = (0u64, 0u64, 0u64);
                while let Some(r) = b.recv()? {
                    let n = r.len();
                    if mode == MODE_BULK_STREAM_ZC {
                        // Read in place: no copy out of the mapping.
                        sum = sum.wrapping_add(read_in_place(r));
                    } else {
                        // Copied out, as a reader that does not trust its peer does.
                        buf[..n].copy_from_slice(r);
                        black_box(&buf[..n]);
                    }
                    b.release_batch()?;
                    bytes += n as u64;
                    ranges += 1;
                }
                black_box(sum);
                b.release_all()?;
                let what = if mode == MODE_BULK_STREAM_ZC {
                    "bulk-zc"
                } else {
                    "bulk"
                };
                let secs = t0.elapsed().as_secs_f64();
                println!(
                    "{}",
                    b.stats
                        .line(&format!("path={what} side=server"), size, b.tx.len, secs)
                );
                drop(b);
                ack(&c, bytes, ranges, 0, busy0, t0)?;
            }
        }
        m => return Err(format!("{}: bad mode {m}", c.path.name())),
    }
    Ok(false)
}

fn ack(c: &Conn, bytes: u64, msgs: u64, bad: u64, busy0: u64, t0: Instant) -> Res {
    let mut a = [0u8; ACK];
    let busy = cpu_busy().saturating_sub(busy0);
    let ns = t0.elapsed().as_nanos() as u64;
    for (i, v) in [bytes, msgs, bad, busy, ns].into_iter().enumerate() {
        a[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    c.send_app(&a).map(|_| ())
}

fn serve(base: u32) -> Res {
    let (quit_tx, quit_rx) = mpsc::channel::<()>();
    let mut serving = Vec::new();
    for path in [
        Path::Dev,
        Path::Tcp,
        Path::Stream,
        Path::StreamBp,
        Path::StreamEnc,
        Path::Seqpacket,
        Path::Vsock,
        Path::Vmcs0,
    ] {
        let port = base + path.port_offset();
        let l: Listener = match listen(path, port) {
            Ok(l) => l,
            Err(e) => {
                println!("not serving {}: {e}", path.name());
                continue;
            }
        };
        serving.push(format!("{} {port}", path.name()));
        let quit = quit_tx.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; MAX_SIZE];
            loop {
                match l.accept().and_then(|c| serve_one(c, &mut buf)) {
                    Ok(true) => {
                        let _ = quit.send(());
                        return;
                    }
                    Ok(false) => {}
                    // A broken measurement is the client's to report; keep serving.
                    Err(e) => eprintln!("{}: {e}", path.name()),
                }
            }
        });
    }
    println!("serving {}", serving.join(", "));
    if serving.is_empty() {
        return Err("no path to serve".into());
    }
    quit_rx.recv().map_err(|_| "every server thread ended")?;
    println!("quit");
    Ok(())
}

/// Round-trip times of single rounds, in nanoseconds, sorted.
struct Rtt {
    ns: Vec<u64>,
    total: Duration,
}

impl Rtt {
    fn q(&self, q: f64) -> f64 {
        let i = ((self.ns.len() - 1) as f64 * q).round() as usize;
        self.ns[i] as f64 / 1e3
    }
}

/// Runs `round(i, full)` through a warm-up and then for `secs` (at least MIN_ROUNDS, at
/// most 4 x `secs`), timing each.
fn timed_rounds(secs: f64, mut round: impl FnMut(u64, bool) -> Res) -> Res<Rtt> {
    let limit = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let mut i = 0u64;
    while i < 20 && (i == 0 || t0.elapsed() < limit / 10) {
        round(i, i == 0)?;
        i += 1;
    }
    let mut ns = Vec::new();
    let t0 = Instant::now();
    let mut prev = t0;
    loop {
        round(i, false)?;
        i += 1;
        let now = Instant::now();
        ns.push((now - prev).as_nanos() as u64);
        prev = now;
        let e = now - t0;
        if (e >= limit && ns.len() >= MIN_ROUNDS) || e >= 4 * limit || ns.len() >= MAX_ROUNDS {
            break;
        }
    }
    let total = prev - t0;
    round(i, true)?;
    ns.sort_unstable();
    Ok(Rtt { ns, total })
}

/// The echo of round `i` must carry its number, and all of `out` when `full`.
fn check_echo(i: u64, full: bool, out: &[u8], back: &[u8]) -> Res {
    if back.len() != out.len() || back[..8] != out[..8] || (full && back != out) {
        return Err(format!("round {i}: the echo does not match"));
    }
    Ok(())
}

fn ping_pong(path: Path, server: &str, base: u32, size: usize, secs: f64) -> Res<Rtt> {
    let c = connect(path, server, base + path.port_offset())?;
    c.send_app(&header(MODE_PING, size))?;
    let mut out = vec![0u8; size];
    fill(&mut out, size as u64);
    let mut back = vec![0u8; size];
    let r = timed_rounds(secs, |i, full| {
        out[..8].copy_from_slice(&i.to_le_bytes());
        c.send_app(&out)?;
        if c.recv_app(&mut back)? != size {
            return Err(format!("round {i}: end of file"));
        }
        check_echo(i, full, &out, &back)
    })?;
    c.shutdown_write()?;
    if c.recv_some(&mut back)? != 0 {
        return Err("ping-pong: no end of file after our shutdown".into());
    }
    Ok(r)
}

fn bulk_ping(server: &str, base: u32, size: usize, secs: f64) -> Res<Rtt> {
    let c = connect(Path::Bulk, server, base)?;
    c.send_app(&header(MODE_BULK_PING, size))?;
    let mut b = Bulk::setup(c.dev().unwrap(), size)?;
    let mut out = vec![0u8; size];
    fill(&mut out, size as u64);
    let r = timed_rounds(secs, |i, full| {
        out[..8].copy_from_slice(&i.to_le_bytes());
        b.send(&out)?;
        // The echo is read in place, range by range.
        let mut got = 0;
        while got < size {
            let r = b.recv()?.ok_or_else(|| format!("round {i}: end of file"))?;
            let n = r.len();
            let want = out
                .get(got..got + n)
                .ok_or_else(|| format!("round {i}: echo overruns the message"))?;
            if (got == 0 && r[..8.min(n)] != want[..8.min(n)]) || (full && r != want) {
                return Err(format!("round {i}: the echo does not match"));
            }
            got += n;
            // Checked: hand it back, so that an echo larger than the server's extent can
            // reuse its ranges.
            b.release_batch()?;
        }
        b.release_all()
    })?;
    drop(b);
    c.shutdown_write()?;
    Ok(r)
}

struct Tput {
    bytes: u64,
    secs: f64,
    cpu_client_s: f64,
    cpu_server_s: f64,
}

/// Reads and checks the server's acknowledgement of a stream.
fn read_ack(c: &Conn, bytes: u64, msgs: u64, busy0: u64, t0: Instant) -> Res<Tput> {
    let mut a = [0u8; ACK];
    if c.recv_app(&mut a)? != ACK {
        return Err("stream: no acknowledgement".into());
    }
    let secs = t0.elapsed().as_secs_f64();
    let busy = cpu_busy().saturating_sub(busy0);
    let (got, got_msgs, bad) = (u64_at(&a, 0), u64_at(&a, 8), u64_at(&a, 16));
    if got != bytes {
        return Err(format!(
            "stream: server received {got} bytes, we sent {bytes}"
        ));
    }
    if !c.path.is_stream() && (got_msgs != msgs || bad != 0) {
        return Err(format!(
            "stream: server received {got_msgs} messages ({bad} of a wrong size), we sent {msgs}"
        ));
    }
    Ok(Tput {
        bytes,
        secs,
        cpu_client_s: busy as f64 / TICKS_PER_S,
        cpu_server_s: u64_at(&a, 24) as f64 / TICKS_PER_S,
    })
}

/// Sends `size`-byte messages with `send` for `secs` (the clock, a vDSO read of the TSC,
/// is read after every message); returns (bytes, transport messages).
fn send_for(size: usize, secs: f64, mut send: impl FnMut() -> Res<u64>) -> Res<(u64, u64)> {
    let limit = Duration::from_secs_f64(secs);
    let (mut bytes, mut msgs) = (0u64, 0u64);
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        msgs += send()?;
        bytes += size as u64;
    }
    Ok((bytes, msgs))
}

fn stream(path: Path, server: &str, base: u32, size: usize, secs: f64) -> Res<Tput> {
    let c = connect(path, server, base + path.port_offset())?;
    c.send_app(&header(MODE_STREAM, size))?;
    let mut out = vec![0u8; size];
    fill(&mut out, !(size as u64));
    let (busy0, t0) = (cpu_busy(), Instant::now());
    let (bytes, msgs) = send_for(size, secs, || c.send_app(&out))?;
    c.shutdown_write()?;
    read_ack(&c, bytes, msgs, busy0, t0)
}

/// Bulk throughput; `in_place`: the server reads the ranges in place instead of copying
/// them out.
fn bulk_stream(server: &str, base: u32, size: usize, secs: f64, in_place: bool) -> Res<Tput> {
    let c = connect(Path::Bulk, server, base)?;
    let mode = if in_place {
        MODE_BULK_STREAM_ZC
    } else {
        MODE_BULK_STREAM
    };
    c.send_app(&header(mode, size))?;
    let mut b = Bulk::setup(c.dev().unwrap(), size)?;
    let mut out = vec![0u8; size];
    fill(&mut out, !(size as u64));
    let per_msg = size.div_ceil(b.chunk) as u64;
    let (busy0, t0) = (cpu_busy(), Instant::now());
    let (bytes, msgs) = send_for(size, secs, || b.send(&out).map(|_| per_msg))?;
    let what = if in_place { "bulk-zc" } else { "bulk" };
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        b.stats
            .line(&format!("path={what} side=client"), size, b.tx.len, secs)
    );
    drop(b);
    c.shutdown_write()?;
    read_ack(&c, bytes, msgs, busy0, t0)
}

/// Prints the `BENCH` line (and the `CDF` line with a round-trip measurement); `wall` is
/// when the measurement started.
fn print_rtt_tput(path: &str, size: usize, r: Option<&Rtt>, t: &Tput, wall: Instant) {
    let mut line = format!("BENCH path={path} size={size}");
    if let Some(r) = r {
        line += &format!(
            " rtt_n={} rtt_mean_us={:.2} rtt_p50_us={:.2} rtt_p99_us={:.2} rtt_max_us={:.2}",
            r.ns.len(),
            r.total.as_nanos() as f64 / r.ns.len() as f64 / 1e3,
            r.q(0.5),
            r.q(0.99),
            r.q(1.0)
        );
    }
    let gb = t.bytes as f64 / 1e9;
    line += &format!(
        " tput_mb_s={:.2} tput_bytes={} tput_secs={:.3}",
        t.bytes as f64 / t.secs / 1e6,
        t.bytes,
        t.secs
    );
    if t.cpu_client_s > 0.0 || t.cpu_server_s > 0.0 {
        line += &format!(
            " cpu_client_s={:.2} cpu_server_s={:.2} cpu_s_per_gb={:.2}",
            t.cpu_client_s,
            t.cpu_server_s,
            (t.cpu_client_s + t.cpu_server_s) / gb
        );
    }
    line += &format!(" wall_s={:.1}", wall.elapsed().as_secs_f64());
    println!("{line}");
    if let Some(r) = r {
        let q: Vec<String> = (0..=100)
            .map(|i| format!("{:.1}", r.q(i as f64 / 100.0)))
            .collect();
        println!("CDF path={path} size={size} us={}", q.join(","));
    }
}

fn client(args: &[String]) -> Res {
    let usage = || "usage: client PATH SERVER BASE SIZE RTT_SECS TPUT_SECS".to_string();
    if args.len() != 6 {
        return Err(usage());
    }
    let path = Path::parse(&args[0]).ok_or_else(usage)?;
    let server = args[1].as_str();
    let base: u32 = args[2].parse().map_err(|_| usage())?;
    let size: usize = args[3].parse().map_err(|_| usage())?;
    let rtt_secs: f64 = args[4].parse().map_err(|_| usage())?;
    let tput_secs: f64 = args[5].parse().map_err(|_| usage())?;
    if !(8..=MAX_SIZE).contains(&size) {
        return Err(format!("SIZE must be 8..={MAX_SIZE}"));
    }
    let wall = Instant::now();
    let (r, t) = if path == Path::Bulk {
        let r = bulk_ping(server, base, size, rtt_secs)?;
        let t = bulk_stream(server, base, size, tput_secs, false)?;
        // Also with the receiver reading in place (no copy out): path `bulk-zc`.
        let zc = bulk_stream(server, base, size, tput_secs, true)?;
        print_rtt_tput("bulk-zc", size, None, &zc, wall);
        (r, t)
    } else {
        (
            ping_pong(path, server, base, size, rtt_secs)?,
            stream(path, server, base, size, tput_secs)?,
        )
    };
    print_rtt_tput(path.name(), size, Some(&r), &t, wall);
    Ok(())
}

/// In-guest memcpy of `size`-byte blocks through an 8 MiB working set, for `secs`.
fn memcpy(size: usize, secs: f64) -> Res {
    const SET: usize = 8 << 20;
    if !(8..=SET / 2).contains(&size) {
        return Err(format!("SIZE must be 8..={}", SET / 2));
    }
    let mut src = vec![0u8; SET];
    fill(&mut src, 1);
    let mut dst = vec![0u8; SET];
    let blocks = SET / size;
    let per_check = (1024 * 1024 / size).max(1);
    let limit = Duration::from_secs_f64(secs);
    let (mut bytes, mut i) = (0u64, 0usize);
    let t0 = Instant::now();
    // The clock is read once per MiB: a 64-byte copy is quicker than a clock read.
    while t0.elapsed() < limit {
        for _ in 0..per_check {
            // Different source and destination blocks, walking both sets.
            let s = (i % blocks) * size;
            let d = ((i + blocks / 2) % blocks) * size;
            dst[d..d + size].copy_from_slice(black_box(&src[s..s + size]));
            black_box(&dst[d..d + size]);
            i += 1;
            bytes += size as u64;
        }
    }
    let t = Tput {
        bytes,
        secs: t0.elapsed().as_secs_f64(),
        cpu_client_s: 0.0,
        cpu_server_s: 0.0,
    };
    print_rtt_tput("memcpy", size, None, &t, t0);
    Ok(())
}

fn quit(args: &[String]) -> Res {
    let (Some(server), Some(Ok(base))) = (args.first(), args.get(1).map(|s| s.parse::<u32>()))
    else {
        return Err("usage: quit SERVER BASE [PATH]".into());
    };
    let path = match args.get(2) {
        None => Path::Dev,
        Some(p) => Path::parse(p).ok_or_else(|| format!("unknown path {p}"))?,
    };
    let c = connect(path, server, base + path.port_offset())?;
    c.send_app(&header(MODE_QUIT, 1)).map(|_| ())
}

/// Accepts `n` TCP connections on `port`, then writes one byte to each.
fn barrier_serve(port: u16, n: usize) -> Res {
    let l = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("barrier bind: {e}"))?;
    let mut waiting = Vec::new();
    while waiting.len() < n {
        let (s, _) = l.accept().map_err(|e| format!("barrier accept: {e}"))?;
        waiting.push(s);
    }
    for mut s in waiting {
        s.write_all(b"g")
            .map_err(|e| format!("barrier release: {e}"))?;
    }
    Ok(())
}

fn barrier(addr: &str, port: u16) -> Res {
    let t0 = Instant::now();
    let mut s = loop {
        match TcpStream::connect((addr, port)) {
            Ok(s) => break s,
            Err(e) if t0.elapsed() > Duration::from_secs(120) => {
                return Err(format!("barrier {addr}:{port}: {e}"))
            }
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    };
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .map_err(|e| format!("barrier {addr}:{port}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let r = match arg(1) {
        "serve" => match arg(2).parse() {
            Ok(base) => serve(base),
            Err(_) => Err("usage: serve BASE".into()),
        },
        "client" => client(&args[2..]),
        "memcpy" => match (arg(2).parse(), arg(3).parse()) {
            (Ok(size), Ok(secs)) => memcpy(size, secs),
            _ => Err("usage: memcpy SIZE SECS".into()),
        },
        "quit" => quit(&args[2..]),
        "barrier-serve" => match (arg(2).parse(), arg(3).parse()) {
            (Ok(port), Ok(n)) => barrier_serve(port, n),
            _ => Err("usage: barrier-serve PORT N".into()),
        },
        "barrier" => match arg(3).parse() {
            Ok(port) => barrier(arg(2), port),
            _ => Err("usage: barrier ADDR PORT".into()),
        },
        _ => {
            eprintln!("usage: vmcs-bench serve|client|memcpy|quit|barrier-serve|barrier ... (see the source header)");
            return ExitCode::from(2);
        }
    };
    exit_with(r, "FAIL")
}
