//! The incident windows section: when each target lost its preferred
//! route, for how long, what it impacted and why, newest first.
//!
//! Reads windows the runtime copied out for this page; never opens or
//! closes one.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::text::{esc, span, time_el, when};
use crate::incidents::IncidentWindow;

/// Incident windows shown, newest first.
const MAX_INCIDENTS: usize = 20;

/// The newest [`MAX_INCIDENTS`] windows, or a line saying there are none.
pub(super) fn section(h: &mut String, windows: &[IncidentWindow], wall: SystemTime) {
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
