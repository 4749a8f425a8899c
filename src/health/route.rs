//! One target × route's health, judged per evidence [`Level`] (route,
//! tunnel, answer) on the observations that reach each: `fall` consecutive
//! failures make a level unhealthy, `rise` consecutive successes healthy
//! again, `degraded_failures` of the latest `degraded_window` degraded; the
//! route is as good as its worst level with evidence. A route that flaps is
//! held down for a growing time (doubling, capped) before traffic may
//! return to it.
//!
//! Pure state: time comes in as an argument; nothing here sleeps, dials or
//! logs.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::level::{Evidence, Level};
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

/// One observation that counted for the route: what it said, where from,
/// and the level it speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// `ok` or the failure reason.
    pub reason: FailureReason,
    /// The detail behind it (a CONNECT status line, a TLS alert, …).
    pub detail: String,
    /// Probe or traffic.
    pub source: Source,
    /// For a failure, the level it failed at; for a success, the highest
    /// level it proved.
    pub level: Level,
}

impl Seen {
    /// True for a success.
    pub fn ok(&self) -> bool {
        self.reason == FailureReason::Ok
    }
}

/// Fall/rise and the degraded window of one level of one route, fed only
/// the observations that reach that level.
#[derive(Debug, Clone, Default)]
pub struct LevelHealth {
    /// `None` until the first observation reaching this level; then the
    /// state after hysteresis.
    pub healthy: Option<bool>,
    /// Successes in a row at this level.
    pub consecutive_ok: u32,
    /// Failures in a row at this level.
    pub consecutive_fail: u32,
    /// The failure that began the current run of failures here.
    pub first_failure: Option<Seen>,
    /// The latest observations of this level, newest last: `true` for a
    /// failure.
    pub recent: VecDeque<bool>,
    /// True while too many of them failed.
    pub degraded: bool,
}

impl LevelHealth {
    /// Failures among the latest observations.
    pub fn recent_failures(&self) -> u32 {
        self.recent.iter().filter(|f| **f).count() as u32
    }

    /// Fall/rise: returns `Some(healthy)` when the verdict changed.
    fn fall_rise(&mut self, seen: &Seen, ok: bool, s: &HealthSettings) -> Option<bool> {
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

    /// The sliding window: degraded at `degraded_failures` of the latest
    /// `degraded_window`, clear again at one (hysteresis).
    fn judge_degraded(&mut self, failed: bool, s: &HealthSettings) {
        let window = s.degraded_window.max(1) as usize;
        self.recent.push_back(failed);
        while self.recent.len() > window {
            self.recent.pop_front();
        }
        let failures = self.recent_failures();
        self.degraded = if self.degraded {
            failures > s.degraded_clears_at()
        } else {
            failures >= s.degraded_failures.max(1)
        };
    }
}

/// Where a route stands, as a reader shows it: one of five states, in words
/// only when rendered ([`as_str`](Self::as_str)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteState {
    /// No observation has reached any level yet (eligible for traffic).
    NotYetProbed,
    /// Some level with evidence is unhealthy: no traffic.
    Failing,
    /// Healthy again after flapping, held before traffic returns.
    HeldDown,
    /// Up, but too many of its latest observations failed (or some of its
    /// proxy's addresses do).
    Degraded,
    /// Up.
    Healthy,
}

impl RouteState {
    /// The words the page and logs use (tests match them).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotYetProbed => "not yet probed",
            Self::Failing => "failing",
            Self::HeldDown => "held down",
            Self::Degraded => "degraded",
            Self::Healthy => "healthy",
        }
    }
}

