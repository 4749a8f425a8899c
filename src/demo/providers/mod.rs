//! Stand-ins for the providers whose credentials a sidecar checks: Entra
//! ID's token endpoint, Twilio's REST API, APNs and FCM, each a TLS server
//! on 127.0.0.1 (the demo CA's identity; HTTP/1.1, and HTTP/2 for APNs)
//! that checks what it is sent for real (a client secret, Basic auth, a
//! signed assertion or provider token verified with the registered public
//! key) and answers the way the provider does, in its words. Each counts its
//! requests and keeps its last results, never a secret; its mode is
//! switched at run time.
//!
//! # Layout
//! - [`entra`]: `POST /{tenant}/oauth2/v2.0/token`.
//! - [`twilio`]: `GET /2010-04-01/Accounts/{sid}.json` and `…/Balance.json`.
//! - [`apns`]: `POST /3/device/{token}` with a provider token (HTTP/2 or
//!   HTTP/1.1).
//! - [`fcm`]: Google's token endpoint `POST /token` and FCM's
//!   `POST /v1/projects/{id}/messages:send`, on one server.

pub mod apns;
pub mod entra;
pub mod fcm;
pub mod twilio;

pub use apns::{Apns, ApnsMode, ApnsSaw};
pub use entra::{AssertionCheck, Entra, EntraMode, EntraSaw, SecretCheck};
pub use fcm::{Fcm, FcmMode, FcmSaw};
pub use twilio::{Twilio, TwilioMode, TwilioSaw};

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Response;
use tokio::net::TcpListener;

use super::stand_ins::{DemoPki, Running, StandInError, acceptor, serve_tls};

/// The most bytes of a request body a stand-in reads.
const MAX_BODY: usize = 64 * 1024;
/// How many results a stand-in keeps.
const KEEP: usize = 32;

/// A request, as a stand-in reads it.
pub(crate) struct Asked {
    /// The method.
    pub method: Method,
    /// The path (and query).
    pub path: String,
    /// HTTP/1.1 or HTTP/2.
    pub version: http::Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (64 KiB at most).
    pub body: Bytes,
}

/// A stand-in's answer.
pub(crate) struct Answer {
    /// The status code.
    pub status: u16,
    /// Extra headers (`Retry-After`).
    pub headers: Vec<(&'static str, String)>,
    /// A JSON body.
    pub body: String,
}

impl Answer {
    /// `status` with a JSON `body`.
    pub(crate) fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
}

/// Requests counted and the last results, what a test asserts on.
pub(crate) struct Log<S> {
    /// Requests answered.
    pub requests: usize,
    /// The last results, oldest first.
    pub seen: VecDeque<S>,
}

impl<S: Clone> Log<S> {
    pub(crate) fn new() -> Self {
        Self {
            requests: 0,
            seen: VecDeque::new(),
        }
    }

    /// Counts a request and keeps what it gave.
    pub(crate) fn record(&mut self, saw: S) {
        self.requests += 1;
        if self.seen.len() == KEEP {
            self.seen.pop_front();
        }
        self.seen.push_back(saw);
    }
}

/// Locks `m`, recovering from a poisoned lock (a panicked test thread must
/// not take the stand-in down with it).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves `answer` over TLS (HTTP/1.1) on 127.0.0.1, on a port the kernel
/// picks.
pub(crate) async fn listen<F>(pki: &DemoPki, answer: F) -> Result<Running, StandInError>
where
    F: Fn(Asked) -> Answer + Send + Sync + 'static,
{
    listen_alpn(pki, &[b"http/1.1"], answer).await
}

/// [`listen`], offering `alpn` (HTTP/2 when the client picks `h2`).
pub(crate) async fn listen_alpn<F>(
    pki: &DemoPki,
    alpn: &[&[u8]],
    answer: F,
) -> Result<Running, StandInError>
where
    F: Fn(Asked) -> Answer + Send + Sync + 'static,
{
    let acceptor = acceptor(pki, alpn)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let answer = Arc::new(answer);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                serve_tls(tls, move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(respond(&*answer, req).await) }
                })
                .await;
            });
        }
    });
    Ok(Running::new(addr, task))
}

/// Reads `req` whole and answers it.
async fn respond<F>(answer: &F, req: hyper::Request<hyper::body::Incoming>) -> Response<Full<Bytes>>
where
    F: Fn(Asked) -> Answer,
{
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), ToString::to_string);
    let a = answer(Asked {
        method: parts.method,
        path,
        version: parts.version,
        headers: parts.headers,
        body,
    });
    let mut r = Response::new(Full::new(Bytes::from(a.body)));
    *r.status_mut() = http::StatusCode::from_u16(a.status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    for (k, v) in a.headers {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

/// A compact JWS split: its header and claims (JSON), its signature, and
/// the signed input (`header.claims`). `None` when it is not one.
pub(crate) fn jws_parts(
    token: &str,
) -> Option<(serde_json::Value, serde_json::Value, Vec<u8>, String)> {
    use crate::credential::provider::jwt::b64_decode;
    let parts: Vec<&str> = token.split('.').collect();
    let [h, c, sig] = parts.as_slice() else {
        return None;
    };
    let decode = |p: &str| b64_decode(p).and_then(|b| serde_json::from_slice(&b).ok());
    Some((decode(h)?, decode(c)?, b64_decode(sig)?, format!("{h}.{c}")))
}

/// SHA-256 of `token`: what a stand-in keeps to count distinct tokens
/// without keeping them.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    let mut d = [0u8; 32];
    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    d
}

/// Unix seconds now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A random token, base64url: access tokens and trace ids that mean
/// nothing.
pub(crate) fn random_token(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; bytes];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    crate::credential::provider::jwt::b64url(&b)
}
