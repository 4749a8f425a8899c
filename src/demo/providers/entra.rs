//! Entra ID's token endpoint, standing in: `POST /{tenant}/oauth2/v2.0/token`
//! with the client-credentials grant. A client secret is compared with the
//! registered one; a `client_assertion` is checked as Entra does (PS256, a
//! registered certificate's `x5t#S256`, the signature verified with that
//! certificate's public key, `aud` the URL served, the time window). Errors
//! are Microsoft's OAuth errors with their AADSTS codes and wording.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Answer, Asked, Log, listen, lock, random_token};
use crate::credential::provider::jwt;
use crate::demo::stand_ins::{DemoPki, Running, StandInError};
use crate::secret::Secret;

/// How the endpoint behaves beyond checking what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraMode {
    /// Checks and answers.
    Normal,
    /// Every registered client secret has expired (AADSTS7000222).
    SecretsExpired,
    /// Every request's scope is refused (400 `invalid_scope`, AADSTS70011).
    InvalidScope,
    /// 503 `temporarily_unavailable`, with `Retry-After` when given.
    Unavailable {
        /// Seconds for `Retry-After`.
        retry_after: Option<u32>,
    },
}

/// What a client secret turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretCheck {
    /// The registered secret: a token was issued.
    Good,
    /// The registered secret, expired.
    Expired,
    /// Not the registered secret.
    Wrong,
    /// No such application.
    UnknownClient,
}

/// What a client assertion turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionCheck {
    /// Signed by a registered certificate, claims in order: a token.
    Good,
    /// Its `x5t#S256` names no certificate of the application.
    UnknownCertificate,
    /// The signature does not verify with the certificate's key.
    BadSignature,
    /// `aud`, `iss`/`sub` or the time window is wrong.
    BadClaims,
    /// Not a PS256 JWT.
    Malformed,
}

/// What one request gave. Never holds a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraSaw {
    /// A client secret, checked.
    Secret(SecretCheck),
    /// A client assertion, checked.
    Assertion(AssertionCheck),
    /// Another tenant's path (AADSTS90002).
    UnknownTenant,
    /// Refused by [`EntraMode::InvalidScope`].
    InvalidScope,
    /// Refused by [`EntraMode::Unavailable`].
    Unavailable,
    /// Not a client-credentials token request.
    Malformed,
    /// Not the token endpoint at all (a probe's `GET /`): answered 404,
    /// neither counted nor kept.
    OtherPath,
}

struct State {
    tenant: String,
    /// The URL served: what an assertion's `aud` must be.
    url: String,
    mode: EntraMode,
    secrets: Vec<(String, Secret<String>)>,
    /// (client id, thumbprint, certificate DER).
    certs: Vec<(String, String, Vec<u8>)>,
    /// Secrets past their end date (registered, but refused as expired).
    expired: Vec<Secret<String>>,
    log: Log<EntraSaw>,
}

/// The stand-in token endpoint. Stops when dropped.
pub struct Entra {
    state: Arc<Mutex<State>>,
    running: Running,
}

impl Entra {
    /// Serves tenant `tenant` as `host` (a name in the demo PKI's
    /// certificate) on a loopback port.
    pub async fn start(pki: &DemoPki, host: &str, tenant: &str) -> Result<Self, StandInError> {
        let state = Arc::new(Mutex::new(State {
            tenant: tenant.to_string(),
            url: String::new(),
            mode: EntraMode::Normal,
            secrets: Vec::new(),
            certs: Vec::new(),
            expired: Vec::new(),
            log: Log::new(),
        }));
        let s = state.clone();
        let running = listen(pki, move |asked| answer(&s, &asked)).await?;
        lock(&state).url = format!(
            "https://{host}:{}/{tenant}/oauth2/v2.0/token",
            running.addr.port()
        );
        Ok(Self { state, running })
    }

