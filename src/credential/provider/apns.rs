//! APNs token authentication: a provider token (ES256 JWT, header `kid`,
//! claims `iss` = team and `iat`) signed with the `.p8` key and sent to the
//! target's own device URL for a device that cannot exist, and how APNs'
//! `reason` is read. Apple's rule for provider tokens (reuse one for up to
//! an hour, renew it no more often than every 20 minutes, or APNs answers
//! 429 `TooManyProviderTokenUpdates`) is kept by a process-wide cache, so a
//! reload that leaves the key alone keeps the token.

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, header};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::jwt::{self, Alg, SigningKey};
use super::reply::{back_off, field, json, retry_after, unexpected};
use super::{Call, CannotRun, Material, Reply, Verdict, read_file};
use crate::config::Endpoint;
use crate::secret::Secret;

/// How long a provider token is reused: Apple refuses one older than an
/// hour (`ExpiredProviderToken`); 50 minutes leaves room for clock skew.
pub const TOKEN_REUSE: Duration = Duration::from_secs(50 * 60);
/// The shortest time between two tokens of one key: APNs answers 429
/// `TooManyProviderTokenUpdates` to tokens renewed more often.
pub const TOKEN_MIN_RENEWAL: Duration = Duration::from_secs(20 * 60);
/// How many keys' tokens the cache keeps (the oldest goes first).
pub const TOKEN_CACHE_SIZE: usize = 64;
/// The device the check pushes to: 64 zeros, a token no device has.
const DUMMY_DEVICE: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The notification sent (it never reaches a device).
const PAYLOAD: &str = r#"{"aps":{"alert":"egress-sentinel credential check"}}"#;

/// A `.p8` key, ready to sign provider tokens.
pub(super) struct ApnsKey {
    /// The P-256 key.
    key: SigningKey,
    /// SHA-256 of (key, key id, team id): the token cache's key. A hash,
    /// so the cache never holds key material.
    cache_key: [u8; 32],
}

impl std::fmt::Debug for ApnsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApnsKey(<redacted>)")
    }
}

/// Reads `path`, a `.p8` (PKCS#8 PEM, EC P-256).
pub(super) fn load(path: &Path, key_id: &str, team_id: &str) -> Result<ApnsKey, CannotRun> {
    let pem = read_file(path)?;
    let der = match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(PrivateKeyDer::Pkcs8(k)) => k.secret_pkcs8_der().to_vec(),
        _ => return Err(not_p256(path)),
    };
    let key = SigningKey::es256_pkcs8(&der).ok_or_else(|| not_p256(path))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [&der[..], key_id.as_bytes(), team_id.as_bytes()] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut cache_key = [0u8; 32];
    cache_key.copy_from_slice(ctx.finish().as_ref());
    Ok(ApnsKey { key, cache_key })
}

fn not_p256(path: &Path) -> CannotRun {
    CannotRun(format!(
        "{}: not an ES256 (P-256) key: download the .p8 from Apple's developer account",
        path.display()
    ))
}

// === the provider token cache ===

/// A provider token kept for reuse.
struct Cached {
    /// [`ApnsKey::cache_key`].
    key: [u8; 32],
    /// The signed token.
    token: Secret<String>,
    /// Its `iat`.
    iat: SystemTime,
    /// APNs refused it (`InvalidProviderToken`, `ExpiredProviderToken`):
    /// renewed as soon as Apple's rule allows.
    refused: bool,
}

/// The process's provider tokens: they outlive a check and a reload.
static TOKENS: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

/// The provider token for `key` at `now`: the cached one while Apple's
/// rule says to keep it, else a fresh one (then cached).
pub(super) fn provider_token(
    key: &ApnsKey,
    key_id: &str,
    team_id: &str,
    now: SystemTime,
) -> Result<Secret<String>, CannotRun> {
    let mut tokens = TOKENS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = tokens.iter().find(|c| c.key == key.cache_key)
        && keep(c, now)
    {
        return Ok(c.token.clone());
    }
    let token = sign(key, key_id, team_id, now)?;
    tokens.retain(|c| c.key != key.cache_key);
    if tokens.len() >= TOKEN_CACHE_SIZE
        && let Some(oldest) = (0..tokens.len()).min_by_key(|&i| tokens[i].iat)
    {
        tokens.swap_remove(oldest);
    }
    tokens.push(Cached {
        key: key.cache_key,
        token: token.clone(),
        iat: now,
        refused: false,
    });
    Ok(token)
}

