//! [`SessionSocket`]: a connection's socket as its session's tungstenite sees it. Reads come
//! from the TCP socket; writes — tungstenite's own frames: pongs and the answer to a client's
//! close — go to the connection's writer ([`super::writer`]), which writes them between the
//! session's items. The writer owns the socket's sending side; the session never writes to
//! it directly.

use super::writer::ControlSink;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct SessionSocket {
    tcp: Arc<TcpStream>,
    control: ControlSink,
}

impl SessionSocket {
    pub fn new(tcp: Arc<TcpStream>, control: ControlSink) -> Self {
        SessionSocket { tcp, control }
    }
}

impl AsyncRead for SessionSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale: the next poll registers for the real one.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SessionSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.control.poll_write(cx, buf)
    }

    /// The writer flushes.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The writer ends the connection's sending side when the session is done.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
