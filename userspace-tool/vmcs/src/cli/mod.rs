//! The `vmcs` command: argument handling, the commands, exit codes.

pub mod args;
pub mod output;
pub mod progress;

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use vmcs::bulk::{self, Bulk};
use vmcs::xfer::{self, XferError};
use vmcs::{Backend, Error, VmcsAddr, VmcsListener, VmcsStream, MAX_MSG_SIZE};

use args::{Cli, Cmd, KeyOp, ECHO_PORT};
use output::*;
use progress::Progress;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NO_MODULE: i32 = 3;
pub const EXIT_PEER: i32 = 4;
pub const EXIT_PERMISSION: i32 = 5;

/// A failed command: what to print and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub msg: String,
}

impl Failure {
    pub fn new(code: i32, msg: impl Into<String>) -> Failure {
        Failure {
            code,
            msg: msg.into(),
        }
    }
}

/// The exit status for a library error.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::ModuleNotLoaded | Error::NoDevice => EXIT_NO_MODULE,
        Error::PeerAbsent | Error::Refused => EXIT_PEER,
        Error::PermissionDenied => EXIT_PERMISSION,
        Error::TimedOut | Error::Reset | Error::Io(_) => EXIT_FAILURE,
    }
}

/// Adds "what we were doing" to an error and sorts it into an exit status.
trait Ctx<T> {
    fn ctx(self, what: impl Display) -> Result<T, Failure>;
}

impl<T> Ctx<T> for Result<T, Error> {
    fn ctx(self, what: impl Display) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(exit_code(&e), format!("{what}: {e}")))
    }
}

impl<T> Ctx<T> for Result<T, io::Error> {
    fn ctx(self, what: impl Display) -> Result<T, Failure> {
        self.map_err(Error::from).ctx(what)
    }
}

impl<T> Ctx<T> for Result<T, XferError> {
    fn ctx(self, what: impl Display) -> Result<T, Failure> {
        self.map_err(|e| match e {
            XferError::Io(e) => {
                let e = Error::from(e);
                Failure::new(exit_code(&e), format!("{what}: {e}"))
            }
            e => Failure::new(EXIT_FAILURE, format!("{what}: {e}")),
        })
    }
}

