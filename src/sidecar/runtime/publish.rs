//! The gauges that mirror state rather than count events: each route's
//! health, active, reason, degraded and override gauges, set again from
//! the route table, and the ones no probe drives (certificates, build
//! info, the last reload), set again at every upkeep tick so they never go
//! idle.
//!
//! Reads the owner's table and config; never changes either.

use super::Runtime;
use super::owner::Owner;
use crate::config::Config;

impl Runtime {
    /// Every configured pair's failure counters, at 0 before any failure.
    pub(super) fn zero_failures(&self, config: &Config) {
        for t in &config.targets {
            for r in &t.routes {
                self.metrics.probe_failures_zero(&t.name, &r.name);
            }
        }
    }
}

impl Owner {
    /// Sets the health, active and reason gauges of every route of `target`.
    pub(super) fn publish_target(&self, target: &str) {
        let metrics = &self.rt.metrics;
        if let Some(t) = self.table.targets.get(target) {
            for (i, r) in t.routes.iter().enumerate() {
                metrics.route_state(target, &r.route, r.healthy() == Some(true), i == t.active);
                metrics.route_reason(target, &r.route, r.last.as_ref().map(|s| s.reason));
                metrics.route_degraded(target, &r.route, r.degraded_any());
                let overridden = t.route_override != crate::health::Override::Auto
                    && t.route_override.allows(r.direct);
                metrics.route_override(target, &r.route, overridden);
            }
        }
    }

    /// Re-sets every gauge that is not driven by probes (they would go idle).
    pub(super) fn publish_all(&self) {
        let config = self.config.clone();
        for t in &config.targets {
            self.publish_target(&t.name);
            if let Some(not_after) = t.client_cert_not_after {
                self.rt.metrics.client_cert_not_after(&t.name, not_after);
            }
        }
        self.rt.metrics.publish_certs(&config);
        self.rt.metrics.build_info();
        let reload = self.rt.reload_status();
        let restart = !reload.restart_required.is_empty();
        self.rt.metrics.config_reload(reload.ok, restart);
    }
}
