//! Connections that outlive their peer or the module: `crash-recv`/`crash-stream` (peer
//! death), `rejoin` (a restarted peer), `hold` (a connection held open across rmmod).

use std::thread;
use std::time::{Duration, Instant};

use vmcs_guest_tools::dev::Fd;
use vmcs_guest_tools::{ename, Res};

use crate::cross::{connect_server, seq_msg};
use crate::{expect_err, listener, ok, pattern, CID_LOCAL, MAX_MSG};

/// `crash-recv PORT`: accept one connection and read until the read fails; the peer is
/// killed mid-stream, so the read must fail with ECONNRESET within 2.5 s of the last data.
/// Then the listener must still accept (the restarted peer) and echo until EOF.
pub(crate) fn crash_recv(port: u32) -> Res {
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
pub(crate) fn crash_stream(cid: Option<u32>, port: u32) -> Res {
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
pub(crate) fn rejoin(cid: Option<u32>, port: u32, go: &str) -> Res {
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

pub(crate) fn hold(args: &[String]) -> Res {
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
