//! [`Metrics`]: the one recorder a sidecar instance writes to and
//! `/metrics` renders, with a typed method per thing recorded (a probe, a
//! route's state, a failover, a forwarded connection, a watch sample).
//!
//! Owns the label sets and the series that exist from the start. It
//! never spells a metric name or a help text: those are the contract in
//! the parent module, used here by name. Each instance is its own
//! registry (no global recorder).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{Key, KeyName, Label, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use metrics_util::MetricKindMask;

use super::pairs::{Pair, Pairs, Reg};

// Every name, help text and bucket: the contract this records into.
use super::*;
use crate::config::Config;
use crate::dial::identity::CertReadReason;
use crate::probe::ProbeOutcome;
use crate::reason::Phase;
use crate::watch::{TcpState, WatchSample};

/// One sidecar's metrics.
pub struct Metrics {
    /// Where values are recorded.
    recorder: PrometheusRecorder,
    /// Renders the text format and runs upkeep.
    handle: PrometheusHandle,
    /// The last interception verdict per target × route (anchor's key hash
    /// when intercepted), so a change is logged once.
    intercepted: Mutex<HashMap<(String, String), Option<String>>>,
    /// The last match count per watched name, so a change is logged once.
    matched: Mutex<HashMap<String, u64>>,
    /// The series of each target × route, kept as handles.
    pairs: Mutex<Pairs>,
    /// How long a kept handle is used before it is registered again (a
    /// quarter of the idle timeout: see `pairs`).
    refresh: Duration,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect()
}

/// Trail lines left out of the stdout copy, by the whole process: there is
/// one stdout, so one count, which every instance's `/metrics` shows.
static STDOUT_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Counts `n` more trail lines left out of the stdout copy
/// ([`COMPLIANCE_STDOUT_DROPPED`]); returns the total so far.
pub fn compliance_stdout_dropped(n: u64) -> u64 {
    STDOUT_DROPPED.fetch_add(n, Ordering::Relaxed) + n
}

/// Tasks alive in the tokio runtime the caller runs on (`None` outside
/// one): what `egress_runtime_alive_tasks` and `/status` show.
pub fn alive_tasks() -> Option<usize> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|h| h.metrics().num_alive_tasks())
}

