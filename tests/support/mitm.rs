//! A provider's forward proxy whose behaviour a migration changes: it
//! tunnels (with the `Via` and `Server` headers it is told to send), refuses
//! CONNECT with a status, answers slowly, or intercepts — terminates the
//! app's TLS with a certificate for the requested host signed by its own CA
//! and opens its own TLS to the real upstream (trusting the test CA), so
//! the handshake succeeds wherever its CA is trusted. Upstreams are always
//! 127.0.0.1 at the requested port. Also: restarting an upstream on the
//! same port with another certificate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egress_sentinel::demo::stand_ins::read_connect_head;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::pki::{self, Ca};
use super::upstream::{Opts, Upstream};

/// What the proxy does with a CONNECT.
#[derive(Clone, Copy)]
pub enum Mode {
    /// 200, then relay bytes.
    Tunnel,
    /// Answer with this status and reason.
    Refuse(u16, &'static str),
    /// 200, then terminate TLS with a certificate from this CA.
    Intercept(&'static Ca),
}

struct State {
    mode: Mode,
    via: Option<String>,
    server: Option<String>,
    delay: Duration,
    /// Certificates minted per host, so only the first handshake pays.
    minted: HashMap<String, Arc<rustls::ServerConfig>>,
    connects: usize,
}

/// A running proxy; stops when dropped.
pub struct MitmProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for MitmProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MitmProxy {
    /// Starts a proxy in `mode`.
    pub async fn start(mode: Mode) -> Self {
        egress_sentinel::dial::tls::install_default_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            mode,
            via: None,
            server: None,
            delay: Duration::ZERO,
            minted: HashMap::new(),
            connects: 0,
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move { handle(tcp, st).await });
            }
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches mode for the next connections.
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }

    /// The `Via` header of every reply (`None`: no header).
    pub fn set_via(&self, via: Option<&str>) {
        self.state.lock().expect("lock").via = via.map(str::to_string);
    }

    /// The `Server` header of every reply.
    pub fn set_server(&self, server: Option<&str>) {
        self.state.lock().expect("lock").server = server.map(str::to_string);
    }

    /// Waits this long before answering CONNECT.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().expect("lock").delay = delay;
    }

    /// CONNECT requests received so far.
    pub fn connects(&self) -> usize {
        self.state.lock().expect("lock").connects
    }
}

async fn handle(mut tcp: TcpStream, st: Arc<Mutex<State>>) {
    let Some((_, authority)) = read_connect_head(&mut tcp).await else {
        return;
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse::<u16>().unwrap_or(0)),
        None => (authority.clone(), 443),
    };
    let (mode, headers, delay) = {
        let mut s = st.lock().expect("lock");
        s.connects += 1;
        let mut headers = String::new();
        if let Some(v) = &s.via {
            headers.push_str(&format!("Via: {v}\r\n"));
        }
        if let Some(v) = &s.server {
            headers.push_str(&format!("Server: {v}\r\n"));
        }
        (s.mode, headers, s.delay)
    };
    tokio::time::sleep(delay).await;
    if let Mode::Refuse(code, reason) = mode {
        let reply = format!("HTTP/1.1 {code} {reason}\r\n{headers}Content-Length: 0\r\n\r\n");
        let _ = tcp.write_all(reply.as_bytes()).await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await
    else {
        let _ = tcp
            .write_all(
                format!("HTTP/1.1 502 Bad Gateway\r\n{headers}Content-Length: 0\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        return;
    };
    let _ = upstream.set_nodelay(true);
    let ok = format!("HTTP/1.1 200 Connection established\r\n{headers}\r\n");
    if tcp.write_all(ok.as_bytes()).await.is_err() {
        return;
    }
    match mode {
        Mode::Intercept(ca) => intercept(tcp, upstream, &host, ca, &st).await,
        _ => {
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
        }
    }
}

/// Terminates the app's TLS as `host` with `ca`'s certificate, and speaks
/// TLS to the real upstream with the ALPN protocol the app chose.
async fn intercept(tcp: TcpStream, upstream: TcpStream, host: &str, ca: &Ca, st: &Mutex<State>) {
    let config = {
        let mut s = st.lock().expect("lock");
        s.minted
            .entry(format!("{host}/{}", ca.cert_pem.len()))
            .or_insert_with(|| {
                let leaf = ca.server(&[host], false);
                let certs: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                        .collect::<Result<_, _>>()
                        .expect("leaf");
                let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
                let mut c = rustls::ServerConfig::builder()
                    .with_no_client_auth()
                    .with_single_cert(certs, key)
                    .expect("server config");
                c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Arc::new(c)
            })
            .clone()
    };
    let Ok(mut app) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await else {
        return;
    };
    let alpn = app.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki::ca().cert_pem.as_bytes()) {
        roots.add(c.expect("ca")).expect("add ca");
    }
    let mut client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.into_iter().collect();
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        return;
    };
    let Ok(mut real) = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, upstream)
        .await
    else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut app, &mut real).await;
}

/// Stops `old` and starts `opts` on the same port (an upstream that
/// renewed its certificate).
pub async fn restart_upstream(old: Upstream, mut opts: Opts) -> Upstream {
    let addr = old.addr;
    drop(old);
    // The old listener closes once its task notices the abort.
    let start = std::time::Instant::now();
    while std::net::TcpListener::bind(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "port {addr} not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    opts.bind = addr;
    Upstream::start(opts).await
}
