//! [`InflatingStream`]: the socket adapter that puts the inbound permessage-deflate state
//! machine ([`InboundInflater`]) between any tokio IO and tungstenite, for both roles.
//!
//! Reads go through the machine, so tungstenite only ever sees frames it accepts: compressed
//! messages arrive inflated as single frames with RSV1 clear. Writes pass straight through
//! (outgoing compressed frames are built by the caller with RSV1 set, see
//! [`compressed_message`](super::deflate::compressed_message)).
//!
//! When the peer breaks the protocol the read fails with `InvalidData` and the
//! [`ViolationHandle`] holds the close code and reason to send: tungstenite then reports an
//! I/O error, and the session closes the connection with that code.

use super::deflate::{InboundInflater, Negotiated, Violation};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::Role;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Where the session finds why the stream failed: the first violation of the peer.
#[derive(Debug, Clone, Default)]
pub struct ViolationHandle(Arc<OnceLock<Violation>>);

impl ViolationHandle {
    /// The peer's first violation, once there is one.
    pub fn get(&self) -> Option<&Violation> {
        self.0.get()
    }
}

/// Any tokio IO with incoming compressed messages inflated before tungstenite parses them.
#[derive(Debug)]
pub struct InflatingStream<S> {
    io: S,
    machine: InboundInflater,
    input: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    violation: ViolationHandle,
}

impl<S> InflatingStream<S> {
    /// Wraps `io` for the frames the peer of `role` sends, inflating per `negotiated`
    /// (`None`: nothing to inflate, and RSV1 is a violation).
    pub fn new(io: S, role: Role, negotiated: Option<&Negotiated>) -> Self {
        Self::with_buffered(io, role, negotiated, &[])
    }

    /// [`new`](Self::new) with bytes already read from `io` past the handshake.
    pub fn with_buffered(
        io: S,
        role: Role,
        negotiated: Option<&Negotiated>,
        buffered: &[u8],
    ) -> Self {
        let mut input = vec![0; READ_CHUNK.max(buffered.len())].into_boxed_slice();
        input[..buffered.len()].copy_from_slice(buffered);
        Self {
            io,
            machine: InboundInflater::new(role, negotiated),
            input,
            start: 0,
            end: buffered.len(),
            eof: false,
            violation: ViolationHandle::default(),
        }
    }

    /// A handle on the peer's first violation, valid after the stream moved into tungstenite.
    pub fn violation_handle(&self) -> ViolationHandle {
        self.violation.clone()
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

/// How [`InflatingStream::discard_until_close`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discarded {
    /// The peer's close frame arrived.
    PeerClosed,
    /// The peer ended the connection.
    Eof,
    /// `budget` bytes were read without a close frame.
    Budget,
}

impl<S: AsyncRead + Unpin> InflatingStream<S> {
    /// After our close frame: reads and drops what the peer still sends (the rest of a message
    /// that was too big, say) until its close frame, its EOF or `budget` bytes, whichever is
    /// first. Closing a socket with the peer's data unread makes the kernel reset the
    /// connection, and the reset can destroy our close frame before the peer reads it; so the
    /// caller bounds this in time and only then lets the socket go.
    pub async fn discard_until_close(&mut self, budget: usize) -> io::Result<Discarded> {
        use tokio::io::AsyncReadExt;
        let framed = self.machine.begin_closing();
        let mut read = 0usize;
        loop {
            if framed {
                self.start += self.machine.feed(&self.input[self.start..self.end]);
                if self.machine.peer_closed() {
                    return Ok(Discarded::PeerClosed);
                }
            }
            self.start = self.end;
            if self.eof {
                return Ok(Discarded::Eof);
            }
            if read >= budget {
                return Ok(Discarded::Budget);
            }
            let n = self.io.read(&mut self.input).await?;
            read += n;
            (self.start, self.end) = (0, n);
            self.eof = n == 0;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for InflatingStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let ready = this.machine.output();
            if !ready.is_empty() {
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                this.machine.consume(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(v) = this.machine.violation() {
                let _ = this.violation.0.set(v.clone());
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    v.reason.clone(),
                )));
            }
            if this.start < this.end {
                // Output is empty, so the machine consumes at least one byte or fails.
                this.start += this.machine.feed(&this.input[this.start..this.end]);
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.input);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            (this.start, this.end) = (0, n);
            this.eof = n == 0;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for InflatingStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::deflate::{negotiate, DeflateConfig, MessageDeflater};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_inflated_frames_and_reports_the_violation() {
        let n = negotiate(&["permessage-deflate"], &DeflateConfig::default())
            .unwrap()
            .unwrap();
        let (mut peer, io) = tokio::io::duplex(64);
        let mut stream =
            InflatingStream::with_buffered(io, Role::Client, Some(&n), &[0x81, 0x01, b'a']);
        let handle = stream.violation_handle();
        let payload = MessageDeflater::for_server(&n).compress(b"Hello");
        let writer = tokio::spawn(async move {
            let mut frame = vec![0xc1, payload.len() as u8];
            frame.extend_from_slice(&payload);
            peer.write_all(&frame).await.unwrap();
            // RSV1 on a ping.
            peer.write_all(&[0xc9, 0x00]).await.unwrap();
            peer
        });
        let mut got = [0u8; 10];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x81\x01a\x81\x05Hello");
        let err = stream.read(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(handle.get().unwrap().reason, "RSV1 set on a control frame");
        drop(writer.await.unwrap());
    }
}
