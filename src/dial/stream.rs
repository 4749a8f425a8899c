//! The byte streams the dialer hands out: [`BoxStream`] (and [`into_tcp`],
//! which takes a bare TCP socket back out of one, for the splice relay);
//! [`Rewind`], which gives back bytes read past the end of a CONNECT reply;
//! and [`ErrorTap`], which keeps the first TLS error seen on a stream for
//! classification.

use std::any::{Any, TypeId};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::classify::{find_rustls, rustls_reason};
use crate::reason::FailureReason;

/// Anything the dialer can return: TCP, TLS over TCP, TLS over TLS, ...
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + Any {
    /// True when this is a bare [`TcpStream`].
    fn is_tcp(&self) -> bool;
    /// The stream as `Any`, to take a bare [`TcpStream`] back out.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + Any> Io for T {
    fn is_tcp(&self) -> bool {
        TypeId::of::<T>() == TypeId::of::<TcpStream>()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// A boxed stream of any layering.
pub type BoxStream = Box<dyn Io>;

/// The bare TCP socket inside `stream` (a direct tunnel, or one through an
/// `http://` proxy with no bytes read past its reply), which the splice
/// relay needs; `stream` itself when it is anything else (TLS to an
/// `https://` proxy, bytes put back in front).
pub fn into_tcp(stream: BoxStream) -> Result<TcpStream, BoxStream> {
    // `(*stream)`: the boxed stream's own answer (the box is an `Io` too,
    // and `stream.is_tcp()` would ask the box).
    if !(*stream).is_tcp() {
        return Err(stream);
    }
    match stream.into_any().downcast::<TcpStream>() {
        Ok(tcp) => Ok(*tcp),
        // Cannot happen (checked above); a stream that has ended stands in.
        Err(_) => Err(Box::new(tokio::io::empty())),
    }
}

/// A stream with some already-read bytes put back in front of it.
pub struct Rewind<S> {
    /// Bytes to hand out before reading from `inner`.
    prefix: Bytes,
    /// The stream itself.
    inner: S,
}

impl<S> Rewind<S> {
    /// Puts `prefix` back in front of `inner`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
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

/// The first TLS failure seen on a tapped stream: its reason and message.
pub type TlsErrorSlot = Arc<Mutex<Option<(FailureReason, String)>>>;

/// Passes bytes through and records the first rustls error a read or write
/// returns, typed, before a protocol layer above (h2) turns it into text.
pub struct ErrorTap<S> {
    /// The stream.
    inner: S,
    /// Where the first TLS error goes.
    slot: TlsErrorSlot,
}

impl<S> ErrorTap<S> {
    /// Taps `inner`; read the slot after a failure.
    pub fn new(inner: S) -> (Self, TlsErrorSlot) {
        let slot = TlsErrorSlot::default();
        (
            Self {
                inner,
                slot: slot.clone(),
            },
            slot,
        )
    }

    fn record<T>(&self, res: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &res {
            if let Some(r) = find_rustls(e) {
                if let Ok(mut slot) = self.slot.lock() {
                    slot.get_or_insert_with(|| (rustls_reason(r), r.to_string()));
                }
            }
        }
        res
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ErrorTap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.record(res)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ErrorTap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(res)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.record(res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.record(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bare_tcp_stream_comes_back_out_of_its_box_and_nothing_else_does() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let boxed: BoxStream = Box::new(tcp);
        let tcp = into_tcp(boxed)
            .map_err(|_| "not taken out")
            .expect("a TcpStream");
        assert_eq!(tcp.peer_addr().expect("peer"), addr);
        let rewound: BoxStream = Box::new(Rewind::new(Bytes::from_static(b"x"), tcp));
        assert!(into_tcp(rewound).is_err(), "bytes in front: not bare");
    }
}
