//! Routes and name overrides: the dialer's own vocabulary. A [`Route`] is a
//! way out (direct, or through a forward proxy); [`ResolveOverrides`] is the
//! `[resolve]` table. `config` compiles into these types; nothing here reads
//! a file or knows the TOML schema.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use http::HeaderValue;

use super::tls::TlsClient;
use crate::secret::Secret;

/// Host name → addresses. An empty list makes the name fail to resolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveOverrides(pub HashMap<String, Vec<IpAddr>>);

impl ResolveOverrides {
    /// The override for `host` (case-insensitive), if any.
    pub fn get(&self, host: &str) -> Option<&[IpAddr]> {
        self.0.get(&host.to_ascii_lowercase()).map(Vec::as_slice)
    }
}

/// A way out: `direct`, or through a forward proxy.
#[derive(Debug)]
pub struct Route {
    /// The route's name (a metric label).
    pub name: String,
    /// Direct, or the proxy it goes through.
    pub kind: RouteKind,
    /// Budget for reaching the proxy and getting its CONNECT reply.
    pub connect_timeout: Duration,
    /// Identifies the route's settings: equal fingerprints, same route.
    pub fingerprint: u64,
}

impl Route {
    /// The name of the implicit direct route.
    pub const DIRECT: &'static str = "direct";

    /// True for the direct route.
    pub fn is_direct(&self) -> bool {
        matches!(self.kind, RouteKind::Direct)
    }

    /// The proxy, for a proxy route.
    pub fn proxy(&self) -> Option<&Proxy> {
        match &self.kind {
            RouteKind::Direct => None,
            RouteKind::Proxy(p) => Some(p),
        }
    }
}

/// What a route goes through.
#[derive(Debug)]
pub enum RouteKind {
    /// Straight to the destination.
    Direct,
    /// Through a forward proxy.
    Proxy(Proxy),
}

/// A forward proxy.
#[derive(Debug)]
pub struct Proxy {
    /// The proxy's host name or address.
    pub host: String,
    /// The proxy's port.
    pub port: u16,
    /// TLS to the proxy itself, for an `https://` proxy.
    pub tls: Option<TlsClient>,
    /// The `Proxy-Authorization` value, when credentials are configured.
    pub authorization: Option<Secret<HeaderValue>>,
}

impl Proxy {
    /// `http://host:port` or `https://host:port`, never with credentials.
    pub fn display(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", authority(&self.host, self.port))
    }
}

/// `host:port`, with brackets around an IPv6 literal.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
