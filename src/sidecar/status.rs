//! `GET /status`: the sidecar's state as JSON — per target, each route's
//! health, streaks, hold and last outcome (with the trust anchor and the
//! interception verdict), the active route, the client certificate and the
//! certificate findings (the same words as `verify`); the credential's
//! check state; the file descriptors
//! of this process and the watched ones, with TCP states and the top remote
//! endpoints; the operator's override and when it ends; and the incident
//! windows (with their one-line rendering); the runtime's live tasks.

use serde_json::{Value, json};
use tokio::time::Instant;

use super::runtime::Runtime;
use crate::config::Target;
use crate::credential::state::CredentialState;
use crate::health::{Level, RouteHealth, TargetHealth};
use crate::verify::findings;

/// The client certificate as `/status` shows it.
fn client_cert(t: &Target, now: i64) -> Value {
    let Some(c) = &t.client_cert else {
        return Value::Null;
    };
    let files: Vec<String> = c
        .files
        .paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    match &c.loaded {
        Ok((leaf, format)) => json!({
            "files": files,
            "format": format,
            "subject": leaf.subject,
            "issuer": leaf.issuer,
            "not_after": leaf.not_after,
            "not_after_unix": leaf.not_after_unix,
            "seconds_left": leaf.not_after_unix - now,
            "level": t.cert_thresholds.level(leaf.not_after_unix, now),
        }),
        Err(e) => json!({
            "files": files,
            "error": e,
            "level": "fail",
        }),
    }
}

/// The target's credential as `/status` shows it (never a secret): the
/// board's state, and the certificate credential's expiry level.
fn credential_json(s: Option<&CredentialState>, t: &Target, now: i64) -> Value {
    let Some(s) = s else { return Value::Null };
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let (Value::Object(m), Some(end)) = (&mut v, s.not_after) {
        m.insert("seconds_left".into(), json!(end - now));
        m.insert("level".into(), json!(t.cert_thresholds.level(end, now)));
    }
    v
}

/// Each evidence level of a route: its verdict, streaks and window.
fn levels(r: &RouteHealth) -> Value {
    let levels: serde_json::Map<String, Value> = Level::ALL
        .into_iter()
        .map(|l| {
            let h = r.level(l);
            let v = json!({
                "healthy": h.healthy,
                "consecutive_successes": h.consecutive_ok,
                "consecutive_failures": h.consecutive_fail,
                "degraded": h.degraded,
                "recent_failures": h.recent_failures(),
                "recent_attempts": h.recent.len(),
            });
            (l.as_str().to_string(), v)
        })
        .collect();
    Value::Object(levels)
}

/// One route of a target: its state, streaks, hold, levels and last outcome.
fn route_json(r: &RouteHealth, now: Instant) -> Value {
    let window = r.worst_window();
    json!({
        "route": r.route,
        "state": r.state(now),
        "healthy": r.healthy(),
        "eligible": r.eligible(now),
        "consecutive_successes": r.consecutive_ok(),
        "consecutive_failures": r.consecutive_fail(),
        "held_for_seconds": r.held_until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
        "flaps": r.flaps,
        "degraded": r.degraded_any(),
        "addresses_down": r.addresses_down.iter().map(|c| c.describe_down()).collect::<Vec<_>>(),
        "recent_failures": window.1,
        "recent_attempts": window.2,
        "levels": levels(r),
        "intercepted": r.last_probe.as_ref().and_then(|o| o.intercepted),
        "anchor": r.last_probe.as_ref().and_then(|o| o.anchor.as_ref()),
        "last": r.last,
        "last_probe": r.last_probe,
    })
}

/// One target: where its traffic goes, its certificates and findings, its
/// routes.
fn target_json(
    t: &Target,
    h: &TargetHealth,
    credential: Option<&CredentialState>,
    now: Instant,
    wall: i64,
) -> Value {
    let mut found: Vec<findings::Finding> = findings::client_cert(t, wall).into_iter().collect();
    for o in h.routes.iter().filter_map(|r| r.last_probe.as_ref()) {
        found.extend(findings::route_findings(t, o, wall));
    }
    let routes: Vec<Value> = h.routes.iter().map(|r| route_json(r, now)).collect();
    json!({
        "target": t.name,
        "url": t.endpoint.url(),
        "preferred_route": h.routes.first().map(|r| r.route.as_str()),
        "active_route": h.active_route(),
        "down": h.down,
        "force": h.route_override,
        "force_expires_in_seconds": h.override_until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
        "client_cert": client_cert(t, wall),
        "cert_thresholds": {
            "warn_before_seconds": t.cert_thresholds.warn_before.as_secs(),
            "fail_before_seconds": t.cert_thresholds.fail_before.as_secs(),
        },
        "findings": found,
        "credential": credential_json(credential, t, wall),
        "routes": routes,
    })
}

/// Renders the status document.
pub fn render(rt: &Runtime) -> String {
    let config = rt.config();
    let snapshot = rt.snapshot();
    let now = Instant::now();
    let wall = crate::verify::now_unix();
    let targets: Vec<Value> = config
        .targets
        .iter()
        .filter_map(|t| {
            let health = snapshot.target(&t.name)?;
            let credential = snapshot.credentials.get(&t.name);
            Some(target_json(t, health, credential, now, wall))
        })
        .collect();
    let incidents: Vec<Value> = snapshot
        .incidents
        .iter()
        .map(|w| {
            let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("text".into(), Value::String(w.render()));
            }
            v
        })
        .collect();
    let doc = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config_file": config.file.display().to_string(),
        "config_reload": rt.reload_status(),
        "targets": targets,
        "fds": crate::watch::sample(&config.watch_processes),
        "runtime": { "alive_tasks": crate::telemetry::alive_tasks() },
        "incidents": incidents,
        "route_state": {
            "generation": snapshot.generation,
            "snapshot_age_seconds": now.saturating_duration_since(snapshot.taken).as_secs_f64(),
            "observations_merged": rt.merged_observations(),
        },
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
