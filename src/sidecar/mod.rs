//! `run`: the sidecar. Probes every target × route on schedule, keeps the
//! route table, serves the app's forward proxy, exports metrics, serves the
//! status and admin endpoints, builds a new generation when the config or
//! any file it names changes (or on SIGHUP), and shuts down as Kubernetes
//! expects: `/readyz` 503 at once, listeners serving through the drain,
//! exit before the deadline.
//!
//! [`run`] takes an already-loaded config, already-bound listeners and the
//! process's signals; [`run_with`] takes a shutdown future and [`Hooks`]
//! instead, so tests run the whole sidecar in-process on port 0.
//!
//! # Layout
//! - [`runtime`]: the state shared by everything below, and the one place
//!   where observations become events, logs, metrics and incidents; under
//!   `runtime/`, what each event does, the gauges set again from state,
//!   and the forward proxy's `Routing` handle.
//! - [`scheduler`]: one probe loop per target × route.
//! - [`reload`]: watching the config and the files it names.
//! - [`signals`]: SIGTERM, SIGINT and SIGHUP, installed without losing one,
//!   and the async runtime they need.
//! - [`http`]: the metrics and admin listeners: routing, body bounds, the
//!   eviction of connections stalled on their client; under `http/`, the
//!   listener and its connections, body reading, replies, `POST /verify`
//!   and `POST /routes/<target>`.
//! - [`admin`]: the checks in front of every state-changing admin request
//!   (Host, Origin, token or loopback peer, JSON bodies).
//! - [`allocator`]: `run` restarts itself once with one malloc arena
//!   (memory flat for weeks).
//! - [`status`]: `/status` (JSON); [`page`]: `/` (the HTML status page;
//!   one file per section under `page/`, its style sheet and script as
//!   `page/style.css` and `page/script.js`).

pub(crate) mod admin;
pub mod allocator;
mod checks;
pub(crate) mod http;
pub(crate) mod page;
pub(crate) mod reload;
pub mod runtime;
pub mod scheduler;
pub mod signals;
pub(crate) mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Config, Listen};
use crate::generation::{Generation, ProberFactory, real_prober};
use crate::incidents::IncidentLog;
use crate::telemetry::Metrics;
use http::{Endpoints, Surface};
use runtime::Runtime;
use signals::ProcessSignals;

/// How often holds are re-checked and idle-prone gauges re-set.
const UPKEEP: Duration = Duration::from_secs(2);
/// The TCP detail of the descriptor watch is sampled every this many
/// upkeeps (10 s, and at start): the kernel writes the namespace's whole
/// TCP tables for it, TIME_WAIT included, which in a busy pod cost more CPU
/// than the probes did when it ran every 2 s (benches/README.md).
const FD_DETAIL_EVERY: u32 = 5;

/// The sockets `run` serves on (`None`: that listener is off).
#[derive(Debug, Default)]
pub struct Listeners {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: Option<TcpListener>,
    /// `/status`, `POST /verify`.
    pub admin: Option<TcpListener>,
    /// The app's forward proxy.
    pub proxy: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `[listen]`; the error names the one that failed.
    pub async fn bind(listen: &Listen) -> Result<Self, BindError> {
        async fn one(
            addr: Option<SocketAddr>,
            key: &'static str,
        ) -> Result<Option<TcpListener>, BindError> {
            match addr {
                None => Ok(None),
                Some(a) => TcpListener::bind(a)
                    .await
                    .map(Some)
                    .map_err(|source| BindError {
                        addr: a,
                        key,
                        source,
                    }),
            }
        }
        Ok(Self {
            metrics: one(listen.metrics, "listen.metrics").await?,
            admin: one(listen.admin, "listen.admin").await?,
            proxy: one(listen.proxy, "listen.proxy").await?,
        })
    }
}

/// A `[listen]` address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({key}): {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The key that names it (`listen.proxy`, ...).
    pub key: &'static str,
    /// Why.
    pub source: std::io::Error,
}

/// Why `run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The incident state could not be opened.
    #[error("state_dir: {0}")]
    State(#[from] crate::incidents::IncidentFileError),
}

/// What tests (and embedders) may replace.
pub struct Hooks {
    /// Triggers a reload, as SIGHUP does.
    pub reload: Arc<Notify>,
    /// Builds each generation's prober (the real one by default).
    pub prober: ProberFactory,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            reload: Arc::new(Notify::new()),
            prober: real_prober(),
        }
    }
}

/// Runs the sidecar until SIGTERM or SIGINT; reloads on SIGHUP (and when a
/// file the config names changes). `signals` come from
/// [`signals::block`] and [`signals::Blocked::install`], which also start
/// the async runtime this runs on.
pub async fn run(
    config: Config,
    listeners: Listeners,
    signals: ProcessSignals,
) -> Result<(), RunError> {
    let hooks = Hooks::default();
    let shutdown = signals.into_shutdown(hooks.reload.clone());
    run_with(config, listeners, shutdown, hooks).await
}