/// Runs the command line; returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    match run(&cli) {
        Ok(()) => EXIT_OK,
        Err(f) => {
            eprintln!("vmcs: {}", f.msg);
            if cli.json {
                println!("{}", error_json(&f.msg, f.code));
            }
            f.code
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let json = cli.json;
    match &cli.cmd {
        Cmd::Status => {
            let backend = Backend::detect().ctx("finding vmcs")?;
            let info = vmcs::info().ctx("asking /dev/vmcs for the domain")?;
            let version = vmcs::module_version();
            // A module without access control (ENOTTY) shows no policy line.
            let pol = vmcs::policy::get(None).ok();
            // A module without encryption answers ENOTTY: no encryption rows then.
            let crypto = vmcs::crypto::info().ok();
            // Several domains (an ivshmem device and vsock): each one's transport.
            let all = vmcs::info_all().unwrap_or_default();
            if json {
                let mut v = status_json(&backend, &info, version.as_deref());
                if let Some(p) = &pol {
                    v["policy"] = json!({ "rules": p.rules.len(), "denied": p.denied });
                }
                if all.len() > 1 {
                    v["domains"] = json!(all
                        .iter()
                        .map(|i| json!({
                            "domain": i.domain,
                            "transport": i.transport,
                            "local_cid": i.local_cid,
                        }))
                        .collect::<Vec<_>>());
                }
                if let Some(c) = crypto {
                    v["encryption"] = json!(c);
                }
                print!("{}", pretty_json(&v));
            } else {
                print!("{}", status_text(&backend, &info, version.as_deref()));
                if all.len() > 1 {
                    print!("{}", status_domains_line(&all));
                }
                if let Some(p) = &pol {
                    print!("{}", status_policy_line(p));
                }
                if let Some(c) = crypto {
                    print!("{}", crypto_text(&c));
                }
            }
            Ok(())
        }
        Cmd::Peers => {
            let info = vmcs::info().ctx("asking /dev/vmcs for the peers")?;
            // Every domain's peers, each with its transport (one domain: the default's).
            let all = match vmcs::info_all() {
                Ok(a) if a.len() > 1 => a,
                _ => vec![info],
            };
            if json {
                let peers: Vec<serde_json::Value> = all
                    .iter()
                    .flat_map(|i| {
                        i.peers.iter().map(move |p| {
                            let mut v = serde_json::to_value(p).expect("serializable");
                            v["domain"] = json!(i.domain);
                            v["transport"] = json!(i.transport);
                            v
                        })
                    })
                    .collect();
                print!("{}", pretty_json(&peers));
            } else {
                print!("{}", peers_table_all(&all));
            }
            Ok(())
        }
        Cmd::Listen {
            port,
            echo,
            keep_open,
        } => {
            let port = match (port, echo) {
                (Some(p), _) => *p,
                (None, true) => ECHO_PORT,
                (None, false) => {
                    return Err(Failure::new(EXIT_USAGE, "listen needs a PORT (or --echo)"))
                }
            };
            let l = bind(port)?;
            if *echo {
                return serve_echo(&l);
            }
            loop {
                let (s, peer) = l.accept().ctx("accepting a connection")?;
                eprintln!("vmcs: connection from {peer}");
                pump(&s, io::stdin().as_raw_fd(), &mut io::stdout().lock())
                    .ctx(format!("talking to {peer}"))?;
                if !keep_open {
                    return Ok(());
                }
            }
        }
        Cmd::Connect { addr, timeout } => {
            let s = connect(*addr, *timeout)?;
            pump(&s, io::stdin().as_raw_fd(), &mut io::stdout().lock())
                .ctx(format!("talking to {addr}"))?;
            Ok(())
        }
        Cmd::Send {
            file,
            addr,
            timeout,
        } => send(file, *addr, *timeout, json),
        Cmd::Recv {
            port,
            output,
            force,
        } => recv(*port, output.as_deref(), *force, json),
        Cmd::Ping {
            peer,
            count,
            interval,
            size,
            timeout,
            serve,
            port,
        } => {
            if *serve {
                return serve_echo(&bind(port.unwrap_or(ECHO_PORT))?);
            }
            let mut peer = peer.expect("clap requires PEER without --serve");
            if let Some(p) = port {
                peer.port = *p;
            }
            ping(peer, *count, *interval, *size, *timeout, json)
        }
        Cmd::Bench {
            peer,
            sizes,
            time,
            zero_copy: true,
            ..
        } => {
            let rows = sweep(sizes, json, |size| {
                bench_zero_copy(*peer, size, *time)
                    .ctx(format!("zero-copy bench of {size}-byte ranges with {peer}"))
            })?;
            if json {
                print!(
                    "{}",
                    pretty_json(&json!({
                        "peer": peer.to_string(),
                        "zero_copy": true,
                        "results": rows
                    }))
                );
            } else {
                print!("{}", zero_copy_table(&rows));
            }
            Ok(())
        }
        Cmd::Bench {
            peer,
            sizes,
            rounds,
            time,
            ..
        } => {
            let s = connect(*peer, Some(Duration::from_secs(5)))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .ctx("setting a timeout")?;
            let rows = sweep(sizes, json, |size| {
                bench_size(&s, size, *rounds, *time)
                    .ctx(format!("benchmarking {size}-byte messages"))
            })?;
            if json {
                print!(
                    "{}",
                    pretty_json(&json!({ "peer": peer.to_string(), "results": rows }))
                );
            } else {
                print!("{}", bench_table(&rows));
            }
            Ok(())
        }
        Cmd::Ss { debugfs } => ss(debugfs, json),
        Cmd::Policy { domain, action } => policy(*domain, action.as_ref(), json),
        Cmd::Key { op } => match op {
            KeyOp::Set { file } => {
                let mut data = Vec::new();
                match file {
                    Some(f) => File::open(f)
                        .and_then(|mut r| r.read_to_end(&mut data))
                        .ctx(format!("reading the key from {}", f.display()))?,
                    None => io::stdin()
                        .read_to_end(&mut data)
                        .ctx("reading the key from stdin")?,
                };
                let parsed = vmcs::crypto::parse_key(&data);
                data.iter_mut().for_each(|b| *b = 0);
                let mut key = parsed.map_err(|e| Failure::new(EXIT_USAGE, e))?;
                let r = vmcs::crypto::set_key(&key).ctx("installing the key");
                key.iter_mut().for_each(|b| *b = 0);
                r?;
                if !json {
                    eprintln!("vmcs: key installed");
                }
                Ok(())
            }
            KeyOp::Clear => {
                vmcs::crypto::clear_key().ctx("removing the key")?;
                if !json {
                    eprintln!("vmcs: key removed");
                }
                Ok(())
            }
        },
        Cmd::Encrypt { policy } => {
            vmcs::crypto::set_policy(*policy).ctx("setting the encryption policy")?;
            if !json {
                eprintln!("vmcs: encryption policy {}", policy.name());
            }
            Ok(())
        }
    }
}

