//! Google's OAuth token endpoint and FCM's HTTP v1 send, standing in on
//! one server. `POST /token` takes the JWT-bearer grant and checks the
//! assertion as Google does (RS256, `iss` a registered service account,
//! the signature verified with its public key, `aud` the URL served,
//! `scope` FCM's, a lifetime of an hour at most); `POST
//! /v1/projects/{id}/messages:send` takes only an access token it issued,
//! for that account's project. No device exists, so a good send gets 400
//! `INVALID_ARGUMENT` about the registration token. Errors are Google's
//! JSON shapes and words.

use std::sync::{Arc, Mutex};

use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

use super::entra::form_value;
use super::{Answer, Asked, Log, jws_parts, listen, lock, random_token, unix_now};
use crate::demo::stand_ins::{DemoPki, Running, StandInError};
use crate::secret::Secret;

/// The scope a send needs.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// How many issued access tokens are remembered.
const MAX_ISSUED: usize = 64;

/// How the endpoints behave beyond checking what they are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FcmMode {
    /// Checks and answers.
    Normal,
    /// Every service-account key is revoked: 400 `invalid_grant`
    /// "Invalid JWT Signature." at the token endpoint.
    KeyRevoked,
    /// The FCM API is disabled in every project: 403 `PERMISSION_DENIED`
    /// with `SERVICE_DISABLED` at send.
    ApiDisabled,
    /// 503 at both, with `Retry-After` when given.
    Unavailable {
        /// Seconds for `Retry-After`.
        retry_after: Option<u32>,
    },
}

/// What one request gave. Never holds a key or a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FcmSaw {
    /// A verified assertion: an access token issued.
    TokenIssued,
    /// `iss` names no registered service account.
    UnknownAccount,
    /// The signature does not verify with the account's key.
    BadSignature,
    /// `aud`, `scope` or the time window is wrong.
    BadClaims,
    /// Refused by [`FcmMode::KeyRevoked`].
    KeyRevoked,
    /// Not a JWT-bearer grant with an RS256 assertion.
    Malformed,
    /// A send with a good token: 400 about the registration token.
    Validated,
    /// A send without a token it issued (401 `UNAUTHENTICATED`).
    BadAccessToken,
    /// A send to another project than the token's (403).
    WrongProject,
    /// Refused by [`FcmMode::ApiDisabled`].
    ApiDisabled,
    /// Refused by [`FcmMode::Unavailable`].
    Unavailable,
    /// Another path or method (a probe's `GET /`): answered, neither
    /// counted nor kept.
    NotFound,
}

/// A registered service account.
struct Account {
    email: String,
    /// RSAPublicKey DER (PKCS#1).
    public: Vec<u8>,
    project_id: String,
}

struct State {
    /// The token URL served: what an assertion's `aud` must be.
    url: String,
    mode: FcmMode,
    accounts: Vec<Account>,
    /// Access tokens issued, with their project.
    issued: Vec<(Secret<String>, String)>,
    /// Token exchanges answered.
    exchanges: usize,
    log: Log<FcmSaw>,
}

/// The stand-in token endpoint and FCM. Stops when dropped.
pub struct Fcm {
    state: Arc<Mutex<State>>,
    running: Running,
}

impl Fcm {
    /// Serves on a loopback port, with the demo PKI's server identity; its
    /// token URL names `token_host` (a name in the demo PKI's
    /// certificate).
    pub async fn start(pki: &DemoPki, token_host: &str) -> Result<Self, StandInError> {
        let state = Arc::new(Mutex::new(State {
            url: String::new(),
            mode: FcmMode::Normal,
            accounts: Vec::new(),
            issued: Vec::new(),
            exchanges: 0,
            log: Log::new(),
        }));
        let s = state.clone();
        let running = listen(pki, move |asked| answer(&s, &asked)).await?;
        lock(&state).url = format!("https://{token_host}:{}/token", running.addr.port());
        Ok(Self { state, running })
    }

