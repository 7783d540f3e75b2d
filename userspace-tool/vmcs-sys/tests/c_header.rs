//! The Rust uapi in `vmcs-sys` (also `vmcs::sys`) against the C header, as the C compiler sees it: every
//! struct's size and every field's offset, the constants and the ioctl numbers, and
//! `sockaddr_vmcs` against `<linux/vm_sockets.h>`'s `sockaddr_vm`. Also compiles the header
//! and `examples/c/echo.c` with `-Wall -Wextra -Werror`.
//!
//! Needs a C compiler (`$CC`, default `cc`) and the Linux uapi headers (linux-libc-dev).

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use vmcs_sys as sys;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const CFLAGS: &[&str] = &["-Wall", "-Wextra", "-Werror", "-std=gnu11"];

fn compile(src: &Path, out: &Path) {
    let inc = root().join("include");
    let o = Command::new(cc())
        .args(CFLAGS)
        .arg("-I")
        .arg(&inc)
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {}: {e} (a C compiler is needed for this test)",
                cc()
            )
        });
    assert!(
        o.status.success(),
        "{} failed on {}:\n{}",
        cc(),
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// (C struct name, Rust size, [(field, Rust offset)]).
type Layout = Vec<(&'static str, usize, Vec<(&'static str, usize)>)>;

macro_rules! layouts {
    ($($c:literal => $s:ident { $($f:ident),* $(,)? })*) => {
        vec![$(($c, size_of::<sys::$s>(), vec![$((stringify!($f), offset_of!(sys::$s, $f))),*])),*]
    };
}

fn rust_layouts() -> Layout {
    layouts! {
        "vmcs_addr" => vmcs_addr { cid, port }
        "vmcs_peer_info" => vmcs_peer_info { id, state, generation, heartbeat_age_ms }
        "vmcs_info" => vmcs_info {
            abi_version, domain, local_cid, transport, region_size, max_peers, ring_size,
            max_msg_size, npeers, peers,
        }
        "vmcs_connect" => vmcs_connect { addr, timeout_ms, flags }
        "vmcs_accept" => vmcs_accept { flags, reserved, peer }
        "vmcs_opts" => vmcs_opts { mask, nonblock, rcvbuf, reserved }
        "vmcs_names" => vmcs_names { local, remote }
        "vmcs_bulk_setup" => vmcs_bulk_setup { size, timeout_ms, tx_size, rx_size }
        "vmcs_bulk_desc" => vmcs_bulk_desc { off, len }
        "vmcs_bulk_vec" => vmcs_bulk_vec { descs, count, flags }
        "vmcs_open_domain" => vmcs_open_domain { domain, flags }
        "vmcs_key" => vmcs_key { flags, len, key }
        "vmcs_crypto_info" => vmcs_crypto_info {
            policy, key_installed, handshakes, auth_failed, peer_refused, policy_refused,
            bad_frames,
        }
        "vmcs_policy_rule" => vmcs_policy_rule { list, cid, port, flags }
        "vmcs_policy_get" => vmcs_policy_get { rules, count, flags, denied_in, denied_out, denied_bind }
        "sockaddr_vmcs" => sockaddr_vmcs { svm_family, svm_reserved1, svm_port, svm_cid, svm_flags, svm_zero }
        // AF_VMCS's address is AF_VSOCK's, field for field.
        "sockaddr_vm" => sockaddr_vmcs { svm_family, svm_reserved1, svm_port, svm_cid, svm_flags, svm_zero }
    }
}

