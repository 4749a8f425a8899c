//! The sidecar's own HTTP listeners: metrics (`/metrics`, `/healthz`,
//! `/readyz`) and admin (`/` the status page, `/status`, `POST /verify`,
//! `POST /routes/<target>`). Accepting is [`crate::accept`]'s job; this file
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

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;

use super::runtime::{Runtime, lock};
use super::{admin, page, status};
use crate::accept;
use crate::config::defaults;
use crate::health::Force;
use crate::verify;

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

/// A response with a plain body.
pub type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, body: &str) -> Reply {
    reply(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

fn json(status: StatusCode, body: String) -> Reply {
    reply(status, "application/json", body)
}

/// A reply after which the connection closes (the request was not read
/// whole, or the client is misbehaving).
fn closing(mut r: Reply) -> Reply {
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

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
    /// Held while a detailed descriptor sample runs: one at a time.
    fd_detail: std::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct VerifyGate {
    /// Set while a run is in flight: later callers wait for its result.
    in_flight: Option<broadcast::Sender<Arc<(bool, String)>>>,
    /// When the last run finished.
    finished: Option<StdInstant>,
}

impl Endpoints {
    /// Handlers over `shared`.
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self {
            rt,
            ready: AtomicBool::new(false),
            verify: tokio::sync::Mutex::new(VerifyGate::default()),
            fd_detail: std::sync::Mutex::new(()),
        }
    }

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
                self.force(req, conn).await
            }
            (Surface::Metrics, _, "/metrics" | "/healthz" | "/readyz")
            | (Surface::Admin, _, "/" | "/status" | "/verify") => {
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

    /// `POST /routes/<target>`: `force` (`proxy`, `direct` or `auto`) and
    /// `ttl` (a duration such as `"30m"`, or seconds; default 1 h, at most
    /// 24 h) from a JSON body `{"force":"direct","ttl":"30m"}` or the query
    /// string; the body wins.
    async fn force(&self, req: Request<Incoming>, conn: &Conn) -> Reply {
        let target = req.uri().path().trim_start_matches("/routes/").to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let body = match read_json(req.into_body(), conn).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let param = |key: &str| -> Option<Value> {
            body.as_ref().and_then(|b| b.get(key).cloned()).or_else(|| {
                query.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k == key).then(|| Value::String(v.to_string()))
                })
            })
        };
        let value = param("force");
        let force = match value.as_ref().and_then(Value::as_str) {
            Some("auto") => Force::Auto,
            Some("proxy") => Force::Proxy,
            Some("direct") => Force::Direct,
            _ => {
                let got = value.map(|v| v.to_string()).unwrap_or_default();
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "force must be \"proxy\", \"direct\" or \"auto\" (got {})",
                        crate::dial::connect::sanitize(got.as_bytes())
                    ),
                );
            }
        };
        let ttl = match override_ttl(param("ttl").as_ref()) {
            Ok(t) => t,
            Err(why) => return text(StatusCode::BAD_REQUEST, &why),
        };
        match self.rt.force(&target, force, ttl) {
            Ok(()) => {
                let active = self.rt.active_route(&target).unwrap_or_default();
                let mut doc = json!({
                    "target": target,
                    "force": force,
                    "active_route": active,
                });
                if force != Force::Auto {
                    let expires = std::time::SystemTime::now() + ttl;
                    doc["ttl_seconds"] = json!(ttl.as_secs_f64());
                    doc["expires_at"] = json!(crate::dial::tls::rfc3339(
                        expires
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    ));
                }
                json(StatusCode::OK, doc.to_string())
            }
            Err(why) if why.starts_with("no target") => text(StatusCode::NOT_FOUND, &why),
            Err(why) => text(StatusCode::CONFLICT, &why),
        }
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
        match self.rt.stalest_pair() {
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
    /// still running makes this one a no-op.
    pub fn record_fd_detail(&self) {
        let Ok(_one) = self.fd_detail.try_lock() else {
            return;
        };
        let sample = crate::watch::sample(&self.rt.config().watch_processes);
        self.rt.metrics.record_watch(&sample);
    }

    /// One verify run shared by concurrent callers, refused within the
    /// cool-down. The run is its own task: a caller that hangs up does not
    /// cancel it for the others (or leave the gate stuck).
    async fn verify(self: Arc<Self>) -> Reply {
        let cooldown = self.rt.config().admin.verify_cooldown;
        let mut gate = self.verify.lock().await;
        if let Some(tx) = &gate.in_flight {
            let mut rx = tx.subscribe();
            drop(gate);
            return match rx.recv().await {
                Ok(r) => verify_reply(&r),
                Err(_) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the verify run in flight was cancelled",
                ),
            };
        }
        if let Some(done) = gate.finished {
            let since = done.elapsed();
            if since < cooldown {
                let wait = (cooldown - since).as_secs() + 1;
                let mut r = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "a verify run finished {:.1}s ago; try again in {wait}s",
                        since.as_secs_f64()
                    ),
                );
                if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
        }
        let (tx, mut rx) = broadcast::channel(1);
        gate.in_flight = Some(tx.clone());
        drop(gate);
        let this = self.clone();
        tokio::spawn(async move {
            // The generation in force: its dialer is the app traffic's.
            let generation = this.rt.current();
            let report =
                verify::run_report(&generation.config, &generation.prober, verify::now_unix())
                    .await;
            let outcome = Arc::new((report.exit_code() == verify::EXIT_OK, report.render_json()));
            let mut gate = this.verify.lock().await;
            gate.in_flight = None;
            gate.finished = Some(StdInstant::now());
            drop(gate);
            let _ = tx.send(outcome);
        });
        match rx.recv().await {
            Ok(r) => verify_reply(&r),
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the verify run failed"),
        }
    }
}

