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

use super::attempt::{Attempt, ConnectionResult, Opened, Planned};
use super::reply::{Answer, status_for};
use super::{Proxy, request};
use crate::compliance::Opened as Record;
use crate::config::Route;
use crate::dial::classify::{proxy_answer_detail, proxy_answer_reason};
use crate::dial::{Destination, HttpPath, Phases};
use crate::generation::Generation;
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

/// Our own answer (a refusal, a failure), with its `Proxy-Status`.
fn response(a: &Answer) -> Response<Body> {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
    full(
        status,
        &[("proxy-status", a.proxy_status())],
        a.body.clone(),
    )
}

fn bad_request(why: &str) -> Response<Body> {
    response(&Answer::new(400, "http_request_error", why))
}

/// Why a plain request is answered 400 before anything is dialed.
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    /// A CONNECT after the first request of the connection.
    #[error("CONNECT must be the first request on its connection")]
    LateConnect,
    /// A request that could be read two ways.
    #[error("both Content-Length and Transfer-Encoding: refused (request smuggling)")]
    Smuggling,
    /// Not an absolute `http://` URL.
    #[error(
        "a proxy request needs an absolute http:// URL (https:// goes through CONNECT), got {0:?}"
    )]
    NotAbsoluteHttp(String),
    /// No host in the URL.
    #[error("the URL has no host")]
    NoHost,
    /// A host that is no destination.
    #[error("bad host in URL {host:?}: {error}")]
    BadHost {
        /// The URL's authority, sanitised.
        host: String,
        /// Why.
        error: String,
    },
    /// What the request became cannot be sent (a Host or path refused).
    #[error("{0}")]
    Unsendable(String),
}

/// The destination of an absolute-form `http://` request target.
fn destination(uri: &Uri) -> Result<(String, u16), BadRequest> {
    let sanitize = |b: &[u8]| crate::dial::connect::sanitize(b);
    if uri.scheme_str() != Some("http") {
        return Err(BadRequest::NotAbsoluteHttp(sanitize(
            uri.to_string().as_bytes(),
        )));
    }
    let auth = uri.authority().ok_or(BadRequest::NoHost)?;
    let text = match auth.port_u16() {
        Some(p) => format!("{}:{p}", auth.host()),
        None => format!("{}:80", auth.host()),
    };
    crate::destination::parse_authority(&text, Some(80))
        .map(|(host, port)| (host.to_string(), port))
        .map_err(|e| BadRequest::BadHost {
            host: sanitize(auth.as_str().as_bytes()),
            error: e.to_string(),
        })
}

/// The destination of a request fit to be forwarded, or why it is not.
fn checked_destination(req: &Request<Incoming>) -> Result<(String, u16), BadRequest> {
    if req.method() == http::Method::CONNECT {
        return Err(BadRequest::LateConnect);
    }
    let h = req.headers();
    if h.contains_key(header::CONTENT_LENGTH) && h.contains_key(header::TRANSFER_ENCODING) {
        return Err(BadRequest::Smuggling);
    }
    destination(req.uri())
}

/// One request, top-down: check it, plan it, send it on the first route
/// that opens, answer.
async fn one(
    proxy: &Proxy,
    generation: &Generation,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let (host, port) = match checked_destination(&req) {
        Ok(d) => d,
        Err(why) => return bad_request(&why.to_string()),
    };
    let planned = match proxy.plan_request(generation, host, port, peer).await {
        Ok(p) => p,
        Err(answer) => return response(&answer),
    };
    let timeout = planned.timeout(generation);
    let dest = Destination {
        host: &planned.host,
        port: planned.port,
        allow: &planned.plan.allow,
    };
    let open = |route: Arc<Route>| -> Attempt<'_, HttpPath> {
        Box::pin(async move {
            let (mut phases, deadline) = (Phases::default(), Instant::now() + timeout);
            generation
                .dialer
                .open_http(&route, dest, deadline, &mut phases)
                .await
        })
    };
    match proxy.try_routes(&planned, open).await {
        Ok(opened) => send(proxy, &planned, opened, req, timeout).await,
        Err(answer) => response(&answer),
    }
}

