//! One direction of a tunnel between two plain TCP sockets: small reads go
//! through the direction's 4 KiB buffer like the copy relay's; once its
//! reads keep filling it, the direction borrows a pipe and moves bulk with
//! `splice(2)`, socket → pipe → socket, without the bytes entering user
//! space. No pipe free: a large buffer; neither: the small buffer.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::End;
use super::lane::BulkMark;
use super::pool::{BufferLease, PipeLease};
use super::way::{GIVE_BACK_AFTER, GROW_AFTER, SMALL, Share, Step, Way, step};

/// What a direction moves bulk with.
enum Large<'p> {
    Pipe(PipeLease<'p>),
    Buffer(BufferLease<'p>),
}

/// Relays one direction until the source ends (then shuts the sink down)
/// or either side fails.
pub(super) async fn relay(mut r: ReadHalf<'_>, mut w: WriteHalf<'_>, way: Way<'_>) -> End {
    let mut small = vec![0u8; SMALL];
    let mut large: Option<Large<'_>> = None;
    let mut bulk: Option<BulkMark<'_>> = None;
    let mut full = 0u32;
    let mut share = Share::default();
    loop {
        let (step, cap) = match large.as_mut() {
            Some(Large::Pipe(lease)) => match splice_step(&r, &mut w, lease, &way).await {
                Some(s) => s,
                None => {
                    // No pipe after all (closed on an earlier failure).
                    large = None;
                    continue;
                }
            },
            Some(Large::Buffer(buf)) => {
                let cap = buf.len();
                (
                    step(&mut r, &mut w, buf, Some(GIVE_BACK_AFTER), &way).await,
                    cap,
                )
            }
            None => {
                let quiet = bulk.is_some().then_some(GIVE_BACK_AFTER);
                (step(&mut r, &mut w, &mut small, quiet, &way).await, SMALL)
            }
        };
        match step {
            Step::Moved { n, waited } => {
                full = if n == cap { full + 1 } else { 0 };
                if bulk.is_none() && full >= GROW_AFTER {
                    bulk = Some(way.bulk());
                    large = way
                        .pool
                        .pipe()
                        .map(Large::Pipe)
                        .or_else(|| way.pool.buffer().map(Large::Buffer));
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

/// Splices what `r` has ready into the (empty) pipe, then all of it on to
/// `w`. `None` when the lease has no pipe.
async fn splice_step(
    r: &ReadHalf<'_>,
    w: &mut WriteHalf<'_>,
    lease: &mut PipeLease<'_>,
    way: &Way<'_>,
) -> Option<(Step, usize)> {
    let pipe = lease.pipe()?;
    let cap = pipe.size();
    let src = r.as_ref();
    let mut waited = false;
    let n = loop {
        let ready = poll_fn(|cx| match src.poll_read_ready(cx) {
            Poll::Pending => {
                waited = true;
                Poll::Pending
            }
            Poll::Ready(r) => Poll::Ready(r),
        });
        match tokio::time::timeout(GIVE_BACK_AFTER, ready).await {
            Err(_) => return Some((Step::Quiet, cap)),
            Ok(Err(_)) => return Some((Step::Failed, cap)),
            Ok(Ok(())) => {}
        }
        match src.try_io(Interest::READABLE, || pipe.fill_from(src)) {
            Ok(0) => {
                let _ = w.shutdown().await;
                return Some((Step::Eof, cap));
            }
            Ok(n) => break n,
            // Readiness was stale and is now cleared: wait again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Some((Step::Failed, cap)),
        }
    };
    (way.on_read)(n as u64);
    let dst = w.as_ref();
    while pipe.held() > 0 {
        let ready = poll_fn(|cx| match dst.poll_write_ready(cx) {
            Poll::Pending => {
                waited = true;
                Poll::Pending
            }
            Poll::Ready(r) => Poll::Ready(r),
        });
        if ready.await.is_err() {
            return Some((Step::Failed, cap));
        }
        match dst.try_io(Interest::WRITABLE, || pipe.drain_to(dst)) {
            Ok(0) => return Some((Step::Failed, cap)),
            Ok(k) => way.wrote(k),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Some((Step::Failed, cap)),
        }
    }
    Some((Step::Moved { n, waited }, cap))
}
