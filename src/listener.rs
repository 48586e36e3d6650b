//! An HTTP listener that holds a bounded number of connections and closes idle ones, so a
//! scraper or a browser left open cannot take the file descriptors runs need (the daemon's
//! `/metrics`, `/health` and console, and `tapline ui`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The address of a client, as a handler reads it (`ConnectInfo<ClientAddr>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> ClientAddr {
        ClientAddr(*stream.remote_addr())
    }
}

/// Connections the server holds at most: a scraper needs one or two, a browser six. More are
/// closed as they come, so idle or half-open connections cannot take the file descriptors
/// the daemon's runs need (its state store, its sources, its requests).
const MAX_CONNECTIONS: usize = 32;

/// A connection that sends nothing for this long is closed (a request's headers included).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener that holds at most [`MAX_CONNECTIONS`] connections, each closed after
/// [`IDLE_TIMEOUT`] without a byte from the client.
pub(crate) struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl LimitedListener {
    /// Listens on `address`.
    pub(crate) async fn bind(address: SocketAddr) -> std::io::Result<LimitedListener> {
        Ok(LimitedListener {
            inner: TcpListener::bind(address).await?,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        })
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = IdleLimited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, address) = axum::serve::Listener::accept(&mut self.inner).await;
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => {
                    return (
                        IdleLimited {
                            stream,
                            _slot: slot,
                            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
                        },
                        address,
                    );
                }
                Err(_) => {
                    tracing::warn!(%address, "HTTP: too many connections; closing a new one");
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection: it holds a slot of the listener, and reading from it fails once
/// the client has sent nothing for [`IDLE_TIMEOUT`] (then the server closes it).
pub(crate) struct IdleLimited {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl AsyncRead for IdleLimited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(context, buffer) {
            Poll::Ready(result) => {
                let deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                self.idle.as_mut().reset(deadline);
                Poll::Ready(result)
            }
            Poll::Pending => match self.idle.as_mut().poll(context) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client sent nothing for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for IdleLimited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}
