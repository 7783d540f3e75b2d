//! Async listener and stream on tokio's `AsyncFd` (feature `tokio`).
//!
//! The fds are switched to non-blocking mode and registered with the reactor; reads and
//! writes keep the message semantics of [`VmcsStream`]. Connecting runs the (bounded,
//! blocking) connect on tokio's blocking pool.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};
use crate::net::{VmcsListener, VmcsStream, MAX_MSG_SIZE};
use crate::VmcsAddr;

/// An async [`VmcsStream`].
#[derive(Debug)]
pub struct AsyncVmcsStream {
    inner: AsyncFd<VmcsStream>,
}

impl AsyncVmcsStream {
    /// Registers a connected stream with the reactor (makes it non-blocking).
    pub fn new(s: VmcsStream) -> Result<Self> {
        s.set_nonblocking(true)?;
        Ok(Self {
            // SAFETY: VmcsStream owns its fd and always returns the same one from as_raw_fd.
            inner: unsafe { AsyncFd::register(s) }.map_err(io::Error::from)?,
        })
    }

    /// Connects to `addr` (default timeout if `timeout` is None).
    pub async fn connect(addr: VmcsAddr, timeout: Option<Duration>) -> Result<Self> {
        let s = tokio::task::spawn_blocking(move || match timeout {
            Some(t) => VmcsStream::connect_timeout(addr, t),
            None => VmcsStream::connect(addr),
        })
        .await
        .map_err(|e| Error::Io(io::Error::other(e)))??;
        Self::new(s)
    }

    /// Receives one message; `Ok(0)` at end of stream.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut g = self.inner.readable().await?;
            if let Ok(r) = g.try_io(|s| s.get_ref().recv(buf)) {
                return r;
            }
        }
    }

    /// Sends `buf` as one message (at most [`MAX_MSG_SIZE`]).
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let mut g = self.inner.writable().await?;
            if let Ok(r) = g.try_io(|s| s.get_ref().send(buf)) {
                return r;
            }
        }
    }

    /// The blocking stream inside.
    pub fn get_ref(&self) -> &VmcsStream {
        self.inner.get_ref()
    }

    /// Deregisters and returns the stream (still non-blocking).
    pub fn into_inner(self) -> VmcsStream {
        self.inner.into_inner()
    }
}

impl AsyncRead for AsyncVmcsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut g = ready!(self.inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match g.try_io(|s| s.get_ref().recv(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for AsyncVmcsStream {
    /// One message of at most [`MAX_MSG_SIZE`] bytes per call, as `Write`.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let buf = &buf[..buf.len().min(MAX_MSG_SIZE)];
        loop {
            let mut g = ready!(self.inner.poll_write_ready(cx))?;
            match g.try_io(|s| s.get_ref().send(buf)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(
            self.inner
                .get_ref()
                .shutdown(Shutdown::Write)
                .map_err(io::Error::from),
        )
    }
}

/// An async [`VmcsListener`].
#[derive(Debug)]
pub struct AsyncVmcsListener {
    inner: AsyncFd<VmcsListener>,
}

impl AsyncVmcsListener {
    /// Binds and listens (see [`VmcsListener::bind`]).
    pub fn bind(addr: impl Into<VmcsAddr>) -> Result<Self> {
        Self::new(VmcsListener::bind(addr)?)
    }

    /// Registers a listener with the reactor (makes it non-blocking).
    pub fn new(l: VmcsListener) -> Result<Self> {
        l.set_nonblocking(true)?;
        Ok(Self {
            // SAFETY: VmcsListener owns its fd and always returns the same one from as_raw_fd.
            inner: unsafe { AsyncFd::register(l) }.map_err(io::Error::from)?,
        })
    }

    /// Waits for a connection.
    pub async fn accept(&self) -> Result<(AsyncVmcsStream, VmcsAddr)> {
        loop {
            let mut g = self.inner.readable().await?;
            match g.try_io(|l| l.get_ref().accept().map_err(io::Error::from)) {
                Ok(r) => {
                    let (s, a) = r?;
                    return Ok((AsyncVmcsStream::new(s)?, a));
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// The blocking listener inside.
    pub fn get_ref(&self) -> &VmcsListener {
        self.inner.get_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tests::pair;
    use std::future::poll_fn;

    #[test]
    fn async_messages_and_eof() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = pair();
            let mut a = AsyncVmcsStream::new(a).unwrap();
            let b = AsyncVmcsStream::new(b).unwrap();
            let echo = tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_MSG_SIZE];
                loop {
                    let n = b.recv(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    b.send(&buf[..n]).await.unwrap();
                }
            });
            let n = poll_fn(|cx| Pin::new(&mut a).poll_write(cx, b"ping"))
                .await
                .unwrap();
            assert_eq!(n, 4);
            let mut buf = [0u8; 16];
            let mut rb = ReadBuf::new(&mut buf);
            poll_fn(|cx| Pin::new(&mut a).poll_read(cx, &mut rb))
                .await
                .unwrap();
            assert_eq!(rb.filled(), b"ping");
            a.send(b"pong").await.unwrap();
            assert_eq!(a.recv(&mut buf).await.unwrap(), 4);
            poll_fn(|cx| Pin::new(&mut a).poll_shutdown(cx))
                .await
                .unwrap();
            echo.await.unwrap();
            assert_eq!(a.recv(&mut buf).await.unwrap(), 0);
        });
    }
}
