//! The drift report: a run compared with a [`Baseline`] recorded before a
//! provider change (`verify --baseline FILE`).
//!
//! The comparison groups what changed: regressions (a new failure, new
//! interception, a changed trust anchor), fixes, changes to note (a
//! rotated certificate, a changed proxy identity or address, another
//! status), and phases that got slower. It is pure: it reads no file and
//! runs no probe (the file is [`baseline`](super::baseline)'s).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::Report;
use super::findings::short;
use crate::dial::fmt_duration;
use crate::dial::tls::AnchorInfo;
use crate::reason::{FailureReason, Phase};

// Also at their old paths, from before the file moved to `baseline`.
pub use super::baseline::{Baseline, BaselineCheck, FORMAT, VERSION};

/// A phase counts as slower at this factor...
const SLOWER_FACTOR: f64 = 3.0;
/// ...and this much more time (seconds), both.
const SLOWER_BY: f64 = 0.050;

/// Where a change goes in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// A new failure, new interception, a changed trust anchor.
    Regression,
    /// A failure or an interception gone.
    Fix,
    /// Worth knowing, usually routine: a rotated certificate, another proxy identity or address.
    Note,
    /// A phase at least 3× and 50 ms slower.
    Slower,
}

impl Group {
    fn heading(self) -> &'static str {
        match self {
            Self::Regression => "REGRESSIONS",
            Self::Fix => "FIXES",
            Self::Note => "CHANGES TO NOTE",
            Self::Slower => "SLOWER",
        }
    }
}

/// One difference from the baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Its group.
    pub group: Group,
    /// The target.
    pub target: String,
    /// The route.
    pub route: String,
    /// What changed, e.g. `reason`, `anchor`, `peer_issuer`, `proxy_via`, `phase.tls`.
    pub field: String,
    /// The line a person reads.
    pub message: String,
}

/// Every difference between a baseline and a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The baseline file.
    pub baseline: String,
    /// When it was recorded.
    pub recorded_at: String,
    /// The differences, in report order.
    pub changes: Vec<Change>,
}

fn or_none(v: Option<&str>) -> &str {
    v.unwrap_or("none")
}

/// Compares `now` with `before`.
pub fn compare(path: &Path, before: &Baseline, now: &Report) -> Drift {
    let mut changes = Vec::new();
    let old: BTreeMap<(&str, &str), &BaselineCheck> = before
        .checks
        .iter()
        .map(|c| ((c.target.as_str(), c.route.as_str()), c))
        .collect();
    for o in &now.checks {
        let cur = BaselineCheck::of(o, now.proxy_addresses_of(&o.route));
        match old.get(&(o.target.as_str(), o.route.as_str())) {
            Some(was) => compare_check(was, &cur, &mut changes),
            None => changes.push(Change {
                group: Group::Note,
                target: o.target.clone(),
                route: o.route.clone(),
                field: "check".into(),
                message: format!("{}/{}: new check, now {}", o.target, o.route, o.reason),
            }),
        }
    }
    for c in &before.checks {
        if !now
            .checks
            .iter()
            .any(|o| o.target == c.target && o.route == c.route)
        {
            changes.push(Change {
                group: Group::Note,
                target: c.target.clone(),
                route: c.route.clone(),
                field: "check".into(),
                message: format!("{}/{}: no longer checked", c.target, c.route),
            });
        }
    }
    // Stable: by group, then in check order.
    changes.sort_by_key(|c| c.group);
    Drift {
        baseline: path.display().to_string(),
        recorded_at: before.recorded_at.clone(),
        changes,
    }
}

fn compare_check(was: &BaselineCheck, now: &BaselineCheck, out: &mut Vec<Change>) {
    let c = Compared {
        was,
        now,
        pair: format!("{}/{}", now.target, now.route),
    };
    let found = c
        .reason()
        .into_iter()
        .chain(c.trust())
        .chain(c.certificate())
        .chain(c.proxy_identity())
        .chain(c.proxy_addresses())
        .chain(c.alpn())
        .chain(c.slower_phases());
    out.extend(found.map(|f| Change {
        group: f.group,
        target: now.target.clone(),
        route: now.route.clone(),
        field: f.field,
        message: f.message,
    }));
}

