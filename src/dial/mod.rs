//! The dialer: the one path every connection takes, probes and app traffic
//! alike. It opens a byte stream to a destination over a route, stage by
//! stage — resolve → TCP connect → (proxy) CONNECT → — timing each stage and
//! failing with a typed [`DialError`] that names the stage. TLS with the
//! upstream is a separate stage ([`tls::TlsClient::handshake`]) that probes
//! add and tunnelled app traffic does not (the app does its own TLS).
//!
//! Owns the address policy's enforcement for direct dials: resolve once,
//! check every address, dial exactly a checked address.
//! Never retries on another route: choosing routes is the caller's job.
//!
//! # Layout
//! - `mod.rs`: the [`Dialer`] and what it hands out ([`Tunnel`],
//!   [`HttpPath`]).
//! - `error`: [`DialError`], one variant per stage, and its messages.
//! - `phases`: the stages' [`Phases`] durations, `timed`, [`fmt_duration`].
//! - [`resolve`], [`eyeballs`], [`connect`], [`tls`], [`identity`]: the
//!   stages (names, TCP, CONNECT, TLS, client certificates).
//! - [`addresses`]: each address behind a proxy's name, checked.
//! - [`classify`]: typed errors to the closed failure reasons.
//! - [`route`], [`stream`]: the routes and the byte streams.

pub(crate) mod addresses;
pub(crate) mod classify;
pub mod connect;
mod error;
pub mod eyeballs;
pub mod identity;
mod phases;
pub mod resolve;
pub(crate) mod route;
pub(crate) mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::pin::Pin;

use tokio::time::Instant;

use crate::policy::{Cidr, check_address};
use crate::reason::Phase;
pub use connect::{ConnectError, ConnectReply};
pub use error::DialError;
use eyeballs::ATTEMPT_DELAY;
pub use eyeballs::Attempts;
pub(crate) use phases::timed;
pub use phases::{Phases, fmt_duration};
pub use resolve::{ResolveError, Resolver};
pub use route::{Route, RouteKind, authority};
pub use stream::BoxStream;

/// Where a connection should end up.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// Host name or IP literal (no brackets).
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Address ranges the target lifts from the policy.
    pub allow: &'a [Cidr],
}

/// An open stream to the destination (through the proxy's tunnel, or direct).
pub struct Tunnel {
    /// The bytes to and from the destination.
    pub stream: BoxStream,
    /// The proxy's CONNECT reply, on a proxy route.
    pub connect: Option<ConnectReply>,
    /// The address dialed: the proxy's, or the destination's.
    pub peer: SocketAddr,
    /// Every address tried to get `peer` (Happy Eyeballs).
    pub attempts: Attempts,
}

/// A stream for plain `http://` requests: to the origin, or to a proxy
/// that takes them in absolute form.
pub struct HttpPath {
    /// The connection.
    pub stream: BoxStream,
    /// The address dialed.
    pub peer: SocketAddr,
    /// The proxy, when the stream goes to one.
    pub proxy: Option<ProxyHop>,
}

/// What a request sent to a proxy in absolute form needs of it.
#[derive(Debug, Clone)]
pub struct ProxyHop {
    /// `http://host:port` of the proxy, for reports.
    pub name: String,
    /// The route's `Proxy-Authorization`, if it has credentials.
    pub authorization: Option<crate::secret::Secret<http::HeaderValue>>,
}

/// Runs the futures at once; their outputs in order.
async fn join_all<F: Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Opens streams over routes. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    /// Our resolver (overrides first).
    resolver: Resolver,
    /// Which proxy addresses failed their last check (shared by clones).
    addresses: std::sync::Arc<addresses::AddressHealth>,
}

impl Dialer {
    /// A dialer resolving with `resolver`.
    pub fn new(resolver: Resolver) -> Self {
        Self {
            resolver,
            addresses: Default::default(),
        }
    }

    /// The resolver it dials with (the forward proxy's guard checks names
    /// with the same one).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Opens a stream to `dest` over `route`, recording phase times into
    /// `phases`. Every stage ends by `deadline`; stages toward a proxy also
    /// by the route's `connect_timeout`.
    pub async fn open(
        &self,
        route: &Route,
        dest: Destination<'_>,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<Tunnel, DialError> {
        let RouteKind::Proxy(proxy) = &route.kind else {
            return self.direct(dest, deadline, phases).await;
        };
        let proxy_deadline = deadline.min(Instant::now() + route.connect_timeout);
        let (stream, peer, attempts) = self.reach_proxy(proxy, proxy_deadline, phases).await?;
        let target = authority(dest.host, dest.port);
        let (stream, reply) = timed(
            phases,
            Phase::Tunnel,
            proxy_deadline,
            connect::exchange(stream, &target, proxy.authorization.as_ref()),
        )
        .await
        .map_err(|after| DialError::ProxyTimeout {
            phase: Phase::Tunnel,
            proxy: proxy.display(),
            after,
            attempts: Attempts::default(),
        })?
        .map_err(|source| DialError::Tunnel {
            authority: target.clone(),
            source,
        })?;
        Ok(Tunnel {
            stream,
            connect: Some(reply),
            peer,
            attempts,
        })
    }

