//! The gauges that mirror state rather than count events: each route's
//! health, active, reason, degraded and override gauges, set again from
//! the route table, and the ones no probe drives (certificates, build
//! info, the last reload), set again at every upkeep tick so they never go
//! idle.
//!
//! Reads the table and the config in force; never changes either.

use super::{Runtime, lock};
use crate::config::Config;
use crate::health::Override;

impl Runtime {
    /// Every configured pair's failure counters, at 0 before any failure.
    pub(super) fn zero_failures(&self, config: &Config) {
        for t in &config.targets {
            for r in &t.routes {
                self.metrics.probe_failures_zero(&t.name, &r.name);
            }
        }
    }

    /// Sets the health, active and reason gauges of every route of `target`.
    pub fn publish_target(&self, target: &str) {
        let table = lock(&self.table);
        if let Some(t) = table.targets.get(target) {
            for (i, r) in t.routes.iter().enumerate() {
                self.metrics.route_state(
                    target,
                    &r.route,
                    r.healthy() == Some(true),
                    i == t.active,
                );
                self.metrics
                    .route_reason(target, &r.route, r.last.as_ref().map(|s| s.reason));
                self.metrics
                    .route_degraded(target, &r.route, r.degraded_any());
                let forced = match t.route_override {
                    Override::Auto => false,
                    Override::Proxy => !r.direct,
                    Override::Direct => r.direct,
                };
                self.metrics.route_override(target, &r.route, forced);
            }
        }
    }

    /// Re-sets every gauge that is not driven by probes (they would go idle).
    pub fn publish_all(&self) {
        let config = self.config();
        for t in &config.targets {
            self.publish_target(&t.name);
            if let Some(not_after) = t.client_cert_not_after {
                self.metrics.client_cert_not_after(&t.name, not_after);
            }
        }
        self.metrics.publish_certs(&config);
        self.metrics.build_info();
        self.metrics.config_reload(self.reload_status().ok);
    }
}
