//! `verify`: every target over every route it lists, once, now, at the same
//! time; a report as an aligned table or JSON, with the certificate and
//! trust findings (client certificate expiry and read errors, upstream
//! certificates against the thresholds, interception); a comparison with a
//! baseline recorded before a provider change; and the exit code.
//!
//! # Layout
//! - `mod.rs`: the run ([`run_report`]), the [`Report`] and its renderings.
//! - [`findings`]: certificate and trust findings (pure).
//! - [`credentials`]: the CREDENTIALS section (each credential checked
//!   over every route).
//! - [`baseline`]: the baseline file (versioned JSON) and what it keeps.
//! - [`drift`]: a run compared with a baseline, grouped (pure).
//! - `table`: aligned text tables.
//!
//! Uses the same prober (and so the same dialer) as the sidecar. Never
//! prints anything a probe did not produce; never prints a credential.

pub(crate) mod baseline;
pub mod credentials;
pub mod drift;
pub(crate) mod findings;
pub(crate) mod table;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::task::JoinSet;

pub use baseline::Baseline;
pub use drift::Drift;
pub use findings::{Finding, Level};

use crate::config::Config;
use crate::credential::check::Checked;
use crate::dial::{Dialer, Resolver, fmt_duration};
use crate::probe::{ProbeOutcome, ProbeRunner, Prober};
use crate::reason::Phase;

/// Exit code: every check passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: a check failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The prober a config calls for (with a dialer of its own: the `verify`
/// command has no running generation to share one with).
pub fn prober_for(config: &Config) -> Arc<dyn ProbeRunner> {
    prober_with(config, &dialer_for(config))
}

/// A dialer of its own for `config` (the `verify` command's).
pub fn dialer_for(config: &Config) -> Dialer {
    Dialer::new(Resolver::new(config.resolve.clone()))
}

