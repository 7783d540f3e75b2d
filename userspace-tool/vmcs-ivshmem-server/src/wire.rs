//! Wire format: each message is one little-endian int64, optionally with one
//! file descriptor attached as SCM_RIGHTS ancillary data.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Size of one message's payload.
pub const MSG_LEN: usize = 8;

/// Send one message.  Never raises SIGPIPE (MSG_NOSIGNAL); a short write is
/// reported as an error because the stream would be out of sync.
pub fn send_msg(sock: BorrowedFd<'_>, value: i64, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let bytes = value.to_le_bytes();
    let iov = [IoSlice::new(&bytes)];
    let fds: Vec<RawFd> = fd.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(MSG_LEN) => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short send ({n} of {MSG_LEN} bytes)"),
                ))
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receive one message (client side; used by tests and tools).  Returns
/// `Ok(None)` on a clean EOF before any byte.  Extra descriptors beyond the
/// first are closed.
pub fn recv_msg(sock: BorrowedFd<'_>) -> io::Result<Option<(i64, Option<OwnedFd>)>> {
    let mut buf = [0u8; MSG_LEN];
    let mut got = 0;
    let mut fd: Option<OwnedFd> = None;
    while got < MSG_LEN {
        let mut cmsg_buf = nix::cmsg_space!([RawFd; 4]);
        let (n, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf[got..])];
            let msg = loop {
                match recvmsg::<()>(
                    sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg_buf),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Err(Errno::EINTR) => continue,
                    other => break other?,
                }
            };
            let mut fds = Vec::new();
            for cmsg in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: the kernel just installed these descriptors in
                    // our table; nothing else owns them.
                    fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                }
            }
            (msg.bytes, fds)
        };
        for f in fds {
            if fd.is_none() {
                fd = Some(f);
            }
        }
        if n == 0 {
            if got == 0 && fd.is_none() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF in the middle of a message",
            ));
        }
        got += n;
    }
    Ok(Some((i64::from_le_bytes(buf), fd)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn roundtrip_with_and_without_fd() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        send_msg(a.as_fd(), -1, Some(a.as_fd())).expect("send");
        send_msg(a.as_fd(), 0x1234_5678_9abc, None).expect("send");
        let (v, fd) = recv_msg(b.as_fd()).expect("recv").expect("msg");
        assert_eq!(v, -1);
        // (a duplicate of `a` itself: close it, or EOF never comes)
        drop(fd.expect("fd attached"));
        let (v, fd) = recv_msg(b.as_fd()).expect("recv").expect("msg");
        assert_eq!(v, 0x1234_5678_9abc);
        assert!(fd.is_none());
        drop(a);
        assert!(recv_msg(b.as_fd()).expect("recv").is_none());
    }

    #[test]
    fn little_endian_on_the_wire() {
        use std::io::Read;
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        send_msg(a.as_fd(), 3, None).expect("send");
        let mut raw = [0u8; 8];
        b.read_exact(&mut raw).expect("read");
        assert_eq!(raw, [3, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn send_to_closed_peer_is_an_error_not_sigpipe() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        drop(b);
        let err = send_msg(a.as_fd(), 1, None).expect_err("peer gone");
        assert_eq!(err.raw_os_error(), Some(libc_epipe()));
    }

    fn libc_epipe() -> i32 {
        Errno::EPIPE as i32
    }
}
