//! `POST /verify`: one run of every check, now, with the dialer of the
//! generation in force, shared by the callers that ask while it runs and
//! refused within `[admin] verify_cooldown` after it. Credential checks
//! run too, at most once a minute per generation (later runs within the
//! minute show the same results).
//!
//! Only reached past the admin checks. Never changes a route's state:
//! the report is an answer, not an observation fed to the route table.

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use http::{StatusCode, header};
use tokio::sync::broadcast;

use super::Endpoints;
use super::reply::{Reply, json, text};
use crate::credential::check::Checked;
use crate::verify;

/// Credential checks of a run are reused by the runs that follow within
/// this long: providers rate-limit token endpoints, and the cool-down of
/// `POST /verify` is shorter.
const CREDENTIALS_REUSED_FOR: Duration = Duration::from_secs(60);

/// One run at a time, and when the last one ended.
#[derive(Debug, Default)]
pub(super) struct VerifyGate {
    /// Set while a run is in flight: later callers wait for its result.
    in_flight: Option<broadcast::Sender<Arc<(bool, String)>>>,
    /// When the last run finished.
    finished: Option<StdInstant>,
    /// The last run's credential checks: when, for which generation.
    credentials: Option<(StdInstant, u64, Vec<Checked>)>,
}

impl Endpoints {
    /// One verify run shared by concurrent callers, refused within the
    /// cool-down. The run is its own task: a caller that hangs up does not
    /// cancel it for the others (or leave the gate stuck).
    pub(super) async fn verify(self: Arc<Self>) -> Reply {
        let cooldown = self.rt.config().admin.verify_cooldown;
        let mut gate = self.verify.lock().await;
        if let Some(tx) = &gate.in_flight {
            let mut rx = tx.subscribe();
            drop(gate);
            return match rx.recv().await {
                Ok(r) => verify_reply(&r),
                Err(_) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the verify run in flight was cancelled",
                ),
            };
        }
        if let Some(done) = gate.finished {
            let since = done.elapsed();
            if since < cooldown {
                let wait = (cooldown - since).as_secs() + 1;
                let mut r = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "a verify run finished {:.1}s ago; try again in {wait}s",
                        since.as_secs_f64()
                    ),
                );
                if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
        }
        let (tx, mut rx) = broadcast::channel(1);
        gate.in_flight = Some(tx.clone());
        // The generation in force: its dialer is the app traffic's.
        let generation = self.rt.current();
        let recent = gate
            .credentials
            .as_ref()
            .filter(|(at, id, _)| *id == generation.id && at.elapsed() < CREDENTIALS_REUSED_FOR)
            .map(|(_, _, c)| c.clone());
        drop(gate);
        let this = self.clone();
        tokio::spawn(async move {
            let (config, now) = (&generation.config, verify::now_unix());
            let report = match recent {
                Some(c) => verify::run_report(config, &generation.prober, now)
                    .await
                    .with_credentials(config, c, now),
                None => {
                    verify::run_full_report(config, &generation.prober, &generation.dialer, now)
                        .await
                }
            };
            let outcome = Arc::new((report.exit_code() == verify::EXIT_OK, report.render_json()));
            let mut gate = this.verify.lock().await;
            gate.in_flight = None;
            gate.finished = Some(StdInstant::now());
            if recent_is_stale(&gate, generation.id) {
                gate.credentials = Some((StdInstant::now(), generation.id, report.credentials));
            }
            drop(gate);
            let _ = tx.send(outcome);
        });
        match rx.recv().await {
            Ok(r) => verify_reply(&r),
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the verify run failed"),
        }
    }
}

/// True when the kept credential checks are not this generation's or
/// older than [`CREDENTIALS_REUSED_FOR`] (a run that reused them keeps
/// their first time).
fn recent_is_stale(gate: &VerifyGate, generation: u64) -> bool {
    gate.credentials
        .as_ref()
        .is_none_or(|(at, id, _)| *id != generation || at.elapsed() >= CREDENTIALS_REUSED_FOR)
}

/// 200 whether or not every check passed: the request worked, and the
/// JSON says what failed; the `X-Verify-Result` header says it in one word.
fn verify_reply(r: &(bool, String)) -> Reply {
    let mut reply = json(StatusCode::OK, r.1.clone());
    let word = if r.0 { "pass" } else { "fail" };
    reply
        .headers_mut()
        .insert("x-verify-result", header::HeaderValue::from_static(word));
    reply
}
