//! `vmcs-test`: drives the /dev/vmcs messaging ioctls and checks their semantics.
//!
//! ```text
//! vmcs-test TEST [ARGS]     run one test; exit 0 on success, 1 on failure, 2 on usage
//! vmcs-test list            print the names of the loopback tests
//! vmcs-test serve PORT N    echo server: accept N connections, echo every message back
//! vmcs-test client CID PORT run the message tests against an echo server at CID:PORT
//! vmcs-test hold CID PORT   connect (or, with CID "listen", listen on PORT) and sleep
//! vmcs-test xrecv PORT N    cross-guest receiver: poll, blocking-read wake, epoll, 10,000
//!                           ordered messages, on each of N accepted connections
//! vmcs-test xsend CID PORT  the sending side of xrecv
//! vmcs-test crash-recv PORT read until the (killed) peer's connection resets; then echo for
//!                           the restarted peer
//! vmcs-test crash-stream CID PORT   stream messages until killed
//! vmcs-test rejoin CID PORT GOFILE  echo 100 messages, wait for GOFILE, close
//! vmcs-test domains N      VMCS_IOC_OPEN_DOMAIN: domains 0..N-1 exist with their own
//!                           peer tables, domain N is ENODEV, bad flags EINVAL
//! vmcs-test soak CID PORT STOP  pipelined, pattern-checked echo exchange with `serve` until
//!                           the file STOP exists (or STOP is a number: that many messages)
//! ```
//!
//! With `VMCS_DOMAIN=N` in the environment every endpoint is opened on domain N
//! (`VMCS_IOC_OPEN_DOMAIN`) instead of the default domain 0.
//!
//! The named tests need both ends of a connection and run over loopback (`VMCS_CID_LOCAL`);
//! `serve`/`client` run the message tests between guests (`client auto PORT` tries every
//! live peer of GET_INFO).

mod bulk;

