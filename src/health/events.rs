//! What the route table is told and what it tells: an [`Observation`] in
//! (a probe's outcome, an app connection's [`TrafficResult`] for a
//! [`HostPort`]), [`Event`]s out (a verdict changed, traffic moved, a
//! probe is wanted). Plain data; the table's judgement is in the parent
//! module.

use std::time::Duration;

use super::{Level, Override, Seen};
use crate::dial::addresses::AddressCheck;
use crate::probe::ProbeOutcome;
use crate::reason::FailureReason;

/// A destination, compared as the table compares them: host name in lower
/// case without a trailing dot, and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or address literal.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl HostPort {
    /// `host:port`, normalised.
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
        }
    }
}

/// What one app connection learned about a route, up to its tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficResult {
    /// The target the destination belongs to.
    pub target: String,
    /// The route tried.
    pub route: String,
    /// Where the app asked to go.
    pub destination: HostPort,
    /// `None` when the tunnel stood; else the reason and its detail.
    pub failure: Option<(FailureReason, String)>,
}

impl TrafficResult {
    /// True when `other` tells the table the same thing: the same target,
    /// route, destination and outcome (the detail's wording aside).
    pub fn says_the_same(&self, other: &Self) -> bool {
        self.target == other.target
            && self.route == other.route
            && self.destination == other.destination
            && self.failure.as_ref().map(|(r, _)| *r) == other.failure.as_ref().map(|(r, _)| *r)
    }
}

/// One thing the table is told.
#[derive(Debug, Clone)]
pub enum Observation {
    /// A probe's outcome.
    Probe(Box<ProbeOutcome>),
    /// An app connection's result.
    Traffic(TrafficResult),
}

/// A change worth a log line, a metric, an incident or a probe.
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
        cause: Option<Seen>,
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
        /// True when traffic left `direct` for a proxy route: the target's
        /// direct tunnels are to be closed after the fail-back grace.
        back_on_proxy: bool,
    },
    /// Too many of a route's latest attempts failed (or, cleared, few enough
    /// do again): a partial failure that fall/rise does not see.
    Degraded {
        /// Target.
        target: String,
        /// Route.
        route: String,
        /// The new state.
        degraded: bool,
        /// Failures among the latest attempts.
        failures: u32,
        /// How many attempts the window holds.
        window: u32,
        /// The level whose window judged it (the worst one).
        level: Level,
        /// True when it is the target's preferred (first) route.
        preferred: bool,
        /// For a route turning degraded: its latest failure.
        cause: Option<Seen>,
        /// The route's fall/rise verdict after this observation (a route
        /// that cleared because it went down is not "degraded no more").
        healthy: Option<bool>,
    },
    /// The set of a proxy's addresses that fail their check changed (one bad
    /// node behind the proxy's name): the route is degraded while any does,
    /// not down; app connections try the others first.
    AddressesDown {
        /// Target.
        target: String,
        /// Route.
        route: String,
        /// The failing addresses with what happened, empty when all work again.
        down: Vec<AddressCheck>,
    },
    /// App traffic failed on a route in a way that does not count for its
    /// health: probe the route now to find out whether the route is at fault.
    ProbeWanted {
        /// Target.
        target: String,
        /// Route.
        route: String,
    },
    /// An operator's override reached its expiry: health decides again.
    OverrideExpired {
        /// Target.
        target: String,
        /// The override that ended.
        previous: Override,
    },
}
