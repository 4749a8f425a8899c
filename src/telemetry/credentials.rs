//! The credential-check series of [`Metrics`]: set from a check's result
//! and, on every upkeep tick, from the board (gauges go idle otherwise).

use super::*;
use crate::credential::check::{Checked, Found};
use crate::credential::state::CredentialState;
use crate::reason::FailureReason;

impl Metrics {
    /// One check's result: success, the time, the failure counted.
    pub fn credential_checked(&self, c: &Checked) {
        let l = [("target", c.target.as_str()), ("route", c.route.as_str())];
        let ok = c.found == Found::Proven;
        self.gauge(CREDENTIAL_SUCCESS, &l, if ok { 1.0 } else { 0.0 });
        let at =
            c.at.duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
        self.gauge(CREDENTIAL_LAST_CHECK, &l, at);
        if let Some(reason) = c.reason.filter(|r| *r != FailureReason::Ok) {
            self.counter(
                CREDENTIAL_FAILURES,
                &[
                    ("target", c.target.as_str()),
                    ("route", c.route.as_str()),
                    ("reason", reason.as_str()),
                ],
                1,
            );
        }
    }

    /// Every failure reason at 0 for `target` × `route`, so `increase()`
    /// has a start.
    pub fn credential_failures_zero(&self, target: &str, route: &str) {
        for reason in FailureReason::ALL {
            if reason == FailureReason::Ok {
                continue;
            }
            self.counter(
                CREDENTIAL_FAILURES,
                &[
                    ("target", target),
                    ("route", route),
                    ("reason", reason.as_str()),
                ],
                0,
            );
        }
    }

    /// The target's credential gauges from its state; the last check's
    /// success and time again (they would go idle between checks).
    pub fn credential_state(&self, target: &str, s: &CredentialState) {
        let l = [("target", target)];
        self.gauge(CREDENTIAL_INTERVAL, &l, s.every_seconds as f64);
        self.gauge(
            CREDENTIAL_REJECTED_IN_A_ROW,
            &l,
            f64::from(s.rejected_in_a_row),
        );
        let skipped = if s.state == "skipped" { 1.0 } else { 0.0 };
        self.gauge(CREDENTIAL_SKIPPED, &l, skipped);
        if let Some(t) = s.not_after {
            self.gauge(CREDENTIAL_NOT_AFTER, &l, t as f64);
        }
        if let (Some(route), Some(at), Some(found)) = (&s.route, s.last_check, s.found) {
            let l = [("target", target), ("route", route.as_str())];
            let ok = if found == Found::Proven { 1.0 } else { 0.0 };
            self.gauge(CREDENTIAL_SUCCESS, &l, ok);
            self.gauge(CREDENTIAL_LAST_CHECK, &l, at);
        }
    }
}
