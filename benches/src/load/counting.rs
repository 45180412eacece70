//! A byte-counting wrapper around a socket: what a client reads off the wire, frame headers and
//! compression included, so "bytes per message" is what the network carries.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts the bytes read through it into a shared counter.
pub struct Counting<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S> Counting<S> {
    pub fn new(inner: S, read: Arc<AtomicU64>) -> Self {
        Counting { inner, read }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_every_byte_read_and_none_written() {
        let (a, mut b) = tokio::io::duplex(64);
        let read = Arc::new(AtomicU64::new(0));
        let mut counted = Counting::new(a, read.clone());
        b.write_all(b"hello world").await.unwrap();
        counted.write_all(b"ignored").await.unwrap();
        let mut buf = [0u8; 11];
        counted.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello world");
        assert_eq!(read.load(Ordering::Relaxed), 11);
    }
}
