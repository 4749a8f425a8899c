//! The HTTP stage of a probe: one request over an already-open stream, with
//! HTTP/1.1 or HTTP/2 as ALPN chose, the response head (first byte) and a
//! bounded body read. Each step ends by the probe's deadline.

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::outcome::Failure;
use crate::config::{Endpoint, Target, authority};
use crate::dial::classify::after_tls_reason;
use crate::dial::stream::{ErrorTap, TlsErrorSlot};
use crate::dial::{BoxStream, Phases, ProxyHop, fmt_duration, timed};
use crate::reason::{FailureReason, Phase};

/// What the upstream answered.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: http::HeaderMap,
    /// The body, at most `max_body` bytes of it.
    pub body: Bytes,
}

/// The request side of an HTTP/1.1 or HTTP/2 connection.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        match self {
            Self::H1(s) => s.send_request(req).await,
            Self::H2(s) => s.send_request(req).await,
        }
    }
}

/// Aborts the connection task when the probe is done with it.
struct ConnTask(JoinHandle<()>);

impl ConnTask {
    /// Drives `conn` until it ends or the probe is done with it.
    fn spawn<C: std::future::Future + Send + 'static>(conn: C) -> Self {
        Self(tokio::spawn(async move { drop(conn.await) }))
    }
}

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn hyper_failure(phase: Phase, what: &str, e: &hyper::Error, tap: &TlsErrorSlot) -> Failure {
    let mut detail = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    // A TLS alert seen at the stream wins over what the HTTP layer made of it.
    let tapped = tap
        .lock()
        .ok()
        .and_then(|slot| slot.as_ref().map(|(r, _)| *r));
    Failure::new(tapped.unwrap_or_else(|| after_tls_reason(e)), phase, detail)
}

fn timeout(phase: Phase, after: std::time::Duration) -> Failure {
    Failure::new(
        FailureReason::Timeout,
        phase,
        format!("{phase} timed out after {}", fmt_duration(after)),
    )
}

/// Sends the target's request over `stream` and reads the answer.
pub async fn exchange(
    stream: BoxStream,
    h2: bool,
    proxy: Option<&ProxyHop>,
    target: &Target,
    max_body: usize,
    deadline: Instant,
    phases: &mut Phases,
) -> Result<Answer, Failure> {
    let request = build_request(target, h2, proxy)?;
    send(stream, h2, request, max_body, deadline, phases).await
}

/// Sends `request` over `stream` (HTTP/2 when `h2`) and reads the answer.
pub async fn send(
    stream: BoxStream,
    h2: bool,
    request: Request<Full<Bytes>>,
    max_body: usize,
    deadline: Instant,
    phases: &mut Phases,
) -> Result<Answer, Failure> {
    let (tapped, tap) = ErrorTap::new(stream);
    let (mut sender, task) = handshake(TokioIo::new(tapped), h2, deadline, &tap).await?;
    let response = timed(phases, Phase::FirstByte, deadline, sender.send(request))
        .await
        .map_err(|after| timeout(Phase::FirstByte, after))?
        .map_err(|e| {
            hyper_failure(
                Phase::FirstByte,
                &format!("{} request", version(h2)),
                &e,
                &tap,
            )
        })?;
    let response = read_body(response, max_body, deadline, phases, task, &tap).await?;
    Ok(response)
}

/// The protocol in failure details.
fn version(h2: bool) -> &'static str {
    if h2 { "HTTP/2" } else { "HTTP/1.1" }
}

/// The `Host` header (and the authority of an absolute URI): the port only
/// when it is not the scheme's default.
fn host_header(ep: &Endpoint) -> String {
    let default_port = if ep.tls { 443 } else { 80 };
    if ep.port != default_port {
        authority(&ep.host, ep.port)
    } else if ep.host.contains(':') {
        format!("[{}]", ep.host)
    } else {
        ep.host.clone()
    }
}

/// The target's request, with its headers and, to a proxy that has them,
/// the proxy's credentials.
fn build_request(
    target: &Target,
    h2: bool,
    proxy: Option<&ProxyHop>,
) -> Result<Request<Full<Bytes>>, Failure> {
    let ep = &target.endpoint;
    let host = host_header(ep);
    // To a proxy (plain http), the request goes in absolute form.
    let uri = if h2 || proxy.is_some() {
        format!(
            "{}://{host}{}",
            if ep.tls { "https" } else { "http" },
            ep.path_and_query
        )
    } else {
        ep.path_and_query.clone()
    };
    let mut builder = Request::builder().method(target.method.clone()).uri(uri);
    if !h2 {
        builder = builder.header(header::HOST, host.as_str());
    }
    builder = builder.header(
        header::USER_AGENT,
        concat!("egress-sentinel/", env!("CARGO_PKG_VERSION")),
    );
    let mut request = builder.body(Full::new(target.body.clone())).map_err(|e| {
        Failure::new(
            FailureReason::Io,
            Phase::FirstByte,
            format!("building the request: {e}"),
        )
    })?;
    for (name, value) in &target.headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    if let Some(auth) = proxy.and_then(|p| p.authorization.as_ref()) {
        request
            .headers_mut()
            .insert(header::PROXY_AUTHORIZATION, auth.expose().clone());
    }
    Ok(request)
}

/// The HTTP/1.1 or HTTP/2 handshake. It writes (the h2 preface), so it is
/// bounded by `deadline` like every other step.
async fn handshake(
    io: TokioIo<ErrorTap<BoxStream>>,
    h2: bool,
    deadline: Instant,
    tap: &TlsErrorSlot,
) -> Result<(Sender, ConnTask), Failure> {
    let start = Instant::now();
    let late = |_| timeout(Phase::FirstByte, start.elapsed());
    let failed = |e: hyper::Error| {
        hyper_failure(
            Phase::FirstByte,
            &format!("{} handshake", version(h2)),
            &e,
            tap,
        )
    };
    if h2 {
        let (s, conn) = tokio::time::timeout_at(
            deadline,
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io),
        )
        .await
        .map_err(late)?
        .map_err(failed)?;
        Ok((Sender::H2(s), ConnTask::spawn(conn)))
    } else {
        let (s, conn) =
            tokio::time::timeout_at(deadline, hyper::client::conn::http1::handshake(io))
                .await
                .map_err(late)?
                .map_err(failed)?;
        Ok((Sender::H1(s), ConnTask::spawn(conn)))
    }
}

async fn read_body(
    response: http::Response<hyper::body::Incoming>,
    max_body: usize,
    deadline: Instant,
    phases: &mut Phases,
    _task: ConnTask,
    tap: &TlsErrorSlot,
) -> Result<Answer, Failure> {
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let read = timed(phases, Phase::Body, deadline, async {
        let mut buf = BytesMut::new();
        while buf.len() < max_body {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = max_body - buf.len();
                        buf.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(buf.freeze())
    })
    .await
    .map_err(|after| timeout(Phase::Body, after))?
    .map_err(|e| hyper_failure(Phase::Body, "reading the body", &e, tap))?;
    Ok(Answer {
        status,
        headers,
        body: read,
    })
}
