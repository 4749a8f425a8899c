//! The byte relay of an established tunnel, with the timeouts hyper no
//! longer applies after an upgrade: an idle timeout (no byte either way) and
//! a half-close timeout (one side finished, the other must follow), so
//! sockets do not pile up in CLOSE_WAIT.
//!
//! # Layout
//! - `mod.rs`: the two directions of one tunnel run side by side under one
//!   idle watchdog; how a tunnel ends.
//! - `way`: one direction's copy loop: a small buffer, a large one borrowed
//!   for bulk, the fairness budget.
//! - `splice` (Linux): the same loop over two plain TCP sockets, moving bulk
//!   through a borrowed pipe with `splice(2)`.
//! - `pool`: the bounded pool of large buffers and pipes.
//! - `lane`: where a tunnel is relayed: the bulk lane's low-priority
//!   threads while it moves bulk, so logins never wait behind it.
//! - `pipe` (Linux): one pipe and its `splice` calls.
//!
//! Cost per chunk, not copying, is what limits a relay on a fast path (the
//! kernel's work per system call and per wake-up), so a direction that keeps
//! filling its 4 KiB buffer borrows 1 MiB (or a pipe) from the pool, gives it
//! back after a short quiet, and moves several chunks per wake-up within a
//! fairness budget, so a login's small request never waits behind a bulk
//! transfer for long. Idle tunnels stay small: 4 KiB per direction.

mod lane;
mod pool;
mod way;

#[cfg(target_os = "linux")]
mod pipe;
#[cfg(target_os = "linux")]
mod splice;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

pub use lane::{BULK_NICE, BULK_THREAD, LaneSignal, Lanes, Work};
pub use pool::{BufferLease, LARGE, Pool, PoolStats};

use crate::telemetry::meter::ByteMeter;

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// App to upstream.
    pub up: u64,
    /// Upstream to app.
    pub down: u64,
}

/// What a tunnel's relay needs besides its two streams.
#[derive(Debug, Clone, Copy)]
pub struct Relay<'a> {
    /// Where large buffers and pipes are borrowed from.
    pub pool: &'a Pool,
    /// No byte either way for this long ends the tunnel.
    pub idle: Duration,
    /// After one side finished, this long without a byte ends it.
    pub half_close: Duration,
    /// Told while a direction moves bulk (see [`Lanes`]).
    pub lane: &'a LaneSignal,
}

/// Counts the bytes the splice relay moves to and from the upstream, into
/// the counters the copy relay's metering wrapper feeds (the splice relay
/// needs the bare sockets, so it cannot be wrapped).
pub trait Tally: Sync {
    /// Bytes written to the upstream (app → upstream).
    fn up(&self, n: u64);
    /// Bytes read from the upstream (upstream → app).
    fn down(&self, n: u64);
}

impl Tally for ByteMeter {
    fn up(&self, n: u64) {
        self.add_up(n as usize);
    }

    fn down(&self, n: u64) {
        self.add_down(n as usize);
    }
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A clean end of stream; the write side was shut down after it.
    Finished,
    /// A read or write failed.
    Failed,
}

/// What both directions of one tunnel share: when a byte last moved, and
/// the bytes written each way.
#[derive(Debug)]
struct Progress {
    /// When the relay started.
    start: Instant,
    /// Milliseconds after `start` a byte last moved, either way.
    last: AtomicU64,
    /// Bytes written to the upstream.
    up: AtomicU64,
    /// Bytes written to the app.
    down: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    /// A byte moved now.
    fn mark(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long since a byte last moved.
    fn quiet(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Completes once no byte has moved for `limit`.
    async fn quiet_for(&self, limit: Duration) {
        loop {
            let quiet = self.quiet();
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }

    fn moved(&self) -> Moved {
        Moved {
            up: self.up.load(Ordering::Relaxed),
            down: self.down.load(Ordering::Relaxed),
        }
    }
}

impl Relay<'_> {
    /// Relays between `app` and `upstream` through user-space buffers until
    /// both sides finish, either side fails, nothing moves for `idle`, or
    /// one side has finished and the other has been quiet for `half_close`.
    pub async fn copy<A, U>(&self, app: A, upstream: U) -> Moved
    where
        A: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let progress = Progress::new();
        let (app_r, app_w) = tokio::io::split(app);
        let (up_r, up_w) = tokio::io::split(upstream);
        let nothing = |_: u64| {};
        let up = way::copy(
            app_r,
            up_w,
            self.way(&progress.up, &progress, &nothing, &nothing),
        );
        let down = way::copy(
            up_r,
            app_w,
            self.way(&progress.down, &progress, &nothing, &nothing),
        );
        self.run(up, down, &progress).await;
        progress.moved()
    }

    /// Like [`Relay::copy`] between two plain TCP sockets, moving bulk with
    /// `splice(2)` through pipes borrowed from the pool (buffers when none
    /// is free). The sockets are bare, so the bytes to and from `upstream`
    /// are counted into `tally`.
    #[cfg(target_os = "linux")]
    pub async fn splice(
        &self,
        mut app: tokio::net::TcpStream,
        mut upstream: tokio::net::TcpStream,
        tally: &dyn Tally,
    ) -> Moved {
        let progress = Progress::new();
        let (app_r, app_w) = app.split();
        let (up_r, up_w) = upstream.split();
        let nothing = |_: u64| {};
        let wrote_up = |n: u64| tally.up(n);
        let read_down = |n: u64| tally.down(n);
        let up = splice::relay(
            app_r,
            up_w,
            self.way(&progress.up, &progress, &nothing, &wrote_up),
        );
        let down = splice::relay(
            up_r,
            app_w,
            self.way(&progress.down, &progress, &read_down, &nothing),
        );
        self.run(up, down, &progress).await;
        progress.moved()
    }

    fn way<'w>(
        &self,
        moved: &'w AtomicU64,
        progress: &'w Progress,
        on_read: &'w (dyn Fn(u64) + Sync),
        on_write: &'w (dyn Fn(u64) + Sync),
    ) -> way::Way<'w>
    where
        Self: 'w,
    {
        way::Way {
            pool: self.pool,
            progress,
            moved,
            on_read,
            on_write,
            lane: self.lane,
        }
    }

