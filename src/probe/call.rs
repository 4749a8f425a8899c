//! One arbitrary HTTPS request over a route, through the one dialer and
//! the probe's own TLS and HTTP stages: what a credential check sends. The
//! caller builds the request; this returns the upstream's answer (or the
//! stage that failed, with the usual reasons), never judging it.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, header};
use http_body_util::Full;
use tokio::time::Instant;

use super::http::{Answer, send};
use super::{Failure, Prober, Seen};
use crate::config::{Endpoint, Http2Mode, Route};
use crate::dial::tls::TlsClient;
use crate::dial::{ConnectReply, Destination, Phases, authority};
use crate::policy::Cidr;
use crate::reason::{FailureReason, Phase};

/// A request to send.
pub struct Outgoing<'a> {
    /// Where it goes (https).
    pub endpoint: &'a Endpoint,
    /// TLS toward it.
    pub tls: &'a TlsClient,
    /// Whether it may or must speak HTTP/2.
    pub http2: Http2Mode,
    /// Ranges lifted from the address policy (the target's).
    pub allow: &'a [Cidr],
    /// The method.
    pub method: Method,
    /// Extra headers.
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// The body.
    pub body: Bytes,
}

/// What came back, with what the proxy said to the CONNECT.
#[derive(Debug)]
pub struct Answered {
    /// The upstream's answer.
    pub answer: Answer,
    /// The proxy's CONNECT reply, on a proxy route.
    pub connect: Option<ConnectReply>,
}

impl Prober {
    /// Sends `out` over `route`, everything done by `deadline`.
    pub async fn send(
        &self,
        out: Outgoing<'_>,
        route: &Route,
        deadline: Instant,
    ) -> Result<Answered, Failure> {
        let ep = out.endpoint;
        let dest = Destination {
            host: &ep.host,
            port: ep.port,
            allow: out.allow,
        };
        let mut phases = Phases::default();
        let mut seen = Seen::default();
        let tunnel = self
            .dialer
            .open(route, dest, deadline, &mut phases)
            .await
            .map_err(|e| Failure::new(e.reason(), e.phase(), e.to_string()))?;
        let connect = tunnel.connect;
        let (stream, info) = self
            .handshake(
                out.tls,
                &ep.host,
                tunnel.stream,
                deadline,
                &mut phases,
                &mut seen,
            )
            .await?;
        let h2 = info.alpn.as_deref() == Some("h2");
        if out.http2 == Http2Mode::Required && !h2 {
            return Err(Failure::new(
                FailureReason::TlsHandshake,
                Phase::Tls,
                format!("{} did not negotiate HTTP/2", ep.host),
            ));
        }
        let request = request(&out, h2)?;
        let answer = send(stream, h2, request, self.max_body, deadline, &mut phases).await?;
        Ok(Answered { answer, connect })
    }
}

/// The request, in the form `h2` or HTTP/1.1 wants.
fn request(out: &Outgoing<'_>, h2: bool) -> Result<Request<Full<Bytes>>, Failure> {
    let ep = out.endpoint;
    let host = if ep.port == 443 {
        ep.host.clone()
    } else {
        authority(&ep.host, ep.port)
    };
    let uri = if h2 {
        format!("https://{host}{}", ep.path_and_query)
    } else {
        ep.path_and_query.clone()
    };
    let mut builder = Request::builder().method(out.method.clone()).uri(uri);
    if !h2 {
        builder = builder.header(header::HOST, host.as_str());
    }
    let mut req = builder
        .header(
            header::USER_AGENT,
            concat!("egress-sentinel/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(out.body.clone()))
        .map_err(|e| {
            Failure::new(
                FailureReason::Io,
                Phase::FirstByte,
                format!("building the request: {e}"),
            )
        })?;
    for (name, value) in out.headers {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    Ok(req)
}
