//! Where each target's credential stands: the last check's result, how
//! many rejections in a row, whether checks are skipped (no working
//! route), and when the next one is due. The route-state owner keeps the
//! [`Board`] and publishes it in every snapshot; `/status`, the page and the
//! schedule read it there.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::check::{Checked, Found};
use crate::config::Config;
use crate::reason::FailureReason;

/// The details kept are cut to this many characters.
const MAX_DETAIL: usize = 300;

/// One target's credential, as the screens show it. Holds no secret.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialState {
    /// `azure-ad`, `twilio`.
    pub kind: &'static str,
    /// The configured interval, in seconds.
    pub every_seconds: u64,
    /// `pending` (no check yet), `skipped` (no working route), or the last
    /// check's finding (`proven`, `rejected`, ...).
    pub state: &'static str,
    /// The last check's finding, if any.
    pub found: Option<Found>,
    /// The last check's reason (`ok`, `credential_rejected`, ...).
    pub reason: Option<FailureReason>,
    /// The provider's own code, on a rejection.
    pub code: Option<String>,
    /// What the last check (or the skip) said.
    pub detail: String,
    /// The route the last check went over.
    pub route: Option<String>,
    /// When the last check finished (Unix seconds).
    pub last_check: Option<f64>,
    /// When the last check that proved the credential finished.
    pub last_proven: Option<f64>,
    /// Checks rejected in a row (0 once one proves it).
    pub rejected_in_a_row: u32,
    /// The credential's end of validity, where known (Unix seconds).
    pub not_after: Option<i64>,
    /// Since when checks are skipped (Unix seconds), while they are.
    pub skipped_since: Option<f64>,
    /// The credential's fingerprint: a reload that keeps it keeps this
    /// state and its schedule.
    #[serde(skip)]
    pub fingerprint: u64,
    /// Not before this is the next check due (a provider's back-off,
    /// Unix seconds in `/status`).
    #[serde(serialize_with = "unix_opt")]
    pub not_before: Option<SystemTime>,
}

fn unix_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&unix(*t)),
        None => s.serialize_none(),
    }
}

/// Every credential's state, by target name.
pub type Board = BTreeMap<String, CredentialState>;

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn cut(s: &str) -> String {
    s.chars().take(MAX_DETAIL).collect()
}

/// The board for `config`: targets whose credential kept its fingerprint
/// keep their state; the others start pending; gone ones go.
pub fn sync(old: &Board, config: &Config) -> Board {
    let mut next = Board::new();
    for t in &config.targets {
        let Some(c) = &t.credential else { continue };
        let kept = old.get(&t.name).filter(|s| s.fingerprint == c.fingerprint);
        let state = kept.cloned().unwrap_or_else(|| CredentialState {
            kind: c.kind_name(),
            every_seconds: c.every.as_secs(),
            state: "pending",
            found: None,
            reason: None,
            code: None,
            detail: "no check yet".into(),
            route: None,
            last_check: None,
            last_proven: None,
            rejected_in_a_row: 0,
            not_after: None,
            skipped_since: None,
            fingerprint: c.fingerprint,
            not_before: None,
        });
        next.insert(t.name.clone(), state);
    }
    next
}

impl CredentialState {
    /// A check's result. Returns true when it changed the finding.
    pub fn record(&mut self, c: &Checked) -> bool {
        let changed = self.found != Some(c.found);
        self.state = c.found.as_str();
        self.found = Some(c.found);
        self.reason = c.reason;
        self.code = c.code.clone();
        self.detail = cut(&c.detail);
        self.route = Some(c.route.clone());
        self.last_check = Some(unix(c.at));
        self.skipped_since = None;
        if c.not_after.is_some() {
            self.not_after = c.not_after;
        }
        match c.found {
            Found::Proven => {
                self.rejected_in_a_row = 0;
                self.last_proven = Some(unix(c.at));
            }
            Found::Rejected => self.rejected_in_a_row = self.rejected_in_a_row.saturating_add(1),
            _ => {}
        }
        self.not_before = c.back_off.map(|d| c.at + d);
        changed
    }

    /// Checks are skipped at `now`: `why` (the target has no working
    /// route). The last finding is kept for the screens.
    pub fn skip(&mut self, why: &str, now: SystemTime) {
        self.state = "skipped";
        self.skipped_since.get_or_insert(unix(now));
        self.detail = cut(why);
    }

    /// How long after `now` the next check is due, given `every`.
    pub fn due_in(&self, every: Duration, now: SystemTime) -> Duration {
        let last = self
            .last_check
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s));
        let by_every = last.map_or(Duration::ZERO, |l| {
            (l + every).duration_since(now).unwrap_or(Duration::ZERO)
        });
        let by_back_off = self.not_before.map_or(Duration::ZERO, |t| {
            t.duration_since(now).unwrap_or(Duration::ZERO)
        });
        by_every.max(by_back_off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(found: Found, at: SystemTime) -> Checked {
        Checked {
            target: "t".into(),
            route: "provider".into(),
            found,
            reason: Some(if found == Found::Proven {
                FailureReason::Ok
            } else {
                FailureReason::CredentialRejected
            }),
            code: (found == Found::Rejected).then(|| "20003".to_string()),
            detail: "d".repeat(1000),
            http_status: Some(401),
            not_after: None,
            back_off: None,
            at,
            took: Duration::ZERO,
        }
    }

    fn fresh() -> CredentialState {
        CredentialState {
            kind: "twilio",
            every_seconds: 60,
            state: "pending",
            found: None,
            reason: None,
            code: None,
            detail: String::new(),
            route: None,
            last_check: None,
            last_proven: None,
            rejected_in_a_row: 0,
            not_after: None,
            skipped_since: None,
            fingerprint: 1,
            not_before: None,
        }
    }

    #[test]
    fn rejections_count_in_a_row_until_a_proof() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = fresh();
        assert!(s.record(&checked(Found::Rejected, t0)));
        assert!(!s.record(&checked(Found::Rejected, t0)));
        assert_eq!(s.rejected_in_a_row, 2);
        assert_eq!(s.code.as_deref(), Some("20003"));
        assert_eq!(s.detail.chars().count(), MAX_DETAIL);
        s.skip("no working route", t0);
        assert_eq!(s.state, "skipped");
        assert_eq!(s.rejected_in_a_row, 2, "a skip keeps the count");
        assert!(s.record(&checked(Found::Proven, t0)));
        assert_eq!(s.rejected_in_a_row, 0);
        assert_eq!(s.skipped_since, None);
        assert_eq!(s.state, "proven");
    }

    #[test]
    fn the_next_check_is_due_after_every_and_after_a_back_off() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let every = Duration::from_secs(60);
        let mut s = fresh();
        assert_eq!(s.due_in(every, t0), Duration::ZERO, "never checked: now");
        s.record(&checked(Found::Proven, t0));
        assert_eq!(
            s.due_in(every, t0 + Duration::from_secs(20)),
            Duration::from_secs(40)
        );
        assert_eq!(
            s.due_in(every, t0 + Duration::from_secs(90)),
            Duration::ZERO
        );
        let mut c = checked(Found::BackingOff, t0);
        c.back_off = Some(Duration::from_secs(600));
        s.record(&c);
        assert_eq!(
            s.due_in(every, t0 + Duration::from_secs(100)),
            Duration::from_secs(500)
        );
    }
}
