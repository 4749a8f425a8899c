//! `verify`: every target over every route it lists, once, now, at the same
//! time; a report as an aligned table or JSON; a comparison with a baseline
//! recorded before a provider change; and the exit code.
//!
//! Uses the same prober (and so the same dialer) as the sidecar. Never
//! prints anything a probe did not produce; never prints a credential.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::dial::{Dialer, Resolver, fmt_duration};
use crate::probe::{ProbeOutcome, ProbeRunner, Prober};
use crate::reason::{FailureReason, Phase};

/// Exit code: every check passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: a check failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// The prober a config calls for (with a dialer of its own: the `verify`
/// command has no running generation to share one with).
pub fn prober_for(config: &Config) -> Arc<dyn ProbeRunner> {
    Arc::new(Prober::new(
        Dialer::new(Resolver::new(config.resolve.clone())),
        config.probe.max_body,
    ))
}

/// Probes every target × allowed route once, concurrently. Results come back
/// in config order (targets, then their routes in preference order).
pub async fn run_checks(config: &Config, prober: &Arc<dyn ProbeRunner>) -> Vec<ProbeOutcome> {
    let mut set = JoinSet::new();
    let mut index = 0usize;
    for target in &config.targets {
        for route in &target.routes {
            let (target, route, prober) = (Arc::clone(target), Arc::clone(route), prober.clone());
            let i = index;
            set.spawn(async move { (i, prober.probe(&target, &route).await) });
            index += 1;
        }
    }
    let mut results: Vec<(usize, ProbeOutcome)> = Vec::with_capacity(index);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => results.push(r),
            // A probe task cannot panic by design; if one did, say so.
            Err(e) => tracing::error!(error = %e, "a probe task failed"),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, o)| o).collect()
}

/// The exit code for a set of results.
pub fn exit_code(results: &[ProbeOutcome]) -> u8 {
    if results.iter().all(|r| r.ok) {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// The JSON report: an array of checks.
pub fn render_json(results: &[ProbeOutcome]) -> String {
    serde_json::to_string_pretty(results).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The table report: one aligned row per target × route.
pub fn render_table(results: &[ProbeOutcome]) -> String {
    let phases = [
        (Phase::Resolve, "RESOLVE"),
        (Phase::Connect, "CONNECT"),
        (Phase::Tunnel, "TUNNEL"),
        (Phase::Tls, "TLS"),
        (Phase::FirstByte, "TTFB"),
        (Phase::Body, "BODY"),
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["TARGET", "ROUTE", "RESULT", "REASON", "TOTAL"];
    header.extend(phases.iter().map(|(_, h)| *h));
    header.push("DETAIL");
    rows.push(header.iter().map(|s| s.to_string()).collect());
    for r in results {
        let mut row = vec![
            r.target.clone(),
            r.route.clone(),
            if r.ok { "PASS".into() } else { "FAIL".into() },
            r.reason.as_str().into(),
            fmt_duration(r.duration),
        ];
        for (phase, _) in phases {
            let cell = match r.phases.get(phase) {
                Some(d) if r.failed_phase == Some(phase) => format!("{}!", fmt_duration(d)),
                Some(d) => fmt_duration(d),
                None => "-".into(),
            };
            row.push(cell);
        }
        row.push(r.detail.clone());
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    let _ = writeln!(
        out,
        "\n{} checks, {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
    out
}

/// One check as kept in a baseline file (the JSON report's fields we compare).
#[derive(Debug, Deserialize)]
struct BaselineCheck {
    target: String,
    route: String,
    reason: FailureReason,
}

/// Compares `results` with a baseline file written by `--record-baseline`
/// (the JSON report). Returns the lines to print.
pub fn compare_baseline(path: &Path, results: &[ProbeOutcome]) -> Result<Vec<String>, String> {
    let text = crate::files::read_text(path, 16 * 1024 * 1024)?;
    let checks: Vec<BaselineCheck> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not a baseline written by --record-baseline: {e}",
            path.display()
        )
    })?;
    let before: BTreeMap<(String, String), FailureReason> = checks
        .into_iter()
        .map(|c| ((c.target, c.route), c.reason))
        .collect();
    let mut lines = Vec::new();
    for r in results {
        let key = (r.target.clone(), r.route.clone());
        match before.get(&key) {
            None => lines.push(format!(
                "{}/{}: new check, now {}",
                r.target, r.route, r.reason
            )),
            Some(was) if *was != r.reason => {
                let verdict = match (was, r.reason) {
                    (FailureReason::Ok, _) => "REGRESSED",
                    (_, FailureReason::Ok) => "recovered",
                    _ => "changed",
                };
                lines.push(format!(
                    "{}/{}: {verdict}: {was} -> {}",
                    r.target, r.route, r.reason
                ));
            }
            Some(_) => {}
        }
    }
    for (target, route) in before.keys() {
        if !results
            .iter()
            .any(|r| &r.target == target && &r.route == route)
        {
            lines.push(format!("{target}/{route}: no longer checked"));
        }
    }
    Ok(lines)
}
