//! Our own CONNECT exchange with a forward proxy (hyper-util's `Tunnel`
//! throws the status away): send `CONNECT host:port` — always the host name,
//! never a resolved address, so proxies that allow by domain work — read the
//! reply with a bounded parser, and keep the status line and the headers a
//! report needs (`Via`, `Server`, `Proxy-Status`).
//!
//! Never reads more than [`MAX_REPLY`] bytes or [`MAX_HEADERS`] headers, and
//! never writes credentials anywhere but the request itself.

use std::fmt;

use bytes::Bytes;
use http::HeaderValue;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stream::{BoxStream, Rewind};
use crate::secret::Secret;

/// The largest CONNECT reply head accepted.
pub const MAX_REPLY: usize = 16 * 1024;
/// The most headers accepted in a CONNECT reply.
pub const MAX_HEADERS: usize = 64;
/// The longest header value kept for a report.
const MAX_KEPT: usize = 200;

/// What the proxy answered to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectReply {
    /// The status code.
    pub status: u16,
    /// The status line as sent (sanitised), e.g. `HTTP/1.1 502 Bad Gateway`.
    pub status_line: String,
    /// The `Via` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The `Server` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The `Proxy-Status` header (RFC 9209).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_status: Option<String>,
    /// Squid's `X-Squid-Error` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub squid_error: Option<String>,
}

impl fmt::Display for ConnectReply {
    /// `502 Bad Gateway, Via: 1.1 egress-proxy, Proxy-Status: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = self
            .status_line
            .split_once(' ')
            .map_or(self.status_line.as_str(), |(_, rest)| rest);
        f.write_str(line)?;
        for (name, value) in [
            ("Via", &self.via),
            ("Server", &self.server),
            ("Proxy-Status", &self.proxy_status),
            ("X-Squid-Error", &self.squid_error),
        ] {
            if let Some(v) = value {
                write!(f, ", {name}: {v}")?;
            }
        }
        Ok(())
    }
}

impl ConnectReply {
    /// True when the proxy refused this one destination by its own policy:
    /// a 403 that says so, with Squid's `X-Squid-Error: ERR_ACCESS_DENIED`
    /// or a `Proxy-Status` whose `error` names a denial
    /// (`http_request_denied`, `destination_ip_prohibited`). The status and
    /// the marker together: a marker on a 502 is a broken proxy, and a
    /// bare 403 may be one too.
    pub fn is_policy_denial(&self) -> bool {
        if self.status != 403 {
            return false;
        }
        let squid = self.squid_error.as_deref().is_some_and(|e| {
            e.split_whitespace()
                .next()
                .is_some_and(|code| code.eq_ignore_ascii_case("ERR_ACCESS_DENIED"))
        });
        let status = self.proxy_status.as_deref().is_some_and(|v| {
            proxy_status_errors(v).any(|e| {
                e.eq_ignore_ascii_case("http_request_denied")
                    || e.eq_ignore_ascii_case("destination_ip_prohibited")
            })
        });
        squid || status
    }
}

