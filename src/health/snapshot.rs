//! What the one owner of route state publishes: the route table, the
//! incident windows, the last hour's cells and the probe schedule as they stood at one moment,
//! behind an `Arc` in a `tokio::sync::watch`. Readers (the forward proxy,
//! the scheduler, `/status`, the page, the metrics) borrow one snapshot per
//! unit of work and read everything from it: the routes to try and the
//! state of each route come from the same moment.
//!
//! Data only: deriving a state or a route order reads the snapshot's own
//! `taken` time, never the clock, and nothing here changes state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Override, RouteState, RouteTable, TargetHealth};
use crate::incidents::IncidentWindow;

/// A woken probe runs no sooner than this after the pair's last one: app
/// traffic failing in a burst must not turn into a burst of probes.
pub const MIN_WAKE_GAP: Duration = Duration::from_secs(1);

/// One target × route's probe loop, as the owner knows it.
#[derive(Debug, Clone)]
pub struct PairSchedule {
    /// When its last probe finished (or the loop started).
    pub last_done: Instant,
    /// Wakes the loop early (a failure seen on app traffic).
    pub wake: Arc<Notify>,
}

/// The route state at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The generation the table was last rebuilt for.
    pub generation: u64,
    /// When it was taken: every state it derives is as of this moment.
    pub taken: Instant,
    /// The route table.
    pub table: RouteTable,
    /// The incident windows, oldest first.
    pub incidents: Arc<Vec<IncidentWindow>>,
    /// Per (target, route): the probe loop's schedule.
    pub schedule: BTreeMap<(String, String), PairSchedule>,
    /// Each target's credential, where it has one.
    pub credentials: Arc<crate::credential::state::Board>,
    /// The last [`CELLS`](super::history::CELLS) cells per target × route
    /// (the page's strip, `/history`): a new `Arc` only when a cell changed.
    pub history: Arc<super::history::History>,
}

/// Whether a credential check of a target can run now, and over which
/// route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckRoute {
    /// Over this route (the active one, working).
    Over(String),
    /// Not yet: the active route has not been probed.
    NotYet,
    /// Skipped: the target has no working route (why, in words).
    Skip(String),
}

impl Snapshot {
    /// The target called `name`.
    pub fn target(&self, name: &str) -> Option<&TargetHealth> {
        self.table.targets.get(name).map(|t| &**t)
    }

    /// Where `target`'s `route` stands.
    pub fn state(&self, target: &str, route: &str) -> Option<RouteState> {
        let r = self.target(target)?.route(route)?;
        Some(r.state(self.taken))
    }

    /// The routes `target`'s traffic tries, in order (active first, the
    /// override applied).
    pub fn routes_to_try(&self, target: &str) -> Option<Vec<String>> {
        self.target(target).map(TargetHealth::routes_to_try)
    }

    /// The route `target`'s traffic uses.
    pub fn active_route(&self, target: &str) -> Option<&str> {
        self.target(target).map(TargetHealth::active_route)
    }

    /// Where `target`'s credential check goes now: its active route while
    /// that works (healthy or degraded); nowhere while it fails.
    pub fn check_route(&self, target: &str) -> CheckRoute {
        let Some(route) = self.active_route(target) else {
            return CheckRoute::Skip("no such target".into());
        };
        match self.state(target, route) {
            Some(RouteState::Healthy | RouteState::Degraded) => CheckRoute::Over(route.to_string()),
            Some(RouteState::NotYetProbed) => CheckRoute::NotYet,
            _ => CheckRoute::Skip(format!(
                "skipped: {target} has no working route ({})",
                self.why_not_working(target)
            )),
        }
    }

    /// Each route of `target` and its state, in words.
    fn why_not_working(&self, target: &str) -> String {
        let Some(t) = self.target(target) else {
            return String::new();
        };
        let parts: Vec<String> = t
            .routes
            .iter()
            .map(|r| format!("{}: {}", r.route, r.state(self.taken).as_str()))
            .collect();
        parts.join(", ")
    }

    /// True when probes found `target`'s `route` broken.
    pub fn broken(&self, target: &str, route: &str) -> bool {
        self.state(target, route) == Some(RouteState::Failing)
    }

    /// True when the pair needs watching closely (failing, recovering,
    /// degraded, held, or unknown).
    pub fn unsettled(&self, target: &str, route: &str) -> bool {
        self.target(target)
            .and_then(|t| t.route(route))
            .is_none_or(|r| r.unsettled(self.taken))
    }

    /// Why `target`'s proxy routes are not in use, for the compliance trail.
    pub fn why_not_proxy(&self, target: &str) -> String {
        let Some(t) = self.target(target) else {
            return "no target".into();
        };
        if t.route_override == Override::Direct {
            return "operator forced direct".into();
        }
        let parts: Vec<String> = t
            .routes
            .iter()
            .filter(|r| !r.direct)
            .map(|r| match (r.state(self.taken), &r.last) {
                (RouteState::Failing, Some(s)) => {
                    format!("{}: unhealthy, {} ({})", r.route, s.reason, s.detail)
                }
                (RouteState::HeldDown, _) => {
                    format!("{}: healthy but held down after flapping", r.route)
                }
                (RouteState::Degraded, _) => format!("{}: degraded", r.route),
                (state, _) => format!("{}: {}", r.route, state.as_str()),
            })
            .collect();
        parts.join("; ")
    }

    /// The pair's waker, if its loop is scheduled.
    pub fn waker(&self, target: &str, route: &str) -> Option<Arc<Notify>> {
        self.pair(target, route).map(|p| p.wake.clone())
    }

    /// How long a woken probe of the pair must still wait at `now` (the
    /// rate limit of woken probes).
    pub fn wake_delay(&self, target: &str, route: &str, now: Instant) -> Duration {
        self.pair(target, route).map_or(Duration::ZERO, |p| {
            MIN_WAKE_GAP.saturating_sub(now.saturating_duration_since(p.last_done))
        })
    }

    /// The pair whose last probe finished longest before `now`, and how
    /// long: what `/healthz` judges the scheduler by.
    pub fn stalest_pair(&self, now: Instant) -> Option<(String, String, Duration)> {
        self.schedule
            .iter()
            .map(|((t, r), p)| {
                let age = now.saturating_duration_since(p.last_done);
                (t.clone(), r.clone(), age)
            })
            .max_by_key(|(_, _, age)| *age)
    }

    fn pair(&self, target: &str, route: &str) -> Option<&PairSchedule> {
        self.schedule.get(&(target.to_string(), route.to_string()))
    }
}