/// [`run`], until `shutdown` completes, with reloads triggered by
/// `hooks.reload` instead of SIGHUP.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    hooks: Hooks,
) -> Result<(), RunError> {
    let incidents = match &config.state_dir {
        Some(dir) => IncidentLog::open(dir)?,
        None => IncidentLog::in_memory(),
    };
    let idle = (config.probe.interval + config.probe.timeout) * 3 + Duration::from_secs(60);
    let first = Generation::build(1, config, &hooks.prober);
    let rt = Runtime::start(first, incidents, Metrics::new(idle));
    let endpoints = Arc::new(Endpoints::new(rt.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let servers = serve(listeners, &rt, &endpoints, &stop_rx);
    let probes = scheduler::spawn(&rt, &stop_rx);
    endpoints.ready.store(true, Ordering::SeqCst);
    let config = rt.config();
    tracing::info!(
        targets = config.targets.len(),
        pairs = config.targets.iter().map(|t| t.routes.len()).sum::<usize>(),
        "egress-sentinel running"
    );
    let mut running = Running {
        rt,
        endpoints,
        hooks,
        probes,
        stop: stop_rx,
    };
    running.until(shutdown).await;
    let Running {
        rt,
        endpoints,
        probes,
        ..
    } = running;
    shut_down(&rt, &endpoints, stop_tx, probes, servers).await;
    Ok(())
}

/// Starts the listeners that are on.
fn serve(
    listeners: Listeners,
    rt: &Arc<Runtime>,
    endpoints: &Arc<Endpoints>,
    stop: &watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut servers = JoinSet::new();
    for (l, surface, name) in [
        (listeners.metrics, Surface::Metrics, "metrics"),
        (listeners.admin, Surface::Admin, "admin"),
    ] {
        if let Some(l) = l {
            log_listen(name, &l);
            http::spawn(&mut servers, l, endpoints.clone(), surface, stop.clone());
        }
    }
    if let Some(l) = listeners.proxy {
        log_listen("forward proxy", &l);
        servers.spawn(crate::forward::serve(
            l,
            rt.clone(),
            rt.direct_tunnels(),
            stop.clone(),
        ));
    }
    servers
}

/// The sidecar between start and shutdown: reloads and upkeep.
struct Running {
    rt: Arc<Runtime>,
    endpoints: Arc<Endpoints>,
    hooks: Hooks,
    probes: JoinSet<()>,
    stop: watch::Receiver<bool>,
}

impl Running {
    /// Reloads (on the hook, or a changed file at each poll) and upkeep,
    /// until `shutdown` completes.
    async fn until(&mut self, shutdown: impl Future<Output = ()>) {
        let config = self.rt.config();
        let mut watcher = reload::Watcher::new(&config);
        let mut upkeep = tokio::time::interval(UPKEEP);
        let mut upkeeps = 0u32;
        let mut poll = config.run.reload_poll;
        let mut poll_timer = reload::poll_timer(poll);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = self.hooks.reload.notified() => {
                    if self.reload().await {
                        watcher = reload::Watcher::new(&self.rt.config());
                        reload::repoll(&self.rt.config(), &mut poll, &mut poll_timer);
                    }
                }
                _ = poll_timer.tick(), if poll.is_some() => {
                    if let Some(changed) = watcher.poll().await {
                        let files: Vec<_> = changed.iter().map(|(p, _)| p.display().to_string()).collect();
                        tracing::info!(files = ?files, "a file the configuration names changed: reloading");
                        if self.reload().await {
                            watcher = reload::Watcher::new(&self.rt.config());
                            reload::repoll(&self.rt.config(), &mut poll, &mut poll_timer);
                        } else {
                            watcher.accept(&changed);
                        }
                    }
                }
                _ = upkeep.tick() => {
                    self.upkeep(upkeeps).await;
                    upkeeps = upkeeps.wrapping_add(1);
                }
            }
        }
    }

    async fn reload(&mut self) -> bool {
        try_reload(&self.rt, &self.hooks.prober, &mut self.probes, &self.stop).await
    }

    async fn upkeep(&self, n: u32) {
        self.rt.tick().await;
        self.rt.metrics.upkeep();
        if n % FD_DETAIL_EVERY == 0 {
            let e = self.endpoints.clone();
            tokio::task::spawn_blocking(move || e.record_fd_detail());
        }
    }
}

/// SIGTERM's sequence: not ready at once, serve through the drain, then
/// stop accepting and let work in flight finish until the deadline.
async fn shut_down(
    rt: &Runtime,
    endpoints: &Endpoints,
    stop_tx: watch::Sender<bool>,
    mut probes: JoinSet<()>,
    mut servers: JoinSet<()>,
) {
    let began = Instant::now();
    let s = rt.config().shutdown.clone();
    endpoints.ready.store(false, Ordering::SeqCst);
    tracing::info!(
        drain_seconds = s.drain.as_secs_f64(),
        deadline_seconds = s.deadline.as_secs_f64(),
        "shutting down: not ready; still serving through the drain"
    );
    tokio::time::sleep(s.drain).await;
    tracing::info!("drain over: no new connections; letting work in flight finish");
    let _ = stop_tx.send(true);
    let finished = tokio::time::timeout_at(began + s.deadline, async {
        while probes.join_next().await.is_some() {}
        while servers.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            deadline_seconds = s.deadline.as_secs_f64(),
            "work still in flight at the deadline was closed"
        );
        probes.abort_all();
        servers.abort_all();
    }
    if let Err(e) = rt.stop().await {
        tracing::error!(error = %e, "cannot write the incident file");
    }
    tracing::info!("stopped");
}

fn log_listen(what: &str, l: &TcpListener) {
    if let Ok(a) = l.local_addr() {
        tracing::info!(listener = what, addr = %a, "listening");
    }
}

/// Loads the file again and builds a new generation from it; swaps it in
/// when valid (true), keeps the old one otherwise (false).
async fn try_reload(
    rt: &Arc<Runtime>,
    prober: &ProberFactory,
    probes: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> bool {
    let old = rt.current();
    match Config::load(&old.config.file) {
        Ok(mut new) => {
            let restart = new.keep_restart_only(&old.config);
            rt.install(Generation::build(old.id + 1, new, prober)).await;
            rt.set_restart_required(restart);
            probes.abort_all();
            *probes = scheduler::spawn(rt, stop);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload rejected; the previous configuration stays in force");
            rt.set_reload(false, Some(e.to_string()));
            false
        }
    }
}
