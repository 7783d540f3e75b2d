//! `vmcs-evil`: a hostile vmcs peer, for the `hostile` QEMU scenario (docs/testing.md).
//!
//! ```text
//! vmcs-evil --shm FILE [--port P] [--phase-ms MS] [--seed S] [--expect N] [--reap-secs S]
//!           [--bulk-port P]
//! vmcs-evil --server SOCK [--vectors V] [...]
//! vmcs-evil --shm FILE --fill N [--fill-secs S]
//! ```
//!
//! With `--fill N` it attacks nothing: it runs N idle, well-behaved peers that occupy
//! slots until the guests are gone (`fill.rs`).
//!
//! With `--server SOCK` (ivshmem-doorbell) it is a client of the doorbell server instead:
//! the server's id is its slot, the shared memory comes from the server, and from the
//! moment the guests acknowledge its rings until phase e it also runs the **doorbell
//! storm** (`doorbell.rs`): one thread writing every other peer's eventfds, all `V`
//! vectors (default 2), as fast as it can, so that the guests take an interrupt per write.
//!
//! It maps the backing file of an `ivshmem-plain` region (the same file the guests' QEMUs
//! map), joins the peer table through the protocol (`claim_id`, `join_complete`,
//! heartbeats), waits until the `N` live guests have acknowledged its rings and then
//! attacks them in phases of `MS` milliseconds each:
//!
//! - **a, protocol abuse:** `REQUEST`s to port `P` (and then frames on the connections they
//!   open: credit lies, overruns, type mismatches, unsolicited `RESPONSE`s, data after
//!   `SHUTDOWN`, `CREDIT_REQUEST` storms), `RST` storms, data to unbound ports;
//! - **b, ring corruption:** producer index far ahead, backwards and misaligned, epoch
//!   flapping, garbage and over-long frame headers, bad ops/flags/reserved bits, garbage in
//!   its consumer lines of the guests' rings (`cons_idx`, `cons_ack`);
//! - **g, ring geometry lies:** the ring it publishes for each guest is out of the region,
//!   over the header, peer table, channel table, bulk area or the guest's own transmit area,
//!   straddles the end of its own area, is not a power of two, too small, too large or
//!   misaligned (each under a new epoch: never acknowledged), then changes after the guest
//!   accepted it (the guest keeps the ring it validated), then is valid again;
//! - **c, slot garbage:** generation flapping, bogus states, heartbeat jumps in its own
//!   peer slot;
//! - **d, scribbling:** random bytes all over its rings and control lines, continuously;
//! - **bulk** (after a check that the guests still answer): against each guest that
//!   accepts on `--bulk-port` (default 63000; `vmcs-test bulk-evil` there), one
//!   connection per bad bulk frame (docs/protocol.md §8.2), each after the guest's own
//!   `BULK_OFFER`: offers outside our slice, into the next slice, unaligned, empty, huge,
//!   overflowing, a second offer; `BULK_DATA` before an offer, beyond the extent,
//!   overflowing, empty, overlapping a held range, 65 ranges at once; `BULK_RELEASE` of a
//!   range never lent or before any offer. Each must be answered with `RST`. Then one
//!   well-formed transfer (4 ranges of a known pattern in our slice) that the guest hands
//!   back only after reading the pattern through its mapping. (Bulk frames with a wrong
//!   payload length are corrupt frames: phase b writes some.)
//! - **e, death:** it takes its slot back cleanly, beats for a second, then stops beating
//!   without leaving and waits until a guest reaps its slot.
//!
//! It writes only what a peer may write: its own slot, the producer lines and ring data of
//! its channels to the guests and the consumer lines of the guests' channels to it. The
//! rule it tests (docs/protocol.md §0): a bad peer may break its own connections, never a
//! guest's kernel and never the connections between other peers.
//!
//! Output: TAP lines without numbers (`ok - ...`, `not ok - ...`, `# ...`), which
//! qemu-test/run.sh reports as test points. Exit status 0 when every point passed.

mod attacks;
mod doorbell;
mod fill;
mod peer;
mod tap;

use std::process::ExitCode;
use std::time::Instant;

use vmcs_proto::frame::Op;

use doorbell::{Doorbell, Storm};
use peer::{map, map_file, Peer};
use tap::ok;

struct Args {
    shm: String,
    port: u32,
    phase_ms: u64,
    seed: u64,
    expect: usize,
    reap_secs: u64,
    bulk_port: u32,
    server: String,
    vectors: usize,
    fill: usize,
    fill_secs: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        shm: String::new(),
        port: 7000,
        phase_ms: 3000,
        seed: 0x5eed_0bad_cafe_f00d,
        expect: 2,
        reap_secs: 30,
        bulk_port: 63000,
        server: String::new(),
        vectors: 2,
        fill: 0,
        fill_secs: 600,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{k}: not a number: {v}"))
        };
        match k.as_str() {
            "--shm" => a.shm = v,
            "--port" => a.port = num(&v)? as u32,
            "--phase-ms" => a.phase_ms = num(&v)?,
            "--seed" => a.seed = num(&v)?.max(1),
            "--expect" => a.expect = num(&v)? as usize,
            "--reap-secs" => a.reap_secs = num(&v)?,
            "--bulk-port" => a.bulk_port = num(&v)? as u32,
            "--server" => a.server = v,
            "--vectors" => a.vectors = num(&v)?.clamp(1, 64) as usize,
            "--fill" => a.fill = num(&v)?.clamp(1, 63) as usize,
            "--fill-secs" => a.fill_secs = num(&v)?,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.shm.is_empty() && a.server.is_empty() {
        return Err(
            "usage: vmcs-evil --shm FILE|--server SOCK [--vectors V] [--port P] \
                    [--phase-ms MS] [--seed S] [--expect N] [--reap-secs S] [--bulk-port P] \
                    [--fill N [--fill-secs S]]"
                .into(),
        );
    }
    Ok(a)
}