    /// Where it listens (127.0.0.1).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.addr
    }

    /// The token URL, `https://{token_host}:{port}/token`.
    pub fn token_url(&self) -> String {
        lock(&self.state).url.clone()
    }

    /// Registers service account `email` of `project_id` with its RSA
    /// public key (RSAPublicKey DER; see [`rsa_public_key`]).
    pub fn add_service_account(&self, email: &str, public_key: &[u8], project_id: &str) {
        lock(&self.state).accounts.push(Account {
            email: email.to_string(),
            public: public_key.to_vec(),
            project_id: project_id.to_string(),
        });
    }

    /// Switches the mode.
    pub fn set_mode(&self, mode: FcmMode) {
        lock(&self.state).mode = mode;
    }

    /// Requests answered so far (both endpoints).
    pub fn requests(&self) -> usize {
        lock(&self.state).log.requests
    }

    /// Token exchanges answered so far.
    pub fn token_exchanges(&self) -> usize {
        lock(&self.state).exchanges
    }

    /// What the last requests (32 at most) gave, oldest first.
    pub fn seen(&self) -> Vec<FcmSaw> {
        lock(&self.state).log.seen.iter().copied().collect()
    }
}

/// The public half of an RSA private key in PEM (PKCS#8 or PKCS#1), as
/// [`Fcm::add_service_account`] takes it.
pub fn rsa_public_key(private_key_pem: &str) -> Option<Vec<u8>> {
    use ring::signature::KeyPair as _;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let pair = match PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes()).ok()? {
        PrivateKeyDer::Pkcs8(k) => ring::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => ring::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return None,
    };
    pair.ok().map(|p| p.public_key().as_ref().to_vec())
}

/// A service-account key file as Google issues it.
pub fn service_account_json(
    email: &str,
    private_key_pem: &str,
    token_uri: &str,
    project_id: &str,
) -> String {
    json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": random_token(20),
        "private_key": private_key_pem,
        "client_email": email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    })
    .to_string()
}

fn answer(state: &Mutex<State>, asked: &Asked) -> Answer {
    let mut s = lock(state);
    let (saw, answer) = if asked.path == "/token" && asked.method == http::Method::POST {
        s.exchanges += 1;
        let (saw, a, issued) = exchange(&s, asked);
        if let Some(t) = issued {
            if s.issued.len() == MAX_ISSUED {
                s.issued.remove(0);
            }
            s.issued.push(t);
        }
        (saw, a)
    } else {
        send(&s, asked)
    };
    // A probe's `GET /` is not a send: neither counted nor kept.
    if saw != FcmSaw::NotFound {
        s.log.record(saw);
    }
    answer
}

type Issued = Option<(Secret<String>, String)>;

