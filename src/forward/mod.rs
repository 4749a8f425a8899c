//! The forward proxy the app uses as `HTTPS_PROXY`: `CONNECT host:port` and
//! absolute-form `http://` requests. Each destination is matched to a
//! target; the target's active route is tried first through the same dialer
//! the probes use, and the next allowed route at once if it fails before
//! the tunnel stands. The app gets `200 Connection established` only after
//! the upstream tunnel stands, and a `Proxy-Status` error naming the reason
//! when every route failed. Never an open proxy: unmatched destinations
//! follow `[forward] default`, ports are checked, address literals too.
//!
//! It sees the runtime only through [`Routing`]: the generation in force,
//! each target's route choice, and a place to report what happened. It
//! never decides health.
//!
//! Every connection that goes direct is counted and written to the
//! compliance trail with the reason the proxy route was not used; the
//! operational log summarises them.

mod attempt;
mod plain;
pub mod plan;
pub mod relay;
pub(crate) mod reply;
pub mod request;
pub(crate) mod tunnels;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::accept;
use crate::compliance::Opened as Record;
use crate::config::Route;
use crate::dial::{BoxStream, Destination, Phases, Tunnel};
use crate::generation::Generation;
use crate::health::{Snapshot, TrafficResult};
use crate::telemetry::Metrics;
use crate::telemetry::meter::ByteMeter;
pub use attempt::ConnectionResult;
use attempt::{Attempt, Opened, Planned};
use reply::Answer;
use request::Ask;
pub use tunnels::DirectTunnels;
use tunnels::{Active, Ticket};

/// One side of a tunnel that has ended is given this long to follow.
pub const HALF_CLOSE: Duration = Duration::from_secs(30);
/// The relay pool's kept buffers are freed when none was lent for this
/// long (between one and two periods); the open-tunnel gauges are set
/// again as often (far inside the registry's idle timeout).
const RELEASE_KEPT_EVERY: Duration = Duration::from_secs(10);
/// Descriptors kept free for everything else when capping connections.
const FD_RESERVE: u64 = 128;

/// What the forward proxy needs of the runtime.
pub trait Routing: Send + Sync + 'static {
    /// The generation in force; taken once per app connection.
    fn generation(&self) -> Arc<Generation>;
    /// The latest route state; taken once per app connection (the routes
    /// to try and each route's state come from the same moment).
    fn snapshot(&self) -> Arc<Snapshot>;
    /// What one attempt on a route learned (the route-state owner decides
    /// whether it counts for health).
    fn report(&self, result: TrafficResult) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// The metrics registry.
    fn metrics(&self) -> &Metrics;
    /// The compliance trail (and access log) tunnels are reported to.
    fn trail(&self) -> &crate::compliance::Trail;
}

/// The descriptor limit of this process, if it has one.
fn fd_limit() -> Option<u64> {
    crate::watch::fd_usage(std::path::Path::new("/proc/self")).max
}

/// The most connections served at once: the configured cap, kept below what
/// the descriptor limit allows once the relay's pipes (`pool_fds`, all
/// opened at start) are set aside: each tunnel holds two more.
fn connection_cap(configured: u32, fd_max: Option<u64>, pool_fds: usize) -> usize {
    let by_fds = fd_max
        .map_or(u64::MAX, |m| {
            m.saturating_sub(FD_RESERVE).saturating_sub(pool_fds as u64) / 2
        })
        .max(1);
    u64::from(configured).min(by_fds) as usize
}

/// The relay's pool for `settings`: large buffers, and for the splice
/// relay its pipes, opened now; at most a quarter of the descriptors the
/// limit leaves, so they never crowd out tunnels.
fn relay_pool(settings: &crate::config::ForwardSettings, fd_max: Option<u64>) -> relay::Pool {
    #[cfg(target_os = "linux")]
    if settings.relay == crate::config::RelayMode::Splice {
        let by_fds = fd_max.map_or(usize::MAX, |m| {
            usize::try_from(m.saturating_sub(FD_RESERVE) / 8).unwrap_or(usize::MAX)
        });
        let wanted = usize::try_from(settings.buffer_pool / relay::LARGE as u64)
            .unwrap_or(usize::MAX)
            .min(by_fds);
        let (pool, why) = relay::Pool::with_pipes(settings.buffer_pool, wanted);
        if let Some(why) = why {
            tracing::warn!(why = %why, "splice relay: fewer pipes than asked; tunnels that find none copy");
        }
        let s = pool.stats();
        tracing::info!(
            pipes = s.pipes,
            pipe_size = s.pipe_size,
            "splice relay ready"
        );
        return pool;
    }
    let _ = fd_max;
    relay::Pool::new(settings.buffer_pool)
}

