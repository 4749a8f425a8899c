//! APNs, standing in: `POST /3/device/{token}` with token authentication,
//! over HTTP/2 (ALPN `h2`) or HTTP/1.1. The provider token is checked as
//! Apple does: an ES256 JWT whose `kid` names a registered key, its
//! signature verified with that key's public half, `iss` the key's team,
//! `iat` less than an hour old; then the topic. No device exists, so a
//! good request gets 400 `BadDeviceToken`. Errors are Apple's `reason`s.

use std::sync::{Arc, Mutex};

use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::json;

use super::{Answer, Asked, Log, digest, jws_parts, listen_alpn, lock, random_token, unix_now};
use crate::demo::stand_ins::{DemoPki, Running, StandInError};

/// How old a provider token may be (Apple: one hour).
const MAX_TOKEN_AGE: i64 = 3600;
/// How many distinct tokens the stand-in remembers (as hashes).
const MAX_TOKENS: usize = 1024;

/// How APNs behaves beyond checking what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsMode {
    /// Checks and answers.
    Normal,
    /// Every key is revoked: any token gets 403 `InvalidProviderToken`.
    KeyRevoked,
    /// Every verified token gets 429 `TooManyProviderTokenUpdates`.
    TooManyUpdates,
    /// 503 `ServiceUnavailable`, with `Retry-After` when given.
    Unavailable {
        /// Seconds for `Retry-After`.
        retry_after: Option<u32>,
    },
}

/// What one request gave. Never holds a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsSaw {
    /// A valid token and topic: 400 `BadDeviceToken` (no such device).
    Accepted,
    /// No provider token (403 `MissingProviderToken`).
    MissingToken,
    /// Unknown key, bad signature or wrong team (403
    /// `InvalidProviderToken`).
    InvalidToken,
    /// A token over an hour old (403 `ExpiredProviderToken`).
    ExpiredToken,
    /// A topic the key may not push to (400 `TopicDisallowed`).
    TopicDisallowed,
    /// Refused by [`ApnsMode::TooManyUpdates`].
    TooManyUpdates,
    /// Refused by [`ApnsMode::Unavailable`].
    Unavailable,
    /// Another path or method (a probe's `GET /`): answered, neither
    /// counted nor kept.
    NotFound,
}

/// A key registered in the "developer account".
struct Key {
    key_id: String,
    team_id: String,
    /// The P-256 public key, uncompressed (65 bytes).
    public: Vec<u8>,
}

struct State {
    mode: ApnsMode,
    keys: Vec<Key>,
    topics: Vec<String>,
    /// SHA-256 of each distinct provider token seen.
    tokens: Vec<[u8; 32]>,
    /// Requests that came over HTTP/2.
    http2: usize,
    log: Log<ApnsSaw>,
}

/// The stand-in APNs. Stops when dropped.
pub struct Apns {
    state: Arc<Mutex<State>>,
    running: Running,
}

impl Apns {
    /// Serves on a loopback port, with the demo PKI's server identity,
    /// offering `h2` and `http/1.1`.
    pub async fn start(pki: &DemoPki) -> Result<Self, StandInError> {
        let state = Arc::new(Mutex::new(State {
            mode: ApnsMode::Normal,
            keys: Vec::new(),
            topics: Vec::new(),
            tokens: Vec::new(),
            http2: 0,
            log: Log::new(),
        }));
        let s = state.clone();
        let alpn: &[&[u8]] = &[b"h2", b"http/1.1"];
        let running = listen_alpn(pki, alpn, move |asked| answer(&s, &asked)).await?;
        Ok(Self { state, running })
    }

    /// Where it listens (127.0.0.1).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.addr
    }

    /// Registers signing key `key_id` of team `team_id`: its P-256 public
    /// key, uncompressed (`rcgen::KeyPair::public_key_raw`).
    pub fn add_key(&self, key_id: &str, team_id: &str, public_key: &[u8]) {
        lock(&self.state).keys.push(Key {
            key_id: key_id.to_string(),
            team_id: team_id.to_string(),
            public: public_key.to_vec(),
        });
    }

    /// Registers `topic` (an app's bundle id) as one the keys may push to.
    pub fn add_topic(&self, topic: &str) {
        lock(&self.state).topics.push(topic.to_string());
    }

    /// Switches the mode.
    pub fn set_mode(&self, mode: ApnsMode) {
        lock(&self.state).mode = mode;
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        lock(&self.state).log.requests
    }

    /// Requests that came over HTTP/2.
    pub fn http2_requests(&self) -> usize {
        lock(&self.state).http2
    }

    /// How many distinct provider tokens it was sent.
    pub fn distinct_tokens(&self) -> usize {
        lock(&self.state).tokens.len()
    }

    /// What the last requests (32 at most) gave, oldest first.
    pub fn seen(&self) -> Vec<ApnsSaw> {
        lock(&self.state).log.seen.iter().copied().collect()
    }
}

