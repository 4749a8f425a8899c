//! The one attempt loop of app traffic, for `CONNECT` and plain `http://`
//! alike: plan the destination against the policy (or refuse it), try the
//! plan's routes in order through the one dialer, report every attempt to
//! the route-state owner, stop early where no other route may be tried
//! (the proxy's own refusal, our own exhaustion), and say what the app
//! hears when no route opens. What is opened on a route (a tunnel, a
//! plain-http path) and what is done with it belongs to the caller.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Proxy;
use super::plan::{self, Plan};
use super::reply::{Answer, Stop, Tried};
use crate::config::{Route, authority};
use crate::dial::DialError;
use crate::generation::Generation;
use crate::health::{HostPort, Snapshot, TrafficResult};
use crate::reason::FailureReason;

/// The `result` label of `egress_forward_connections_total`: its one
/// closed set of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionResult {
    /// The tunnel stood (or the plain request was answered).
    Ok,
    /// An attempt on a route failed.
    Failed,
    /// Our own policy refused the destination.
    Refused,
    /// A direct tunnel closed after fail-back to the proxy.
    ClosedOnFailback,
}

impl ConnectionResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::ClosedOnFailback => "closed_on_failback",
        }
    }
}

/// A request planned: where it goes, the routes to try, and the route
/// state the plan was made from (kept for the whole request).
pub(super) struct Planned {
    /// The destination's host, as the app wrote it.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The target, the routes in order, the address ranges lifted.
    pub plan: Plan,
    /// The route state the plan came from.
    pub snapshot: Arc<Snapshot>,
    /// When the request was read: the wait for a route is measured from here.
    pub received: Instant,
}

impl Planned {
    /// `host:port`.
    pub fn destination(&self) -> String {
        authority(&self.host, self.port)
    }

    /// How long one attempt may take: the target's timeout, or the probe
    /// timeout for a destination of no target.
    pub fn timeout(&self, generation: &Generation) -> Duration {
        self.plan
            .target
            .as_ref()
            .map_or(generation.config.probe.timeout, |t| t.timeout)
    }
}

/// One attempt to open something on a route.
pub(super) type Attempt<'a, T> = Pin<Box<dyn Future<Output = Result<T, DialError>> + Send + 'a>>;

/// A route that opened, and the attempts that failed before it.
pub(super) struct Opened<T> {
    /// The route.
    pub route: Arc<Route>,
    /// What was opened on it.
    pub stream: T,
    /// The routes that failed first, in order.
    pub tried: Vec<Tried>,
}

impl Proxy {
    /// Plans `host:port` against the policy with the latest route state;
    /// the refusal the app hears otherwise (counted and logged).
    pub(super) async fn plan_request(
        &self,
        generation: &Generation,
        host: String,
        port: u16,
        peer: SocketAddr,
    ) -> Result<Planned, Answer> {
        let config = &generation.config;
        let snapshot = self.routing.snapshot();
        let checked = plan::plan_checked(
            config,
            generation.dialer.resolver(),
            &host,
            port,
            config.probe.timeout,
            |t| snapshot.routes_to_try(t),
        );
        match checked.await {
            Ok(plan) => Ok(Planned {
                host,
                port,
                plan,
                snapshot,
                received: Instant::now(),
            }),
            Err(plan::Refused { label, why }) => {
                let destination = authority(&host, port);
                tracing::warn!(client = %peer, destination = %destination, why = %why, "refused by policy");
                self.count(&label, "none", ConnectionResult::Refused);
                Err(Answer::new(403, "http_request_denied", &why))
            }
        }
    }

    /// Tries the plan's routes in order with `open`, reporting each
    /// failure; the first route that opens, or what the app hears.
    pub(super) async fn try_routes<'a, T>(
        &self,
        req: &Planned,
        open: impl Fn(Arc<Route>) -> Attempt<'a, T>,
    ) -> Result<Opened<T>, Answer> {
        let mut tried: Vec<Tried> = Vec::new();
        for route in &req.plan.routes {
            let e = match open(route.clone()).await {
                Ok(stream) => {
                    return Ok(Opened {
                        route: route.clone(),
                        stream,
                        tried,
                    });
                }
                Err(e) => e,
            };
            let t = self.failed(req, route, &e).await;
            let broken = req
                .plan
                .target
                .as_ref()
                .is_some_and(|target| req.snapshot.broken(&target.name, &route.name));
            if let Some(stop) = Stop::after(&t, broken) {
                if stop == Stop::ProxyRefused {
                    tracing::warn!(target = %req.plan.label, route = %route.name, destination = %req.destination(), detail = %t.detail, "the proxy refused the destination by its own policy; obeyed, not retried on another route");
                }
                return Err(Answer::stopped(&req.destination(), &t, stop));
            }
            tried.push(t);
        }
        let not_allowed_direct = req.plan.target.as_ref().is_some_and(|t| !t.allows_direct());
        tracing::error!(target = %req.plan.label, destination = %req.destination(), routes = tried.len(), "every allowed route failed");
        Err(Answer::all_failed(
            &req.destination(),
            &tried,
            not_allowed_direct,
        ))
    }

    /// One failed attempt: reported, counted, logged (our own exhaustion is
    /// summarised by the route-state owner instead).
    async fn failed(&self, req: &Planned, route: &Route, e: &DialError) -> Tried {
        let t = Tried::new(&route.name, e);
        self.report(req, route, Some((t.reason, t.detail.clone())))
            .await;
        if t.reason != FailureReason::LocalExhausted {
            tracing::warn!(target = %req.plan.label, route = %route.name, destination = %req.destination(), reason = %t.reason, detail = %t.detail, "app connection failed on route");
        }
        self.count(&req.plan.label, &route.name, ConnectionResult::Failed);
        t
    }

    /// Tells the route-state owner what an attempt on `route` learned (for
    /// a destination of some target).
    pub(super) async fn report(
        &self,
        req: &Planned,
        route: &Route,
        failure: Option<(FailureReason, String)>,
    ) {
        if let Some(t) = &req.plan.target {
            let result = TrafficResult {
                target: t.name.clone(),
                route: route.name.clone(),
                destination: HostPort::new(&req.host, req.port),
                failure,
            };
            self.routing.report(result).await;
        }
    }

    /// Counts one connection's `result` on `route`.
    pub(super) fn count(&self, target: &str, route: &str, result: ConnectionResult) {
        self.routing
            .metrics()
            .forward_connection(target, route, result.as_str());
    }

    /// For a connection that goes direct: why it bypasses the proxy, told
    /// to the trail's summary (the operational log says the first at once,
    /// then once a minute); the trail line itself is written when it ends.
    pub(super) fn went_direct(&self, req: &Planned, tried: &[Tried]) -> String {
        let label = &req.plan.label;
        let why = if tried.is_empty() {
            req.snapshot.why_not_proxy(label)
        } else {
            tried
                .iter()
                .map(|t| format!("{}: {} ({})", t.route, t.reason, t.detail))
                .collect::<Vec<_>>()
                .join("; ")
        };
        self.routing
            .trail()
            .went_direct(label, &req.destination(), &why);
        why
    }
}