/// 200 whether or not every check passed: the request worked, and the
/// JSON says what failed; the `X-Verify-Result` header says it in one word.
fn verify_reply(r: &(bool, String)) -> Reply {
    let mut reply = json(StatusCode::OK, r.1.clone());
    let word = if r.0 { "pass" } else { "fail" };
    reply
        .headers_mut()
        .insert("x-verify-result", header::HeaderValue::from_static(word));
    reply
}

/// The `ttl` of an override: absent, the default (1 h); else a duration
/// (`"90s"`, `"2h"`) or a number of seconds, above zero and at most 24 h.
fn override_ttl(v: Option<&Value>) -> Result<Duration, String> {
    let max = defaults::ADMIN_OVERRIDE_TTL_MAX;
    let ttl = match v {
        None => return Ok(defaults::ADMIN_OVERRIDE_TTL),
        Some(Value::String(s)) => crate::config::parse_duration(s)
            .map_err(|e| format!("ttl: {}", crate::dial::connect::sanitize(e.as_bytes())))?,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= max.as_secs_f64() => {
                Duration::from_secs_f64(secs)
            }
            _ => Duration::ZERO,
        },
        Some(_) => Duration::ZERO,
    };
    if ttl.is_zero() || ttl > max {
        return Err(format!(
            "ttl must be a duration above zero and at most {} (e.g. \"30m\" or 1800)",
            crate::dial::fmt_duration(max)
        ));
    }
    Ok(ttl)
}

/// Reads a request body: at most [`MAX_BODY`] bytes within
/// [`BODY_TIMEOUT`], empty or a JSON value. While it waits, the connection
/// counts as waiting on its client (evictable past [`SOFT_CAP`]).
async fn read_json(body: Incoming, conn: &Conn) -> Result<Option<Value>, Reply> {
    let too_large = || {
        closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {MAX_BODY} bytes"),
        ))
    };
    // A Content-Length over the cap is refused before a byte is read.
    if hyper::body::Body::size_hint(&body).lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    conn.waiting();
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await;
    conn.working();
    let bytes = match read {
        Err(_) => {
            tracing::debug!(peer = %conn.peer, "admin request body not received in time");
            return Err(closing(text(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {}",
                    crate::dial::fmt_duration(BODY_TIMEOUT)
                ),
            )));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(_)) => {
            return Err(closing(text(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )));
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not JSON: {e}"),
        )
    })
}

