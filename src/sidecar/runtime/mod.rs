//! The sidecar's runtime state: the generation in force, the route table
//! (behind one lock), the incident log, the metrics, and probe progress.
//! The one place where an observation (a probe outcome, an app connection's
//! result) becomes health events, and events become log lines, metrics,
//! incident windows, early probes and the closing of direct tunnels after
//! fail-back. It owns the compliance trail the forward proxy reports
//! direct connections to.
//!
//! It implements [`crate::forward::Routing`], the narrow handle the forward
//! proxy sees.
//!
//! # Layout
//! - this file: [`Runtime`], its state and the inputs that feed it (a
//!   generation installed, a probe outcome, an override, an upkeep tick);
//! - `events`: what each route-table event does (logs, counters,
//!   incidents, early probes, fail-back closes);
//! - `publish`: the gauges set again from the table and the config;
//! - `routing`: the [`crate::forward::Routing`] handle of the forward proxy;
//! - `exhaustion`: this process's own `local_exhausted` failures, counted
//!   and summarised once a second, never fed to the route table.

mod events;
mod exhaustion;
mod publish;
mod routing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::compliance::Trail;
use crate::config::Config;
use crate::forward::DirectTunnels;
use crate::generation::{Current, Generation};
use crate::health::{HealthSettings, HostPort, Observation, Override, RouteTable, TargetSpec};
use crate::incidents::IncidentLog;
use crate::probe::ProbeOutcome;
use crate::reason::FailureReason;
use crate::telemetry::Metrics;

/// Why an operator's override was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideRefused {
    /// No target has that name.
    #[error("no target named {0:?}")]
    NoTarget(String),
    /// `direct` asked for a target that does not list it.
    #[error("{0} does not list \"direct\" in its routes")]
    NoDirect(String),
    /// `proxy` asked for a target with no proxy route.
    #[error("{0} has no proxy route")]
    NoProxy(String),
}

/// The result of the last config load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadStatus {
    /// True when it was applied.
    pub ok: bool,
    /// When (Unix seconds).
    pub at: f64,
    /// The error, when rejected.
    pub error: Option<String>,
    /// The generation in force.
    pub generation: u64,
}

/// A woken probe runs no sooner than this after the pair's last one: app
/// traffic failing in a burst must not turn into a burst of probes.
const MIN_WAKE_GAP: Duration = Duration::from_secs(1);

/// Per pair: when its loop last finished a probe (or started), and its waker.
#[derive(Debug)]
struct Pair {
    last_done: Instant,
    wake: Arc<Notify>,
}

/// State shared by the scheduler, the listeners and the forward proxy.
pub struct Runtime {
    current: Current,
    table: Arc<Mutex<RouteTable>>,
    incidents: Mutex<IncidentLog>,
    /// The metrics registry.
    pub metrics: Metrics,
    reload: Mutex<ReloadStatus>,
    pairs: Mutex<HashMap<(String, String), Pair>>,
    direct: Arc<DirectTunnels>,
    /// The compliance trail, the access log and the direct-connection summary.
    trail: Trail,
    /// `local_exhausted` failures not yet written to the log.
    exhaustion: Mutex<exhaustion::Summary>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
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
        degraded_window: config.probe.degraded_window,
        degraded_failures: config.probe.degraded_failures,
    }
}

fn specs(config: &Config) -> Vec<TargetSpec> {
    config
        .targets
        .iter()
        .map(|t| TargetSpec {
            name: t.name.clone(),
            routes: t
                .routes
                .iter()
                .map(|r| (r.name.clone(), r.is_direct()))
                .collect(),
            probe: HostPort::new(&t.endpoint.host, t.endpoint.port),
            failover_on_degraded: t.failover_on_degraded,
        })
        .collect()
}

impl Runtime {
    /// State for the first generation, keeping incidents in `incidents`.
    pub fn new(first: Generation, incidents: IncidentLog, metrics: Metrics) -> Self {
        let table = RouteTable::new(settings(&first.config), &specs(&first.config));
        let id = first.id;
        let first_config = first.config.clone();
        let rt = Self {
            current: Current::new(first),
            table: Arc::new(Mutex::new(table)),
            incidents: Mutex::new(incidents),
            metrics,
            reload: Mutex::new(ReloadStatus {
                ok: true,
                at: now_unix(),
                error: None,
                generation: id,
            }),
            pairs: Mutex::new(HashMap::new()),
            direct: Arc::new(DirectTunnels::default()),
            trail: Trail::new(&first_config),
            exhaustion: Mutex::default(),
        };
        rt.zero_failures(&first_config);
        rt.metrics.config_reload(true);
        rt.metrics.config_loaded(&rt.config());
        rt.publish_all();
        rt
    }

    /// The registry of direct tunnels, for the forward proxy.
    pub fn direct_tunnels(&self) -> Arc<DirectTunnels> {
        self.direct.clone()
    }

    /// The generation in force: take it once per unit of work.
    pub fn current(&self) -> Arc<Generation> {
        self.current.get()
    }

    /// The config of the generation in force.
    pub fn config(&self) -> Arc<Config> {
        self.current.get().config.clone()
    }

    /// Swaps in `next`: the route table is rebuilt for it, keeping every
    /// (target, route) pair's state by name.
    pub fn install(&self, next: Generation) {
        let id = next.id;
        self.metrics.config_loaded(&next.config);
        {
            let mut table = lock(&self.table);
            let rebuilt = table.rebuild(settings(&next.config), &specs(&next.config));
            *table = rebuilt;
        }
        self.trail.configure(&next.config);
        self.zero_failures(&next.config);
        self.current.store(next);
        self.set_reload(true, None);
        self.tick();
        self.publish_all();
        tracing::info!(generation = id, "configuration applied");
    }

