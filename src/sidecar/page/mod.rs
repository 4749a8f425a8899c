//! `GET /` on the admin listener: the status page an on-call engineer opens
//! in a browser. Server-rendered HTML from the same state `/status` reads:
//! a grid of targets × routes (state in words, reason, detail with the
//! proxy's CONNECT reply, phase timings, certificate days left, last probe),
//! each credential's last check, the last hour per target × route, the incident windows, descriptor usage per watched process, a "Verify
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
//!
//! # Layout
//! - this file: the response headers with the Content-Security-Policy, and
//!   [`render`], the page's skeleton and the order of its sections;
//! - `text`: escaping, and times as people read them;
//! - `routes`: the grid of targets × routes and its summary line;
//! - `credentials`: the credentials table (part of the live section);
//! - `history`: the last hour per target × route, a strip of cells and
//!   the probe time in inline SVG, incident windows on the same axis;
//! - `incidents`, `fds`: the other live sections;
//! - `controls`: "Verify now", the overrides, the admin token field;
//! - `style.css`, `script.js`: the page's one style sheet and one script,
//!   compiled in with `include_str!`.
//!
//! Reads state, never changes it: every state change is a `POST` the
//! script sends, checked by [`super::admin`] and made by [`super::http`].

mod controls;
mod credentials;
mod fds;
mod history;
mod incidents;
mod routes;
mod text;

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::SystemTime;

use super::runtime::Runtime;
use crate::incidents::IncidentWindow;

pub use text::esc;
use text::{time_el, unix, when};

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

/// Renders the whole page.
pub fn render(rt: &Runtime) -> String {
    let config = rt.config();
    let snapshot = rt.snapshot();
    let table = &snapshot.table;
    let now = snapshot.taken;
    let wall = SystemTime::now();
    let windows: &[IncidentWindow] = &snapshot.incidents;
    let reload = rt.reload_status();

    let mut h = String::with_capacity(32 * 1024);
    let _ = writeln!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<link rel=\"icon\" href=\"data:,\">\
<title>egress-sentinel · status</title><style>{STYLE}</style></head>\n<body>\n\
<header><h1>egress-sentinel <small>{}</small></h1>\
<p>Configuration <code>{}</code>, generation {}{}{}. <span id=\"updated\" aria-live=\"polite\"></span></p></header>\n<main>",
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
        restart_note(&reload.restart_required),
    );

    // The live sections: replaced whole by the script's refresh.
    let _ = write!(
        h,
        "<section id=\"live\" aria-labelledby=\"routes-h\"><h2 id=\"routes-h\">Routes</h2>\
<p class=\"meta\">As of {}. {}</p>",
        time_el(unix(wall), &when(unix(wall))),
        esc(&routes::summary(&config, &table.targets, now)),
    );
    routes::table(&mut h, &config, &table.targets, now, wall);
    credentials::table(&mut h, &snapshot.credentials, wall);
    h.push_str("</section>\n");
    history::section(&mut h, &config, &snapshot.history, windows, wall);
    incidents::section(&mut h, windows, wall);
    fds::section(&mut h, &config);

    // The controls: outside the live sections, so a refresh never resets them.
    controls::verify_section(&mut h);
    controls::overrides_section(&mut h, &config);
    if config.admin.token.is_some() {
        controls::token_section(&mut h);
    }
    let _ = write!(h, "</main>\n<script>{SCRIPT}</script>\n</body></html>\n");
    h
}

/// The page's one style sheet (allowed by its hash). The leading newline
/// keeps the served bytes as they were when the sheet was inline.
const STYLE: &str = concat!("\n", include_str!("style.css"));

/// The page's one script (allowed by its hash): refreshes the live
/// sections every 5 s, runs "Verify now", applies overrides, keeps the
/// admin token in this tab. The leading newline as for [`STYLE`].
const SCRIPT: &str = concat!("\n", include_str!("script.js"));

/// The header's note on settings that wait for a restart (empty when none).
fn restart_note(keys: &[crate::config::RestartKey]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    let names: Vec<String> = keys
        .iter()
        .map(|k| format!("<code>{}</code>", esc(k.as_str())))
        .collect();
    format!(
        " — <strong>restart required</strong>: the last reload changed {}, which keep their running values until the process restarts",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