fn run(a: &Args) -> Result<bool, String> {
    if a.fill > 0 {
        if a.shm.is_empty() {
            return Err("--fill needs --shm (ivshmem-plain)".into());
        }
        return fill::run(map(&a.shm)?, a.fill, a.fill_secs, a.seed);
    }
    let db = if a.server.is_empty() {
        None
    } else {
        Some(Doorbell::connect(&a.server, a.vectors)?)
    };
    let words = match &db {
        Some(d) => map_file(&d.shm, &a.server)?,
        None => map(&a.shm)?,
    };
    let mut e = Peer::join(
        words,
        a.seed,
        attacks::bulk::SRC_PORTS,
        db.as_ref().map(|d| d.id),
    )?;
    let mut all = ok(
        e.targets.len() >= a.expect,
        format_args!(
            "joined as peer {} (generation {}) next to live guests {:?} ({} KiB transmit area)",
            e.me.id,
            e.me.gen,
            e.targets,
            e.g.area_size / 1024
        ),
    );
    if e.targets.is_empty() {
        return Ok(false);
    }
    let t0 = Instant::now();
    let acked = e.await_acks(20);
    all &= ok(
        acked,
        format_args!(
            "every guest acknowledged our rings after {:?}",
            t0.elapsed()
        ),
    );

    // The storm keeps `d` (its server connection: closing it would announce we left).
    let mut storm = db.map(|mut d| {
        let fds = std::mem::take(&mut d.peers);
        println!(
            "# doorbell storm on {} eventfds of peers {:?}",
            fds.len(),
            fds.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        let s = Storm::start(fds.into_iter().map(|p| p.1).collect());
        (Instant::now(), s, d)
    });

    let ms = a.phase_ms;
    let t = Instant::now();
    attacks::protocol::run(&mut e, a.port, ms);
    println!(
        "# phase a (protocol abuse) done in {:?}: {} frames sent, {} refused (ring full), \
         guests answered RST {} RESPONSE {} CREDIT_UPDATE {}",
        t.elapsed(),
        e.st.sent,
        e.st.full,
        e.st.rx[Op::Rst as usize],
        e.st.rx[Op::Response as usize],
        e.st.rx[Op::CreditUpdate as usize]
    );
    all &= ok(
        e.st.rx[Op::Rst as usize] > 0,
        "the guests answered bad frames with RST",
    );
    let t = Instant::now();
    attacks::ring::run(&mut e, ms);
    println!(
        "# phase b (ring corruption) done in {:?}: {} corruptions, {} re-opens",
        t.elapsed(),
        e.st.garbage,
        e.st.reopened
    );
    let t = Instant::now();
    all &= attacks::geometry::run(&mut e);
    println!("# phase g (ring geometry lies) done in {:?}", t.elapsed());
    let t = Instant::now();
    attacks::slot::run(&mut e, ms);
    println!("# phase c (slot garbage) done in {:?}", t.elapsed());
    let t = Instant::now();
    attacks::scribble::run(&mut e, ms);
    println!(
        "# phase d (scribbling) done in {:?}: {} writes in all; evicted {} times",
        t.elapsed(),
        e.st.garbage,
        e.st.evicted
    );

    let t = Instant::now();
    let answered = e.answers_request(15);
    all &= ok(
        answered,
        format_args!(
            "after the attack the guests still answer a well-formed REQUEST (RST after {:?})",
            t.elapsed()
        ),
    );

    all &= attacks::bulk::run(&mut e, a.bulk_port);
    if let Some((t0, s, _)) = storm.as_mut() {
        let n = s.stop();
        let secs = t0.elapsed().as_secs_f64();
        all &= ok(
            n > 0,
            format_args!(
                "doorbell storm: {n} doorbells rung in {secs:.1} s ({:.0}/s)",
                n as f64 / secs
            ),
        );
    }
    all &= attacks::death::run(&mut e, a.reap_secs);
    println!(
        "# totals: {} frames sent, {} refused, received {:?} by op, {} corrupt and {} \
         re-opened rings from the guests seen",
        e.st.sent, e.st.full, e.st.rx, e.st.rx_corrupt, e.st.rx_restarted
    );
    Ok(all)
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vmcs-evil: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            ok(false, format_args!("set-up: {e}"));
            ExitCode::FAILURE
        }
    }
}