/// Sorts a policy call's error into a message and an exit status.
fn policy_failure(what: &str, e: vmcs::policy::PolicyError) -> Failure {
    use vmcs::policy::PolicyError;
    let e = match e {
        PolicyError::Open(e) => return Failure::new(exit_code(&e), format!("{what}: {e}")),
        PolicyError::Ioctl(e) => e,
    };
    let (code, why) = match e.raw_os_error() {
        Some(libc::EPERM) => (
            EXIT_PERMISSION,
            "permission denied: changing the policy needs CAP_NET_ADMIN (EPERM)".to_string(),
        ),
        Some(libc::EEXIST) => (EXIT_FAILURE, "that rule is already there (EEXIST)".into()),
        Some(libc::ENOENT) => (
            EXIT_FAILURE,
            "no such rule (ENOENT): deny removes an allow rule exactly as `vmcs policy` shows it"
                .into(),
        ),
        Some(libc::ENOSPC) => (
            EXIT_FAILURE,
            format!(
                "the policy table is full ({} rules per domain, ENOSPC)",
                vmcs::sys::VMCS_POLICY_MAX_RULES
            ),
        ),
        Some(libc::ENOTTY) => (
            EXIT_FAILURE,
            "this vmcs module has no access control (ENOTTY)".into(),
        ),
        Some(libc::ENODEV) => (EXIT_NO_MODULE, "no such domain (ENODEV)".into()),
        _ => (EXIT_FAILURE, e.to_string()),
    };
    Failure::new(code, format!("{what}: {why}"))
}

/// Applies `op` to each rule in order; the first failure stops, naming the rule and, when
/// there were several, how many had gone through (those stay).
fn each_rule(
    rules: &[vmcs::policy::Rule],
    verb: &str,
    done: &str,
    mut op: impl FnMut(&vmcs::policy::Rule) -> Result<(), vmcs::policy::PolicyError>,
) -> Result<(), Failure> {
    for (i, r) in rules.iter().enumerate() {
        op(r).map_err(|e| {
            let what = if rules.len() > 1 {
                format!("{verb} {r} ({i} of {} {done} before it)", rules.len())
            } else {
                format!("{verb} {r}")
            };
            policy_failure(&what, e)
        })?;
    }
    Ok(())
}

/// `vmcs policy`: show, or change and then show.
fn policy(
    domain: Option<u32>,
    action: Option<&args::PolicyCmd>,
    json: bool,
) -> Result<(), Failure> {
    use args::PolicyCmd;
    use vmcs::policy::{self as p, Rule};
    let parse = |l: &args::ListArg, t: &str| {
        Rule::parse((*l).into(), t).map_err(|e| Failure::new(EXIT_USAGE, e))
    };
    match action {
        None | Some(PolicyCmd::Show) => {}
        Some(PolicyCmd::Allow { list, targets }) => {
            let rules = targets
                .iter()
                .map(|t| parse(list, t))
                .collect::<Result<Vec<Rule>, _>>()?;
            each_rule(&rules, "allowing", "added", |r| p::allow(domain, r))?;
        }
        Some(PolicyCmd::Deny { list, targets }) => {
            let rules = targets
                .iter()
                .map(|t| parse(list, t))
                .collect::<Result<Vec<Rule>, _>>()?;
            each_rule(&rules, "removing", "removed", |r| p::remove(domain, r))?;
        }
        Some(PolicyCmd::Clear { list }) => p::clear(domain, list.map(Into::into))
            .map_err(|e| policy_failure("clearing the policy", e))?,
        Some(PolicyCmd::Reset { list }) => p::reset(domain, list.map(Into::into))
            .map_err(|e| policy_failure("resetting the policy", e))?,
    }
    let pol = p::get(domain).map_err(|e| policy_failure("reading the policy", e))?;
    if json {
        print!("{}", pretty_json(&pol));
    } else {
        print!("{}", policy_text(&pol));
    }
    Ok(())
}

/// One row per size of a `vmcs bench` sweep, saying on stderr when each is done.
fn sweep<R>(
    sizes: &[usize],
    json: bool,
    mut one: impl FnMut(usize) -> Result<R, Failure>,
) -> Result<Vec<R>, Failure> {
    let mut rows = Vec::new();
    for &size in sizes {
        rows.push(one(size)?);
        if !json {
            eprintln!("vmcs: {} done", bytes(size as u64));
        }
    }
    Ok(rows)
}

fn bind(port: u32) -> Result<VmcsListener, Failure> {
    let l = VmcsListener::bind(VmcsAddr::any(port)).ctx(format!("listening on port {port}"))?;
    let local = l.local_addr().unwrap_or(VmcsAddr::any(port));
    eprintln!("vmcs: listening on {local}");
    Ok(l)
}

fn connect(addr: VmcsAddr, timeout: Option<Duration>) -> Result<VmcsStream, Failure> {
    match timeout {
        Some(t) => VmcsStream::connect_timeout(addr, t),
        None => VmcsStream::connect(addr),
    }
    .ctx(format!("connecting to {addr}"))
}

