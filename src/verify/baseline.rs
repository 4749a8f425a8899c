//! The baseline file: what `verify --record-baseline FILE` writes before a
//! provider change, and what `--baseline FILE` reads back after it.
//!
//! A baseline keeps, per target × route, what identifies the path: the
//! reason, the proxy's CONNECT status, `Via` and `Server`, the proxy's
//! resolved addresses, the HTTP status, ALPN, the upstream certificate
//! (subject, issuer, fingerprint, expiry), the trust anchor and the
//! interception verdict, and the phase times.
//!
//! Owns the file's versioned JSON layout ([`FORMAT`], [`VERSION`]) and the
//! messages that refuse an older or a foreign file, saying what it is. It
//! never compares two runs: that is [`drift`](super::drift).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Report;
use crate::dial::tls::{AnchorInfo, rfc3339};
use crate::probe::ProbeOutcome;
use crate::reason::{FailureReason, Phase};

/// The `format` field of a baseline file.
pub const FORMAT: &str = "egress-sentinel-baseline";
/// The baseline layout this build writes and reads.
pub const VERSION: u32 = 1;
/// The largest baseline file read.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// A baseline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Always [`FORMAT`].
    pub format: String,
    /// The layout version ([`VERSION`]).
    pub version: u32,
    /// When it was recorded, RFC 3339 UTC.
    pub recorded_at: String,
    /// The egress-sentinel version that recorded it.
    pub recorded_by: String,
    /// One entry per target × route.
    pub checks: Vec<BaselineCheck>,
}

/// What a baseline keeps of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineCheck {
    /// The target.
    pub target: String,
    /// The route.
    pub route: String,
    /// The reason (`ok` when it passed).
    pub reason: FailureReason,
    /// The proxy's CONNECT status.
    #[serde(default)]
    pub connect_status: Option<u16>,
    /// The proxy's `Via` header.
    #[serde(default)]
    pub proxy_via: Option<String>,
    /// The proxy's `Server` header.
    #[serde(default)]
    pub proxy_server: Option<String>,
    /// The proxy's addresses as resolved (empty for `direct`).
    #[serde(default)]
    pub proxy_addresses: Vec<String>,
    /// The upstream's HTTP status.
    #[serde(default)]
    pub http_status: Option<u16>,
    /// The negotiated ALPN protocol.
    #[serde(default)]
    pub alpn: Option<String>,
    /// The upstream certificate's subject.
    #[serde(default)]
    pub peer_subject: Option<String>,
    /// Its issuer.
    #[serde(default)]
    pub peer_issuer: Option<String>,
    /// Its SHA-256 fingerprint.
    #[serde(default)]
    pub peer_sha256: Option<String>,
    /// Its expiry, RFC 3339.
    #[serde(default)]
    pub peer_not_after: Option<String>,
    /// The trust anchor the chain validated through.
    #[serde(default)]
    pub anchor: Option<AnchorInfo>,
    /// The interception verdict.
    #[serde(default)]
    pub intercepted: Option<bool>,
    /// Phase times in seconds, by phase label.
    #[serde(default)]
    pub phases: BTreeMap<String, f64>,
    /// The check's detail, for context.
    #[serde(default)]
    pub detail: String,
}

impl BaselineCheck {
    /// What a baseline keeps of `o`, whose proxy resolved to `proxy_addresses`.
    pub fn of(o: &ProbeOutcome, proxy_addresses: &[String]) -> Self {
        let reply = o.proxy_reply.as_ref();
        Self {
            target: o.target.clone(),
            route: o.route.clone(),
            reason: o.reason,
            connect_status: o.connect_status,
            proxy_via: reply.and_then(|r| r.via.clone()),
            proxy_server: reply.and_then(|r| r.server.clone()),
            proxy_addresses: proxy_addresses.to_vec(),
            http_status: o.http_status,
            alpn: o.alpn.clone(),
            peer_subject: o.peer_cert.as_ref().map(|c| c.subject.clone()),
            peer_issuer: o.peer_cert.as_ref().map(|c| c.issuer.clone()),
            peer_sha256: o.peer_cert.as_ref().map(|c| c.sha256.clone()),
            peer_not_after: o.peer_cert.as_ref().map(|c| c.not_after.clone()),
            anchor: o.anchor.clone(),
            intercepted: o.intercepted,
            phases: Phase::ALL
                .iter()
                .filter_map(|p| Some((p.as_str().to_string(), o.phases.get(*p)?.as_secs_f64())))
                .collect(),
            detail: o.detail.clone(),
        }
    }
}

