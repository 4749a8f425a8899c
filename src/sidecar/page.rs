//! `GET /` on the admin listener: the status page an on-call engineer opens
//! in a browser. Server-rendered HTML from the same state `/status` reads:
//! a grid of targets × routes (state in words, reason, detail with the
//! proxy's CONNECT reply, phase timings, certificate days left, last probe),
//! the incident windows, descriptor usage per watched process, a "Verify
//! now" button (`POST /verify`) and the operator's overrides
//! (`POST /routes/<target>`, with a `ttl`).
//!
//! Self-contained: one inline style sheet and one inline script, allowed by
//! their hashes in the Content-Security-Policy, which also limits every
//! fetch to the page's own origin: the page loads nothing from anywhere
//! else and works offline. Without JavaScript it still shows everything;
//! the script refreshes the live sections and drives the buttons. An admin
//! token, when the listener needs one, is pasted once and kept in the
//! tab's `sessionStorage`, sent only as an `Authorization` header, never in
//! a URL. Every value that came from outside (proxy headers, details,
//! names) is HTML-escaped.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::runtime::Runtime;
use crate::config::{Config, Target};
use crate::dial::fmt_duration;
use crate::dial::tls::rfc3339;
use crate::health::{Force, RouteHealth, TargetHealth};
use crate::incidents::IncidentWindow;
use crate::reason::Phase;

/// Incident windows shown, newest first.
const MAX_INCIDENTS: usize = 20;

/// The response headers of the page: its content type, a CSP that allows
/// only the inline style and script by hash and fetches to its own origin,
/// and no framing (the buttons change state: no clickjacking).
pub fn headers() -> [(&'static str, &'static str); 6] {
    [
        ("content-type", "text/html; charset=utf-8"),
        ("content-security-policy", CSP.as_str()),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ]
}

static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_source(SCRIPT),
        sha256_source(STYLE)
    )
});

/// A CSP hash source: `sha256-<base64 of the digest>`.
fn sha256_source(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("sha256-{}", crate::config::base64(d.as_ref()))
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `2026-11-23 11:47:05Z`.
fn when(unix: i64) -> String {
    rfc3339(unix).replacen('T', " ", 1)
}

/// `45 s`, `13 min`, `2 h 5 min`, `3 d 4 h`.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A `<time>` element for `unix`, with the text `text`.
fn time_el(unix: i64, text: &str) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        esc(&rfc3339(unix)),
        esc(text)
    )
}

/// The state of one route, in words: the word tests and readers match
/// (`failing`, `held down`, `degraded`, `healthy`, `not yet probed`), and
/// a longer explanation.
fn route_state(r: &RouteHealth, now: Instant) -> (&'static str, String) {
    match r.healthy {
        None => ("not yet probed", "no verdict yet".into()),
        Some(false) => {
            let since = r
                .last_down
                .map(|d| format!(", down for {}", span(now.saturating_duration_since(d))))
                .unwrap_or_default();
            (
                "failing",
                format!("{} failures in a row{since}", r.consecutive_fail),
            )
        }
        Some(true) if !r.eligible(now) => {
            let left = r
                .held_until
                .map(|h| span(h.saturating_duration_since(now)))
                .unwrap_or_default();
            (
                "held down",
                format!(
                    "healthy again, held {left} more before traffic returns (flapped {} times)",
                    r.flaps
                ),
            )
        }
        Some(true) if r.degraded_any() => {
            let mut why = Vec::new();
            if r.degraded {
                why.push(format!(
                    "{} of the last {} attempts failed",
                    r.recent_failures(),
                    r.recent.len()
                ));
            }
            if !r.addresses_down.is_empty() {
                why.push(format!(
                    "proxy addresses failing: {}",
                    r.addresses_down.join(", ")
                ));
            }
            ("degraded", why.join("; "))
        }
        Some(true) if r.consecutive_fail > 0 => (
            "healthy",
            format!("healthy, but the last {} checks failed", r.consecutive_fail),
        ),
        Some(true) => (
            "healthy",
            format!("{} successes in a row", r.consecutive_ok),
        ),
    }
}

