//! The probe: one request to a target over one route, through the shared
//! dialer, with TLS and HTTP on top, checked against the target's
//! expectations. Produces a [`ProbeOutcome`]; never panics, never outlives
//! the target's timeout.

mod call;
mod http;
pub(crate) mod outcome;

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use tokio::time::Instant;

pub use call::{Answered, Outgoing};
pub use http::Answer;
pub use outcome::{Failure, ProbeOutcome};

use crate::config::{Http2Mode, Route, Target};
use crate::dial::classify::{proxy_answer_detail, proxy_answer_reason, tls_stage_reason};
use crate::dial::tls::{CertInfo, TlsClient, TlsInfo, TrustVerdict};
use crate::dial::{BoxStream, ConnectReply, Destination, Dialer, Phases, fmt_duration, timed};
use crate::reason::{FailureReason, Phase};

/// Runs probes.
#[derive(Debug, Clone)]
pub struct Prober {
    /// The one dialer, shared with the forward proxy.
    dialer: Dialer,
    /// The most body bytes read.
    max_body: usize,
}

/// What the stages learned, whether or not they all passed.
#[derive(Debug, Default)]
struct Seen {
    proxy_reply: Option<ConnectReply>,
    http_status: Option<u16>,
    alpn: Option<String>,
    peer_cert: Option<CertInfo>,
    /// The addresses the TCP step tried, when there were several.
    addresses: Option<String>,
    trust: Option<TrustVerdict>,
}

impl Prober {
    /// A prober dialing with `dialer`.
    pub fn new(dialer: Dialer, max_body: usize) -> Self {
        Self { dialer, max_body }
    }

    /// Probes `target` over `route` once.
    pub async fn probe(&self, target: &Target, route: &Route) -> ProbeOutcome {
        let started = SystemTime::now();
        let start = Instant::now();
        let deadline = start + target.timeout;
        let mut phases = Phases::default();
        let mut seen = Seen::default();
        let dest = Destination {
            host: &target.endpoint.host,
            port: target.endpoint.port,
            allow: &target.allow_addresses,
        };
        // One bad node behind the proxy's name: each address on its own,
        // alongside the probe proper.
        // The probe's duration is the path's, not the checks' (a hung node
        // is waited for until the route's connect_timeout).
        let ((result, duration), proxy_addresses) = tokio::join!(
            async {
                let r = self
                    .stages(target, route, deadline, &mut phases, &mut seen)
                    .await;
                (r, start.elapsed())
            },
            self.dialer.check_proxy_addresses(route, dest, deadline)
        );
        let (ok, reason, mut detail, failed_phase) = match result {
            Ok(detail) => (true, FailureReason::Ok, detail, None),
            Err(f) => (false, f.reason, f.detail, Some(f.phase)),
        };
        if let Some(addresses) = &seen.addresses {
            detail.push_str(&format!("; addresses tried: {addresses}"));
        }
        if proxy_addresses.iter().any(|c| !c.up) {
            detail.push_str(&format!(
                "; proxy addresses: {}",
                crate::dial::addresses::describe(&proxy_addresses)
            ));
        }
        let mut outcome = ProbeOutcome {
            target: target.name.clone(),
            route: route.name.clone(),
            ok,
            reason,
            detail,
            failed_phase,
            connect_status: seen.proxy_reply.as_ref().map(|r| r.status),
            proxy_reply: seen.proxy_reply,
            http_status: seen.http_status,
            alpn: seen.alpn,
            phases,
            duration,
            peer_cert: seen.peer_cert,
            anchor: None,
            expected_anchor: None,
            intercepted: None,
            started,
            proxy_addresses,
        };
        outcome.set_trust(seen.trust);
        outcome
    }

    async fn stages(
        &self,
        target: &Target,
        route: &Route,
        deadline: Instant,
        phases: &mut Phases,
        seen: &mut Seen,
    ) -> Result<String, Failure> {
        let ep = &target.endpoint;
        let dest = Destination {
            host: &ep.host,
            port: ep.port,
            allow: &target.allow_addresses,
        };
        if !ep.tls {
            return self
                .plain(target, route, dest, deadline, phases, seen)
                .await;
        }
        let tunnel = match self.dialer.open(route, dest, deadline, phases).await {
            Ok(t) => t,
            Err(e) => {
                seen.proxy_reply = e.connect_reply().cloned();
                return Err(Failure::new(e.reason(), e.phase(), e.to_string()));
            }
        };
        seen.proxy_reply = tunnel.connect;
        seen.addresses = tunnel
            .attempts
            .worth_reporting()
            .then(|| tunnel.attempts.to_string());
        let (stream, info) = self
            .tls(target, tunnel.stream, deadline, phases, seen)
            .await?;
        let h2 = info.alpn.as_deref() == Some("h2");
        if target.http2 == Http2Mode::Required && !h2 {
            return Err(Failure::new(
                FailureReason::TlsHandshake,
                Phase::Tls,
                format!(
                    "{} did not negotiate HTTP/2 (ALPN: {}); this target requires h2",
                    ep.host,
                    info.alpn.as_deref().unwrap_or("none")
                ),
            ));
        }
        let answer =
            http::exchange(stream, h2, None, target, self.max_body, deadline, phases).await?;
        self.judge(target, answer, h2, seen)
    }