/// Copies `input` to the stream (one message per read) and the stream to `out`, both ways
/// until both are done: end of `input` shuts down our sending side, and the peer's end of
/// stream (EOF) ends the receiving side while `input` still goes on being sent, so a
/// half-close loses nothing either way. Returns early if the peer closes completely (hang-up
/// after its EOF: what we would send cannot arrive). Returns (sent, received) bytes.
pub fn pump(s: &VmcsStream, input: RawFd, out: &mut dyn Write) -> io::Result<(u64, u64)> {
    let mut buf = vec![0u8; MAX_MSG_SIZE];
    let (mut sent, mut received) = (0u64, 0u64);
    let mut input_open = true;
    let mut net_open = true;
    while input_open || net_open {
        let mut fds = [
            libc::pollfd {
                fd: s.as_raw_fd(),
                // After the peer's EOF only a hang-up or an error (always reported) matter.
                events: if net_open { libc::POLLIN } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: input,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let n = if input_open { 2 } else { 1 };
        // SAFETY: n valid pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), n, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            if !net_open {
                break;
            }
            let n = s.recv(&mut buf)?;
            if n == 0 {
                net_open = false;
                continue;
            }
            out.write_all(&buf[..n])?;
            out.flush()?;
            received += n as u64;
        }
        if input_open && fds[1].revents != 0 {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(input, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                input_open = false;
                match s.shutdown(Shutdown::Write) {
                    Ok(()) => {}
                    Err(Error::Io(e)) if e.raw_os_error() == Some(libc::ENOTCONN) => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                s.send(&buf[..n as usize])?;
                sent += n as u64;
            }
        }
    }
    Ok((sent, received))
}

/// Sends every message back until the peer ends the stream.
pub fn echo_conn(s: &VmcsStream) -> io::Result<u64> {
    let mut buf = vec![0u8; MAX_MSG_SIZE];
    let mut msgs = 0;
    loop {
        let n = s.recv(&mut buf)?;
        if n == 0 {
            return Ok(msgs);
        }
        if msgs == 0 && buf[..n] == ZERO_COPY_MAGIC[..] {
            return bulk_sink(s);
        }
        s.send(&buf[..n])?;
        msgs += 1;
    }
}

/// The first message of a `vmcs bench --zero-copy` connection: the echo service then
/// becomes a bulk sink for it ([`bulk_sink`]).
pub const ZERO_COPY_MAGIC: &[u8; 16] = b"vmcs-bulk-sink-1";

/// Sum of the little-endian u64 words of `b` (a tail shorter than a word is added byte by
/// byte): what the sink computes while reading a range in place.
fn word_sum(b: &[u8]) -> u64 {
    let mut chunks = b.chunks_exact(8);
    let mut x = 0u64;
    for c in &mut chunks {
        x = x.wrapping_add(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
    }
    for &t in chunks.remainder() {
        x = x.wrapping_add(u64::from(t));
    }
    x
}

/// A bulk sink: sets up a one-page extent, receives ranges in batches, reads each in place
/// (its [`word_sum`], no copy out), hands them back in batches, and at end of file
/// answers `BYTES RANGES SUM` (decimal, decimal, hex). Returns the ranges received.
fn bulk_sink(s: &VmcsStream) -> io::Result<u64> {
    let b = Bulk::setup(s, 4096, Duration::from_secs(10))?;
    let (mut bytes, mut ranges, mut sum) = (0u64, 0u64, 0u64);
    loop {
        let rs = b.recv_many(bulk::MAX_BATCH)?;
        if rs.is_empty() {
            break;
        }
        for r in &rs {
            let (o, n) = (r.off as usize, r.len as usize);
            let data = b.rx().get(o..o + n).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "range outside the extent")
            })?;
            sum = sum.wrapping_add(word_sum(data));
            bytes += n as u64;
        }
        ranges += rs.len() as u64;
        let mut done = 0;
        while done < rs.len() {
            done += b.release_many(&rs[done..])?;
        }
    }
    drop(b);
    s.send(format!("{bytes} {ranges} {sum:x}").as_bytes())?;
    Ok(ranges)
}

