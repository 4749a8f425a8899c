//! The one accept loop the sidecar's three listeners share (metrics, admin,
//! forward proxy). It owns what is the same for each: a cap on the
//! connections served at once, the back-off after accept errors, and the
//! shutdown order (stop accepting, close the socket, wait for the
//! connections in flight). What a connection is for belongs to the
//! listener's [`Handler`]: the loop never reads or writes a byte itself.
//!
//! After an accept error (EMFILE when descriptors run out, ENFILE, ENOBUFS)
//! the loop waits, doubling from 10 ms to 1 s, instead of retrying at once
//! and burning a core. Refusals at the cap and failed accepts are counted,
//! not logged one by one: `pressure` writes one line a second at most.
//! The cap is read at every accept, so a reload can change it.

mod pressure;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use pressure::{Line as PressureLine, Pressure};

/// The work on one connection, run as its own task.
pub type Work = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// How many connections a listener serves at once: a number, or one read
/// again at every accept (the forward proxy's follows `[forward]
/// max_connections` across reloads). Lowering it closes nothing: the
/// connections over the new cap finish, and new ones wait for room.
#[derive(Clone)]
pub struct Cap(Arc<dyn Fn() -> usize + Send + Sync>);

impl Cap {
    /// Always `n`.
    pub fn fixed(n: usize) -> Self {
        Self(Arc::new(move || n))
    }

    /// Whatever `now` says at each accept.
    pub fn live(now: impl Fn() -> usize + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    fn get(&self) -> usize {
        (self.0)()
    }
}

impl std::fmt::Debug for Cap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cap").field(&self.get()).finish()
    }
}

/// A bound socket and the rules it is served under.
#[derive(Debug)]
pub struct Listener {
    /// The listener's name in logs: `metrics`, `admin`, `forward proxy`.
    pub name: &'static str,
    /// The bound socket.
    pub socket: TcpListener,
    /// Connections served at once; the ones over it go to
    /// [`Handler::refuse`].
    pub cap: Cap,
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

/// One connection counted against the cap while it lives.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The loop's state besides the socket.
struct Loop {
    name: &'static str,
    cap: Cap,
    /// The cap last logged.
    cap_seen: usize,
    open: Arc<AtomicUsize>,
    conns: JoinSet<()>,
    backoff: Backoff,
    pressure: Pressure,
}

impl Loop {
    /// A slot under the cap in force now, or `None` when it is full.
    fn slot(&mut self) -> Option<Slot> {
        let cap = self.cap.get();
        if cap != self.cap_seen {
            tracing::info!(
                listener = self.name,
                max_connections = cap,
                before = self.cap_seen,
                "connection cap changed"
            );
            self.cap_seen = cap;
        }
        // Only this loop adds, so the check and the add cannot race.
        if self.open.load(Ordering::Acquire) >= cap {
            return None;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        Some(Slot(self.open.clone()))
    }

    fn write(&self, line: Option<PressureLine>) {
        if let Some(line) = line {
            line.log(self.name, self.cap_seen);
        }
    }

    fn take(
        &mut self,
        tcp: TcpStream,
        peer: SocketAddr,
        handler: &Arc<dyn Handler>,
        stop: &watch::Receiver<bool>,
    ) {
        let Some(slot) = self.slot() else {
            // Over the cap: answer or close at once rather than queue
            // without bound.
            let line = self.pressure.refused(tokio::time::Instant::now());
            self.write(line);
            if let Some(refusal) = handler.clone().refuse(tcp) {
                self.conns.spawn(refusal);
            }
            return;
        };
        let work = handler.clone().serve(tcp, peer, stop.clone());
        self.conns.spawn(async move {
            let _slot = slot;
            work.await;
        });
    }
}

/// Accepts on `listener` until `stop` turns true (or its sender is gone),
/// handing each connection to `handler`; then closes the socket, so new
/// connections are refused, and waits for the connections in flight and the
/// refusals being written. The caller bounds how long.
pub async fn serve(listener: Listener, handler: Arc<dyn Handler>, mut stop: watch::Receiver<bool>) {
    let Listener { name, socket, cap } = listener;
    let cap_seen = cap.get();
    let mut l = Loop {
        name,
        cap,
        cap_seen,
        open: Arc::new(AtomicUsize::new(0)),
        conns: JoinSet::new(),
        backoff: Backoff::default(),
        pressure: Pressure::default(),
    };
    tracing::info!(listener = name, max_connections = cap_seen, "accepting");
    loop {
        let tail = l.pressure.next_due();
        let accepted = tokio::select! {
            a = socket.accept() => a,
            _ = stop.changed() => break,
            Some(_) = l.conns.join_next(), if !l.conns.is_empty() => continue,
            () = sleep_until(tail), if tail.is_some() => {
                let line = l.pressure.flush(tokio::time::Instant::now());
                l.write(line);
                continue;
            }
        };
        match accepted {
            Ok((tcp, peer)) => {
                l.backoff.succeeded();
                l.take(tcp, peer, &handler, &stop);
            }
            Err(e) => {
                let line = l.pressure.failed(tokio::time::Instant::now(), &e);
                l.write(line);
                let wait = l.backoff.failed();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    drop(socket);
    let open = l.conns.len();
    if open > 0 {
        tracing::info!(listener = name, open, "draining connections");
    }
    while l.conns.join_next().await.is_some() {}
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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

    /// An accept failed: how long to wait before the next (doubling from
    /// 10 ms to 1 s). The failure is counted in the loop's [`Pressure`]
    /// line, not logged here.
    pub fn failed(&mut self) -> Duration {
        let wait = self.delay;
        self.delay = (self.delay * 2).min(Self::MAX);
        wait
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
            cap: Cap::fixed(1),
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
