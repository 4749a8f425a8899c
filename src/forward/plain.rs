//! Plain `http://` through the forward proxy, as clients with `http_proxy`
//! expect: absolute-form requests (HTTP/1.0 and 1.1), parsed one at a time
//! on a keep-alive connection by hyper, each one planned and checked against
//! the policy on its own (a pipelined second request cannot slip past).
//!
//! Each request goes out on a fresh upstream connection: on a proxy route
//! to the proxy itself, in absolute form with the route's credentials
//! (Squid's stock `deny CONNECT !SSL_ports` refuses `CONNECT host:80`);
//! direct, to the origin in origin form. `Host` comes from the request
//! target (RFC 9112 §3.2.2); hop-by-hop headers and the app's
//! `Proxy-Authorization` are dropped; `Via` is added.
//!
//! Failover happens only before a request byte is sent: once the request
//! went out, the answer goes to the app as it is (a retried POST would
//! duplicate its side effects). A proxy's own error (it carries
//! `Proxy-Status` or `X-Squid-Error`, or is a 407) is reported to health
//! with its detail; the origin's answer never is a route failure.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::plan::{self, Plan};
use super::reply::{Tried, status_for};
use super::{Proxy, request};
use crate::config::{Route, authority};
use crate::dial::classify::{proxy_answer_detail, proxy_answer_reason};
use crate::dial::{Destination, HttpPath, Phases};
use crate::generation::Generation;
use crate::health::{HostPort, TrafficResult};
use crate::reason::FailureReason;

type Body = BoxBody<Bytes, hyper::Error>;

/// `Via` we add, each way.
const VIA: &str = "1.1 egress-sentinel";

/// Serves plain requests on `app` until it closes. `prefix` holds the bytes
/// already read from it (the first request head and what followed).
pub(super) async fn serve(proxy: Arc<Proxy>, app: TcpStream, peer: SocketAddr, prefix: Bytes) {
    let generation = proxy.routing.generation();
    let header_timeout = generation.config.forward.header_timeout;
    let io = TokioIo::new(Prefixed { prefix, inner: app });
    let svc = service_fn(move |req| {
        let (proxy, generation) = (proxy.clone(), generation.clone());
        async move { Ok::<_, Infallible>(one(&proxy, &generation, req, peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(request::MAX_HEAD.max(8192))
        .serve_connection(io, svc);
    if let Err(e) = conn.await {
        tracing::debug!(client = %peer, error = %e, "plain http connection ended");
    }
}

fn full(status: StatusCode, headers: &[(&str, String)], body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                r.headers_mut().insert(n, v);
            }
        }
    }
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Our own refusal or failure, with an RFC 9209 `Proxy-Status`.
fn refusal(status: u16, error: &str, why: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let details = crate::dial::connect::sanitize(why.as_bytes()).replace(['"', '\\'], "'");
    full(
        status,
        &[(
            "proxy-status",
            format!("egress-sentinel; error={error}; details=\"{details}\""),
        )],
        format!("egress-sentinel: {why}\n"),
    )
}

/// The destination of an absolute-form `http://` request target.
fn destination(uri: &Uri) -> Result<(String, u16), String> {
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "a proxy request needs an absolute http:// URL (https:// goes through CONNECT), got {:?}",
            crate::dial::connect::sanitize(uri.to_string().as_bytes())
        ));
    }
    let auth = uri
        .authority()
        .ok_or_else(|| "the URL has no host".to_string())?;
    let text = match auth.port_u16() {
        Some(p) => format!("{}:{p}", auth.host()),
        None => format!("{}:80", auth.host()),
    };
    crate::destination::parse_authority(&text, Some(80))
        .map(|(host, port)| (host.to_string(), port))
        .map_err(|e| {
            format!(
                "bad host in URL {:?}: {e}",
                crate::dial::connect::sanitize(auth.as_str().as_bytes())
            )
        })
}

