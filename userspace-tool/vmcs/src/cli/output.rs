//! Text and JSON output: tables, human-readable sizes and rates, and the status, peers,
//! ping, bench and ss reports (pure functions of their data, so tests use fake data).

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use vmcs::{Backend, Info, VmcsAddr};

/// A text table: a header row and rows, columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Left-aligned columns separated by two spaces, no trailing blanks.
    pub fn render(&self) -> String {
        let ncol = self
            .headers
            .len()
            .max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut w = vec![0; ncol];
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', w[i] - c.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `512 B`, `4.0 KiB`, `1.5 MiB`, `2.0 GiB`.
pub fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

/// Bytes per second, human-readable.
pub fn rate(bytes_per_s: f64) -> String {
    if !bytes_per_s.is_finite() {
        return "-".into();
    }
    format!("{}/s", bytes(bytes_per_s as u64))
}

/// Milliseconds with 3 decimals, as ping prints them.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// `m:ss` or `h:mm:ss`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

pub fn pretty_json(v: &impl Serialize) -> String {
    serde_json::to_string_pretty(v).expect("serializable") + "\n"
}

// ---- status / peers ----

pub fn status_json(backend: &Backend, info: &Info, version: Option<&str>) -> Value {
    let mut v = serde_json::to_value(info).expect("serializable");
    v["backend"] = json!(backend.describe());
    v["module_version"] = json!(version);
    v
}

/// `vmcs policy`: one `allow LIST TARGET` line per rule, then the denial counters (the
/// format of debugfs `policy`).
pub fn policy_text(p: &vmcs::policy::Policy) -> String {
    let mut s = String::new();
    for r in &p.rules {
        s += &format!("allow {r}\n");
    }
    if p.rules.is_empty() {
        s += "(no rules: everything but loopback is denied)\n";
    }
    s += &format!(
        "denied_in {}\ndenied_out {}\ndenied_bind {}\n",
        p.denied.connect_in, p.denied.connect_out, p.denied.bind
    );
    s
}

/// The `policy` row of `vmcs status`, aligned with the others.
pub fn status_policy_line(p: &vmcs::policy::Policy) -> String {
    format!(
        "{:<16}{} rules; denied: in {}, out {}, bind {}\n",
        "policy",
        p.rules.len(),
        p.denied.connect_in,
        p.denied.connect_out,
        p.denied.bind
    )
}

pub fn status_text(backend: &Backend, info: &Info, version: Option<&str>) -> String {
    let live = info
        .peers
        .iter()
        .filter(|p| p.state == vmcs::PeerState::Live)
        .count();
    let mut t = Table::default();
    let mut kv = |k: &str, v: String| t.row(vec![k.to_string(), v]);
    kv("backend", backend.describe());
    kv("module version", version.unwrap_or("unknown").to_string());
    kv("abi version", info.abi_version.to_string());
    kv("domain", info.domain.to_string());
    kv("local cid", info.local_cid.to_string());
    kv("transport", info.transport.name());
    kv("region", bytes(info.region_size));
    kv("ring size", bytes(info.ring_size.into()));
    kv("max message", bytes(info.max_msg_size.into()));
    kv(
        "peers",
        format!(
            "{} present, {live} live (room for {})",
            info.peers.len(),
            info.max_peers
        ),
    );
    // The header row is empty: skip it.
    t.render().trim_start_matches('\n').to_string()
}

/// The encryption rows of `vmcs status` (never the key).
pub fn crypto_text(c: &vmcs::crypto::CryptoInfo) -> String {
    format!(
        "encryption      policy {}, key {}\n\
         crypto counters handshakes {}, auth_failed {}, peer_refused {}, policy_refused {}, \
         bad_frames {}\n",
        c.policy.name(),
        if c.key_installed { "installed" } else { "none" },
        c.handshakes,
        c.auth_failed,
        c.peer_refused,
        c.policy_refused,
        c.bad_frames
    )
}

/// The `domains` row of `vmcs status` in a guest with more than one domain (an ivshmem
/// device and vsock: AF_VMCS picks the transport per peer, docs/architecture.md
/// "Transport per peer"): each domain's index, transport and this guest's cid there.
pub fn status_domains_line(all: &[Info]) -> String {
    let d: Vec<String> = all
        .iter()
        .map(|i| format!("{} {} (cid {})", i.domain, i.transport.name(), i.local_cid))
        .collect();
    format!("{:<16}{}\n", "domains", d.join(", "))
}

/// The peers of every domain in one table, each with its domain's transport.
pub fn peers_table_all(all: &[Info]) -> String {
    // TRANSPORT: what carries this peer's frames (the domain's transport: an ivshmem
    // region, or vsock, whose cids are vsock cids).
    let mut t = Table::new(&["CID", "STATE", "GENERATION", "HEARTBEAT", "TRANSPORT", ""]);
    for info in all {
        peer_rows(&mut t, info);
    }
    t.render()
}

fn peer_rows(t: &mut Table, info: &Info) {
    for p in &info.peers {
        t.row(vec![
            p.id.to_string(),
            p.state.name(),
            p.generation.to_string(),
            p.heartbeat_age_ms
                .map_or("-".into(), |a| format!("{a} ms ago")),
            info.transport.name(),
            if p.is_self {
                "(this guest)".into()
            } else {
                String::new()
            },
        ]);
    }
}

// ---- ping / bench statistics ----

/// Round-trip statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RttStats {
    pub min_ms: f64,
    pub avg_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mdev_ms: f64,
}

