//! The differential suite (`vmcs-socktest diff`, `diff-serve`, `diff-cross`): every case
//! runs against AF_VSOCK over the vsock loopback transport (cid 1, `VMADDR_CID_LOCAL`) and
//! against AF_VMCS, over loopback and (cases with a server) between two guests, in the
//! same guest. A case records what a program sees (return values, errnos, signals, poll
//! masks, bytes received) as lines of text; the lines of each AF_VMCS run must equal those
//! of the AF_VSOCK run, or the case must be listed in [`DOCUMENTED`] with the section of
//! docs/sockets.md that explains the difference. Anything else fails.

mod cases;

use std::fmt::Write as _;
use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use libc::{c_int, c_void, socklen_t};
use vmcs_guest_tools::{errno, Res};

use crate::sock::family as vmcs_family;

/// `AF_VSOCK`.
pub(crate) const AF_VSOCK: c_int = 40;
/// The option level vsock programs use (`AF_VSOCK`).
pub(crate) const SOL_AF_VSOCK: c_int = 40;

/// Which socket family, and where the peer of a case with a server lives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// AF_VSOCK over the loopback transport.
    Vsock,
    /// AF_VMCS over loopback (`VMCS_CID_LOCAL`).
    VmcsLo,
    /// AF_VMCS, servers on another guest (`diff-serve` at `base`).
    VmcsCross { peer: u32, base: u32 },
}

/// One run's environment.
#[derive(Clone, Copy)]
pub(crate) struct Env {
    pub(crate) kind: Kind,
    pub(crate) family: c_int,
    /// The cid that reaches this guest (vsock: 1; AF_VMCS: `VMCS_CID_LOCAL`).
    pub(crate) local: u32,
    /// This guest's own cid as `getsockname` may show it (AF_VMCS: its peer id).
    pub(crate) own: u32,
}

impl Env {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Vsock => "vsock-loopback",
            Kind::VmcsLo => "vmcs-loopback",
            Kind::VmcsCross { .. } => "vmcs-cross-guest",
        }
    }

    /// A cid as the cases print it: symbolic where the families number differently
    /// (docs/sockets.md "Addresses").
    pub(crate) fn cid(&self, c: u32) -> String {
        if c == u32::MAX {
            "ANY".into()
        } else if c == self.local || (self.kind != Kind::Vsock && c == self.own) {
            "SELF".into()
        } else if let Kind::VmcsCross { peer, .. } = self.kind {
            // The guest serving the case: where a loopback run finds its own cid.
            if c == peer {
                "SELF".into()
            } else {
                format!("{c}")
            }
        } else {
            format!("{c}")
        }
    }

    /// The cid and port of a server of `kind` for a case: a thread of this process on a
    /// free port over loopback, or guest 0's `diff-serve` port for it.
    pub(crate) fn server(&self, ty: c_int, kind: Serve) -> Res<(u32, u32)> {
        match self.kind {
            Kind::VmcsCross { peer, base } => Ok((peer, base + kind.offset(ty))),
            _ => {
                let l = S::new(*self, ty)?;
                l.bind(u32::MAX, u32::MAX)?;
                vsock_buffer(&l, kind);
                sysr("listen", l.listen(16))?;
                let port = l.name(false).1.svm_port;
                thread::spawn(move || serve_one(l, kind));
                Ok((self.local, port))
            }
        }
    }
}

/// What a server does with each connection (cross-guest: port `base + offset`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Serve {
    /// Echoes until end of file, then closes.
    Echo,
    /// Writes `WRITE_CLOSE` bytes and closes at once.
    WriteClose,
    /// Shuts its sending side at once, then echoes.
    ShutWr,
    /// Reads nothing; closes when the client closes (or after 10 s).
    Silent,
}