/// One difference in one check, before it is tied to its target and route.
struct Found {
    group: Group,
    field: String,
    message: String,
}

impl Found {
    fn new(group: Group, field: &str, message: String) -> Self {
        Self {
            group,
            field: field.to_string(),
            message,
        }
    }
}

/// A status code in a message, `none` when there was none.
fn status(s: Option<u16>) -> String {
    s.map_or("none".into(), |s| s.to_string())
}

/// One check as the baseline kept it and as the run saw it. Each method
/// compares one aspect, in report order.
struct Compared<'a> {
    was: &'a BaselineCheck,
    now: &'a BaselineCheck,
    /// `target/route`, which starts every message.
    pair: String,
}

impl Compared<'_> {
    /// The outcome: a regression, a fix, another failure, or (same reason)
    /// another CONNECT or HTTP status.
    fn reason(&self) -> Vec<Found> {
        let (now, pair) = (self.now, &self.pair);
        match (self.was.reason, now.reason) {
            (a, b) if a == b => self.same_reason(),
            (FailureReason::Ok, b) => vec![Found::new(
                Group::Regression,
                "reason",
                format!(
                    "{pair}: REGRESSED: ok -> {b} ({})",
                    self.connect_change().unwrap_or_else(|| now.detail.clone())
                ),
            )],
            (a, FailureReason::Ok) => vec![Found::new(
                Group::Fix,
                "reason",
                format!("{pair}: FIXED: {a} -> ok"),
            )],
            (a, b) => vec![Found::new(
                Group::Note,
                "reason",
                format!("{pair}: still failing, now {b} (was {a}): {}", now.detail),
            )],
        }
    }

    fn connect_change(&self) -> Option<String> {
        let (was, now) = (self.was.connect_status, self.now.connect_status);
        (was != now).then(|| format!("CONNECT {} -> {}", status(was), status(now)))
    }

    fn same_reason(&self) -> Vec<Found> {
        let (was, now, pair) = (self.was, self.now, &self.pair);
        let connect = self
            .connect_change()
            .map(|c| Found::new(Group::Note, "connect_status", format!("{pair}: {c}")));
        let http = (was.http_status != now.http_status).then(|| {
            Found::new(
                Group::Note,
                "http_status",
                format!(
                    "{pair}: HTTP status {} -> {} (still {})",
                    status(was.http_status),
                    status(now.http_status),
                    now.reason
                ),
            )
        });
        connect.into_iter().chain(http).collect()
    }

    /// Trust: compared only when both runs verified a chain.
    fn trust(&self) -> Option<Found> {
        let (was, now, pair) = (self.was, self.now, &self.pair);
        let (Some(wi), Some(ni)) = (was.intercepted, now.intercepted) else {
            return None;
        };
        let name = |a: &Option<AnchorInfo>| {
            a.as_ref()
                .map_or("an unknown anchor".to_string(), |a| a.subject.clone())
        };
        let (wa, na) = (name(&was.anchor), name(&now.anchor));
        let key = |a: &Option<AnchorInfo>| a.as_ref().map(|a| a.spki_sha256.clone());
        match (wi, ni) {
            (false, true) => Some(Found::new(
                Group::Regression,
                "intercepted",
                format!(
                    "{pair}: NEWLY INTERCEPTED: the chain now validates through {na} (was {wa}); issuer {}",
                    or_none(now.peer_issuer.as_deref())
                ),
            )),
            (true, false) => Some(Found::new(
                Group::Fix,
                "intercepted",
                format!(
                    "{pair}: no longer intercepted: the chain validates through {na} (was {wa})"
                ),
            )),
            _ if key(&was.anchor) != key(&now.anchor) => Some(Found::new(
                Group::Regression,
                "anchor",
                format!("{pair}: TRUST ANCHOR CHANGED: {wa} -> {na}"),
            )),
            _ => None,
        }
    }

    /// The upstream certificate: compared only when both runs saw one.
    fn certificate(&self) -> Option<Found> {
        let (was, now, pair) = (self.was, self.now, &self.pair);
        let (Some(wf), Some(nf)) = (&was.peer_sha256, &now.peer_sha256) else {
            return None;
        };
        if was.peer_issuer != now.peer_issuer {
            Some(Found::new(
                Group::Note,
                "peer_issuer",
                format!(
                    "{pair}: certificate issuer changed: {} -> {} (sha256 {} -> {}; usually a routine rotation of intermediates)",
                    or_none(was.peer_issuer.as_deref()),
                    or_none(now.peer_issuer.as_deref()),
                    short(wf),
                    short(nf)
                ),
            ))
        } else if wf != nf {
            Some(Found::new(
                Group::Note,
                "peer_sha256",
                format!(
                    "{pair}: certificate replaced, same issuer: sha256 {} -> {}, expiry {} -> {} (usually a routine renewal)",
                    short(wf),
                    short(nf),
                    or_none(was.peer_not_after.as_deref()),
                    or_none(now.peer_not_after.as_deref())
                ),
            ))
        } else {
            None
        }
    }

    /// The proxy's identity: compared only when both runs got a CONNECT reply.
    fn proxy_identity(&self) -> Vec<Found> {
        let (was, now, pair) = (self.was, self.now, &self.pair);
        if was.connect_status.is_none() || now.connect_status.is_none() {
            return Vec::new();
        }
        [
            ("proxy_via", "Via", &was.proxy_via, &now.proxy_via),
            (
                "proxy_server",
                "Server",
                &was.proxy_server,
                &now.proxy_server,
            ),
        ]
        .into_iter()
        .filter(|(_, _, a, b)| a != b)
        .map(|(field, what, a, b)| {
            Found::new(
                Group::Note,
                field,
                format!(
                    "{pair}: proxy {what} changed: {} -> {} (another proxy, or another version, answers)",
                    or_none(a.as_deref()),
                    or_none(b.as_deref())
                ),
            )
        })
        .collect()
    }

    fn proxy_addresses(&self) -> Option<Found> {
        let (was, now, pair) = (self.was, self.now, &self.pair);
        (was.proxy_addresses != now.proxy_addresses).then(|| {
            Found::new(
                Group::Note,
                "proxy_addresses",
                format!(
                    "{pair}: proxy addresses changed: [{}] -> [{}]",
                    was.proxy_addresses.join(", "),
                    now.proxy_addresses.join(", ")
                ),
            )
        })
    }

    /// ALPN: compared only when both runs negotiated one.
    fn alpn(&self) -> Option<Found> {
        let (was, now, pair) = (self.was, self.now, &self.pair);
        (was.alpn.is_some() && now.alpn.is_some() && was.alpn != now.alpn).then(|| {
            Found::new(
                Group::Note,
                "alpn",
                format!(
                    "{pair}: ALPN {} -> {}",
                    or_none(was.alpn.as_deref()),
                    or_none(now.alpn.as_deref())
                ),
            )
        })
    }

    /// Phases at least [`SLOWER_FACTOR`] times and [`SLOWER_BY`] slower.
    fn slower_phases(&self) -> Vec<Found> {
        let pair = &self.pair;
        let secs = |s: f64| fmt_duration(std::time::Duration::from_secs_f64(s.max(0.0)));
        Phase::ALL
            .iter()
            .filter_map(|phase| {
                let label = phase.as_str();
                let (a, b) = (self.was.phases.get(label)?, self.now.phases.get(label)?);
                (*b >= a * SLOWER_FACTOR && b - a >= SLOWER_BY).then(|| {
                    Found::new(
                        Group::Slower,
                        &format!("phase.{label}"),
                        format!(
                            "{pair}: {label} {} -> {} ({:.1}x)",
                            secs(*a),
                            secs(*b),
                            if *a > 0.0 { b / a } else { f64::INFINITY }
                        ),
                    )
                })
            })
            .collect()
    }
}