/// Whether `c` is still the token to send at `now`. A token younger than
/// 20 minutes is kept even when APNs refused it: renewing it would break
/// Apple's rule and earn a 429, and a new token of the same key and team
/// would be refused alike (a revoked key stays revoked), so the check
/// reports the refusal again until a renewal is allowed. A clock set back
/// past the token's `iat` keeps it, unless by more than the reuse time.
fn keep(c: &Cached, now: SystemTime) -> bool {
    match now.duration_since(c.iat) {
        Ok(age) => age < TOKEN_MIN_RENEWAL || (!c.refused && age < TOKEN_REUSE),
        Err(back) => back.duration() < TOKEN_REUSE,
    }
}

/// Marks `sent` refused (renewed as soon as the rule allows) or, when APNs
/// accepted it again, good for the rest of its 50 minutes.
fn mark(key: &ApnsKey, sent: &str, refused: bool) {
    let mut tokens = TOKENS.lock().unwrap_or_else(PoisonError::into_inner);
    for c in tokens.iter_mut() {
        if c.key == key.cache_key && c.token.expose() == sent {
            c.refused = refused;
        }
    }
}

/// A new provider token, `iat` = `now`.
fn sign(
    key: &ApnsKey,
    key_id: &str,
    team_id: &str,
    now: SystemTime,
) -> Result<Secret<String>, CannotRun> {
    let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let header = serde_json::json!({"alg": "ES256", "kid": key_id});
    let claims = serde_json::json!({"iss": team_id, "iat": iat});
    jwt::sign(
        Alg::Es256,
        &key.key,
        &header.to_string(),
        &claims.to_string(),
    )
    .map(Secret::new)
    .map_err(|e| CannotRun(format!("the APNs provider token: {e}; check key_file")))
}

// === the check ===

