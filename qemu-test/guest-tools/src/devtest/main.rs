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
//! vmcs-test crash-bulk-recv PORT    hold a crashing peer's bulk range; its stale mapping
//!                                   must read zeros, also once the restarted peer lends anew
//! vmcs-test crash-bulk-send CID PORT HEXBYTE   lend a 64 KiB extent filled with HEXBYTE
//! vmcs-test rejoin CID PORT GOFILE  echo 100 messages, wait for GOFILE, close
//! vmcs-test domains N      VMCS_IOC_OPEN_DOMAIN: domains 0..N-1 exist with their own
//!                           peer tables, domain N is ENODEV, bad flags EINVAL
//! vmcs-test region CMD      the first ivshmem region's header through sysfs resource2
//!                           (vmcs unbound): fresh, version, slot0 (region.rs)
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

mod badbuf;
mod bulk;
mod crash;
mod cross;
mod domains;
mod errors;
mod messages;
mod region;
mod soak;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};

use vmcs_guest_tools::dev::Fd;
use vmcs_guest_tools::sys::{VMCS_CID_LOCAL, VMCS_MAX_MSG_SIZE, VMCS_PORT_ANY};
use vmcs_guest_tools::{cid_arg, ename, exit_with, Res};

use crash::{crash_recv, crash_stream, hold, rejoin};
use cross::{client, serve, xrecv, xsend};
use domains::domains;
use errors::{t_accept2, t_addrinuse, t_badioctl, t_close_unread, t_eacces, t_msgsize, t_refused};
use messages::{t_eof, t_info, t_nonblock, t_order, t_poll, t_sizes, t_truncate, t_wake};
use soak::soak;

const CID_LOCAL: u32 = VMCS_CID_LOCAL;
const PORT_ANY: u32 = VMCS_PORT_ANY;
const MAX_MSG: usize = VMCS_MAX_MSG_SIZE as usize;

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
    ("badbuf", badbuf::t_badbuf),
    ("bulk-batch", bulk::t_bulk_batch),
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
            (Some(c), Some(p)) => client(cid_arg(c), p),
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
                let cid = cid_arg(c);
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
            (Some(c), Some(p)) => bulk::bulk_send(cid_arg(c), p),
            _ => Err("usage: bulk-send CID|auto PORT".into()),
        },
        "crash-bulk-recv" => match args.get(2).and_then(|s| s.parse().ok()) {
            Some(p) => bulk::crash_bulk_recv(p),
            None => Err("usage: crash-bulk-recv PORT".into()),
        },
        "crash-bulk-send" => match (
            args.get(2),
            args.get(3).and_then(|s| s.parse().ok()),
            args.get(4)
                .and_then(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).ok()),
        ) {
            (Some(c), Some(p), Some(b)) => bulk::crash_bulk_send(cid_arg(c), p, b),
            _ => Err("usage: crash-bulk-send CID|auto PORT HEXBYTE".into()),
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
            (Some(c), Some(p), Some(go)) => rejoin(cid_arg(c), p, go),
            _ => Err("usage: rejoin CID|auto PORT GOFILE".into()),
        },
        "region" => match args.get(2) {
            Some(c) => region::region(c),
            None => Err("usage: region fresh|version|slot0".into()),
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
            (Some(c), Some(p), Some(stop)) => soak(cid_arg(c), p, stop),
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
    exit_with(r, "FAIL")
}
