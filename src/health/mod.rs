//! Health and the route table: per target × route, fall/rise hysteresis and
//! hold-down ([`route`]); per target, the active route (the first eligible
//! route in preference order, or the preferred one when none is: the target
//! is then down) and the operator's override.
//!
//! The table is pure: it is fed typed [`Observation`]s and the time, and
//! returns [`Event`]s. No clock reads, no I/O, no locks inside. One task
//! owns it (`sidecar::runtime`'s owner), turns events into logs, metrics,
//! incident windows and early probes, and publishes a [`Snapshot`] of it.
//!
//! Which observations move a route's health (DESIGN.md), and at which
//! [`Level`]: every probe, at each level it reached; app traffic at the
//! route level only, and only with a failure about the route itself (see
//! [`FailureReason::is_about_route`]) or a result on the target's own probe
//! destination. Other traffic failures only ask for a probe: no destination
//! an app asks for can take a route down, and no tunnel that stands can
//! hide a failing TLS handshake or HTTP answer. This process's own
//! exhaustion (`local_exhausted`) is evidence of nothing.
//!
//! [`history`] keeps the last hour per target × route (pure, bounded), fed
//! by the same owner with each counted probe.

pub(crate) mod events;
pub mod history;
pub(crate) mod level;
pub(crate) mod route;
pub(crate) mod snapshot;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

pub use events::{Event, HostPort, Observation, TrafficResult};
pub use level::{Evidence, Level};
pub use route::{Changed, HealthSettings, LevelHealth, RouteHealth, RouteState, Seen, Source};
pub use snapshot::{CheckRoute, PairSchedule, Snapshot};

use crate::dial::addresses::AddressCheck;
use crate::probe::ProbeOutcome;
use crate::reason::FailureReason;

/// An operator's override of route choice for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Override {
    /// Normal: health decides.
    Auto,
    /// Only proxy routes (health decides among them).
    Proxy,
    /// Only `direct` (where the target allows it).
    Direct,
}

impl Override {
    /// Whether a route (`direct` or not) may carry traffic under this
    /// override. The one place the override filter is written.
    pub fn allows(self, direct: bool) -> bool {
        match self {
            Self::Auto => true,
            Self::Proxy => !direct,
            Self::Direct => direct,
        }
    }

    /// The word users write and read (`auto`, `proxy`, `direct`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Proxy => "proxy",
            Self::Direct => "direct",
        }
    }
}

/// What the table needs to know of a target.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// The target's name.
    pub name: String,
    /// Its routes `(name, is_direct)`, in preference order.
    pub routes: Vec<(String, bool)>,
    /// Where its probe goes: traffic there speaks for the route as a probe does.
    pub probe: HostPort,
    /// A degraded route loses traffic (and is held when it clears).
    pub failover_on_degraded: bool,
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
    pub route_override: Override,
    /// When the override ends by itself (`None`: when changed).
    pub override_until: Option<Instant>,
    /// Where the target's probe goes.
    pub probe: HostPort,
    /// A degraded route loses traffic.
    pub failover_on_degraded: bool,
}

impl TargetHealth {
    fn new(spec: &TargetSpec) -> Self {
        Self {
            routes: spec
                .routes
                .iter()
                .map(|(n, d)| RouteHealth::new(n, *d))
                .collect(),
            active: 0,
            down: false,
            route_override: Override::Auto,
            override_until: None,
            probe: spec.probe.clone(),
            failover_on_degraded: spec.failover_on_degraded,
        }
    }

    /// The active route's name.
    pub fn active_route(&self) -> &str {
        self.routes
            .get(self.active)
            .map_or("", |r| r.route.as_str())
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&RouteHealth> {
        self.routes.iter().find(|r| r.route == name)
    }

    fn allowed(&self, r: &RouteHealth) -> bool {
        self.route_override.allows(r.direct)
    }

    /// The routes app traffic tries, in order: the active route first, then
    /// the others in preference order; the operator's override applied.
    pub fn routes_to_try(&self) -> Vec<String> {
        let allowed = self.routes.iter().filter(|r| self.allowed(r));
        let (active, rest): (Vec<_>, Vec<_>) =
            allowed.partition(|r| r.route == self.active_route());
        active
            .into_iter()
            .chain(rest)
            .map(|r| r.route.clone())
            .collect()
    }

    /// The route that should be active at `now`, and whether the target
    /// is down (no route eligible).
    fn next_active(&self, now: Instant) -> (usize, bool) {
        let eligible = self
            .routes
            .iter()
            .position(|r| self.allowed(r) && r.eligible_for(now, self.failover_on_degraded));
        let fallback = self
            .routes
            .iter()
            .position(|r| self.allowed(r))
            .unwrap_or(0);
        (eligible.unwrap_or(fallback), eligible.is_none())
    }

    /// Whether [`recompute`](Self::recompute) at `now` would change anything.
    fn would_change(&self, now: Instant) -> bool {
        self.next_active(now) != (self.active, self.down)
    }

    /// Re-derives the active route; returns the previous one when it changed.
    fn recompute(&mut self, now: Instant) -> Option<usize> {
        let (next, down) = self.next_active(now);
        self.down = down;
        if next == self.active {
            return None;
        }
        let prev = self.active;
        self.active = next;
        Some(prev)
    }

    /// Whether a traffic result counts for the route's health (at the
    /// route level): a failure about the route itself, or any result on
    /// the probe's own destination. Our own policy and our own exhaustion
    /// never count.
    fn counts(&self, t: &TrafficResult) -> bool {
        let on_probe_destination = t.destination == self.probe;
        match &t.failure {
            Some((FailureReason::PolicyDenied | FailureReason::LocalExhausted, _)) => false,
            Some((reason, _)) => reason.is_about_route() || on_probe_destination,
            None => on_probe_destination,
        }
    }
}

/// Where an observation landed: what its events say about it.
#[derive(Debug, Clone, Copy)]
struct Where<'a> {
    target: &'a str,
    /// The target's preferred (first) route.
    preferred: bool,
    now: Instant,
}