/// One request, top-down: check it, plan it, send it on the first route
/// that opens, answer.
async fn one(
    proxy: &Proxy,
    generation: &Generation,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    if req.method() == http::Method::CONNECT {
        return refusal(
            400,
            "http_request_error",
            "CONNECT must be the first request on its connection",
        );
    }
    let h = req.headers();
    if h.contains_key(header::CONTENT_LENGTH) && h.contains_key(header::TRANSFER_ENCODING) {
        return refusal(
            400,
            "http_request_error",
            "both Content-Length and Transfer-Encoding: refused (request smuggling)",
        );
    }
    let (host, port) = match destination(req.uri()) {
        Ok(d) => d,
        Err(why) => return refusal(400, "http_request_error", &why),
    };
    let config = &generation.config;
    let snapshot = proxy.routing.snapshot();
    let checked = plan::plan_checked(
        config,
        generation.dialer.resolver(),
        &host,
        port,
        config.probe.timeout,
        |t| snapshot.routes_to_try(t),
    );
    let plan = match checked.await {
        Ok(p) => p,
        Err(plan::Refused { label, why }) => {
            tracing::warn!(client = %peer, destination = %authority(&host, port), why = %why, "refused by policy");
            proxy
                .routing
                .metrics()
                .forward_connection(&label, "none", "refused");
            return refusal(403, "http_request_denied", &why);
        }
    };
    let timeout = plan
        .target
        .as_ref()
        .map_or(config.probe.timeout, |t| t.timeout);
    let mut tried: Vec<Tried> = Vec::new();
    let (route, path) = 'open: {
        for route in &plan.routes {
            let mut phases = Phases::default();
            let dest = Destination {
                host: &host,
                port,
                allow: &plan.allow,
            };
            let deadline = Instant::now() + timeout;
            match generation
                .dialer
                .open_http(route, dest, deadline, &mut phases)
                .await
            {
                Ok(path) => break 'open (route.clone(), path),
                Err(e) => {
                    let t = Tried::new(&route.name, &e);
                    report(
                        proxy,
                        &plan,
                        route,
                        &host,
                        port,
                        Some((t.reason, t.detail.clone())),
                    )
                    .await;
                    proxy
                        .routing
                        .metrics()
                        .forward_connection(&plan.label, &route.name, "failed");
                    if t.reason == FailureReason::LocalExhausted {
                        // Another route would fail the same way.
                        let (status, error) = status_for(t.reason);
                        let detail = format!("{}: {}", t.route, t.detail);
                        return refusal(status, error, &detail);
                    }
                    tried.push(t);
                }
            }
        }
        return all_failed(&authority(&host, port), &tried);
    };
    let why = route
        .is_direct()
        .then(|| proxy.log_direct(&snapshot, &plan.label, &authority(&host, port), &tried));
    send(proxy, &plan, &route, path, req, &host, port, timeout, why).await
}

/// Sends the request on an open path; from here on nothing is retried.
#[allow(clippy::too_many_arguments)]
async fn send(
    proxy: &Proxy,
    plan: &Plan,
    route: &Route,
    path: HttpPath,
    req: Request<Incoming>,
    host: &str,
    port: u16,
    timeout: Duration,
    why: Option<String>,
) -> Response<Body> {
    let metrics = proxy.routing.metrics();
    // Bytes are counted as they move; the trail (and access log) line is
    // written when the upstream connection ends, after the answer's body.
    let meter = metrics.forward_meter(&plan.label, &route.name);
    let stream = meter.wrap(path.stream);
    let (routing, opened, stood) = (
        proxy.routing.clone(),
        std::time::SystemTime::now(),
        Instant::now(),
    );
    let record = (
        plan.label.clone(),
        authority(host, port),
        route.name.clone(),
    );
    let absolute = path.proxy.is_some();
    let outbound = match outbound(req, absolute, path.proxy.as_ref()) {
        Ok(r) => r,
        Err(why) => return refusal(400, "http_request_error", &why),
    };
    let method = outbound.method().clone();
    let shown = format!("{method} http://{}", authority(host, port));
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
            let (label, destination, route) = record;
            routing.trail().closed(&crate::compliance::Connection::new(
                opened,
                &label,
                &destination,
                &route,
                why,
                meter.moved(),
                stood.elapsed(),
                "closed",
            ));
        });
        sender
            .send_request(outbound)
            .await
            .map_err(|e| e.to_string())
    };
    let resp = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(resp)) => resp,
        other => {
            let (reason, what) = match (&other, absolute) {
                (Err(_), _) => (
                    FailureReason::Timeout,
                    format!("no answer within {timeout:?}"),
                ),
                (_, true) => (
                    FailureReason::ProxyProtocol,
                    "the proxy closed or broke the exchange".to_string(),
                ),
                (_, false) => (
                    FailureReason::Io,
                    "the origin closed or broke the exchange".to_string(),
                ),
            };
            let detail = match &other {
                Ok(Err(e)) => format!("{shown} via {}: {what}: {e}", route.name),
                _ => format!("{shown} via {}: {what}", route.name),
            };
            tracing::warn!(target = %plan.label, route = %route.name, reason = %reason, detail = %detail, "plain http request failed after it was sent (not retried)");
            report(
                proxy,
                plan,
                route,
                host,
                port,
                Some((reason, detail.clone())),
            )
            .await;
            metrics.forward_connection(&plan.label, &route.name, "failed");
            let (status, error) = status_for(reason);
            return refusal(status, error, &detail);
        }
    };
    let failure = proxy_own_error(&resp, &shown, path.proxy.as_ref().map(|p| p.name.as_str()));
    let result = if failure.is_some() { "failed" } else { "ok" };
    report(proxy, plan, route, host, port, failure).await;
    metrics.forward_connection(&plan.label, &route.name, result);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .append(header::VIA, HeaderValue::from_static(VIA));
    Response::from_parts(parts, body.boxed())
}

