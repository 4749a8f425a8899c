//! The demo's stand-ins, all on 127.0.0.1: a demo CA (rcgen), TLS upstreams
//! playing push, SMS and Azure AD, and the hosting provider's forward proxy,
//! which an operator can "reconfigure" to answer CONNECT with 502. The proxy
//! tunnels every CONNECT to 127.0.0.1 at the requested port, whatever the
//! name: nothing here resolves a name or leaves the machine.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why a stand-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// rcgen could not make the demo CA or the server certificate.
    #[error("making the demo certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    /// rustls refused the protocol versions.
    #[error(transparent)]
    Protocols(rustls::Error),
    /// rustls refused the server certificate.
    #[error("demo server certificate: {0}")]
    ServerCertificate(#[source] rustls::Error),
    /// A listener could not be bound on 127.0.0.1.
    #[error(transparent)]
    Listen(#[from] std::io::Error),
}

/// A CA for the demo, and the server identities it issued.
pub struct DemoPki {
    /// The CA certificate, PEM (the sidecar and the app trust it).
    pub ca_pem: String,
    /// The server chain and key for every stand-in name.
    pub server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
}

/// Makes the demo CA and one server certificate for `names`.
pub fn pki(names: &[&str]) -> Result<DemoPki, StandInError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "egress-sentinel demo CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut leaf = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    leaf.distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("demo"));
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    Ok(DemoPki {
        ca_pem: ca_cert.pem(),
        server: (
            vec![leaf_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        ),
    })
}

/// A running task that stops when dropped.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Running {
    /// `task`, listening at `addr`, stopped when the value is dropped.
    pub(crate) fn new(addr: SocketAddr, task: JoinHandle<()>) -> Self {
        Self { addr, task }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS upstream answering every request with `status` and `body`.
pub async fn upstream(
    pki: &DemoPki,
    status: u16,
    body: &'static str,
) -> Result<Running, StandInError> {
    let acceptor = acceptor(pki, &[b"h2", b"http/1.1"])?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                serve_tls(tls, move |_req| async move {
                    let mut r =
                        hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *r.status_mut() =
                        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                    Ok::<_, Infallible>(r)
                })
                .await;
            });
        }
    });
    Ok(Running { addr, task })
}

/// A TLS acceptor with the demo server identity, offering `alpn`.
pub(crate) fn acceptor(pki: &DemoPki, alpn: &[&[u8]]) -> Result<TlsAcceptor, StandInError> {
    let (certs, key) = (pki.server.0.clone(), pki.server.1.clone_key());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(StandInError::Protocols)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(StandInError::ServerCertificate)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves HTTP on an accepted TLS connection until it closes: HTTP/2 when
/// the client chose `h2` by ALPN, HTTP/1.1 otherwise; every request is
/// answered by `answer`.
pub async fn serve_tls<F, Fut>(tls: TlsStream<TcpStream>, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let svc = service_fn(answer);
    let io = TokioIo::new(tls);
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    }
}

/// The hosting provider's forward proxy.
pub struct ProviderProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// True while the provider's bad change is in place.
    broken: Arc<AtomicBool>,
    _task: Running,
}

impl ProviderProxy {
    /// Starts the proxy, working.
    pub async fn start() -> Result<Self, StandInError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let broken = Arc::new(AtomicBool::new(false));
        let b = broken.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let b = b.clone();
                tokio::spawn(async move { connect(tcp, b.load(Ordering::SeqCst)).await });
            }
        });
        Ok(Self {
            addr,
            broken,
            _task: Running { addr, task },
        })
    }

    /// Applies (true) or reverts (false) the provider's bad change.
    pub fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::SeqCst);
    }
}

/// The most bytes of a request head [`read_connect_head`] reads.
const MAX_CONNECT_HEAD: usize = 64 * 1024;

/// Reads a request head from a proxy's client (64 KiB at most): its text
/// (with whatever came in the same reads) and the authority a CONNECT names
/// (empty for another request). `None` when the client closes first or the
/// head is too large. The stand-in proxies (the demo's, and the tests')
/// share it.
pub async fn read_connect_head(tcp: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > MAX_CONNECT_HEAD {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let authority = text
        .split("\r\n")
        .next()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or("")
        .to_string();
    Some((text, authority))
}

/// One client of the provider's proxy: a 502 while `broken`, else a tunnel
/// to 127.0.0.1 at the port the CONNECT names.
async fn connect(mut tcp: TcpStream, broken: bool) {
    let Some((_, authority)) = read_connect_head(&mut tcp).await else {
        return;
    };
    if broken {
        let _ = tcp
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nVia: 1.1 provider-proxy\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
        return;
    }
    let port: u16 = authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
        let _ = tcp
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nVia: 1.1 provider-proxy\r\n\r\n")
            .await;
        return;
    };
    let _ = upstream.set_nodelay(true);
    if tcp
        .write_all(b"HTTP/1.1 200 Connection established\r\nVia: 1.1 provider-proxy\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
    }
}
