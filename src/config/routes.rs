//! Compiling `[[route]]` tables: the built-in `direct` route, each proxy
//! route (its URL, TLS toward the proxy, Basic credentials from a file,
//! connect timeout), and the route lists that targets and `[forward]`
//! name.
//!
//! Owns the rule that a message never shows a proxy URL or a credentials
//! file's content (either may carry a password). It never dials a proxy
//! and never compiles a target.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Uri};
use rustls::RootCertStore;
use toml::Spanned;

use super::compile::{Compiler, MAX_SECRET_FILE, Result};
use super::raw::RawRoute;
use super::{Proxy, Route, RouteKind};
use crate::dial::tls::TlsClient;
use crate::secret::Secret;

impl Compiler<'_> {
    /// `direct`, then every `[[route]]` in file order.
    pub(super) fn routes(
        &self,
        raw: &[RawRoute],
        roots: &Arc<RootCertStore>,
        default_timeout: Duration,
    ) -> Result<Vec<Arc<Route>>> {
        let mut routes = vec![Arc::new(Route {
            name: Route::DIRECT.to_string(),
            kind: RouteKind::Direct,
            connect_timeout: default_timeout,
            fingerprint: 0,
        })];
        for (i, r) in raw.iter().enumerate() {
            let route = self.route(i, r, roots, &routes, default_timeout)?;
            routes.push(Arc::new(route));
        }
        Ok(routes)
    }

    fn route(
        &self,
        i: usize,
        r: &RawRoute,
        roots: &Arc<RootCertStore>,
        existing: &[Arc<Route>],
        default_timeout: Duration,
    ) -> Result<Route> {
        let key = |k: &str| format!("route[{i}].{k}");
        let name = self.name(&r.name, &key("name"))?;
        if existing.iter().any(|x| x.name == name) {
            let msg = if name == Route::DIRECT {
                "\"direct\" is built in and cannot be redefined; give this proxy route another name"
                    .to_string()
            } else {
                format!("a route named \"{name}\" is already defined; names must be unique")
            };
            return Err(self.err(r.name.span(), &key("name"), msg));
        }
        let (https, host, port) = self.proxy_url(&r.proxy, &key("proxy"))?;
        let tls = if https {
            let mut store = (**roots).clone();
            if let Some(ca) = &r.ca_file {
                self.add_ca(&mut store, ca, &key("ca_file"))?;
            }
            Some(
                TlsClient::new(Arc::new(store), None, vec![b"http/1.1".to_vec()])
                    .map_err(|e| self.err(r.proxy.span(), &key("proxy"), e.to_string()))?,
            )
        } else {
            if let Some(ca) = &r.ca_file {
                return Err(self.err(
                    ca.span(),
                    &key("ca_file"),
                    "only an https:// proxy uses a ca_file",
                ));
            }
            None
        };
        let authorization = match &r.credentials_file {
            Some(f) => Some(self.credentials(f, &key("credentials_file"))?),
            None => None,
        };
        let connect_timeout = self
            .duration(r.connect_timeout.as_ref(), &key("connect_timeout"))?
            .unwrap_or(default_timeout);
        Ok(Route {
            fingerprint: self.fingerprint("route", i, &[default_timeout.as_millis() as u64]),
            name,
            kind: RouteKind::Proxy(Proxy {
                host,
                port,
                tls,
                authorization,
            }),
            connect_timeout,
        })
    }

    /// Parses a proxy URL. The message never echoes the URL: it may carry a password.
    fn proxy_url(&self, v: &Spanned<String>, key: &str) -> Result<(bool, String, u16)> {
        let err = |m: &str| self.err(v.span(), key, m.to_string());
        let text = v.get_ref();
        let uri: Uri = text.parse().map_err(|_| {
            err("not a URL: expected \"http://host:port\" or \"https://host:port\"")
        })?;
        let auth = uri.authority().ok_or_else(|| {
            err("no host: expected \"http://host:port\" or \"https://host:port\"")
        })?;
        if auth.as_str().contains('@') {
            return Err(err(
                "credentials in the proxy URL are refused: put \"user:password\" in a file and name it in credentials_file",
            ));
        }
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(err("the scheme must be http:// or https://")),
        };
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(err(
                "a proxy URL has no path or query: expected \"http://host:port\"",
            ));
        }
        let host = auth
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 3128 });
        Ok((https, host, port))
    }

    fn credentials(&self, f: &Spanned<String>, key: &str) -> Result<Secret<HeaderValue>> {
        let path = self.file(f.get_ref());
        let text = crate::files::read_text(&path, MAX_SECRET_FILE)
            .map_err(|e| self.err(f.span(), key, e.to_string()))?;
        let line = text.trim_end_matches(['\r', '\n']);
        let bad = || {
            self.err(
                f.span(),
                key,
                format!(
                    "{} must hold one line \"user:password\" (its content is not shown)",
                    path.display()
                ),
            )
        };
        match line.split_once(':') {
            Some((user, _)) if !user.is_empty() && !line.contains('\n') => {}
            _ => return Err(bad()),
        }
        let mut value = HeaderValue::from_str(&format!("Basic {}", base64(line.as_bytes())))
            .map_err(|_| bad())?;
        value.set_sensitive(true);
        Ok(Secret::new(value))
    }

    pub(super) fn route_list(
        &self,
        list: Option<&Spanned<Vec<Spanned<String>>>>,
        routes: &[Arc<Route>],
        key: &str,
        fallback_span: Range<usize>,
    ) -> Result<Vec<Arc<Route>>> {
        let Some(list) = list else {
            let proxies: Vec<_> = routes.iter().filter(|r| !r.is_direct()).cloned().collect();
            if proxies.is_empty() {
                return Err(self.err(
                    fallback_span,
                    key,
                    "no routes: define a [[route]] with a proxy, or list routes = [\"direct\"] explicitly",
                ));
            }
            return Ok(proxies);
        };
        let mut out: Vec<Arc<Route>> = Vec::new();
        let mut seen = HashSet::new();
        for name in list.get_ref() {
            let route = routes
                .iter()
                .find(|r| r.name == *name.get_ref())
                .ok_or_else(|| {
                    let known: Vec<_> = routes.iter().map(|r| format!("\"{}\"", r.name)).collect();
                    self.err(
                        name.span(),
                        key,
                        format!(
                            "no route named \"{}\": expected one of {}",
                            name.get_ref(),
                            known.join(", ")
                        ),
                    )
                })?;
            if !seen.insert(route.name.clone()) {
                return Err(self.err(
                    name.span(),
                    key,
                    format!("route \"{}\" is listed twice", route.name),
                ));
            }
            out.push(route.clone());
        }
        if out.is_empty() {
            return Err(self.err(
                list.span(),
                key,
                "the list is empty: name at least one route",
            ));
        }
        Ok(out)
    }
}

/// Standard base64 with padding (RFC 4648), for Basic credentials (and
/// the status page's CSP hashes).
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
