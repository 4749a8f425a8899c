//! The live view's pure part: every pair's last result (a probe, or a
//! credential check), every change, and the text they make (the table,
//! the screen, the summary). Results in, text out; no clock, no I/O.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::credential::check::{Checked, Found};
use crate::dial::fmt_duration;
use crate::dial::tls::rfc3339;
use crate::probe::ProbeOutcome;
use crate::reason::FailureReason;
use crate::verify::table::aligned;

/// Changes shown under the table on a terminal (the summary has them all).
const RECENT_ON_SCREEN: usize = 12;
/// The longest detail shown in a table cell.
const DETAIL_IN_TABLE: usize = 70;
/// The longest change line shown under the table (the summary has them
/// whole): longer ones would wrap and push the table off the screen.
const CHANGE_ON_SCREEN: usize = 150;

/// What counts as a change of a pair: pass/fail, the reason, the proxy's
/// CONNECT status and the upstream's HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    ok: bool,
    /// The failure reason (`ok`), or what a credential check found when it
    /// has no reason (`cannot_run`).
    reason: &'static str,
    connect_status: Option<u16>,
    http_status: Option<u16>,
    /// A provider's own code (a credential check's rejection).
    code: Option<String>,
}

impl State {
    fn of(o: &ProbeOutcome) -> Self {
        Self {
            ok: o.ok,
            reason: o.reason.as_str(),
            connect_status: o.connect_status,
            http_status: o.http_status,
            code: None,
        }
    }

    fn of_credential(c: &Checked) -> Self {
        Self {
            ok: c.found == Found::Proven,
            reason: c.reason.map_or(c.found.as_str(), FailureReason::as_str),
            connect_status: None,
            http_status: c.http_status,
            code: c.code.clone(),
        }
    }

    /// `PASS ok`, `FAIL proxy_upstream_error (CONNECT 502)`,
    /// `FAIL credential_rejected (AADSTS7000222, HTTP 401)`.
    fn words(&self) -> String {
        let mut s = format!("{} {}", if self.ok { "PASS" } else { "FAIL" }, self.reason);
        let mut codes: Vec<String> = self.code.iter().cloned().collect();
        if let Some(c) = self.connect_status {
            codes.push(format!("CONNECT {c}"));
        }
        if let Some(c) = self.http_status {
            codes.push(format!("HTTP {c}"));
        }
        if !codes.is_empty() {
            let _ = write!(s, " ({})", codes.join(", "));
        }
        s
    }
}

/// One change of one pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// When the result that showed it came in.
    pub at: SystemTime,
    /// Target.
    pub target: String,
    /// Route.
    pub route: String,
    /// The state before (`None`: the pair's first result).
    before: Option<State>,
    /// The state now.
    after: State,
    /// The detail of the result that showed it.
    pub detail: String,
}

impl Change {
    /// One line: `12:00:01Z apns/provider: PASS ok -> FAIL proxy_upstream_error (CONNECT 502): <detail>`.
    pub fn line(&self) -> String {
        let from = match &self.before {
            Some(b) => format!("{} -> ", b.words()),
            None => "first result: ".into(),
        };
        format!(
            "{} {}/{}: {from}{}: {}",
            clock(self.at),
            self.target,
            self.route,
            self.after.words(),
            self.detail
        )
    }
}

/// One pair's row: its probes, or its credential's checks.
#[derive(Debug, Clone)]
struct Row {
    target: String,
    route: String,
    /// A credential check's row (`<route> credential`).
    credential: bool,
    last: Option<Last>,
    /// When its state last changed.
    since: Option<SystemTime>,
    checks: u64,
}

/// A row's last result.
#[derive(Debug, Clone)]
struct Last {
    state: State,
    detail: String,
    took: Duration,
}

impl Row {
    /// The route column: `provider`, or `provider credential`.
    fn label(&self) -> String {
        if self.credential {
            format!("{} credential", self.route)
        } else {
            self.route.clone()
        }
    }
}

/// The live view's state: every pair's last result and every change.
#[derive(Debug, Clone)]
pub struct Board {
    rows: Vec<Row>,
    changes: Vec<Change>,
    started: SystemTime,
}

