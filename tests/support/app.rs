//! A stand-in for the app: one HTTPS request through a forward proxy
//! (CONNECT, TLS with the test CA, HTTP/1.1 GET), with every failure
//! described the way the app would see it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::pki;

/// What the proxy answered when it did not tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRefusal {
    /// Its status.
    pub status: u16,
    /// Its `Proxy-Status` header.
    pub proxy_status: Option<String>,
    /// Its body.
    pub body: String,
}

/// `GET https://host:port/` through `proxy`. `Ok(status)` of the upstream,
/// `Err(Ok(refusal))` when the proxy refused, `Err(Err(text))` otherwise.
pub async fn get_via(
    proxy: SocketAddr,
    host: &str,
    port: u16,
) -> Result<u16, Result<ProxyRefusal, String>> {
    let work = async {
        let mut tcp = TcpStream::connect(proxy)
            .await
            .map_err(|e| Err(format!("connect to proxy: {e}")))?;
        tcp.write_all(format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: Basic YXBwOmFwcA==\r\n\r\n").as_bytes())
            .await
            .map_err(|e| Err(e.to_string()))?;
        let head = read_head(&mut tcp).await.map_err(Err)?;
        let status = status_of(&head);
        if status != 200 {
            let mut body = String::new();
            let _ = tcp.read_to_string(&mut body).await;
            return Err(Ok(ProxyRefusal {
                status,
                proxy_status: header(&head, "proxy-status"),
                body,
            }));
        }
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls::pki_types::CertificateDer::from_pem_slice(pki::ca().cert_pem.as_bytes())
                    .expect("ca"),
            )
            .expect("add ca");
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host.to_string()).expect("name");
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| Err(format!("TLS: {e}")))?;
        tls.write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| Err(e.to_string()))?;
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw);
        Ok(status_of(&text))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| Err(Err("no answer within 10 s".into())))
}

async fn read_head(tcp: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte).await {
            Ok(0) => return Err(format!("proxy closed after {} bytes", buf.len())),
            Ok(_) => buf.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
        if buf.len() > 64 * 1024 {
            return Err("reply head too large".into());
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Sends raw bytes to `addr` and returns what comes back before the close.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTPS connection kept open through a forward proxy: CONNECT, TLS
/// (HTTP/1.1, keep-alive), then any number of GETs on the same tunnel.
pub struct KeptTunnel {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    host: String,
}

impl KeptTunnel {
    /// Opens the tunnel through `proxy` to `host:port`; `Err` says why not.
    pub async fn open(proxy: SocketAddr, host: &str, port: u16) -> Result<Self, String> {
        let work = async {
            let mut tcp = TcpStream::connect(proxy)
                .await
                .map_err(|e| format!("connect to proxy: {e}"))?;
            tcp.write_all(
                format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let head = read_head(&mut tcp).await?;
            if status_of(&head) != 200 {
                return Err(format!(
                    "proxy refused: {}",
                    head.lines().next().unwrap_or("")
                ));
            }
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(
                    rustls::pki_types::CertificateDer::from_pem_slice(
                        pki::ca().cert_pem.as_bytes(),
                    )
                    .expect("ca"),
                )
                .expect("add ca");
            let mut config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.to_string()).expect("name");
            let tls = TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| format!("HTTP handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Self {
                sender,
                host: host.to_string(),
            })
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .unwrap_or_else(|_| Err("no tunnel within 10 s".into()))
    }

    /// `GET path` on the tunnel; the upstream's status, or why it failed
    /// (a tunnel the proxy closed fails here).
    pub async fn get(&mut self, path: &str) -> Result<u16, String> {
        use http_body_util::BodyExt;
        let req = http::Request::get(path)
            .header("host", &self.host)
            .body(http_body_util::Empty::new())
            .expect("request");
        let work = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            resp.into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(status)
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .unwrap_or_else(|_| Err("no answer within 10 s".into()))
    }

    /// True once the connection is closed (by the proxy or the upstream).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}
