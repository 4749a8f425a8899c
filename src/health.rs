//! Health: per target × route, `fall` consecutive failures make a route
//! unhealthy and `rise` consecutive successes healthy again; a route that
//! flaps is held down for a growing time (doubling, capped) before traffic
//! may return to it. From that, the route table: each target's active route
//! is the first eligible route in its preference order, or the preferred
//! one when none is (the target is then down).
//!
//! Pure state: time comes in as arguments, nothing here sleeps, dials or
//! logs. Callers turn the returned [`Event`]s into logs, metrics and
//! incident windows.

use std::collections::BTreeMap;
use std::time::Duration;

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

/// An operator's override of route choice for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Force {
    /// Normal: health decides.
    Auto,
    /// Only proxy routes (health decides among them).
    Proxy,
    /// Only `direct` (where the target allows it).
    Direct,
}

/// The health of one target × route.
#[derive(Debug, Clone)]
pub struct RouteHealth {
    /// The route's name.
    pub route: String,
    /// True for the direct route.
    pub direct: bool,
    /// `None` until the first probe; then the state after hysteresis.
    pub healthy: Option<bool>,
    /// Successes in a row.
    pub consecutive_ok: u32,
    /// Failures in a row.
    pub consecutive_fail: u32,
    /// The last probe (or traffic) outcome.
    pub last: Option<ProbeOutcome>,
    /// The failure that began the current run of failures: the cause.
    pub first_failure: Option<ProbeOutcome>,
    /// Downs within the flap window.
    pub flaps: u32,
    /// When it last went down.
    pub last_down: Option<Instant>,
    /// Not eligible for traffic before this, although healthy.
    pub held_until: Option<Instant>,
}

/// A change worth a log line, a metric and maybe an incident.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A route crossed the fall or rise threshold (or got its first verdict).
    RouteHealth {
        /// Target.
        target: String,
        /// Route.
        route: String,
        /// The new state.
        healthy: bool,
        /// True when it is the target's preferred (first) route.
        preferred: bool,
        /// For a route going down: the failure that started it.
        cause: Option<Box<ProbeOutcome>>,
        /// For a route coming back: how long it is held before traffic returns.
        held_for: Option<Duration>,
    },
    /// A target's active route changed.
    Failover {
        /// Target.
        target: String,
        /// The route traffic used.
        from: String,
        /// The route traffic uses now.
        to: String,
        /// True when no route is eligible (traffic stays on the preferred one).
        down: bool,
    },
}