/// Bytes the `WriteClose` server writes.
pub(crate) const WRITE_CLOSE: usize = 3000;
/// Kinds served across guests, in port order; stream on `base + i`, seqpacket on
/// `base + 16 + i`. `base + 15` has no listener.
const SERVES: [Serve; 4] = [Serve::Echo, Serve::WriteClose, Serve::ShutWr, Serve::Silent];
/// The cross-guest port offset where nothing listens.
pub(crate) const NO_LISTENER: u32 = 15;

impl Serve {
    fn offset(self, ty: c_int) -> u32 {
        let i = SERVES.iter().position(|&k| k == self).unwrap_or(0) as u32;
        if ty == libc::SOCK_SEQPACKET {
            16 + i
        } else {
            i
        }
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// The silent server's listener (inherited by its connections) asks for vsock's default
/// receive buffer, 256 KiB, with `SO_VM_SOCKETS_BUFFER_SIZE`, as a vsock program that wants
/// that credit would: vsock already has it; AF_VMCS (default 4 MiB: docs/sockets.md
/// "Differences") takes it although the option already reads 256 KiB. So the credit case
/// compares what a sender queues against the same credit on both families, and fails if
/// the request is ignored (AF_VMCS would then queue 4 MiB and more).
fn vsock_buffer(l: &S, kind: Serve) {
    if kind == Serve::Silent {
        let size: u64 = 256 << 10;
        l.setopt(SOL_AF_VSOCK, 0 /* SO_VM_SOCKETS_BUFFER_SIZE */, &size);
    }
}

/// Serves connections of listener `l` the way `kind` says (each in a thread).
fn serve_one(l: S, kind: Serve) {
    loop {
        let (fd, _) = l.accept(0);
        if fd < 0 {
            // The guard's SO_RCVTIMEO ends an idle accept with EAGAIN: keep serving.
            if matches!(errno(), libc::EINTR | libc::EAGAIN) {
                continue;
            }
            return;
        }
        let c = S::adopt(fd, l.env);
        thread::spawn(move || serve_conn(c, kind));
    }
}

fn serve_conn(c: S, kind: Serve) {
    let mut b = vec![0u8; 65536];
    match kind {
        Serve::WriteClose => {
            let _ = c.send(&pattern(WRITE_CLOSE), libc::MSG_NOSIGNAL);
        }
        Serve::Silent => {
            let _ = fd_poll(c.fd, libc::POLLRDHUP, 10_000);
        }
        Serve::Echo | Serve::ShutWr => {
            if kind == Serve::ShutWr {
                // SAFETY: plain syscall.
                unsafe { libc::shutdown(c.fd, libc::SHUT_WR) };
            }
            loop {
                let n = c.recv(&mut b, 0);
                if n <= 0 {
                    break;
                }
                if kind == Serve::Echo && c.send(&b[..n as usize], libc::MSG_NOSIGNAL) != n {
                    break;
                }
            }
        }
    }
}

/// `diff-serve BASE`: guest 0's servers for `diff-cross`, until killed.
pub(crate) fn diff_serve(base: u32) -> Res {
    let env = Env {
        kind: Kind::VmcsLo,
        family: vmcs_family()?,
        local: crate::sock::CID_LOCAL,
        own: 0,
    };
    for ty in [libc::SOCK_STREAM, libc::SOCK_SEQPACKET] {
        for kind in SERVES {
            let l = S::new(env, ty)?;
            l.bind(u32::MAX, base + kind.offset(ty))?;
            vsock_buffer(&l, kind);
            sysr("listen", l.listen(64))?;
            thread::spawn(move || serve_one(l, kind));
        }
    }
    println!("diff-serve ready");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// A socket of a case (closed on drop).
pub(crate) struct S {
    pub(crate) fd: c_int,
    pub(crate) env: Env,
}

impl Drop for S {
    fn drop(&mut self) {
        if self.fd >= 0 {
            // SAFETY: we own the descriptor.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// A syscall result as a case records it: the value, or `-1 ENAME`.
pub(crate) fn ret(r: isize) -> String {
    if r < 0 {
        format!("-1 {}", ename(errno()))
    } else {
        format!("{r}")
    }
}

fn sysr(what: &str, r: c_int) -> Res<c_int> {
    if r < 0 {
        Err(format!("{what}: {}", ename(errno())))
    } else {
        Ok(r)
    }
}

/// The errno's name (`ECONNRESET`), or its number.
pub(crate) fn ename(e: c_int) -> String {
    let names: &[(c_int, &str)] = &[
        (libc::EPERM, "EPERM"),
        (libc::EINTR, "EINTR"),
        (libc::EBADF, "EBADF"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EACCES, "EACCES"),
        (libc::EFAULT, "EFAULT"),
        (libc::ENODEV, "ENODEV"),
        (libc::EINVAL, "EINVAL"),
        (libc::EPIPE, "EPIPE"),
        (libc::ERANGE, "ERANGE"),
        (libc::ENOTSOCK, "ENOTSOCK"),
        (libc::EDESTADDRREQ, "EDESTADDRREQ"),
        (libc::EMSGSIZE, "EMSGSIZE"),
        (libc::EPROTOTYPE, "EPROTOTYPE"),
        (libc::ENOPROTOOPT, "ENOPROTOOPT"),
        (libc::EPROTONOSUPPORT, "EPROTONOSUPPORT"),
        (libc::ESOCKTNOSUPPORT, "ESOCKTNOSUPPORT"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
        (libc::EADDRINUSE, "EADDRINUSE"),
        (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
        (libc::ENETUNREACH, "ENETUNREACH"),
        (libc::ECONNABORTED, "ECONNABORTED"),
        (libc::ECONNRESET, "ECONNRESET"),
        (libc::ENOBUFS, "ENOBUFS"),
        (libc::EISCONN, "EISCONN"),
        (libc::ENOTCONN, "ENOTCONN"),
        (libc::ESHUTDOWN, "ESHUTDOWN"),
        (libc::ETIMEDOUT, "ETIMEDOUT"),
        (libc::ECONNREFUSED, "ECONNREFUSED"),
        (libc::EHOSTUNREACH, "EHOSTUNREACH"),
        (libc::EALREADY, "EALREADY"),
        (libc::EINPROGRESS, "EINPROGRESS"),
    ];
    names
        .iter()
        .find(|(n, _)| *n == e)
        .map_or(format!("errno{e}"), |(_, s)| s.to_string())
}

/// Poll bits as text (`IN|OUT|HUP`).
pub(crate) fn mask(m: i16) -> String {
    let bits: &[(i16, &str)] = &[
        (libc::POLLIN, "IN"),
        (libc::POLLPRI, "PRI"),
        (libc::POLLOUT, "OUT"),
        (libc::POLLERR, "ERR"),
        (libc::POLLHUP, "HUP"),
        (libc::POLLNVAL, "NVAL"),
        (libc::POLLRDHUP, "RDHUP"),
    ];
    let v: Vec<&str> = bits
        .iter()
        .filter(|(b, _)| m & b != 0)
        .map(|(_, s)| *s)
        .collect();
    if v.is_empty() {
        "0".into()
    } else {
        v.join("|")
    }
}

fn fd_poll(fd: c_int, events: i16, ms: c_int) -> (c_int, i16) {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    (r, p.revents)
}

/// The events every mask a case records asks for.
pub(crate) const ALL: i16 = libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP | libc::POLLPRI;

impl S {
    pub(crate) fn new(env: Env, ty: c_int) -> Res<Self> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(env.family, ty | libc::SOCK_CLOEXEC, 0) };
        let s = Self {
            fd: sysr("socket", fd)?,
            env,
        };
        s.guard();
        Ok(s)
    }
    /// Owns an accepted descriptor (guarded as [`Self::new`]'s).
    pub(crate) fn adopt(fd: c_int, env: Env) -> Self {
        let s = Self { fd, env };
        if fd >= 0 {
            s.guard();
        }
        s
    }
    /// A case must never hang: every socket waits at most 5 s in `recv`, `send` and `accept`
    /// (cases that look at the timeouts set their own).
    pub(crate) fn guard(&self) {
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        self.setopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv);
        self.setopt(libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv);
    }
    pub(crate) fn addr(&self, cid: u32, port: u32) -> libc::sockaddr_vm {
        // SAFETY: all-zero is a valid sockaddr_vm.
        let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        a.svm_family = self.env.family as libc::sa_family_t;
        a.svm_cid = cid;
        a.svm_port = port;
        a
    }
    pub(crate) fn raw_bind(&self, a: &libc::sockaddr_vm, len: usize) -> isize {
        // SAFETY: `a` is valid for `len` <= its size.
        unsafe {
            libc::bind(
                self.fd,
                (a as *const libc::sockaddr_vm).cast(),
                len as socklen_t,
            ) as isize
        }
    }
    pub(crate) fn bind(&self, cid: u32, port: u32) -> Res {
        sysr(
            "bind",
            self.raw_bind(&self.addr(cid, port), size_of::<libc::sockaddr_vm>()) as c_int,
        )?;
        Ok(())
    }
    pub(crate) fn raw_connect(&self, a: &libc::sockaddr_vm, len: usize) -> isize {
        // SAFETY: `a` is valid for `len` bytes.
        unsafe {
            libc::connect(
                self.fd,
                (a as *const libc::sockaddr_vm).cast(),
                len as socklen_t,
            ) as isize
        }
    }
    pub(crate) fn connect(&self, cid: u32, port: u32) -> isize {
        self.raw_connect(&self.addr(cid, port), size_of::<libc::sockaddr_vm>())
    }
    pub(crate) fn listen(&self, n: c_int) -> c_int {
        // SAFETY: plain syscall.
        unsafe { libc::listen(self.fd, n) }
    }
    pub(crate) fn accept(&self, flags: c_int) -> (c_int, libc::sockaddr_vm) {
        // SAFETY: zeroed is valid.
        let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_vm>() as socklen_t;
        // SAFETY: `a` has room for `len` bytes.
        let fd = unsafe {
            libc::accept4(
                self.fd,
                (&mut a as *mut libc::sockaddr_vm).cast(),
                &mut len,
                flags | libc::SOCK_CLOEXEC,
            )
        };
        (fd, a)
    }
    pub(crate) fn name(&self, peer: bool) -> (isize, libc::sockaddr_vm) {
        // SAFETY: zeroed is valid.
        let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_vm>() as socklen_t;
        let p = (&mut a as *mut libc::sockaddr_vm).cast();
        // SAFETY: `a` has room for `len` bytes.
        let r = unsafe {
            if peer {
                libc::getpeername(self.fd, p, &mut len)
            } else {
                libc::getsockname(self.fd, p, &mut len)
            }
        };
        (r as isize, a)
    }
    pub(crate) fn send(&self, b: &[u8], flags: c_int) -> isize {
        // SAFETY: `b` is valid.
        unsafe { libc::send(self.fd, b.as_ptr().cast(), b.len(), flags) }
    }
    pub(crate) fn recv(&self, b: &mut [u8], flags: c_int) -> isize {
        // SAFETY: `b` is valid.
        unsafe { libc::recv(self.fd, b.as_mut_ptr().cast(), b.len(), flags) }
    }
    pub(crate) fn recvmsg(&self, b: &mut [u8], flags: c_int) -> (isize, c_int) {
        vmcs_guest_tools::fd::recvmsg(self.fd, b, flags)
    }
    pub(crate) fn shutdown(&self, how: c_int) -> isize {
        // SAFETY: plain syscall.
        unsafe { libc::shutdown(self.fd, how) as isize }
    }
    pub(crate) fn setopt<T>(&self, level: c_int, opt: c_int, v: &T) -> isize {
        self.setopt_len(level, opt, v, size_of::<T>())
    }
    pub(crate) fn setopt_len<T>(&self, level: c_int, opt: c_int, v: &T, len: usize) -> isize {
        // SAFETY: `v` is valid for `len` <= its size bytes (callers pass at most that).
        unsafe {
            libc::setsockopt(
                self.fd,
                level,
                opt,
                (v as *const T).cast::<c_void>(),
                len as socklen_t,
            ) as isize
        }
    }
    /// getsockopt into `len` bytes: (return, bytes as little-endian u64 of what came back,
    /// the length reported).
    pub(crate) fn getopt(&self, level: c_int, opt: c_int, len: usize) -> (isize, Vec<u8>) {
        let mut v = vec![0u8; len.max(1)];
        let mut l = len as socklen_t;
        // SAFETY: `v` has room for `len` bytes.
        let r = unsafe {
            libc::getsockopt(self.fd, level, opt, v.as_mut_ptr().cast(), &mut l) as isize
        };
        v.truncate(if r == 0 { l as usize } else { 0 });
        (r, v)
    }
    pub(crate) fn getint(&self, level: c_int, opt: c_int) -> String {
        let (r, v) = self.getopt(level, opt, 4);
        if r < 0 {
            return ret(r);
        }
        let mut b = [0u8; 4];
        b[..v.len().min(4)].copy_from_slice(&v[..v.len().min(4)]);
        format!("{}", i32::from_ne_bytes(b))
    }
    pub(crate) fn poll(&self, events: i16, ms: c_int) -> String {
        let (r, ev) = fd_poll(self.fd, events, ms);
        if r < 0 {
            ret(r as isize)
        } else {
            mask(ev)
        }
    }
    /// Waits (at most 5 s) until `want` shows, then records the whole mask at once: the
    /// vsock loopback transport delivers from a work queue, so state changes come late.
    pub(crate) fn settle(&self, want: i16) -> String {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            let (_, ev) = fd_poll(self.fd, want, 100);
            if ev & want != 0 {
                break;
            }
        }
        // Let the rest of a burst of frames land too.
        thread::sleep(Duration::from_millis(20));
        self.poll(ALL, 0)
    }
    pub(crate) fn nonblock(&self, on: bool) {
        vmcs_guest_tools::fd::set_nonblock(self.fd, on);
    }
    pub(crate) fn ioctl_int(&self, req: libc::Ioctl) -> String {
        let mut v: c_int = -1;
        // SAFETY: `v` has room for an int.
        let r = unsafe { libc::ioctl(self.fd, req, &mut v) };
        if r < 0 {
            ret(r as isize)
        } else {
            format!("{v}")
        }
    }
}

/// SIGPIPEs seen (the handler counts them).
static SIGPIPES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigpipe(_: c_int) {
    SIGPIPES.fetch_add(1, SeqCst);
}

fn install_sigpipe() {
    // SAFETY: installs a handler that only touches an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigpipe as *const () as usize;
        libc::sigaction(libc::SIGPIPE, &sa, std::ptr::null_mut());
    }
}

/// What one case saw in one family: lines of text.
#[derive(Default)]
pub(crate) struct Obs {
    lines: Vec<String>,
    sigpipes: usize,
}

impl Obs {
    fn new() -> Self {
        Self {
            lines: Vec::new(),
            sigpipes: SIGPIPES.load(SeqCst),
        }
    }
    /// Records `what: value`.
    pub(crate) fn put(&mut self, what: &str, v: impl std::fmt::Display) {
        self.lines.push(format!("{what}: {v}"));
    }
    /// Records a syscall result.
    pub(crate) fn r(&mut self, what: &str, r: isize) {
        self.put(what, ret(r));
    }
    /// Records the SIGPIPEs since the last call.
    pub(crate) fn signals(&mut self, what: &str) {
        let now = SIGPIPES.load(SeqCst);
        self.put(&format!("{what} SIGPIPE"), now - self.sigpipes);
        self.sigpipes = now;
    }
    /// Records received bytes: their count and whether they are `expect`.
    pub(crate) fn bytes(&mut self, what: &str, n: isize, got: &[u8], expect: &[u8]) {
        if n < 0 {
            self.r(what, n);
            return;
        }
        let n = n as usize;
        let same = got.get(..n) == expect.get(..n) && n <= expect.len();
        self.put(
            what,
            format!("{n} {}", if same { "bytes-match" } else { "bytes-DIFFER" }),
        );
    }
}

/// A case: its name, whether it needs a server only (then it also runs across guests),
/// and its body.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) cross: bool,
    pub(crate) run: fn(&Env, &mut Obs) -> Res,
}

/// Differences that stay, each explained in docs/sockets.md "Differences from AF_VSOCK"
/// (the last field names the item): the case, and the steps whose results may differ. A
/// difference in any other step of the case, or a different number of steps, is not
/// documented and fails; a listed case that matches is reported, not failed.
const DOCUMENTED: &[(&str, &[&str], &str)] = &[
    ("socket-dgram", &["socket dgram"], "no SOCK_DGRAM"),
    (
        "bind",
        &["getsockname unbound", "getsockname bound"],
        "getsockname shows this guest's peer id",
    ),
    (
        "getname-connected",
        &["getsockname"],
        "getsockname shows this guest's peer id",
    ),
    (
        "seqpacket-messages",
        &[
            "recvmsg MSG_PEEK",
            "recvmsg 3 of 5",
            "recvmsg 2 of 6, MSG_TRUNC",
            "send 64 KiB + 1",
        ],
        "every message is a record (MSG_EOR); messages of at most 64 KiB",
    ),
    (
        "close-with-unread-data",
        &[
            "poll after the peer closed with unread data",
            "recv",
            "send",
            "SO_ERROR",
        ],
        "close with unread data resets the connection",
    ),
    (
        "bad-buffers",
        &[
            "stream send from a bad buffer",
            "seqpacket send from a bad buffer",
            "seqpacket recv after it",
        ],
        "a send from a bad buffer is EFAULT; a seqpacket recv into one keeps the message",
    ),
    (
        "msg-zerocopy-error-queue",
        &["completions"],
        "MSG_ZEROCOPY copies (SO_EE_CODE_ZEROCOPY_COPIED)",
    ),
];

/// The step of a recorded line (`what` of `what: value`).
fn step(line: &str) -> &str {
    line.split_once(": ").map_or(line, |(w, _)| w)
}

/// Whether every difference between `base` and `got` is in a step `allowed` lists.
fn only_in(base: &[String], got: &[String], allowed: &[&str]) -> bool {
    base.len() == got.len()
        && base
            .iter()
            .zip(got)
            .all(|(b, g)| b == g || (step(b) == step(g) && allowed.contains(&step(b))))
}

fn run_case(env: &Env, c: &Case) -> Vec<String> {
    // Progress, for a case that hangs (stderr is the guest's console in a dev run).
    eprintln!("diff: {} ({})", c.name, env.name());
    let t0 = Instant::now();
    let mut o = Obs::new();
    if let Err(e) = (c.run)(env, &mut o) {
        o.put("case error", e);
    }
    eprintln!(
        "diff: {} ({}) took {} ms",
        c.name,
        env.name(),
        t0.elapsed().as_millis()
    );
    o.lines
}

/// Runs every case in the given environments; prints the comparison and the table; Err
/// when a difference is not documented.
fn compare(envs: &[Env], cross_only: bool) -> Res {
    install_sigpipe();
    let (mut run, mut same, mut documented, mut bad) = (0, 0, 0, 0);
    let mut report = String::new();
    for c in cases::CASES.iter().filter(|c| !cross_only || c.cross) {
        let base = run_case(&envs[0], c);
        for env in &envs[1..] {
            if matches!(env.kind, Kind::VmcsCross { .. }) && !c.cross {
                continue;
            }
            run += 1;
            let got = run_case(env, c);
            if got == base {
                same += 1;
                let _ = writeln!(report, "match: {} ({})", c.name, env.name());
                continue;
            }
            let doc = DOCUMENTED
                .iter()
                .find(|(n, steps, _)| *n == c.name && only_in(&base, &got, steps));
            if let Some((_, _, why)) = doc {
                documented += 1;
                let _ = writeln!(report, "documented: {} ({}): {why}", c.name, env.name());
            } else {
                bad += 1;
                let _ = writeln!(report, "DIFFERENT: {} ({})", c.name, env.name());
            }
            for (i, l) in base.iter().enumerate() {
                let g = got.get(i).map_or("(nothing)", String::as_str);
                if g != l {
                    let _ = writeln!(report, "   {}: {l}", envs[0].name());
                    let _ = writeln!(report, "   {}: {g}", env.name());
                }
            }
            for g in got.iter().skip(base.len()) {
                let _ = writeln!(report, "   {}: (nothing)", envs[0].name());
                let _ = writeln!(report, "   {}: {g}", env.name());
            }
        }
    }
    print!("{report}");
    println!(
        "differential table ({}):",
        envs.iter().map(Env::name).collect::<Vec<_>>().join(" vs ")
    );
    println!("  cases run                  {run}");
    println!("  cases that match           {same}");
    println!("  documented differences     {documented}");
    println!("  undocumented differences   {bad}");
    if bad > 0 {
        return Err(format!("{bad} undocumented difference(s) from AF_VSOCK"));
    }
    Ok(())
}

fn own_cid() -> Res<u32> {
    let s = crate::sock::Sock::new(libc::SOCK_STREAM)?;
    s.bind(crate::sock::CID_ANY, crate::sock::PORT_ANY)?;
    Ok(s.name(false)?.svm_cid)
}

fn vsock_env() -> Env {
    Env {
        kind: Kind::Vsock,
        family: AF_VSOCK,
        local: libc::VMADDR_CID_LOCAL,
        own: libc::VMADDR_CID_LOCAL,
    }
}

/// `diff`: every case, AF_VSOCK loopback vs AF_VMCS loopback.
pub(crate) fn diff() -> Res {
    let vmcs = Env {
        kind: Kind::VmcsLo,
        family: vmcs_family()?,
        local: crate::sock::CID_LOCAL,
        own: own_cid()?,
    };
    compare(&[vsock_env(), vmcs], false)
}

/// `diff-cross PEER BASE`: the cases with a server, AF_VSOCK loopback vs AF_VMCS against
/// guest `PEER`'s `diff-serve BASE`.
/// `PEER` `None` (`auto`): the first peer whose `BASE` port answers.
pub(crate) fn diff_cross(peer: Option<u32>, base: u32) -> Res {
    let own = own_cid()?;
    let mut probe = Env {
        kind: Kind::VmcsLo,
        family: vmcs_family()?,
        local: crate::sock::CID_LOCAL,
        own,
    };
    // Wait for the servers (guest 0's diff-serve).
    let t0 = Instant::now();
    let peer = 'found: loop {
        for p in peer.map_or(0..64, |p| p..p + 1).filter(|&p| p != own) {
            let s = S::new(probe, libc::SOCK_STREAM)?;
            if s.connect(p, base) == 0 {
                break 'found p;
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("no diff-serve on port {base}"));
        }
        thread::sleep(Duration::from_millis(300));
    };
    println!("diff-serve found on peer {peer}");
    probe.kind = Kind::VmcsCross { peer, base };
    compare(&[vsock_env(), probe], true)
}
