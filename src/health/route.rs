//! One target × route's health: `fall` consecutive failures make it
//! unhealthy, `rise` consecutive successes healthy again, and a route that
//! flaps is held down for a growing time (doubling, capped) before traffic
//! may return to it.
//!
//! Pure state: time comes in as an argument; nothing here sleeps, dials or
//! logs.

use std::collections::VecDeque;
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
    /// How many of the latest attempts the degraded judgement looks at.
    pub degraded_window: u32,
    /// Failures among them that make a route degraded.
    pub degraded_failures: u32,
}

impl HealthSettings {
    /// Failures in the window at or under which a degraded route clears:
    /// one (so a failure rate near the threshold does not flap), or none
    /// when a single failure is already the threshold.
    fn degraded_clears_at(&self) -> u32 {
        self.degraded_failures.saturating_sub(1).min(1)
    }
}

/// What one observation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    /// The fall/rise verdict, when it changed.
    pub healthy: Option<bool>,
    /// The degraded state, when it changed.
    pub degraded: Option<bool>,
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
    /// The latest attempts that counted, newest last: `true` for a failure.
    pub recent: VecDeque<bool>,
    /// True while too many of the latest attempts failed.
    pub degraded: bool,
    /// Addresses of the proxy's name that failed the last probe's check:
    /// the route is degraded (not down) while any does.
    pub addresses_down: Vec<String>,
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
            recent: VecDeque::new(),
            degraded: false,
            addresses_down: Vec::new(),
        }
    }

    /// Degraded by its failure rate, or by some of its proxy's addresses.
    pub fn degraded_any(&self) -> bool {
        self.degraded || !self.addresses_down.is_empty()
    }

    /// Failures among the latest attempts.
    pub fn recent_failures(&self) -> u32 {
        self.recent.iter().filter(|f| **f).count() as u32
    }

    /// Eligible for traffic: not known to be down and not held.
    pub fn eligible(&self, now: Instant) -> bool {
        self.healthy != Some(false) && self.held_until.is_none_or(|h| now >= h)
    }

    /// Eligible for traffic where a degraded route loses it (the target's
    /// `failover_on_degraded`).
    pub fn eligible_for(&self, now: Instant, degraded_moves_traffic: bool) -> bool {
        self.eligible(now) && !(degraded_moves_traffic && self.degraded)
    }

    /// True while the route needs watching closely: failing, recovering,
    /// degraded or held.
    pub fn unsettled(&self, now: Instant) -> bool {
        self.healthy != Some(true)
            || self.consecutive_fail > 0
            || self.degraded
            || !self.eligible(now)
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

    /// Feeds one verdict; says what changed. A route coming back (healthy
    /// again, or no longer degraded when that moves traffic) is held like
    /// one that flapped.
    pub(super) fn observe(
        &mut self,
        seen: Seen,
        now: Instant,
        s: &HealthSettings,
        degraded_moves_traffic: bool,
    ) -> Changed {
        let was_out = self.out(degraded_moves_traffic);
        let failed = !seen.ok();
        let healthy = self.fall_rise(seen, s);
        // Degraded is a partial failure of a route that is otherwise up: a
        // down route's failures do not count, and it comes back with a
        // clean window (fail-back after an outage waits for `rise`, not
        // for the window to drain).
        let degraded = if self.healthy == Some(false) {
            self.recent.clear();
            std::mem::take(&mut self.degraded).then_some(false)
        } else {
            self.judge_degraded(failed, s)
        };
        match (was_out, self.out(degraded_moves_traffic)) {
            (false, true) => self.went_down(now, s),
            (true, false) => self.came_back(now, s),
            _ => {}
        }
        Changed { healthy, degraded }
    }

    /// Out of traffic on its own account: down, or degraded where that
    /// moves traffic. Entering it is a down (a flap when recent); leaving
    /// it is a return, held after repeated flaps.
    fn out(&self, degraded_moves_traffic: bool) -> bool {
        self.healthy == Some(false) || (degraded_moves_traffic && self.degraded)
    }

    /// The sliding window: degraded at `degraded_failures` of the latest
    /// `degraded_window`, clear again at one (hysteresis).
    fn judge_degraded(&mut self, failed: bool, s: &HealthSettings) -> Option<bool> {
        let window = s.degraded_window.max(1) as usize;
        self.recent.push_back(failed);
        while self.recent.len() > window {
            self.recent.pop_front();
        }
        let failures = self.recent_failures();
        let next = if self.degraded {
            failures > s.degraded_clears_at()
        } else {
            failures >= s.degraded_failures.max(1)
        };
        (next != self.degraded).then(|| {
            self.degraded = next;
            next
        })
    }

    fn went_down(&mut self, now: Instant, s: &HealthSettings) {
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

    fn came_back(&mut self, now: Instant, s: &HealthSettings) {
        let hold = self.hold(s);
        self.held_until = (!hold.is_zero()).then(|| now + hold);
    }

    /// Fall/rise: returns `Some(healthy)` when the verdict changed.
    fn fall_rise(&mut self, seen: Seen, s: &HealthSettings) -> Option<bool> {
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
