//! `vmcs-pattern`: writes or checks a deterministic byte pattern in the shared region
//! through `/dev/vmcs`, so that a test can show that bytes written by one guest are read by
//! another.
//!
//! ```text
//! vmcs-pattern write OFFSET LEN SEED
//! vmcs-pattern check OFFSET LEN SEED [WAIT_SECS]
//! ```
//!
//! `check` exits 0 when the region holds the pattern, 1 when it does not (after waiting up
//! to WAIT_SECS for it to appear), 2 on a usage or I/O error.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The pattern byte at index `i` for `seed`: a xorshift stream, so that shifted or
/// truncated copies do not match.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn parse(args: &[String], i: usize, what: &str) -> Result<u64, String> {
    let s = args.get(i).ok_or(format!("missing {what}"))?;
    let r = if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        s.parse()
    };
    r.map_err(|e| format!("bad {what} {s:?}: {e}"))
}

fn run(args: &[String]) -> Result<bool, String> {
    let cmd = args.get(1).map(String::as_str).unwrap_or("");
    let offset = parse(args, 2, "OFFSET")?;
    let len = usize::try_from(parse(args, 3, "LEN")?).map_err(|e| e.to_string())?;
    let seed = parse(args, 4, "SEED")?;
    let want = pattern(seed, len);
    let mut dev = OpenOptions::new()
        .read(true)
        .write(cmd == "write")
        .open("/dev/vmcs")
        .map_err(|e| format!("/dev/vmcs: {e}"))?;
    match cmd {
        "write" => {
            dev.seek(SeekFrom::Start(offset))
                .map_err(|e| e.to_string())?;
            dev.write_all(&want).map_err(|e| format!("write: {e}"))?;
            println!("wrote {len} bytes of pattern {seed:#x} at offset {offset:#x}");
            Ok(true)
        }
        "check" => {
            let wait = if args.len() > 5 {
                parse(args, 5, "WAIT_SECS")?
            } else {
                0
            };
            let deadline = Instant::now() + Duration::from_secs(wait);
            let mut got = vec![0u8; len];
            loop {
                dev.seek(SeekFrom::Start(offset))
                    .map_err(|e| e.to_string())?;
                dev.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
                if got == want {
                    println!("pattern {seed:#x} found: {len} bytes at offset {offset:#x}");
                    return Ok(true);
                }
                if Instant::now() >= deadline {
                    let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                    println!("pattern {seed:#x} not found: {bad} of {len} bytes differ");
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        _ => Err("usage: vmcs-pattern write|check OFFSET LEN SEED [WAIT_SECS]".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vmcs-pattern: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn pattern_is_deterministic_and_seed_dependent() {
        assert_eq!(pattern(7, 64), pattern(7, 64));
        assert_ne!(pattern(7, 64), pattern(8, 64));
        assert_eq!(&pattern(7, 64)[..16], &pattern(7, 16)[..]);
    }

    #[test]
    fn pattern_is_not_constant() {
        let p = pattern(1, 256);
        assert!(p.iter().any(|&b| b != p[0]));
    }
}
