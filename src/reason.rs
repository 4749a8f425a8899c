//! The closed vocabulary of failure: [`FailureReason`] (the only source of
//! `reason` label values) and [`Phase`] (the only source of `phase` labels).
//!
//! Owns the mapping from a reason to its label string. It must never grow a
//! variant that is not in DESIGN.md's contract without that contract changing
//! first: dashboards and alerts match on these strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a probe or a forwarded connection failed, or `Ok` when it did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Every stage passed and every expectation held.
    Ok,
    /// The proxy's host name did not resolve.
    ProxyResolve,
    /// The TCP (or TLS-to-proxy) connection to the proxy failed.
    ProxyConnect,
    /// A stage toward the proxy (resolve, connect, CONNECT reply) ran out of time.
    ProxyTimeout,
    /// The proxy answered CONNECT with 407.
    ProxyAuthRequired,
    /// The proxy answered CONNECT with 403 or another 4xx.
    ProxyDenied,
    /// The proxy answered CONNECT with a 5xx.
    ProxyUpstreamError,
    /// The proxy's CONNECT reply was malformed, oversized, or cut short.
    ProxyProtocol,
    /// The destination's host name did not resolve (direct route).
    Resolve,
    /// The TCP connection to the destination failed (direct route).
    Connect,
    /// The upstream's certificate is not trusted (unknown issuer, wrong name).
    TlsUntrusted,
    /// The upstream's certificate is expired or not yet valid.
    TlsExpired,
    /// Any other TLS failure with the upstream.
    TlsHandshake,
    /// The upstream rejected (or demanded) our client certificate.
    ClientCertRejected,
    /// The upstream answered with a status outside the expectation.
    HttpStatus,
    /// The upstream's body did not match the expectation.
    HttpBody,
    /// A stage past the proxy ran out of time.
    Timeout,
    /// The connection failed in a way none of the above names.
    Io,
    /// Our own policy refused the destination (port, address range, host).
    PolicyDenied,
    /// The provider refused the app's own credential (a credential check).
    CredentialRejected,
    /// This process ran out of descriptors or memory (EMFILE, ENFILE,
    /// ENOBUFS, ENOMEM) opening a socket or a file: never the route's fault.
    LocalExhausted,
}

impl FailureReason {
    /// Every reason, in contract order.
    pub const ALL: [FailureReason; 21] = [
        Self::Ok,
        Self::ProxyResolve,
        Self::ProxyConnect,
        Self::ProxyTimeout,
        Self::ProxyAuthRequired,
        Self::ProxyDenied,
        Self::ProxyUpstreamError,
        Self::ProxyProtocol,
        Self::Resolve,
        Self::Connect,
        Self::TlsUntrusted,
        Self::TlsExpired,
        Self::TlsHandshake,
        Self::ClientCertRejected,
        Self::HttpStatus,
        Self::HttpBody,
        Self::Timeout,
        Self::Io,
        Self::PolicyDenied,
        Self::CredentialRejected,
        Self::LocalExhausted,
    ];

    /// The label value used in metrics, logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ProxyResolve => "proxy_resolve",
            Self::ProxyConnect => "proxy_connect",
            Self::ProxyTimeout => "proxy_timeout",
            Self::ProxyAuthRequired => "proxy_auth_required",
            Self::ProxyDenied => "proxy_denied",
            Self::ProxyUpstreamError => "proxy_upstream_error",
            Self::ProxyProtocol => "proxy_protocol",
            Self::Resolve => "resolve",
            Self::Connect => "connect",
            Self::TlsUntrusted => "tls_untrusted",
            Self::TlsExpired => "tls_expired",
            Self::TlsHandshake => "tls_handshake",
            Self::ClientCertRejected => "client_cert_rejected",
            Self::HttpStatus => "http_status",
            Self::HttpBody => "http_body",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::PolicyDenied => "policy_denied",
            Self::CredentialRejected => "credential_rejected",
            Self::LocalExhausted => "local_exhausted",
        }
    }

    /// True when the failure is about the route itself, whatever the
    /// destination: the proxy could not be resolved, reached, understood or
    /// authenticated to. Such a failure on app traffic counts against the
    /// route's health; a refused CONNECT (403, 5xx) may be about the
    /// destination the app asked for, so it only wakes a probe.
    pub fn is_about_route(self) -> bool {
        matches!(
            self,
            Self::ProxyResolve
                | Self::ProxyConnect
                | Self::ProxyTimeout
                | Self::ProxyAuthRequired
                | Self::ProxyProtocol
        )
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage of one connection, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Name resolution: of the proxy on a proxy route, of the destination on `direct`.
    Resolve,
    /// TCP connect (and TLS to an `https://` proxy).
    Connect,
    /// The CONNECT exchange with the proxy.
    Tunnel,
    /// TLS with the upstream.
    Tls,
    /// From sending the request to the response head.
    FirstByte,
    /// Reading the response body.
    Body,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 6] = [
        Self::Resolve,
        Self::Connect,
        Self::Tunnel,
        Self::Tls,
        Self::FirstByte,
        Self::Body,
    ];

    /// The label value used in metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolve => "resolve",
            Self::Connect => "connect",
            Self::Tunnel => "tunnel",
            Self::Tls => "tls",
            Self::FirstByte => "first_byte",
            Self::Body => "body",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_the_serde_names_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in FailureReason::ALL {
            let json = serde_json::to_string(&r).expect("serialize");
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert!(seen.insert(r.as_str()), "duplicate label {r}");
        }
        for p in Phase::ALL {
            let json = serde_json::to_string(&p).expect("serialize");
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
    }
}
