//! The demo's app: an HTTPS client that reaches its upstreams through the
//! sidecar as its `HTTPS_PROXY` — CONNECT, TLS with the demo CA, one GET.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dial::connect::{self, ConnectError};
use crate::dial::tls::{TlsClient, TlsClientError};

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The upstream answered with this status.
    Ok(u16),
    /// The sidecar refused: its status and `Proxy-Status` header.
    Refused(u16, String),
    /// Anything else.
    Failed(String),
}

/// Why the app could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The demo CA is not PEM.
    #[error(transparent)]
    CaPem(#[from] rustls::pki_types::pem::Error),
    /// The demo CA cannot be a root.
    #[error(transparent)]
    CaRoot(#[from] rustls::Error),
    /// The TLS client settings could not be built.
    #[error(transparent)]
    Tls(#[from] TlsClientError),
}

/// The app.
pub struct App {
    proxy: SocketAddr,
    tls: TlsClient,
}

impl App {
    /// An app using `proxy`, trusting `ca_pem`.
    pub fn new(proxy: SocketAddr, ca_pem: &str) -> Result<Self, AppError> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c?)?;
        }
        let tls = TlsClient::new(Arc::new(roots), None, vec![b"http/1.1".to_vec()])?;
        Ok(Self { proxy, tls })
    }

    /// `GET https://host:port/` through the sidecar, within 5 s.
    pub async fn get(&self, host: &str, port: u16) -> Answer {
        match tokio::time::timeout(Duration::from_secs(5), self.request(host, port)).await {
            Ok(a) => a,
            Err(_) => Answer::Failed("no answer within 5 s".into()),
        }
    }

    async fn request(&self, host: &str, port: u16) -> Answer {
        let tcp = match TcpStream::connect(self.proxy).await {
            Ok(t) => t,
            Err(e) => return Answer::Failed(format!("connect to the sidecar: {e}")),
        };
        let authority = format!("{host}:{port}");
        let stream = match connect::exchange(Box::new(tcp), &authority, None).await {
            Ok((s, _)) => s,
            Err(ConnectError::Refused(reply)) => {
                return Answer::Refused(reply.status, reply.proxy_status.unwrap_or_default());
            }
            Err(e) => return Answer::Failed(e.to_string()),
        };
        let mut tls = match self.tls.handshake(stream, host).await {
            Ok((s, _)) => s,
            Err(f) => return Answer::Failed(format!("TLS: {}", f.error)),
        };
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        if let Err(e) = tls.write_all(req.as_bytes()).await {
            return Answer::Failed(e.to_string());
        }
        let mut head = [0u8; 64];
        match tls.read(&mut head).await {
            Ok(n) => {
                let text = String::from_utf8_lossy(&head[..n]);
                match text.split(' ').nth(1).and_then(|c| c.parse().ok()) {
                    Some(code) => Answer::Ok(code),
                    None => Answer::Failed(format!("not HTTP: {text:?}")),
                }
            }
            Err(e) => Answer::Failed(e.to_string()),
        }
    }
}
