//! `GET /status`: the sidecar's state as JSON — per target, each route's
//! health, streaks, hold and last outcome, the active route, the
//! operator's override and when it ends, and the incident windows (with
//! their one-line rendering).

use serde_json::{Value, json};
use tokio::time::Instant;

use super::runtime::Runtime;

/// Renders the status document.
pub fn render(rt: &Runtime) -> String {
    let config = rt.config();
    let health = rt.table();
    let now = Instant::now();
    let targets: Vec<Value> = config
        .targets
        .iter()
        .filter_map(|t| {
            let h = health.targets.get(&t.name)?;
            let routes: Vec<Value> = h
                .routes
                .iter()
                .map(|r| {
                    json!({
                        "route": r.route,
                        "healthy": r.healthy,
                        "eligible": r.eligible(now),
                        "consecutive_successes": r.consecutive_ok,
                        "consecutive_failures": r.consecutive_fail,
                        "held_for_seconds": r.held_until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
                        "flaps": r.flaps,
                        "degraded": r.degraded_any(),
                        "addresses_down": r.addresses_down,
                        "recent_failures": r.recent_failures(),
                        "recent_attempts": r.recent.len(),
                        "last": r.last,
                        "last_probe": r.last_probe,
                    })
                })
                .collect();
            Some(json!({
                "target": t.name,
                "url": t.endpoint.url(),
                "preferred_route": h.routes.first().map(|r| r.route.as_str()),
                "active_route": h.active_route(),
                "down": h.down,
                "force": h.force,
                "force_expires_in_seconds": h.force_until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
                "routes": routes,
            }))
        })
        .collect();
    let incidents: Vec<Value> = rt.with_incidents(|log| {
        log.windows()
            .map(|w| {
                let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("text".into(), Value::String(w.render()));
                }
                v
            })
            .collect()
    });
    let doc = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config_file": config.file.display().to_string(),
        "config_reload": rt.reload_status(),
        "targets": targets,
        "incidents": incidents,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
