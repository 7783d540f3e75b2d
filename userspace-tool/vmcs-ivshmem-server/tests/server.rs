//! End-to-end tests: run the real binary on a temporary socket and talk to it
//! like QEMU's ivshmem-doorbell device does.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{read, write, Pid};
use vmcs_ivshmem_server::wire::recv_msg;

const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- harness --

struct TestServer {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

fn test_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmcs-ivs-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create test dir");
    dir
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

impl TestServer {
    fn start(tag: &str, args: &[&str]) -> Self {
        let dir = test_dir(tag);
        let socket = dir.join("sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmcs-ivshmem-server"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&logs);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        let server = Self {
            child,
            dir,
            socket,
            logs,
        };
        server.wait_log("listening on");
        assert!(server.socket.exists());
        server
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn log_count(&self, needle: &str) -> usize {
        let logs = self.logs.lock().expect("log lock");
        logs.iter().filter(|l| l.contains(needle)).count()
    }

    fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while self.log_count(needle) == 0 {
            if start.elapsed() > TIMEOUT {
                panic!(
                    "no log line containing {needle:?}; logs:\n{}",
                    self.logs.lock().expect("log lock").join("\n")
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("kill");
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(start.elapsed() < TIMEOUT, "server did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "server died; logs:\n{}",
            self.logs.lock().expect("log lock").join("\n")
        );
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        s
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn recv(s: &UnixStream) -> (i64, Option<OwnedFd>) {
    match recv_msg(s.as_fd()) {
        Ok(Some(m)) => m,
        Ok(None) => panic!("unexpected EOF"),
        Err(e) => panic!("recv failed: {e}"),
    }
}

fn expect_eof(s: &UnixStream) {
    match recv_msg(s.as_fd()) {
        Ok(None) => {}
        Ok(Some((v, fd))) => panic!("expected EOF, got {v} (fd: {})", fd.is_some()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF, got error {e}"),
    }
}

/// Nothing more is queued on the socket right now.
fn expect_quiet(s: &UnixStream) {
    s.set_nonblocking(true).expect("nonblocking");
    let r = recv_msg(s.as_fd());
    s.set_nonblocking(false).expect("blocking");
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Ok(Some((v, _))) => panic!("unexpected extra message {v}"),
        other => panic!("unexpected {other:?}"),
    }
}

fn write_event(fd: &OwnedFd, value: u64) {
    assert_eq!(write(fd, &value.to_ne_bytes()), Ok(8));
}

/// Non-blocking read of an eventfd counter (the fds are EFD_NONBLOCK).
fn read_event(fd: &OwnedFd) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 8];
    match read(fd.as_raw_fd(), &mut buf) {
        Ok(8) => Some(u64::from_ne_bytes(buf)),
        Err(Errno::EAGAIN) => None,
        other => panic!("eventfd read: {other:?}"),
    }
}

/// A fake QEMU: what a client learned from the server.
struct Peer {
    sock: UnixStream,
    id: i64,
    shm: File,
    /// Eventfds for interrupting other peers, by peer id.
    others: BTreeMap<i64, Vec<OwnedFd>>,
    /// Own eventfds (receive interrupts).
    own: Vec<OwnedFd>,
    vectors: usize,
}

impl Peer {
    /// Connect and check the whole handshake: version, id, shm, then the
    /// vectors of `existing` peers (in this order), then our own vectors.
    fn join(server: &TestServer, vectors: usize, existing: &[i64]) -> Peer {
        let sock = server.connect();
        let (version, fd) = recv(&sock);
        assert_eq!((version, fd.is_none()), (0, true), "protocol version");
        let (id, fd) = recv(&sock);
        assert!(fd.is_none() && (0..65536).contains(&id), "own id {id}");
        let (marker, shm) = recv(&sock);
        assert_eq!(marker, -1, "shm marker");
        let shm = File::from(shm.expect("shm fd attached"));
        let mut peer = Peer {
            sock,
            id,
            shm,
            others: BTreeMap::new(),
            own: Vec::new(),
            vectors,
        };
        for &other in existing {
            peer.expect_join(other);
        }
        for _ in 0..vectors {
            let (v, fd) = recv(&peer.sock);
            assert_eq!(v, id, "own vector setup");
            peer.own.push(fd.expect("own eventfd attached"));
        }
        peer
    }

    fn expect_join(&mut self, other: i64) {
        assert_ne!(other, self.id);
        let mut fds = Vec::new();
        for vector in 0..self.vectors {
            let (v, fd) = recv(&self.sock);
            assert_eq!(v, other, "peer {}: vector {vector} of {other}", self.id);
            fds.push(fd.expect("peer eventfd attached"));
        }
        assert!(self.others.insert(other, fds).is_none(), "duplicate join");
    }

    fn expect_leave(&mut self, other: i64) {
        let (v, fd) = recv(&self.sock);
        assert_eq!((v, fd.is_none()), (other, true), "leave of {other}");
        assert!(self.others.remove(&other).is_some());
    }
}

/// `from` interrupts every vector of `to`; only the matching own eventfd of
/// `to` fires, with the written value: same eventfd objects on both sides.
fn assert_connected(from: &Peer, to: &Peer) {
    let fds = &from.others[&to.id];
    assert_eq!(fds.len(), to.own.len());
    for (vector, fd) in fds.iter().enumerate() {
        let value = 1000 * (from.id as u64 + 1) + vector as u64;
        write_event(fd, value);
        for (i, own) in to.own.iter().enumerate() {
            let want = (i == vector).then_some(value);
            assert_eq!(
                read_event(own),
                want,
                "{}->{} vector {vector}",
                from.id,
                to.id
            );
        }
    }
}

// ------------------------------------------------------------------ tests --

#[test]
fn handshake_sequence_eventfds_and_shared_memory() {
    let dir = test_dir("hs-shm");
    let shm_path = dir.join("shm");
    let shm_arg = shm_path.to_str().expect("utf8 path");
    let server = TestServer::start("handshake", &["--shm", shm_arg, "--size", "1M", "-n", "2"]);

    let mut a = Peer::join(&server, 2, &[]);
    assert_eq!(a.id, 0, "first client gets id 0");
    expect_quiet(&a.sock);
    server.wait_log("peer 0 joined (2 vectors)");

    let mut b = Peer::join(&server, 2, &[0]);
    assert_eq!(b.id, 1);
    a.expect_join(1);

    let c = Peer::join(&server, 2, &[0, 1]);
    assert_eq!(c.id, 2);
    a.expect_join(2);
    b.expect_join(2);
    for p in [&a, &b, &c] {
        expect_quiet(&p.sock);
    }

    for (from, to) in [(&a, &b), (&b, &a), (&a, &c), (&c, &a), (&b, &c), (&c, &b)] {
        assert_connected(from, to);
    }

    // One shared, zero-filled object of the right size, also visible on disk.
    for p in [&a, &b, &c] {
        assert_eq!(p.shm.metadata().expect("fstat").len(), 1 << 20);
    }
    let mut buf = [0xffu8; 16];
    c.shm.read_exact_at(&mut buf, 4096).expect("read");
    assert_eq!(buf, [0; 16]);
    a.shm.write_all_at(b"hello from a", 4096).expect("write");
    c.shm.read_exact_at(&mut buf[..12], 4096).expect("read");
    assert_eq!(&buf[..12], b"hello from a");
    let on_disk = File::open(&shm_path).expect("shm file");
    on_disk.read_exact_at(&mut buf[..12], 4096).expect("read");
    assert_eq!(&buf[..12], b"hello from a");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn disconnect_is_announced_and_rejoin_gets_a_new_id() {
    let server = TestServer::start("rejoin", &["--vectors", "1"]);
    let mut a = Peer::join(&server, 1, &[]);
    let b = Peer::join(&server, 1, &[0]);
    a.expect_join(1);

    drop(b);
    a.expect_leave(1);
    server.wait_log("peer 1 left");

    let b2 = Peer::join(&server, 1, &[0]);
    assert_eq!(b2.id, 2, "a rejoining peer gets a new id");
    a.expect_join(2);
    assert_connected(&a, &b2);
    assert_connected(&b2, &a);
    expect_quiet(&a.sock);
}

/// `--sticky-ids`: a rejoining peer gets its id back (the lowest free one), no leave or
/// join notice goes to the others, and the eventfds they kept for the id reach the new
/// holder (the same eventfd objects). A peer that joined while an id was away is told
/// about it when it comes back.
#[test]
fn sticky_ids_rejoin_with_the_same_id_and_eventfds() {
    let server = TestServer::start("sticky", &["--vectors", "2", "--sticky-ids"]);
    let mut a = Peer::join(&server, 2, &[]);
    let b = Peer::join(&server, 2, &[0]);
    a.expect_join(1);
    let c = Peer::join(&server, 2, &[0, 1]);
    a.expect_join(2);
    drop(b);
    server.wait_log("peer 1 left");
    drop(c);
    server.wait_log("peer 2 left");
    expect_quiet(&a.sock);
    // d takes id 1 while 2 is away: it hears of 0 only.
    let d = Peer::join(&server, 2, &[0]);
    assert_eq!(d.id, 1, "the lowest free id");
    expect_quiet(&a.sock);
    assert_connected(&a, &d);
    assert_connected(&d, &a);
    // e takes id 2: a already holds its eventfds, d does not.
    let e = Peer::join(&server, 2, &[0, 1]);
    assert_eq!(e.id, 2);
    expect_quiet(&a.sock);
    let mut d = d;
    d.expect_join(2);
    expect_quiet(&d.sock);
    assert_connected(&a, &e);
    assert_connected(&e, &a);
    assert_connected(&d, &e);
    assert_connected(&e, &d);
}

#[test]
fn ids_wrap_within_max_peers_and_full_table_is_refused() {
    let server = TestServer::start("wrap", &["--max-peers", "3"]);
    let mut a = Peer::join(&server, 1, &[]);
    let b = Peer::join(&server, 1, &[0]);
    a.expect_join(1);
    let mut c = Peer::join(&server, 1, &[0, 1]);
    a.expect_join(2);
    assert_eq!((a.id, b.id, c.id), (0, 1, 2));

    let d = server.connect();
    expect_eof(&d);
    server.wait_log("refusing connection: all 3 peer ids in use");

    drop(b);
    a.expect_leave(1);
    c.expect_leave(1);
    // next id would be 3 -> wraps to 0 (taken) -> 1
    let mut e = Peer::join(&server, 1, &[0, 2]);
    assert_eq!(e.id, 1);
    a.expect_join(1);
    c.expect_join(1);

    drop(a);
    c.expect_leave(0);
    e.expect_leave(0);
    // next is 2 (taken) -> 0; existing peers are announced in join order
    let f = Peer::join(&server, 1, &[2, 1]);
    assert_eq!(f.id, 0);
    c.expect_join(0);
    e.expect_join(0);
    assert_connected(&f, &c);
    assert_connected(&e, &f);
}

#[test]
fn survives_clients_dying_at_any_moment() {
    let mut server = TestServer::start("chaos", &["--vectors", "4", "--max-peers", "64"]);
    let mut a = Peer::join(&server, 4, &[]);

    // Connect and vanish before/while the server sends the handshake.
    for _ in 0..10 {
        drop(UnixStream::connect(&server.socket).expect("connect"));
    }
    // Read part of the handshake, then vanish.
    for _ in 0..5 {
        let s = server.connect();
        let _ = recv(&s);
        drop(s);
    }
    // Those 15 may have joined before they vanished; wait until the server has dropped them
    // all, or the next peer's handshake would also announce the ones not yet noticed.
    wait_until("the vanished clients to be gone", || {
        server.log_count(" left") + server.log_count("dropped during handshake") == 15
    });
    // Join properly, then violate the one-way protocol.
    {
        use std::io::Write;
        let mut bad = Peer::join(&server, 4, &[0]);
        bad.sock.write_all(b"garbage!").expect("write");
        server.wait_log(&format!("peer {} left (sent data", bad.id));
    }
    // Half-close the read side so sends hit a dead reader.
    let s = server.connect();
    s.shutdown(std::net::Shutdown::Read).expect("shutdown");
    drop(s);

    wait_until("all bad clients to be gone", || {
        server.log_count(" left") + server.log_count("dropped during handshake") == 17
    });
    server.assert_alive();

    // A stayed connected the whole time and saw consistent join/leave pairs.
    let z = Peer::join(&server, 4, &[0]);
    loop {
        let (id, fd) = recv(&a.sock);
        match fd {
            Some(fd) => {
                let mut fds = vec![fd];
                for _ in 1..4 {
                    let (v, fd) = recv(&a.sock);
                    assert_eq!(v, id);
                    fds.push(fd.expect("fd"));
                }
                assert!(a.others.insert(id, fds).is_none());
            }
            None => assert!(a.others.remove(&id).is_some(), "leave of unknown {id}"),
        }
        if id == z.id {
            break;
        }
    }
    assert_eq!(a.others.keys().copied().collect::<Vec<_>>(), vec![z.id]);
    assert_connected(&a, &z);
    assert_connected(&z, &a);
    server.assert_alive();
}

#[test]
fn sigterm_and_sigint_remove_socket_shm_and_pidfile() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let dir = test_dir(&format!("sig-files-{sig}"));
        let (shm, pid) = (dir.join("shm"), dir.join("pid"));
        let args = [
            "--shm",
            shm.to_str().expect("utf8"),
            "--pidfile",
            pid.to_str().expect("utf8"),
            "--size",
            "64K",
        ];
        let mut server = TestServer::start(&format!("sig-{sig}"), &args);
        assert_eq!(fs::metadata(&shm).expect("shm file").len(), 64 << 10);
        let pid_text = fs::read_to_string(&pid).expect("pidfile");
        assert_eq!(pid_text.trim(), server.child.id().to_string());
        let a = Peer::join(&server, 1, &[]);

        server.signal(sig);
        let status = server.wait_exit();
        assert!(status.success(), "{sig}: exit status {status}");
        let lock = server.path("sock.lock");
        for p in [&server.socket, &lock, &shm, &pid] {
            assert!(!p.exists(), "{sig}: {} left behind", p.display());
        }
        // Clients just see the connection close; no fake leave notices.
        expect_eof(&a.sock);
        server.wait_log(&format!("received {sig}"));
        let _ = fs::remove_dir_all(dir);
    }
}

#[test]
fn second_server_on_a_live_socket_is_refused() {
    let mut first = TestServer::start("live", &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_vmcs-ivshmem-server"))
        .arg("--socket")
        .arg(&first.socket)
        .output()
        .expect("run second server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another server is listening"), "{err}");
    first.assert_alive();
    assert_eq!(first.log_count("joined"), 0, "no probe connection was made");
    let a = Peer::join(&first, 1, &[]);
    assert_eq!(a.id, 0);
}

#[test]
fn bad_arguments_are_rejected() {
    for args in [
        &["--socket", "/nonexistent/x", "--size", "3M"][..],
        &["--socket", "/nonexistent/x", "--vectors", "0"],
        &["--socket", "/nonexistent/x", "--max-peers", "65"],
        &["--size", "1M"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vmcs-ivshmem-server"))
            .args(args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // Valid arguments but an unusable socket directory: clean failure.
    let out = Command::new(env!("CARGO_BIN_EXE_vmcs-ivshmem-server"))
        .args(["--socket", "/nonexistent/dir/sock"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error:"));
}

// ------------------------------------------------------------ QEMU smoke --

fn qemu(socket: &Path, log: &Path) -> Child {
    Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-nographic",
            "-nodefaults",
            "-M",
            "pc",
            "-m",
            "64",
        ])
        .arg("-chardev")
        .arg(format!("socket,path={},id=iv", socket.display()))
        .args(["-device", "ivshmem-doorbell,chardev=iv,vectors=2", "-S"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("qemu log"))
        .spawn()
        .expect("spawn qemu")
}

/// Two real QEMUs join, one dies, the other survives.  Needs
/// qemu-system-x86_64 (Debian: qemu-system-x86):
/// `cargo test -- --ignored qemu`.
#[test]
#[ignore = "needs qemu-system-x86_64; run with --ignored"]
fn qemu_doorbell_devices_join_and_leave() {
    let server = TestServer::start("qemu", &["--vectors", "2", "--size", "1M"]);
    let (log_a, log_b, log_c) = (
        server.path("a.log"),
        server.path("b.log"),
        server.path("c.log"),
    );
    let mut a = qemu(&server.socket, &log_a);
    server.wait_log("peer 0 joined (2 vectors)");
    let mut b = qemu(&server.socket, &log_b);
    server.wait_log("peer 1 joined (2 vectors)");

    a.kill().expect("kill qemu a");
    let _ = a.wait();
    server.wait_log("peer 0 left");
    thread::sleep(Duration::from_millis(500));
    assert!(b.try_wait().expect("try_wait").is_none(), "qemu b died");

    let mut c = qemu(&server.socket, &log_c);
    server.wait_log("peer 2 joined (2 vectors)");
    thread::sleep(Duration::from_millis(500));
    for q in [&mut b, &mut c] {
        assert!(q.try_wait().expect("try_wait").is_none(), "qemu died");
        let _ = q.kill();
        let _ = q.wait();
    }
    for log in [&log_a, &log_b, &log_c] {
        let text = fs::read_to_string(log).unwrap_or_default();
        assert!(text.trim().is_empty(), "qemu complained: {text}");
    }
}