/// The health of one target × route: a [`LevelHealth`] per [`Level`], and
/// the route judged as good as its worst level with evidence.
#[derive(Debug, Clone)]
pub struct RouteHealth {
    /// The route's name.
    pub route: String,
    /// True for the direct route.
    pub direct: bool,
    /// Per level, in [`Level::ALL`] order.
    pub levels: [LevelHealth; 3],
    /// The last observation that counted (probe or traffic).
    pub last: Option<Seen>,
    /// The last probe, whole (phases, CONNECT reply, certificate), for status.
    pub last_probe: Option<ProbeOutcome>,
    /// Downs within the flap window.
    pub flaps: u32,
    /// When it last went down.
    pub last_down: Option<Instant>,
    /// Not eligible for traffic before this, although healthy.
    pub held_until: Option<Instant>,
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
            levels: Default::default(),
            last: None,
            last_probe: None,
            flaps: 0,
            last_down: None,
            held_until: None,
            addresses_down: Vec::new(),
        }
    }

    /// One level's state.
    pub fn level(&self, level: Level) -> &LevelHealth {
        &self.levels[level.index()]
    }

    /// The fall/rise verdict: `Some(false)` when any level with evidence
    /// is unhealthy, `Some(true)` when every level with evidence is
    /// healthy, `None` before any evidence.
    pub fn healthy(&self) -> Option<bool> {
        let verdicts = self.levels.iter().filter_map(|l| l.healthy);
        verdicts.fold(None, |acc, h| Some(acc.unwrap_or(true) && h))
    }

    /// True while too many of some level's latest observations failed.
    pub fn degraded(&self) -> bool {
        self.levels.iter().any(|l| l.degraded)
    }

    /// Degraded by its failure rate, or by some of its proxy's addresses.
    pub fn degraded_any(&self) -> bool {
        self.degraded() || !self.addresses_down.is_empty()
    }

    /// Failures in a row at the level that has the most.
    pub fn consecutive_fail(&self) -> u32 {
        self.levels
            .iter()
            .map(|l| l.consecutive_fail)
            .max()
            .unwrap_or(0)
    }

    /// Successes in a row at every level with evidence (the fewest).
    pub fn consecutive_ok(&self) -> u32 {
        self.levels
            .iter()
            .filter(|l| l.healthy.is_some())
            .map(|l| l.consecutive_ok)
            .min()
            .unwrap_or(0)
    }

    /// The degraded window of the level that fares worst: its level, the
    /// failures in it and how many observations it holds.
    pub fn worst_window(&self) -> (Level, u32, usize) {
        Level::ALL
            .into_iter()
            .map(|l| {
                let h = self.level(l);
                (l, h.recent_failures(), h.recent.len())
            })
            .max_by_key(|(l, failures, _)| (*failures, std::cmp::Reverse(*l)))
            .unwrap_or((Level::Route, 0, 0))
    }

    /// The failure that began the run of failures at the lowest unhealthy
    /// level (else at the lowest failing one): the cause.
    pub fn cause(&self) -> Option<&Seen> {
        let unhealthy = self.levels.iter().find(|l| l.healthy == Some(false));
        let failing = self.levels.iter().find(|l| l.consecutive_fail > 0);
        unhealthy.or(failing)?.first_failure.as_ref()
    }

    /// Where the route stands at `now`.
    pub fn state(&self, now: Instant) -> RouteState {
        match self.healthy() {
            None => RouteState::NotYetProbed,
            Some(false) => RouteState::Failing,
            Some(true) if !self.eligible(now) => RouteState::HeldDown,
            Some(true) if self.degraded_any() => RouteState::Degraded,
            Some(true) => RouteState::Healthy,
        }
    }

    /// Eligible for traffic: not known to be down and not held.
    pub fn eligible(&self, now: Instant) -> bool {
        self.healthy() != Some(false) && self.held_until.is_none_or(|h| now >= h)
    }

    /// Eligible for traffic where a degraded route loses it (the target's
    /// `failover_on_degraded`).
    pub fn eligible_for(&self, now: Instant, degraded_moves_traffic: bool) -> bool {
        self.eligible(now) && !(degraded_moves_traffic && self.degraded())
    }

    /// True while the route needs watching closely: failing, recovering,
    /// degraded or held.
    pub fn unsettled(&self, now: Instant) -> bool {
        self.healthy() != Some(true)
            || self.consecutive_fail() > 0
            || self.degraded()
            || !self.eligible(now)
    }

    /// Feeds one observation: each level it is evidence for moves, the
    /// others keep their state. Says what changed in the route's combined
    /// verdicts. A route coming back (healthy again, or no longer degraded
    /// when that moves traffic) is held like one that flapped.
    pub(super) fn observe(
        &mut self,
        seen: Seen,
        evidence: Evidence,
        now: Instant,
        s: &HealthSettings,
        degraded_moves_traffic: bool,
    ) -> Changed {
        if evidence == Evidence::Nothing {
            return Changed::default();
        }
        let (was_healthy, was_degraded) = (self.healthy(), self.degraded());
        let was_out = self.out(degraded_moves_traffic);
        for level in Level::ALL {
            if let Some(ok) = evidence.at(level) {
                self.levels[level.index()].fall_rise(&seen, ok, s);
            }
        }
        // Degraded is a partial failure of a route that is otherwise up: a
        // down route's failures do not count, and it comes back with clean
        // windows (fail-back after an outage waits for `rise`, not for the
        // windows to drain).
        if self.healthy() == Some(false) {
            for l in &mut self.levels {
                l.recent.clear();
                l.degraded = false;
            }
        } else {
            for level in Level::ALL {
                if let Some(ok) = evidence.at(level) {
                    self.levels[level.index()].judge_degraded(!ok, s);
                }
            }
        }
        self.last = Some(seen);
        match (was_out, self.out(degraded_moves_traffic)) {
            (false, true) => self.went_down(now, s),
            (true, false) => self.came_back(now, s),
            _ => {}
        }
        let healthy = self.healthy();
        Changed {
            healthy: (healthy != was_healthy).then_some(healthy).flatten(),
            degraded: (self.degraded() != was_degraded).then_some(self.degraded()),
        }
    }

    /// Out of traffic on its own account: down, or degraded where that
    /// moves traffic. Entering it is a down (a flap when recent); leaving
    /// it is a return, held after repeated flaps.
    fn out(&self, degraded_moves_traffic: bool) -> bool {
        self.healthy() == Some(false) || (degraded_moves_traffic && self.degraded())
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
