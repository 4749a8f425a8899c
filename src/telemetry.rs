//! Metrics: every Prometheus name in one place (the names in DESIGN.md are a
//! contract), their help texts and buckets, and [`Metrics`], the one
//! recorder a sidecar instance writes to and `/metrics` renders.
//!
//! Each instance owns its own recorder (no global), so tests can run many
//! sidecars in one process. Label values come only from the config (target
//! and route names), the closed reason and phase sets, and fixed words.
//!
//! Series a query needs from the start exist from the start:
//! `egress_probe_failures_total` at 0 for every configured target × route ×
//! failure reason, and `egress_route_reason` with every reason (1 for the
//! current one, 0 for the rest), so `rate()` has a zero to start from and a
//! reason that is no longer current never stays at 1 beside the new one.
//!
//! # Layout
//! - this file: the names, help texts, buckets and [`Metrics`].
//! - [`process`]: the standard `process_*` metrics from `/proc/self`.
//! - [`meter`]: byte counting on app tunnels.
//! - [`logs`]: the log line formats (text and JSON) and their redaction.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use metrics_util::MetricKindMask;
pub mod logs;
pub mod meter;
pub mod process;

use crate::config::Config;
use crate::dial::identity::CertReadReason;
use crate::probe::ProbeOutcome;
use crate::reason::Phase;
use crate::watch::{TcpState, WatchSample};

/// `egress_probe_success{target,route}`: 0/1 of the last probe.
pub const PROBE_SUCCESS: &str = "egress_probe_success";
/// `egress_probe_duration_seconds{target,route}`: histogram of whole probes.
pub const PROBE_DURATION: &str = "egress_probe_duration_seconds";
/// `egress_probe_phase_seconds{target,route,phase}`: the last probe's phases;
/// [`PHASE_NOT_RUN`] for a phase the last probe did not reach.
pub const PROBE_PHASE: &str = "egress_probe_phase_seconds";
/// The value of a phase gauge whose phase the last probe did not run (it
/// failed earlier): never NaN, never the value of an earlier probe. Queries
/// keep real durations with `egress_probe_phase_seconds >= 0`.
pub const PHASE_NOT_RUN: f64 = -1.0;
/// `egress_probe_last_timestamp_seconds{target,route}`: when the last probe finished.
pub const PROBE_LAST_TIMESTAMP: &str = "egress_probe_last_timestamp_seconds";
/// `egress_probe_failures_total{target,route,reason}`.
pub const PROBE_FAILURES: &str = "egress_probe_failures_total";
/// `egress_proxy_connect_status{target,route}`: last CONNECT status (0: none).
pub const PROXY_CONNECT_STATUS: &str = "egress_proxy_connect_status";
/// `egress_route_healthy{target,route}`: 0/1 after hysteresis.
pub const ROUTE_HEALTHY: &str = "egress_route_healthy";
/// `egress_route_active{target,route}`: 1 for the route traffic uses now.
pub const ROUTE_ACTIVE: &str = "egress_route_active";
/// `egress_route_reason{target,route,reason}`: 1 for the route's current
/// reason (`ok` included), 0 for every other.
pub const ROUTE_REASON: &str = "egress_route_reason";
/// `egress_route_degraded{target,route}`: 1 while N of the last M attempts failed.
pub const ROUTE_DEGRADED: &str = "egress_route_degraded";
/// `egress_proxy_address_up{route,address}`: 1 when that address of the
/// proxy's name passed the last probe's check.
pub const PROXY_ADDRESS_UP: &str = "egress_proxy_address_up";
/// `egress_failovers_total{target,from,to}`.
pub const FAILOVERS: &str = "egress_failovers_total";
/// `egress_cert_not_after_timestamp_seconds{target,route,source}`, source ∈
/// client, peer; `route` is empty for client certificates.
pub const CERT_NOT_AFTER: &str = "egress_cert_not_after_timestamp_seconds";
/// `egress_cert_read_errors_total{target,reason}`: client certificate files
/// that could not be used, each time they were read.
pub const CERT_READ_ERRORS: &str = "egress_cert_read_errors_total";
/// `egress_tls_intercepted{target,route}`: 1 when the last verified chain
/// ended in an anchor the target does not expect.
pub const TLS_INTERCEPTED: &str = "egress_tls_intercepted";
/// `egress_cert_threshold_seconds{target,level}`, level ∈ warn, fail: the
/// configured `warn_before`/`fail_before`, for alert rules to compare with.
pub const CERT_THRESHOLD: &str = "egress_cert_threshold_seconds";
/// `egress_forward_connections_total{target,route,result}`.
pub const FORWARD_CONNECTIONS: &str = "egress_forward_connections_total";
/// `egress_forward_active_connections{route}`.
pub const FORWARD_ACTIVE: &str = "egress_forward_active_connections";
/// `egress_forward_request_duration_seconds{target,route}`: histogram, from
/// the app's request read to the upstream tunnel standing (the `200` the
/// app gets), failed attempts on earlier routes included.
pub const FORWARD_REQUEST_DURATION: &str = "egress_forward_request_duration_seconds";
/// `egress_forward_bytes_total{target,route,direction}`, direction ∈ up
/// (app → upstream), down (upstream → app).
pub const FORWARD_BYTES: &str = "egress_forward_bytes_total";
/// `egress_process_open_fds{process,kind}`.
pub const PROCESS_OPEN_FDS: &str = "egress_process_open_fds";
/// `egress_process_max_fds{process}`.
pub const PROCESS_MAX_FDS: &str = "egress_process_max_fds";
/// `egress_process_tcp_sockets{process,state}`.
pub const PROCESS_TCP_SOCKETS: &str = "egress_process_tcp_sockets";
/// `egress_watch_processes_matched{process}`: processes with the watched name.
pub const WATCH_MATCHED: &str = "egress_watch_processes_matched";
/// `egress_config_last_reload_success`: 0/1.
pub const CONFIG_RELOAD_SUCCESS: &str = "egress_config_last_reload_success";
/// `egress_build_info{version}`: always 1.
pub const BUILD_INFO: &str = "egress_build_info";
/// `egress_route_override{target,route}`: 1 while an operator's override
/// confines the target to this route.
pub const ROUTE_OVERRIDE: &str = "egress_route_override";