    /// Where it listens (127.0.0.1).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.addr
    }

    /// The token URL, `https://{host}:{port}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        lock(&self.state).url.clone()
    }

    /// Registers application `client_id` with a client secret.
    pub fn add_secret(&self, client_id: &str, secret: &str) {
        lock(&self.state)
            .secrets
            .push((client_id.to_string(), Secret::new(secret.to_string())));
    }

    /// Registers application `client_id` with a client secret that has
    /// expired (Entra still knows it: `AADSTS7000222`, not a wrong one).
    pub fn add_expired_secret(&self, client_id: &str, secret: &str) {
        self.add_secret(client_id, secret);
        lock(&self.state)
            .expired
            .push(Secret::new(secret.to_string()));
    }

    /// Registers a certificate (DER) as a credential of `client_id`.
    pub fn add_certificate(&self, client_id: &str, cert_der: &[u8]) {
        lock(&self.state).certs.push((
            client_id.to_string(),
            jwt::x5t_s256(cert_der),
            cert_der.to_vec(),
        ));
    }

    /// Switches the mode.
    pub fn set_mode(&self, mode: EntraMode) {
        lock(&self.state).mode = mode;
    }

    /// Token requests answered so far (other paths are not counted).
    pub fn requests(&self) -> usize {
        lock(&self.state).log.requests
    }

    /// What the last requests (32 at most) gave, oldest first.
    pub fn seen(&self) -> Vec<EntraSaw> {
        lock(&self.state).log.seen.iter().copied().collect()
    }
}

fn answer(state: &Mutex<State>, asked: &Asked) -> Answer {
    let mut s = lock(state);
    let (saw, answer) = decide(&s, asked);
    if saw != EntraSaw::OtherPath {
        s.log.record(saw);
    }
    answer
}

/// The form's value for `key`, decoded.
pub(super) fn form_value(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decide(s: &State, asked: &Asked) -> (EntraSaw, Answer) {
    let ours = format!("/{}/oauth2/v2.0/token", s.tenant);
    if asked.method != http::Method::POST || !asked.path.ends_with("/oauth2/v2.0/token") {
        return (EntraSaw::OtherPath, Answer::json(404, json!({})));
    }
    if asked.path != ours {
        let tenant = asked.path.split('/').nth(1).unwrap_or("");
        let text = format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        );
        return (
            EntraSaw::UnknownTenant,
            error(400, "invalid_request", 90002, &text),
        );
    }
    let form = |k: &str| form_value(&asked.body, k);
    if form("grant_type").as_deref() != Some("client_credentials") {
        let text = "The request body must contain the following parameter: 'grant_type'.";
        return (
            EntraSaw::Malformed,
            error(400, "invalid_request", 900144, text),
        );
    }
    match s.mode {
        EntraMode::Unavailable { retry_after } => {
            return (EntraSaw::Unavailable, unavailable(retry_after));
        }
        EntraMode::InvalidScope => {
            let text = "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid.";
            return (
                EntraSaw::InvalidScope,
                error(400, "invalid_scope", 70011, text),
            );
        }
        EntraMode::Normal | EntraMode::SecretsExpired => {}
    }
    let client_id = form("client_id").unwrap_or_default();
    if let Some(secret) = form("client_secret") {
        let (check, answer) = check_secret(s, &client_id, &secret);
        return (EntraSaw::Secret(check), answer);
    }
    if let Some(assertion) = form("client_assertion") {
        let (check, answer) = check_assertion(s, &client_id, &assertion);
        return (EntraSaw::Assertion(check), answer);
    }
    let text = "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.";
    (
        EntraSaw::Malformed,
        error(401, "invalid_client", 7000218, text),
    )
}

fn check_secret(s: &State, client_id: &str, secret: &str) -> (SecretCheck, Answer) {
    let registered: Vec<&Secret<String>> = s
        .secrets
        .iter()
        .filter(|(id, _)| id == client_id)
        .map(|(_, v)| v)
        .collect();
    if registered.is_empty() && !s.certs.iter().any(|(id, _, _)| id == client_id) {
        return (SecretCheck::UnknownClient, unknown_client(s, client_id));
    }
    if !registered.iter().any(|v| v.expose() == secret) {
        let text = format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
        );
        return (
            SecretCheck::Wrong,
            error(401, "invalid_client", 7000215, &text),
        );
    }
    if s.mode == EntraMode::SecretsExpired || s.expired.iter().any(|e| e.expose() == secret) {
        let text = format!(
            "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
        );
        return (
            SecretCheck::Expired,
            error(401, "invalid_client", 7000222, &text),
        );
    }
    (SecretCheck::Good, token())
}

