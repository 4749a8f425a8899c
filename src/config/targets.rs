//! Compiling `[[target]]` tables: the preset, the request, the
//! expectations, the routes, TLS toward the upstream (trust, the expected
//! anchor, client certificate, ALPN), certificate expiry thresholds, and
//! the host patterns app traffic is matched by.
//!
//! A client certificate file that cannot be read is not a configuration
//! error: the target keeps the error (for the metric, the log and
//! `verify`) and probes without a certificate. Only contradictory keys are
//! refused here.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use rustls::RootCertStore;
use toml::Spanned;

use super::compile::{Compiler, Result};
use super::raw::{RawTarget, RawTls, StatusSpec};
use super::{
    BodyMatch, Endpoint, HostPattern, Http2Mode, ProbeSettings, Route, StatusSet, Target, presets,
};
use crate::dial::identity::{ClientCert, IdentityFiles};
use crate::dial::tls::{self, TlsClient, TrustExpectation};
use crate::policy::Cidr;

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

impl Compiler<'_> {
    pub(super) fn target(
        &self,
        i: usize,
        t: &RawTarget,
        tls_defaults: &RawTls,
        base_roots: &Arc<RootCertStore>,
        routes: &[Arc<Route>],
        probe: &ProbeSettings,
    ) -> Result<Target> {
        let key = |k: &str| format!("target[{i}].{k}");
        let at = span_of(t);
        let preset = match &t.preset {
            Some(p) => Some(presets::find(p.get_ref()).ok_or_else(|| {
                self.err(
                    p.span(),
                    &key("preset"),
                    format!(
                        "unknown preset `{}`: expected one of {}",
                        p.get_ref(),
                        presets::names()
                    ),
                )
            })?),
            None => None,
        };
        let endpoint = match (&t.url, preset) {
            (Some(u), _) => self.endpoint(u.get_ref(), u.span(), &key("url"))?,
            (None, Some(p)) => self.endpoint(p.url, at.clone(), &key("preset"))?,
            (None, None) => {
                return Err(self.err(
                    at.clone(),
                    &key("url"),
                    "a target needs a url (or a preset)",
                ));
            }
        };
        let name = match &t.name {
            Some(n) => self.name(n, &key("name"))?,
            None => derived_name(preset.map(|p| p.name), &endpoint.host),
        };
        let method = match (&t.method, preset) {
            (Some(m), _) => Method::from_bytes(m.get_ref().as_bytes()).map_err(|_| {
                self.err(
                    m.span(),
                    &key("method"),
                    "not an HTTP method (e.g. \"GET\")",
                )
            })?,
            (None, Some(p)) => Method::from_bytes(p.method.as_bytes()).unwrap_or(Method::GET),
            (None, None) => Method::GET,
        };
        let mut headers = Vec::new();
        if let Some(p) = preset {
            for (n, v) in p.headers {
                headers.push((HeaderName::from_static(n), HeaderValue::from_static(v)));
            }
        }
        if let Some(h) = &t.headers {
            for (n, v) in h.get_ref() {
                let bad = |what: &str| {
                    self.err(h.span(), &key("headers"), format!("header `{n}`: {what}"))
                };
                let name = HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| bad("not a valid header name"))?;
                let value =
                    HeaderValue::from_str(v).map_err(|_| bad("not a valid header value"))?;
                headers.retain(|(existing, _)| *existing != name);
                headers.push((name, value));
            }
        }
        let body = match (&t.body, preset) {
            (Some(b), _) => Bytes::from(b.clone()),
            (None, Some(p)) => Bytes::from_static(p.body.as_bytes()),
            (None, None) => Bytes::new(),
        };
        let expect_status = match (&t.expect_status, preset) {
            (Some(s), _) => self.statuses(s, &key("expect_status"))?,
            (None, Some(p)) => StatusSet(p.expect_status.iter().map(|c| (*c, *c)).collect()),
            (None, None) => StatusSet(vec![(200, 399)]),
        };
        let expect_body = match (&t.expect_body, &t.expect_body_regex, preset) {
            (Some(_), Some(r), _) => {
                return Err(self.err(
                    r.span(),
                    &key("expect_body_regex"),
                    "set expect_body or expect_body_regex, not both",
                ));
            }
            (Some(s), None, _) => Some(BodyMatch::Substring(s.get_ref().clone())),
            (None, Some(r), _) => Some(BodyMatch::Regex(regex::Regex::new(r.get_ref()).map_err(
                |e| {
                    self.err(
                        r.span(),
                        &key("expect_body_regex"),
                        format!("not a valid regular expression: {e}"),
                    )
                },
            )?)),
            (None, None, Some(p)) => p.expect_body.map(|s| BodyMatch::Substring(s.to_string())),
            (None, None, None) => None,
        };
        let target_routes =
            self.route_list(t.routes.as_ref(), routes, &key("routes"), at.clone())?;
        let timeout = self
            .duration(t.timeout.as_ref(), &key("timeout"))?
            .unwrap_or(probe.timeout);
        let http2 = match (&t.http2, preset) {
            (Some(h), _) => match h.get_ref().as_str() {
                "auto" => Http2Mode::Auto,
                "required" => Http2Mode::Required,
                "never" => Http2Mode::Never,
                other => {
                    return Err(self.err(
                        h.span(),
                        &key("http2"),
                        format!("`{other}`: expected \"auto\", \"required\" or \"never\""),
                    ));
                }
            },
            (None, Some(p)) if p.http2_required => Http2Mode::Required,
            _ => Http2Mode::Auto,
        };
        let (tls, client_cert) = self.target_tls(i, t, base_roots, http2)?;
        let client_cert_not_after = client_cert
            .as_ref()
            .and_then(|c| c.leaf())
            .map(|c| c.not_after_unix);
        let cert_thresholds = self.thresholds(i, t, tls_defaults)?;
        let mut hosts = Vec::new();
        if let Some(hs) = &t.hosts {
            for h in hs.get_ref() {
                hosts.push(self.host_pattern(h, &key("hosts"))?);
            }
        }
        let mut allow_addresses = Vec::new();
        for a in t.allow_addresses.iter().flatten() {
            allow_addresses.push(
                a.get_ref()
                    .parse::<Cidr>()
                    .map_err(|e| self.err(a.span(), &key("allow_addresses"), e.to_string()))?,
            );
        }
        let route_prints: Vec<u64> = target_routes.iter().map(|r| r.fingerprint).collect();
        let failover_on_degraded = t
            .failover_on_degraded
            .unwrap_or_else(|| target_routes.iter().any(|r| r.is_direct()));
        Ok(Target {
            fingerprint: self.fingerprint("target", i, &route_prints),
            name,
            preset: preset.map(|p| p.name),
            endpoint,
            method,
            headers,
            body,
            expect_status,
            expect_body,
            routes: target_routes,
            timeout,
            tls,
            http2,
            hosts,
            failover_on_degraded,
            allow_addresses,
            client_cert_not_after,
            client_cert,
            cert_thresholds,
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

    fn target_tls(
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
                    .map_err(|m| self.err(ca.span(), &key("expect_ca"), m))?;
                TrustExpectation::named(&path, &certs)
                    .map_err(|m| self.err(ca.span(), &key("expect_ca"), m))?
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
        .map_err(|m| {
            self.loc.error(
                t.client_cert.as_ref().map(|c| c.span()),
                key("client_cert"),
                m,
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

    fn endpoint(&self, text: &str, span: Range<usize>, key: &str) -> Result<Endpoint> {
        let err = |m: String| self.err(span.clone(), key, m);
        let uri: Uri = text.parse().map_err(|_| {
            err(format!(
                "`{text}` is not a URL: expected e.g. \"https://api.example/health\""
            ))
        })?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(err(format!(
                    "`{text}`: the scheme must be https:// or http://"
                )));
            }
        };
        let auth = uri
            .authority()
            .ok_or_else(|| err(format!("`{text}` has no host")))?;
        if auth.as_str().contains('@') {
            return Err(err(
                "credentials in a target URL are refused: use headers".to_string()
            ));
        }
        if auth.host().is_empty() {
            return Err(err(format!("`{text}` has no host")));
        }
        // The same parser as the forward proxy's: a target written as
        // `https://2130706433/` is the target 127.0.0.1.
        let host = crate::destination::parse_host(auth.host())
            .map_err(|e| err(format!("`{text}`: {e}")))?
            .to_string();
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        Ok(Endpoint {
            tls,
            host,
            port,
            path_and_query,
        })
    }

    fn statuses(&self, s: &Spanned<Vec<StatusSpec>>, key: &str) -> Result<StatusSet> {
        let bad = |what: String| {
            self.err(
                s.span(),
                key,
                format!("{what}: expected codes and ranges, e.g. [200, 401] or [\"200-399\"]"),
            )
        };
        let code =
            |n: i64| -> Option<u16> { u16::try_from(n).ok().filter(|c| (100..=599).contains(c)) };
        let mut set = Vec::new();
        for spec in s.get_ref() {
            let range = match spec {
                StatusSpec::Code(n) => {
                    let c = code(*n).ok_or_else(|| bad(format!("{n} is not an HTTP status")))?;
                    (c, c)
                }
                StatusSpec::Range(r) => {
                    let parsed = r.split_once('-').and_then(|(a, b)| {
                        Some((code(a.trim().parse().ok()?)?, code(b.trim().parse().ok()?)?))
                    });
                    match parsed {
                        Some((lo, hi)) if lo <= hi => (lo, hi),
                        _ => return Err(bad(format!("`{r}` is not a status range"))),
                    }
                }
            };
            set.push(range);
        }
        if set.is_empty() {
            return Err(bad("the list is empty".to_string()));
        }
        Ok(StatusSet(set))
    }

    fn host_pattern(&self, h: &Spanned<String>, key: &str) -> Result<HostPattern> {
        let text = h.get_ref().to_ascii_lowercase();
        let body = text.strip_prefix("*.").unwrap_or(&text);
        let ok = !body.is_empty()
            && !body.contains('*')
            && body
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            return Err(self.err(
                h.span(),
                key,
                format!(
                    "`{}` is not a host pattern: expected \"api.example\" or \"*.example\"",
                    h.get_ref()
                ),
            ));
        }
        Ok(HostPattern(text))
    }
}

/// Where a target's errors point when no single key is at fault: its
/// name, else its preset, else its URL.
pub(super) fn span_of(t: &RawTarget) -> Range<usize> {
    t.name
        .as_ref()
        .or(t.preset.as_ref())
        .or(t.url.as_ref())
        .map_or(0..0, Spanned::span)
}

/// The name of a target written without one: its preset's (`apns`), else
/// its URL's host (`api.sms.example`), kept to the characters and length a
/// name allows.
fn derived_name(preset: Option<&str>, host: &str) -> String {
    let base = preset.unwrap_or(host);
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(super::compile::MAX_NAME_LEN)
        .collect()
}
