//! The sidecar's runtime: the handle every part holds ([`Runtime`]: the
//! generation in force, the metrics, the compliance trail, the registry of
//! direct tunnels, the inbox of the route-state owner and the snapshots it
//! publishes), and that owner (`owner`): one task that holds the route
//! table, the incident log and the probe schedule, and is the one place
//! where an observation (a probe outcome, an app connection's result)
//! becomes health events, and events become log lines, metrics, incident
//! windows, early probes and the closing of direct tunnels after fail-back.
//!
//! Writers send the owner typed messages (`inbox`); readers borrow the
//! latest [`Snapshot`] once per unit of work. No reader takes a lock on
//! route state.
//!
//! It implements [`crate::forward::Routing`], the narrow handle the forward
//! proxy sees.
//!
//! # Layout
//! - this file: [`Runtime`], the handle, and the inputs that feed the owner
//!   (a generation installed, a probe outcome, an override, an upkeep tick);
//! - `inbox`: the bounded queue to the owner, merging identical app
//!   observations when full;
//! - `owner`: the task that owns route state and publishes snapshots;
//! - `events`: what each route-table event does (logs, counters,
//!   incidents, early probes, fail-back closes);
//! - `publish`: the gauges set again from the table and the config;
//! - `routing`: the [`crate::forward::Routing`] handle of the forward proxy;
//! - `credentials`: credential checks' results and skips on the board,
//!   in metrics and in their own incident windows;
//! - `exhaustion`: this process's own `local_exhausted` failures, counted
//!   and summarised once a second, never fed to the route table.

mod credentials;
mod events;
mod exhaustion;
mod inbox;
mod owner;
mod publish;
mod routing;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::compliance::Trail;
use crate::config::{Config, RestartKey};
use crate::forward::DirectTunnels;
use crate::generation::{Current, Generation};
use crate::health::{HealthSettings, HostPort, Override, Snapshot, TargetSpec, TrafficResult};
use crate::incidents::{IncidentFileError, IncidentLog};
use crate::probe::ProbeOutcome;
use crate::telemetry::Metrics;
pub use inbox::CAPACITY as INBOX_CAPACITY;
use inbox::{Inbox, Message};
use owner::Owner;

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
    /// Settings a reload changed that keep their running values until a
    /// restart (empty when everything loaded is in force).
    pub restart_required: Vec<RestartKey>,
}

