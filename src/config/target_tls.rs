//! TLS toward a target's upstream: the trust store (`[tls]` roots plus the
//! target's `ca_file`), the expected anchor (`expect_ca`), the client
//! certificate, the ALPN its HTTP/2 mode offers, and how close to expiry a
//! certificate warns and fails.
//!
//! A client certificate file that cannot be read is not a configuration
//! error: the target keeps the error (for the metric, the log and
//! `verify`) and probes without a certificate. Only contradictory keys are
//! refused here. It never opens a connection: the handshake is `dial`'s.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;

use super::Http2Mode;
use super::compile::{Compiler, Result};
use super::presets::Preset;
use super::raw::{RawTarget, RawTls};
use super::targets::span_of;
use crate::dial::identity::{ClientCert, IdentityFiles};
use crate::dial::tls::{self, TlsClient, TrustExpectation};

/// The longest `warn_before`/`fail_before`: certificates live a year or two.
const MAX_CERT_THRESHOLD: Duration = Duration::from_secs(3 * 365 * 86_400);

/// How close to expiry a certificate must be to warn, and to fail `verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertThresholds {
    /// Inside this window: a warning.
    pub warn_before: Duration,
    /// Inside this window: a failure (never longer than `warn_before`).
    pub fail_before: Duration,
}

impl Default for CertThresholds {
    fn default() -> Self {
        Self {
            warn_before: Duration::from_secs(30 * 86_400),
            fail_before: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Where a certificate's expiry stands against the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertLevel {
    /// Further away than `warn_before`.
    Ok,
    /// Inside `warn_before`.
    Warn,
    /// Inside `fail_before`, or already expired.
    Fail,
}

/// `7d`, `36h`, `90m`, `45s`: the largest whole unit, for messages.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl CertThresholds {
    /// The level of a certificate expiring at `not_after` (Unix seconds) at `now`.
    pub fn level(&self, not_after: i64, now: i64) -> CertLevel {
        let left = not_after.saturating_sub(now);
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        if left <= secs(self.fail_before) {
            CertLevel::Fail
        } else if left <= secs(self.warn_before) {
            CertLevel::Warn
        } else {
            CertLevel::Ok
        }
    }
}

/// TLS toward a target's upstream.
pub(super) struct UpstreamTls {
    /// Trust, expected anchor, client certificate and ALPN.
    pub(super) tls: TlsClient,
    /// When HTTP/2 is used (it sets the ALPN offered).
    pub(super) http2: Http2Mode,
    /// The client certificate: its files and what reading them gave.
    pub(super) client_cert: Option<ClientCert>,
    /// When the client certificate's leaf expires (Unix seconds).
    pub(super) client_cert_not_after: Option<i64>,
    /// When certificate expiry warns and fails.
    pub(super) cert_thresholds: CertThresholds,
}

// === impl Compiler ===

impl Compiler<'_> {
    /// TLS toward the upstream: the HTTP/2 mode (which sets ALPN), the
    /// client, its client certificate, and the expiry thresholds.
    pub(super) fn upstream_tls(
        &self,
        i: usize,
        t: &RawTarget,
        preset: Option<&Preset>,
        tls_defaults: &RawTls,
        base_roots: &Arc<RootCertStore>,
    ) -> Result<UpstreamTls> {
        let http2 = match (&t.http2, preset) {
            (Some(h), _) => match h.get_ref().as_str() {
                "auto" => Http2Mode::Auto,
                "required" => Http2Mode::Required,
                "never" => Http2Mode::Never,
                other => {
                    return Err(self.err(
                        h.span(),
                        &format!("target[{i}].http2"),
                        format!("`{other}`: expected \"auto\", \"required\" or \"never\""),
                    ));
                }
            },
            (None, Some(p)) if p.http2_required => Http2Mode::Required,
            _ => Http2Mode::Auto,
        };
        let (tls, client_cert) = self.tls_client(i, t, base_roots, http2)?;
        let client_cert_not_after = client_cert
            .as_ref()
            .and_then(|c| c.leaf())
            .map(|c| c.not_after_unix);
        Ok(UpstreamTls {
            tls,
            http2,
            client_cert,
            client_cert_not_after,
            cert_thresholds: self.thresholds(i, t, tls_defaults)?,
        })
    }

