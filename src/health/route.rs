//! One target × route's health: `fall` consecutive failures make it
//! unhealthy, `rise` consecutive successes healthy again, and a route that
//! flaps is held down for a growing time (doubling, capped) before traffic
//! may return to it.
//!
//! Pure state: time comes in as an argument; nothing here sleeps, dials or
//! logs.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::probe::ProbeOutcome;
use crate::reason::FailureReason;

/// Hysteresis settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Consecutive failures that make a healthy route unhealthy.
    pub fall: u32,
    /// Consecutive successes that make an unhealthy route healthy.
    pub rise: u32,
    /// Hold after the second flap within `hold_down_max`; doubles per flap.
    pub hold_down: Duration,
    /// The longest hold, and the window in which downs count as flaps.
    pub hold_down_max: Duration,
}

/// Where a verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A scheduled (or woken) probe.
    Probe,
    /// The app's own traffic.
    Traffic,
}

/// One observation that counted for the route: what it said and where from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// `ok` or the failure reason.
    pub reason: FailureReason,
    /// The detail behind it (a CONNECT status line, a TLS alert, …).
    pub detail: String,
    /// Probe or traffic.
    pub source: Source,
}

impl Seen {
    /// True for a success.
    pub fn ok(&self) -> bool {
        self.reason == FailureReason::Ok
    }
}

/// The health of one target × route.
#[derive(Debug, Clone)]
pub struct RouteHealth {
    /// The route's name.
    pub route: String,
    /// True for the direct route.
    pub direct: bool,
    /// `None` until the first verdict; then the state after hysteresis.
    pub healthy: Option<bool>,
    /// Successes in a row.
    pub consecutive_ok: u32,
    /// Failures in a row.
    pub consecutive_fail: u32,
    /// The last observation that counted (probe or traffic).
    pub last: Option<Seen>,
    /// The last probe, whole (phases, CONNECT reply, certificate), for status.
    pub last_probe: Option<ProbeOutcome>,
    /// The failure that began the current run of failures: the cause.
    pub first_failure: Option<Seen>,
    /// Downs within the flap window.
    pub flaps: u32,
    /// When it last went down.
    pub last_down: Option<Instant>,
    /// Not eligible for traffic before this, although healthy.
    pub held_until: Option<Instant>,
}

impl RouteHealth {
    /// A route not yet observed.
    pub fn new(route: &str, direct: bool) -> Self {
        Self {
            route: route.to_string(),
            direct,
            healthy: None,
            consecutive_ok: 0,
            consecutive_fail: 0,
            last: None,
            last_probe: None,
            first_failure: None,
            flaps: 0,
            last_down: None,
            held_until: None,
        }
    }

    /// Eligible for traffic: not known to be down and not held.
    pub fn eligible(&self, now: Instant) -> bool {
        self.healthy != Some(false) && self.held_until.is_none_or(|h| now >= h)
    }

    /// True while the route needs watching closely: failing, recovering or held.
    pub fn unsettled(&self, now: Instant) -> bool {
        self.healthy != Some(true) || self.consecutive_fail > 0 || !self.eligible(now)
    }

    /// True when the last failure that counted lies on the way to the
    /// tunnel (resolve, connect, the proxy's CONNECT reply, our policy): a
    /// tunnel that stands proves only that much, so only such a failure may
    /// be answered by an app tunnel's success.
    pub fn failing_before_tunnel(&self) -> bool {
        self.last.as_ref().is_none_or(|s| {
            s.reason.is_proxy_fault()
                || matches!(
                    s.reason,
                    FailureReason::Ok
                        | FailureReason::Resolve
                        | FailureReason::Connect
                        | FailureReason::PolicyDenied
                )
        })
    }

    /// Feeds one verdict; returns `Some(healthy)` when the state changed,
    /// with the hold applied to a route coming back.
    pub(super) fn observe(&mut self, seen: Seen, now: Instant, s: &HealthSettings) -> Option<bool> {
        let ok = seen.ok();
        if ok {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_fail = 0;
        } else {
            if self.consecutive_fail == 0 {
                self.first_failure = Some(seen.clone());
            }
            self.consecutive_fail = self.consecutive_fail.saturating_add(1);
            self.consecutive_ok = 0;
        }
        self.last = Some(seen);
        let next = match self.healthy {
            // The first verdict needs no streak: there is nothing to protect yet.
            None => Some(ok),
            Some(true) if self.consecutive_fail >= s.fall => Some(false),
            Some(false) if self.consecutive_ok >= s.rise => Some(true),
            _ => None,
        }?;
        self.healthy = Some(next);
        if next {
            let hold = self.hold(s);
            self.held_until = (!hold.is_zero()).then(|| now + hold);
        } else {
            let recent = self
                .last_down
                .is_some_and(|d| now.duration_since(d) <= s.hold_down_max);
            self.flaps = if recent {
                self.flaps.saturating_add(1)
            } else {
                1
            };
            self.last_down = Some(now);
            self.held_until = None;
        }
        Some(next)
    }

    /// The hold for a route coming back after `flaps` downs in the window:
    /// none after one, then `hold_down`, doubling, capped at `hold_down_max`.
    fn hold(&self, s: &HealthSettings) -> Duration {
        if self.flaps <= 1 {
            return Duration::ZERO;
        }
        let doublings = (self.flaps - 2).min(20);
        s.hold_down
            .saturating_mul(1 << doublings)
            .min(s.hold_down_max)
    }
}
