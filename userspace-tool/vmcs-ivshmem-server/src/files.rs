//! Files the server owns on the host (shared memory, listening socket,
//! pidfile).  Each is removed again when its guard is dropped.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

/// Removes `path` on drop, but only if it is still the file we created
/// (same device and inode), so a successor's file is never deleted.
#[derive(Debug)]
struct OwnedPath {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl OwnedPath {
    fn new(path: &Path) -> io::Result<Self> {
        let m = fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

impl Drop for OwnedPath {
    fn drop(&mut self) {
        if let Ok(m) = fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// The shared-memory object handed to every peer.
#[derive(Debug)]
pub struct Shm {
    file: File,
    _path: Option<OwnedPath>,
}

impl Shm {
    /// Create (or truncate) `path`, or an anonymous memfd when `None`, sized
    /// to `size` bytes of zeros.
    pub fn create(path: Option<&Path>, size: u64) -> io::Result<Self> {
        let (file, owned) = match path {
            Some(p) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(p)
                    .map_err(|e| annotate(e, "cannot create shm file", p))?;
                (file, Some(OwnedPath::new(p)?))
            }
            None => {
                let name = CString::new("vmcs-ivshmem").map_err(io::Error::other)?;
                let fd = memfd_create(&name, MemFdCreateFlag::MFD_CLOEXEC)?;
                (File::from(fd), None)
            }
        };
        file.set_len(size)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot size shm to {size}: {e}")))?;
        Ok(Self { file, _path: owned })
    }

    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

impl AsFd for Shm {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The listening socket plus its guards.
///
/// Next to the socket lives `<socket>.lock`, held with `flock` for the
/// server's lifetime: it tells a live server from a stale socket file left by
/// a killed one without connecting to it (a probe connection would look like
/// a joining peer to the running server).
#[derive(Debug)]
pub struct Listener {
    pub listener: UnixListener,
    // Drop order matters: remove both paths, then release the lock.
    _path: OwnedPath,
    _lock_path: OwnedPath,
    _lock: Flock<File>,
}

impl Listener {
    /// Bind `path` atomically: bind+listen on a temporary name in the same
    /// directory, then rename, so the path only appears once connections are
    /// accepted.  A stale socket is replaced; a socket of a live server or a
    /// non-socket file is an error.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let mut lock_name = path.as_os_str().to_owned();
        lock_name.push(".lock");
        let lock_path = PathBuf::from(lock_name);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| annotate(e, "cannot create lock file", &lock_path))?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(annotate(
                    io::ErrorKind::AddrInUse.into(),
                    "another server is listening on",
                    path,
                ))
            }
            Err((_, e)) => return Err(annotate(e.into(), "cannot lock", &lock_path)),
        };
        let lock_guard = OwnedPath::new(&lock_path)?;

        match fs::symlink_metadata(path) {
            // We hold the lock, so nobody serves this socket any more.
            Ok(m) if m.file_type().is_socket() => fs::remove_file(path)?,
            Ok(_) => {
                return Err(annotate(
                    io::ErrorKind::AlreadyExists.into(),
                    "refusing to replace non-socket file",
                    path,
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(annotate(e, "cannot stat", path)),
        }

        let tmp = path.with_file_name(format!(".ivs{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let listener =
            UnixListener::bind(&tmp).map_err(|e| annotate(e, "cannot bind socket", &tmp))?;
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(annotate(e, "cannot create socket", path));
        }
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            _path: OwnedPath::new(path)?,
            _lock_path: lock_guard,
            _lock: lock,
        })
    }
}

/// A pidfile, removed on drop.
#[derive(Debug)]
pub struct PidFile {
    _path: OwnedPath,
}

impl PidFile {
    pub fn create(path: &Path) -> io::Result<Self> {
        let mut f = File::create(path).map_err(|e| annotate(e, "cannot write pidfile", path))?;
        writeln!(f, "{}", std::process::id())?;
        Ok(Self {
            _path: OwnedPath::new(path)?,
        })
    }
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmcs-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn shm_file_is_sized_zeroed_and_removed() {
        let d = tmpdir("shm");
        let p = d.join("shm");
        fs::write(&p, b"stale contents").expect("write");
        let shm = Shm::create(Some(&p), 8192).expect("create");
        assert_eq!(shm.size().expect("size"), 8192);
        let mut buf = [0xffu8; 14];
        shm.file.read_exact_at(&mut buf, 0).expect("read");
        assert_eq!(buf, [0u8; 14]);
        drop(shm);
        assert!(!p.exists());
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn memfd_shm() {
        let shm = Shm::create(None, 1 << 20).expect("memfd");
        assert_eq!(shm.size().expect("size"), 1 << 20);
    }

    #[test]
    fn listener_replaces_stale_socket_but_not_live_one() {
        let d = tmpdir("sock");
        let p = d.join("s");
        // stale: bound then listener dropped, file left behind
        drop(UnixListener::bind(&p).expect("bind"));
        assert!(p.exists());
        let l = Listener::bind(&p).expect("replaces stale socket");
        let err = Listener::bind(&p).expect_err("live socket");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(l);
        assert!(!p.exists());
        assert!(!d.join("s.lock").exists());
        fs::write(&p, b"x").expect("write");
        assert!(Listener::bind(&p).is_err(), "regular file is not replaced");
        assert!(p.exists());
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn guard_does_not_remove_a_replaced_file() {
        let d = tmpdir("guard");
        let p = d.join("pid");
        let pf = PidFile::create(&p).expect("pidfile");
        assert_eq!(
            fs::read_to_string(&p).expect("read").trim(),
            std::process::id().to_string()
        );
        // replace it (rename keeps both inodes alive, so numbers differ)
        let other = d.join("other");
        fs::write(&other, b"other").expect("write");
        fs::rename(&other, &p).expect("rename");
        drop(pf);
        assert!(p.exists(), "someone else's file survives");
        let _ = fs::remove_dir_all(d);
    }
}
