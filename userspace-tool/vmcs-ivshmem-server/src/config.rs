//! Command-line options.

use std::path::PathBuf;

use clap::Parser;

/// Largest accepted `--vectors` (QEMU's reference server uses the same cap).
pub const MAX_VECTORS: u16 = 64;
/// Largest accepted `--max-peers`.
pub const MAX_PEERS_LIMIT: u16 = 64;
/// Smallest accepted `--size` (one page).
pub const MIN_SIZE: u64 = 4096;

/// Host-side server for QEMU's `ivshmem-doorbell` device.
///
/// Speaks QEMU's ivshmem-server protocol on a unix socket: hands every
/// connecting QEMU a peer id, the shared-memory descriptor and the eventfds
/// of all peers.  Runs in the foreground; stop it with SIGINT or SIGTERM.
#[derive(Debug, Clone, Parser, PartialEq, Eq)]
#[command(name = "vmcs-ivshmem-server", version)]
pub struct Config {
    /// Unix socket to listen on (created; removed on exit).  It appears only
    /// once the server accepts connections.
    #[arg(short = 'S', long, value_name = "PATH")]
    pub socket: PathBuf,

    /// File backing the shared memory, e.g. /dev/shm/vmcs-XYZ (created or
    /// truncated, zero-filled, removed on exit).  Without it an anonymous
    /// memfd is used.
    #[arg(short = 'm', long, value_name = "PATH")]
    pub shm: Option<PathBuf>,

    /// Shared memory size in bytes; suffixes K, M, G (powers of 1024).
    /// Must be a power of two (it becomes a PCI BAR) and at least 4K.
    #[arg(short = 'l', long, value_name = "BYTES", default_value = "64M",
          value_parser = parse_size)]
    pub size: u64,

    /// Interrupt vectors (eventfds) per peer; should match the device's
    /// `vectors=` property.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_VECTORS)))]
    pub vectors: u16,

    /// Number of peer ids; peers get ids in [0, N).
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_PEERS_LIMIT)))]
    pub max_peers: u16,

    /// Write the server's pid to this file (removed on exit).
    #[arg(short = 'p', long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,

    /// Log every protocol message and connection event.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Hand out the lowest free id and keep a departed id's eventfds for its
    /// next holder, sending no leave notices (so a restarted VM gets its old
    /// id back; QEMU's ivshmem cannot take an id that left and came back
    /// otherwise). Default: QEMU's server's round-robin ids with notices.
    #[arg(long)]
    pub sticky_ids: bool,
}

/// Parse a byte count such as `4096`, `64K`, `1M`, `2G` (also `1MiB`, `1mb`).
/// Suffixes are binary multiples.  The result must be a power of two and at
/// least [`MIN_SIZE`].
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!("invalid size {s:?}: expected a number"));
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("invalid size {s:?}: unknown suffix {suffix:?}")),
    };
    let value = num
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))?;
    if value < MIN_SIZE {
        return Err(format!("invalid size {s:?}: must be at least {MIN_SIZE}"));
    }
    if !value.is_power_of_two() {
        return Err(format!(
            "invalid size {s:?}: must be a power of two (QEMU maps it as a PCI BAR)"
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("vmcs-ivshmem-server").chain(args.iter().copied()))
    }

    #[test]
    fn size_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size(" 8M "), Ok(8 << 20));
    }

    #[test]
    fn size_rejects_garbage() {
        for bad in [
            "",
            "M",
            "-1M",
            "1.5M",
            "1T",
            "12X",
            "0",
            "1",
            "1K",
            "3M",
            "1000000",
            "99999999999999G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&["--socket", "/tmp/s"]).expect("valid");
        assert_eq!(
            c,
            Config {
                socket: "/tmp/s".into(),
                shm: None,
                size: 64 << 20,
                vectors: 1,
                max_peers: 16,
                pidfile: None,
                verbose: false,
                sticky_ids: false,
            }
        );
    }

    #[test]
    fn all_options() {
        let c = parse(&[
            "--socket",
            "/tmp/s",
            "--shm",
            "/dev/shm/x",
            "--size",
            "1M",
            "--vectors",
            "2",
            "--max-peers",
            "64",
            "--pidfile",
            "/tmp/p",
            "--verbose",
        ])
        .expect("valid");
        assert_eq!(c.shm.as_deref(), Some("/dev/shm/x".as_ref()));
        assert_eq!((c.size, c.vectors, c.max_peers), (1 << 20, 2, 64));
        assert_eq!(c.pidfile.as_deref(), Some("/tmp/p".as_ref()));
        assert!(c.verbose);
        let short = parse(&[
            "-S",
            "/tmp/s",
            "-m",
            "/dev/shm/x",
            "-l",
            "1M",
            "-n",
            "2",
            "-v",
        ])
        .expect("valid");
        assert_eq!(
            (short.size, short.vectors, short.verbose),
            (1 << 20, 2, true)
        );
    }

    #[test]
    fn rejects_bad_options() {
        assert!(parse(&[]).is_err(), "--socket is required");
        for bad in [
            &["--socket", "s", "--vectors", "0"][..],
            &["--socket", "s", "--vectors", "65"],
            &["--socket", "s", "--max-peers", "0"],
            &["--socket", "s", "--max-peers", "65"],
            &["--socket", "s", "--max-peers", "65536"],
            &["--socket", "s", "--size", "3M"],
            &["--socket", "s", "--bogus"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse(&["--socket", "s", "--vectors", "64", "--max-peers", "64"]).is_ok());
    }
}
