//! The sidecar's own HTTP listeners: metrics (`/metrics`, `/healthz`,
//! `/readyz`) and admin (`/` the status page, `/status`, `/history`, `POST /verify`,
//! `POST /routes/<target>`). Accepting is [`crate::accept`]'s job; this module
//! owns what is said on a connection: the routing, the admin checks
//! ([`super::admin`]) in front of every state change, and the bounds on
//! what a client may hold:
//!
//! - a request head within [`HEADER_TIMEOUT`] (hyper's timer is set, or
//!   its timeout does nothing) and [`MAX_HEAD`] bytes, a body within
//!   [`BODY_TIMEOUT`] and [`MAX_BODY`] bytes;
//! - past [`SOFT_CAP`] open connections, a new one closes the connection
//!   that has waited longest on its client (for a request head, between
//!   requests, or mid-body) instead of being refused, as nginx reuses idle
//!   connections when `worker_connections` runs out: 100 clients stalled
//!   mid-body cannot lock `/status` or `/healthz` out. Only connections
//!   the sidecar is working for count toward the accept loop's hard cap.
//!
//! # Layout
//! - this file: the bounds, [`Endpoints`] and its routing (`Endpoints::handle`),
//!   the admin checks in front of state changes, `/metrics`, `/healthz`,
//!   `/readyz`, `/` and `/status`;
//! - `listener`: one listener's connections: hyper's head bounds, the
//!   open connections and the eviction past [`SOFT_CAP`];
//! - `body`: reading a request body within [`MAX_BODY`] and [`BODY_TIMEOUT`];
//! - `reply`: [`Reply`] and the helpers that shape one;
//! - `history`: `GET /history`, the last hour per target × route as JSON;
//! - `verify`: `POST /verify`, one shared run and its cool-down;
//! - `overrides`: `POST /routes/<target>`, the operator's override.

mod body;
mod history;
mod listener;
mod overrides;
mod reply;
mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, Request, StatusCode, header};
use hyper::body::Incoming;

use super::runtime::Runtime;
use super::{admin, page, status};
use body::read_json;
use reply::{closing, json, reply, text};
use verify::VerifyGate;

pub use listener::{Conn, spawn};
pub use reply::Reply;

/// Open connections per listener before a new one evicts the connection
/// that has waited longest on its client.
pub const SOFT_CAP: usize = 64;
/// Connections per listener at most (the accept loop closes the ones
/// over it): reached only when this many are being worked for at once.
pub const HARD_CAP: usize = 128;
/// Time allowed for a request head (and for the next one on a keep-alive
/// connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head (start line and headers), answered 431 past it.
pub const MAX_HEAD: usize = 16 * 1024;
/// Time allowed for a request body, whole.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body read (admin bodies are a few bytes of JSON).
pub const MAX_BODY: usize = 64 * 1024;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `/metrics`, `/healthz`, `/readyz`.
    Metrics,
    /// `/status`, `POST /verify`.
    Admin,
}

/// What the handlers need.
#[derive(Debug)]
pub struct Endpoints {
    /// The sidecar's state.
    pub rt: Arc<Runtime>,
    /// False until every listener is up, and again once shutdown begins.
    pub ready: AtomicBool,
    /// `POST /verify` coordination.
    verify: tokio::sync::Mutex<VerifyGate>,
    /// Held while a detailed descriptor sample runs (one at a time): when
    /// the next may run.
    fd_detail: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A detailed descriptor sample waits this many times as long as the last
/// one took: reading the TCP tables costs with every socket of the network
/// namespace, TIME_WAIT included (a namespace busy with short connections
/// holds tens of thousands), and the watch may spend at most 1 % of a core
/// on it.
const FD_DETAIL_DUTY: u32 = 100;
/// ... but never waits longer than this: with the upkeep's 10 s between
/// chances, inside the registry's idle timeout (at least 60 s), so the
/// gauges it sets never go idle.
const FD_DETAIL_MAX_GAP: std::time::Duration = std::time::Duration::from_secs(40);

/// How long after a detailed sample that took `took` the next may run.
fn fd_detail_gap(took: std::time::Duration) -> std::time::Duration {
    took.saturating_mul(FD_DETAIL_DUTY).min(FD_DETAIL_MAX_GAP)
}

impl Endpoints {
    /// Handlers over `shared`.
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self {
            rt,
            ready: AtomicBool::new(false),
            verify: tokio::sync::Mutex::new(VerifyGate::default()),
            fd_detail: std::sync::Mutex::new(None),
        }
    }

