//! The routes grid, the page's main section: one row group per target
//! (the route its traffic uses, failover, the operator's override, the
//! client certificate) and one row per route (state in words, reason,
//! detail with the proxy's CONNECT reply, phase timings, certificate days
//! left and trust anchor, last probe), with the one-sentence summary above
//! it.
//!
//! Renders a copy of the route table taken once for the whole page: never
//! locks the runtime, reads the clock or changes a route's state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::text::{days_left, esc, span, time_el, unix, when};
use crate::config::{Config, Target};
use crate::dial::fmt_duration;
use crate::health::{Override, RouteHealth, RouteState, TargetHealth};
use crate::reason::Phase;

/// The state of one route, in words: the word tests and readers match
/// (`failing`, `held down`, `degraded`, `healthy`, `not yet probed`), and
/// a longer explanation.
fn route_state(r: &RouteHealth, now: Instant) -> (&'static str, String) {
    let state = r.state(now);
    let why = match state {
        RouteState::NotYetProbed => "no verdict yet".into(),
        RouteState::Failing => {
            let since = r
                .last_down
                .map(|d| format!(", down for {}", span(now.saturating_duration_since(d))))
                .unwrap_or_default();
            format!("{} failures in a row{since}", r.consecutive_fail())
        }
        RouteState::HeldDown => {
            let left = r
                .held_until
                .map(|h| span(h.saturating_duration_since(now)))
                .unwrap_or_default();
            format!(
                "healthy again, held {left} more before traffic returns (flapped {} times)",
                r.flaps
            )
        }
        RouteState::Degraded => degraded_why(r),
        RouteState::Healthy if r.consecutive_fail() > 0 => format!(
            "healthy, but the last {} checks failed",
            r.consecutive_fail()
        ),
        RouteState::Healthy => format!("{} successes in a row", r.consecutive_ok()),
    };
    (state.as_str(), why)
}

/// Why a route is degraded: its worst level's window, its failing proxy
/// addresses.
fn degraded_why(r: &RouteHealth) -> String {
    let mut why = Vec::new();
    if r.degraded() {
        let (level, failures, attempts) = r.worst_window();
        why.push(format!(
            "{failures} of the last {attempts} attempts failed at the {level} level"
        ));
    }
    if !r.addresses_down.is_empty() {
        let down: Vec<String> = r.addresses_down.iter().map(|c| c.describe_down()).collect();
        why.push(format!("proxy addresses failing: {}", down.join(", ")));
    }
    why.join("; ")
}

fn symbol(state: &str) -> &'static str {
    match state {
        "healthy" => "✔",
        "failing" => "✖",
        "held down" | "degraded" => "⚠",
        _ => "…",
    }
}

/// One sentence: how many targets are on their preferred route.
pub(super) fn summary(
    config: &Config,
    targets: &BTreeMap<String, Arc<TargetHealth>>,
    now: Instant,
) -> String {
    let mut moved = Vec::new();
    let mut down = Vec::new();
    for t in &config.targets {
        let Some(th) = targets.get(&t.name) else {
            continue;
        };
        if th.down {
            down.push(t.name.as_str());
        } else if th.active != 0 {
            moved.push(format!(
                "{} ({} → {})",
                t.name,
                th.routes.first().map_or("", |r| r.route.as_str()),
                th.active_route()
            ));
        }
    }
    let failing = targets
        .values()
        .flat_map(|t| t.routes.iter())
        .filter(|r| r.healthy() == Some(false) || !r.eligible(now))
        .count();
    let mut s = format!(
        "{} targets; {} on their preferred route",
        config.targets.len(),
        config.targets.len() - moved.len() - down.len()
    );
    if !moved.is_empty() {
        let _ = write!(s, "; failed over: {}", moved.join(", "));
    }
    if !down.is_empty() {
        let _ = write!(s, "; every route down: {}", down.join(", "));
    }
    let _ = write!(s, "; {failing} routes failing or held.");
    s
}

/// The grid: one row group per target, in the config's order.
pub(super) fn table(
    h: &mut String,
    config: &Config,
    targets: &BTreeMap<String, Arc<TargetHealth>>,
    now: Instant,
    wall: SystemTime,
) {
    h.push_str(
        "<table class=\"grid\"><caption>Every target over every route it may use, in preference order</caption>\
<thead><tr><th scope=\"col\">Route</th><th scope=\"col\">State</th><th scope=\"col\">Reason</th>\
<th scope=\"col\">Detail</th><th scope=\"col\">Phases</th><th scope=\"col\">Certificate</th>\
<th scope=\"col\">Last probe</th></tr></thead>\n",
    );
    for t in &config.targets {
        let Some(th) = targets.get(&t.name) else {
            continue;
        };
        target_rows(h, t, th, now, wall);
    }
    h.push_str("</table>\n");
}

