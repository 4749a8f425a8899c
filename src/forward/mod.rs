//! The forward proxy the app uses as `HTTPS_PROXY`: `CONNECT host:port` and
//! absolute-form `http://` requests. Each destination is matched to a
//! target; the target's active route is tried first through the same dialer
//! the probes use, and the next allowed route at once if it fails before
//! the tunnel stands. The app gets `200 Connection established` only after
//! the upstream tunnel stands, and a `Proxy-Status` error naming the reason
//! when every route failed. Never an open proxy: unmatched destinations
//! follow `[forward] default`, ports are checked, address literals too.
//!
//! Every connection that goes direct is logged with the reason the proxy
//! route was not used, and counted.

pub mod plan;
pub mod relay;
pub mod reply;
pub mod request;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Route, authority};
use crate::dial::{Destination, Phases};
use crate::probe::ProbeOutcome;
use crate::reason::FailureReason;
use crate::sidecar::state::Shared;
use reply::Tried;
use request::Ask;

/// One side of a tunnel that has ended is given this long to follow.
pub const HALF_CLOSE: Duration = Duration::from_secs(30);
/// Descriptors kept free for everything else when capping connections.
const FD_RESERVE: u64 = 128;

/// Open tunnels per route, mirrored in `egress_forward_active_connections`.
#[derive(Debug, Default)]
struct Active {
    counts: Mutex<HashMap<String, u64>>,
}

/// Decrements the route's count when the tunnel ends.
struct ActiveGuard<'a> {
    active: &'a Active,
    shared: &'a Shared,
    route: String,
}

impl Active {
    fn enter<'a>(&'a self, shared: &'a Shared, route: &str) -> ActiveGuard<'a> {
        let n = {
            let mut c = self
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = c.entry(route.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        shared.metrics.forward_active(route, n);
        ActiveGuard {
            active: self,
            shared,
            route: route.to_string(),
        }
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        let n = {
            let mut c = self
                .active
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = c.entry(self.route.clone()).or_insert(1);
            *n = n.saturating_sub(1);
            *n
        };
        self.shared.metrics.forward_active(&self.route, n);
    }
}

/// The most connections served at once: the configured cap, kept below what
/// the descriptor limit allows (each tunnel holds two).
fn connection_cap(configured: u32) -> usize {
    let fd_max = crate::watch::fd_usage(std::path::Path::new("/proc/self")).max;
    let by_fds = fd_max
        .map_or(u64::MAX, |m| m.saturating_sub(FD_RESERVE) / 2)
        .max(1);
    u64::from(configured).min(by_fds) as usize
}

/// Serves the forward proxy on `listener` until `stop` turns true, then
/// waits for the tunnels in flight (the caller bounds how long).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let cap = connection_cap(shared.config().forward.max_connections);
    let slots = Arc::new(Semaphore::new(cap));
    let active = Arc::new(Active::default());
    let mut conns = JoinSet::new();
    let mut backoff = crate::accept::Backoff::default();
    tracing::info!(max_connections = cap, "forward proxy accepting");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (mut tcp, peer) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                backoff.failed("forward proxy", &e).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(cap, "forward proxy at its connection cap; refusing");
            conns.spawn(async move {
                reply::write(
                    &mut tcp,
                    503,
                    "proxy_internal_error",
                    "connection cap reached",
                    "egress-sentinel: too many connections\n",
                )
                .await;
            });
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (shared, active) = (shared.clone(), active.clone());
        conns.spawn(async move {
            let _permit = permit;
            handle(tcp, peer, &shared, &active).await;
        });
    }
    drop(listener);
    let open = conns.len();
    if open > 0 {
        tracing::info!(open, "forward proxy draining tunnels");
    }
    while conns.join_next().await.is_some() {}
}

