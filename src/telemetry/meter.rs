//! Byte counting for app tunnels: [`Metered`] wraps the upstream side of a
//! tunnel and counts every byte written to it (`up`, app → upstream) and
//! read from it (`down`, upstream → app) as it moves, into
//! `egress_forward_bytes_total` and into totals the compliance trail reads
//! when the tunnel ends. Counting as bytes move (not once at the end)
//! keeps the counters live for long tunnels, and keeps the totals right
//! however the tunnel ends: both sides done, a timeout, or fail-back
//! closing it mid-transfer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use metrics::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The counters of one tunnel; cheap to clone.
#[derive(Clone)]
pub struct ByteMeter {
    inner: Arc<Inner>,
}

struct Inner {
    up: Counter,
    down: Counter,
    up_total: AtomicU64,
    down_total: AtomicU64,
}

impl std::fmt::Debug for ByteMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (up, down) = self.moved();
        f.debug_struct("ByteMeter")
            .field("up", &up)
            .field("down", &down)
            .finish()
    }
}

impl ByteMeter {
    /// A meter adding to `up` and `down`.
    pub fn new(up: Counter, down: Counter) -> Self {
        Self {
            inner: Arc::new(Inner {
                up,
                down,
                up_total: AtomicU64::new(0),
                down_total: AtomicU64::new(0),
            }),
        }
    }

    /// Wraps the upstream side of a tunnel.
    pub fn wrap<S>(&self, upstream: S) -> Metered<S> {
        Metered {
            inner: upstream,
            meter: self.clone(),
        }
    }

    /// Bytes moved so far: (app → upstream, upstream → app).
    pub fn moved(&self) -> (u64, u64) {
        (
            self.inner.up_total.load(Ordering::Relaxed),
            self.inner.down_total.load(Ordering::Relaxed),
        )
    }

    /// Counts `n` bytes written to the upstream (the splice relay, which
    /// moves bytes between bare sockets, counts them itself).
    pub fn add_up(&self, n: usize) {
        if n > 0 {
            self.inner.up.increment(n as u64);
            self.inner.up_total.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Counts `n` bytes read from the upstream.
    pub fn add_down(&self, n: usize) {
        if n > 0 {
            self.inner.down.increment(n as u64);
            self.inner.down_total.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// A stream whose traffic is counted by a [`ByteMeter`].
pub struct Metered<S> {
    inner: S,
    meter: ByteMeter,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.meter
                .add_down(buf.filled().len().saturating_sub(before));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            self.meter.add_up(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.meter.add_up(n);
        }
        polled
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_each_way_as_bytes_move() {
        let meter = ByteMeter::new(Counter::noop(), Counter::noop());
        let (near, mut far) = tokio::io::duplex(64);
        let mut m = meter.wrap(near);
        m.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        far.read_exact(&mut got).await.expect("read");
        far.write_all(b"a reply").await.expect("write");
        let mut back = [0u8; 7];
        m.read_exact(&mut back).await.expect("read");
        assert_eq!(meter.moved(), (5, 7));
        // A clone shares the totals: the trail reads them after the stream is gone.
        let kept = meter.clone();
        drop(m);
        assert_eq!(kept.moved(), (5, 7));
    }
}
