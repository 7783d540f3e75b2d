// SPDX-License-Identifier: GPL-2.0
//! vmcs-socktest: AF_VMCS socket tests for the QEMU guests (qemu-test/scenarios/sockets.sh).
//!
//!   vmcs-socktest list                 names of the loopback tests
//!   vmcs-socktest TEST                 run one loopback test (exit 0 = pass)
//!   vmcs-socktest serve PORT N         guest 0: serve N clients (stream echo on PORT,
//!                                      seqpacket echo on PORT+1)
//!   vmcs-socktest client PORT          run the cross-guest tests against a server
//!   vmcs-socktest vsock-echo-server PORT / vsock-echo-client PORT
//!                                      a plain AF_VSOCK echo, only the family changed
//!   vmcs-socktest hold                 keep a connected pair open (rmmod tests)
//!   vmcs-socktest scale-serve PORT N BYTES / scale-client PORT N BYTES
//!                                      N connections at once, BYTES each, fairness
//!   vmcs-socktest burst-serve PORT N BYTES / burst-client PORT N BYTES
//!                                      BYTES written on N connections, closed, then rmmod:
//!                                      the peer still reads everything
//!   vmcs-socktest rxcap-serve PORT N / rxcap-client PORT N
//!                                      N unread connections flood a receiver with a small
//!                                      rx_mem_max_kb: some are reset, a fresh one works
//!   vmcs-socktest held-serve PORT / held-client PORT
//!                                      receive by reference: a slow reader's frames are
//!                                      copied out, another connection on the ring flows
//!   vmcs-socktest fastclose-serve PORT N BYTES / fastclose-client PORT N BYTES
//!                                      N connections, each written and closed at once by
//!                                      the server: every connect succeeds, data then EOF
//!   vmcs-socktest diff                 the differential suite: every case against AF_VSOCK
//!                                      (loopback transport) and AF_VMCS over loopback
//!   vmcs-socktest diff-serve BASE      guest 0: the servers of diff-cross (ports BASE..+32)
//!   vmcs-socktest diff-cross PEER|auto BASE
//!                                      the cases with a server: AF_VSOCK loopback against
//!                                      AF_VMCS to guest PEER's diff-serve
//!   vmcs-socktest crash-serve PORT / crash-connect PORT / crash-rejoin PORT
//!                                      peer death (crash scenario): ECONNRESET, connect
//!                                      timeout, surviving listener
//!   vmcs-socktest fair-sink PORT N / fair-send CID PORT BYTES [STOPFILE]
//!                                      the netdev scenario's fairness check: N streams
//!                                      read to EOF; BYTES sent (or until STOPFILE exists)
//!   vmcs-socktest vt-client CID PORT / vt-hold PORT / vt-reset CID PORT / vt-echo1 PORT /
//!                 vt-to CID PORT / vt-dual CID0 CID2 PORT (vsock-dual: ivshmem and vsock at once,
//!                 then reconnect over vsock after unbind)
//!                                      the vsock transport (vsock scenario, vtransport.rs)
//!   vmcs-socktest crypto-serve PORT MODE BYTES TAG / crypto-send CID PORT MODE BYTES TAG /
//!                 crypto-refused CID PORT MODE ERRNO / crypto-victim PORT KIND /
//!                 crypto-tamper CID PORT KIND CTL
//!                                      the crypto scenario (crypto.rs)
//!   vmcs-socktest mesh PORT EXPECT STOPFILE [once|lenient]
//!                                      the chaos mesh: checksummed stream, seqpacket and
//!                                      bulk traffic with every live peer (mesh.rs)
//!
//! The family number is read from /sys/module/vmcs/parameters/af.

mod badbuf;
mod basic;
mod busypoll;
mod crash;
mod cross;
mod crypto;
mod diff;
mod fair;
mod fastclose;
mod held;
mod mesh;
mod options;
mod rxcap;
mod scale;
mod sock;
mod vsock;
mod vtransport;

use badbuf::t_badbuf;
use basic::{t_bind, t_family, t_hold, t_nonblock, t_refused, t_reset, t_seqpacket, t_stream};
use busypoll::t_busypoll;
use crash::{crash_connect, crash_rejoin, crash_serve};
use cross::{client, serve};
use crypto::{crypto_refused, crypto_send, crypto_serve, crypto_tamper, crypto_victim};
use fastclose::{fastclose_client, fastclose_serve, t_fastclose};
use held::{held_client, held_serve};
use mesh::mesh;
use options::{t_bufs, t_lowat, t_sockopt, t_timeo};
use rxcap::{rxcap_client, rxcap_serve};
use scale::{burst_client, burst_serve, scale_client, scale_serve};
use vmcs_guest_tools::{exit_with, Res};
use vsock::{vsock_client, vsock_echo_server};
use vtransport::{
    vt_client, vt_dual, vt_echo1, vt_hold, vt_raw_client, vt_raw_serve, vt_reset, vt_to,
};

