//! The credentials table of the live section: per target that carries a
//! credential, its kind, the last check's result and the provider's code,
//! the route it went over, when it ran, and a certificate credential's
//! expiry. Never a secret: the board holds none.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::text::{days_left, esc, time_el, when};
use crate::credential::state::{Board, CredentialState};

/// The table, or nothing when no target carries a credential.
pub(super) fn table(h: &mut String, board: &Board, wall: SystemTime) {
    if board.is_empty() {
        return;
    }
    h.push_str(
        "<table class=\"credentials\"><caption>Credentials: the app's own, proven through the route its traffic uses (a rejection never moves a route)</caption>\
<thead><tr><th scope=\"col\">Target</th><th scope=\"col\">Kind</th><th scope=\"col\">Result</th>\
<th scope=\"col\">Code</th><th scope=\"col\">Route</th><th scope=\"col\">Last check</th>\
<th scope=\"col\">Certificate</th><th scope=\"col\">Detail</th></tr></thead><tbody>\n",
    );
    for (target, s) in board {
        row(h, target, s, wall);
    }
    h.push_str("</tbody></table>\n");
}

fn row(h: &mut String, target: &str, s: &CredentialState, wall: SystemTime) {
    let last = s.last_check.map_or_else(
        || "never".to_string(),
        |t| time_el(t as i64, &when(t as i64)),
    );
    let cert = s
        .not_after
        .map_or_else(|| "-".to_string(), |end| days_left(end, wall));
    let _ = writeln!(
        h,
        "<tr data-credential=\"{}\" data-result=\"{}\"><th scope=\"row\">{}</th>\
<td data-label=\"Kind\">{}</td><td data-label=\"Result\"><strong>{}</strong>{}</td>\
<td data-label=\"Code\">{}</td><td data-label=\"Route\">{}</td><td data-label=\"Last check\">{last}</td>\
<td data-label=\"Certificate\">{cert}</td><td data-label=\"Detail\">{}</td></tr>",
        esc(target),
        esc(s.state),
        esc(target),
        esc(s.kind),
        esc(s.state),
        if s.rejected_in_a_row > 1 {
            format!(" ({} in a row)", s.rejected_in_a_row)
        } else {
            String::new()
        },
        esc(s.code.as_deref().unwrap_or("-")),
        esc(s.route.as_deref().unwrap_or("-")),
        esc(&s.detail),
    );
}