use std::ffi::CString;
use std::io::Error;
use std::os::raw::{c_int, c_ulong, c_void};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const CID_LOCAL: u32 = u32::MAX - 1;
const PORT_ANY: u32 = u32::MAX;
const MAX_MSG: usize = 64 * 1024;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct Addr {
    cid: u32,
    port: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PeerInfo {
    id: u32,
    state: u32,
    generation: u32,
    heartbeat_age_ms: u32,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct Info {
    abi_version: u32,
    domain: u32,
    local_cid: u32,
    transport: u32,
    region_size: u64,
    max_peers: u32,
    ring_size: u32,
    max_msg_size: u32,
    npeers: u32,
    peers: [PeerInfo; 64],
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Connect {
    addr: Addr,
    timeout_ms: u32,
    flags: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Accept {
    flags: u32,
    reserved: u32,
    peer: Addr,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Opts {
    mask: u32,
    nonblock: u32,
    rcvbuf: u32,
    reserved: u32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Names {
    local: Addr,
    remote: Addr,
}

const fn ioc(dir: u32, nr: u32, size: usize) -> c_ulong {
    ((dir << 30) | ((size as u32) << 16) | (0xB7 << 8) | nr) as c_ulong
}
const W: u32 = 1;
const R: u32 = 2;
const IOC_GET_INFO: c_ulong = ioc(R, 1, std::mem::size_of::<Info>());
const IOC_BIND: c_ulong = ioc(R | W, 2, 8);
const IOC_CONNECT: c_ulong = ioc(W, 3, 16);
const IOC_LISTEN: c_ulong = ioc(W, 4, 4);
const IOC_ACCEPT: c_ulong = ioc(R | W, 5, 16);
const IOC_SET_OPTS: c_ulong = ioc(W, 6, 16);
const IOC_GET_NAMES: c_ulong = ioc(R, 7, 16);
const IOC_SHUTDOWN: c_ulong = ioc(W, 8, 4);
const IOC_OPEN_DOMAIN: c_ulong = ioc(W, 0x09, 8);

type Res<T = ()> = Result<T, String>;

fn errno() -> i32 {
    Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ename(e: i32) -> String {
    format!("{} ({})", Error::from_raw_os_error(e), e)
}

/// One /dev/vmcs file.
struct Fd(c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

impl Fd {
    fn open() -> Res<Fd> {
        let p = CString::new("/dev/vmcs").unwrap();
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open /dev/vmcs: {}", ename(errno())));
        }
        let f = Fd(fd);
        match std::env::var("VMCS_DOMAIN")
            .ok()
            .and_then(|d| d.parse().ok())
        {
            Some(d) => ok("VMCS_IOC_OPEN_DOMAIN", f.open_domain(d, 0)),
            None => Ok(f),
        }
    }
    /// A new endpoint on domain `d`.
    fn open_domain(&self, d: u32, flags: u32) -> Result<Fd, i32> {
        let mut a = [d, flags];
        self.ioctl(IOC_OPEN_DOMAIN, &mut a).map(Fd)
    }
    fn ioctl<T>(&self, cmd: c_ulong, arg: &mut T) -> Result<c_int, i32> {
        // SAFETY: `arg` is a valid, properly sized struct for `cmd`.
        let r = unsafe { libc::ioctl(self.0, cmd as _, arg as *mut T as *mut c_void) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(r)
        }
    }
    fn bind(&self, port: u32) -> Result<u32, i32> {
        let mut a = Addr {
            cid: u32::MAX,
            port,
        };
        self.ioctl(IOC_BIND, &mut a)?;
        Ok(a.port)
    }
    fn listen(&self, backlog: u32) -> Result<(), i32> {
        let mut b = backlog;
        self.ioctl(IOC_LISTEN, &mut b).map(|_| ())
    }
    fn connect(&self, cid: u32, port: u32, timeout_ms: u32) -> Result<(), i32> {
        let mut c = Connect {
            addr: Addr { cid, port },
            timeout_ms,
            flags: 0,
        };
        self.ioctl(IOC_CONNECT, &mut c).map(|_| ())
    }
    fn accept(&self, flags: u32) -> Result<(Fd, Addr), i32> {
        let mut a = Accept {
            flags,
            ..Default::default()
        };
        let fd = self.ioctl(IOC_ACCEPT, &mut a)?;
        Ok((Fd(fd), a.peer))
    }
    fn opts(&self, mask: u32, nonblock: u32, rcvbuf: u32) -> Result<(), i32> {
        let mut o = Opts {
            mask,
            nonblock,
            rcvbuf,
            reserved: 0,
        };
        self.ioctl(IOC_SET_OPTS, &mut o).map(|_| ())
    }
    fn names(&self) -> Result<Names, i32> {
        let mut n = Names::default();
        self.ioctl(IOC_GET_NAMES, &mut n)?;
        Ok(n)
    }
    fn shutdown(&self, how: u32) -> Result<(), i32> {
        let mut h = how;
        self.ioctl(IOC_SHUTDOWN, &mut h).map(|_| ())
    }
    fn write(&self, buf: &[u8]) -> Result<usize, i32> {
        // SAFETY: valid buffer.
        let r = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(r as usize)
        }
    }
    fn read(&self, buf: &mut [u8]) -> Result<usize, i32> {
        // SAFETY: valid buffer.
        let r = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(r as usize)
        }
    }
    fn poll(&self, events: i16, timeout_ms: i32) -> i16 {
        let mut p = libc::pollfd {
            fd: self.0,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r <= 0 {
            0
        } else {
            p.revents
        }
    }
    fn set_nonblock(&self, on: bool) {
        // SAFETY: plain fcntl on our descriptor.
        unsafe {
            let fl = libc::fcntl(self.0, libc::F_GETFL);
            let fl = if on {
                fl | libc::O_NONBLOCK
            } else {
                fl & !libc::O_NONBLOCK
            };
            libc::fcntl(self.0, libc::F_SETFL, fl);
        }
    }
}

fn expect_err<T>(what: &str, r: Result<T, i32>, want: i32) -> Res {
    match r {
        Err(e) if e == want => Ok(()),
        Err(e) => Err(format!("{what}: got {}, want {}", ename(e), ename(want))),
        Ok(_) => Err(format!("{what}: succeeded, want {}", ename(want))),
    }
}

fn ok<T>(what: &str, r: Result<T, i32>) -> Res<T> {
    r.map_err(|e| format!("{what}: {}", ename(e)))
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// A listener on a fresh port of this guest.
fn listener(backlog: u32) -> Res<(Fd, u32)> {
    let l = Fd::open()?;
    let base = 20000 + (std::process::id() % 1000) * 20;
    let port = base + NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    ok("bind", l.bind(port))?;
    ok("listen", l.listen(backlog))?;
    Ok((l, port))
}

/// A connected pair over loopback: (client, accepted server side).
fn pair() -> Res<(Fd, Fd)> {
    let (l, port) = listener(4)?;
    let c = Fd::open()?;
    ok("connect", c.connect(CID_LOCAL, port, 0))?;
    let (s, _) = ok("accept", l.accept(0))?;
    Ok((c, s))
}

fn t_info() -> Res {
    let f = Fd::open()?;
    // SAFETY: Info is plain old data.
    let mut info: Info = unsafe { std::mem::zeroed() };
    ok("GET_INFO", f.ioctl(IOC_GET_INFO, &mut info))?;
    println!(
        "abi {} domain {} local_cid {} transport {} region {} max_peers {} ring {} max_msg {} npeers {}",
        info.abi_version,
        info.domain,
        info.local_cid,
        info.transport,
        info.region_size,
        info.max_peers,
        info.ring_size,
        info.max_msg_size,
        info.npeers
    );
    for p in &info.peers[..(info.npeers as usize).min(64)] {
        println!(
            "peer {} state {} gen {} hb_age {}",
            p.id, p.state, p.generation, p.heartbeat_age_ms
        );
    }
    if info.abi_version != 1 || info.max_msg_size != MAX_MSG as u32 || info.region_size == 0 {
        return Err("unexpected GET_INFO values".into());
    }
    Ok(())
}

/// Sends messages of many sizes each way and checks every byte.
fn sizes_on(c: &Fd, s: &Fd) -> Res {
    let mut sizes: Vec<usize> = (1..=64).collect();
    sizes.extend([
        100, 255, 256, 1000, 4063, 4064, 4065, 4096, 8191, 8192, 10000, 32768,
    ]);
    sizes.extend([65535, 65536]);
    let mut buf = vec![0u8; MAX_MSG + 16];
    for (i, &n) in sizes.iter().enumerate() {
        for (a, b, dir) in [(c, s, "c->s"), (s, c, "s->c")] {
            let msg = pattern(i as u32 * 7 + n as u32, n);
            let w = ok("write", a.write(&msg))?;
            if w != n {
                return Err(format!("{dir} write {n}: wrote {w}"));
            }
            let r = ok("read", b.read(&mut buf))?;
            if r != n || buf[..r] != msg[..] {
                return Err(format!("{dir} size {n}: read {r} bytes, content mismatch"));
            }
        }
    }
    println!(
        "{} sizes, 1 B .. 64 KiB, both ways, pattern-checked",
        sizes.len()
    );
    Ok(())
}

fn t_sizes() -> Res {
    let (c, s) = pair()?;
    sizes_on(&c, &s)
}

/// 10,000 messages in order, reader in another thread.
fn order_on(w: Fd, r: Fd, n: u32) -> Res {
    let reader = thread::spawn(move || -> Res {
        let mut buf = vec![0u8; 256];
        for i in 0..n {
            let got = ok("read", r.read(&mut buf))?;
            let len = 4 + (i as usize % 61);
            if got != len {
                return Err(format!("message {i}: {got} bytes, want {len}"));
            }
            let seq = u32::from_le_bytes(buf[..4].try_into().unwrap());
            if seq != i || buf[4..got] != pattern(i, len - 4)[..] {
                return Err(format!("message {i}: got sequence {seq} or bad content"));
            }
        }
        Ok(())
    });
    for i in 0..n {
        let len = 4 + (i as usize % 61);
        let mut m = i.to_le_bytes().to_vec();
        m.extend(pattern(i, len - 4));
        ok("write", w.write(&m))?;
    }
    reader.join().map_err(|_| "reader panicked".to_string())??;
    println!("{n} messages in order, none lost");
    Ok(())
}

fn t_order() -> Res {
    let (c, s) = pair()?;
    order_on(c, s, 10_000)
}

fn t_wake() -> Res {
    let (c, s) = pair()?;
    let t0 = Instant::now();
    let reader = thread::spawn(move || -> Res<(usize, Duration)> {
        let mut buf = [0u8; 64];
        let n = ok("blocking read", s.read(&mut buf))?;
        Ok((n, t0.elapsed()))
    });
    thread::sleep(Duration::from_millis(300));
    ok("write", c.write(b"wake up"))?;
    let (n, dt) = reader.join().map_err(|_| "reader panicked".to_string())??;
    if n != 7 || dt < Duration::from_millis(250) {
        return Err(format!("read {n} bytes after {dt:?}"));
    }
    println!("blocked read woken after {dt:?}");
    Ok(())
}

fn t_poll() -> Res {
    let (c, s) = pair()?;
    let ev = s.poll(libc::POLLIN | libc::POLLOUT, 0);
    if ev & libc::POLLIN != 0 || ev & libc::POLLOUT == 0 {
        return Err(format!("idle connection: revents {ev:#x}, want OUT only"));
    }
    // A poll that sleeps is woken by the write.
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        let r = c.write(b"x");
        (c, r)
    });
    let ev = s.poll(libc::POLLIN, 5000);
    let (c, r) = t.join().map_err(|_| "writer panicked")?;
    ok("write", r)?;
    if ev & libc::POLLIN == 0 {
        return Err(format!("after write: revents {ev:#x}, want IN"));
    }
    // epoll, edge of the same.
    // SAFETY: plain epoll calls on valid descriptors.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        let mut e = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT) as u32,
            u64: 7,
        };
        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.0, &mut e);
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let n = libc::epoll_wait(ep, out.as_mut_ptr(), 4, 1000);
        libc::close(ep);
        let (events, data) = (out[0].events, out[0].u64);
        if n != 1 || events & libc::EPOLLIN as u32 == 0 || data != 7 {
            return Err(format!("epoll: n {n} events {events:#x}"));
        }
    }
    let mut b = [0u8; 8];
    ok("read", s.read(&mut b))?;
    let ev = s.poll(libc::POLLIN, 0);
    if ev & libc::POLLIN != 0 {
        return Err("IN still set after draining".into());
    }
    // Peer shuts down: IN (EOF); peer closes: HUP.
    ok("shutdown", c.shutdown(1))?;
    let ev = s.poll(libc::POLLIN, 1000);
    if ev & libc::POLLIN == 0 {
        return Err(format!("after peer SHUT_WR: revents {ev:#x}, want IN"));
    }
    drop(c);
    let ev = s.poll(libc::POLLIN, 1000);
    if ev & libc::POLLHUP == 0 {
        return Err(format!("after peer close: revents {ev:#x}, want HUP"));
    }
    // Listener: IN when a connection is pending.
    let (l, port) = listener(4)?;
    if l.poll(libc::POLLIN, 0) != 0 {
        return Err("listener readable without a pending connection".into());
    }
    let c2 = Fd::open()?;
    ok("connect", c2.connect(CID_LOCAL, port, 0))?;
    if l.poll(libc::POLLIN, 1000) & libc::POLLIN == 0 {
        return Err("listener not readable with a pending connection".into());
    }
    println!("poll/epoll: OUT when idle, IN on message/EOF/pending accept, HUP on close");
    Ok(())
}

fn t_nonblock() -> Res {
    let (c, s) = pair()?;
    let mut b = [0u8; 16];
    s.set_nonblock(true);
    expect_err("O_NONBLOCK read", s.read(&mut b), libc::EAGAIN)?;
    s.set_nonblock(false);
    ok("SET_OPTS nonblock", s.opts(1, 1, 0))?;
    expect_err("VMCS_OPT_NONBLOCK read", s.read(&mut b), libc::EAGAIN)?;
    ok("SET_OPTS blocking", s.opts(1, 0, 0))?;
    let (l, _) = listener(1)?;
    l.set_nonblock(true);
    expect_err("nonblocking accept", l.accept(0), libc::EAGAIN)?;
    // Flow control: with a 64 KiB receive buffer and nobody reading, nonblocking writes
    // stop with EAGAIN once the credit is used up, and resume after a read.
    let (c2, s2) = {
        let (l, port) = listener(1)?;
        let c = Fd::open()?;
        ok("connect", c.connect(CID_LOCAL, port, 0))?;
        let (s, _) = ok("accept", l.accept(0))?;
        (c, s)
    };
    ok("SET_OPTS rcvbuf", s2.opts(2, 0, 64 * 1024))?;
    // The credit update reaches the writer with the next frame; give it a message.
    ok("write", s2.write(b"hi"))?;
    ok("read", c2.read(&mut b))?;
    c2.set_nonblock(true);
    let msg = vec![0x5a; 1000];
    let mut sent = 0;
    let stop = loop {
        match c2.write(&msg) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
        if sent > 1 << 20 {
            return Err("wrote 1 MiB into a 64 KiB receive buffer".into());
        }
    };
    if stop != libc::EAGAIN || !(60 * 1024..=64 * 1024).contains(&sent) {
        return Err(format!(
            "credit exhausted after {sent} bytes with {}",
            ename(stop)
        ));
    }
    let mut big = vec![0u8; MAX_MSG];
    for _ in 0..40 {
        ok("read", s2.read(&mut big))?;
    }
    ok("write after credit update", c2.write(&msg))?;
    drop(c);
    println!("EAGAIN on empty read/accept; writes stop after {sent} B of 64 KiB credit, resume after reads");
    Ok(())
}

fn t_truncate() -> Res {
    let (c, s) = pair()?;
    let m1 = pattern(1, 100);
    ok("write", c.write(&m1))?;
    ok("write", c.write(b"second"))?;
    let mut b = [0u8; 10];
    let n = ok("read", s.read(&mut b))?;
    if n != 10 || b[..] != m1[..10] {
        return Err(format!("short read returned {n}"));
    }
    let mut b2 = [0u8; 100];
    let n = ok("read", s.read(&mut b2))?;
    if &b2[..n] != b"second" {
        return Err("rest of the truncated message was not discarded".into());
    }
    println!("a 10-byte read of a 100-byte message returns 10, the rest is discarded");
    Ok(())
}

fn t_eof() -> Res {
    let (c, s) = pair()?;
    ok("write", c.write(b"last words"))?;
    ok("shutdown SHUT_WR", c.shutdown(1))?;
    expect_err("write after SHUT_WR", c.write(b"x"), libc::EPIPE)?;
    let mut b = [0u8; 64];
    let n = ok("read", s.read(&mut b))?;
    if &b[..n] != b"last words" {
        return Err("data before SHUTDOWN lost".into());
    }
    if ok("read at EOF", s.read(&mut b))? != 0 || ok("read at EOF again", s.read(&mut b))? != 0 {
        return Err("read after peer shutdown did not return 0".into());
    }
    // The other direction still works.
    ok("write back", s.write(b"still open"))?;
    let n = ok("read", c.read(&mut b))?;
    if &b[..n] != b"still open" {
        return Err("half-closed connection lost the other direction".into());
    }
    // SHUT_RD on the receiver: the writer gets EPIPE, the reader 0.
    let (c, s) = pair()?;
    ok("shutdown SHUT_RD", s.shutdown(0))?;
    expect_err(
        "write to a peer that shut reading",
        c.write(b"x"),
        libc::EPIPE,
    )?;
    if ok("read after SHUT_RD", s.read(&mut b))? != 0 {
        return Err("read after SHUT_RD did not return 0".into());
    }
    // Orderly close: the peer reads the remaining message, then EOF, then writes EPIPE.
    let (c, s) = pair()?;
    ok("write", c.write(b"bye"))?;
    drop(c);
    let n = ok("read after peer close", s.read(&mut b))?;
    if &b[..n] != b"bye" || ok("read", s.read(&mut b))? != 0 {
        return Err("orderly close: data then EOF expected".into());
    }
    expect_err("write after peer close", s.write(b"x"), libc::EPIPE)?;
    println!("SHUT_WR: peer drains then reads 0; writer EPIPE; close: data, EOF, EPIPE");
    Ok(())
}

fn t_refused() -> Res {
    let c = Fd::open()?;
    expect_err(
        "connect to an unbound port",
        c.connect(CID_LOCAL, 7777, 0),
        libc::ECONNREFUSED,
    )?;
    // The endpoint may try again.
    let (l, port) = listener(1)?;
    ok("connect again", c.connect(CID_LOCAL, port, 0))?;
    expect_err(
        "connect when connected",
        c.connect(CID_LOCAL, port, 0),
        libc::EISCONN,
    )?;
    drop(l);
    let c = Fd::open()?;
    expect_err(
        "connect to an absent peer",
        c.connect(63, 1234, 500),
        libc::EHOSTUNREACH,
    )?;
    println!("ECONNREFUSED, retry works, EISCONN, EHOSTUNREACH");
    Ok(())
}

fn t_addrinuse() -> Res {
    let a = Fd::open()?;
    let b = Fd::open()?;
    let port = ok("bind", a.bind(30001))?;
    expect_err(
        "second bind of the same port",
        b.bind(port),
        libc::EADDRINUSE,
    )?;
    expect_err("bind twice", a.bind(30002), libc::EINVAL)?;
    let any = ok("bind VMCS_PORT_ANY", b.bind(PORT_ANY))?;
    if any < 1024 || any == PORT_ANY {
        return Err(format!("auto port {any}"));
    }
    let n = ok("GET_NAMES", b.names())?;
    if n.local.port != any {
        return Err("GET_NAMES disagrees with BIND".into());
    }
    drop(a);
    let c = Fd::open()?;
    ok("bind a port freed by close", c.bind(30001))?;
    println!("EADDRINUSE, EINVAL on rebind, auto port {any}, port free after close");
    Ok(())
}

fn t_badioctl() -> Res {
    let f = Fd::open()?;
    // SAFETY: deliberately bad user pointers; the kernel must fail with EFAULT.
    let r = unsafe { libc::ioctl(f.0, IOC_GET_INFO as _, 8usize as *mut c_void) };
    if r >= 0 || errno() != libc::EFAULT {
        return Err(format!("GET_INFO to a bad pointer: {r} {}", ename(errno())));
    }
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(f.0, IOC_BIND as _, 8usize as *mut c_void) };
    if r >= 0 || errno() != libc::EFAULT {
        return Err(format!("BIND from a bad pointer: {}", ename(errno())));
    }
    let mut x = [0u8; 64];
    expect_err(
        "unknown command",
        f.ioctl(ioc(R, 0x7f, 8), &mut x),
        libc::ENOTTY,
    )?;
    expect_err(
        "wrong size",
        f.ioctl(ioc(R | W, 2, 12), &mut x),
        libc::ENOTTY,
    )?;
    expect_err("bad SET_OPTS", f.opts(1 << 5, 0, 0), libc::EINVAL)?;
    expect_err("rcvbuf too small", f.opts(2, 0, 100), libc::EINVAL)?;
    expect_err("SHUTDOWN how=3", f.shutdown(3), libc::EINVAL)?;
    let mut b = [0u8; 4];
    expect_err("read unconnected", f.read(&mut b), libc::ENOTCONN)?;
    expect_err("write unconnected", f.write(b"x"), libc::ENOTCONN)?;
    expect_err("listen unbound", f.listen(1), libc::EINVAL)?;
    expect_err("accept not listening", f.accept(0), libc::EINVAL)?;
    println!("EFAULT, ENOTTY (unknown cmd, wrong size), EINVAL, ENOTCONN");
    Ok(())
}

fn t_msgsize() -> Res {
    let (c, s) = pair()?;
    let big = vec![1u8; MAX_MSG + 1];
    expect_err("write of 64 KiB + 1", c.write(&big), libc::EMSGSIZE)?;
    ok("write of 64 KiB", c.write(&big[..MAX_MSG]))?;
    let mut b = vec![0u8; MAX_MSG * 2];
    if ok("read", s.read(&mut b))? != MAX_MSG {
        return Err("64 KiB message came back with another size".into());
    }
    if ok("write 0 bytes", c.write(&[]))? != 0 {
        return Err("empty write".into());
    }
    // A message larger than the peer's whole receive buffer can never be sent.
    ok("SET_OPTS rcvbuf 4 KiB", s.opts(2, 0, 4096))?;
    ok("write", s.write(b"credit"))?;
    ok("read", c.read(&mut b))?;
    expect_err(
        "write beyond the peer's buffer",
        c.write(&big[..8192]),
        libc::EMSGSIZE,
    )?;
    println!("EMSGSIZE above 64 KiB and above the peer's receive buffer");
    Ok(())
}

fn t_accept2() -> Res {
    let (l, port) = listener(2)?;
    let c1 = Fd::open()?;
    let c2 = Fd::open()?;
    ok("connect 1", c1.connect(CID_LOCAL, port, 0))?;
    ok("connect 2", c2.connect(CID_LOCAL, port, 0))?;
    // Backlog 2 is full now: a third gets refused.
    let c3 = Fd::open()?;
    expect_err(
        "connect beyond the backlog",
        c3.connect(CID_LOCAL, port, 0),
        libc::ECONNREFUSED,
    )?;
    let (s1, p1) = ok("accept 1", l.accept(libc::O_CLOEXEC as u32))?;
    let (s2, p2) = ok("accept 2", l.accept(libc::O_NONBLOCK as u32))?;
    let n1 = ok("names", c1.names())?;
    let n2 = ok("names", c2.names())?;
    if p1.port != n1.local.port || p2.port != n2.local.port || p1.port == p2.port {
        return Err(format!(
            "accepted peers {p1:?} {p2:?} vs {:?} {:?}",
            n1.local, n2.local
        ));
    }
    let sn = ok("names", s1.names())?;
    if sn.local.port != port || sn.remote.port != p1.port {
        return Err("accepted endpoint names".into());
    }
    // SAFETY: fcntl on our descriptors.
    let (fd1, fl2) = unsafe {
        (
            libc::fcntl(s1.0, libc::F_GETFD),
            libc::fcntl(s2.0, libc::F_GETFL),
        )
    };
    if fd1 & libc::FD_CLOEXEC == 0 || fl2 & libc::O_NONBLOCK == 0 {
        return Err("accept flags not applied".into());
    }
    ok("write 1", c1.write(b"one"))?;
    ok("write 2", c2.write(b"two"))?;
    let mut b = [0u8; 8];
    let n = ok("read 2", s2.read(&mut b))?;
    if &b[..n] != b"two" {
        return Err("message to client 2 misrouted".into());
    }
    let n = ok("read 1", s1.read(&mut b))?;
    if &b[..n] != b"one" {
        return Err("message to client 1 misrouted".into());
    }
    // Closing the listener resets a connection not yet accepted, not accepted ones.
    let c4 = Fd::open()?;
    ok("connect 3", c4.connect(CID_LOCAL, port, 0))?;
    drop(l);
    expect_err(
        "read on a connection reset by listener close",
        c4.read(&mut b),
        libc::ECONNRESET,
    )?;
    ok(
        "accepted connection survives listener close",
        s1.write(b"ok"),
    )?;
    println!(
        "two clients accepted on separate fds with their addresses; backlog refuses the third"
    );
    Ok(())
}

fn t_close_unread() -> Res {
    let (c, s) = pair()?;
    ok("write", c.write(b"never read"))?;
    drop(s);
    expect_err(
        "write to a peer that closed with unread data",
        c.write(b"x"),
        libc::ECONNRESET,
    )?;
    let mut b = [0u8; 8];
    expect_err("read after reset", c.read(&mut b), libc::ECONNRESET)?;
    let ev = c.poll(libc::POLLIN, 0);
    if ev & libc::POLLERR == 0 || ev & libc::POLLHUP == 0 {
        return Err(format!("poll after reset: {ev:#x}, want ERR|HUP"));
    }
    println!("close with unread data resets: ECONNRESET, POLLERR|POLLHUP");
    Ok(())
}

fn t_eacces() -> Res {
    // Drop CAP_NET_BIND_SERVICE from the effective set (capset, version 3).
    #[repr(C)]
    struct Hdr {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Hdr {
        version: 0x20080522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data words.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) != 0 {
            return Err(format!("capget: {}", ename(errno())));
        }
        let f = Fd::open()?;
        ok("bind 80 with the capability", f.bind(80))?;
        drop(f);
        d[0].effective &= !(1 << 10);
        if libc::syscall(libc::SYS_capset, &mut h, d.as_mut_ptr()) != 0 {
            return Err(format!("capset: {}", ename(errno())));
        }
    }
    let f = Fd::open()?;
    expect_err(
        "bind 80 without CAP_NET_BIND_SERVICE",
        f.bind(80),
        libc::EACCES,
    )?;
    ok("bind 1024 without it", f.bind(1024))?;
    println!("ports below 1024 need CAP_NET_BIND_SERVICE");
    Ok(())
}

/// A listener on `port` (backlog 16) for the cross-guest servers.
fn listen_on(port: u32) -> Res<Fd> {
    let l = Fd::open()?;
    ok("bind", l.bind(port))?;
    ok("listen", l.listen(16))?;
    println!("listening on port {port}");
    Ok(l)
}

/// Echo server for cross-guest runs.
fn serve(port: u32, n: u32) -> Res {
    let l = listen_on(port)?;
    let mut threads = Vec::new();
    for _ in 0..n {
        let (s, peer) = ok("accept", l.accept(0))?;
        eprintln!("accepted {peer:?}");
        threads.push(thread::spawn(move || {
            let mut b = vec![0u8; MAX_MSG];
            while let Ok(n) = s.read(&mut b) {
                if n == 0 || s.write(&b[..n]).is_err() {
                    break;
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Candidate server cids: the given one, or every live peer but us (`auto`).
fn candidates(cid: Option<u32>) -> Res<Vec<u32>> {
    if let Some(c) = cid {
        return Ok(vec![c]);
    }
    let f = Fd::open()?;
    // SAFETY: Info is plain old data.
    let mut info: Info = unsafe { std::mem::zeroed() };
    ok("GET_INFO", f.ioctl(IOC_GET_INFO, &mut info))?;
    Ok(info.peers[..(info.npeers as usize).min(64)]
        .iter()
        .filter(|p| p.id != info.local_cid && p.state == 2)
        .map(|p| p.id)
        .collect())
}

/// Connects to the echo server, retrying for up to a minute.
fn connect_server(cid: Option<u32>, port: u32) -> Res<(Fd, u32)> {
    let t0 = Instant::now();
    loop {
        for cid in candidates(cid)? {
            let c = Fd::open()?;
            match c.connect(cid, port, 2000) {
                Ok(()) => return Ok((c, cid)),
                Err(e) => eprintln!("connect {cid}:{port}: {}", ename(e)),
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("no echo server on port {port}"));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Message tests against an echo server.
fn client(cid: Option<u32>, port: u32) -> Res {
    let t0 = Instant::now();
    let (c, cid) = connect_server(cid, port)?;
    let mut buf = vec![0u8; MAX_MSG];
    let mut count = 0;
    for n in [
        1usize, 2, 3, 31, 32, 33, 100, 224, 225, 480, 1000, 4064, 4065, 8192, 32768, 65536,
    ] {
        let msg = pattern(n as u32, n);
        ok("write", c.write(&msg))?;
        let r = ok("read", c.read(&mut buf))?;
        if buf[..r] != msg[..] {
            return Err(format!("echo of {n} bytes: got {r} bytes, mismatch"));
        }
        count += 1;
    }
    for i in 0..2000u32 {
        let msg = pattern(i, 4 + (i as usize % 200));
        ok("write", c.write(&msg))?;
        let r = ok("read", c.read(&mut buf))?;
        if buf[..r] != msg[..] {
            return Err(format!("echo {i}: mismatch"));
        }
        count += 1;
    }
    ok("shutdown", c.shutdown(1))?;
    if ok("read EOF", c.read(&mut buf))? != 0 {
        return Err("no EOF after the server saw our shutdown".into());
    }
    println!(
        "{count} messages echoed by {cid}:{port} in {:?}",
        t0.elapsed()
    );
    Ok(())
}

/// Reads `want` from `s`, or fails with `what`.
fn expect_msg(s: &Fd, want: &[u8], what: &str) -> Res {
    let mut b = [0u8; 64];
    let n = ok(what, s.read(&mut b))?;
    if &b[..n] != want {
        return Err(format!(
            "{what}: got {:?}, want {:?}",
            String::from_utf8_lossy(&b[..n]),
            String::from_utf8_lossy(want)
        ));
    }
    Ok(())
}

/// Messages of the cross-guest order test: sequence number, then a pattern.
fn seq_msg(i: u32) -> Vec<u8> {
    let len = 4 + (i as usize % 61);
    let mut m = i.to_le_bytes().to_vec();
    m.extend(pattern(i, len - 4));
    m
}

/// Number of messages of the cross-guest order test.
const XORDER_N: u32 = 10_000;

/// Receiving side of the cross-guest tests, on one accepted connection: poll readiness,
/// a blocking read woken by the peer's write, epoll, then `XORDER_N` messages checked for
/// loss and order, then EOF.
fn cross_recv(s: Fd) -> Res<String> {
    let ev = s.poll(libc::POLLIN | libc::POLLOUT, 0);
    if ev & libc::POLLIN != 0 || ev & libc::POLLOUT == 0 {
        return Err(format!("idle connection: revents {ev:#x}, want OUT only"));
    }
    ok("write ready", s.write(b"ready"))?;
    // poll() sleeping until the other guest writes (500 ms after "ready").
    let t = Instant::now();
    let ev = s.poll(libc::POLLIN, 20_000);
    let poll_dt = t.elapsed();
    if ev & libc::POLLIN == 0 || poll_dt < Duration::from_millis(100) {
        return Err(format!(
            "poll: revents {ev:#x} after {poll_dt:?}, want IN after ~500 ms"
        ));
    }
    expect_msg(&s, b"poll", "read after poll")?;
    ok("write ack", s.write(b"ack"))?;
    // A read that blocks until the other guest writes.
    let t = Instant::now();
    expect_msg(&s, b"wake", "blocking read")?;
    let wake_dt = t.elapsed();
    if wake_dt < Duration::from_millis(100) {
        return Err(format!(
            "blocking read returned after {wake_dt:?}: did not block"
        ));
    }
    ok("write ack", s.write(b"ack"))?;
    // epoll.
    // SAFETY: plain epoll calls on valid descriptors.
    let (n, events, data) = unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        let mut e = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.0, &mut e);
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let n = libc::epoll_wait(ep, out.as_mut_ptr(), 4, 20_000);
        libc::close(ep);
        (n, out[0].events, out[0].u64)
    };
    if n != 1 || events & libc::EPOLLIN as u32 == 0 || data != 7 {
        return Err(format!("epoll: n {n} events {events:#x}"));
    }
    expect_msg(&s, b"epoll", "read after epoll")?;
    ok("write ack", s.write(b"ack"))?;
    // Sequence-numbered messages: none lost, none reordered.
    let t = Instant::now();
    let mut buf = vec![0u8; 256];
    for i in 0..XORDER_N {
        let want = seq_msg(i);
        let got = ok("read", s.read(&mut buf))?;
        if buf[..got] != want[..] {
            let seq = buf
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            return Err(format!(
                "message {i}: {got} bytes, sequence {seq:?}: lost or reordered"
            ));
        }
    }
    let order_dt = t.elapsed();
    if ok("read EOF", s.read(&mut buf))? != 0 {
        return Err("no EOF after the sender's SHUT_WR".into());
    }
    Ok(format!(
        "poll woken after {poll_dt:?}, blocking read woken after {wake_dt:?}, epoll IN, \
         {XORDER_N} messages in order in {order_dt:?}, EOF"
    ))
}

/// `xrecv PORT N`: accept N connections and run [`cross_recv`] on each.
fn xrecv(port: u32, n: u32) -> Res {
    let l = listen_on(port)?;
    let mut threads = Vec::new();
    for _ in 0..n {
        let (s, peer) = ok("accept", l.accept(0))?;
        threads.push(thread::spawn(move || (peer, cross_recv(s))));
    }
    let mut fail = None;
    for t in threads {
        let (peer, r) = t.join().map_err(|_| "receiver panicked".to_string())?;
        match r {
            Ok(m) => println!("from {}:{}: {m}", peer.cid, peer.port),
            Err(e) => {
                println!("from {}:{}: FAIL: {e}", peer.cid, peer.port);
                fail = Some(e);
            }
        }
    }
    fail.map_or(Ok(()), Err)
}

/// `xsend CID|auto PORT`: the sending side of [`cross_recv`].
fn xsend(cid: Option<u32>, port: u32) -> Res {
    let (c, cid) = connect_server(cid, port)?;
    expect_msg(&c, b"ready", "read ready")?;
    thread::sleep(Duration::from_millis(500));
    ok("write poll", c.write(b"poll"))?;
    expect_msg(&c, b"ack", "read ack")?;
    thread::sleep(Duration::from_millis(500));
    ok("write wake", c.write(b"wake"))?;
    expect_msg(&c, b"ack", "read ack")?;
    thread::sleep(Duration::from_millis(300));
    ok("write epoll", c.write(b"epoll"))?;
    expect_msg(&c, b"ack", "read ack")?;
    let t = Instant::now();
    for i in 0..XORDER_N {
        ok("write", c.write(&seq_msg(i)))?;
    }
    ok("shutdown", c.shutdown(1))?;
    let mut b = [0u8; 16];
    if ok("read EOF", c.read(&mut b))? != 0 {
        return Err("no EOF after the receiver closed".into());
    }
    println!(
        "to {cid}:{port}: poll, wake, epoll steps, {XORDER_N} sequence-numbered messages in {:?}",
        t.elapsed()
    );
    Ok(())
}

/// `crash-recv PORT`: accept one connection and read until the read fails; the peer is
/// killed mid-stream, so the read must fail with ECONNRESET within 2.5 s of the last data.
/// Then the listener must still accept (the restarted peer) and echo until EOF.
fn crash_recv(port: u32) -> Res {
    let l = Fd::open()?;
    ok("bind", l.bind(port))?;
    ok("listen", l.listen(4))?;
    println!("listening on port {port}");
    let (s, peer) = ok("accept", l.accept(0))?;
    println!("accepted {}:{}", peer.cid, peer.port);
    let mut buf = vec![0u8; MAX_MSG];
    let mut last = Instant::now();
    let mut msgs = 0u64;
    let err = loop {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("EOF after {msgs} messages, want ECONNRESET")),
            Ok(_) => {
                last = Instant::now();
                msgs += 1;
            }
            Err(e) => break e,
        }
    };
    let dt = last.elapsed();
    println!(
        "RESET-LATENCY-MS {} (read failed with {} after {msgs} messages)",
        dt.as_millis(),
        ename(err)
    );
    if err != libc::ECONNRESET || msgs == 0 || dt >= Duration::from_millis(2500) {
        return Err(format!(
            "want ECONNRESET within 2.5 s of the last data, got {} after {dt:?}",
            ename(err)
        ));
    }
    expect_err("write after reset", s.write(b"x"), libc::ECONNRESET)?;
    drop(s);
    println!("waiting for the peer to rejoin");
    let (s, peer2) = ok("accept after the reset", l.accept(0))?;
    println!(
        "accepted {}:{} (first incarnation was {})",
        peer2.cid, peer2.port, peer.cid
    );
    let mut echoed = 0u32;
    loop {
        let n = ok("read", s.read(&mut buf))?;
        if n == 0 {
            break;
        }
        ok("write", s.write(&buf[..n]))?;
        echoed += 1;
    }
    if echoed == 0 {
        return Err("the rejoined peer sent nothing".into());
    }
    println!("REJOIN-ECHOED {echoed}");
    Ok(())
}

/// `crash-stream CID|auto PORT`: connect and stream messages until killed.
fn crash_stream(cid: Option<u32>, port: u32) -> Res {
    let (c, cid) = connect_server(cid, port)?;
    let t0 = Instant::now();
    let mut i = 0u32;
    while t0.elapsed() < Duration::from_secs(600) {
        ok("write", c.write(&seq_msg(i)))?;
        i += 1;
        if i == 200 {
            println!("streaming to {cid}:{port}");
        }
        thread::sleep(Duration::from_millis(2));
    }
    Err("not killed within 10 minutes".into())
}

/// `rejoin CID|auto PORT GOFILE`: connect, echo 100 messages, print `exchanged`, wait until
/// GOFILE exists (the scenario inspects `vmcs ss` meanwhile), then close in order.
fn rejoin(cid: Option<u32>, port: u32, go: &str) -> Res {
    let (c, cid) = connect_server(cid, port)?;
    let mut buf = vec![0u8; MAX_MSG];
    for i in 0..100u32 {
        let msg = pattern(i, 10 + i as usize * 10);
        ok("write", c.write(&msg))?;
        let r = ok("read", c.read(&mut buf))?;
        if buf[..r] != msg[..] {
            return Err(format!("echo {i}: mismatch"));
        }
    }
    println!("exchanged 100 messages with {cid}:{port}");
    let t = Instant::now();
    while !std::path::Path::new(go).exists() {
        if t.elapsed() > Duration::from_secs(60) {
            return Err(format!("{go} did not appear"));
        }
        thread::sleep(Duration::from_millis(50));
    }
    ok("shutdown", c.shutdown(1))?;
    if ok("read EOF", c.read(&mut buf))? != 0 {
        return Err("no EOF after the server saw our shutdown".into());
    }
    Ok(())
}

/// `domains N`: every domain 0..N-1 opens and reports its own index and peer table; domain
/// N does not exist.
fn domains(n: u32) -> Res {
    let f = Fd::open()?;
    for d in 0..n {
        let e = ok(
            &format!("open domain {d}"),
            f.open_domain(d, libc::O_CLOEXEC as u32),
        )?;
        // SAFETY: Info is plain old data.
        let mut info: Info = unsafe { std::mem::zeroed() };
        ok("GET_INFO", e.ioctl(IOC_GET_INFO, &mut info))?;
        if info.domain != d {
            return Err(format!("domain {d}: GET_INFO says domain {}", info.domain));
        }
        let ids: Vec<u32> = info.peers[..(info.npeers as usize).min(64)]
            .iter()
            .map(|p| p.id)
            .collect();
        println!(
            "domain {d}: local cid {}, peers {ids:?}, region {} KiB",
            info.local_cid,
            info.region_size >> 10
        );
    }
    expect_err(
        "open a domain that does not exist",
        f.open_domain(n, 0),
        libc::ENODEV,
    )?;
    expect_err("open with unknown flags", f.open_domain(0, 1), libc::EINVAL)?;
    Ok(())
}

/// Message `i` of the soak exchange: sequence number, then a pattern, 4 B .. 64 KiB.
fn soak_msg(i: u32) -> Vec<u8> {
    const LENS: [usize; 9] = [4, 5, 33, 250, 1000, 4000, 8200, 20000, MAX_MSG];
    let len = LENS[i as usize % LENS.len()];
    let mut m = i.to_le_bytes().to_vec();
    m.extend(pattern(i, len - 4));
    m
}

/// `soak CID|auto PORT STOP`: against `serve`, a writer thread sends [`soak_msg`]s until the
/// file STOP exists (or, if STOP is a number, that many), then shuts down its sending side;
/// a reader thread checks every echo byte by byte, in order, until EOF. Prints `soaking`
/// once 20 messages came back intact.
fn soak(cid: Option<u32>, port: u32, stop: &str) -> Res {
    let (c, cid) = connect_server(cid, port)?;
    let count: Option<u32> = stop.parse().ok();
    let t0 = Instant::now();
    let (sent, got, bytes, gap) = thread::scope(|sc| {
        let c = &c;
        let writer = sc.spawn(move || -> Res<u32> {
            let mut i = 0u32;
            loop {
                let done = match count {
                    Some(n) => i >= n,
                    None => i >= 20 && std::path::Path::new(stop).exists(),
                };
                if done || t0.elapsed() > Duration::from_secs(300) {
                    break;
                }
                ok("write", c.write(&soak_msg(i)))?;
                i += 1;
            }
            ok("shutdown", c.shutdown(1))?;
            Ok(i)
        });
        let mut buf = vec![0u8; MAX_MSG];
        let mut got = 0u32;
        let mut bytes = 0u64;
        let mut last = Instant::now();
        let mut gap = Duration::ZERO;
        let r: Res = loop {
            let n = match c.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(format!("read after {got} messages: {}", ename(e))),
            };
            let want = soak_msg(got);
            if buf[..n] != want[..] {
                break Err(format!(
                    "echo {got}: {n} bytes, want {}: corrupt, lost or reordered",
                    want.len()
                ));
            }
            got += 1;
            bytes += n as u64;
            gap = gap.max(last.elapsed());
            last = Instant::now();
            if got == 20 {
                println!("soaking with {cid}:{port}");
            }
        };
        let sent = writer.join().map_err(|_| "writer panicked".to_string())??;
        r.map(|()| (sent, got, bytes, gap))
    })?;
    if sent != got {
        return Err(format!("sent {sent} messages, {got} came back"));
    }
    println!(
        "{got} messages ({bytes} bytes) echoed intact by {cid}:{port} in {:?}; longest wait \
         for an echo {gap:?}",
        t0.elapsed()
    );
    Ok(())
}

fn hold(args: &[String]) -> Res {
    let port: u32 = args.get(3).and_then(|s| s.parse().ok()).ok_or("PORT")?;
    let secs = 3600;
    if args.get(2).map(String::as_str) == Some("pair") {
        let (l, p) = listener(1)?;
        let _ = port;
        let c = Fd::open()?;
        ok("connect", c.connect(CID_LOCAL, p, 0))?;
        let (s, _) = ok("accept", l.accept(0))?;
        drop(l);
        drop(c);
        println!("holding an accepted fd");
        thread::sleep(Duration::from_secs(secs));
        drop(s);
        return Ok(());
    }
    let cid: u32 = args.get(2).and_then(|s| s.parse().ok()).ok_or("CID")?;
    let c = Fd::open()?;
    ok("connect", c.connect(cid, port, 0))?;
    thread::sleep(Duration::from_secs(secs));
    Ok(())
}

/// A named test: what `vmcs-test NAME` runs.
type Test = (&'static str, fn() -> Res);

const TESTS: &[Test] = &[
    ("info", t_info),
    ("sizes", t_sizes),
    ("order", t_order),
    ("wake", t_wake),
    ("poll", t_poll),
    ("nonblock", t_nonblock),
    ("truncate", t_truncate),
    ("eof", t_eof),
    ("refused", t_refused),
    ("addrinuse", t_addrinuse),
    ("badioctl", t_badioctl),
    ("msgsize", t_msgsize),
    ("accept2", t_accept2),
    ("close-unread", t_close_unread),
    ("eacces", t_eacces),
    ("bulk", bulk::t_bulk),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("");
    let r = match cmd {
        "list" => {
            for (n, _) in TESTS {
                println!("{n}");
            }
            Ok(())
        }
        "serve" => match (
            args.get(2).and_then(|s| s.parse().ok()),
            args.get(3).and_then(|s| s.parse().ok()),
        ) {
            (Some(p), Some(n)) => serve(p, n),
            _ => Err("usage: serve PORT N".into()),
        },
        "client" => match (args.get(2), args.get(3).and_then(|s| s.parse().ok())) {
            (Some(c), Some(p)) => client(if c == "auto" { None } else { c.parse().ok() }, p),
            _ => Err("usage: client CID|auto PORT".into()),
        },
        "hold" => hold(&args),
        "xrecv" => match (
            args.get(2).and_then(|s| s.parse().ok()),
            args.get(3).and_then(|s| s.parse().ok()),
        ) {
            (Some(p), Some(n)) => xrecv(p, n),
            _ => Err("usage: xrecv PORT N".into()),
        },
        "xsend" | "crash-stream" => match (args.get(2), args.get(3).and_then(|s| s.parse().ok())) {
            (Some(c), Some(p)) => {
                let cid = if c == "auto" { None } else { c.parse().ok() };
                if cmd == "xsend" {
                    xsend(cid, p)
                } else {
                    crash_stream(cid, p)
                }
            }
            _ => Err(format!("usage: {cmd} CID|auto PORT")),
        },
        "bulk-hold" => match args.get(2) {
            Some(go) => bulk::bulk_hold(go),
            None => Err("usage: bulk-hold GOFILE".into()),
        },
        "bulk-evil" => match (args.get(2).and_then(|s| s.parse().ok()), args.get(3)) {
            (Some(p), Some(stop)) => bulk::bulk_evil(p, stop),
            _ => Err("usage: bulk-evil PORT STOPFILE".into()),
        },
        "bulk-recv" => match args.get(2).and_then(|s| s.parse().ok()) {
            Some(p) => bulk::bulk_recv(p),
            None => Err("usage: bulk-recv PORT".into()),
        },
        "bulk-send" => match (args.get(2), args.get(3).and_then(|s| s.parse().ok())) {
            (Some(c), Some(p)) => {
                bulk::bulk_send(if c == "auto" { None } else { c.parse().ok() }, p)
            }
            _ => Err("usage: bulk-send CID|auto PORT".into()),
        },
        "crash-recv" => match args.get(2).and_then(|s| s.parse().ok()) {
            Some(p) => crash_recv(p),
            None => Err("usage: crash-recv PORT".into()),
        },
        "rejoin" => match (
            args.get(2),
            args.get(3).and_then(|s| s.parse().ok()),
            args.get(4),
        ) {
            (Some(c), Some(p), Some(go)) => {
                rejoin(if c == "auto" { None } else { c.parse().ok() }, p, go)
            }
            _ => Err("usage: rejoin CID|auto PORT GOFILE".into()),
        },
        "domains" => match args.get(2).and_then(|s| s.parse().ok()) {
            Some(n) => domains(n),
            None => Err("usage: domains N".into()),
        },
        "soak" => match (
            args.get(2),
            args.get(3).and_then(|s| s.parse().ok()),
            args.get(4),
        ) {
            (Some(c), Some(p), Some(stop)) => {
                soak(if c == "auto" { None } else { c.parse().ok() }, p, stop)
            }
            _ => Err("usage: soak CID|auto PORT STOPFILE|COUNT".into()),
        },
        name => match TESTS.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => f(),
            None => {
                eprintln!("usage: vmcs-test list|TEST|serve PORT N|client CID PORT|hold");
                return ExitCode::from(2);
            }
        },
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