impl Baseline {
    /// The baseline of `report`, recorded at `now` (Unix seconds).
    pub fn record(report: &Report, now: i64) -> Self {
        Self {
            format: FORMAT.to_string(),
            version: VERSION,
            recorded_at: rfc3339(now),
            recorded_by: env!("CARGO_PKG_VERSION").to_string(),
            checks: report
                .checks
                .iter()
                .map(|c| BaselineCheck::of(c, report.proxy_addresses_of(&c.route)))
                .collect(),
        }
    }

    /// The file text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Reads a baseline; the error says what the file is and what to do.
    pub fn load(path: &Path) -> Result<Self, BaselineError> {
        let text = crate::files::read_text(path, MAX_FILE)?;
        Self::parse(path, &text)
    }

    /// Parses baseline text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, BaselineError> {
        let path = path.to_path_buf();
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(source) => return Err(BaselineError::NotJson { path, source }),
        };
        match &value {
            serde_json::Value::Array(_) => return Err(BaselineError::OlderReport { path }),
            serde_json::Value::Object(m) => match m.get("format").and_then(|f| f.as_str()) {
                Some(FORMAT) => {}
                _ => return Err(BaselineError::NoFormat { path }),
            },
            _ => return Err(BaselineError::Foreign { path }),
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(version) if version > u64::from(VERSION) => {
                return Err(BaselineError::Newer { path, version });
            }
            version => return Err(BaselineError::Unknown { path, version }),
        }
        serde_json::from_value(value).map_err(|source| BaselineError::Damaged { path, source })
    }
}

/// What to do about a baseline that cannot be used.
const RECORD_AGAIN: &str =
    "record a new one with `verify --record-baseline FILE` before the change";

/// Why a baseline file cannot be used: what the file is, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The file could not be read.
    #[error(transparent)]
    Unreadable(#[from] crate::files::ReadError),
    /// The file is not JSON.
    #[error("{} is not a baseline: not JSON ({source}): {RECORD_AGAIN}", path.display())]
    NotJson {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
    /// A report from before baselines had a format.
    #[error(
        "{} is a report from an older egress-sentinel (a plain JSON array of checks, no format version), which kept only reasons: {RECORD_AGAIN}",
        path.display()
    )]
    OlderReport {
        /// The file.
        path: PathBuf,
    },
    /// A JSON object without our `format`.
    #[error(
        "{} is not an egress-sentinel baseline (no \"format\": \"{FORMAT}\"): {RECORD_AGAIN}",
        path.display()
    )]
    NoFormat {
        /// The file.
        path: PathBuf,
    },
    /// JSON that is neither an array nor an object.
    #[error("{} is not an egress-sentinel baseline: {RECORD_AGAIN}", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// A baseline from a newer layout.
    #[error(
        "{} is a baseline version {version}, written by a newer egress-sentinel; this one reads version {VERSION}: use the newer binary or {RECORD_AGAIN}",
        path.display()
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// The version it says.
        version: u64,
    },
    /// A baseline with no version, or one this build never wrote.
    #[error(
        "{} has baseline version {}, which this egress-sentinel does not read (it reads {VERSION}): {RECORD_AGAIN}",
        path.display(),
        version.map_or("none".to_string(), |v| v.to_string())
    )]
    Unknown {
        /// The file.
        path: PathBuf,
        /// The version it says, if any.
        version: Option<u64>,
    },
    /// A baseline whose checks do not parse.
    #[error("{} is a damaged baseline ({source}): {RECORD_AGAIN}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_and_foreign_files_are_refused_with_what_they_are() {
        let p = Path::new("b.json");
        let old = Baseline::parse(p, r#"[{"target":"a","route":"b","reason":"ok"}]"#)
            .expect_err("old")
            .to_string();
        assert!(old.contains("older egress-sentinel"), "{old}");
        let foreign = Baseline::parse(p, r#"{"hello":1}"#)
            .expect_err("foreign")
            .to_string();
        assert!(
            foreign.contains("not an egress-sentinel baseline"),
            "{foreign}"
        );
        let newer = Baseline::parse(
            p,
            &format!(r#"{{"format":"{FORMAT}","version":9,"checks":[]}}"#),
        )
        .expect_err("newer")
        .to_string();
        assert!(newer.contains("newer egress-sentinel"), "{newer}");
        let junk = Baseline::parse(p, "not json")
            .expect_err("junk")
            .to_string();
        assert!(junk.contains("not JSON"), "{junk}");
    }
}