/// A named loopback test.
type Test = (&'static str, fn() -> Res);

const TESTS: &[Test] = &[
    ("family", t_family),
    ("bind", t_bind),
    ("stream", t_stream),
    ("seqpacket", t_seqpacket),
    ("nonblock", t_nonblock),
    ("refused", t_refused),
    ("reset", t_reset),
    ("sockopt", t_sockopt),
    ("bufs", t_bufs),
    ("rcvlowat", t_lowat),
    ("timeouts", t_timeo),
    ("busypoll", t_busypoll),
    ("fastclose", t_fastclose),
    ("badbuf", t_badbuf),
];

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).and_then(|s| s.parse::<u32>().ok());
    let r = match args.first().map(String::as_str) {
        Some("list") => {
            for (n, _) in TESTS {
                println!("{n}");
            }
            Ok(())
        }
        Some("serve") => match (arg(1), arg(2)) {
            (Some(p), Some(n)) => serve(p, n as usize),
            _ => Err("usage: serve PORT N".into()),
        },
        Some("client") => arg(1).map_or(Err("usage: client PORT".into()), client),
        Some("vsock-echo-server") => arg(1).map_or(Err("usage".into()), vsock_echo_server),
        Some("vsock-echo-client") => arg(1).map_or(Err("usage".into()), vsock_client),
        Some("hold") => t_hold(),
        Some("crypto-serve") => match (arg(1), arg(2), arg(3), args.get(4)) {
            (Some(p), Some(m), Some(b), Some(t)) => crypto_serve(p, m, b as usize, t),
            _ => Err("usage: crypto-serve PORT MODE BYTES TAG".into()),
        },
        Some("crypto-send") => match (arg(1), arg(2), arg(3), arg(4), args.get(5)) {
            (Some(c), Some(p), Some(m), Some(b), Some(t)) => crypto_send(c, p, m, b as usize, t),
            _ => Err("usage: crypto-send CID PORT MODE BYTES TAG".into()),
        },
        Some("crypto-refused") => match (arg(1), arg(2), arg(3), args.get(4)) {
            (Some(c), Some(p), Some(m), Some(e)) => crypto_refused(c, p, m, e),
            _ => Err("usage: crypto-refused CID PORT MODE ERRNO".into()),
        },
        Some("crypto-victim") => match (arg(1), args.get(2)) {
            (Some(p), Some(k)) => crypto_victim(p, k),
            _ => Err("usage: crypto-victim PORT KIND".into()),
        },
        Some("crypto-tamper") => match (arg(1), arg(2), args.get(3), args.get(4)) {
            (Some(c), Some(p), Some(k), Some(f)) => crypto_tamper(c, p, k, f),
            _ => Err("usage: crypto-tamper CID PORT KIND CTL".into()),
        },
        Some("vt-client") => match (arg(1), arg(2)) {
            (Some(c), Some(p)) => vt_client(c, p),
            _ => Err("usage: vt-client CID PORT".into()),
        },
        Some("vt-reset") => match (arg(1), arg(2)) {
            (Some(c), Some(p)) => vt_reset(c, p),
            _ => Err("usage: vt-reset CID PORT".into()),
        },
        Some("vt-to") => match (arg(1), arg(2)) {
            (Some(c), Some(p)) => vt_to(c, p),
            _ => Err("usage: vt-to CID PORT".into()),
        },
        Some("vt-raw-serve") => match (arg(1), arg(2), arg(3)) {
            (Some(p), Some(t), Some(b)) => vt_raw_serve(p, t, b),
            _ => Err("usage: vt-raw-serve PORT TOTAL PIECE".into()),
        },
        Some("vt-raw-client") => match (arg(1), arg(2), arg(3), arg(4)) {
            (Some(c), Some(p), Some(t), Some(k)) => vt_raw_client(c, p, t, k),
            _ => Err("usage: vt-raw-client CID PORT TOTAL CHUNK".into()),
        },
        Some("vt-dual") => match (arg(1), arg(2), arg(3)) {
            (Some(c0), Some(c2), Some(p)) => vt_dual(c0, c2, p),
            _ => Err("usage: vt-dual CID0 CID2 PORT".into()),
        },
        Some("vt-hold") => arg(1).map_or(Err("usage: vt-hold PORT".into()), vt_hold),
        Some("vt-echo1") => arg(1).map_or(Err("usage: vt-echo1 PORT".into()), vt_echo1),
        Some("scale-serve") => match (arg(1), arg(2), arg(3)) {
            (Some(p), Some(n), Some(b)) => scale_serve(p, n as usize, b as usize),
            _ => Err("usage: scale-serve PORT NCONN BYTES".into()),
        },
        Some("scale-client") => match (arg(1), arg(2), arg(3)) {
            (Some(p), Some(n), Some(b)) => scale_client(p, n as usize, b as usize),
            _ => Err("usage: scale-client PORT NCONN BYTES".into()),
        },
        Some("burst-serve") => match (arg(1), arg(2), arg(3)) {
            (Some(p), Some(n), Some(b)) => burst_serve(p, n as usize, b as usize),
            _ => Err("usage: burst-serve PORT NCONN BYTES".into()),
        },
        Some("held-serve") => match arg(1) {
            Some(p) => held_serve(p),
            _ => Err("usage: held-serve PORT".into()),
        },
        Some("held-client") => match arg(1) {
            Some(p) => held_client(p),
            _ => Err("usage: held-client PORT".into()),
        },
        Some("rxcap-serve") => match (arg(1), arg(2)) {
            (Some(p), Some(n)) => rxcap_serve(p, n as usize),
            _ => Err("usage: rxcap-serve PORT NCONN".into()),
        },
        Some("rxcap-client") => match (arg(1), arg(2)) {
            (Some(p), Some(n)) => rxcap_client(p, n as usize),
            _ => Err("usage: rxcap-client PORT NCONN".into()),
        },
        Some("burst-client") => match (arg(1), arg(2), arg(3)) {
            (Some(p), Some(n), Some(b)) => burst_client(p, n as usize, b as usize),
            _ => Err("usage: burst-client PORT NCONN BYTES".into()),
        },
        Some("fastclose-serve") => match (arg(1), arg(2), arg(3)) {
            (Some(p), Some(n), Some(b)) => fastclose_serve(p, n as usize, b as usize),
            _ => Err("usage: fastclose-serve PORT N BYTES".into()),
        },
        Some("fastclose-client") => match (arg(1), arg(2), arg(3)) {
            (Some(p), Some(n), Some(b)) => fastclose_client(p, n as usize, b as usize),
            _ => Err("usage: fastclose-client PORT N BYTES".into()),
        },
        Some("diff") => diff::diff(),
        Some("diff-serve") => arg(1).map_or(Err("usage: diff-serve BASE".into()), diff::diff_serve),
        Some("diff-cross") => match (arg(1), arg(2)) {
            (_, Some(b)) if args.get(1).is_some_and(|a| a == "auto") => diff::diff_cross(None, b),
            (Some(p), Some(b)) => diff::diff_cross(Some(p), b),
            _ => Err("usage: diff-cross PEER|auto BASE".into()),
        },
        Some("crash-serve") => arg(1).map_or(Err("usage: crash-serve PORT".into()), crash_serve),
        Some("crash-connect") => {
            arg(1).map_or(Err("usage: crash-connect PORT".into()), crash_connect)
        }
        Some("fair-sink") => match (arg(1), arg(2)) {
            (Some(p), Some(n)) => fair::fair_sink(p, n as usize),
            _ => Err("usage: fair-sink PORT N".into()),
        },
        Some("fair-send") => match (arg(1), arg(2), arg(3)) {
            (Some(c), Some(p), Some(b)) => {
                fair::fair_send(c, p, u64::from(b), args.get(4).map(String::as_str))
            }
            _ => Err("usage: fair-send CID PORT BYTES [STOPFILE]".into()),
        },
        Some("mesh") => match (arg(1), arg(2), args.get(3)) {
            (Some(p), Some(n), Some(stop)) => {
                mesh(p, n as usize, stop, args.get(4).map_or("", String::as_str))
            }
            _ => Err("usage: mesh PORT EXPECT STOPFILE [once|lenient]".into()),
        },
        Some("crash-rejoin") => arg(1).map_or(Err("usage: crash-rejoin PORT".into()), crash_rejoin),
        Some(t) => match TESTS.iter().find(|(n, _)| *n == t) {
            Some((_, f)) => f(),
            None => Err(format!("unknown test {t}")),
        },
        None => Err("usage: vmcs-socktest list|TEST|serve|client|vsock-echo-*|hold".into()),
    };
    exit_with(r, "error")
}