fn answer(state: &Mutex<State>, asked: &Asked) -> Answer {
    let mut s = lock(state);
    if asked.version == http::Version::HTTP_2 {
        s.http2 += 1;
    }
    if let Some(token) = bearer(asked) {
        let d = digest(token);
        if !s.tokens.contains(&d) && s.tokens.len() < MAX_TOKENS {
            s.tokens.push(d);
        }
    }
    let (saw, mut answer) = decide(&s, asked);
    answer.headers.push(("apns-id", random_token(16)));
    // A probe's `GET /` is not a push: neither counted nor kept.
    if saw != ApnsSaw::NotFound {
        s.log.record(saw);
    }
    answer
}

/// The provider token of a `bearer` `Authorization`.
fn bearer(asked: &Asked) -> Option<&str> {
    let value = asked
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn decide(s: &State, asked: &Asked) -> (ApnsSaw, Answer) {
    let device = asked.path.strip_prefix("/3/device/").unwrap_or("");
    if device.is_empty() || device.contains('/') {
        return (ApnsSaw::NotFound, reason(404, "BadPath"));
    }
    if asked.method != http::Method::POST {
        return (ApnsSaw::NotFound, reason(405, "MethodNotAllowed"));
    }
    if let ApnsMode::Unavailable { retry_after } = s.mode {
        let mut a = reason(503, "ServiceUnavailable");
        if let Some(secs) = retry_after {
            a.headers.push(("retry-after", secs.to_string()));
        }
        return (ApnsSaw::Unavailable, a);
    }
    let Some(token) = bearer(asked) else {
        return (ApnsSaw::MissingToken, reason(403, "MissingProviderToken"));
    };
    if let Some(refused) = check_token(s, token) {
        return refused;
    }
    if s.mode == ApnsMode::TooManyUpdates {
        return (
            ApnsSaw::TooManyUpdates,
            reason(429, "TooManyProviderTokenUpdates"),
        );
    }
    let topic = asked
        .headers
        .get("apns-topic")
        .and_then(|t| t.to_str().ok())
        .unwrap_or("");
    if topic.is_empty() {
        return (ApnsSaw::TopicDisallowed, reason(400, "MissingTopic"));
    }
    if !s.topics.iter().any(|t| t == topic) {
        return (ApnsSaw::TopicDisallowed, reason(400, "TopicDisallowed"));
    }
    (ApnsSaw::Accepted, reason(400, "BadDeviceToken"))
}

/// The refusal a provider token earns, if any.
fn check_token(s: &State, token: &str) -> Option<(ApnsSaw, Answer)> {
    let invalid = || Some((ApnsSaw::InvalidToken, reason(403, "InvalidProviderToken")));
    if s.mode == ApnsMode::KeyRevoked {
        return invalid();
    }
    let Some((header, claims, sig, input)) = jws_parts(token) else {
        return invalid();
    };
    let kid = header["kid"].as_str().unwrap_or("");
    let verified = header["alg"] == "ES256"
        && s.keys.iter().any(|k| {
            k.key_id == kid
                && claims["iss"] == k.team_id.as_str()
                && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &k.public)
                    .verify(input.as_bytes(), &sig)
                    .is_ok()
        });
    if !verified {
        return invalid();
    }
    match claims["iat"].as_i64() {
        Some(iat) if unix_now() - iat <= MAX_TOKEN_AGE => None,
        Some(_) => Some((ApnsSaw::ExpiredToken, reason(403, "ExpiredProviderToken"))),
        None => invalid(),
    }
}

/// APNs' error body: `{"reason": …}`.
fn reason(status: u16, reason: &str) -> Answer {
    Answer::json(status, json!({ "reason": reason }))
}
