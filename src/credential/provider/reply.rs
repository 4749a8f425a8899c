//! Reading a provider's answer safely, for every provider: its JSON, a
//! `Retry-After`, and text cut down to what a detail may show (printable
//! ASCII, 200 characters at most). Never echoes what we sent: `scrub`
//! removes our secrets from any text built from an answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Call, Reply, Verdict};

/// The most characters of provider text a detail keeps.
const MAX_DETAIL: usize = 200;
/// The longest wait a `Retry-After` may impose.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// `text` as printable ASCII: whitespace runs become one space, other
/// characters are dropped; at most 200 characters.
pub(super) fn sanitise(text: &str) -> String {
    let mut out = String::new();
    for ch in text.chars() {
        if out.len() >= MAX_DETAIL {
            break;
        }
        if ch.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else if ch.is_ascii_graphic() {
            out.push(ch);
        }
    }
    out.trim_end().to_string()
}

/// The body as JSON, if it is.
pub(super) fn json(reply: &Reply) -> Option<serde_json::Value> {
    serde_json::from_slice(&reply.body).ok()
}

/// A string field of a JSON object.
pub(super) fn field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(serde_json::Value::as_str)
}

/// "HTTP 502: <the body's start, sanitised>", for answers no rule knows.
pub(super) fn unexpected(what: &str, reply: &Reply) -> Verdict {
    let excerpt = sanitise(&String::from_utf8_lossy(&reply.body));
    if excerpt.is_empty() {
        Verdict::Failed(format!("{what}: HTTP {}", reply.status))
    } else {
        Verdict::Failed(format!("{what}: HTTP {}: {excerpt}", reply.status))
    }
}

/// A 429 or 503 with a `Retry-After` asks us to slow down.
pub(super) fn back_off(reply: &Reply) -> Option<Verdict> {
    if !matches!(reply.status, 429 | 503) {
        return None;
    }
    let after = retry_after(reply)?;
    Some(Verdict::BackOff {
        after,
        detail: format!(
            "HTTP {} with Retry-After ({}s)",
            reply.status,
            after.as_secs()
        ),
    })
}

/// `Retry-After` in seconds or as an HTTP date (measured from the reply's
/// own `Date` when it has one), clamped to 1 s ..= 1 h.
pub(super) fn retry_after(reply: &Reply) -> Option<Duration> {
    let value = reply
        .headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let value = value.trim();
    let secs = match value.parse::<u64>() {
        Ok(s) => s,
        Err(_) => {
            let at = http_date(value)?;
            let now = reply
                .headers
                .get(http::header::DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(http_date)
                .unwrap_or_else(unix_now);
            u64::try_from(at.saturating_sub(now)).unwrap_or(0)
        }
    };
    Some(Duration::from_secs(secs).clamp(Duration::from_secs(1), MAX_BACKOFF))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds.
fn http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| x == month)? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, min, sec] = hms.as_slice() else {
        return None;
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + min * 60 + sec)
}

/// `verdict` with every value we sent (the secret, sensitive headers, the
/// form's secret fields) replaced by `<redacted>` in its texts.
pub(super) fn scrub(verdict: Verdict, secret: Option<&str>, call: &Call) -> Verdict {
    let mut needles: Vec<String> = secret.map(str::to_string).into_iter().collect();
    for (_, v) in &call.headers {
        if v.is_sensitive()
            && let Ok(s) = v.to_str()
        {
            needles.push(s.to_string());
            if let Some((_, cred)) = s.split_once(' ') {
                needles.push(cred.to_string());
            }
        }
    }
    for pair in String::from_utf8_lossy(&call.body).split('&') {
        if let Some(("client_secret" | "client_assertion" | "assertion", v)) = pair.split_once('=')
        {
            needles.push(v.to_string());
        }
    }
    needles.retain(|n| n.len() >= 4);
    let clean = |t: String| {
        needles
            .iter()
            .fold(t, |t, n| t.replace(n.as_str(), "<redacted>"))
    };
    match verdict {
        Verdict::Proven(t) => Verdict::Proven(clean(t)),
        Verdict::Rejected { code, detail } => Verdict::Rejected {
            code: clean(code),
            detail: clean(detail),
        },
        Verdict::Misconfigured(t) => Verdict::Misconfigured(clean(t)),
        Verdict::Failed(t) => Verdict::Failed(clean(t)),
        Verdict::BackOff { after, detail } => Verdict::BackOff {
            after,
            detail: clean(detail),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;

    fn reply(status: u16, headers: &[(&str, &str)]) -> Reply {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        Reply {
            status,
            headers: h,
            body: Bytes::new(),
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_clamped() {
        let secs = |r: &Reply| retry_after(r).map(|d| d.as_secs());
        assert_eq!(secs(&reply(503, &[("retry-after", "7")])), Some(7));
        assert_eq!(secs(&reply(503, &[("retry-after", "0")])), Some(1));
        assert_eq!(secs(&reply(503, &[("retry-after", "86400")])), Some(3600));
        let dated = reply(
            429,
            &[
                ("retry-after", "Sun, 06 Nov 1994 08:51:37 GMT"),
                ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
        );
        assert_eq!(secs(&dated), Some(120));
        assert_eq!(secs(&reply(503, &[("retry-after", "soon")])), None);
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert!(back_off(&reply(500, &[("retry-after", "5")])).is_none());
        assert!(back_off(&reply(503, &[])).is_none());
    }

    #[test]
    fn sanitise_keeps_printable_ascii_and_cuts_at_200() {
        assert_eq!(sanitise("a\r\n\tb\u{1b}[31m é c"), "a b[31m c");
        assert_eq!(sanitise(&"x".repeat(500)).len(), 200);
    }
}