impl RttStats {
    /// None if there are no samples. p99 is the nearest-rank 99th percentile.
    pub fn from_samples(samples: &[Duration]) -> Option<RttStats> {
        if samples.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let avg = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / n;
        let rank = ((0.99 * n).ceil() as usize).clamp(1, v.len());
        Some(RttStats {
            min_ms: v[0],
            avg_ms: avg,
            p99_ms: v[rank - 1],
            max_ms: v[v.len() - 1],
            mdev_ms: var.sqrt(),
        })
    }
}

/// The outcome of `vmcs ping`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingSummary {
    pub peer: String,
    pub size: usize,
    pub sent: u32,
    pub received: u32,
    pub loss_percent: f64,
    pub time_ms: f64,
    pub rtt: Option<RttStats>,
}

pub fn ping_summary_text(s: &PingSummary) -> String {
    let mut out = format!(
        "--- vmcs ping {} ---\n{} sent, {} received, {:.0}% loss, time {:.0} ms\n",
        s.peer, s.sent, s.received, s.loss_percent, s.time_ms
    );
    if let Some(r) = &s.rtt {
        out += &format!(
            "rtt min/avg/p99/max/mdev = {:.3}/{:.3}/{:.3}/{:.3}/{:.3} ms\n",
            r.min_ms, r.avg_ms, r.p99_ms, r.max_ms, r.mdev_ms
        );
    }
    out
}

/// One row of `vmcs bench`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchRow {
    pub size: usize,
    pub rounds: u32,
    pub rtt: RttStats,
    /// Messages echoed per second with several in flight.
    pub msgs_per_s: f64,
    /// Payload bytes per second, one direction.
    pub bytes_per_s: f64,
    /// Messages in flight during the throughput phase.
    pub window: usize,
}

/// One size of `vmcs bench --zero-copy`.
#[derive(Debug, serde::Serialize)]
pub struct ZeroCopyRow {
    /// Bytes per range.
    pub size: usize,
    /// Bytes of our extent.
    pub extent: usize,
    /// Ranges lent (and read in place by the sink).
    pub ranges: u64,
    pub ranges_per_s: f64,
    /// Payload bytes per second, one direction.
    pub bytes_per_s: f64,
}

pub fn zero_copy_table(rows: &[ZeroCopyRow]) -> String {
    let mut t = Table::new(&["SIZE", "EXTENT", "RANGES/S", "THROUGHPUT"]);
    for r in rows {
        t.row(vec![
            bytes(r.size as u64),
            bytes(r.extent as u64),
            format!("{:.0}", r.ranges_per_s),
            rate(r.bytes_per_s),
        ]);
    }
    t.render()
}

