//! Compiling `[[target]]` tables: the preset, the URL and name, the
//! request, the expectations, the routes, and the host patterns and
//! addresses app traffic is matched by. TLS toward the upstream is
//! `target_tls.rs`'s.
//!
//! `Compiler::target` is a short sequence of steps, each checking its own
//! keys and returning a typed value; the order of the steps is the order
//! mistakes are reported in. Nothing here reads a file or dials.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use rustls::RootCertStore;
use toml::Spanned;

use super::compile::{Compiler, Result};
use super::presets::Preset;
use super::raw::{RawTarget, RawTls, StatusSpec};
use super::{BodyMatch, Endpoint, HostPattern, ProbeSettings, Route, StatusSet, Target, presets};
use crate::policy::Cidr;

// === the values of a target's steps ===

/// What a probe sends.
struct Request {
    /// The method: the target's, else the preset's, else GET.
    method: Method,
    /// The preset's headers, overridden by the target's.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The body: the target's, else the preset's, else empty.
    body: Bytes,
}

/// What a probe's answer must show.
struct Expectations {
    /// Accepted statuses.
    status: StatusSet,
    /// The body match, if any.
    body: Option<BodyMatch>,
}

/// The routes a target's probes and traffic take.
struct TargetRoutes {
    /// In preference order.
    routes: Vec<Arc<Route>>,
    /// Whether a degraded route loses the target's traffic.
    failover_on_degraded: bool,
}

/// Which app traffic belongs to a target.
struct TrafficMatch {
    /// Destinations beyond the URL's host.
    hosts: Vec<HostPattern>,
    /// Ranges lifted from the address policy.
    allow_addresses: Vec<Cidr>,
}

// === impl Compiler ===

