//! The checks every state-changing admin request passes (`POST /verify`,
//! `POST /routes/<target>`) before anything happens, as pure functions of
//! the request head, the peer and the listener's own address:
//!
//! - **Host** names the listener itself: `localhost`, the address the
//!   client connected to (or a loopback address when that is loopback), or
//!   a name in `[admin] hosts`. A page on `evil.example` whose name was
//!   rebound to 127.0.0.1 sends `Host: evil.example`: refused (DNS
//!   rebinding). The port is not compared: a `kubectl port-forward
//!   8080:9465` rewrites it, and rebinding is about the name.
//! - **Origin**, when present, is the listener's own origin (the same host
//!   and port as `Host`), and `Sec-Fetch-Site`, when present, says
//!   `same-origin` (or `none`): a form or `fetch` from another site is
//!   refused (CSRF).
//! - **Who**: with `[admin] token_file`, `Authorization: Bearer <token>`,
//!   compared in constant time; without it, loopback peers only.
//! - **Body**: JSON or nothing. A form (`application/x-www-form-urlencoded`,
//!   `multipart/form-data`, `text/plain`) is what a cross-site page can send
//!   without a CORS preflight: refused, even empty.
//!
//! Never reads a body, never logs the token.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, StatusCode, header};

use crate::secret::Secret;

/// What a state-changing request is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Guard<'a> {
    /// The listener's address as the client reached it (the connection's
    /// local address).
    pub local: SocketAddr,
    /// The client's address.
    pub peer: SocketAddr,
    /// `[admin] token_file`'s token, if set.
    pub token: Option<&'a Secret<String>>,
    /// `[admin] hosts`: more names `Host` may give.
    pub hosts: &'a [String],
}

/// Why a request was refused. The message never quotes a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Host`, or one that does not name this listener.
    ForeignHost(String),
    /// An `Origin` other than the listener's own, or `Sec-Fetch-Site`
    /// saying another site sent it.
    ForeignOrigin(String),
    /// A token is configured and the request carries none.
    TokenMissing,
    /// A token is configured and the request's is not it.
    TokenWrong,
    /// No token is configured and the peer is not on loopback.
    NotLoopback(IpAddr),
    /// A body that is not JSON (a form, text).
    NotJson(String),
}

impl Refusal {
    /// The status to answer with: 415 for a body of the wrong type, 403
    /// for the rest.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ForeignHost(h) => write!(
                f,
                "Host {h:?} does not name this admin listener (localhost, its own address, or [admin] hosts)"
            ),
            Self::ForeignOrigin(o) => write!(
                f,
                "request from another origin ({o}) refused: admin changes come from this listener's own page or a command-line client"
            ),
            Self::TokenMissing => f.write_str(
                "this admin listener needs \"Authorization: Bearer <token>\" ([admin] token_file)",
            ),
            Self::TokenWrong => f.write_str("the bearer token is not this admin listener's"),
            Self::NotLoopback(ip) => write!(
                f,
                "changes are accepted from loopback only when [admin] token_file is not set (peer {ip})"
            ),
            Self::NotJson(t) => write!(
                f,
                "the body must be JSON (Content-Type: application/json) or empty, not {t:?}"
            ),
        }
    }
}

/// Runs every check on a state-changing request, in the order the module
/// header gives; the first failure is the answer.
pub fn check(headers: &HeaderMap, guard: &Guard<'_>) -> Result<(), Refusal> {
    let host = check_host(headers, guard)?;
    check_origin(headers, &host)?;
    check_caller(headers, guard)?;
    check_body_type(headers)
}

