//! The owner's side of credential checks: the board of each target's
//! credential (kept across reloads that leave the credential alone), a
//! check's result turned into the board, its metrics, its log line and its
//! incident window (keyed by cause: only a check that proves the
//! credential closes it, whatever the routes do), and the skip while the
//! target has no working route. A credential never reaches the route
//! table: it never moves a route's health and never fails over.

use std::sync::Arc;
use std::time::SystemTime;

use super::owner::Owner;
use crate::credential::check::{Checked, Found};
use crate::credential::state;
use crate::incidents::Change;

impl Owner {
    /// The board for the config in force: kept credentials keep their
    /// state; windows of credentials that are gone (or changed) close.
    pub(super) fn sync_credentials(&mut self) {
        let next = state::sync(&self.credentials, &self.config);
        let now = SystemTime::now();
        let mut changed = false;
        for target in self.incidents.open_credential_targets() {
            // A window stays open until a check proves the credential
            // again; only a credential no longer configured closes it here.
            if !next.contains_key(&target)
                && self.incidents.close_credential(&target, now).is_some()
            {
                tracing::info!(target = %target, "credential incident window closed: the credential is no longer configured as it was");
                changed = true;
            }
        }
        self.credentials = Arc::new(next);
        for t in &self.config.targets {
            if t.credential.is_some() {
                for r in &t.routes {
                    self.rt.metrics.credential_failures_zero(&t.name, &r.name);
                }
            }
        }
        if changed {
            self.incidents_changed();
        }
    }

    /// A check's result.
    pub(super) fn credential_checked(&mut self, c: &Checked) {
        let Some(s) = Arc::make_mut(&mut self.credentials).get_mut(&c.target) else {
            return; // a check of a credential a reload removed
        };
        let changed = s.record(c);
        self.rt.metrics.credential_checked(c);
        self.rt.metrics.credential_state(&c.target, s);
        log(c, changed);
        let now = SystemTime::now();
        let change = match c.found {
            Found::Rejected => Some(
                self.incidents
                    .open_credential(&c.target, &c.route, &c.detail, now),
            ),
            Found::Proven => self.incidents.close_credential(&c.target, now),
            _ => None,
        };
        match &change {
            Some(Change::Opened(w)) => tracing::warn!(incident = w.id, "{}", w.render()),
            Some(Change::Closed(w)) => tracing::info!(incident = w.id, "{}", w.render()),
            _ => return,
        }
        self.incidents_changed();
    }

    /// The target's checks are skipped: it has no working route.
    pub(super) fn credential_skipped(&mut self, target: &str, why: &str) {
        if let Some(s) = Arc::make_mut(&mut self.credentials).get_mut(target) {
            if s.state != "skipped" {
                tracing::info!(target = %target, "credential check skipped: {why}");
            }
            s.skip(why, SystemTime::now());
            self.rt.metrics.credential_state(target, s);
        }
    }

    /// Every credential's gauges, set again (upkeep).
    pub(super) fn publish_credentials(&self) {
        for (target, s) in self.credentials.iter() {
            self.rt.metrics.credential_state(target, s);
        }
    }
}

/// The check's log line: a warning when it did not prove the credential,
/// info when it did after something else (quiet while nothing changes).
fn log(c: &Checked, changed: bool) {
    let (target, route, found) = (&c.target, &c.route, c.found.as_str());
    let reason = c.reason.map_or("none", |r| r.as_str());
    match c.found {
        Found::Proven if changed => {
            tracing::info!(target = %target, route = %route, result = found, detail = %c.detail, "credential proven")
        }
        Found::Proven => {
            tracing::debug!(target = %target, route = %route, result = found, "credential proven")
        }
        _ => {
            tracing::warn!(target = %target, route = %route, result = found, reason, code = c.code.as_deref().unwrap_or(""), detail = %c.detail, "credential check did not prove the credential")
        }
    }
}