impl Board {
    /// A board for every target × route of `config`, in config order.
    pub fn new(config: &Config, started: SystemTime) -> Self {
        let row = |t: &str, r: &str, credential| Row {
            target: t.to_string(),
            route: r.to_string(),
            credential,
            last: None,
            since: None,
            checks: 0,
        };
        let mut rows: Vec<Row> = Vec::new();
        for t in &config.targets {
            rows.extend(t.routes.iter().map(|r| row(&t.name, &r.name, false)));
        }
        for t in config.targets.iter().filter(|t| t.credential.is_some()) {
            rows.extend(t.routes.iter().map(|r| row(&t.name, &r.name, true)));
        }
        Self {
            rows,
            changes: Vec::new(),
            started,
        }
    }

    /// Takes one result in at `at`; returns the change it shows, if any.
    pub fn observe(&mut self, outcome: ProbeOutcome, at: SystemTime) -> Option<Change> {
        let last = Last {
            state: State::of(&outcome),
            detail: outcome.detail,
            took: outcome.duration,
        };
        self.take(&outcome.target, &outcome.route, false, last, at)
    }

    /// Takes one credential check in at `at`; returns the change it shows.
    pub fn observe_credential(&mut self, c: Checked, at: SystemTime) -> Option<Change> {
        let last = Last {
            state: State::of_credential(&c),
            detail: c.detail,
            took: c.took,
        };
        self.take(&c.target, &c.route, true, last, at)
    }

    fn take(
        &mut self,
        target: &str,
        route: &str,
        credential: bool,
        last: Last,
        at: SystemTime,
    ) -> Option<Change> {
        let row = self
            .rows
            .iter_mut()
            .find(|r| r.target == target && r.route == route && r.credential == credential)?;
        row.checks += 1;
        let before = row.last.as_ref().map(|l| l.state.clone());
        let change = (before.as_ref() != Some(&last.state)).then(|| Change {
            at,
            target: target.to_string(),
            route: row.label(),
            before,
            after: last.state.clone(),
            detail: last.detail.clone(),
        });
        if change.is_some() {
            row.since = Some(at);
        }
        row.last = Some(last);
        if let Some(c) = &change {
            self.changes.push(c.clone());
        }
        change
    }

    /// Every change so far, oldest first.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// The table: one line per pair.
    pub fn table(&self, now: SystemTime) -> String {
        let mut rows: Vec<Vec<String>> = vec![
            [
                "TARGET", "ROUTE", "STATE", "REASON", "TOTAL", "SINCE", "CHECKS", "DETAIL",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ];
        for r in &self.rows {
            let (state, reason, total, detail) = match &r.last {
                None => (
                    "...".into(),
                    "not checked yet".into(),
                    "-".into(),
                    String::new(),
                ),
                Some(l) => (
                    if l.state.ok { "PASS" } else { "FAIL" }.to_string(),
                    match &l.state.code {
                        Some(code) => format!("{} {code}", l.state.reason),
                        None => l.state.reason.to_string(),
                    },
                    fmt_duration(l.took),
                    shorten(&l.detail, DETAIL_IN_TABLE),
                ),
            };
            let since = r
                .since
                .map(|s| format!("{} ago", ago(now, s)))
                .unwrap_or_else(|| "-".into());
            rows.push(vec![
                r.target.clone(),
                r.label(),
                state,
                reason,
                total,
                since,
                r.checks.to_string(),
                detail,
            ]);
        }
        aligned(&rows)
    }

    /// The whole screen: heading, table, the latest changes.
    pub fn screen(&self, heading: &str, now: SystemTime) -> String {
        let mut s = format!("{heading}\n\n{}\n", self.table(now));
        let recent = self.changes.len().saturating_sub(RECENT_ON_SCREEN);
        let _ = writeln!(
            s,
            "Changes ({} so far{}):",
            self.changes.len(),
            if recent > 0 { ", latest shown" } else { "" }
        );
        for c in &self.changes[recent..] {
            let _ = writeln!(s, "  {}", shorten(&c.line(), CHANGE_ON_SCREEN));
        }
        s
    }

    /// What Ctrl-C prints: every change after the first results, then
    /// where each pair ended and since when.
    pub fn summary(&self, now: SystemTime) -> String {
        let failing = self
            .rows
            .iter()
            .filter(|r| r.last.as_ref().is_some_and(|l| !l.state.ok))
            .count();
        let changes: Vec<&Change> = self.changes.iter().filter(|c| c.before.is_some()).collect();
        let mut s = format!(
            "Summary: watched {} target/route pairs for {} ({} to {}); {} changes; {} failing now.\n",
            self.rows.len(),
            ago(now, self.started),
            clock(self.started),
            clock(now),
            changes.len(),
            failing
        );
        if changes.is_empty() {
            s.push_str("No change: every pair stayed as it started.\n");
        } else {
            s.push_str("Changes:\n");
            for c in changes {
                let _ = writeln!(s, "  {}", c.line());
            }
        }
        s.push_str("Now:\n");
        for r in &self.rows {
            let (words, since) = match (&r.last, r.since) {
                (Some(l), Some(at)) => (l.state.words(), format!(" since {}", clock(at))),
                _ => ("not checked".to_string(), String::new()),
            };
            let _ = writeln!(
                s,
                "  {}/{}: {words}{since}, {} checks",
                r.target,
                r.label(),
                r.checks
            );
        }
        s
    }
}

/// `12:00:01Z`.
pub(super) fn clock(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    rfc3339(secs).get(11..).unwrap_or("").to_string()
}

/// `12s`, `3m05s`, `1h02m`.
fn ago(now: SystemTime, then: SystemTime) -> String {
    let s = now.duration_since(then).unwrap_or_default().as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
[resolve]
"push.test" = "127.0.0.1"

[[route]]
name = "provider"
proxy = "http://127.0.0.1:3128"

[[target]]
name = "apns"
url = "https://push.test/"
routes = ["provider", "direct"]
"#;
        Config::parse(std::path::Path::new("/etc/egress/config.toml"), text).expect("config")
    }