/// Serves `surface` on `listener` until `stop` turns true, then lets the
/// requests in flight finish (the caller bounds how long).
pub fn spawn(
    set: &mut JoinSet<()>,
    listener: TcpListener,
    endpoints: Arc<Endpoints>,
    surface: Surface,
    stop: watch::Receiver<bool>,
) {
    let name = match surface {
        Surface::Metrics => "metrics",
        Surface::Admin => "admin",
    };
    let listener = accept::Listener {
        name,
        socket: listener,
        cap: HARD_CAP,
    };
    set.spawn(accept::serve(
        listener,
        Arc::new(Http {
            endpoints,
            surface,
            conns: Arc::new(Conns::default()),
        }),
        stop,
    ));
}

/// One listener's endpoints over HTTP/1.1.
struct Http {
    /// What the requests are answered from.
    endpoints: Arc<Endpoints>,
    /// Which endpoints this listener serves.
    surface: Surface,
    /// Its open connections, for eviction.
    conns: Arc<Conns>,
}

impl accept::Handler for Http {
    fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        mut stop: watch::Receiver<bool>,
    ) -> accept::Work {
        Box::pin(async move {
            let local = tcp
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
            let conn = Arc::new(Conn::open(&self.conns, peer, local));
            let evicted = conn.evict.clone();
            let (endpoints, surface) = (self.endpoints.clone(), self.surface);
            let svc_conn = conn.clone();
            let svc = service_fn(move |req| {
                let (endpoints, conn) = (endpoints.clone(), svc_conn.clone());
                async move {
                    conn.working();
                    let r = endpoints.handle(surface, req, &conn).await;
                    conn.waiting();
                    Ok::<_, Infallible>(r)
                }
            });
            let http = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_header_size(MAX_HEAD)
                .max_headers(64)
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(http);
            tokio::select! {
                _ = http.as_mut() => {}
                () = evicted.notified() => {
                    tracing::debug!(peer = %peer, "closed a connection waiting on its client to let a new one in");
                }
                _ = stop.changed() => {
                    http.as_mut().graceful_shutdown();
                    let _ = http.await;
                }
            }
        })
    }

    /// Over the hard cap: closed at once; a scraper retries.
    fn refuse(self: Arc<Self>, _tcp: TcpStream) -> Option<accept::Work> {
        None
    }
}

// === impl Conns ===

/// The open connections of one listener and since when each has waited
/// on its client (`None`: the sidecar is working for it).
#[derive(Debug, Default)]
struct Conns {
    open: Mutex<HashMap<u64, Waiter>>,
    next: std::sync::atomic::AtomicU64,
}

/// Since when a connection has waited on its client (`None`: working),
/// and how to evict it.
type Waiter = (Option<StdInstant>, Arc<Notify>);

/// One open connection's entry; removed when dropped.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    conns: Arc<Conns>,
    /// Notified when a newer connection needs this one's place.
    evict: Arc<Notify>,
    /// The client.
    pub peer: SocketAddr,
    /// The listener's address as the client reached it.
    pub local: SocketAddr,
}

impl Conn {
    /// Registers a new connection (waiting for its request head) and, past
    /// [`SOFT_CAP`], evicts the one that has waited longest on its client.
    fn open(conns: &Arc<Conns>, peer: SocketAddr, local: SocketAddr) -> Self {
        let id = conns.next.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        let mut open = lock(&conns.open);
        open.insert(id, (Some(StdInstant::now()), evict.clone()));
        if open.len() > SOFT_CAP {
            let oldest = open
                .iter()
                .filter(|(other, _)| **other != id)
                .filter_map(|(other, (since, n))| since.map(|s| (s, *other, n.clone())))
                .min_by_key(|(since, other, _)| (*since, *other));
            if let Some((_, other, notify)) = oldest {
                // Taken out now, so the next newcomer picks another one.
                open.remove(&other);
                notify.notify_one();
            }
        }
        drop(open);
        Self {
            id,
            conns: conns.clone(),
            evict,
            peer,
            local,
        }
    }

    fn set(&self, since: Option<StdInstant>) {
        if let Some(entry) = lock(&self.conns.open).get_mut(&self.id) {
            entry.0 = since;
        }
    }

    /// The connection waits on its client from now on.
    pub fn waiting(&self) {
        self.set(Some(StdInstant::now()));
    }

    /// The sidecar works for the connection from now on.
    pub fn working(&self) {
        self.set(None);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        lock(&self.conns.open).remove(&self.id);
    }
}
