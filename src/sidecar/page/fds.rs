//! The file descriptors section, a live one: the watched processes' usage
//! as `/status` shows it.
//!
//! Takes its own sample; never records metrics from it (upkeep and scrapes
//! do that) nor acts on what it finds.

use std::fmt::Write as _;

use super::text::esc;
use crate::config::Config;

/// Descriptors of this process and the watched ones (the same sample
/// `/status` and `verify --fds` read): by kind against the limit, TCP
/// sockets by state, the remote endpoints with the most sockets.
pub(super) fn section(h: &mut String, config: &Config) {
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