fn symbol(state: &str) -> &'static str {
    match state {
        "healthy" => "✔",
        "failing" => "✖",
        "held down" | "degraded" => "⚠",
        _ => "…",
    }
}

/// Renders the whole page.
pub fn render(rt: &Runtime) -> String {
    let config = rt.config();
    let table = rt.table();
    let now = Instant::now();
    let wall = SystemTime::now();
    let windows: Vec<IncidentWindow> = rt.with_incidents(|log| log.windows().cloned().collect());
    let reload = rt.reload_status();

    let mut h = String::with_capacity(32 * 1024);
    let _ = writeln!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<link rel=\"icon\" href=\"data:,\">\
<title>egress-sentinel · status</title><style>{STYLE}</style></head>\n<body>\n\
<header><h1>egress-sentinel <small>{}</small></h1>\
<p>Configuration <code>{}</code>, generation {}{}. <span id=\"updated\" aria-live=\"polite\"></span></p></header>\n<main>",
        esc(env!("CARGO_PKG_VERSION")),
        esc(&config.file.display().to_string()),
        reload.generation,
        if reload.ok {
            String::new()
        } else {
            format!(
                " — <strong>the last reload was rejected</strong>: {}",
                esc(reload.error.as_deref().unwrap_or(""))
            )
        },
    );

    // The live sections: replaced whole by the script's refresh.
    let _ = write!(
        h,
        "<section id=\"live\" aria-labelledby=\"routes-h\"><h2 id=\"routes-h\">Routes</h2>\
<p class=\"meta\">As of {}. {}</p>",
        time_el(unix(wall), &when(unix(wall))),
        esc(&summary(&config, &table.targets, now)),
    );
    routes_table(&mut h, &config, &table.targets, now, wall);
    h.push_str("</section>\n");
    incidents_section(&mut h, &windows, wall);
    fds_section(&mut h, &config);

    // The controls: outside the live sections, so a refresh never resets them.
    verify_section(&mut h);
    overrides_section(&mut h, &config);
    if config.admin.token.is_some() {
        h.push_str(
            "<section id=\"token\" aria-labelledby=\"token-h\"><h2 id=\"token-h\">Admin token</h2>\
<p>This listener needs its admin token (<code>[admin] token_file</code>) for the buttons above. \
It is kept in this tab only and sent as an <code>Authorization</code> header.</p>\
<p><label for=\"token-in\">Token</label> <input id=\"token-in\" type=\"password\" autocomplete=\"off\" spellcheck=\"false\"> \
<button type=\"button\" id=\"token-save\">Use this token</button> \
<button type=\"button\" id=\"token-clear\">Forget it</button> <span id=\"token-state\" aria-live=\"polite\"></span></p></section>\n",
        );
    }
    let _ = write!(h, "</main>\n<script>{SCRIPT}</script>\n</body></html>\n");
    h
}