pub fn bench_table(rows: &[BenchRow]) -> String {
    let mut t = Table::new(&[
        "SIZE",
        "RTT AVG ms",
        "RTT P99 ms",
        "RTT MAX ms",
        "MSG/S",
        "THROUGHPUT",
    ]);
    for r in rows {
        t.row(vec![
            bytes(r.size as u64),
            format!("{:.3}", r.rtt.avg_ms),
            format!("{:.3}", r.rtt.p99_ms),
            format!("{:.3}", r.rtt.max_ms),
            format!("{:.0}", r.msgs_per_s),
            rate(r.bytes_per_s),
        ]);
    }
    t.render()
}

// ---- send / recv, errors ----

/// The last line of `vmcs send` (`verb` "sent") and `vmcs recv` ("received"), e.g.
/// `sent disk.img (64.0 MiB) to 2:6000 in 3.20 s (20.0 MiB/s), sha256 <hex>`.
pub fn transfer_text(
    verb: &str,
    name: &str,
    size: u64,
    secs: f64,
    sha256: &str,
    peer: VmcsAddr,
) -> String {
    let dir = if verb == "sent" { "to" } else { "from" };
    format!(
        "{verb} {name} ({}) {dir} {peer} in {secs:.2} s ({}), sha256 {sha256}",
        bytes(size),
        rate(size as f64 / secs),
    )
}

/// `vmcs send --json` / `vmcs recv --json`: one line.
pub fn transfer_json(name: &str, size: u64, secs: f64, sha256: &str, peer: VmcsAddr) -> Value {
    json!({ "file": name, "bytes": size, "seconds": secs, "bytes_per_s": size as f64 / secs,
            "sha256": sha256, "peer": peer.to_string() })
}

/// What a failed command prints on stdout with --json (its message also goes to stderr).
pub fn error_json(msg: &str, exit_code: i32) -> Value {
    json!({ "error": msg, "exit_code": exit_code })
}

// ---- ss ----

/// One domain's connection table from debugfs: a header line of column names, then one
/// whitespace-separated row per connection; blank lines and `#` comments are skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnTable {
    pub domain: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

pub fn parse_connections(domain: &str, text: &str) -> Result<ConnTable, String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let Some(header) = lines.next() else {
        return Ok(ConnTable {
            domain: domain.into(),
            columns: Vec::new(),
            rows: Vec::new(),
        });
    };
    let columns: Vec<String> = header.split_whitespace().map(str::to_string).collect();
    let mut rows = Vec::new();
    for (i, l) in lines.enumerate() {
        let r: Vec<String> = l.split_whitespace().map(str::to_string).collect();
        if r.len() != columns.len() {
            return Err(format!(
                "domain {domain}: row {} has {} fields, the header {}: {l:?}",
                i + 1,
                r.len(),
                columns.len()
            ));
        }
        rows.push(r);
    }
    Ok(ConnTable {
        domain: domain.into(),
        columns,
        rows,
    })
}

/// All domains in one table with a DOMAIN column; columns are the union, in order seen.
pub fn ss_table(tables: &[ConnTable]) -> String {
    let mut cols: Vec<String> = Vec::new();
    for t in tables {
        for c in &t.columns {
            if !cols.contains(c) {
                cols.push(c.clone());
            }
        }
    }
    let mut headers = vec!["DOMAIN".to_string()];
    headers.extend(cols.iter().map(|c| c.to_uppercase()));
    let mut out = Table {
        headers,
        rows: Vec::new(),
    };
    for t in tables {
        for r in &t.rows {
            let mut row = vec![t.domain.clone()];
            for c in &cols {
                row.push(
                    t.columns
                        .iter()
                        .position(|x| x == c)
                        .map_or("-".into(), |i| r[i].clone()),
                );
            }
            out.row(row);
        }
    }
    out.render()
}

