//! Typed errors.

use std::io;

/// What went wrong, sorted into the cases a caller acts on differently.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `/dev/vmcs` nor `/sys/module/vmcs/parameters/af` exists.
    #[error(
        "the vmcs module is not loaded: no /dev/vmcs and no /sys/module/vmcs/parameters/af \
         (load it with `insmod vmcs.ko` or `modprobe vmcs`)"
    )]
    ModuleNotLoaded,
    /// The module is loaded but no ivshmem device is bound to it (`ENODEV`).
    #[error(
        "no ivshmem device is bound to vmcs (ENODEV): start the guest with an ivshmem device \
         (-device ivshmem-plain or ivshmem-doorbell) and check `dmesg | grep vmcs`"
    )]
    NoDevice,
    /// No live peer with that cid in the domain (`EHOSTUNREACH`).
    #[error("peer absent: no live guest with that cid shares the region (EHOSTUNREACH); see `vmcs peers`")]
    PeerAbsent,
    /// The peer is there but nothing listens on the port (`ECONNREFUSED`).
    #[error("connection refused: nothing listens on that port of the peer (ECONNREFUSED)")]
    Refused,
    /// `EACCES` / `EPERM`.
    #[error(
        "permission denied: /dev/vmcs is mode 0660 by default (module parameter devmode; \
         run as root or join its group), and ports below 1024 need CAP_NET_BIND_SERVICE"
    )]
    PermissionDenied,
    /// A connect, read or write timeout expired (`ETIMEDOUT`, or a poll timeout).
    #[error("timed out")]
    TimedOut,
    /// The connection was reset: the peer closed, crashed or left the domain.
    #[error("connection reset: the peer closed the connection, crashed or left the domain")]
    Reset,
    /// Anything else.
    #[error(transparent)]
    Io(io::Error),
}

/// `Result<T, vmcs::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Sorts an errno into the typed cases.
    pub fn from_errno(errno: i32) -> Self {
        Self::from(io::Error::from_raw_os_error(errno))
    }

    /// The `io::ErrorKind` this error converts to.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::ModuleNotLoaded => io::ErrorKind::NotFound,
            Error::NoDevice => io::ErrorKind::NotFound,
            Error::PeerAbsent => io::ErrorKind::HostUnreachable,
            Error::Refused => io::ErrorKind::ConnectionRefused,
            Error::PermissionDenied => io::ErrorKind::PermissionDenied,
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::Reset => io::ErrorKind::ConnectionReset,
            Error::Io(e) => e.kind(),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        // An Error that went through io::Error (e.g. from Read/Write) comes back whole.
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let inner = e.into_inner().expect("checked");
            return *inner.downcast::<Error>().expect("checked");
        }
        match e.raw_os_error() {
            Some(libc::ENODEV) | Some(libc::ENXIO) => Error::NoDevice,
            Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => Error::PeerAbsent,
            Some(libc::ECONNREFUSED) => Error::Refused,
            Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied,
            Some(libc::ETIMEDOUT) => Error::TimedOut,
            Some(libc::ECONNRESET) | Some(libc::ECONNABORTED) | Some(libc::EPIPE) => Error::Reset,
            _ if e.kind() == io::ErrorKind::TimedOut => Error::TimedOut,
            _ => Error::Io(e),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            e => io::Error::new(e.kind(), e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification() {
        assert!(matches!(Error::from_errno(libc::ENODEV), Error::NoDevice));
        assert!(matches!(
            Error::from_errno(libc::EHOSTUNREACH),
            Error::PeerAbsent
        ));
        assert!(matches!(
            Error::from_errno(libc::ECONNREFUSED),
            Error::Refused
        ));
        assert!(matches!(
            Error::from_errno(libc::EACCES),
            Error::PermissionDenied
        ));
        assert!(matches!(
            Error::from_errno(libc::EPERM),
            Error::PermissionDenied
        ));
        assert!(matches!(
            Error::from_errno(libc::ETIMEDOUT),
            Error::TimedOut
        ));
        assert!(matches!(Error::from_errno(libc::ECONNRESET), Error::Reset));
        assert!(matches!(Error::from_errno(libc::EINVAL), Error::Io(_)));
    }

    #[test]
    fn io_round_trip_keeps_the_variant() {
        let io: io::Error = Error::PeerAbsent.into();
        assert_eq!(io.kind(), io::ErrorKind::HostUnreachable);
        assert!(matches!(Error::from(io), Error::PeerAbsent));
        let io: io::Error = Error::ModuleNotLoaded.into();
        assert!(matches!(Error::from(io), Error::ModuleNotLoaded));
        let io: io::Error = Error::from_errno(libc::EINVAL).into();
        assert_eq!(io.raw_os_error(), Some(libc::EINVAL));
    }
}
