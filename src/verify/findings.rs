//! Certificate and trust findings: what `verify` (and `/status`) say about
//! each target's client certificate, the certificates seen on each route
//! against `warn_before`/`fail_before`, and interception — judged by the
//! trust anchor a chain validated through, never by its issuer.
//!
//! Pure: the config, the probe outcomes and a clock value in, findings out.

use serde::Serialize;

use super::table::span;
use crate::config::human_duration as human;
use crate::config::{CertLevel, CertThresholds, Config, Target};
use crate::probe::ProbeOutcome;
use crate::reason::FailureReason;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine; shown for client certificates so their expiry is always in view.
    Ok,
    /// Act soon; `verify` still exits 0.
    Warn,
    /// Act now; `verify` exits 1.
    Fail,
}

impl Level {
    /// `OK`, `WARN`, `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }
}

impl From<CertLevel> for Level {
    fn from(l: CertLevel) -> Self {
        match l {
            CertLevel::Ok => Self::Ok,
            CertLevel::Warn => Self::Warn,
            CertLevel::Fail => Self::Fail,
        }
    }
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The configured client certificate's expiry.
    ClientCertExpiry,
    /// The configured client certificate cannot be used.
    ClientCertUnreadable,
    /// The upstream's certificate, as seen on a route, is close to expiry.
    PeerCertExpiry,
    /// The chain on a route validated through an anchor the target does not expect.
    Intercepted,
    /// A certificate credential's expiry (an Entra ID certificate).
    CredentialCertExpiry,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How serious.
    pub level: Level,
    /// About what.
    pub kind: FindingKind,
    /// The target.
    pub target: String,
    /// The route, for findings about what a route showed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// What it is and what to do, in words.
    pub message: String,
}

/// Every finding for `config` given `checks` (probe outcomes), at `now`
/// (Unix seconds): target by target, client certificate first, then the
/// routes in preference order.
pub fn findings(config: &Config, checks: &[ProbeOutcome], now: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in &config.targets {
        out.extend(client_cert(t, now));
        for c in checks.iter().filter(|c| c.target == t.name) {
            out.extend(route_findings(t, c, now));
        }
    }
    out
}

/// The finding about `target`'s client certificate, if it has one.
pub fn client_cert(target: &Target, now: i64) -> Option<Finding> {
    let cert = target.client_cert.as_ref()?;
    let file = cert.files.cert.display();
    let finding = |level, kind, message| Finding {
        level,
        kind,
        target: target.name.clone(),
        route: None,
        message,
    };
    Some(match &cert.loaded {
        Err(e) => finding(
            Level::Fail,
            FindingKind::ClientCertUnreadable,
            format!("client certificate cannot be used ({}): {e}", e.reason),
        ),
        Ok((leaf, _)) => {
            let th = target.cert_thresholds;
            let level = th.level(leaf.not_after_unix, now);
            finding(
                level.into(),
                FindingKind::ClientCertExpiry,
                format!(
                    "client certificate {} ({file}) {}",
                    leaf.subject,
                    expiry_words(leaf.not_after_unix, &leaf.not_after, now, level, &th)
                ),
            )
        }
    })
}

/// Findings about what one probe of a target saw on its route.
pub fn route_findings(target: &Target, c: &ProbeOutcome, now: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    let finding = |level, kind, message| Finding {
        level,
        kind,
        target: target.name.clone(),
        route: Some(c.route.clone()),
        message,
    };
    if c.intercepted == Some(true) {
        let anchor = c.anchor.as_ref();
        out.push(finding(
            Level::Warn,
            FindingKind::Intercepted,
            format!(
                "INTERCEPTED: the chain validated through {} ({}anchor key sha256 {}), not {}; the leaf was issued by {}",
                anchor.map_or("an unknown anchor", |a| a.subject.as_str()),
                if anchor.is_some_and(|a| a.public) {
                    "a public root, "
                } else {
                    "not a public root, "
                },
                anchor.map_or("?", |a| short(&a.spki_sha256)),
                c.expected_anchor.as_deref().unwrap_or("the expected anchors"),
                c.peer_cert.as_ref().map_or("?", |p| p.issuer.as_str()),
            ),
        ));
    }
    // An expired certificate already failed the check (tls_expired).
    if let Some(p) = &c.peer_cert {
        if c.reason != FailureReason::TlsExpired {
            let th = target.cert_thresholds;
            let level = th.level(p.not_after_unix, now);
            if level != CertLevel::Ok {
                out.push(finding(
                    level.into(),
                    FindingKind::PeerCertExpiry,
                    format!(
                        "upstream certificate {} (issued by {}) {}",
                        p.subject,
                        p.issuer,
                        expiry_words(p.not_after_unix, &p.not_after, now, level, &th)
                    ),
                ));
            }
        }
    }
    out
}

/// `expires 2026-05-01T00:00:00Z, in 3d 0h: inside fail_before (7d)`.
pub(super) fn expiry_words(
    not_after: i64,
    text: &str,
    now: i64,
    level: CertLevel,
    th: &CertThresholds,
) -> String {
    let left = not_after - now;
    if left <= 0 {
        return format!("EXPIRED {text}, {} ago: renew it now", span(left));
    }
    let when = format!("expires {text}, in {}", span(left));
    match level {
        CertLevel::Fail => format!(
            "{when}: inside fail_before ({}): renew it now",
            human(th.fail_before)
        ),
        CertLevel::Warn => format!(
            "{when}: inside warn_before ({}): plan the renewal",
            human(th.warn_before)
        ),
        CertLevel::Ok => when,
    }
}

/// The first 16 hex digits of a digest, for a line of text.
pub fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn thresholds_split_ok_warn_fail_at_the_edges() {
        let th = CertThresholds {
            warn_before: Duration::from_secs(30 * 86_400),
            fail_before: Duration::from_secs(7 * 86_400),
        };
        let now = 1_000_000_000;
        let day = 86_400;
        assert_eq!(th.level(now + 60 * day, now), CertLevel::Ok);
        assert_eq!(th.level(now + 30 * day + 1, now), CertLevel::Ok);
        assert_eq!(th.level(now + 30 * day, now), CertLevel::Warn);
        assert_eq!(th.level(now + 7 * day + 1, now), CertLevel::Warn);
        assert_eq!(th.level(now + 7 * day, now), CertLevel::Fail);
        assert_eq!(th.level(now - day, now), CertLevel::Fail);
        assert_eq!(
            expiry_words(now + 3 * day, "X", now, CertLevel::Fail, &th),
            "expires X, in 3d 0h: inside fail_before (7d): renew it now"
        );
        assert_eq!(
            expiry_words(now - day, "X", now, CertLevel::Fail, &th),
            "EXPIRED X, 1d 0h ago: renew it now"
        );
    }
}