/// Zero-copy throughput of `size`-byte ranges to a bulk sink at `peer` for `time`: the
/// largest extent this guest's slice holds, cut into slots of `size` bytes (at most 64),
/// lent half the extent per `BULK_SENDV` while the sink reads the other half; the sink's
/// byte count and sum must match what was lent.
pub fn bench_zero_copy(peer: VmcsAddr, size: usize, time: Duration) -> io::Result<ZeroCopyRow> {
    let s = VmcsStream::connect_with(Backend::Device, peer, Some(Duration::from_secs(5)))
        .map_err(io::Error::other)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io::Error::other)?;
    s.send(ZERO_COPY_MAGIC)?;
    let mut want = 16u32 << 20;
    let mut b = loop {
        match Bulk::setup(&s, want, Duration::from_secs(10)) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && want > 4096 => want /= 2,
            r => break r?,
        }
    };
    let ext = b.tx_mut().len();
    let slots = (ext / size).clamp(1, bulk::MAX_BATCH);
    if ext < size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("ranges of {size} bytes do not fit this guest's {ext}-byte extent"),
        ));
    }
    let half = (slots / 2).max(1);
    let msg: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ 0x5a)
        .collect();
    let per_range = word_sum(&msg);
    let start = Instant::now();
    let mut lent = 0u64;
    while start.elapsed() < time {
        let first = (lent as usize % slots) / half * half;
        let k = half.min(slots - first);
        let (off, len) = (first * size, k * size);
        b.wait(off as u32, len as u32)?;
        let mut ranges = Vec::with_capacity(k);
        for i in 0..k {
            let o = off + i * size;
            b.tx_mut()[o..o + size].copy_from_slice(&msg);
            ranges.push(bulk::Range {
                off: o as u32,
                len: size as u32,
            });
        }
        let mut sent = 0;
        while sent < k {
            sent += b.send_many(&ranges[sent..])?;
        }
        lent += k as u64;
    }
    drop(b);
    s.shutdown(Shutdown::Write).map_err(io::Error::other)?;
    let mut reply = [0u8; 128];
    let n = s.recv(&mut reply)?;
    let secs = start.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&reply[..n]).into_owned();
    let expect = format!(
        "{} {lent} {:x}",
        lent * size as u64,
        per_range.wrapping_mul(lent)
    );
    if text != expect {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the sink answered {text:?}, expected {expect:?}"),
        ));
    }
    Ok(ZeroCopyRow {
        size,
        extent: ext,
        ranges: lent,
        ranges_per_s: lent as f64 / secs,
        bytes_per_s: (lent * size as u64) as f64 / secs,
    })
}

/// The echo service: a thread per connection, forever.
fn serve_echo(l: &VmcsListener) -> Result<(), Failure> {
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                eprintln!("vmcs: echo: connection from {peer}");
                std::thread::spawn(move || match echo_conn(&s) {
                    Ok(n) => eprintln!("vmcs: echo: {peer} done after {n} messages"),
                    Err(e) => eprintln!("vmcs: echo: {peer}: {}", Error::from(e)),
                });
            }
            Err(e @ (Error::ModuleNotLoaded | Error::NoDevice)) => return Err(e).ctx("accepting"),
            Err(e) => eprintln!("vmcs: echo: accept: {e}"),
        }
    }
}

fn send(file: &Path, addr: VmcsAddr, timeout: Option<Duration>, json: bool) -> Result<(), Failure> {
    let mut f = File::open(file).ctx(format!("opening {}", file.display()))?;
    let meta = f.metadata().ctx(format!("reading {}", file.display()))?;
    if !meta.is_file() {
        return Err(Failure::new(
            EXIT_FAILURE,
            format!("{}: not a regular file", file.display()),
        ));
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let s = connect(addr, timeout)?;
    let mut p = Progress::new("send", meta.len(), json);
    let r = xfer::send_file(&s, &mut f, &name, meta.len(), &mut |d| p.update(d));
    p.finish();
    let digest = r.ctx(format!("sending {} to {addr}", file.display()))?;
    report_transfer("sent", &name, meta.len(), p.elapsed(), &digest, addr, json);
    Ok(())
}

fn report_transfer(
    verb: &str,
    name: &str,
    size: u64,
    t: Duration,
    digest: &[u8],
    peer: VmcsAddr,
    json: bool,
) {
    let (secs, digest) = (t.as_secs_f64(), xfer::hex(digest));
    if json {
        println!("{}", transfer_json(name, size, secs, &digest, peer));
    } else {
        println!("{}", transfer_text(verb, name, size, secs, &digest, peer));
    }
}

/// A safe file name from the sender's: its last component, or a fixed fallback.
pub fn safe_name(sent: &str) -> String {
    match Path::new(sent).file_name().and_then(|n| n.to_str()) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => "vmcs-recv.out".to_string(),
    }
}

