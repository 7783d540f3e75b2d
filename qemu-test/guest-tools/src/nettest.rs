// SPDX-License-Identifier: GPL-2.0
//! vmcs-nettest: TCP over the vmcsN net device, for the QEMU guests
//! (qemu-test/scenarios/netdev.sh). Plain std::net sockets: the point is that unmodified
//! TCP/IP programs run over vmcs0.
//!
//!   vmcs-nettest serve PORT BYTES        accept one connection, read BYTES (checked against
//!                                        the pattern of seed 1), answer BYTES (seed 2)
//!   vmcs-nettest client ADDR PORT BYTES  connect (retrying up to 60 s), send BYTES (seed
//!                                        1), read BYTES (seed 2, checked)
//!   vmcs-nettest sink PORT N             accept N connections one after the other, check
//!                                        each against seed 3 until EOF (SINK-OK) or until
//!                                        10 s without data (SINK-CUT: its sender vanished)
//!   vmcs-nettest flood ADDR PORT SECS STOPFILE [BYTES]
//!                                        send the seed-3 pattern for SECS seconds or until
//!                                        STOPFILE exists (or BYTES were sent), then close
//!   vmcs-nettest wait PORT               accept one connection, then exit (a signal)
//!   vmcs-nettest poke ADDR PORT          connect to a waiting peer (retrying up to 60 s)
//!   vmcs-nettest ethtool IFACE           what `ethtool -i` and `ethtool -S` show (busybox
//!                                        has no ethtool): `driver`, `bus`, then one
//!                                        `stat NAME VALUE` line per counter
//!
//! The data is a xorshift64 stream; the receiver compares every byte with the stream it
//! expects and prints an FNV-1a checksum of what it got (`sum`), the sender the checksum of
//! what it sent, so the scenario compares them end to end. Exit 0 only if everything
//! matched.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The pattern generator: xorshift64, one byte per step (the low byte).
struct Pattern(u64);

impl Pattern {
    fn new(seed: u64) -> Self {
        Pattern(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            *b = x as u8;
        }
    }
}

/// FNV-1a 64 over a stream of chunks.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn add(&mut self, buf: &[u8]) {
        for &b in buf {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn fail(msg: String) -> ! {
    eprintln!("vmcs-nettest: {msg}");
    std::process::exit(1);
}

/// Sends `bytes` of the pattern of `seed`; returns the checksum of what was sent.
fn send_pattern(s: &mut TcpStream, seed: u64, bytes: u64) -> std::io::Result<u64> {
    let mut p = Pattern::new(seed);
    let mut sum = Fnv::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        p.fill(&mut buf[..n]);
        sum.add(&buf[..n]);
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(sum.0)
}

/// Reads until `bytes` (or EOF if `None`), comparing with the pattern of `seed`. Returns
/// (bytes read, checksum), or an error naming the first difference.
fn recv_pattern(s: &mut TcpStream, seed: u64, bytes: Option<u64>) -> Result<(u64, u64), String> {
    let mut p = Pattern::new(seed);
    let mut sum = Fnv::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let cap = match bytes {
            Some(b) if got >= b => break,
            Some(b) => (b - got).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        let n = match s.read(&mut buf[..cap]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read after {got} bytes: {e}")),
        };
        p.fill(&mut want[..n]);
        if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
            return Err(format!("byte {} differs from the pattern", got + i as u64));
        }
        sum.add(&buf[..n]);
        got += n as u64;
    }
    Ok((got, sum.0))
}

fn connect(addr: &str, port: u16, patience: Duration) -> TcpStream {
    let start = Instant::now();
    loop {
        match TcpStream::connect((addr, port)) {
            Ok(s) => return s,
            Err(e) if start.elapsed() < patience => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => fail(format!("connect {addr}:{port}: {e}")),
        }
    }
}

/// `SIOCETHTOOL` on `iface` with `data` as the command buffer.
fn ethtool_ioctl(iface: &str, data: &mut [u8]) -> std::io::Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    // SAFETY: a plain datagram socket for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // struct ifreq: the name (16 bytes), then ifr_data (a pointer) in the union.
    let mut ifr = [0u8; 40];
    let name = iface.as_bytes();
    ifr[..name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    ifr[16..24].copy_from_slice(&(data.as_mut_ptr() as usize).to_ne_bytes());
    // SAFETY: `ifr` is a valid ifreq whose ifr_data points to `data`, which is as large as
    // the command it holds says.
    let r = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, ifr.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    if r < 0 {
        Err(err)
    } else {
        Ok(())
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap_or([0; 4]))
}

