//! One listener over HTTP/1.1: hyper's bounds on a request head, and the
//! open connections with since when each has waited on its client, so that
//! past [`SOFT_CAP`] a newcomer evicts the one that waited longest instead
//! of being refused.
//!
//! Owns connections, not requests: every request goes to
//! `Endpoints::handle`; this file never reads a body or answers one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant as StdInstant;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::{Endpoints, HARD_CAP, HEADER_TIMEOUT, MAX_HEAD, SOFT_CAP, Surface};
use crate::accept;
use crate::sidecar::runtime::lock;

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
        cap: accept::Cap::fixed(HARD_CAP),
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
