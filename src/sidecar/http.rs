//! The sidecar's own HTTP listeners: metrics (`/metrics`, `/healthz`,
//! `/readyz`) and admin (`/status`, `POST /verify`). HTTP/1.1 with a header
//! read timeout (hyper needs a timer for it to work), a cap on connections,
//! and an accept loop that backs off on errors such as EMFILE instead of
//! spinning.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;

use super::state::Shared;
use super::status;
use crate::health::Force;
use crate::verify;

/// Connections served at once per listener.
const MAX_CONNECTIONS: usize = 64;
/// Time allowed for a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub shared: Arc<Shared>,
    /// False until every listener is up, and again once shutdown begins.
    pub ready: AtomicBool,
    /// `POST /verify` coordination.
    verify: tokio::sync::Mutex<VerifyGate>,
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
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            ready: AtomicBool::new(false),
            verify: tokio::sync::Mutex::new(VerifyGate::default()),
        }
    }

    async fn handle(self: Arc<Self>, surface: Surface, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_string();
        match (surface, req.method(), path.as_str()) {
            (Surface::Metrics, &Method::GET, "/metrics") => {
                self.record_fds();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.shared.metrics.render(),
                )
            }
            (Surface::Metrics, &Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            (Surface::Metrics, &Method::GET, "/readyz") => {
                if self.ready.load(Ordering::SeqCst) {
                    text(StatusCode::OK, "ready")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }
            (Surface::Admin, &Method::GET, "/status") => {
                json(StatusCode::OK, status::render(&self.shared))
            }
            (Surface::Admin, &Method::POST, "/verify") => self.clone().verify().await,
            (Surface::Admin, &Method::POST, p) if p.starts_with("/routes/") => {
                self.force(req).await
            }
            (Surface::Metrics, _, "/metrics" | "/healthz" | "/readyz")
            | (Surface::Admin, _, "/status" | "/verify") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// `POST /routes/<target>` with `force=proxy|direct|auto` in the query
    /// string or a form body.
    async fn force(&self, req: Request<Incoming>) -> Reply {
        use http_body_util::BodyExt;
        let target = req.uri().path().trim_start_matches("/routes/").to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        // A form body is tiny; anything larger is not one.
        let body = match http_body_util::Limited::new(req.into_body(), 1024)
            .collect()
            .await
        {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 1 KiB"),
        };
        let value = query
            .split('&')
            .chain(body.trim().split('&'))
            .find_map(|kv| kv.strip_prefix("force="))
            .unwrap_or("");
        let force = match value {
            "auto" => Force::Auto,
            "proxy" => Force::Proxy,
            "direct" => Force::Direct,
            other => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "force must be proxy, direct or auto (got {:?})",
                        crate::dial::connect::sanitize(other.as_bytes())
                    ),
                );
            }
        };
        match self.shared.force(&target, force) {
            Ok(()) => {
                let active = self.shared.active_route(&target).unwrap_or_default();
                json(
                    StatusCode::OK,
                    format!(
                        "{{\"target\":{target:?},\"force\":{value:?},\"active_route\":{active:?}}}"
                    ),
                )
            }
            Err(why) if why.starts_with("no target") => text(StatusCode::NOT_FOUND, &why),
            Err(why) => text(StatusCode::CONFLICT, &why),
        }
    }

    /// Updates the descriptor gauges of this process and the watched ones
    /// (at scrape time, so they are current).
    pub fn record_fds(&self) {
        let sample = crate::watch::sample(&self.shared.config().watch_processes);
        self.shared.metrics.record_watch(&sample);
    }

    /// One verify run shared by concurrent callers, refused within the
    /// cool-down. The run is its own task: a caller that hangs up does not
    /// cancel it for the others (or leave the gate stuck).
    async fn verify(self: Arc<Self>) -> Reply {
        let cooldown = self.shared.config().admin.verify_cooldown;
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
            let config = this.shared.config();
            let prober = verify::prober_for(&config);
            let report = verify::run_report(&config, &prober, verify::now_unix()).await;
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

type Handler =
    Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Serves `surface` on `listener` until `stop` turns true.
pub fn spawn(
    set: &mut JoinSet<()>,
    listener: TcpListener,
    endpoints: Arc<Endpoints>,
    surface: Surface,
    stop: watch::Receiver<bool>,
) {
    let handler: Handler = Arc::new(move |req| {
        let e = endpoints.clone();
        Box::pin(async move { e.handle(surface, req).await })
    });
    set.spawn(accept_loop(listener, handler, stop));
}

async fn accept_loop(listener: TcpListener, handler: Handler, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    let mut backoff = crate::accept::Backoff::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, _) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                backoff.failed("metrics/admin", &e).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the cap: close at once rather than queue without bound.
            drop(tcp);
            continue;
        };
        let handler = handler.clone();
        let mut stop = stop.clone();
        conns.spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| {
                let h = handler.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    // Stop accepting; let requests in flight finish (the caller bounds this).
    while conns.join_next().await.is_some() {}
}