fn rust_constants() -> Vec<(&'static str, u64)> {
    macro_rules! consts { ($($n:ident),* $(,)?) => { vec![$((stringify!($n), sys::$n as u64)),*] } }
    consts![
        VMCS_ABI_VERSION,
        VMCS_CID_ANY,
        VMCS_CID_LOCAL,
        VMCS_PORT_ANY,
        VMCS_PRIVILEGED_PORTS,
        VMCS_MAX_MSG_SIZE,
        VMCS_MAX_PEERS,
        VMCS_PEER_ABSENT,
        VMCS_PEER_JOINING,
        VMCS_PEER_LIVE,
        VMCS_PEER_LEAVING,
        VMCS_TRANSPORT_IVSHMEM_PLAIN,
        VMCS_TRANSPORT_IVSHMEM_DOORBELL,
        VMCS_TRANSPORT_VSOCK,
        VMCS_OPT_NONBLOCK,
        VMCS_OPT_RCVBUF,
        VMCS_AF_DEFAULT,
        VMCS_IOC_MAGIC,
        VMCS_IOC_GET_INFO,
        VMCS_IOC_BIND,
        VMCS_IOC_CONNECT,
        VMCS_IOC_LISTEN,
        VMCS_IOC_ACCEPT,
        VMCS_IOC_SET_OPTS,
        VMCS_IOC_GET_NAMES,
        VMCS_IOC_SHUTDOWN,
        VMCS_IOC_BULK_SETUP,
        VMCS_IOC_BULK_SEND,
        VMCS_IOC_BULK_RECV,
        VMCS_IOC_BULK_RELEASE,
        VMCS_IOC_BULK_WAIT,
        VMCS_IOC_BULK_SENDV,
        VMCS_IOC_BULK_RECVV,
        VMCS_IOC_BULK_RELEASEV,
        VMCS_BULK_MAX_BATCH,
        VMCS_IOC_OPEN_DOMAIN,
        VMCS_MAX_BUSY_POLL_US,
        VMCS_IOC_SET_BUSY_POLL,
        VMCS_IOC_GET_BUSY_POLL,
        VMCS_ENCRYPT_OFF,
        VMCS_ENCRYPT_ALLOW,
        VMCS_ENCRYPT_REQUIRE,
        VMCS_KEY_LEN,
        VMCS_ENCRYPTED,
        VMCS_SOL_VMCS,
        VMCS_SO_ENCRYPT,
        VMCS_SO_ENCRYPTED,
        VMCS_IOC_SET_KEY,
        VMCS_IOC_CLEAR_KEY,
        VMCS_IOC_SET_DOMAIN_CRYPTO,
        VMCS_IOC_GET_CRYPTO,
        VMCS_IOC_SET_ENCRYPT,
        VMCS_IOC_GET_ENCRYPT,
        VMCS_POLICY_ALL,
        VMCS_POLICY_CONNECT_IN,
        VMCS_POLICY_CONNECT_OUT,
        VMCS_POLICY_BIND,
        VMCS_POLICY_MAX_RULES,
        VMCS_IOC_POLICY_ADD,
        VMCS_IOC_POLICY_DEL,
        VMCS_IOC_POLICY_CLEAR,
        VMCS_IOC_POLICY_RESET,
        VMCS_IOC_POLICY_GET,
    ]
}

