//! What the app hears when the proxy cannot serve it: a status, a
//! `Proxy-Status` header (RFC 9209) naming the error, and a short body
//! saying which routes were tried and why each failed; and when the
//! attempt stops before every route was tried ([`Stop`]): the proxy
//! refused the destination by its own policy, or this process ran out of
//! descriptors.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::dial::DialError;
use crate::reason::FailureReason;

/// One route that failed, for the reply.
#[derive(Debug, Clone)]
pub struct Tried {
    /// Route name.
    pub route: String,
    /// Why.
    pub reason: FailureReason,
    /// The detail.
    pub detail: String,
    /// True when the proxy refused this destination by its own policy (a
    /// 403 to CONNECT with Squid's or RFC 9209's denial marker).
    pub denied_by_proxy: bool,
}

impl Tried {
    /// The failed attempt on `route` that `e` describes.
    pub fn new(route: &str, e: &DialError) -> Self {
        Self {
            route: route.to_string(),
            reason: e.reason(),
            detail: e.to_string(),
            denied_by_proxy: e
                .connect_reply()
                .is_some_and(crate::dial::ConnectReply::is_policy_denial),
        }
    }
}

/// Why the routes left are not tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The proxy refused this one destination by its own policy while the
    /// route is healthy (or not yet probed): obeyed, not routed around.
    ProxyRefused,
    /// This process ran out of descriptors or memory: another route would
    /// fail the same way, and it is not a reason to leave the proxy.
    LocalExhausted,
}

impl Stop {
    /// Whether the attempt `t` ends the connection, given whether its
    /// route is known to be broken (`route_broken`: probes found it down;
    /// then traffic moves as a whole and a refusal is routed around).
    pub fn after(t: &Tried, route_broken: bool) -> Option<Self> {
        if t.reason == FailureReason::LocalExhausted {
            Some(Self::LocalExhausted)
        } else if t.denied_by_proxy && !route_broken {
            Some(Self::ProxyRefused)
        } else {
            None
        }
    }
}

/// The status and RFC 9209 error type for a failure reason.
pub fn status_for(reason: FailureReason) -> (u16, &'static str) {
    use FailureReason as R;
    match reason {
        R::ProxyTimeout | R::Timeout => (504, "connection_timeout"),
        R::ProxyResolve | R::Resolve => (502, "dns_error"),
        R::ProxyConnect | R::Connect => (502, "connection_refused"),
        R::PolicyDenied => (403, "destination_ip_prohibited"),
        R::ProxyAuthRequired | R::ProxyDenied | R::ProxyUpstreamError => {
            (502, "destination_unavailable")
        }
        R::ProxyProtocol => (502, "http_response_incomplete"),
        R::LocalExhausted => (503, "proxy_internal_error"),
        _ => (502, "proxy_internal_error"),
    }
}

fn quoted(s: &str) -> String {
    crate::dial::connect::sanitize(s.as_bytes()).replace(['"', '\\'], "'")
}

/// What the app hears from us instead of the upstream: a status, the RFC
/// 9209 error type and its details for `Proxy-Status`, and a short body.
/// The one place our `Proxy-Status` is written, for the raw replies to
/// `CONNECT` and the plain-http responses alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The RFC 9209 error type.
    pub error: &'static str,
    /// The `details` parameter.
    pub details: String,
    /// The body, for people.
    pub body: String,
}

impl Answer {
    /// An answer whose body says `why`.
    pub fn new(status: u16, error: &'static str, why: &str) -> Self {
        Self {
            status,
            error,
            details: why.to_string(),
            body: format!("egress-sentinel: {why}\n"),
        }
    }

    /// The answer when every allowed route failed: the status follows the
    /// preferred route's failure (the path the app was meant to take).
    pub fn all_failed(destination: &str, tried: &[Tried], not_allowed_direct: bool) -> Self {
        let first = tried.first().map_or(FailureReason::Io, |t| t.reason);
        let (status, error) = status_for(first);
        let mut body = format!("egress-sentinel: {destination} failed on every allowed route:\n");
        for t in tried {
            body.push_str(&format!("- {}: {}: {}\n", t.route, t.reason, t.detail));
        }
        if not_allowed_direct {
            body.push_str("- direct: not allowed for this target\n");
        }
        let details = tried
            .first()
            .map(|t| format!("{} via {}: {}", t.reason, t.route, t.detail))
            .unwrap_or_else(|| "no route".to_string());
        Self {
            status,
            error,
            details,
            body,
        }
    }

    /// The answer when the attempt stopped at `last` (see [`Stop`]).
    pub fn stopped(destination: &str, last: &Tried, stop: Stop) -> Self {
        let (status, error, why) = match stop {
            Stop::ProxyRefused => (
                403,
                "http_request_denied",
                format!(
                    "the proxy route {} refused {destination} by its own policy; not retried on another route",
                    last.route
                ),
            ),
            Stop::LocalExhausted => (
                503,
                "proxy_internal_error",
                format!(
                    "egress-sentinel ran out of descriptors or memory opening {destination}; retry later"
                ),
            ),
        };
        Self {
            status,
            error,
            details: format!("{} via {}: {}", last.reason, last.route, last.detail),
            body: format!(
                "egress-sentinel: {why}:\n- {}: {}: {}\n",
                last.route, last.reason, last.detail
            ),
        }
    }

    /// The `Proxy-Status` value.
    pub fn proxy_status(&self) -> String {
        format!(
            "egress-sentinel; error={}; details=\"{}\"",
            self.error,
            quoted(&self.details)
        )
    }

    /// Writes it as a complete HTTP/1.1 response and flushes it.
    pub async fn write<W: AsyncWrite + Unpin>(&self, w: &mut W) {
        let reason = match self.status {
            400 => "Bad Request",
            403 => "Forbidden",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Bad Gateway",
        };
        let text = format!(
            "HTTP/1.1 {} {reason}\r\nProxy-Status: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.status,
            self.proxy_status(),
            self.body.len(),
            self.body
        );
        let _ = w.write_all(text.as_bytes()).await;
        let _ = w.flush().await;
    }
}
