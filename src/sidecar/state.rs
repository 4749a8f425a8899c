//! The sidecar's shared state: the config in force, the prober, the health
//! book, the incident log and the metrics — and the one place where an
//! outcome (from a probe, or later from app traffic) becomes health events,
//! log lines, metrics and incident windows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::scheduler::ProbeRunner;
use crate::config::Config;
use crate::dial::{Dialer, Resolver};
use crate::health::{Event, Force, HealthBook, HealthSettings, TargetHealth};
use crate::incidents::{Change, IncidentLog};
use crate::probe::ProbeOutcome;
use crate::telemetry::Metrics;

/// The result of the last config load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadStatus {
    /// True when it was applied.
    pub ok: bool,
    /// When (Unix seconds).
    pub at: f64,
    /// The error, when rejected.
    pub error: Option<String>,
}

/// State shared by the scheduler, the listeners and the forward proxy.
pub struct Shared {
    config: RwLock<Arc<Config>>,
    prober: RwLock<Arc<dyn ProbeRunner>>,
    dialer: RwLock<Dialer>,
    health: Mutex<HealthBook>,
    incidents: Mutex<IncidentLog>,
    /// The metrics registry.
    pub metrics: Metrics,
    reload: Mutex<ReloadStatus>,
    wake: Mutex<HashMap<(String, String), Arc<Notify>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering from poisoning: the state stays usable even if
/// a panic ever happened while it was held (each update is self-contained).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn settings(config: &Config) -> HealthSettings {
    HealthSettings {
        fall: config.probe.fall,
        rise: config.probe.rise,
        hold_down: config.probe.hold_down,
        hold_down_max: config.probe.hold_down_max,
    }
}

fn book_for(config: &Config, old: Option<(&HealthBook, &Config)>) -> HealthBook {
    let mut book = HealthBook::new(settings(config));
    for t in &config.targets {
        let routes: Vec<(String, bool)> = t
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.is_direct()))
            .collect();
        let carried = old.and_then(|(book, cfg)| {
            let before = cfg.target(&t.name)?;
            (before.fingerprint == t.fingerprint).then(|| book.targets.get(&t.name).cloned())?
        });
        book.targets.insert(
            t.name.clone(),
            carried.unwrap_or_else(|| TargetHealth::new(&routes)),
        );
    }
    book
}