    /// Records a load result.
    pub fn set_reload(&self, ok: bool, error: Option<String>) {
        let generation = self.current.get().id;
        *lock(&self.reload) = ReloadStatus {
            ok,
            at: now_unix(),
            error,
            generation,
        };
        self.metrics.config_reload(ok);
    }

    /// The last load result.
    pub fn reload_status(&self) -> ReloadStatus {
        lock(&self.reload).clone()
    }

    /// A copy of the route table.
    pub fn table(&self) -> RouteTable {
        lock(&self.table).clone()
    }

    /// Runs `f` on the incident log.
    pub fn with_incidents<R>(&self, f: impl FnOnce(&mut IncidentLog) -> R) -> R {
        f(&mut lock(&self.incidents))
    }

    /// The route `target`'s traffic uses now.
    pub fn active_route(&self, target: &str) -> Option<String> {
        lock(&self.table).active_route(target).map(str::to_string)
    }

    /// True when the pair needs watching closely (failing, recovering, held).
    pub fn unsettled(&self, target: &str, route: &str) -> bool {
        lock(&self.table).unsettled(target, route, Instant::now())
    }

    /// The pair's waker; registers the pair's loop as started now if new.
    pub fn waker(&self, target: &str, route: &str) -> Arc<Notify> {
        lock(&self.pairs)
            .entry((target.to_string(), route.to_string()))
            .or_insert_with(|| Pair {
                last_done: Instant::now(),
                wake: Arc::default(),
            })
            .wake
            .clone()
    }

    /// How long a woken probe of the pair must still wait (rate limit).
    pub fn wake_delay(&self, target: &str, route: &str) -> Duration {
        let pairs = lock(&self.pairs);
        pairs
            .get(&(target.to_string(), route.to_string()))
            .map_or(Duration::ZERO, |p| {
                MIN_WAKE_GAP.saturating_sub(p.last_done.elapsed())
            })
    }

    /// The pair of the config in force whose last probe finished longest
    /// ago, and how long ago: what `/healthz` judges the scheduler by.
    pub fn stalest_pair(&self) -> Option<(String, String, Duration)> {
        let config = self.config();
        let pairs = lock(&self.pairs);
        let now = Instant::now();
        config
            .targets
            .iter()
            .flat_map(|t| t.routes.iter().map(move |r| (t, r)))
            .map(|(t, r)| {
                let key = (t.name.clone(), r.name.clone());
                let age = pairs.get(&key).map_or(Duration::ZERO, |p| {
                    now.saturating_duration_since(p.last_done)
                });
                (key.0, key.1, age)
            })
            .max_by_key(|(_, _, age)| *age)
    }

    /// Feeds one probe outcome into health, metrics, logs and incidents.
    pub fn record_probe(&self, outcome: ProbeOutcome, via_proxy: bool) {
        if let Some(p) = lock(&self.pairs).get_mut(&(outcome.target.clone(), outcome.route.clone()))
        {
            p.last_done = Instant::now();
        }
        self.metrics.record_probe(&outcome, via_proxy);
        for c in &outcome.proxy_addresses {
            self.metrics
                .proxy_address_up(&outcome.route, &c.address.to_string(), c.up);
        }
        if outcome.reason == FailureReason::LocalExhausted {
            self.exhausted(exhaustion::Who::Probe, &outcome.detail);
        }
        let target = outcome.target.clone();
        let events =
            lock(&self.table).observe(Instant::now(), Observation::Probe(Box::new(outcome)));
        self.apply(&events);
        self.publish_target(&target);
    }

    /// Sets the operator's override of `target` for `ttl` (then it ends by
    /// itself at an upkeep tick; `Auto` has none).
    pub fn set_override(
        &self,
        target: &str,
        o: Override,
        ttl: Duration,
    ) -> Result<(), OverrideRefused> {
        let config = self.config();
        let t = config
            .target(target)
            .ok_or_else(|| OverrideRefused::NoTarget(target.to_string()))?;
        match o {
            Override::Direct if !t.allows_direct() => {
                return Err(OverrideRefused::NoDirect(target.to_string()));
            }
            Override::Proxy if t.routes.iter().all(|r| r.is_direct()) => {
                return Err(OverrideRefused::NoProxy(target.to_string()));
            }
            _ => {}
        }
        let now = Instant::now();
        let events = lock(&self.table).override_until(target, o, now, now + ttl);
        if o == Override::Auto {
            tracing::warn!(target = %target, force = ?o, "operator override of the route choice");
        } else {
            tracing::warn!(target = %target, force = ?o, ttl_seconds = ttl.as_secs_f64(), "operator override of the route choice");
        }
        self.apply(&events);
        self.publish_target(target);
        Ok(())
    }

    /// Re-derives active routes (holds expire with time alone) and logs the
    /// direct-connection summaries that are due.
    pub fn tick(&self) {
        let events = lock(&self.table).tick(Instant::now());
        self.apply(&events);
        self.trail.tick();
        if let Some(line) = lock(&self.exhaustion).flush(Instant::now()) {
            line.log();
        }
    }

    /// Counts one `local_exhausted` failure; writes the summary line when
    /// one is due. Never reaches the route table or the incidents.
    fn exhausted(&self, who: exhaustion::Who, detail: &str) {
        let line = lock(&self.exhaustion).record(Instant::now(), who, detail);
        if let Some(line) = line {
            line.log();
        }
    }
}
