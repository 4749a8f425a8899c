//! [`DialError`]: a failure to open a stream, one variant per stage and
//! side (toward the proxy, or past it), with the messages people read.
//!
//! Owns the wording of dial failures and the stage each one names; the
//! messages are a contract (tests, logs and reports quote them). It never
//! maps an error to a failure reason: that is `classify`'s.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Attempts, ConnectError, ConnectReply, ResolveError, fmt_duration};
use crate::policy::AddressDenied;
use crate::reason::Phase;

/// A failure to open a stream, naming the stage.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Our address policy refused every address of the destination.
    #[error("{host}: {source}")]
    Policy {
        /// The destination.
        host: String,
        /// The refusal.
        source: AddressDenied,
    },
    /// The proxy's name did not resolve.
    #[error("resolving proxy {proxy}: {source}")]
    ProxyResolve {
        /// The proxy, `scheme://host:port`.
        proxy: String,
        /// Why.
        source: ResolveError,
    },
    /// TCP to the proxy failed.
    #[error("connecting to proxy {proxy} ({addr}): {source}{}", tried(attempts))]
    ProxyConnect {
        /// The proxy.
        proxy: String,
        /// The address tried last.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
        /// Every address tried.
        attempts: Attempts,
    },
    /// TLS to an `https://` proxy failed.
    #[error("TLS to proxy {proxy}: {source}")]
    ProxyTls {
        /// The proxy.
        proxy: String,
        /// Why.
        source: io::Error,
    },
    /// A stage toward the proxy ran out of time.
    #[error("{phase} with proxy {proxy} timed out after {}{}", fmt_duration(*after), tried(attempts))]
    ProxyTimeout {
        /// The stage.
        phase: Phase,
        /// The proxy.
        proxy: String,
        /// How long it ran.
        after: Duration,
        /// The addresses tried, when the TCP step timed out.
        attempts: Attempts,
    },
    /// The CONNECT exchange failed.
    #[error("{}", TunnelDisplay { authority, source })]
    Tunnel {
        /// The authority asked for (`host:port`).
        authority: String,
        /// Why.
        source: ConnectError,
    },
    /// The destination's name did not resolve.
    #[error("resolving {host}: {source}")]
    Resolve {
        /// The destination.
        host: String,
        /// Why.
        source: ResolveError,
    },
    /// TCP to the destination failed.
    #[error("connecting to {addr}: {source}{}", tried(attempts))]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
        /// Every address tried.
        attempts: Attempts,
    },
    /// A stage past the proxy ran out of time.
    #[error("{phase} timed out after {}{}", fmt_duration(*after), tried(attempts))]
    Timeout {
        /// The stage.
        phase: Phase,
        /// How long it ran.
        after: Duration,
        /// The addresses tried, when the TCP step timed out.
        attempts: Attempts,
    },
}

/// `; addresses tried: ...` when more than one address was tried.
fn tried(attempts: &Attempts) -> String {
    if attempts.worth_reporting() {
        format!("; addresses tried: {attempts}")
    } else {
        String::new()
    }
}

struct TunnelDisplay<'a> {
    authority: &'a str,
    source: &'a ConnectError,
}

impl fmt::Display for TunnelDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            ConnectError::Refused(reply) => write!(f, "CONNECT {} -> {reply}", self.authority),
            other => write!(f, "CONNECT {}: {other}", self.authority),
        }
    }
}

impl DialError {
    /// The stage that failed.
    pub fn phase(&self) -> Phase {
        match self {
            Self::Policy { .. } | Self::ProxyResolve { .. } | Self::Resolve { .. } => {
                Phase::Resolve
            }
            Self::ProxyConnect { .. } | Self::ProxyTls { .. } | Self::Connect { .. } => {
                Phase::Connect
            }
            Self::Tunnel { .. } => Phase::Tunnel,
            Self::ProxyTimeout { phase, .. } | Self::Timeout { phase, .. } => *phase,
        }
    }

    /// The proxy's CONNECT reply, when it refused.
    pub fn connect_reply(&self) -> Option<&ConnectReply> {
        match self {
            Self::Tunnel {
                source: ConnectError::Refused(r),
                ..
            } => Some(r.as_ref()),
            _ => None,
        }
    }
}
