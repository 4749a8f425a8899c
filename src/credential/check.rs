//! One credential check: the files read off the async workers (bounded in
//! time), the provider's requests sent over one route with the one dialer,
//! and the answers read into a [`Checked`]. Never panics and never waits
//! past its deadline; a check that cannot run is a finding, not an error.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::provider::{self, Call, CannotRun, Loaded, Reply, Step, Verdict};
use crate::config::{Credential, Http2Mode, Route, Target};
use crate::probe::{Outgoing, Prober};
use crate::reason::FailureReason;

/// The longest reading a credential's files may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest time a check's requests get, whatever the target's timeout
/// (a token endpoint signs and looks things up).
const MIN_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// The most requests one check makes.
const MAX_CALLS: usize = 3;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Found {
    /// The provider accepted the credential.
    Proven,
    /// The provider refused it (`credential_rejected`).
    Rejected,
    /// The provider says the check is set up wrong (scope, tenant).
    Misconfigured,
    /// The check failed before the provider judged it (the route, TLS,
    /// the provider's own trouble).
    Failed,
    /// The provider asked us to slow down.
    BackingOff,
    /// The check could not run: its files could not be read or used.
    CannotRun,
}

impl Found {
    /// The word the screens show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proven => "proven",
            Self::Rejected => "rejected",
            Self::Misconfigured => "misconfigured",
            Self::Failed => "failed",
            Self::BackingOff => "backing_off",
            Self::CannotRun => "cannot_run",
        }
    }
}

/// The result of one check of one target's credential over one route.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The target.
    pub target: String,
    /// The route it went over.
    pub route: String,
    /// What it found.
    pub found: Found,
    /// The failure reason (`ok` when proven; `None` when it could not run).
    pub reason: Option<FailureReason>,
    /// The provider's own code, on a rejection (`AADSTS7000222`, `20003`).
    pub code: Option<String>,
    /// What happened, in words (never a secret).
    pub detail: String,
    /// The last HTTP status the provider answered.
    pub http_status: Option<u16>,
    /// The credential's end of validity, where known (Unix seconds).
    pub not_after: Option<i64>,
    /// Wait at least this long before the next check.
    pub back_off: Option<Duration>,
    /// When it finished.
    pub at: SystemTime,
    /// How long it took.
    pub took: Duration,
}

/// Checks `target`'s credential `cred` over `route` once.
pub async fn run(
    prober: &Prober,
    target: &Target,
    cred: &Arc<Credential>,
    route: &Route,
) -> Checked {
    let start = Instant::now();
    let mut c = Checked {
        target: target.name.clone(),
        route: route.name.clone(),
        found: Found::CannotRun,
        reason: None,
        code: None,
        detail: String::new(),
        http_status: None,
        not_after: None,
        back_off: None,
        at: SystemTime::now(),
        took: Duration::ZERO,
    };
    match load(cred).await {
        Err(CannotRun(why)) => c.detail = why,
        Ok(loaded) => {
            c.not_after = loaded.not_after();
            let deadline = start + target.timeout.max(MIN_CHECK_TIMEOUT);
            exchange(prober, target, cred, route, &loaded, deadline, &mut c).await;
        }
    }
    c.at = SystemTime::now();
    c.took = start.elapsed();
    c
}

/// Reads the credential's files on the blocking pool, within
/// [`READ_TIMEOUT`].
async fn load(cred: &Arc<Credential>) -> Result<Loaded, CannotRun> {
    let c = cred.clone();
    let read = tokio::task::spawn_blocking(move || provider::load(&c));
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(CannotRun(
            "reading the credential's files stopped unexpectedly".into(),
        )),
        Err(_) => Err(CannotRun(format!(
            "reading {} took more than {} s: is it on a hung mount?",
            files(cred),
            READ_TIMEOUT.as_secs()
        ))),
    }
}

fn files(cred: &Credential) -> String {
    let names: Vec<String> = cred
        .files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    names.join(", ")
}

/// Sends the check's requests in turn until the provider's answers give a
/// verdict.
async fn exchange(
    prober: &Prober,
    target: &Target,
    cred: &Credential,
    route: &Route,
    loaded: &Loaded,
    deadline: Instant,
    c: &mut Checked,
) {
    let mut call = match provider::first(cred, loaded, &target.endpoint, SystemTime::now()) {
        Ok(call) => call,
        Err(CannotRun(why)) => {
            c.detail = why;
            return;
        }
    };
    for n in 0..MAX_CALLS {
        let reply = match send(prober, target, route, &call, deadline).await {
            Ok(r) => r,
            Err((reason, detail)) => {
                c.found = Found::Failed;
                c.reason = Some(reason);
                c.detail = format!("{} to {}: {detail}", call.what, call.endpoint.host);
                return;
            }
        };
        c.http_status = Some(reply.status);
        match provider::next(cred, loaded, &target.endpoint, n, &call, &reply) {
            Step::Next(more) => call = more,
            Step::Done(verdict) => {
                judge(c, verdict, &call);
                return;
            }
        }
    }
    c.found = Found::Failed;
    c.reason = Some(FailureReason::HttpStatus);
    c.detail = format!("the provider's answers gave no verdict after {MAX_CALLS} requests");
}

/// The verdict into the result.
fn judge(c: &mut Checked, verdict: Verdict, call: &Call) {
    let (found, reason, detail) = match verdict {
        Verdict::Proven(d) => (Found::Proven, FailureReason::Ok, d),
        Verdict::Rejected { code, detail } => {
            let host = &call.endpoint.host;
            let d = if detail.contains(code.as_str()) {
                format!("{host} refused the credential: {detail}")
            } else {
                format!("{host} refused the credential: {code}: {detail}")
            };
            c.code = Some(code);
            (Found::Rejected, FailureReason::CredentialRejected, d)
        }
        Verdict::Misconfigured(d) => (
            Found::Misconfigured,
            FailureReason::HttpStatus,
            format!("the check is set up wrong: {d}"),
        ),
        Verdict::Failed(d) => (Found::Failed, FailureReason::HttpStatus, d),
        Verdict::BackOff { after, detail } => {
            c.back_off = Some(after);
            (
                Found::BackingOff,
                FailureReason::HttpStatus,
                format!(
                    "{detail}; next check in {} s at the earliest",
                    after.as_secs()
                ),
            )
        }
    };
    c.found = found;
    c.reason = Some(reason);
    c.detail = detail;
}

/// One request over `route`: the target's own TLS settings toward its own
/// host, the same trust without a client identity toward another (a token
/// endpoint).
async fn send(
    prober: &Prober,
    target: &Target,
    route: &Route,
    call: &Call,
    deadline: Instant,
) -> Result<Reply, (FailureReason, String)> {
    let own =
        call.endpoint.host == target.endpoint.host && call.endpoint.port == target.endpoint.port;
    let other;
    let (tls, http2) = if own {
        (&target.tls, target.http2)
    } else {
        other = target
            .tls
            .without_identity()
            .map_err(|e| (FailureReason::TlsHandshake, e.to_string()))?;
        (&other, Http2Mode::Never)
    };
    let out = Outgoing {
        endpoint: &call.endpoint,
        tls,
        http2,
        allow: &target.allow_addresses,
        method: call.method.clone(),
        headers: &call.headers,
        body: call.body.clone(),
    };
    let answered = prober
        .send(out, route, deadline)
        .await
        .map_err(|f| (f.reason, f.detail))?;
    Ok(Reply {
        status: answered.answer.status.as_u16(),
        headers: answered.answer.headers,
        body: answered.answer.body,
    })
}
