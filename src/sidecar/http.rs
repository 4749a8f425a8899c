//! The sidecar's own HTTP listeners: metrics (`/metrics`, `/healthz`,
//! `/readyz`) and admin (`/status`, `POST /verify`). HTTP/1.1 with a header
//! read timeout (hyper needs a timer for it to work); connections over the
//! cap are closed at once. Accepting is [`crate::accept`]'s job; this file
//! owns what is said on a connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use super::runtime::Runtime;
use super::status;
use crate::accept;
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

    async fn handle(self: Arc<Self>, surface: Surface, req: Request<Incoming>) -> Reply {
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
            (Surface::Admin, &Method::GET, "/status") => {
                json(StatusCode::OK, status::render(&self.rt))
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
        match self.rt.force(&target, force) {
            Ok(()) => {
                let active = self.rt.active_route(&target).unwrap_or_default();
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
        cap: MAX_CONNECTIONS,
    };
    set.spawn(accept::serve(
        listener,
        Arc::new(Http { endpoints, surface }),
        stop,
    ));
}

/// One listener's endpoints over HTTP/1.1.
struct Http {
    /// What the requests are answered from.
    endpoints: Arc<Endpoints>,
    /// Which endpoints this listener serves.
    surface: Surface,
}

impl accept::Handler for Http {
    fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        _peer: SocketAddr,
        mut stop: watch::Receiver<bool>,
    ) -> accept::Work {
        Box::pin(async move {
            let svc = service_fn(move |req| {
                let endpoints = self.endpoints.clone();
                let surface = self.surface;
                async move { Ok::<_, Infallible>(endpoints.handle(surface, req).await) }
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
        })
    }

    /// Over the cap: closed at once; a scraper retries.
    fn refuse(self: Arc<Self>, _tcp: TcpStream) -> Option<accept::Work> {
        None
    }
}
