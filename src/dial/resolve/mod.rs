//! Name resolution for the dialer: IP literals (in any spelling the
//! destination parser accepts) and `localhost` as what they mean, then the
//! config's `[resolve]` overrides (tests, the demo and pinned upstreams use
//! them), then DNS with hickory: the `[dns] nameservers`, or the system's
//! `/etc/resolv.conf` (and `/etc/hosts`) when none are set. Something that
//! is neither a name nor an address never reaches DNS.
//!
//! A failed lookup says what failed — NXDOMAIN, NODATA, SERVFAIL, REFUSED,
//! a timeout — and which nameservers were asked, so an operator can tell a
//! deleted record from a broken or slow resolver. The dialer's lookups end
//! by its deadline with such an answer (a timeout is a DNS failure of the
//! name, not a stall of the probe).
//!
//! Owns: the resolver of a generation (built once, shared by probes and app
//! traffic, its cache bounded so a changed answer shows at the next probe).
//! Never reads a file: `config` reads resolv.conf and the hosts file.
//!
//! # Layout
//! - this file: [`Resolver`], [`ResolveSettings`], [`ResolveError`].
//! - `dns`: the hickory resolver, its settings and the failure kinds.
//! - `system`: what resolv.conf and the hosts file say.

mod dns;
mod system;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::time::Instant;

use super::route::ResolveOverrides;
use crate::destination::{Host, HostError, LOCALHOST, parse_host};
pub use dns::{DnsError, DnsFailure, DnsSettings, Nameservers};
pub use system::{HOSTS_FILE, RESOLV_CONF, SystemDns};

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The override maps the name to no address.
    #[error("the [resolve] override maps {0} to no address")]
    Blackholed(String),
    /// DNS answered with an error, or not at all.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// The system's resolver failed on an address with a zone id.
    #[error("{0}")]
    Lookup(io::Error),
    /// The system's resolver found no address for an address with a zone id.
    #[error("no address for {0}")]
    Empty(String),
    /// The host is neither a DNS name nor an IP address.
    #[error(transparent)]
    Invalid(#[from] HostError),
}

impl ResolveError {
    /// True when the lookup failed because this process ran out of
    /// descriptors or memory (opening a socket to a nameserver, or in the
    /// system's resolver).
    pub fn is_local_exhaustion(&self) -> bool {
        match self {
            Self::Dns(e) => matches!(e.failure, DnsFailure::LocalExhausted(_)),
            Self::Lookup(io) => crate::dial::classify::is_local_exhaustion(io),
            _ => false,
        }
    }

    /// What DNS said, when the failure came from DNS.
    pub fn dns(&self) -> Option<&DnsFailure> {
        match self {
            Self::Dns(e) => Some(&e.failure),
            _ => None,
        }
    }
}

/// How names resolve: the `[resolve]` overrides first, then DNS.
#[derive(Debug, Default)]
pub struct ResolveSettings {
    /// The `[resolve]` table.
    pub overrides: ResolveOverrides,
    /// `[dns]`: where and how names are asked.
    pub dns: DnsSettings,
}

impl ResolveSettings {
    /// The `[resolve]` override for `host` (case-insensitive), if any.
    pub fn get(&self, host: &str) -> Option<&[IpAddr]> {
        self.overrides.get(host)
    }
}

/// Resolves host names, overrides first. Cheap to clone: clones share one
/// DNS client and its cache.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// The overrides and DNS settings.
    settings: Arc<ResolveSettings>,
    /// The DNS client built from them.
    dns: dns::Dns,
}

impl Resolver {
    /// A resolver with these settings. Builds the DNS client (no I/O: it
    /// connects at the first query).
    pub fn new(settings: Arc<ResolveSettings>) -> Self {
        let dns = dns::Dns::new(&settings.dns);
        Self { settings, dns }
    }

    /// The addresses of `host` (a name or an IP literal), with `port`. A
    /// DNS lookup ends by the `[dns]` timeout and attempts.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        self.lookup(host, port, None).await
    }

    /// [`resolve`](Self::resolve), ending by `deadline` at the latest: a
    /// lookup still unanswered then fails as a DNS timeout that names the
    /// nameservers asked.
    pub async fn resolve_by(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        self.lookup(host, port, Some(deadline)).await
    }

    async fn lookup(
        &self,
        host: &str,
        port: u16,
        deadline: Option<Instant>,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
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
            zoned @ Host::Ip { .. } => return zoned_literal(&zoned.to_string(), port).await,
            Host::Name(name) => name,
        };
        if let Some(ips) = self.settings.get(&name) {
            if ips.is_empty() {
                return Err(ResolveError::Blackholed(name));
            }
            return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        if let Some(ips) = self.settings.dns.hosts_file(&name) {
            return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        let ips = self.dns.lookup(&name, deadline).await?;
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// An IPv6 literal with a zone id, through the system's getaddrinfo (which
/// reads it without DNS).
async fn zoned_literal(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(ResolveError::Lookup)?
        .collect();
    if addrs.is_empty() {
        return Err(ResolveError::Empty(host.to_string()));
    }
    Ok(addrs)
}