/// The forward proxy's shared parts.
struct Proxy {
    routing: Arc<dyn Routing>,
    active: Active,
    direct: Arc<DirectTunnels>,
    /// Large relay buffers and pipes, sized at start.
    pool: Arc<relay::Pool>,
    /// Where tunnels are relayed: here while small, on the bulk lane while
    /// they move bulk.
    lanes: relay::Lanes,
}

/// Serves the forward proxy on `listener` until `stop` turns true, then
/// waits for the tunnels in flight (the caller bounds how long). Direct
/// tunnels register in `direct`, so fail-back can close them.
pub async fn serve(
    listener: TcpListener,
    routing: Arc<dyn Routing>,
    direct: Arc<DirectTunnels>,
    stop: watch::Receiver<bool>,
) {
    let generation = routing.generation();
    let settings = &generation.config.forward;
    let fd_max = fd_limit();
    let pool = relay_pool(settings, fd_max);
    let pool_fds = pool.fds();
    drop(generation);
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let proxy = Arc::new(Proxy {
        routing,
        active: Active::default(),
        direct,
        pool: Arc::new(pool),
        lanes: relay::Lanes::new(workers),
    });
    // `[forward] max_connections` as the generation in force says, so a
    // reload changes it for the next connection.
    let cap = {
        let routing = proxy.routing.clone();
        accept::Cap::live(move || {
            let configured = routing.generation().config.forward.max_connections;
            connection_cap(configured, fd_max, pool_fds)
        })
    };
    let listener = accept::Listener {
        name: "forward proxy",
        socket: listener,
        cap,
    };
    let trim = {
        let proxy = proxy.clone();
        async move {
            loop {
                tokio::time::sleep(RELEASE_KEPT_EVERY).await;
                proxy.pool.release_if_quiet();
                proxy.active.publish(proxy.routing.metrics());
            }
        }
    };
    tokio::select! {
        () = accept::serve(listener, proxy, stop) => {}
        () = trim => {}
    }
}

// === impl accept::Handler for Proxy ===

impl accept::Handler for Proxy {
    /// An open tunnel is not cut when the listener stops: it runs until
    /// either side is done or the caller's deadline.
    fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        _stop: watch::Receiver<bool>,
    ) -> accept::Work {
        Box::pin(async move {
            let _ = tcp.set_nodelay(true);
            self.handle(tcp, peer).await;
        })
    }

    /// Over the cap the app gets a prompt 503 instead of a reset it would
    /// retry at once.
    fn refuse(self: Arc<Self>, mut tcp: TcpStream) -> Option<accept::Work> {
        Some(Box::pin(async move {
            let answer = Answer {
                status: 503,
                error: "proxy_internal_error",
                details: "connection cap reached".into(),
                body: "egress-sentinel: too many connections\n".into(),
            };
            answer.write(&mut tcp).await;
        }))
    }
}

impl Proxy {
    /// One app connection: a CONNECT tunnel, or plain `http://` requests.
    async fn handle(self: Arc<Self>, mut app: TcpStream, peer: SocketAddr) {
        let generation = self.routing.generation();
        let Some((ask, early)) = self.read(&mut app, peer, &generation).await else {
            return;
        };
        match ask {
            Ask::Http { head, .. } => {
                let mut prefix = bytes::BytesMut::from(&head[..]);
                prefix.extend_from_slice(&early);
                plain::serve(self.clone(), app, peer, prefix.freeze()).await;
            }
            Ask::Connect { host, port } => {
                self.connect(app, peer, &generation, (host, port), early)
                    .await;
            }
        }
    }