/// `Host` names this listener; returns it (lower case) for the Origin check.
pub fn check_host(headers: &HeaderMap, guard: &Guard<'_>) -> Result<String, Refusal> {
    let raw = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Refusal::ForeignHost(String::new()))?;
    let host = raw.trim().to_ascii_lowercase();
    let foreign = || Refusal::ForeignHost(crate::dial::connect::sanitize(raw.as_bytes()));
    let (name, _port) = split_host(&host).ok_or_else(foreign)?;
    let own = match name.parse::<IpAddr>() {
        Ok(ip) => {
            let ip = ip.to_canonical();
            let local = guard.local.ip().to_canonical();
            ip == local || (local.is_loopback() && ip.is_loopback())
        }
        Err(_) => {
            let name = name.trim_end_matches('.');
            name == "localhost" || guard.hosts.iter().any(|h| h == name)
        }
    };
    if own { Ok(host) } else { Err(foreign()) }
}

/// `Origin`, when present, is `http(s)://<Host>`; `Sec-Fetch-Site`, when
/// present, is `same-origin` or `none`.
pub fn check_origin(headers: &HeaderMap, host: &str) -> Result<(), Refusal> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Err(Refusal::ForeignOrigin(format!("Sec-Fetch-Site: {site}")));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let text = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
    let foreign = || Refusal::ForeignOrigin(crate::dial::connect::sanitize(text.as_bytes()));
    let (scheme, authority) = text.split_once("://").ok_or_else(foreign)?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err(foreign()),
    };
    let (o_name, o_port) = split_host(authority).ok_or_else(foreign)?;
    let (h_name, h_port) = split_host(host).ok_or_else(foreign)?;
    let same = o_name.trim_end_matches('.') == h_name.trim_end_matches('.')
        && o_port.unwrap_or(default_port) == h_port.unwrap_or(default_port);
    if same { Ok(()) } else { Err(foreign()) }
}

/// With a token: `Authorization: Bearer <token>`; without: a loopback peer.
pub fn check_caller(headers: &HeaderMap, guard: &Guard<'_>) -> Result<(), Refusal> {
    let Some(token) = guard.token else {
        let ip = guard.peer.ip().to_canonical();
        return if ip.is_loopback() {
            Ok(())
        } else {
            Err(Refusal::NotLoopback(ip))
        };
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or(Refusal::TokenMissing)?;
    if same_secret(given.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::TokenWrong)
    }
}

/// A body, if any, is JSON; a form type is refused even with no body.
pub fn check_body_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = ct.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" {
        Ok(())
    } else {
        Err(Refusal::NotJson(crate::dial::connect::sanitize(
            text.as_bytes(),
        )))
    }
}

/// Compares two secrets in time that depends on neither: both are hashed
/// first (so the lengths do not show either), then every byte of the
/// digests is compared.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use ring::digest::{SHA256, digest};
    let (da, db) = (digest(&SHA256, a), digest(&SHA256, b));
    let diff = da
        .as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `name[:port]` or `[v6][:port]` → (name without brackets, port).
