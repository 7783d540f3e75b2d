//! Command line (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vmcs::addr::{parse_cid, parse_port};
use vmcs::VmcsAddr;

/// The well-known port of the echo service that `vmcs ping` and `vmcs bench` talk to
/// (`vmcs listen --echo` and `vmcs ping --serve` serve it).
pub const ECHO_PORT: u32 = 7007;

const AFTER_HELP: &str = "\
Addresses are CID:PORT. The cid is a guest's peer id in the shared region (see `vmcs peers`);
`local` is this guest (loopback), `any` binds every cid. Ports below 1024 need CAP_NET_BIND_SERVICE.

Examples:
  vmcs status                      what the module sees: cid, transport, region, peers
  vmcs listen 5000                 guest A: accept one connection, stdin/stdout netcat-style
  vmcs connect 2:5000              guest B: talk to it
  vmcs ping --serve                guest A: echo service on port 7007
  vmcs ping 2 -c 10                guest B: round-trip times to guest 2
  vmcs bench 2 --json              guest B: latency and throughput per message size
  vmcs recv 6000 -o disk.img       guest A: receive one file
  vmcs send disk.img 2:6000        guest B: send it, SHA-256 checked end to end

Exit status:
  0  success
  1  failure (I/O error, timeout, checksum mismatch, no ping reply...)
  2  usage error
  3  vmcs module not loaded, or no ivshmem device bound to it
  4  peer absent, or connection refused
  5  permission denied

Environment:
  VMCS_BACKEND=device|socket   force /dev/vmcs or AF_VMCS sockets (default: sockets if
                               /sys/module/vmcs/parameters/af exists, else /dev/vmcs)";

/// Talk to other VMs over vmcs shared-memory connections.
///
/// vmcs connects guests that share a QEMU ivshmem region. Connections carry messages
/// (seqpacket): each write is one message of at most 64 KiB.
#[derive(Parser, Debug)]
#[command(name = "vmcs", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Parses durations: `250ms`, `2s`, `1.5s`, `1m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}: try 500ms, 2s or 1m"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

fn port_arg(s: &str) -> Result<u32, String> {
    parse_port(s).map_err(|e| e.to_string())
}

/// A peer: `CID` (the service's well-known port) or `CID:PORT`.
pub fn peer_arg(s: &str) -> Result<VmcsAddr, String> {
    match s.split_once(':') {
        Some(_) => s.parse().map_err(|e: vmcs::AddrParseError| e.to_string()),
        None => Ok(VmcsAddr::new(
            parse_cid(s).map_err(|e| e.to_string())?,
            ECHO_PORT,
        )),
    }
}

fn addr_arg(s: &str) -> Result<VmcsAddr, String> {
    s.parse().map_err(|e: vmcs::AddrParseError| e.to_string())
}