async fn handle(mut app: TcpStream, peer: SocketAddr, shared: &Shared, active: &Active) {
    let config = shared.config();
    let (ask, early) = match request::read(&mut app, config.forward.header_timeout).await {
        Ok(r) => r,
        Err(refusal) => {
            tracing::info!(client = %peer, status = refusal.status, why = %refusal.why, "refused a malformed request");
            reply::write(
                &mut app,
                refusal.status,
                "http_request_error",
                &refusal.why,
                &format!("egress-sentinel: {}\n", refusal.why),
            )
            .await;
            return;
        }
    };
    let (host, port) = match &ask {
        Ask::Connect { host, port } | Ask::Http { host, port, .. } => (host.clone(), *port),
    };
    let destination = authority(&host, port);
    let plan = match plan::plan(&config, &host, port, |t| shared.route_choice(t)) {
        Ok(p) => p,
        Err(plan::Refused { label, why }) => {
            tracing::warn!(client = %peer, destination = %destination, why = %why, "refused by policy");
            shared.metrics.forward_connection(&label, "none", "refused");
            reply::write(
                &mut app,
                403,
                "http_request_denied",
                &why,
                &format!("egress-sentinel: {why}\n"),
            )
            .await;
            return;
        }
    };
    let timeout = plan
        .target
        .as_ref()
        .map_or(config.probe.timeout, |t| t.timeout);
    let dialer = shared.dialer();
    let mut tried: Vec<Tried> = Vec::new();
    for route in &plan.routes {
        let mut phases = Phases::default();
        let dest = Destination {
            host: &host,
            port,
            allow: &plan.allow,
        };
        match dialer
            .open(route, dest, Instant::now() + timeout, &mut phases)
            .await
        {
            Ok(tunnel) => {
                if let Some(t) = &plan.target {
                    shared.record_traffic(&ProbeOutcome::observed(
                        &t.name,
                        &route.name,
                        FailureReason::Ok,
                        "app tunnel established",
                    ));
                }
                if route.is_direct() {
                    log_direct(shared, &plan.label, &destination, &tried);
                }
                shared
                    .metrics
                    .forward_connection(&plan.label, &route.name, "ok");
                let _guard = active.enter(shared, &route.name);
                serve_tunnel(app, tunnel.stream, ask, early, &config.forward, route).await;
                return;
            }
            Err(e) => {
                let reason = e.reason();
                tracing::warn!(target_name = %plan.label, route = %route.name, destination = %destination, reason = %reason, detail = %e, "app connection failed on route");
                shared
                    .metrics
                    .forward_connection(&plan.label, &route.name, "failed");
                if let Some(t) = &plan.target {
                    shared.record_traffic(&ProbeOutcome::observed(
                        &t.name,
                        &route.name,
                        reason,
                        e.to_string(),
                    ));
                }
                tried.push(Tried {
                    route: route.name.clone(),
                    reason,
                    detail: e.to_string(),
                });
            }
        }
    }
    let not_allowed_direct = plan.target.as_ref().is_some_and(|t| !t.allows_direct());
    tracing::error!(target_name = %plan.label, destination = %destination, routes = tried.len(), "every allowed route failed");
    reply::all_failed(&mut app, &destination, &tried, not_allowed_direct).await;
}

/// The compliance trail: why this connection bypassed the proxy.
fn log_direct(shared: &Shared, target: &str, destination: &str, tried: &[Tried]) {
    let why = if tried.is_empty() {
        shared.proxy_state_summary(target)
    } else {
        tried
            .iter()
            .map(|t| format!("{}: {} ({})", t.route, t.reason, t.detail))
            .collect::<Vec<_>>()
            .join("; ")
    };
    tracing::warn!(target_name = %target, destination = %destination, why = %why, "app connection went DIRECT, bypassing the proxy");
}

async fn serve_tunnel(
    mut app: TcpStream,
    mut upstream: crate::dial::BoxStream,
    ask: Ask,
    early: bytes::Bytes,
    settings: &crate::config::ForwardSettings,
    route: &Route,
) {
    let prelude: &[u8] = match &ask {
        Ask::Connect { .. } => {
            if app
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            &[]
        }
        Ask::Http { head, .. } => head,
    };
    if !prelude.is_empty() && upstream.write_all(prelude).await.is_err() {
        return;
    }
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        return;
    }
    let moved = relay::relay(app, upstream, settings.idle_timeout, HALF_CLOSE).await;
    tracing::debug!(route = %route.name, up = moved.up, down = moved.down, "tunnel closed");
}
