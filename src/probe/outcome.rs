//! [`ProbeOutcome`]: the typed result of one probe of one target over one
//! route — the reason, the human detail, the phase that failed, every phase
//! time, and what the proxy, TLS and HTTP layers said. Reports, metrics and
//! health all read this one struct.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::dial::addresses::AddressCheck;

use crate::dial::tls::{AnchorInfo, CertInfo, TrustVerdict};
use crate::dial::{ConnectReply, Phases};
use crate::reason::{FailureReason, Phase};

/// The result of one probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeOutcome {
    /// The target's name.
    pub target: String,
    /// The route's name.
    pub route: String,
    /// True when every stage passed and every expectation held.
    pub ok: bool,
    /// Why it failed (`ok` when it did not).
    pub reason: FailureReason,
    /// What happened, in words: the CONNECT reply, the TLS error and the
    /// certificate, the HTTP status...
    pub detail: String,
    /// The phase that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_phase: Option<Phase>,
    /// The proxy's CONNECT status.
    pub connect_status: Option<u16>,
    /// The proxy's CONNECT reply (status line and diagnostic headers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_reply: Option<ConnectReply>,
    /// The upstream's HTTP status.
    pub http_status: Option<u16>,
    /// The protocol ALPN negotiated with the upstream.
    pub alpn: Option<String>,
    /// Phase durations, in seconds.
    pub phases: Phases,
    /// The whole probe, in seconds.
    #[serde(rename = "duration_seconds", serialize_with = "secs")]
    pub duration: Duration,
    /// The upstream's certificate (also when it was refused); its
    /// `sha256` is the fingerprint reports and baselines compare.
    pub peer_cert: Option<CertInfo>,
    /// The trust anchor the upstream's chain validated through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<AnchorInfo>,
    /// The anchors the target expects, in words (`the public roots`, `expect_ca FILE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_anchor: Option<String>,
    /// True when the chain validated through an anchor the target does not
    /// expect: something on this route re-signs TLS. `None` when no chain
    /// was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intercepted: Option<bool>,
    /// When the probe started (Unix seconds).
    #[serde(rename = "started_at", serialize_with = "unix")]
    pub started: SystemTime,
    /// Each address of a proxy's name, checked on its own (empty for direct
    /// routes and single-address proxies).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proxy_addresses: Vec<AddressCheck>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn unix<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    s.serialize_f64(secs)
}

/// Outcomes are equal when they say the same thing about the same pair
/// (timings and timestamps aside): what health events compare.
impl PartialEq for ProbeOutcome {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target
            && self.route == other.route
            && self.reason == other.reason
            && self.detail == other.detail
    }
}

impl ProbeOutcome {
    /// An outcome observed outside a probe (app traffic through the forward
    /// proxy, a scripted test): no phases, no HTTP layer.
    pub fn observed(
        target: &str,
        route: &str,
        reason: FailureReason,
        detail: impl Into<String>,
    ) -> Self {
        let ok = reason == FailureReason::Ok;
        Self {
            target: target.to_string(),
            route: route.to_string(),
            ok,
            reason,
            detail: detail.into(),
            failed_phase: None,
            connect_status: None,
            proxy_reply: None,
            http_status: None,
            alpn: None,
            phases: Phases::default(),
            duration: Duration::ZERO,
            peer_cert: None,
            anchor: None,
            expected_anchor: None,
            intercepted: None,
            started: SystemTime::now(),
            proxy_addresses: Vec::new(),
        }
    }

    /// Fills the trust fields from a handshake's verdict.
    pub fn set_trust(&mut self, verdict: Option<TrustVerdict>) {
        match verdict {
            Some(v) => {
                self.anchor = Some(v.anchor);
                self.expected_anchor = Some(v.expected);
                self.intercepted = Some(v.intercepted);
            }
            None => {
                self.anchor = None;
                self.expected_anchor = None;
                self.intercepted = None;
            }
        }
    }
}

/// A failed stage, before it becomes an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The reason.
    pub reason: FailureReason,
    /// The phase that failed.
    pub phase: Phase,
    /// The detail, in words.
    pub detail: String,
}

impl Failure {
    /// A failure of `phase` for `reason`.
    pub fn new(reason: FailureReason, phase: Phase, detail: impl Into<String>) -> Self {
        Self {
            reason,
            phase,
            detail: detail.into(),
        }
    }
}