    /// Runs both directions to the tunnel's end. One side done: the other
    /// may go on as long as it keeps moving (a slow answer after the app's
    /// FIN arrives whole), and ends once it has been quiet for
    /// `half_close`: no socket lingers in CLOSE_WAIT. A failure either way
    /// ends both.
    async fn run<F, G>(&self, up: F, down: G, progress: &Progress)
    where
        F: Future<Output = End>,
        G: Future<Output = End>,
    {
        tokio::pin!(up, down);
        let limit = self.half_close.min(self.idle);
        tokio::select! {
            end = &mut up => if end == End::Finished {
                tokio::select! {
                    _ = &mut down => {}
                    () = progress.quiet_for(limit) => {}
                }
            },
            end = &mut down => if end == End::Finished {
                tokio::select! {
                    _ = &mut up => {}
                    () = progress.quiet_for(limit) => {}
                }
            },
            () = progress.quiet_for(self.idle) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    static LANE: LaneSignal = LaneSignal::new();

    fn relay(pool: &Pool) -> Relay<'_> {
        Relay {
            pool,
            idle: Duration::from_secs(300),
            half_close: Duration::from_secs(5),
            lane: &LANE,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
        let pool = Pool::new(0);
        let (app, _app_peer) = tokio::io::duplex(1024);
        let (up, _up_peer) = tokio::io::duplex(1024);
        let start = Instant::now();
        let r = Relay {
            idle: Duration::from_secs(30),
            ..relay(&pool)
        };
        let moved = r.copy(app, up).await;
        assert_eq!(moved, Moved::default());
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(30) && took < Duration::from_secs(31),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_half_close_a_slow_answer_still_arrives_whole() {
        let pool = Pool::new(0);
        let (app, mut app_peer) = tokio::io::duplex(1024);
        let (up, mut up_peer) = tokio::io::duplex(1024);
        app_peer.write_all(b"GET").await.expect("write");
        app_peer.shutdown().await.expect("shutdown");
        let server = tokio::spawn(async move {
            let mut req = [0u8; 3];
            up_peer.read_exact(&mut req).await.expect("read");
            // 45 s of answer, a chunk every 3 s: longer than the half-close
            // timeout in all, never quiet for that long.
            for _ in 0..15 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                up_peer.write_all(b"chunk").await.expect("write");
            }
            up_peer.shutdown().await.expect("shutdown");
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            app_peer.read_to_end(&mut got).await.expect("read");
            got.len()
        });
        let moved = relay(&pool).copy(app, up).await;
        assert_eq!(moved, Moved { up: 3, down: 75 });
        server.await.expect("server");
        assert_eq!(reader.await.expect("reader"), 75);
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_closed_tunnel_ends_within_the_half_close_timeout() {
        let pool = Pool::new(0);
        let (app, mut app_peer) = tokio::io::duplex(1024);
        let (up, _up_peer) = tokio::io::duplex(1024);
        app_peer.write_all(b"hello").await.expect("write");
        app_peer.shutdown().await.expect("shutdown");
        let start = Instant::now();
        let moved = relay(&pool).copy(app, up).await;
        assert_eq!(moved.up, 5);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bulk_borrows_a_large_buffer_and_gives_it_back_when_quiet() {
        let pool = Pool::new(4 * LARGE as u64);
        let (app, mut app_peer) = tokio::io::duplex(256 * 1024);
        let (up, mut up_peer) = tokio::io::duplex(256 * 1024);
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..32 {
                app_peer.write_all(&chunk).await.expect("write");
            }
            app_peer
        });
        let r = relay(&pool);
        let watch = async {
            let mut got = vec![0u8; 2 << 20];
            up_peer.read_exact(&mut got).await.expect("read");
            assert!(got.iter().all(|b| *b == 7));
            let during = pool.stats().buffers_out;
            tokio::time::sleep(Duration::from_secs(2)).await;
            (during, pool.stats(), up_peer)
        };
        let (_, (during, after, _up_peer)) = tokio::join!(r.copy(app, up), watch);
        assert_eq!(during, 1, "the bulk direction borrowed one buffer");
        assert_eq!(after.buffers_out, 0, "given back while the tunnel is open");
        assert_eq!(after.buffers_kept, 1);
        drop(writer);
    }
}
