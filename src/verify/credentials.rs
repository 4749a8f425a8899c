//! The CREDENTIALS section of `verify`: each target's credential checked
//! once over every route the target may use, at the same time as the
//! probes; the rows of the table, the object each JSON check carries, and
//! the certificate credential's expiry as a certificate finding. Never
//! shows a secret: only what the provider answered, sanitised.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::task::JoinSet;

use super::findings::{Finding, FindingKind};
use super::table;
use crate::config::Config;
use crate::credential::check::{self, Checked, Found};
use crate::dial::Dialer;
use crate::probe::Prober;

/// Checks every target's credential over each of its routes, at once, with
/// `dialer` (the generation's own in the sidecar). Config order.
pub async fn run(config: &Config, dialer: &Dialer) -> Vec<Checked> {
    let prober = Prober::new(dialer.clone(), config.probe.max_body);
    let mut set = JoinSet::new();
    let mut index = 0usize;
    for target in &config.targets {
        let Some(cred) = &target.credential else {
            continue;
        };
        for route in &target.routes {
            let (t, c, r, p) = (target.clone(), cred.clone(), route.clone(), prober.clone());
            let i = index;
            set.spawn(async move { (i, check::run(&p, &t, &c, &r).await) });
            index += 1;
        }
    }
    let mut out = Vec::with_capacity(index);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => out.push(r),
            Err(e) => tracing::error!(error = %e, "a credential check task failed"),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, c)| c).collect()
}

/// A credential check as the JSON report shows it.
#[derive(Debug, Serialize)]
pub struct JsonCredential<'a> {
    /// `azure-ad`, `twilio`.
    pub kind: &'static str,
    /// `proven`, `rejected`, ...
    pub result: &'static str,
    /// The failure reason (`ok` when proven).
    pub reason: Option<&'static str>,
    /// The provider's own code, on a rejection.
    pub code: Option<&'a str>,
    /// What happened.
    pub detail: &'a str,
    /// The provider's last HTTP status.
    pub http_status: Option<u16>,
    /// The credential's end of validity (Unix seconds), where known.
    pub not_after: Option<i64>,
}

/// The JSON object of `c`, whose credential is of `kind`.
pub fn json<'a>(c: &'a Checked, kind: &'static str) -> JsonCredential<'a> {
    JsonCredential {
        kind,
        result: c.found.as_str(),
        reason: c.reason.map(|r| r.as_str()),
        code: c.code.as_deref(),
        detail: &c.detail,
        http_status: c.http_status,
        not_after: c.not_after,
    }
}

/// The kind of `target`'s credential in `config`.
pub fn kind_of(config: &Config, target: &str) -> &'static str {
    config
        .target(target)
        .and_then(|t| t.credential.as_ref())
        .map_or("-", |c| c.kind_name())
}

/// True when every check proved its credential.
pub fn all_proven(checks: &[Checked]) -> bool {
    checks.iter().all(|c| c.found == Found::Proven)
}

/// The CREDENTIALS table, with each target's credential kind from `kinds`.
pub fn rows_table(kinds: &BTreeMap<String, &'static str>, checks: &[Checked]) -> String {
    let mut rows = vec![
        [
            "TARGET",
            "ROUTE",
            "KIND",
            "RESULT",
            "REASON",
            "CODE",
            "CREDENTIALS",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for c in checks {
        rows.push(vec![
            c.target.clone(),
            c.route.clone(),
            kinds.get(&c.target).copied().unwrap_or("-").to_string(),
            c.found.as_str().to_string(),
            c.reason.map_or("-", |r| r.as_str()).to_string(),
            c.code.clone().unwrap_or_else(|| "-".into()),
            c.detail.clone(),
        ]);
    }
    table::aligned(&rows)
}

/// The certificate finding of each target whose credential is a
/// certificate with a known end (from the first check that read it).
pub fn findings(config: &Config, checks: &[Checked], now: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in &config.targets {
        let Some(end) = checks
            .iter()
            .find(|c| c.target == t.name)
            .and_then(|c| c.not_after)
        else {
            continue;
        };
        let level = t.cert_thresholds.level(end, now);
        let text = crate::dial::tls::rfc3339(end);
        out.push(Finding {
            level: level.into(),
            kind: FindingKind::CredentialCertExpiry,
            target: t.name.clone(),
            route: None,
            message: format!(
                "credential certificate {}",
                super::findings::expiry_words(end, &text, now, level, &t.cert_thresholds)
            ),
        });
    }
    out
}