/// Health of every target × route, and each target's active route.
///
/// Cloned for every snapshot the owner publishes, so each target is behind
/// an `Arc`: a clone shares them, and a change copies only the target it
/// changes (`Arc::make_mut`).
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Hysteresis settings.
    pub settings: HealthSettings,
    /// Per target, by name.
    pub targets: BTreeMap<String, Arc<TargetHealth>>,
}

impl RouteTable {
    /// A table for `targets`, every route not yet observed.
    pub fn new(settings: HealthSettings, targets: &[TargetSpec]) -> Self {
        Self {
            settings,
            targets: targets
                .iter()
                .map(|s| (s.name.clone(), Arc::new(TargetHealth::new(s))))
                .collect(),
        }
    }

    /// A table for a new generation's `targets`: every (target, route) pair
    /// that exists in both keeps its state (never back to "not yet observed",
    /// which is eligible: a secret rotation must not send traffic back to a
    /// broken proxy), and so does each kept target's override. Active routes
    /// are re-derived at the next [`tick`](Self::tick).
    pub fn rebuild(&self, settings: HealthSettings, targets: &[TargetSpec]) -> Self {
        let mut next = Self::new(settings, targets);
        for (name, t) in &mut next.targets {
            let Some(old) = self.targets.get(name) else {
                continue;
            };
            let t = Arc::make_mut(t);
            for r in &mut t.routes {
                if let Some(before) = old.route(&r.route) {
                    let direct = r.direct;
                    *r = before.clone();
                    r.direct = direct;
                }
            }
            t.route_override = old.route_override;
            t.override_until = old.override_until;
            t.active = t
                .routes
                .iter()
                .position(|r| r.route == old.active_route())
                .unwrap_or(0);
        }
        next
    }

    /// Feeds one observation at `now`; returns what changed.
    pub fn observe(&mut self, now: Instant, obs: Observation) -> Vec<Event> {
        let settings = self.settings;
        let (target, route_name) = match &obs {
            Observation::Probe(o) => (o.target.clone(), o.route.clone()),
            Observation::Traffic(t) => (t.target.clone(), t.route.clone()),
        };
        let Some(t) = self.targets.get_mut(&target) else {
            return Vec::new();
        };
        let Some(index) = t.routes.iter().position(|r| r.route == route_name) else {
            return Vec::new();
        };
        let t = Arc::make_mut(t);
        let mut events = Vec::new();
        let counted = match obs {
            Observation::Probe(o) => {
                Some(Self::probe(&target, &mut t.routes[index], *o, &mut events))
            }
            Observation::Traffic(tr) => Self::traffic(t, tr, &mut events),
        };
        let Some((seen, evidence)) = counted else {
            return events;
        };
        let moves = t.failover_on_degraded;
        let route = &mut t.routes[index];
        let changed = route.observe(seen.clone(), evidence, now, &settings, moves);
        let at = Where {
            target: &target,
            preferred: index == 0,
            now,
        };
        events.extend(Self::verdicts(at, route, changed, seen, &settings));
        events.extend(Self::recompute_target(&target, t, now));
        events
    }

    /// What a probe says, and what it proves; its address checks and the
    /// outcome itself are kept (for status) whatever it proves.
    fn probe(
        target: &str,
        route: &mut RouteHealth,
        o: ProbeOutcome,
        events: &mut Vec<Event>,
    ) -> (Seen, Evidence) {
        let evidence = Evidence::of_probe(o.reason, o.failed_phase);
        if evidence != Evidence::Nothing {
            events.extend(Self::addresses(target, route, &o));
        }
        let seen = Seen {
            reason: o.reason,
            detail: o.detail.clone(),
            source: Source::Probe,
            level: evidence.failed().unwrap_or(Level::Answer),
        };
        route.last_probe = Some(o);
        (seen, evidence)
    }