    /// `warn_before`/`fail_before`: the target's, else `[tls]`'s, else 30 and 7 days.
    fn thresholds(&self, i: usize, t: &RawTarget, tls: &RawTls) -> Result<CertThresholds> {
        let defaults = CertThresholds::default();
        let own = |k: &str| format!("target[{i}].{k}");
        let warn = match &t.warn_before {
            Some(v) => Some((v, own("warn_before"))),
            None => tls
                .warn_before
                .as_ref()
                .map(|v| (v, "tls.warn_before".to_string())),
        };
        let fail = match &t.fail_before {
            Some(v) => Some((v, own("fail_before"))),
            None => tls
                .fail_before
                .as_ref()
                .map(|v| (v, "tls.fail_before".to_string())),
        };
        let mut out = defaults;
        if let Some((v, key)) = &warn {
            out.warn_before = self
                .duration_up_to(Some(v), key, MAX_CERT_THRESHOLD)?
                .unwrap_or(defaults.warn_before);
        }
        if let Some((v, key)) = &fail {
            out.fail_before = self
                .duration_up_to(Some(v), key, MAX_CERT_THRESHOLD)?
                .unwrap_or(defaults.fail_before);
        }
        if out.fail_before > out.warn_before {
            // Point at what was written: fail_before if set, else warn_before.
            let (span, key) = match (&fail, &warn) {
                (Some((v, key)), _) | (None, Some((v, key))) => (v.span(), key.clone()),
                (None, None) => (span_of(t), own("fail_before")),
            };
            return Err(self.err(
                span,
                &key,
                format!(
                    "fail_before ({}) is longer than warn_before ({}): a certificate must warn before it fails",
                    human_duration(out.fail_before),
                    human_duration(out.warn_before)
                ),
            ));
        }
        Ok(out)
    }

    fn tls_client(
        &self,
        i: usize,
        t: &RawTarget,
        base_roots: &Arc<RootCertStore>,
        http2: Http2Mode,
    ) -> Result<(TlsClient, Option<ClientCert>)> {
        let key = |k: &str| format!("target[{i}].{k}");
        let mut store = None;
        if let Some(ca) = &t.ca_file {
            let s = store.get_or_insert_with(|| (**base_roots).clone());
            self.add_ca(s, ca, &key("ca_file"))?;
        }
        // The expected CA is trusted too: naming it is enough for an internal upstream.
        let expectation = match &t.expect_ca {
            Some(ca) => {
                let s = store.get_or_insert_with(|| (**base_roots).clone());
                self.add_ca(s, ca, &key("expect_ca"))?;
                let path = self.file(ca.get_ref());
                let certs = tls::load_ca_file(&path)
                    .map_err(|e| self.err(ca.span(), &key("expect_ca"), e.to_string()))?;
                TrustExpectation::named(&path, &certs)
                    .map_err(|e| self.err(ca.span(), &key("expect_ca"), e.to_string()))?
            }
            None => TrustExpectation::PublicRoots,
        };
        let roots = store.map(Arc::new).unwrap_or_else(|| base_roots.clone());
        let client_cert = self.client_cert_files(i, t)?.map(ClientCert::read);
        let alpn: Vec<Vec<u8>> = match http2 {
            Http2Mode::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Http2Mode::Required => vec![b"h2".to_vec()],
            Http2Mode::Never => vec![b"http/1.1".to_vec()],
        };
        let (cert, identity) = match client_cert {
            Some((c, id)) => (Some(c), id),
            None => (None, None),
        };
        let client = TlsClient::new(
            roots,
            identity.map(|id| (id.certs, id.key.expose().clone_key())),
            alpn,
        )
        .map_err(|e| {
            self.loc.error(
                t.client_cert.as_ref().map(|c| c.span()),
                key("client_cert"),
                e.to_string(),
            )
        })?;
        Ok((client.expecting(expectation), cert))
    }

    /// Which files make the client identity; refuses contradictory keys.
    fn client_cert_files(&self, i: usize, t: &RawTarget) -> Result<Option<IdentityFiles>> {
        let key = |k: &str| format!("target[{i}].{k}");
        match (&t.client_cert, &t.client_key, &t.client_cert_password_file) {
            (_, Some(_), Some(p)) => Err(self.err(
                p.span(),
                &key("client_cert_password_file"),
                "a PKCS#12 client_cert holds its own key: set client_key with a PEM client_cert, or client_cert_password_file with a PKCS#12 one, not both",
            )),
            (None, Some(k), None) => Err(self.err(
                k.span(),
                &key("client_cert"),
                "client_key needs client_cert (the PEM certificate chain)",
            )),
            (None, None, Some(p)) => Err(self.err(
                p.span(),
                &key("client_cert"),
                "client_cert_password_file needs client_cert (the PKCS#12 file it opens)",
            )),
            (None, None, None) => Ok(None),
            (Some(c), k, p) => Ok(Some(IdentityFiles {
                // Named files: a change to any of them rebuilds the generation.
                cert: self.file(c.get_ref()),
                key: k.as_ref().map(|k| self.file(k.get_ref())),
                password: p.as_ref().map(|p| self.file(p.get_ref())),
            })),
        }
    }
}