    /// A CONNECT, top-down: plan it, open a tunnel on the first route that
    /// works, answer 200 and relay.
    async fn connect(
        &self,
        mut app: TcpStream,
        peer: SocketAddr,
        generation: &Generation,
        (host, port): (String, u16),
        early: bytes::Bytes,
    ) {
        let req = match self.plan_request(generation, host, port, peer).await {
            Ok(req) => req,
            Err(answer) => return answer.write(&mut app).await,
        };
        let timeout = req.timeout(generation);
        let dest = Destination {
            host: &req.host,
            port: req.port,
            allow: &req.plan.allow,
        };
        let open = |route: Arc<Route>| -> Attempt<'_, Tunnel> {
            Box::pin(async move {
                let (mut phases, deadline) = (Phases::default(), Instant::now() + timeout);
                generation
                    .dialer
                    .open(&route, dest, deadline, &mut phases)
                    .await
            })
        };
        match self.try_routes(&req, open).await {
            Ok(opened) => {
                self.report(&req, &opened.route, None).await;
                self.serve_tunnel(app, opened, generation, &req, early)
                    .await;
            }
            Err(answer) => answer.write(&mut app).await,
        }
    }

    /// Reads the first request head; answers the app itself (400/408/431)
    /// and returns `None` when it is malformed.
    async fn read(
        &self,
        app: &mut TcpStream,
        peer: SocketAddr,
        generation: &Generation,
    ) -> Option<(Ask, bytes::Bytes)> {
        match request::read(app, generation.config.forward.header_timeout).await {
            Ok(r) => Some(r),
            Err(refusal) => {
                tracing::info!(client = %peer, status = refusal.status, why = %refusal.why, "refused a malformed request");
                Answer::new(refusal.status, "http_request_error", &refusal.why)
                    .write(app)
                    .await;
                None
            }
        }
    }

    /// Answers the app, relays until either side is done (or, for a direct
    /// tunnel, until fail-back closes it).
    async fn serve_tunnel(
        &self,
        app: TcpStream,
        opened: Opened<Tunnel>,
        generation: &Generation,
        req: &Planned,
        early: bytes::Bytes,
    ) {
        let Opened {
            route,
            stream,
            tried,
        } = opened;
        let metrics = self.routing.metrics();
        let label = &req.plan.label;
        let mut ticket = match (&req.plan.target, route.is_direct()) {
            (Some(t), true) => Some(self.direct.enter(&t.name)),
            _ => None,
        };
        let why = route.is_direct().then(|| self.went_direct(req, &tried));
        self.count(label, &route.name, ConnectionResult::Ok);
        metrics.forward_request_duration(label, &route.name, req.received.elapsed());
        let record = Record::now(label, &req.destination(), &route.name, why);
        let meter = metrics.forward_meter(label, &route.name);
        let _guard = self.active.enter(metrics, &route.name);
        let lane = Arc::new(relay::LaneSignal::new());
        let work = Relaying {
            app,
            upstream: stream.stream,
            early,
            meter: meter.clone(),
            pool: self.pool.clone(),
            idle: generation.config.forward.idle_timeout,
            lane: lane.clone(),
        }
        .work();
        let relay = self.lanes.run(work, lane);
        let end = tokio::select! {
            () = relay => "closed",
            () = closed(&mut ticket) => {
                tracing::info!(target = %label, destination = %req.destination(), "direct tunnel closed: traffic is back on the proxy");
                self.count(label, &route.name, ConnectionResult::ClosedOnFailback);
                "closed_on_failback"
            }
        };
        self.routing
            .trail()
            .closed(&record.closed(meter.moved(), end));
    }
}

/// What a tunnel's relay owns, to run wherever its lane says.
struct Relaying {
    app: TcpStream,
    upstream: BoxStream,
    early: bytes::Bytes,
    meter: ByteMeter,
    pool: Arc<relay::Pool>,
    idle: Duration,
    lane: Arc<relay::LaneSignal>,
}

impl Relaying {
    /// The relay, boxed here rather than in the caller's future (which
    /// would otherwise keep room for the unboxed future beside the box).
    fn work(self) -> relay::Work {
        Box::pin(async move {
            let relay = relay::Relay {
                pool: &self.pool,
                idle: self.idle,
                half_close: HALF_CLOSE,
                lane: &self.lane,
            };
            relay_tunnel(self.app, self.upstream, &self.meter, self.early, relay).await;
        })
    }
}

/// Completes when a direct tunnel must close; never for other tunnels.
async fn closed(ticket: &mut Option<Ticket>) {
    match ticket {
        Some(t) => t.closed().await,
        None => std::future::pending().await,
    }
}

/// Answers the app and relays: with `splice(2)` when the pool has pipes
/// and both ends are bare TCP sockets (the bytes counted into `meter` from
/// splice's results), else through buffers, the upstream wrapped in `meter`.
async fn relay_tunnel(
    mut app: TcpStream,
    upstream: BoxStream,
    meter: &ByteMeter,
    early: bytes::Bytes,
    relay: relay::Relay<'_>,
) {
    if app
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    #[cfg(target_os = "linux")]
    let upstream = if relay.pool.has_pipes() {
        match crate::dial::stream::into_tcp(upstream) {
            Ok(tcp) => return splice_tunnel(app, tcp, meter, early, relay).await,
            Err(stream) => stream,
        }
    } else {
        upstream
    };
    let mut upstream = meter.wrap(upstream);
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        return;
    }
    let moved = relay.copy(app, upstream).await;
    tracing::debug!(
        up = moved.up,
        down = moved.down,
        relay = "copy",
        "tunnel closed"
    );
}

#[cfg(target_os = "linux")]
async fn splice_tunnel(
    app: TcpStream,
    mut upstream: TcpStream,
    meter: &ByteMeter,
    early: bytes::Bytes,
    relay: relay::Relay<'_>,
) {
    if !early.is_empty() {
        if upstream.write_all(&early).await.is_err() {
            return;
        }
        meter.add_up(early.len());
    }
    let moved = relay.splice(app, upstream, meter).await;
    tracing::debug!(
        up = moved.up,
        down = moved.down,
        relay = "splice",
        "tunnel closed"
    );
}
