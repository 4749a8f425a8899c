//! What each route-table [`Event`] does: the log line, the counters, the
//! incident window opened or closed, the early probe woken, and after a
//! fail-back to the proxy, the closing of the target's direct tunnels.
//!
//! Reacts to events; never decides health. The events come from the route
//! table and say what their consumers need (a route's verdict, a fail-back
//! to the proxy): nothing here reads the table back to find out.

use std::time::{Duration, SystemTime};

use super::owner::Owner;
use crate::health::{Event, Level, Seen};
use crate::incidents::Change;
use crate::reason::FailureReason;

impl Owner {
    /// Turns table events into logs, counters, incident windows, early
    /// probes and fail-back closes.
    pub(super) fn apply(&mut self, events: &[Event]) {
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
                    back_on_proxy,
                } => self.failover(target, (from, to), *down, *back_on_proxy),
                Event::Degraded {
                    target,
                    route,
                    degraded,
                    failures,
                    window,
                    level,
                    preferred,
                    cause,
                    healthy,
                } => self.degraded(
                    target,
                    route,
                    (*degraded, *healthy),
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
                Event::ProbeWanted { target, route } => self.wake(target, route),
                Event::OverrideExpired { target, previous } => {
                    tracing::warn!(target = %target, previous = ?previous, "operator override expired; health decides the route again");
                    self.publish_target(target);
                }
            }
        }
    }

    fn route_health(
        &mut self,
        target: &str,
        route: &str,
        healthy: bool,
        preferred: bool,
        cause: Option<&Seen>,
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
            self.close_incident(target, wall);
        }
    }

    /// Closes the target's incident window, if open, and logs it.
    fn close_incident(&mut self, target: &str, wall: SystemTime) {
        if let Some(Change::Closed(w)) = self.incidents.close_target(target, wall) {
            tracing::info!(incident = w.id, "{}", w.render());
            self.incidents_changed();
        }
    }

    /// Opens the target's incident window (the preferred route failed or
    /// degraded) and logs it when it is new.
    fn open_incident(
        &mut self,
        target: &str,
        route: &str,
        reason: FailureReason,
        detail: &str,
        wall: SystemTime,
    ) {
        let change = self
            .incidents
            .open_target(target, route, reason, detail, wall);
        if let Change::Opened(w) = &change {
            tracing::warn!(incident = w.id, "{}", w.render());
        }
        self.incidents_changed();
    }

    /// A partial failure: logged, exported, and (on the preferred route) an
    /// incident window, like a route going down.
    fn degraded(
        &mut self,
        target: &str,
        route: &str,
        (degraded, healthy): (bool, Option<bool>),
        (failures, window, level): (u32, u32, Level),
        preferred: bool,
        cause: Option<&Seen>,
    ) {
        self.publish_target(target);
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
        if healthy == Some(false) {
            return; // it went down: that is what the log and incidents say
        }
        tracing::info!(target = %target, route = %route, failures, window, level = %level, "route no longer degraded");
        if preferred {
            self.close_incident(target, wall);
        }
    }

    fn failover(&self, target: &str, (from, to): (&str, &str), down: bool, back_on_proxy: bool) {
        if down {
            tracing::error!(target = %target, from = %from, to = %to, "every route is down; traffic stays on the preferred route");
        } else {
            tracing::warn!(target = %target, from = %from, to = %to, "active route changed");
        }
        self.rt.metrics.failover(target, from, to);
        self.publish_target(target);
        if back_on_proxy {
            self.schedule_failback_close(target, self.config.forward.failback_grace);
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
        let direct = self.rt.direct_tunnels();
        let target = target.to_string();
        let snapshots = self.subscribe();
        handle.spawn(async move {
            tokio::time::sleep(grace).await;
            let still_proxy = snapshots
                .borrow()
                .target(&target)
                .is_some_and(|t| t.routes.get(t.active).is_some_and(|r| !r.direct));
            if still_proxy {
                let closed = direct.close(&target);
                if closed > 0 {
                    tracing::info!(target = %target, closed, grace_seconds = grace.as_secs_f64(), "closed direct tunnels after fail-back to the proxy");
                }
            }
        });
    }
}