    /// Routes one request of `surface` to its handler.
    async fn handle(
        self: Arc<Self>,
        surface: Surface,
        req: Request<Incoming>,
        conn: &Conn,
    ) -> Reply {
        let path = req.uri().path().to_string();
        match (surface, req.method(), path.as_str()) {
            (Surface::Metrics, &Method::GET, "/metrics") => {
                self.record_fds();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.rt.metrics.render(),
                )
            }
            (Surface::Metrics, &Method::GET, "/healthz") => self.liveness(),
            (Surface::Metrics, &Method::GET, "/readyz") => {
                if self.ready.load(Ordering::SeqCst) {
                    text(StatusCode::OK, "ready")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }
            (Surface::Admin, &Method::GET, "/") => {
                let mut r = reply(StatusCode::OK, "text/html", page::render(&self.rt));
                for (k, v) in page::headers() {
                    r.headers_mut()
                        .insert(k, header::HeaderValue::from_static(v));
                }
                r
            }
            (Surface::Admin, &Method::GET, "/status") => {
                json(StatusCode::OK, status::render(&self.rt))
            }
            (Surface::Admin, &Method::GET, "/history") => {
                let snapshot = self.rt.snapshot();
                let body = history::render(
                    &self.rt.config(),
                    &snapshot.history,
                    &snapshot.incidents,
                    std::time::SystemTime::now(),
                );
                json(StatusCode::OK, body)
            }
            (Surface::Admin, &Method::POST, "/verify") => {
                if let Err(r) = self.admit(&req, conn).await {
                    return r;
                }
                if let Err(r) = read_json(req.into_body(), conn).await {
                    return r;
                }
                self.clone().verify().await
            }
            (Surface::Admin, &Method::POST, p) if p.starts_with("/routes/") => {
                if let Err(r) = self.admit(&req, conn).await {
                    return r;
                }
                self.post_override(req, conn).await
            }
            (Surface::Metrics, _, "/metrics" | "/healthz" | "/readyz")
            | (Surface::Admin, _, "/" | "/status" | "/history" | "/verify") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// The admin checks in front of a state change (see [`admin`]); a
    /// refusal is logged (without the token) and answered, and the
    /// connection closed, its body unread.
    async fn admit(&self, req: &Request<Incoming>, conn: &Conn) -> Result<(), Reply> {
        let config = self.rt.config();
        let guard = admin::Guard {
            local: conn.local,
            peer: conn.peer,
            token: config.admin.token.as_ref(),
            hosts: &config.admin.hosts,
        };
        admin::check(req.headers(), &guard).map_err(|refusal| {
            tracing::warn!(
                peer = %conn.peer,
                method = %req.method(),
                path = %req.uri().path(),
                why = %refusal,
                "admin request refused"
            );
            closing(text(refusal.status(), &refusal.to_string()))
        })
    }

    /// `/healthz`: alive while the scheduler makes progress. Fails when some
    /// pair's last probe finished longer ago than three intervals plus the
    /// longest timeout (a wedged scheduler must not look healthy for ever);
    /// upstream health plays no part.
    fn liveness(&self) -> Reply {
        let config = self.rt.config();
        let longest = config
            .targets
            .iter()
            .map(|t| t.timeout)
            .max()
            .unwrap_or(config.probe.timeout);
        let bound = config.probe.interval * 3 + longest;
        match self.rt.snapshot().stalest_pair(tokio::time::Instant::now()) {
            Some((target, route, age)) if age > bound => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "probes stalled: {target}/{route} last finished {:.1}s ago (bound {:.1}s)",
                    age.as_secs_f64(),
                    bound.as_secs_f64()
                ),
            ),
            _ => text(StatusCode::OK, "ok"),
        }
    }

    /// Updates the descriptor gauges of this process and the watched ones
    /// by kind (at scrape time, so they are current: one `readlink` per
    /// descriptor).
    pub fn record_fds(&self) {
        let sample = crate::watch::sample_kinds(&self.rt.config().watch_processes);
        self.rt.metrics.record_watch(&sample);
    }

    /// The whole sample, TCP sockets by state included. Reading the TCP
    /// tables costs with every socket of the network namespace (tens of ms
    /// with thousands): run it on a blocking thread, at upkeep. A sample
    /// still running, or one due later ([`FD_DETAIL_DUTY`]), makes this one
    /// a no-op.
    pub fn record_fd_detail(&self) {
        let Ok(mut next) = self.fd_detail.try_lock() else {
            return;
        };
        let start = std::time::Instant::now();
        if next.is_some_and(|n| start < n) {
            return;
        }
        let sample = crate::watch::sample(&self.rt.config().watch_processes);
        self.rt.metrics.record_watch(&sample);
        let took = start.elapsed();
        *next = Some(start + fd_detail_gap(took));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_costly_tcp_sample_waits_a_hundred_times_as_long_within_the_gauges_idle_timeout() {
        // A small namespace: every upkeep chance (10 s) runs one.
        assert_eq!(
            fd_detail_gap(Duration::from_millis(2)),
            Duration::from_millis(200)
        );
        // Tens of thousands of TIME_WAIT sockets: 1 % of a core at most.
        assert_eq!(
            fd_detail_gap(Duration::from_millis(300)),
            Duration::from_secs(30)
        );
        // Never long enough for its gauges to go idle (60 s at least).
        assert_eq!(
            fd_detail_gap(Duration::from_secs(5)),
            Duration::from_secs(40)
        );
    }
}