/// Generates, compiles and runs a C program printing what the compiler sees for every
/// entry of the Rust tables; returns "key value" pairs.
fn c_values() -> BTreeMap<String, u64> {
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include <sys/socket.h>\n\
         #include <linux/vm_sockets.h>\n#include \"vmcs.h\"\n\
         #define P(k, v) printf(\"%s %llu\\n\", k, (unsigned long long)(v))\n\
         int main(void)\n{\n",
    );
    for (s, _, fields) in rust_layouts() {
        c += &format!("\tP(\"sizeof {s}\", sizeof(struct {s}));\n");
        for (f, _) in fields {
            c += &format!("\tP(\"offsetof {s}.{f}\", offsetof(struct {s}, {f}));\n");
        }
    }
    for (n, _) in rust_constants() {
        c += &format!("\tP(\"{n}\", {n});\n");
    }
    c += "\treturn 0;\n}\n";
    let d = scratch("c_layout");
    let src = d.join("layout.c");
    std::fs::write(&src, c).unwrap();
    let exe = d.join("layout");
    compile(&src, &exe);
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn layouts_and_constants_match_the_c_header() {
    let c = c_values();
    let mut mismatches = Vec::new();
    let mut check = |k: String, rust: u64| match c.get(&k) {
        Some(&v) if v == rust => {}
        other => mismatches.push(format!("{k}: Rust {rust}, C {other:?}")),
    };
    for (s, size, fields) in rust_layouts() {
        check(format!("sizeof {s}"), size as u64);
        for (f, off) in fields {
            check(format!("offsetof {s}.{f}"), off as u64);
        }
    }
    for (n, v) in rust_constants() {
        check(n.to_string(), v);
    }
    assert!(
        mismatches.is_empty(),
        "vmcs-sys differs from include/vmcs.h:\n{}",
        mismatches.join("\n")
    );
    assert!(c.len() > 50);
}

/// What include/vmcs.h declares, read from its text: every struct with its fields, and every
/// `VMCS_` name (macros and enum members).
fn header_declarations() -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let text = std::fs::read_to_string(root().join("include/vmcs.h")).unwrap();
    // Comments out.
    let mut src = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("/*") {
        src += &rest[..i];
        rest = &rest[i + rest[i..].find("*/").unwrap() + 2..];
    }
    src += rest;
    let ident = |s: &str| {
        s.trim()
            .trim_end_matches(|c: char| c != ']' && !c.is_alphanumeric() && c != '_')
            .split('[')
            .next()
            .unwrap()
            .rsplit(|c: char| !c.is_alphanumeric() && c != '_')
            .next()
            .unwrap()
            .to_string()
    };
    let mut structs = BTreeMap::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find("struct ") {
        let after = &rest[i + 7..];
        let name_end = after
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .unwrap();
        let (name, tail) = after.split_at(name_end);
        rest = tail;
        if let Some(body) = tail.trim_start().strip_prefix('{') {
            let end = body.find("};").unwrap();
            let fields = body[..end]
                .split(';')
                .filter(|f| !f.trim().is_empty())
                .map(ident)
                .collect();
            structs.insert(name.to_string(), fields);
            rest = &body[end..];
        }
    }
    let names = src
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| w.starts_with("VMCS_"))
        .map(String::from)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    (structs, names)
}

/// The tables above name everything the header declares, so a struct, field, ioctl or
/// constant added to the header without its Rust mirror fails here.
#[test]
fn every_declaration_of_the_header_is_checked() {
    let (structs, names) = header_declarations();
    assert!(
        structs.len() >= 11 && names.len() >= 30,
        "header parse: {structs:?} {names:?}"
    );
    let rust: BTreeMap<String, Vec<String>> = rust_layouts()
        .into_iter()
        .filter(|(s, _, _)| *s != "sockaddr_vm")
        .map(|(s, _, f)| {
            (
                s.to_string(),
                f.iter().map(|(f, _)| f.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        rust, structs,
        "Rust layouts vs the structs of include/vmcs.h"
    );
    let consts: Vec<String> = rust_constants()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let missing: Vec<&String> = names.iter().filter(|n| !consts.contains(n)).collect();
    assert!(missing.is_empty(), "not mirrored in vmcs-sys: {missing:?}");
}

#[test]
fn header_compiles_standalone_with_warnings_as_errors() {
    let d = scratch("c_header");
    let src = d.join("only_header.c");
    std::fs::write(&src, "#include \"vmcs.h\"\n#include \"vmcs.h\"\nint main(void) { return sizeof(struct vmcs_info) == 0; }\n")
        .unwrap();
    compile(&src, &d.join("only_header"));
}

#[test]
fn c_echo_example_compiles_with_warnings_as_errors() {
    let d = scratch("c_echo");
    compile(&root().join("examples/c/echo.c"), &d.join("echo"));
    // It runs and prints its usage (exit 2) without touching /dev/vmcs.
    let o = Command::new(d.join("echo")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("usage"));
}
