//! The demo's verdict: what the app got while the provider's proxy was
//! broken, how fast the sidecar detected it, failed over and back, the
//! incident it recorded; printed as the summary and checked against the
//! story (push and Azure AD keep working, SMS fails clearly). It only reads
//! what the run recorded; it never talks to the sidecar.

use std::time::Duration;

use serde_json::Value;

use super::app::Answer;
use super::operator::Watch;
use super::{Clock, DemoError, UPSTREAMS};

/// When the provider's change was in place.
pub(super) struct Timeline {
    /// Since the start, when the proxy started answering 502.
    pub(super) broke: Duration,
    /// Since the start, when it tunneled again.
    pub(super) fixed: Duration,
    /// Since the start, when Entra ID started refusing the secret.
    pub(super) expired: Duration,
    /// What the operator's `POST /verify` answered (JSON, or null).
    pub(super) verified: Value,
}

/// The azure-ad target's credential in a `POST /verify` report: the check
/// over the route it went (the first one that has one).
fn azure_credential(report: &Value) -> Option<&Value> {
    report
        .as_array()?
        .iter()
        .filter(|c| c["target"] == "azure-ad")
        .map(|c| &c["credential"])
        .find(|c| !c.is_null())
}

/// The timeline's line for the operator's `POST /verify`.
pub(super) fn verify_words(report: &Value) -> String {
    match azure_credential(report) {
        Some(c) => format!(
            "sidecar  verify: azure-ad credential {} ({}{}): {}",
            c["result"].as_str().unwrap_or("?"),
            c["reason"].as_str().unwrap_or("?"),
            c["code"]
                .as_str()
                .map(|code| format!(", {code}"))
                .unwrap_or_default(),
            c["detail"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(110)
                .collect::<String>()
        ),
        None => "sidecar  verify: no credential check in the report".to_string(),
    }
}

/// Prints the summary and checks the story: every problem found, in order.
pub(super) fn summarize(
    clock: &Clock,
    log: &[(Duration, usize, Answer)],
    watch: &Watch,
    timeline: &Timeline,
    status: &Value,
) -> Result<(), DemoError> {
    clock.plain(&format!(
        "\nSummary\n  app requests during the incident ({} to {}):",
        secs(timeline.broke),
        secs(timeline.fixed)
    ));
    let mut problems = Vec::new();
    for (i, (name, target, _)) in UPSTREAMS.iter().enumerate() {
        let tally = Tally::during(log, i, timeline);
        let expected = Expected::of(target);
        clock.plain(&format!(
            "    {name:<12} {:>3}/{:<3} ok ({:.0}%)  {}",
            tally.ok,
            tally.total,
            tally.percent(),
            expected.note()
        ));
        problems.extend(expected.problem(name, &tally));
    }
    problems.extend(detection(clock, watch, timeline));
    problems.extend(failovers(clock, watch, timeline));
    problems.extend(incident_window(clock, status));
    problems.extend(credential(clock, watch, timeline));
    if problems.is_empty() {
        clock.plain("\nThe sidecar caught the provider's change, named it, kept push and Azure AD logins working, reported SMS, and failed back; then it named the expired Azure AD secret without moving any traffic.");
        Ok(())
    } else {
        Err(DemoError::StoryFailed { problems })
    }
}

/// `d` in the summary's words: `3.2s`.
fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// One upstream's requests while the proxy was broken.
struct Tally {
    /// Answered by the upstream.
    ok: usize,
    /// Made.
    total: usize,
}

impl Tally {
    fn during(log: &[(Duration, usize, Answer)], upstream: usize, timeline: &Timeline) -> Self {
        let during: Vec<&Answer> = log
            .iter()
            .filter(|(t, u, _)| *u == upstream && *t >= timeline.broke && *t < timeline.fixed)
            .map(|(_, _, a)| a)
            .collect();
        Self {
            ok: during.iter().filter(|a| matches!(a, Answer::Ok(_))).count(),
            total: during.len(),
        }
    }

    fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.ok as f64 / self.total as f64
        }
    }
}

/// What the story expects of an upstream while the proxy is broken.
enum Expected {
    /// It may go direct: every request succeeds.
    FailsOver,
    /// Its only route broke: requests fail, with a reason.
    FailsClearly,
}

