//! Reading and checking what the app sends the forward proxy first: a
//! request head, bounded in size, header count and time, that must be either
//! `CONNECT host:port` (HTTP/1.0, as Python's `http.client` and `openssl
//! s_client -proxy` send it, or 1.1) or an absolute-form `http://` request
//! (then served by `plain`). Everything else is refused with the status that
//! says why.
//!
//! Owns parsing only; it decides nothing about where a request may go.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::destination::parse_authority;

/// The largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers accepted.
pub const MAX_HEADERS: usize = 64;

/// What the app asked for. Hosts are in the canonical form of
/// [`crate::destination::Host`]'s `Display`: `2130706434` arrives here as
/// `127.0.0.2`, `API.example.` as `api.example`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// `CONNECT host:port`.
    Connect {
        /// Destination host (no brackets), canonical.
        host: String,
        /// Destination port.
        port: u16,
    },
    /// An absolute-form `http://` request: the first of a connection that
    /// `plain` serves request by request.
    Http {
        /// Destination host, canonical.
        host: String,
        /// Destination port.
        port: u16,
        /// The head as the app sent it.
        head: Vec<u8>,
    },
}

/// A request the proxy refuses before any routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 408, 431...
    pub status: u16,
    /// Why, for the app and the log.
    pub why: String,
}

fn refuse(status: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// Reads one request head within `timeout` (a slow drip counts against the
/// whole head, not each read). Returns the request and any bytes the app
/// sent after the head (a pipelined TLS ClientHello, a request body).
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(Ask, Bytes), Refusal> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(head_len) = head_end(&buf) {
            let ask = parse(&buf[..head_len])?;
            return Ok((ask, Bytes::copy_from_slice(&buf[head_len..])));
        }
        if buf.len() >= MAX_HEAD {
            return Err(refuse(
                431,
                format!("request head larger than {MAX_HEAD} bytes"),
            ));
        }
        let want = (MAX_HEAD - buf.len()).min(chunk.len());
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..want])).await {
            Err(_) => {
                return Err(refuse(
                    408,
                    format!("request head not complete within {timeout:?}"),
                ));
            }
            Ok(Err(e)) => return Err(refuse(400, format!("reading the request: {e}"))),
            Ok(Ok(0)) => {
                return Err(refuse(
                    400,
                    "connection closed before a complete request head",
                ));
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Checks one complete head.
pub fn parse(head: &[u8]) -> Result<Ask, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(refuse(400, "incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(
                431,
                format!("more than {MAX_HEADERS} request headers"),
            ));
        }
        Err(e) => return Err(refuse(400, format!("malformed request: {e}"))),
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let has = |name: &str| {
        req.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    };
    if has("content-length") && has("transfer-encoding") {
        return Err(refuse(
            400,
            "both Content-Length and Transfer-Encoding: refused (request smuggling)",
        ));
    }
    if method == "CONNECT" {
        let (host, port) = parse_authority(target, None)
            .map_err(|e| refuse(400, format!("CONNECT target must be host:port: {e}")))?;
        return Ok(Ask::Connect {
            host: host.to_string(),
            port,
        });
    }
    let rest = target.strip_prefix("http://").ok_or_else(|| {
        if target.starts_with("https://") {
            refuse(
                400,
                "https:// URLs go through CONNECT, not an absolute-form request",
            )
        } else {
            refuse(
                400,
                format!(
                    "a proxy request needs an absolute http:// URL or CONNECT, got {:?}",
                    sanitize(target)
                ),
            )
        }
    })?;
    let auth = rest.find(['/', '?']).map_or(rest, |i| &rest[..i]);
    let (host, port) = parse_authority(auth, Some(80))
        .map_err(|e| refuse(400, format!("bad host in URL {:?}: {e}", sanitize(target))))?;
    let host = host.to_string();
    Ok(Ask::Http {
        host,
        port,
        head: head.to_vec(),
    })
}