    /// A plain `http://` target: the path the app's plain requests take
    /// (absolute form to a proxy, origin form direct), with a proxy's own
    /// error told from the origin's answer.
    async fn plain(
        &self,
        target: &Target,
        route: &Route,
        dest: Destination<'_>,
        deadline: Instant,
        phases: &mut Phases,
        seen: &mut Seen,
    ) -> Result<String, Failure> {
        let path = self
            .dialer
            .open_http(route, dest, deadline, phases)
            .await
            .map_err(|e| Failure::new(e.reason(), e.phase(), e.to_string()))?;
        let proxy = path.proxy.clone();
        let answer = http::exchange(
            path.stream,
            false,
            proxy.as_ref(),
            target,
            self.max_body,
            deadline,
            phases,
        )
        .await?;
        if let Some(p) = &proxy {
            let status = answer.status.as_u16();
            if let Some(reason) = proxy_answer_reason(status, &answer.headers) {
                seen.http_status = Some(status);
                return Err(Failure::new(
                    reason,
                    Phase::FirstByte,
                    format!(
                        "{} {} via {} -> {status} {}{}",
                        target.method,
                        target.endpoint.url(),
                        p.name,
                        answer.status.canonical_reason().unwrap_or(""),
                        proxy_answer_detail(&answer.headers)
                    ),
                ));
            }
        }
        self.judge(target, answer, false, seen)
    }

    /// The upstream's answer against the target's expectations.
    fn judge(
        &self,
        target: &Target,
        answer: http::Answer,
        h2: bool,
        seen: &mut Seen,
    ) -> Result<String, Failure> {
        let status = answer.status.as_u16();
        seen.http_status = Some(status);
        let status_text = format!(
            "HTTP {status} {}",
            answer.status.canonical_reason().unwrap_or("")
        );
        let status_text = status_text.trim_end();
        if !target.expect_status.contains(status) {
            return Err(Failure::new(
                FailureReason::HttpStatus,
                Phase::FirstByte,
                format!(
                    "{status_text}, expected {}{}",
                    target.expect_status.describe(),
                    body_excerpt(&answer.body)
                ),
            ));
        }
        if let Some(m) = &target.expect_body {
            if !m.matches(&answer.body) {
                return Err(Failure::new(
                    FailureReason::HttpBody,
                    Phase::Body,
                    format!(
                        "{status_text} but no {} in the first {} bytes{}",
                        m.describe(),
                        answer.body.len(),
                        body_excerpt(&answer.body)
                    ),
                ));
            }
        }
        let proto = if h2 { "h2" } else { "http/1.1" };
        Ok(match &seen.proxy_reply {
            Some(r) => format!("{status_text} over {proto}, CONNECT {}", r.status),
            None => format!("{status_text} over {proto}"),
        })
    }

    async fn tls(
        &self,
        target: &Target,
        stream: BoxStream,
        deadline: Instant,
        phases: &mut Phases,
        seen: &mut Seen,
    ) -> Result<(BoxStream, TlsInfo), Failure> {
        self.handshake(
            &target.tls,
            &target.endpoint.host,
            stream,
            deadline,
            phases,
            seen,
        )
        .await
    }

    /// The TLS stage with `host`, with `tls`'s settings.
    async fn handshake(
        &self,
        tls: &TlsClient,
        host: &str,
        stream: BoxStream,
        deadline: Instant,
        phases: &mut Phases,
        seen: &mut Seen,
    ) -> Result<(BoxStream, TlsInfo), Failure> {
        let done = timed(phases, Phase::Tls, deadline, tls.handshake(stream, host))
            .await
            .map_err(|after| {
                Failure::new(
                    FailureReason::Timeout,
                    Phase::Tls,
                    format!("TLS with {host} timed out after {}", fmt_duration(after)),
                )
            })?;
        match done {
            Ok((stream, info)) => {
                seen.alpn = info.alpn.clone();
                seen.peer_cert = info.peer.clone();
                seen.trust = info.trust.clone();
                Ok((stream, info))
            }
            Err(f) => {
                seen.peer_cert = f.peer.clone();
                let reason = tls_stage_reason(&f.error);
                let mut detail = format!("TLS with {host}: {}", f.error);
                if let Some(c) = &f.peer {
                    detail.push_str(&format!(
                        "; certificate {} issued by {}, valid until {}",
                        c.subject, c.issuer, c.not_after
                    ));
                }
                if reason == FailureReason::TlsUntrusted && f.peer.is_some() {
                    detail.push_str(" (an intercepting proxy presents its own CA)");
                }
                Err(Failure::new(reason, Phase::Tls, detail))
            }
        }
    }
}

/// ` (body: "...")` with the first bytes of a body, sanitised.
fn body_excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let text = crate::dial::connect::sanitize(&body[..body.len().min(120)]);
    format!(" (body: {text:?})")
}

/// Something that probes a target over a route: the real [`Prober`], or a
/// script in tests of timing.
pub trait ProbeRunner: Send + Sync + 'static {
    /// Probes once.
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        route: &'a Route,
    ) -> Pin<Box<dyn Future<Output = ProbeOutcome> + Send + 'a>>;
}

impl ProbeRunner for Prober {
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        route: &'a Route,
    ) -> Pin<Box<dyn Future<Output = ProbeOutcome> + Send + 'a>> {
        Box::pin(Prober::probe(self, target, route))
    }
}