/// The token endpoint.
fn exchange(s: &State, asked: &Asked) -> (FcmSaw, Answer, Issued) {
    let refuse = |saw, text: &str| (saw, oauth_error("invalid_grant", text), None);
    if let FcmMode::Unavailable { retry_after } = s.mode {
        return (FcmSaw::Unavailable, unavailable(retry_after), None);
    }
    let form = |k: &str| form_value(&asked.body, k);
    if form("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        let a = oauth_error("unsupported_grant_type", "Invalid grant_type: ");
        return (FcmSaw::Malformed, a, None);
    }
    let parts = form("assertion").and_then(|a| jws_parts(&a));
    let Some((_, claims, sig, input)) = parts.filter(|(h, ..)| h["alg"] == "RS256") else {
        return refuse(FcmSaw::Malformed, "Invalid JWT: invalid header or payload.");
    };
    if s.mode == FcmMode::KeyRevoked {
        return refuse(FcmSaw::KeyRevoked, "Invalid JWT Signature.");
    }
    let iss = claims["iss"].as_str().unwrap_or("");
    let Some(account) = s.accounts.iter().find(|a| a.email == iss) else {
        return refuse(FcmSaw::UnknownAccount, "Invalid grant: account not found");
    };
    let verified = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &account.public)
        .verify(input.as_bytes(), &sig)
        .is_ok();
    if !verified {
        return refuse(FcmSaw::BadSignature, "Invalid JWT Signature.");
    }
    if claims["aud"] != s.url.as_str() || claims["scope"] != SCOPE {
        return refuse(FcmSaw::BadClaims, "Invalid JWT: aud or scope is not valid.");
    }
    if !in_window(&claims) {
        return refuse(
            FcmSaw::BadClaims,
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let token = format!("ya29.{}", random_token(48));
    let body = json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"});
    let issued = (Secret::new(token), account.project_id.clone());
    (FcmSaw::TokenIssued, Answer::json(200, body), Some(issued))
}

/// `iat` ..= `exp` around now (5 minutes' skew), an hour at most.
fn in_window(claims: &Value) -> bool {
    let now = unix_now();
    match (claims["iat"].as_i64(), claims["exp"].as_i64()) {
        (Some(iat), Some(exp)) => iat <= now + 300 && now < exp + 300 && exp - iat <= 3600,
        _ => false,
    }
}

/// FCM's send.
fn send(s: &State, asked: &Asked) -> (FcmSaw, Answer) {
    let project = asked
        .path
        .strip_prefix("/v1/projects/")
        .and_then(|p| p.strip_suffix("/messages:send"))
        .filter(|p| !p.is_empty() && !p.contains('/'));
    let (Some(project), true) = (project, asked.method == http::Method::POST) else {
        let text = "The requested URL was not found on this server.";
        return (
            FcmSaw::NotFound,
            google_error(404, "NOT_FOUND", text, json!([])),
        );
    };
    if let FcmMode::Unavailable { retry_after } = s.mode {
        return (FcmSaw::Unavailable, unavailable(retry_after));
    }
    let token = asked
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some((_, owner)) = token.and_then(|t| s.issued.iter().find(|(i, _)| i.expose() == t))
    else {
        let text = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
        let a = google_error(401, "UNAUTHENTICATED", text, json!([]));
        return (FcmSaw::BadAccessToken, a);
    };
    if owner != project {
        let text = format!(
            "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."
        );
        let details = json!([error_info(
            "IAM_PERMISSION_DENIED",
            "cloudresourcemanager.googleapis.com"
        )]);
        let a = google_error(403, "PERMISSION_DENIED", &text, details);
        return (FcmSaw::WrongProject, a);
    }
    if s.mode == FcmMode::ApiDisabled {
        let text = format!(
            "Firebase Cloud Messaging API has not been used in project {project} before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/fcm.googleapis.com/overview?project={project} then retry."
        );
        let details = json!([error_info("SERVICE_DISABLED", "googleapis.com")]);
        let a = google_error(403, "PERMISSION_DENIED", &text, details);
        return (FcmSaw::ApiDisabled, a);
    }
    let text = "The registration token is not a valid FCM registration token";
    let details = json!([
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": "message.token", "description": text}]},
    ]);
    let a = google_error(400, "INVALID_ARGUMENT", text, details);
    (FcmSaw::Validated, a)
}

fn error_info(reason: &str, domain: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain})
}

/// Google's API error body.
fn google_error(status: u16, word: &str, message: &str, details: Value) -> Answer {
    Answer::json(
        status,
        json!({"error": {"code": status, "message": message, "status": word, "details": details}}),
    )
}

/// Google's OAuth error body.
fn oauth_error(error: &str, description: &str) -> Answer {
    Answer::json(
        400,
        json!({"error": error, "error_description": description}),
    )
}

fn unavailable(retry_after: Option<u32>) -> Answer {
    let mut a = google_error(
        503,
        "UNAVAILABLE",
        "The service is currently unavailable.",
        json!([]),
    );
    if let Some(secs) = retry_after {
        a.headers.push(("retry-after", secs.to_string()));
    }
    a
}
