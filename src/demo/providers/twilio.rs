//! Twilio's REST API, standing in: `GET /2010-04-01/Accounts/{sid}.json`
//! (the account with its auth token) and `…/Accounts/{sid}/Balance.json`
//! (the auth token, or an API key of that account), with Basic auth checked
//! against what was registered. A wrong credential gets Twilio's 401 with
//! code 20003.

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::{Answer, Asked, Log, listen, lock};
use crate::credential::provider::jwt;
use crate::demo::stand_ins::{DemoPki, Running, StandInError};
use crate::secret::Secret;

/// How the API behaves beyond checking credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwilioMode {
    /// Checks and answers.
    Normal,
    /// Every account is suspended: good credentials get 403, code 20403.
    Suspended,
    /// 503, with `Retry-After` when given.
    Unavailable {
        /// Seconds for `Retry-After`.
        retry_after: Option<u32>,
    },
}

/// What one request gave. Never holds a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwilioSaw {
    /// The account read with its auth token.
    AccountRead,
    /// The balance read (auth token or API key).
    BalanceRead,
    /// Good credentials, suspended account (403 20403).
    Suspended,
    /// Credentials missing or wrong (401 20003).
    WrongCredentials,
    /// Refused by [`TwilioMode::Unavailable`].
    Unavailable,
    /// No such resource (404 20404).
    NotFound,
    /// Not the accounts API at all (a probe's `GET /`): answered 404,
    /// neither counted nor kept.
    OtherPath,
}

struct State {
    mode: TwilioMode,
    /// (account SID, auth token).
    accounts: Vec<(String, Secret<String>)>,
    /// (account SID, key SID, key secret).
    keys: Vec<(String, String, Secret<String>)>,
    log: Log<TwilioSaw>,
}

/// The stand-in API. Stops when dropped.
pub struct Twilio {
    state: Arc<Mutex<State>>,
    running: Running,
}

impl Twilio {
    /// Serves on a loopback port, with the demo PKI's server identity.
    pub async fn start(pki: &DemoPki) -> Result<Self, StandInError> {
        let state = Arc::new(Mutex::new(State {
            mode: TwilioMode::Normal,
            accounts: Vec::new(),
            keys: Vec::new(),
            log: Log::new(),
        }));
        let s = state.clone();
        let running = listen(pki, move |asked| answer(&s, &asked)).await?;
        Ok(Self { state, running })
    }

    /// Where it listens (127.0.0.1).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.addr
    }

    /// Registers account `sid` with its auth token.
    pub fn add_account(&self, sid: &str, auth_token: &str) {
        lock(&self.state)
            .accounts
            .push((sid.to_string(), Secret::new(auth_token.to_string())));
    }

    /// Registers API key `key_sid` of account `account_sid`.
    pub fn add_api_key(&self, account_sid: &str, key_sid: &str, secret: &str) {
        lock(&self.state).keys.push((
            account_sid.to_string(),
            key_sid.to_string(),
            Secret::new(secret.to_string()),
        ));
    }

    /// Switches the mode.
    pub fn set_mode(&self, mode: TwilioMode) {
        lock(&self.state).mode = mode;
    }

    /// API requests answered so far (other paths are not counted).
    pub fn requests(&self) -> usize {
        lock(&self.state).log.requests
    }

    /// What the last requests (32 at most) gave, oldest first.
    pub fn seen(&self) -> Vec<TwilioSaw> {
        lock(&self.state).log.seen.iter().copied().collect()
    }
}

fn answer(state: &Mutex<State>, asked: &Asked) -> Answer {
    let mut s = lock(state);
    let (saw, answer) = decide(&s, asked);
    if saw != TwilioSaw::OtherPath {
        s.log.record(saw);
    }
    answer
}

/// `(user, password)` from a Basic `Authorization`.
fn basic(asked: &Asked) -> Option<(String, String)> {
    let value = asked
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let decoded = jwt::b64_decode(value.strip_prefix("Basic ")?)?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn decide(s: &State, asked: &Asked) -> (TwilioSaw, Answer) {
    let path = asked
        .path
        .strip_prefix("/2010-04-01/Accounts/")
        .unwrap_or("");
    let (sid, balance) = match (
        path.strip_suffix("/Balance.json"),
        path.strip_suffix(".json"),
    ) {
        (Some(sid), _) => (sid, true),
        (None, Some(sid)) if !sid.contains('/') => (sid, false),
        _ => return (TwilioSaw::OtherPath, not_found()),
    };
    if asked.method != http::Method::GET || sid.is_empty() {
        return (TwilioSaw::NotFound, not_found());
    }
    if let TwilioMode::Unavailable { retry_after } = s.mode {
        let mut a = twilio_error(503, 20500, "Service Unavailable");
        if let Some(secs) = retry_after {
            a.headers.push(("retry-after", secs.to_string()));
        }
        return (TwilioSaw::Unavailable, a);
    }
    let Some((user, password)) = basic(asked) else {
        return (
            TwilioSaw::WrongCredentials,
            twilio_error(401, 20003, "Authenticate"),
        );
    };
    let token_ok = user == sid
        && s.accounts
            .iter()
            .any(|(a, t)| a == sid && t.expose() == &password);
    let key_ok = balance
        && s.keys
            .iter()
            .any(|(a, k, t)| a == sid && *k == user && t.expose() == &password);
    if !(token_ok || key_ok) {
        return (
            TwilioSaw::WrongCredentials,
            twilio_error(401, 20003, "Authenticate"),
        );
    }
    if s.mode == TwilioMode::Suspended {
        return (
            TwilioSaw::Suspended,
            twilio_error(403, 20403, "Forbidden: the account is suspended"),
        );
    }
    if balance {
        let body = json!({"account_sid": sid, "currency": "USD", "balance": "1.00"});
        return (TwilioSaw::BalanceRead, Answer::json(200, body));
    }
    let body = json!({"sid": sid, "friendly_name": "demo", "status": "active", "type": "Full"});
    (TwilioSaw::AccountRead, Answer::json(200, body))
}

fn not_found() -> Answer {
    twilio_error(404, 20404, "The requested resource was not found")
}

/// Twilio's error body.
fn twilio_error(status: u16, code: u32, message: &str) -> Answer {
    Answer::json(
        status,
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }),
    )
}