async fn report(
    proxy: &Proxy,
    plan: &Plan,
    route: &Route,
    host: &str,
    port: u16,
    failure: Option<(FailureReason, String)>,
) {
    if let Some(t) = &plan.target {
        proxy
            .routing
            .report(TrafficResult {
                target: t.name.clone(),
                route: route.name.clone(),
                destination: HostPort::new(host, port),
                failure,
            })
            .await;
    }
}

/// The request as it goes out: absolute form to a proxy (with the route's
/// credentials), origin form to the origin; `Host` from the target;
/// hop-by-hop headers and the app's proxy credentials dropped; `Via` added.
fn outbound(
    req: Request<Incoming>,
    absolute: bool,
    proxy: Option<&crate::dial::ProxyHop>,
) -> Result<Request<Incoming>, String> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .cloned()
        .ok_or_else(|| "the URL has no host".to_string())?;
    strip_hop_by_hop(&mut parts.headers);
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
    parts.headers.insert(header::HOST, host);
    parts
        .headers
        .append(header::VIA, HeaderValue::from_static(VIA));
    if let Some(auth) = proxy.and_then(|p| p.authorization.as_ref()) {
        parts
            .headers
            .insert(header::PROXY_AUTHORIZATION, auth.expose().clone());
    }
    if !absolute {
        let origin = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = origin
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    }
    parts.version = http::Version::HTTP_11;
    Ok(Request::from_parts(parts, body))
}

/// RFC 9110 §7.6.1: `Connection` and what it lists, and the other
/// hop-by-hop fields; the app's `Proxy-Authorization` never travels on.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .collect::<Vec<_>>()
        })
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// A proxy's own error, told from the origin's (see
/// [`proxy_answer_reason`]).
fn proxy_own_error(
    resp: &Response<Incoming>,
    shown: &str,
    proxy: Option<&str>,
) -> Option<(FailureReason, String)> {
    let proxy = proxy?;
    let status = resp.status().as_u16();
    let reason = proxy_answer_reason(status, resp.headers())?;
    let detail = format!(
        "{shown} via {proxy} -> {status} {}{}",
        resp.status().canonical_reason().unwrap_or(""),
        proxy_answer_detail(resp.headers())
    );
    Some((reason, detail))
}

fn all_failed(destination: &str, tried: &[Tried]) -> Response<Body> {
    let first = tried.first();
    let (status, error) = first.map_or((502, "proxy_internal_error"), |t| status_for(t.reason));
    let summary = first.map_or_else(
        || "no route".to_string(),
        |t| format!("{} via {}: {}", t.reason, t.route, t.detail),
    );
    let mut body = format!("{destination} failed on every allowed route:\n");
    for t in tried {
        body.push_str(&format!("- {}: {}: {}\n", t.route, t.reason, t.detail));
    }
    let details = crate::dial::connect::sanitize(summary.as_bytes()).replace(['"', '\\'], "'");
    full(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        &[(
            "proxy-status",
            format!("egress-sentinel; error={error}; details=\"{details}\""),
        )],
        format!("egress-sentinel: {body}"),
    )
}

/// The app connection with the bytes already read put back in front.
struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
