//! What each provider's check sends and how its answers are read: pure
//! code, no network. `load` reads the credential's files (blocking: run it
//! off the async workers), `first` builds the first request of a check,
//! `next` reads an answer and says whether the check is done (a verdict) or
//! goes on with another request (a token traded for a call, in part 2).
//!
//! Nothing here logs, and no value built here shows a secret in `Debug`
//! or in a verdict's text.
//!
//! # Layout
//! - `azure`: Entra ID's token request (a secret or a certificate's
//!   assertion) and its answers.
//! - `twilio`: Twilio's account read with Basic auth and its answers.
//! - [`apns`]: APNs provider tokens (ES256, reused by Apple's rule in a
//!   process-wide cache), the push to a dummy device and APNs' reasons.
//! - `fcm`: a service account's token exchange (RS256 assertion), the
//!   `validate_only` send and Google's errors.
//! - `cert`: an Entra certificate credential's two PEM files.
//! - [`jwt`]: base64url and JWT signing (PS256, RS256, ES256).
//! - `reply`: reading answers safely (JSON, `Retry-After`, sanitised
//!   text, our secrets scrubbed).

pub mod apns;
mod azure;
mod cert;
mod fcm;
pub mod jwt;
mod reply;
#[cfg(test)]
mod tests;
mod twilio;

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::{AzureSecret, Credential, CredentialKind, Endpoint, TwilioAuth};
use crate::secret::Secret;

/// Why a check cannot run: a file that cannot be read or parsed, a key of
/// the wrong type. The text names the file and what to do, never its
/// content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannotRun(pub String);

/// What the credential's files gave, secrets wrapped. Dropped after the
/// check.
pub struct Loaded {
    material: Material,
}

/// The per-provider material a check needs.
enum Material {
    /// A secret string: an Entra client secret, a Twilio auth token or API
    /// key secret.
    Secret(Secret<String>),
    /// An Entra certificate credential.
    Certificate(Box<cert::CertCredential>),
    /// An APNs `.p8` key.
    Apns(Box<apns::ApnsKey>),
    /// An FCM service account.
    Fcm(Box<fcm::ServiceAccount>),
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Loaded(<redacted>)")
    }
}

impl Loaded {
    fn new(material: Material) -> Self {
        Self { material }
    }

    /// The end of the credential's validity, where the files say (a
    /// certificate credential's `notAfter`, Unix seconds).
    pub fn not_after(&self) -> Option<i64> {
        match &self.material {
            Material::Certificate(c) => Some(c.not_after),
            _ => None,
        }
    }

    /// The secret string, where the material is one.
    fn secret(&self) -> Option<&str> {
        match &self.material {
            Material::Secret(s) => Some(s.expose()),
            _ => None,
        }
    }
}

/// One HTTP request of a check. `Debug` shows where it goes, never its
/// headers' values or its body.
pub struct Call {
    /// Where it goes (always https).
    pub endpoint: Endpoint,
    /// The method.
    pub method: Method,
    /// Its headers (`Authorization` marked sensitive).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its body (a client secret or a signed assertion, for Entra).
    pub body: Bytes,
    /// What it is, for details: "token request", "account read".
    pub what: &'static str,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("url", &self.endpoint.url())
            .field("method", &self.method)
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

/// A provider's answer to a [`Call`].
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, bounded.
    pub body: Bytes,
}

/// What an answer proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The provider accepted the credential (what it answered, e.g.
    /// "access token issued").
    Proven(String),
    /// The provider refused the credential: `code` is its own (e.g.
    /// `AADSTS7000222`, `20003`), `detail` what it said, sanitised.
    Rejected {
        /// The provider's code.
        code: String,
        /// What the provider said.
        detail: String,
    },
    /// The provider says the check itself is set up wrong (an unknown
    /// tenant, an invalid scope): fix the config, not the credential.
    Misconfigured(String),
    /// The provider failed to answer usefully (5xx, unexpected answers).
    Failed(String),
    /// The provider asks us to slow down (429, or 503 with `Retry-After`):
    /// the next check waits at least `after`.
    BackOff {
        /// How long to wait.
        after: Duration,
        /// What it said.
        detail: String,
    },
}

/// After an answer: the check's verdict, or its next request.
#[derive(Debug)]
pub enum Step {
    /// The check is over.
    Done(Verdict),
    /// The check goes on with this request.
    Next(Call),
}