/// The `error` parameters of a `Proxy-Status` value (RFC 9209: a list of
/// members, each with `;`-separated parameters), quoted strings skipped so
/// that a `details` text cannot pose as one.
fn proxy_status_errors(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' | ',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts.into_iter().filter_map(|p| {
        let (name, v) = p.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("error")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// Why the CONNECT exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The proxy answered, but not with 2xx.
    #[error("CONNECT refused: {0}")]
    Refused(Box<ConnectReply>),
    /// The reply was not HTTP.
    #[error("malformed CONNECT reply: {0}")]
    Malformed(String),
    /// The reply head did not end within the limits.
    #[error("CONNECT reply head larger than {MAX_REPLY} bytes or {MAX_HEADERS} headers")]
    Oversized,
    /// The proxy closed the connection before a full reply.
    #[error("proxy closed the connection after {received} bytes of CONNECT reply")]
    Closed {
        /// Bytes received before the close.
        received: usize,
    },
    /// Reading or writing failed.
    #[error("CONNECT exchange: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends CONNECT for `authority` (`host:port`) and reads the reply. On 2xx,
/// returns the stream positioned after the reply head.
pub async fn exchange(
    mut stream: BoxStream,
    authority: &str,
    authorization: Option<&Secret<HeaderValue>>,
) -> Result<(BoxStream, ConnectReply), ConnectError> {
    let mut request = Vec::with_capacity(256);
    request.extend_from_slice(
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").as_bytes(),
    );
    if let Some(auth) = authorization {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(auth.expose().as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(
        concat!(
            "User-Agent: egress-sentinel/",
            env!("CARGO_PKG_VERSION"),
            "\r\n\r\n"
        )
        .as_bytes(),
    );
    stream.write_all(&request).await?;
    stream.flush().await?;
    // Let the request (and its credentials) go as soon as it is sent.
    drop(request);

    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let room = MAX_REPLY.saturating_sub(buf.len());
        if room == 0 {
            return Err(ConnectError::Oversized);
        }
        let want = room.min(chunk.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(ConnectError::Closed {
                received: buf.len(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((reply, head_len)) = parse_reply(&buf)? {
            if !(200..300).contains(&reply.status) {
                return Err(ConnectError::Refused(Box::new(reply)));
            }
            let rest = Bytes::copy_from_slice(&buf[head_len..]);
            let stream: BoxStream = if rest.is_empty() {
                stream
            } else {
                Box::new(Rewind::new(rest, stream))
            };
            return Ok((stream, reply));
        }
    }
}

/// Parses a reply head; `Ok(None)` while it is incomplete.
fn parse_reply(buf: &[u8]) -> Result<Option<(ConnectReply, usize)>, ConnectError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ConnectError::Oversized),
        Err(e) => {
            let first = buf.split(|b| *b == b'\n').next().unwrap_or(buf);
            return Err(ConnectError::Malformed(format!(
                "{e} (first line: {:?})",
                sanitize(first)
            )));
        }
    };
    let status = response.code.unwrap_or(0);
    let version = match response.version {
        Some(0) => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| sanitize(h.value))
    };
    let reply = ConnectReply {
        status,
        status_line: format!(
            "{version} {status} {}",
            sanitize(response.reason.unwrap_or("").as_bytes())
        ),
        via: header("via"),
        server: header("server"),
        proxy_status: header("proxy-status"),
        squid_error: header("x-squid-error"),
    };
    Ok(Some((reply, head_len)))
}

/// Printable ASCII only, bounded: header text from a proxy is hostile.
pub fn sanitize(raw: &[u8]) -> String {
    let mut out: String = raw
        .iter()
        .take(MAX_KEPT)
        .map(|b| {
            if (0x20..0x7f).contains(b) {
                char::from(*b)
            } else {
                '?'
            }
        })
        .collect();
    if raw.len() > MAX_KEPT {
        out.push('…');
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, squid: Option<&str>, proxy_status: Option<&str>) -> ConnectReply {
        ConnectReply {
            status,
            status_line: format!("HTTP/1.1 {status} X"),
            via: None,
            server: None,
            proxy_status: proxy_status.map(str::to_string),
            squid_error: squid.map(str::to_string),
        }
    }

    #[test]
    fn a_policy_denial_needs_the_403_and_the_marker_together() {
        assert!(reply(403, Some("ERR_ACCESS_DENIED 0"), None).is_policy_denial());
        assert!(reply(403, None, Some("squid; error=http_request_denied")).is_policy_denial());
        assert!(
            reply(
                403,
                None,
                Some("a; error=dns_timeout, b; error=destination_ip_prohibited")
            )
            .is_policy_denial()
        );
        // A broken proxy that happens to say "denied", a bare 403, other errors.
        assert!(!reply(502, None, Some("p; error=http_request_denied")).is_policy_denial());
        assert!(!reply(502, Some("ERR_ACCESS_DENIED 0"), None).is_policy_denial());
        assert!(!reply(403, None, None).is_policy_denial());
        assert!(!reply(403, Some("ERR_CONNECT_FAIL 111"), None).is_policy_denial());
        assert!(!reply(403, None, Some("p; error=connection_refused")).is_policy_denial());
        // The marker inside a quoted details text does not count.
        assert!(
            !reply(
                403,
                None,
                Some("p; error=proxy_internal_error; details=\"error=http_request_denied; x\"")
            )
            .is_policy_denial()
        );
    }

    #[test]
    fn keeps_status_line_and_diagnostic_headers() {
        let raw = b"HTTP/1.1 502 Bad Gateway\r\nVia: 1.1 egress-proxy\r\nProxy-Status: egress; error=connection_refused\r\nServer: squid\r\n\r\n";
        let (reply, n) = parse_reply(raw).expect("parse").expect("complete");
        assert_eq!(n, raw.len());
        assert_eq!(reply.status, 502);
        assert_eq!(reply.status_line, "HTTP/1.1 502 Bad Gateway");
        assert_eq!(reply.via.as_deref(), Some("1.1 egress-proxy"));
        assert_eq!(
            reply.to_string(),
            "502 Bad Gateway, Via: 1.1 egress-proxy, Server: squid, Proxy-Status: egress; error=connection_refused"
        );
    }

    #[test]
    fn partial_garbage_and_control_bytes() {
        assert!(
            parse_reply(b"HTTP/1.1 200 OK\r\nVia: x")
                .expect("partial")
                .is_none()
        );
        assert!(matches!(
            parse_reply(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ConnectError::Malformed(_))
        ));
        assert_eq!(sanitize(b"a\x1b[31mb\x00"), "a?[31mb?");
    }

    #[test]
    fn hostile_replies_never_panic_and_stay_bounded() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seed = b"HTTP/1.1 502 Bad Gateway\r\nVia: 1.1 p\r\nProxy-Status: p; error=x\r\n\r\n";
        for _ in 0..50_000 {
            let mut input = seed.to_vec();
            for _ in 0..(next() % 8) {
                let pos = (next() as usize) % input.len();
                input[pos] = next() as u8;
            }
            if let Ok(Some((reply, n))) = parse_reply(&input) {
                assert!(n <= input.len());
                assert!(reply.status_line.len() < 300);
                assert!(reply.to_string().chars().all(|c| !c.is_control()));
            }
        }
    }
}
