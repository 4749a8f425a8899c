//! FCM HTTP v1 with a service account: an RS256 assertion traded for an
//! OAuth access token at the token URI (the JWT-bearer grant), then a
//! `validate_only` send of a dummy registration token to the target's
//! host, and how both answers are read. A send refused for the dummy token
//! proves the account; the access token lives in the one request that
//! carries it.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, header};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use super::azure::form;
use super::jwt::{self, Alg, SigningKey};
use super::reply::{back_off, field, json, sanitise, unexpected};
use super::{Call, CannotRun, Material, Reply, Verdict, read_file};
use crate::config::Endpoint;

/// The scope FCM's send needs.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The assertion's lifetime (Google's maximum).
const ASSERTION_LIFETIME: u64 = 3600;
/// The registration token the check sends to: no device has it.
const DUMMY_TOKEN: &str = "egress-sentinel-dummy-registration-token";
/// What FCM's answer to the dummy registration token proves.
const PROVEN: &str =
    "service account accepted (FCM validate_only: the dummy registration token refused)";

/// A service account read from its JSON file.
pub(super) struct ServiceAccount {
    /// `client_email`: the assertion's `iss`.
    client_email: String,
    /// `private_key_id`, when present: the assertion's `kid`.
    key_id: Option<String>,
    /// `private_key` (RS256).
    key: SigningKey,
    /// `token_uri`, as written.
    token_uri: String,
    /// `project_id`.
    project_id: String,
    /// The file, for messages.
    file: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

/// Reads the service account's JSON file at `path`.
pub(super) fn load(path: &Path) -> Result<ServiceAccount, CannotRun> {
    let file = path.display().to_string();
    let bytes = read_file(path)?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|_| {
        CannotRun(format!(
            "{file} is not JSON: download the service account's key (JSON) from the Google Cloud console"
        ))
    })?;
    let get = |k: &str| {
        field(&doc, k)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                CannotRun(format!(
                    "{file} has no `{k}`: it is not a service account key; download a new key (JSON) for the service account"
                ))
            })
    };
    let (client_email, private_key) = (get("client_email")?, get("private_key")?);
    let (token_uri, project_id) = (get("token_uri")?, get("project_id")?);
    let key = match PrivateKeyDer::from_pem_slice(private_key.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(k)) => SigningKey::rsa_pkcs8(k.secret_pkcs8_der()),
        Ok(PrivateKeyDer::Pkcs1(k)) => SigningKey::rsa_pkcs1(k.secret_pkcs1_der()),
        _ => None,
    }
    .ok_or_else(|| {
        CannotRun(format!(
            "{file}: `private_key` is not an RSA private key in PEM; download a new key (JSON) for the service account"
        ))
    })?;
    if !project_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
    {
        return Err(CannotRun(format!(
            "{file}: `project_id` is not a Google Cloud project id"
        )));
    }
    Ok(ServiceAccount {
        client_email: client_email.to_string(),
        key_id: field(&doc, "private_key_id").map(str::to_string),
        key,
        token_uri: token_uri.to_string(),
        project_id: project_id.to_string(),
        file,
    })
}

/// The token exchange: `token_url` when the config gives one, else the
/// file's `token_uri`.
pub(super) fn token_request(
    token_url: Option<&Endpoint>,
    material: &Material,
    now: SystemTime,
) -> Result<Call, CannotRun> {
    let sa = account(material)?;
    let url = match token_url {
        Some(u) => u.clone(),
        None => token_uri(sa)?,
    };
    let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &sa.key_id {
        header["kid"] = Value::from(kid.as_str());
    }
    let claims = serde_json::json!({
        "iss": sa.client_email,
        "scope": SCOPE,
        "aud": url.canonical_url(),
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME,
    });
    let assertion = jwt::sign(
        Alg::Rs256,
        &sa.key,
        &header.to_string(),
        &claims.to_string(),
    )
    .map_err(|e| CannotRun(format!("the assertion: {e}; check {}", sa.file)))?;
    let body = form(&[
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string(),
        ),
        ("assertion", assertion),
    ]);
    Ok(Call {
        endpoint: url,
        method: Method::POST,
        headers: vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            ),
            (header::ACCEPT, HeaderValue::from_static("application/json")),
        ],
        body: Bytes::from(body),
        what: "token exchange",
    })
}

fn account(material: &Material) -> Result<&ServiceAccount, CannotRun> {
    match material {
        Material::Fcm(sa) => Ok(sa),
        _ => Err(CannotRun(
            "fcm: the loaded material is not a service account; load the credential again".into(),
        )),
    }
}