impl Metrics {
    /// A new registry. Gauges and histograms not updated for `idle` vanish
    /// (a target removed by a reload stops being exported).
    pub fn new(idle: Duration) -> Self {
        let builder = PrometheusBuilder::new().idle_timeout(
            MetricKindMask::GAUGE | MetricKindMask::HISTOGRAM,
            Some(idle),
        );
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(PROBE_DURATION.into()), &LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(FORWARD_REQUEST_DURATION.into()),
                    &LATENCY_BUCKETS,
                )
            });
        let builder = match builder {
            Ok(b) => b,
            // Unreachable: the bucket list is a non-empty constant.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        for (name, help) in HELP {
            let key = KeyName::from_const_str(name);
            let help = SharedString::const_str(help);
            match *name {
                PROBE_FAILURES
                | FAILOVERS
                | FORWARD_CONNECTIONS
                | CERT_READ_ERRORS
                | CREDENTIAL_FAILURES
                | COMPLIANCE_STDOUT_DROPPED => recorder.describe_counter(key, None, help),
                FORWARD_BYTES => recorder.describe_counter(key, None, help),
                PROBE_DURATION | FORWARD_REQUEST_DURATION => {
                    recorder.describe_histogram(key, Some(metrics::Unit::Seconds), help)
                }
                _ => recorder.describe_gauge(key, None, help),
            }
        }
        let m = Self {
            recorder,
            handle,
            intercepted: Mutex::new(HashMap::new()),
            matched: Mutex::new(HashMap::new()),
            pairs: Mutex::new(Pairs::default()),
            refresh: idle / 4,
        };
        m.build_info();
        m
    }

    /// The Prometheus text format, the `process_*` metrics and the
    /// runtime's live tasks read now included.
    pub fn render(&self) -> String {
        if let Some(n) = alive_tasks() {
            self.gauge(RUNTIME_ALIVE_TASKS, &[], n as f64);
        }
        // From the start at 0, so rate() has a zero to start from.
        self.recorder
            .register_counter(&Key::from_static_name(COMPLIANCE_STDOUT_DROPPED), &META)
            .absolute(STDOUT_DROPPED.load(Ordering::Relaxed));
        let mut text = self.handle.render();
        text.push_str(&process::ProcessSample::current().render());
        text
    }

    /// Drains histogram buffers; call periodically.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub(super) fn gauge(&self, name: &'static str, l: &[(&'static str, &str)], value: f64) {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels(l)), &META)
            .set(value);
    }

    pub(super) fn counter(&self, name: &'static str, l: &[(&'static str, &str)], by: u64) {
        self.recorder
            .register_counter(&Key::from_parts(name, labels(l)), &META)
            .increment(by);
    }

    /// Runs `f` on the kept handles of `target` × `route`.
    fn with_pair(&self, target: &str, route: &str, f: impl FnOnce(&mut Pair, &Reg<'_>)) {
        let r = Reg {
            recorder: &self.recorder,
            target,
            route,
            now: Instant::now(),
            refresh: self.refresh,
        };
        let mut pairs = self
            .pairs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = pairs.pair(target, route) {
            f(p, &r);
        }
    }

    /// Records one probe's outcome.
    pub fn record_probe(&self, o: &ProbeOutcome, via_proxy: bool) {
        let finished = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.with_pair(&o.target, &o.route, |p, r| {
            p.success
                .set(r, PROBE_SUCCESS, None, if o.ok { 1.0 } else { 0.0 });
            p.duration
                .get(r, PROBE_DURATION, None)
                .record(o.duration.as_secs_f64());
            for phase in Phase::ALL {
                if phase == Phase::Tunnel && !via_proxy {
                    continue;
                }
                let v = o
                    .phases
                    .get(phase)
                    .map_or(PHASE_NOT_RUN, |d| d.as_secs_f64());
                if let Some(g) = p.phase(phase) {
                    g.set(r, PROBE_PHASE, Some(("phase", phase.as_str())), v);
                }
            }
            p.last.set(r, PROBE_LAST_TIMESTAMP, None, finished);
            if via_proxy {
                let status = f64::from(o.connect_status.unwrap_or(0));
                p.connect_status.set(r, PROXY_CONNECT_STATUS, None, status);
            }
            if let Some(c) = &o.peer_cert {
                let source = Some(("source", "peer"));
                let unix = c.not_after_unix as f64;
                p.peer_not_after.set(r, CERT_NOT_AFTER, source, unix);
            }
            if let Some(i) = o.intercepted {
                p.intercepted
                    .set(r, TLS_INTERCEPTED, None, if i { 1.0 } else { 0.0 });
            }
        });
        if !o.ok {
            self.counter(
                PROBE_FAILURES,
                &[
                    ("target", o.target.as_str()),
                    ("route", o.route.as_str()),
                    ("reason", o.reason.as_str()),
                ],
                1,
            );
        }
        if let Some(intercepted) = o.intercepted {
            self.log_interception(o, intercepted);
        }
    }

    /// One log line when a pair's interception verdict (or the intercepting
    /// anchor) changes.
    fn log_interception(&self, o: &ProbeOutcome, intercepted: bool) {
        let now = intercepted
            .then(|| o.anchor.as_ref().map(|a| a.spki_sha256.clone()))
            .flatten()
            .or_else(|| intercepted.then(String::new));
        let key = (o.target.clone(), o.route.clone());
        let before = {
            let mut seen = self
                .intercepted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = seen.get(&key).cloned();
            if before.as_ref() == Some(&now) {
                return;
            }
            seen.insert(key, now.clone());
            before
        };
        let anchor = o.anchor.as_ref().map_or("", |a| a.subject.as_str());
        let issuer = o.peer_cert.as_ref().map_or("", |c| c.issuer.as_str());
        let expected = o.expected_anchor.as_deref().unwrap_or("");
        if now.is_some() {
            tracing::warn!(target_name = %o.target, route = %o.route, anchor = %anchor, issuer = %issuer, expected = %expected, "TLS intercepted: the upstream's chain validated through an anchor the target does not expect");
        } else if matches!(before, Some(Some(_))) {
            tracing::info!(target_name = %o.target, route = %o.route, anchor = %anchor, "TLS no longer intercepted: the chain validates through an expected anchor again");
        }
    }

    /// Once per configuration (at start and after each applied reload):
    /// counts client certificates that could not be used and logs each one
    /// once, and publishes the certificate gauges.
    pub fn config_loaded(&self, config: &Config) {
        self.pairs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|target, route| {
                config
                    .targets
                    .iter()
                    .any(|t| t.name == target && t.routes.iter().any(|r| r.name == route))
            });
        for t in &config.targets {
            let Some(cert) = &t.client_cert else { continue };
            // Zero-initialised, so alert rules can use increase() from the start.
            for reason in CertReadReason::ALL {
                self.counter(
                    CERT_READ_ERRORS,
                    &[("target", t.name.as_str()), ("reason", reason.as_str())],
                    0,
                );
            }
            match &cert.loaded {
                Err(e) => {
                    self.counter(
                        CERT_READ_ERRORS,
                        &[("target", t.name.as_str()), ("reason", e.reason.as_str())],
                        1,
                    );
                    tracing::error!(target_name = %t.name, reason = %e.reason, error = %e, "client certificate cannot be used; probing without it");
                }
                Ok((leaf, format)) => {
                    tracing::info!(target_name = %t.name, subject = %leaf.subject, not_after = %leaf.not_after, format = ?format, "client certificate loaded");
                }
            }
        }
        self.publish_certs(config);
    }

    /// Re-sets the certificate gauges that no probe drives: client
    /// certificate expiry and the thresholds (they would go idle).
    pub fn publish_certs(&self, config: &Config) {
        for t in &config.targets {
            if let Some(leaf) = t.client_cert.as_ref().and_then(|c| c.leaf()) {
                self.client_cert_not_after(&t.name, leaf.not_after_unix);
            }
            let th = t.cert_thresholds;
            let name = t.name.as_str();
            self.gauge(
                CERT_THRESHOLD,
                &[("target", name), ("level", "warn")],
                th.warn_before.as_secs_f64(),
            );
            self.gauge(
                CERT_THRESHOLD,
                &[("target", name), ("level", "fail")],
                th.fail_before.as_secs_f64(),
            );
        }
    }

    /// Records one descriptor sample: per process, descriptors by kind, the
    /// limit, TCP sockets by state (when the sample has them), and how many
    /// processes matched a watched name (a name that matches nothing is
    /// logged once).
    pub fn record_watch(&self, sample: &WatchSample) {
        for p in &sample.processes {
            let name = p.process.as_str();
            if name != crate::watch::SELF_NAME {
                self.gauge(WATCH_MATCHED, &[("process", name)], p.matched as f64);
                self.log_matched(name, p.matched);
            }
            let Some(w) = &p.worst else { continue };
            for (kind, n) in &w.usage.by_kind {
                self.open_fds(name, kind, *n);
            }
            if let Some(max) = w.usage.max {
                self.max_fds(name, max);
            }
            let Some(tcp) = &w.tcp else { continue };
            for state in TcpState::ALL {
                let n = if state == TcpState::TimeWait {
                    tcp.time_wait_in_namespace
                } else {
                    tcp.by_state.get(&state).copied().unwrap_or(0)
                };
                self.gauge(
                    PROCESS_TCP_SOCKETS,
                    &[("process", name), ("state", state.label())],
                    n as f64,
                );
            }
        }
    }

    fn log_matched(&self, name: &str, matched: u64) {
        let before = self
            .matched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), matched);
        match (before, matched) {
            (None | Some(1..), 0) => {
                tracing::warn!(process = %name, "[watch] no process has this command name (check the name in /proc/<pid>/comm, and shareProcessNamespace in the pod)")
            }
            (Some(0), 1..) => {
                tracing::info!(process = %name, processes = matched, "[watch] the watched process is running")
            }
            _ => {}
        }
    }

    /// Sets the health and active gauges of one target × route.
    pub fn route_state(&self, target: &str, route: &str, healthy: bool, active: bool) {
        self.with_pair(target, route, |p, r| {
            p.healthy
                .set(r, ROUTE_HEALTHY, None, if healthy { 1.0 } else { 0.0 });
            p.active
                .set(r, ROUTE_ACTIVE, None, if active { 1.0 } else { 0.0 });
        });
    }

    /// Registers `egress_probe_failures_total` at 0 for every failure reason
    /// of one target × route (adding 0 to an existing series changes nothing).
    pub fn probe_failures_zero(&self, target: &str, route: &str) {
        for reason in crate::reason::FailureReason::ALL {
            if reason != crate::reason::FailureReason::Ok {
                self.counter(
                    PROBE_FAILURES,
                    &[
                        ("target", target),
                        ("route", route),
                        ("reason", reason.as_str()),
                    ],
                    0,
                );
            }
        }
    }

    /// Sets `egress_route_reason` of one target × route: 1 for `current`,
    /// 0 for every other reason (all 0 before the first observation).
    pub fn route_reason(
        &self,
        target: &str,
        route: &str,
        current: Option<crate::reason::FailureReason>,
    ) {
        self.with_pair(target, route, |p, r| {
            for reason in crate::reason::FailureReason::ALL {
                let v = if Some(reason) == current { 1.0 } else { 0.0 };
                if let Some(g) = p.reason(reason) {
                    g.set(r, ROUTE_REASON, Some(("reason", reason.as_str())), v);
                }
            }
        });
    }

    /// Sets whether the route is degraded.
    pub fn route_degraded(&self, target: &str, route: &str, degraded: bool) {
        self.with_pair(target, route, |p, r| {
            p.degraded
                .set(r, ROUTE_DEGRADED, None, if degraded { 1.0 } else { 0.0 });
        });
    }

    /// Sets whether an address of a proxy's name works.
    pub fn proxy_address_up(&self, route: &str, address: &str, up: bool) {
        let labels = [("route", route), ("address", address)];
        self.gauge(PROXY_ADDRESS_UP, &labels, if up { 1.0 } else { 0.0 });
    }

    /// Counts a change of a target's active route.
    pub fn failover(&self, target: &str, from: &str, to: &str) {
        self.counter(
            FAILOVERS,
            &[("target", target), ("from", from), ("to", to)],
            1,
        );
    }

    /// The configured client certificate's expiry.
    pub fn client_cert_not_after(&self, target: &str, unix: i64) {
        self.gauge(
            CERT_NOT_AFTER,
            &[("target", target), ("route", ""), ("source", "client")],
            unix as f64,
        );
    }

    /// Result of the last config load or reload, and whether a setting it
    /// changed waits for a restart.
    pub fn config_reload(&self, ok: bool, restart_required: bool) {
        self.gauge(CONFIG_RELOAD_SUCCESS, &[], if ok { 1.0 } else { 0.0 });
        let restart = if restart_required { 1.0 } else { 0.0 };
        self.gauge(CONFIG_RESTART_REQUIRED, &[], restart);
    }

    /// `egress_build_info{version}`.
    pub fn build_info(&self) {
        self.gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    }

    /// Whether an operator's override confines `target` to `route` now.
    pub fn route_override(&self, target: &str, route: &str, on: bool) {
        self.with_pair(target, route, |p, r| {
            p.overridden
                .set(r, ROUTE_OVERRIDE, None, if on { 1.0 } else { 0.0 });
        });
    }

    /// Open descriptors of `process` by kind.
    pub fn open_fds(&self, process: &str, kind: &str, n: u64) {
        self.gauge(
            PROCESS_OPEN_FDS,
            &[("process", process), ("kind", kind)],
            n as f64,
        );
    }

    /// The descriptor limit of `process`.
    pub fn max_fds(&self, process: &str, n: u64) {
        self.gauge(PROCESS_MAX_FDS, &[("process", process)], n as f64);
    }

    /// Counts one app connection through the forward proxy.
    pub fn forward_connection(&self, target: &str, route: &str, result: &str) {
        self.counter(
            FORWARD_CONNECTIONS,
            &[("target", target), ("route", route), ("result", result)],
            1,
        );
    }

    /// Observes how long an app connection waited for its tunnel on `route`.
    pub fn forward_request_duration(&self, target: &str, route: &str, took: Duration) {
        self.recorder
            .register_histogram(
                &Key::from_parts(
                    FORWARD_REQUEST_DURATION,
                    labels(&[("target", target), ("route", route)]),
                ),
                &META,
            )
            .record(took.as_secs_f64());
    }

    /// A byte meter for one app tunnel of `target` on `route`, adding to
    /// `egress_forward_bytes_total` as bytes move.
    pub fn forward_meter(&self, target: &str, route: &str) -> meter::ByteMeter {
        let counter = |direction: &str| {
            self.recorder.register_counter(
                &Key::from_parts(
                    FORWARD_BYTES,
                    labels(&[
                        ("target", target),
                        ("route", route),
                        ("direction", direction),
                    ]),
                ),
                &META,
            )
        };
        meter::ByteMeter::new(counter("up"), counter("down"))
    }

    /// Sets the number of open app tunnels on `route`.
    pub fn forward_active(&self, route: &str, n: u64) {
        self.gauge(FORWARD_ACTIVE, &[("route", route)], n as f64);
    }
}
