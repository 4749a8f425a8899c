//! Name resolution for the dialer: the config's `[resolve]` overrides first
//! (tests, the demo and pinned upstreams use them), IP literals as they are,
//! then the system resolver. Every call is bounded by the caller's deadline.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::route::ResolveOverrides;

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
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
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
