//! What each provider's check sends and how its answers are read: pure
//! code, no network. `load` reads the credential's files (blocking: run it
//! off the async workers), `first` builds the first request of a check,
//! `next` reads an answer and says whether the check is done (a verdict) or
//! goes on with another request (a token traded for a call, in part 2).
//!
//! Nothing here logs, and no value built here shows a secret in `Debug`
//! or in a verdict's text.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::{Credential, Endpoint};

/// Why a check cannot run: a file that cannot be read or parsed, a key of
/// the wrong type. The text names the file and what to do, never its
/// content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannotRun(pub String);

/// What the credential's files gave, secrets wrapped. Dropped after the
/// check.
pub struct Loaded {
    _private: (),
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Loaded(<redacted>)")
    }
}

impl Loaded {
    /// The end of the credential's validity, where the files say (a
    /// certificate credential's `notAfter`, Unix seconds).
    pub fn not_after(&self) -> Option<i64> {
        None
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
    let _ = c;
    Err(CannotRun("not implemented".into()))
}

/// The first request of a check of `c` on the target at `target`.
pub fn first(
    c: &Credential,
    loaded: &Loaded,
    target: &Endpoint,
    now: SystemTime,
) -> Result<Call, CannotRun> {
    let _ = (c, loaded, target, now);
    Err(CannotRun("not implemented".into()))
}

/// Reads the answer to `call` (the `n`th request of the check, from 0).
pub fn next(c: &Credential, loaded: &Loaded, n: usize, call: &Call, reply: &Reply) -> Step {
    let _ = (c, loaded, n, call, reply);
    Step::Done(Verdict::Failed("not implemented".into()))
}