fn recv(port: u32, output: Option<&Path>, force: bool, json: bool) -> Result<(), Failure> {
    let l = bind(port)?;
    let (s, peer) = l.accept().ctx("accepting a connection")?;
    let h = xfer::recv_header(&s).ctx(format!("receiving from {peer}"))?;
    let mut p = Progress::new("recv", h.size, json);
    if output == Some(Path::new("-")) {
        let r = xfer::recv_body(&s, &h, &mut io::stdout().lock(), &mut |d| p.update(d));
        p.finish();
        let d = r.ctx(format!("receiving from {peer}"))?;
        if json {
            eprintln!(
                "{}",
                json!({ "file": h.name, "bytes": h.size, "sha256": xfer::hex(&d) })
            );
        }
        return Ok(());
    }
    let dest: PathBuf = match output {
        Some(o) if o.is_dir() => o.join(safe_name(&h.name)),
        Some(o) => o.to_path_buf(),
        None => PathBuf::from(safe_name(&h.name)),
    };
    if dest.exists() && !force {
        let why = format!("{} exists on the receiver", dest.display());
        xfer::reject(&s, &why);
        return Err(Failure::new(
            EXIT_FAILURE,
            format!("{why} (use -f to overwrite, or -o)"),
        ));
    }
    let fname = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{fname}.vmcs-part"));
    let f = match File::create(&tmp) {
        Ok(f) => f,
        Err(e) => {
            xfer::reject(&s, &format!("cannot create {}: {e}", tmp.display()));
            return Err(e).ctx(format!("creating {}", tmp.display()));
        }
    };
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let r = xfer::recv_body(&s, &h, &mut w, &mut |d| p.update(d));
    p.finish();
    let r = r.and_then(|d| {
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(d)
    });
    match r {
        Ok(d) => {
            fs::rename(&tmp, &dest).ctx(format!(
                "renaming {} to {}",
                tmp.display(),
                dest.display()
            ))?;
            report_transfer(
                "received",
                &dest.display().to_string(),
                h.size,
                p.elapsed(),
                &d,
                peer,
                json,
            );
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e).ctx(format!("receiving from {peer}"))
        }
    }
}

/// What happened to one ping.
#[derive(Debug, PartialEq)]
pub enum PingEvent {
    Reply {
        seq: u64,
        bytes: usize,
        rtt: Duration,
    },
    Timeout {
        seq: u64,
    },
}

/// Sends `count` pings of `size` bytes (>= 16) `interval` apart over `s` (whose read
/// timeout bounds the wait for each reply); reports each to `event`.
pub fn ping_loop(
    s: &VmcsStream,
    count: u32,
    interval: Duration,
    size: usize,
    event: &mut dyn FnMut(PingEvent),
) -> io::Result<(u32, Vec<Duration>)> {
    let mut msg = vec![0u8; size];
    for (i, b) in msg.iter_mut().enumerate().skip(8) {
        *b = i as u8;
    }
    let mut buf = vec![0u8; MAX_MSG_SIZE];
    let mut rtts = Vec::new();
    let start = Instant::now();
    let mut sent = 0;
    for seq in 0..u64::from(count) {
        if seq > 0 {
            let next = start + interval * seq as u32;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        let t0 = Instant::now();
        s.send(&msg)?;
        sent += 1;
        loop {
            match s.recv(&mut buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the echo service closed the connection",
                    ))
                }
                Ok(n) => {
                    let rseq = u64::from_le_bytes(buf[..8.min(n)].try_into().unwrap_or([0xff; 8]));
                    if n >= 8 && rseq < seq {
                        continue; // a late reply to a ping that timed out
                    }
                    if n != size || buf[..n] != msg[..] {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("reply {n} bytes does not match ping {seq} (is the peer an echo service?)"),
                        ));
                    }
                    let rtt = t0.elapsed();
                    rtts.push(rtt);
                    event(PingEvent::Reply { seq, bytes: n, rtt });
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    event(PingEvent::Timeout { seq });
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok((sent, rtts))
}

fn ping(
    peer: VmcsAddr,
    count: u32,
    interval: Duration,
    size: usize,
    timeout: Duration,
    json: bool,
) -> Result<(), Failure> {
    if !(16..=MAX_MSG_SIZE).contains(&size) {
        return Err(Failure::new(
            EXIT_USAGE,
            format!("--size must be 16 .. {MAX_MSG_SIZE}"),
        ));
    }
    if timeout.is_zero() {
        return Err(Failure::new(EXIT_USAGE, "--timeout must not be 0"));
    }
    let s = connect(peer, Some(timeout))?;
    s.set_read_timeout(Some(timeout))
        .ctx("setting the timeout")?;
    if !json {
        println!("VMCS PING {peer}: {size} bytes");
    }
    let start = Instant::now();
    let (sent, rtts) = ping_loop(&s, count, interval, size, &mut |e| {
        if json {
            return;
        }
        match e {
            PingEvent::Reply { seq, bytes, rtt } => {
                println!("{bytes} bytes from {peer}: seq={seq} time={} ms", ms(rtt))
            }
            PingEvent::Timeout { seq } => {
                println!("no reply to seq={seq} within {} ms", timeout.as_millis())
            }
        }
    })
    .ctx(format!("pinging {peer}"))?;
    let received = rtts.len() as u32;
    let summary = PingSummary {
        peer: peer.to_string(),
        size,
        sent,
        received,
        loss_percent: if sent == 0 {
            0.0
        } else {
            100.0 * f64::from(sent - received) / f64::from(sent)
        },
        time_ms: start.elapsed().as_secs_f64() * 1e3,
        rtt: RttStats::from_samples(&rtts),
    };
    if json {
        print!("{}", pretty_json(&summary));
    } else {
        print!("\n{}", ping_summary_text(&summary));
    }
    if sent > 0 && received == 0 {
        return Err(Failure::new(EXIT_FAILURE, format!("no reply from {peer}")));
    }
    Ok(())
}