/// The handle shared by the scheduler, the listeners and the forward proxy.
pub struct Runtime {
    current: Current,
    /// The metrics registry.
    pub metrics: Metrics,
    reload: Mutex<ReloadStatus>,
    direct: Arc<DirectTunnels>,
    /// The compliance trail, the access log and the direct-connection summary.
    trail: Trail,
    /// The route-state owner's inbox.
    inbox: Inbox,
    /// The owner's latest snapshot.
    snapshot: watch::Receiver<Arc<Snapshot>>,
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

pub(super) fn settings(config: &Config) -> HealthSettings {
    HealthSettings {
        fall: config.probe.fall,
        rise: config.probe.rise,
        hold_down: config.probe.hold_down,
        hold_down_max: config.probe.hold_down_max,
        degraded_window: config.probe.degraded_window,
        degraded_failures: config.probe.degraded_failures,
    }
}

pub(super) fn specs(config: &Config) -> Vec<TargetSpec> {
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
    /// The handle for the first generation, and the owner of its route
    /// state started on the current tokio runtime, keeping incidents in
    /// `incidents`.
    pub fn start(first: Generation, incidents: IncidentLog, metrics: Metrics) -> Arc<Self> {
        let id = first.id;
        let initial = Arc::new(Owner::initial(&first, &incidents));
        let (publish, snapshot) = watch::channel(initial.clone());
        let rt = Arc::new(Self {
            trail: Trail::new(&first.config),
            current: Current::new(first),
            metrics,
            reload: Mutex::new(ReloadStatus {
                ok: true,
                at: now_unix(),
                error: None,
                generation: id,
                restart_required: Vec::new(),
            }),
            direct: Arc::new(DirectTunnels::default()),
            inbox: Inbox::default(),
            snapshot,
        });
        let config = rt.config();
        rt.zero_failures(&config);
        rt.metrics.config_reload(true, false);
        rt.metrics.config_loaded(&config);
        let owner = Owner::new(rt.clone(), &initial, config, incidents, publish);
        tokio::spawn(owner.run());
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

    /// The latest route state: borrow it once per unit of work.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// App observations merged in the owner's inbox while it was full.
    pub fn merged_observations(&self) -> u64 {
        self.inbox.merged()
    }

    /// Swaps in `next`: the owner rebuilds the route table for it, keeping
    /// every (target, route) pair's state by name, before the generation
    /// is put in force.
    pub async fn install(&self, next: Generation) {
        let id = next.id;
        self.metrics.config_loaded(&next.config);
        self.trail.configure(&next.config);
        self.zero_failures(&next.config);
        let next = Arc::new(next);
        let (done, applied) = oneshot::channel();
        self.inbox
            .send(Message::Install {
                generation: next.clone(),
                done,
            })
            .await;
        let _ = applied.await;
        self.current.store_arc(next);
        self.set_reload(true, None);
        tracing::info!(generation = id, "configuration applied");
    }

    /// Records a load result (the settings waiting for a restart stay as
    /// they were).
    pub fn set_reload(&self, ok: bool, error: Option<String>) {
        let generation = self.current.get().id;
        let mut status = lock(&self.reload);
        status.ok = ok;
        status.at = now_unix();
        status.error = error;
        status.generation = generation;
        self.metrics
            .config_reload(ok, !status.restart_required.is_empty());
    }

    /// Records the settings the last applied reload changed that only a
    /// restart applies (they keep their running values): logged, in
    /// `/status`, on the page and in `egress_config_restart_required`.
    pub fn set_restart_required(&self, keys: Vec<RestartKey>) {
        if !keys.is_empty() {
            let names: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
            tracing::warn!(
                keys = ?names,
                "configuration applied except settings only a restart applies: they keep their running values until the process restarts"
            );
        }
        let mut status = lock(&self.reload);
        status.restart_required = keys;
        self.metrics
            .config_reload(status.ok, !status.restart_required.is_empty());
    }

    /// The last load result.
    pub fn reload_status(&self) -> ReloadStatus {
        lock(&self.reload).clone()
    }

    /// Feeds one probe outcome into health, metrics, logs and incidents;
    /// returns once it is applied, with whether the pair needs watching
    /// closely now. Never dropped: waits for room in the owner's inbox.
    pub async fn record_probe(&self, outcome: ProbeOutcome, via_proxy: bool) -> bool {
        self.metrics.record_probe(&outcome, via_proxy);
        for c in &outcome.proxy_addresses {
            self.metrics
                .proxy_address_up(&outcome.route, &c.address.to_string(), c.up);
        }
        let (done, applied) = oneshot::channel();
        self.inbox
            .send(Message::Probe {
                outcome: Box::new(outcome),
                done: Some(done),
            })
            .await;
        applied.await.unwrap_or(true)
    }

    /// Feeds a credential check's result to the owner.
    pub async fn report_credential(&self, checked: crate::credential::check::Checked) {
        self.inbox
            .send(Message::Credential(Box::new(checked)))
            .await;
    }

    /// `target`'s credential check is skipped: `why`.
    pub async fn skip_credential(&self, target: &str, why: String) {
        let target = target.to_string();
        self.inbox
            .send(Message::CredentialSkipped { target, why })
            .await;
    }

    /// Feeds one app connection's result (merged with an identical one
    /// queued before it when the inbox is full).
    pub async fn report_traffic(&self, result: TrafficResult) {
        self.inbox.send(Message::Traffic { result, count: 1 }).await;
    }

    /// Sets the operator's override of `target` for `ttl` (then it ends by
    /// itself at an upkeep tick; `Auto` has none); returns once applied.
    pub async fn set_override(
        &self,
        target: &str,
        to: Override,
        ttl: Duration,
    ) -> Result<(), OverrideRefused> {
        let config = self.config();
        let t = config
            .target(target)
            .ok_or_else(|| OverrideRefused::NoTarget(target.to_string()))?;
        match to {
            Override::Direct if !t.allows_direct() => {
                return Err(OverrideRefused::NoDirect(target.to_string()));
            }
            Override::Proxy if t.routes.iter().all(|r| r.is_direct()) => {
                return Err(OverrideRefused::NoProxy(target.to_string()));
            }
            _ => {}
        }
        if to == Override::Auto {
            tracing::warn!(target = %target, force = ?to, "operator override of the route choice");
        } else {
            tracing::warn!(target = %target, force = ?to, ttl_seconds = ttl.as_secs_f64(), "operator override of the route choice");
        }
        let (done, applied) = oneshot::channel();
        let until = Instant::now() + ttl;
        self.inbox
            .send(Message::Override {
                target: target.to_string(),
                to,
                until,
                done,
            })
            .await;
        let _ = applied.await;
        Ok(())
    }

    /// Re-derives active routes (holds expire with time alone), sets the
    /// gauges no probe drives, and logs the summaries that are due.
    pub async fn tick(&self) {
        self.inbox.send(Message::Tick).await;
    }

    /// Stops the owner after it wrote the incident file; the write's result.
    pub async fn stop(&self) -> Result<(), IncidentFileError> {
        let (done, written) = oneshot::channel();
        self.inbox.send(Message::Stop { done }).await;
        // An owner already gone wrote nothing more to write.
        written.await.unwrap_or(Ok(()))
    }
}
