//! What each route-table [`Event`] does: the log line, the counters, the
//! incident window opened or closed, the early probe woken, and after a
//! fail-back to the proxy, the closing of the target's direct tunnels.
//!
//! Reacts to events; never decides health. The events come from the route
//! table, and nothing here observes a probe or a connection or changes a
//! route's state.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Runtime, lock};
use crate::health::Event;
use crate::incidents::Change;
use crate::reason::FailureReason;

impl Runtime {
    /// Turns table events into logs, counters, incident windows, early
    /// probes and fail-back closes.
    pub(super) fn apply(&self, events: &[Event]) {
        for e in events {
            match e {
                Event::RouteHealth {
                    target,
                    route,
                    healthy,
                    preferred,
                    cause,
                    held_for,
                } => self.route_health(
                    target,
                    route,
                    *healthy,
                    *preferred,
                    cause.as_ref(),
                    *held_for,
                ),
                Event::Failover {
                    target,
                    from,
                    to,
                    down,
                } => self.failover(target, from, to, *down),
                Event::Degraded {
                    target,
                    route,
                    degraded,
                    failures,
                    window,
                    level,
                    preferred,
                    cause,
                } => self.degraded(
                    target,
                    route,
                    *degraded,
                    (*failures, *window, *level),
                    *preferred,
                    cause.as_ref(),
                ),
                Event::AddressesDown {
                    target,
                    route,
                    down,
                } => {
                    if down.is_empty() {
                        tracing::info!(target = %target, route = %route, "every address of the proxy's name works again");
                    } else {
                        tracing::warn!(target = %target, route = %route, down = %down.join(", "), "some addresses of the proxy's name fail: the route is degraded; app connections try the others first");
                    }
                    self.publish_target(target);
                }
                Event::ProbeWanted { target, route } => {
                    if let Some(p) = lock(&self.pairs).get(&(target.clone(), route.clone())) {
                        p.wake.notify_one();
                    }
                }
                Event::OverrideExpired { target, previous } => {
                    tracing::warn!(target = %target, previous = ?previous, "operator override expired; health decides the route again");
                    self.publish_target(target);
                }
            }
        }
    }

    fn route_health(
        &self,
        target: &str,
        route: &str,
        healthy: bool,
        preferred: bool,
        cause: Option<&crate::health::Seen>,
        held_for: Option<Duration>,
    ) {
        let wall = SystemTime::now();
        if !healthy {
            let (reason, detail) = cause.map_or((FailureReason::Io, String::new()), |c| {
                (c.reason, c.detail.clone())
            });
            tracing::warn!(target = %target, route = %route, reason = %reason, detail = %detail, "route unhealthy");
            if preferred {
                self.open_incident(target, route, reason, &detail, wall);
            }
            return;
        }
        match held_for {
            Some(h) => {
                tracing::info!(target = %target, route = %route, held_seconds = h.as_secs_f64(), "route healthy; held down before traffic returns (it flapped)")
            }
            None => tracing::info!(target = %target, route = %route, "route healthy"),
        }
        if preferred {
            if let Some(Change::Closed(w)) =
                self.with_incidents(|log| log.close_target(target, wall))
            {
                tracing::info!(incident = w.id, "{}", w.render());
            }
        }
    }

    /// Opens the target's incident window (the preferred route failed or
    /// degraded) and logs it when it is new.
    fn open_incident(
        &self,
        target: &str,
        route: &str,
        reason: FailureReason,
        detail: &str,
        wall: SystemTime,
    ) {
        let change =
            self.with_incidents(|log| log.open_target(target, route, reason, detail, wall));
        if let Change::Opened(w) = change {
            tracing::warn!(incident = w.id, "{}", w.render());
        }
    }

    /// A partial failure: logged, exported, and (on the preferred route) an
    /// incident window, like a route going down.
    fn degraded(
        &self,
        target: &str,
        route: &str,
        degraded: bool,
        (failures, window, level): (u32, u32, crate::health::Level),
        preferred: bool,
        cause: Option<&crate::health::Seen>,
    ) {
        self.metrics.route_degraded(
            target,
            route,
            degraded || self.addresses_down(target, route),
        );
        let wall = SystemTime::now();
        if degraded {
            let (reason, detail) = cause.map_or((FailureReason::Io, String::new()), |c| {
                (c.reason, c.detail.clone())
            });
            tracing::warn!(target = %target, route = %route, failures, window, level = %level, reason = %reason, detail = %detail, "route degraded: {failures} of the last {window} attempts at the {level} level failed");
            if preferred {
                self.open_incident(target, route, reason, &detail, wall);
            }
            return;
        }
        let healthy = lock(&self.table)
            .targets
            .get(target)
            .and_then(|t| t.route(route))
            .is_some_and(|r| r.healthy() != Some(false));
        if !healthy {
            return; // it went down: that is what the log and incidents say
        }
        tracing::info!(target = %target, route = %route, failures, window, level = %level, "route no longer degraded");
        if preferred {
            if let Some(Change::Closed(w)) =
                self.with_incidents(|log| log.close_target(target, wall))
            {
                tracing::info!(incident = w.id, "{}", w.render());
            }
        }
    }

    fn addresses_down(&self, target: &str, route: &str) -> bool {
        lock(&self.table)
            .targets
            .get(target)
            .and_then(|t| t.route(route))
            .is_some_and(|r| !r.addresses_down.is_empty())
    }

    fn failover(&self, target: &str, from: &str, to: &str, down: bool) {
        if down {
            tracing::error!(target = %target, from = %from, to = %to, "every route is down; traffic stays on the preferred route");
        } else {
            tracing::warn!(target = %target, from = %from, to = %to, "active route changed");
        }
        self.metrics.failover(target, from, to);
        self.publish_target(target);
        let config = self.config();
        let back_on_proxy = from == crate::config::Route::DIRECT
            && config
                .target(target)
                .and_then(|t| t.routes.iter().find(|r| r.name == to))
                .is_some_and(|r| !r.is_direct());
        if back_on_proxy {
            self.schedule_failback_close(target, config.forward.failback_grace);
        }
    }

    /// After `grace`, closes the target's direct tunnels if its traffic is
    /// still on a proxy route then (a tunnel left open direct after the
    /// proxy is back is a compliance leak).
    fn schedule_failback_close(&self, target: &str, grace: Option<Duration>) {
        let Some(grace) = grace else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let direct = self.direct.clone();
        let target = target.to_string();
        let table = Arc::downgrade(&self.table);
        handle.spawn(async move {
            tokio::time::sleep(grace).await;
            let still_proxy = table.upgrade().is_some_and(|t| {
                lock(&t)
                    .active_route(&target)
                    .is_some_and(|r| r != crate::config::Route::DIRECT)
            });
            if still_proxy {
                let closed = direct.close(&target);
                if closed > 0 {
                    tracing::info!(target = %target, closed, grace_seconds = grace.as_secs_f64(), "closed direct tunnels after fail-back to the proxy");
                }
            }
        });
    }
}
