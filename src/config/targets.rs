//! Compiling `[[target]]` tables: the preset, the request, the
//! expectations, the routes, TLS toward the upstream (trust, client
//! certificate, ALPN) and the host patterns app traffic is matched by.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use rustls::RootCertStore;
use toml::Spanned;

use super::compile::{Compiler, Result};
use super::raw::{RawTarget, StatusSpec};
use super::{
    BodyMatch, Endpoint, HostPattern, Http2Mode, ProbeSettings, Route, StatusSet, Target, presets,
};
use crate::dial::tls::{self, TlsClient};
use crate::policy::Cidr;

impl Compiler<'_> {
    pub(super) fn target(
        &self,
        i: usize,
        t: &RawTarget,
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
        let (tls, client_cert_not_after) = self.target_tls(i, t, base_roots, http2)?;
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
        })
    }

    fn target_tls(
        &self,
        i: usize,
        t: &RawTarget,
        base_roots: &Arc<RootCertStore>,
        http2: Http2Mode,
    ) -> Result<(TlsClient, Option<i64>)> {
        let key = |k: &str| format!("target[{i}].{k}");
        let roots = match &t.ca_file {
            Some(ca) => {
                let mut store = (**base_roots).clone();
                self.add_ca(&mut store, ca, &key("ca_file"))?;
                Arc::new(store)
            }
            None => base_roots.clone(),
        };
        if let Some(p) = &t.client_cert_password_file {
            return Err(self.err(
                p.span(),
                &key("client_cert_password_file"),
                "PKCS#12 client certificates are not supported yet: convert with `openssl pkcs12 -in cert.p12 -nodes -out cert.pem` and set client_cert and client_key to the PEM files",
            ));
        }
        let (identity, not_after) = match (&t.client_cert, &t.client_key) {
            (Some(c), Some(k)) => {
                let id = tls::load_identity(&self.file(c.get_ref()), &self.file(k.get_ref()))
                    .map_err(|m| self.err(c.span(), &key("client_cert"), m))?;
                let not_after = tls::cert_not_after(&id.0[0]);
                (Some(id), not_after)
            }
            (Some(c), None) => {
                return Err(self.err(
                    c.span(),
                    &key("client_key"),
                    "client_cert needs client_key (the PEM private key)",
                ));
            }
            (None, Some(k)) => {
                return Err(self.err(
                    k.span(),
                    &key("client_cert"),
                    "client_key needs client_cert (the PEM certificate chain)",
                ));
            }
            (None, None) => (None, None),
        };
        let alpn: Vec<Vec<u8>> = match http2 {
            Http2Mode::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Http2Mode::Required => vec![b"h2".to_vec()],
            Http2Mode::Never => vec![b"http/1.1".to_vec()],
        };
        let client = TlsClient::new(roots, identity, alpn).map_err(|m| {
            self.loc.error(
                t.client_cert.as_ref().map(|c| c.span()),
                key("client_cert"),
                m,
            )
        })?;
        Ok((client, not_after))
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
