//! Entra ID (Azure AD): a client-credentials token request with a client
//! secret, or with a certificate's `client_assertion` (PS256, `x5t#S256`,
//! `aud` the token URL, a fresh `jti`: Microsoft's documented format), and
//! how the token endpoint's answer is read. The OAuth `error` field
//! decides, never the AADSTS number; the access token is never kept.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, header};

use super::cert::CertCredential;
use super::jwt::{self, Alg};
use super::reply::{back_off, field, json, sanitise, unexpected};
use super::{Call, CannotRun, Material, Reply, Verdict};
use crate::config::Endpoint;

/// The assertion's lifetime, and how far back its `nbf` reaches (clock
/// skew).
const ASSERTION_LIFETIME: i64 = 600;
const ASSERTION_SKEW: i64 = 60;
/// Entra's error codes for a tenant that does not exist.
const UNKNOWN_TENANT: [u64; 2] = [90002, 900023];

/// The token request, to `url`.
pub(super) fn token_request(
    url: &Endpoint,
    client_id: &str,
    scope: &str,
    material: &Material,
    now: SystemTime,
) -> Result<Call, CannotRun> {
    let mut fields = vec![
        ("client_id", client_id.to_string()),
        ("scope", scope.to_string()),
        ("grant_type", "client_credentials".to_string()),
    ];
    match material {
        Material::Secret(s) => fields.push(("client_secret", s.expose().clone())),
        Material::Certificate(cert) => {
            fields.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ));
            fields.push(("client_assertion", assertion(url, client_id, cert, now)?));
        }
        Material::Apns(_) | Material::Fcm(_) => {
            return Err(CannotRun(
                "azure-ad: the loaded material is not a secret or certificate; load the credential again".into(),
            ));
        }
    }
    Ok(Call {
        endpoint: url.clone(),
        method: Method::POST,
        headers: vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            ),
            (header::ACCEPT, HeaderValue::from_static("application/json")),
        ],
        body: Bytes::from(form(&fields)),
        what: "token request",
    })
}

/// The signed `client_assertion` for a certificate credential.
fn assertion(
    url: &Endpoint,
    client_id: &str,
    cert: &CertCredential,
    now: SystemTime,
) -> Result<String, CannotRun> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let header = serde_json::json!({
        "alg": "PS256",
        "typ": "JWT",
        "x5t#S256": cert.x5t_s256,
    });
    let claims = serde_json::json!({
        "aud": audience(url),
        "iss": client_id,
        "sub": client_id,
        "jti": jti()?,
        "nbf": now - ASSERTION_SKEW,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    });
    jwt::sign(
        Alg::Ps256,
        &cert.key,
        &header.to_string(),
        &claims.to_string(),
    )
    .map_err(|e| CannotRun(format!("the client assertion: {e}; check client_key")))
}

/// The token URL as Microsoft documents it, the assertion's `aud`: the
/// default port left out (Entra compares the audience as a string).
fn audience(url: &Endpoint) -> String {
    url.canonical_url()
}

/// A fresh random id, UUID-shaped hex.
fn jti() -> Result<String, CannotRun> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CannotRun("no randomness for the assertion's jti".into()))?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// `application/x-www-form-urlencoded`.
pub(super) fn form(fields: &[(&str, String)]) -> String {
    let pairs: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect();
    pairs.join("&")
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the token endpoint's answer proves.
pub(super) fn classify(reply: &Reply) -> Verdict {
    let body = json(reply);
    if reply.status == 200 {
        return match body.as_ref().and_then(|b| field(b, "access_token")) {
            Some(t) if !t.is_empty() => Verdict::Proven("access token issued (HTTP 200)".into()),
            _ => Verdict::Failed("token request: HTTP 200 without an access_token".into()),
        };
    }
    if let Some(v) = back_off(reply) {
        return v;
    }
    let Some(body) = body else {
        return unexpected("token request", reply);
    };
    let Some(error) = field(&body, "error") else {
        return unexpected("token request", reply);
    };
    let codes: Vec<u64> = body
        .get("error_codes")
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default();
    let detail = format!("{}: {}", sanitise(error), description(&body));
    match error {
        "invalid_client" | "unauthorized_client" => Verdict::Rejected {
            code: code_of(&body, &codes, error),
            detail,
        },
        "invalid_scope" | "invalid_tenant" => Verdict::Misconfigured(detail),
        "invalid_request" if codes.iter().any(|c| UNKNOWN_TENANT.contains(c)) => {
            Verdict::Misconfigured(detail)
        }
        "temporarily_unavailable" => Verdict::Failed(format!("HTTP {}: {detail}", reply.status)),
        _ => Verdict::Failed(format!("token request: HTTP {}: {detail}", reply.status)),
    }
}

/// The first line of `error_description`, its Trace ID, Correlation ID
/// and Timestamp tails cut, sanitised.
fn description(body: &serde_json::Value) -> String {
    let text = field(body, "error_description").unwrap_or("");
    let mut line = text.lines().next().unwrap_or("");
    for tail in ["Trace ID:", "Correlation ID:", "Timestamp:"] {
        if let Some(at) = line.find(tail) {
            line = &line[..at];
        }
    }
    sanitise(line)
}

/// `AADSTS` and the first error code, else the description's `AADSTSnnnn`
/// prefix, else the OAuth error.
fn code_of(body: &serde_json::Value, codes: &[u64], error: &str) -> String {
    if let Some(c) = codes.first() {
        return format!("AADSTS{c}");
    }
    let desc = field(body, "error_description").unwrap_or("");
    if let Some(rest) = desc.strip_prefix("AADSTS") {
        let digits: String = rest
            .chars()
            .take_while(char::is_ascii_digit)
            .take(12)
            .collect();
        if !digits.is_empty() {
            return format!("AADSTS{digits}");
        }
    }
    sanitise(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_percent_encoded() {
        let f = form(&[
            ("scope", "https://graph.microsoft.com/.default".into()),
            ("client_secret", "a b+c&d=é~".into()),
        ]);
        assert_eq!(
            f,
            "scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&client_secret=a%20b%2Bc%26d%3D%C3%A9~"
        );
    }

    #[test]
    fn the_audience_is_the_token_url_without_a_default_port() {
        let mut ep = Endpoint {
            tls: true,
            host: "login.microsoftonline.com".into(),
            port: 443,
            path_and_query: "/contoso/oauth2/v2.0/token".into(),
        };
        assert_eq!(
            audience(&ep),
            "https://login.microsoftonline.com/contoso/oauth2/v2.0/token"
        );
        ep.port = 8443;
        assert_eq!(audience(&ep), ep.url());
        ep.host = "::1".into();
        ep.port = 443;
        assert_eq!(audience(&ep), "https://[::1]/contoso/oauth2/v2.0/token");
    }

    #[test]
    fn jti_is_fresh_and_uuid_shaped() {
        let (a, b) = (jti().expect("jti"), jti().expect("jti"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }
}
