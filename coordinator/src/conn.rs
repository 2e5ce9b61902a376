//! Connection limits for the coordinator's listeners (gRPC here, HTTP in the binary): at most
//! `max_connections` open at once, and a connection that moves no byte either way for
//! `idle_timeout` is closed. Without them a client that opens connections and sends half a
//! header (slowloris) holds a file descriptor and a task each for ever.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Limits on a listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A connection that moves no byte for this long is closed. Longer than the 15 s SSE
    /// keep-alive and the 10 s lease long poll, so neither is cut.
    pub idle_timeout: Duration,
    /// An HTTP/1 request's headers must arrive within this long (hyper's header timeout).
    pub header_timeout: Duration,
}

/// `quarry serve`'s defaults (`--max-connections`, `--idle-timeout`, `--header-timeout`).
pub const DEFAULT_CONN_LIMITS: ConnLimits = ConnLimits {
    max_connections: 1024,
    idle_timeout: Duration::from_secs(60),
    header_timeout: Duration::from_secs(10),
};

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        DEFAULT_CONN_LIMITS
    }
}

/// A stream whose reads and writes fail with `TimedOut` once no byte moved for `idle`, holding
/// one of its listener's connection permits until dropped.
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, idle: Duration, permit: Option<OwnedSemaphorePermit>) -> IdleTimeout<S> {
        IdleTimeout { inner, idle, timer: Box::pin(tokio::time::sleep(idle)), _permit: permit }
    }

    fn touch(&mut self) {
        let at = Instant::now() + self.idle;
        self.timer.as_mut().reset(at);
    }

    /// A write's outcome: bytes written count as traffic; a client that stops reading blocks
    /// our writes, so a pending write is idle too.
    fn written(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.pending_or_expired(cx),
        }
    }

    /// `Pending` stays pending until the timer fires, then turns into a `TimedOut` error.
    fn pending_or_expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connection idle for {:?}: closed", self.idle),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.pending_or_expired(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for IdleTimeout<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Accepts TCP connections on `listener` while fewer than `limits.max_connections` are open;
/// each comes wrapped in [`IdleTimeout`]. The accept loop ends when the stream is dropped.
pub fn limited_incoming(
    listener: TcpListener,
    limits: ConnLimits,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<IdleTimeout<TcpStream>>> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = tx.closed() => return,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            // Small replies must not wait for Nagle's algorithm (and the client's delayed ACK).
            let _ = stream.set_nodelay(true);
            if tx.send(Ok(IdleTimeout::new(stream, limits.idle_timeout, Some(permit)))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_idle_stream_times_out_and_traffic_keeps_it_open() {
        let (a, mut b) = tokio::io::duplex(64);
        let idle = Duration::from_millis(400);
        let mut a = IdleTimeout::new(a, idle, None);
        let mut buf = [0u8; 4];
        // Bytes more often than the idle time keep it open past several idle periods.
        let start = Instant::now();
        for _ in 0..6 {
            tokio::time::sleep(idle / 2).await;
            b.write_all(b"ping").await.unwrap();
            a.read_exact(&mut buf).await.unwrap();
        }
        assert!(start.elapsed() > idle * 2);
        // Then silence: the read fails with TimedOut.
        let err = a.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
