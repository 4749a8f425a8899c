//! The bulk lane: a tunnel that moves bulk is relayed on worker threads of
//! its own, at the lowest CPU priority (nice 19), and comes back to the
//! sidecar's workers once it is quiet again.
//!
//! Why: on a busy machine every relay is short of CPU, and a login's
//! CONNECT, dial and TLS handshake are several round trips, each of which
//! waited behind the bulk tunnels' wake-ups on the same two workers (issue
//! 27: a login beside 4 uploads took 20 ms at p50 against Squid's 5). On
//! threads of their own the bulk tunnels still get all the CPU nobody else
//! wants, but the kernel runs the sidecar's workers first whenever a login
//! needs them. Inside a container the priority only orders the sidecar's
//! own threads: the cgroup's share of the machine is unchanged.
//!
//! A tunnel is moved whole between polls: its sockets stay registered
//! with the runtime that opened them (whose I/O driver keeps running), only
//! the task that polls the relay changes. The cost: each readiness event
//! of a bulk socket is still taken by a worker's driver, which wakes the
//! lane (about 15 % of a core for one 1.2 GB/s download); the lane has
//! timers only, so it opens no descriptor. Its runtime is built on the
//! first bulk tunnel, so a sidecar that never relays bulk has no threads
//! for it. Plain `http://` requests are not tunnels and stay on the
//! workers.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// The nice value of the bulk lane's threads: the lowest priority.
pub const BULK_NICE: i32 = 19;
/// The bulk lane's threads are named so, in `/proc` and in `top -H`.
pub const BULK_THREAD: &str = "egress-bulk";

/// A tunnel's relay, as [`Lanes::run`] takes it.
pub type Work = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a tunnel tells its lane: how many of its directions move bulk now.
#[derive(Debug, Default)]
pub struct LaneSignal {
    bulk: AtomicUsize,
}

impl LaneSignal {
    /// No direction moves bulk yet.
    pub const fn new() -> Self {
        Self {
            bulk: AtomicUsize::new(0),
        }
    }

    /// A direction moves bulk until the mark is dropped.
    pub fn mark(&self) -> BulkMark<'_> {
        self.bulk.fetch_add(1, Ordering::Relaxed);
        BulkMark(self)
    }

    /// Whether a direction of the tunnel moves bulk now.
    pub fn is_bulk(&self) -> bool {
        self.bulk.load(Ordering::Relaxed) > 0
    }
}

/// One direction moving bulk, while held.
#[derive(Debug)]
pub struct BulkMark<'a>(&'a LaneSignal);

impl Drop for BulkMark<'_> {
    fn drop(&mut self) {
        self.0.bulk.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where tunnels are relayed: the task that opened them while they are
/// small, the bulk lane while they move bulk.
#[derive(Debug)]
pub struct Lanes {
    /// Worker threads of the bulk lane, when it is built.
    workers: usize,
    /// The bulk lane; `None` inside when it could not be built (tunnels
    /// then stay where they are).
    bulk: OnceLock<Option<Runtime>>,
}

impl Lanes {
    /// Lanes whose bulk lane will have `workers` threads.
    pub fn new(workers: usize) -> Self {
        Self {
            workers: workers.max(1),
            bulk: OnceLock::new(),
        }
    }

    /// Whether the bulk lane has been built.
    pub fn bulk_started(&self) -> bool {
        matches!(self.bulk.get(), Some(Some(_)))
    }

    fn bulk(&self) -> Option<Handle> {
        self.bulk
            .get_or_init(|| build(self.workers))
            .as_ref()
            .map(|rt| rt.handle().clone())
    }

    /// Runs `work` to its end: polled by the calling task while `signal`
    /// says it is small, by the bulk lane while it moves bulk. Dropping the
    /// returned future cancels `work` wherever it is.
    ///
    /// `work` comes boxed: a tunnel's relay is a large future, and the
    /// caller's own future would otherwise hold room for it beside the box
    /// (8 KiB more per idle tunnel, measured).
    pub async fn run(&self, mut work: Work, signal: Arc<LaneSignal>) {
        loop {
            if !until(&mut work, || signal.is_bulk()).await {
                return;
            }
            let Some(bulk) = self.bulk() else {
                return work.await;
            };
            tracing::debug!("tunnel to the bulk lane");
            let signal = signal.clone();
            let task = Cancelling(bulk.spawn(async move {
                let moved = until(&mut work, || !signal.is_bulk()).await;
                moved.then_some(work)
            }));
            match task.await {
                Ok(Some(back)) => {
                    tracing::debug!("tunnel back from the bulk lane");
                    work = back;
                }
                // Done, or cancelled because the lane is shutting down.
                Ok(None) | Err(_) => return,
            }
        }
    }
}

impl Drop for Lanes {
    /// Without waiting: the tunnels the lane relayed belong to tasks that
    /// have ended by now, and a runtime may not block inside another.
    fn drop(&mut self) {
        if let Some(Some(rt)) = self.bulk.take() {
            rt.shutdown_background();
        }
    }
}

/// Polls `work` until it completes (`false`) or, after a poll that left it
/// pending, `switch` says it belongs elsewhere (`true`). Its wakers then
/// point at this task; the next poll, wherever it happens, replaces them.
async fn until<F>(work: &mut Pin<Box<F>>, switch: impl Fn() -> bool) -> bool
where
    F: Future<Output = ()> + ?Sized,
{
    poll_fn(|cx| match work.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(false),
        Poll::Pending if switch() => Poll::Ready(true),
        Poll::Pending => Poll::Pending,
    })
    .await
}