pub fn ss_json(tables: &[ConnTable]) -> Value {
    let mut v = Vec::new();
    for t in tables {
        for r in &t.rows {
            let mut o = serde_json::Map::new();
            o.insert("domain".into(), json!(t.domain));
            for (c, x) in t.columns.iter().zip(r) {
                // Numbers stay numbers.
                let val = x.parse::<u64>().map_or_else(|_| json!(x), |n| json!(n));
                o.insert(c.clone(), val);
            }
            v.push(Value::Object(o));
        }
    }
    Value::Array(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmcs::{sys, Info};

    fn fake_info() -> Info {
        let mut raw = sys::vmcs_info {
            abi_version: 1,
            domain: 0,
            local_cid: 2,
            transport: sys::VMCS_TRANSPORT_IVSHMEM_DOORBELL,
            region_size: 4 << 20,
            max_peers: 8,
            ring_size: 64 << 10,
            max_msg_size: 64 << 10,
            npeers: 3,
            ..Default::default()
        };
        raw.peers[0] = sys::vmcs_peer_info {
            id: 1,
            state: sys::VMCS_PEER_LIVE,
            generation: 4,
            heartbeat_age_ms: 12,
        };
        raw.peers[1] = sys::vmcs_peer_info {
            id: 2,
            state: sys::VMCS_PEER_LIVE,
            generation: 1,
            heartbeat_age_ms: 0,
        };
        raw.peers[2] = sys::vmcs_peer_info {
            id: 3,
            state: sys::VMCS_PEER_JOINING,
            generation: 2,
            heartbeat_age_ms: u32::MAX,
        };
        Info::from_raw(&raw)
    }

    #[test]
    fn table_alignment() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xyz".into(), "1".into()]);
        t.row(vec!["q".into(), String::new()]);
        assert_eq!(t.render(), "A    LONGER\nxyz  1\nq\n");
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(4 << 20), "4.0 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(rate(2.0 * 1024.0 * 1024.0), "2.0 MiB/s");
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
        assert_eq!(ms(Duration::from_micros(1234)), "1.234");
    }

    #[test]
    fn status_and_peers_text() {
        let i = fake_info();
        let s = status_text(&Backend::Device, &i, Some("0.1.0"));
        assert!(s.contains("backend         /dev/vmcs\n"), "{s}");
        assert!(s.contains("module version  0.1.0\n"));
        assert!(s.contains("local cid       2\n"));
        assert!(s.contains("transport       ivshmem-doorbell\n"));
        assert!(s.contains("region          4.0 MiB\n"));
        assert!(s.contains("peers           3 present, 2 live (room for 8)\n"));
        let s = status_text(&Backend::Device, &i, None);
        assert!(s.contains("module version  unknown\n"), "{s}");
        assert_eq!(
            peers_table_all(std::slice::from_ref(&i)),
            "CID  STATE    GENERATION  HEARTBEAT  TRANSPORT\n\
             1    live     4           12 ms ago  ivshmem-doorbell\n\
             2    live     1           0 ms ago   ivshmem-doorbell  (this guest)\n\
             3    joining  2           -          ivshmem-doorbell\n"
        );
    }

    /// A dual guest: both domains in `status` and `peers`, each peer with its transport.
    #[test]
    fn status_and_peers_of_two_domains() {
        let iv = fake_info();
        let mut vs = fake_info();
        vs.domain = 1;
        vs.local_cid = 4;
        vs.transport = vmcs::Transport::Vsock;
        vs.peers.truncate(1);
        vs.peers[0].id = 5;
        let all = [iv, vs];
        assert_eq!(
            status_domains_line(&all),
            "domains         0 ivshmem-doorbell (cid 2), 1 vsock (cid 4)\n"
        );
        let t = peers_table_all(&all);
        assert!(
            t.contains("\n1    live     4           12 ms ago  ivshmem-doorbell\n"),
            "{t}"
        );
        assert!(
            t.ends_with("\n5    live     4           12 ms ago  vsock\n"),
            "{t}"
        );
    }

    #[test]
    fn status_json_shape() {
        let v = status_json(&Backend::Socket { family: 46 }, &fake_info(), Some("0.1.0"));
        assert_eq!(v["backend"], "AF_VMCS socket (family 46)");
        assert_eq!(v["module_version"], "0.1.0");
        let v = status_json(&Backend::Device, &fake_info(), None);
        assert_eq!(v["module_version"], Value::Null);
        assert_eq!(v["local_cid"], 2);
        assert_eq!(v["region_size"], 4 << 20);
        assert_eq!(v["peers"][2]["state"], "joining");
        assert_eq!(v["peers"][2]["heartbeat_age_ms"], Value::Null);
        assert_eq!(v["peers"][1]["is_self"], true);
    }

    #[test]
    fn rtt_stats() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let r = RttStats::from_samples(&s).unwrap();
        assert_eq!((r.min_ms, r.p99_ms, r.max_ms), (1.0, 99.0, 100.0));
        assert!((r.avg_ms - 50.5).abs() < 1e-9);
        assert!(RttStats::from_samples(&[]).is_none());
        let one = RttStats::from_samples(&[Duration::from_micros(500)]).unwrap();
        assert_eq!((one.p99_ms, one.mdev_ms), (0.5, 0.0));
    }

    #[test]
    fn ping_summary() {
        let s = PingSummary {
            peer: "2:7007".into(),
            size: 64,
            sent: 4,
            received: 3,
            loss_percent: 25.0,
            time_ms: 3001.2,
            rtt: RttStats::from_samples(&[
                Duration::from_micros(100),
                Duration::from_micros(200),
                Duration::from_micros(300),
            ]),
        };
        assert_eq!(
            ping_summary_text(&s),
            "--- vmcs ping 2:7007 ---\n4 sent, 3 received, 25% loss, time 3001 ms\n\
             rtt min/avg/p99/max/mdev = 0.100/0.200/0.300/0.300/0.082 ms\n"
        );
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["received"], 3);
        assert_eq!(j["rtt"]["max_ms"], 0.3);
    }

    #[test]
    fn bench_output() {
        let rows = vec![BenchRow {
            size: 4096,
            rounds: 10,
            rtt: RttStats {
                min_ms: 0.01,
                avg_ms: 0.02,
                p99_ms: 0.03,
                max_ms: 0.04,
                mdev_ms: 0.0,
            },
            msgs_per_s: 100000.0,
            bytes_per_s: 409600000.0,
            window: 16,
        }];
        assert_eq!(
            bench_table(&rows),
            "SIZE     RTT AVG ms  RTT P99 ms  RTT MAX ms  MSG/S   THROUGHPUT\n\
             4.0 KiB  0.020       0.030       0.040       100000  390.6 MiB/s\n"
        );
        let j = serde_json::to_value(&rows).unwrap();
        assert_eq!(j[0]["size"], 4096);
        assert_eq!(j[0]["rtt"]["p99_ms"], 0.03);
    }

    #[test]
    fn ss_parsing_and_output() {
        let t0 = parse_connections(
            "0",
            "# vmcs connections\nlocal remote state rx_bytes tx_bytes\n2:1024 3:5000 established 10 20\n\n2:5000 4:1025 listen 0 0\n",
        )
        .unwrap();
        assert_eq!(t0.rows.len(), 2);
        let t1 =
            parse_connections("1", "local remote state credit\n2:7 1:9 closing 4096\n").unwrap();
        assert_eq!(
            ss_table(&[t0.clone(), t1.clone()]),
            "DOMAIN  LOCAL   REMOTE  STATE        RX_BYTES  TX_BYTES  CREDIT\n\
             0       2:1024  3:5000  established  10        20        -\n\
             0       2:5000  4:1025  listen       0         0         -\n\
             1       2:7     1:9     closing      -         -         4096\n"
        );
        let j = ss_json(&[t0, t1]);
        assert_eq!(j[0]["rx_bytes"], 10);
        assert_eq!(j[0]["local"], "2:1024");
        assert_eq!(j[2]["domain"], "1");
        assert!(parse_connections("0", "a b\n1 2 3\n").is_err());
        assert!(parse_connections("0", "").unwrap().rows.is_empty());
    }

    #[test]
    fn peers_json_shape() {
        let s = pretty_json(&fake_info().peers);
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[0]["id"], 1);
        assert_eq!(v[0]["state"], "live");
        assert_eq!(v[0]["generation"], 4);
        assert_eq!(v[0]["heartbeat_age_ms"], 12);
        assert_eq!(v[1]["is_self"], true);
        assert_eq!(v[2]["heartbeat_age_ms"], Value::Null);
        // Pretty-printed, one field per line (what scripts grep).
        assert!(
            s.contains("\n    \"id\": 1,\n    \"state\": \"live\",\n"),
            "{s}"
        );
        assert!(s.ends_with("]\n"));
    }

    #[test]
    fn transfer_lines() {
        let h = "ab".repeat(32);
        assert_eq!(
            transfer_text(
                "sent",
                "disk.img",
                64 << 20,
                3.2,
                &h,
                VmcsAddr::new(2, 6000)
            ),
            format!("sent disk.img (64.0 MiB) to 2:6000 in 3.20 s (20.0 MiB/s), sha256 {h}")
        );
        assert_eq!(
            transfer_text("received", "/tmp/x", 512, 0.5, &h, VmcsAddr::new(1, 49152)),
            format!("received /tmp/x (512 B) from 1:49152 in 0.50 s (1.0 KiB/s), sha256 {h}")
        );
        let j = transfer_json("x", 2048, 2.0, &h, VmcsAddr::new(3, 9));
        assert_eq!(j["bytes"], 2048);
        assert_eq!(j["bytes_per_s"], 1024.0);
        assert_eq!(j["peer"], "3:9");
        assert_eq!(j["sha256"], h.as_str());
        assert!(!j.to_string().contains('\n'));
    }

    #[test]
    fn error_json_line() {
        assert_eq!(
            error_json("finding vmcs: not loaded", 3).to_string(),
            r#"{"error":"finding vmcs: not loaded","exit_code":3}"#
        );
    }

    /// The table exactly as the module's debugfs `connections` writes it (module/conn:
    /// `CONNECTIONS_HEADER`, `Endpoint::describe`): listeners have remote `-`, the last
    /// column is the reason of the last reset (`-` for none; module/conn/reset.rs).
    #[test]
    fn ss_parses_the_module_table() {
        let t = parse_connections(
            "vmcs0",
            "local remote state rx_bytes tx_bytes rx_msgs tx_msgs rx_queued rx_queued_msgs credit resets reset_reason\n\
             0:6000 - listen 0 0 0 0 0 0 0 0 -\n\
             0:6000 1:49152 established 50500 50500 100 100 0 0 262144 0 -\n\
             0:6000 2:40001 closed 0 0 0 0 0 0 0 1 credit_overrun\n",
        )
        .unwrap();
        assert_eq!(t.rows.len(), 3);
        let text = ss_table(std::slice::from_ref(&t));
        assert!(text.contains("RESET_REASON"), "{text}");
        assert!(text.contains("credit_overrun"), "{text}");
        let j = ss_json(&[t]);
        assert_eq!(j[0]["remote"], "-");
        assert_eq!(j[1]["state"], "established");
        assert_eq!(j[1]["rx_bytes"], 50500);
        assert_eq!(j[1]["credit"], 262144);
        assert_eq!(j[1]["reset_reason"], "-");
        assert_eq!(j[2]["resets"], 1);
        assert_eq!(j[2]["reset_reason"], "credit_overrun");
    }

    /// A module before the `reset_reason` column: the same rows, one column less.
    #[test]
    fn ss_parses_the_table_without_reset_reason() {
        let t = parse_connections(
            "vmcs0",
            "local remote state rx_bytes tx_bytes rx_msgs tx_msgs rx_queued rx_queued_msgs credit resets\n\
             0:6000 1:49152 established 50500 50500 100 100 0 0 262144 0\n",
        )
        .unwrap();
        let j = ss_json(&[t]);
        assert_eq!(j[0]["resets"], 0);
        assert!(j[0].get("reset_reason").is_none());
    }
}
