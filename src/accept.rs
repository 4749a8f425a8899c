//! The one accept loop the sidecar's three listeners share (metrics, admin,
//! forward proxy). It owns what is the same for each: a cap on the
//! connections served at once, the back-off after accept errors, and the
//! shutdown order (stop accepting, close the socket, wait for the
//! connections in flight). What a connection is for belongs to the
//! listener's [`Handler`]: the loop never reads or writes a byte itself.
//!
//! After an accept error (EMFILE when descriptors run out, ENFILE, ENOBUFS)
//! the loop waits, doubling from 10 ms to 1 s, instead of retrying at once
//! and burning a core.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// The work on one connection, run as its own task.
pub type Work = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A bound socket and the rules it is served under.
#[derive(Debug)]
pub struct Listener {
    /// The listener's name in logs: `metrics`, `admin`, `forward proxy`.
    pub name: &'static str,
    /// The bound socket.
    pub socket: TcpListener,
    /// Connections served at once; the ones over it go to
    /// [`Handler::refuse`].
    pub cap: usize,
}

/// What a listener does with the connections it accepts.
pub trait Handler: Send + Sync + 'static {
    /// Serves one connection within the cap. `stop` turns true when the
    /// listener stops accepting: a handler that can end its connection
    /// early and cleanly (an HTTP keep-alive) does so; one that cannot (a
    /// tunnel) runs on, and the caller of [`serve`] bounds the wait.
    fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        stop: watch::Receiver<bool>,
    ) -> Work;

    /// Answers a connection over the cap, or `None` to close it at once.
    /// The answer must not wait on the client for long: it holds no slot.
    fn refuse(self: Arc<Self>, tcp: TcpStream) -> Option<Work>;
}

/// Accepts on `listener` until `stop` turns true (or its sender is gone),
/// handing each connection to `handler`; then closes the socket, so new
/// connections are refused, and waits for the connections in flight and the
/// refusals being written. The caller bounds how long.
pub async fn serve(listener: Listener, handler: Arc<dyn Handler>, mut stop: watch::Receiver<bool>) {
    let Listener { name, socket, cap } = listener;
    let slots = Arc::new(Semaphore::new(cap));
    let mut conns = JoinSet::new();
    let mut backoff = Backoff::default();
    tracing::info!(listener = name, max_connections = cap, "accepting");
    loop {
        let accepted = tokio::select! {
            a = socket.accept() => a,
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                backoff.failed(name, &e).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the cap: answer or close at once rather than queue
            // without bound.
            tracing::warn!(listener = name, cap, "at the connection cap; refusing");
            if let Some(refusal) = handler.clone().refuse(tcp) {
                conns.spawn(refusal);
            }
            continue;
        };
        let work = handler.clone().serve(tcp, peer, stop.clone());
        conns.spawn(async move {
            let _permit = permit;
            work.await;
        });
    }
    drop(socket);
    let open = conns.len();
    if open > 0 {
        tracing::info!(listener = name, open, "draining connections");
    }
    while conns.join_next().await.is_some() {}
}

/// The back-off state of one accept loop.
#[derive(Debug)]
pub struct Backoff {
    /// The next wait.
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { delay: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// An accept succeeded: the next failure waits the least again.
    pub fn succeeded(&mut self) {
        self.delay = Self::FIRST;
    }

    /// An accept on `listener` failed: log it and wait.
    pub async fn failed(&mut self, listener: &str, error: &io::Error) {
        tracing::warn!(listener, error = %error, backoff_ms = self.delay.as_millis() as u64, "accept failed; backing off");
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Self::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    /// Holds each connection open until `release`; answers `busy` over the
    /// cap.
    struct Hold {
        release: Notify,
    }

    impl Handler for Hold {
        fn serve(
            self: Arc<Self>,
            mut tcp: TcpStream,
            _peer: SocketAddr,
            _stop: watch::Receiver<bool>,
        ) -> Work {
            Box::pin(async move {
                let _ = tcp.write_all(b"hello").await;
                self.release.notified().await;
                let _ = tcp.write_all(b" bye").await;
            })
        }

        fn refuse(self: Arc<Self>, mut tcp: TcpStream) -> Option<Work> {
            Some(Box::pin(async move {
                let _ = tcp.write_all(b"busy").await;
            }))
        }
    }

    async fn read_all(mut tcp: TcpStream) -> String {
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn over_the_cap_is_refused_and_shutdown_waits_for_the_connection_in_flight() {
        let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let hold = Arc::new(Hold {
            release: Notify::new(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let listener = Listener {
            name: "test",
            socket,
            cap: 1,
        };
        let server = tokio::spawn(serve(listener, hold.clone(), stop_rx));

        let mut first = TcpStream::connect(addr).await.expect("connect");
        let mut hello = [0u8; 5];
        first.read_exact(&mut hello).await.expect("hello");
        assert_eq!(&hello, b"hello");
        let second = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(read_all(second).await, "busy");

        stop_tx.send(true).expect("stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still accepting after stop"
        );
        assert!(!server.is_finished(), "stopped before its connection ended");
        hold.release.notify_one();
        assert_eq!(read_all(first).await, " bye");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stopped once the connection ended")
            .expect("no panic");
    }
}