/// The prober of `config` dialing with `dialer`.
pub fn prober_with(config: &Config, dialer: &Dialer) -> Arc<dyn ProbeRunner> {
    Arc::new(Prober::new(dialer.clone(), config.probe.max_body))
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

/// The exit code for a set of results alone (no findings).
pub fn exit_code(results: &[ProbeOutcome]) -> u8 {
    if results.iter().all(|r| r.ok) {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// The addresses each proxy route's host resolves to now (what the dialer
/// would use), by route name; empty when it does not resolve in time.
pub async fn proxy_addresses(config: &Config) -> BTreeMap<String, Vec<String>> {
    let resolver = Resolver::new(config.resolve.clone());
    let mut out = BTreeMap::new();
    for route in &config.routes {
        let Some(proxy) = route.proxy() else { continue };
        let found = tokio::time::timeout(
            route.connect_timeout,
            resolver.resolve(&proxy.host, proxy.port),
        )
        .await;
        let mut addrs: Vec<String> = match found {
            Ok(Ok(a)) => a.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        };
        addrs.sort();
        addrs.dedup();
        out.insert(route.name.clone(), addrs);
    }
    out
}

/// One `verify` run: the checks, the findings, and the drift when compared.
#[derive(Debug, Clone)]
pub struct Report {
    /// One outcome per target × route, in config order.
    pub checks: Vec<ProbeOutcome>,
    /// Certificate and trust findings.
    pub findings: Vec<Finding>,
    /// Each proxy route's resolved addresses.
    pub proxy_addresses: BTreeMap<String, Vec<String>>,
    /// The comparison with a baseline, when one was given.
    pub drift: Option<Drift>,
    /// Each credential checked over each route of its target.
    pub credentials: Vec<Checked>,
    /// Each credential's kind, by target.
    kinds: BTreeMap<String, &'static str>,
}

/// Runs every check and resolves the proxies, at the same time, and judges
/// the results at `now` (Unix seconds).
pub async fn run_report(config: &Config, prober: &Arc<dyn ProbeRunner>, now: i64) -> Report {
    let (checks, proxy_addresses) =
        tokio::join!(run_checks(config, prober), proxy_addresses(config));
    Report::new(config, checks, proxy_addresses, now)
}

/// [`run_report`], with every credential checked over every route of its
/// target at the same time, dialing with `dialer`.
pub async fn run_full_report(
    config: &Config,
    prober: &Arc<dyn ProbeRunner>,
    dialer: &Dialer,
    now: i64,
) -> Report {
    let (report, creds) = tokio::join!(
        run_report(config, prober, now),
        credentials::run(config, dialer)
    );
    report.with_credentials(config, creds, now)
}

/// A check as the JSON report shows it: the outcome, with its findings and
/// its drift.
#[derive(Serialize)]
struct JsonCheck<'a> {
    #[serde(flatten)]
    outcome: &'a ProbeOutcome,
    findings: Vec<&'a Finding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drift: Option<Vec<&'a drift::Change>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<credentials::JsonCredential<'a>>,
}

impl Report {
    /// The report of `checks` for `config` at `now`.
    pub fn new(
        config: &Config,
        checks: Vec<ProbeOutcome>,
        proxy_addresses: BTreeMap<String, Vec<String>>,
        now: i64,
    ) -> Self {
        let findings = findings::findings(config, &checks, now);
        Self {
            checks,
            findings,
            proxy_addresses,
            drift: None,
            credentials: Vec::new(),
            kinds: BTreeMap::new(),
        }
    }

    /// The report with `creds`, the credential checks, and their
    /// certificate findings at `now`.
    pub fn with_credentials(mut self, config: &Config, creds: Vec<Checked>, now: i64) -> Self {
        self.findings
            .extend(credentials::findings(config, &creds, now));
        for c in &creds {
            self.kinds
                .insert(c.target.clone(), credentials::kind_of(config, &c.target));
        }
        self.credentials = creds;
        self
    }

    /// The resolved addresses of `route`'s proxy (empty for `direct`).
    pub fn proxy_addresses_of(&self, route: &str) -> &[String] {
        self.proxy_addresses
            .get(route)
            .map_or(&[], |v| v.as_slice())
    }

    /// 1 when a check failed or a finding is FAIL, else 0. A drift report
    /// adds information; it never changes the code.
    pub fn exit_code(&self) -> u8 {
        let failed = self.checks.iter().any(|c| !c.ok)
            || !credentials::all_proven(&self.credentials)
            || self.findings.iter().any(|f| f.level == Level::Fail);
        if failed { EXIT_FAILED } else { EXIT_OK }
    }

    /// The JSON report: an array of checks; each carries its findings
    /// (the target's client certificate included) and, with a baseline,
    /// its drift.
    pub fn render_json(&self) -> String {
        let checks: Vec<JsonCheck<'_>> = self
            .checks
            .iter()
            .map(|c| JsonCheck {
                outcome: c,
                findings: self
                    .findings
                    .iter()
                    .filter(|f| {
                        f.target == c.target && f.route.as_ref().is_none_or(|r| *r == c.route)
                    })
                    .collect(),
                drift: self.drift.as_ref().map(|d| d.of(&c.target, &c.route)),
                credential: self
                    .credentials
                    .iter()
                    .find(|k| k.target == c.target && k.route == c.route)
                    .map(|k| {
                        let kind = self.kinds.get(&k.target).copied().unwrap_or("-");
                        credentials::json(k, kind)
                    }),
            })
            .collect();
        serde_json::to_string_pretty(&checks).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The table report: the checks, then the certificate and trust
    /// findings, then the trust anchors of targets whose routes disagree.
    pub fn render_table(&self) -> String {
        let mut out = render_table(&self.checks);
        if !self.credentials.is_empty() {
            out.push('\n');
            out.push_str(&credentials::rows_table(&self.kinds, &self.credentials));
        }
        if !self.findings.is_empty() {
            let mut rows = vec![vec![
                "LEVEL".to_string(),
                "TARGET".to_string(),
                "ROUTE".to_string(),
                "CERTIFICATES AND TRUST".to_string(),
            ]];
            for f in &self.findings {
                rows.push(vec![
                    f.level.as_str().to_string(),
                    f.target.clone(),
                    f.route.clone().unwrap_or_else(|| "-".to_string()),
                    f.message.clone(),
                ]);
            }
            out.push('\n');
            out.push_str(&table::aligned(&rows));
        }
        let anchors = self.anchor_rows();
        if anchors.len() > 1 {
            out.push('\n');
            out.push_str(&table::aligned(&anchors));
        }
        let count = |l: Level| self.findings.iter().filter(|f| f.level == l).count();
        if count(Level::Warn) + count(Level::Fail) > 0 {
            out.push_str(&format!(
                "\n{} certificate/trust warnings, {} failures\n",
                count(Level::Warn),
                count(Level::Fail)
            ));
        }
        out
    }

    /// Side by side, the anchors each route of a target showed, for targets
    /// with an intercepted route or routes that disagree.
    fn anchor_rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![
            [
                "TARGET",
                "ROUTE",
                "TRUST ANCHOR",
                "PUBLIC",
                "INTERCEPTED",
                "LEAF ISSUER",
                "LEAF SHA256",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        ];
        let mut targets: Vec<&str> = self.checks.iter().map(|c| c.target.as_str()).collect();
        targets.dedup();
        for t in targets {
            let mine: Vec<&ProbeOutcome> = self.checks.iter().filter(|c| c.target == t).collect();
            let intercepted = mine.iter().any(|c| c.intercepted == Some(true));
            let mut keys: Vec<Option<&str>> = mine
                .iter()
                .filter(|c| c.intercepted.is_some())
                .map(|c| c.anchor.as_ref().map(|a| a.spki_sha256.as_str()))
                .collect();
            keys.dedup();
            if !intercepted && keys.len() < 2 {
                continue;
            }
            for c in mine {
                let yes_no = |b: Option<bool>| match b {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                };
                rows.push(vec![
                    c.target.clone(),
                    c.route.clone(),
                    c.anchor.as_ref().map_or("-".into(), |a| a.subject.clone()),
                    yes_no(c.anchor.as_ref().map(|a| a.public)).to_string(),
                    yes_no(c.intercepted).to_string(),
                    c.peer_cert
                        .as_ref()
                        .map_or("-".into(), |p| p.issuer.clone()),
                    c.peer_cert
                        .as_ref()
                        .map_or("-".into(), |p| findings::short(&p.sha256).to_string()),
                ]);
            }
        }
        rows
    }
}

/// The table of checks: one aligned row per target × route.
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
    let mut out = table::aligned(&rows);
    let failed = results.iter().filter(|r| !r.ok).count();
    out.push_str(&format!(
        "\n{} checks, {} passed, {failed} failed\n",
        results.len(),
        results.len() - failed
    ));
    out
}
