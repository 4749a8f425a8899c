//! The controls: "Verify now" (`POST /verify`), the operator's overrides
//! (`POST /routes/<target>` with a `ttl`) and, when the listener needs one,
//! the admin token field. They sit outside the live sections, so a refresh
//! never resets what the operator is typing.
//!
//! Markup only: the page's script sends the requests, and the admin checks
//! in front of them ([`crate::sidecar::admin`]) decide. Never renders the
//! token or anything derived from it.

use std::fmt::Write as _;

use super::text::esc;
use crate::config::Config;

/// "Verify now" and the place its report appears.
pub(super) fn verify_section(h: &mut String) {
    h.push_str(
        "<section id=\"verify\" aria-labelledby=\"verify-h\"><h2 id=\"verify-h\">Verify now</h2>\
<p>Checks every target over every route it may use, now, with the dialer the app's traffic uses (<code>POST /verify</code>).</p>\
<p><button type=\"button\" id=\"verify-now\">Verify now</button></p>\
<div id=\"verify-out\" aria-live=\"polite\"></div></section>\n",
    );
}

/// One form per target: the routes it may be confined to, and for how long.
pub(super) fn overrides_section(h: &mut String, config: &Config) {
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

/// The field an admin token is pasted in (kept in this tab's
/// `sessionStorage` by the script, sent only as an `Authorization` header).
pub(super) fn token_section(h: &mut String) {
    h.push_str(
        "<section id=\"token\" aria-labelledby=\"token-h\"><h2 id=\"token-h\">Admin token</h2>\
<p>This listener needs its admin token (<code>[admin] token_file</code>) for the buttons above. \
It is kept in this tab only and sent as an <code>Authorization</code> header.</p>\
<p><label for=\"token-in\">Token</label> <input id=\"token-in\" type=\"password\" autocomplete=\"off\" spellcheck=\"false\"> \
<button type=\"button\" id=\"token-save\">Use this token</button> \
<button type=\"button\" id=\"token-clear\">Forget it</button> <span id=\"token-state\" aria-live=\"polite\"></span></p></section>\n",
    );
}
