//! The byte relay of an established tunnel, with the timeouts hyper no
//! longer applies after an upgrade: an idle timeout (no byte either way) and
//! a half-close timeout (one side finished, the other must follow), so
//! sockets do not pile up in CLOSE_WAIT. Buffers start small and grow only
//! for bulk transfers, keeping idle tunnels cheap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// First buffer size per direction.
const START_BUF: usize = 4 * 1024;
/// Largest buffer per direction.
const MAX_BUF: usize = 64 * 1024;

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// App to upstream.
    pub up: u64,
    /// Upstream to app.
    pub down: u64,
}

/// Relays between `app` and `upstream` until both sides finish, either side
/// fails, nothing moves for `idle`, or one side has finished and the other
/// has not within `half_close`.
pub async fn relay<A, U>(app: A, upstream: U, idle: Duration, half_close: Duration) -> Moved
where
    A: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (app_r, app_w) = tokio::io::split(app);
    let (up_r, up_w) = tokio::io::split(upstream);
    let up = pump(app_r, up_w, &last, start, idle);
    let down = pump(up_r, app_w, &last, start, idle);
    tokio::pin!(up, down);
    // One side done: the other may go on as long as it keeps moving (a slow
    // answer after the app's FIN arrives whole), and ends once it has been
    // quiet for `half_close`: no socket lingers in CLOSE_WAIT.
    let quiet = |last: &AtomicU64| {
        start
            .elapsed()
            .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)))
    };
    let (up_n, down_n) = tokio::select! {
        u = &mut up => {
            let d = if u.finished { follow(&mut down, &last, half_close, quiet).await } else { 0 };
            (u.bytes, d)
        }
        d = &mut down => {
            let u = if d.finished { follow(&mut up, &last, half_close, quiet).await } else { 0 };
            (u, d.bytes)
        }
    };
    Moved {
        up: up_n,
        down: down_n,
    }
}

/// Waits for the remaining direction until it ends or has been quiet for
/// `half_close`; returns the bytes it moved (0 when cut).
async fn follow<F>(
    other: &mut std::pin::Pin<&mut F>,
    last: &AtomicU64,
    half_close: Duration,
    quiet: impl Fn(&AtomicU64) -> Duration,
) -> u64
where
    F: std::future::Future<Output = Pumped>,
{
    loop {
        let wait = half_close
            .saturating_sub(quiet(last))
            .max(Duration::from_millis(10));
        tokio::select! {
            p = other.as_mut() => return p.bytes,
            () = tokio::time::sleep(wait) => {
                if quiet(last) >= half_close {
                    return 0;
                }
            }
        }
    }
}

struct Pumped {
    bytes: u64,
    /// True on a clean end of stream (then the write side was shut down).
    finished: bool,
}

async fn pump<R, W>(mut r: R, mut w: W, last: &AtomicU64, start: Instant, idle: Duration) -> Pumped
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; START_BUF];
    let mut bytes = 0u64;
    loop {
        let n = match tokio::time::timeout(idle, r.read(&mut buf)).await {
            Err(_) => {
                // Quiet this way; the tunnel is idle only if the other way is too.
                let since = start
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if since >= idle {
                    return Pumped {
                        bytes,
                        finished: false,
                    };
                }
                continue;
            }
            Ok(Err(_)) => {
                return Pumped {
                    bytes,
                    finished: false,
                };
            }
            Ok(Ok(0)) => {
                let _ = w.shutdown().await;
                return Pumped {
                    bytes,
                    finished: true,
                };
            }
            Ok(Ok(n)) => n,
        };
        if tokio::time::timeout(idle, w.write_all(&buf[..n]))
            .await
            .map_or(true, |r| r.is_err())
        {
            return Pumped {
                bytes,
                finished: false,
            };
        }
        bytes += n as u64;
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if n == buf.len() && buf.len() < MAX_BUF {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
        let (app, _app_peer) = tokio::io::duplex(1024);
        let (up, _up_peer) = tokio::io::duplex(1024);
        let start = Instant::now();
        let moved = relay(app, up, Duration::from_secs(30), Duration::from_secs(5)).await;
        assert_eq!(moved, Moved::default());
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(30) && took < Duration::from_secs(31),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_half_close_a_slow_answer_still_arrives_whole() {
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
        let moved = relay(app, up, Duration::from_secs(300), Duration::from_secs(5)).await;
        assert_eq!(moved, Moved { up: 3, down: 75 });
        server.await.expect("server");
        assert_eq!(reader.await.expect("reader"), 75);
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_closed_tunnel_ends_within_the_half_close_timeout() {
        let (app, mut app_peer) = tokio::io::duplex(1024);
        let (up, _up_peer) = tokio::io::duplex(1024);
        app_peer.write_all(b"hello").await.expect("write");
        app_peer.shutdown().await.expect("shutdown");
        let start = Instant::now();
        let moved = relay(app, up, Duration::from_secs(300), Duration::from_secs(5)).await;
        assert_eq!(moved.up, 5);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }
}