/// One sentence: how many targets are on their preferred route.
fn summary(
    config: &Config,
    targets: &std::collections::BTreeMap<String, TargetHealth>,
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
        .filter(|r| r.healthy == Some(false) || !r.eligible(now))
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

fn routes_table(
    h: &mut String,
    config: &Config,
    targets: &std::collections::BTreeMap<String, TargetHealth>,
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
    if th.force != Force::Auto {
        let ends = th.force_until.map_or_else(
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
            force_word(th.force)
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
        let excluded = match th.force {
            Force::Auto => false,
            Force::Proxy => r.direct,
            Force::Direct => !r.direct,
        };
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
    h.push_str("</td><td data-label=\"Phases\">");
    if let Some(p) = probe {
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
    } else {
        h.push('—');
    }
    h.push_str("</td><td data-label=\"Certificate\">");
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
    // Interception is judged by the trust anchor, not the issuer.
    if let Some(p) = probe {
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

/// `89 days left (2026-02-01 00:00:00Z)`, or `EXPIRED 3 days ago (...)`.
fn days_left(not_after: i64, wall: SystemTime) -> String {
    let left = not_after - unix(wall);
    let date = time_el(not_after, &when(not_after));
    if left < 0 {
        format!(
            "<strong>EXPIRED {} days ago</strong> ({date})",
            (-left) / 86_400
        )
    } else {
        format!("{} days left ({date})", left / 86_400)
    }
}

fn force_word(f: Force) -> &'static str {
    match f {
        Force::Auto => "auto",
        Force::Proxy => "proxy",
        Force::Direct => "direct",
    }
}

fn incidents_section(h: &mut String, windows: &[IncidentWindow], wall: SystemTime) {
    h.push_str(
        "<section id=\"incidents\" aria-labelledby=\"incidents-h\"><h2 id=\"incidents-h\">Incidents</h2>",
    );
    if windows.is_empty() {
        h.push_str("<p>No incident window recorded.</p></section>\n");
        return;
    }
    h.push_str(
        "<table class=\"incidents\"><caption>A window opens when a target loses its preferred route and closes when that route is healthy again; newest first</caption>\
<thead><tr><th scope=\"col\">Incident window</th><th scope=\"col\">Duration</th>\
<th scope=\"col\">Impacts</th><th scope=\"col\">Cause</th></tr></thead><tbody>\n",
    );
    for w in windows.iter().rev().take(MAX_INCIDENTS) {
        let end = match w.end {
            Some(e) => time_el(e, &when(e)),
            None => "<strong>open</strong>".into(),
        };
        let _ = writeln!(
            h,
            "<tr data-incident=\"{}\" data-open=\"{}\"><td data-label=\"Incident window\">{} → {end}</td>\
<td data-label=\"Duration\">{}</td><td data-label=\"Impacts\">{}</td>\
<td data-label=\"Cause\"><code>{}</code> on route {}: {}</td></tr>",
            w.id,
            w.end.is_none(),
            time_el(w.start, &when(w.start)),
            esc(&span(w.duration(wall))),
            esc(&w.impact.join(", ")),
            esc(w.reason.as_str()),
            esc(&w.route),
            esc(&w.detail)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

/// Descriptors of this process and the watched ones (the same sample
/// `/status` and `verify --fds` read): by kind against the limit, TCP
/// sockets by state, the remote endpoints with the most sockets.
fn fds_section(h: &mut String, config: &Config) {
    h.push_str(
        "<section id=\"fds\" aria-labelledby=\"fds-h\"><h2 id=\"fds-h\">File descriptors</h2>\
<table class=\"fds\"><thead><tr><th scope=\"col\">Process</th><th scope=\"col\">Open / limit</th>\
<th scope=\"col\">By kind</th><th scope=\"col\">TCP sockets</th><th scope=\"col\">Most sockets to</th></tr></thead><tbody>\n",
    );
    for p in crate::watch::sample(&config.watch_processes).processes {
        let Some(w) = &p.worst else {
            let why = if p.matched == 0 {
                "no process with this name".to_string()
            } else {
                format!("{} found, none readable (another user?)", p.matched)
            };
            let _ = writeln!(
                h,
                "<tr><th scope=\"row\" data-label=\"Process\">{}</th><td colspan=\"4\">{}</td></tr>",
                esc(&p.process),
                esc(&why)
            );
            continue;
        };
        let total = w.usage.total();
        let open = match w.usage.max {
            Some(m) if m > 0 => format!(
                "{total} / {m} ({:.0}% used)",
                total as f64 * 100.0 / m as f64
            ),
            _ => format!("{total} / unknown"),
        };
        let kinds: Vec<String> = w
            .usage
            .by_kind
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let (states, remotes) = match &w.tcp {
            Some(t) => {
                let mut states: Vec<String> = t
                    .by_state
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(s, n)| format!("{} {n}", s.name()))
                    .collect();
                if t.time_wait_in_namespace > 0 {
                    states.push(format!(
                        "TIME_WAIT {} (namespace)",
                        t.time_wait_in_namespace
                    ));
                }
                let remotes: Vec<String> = t
                    .top_remotes
                    .iter()
                    .take(3)
                    .map(|r| format!("{} ({})", r.endpoint, r.sockets))
                    .collect();
                (states.join(", "), remotes.join(", "))
            }
            None => (String::new(), String::new()),
        };
        let name = match (p.matched, w.pid) {
            (n, Some(pid)) if n > 1 => format!("{} (pid {pid}, the most loaded of {n})", p.process),
            (_, Some(pid)) => format!("{} (pid {pid})", p.process),
            _ => p.process.clone(),
        };
        let _ = writeln!(
            h,
            "<tr><th scope=\"row\" data-label=\"Process\">{}</th><td data-label=\"Open / limit\">{}</td>\
<td data-label=\"By kind\">{}</td><td data-label=\"TCP sockets\">{}</td><td data-label=\"Most sockets to\">{}</td></tr>",
            esc(&name),
            esc(&open),
            esc(&kinds.join(", ")),
            esc(&states),
            esc(&remotes)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn verify_section(h: &mut String) {
    h.push_str(
        "<section id=\"verify\" aria-labelledby=\"verify-h\"><h2 id=\"verify-h\">Verify now</h2>\
<p>Checks every target over every route it may use, now, with the dialer the app's traffic uses (<code>POST /verify</code>).</p>\
<p><button type=\"button\" id=\"verify-now\">Verify now</button></p>\
<div id=\"verify-out\" aria-live=\"polite\"></div></section>\n",
    );
}

fn overrides_section(h: &mut String, config: &Config) {
    h.push_str(
        "<section id=\"overrides\" aria-labelledby=\"overrides-h\"><h2 id=\"overrides-h\">Operator overrides</h2>\
<p>Confine a target's traffic to its proxy routes or to <code>direct</code> (where it lists <code>direct</code>) for a while; \
<code>auto</code> lets health decide again. An override ends by itself after its time to live (at most 24 h).</p>\n",
    );
    for t in &config.targets {
        let id = format!("ov-{}", t.name);
        let mut options = String::from("<option value=\"auto\">auto</option>");
        if t.routes.iter().any(|r| !r.is_direct()) {
            options.push_str("<option value=\"proxy\">proxy</option>");
        }
        if t.allows_direct() {
            options.push_str("<option value=\"direct\">direct</option>");
        }
        let _ = writeln!(
            h,
            "<p class=\"override-form\"><span class=\"name\">{name}</span> \
<label for=\"{id}-force\">route</label> <select id=\"{id}-force\">{options}</select> \
<label for=\"{id}-ttl\">for</label> <input id=\"{id}-ttl\" value=\"1h\" size=\"5\" inputmode=\"text\"> \
<button type=\"button\" data-override=\"{name}\" data-force=\"{id}-force\" data-ttl=\"{id}-ttl\">Apply</button> \
<span class=\"result\" id=\"{id}-result\" aria-live=\"polite\"></span></p>",
            name = esc(&t.name),
            id = esc(&id),
        );
    }
    h.push_str("</section>\n");
}

/// The page's one style sheet (allowed by its hash).
const STYLE: &str = r#"
:root{color-scheme:light dark;--ok:#0a7d32;--bad:#b3261e;--warn:#8a5a00;--mute:#666;--line:#ccc}
@media (prefers-color-scheme:dark){:root{--ok:#5fd38a;--bad:#ff8a80;--warn:#ffcc66;--mute:#aaa;--line:#555}}
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:0 1rem 2rem;max-width:90rem}
h1{font-size:1.4rem;margin:1rem 0 .2rem}h1 small{font-weight:normal;color:var(--mute)}
h2{font-size:1.15rem;margin:1.5rem 0 .4rem}
code{font-size:.9em}
table{border-collapse:collapse;width:100%}
caption{text-align:left;color:var(--mute);padding:.2rem 0}
th,td{border-bottom:1px solid var(--line);padding:.35rem .5rem;text-align:left;vertical-align:top}
tr.target th{background:rgba(127,127,127,.12);font-weight:normal}
tr.target .name,.override-form .name{font-weight:700}
.badge{display:inline-block;border:1px solid currentColor;border-radius:.3rem;padding:0 .35rem;font-weight:600;white-space:nowrap}
.badge.healthy{color:var(--ok)}.badge.failing{color:var(--bad)}
.badge.held-down,.badge.degraded{color:var(--warn)}.badge.active{color:inherit}
.badge.excluded{color:var(--mute);font-weight:normal}
.why,.meta{color:var(--mute);font-size:.85em}
.override{color:var(--warn);font-weight:600}
dl.proxy{display:grid;grid-template-columns:auto 1fr;gap:0 .5rem;margin:.3rem 0 0;font-size:.85em}
dl.proxy dt{font-weight:600}dl.proxy dd{margin:0;word-break:break-word}
ul.phases{list-style:none;margin:0;padding:0;font-size:.85em}
ul.phases li{white-space:nowrap}
ul.phases li.failed{color:var(--bad)}
.error,.refused,.intercepted{color:var(--bad);font-weight:600}
.pass{color:var(--ok);font-weight:600}.fail{color:var(--bad);font-weight:600}
button{font:inherit;padding:.3rem .8rem}
input,select{font:inherit}
@media (max-width:700px){
 table thead{position:absolute;left:-9999px}
 table,caption,tbody,tr,th,td{display:block;width:auto}
 tr{border-bottom:1px solid var(--line);padding:.3rem 0}
 th,td{border:0;padding:.15rem 0}
 td[data-label]::before,th[data-label]::before{content:attr(data-label) ": ";font-weight:600}
 th,td,code{overflow-wrap:anywhere}
 ul.phases li{display:inline;margin-right:.6rem}
}
"#;

/// The page's one script (allowed by its hash): refreshes the live
/// sections every 5 s, runs "Verify now", applies overrides, keeps the
/// admin token in this tab.
const SCRIPT: &str = r#"
(function () {
  'use strict';
  var KEY = 'egress-sentinel-admin-token';
  function token() { try { return sessionStorage.getItem(KEY) || ''; } catch (e) { return ''; } }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function post(path, body) {
    var headers = { 'Content-Type': 'application/json' };
    var t = token();
    if (t) headers['Authorization'] = 'Bearer ' + t;
    return fetch(path, { method: 'POST', headers: headers, body: JSON.stringify(body || {}),
                         credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { return r.text().then(function (text) {
        return { status: r.status, text: text, result: r.headers.get('X-Verify-Result') }; }); });
  }
  function refresh() {
    if (document.hidden) return Promise.resolve();
    return fetch('/', { cache: 'no-store' }).then(function (r) { return r.text(); }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, 'text/html');
      ['live', 'incidents', 'fds'].forEach(function (id) {
        var fresh = doc.getElementById(id), old = document.getElementById(id);
        if (fresh && old) old.replaceWith(document.adoptNode(fresh));
      });
      document.getElementById('updated').textContent = 'Refreshed ' + new Date().toLocaleTimeString() + '.';
    }).catch(function () {
      document.getElementById('updated').textContent = 'Refresh failed; retrying.';
    });
  }
  function report(checks, result) {
    var failed = checks.filter(function (c) { return !c.ok; }).length;
    var table = el('table', null, 'report');
    table.id = 'verify-report';
    table.appendChild(el('caption', 'Verify report, ' + new Date().toLocaleTimeString() + ': ' + checks.length +
      ' checks, ' + (checks.length - failed) + ' passed, ' + failed + ' failed (' + (result || '?') + ')'));
    var head = table.createTHead().insertRow();
    ['Target', 'Route', 'Result', 'Reason', 'Detail', 'Total'].forEach(function (h) {
      var th = el('th', h); th.scope = 'col'; head.appendChild(th); });
    var body = table.createTBody();
    checks.forEach(function (c) {
      var row = body.insertRow();
      row.dataset.target = c.target; row.dataset.route = c.route; row.dataset.ok = String(c.ok);
      var detail = c.detail || '';
      [[c.target, 'Target'], [c.route, 'Route'], [c.ok ? 'PASS' : 'FAIL', 'Result'], [c.reason, 'Reason'],
       [detail, 'Detail'], [(c.duration_seconds * 1000).toFixed(1) + ' ms', 'Total']].forEach(function (v, i) {
        var td = el('td', v[0], i === 2 ? (c.ok ? 'pass' : 'fail') : null);
        td.dataset.label = v[1]; row.appendChild(td); });
    });
    return table;
  }
  var button = document.getElementById('verify-now'), out = document.getElementById('verify-out');
  button.addEventListener('click', function () {
    button.disabled = true;
    out.replaceChildren(el('p', 'Running every check now…'));
    post('/verify').then(function (r) {
      if (r.status !== 200) {
        out.replaceChildren(el('p', 'Refused (' + r.status + '): ' + r.text.trim(), 'refused'));
        return;
      }
      out.replaceChildren(report(JSON.parse(r.text), r.result));
    }).catch(function (e) {
      out.replaceChildren(el('p', 'Verify failed: ' + e, 'error'));
    }).then(function () { button.disabled = false; return refresh(); });
  });
  document.querySelectorAll('button[data-override]').forEach(function (b) {
    b.addEventListener('click', function () {
      var target = b.dataset.override;
      var force = document.getElementById(b.dataset.force).value;
      var ttl = document.getElementById(b.dataset.ttl).value.trim();
      var msg = document.getElementById('ov-' + target + '-result');
      b.disabled = true;
      post('/routes/' + encodeURIComponent(target), ttl ? { force: force, ttl: ttl } : { force: force })
        .then(function (r) {
          if (r.status !== 200) { msg.className = 'result refused'; msg.textContent = 'Refused (' + r.status + '): ' + r.text.trim(); return; }
          var d = JSON.parse(r.text);
          msg.className = 'result';
          msg.textContent = 'Now ' + d.force + ', traffic on ' + d.active_route + (d.expires_at ? ', until ' + d.expires_at : '') + '.';
        }).catch(function (e) { msg.className = 'result error'; msg.textContent = 'Failed: ' + e; })
        .then(function () { b.disabled = false; return refresh(); });
    });
  });
  var input = document.getElementById('token-in');
  if (input) {
    var state = document.getElementById('token-state');
    var show = function () { state.textContent = token() ? 'A token is set for this tab.' : 'No token set.'; };
    document.getElementById('token-save').addEventListener('click', function () {
      try { sessionStorage.setItem(KEY, input.value.trim()); } catch (e) {}
      input.value = ''; show();
    });
    document.getElementById('token-clear').addEventListener('click', function () {
      try { sessionStorage.removeItem(KEY); } catch (e) {}
      show();
    });
    show();
  }
  setInterval(refresh, 5000);
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_from_a_hostile_proxy_header() {
        let hostile = "<script>alert('x')</script> & \"quoted\"\u{7}";
        let e = esc(hostile);
        assert!(!e.contains('<') && !e.contains('>') && !e.contains('"') && !e.contains('\''));
        assert!(e.contains("&lt;script&gt;") && e.contains("&amp;") && e.contains('\u{fffd}'));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let csp = headers()
            .iter()
            .find(|(k, _)| *k == "content-security-policy")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        assert!(csp.contains(&format!("script-src '{}'", sha256_source(SCRIPT))));
        assert!(csp.contains(&format!("style-src '{}'", sha256_source(STYLE))));
        assert!(csp.contains("connect-src 'self'") && csp.starts_with("default-src 'none'"));
        // Nothing in the page's own code names another host or loads a file.
        for code in [SCRIPT, STYLE] {
            for bad in ["http:", "https:", "url(", "@import", "src="] {
                assert!(!code.contains(bad), "{bad}");
            }
        }
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(Duration::from_secs(42)), "42 s");
        assert_eq!(span(Duration::from_secs(13 * 60 + 5)), "13 min");
        assert_eq!(span(Duration::from_secs(3600 + 5 * 60)), "1 h 5 min");
        assert_eq!(span(Duration::from_secs(86_400 * 3 + 3600 * 4)), "3 d 4 h");
    }
}
