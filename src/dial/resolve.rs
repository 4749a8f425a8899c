//! Name resolution for the dialer: IP literals (in any spelling the
//! destination parser accepts) and `localhost` as what they mean, then the
//! config's `[resolve]` overrides (tests, the demo and pinned upstreams use
//! them), then the system resolver. Something that is neither a name nor an
//! address never reaches the system resolver. Every call is bounded by the
//! caller's deadline.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::route::ResolveOverrides;
use crate::destination::{Host, HostError, LOCALHOST, parse_host};

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The override maps the name to no address.
    #[error("the [resolve] override maps {0} to no address")]
    Blackholed(String),
    /// The system resolver failed.
    #[error("{0}")]
    Lookup(io::Error),
    /// The system resolver answered with no address.
    #[error("no address for {0}")]
    Empty(String),
    /// The host is neither a DNS name nor an IP address.
    #[error(transparent)]
    Invalid(#[from] HostError),
}

/// Resolves host names, overrides first.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// The `[resolve]` table.
    overrides: Arc<ResolveOverrides>,
}

impl Resolver {
    /// A resolver with these overrides.
    pub fn new(overrides: Arc<ResolveOverrides>) -> Self {
        Self { overrides }
    }

    /// The addresses of `host` (a name or an IP literal), with `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let name = match parse_host(host)? {
            Host::Ip { addr, zone: None } => return Ok(vec![SocketAddr::new(addr, port)]),
            Host::Localhost(_) => {
                return Ok(LOCALHOST
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect());
            }
            // A zone id needs the interface's index: the system's
            // getaddrinfo reads numeric hosts with a scope without DNS.
            zoned @ Host::Ip { .. } => zoned.to_string(),
            Host::Name(name) => name,
        };
        let host = name.as_str();
        if let Some(ips) = self.overrides.get(host) {
            if ips.is_empty() {
                return Err(ResolveError::Blackholed(host.to_string()));
            }
            return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(ResolveError::Lookup)?
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::Empty(host.to_string()));
        }
        Ok(addrs)
    }
}