/// Sends the request on an open path; from here on nothing is retried.
async fn send(
    proxy: &Proxy,
    planned: &Planned,
    opened: Opened<HttpPath>,
    req: Request<Incoming>,
    timeout: Duration,
) -> Response<Body> {
    let Opened {
        route,
        stream: path,
        tried,
    } = opened;
    let label = &planned.plan.label;
    let why = route
        .is_direct()
        .then(|| proxy.went_direct(planned, &tried));
    // Bytes are counted as they move; the trail (and access log) line is
    // written when the upstream connection ends, after the answer's body.
    let meter = proxy.routing.metrics().forward_meter(label, &route.name);
    let record = Record::now(label, &planned.destination(), &route.name, why);
    let absolute = path.proxy.is_some();
    let outbound = match outbound(req, absolute, path.proxy.as_ref()) {
        Ok(r) => r,
        Err(why) => return bad_request(&why.to_string()),
    };
    let shown = format!("{} http://{}", outbound.method(), planned.destination());
    let stream = meter.wrap(path.stream);
    let routing = proxy.routing.clone();
    let closed = move |moved| routing.trail().closed(&record.closed(moved, "closed"));
    let sent = tokio::time::timeout(timeout, exchange(stream, outbound, meter, closed)).await;
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            return broken(proxy, planned, &route, &shown, e, absolute).await;
        }
        Err(_) => {
            let what = format!("no answer within {timeout:?}");
            let detail = format!("{shown} via {}: {what}", route.name);
            return failed_after_send(proxy, planned, &route, FailureReason::Timeout, detail).await;
        }
    };
    let failure = proxy_own_error(&resp, &shown, path.proxy.as_ref().map(|p| p.name.as_str()));
    let result = if failure.is_some() {
        ConnectionResult::Failed
    } else {
        ConnectionResult::Ok
    };
    proxy.report(planned, &route, failure).await;
    proxy.count(label, &route.name, result);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .append(header::VIA, HeaderValue::from_static(VIA));
    Response::from_parts(parts, body.boxed())
}

/// The HTTP/1.1 exchange on `stream`; `closed` hears the bytes moved when
/// the upstream connection ends (after the answer's body).
async fn exchange<S>(
    stream: S,
    outbound: Request<Incoming>,
    meter: crate::telemetry::meter::ByteMeter,
    closed: impl FnOnce((u64, u64)) + Send + 'static,
) -> Result<Response<Incoming>, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
        closed(meter.moved());
    });
    sender.send_request(outbound).await
}

/// The exchange broke after the request went out: the proxy's fault on a
/// proxy route, the origin's when direct.
async fn broken(
    proxy: &Proxy,
    planned: &Planned,
    route: &Route,
    shown: &str,
    error: hyper::Error,
    absolute: bool,
) -> Response<Body> {
    let (reason, what) = if absolute {
        (
            FailureReason::ProxyProtocol,
            "the proxy closed or broke the exchange",
        )
    } else {
        (FailureReason::Io, "the origin closed or broke the exchange")
    };
    let detail = format!("{shown} via {}: {what}: {error}", route.name);
    failed_after_send(proxy, planned, route, reason, detail).await
}

/// A request that failed after it was sent: reported, counted, answered;
/// never retried (a retried POST would duplicate its side effects).
async fn failed_after_send(
    proxy: &Proxy,
    planned: &Planned,
    route: &Route,
    reason: FailureReason,
    detail: String,
) -> Response<Body> {
    let label = &planned.plan.label;
    tracing::warn!(target = %label, route = %route.name, reason = %reason, detail = %detail, "plain http request failed after it was sent (not retried)");
    proxy
        .report(planned, route, Some((reason, detail.clone())))
        .await;
    proxy.count(label, &route.name, ConnectionResult::Failed);
    let (status, error) = status_for(reason);
    response(&Answer::new(status, error, &detail))
}

/// The request as it goes out: absolute form to a proxy (with the route's
/// credentials), origin form to the origin; `Host` from the target;
/// hop-by-hop headers and the app's proxy credentials dropped; `Via` added.
fn outbound(
    req: Request<Incoming>,
    absolute: bool,
    proxy: Option<&crate::dial::ProxyHop>,
) -> Result<Request<Incoming>, BadRequest> {
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().cloned().ok_or(BadRequest::NoHost)?;
    strip_hop_by_hop(&mut parts.headers);
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|e| BadRequest::Unsendable(e.to_string()))?;
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
            .map_err(|e: http::uri::InvalidUri| BadRequest::Unsendable(e.to_string()))?;
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