impl Drift {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes of one check.
    pub fn of(&self, target: &str, route: &str) -> Vec<&Change> {
        self.changes
            .iter()
            .filter(|c| c.target == target && c.route == route)
            .collect()
    }

    /// The human report, grouped.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.changes.is_empty() {
            let _ = writeln!(
                out,
                "no change since the baseline {} (recorded {})",
                self.baseline, self.recorded_at
            );
            return out;
        }
        let _ = writeln!(
            out,
            "changes since the baseline {} (recorded {}):",
            self.baseline, self.recorded_at
        );
        for group in [Group::Regression, Group::Fix, Group::Note, Group::Slower] {
            let lines: Vec<&Change> = self.changes.iter().filter(|c| c.group == group).collect();
            if lines.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{}", group.heading());
            for c in lines {
                let _ = writeln!(out, "  {}", c.message);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> BaselineCheck {
        BaselineCheck {
            target: "push".into(),
            route: "provider".into(),
            reason: FailureReason::Ok,
            connect_status: Some(200),
            proxy_via: None,
            proxy_server: None,
            proxy_addresses: vec!["127.0.0.1:3128".into()],
            http_status: Some(200),
            alpn: Some("h2".into()),
            peer_subject: Some("CN=push.test".into()),
            peer_issuer: Some("CN=test CA".into()),
            peer_sha256: Some("aa".repeat(32)),
            peer_not_after: Some("2030-01-01T00:00:00Z".into()),
            anchor: Some(AnchorInfo {
                subject: "CN=test CA".into(),
                spki_sha256: "11".repeat(32),
                public: false,
            }),
            intercepted: Some(false),
            phases: [("tls".to_string(), 0.010)].into_iter().collect(),
            detail: "HTTP 200 OK over h2, CONNECT 200".into(),
        }
    }

    fn diff(was: &BaselineCheck, now: &BaselineCheck) -> Vec<(Group, String)> {
        let mut out = Vec::new();
        compare_check(was, now, &mut out);
        out.into_iter().map(|c| (c.group, c.message)).collect()
    }

    #[test]
    fn an_identical_check_has_no_drift() {
        assert!(diff(&check(), &check()).is_empty());
    }

    #[test]
    fn interception_is_a_regression_and_names_both_anchors() {
        let mut now = check();
        now.intercepted = Some(true);
        now.anchor = Some(AnchorInfo {
            subject: "CN=Rogue".into(),
            spki_sha256: "22".repeat(32),
            public: false,
        });
        now.peer_issuer = Some("CN=Rogue".into());
        now.peer_sha256 = Some("bb".repeat(32));
        let d = diff(&check(), &now);
        assert_eq!(d[0].0, Group::Regression);
        assert_eq!(
            d[0].1,
            "push/provider: NEWLY INTERCEPTED: the chain now validates through CN=Rogue (was CN=test CA); issuer CN=Rogue"
        );
        assert_eq!(d[1].0, Group::Note);
        assert!(
            d[1].1
                .starts_with("push/provider: certificate issuer changed: CN=test CA -> CN=Rogue"),
            "{}",
            d[1].1
        );
        assert_eq!(d.len(), 2, "{d:?}");
    }

    #[test]
    fn a_phase_must_be_three_times_and_fifty_ms_slower() {
        let mut now = check();
        now.phases.insert("tls".into(), 0.055);
        assert!(diff(&check(), &now).is_empty(), "45 ms more is not enough");
        now.phases.insert("tls".into(), 0.070);
        assert_eq!(
            diff(&check(), &now),
            vec![(
                Group::Slower,
                "push/provider: tls 10ms -> 70ms (7.0x)".to_string()
            )]
        );
        let mut was = check();
        was.phases.insert("tls".into(), 0.100);
        now.phases.insert("tls".into(), 0.250);
        assert!(diff(&was, &now).is_empty(), "2.5x is not enough");
    }
}
