//! Maps typed errors to the closed [`FailureReason`] set. Walks error
//! `source()` chains (and the payloads of `io::Error`s, which `source()`
//! skips) looking for the typed error underneath — never at message text.
//! Where a library flattens errors to text (h2 keeps only an I/O error's
//! kind and message), [`ErrorTap`](super::stream::ErrorTap) records the
//! typed error at the stream before it is lost.

use std::error::Error;
use std::io;

use rustls::{AlertDescription, CertificateError};

use super::{ConnectError, DialError};
use crate::reason::FailureReason;

impl DialError {
    /// The failure reason this error stands for. This process running out
    /// of descriptors or memory on the way is `local_exhausted`, whatever
    /// the stage: it says nothing about the route.
    pub fn reason(&self) -> FailureReason {
        if self.is_local_exhaustion() {
            return FailureReason::LocalExhausted;
        }
        match self {
            Self::Policy { .. } => FailureReason::PolicyDenied,
            Self::ProxyResolve { .. } => FailureReason::ProxyResolve,
            Self::ProxyConnect { .. } | Self::ProxyTls { .. } => FailureReason::ProxyConnect,
            Self::ProxyTimeout { .. } => FailureReason::ProxyTimeout,
            Self::Tunnel { source, .. } => connect_reason(source),
            Self::Resolve { .. } => FailureReason::Resolve,
            Self::Connect { .. } => FailureReason::Connect,
            Self::Timeout { .. } => FailureReason::Timeout,
        }
    }
}

impl DialError {
    /// True when this process (or the system) ran out of descriptors or
    /// memory opening the socket or asking DNS.
    fn is_local_exhaustion(&self) -> bool {
        match self {
            Self::ProxyConnect { source, .. }
            | Self::ProxyTls { source, .. }
            | Self::Connect { source, .. } => is_local_exhaustion(source),
            Self::Tunnel {
                source: ConnectError::Io(e),
                ..
            } => is_local_exhaustion(e),
            Self::ProxyResolve { source, .. } | Self::Resolve { source, .. } => {
                source.is_local_exhaustion()
            }
            _ => false,
        }
    }
}

/// True for the errno values that mean this process or the system ran out
/// of descriptors or memory: EMFILE, ENFILE, ENOBUFS, ENOMEM.
pub fn is_exhaustion_errno(code: i32) -> bool {
    #[cfg(unix)]
    {
        use nix::errno::Errno;
        matches!(
            Errno::from_raw(code),
            Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
        )
    }
    #[cfg(not(unix))]
    {
        let _ = code;
        false
    }
}

/// True when `err`, or an error in its `source()` chain (or inside an
/// `io::Error`'s payload), is a descriptor or memory exhaustion
/// ([`is_exhaustion_errno`]).
pub fn is_local_exhaustion(err: &(dyn Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.raw_os_error().is_some_and(is_exhaustion_errno)
                || io.kind() == io::ErrorKind::OutOfMemory
            {
                return true;
            }
            if io.get_ref().is_some_and(|inner| is_local_exhaustion(inner)) {
                return true;
            }
        }
        current = e.source();
    }
    false
}

/// A proxy's own answer to a request sent to it in absolute form, told from
/// the origin's: a 407, or an error status carrying `Proxy-Status` (RFC
/// 9209) or Squid's `X-Squid-Error`. The origin's answer is never the
/// route's failure.
pub fn proxy_answer_reason(status: u16, headers: &http::HeaderMap) -> Option<FailureReason> {
    let marked = headers.contains_key("proxy-status") || headers.contains_key("x-squid-error");
    match status {
        407 => Some(FailureReason::ProxyAuthRequired),
        500..=599 if marked => Some(FailureReason::ProxyUpstreamError),
        400..=499 if marked => Some(FailureReason::ProxyDenied),
        _ => None,
    }
}