impl Expected {
    fn of(target: &str) -> Self {
        if target == "sms" {
            Self::FailsClearly
        } else {
            Self::FailsOver
        }
    }

    fn note(&self) -> &'static str {
        match self {
            Self::FailsClearly => {
                "direct not allowed: failed with a clear 502 naming proxy_upstream_error"
            }
            Self::FailsOver => "failed over to direct",
        }
    }

    /// What went against the story, if anything.
    fn problem(&self, name: &str, tally: &Tally) -> Option<String> {
        match self {
            Self::FailsClearly if tally.ok == tally.total => {
                Some("sms never failed although its only route broke".to_string())
            }
            Self::FailsClearly => None,
            Self::FailsOver if tally.ok != tally.total || tally.total == 0 => {
                Some(format!("{name} lost {} requests", tally.total - tally.ok))
            }
            Self::FailsOver => None,
        }
    }
}

/// How long the sidecar took to mark a route unhealthy after the change.
fn detection(clock: &Clock, watch: &Watch, timeline: &Timeline) -> Option<String> {
    let detected = watch
        .health_changes
        .iter()
        .find(|(t, _, _, h)| *t >= timeline.broke && !h)
        .map(|(t, ..)| *t - timeline.broke);
    match detected {
        Some(d) => {
            clock.plain(&format!(
                "  detection: {} after the change (first route marked unhealthy)",
                secs(d)
            ));
            None
        }
        None => Some("the sidecar never marked the proxy route unhealthy".into()),
    }
}

/// When push and azure-ad moved direct after the change, and back after the fix.
fn failovers(clock: &Clock, watch: &Watch, timeline: &Timeline) -> Vec<String> {
    let mut problems = Vec::new();
    for target in ["push", "azure-ad"] {
        let moved = |since: Duration, to: &str| {
            watch
                .moves
                .iter()
                .find(|(t, n, _, dest)| *t >= since && n == target && dest == to)
        };
        match (
            moved(timeline.broke, "direct"),
            moved(timeline.fixed, "provider"),
        ) {
            (Some(o), Some(b)) => clock.plain(&format!(
                "  {target}: failover {} after the change, fail-back {} after the fix",
                secs(o.0 - timeline.broke),
                secs(b.0 - timeline.fixed)
            )),
            _ => problems.push(format!("{target} did not fail over and back")),
        }
    }
    problems
}

/// The incident window the sidecar recorded, as `/status` gives it.
fn incident_window(clock: &Clock, status: &Value) -> Option<String> {
    let Some(w) = status["incidents"].as_array().and_then(|a| a.first()) else {
        return Some("no incident window was recorded".into());
    };
    let lasted = w["end"]
        .as_i64()
        .zip(w["start"].as_i64())
        .map(|(e, s)| e - s);
    clock.plain(&format!(
        "  {} (about {} s)",
        w["text"].as_str().unwrap_or(""),
        lasted.unwrap_or(0)
    ));
    None
}

/// The expired secret: `POST /verify` named it (`credential_rejected`,
/// `AADSTS7000222`), and nothing failed over after it.
fn credential(clock: &Clock, watch: &Watch, timeline: &Timeline) -> Vec<String> {
    let mut problems = Vec::new();
    let c = azure_credential(&timeline.verified);
    let code = c.and_then(|c| c["code"].as_str()).unwrap_or("");
    let reason = c.and_then(|c| c["reason"].as_str()).unwrap_or("");
    if code == "AADSTS7000222" && reason == "credential_rejected" {
        clock.plain(&format!(
            "  azure-ad credential: POST /verify names it: {reason}, {code} (the client secret expired at {})",
            secs(timeline.expired)
        ));
    } else {
        problems.push(format!(
            "POST /verify did not name the expired secret (reason {reason:?}, code {code:?})"
        ));
    }
    let moved: Vec<String> = watch
        .moves
        .iter()
        .filter(|(t, ..)| *t >= timeline.expired)
        .map(|(_, n, from, to)| format!("{n}: {from} -> {to}"))
        .collect();
    if moved.is_empty() {
        clock.plain("  nothing failed over for it: going direct does not fix a credential");
    } else {
        problems.push(format!(
            "traffic moved after the secret expired: {}",
            moved.join(", ")
        ));
    }
    problems
}
