//! What the app hears when the proxy cannot serve it: a status, a
//! `Proxy-Status` header (RFC 9209) naming the error, and a short body
//! saying which routes were tried and why each failed.

use tokio::io::{AsyncWrite, AsyncWriteExt};

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
        _ => (502, "proxy_internal_error"),
    }
}

fn quoted(s: &str) -> String {
    crate::dial::connect::sanitize(s.as_bytes()).replace(['"', '\\'], "'")
}

/// Writes a complete error response and flushes it.
pub async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    error: &str,
    details: &str,
    body: &str,
) {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Bad Gateway",
    };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nProxy-Status: egress-sentinel; error={error}; details=\"{}\"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        quoted(details),
        body.len()
    );
    let _ = w.write_all(text.as_bytes()).await;
    let _ = w.flush().await;
}

/// The reply when every allowed route failed.
pub async fn all_failed<W: AsyncWrite + Unpin>(
    w: &mut W,
    destination: &str,
    tried: &[Tried],
    not_allowed_direct: bool,
) {
    // The status follows the preferred route's failure: that is the path the
    // app was meant to take.
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
        .unwrap_or_default();
    write(w, status, error, &details, &body).await;
}
