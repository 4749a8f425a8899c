//! `POST /verify`: one run of every check, now, with the dialer of the
//! generation in force, shared by the callers that ask while it runs and
//! refused within `[admin] verify_cooldown` after it.
//!
//! Only reached past the admin checks. Never changes a route's state:
//! the report is an answer, not an observation fed to the route table.

use std::sync::Arc;
use std::time::Instant as StdInstant;

use http::{StatusCode, header};
use tokio::sync::broadcast;

use super::Endpoints;
use super::reply::{Reply, json, text};
use crate::verify;

/// One run at a time, and when the last one ended.
#[derive(Debug, Default)]
pub(super) struct VerifyGate {
    /// Set while a run is in flight: later callers wait for its result.
    in_flight: Option<broadcast::Sender<Arc<(bool, String)>>>,
    /// When the last run finished.
    finished: Option<StdInstant>,
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
        drop(gate);
        let this = self.clone();
        tokio::spawn(async move {
            // The generation in force: its dialer is the app traffic's.
            let generation = this.rt.current();
            let report = verify::run_full_report(
                &generation.config,
                &generation.prober,
                &generation.dialer,
                verify::now_unix(),
            )
            .await;
            let outcome = Arc::new((report.exit_code() == verify::EXIT_OK, report.render_json()));
            let mut gate = this.verify.lock().await;
            gate.in_flight = None;
            gate.finished = Some(StdInstant::now());
            drop(gate);
            let _ = tx.send(outcome);
        });
        match rx.recv().await {
            Ok(r) => verify_reply(&r),
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the verify run failed"),
        }
    }
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