fn cstr(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

/// `ethtool -i` and `ethtool -S`: ETHTOOL_GDRVINFO, ETHTOOL_GSTRINGS, ETHTOOL_GSTATS.
fn ethtool(iface: &str) -> std::io::Result<()> {
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
    // erom_version[32], reserved2[12], n_priv_flags, n_stats, testinfo_len, eedump_len,
    // regdump_len.
    let mut info = [0u8; 196];
    info[..4].copy_from_slice(&0x3u32.to_ne_bytes());
    ethtool_ioctl(iface, &mut info)?;
    println!("driver {}", cstr(&info[4..36]));
    println!("version {}", cstr(&info[36..68]));
    println!("bus {}", cstr(&info[100..132]));
    let n = u32_at(&info, 180) as usize;
    // struct ethtool_gstrings: cmd, string_set (ETH_SS_STATS = 1), len, data[len * 32].
    let mut names = vec![0u8; 12 + n * 32];
    names[..4].copy_from_slice(&0x1bu32.to_ne_bytes());
    names[4..8].copy_from_slice(&1u32.to_ne_bytes());
    names[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
    ethtool_ioctl(iface, &mut names)?;
    // struct ethtool_stats: cmd, n_stats, data[n_stats] (u64, 8-aligned after 8 bytes).
    let mut vals = vec![0u8; 8 + n * 8];
    vals[..4].copy_from_slice(&0x1du32.to_ne_bytes());
    vals[4..8].copy_from_slice(&(n as u32).to_ne_bytes());
    ethtool_ioctl(iface, &mut vals)?;
    for i in 0..n {
        let name = cstr(&names[12 + i * 32..12 + (i + 1) * 32]);
        let v = u64::from_ne_bytes(vals[8 + i * 8..16 + i * 8].try_into().unwrap_or([0; 8]));
        println!("stat {name} {v}");
    }
    Ok(())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| fail(format!("argument {i} missing or invalid (see the source)")))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("");
    match cmd {
        "serve" => {
            let port: u16 = arg(&args, 2);
            let bytes: u64 = arg(&args, 3);
            let l = TcpListener::bind(("::", port))
                .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
                .unwrap_or_else(|e| fail(format!("bind {port}: {e}")));
            println!("listening");
            let (mut s, peer) = l.accept().unwrap_or_else(|e| fail(format!("accept: {e}")));
            let (got, sum) = recv_pattern(&mut s, 1, Some(bytes)).unwrap_or_else(|e| fail(e));
            if got != bytes {
                fail(format!("got {got} of {bytes} bytes from {peer}"));
            }
            println!("TCP-RX-OK {got} sum {sum:016x} from {peer}");
            let sent = send_pattern(&mut s, 2, bytes).unwrap_or_else(|e| fail(format!("{e}")));
            let _ = s.shutdown(Shutdown::Write);
            // Wait for the client's close, so that it has read everything.
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
            println!("TCP-TX-DONE {bytes} sum {sent:016x}");
        }
        "client" => {
            let addr: String = arg(&args, 2);
            let port: u16 = arg(&args, 3);
            let bytes: u64 = arg(&args, 4);
            let mut s = connect(&addr, port, Duration::from_secs(60));
            let sent = send_pattern(&mut s, 1, bytes).unwrap_or_else(|e| fail(format!("{e}")));
            println!("TCP-TX-DONE {bytes} sum {sent:016x}");
            let (got, sum) = recv_pattern(&mut s, 2, Some(bytes)).unwrap_or_else(|e| fail(e));
            if got != bytes {
                fail(format!("got {got} of {bytes} bytes back"));
            }
            println!("TCP-RX-OK {got} sum {sum:016x}");
        }
        "sink" => {
            let port: u16 = arg(&args, 2);
            let count: u32 = arg(&args, 3);
            let l = TcpListener::bind(("0.0.0.0", port))
                .unwrap_or_else(|e| fail(format!("bind {port}: {e}")));
            println!("listening");
            for _ in 0..count {
                let (mut s, peer) = l.accept().unwrap_or_else(|e| fail(format!("accept: {e}")));
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                match recv_pattern(&mut s, 3, None) {
                    Ok((n, sum)) => println!("SINK-OK {n} sum {sum:016x} from {peer}"),
                    Err(e) if e.contains("timed out") || e.contains("temporarily") => {
                        println!("SINK-CUT {e}")
                    }
                    Err(e) => fail(e),
                }
            }
        }
        "wait" => {
            let port: u16 = arg(&args, 2);
            let l = TcpListener::bind(("0.0.0.0", port))
                .unwrap_or_else(|e| fail(format!("bind {port}: {e}")));
            let _ = l.accept().unwrap_or_else(|e| fail(format!("accept: {e}")));
            println!("poked");
        }
        "poke" => {
            let addr: String = arg(&args, 2);
            let port: u16 = arg(&args, 3);
            drop(connect(&addr, port, Duration::from_secs(60)));
        }
        "flood" => {
            let addr: String = arg(&args, 2);
            let port: u16 = arg(&args, 3);
            let secs: u64 = arg(&args, 4);
            let stop: String = arg(&args, 5);
            let limit: u64 = if args.len() > 6 {
                arg(&args, 6)
            } else {
                u64::MAX
            };
            let mut s = connect(&addr, port, Duration::from_secs(60));
            let mut p = Pattern::new(3);
            let mut sum = Fnv::new();
            let mut buf = vec![0u8; 16 * 1024];
            let start = Instant::now();
            let mut sent = 0u64;
            println!("flooding");
            while start.elapsed() < Duration::from_secs(secs)
                && !std::path::Path::new(&stop).exists()
                && sent < limit
            {
                p.fill(&mut buf);
                sum.add(&buf);
                if let Err(e) = s.write_all(&buf) {
                    fail(format!("write after {sent} bytes: {e}"));
                }
                sent += buf.len() as u64;
            }
            let _ = s.shutdown(Shutdown::Write);
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
            println!("FLOOD-DONE {sent} sum {:016x}", sum.0);
        }
        "ethtool" => {
            let iface: String = arg(&args, 2);
            ethtool(&iface).unwrap_or_else(|e| fail(format!("SIOCETHTOOL {iface}: {e}")));
        }
        _ => fail(
            "usage: vmcs-nettest serve|client|sink|flood|wait|poke|ethtool ... (see the source)"
                .into(),
        ),
    }
}
