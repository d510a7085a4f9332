//! Accepted connections that gather what is written to them and send it in
//! few system calls.
//!
//! A message to a big channel becomes one small HTTP/2 frame per stream.
//! Left alone, the connection writes each frame as soon as it is queued:
//! the stream task that queued it wakes the connection task, which runs
//! next, and sends that one frame (measured: 0.8 `writev` per delivery, the
//! system calls and the loopback's receive path were 45% of the node's
//! CPU). Two changes let the frames of many streams share a write:
//!
//! - The connection does not claim vectored writes, so the HTTP/2 codec
//!   copies frames under 1 KiB into its buffer instead of writing each one
//!   on its own together with what precedes it.
//! - The first flush of what is gathered steps back once: the connection
//!   task goes to the end of the runtime's queue, and the stream tasks ahead
//!   of it add their frames before it writes. When the node is idle that
//!   costs one pass of an empty queue.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Gathered bytes are written out once they reach this much.
const GATHER_LIMIT: usize = 64 * 1024;
/// A buffer that grew beyond this is let go once written, so that a node
/// with many quiet connections does not keep their peaks.
const KEEP_CAPACITY: usize = 16 * 1024;

pub struct BatchedIo<T = TcpStream> {
    inner: T,
    gathered: Vec<u8>,
    /// How much of `gathered` has reached the connection.
    written: usize,
    /// Whether this flush already stepped back once.
    deferred: bool,
}

impl<T> BatchedIo<T> {
    pub fn new(inner: T) -> Self {
        Self { inner, gathered: Vec::new(), written: 0, deferred: false }
    }
}

impl<T: AsyncWrite + Unpin> BatchedIo<T> {
    /// Writes out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.gathered.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.gathered.capacity() > KEEP_CAPACITY {
            self.gathered = Vec::new();
        } else {
            self.gathered.clear();
        }
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BatchedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.gathered.len() + data.len() > GATHER_LIMIT {
            ready!(this.poll_drain(cx))?;
            if data.len() >= GATHER_LIMIT {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        this.gathered.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.written < this.gathered.len() {
            if !this.deferred {
                // Woken from within its own poll, the task is queued behind
                // the tasks already waiting to run.
                this.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_drain(cx))?;
        }
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl Connected for BatchedIo<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn what_is_written_arrives_whole_and_in_order_once_flushed() {
        let (client, mut server) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.expect("reads");
            got
        });
        let mut io = BatchedIo::new(client);
        let mut expected = Vec::new();
        for i in 0..2_000u32 {
            let piece = vec![(i % 251) as u8; (i as usize * 37) % 3_000];
            io.write_all(&piece).await.expect("writes");
            expected.extend_from_slice(&piece);
        }
        io.flush().await.expect("flushes");
        io.shutdown().await.expect("shuts down");
        drop(io);
        assert_eq!(reader.await.expect("reader ran"), expected);
    }

    #[tokio::test]
    async fn small_writes_wait_for_the_flush() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut io = BatchedIo::new(client);
        io.write_all(b"frame one").await.expect("writes");
        io.write_all(b", frame two").await.expect("writes");
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), server.read(&mut buf)).await;
        assert!(early.is_err(), "nothing reaches the peer before the flush");
        io.flush().await.expect("flushes");
        let n = server.read(&mut buf).await.expect("reads");
        assert_eq!(&buf[..n], b"frame one, frame two");
    }
}
