//! [`Routing`] for the runtime: the narrow handle the forward proxy sees.
//! The generation to dial with, the route choice, where an app
//! connection's result goes (into the route table, as an observation like
//! a probe's), and why a target is not on a proxy route.
//!
//! The forward proxy never sees more of the runtime than this.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Runtime, lock};
use crate::compliance::Trail;
use crate::forward::Routing;
use crate::generation::Generation;
use crate::health::{Observation, Override, TrafficResult};
use crate::reason::FailureReason;
use crate::telemetry::Metrics;

impl Routing for Runtime {
    fn generation(&self) -> Arc<Generation> {
        self.current()
    }

    fn choice(&self, target: &str) -> Option<(String, Override)> {
        lock(&self.table).choice(target)
    }

    fn broken(&self, target: &str, route: &str) -> bool {
        lock(&self.table)
            .targets
            .get(target)
            .and_then(|t| t.route(route))
            .is_some_and(|r| r.healthy() == Some(false))
    }

    fn report(&self, result: TrafficResult) {
        if let Some((FailureReason::LocalExhausted, detail)) = &result.failure {
            self.exhausted(super::exhaustion::Who::AppConnection, detail);
            return;
        }
        let target = result.target.clone();
        let events = lock(&self.table).observe(Instant::now(), Observation::Traffic(result));
        self.apply(&events);
        self.publish_target(&target);
    }

    fn why_not_proxy(&self, target: &str) -> String {
        let table = lock(&self.table);
        let Some(t) = table.targets.get(target) else {
            return "no target".into();
        };
        if t.route_override == Override::Direct {
            return "operator forced direct".into();
        }
        let parts: Vec<String> = t
            .routes
            .iter()
            .filter(|r| !r.direct)
            .map(|r| match (r.healthy(), &r.last) {
                (Some(false), Some(s)) => {
                    format!("{}: unhealthy, {} ({})", r.route, s.reason, s.detail)
                }
                (Some(true), _) => format!("{}: healthy but held down after flapping", r.route),
                _ => format!("{}: not yet probed", r.route),
            })
            .collect();
        parts.join("; ")
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn trail(&self) -> &Trail {
        &self.trail
    }
}