/// Latency (`rounds` ping-pongs) and throughput (a window of messages in flight for `time`)
/// of `size`-byte messages against an echo service.
pub fn bench_size(
    s: &VmcsStream,
    size: usize,
    rounds: u32,
    time: Duration,
) -> io::Result<BenchRow> {
    let msg = vec![0xA5u8; size];
    let mut buf = vec![0u8; MAX_MSG_SIZE];
    let echo = |buf: &mut [u8]| -> io::Result<()> {
        match s.recv(buf)? {
            n if n == size => Ok(()),
            0 => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the echo service closed the connection",
            )),
            n => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("echo of {size} bytes came back as {n}"),
            )),
        }
    };
    let mut rtts = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds.max(1) {
        let t0 = Instant::now();
        s.send(&msg)?;
        echo(&mut buf)?;
        rtts.push(t0.elapsed());
    }
    // Keep the window within 64 KiB each way so the echo service never blocks on us.
    let window = (MAX_MSG_SIZE / size).clamp(1, 16);
    for _ in 0..window {
        s.send(&msg)?;
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < time {
        echo(&mut buf)?;
        done += 1;
        s.send(&msg)?;
    }
    let secs = start.elapsed().as_secs_f64();
    for _ in 0..window {
        echo(&mut buf)?;
    }
    Ok(BenchRow {
        size,
        rounds: rounds.max(1),
        rtt: RttStats::from_samples(&rtts).expect("at least one round"),
        msgs_per_s: done as f64 / secs,
        bytes_per_s: (done * size as u64) as f64 / secs,
        window,
    })
}