fn target_rows(h: &mut String, t: &Target, th: &TargetHealth, now: Instant, wall: SystemTime) {
    let mut about = vec![format!(
        "traffic uses <strong>{}</strong>",
        esc(th.active_route())
    )];
    if th.down {
        about.push("<strong>every route is down</strong>".into());
    } else if th.active != 0 {
        about.push(format!(
            "failed over from {}",
            esc(th.routes.first().map_or("", |r| r.route.as_str()))
        ));
    }
    if th.route_override != Override::Auto {
        let ends = th.override_until.map_or_else(
            || "until changed".to_string(),
            |u| {
                let left = u.saturating_duration_since(now);
                format!(
                    "ends in {} (at {})",
                    span(left),
                    time_el(unix(wall + left), &when(unix(wall + left)))
                )
            },
        );
        about.push(format!(
            "<span class=\"override\">operator override: {} only, {ends}</span>",
            th.route_override.as_str()
        ));
    }
    if let Some(na) = t.client_cert_not_after {
        about.push(format!("client certificate {}", days_left(na, wall)));
    }
    let _ = writeln!(
        h,
        "<tbody data-target=\"{}\"><tr class=\"target\"><th colspan=\"7\" scope=\"rowgroup\">\
<span class=\"name\">{}</span> <code>{}</code> — {}</th></tr>",
        esc(&t.name),
        esc(&t.name),
        esc(&t.endpoint.url()),
        about.join(" · ")
    );
    for (i, r) in th.routes.iter().enumerate() {
        let (state, why) = route_state(r, now);
        let active = i == th.active;
        let excluded = !th.route_override.allows(r.direct);
        let mut words = format!(
            "<span class=\"badge {}\"><span aria-hidden=\"true\">{}</span> {}</span>",
            state.replace(' ', "-"),
            symbol(state),
            esc(state)
        );
        if active {
            words.push_str(" <span class=\"badge active\">active</span>");
        }
        if excluded {
            words.push_str(" <span class=\"badge excluded\">off by override</span>");
        }
        let _ = write!(
            h,
            "<tr data-route=\"{}\" data-state=\"{}\" data-active=\"{active}\">\
<th scope=\"row\" data-label=\"Route\">{}</th><td data-label=\"State\">{words}<div class=\"why\">{}</div></td>",
            esc(&r.route),
            esc(state),
            esc(&r.route),
            esc(&why)
        );
        route_cells(h, r, wall);
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n");
}

/// Reason, detail, phases, certificate and last probe of one route.
fn route_cells(h: &mut String, r: &RouteHealth, wall: SystemTime) {
    let probe = r.last_probe.as_ref();
    reason_cells(h, r);
    h.push_str("</td><td data-label=\"Phases\">");
    match probe {
        Some(p) => phases_cell(h, p),
        None => h.push('—'),
    }
    h.push_str("</td><td data-label=\"Certificate\">");
    certificate_cell(h, probe, wall);
    h.push_str("</td><td data-label=\"Last probe\">");
    match probe {
        Some(p) => {
            let at = unix(p.started);
            let ago = wall.duration_since(p.started).unwrap_or_default();
            let _ = write!(
                h,
                "{} ago<div class=\"why\">{}</div>",
                span(ago),
                time_el(at, &when(at))
            );
        }
        None => h.push_str("not yet"),
    }
    h.push_str("</td>");
}

/// The reason and the detail (the proxy's CONNECT reply with it); leaves
/// the detail cell open.
fn reason_cells(h: &mut String, r: &RouteHealth) {
    let probe = r.last_probe.as_ref();
    let (reason, detail, source) = match (&r.last, probe) {
        (Some(seen), _) => (
            seen.reason.as_str(),
            seen.detail.as_str(),
            match seen.source {
                crate::health::Source::Probe => "",
                crate::health::Source::Traffic => " (seen on app traffic)",
            },
        ),
        (None, Some(p)) => (p.reason.as_str(), p.detail.as_str(), ""),
        (None, None) => ("—", "", ""),
    };
    let _ = write!(
        h,
        "<td data-label=\"Reason\"><code class=\"reason\">{}</code></td><td data-label=\"Detail\"><span class=\"detail\">{}</span>{}",
        esc(reason),
        esc(detail),
        esc(source)
    );
    if let Some(reply) = probe.and_then(|p| p.proxy_reply.as_ref()) {
        h.push_str("<dl class=\"proxy\">");
        let mut item = |k: &str, v: &str| {
            let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
        };
        item("CONNECT", &reply.status_line);
        for (k, v) in [
            ("Via", &reply.via),
            ("Proxy-Status", &reply.proxy_status),
            ("Server", &reply.server),
            ("X-Squid-Error", &reply.squid_error),
        ] {
            if let Some(v) = v {
                item(k, v);
            }
        }
        h.push_str("</dl>");
    }
}

/// Each phase's time, the failed one marked, and the total.
fn phases_cell(h: &mut String, p: &crate::probe::ProbeOutcome) {
    let mut parts = Vec::new();
    for phase in Phase::ALL {
        if let Some(d) = p.phases.get(phase) {
            let failed = p.failed_phase == Some(phase);
            parts.push(format!(
                "<li{}>{} {}{}</li>",
                if failed { " class=\"failed\"" } else { "" },
                esc(phase.as_str()),
                esc(&fmt_duration(d)),
                if failed {
                    " <strong>(failed)</strong>"
                } else {
                    ""
                }
            ));
        }
    }
    let _ = write!(
        h,
        "<ul class=\"phases\">{}</ul>total {}",
        parts.join(""),
        esc(&fmt_duration(p.duration))
    );
}

/// The upstream certificate's days left and issuer, and the trust anchor
/// (interception is judged by the anchor, not the issuer).
fn certificate_cell(h: &mut String, probe: Option<&crate::probe::ProbeOutcome>, wall: SystemTime) {
    match probe.and_then(|p| p.peer_cert.as_ref()) {
        Some(c) => {
            let _ = write!(
                h,
                "{}<div class=\"why\">issuer {}</div>",
                days_left(c.not_after_unix, wall),
                esc(&c.issuer)
            );
        }
        None => h.push('—'),
    }
    let Some(p) = probe else {
        return;
    };
    match (p.intercepted, &p.anchor) {
        (Some(true), Some(a)) => {
            let _ = write!(
                h,
                "<div class=\"intercepted\"><strong>intercepted</strong>: the chain ends at {}, expected {}</div>",
                esc(&a.subject),
                esc(p.expected_anchor.as_deref().unwrap_or("another anchor"))
            );
        }
        (_, Some(a)) => {
            let _ = write!(h, "<div class=\"why\">anchor {}</div>", esc(&a.subject));
        }
        _ => {}
    }
}
