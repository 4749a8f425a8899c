//! `run`: the sidecar. Probes every target × route on schedule, keeps health
//! and the route table, serves the app's forward proxy, exports metrics,
//! serves the status and admin endpoints, reloads its config on SIGHUP or
//! when the file changes, and shuts down gracefully (draining tunnels).
//!
//! [`run`] takes an already-loaded config, already-bound listeners and a
//! shutdown future, so tests run the whole sidecar in-process on port 0.

pub mod http;
pub mod scheduler;
pub mod state;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::config::{Config, Listen};
use crate::incidents::IncidentLog;
use crate::telemetry::Metrics;
use http::{Endpoints, Surface};
use scheduler::ProbeRunner;
use state::Shared;

/// How often holds are re-checked and idle-prone gauges re-set.
const UPKEEP: Duration = Duration::from_secs(2);

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
    pub async fn bind(listen: &Listen) -> Result<Self, String> {
        async fn one(addr: Option<SocketAddr>, what: &str) -> Result<Option<TcpListener>, String> {
            match addr {
                None => Ok(None),
                Some(a) => TcpListener::bind(a)
                    .await
                    .map(Some)
                    .map_err(|e| format!("cannot listen on {a} ({what}): {e}")),
            }
        }
        Ok(Self {
            metrics: one(listen.metrics, "listen.metrics").await?,
            admin: one(listen.admin, "listen.admin").await?,
            proxy: one(listen.proxy, "listen.proxy").await?,
        })
    }
}

/// Why `run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The incident state could not be opened.
    #[error("state_dir: {0}")]
    State(String),
}

/// Runs the sidecar until `shutdown` completes; reloads on SIGHUP.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let reload = Arc::new(Notify::new());
    #[cfg(unix)]
    {
        let reload = reload.clone();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the configuration");
                        reload.notify_one();
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch SIGHUP; reload by file change only"),
        }
    }
    run_with(config, listeners, shutdown, reload).await
}

/// [`run`], with reloads triggered by `reload` instead of SIGHUP.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    reload: Arc<Notify>,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    let incidents = match &config.state_dir {
        Some(dir) => IncidentLog::open(dir).map_err(RunError::State)?,
        None => IncidentLog::in_memory(),
    };
    let idle = (config.probe.interval + config.probe.timeout) * 3 + Duration::from_secs(60);
    let prober: Arc<dyn ProbeRunner> = Arc::new(crate::verify::prober_for(&config));
    let shared = Arc::new(Shared::new(
        config.clone(),
        prober,
        incidents,
        Metrics::new(idle),
    ));
    let endpoints = Arc::new(Endpoints::new(shared.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut servers = JoinSet::new();
    if let Some(l) = listeners.metrics {
        log_listen("metrics", &l);
        http::spawn(
            &mut servers,
            l,
            endpoints.clone(),
            Surface::Metrics,
            stop_rx.clone(),
        );
    }
    if let Some(l) = listeners.admin {
        log_listen("admin", &l);
        http::spawn(
            &mut servers,
            l,
            endpoints.clone(),
            Surface::Admin,
            stop_rx.clone(),
        );
    }
    if let Some(l) = listeners.proxy {
        log_listen("forward proxy", &l);
        servers.spawn(crate::forward::serve(l, shared.clone(), stop_rx.clone()));
    }
    let mut probes = scheduler::spawn(&shared, &stop_rx);
    endpoints.ready.store(true, Ordering::SeqCst);
    tracing::info!(
        targets = config.targets.len(),
        pairs = config.targets.iter().map(|t| t.routes.len()).sum::<usize>(),
        "egress-sentinel running"
    );

    let mut fingerprint = file_fingerprint(&config.file);
    let poll = config.run.reload_poll;
    let mut upkeep = tokio::time::interval(UPKEEP);
    let mut poll_timer = tokio::time::interval(poll.unwrap_or(Duration::from_secs(3600)));
    poll_timer.reset();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = reload.notified() => {
                fingerprint = file_fingerprint(&shared.config().file);
                try_reload(&shared, &mut probes, &stop_rx);
            }
            _ = poll_timer.tick(), if poll.is_some() => {
                let now = file_fingerprint(&shared.config().file);
                if now != fingerprint {
                    fingerprint = now;
                    tracing::info!("the configuration file changed: reloading");
                    try_reload(&shared, &mut probes, &stop_rx);
                }
            }
            _ = upkeep.tick() => {
                shared.tick();
                shared.publish_all();
                shared.metrics.upkeep();
                endpoints.record_fds();
            }
        }
    }

    tracing::info!("shutting down: no new work; letting work in flight finish");
    endpoints.ready.store(false, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let grace = shared.config().run.shutdown_timeout;
    let drained = tokio::time::timeout(grace, async {
        while probes.join_next().await.is_some() {}
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_seconds = grace.as_secs_f64(),
            "work still in flight at the deadline was cancelled"
        );
        probes.abort_all();
        servers.abort_all();
    }
    if let Err(e) = shared.with_incidents(|log| log.flush()) {
        tracing::error!(error = %e, "cannot write the incident file");
    }
    tracing::info!("stopped");
    Ok(())
}

fn log_listen(what: &str, l: &TcpListener) {
    if let Ok(a) = l.local_addr() {
        tracing::info!(listener = what, addr = %a, "listening");
    }
}

/// A hash of the config file's content (symlink swaps included), or `None`
/// when it can't be read.
fn file_fingerprint(path: &Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let text = crate::files::read_text(path, 1024 * 1024).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    Some(h.finish())
}

/// Loads the file again; applies it when valid, keeps the old one otherwise.
fn try_reload(shared: &Arc<Shared>, probes: &mut JoinSet<()>, stop: &watch::Receiver<bool>) {
    let old = shared.config();
    match Config::load(&old.file) {
        Ok(new) => {
            if new.listen != old.listen {
                tracing::warn!("listener addresses changed; they take effect at the next restart");
            }
            let prober: Arc<dyn ProbeRunner> = Arc::new(crate::verify::prober_for(&new));
            shared.replace_config(Arc::new(new), prober);
            probes.abort_all();
            *probes = scheduler::spawn(shared, stop);
            tracing::info!("configuration reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload rejected; the previous configuration stays in force");
            shared.set_reload(false, Some(e.to_string()));
        }
    }
}