fn ss(dir: &Path, json: bool) -> Result<(), Failure> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Failure::new(
                EXIT_PERMISSION,
                format!(
                    "{}: permission denied: debugfs is for root only",
                    dir.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = dir.parent().unwrap_or(Path::new("/"));
            let mounted = fs::read_dir(parent)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            return Err(if !mounted {
                Failure::new(
                    EXIT_FAILURE,
                    format!(
                        "debugfs is not mounted at {}: mount -t debugfs none {0}",
                        parent.display()
                    ),
                )
            } else if !Path::new("/sys/module/vmcs").exists() {
                Failure::new(EXIT_NO_MODULE, Error::ModuleNotLoaded.to_string())
            } else {
                Failure::new(
                    EXIT_FAILURE,
                    format!(
                        "{} does not exist: this vmcs module publishes no connection table \
                         (kernel without CONFIG_DEBUG_FS, or an older module)",
                        dir.display()
                    ),
                )
            });
        }
        Err(e) => return Err(e).ctx(format!("reading {}", dir.display())),
    };
    let mut domains: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path().join("connections"),
            )
        })
        .filter(|(_, p)| p.exists())
        .collect();
    domains.sort();
    let mut tables = Vec::new();
    for (name, path) in &domains {
        let mut text = String::new();
        File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .ctx(format!("reading {}", path.display()))?;
        tables.push(parse_connections(name, &text).map_err(|e| Failure::new(EXIT_FAILURE, e))?);
    }
    if json {
        print!("{}", pretty_json(&ss_json(&tables)));
    } else if tables.iter().all(|t| t.rows.is_empty()) {
        println!(
            "no vmcs connections ({} domain(s) in {})",
            tables.len(),
            dir.display()
        );
    } else {
        print!("{}", ss_table(&tables));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn pair() -> (VmcsStream, VmcsStream) {
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

    fn echo_peer() -> (VmcsStream, std::thread::JoinHandle<io::Result<u64>>) {
        let (a, b) = pair();
        (a, std::thread::spawn(move || echo_conn(&b)))
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&Error::ModuleNotLoaded), EXIT_NO_MODULE);
        assert_eq!(exit_code(&Error::NoDevice), EXIT_NO_MODULE);
        assert_eq!(exit_code(&Error::PeerAbsent), EXIT_PEER);
        assert_eq!(exit_code(&Error::Refused), EXIT_PEER);
        assert_eq!(exit_code(&Error::PermissionDenied), EXIT_PERMISSION);
        assert_eq!(exit_code(&Error::TimedOut), EXIT_FAILURE);
        let f = Err::<(), _>(io::Error::from_raw_os_error(libc::EHOSTUNREACH))
            .ctx("connecting to 5:1")
            .unwrap_err();
        assert_eq!(f.code, EXIT_PEER);
        assert!(
            f.msg.starts_with("connecting to 5:1: peer absent"),
            "{}",
            f.msg
        );
    }

    #[test]
    fn ping_against_echo() {
        let (a, echo) = echo_peer();
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut events = Vec::new();
        let (sent, rtts) = ping_loop(&a, 3, Duration::from_millis(1), 100, &mut |e| {
            events.push(e)
        })
        .unwrap();
        assert_eq!((sent, rtts.len(), events.len()), (3, 3, 3));
        assert!(matches!(
            events[2],
            PingEvent::Reply {
                seq: 2,
                bytes: 100,
                ..
            }
        ));
        drop(a);
        assert_eq!(echo.join().unwrap().unwrap(), 3);
    }

    #[test]
    fn ping_timeout_counts_as_lost() {
        let (a, _silent) = pair();
        a.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut events = Vec::new();
        let (sent, rtts) = ping_loop(&a, 2, Duration::ZERO, 16, &mut |e| events.push(e)).unwrap();
        assert_eq!((sent, rtts.len()), (2, 0));
        assert_eq!(
            events,
            vec![PingEvent::Timeout { seq: 0 }, PingEvent::Timeout { seq: 1 }]
        );
    }

    #[test]
    fn bench_against_echo() {
        let (a, _echo) = echo_peer();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for size in [64, MAX_MSG_SIZE] {
            let r = bench_size(&a, size, 20, Duration::from_millis(30)).unwrap();
            assert_eq!((r.size, r.rounds), (size, 20));
            assert!(r.msgs_per_s > 0.0 && r.rtt.max_ms >= r.rtt.min_ms);
            assert_eq!(r.window, if size == 64 { 16 } else { 1 });
        }
    }

    #[test]
    fn pump_both_directions() {
        let (a, b) = pair();
        let mut p = [0; 2];
        // SAFETY: valid out array.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        // SAFETY: fresh fds we own.
        let (rd, mut wr) = unsafe { (File::from_raw_fd(p[0]), File::from_raw_fd(p[1])) };
        wr.write_all(b"to peer").unwrap();
        drop(wr); // stdin ends: pump shuts down our writing side.
        let peer = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"to peer");
            assert_eq!(b.recv(&mut buf).unwrap(), 0);
            b.send(b"from peer").unwrap();
        });
        let mut out = Vec::new();
        let (sent, received) = pump(&a, rd.as_raw_fd(), &mut out).unwrap();
        peer.join().unwrap();
        assert_eq!(out, b"from peer");
        assert_eq!((sent, received), (7, 9));
    }

    #[test]
    fn pump_keeps_sending_after_the_peers_eof() {
        let (a, b) = pair();
        let mut p = [0; 2];
        // SAFETY: valid out array.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        // SAFETY: fresh fds we own.
        let (rd, mut wr) = unsafe { (File::from_raw_fd(p[0]), File::from_raw_fd(p[1])) };
        // The peer sends and ends its side first; our input comes later.
        b.send(b"early").unwrap();
        b.shutdown(Shutdown::Write).unwrap();
        let feeder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            wr.write_all(b"late input").unwrap();
        });
        let peer = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"late input");
            assert_eq!(b.recv(&mut buf).unwrap(), 0);
        });
        let mut out = Vec::new();
        let (sent, received) = pump(&a, rd.as_raw_fd(), &mut out).unwrap();
        feeder.join().unwrap();
        peer.join().unwrap();
        assert_eq!(out, b"early");
        assert_eq!((sent, received), (10, 5));
    }

    #[test]
    fn pump_ends_when_the_peer_hangs_up() {
        let (a, b) = pair();
        let mut p = [0; 2];
        // SAFETY: valid out array.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        // SAFETY: fresh fds we own; the write end stays open (a silent terminal).
        let (rd, _wr) = unsafe { (File::from_raw_fd(p[0]), File::from_raw_fd(p[1])) };
        b.send(b"bye").unwrap();
        drop(b);
        let mut out = Vec::new();
        let (sent, received) = pump(&a, rd.as_raw_fd(), &mut out).unwrap();
        assert_eq!((out.as_slice(), sent, received), (&b"bye"[..], 0, 3));
    }

    #[test]
    fn safe_names() {
        assert_eq!(safe_name("disk.img"), "disk.img");
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("/abs/x"), "x");
        assert_eq!(safe_name(".."), "vmcs-recv.out");
        assert_eq!(safe_name(""), "vmcs-recv.out");
    }

    #[test]
    fn ss_reads_a_fake_debugfs() {
        let d = std::env::temp_dir().join(format!("vmcs-ss-{}", std::process::id()));
        fs::create_dir_all(d.join("0")).unwrap();
        fs::write(
            d.join("0/connections"),
            "local remote state\n2:5 3:9 established\n",
        )
        .unwrap();
        assert!(ss(&d, false).is_ok());
        assert!(ss(&d, true).is_ok());
        fs::write(d.join("0/connections"), "local remote state\n2:5 3:9\n").unwrap();
        assert_eq!(ss(&d, false).unwrap_err().code, EXIT_FAILURE);
        fs::remove_dir_all(&d).unwrap();
        assert!(ss(&d, false).is_err());
    }
}
