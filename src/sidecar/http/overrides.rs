//! `POST /routes/<target>`: the operator's override of a target's route
//! choice (`proxy`, `direct` or `auto`) for a `ttl`, with the refusals a
//! client can act on (400 for a bad value, 404 for an unknown target, 409
//! for a choice the target does not allow).
//!
//! Only reached past the admin checks. Validates and answers; the route
//! table's state changes only through [`crate::sidecar::runtime::Runtime::set_override`].

use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::Endpoints;
use super::body::read_json;
use super::listener::Conn;
use super::reply::{self, Reply, text};
use crate::config::defaults;
use crate::health::Override;
use crate::sidecar::runtime::OverrideRefused;

impl Endpoints {
    /// `POST /routes/<target>`: `force` (`proxy`, `direct` or `auto`) and
    /// `ttl` (a duration such as `"30m"`, or seconds; default 1 h, at most
    /// 24 h) from a JSON body `{"force":"direct","ttl":"30m"}` or the query
    /// string; the body wins.
    pub(super) async fn post_override(&self, req: Request<Incoming>, conn: &Conn) -> Reply {
        let target = req.uri().path().trim_start_matches("/routes/").to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let body = match read_json(req.into_body(), conn).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let param = |key: &str| -> Option<Value> {
            body.as_ref().and_then(|b| b.get(key).cloned()).or_else(|| {
                query.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k == key).then(|| Value::String(v.to_string()))
                })
            })
        };
        let value = param("force");
        let force = match value.as_ref().and_then(Value::as_str) {
            Some("auto") => Override::Auto,
            Some("proxy") => Override::Proxy,
            Some("direct") => Override::Direct,
            _ => {
                let got = value.map(|v| v.to_string()).unwrap_or_default();
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "force must be \"proxy\", \"direct\" or \"auto\" (got {})",
                        crate::dial::connect::sanitize(got.as_bytes())
                    ),
                );
            }
        };
        let ttl = match override_ttl(param("ttl").as_ref()) {
            Ok(t) => t,
            Err(why) => return text(StatusCode::BAD_REQUEST, &why.to_string()),
        };
        match self.rt.set_override(&target, force, ttl).await {
            Ok(()) => {
                let snapshot = self.rt.snapshot();
                let active = snapshot.active_route(&target).unwrap_or_default();
                let mut doc = json!({
                    "target": target,
                    "force": force,
                    "active_route": active,
                });
                if force != Override::Auto {
                    let expires = std::time::SystemTime::now() + ttl;
                    doc["ttl_seconds"] = json!(ttl.as_secs_f64());
                    doc["expires_at"] = json!(crate::dial::tls::rfc3339(
                        expires
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    ));
                }
                reply::json(StatusCode::OK, doc.to_string())
            }
            Err(why @ OverrideRefused::NoTarget(_)) => {
                text(StatusCode::NOT_FOUND, &why.to_string())
            }
            Err(why) => text(StatusCode::CONFLICT, &why.to_string()),
        }
    }
}

/// A `ttl` an override cannot take.
#[derive(Debug, thiserror::Error)]
enum BadTtl {
    /// Not a duration.
    #[error("ttl: {0}")]
    Unreadable(String),
    /// Zero, negative, or over the most.
    #[error("ttl must be a duration above zero and at most {max} (e.g. \"30m\" or 1800)")]
    OutOfRange {
        /// The most, in words.
        max: String,
    },
}

/// The `ttl` of an override: absent, the default (1 h); else a duration
/// (`"90s"`, `"2h"`) or a number of seconds, above zero and at most 24 h.
fn override_ttl(v: Option<&Value>) -> Result<Duration, BadTtl> {
    let max = defaults::ADMIN_OVERRIDE_TTL_MAX;
    let ttl = match v {
        None => return Ok(defaults::ADMIN_OVERRIDE_TTL),
        Some(Value::String(s)) => crate::config::parse_duration(s)
            .map_err(|e| BadTtl::Unreadable(crate::dial::connect::sanitize(e.as_bytes())))?,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= max.as_secs_f64() => {
                Duration::from_secs_f64(secs)
            }
            _ => Duration::ZERO,
        },
        Some(_) => Duration::ZERO,
    };
    if ttl.is_zero() || ttl > max {
        return Err(BadTtl::OutOfRange {
            max: crate::dial::fmt_duration(max),
        });
    }
    Ok(ttl)
}