fn sanitize(s: &str) -> String {
    crate::dial::connect::sanitize(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(head: &str) -> u16 {
        parse(head.as_bytes()).expect_err(head).status
    }

    #[test]
    fn connect_needs_authority_form_with_a_port_over_http_1_1() {
        assert_eq!(
            parse(b"CONNECT API.push.apple.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Ask::Connect {
                host: "api.push.apple.com".into(),
                port: 443
            })
        );
        assert_eq!(
            parse(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n"),
            Ok(Ask::Connect {
                host: "::1".into(),
                port: 443
            })
        );
        assert_eq!(status("CONNECT api.push.apple.com HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("CONNECT /index.html HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("CONNECT * HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("CONNECT a.example:0 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("CONNECT a.example:99999 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            parse(b"CONNECT a.example:443 HTTP/1.0\r\n\r\n"),
            Ok(Ask::Connect {
                host: "a.example".into(),
                port: 443
            }),
            "Python's http.client and openssl s_client send HTTP/1.0"
        );
        assert_eq!(status("CONNECT a b:443 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET https://x/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status(
                "POST http://x/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            400
        );
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            status(&format!("CONNECT a:443 HTTP/1.1\r\n{many}\r\n")),
            431
        );
    }

    #[test]
    fn hosts_arrive_canonical_whatever_the_spelling() {
        let connect = |authority: &str| match parse(
            format!("CONNECT {authority} HTTP/1.1\r\n\r\n").as_bytes(),
        ) {
            Ok(Ask::Connect { host, port }) => Ok((host, port)),
            Ok(other) => panic!("{other:?}"),
            Err(r) => Err(r),
        };
        for (spelling, host) in [
            ("2852039166", "169.254.169.254"),
            ("0xA9FEA9FE", "169.254.169.254"),
            ("0251.0376.0251.0376", "169.254.169.254"),
            ("169.254.43518", "169.254.169.254"),
            ("[::ffff:a9fe:a9fe]", "::ffff:169.254.169.254"),
            ("[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe"),
            ("[2002:a9fe:a9fe::]", "2002:a9fe:a9fe::"),
            ("LOCALHOST", "localhost"),
            ("api.push.apple.com.", "api.push.apple.com"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(
                connect(&format!("{spelling}:443")),
                Ok((host.to_string(), 443)),
                "{spelling}"
            );
        }
        for (bad, why) in [
            ("1.2.3.4.5:443", "last label is a number"),
            ("b\u{fc}cher.example:443", "Punycode"),
            ("a..b:443", "empty label"),
            ("::1:443", "brackets"),
        ] {
            let r = connect(bad).expect_err(bad);
            assert_eq!(r.status, 400, "{bad}");
            assert!(r.why.contains(why), "{bad}: {}", r.why);
        }
        let Ok(Ask::Http { host, port, .. }) = parse(b"GET http://0x7f.1:8080/x HTTP/1.1\r\n\r\n")
        else {
            panic!("valid request");
        };
        assert_eq!((host.as_str(), port), ("127.0.0.1", 8080));
        assert_eq!(
            status("GET http://user@evil.example/ HTTP/1.1\r\n\r\n"),
            400
        );
    }

    #[test]
    fn absolute_form_names_its_destination_and_keeps_the_head() {
        let raw = b"GET http://Example.test:8080/a?b=1 HTTP/1.0\r\nHost: other\r\n\r\n";
        let Ok(Ask::Http { host, port, head }) = parse(raw) else {
            panic!("valid request");
        };
        assert_eq!((host.as_str(), port), ("example.test", 8080));
        assert_eq!(head, raw.to_vec());
        let Ok(Ask::Http { port, .. }) = parse(b"GET http://example.test HTTP/1.1\r\n\r\n") else {
            panic!("valid request");
        };
        assert_eq!(port, 80);
    }

    #[tokio::test]
    async fn a_slow_drip_gets_408_and_an_oversized_head_431() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        use tokio::io::AsyncWriteExt;
        client
            .write_all(b"CONNECT a.example:443 HTTP/1.1\r\nX-Slow: ")
            .await
            .expect("write");
        let err = read(&mut server, Duration::from_millis(100))
            .await
            .expect_err("timeout");
        assert_eq!(err.status, 408);
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client
            .write_all(
                format!(
                    "CONNECT a.example:443 HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                    "a".repeat(20_000)
                )
                .as_bytes(),
            )
            .await
            .expect("write");
        assert_eq!(
            read(&mut server, Duration::from_secs(1))
                .await
                .expect_err("big")
                .status,
            431
        );
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client
            .write_all(b"CONNECT a.example:443 HTTP/1.1\r\n\r\n\x16\x03\x01")
            .await
            .expect("write");
        let (ask, rest) = read(&mut server, Duration::from_secs(1)).await.expect("ok");
        assert!(matches!(ask, Ask::Connect { port: 443, .. }));
        assert_eq!(&rest[..], b"\x16\x03\x01");
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // Mutations of valid heads plus random bytes: every one must give an
        // answer (Ok or a refusal), never a panic.
        let seeds: [&[u8]; 3] = [
            b"CONNECT api.push.apple.com:443 HTTP/1.1\r\nHost: api.push.apple.com:443\r\n\r\n",
            b"GET http://a.example:8080/x?y HTTP/1.1\r\nConnection: a, b\r\nA: 1\r\n\r\n",
            b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n",
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..50_000 {
            let mut input = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 8) {
                let pos = (next() as usize) % input.len();
                match next() % 3 {
                    0 => input[pos] = next() as u8,
                    1 => {
                        input.remove(pos);
                    }
                    _ => input.insert(pos, b":/[]% \r\n"[(next() % 8) as usize]),
                }
                if input.is_empty() {
                    input.push(b'C');
                }
            }
            let _ = parse(&input);
        }
    }
}