/// The file's `token_uri` as an endpoint (https only).
fn token_uri(sa: &ServiceAccount) -> Result<Endpoint, CannotRun> {
    let bad = |why: &str| {
        CannotRun(format!(
            "{}: `token_uri` {why}; set `token_url` or download a new key",
            sa.file
        ))
    };
    let uri: http::Uri = sa.token_uri.parse().map_err(|_| bad("is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(
            "must be https:// (the assertion would cross the network in clear)",
        ));
    }
    let auth = uri.authority().ok_or_else(|| bad("has no host"))?;
    if auth.as_str().contains('@') {
        return Err(bad("holds credentials"));
    }
    let host = crate::destination::parse_host(auth.host()).map_err(|_| bad("has no valid host"))?;
    Ok(Endpoint {
        tls: true,
        host: host.to_string(),
        port: auth.port_u16().unwrap_or(443),
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
    })
}

/// The token endpoint's answer: the send it allows, or a verdict.
pub(super) fn token_answer(
    material: &Material,
    target: &Endpoint,
    reply: &Reply,
) -> Result<Call, Verdict> {
    let body = json(reply);
    if reply.status == 200 {
        let token = body.as_ref().and_then(|b| field(b, "access_token"));
        return match token {
            Some(t) if !t.is_empty() => send(material, target, t),
            _ => Err(Verdict::Failed(
                "token exchange: HTTP 200 without an access_token".into(),
            )),
        };
    }
    if let Some(v) = back_off(reply) {
        return Err(v);
    }
    let Some(error) = body.as_ref().and_then(|b| field(b, "error")) else {
        return Err(unexpected("token exchange", reply));
    };
    let description = body
        .as_ref()
        .and_then(|b| field(b, "error_description"))
        .map(sanitise)
        .unwrap_or_default();
    let detail = format!("token exchange: {}: {description}", sanitise(error));
    Err(match error {
        "invalid_grant" | "invalid_client" | "unauthorized_client" => Verdict::Rejected {
            code: sanitise(error),
            detail,
        },
        "invalid_scope" | "invalid_request" | "unsupported_grant_type" => {
            Verdict::Misconfigured(detail)
        }
        _ => Verdict::Failed(format!("HTTP {}: {detail}", reply.status)),
    })
}

