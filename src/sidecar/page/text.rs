//! How values read on the page: HTML escaping, and times as people say
//! them (`2026-11-23 11:47:05Z`, `13 min`, `89 days left`), each wrapped in
//! a `<time>` element a script or a reader can parse.
//!
//! Every string that reaches the page from outside (proxy headers, details,
//! names) goes through [`esc`]. Pure: never reads the clock (callers pass
//! the wall time they took once for the whole page) and never touches state.

use std::time::{Duration, SystemTime};

use crate::dial::tls::rfc3339;

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

pub(super) fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `2026-11-23 11:47:05Z`.
pub(super) fn when(unix: i64) -> String {
    rfc3339(unix).replacen('T', " ", 1)
}

/// `45 s`, `13 min`, `2 h 5 min`, `3 d 4 h`.
pub(super) fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A `<time>` element for `unix`, with the text `text`.
pub(super) fn time_el(unix: i64, text: &str) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        esc(&rfc3339(unix)),
        esc(text)
    )
}

/// `89 days left (2026-02-01 00:00:00Z)`, or `EXPIRED 3 days ago (...)`.
pub(super) fn days_left(not_after: i64, wall: SystemTime) -> String {
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
    fn spans_read_as_people_say_them() {
        assert_eq!(span(Duration::from_secs(42)), "42 s");
        assert_eq!(span(Duration::from_secs(13 * 60 + 5)), "13 min");
        assert_eq!(span(Duration::from_secs(3600 + 5 * 60)), "1 h 5 min");
        assert_eq!(span(Duration::from_secs(86_400 * 3 + 3600 * 4)), "3 d 4 h");
    }
}