/// Reads the credential's files. Blocking.
pub fn load(c: &Credential) -> Result<Loaded, CannotRun> {
    let material = match &c.kind {
        CredentialKind::AzureAd {
            secret: AzureSecret::ClientSecret { file },
            ..
        }
        | CredentialKind::Twilio {
            auth: TwilioAuth::AuthToken { file },
            ..
        }
        | CredentialKind::Twilio {
            auth: TwilioAuth::ApiKey {
                secret_file: file, ..
            },
            ..
        } => Material::Secret(read_secret(file)?),
        CredentialKind::AzureAd {
            secret: AzureSecret::Certificate { cert, key },
            ..
        } => Material::Certificate(Box::new(cert::load(cert, key)?)),
        CredentialKind::ApnsToken {
            key_file,
            key_id,
            team_id,
            ..
        } => Material::Apns(Box::new(apns::load(key_file, key_id, team_id)?)),
        CredentialKind::Fcm {
            service_account_file,
        } => Material::Fcm(Box::new(fcm::load(service_account_file)?)),
    };
    Ok(Loaded::new(material))
}

/// The first request of a check of `c` on the target at `target`.
pub fn first(
    c: &Credential,
    loaded: &Loaded,
    target: &Endpoint,
    now: SystemTime,
) -> Result<Call, CannotRun> {
    match &c.kind {
        CredentialKind::AzureAd {
            client_id, scope, ..
        } => {
            let url = c.token_url.as_ref().ok_or_else(|| {
                CannotRun("azure-ad needs a token URL; set `token_url` or `tenant`".into())
            })?;
            azure::token_request(url, client_id, scope, &loaded.material, now)
        }
        CredentialKind::Twilio { account_sid, auth } => {
            twilio::account_read(target, account_sid, auth, &loaded.material)
        }
        CredentialKind::ApnsToken {
            key_id,
            team_id,
            topic,
            ..
        } => apns::device_push(target, key_id, team_id, topic, &loaded.material, now),
        CredentialKind::Fcm { .. } => {
            fcm::token_request(c.token_url.as_ref(), &loaded.material, now)
        }
    }
}

/// Reads the answer to `call`, the `n`th request (from 0) of the check of
/// `c` on the target at `target`.
pub fn next(
    c: &Credential,
    loaded: &Loaded,
    target: &Endpoint,
    n: usize,
    call: &Call,
    reply: &Reply,
) -> Step {
    let verdict = match (&c.kind, n) {
        (CredentialKind::AzureAd { .. }, 0) => azure::classify(reply),
        (CredentialKind::Twilio { .. }, 0) => twilio::classify(call.what, reply),
        (CredentialKind::ApnsToken { .. }, 0) => apns::classify(&loaded.material, call, reply),
        (CredentialKind::Fcm { .. }, 0) => {
            match fcm::token_answer(&loaded.material, target, reply) {
                Ok(send) => return Step::Next(send),
                Err(v) => v,
            }
        }
        (CredentialKind::Fcm { .. }, 1) => fcm::send_answer(reply),
        _ => Verdict::Failed(format!("{}: no request {n} in this check", c.kind_name())),
    };
    Step::Done(reply::scrub(verdict, loaded.secret(), call))
}

/// The most bytes read from a credential file.
const MAX_FILE: u64 = 256 * 1024;

/// `path`'s bytes, when it is a regular file (symlinks followed): a FIFO
/// or a device would block the read, a directory is a wrong path.
fn read_file(path: &Path) -> Result<Vec<u8>, CannotRun> {
    let meta = std::fs::metadata(path).map_err(|e| {
        CannotRun(format!(
            "cannot read {}: {e}; check the path and that the secret is mounted",
            path.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(CannotRun(format!(
            "{} is {}, not a regular file; point the credential at the file holding it",
            path.display(),
            file_kind(&meta)
        )));
    }
    crate::files::read_bytes(path, MAX_FILE)
        .map_err(|e| CannotRun(format!("{e}; check the file and its permissions")))
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// A secret file's content, surrounding whitespace trimmed.
fn read_secret(path: &Path) -> Result<Secret<String>, CannotRun> {
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        CannotRun(format!(
            "{} is not UTF-8 text; it should hold the secret alone",
            path.display()
        ))
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(CannotRun(format!(
            "{} is empty; write the secret into it",
            path.display()
        )));
    }
    if secret.chars().any(char::is_control) {
        return Err(CannotRun(format!(
            "{} holds more than one line or control characters; it should hold the secret alone",
            path.display()
        )));
    }
    Ok(Secret::new(secret.to_string()))
}