impl Compiler<'_> {
    /// Every `[[target]]` in file order; names (given or derived) are unique.
    pub(super) fn targets(
        &self,
        raw: &[RawTarget],
        tls_defaults: &RawTls,
        base_roots: &Arc<RootCertStore>,
        routes: &[Arc<Route>],
        probe: &ProbeSettings,
    ) -> Result<Vec<Arc<Target>>> {
        let mut targets: Vec<Arc<Target>> = Vec::new();
        for (i, t) in raw.iter().enumerate() {
            let target = self.target(i, t, tls_defaults, base_roots, routes, probe)?;
            if targets.iter().any(|o| o.name == target.name) {
                let msg = if t.name.is_some() {
                    format!(
                        "a target named \"{}\" is already defined; names must be unique",
                        target.name
                    )
                } else {
                    format!(
                        "this target has no name and would be called \"{}\" (after its preset or URL host), like an earlier one: give it a `name`",
                        target.name
                    )
                };
                return Err(self.err(span_of(t), &format!("target[{i}].name"), msg));
            }
            targets.push(Arc::new(target));
        }
        Ok(targets)
    }

    /// One `[[target]]`: a short sequence of steps, each checking its own
    /// keys. The order of the steps is the order mistakes are reported in.
    fn target(
        &self,
        i: usize,
        t: &RawTarget,
        tls_defaults: &RawTls,
        base_roots: &Arc<RootCertStore>,
        routes: &[Arc<Route>],
        probe: &ProbeSettings,
    ) -> Result<Target> {
        let preset = self.preset(i, t)?;
        let endpoint = self.target_endpoint(i, t, preset)?;
        let name = match &t.name {
            Some(n) => self.name(n, &format!("target[{i}].name"))?,
            None => derived_name(preset.map(|p| p.name), &endpoint.host),
        };
        let request = self.request(i, t, preset)?;
        let expect = self.expectations(i, t, preset)?;
        let routing = self.target_routes(i, t, routes)?;
        let timeout = self
            .duration(t.timeout.as_ref(), &format!("target[{i}].timeout"))?
            .unwrap_or(probe.timeout);
        let upstream = self.upstream_tls(i, t, preset, tls_defaults, base_roots)?;
        let traffic = self.traffic_match(i, t)?;
        let credential = self
            .credential(i, t.credential.as_ref(), &endpoint)?
            .map(Arc::new);
        let route_prints: Vec<u64> = routing.routes.iter().map(|r| r.fingerprint).collect();
        Ok(Target {
            fingerprint: self.fingerprint("target", i, &route_prints),
            name,
            preset: preset.map(|p| p.name),
            endpoint,
            method: request.method,
            headers: request.headers,
            body: request.body,
            expect_status: expect.status,
            expect_body: expect.body,
            routes: routing.routes,
            timeout,
            tls: upstream.tls,
            http2: upstream.http2,
            hosts: traffic.hosts,
            failover_on_degraded: routing.failover_on_degraded,
            allow_addresses: traffic.allow_addresses,
            client_cert_not_after: upstream.client_cert_not_after,
            client_cert: upstream.client_cert,
            cert_thresholds: upstream.cert_thresholds,
            credential,
        })
    }

    /// The preset named by `preset`, if any.
    fn preset(&self, i: usize, t: &RawTarget) -> Result<Option<&'static Preset>> {
        let Some(p) = &t.preset else { return Ok(None) };
        let preset = presets::find(p.get_ref()).ok_or_else(|| {
            self.err(
                p.span(),
                &format!("target[{i}].preset"),
                format!(
                    "unknown preset `{}`: expected one of {}",
                    p.get_ref(),
                    presets::names()
                ),
            )
        })?;
        Ok(Some(preset))
    }

    /// The URL probed: the target's own, else its preset's.
    fn target_endpoint(
        &self,
        i: usize,
        t: &RawTarget,
        preset: Option<&Preset>,
    ) -> Result<Endpoint> {
        let key = |k: &str| format!("target[{i}].{k}");
        match (&t.url, preset) {
            (Some(u), _) => self.endpoint(u.get_ref(), u.span(), &key("url")),
            (None, Some(p)) => self.endpoint(p.url, span_of(t), &key("preset")),
            (None, None) => Err(self.err(
                span_of(t),
                &key("url"),
                "a target needs a url (or a preset)",
            )),
        }
    }

    /// What a probe sends: the method, the preset's headers overridden by
    /// the target's, and the body.
    fn request(&self, i: usize, t: &RawTarget, preset: Option<&Preset>) -> Result<Request> {
        let key = |k: &str| format!("target[{i}].{k}");
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
        Ok(Request {
            method,
            headers,
            body,
        })
    }

    /// What the answer must show: a status in the set, and the body match.
    fn expectations(
        &self,
        i: usize,
        t: &RawTarget,
        preset: Option<&Preset>,
    ) -> Result<Expectations> {
        let key = |k: &str| format!("target[{i}].{k}");
        let status = match (&t.expect_status, preset) {
            (Some(s), _) => self.statuses(s, &key("expect_status"))?,
            (None, Some(p)) => StatusSet(p.expect_status.iter().map(|c| (*c, *c)).collect()),
            (None, None) => StatusSet(vec![(200, 399)]),
        };
        let body = match (&t.expect_body, &t.expect_body_regex, preset) {
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
        Ok(Expectations { status, body })
    }

    /// The routes the target is probed over, and whether a degraded route
    /// fails over (by default only when `direct` is among them).
    fn target_routes(
        &self,
        i: usize,
        t: &RawTarget,
        routes: &[Arc<Route>],
    ) -> Result<TargetRoutes> {
        let key = format!("target[{i}].routes");
        let routes = self.route_list(t.routes.as_ref(), routes, &key, span_of(t))?;
        let failover_on_degraded = t
            .failover_on_degraded
            .unwrap_or_else(|| routes.iter().any(|r| r.is_direct()));
        Ok(TargetRoutes {
            routes,
            failover_on_degraded,
        })
    }

    /// Which app traffic is the target's: host patterns, and the
    /// addresses it may reach that the policy would refuse.
    fn traffic_match(&self, i: usize, t: &RawTarget) -> Result<TrafficMatch> {
        let key = |k: &str| format!("target[{i}].{k}");
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
        Ok(TrafficMatch {
            hosts,
            allow_addresses,
        })
    }

    pub(super) fn endpoint(&self, text: &str, span: Range<usize>, key: &str) -> Result<Endpoint> {
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