/// Latency buckets from 1 ms to 30 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const HELP: &[(&str, &str)] = &[
    (
        PROBE_SUCCESS,
        "1 if the last probe of this target over this route passed, else 0.",
    ),
    (
        PROBE_DURATION,
        "Duration of whole probes, from resolve to the end of the body.",
    ),
    (
        PROBE_PHASE,
        "Duration of each phase of the last probe; -1 for a phase it did not run (it failed earlier).",
    ),
    (
        PROBE_LAST_TIMESTAMP,
        "When the last probe of this target over this route finished (Unix seconds).",
    ),
    (
        PROBE_FAILURES,
        "Failed probes by failure reason (every reason present from the start).",
    ),
    (
        PROXY_CONNECT_STATUS,
        "Status code the proxy gave the last probe's CONNECT (0 when none came).",
    ),
    (
        ROUTE_HEALTHY,
        "1 if the route is healthy for the target after fall/rise hysteresis.",
    ),
    (
        ROUTE_ACTIVE,
        "1 for the route the target's traffic uses now.",
    ),
    (
        ROUTE_REASON,
        "1 for the reason of the last observation that counted for the route (ok when it passed), 0 for every other reason.",
    ),
    (
        ROUTE_DEGRADED,
        "1 while too many of the route's latest attempts failed ([probe] degraded_failures of degraded_window): a partial failure.",
    ),
    (
        PROXY_ADDRESS_UP,
        "1 when this address of the proxy's name tunnelled in the last probe's check (names with several addresses; the first 8).",
    ),
    (FAILOVERS, "Changes of a target's active route."),
    (
        CERT_NOT_AFTER,
        "Expiry of a certificate: the configured client certificate (route empty), or the upstream's as seen on a route.",
    ),
    (
        CERT_READ_ERRORS,
        "Client certificate files that could not be used, by reason, counted each time they are read.",
    ),
    (
        TLS_INTERCEPTED,
        "1 if the upstream's chain on this route validated through a trust anchor the target does not expect (interception), else 0.",
    ),
    (
        CERT_THRESHOLD,
        "The configured certificate expiry thresholds (warn_before, fail_before), in seconds.",
    ),
    (
        FORWARD_CONNECTIONS,
        "App connections through the forward proxy by route and result.",
    ),
    (FORWARD_ACTIVE, "App tunnels open now, by route."),
    (
        FORWARD_REQUEST_DURATION,
        "Time from the app's CONNECT to the upstream tunnel standing (the 200 it gets), failed routes included.",
    ),
    (
        FORWARD_BYTES,
        "Bytes relayed for the app: up (app to upstream) and down (upstream to app).",
    ),
    (
        PROCESS_OPEN_FDS,
        "Open file descriptors by kind (socket, pipe, file, anon, other).",
    ),
    (PROCESS_MAX_FDS, "The soft limit on open file descriptors."),
    (
        PROCESS_TCP_SOCKETS,
        "TCP sockets of the process by state (time_wait: of its network namespace, as they belong to no process).",
    ),
    (
        WATCH_MATCHED,
        "Processes whose command name matches the watched name (0: the name matches nothing).",
    ),
    (
        CONFIG_RELOAD_SUCCESS,
        "1 if the last configuration load or reload succeeded.",
    ),
    (BUILD_INFO, "Build information; always 1."),
    (
        ROUTE_OVERRIDE,
        "1 while an operator's override (POST /routes/<target>, with a ttl) confines the target's traffic to this route.",
    ),
];