fn check_assertion(s: &State, client_id: &str, assertion: &str) -> (AssertionCheck, Answer) {
    let bad = |check, code, text: &str| (check, error(401, "invalid_client", code, text));
    let parts: Vec<&str> = assertion.split('.').collect();
    let [h, c, sig] = parts.as_slice() else {
        return bad(
            AssertionCheck::Malformed,
            50027,
            "JWT token is invalid or malformed.",
        );
    };
    let decode =
        |p: &str| jwt::b64_decode(p).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(header), Some(claims), Some(sig)) = (decode(h), decode(c), jwt::b64_decode(sig))
    else {
        return bad(
            AssertionCheck::Malformed,
            50027,
            "JWT token is invalid or malformed.",
        );
    };
    if header["alg"] != "PS256" {
        return bad(
            AssertionCheck::Malformed,
            5002738,
            "Invalid JWT token. 'PS256' is the expected signing algorithm.",
        );
    }
    let thumbprint = header["x5t#S256"].as_str().unwrap_or("");
    let Some((_, _, der)) = s
        .certs
        .iter()
        .find(|(id, t, _)| id == client_id && t == thumbprint)
    else {
        let text = format!(
            "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}']"
        );
        return bad(AssertionCheck::UnknownCertificate, 700027, &text);
    };
    if !verifies(der, format!("{h}.{c}").as_bytes(), &sig) {
        return bad(
            AssertionCheck::BadSignature,
            50012,
            "Client assertion contains an invalid signature.",
        );
    }
    if claims["aud"] != s.url.as_str() || claims["iss"] != client_id || claims["sub"] != client_id {
        return bad(
            AssertionCheck::BadClaims,
            50027,
            "Invalid JWT token. The token's audience, issuer or subject is not valid.",
        );
    }
    if !in_window(&claims) {
        return bad(
            AssertionCheck::BadClaims,
            700024,
            "Client assertion is not within its valid time range.",
        );
    }
    (AssertionCheck::Good, token())
}

/// Whether `sig` over `input` verifies (PS256) with `cert_der`'s key.
fn verifies(cert_der: &[u8], input: &[u8], sig: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return false;
    };
    let spki = cert.public_key().subject_public_key.data.as_ref();
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PSS_2048_8192_SHA256, spki)
        .verify(input, sig)
        .is_ok()
}

/// `nbf` (5 minutes' skew) ..= `exp`, now; a lifetime of a day at most.
fn in_window(claims: &Value) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match (claims["nbf"].as_i64(), claims["exp"].as_i64()) {
        (Some(nbf), Some(exp)) => nbf <= now + 300 && now < exp + 300 && exp - nbf <= 86_400,
        _ => false,
    }
}

fn token() -> Answer {
    Answer::json(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": random_token(48),
        }),
    )
}

fn unknown_client(s: &State, client_id: &str) -> Answer {
    let text = format!(
        "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
        s.tenant
    );
    error(400, "unauthorized_client", 700016, &text)
}

fn unavailable(retry_after: Option<u32>) -> Answer {
    let mut a = error(
        503,
        "temporarily_unavailable",
        90033,
        "A transient error has occurred. Please try again.",
    );
    if let Some(secs) = retry_after {
        a.headers.push(("retry-after", secs.to_string()));
    }
    a
}

/// Microsoft's OAuth error body: `AADSTS{code}: {text}`, then the trace
/// lines Entra appends.
fn error(status: u16, error: &str, code: u32, text: &str) -> Answer {
    let (trace, correlation) = (random_token(16), random_token(16));
    let timestamp = "2026-01-27 10:15:02Z";
    Answer::json(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {timestamp}"),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}