    fn outcome(route: &str, reason: FailureReason, connect: Option<u16>) -> ProbeOutcome {
        let mut o = ProbeOutcome::observed("apns", route, reason, format!("{reason} detail"));
        o.connect_status = connect;
        o
    }

    #[test]
    fn a_change_is_a_new_reason_or_status_and_repeats_are_not() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Board::new(&config(), t0);
        let first = b.observe(outcome("provider", FailureReason::Ok, Some(200)), at(1));
        assert!(first.is_some_and(|c| c.line().contains("apns/provider: first result: PASS ok")));
        assert!(
            b.observe(outcome("provider", FailureReason::Ok, Some(200)), at(2))
                .is_none()
        );
        let c = b
            .observe(
                outcome("provider", FailureReason::ProxyUpstreamError, Some(502)),
                at(3),
            )
            .expect("a change");
        assert_eq!(
            c.line(),
            "22:13:23Z apns/provider: PASS ok (CONNECT 200) -> FAIL proxy_upstream_error (CONNECT 502): proxy_upstream_error detail"
        );
        // Same reason, another status: still a change an operator wants.
        assert!(
            b.observe(
                outcome("provider", FailureReason::ProxyUpstreamError, Some(503)),
                at(4)
            )
            .is_some()
        );
        assert!(
            b.observe(outcome("nope", FailureReason::Ok, None), at(5))
                .is_none()
        );
        assert_eq!(b.changes().len(), 3);
        let table = b.table(at(10));
        assert!(
            table.contains("apns    provider  FAIL   proxy_upstream_error"),
            "{table}"
        );
        assert!(
            table.contains("apns    direct    ...    not checked yet"),
            "{table}"
        );
        let summary = b.summary(at(75));
        assert!(
            summary.starts_with("Summary: watched 2 target/route pairs for 1m15s (22:13:20Z to 22:14:35Z); 2 changes; 1 failing now.\nChanges:\n  22:13:23Z apns/provider: PASS ok (CONNECT 200) -> FAIL"),
            "{summary}"
        );
        assert!(!summary.contains("first result"), "{summary}");
        assert!(
            summary.contains(
                "  apns/provider: FAIL proxy_upstream_error (CONNECT 503) since 22:13:24Z, 4 checks"
            ),
            "{summary}"
        );
        assert!(
            summary.contains("  apns/direct: not checked, 0 checks"),
            "{summary}"
        );
    }
}