/// The bulk lane's runtime; `None` (logged) when it cannot be built.
fn build(workers: usize) -> Option<Runtime> {
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(BULK_THREAD)
        .on_thread_start(lower_priority)
        // Timers only: the tunnels' sockets stay with the runtime that
        // opened them, so the lane opens no descriptor of its own.
        .enable_time()
        .build();
    match built {
        Ok(rt) => Some(rt),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the bulk relay's threads: bulk tunnels share the workers with logins");
            None
        }
    }
}

/// Sets the calling thread's nice value to [`BULK_NICE`]; a failure leaves
/// it as it was (the relay still works, only without the priority).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), BULK_NICE)
    {
        tracing::warn!(error = %e, "cannot lower the bulk relay thread's priority");
    }
}

/// A task on the bulk lane, cancelled when whoever waits for it goes away.
struct Cancelling<T>(JoinHandle<T>);

impl<T> Future for Cancelling<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Cancelling<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn thread() -> String {
        std::thread::current().name().unwrap_or("").to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn work_moves_to_the_bulk_lane_while_bulk_and_back_when_quiet() {
        let lanes = Lanes::new(1);
        let signal = Arc::new(LaneSignal::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let work = {
            let signal = signal.clone();
            async move {
                tx.send(thread()).expect("send");
                let mark = signal.mark();
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send(thread()).expect("send");
                drop(mark);
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send(thread()).expect("send");
            }
        };
        assert!(!lanes.bulk_started());
        lanes.run(Box::pin(work), signal.clone()).await;
        let seen: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_ne!(seen[0], BULK_THREAD, "small: where it started");
        assert_eq!(seen[1], BULK_THREAD, "bulk: on the lane");
        assert_ne!(seen[2], BULK_THREAD, "quiet again: back");
        assert!(lanes.bulk_started());
        assert!(!signal.is_bulk());
    }

    #[tokio::test]
    async fn dropping_the_run_cancels_work_on_the_bulk_lane() {
        let lanes = Lanes::new(1);
        let signal = Arc::new(LaneSignal::default());
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let (on_lane_tx, on_lane_rx) = tokio::sync::oneshot::channel();
        let work = {
            let signal = signal.clone();
            async move {
                let _dropped = dropped_tx;
                let _mark = signal.mark();
                tokio::task::yield_now().await;
                let _ = on_lane_tx.send(thread());
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = lanes.run(Box::pin(work), signal.clone()) => panic!("the work never ends"),
            on = on_lane_rx => assert_eq!(on.expect("ran"), BULK_THREAD),
        }
        // The run was dropped: the work is dropped on the lane.
        let gone = tokio::time::timeout(Duration::from_secs(5), dropped_rx).await;
        assert!(gone.expect("dropped within 5 s").is_err(), "sender dropped");
        assert!(!signal.is_bulk(), "its mark went with it");
    }

    #[test]
    fn the_lane_threads_run_at_the_lowest_priority() {
        let lanes = Lanes::new(2);
        let handle = lanes.bulk().expect("built");
        let nice = handle.block_on(async {
            tokio::spawn(async {
                rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                    .expect("getpriority")
            })
            .await
            .expect("task")
        });
        assert_eq!(nice, BULK_NICE);
    }
}