/// `, via: …, x-squid-error: …` for a report of a proxy's own answer.
pub fn proxy_answer_detail(headers: &http::HeaderMap) -> String {
    let mut out = String::new();
    for name in ["via", "server", "x-squid-error", "proxy-status"] {
        if let Some(v) = headers.get(name) {
            let v = super::connect::sanitize(v.as_bytes());
            out.push_str(&format!(", {name}: {v}"));
        }
    }
    out
}

/// The reason for a failed CONNECT exchange.
pub fn connect_reason(e: &ConnectError) -> FailureReason {
    match e {
        ConnectError::Refused(reply) => match reply.status {
            407 => FailureReason::ProxyAuthRequired,
            400..=499 => FailureReason::ProxyDenied,
            500..=599 => FailureReason::ProxyUpstreamError,
            _ => FailureReason::ProxyProtocol,
        },
        ConnectError::Malformed(_) | ConnectError::Oversized | ConnectError::Closed { .. } => {
            FailureReason::ProxyProtocol
        }
        ConnectError::Io(_) => FailureReason::ProxyConnect,
    }
}

/// The rustls error somewhere in `err`'s chain.
pub fn find_rustls<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            if let Some(r) = find_rustls(inner) {
                return Some(r);
            }
        }
        current = e.source();
    }
    None
}

/// The reason for a rustls error with the upstream.
pub fn rustls_reason(e: &rustls::Error) -> FailureReason {
    match e {
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => FailureReason::TlsExpired,
        rustls::Error::InvalidCertificate(_) => FailureReason::TlsUntrusted,
        rustls::Error::AlertReceived(alert) if is_client_cert_alert(*alert) => {
            FailureReason::ClientCertRejected
        }
        _ => FailureReason::TlsHandshake,
    }
}

/// Alerts a server sends about the client's certificate (or its absence).
fn is_client_cert_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
    )
}

/// The reason for an error during the TLS stage with the upstream.
pub fn tls_stage_reason(err: &io::Error) -> FailureReason {
    match find_rustls(err) {
        Some(r) => rustls_reason(r),
        None => FailureReason::TlsHandshake,
    }
}

/// The reason for an error after TLS (request, response, body): a TLS alert
/// that arrives late (TLS 1.3 rejects client certificates after the client
/// thinks the handshake is done) keeps its TLS meaning; a timeout is a
/// timeout; anything else is `io`.
pub fn after_tls_reason(err: &(dyn Error + 'static)) -> FailureReason {
    if let Some(r) = find_rustls(err) {
        return rustls_reason(r);
    }
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut {
                return FailureReason::Timeout;
            }
        }
        current = e.source();
    }
    FailureReason::Io
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_or_memory_is_ours_not_the_routes() {
        for errno in [24, 23, 105, 12] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(is_local_exhaustion(&e), "errno {errno}");
            let wrapped = io::Error::other(io::Error::from_raw_os_error(errno));
            assert!(is_local_exhaustion(&wrapped), "wrapped errno {errno}");
        }
        let refused = io::Error::from_raw_os_error(111);
        assert!(!is_local_exhaustion(&refused));
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let dial = |source| DialError::Connect {
            addr,
            source,
            attempts: Default::default(),
        };
        assert_eq!(
            dial(io::Error::from_raw_os_error(24)).reason(),
            FailureReason::LocalExhausted
        );
        assert_eq!(dial(refused).reason(), FailureReason::Connect);
        let proxy = DialError::ProxyConnect {
            proxy: "http://proxy.test:3128".into(),
            addr,
            source: io::Error::from_raw_os_error(23),
            attempts: Default::default(),
        };
        assert_eq!(proxy.reason(), FailureReason::LocalExhausted);
    }

    #[test]
    fn rustls_errors_inside_io_errors_are_found() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::Expired);
        let io = io::Error::new(io::ErrorKind::InvalidData, inner);
        assert_eq!(tls_stage_reason(&io), FailureReason::TlsExpired);
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        assert_eq!(after_tls_reason(&alert), FailureReason::ClientCertRejected);
        let plain = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(after_tls_reason(&plain), FailureReason::Io);
        assert_eq!(tls_stage_reason(&plain), FailureReason::TlsHandshake);
    }
}