impl Shared {
    /// State for `config`, probing with `prober`, keeping incidents in `incidents`.
    pub fn new(
        config: Arc<Config>,
        prober: Arc<dyn ProbeRunner>,
        incidents: IncidentLog,
        metrics: Metrics,
    ) -> Self {
        let book = book_for(&config, None);
        let shared = Self {
            dialer: RwLock::new(Dialer::new(Resolver::new(config.resolve.clone()))),
            config: RwLock::new(config),
            prober: RwLock::new(prober),
            health: Mutex::new(book),
            incidents: Mutex::new(incidents),
            metrics,
            reload: Mutex::new(ReloadStatus {
                ok: true,
                at: now_unix(),
                error: None,
            }),
            wake: Mutex::new(HashMap::new()),
        };
        shared.metrics.config_reload(true);
        shared.metrics.config_loaded(&shared.config());
        shared.publish_all();
        shared
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The prober in force.
    pub fn prober(&self) -> Arc<dyn ProbeRunner> {
        self.prober
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The dialer app traffic uses: the same kind, with the same resolver
    /// table, as the prober's.
    pub fn dialer(&self) -> Dialer {
        self.dialer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the config and prober; health of unchanged targets is kept.
    pub fn replace_config(&self, config: Arc<Config>, prober: Arc<dyn ProbeRunner>) {
        self.metrics.config_loaded(&config);
        let old = self.config();
        {
            let mut health = lock(&self.health);
            let book = book_for(&config, Some((&health, &old)));
            *health = book;
        }
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        *self
            .prober
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = prober;
        self.set_reload(true, None);
        self.publish_all();
    }

    /// Records a load result.
    pub fn set_reload(&self, ok: bool, error: Option<String>) {
        *lock(&self.reload) = ReloadStatus {
            ok,
            at: now_unix(),
            error,
        };
        self.metrics.config_reload(ok);
    }

    /// The last load result.
    pub fn reload_status(&self) -> ReloadStatus {
        lock(&self.reload).clone()
    }

    /// A copy of the health book.
    pub fn health(&self) -> HealthBook {
        lock(&self.health).clone()
    }

    /// Runs `f` on the incident log.
    pub fn with_incidents<R>(&self, f: impl FnOnce(&mut IncidentLog) -> R) -> R {
        f(&mut lock(&self.incidents))
    }

    /// The route `target`'s traffic uses now.
    pub fn active_route(&self, target: &str) -> Option<String> {
        lock(&self.health).active_route(target).map(str::to_string)
    }

    /// True when the pair needs watching closely (failing, recovering, held).
    pub fn unsettled(&self, target: &str, route: &str) -> bool {
        lock(&self.health).unsettled(target, route, Instant::now())
    }

    /// The notifier that wakes the probe loop of a pair early.
    pub fn waker(&self, target: &str, route: &str) -> Arc<Notify> {
        lock(&self.wake)
            .entry((target.to_string(), route.to_string()))
            .or_default()
            .clone()
    }

    /// Feeds one outcome into health, metrics, logs and incidents.
    pub fn record(&self, outcome: &ProbeOutcome, via_proxy: bool) {
        self.metrics.record_probe(outcome, via_proxy);
        let events = lock(&self.health).observe(outcome, Instant::now());
        self.apply(&events);
        self.publish_target(&outcome.target);
    }

    /// Feeds an outcome seen on app traffic into health (not into probe
    /// metrics), and wakes the pair's probe at once after a failure so
    /// detection does not wait for the interval.
    pub fn record_traffic(&self, outcome: &ProbeOutcome) {
        let events = lock(&self.health).observe_traffic(outcome, Instant::now());
        self.apply(&events);
        if !outcome.ok {
            self.waker(&outcome.target, &outcome.route).notify_one();
        }
    }

    /// The active route and the operator's override of `target`.
    pub fn route_choice(&self, target: &str) -> Option<(String, Force)> {
        let health = lock(&self.health);
        let t = health.targets.get(target)?;
        Some((t.active_route().to_string(), t.force))
    }

    /// Sets the operator's override of `target`. `Err` says why it is refused.
    pub fn force(&self, target: &str, force: Force) -> Result<(), String> {
        let config = self.config();
        let t = config
            .target(target)
            .ok_or_else(|| format!("no target named {target:?}"))?;
        match force {
            Force::Direct if !t.allows_direct() => {
                return Err(format!("{target} does not list \"direct\" in its routes"));
            }
            Force::Proxy if t.routes.iter().all(|r| r.is_direct()) => {
                return Err(format!("{target} has no proxy route"));
            }
            _ => {}
        }
        let events = lock(&self.health).force(target, force, Instant::now());
        tracing::warn!(target_name = %target, force = ?force, "operator override of the route choice");
        self.apply(&events);
        self.publish_target(target);
        Ok(())
    }

    /// The proxy routes of `target` and why each is not in use, for the
    /// compliance log of a direct connection.
    pub fn proxy_state_summary(&self, target: &str) -> String {
        let health = lock(&self.health);
        let Some(t) = health.targets.get(target) else {
            return "no target".into();
        };
        if t.force == Force::Direct {
            return "operator forced direct".into();
        }
        let parts: Vec<String> = t
            .routes
            .iter()
            .filter(|r| !r.direct)
            .map(|r| match (&r.healthy, &r.last) {
                (Some(false), Some(o)) => {
                    format!("{}: unhealthy, {} ({})", r.route, o.reason, o.detail)
                }
                (Some(true), _) => format!("{}: healthy but held down after flapping", r.route),
                _ => format!("{}: not yet probed", r.route),
            })
            .collect();
        parts.join("; ")
    }

    /// Re-derives active routes (holds expire with time alone).
    pub fn tick(&self) {
        let events = lock(&self.health).tick(Instant::now());
        self.apply(&events);
    }

    /// Turns health events into logs, counters and incident windows.
    pub fn apply(&self, events: &[Event]) {
        let wall = SystemTime::now();
        for e in events {
            match e {
                Event::RouteHealth {
                    target,
                    route,
                    healthy: false,
                    preferred,
                    cause,
                    ..
                } => {
                    let (reason, detail) = cause
                        .as_ref()
                        .map(|c| (c.reason, c.detail.clone()))
                        .unwrap_or((crate::reason::FailureReason::Io, String::new()));
                    tracing::warn!(target_name = %target, route = %route, reason = %reason, detail = %detail, "route unhealthy");
                    if *preferred {
                        let change = self.with_incidents(|log| {
                            log.open_target(target, route, reason, &detail, wall)
                        });
                        if let Change::Opened(w) = change {
                            tracing::warn!(incident = w.id, "{}", w.render());
                        }
                    }
                }
                Event::RouteHealth {
                    target,
                    route,
                    healthy: true,
                    preferred,
                    held_for,
                    ..
                } => {
                    match held_for {
                        Some(h) => {
                            tracing::info!(target_name = %target, route = %route, held_seconds = h.as_secs_f64(), "route healthy; held down before traffic returns (it flapped)")
                        }
                        None => {
                            tracing::info!(target_name = %target, route = %route, "route healthy")
                        }
                    }
                    if *preferred {
                        if let Some(Change::Closed(w)) =
                            self.with_incidents(|log| log.close_target(target, wall))
                        {
                            tracing::info!(incident = w.id, "{}", w.render());
                        }
                    }
                }
                Event::Failover {
                    target,
                    from,
                    to,
                    down,
                } => {
                    if *down {
                        tracing::error!(target_name = %target, from = %from, to = %to, "every route is down; traffic stays on the preferred route");
                    } else {
                        tracing::warn!(target_name = %target, from = %from, to = %to, "active route changed");
                    }
                    self.metrics.failover(target, from, to);
                    self.publish_target(target);
                }
            }
        }
    }

    /// Sets the health and active gauges of every route of `target`.
    pub fn publish_target(&self, target: &str) {
        let health = lock(&self.health);
        if let Some(t) = health.targets.get(target) {
            for (i, r) in t.routes.iter().enumerate() {
                self.metrics
                    .route_state(target, &r.route, r.healthy == Some(true), i == t.active);
            }
        }
    }

    /// Re-sets every gauge that is not driven by probes (they would go idle).
    pub fn publish_all(&self) {
        let config = self.config();
        for t in &config.targets {
            self.publish_target(&t.name);
            if let Some(not_after) = t.client_cert_not_after {
                self.metrics.client_cert_not_after(&t.name, not_after);
            }
        }
        self.metrics.publish_certs(&config);
        self.metrics.build_info();
        self.metrics.config_reload(self.reload_status().ok);
    }
}
