//! Connection handling: the accept loop of plain HTTP, and the two limits every connection
//! lives under, plain or TLS.
//!
//! - **Header read timeout** (`CERTCTL_SERVER_HEADER_READ_TIMEOUT`): an HTTP/1.1 request head
//!   (request line and headers) must arrive completely within this time, counted from the moment
//!   the connection is ready for a request (opened, or the previous response sent). hyper's own
//!   timer: a client trickling one header byte at a time does not extend it.
//! - **Idle timeout** (`CERTCTL_SERVER_IDLE_TIMEOUT`): a connection on which nothing is read or
//!   written for this long is closed ([`IdleIo`]). It covers what the header timeout does not:
//!   idle HTTP/2 connections, and a client that stops in the middle of the HTTP/2 preface.
//!
//! Without them a client that never finished its headers kept its connection (and a task)
//! forever; the probe found such connections still open after 75 s.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::Service;

/// The connection limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time allowed for a complete HTTP/1.1 request head.
    pub header_read_timeout: Duration,
    /// Time a connection may go without reading or writing anything.
    pub idle_timeout: Duration,
}

impl ConnLimits {
    /// `CERTCTL_SERVER_HEADER_READ_TIMEOUT` and `CERTCTL_SERVER_IDLE_TIMEOUT`.
    pub fn from_config(config: &crate::Config) -> Self {
        ConnLimits { header_read_timeout: config.server_header_read_timeout, idle_timeout: config.server_idle_timeout }
    }

    /// Applies the header read timeout to a hyper connection builder (plain or TLS).
    pub fn configure(&self, builder: &mut Builder<TokioExecutor>) {
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
    }
}

/// An I/O stream that fails with `TimedOut` once nothing has been read or written on it for
/// `idle`, so the connection serving it ends.
#[derive(Debug)]
pub struct IdleIo<T> {
    io: T,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleIo<T> {
    /// Wraps `io`; the clock starts now.
    pub fn new(io: T, idle: Duration) -> Self {
        IdleIo { io, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// `Pending` while the deadline is ahead, else the idle error.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle")),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// An `axum_server` acceptor that puts every accepted stream under the idle timeout before the
/// inner acceptor (TLS) sees it.
#[derive(Debug, Clone)]
pub struct IdleAcceptor<A> {
    inner: A,
    idle: Duration,
}

impl<A> IdleAcceptor<A> {
    /// Wraps `inner`.
    pub fn new(inner: A, idle: Duration) -> Self {
        IdleAcceptor { inner, idle }
    }
}

impl<A, I, S> axum_server::accept::Accept<I, S> for IdleAcceptor<A>
where
    A: axum_server::accept::Accept<IdleIo<I>, S>,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = A::Future;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        self.inner.accept(IdleIo::new(stream, self.idle), service)
    }
}

/// Serves `router` over plain HTTP on `listener` until `shutdown` is cancelled, then lets open
/// connections finish their requests for at most `drain`. Each request carries the peer's
/// [`ConnectInfo`], as with `into_make_service_with_connect_info`.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
    drain: Duration,
) -> io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    limits.configure(&mut builder);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(IdleIo::new(stream, limits.idle_timeout));
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move { router.call(req).await }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let conn = builder.serve_connection_with_upgrades(io, service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the shutdown timeout; closing them");
    }
    Ok(())
}