impl RouteHealth {
    fn new(route: &str, direct: bool) -> Self {
        Self {
            route: route.to_string(),
            direct,
            healthy: None,
            consecutive_ok: 0,
            consecutive_fail: 0,
            last: None,
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

    /// Feeds one outcome; returns `Some(healthy)` when the state changed,
    /// with the hold applied to a route coming back.
    fn observe(&mut self, o: &ProbeOutcome, now: Instant, s: &HealthSettings) -> Option<bool> {
        if o.ok {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_fail = 0;
        } else {
            if self.consecutive_fail == 0 {
                self.first_failure = Some(o.clone());
            }
            self.consecutive_fail = self.consecutive_fail.saturating_add(1);
            self.consecutive_ok = 0;
        }
        self.last = Some(o.clone());
        let next = match self.healthy {
            // The first verdict needs no streak: there is nothing to protect yet.
            None => Some(o.ok),
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

/// The routes of one target, in preference order, and the active one.
#[derive(Debug, Clone)]
pub struct TargetHealth {
    /// Per route, in preference order.
    pub routes: Vec<RouteHealth>,
    /// Index of the active route.
    pub active: usize,
    /// True when no route is eligible.
    pub down: bool,
    /// The operator's override.
    pub force: Force,
}

impl TargetHealth {
    /// Routes `(name, is_direct)` in preference order.
    pub fn new(routes: &[(String, bool)]) -> Self {
        Self {
            routes: routes
                .iter()
                .map(|(n, d)| RouteHealth::new(n, *d))
                .collect(),
            active: 0,
            down: false,
            force: Force::Auto,
        }
    }

    /// The active route's name.
    pub fn active_route(&self) -> &str {
        self.routes
            .get(self.active)
            .map_or("", |r| r.route.as_str())
    }

    fn allowed(&self, r: &RouteHealth) -> bool {
        match self.force {
            Force::Auto => true,
            Force::Proxy => !r.direct,
            Force::Direct => r.direct,
        }
    }

    /// Re-derives the active route; returns the previous one when it changed.
    fn recompute(&mut self, now: Instant) -> Option<usize> {
        let eligible = self
            .routes
            .iter()
            .position(|r| self.allowed(r) && r.eligible(now));
        let fallback = self
            .routes
            .iter()
            .position(|r| self.allowed(r))
            .unwrap_or(0);
        self.down = eligible.is_none();
        let next = eligible.unwrap_or(fallback);
        if next == self.active {
            return None;
        }
        let prev = self.active;
        self.active = next;
        Some(prev)
    }
}

/// Health of every target × route.
#[derive(Debug, Clone)]
pub struct HealthBook {
    /// Hysteresis settings.
    pub settings: HealthSettings,
    /// Per target, by name.
    pub targets: BTreeMap<String, TargetHealth>,
}

impl HealthBook {
    /// An empty book.
    pub fn new(settings: HealthSettings) -> Self {
        Self {
            settings,
            targets: BTreeMap::new(),
        }
    }

    /// Feeds one outcome of `target` over `route`; returns what changed.
    pub fn observe(&mut self, outcome: &ProbeOutcome, now: Instant) -> Vec<Event> {
        let settings = self.settings;
        let Some(t) = self.targets.get_mut(&outcome.target) else {
            return Vec::new();
        };
        let Some(index) = t.routes.iter().position(|r| r.route == outcome.route) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        let route = &mut t.routes[index];
        if let Some(healthy) = route.observe(outcome, now, &settings) {
            events.push(Event::RouteHealth {
                target: outcome.target.clone(),
                route: route.route.clone(),
                healthy,
                preferred: index == 0,
                cause: (!healthy)
                    .then(|| route.first_failure.clone().map(Box::new))
                    .flatten(),
                held_for: route.held_until.map(|h| h.duration_since(now)),
            });
        }
        events.extend(Self::recompute_target(&outcome.target, t, now));
        events
    }

    /// Feeds one outcome seen on app traffic. A failure counts like a probe's.
    /// A success only proves the path up to the tunnel, so it counts only
    /// against failures that lie there (resolve, connect, the proxy's CONNECT
    /// reply, our policy): it must not cancel a probe's TLS or HTTP failure.
    pub fn observe_traffic(&mut self, outcome: &ProbeOutcome, now: Instant) -> Vec<Event> {
        if outcome.ok {
            let last_reason = self
                .targets
                .get(&outcome.target)
                .and_then(|t| t.routes.iter().find(|r| r.route == outcome.route))
                .and_then(|r| r.last.as_ref())
                .map(|o| o.reason);
            let tunnel_level = |r: FailureReason| {
                r.is_proxy_fault()
                    || matches!(
                        r,
                        FailureReason::Ok
                            | FailureReason::Resolve
                            | FailureReason::Connect
                            | FailureReason::PolicyDenied
                    )
            };
            if last_reason.is_some_and(|r| !tunnel_level(r)) {
                return Vec::new();
            }
        }
        self.observe(outcome, now)
    }

    /// Re-derives every target's active route (holds expire with time alone).
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for (name, t) in &mut self.targets {
            events.extend(Self::recompute_target(name, t, now));
        }
        events
    }

    /// Sets the operator's override for `target`.
    pub fn force(&mut self, target: &str, force: Force, now: Instant) -> Vec<Event> {
        let Some(t) = self.targets.get_mut(target) else {
            return Vec::new();
        };
        t.force = force;
        Self::recompute_target(target, t, now).into_iter().collect()
    }

    fn recompute_target(name: &str, t: &mut TargetHealth, now: Instant) -> Option<Event> {
        let prev = t.recompute(now)?;
        Some(Event::Failover {
            target: name.to_string(),
            from: t.routes[prev].route.clone(),
            to: t.active_route().to_string(),
            down: t.down,
        })
    }

    /// The active route of `target`.
    pub fn active_route(&self, target: &str) -> Option<&str> {
        self.targets.get(target).map(TargetHealth::active_route)
    }

    /// True when `target` over `route` needs watching closely.
    pub fn unsettled(&self, target: &str, route: &str, now: Instant) -> bool {
        self.targets
            .get(target)
            .and_then(|t| t.routes.iter().find(|r| r.route == route))
            .is_none_or(|r| r.unsettled(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(route: &str, ok: bool) -> ProbeOutcome {
        if ok {
            ProbeOutcome::observed("apns", route, FailureReason::Ok, "HTTP 403")
        } else {
            ProbeOutcome::observed(
                "apns",
                route,
                FailureReason::ProxyUpstreamError,
                "CONNECT -> 502 Bad Gateway",
            )
        }
    }

    fn book() -> HealthBook {
        let mut b = HealthBook::new(HealthSettings {
            fall: 2,
            rise: 2,
            hold_down: Duration::from_secs(10),
            hold_down_max: Duration::from_secs(60),
        });
        b.targets.insert(
            "apns".into(),
            TargetHealth::new(&[("provider".into(), false), ("direct".into(), true)]),
        );
        b
    }

    fn failovers(events: &[Event]) -> Vec<(String, String)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Failover { from, to, .. } => Some((from.clone(), to.clone())),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn fall_rise_and_failover_follow_the_thresholds_exactly() {
        let mut b = book();
        let t0 = Instant::now();
        assert!(
            b.observe(&outcome("direct", true), t0)
                .iter()
                .all(|e| !matches!(e, Event::Failover { .. }))
        );
        // First verdict on the proxy is immediate.
        let e = b.observe(&outcome("provider", true), t0);
        assert!(matches!(&e[..], [Event::RouteHealth { healthy: true, .. }]));
        assert_eq!(b.active_route("apns"), Some("provider"));
        // One failure is not enough.
        assert!(
            b.observe(&outcome("provider", false), t0 + Duration::from_secs(2))
                .is_empty()
        );
        assert_eq!(b.active_route("apns"), Some("provider"));
        // The second one is: down, and traffic moves to direct.
        let e = b.observe(&outcome("provider", false), t0 + Duration::from_secs(4));
        assert_eq!(failovers(&e), [("provider".into(), "direct".into())]);
        match &e[0] {
            Event::RouteHealth {
                healthy,
                preferred,
                cause,
                ..
            } => {
                assert!(!healthy && *preferred);
                assert_eq!(
                    cause.as_ref().map(|c| c.reason),
                    Some(FailureReason::ProxyUpstreamError)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // One success is not enough to come back; two are, with no hold the first time.
        assert!(
            failovers(&b.observe(&outcome("provider", true), t0 + Duration::from_secs(6)))
                .is_empty()
        );
        let e = b.observe(&outcome("provider", true), t0 + Duration::from_secs(8));
        assert_eq!(failovers(&e), [("direct".into(), "provider".into())]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_route_is_held_down_for_doubling_times() {
        let mut b = book();
        let mut now = Instant::now();
        let step = Duration::from_secs(1);
        b.observe(&outcome("direct", true), now);
        let cycle = |b: &mut HealthBook, now: &mut Instant| -> Option<Duration> {
            for ok in [false, false, true, true] {
                *now += step;
                let events = b.observe(&outcome("provider", ok), *now);
                for e in events {
                    if let Event::RouteHealth {
                        healthy: true,
                        held_for,
                        ..
                    } = e
                    {
                        return held_for;
                    }
                }
            }
            None
        };
        b.observe(&outcome("provider", true), now);
        assert_eq!(cycle(&mut b, &mut now), None, "first down: no hold");
        assert_eq!(cycle(&mut b, &mut now), Some(Duration::from_secs(10)));
        assert_eq!(
            b.active_route("apns"),
            Some("direct"),
            "held: traffic stays direct"
        );
        assert!(b.tick(now + Duration::from_secs(9)).is_empty());
        let e = b.tick(now + Duration::from_secs(10));
        assert_eq!(failovers(&e), [("direct".into(), "provider".into())]);
        assert_eq!(cycle(&mut b, &mut now), Some(Duration::from_secs(20)));
        assert_eq!(cycle(&mut b, &mut now), Some(Duration::from_secs(40)));
        assert_eq!(
            cycle(&mut b, &mut now),
            Some(Duration::from_secs(60)),
            "capped"
        );
        // Quiet for longer than the window: the count starts over.
        now += Duration::from_secs(600);
        assert_eq!(cycle(&mut b, &mut now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_route_down_the_target_is_down_on_its_preferred_route() {
        let mut b = book();
        let now = Instant::now();
        let e = b.observe(&outcome("provider", false), now);
        assert_eq!(
            failovers(&e),
            [("provider".into(), "direct".into())],
            "direct is not known bad yet"
        );
        let e = b.observe(&outcome("direct", false), now);
        assert_eq!(b.active_route("apns"), Some("provider"));
        assert!(b.targets["apns"].down);
        assert!(
            matches!(e.last(), Some(Event::Failover { down: true, .. })),
            "{e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_success_does_not_cancel_a_tls_failure_behind_the_tunnel() {
        let mut b = book();
        let now = Instant::now();
        b.observe(&outcome("provider", true), now);
        let tls = ProbeOutcome::observed(
            "apns",
            "provider",
            FailureReason::TlsUntrusted,
            "intercepted",
        );
        b.observe(&tls, now);
        let tunnel_ok = ProbeOutcome::observed(
            "apns",
            "provider",
            FailureReason::Ok,
            "app tunnel established",
        );
        assert!(b.observe_traffic(&tunnel_ok, now).is_empty());
        assert_eq!(
            b.targets["apns"].routes[0].consecutive_fail, 1,
            "the probe's failure still counts"
        );
        let e = b.observe(&tls, now);
        assert_eq!(failovers(&e), [("provider".into(), "direct".into())]);
        // A tunnel failure on traffic counts at once.
        let mut b = book();
        b.observe(&outcome("provider", true), now);
        b.observe_traffic(&outcome("provider", false), now);
        let e = b.observe_traffic(&outcome("provider", false), now);
        assert_eq!(failovers(&e), [("provider".into(), "direct".into())]);
    }

    #[tokio::test(start_paused = true)]
    async fn forcing_direct_or_proxy_overrides_health() {
        let mut b = book();
        let now = Instant::now();
        b.observe(&outcome("provider", true), now);
        b.observe(&outcome("direct", true), now);
        assert_eq!(
            failovers(&b.force("apns", Force::Direct, now)),
            [("provider".into(), "direct".into())]
        );
        b.observe(&outcome("provider", true), now);
        assert_eq!(b.active_route("apns"), Some("direct"));
        assert_eq!(
            failovers(&b.force("apns", Force::Auto, now)),
            [("direct".into(), "provider".into())]
        );
    }
}
