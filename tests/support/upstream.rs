//! TLS upstreams on 127.0.0.1: HTTP/1.1 or HTTP/2 (by ALPN, or h2 only like
//! APNs), with a chosen certificate, optional client-certificate demand, a
//! scriptable reply, a partial failure on one path (every nth request there
//! answered with an error, counted per Host), and misbehaviours (silence,
//! close after TLS, plain text). Each records the connections and requests
//! it saw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use egress_sentinel::demo::stand_ins::serve_tls;
use http_body_util::Full;
use hyper::{Request, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::pki::{self, Leaf};

/// What the upstream answers to every request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
}

impl Reply {
    /// `status` with `body`.
    pub fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_string(),
        }
    }
}

/// How the upstream behaves on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// TLS, then HTTP.
    Serve,
    /// Accept TCP and say nothing, ever.
    Silent,
    /// Complete TLS, then close without answering.
    CloseAfterTls,
    /// Answer in plain HTTP without TLS.
    Plaintext,
}

/// How to start an upstream.
#[derive(Clone)]
pub struct Opts {
    /// Certificate and key.
    pub leaf: Leaf,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// Demand a client certificate issued by this CA (PEM).
    pub client_ca: Option<String>,
    /// The reply.
    pub reply: Reply,
    /// The behaviour.
    pub behavior: Behavior,
    /// The address to bind (127.0.0.1:0 unless set).
    pub bind: SocketAddr,
    /// A partial failure: `(path, n, status)` answers `status` to every nth
    /// request for `path`, counted per Host (so requests for other paths or
    /// names cannot shift the pattern); the reply otherwise.
    pub every_nth_fails: Option<(String, u64, u16)>,
}

impl Opts {
    /// HTTP/1.1 and h2 by ALPN, certificate from the test CA for `name`, 200 "ok".
    pub fn new(name: &str) -> Self {
        Self {
            leaf: pki::ca().server(&[name], false),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            client_ca: None,
            reply: Reply::new(200, "ok"),
            behavior: Behavior::Serve,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            every_nth_fails: None,
        }
    }

    /// Only HTTP/1.1.
    pub fn h1_only(mut self) -> Self {
        self.alpn = vec![b"http/1.1".to_vec()];
        self
    }

    /// Only h2, like APNs.
    pub fn h2_only(mut self) -> Self {
        self.alpn = vec![b"h2".to_vec()];
        self
    }

    /// This reply.
    pub fn reply(mut self, status: u16, body: &str) -> Self {
        self.reply = Reply::new(status, body);
        self
    }

    /// This certificate.
    pub fn leaf(mut self, leaf: Leaf) -> Self {
        self.leaf = leaf;
        self
    }

    /// This behaviour.
    pub fn behavior(mut self, b: Behavior) -> Self {
        self.behavior = b;
        self
    }

    /// Every `n`th request for `path` on each Host gets `status` (worker
    /// exhaustion behind a load balancer: a steady share of 500s).
    pub fn every_nth_fails(mut self, path: &str, n: u64, status: u16) -> Self {
        self.every_nth_fails = Some((path.to_string(), n, status));
        self
    }

    /// Start it.
    pub async fn start(self) -> Upstream {
        Upstream::start(self).await
    }
}

/// A request the upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Where the connection came from.
    pub peer: SocketAddr,
}

#[derive(Default)]
struct State {
    connections: AtomicUsize,
    requests: Mutex<Vec<Seen>>,
    reply: Mutex<Option<Reply>>,
    every_nth_fails: Option<(String, u64, u16)>,
    /// Requests seen per `(Host, path)`, for `every_nth_fails`.
    per_host_path: Mutex<std::collections::HashMap<(String, String), u64>>,
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts an upstream with `opts`.
    pub async fn start(opts: Opts) -> Self {
        egress_sentinel::dial::tls::install_default_provider();
        let listener = TcpListener::bind(opts.bind).await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(State {
            reply: Mutex::new(Some(opts.reply.clone())),
            every_nth_fails: opts.every_nth_fails.clone(),
            ..State::default()
        });
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&opts)));
        let st = state.clone();
        let behavior = opts.behavior;
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                st.connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move { serve(tcp, peer, acceptor, st, behavior).await });
            }
        });
        Self { addr, state, task }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Changes the reply.
    pub fn set_reply(&self, status: u16, body: &str) {
        *self.state.reply.lock().expect("lock") = Some(Reply::new(status, body));
    }
}

impl State {
    /// The status `every_nth_fails` gives this request, counting it.
    fn partial_failure<B>(&self, req: &Request<B>, path: &str) -> Option<u16> {
        let (fail_path, n, status) = self.every_nth_fails.as_ref()?;
        if path != fail_path {
            return None;
        }
        // HTTP/1.1 names the host in `Host`, h2 in `:authority`.
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let host = host.split(':').next().unwrap_or("").to_ascii_lowercase();
        let mut counts = self.per_host_path.lock().expect("lock");
        let seen = counts.entry((host, path.to_string())).or_insert(0);
        *seen += 1;
        (*seen % n == 0).then_some(*status)
    }
}

fn server_config(opts: &Opts) -> rustls::ServerConfig {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(opts.leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("leaf pem");
    let key = PrivateKeyDer::from_pem_slice(opts.leaf.key_pem.as_bytes()).expect("key pem");
    let builder = rustls::ServerConfig::builder();
    let builder = match &opts.client_ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.expect("client ca pem")).expect("add client ca");
            }
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .expect("client verifier"),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).expect("server config");
    config.alpn_protocols = opts.alpn.clone();
    config
}

async fn serve(
    mut tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    st: Arc<State>,
    behavior: Behavior,
) {
    match behavior {
        Behavior::Silent => {
            // Hold the socket open, say nothing.
            let _tcp = tcp;
            std::future::pending::<()>().await;
        }
        Behavior::Plaintext => {
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
        Behavior::CloseAfterTls => {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.shutdown().await;
            }
        }
        Behavior::Serve => {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            serve_tls(tls, move |req: Request<hyper::body::Incoming>| {
                let st = st.clone();
                async move {
                    let path = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    let failure = st.partial_failure(&req, &path);
                    st.requests.lock().expect("lock").push(Seen {
                        method: req.method().to_string(),
                        path,
                        version: format!("{:?}", req.version()),
                        peer,
                    });
                    let mut reply = st
                        .reply
                        .lock()
                        .expect("lock")
                        .clone()
                        .unwrap_or(Reply::new(200, "ok"));
                    if let Some(status) = failure {
                        reply = Reply::new(status, "partial failure");
                    }
                    let resp = Response::builder()
                        .status(reply.status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(reply.body)))
                        .expect("response");
                    Ok::<_, Infallible>(resp)
                }
            })
            .await;
        }
    }
}
