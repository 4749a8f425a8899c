//! One direction of a tunnel through user-space buffers: read, write it
//! all, again. It starts with a small buffer, borrows a large one from the
//! pool once its reads keep filling the small one, and gives it back after a
//! short quiet. While it moves bulk the tunnel is relayed on the bulk lane
//! (`lane`). It moves as much as is ready per wake-up, but yields to the
//! other tunnels after [`FAIR_SHARE`] bytes.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::lane::{BulkMark, LaneSignal};
use super::pool::{BufferLease, Pool};
use super::{End, Progress};

/// Each direction's own buffer: what an idle tunnel costs.
pub(super) const SMALL: usize = 4 * 1024;
/// Reads in a row that fill the small buffer before a large one is borrowed
/// (a TLS handshake or a login's answer stays small).
pub(super) const GROW_AFTER: u32 = 4;
/// A borrowed buffer or pipe goes back after this long without a byte.
pub(super) const GIVE_BACK_AFTER: Duration = Duration::from_millis(200);
/// Bytes one direction moves without waiting before it lets other tasks run.
pub(super) const FAIR_SHARE: usize = 1 << 20;

/// What one direction works with.
pub(super) struct Way<'a> {
    /// Where large buffers come from.
    pub pool: &'a Pool,
    /// The tunnel's shared clock of the last byte.
    pub progress: &'a Progress,
    /// Bytes written this way.
    pub moved: &'a AtomicU64,
    /// Told the bytes of each read.
    pub on_read: &'a (dyn Fn(u64) + Sync),
    /// Told the bytes of each write.
    pub on_write: &'a (dyn Fn(u64) + Sync),
    /// Told while this direction moves bulk.
    pub lane: &'a LaneSignal,
}

impl<'a> Way<'a> {
    /// `n` bytes were written.
    pub(super) fn wrote(&self, n: usize) {
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
        (self.on_write)(n as u64);
        self.progress.mark();
    }

    /// Marks the direction as moving bulk (the tunnel moves to the bulk
    /// lane) until the mark is dropped.
    pub(super) fn bulk(&self) -> BulkMark<'a> {
        self.lane.mark()
    }
}

/// Counts bytes moved since the task last waited; past [`FAIR_SHARE`] it
/// yields, so one bulk transfer cannot hold a worker thread.
#[derive(Debug, Default)]
pub(super) struct Share(usize);

impl Share {
    /// `n` bytes moved; `waited` when the task waited for them.
    pub(super) async fn moved(&mut self, n: usize, waited: bool) {
        if waited {
            self.0 = 0;
        }
        self.0 += n;
        if self.0 >= FAIR_SHARE {
            self.0 = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// What one read-and-write step did.
pub(super) enum Step {
    /// `n` bytes read and written; `waited` if the task had to wait.
    Moved { n: usize, waited: bool },
    /// Nothing arrived within the quiet limit.
    Quiet,
    /// The source ended and the sink was shut down.
    Eof,
    /// A read or write failed.
    Failed,
}

/// Reads once into `buf` (within `quiet` when given) and writes what came.
pub(super) async fn step<R, W>(
    r: &mut R,
    w: &mut W,
    buf: &mut [u8],
    quiet: Option<Duration>,
    way: &Way<'_>,
) -> Step
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let read = read_noting_wait(r, buf);
    let (res, mut waited) = match quiet {
        Some(limit) => match tokio::time::timeout(limit, read).await {
            Ok(r) => r,
            Err(_) => return Step::Quiet,
        },
        None => read.await,
    };
    let n = match res {
        Ok(0) => {
            let _ = w.shutdown().await;
            return Step::Eof;
        }
        Ok(n) => n,
        Err(_) => return Step::Failed,
    };
    (way.on_read)(n as u64);
    let mut rest = &buf[..n];
    while !rest.is_empty() {
        match write_noting_wait(w, rest).await {
            (Ok(0), _) | (Err(_), _) => return Step::Failed,
            (Ok(k), w) => {
                waited |= w;
                rest = &rest[k..];
                way.wrote(k);
            }
        }
    }
    Step::Moved { n, waited }
}

async fn read_noting_wait<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> (io::Result<usize>, bool) {
    let mut waited = false;
    let mut rb = ReadBuf::new(buf);
    let res = poll_fn(|cx| match Pin::new(&mut *r).poll_read(cx, &mut rb) {
        Poll::Pending => {
            waited = true;
            Poll::Pending
        }
        Poll::Ready(r) => Poll::Ready(r),
    })
    .await;
    (res.map(|()| rb.filled().len()), waited)
}

async fn write_noting_wait<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
) -> (io::Result<usize>, bool) {
    let mut waited = false;
    let res = poll_fn(|cx| match Pin::new(&mut *w).poll_write(cx, buf) {
        Poll::Pending => {
            waited = true;
            Poll::Pending
        }
        Poll::Ready(r) => Poll::Ready(r),
    })
    .await;
    (res, waited)
}

/// Relays one direction through user-space buffers until the source ends
/// (then shuts the sink down) or either side fails.
pub(super) async fn copy<R, W>(mut r: R, mut w: W, way: Way<'_>) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = vec![0u8; SMALL];
    let mut large: Option<BufferLease<'_>> = None;
    let mut bulk: Option<BulkMark<'_>> = None;
    let mut full = 0u32;
    let mut share = Share::default();
    loop {
        let buf: &mut [u8] = match large.as_mut() {
            Some(l) => l,
            None => &mut small,
        };
        let cap = buf.len();
        let quiet = bulk.is_some().then_some(GIVE_BACK_AFTER);
        match step(&mut r, &mut w, buf, quiet, &way).await {
            Step::Moved { n, waited } => {
                full = if n == cap { full + 1 } else { 0 };
                if bulk.is_none() && full >= GROW_AFTER {
                    bulk = Some(way.bulk());
                    large = way.pool.buffer();
                    full = 0;
                }
                share.moved(n, waited).await;
            }
            Step::Quiet => (large, bulk) = (None, None),
            Step::Eof => return End::Finished,
            Step::Failed => return End::Failed,
        }
    }
}