    /// What an app connection says, when it counts (at the route level);
    /// any failure but our own policy's or exhaustion asks for a probe.
    fn traffic(
        t: &TargetHealth,
        tr: TrafficResult,
        events: &mut Vec<Event>,
    ) -> Option<(Seen, Evidence)> {
        let wakes = tr.failure.as_ref().is_some_and(|(r, _)| {
            !matches!(
                r,
                FailureReason::PolicyDenied | FailureReason::LocalExhausted
            )
        });
        if wakes {
            // Confirm (or clear) at once: detection must not wait for the
            // interval.
            events.push(Event::ProbeWanted {
                target: tr.target.clone(),
                route: tr.route.clone(),
            });
        }
        if !t.counts(&tr) {
            return None;
        }
        let evidence = Evidence::of_traffic(tr.failure.as_ref().map(|(r, _)| *r));
        let (reason, detail) = tr
            .failure
            .unwrap_or((FailureReason::Ok, "app tunnel established".into()));
        let seen = Seen {
            reason,
            detail,
            source: Source::Traffic,
            level: Level::Route,
        };
        Some((seen, evidence))
    }

    /// The events for what one observation changed in a route's verdicts.
    fn verdicts(
        at: Where<'_>,
        route: &RouteHealth,
        changed: Changed,
        seen: Seen,
        settings: &HealthSettings,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some(degraded) = changed.degraded {
            let (level, failures, _) = route.worst_window();
            events.push(Event::Degraded {
                target: at.target.to_string(),
                route: route.route.clone(),
                degraded,
                failures,
                window: settings.degraded_window,
                level,
                preferred: at.preferred,
                cause: (degraded && !seen.ok()).then_some(seen),
                healthy: route.healthy(),
            });
        }
        if let Some(healthy) = changed.healthy {
            events.push(Event::RouteHealth {
                target: at.target.to_string(),
                route: route.route.clone(),
                healthy,
                preferred: at.preferred,
                cause: if healthy {
                    None
                } else {
                    route.cause().cloned()
                },
                held_for: route.held_until.map(|h| h.duration_since(at.now)),
            });
        }
        events
    }

    /// Takes a probe's per-address checks of the proxy's name; an event
    /// when the set of failing addresses changed.
    fn addresses(target: &str, route: &mut RouteHealth, o: &ProbeOutcome) -> Option<Event> {
        let down: Vec<AddressCheck> = o
            .proxy_addresses
            .iter()
            .filter(|c| !c.up)
            .cloned()
            .collect();
        let changed = !down
            .iter()
            .map(|c| c.address)
            .eq(route.addresses_down.iter().map(|c| c.address));
        let event = changed.then(|| Event::AddressesDown {
            target: target.to_string(),
            route: route.route.clone(),
            down: down.clone(),
        });
        route.addresses_down = down;
        event
    }

    /// Re-derives every target's active route: holds and overrides expire
    /// with time alone.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for (name, t) in &mut self.targets {
            let expired = t.override_until.is_some_and(|until| now >= until);
            if !expired && !t.would_change(now) {
                // Left shared with the snapshots that hold it.
                continue;
            }
            let t = Arc::make_mut(t);
            if expired {
                events.push(Event::OverrideExpired {
                    target: name.clone(),
                    previous: t.route_override,
                });
                t.route_override = Override::Auto;
                t.override_until = None;
            }
            events.extend(Self::recompute_target(name, t, now));
        }
        events
    }

    /// Sets the operator's override for `target` until it is changed.
    pub fn set_override(&mut self, target: &str, o: Override, now: Instant) -> Vec<Event> {
        self.apply_override(target, o, now, None)
    }

    /// Sets the operator's override for `target` until `until`, when
    /// [`tick`](Self::tick) ends it by itself (`Auto` has no expiry).
    pub fn override_until(
        &mut self,
        target: &str,
        o: Override,
        now: Instant,
        until: Instant,
    ) -> Vec<Event> {
        self.apply_override(target, o, now, Some(until))
    }

    fn apply_override(
        &mut self,
        target: &str,
        o: Override,
        now: Instant,
        until: Option<Instant>,
    ) -> Vec<Event> {
        let Some(t) = self.targets.get_mut(target) else {
            return Vec::new();
        };
        let t = Arc::make_mut(t);
        t.route_override = o;
        t.override_until = until.filter(|_| o != Override::Auto);
        Self::recompute_target(target, t, now).into_iter().collect()
    }

    fn recompute_target(name: &str, t: &mut TargetHealth, now: Instant) -> Option<Event> {
        let prev = t.recompute(now)?;
        let (from, to) = (&t.routes[prev], &t.routes[t.active]);
        Some(Event::Failover {
            target: name.to_string(),
            from: from.route.clone(),
            to: to.route.clone(),
            down: t.down,
            back_on_proxy: from.direct && !to.direct,
        })
    }

    /// The active route of `target`.
    pub fn active_route(&self, target: &str) -> Option<&str> {
        self.targets.get(target).map(|t| t.active_route())
    }

    /// The active route of `target` and the operator's override.
    pub fn choice(&self, target: &str) -> Option<(String, Override)> {
        let t = self.targets.get(target)?;
        Some((t.active_route().to_string(), t.route_override))
    }

    /// True when `target` over `route` needs watching closely.
    pub fn unsettled(&self, target: &str, route: &str, now: Instant) -> bool {
        self.targets
            .get(target)
            .and_then(|t| t.route(route))
            .is_none_or(|r| r.unsettled(now))
    }
}
