//! The process's signals for `run`: SIGTERM and SIGINT stop the sidecar,
//! SIGHUP reloads its config. Owns the order that loses none of them —
//! block before any thread exists, start the async runtime, install the
//! handlers, unblock — and the async runtime itself, since its worker
//! threads must be born with the signals blocked.
//!
//! The order is in the types: [`ProcessSignals`] only comes from
//! [`Blocked::install`], and a [`Blocked`] only from [`block`]. It never
//! reads the config nor binds: the binary does that between the two steps.

use std::sync::Arc;

use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// Why the process could not get its signals or its async runtime.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The async runtime did not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// SIGTERM, SIGINT and SIGHUP could not be blocked.
    #[cfg(unix)]
    #[error("cannot block SIGTERM, SIGINT and SIGHUP: {0}")]
    Block(#[source] nix::Error),
    /// SIGTERM, SIGINT and SIGHUP could not be unblocked.
    #[cfg(unix)]
    #[error("cannot unblock SIGTERM, SIGINT and SIGHUP: {0}")]
    Unblock(#[source] nix::Error),
    /// A signal handler could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Handler {
        /// `SIGTERM`, `SIGINT` or `SIGHUP`.
        signal: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// The async runtime every command shares the shape of, with `workers`
/// worker threads (`[runtime] worker_threads`).
pub fn async_runtime(workers: usize) -> Result<Runtime, StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
}

// === impl ProcessSignals ===

/// The signals `run` answers: SIGTERM and SIGINT stop it, SIGHUP reloads the
/// config. As PID 1 in a container, SIGTERM is ignored unless a handler is
/// installed: these are the handlers.
///
/// Installed with the three signals blocked, because installing is not
/// atomic: signal-hook-registry calls `sigaction` before it stores tokio's
/// action (a signal in between is dropped), and tokio subscribes the stream
/// only after that (a signal broadcast in between is dropped too). Blocked,
/// such a signal stays pending and is delivered when unblocked, to handlers
/// and streams that all exist by then.
#[cfg(unix)]
#[derive(Debug)]
pub struct ProcessSignals {
    /// SIGTERM: the kubelet's stop.
    terminate: tokio::signal::unix::Signal,
    /// SIGINT: Ctrl-C.
    interrupt: tokio::signal::unix::Signal,
    /// SIGHUP: reload the configuration.
    hangup: tokio::signal::unix::Signal,
}

/// The three signals, blocked on the main thread and so on every thread it
/// creates until [`Blocked::install`] unblocks them.
#[cfg(unix)]
#[derive(Debug)]
pub struct Blocked(nix::sys::signal::SigSet);

/// Blocks SIGTERM, SIGINT and SIGHUP on this thread, before any other
/// thread exists: one that arrives from now on stays pending. Call it
/// first in `main`, before the config is read (it sizes the runtime): from
/// then on a SIGTERM or SIGINT is held until the handlers exist and then
/// stops the sidecar cleanly, whenever it arrives.
#[cfg(unix)]
pub fn block() -> Result<Blocked, StartError> {
    use nix::sys::signal::{SigSet, Signal};
    let set: SigSet = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]
        .into_iter()
        .collect();
    set.thread_block().map_err(StartError::Block)?;
    Ok(Blocked(set))
}

#[cfg(unix)]
impl Blocked {
    /// Starts the runtime with `workers` threads and installs the handlers,
    /// losing no signal.
    ///
    /// The signal mask is per thread and inherited by the threads a thread
    /// creates. This thread blocked the signals first ([`block`]), so
    /// the runtime's workers start with them blocked and keep them blocked
    /// for good; once the handlers and streams exist, this thread (the one
    /// in `block_on` for the sidecar's whole life) unblocks them and alone
    /// receives them, a pending one at once. A thread created after that
    /// inherits either mask; in both cases the handlers are already in place.
    pub fn install(self, workers: usize) -> Result<(Runtime, ProcessSignals), StartError> {
        let Blocked(set) = self;
        let runtime = async_runtime(workers)?;
        let signals = {
            // tokio's handlers need the runtime's signal driver.
            let _context = runtime.enter();
            ProcessSignals::register()
        };
        // Unblocked even when the parent started us with them blocked: the
        // sidecar must stop on SIGTERM whatever it inherited.
        set.thread_unblock().map_err(StartError::Unblock)?;
        Ok((runtime, signals?))
    }
}

#[cfg(unix)]
impl ProcessSignals {
    fn register() -> Result<Self, StartError> {
        use tokio::signal::unix::{SignalKind, signal};
        let one = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| StartError::Handler {
                signal: name,
                source,
            })
        };
        Ok(Self {
            terminate: one(SignalKind::terminate(), "SIGTERM")?,
            interrupt: one(SignalKind::interrupt(), "SIGINT")?,
            hangup: one(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Forwards every SIGHUP to `reload` from now on, one received before
    /// included; the returned future completes on SIGTERM or SIGINT,
    /// including one received before it is first polled.
    pub(crate) fn into_shutdown(self, reload: Arc<Notify>) -> impl Future<Output = ()> {
        let Self {
            mut terminate,
            mut interrupt,
            mut hangup,
        } = self;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                reload.notify_one();
            }
        });
        async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM"),
                _ = interrupt.recv() => tracing::info!("SIGINT"),
            }
        }
    }
}

/// Elsewhere, Ctrl-C only.
#[cfg(not(unix))]
#[derive(Debug)]
pub struct ProcessSignals;

/// Elsewhere, nothing to block.
#[cfg(not(unix))]
#[derive(Debug)]
pub struct Blocked;

/// Elsewhere, nothing to block.
#[cfg(not(unix))]
pub fn block() -> Result<Blocked, StartError> {
    Ok(Blocked)
}

#[cfg(not(unix))]
impl Blocked {
    /// Starts the runtime with `workers` threads.
    pub fn install(self, workers: usize) -> Result<(Runtime, ProcessSignals), StartError> {
        Ok((async_runtime(workers)?, ProcessSignals))
    }
}

#[cfg(not(unix))]
impl ProcessSignals {
    pub(crate) fn into_shutdown(self, _reload: Arc<Notify>) -> impl Future<Output = ()> {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
