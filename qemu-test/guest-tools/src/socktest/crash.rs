//! Peer death (qemu-test/scenarios/crash.sh): ECONNRESET, connect timeouts, the surviving
//! listener.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use libc::c_int;
use vmcs_guest_tools::{errno, strerror, Res};

use crate::cross::find_server;
use crate::options::set_timeo;
use crate::sock::{check, Sock, CID_ANY};

/// Guest 0: a stream listener on `port` and a seqpacket one on `port + 1`. The first
/// incarnation of guest 1 connects to both; this blocks in recv on both and expects
/// ECONNRESET once guest 1 is killed, while a third thread keeps trying to connect to a
/// closed port on guest 1 with SO_SNDTIMEO 300 ms: refused while guest 1 lives,
/// ETIMEDOUT once it is dead but not yet detected (nothing answers), EHOSTUNREACH after.
/// Then the restarted guest 1 connects to the same stream listener and is echoed.
/// A third connection, on `port + 2`, carries `SHUT_BYTES` from guest 1, which then shut it
/// both ways (and was killed with it open): read only after the crash, it must still give
/// every byte and end of file (the peer had closed in order), not ECONNRESET.
pub(crate) fn crash_serve(port: u32) -> Res {
    let ls = Sock::new(libc::SOCK_STREAM)?;
    ls.bind(CID_ANY, port)?;
    ls.listen(4)?;
    let lq = Sock::new(libc::SOCK_SEQPACKET)?;
    lq.bind(CID_ANY, port + 1)?;
    lq.listen(4)?;
    let lr = Sock::new(libc::SOCK_STREAM)?;
    lr.bind(CID_ANY, port + 2)?;
    lr.listen(4)?;
    println!(
        "crash-serve: listening on {port} (stream) and {} (seqpacket)",
        port + 1
    );
    let _ = std::io::stdout().flush();
    let (s, a) = ls.accept()?;
    let (q, _) = lq.accept()?;
    let (r, _) = lr.accept()?;
    // Guest 1's data and SHUTDOWN are all here (POLLRDHUP: it shut both ways; POLLHUP only
    // once this side shut too, as vsock); the byte on the stream connection lets it go on
    // to its crash.
    let ev = r.poll(libc::POLLRDHUP, 60000)?;
    if ev & libc::POLLRDHUP == 0 {
        return Err(format!("the shut connection never hung up ({ev:#x})"));
    }
    s.send_all(b"k")?;
    let peer = a.svm_cid;
    println!("SOCK-ACCEPTED stream and seqpacket from cid {peer}");
    let _ = std::io::stdout().flush();
    let blocked = |s: Sock, what: &'static str| {
        thread::spawn(move || -> c_int {
            let mut b = [0u8; 4096];
            loop {
                let r = s.recv(&mut b, 0);
                if r <= 0 {
                    let e = if r == 0 { 0 } else { errno() };
                    println!("{what} recv ended: {r} ({})", strerror(e));
                    let _ = std::io::stdout().flush();
                    return e;
                }
            }
        })
    };
    let ts = blocked(s, "stream");
    let tq = blocked(q, "seqpacket");
    let prober = thread::spawn(move || -> (usize, usize, usize, c_int) {
        let (mut refused, mut timedout, mut reset) = (0, 0, 0);
        let t0 = Instant::now();
        loop {
            let Ok(c) = Sock::new(libc::SOCK_STREAM) else {
                return (refused, timedout, reset, -1);
            };
            let _ = set_timeo(&c, libc::SO_SNDTIMEO, 300);
            let t = Instant::now();
            let r = c.raw_connect(peer, port + 99).unwrap_or(-1);
            let e = if r == 0 { 0 } else { errno() };
            match e {
                libc::ECONNREFUSED => refused += 1,
                libc::ETIMEDOUT => {
                    timedout += 1;
                    println!("connect timed out after {} ms", t.elapsed().as_millis());
                }
                libc::ECONNRESET => reset += 1,
                _ => return (refused, timedout, reset, e),
            }
            if t0.elapsed() > Duration::from_secs(300) {
                return (refused, timedout, reset, -1);
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let es = ts.join().map_err(|_| "join")?;
    let eq = tq.join().map_err(|_| "join")?;
    let (refused, timedout, reset, last) = prober.join().map_err(|_| "join")?;
    println!(
        "probe: {refused} refused, {timedout} timed out, {reset} reset, then {}",
        strerror(last)
    );
    let _ = std::io::stdout().flush();
    let mut fails = Vec::new();
    if es == libc::ECONNRESET {
        println!("SOCK-STREAM-RESET");
    } else {
        fails.push(format!("stream recv ended with {}", strerror(es)));
    }
    if eq == libc::ECONNRESET {
        println!("SOCK-SEQPACKET-RESET");
    } else {
        fails.push(format!("seqpacket recv ended with {}", strerror(eq)));
    }
    if timedout > 0 && last == libc::EHOSTUNREACH {
        println!("SOCK-CONNECT-TIMEDOUT");
    } else {
        fails.push("no connect ETIMEDOUT while the dead peer was undetected".into());
    }
    let _ = std::io::stdout().flush();
    // The listener survived: the next incarnation of guest 1 connects here.
    let (s, a) = ls.accept()?;
    println!("rejoined: stream from cid {}:{}", a.svm_cid, a.svm_port);
    let mut b = vec![0u8; 4096];
    let mut msgs = 0;
    loop {
        let n = s.recv(&mut b, 0);
        if n <= 0 {
            break;
        }
        if s.send(&b[..n as usize], 0) != n {
            break;
        }
        msgs += 1;
    }
    println!("SOCK-REJOIN-ECHOED {msgs} reads");
    // Long after guest 1's death was detected: the orderly-closed connection's data.
    let mut b = vec![0u8; SHUT_BYTES + 1];
    let n = r.recv(&mut b, libc::MSG_WAITALL);
    let e = if n < 0 {
        strerror(errno())
    } else {
        "ok".into()
    };
    let eof = r.recv(&mut b[..1], 0);
    let good = n == SHUT_BYTES as isize
        && b[..SHUT_BYTES]
            .iter()
            .enumerate()
            .all(|(k, v)| *v == shut_byte(k));
    if good && eof == 0 {
        println!("SOCK-SHUT-KEPT {n} bytes then EOF");
    } else {
        fails.push(format!(
            "shut connection after the crash: read {n} of {SHUT_BYTES} ({e}), then {eof}"
        ));
    }
    if fails.is_empty() {
        Ok(())
    } else {
        Err(fails.join("; "))
    }
}

/// Bytes of the connection guest 1 shuts both ways before its crash.
const SHUT_BYTES: usize = 20000;

fn shut_byte(k: usize) -> u8 {
    (k * 7 % 251) as u8
}

/// Guest 1, first incarnation: connect a stream and a seqpacket socket to guest 0, send a
/// first message on each; connect a third one, send `SHUT_BYTES` and shut it both ways;
/// once guest 0 says it has it all, stay connected until killed.
pub(crate) fn crash_connect(port: u32) -> Res {
    let (s, cid) = find_server(libc::SOCK_STREAM, port)?;
    let (q, _) = find_server(libc::SOCK_SEQPACKET, port + 1)?;
    s.send_all(b"hello stream")?;
    q.send_all(b"hello seqpacket")?;
    let r = Sock::new(libc::SOCK_STREAM)?;
    r.connect(cid, port + 2)?;
    let data: Vec<u8> = (0..SHUT_BYTES).map(shut_byte).collect();
    r.send_all(&data)?;
    r.shutdown(libc::SHUT_RDWR)?;
    let mut k = [0u8; 1];
    if s.recv(&mut k, 0) != 1 {
        return Err(format!("no go-ahead from guest 0: {}", strerror(errno())));
    }
    println!("connected to cid {cid}");
    let _ = std::io::stdout().flush();
    loop {
        thread::sleep(Duration::from_secs(10));
    }
}

/// Guest 1, restarted: connect to the surviving stream listener and exchange 50 messages.
pub(crate) fn crash_rejoin(port: u32) -> Res {
    let (s, cid) = find_server(libc::SOCK_STREAM, port)?;
    for i in 0..50u32 {
        let m: Vec<u8> = (0..200).map(|k| (k as u32 * 3 + i) as u8).collect();
        s.send_all(&m)?;
        let mut b = vec![0u8; 200];
        let n = s.recv(&mut b, libc::MSG_WAITALL);
        if n != 200 || b != m {
            return Err(format!("echo {i}: {n} bytes"));
        }
    }
    s.shutdown(libc::SHUT_WR)?;
    let mut b = [0u8; 8];
    check(
        &format!("50 messages echoed by cid {cid} over the surviving listener, then EOF"),
        s.recv(&mut b, 0) == 0,
    )
}