static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

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
                PROBE_FAILURES | FAILOVERS | FORWARD_CONNECTIONS | CERT_READ_ERRORS => {
                    recorder.describe_counter(key, None, help)
                }
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
        };
        m.build_info();
        m
    }

    /// The Prometheus text format, the `process_*` metrics read now included.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        text.push_str(&process::ProcessSample::current().render());
        text
    }

    /// Drains histogram buffers; call periodically.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    fn gauge(&self, name: &'static str, l: &[(&'static str, &str)], value: f64) {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels(l)), &META)
            .set(value);
    }

    fn counter(&self, name: &'static str, l: &[(&'static str, &str)], by: u64) {
        self.recorder
            .register_counter(&Key::from_parts(name, labels(l)), &META)
            .increment(by);
    }

    /// Records one probe's outcome.
    pub fn record_probe(&self, o: &ProbeOutcome, via_proxy: bool) {
        let tr = [("target", o.target.as_str()), ("route", o.route.as_str())];
        self.gauge(PROBE_SUCCESS, &tr, if o.ok { 1.0 } else { 0.0 });
        self.recorder
            .register_histogram(&Key::from_parts(PROBE_DURATION, labels(&tr)), &META)
            .record(o.duration.as_secs_f64());
        for phase in Phase::ALL {
            if phase == Phase::Tunnel && !via_proxy {
                continue;
            }
            let v = o
                .phases
                .get(phase)
                .map_or(PHASE_NOT_RUN, |d| d.as_secs_f64());
            self.gauge(PROBE_PHASE, &[tr[0], tr[1], ("phase", phase.as_str())], v);
        }
        let finished = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.gauge(PROBE_LAST_TIMESTAMP, &tr, finished);
        if !o.ok {
            self.counter(
                PROBE_FAILURES,
                &[tr[0], tr[1], ("reason", o.reason.as_str())],
                1,
            );
        }
        if via_proxy {
            self.gauge(
                PROXY_CONNECT_STATUS,
                &tr,
                f64::from(o.connect_status.unwrap_or(0)),
            );
        }
        if let Some(c) = &o.peer_cert {
            self.gauge(
                CERT_NOT_AFTER,
                &[tr[0], tr[1], ("source", "peer")],
                c.not_after_unix as f64,
            );
        }
        if let Some(intercepted) = o.intercepted {
            self.gauge(TLS_INTERCEPTED, &tr, if intercepted { 1.0 } else { 0.0 });
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
        let tr = [("target", target), ("route", route)];
        self.gauge(ROUTE_HEALTHY, &tr, if healthy { 1.0 } else { 0.0 });
        self.gauge(ROUTE_ACTIVE, &tr, if active { 1.0 } else { 0.0 });
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
        for reason in crate::reason::FailureReason::ALL {
            let v = if Some(reason) == current { 1.0 } else { 0.0 };
            self.gauge(
                ROUTE_REASON,
                &[
                    ("target", target),
                    ("route", route),
                    ("reason", reason.as_str()),
                ],
                v,
            );
        }
    }

    /// Sets whether the route is degraded.
    pub fn route_degraded(&self, target: &str, route: &str, degraded: bool) {
        let tr = [("target", target), ("route", route)];
        self.gauge(ROUTE_DEGRADED, &tr, if degraded { 1.0 } else { 0.0 });
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

    /// Result of the last config load or reload.
    pub fn config_reload(&self, ok: bool) {
        self.gauge(CONFIG_RELOAD_SUCCESS, &[], if ok { 1.0 } else { 0.0 });
    }

    /// `egress_build_info{version}`.
    pub fn build_info(&self) {
        self.gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    }

    /// Whether an operator's override confines `target` to `route` now.
    pub fn route_override(&self, target: &str, route: &str, on: bool) {
        self.gauge(
            ROUTE_OVERRIDE,
            &[("target", target), ("route", route)],
            if on { 1.0 } else { 0.0 },
        );
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