fn size_arg(x: &str) -> Result<usize, String> {
    let x = x.trim();
    let (n, m) = match x.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1024),
        None => (x, 1),
    };
    match n.parse::<usize>() {
        Ok(v) if v * m >= 1 && v * m <= vmcs::MAX_MSG_SIZE => Ok(v * m),
        _ => Err(format!(
            "bad size {x:?}: 1 .. {} bytes, e.g. 64,1k,64k",
            vmcs::MAX_MSG_SIZE
        )),
    }
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum Cmd {
    /// Show this guest's vmcs domain: backend, cid, transport, region size, peers.
    Status,

    /// List the guests sharing the region, with their state and heartbeat age.
    Peers,

    /// Accept a connection on PORT and copy stdin to it and it to stdout (like `nc -l`).
    ///
    /// Each chunk read from stdin is sent as one message; each message received is written
    /// to stdout. End of stdin shuts down our sending side; the peer's end of stream ends
    /// stdout. Exits when both are done, or when the peer closes the connection.
    Listen {
        /// Port to listen on (`any` picks a free one and prints it). With --echo: 7007.
        #[arg(value_parser = port_arg)]
        port: Option<u32>,
        /// Serve the echo service instead: send every message back, to every client,
        /// until killed (what `vmcs ping` and `vmcs bench` need on the other side).
        #[arg(long)]
        echo: bool,
        /// After a connection ends, accept the next one instead of exiting.
        #[arg(short = 'k', long)]
        keep_open: bool,
    },

    /// Connect to CID:PORT and copy stdin to it and it to stdout (like `nc`).
    Connect {
        /// The listener, e.g. 2:5000.
        #[arg(value_parser = addr_arg, value_name = "PEER:PORT")]
        addr: VmcsAddr,
        /// Give up connecting after this long (default: the module's, 2 s).
        #[arg(short = 'w', long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },

    /// Send FILE to a `vmcs recv` at CID:PORT; the receiver verifies its SHA-256.
    Send {
        /// A regular file.
        file: PathBuf,
        /// The receiver, e.g. 2:6000.
        #[arg(value_parser = addr_arg, value_name = "PEER:PORT")]
        addr: VmcsAddr,
        /// Give up connecting after this long.
        #[arg(short = 'w', long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },

    /// Receive one file from `vmcs send` on PORT, verify its SHA-256, and save it.
    ///
    /// The data goes to a temporary file next to the destination, renamed into place only
    /// once the checksum matches.
    Recv {
        /// Port to listen on.
        #[arg(value_parser = port_arg)]
        port: u32,
        /// Where to save it (`-` for stdout). Default: the sender's file name, in the
        /// current directory.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(short, long)]
        force: bool,
    },

    /// Measure round-trip times to an echo service (`vmcs ping --serve` on the peer).
    Ping {
        /// The peer: CID (port 7007) or CID:PORT.
        #[arg(value_parser = peer_arg, required_unless_present = "serve", value_name = "PEER")]
        peer: Option<VmcsAddr>,
        /// Stop after COUNT replies.
        #[arg(short, long, default_value_t = 5)]
        count: u32,
        /// Wait this long between pings.
        #[arg(short, long, value_parser = parse_duration, default_value = "1s")]
        interval: Duration,
        /// Message size in bytes (at least 16: sequence number and padding).
        #[arg(short, long, default_value_t = 64)]
        size: usize,
        /// Wait at most this long for each reply.
        #[arg(short = 'W', long, value_parser = parse_duration, default_value = "2s")]
        timeout: Duration,
        /// Serve the echo service on port 7007 (or --port) instead.
        #[arg(long, conflicts_with = "peer")]
        serve: bool,
        /// The echo service's port (default 7007): where --serve listens, or where a
        /// PEER given as a bare CID is pinged.
        #[arg(long, value_parser = port_arg)]
        port: Option<u32>,
    },

    /// Sweep message sizes against an echo service: latency and throughput per size.
    Bench {
        /// The peer: CID (port 7007) or CID:PORT.
        #[arg(value_parser = peer_arg, value_name = "PEER")]
        peer: VmcsAddr,
        /// Message sizes, comma-separated (k = 1024).
        #[arg(long, value_parser = size_arg, value_delimiter = ',', default_value = "64,256,1k,4k,16k,64k")]
        sizes: Vec<usize>,
        /// Round trips per size for the latency figures.
        #[arg(long, default_value_t = 1000)]
        rounds: u32,
        /// Time per size for the throughput figure.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        time: Duration,
        /// Throughput through the bulk area instead (/dev/vmcs on both sides: the peer
        /// serves with `VMCS_BACKEND=device vmcs ping --serve`): ranges of SIZE bytes are
        /// lent from the largest extent this guest's slice holds, many per call, and the
        /// peer reads them in place (no copy out) and checks their sum. No round trips.
        #[arg(long)]
        zero_copy: bool,
    },

    /// Show or change the access-control policy (allow-lists) of a domain.
    ///
    /// Three lists: `in` (CID:PORT pairs that may connect to this guest's listeners),
    /// `out` (CID:PORT pairs this guest may connect to) and `bind` (ports that may be bound).
    /// Each starts as `any:any` (everything allowed). `deny` removes an allow rule; what no
    /// rule allows is denied: a refused inbound connect looks to the peer as if nothing
    /// listened, an outbound one fails with EPERM, a bind with EACCES. Loopback is never
    /// filtered; established connections stay when their rule goes. Changing the policy
    /// needs CAP_NET_ADMIN.
    Policy {
        /// The domain (default: the one /dev/vmcs opens on, which AF_VMCS uses).
        #[arg(long, global = true)]
        domain: Option<u32>,
        #[command(subcommand)]
        action: Option<PolicyCmd>,
    },

    /// Install or remove the domain's pre-shared key (root: CAP_NET_ADMIN).
    ///
    /// The key (64 hexadecimal digits or 32 raw bytes) is read from stdin or --file, never
    /// from the command line; the module never logs it and never gives it back.
    Key {
        #[command(subcommand)]
        op: KeyOp,
    },

    /// Set the domain's encryption policy: off, allow or require (root: CAP_NET_ADMIN).
    Encrypt {
        /// off, allow or require.
        policy: vmcs::crypto::Policy,
    },

    /// List connections from the module's debugfs (/sys/kernel/debug/vmcs/*/connections).
    Ss {
        /// Where the module's debugfs directory is.
        #[arg(long, hide = true, default_value = "/sys/kernel/debug/vmcs")]
        debugfs: PathBuf,
    },
}

/// `vmcs policy` actions.
#[derive(Subcommand, Debug, PartialEq)]
pub enum PolicyCmd {
    /// Show the rules and the denial counters (the default).
    Show,
    /// Add allow rules: `in CID:PORT...`, `out CID:PORT...`, `bind PORT...` (`any` for
    /// either). They are added in order; the first failure stops and says how many went in.
    Allow {
        list: ListArg,
        /// CID:PORT (in, out) or PORT (bind), one or more.
        #[arg(required = true, num_args = 1..)]
        targets: Vec<String>,
    },
    /// Remove allow rules (exactly as `show` prints them); what nothing allows is denied.
    Deny {
        list: ListArg,
        /// CID:PORT (in, out) or PORT (bind), one or more.
        #[arg(required = true, num_args = 1..)]
        targets: Vec<String>,
    },
    /// Remove every rule of LIST (default: all lists): deny everything but loopback.
    Clear { list: Option<ListArg> },
    /// Back to the default of LIST (default: all lists): `any:any`, everything allowed.
    Reset { list: Option<ListArg> },
}

/// A policy list on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListArg {
    In,
    Out,
    Bind,
}

impl From<ListArg> for vmcs::policy::List {
    fn from(l: ListArg) -> Self {
        match l {
            ListArg::In => vmcs::policy::List::In,
            ListArg::Out => vmcs::policy::List::Out,
            ListArg::Bind => vmcs::policy::List::Bind,
        }
    }
}

/// `vmcs key` operations.
#[derive(Subcommand, Debug, PartialEq)]
pub enum KeyOp {
    /// Install (replace) the key, read from stdin or FILE.
    Set {
        /// Read the key from this file instead of stdin.
        #[arg(short, long)]
        file: Option<PathBuf>,
    },
    /// Remove the key (the module wipes it).
    Clear,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vmcs").chain(args.iter().copied()))
    }

    #[test]
    fn key_and_encrypt_commands() {
        assert_eq!(
            parse(&["key", "set"]).unwrap().cmd,
            Cmd::Key {
                op: KeyOp::Set { file: None }
            }
        );
        assert_eq!(
            parse(&["key", "clear"]).unwrap().cmd,
            Cmd::Key { op: KeyOp::Clear }
        );
        assert_eq!(
            parse(&["encrypt", "require"]).unwrap().cmd,
            Cmd::Encrypt {
                policy: vmcs::crypto::Policy::Require
            }
        );
        assert!(parse(&["encrypt", "maybe"]).is_err());
        // No way to pass the key itself on the command line.
        assert!(parse(&["key", "set", "00112233"]).is_err());
    }

    #[test]
    fn simple_commands_and_global_json() {
        assert_eq!(parse(&["status"]).unwrap().cmd, Cmd::Status);
        assert!(!parse(&["status"]).unwrap().json);
        assert!(parse(&["--json", "peers"]).unwrap().json);
        assert!(parse(&["peers", "--json"]).unwrap().json);
        assert!(matches!(parse(&["ss"]).unwrap().cmd, Cmd::Ss { .. }));
    }

    #[test]
    fn policy_commands() {
        assert_eq!(
            parse(&["policy"]).unwrap().cmd,
            Cmd::Policy {
                domain: None,
                action: None
            }
        );
        assert_eq!(
            parse(&["policy", "allow", "in", "3:5000", "--domain", "1"])
                .unwrap()
                .cmd,
            Cmd::Policy {
                domain: Some(1),
                action: Some(PolicyCmd::Allow {
                    list: ListArg::In,
                    targets: vec!["3:5000".into()]
                })
            }
        );
        assert_eq!(
            parse(&["policy", "clear"]).unwrap().cmd,
            Cmd::Policy {
                domain: None,
                action: Some(PolicyCmd::Clear { list: None })
            }
        );
        assert_eq!(
            parse(&["policy", "deny", "bind", "7000", "7001"])
                .unwrap()
                .cmd,
            Cmd::Policy {
                domain: None,
                action: Some(PolicyCmd::Deny {
                    list: ListArg::Bind,
                    targets: vec!["7000".into(), "7001".into()]
                })
            }
        );
        assert!(parse(&["policy", "allow", "bind"]).is_err());
        assert!(parse(&["policy", "allow", "sideways", "1:2"]).is_err());
    }

    #[test]
    fn listen_and_connect() {
        assert_eq!(
            parse(&["listen", "5000"]).unwrap().cmd,
            Cmd::Listen {
                port: Some(5000),
                echo: false,
                keep_open: false
            }
        );
        assert_eq!(
            parse(&["listen", "any", "-k"]).unwrap().cmd,
            Cmd::Listen {
                port: Some(vmcs::PORT_ANY),
                echo: false,
                keep_open: true
            }
        );
        assert_eq!(
            parse(&["listen", "--echo"]).unwrap().cmd,
            Cmd::Listen {
                port: None,
                echo: true,
                keep_open: false
            }
        );
        assert_eq!(
            parse(&["connect", "2:5000", "-w", "500ms"]).unwrap().cmd,
            Cmd::Connect {
                addr: VmcsAddr::new(2, 5000),
                timeout: Some(Duration::from_millis(500))
            }
        );
        assert_eq!(
            parse(&["connect", "2"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["listen", "port"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["connect"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn send_recv() {
        assert_eq!(
            parse(&["send", "a.img", "3:6000"]).unwrap().cmd,
            Cmd::Send {
                file: "a.img".into(),
                addr: VmcsAddr::new(3, 6000),
                timeout: None
            }
        );
        assert_eq!(
            parse(&["recv", "6000", "-o", "-", "-f"]).unwrap().cmd,
            Cmd::Recv {
                port: 6000,
                output: Some("-".into()),
                force: true
            }
        );
    }

    #[test]
    fn ping() {
        let Cmd::Ping {
            peer,
            count,
            interval,
            size,
            serve,
            ..
        } = parse(&["ping", "2", "-c", "3", "-i", "0.2"]).unwrap().cmd
        else {
            panic!()
        };
        assert_eq!(
            (peer, count, interval, size, serve),
            (
                Some(VmcsAddr::new(2, ECHO_PORT)),
                3,
                Duration::from_millis(200),
                64,
                false
            )
        );
        let Cmd::Ping { peer, .. } = parse(&["ping", "2:99"]).unwrap().cmd else {
            panic!()
        };
        assert_eq!(peer, Some(VmcsAddr::new(2, 99)));
        let Cmd::Ping { serve, port, .. } = parse(&["ping", "--serve", "--port", "9"]).unwrap().cmd
        else {
            panic!()
        };
        assert!(serve);
        assert_eq!(port, Some(9));
        assert_eq!(
            parse(&["ping"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["ping", "2", "--serve"]).unwrap_err().kind(),
            ErrorKind::ArgumentConflict
        );
        let Cmd::Ping { peer, port, .. } = parse(&["ping", "2", "--port", "9"]).unwrap().cmd else {
            panic!()
        };
        assert_eq!((peer, port), (Some(VmcsAddr::new(2, ECHO_PORT)), Some(9)));
    }

    #[test]
    fn bench_sizes() {
        let Cmd::Bench { sizes, peer, .. } =
            parse(&["bench", "4", "--sizes", "1,2k,64K"]).unwrap().cmd
        else {
            panic!()
        };
        assert_eq!(sizes, vec![1, 2048, 65536]);
        assert_eq!(peer, VmcsAddr::new(4, ECHO_PORT));
        let Cmd::Bench { sizes, .. } = parse(&["bench", "4"]).unwrap().cmd else {
            panic!()
        };
        assert_eq!(sizes.len(), 6);
        assert!(parse(&["bench", "4", "--sizes", "65537"]).is_err());
        let Cmd::Bench { zero_copy, .. } = parse(&["bench", "4", "--zero-copy"]).unwrap().cmd
        else {
            panic!()
        };
        assert!(zero_copy);
        assert!(parse(&["bench", "4", "--sizes", "0"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn help_teaches_exit_codes() {
        let e = parse(&["--help"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
        let s = e.to_string();
        assert!(s.contains("Exit status"));
        assert!(s.contains("3  vmcs module not loaded"));
        assert!(s.contains("vmcs ping --serve"));
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