fn split_host(s: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n, Some(p)),
            Some(_) => return None,
            None => (s, None),
        }
    };
    if name.is_empty() || name.contains(['/', '@', ' ', '\\']) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn guard<'a>(peer: &str, token: Option<&'a Secret<String>>, hosts: &'a [String]) -> Guard<'a> {
        Guard {
            local: "127.0.0.1:9465".parse().expect("addr"),
            peer: peer.parse().expect("addr"),
            token,
            hosts,
        }
    }

    #[test]
    fn host_must_name_the_listener_not_a_rebound_domain() {
        let hosts = vec!["egress-sentinel.sso.svc".to_string()];
        let g = guard("127.0.0.1:50000", None, &hosts);
        for ok in [
            "127.0.0.1:9465",
            "localhost:9465",
            "LOCALHOST.:8080",
            "127.0.0.2:9465",
            "[::1]:9465",
            "egress-sentinel.sso.svc:9465",
            "localhost",
        ] {
            assert!(
                check_host(&headers(&[("host", ok)]), &g).is_ok(),
                "{ok} refused"
            );
        }
        for bad in [
            "evil.example:9465",
            "localhost.evil.example",
            "10.0.0.5:9465",
            "127.0.0.1:9465@evil",
            "[::1",
            "",
        ] {
            let r = check_host(&headers(&[("host", bad)]), &g);
            assert!(matches!(r, Err(Refusal::ForeignHost(_))), "{bad}: {r:?}");
        }
        assert!(check_host(&HeaderMap::new(), &g).is_err(), "no Host");
        // Bound to all interfaces: the pod address the client reached is
        // the listener's own; loopback names are then not.
        let g = Guard {
            local: "10.1.2.3:9465".parse().expect("addr"),
            ..g
        };
        assert!(check_host(&headers(&[("host", "10.1.2.3:9465")]), &g).is_ok());
        assert!(check_host(&headers(&[("host", "127.0.0.1:9465")]), &g).is_err());
    }

    #[test]
    fn origin_when_present_is_the_listeners_own() {
        let h = "127.0.0.1:9465";
        assert!(check_origin(&headers(&[]), h).is_ok(), "curl sends none");
        assert!(check_origin(&headers(&[("origin", "http://127.0.0.1:9465")]), h).is_ok());
        assert!(
            check_origin(
                &headers(&[
                    ("origin", "http://localhost"),
                    ("sec-fetch-site", "same-origin")
                ]),
                "localhost:80"
            )
            .is_ok()
        );
        for bad in [
            "http://evil.example",
            "http://127.0.0.1:8080",
            "https://127.0.0.1:9465:1",
            "null",
            "file://",
        ] {
            assert!(
                matches!(
                    check_origin(&headers(&[("origin", bad)]), h),
                    Err(Refusal::ForeignOrigin(_))
                ),
                "{bad}"
            );
        }
        assert!(check_origin(&headers(&[("sec-fetch-site", "cross-site")]), h).is_err());
        assert!(check_origin(&headers(&[("sec-fetch-site", "same-site")]), h).is_err());
    }

    #[test]
    fn without_a_token_only_loopback_peers_may_change_anything() {
        let g = guard("127.0.0.1:50000", None, &[]);
        assert!(check_caller(&headers(&[]), &g).is_ok());
        let g = guard("[::ffff:127.0.0.1]:50000", None, &[]);
        assert!(
            check_caller(&headers(&[]), &g).is_ok(),
            "v4-mapped loopback"
        );
        for peer in ["10.0.0.7:50000", "[fd00::1]:50000", "[::ffff:10.0.0.7]:1"] {
            let g = guard(peer, None, &[]);
            assert!(
                matches!(
                    check_caller(&headers(&[]), &g),
                    Err(Refusal::NotLoopback(_))
                ),
                "{peer}"
            );
        }
    }

    #[test]
    fn with_a_token_every_peer_needs_it_and_the_refusal_never_shows_it() {
        let token = Secret::new("s3cret-token-0123456789".to_string());
        for peer in ["127.0.0.1:1", "10.0.0.7:1"] {
            let g = guard(peer, Some(&token), &[]);
            assert_eq!(check_caller(&headers(&[]), &g), Err(Refusal::TokenMissing));
            let wrong = check_caller(&headers(&[("authorization", "Bearer s3cret")]), &g);
            assert_eq!(wrong, Err(Refusal::TokenWrong));
            assert!(!wrong.unwrap_err().to_string().contains("s3cret"));
            assert_eq!(
                check_caller(
                    &headers(&[("authorization", "Basic s3cret-token-0123456789")]),
                    &g
                ),
                Err(Refusal::TokenMissing)
            );
            assert!(
                check_caller(
                    &headers(&[("authorization", "bearer  s3cret-token-0123456789 ")]),
                    &g
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn bodies_are_json_or_nothing() {
        assert!(check_body_type(&headers(&[])).is_ok());
        assert!(
            check_body_type(&headers(&[(
                "content-type",
                "Application/JSON; charset=utf-8"
            )]))
            .is_ok()
        );
        for form in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
        ] {
            let r = check_body_type(&headers(&[("content-type", form)]));
            assert_eq!(
                r.as_ref().map_err(Refusal::status),
                Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            );
        }
    }

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