    /// Opens the way for one plain `http://` request to `dest` over `route`:
    /// on a proxy route, a connection to the proxy itself (the request then
    /// goes in absolute form, with the route's credentials: proxies such as
    /// Squid refuse `CONNECT` to port 80); direct, a connection to the
    /// origin. Probes of `http://` targets and the app's plain requests both
    /// take this path.
    pub async fn open_http(
        &self,
        route: &Route,
        dest: Destination<'_>,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<HttpPath, DialError> {
        match &route.kind {
            RouteKind::Direct => {
                let t = self.direct(dest, deadline, phases).await?;
                Ok(HttpPath {
                    stream: t.stream,
                    peer: t.peer,
                    proxy: None,
                })
            }
            RouteKind::Proxy(proxy) => {
                let proxy_deadline = deadline.min(Instant::now() + route.connect_timeout);
                let (stream, peer, _) = self.reach_proxy(proxy, proxy_deadline, phases).await?;
                Ok(HttpPath {
                    stream,
                    peer,
                    proxy: Some(ProxyHop {
                        name: proxy.display(),
                        authorization: proxy.authorization.clone(),
                    }),
                })
            }
        }
    }

    /// When `route` is a proxy whose name has several addresses: checks
    /// each of the first [`addresses::MAX_CHECKED`] through the route's own
    /// stages (TCP, TLS to an `https://` proxy, CONNECT to `dest`), at once,
    /// within `deadline` and the route's `connect_timeout`. Empty for direct
    /// routes and single-address proxies. App connections then try the
    /// addresses that passed first.
    pub async fn check_proxy_addresses(
        &self,
        route: &Route,
        dest: Destination<'_>,
        deadline: Instant,
    ) -> Vec<addresses::AddressCheck> {
        let RouteKind::Proxy(proxy) = &route.kind else {
            return Vec::new();
        };
        let deadline = deadline.min(Instant::now() + route.connect_timeout);
        let Ok(addrs) = self
            .resolver
            .resolve_by(&proxy.host, proxy.port, deadline)
            .await
        else {
            return Vec::new();
        };
        if addrs.len() < 2 {
            return Vec::new();
        }
        let target = authority(dest.host, dest.port);
        let checks = addrs
            .iter()
            .take(addresses::MAX_CHECKED)
            .map(|addr| addresses::check(*addr, proxy, &target, deadline));
        let checks: Vec<_> = join_all(checks).await.into_iter().flatten().collect();
        self.addresses.record(&checks);
        checks
    }

    /// Resolve → TCP, Happy Eyeballs over the proxy's addresses (→ TLS for
    /// an `https://` proxy): a stream to the proxy, and the addresses tried.
    async fn reach_proxy(
        &self,
        proxy: &route::Proxy,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<(BoxStream, SocketAddr, Attempts), DialError> {
        let name = proxy.display();
        let addrs = timed(
            phases,
            Phase::Resolve,
            deadline,
            self.resolver.resolve_by(&proxy.host, proxy.port, deadline),
        )
        .await
        .map_err(|after| DialError::ProxyTimeout {
            phase: Phase::Resolve,
            proxy: name.clone(),
            after,
            attempts: Attempts::default(),
        })?
        .map_err(|source| DialError::ProxyResolve {
            proxy: name.clone(),
            source,
        })?;
        let addrs = self.addresses.prefer_working(addrs);
        let mut attempts = Attempts::default();
        let connected = timed(phases, Phase::Connect, deadline, async {
            let (tcp, peer) = eyeballs::connect(&addrs, ATTEMPT_DELAY, &mut attempts)
                .await
                .map_err(|(addr, source)| DialError::ProxyConnect {
                    proxy: name.clone(),
                    addr,
                    source,
                    attempts: attempts.clone(),
                })?;
            let stream: BoxStream = Box::new(tcp);
            match &proxy.tls {
                None => Ok((stream, peer)),
                Some(tls) => tls
                    .handshake(stream, &proxy.host)
                    .await
                    .map(|(s, _)| (s, peer))
                    .map_err(|f| DialError::ProxyTls {
                        proxy: name.clone(),
                        source: f.error,
                    }),
            }
        })
        .await;
        let (stream, peer) = connected.map_err(|after| DialError::ProxyTimeout {
            phase: Phase::Connect,
            proxy: name.clone(),
            after,
            attempts: attempts.clone(),
        })??;
        Ok((stream, peer, attempts))
    }

    async fn direct(
        &self,
        dest: Destination<'_>,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<Tunnel, DialError> {
        let timeout = |phase, after| DialError::Timeout {
            phase,
            after,
            attempts: Attempts::default(),
        };
        let resolved = timed(
            phases,
            Phase::Resolve,
            deadline,
            self.resolver.resolve_by(dest.host, dest.port, deadline),
        )
        .await
        .map_err(|after| timeout(Phase::Resolve, after))?
        .map_err(|source| DialError::Resolve {
            host: dest.host.to_string(),
            source,
        })?;
        // Resolve once, check every address, dial only checked ones: a name
        // that also points at a denied range is refused outright, so an
        // attacker cannot rely on which address is tried first.
        for addr in &resolved {
            check_address(addr.ip(), dest.allow).map_err(|source| DialError::Policy {
                host: dest.host.to_string(),
                source,
            })?;
        }
        let mut attempts = Attempts::default();
        let connected = timed(
            phases,
            Phase::Connect,
            deadline,
            eyeballs::connect(&resolved, ATTEMPT_DELAY, &mut attempts),
        )
        .await;
        let (tcp, peer) = connected
            .map_err(|after| DialError::Timeout {
                phase: Phase::Connect,
                after,
                attempts: attempts.clone(),
            })?
            .map_err(|(addr, source)| DialError::Connect {
                addr,
                source,
                attempts: attempts.clone(),
            })?;
        Ok(Tunnel {
            stream: Box::new(tcp),
            connect: None,
            peer,
            attempts,
        })
    }
}