/// The `validate_only` send with `access_token`, on `target`'s host.
fn send(material: &Material, target: &Endpoint, access_token: &str) -> Result<Call, Verdict> {
    let sa = account(material).map_err(|CannotRun(why)| Verdict::Failed(why))?;
    let mut authorization = HeaderValue::from_str(&format!("Bearer {access_token}"))
        .map_err(|_| Verdict::Failed("token exchange: the access token is not a header".into()))?;
    authorization.set_sensitive(true);
    let body = serde_json::json!({
        "validate_only": true,
        "message": {"token": DUMMY_TOKEN, "notification": {"title": "check"}},
    });
    Ok(Call {
        endpoint: Endpoint {
            path_and_query: format!("/v1/projects/{}/messages:send", sa.project_id),
            ..target.clone()
        },
        method: Method::POST,
        headers: vec![
            (header::AUTHORIZATION, authorization),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body: Bytes::from(body.to_string()),
        what: "validate-only send",
    })
}

/// What FCM's answer to the send proves.
pub(super) fn send_answer(reply: &Reply) -> Verdict {
    let body = json(reply);
    let error = body.as_ref().and_then(|b| b.get("error"));
    let status = error.and_then(|e| field(e, "status")).unwrap_or("");
    let message = error.and_then(|e| field(e, "message")).unwrap_or("");
    let about_token = message.contains("registration token")
        || details(error).any(|d| {
            d.get("fieldViolations")
                .and_then(Value::as_array)
                .is_some_and(|v| v.iter().any(|f| field(f, "field") == Some("message.token")))
        });
    let fcm_code = details(error).find_map(|d| field(d, "errorCode"));
    match (reply.status, status) {
        (400, "INVALID_ARGUMENT") if about_token => Verdict::Proven(PROVEN.into()),
        (404, "NOT_FOUND") if about_token || fcm_code == Some("UNREGISTERED") => {
            Verdict::Proven(PROVEN.into())
        }
        (401, "UNAUTHENTICATED") | (403, "PERMISSION_DENIED") => {
            let reason = details(error).find_map(|d| field(d, "reason"));
            let why = reason.map_or_else(String::new, |r| format!(" ({})", sanitise(r)));
            Verdict::Rejected {
                code: status.to_string(),
                detail: format!("FCM {} {status}{why}: {}", reply.status, sanitise(message)),
            }
        }
        _ => back_off(reply).unwrap_or_else(|| unexpected("validate-only send", reply)),
    }
}

/// The `details` of a Google error.
fn details(error: Option<&Value>) -> impl Iterator<Item = &Value> {
    error
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn google(status: u16, word: &str, message: &str, details: &str) -> Reply {
        reply(
            status,
            &format!(
                r#"{{"error":{{"code":{status},"message":"{message}","status":"{word}","details":{details}}}}}"#
            ),
        )
    }

    #[test]
    fn the_dummy_registration_token_refused_proves_the_account() {
        let invalid = google(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            r#"[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"}]"#,
        );
        assert_eq!(send_answer(&invalid), Verdict::Proven(PROVEN.into()));
        let unregistered = google(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
            r#"[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]"#,
        );
        assert_eq!(send_answer(&unregistered), Verdict::Proven(PROVEN.into()));
        // INVALID_ARGUMENT about something else proves nothing.
        let other = google(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
            "[]",
        );
        assert!(matches!(send_answer(&other), Verdict::Failed(_)));
        let missing = google(404, "NOT_FOUND", "Requested entity was not found.", "[]");
        assert!(matches!(send_answer(&missing), Verdict::Failed(_)));
    }

    #[test]
    fn refusals_at_send_are_rejections_with_googles_status_word() {
        let disabled = google(
            403,
            "PERMISSION_DENIED",
            "Firebase Cloud Messaging API has not been used in project 1 before or it is disabled.",
            r#"[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED"}]"#,
        );
        let Verdict::Rejected { code, detail } = send_answer(&disabled) else {
            panic!("not a rejection")
        };
        assert_eq!(code, "PERMISSION_DENIED");
        assert!(detail.starts_with("FCM 403 PERMISSION_DENIED (SERVICE_DISABLED): Firebase"));
        let unauthenticated = google(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            "[]",
        );
        assert!(
            matches!(send_answer(&unauthenticated), Verdict::Rejected { code, .. } if code == "UNAUTHENTICATED")
        );
        assert!(
            matches!(send_answer(&reply(500, "oops")), Verdict::Failed(d) if d.contains("HTTP 500"))
        );
    }

    #[test]
    fn token_endpoint_errors_are_told_apart() {
        let m = Material::Secret(crate::secret::Secret::new("x".into()));
        let target = Endpoint {
            tls: true,
            host: "fcm.googleapis.com".into(),
            port: 443,
            path_and_query: "/".into(),
        };
        let grant = reply(
            400,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        );
        assert_eq!(
            token_answer(&m, &target, &grant).err(),
            Some(Verdict::Rejected {
                code: "invalid_grant".into(),
                detail: "token exchange: invalid_grant: Invalid JWT Signature.".into()
            })
        );
        let client = reply(
            401,
            r#"{"error":"unauthorized_client","error_description":"x"}"#,
        );
        assert!(
            matches!(token_answer(&m, &target, &client), Err(Verdict::Rejected { code, .. }) if code == "unauthorized_client")
        );
        let scope = reply(400, r#"{"error":"invalid_scope","error_description":"x"}"#);
        assert!(matches!(
            token_answer(&m, &target, &scope),
            Err(Verdict::Misconfigured(_))
        ));
        let empty = reply(200, r#"{"access_token":""}"#);
        assert!(matches!(
            token_answer(&m, &target, &empty),
            Err(Verdict::Failed(_))
        ));
        let mut busy = reply(429, "{}");
        busy.headers
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        assert!(matches!(
            token_answer(&m, &target, &busy),
            Err(Verdict::BackOff { .. })
        ));
    }

    fn service_account(dir: &Path, token_uri: &str) -> Material {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl");
        let pem = String::from_utf8(out.stdout).expect("pem");
        let doc = serde_json::json!({
            "client_email": "a@p.iam.gserviceaccount.com",
            "private_key": pem,
            "token_uri": token_uri,
            "project_id": "p-1",
        });
        let file = dir.join("sa.json");
        std::fs::write(&file, doc.to_string()).expect("write");
        Material::Fcm(Box::new(load(&file).expect("load")))
    }

    #[test]
    fn the_token_buys_a_send_on_the_targets_host_and_the_token_uri_must_be_https() {
        let dir = tempfile::tempdir().expect("dir");
        let m = service_account(dir.path(), "https://oauth2.test/token");
        let call = token_request(None, &m, SystemTime::now()).expect("call");
        assert_eq!(call.endpoint.url(), "https://oauth2.test:443/token");
        let body = String::from_utf8(call.body.to_vec()).expect("form");
        assert!(body.starts_with(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
        ));
        let target = Endpoint {
            tls: true,
            host: "fcm.test".into(),
            port: 8443,
            path_and_query: "/".into(),
        };
        let ok = reply(200, r#"{"access_token":"ya29.canary","expires_in":3599}"#);
        let send = token_answer(&m, &target, &ok).expect("send");
        assert_eq!(
            send.endpoint.url(),
            "https://fcm.test:8443/v1/projects/p-1/messages:send"
        );
        let (_, auth) = &send.headers[0];
        assert!(auth.is_sensitive());
        assert!(!format!("{send:?}").contains("canary"));
        let plain = service_account(dir.path(), "http://oauth2.test/token");
        let Err(CannotRun(why)) = token_request(None, &plain, SystemTime::now()) else {
            panic!("an http token_uri was used")
        };
        assert!(why.contains("sa.json") && why.contains("https://"), "{why}");
    }
}
