//! Metrics: every Prometheus name in one place, this file (the names in
//! DESIGN.md are a contract), their help texts and buckets, and
//! [`Metrics`], the one recorder a sidecar instance writes to and
//! `/metrics` renders. No other file spells an `egress_*` name (the
//! standard `process_*` ones are [`process`]'s).
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
//! - this file: the names, help texts and buckets (the contract).
//! - `recorder`: [`Metrics`], the per-instance recorder; `credentials`: its
//!   credential-check series; `pairs`: the handles it keeps per target ×
//!   route, so a probe's gauge sets build no keys.
//! - [`process`]: the standard `process_*` metrics from `/proc/self`.
//! - [`meter`]: byte counting on app tunnels.
//! - [`logs`]: the log line formats (text and JSON) and their redaction.

mod credentials;
pub mod logs;
pub mod meter;
mod pairs;
pub mod process;
mod recorder;

pub use recorder::{Metrics, alive_tasks, compliance_stdout_dropped};

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
/// `egress_config_restart_required`: 1 while a setting the last reload
/// changed waits for a restart (`config::RestartKey`).
pub const CONFIG_RESTART_REQUIRED: &str = "egress_config_restart_required";
/// `egress_build_info{version}`: always 1.
pub const BUILD_INFO: &str = "egress_build_info";
/// `egress_route_override{target,route}`: 1 while an operator's override
/// confines the target to this route.
pub const ROUTE_OVERRIDE: &str = "egress_route_override";
/// `egress_runtime_alive_tasks`: tokio's count of live tasks in the
/// sidecar's runtime, read at scrape time (a task leak shows here).
pub const RUNTIME_ALIVE_TASKS: &str = "egress_runtime_alive_tasks";

/// `egress_credential_success{target,route}`: 0/1 of the last credential
/// check over that route.
pub const CREDENTIAL_SUCCESS: &str = "egress_credential_success";
/// `egress_credential_last_check_timestamp_seconds{target,route}`: when the
/// last credential check that ran finished (skipped ones do not count).
pub const CREDENTIAL_LAST_CHECK: &str = "egress_credential_last_check_timestamp_seconds";
/// `egress_credential_failures_total{target,route,reason}`.
pub const CREDENTIAL_FAILURES: &str = "egress_credential_failures_total";
/// `egress_credential_not_after_timestamp_seconds{target}`: the end of a
/// credential that has a known one (a certificate credential).
pub const CREDENTIAL_NOT_AFTER: &str = "egress_credential_not_after_timestamp_seconds";
/// `egress_credential_rejected_in_a_row{target}`: checks the provider
/// refused in a row (what `EgressCredentialRejected` pages on).
pub const CREDENTIAL_REJECTED_IN_A_ROW: &str = "egress_credential_rejected_in_a_row";
/// `egress_credential_check_interval_seconds{target}`: the configured
/// `every` (what `EgressCredentialCheckStale` compares with).
pub const CREDENTIAL_INTERVAL: &str = "egress_credential_check_interval_seconds";
/// `egress_credential_skipped{target}`: 1 while checks are skipped because
/// the target has no working route.
pub const CREDENTIAL_SKIPPED: &str = "egress_credential_skipped";

/// `egress_compliance_stdout_dropped_total`: trail lines left out of the
/// stdout copy (`[compliance] sink = "both"`) because stdout was too slow;
/// the file still has them.
pub const COMPLIANCE_STDOUT_DROPPED: &str = "egress_compliance_stdout_dropped_total";

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
    (
        CONFIG_RESTART_REQUIRED,
        "1 while the running process keeps a setting the last reload changed but only a restart applies (/status config_reload.restart_required names them).",
    ),
    (BUILD_INFO, "Build information; always 1."),
    (
        ROUTE_OVERRIDE,
        "1 while an operator's override (POST /routes/<target>, with a ttl) confines the target's traffic to this route.",
    ),
    (
        CREDENTIAL_SUCCESS,
        "1 if the last check of the app's own credential over this route proved it, else 0.",
    ),
    (
        CREDENTIAL_LAST_CHECK,
        "When the last credential check over this route finished (Unix seconds); skipped checks do not count.",
    ),
    (
        CREDENTIAL_FAILURES,
        "Failed credential checks by failure reason (credential_rejected: the provider refused the credential).",
    ),
    (
        CREDENTIAL_NOT_AFTER,
        "End of validity of the target's credential, where known (an Entra certificate credential), Unix seconds.",
    ),
    (
        CREDENTIAL_REJECTED_IN_A_ROW,
        "Credential checks in a row the provider refused (0 once one proves it).",
    ),
    (
        CREDENTIAL_INTERVAL,
        "The configured interval of the target's credential checks, in seconds.",
    ),
    (
        CREDENTIAL_SKIPPED,
        "1 while the target's credential checks are skipped because it has no working route.",
    ),
    (
        COMPLIANCE_STDOUT_DROPPED,
        "Compliance trail lines left out of the stdout copy ([compliance] sink = \"both\") because stdout did not keep up; the trail file has every line.",
    ),
    (
        RUNTIME_ALIVE_TASKS,
        "Tasks alive in the sidecar's tokio runtime now (probes, tunnels, listeners): flat when nothing leaks.",
    ),
];

/// The metadata every series is registered with (the module path stays
/// this module's, where the names are).
static META: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