/// The push to the dummy device on `target`'s host.
pub(super) fn device_push(
    target: &Endpoint,
    key_id: &str,
    team_id: &str,
    topic: &str,
    material: &Material,
    now: SystemTime,
) -> Result<Call, CannotRun> {
    let Material::Apns(key) = material else {
        return Err(CannotRun(
            "apns-token: the loaded material is not a .p8 key; load the credential again".into(),
        ));
    };
    let token = provider_token(key, key_id, team_id, now)?;
    let mut authorization = HeaderValue::from_str(&format!("bearer {}", token.expose()))
        .map_err(|_| CannotRun("apns-token: the token makes no valid header".into()))?;
    authorization.set_sensitive(true);
    let topic = HeaderValue::from_str(topic)
        .map_err(|_| CannotRun("apns-token: the topic makes no valid header".into()))?;
    let name = HeaderName::from_static;
    Ok(Call {
        endpoint: Endpoint {
            path_and_query: format!("/3/device/{DUMMY_DEVICE}"),
            ..target.clone()
        },
        method: Method::POST,
        headers: vec![
            (header::AUTHORIZATION, authorization),
            (name("apns-topic"), topic),
            (name("apns-push-type"), HeaderValue::from_static("alert")),
            (name("apns-priority"), HeaderValue::from_static("5")),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body: Bytes::from_static(PAYLOAD.as_bytes()),
        what: "push to a dummy device",
    })
}

/// What APNs' answer proves; a refused token is marked for renewal.
pub(super) fn classify(material: &Material, call: &Call, reply: &Reply) -> Verdict {
    let body = json(reply);
    let reason = body.as_ref().and_then(|b| field(b, "reason")).unwrap_or("");
    let rejected = |what: &str| Verdict::Rejected {
        code: reason.to_string(),
        detail: format!("APNs {} {reason}: {what}", reply.status),
    };
    match (reply.status, reason) {
        (400, "BadDeviceToken") => {
            if let (Material::Apns(key), Some(sent)) = (material, sent_token(call)) {
                mark(key, sent, false);
            }
            Verdict::Proven(
                "key and team accepted (APNs 400 BadDeviceToken for the dummy device)".into(),
            )
        }
        (403, "InvalidProviderToken" | "ExpiredProviderToken") => {
            if let (Material::Apns(key), Some(sent)) = (material, sent_token(call)) {
                mark(key, sent, true);
            }
            rejected(if reason == "InvalidProviderToken" {
                "the provider token is not valid or its signature cannot be verified: check key_id, team_id and that the key is not revoked"
            } else {
                "the provider token is stale: check this machine's clock"
            })
        }
        (403, "MissingProviderToken") => rejected("APNs saw no provider token"),
        (400, "TopicDisallowed" | "BadTopic" | "DeviceTokenNotForTopic") => {
            rejected("the key may not push to this topic: check topic (the app's bundle id)")
        }
        (429, "TooManyProviderTokenUpdates") => {
            let after = retry_after(reply).map_or(TOKEN_MIN_RENEWAL, |a| a.max(TOKEN_MIN_RENEWAL));
            Verdict::BackOff {
                after,
                detail: "APNs 429 TooManyProviderTokenUpdates: the provider token is updated too often (more than once in 20 minutes)".into(),
            }
        }
        _ => back_off(reply).unwrap_or_else(|| unexpected("push to a dummy device", reply)),
    }
}

/// The token `call` carried.
fn sent_token(call: &Call) -> Option<&str> {
    call.headers
        .iter()
        .find(|(k, _)| *k == header::AUTHORIZATION)
        .and_then(|(_, v)| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApnsKey {
        let kp = rcgen::KeyPair::generate().expect("p256");
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("AuthKey.p8");
        std::fs::write(&p, kp.serialize_pem()).expect("write");
        load(&p, "ABC123DEFG", "DEF123GHIJ").expect("load")
    }

    #[test]
    fn a_token_is_reused_for_50_minutes_and_renewed_no_sooner_than_20() {
        let k = key();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |m: u64| t0 + Duration::from_secs(m * 60);
        let tok = |m| provider_token(&k, "ABC123DEFG", "DEF123GHIJ", at(m)).expect("token");
        let a = tok(0);
        assert_eq!(tok(49).expose(), a.expose());
        let b = tok(50);
        assert_ne!(b.expose(), a.expose());
        mark(&k, b.expose(), true);
        assert_eq!(tok(69).expose(), b.expose(), "20 minutes, even refused");
        let c = tok(70);
        assert_ne!(c.expose(), b.expose());
        assert_eq!(tok(60).expose(), c.expose(), "a clock set back keeps it");
    }

    #[test]
    fn the_cache_is_bounded() {
        let now = SystemTime::now();
        for _ in 0..TOKEN_CACHE_SIZE + 5 {
            provider_token(&key(), "ABC123DEFG", "DEF123GHIJ", now).expect("token");
        }
        let n = TOKENS.lock().unwrap_or_else(PoisonError::into_inner).len();
        assert!(n <= TOKEN_CACHE_SIZE, "{n}");
    }
}

#[cfg(test)]
mod answers {
    use super::*;
    use http::HeaderMap;

    fn reply(status: u16, reason: &str) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from(format!(r#"{{"reason":"{reason}"}}"#)),
        }
    }

    fn call() -> Call {
        Call {
            endpoint: Endpoint {
                tls: true,
                host: "api.push.apple.com".into(),
                port: 443,
                path_and_query: "/".into(),
            },
            method: Method::POST,
            headers: Vec::new(),
            body: Bytes::new(),
            what: "push to a dummy device",
        }
    }

    #[test]
    fn apples_reasons_are_read_as_documented() {
        let m = Material::Secret(Secret::new("x".into()));
        let v = |status, reason| classify(&m, &call(), &reply(status, reason));
        assert!(matches!(v(400, "BadDeviceToken"), Verdict::Proven(_)));
        for (status, reason) in [
            (403, "InvalidProviderToken"),
            (403, "ExpiredProviderToken"),
            (403, "MissingProviderToken"),
            (400, "TopicDisallowed"),
            (400, "BadTopic"),
            (400, "DeviceTokenNotForTopic"),
        ] {
            assert!(
                matches!(v(status, reason), Verdict::Rejected { code, .. } if code == reason),
                "{reason}"
            );
        }
        assert!(matches!(
            v(429, "TooManyProviderTokenUpdates"),
            Verdict::BackOff { after, .. } if after >= TOKEN_MIN_RENEWAL
        ));
        assert!(matches!(v(429, "TooManyRequests"), Verdict::Failed(_)));
        let mut busy = reply(503, "ServiceUnavailable");
        busy.headers
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        assert!(matches!(
            classify(&m, &call(), &busy),
            Verdict::BackOff { after, .. } if after == Duration::from_secs(60)
        ));
        assert!(matches!(v(410, "Unregistered"), Verdict::Failed(_)));
        assert!(matches!(v(500, "InternalServerError"), Verdict::Failed(_)));
    }
}
